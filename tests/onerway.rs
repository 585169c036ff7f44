//! Onerway end to end: the simulator on loopback (checking the apikey, request ids and the
//! time window), the exporter polling it, `/metrics` read over HTTP.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use balance_exporter::clock::Clock;
use balance_exporter::providers::onerway::sim::{Envelope, OnerwaySim, SimAccount, SimCurrency};
use balance_exporter::sim::{Fault, Ledger, SimRequest, SimServer};
use common::{Exporter, assert_promtool_clean};
use rust_decimal::Decimal;
use serde_json::Value;

const BALANCE_PATH: &str = "/test/account/balance";
const OVERVIEW_PATH: &str = "/test/account/overview";
const SLOW_POLLS: &str = "  poll_interval: 1h\n  request_timeout: 5s";

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// USD 1500 available (1000 withdrawable), 300 on hold, 200 deposit; EUR 80.25, not active.
fn merchant() -> SimAccount {
    let usd = SimCurrency {
        available: Ledger::fixed(dec("1500.00")),
        withdrawable: Ledger::fixed(dec("1000.00")),
        on_hold: Ledger::fixed(dec("300.00")),
        deposit: Ledger::fixed(dec("200.00")),
        status: "ACTIVE".into(),
    };
    let mut eur = SimCurrency::simple(dec("80.25"));
    eur.status = "FROZEN".into();
    let mut account = SimAccount::new(vec![("USD", usd), ("EUR", eur)]);
    // 1 EUR = 2 USD, so the overview total in USD is 2000 + 2 x 80.25.
    account.usd_rates = vec![("EUR".into(), dec("2"))];
    account
}

async fn simulator(accounts: &[(&str, SimAccount)]) -> (Arc<OnerwaySim>, SimServer) {
    let sim = OnerwaySim::new(BALANCE_PATH, OVERVIEW_PATH);
    for (apikey, account) in accounts {
        sim.add_account(apikey, account.clone());
    }
    let server = sim.start().await.unwrap();
    (sim, server)
}

/// Starts a simulator with `accounts` and an exporter (hourly polls) with the config entries
/// `entries` makes for the simulator's base URL.
async fn start(
    accounts: &[(&str, SimAccount)],
    entries: impl FnOnce(&str) -> Vec<String>,
) -> (SimServer, Exporter) {
    let (_sim, server) = simulator(accounts).await;
    let exporter = Exporter::start(&config(SLOW_POLLS, &entries(&server.base_url()))).await;
    (server, exporter)
}

fn account(name: &str, base_url: &str, apikey: &str, keys: &str) -> String {
    format!(
        "
  - name: {name}
    provider: onerway
    base_url: {base_url}
    apikey: {apikey}{keys}"
    )
}

fn overview(name: &str, base_url: &str, apikey: &str) -> String {
    account(
        name,
        base_url,
        apikey,
        &format!("\n    overview_path: {OVERVIEW_PATH}\n    display_currency: USD"),
    )
}

fn per_currency(name: &str, base_url: &str, apikey: &str, currencies: &str) -> String {
    account(
        name,
        base_url,
        apikey,
        &format!("\n    balance_path: {BALANCE_PATH}\n    currencies: {currencies}"),
    )
}

fn config(global: &str, accounts: &[String]) -> String {
    format!("global:\n{global}\naccounts:{}\n", accounts.concat())
}

fn body_json(request: &SimRequest) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

fn amount(m: &common::Exposition, account: &str, currency: &str, kind: &str) -> f64 {
    m.expect(
        "balance_amount",
        &[("account", account), ("currency", currency), ("kind", kind)],
    )
}

#[tokio::test]
async fn overview_mode_exports_every_currency_status_and_the_converted_total() {
    let (server, mut exporter) = start(&[("key-main-0001", merchant())], |base| {
        vec![overview("main", base, "key-main-0001")]
    })
    .await;
    exporter.poll("main").await.outcome.unwrap();
    let m = exporter.scrape().await;

    assert_eq!(amount(&m, "main", "USD", "available"), 1500.0);
    assert_eq!(amount(&m, "main", "USD", "withdrawable"), 1000.0);
    assert_eq!(amount(&m, "main", "USD", "on_hold"), 300.0);
    assert_eq!(amount(&m, "main", "USD", "deposit"), 200.0);
    assert_eq!(amount(&m, "main", "USD", "total"), 2000.0);
    assert_eq!(amount(&m, "main", "EUR", "available"), 80.25);
    assert_eq!(amount(&m, "main", "EUR", "total"), 80.25);
    assert!(
        m.text.contains(
            r#"balance_overview_amount{account="main",currency="USD",provider="onerway"} 2160.5"#
        ),
        "{}",
        m.text
    );
    for (currency, status) in [("USD", "ACTIVE"), ("EUR", "FROZEN")] {
        assert_eq!(
            m.expect(
                "balance_account_status",
                &[
                    ("account", "main"),
                    ("currency", currency),
                    ("status", status)
                ]
            ),
            1.0
        );
    }
    assert_eq!(
        m.expect(
            "balance_api_requests_total",
            &[("account", "main"), ("endpoint", "overview")]
        ),
        1.0
    );
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "main"), ("code", "40006"), ("class", "client")]
        ),
        0.0
    );
    assert_promtool_clean(&m.text);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", OVERVIEW_PATH)
    );
    assert_eq!(request.header("apikey"), Some("key-main-0001"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = body_json(request);
    assert_eq!(body["displayCurrency"], "USD");
    assert!(body["requestId"].as_str().is_some_and(|id| id.len() >= 16));
    let time = body["requestTime"].as_i64().unwrap();
    assert!((Clock::system().now_millis() as i64 - time).abs() < 60_000);
    assert!(body.get("currency").is_none());
}

#[tokio::test]
async fn per_currency_mode_calls_once_per_configured_currency() {
    let (server, mut exporter) = start(&[("key-main-0001", merchant())], |base| {
        vec![per_currency("main", base, "key-main-0001", "[EUR, USD]")]
    })
    .await;
    exporter.poll("main").await.outcome.unwrap();
    let m = exporter.scrape().await;
    assert_eq!(amount(&m, "main", "USD", "total"), 2000.0);
    assert_eq!(amount(&m, "main", "EUR", "withdrawable"), 80.25);
    assert!(m.find("balance_overview_amount", &[]).is_empty());
    assert_eq!(
        m.expect(
            "balance_account_status",
            &[("account", "main"), ("currency", "EUR")]
        ),
        1.0
    );
    let requests = server.requests();
    let asked: Vec<Value> = requests
        .iter()
        .map(|r| body_json(r)["currency"].clone())
        .collect();
    assert_eq!(asked, ["EUR", "USD"]);
    assert!(requests.iter().all(|r| r.path == BALANCE_PATH));
    assert_eq!(
        m.expect(
            "balance_api_requests_total",
            &[("account", "main"), ("endpoint", "balance")]
        ),
        2.0
    );
}

#[tokio::test]
async fn both_envelopes_and_numeric_codes_read_the_same() {
    let mut code200 = merchant();
    code200.envelope = Envelope::Code200;
    code200.numeric_codes = true;
    let mut resp20000 = merchant();
    resp20000.envelope = Envelope::RespCode20000;
    let (_server, mut exporter) = start(
        &[("key-code-200", code200), ("key-resp-20000", resp20000)],
        |base| {
            vec![
                overview("code200", base, "key-code-200"),
                overview("resp20000", base, "key-resp-20000"),
            ]
        },
    )
    .await;
    exporter.poll("code200").await.outcome.unwrap();
    exporter.poll("resp20000").await.outcome.unwrap();
    let m = exporter.scrape().await;
    for account in ["code200", "resp20000"] {
        assert_eq!(amount(&m, account, "USD", "available"), 1500.0, "{account}");
        assert_eq!(
            m.expect("balance_overview_amount", &[("account", account)]),
            2160.5
        );
    }
}

#[tokio::test]
async fn retries_carry_fresh_request_ids_and_a_reused_one_is_never_sent() {
    let mut account = merchant();
    account.faults.next(Fault::code("40005"), 1);
    let (server, mut exporter) = start(&[("key-main-0001", account)], |base| {
        vec![per_currency("main", base, "key-main-0001", "[USD, EUR]")]
    })
    .await;
    // REQUEST_FAILED once, retried, then the second currency.
    exporter.poll("main").await.outcome.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "a retry, then one call per currency");
    let ids: HashSet<String> = requests
        .iter()
        .map(|r| body_json(r)["requestId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), requests.len(), "every request has its own id");
    assert_eq!(
        body_json(&requests[0])["currency"],
        body_json(&requests[1])["currency"]
    );
    let m = exporter.scrape().await;
    let count = |code: &str, class: &str| {
        m.expect(
            "balance_api_errors_total",
            &[("account", "main"), ("code", code), ("class", class)],
        )
    };
    assert_eq!(count("40005", "server"), 1.0);
    assert_eq!(count("40006", "client"), 0.0);
}

#[tokio::test]
async fn the_simulator_refuses_a_reused_request_id() {
    let (_sim, server) = simulator(&[("key-main-0001", merchant())]).await;
    let client = reqwest::Client::new();
    let now = Clock::system().now_millis();
    let send = |id: &str, time: u64| {
        let request = client
            .post(format!("{}{BALANCE_PATH}", server.base_url()))
            .header("apikey", "key-main-0001")
            .header("content-type", "application/json")
            .body(
                serde_json::json!({"requestId": id, "requestTime": time, "currency": "USD"})
                    .to_string(),
            );
        async move {
            let bytes = request.send().await.unwrap().bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            body["respCode"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(send("id-1", now).await, "20000");
    assert_eq!(send("id-1", now).await, "40006");
    assert_eq!(send("id-2", now - 11 * 60 * 1000).await, "40002");
    assert_eq!(send("id-3", now + 11 * 60 * 1000).await, "40002");
    assert_eq!(send("id-4", now).await, "20000");
}

#[tokio::test]
async fn a_wrong_apikey_is_an_auth_error_sent_once() {
    let (server, mut exporter) = start(&[("key-main-0001", merchant())], |base| {
        vec![overview("bad", base, "key-wrong-0001")]
    })
    .await;
    let error = exporter.poll("bad").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("40003", "auth")
    );
    let m = exporter.scrape().await;
    assert_eq!(m.expect("balance_up", &[("account", "bad")]), 0.0);
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "bad"), ("code", "40003"), ("class", "auth")]
        ),
        1.0
    );
    assert!(m.find("balance_amount", &[("account", "bad")]).is_empty());
    assert_eq!(server.request_count(), 1, "auth errors are not retried");
    assert!(!m.text.contains("key-wrong-0001"));
}

#[tokio::test]
async fn a_clock_11_minutes_off_is_a_clock_error() {
    let (_sim, server) = simulator(&[("key-main-0001", merchant())]).await;
    let yaml = config(
        SLOW_POLLS,
        &[overview("main", &server.base_url(), "key-main-0001")],
    );
    let mut exporter =
        Exporter::start_with_clock(&yaml, Clock::with_offset_ms(-11 * 60 * 1000)).await;
    let error = exporter.poll("main").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("40002", "clock")
    );
    assert_eq!(server.request_count(), 1);
}

/// Each misleading answer (issue 11) is a failed poll counted under its code and class; the
/// good balance before it stays and nothing else shows.
#[tokio::test]
async fn misleading_answers_fail_the_poll_under_their_code_and_class() {
    use balance_exporter::providers::onerway::sim::AnswerFault;

    let (sim, server) = simulator(&[("key-main-0001", merchant())]).await;
    let yaml = config(
        "  poll_interval: 1s\n  request_timeout: 5s",
        &[per_currency(
            "one",
            &server.base_url(),
            "key-main-0001",
            "[USD]",
        )],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("one").await.outcome.unwrap();
    type Inject = Box<dyn Fn(&mut SimAccount)>;
    let cases: Vec<(Inject, &str, &str)> = vec![
        (
            Box::new(|a| a.answer_faults.next(AnswerFault::SuccessWithoutData, 1)),
            "no_balance",
            "decode",
        ),
        (
            Box::new(|a| a.answer_faults.next(AnswerFault::EmptyObject, 1)),
            "no_balance",
            "decode",
        ),
        (
            Box::new(|a| {
                a.answer_faults
                    .next(AnswerFault::WrongCurrency("EUR".into()), 1)
            }),
            "wrong_currency",
            "decode",
        ),
        // The error envelope under HTTP 200.
        (
            Box::new(|a| a.faults.next(Fault::code("40003"), 1)),
            "40003",
            "auth",
        ),
    ];
    let mut counted = std::collections::HashMap::new();
    for (inject, code, class) in cases {
        let expected = counted.entry(code).or_insert(0.0);
        *expected += 1.0;
        let expected = *expected;
        sim.update("key-main-0001", |a| inject(a));
        let error = exporter.poll("one").await.outcome.unwrap_err();
        assert_eq!((error.code.as_str(), error.class.as_str()), (code, class));
        let m = exporter.scrape().await;
        assert_eq!(m.expect("balance_up", &[("account", "one")]), 0.0, "{code}");
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[("account", "one"), ("code", code), ("class", class)]
            ),
            expected,
            "{code}"
        );
        assert_eq!(amount(&m, "one", "USD", "available"), 1500.0, "{code}");
        assert!(
            m.find("balance_amount", &[("account", "one"), ("currency", "EUR")])
                .is_empty(),
            "{code}"
        );
    }
}
