//! Turns the state into Prometheus text exposition.
//!
//! The balance and per-account series are written straight from the state on every render, so
//! a balance that left the state (a currency no longer returned, a stale snapshot, a removed
//! account) leaves `/metrics` with no bookkeeping. They are not kept in `prometheus` gauges:
//! with thousands of accounts, refilling and gathering tens of thousands of gauge children
//! cost most of a render's time and memory (BENCHMARKS.md). The request counters live in
//! [`Telemetry`] and are encoded alongside by the `prometheus` crate, in name order.

use std::fmt::Write as _;

use prometheus::TextEncoder;
use prometheus::proto::MetricFamily;
use tokio::time::Instant;

use super::{AccountState, State, Telemetry};
use crate::clock::unix_seconds_f64;
use crate::money::to_gauge;

const POLLED_NOTE: &str = "Polled in the background every poll_interval, not at scrape time.";

/// `(name, value)` pairs in name order, as the text format lists them.
type Labels<'a> = [(&'a str, &'a str)];

/// One gauge family of the state, its samples as (label text, value).
struct Family {
    name: &'static str,
    help: String,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &str, polled: bool) -> Self {
        let help = if polled {
            format!("{help} {POLLED_NOTE}")
        } else {
            help.to_owned()
        };
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: &Labels<'_>, value: f64) {
        let mut text = String::with_capacity(16 + labels.len() * 24);
        for (i, (name, value)) in labels.iter().enumerate() {
            text.push(if i == 0 { '{' } else { ',' });
            text.push_str(name);
            text.push_str("=\"");
            escape_into(&mut text, value, true);
            text.push('"');
        }
        if !labels.is_empty() {
            text.push('}');
        }
        self.samples.push((text, value));
    }

    fn write(mut self, out: &mut String) {
        self.samples.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str("# HELP ");
        out.push_str(self.name);
        out.push(' ');
        escape_into(out, &self.help, false);
        out.push_str("\n# TYPE ");
        out.push_str(self.name);
        out.push_str(" gauge\n");
        for (labels, value) in &self.samples {
            // Writing into a String cannot fail.
            let _ = writeln!(out, "{}{labels} {value}", self.name);
        }
    }
}

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

/// Renders bodies; remembers the last body's size to allocate the next one at once.
#[derive(Default)]
pub struct Renderer {
    last_len: usize,
}

impl Renderer {
    /// The exposition text of `state` and `telemetry`.
    pub fn render(
        &mut self,
        state: &State,
        telemetry: &Telemetry,
        now: Instant,
    ) -> Result<String, prometheus::Error> {
        let mut families = state_families(state, now);
        let mut build_info = Family::new(
            "balance_exporter_build_info",
            "Version and git revision of balance_exporter (always 1).",
            false,
        );
        build_info.add(
            &[("revision", crate::REVISION), ("version", crate::VERSION)],
            1.0,
        );
        families.push(build_info);
        let gathered: Vec<MetricFamily> = telemetry.gather();
        enum Next {
            State(Family),
            Gathered(MetricFamily),
        }
        let mut all: Vec<(String, Next)> = families
            .into_iter()
            .map(|f| (f.name.to_owned(), Next::State(f)))
            .chain(
                gathered
                    .into_iter()
                    .map(|f| (f.name().to_owned(), Next::Gathered(f))),
            )
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::with_capacity(self.last_len + self.last_len / 8);
        let encoder = TextEncoder::new();
        for (_, family) in all {
            match family {
                Next::State(f) => f.write(&mut out),
                Next::Gathered(f) => encoder.encode_utf8(std::slice::from_ref(&f), &mut out)?,
            }
        }
        self.last_len = out.len();
        Ok(out)
    }
}

/// The state's gauge families, families without samples left out (as `prometheus` does).
fn state_families(state: &State, now: Instant) -> Vec<Family> {
    let mut amount = Family::new(
        "balance_amount",
        "Balance reported by the provider, in major currency units.",
        true,
    );
    let mut threshold = Family::new(
        "balance_low_threshold",
        "Configured low-balance threshold, in major currency units.",
        false,
    );
    let mut overview = Family::new(
        "balance_overview_amount",
        "Provider-side total of all balances converted into one currency.",
        true,
    );
    let mut status = Family::new(
        "balance_account_status",
        "Account status reported by the provider (always 1; the status is the label).",
        true,
    );
    let mut up = Family::new(
        "balance_up",
        "1 if the last poll of the account succeeded, 0 if it failed.",
        true,
    );
    let mut last_success = Family::new(
        "balance_last_success_timestamp_seconds",
        "Unix time when the last successful poll of the account finished.",
        true,
    );
    let mut interval = Family::new(
        "balance_poll_interval_seconds",
        "Configured interval between two background polls of the account.",
        false,
    );
    let mut duration = Family::new(
        "balance_poll_duration_seconds",
        "How long the last poll of the account took, retries included.",
        true,
    );
    for a in state.accounts.values() {
        fill(a, state, now, &mut |family, labels, value| {
            match family {
                Gauge::Amount => &mut amount,
                Gauge::Threshold => &mut threshold,
                Gauge::Overview => &mut overview,
                Gauge::Status => &mut status,
                Gauge::Up => &mut up,
                Gauge::LastSuccess => &mut last_success,
                Gauge::Interval => &mut interval,
                Gauge::Duration => &mut duration,
            }
            .add(labels, value)
        });
    }
    [
        amount,
        threshold,
        overview,
        status,
        up,
        last_success,
        interval,
        duration,
    ]
    .into_iter()
    .filter(|f| !f.samples.is_empty())
    .collect()
}

/// Which of the state's gauges a sample belongs to (not the `kind` label).
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

/// The samples of one account; labels in name order.
fn fill(
    a: &AccountState,
    state: &State,
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
    let Some(snapshot) = a.fresh_snapshot(state.stale_after, now) else {
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
                    });
                }
            }
            accounts.insert(name.to_string(), a);
        }
        let state = State {
            accounts,
            stale_after,
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
            .render(&state, &telemetry, Instant::now())
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
