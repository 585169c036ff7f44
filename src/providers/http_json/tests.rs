use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rust_decimal::Decimal;
use tokio::time::Instant;

use super::sim::{BodyFault, HttpJsonSim, Shape, SimAuth, Wallet, preset_sim};
use super::*;
use crate::clock::Clock;
use crate::config::{Format, parse as parse_config};
use crate::providers::fuzz;
use crate::providers::http::{CountingObserver, plain_settings};
use crate::providers::{HttpClient, ProviderConfig};
use crate::sim::in_process::InProcess;
use crate::sim::{Fault, Ledger, SimHandler};

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn at(status: u16, body: &str) -> Response {
    fuzz::response(status, body.as_bytes(), &[])
}

/// The `http_json` config of one account written as YAML (`base_url` and `name` added).
fn account(keys: &str) -> Result<Config, String> {
    let yaml = format!(
        "accounts:\n  - name: a\n    base_url: http://acme.sim\n{}",
        keys.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let config = parse_config(&yaml, Format::Yaml, Path::new(".")).map_err(|e| e.to_string())?;
    match config.accounts.into_iter().next().map(|a| a.provider) {
        Some(ProviderConfig::HttpJson(c)) => Ok(c),
        other => Err(format!("not http_json: {other:?}")),
    }
}

/// The example of the docs (issue 15): wallets with a decimal string and minor units.
const ACME: &str = r#"provider: http_json
path: /v3/wallets
method: POST
body: '{"scope":"all"}'
auth: {type: header, name: X-Api-Key, value: key-1}
headers: {Accept: application/json}
items: /wallets
balances:
  - {kind: available, amount: /avail, currency: /cur}
  - {kind: on_hold, amount: /held_minor, currency: /cur, scale: iso4217}
error_code: /error/code
success: {pointer: /status, equals: ok}"#;

fn acme() -> Config {
    account(ACME).unwrap()
}

fn acme_sim() -> Arc<HttpJsonSim> {
    HttpJsonSim::new(
        Shape::Acme {
            method: "POST",
            path: "/v3/wallets".to_owned(),
            body: Some(r#"{"scope":"all"}"#.to_owned()),
        },
        SimAuth::Header {
            name: "x-api-key".to_owned(),
            value: "key-1".to_owned(),
        },
        vec![
            Wallet::new(
                "USD",
                Ledger::fixed(dec("1234.56")),
                Ledger::fixed(dec("15.00")),
            ),
            Wallet::new(
                "KWD",
                Ledger::fixed(dec("-7.5")),
                Ledger::fixed(dec("1.234")),
            ),
            Wallet::new("JPY", Ledger::fixed(dec("0")), Ledger::fixed(dec("300"))),
        ],
    )
}

fn amount_of(snapshot: &Snapshot, currency: &str, kind: &str) -> Option<Decimal> {
    snapshot
        .balances
        .iter()
        .find(|b| b.currency == currency && b.kind == kind)
        .map(|b| b.amount)
}

#[test]
fn pointers_follow_rfc_6901_with_its_own_examples() {
    // RFC 6901 section 5.
    let document = r#"{"foo":["bar","baz"],"":0,"a/b":1,"c%d":2,"e^f":3,"g|h":4,
        "i\\j":5,"k\"l":6," ":7,"m~n":8}"#;
    let raw: &RawValue = serde_json::from_str(document).unwrap();
    for (pointer, expected) in [
        ("/foo/0", "\"bar\""),
        ("/foo/1", "\"baz\""),
        ("/", "0"),
        ("/a~1b", "1"),
        ("/c%d", "2"),
        ("/e^f", "3"),
        ("/g|h", "4"),
        ("/i\\j", "5"),
        ("/k\"l", "6"),
        ("/ ", "7"),
        ("/m~0n", "8"),
    ] {
        let found = Pointer::parse(pointer).unwrap().resolve(raw).unwrap();
        assert_eq!(found.map(RawValue::get), Some(expected), "{pointer}");
    }
    assert!(Pointer::parse("").unwrap().resolve(raw).unwrap().is_some());
    for nothing in [
        "/foo/2", "/foo/-", "/foo/01", "/foo/+1", "/nope", "/foo/0/x", "/a/b",
    ] {
        let found = Pointer::parse(nothing).unwrap().resolve(raw).unwrap();
        assert!(found.is_none(), "{nothing}");
    }
    for bad in ["foo", "/~2", "/a~", "~1", &format!("/{}", "x/".repeat(40))] {
        assert!(Pointer::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn decimals_stay_exact_and_minor_units_move_the_point() {
    let body = r#"{"status":"ok","wallets":[
        {"cur":"usd","avail":"1234.5600","held_minor":1500},
        {"cur":"JPY","avail":897993.88,"held_minor":300},
        {"cur":"KWD","avail":"-0.001","held_minor":"1234"},
        {"cur":"EUR","avail":null,"held_minor":""},
        {"cur":"GBP"}]}"#;
    let snapshot = parse(&acme(), &at(200, body), 100).unwrap();
    assert_eq!(
        amount_of(&snapshot, "USD", "available")
            .unwrap()
            .to_string(),
        "1234.5600"
    );
    assert_eq!(
        amount_of(&snapshot, "USD", "available"),
        Some(dec("1234.56"))
    );
    assert_eq!(amount_of(&snapshot, "USD", "on_hold"), Some(dec("15.00")));
    assert_eq!(
        amount_of(&snapshot, "JPY", "available"),
        Some(dec("897993.88"))
    );
    assert_eq!(amount_of(&snapshot, "JPY", "on_hold"), Some(dec("300")));
    assert_eq!(
        amount_of(&snapshot, "KWD", "available"),
        Some(dec("-0.001"))
    );
    assert_eq!(amount_of(&snapshot, "KWD", "on_hold"), Some(dec("1.234")));
    // null, "" and absent are no sample, never 0.
    assert_eq!(snapshot.balances.len(), 6, "{snapshot:?}");
}

#[test]
fn an_integer_scale_divides_by_its_power_of_ten() {
    let config = account(
        "provider: http_json\npath: /b\ncurrency: USD\nbalances:\n  - {kind: total, amount: /n, scale: 4}",
    )
    .unwrap();
    let snapshot = parse(&config, &at(200, r#"{"n":123456}"#), 10).unwrap();
    assert_eq!(snapshot.balances[0].amount, dec("12.3456"));
    assert_eq!(snapshot.balances[0].currency, "USD");
    let error = parse(&config, &at(200, r#"{"n":12.5}"#), 10).unwrap_err();
    assert_eq!(error.code, "decode");
    assert!(error.message.contains("/n"), "{}", error.message);
}

#[test]
fn what_is_not_an_amount_or_currency_is_a_decode_error_naming_its_pointer() {
    for (body, named) in [
        (
            r#"{"status":"ok","wallets":[{"cur":"USD","avail":true}]}"#,
            "/avail",
        ),
        (
            r#"{"status":"ok","wallets":[{"cur":"USD","avail":"12,5"}]}"#,
            "/avail",
        ),
        (
            r#"{"status":"ok","wallets":[{"cur":"USD","avail":{"v":1}}]}"#,
            "/avail",
        ),
        (
            r#"{"status":"ok","wallets":[{"cur":"US","avail":"1"}]}"#,
            "/cur",
        ),
        (
            r#"{"status":"ok","wallets":[{"cur":7,"avail":"1"}]}"#,
            "/cur",
        ),
        (r#"{"status":"ok","wallets":[{"avail":"1"}]}"#, "/cur"),
        // iso4217 for a currency ISO 4217 gives no minor units: named.
        (
            r#"{"status":"ok","wallets":[{"cur":"XAU","held_minor":5}]}"#,
            "XAU",
        ),
        (r#"{"status":"ok","wallets":{"cur":"USD"}}"#, "/wallets"),
    ] {
        let error = parse(&acme(), &at(200, body), 100).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("decode", ErrorClass::Decode),
            "{body}"
        );
        assert!(error.message.contains(named), "{body}: {}", error.message);
    }
}

#[test]
fn a_2xx_where_nothing_resolves_is_no_balance_never_a_success() {
    for body in [
        r#"{"status":"ok"}"#,
        r#"{"status":"ok","wallets":[]}"#,
        r#"{"status":"ok","wallets":[{"cur":"USD"},{}]}"#,
        r#"{"status":"ok","wallets":[{"cur":"USD","avail":null}]}"#,
    ] {
        let error = parse(&acme(), &at(200, body), 100).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("no_balance", ErrorClass::Decode),
            "{body}"
        );
    }
    let error = parse(&acme(), &at(200, r#"{"status":"ok"}"#), 100).unwrap_err();
    assert!(error.message.contains("/wallets"), "{}", error.message);
    assert!(parse(&acme(), &at(200, "not json"), 100).is_err());
}

#[test]
fn the_success_condition_and_error_codes_label_the_failure() {
    // A 2xx failing the condition: its code, a refusal (not retried).
    let error = parse(
        &acme(),
        &at(200, r#"{"status":"error","error":{"code":"E_QUOTA"}}"#),
        100,
    )
    .unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("E_QUOTA", ErrorClass::Client)
    );
    assert!(!error.is_retryable());
    // Without a code: no_balance, saying what was found.
    let error = parse(
        &acme(),
        &at(200, r#"{"status":"maintenance","wallets":[]}"#),
        100,
    )
    .unwrap_err();
    assert_eq!(error.code, "no_balance");
    assert!(error.message.contains("maintenance"), "{}", error.message);
    // Non-2xx: the code at error_code, classed by the status, with Retry-After.
    for (status, code, class) in [
        (401, "E_AUTH", ErrorClass::Auth),
        (403, "E_AUTH", ErrorClass::Auth),
        (429, "E_RATE", ErrorClass::RateLimit),
        (503, "E_DOWN", ErrorClass::Server),
        (400, "42", ErrorClass::Client),
    ] {
        let body = if code == "42" {
            r#"{"error":{"code":42}}"#.to_owned()
        } else {
            format!(r#"{{"error":{{"code":"{code}"}}}}"#)
        };
        let response = fuzz::response(status, body.as_bytes(), &[("retry-after", "7")]);
        let error = parse(&acme(), &response, 100).unwrap_err();
        assert_eq!((error.code.as_str(), error.class), (code, class), "{body}");
        assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    }
    // No code in the body: http_<status>, as for every provider.
    let error = parse(&acme(), &at(502, "<html>bad gateway</html>"), 100).unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("http_502", ErrorClass::Server)
    );
    assert!(error.is_retryable());
}

#[test]
fn too_many_currencies_stop_the_reading() {
    let wallets: Vec<String> = (0..500)
        .map(|i| {
            let code: String = [b'A' + (i / 26 % 26) as u8, b'A' + (i % 26) as u8, b'X']
                .iter()
                .map(|b| char::from(*b))
                .collect();
            format!(r#"{{"cur":"{code}","avail":"1"}}"#)
        })
        .collect();
    let body = format!(r#"{{"status":"ok","wallets":[{}]}}"#, wallets.join(","));
    let error = parse(&acme(), &at(200, &body), 10).unwrap_err();
    assert_eq!(error.code, "too_many_currencies");
}

#[test]
fn config_check_validates_pointers_auth_scale_and_kinds() {
    let base = "provider: http_json\npath: /b\n";
    for (keys, complaint) in [
        (
            "balances:\n  - {kind: a, amount: avail, currency: /c}",
            "must start with /",
        ),
        (
            "balances:\n  - {kind: a, amount: /x~2, currency: /c}",
            "~ must be followed",
        ),
        ("balances:\n  - {kind: a, amount: /x}", "currency: required"),
        (
            "balances:\n  - {kind: On-Hold, amount: /x, currency: /c}",
            "not a kind name",
        ),
        (
            "balances:\n  - {kind: a, amount: /x, currency: /c}\n  - {kind: a, amount: /y, currency: /c}",
            "listed twice",
        ),
        (
            "balances:\n  - {kind: a, amount: /x, currency: /c, scale: 29}",
            "scale",
        ),
        (
            "balances:\n  - {kind: a, amount: /x, currency: /c, scale: cents}",
            "scale",
        ),
        (
            "currency: XAU\nbalances:\n  - {kind: a, amount: /x, scale: iso4217}",
            "no minor units",
        ),
        ("balances: []", "at least one"),
        (
            "items: wallets\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "items",
        ),
        (
            "error_code: code\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "error_code",
        ),
        (
            "success: {pointer: status, equals: ok}\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "success.pointer",
        ),
        (
            "auth: {type: digest}\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "not an auth type",
        ),
        (
            "auth: {type: bearer, token: t1, token_env: T}\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "only one of",
        ),
        (
            "auth: {type: basic, password: p}\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "username",
        ),
        (
            "auth: {type: header, name: 'X Key', value: v}\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "header name",
        ),
        (
            "auth: {type: bearer, token: t, extra: 1}\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "unknown key",
        ),
        (
            "headers: {Authorization: Bearer x}\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "auth",
        ),
        (
            "body: '{}'\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "only with method: POST",
        ),
        (
            "method: POST\nbody: '{nope'\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "not JSON",
        ),
        (
            "method: PUT\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
            "GET or POST",
        ),
    ] {
        let error = account(&format!("{base}{keys}")).unwrap_err();
        assert!(error.contains(complaint), "{keys}\n=> {error}");
    }
    let error = account("provider: http_json\nbalances:\n  - {kind: a, amount: /x, currency: /c}")
        .unwrap_err();
    assert!(error.contains("path: required"), "{error}");
    assert!(
        acme()
            .derived_secrets()
            .iter()
            .any(|s| s.expose() == "key-1")
    );
    let query = account(
        "provider: http_json\npath: /b\nauth: {type: query, name: k, value: 'a b/c'}\nbalances:\n  - {kind: a, amount: /x, currency: /c}",
    )
    .unwrap();
    let derived: Vec<String> = query
        .derived_secrets()
        .iter()
        .map(|s| s.expose().to_owned())
        .collect();
    assert_eq!(derived, ["a b/c", "a+b%2Fc"], "the query string's form too");
}

#[test]
fn currency_scopes_follow_where_currencies_come_from() {
    let scope = |keys: &str| {
        account(&format!("provider: http_json\npath: /b\n{keys}"))
            .unwrap()
            .currency_scope()
    };
    assert_eq!(
        scope("currency: usd\nbalances:\n  - {kind: a, amount: /x}"),
        CurrencyScope::Fixed(vec!["USD".to_owned()])
    );
    assert_eq!(
        scope(
            "balances:\n  - {kind: a, amount: /x, currency: /c}\n  - {kind: b, amount: /y, currency: /c}"
        ),
        CurrencyScope::SingleFromProvider
    );
    assert_eq!(
        scope(
            "balances:\n  - {kind: a, amount: /x, currency: /c}\n  - {kind: b, amount: /y, currency: /d}"
        ),
        CurrencyScope::Discovered
    );
    assert_eq!(acme().currency_scope(), CurrencyScope::Discovered);
    assert_eq!(acme().kinds(), ["available", "on_hold"]);
    assert_eq!(acme().default_threshold_kind(), "available");
}

/// One poll through `PollContext` against `sim`, in-process, with `budget`.
async fn poll(
    config: &Config,
    sim: Arc<dyn SimHandler>,
    budget: Duration,
) -> (
    Result<Snapshot, ProviderError>,
    CountingObserver,
    Arc<InProcess>,
) {
    let provider = config.build(&SharedState::default());
    let wire = InProcess::new(sim);
    let client =
        HttpClient::with_transport(&plain_settings(), Clock::system(), wire.clone()).unwrap();
    let observer = CountingObserver::new("a");
    let secrets = config.derived_secrets();
    let http = PollContext::new(&client, &observer, &secrets, Instant::now() + budget, 100);
    let outcome = provider.fetch(&http).await;
    (outcome, observer, wire)
}

#[tokio::test(start_paused = true)]
async fn the_post_body_goes_byte_for_byte_and_the_sim_refuses_any_other() {
    let (outcome, _, wire) = poll(&acme(), acme_sim(), Duration::from_secs(30)).await;
    let snapshot = outcome.unwrap();
    assert_eq!(
        amount_of(&snapshot, "USD", "available"),
        Some(dec("1234.56"))
    );
    assert_eq!(amount_of(&snapshot, "USD", "on_hold"), Some(dec("15.00")));
    assert_eq!(amount_of(&snapshot, "KWD", "on_hold"), Some(dec("1.234")));
    assert_eq!(amount_of(&snapshot, "JPY", "on_hold"), Some(dec("300")));
    let request = &wire.exchanged()[0].request;
    assert_eq!(request.body.as_ref(), br#"{"scope":"all"}"#);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("accept"), Some("application/json"));

    // The same body with a space is another body: refused, counted under its code.
    let mut spaced = acme();
    spaced.request.body = Some(r#"{"scope": "all"}"#.to_owned());
    let (outcome, observer, _) = poll(&spaced, acme_sim(), Duration::from_secs(30)).await;
    let error = outcome.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("E_BAD_REQUEST", ErrorClass::Client)
    );
    assert_eq!(observer.errors(), ["E_BAD_REQUEST"]);
}

#[tokio::test(start_paused = true)]
async fn every_auth_type_is_sent_as_the_simulator_enforces_it() {
    let balances =
        "balances:\n  - {kind: available, amount: /wallets/0/avail, currency: /wallets/0/cur}";
    for (auth_yaml, right, wrong) in [
        (
            "auth: {type: basic, username: u1, password: p-secret-1}",
            SimAuth::Basic {
                username: "u1".into(),
                password: "p-secret-1".into(),
            },
            SimAuth::Basic {
                username: "u1".into(),
                password: "other".into(),
            },
        ),
        (
            "auth: {type: bearer, token: t-secret-1}",
            SimAuth::Bearer("t-secret-1".into()),
            SimAuth::Bearer("t-secret-2".into()),
        ),
        (
            "auth: {type: header, name: X-Key, value: h-secret-1}",
            SimAuth::Header {
                name: "x-key".into(),
                value: "h-secret-1".into(),
            },
            SimAuth::Header {
                name: "x-other".into(),
                value: "h-secret-1".into(),
            },
        ),
        (
            "auth: {type: query, name: api_key, value: 'q secret/1&x=2'}",
            SimAuth::Query {
                name: "api_key".into(),
                value: "q secret/1&x=2".into(),
            },
            SimAuth::Query {
                name: "key".into(),
                value: "q secret/1&x=2".into(),
            },
        ),
        ("", SimAuth::None, SimAuth::Bearer("needed".into())),
    ] {
        let config = account(&format!(
            "provider: http_json\npath: /w\n{auth_yaml}\nerror_code: /error/code\n{balances}"
        ))
        .unwrap();
        let sim = |auth| {
            HttpJsonSim::new(
                Shape::Acme {
                    method: "GET",
                    path: "/w".to_owned(),
                    body: None,
                },
                auth,
                vec![Wallet::new(
                    "EUR",
                    Ledger::fixed(dec("9.5")),
                    Ledger::fixed(Decimal::ZERO),
                )],
            )
        };
        let (outcome, _, _) = poll(&config, sim(right), Duration::from_secs(30)).await;
        assert_eq!(
            amount_of(&outcome.unwrap(), "EUR", "available"),
            Some(dec("9.5")),
            "{auth_yaml}"
        );
        let (outcome, observer, wire) = poll(&config, sim(wrong), Duration::from_secs(30)).await;
        let error = outcome.unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("E_AUTH", ErrorClass::Auth),
            "{auth_yaml}"
        );
        // Auth failures are not retried.
        assert_eq!((wire.exchanged().len(), observer.requests()), (1, 1));
    }
}

#[tokio::test(start_paused = true)]
async fn echoed_credentials_are_redacted_and_rate_limits_retried_after_their_wait() {
    let sim = acme_sim();
    sim.update(|s| s.body_faults.next(BodyFault::EchoCredentials, 1));
    let (outcome, _, _) = poll(&acme(), sim.clone(), Duration::from_secs(30)).await;
    let error = outcome.unwrap_err();
    assert_eq!(error.code, "E_AUTH");
    assert!(!error.to_string().contains("key-1"), "{error}");

    sim.update(|s| {
        s.faults.next(
            Fault::TooManyRequests {
                retry_after_seconds: 3,
            },
            1,
        )
    });
    let started = Instant::now();
    let (outcome, observer, _) = poll(&acme(), sim, Duration::from_secs(30)).await;
    assert!(outcome.is_ok());
    assert_eq!(observer.errors(), ["http_429"]);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

/// A preset account read from YAML.
fn preset_account(keys: &str) -> Config {
    account(keys).unwrap_or_else(|e| panic!("{keys}: {e}"))
}

#[tokio::test(start_paused = true)]
async fn the_presets_read_their_simulators_answers() {
    let sid = "AC0123456789abcdef0123456789abcdef";
    let twilio = preset_account(&format!(
        "provider: twilio\naccount_sid: {sid}\nauth_token: tw-token-1"
    ));
    assert_eq!(twilio.provider(), "twilio");
    assert_eq!(twilio.kinds(), ["available"]);
    assert_eq!(twilio.currency_scope(), CurrencyScope::SingleFromProvider);
    let sim = preset_sim(
        &presets::TWILIO,
        SimAuth::Basic {
            username: sid.into(),
            password: "tw-token-1".into(),
        },
        vec![Wallet::new(
            "USD",
            Ledger::fixed(dec("14.00034")),
            Ledger::fixed(Decimal::ZERO),
        )],
    );
    let (outcome, _, wire) = poll(&twilio, sim.clone(), Duration::from_secs(30)).await;
    assert_eq!(
        amount_of(&outcome.unwrap(), "USD", "available"),
        Some(dec("14.00034"))
    );
    assert_eq!(
        wire.exchanged()[0].request.path,
        format!("/2010-04-01/Accounts/{sid}/Balance.json")
    );
    let wrong = preset_account(&format!(
        "provider: twilio\naccount_sid: {sid}\nauth_token: nope"
    ));
    let error = poll(&wrong, sim, Duration::from_secs(30))
        .await
        .0
        .unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("20003", ErrorClass::Auth)
    );

    let telnyx = preset_account("provider: telnyx\napi_key: KEY-telnyx-1");
    assert_eq!(
        telnyx.kinds(),
        ["balance", "credit_limit", "available", "pending"]
    );
    assert_eq!(telnyx.default_threshold_kind(), "available");
    let sim = preset_sim(
        &presets::TELNYX,
        SimAuth::Bearer("KEY-telnyx-1".into()),
        vec![Wallet::new(
            "USD",
            Ledger::fixed(dec("300.25")),
            Ledger::fixed(dec("100")),
        )],
    );
    let snapshot = poll(&telnyx, sim.clone(), Duration::from_secs(30))
        .await
        .0
        .unwrap();
    assert_eq!(amount_of(&snapshot, "USD", "balance"), Some(dec("300.25")));
    assert_eq!(
        amount_of(&snapshot, "USD", "credit_limit"),
        Some(dec("100"))
    );
    assert_eq!(
        amount_of(&snapshot, "USD", "available"),
        Some(dec("400.25"))
    );
    assert_eq!(amount_of(&snapshot, "USD", "pending"), Some(dec("0")));
    sim.update(|s| s.faults.next(Fault::code("10011"), 1));
    let (outcome, observer, _) = poll(&telnyx, sim, Duration::from_secs(30)).await;
    assert!(outcome.is_ok(), "a rate limit is retried");
    assert_eq!(observer.errors(), ["10011"]);

    let vonage = preset_account("provider: vonage\napi_key: abc123\napi_secret: vo-secret-1");
    let sim = preset_sim(
        &presets::VONAGE,
        SimAuth::Basic {
            username: "abc123".into(),
            password: "vo-secret-1".into(),
        },
        vec![Wallet::new(
            "EUR",
            Ledger::fixed(dec("10.28")),
            Ledger::fixed(Decimal::ZERO),
        )],
    );
    let snapshot = poll(&vonage, sim.clone(), Duration::from_secs(30))
        .await
        .0
        .unwrap();
    assert_eq!(amount_of(&snapshot, "EUR", "available"), Some(dec("10.28")));
    sim.update(|s| s.body_faults.next(BodyFault::EchoCredentials, 1));
    let error = poll(&vonage, sim, Duration::from_secs(30))
        .await
        .0
        .unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("http_401", ErrorClass::Auth)
    );
    assert!(!error.message.contains("vo-secret-1"), "{}", error.message);
}

#[test]
fn preset_keys_are_their_own_and_checked() {
    let error = account("provider: twilio\nauth_token: t").unwrap_err();
    assert!(error.contains("account_sid: required"), "{error}");
    let error = account("provider: twilio\naccount_sid: 'AC/../x'\nauth_token: t").unwrap_err();
    assert!(error.contains("only letters"), "{error}");
    let error = account("provider: telnyx\napi_key: k\npath: /x").unwrap_err();
    assert!(error.contains("unknown key"), "{error}");
    let error = account("provider: vonage\napi_key: k").unwrap_err();
    assert!(error.contains("api_secret"), "{error}");
    // Documented codes start at 0 with their class.
    let twilio = account("provider: twilio\naccount_sid: AC1\nauth_token: t").unwrap();
    assert!(
        twilio
            .documented_errors()
            .contains(&("20003", ErrorClass::Auth))
    );
    assert_eq!(
        twilio.derived_secrets()[1].expose(),
        "AC1:t",
        "the Basic pair is redacted too"
    );
}

/// Answers of every shape of the simulator, good and bad, for the fuzzers.
fn sim_answers() -> Vec<Vec<u8>> {
    fuzz::block_on(async {
        let mut out = Vec::new();
        let sims: Vec<Arc<HttpJsonSim>> = vec![
            acme_sim(),
            preset_sim(&presets::TWILIO, SimAuth::None, vec![]),
            preset_sim(
                &presets::TELNYX,
                SimAuth::None,
                vec![Wallet::new(
                    "USD",
                    Ledger::fixed(dec("1.5")),
                    Ledger::fixed(dec("2")),
                )],
            ),
            preset_sim(&presets::VONAGE, SimAuth::None, vec![]),
        ];
        for sim in sims {
            for path in [
                "/v3/wallets",
                "/2010-04-01/Accounts//Balance.json",
                "/v2/balance",
                "/account/get-balance",
            ] {
                let method = if path == "/v3/wallets" { "POST" } else { "GET" };
                let request = fuzz::sim_request(
                    method,
                    path,
                    None,
                    &[("x-api-key", "key-1"), ("content-type", "application/json")],
                    br#"{"scope":"all"}"#.to_vec(),
                );
                let answer = sim.handle(&request).await;
                out.push(answer.body.to_vec());
            }
            out.push(sim.error("auth", None).body.to_vec());
        }
        out
    })
}

#[test]
fn the_parsers_never_panic_on_arbitrary_or_mutated_answers() {
    let seeds = sim_answers();
    let first = at(200, std::str::from_utf8(&seeds[0]).unwrap());
    assert_eq!(
        amount_of(&parse(&acme(), &first, 100).unwrap(), "USD", "available"),
        Some(dec("1234.56")),
        "the seeds are real answers"
    );
    let configs = [
        acme(),
        preset_account("provider: twilio\naccount_sid: AC1\nauth_token: t"),
        preset_account("provider: telnyx\napi_key: k"),
        preset_account("provider: vonage\napi_key: k\napi_secret: s"),
    ];
    fuzz::check(seeds, |status, body| {
        let response = fuzz::response(status, body, &[("retry-after", "7")]);
        for config in &configs {
            let _ = parse(config, &response, 100);
        }
    });
}

#[test]
fn hostile_header_values_never_panic_the_parsers_nor_stretch_a_wait() {
    use crate::providers::http::MAX_RETRY_AFTER;
    let config = acme();
    fuzz::check_headers(sim_answers(), |response| {
        if let Err(error) = parse(&config, response, 100) {
            assert!(
                error.retry_after.is_none_or(|w| w <= MAX_RETRY_AFTER),
                "{error:?}"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Random documents and pointers against a model: the document is generated as a tree, written
// as JSON, and every pointer's expected result is looked up in the tree, not in the text.

#[derive(Debug, Clone)]
enum Node {
    /// An amount: mantissa and scale, written as a number or a string.
    Amount(i64, u32, bool),
    Text(String),
    Bool(bool),
    Null,
    List(Vec<Node>),
    /// Keys distinct (a repeated key is not a model of one value).
    Map(Vec<(String, Node)>),
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,3}",
        Just(String::new()),
        Just("a/b".to_owned()),
        Just("m~n".to_owned()),
        Just("~1".to_owned()),
        Just("0".to_owned()),
        Just("01".to_owned()),
        Just("-".to_owned()),
        Just("é\"\\".to_owned()),
        "[ -~]{0,4}",
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        (any::<i64>(), 0..12u32, any::<bool>()).prop_map(|(m, s, q)| Node::Amount(m, s, q)),
        "[a-zA-Z0-9 .,]{0,6}".prop_map(Node::Text),
        any::<bool>().prop_map(Node::Bool),
        Just(Node::Null),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Node::List),
            prop::collection::vec((key(), inner), 0..6).prop_map(|entries| {
                let mut seen = HashSet::new();
                Node::Map(
                    entries
                        .into_iter()
                        .filter(|(k, _)| seen.insert(k.clone()))
                        .collect(),
                )
            }),
        ]
    })
}

fn write(node: &Node, out: &mut String) {
    match node {
        Node::Amount(m, s, quoted) => {
            let text = Decimal::from_i128_with_scale(i128::from(*m), *s).to_string();
            if *quoted {
                out.push_str(&format!("\"{text}\""));
            } else {
                out.push_str(&text);
            }
        }
        Node::Text(t) => out.push_str(&serde_json::to_string(t).unwrap()),
        Node::Bool(b) => out.push_str(&b.to_string()),
        Node::Null => out.push_str("null"),
        Node::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Node::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(" , ");
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
    }
}

/// A path into `node` chosen by `choices`, as unescaped tokens, sometimes one step too far.
fn path_into(node: &Node, choices: &[usize], overshoot: Option<String>) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = node;
    for choice in choices {
        match current {
            Node::List(items) if !items.is_empty() => {
                let i = choice % items.len();
                tokens.push(i.to_string());
                current = &items[i];
            }
            Node::Map(entries) if !entries.is_empty() => {
                let (k, v) = &entries[choice % entries.len()];
                tokens.push(k.clone());
                current = v;
            }
            _ => break,
        }
    }
    tokens.extend(overshoot);
    tokens
}

/// What the model says is at `tokens`.
fn lookup<'a>(node: &'a Node, tokens: &[String]) -> Option<&'a Node> {
    let Some((first, rest)) = tokens.split_first() else {
        return Some(node);
    };
    match node {
        Node::Map(entries) => entries
            .iter()
            .find(|(k, _)| k == first)
            .and_then(|(_, v)| lookup(v, rest)),
        Node::List(items) => {
            let canonical = first
                .parse::<usize>()
                .ok()
                .filter(|i| i.to_string() == *first)?;
            lookup(items.get(canonical)?, rest)
        }
        _ => None,
    }
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn fixed_usd(pointer: Pointer, scale: Scale) -> Config {
    let mut config = account(
        "provider: http_json\npath: /b\ncurrency: USD\nbalances:\n  - {kind: available, amount: /x}",
    )
    .unwrap();
    config.balances[0].amount = pointer;
    config.balances[0].scale = scale;
    config
}

proptest! {
    #[test]
    fn random_pointers_into_random_documents_never_panic_nor_give_a_wrong_number(
        document in node(),
        choices in prop::collection::vec(any::<usize>(), 0..6),
        overshoot in prop::option::of(key()),
        digits in prop::option::of(0..6u32),
    ) {
        let mut text = String::new();
        write(&document, &mut text);
        let tokens = path_into(&document, &choices, overshoot);
        let pointer_text: String = tokens.iter().map(|t| format!("/{}", escape(t))).collect();
        let Ok(pointer) = Pointer::parse(&pointer_text) else {
            // Only too long or too deep a pointer is refused.
            prop_assert!(pointer_text.len() > pointer::MAX_POINTER_LEN || tokens.len() > pointer::MAX_TOKENS);
            return Ok(());
        };
        let scale = digits.map_or(Scale::Exact, Scale::Digits);
        let outcome = parse(&fixed_usd(pointer, scale), &at(200, &text), 100);
        match lookup(&document, &tokens) {
            Some(Node::Amount(m, s, _)) => {
                let written = Decimal::from_i128_with_scale(i128::from(*m), *s);
                match digits {
                    None => {
                        let snapshot = outcome.unwrap();
                        prop_assert_eq!(snapshot.balances[0].amount, written);
                        prop_assert_eq!(snapshot.balances[0].amount.to_string(), written.to_string());
                    }
                    Some(n) if written.fract().is_zero() => {
                        // n more decimals, computed from the mantissa, not by a division.
                        let expected = i128::from(*m) / 10i128.pow(*s);
                        let expected = Decimal::try_from_i128_with_scale(expected, n).unwrap();
                        prop_assert_eq!(outcome.unwrap().balances[0].amount, expected);
                    }
                    Some(_) => prop_assert_eq!(outcome.unwrap_err().code, "decode"),
                }
            }
            // Absent, null (or "") is no sample; the document then has no balance at all.
            None | Some(Node::Null) => prop_assert_eq!(outcome.unwrap_err().code, "no_balance"),
            Some(Node::Text(t)) if t.trim().is_empty() => {
                prop_assert_eq!(outcome.unwrap_err().code, "no_balance")
            }
            Some(Node::Text(t)) => match (crate::money::decimal_from_text(t.trim()), digits) {
                (Some(d), None) => prop_assert_eq!(outcome.unwrap().balances[0].amount, d),
                (Some(d), Some(n)) if d.fract().is_zero() => {
                    let whole = d.mantissa() / 10i128.pow(d.scale());
                    let expected = Decimal::try_from_i128_with_scale(whole, n).unwrap();
                    prop_assert_eq!(outcome.unwrap().balances[0].amount, expected);
                }
                _ => prop_assert_eq!(outcome.unwrap_err().code, "decode"),
            },
            Some(_) => {
                let error = outcome.unwrap_err();
                prop_assert_eq!(&error.code, "decode");
                prop_assert!(error.message.contains(&pointer_text) || pointer_text.is_empty(), "{}", error.message);
            }
        }
    }
}

#[test]
fn the_simulators_enforce_auth_method_and_path_with_each_providers_refusal() {
    fuzz::block_on(async {
        let sid = "AC1";
        let basic = |user: &str, password: &str| {
            use base64::Engine as _;
            let pair = format!("{user}:{password}");
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        let twilio = preset_sim(
            &presets::TWILIO,
            SimAuth::Basic {
                username: sid.into(),
                password: "tok".into(),
            },
            vec![],
        );
        let telnyx = preset_sim(&presets::TELNYX, SimAuth::Bearer("key".into()), vec![]);
        let vonage = preset_sim(
            &presets::VONAGE,
            SimAuth::Basic {
                username: "k".into(),
                password: "s".into(),
            },
            vec![],
        );
        let good_twilio = basic(sid, "tok");
        let good_vonage = basic("k", "s");
        let twilio_path = "/2010-04-01/Accounts/AC1/Balance.json";
        let cases: Vec<(&HttpJsonSim, &str, &str, String, u16, &str)> = vec![
            (
                &twilio,
                "GET",
                twilio_path,
                good_twilio.clone(),
                200,
                "\"balance\"",
            ),
            (&twilio, "GET", twilio_path, basic(sid, "bad"), 401, "20003"),
            (&twilio, "GET", twilio_path, String::new(), 401, "20003"),
            (
                &twilio,
                "GET",
                "/2010-04-01/Accounts/AC2/Balance.json",
                good_twilio.clone(),
                404,
                "20404",
            ),
            (&twilio, "POST", twilio_path, good_twilio, 405, "code"),
            (
                &telnyx,
                "GET",
                "/v2/balance",
                "Bearer key".into(),
                200,
                "available_credit",
            ),
            (
                &telnyx,
                "GET",
                "/v2/balance",
                "Bearer  key".into(),
                401,
                "10009",
            ),
            (&telnyx, "GET", "/v2/balance", "key".into(), 401, "10009"),
            (
                &telnyx,
                "GET",
                "/v1/balance",
                "Bearer key".into(),
                404,
                "errors",
            ),
            (
                &vonage,
                "GET",
                "/account/get-balance",
                good_vonage.clone(),
                200,
                "\"value\"",
            ),
            (
                &vonage,
                "GET",
                "/account/get-balance",
                basic("k", "x"),
                401,
                "Unauthorized",
            ),
            (
                &vonage,
                "DELETE",
                "/account/get-balance",
                good_vonage,
                405,
                "title",
            ),
        ];
        for (sim, method, path, authorization, status, needle) in cases {
            let headers: Vec<(&str, &str)> = if authorization.is_empty() {
                vec![]
            } else {
                vec![("authorization", authorization.as_str())]
            };
            let answer = sim
                .handle(&fuzz::sim_request(method, path, None, &headers, vec![]))
                .await;
            let body = String::from_utf8_lossy(&answer.body);
            assert_eq!(
                answer.status, status,
                "{method} {path} {authorization}: {body}"
            );
            assert!(body.contains(needle), "{method} {path}: {body}");
        }
    });
}
