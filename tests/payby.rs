//! PayBy end to end: the simulator on loopback (verifying our signatures, signing its answers),
//! the exporter polling it, `/metrics` read over HTTP.

mod common;

use std::sync::Arc;

use balance_exporter::clock::Clock;
use balance_exporter::providers::payby::sim::{
    PayBySim, Signing, SimAccount, TEST_MERCHANT_PUBLIC_KEY, TEST_PAYBY_PRIVATE_KEY,
};
use balance_exporter::providers::payby::{BALANCE_PATH, SigningKey, VerifyingKey};
use balance_exporter::sim::{Fault, Ledger, SimRequest, SimServer};
use common::{Exporter, assert_promtool_clean};
use rust_decimal::Decimal;
use serde_json::Value;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
const SLOW_POLLS: &str = "  poll_interval: 1h\n  request_timeout: 5s";

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn merchant_key() -> VerifyingKey {
    VerifyingKey::from_text(TEST_MERCHANT_PUBLIC_KEY).unwrap()
}

/// A simulator with one merchant per `(partner_id, balances)`.
async fn simulator(accounts: &[(&str, &[(&str, &str)])]) -> (Arc<PayBySim>, SimServer) {
    let sim = PayBySim::new(SigningKey::from_pem(TEST_PAYBY_PRIVATE_KEY).unwrap());
    for (partner, balances) in accounts {
        let balances = balances
            .iter()
            .map(|(c, amount)| (*c, Ledger::fixed(dec(amount))))
            .collect();
        sim.add_account(partner, SimAccount::new(merchant_key(), balances));
    }
    let server = sim.start().await.unwrap();
    (sim, server)
}

/// One account block; keys from the test vector (the merchant key as PKCS#1 for a change).
fn account(name: &str, base_url: &str, partner: &str, currencies: &str) -> String {
    format!(
        "
  - name: {name}
    provider: payby
    base_url: {base_url}
    partner_id: \"{partner}\"
    private_key_file: {TESTDATA}/payby/merchant_private_key_pkcs1.pem
    payby_public_key_file: {TESTDATA}/payby/payby_public_key.pem
    currencies: {currencies}"
    )
}

fn config(global: &str, accounts: &[String]) -> String {
    format!("global:\n{global}\naccounts:{}\n", accounts.concat())
}

fn errors(m: &common::Exposition, account: &str, code: &str, class: &str) -> f64 {
    m.expect(
        "balance_api_errors_total",
        &[("account", account), ("code", code), ("class", class)],
    )
}

fn body_json(request: &SimRequest) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

#[tokio::test]
async fn balances_are_exact_and_requests_are_signed_as_documented() {
    let (_sim, server) =
        simulator(&[("200000018128", &[("AED", "897993.88"), ("USD", "-12.5")])]).await;
    let yaml = config(
        SLOW_POLLS,
        &[
            account("payby-ae", &server.base_url(), "200000018128", "[AED, USD]")
                + "\n    thresholds:\n      - currency: AED\n        warning: 100000",
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("payby-ae").await.outcome.unwrap();

    let m = exporter.scrape().await;
    assert!(
        m.text.contains(r#"balance_amount{account="payby-ae",currency="AED",kind="available",provider="payby"} 897993.88"#),
        "{}",
        m.text
    );
    assert_eq!(
        m.expect(
            "balance_amount",
            &[("account", "payby-ae"), ("currency", "USD")]
        ),
        -12.5
    );
    assert_eq!(m.expect("balance_up", &[("account", "payby-ae")]), 1.0);
    assert_eq!(
        m.expect(
            "balance_api_requests_total",
            &[("account", "payby-ae"), ("endpoint", "getBalance")]
        ),
        2.0
    );
    // The documented codes, and the signature codes, start at zero.
    for (code, class) in [
        ("REQUESTTIME_TOO_EARLY", "clock"),
        ("RATE_LIMIT_REJECT", "rate_limit"),
        ("CURRENCY_CODE_NOT_SUPPORTED", "client"),
        ("signature_invalid", "signature"),
        ("signature_missing", "signature"),
    ] {
        assert_eq!(errors(&m, "payby-ae", code, class), 0.0, "{code}");
    }
    let skew = m.expect("balance_clock_skew_seconds", &[("account", "payby-ae")]);
    assert!(skew.abs() < 5.0, "{skew}");
    assert_promtool_clean(&m.text);

    // What went over the wire: one signed call per currency, headers as providers.md lists.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let merchant = merchant_key();
    let now = Clock::system().now_millis() as i64;
    for (request, currency) in requests.iter().zip(["AED", "USD"]) {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", BALANCE_PATH)
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("partner-id"), Some("200000018128"));
        assert_eq!(request.header("content-language"), Some("en"));
        assert_eq!(request.header("api-version"), Some("v1"));
        assert_eq!(request.header("accept"), Some("application/json"));
        let sign = request.header("sign").expect("sign header");
        assert!(
            merchant.verify(&request.body, sign),
            "the signature covers the bytes sent"
        );
        let body = body_json(request);
        assert_eq!(body["bizContent"]["currencyCode"], currency);
        let time = body["requestTime"].as_i64().unwrap();
        assert!(
            (now - time).abs() < 60_000,
            "requestTime {time} vs now {now}"
        );
    }
}

#[tokio::test]
async fn an_empty_list_is_a_valid_answer_and_listed_currencies_are_deduplicated() {
    let (sim, server) = simulator(&[
        ("100000000001", &[("AED", "10.00")]),
        ("100000000002", &[("AED", "1.25"), ("USD", "2.50")]),
    ])
    .await;
    // The second merchant lists every currency on every call.
    sim.update("100000000002", |a| a.list_all = true);
    let yaml = config(
        SLOW_POLLS,
        &[
            account("held", &server.base_url(), "100000000001", "[AED, SAR]"),
            account("listed", &server.base_url(), "100000000002", "[AED, USD]"),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("held").await.outcome.unwrap();
    exporter.poll("listed").await.outcome.unwrap();
    let m = exporter.scrape().await;
    assert_eq!(m.expect("balance_up", &[("account", "held")]), 1.0);
    assert_eq!(
        m.expect(
            "balance_amount",
            &[("account", "held"), ("currency", "AED")]
        ),
        10.0
    );
    assert!(
        m.find(
            "balance_amount",
            &[("account", "held"), ("currency", "SAR")]
        )
        .is_empty()
    );
    // Two calls, each listing both currencies: one series each.
    assert_eq!(m.find("balance_amount", &[("account", "listed")]).len(), 2);
    assert_eq!(
        m.expect(
            "balance_amount",
            &[("account", "listed"), ("currency", "USD")]
        ),
        2.5
    );
    assert_promtool_clean(&m.text);
}

#[tokio::test]
async fn a_tampered_or_wrongly_signed_answer_is_never_believed() {
    let (sim, server) = simulator(&[("100000000001", &[("AED", "500.00")])]).await;
    let yaml = config(
        "  poll_interval: 1s\n  request_timeout: 5s",
        &[account("ae", &server.base_url(), "100000000001", "[AED]")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("ae").await.outcome.unwrap();

    for (round, signing) in [Signing::Tampered, Signing::Wrong].into_iter().enumerate() {
        sim.update("100000000001", |a| a.signing = signing);
        let before = server.request_count();
        let error = exporter.poll("ae").await.outcome.unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class.as_str()),
            ("signature_invalid", "signature")
        );
        assert_eq!(
            server.request_count(),
            before + 1,
            "a forged answer is not retried"
        );
        let m = exporter.scrape().await;
        assert_eq!(m.expect("balance_up", &[("account", "ae")]), 0.0);
        assert_eq!(
            errors(&m, "ae", "signature_invalid", "signature"),
            round as f64 + 1.0
        );
        // The last good balance stays; the inflated one never shows.
        assert_eq!(
            m.expect("balance_amount", &[("account", "ae")]),
            500.0,
            "{signing:?}"
        );
    }
}

#[tokio::test]
async fn an_unsigned_success_is_not_believed() {
    let (sim, server) = simulator(&[("100000000001", &[("AED", "500.00")])]).await;
    sim.update("100000000001", |a| a.signing = Signing::Omitted);
    let yaml = config(
        SLOW_POLLS,
        &[account("ae", &server.base_url(), "100000000001", "[AED]")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("ae").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("signature_missing", "signature")
    );
    let m = exporter.scrape().await;
    assert!(
        m.find("balance_amount", &[("account", "ae")]).is_empty(),
        "{}",
        m.text
    );
    assert_eq!(errors(&m, "ae", "signature_missing", "signature"), 1.0);
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn an_unsigned_generic_error_is_counted_under_its_code_and_retried() {
    let (sim, server) = simulator(&[("100000000001", &[("AED", "42.00")])]).await;
    // The gateway's generic SYSTEM_ERROR (500) comes unsigned; the retry's success is signed.
    sim.update("100000000001", |a| {
        a.signing = Signing::GatewayErrorsUnsigned;
        a.faults.next(Fault::code("SYSTEM_ERROR"), 1);
    });
    let yaml = config(
        SLOW_POLLS,
        &[account("ae", &server.base_url(), "100000000001", "[AED]")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("ae").await.outcome.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let m = exporter.scrape().await;
    // Unsigned: labelled by its code, not by its msg.
    assert_eq!(errors(&m, "ae", "gateway_500", "server"), 1.0);
    assert_eq!(errors(&m, "ae", "SYSTEM_ERROR", "server"), 0.0);
    assert_eq!(errors(&m, "ae", "signature_missing", "signature"), 0.0);
    assert_eq!(m.expect("balance_amount", &[("account", "ae")]), 42.0);
}

/// The documented codes with the class the issue gives each (the label is the msg name).
const DOCUMENTED: &[(&str, &str)] = &[
    ("INVALID_PARAMETER", "client"),
    ("REQUESTTIME_TOO_EARLY", "clock"),
    ("REQUESTTIME_TOO_LATER", "clock"),
    ("RATE_LIMIT_REJECT", "rate_limit"),
    ("UNAUTHORIZED", "auth"),
    ("SERVICE_NOT_AVAILABLE", "server"),
    ("SYSTEM_ERROR", "server"),
    ("SERVICE_TIMEOUT", "server"),
    ("RISK_FAIL", "auth"),
    ("CURRENCY_CODE_NOT_SUPPORTED", "client"),
];

#[tokio::test]
async fn each_documented_code_is_counted_under_its_msg_and_class() {
    let partners: Vec<String> = (0..DOCUMENTED.len())
        .map(|i| format!("3000000000{i:02}"))
        .collect();
    let (sim, server) = simulator(&[]).await;
    let mut accounts = Vec::new();
    for ((msg, _), partner) in DOCUMENTED.iter().zip(&partners) {
        let mut account = SimAccount::new(merchant_key(), vec![("AED", Ledger::fixed(dec("1")))]);
        account.faults.next(Fault::code(*msg), 1);
        sim.add_account(partner, account);
        accounts.push(self::account(
            &msg.to_lowercase(),
            &server.base_url(),
            partner,
            "[AED]",
        ));
    }
    let mut exporter = Exporter::start(&config(SLOW_POLLS, &accounts)).await;
    for (msg, class) in DOCUMENTED {
        let name = msg.to_lowercase();
        let outcome = exporter.poll(&name).await.outcome;
        let transient = matches!(*class, "server" | "rate_limit");
        // Transient codes are retried (and the retry succeeds); the others end the poll.
        match &outcome {
            Ok(()) => assert!(transient, "{msg} was retried"),
            Err(e) => {
                assert!(!transient, "{msg}: {e}");
                assert_eq!((e.code.as_str(), e.class.as_str()), (*msg, *class));
            }
        }
        let m = exporter.scrape().await;
        assert_eq!(errors(&m, &name, msg, class), 1.0, "{msg}");
        let sent = m.expect("balance_api_requests_total", &[("account", &name)]);
        assert_eq!(sent, if transient { 2.0 } else { 1.0 }, "{msg}");
    }
    drop(sim);
}

#[tokio::test]
async fn a_clock_16_minutes_off_is_a_clock_error_and_shows_as_skew() {
    let (_sim, server) = simulator(&[("100000000001", &[("AED", "1.00")])]).await;
    let yaml = config(
        SLOW_POLLS,
        &[account("ae", &server.base_url(), "100000000001", "[AED]")],
    );
    let minutes = |n: i64| n * 60 * 1000;
    for (offset, code) in [
        (minutes(-16), Some("REQUESTTIME_TOO_EARLY")),
        (minutes(16), Some("REQUESTTIME_TOO_LATER")),
        (minutes(-14), None),
    ] {
        let before = server.request_count();
        let mut exporter = Exporter::start_with_clock(&yaml, Clock::with_offset_ms(offset)).await;
        let outcome = exporter.poll("ae").await.outcome;
        let m = exporter.scrape().await;
        match code {
            Some(code) => {
                let error = outcome.unwrap_err();
                assert_eq!((error.code.as_str(), error.class.as_str()), (code, "clock"));
                assert_eq!(errors(&m, "ae", code, "clock"), 1.0);
                assert_eq!(
                    server.request_count(),
                    before + 1,
                    "a clock error is not retried"
                );
            }
            None => outcome.unwrap(),
        }
        // The provider's Date minus our (skewed) clock.
        let skew = m.expect("balance_clock_skew_seconds", &[("account", "ae")]);
        let expected = -(offset as f64) / 1000.0;
        assert!(
            (skew - expected).abs() < 5.0,
            "skew {skew}, expected about {expected}"
        );
    }
}

#[tokio::test]
async fn rate_limit_backs_off_and_retries_with_a_fresh_time_and_signature() {
    let (sim, server) = simulator(&[("100000000001", &[("AED", "7.00")])]).await;
    sim.update("100000000001", |a| {
        a.faults.next(Fault::code("RATE_LIMIT_REJECT"), 1)
    });
    let yaml = config(
        SLOW_POLLS,
        &[account("ae", &server.base_url(), "100000000001", "[AED]")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("ae").await.outcome.unwrap();
    let m = exporter.scrape().await;
    assert_eq!(errors(&m, "ae", "RATE_LIMIT_REJECT", "rate_limit"), 1.0);
    assert_eq!(m.expect("balance_amount", &[("account", "ae")]), 7.0);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let times: Vec<i64> = requests
        .iter()
        .map(|r| body_json(r)["requestTime"].as_i64().unwrap())
        .collect();
    // The requests are stamped when built: the gap is the backoff (1 s at least after a
    // rate limit, jitter included).
    assert!(
        times[1] - times[0] >= 1000,
        "retried after {} ms",
        times[1] - times[0]
    );
    assert_ne!(requests[0].header("sign"), requests[1].header("sign"));
}

#[tokio::test]
async fn a_request_signed_with_the_wrong_key_is_refused_by_payby() {
    let (_sim, server) = simulator(&[("100000000001", &[("AED", "7.00")])]).await;
    // PayBy's own private key stands in for a merchant key PayBy does not hold.
    let yaml = config(
        SLOW_POLLS,
        &[
            account("ae", &server.base_url(), "100000000001", "[AED]").replace(
                "payby/merchant_private_key_pkcs1.pem",
                "payby/payby_private_key.pem",
            ),
        ],
    );
    let mut exporter = Exporter::start(&yaml).await;
    let error = exporter.poll("ae").await.outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class.as_str()),
        ("UNAUTHORIZED", "auth")
    );
    assert!(
        error.message.contains("applyStatus ERROR"),
        "{}",
        error.message
    );
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn the_simulator_enforces_the_time_window_and_the_signature() {
    let (_sim, server) = simulator(&[("100000000001", &[("AED", "7.00")])]).await;
    let merchant = SigningKey::from_pem(
        &std::fs::read_to_string(format!("{TESTDATA}/payby/merchant_private_key_pkcs8.pem"))
            .unwrap(),
    )
    .unwrap();
    let payby = VerifyingKey::from_text(
        &std::fs::read_to_string(format!("{TESTDATA}/payby/payby_public_key.pem")).unwrap(),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let send = |body: String, sign: Option<String>| {
        let mut request = client
            .post(format!("{}{BALANCE_PATH}", server.base_url()))
            .header("content-type", "application/json")
            .header("partner-id", "100000000001")
            .body(body);
        if let Some(sign) = sign {
            request = request.header("sign", sign);
        }
        async move {
            let response = request.send().await.unwrap();
            let sign = response
                .headers()
                .get("sign")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.bytes().await.unwrap();
            (body, sign)
        }
    };
    let now = Clock::system().now_millis();
    let msg = |body: &[u8]| {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["head"]["msg"].as_str().unwrap().to_owned()
    };
    for (time, expected) in [
        (now, "SUCCESS"),
        (now - 16 * 60 * 1000, "REQUESTTIME_TOO_EARLY"),
        (now + 16 * 60 * 1000, "REQUESTTIME_TOO_LATER"),
    ] {
        let body = format!(r#"{{"bizContent":{{"currencyCode":"AED"}},"requestTime":{time}}}"#);
        let sign = merchant.sign(body.as_bytes()).unwrap();
        let (answer, answer_sign) = send(body, Some(sign)).await;
        assert_eq!(msg(&answer), expected);
        assert!(
            payby.verify(&answer, &answer_sign.unwrap()),
            "answers are signed"
        );
    }
    // A signature over other bytes (a re-serialized body, say) is refused.
    let body = format!(r#"{{"bizContent":{{"currencyCode":"AED"}},"requestTime":{now}}}"#);
    let spaced = format!(r#"{{"bizContent": {{"currencyCode": "AED"}}, "requestTime": {now}}}"#);
    let (answer, _) = send(spaced, Some(merchant.sign(body.as_bytes()).unwrap())).await;
    assert_eq!(msg(&answer), "UNAUTHORIZED");
    let (answer, _) = send(body, None).await;
    assert_eq!(msg(&answer), "UNAUTHORIZED");
}

/// Each misleading answer (issue 11) is a failed poll counted under its code and class: a
/// signed success without body, a signed answer for another currency, an unsigned gateway
/// error naming a documented msg. The good balance before stays; nothing else shows.
#[tokio::test]
async fn misleading_answers_fail_the_poll_under_their_code_and_class() {
    use balance_exporter::providers::payby::sim::AnswerFault;

    let (sim, server) = simulator(&[("100000000001", &[("AED", "500.00")])]).await;
    // 3 s, not 1 s: a poll ends at poll_interval, and the retried gateway error's back-offs
    // and signatures took longer than 1 s on a loaded CI machine ("timeout").
    let yaml = config(
        "  poll_interval: 3s\n  request_timeout: 5s",
        &[account("ae", &server.base_url(), "100000000001", "[AED]")],
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("ae").await.outcome.unwrap();
    let unsigned = || AnswerFault::UnsignedGatewayError {
        code: "5801".into(),
        msg: "UNAUTHORIZED".into(),
    };
    for (fault, n, code, class) in [
        (AnswerFault::SuccessWithoutBody, 1, "no_balance", "decode"),
        (
            AnswerFault::WrongCurrency("USD".into()),
            1,
            "wrong_currency",
            "decode",
        ),
        // Retried as a server error: every attempt gets it (the last case: leftovers are moot).
        (unsigned(), 10, "gateway_5801", "server"),
    ] {
        sim.update("100000000001", |a| a.answer_faults.next(fault.clone(), n));
        let error = exporter.poll("ae").await.outcome.unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class.as_str()),
            (code, class),
            "{fault:?}"
        );
        let m = exporter.scrape().await;
        assert_eq!(m.expect("balance_up", &[("account", "ae")]), 0.0);
        assert!(errors(&m, "ae", code, class) >= 1.0, "{fault:?}");
        assert!(
            m.find(
                "balance_api_errors_total",
                &[("account", "ae"), ("class", "auth")]
            )
            .iter()
            .all(|s| s.value == 0.0),
            "an unsigned UNAUTHORIZED is never an auth error"
        );
        assert_eq!(m.expect("balance_amount", &[("account", "ae")]), 500.0);
        assert!(
            m.find("balance_amount", &[("account", "ae"), ("currency", "USD")])
                .is_empty()
        );
    }
}
