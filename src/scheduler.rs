//! One task per account polls its provider on the account's interval, with jitter, and records
//! each outcome in the metrics state. Accounts never wait for each other: a slow provider
//! delays only its own account, and `/metrics` serves the last state meanwhile.
//!
//! Each poller runs under a supervisor: if its task ends (a panic), the account is marked down,
//! the restart is logged and counted, and the poller starts again after a back-off.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::join_all;
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{AccountConfig, Config};
use crate::metrics::{AccountTelemetry, Metrics};
use crate::providers::http::{HttpSettings, later, pause_cap};
use crate::providers::{ErrorClass, HttpClient, PollContext, Provider, ProviderError, SharedState};
use crate::secret::redact;

/// The first polls start within this much of each other, not all in the same instant.
const MAX_STAGGER: Duration = Duration::from_millis(500);
/// A poll may overrun its interval by this much before it is cut off: each request's own
/// timeout is already cut to the interval, so this only catches a provider that loops.
const POLL_GRACE: Duration = Duration::from_secs(1);
/// A stopped poller restarts after this, doubling with every stop that follows without a
/// finished poll in between, up to the account's [`pause_cap`].
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// Panic messages are logged up to this many characters.
const PANIC_MESSAGE_LIMIT: usize = 200;

/// Builds an account's provider, with the state the scheduler keeps for providers: the
/// config's in the exporter, a scripted one in tests.
type ProviderFactory = Arc<dyn Fn(&AccountConfig, &SharedState) -> Arc<dyn Provider> + Send + Sync>;

/// Sent after every poll, once `/metrics` serves it; tests and `--once` wait on these instead
/// of on the clock.
#[derive(Debug, Clone)]
pub struct PollEvent {
    pub account: String,
    pub outcome: Result<(), ProviderError>,
}

/// Runs the pollers of the current configuration.
pub struct Scheduler {
    metrics: Arc<Metrics>,
    clock: Clock,
    events: broadcast::Sender<PollEvent>,
    running: Mutex<Running>,
    /// Bumped by every [`Scheduler::apply`]: pollers drop any pause a provider asked for.
    reloads: watch::Sender<u64>,
    providers: ProviderFactory,
    /// What providers keep between polls (UQPay's tokens), for as long as the scheduler
    /// lives: across reloads, so that the same credentials keep their token.
    provider_state: SharedState,
}

/// What runs now: the HTTP client with the settings it was built from, one poller task per
/// account with the config it runs, and the render tick.
#[derive(Default)]
struct Running {
    client: Option<(HttpSettings, HttpClient)>,
    pollers: BTreeMap<String, (AccountConfig, JoinHandle<()>)>,
    render: Option<JoinHandle<()>>,
}

/// What [`Scheduler::apply`] changed, by account count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

impl Scheduler {
    pub fn new(metrics: Arc<Metrics>, clock: Clock) -> Arc<Self> {
        Self::with_providers(
            metrics,
            clock,
            Arc::new(|account, state| account.provider.settings().build(state)),
        )
    }

    /// A scheduler whose pollers get their provider from `providers` (a test seam).
    pub(crate) fn with_providers(
        metrics: Arc<Metrics>,
        clock: Clock,
        providers: ProviderFactory,
    ) -> Arc<Self> {
        Arc::new(Scheduler {
            metrics,
            clock,
            events: broadcast::channel(1024).0,
            running: Mutex::new(Running::default()),
            reloads: watch::Sender::new(0),
            providers,
            provider_state: SharedState::default(),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PollEvent> {
        self.events.subscribe()
    }

    fn running(&self) -> MutexGuard<'_, Running> {
        // Only handles and configs: still consistent after a panic elsewhere.
        crate::sync::lock(&self.running)
    }

    /// Makes the pollers match `config`. An account whose config is unchanged keeps its task
    /// (an in-flight poll finishes, no extra poll); a new or changed one starts now; one that
    /// left stops, and its series go. Accounts that stay keep their balances and counters. The
    /// HTTP client, and its pooled connections, is kept unless its settings changed; then
    /// every poller restarts with the new one. Pauses providers asked for (rate-limit back-off,
    /// token-mint pause) end: kept pollers go back to their usual schedule.
    pub fn apply(&self, config: &Config) -> Result<Applied, reqwest::Error> {
        let mut running = self.running();
        for account in &config.accounts {
            account
                .provider
                .settings()
                .clear_pauses(&self.provider_state);
        }
        self.reloads.send_modify(|r| *r += 1);
        let settings = config.http_settings();
        let (client, new_client) = match &running.client {
            Some((current, client)) if *current == settings => (client.clone(), false),
            _ => (HttpClient::new(&settings, self.clock)?, true),
        };
        if new_client {
            running.client = Some((settings, client.clone()));
        }
        let mut applied = Applied::default();
        // Stop what leaves or changes before its series are removed, so that an aborted poll
        // cannot bring them back.
        let mut kept = BTreeMap::new();
        for (name, (old, task)) in std::mem::take(&mut running.pollers) {
            match config.accounts.iter().find(|a| a.name == name) {
                Some(new) if !new_client && *new == old && !task.is_finished() => {
                    kept.insert(name, (old, task));
                }
                Some(_) => {
                    task.abort();
                    applied.changed += 1;
                }
                None => {
                    task.abort();
                    applied.removed += 1;
                }
            }
        }
        applied.unchanged = kept.len();
        let telemetry = self
            .metrics
            .configure(&config.accounts, config.global.stale_after);
        for (account, telemetry) in config.accounts.iter().zip(telemetry) {
            if kept.contains_key(&account.name) {
                continue;
            }
            let poller = self.poller(account, telemetry, &client);
            let stagger = account.poll_interval / 10;
            let first = rand::random_range(Duration::ZERO..=stagger.min(MAX_STAGGER));
            tracing::debug!(account = %account.name, "poller started");
            kept.insert(
                account.name.clone(),
                (account.clone(), tokio::spawn(supervise(poller, first))),
            );
        }
        applied.added = config.accounts.len() - applied.unchanged - applied.changed;
        running.pollers = kept;
        if running.render.is_none() {
            running.render = Some(tokio::spawn(self.metrics.clone().render_loop()));
        }
        Ok(applied)
    }

    /// Polls every account of `config` once, at the same time. True if all succeeded.
    pub async fn poll_once(&self, config: &Config) -> Result<bool, reqwest::Error> {
        let client = HttpClient::new(&config.http_settings(), self.clock)?;
        let telemetry = self
            .metrics
            .configure(&config.accounts, config.global.stale_after);
        let pollers: Vec<AccountPoller> = config
            .accounts
            .iter()
            .zip(telemetry)
            .map(|(account, telemetry)| self.poller(account, telemetry, &client))
            .collect();
        let renderer = tokio::spawn(self.metrics.clone().render_loop());
        let results = join_all(pollers.iter().map(|poller| async move {
            // A panic is this account's failure, not the process's.
            match AssertUnwindSafe(poller.poll()).catch_unwind().await {
                Ok(outcome) => outcome.is_ok(),
                Err(panic) => {
                    poller.stopped(&panic_message(panic.as_ref()), None).await;
                    false
                }
            }
        }))
        .await;
        renderer.abort();
        Ok(results.iter().all(|ok| *ok))
    }

    /// Stops every poller: an in-flight poll is dropped where it is.
    pub fn stop(&self) {
        let mut running = self.running();
        for (_, (_, task)) in std::mem::take(&mut running.pollers) {
            task.abort();
        }
        if let Some(render) = running.render.take() {
            render.abort();
        }
    }

    fn poller(
        &self,
        account: &AccountConfig,
        telemetry: Arc<AccountTelemetry>,
        client: &HttpClient,
    ) -> AccountPoller {
        AccountPoller {
            provider: (self.providers)(account, &self.provider_state),
            config: account.clone(),
            telemetry,
            client: client.clone(),
            metrics: self.metrics.clone(),
            events: self.events.clone(),
            reloads: self.reloads.subscribe(),
            finished_a_poll: AtomicBool::new(false),
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `poller` from `first_delay` on; whenever its task ends (it only ends by a panic), marks
/// the account down, logs and counts it, and starts it again after a back-off. Aborting this
/// task stops the poller with it.
async fn supervise(poller: AccountPoller, first_delay: Duration) {
    let poller = Arc::new(poller);
    let mut delay = first_delay;
    let mut stops_in_a_row = 0u32;
    loop {
        poller.finished_a_poll.store(false, Ordering::Relaxed);
        let task = AbortOnDrop(tokio::spawn(poller.clone().run(delay)));
        let ended = task.join().await;
        let reason = match ended {
            Err(e) if e.is_cancelled() => return,
            Err(e) => panic_message(e.into_panic().as_ref()),
            Ok(()) => "the poller returned".to_owned(),
        };
        if poller.finished_a_poll.load(Ordering::Relaxed) {
            stops_in_a_row = 0;
        }
        delay = restart_backoff(stops_in_a_row, poller.config.poll_interval);
        stops_in_a_row = stops_in_a_row.saturating_add(1);
        poller.stopped(&reason, Some(delay)).await;
    }
}

/// The wait before restarting a poller that stopped `stops_in_a_row` times before without
/// finishing a poll: 1 s, 2 s, 4 s... up to the account's [`pause_cap`].
fn restart_backoff(stops_in_a_row: u32, poll_interval: Duration) -> Duration {
    RESTART_BACKOFF
        .saturating_mul(1u32.checked_shl(stops_in_a_row).unwrap_or(u32::MAX))
        .min(pause_cap(poll_interval))
}

/// What a panic said, if it said it as text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// A task that is aborted when its handle goes: the poller stops with its supervisor.
struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    async fn join(mut self) -> Result<(), JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long to wait after a rate-limited poll: a beat skipped, or the provider's
/// `Retry-After` where longer, but at most the account's [`pause_cap`] and never less than the
/// usual `normal` wait.
fn rate_limited_wait(
    normal: Duration,
    retry_after: Option<Duration>,
    poll_interval: Duration,
) -> Duration {
    let asked = normal
        .saturating_mul(2)
        .max(retry_after.unwrap_or_default());
    asked.min(pause_cap(poll_interval)).max(normal)
}

/// `interval` with ±10 % jitter.
fn jittered(interval: Duration) -> Duration {
    let factor = rand::random_range(0.9..=1.1);
    Duration::try_from_secs_f64(interval.as_secs_f64() * factor).unwrap_or(interval)
}

struct AccountPoller {
    config: AccountConfig,
    provider: Arc<dyn Provider>,
    telemetry: Arc<AccountTelemetry>,
    client: HttpClient,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<PollEvent>,
    /// Changes on every reload.
    reloads: watch::Receiver<u64>,
    /// Set when a poll finishes, so that the supervisor's back-off starts over.
    finished_a_poll: AtomicBool,
}

impl AccountPoller {
    async fn run(self: Arc<Self>, first_delay: Duration) {
        let mut reloads = self.reloads.clone();
        reloads.mark_unchanged();
        tokio::time::sleep(first_delay).await;
        loop {
            let started = Instant::now();
            let outcome = self.poll().await;
            self.finished_a_poll.store(true, Ordering::Relaxed);
            let interval = self.config.poll_interval;
            let normal = jittered(interval);
            let wait = match &outcome {
                // The provider asked us to slow down.
                Err(e) if e.class == ErrorClass::RateLimit => {
                    rate_limited_wait(normal, e.retry_after, interval)
                }
                _ => normal,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(later(started, wait)) => {}
                // A reload ends the provider's pause: back to the usual schedule.
                Ok(()) = reloads.changed() => {
                    tokio::time::sleep_until(later(started, normal)).await;
                }
            }
        }
    }

    /// Marks the account down after its poller stopped for `reason` (a panic), logs it and,
    /// when it restarts in `restart_in`, counts the restart. Returns once `/metrics` shows it.
    async fn stopped(&self, reason: &str, restart_in: Option<Duration>) {
        let name = self.config.name.as_str();
        let redacted = redact(reason, &self.config.secrets);
        let reason: String = redacted
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(PANIC_MESSAGE_LIMIT)
            .collect();
        let generation = self.metrics.poller_stopped(name);
        match restart_in {
            Some(delay) => {
                self.telemetry.count_poller_restart();
                tracing::error!(
                    provider = self.telemetry.provider(),
                    account = name,
                    reason = %reason,
                    restart_in_seconds = delay.as_secs_f64(),
                    "the account's poller stopped unexpectedly (a bug); the account is down until it polls again"
                );
            }
            None => tracing::error!(
                provider = self.telemetry.provider(),
                account = name,
                reason = %reason,
                "polling the account panicked (a bug); the account is down"
            ),
        }
        self.metrics.rendered(generation).await;
    }

    async fn poll(&self) -> Result<(), ProviderError> {
        let name = self.config.name.as_str();
        let provider = self.telemetry.provider();
        let started = Instant::now();
        let deadline = later(started, self.config.poll_interval);
        let http = PollContext::new(
            &self.client,
            self.telemetry.as_ref(),
            &self.config.secrets,
            deadline,
            self.config.max_currencies,
        );
        let outcome =
            tokio::time::timeout_at(later(deadline, POLL_GRACE), self.provider.fetch(&http))
                .await
                .unwrap_or_else(|_| {
                    Err(ProviderError::new(
                        "timeout",
                        ErrorClass::Transport,
                        "the poll did not finish within poll_interval",
                    ))
                });
        let outcome = self.telemetry.admit(outcome, self.config.max_currencies);
        let duration = started.elapsed();
        let generation = self.metrics.record_poll(name, &outcome, duration);
        // Whoever gets the event or the log line may scrape right away and must see this poll.
        self.metrics.rendered(generation).await;
        match &outcome {
            Ok(snapshot) => tracing::debug!(
                provider,
                account = name,
                balances = snapshot.balances.len(),
                duration_seconds = duration.as_secs_f64(),
                "poll succeeded"
            ),
            Err(e) => tracing::warn!(
                provider,
                account = name,
                code = %e.code,
                class = %e.class,
                reason = %e.message,
                "poll failed"
            ),
        }
        let outcome = outcome.map(|_| ());
        let _ = self.events.send(PollEvent {
            account: name.to_owned(),
            outcome: outcome.clone(),
        });
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Format, parse};

    /// Accounts at a port nothing listens on: their polls fail at once, which is fine here.
    fn config(timeout: &str, accounts: &[(&str, &str)]) -> Config {
        let mut yaml = format!("global:\n  request_timeout: {timeout}\naccounts:\n");
        for (name, interval) in accounts {
            yaml.push_str(&format!(
                "  - {{name: {name}, provider: engagelab, product: sms, base_url: 'http://127.0.0.1:9', dev_key: k, dev_secret: s, poll_interval: {interval}}}\n"
            ));
        }
        parse(&yaml, Format::Yaml, Path::new(".")).unwrap()
    }

    fn tasks(scheduler: &Scheduler) -> BTreeMap<String, tokio::task::Id> {
        let running = scheduler.running();
        running
            .pollers
            .iter()
            .map(|(name, (_, task))| (name.clone(), task.id()))
            .collect()
    }

    fn client(scheduler: &Scheduler) -> HttpClient {
        scheduler.running().client.clone().unwrap().1
    }

    #[tokio::test]
    async fn a_reload_restarts_only_what_changed_and_keeps_the_client() {
        let scheduler = Scheduler::new(Metrics::new(), Clock::system());
        let first = config("5s", &[("same", "1h"), ("changes", "1h"), ("goes", "1h")]);
        let applied = scheduler.apply(&first).unwrap();
        assert_eq!((applied.added, applied.unchanged), (3, 0));
        let (before, client_before) = (tasks(&scheduler), client(&scheduler));

        let second = config("5s", &[("same", "1h"), ("changes", "2h"), ("new", "1h")]);
        let applied = scheduler.apply(&second).unwrap();
        assert_eq!(
            applied,
            Applied {
                added: 1,
                changed: 1,
                removed: 1,
                unchanged: 1
            }
        );
        let after = tasks(&scheduler);
        assert_eq!(after.keys().collect::<Vec<_>>(), ["changes", "new", "same"]);
        assert_eq!(after["same"], before["same"], "the unchanged task runs on");
        assert_ne!(after["changes"], before["changes"]);
        assert!(client(&scheduler).is_same(&client_before));

        // New HTTP settings: a new client, and every poller restarts with it.
        let applied = scheduler.apply(&config("7s", &[("same", "1h")])).unwrap();
        assert_eq!(
            (applied.changed, applied.removed, applied.unchanged),
            (1, 2, 0)
        );
        assert_ne!(tasks(&scheduler)["same"], after["same"]);
        assert!(!client(&scheduler).is_same(&client_before));
        scheduler.stop();
        assert!(tasks(&scheduler).is_empty());
    }

    /// What a [`Scripted`] provider does on one poll.
    #[derive(Clone, Copy)]
    enum Step {
        Panic,
        Balance,
        /// Reports the fetch, waits for a permit of the gate, then answers with a balance.
        Gated,
        RateLimited(Duration),
    }

    /// Plays its steps poll by poll (the last one repeats) and reports every fetch by account
    /// and step index.
    struct Scripted {
        account: String,
        steps: Vec<Step>,
        next: std::sync::atomic::AtomicUsize,
        fetched: tokio::sync::mpsc::UnboundedSender<(String, usize)>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    #[async_trait::async_trait]
    impl Provider for Scripted {
        async fn fetch(
            &self,
            _: &PollContext<'_>,
        ) -> Result<crate::snapshot::Snapshot, ProviderError> {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let _ = self.fetched.send((self.account.clone(), index));
            let step = self.steps[index.min(self.steps.len() - 1)];
            let balance = || {
                let mut snapshot = crate::snapshot::Snapshot::default();
                snapshot.add("USD", "total", Some(rust_decimal::Decimal::new(1250, 2)));
                snapshot
            };
            match step {
                Step::Panic => panic!("scripted panic in {}", self.account),
                Step::Balance => Ok(balance()),
                Step::Gated => {
                    self.gate.acquire().await.unwrap().forget();
                    Ok(balance())
                }
                Step::RateLimited(retry_after) => {
                    Err(
                        ProviderError::new("too_many_requests", ErrorClass::RateLimit, "slow down")
                            .with_retry_after(Some(retry_after)),
                    )
                }
            }
        }
    }

    /// Paused time runs ahead when idle: a poll that never comes fails the test at once.
    const WAIT_LIMIT: Duration = Duration::from_secs(3600);

    struct Harness {
        scheduler: Arc<Scheduler>,
        events: broadcast::Receiver<PollEvent>,
        fetched: tokio::sync::mpsc::UnboundedReceiver<(String, usize)>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    /// A scheduler whose accounts play `scripts` (by account name; others always answer).
    fn harness(scripts: &[(&str, Vec<Step>)]) -> Harness {
        let (sender, fetched) = tokio::sync::mpsc::unbounded_channel();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let scripts: BTreeMap<String, Vec<Step>> = scripts
            .iter()
            .map(|(name, steps)| ((*name).to_owned(), steps.clone()))
            .collect();
        let provider_gate = gate.clone();
        let scheduler = Scheduler::with_providers(
            Metrics::new(),
            Clock::system(),
            Arc::new(move |account: &AccountConfig, _: &SharedState| {
                let steps = scripts
                    .get(&account.name)
                    .cloned()
                    .unwrap_or(vec![Step::Balance]);
                Arc::new(Scripted {
                    account: account.name.clone(),
                    steps,
                    next: Default::default(),
                    fetched: sender.clone(),
                    gate: provider_gate.clone(),
                }) as Arc<dyn Provider>
            }),
        );
        Harness {
            events: scheduler.subscribe(),
            scheduler,
            fetched,
            gate,
        }
    }

    impl Harness {
        /// The next finished poll of `account`, within an hour of paused time.
        async fn next_poll(&mut self, account: &str) -> Result<(), ProviderError> {
            let next = async {
                loop {
                    let event = self.events.recv().await.unwrap();
                    if event.account == account {
                        return event.outcome;
                    }
                }
            };
            tokio::time::timeout(WAIT_LIMIT, next)
                .await
                .unwrap_or_else(|_| panic!("{account} was not polled within an hour"))
        }

        /// Waits until `account`'s provider is asked for its `index`-th answer (from 0),
        /// within an hour of paused time.
        async fn fetch_started(&mut self, account: &str, index: usize) {
            let started = async {
                while let Some((name, i)) = self.fetched.recv().await {
                    if name == account && i == index {
                        return;
                    }
                }
            };
            tokio::time::timeout(WAIT_LIMIT, started)
                .await
                .unwrap_or_else(|_| panic!("{account} was not asked for answer {index}"))
        }

        /// The sample of `family` for `account` on `/metrics`.
        fn sample(&self, family: &str, account: &str) -> Option<String> {
            let body = self.scheduler.metrics().body();
            let body = String::from_utf8_lossy(&body);
            let prefix = format!("{family}{{account=\"{account}\",provider=\"engagelab\"}} ");
            body.lines()
                .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_poller_is_marked_down_counted_and_restarted() {
        let mut h = harness(&[("flaky", vec![Step::Panic, Step::Gated, Step::Balance])]);
        let config = config("5s", &[("flaky", "1m"), ("steady", "1m")]);
        h.scheduler.apply(&config).unwrap();
        let supervisors = tasks(&h.scheduler);
        assert!(h.next_poll("steady").await.is_ok());

        // The first poll of "flaky" panicked; the second has begun and waits for the gate.
        h.fetch_started("flaky", 1).await;
        let restarts = "balance_exporter_poller_restarts_total";
        assert_eq!(h.sample("balance_up", "flaky").as_deref(), Some("0"));
        assert_eq!(h.sample(restarts, "flaky").as_deref(), Some("1"));
        assert_eq!(h.sample(restarts, "steady").as_deref(), Some("0"));
        assert_eq!(h.sample("balance_up", "steady").as_deref(), Some("1"));

        h.gate.add_permits(1);
        assert!(h.next_poll("flaky").await.is_ok());
        assert_eq!(h.sample("balance_up", "flaky").as_deref(), Some("1"));

        // Both go on polling on their interval; no other restart, the same supervisors.
        for _ in 0..2 {
            assert!(h.next_poll("steady").await.is_ok());
        }
        assert!(h.next_poll("flaky").await.is_ok());
        assert_eq!(h.sample(restarts, "flaky").as_deref(), Some("1"));
        assert_eq!(h.sample(restarts, "steady").as_deref(), Some("0"));
        assert_eq!(tasks(&h.scheduler), supervisors);
        h.scheduler.stop();
    }

    /// The first polls start at once (within [`MAX_STAGGER`]), not after an interval: the
    /// demo and a freshly started exporter show balances right away.
    #[tokio::test(start_paused = true)]
    async fn the_first_polls_start_within_the_stagger_not_after_an_interval() {
        let mut h = harness(&[]);
        let started = Instant::now();
        let accounts = [("a", "1h"), ("b", "1h"), ("c", "5s"), ("d", "1s")];
        h.scheduler.apply(&config("5s", &accounts)).unwrap();
        let mut waiting: std::collections::BTreeSet<&str> =
            accounts.iter().map(|(name, _)| *name).collect();
        while !waiting.is_empty() {
            let (account, _) = tokio::time::timeout(WAIT_LIMIT, h.fetched.recv())
                .await
                .unwrap_or_else(|_| panic!("no first poll of {waiting:?} within an hour"))
                .unwrap();
            waiting.remove(account.as_str());
        }
        let took = Instant::now().duration_since(started);
        // Paused time: the largest of the random first delays, never more than the cap.
        assert!(took <= MAX_STAGGER, "{took:?}");
        h.scheduler.stop();
    }

    #[tokio::test(start_paused = true)]
    async fn a_poller_that_keeps_panicking_restarts_ever_more_slowly() {
        // Twelve panics, then a poll held open: the count is read while nothing can panic.
        let mut script = vec![Step::Panic; 12];
        script.push(Step::Gated);
        let mut h = harness(&[("broken", script)]);
        h.scheduler
            .apply(&config("5s", &[("broken", "1m")]))
            .unwrap();
        h.fetch_started("broken", 0).await;
        let mut last = Instant::now();
        let mut gaps = Vec::new();
        for index in 1..=12 {
            h.fetch_started("broken", index).await;
            gaps.push(Instant::now().duration_since(last).as_secs());
            last = Instant::now();
        }
        // Paused time: the gaps are the back-off itself (plus a render gap, under a second).
        assert_eq!(gaps, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        let restarts = "balance_exporter_poller_restarts_total";
        assert_eq!(h.sample(restarts, "broken").as_deref(), Some("12"));
        assert_eq!(h.sample("balance_up", "broken").as_deref(), Some("0"));
        h.scheduler.stop();
    }

    #[test]
    fn restart_backoff_doubles_up_to_the_pause_cap() {
        let minute = Duration::from_secs(60);
        let secs = |stops| restart_backoff(stops, minute).as_secs();
        assert_eq!((secs(0), secs(1), secs(2), secs(9)), (1, 2, 4, 512));
        assert_eq!((secs(10), secs(40), secs(u32::MAX)), (600, 600, 600));
        let hour = Duration::from_secs(3600);
        assert_eq!(restart_backoff(u32::MAX, hour), hour);
    }

    #[test]
    fn a_rate_limited_wait_skips_a_beat_honours_retry_after_and_is_capped() {
        let s = Duration::from_secs;
        let minute = s(60);
        assert_eq!(rate_limited_wait(minute, None, minute), s(120));
        assert_eq!(rate_limited_wait(minute, Some(s(300)), minute), s(300));
        for hostile in [Duration::MAX, s(u64::MAX), s(86_400)] {
            assert_eq!(rate_limited_wait(minute, Some(hostile), minute), s(600));
        }
        // Past ten minutes the cap is the interval: the usual jittered wait still holds.
        let hour = s(3600);
        assert_eq!(rate_limited_wait(hour, Some(Duration::MAX), hour), hour);
        assert_eq!(rate_limited_wait(s(3900), None, hour), s(3900));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hostile_retry_after_pauses_polling_ten_minutes_at_most_and_a_reload_ends_it() {
        let limited = Step::RateLimited(Duration::MAX);
        let mut h = harness(&[("limited", vec![limited, limited, Step::Balance])]);
        let config = config("5s", &[("limited", "1m")]);
        h.scheduler.apply(&config).unwrap();
        assert!(h.next_poll("limited").await.is_err());
        let first = Instant::now();
        assert!(h.next_poll("limited").await.is_err());
        let paused = Instant::now().duration_since(first);
        // Paused time: the pause itself (600 s), give or take a render gap.
        assert!(
            paused.abs_diff(Duration::from_secs(600)) < Duration::from_secs(1),
            "{paused:?}"
        );

        // Rate-limited again, then a reload that keeps the account: back to the interval.
        let second = Instant::now();
        let applied = h.scheduler.apply(&config).unwrap();
        assert_eq!(applied.unchanged, 1);
        assert!(h.next_poll("limited").await.is_ok());
        let waited = Instant::now().duration_since(second);
        assert!(waited <= Duration::from_secs(67), "{waited:?}");
        h.scheduler.stop();
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_clears_the_uqpay_mint_pause_and_keeps_the_token() {
        use crate::providers::ProviderConfig;
        use crate::providers::uqpay::token::{CredentialKey, Lifetime, Minted, TokenSlots};
        let yaml = "accounts:\n  - {name: u, provider: uqpay, base_url: 'http://127.0.0.1:9/api', client_id: c, api_key: k}\n";
        let config = parse(yaml, Format::Yaml, Path::new(".")).unwrap();
        let ProviderConfig::UqPay(uqpay) = &config.accounts[0].provider else {
            panic!("not UQPay");
        };
        let h = harness(&[]);
        // The scheduler's own slot, as the UQPay provider it builds would hold it.
        let slots = h.scheduler.provider_state.part::<TokenSlots>();
        let slot = slots.slot_for(CredentialKey::of(uqpay));
        let far = Instant::now() + Duration::from_secs(3600);
        {
            let mut guard = slot.lock(far).await.unwrap();
            let minted = Minted {
                value: crate::secret::Secret::new("token-one"),
                lifetime: Lifetime::Stated(Duration::from_secs(1800)),
            };
            guard.store(Ok(minted), Instant::now(), "u").unwrap();
            let limited = ProviderError::new("too_many_requests", ErrorClass::RateLimit, "wait")
                .with_retry_after(Some(Duration::MAX));
            guard.store(Err(limited), Instant::now(), "u").unwrap();
            assert!(guard.check_mint_allowed(Instant::now()).is_err());
        }
        h.scheduler.apply(&config).unwrap();
        let mut guard = slot.lock(far).await.unwrap();
        assert!(guard.check_mint_allowed(Instant::now()).is_ok());
        match guard.usable(None, Instant::now()) {
            crate::providers::uqpay::token::Usable::Token(t) => {
                assert_eq!(t.value().expose(), "token-one")
            }
            other => panic!("the token was dropped: {other:?}"),
        }
        h.scheduler.stop();
    }
}
