//! The exporter's state and its rendering into the `/metrics` body.
//!
//! Pollers record each poll's outcome here and mark the state changed; one render task turns
//! changes into the exposition text (plain and gzip, compressed once per render), with at least
//! [`RENDER_GAP`] between renders, and `/metrics` serves the last rendered body without
//! touching the state.

pub mod history;
mod render;
mod telemetry;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::watch;
use tokio::time::Instant;

pub use history::{History, Point};
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
    /// Recent values of the thresholded balances, for the status page's trend.
    pub history: History,
}

#[derive(Debug, Clone)]
pub struct LastError {
    pub code: String,
    pub class: ErrorClass,
    pub message: String,
    pub at: SystemTime,
    /// When a poll next succeeded, if one did.
    pub recovered: Option<SystemTime>,
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
            history: History::default(),
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

impl AccountState {
    /// Balances that have a threshold but are absent from the fresh snapshot: the provider
    /// stopped sending a currency or kind that someone guards. `(threshold, currency)` pairs,
    /// each currency and kind once, in threshold order. Empty without a fresh snapshot (the
    /// account is then down or stale, which says more).
    pub fn missing_balances(&self, stale_after: Duration, now: Instant) -> Vec<(&Threshold, &str)> {
        let Some(snapshot) = self.fresh_snapshot(stale_after, now) else {
            return Vec::new();
        };
        self.thresholded_balances()
            .into_iter()
            .filter(|(t, currency)| !snapshot.has(currency, t.kind))
            .collect()
    }
}

/// Renders start at least this far apart: with thousands of accounts, polls finishing close
/// together share one render instead of each re-rendering every account.
pub const RENDER_GAP: Duration = Duration::from_millis(200);
/// ... and at least this many times the last render's duration apart, so that rendering takes
/// at most about a tenth of a core however many series there are.
const RENDER_GAP_PER_RENDER_TIME: u32 = 10;
/// Without state changes, re-render this often so the process metrics (CPU, memory, file
/// descriptors) stay current. Prometheus scrapes every 15 s or more; a render of 1,000 accounts
/// costs a few milliseconds (BENCHMARKS.md), so this is a fraction of a percent of a core.
pub const PROCESS_REFRESH: Duration = Duration::from_secs(5);

/// One render of the state: the exposition text, plain and gzip-compressed.
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub plain: Bytes,
    pub gzip: Bytes,
    /// `(accounts polled at least once, accounts)` in this render.
    pub polled: (usize, usize),
}

/// Everything `/metrics` and the status page are made of.
#[derive(Debug, Clone)]
pub struct State {
    pub accounts: BTreeMap<String, AccountState>,
    pub stale_after: Duration,
    /// The last reload, if it failed and none succeeded since.
    pub reload_failure: Option<ReloadFailure>,
}

/// A reload that was refused: the running configuration stayed.
#[derive(Debug, Clone)]
pub struct ReloadFailure {
    pub at: SystemTime,
    /// The configuration error's text (it quotes keys and paths, never values), capped at
    /// [`RELOAD_FAILURE_LIMIT`] bytes.
    pub reason: String,
}

/// How much of a reload error is kept for the status page.
pub const RELOAD_FAILURE_LIMIT: usize = 8 * 1024;

/// The shared state, its telemetry, and the rendered body.
pub struct Metrics {
    telemetry: Arc<Telemetry>,
    state: Mutex<State>,
    body: RwLock<Body>,
    /// The generation of the state: bumped, under the state lock, by every change.
    changed: watch::Sender<u64>,
    /// The newest generation whose render `/metrics` serves.
    rendered: watch::Sender<u64>,
    /// Held while rendering, so that an older state never overwrites a newer body.
    renderer: Mutex<render::Renderer>,
    accounts: Mutex<BTreeMap<String, Arc<AccountTelemetry>>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics {
            telemetry: Telemetry::new(),
            state: Mutex::new(State {
                accounts: BTreeMap::new(),
                stale_after: crate::config::Global::default().stale_after,
                reload_failure: None,
            }),
            body: RwLock::new(Body::default()),
            changed: watch::Sender::new(0),
            rendered: watch::Sender::new(0),
            renderer: Mutex::new(render::Renderer::default()),
            accounts: Mutex::new(BTreeMap::new()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Poisoning would need a panic while updating plain data; the data is still usable.
        crate::sync::lock(&self.state)
    }

    /// Makes the state match a (new) configuration: accounts that left are removed with all
    /// their series, new ones are added, kept ones keep their balances and counters.
    /// Returns each account's telemetry handle, in config order.
    pub fn configure(
        &self,
        accounts: &[AccountConfig],
        stale_after: Duration,
    ) -> Vec<Arc<AccountTelemetry>> {
        let mut handles = crate::sync::lock(&self.accounts);
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
        self.changed.send_modify(|g| *g += 1);
        drop(state);
        drop(handles);
        self.render_now();
        out
    }

    /// Records the outcome of one poll. Returns the state's generation that includes it, for
    /// [`Metrics::rendered`].
    pub fn record_poll(
        &self,
        account: &str,
        outcome: &Result<Snapshot, ProviderError>,
        duration: Duration,
    ) -> u64 {
        let mut state = self.state();
        let stale_after = state.stale_after;
        let Some(a) = state.accounts.get_mut(account) else {
            return *self.changed.borrow();
        };
        a.polls += 1;
        a.last_poll_duration = Some(duration);
        match outcome {
            Ok(snapshot) => {
                a.up = true;
                a.last_success = Some(SystemTime::now());
                if let Some(e) = a.last_error.as_mut() {
                    e.recovered.get_or_insert(SystemTime::now());
                }
                a.known_currencies = snapshot
                    .currencies()
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                a.snapshot = Some((snapshot.clone(), Instant::now()));
                a.record_history(snapshot, SystemTime::now());
                for (t, currency) in a.missing_balances(stale_after, Instant::now()) {
                    tracing::warn!(
                        provider = a.provider,
                        account = %a.account,
                        currency = %currency.escape_debug(),
                        kind = t.kind,
                        "balance missing: it has a threshold but the provider's answer has no such balance"
                    );
                }
            }
            Err(error) => {
                a.up = false;
                a.last_error = Some(LastError {
                    code: error.code.clone(),
                    class: error.class,
                    message: error.message.clone(),
                    at: SystemTime::now(),
                    recovered: None,
                });
            }
        }
        let mut generation = 0;
        self.changed.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        generation
    }

    /// Marks `account` down because its poller stopped in the middle of a poll (a panic): the
    /// poll that never finished counts as a failed one, so `balance_up` shows 0 even before a
    /// first poll. Its last error and balances stay as they were. Returns the generation, as
    /// [`Metrics::record_poll`] does.
    pub fn poller_stopped(&self, account: &str) -> u64 {
        let mut state = self.state();
        if let Some(a) = state.accounts.get_mut(account) {
            a.polls += 1;
            a.up = false;
        }
        let mut generation = 0;
        self.changed.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        generation
    }

    /// Waits until `/metrics` serves a render of `generation` or newer. Needs
    /// [`Metrics::render_loop`] running.
    pub async fn rendered(&self, generation: u64) {
        let mut rendered = self.rendered.subscribe();
        // The sender lives in `self`, so this cannot fail while we borrow it.
        let _ = rendered.wait_for(|r| *r >= generation).await;
    }

    /// Renders whenever the state changed, [`RENDER_GAP`] or ten render times apart; also
    /// when a snapshot goes stale and every [`PROCESS_REFRESH`]. Runs until aborted.
    pub async fn render_loop(self: Arc<Self>) {
        let mut changes = self.changed.subscribe();
        let mut last = Instant::now();
        let mut gap = RENDER_GAP;
        loop {
            let refresh = self.next_refresh(last);
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(refresh) => {}
            }
            tokio::time::sleep_until(last + gap).await;
            changes.mark_unchanged();
            last = Instant::now();
            let this = self.clone();
            // A render of thousands of accounts takes milliseconds: keep it off the workers
            // that serve /metrics.
            if tokio::task::spawn_blocking(move || this.render_now())
                .await
                .is_err()
            {
                tracing::error!("rendering /metrics panicked");
            }
            gap = RENDER_GAP.max(last.elapsed() * RENDER_GAP_PER_RENDER_TIME);
        }
    }

    /// When the body must be re-rendered without a change: the next time a snapshot goes
    /// stale, or [`PROCESS_REFRESH`] after the last render.
    fn next_refresh(&self, last_render: Instant) -> Instant {
        let state = self.state();
        let now = Instant::now();
        state
            .accounts
            .values()
            .filter_map(|a| a.snapshot.as_ref().map(|(_, at)| *at + state.stale_after))
            .filter(|stale_at| *stale_at > now)
            .fold(last_render + PROCESS_REFRESH, Instant::min)
    }

    /// Renders the state into the exposition body served on `/metrics`, now.
    pub fn render_now(&self) {
        let mut renderer = crate::sync::lock(&self.renderer);
        // The generation and readiness as the render starts: the body has at least these.
        let (generation, polled) = {
            let state = self.state();
            let polled = state.accounts.values().filter(|a| a.polls > 0).count();
            (*self.changed.borrow(), (polled, state.accounts.len()))
        };
        match renderer.render(&self.state, &self.telemetry, Instant::now()) {
            Ok(text) => {
                let body = Body {
                    gzip: gzip(text.as_bytes()),
                    plain: Bytes::from(text),
                    polled,
                };
                *crate::sync::write(&self.body) = body;
            }
            // Keep serving the previous body; this would be a bug in the rendering.
            Err(e) => tracing::error!(error = %e, "cannot render /metrics"),
        }
        release_freed_memory();
        // Advanced even after an error, so that no poller waits forever.
        self.rendered.send_if_modified(|r| {
            let newer = generation > *r;
            if newer {
                *r = generation;
            }
            newer
        });
    }

    /// Records the outcome of loading the configuration (at start or on reload) and re-renders.
    pub fn config_loaded(&self, successful: bool) {
        self.telemetry.config_loaded(successful);
        if successful {
            self.state().reload_failure = None;
        }
        self.render_now();
    }

    /// Records a refused reload and why (the configuration error), for the status page.
    pub fn config_load_failed(&self, reason: &str) {
        let mut end = reason.len().min(RELOAD_FAILURE_LIMIT);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.state().reload_failure = Some(ReloadFailure {
            at: SystemTime::now(),
            reason: reason[..end].to_owned(),
        });
        self.config_loaded(false);
    }

    /// The last rendered exposition body.
    pub fn body(&self) -> Bytes {
        crate::sync::read(&self.body).plain.clone()
    }

    /// The last rendered exposition body, plain and gzip.
    pub fn bodies(&self) -> Body {
        crate::sync::read(&self.body).clone()
    }

    /// A copy of the state, for the status page.
    pub fn snapshot_state(&self) -> State {
        self.state().clone()
    }

    /// `(accounts polled at least once, accounts)` as `/metrics` shows them: ready means
    /// that a scrape now sees every account.
    pub fn readiness(&self) -> (usize, usize) {
        crate::sync::read(&self.body).polled
    }
}

/// Makes glibc give large buffers (the bodies, 11 MB at 5,000 accounts) their own mappings,
/// returned to the kernel when freed. By default glibc raises that threshold to the largest
/// buffer freed so far, after which every render's bodies land in the heap among long-lived
/// data and stay resident (BENCHMARKS.md, fan-out). Call once, at start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation policy; it may be called at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns the heap's free pages to the kernel. A render of thousands of accounts allocates
/// tens of megabytes of short-lived small objects among long-lived data; glibc keeps those
/// pages once freed, so without this RSS holds every render's peak (BENCHMARKS.md, fan-out).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of glibc's own heap; it has no
    // preconditions and may be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `text` gzip-compressed. Level 1: exposition text is repetitive enough that higher levels
/// gain little, and this runs on every render.
pub fn gzip(text: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::with_capacity(text.len() / 8), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text);
    let mut compressed = encoder.finish().unwrap_or_default();
    // Served until the next render: without the slack of the Vec's doubling.
    compressed.shrink_to_fit();
    Bytes::from(compressed)
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;

    fn guarded(currency: Option<&str>, kind: &'static str) -> Threshold {
        Threshold {
            kind,
            currency: currency.map(str::to_owned),
            warning: None,
            critical: Some(Decimal::ONE),
        }
    }

    fn account(thresholds: Vec<Threshold>, snapshot: Snapshot, at: Instant) -> AccountState {
        AccountState {
            provider: "engagelab",
            account: "a".to_owned(),
            poll_interval: Duration::from_secs(60),
            thresholds,
            known_currencies: snapshot
                .currencies()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            snapshot: Some((snapshot, at)),
            polls: 1,
            up: true,
            last_success: None,
            last_poll_duration: None,
            last_error: None,
            history: History::default(),
        }
    }

    #[test]
    fn missing_balances_are_the_guarded_ones_absent_from_a_fresh_snapshot() {
        let mut snapshot = Snapshot::default();
        snapshot.add("USD", "total", Some(Decimal::TEN));
        let now = Instant::now();
        let stale_after = Duration::from_secs(1800);
        let a = account(
            vec![
                guarded(Some("USD"), "total"),
                guarded(None, "gift"),
                // The same currency and kind by another route: reported once.
                guarded(Some("USD"), "gift"),
                guarded(Some("EUR"), "total"),
            ],
            snapshot.clone(),
            now,
        );
        let missing: Vec<(&str, &str)> = a
            .missing_balances(stale_after, now)
            .into_iter()
            .map(|(t, c)| (c, t.kind))
            .collect();
        assert_eq!(missing, [("USD", "gift"), ("EUR", "total")]);

        // Stale: the balances are gone from /metrics for that reason, not "missing".
        let old = account(vec![guarded(Some("EUR"), "total")], snapshot, now);
        assert!(
            old.missing_balances(stale_after, now + stale_after)
                .is_empty()
        );
        // Never polled successfully: nothing to compare with.
        let mut never = old.clone();
        never.snapshot = None;
        assert!(never.missing_balances(stale_after, now).is_empty());
    }
}
