//! Stripe end to end: the simulator on loopback, the exporter polling it, `/metrics` read over
//! HTTP.

mod common;

use std::sync::Arc;

use balance_exporter::providers::stripe::sim::{BodyFault, SimAccount, SimFunds, StripeSim};
use balance_exporter::providers::stripe::{
    AVAILABLE, CONNECT_RESERVED, ISSUING_AVAILABLE, PENDING,
};
use balance_exporter::sim::{Fault, Ledger, SimServer};
use common::{Exporter, assert_promtool_clean};
use rust_decimal::Decimal;

const KEY: &str = "sk_test_51IntegrationPlatformKey";
const ACCOUNT: &str = "acct_1IntegrationConnected";

fn funds(kind: &'static str, currency: &str, amount: &str) -> SimFunds {
    SimFunds::new(
        kind,
        currency,
        Ledger::fixed(amount.parse::<Decimal>().unwrap()),
    )
}

async fn simulator() -> (Arc<StripeSim>, SimServer) {
    let sim = StripeSim::new();
    sim.add_account(
        KEY,
        SimAccount::new(vec![
            funds(AVAILABLE, "USD", "1234.56"),
            funds(PENDING, "USD", "20"),
            funds(AVAILABLE, "JPY", "5000"),
            funds(AVAILABLE, "KWD", "1.234"),
            funds(ISSUING_AVAILABLE, "EUR", "7.5"),
        ])
        .with_connected(
            ACCOUNT,
            vec![
                funds(AVAILABLE, "GBP", "99.99"),
                funds(CONNECT_RESERVED, "GBP", "5"),
            ],
        ),
    );
    let server = sim.start().await.unwrap();
    (sim, server)
}

fn config(base_url: &str, accounts: &[(&str, &str)]) -> String {
    let mut yaml = "global:\n  poll_interval: 1h\n  request_timeout: 5s\naccounts:".to_owned();
    for (name, extra) in accounts {
        yaml.push_str(&format!(
            "\n  - name: {name}\n    provider: stripe\n    base_url: {base_url}\n    api_key: {KEY}\n{extra}"
        ));
    }
    yaml.push('\n');
    yaml
}

fn balance<'a>(account: &'a str, currency: &'a str, kind: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("provider", "stripe"),
        ("account", account),
        ("currency", currency),
        ("kind", kind),
    ]
}

#[tokio::test]
async fn balances_in_stripes_minor_units_for_the_platform_and_a_connected_account() {
    let (_sim, server) = simulator().await;
    let yaml = config(
        &server.base_url(),
        &[
            (
                "platform",
                "    thresholds:\n      - currency: USD\n        warning: 2000\n        critical: 100\n",
            ),
            ("connected", &format!("    stripe_account: {ACCOUNT}\n")),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    assert!(exporter.poll("platform").await.outcome.is_ok());
    assert!(exporter.poll("connected").await.outcome.is_ok());
    let m = exporter.scrape().await;
    assert!(
        m.text.contains(r#"balance_amount{account="platform",currency="USD",kind="available",provider="stripe"} 1234.56"#),
        "{}",
        m.text
    );
    for (account, currency, kind, amount) in [
        ("platform", "USD", PENDING, 20.0),
        ("platform", "JPY", AVAILABLE, 5000.0),
        ("platform", "KWD", AVAILABLE, 1.234),
        ("platform", "EUR", ISSUING_AVAILABLE, 7.5),
        ("connected", "GBP", AVAILABLE, 99.99),
        ("connected", "GBP", CONNECT_RESERVED, 5.0),
    ] {
        let l = balance(account, currency, kind);
        assert_eq!(m.expect("balance_amount", &l), amount, "{l:?}");
    }
    // The connected account's balance is its own, not the platform's.
    assert!(
        m.find(
            "balance_amount",
            &[("account", "connected"), ("currency", "USD")]
        )
        .is_empty()
    );
    // The threshold applies to `available` by default.
    assert_eq!(
        m.expect(
            "balance_low_threshold",
            &[
                ("account", "platform"),
                ("kind", "available"),
                ("currency", "USD"),
                ("severity", "warning")
            ]
        ),
        2000.0
    );
    // Documented codes start at zero, each with its class.
    for (code, class) in [
        ("authentication_error", "auth"),
        ("permission_error", "auth"),
        ("account_invalid", "auth"),
        ("rate_limit", "rate_limit"),
        ("api_error", "server"),
    ] {
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[("account", "platform"), ("code", code), ("class", class)]
            ),
            0.0,
            "{code}"
        );
    }
    assert!(!m.text.contains(KEY), "the key is in /metrics");
    assert_promtool_clean(&m.text);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some(&*format!("Bearer {KEY}")))
    );
}

#[tokio::test]
async fn a_connect_account_the_key_may_not_read_is_counted_as_account_invalid_once() {
    let (_sim, server) = simulator().await;
    let yaml = config(
        &server.base_url(),
        &[("foreign", "    stripe_account: acct_1NotOurs\n")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("foreign").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("account_invalid", "auth")
    );
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[
                ("account", "foreign"),
                ("code", "account_invalid"),
                ("class", "auth")
            ]
        ),
        1.0
    );
    assert_eq!(m.expect("balance_up", &[("account", "foreign")]), 0.0);
    assert_eq!(server.request_count(), 1, "auth errors are not retried");
}

#[tokio::test]
async fn api_errors_are_retried_unless_stripe_says_not_to() {
    let (sim, server) = simulator().await;
    sim.update(KEY, |a| a.faults.next(Fault::code("api_error"), 1));
    let yaml = config(&server.base_url(), &[("platform", "")]);
    let mut exporter = Exporter::start(&yaml).await;
    assert!(exporter.poll("platform").await.outcome.is_ok());
    assert_eq!(server.request_count(), 2);
    let m = exporter.scrape().await;
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[
                ("account", "platform"),
                ("code", "api_error"),
                ("class", "server")
            ]
        ),
        1.0
    );
    drop(exporter);

    sim.update(KEY, |a| {
        a.body_faults.next(
            BodyFault::NoRetry {
                code: "api_error".into(),
            },
            1,
        )
    });
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("platform").await.outcome.unwrap_err();
    assert_eq!(error.code, "api_error");
    assert_eq!(
        server.request_count(),
        3,
        "Stripe-Should-Retry: false is one request"
    );
}

#[tokio::test]
async fn a_wrong_key_an_answer_without_balance_and_an_echoed_key() {
    let (sim, server) = simulator().await;
    let wrong =
        config(&server.base_url(), &[("platform", "")]).replace(KEY, "sk_test_notTheKey0000");
    let mut exporter = Exporter::start(&wrong).await;
    let error = exporter.poll("platform").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("authentication_error", "auth")
    );
    drop(exporter);

    sim.update(KEY, |a| {
        a.body_faults.next(BodyFault::WrongObject, 1);
        a.body_faults.next(BodyFault::EchoCredentials, 1);
    });
    let yaml = config(&server.base_url(), &[("platform", "")]);
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("platform").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("no_balance", "decode")
    );
    drop(exporter);
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("platform").await.outcome.unwrap_err();
    assert_eq!(error.code, "authentication_error");
    assert!(!error.message.contains(KEY), "{}", error.message);
    let (_, status_page) = exporter.get("/").await;
    let m = exporter.scrape().await;
    for text in [&status_page, &m.text] {
        assert!(
            !text.contains(KEY) && !text.contains("IntegrationPlatformKey"),
            "the key leaked"
        );
    }
}
