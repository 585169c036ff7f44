//! The binary with PayBy and Onerway accounts: `--config.check` loads and checks their keys,
//! and no key or apikey reaches the log (at trace level), `/metrics` or the status page.

mod common;

use balance_exporter::providers::onerway::sim::{
    OnerwaySim, SimAccount as OnerwayAccount, SimCurrency,
};
use balance_exporter::providers::payby::sim::{
    PayBySim, SimAccount as PayByAccount, TEST_MERCHANT_PUBLIC_KEY, TEST_PAYBY_PRIVATE_KEY,
};
use balance_exporter::providers::payby::{SigningKey, VerifyingKey};
use balance_exporter::sim::Ledger;
use common::{Daemon, TempDir, get, poll_logged, run_binary};
use rust_decimal::Decimal;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{TESTDATA}/{path}")).unwrap()
}

#[test]
fn config_check_loads_and_checks_the_keys() {
    let dir = TempDir::new("payby-check");
    dir.write(
        "merchant.pem",
        &read("payby/merchant_private_key_pkcs8.pem"),
    );
    dir.write("payby.pem", &read("payby/payby_public_key.pem"));
    dir.write("ec.pem", &read("keys-invalid/ec_private_key_pkcs8.pem"));
    dir.write(
        "short.pem",
        &read("keys-invalid/rsa1024_private_key_pkcs8.pem"),
    );
    let payby = |name: &str, private: &str, public: &str| {
        format!(
            "
  - name: {name}
    provider: payby
    partner_id: \"200000018128\"
    private_key_file: {private}
    payby_public_key_file: {public}
    currencies: [AED]"
        )
    };
    let valid = format!(
        "accounts:{}
  - name: onerway-main
    provider: onerway
    base_url: https://account-service.example
    overview_path: /from/the/docs
    apikey: some-apikey
",
        payby("good", "merchant.pem", "payby.pem")
    );
    let path = dir.write("valid.yml", &valid);
    let (code, out, err) = run_binary(
        &["--config.file", path.to_str().unwrap(), "--config.check"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");

    let invalid = format!(
        "accounts:{}{}{}
  - name: onerway-main
    provider: onerway
    base_url: https://account-service.example
    apikey: some-apikey
",
        payby("ec", "ec.pem", "payby.pem"),
        payby("short", "short.pem", "payby.pem"),
        // Keys swapped: a public key as the private one and a private key as the public one.
        payby("swapped", "payby.pem", "merchant.pem"),
    );
    let path = dir.write("invalid.yml", &invalid);
    let (code, out, err) = run_binary(
        &["--config.file", path.to_str().unwrap(), "--config.check"],
        &[],
    );
    let said = format!("{out}{err}");
    assert_eq!(code, 1, "{said}");
    for expected in [
        "accounts[0] (ec).private_key_file: not an RSA key",
        "accounts[1] (short).private_key_file: the RSA key has 1024 bits",
        "accounts[2] (swapped).private_key_file: not an RSA private key",
        "accounts[2] (swapped).payby_public_key_file: not a public key",
        "accounts[3] (onerway-main).overview_path: required when currencies is absent",
    ] {
        assert!(said.contains(expected), "missing {expected:?} in:\n{said}");
    }
    assert!(!said.contains("MII"), "key material in:\n{said}");
}

#[tokio::test]
async fn keys_and_apikeys_never_reach_logs_metrics_or_the_status_page() {
    let payby = PayBySim::new(SigningKey::from_pem(TEST_PAYBY_PRIVATE_KEY).unwrap());
    payby.add_account(
        "200000018128",
        PayByAccount::new(
            VerifyingKey::from_text(TEST_MERCHANT_PUBLIC_KEY).unwrap(),
            vec![("AED", Ledger::fixed(Decimal::new(12345, 2)))],
        ),
    );
    let onerway = OnerwaySim::new("/balance", "/overview");
    onerway.add_account(
        "apikey-Secret-4b1d",
        OnerwayAccount::new(vec![("USD", SimCurrency::simple(Decimal::new(500, 0)))]),
    );
    let (payby_server, onerway_server) =
        (payby.start().await.unwrap(), onerway.start().await.unwrap());
    let dir = TempDir::new("payby-secrets");
    dir.write(
        "merchant.pem",
        &read("payby/merchant_private_key_pkcs1.pem"),
    );
    let config = dir.write(
        "config.yml",
        &format!(
            "
accounts:
  - name: payby-ae
    provider: payby
    base_url: {payby}
    partner_id: \"200000018128\"
    private_key_file: merchant.pem
    payby_public_key_file: {TESTDATA}/payby/payby_public_key.pem
    currencies: [AED]
  - name: onerway-main
    provider: onerway
    base_url: {onerway}
    overview_path: /overview
    apikey_env: BE_TEST_ONERWAY_APIKEY
  - name: onerway-wrong
    provider: onerway
    base_url: {onerway}
    overview_path: /overview
    apikey: wrong-Secret-90ab
",
            payby = payby_server.base_url(),
            onerway = onerway_server.base_url(),
        ),
    );
    let config = config.to_str().unwrap().to_owned();
    let daemon = tokio::task::spawn_blocking(move || {
        let mut daemon = Daemon::spawn_with_env(
            &["--config.file", &config, "--log.level", "trace"],
            &[("BE_TEST_ONERWAY_APIKEY", "apikey-Secret-4b1d")],
        );
        let (a, b, c) = (
            poll_logged("payby-ae"),
            poll_logged("onerway-main"),
            poll_logged("onerway-wrong"),
        );
        daemon.wait_for_each(&[&a, &b, &c]);
        daemon
    })
    .await
    .unwrap();
    let (_, metrics) = get(daemon.addr, "/metrics").await;
    let (_, page) = get(daemon.addr, "/").await;
    assert!(metrics.contains(r#"balance_amount{account="payby-ae",currency="AED",kind="available",provider="payby"} 123.45"#), "{metrics}");
    assert!(
        metrics.contains(r#"account="onerway-main",currency="USD",kind="total""#),
        "{metrics}"
    );
    assert!(
        page.contains("onerway-wrong") && page.contains("40003"),
        "{page}"
    );
    let log = daemon.stop_async().await;
    assert!(
        log.contains("level=trace"),
        "the log was captured at trace level"
    );
    let key_lines: Vec<String> = read("payby/merchant_private_key_pkcs1.pem")
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect();
    for (what, text) in [("log", &log), ("/metrics", &metrics), ("/", &page)] {
        for secret in ["apikey-Secret-4b1d", "wrong-Secret-90ab"] {
            assert!(!text.contains(secret), "{what} shows {secret}");
        }
        for line in &key_lines {
            assert!(
                !text.contains(line.as_str()),
                "{what} shows the private key"
            );
        }
    }
}
