//! Turns the state into Prometheus text exposition.
//!
//! The balance and per-account series are written straight from the state and from each
//! account's [`AccountSeries`] on every render, so a balance that left the state (a currency
//! no longer returned, a stale snapshot, a removed account) leaves `/metrics` with no
//! bookkeeping. They are not kept in `prometheus` metrics: with thousands of accounts,
//! tens of thousands of children and their `gather()` copy cost most of the exporter's memory
//! and a render's time (BENCHMARKS.md). The few families the `prometheus` registry keeps
//! (latency histogram, configuration loads, process metrics) are encoded alongside, every
//! family in name order.
//!
//! Samples go straight into the body, one account at a time: only one account's lines are
//! held apart for sorting, so a render allocates about the body and nothing per sample.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::TextEncoder;
use prometheus::proto::MetricFamily;
use tokio::time::Instant;

use super::telemetry::{
    AccountSeries, CLOCK_SKEW, Counts, ERRORS, POLLER_RESTARTS, REQUESTS, TOKEN_REFRESHES,
};
use super::{AccountState, State, Telemetry};
use crate::clock::unix_seconds_f64;
use crate::money::to_gauge;

/// Accounts written per hold of the state's lock.
const ACCOUNTS_PER_LOCK: usize = 64;

const POLLED_NOTE: &str = "Polled in the background every poll_interval, not at scrape time.";

/// `(name, value)` pairs in name order, as the text format lists them.
type Labels<'a> = [(&'a str, &'a str)];

/// Escapes `\`, newlines and (in label values) `"`, as the text format wants.
fn escape_into(out: &mut String, text: &str, quotes: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn escaped(text: &str) -> Cow<'_, str> {
    if text.contains(['\\', '\n', '"']) {
        let mut out = String::with_capacity(text.len() + 2);
        escape_into(&mut out, text, true);
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// `# HELP` and `# TYPE` of a family.
fn header(out: &mut String, name: &str, help: &str, note: Option<&str>, kind: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_into(out, help, false);
    if let Some(note) = note {
        out.push(' ');
        escape_into(out, note, false);
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// `name{labels} value`; returns where the labels end.
fn sample(out: &mut String, name: &str, labels: &Labels<'_>, value: f64) -> usize {
    out.push_str(name);
    for (i, (name, value)) in labels.iter().enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        out.push_str(name);
        out.push_str("=\"");
        escape_into(out, value, true);
        out.push('"');
    }
    if !labels.is_empty() {
        out.push('}');
    }
    let labels_end = out.len();
    // Writing into a String cannot fail. `Display` of f64 is what the `prometheus` crate
    // writes too: integers without a fraction, no exponent.
    let _ = writeln!(out, " {value}");
    labels_end
}

/// One account's lines of one family, sorted by their label text before they join the body
/// (a stable sort: a duplicate keeps its place, as before).
#[derive(Default)]
struct Lines {
    text: String,
    /// `(start, labels start, labels end, end)` of each line in `text`.
    spans: Vec<(usize, usize, usize, usize)>,
}

impl Lines {
    fn add(&mut self, name: &str, labels: &Labels<'_>, value: f64) {
        let start = self.text.len();
        let labels_end = sample(&mut self.text, name, labels, value);
        self.spans
            .push((start, start + name.len(), labels_end, self.text.len()));
    }

    fn flush_sorted(&mut self, out: &mut String) {
        let text = &self.text;
        self.spans
            .sort_by(|a, b| text[a.1..a.2].cmp(&text[b.1..b.2]));
        for &(start, _, _, end) in &self.spans {
            out.push_str(&text[start..end]);
        }
        self.text.clear();
        self.spans.clear();
    }
}

/// Renders bodies; remembers the last body's size to allocate the next one at once.
#[derive(Default)]
pub struct Renderer {
    last_len: usize,
    lines: Lines,
}

/// Where a family's samples come from.
enum Source {
    State(Gauge),
    BuildInfo,
    Account(AccountFamily),
    Gathered(MetricFamily),
}

impl Renderer {
    /// The exposition text of `state` and `telemetry`.
    ///
    /// The state is not copied: it is locked for a few dozen accounts at a time while their
    /// lines are written, so pollers recording a poll wait microseconds, not a whole render.
    /// A poll that lands during the render may show in the families written after it; every
    /// change made before the render started is in the body.
    pub fn render(
        &mut self,
        state: &Mutex<State>,
        telemetry: &Telemetry,
        now: Instant,
    ) -> Result<String, prometheus::Error> {
        let mut all: Vec<(String, Source)> = Gauge::ALL
            .into_iter()
            .map(|g| (g.name().to_owned(), Source::State(g)))
            .chain([("balance_exporter_build_info".to_owned(), Source::BuildInfo)])
            .chain(
                AccountFamily::ALL
                    .into_iter()
                    .map(|f| (f.meta().0.to_owned(), Source::Account(f))),
            )
            .chain(
                telemetry
                    .gather()
                    .into_iter()
                    .map(|f| (f.name().to_owned(), Source::Gathered(f))),
            )
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));

        // The state gauges list samples in the order of their label text, whose first label
        // is the account: accounts in the order of their escaped names (closed by the quote),
        // then each account's lines sorted among themselves.
        let (mut by_label_text, stale_after) = {
            let state = crate::sync::lock(state);
            let names: Vec<String> = state.accounts.keys().cloned().collect();
            (names, state.stale_after)
        };
        by_label_text.sort_by(|a, b| {
            let (a, b) = (escaped(a), escaped(b));
            a.bytes().chain(*b"\"").cmp(b.bytes().chain(*b"\""))
        });

        let mut out = String::with_capacity(self.last_len + self.last_len / 8);
        let encoder = TextEncoder::new();
        for (_, source) in all {
            match source {
                Source::State(gauge) => {
                    let start = out.len();
                    header(
                        &mut out,
                        gauge.name(),
                        gauge.help(),
                        gauge.polled().then_some(POLLED_NOTE),
                        "gauge",
                    );
                    let samples = out.len();
                    for names in by_label_text.chunks(ACCOUNTS_PER_LOCK) {
                        let state = crate::sync::lock(state);
                        // An account removed since the render started is left out.
                        for a in names.iter().filter_map(|n| state.accounts.get(n)) {
                            fill(a, stale_after, now, &mut |g, labels, value| {
                                if g == gauge {
                                    self.lines.add(gauge.name(), labels, value);
                                }
                            });
                            self.lines.flush_sorted(&mut out);
                        }
                    }
                    // Families without samples are left out, as `prometheus` does.
                    if out.len() == samples {
                        out.truncate(start);
                    }
                }
                Source::BuildInfo => {
                    let name = "balance_exporter_build_info";
                    header(
                        &mut out,
                        name,
                        "Version and git revision of balance_exporter (always 1).",
                        None,
                        "gauge",
                    );
                    sample(
                        &mut out,
                        name,
                        &[("revision", crate::REVISION), ("version", crate::VERSION)],
                        1.0,
                    );
                }
                Source::Account(family) => {
                    let (name, help, kind) = family.meta();
                    let start = out.len();
                    header(&mut out, name, help, None, kind);
                    let samples = out.len();
                    // Never held with the state's lock: `Metrics::configure` takes them the
                    // other way round.
                    for (account, series) in telemetry.accounts().iter() {
                        family.write(&mut out, account, series);
                    }
                    if out.len() == samples {
                        out.truncate(start);
                    }
                }
                Source::Gathered(f) => encoder.encode_utf8(std::slice::from_ref(&f), &mut out)?,
            }
        }
        self.last_len = out.len();
        // Served until the next render: without the room reserved for growth.
        out.shrink_to_fit();
        // The buffer for one account's lines stays; an account with a hostile number of
        // balances does not keep its size for the rest of the process.
        if self.lines.text.capacity() > 64 * 1024 {
            self.lines = Lines::default();
        }
        Ok(out)
    }
}

/// The per-account families of [`AccountSeries`]. Like the `prometheus` crate did, samples
/// are in the order of their label values (by label name): account, then the rest.
#[derive(Clone, Copy)]
enum AccountFamily {
    Requests,
    Errors,
    TokenRefreshes,
    ClockSkew,
    PollerRestarts,
}

impl AccountFamily {
    const ALL: [AccountFamily; 5] = [
        AccountFamily::Requests,
        AccountFamily::Errors,
        AccountFamily::TokenRefreshes,
        AccountFamily::ClockSkew,
        AccountFamily::PollerRestarts,
    ];

    /// `(name, help, type)`.
    fn meta(self) -> (&'static str, &'static str, &'static str) {
        let ((name, help), kind) = match self {
            AccountFamily::Requests => (REQUESTS, "counter"),
            AccountFamily::Errors => (ERRORS, "counter"),
            AccountFamily::TokenRefreshes => (TOKEN_REFRESHES, "counter"),
            AccountFamily::ClockSkew => (CLOCK_SKEW, "gauge"),
            AccountFamily::PollerRestarts => (POLLER_RESTARTS, "counter"),
        };
        (name, help, kind)
    }

    fn write(self, out: &mut String, account: &str, series: &AccountSeries) {
        let name = self.meta().0;
        let p = series.provider;
        let counts: std::sync::MutexGuard<'_, Counts> = series.counts();
        let pair = [("account", account), ("provider", p)];
        // Counters are integers; written as the f64 the `prometheus` crate kept them in.
        match self {
            AccountFamily::Requests => {
                let mut requests: Vec<&(&str, u64)> = counts.requests.iter().collect();
                requests.sort_by_key(|(endpoint, _)| *endpoint);
                for (endpoint, n) in requests {
                    let labels = [
                        ("account", account),
                        ("endpoint", endpoint),
                        ("provider", p),
                    ];
                    sample(out, name, &labels, *n as f64);
                }
            }
            AccountFamily::Errors => {
                let mut errors: Vec<_> = counts.errors.iter().collect();
                errors.sort_by(|a, b| {
                    (a.class.as_str(), &*a.code).cmp(&(b.class.as_str(), &*b.code))
                });
                for e in errors {
                    let labels = [
                        ("account", account),
                        ("class", e.class.as_str()),
                        ("code", &e.code),
                        ("provider", p),
                    ];
                    sample(out, name, &labels, e.count as f64);
                }
            }
            AccountFamily::TokenRefreshes => {
                if let Some(n) = counts.token_refreshes {
                    sample(out, name, &pair, n as f64);
                }
            }
            AccountFamily::ClockSkew => {
                if let Some(seconds) = counts.clock_skew {
                    sample(out, name, &pair, seconds);
                }
            }
            AccountFamily::PollerRestarts => {
                sample(out, name, &pair, counts.poller_restarts as f64);
            }
        }
    }
}

/// Which of the state's gauges a sample belongs to (not the `kind` label).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gauge {
    Amount,
    Threshold,
    Overview,
    Status,
    Up,
    LastSuccess,
    Interval,
    Duration,
}

impl Gauge {
    const ALL: [Gauge; 8] = [
        Gauge::Amount,
        Gauge::Threshold,
        Gauge::Overview,
        Gauge::Status,
        Gauge::Up,
        Gauge::LastSuccess,
        Gauge::Interval,
        Gauge::Duration,
    ];

    fn name(self) -> &'static str {
        match self {
            Gauge::Amount => "balance_amount",
            Gauge::Threshold => "balance_low_threshold",
            Gauge::Overview => "balance_overview_amount",
            Gauge::Status => "balance_account_status",
            Gauge::Up => "balance_up",
            Gauge::LastSuccess => "balance_last_success_timestamp_seconds",
            Gauge::Interval => "balance_poll_interval_seconds",
            Gauge::Duration => "balance_poll_duration_seconds",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Gauge::Amount => "Balance reported by the provider, in major currency units.",
            Gauge::Threshold => "Configured low-balance threshold, in major currency units.",
            Gauge::Overview => "Provider-side total of all balances converted into one currency.",
            Gauge::Status => {
                "Account status reported by the provider (always 1; the status is the label)."
            }
            Gauge::Up => "1 if the last poll of the account succeeded, 0 if it failed.",
            Gauge::LastSuccess => {
                "Unix time when the last successful poll of the account finished."
            }
            Gauge::Interval => "Configured interval between two background polls of the account.",
            Gauge::Duration => "How long the last poll of the account took, retries included.",
        }
    }

    /// Whether the HELP text says the value is polled in the background.
    fn polled(self) -> bool {
        !matches!(self, Gauge::Threshold | Gauge::Interval)
    }
}

/// The samples of one account; labels in name order.
fn fill(
    a: &AccountState,
    stale_after: Duration,
    now: Instant,
    add: &mut dyn FnMut(Gauge, &Labels<'_>, f64),
) {
    let (p, n) = (a.provider, a.account.as_str());
    let account = [("account", n), ("provider", p)];
    add(Gauge::Interval, &account, a.poll_interval.as_secs_f64());
    for (t, currency) in a.resolved_thresholds() {
        for (severity, value) in [("warning", t.warning), ("critical", t.critical)] {
            if let Some(value) = value {
                add(
                    Gauge::Threshold,
                    &[
                        ("account", n),
                        ("currency", currency),
                        ("kind", t.kind),
                        ("provider", p),
                        ("severity", severity),
                    ],
                    to_gauge(value),
                );
            }
        }
    }
    if a.polls == 0 {
        return;
    }
    add(Gauge::Up, &account, if a.up { 1.0 } else { 0.0 });
    if let Some(d) = a.last_poll_duration {
        add(Gauge::Duration, &account, d.as_secs_f64());
    }
    if let Some(t) = a.last_success {
        add(Gauge::LastSuccess, &account, unix_seconds_f64(t));
    }
    let Some(snapshot) = a.fresh_snapshot(stale_after, now) else {
        return;
    };
    for b in &snapshot.balances {
        add(
            Gauge::Amount,
            &[
                ("account", n),
                ("currency", &b.currency),
                ("kind", b.kind),
                ("provider", p),
            ],
            to_gauge(b.amount),
        );
    }
    for o in &snapshot.overviews {
        add(
            Gauge::Overview,
            &[("account", n), ("currency", &o.currency), ("provider", p)],
            to_gauge(o.amount),
        );
    }
    for s in &snapshot.statuses {
        add(
            Gauge::Status,
            &[
                ("account", n),
                ("currency", &s.currency),
                ("provider", p),
                ("status", &s.status),
            ],
            1.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use rust_decimal::Decimal;

    use super::*;
    use crate::config::Threshold;
    use crate::metrics::{AccountTelemetry, LastError};
    use crate::providers::{ErrorClass, ProviderError, codes};
    use crate::snapshot::{AccountStatus, Overview, Snapshot};

    fn threshold(kind: &'static str, currency: Option<&str>, warning: Option<i64>) -> Threshold {
        Threshold {
            kind,
            currency: currency.map(str::to_owned),
            warning: warning.map(Decimal::from),
            critical: Some(Decimal::new(105, 1)),
        }
    }

    fn account(provider: &'static str, name: &str) -> AccountState {
        AccountState {
            provider,
            account: name.to_owned(),
            poll_interval: Duration::from_secs(60),
            thresholds: Vec::new(),
            snapshot: None,
            known_currencies: Vec::new(),
            polls: 0,
            up: false,
            last_success: None,
            last_poll_duration: None,
            last_error: None,
            history: Default::default(),
        }
    }

    /// A state and telemetry with every kind of series, names that need escaping and names
    /// whose escaped and raw orders differ.
    fn varied() -> (State, std::sync::Arc<Telemetry>, Vec<AccountTelemetry>) {
        let now = Instant::now();
        let stale_after = Duration::from_secs(600);
        let mut accounts = BTreeMap::new();
        let names = [
            "a", "a!", "a\"q", "a\\b", "a\nnl", "b-stale", "c-never", "d-down",
        ];
        for (i, name) in names.iter().enumerate() {
            let provider = ["uqpay", "onerway", "engagelab"][i % 3];
            let mut a = account(provider, name);
            a.poll_interval = Duration::from_millis(1500 * (i as u64 + 1));
            a.thresholds = vec![
                threshold("available", Some("USD"), Some(100)),
                threshold("total", None, None),
                // The same balance by another route: a duplicate series, kept in order.
                threshold("available", Some("USD"), Some(7)),
            ];
            if *name != "c-never" {
                let mut s = Snapshot::default();
                s.add("USD", "available", Some(Decimal::new(123_456, 2)));
                s.add("eur", "total", Some(Decimal::new(-5, 1)));
                s.add("AED", "available", Some(Decimal::new(i as i64, 0)));
                s.add("USD", "total", Some(Decimal::new(1, 8)));
                s.overviews.push(Overview {
                    currency: "USD".to_owned(),
                    amount: Decimal::new(99, 0),
                });
                s.statuses.push(AccountStatus {
                    currency: "USD".to_owned(),
                    status: "ACTIVE \"x\"".to_owned(),
                });
                s.statuses.push(AccountStatus {
                    currency: "AED".to_owned(),
                    status: "FROZEN".to_owned(),
                });
                a.known_currencies = s.currencies().into_iter().map(str::to_owned).collect();
                let at = if *name == "b-stale" {
                    now - stale_after
                } else {
                    now
                };
                a.snapshot = Some((s, at));
                a.polls = i as u64 + 1;
                a.up = *name != "d-down";
                a.last_success =
                    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
                a.last_poll_duration = Some(Duration::from_micros(12_345 * (i as u64 + 1)));
                if *name == "d-down" {
                    a.last_error = Some(LastError {
                        code: "E1".to_owned(),
                        class: ErrorClass::Server,
                        message: "m".to_owned(),
                        at: SystemTime::UNIX_EPOCH,
                        recovered: None,
                    });
                }
            }
            accounts.insert(name.to_string(), a);
        }
        let state = State {
            accounts,
            stale_after,
            reload_failure: None,
        };
        let telemetry = Telemetry::new();
        telemetry.config_loaded(false);
        let mut handles = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let provider = state.accounts[*name].provider;
            let documented: &[(&'static str, ErrorClass)] = if i % 2 == 0 {
                &[
                    ("2001", ErrorClass::Auth),
                    ("1000", ErrorClass::Server),
                    ("zz", ErrorClass::Client),
                ]
            } else {
                &[]
            };
            let t =
                AccountTelemetry::new(telemetry.clone(), provider, name, documented, i % 3 == 0);
            for k in 0..i {
                t.observe_request("balance", Duration::from_millis(40 * k as u64));
                if k % 2 == 0 {
                    t.observe_request("token", Duration::from_millis(700));
                }
            }
            if i % 4 == 1 {
                t.count_error(&ProviderError::new("2001", ErrorClass::Auth, "x"));
                t.count_error(&ProviderError::new(
                    codes::TIMEOUT,
                    ErrorClass::Transport,
                    "x",
                ));
                t.count_error(&ProviderError::new("2001", ErrorClass::Client, "x"));
            }
            if i == 3 {
                for c in 0..25 {
                    t.count_error(&ProviderError::new(
                        format!("c{c}"),
                        ErrorClass::Decode,
                        "x",
                    ));
                }
                t.count_error(&ProviderError::new("y", ErrorClass::Auth, "x"));
            }
            if i % 3 == 1 {
                t.count_token_refresh();
            }
            if i % 2 == 1 {
                t.set_clock_skew(-1.25 * i as f64);
            }
            if i == 2 {
                t.count_poller_restart();
            }
            handles.push(t);
        }
        // An account that left: none of its series remain.
        let gone = AccountTelemetry::new(
            telemetry.clone(),
            "uqpay",
            "gone",
            &[("1", ErrorClass::Auth)],
            true,
        );
        gone.observe_request("elsewhere", Duration::from_millis(3));
        gone.count_poller_restart();
        gone.remove();
        (state, telemetry, handles)
    }

    /// The body without what changes from run to run: process metrics and the revision.
    fn stable(body: &str) -> String {
        body.lines()
            .filter(|l| {
                !l.contains("process_") && !l.contains("_reload_success_timestamp_seconds ")
            })
            .map(|l| {
                if l.starts_with("balance_exporter_build_info{") {
                    "balance_exporter_build_info{..} 1".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    /// The body of a varied state is byte for byte the one the `prometheus`-crate path gave
    /// (saved in testdata before per-account series were written as text).
    #[test]
    fn a_varied_state_renders_exactly_as_before() {
        let (state, telemetry, _handles) = varied();
        let body = Renderer::default()
            .render(&std::sync::Mutex::new(state), &telemetry, Instant::now())
            .expect("renders");
        let got = stable(&body);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/metrics/varied.txt");
        if std::env::var_os("WRITE_GOLDEN").is_some() {
            std::fs::write(path, &got).expect("write golden");
        }
        let want = std::fs::read_to_string(path).expect("golden file");
        assert_eq!(got, want);
        assert!(body.contains("\nprocess_resident_memory_bytes "), "{body}");
    }
}
