//! Turns the state into Prometheus text exposition.
//!
//! The gauges are rebuilt from the state on every render, so a balance that left the state
//! (a currency no longer returned, a stale snapshot, a removed account) leaves `/metrics` with
//! no bookkeeping; the request counters live in [`Telemetry`] and are gathered alongside.

use prometheus::{GaugeVec, Opts, Registry, TextEncoder};
use tokio::time::Instant;

use super::{AccountState, State, Telemetry};
use crate::clock::unix_seconds_f64;
use crate::money::to_gauge;

const POLLED_NOTE: &str = "Polled in the background every poll_interval, not at scrape time.";

/// The gauges made from the state, created once and refilled on every render.
pub struct StateGauges {
    registry: Registry,
    amount: GaugeVec,
    threshold: GaugeVec,
    overview: GaugeVec,
    status: GaugeVec,
    up: GaugeVec,
    last_success: GaugeVec,
    interval: GaugeVec,
    duration: GaugeVec,
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let vec = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(vec.clone()))
        .expect("unique metric");
    vec
}

impl StateGauges {
    pub fn new() -> Self {
        let r = Registry::new();
        let polled = |help: &str| format!("{help} {POLLED_NOTE}");
        let account = &["provider", "account"];
        let build_info = gauge(
            &r,
            "balance_exporter_build_info",
            "Version and git revision of balance_exporter (always 1).",
            &["version", "revision"],
        );
        build_info
            .with_label_values(&[crate::VERSION, crate::REVISION])
            .set(1.0);
        StateGauges {
            amount: gauge(
                &r,
                "balance_amount",
                &polled("Balance reported by the provider, in major currency units."),
                &["provider", "account", "currency", "kind"],
            ),
            threshold: gauge(
                &r,
                "balance_low_threshold",
                "Configured low-balance threshold, in major currency units.",
                &["provider", "account", "currency", "kind", "severity"],
            ),
            overview: gauge(
                &r,
                "balance_overview_amount",
                &polled("Provider-side total of all balances converted into one currency."),
                &["provider", "account", "currency"],
            ),
            status: gauge(
                &r,
                "balance_account_status",
                &polled(
                    "Account status reported by the provider (always 1; the status is the label).",
                ),
                &["provider", "account", "currency", "status"],
            ),
            up: gauge(
                &r,
                "balance_up",
                &polled("1 if the last poll of the account succeeded, 0 if it failed."),
                account,
            ),
            last_success: gauge(
                &r,
                "balance_last_success_timestamp_seconds",
                &polled("Unix time when the last successful poll of the account finished."),
                account,
            ),
            interval: gauge(
                &r,
                "balance_poll_interval_seconds",
                "Configured interval between two background polls of the account.",
                account,
            ),
            duration: gauge(
                &r,
                "balance_poll_duration_seconds",
                &polled("How long the last poll of the account took, retries included."),
                account,
            ),
            registry: r,
        }
    }

    /// The exposition text of `state` and `telemetry`.
    pub fn render(
        &self,
        state: &State,
        telemetry: &Telemetry,
        now: Instant,
    ) -> Result<String, prometheus::Error> {
        for vec in [
            &self.amount,
            &self.threshold,
            &self.overview,
            &self.status,
            &self.up,
            &self.last_success,
            &self.interval,
            &self.duration,
        ] {
            vec.reset();
        }
        for a in state.accounts.values() {
            self.fill(a, state, now);
        }
        let mut families = self.registry.gather();
        families.extend(telemetry.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = String::new();
        TextEncoder::new().encode_utf8(&families, &mut out)?;
        Ok(out)
    }

    fn fill(&self, a: &AccountState, state: &State, now: Instant) {
        let (p, n) = (a.provider, a.account.as_str());
        self.interval
            .with_label_values(&[p, n])
            .set(a.poll_interval.as_secs_f64());
        for (t, currency) in a.resolved_thresholds() {
            for (severity, value) in [("warning", t.warning), ("critical", t.critical)] {
                if let Some(value) = value {
                    self.threshold
                        .with_label_values(&[p, n, currency, t.kind, severity])
                        .set(to_gauge(value));
                }
            }
        }
        if a.polls == 0 {
            return;
        }
        self.up
            .with_label_values(&[p, n])
            .set(if a.up { 1.0 } else { 0.0 });
        if let Some(d) = a.last_poll_duration {
            self.duration
                .with_label_values(&[p, n])
                .set(d.as_secs_f64());
        }
        if let Some(t) = a.last_success {
            self.last_success
                .with_label_values(&[p, n])
                .set(unix_seconds_f64(t));
        }
        let Some(snapshot) = a.fresh_snapshot(state.stale_after, now) else {
            return;
        };
        for b in &snapshot.balances {
            self.amount
                .with_label_values(&[p, n, &b.currency, b.kind])
                .set(to_gauge(b.amount));
        }
        for o in &snapshot.overviews {
            self.overview
                .with_label_values(&[p, n, &o.currency])
                .set(to_gauge(o.amount));
        }
        for s in &snapshot.statuses {
            self.status
                .with_label_values(&[p, n, &s.currency, &s.status])
                .set(1.0);
        }
    }
}
