//! The exporter's state and its rendering into the `/metrics` body.
//!
//! Pollers record each poll's outcome here; every change re-renders the exposition text, and
//! `/metrics` serves the last rendered body without touching the state.

mod render;
mod telemetry;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

pub use telemetry::{AccountTelemetry, MAX_CODES_PER_ACCOUNT, OTHER_CODE, Telemetry};

use crate::config::{AccountConfig, Threshold};
use crate::providers::{ErrorClass, ProviderError};
use crate::snapshot::Snapshot;

/// What the exporter knows about one account.
#[derive(Debug, Clone)]
pub struct AccountState {
    pub provider: &'static str,
    pub account: String,
    pub poll_interval: Duration,
    pub thresholds: Vec<Threshold>,
    /// The last good balances, with when they were fetched.
    pub snapshot: Option<(Snapshot, Instant)>,
    /// Currencies of the last good snapshot, kept after it goes stale so thresholds without a
    /// configured currency keep their label.
    pub known_currencies: Vec<String>,
    pub polls: u64,
    pub up: bool,
    pub last_success: Option<SystemTime>,
    pub last_poll_duration: Option<Duration>,
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone)]
pub struct LastError {
    pub code: String,
    pub class: ErrorClass,
    pub message: String,
    pub at: SystemTime,
}

impl AccountState {
    fn new(config: &AccountConfig) -> Self {
        AccountState {
            provider: config.provider.settings().provider(),
            account: config.name.clone(),
            poll_interval: config.poll_interval,
            thresholds: config.thresholds.clone(),
            snapshot: None,
            known_currencies: Vec::new(),
            polls: 0,
            up: false,
            last_success: None,
            last_poll_duration: None,
            last_error: None,
        }
    }

    /// The last good balances, unless older than `stale_after`.
    pub fn fresh_snapshot(&self, stale_after: Duration, now: Instant) -> Option<&Snapshot> {
        match &self.snapshot {
            Some((snapshot, at)) if now.saturating_duration_since(*at) < stale_after => {
                Some(snapshot)
            }
            _ => None,
        }
    }

    /// Thresholds with their currency resolved: `(threshold, currency)` pairs.
    pub fn resolved_thresholds(&self) -> Vec<(&Threshold, &str)> {
        let mut out = Vec::new();
        for t in &self.thresholds {
            match &t.currency {
                Some(c) => out.push((t, c.as_str())),
                None => out.extend(self.known_currencies.iter().map(|c| (t, c.as_str()))),
            }
        }
        out
    }
}

/// Everything `/metrics` and the status page are made of.
#[derive(Debug, Clone)]
pub struct State {
    pub accounts: BTreeMap<String, AccountState>,
    pub stale_after: Duration,
}

/// The shared state, its telemetry, and the rendered body.
pub struct Metrics {
    telemetry: Arc<Telemetry>,
    state: Mutex<State>,
    body: RwLock<Bytes>,
    /// Held while rendering, so that an older state never overwrites a newer body.
    gauges: Mutex<render::StateGauges>,
    /// Changes published so far, and how many of them the body shows: a render covers every
    /// change made before it began, so callers that waited for it need not render again.
    changes: AtomicU64,
    rendered: AtomicU64,
    /// Pollers take turns here (asynchronously) to have their change rendered, so that they
    /// wait without holding a runtime thread.
    render_turn: tokio::sync::Mutex<()>,
    accounts: Mutex<BTreeMap<String, Arc<AccountTelemetry>>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics {
            telemetry: Telemetry::new(),
            state: Mutex::new(State {
                accounts: BTreeMap::new(),
                stale_after: crate::config::Global::default().stale_after,
            }),
            body: RwLock::new(Bytes::new()),
            gauges: Mutex::new(render::StateGauges::new()),
            changes: AtomicU64::new(0),
            rendered: AtomicU64::new(0),
            render_turn: tokio::sync::Mutex::new(()),
            accounts: Mutex::new(BTreeMap::new()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Poisoning would need a panic while updating plain data; the data is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the state match a (new) configuration: accounts that left are removed with all
    /// their series, new ones are added, kept ones keep their balances and counters.
    /// Returns each account's telemetry handle, in config order.
    pub fn configure(
        &self,
        accounts: &[AccountConfig],
        stale_after: Duration,
    ) -> Vec<Arc<AccountTelemetry>> {
        let mut handles = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.state();
        state.stale_after = stale_after;
        let keep = |name: &str, provider: &str| {
            accounts
                .iter()
                .any(|a| a.name == name && a.provider.settings().provider() == provider)
        };
        handles.retain(|name, handle| {
            let kept = keep(name, handle.provider());
            if !kept {
                handle.remove();
            }
            kept
        });
        state
            .accounts
            .retain(|name, account| keep(name, account.provider));
        let mut out = Vec::with_capacity(accounts.len());
        for config in accounts {
            let settings = config.provider.settings();
            let handle = handles
                .entry(config.name.clone())
                .or_insert_with(|| {
                    Arc::new(AccountTelemetry::new(
                        self.telemetry.clone(),
                        settings.provider(),
                        &config.name,
                        settings.documented_errors(),
                        settings.mints_tokens(),
                    ))
                })
                .clone();
            out.push(handle);
            let account = state
                .accounts
                .entry(config.name.clone())
                .or_insert_with(|| AccountState::new(config));
            account.poll_interval = config.poll_interval;
            account.thresholds = config.thresholds.clone();
        }
        drop(state);
        drop(handles);
        self.publish();
        out
    }

    /// Records the outcome of one poll and re-renders.
    pub async fn record_poll(
        self: &Arc<Self>,
        account: &str,
        outcome: &Result<Snapshot, ProviderError>,
        duration: Duration,
    ) {
        {
            let mut state = self.state();
            let Some(a) = state.accounts.get_mut(account) else {
                return;
            };
            a.polls += 1;
            a.last_poll_duration = Some(duration);
            match outcome {
                Ok(snapshot) => {
                    a.up = true;
                    a.last_success = Some(SystemTime::now());
                    a.known_currencies = snapshot
                        .currencies()
                        .into_iter()
                        .map(str::to_owned)
                        .collect();
                    a.snapshot = Some((snapshot.clone(), Instant::now()));
                }
                Err(error) => {
                    a.up = false;
                    a.last_error = Some(LastError {
                        code: error.code.clone(),
                        class: error.class,
                        message: error.message.clone(),
                        at: SystemTime::now(),
                    });
                }
            }
        }
        self.publish_async().await;
    }

    /// Renders the state into the exposition body served on `/metrics`; on return the body
    /// shows every change made before the call.
    pub fn publish(&self) {
        self.render_covering(self.changes.fetch_add(1, Ordering::SeqCst) + 1);
    }

    /// [`Metrics::publish`] for async callers: the render runs off the runtime's threads,
    /// and callers whose change a render already covers do not render again. With many
    /// accounts polls finish faster than one render takes: one render serves a batch of
    /// them, not one render each.
    pub async fn publish_async(self: &Arc<Self>) {
        let change = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.render_turn.lock().await;
        if self.rendered.load(Ordering::SeqCst) >= change {
            return;
        }
        let this = self.clone();
        // A render does not panic (its errors are logged); if it did, the next one serves.
        let _ = tokio::task::spawn_blocking(move || this.render_covering(change)).await;
    }

    /// Renders unless the body already shows change number `change`.
    fn render_covering(&self, change: u64) {
        let gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        if self.rendered.load(Ordering::SeqCst) >= change {
            return;
        }
        // Every change counted up to here is already in the state cloned next.
        let covered = self.changes.load(Ordering::SeqCst);
        let state = self.state().clone();
        match gauges.render(&state, &self.telemetry, Instant::now()) {
            Ok(body) => *self.body.write().unwrap_or_else(|e| e.into_inner()) = Bytes::from(body),
            // Keep serving the previous body; this would be a bug in the rendering.
            Err(e) => tracing::error!(error = %e, "cannot render /metrics"),
        }
        self.rendered.store(covered, Ordering::SeqCst);
    }

    /// The last rendered exposition body.
    pub fn body(&self) -> Bytes {
        self.body.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A copy of the state, for the status page.
    pub fn snapshot_state(&self) -> State {
        self.state().clone()
    }

    /// `(accounts polled at least once, accounts)`.
    pub fn readiness(&self) -> (usize, usize) {
        let state = self.state();
        let polled = state.accounts.values().filter(|a| a.polls > 0).count();
        (polled, state.accounts.len())
    }
}
