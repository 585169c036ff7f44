use std::path::Path;

use reqwest::header::{HeaderMap, HeaderValue};

use super::*;
use crate::config::{self, Format};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");

fn account(extra: &str) -> String {
    format!(
        "accounts:
  - name: payby-ae
    provider: payby
    partner_id: \"200000018128\"
{extra}"
    )
}

fn parse(yaml: &str) -> Result<crate::config::Config, Vec<String>> {
    config::parse(yaml, Format::Yaml, Path::new(TESTDATA))
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

fn payby(config: &crate::config::Config) -> &Config {
    match &config.accounts[0].provider {
        crate::providers::ProviderConfig::PayBy(c) => c,
        other => panic!("not PayBy: {other:?}"),
    }
}

const KEYS: &str = "    private_key_file: payby/merchant_private_key_pkcs1.pem
    payby_public_key_file: payby/payby_public_key.pem
";

#[test]
fn a_full_config_loads_its_keys() {
    let config = parse(&account(&format!("{KEYS}    currencies: [AED, USD]\n"))).unwrap();
    let c = payby(&config);
    assert_eq!(c.environment, Environment::Production);
    assert_eq!(c.base_url.as_str(), "https://api.payby.com/");
    assert_eq!(c.currencies, ["AED", "USD"]);
    assert_eq!(c.private_key.bits(), 2048);
    // Neither the key nor its PEM shows in Debug; the PEM is kept only for redaction.
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("MII") && !debug.contains("primes"),
        "{debug}"
    );
    assert_eq!(config.accounts[0].secrets.len(), 2);
}

#[test]
fn uat_picks_its_host_a_number_is_a_partner_id_and_a_bare_base64_public_key_works() {
    let pem = std::fs::read_to_string(format!("{TESTDATA}/payby/payby_public_key.pem")).unwrap();
    let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let yaml = format!(
        "accounts:
  - name: uat
    provider: payby
    environment: uat
    partner_id: 200000018128
    private_key_file: payby/merchant_private_key_pkcs8.pem
    payby_public_key: {bare}
    currencies: [AED]
"
    );
    let config = parse(&yaml).unwrap();
    let c = payby(&config);
    assert_eq!(c.base_url.as_str(), "https://uat.test2pay.com/");
    assert_eq!(c.partner_id, "200000018128");
    assert_eq!(
        c.payby_public_key,
        VerifyingKey::from_text(&pem).unwrap(),
        "bare base64 and PEM are the same key"
    );
}

#[test]
fn key_problems_name_the_key_they_came_from() {
    let errors = parse(&account(
        "    private_key_file: keys-invalid/ec_private_key_pkcs8.pem
    payby_public_key: not a key
    currencies: [AED]
",
    ))
    .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("accounts[0] (payby-ae).private_key_file: not an RSA key")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("accounts[0] (payby-ae).payby_public_key: ")),
        "{errors:?}"
    );

    let errors = parse(&account(
        "    private_key_file: keys-invalid/rsa1024_private_key_pkcs8.pem
    payby_public_key_file: payby/payby_public_key.pem
    currencies: [AED]
",
    ))
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "accounts[0] (payby-ae).private_key_file: the RSA key has 1024 bits; at least 2048 are required"
        ]
    );

    // A public key where the private key belongs.
    let errors = parse(&account(
        "    private_key_file: payby/merchant_public_key.pem
    payby_public_key_file: payby/payby_public_key.pem
    currencies: [AED]
",
    ))
    .unwrap_err();
    assert!(
        errors[0].starts_with("accounts[0] (payby-ae).private_key_file: not an RSA private key"),
        "{errors:?}"
    );
}

#[test]
fn keys_under_2048_bits_are_refused_at_load_naming_their_field() {
    let private_1024 = std::fs::read_to_string(format!(
        "{TESTDATA}/keys-invalid/rsa1024_private_key_pkcs8.pem"
    ))
    .unwrap();
    let public_1024 = keys::test_public_key_of(&private_1024);
    let errors = parse(&account(&format!(
        "    private_key_file: payby/merchant_private_key_pkcs1.pem
    payby_public_key: {public_1024}
    currencies: [AED]
"
    )))
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "accounts[0] (payby-ae).payby_public_key: the RSA key has 1024 bits; at least 2048 are required"
        ]
    );
    // Both at once: each names its own field, no key material.
    let dir = std::env::temp_dir().join(format!("payby-1024-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let public_file = dir.join("payby_public_1024.pem");
    std::fs::write(
        &public_file,
        format!("-----BEGIN PUBLIC KEY-----\n{public_1024}\n-----END PUBLIC KEY-----\n"),
    )
    .unwrap();
    let errors = parse(&account(&format!(
        "    private_key_file: keys-invalid/rsa1024_private_key_pkcs8.pem
    payby_public_key_file: {}
    currencies: [AED]
",
        public_file.display()
    )))
    .unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        errors,
        [
            "accounts[0] (payby-ae).private_key_file: the RSA key has 1024 bits; at least 2048 are required",
            "accounts[0] (payby-ae).payby_public_key_file: the RSA key has 1024 bits; at least 2048 are required"
        ]
    );
}

#[test]
fn currencies_are_required_and_checked() {
    let errors = parse(&account(KEYS)).unwrap_err();
    assert_eq!(
        errors,
        ["accounts[0] (payby-ae).currencies: required but missing"]
    );
    let errors = parse(&account(&format!(
        "{KEYS}    currencies: [AED, A1D, aed]\n"
    )))
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "accounts[0] (payby-ae).currencies[1]: \"A1D\" is not a currency code like USD",
            "accounts[0] (payby-ae).currencies[2]: AED is listed twice"
        ]
    );
    let errors = parse(&account(&format!(
        "{KEYS}    currencies: [AED]\n    partner_id_typo: 1\n    environment: staging\n"
    )))
    .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("accounts[0] (payby-ae).environment:")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("accounts[0] (payby-ae).partner_id_typo: unknown key"))
    );
}

#[test]
fn the_request_body_is_the_test_vector_shape() {
    let expected = std::fs::read(format!("{TESTDATA}/payby/request_body.json")).unwrap();
    assert_eq!(request_body("AED", 1_708_485_334_645), expected);
}

fn payby_key() -> (SigningKey, VerifyingKey) {
    let private =
        std::fs::read_to_string(format!("{TESTDATA}/payby/payby_private_key.pem")).unwrap();
    let key = SigningKey::from_pem(&private).unwrap();
    let public = key.verifying_key();
    (key, public)
}

fn response(status: u16, body: &str, sign: Option<&str>) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(sign) = sign {
        headers.insert("sign", HeaderValue::from_str(sign).unwrap());
    }
    Response::new(
        status,
        headers,
        body.to_owned().into(),
        std::time::SystemTime::now(),
    )
}

fn signed(status: u16, body: &str) -> Response {
    let (key, _) = payby_key();
    response(status, body, Some(&key.sign(body.as_bytes()).unwrap()))
}

fn head(apply: &str, code: &str, msg: &str) -> String {
    format!(
        r#"{{"head":{{"applyStatus":"{apply}","code":"{code}","msg":"{msg}","success":false,"traceCode":"1"}}}}"#
    )
}

#[test]
fn the_vector_response_reads_exactly() {
    let body = std::fs::read_to_string(format!("{TESTDATA}/payby/response_body.json")).unwrap();
    let sign = std::fs::read_to_string(format!("{TESTDATA}/payby/response_sign.txt")).unwrap();
    let public = std::fs::read_to_string(format!("{TESTDATA}/payby/payby_public_key.pem")).unwrap();
    let key = VerifyingKey::from_text(&public).unwrap();
    let balances = interpret(&response(200, &body, Some(sign.trim())), &key).unwrap();
    assert_eq!(balances.len(), 1);
    assert_eq!(balances[0].0, "AED");
    assert_eq!(balances[0].1.to_string(), "897993.88");
}

#[test]
fn success_needs_both_apply_status_and_code_zero() {
    let (_, public) = payby_key();
    let odd = r#"{"head":{"applyStatus":"SUCCESS","code":"78001","msg":"CURRENCY_CODE_NOT_SUPPORTED"},"body":{"balanceList":[]}}"#;
    let error = interpret(&signed(200, odd), &public).unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("CURRENCY_CODE_NOT_SUPPORTED", ErrorClass::Client)
    );
    let no_list = r#"{"head":{"applyStatus":"SUCCESS","code":"0","msg":"SUCCESS"}}"#;
    let error = interpret(&signed(200, no_list), &public).unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("no_balance", ErrorClass::Decode)
    );
    let empty = r#"{"head":{"applyStatus":"SUCCESS","code":"0","msg":"SUCCESS"},"body":{"balanceList":[]}}"#;
    assert!(interpret(&signed(200, empty), &public).unwrap().is_empty());
    let bad_amount = r#"{"head":{"applyStatus":"SUCCESS","code":0,"msg":"SUCCESS"},"body":{"balanceList":[{"availableBalance":{"amount":"lots","currency":"AED"}}]}}"#;
    assert_eq!(
        interpret(&signed(200, bad_amount), &public)
            .unwrap_err()
            .code,
        "decode"
    );
}

/// The simulator's truncated and garbage bodies (faults the soak test mixes in) come unsigned
/// and are not JSON: decode errors, as from the other providers.
#[tokio::test]
async fn an_unsigned_cut_or_garbage_body_is_a_decode_error() {
    use crate::sim::{Fault, neutral_fault};
    let (_, public) = payby_key();
    for fault in [Fault::Malformed, Fault::Garbage] {
        let answer = neutral_fault(&fault).await.unwrap();
        let unsigned = Response::new(
            200,
            HeaderMap::new(),
            answer.body,
            std::time::SystemTime::now(),
        );
        let error = interpret(&unsigned, &public).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("decode", ErrorClass::Decode),
            "{fault:?}"
        );
    }
}

#[test]
fn unsigned_answers_are_believed_only_as_generic_gateway_errors() {
    let (_, public) = payby_key();
    // Whatever the msg, an unsigned gateway error is labelled by its code and classed
    // `server`: a documented msg (UNAUTHORIZED, RATE_LIMIT_REJECT) is not believed.
    for (code, msg, label) in [
        ("500", "SYSTEM_ERROR", "gateway_500"),
        ("402", "RATE_LIMIT_REJECT", "gateway_402"),
        ("403", "UNAUTHORIZED", "gateway_403"),
        ("5801", "UNAUTHORIZED", "gateway_5801"),
        ("5801", "GATEWAY_BUSY", "gateway_5801"),
        ("601", "RISK_FAIL", "gateway_601"),
        ("400", "REQUESTTIME_TOO_EARLY", "gateway_400"),
        ("58999999", "RATE_LIMIT_REJECT", "gateway_58xx"),
        ("58a", "UNAUTHORIZED", "gateway_58xx"),
    ] {
        for status in [200, 401, 429, 503] {
            let error =
                interpret(&response(status, &head("FAIL", code, msg), None), &public).unwrap_err();
            assert_eq!(
                (error.code.as_str(), error.class),
                (label, ErrorClass::Server),
                "{code} {msg} under HTTP {status}"
            );
            assert!(error.message.contains("unsigned"), "{}", error.message);
        }
    }
    // A business error or a success must be signed.
    for body in [
        head("FAIL", "78001", "CURRENCY_CODE_NOT_SUPPORTED"),
        r#"{"head":{"applyStatus":"SUCCESS","code":"0","msg":"SUCCESS"},"body":{"balanceList":[]}}"#.to_owned(),
        "{}".to_owned(),
    ] {
        let error = interpret(&response(200, &body, None), &public).unwrap_err();
        assert_eq!((error.code.as_str(), error.class), (SIGNATURE_MISSING, ErrorClass::Signature), "{body}");
        let error = interpret(&response(200, &body, Some("  ")), &public).unwrap_err();
        assert_eq!(error.code, SIGNATURE_MISSING);
    }
    // What is not JSON at all (a login page, a proxy's page) PayBy's API did not write: a
    // decode error quoting it, not a signature problem that sends the operator to the keys.
    for body in [
        "not json",
        "<html><head><title>Gateway login</title></head></html>",
    ] {
        let error = interpret(&response(200, body, None), &public).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("decode", ErrorClass::Decode),
            "{body}"
        );
        assert!(error.message.ends_with(body), "{}", error.message);
        assert!(
            error
                .message
                .starts_with("an unsigned answer that is not JSON: no content type: "),
            "{}",
            error.message
        );
    }
    // A proxy's error page is an HTTP failure; unsigned, it is a server failure whatever the
    // status says.
    for (status, label) in [(502, "http_502"), (401, "http_401"), (429, "http_429")] {
        let error = interpret(&response(status, "<html>no</html>", None), &public).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            (label, ErrorClass::Server)
        );
    }
}

#[test]
fn unsigned_gateway_labels_are_a_bounded_set() {
    let mut labels = std::collections::BTreeSet::new();
    for n in 0..100_000u32 {
        for code in [n.to_string(), format!("58{n}"), format!("{n:04}")] {
            if is_generic_gateway_code(&code) {
                labels.insert(gateway_label(&code));
            }
        }
    }
    assert_eq!(labels.len(), 108, "7 HTTP-like, 5800-5899, 58xx");
    assert!(labels.contains("gateway_58xx") && labels.contains("gateway_5800"));
}

#[test]
fn a_signed_error_counts_the_same_under_http_200_as_under_another_status() {
    let (_, public) = payby_key();
    for (msg, code, class) in [
        ("UNAUTHORIZED", "403", ErrorClass::Auth),
        ("RATE_LIMIT_REJECT", "402", ErrorClass::RateLimit),
        ("SYSTEM_ERROR", "500", ErrorClass::Server),
        ("CURRENCY_CODE_NOT_SUPPORTED", "78001", ErrorClass::Client),
    ] {
        let body = head("FAIL", code, msg);
        for status in [200, 403, 500] {
            let error = interpret(&signed(status, &body), &public).unwrap_err();
            assert_eq!(
                (error.code.as_str(), error.class),
                (msg, class),
                "{msg} under HTTP {status}"
            );
        }
    }
}

fn balance_list(entries: &str) -> String {
    format!(
        r#"{{"head":{{"applyStatus":"SUCCESS","code":"0","msg":"SUCCESS"}},"body":{{"balanceList":[{entries}]}}}}"#
    )
}

fn entry(currency: &str, amount: &str) -> String {
    format!(r#"{{"availableBalance":{{"amount":{amount},"currency":"{currency}"}}}}"#)
}

#[test]
fn a_signed_answer_must_be_for_the_currency_asked() {
    let (_, public) = payby_key();
    let read = |entries: &str| interpret_for(&signed(200, &balance_list(entries)), &public, "AED");
    // Another currency only: wrong_currency, nothing exported.
    let error = read(&entry("USD", "12.50")).unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("wrong_currency", ErrorClass::Decode)
    );
    assert!(
        error.message.contains("AED") && error.message.contains("USD"),
        "{}",
        error.message
    );
    assert!(!error.is_retryable());
    assert_eq!(
        read(&entry("USD", "null")).unwrap_err().code,
        "wrong_currency"
    );
    // The asked currency, with others beside it: only the asked one.
    let both = format!("{},{}", entry("usd", "1"), entry("AED", "897993.88"));
    assert_eq!(
        read(&both).unwrap(),
        [("AED".to_owned(), Decimal::new(89_799_388, 2))]
    );
    // Not held: an empty list. Held without an amount: no sample, not an error.
    assert!(read("").unwrap().is_empty());
    assert!(read(&entry("AED", "null")).unwrap().is_empty());
    // Entries that carry no balance at all.
    let error = read(r#"{},{"other":1}"#).unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("no_balance", ErrorClass::Decode)
    );
    // interpret (the bench's) still reads every listed currency.
    assert_eq!(
        interpret(&signed(200, &balance_list(&both)), &public)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_bad_signature_is_never_believed_even_on_an_error() {
    let (_, public) = payby_key();
    let body = head("FAIL", "500", "SYSTEM_ERROR");
    let (key, _) = payby_key();
    let other = key.sign(b"other bytes").unwrap();
    let error = interpret(&response(200, &body, Some(&other)), &public).unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        (SIGNATURE_INVALID, ErrorClass::Signature)
    );
    assert!(!error.is_retryable());
}

#[test]
fn undocumented_codes_keep_a_bounded_label() {
    let (_, public) = payby_key();
    let error = interpret(
        &signed(200, &head("FAIL", "79999", "some free text")),
        &public,
    )
    .unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("79999", ErrorClass::Client)
    );
    let error = interpret(
        &signed(200, &head("FAIL", "403", "NEW_AUTH_THING")),
        &public,
    )
    .unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("NEW_AUTH_THING", ErrorClass::Auth)
    );
}

#[test]
fn every_documented_msg_has_its_wire_code() {
    assert_eq!(documented_msgs().count(), 10);
    for (msg, _) in documented_msgs() {
        assert!(wire_code(msg).is_some(), "{msg}");
    }
    assert!(is_generic_gateway_code("5899") && is_generic_gateway_code("601"));
    assert!(!is_generic_gateway_code("0") && !is_generic_gateway_code("78001"));
}

/// Answers of the simulator, signed by PayBy's key: balances in two currencies, an error, an
/// unsupported currency.
fn sim_answers() -> Vec<Vec<u8>> {
    use super::sim::{PayBySim, SimAccount};
    use crate::clock::Clock;
    use crate::providers::fuzz;
    use crate::sim::{Ledger, SimHandler};

    let merchant =
        std::fs::read_to_string(format!("{TESTDATA}/payby/merchant_private_key_pkcs1.pem"))
            .unwrap();
    let merchant = SigningKey::from_pem(&merchant).unwrap();
    let (payby, _) = payby_key();
    let sim = PayBySim::new(payby);
    let mut account = SimAccount::new(
        merchant.verifying_key(),
        vec![
            ("AED", Ledger::fixed(Decimal::new(89_799_388, 2))),
            ("USD", Ledger::fixed(Decimal::new(-5, 1))),
        ],
    );
    account.list_all = true;
    sim.add_account("200000018128", account);
    fuzz::block_on(async {
        let mut out = Vec::new();
        for (currency, signer) in [
            ("AED", &merchant),
            ("XX1", &merchant),
            ("AED", &payby_key().0),
        ] {
            let body = request_body(currency, Clock::system().now_millis());
            let sign = signer.sign(&body).unwrap();
            let request = fuzz::sim_request(
                "POST",
                BALANCE_PATH,
                None,
                &[
                    ("partner-id", "200000018128"),
                    ("sign", &sign),
                    ("content-type", "application/json"),
                ],
                body,
            );
            out.push(fuzz::answer_body(sim.handle(&request).await, 200));
        }
        out
    })
}

#[test]
fn the_parsers_never_panic_on_arbitrary_or_mutated_answers() {
    use crate::providers::fuzz;

    let seeds = sim_answers();
    let (_, payby_public) = payby_key();
    let first = signed(200, std::str::from_utf8(&seeds[0]).unwrap());
    assert_eq!(
        interpret(&first, &payby_public).unwrap().len(),
        2,
        "the seeds are real answers"
    );
    // Past the signature check: what a verified answer may hold.
    fuzz::check(seeds.clone(), |status, body| {
        let _ = read_answer(&fuzz::response(status, body, &[("retry-after", "1")]));
    });
    // Before it: unsigned answers and signatures that do not verify.
    fuzz::check(seeds, |status, body| {
        let _ = interpret(&fuzz::response(status, body, &[]), &payby_public);
        let _ = interpret(
            &fuzz::response(status, body, &[("sign", "bm90IGEgc2lnbmF0dXJl")]),
            &payby_public,
        );
    });
}

#[test]
fn hostile_header_values_never_panic_the_parsers_nor_stretch_a_wait() {
    use crate::providers::fuzz;
    use crate::providers::http::MAX_RETRY_AFTER;

    let (_, payby_public) = payby_key();
    // `sign` is among the hostile headers: arbitrary signatures reach the verifier.
    fuzz::check_headers(sim_answers(), |response| {
        let bounded = |error: &ProviderError| {
            assert!(
                error.retry_after.is_none_or(|w| w <= MAX_RETRY_AFTER),
                "{error:?}"
            );
        };
        if let Err(error) = interpret(response, &payby_public) {
            bounded(&error);
        }
        if let Err(error) = interpret_for(response, &payby_public, "AED") {
            bounded(&error);
        }
        if let Err(error) = read_answer(response) {
            bounded(&error);
        }
    });
}
