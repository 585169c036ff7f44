use std::path::Path;

use reqwest::header::HeaderMap;

use super::*;
use crate::config::{self, Format};

fn parse(keys: &str) -> Result<Config, Vec<String>> {
    let yaml = format!(
        "accounts:
  - name: onerway-main
    provider: onerway
    apikey: key-123456
{keys}"
    );
    let config = config::parse(&yaml, Format::Yaml, Path::new("."))
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    match &config.accounts[0].provider {
        crate::providers::ProviderConfig::Onerway(c) => Ok(c.clone()),
        other => panic!("not Onerway: {other:?}"),
    }
}

#[test]
fn overview_mode_without_currencies() {
    let c = parse(
        "    base_url: https://account.example
    overview_path: /v1/overview
    display_currency: EUR
",
    )
    .unwrap();
    assert_eq!(
        c.mode,
        Mode::Overview {
            path: "/v1/overview".into(),
            display_currency: Some("EUR".into())
        }
    );
    assert_eq!(c.currency_scope(), CurrencyScope::Discovered);
    assert!(!format!("{c:?}").contains("key-123456"));
}

#[test]
fn per_currency_mode_with_currencies_and_the_issue_example_loads() {
    // The issue's example gives both paths and a display currency along with currencies.
    let c = parse(
        "    base_url: https://account-service.example
    overview_path: /path/from/onerway/docs
    balance_path: /path/from/onerway/balance
    display_currency: USD
    currencies: [USD, EUR]
",
    )
    .unwrap();
    assert_eq!(
        c.mode,
        Mode::Currencies {
            path: "/path/from/onerway/balance".into(),
            currencies: vec!["USD".into(), "EUR".into()]
        }
    );
}

#[test]
fn no_invented_defaults() {
    let errors = parse("").unwrap_err();
    assert_eq!(
        errors,
        [
            "accounts[0] (onerway-main).base_url: required but missing",
            "accounts[0] (onerway-main).overview_path: required when currencies is absent: the path from Onerway's account-service documentation"
        ]
    );
    let errors = parse(
        "    base_url: https://account.example
    overview_path: /v1/overview
    currencies: [USD]
",
    )
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "accounts[0] (onerway-main).balance_path: required when currencies is set: the path from Onerway's account-service documentation"
        ]
    );
    let errors = parse(
        "    base_url: https://account.example
    overview_path: v1 overview
    display_currency: dollars
",
    )
    .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0]
            .starts_with("accounts[0] (onerway-main).overview_path: \"v1 overview\" is not a path")
    );
    assert!(errors[1].starts_with("accounts[0] (onerway-main).display_currency:"));
}

fn response(status: u16, body: &str) -> Response {
    Response::new(
        status,
        HeaderMap::new(),
        body.to_owned().into(),
        std::time::SystemTime::now(),
    )
}

fn ok(body: &str) -> Result<String, ProviderError> {
    interpret(&response(200, body))
}

#[test]
fn both_success_envelopes_with_codes_as_strings_or_numbers() {
    for body in [
        r#"{"code":"200","message":"success","data":{"currency":"USD"}}"#,
        r#"{"code":200,"message":"success","data":{"currency":"USD"}}"#,
        r#"{"respCode":"20000","respMsg":"Success","data":{"currency":"USD"}}"#,
        r#"{"respCode":20000,"respMsg":"Success","data":{"currency":"USD"}}"#,
    ] {
        assert_eq!(ok(body).unwrap(), r#"{"currency":"USD"}"#, "{body}");
    }
    // A success without data, or nothing of Onerway's at all: no balance, a failure.
    for body in [
        r#"{"respCode":"20000","respMsg":"Success","data":null}"#,
        r#"{"respCode":"20000","respMsg":"Success"}"#,
        r#"{"code":200,"message":"success"}"#,
        "{}",
    ] {
        let error = ok(body).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("no_balance", ErrorClass::Decode),
            "{body}"
        );
    }
    for body in [r#"{"message":"success","data":{}}"#, "[]"] {
        assert_eq!(ok(body).unwrap_err().code, "decode", "{body}");
    }
}

#[test]
fn error_codes_and_their_classes() {
    for (body, code, class) in [
        (
            r#"{"respCode":"40003","respMsg":"Unauthorized"}"#,
            "40003",
            ErrorClass::Auth,
        ),
        (
            r#"{"respCode":40006,"respMsg":"Duplicate"}"#,
            "40006",
            ErrorClass::Client,
        ),
        (
            r#"{"code":"40002","message":"time"}"#,
            "40002",
            ErrorClass::Clock,
        ),
        (
            r#"{"respCode":"40005","respMsg":"failed"}"#,
            "40005",
            ErrorClass::Server,
        ),
        (
            r#"{"code":"500","message":"oops"}"#,
            "500",
            ErrorClass::Server,
        ),
        (
            r#"{"code":"429","message":"slow down"}"#,
            "429",
            ErrorClass::RateLimit,
        ),
        (
            r#"{"respCode":"41234","respMsg":"new"}"#,
            "41234",
            ErrorClass::Client,
        ),
    ] {
        let error = ok(body).unwrap_err();
        assert_eq!((error.code.as_str(), error.class), (code, class), "{body}");
    }
    let proxy = response(503, "<html>unavailable</html>");
    let error = interpret(&proxy).unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("http_503", ErrorClass::Server)
    );
    let json_error = response(401, r#"{"respCode":"40003"}"#);
    assert_eq!(interpret(&json_error).unwrap_err().code, "40003");
}

#[test]
fn currency_data_kinds_status_and_overview() {
    let data: OverviewData = parse_data(
        r#"{"totalAmount":"5000.10","displayCurrency":"USD","currencyBalances":[
            {"currency":"USD","withdrawableBalance":"1000.00","availableBalance":"1500.00","fundOnHold":"300.00","depositBalance":"200.00","totalBalance":"2000.00","status":"ACTIVE"},
            {"currency":"eur","availableBalance":"","totalBalance":"0","status":"FROZEN"}]}"#,
    )
    .unwrap();
    let mut s = Snapshot::default();
    add_overview(&mut s, &data, None, 100).unwrap();
    let find = |c: &str, k: &str| {
        s.balances
            .iter()
            .find(|b| b.currency == c && b.kind == k)
            .map(|b| b.amount.to_string())
    };
    assert_eq!(find("USD", "available").as_deref(), Some("1500.00"));
    assert_eq!(find("USD", "withdrawable").as_deref(), Some("1000.00"));
    assert_eq!(find("USD", "on_hold").as_deref(), Some("300.00"));
    assert_eq!(find("USD", "deposit").as_deref(), Some("200.00"));
    assert_eq!(find("USD", "total").as_deref(), Some("2000.00"));
    assert_eq!(find("EUR", "total").as_deref(), Some("0"));
    assert_eq!(
        find("EUR", "available"),
        None,
        "an empty amount is no sample"
    );
    assert_eq!(s.statuses.len(), 2);
    assert_eq!(s.statuses[1].status, "FROZEN");
    assert_eq!(s.overviews.len(), 1);
    assert_eq!(s.overviews[0].currency, "USD");
    assert_eq!(s.overviews[0].amount.to_string(), "5000.10");

    let bad: CurrencyData = parse_data(r#"{"availableBalance":"1"}"#).unwrap();
    assert_eq!(
        add_currency(&mut Snapshot::default(), &bad, None)
            .unwrap_err()
            .code,
        "decode"
    );
    add_currency(&mut Snapshot::default(), &bad, Some("SGD")).unwrap();
}

#[test]
fn request_ids_do_not_repeat() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
    assert_eq!(ids.len(), 1000);
}

/// The provider's reading of one answer, as `fetch` chains it for either mode.
fn read_any(response: &Response) {
    if let Ok(data) = interpret(response) {
        let mut snapshot = Snapshot::default();
        if let Ok(data) = parse_data::<CurrencyData>(&data) {
            let _ = add_currency(&mut snapshot, &data, Some("USD"));
        }
        if let Ok(data) = parse_data::<OverviewData>(&data) {
            let _ = add_overview(&mut snapshot, &data, Some("EUR"), 100);
            let _ = add_overview(&mut snapshot, &data, None, 1);
        }
    }
}

/// Answers of the simulator: one currency, the overview, both envelopes, errors.
fn sim_answers() -> Vec<Vec<u8>> {
    use super::sim::{Envelope as SimEnvelope, OnerwaySim, SimAccount, SimCurrency};
    use crate::providers::fuzz;
    use crate::sim::SimHandler;

    fuzz::block_on(async {
        let sim = OnerwaySim::new("/v1/balance", "/v1/overview");
        let currencies = || {
            vec![
                ("USD", SimCurrency::simple(Decimal::new(89_799_388, 2))),
                ("EUR", SimCurrency::simple(Decimal::new(-125, 1))),
            ]
        };
        sim.add_account("key-a", SimAccount::new(currencies()));
        let mut numeric = SimAccount::new(currencies());
        numeric.envelope = SimEnvelope::Code200;
        numeric.numeric_codes = true;
        sim.add_account("key-b", numeric);
        let mut out = Vec::new();
        for apikey in ["key-a", "key-b", "unknown"] {
            for (path, target) in [
                ("/v1/balance", r#""currency":"USD""#),
                ("/v1/overview", r#""displayCurrency":"EUR""#),
            ] {
                let body = format!(
                    r#"{{"requestId":"{}","requestTime":{},{target}}}"#,
                    new_request_id(),
                    Clock::system().now_millis()
                );
                let request = fuzz::sim_request(
                    "POST",
                    path,
                    None,
                    &[("apikey", apikey), ("content-type", "application/json")],
                    body.into_bytes(),
                );
                out.push(sim.handle(&request).await.body.to_vec());
            }
        }
        out
    })
}

#[test]
fn the_parsers_never_panic_on_arbitrary_or_mutated_answers() {
    let seeds = sim_answers();
    let data = ok(std::str::from_utf8(&seeds[0]).unwrap()).unwrap();
    assert!(
        data.contains("897993.88"),
        "the seeds are real answers: {data}"
    );
    crate::providers::fuzz::check(seeds, |status, body| {
        read_any(&crate::providers::fuzz::response(status, body, &[]));
    });
}

#[test]
fn a_single_currency_answer_must_be_for_the_currency_asked_and_carry_a_balance() {
    let read = |data: &str| {
        let data: CurrencyData = parse_data(data).unwrap();
        let mut snapshot = Snapshot::default();
        add_asked_currency(&mut snapshot, &data, "USD").map(|()| snapshot)
    };
    let s = read(r#"{"currency":"usd","availableBalance":"1500.00"}"#).unwrap();
    assert_eq!(s.balances.len(), 1);
    assert_eq!(s.balances[0].currency, "USD");
    for data in [
        r#"{"currency":"EUR","availableBalance":"1500.00"}"#,
        r#"{"availableBalance":"1500.00"}"#,
        r#"{"currency":"U1D","availableBalance":"1500.00"}"#,
    ] {
        let error = read(data).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("wrong_currency", ErrorClass::Decode),
            "{data}"
        );
        assert!(error.message.contains("USD"), "{}", error.message);
    }
    for data in ["{}", r#"{"currency":"USD","status":"ACTIVE"}"#] {
        let error = read(data).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("no_balance", ErrorClass::Decode),
            "{data}"
        );
    }
    // An amount present but empty is no sample, not a failure of the answer.
    assert!(
        read(r#"{"currency":"USD","availableBalance":""}"#)
            .unwrap()
            .balances
            .is_empty()
    );
}

#[test]
fn an_overview_without_its_list_is_no_balance_and_an_empty_list_is_valid() {
    let error = parse_overview(
        r#"{"totalAmount":"1.00","displayCurrency":"USD"}"#,
        None,
        100,
    )
    .unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("no_balance", ErrorClass::Decode)
    );
    let s = parse_overview(r#"{"currencyBalances":[]}"#, None, 100).unwrap();
    assert!(s.balances.is_empty());
}

#[test]
fn an_error_under_http_200_counts_as_under_its_status() {
    for body in [
        r#"{"respCode":"40003","respMsg":"Unauthorized","data":null}"#,
        r#"{"code":40003,"message":"Unauthorized"}"#,
    ] {
        for status in [200, 401, 403] {
            let error = interpret(&response(status, body)).unwrap_err();
            assert_eq!(
                (error.code.as_str(), error.class),
                ("40003", ErrorClass::Auth),
                "{body} under {status}"
            );
        }
    }
}

#[test]
fn hostile_header_values_never_panic_the_parsers_nor_stretch_a_wait() {
    use crate::providers::http::MAX_RETRY_AFTER;
    crate::providers::fuzz::check_headers(sim_answers(), |response| {
        read_any(response);
        if let Err(error) = interpret(response) {
            assert!(
                error.retry_after.is_none_or(|w| w <= MAX_RETRY_AFTER),
                "{error:?}"
            );
        }
    });
}

#[test]
fn an_overview_past_max_currencies_is_refused_before_the_rest_is_read() {
    let entry = |c: &str| format!(r#"{{"currency":"{c}","availableBalance":"1.00"}}"#);
    // USD twice is one currency; the entry after the fourth currency is garbage.
    let entries = ["USD", "EUR", "USD", "GBP", "JPY"].map(entry).join(",");
    let data = format!(
        r#"{{"currencyBalances":[{entries},{{"currency":"CHF","availableBalance":"garbage"}}]}}"#
    );
    let error = parse_overview(&data, None, 3).unwrap_err();
    assert_eq!(error.code, "too_many_currencies", "{error:?}");
    assert_eq!(error.class, ErrorClass::Decode);
    assert!(error.message.contains("max_currencies (3)"), "{error:?}");
    // Within the cap the garbage is reached (and refused): the early stop above skipped it.
    let error = parse_overview(&data, None, 10).unwrap_err();
    assert_eq!(error.code, "decode", "{error:?}");
    // Exactly at the cap is fine.
    let four = format!(r#"{{"currencyBalances":[{entries}]}}"#);
    let snapshot = parse_overview(&four, None, 4).unwrap();
    assert_eq!(snapshot.currencies().len(), 4);
}
