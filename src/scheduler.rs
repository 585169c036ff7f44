//! One task per account polls its provider on the account's interval, with jitter, and records
//! each outcome in the metrics state. Accounts never wait for each other: a slow provider
//! delays only its own account, and `/metrics` serves the last state meanwhile.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::join_all;
use rustls::pki_types::CertificateDer;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{AccountConfig, Config};
use crate::metrics::{AccountTelemetry, Metrics};
use crate::providers::{ErrorClass, Http, HttpClient, Provider, ProviderError};

/// The first polls start within this much of each other, not all in the same instant.
const MAX_STAGGER: Duration = Duration::from_millis(500);
/// A poll may overrun its interval by this much before it is cut off: each request's own
/// timeout is already cut to the interval, so this only catches a provider that loops.
const POLL_GRACE: Duration = Duration::from_secs(1);

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
}

/// What runs now: the HTTP client with the settings it was built from, one poller task per
/// account with the config it runs, and the render tick.
#[derive(Default)]
struct Running {
    client: Option<(HttpSettings, HttpClient)>,
    pollers: BTreeMap<String, (AccountConfig, JoinHandle<()>)>,
    render: Option<JoinHandle<()>>,
}

/// What the HTTP client is built from: the global settings and which accounts trust which
/// extra CAs (`ca_file`). When they change, so does the client.
#[derive(Debug, Clone, PartialEq)]
struct HttpSettings {
    request_timeout: Duration,
    max_concurrent_requests: usize,
    extra_roots: Vec<(String, Vec<CertificateDer<'static>>)>,
}

impl HttpSettings {
    fn of(config: &Config) -> Self {
        HttpSettings {
            request_timeout: config.global.request_timeout,
            max_concurrent_requests: config.global.max_concurrent_requests,
            extra_roots: config
                .accounts
                .iter()
                .filter(|a| !a.ca_certificates.is_empty())
                .map(|a| (a.name.clone(), a.ca_certificates.clone()))
                .collect(),
        }
    }
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
        Arc::new(Scheduler {
            metrics,
            clock,
            events: broadcast::channel(1024).0,
            running: Mutex::new(Running::default()),
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
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the pollers match `config`. An account whose config is unchanged keeps its task
    /// (an in-flight poll finishes, no extra poll); a new or changed one starts now; one that
    /// left stops, and its series go. Accounts that stay keep their balances and counters. The
    /// HTTP client, and its pooled connections, is kept unless its settings changed; then
    /// every poller restarts with the new one.
    pub fn apply(&self, config: &Config) -> Result<Applied, reqwest::Error> {
        let mut running = self.running();
        let settings = HttpSettings::of(config);
        let (client, new_client) = match &running.client {
            Some((current, client)) if *current == settings => (client.clone(), false),
            _ => (HttpClient::new(config, self.clock)?, true),
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
                (account.clone(), tokio::spawn(poller.run(first))),
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
        let client = HttpClient::new(config, self.clock)?;
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
        let results = join_all(pollers.iter().map(AccountPoller::poll)).await;
        renderer.abort();
        Ok(results.iter().all(Result::is_ok))
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
            provider: account.provider.settings().build(),
            config: account.clone(),
            telemetry,
            client: client.clone(),
            metrics: self.metrics.clone(),
            events: self.events.clone(),
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

struct AccountPoller {
    config: AccountConfig,
    provider: Arc<dyn Provider>,
    telemetry: Arc<AccountTelemetry>,
    client: HttpClient,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<PollEvent>,
}

impl AccountPoller {
    async fn run(self, first_delay: Duration) {
        tokio::time::sleep(first_delay).await;
        loop {
            let started = Instant::now();
            let outcome = self.poll().await;
            let mut wait = self
                .config
                .poll_interval
                .mul_f64(rand::random_range(0.9..=1.1));
            if matches!(&outcome, Err(e) if e.class == ErrorClass::RateLimit) {
                // The provider asked us to slow down: skip a beat.
                wait *= 2;
            }
            tokio::time::sleep_until(started + wait).await;
        }
    }

    async fn poll(&self) -> Result<(), ProviderError> {
        let name = self.config.name.as_str();
        let provider = self.telemetry.provider();
        let started = Instant::now();
        let deadline = started + self.config.poll_interval;
        let http = Http::new(
            &self.client,
            &self.telemetry,
            &self.config.secrets,
            deadline,
            self.config.max_currencies,
        );
        let outcome = tokio::time::timeout_at(deadline + POLL_GRACE, self.provider.fetch(&http))
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
}
