//! One task per account polls its provider on the account's interval, with jitter, and records
//! each outcome in the metrics state. Accounts never wait for each other: a slow provider
//! delays only its own account, and `/metrics` serves the last state meanwhile.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{AccountConfig, Config};
use crate::metrics::{AccountTelemetry, Metrics};
use crate::providers::{ErrorClass, Http, HttpClient, Provider, ProviderError};

/// Re-render this often even without polls: stale balances leave, process metrics move.
const RENDER_TICK: Duration = Duration::from_secs(1);
/// The first polls start within this much of each other, not all in the same instant.
const MAX_STAGGER: Duration = Duration::from_millis(500);
/// A poll may overrun its interval by this much before it is cut off: each request's own
/// timeout is already cut to the interval, so this only catches a provider that loops.
const POLL_GRACE: Duration = Duration::from_secs(1);

/// Sent after every poll; tests and `--once` wait on these instead of on the clock.
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
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Scheduler {
    pub fn new(metrics: Arc<Metrics>, clock: Clock) -> Arc<Self> {
        Arc::new(Scheduler {
            metrics,
            clock,
            events: broadcast::channel(1024).0,
            tasks: Mutex::new(Vec::new()),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PollEvent> {
        self.events.subscribe()
    }

    /// Starts polling `config`'s accounts, replacing whatever ran before. Accounts that stay
    /// keep their last balances and counters.
    pub fn apply(&self, config: &Config) -> Result<(), reqwest::Error> {
        let pollers = self.pollers(config)?;
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for task in tasks.drain(..) {
            task.abort();
        }
        for poller in pollers {
            let stagger = poller.config.poll_interval / 10;
            let first = rand::random_range(Duration::ZERO..=stagger.min(MAX_STAGGER));
            tasks.push(tokio::spawn(poller.run(first)));
        }
        let metrics = self.metrics.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENDER_TICK);
            loop {
                tick.tick().await;
                metrics.publish_async().await;
            }
        }));
        Ok(())
    }

    /// Polls every account of `config` once, at the same time. True if all succeeded.
    pub async fn poll_once(&self, config: &Config) -> Result<bool, reqwest::Error> {
        let pollers = self.pollers(config)?;
        let results = join_all(pollers.iter().map(AccountPoller::poll)).await;
        Ok(results.iter().all(Result::is_ok))
    }

    /// Stops every poller.
    pub fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    fn pollers(&self, config: &Config) -> Result<Vec<AccountPoller>, reqwest::Error> {
        let client = HttpClient::new(&config.global, self.clock)?;
        let telemetry = self
            .metrics
            .configure(&config.accounts, config.global.stale_after);
        Ok(config
            .accounts
            .iter()
            .zip(telemetry)
            .map(|(account, telemetry)| AccountPoller {
                provider: account.provider.settings().build(),
                config: account.clone(),
                telemetry,
                client: client.clone(),
                metrics: self.metrics.clone(),
                events: self.events.clone(),
            })
            .collect())
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
        let duration = started.elapsed();
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
        self.metrics.record_poll(name, &outcome, duration).await;
        let outcome = outcome.map(|_| ());
        let _ = self.events.send(PollEvent {
            account: name.to_owned(),
            outcome: outcome.clone(),
        });
        outcome
    }
}
