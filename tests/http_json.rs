//! `http_json` and its presets end to end: the simulators on loopback, the exporter polling
//! them, `/metrics` and the status page read over HTTP.

mod common;

use std::sync::Arc;

use balance_exporter::providers::http_json::presets;
use balance_exporter::providers::http_json::sim::{
    BodyFault, HttpJsonSim, Shape, SimAuth, Wallet, preset_sim,
};
use balance_exporter::sim::{Fault, Ledger, SimServer};
use common::{Exporter, assert_promtool_clean};
use rust_decimal::Decimal;

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

const GLOBAL: &str = "global:\n  poll_interval: 1h\n  request_timeout: 5s\naccounts:";

async fn acme() -> (Arc<HttpJsonSim>, SimServer) {
    let sim = HttpJsonSim::new(
        Shape::Acme {
            method: "POST",
            path: "/v3/wallets".to_owned(),
            body: Some(r#"{"scope":"all"}"#.to_owned()),
        },
        SimAuth::Header {
            name: "x-api-key".to_owned(),
            value: "acme-secret-key-1".to_owned(),
        },
        vec![
            Wallet::new(
                "USD",
                Ledger::fixed(dec("1234.56")),
                Ledger::fixed(dec("15")),
            ),
            Wallet::new(
                "KWD",
                Ledger::fixed(dec("0.125")),
                Ledger::fixed(dec("1.234")),
            ),
        ],
    );
    let server = sim.start().await.unwrap();
    (sim, server)
}

fn acme_account(base_url: &str, key: &str) -> String {
    format!(
        r#"
  - name: acme
    provider: http_json
    base_url: {base_url}
    path: /v3/wallets
    method: POST
    body: '{{"scope":"all"}}'
    auth: {{type: header, name: X-Api-Key, value: {key}}}
    items: /wallets
    balances:
      - {{kind: available, amount: /avail, currency: /cur}}
      - {{kind: on_hold, amount: /held_minor, currency: /cur, scale: iso4217}}
    error_code: /error/code
    success: {{pointer: /status, equals: ok}}
    thresholds:
      - {{currency: USD, warning: 2000, critical: 100}}
      - {{kind: on_hold, currency: KWD, warning: 5}}"#
    )
}

#[tokio::test]
async fn configured_balances_reach_metrics_exactly_with_thresholds() {
    let (_sim, server) = acme().await;
    let yaml = format!(
        "{GLOBAL}{}\n",
        acme_account(&server.base_url(), "acme-secret-key-1")
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("acme").await.outcome.unwrap();
    let m = exporter.scrape().await;
    let amount = |currency, kind| {
        m.expect(
            "balance_amount",
            &[
                ("provider", "http_json"),
                ("account", "acme"),
                ("currency", currency),
                ("kind", kind),
            ],
        )
    };
    assert!(
        m.text.contains(
            r#"balance_amount{account="acme",currency="USD",kind="available",provider="http_json"} 1234.56"#
        ),
        "{}",
        m.text
    );
    assert_eq!(amount("USD", "on_hold"), 15.0);
    assert_eq!(amount("KWD", "available"), 0.125);
    assert_eq!(amount("KWD", "on_hold"), 1.234);
    assert_eq!(
        m.expect(
            "balance_low_threshold",
            &[
                ("account", "acme"),
                ("kind", "on_hold"),
                ("currency", "KWD"),
                ("severity", "warning")
            ]
        ),
        5.0
    );
    assert_eq!(m.expect("balance_up", &[("account", "acme")]), 1.0);
    assert_eq!(server.request_count(), 1);
    let request = &server.requests()[0];
    assert_eq!(request.body.as_ref(), br#"{"scope":"all"}"#);
    assert_promtool_clean(&m.text);
}

#[tokio::test]
async fn provider_codes_label_errors_and_no_secret_shows_anywhere() {
    let (sim, server) = acme().await;
    // A wrong key: the simulator refuses it with its code, which labels the error.
    let yaml = format!(
        "{GLOBAL}{}\n",
        acme_account(&server.base_url(), "acme-wrong-key-2")
    );
    let mut exporter = Exporter::start(&yaml).await;
    let event = exporter.poll("acme").await;
    let error = event.outcome.unwrap_err();
    assert_eq!(error.code, "E_AUTH");
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[
                ("provider", "http_json"),
                ("account", "acme"),
                ("code", "E_AUTH"),
                ("class", "auth")
            ]
        ),
        1.0
    );
    assert_eq!(m.expect("balance_up", &[("account", "acme")]), 0.0);
    // A 2xx that fails the success condition, then one echoing the key it was sent.
    drop(exporter);
    sim.update(|s| {
        s.body_faults.next(
            BodyFault::ErrorUnder200 {
                code: "E_MAINTENANCE".into(),
            },
            1,
        );
        s.body_faults.next(BodyFault::EchoCredentials, 1);
    });
    let yaml = format!(
        "{GLOBAL}{}\n    poll_interval: 1s\n",
        acme_account(&server.base_url(), "acme-secret-key-1")
    );
    let mut exporter = Exporter::start(&yaml).await;
    let mut polls = exporter.polls("acme", 2).await.into_iter();
    let first = polls.next().unwrap().outcome.unwrap_err();
    assert_eq!(
        (first.code.as_str(), first.class.as_str()),
        ("E_MAINTENANCE", "client")
    );
    let second = polls.next().unwrap().outcome.unwrap_err();
    assert_eq!(second.code, "E_AUTH");
    let m = exporter.scrape().await;
    let (_, page) = exporter.get("/").await;
    for text in [&m.text, &page, &format!("{first:?} {second:?}")] {
        assert!(!text.contains("acme-secret-key-1"), "{text}");
    }
    assert!(page.contains("acme"), "the status page lists the account");
}

#[tokio::test]
async fn presets_poll_their_simulators_under_their_own_names() {
    let sid = "AC0123456789abcdef0123456789abcdef";
    let twilio = preset_sim(
        &presets::TWILIO,
        SimAuth::Basic {
            username: sid.into(),
            password: "tw-token-secret".into(),
        },
        vec![Wallet::new(
            "USD",
            Ledger::fixed(dec("14.00034")),
            Ledger::fixed(Decimal::ZERO),
        )],
    );
    let telnyx = preset_sim(
        &presets::TELNYX,
        SimAuth::Bearer("KEY-telnyx-secret".into()),
        vec![Wallet::new(
            "USD",
            Ledger::fixed(dec("-20.5")),
            Ledger::fixed(dec("100")),
        )],
    );
    let vonage = preset_sim(
        &presets::VONAGE,
        SimAuth::Basic {
            username: "abc123".into(),
            password: "vo-secret-value".into(),
        },
        vec![Wallet::new(
            "EUR",
            Ledger::fixed(dec("10.28")),
            Ledger::fixed(Decimal::ZERO),
        )],
    );
    vonage.update(|s| s.faults.next(Fault::code("http_500"), 1));
    let (tw, tx, vo) = (
        twilio.start().await.unwrap(),
        telnyx.start().await.unwrap(),
        vonage.start().await.unwrap(),
    );
    let yaml = format!(
        "{GLOBAL}
  - name: tw
    provider: twilio
    base_url: {}
    account_sid: {sid}
    auth_token: tw-token-secret
    thresholds: [{{warning: 20}}]
  - name: tx
    provider: telnyx
    base_url: {}
    api_key: KEY-telnyx-secret
    thresholds: [{{warning: 100, critical: 10}}]
  - name: vo
    provider: vonage
    base_url: {}
    api_key: abc123
    api_secret: vo-secret-value
",
        tw.base_url(),
        tx.base_url(),
        vo.base_url()
    );
    let mut exporter = Exporter::start(&yaml).await;
    for account in ["tw", "tx", "vo"] {
        exporter.poll(account).await.outcome.unwrap();
    }
    let m = exporter.scrape().await;
    let amount = |provider, account, currency, kind| {
        m.expect(
            "balance_amount",
            &[
                ("provider", provider),
                ("account", account),
                ("currency", currency),
                ("kind", kind),
            ],
        )
    };
    assert_eq!(amount("twilio", "tw", "USD", "available"), 14.00034);
    assert_eq!(amount("telnyx", "tx", "USD", "balance"), -20.5);
    assert_eq!(amount("telnyx", "tx", "USD", "credit_limit"), 100.0);
    assert_eq!(amount("telnyx", "tx", "USD", "available"), 79.5);
    assert_eq!(amount("vonage", "vo", "EUR", "available"), 10.28);
    // Telnyx's default threshold kind is what can be spent.
    assert_eq!(
        m.expect(
            "balance_low_threshold",
            &[
                ("account", "tx"),
                ("kind", "available"),
                ("severity", "critical")
            ]
        ),
        10.0
    );
    // Documented codes start at 0; Vonage's 500 was retried and counted.
    for (account, code, class, count) in [
        ("tw", "20003", "auth", 0.0),
        ("tx", "10009", "auth", 0.0),
        ("vo", "http_401", "auth", 0.0),
        ("vo", "http_500", "server", 1.0),
    ] {
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[("account", account), ("code", code), ("class", class)]
            ),
            count,
            "{account} {code}"
        );
    }
    for secret in ["tw-token-secret", "KEY-telnyx-secret", "vo-secret-value"] {
        assert!(!m.text.contains(secret));
    }
    assert_promtool_clean(&m.text);
}

/// Every form of `secret` that must not appear: raw, percent-encoded, base64 of it and of
/// `user:secret` (the Basic header).
fn forms(user: &str, secret: &str) -> Vec<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let percent: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    vec![
        secret.to_owned(),
        percent,
        b64.encode(secret),
        b64.encode(format!("{user}:{secret}")),
    ]
}

/// `--once` at trace level, every auth type of `http_json` (the query one puts its secret
/// in the URL) and a secret from a file and from the environment: none shows in any form.
#[tokio::test]
async fn once_at_trace_level_shows_no_auth_secret_of_any_type() {
    let wallets = || {
        vec![Wallet::new(
            "USD",
            Ledger::fixed(dec("1")),
            Ledger::fixed(Decimal::ZERO),
        )]
    };
    let get = || Shape::Acme {
        method: "GET",
        path: "/w".to_owned(),
        body: None,
    };
    let cases = [
        (
            "basic",
            "username: hj-user, password_env: HJ_BASIC_PASSWORD",
            SimAuth::Basic {
                username: "hj-user".into(),
                password: "hj+Basic/Secret-1".into(),
            },
            "hj+Basic/Secret-1",
        ),
        (
            "bearer",
            "token_file: token.txt",
            SimAuth::Bearer("hj+Bearer/Secret-2".into()),
            "hj+Bearer/Secret-2",
        ),
        (
            "header",
            "name: X-Api-Key, value: 'hj+Header/Secret-3'",
            SimAuth::Header {
                name: "x-api-key".into(),
                value: "hj+Header/Secret-3".into(),
            },
            "hj+Header/Secret-3",
        ),
        (
            "query",
            "name: api_key, value: 'hj+Query/Secret-4'",
            SimAuth::Query {
                name: "api_key".into(),
                value: "hj+Query/Secret-4".into(),
            },
            "hj+Query/Secret-4",
        ),
    ];
    let dir = common::TempDir::new("http-json-trace");
    dir.write("token.txt", "hj+Bearer/Secret-2\n");
    let mut servers = Vec::new();
    let mut accounts = String::new();
    for (kind, keys, auth, _) in &cases {
        let sim = HttpJsonSim::new(get(), auth.clone(), wallets());
        // The answer echoes the credentials as they were sent.
        sim.update(|s| s.body_faults.next(BodyFault::EchoCredentials, 1));
        let server = sim.start().await.unwrap();
        accounts += &format!(
            "\n  - {{name: {kind}, provider: http_json, base_url: '{}', path: /w, auth: {{type: {kind}, {keys}}}, items: /wallets, balances: [{{kind: available, amount: /avail, currency: /cur}}], error_code: /error/code}}",
            server.base_url()
        );
        servers.push(server);
    }
    let file = dir.write("c.yml", &format!("accounts:{accounts}\n"));
    let (code, stdout, stderr) = common::run_binary_async(
        vec![
            "--once".into(),
            "--log.level".into(),
            "trace".into(),
            "--config.file".into(),
            file.display().to_string(),
        ],
        vec![("HJ_BASIC_PASSWORD".into(), "hj+Basic/Secret-1".into())],
    )
    .await;
    // Every account got the echo: a failed --once.
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("level=trace"), "{stderr}");
    for server in &servers {
        assert_eq!(server.request_count(), 1, "each simulator was asked once");
    }
    let m = common::Exposition::parse(&stdout);
    for (kind, _, _, secret) in &cases {
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[("account", kind), ("code", "E_AUTH")]
            ),
            1.0,
            "{kind}"
        );
        let user = if *kind == "basic" { "hj-user" } else { "" };
        for form in forms(user, secret) {
            let output = format!("{stdout}{stderr}").to_ascii_lowercase();
            assert!(
                !output.contains(&form.to_ascii_lowercase()),
                "{kind}: {form} shown"
            );
        }
    }
}
