//! Secrets planted in configurations never come out: not from `--config.check` (whatever the
//! secret's type or the parser's complaint), nor from `--once` at trace level, where every
//! request is logged, nor in derived forms (base64 of `key:secret`, the Basic header value).

mod common;

use balance_exporter::providers::engagelab::Product;
use balance_exporter::providers::engagelab::sim::{EngageLabSim, SimAccount};
use balance_exporter::sim::Ledger;
use base64::Engine as _;
use common::TempDir;
use rust_decimal::Decimal;

const SECRET: &str = "8675309123";

async fn run(args: Vec<String>) -> (i32, String, String) {
    common::run_binary_async(args, Vec::new()).await
}

/// Every form of `secret` that must not appear.
fn forms(key: &str, secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        secret.to_owned(),
        b64.encode(secret),
        b64.encode(format!("{key}:{secret}")),
    ]
}

fn assert_hidden(output: &str, forms: &[String], what: &str) {
    for form in forms {
        assert!(
            !output.contains(form.as_str()),
            "{what} shows {form:?}:\n{output}"
        );
    }
}

#[tokio::test]
async fn config_check_never_prints_a_secret_of_any_type_or_in_a_syntax_error() {
    let dir = TempDir::new("secrets-check");
    let files = [
        // An unquoted number: the wrong type, once echoed in the complaint.
        dir.write(
            "number.yml",
            &format!(
                "accounts:\n  - name: sms\n    provider: engagelab\n    product: sms\n    dev_key: k\n    dev_secret: {SECRET}\n"
            ),
        ),
        dir.write(
            "list.yml",
            &format!(
                "accounts:\n  - name: sms\n    provider: engagelab\n    product: sms\n    dev_key: k\n    dev_secret: [{SECRET}]\n"
            ),
        ),
        // A TOML syntax error on the secret's own line: once printed with that line.
        dir.write(
            "broken.toml",
            &format!(
                "[[accounts]]\nname = \"sms\"\nprovider = \"engagelab\"\nproduct = \"sms\"\ndev_key = \"k\"\ndev_secret = \"{SECRET}\" x\n"
            ),
        ),
    ];
    for file in files {
        let (code, stdout, stderr) = run(vec![
            "--config.check".into(),
            "--config.file".into(),
            file.display().to_string(),
        ])
        .await;
        assert_eq!(
            code,
            1,
            "{} must be refused:\n{stdout}{stderr}",
            file.display()
        );
        assert!(
            stderr.contains("dev_secret") || stderr.contains("line"),
            "the problem is named:\n{stderr}"
        );
        assert_hidden(
            &format!("{stdout}{stderr}"),
            &forms("k", SECRET),
            &file.display().to_string(),
        );
    }
}

#[tokio::test]
async fn once_at_trace_level_logs_no_secret_nor_its_basic_header() {
    let (key, secret) = ("trace-key", "trace-secret-5551212");
    let sim = EngageLabSim::new(Product::Sms);
    sim.add_account(
        key,
        SimAccount::new(
            secret,
            Ledger::fixed(Decimal::new(4200, 2)),
            Ledger::fixed(Decimal::ZERO),
        ),
    );
    let server = sim.start().await.unwrap();
    let dir = TempDir::new("secrets-trace");
    let file = dir.write(
        "c.yml",
        &format!(
            "accounts:\n  - name: sms\n    provider: engagelab\n    product: sms\n    base_url: {}\n    dev_key: {key}\n    dev_secret: \"{secret}\"\n",
            server.base_url()
        ),
    );
    let (code, stdout, stderr) = run(vec![
        "--once".into(),
        "--log.level".into(),
        "trace".into(),
        "--config.file".into(),
        file.display().to_string(),
    ])
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("balance_amount{"),
        "the poll reached the simulator:\n{stdout}"
    );
    assert!(server.request_count() > 0, "the simulator was asked");
    assert!(
        stderr.contains("level=trace"),
        "trace logging was on:\n{stderr}"
    );
    assert_hidden(&format!("{stdout}{stderr}"), &forms(key, secret), "--once");
}
