//! Shared integration-test harness: the exporter in-process or as its binary, serving on
//! loopback, read over HTTP as Prometheus reads it. Tests wait on poll events or log lines,
//! never on the clock; the timeouts here only bound a test that would otherwise hang.
#![allow(dead_code)]

pub mod tls;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use balance_exporter::clock::Clock;
use balance_exporter::config::{self, Format};
use balance_exporter::metrics::Metrics;
use balance_exporter::scheduler::{PollEvent, Scheduler};
use balance_exporter::server::{self, Web};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// How long a test may wait for something that should happen in well under a second.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The exporter running in this process, its web server on an ephemeral loopback port.
pub struct Exporter {
    pub scheduler: Arc<Scheduler>,
    pub addr: SocketAddr,
    events: broadcast::Receiver<PollEvent>,
    /// Events of other accounts received while waiting for one account's.
    pending: Vec<PollEvent>,
    server: JoinHandle<()>,
}

impl Exporter {
    pub async fn start(yaml: &str) -> Exporter {
        Self::start_with_clock(yaml, Clock::system()).await
    }

    pub async fn start_with_clock(yaml: &str, clock: Clock) -> Exporter {
        let config = config::parse(yaml, Format::Yaml, Path::new("."))
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let scheduler = Scheduler::new(Metrics::new(), clock);
        let events = scheduler.subscribe();
        scheduler.apply(&config).expect("HTTP client");
        let listener = server::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let web = Arc::new(Web {
            scheduler: scheduler.clone(),
            telemetry_path: "/metrics".to_owned(),
            reload: None,
            lifecycle: false,
        });
        let server = tokio::spawn(balance_exporter::listener::accept_loop(
            listener,
            server::handler(web),
            std::future::pending(),
        ));
        Exporter {
            scheduler,
            addr,
            events,
            pending: Vec::new(),
            server,
        }
    }

    /// Waits for the next `n` polls of `account` to finish and returns their events.
    pub async fn polls(&mut self, account: &str, n: usize) -> Vec<PollEvent> {
        let mut out = Vec::new();
        self.pending.retain(|e| {
            let wanted = e.account == account && out.len() < n;
            if wanted {
                out.push(e.clone());
            }
            !wanted
        });
        let wait = async {
            while out.len() < n {
                match self.events.recv().await {
                    Ok(event) if event.account == account => out.push(event),
                    Ok(event) => self.pending.push(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("scheduler gone"),
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("{account} was not polled {n} times within {PATIENCE:?}"));
        out
    }

    /// Waits for the next poll of `account`.
    pub async fn poll(&mut self, account: &str) -> PollEvent {
        self.polls(account, 1).await.remove(0)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        get(self.addr, path).await
    }

    /// Scrapes `/metrics`.
    pub async fn scrape(&self) -> Exposition {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics");
        Exposition::parse(&body)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.abort();
        self.scheduler.stop();
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// One sample of the exposition: metric name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` body.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Exposition {
    pub fn parse(text: &str) -> Exposition {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("bad sample line {line:?}")))
            .collect();
        Exposition {
            text: text.to_owned(),
            samples,
        }
    }

    /// Samples of `name` whose labels include all of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample of `name` matching `labels`; `None` if there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.find(name, labels);
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches {} samples",
            found.len()
        );
        found.first().map(|s| s.value)
    }

    /// Like [`Exposition::value`], failing when the sample is absent.
    pub fn expect(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{}", self.text))
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series.to_owned(), BTreeMap::new()),
        Some((name, rest)) => (name.to_owned(), parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

fn parse_labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        text = &rest[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
    Some(labels)
}

/// The path of an external tool, or `None` (the test then skips, saying so) when it is not on
/// PATH. In CI (`BALANCE_EXPORTER_CI=1`) a missing tool fails the test instead, so CI never
/// skips. `package` is what to install to get it.
pub fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!("`{name}` not found on PATH (install {package})");
        assert!(
            std::env::var("BALANCE_EXPORTER_CI").as_deref() != Ok("1"),
            "{msg}; BALANCE_EXPORTER_CI=1 forbids skipping"
        );
        // Straight to stderr: libtest captures eprintln! of passing tests, and a skip must show.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
    }
    found
}

/// Asserts that `promtool check metrics` accepts `text` without a single warning.
pub fn assert_promtool_clean(text: &str) {
    let Some(promtool) = tool("promtool", "prometheus") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert_silent_success(&out, &format!("promtool check metrics on:\n{text}"));
}

/// Runs `program` with `args` in `dir` to completion.
pub fn run_in(program: &Path, args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

/// A finished tool's exit code and output, for a failure message.
pub fn describe(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that a tool succeeded and printed nothing: some tools report problems as warnings
/// and still exit 0.
pub fn assert_silent_success(out: &std::process::Output, what: &str) {
    let quiet = out
        .stdout
        .iter()
        .chain(&out.stderr)
        .all(u8::is_ascii_whitespace);
    assert!(
        out.status.success() && quiet,
        "{what} complained:\n{}",
        describe(out)
    );
}

/// A scratch directory removed at the end of the test.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "balance_exporter-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::time::SystemTime;
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A child process whose stderr is collected line by line, so that a test can wait for what
/// it logs. Killed and reaped when dropped, also when the test fails.
pub struct Process {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command` with its stderr piped to this process and its stdout discarded.
    pub fn spawn(name: &str, mut command: Command) -> Process {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let all = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Process {
            name: name.to_owned(),
            child,
            lines,
            log,
        }
    }

    /// Waits at most `patience` for a stderr line matching `matches` and returns it; fails
    /// with the log so far when the time runs out or the process exits first.
    pub fn wait_for_line_within(
        &mut self,
        patience: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{}: no matching log line within {patience:?}; log so far:\n{}",
                    self.name,
                    self.log_text()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "{} exited ({:?}) before logging a matching line; its log:\n{}",
                    self.name,
                    self.child.wait().map(|s| s.to_string()),
                    self.log_text()
                ),
            }
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it has not exited, or crashed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends signal `name` (`TERM`, `HUP`...) to the process.
    pub fn signal(&self, name: &str) {
        // The shell's own kill: no procps needed.
        let status = Command::new("sh")
            .args([
                "-c",
                "kill -s \"$0\" \"$1\"",
                name,
                &self.child.id().to_string(),
            ])
            .status()
            .expect("run sh");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits at most `patience` for the process to exit; `None` if it is still running.
    pub fn wait_exit_within(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the process and returns its whole log.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends with the pipe; drain what it still forwards.
        while self.lines.recv_timeout(Duration::from_secs(5)).is_ok() {}
        self.log_text()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a logfmt line (unquoted values only).
pub fn logfmt_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
}

/// The exporter binary running as a child process, its stderr collected line by line.
pub struct Daemon {
    process: Process,
    pub addr: SocketAddr,
}

impl Daemon {
    /// Starts the binary with `args` plus a loopback listen address, and waits for it to
    /// log where it listens.
    pub fn spawn(args: &[&str]) -> Daemon {
        Self::spawn_with_env(args, &[])
    }

    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_balance_exporter"));
        command
            .args(args)
            .args(["--web.listen-address", "127.0.0.1:0"])
            .envs(env.iter().copied());
        let mut process = Process::spawn("balance_exporter", command);
        let line = process.wait_for_line_within(PATIENCE, |l| l.contains("msg=listening"));
        let addr = logfmt_field(&line, "address")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no socket address in {line:?}"));
        Daemon { process, addr }
    }

    /// Waits for a stderr line matching `matches` and returns it.
    pub fn wait_for_line(&mut self, matches: impl Fn(&str) -> bool) -> String {
        self.process.wait_for_line_within(PATIENCE, matches)
    }

    /// Stops the daemon from async code (off the runtime, as it waits for the process) and
    /// returns its whole log.
    pub async fn stop_async(self) -> String {
        tokio::task::spawn_blocking(move || self.stop())
            .await
            .expect("stopping the daemon")
    }

    /// Waits until every one of `wanted` has matched some stderr line from now on.
    pub fn wait_for_each(&mut self, wanted: &[&dyn Fn(&str) -> bool]) {
        let mut seen = vec![false; wanted.len()];
        while seen.iter().any(|s| !s) {
            let line = self.wait_for_line(|l| wanted.iter().any(|w| w(l)));
            for (i, w) in wanted.iter().enumerate() {
                seen[i] |= w(&line);
            }
        }
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Sends signal `name` (`TERM`, `HUP`...) to the daemon.
    pub fn signal(&self, name: &str) {
        self.process.signal(name);
    }

    /// Waits at most `patience` for the daemon to exit; `None` if it is still running.
    pub fn wait_exit_within(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait_exit_within(patience)
    }

    /// Stops the daemon and returns its whole log.
    pub fn stop(self) -> String {
        self.process.stop()
    }
}

/// Matches the log line of a finished poll of `account` (succeeded or failed).
pub fn poll_logged(account: &str) -> impl Fn(&str) -> bool + use<> {
    let account = format!("account={account} ");
    move |line: &str| line.contains("msg=\"poll ") && line.contains(&account)
}

/// Matches the log line of a successful poll of `account` (logged at debug level).
pub fn poll_succeeded(account: &str) -> impl Fn(&str) -> bool + use<> {
    let account = format!("account={account} ");
    move |line: &str| line.contains("msg=\"poll succeeded\"") && line.contains(&account)
}

/// Runs the binary to completion: `(exit code, stdout, stderr)`.
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_balance_exporter"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run balance_exporter");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run_binary`] off the async runtime, so that an in-process simulator keeps answering.
pub async fn run_binary_async(
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_binary(&args, &env)
    })
    .await
    .unwrap()
}
