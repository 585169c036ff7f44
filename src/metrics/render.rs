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
