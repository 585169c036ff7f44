//! EngageLab end to end: the simulator on loopback, the exporter polling it, `/metrics` read
//! over HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use balance_exporter::providers::engagelab::Product;
use balance_exporter::providers::engagelab::sim::{BodyFault, EngageLabSim, SimAccount};
use balance_exporter::sim::{Fault, Gate, Ledger, SimServer};
use common::{Exporter, assert_promtool_clean};
use rust_decimal::Decimal;

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

async fn simulator(
    product: Product,
    accounts: &[(&str, &str, &str, &str)],
) -> (Arc<EngageLabSim>, SimServer) {
    let sim = EngageLabSim::new(product);
    for (key, secret, normal, gift) in accounts {
        sim.add_account(
            key,
            SimAccount::new(secret, Ledger::fixed(dec(normal)), Ledger::fixed(dec(gift))),
        );
    }
    let server = sim.start().await.unwrap();
    (sim, server)
}

/// One account block of the config.
fn account(name: &str, product: &str, base_url: &str, key: &str, secret: &str) -> String {
    format!(
        "
  - name: {name}
    provider: engagelab
    product: {product}
    base_url: {base_url}
    dev_key: {key}
    dev_secret: {secret}"
    )
}

fn config(global: &str, accounts: &[String]) -> String {
    format!("global:\n{global}\naccounts:{}\n", accounts.concat())
}

const SLOW_POLLS: &str = "  poll_interval: 1h\n  request_timeout: 5s";

#[tokio::test]
async fn sms_balances_are_exact_and_the_output_is_promtool_clean() {
    let (_sim, server) = simulator(Product::Sms, &[("key-1", "secret-1", "12.3456", "2")]).await;
    let yaml = config(
        SLOW_POLLS,
        &[
            account("sms", "sms", &server.base_url(), "key-1", "secret-1")
                + "\n    thresholds:\n      - warning: 100\n        critical: 20.5",
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    assert!(exporter.poll("sms").await.outcome.is_ok());

    let m = exporter.scrape().await;
    let labels = |kind| {
        [
            ("provider", "engagelab"),
            ("account", "sms"),
            ("currency", "USD"),
            ("kind", kind),
        ]
    };
    assert!(m.text.contains(r#"balance_amount{account="sms",currency="USD",kind="normal",provider="engagelab"} 12.3456"#), "{}", m.text);
    assert_eq!(m.expect("balance_amount", &labels("gift")), 2.0);
    assert_eq!(m.expect("balance_amount", &labels("total")), 14.3456);
    assert_eq!(m.expect("balance_up", &[("account", "sms")]), 1.0);
    assert_eq!(
        m.expect(
            "balance_low_threshold",
            &[
                ("account", "sms"),
                ("kind", "total"),
                ("currency", "USD"),
                ("severity", "critical")
            ]
        ),
        20.5
    );
    assert_eq!(
        m.expect(
            "balance_api_requests_total",
            &[("account", "sms"), ("endpoint", "balance")]
        ),
        1.0
    );
    assert_eq!(
        m.expect("balance_poll_interval_seconds", &[("account", "sms")]),
        3600.0
    );
    assert!(
        m.expect(
            "balance_last_success_timestamp_seconds",
            &[("account", "sms")]
        ) > 1.7e9
    );
    // Documented codes start at zero so that increase() sees the first error.
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "sms"), ("code", "2001"), ("class", "auth")]
        ),
        0.0
    );
    assert_eq!(m.find("balance_exporter_build_info", &[]).len(), 1);
    assert_eq!(server.request_count(), 1);
    assert_promtool_clean(&m.text);
}

#[tokio::test]
async fn metrics_are_gzipped_when_asked_and_decode_to_the_plain_exposition() {
    let (_sim, server) = simulator(Product::Sms, &[("key-1", "secret-1", "12.3456", "2")]).await;
    let yaml = config(
        SLOW_POLLS,
        &[account(
            "sms",
            "sms",
            &server.base_url(),
            "key-1",
            "secret-1",
        )],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("sms").await.outcome.unwrap();
    let scrape = |encoding: &'static str| {
        let url = format!("http://{}/metrics", exporter.addr);
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .header("Accept-Encoding", encoding)
                .send()
                .await
                .unwrap();
            let headers = response.headers().clone();
            (headers, response.bytes().await.unwrap())
        }
    };
    let (plain_headers, plain) = scrape("identity").await;
    let (gzip_headers, gzipped) = scrape("gzip").await;
    let (refused_headers, refused) = scrape("gzip;q=0, identity").await;

    assert!(plain_headers.get("content-encoding").is_none());
    assert_eq!(refused_headers.get("content-encoding"), None);
    assert_eq!(gzip_headers["content-encoding"], "gzip");
    for headers in [&plain_headers, &gzip_headers] {
        assert_eq!(headers["vary"], "Accept-Encoding");
    }
    let mut decoded = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&gzipped[..]),
        &mut decoded,
    )
    .unwrap();
    // The account polls once (SLOW_POLLS); only process metrics may move between scrapes.
    let samples = |text: &[u8]| {
        let mut samples = common::Exposition::parse(std::str::from_utf8(text).unwrap()).samples;
        samples.retain(|s| !s.name.starts_with("process_"));
        samples
    };
    assert!(samples(&plain).len() > 10);
    assert_eq!(samples(decoded.as_bytes()), samples(&plain));
    assert_eq!(samples(&refused), samples(&plain));
    assert!(
        gzipped.len() < plain.len() / 3,
        "{} vs {}",
        gzipped.len(),
        plain.len()
    );
    assert!(decoded.contains(
        r#"balance_amount{account="sms",currency="USD",kind="normal",provider="engagelab"} 12.3456"#
    ));
}

#[tokio::test]
async fn sms_wire_integers_are_used_and_floats_only_as_fallback() {
    let (sim, server) = simulator(Product::Sms, &[("k", "s", "1", "0")]).await;
    let yaml = config(
        SLOW_POLLS,
        &[account("sms", "sms", &server.base_url(), "k", "s") + "\n    currency: EUR"],
    );
    // The simulator writes both forms from the same ledger; the x10000 integer is exact.
    sim.update("k", |a| a.normal = Ledger::fixed(dec("123456.7891")));
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("sms").await.outcome.unwrap();
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_amount",
            &[("account", "sms"), ("currency", "EUR"), ("kind", "normal")]
        ),
        123456.7891
    );
}

#[tokio::test]
async fn otp_string_amounts_negative_balances_and_currency_from_the_wire() {
    let (sim, server) = simulator(Product::Otp, &[("otp-key", "otp-secret", "-12.34", "1")]).await;
    sim.update("otp-key", |a| a.currency = "EUR".into());
    let yaml = config(
        SLOW_POLLS,
        &[
            account("otp", "otp", &server.base_url(), "otp-key", "otp-secret")
                + "\n    thresholds:\n      - warning: 10",
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("otp").await.outcome.unwrap();
    let m = exporter.scrape().await;
    let at = |kind| [("account", "otp"), ("currency", "EUR"), ("kind", kind)];
    assert_eq!(m.expect("balance_amount", &at("normal")), -12.34);
    assert_eq!(m.expect("balance_amount", &at("gift")), 1.0);
    assert_eq!(m.expect("balance_amount", &at("total")), -11.34);
    // A threshold without a currency follows the account's one currency.
    assert_eq!(
        m.expect(
            "balance_low_threshold",
            &[
                ("account", "otp"),
                ("currency", "EUR"),
                ("severity", "warning")
            ]
        ),
        10.0
    );
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_error_sent_once() {
    let (_sim, server) = simulator(Product::Sms, &[("key", "right", "5", "0")]).await;
    let yaml = config(
        SLOW_POLLS,
        &[account("bad", "sms", &server.base_url(), "key", "wrong")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("bad").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("2001", "auth")
    );

    let m = exporter.scrape().await;
    assert_eq!(m.expect("balance_up", &[("account", "bad")]), 0.0);
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "bad"), ("code", "2001"), ("class", "auth")]
        ),
        1.0
    );
    assert_eq!(
        m.expect("balance_api_requests_total", &[("account", "bad")]),
        1.0
    );
    assert!(m.find("balance_amount", &[("account", "bad")]).is_empty());
    assert!(
        m.find(
            "balance_last_success_timestamp_seconds",
            &[("account", "bad")]
        )
        .is_empty()
    );
    assert_eq!(server.request_count(), 1, "auth errors are not retried");
}

#[tokio::test]
async fn forbidden_2002_is_auth_and_unknown_statuses_keep_their_class() {
    let (sim, server) = simulator(Product::Sms, &[("key", "secret", "5", "0")]).await;
    sim.update("key", |a| {
        a.faults.always(Fault::code_with_status("2002", 403))
    });
    let yaml = config(
        SLOW_POLLS,
        &[account("gone", "sms", &server.base_url(), "key", "secret")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("gone").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("2002", "auth")
    );
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn internal_errors_are_retried_and_every_failure_counted() {
    let (sim, server) = simulator(Product::Sms, &[("key", "secret", "7", "0")]).await;
    sim.update("key", |a| a.faults.next(Fault::code("1000"), 2));
    let yaml = config(
        "  poll_interval: 1h\n  request_timeout: 5s",
        &[account("flaky", "sms", &server.base_url(), "key", "secret")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("flaky").await.outcome.unwrap();
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "flaky"), ("code", "1000"), ("class", "server")]
        ),
        2.0
    );
    assert_eq!(
        m.expect("balance_api_requests_total", &[("account", "flaky")]),
        3.0
    );
    assert_eq!(m.expect("balance_up", &[("account", "flaky")]), 1.0);
    assert_eq!(
        m.expect(
            "balance_amount",
            &[("account", "flaky"), ("kind", "normal")]
        ),
        7.0
    );
}

#[tokio::test]
async fn persistent_internal_errors_stop_after_three_attempts() {
    let (sim, server) = simulator(Product::Sms, &[("key", "secret", "7", "0")]).await;
    sim.update("key", |a| a.faults.always(Fault::code("1000")));
    let yaml = config(
        SLOW_POLLS,
        &[account("down", "sms", &server.base_url(), "key", "secret")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("down").await.outcome.unwrap_err();
    assert_eq!(error.code, "1000");
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "down"), ("code", "1000")]
        ),
        3.0
    );
    assert_eq!(server.request_count(), 3);
    assert_eq!(m.expect("balance_up", &[("account", "down")]), 0.0);
}

#[tokio::test]
async fn a_proxy_error_page_is_counted_by_http_status() {
    let (sim, server) = simulator(Product::Sms, &[("key", "secret", "7", "0")]).await;
    sim.update("key", |a| {
        a.faults.next(
            Fault::Raw {
                status: 502,
                body: "<html>Bad Gateway</html>".into(),
            },
            1,
        )
    });
    let yaml = config(
        SLOW_POLLS,
        &[account(
            "proxied",
            "sms",
            &server.base_url(),
            "key",
            "secret",
        )],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("proxied").await.outcome.unwrap();
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[
                ("account", "proxied"),
                ("code", "http_502"),
                ("class", "server")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn malformed_json_is_a_decode_error() {
    let (sim, server) = simulator(Product::Otp, &[("key", "secret", "7", "0")]).await;
    sim.update("key", |a| a.faults.always(Fault::Malformed));
    let yaml = config(
        SLOW_POLLS,
        &[account(
            "garbled",
            "otp",
            &server.base_url(),
            "key",
            "secret",
        )],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("garbled").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("decode", "decode")
    );
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "garbled"), ("code", "decode")]
        ),
        1.0
    );
    assert_eq!(server.request_count(), 1, "a garbled answer is not retried");
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let (sim, server) = simulator(Product::Sms, &[("key", "secret", "7", "0")]).await;
    sim.update("key", |a| {
        a.faults.always(Fault::Oversized(2 * 1024 * 1024))
    });
    let yaml = config(
        SLOW_POLLS,
        &[account("huge", "sms", &server.base_url(), "key", "secret")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("huge").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("body_too_large", "decode")
    );
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "huge"), ("code", "body_too_large")]
        ),
        1.0
    );
}

/// While one account's request hangs, the other account goes on polling; the hung request
/// ends as a timeout. The hang is a [`Gate`] that never opens: the test knows when the
/// request is in flight, and nothing depends on how fast the machine is.
#[tokio::test]
async fn a_hung_provider_times_out_while_another_account_keeps_updating() {
    let (sim, server) = simulator(
        Product::Sms,
        &[("hung", "s1", "1", "0"), ("fine", "s2", "2", "0")],
    )
    .await;
    let gate = Gate::new();
    sim.update("hung", |a| a.faults.always(Fault::Held(gate.clone())));
    let hung = || account("hung", "sms", &server.base_url(), "hung", "s1");

    // An hour's timeout: the hung request outlasts the test.
    let yaml = config(
        "  poll_interval: 1s\n  request_timeout: 1h",
        &[
            hung() + "\n    poll_interval: 1h",
            account("fine", "sms", &server.base_url(), "fine", "s2"),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let mut events = exporter.scheduler.subscribe();
    tokio::time::timeout(common::PATIENCE, gate.until_arrived(1))
        .await
        .expect("the hung account's request reached the simulator");
    for event in exporter.polls("fine", 2).await {
        assert!(event.outcome.is_ok(), "{:?}", event.outcome);
    }
    while let Ok(event) = events.try_recv() {
        assert_eq!(event.account, "fine", "while its request hangs");
    }
    assert_eq!(gate.arrived(), 1, "{gate:?}");
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect("balance_amount", &[("account", "fine"), ("kind", "normal")]),
        2.0
    );

    // The same hang under a one-second timeout (and interval: no time for a retry).
    let yaml = config("  poll_interval: 1s\n  request_timeout: 1s", &[hung()]);
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("hung").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("timeout", "transport")
    );
    let m = exporter.scrape().await;
    assert!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "hung"), ("code", "timeout")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_currency_the_provider_stops_returning_leaves_metrics() {
    let (sim, server) = simulator(Product::Otp, &[("key", "secret", "10", "0")]).await;
    let yaml = config(
        "  poll_interval: 1s",
        &[account("otp", "otp", &server.base_url(), "key", "secret")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("otp").await.outcome.unwrap();
    let before = exporter.scrape().await;
    assert_eq!(
        before
            .find("balance_amount", &[("account", "otp"), ("currency", "USD")])
            .len(),
        3
    );

    sim.update("key", |a| a.currency = "SGD".into());
    exporter.poll("otp").await.outcome.unwrap();
    let after = exporter.scrape().await;
    assert!(
        after
            .find("balance_amount", &[("currency", "USD")])
            .is_empty(),
        "{}",
        after.text
    );
    assert_eq!(
        after
            .find("balance_amount", &[("account", "otp"), ("currency", "SGD")])
            .len(),
        3
    );
}

#[tokio::test]
async fn balances_leave_after_stale_after_without_success_but_up_and_thresholds_stay() {
    let (sim, server) = simulator(Product::Sms, &[("key", "secret", "10", "0")]).await;
    let yaml = config(
        "  poll_interval: 1s\n  stale_after: 2s",
        &[account("sms", "sms", &server.base_url(), "key", "secret")
            + "\n    thresholds:\n      - warning: 5"],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("sms").await.outcome.unwrap();
    sim.update("key", |a| a.faults.always(Fault::code("2001")));
    // Still shown right after the first failure: the last good balances stay.
    assert!(exporter.poll("sms").await.outcome.is_err());
    let m = exporter.scrape().await;
    assert_eq!(m.expect("balance_up", &[("account", "sms")]), 0.0);
    assert_eq!(m.find("balance_amount", &[("account", "sms")]).len(), 3);
    // Failed polls go on; once stale_after has passed since the success, they are gone.
    let success = std::time::Instant::now();
    while success.elapsed() < Duration::from_millis(2100) {
        assert!(exporter.poll("sms").await.outcome.is_err());
    }
    let m = exporter.scrape().await;
    assert!(
        m.find("balance_amount", &[("account", "sms")]).is_empty(),
        "{}",
        m.text
    );
    assert_eq!(m.expect("balance_up", &[("account", "sms")]), 0.0);
    assert!(
        m.value(
            "balance_last_success_timestamp_seconds",
            &[("account", "sms")]
        )
        .is_some()
    );
    assert_eq!(
        m.expect(
            "balance_low_threshold",
            &[("account", "sms"), ("severity", "warning")]
        ),
        5.0
    );
}

#[tokio::test]
async fn status_page_shows_accounts_balances_and_errors_and_readiness_follows_polls() {
    let (sim, server) = simulator(
        Product::Sms,
        &[
            ("ok", "s1", "150.5", "0"),
            ("slow", "s2", "3", "0"),
            ("bad", "s3", "1", "0"),
        ],
    )
    .await;
    sim.update("slow", |a| {
        a.faults
            .next(Fault::Latency(Duration::from_millis(1500)), 1)
    });
    let yaml = config(
        SLOW_POLLS,
        &[
            account("healthy", "sms", &server.base_url(), "ok", "s1")
                + "\n    thresholds:\n      - warning: 200\n        critical: 100",
            account("slow<b>", "sms", &server.base_url(), "slow", "s2"),
            account("bad", "sms", &server.base_url(), "bad", "wrong"),
        ],
    );
    // Names are checked: markup can't even get in through an account name.
    assert!(
        balance_exporter::config::parse(
            &yaml,
            balance_exporter::config::Format::Yaml,
            std::path::Path::new(".")
        )
        .is_err()
    );
    let yaml = yaml.replace("slow<b>", "slow");
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("healthy").await;
    exporter.poll("bad").await;
    let (status, body) = exporter.get("/-/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "Not ready: 2 of 3 accounts polled once\n");
    exporter.poll("slow").await;
    assert_eq!(exporter.get("/-/ready").await.0, 200);
    assert_eq!(
        exporter.get("/-/healthy").await,
        (200, "Healthy\n".to_owned())
    );

    let (status, page) = exporter.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("healthy") && page.contains("UP"), "{page}");
    assert!(
        page.contains("DOWN") && page.contains("<code>2001</code>"),
        "{page}"
    );
    assert!(page.contains("150.5") && page.contains("200"), "{page}");
    assert!(
        page.contains("class=\"warning\""),
        "150.5 is below the warning threshold 200"
    );
    assert!(page.contains("href=\"/metrics\""));
    assert_eq!(exporter.get("/nope").await.0, 404);
}

#[tokio::test]
async fn refused_connections_and_tls_failures_have_their_own_codes() {
    let (_sim, server) = simulator(Product::Sms, &[("key", "secret", "1", "0")]).await;
    // A port that was just free: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let tls_url = server.base_url().replace("http://", "https://");
    let yaml = config(
        "  poll_interval: 1h\n  request_timeout: 2s",
        &[
            account(
                "refused",
                "sms",
                &format!("http://{closed}"),
                "key",
                "secret",
            ),
            account("not-tls", "sms", &tls_url, "key", "secret"),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let tls = exporter.poll("not-tls").await.outcome.unwrap_err();
    assert_eq!(
        (tls.code.as_str(), tls.class.as_str()),
        ("tls", "transport"),
        "{tls}"
    );
    let refused = exporter.poll("refused").await.outcome.unwrap_err();
    assert_eq!(
        (refused.code.as_str(), refused.class.as_str()),
        ("connect", "transport")
    );
    let m = exporter.scrape().await;
    // A TLS failure is not retried; a refused connection is, up to 3 attempts.
    assert_eq!(
        m.expect("balance_api_requests_total", &[("account", "not-tls")]),
        1.0
    );
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "refused"), ("code", "connect")]
        ),
        3.0
    );
}

/// Waits for the next failed poll of `account`: polls already under way may still succeed.
async fn next_failure(
    exporter: &mut Exporter,
    account: &str,
) -> balance_exporter::providers::ProviderError {
    loop {
        if let Err(error) = exporter.poll(account).await.outcome {
            return error;
        }
    }
}

/// Polls every second; a fault queued for one request fails one poll, and the scrape right
/// after that poll's event still sees its outcome.
const FAST_POLLS: &str = "  poll_interval: 1s\n  request_timeout: 1s";

#[tokio::test]
async fn a_200_without_balances_is_a_failed_poll_and_the_last_balances_stay() {
    let (sms_sim, sms_server) = simulator(Product::Sms, &[("sms", "s1", "10", "1")]).await;
    let (otp_sim, otp_server) = simulator(Product::Otp, &[("otp", "s2", "20", "2")]).await;
    let yaml = config(
        FAST_POLLS,
        &[
            account("sms", "sms", &sms_server.base_url(), "sms", "s1"),
            account("otp", "otp", &otp_server.base_url(), "otp", "s2"),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    for name in ["sms", "otp"] {
        exporter.poll(name).await.outcome.unwrap();
    }
    sms_sim.update("sms", |a| a.body_faults.next(BodyFault::NoBalance, 1));
    otp_sim.update("otp", |a| a.body_faults.next(BodyFault::NoBalance, 1));
    for (name, kind, amount) in [("sms", "total", 11.0), ("otp", "normal", 20.0)] {
        let error = next_failure(&mut exporter, name).await;
        assert_eq!(
            (error.code.as_str(), error.class.as_str()),
            ("no_balance", "decode"),
            "{name}"
        );
        let m = exporter.scrape().await;
        assert_eq!(m.expect("balance_up", &[("account", name)]), 0.0, "{name}");
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[
                    ("account", name),
                    ("code", "no_balance"),
                    ("class", "decode")
                ]
            ),
            1.0,
            "{name}"
        );
        // The previous balances are still shown, with their amounts.
        assert_eq!(m.find("balance_amount", &[("account", name)]).len(), 3);
        assert_eq!(
            m.expect("balance_amount", &[("account", name), ("kind", kind)]),
            amount
        );
    }
}

#[tokio::test]
async fn an_error_under_200_is_counted_under_its_code_and_keeps_the_last_balances() {
    let cases = [
        ("bad-key", "2001", "auth"),
        ("expired", "2002", "auth"),
        ("unknown", "3999", "client"),
    ];
    let accounts: Vec<(&str, &str, &str, &str)> = cases
        .iter()
        .map(|(name, ..)| (*name, "secret", "42.5", "0"))
        .collect();
    let (sim, server) = simulator(Product::Sms, &accounts).await;
    let yaml = config(
        FAST_POLLS,
        &cases
            .iter()
            .map(|(name, ..)| account(name, "sms", &server.base_url(), name, "secret"))
            .collect::<Vec<_>>(),
    );
    let mut exporter = Exporter::start(&yaml).await;
    for (name, code, _) in &cases {
        exporter.poll(name).await.outcome.unwrap();
        sim.update(name, |a| {
            a.body_faults.next(BodyFault::error_under_200(*code), 1)
        });
    }
    for (name, code, class) in &cases {
        let error = next_failure(&mut exporter, name).await;
        assert_eq!(
            (error.code.as_str(), error.class.as_str()),
            (*code, *class),
            "{name}"
        );
        let m = exporter.scrape().await;
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[("account", name), ("code", code), ("class", class)]
            ),
            1.0,
            "{name}: counted once, not retried"
        );
        assert_eq!(m.expect("balance_up", &[("account", name)]), 0.0);
        assert_eq!(
            m.expect("balance_amount", &[("account", name), ("kind", "normal")]),
            42.5,
            "{name}: the last good balance stays"
        );
    }
}

#[tokio::test]
async fn an_internal_error_under_200_is_retried_as_a_500_is() {
    let (sim, server) = simulator(Product::Sms, &[("key", "secret", "7", "0")]).await;
    sim.update("key", |a| {
        a.body_faults.always(BodyFault::error_under_200("1000"))
    });
    let yaml = config(
        SLOW_POLLS,
        &[account("down", "sms", &server.base_url(), "key", "secret")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("down").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("1000", "server")
    );
    let m = exporter.scrape().await;
    // As `persistent_internal_errors_stop_after_three_attempts` with HTTP 500.
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "down"), ("code", "1000"), ("class", "server")]
        ),
        3.0
    );
    assert_eq!(server.request_count(), 3);
    assert_eq!(m.expect("balance_up", &[("account", "down")]), 0.0);
    assert!(m.find("balance_amount", &[("account", "down")]).is_empty());
}
