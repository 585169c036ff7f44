use std::path::Path;

use rust_decimal::Decimal;

use super::sim::{BodyFault, SimAccount, SimFunds, StripeSim};
use super::*;
use crate::config::{self, Format};
use crate::providers::fuzz;
use crate::sim::{Fault, Ledger, SimHandler, SimResponse};

const KEY: &str = "sk_test_51Hx0unitTestKey";
const CONNECTED: &str = "acct_1ConnectedUnit";

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn parse_config(keys: &str) -> Result<Config, Vec<String>> {
    let yaml = format!("accounts:\n  - name: s\n    provider: stripe\n{keys}");
    let config = config::parse(&yaml, Format::Yaml, Path::new("."))
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    match &config.accounts[0].provider {
        crate::providers::ProviderConfig::Stripe(c) => Ok(c.clone()),
        other => panic!("not Stripe: {other:?}"),
    }
}

#[test]
fn config_defaults_to_the_public_api_and_reads_the_connect_account() {
    let c = parse_config(&format!("    api_key: {KEY}\n")).unwrap();
    assert_eq!(c.base_url.as_str(), "https://api.stripe.com/");
    assert_eq!(c.stripe_account, None);
    assert_eq!(c.api_key.expose(), KEY);
    let c = parse_config(&format!(
        "    api_key: rk_live_restricted1\n    stripe_account: {CONNECTED}\n    base_url: http://127.0.0.1:9\n"
    ))
    .unwrap();
    assert_eq!(c.stripe_account.as_deref(), Some(CONNECTED));
    assert_eq!(c.base_url.as_str(), "http://127.0.0.1:9/");
    assert!(!format!("{c:?}").contains("rk_live_restricted1"));
}

#[test]
fn config_refuses_keys_that_cannot_read_a_balance_without_showing_them() {
    for (key, says) in [
        ("pk_live_publishable123", "publishable"),
        ("whsec_webhookSecret99", "not a Stripe secret"),
        ("sk_test_has space", "spaces"),
    ] {
        let errors = parse_config(&format!("    api_key: \"{key}\"\n")).unwrap_err();
        let text = errors.join("\n");
        assert!(text.contains("api_key") && text.contains(says), "{text}");
        assert!(!text.contains(key), "the key leaked: {text}");
    }
    for account in ["acct_", "acct_12 3", "1234", "acct_ab/../x"] {
        let errors = parse_config(&format!(
            "    api_key: {KEY}\n    stripe_account: \"{account}\"\n"
        ))
        .unwrap_err();
        assert!(errors.join("\n").contains("stripe_account"), "{errors:?}");
    }
}

/// Stripe's table, where it differs from ISO 4217 on purpose.
#[test]
fn minor_units_follow_stripes_currency_table_not_iso_4217() {
    use crate::money::minor_units;
    for (currency, stripe, iso) in [
        ("USD", 2, Some(2)),
        ("JPY", 0, Some(0)),
        ("KRW", 0, Some(0)),
        ("UGX", 0, Some(0)),
        ("KWD", 3, Some(3)),
        ("TND", 3, Some(3)),
        // Two-decimal in Stripe's API, zero-decimal in ISO.
        ("ISK", 2, Some(0)),
        // Zero-decimal in Stripe's API, two in ISO.
        ("MGA", 0, Some(2)),
        // Paid out in whole units, but two-decimal amounts in the API.
        ("HUF", 2, Some(2)),
        ("TWD", 2, Some(2)),
    ] {
        assert_eq!(stripe_exponent(currency), stripe, "{currency}");
        assert_eq!(minor_units(currency), iso, "{currency}");
    }
}

fn at(status: u16, body: &str) -> Response {
    fuzz::response(status, body.as_bytes(), &[])
}

fn amounts(snapshot: &Snapshot) -> Vec<(String, &'static str, String)> {
    snapshot
        .balances
        .iter()
        .map(|b| (b.currency.clone(), b.kind, b.amount.to_string()))
        .collect()
}

#[test]
fn every_list_of_the_balance_object_is_a_kind_in_exact_decimals() {
    let body = r#"{
      "object": "balance",
      "available": [
        {"amount": 123456, "currency": "usd", "source_types": {"card": 123456}},
        {"amount": 500, "currency": "jpy", "source_types": {"card": 500}},
        {"amount": 1234, "currency": "kwd"},
        {"amount": 500, "currency": "isk"},
        {"amount": -250, "currency": "eur"}
      ],
      "pending": [{"amount": 1, "currency": "usd"}],
      "instant_available": [{"amount": 9000, "currency": "usd",
        "net_available": [{"amount": 8000, "destination": "ba_1"}]}],
      "connect_reserved": [{"amount": 0, "currency": "usd"}],
      "issuing": {"available": [{"amount": 70, "currency": "gbp"}]},
      "refund_and_dispute_prefunding": {
        "available": [{"amount": 300, "currency": "mga"}],
        "pending": [{"amount": 12345, "currency": "huf"}]
      },
      "livemode": false
    }"#;
    let snapshot = parse_balance(&at(200, body)).unwrap();
    // Compared as decimals: `0 x 0.01` has no digits after the point to show.
    let s = |c: &str, k, a: &str| (c.to_owned(), k, dec(a));
    let found: Vec<(String, &str, Decimal)> = snapshot
        .balances
        .iter()
        .map(|b| (b.currency.clone(), b.kind, b.amount))
        .collect();
    assert_eq!(
        found,
        [
            s("USD", AVAILABLE, "1234.56"),
            s("JPY", AVAILABLE, "500"),
            s("KWD", AVAILABLE, "1.234"),
            s("ISK", AVAILABLE, "5.00"),
            s("EUR", AVAILABLE, "-2.50"),
            s("USD", PENDING, "0.01"),
            s("USD", INSTANT_AVAILABLE, "90.00"),
            s("USD", CONNECT_RESERVED, "0.00"),
            s("GBP", ISSUING_AVAILABLE, "0.70"),
            s("MGA", PREFUNDING_AVAILABLE, "300"),
            s("HUF", PREFUNDING_PENDING, "123.45"),
        ]
    );
    for b in &snapshot.balances {
        assert!(KINDS.contains(&b.kind), "{}", b.kind);
    }
    // Large amounts stay exact (no float on the way).
    let big = parse_balance(&at(
        200,
        r#"{"object":"balance","available":[{"amount":9007199254740993,"currency":"usd"}]}"#,
    ))
    .unwrap();
    assert_eq!(big.balances[0].amount, dec("90071992547409.93"));
}

#[test]
fn a_missing_amount_is_no_sample_and_an_answer_without_any_is_no_balance() {
    let partial = parse_balance(&at(
        200,
        r#"{"object":"balance","available":[{"currency":"usd"},{"amount":null,"currency":"eur"},{"amount":5,"currency":"gbp"}],"pending":[]}"#,
    ))
    .unwrap();
    assert_eq!(
        amounts(&partial),
        [("GBP".into(), AVAILABLE, "0.05".into())]
    );
    for body in [
        "{}",
        r#"{"object":"balance","available":[],"pending":[],"livemode":true}"#,
        r#"{"object":"balance","available":[{"currency":"usd"}]}"#,
        r#"{"object":"list","data":[],"has_more":false}"#,
        r#"{"id":"ch_1","object":"charge","amount":100,"currency":"usd"}"#,
    ] {
        let error = parse_balance(&at(200, body)).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("no_balance", ErrorClass::Decode),
            "{body}"
        );
    }
}

#[test]
fn amounts_that_are_not_whole_minor_units_and_bad_currencies_are_decode_errors() {
    for (body, names) in [
        (
            r#"{"available":[{"amount":12.5,"currency":"usd"}]}"#,
            "available[0].amount",
        ),
        (
            r#"{"available":[{"amount":"abc","currency":"usd"}]}"#,
            "available[0].amount",
        ),
        (
            r#"{"available":[{"amount":true,"currency":"usd"}]}"#,
            "available[0].amount",
        ),
        (
            r#"{"pending":[{"amount":1,"currency":"usdc"}]}"#,
            "pending[0]",
        ),
        (r#"{"pending":[{"amount":1}]}"#, "pending[0]"),
        (
            r#"{"available":[{"amount":1e400,"currency":"usd"}]}"#,
            "available[0].amount",
        ),
        (r#"{"available":"lots"}"#, "not the JSON expected"),
    ] {
        let error = parse_balance(&at(200, body)).unwrap_err();
        assert_eq!(error.code, "decode", "{body}");
        assert!(error.message.contains(names), "{body}: {}", error.message);
    }
}

#[test]
fn stripe_errors_get_their_code_and_class() {
    let cases = [
        (
            401,
            r#"{"error":{"message":"Invalid API Key provided: sk_test_****abcd","type":"invalid_request_error"}}"#,
            "authentication_error",
            ErrorClass::Auth,
        ),
        (
            401,
            r#"{"error":{"code":"api_key_expired","message":"Expired API Key","type":"invalid_request_error"}}"#,
            "api_key_expired",
            ErrorClass::Auth,
        ),
        (
            403,
            r#"{"error":{"message":"The provided key does not have the required permissions","type":"invalid_request_error"}}"#,
            "permission_error",
            ErrorClass::Auth,
        ),
        (
            403,
            r#"{"error":{"code":"account_invalid","message":"no access","type":"invalid_request_error"}}"#,
            "account_invalid",
            ErrorClass::Auth,
        ),
        (
            429,
            r#"{"error":{"code":"rate_limit","message":"Request rate limit exceeded.","type":"invalid_request_error"}}"#,
            "rate_limit",
            ErrorClass::RateLimit,
        ),
        (
            429,
            r#"{"error":{"message":"slow down","type":"invalid_request_error"}}"#,
            "rate_limit",
            ErrorClass::RateLimit,
        ),
        // The SDK still reads the old 400 rate limit as one.
        (
            400,
            r#"{"error":{"code":"rate_limit","type":"invalid_request_error"}}"#,
            "rate_limit",
            ErrorClass::RateLimit,
        ),
        (
            500,
            r#"{"error":{"message":"An unknown error occurred","type":"api_error"}}"#,
            "api_error",
            ErrorClass::Server,
        ),
        (
            400,
            r#"{"error":{"code":"parameter_unknown","param":"foo","type":"invalid_request_error"}}"#,
            "parameter_unknown",
            ErrorClass::Client,
        ),
        (
            400,
            r#"{"error":{"type":"idempotency_error","message":"m"}}"#,
            "idempotency_error",
            ErrorClass::Client,
        ),
        (
            404,
            r#"{"error":{"type":"invalid_request_error","message":"Unrecognized request URL (GET: /v1/balancex)."}}"#,
            "invalid_request_error",
            ErrorClass::Client,
        ),
        (503, r#"{"error":{}}"#, "http_503", ErrorClass::Server),
        (
            502,
            "<html>bad gateway</html>",
            "http_502",
            ErrorClass::Server,
        ),
        // An error envelope under 200 is no balance but the error it says.
        (
            200,
            r#"{"error":{"type":"api_error","message":"m"}}"#,
            "api_error",
            ErrorClass::Server,
        ),
        (
            200,
            r#"{"error":{"code":"something_new"}}"#,
            "something_new",
            ErrorClass::Client,
        ),
    ];
    for (status, body, code, class) in cases {
        let error = parse_balance(&at(status, body)).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            (code, class),
            "{status} {body}"
        );
        assert_eq!(
            error.is_retryable(),
            class.is_transient(),
            "{status} {body}"
        );
    }
    let expired = parse_balance(&at(401, cases[1].1)).unwrap_err();
    assert_eq!(expired.message, "Expired API Key");
}

#[test]
fn stripe_should_retry_false_makes_an_error_final_and_retry_after_is_kept() {
    let body = br#"{"error":{"type":"api_error","message":"m"}}"#;
    let final_one = parse_balance(&fuzz::response(
        500,
        body,
        &[
            ("stripe-should-retry", "false"),
            ("request-id", "req_abc123"),
        ],
    ))
    .unwrap_err();
    assert_eq!(
        (final_one.code.as_str(), final_one.class),
        ("api_error", ErrorClass::Server)
    );
    assert!(!final_one.is_retryable());
    assert!(
        final_one.message.contains("req_abc123"),
        "{}",
        final_one.message
    );
    let gateway = parse_balance(&fuzz::response(
        503,
        b"busy",
        &[("stripe-should-retry", "false")],
    ))
    .unwrap_err();
    assert!(!gateway.is_retryable());
    let limited = parse_balance(&fuzz::response(
        429,
        br#"{"error":{"code":"rate_limit","type":"invalid_request_error"}}"#,
        &[("retry-after", "7"), ("stripe-should-retry", "true")],
    ))
    .unwrap_err();
    assert!(limited.is_retryable());
    assert_eq!(limited.retry_after, Some(std::time::Duration::from_secs(7)));
}

#[test]
fn error_codes_are_bounded_printable_labels() {
    assert_eq!(error_code(400, None, Some(" \u{7}\n")), "http_400");
    assert_eq!(error_code(418, Some("  "), None), "http_418");
    assert_eq!(error_code(400, None, Some(&"x".repeat(500))).len(), 64);
    for (code, _) in DOCUMENTED_ERRORS {
        assert_eq!(error_code(400, None, Some(code)), *code);
    }
}

fn request(headers: &[(&str, &str)]) -> crate::sim::SimRequest {
    fuzz::sim_request("GET", BALANCE_PATH, None, headers, vec![])
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

fn basic(user_password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

fn sim() -> Arc<StripeSim> {
    let sim = StripeSim::new();
    sim.add_account(
        KEY,
        SimAccount::new(vec![
            SimFunds::new(AVAILABLE, "USD", Ledger::fixed(dec("1234.56"))),
            SimFunds::new(PENDING, "USD", Ledger::fixed(dec("10"))),
            SimFunds::new(AVAILABLE, "JPY", Ledger::fixed(dec("5000"))),
            SimFunds::new(ISSUING_AVAILABLE, "EUR", Ledger::fixed(dec("7.5"))),
        ])
        .with_connected(
            CONNECTED,
            vec![SimFunds::new(AVAILABLE, "KWD", Ledger::fixed(dec("1.234")))],
        ),
    );
    sim.add_account(
        "rk_test_noBalanceRead",
        SimAccount {
            lacks_balance_read: true,
            ..SimAccount::new(vec![])
        },
    );
    sim
}

fn answer(sim: &StripeSim, headers: &[(&str, &str)]) -> SimResponse {
    fuzz::block_on(sim.handle(&request(headers)))
}

fn read(response: SimResponse) -> Result<Snapshot, ProviderError> {
    let headers: Vec<(&str, &str)> = response
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    parse_balance(&fuzz::response(response.status, &response.body, &headers))
}

#[test]
fn the_simulator_enforces_the_key_and_the_connect_account() {
    let sim = sim();
    let own = read(answer(&sim, &[("authorization", &bearer())])).unwrap();
    assert!(
        own.has("USD", AVAILABLE) && own.has("JPY", AVAILABLE) && own.has("EUR", ISSUING_AVAILABLE)
    );
    assert_eq!(own.balances[0].amount, dec("1234.56"));
    // Basic with the key as the username and no password, as Stripe's reference shows.
    let basic_ok = read(answer(
        &sim,
        &[("authorization", &basic(&format!("{KEY}:")))],
    ))
    .unwrap();
    assert_eq!(basic_ok, own);
    let connected = read(answer(
        &sim,
        &[("authorization", &bearer()), ("stripe-account", CONNECTED)],
    ))
    .unwrap();
    assert_eq!(
        amounts(&connected),
        [("KWD".into(), AVAILABLE, "1.234".into())]
    );

    let refused = |headers: &[(&str, &str)]| {
        let response = answer(&sim, headers);
        let status = response.status;
        let body = String::from_utf8_lossy(&response.body).into_owned();
        let error = read(response).unwrap_err();
        (status, error.code, body)
    };
    for (headers, status, code) in [
        (vec![], 401, "authentication_error"),
        (
            vec![("authorization", "Bearer sk_test_wrongKey1234")],
            401,
            "authentication_error",
        ),
        (vec![("authorization", KEY)], 401, "authentication_error"),
        (
            vec![("authorization", &*basic(&format!("{KEY}:password")))],
            401,
            "authentication_error",
        ),
        (
            vec![("authorization", "Bearer rk_test_noBalanceRead")],
            403,
            "permission_error",
        ),
        (
            vec![
                ("authorization", &*bearer()),
                ("stripe-account", "acct_1SomeoneElse"),
            ],
            403,
            "account_invalid",
        ),
        (
            vec![
                ("authorization", &*bearer()),
                ("stripe-account", "1ConnectedUnit"),
            ],
            403,
            "account_invalid",
        ),
    ] {
        let (got_status, got_code, body) = refused(&headers);
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{headers:?}: {body}"
        );
        assert!(body.contains(r#""error""#), "{body}");
    }
    // An unknown key is shown masked, never whole.
    let (_, _, body) = refused(&[("authorization", "Bearer sk_test_wrongKey1234")]);
    assert!(
        body.contains("sk_test_") && body.contains("1234") && !body.contains("wrongKey"),
        "{body}"
    );
    // Only GET /v1/balance.
    let post = fuzz::block_on(sim.handle(&fuzz::sim_request(
        "POST",
        BALANCE_PATH,
        None,
        &[("authorization", &bearer())],
        vec![],
    )));
    assert_eq!(post.status, 404);
}

#[test]
fn the_simulator_answers_its_body_faults() {
    let sim = sim();
    sim.update(KEY, |a| {
        a.body_faults.next(BodyFault::NoBalance, 1);
        a.body_faults.next(BodyFault::WrongObject, 1);
        a.body_faults.next(BodyFault::MissingAmount, 1);
        a.body_faults.next(BodyFault::FractionalAmount, 1);
        a.body_faults.next(
            BodyFault::NoRetry {
                code: "api_error".into(),
            },
            1,
        );
        a.body_faults.next(BodyFault::EchoCredentials, 1);
        // A neutral fault takes its request: the body faults wait.
        a.faults.next(Fault::code("rate_limit"), 1);
    });
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        let response = answer(&sim, &[("authorization", &bearer())]);
        let body = String::from_utf8_lossy(&response.body).into_owned();
        outcomes.push((response.status, read(response), body));
    }
    let code = |i: usize| outcomes[i].1.as_ref().unwrap_err().code.clone();
    assert_eq!((outcomes[0].0, code(0)), (429, "rate_limit".to_owned()));
    assert_eq!(code(1), "no_balance");
    assert_eq!(code(2), "no_balance");
    let partial = outcomes[3].1.as_ref().unwrap();
    assert!(!partial.has("USD", AVAILABLE) && partial.has("JPY", AVAILABLE));
    assert_eq!(code(4), "decode");
    let final_error = outcomes[5].1.as_ref().unwrap_err();
    assert_eq!(final_error.code, "api_error");
    assert!(!final_error.is_retryable());
    assert_eq!(code(6), "authentication_error");
    assert!(
        outcomes[6].2.contains(KEY),
        "the echo echoes: {}",
        outcomes[6].2
    );
    assert!(outcomes[7].1.is_ok());
}

/// The provider against its simulator called in-process through the common transport
/// (`sim::in_process`), so that retries, backoff and hangs run under paused time.
mod in_process {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::clock::Clock;
    use crate::providers::http::{CountingObserver, plain_settings};
    use crate::providers::{HttpClient, SharedState};
    use crate::sim::in_process::Exchanged;
    use crate::sim::in_process::InProcess;

    async fn poll(
        sim: Arc<StripeSim>,
        extra: &str,
    ) -> (
        Result<Snapshot, ProviderError>,
        CountingObserver,
        Vec<Exchanged>,
    ) {
        let config = parse_config(&format!(
            "    base_url: 'http://stripe.sim'\n    api_key: {KEY}\n{extra}"
        ))
        .unwrap();
        let provider = config.build(&SharedState::default());
        let wire = InProcess::new(sim);
        let client =
            HttpClient::with_transport(&plain_settings(), Clock::system(), wire.clone()).unwrap();
        let observer = CountingObserver::new("s");
        let secrets = [config.api_key.clone()];
        let http = PollContext::new(
            &client,
            &observer,
            &secrets,
            Instant::now() + Duration::from_secs(60),
            100,
        );
        let outcome = provider.fetch(&http).await;
        (outcome, observer, wire.exchanged())
    }

    #[tokio::test(start_paused = true)]
    async fn the_client_sends_bearer_and_the_connect_header_the_simulator_accepts() {
        let (outcome, observer, exchanged) =
            poll(sim(), &format!("    stripe_account: {CONNECTED}\n")).await;
        assert_eq!(
            amounts(&outcome.unwrap()),
            [("KWD".into(), AVAILABLE, "1.234".into())]
        );
        assert_eq!(observer.requests(), 1);
        let request = &exchanged[0].request;
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", BALANCE_PATH)
        );
        assert_eq!(request.header("authorization"), Some(&*bearer()));
        assert_eq!(request.header("stripe-account"), Some(CONNECTED));
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_error_is_retried_and_the_poll_succeeds() {
        let sim = sim();
        sim.update(KEY, |a| a.faults.next(Fault::code("api_error"), 1));
        let (outcome, observer, exchanged) = poll(sim, "").await;
        assert!(outcome.unwrap().has("USD", AVAILABLE));
        assert_eq!(observer.errors(), ["api_error"]);
        assert_eq!(exchanged.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn stripe_should_retry_false_ends_the_poll_after_one_request() {
        let sim = sim();
        sim.update(KEY, |a| {
            a.body_faults.always(BodyFault::NoRetry {
                code: "api_error".into(),
            })
        });
        let (outcome, observer, exchanged) = poll(sim, "").await;
        assert_eq!(outcome.unwrap_err().code, "api_error");
        assert_eq!((exchanged.len(), observer.errors().len()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connect_account_is_not_retried() {
        let (outcome, _, exchanged) = poll(sim(), "    stripe_account: acct_1NotConnected\n").await;
        let error = outcome.unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("account_invalid", ErrorClass::Auth)
        );
        assert_eq!(exchanged.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_echoed_key_is_redacted_from_the_error() {
        let sim = sim();
        sim.update(KEY, |a| a.body_faults.always(BodyFault::EchoCredentials));
        let (outcome, _, _) = poll(sim, "").await;
        let error = outcome.unwrap_err();
        assert_eq!(error.code, "authentication_error");
        assert!(!error.message.contains(KEY), "{}", error.message);
        assert!(!error.message.contains("unitTestKey"), "{}", error.message);
    }
}

/// Answers of the simulator: balances in several currencies and kinds, errors, a garbled body.
fn sim_answers() -> Vec<Vec<u8>> {
    let sim = sim();
    let mut out = Vec::new();
    let ask = |headers: &[(&str, &str)], status| fuzz::answer_body(answer(&sim, headers), status);
    out.push(ask(&[("authorization", &bearer())], 200));
    out.push(ask(
        &[("authorization", &bearer()), ("stripe-account", CONNECTED)],
        200,
    ));
    out.push(ask(&[("authorization", "Bearer sk_test_nope")], 401));
    out.push(ask(
        &[("authorization", &bearer()), ("stripe-account", "acct_x")],
        403,
    ));
    sim.update(KEY, |a| a.faults.next(Fault::code("rate_limit"), 1));
    out.push(ask(&[("authorization", &bearer())], 429));
    sim.update(KEY, |a| a.faults.next(Fault::Malformed, 1));
    out.push(ask(&[("authorization", &bearer())], 200));
    out
}

#[test]
fn the_parsers_never_panic_on_arbitrary_or_mutated_answers() {
    let seeds = sim_answers();
    let first = parse_balance(&fuzz::response(200, &seeds[0], &[])).unwrap();
    assert_eq!(
        first.balances[0].amount,
        dec("1234.56"),
        "the seeds are real answers"
    );
    fuzz::check(seeds, |status, body| {
        let response = fuzz::response(status, body, &[("retry-after", "7")]);
        if let Ok(snapshot) = parse_balance(&response) {
            assert!(!snapshot.balances.is_empty());
        }
    });
}

#[test]
fn hostile_header_values_never_panic_the_parser_nor_stretch_a_wait() {
    use crate::providers::http::MAX_RETRY_AFTER;
    fuzz::check_headers(sim_answers(), |response| {
        if let Err(error) = parse_balance(response) {
            assert!(
                error.retry_after.is_none_or(|w| w <= MAX_RETRY_AFTER),
                "{error:?}"
            );
        }
    });
}
