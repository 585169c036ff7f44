//! The official Stripe SDK (Python, PyPI `stripe`) against our simulator on loopback: if the
//! SDK cannot parse what the simulator answers, or the simulator refuses what the SDK sends,
//! the simulator is wrong. Needs the SDK installed:
//!
//! ```sh
//! python3 -m venv /tmp/sdk-venv && /tmp/sdk-venv/bin/pip install 'stripe==16.1.0'
//! STRIPE_SDK_PYTHON=/tmp/sdk-venv/bin/python cargo test --test official_sdks_stripe -- --ignored
//! ```

use std::path::Path;

use balance_exporter::providers::stripe::sim::{BodyFault, SimAccount, SimFunds, StripeSim};
use balance_exporter::providers::stripe::{
    AVAILABLE, BALANCE_PATH, CONNECT_RESERVED, INSTANT_AVAILABLE, ISSUING_AVAILABLE, PENDING,
    PREFUNDING_AVAILABLE, PREFUNDING_PENDING,
};
use balance_exporter::sim::{Fault, Ledger};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const KEY: &str = "sk_test_51SdkPlatformKey";
const ACCOUNT: &str = "acct_1SdkConnected";

fn funds(kind: &'static str, currency: &str, amount: &str) -> SimFunds {
    SimFunds::new(
        kind,
        currency,
        Ledger::fixed(amount.parse::<Decimal>().unwrap()),
    )
}

#[tokio::test]
#[ignore = "needs the official stripe SDK: STRIPE_SDK_PYTHON=<python with `stripe==16.1.0`>"]
async fn the_official_stripe_sdk_reads_the_simulated_balance_and_its_refusals() {
    let sim = StripeSim::new();
    sim.add_account(
        KEY,
        SimAccount::new(vec![
            funds(AVAILABLE, "USD", "1234.56"),
            funds(AVAILABLE, "JPY", "5000"),
            funds(AVAILABLE, "KWD", "1.234"),
            funds(AVAILABLE, "ISK", "5"),
            funds(PENDING, "USD", "10"),
            funds(INSTANT_AVAILABLE, "USD", "90"),
            funds(CONNECT_RESERVED, "USD", "0"),
            funds(ISSUING_AVAILABLE, "EUR", "7.5"),
            funds(PREFUNDING_AVAILABLE, "GBP", "1"),
            funds(PREFUNDING_PENDING, "HUF", "123.45"),
        ])
        .with_connected(
            ACCOUNT,
            vec![
                funds(AVAILABLE, "JPY", "80000"),
                funds(PENDING, "KWD", "1.5"),
            ],
        ),
    );
    sim.add_account(
        "sk_test_expiredSdkKey",
        SimAccount {
            expired: true,
            ..SimAccount::new(vec![])
        },
    );
    sim.add_account(
        "rk_test_restrictedSdkKey",
        SimAccount {
            lacks_balance_read: true,
            ..SimAccount::new(vec![])
        },
    );
    let mut limited = SimAccount::new(vec![funds(AVAILABLE, "USD", "1")]);
    limited.faults.always(Fault::code("rate_limit"));
    sim.add_account("sk_test_limitedSdkKey", limited);
    let mut failing = SimAccount::new(vec![funds(AVAILABLE, "USD", "1")]);
    failing.body_faults.always(BodyFault::NoRetry {
        code: "api_error".into(),
    });
    sim.add_account("sk_test_failingSdkKey", failing);
    let server = sim.start().await.unwrap();

    let python = std::env::var("STRIPE_SDK_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/stripe.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .env("STRIPE_SIM_BASE", server.base_url())
        .env("STRIPE_SIM_KEY", KEY)
        .env("STRIPE_SIM_ACCOUNT", ACCOUNT)
        .env("STRIPE_SIM_WRONG_KEY", "sk_test_unknownSdkKey")
        .env("STRIPE_SIM_EXPIRED_KEY", "sk_test_expiredSdkKey")
        .env("STRIPE_SIM_RESTRICTED_KEY", "rk_test_restrictedSdkKey")
        .env("STRIPE_SIM_LIMITED_KEY", "sk_test_limitedSdkKey")
        .env("STRIPE_SIM_FAILING_KEY", "sk_test_failingSdkKey")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "{python} {}: {}\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();

    // What the SDK's model holds: minor units per Stripe's table, lowercase currencies.
    let platform = json!({
        "available": [["usd", 123456], ["jpy", 5000], ["kwd", 1234], ["isk", 500]],
        "pending": [["usd", 1000]],
        "instant_available": [["usd", 9000]],
        "connect_reserved": [["usd", 0]],
        "issuing_available": [["eur", 750]],
        "refund_and_dispute_prefunding_available": [["gbp", 100]],
        "refund_and_dispute_prefunding_pending": [["huf", 12345]],
    });
    let connected = json!({ "available": [["jpy", 80000]], "pending": [["kwd", 1500]] });
    assert_eq!(result["platform"], platform, "{result}");
    assert_eq!(result["module_api"], platform, "{result}");
    assert_eq!(result["connected"], connected, "{result}");
    assert_eq!(result["module_api_connected"], connected, "{result}");

    let refusals = &result["refusals"];
    for (case, exception, status, code) in [
        ("wrong_key", "AuthenticationError", 401, Value::Null),
        (
            "expired_key",
            "AuthenticationError",
            401,
            json!("api_key_expired"),
        ),
        ("restricted_key", "PermissionError", 403, Value::Null),
        (
            "foreign_account",
            "PermissionError",
            403,
            json!("account_invalid"),
        ),
        ("rate_limited", "RateLimitError", 429, json!("rate_limit")),
        ("api_error", "APIError", 500, Value::Null),
    ] {
        let refusal = &refusals[case];
        assert_eq!(refusal["exception"], exception, "{case}: {refusal}");
        assert_eq!(refusal["http_status"], status, "{case}: {refusal}");
        assert_eq!(refusal["code"], code, "{case}: {refusal}");
    }
    assert_eq!(refusals["api_error"]["type"], "api_error");

    // What the SDK sent and the simulator accepted: Bearer auth on GET /v1/balance, and the
    // Connect header where asked. No retry: the SDK was told to make none.
    let requests = server.requests();
    assert_eq!(requests.len(), 4 + 6, "one request per read");
    for request in &requests {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", BALANCE_PATH)
        );
        assert!(
            request
                .header("authorization")
                .is_some_and(|a| a.starts_with("Bearer ")),
            "{:?}",
            request.headers
        );
    }
    let with_account = requests
        .iter()
        .filter(|r| r.header("stripe-account") == Some(ACCOUNT))
        .count();
    assert_eq!(with_account, 2);
}
