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

const EL_KEY: &str = "el-key-2718";
const EL_SECRET: &str = "el+Secret/31415";
const UQ_CLIENT: &str = "uq-client-1";
const UQ_KEY: &str = "uq+Api/Key-16180";
const UQ_MINT_CLIENT: &str = "uq-client-2";
const UQ_MINT_KEY: &str = "uq+Mint/Key-57721";
const OW_APIKEY: &str = "ow+Api/Key-14142";
const ST_KEY: &str = "rk_test_St+Restricted/Key-17320";
const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
const PAYBY_KEY_FILE: &str = "payby/merchant_private_key_pkcs1.pem";

/// Every form in which `secret` (sent as `user`'s password, if any) must not appear: raw,
/// percent-encoded, base64 in both alphabets with and without padding, of the secret and of
/// `user:secret`, and the Basic header value. Compared case-insensitively by
/// [`assert_no_form`].
fn all_forms(user: Option<&str>, secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut plain = vec![secret.to_owned()];
    if let Some(user) = user {
        plain.push(format!("{user}:{secret}"));
    }
    let mut out = Vec::new();
    for text in &plain {
        out.push(text.clone());
        out.push(percent(text));
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            out.push(engine.encode(text));
        }
    }
    if let Some(user) = user {
        out.push(format!(
            "Basic {}",
            STANDARD.encode(format!("{user}:{secret}"))
        ));
    }
    out
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Fails if `output` shows any of `forms`, in any ASCII case.
fn assert_no_form(output: &str, forms: &[String], what: &str) {
    let lower = output.to_ascii_lowercase();
    for form in forms {
        assert!(
            !lower.contains(&form.to_ascii_lowercase()),
            "{what} shows {form:?}:\n{output}"
        );
    }
}

/// The PayBy private key's base64 lines: any one of them in an output is a leak.
fn payby_key_lines() -> Vec<String> {
    std::fs::read_to_string(format!("{TESTDATA}/{PAYBY_KEY_FILE}"))
        .expect("test key")
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

fn daemon_config(
    el: &str,
    uq: &str,
    ow: &str,
    payby: &str,
    stripe: &str,
    el_secret_line: &str,
) -> String {
    format!(
        "global:
  poll_interval: 1h
  request_timeout: 5s
accounts:
  - name: el
    provider: engagelab
    product: sms
    base_url: {el}
    dev_key: {EL_KEY}
{el_secret_line}
  - name: uq
    provider: uqpay
    base_url: {uq}
    client_id: {UQ_CLIENT}
    api_key: \"{UQ_KEY}\"
  - name: uq-mint
    provider: uqpay
    base_url: {uq}
    client_id: {UQ_MINT_CLIENT}
    api_key: \"{UQ_MINT_KEY}\"
  - name: ow
    provider: onerway
    base_url: {ow}
    apikey: \"{OW_APIKEY}\"
    balance_path: /test/account/balance
    currencies: [USD]
  - name: pb
    provider: payby
    base_url: {payby}
    partner_id: \"200000018128\"
    private_key_file: {TESTDATA}/{PAYBY_KEY_FILE}
    payby_public_key_file: {TESTDATA}/payby/payby_public_key.pem
    currencies: [AED]
  - name: st
    provider: stripe
    base_url: {stripe}
    api_key: \"{ST_KEY}\"
"
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking step")
}

async fn post(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Providers that echo every credential they were sent, a daemon at trace level polling them,
/// then two broken configs reloaded: no secret of any provider, in any form, on `/metrics`,
/// the status page, the reload 500 bodies or the log.
#[tokio::test]
async fn a_daemon_polling_echoing_providers_shows_no_secret_anywhere() {
    use balance_exporter::providers::engagelab::sim::BodyFault as ElFault;
    use balance_exporter::providers::onerway::sim::{
        AnswerFault, OnerwaySim, SimAccount as OwAccount, SimCurrency,
    };
    use balance_exporter::providers::payby::SigningKey;
    use balance_exporter::providers::payby::VerifyingKey;
    use balance_exporter::providers::payby::sim::{
        PayBySim, SimAccount as PbAccount, TEST_MERCHANT_PUBLIC_KEY, TEST_PAYBY_PRIVATE_KEY,
    };
    use balance_exporter::providers::stripe::sim::{
        BodyFault as StFault, SimAccount as StAccount, SimFunds, StripeSim,
    };
    use balance_exporter::providers::uqpay::sim::{
        BodyFault as UqFault, SimBalance, SimClient, UqPaySim,
    };

    let el = EngageLabSim::new(Product::Sms);
    let mut el_account = SimAccount::new(
        EL_SECRET,
        Ledger::fixed(Decimal::new(4200, 2)),
        Ledger::fixed(Decimal::ZERO),
    );
    el_account.body_faults.always(ElFault::EchoCredentials);
    el.add_account(EL_KEY, el_account);
    let el_server = el.start().await.unwrap();

    let uq = UqPaySim::new();
    let mut client = SimClient::new(
        UQ_KEY,
        vec![SimBalance::new("USD", Ledger::fixed(Decimal::new(100, 0)))],
    );
    client.body_faults.always(UqFault::EchoCredentials);
    uq.add_client(UQ_CLIENT, client);
    let mut minting = SimClient::new(
        UQ_MINT_KEY,
        vec![SimBalance::new("USD", Ledger::fixed(Decimal::new(100, 0)))],
    );
    minting.token_echoes.always(());
    uq.add_client(UQ_MINT_CLIENT, minting);
    let uq_server = uq.start().await.unwrap();

    let ow = OnerwaySim::new("/test/account/balance", "/test/account/overview");
    let mut ow_account = OwAccount::new(vec![("USD", SimCurrency::simple(Decimal::new(7, 0)))]);
    ow_account.answer_faults.always(AnswerFault::EchoApikey);
    ow.add_account(OW_APIKEY, ow_account);
    let ow_server = ow.start().await.unwrap();

    let pb = PayBySim::new(SigningKey::from_pem(TEST_PAYBY_PRIVATE_KEY).unwrap());
    pb.add_account(
        "200000018128",
        PbAccount::new(
            VerifyingKey::from_text(TEST_MERCHANT_PUBLIC_KEY).unwrap(),
            vec![("AED", Ledger::fixed(Decimal::new(5, 0)))],
        ),
    );
    let pb_server = pb.start().await.unwrap();

    let st = StripeSim::new();
    let mut st_account = StAccount::new(vec![SimFunds::new(
        balance_exporter::providers::stripe::AVAILABLE,
        "USD",
        Ledger::fixed(Decimal::new(9, 0)),
    )]);
    st_account.body_faults.always(StFault::EchoCredentials);
    st.add_account(ST_KEY, st_account);
    let st_server = st.start().await.unwrap();

    let urls = (
        el_server.base_url(),
        UqPaySim::base_url(&uq_server),
        ow_server.base_url(),
        pb_server.base_url(),
        st_server.base_url(),
    );
    let config =
        |secret_line: &str| daemon_config(&urls.0, &urls.1, &urls.2, &urls.3, &urls.4, secret_line);
    let dir = TempDir::new("secrets-daemon");
    let path = dir.write(
        "config.yml",
        &config(&format!("    dev_secret: \"{EL_SECRET}\"")),
    );
    let file = path.display().to_string();
    let mut daemon = blocking(move || {
        let mut d = common::Daemon::spawn(&[
            "--config.file",
            &file,
            "--log.level",
            "trace",
            "--web.enable-lifecycle",
        ]);
        d.wait_for_each(&[
            &common::poll_logged("el"),
            &common::poll_logged("uq"),
            &common::poll_logged("uq-mint"),
            &common::poll_logged("ow"),
            &common::poll_succeeded("pb"),
            &common::poll_logged("st"),
        ]);
        d
    })
    .await;

    // The token UQPay minted for this poll is a secret too.
    let token = uq.active_token(UQ_CLIENT).expect("a token was minted");
    let mut forms = all_forms(Some(EL_KEY), EL_SECRET);
    forms.extend(all_forms(None, UQ_KEY));
    forms.extend(all_forms(Some(UQ_CLIENT), UQ_KEY));
    forms.extend(all_forms(None, &token));
    forms.extend(all_forms(None, UQ_MINT_KEY));
    forms.extend(all_forms(Some(UQ_MINT_CLIENT), UQ_MINT_KEY));
    forms.extend(all_forms(None, OW_APIKEY));
    forms.extend(payby_key_lines());
    forms.extend(all_forms(None, ST_KEY));

    let (status, metrics) = common::get(daemon.addr, "/metrics").await;
    assert_eq!(status, 200);
    let m = common::Exposition::parse(&metrics);
    // The echoes were answered and counted: under EngageLab's code, and as `redacted` where
    // the code field itself was the credential.
    let errors = "balance_api_errors_total";
    assert!(m.expect(errors, &[("account", "el"), ("code", "2001")]) >= 1.0);
    assert!(m.expect(errors, &[("account", "uq"), ("code", "redacted")]) >= 1.0);
    assert!(m.expect(errors, &[("account", "uq-mint"), ("code", "redacted")]) >= 1.0);
    assert!(m.expect(errors, &[("account", "ow"), ("code", "redacted")]) >= 1.0);
    assert_eq!(m.expect("balance_up", &[("account", "pb")]), 1.0);
    assert!(
        m.expect(
            errors,
            &[("account", "st"), ("code", "authentication_error")]
        ) >= 1.0
    );
    assert_no_form(&metrics, &forms, "/metrics");

    let (status, page) = common::get(daemon.addr, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("el") && page.contains("2001"), "{page}");
    assert_no_form(&page, &forms, "the status page");

    // A reload with the secret unquoted (a number), then with a syntax error on its line.
    let number = "8675309123";
    let number_forms = all_forms(Some(EL_KEY), number);
    for (what, line) in [
        ("a numeric secret", format!("    dev_secret: {number}")),
        (
            "a syntax error",
            format!("    dev_secret: \"{EL_SECRET}\" x: [{number}"),
        ),
    ] {
        dir.write("config.yml", &config(&line));
        let (status, body) = post(daemon.addr, "/-/reload").await;
        assert_eq!(status, 500, "{what}: {body}");
        assert!(
            body.contains("dev_secret") || body.contains("line"),
            "{what}: the problem is named: {body}"
        );
        assert_no_form(&body, &forms, what);
        assert_no_form(&body, &number_forms, what);
        daemon = blocking(move || {
            daemon.wait_for_line(|l| l.contains("reload failed"));
            daemon
        })
        .await;
    }

    let log = daemon.stop_async().await;
    assert!(log.contains("level=trace"), "trace logging was on:\n{log}");
    assert!(log.contains("reload failed"), "{log}");
    assert!(
        log.contains("<redacted>"),
        "the echoes reached the log, redacted:\n{log}"
    );
    assert_no_form(&log, &forms, "the log");
    assert_no_form(&log, &number_forms, "the log");
}
