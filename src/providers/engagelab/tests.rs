use rust_decimal::Decimal;

use super::sim::{EngageLabSim, SimAccount};
use super::*;
use crate::providers::fuzz;
use crate::sim::{Fault, Ledger, SimHandler};

/// The provider against its simulator called in-process through the common transport
/// (`sim::in_process`), so that retries, backoff and hangs run under paused time.
mod in_process {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::clock::Clock;
    use crate::config::{Format, parse};
    use crate::providers::http::{CountingObserver, plain_settings};
    use crate::providers::{HttpClient, ProviderConfig, SharedState};
    use crate::sim::in_process::InProcess;

    fn sms_sim() -> Arc<EngageLabSim> {
        let sim = EngageLabSim::new(Product::Sms);
        sim.add_account(
            "key",
            SimAccount::new(
                "secret",
                Ledger::fixed(Decimal::new(1_250, 2)),
                Ledger::fixed(Decimal::ZERO),
            ),
        );
        sim
    }

    /// Polls once through `PollContext` with a poll of `budget`, as the scheduler would.
    async fn poll(
        sim: Arc<EngageLabSim>,
        budget: Duration,
    ) -> (Result<Snapshot, ProviderError>, CountingObserver, usize) {
        let yaml = "accounts:\n  - {name: a, provider: engagelab, product: sms, \
                    base_url: 'http://engagelab.sim', dev_key: key, dev_secret: secret}\n";
        let config = parse(yaml, Format::Yaml, std::path::Path::new(".")).unwrap();
        let ProviderConfig::EngageLab(engagelab) = &config.accounts[0].provider else {
            panic!("not EngageLab");
        };
        let provider = engagelab.build(&SharedState::default());
        let wire = InProcess::new(sim);
        let client =
            HttpClient::with_transport(&plain_settings(), Clock::system(), wire.clone()).unwrap();
        let observer = CountingObserver::new("a");
        let http = PollContext::new(&client, &observer, &[], Instant::now() + budget, 100);
        let outcome = provider.fetch(&http).await;
        (outcome, observer, wire.exchanged().len())
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_error_is_retried_after_its_backoff_and_the_poll_succeeds() {
        let sim = sms_sim();
        sim.update("key", |a| a.faults.next(Fault::code("1000"), 1));
        let started = Instant::now();
        let (outcome, observer, requests) = poll(sim, Duration::from_secs(60)).await;
        let snapshot = outcome.unwrap();
        assert_eq!(snapshot.currencies(), vec!["USD"]);
        assert_eq!((requests, observer.requests()), (2, 2));
        assert_eq!(observer.errors(), ["1000"]);
        // The first backoff is 1 s with ±50 % jitter: paused time, so exactly what was waited.
        let waited = started.elapsed();
        assert!(
            (Duration::from_millis(500)..=Duration::from_millis(1500)).contains(&waited),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_provider_costs_three_timed_out_attempts_within_the_poll() {
        let sim = sms_sim();
        sim.update("key", |a| a.faults.always(Fault::Hang));
        let started = Instant::now();
        let budget = Duration::from_secs(30);
        let (outcome, observer, requests) = poll(sim, budget).await;
        let error = outcome.unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("timeout", ErrorClass::Transport)
        );
        assert_eq!(requests, 3);
        assert_eq!(observer.errors(), ["timeout", "timeout", "timeout"]);
        // Each attempt waits its 10 s request timeout (the last one what is left of the poll).
        let took = started.elapsed();
        assert!(took > Duration::from_secs(20) && took <= budget, "{took:?}");
    }
}

/// Answers of the SMS and OTP simulators: balances, an auth error, a garbled body.
fn sim_answers() -> Vec<Vec<u8>> {
    fuzz::block_on(async {
        let mut out = Vec::new();
        for product in [Product::Sms, Product::Otp] {
            let sim = EngageLabSim::new(product);
            sim.add_account(
                "key",
                SimAccount::new(
                    "secret",
                    Ledger::fixed(Decimal::new(8_979_938_812, 4)),
                    Ledger::fixed(Decimal::new(125, 1)),
                ),
            );
            // "key:secret" and "key:wrong" in base64.
            let ask = |auth: &str| {
                fuzz::sim_request(
                    "GET",
                    "/v1/balance",
                    None,
                    &[("authorization", auth)],
                    vec![],
                )
            };
            let good = ask("Basic a2V5OnNlY3JldA==");
            out.push(fuzz::answer_body(sim.handle(&good).await, 200));
            out.push(fuzz::answer_body(
                sim.handle(&ask("Basic a2V5Ondyb25n")).await,
                401,
            ));
            sim.update("key", |a| a.faults.next(Fault::Malformed, 1));
            out.push(fuzz::answer_body(sim.handle(&good).await, 200));
        }
        out
    })
}

#[test]
fn the_parsers_never_panic_on_arbitrary_or_mutated_answers() {
    let seeds = sim_answers();
    let first = fuzz::response(200, &seeds[0], &[]);
    assert_eq!(
        parse_sms(&first, "USD").unwrap().balances[0].amount,
        Decimal::new(8_979_938_812, 4),
        "the seeds are real answers"
    );
    fuzz::check(seeds, |status, body| {
        let response = fuzz::response(status, body, &[("retry-after", "7")]);
        let _ = parse_sms(&response, "USD");
        let _ = parse_otp(&response);
    });
}

fn at(status: u16, body: &str) -> Response {
    fuzz::response(status, body.as_bytes(), &[])
}

#[test]
fn a_2xx_without_any_balance_field_is_no_balance_never_a_success() {
    for body in [
        "{}",
        r#"{"foo":1}"#,
        r#"{"code":0,"message":"success"}"#,
        r#"{"balance":null,"gift_balance":null,"total_balance":null}"#,
        r#"{"currency":"USD"}"#,
    ] {
        for (product, result) in [
            ("sms", parse_sms(&at(200, body), "USD")),
            ("otp", parse_otp(&at(200, body))),
        ] {
            let error = result.unwrap_err();
            assert_eq!(
                (error.code.as_str(), error.class),
                ("no_balance", ErrorClass::Decode),
                "{product} {body}"
            );
        }
    }
    // One field is enough: a partial answer is an answer.
    let sms = parse_sms(&at(200, r#"{"balance10000":50000}"#), "USD").unwrap();
    assert_eq!(sms.balances.len(), 1);
    assert_eq!(sms.balances[0].amount, Decimal::from(5));
    let otp = parse_otp(&at(200, r#"{"currency":"EUR","gift_balance":"1.5000"}"#)).unwrap();
    assert_eq!(otp.balances.len(), 1);
    // A code 0 beside balances is not an error.
    let ok = parse_sms(&at(200, r#"{"code":0,"balance":1.5}"#), "USD").unwrap();
    assert_eq!(ok.balances[0].amount, Decimal::new(15, 1));
    // Amounts without a currency stay a decode error of their own.
    assert_eq!(
        parse_otp(&at(200, r#"{"balance":"1.0000"}"#))
            .unwrap_err()
            .code,
        "decode"
    );
}

#[test]
fn an_error_envelope_under_200_is_the_error_it_is_with_its_documented_status() {
    for (code, status, class) in [
        ("2001", 401, ErrorClass::Auth),
        ("2002", 401, ErrorClass::Auth),
        ("2002", 403, ErrorClass::Auth),
        ("1000", 500, ErrorClass::Server),
    ] {
        let body = format!(r#"{{"code":{code},"message":"m {code}"}}"#);
        let under_200 = parse_sms(&at(200, &body), "USD").unwrap_err();
        let documented = parse_sms(&at(status, &body), "USD").unwrap_err();
        for error in [&under_200, &documented] {
            assert_eq!((error.code.as_str(), error.class), (code, class), "{body}");
            assert_eq!(error.message, format!("m {code}"));
        }
        assert_eq!(
            under_200.is_retryable(),
            documented.is_retryable(),
            "{body}"
        );
        assert_eq!(parse_otp(&at(200, &body)).unwrap_err().code, code);
    }
    assert!(
        parse_sms(&at(200, r#"{"code":1000}"#), "USD")
            .unwrap_err()
            .is_retryable()
    );
    // Undocumented: counted under its code as a refusal, not retried, not `auth`.
    let unknown = parse_otp(&at(200, r#"{"code":3005,"message":"x"}"#)).unwrap_err();
    assert_eq!(
        (unknown.code.as_str(), unknown.class),
        ("3005", ErrorClass::Client)
    );
    assert!(!unknown.is_retryable());
    // Even beside balance fields, a non-zero code is an error.
    let mixed = parse_sms(&at(200, r#"{"code":2001,"balance":1}"#), "USD").unwrap_err();
    assert_eq!(mixed.code, "2001");
}

#[test]
fn the_simulator_answers_its_200_faults() {
    fuzz::block_on(async {
        let sim = EngageLabSim::new(Product::Sms);
        let mut account = SimAccount::new(
            "secret",
            Ledger::fixed(Decimal::ONE),
            Ledger::fixed(Decimal::ZERO),
        );
        account
            .body_faults
            .next(super::sim::BodyFault::NoBalance, 1);
        account
            .body_faults
            .next(super::sim::BodyFault::error_under_200("2001"), 1);
        // A neutral fault takes the request: the body fault waits for the next one.
        account.faults.next(Fault::code("1000"), 1);
        sim.add_account("key", account);
        let good = fuzz::sim_request(
            "GET",
            "/v1/balance",
            None,
            &[("authorization", "Basic a2V5OnNlY3JldA==")],
            vec![],
        );
        let mut answers = Vec::new();
        for _ in 0..4 {
            let r = sim.handle(&good).await;
            answers.push((r.status, String::from_utf8_lossy(&r.body).into_owned()));
        }
        assert_eq!(answers[0].0, 500);
        assert_eq!(answers[1], (200, "{}".to_owned()));
        assert_eq!(answers[2].0, 200);
        assert!(answers[2].1.contains(r#""code":2001"#), "{}", answers[2].1);
        assert!(answers[3].1.contains("balance10000"), "{}", answers[3].1);
    });
}

#[test]
fn hostile_header_values_never_panic_the_parsers_nor_stretch_a_wait() {
    use crate::providers::http::MAX_RETRY_AFTER;
    fuzz::check_headers(sim_answers(), |response| {
        for result in [parse_sms(response, "USD"), parse_otp(response)] {
            if let Err(error) = result {
                assert!(
                    error.retry_after.is_none_or(|w| w <= MAX_RETRY_AFTER),
                    "{error:?}"
                );
            }
        }
    });
}
