//! UQPay end to end: the simulator on loopback, the exporter polling it, `/metrics` read over
//! HTTP. Real time with short token lifetimes; the long runs under paused time are unit tests
//! of the provider (`src/providers/uqpay/tests.rs`).

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use balance_exporter::config::{self, Format};
use balance_exporter::providers::uqpay::sim::{BodyFault, SimBalance, SimClient, UqPaySim};
use balance_exporter::sim::{Fault, Ledger, SimRequest, SimServer};
use common::{Daemon, Exporter, TempDir, assert_promtool_clean};
use rust_decimal::Decimal;

const CLIENT: &str = "acq-client";
const KEY: &str = "uqpay-api-key-0123456789";
const SLOW_POLLS: &str = "  poll_interval: 1h\n  request_timeout: 5s";

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn balance(currency: &str, available: &str) -> SimBalance {
    SimBalance::new(currency, Ledger::fixed(dec(available)))
}

/// A simulator with one client per `(client id, balances)`, all with the api key [`KEY`].
async fn simulator(clients: Vec<(&str, Vec<SimBalance>)>) -> (Arc<UqPaySim>, SimServer) {
    let sim = UqPaySim::new();
    for (id, balances) in clients {
        sim.add_client(id, SimClient::new(KEY, balances));
    }
    let server = sim.start().await.unwrap();
    (sim, server)
}

/// One account block; `extra` adds keys (each line starting with a newline).
fn account(name: &str, server: &SimServer, client_id: &str, extra: &str) -> String {
    format!(
        "
  - name: {name}
    provider: uqpay
    base_url: {}
    client_id: {client_id}
    api_key: {KEY}{extra}",
        UqPaySim::base_url(server)
    )
}

fn config(global: &str, accounts: &[String]) -> String {
    format!("global:\n{global}\naccounts:{}\n", accounts.concat())
}

fn parsed(yaml: &str) -> config::Config {
    config::parse(yaml, Format::Yaml, std::path::Path::new(".")).unwrap()
}

fn is_token_call(r: &SimRequest) -> bool {
    r.path == "/api/v1/connect/token"
}

fn is_list_call(r: &SimRequest) -> bool {
    r.path == "/api/v2/payment/balances"
}

fn count(server: &SimServer, which: fn(&SimRequest) -> bool) -> usize {
    server.requests().iter().filter(|r| which(r)).count()
}

/// Three-letter codes that are not real currencies, for long lists.
fn made_up_currencies(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let letter = |k: usize| char::from(b'A' + (k % 26) as u8);
            format!("{}{}Z", letter(i / 26), letter(i))
        })
        .collect()
}

#[tokio::test]
async fn three_pages_of_currencies_are_walked_with_exact_amounts() {
    let mut balances = vec![
        SimBalance::new("SGD", Ledger::fixed(dec("1000.10")))
            .with("payable", Some(Ledger::fixed(dec("950.00"))))
            .with("reserved", Some(Ledger::fixed(dec("-12.34"))))
            .with("pending", None)
            .without("frozen"),
    ];
    for (i, code) in made_up_currencies(204).iter().enumerate() {
        balances.push(balance(code, &format!("{i}.25")));
    }
    let (_sim, server) = simulator(vec![(CLIENT, balances)]).await;
    let yaml = config(
        SLOW_POLLS,
        &[account(
            "acq",
            &server,
            CLIENT,
            // 205 currencies: above the default max_currencies (100).
            "\n    max_currencies: 205\n    thresholds:\n      - currency: SGD\n        warning: 500\n        critical: 100",
        )],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("acq").await.outcome.unwrap();
    let m = exporter.scrape().await;
    let at = |currency, kind| {
        [
            ("provider", "uqpay"),
            ("account", "acq"),
            ("currency", currency),
            ("kind", kind),
        ]
    };
    assert_eq!(m.expect("balance_amount", &at("SGD", "available")), 1000.1);
    assert_eq!(m.expect("balance_amount", &at("SGD", "payable")), 950.0);
    assert_eq!(m.expect("balance_amount", &at("SGD", "reserved")), -12.34);
    assert_eq!(m.expect("balance_amount", &at("SGD", "margin")), 0.0);
    assert_eq!(
        m.value("balance_amount", &at("SGD", "pending")),
        None,
        "null"
    );
    assert_eq!(
        m.value("balance_amount", &at("SGD", "frozen")),
        None,
        "missing"
    );
    // The last currency sits alone on page 3.
    let last = made_up_currencies(204).pop().unwrap();
    assert_eq!(m.expect("balance_amount", &at(&last, "available")), 203.25);
    assert_eq!(
        m.find("balance_amount", &[("account", "acq")]).len(),
        4 + 204 * 6
    );

    let pages: Vec<(Option<String>, Option<String>)> = server
        .requests()
        .iter()
        .filter(|r| is_list_call(r))
        .map(|r| (r.query_param("page_number"), r.query_param("page_size")))
        .collect();
    let expected: Vec<_> = ["1", "2", "3"]
        .iter()
        .map(|n| (Some(n.to_string()), Some("100".to_owned())))
        .collect();
    assert_eq!(pages, expected);
    let requests = |endpoint| {
        m.expect(
            "balance_api_requests_total",
            &[("account", "acq"), ("endpoint", endpoint)],
        )
    };
    assert_eq!((requests("token"), requests("balances")), (1.0, 3.0));
    assert_eq!(
        m.expect("balance_token_refreshes_total", &[("account", "acq")]),
        1.0
    );
    // Documented codes are there from the start.
    for code in ["unauthorized", "not_found", "too_many_requests"] {
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[("account", "acq"), ("code", code)]
            ),
            0.0
        );
    }
    assert_promtool_clean(&m.text);
}

#[tokio::test]
async fn configured_currencies_are_read_one_by_one() {
    let (_sim, server) = simulator(vec![(
        CLIENT,
        vec![
            balance("SGD", "10.5"),
            balance("USD", "20"),
            balance("EUR", "30"),
        ],
    )])
    .await;
    let yaml = config(
        SLOW_POLLS,
        &[account(
            "fixed",
            &server,
            CLIENT,
            "\n    currencies: [USD, SGD]",
        )],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("fixed").await.outcome.unwrap();
    let paths: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| !is_token_call(r))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/api/v2/payment/balances/USD",
            "/api/v2/payment/balances/SGD"
        ]
    );
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_amount",
            &[("currency", "SGD"), ("kind", "available")]
        ),
        10.5
    );
    assert!(m.find("balance_amount", &[("currency", "EUR")]).is_empty());
    assert_eq!(
        m.expect(
            "balance_api_requests_total",
            &[("account", "fixed"), ("endpoint", "balance")]
        ),
        2.0
    );
}

#[tokio::test]
async fn many_polls_within_a_token_lifetime_mint_once() {
    let (sim, server) = simulator(vec![(CLIENT, vec![balance("SGD", "1")])]).await;
    let yaml = config(
        "  poll_interval: 1s",
        &[account("acq", &server, CLIENT, "")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    for event in exporter.polls("acq", 4).await {
        event.outcome.unwrap();
    }
    assert_eq!(sim.mints(CLIENT), 1);
    assert_eq!(count(&server, is_token_call), 1);
    assert_eq!(count(&server, is_list_call), 4);
}

#[tokio::test]
async fn a_token_is_refreshed_before_it_expires_with_no_failed_request() {
    let (sim, server) = simulator(vec![(CLIENT, vec![balance("SGD", "1")])]).await;
    // Replaced a quarter of its lifetime (2 s) before it ends: slack for a loaded machine.
    sim.set_token_lifetime(Duration::from_secs(8));
    let yaml = config(
        "  poll_interval: 1s",
        &[account("acq", &server, CLIENT, "")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    for event in exporter.polls("acq", 8).await {
        event.outcome.unwrap();
    }
    let mints = sim.mints(CLIENT);
    assert!(mints >= 2, "{mints} mints in about 7 s of 8 s tokens");
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect("balance_token_refreshes_total", &[("account", "acq")]),
        mints as f64
    );
    let failed: f64 = m
        .find("balance_api_errors_total", &[("account", "acq")])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(failed, 0.0, "{}", m.text);
}

#[tokio::test]
async fn the_token_survives_a_reload_and_an_outside_mint_costs_one_re_mint() {
    let (sim, server) = simulator(vec![(CLIENT, vec![balance("SGD", "1")])]).await;
    let yaml = config(SLOW_POLLS, &[account("acq", &server, CLIENT, "")]);
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("acq").await.outcome.unwrap();
    // A reload that changes the account but not its credentials rebuilds its provider: the
    // token carries over.
    let changed = config(
        SLOW_POLLS,
        &[account("acq", &server, CLIENT, "\n    poll_interval: 2h")],
    );
    exporter.scheduler.apply(&parsed(&changed)).unwrap();
    exporter.poll("acq").await.outcome.unwrap();
    assert_eq!(sim.mints(CLIENT), 1);

    // Another process mints with the same key: one 401, one re-mint, and the poll succeeds.
    sim.mint_outside(CLIENT);
    // Changed back: rebuilt again, and it polls at once.
    exporter.scheduler.apply(&parsed(&yaml)).unwrap();
    exporter.poll("acq").await.outcome.unwrap();
    assert_eq!(sim.mints(CLIENT), 2);
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[
                ("account", "acq"),
                ("code", "unauthorized"),
                ("class", "auth")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.expect("balance_token_refreshes_total", &[("account", "acq")]),
        2.0
    );
    assert_eq!(m.expect("balance_up", &[("account", "acq")]), 1.0);
}

#[tokio::test]
async fn a_persistent_401_gives_one_re_mint_and_an_auth_error() {
    let (sim, server) = simulator(vec![(CLIENT, vec![balance("SGD", "1")])]).await;
    sim.update(CLIENT, |c| c.faults.always(Fault::code("unauthorized")));
    let yaml = config(SLOW_POLLS, &[account("acq", &server, CLIENT, "")]);
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("acq").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("unauthorized", "auth")
    );
    assert_eq!(sim.mints(CLIENT), 2);
    assert_eq!(count(&server, is_token_call), 2);
    assert_eq!(count(&server, is_list_call), 2);
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "acq"), ("code", "unauthorized")]
        ),
        2.0
    );
    assert_eq!(m.expect("balance_up", &[("account", "acq")]), 0.0);
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_error_at_the_token_endpoint() {
    let (sim, server) = simulator(vec![(CLIENT, vec![balance("SGD", "1")])]).await;
    let yaml = config(
        SLOW_POLLS,
        &[account("acq", &server, CLIENT, "").replace(KEY, "not-the-key")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("acq").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("unauthorized", "auth")
    );
    assert_eq!(server.request_count(), 1, "no retry, no balance call");
    assert_eq!(sim.mints(CLIENT), 0);
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect("balance_token_refreshes_total", &[("account", "acq")]),
        0.0
    );
    assert_eq!(
        m.expect(
            "balance_api_requests_total",
            &[("account", "acq"), ("endpoint", "token")]
        ),
        1.0
    );
}

#[tokio::test]
async fn overlapping_polls_of_accounts_sharing_a_key_share_one_mint() {
    let (sim, server) = simulator(vec![(
        CLIENT,
        vec![balance("SGD", "1"), balance("USD", "2")],
    )])
    .await;
    // The mint outlasts the start-up stagger (at most 0.5 s): the polls overlap.
    sim.update(CLIENT, |c| {
        c.token_faults
            .next(Fault::Latency(Duration::from_millis(1500)), 1)
    });
    let yaml = config(
        SLOW_POLLS,
        &[
            account("all", &server, CLIENT, ""),
            account("usd", &server, CLIENT, "\n    currencies: [USD]"),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("all").await.outcome.unwrap();
    exporter.poll("usd").await.outcome.unwrap();
    assert_eq!(sim.mints(CLIENT), 1);
    assert_eq!(count(&server, is_token_call), 1);
    let m = exporter.scrape().await;
    let refreshes: f64 = m
        .find("balance_token_refreshes_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(refreshes, 1.0);
}

#[tokio::test]
async fn every_error_shape_gives_a_useful_code() {
    let cases: Vec<(&str, Fault, &str, &str, usize)> = vec![
        ("string", Fault::code("not_found"), "not_found", "client", 1),
        ("number", Fault::code("10001"), "10001", "client", 1),
        (
            "gateway",
            Fault::code_with_status("access_denied", 403),
            "access_denied",
            "auth",
            1,
        ),
        (
            "html",
            Fault::Raw {
                status: 502,
                body: "<html><h1>502 Bad Gateway</h1></html>".into(),
            },
            "http_502",
            "server",
            3,
        ),
        (
            "text",
            Fault::Raw {
                status: 403,
                body: "Forbidden".into(),
            },
            "http_403",
            "auth",
            1,
        ),
        ("garbled", Fault::Malformed, "decode", "decode", 1),
    ];
    let (sim, server) = simulator(
        cases
            .iter()
            .map(|(name, ..)| (*name, vec![balance("SGD", "1")]))
            .collect(),
    )
    .await;
    let mut accounts = Vec::new();
    for (name, fault, ..) in &cases {
        let fault = fault.clone();
        sim.update(name, |c| c.faults.always(fault));
        accounts.push(account(name, &server, name, ""));
    }
    let mut exporter = Exporter::start(&config(SLOW_POLLS, &accounts)).await;
    for (name, _, code, class, attempts) in &cases {
        let error = exporter.poll(name).await.outcome.unwrap_err();
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
            *attempts as f64,
            "{name}"
        );
    }
}

#[tokio::test]
async fn retry_after_is_honoured_in_seconds_and_as_a_date() {
    let (sim, server) = simulator(vec![
        ("seconds", vec![balance("SGD", "1")]),
        ("date", vec![balance("SGD", "2")]),
    ])
    .await;
    sim.update("seconds", |c| {
        c.retry_after = Some("1".into());
        c.faults.next(Fault::code("too_many_requests"), 1);
    });
    sim.update("date", |c| {
        // Whole seconds, and the poll starts up to half a second late: at least 1.5 s ahead
        // when the 429 arrives.
        c.retry_after = Some(httpdate::fmt_http_date(
            SystemTime::now() + Duration::from_secs(3),
        ));
        c.faults.next(Fault::code("too_many_requests"), 1);
    });
    let yaml = config(
        "  poll_interval: 1h\n  request_timeout: 5s",
        &[
            account("seconds", &server, "seconds", ""),
            account("date", &server, "date", ""),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("seconds").await.outcome.unwrap();
    exporter.poll("date").await.outcome.unwrap();
    let m = exporter.scrape().await;
    for name in ["seconds", "date"] {
        let took = m.expect("balance_poll_duration_seconds", &[("account", name)]);
        assert!(took >= 0.9, "{name}: the poll took {took}s");
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[
                    ("account", name),
                    ("code", "too_many_requests"),
                    ("class", "rate_limit")
                ]
            ),
            1.0
        );
        assert_eq!(
            m.expect(
                "balance_api_requests_total",
                &[("account", name), ("endpoint", "balances")]
            ),
            2.0
        );
    }
}

#[tokio::test]
async fn a_retry_after_beyond_the_poll_budget_ends_the_poll_at_once() {
    let (sim, server) = simulator(vec![(CLIENT, vec![balance("SGD", "1")])]).await;
    sim.update(CLIENT, |c| {
        c.retry_after = Some("30".into());
        c.faults.always(Fault::code("too_many_requests"));
    });
    let yaml = config(
        "  poll_interval: 3s",
        &[account("acq", &server, CLIENT, "")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("acq").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("too_many_requests", "rate_limit")
    );
    assert_eq!(error.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(count(&server, is_list_call), 1);
    let m = exporter.scrape().await;
    let took = m.expect("balance_poll_duration_seconds", &[("account", "acq")]);
    assert!(took < 2.0, "the poll waited {took}s");
}

#[tokio::test]
async fn a_rate_limited_token_endpoint_is_retried_after_retry_after() {
    let (sim, server) = simulator(vec![(CLIENT, vec![balance("SGD", "1")])]).await;
    sim.update(CLIENT, |c| {
        c.retry_after = Some("1".into());
        c.token_faults.next(Fault::code("too_many_requests"), 1);
    });
    let yaml = config(SLOW_POLLS, &[account("acq", &server, CLIENT, "")]);
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("acq").await.outcome.unwrap();
    assert_eq!(count(&server, is_token_call), 2);
    assert_eq!(sim.mints(CLIENT), 1);
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "acq"), ("code", "too_many_requests")]
        ),
        1.0
    );
    assert!(m.expect("balance_poll_duration_seconds", &[("account", "acq")]) >= 0.9);
}

#[tokio::test]
async fn the_sub_account_header_is_sent_only_when_configured() {
    let (sim, server) = simulator(vec![(CLIENT, vec![balance("SGD", "100")])]).await;
    sim.update(CLIENT, |c| {
        c.sub_accounts
            .insert("sub-7".into(), vec![balance("USD", "7.5")]);
    });
    let yaml = config(
        SLOW_POLLS,
        &[
            account("main", &server, CLIENT, ""),
            account(
                "sub",
                &server,
                CLIENT,
                "\n    on_behalf_of: sub-7\n    currencies: [USD]",
            ),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("main").await.outcome.unwrap();
    exporter.poll("sub").await.outcome.unwrap();
    let requests = server.requests();
    let behalf = |r: &SimRequest| r.header("x-on-behalf-of").map(str::to_owned);
    for r in &requests {
        let expected = (r.path == "/api/v2/payment/balances/USD").then(|| "sub-7".to_owned());
        assert_eq!(behalf(r), expected, "{} {:?}", r.path, r.query);
        assert_eq!(r.header("x-idempotency-key").is_some(), !is_token_call(r));
    }
    assert_eq!(requests.len(), 3, "one token shared by both accounts");
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_amount",
            &[("account", "sub"), ("kind", "available")]
        ),
        7.5
    );
    assert_eq!(
        m.expect(
            "balance_amount",
            &[("account", "main"), ("kind", "available")]
        ),
        100.0
    );
}

#[tokio::test]
async fn the_demo_lists_several_currencies_over_several_pages_with_one_shared_token() {
    let part = balance_exporter::providers::uqpay::sim::demo()
        .await
        .unwrap();
    let yaml = format!("global:\n{SLOW_POLLS}\naccounts:{}", part.accounts_yaml);
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("uqpay-acq").await.outcome.unwrap();
    exporter.poll("uqpay-sub").await.outcome.unwrap();
    let server = &part.servers[0];
    assert!(count(server, is_list_call) >= 3, "more than one page");
    assert_eq!(count(server, is_token_call), 1);
    let m = exporter.scrape().await;
    let currencies = |account| {
        let mut c: Vec<String> = m
            .find(
                "balance_amount",
                &[("account", account), ("kind", "available")],
            )
            .iter()
            .map(|s| s.labels["currency"].clone())
            .collect();
        c.sort();
        c
    };
    assert_eq!(currencies("uqpay-acq").len(), 5);
    assert_eq!(currencies("uqpay-sub"), ["SGD", "USD"]);
    // Thresholds sit well below the balances.
    for s in m.find("balance_low_threshold", &[("provider", "uqpay")]) {
        let amount = m.expect(
            "balance_amount",
            &[
                ("account", &s.labels["account"]),
                ("currency", &s.labels["currency"]),
                ("kind", "available"),
            ],
        );
        assert!(amount > 2.0 * s.value, "{s:?} vs {amount}");
    }
}

// The daemon is waited on synchronously: the simulator needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_metrics_and_the_status_page_and_a_lost_token_is_warned_about() {
    let (sim, server) = simulator(vec![(CLIENT, vec![balance("SGD", "1")])]).await;
    let dir = TempDir::new("uqpay-secrets");
    let yaml = config(
        "  poll_interval: 1s",
        &[account("acq", &server, CLIENT, "").replace(
            &format!("api_key: {KEY}"),
            "api_key_env: TEST_UQPAY_API_KEY",
        )],
    );
    let path = dir.write("config.yml", &yaml);
    let mut daemon = Daemon::spawn_with_env(
        &[
            "--config.file",
            path.to_str().unwrap(),
            "--log.level",
            "trace",
        ],
        &[("TEST_UQPAY_API_KEY", KEY)],
    );
    daemon.wait_for_line(|l| l.contains("minted a new UQPay access token"));
    daemon.wait_for_line(|l| l.contains("poll succeeded"));
    let first = sim.active_token(CLIENT).unwrap();
    sim.mint_outside(CLIENT);
    daemon.wait_for_line(|l| l.contains("another process probably minted"));
    daemon.wait_for_line(|l| l.contains("minted a new UQPay access token"));
    daemon.wait_for_line(|l| l.contains("poll succeeded"));
    let second = sim.active_token(CLIENT).unwrap();
    let (_, metrics) = common::get(daemon.addr, "/metrics").await;
    let (_, page) = common::get(daemon.addr, "/").await;
    let log = daemon.stop();
    assert_eq!(
        log.matches("another process probably minted").count(),
        1,
        "one warning for one lost token"
    );
    for secret in [KEY, first.as_str(), second.as_str()] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
        assert!(!metrics.contains(secret));
        assert!(!page.contains(secret));
    }
    assert!(metrics.contains("balance_token_refreshes_total"));
}

/// A UUID v4 as text: 8-4-4-4-12 hex digits, version 4, variant 10.
fn is_uuid_v4(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b'])
}

#[tokio::test]
async fn every_balance_request_has_its_own_idempotency_key_and_the_mint_states_its_length() {
    let (sim, server) = simulator(vec![(CLIENT, vec![balance("SGD", "1")])]).await;
    // A 502 and a 429 first: both retried within the poll, each retry with a new key.
    sim.update(CLIENT, |c| {
        c.retry_after = Some("1".into());
        c.faults.next(Fault::gateway_error(502), 1);
        c.faults.next(Fault::code("too_many_requests"), 1);
    });
    let yaml = config(
        "  poll_interval: 1s\n  request_timeout: 5s",
        &[account("acq", &server, CLIENT, "")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    // Slow first poll (retries): then a changed balance must show, not a replayed answer.
    let mut first = exporter.poll("acq").await;
    while first.outcome.is_err() {
        first = exporter.poll("acq").await;
    }
    sim.update(CLIENT, |c| c.balances = vec![balance("SGD", "2.5")]);
    exporter.poll("acq").await.outcome.unwrap();
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_amount",
            &[("currency", "SGD"), ("kind", "available")]
        ),
        2.5
    );
    let requests = server.requests();
    let keys: Vec<&str> = requests
        .iter()
        .filter(|r| is_list_call(r))
        .map(|r| r.header("x-idempotency-key").unwrap())
        .collect();
    assert!(keys.len() >= 4, "{keys:?}");
    let distinct: std::collections::HashSet<&&str> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "a key was reused: {keys:?}");
    assert!(keys.iter().all(|k| is_uuid_v4(k)), "{keys:?}");
    let mint = requests.iter().find(|r| is_token_call(r)).unwrap();
    let lengths: Vec<_> = mint.headers.get_all("content-length").iter().collect();
    assert_eq!(lengths, ["0"], "exactly one Content-Length: 0 on the wire");
    assert_eq!(mint.header("content-type"), Some("application/json"));
    assert!(mint.body.is_empty());
}

#[tokio::test]
async fn an_empty_account_is_a_success_and_a_200_without_a_list_is_no_balance() {
    let (sim, server) =
        simulator(vec![("empty", vec![]), (CLIENT, vec![balance("SGD", "9")])]).await;
    let yaml = config(
        "  poll_interval: 1s\n  request_timeout: 1s",
        &[
            account("empty", &server, "empty", ""),
            account("acq", &server, CLIENT, ""),
            account("one", &server, CLIENT, "\n    currencies: [SGD]"),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("empty").await.outcome.unwrap();
    exporter.poll("acq").await.outcome.unwrap();
    exporter.poll("one").await.outcome.unwrap();
    let m = exporter.scrape().await;
    assert_eq!(m.expect("balance_up", &[("account", "empty")]), 1.0);
    assert!(m.find("balance_amount", &[("account", "empty")]).is_empty());
    sim.update(CLIENT, |c| c.body_faults.next(BodyFault::NoBalance, 2));
    for name in ["acq", "one"] {
        let error = loop {
            if let Err(e) = exporter.poll(name).await.outcome {
                break e;
            }
        };
        assert_eq!(
            (error.code.as_str(), error.class.as_str()),
            ("no_balance", "decode"),
            "{name}"
        );
        let m = exporter.scrape().await;
        assert_eq!(m.expect("balance_up", &[("account", name)]), 0.0);
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[
                    ("account", name),
                    ("code", "no_balance"),
                    ("class", "decode")
                ]
            ),
            1.0
        );
        assert_eq!(
            m.expect(
                "balance_amount",
                &[("account", name), ("kind", "available")]
            ),
            9.0,
            "{name}: the last balances stay"
        );
    }
}

#[tokio::test]
async fn thousands_of_currencies_and_overlong_pages_fail_the_poll_after_one_request() {
    let (sim, server) = simulator(vec![
        ("many", vec![balance("SGD", "1")]),
        ("long", vec![balance("SGD", "1")]),
    ])
    .await;
    sim.update("many", |c| {
        c.body_faults.always(BodyFault::ManyCurrencies(5000))
    });
    sim.update("long", |c| c.body_faults.always(BodyFault::PageTooLong));
    let yaml = config(
        SLOW_POLLS,
        &[
            account("many", &server, "many", ""),
            account("long", &server, "long", ""),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    for (name, code) in [("many", "too_many_currencies"), ("long", "page_too_long")] {
        let error = exporter.poll(name).await.outcome.unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class.as_str()),
            (code, "decode"),
            "{name}"
        );
        let m = exporter.scrape().await;
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[("account", name), ("code", code), ("class", "decode")]
            ),
            1.0
        );
        assert_eq!(
            m.expect(
                "balance_api_requests_total",
                &[("account", name), ("endpoint", "balances")]
            ),
            1.0,
            "{name}: one page read"
        );
        assert!(m.find("balance_amount", &[("account", name)]).is_empty());
    }
}
