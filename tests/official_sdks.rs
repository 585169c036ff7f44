//! Fidelity of the simulators: each provider's official Python SDK, pinned in
//! `target/sdk-venv` by `.ci/sdk-venv`, is pointed at our simulator on loopback and fetches
//! the balance through it. The SDK's parsed balance must equal the simulator's ledger, and a
//! wrong credential must raise the SDK's own authentication error. If the SDK cannot parse
//! what the simulator answers, or the simulator refuses what the SDK sends, the simulator is
//! wrong.
//!
//! One test per SDK: a simulator, a few lines of Python, the comparison. A new SDK check is
//! another such function.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use balance_exporter::providers::http_json::presets;
use balance_exporter::providers::http_json::sim::{SimAuth, Wallet, preset_sim};
use balance_exporter::providers::stripe::sim::{BodyFault, SimAccount, SimFunds, StripeSim};
use balance_exporter::providers::stripe::{
    AVAILABLE, BALANCE_PATH, CONNECT_RESERVED, INSTANT_AVAILABLE, ISSUING_AVAILABLE, PENDING,
    PREFUNDING_AVAILABLE, PREFUNDING_PENDING,
};
use balance_exporter::sim::{Fault, Ledger, SimServer};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// The venv's Python, or `None` (the test skips, saying so; in CI it fails instead).
fn python() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python");
    if path.is_file() {
        return Some(path);
    }
    let message = format!("{} is missing: run .ci/sdk-venv", path.display());
    assert!(
        std::env::var("BALANCE_EXPORTER_CI").as_deref() != Ok("1"),
        "{message}; BALANCE_EXPORTER_CI=1 forbids skipping"
    );
    eprintln!("SKIPPED: {message}");
    None
}

/// Runs `script` with `args` and returns the JSON object it prints on its last line.
async fn sdk(python: &PathBuf, script: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let output = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        // No proxy between the SDK and loopback.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn decimal(value: &Value) -> Decimal {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} from the SDK: {e}"))
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the official SDKs: run .ci/sdk-venv first; run by .ci/run"]
async fn twilio_sdk_reads_the_simulated_balance() {
    let Some(python) = python() else { return };
    let sid = "AC0123456789abcdef0123456789abcdef";
    let sim = preset_sim(
        &presets::TWILIO,
        SimAuth::Basic {
            username: sid.into(),
            password: "tw-token".into(),
        },
        vec![Wallet::new(
            "USD",
            Ledger::fixed(dec("14.00034")),
            Ledger::fixed(Decimal::ZERO),
        )],
    );
    let server = sim.start().await.unwrap();
    let script = r#"
import json, sys
from twilio.rest import Client
from twilio.base.exceptions import TwilioRestException
base, sid, token = sys.argv[1:4]
client = Client(sid, token)
client.api.base_url = base
try:
    b = client.api.v2010.accounts(sid).balance.fetch()
    print(json.dumps({"balance": b.balance, "currency": b.currency, "sid": b.account_sid}))
except TwilioRestException as e:
    print(json.dumps({"status": e.status, "code": e.code}))
"#;
    let good = sdk(&python, script, &[&server.base_url(), sid, "tw-token"], &[]).await;
    assert_eq!(decimal(&good["balance"]), dec("14.00034"), "{good}");
    assert_eq!(
        (good["currency"].as_str(), good["sid"].as_str()),
        (Some("USD"), Some(sid))
    );
    let refused = sdk(&python, script, &[&server.base_url(), sid, "wrong"], &[]).await;
    assert_eq!(
        (refused["status"].as_u64(), refused["code"].as_u64()),
        (Some(401), Some(20003))
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the official SDKs: run .ci/sdk-venv first; run by .ci/run"]
async fn telnyx_sdk_reads_the_simulated_balance() {
    let Some(python) = python() else { return };
    let sim = preset_sim(
        &presets::TELNYX,
        SimAuth::Bearer("KEY-telnyx".into()),
        vec![Wallet::new(
            "USD",
            Ledger::fixed(dec("300.25")),
            Ledger::fixed(dec("100")),
        )],
    );
    let server = sim.start().await.unwrap();
    let script = r#"
import json, sys
import telnyx
base, key = sys.argv[1:3]
client = telnyx.Telnyx(api_key=key, base_url=base + "/v2", max_retries=0)
try:
    d = client.balance.retrieve().data
    print(json.dumps({"balance": d.balance, "credit_limit": d.credit_limit,
                      "available_credit": d.available_credit, "pending": d.pending,
                      "currency": d.currency}))
except telnyx.AuthenticationError as e:
    print(json.dumps({"status": e.status_code, "code": e.body["errors"][0]["code"]}))
"#;
    let good = sdk(&python, script, &[&server.base_url(), "KEY-telnyx"], &[]).await;
    assert_eq!(decimal(&good["balance"]), dec("300.25"), "{good}");
    assert_eq!(decimal(&good["credit_limit"]), dec("100"));
    assert_eq!(decimal(&good["available_credit"]), dec("400.25"));
    assert_eq!(decimal(&good["pending"]), Decimal::ZERO);
    assert_eq!(good["currency"], "USD");
    let refused = sdk(&python, script, &[&server.base_url(), "KEY-wrong"], &[]).await;
    assert_eq!(
        (refused["status"].as_u64(), refused["code"].as_str()),
        (Some(401), Some("10009"))
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the official SDKs: run .ci/sdk-venv first; run by .ci/run"]
async fn vonage_sdk_reads_the_simulated_balance() {
    let Some(python) = python() else { return };
    // The SDK only speaks https to its host: the simulator serves TLS from a test CA.
    let ca = common::tls::TestCa::new("vonage test CA");
    let dir = common::TempDir::new("vonage-sdk");
    let ca_file = ca.write(&dir, "ca.pem");
    let sim = preset_sim(
        &presets::VONAGE,
        SimAuth::Basic {
            username: "abc123".into(),
            password: "vo-secret".into(),
        },
        vec![Wallet::new(
            "EUR",
            Ledger::fixed(dec("10.28")),
            Ledger::fixed(Decimal::ZERO),
        )],
    );
    let server: SimServer =
        SimServer::start_tls(sim.clone() as Arc<_>, ca.server().server_config())
            .await
            .unwrap();
    let host = format!("127.0.0.1:{}", server.addr().port());
    let script = r#"
import json, sys
from vonage import Auth, HttpClientOptions, Vonage
from vonage_http_client.errors import AuthenticationError
host, key, secret = sys.argv[1:4]
client = Vonage(Auth(api_key=key, api_secret=secret), HttpClientOptions(rest_host=host))
try:
    b = client.account.get_balance()
    print(json.dumps({"value": repr(b.value), "auto_reload": b.auto_reload}))
except AuthenticationError as e:
    print(json.dumps({"status": e.response.status_code}))
"#;
    let env = [("REQUESTS_CA_BUNDLE", ca_file.to_str().unwrap())];
    let good = sdk(&python, script, &[&host, "abc123", "vo-secret"], &env).await;
    assert_eq!(decimal(&good["value"]), dec("10.28"), "{good}");
    assert_eq!(good["auto_reload"], false);
    let refused = sdk(&python, script, &[&host, "abc123", "wrong"], &env).await;
    assert_eq!(refused["status"].as_u64(), Some(401), "{refused}");
}

// Stripe: a provider module with its own simulator; the SDK script is tests/sdk/stripe.py (it
// drops its own folder from sys.path, since the folder holds a `stripe.py`).

const STRIPE_KEY: &str = "sk_test_51SdkPlatformKey";
const STRIPE_ACCOUNT: &str = "acct_1SdkConnected";

fn stripe_funds(kind: &'static str, currency: &str, amount: &str) -> SimFunds {
    SimFunds::new(
        kind,
        currency,
        Ledger::fixed(amount.parse::<Decimal>().unwrap()),
    )
}

#[tokio::test]
#[ignore = "needs the official SDKs: run .ci/sdk-venv first; run by .ci/run"]
async fn the_official_stripe_sdk_reads_the_simulated_balance_and_its_refusals() {
    let Some(python) = python() else { return };
    let sim = StripeSim::new();
    sim.add_account(
        STRIPE_KEY,
        SimAccount::new(vec![
            stripe_funds(AVAILABLE, "USD", "1234.56"),
            stripe_funds(AVAILABLE, "JPY", "5000"),
            stripe_funds(AVAILABLE, "KWD", "1.234"),
            stripe_funds(AVAILABLE, "ISK", "5"),
            stripe_funds(PENDING, "USD", "10"),
            stripe_funds(INSTANT_AVAILABLE, "USD", "90"),
            stripe_funds(CONNECT_RESERVED, "USD", "0"),
            stripe_funds(ISSUING_AVAILABLE, "EUR", "7.5"),
            stripe_funds(PREFUNDING_AVAILABLE, "GBP", "1"),
            stripe_funds(PREFUNDING_PENDING, "HUF", "123.45"),
        ])
        .with_connected(
            STRIPE_ACCOUNT,
            vec![
                stripe_funds(AVAILABLE, "JPY", "80000"),
                stripe_funds(PENDING, "KWD", "1.5"),
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
    let mut limited = SimAccount::new(vec![stripe_funds(AVAILABLE, "USD", "1")]);
    limited.faults.always(Fault::code("rate_limit"));
    sim.add_account("sk_test_limitedSdkKey", limited);
    let mut failing = SimAccount::new(vec![stripe_funds(AVAILABLE, "USD", "1")]);
    failing.body_faults.always(BodyFault::NoRetry {
        code: "api_error".into(),
    });
    sim.add_account("sk_test_failingSdkKey", failing);
    let server = sim.start().await.unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/stripe.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .env("STRIPE_SIM_BASE", server.base_url())
        .env("STRIPE_SIM_KEY", STRIPE_KEY)
        .env("STRIPE_SIM_ACCOUNT", STRIPE_ACCOUNT)
        .env("STRIPE_SIM_WRONG_KEY", "sk_test_unknownSdkKey")
        .env("STRIPE_SIM_EXPIRED_KEY", "sk_test_expiredSdkKey")
        .env("STRIPE_SIM_RESTRICTED_KEY", "rk_test_restrictedSdkKey")
        .env("STRIPE_SIM_LIMITED_KEY", "sk_test_limitedSdkKey")
        .env("STRIPE_SIM_FAILING_KEY", "sk_test_failingSdkKey")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        output.status.success(),
        "{} {}: {}\n{}",
        python.display(),
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
        .filter(|r| r.header("stripe-account") == Some(STRIPE_ACCOUNT))
        .count();
    assert_eq!(with_account, 2);
}
