//! End to end (issue 5, proof 3): `balance_exporter --demo` scraped every 2 s by Debian's
//! `prometheus` with deploy/prometheus/alerts.yml loaded, alerting to Debian's
//! `prometheus-alertmanager` configured like deploy/alertmanager/alertmanager.yml (its routes
//! and inhibit rules; timings shortened, webhooks pointed at a server inside this test).
//!
//! Asserted:
//! - `BalanceLow` and then `BalanceCritical` of the draining demo account reach Alertmanager:
//!   delivered to the webhook of the receiver the example routes them to, listed by its API, and
//!   `BalanceLow` inhibited there once `BalanceCritical` fires;
//! - no alert is pending or firing in Prometheus, nor delivered, for any other demo account;
//! - every dashboard query, variables at All, returns at least one series.
//!
//! Everything listens on loopback ports the kernel picks (the tools log theirs), one deadline
//! bounds the test, and every process it starts is killed when it ends, also on failure.
//! Waiting is on events (log lines, webhook deliveries); only what nothing announces (alert
//! states, query results) is polled, every [`POLL_EVERY`].

mod common;
mod dashboards;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use balance_exporter::listener::{self, Handler};
use balance_exporter::providers::PROVIDERS;
use common::{Daemon, Process, TempDir, logfmt_field};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// The whole test, start to finish; the demo's account crosses its critical threshold after
/// about 4.5 minutes and the alert waits one more (`for: 1m`).
const DEADLINE: Duration = Duration::from_secs(12 * 60);
/// How often the APIs that announce nothing are asked.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// How long a tool may take to start listening.
const STARTUP: Duration = Duration::from_secs(60);
/// How much data Prometheus holds before the dashboards' queries are run: enough to fill
/// their 5-minute rate windows more than halfway, well before BalanceCritical can fire.
const DASHBOARD_DATA: Duration = Duration::from_secs(3 * 60);

/// The demo account that drains (total 125, 0.4/s; thresholds warning 100, critical 20).
const DRAINING: [(&str, &str); 4] = [
    ("provider", "engagelab"),
    ("account", "sms-main"),
    ("currency", "USD"),
    ("kind", "total"),
];
const DRAINING_ACCOUNT: &str = DRAINING[1].1;
/// Alerts the draining account may raise in Prometheus; only the first two may be delivered
/// (BalanceDepletingSoon waits 15 minutes, longer than this test).
const DRAINING_ALERTS: [&str; 3] = ["BalanceLow", "BalanceCritical", "BalanceDepletingSoon"];
/// BalanceExporterDown's job name (deploy/prometheus/prometheus.yml).
const JOB: &str = "balance_exporter";

#[test]
#[ignore = "end to end, about 5.5 min: needs prometheus and prometheus-alertmanager; run by .ci/run (cargo test -- --include-ignored)"]
fn demo_alerts_reach_alertmanager_and_dashboards_show_data() {
    let (Some(prometheus), Some(alertmanager)) = (
        common::tool("prometheus", "prometheus"),
        common::tool("prometheus-alertmanager", "prometheus-alertmanager"),
    ) else {
        return;
    };
    let clock = Clock::start();
    // Declared first, dropped last: the processes are killed before their files go.
    let dir = TempDir::new("e2e");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (webhook, deliveries) = start_webhook(&runtime);

    let mut exporter = Daemon::spawn(&["--demo", "--log.level", "debug"]);
    // Event-driven: the exporter logs every poll; each provider's demo answers one.
    let providers: Vec<String> = PROVIDERS
        .iter()
        .map(|p| format!("provider={} ", p.name))
        .collect();
    let polled: Vec<_> = providers
        .iter()
        .map(|p| move |l: &str| l.contains("msg=\"poll succeeded\"") && l.contains(p.as_str()))
        .collect();
    exporter.wait_for_each(
        &polled
            .iter()
            .map(|m| m as &dyn Fn(&str) -> bool)
            .collect::<Vec<_>>(),
    );
    clock.mark(&format!(
        "exporter at {} polled each provider's demo once",
        exporter.addr
    ));

    let (_alertmanager, am) = start_alertmanager(&alertmanager, &dir, webhook);
    clock.mark(&format!("alertmanager listening on {am}"));
    let (_prometheus, prom) = start_prometheus(&prometheus, &dir, exporter.addr, am);
    clock.mark(&format!("prometheus ready on {prom}"));

    let api = Api::new(runtime, prom, am);
    let mut progress = Progress::new(&clock, Instant::now() + DASHBOARD_DATA);
    let mut next_poll = Instant::now();
    while !progress.done() {
        assert!(
            clock.left() > Duration::ZERO,
            "not done within {DEADLINE:?}; still missing:\n- {}\nPrometheus' alerts now: {}\nexporter log tail:\n{}",
            progress.missing().join("\n- "),
            json!(api.prometheus_alerts()),
            tail(&exporter.log_text(), "target=balance_exporter", 20)
        );
        let wait = next_poll
            .saturating_duration_since(Instant::now())
            .min(clock.left());
        match deliveries.recv_timeout(wait) {
            Ok(delivery) => progress.delivered(delivery),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                progress.poll(&api);
                next_poll = Instant::now() + POLL_EVERY;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the webhook server stopped"),
        }
    }

    // Settled: nothing pending or firing but the draining account's, not even a target alert.
    for alert in api.prometheus_alerts() {
        assert!(
            label(&alert["labels"], "account") == DRAINING_ACCOUNT,
            "after the run, Prometheus still has an alert not about {DRAINING_ACCOUNT}: {alert}"
        );
    }
    clock.mark("done");
}

// ---------------------------------------------------------------------------------------------
// What the test waits for and checks as alerts arrive and the APIs answer.

struct Progress<'a> {
    clock: &'a Clock,
    /// When BalanceLow / BalanceCritical of the draining account were first delivered.
    low_delivered: Option<Duration>,
    critical_delivered: Option<Duration>,
    /// Seen in Alertmanager's API: BalanceLow active, BalanceCritical active, BalanceLow
    /// inhibited by it.
    low_listed: bool,
    critical_listed: bool,
    low_inhibited: bool,
    /// Dashboard queries that have not returned a series yet: (dashboard and origin, expr).
    empty_queries: Vec<(String, String)>,
    /// When Prometheus will have collected [`DASHBOARD_DATA`].
    dashboards_from: Instant,
    /// Providers of which Prometheus has balances of an account other than the draining one.
    providers_without_healthy_account: BTreeSet<&'static str>,
}

impl<'a> Progress<'a> {
    fn new(clock: &'a Clock, dashboards_from: Instant) -> Self {
        let mut empty_queries = Vec::new();
        for file in dashboards::dashboard_files() {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let queries = dashboards::expanded_queries(&dashboards::load_dashboard(&file))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            empty_queries.extend(
                queries
                    .into_iter()
                    .map(|q| (format!("{name} {}", q.origin), q.expr)),
            );
        }
        Progress {
            clock,
            low_delivered: None,
            critical_delivered: None,
            low_listed: false,
            critical_listed: false,
            low_inhibited: false,
            empty_queries,
            dashboards_from,
            providers_without_healthy_account: PROVIDERS.iter().map(|p| p.name).collect(),
        }
    }

    fn done(&self) -> bool {
        self.missing().is_empty()
    }

    fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        let mut want = |ok: bool, what: &str| {
            if !ok {
                missing.push(what.to_owned());
            }
        };
        want(
            self.low_delivered.is_some(),
            "BalanceLow delivered to the webhook",
        );
        want(self.low_listed, "BalanceLow active in Alertmanager's API");
        want(
            self.critical_delivered.is_some(),
            "BalanceCritical delivered to the webhook",
        );
        want(
            self.critical_listed,
            "BalanceCritical active in Alertmanager's API",
        );
        want(
            self.low_inhibited,
            "BalanceLow inhibited by BalanceCritical in Alertmanager's API",
        );
        for provider in &self.providers_without_healthy_account {
            missing.push(format!(
                "balances of a {provider} account other than {DRAINING_ACCOUNT} in Prometheus"
            ));
        }
        for (origin, expr) in &self.empty_queries {
            missing.push(format!(
                "a series from {origin} (run from {DASHBOARD_DATA:?} of data on): {expr}"
            ));
        }
        missing
    }

    /// One webhook notification: only the draining account's BalanceLow, then BalanceCritical,
    /// may arrive, each at the receiver the example configuration routes its severity to.
    fn delivered(&mut self, delivery: Delivery) {
        let payload = delivery
            .payload
            .unwrap_or_else(|e| panic!("the webhook got a body that is not JSON: {e}"));
        for alert in payload["alerts"].as_array().into_iter().flatten() {
            let name = label(&alert["labels"], "alertname");
            assert!(
                label(&alert["labels"], "account") == DRAINING_ACCOUNT
                    && matches!(name, "BalanceLow" | "BalanceCritical"),
                "delivered an alert that should not fire: {alert}"
            );
            assert_eq!(alert["status"], "firing", "{alert}");
            for (key, value) in DRAINING {
                assert_eq!(label(&alert["labels"], key), value, "{alert}");
            }
            let (severity, receiver, threshold) = if name == "BalanceLow" {
                ("warning", "/team", "100.00 USD")
            } else {
                ("critical", "/oncall", "20.00 USD")
            };
            assert_eq!(label(&alert["labels"], "severity"), severity, "{alert}");
            assert_eq!(delivery.path, receiver, "{name} went to the wrong receiver");
            let description = alert["annotations"]["description"].as_str().unwrap_or("");
            assert!(
                description.contains(DRAINING_ACCOUNT) && description.contains(threshold),
                "{name}: the description should name the account and the threshold {threshold}: {description:?}"
            );
            let slot = if name == "BalanceLow" {
                &mut self.low_delivered
            } else {
                assert!(
                    self.low_delivered.is_some(),
                    "BalanceCritical was delivered before BalanceLow"
                );
                &mut self.critical_delivered
            };
            if slot.is_none() {
                *slot = Some(self.clock.mark(&format!("{name} delivered to {receiver}")));
            }
        }
    }

    /// Asks Prometheus and Alertmanager what nothing announces.
    fn poll(&mut self, api: &Api) {
        self.check_prometheus_alerts(api);
        self.check_alertmanager(api);
        if !self.providers_without_healthy_account.is_empty() {
            let accounts = api.query(&format!(
                "group by (provider, account) (balance_amount{{account!=\"{DRAINING_ACCOUNT}\"}})"
            ));
            for series in &accounts {
                let provider = label(&series["metric"], "provider");
                if self.providers_without_healthy_account.remove(provider) {
                    self.clock
                        .mark(&format!("Prometheus has balances of {provider}'s demo"));
                }
            }
        }
        if Instant::now() >= self.dashboards_from && !self.empty_queries.is_empty() {
            self.empty_queries
                .retain(|(_, expr)| api.query(expr).is_empty());
            if self.empty_queries.is_empty() {
                self.clock.mark("every dashboard query returned a series");
            }
        }
    }

    /// Healthy accounts: no alert, pending or firing. The draining one: only its own.
    /// BalanceExporterDown, the one alert without an account, may be pending (its `absent()`
    /// holds until the first scrape); firing it fails the test, and it must be gone at the end.
    fn check_prometheus_alerts(&self, api: &Api) {
        for alert in api.prometheus_alerts() {
            let name = label(&alert["labels"], "alertname");
            let ok = match label(&alert["labels"], "account") {
                DRAINING_ACCOUNT => DRAINING_ALERTS.contains(&name),
                "" => name == "BalanceExporterDown" && alert["state"] == "pending",
                _ => false,
            };
            assert!(
                ok,
                "Prometheus has an alert that should not be pending or firing: {alert}"
            );
        }
    }

    fn check_alertmanager(&mut self, api: &Api) {
        if self.low_delivered.is_none() {
            return;
        }
        let alerts = api.alertmanager_alerts();
        let find = |name: &str| {
            alerts
                .iter()
                .find(|a| label(&a["labels"], "alertname") == name)
        };
        for alert in &alerts {
            assert_eq!(
                label(&alert["labels"], "account"),
                DRAINING_ACCOUNT,
                "Alertmanager has an alert that should not fire: {alert}"
            );
        }
        let low = find("BalanceLow").expect("BalanceLow was delivered, Alertmanager lists it");
        if !self.low_listed {
            assert_eq!(
                low["status"]["state"], "active",
                "BalanceLow before BalanceCritical fires: {low}"
            );
            self.low_listed = true;
            self.clock.mark("BalanceLow listed active by Alertmanager");
        }
        if self.critical_delivered.is_none() {
            return;
        }
        let critical =
            find("BalanceCritical").expect("BalanceCritical was delivered, Alertmanager lists it");
        if !self.critical_listed && critical["status"]["state"] == "active" {
            self.critical_listed = true;
            self.clock
                .mark("BalanceCritical listed active by Alertmanager");
        }
        let inhibitors = low["status"]["inhibitedBy"].as_array();
        if !self.low_inhibited
            && low["status"]["state"] == "suppressed"
            && inhibitors.is_some_and(|by| by.contains(&critical["fingerprint"]))
        {
            self.low_inhibited = true;
            self.clock
                .mark("BalanceLow listed as inhibited by BalanceCritical");
        }
    }
}

/// The value of label `name` in a label set (an alert's `labels`, a series' `metric`); empty
/// when absent, as in PromQL.
fn label<'v>(labels: &'v Value, name: &str) -> &'v str {
    labels[name].as_str().unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// The processes and their configurations.

/// Alertmanager with the example's routes and inhibit rules, notifying within a second, each
/// receiver's webhook pointed at the test's server under the path of the example's URL.
fn start_alertmanager(program: &Path, dir: &TempDir, webhook: SocketAddr) -> (Process, SocketAddr) {
    let mut config =
        dashboards::yaml(&dashboards::repo().join("deploy/alertmanager/alertmanager.yml"));
    config["route"]["group_wait"] = json!("1s");
    config["route"]["group_interval"] = json!("1s");
    for receiver in config["receivers"].as_array_mut().expect("receivers") {
        for hook in receiver["webhook_configs"]
            .as_array_mut()
            .expect("webhook receivers")
        {
            let url = hook["url"].as_str().expect("webhook url");
            let path = url
                .splitn(4, '/')
                .nth(3)
                .unwrap_or_else(|| panic!("{url} has no path"));
            hook["url"] = json!(format!("http://{webhook}/{path}"));
        }
    }
    start_tool(
        program,
        dir,
        &config,
        "--storage.path",
        &["--cluster.listen-address="],
    )
}

fn start_prometheus(
    program: &Path,
    dir: &TempDir,
    exporter: SocketAddr,
    alertmanager: SocketAddr,
) -> (Process, SocketAddr) {
    let rules = dashboards::repo().join("deploy/prometheus/alerts.yml");
    let config = json!({
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"},
        "rule_files": [rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.to_string()]}]}]},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [exporter.to_string()]}]}],
    });
    let (mut process, addr) = start_tool(program, dir, &config, "--storage.tsdb.path", &[]);
    process.wait_for_line_within(STARTUP, |l| {
        l.contains("msg=\"Server is ready to receive web requests.\"")
    });
    (process, addr)
}

/// Starts a tool of the Prometheus family with `config` and its storage in `dir`, listening on
/// a loopback port of its choice, and returns it with the address it logs once it listens
/// (`msg="Listening on" address=...`).
fn start_tool(
    program: &Path,
    dir: &TempDir,
    config: &Value,
    storage_flag: &str,
    more_args: &[&str],
) -> (Process, SocketAddr) {
    let name = program.file_name().unwrap().to_string_lossy().into_owned();
    // JSON is YAML.
    let file = dir.write(&format!("{name}.yml"), &config.to_string());
    let mut command = Command::new(program);
    command
        .arg(format!("--config.file={}", file.display()))
        .arg(format!("{storage_flag}={}", dir.0.join(&name).display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .args(more_args);
    let mut process = Process::spawn(&name, command);
    let line = process.wait_for_line_within(STARTUP, |l| l.contains("msg=\"Listening on\""));
    let addr = logfmt_field(&line, "address")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{name}: no address in {line:?}"));
    (process, addr)
}

// ---------------------------------------------------------------------------------------------
// The webhook receiver and the HTTP APIs.

/// One notification from Alertmanager: the URL path (which receiver) and the JSON body.
struct Delivery {
    path: String,
    payload: Result<Value, String>,
}

fn start_webhook(runtime: &Runtime) -> (SocketAddr, mpsc::Receiver<Delivery>) {
    let (tx, rx) = mpsc::channel();
    let handler: Handler = Arc::new(move |request| {
        let tx = tx.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let payload = match request.into_body().collect().await {
                Ok(body) => serde_json::from_slice(&body.to_bytes()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(Delivery { path, payload });
            listener::response(200, "text/plain", "ok")
        })
    });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the webhook");
    let addr = listener.local_addr().expect("webhook address");
    runtime.spawn(listener::accept_loop(
        listener,
        handler,
        std::future::pending(),
    ));
    (addr, rx)
}

struct Api {
    runtime: Runtime,
    client: reqwest::Client,
    prometheus: SocketAddr,
    alertmanager: SocketAddr,
}

impl Api {
    fn new(runtime: Runtime, prometheus: SocketAddr, alertmanager: SocketAddr) -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Api {
            runtime,
            client,
            prometheus,
            alertmanager,
        }
    }

    fn get(&self, url: reqwest::Url) -> Value {
        self.runtime.block_on(async {
            let response = self
                .client
                .get(url.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert!(status.is_success(), "GET {url}: {status}\n{body}");
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}\n{body}"))
        })
    }

    /// Prometheus' pending and firing alerts.
    fn prometheus_alerts(&self) -> Vec<Value> {
        let url = format!("http://{}/api/v1/alerts", self.prometheus);
        let answer = self.get(url.parse().unwrap());
        answer["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The series an instant query returns now.
    fn query(&self, expr: &str) -> Vec<Value> {
        let mut url: reqwest::Url = format!("http://{}/api/v1/query", self.prometheus)
            .parse()
            .unwrap();
        url.query_pairs_mut().append_pair("query", expr);
        let answer = self.get(url);
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every alert Alertmanager holds (active, silenced and inhibited).
    fn alertmanager_alerts(&self) -> Vec<Value> {
        let url = format!("http://{}/api/v2/alerts", self.alertmanager);
        self.get(url.parse().unwrap())
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------

/// The test's deadline, and its milestones printed with their time since the start.
struct Clock {
    start: Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    fn left(&self) -> Duration {
        DEADLINE.saturating_sub(self.start.elapsed())
    }

    fn mark(&self, what: &str) -> Duration {
        let elapsed = self.start.elapsed();
        eprintln!("[e2e {:>6.1}s] {what}", elapsed.as_secs_f64());
        elapsed
    }
}

/// The last `n` lines of `log` that contain `with`.
fn tail(log: &str, with: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(with)).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
