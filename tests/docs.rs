//! The documentation is tested, so that none of it rots: README.md and every docs/**/*.md.
//!
//! - Every shell command (the lines of ```sh blocks, the `$ ` lines of ```console blocks) is
//!   either run here or listed in [`ELSEWHERE`], which names the CI step that runs it (checked to
//!   be in that script) or, for the few that cannot run on a CI machine (root on a systemd host,
//!   a Docker engine), why not and which test checks the files they use (checked to exist). A
//!   command in neither fails the test, and so does an entry of [`ELSEWHERE`] no doc has.
//! - The commands run here run document by document, in order, in a fresh directory with the
//!   debug binary first on PATH. An HTML comment before a block tells the test more (invisible
//!   when the Markdown is rendered):
//!   - `<!-- docs-test: serve -->`: the block's one command is a daemon: it is started, must log
//!     where it listens and answer `/-/ready` with 200, and keeps running for the following
//!     commands of the document, until the next `serve` or the end of the document, when it gets
//!     SIGTERM and must exit 0.
//!   - `<!-- docs-test: file NAME -->`: the block is written to NAME in the directory. With
//!     `simulated`, every account in it is pointed at an EngageLab simulator that this test
//!     starts (its only change: `base_url`), which knows the account's `dev_key` with the secret
//!     [`WALKTHROUGH_SECRET`].
//!   - [`FIXTURES`] prepares the input files some documents' commands convert (PayBy's keys).
//! - Every YAML block is a configuration and must pass `--config.check`: an exporter
//!   configuration (or a list of accounts, checked under `accounts:`), with every `*_file` it
//!   names created (absolute paths under the temporary directory: the only change) and every
//!   `*_env` set; or a `--web.config.file` file, with the certificates it names generated.
//! - Every relative Markdown link in README.md, CONTRIBUTING.md and docs/ resolves, `#anchors`
//!   included; every provider has its page in docs/providers/, and README.md links every page
//!   there.
//! - The reference tables follow the binary: docs/configuration.md lists exactly the flags of
//!   `--help`, and docs/metrics.md every `balance_*` family the demo exports.
//! - `docker build` cannot run here (no Docker engine), so the build context `.dockerignore`
//!   leaves is checked to be a locked cargo package with every target file the build needs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use balance_exporter::providers::PROVIDERS;
use balance_exporter::providers::engagelab::Product;
use balance_exporter::providers::engagelab::sim::{EngageLabSim, SimAccount};
use balance_exporter::sim::{Ledger, SimServer};
use common::tls::TestCa;
use common::{Process, TempDir, describe, logfmt_field, tool};
use serde_yaml::{Mapping, Value};

/// Who runs a documented command that this test does not run.
enum RunBy {
    /// A CI script that runs it: `script` (a path in the repository) contains `line`.
    Ci {
        script: &'static str,
        line: &'static str,
    },
    /// A test (`tests/<file>.rs::<test>`) runs it itself, on copies of the files it changes.
    Test { runs_it: &'static str },
    /// It cannot run on a CI machine (`why`); `checked_by` (`tests/<file>.rs::<test>`) checks
    /// the files it uses.
    NotRunnable {
        why: &'static str,
        checked_by: &'static str,
    },
}

use RunBy::{Ci, NotRunnable, Test};

const RUNBOOK_REWRITE: &str =
    "tests/rules_and_dashboards.rs::the_documented_runbook_rewrite_repoints_every_link";
const NO_DOCKER: &str = "needs a Docker engine (CI machines have the docker-compose client only)";
const NO_SYSTEMD: &str = "needs root on a host run by systemd";

/// The documented commands run by something else than this test, exactly as the docs write
/// them (comments removed, continuation lines joined with a space).
const ELSEWHERE: &[(&str, RunBy)] = &[
    // Repointing the runbook links edits the repository's rule files in place.
    (
        "BASE=https://github.com/balance-exporter/balance_exporter/blob/main/deploy/prometheus/RUNBOOK.md",
        Test {
            runs_it: RUNBOOK_REWRITE,
        },
    ),
    (
        "sed -i \"s|$BASE|https://wiki.example.com/sre/balance_exporter/RUNBOOK.md|\" deploy/prometheus/alerts.yml deploy/prometheus/alerts.test.yml deploy/kubernetes/prometheusrule.yaml",
        Test {
            runs_it: RUNBOOK_REWRITE,
        },
    ),
    (
        "promtool test rules deploy/prometheus/alerts.test.yml",
        Test {
            runs_it: RUNBOOK_REWRITE,
        },
    ),
    (
        "cargo install --locked --path .",
        Ci {
            script: ".ci/run",
            // The same install, into a temporary root instead of ~/.cargo.
            line: "cargo install --locked --path . --root",
        },
    ),
    (
        "cargo test",
        Ci {
            script: ".ci/run",
            // Every test `cargo test` runs, and the ignored ones.
            line: "cargo test -- --include-ignored",
        },
    ),
    (
        "cargo test -- --include-ignored",
        Ci {
            script: ".ci/run",
            line: "cargo test -- --include-ignored",
        },
    ),
    (
        "cargo test --test soak -- --ignored --nocapture",
        Ci {
            script: ".ci/run",
            // tests/soak.rs among the ignored tests.
            line: "cargo test -- --include-ignored",
        },
    ),
    (
        "cargo fmt --check",
        Ci {
            script: ".ci/run",
            line: "cargo fmt --check",
        },
    ),
    (
        "rustfmt --check --edition 2024 src/providers/*/mod.rs",
        Ci {
            script: ".ci/run",
            line: "rustfmt --check --edition 2024 src/providers/*/mod.rs",
        },
    ),
    (
        "cargo clippy --all-targets -- -D warnings",
        Ci {
            script: ".ci/run",
            line: "cargo clippy --all-targets -- -D warnings",
        },
    ),
    (
        ".ci/run",
        Ci {
            // The CI entry point: what a CI job runs.
            script: ".ci/run",
            line: "set -euo pipefail",
        },
    ),
    (
        ".ci/lean",
        Ci {
            script: ".ci/run",
            line: ".ci/lean",
        },
    ),
    (
        "cargo build --release --locked --no-default-features",
        Ci {
            // The same features; .ci/lean builds them in the debug profile.
            script: ".ci/lean",
            line: "cargo build --no-default-features",
        },
    ),
    (
        "docker build -f deploy/docker/Dockerfile --build-arg REVISION=$(git rev-parse HEAD) --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) -t balance_exporter .",
        NotRunnable {
            why: NO_DOCKER,
            checked_by: "tests/docs.rs::the_docker_build_context_is_a_locked_cargo_package",
        },
    ),
    (
        "docker run -d -p 9863:9863 --read-only -v /etc/balance_exporter/balance_exporter.yml:/etc/balance_exporter/balance_exporter.yml:ro -v /etc/balance_exporter/secrets:/run/secrets/balance_exporter:ro balance_exporter",
        NotRunnable {
            why: NO_DOCKER,
            checked_by: "tests/deploy.rs::dockerfile_runs_the_binary_unprivileged_on_the_default_port",
        },
    ),
    (
        "docker compose -f deploy/docker-compose.yml up --build",
        NotRunnable {
            why: NO_DOCKER,
            checked_by: "tests/deploy.rs::docker_compose_config_accepts_the_compose_file",
        },
    ),
    (
        "docker run -p 3000:3000 -e PROMETHEUS_URL=http://prometheus.example:9090 -v \"$PWD/grafana/provisioning:/etc/grafana/provisioning\" -v \"$PWD/grafana/dashboards:/var/lib/grafana/dashboards/balance-exporter\" grafana/grafana",
        NotRunnable {
            why: NO_DOCKER,
            checked_by: "tests/deploy.rs::compose_file_wires_the_demo_prometheus_alertmanager_and_grafana",
        },
    ),
    (
        "install -m 0755 ~/.cargo/bin/balance_exporter /usr/local/bin/",
        NotRunnable {
            why: NO_SYSTEMD,
            checked_by: "tests/deploy.rs::systemd_analyze_verifies_the_unit",
        },
    ),
    (
        "install -D -m 0644 balance_exporter.yml /etc/balance_exporter/balance_exporter.yml",
        NotRunnable {
            why: NO_SYSTEMD,
            checked_by: "tests/deploy.rs::systemd_example_config_passes_config_check_with_the_units_credentials",
        },
    ),
    (
        "install -D -m 0600 -t /etc/balance_exporter/credentials engagelab_dev_secret uqpay_api_key",
        NotRunnable {
            why: NO_SYSTEMD,
            checked_by: "tests/deploy.rs::systemd_analyze_verifies_the_unit",
        },
    ),
    (
        "install -m 0644 deploy/systemd/balance_exporter.service /etc/systemd/system/",
        NotRunnable {
            why: NO_SYSTEMD,
            checked_by: "tests/deploy.rs::systemd_analyze_verifies_the_unit",
        },
    ),
    (
        "systemctl daemon-reload && systemctl enable --now balance_exporter",
        NotRunnable {
            why: NO_SYSTEMD,
            checked_by: "tests/deploy.rs::systemd_analyze_verifies_the_unit",
        },
    ),
    (
        "systemctl reload balance_exporter",
        NotRunnable {
            why: NO_SYSTEMD,
            checked_by: "tests/deploy.rs::systemd_unit_is_sandboxed_and_reloads_with_sighup",
        },
    ),
];

/// The secret of every account of a `simulated` file: what the walkthrough writes to its
/// secret file.
const WALKTHROUGH_SECRET: &str = "your-dev-secret";

/// Shell commands run in a document's directory before its commands: the files it starts
/// from. `$REPO` is the repository.
const FIXTURES: &[(&str, &str)] = &[(
    "docs/providers/payby.md",
    r#"set -e
openssl pkey -in "$REPO/testdata/payby/merchant_private_key_pkcs8.pem" -outform DER | base64 -w0 > merchant_key.txt
printf 'docs-test passphrase\n' > passphrase.txt
openssl pkey -in "$REPO/testdata/payby/merchant_private_key_pkcs8.pem" -aes256 -passout file:passphrase.txt -out encrypted.pem
cp "$REPO/testdata/payby/merchant_private_key_pkcs1.pem" rsa_key.pem
openssl pkey -pubin -in "$REPO/testdata/payby/payby_public_key.pem" -outform DER | base64 -w0 > payby_public.txt
openssl req -x509 -new -key "$REPO/testdata/payby/merchant_private_key_pkcs8.pem" -subj /CN=payby-docs-test -days 1 -out payby_cert.pem
"#,
)];

/// How long one documented command may take: they are all quick, and one that hangs is a
/// daemon that needs `<!-- docs-test: serve -->`.
const COMMAND_PATIENCE: Duration = Duration::from_secs(60);
/// How long a daemon may take to be ready (the demo polls every simulated account first).
const READY_PATIENCE: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md and every Markdown file under docs/, as paths relative to the repository.
fn documents() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut files);
    files
        .iter()
        .map(|f| {
            f.strip_prefix(repo())
                .expect("under the repository")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// A fenced code block of a document.
struct Block {
    /// `file:line` of its opening fence.
    at: String,
    /// The info string's first word (`sh`, `yaml`...).
    lang: String,
    body: String,
    /// The words of a `<!-- docs-test: ... -->` comment on the line before the fence.
    annotation: Vec<String>,
}

fn blocks(doc: &str) -> Vec<Block> {
    let text = read(&repo().join(doc));
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let Some(info) = line.trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let annotation = (i > 0)
            .then(|| lines[i - 1].trim())
            .and_then(|l| l.strip_prefix("<!-- docs-test:"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let start = i;
        let mut body = String::new();
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            // Blocks inside a list item are indented like the fence.
            let l = lines[i];
            let cut = indent.min(l.len() - l.trim_start().len());
            body.push_str(&l[cut..]);
            body.push('\n');
            i += 1;
        }
        assert!(i < lines.len(), "{doc}:{}: unclosed code block", start + 1);
        i += 1;
        out.push(Block {
            at: format!("{doc}:{}", start + 1),
            lang: info.split_whitespace().next().unwrap_or("").to_owned(),
            body,
            annotation,
        });
    }
    out
}

/// `line` without a trailing shell comment (a `#` outside quotes, after a blank).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return line[..i].trim_end(),
            _ => {}
        }
        previous = c;
    }
    line.trim_end()
}

/// The commands of a shell block: one per line, continuation lines joined, comments removed.
fn commands(block: &Block) -> Vec<String> {
    let console = block.lang == "console";
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    for raw in block.body.lines() {
        let line = match (&pending, console) {
            (Some(_), _) | (None, false) => raw,
            (None, true) => match raw.strip_prefix("$ ") {
                Some(command) => command,
                None => continue, // output
            },
        };
        let line = strip_comment(line.trim());
        if let Some(head) = line.strip_suffix('\\') {
            let joined = pending.take().unwrap_or_default() + head.trim_end() + " ";
            pending = Some(joined);
            continue;
        }
        let command = pending.take().unwrap_or_default() + line;
        if !command.is_empty() {
            assert!(
                !command.contains("<<"),
                "{}: here-documents are not supported: {command}",
                block.at
            );
            out.push(command);
        }
    }
    assert!(
        pending.is_none(),
        "{}: a continuation line ends the block",
        block.at
    );
    out
}

fn is_shell(block: &Block) -> bool {
    matches!(block.lang.as_str(), "sh" | "bash" | "shell" | "console")
}

// ---------------------------------------------------------------------------------------------
// The table of commands run elsewhere.

#[test]
fn every_command_run_elsewhere_is_in_the_docs_and_its_runner_exists() {
    let documented: BTreeSet<String> = documents()
        .iter()
        .flat_map(|doc| blocks(doc))
        .filter(is_shell)
        .flat_map(|b| commands(&b))
        .collect();
    for (command, run_by) in ELSEWHERE {
        assert!(
            documented.contains(*command),
            "ELSEWHERE lists `{command}`, which no document has any more: remove it"
        );
        match run_by {
            Ci { script, line } => {
                let text = read(&repo().join(script));
                assert!(
                    text.lines()
                        .any(|l| !l.trim_start().starts_with('#') && l.contains(line)),
                    "`{command}`: {script} has no line running `{line}`"
                );
            }
            Test { runs_it } => {
                let (file, test) = runs_it
                    .split_once("::")
                    .unwrap_or_else(|| panic!("{runs_it}: expected tests/<file>.rs::<test>"));
                let text = read(&repo().join(file));
                assert!(
                    text.contains(&format!("fn {test}()")),
                    "`{command}`: {file} has no test {test}"
                );
            }
            NotRunnable { why, checked_by } => {
                assert!(!why.is_empty());
                let (file, test) = checked_by
                    .split_once("::")
                    .unwrap_or_else(|| panic!("{checked_by}: expected tests/<file>.rs::<test>"));
                let text = read(&repo().join(file));
                assert!(
                    text.contains(&format!("fn {test}()")),
                    "`{command}`: {file} has no test {test}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running the commands.

/// A daemon started by a `serve` block.
struct Served {
    process: Process,
    command: String,
}

impl Served {
    fn start(command: &str, dir: &Path, path: &str, at: &str) -> Served {
        let mut sh = Command::new("bash");
        // exec: the signal goes to the daemon, not to a shell.
        sh.args(["-c", &format!("exec {command}")])
            .current_dir(dir)
            .env("PATH", path)
            .stdin(Stdio::null());
        let mut process = Process::spawn(command, sh);
        let line = process
            .wait_for_line_within(READY_PATIENCE, |l| l.contains("msg=listening"))
            .clone();
        let port = logfmt_field(&line, "address")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("{at}: `{command}`: no address in {line:?}"))
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + READY_PATIENCE;
        while http_status(addr, "/-/ready") != Some(200) {
            assert!(
                process.is_running(),
                "{at}: `{command}` exited:\n{}",
                process.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "{at}: `{command}` not ready within {READY_PATIENCE:?}:\n{}",
                process.log_text()
            );
            // Readiness is a state to poll for, not an event in the log.
            std::thread::sleep(Duration::from_millis(100));
        }
        Served {
            process,
            command: command.to_owned(),
        }
    }

    /// SIGTERM, and the daemon must exit 0.
    fn stop(mut self, at: &str) {
        self.process.signal("TERM");
        let status = self.process.wait_exit_within(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "{at}: `{}` did not exit 0 on SIGTERM ({status:?}):\n{}",
            self.command,
            self.process.log_text()
        );
    }
}

/// The status of a plain `GET path`, or None when nothing answers.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::Write;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Runs `command` with bash in `dir` and fails the test unless it exits 0.
fn run_command(command: &str, dir: &Path, path: &str, at: &str) {
    let mut child = Command::new("bash")
        .args(["-c", command])
        .current_dir(dir)
        .env("PATH", path)
        .env("REPO", repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{at}: starting bash: {e}"));
    let deadline = Instant::now() + COMMAND_PATIENCE;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{at}: `{command}` still running after {COMMAND_PATIENCE:?}: a daemon needs \
                 `<!-- docs-test: serve -->` before its block\n{}",
                describe(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{at}: `{command}` failed:\n{}",
        describe(&out)
    );
}

/// Writes a `file NAME [simulated]` block into `dir`.
fn write_file(block: &Block, dir: &Path, sims: &mut Vec<SimServer>, rt: &tokio::runtime::Runtime) {
    let name = block.annotation.get(1).unwrap_or_else(|| {
        panic!("{}: `docs-test: file` needs a file name", block.at);
    });
    let mut text = block.body.clone();
    if block.annotation.iter().any(|w| w == "simulated") {
        let mut config: Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", block.at));
        let sim = EngageLabSim::new(Product::Sms);
        let server = rt
            .block_on(sim.start())
            .expect("start the EngageLab simulator");
        let accounts = config["accounts"]
            .as_sequence_mut()
            .unwrap_or_else(|| panic!("{}: a simulated file needs accounts", block.at));
        for account in accounts {
            let at = &block.at;
            assert_eq!(
                account["provider"].as_str(),
                Some("engagelab"),
                "{at}: only EngageLab SMS accounts can be simulated"
            );
            assert_eq!(account["product"].as_str(), Some("sms"), "{at}");
            let key = account["dev_key"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: no dev_key"));
            sim.add_account(
                key,
                SimAccount::new(
                    WALKTHROUGH_SECRET,
                    Ledger::fixed("1234.56".parse().expect("decimal")),
                    Ledger::fixed("10".parse().expect("decimal")),
                ),
            );
            account
                .as_mapping_mut()
                .expect("an account is a mapping")
                .insert("base_url".into(), server.base_url().into());
        }
        text = serde_yaml::to_string(&config).expect("YAML");
        sims.push(server);
    }
    std::fs::write(dir.join(name), text).expect("write the file");
}

#[test]
fn every_command_in_the_docs_runs_or_is_run_elsewhere() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_balance_exporter"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let path = path.to_string_lossy().into_owned();
    let elsewhere: BTreeMap<&str, &RunBy> = ELSEWHERE.iter().map(|(c, r)| (*c, r)).collect();
    let mut ran = 0;
    for doc in documents() {
        let all = blocks(&doc);
        let runs_here = all
            .iter()
            .filter(|b| is_shell(b))
            .flat_map(commands)
            .any(|c| !elsewhere.contains_key(c.as_str()));
        if !runs_here {
            continue;
        }
        let used: Vec<String> = all.iter().flat_map(commands_if_shell).collect();
        let missing = TOOLS.iter().any(|(name, package)| {
            used.iter().any(|c| uses(c, name)) && tool(name, package).is_none()
        });
        if missing {
            continue;
        }
        let dir = TempDir::new("docs");
        let mut sims = Vec::new();
        if let Some((_, fixture)) = FIXTURES.iter().find(|(d, _)| *d == doc) {
            run_command(fixture, &dir.0, &path, &format!("{doc} (fixture)"));
        }
        let mut served: Option<Served> = None;
        for block in &all {
            match block.annotation.first().map(String::as_str) {
                Some("file") => write_file(block, &dir.0, &mut sims, &rt),
                Some("serve") => {
                    let cmds = commands(block);
                    assert_eq!(cmds.len(), 1, "{}: a serve block has one command", block.at);
                    if let Some(previous) = served.take() {
                        previous.stop(&block.at);
                    }
                    served = Some(Served::start(&cmds[0], &dir.0, &path, &block.at));
                    eprintln!("{}: serving `{}`", block.at, cmds[0]);
                    ran += 1;
                }
                Some(other) => panic!("{}: unknown `docs-test: {other}`", block.at),
                None if is_shell(block) => {
                    for command in commands(block) {
                        if !elsewhere.contains_key(command.as_str()) {
                            run_command(&command, &dir.0, &path, &block.at);
                            eprintln!("{}: ran `{command}`", block.at);
                            ran += 1;
                        }
                    }
                }
                None => {}
            }
        }
        if let Some(daemon) = served.take() {
            daemon.stop(&format!("{doc} (end)"));
        }
    }
    // The README's quick start and walkthrough alone are more than this.
    assert!(ran >= 6, "only {ran} documented commands ran");
}

/// The outside tools documented commands use, with their Debian package: a page whose
/// commands use a missing one is skipped (a failure in CI, like every missing tool).
const TOOLS: &[(&str, &str)] = &[("openssl", "openssl"), ("curl", "curl")];

/// Whether `command` runs `tool` (as a word at the start of the command or of a pipeline
/// stage).
fn uses(command: &str, tool: &str) -> bool {
    command
        .split(['|', ';', '&'])
        .any(|stage| stage.split_whitespace().next() == Some(tool))
}

fn commands_if_shell(block: &Block) -> Vec<String> {
    if is_shell(block) {
        commands(block)
    } else {
        Vec::new()
    }
}

// ---------------------------------------------------------------------------------------------
// YAML configurations.

/// What a `*_file` or `*_env` secret of `key` holds for the check: PayBy's keys must parse,
/// Stripe's key must look like one.
fn secret_for(provider: &str, key: &str, ca: &TestCa) -> String {
    let stem = key
        .strip_suffix("_file")
        .or_else(|| key.strip_suffix("_env"))
        .unwrap_or(key);
    match (provider, stem) {
        ("stripe", "api_key") => "rk_test_docsTestSecret\n".to_owned(),
        (_, "private_key") => read(&repo().join("testdata/payby/merchant_private_key_pkcs8.pem")),
        (_, "payby_public_key") => read(&repo().join("testdata/payby/payby_public_key.pem")),
        (_, "ca") => ca.cert_pem.clone(),
        _ => "docs-test-secret\n".to_owned(),
    }
}

/// Creates every file the accounts of `config` name (under `dir`, absolute paths rebased
/// there) and returns the environment variables they name.
fn provide_secrets(config: &mut Value, dir: &Path, ca: &TestCa) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let Some(accounts) = config.get_mut("accounts").and_then(Value::as_sequence_mut) else {
        return env;
    };
    for account in accounts.iter_mut().filter_map(Value::as_mapping_mut) {
        let provider = account
            .get("provider")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        provide_in(&provider, account, dir, ca, &mut env);
    }
    env
}

/// [`provide_secrets`] for one mapping and the mappings nested in it (`http_json`'s `auth:`).
fn provide_in(
    provider: &str,
    map: &mut Mapping,
    dir: &Path,
    ca: &TestCa,
    env: &mut Vec<(String, String)>,
) {
    let keys: Vec<String> = map
        .keys()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    for key in keys {
        if let Some(nested) = map.get_mut(key.as_str()).and_then(Value::as_mapping_mut) {
            provide_in(provider, nested, dir, ca, env);
            continue;
        }
        let Some(value) = map.get(key.as_str()).and_then(Value::as_str) else {
            continue;
        };
        if key.ends_with("_file") {
            let file = dir.join(value.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&file, secret_for(provider, &key, ca)).expect("write a secret file");
            map.insert(key.as_str().into(), file.to_string_lossy().as_ref().into());
        } else if key.ends_with("_env") {
            let secret = secret_for(provider, &key, ca);
            // A variable holds the secret itself, without a file's trailing newline.
            env.push((value.to_owned(), secret.trim_end().to_owned()));
        }
    }
}

fn config_check(args: &[&str], dir: &Path, env: &[(String, String)], at: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_balance_exporter"))
        .args(args)
        .arg("--config.check")
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{at}: --config.check refuses the block:\n{}",
        describe(&out)
    );
}

#[test]
fn every_yaml_block_passes_config_check() {
    let ca = TestCa::new("docs-test CA");
    let mut checked = 0;
    for doc in documents() {
        for block in blocks(&doc)
            .iter()
            .filter(|b| b.lang == "yaml" || b.lang == "yml")
        {
            let at = &block.at;
            let value: Value =
                serde_yaml::from_str(&block.body).unwrap_or_else(|e| panic!("{at}: not YAML: {e}"));
            let dir = TempDir::new("docs-yaml");
            let is_account_list = value
                .as_sequence()
                .is_some_and(|s| !s.is_empty() && s.iter().all(|a| a.get("provider").is_some()));
            let web_keys = [
                "tls_server_config",
                "basic_auth_users",
                "http_server_config",
            ];
            if value.get("accounts").is_some() || is_account_list {
                let mut config = if is_account_list {
                    let mut top = Mapping::new();
                    top.insert("accounts".into(), value);
                    Value::Mapping(top)
                } else {
                    value
                };
                let env = provide_secrets(&mut config, &dir.0, &ca);
                dir.write("config.yml", &serde_yaml::to_string(&config).expect("YAML"));
                config_check(&["--config.file", "config.yml"], &dir.0, &env, at);
            } else if web_keys.iter().any(|k| value.get(k).is_some()) {
                let tls = &value["tls_server_config"];
                let leaf = ca.server();
                for (key, pem) in [
                    ("cert_file", &leaf.cert_pem),
                    ("key_file", &leaf.key_pem),
                    ("client_ca_file", &ca.cert_pem),
                ] {
                    if let Some(name) = tls.get(key).and_then(Value::as_str) {
                        assert!(!name.starts_with('/'), "{at}: {key}: use a relative path");
                        dir.write(name, pem);
                    }
                }
                dir.write("web.yml", &block.body);
                dir.write(
                    "config.yml",
                    "accounts:\n  - {name: a, provider: engagelab, product: sms, dev_key: k, dev_secret_env: S}\n",
                );
                let env = [("S".to_owned(), "s".to_owned())];
                let args = [
                    "--config.file",
                    "config.yml",
                    "--web.config.file",
                    "web.yml",
                ];
                config_check(&args, &dir.0, &env, at);
            } else {
                panic!(
                    "{at}: a YAML block that is neither an exporter configuration (accounts) nor \
                     a --web.config.file file: tests/docs.rs cannot check it"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} YAML blocks checked");
}

// ---------------------------------------------------------------------------------------------
// Links.

/// GitHub's anchor of a heading: lower case, punctuation dropped, blanks as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let Some(heading) = (!in_code)
            .then(|| line.strip_prefix('#'))
            .flatten()
            .map(|h| h.trim_start_matches('#'))
            .filter(|h| h.starts_with(' '))
        else {
            continue;
        };
        let base = slug(&heading.replace('`', ""));
        let n = seen.entry(base.clone()).or_default();
        out.insert(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

/// The targets of the inline links `[text](target)` of a Markdown text, outside code blocks
/// and code spans, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Code spans hold no links.
        let prose: String = line
            .split('`')
            .enumerate()
            .map(|(i, part)| if i % 2 == 0 { part } else { "" })
            .collect();
        let mut rest = prose.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let end = after.find(')').unwrap_or(after.len());
            out.push((n + 1, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    out
}

/// Files the README links that another branch of this change produces; each is removed from
/// here when it lands (the test fails once it exists, as a reminder).
const AWAITED: &[&str] = &[];

#[test]
fn every_relative_link_resolves() {
    let mut files = documents();
    files.push("CONTRIBUTING.md".to_owned());
    let mut checked = 0;
    for file in &files {
        let text = read(&repo().join(file));
        let dir = repo().join(file).parent().expect("a parent").to_path_buf();
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") || target.starts_with('<') {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if path.is_empty() {
                repo().join(file)
            } else {
                dir.join(path)
            };
            if AWAITED.contains(&path) && dir == repo() {
                assert!(
                    !resolved.exists(),
                    "{path} exists now: remove it from AWAITED in tests/docs.rs"
                );
                continue;
            }
            assert!(
                resolved.exists(),
                "{file}:{line}: link to {target}: {} does not exist",
                resolved.display()
            );
            if !anchor.is_empty() {
                assert!(
                    resolved.extension().is_some_and(|e| e == "md"),
                    "{file}:{line}: an anchor into a file that is not Markdown: {target}"
                );
                let known = anchors(&read(&resolved));
                assert!(
                    known.contains(anchor),
                    "{file}:{line}: {target}: no heading #{anchor} (there are: {known:?})"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} links checked");
}

#[test]
fn every_provider_has_a_page_and_the_readme_lists_every_page() {
    let dir = repo().join("docs/providers");
    let pages: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("docs/providers")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    for provider in PROVIDERS {
        assert!(
            pages.contains(&format!("{}.md", provider.name)),
            "provider {} has no docs/providers/{}.md",
            provider.name,
            provider.name
        );
    }
    let readme_links: BTreeSet<String> = links(&read(&repo().join("README.md")))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    for page in &pages {
        assert!(
            readme_links.contains(&format!("docs/providers/{page}")),
            "README.md's provider table does not link docs/providers/{page}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The readers above, on small texts: a bug in them would let a command or a link go unchecked.

fn block(lang: &str, body: &str) -> Block {
    Block {
        at: "test".to_owned(),
        lang: lang.to_owned(),
        body: body.to_owned(),
        annotation: Vec::new(),
    }
}

#[test]
fn commands_are_read_line_by_line_with_continuations_and_without_comments() {
    let sh = block(
        "sh",
        "# a comment line\ncurl -s 'http://x/#frag' | grep '#'   # a comment\n\n\
         docker run -d \\\n  -v a:b \\\n  image\n",
    );
    assert_eq!(
        commands(&sh),
        [
            "curl -s 'http://x/#frag' | grep '#'",
            "docker run -d -v a:b image"
        ]
    );
    let console = block(
        "console",
        "$ balance_exporter --once\nbalance_up 1\n$ echo done\n",
    );
    assert_eq!(commands(&console), ["balance_exporter --once", "echo done"]);
}

#[test]
fn anchors_are_githubs_with_duplicates_numbered() {
    let text = "# Operating it\n## `--once` and reload\n```sh\n# not a heading\n```\n## Reload\n## Reload\n";
    let found = anchors(text);
    let want: BTreeSet<String> = ["operating-it", "--once-and-reload", "reload", "reload-1"]
        .map(str::to_owned)
        .into();
    assert_eq!(found, want);
}

#[test]
fn links_are_found_outside_code() {
    let text =
        "see [a](docs/a.md#x) and `[b](b.md)`\n```\n[c](c.md)\n```\n[d](<e>) [f](https://x)\n";
    let found: Vec<String> = links(text).into_iter().map(|(_, t)| t).collect();
    assert_eq!(found, ["docs/a.md#x", "<e>", "https://x"]);
}

// ---------------------------------------------------------------------------------------------
// The metrics page.

/// The metric names of docs/metrics.md's table (its first column).
fn documented_metrics() -> BTreeSet<String> {
    read(&repo().join("docs/metrics.md"))
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .filter(|name| name.starts_with("balance_"))
        .collect()
}

#[test]
fn the_metrics_page_lists_every_metric_the_demo_exports() {
    let documented = documented_metrics();
    let daemon = common::Daemon::spawn(&["--demo"]);
    let deadline = Instant::now() + READY_PATIENCE;
    while http_status(daemon.addr, "/-/ready") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the demo is not ready:\n{}",
            daemon.log_text()
        );
        // Readiness is a state to poll for, not an event in the log.
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (status, body) = rt.block_on(common::get(daemon.addr, "/metrics"));
    assert_eq!(status, 200);
    let exported: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("balance_"))
        .map(str::to_owned)
        .collect();
    assert!(exported.len() >= 10, "the demo exported only {exported:?}");
    let undocumented: Vec<&String> = exported.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "docs/metrics.md does not list {undocumented:?}"
    );
    // What the demo did not export (a poller restart...) must at least exist in the code.
    fn sources(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&read(&path));
            }
        }
    }
    let mut source = String::new();
    sources(&repo().join("src"), &mut source);
    for name in documented.difference(&exported) {
        assert!(
            source.contains(&format!("\"{name}\"")),
            "docs/metrics.md lists {name}, which no source file has"
        );
    }
    daemon.stop();
}

// ---------------------------------------------------------------------------------------------
// The flags.

/// The long flags in `text`: `--name` tokens (lower case, dots and hyphens).
fn long_flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        .filter(|t| t.starts_with("--") && t.len() > 2 && !t[2..].starts_with('-'))
        .map(|t| t.trim_end_matches('.').to_owned())
        .collect()
}

#[test]
fn the_configuration_page_lists_exactly_the_flags_of_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_balance_exporter"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{}", describe(&out));
    let help: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .flat_map(long_flags)
        .collect();
    assert!(
        help.contains("--config.file"),
        "--help has no flags? {help:?}"
    );
    let page = read(&repo().join("docs/configuration.md"));
    let table: BTreeSet<String> = page
        .lines()
        .filter(|l| l.starts_with("| `-"))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(long_flags)
        .collect();
    assert_eq!(
        table, help,
        "docs/configuration.md's flag table (left) and --help (right) differ"
    );
}

// ---------------------------------------------------------------------------------------------
// The container image's build context (no Docker engine runs `docker build` in CI).

/// Whether `rel` (a path in the repository, `/`-separated) is left out by one of the
/// `.dockerignore` patterns this test understands: a path (and everything under it) or
/// `**/*<suffix>`.
fn docker_ignored(rel: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_prefix("**/*") {
        Some(suffix) => rel.ends_with(suffix),
        None => {
            assert!(
                !p.contains('*'),
                ".dockerignore: tests/docs.rs cannot read {p:?}"
            );
            rel == p || rel.starts_with(&format!("{p}/"))
        }
    })
}

fn copy_context(from: &Path, rel: &str, to: &Path, patterns: &[String]) {
    for entry in std::fs::read_dir(from.join(rel)).expect("read a directory") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if docker_ignored(&child, patterns) {
            continue;
        }
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(to.join(&child)).expect("mkdir");
            copy_context(from, &child, to, patterns);
        } else {
            std::fs::copy(entry.path(), to.join(&child)).expect("copy");
        }
    }
}

#[test]
fn the_docker_build_context_is_a_locked_cargo_package() {
    let patterns: Vec<String> = read(&repo().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(
        docker_ignored("target/debug/x", &patterns),
        "target is in the context"
    );
    let context = TempDir::new("docker-context");
    copy_context(&repo(), "", &context.0, &patterns);
    // What the Dockerfile's `cargo build --release --locked` needs from the context: a manifest
    // whose every target file is there, and a Cargo.lock it need not change.
    // Offline, so only this platform's dependencies (those the build has fetched).
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names its host");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        // `fetch` reads the manifest as a build does (every target's file must exist) and,
        // with --locked, refuses a Cargo.lock that would change.
        .args(["fetch", "--locked", "--offline", "--target", &host])
        .current_dir(&context.0)
        .env("CARGO_TARGET_DIR", context.0.join("target"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "the build context of deploy/docker/Dockerfile is not a locked cargo package:\n{}",
        describe(&out)
    );
    let dockerfile = read(&repo().join("deploy/docker/Dockerfile"));
    assert!(
        dockerfile.contains("cargo build --release --locked --bin balance_exporter"),
        "the Dockerfile's build step changed: update this test"
    );
}
