//! The binary as users run it: `--config.check`, `--once`, the daemon (logs, pages, reload)
//! and `--demo`.

mod common;

use std::sync::Arc;

use balance_exporter::providers::engagelab::Product;
use balance_exporter::providers::engagelab::sim::{EngageLabSim, SimAccount};
use balance_exporter::providers::uqpay::sim::{SimBalance, SimClient, UqPaySim};
use balance_exporter::sim::{Ledger, SimServer};
use base64::Engine as _;
use common::{
    Daemon, Exporter, Exposition, TempDir, assert_promtool_clean, get, logfmt_field, poll_succeeded,
};
use rust_decimal::Decimal;

async fn sms_simulator(accounts: &[(&str, &str)]) -> (Arc<EngageLabSim>, SimServer) {
    let sim = EngageLabSim::new(Product::Sms);
    for (key, secret) in accounts {
        sim.add_account(
            key,
            SimAccount::new(
                secret,
                Ledger::fixed(Decimal::new(4200, 2)),
                Ledger::fixed(Decimal::ZERO),
            ),
        );
    }
    let server = sim.start().await.unwrap();
    (sim, server)
}

use common::run_binary_async as run;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn config_check_prints_every_problem_with_its_path() {
    let dir = TempDir::new("check-bad");
    let path = dir.write(
        "bad.yml",
        "
global:
  poll_interval: often
accounts:
  - name: sms
    provider: engagelab
    product: sms
    dev_key: k
    dev_secret_file: /nonexistent/secret
  - name: sms
    provider: engagelab
    product: otp
    dev_key: k
    dev_secret: s
    surprise: 1
",
    );
    let (code, stdout, stderr) = run(
        args(&["--config.check", "--config.file", path.to_str().unwrap()]),
        vec![],
    )
    .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    for expected in [
        "global.poll_interval: expected a duration",
        "accounts[0] (sms).dev_secret_file: cannot read /nonexistent/secret",
        "accounts[1] (sms).surprise: unknown key",
        "accounts[1].name: \"sms\" is used by an earlier account",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn config_check_accepts_a_valid_file_and_polls_nothing() {
    let (_sim, server) = sms_simulator(&[("k", "s")]).await;
    let dir = TempDir::new("check-ok");
    dir.write("secret", "s\n");
    let path = dir.write(
        "ok.toml",
        &format!(
            r#"
[[accounts]]
name = "sms"
provider = "engagelab"
product = "sms"
base_url = "{}"
dev_key = "k"
dev_secret_file = "secret"
"#,
            server.base_url()
        ),
    );
    let (code, stdout, stderr) = run(
        args(&["--config.check", "--config.file", path.to_str().unwrap()]),
        vec![],
    )
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("configuration is valid (1 account)"),
        "{stdout}"
    );
    assert_eq!(server.request_count(), 0);

    let missing = dir.0.join("absent.yml");
    let (code, _, stderr) = run(
        args(&["--config.check", "--config.file", missing.to_str().unwrap()]),
        vec![],
    )
    .await;
    assert_eq!(code, 1);
    // Where it looked, and how to point it elsewhere or try it without a file.
    assert!(
        stderr.contains(&format!("cannot read {}: ", missing.display()))
            && stderr.contains(
                "point --config.file at your configuration file, or try --demo, which needs none"
            ),
        "{stderr}"
    );
}

#[tokio::test]
async fn once_prints_the_exposition_and_fails_when_an_account_fails() {
    let (_sim, server) = sms_simulator(&[("good", "right")]).await;
    let dir = TempDir::new("once");
    let account = |name: &str, secret: &str| {
        format!(
            "
  - name: {name}
    provider: engagelab
    product: sms
    base_url: {}
    dev_key: good
    dev_secret: {secret}",
            server.base_url()
        )
    };
    let good = dir.write(
        "good.yml",
        &format!("accounts:{}", account("good", "right")),
    );
    let (code, stdout, stderr) = run(
        args(&["--once", "--config.file", good.to_str().unwrap()]),
        vec![],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let m = Exposition::parse(&stdout);
    assert_eq!(
        m.expect("balance_amount", &[("account", "good"), ("kind", "normal")]),
        42.0
    );
    assert_promtool_clean(&stdout);

    let mixed = dir.write(
        "mixed.yml",
        &format!(
            "accounts:{}{}",
            account("good", "right"),
            account("bad", "wrong")
        ),
    );
    let (code, stdout, _) = run(
        args(&["--once", "--config.file", mixed.to_str().unwrap()]),
        vec![],
    )
    .await;
    assert_eq!(code, 1);
    let m = Exposition::parse(&stdout);
    assert_eq!(m.expect("balance_up", &[("account", "good")]), 1.0);
    assert_eq!(m.expect("balance_up", &[("account", "bad")]), 0.0);
}

const UQPAY_KEY: &str = "uqpay-api-key-0123456789";

/// A UQPay simulator with one client, `acq`, holding `balances`.
async fn uqpay_simulator(balances: Vec<SimBalance>) -> (Arc<UqPaySim>, SimServer) {
    let sim = UqPaySim::new();
    sim.add_client("acq", SimClient::new(UQPAY_KEY, balances));
    let server = sim.start().await.unwrap();
    (sim, server)
}

/// A list-mode UQPay account `acq` of that simulator; `extra` adds keys (indented lines).
fn uqpay_account(server: &SimServer, extra: &str) -> String {
    format!(
        "
  - name: acq
    provider: uqpay
    base_url: {}
    client_id: acq
    api_key: {UQPAY_KEY}{extra}",
        UqPaySim::base_url(server)
    )
}

fn usd(amount: i64) -> SimBalance {
    SimBalance::new("USD", Ledger::fixed(Decimal::from(amount)))
}

#[tokio::test]
async fn once_fails_when_a_balance_with_a_threshold_is_missing_from_the_answer() {
    // USD comes without `frozen`; EUR does not come at all.
    let (_sim, server) = uqpay_simulator(vec![usd(500).without("frozen")]).await;
    let dir = TempDir::new("once-missing");
    let run_with = |thresholds: &str| {
        let path = dir.write(
            "config.yml",
            &format!(
                "accounts:{}\n",
                uqpay_account(&server, &format!("\n    thresholds:{thresholds}"))
            ),
        );
        run(
            args(&["--once", "--config.file", path.to_str().unwrap()]),
            vec![],
        )
    };

    let (code, stdout, stderr) = run_with(
        "
      - {currency: USD, kind: available, warning: 100}
      - {currency: USD, kind: frozen, warning: 1}
      - {currency: EUR, kind: available, critical: 5}",
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    let m = Exposition::parse(&stdout);
    assert_eq!(
        m.expect("balance_up", &[("account", "acq")]),
        1.0,
        "the poll succeeded"
    );
    assert_eq!(
        m.expect(
            "balance_amount",
            &[
                ("account", "acq"),
                ("currency", "USD"),
                ("kind", "available")
            ]
        ),
        500.0
    );
    let missing: Vec<&str> = stderr.lines().filter(|l| l.contains("MISSING")).collect();
    assert_eq!(missing.len(), 2, "{stderr}");
    fn fields(line: &str) -> [&str; 4] {
        ["level", "account", "currency", "kind"].map(|k| logfmt_field(line, k).unwrap_or(""))
    }
    assert_eq!(
        fields(missing[0]),
        ["error", "acq", "USD", "frozen"],
        "{stderr}"
    );
    assert_eq!(
        fields(missing[1]),
        ["error", "acq", "EUR", "available"],
        "{stderr}"
    );

    // The same answer, with thresholds only on what it holds: a success.
    let (code, _, stderr) =
        run_with("\n      - {currency: USD, kind: available, warning: 100}").await;
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("MISSING"), "{stderr}");
}

#[tokio::test]
async fn once_succeeds_for_a_list_account_that_holds_nothing_and_guards_nothing() {
    let (_sim, server) = uqpay_simulator(Vec::new()).await;
    let dir = TempDir::new("once-empty");
    let path = dir.write(
        "config.yml",
        &format!("accounts:{}\n", uqpay_account(&server, "")),
    );
    let (code, stdout, stderr) = run(
        args(&["--once", "--config.file", path.to_str().unwrap()]),
        vec![],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let m = Exposition::parse(&stdout);
    assert_eq!(m.expect("balance_up", &[("account", "acq")]), 1.0);
    assert!(m.find("balance_amount", &[]).is_empty(), "{stdout}");
}

#[tokio::test]
async fn once_fails_with_too_many_currencies_and_exports_none_of_them() {
    let balances = ["AED", "EUR", "GBP", "USD"]
        .iter()
        .map(|c| SimBalance::new(c, Ledger::fixed(Decimal::ONE)))
        .collect();
    let (_sim, server) = uqpay_simulator(balances).await;
    let dir = TempDir::new("once-cap");
    let path = dir.write(
        "config.yml",
        &format!(
            "accounts:{}\n",
            uqpay_account(&server, "\n    max_currencies: 3")
        ),
    );
    let (code, stdout, stderr) = run(
        args(&["--once", "--config.file", path.to_str().unwrap()]),
        vec![],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    let m = Exposition::parse(&stdout);
    assert_eq!(m.expect("balance_up", &[("account", "acq")]), 0.0);
    assert!(m.find("balance_amount", &[]).is_empty(), "{stdout}");
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[
                ("account", "acq"),
                ("code", "too_many_currencies"),
                ("class", "decode")
            ]
        ),
        1.0
    );
}

/// In the daemon, a poll over the cap keeps the balances of the last good one.
#[tokio::test]
async fn too_many_currencies_keeps_the_previous_balances() {
    let (sim, server) = uqpay_simulator(vec![usd(7)]).await;
    let yaml = format!(
        "global:\n  poll_interval: 1s\naccounts:{}\n",
        uqpay_account(&server, "\n    max_currencies: 2")
    );
    let mut exporter = Exporter::start(&yaml).await;
    exporter.poll("acq").await.outcome.unwrap();
    sim.update("acq", |c| {
        for code in ["AED", "EUR"] {
            c.balances
                .push(SimBalance::new(code, Ledger::fixed(Decimal::ONE)));
        }
    });
    // The poll in flight when the simulator changed may still see one currency.
    let error = loop {
        if let Err(e) = exporter.poll("acq").await.outcome {
            break e;
        }
    };
    assert_eq!(error.code, "too_many_currencies", "{error}");
    let m = exporter.scrape().await;
    assert_eq!(m.expect("balance_up", &[("account", "acq")]), 0.0);
    let usd_available = [
        ("account", "acq"),
        ("currency", "USD"),
        ("kind", "available"),
    ];
    assert_eq!(m.expect("balance_amount", &usd_available), 7.0);
    assert!(m.find("balance_amount", &[("currency", "AED")]).is_empty());
    assert!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "acq"), ("code", "too_many_currencies")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn secrets_never_reach_logs_metrics_or_the_status_page() {
    let secrets = [
        "inline-Secret-9f2c",
        "file-Secret-71aa",
        "env-Secret-c03d",
        "wrong-Secret-5e5e",
    ];
    let (_sim, server) = sms_simulator(&[
        ("key-inline", secrets[0]),
        ("key-file", secrets[1]),
        ("key-env", secrets[2]),
    ])
    .await;
    let dir = TempDir::new("secrets");
    dir.write("secret", &format!("{}\n", secrets[1]));
    let base = server.base_url();
    let path = dir.write(
        "config.yml",
        &format!(
            "
accounts:
  - {{name: a-inline, provider: engagelab, product: sms, base_url: '{base}', dev_key: key-inline, dev_secret: {s0}}}
  - {{name: a-file, provider: engagelab, product: sms, base_url: '{base}', dev_key: key-file, dev_secret_file: secret}}
  - {{name: a-env, provider: engagelab, product: sms, base_url: '{base}', dev_key: key-env, dev_secret_env: BE_TEST_SECRET}}
  - {{name: a-wrong, provider: engagelab, product: sms, base_url: '{base}', dev_key: key-inline, dev_secret: {s3}}}
",
            s0 = secrets[0],
            s3 = secrets[3],
        ),
    );
    let config = path.to_str().unwrap().to_owned();
    let mut daemon = tokio::task::spawn_blocking(move || {
        let mut daemon = Daemon::spawn_with_env(
            &["--config.file", &config, "--log.level", "trace"],
            &[("BE_TEST_SECRET", secrets[2])],
        );
        let polled = |account: &'static str| {
            move |l: &str| l.contains("msg=\"poll ") && l.contains(&format!("account={account} "))
        };
        let (a, b, c, d) = (
            polled("a-inline"),
            polled("a-file"),
            polled("a-env"),
            polled("a-wrong"),
        );
        daemon.wait_for_each(&[&a, &b, &c, &d]);
        daemon
    })
    .await
    .unwrap();
    let (_, metrics) = get(daemon.addr, "/metrics").await;
    let (_, page) = get(daemon.addr, "/").await;
    assert!(metrics.contains("account=\"a-wrong\""), "{metrics}");
    assert!(page.contains("a-env"), "{page}");
    let log = tokio::task::spawn_blocking(move || {
        let _ = &mut daemon;
        daemon.stop()
    })
    .await
    .unwrap();
    assert!(
        log.contains("level=trace"),
        "the log was captured at trace level"
    );
    for (i, secret) in secrets.iter().enumerate() {
        let key = ["key-inline", "key-file", "key-env", "key-inline"][i];
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
        for (what, text) in [("log", &log), ("/metrics", &metrics), ("/", &page)] {
            assert!(!text.contains(secret), "{what} shows secret {secret}");
            assert!(
                !text.contains(&basic),
                "{what} shows the Authorization value of {key}"
            );
        }
    }
}

#[tokio::test]
async fn reload_applies_a_valid_config_and_keeps_running_on_a_broken_one() {
    let (_sim, server) = sms_simulator(&[("k1", "s1"), ("k2", "s2")]).await;
    let dir = TempDir::new("reload");
    let account = |name: &str, key: &str, secret: &str| {
        format!(
            "\n  - {{name: {name}, provider: engagelab, product: sms, base_url: '{}', dev_key: {key}, dev_secret: {secret}}}",
            server.base_url()
        )
    };
    let path = dir.write(
        "config.yml",
        &format!("accounts:{}", account("first", "k1", "s1")),
    );
    let config = path.to_str().unwrap().to_owned();
    let mut daemon = tokio::task::spawn_blocking(move || {
        let mut d = Daemon::spawn(&[
            "--config.file",
            &config,
            "--log.level",
            "debug",
            "--web.enable-lifecycle",
        ]);
        d.wait_for_line(|l| l.contains("msg=\"poll succeeded\"") && l.contains("account=first "));
        d
    })
    .await
    .unwrap();

    let post = |addr| async move {
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/-/reload"))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    dir.write(
        "config.yml",
        &format!(
            "accounts:{}{}",
            account("first", "k1", "s1"),
            account("second", "k2", "s2")
        ),
    );
    assert_eq!(post(daemon.addr).await.0, 200);
    let mut daemon = tokio::task::spawn_blocking(move || {
        daemon.wait_for_line(|l| {
            l.contains("msg=\"poll succeeded\"") && l.contains("account=second ")
        });
        daemon
    })
    .await
    .unwrap();
    let m = Exposition::parse(&get(daemon.addr, "/metrics").await.1);
    assert!(
        m.value("balance_up", &[("account", "second")]).is_some(),
        "{}",
        m.text
    );

    dir.write(
        "config.yml",
        "accounts:\n  - name: broken\n    provider: nope\n",
    );
    let (status, body) = post(daemon.addr).await;
    assert_eq!(status, 500);
    assert!(
        body.contains(
            "accounts[0] (broken).provider: unknown provider \"nope\" (known providers: "
        ),
        "{body}"
    );
    let m = Exposition::parse(&get(daemon.addr, "/metrics").await.1);
    assert_eq!(
        m.find("balance_up", &[]).len(),
        2,
        "the running config stays"
    );
    let log = tokio::task::spawn_blocking(move || {
        let _ = &mut daemon;
        daemon.stop()
    })
    .await
    .unwrap();
    assert!(log.contains("reload failed"), "{log}");
}

/// The demo is useful at once: the first poll of each account brings its balances (that the
/// first polls start within half a second is the scheduler's test, under paused time).
#[test]
fn demo_shows_balances_from_its_first_polls() {
    let spawned_at = unix_now();
    let mut daemon = Daemon::spawn(&["--demo", "--log.level", "debug"]);
    let url_line = daemon.wait_for_line(|l| l.contains("msg=\"demo running"));
    assert!(url_line.contains("url=http://127.0.0.1:"), "{url_line}");
    let (sms, payby, onerway) = (
        poll_succeeded("sms-main"),
        poll_succeeded("payby-ae"),
        poll_succeeded("onerway-main"),
    );
    daemon.wait_for_each(&[&sms, &payby, &onerway]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(get(daemon.addr, "/metrics"));
    assert_eq!(status, 200);
    let log = daemon.log_text();
    for account in ["sms-main", "payby-ae", "onerway-main"] {
        let first_outcome = log.lines().find(|l| {
            (l.contains("msg=\"poll succeeded\"") || l.contains("msg=\"poll failed\""))
                && logfmt_field(l, "account") == Some(account)
        });
        assert!(
            first_outcome.is_some_and(|l| l.contains("poll succeeded")),
            "{account}'s first poll: {first_outcome:?}"
        );
    }
    let m = Exposition::parse(&body);
    let total = m.expect(
        "balance_amount",
        &[
            ("provider", "engagelab"),
            ("account", "sms-main"),
            ("kind", "total"),
        ],
    );
    assert!(total > 100.0 && total <= 125.0, "{total}");
    for (provider, account, currency) in [
        ("payby", "payby-ae", "AED"),
        ("payby", "payby-ae", "USD"),
        ("onerway", "onerway-main", "USD"),
        ("onerway", "onerway-main", "EUR"),
    ] {
        let labels = [
            ("provider", provider),
            ("account", account),
            ("currency", currency),
            ("kind", "available"),
        ];
        assert!(
            m.expect("balance_amount", &labels) > 0.0,
            "{provider} {currency}"
        );
    }
    assert!(m.expect("balance_overview_amount", &[("account", "onerway-main")]) > 0.0);
    // The demo's configuration counts as loaded at its start.
    assert_eq!(
        m.expect("balance_exporter_config_last_reload_successful", &[]),
        1.0
    );
    let loaded_at = m.expect(
        "balance_exporter_config_last_reload_success_timestamp_seconds",
        &[],
    );
    // Between the start and now, to the second (the gauge may round to milliseconds).
    let now = unix_now();
    assert!(
        loaded_at <= now && loaded_at >= spawned_at.floor(),
        "{loaded_at} not between {spawned_at} and {now}"
    );
    let (_, page) = runtime.block_on(get(daemon.addr, "/"));
    assert!(page.contains("sms-main"), "{page}");
    assert_promtool_clean(&body);
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Prometheus conventions: --version, help, log keys, listen addresses, the telemetry path.

/// Go's name for the architecture the tests run on (that of the binary under test).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

#[test]
fn version_prints_the_prometheus_layout() {
    let (code, stdout, stderr) = common::run_binary(&["--version"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        common::run_binary(&["-V"], &[]).1,
        stdout,
        "-V is --version"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    let head = lines[0]
        .strip_prefix(&format!(
            "balance_exporter, version {} (branch: ",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("first line: {stdout}"));
    let (branch, revision) = head
        .split_once(", revision: ")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(!branch.is_empty() && !revision.is_empty(), "{stdout}");
    let field = |i: usize, name: &str| -> String {
        let line = lines[i];
        let value = line
            .strip_prefix(&format!("  {name}:"))
            .unwrap_or_else(|| panic!("line {i} is not `  {name}:`: {stdout}"));
        value.trim().to_owned()
    };
    let date = field(2, "build date");
    let rustc = field(3, "rustc version");
    assert!(!field(1, "build user").is_empty());
    assert_eq!(
        field(4, "platform"),
        format!("{}/{}", std::env::consts::OS, go_arch())
    );
    assert_eq!(
        field(5, "features"),
        "demo",
        "this test needs the demo feature"
    );
    // YYYYMMDD-HH:MM:SS, as Prometheus' builds print it.
    let shape: String = date
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "99999999-99:99:99", "{date}");
    assert!(rustc.split('.').count() >= 3, "{rustc}");

    // Built from this checkout, the revision is its commit (unless the build was told one).
    let git = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output();
    if let Ok(out) = git
        && out.status.success()
        && std::env::var_os("BALANCE_EXPORTER_REVISION").is_none()
    {
        assert_eq!(revision, String::from_utf8_lossy(&out.stdout).trim());
    }
}

#[test]
fn short_and_long_help_share_the_tagline_and_describe_every_flag() {
    let (code, short, _) = common::run_binary(&["-h"], &[]);
    assert_eq!(code, 0);
    let (code, long, _) = common::run_binary(&["--help"], &[]);
    assert_eq!(code, 0);
    assert_eq!(short.lines().next(), long.lines().next(), "{short}\n{long}");
    for flag in [
        "--config.file",
        "--config.check",
        "--web.listen-address",
        "--web.config.file",
        "--web.max-connections",
        "--web.enable-lifecycle",
        "--web.telemetry-path",
        "--log.level",
        "--log.format",
        "--once",
        "--demo",
        "--version",
        "--help",
    ] {
        // In the short help each flag's line carries its description after the flag.
        let line = short
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .any(|w| w == flag || w == format!("{flag},"))
            })
            .unwrap_or_else(|| panic!("{flag} missing from -h:\n{short}"));
        let after = line.split_once(flag).map(|(_, rest)| rest).unwrap_or("");
        let described = after
            .split_whitespace()
            .filter(|w| !w.starts_with('<'))
            .count();
        assert!(described >= 3, "{flag} has no help text: {line:?}");
    }
}

/// Every line of `stderr` as a JSON object with the exporter's keys.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    assert!(!stderr.trim().is_empty(), "nothing logged");
    stderr
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{stderr}"));
            for key in ["time", "level", "target", "msg"] {
                assert!(v[key].is_string(), "no {key} in {line}");
            }
            let level = v["level"].as_str().unwrap_or_default();
            assert_eq!(level, level.to_lowercase(), "{line}");
            assert!(
                v.get("timestamp").is_none() && v.get("message").is_none(),
                "{line}"
            );
            v
        })
        .collect()
}

#[test]
fn bad_flags_are_an_error_line_in_the_requested_log_format() {
    let (code, stdout, stderr) =
        common::run_binary(&["--log.format", "json", "--web.listen-adress", ":1"], &[]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let lines = json_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["level"], "error");
    let error = lines[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("--web.listen-adress") && error.contains("--web.listen-address"),
        "names the flag and the one meant: {error}"
    );

    let (code, _, stderr) = common::run_binary(&["--log.format=json", "--once", "--demo"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(json_lines(&stderr)[0]["level"], "error");

    let (code, _, stderr) = common::run_binary(&["--bogus"], &[]);
    assert_eq!(code, 2, "{stderr}");
    let line = stderr.trim();
    assert!(!line.contains('\n'), "one line: {stderr}");
    assert!(line.starts_with("time="), "{line}");
    assert_eq!(logfmt_field(line, "level"), Some("error"), "{line}");
}

#[tokio::test]
async fn fatal_start_up_errors_are_log_lines_in_json() {
    let dir = TempDir::new("fatal-json");
    let missing = dir.0.join("absent.yml");
    let (code, _, stderr) = run(
        args(&[
            "--log.format",
            "json",
            "--config.file",
            missing.to_str().unwrap(),
        ]),
        vec![],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    let lines = json_lines(&stderr);
    let error = lines
        .iter()
        .find(|l| l["level"] == "error")
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert_eq!(error["file"], missing.to_str().unwrap(), "{stderr}");
    assert!(
        error["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot read"),
        "{stderr}"
    );

    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = run(
        args(&[
            "--demo",
            "--log.format",
            "json",
            "--web.listen-address",
            &address,
        ]),
        vec![],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    let lines = json_lines(&stderr);
    let error = lines
        .iter()
        .find(|l| l["level"] == "error")
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert_eq!(error["msg"], "cannot listen", "{stderr}");
    assert_eq!(error["address"], address.as_str(), "{stderr}");
    drop(taken);

    let (code, _, stderr) = run(
        args(&[
            "--demo",
            "--log.format",
            "json",
            "--web.telemetry-path",
            "metrics",
        ]),
        vec![],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(json_lines(&stderr).iter().any(|l| {
        l["level"] == "error"
            && l["msg"]
                .as_str()
                .unwrap_or("")
                .contains("--web.telemetry-path")
    }));
}

#[test]
fn a_json_daemon_logs_every_line_as_json() {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_balance_exporter"));
    command.args([
        "--demo",
        "--log.format",
        "json",
        "--log.level",
        "debug",
        "--web.listen-address",
        "127.0.0.1:0",
    ]);
    let mut process = common::Process::spawn("balance_exporter", command);
    let listening =
        process.wait_for_line_within(common::PATIENCE, |l| l.contains("\"msg\":\"listening\""));
    let listening: serde_json::Value = serde_json::from_str(&listening).unwrap();
    let addr: std::net::SocketAddr = listening["address"].as_str().unwrap().parse().unwrap();
    assert_eq!(listening["tls"], false, "typed, not text");
    process.wait_for_line_within(common::PATIENCE, |l| {
        l.contains("\"msg\":\"poll succeeded\"")
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, _) = runtime.block_on(get(addr, "/metrics"));
    assert_eq!(status, 200);
    let log = process.stop();
    let lines = json_lines(&log);
    assert!(
        lines.iter().any(|l| l["msg"] == "starting balance_exporter"
            && l["version"] == env!("CARGO_PKG_VERSION"))
    );
    assert!(lines.iter().any(|l| l["level"] == "debug"), "{log}");
}

#[test]
fn listens_on_every_listen_address() {
    // Daemon::spawn adds a second `--web.listen-address 127.0.0.1:0` after these.
    let mut daemon = Daemon::spawn(&["--demo", "--web.listen-address", "127.0.0.1:0"]);
    let second = daemon.wait_for_line(|l| l.contains("msg=listening"));
    let second: std::net::SocketAddr = logfmt_field(&second, "address")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{second}"));
    assert_ne!(second, daemon.addr);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for addr in [daemon.addr, second] {
        let (status, body) = runtime.block_on(get(addr, "/metrics"));
        assert_eq!(status, 200, "{addr}");
        assert!(body.contains("balance_exporter_build_info"), "{addr}");
        let (status, page) = runtime.block_on(get(addr, "/"));
        assert_eq!(status, 200, "{addr}");
        assert!(page.contains("sms-main"), "{addr}");
    }
    let log = daemon.stop();
    assert_eq!(
        log.lines().filter(|l| l.contains("msg=listening")).count(),
        2,
        "{log}"
    );

    // The same fixed address twice is refused as such.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    drop(taken);
    let (code, _, stderr) = common::run_binary(
        &[
            "--demo",
            "--web.listen-address",
            &address,
            "--web.listen-address",
            &address,
        ],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("level=error")
            && l.contains("msg=\"--web.listen-address is given twice\"")),
        "{stderr}"
    );
}

#[test]
fn a_telemetry_path_on_a_built_in_page_is_served_with_a_warning() {
    let mut daemon = Daemon::spawn(&["--demo", "--web.telemetry-path", "/"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(get(daemon.addr, "/"));
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE balance_exporter_build_info"),
        "{body}"
    );
    let (status, _) = runtime.block_on(get(daemon.addr, "/metrics"));
    assert_eq!(status, 404);
    let log = daemon.process().log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("msg=\"--web.telemetry-path"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert_eq!(logfmt_field(warning, "level"), Some("warn"), "{warning}");
    assert!(warning.contains("hidden=\"the status page\""), "{warning}");
    drop(daemon);

    let daemon = Daemon::spawn(&["--demo"]);
    let log = daemon.stop();
    assert!(
        !log.contains("--web.telemetry-path"),
        "no warning by default:\n{log}"
    );
}
