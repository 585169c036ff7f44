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
