//! Counters and histograms of the requests sent to providers, updated as requests happen, and
//! the process-level gauges of configuration loads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::{Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::clock::unix_seconds_f64;
use crate::providers::http::PollObserver;
use crate::providers::{ErrorClass, ProviderError, codes};
use crate::snapshot::Snapshot;

/// Distinct provider `code` values an account may export; later ones are exported as `other`.
/// The exporter's own codes ([`codes::is_exporter_code`]) are a bounded set and never count.
pub const MAX_CODES_PER_ACCOUNT: usize = 20;
pub const OTHER_CODE: &str = "other";

/// The metrics that requests update directly. One per process, kept across reloads.
pub struct Telemetry {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    durations: HistogramVec,
    token_refreshes: IntCounterVec,
    clock_skew: GaugeVec,
    reload_successful: Gauge,
    reload_success_time: Gauge,
    poller_restarts: IntCounterVec,
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "balance_api_requests_total",
                "HTTP requests sent to the provider's API (balances are polled in the background every poll_interval).",
            ),
            &["provider", "account", "endpoint"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "balance_api_errors_total",
                "Failed provider API requests by the provider's error code (or the exporter's where the provider gave none) and its class.",
            ),
            &["provider", "account", "code", "class"],
        )
        .expect("valid metric");
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "balance_api_request_duration_seconds",
                "Latency of provider API requests, including reading the body.",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["provider", "endpoint"],
        )
        .expect("valid metric");
        let token_refreshes = IntCounterVec::new(
            Opts::new(
                "balance_token_refreshes_total",
                "Access tokens minted for the provider's API.",
            ),
            &["provider", "account"],
        )
        .expect("valid metric");
        let clock_skew = GaugeVec::new(
            Opts::new(
                "balance_clock_skew_seconds",
                "The provider's Date response header minus the local clock, at the last response (balances are polled in the background every poll_interval).",
            ),
            &["provider", "account"],
        )
        .expect("valid metric");
        // Named after Prometheus' own `prometheus_config_last_reload_*`, so that the usual
        // reload alert carries over with its prefix changed.
        let reload_successful = Gauge::new(
            "balance_exporter_config_last_reload_successful",
            "Whether the last configuration load (at start, on SIGHUP or POST /-/reload) succeeded (1) or was refused (0).",
        )
        .expect("valid metric");
        let reload_success_time = Gauge::new(
            "balance_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        )
        .expect("valid metric");
        let poller_restarts = IntCounterVec::new(
            Opts::new(
                "balance_exporter_poller_restarts_total",
                "Times the account's poller stopped unexpectedly (a panic: an exporter bug, see the error log) and was restarted; the account shows down meanwhile.",
            ),
            &["provider", "account"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(durations.clone()),
            Box::new(token_refreshes.clone()),
            Box::new(clock_skew.clone()),
            Box::new(reload_successful.clone()),
            Box::new(reload_success_time.clone()),
            Box::new(poller_restarts.clone()),
        ] {
            registry.register(collector).expect("unique metric");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Arc::new(Telemetry {
            registry,
            requests,
            errors,
            durations,
            token_refreshes,
            clock_skew,
            reload_successful,
            reload_success_time,
            poller_restarts,
        })
    }

    /// Records the outcome of loading the configuration: a refused one leaves the success
    /// time where it was.
    pub fn config_loaded(&self, successful: bool) {
        self.reload_successful
            .set(if successful { 1.0 } else { 0.0 });
        if successful {
            self.reload_success_time
                .set(unix_seconds_f64(std::time::SystemTime::now()));
        }
    }

    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }
}

/// The label sets an account has created, so they can be removed with the account.
#[derive(Default)]
struct Seen {
    codes: BTreeMap<String, BTreeSet<ErrorClass>>,
    /// How many of `codes` are the provider's, i.e. count toward the cap.
    provider_codes: usize,
    other: BTreeSet<ErrorClass>,
    endpoints: BTreeSet<&'static str>,
}

impl Seen {
    /// Records `code` with `class`, counting a new provider code toward the cap.
    fn insert(&mut self, code: &str, class: ErrorClass) {
        match self.codes.get_mut(code) {
            Some(classes) => {
                classes.insert(class);
            }
            None => {
                if !codes::is_exporter_code(code) {
                    self.provider_codes += 1;
                }
                self.codes.insert(code.to_owned(), BTreeSet::from([class]));
            }
        }
    }

    /// Whether `code` gets a series of its own: one already seen, one of the exporter's, or a
    /// provider code while the account has fewer than [`MAX_CODES_PER_ACCOUNT`].
    fn has_room_for(&self, code: &str) -> bool {
        self.codes.contains_key(code)
            || codes::is_exporter_code(code)
            || self.provider_codes < MAX_CODES_PER_ACCOUNT
    }
}

/// One account's view of [`Telemetry`].
pub struct AccountTelemetry {
    telemetry: Arc<Telemetry>,
    provider: &'static str,
    account: String,
    seen: Mutex<Seen>,
}

impl AccountTelemetry {
    /// Starts the account's documented error codes (and its token counter) at 0.
    pub fn new(
        telemetry: Arc<Telemetry>,
        provider: &'static str,
        account: &str,
        documented: &[(&'static str, ErrorClass)],
        mints_tokens: bool,
    ) -> Self {
        let this = AccountTelemetry {
            telemetry,
            provider,
            account: account.to_owned(),
            seen: Mutex::new(Seen::default()),
        };
        {
            let mut seen = this.seen();
            for (code, class) in documented {
                seen.insert(code, *class);
                this.telemetry
                    .errors
                    .with_label_values(&[provider, account, code, class.as_str()]);
            }
        }
        if mints_tokens {
            this.telemetry
                .token_refreshes
                .with_label_values(&[provider, account]);
        }
        // From 0, so that `increase()` sees the first restart.
        this.telemetry
            .poller_restarts
            .with_label_values(&[provider, account]);
        this
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        // The data is plain label bookkeeping: still consistent after a panic elsewhere.
        crate::sync::lock(&self.seen)
    }

    pub fn observe_request(&self, endpoint: &'static str, duration: Duration) {
        self.seen().endpoints.insert(endpoint);
        self.telemetry
            .requests
            .with_label_values(&[self.provider, &self.account, endpoint])
            .inc();
        self.telemetry
            .durations
            .with_label_values(&[self.provider, endpoint])
            .observe(duration.as_secs_f64());
    }

    /// Counts a failed request under its code, or under `other` once the account has
    /// [`MAX_CODES_PER_ACCOUNT`] distinct provider codes (the raw code is logged). The
    /// exporter's own codes always have their own series.
    pub fn count_error(&self, error: &ProviderError) {
        let code = {
            let mut seen = self.seen();
            if seen.has_room_for(&error.code) {
                seen.insert(&error.code, error.class);
                error.code.as_str()
            } else {
                seen.other.insert(error.class);
                tracing::info!(
                    provider = self.provider,
                    account = %self.account,
                    code = %error.code,
                    "error code exported as \"other\": the account already has {MAX_CODES_PER_ACCOUNT} distinct provider codes"
                );
                OTHER_CODE
            }
        };
        self.telemetry
            .errors
            .with_label_values(&[self.provider, &self.account, code, error.class.as_str()])
            .inc();
    }

    /// A fetched snapshot as the poll's outcome, once it passes the checks every provider's
    /// answer must: at most `max_currencies` currencies. A refused one becomes the poll's
    /// error, counted like a failed request (errors of the fetch itself were counted as they
    /// happened).
    pub fn admit(
        &self,
        fetched: Result<Snapshot, ProviderError>,
        max_currencies: usize,
    ) -> Result<Snapshot, ProviderError> {
        let snapshot = fetched?;
        if let Err(error) = snapshot.check_currencies(max_currencies) {
            self.count_error(&error);
            return Err(error);
        }
        Ok(snapshot)
    }

    pub fn count_token_refresh(&self) {
        self.telemetry
            .token_refreshes
            .with_label_values(&[self.provider, &self.account])
            .inc();
    }

    /// Counts a restart of the account's poller after it stopped unexpectedly.
    pub fn count_poller_restart(&self) {
        self.telemetry
            .poller_restarts
            .with_label_values(&[self.provider, &self.account])
            .inc();
    }

    pub fn set_clock_skew(&self, seconds: f64) {
        self.telemetry
            .clock_skew
            .with_label_values(&[self.provider, &self.account])
            .set(seconds);
    }

    /// Removes every series of this account (it left the config).
    pub fn remove(&self) {
        let seen = self.seen();
        let t = &self.telemetry;
        let (p, a) = (self.provider, self.account.as_str());
        for endpoint in &seen.endpoints {
            let _ = t.requests.remove_label_values(&[p, a, endpoint]);
        }
        let codes = seen
            .codes
            .iter()
            .flat_map(|(code, classes)| classes.iter().map(move |c| (code.as_str(), *c)))
            .chain(seen.other.iter().map(|c| (OTHER_CODE, *c)));
        for (code, class) in codes {
            let _ = t.errors.remove_label_values(&[p, a, code, class.as_str()]);
        }
        let _ = t.clock_skew.remove_label_values(&[p, a]);
        let _ = t.token_refreshes.remove_label_values(&[p, a]);
        let _ = t.poller_restarts.remove_label_values(&[p, a]);
    }
}

/// What a poll reports, counted in this account's series.
impl PollObserver for AccountTelemetry {
    fn account(&self) -> &str {
        &self.account
    }

    fn request_done(&self, endpoint: &'static str, duration: Duration) {
        self.observe_request(endpoint, duration);
    }

    fn request_failed(&self, error: &ProviderError) {
        self.count_error(error);
    }

    fn clock_skew(&self, seconds: f64) {
        self.set_clock_skew(seconds);
    }

    fn token_minted(&self) {
        self.count_token_refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_series(t: &Telemetry) -> Vec<(String, String, f64)> {
        let families = t.gather();
        let errors = families
            .iter()
            .find(|f| f.name() == "balance_api_errors_total")
            .expect("errors family");
        errors
            .get_metric()
            .iter()
            .map(|m| {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                (label("code"), label("class"), m.get_counter().value())
            })
            .collect()
    }

    #[test]
    fn documented_codes_start_at_zero_and_codes_past_the_limit_become_other() {
        let telemetry = Telemetry::new();
        let account = AccountTelemetry::new(
            telemetry.clone(),
            "engagelab",
            "a",
            &[("2001", ErrorClass::Auth), ("1000", ErrorClass::Server)],
            false,
        );
        let series = error_series(&telemetry);
        assert_eq!(series.len(), 2);
        assert!(series.iter().all(|(_, _, v)| *v == 0.0));

        for i in 0..30 {
            account.count_error(&ProviderError::new(
                format!("E{i}"),
                ErrorClass::Client,
                "x",
            ));
        }
        account.count_error(&ProviderError::new("2001", ErrorClass::Auth, "x"));
        let series = error_series(&telemetry);
        let distinct: BTreeSet<&str> = series.iter().map(|(c, _, _)| c.as_str()).collect();
        assert_eq!(distinct.len(), MAX_CODES_PER_ACCOUNT + 1, "{distinct:?}");
        let other = series.iter().find(|(c, _, _)| c == OTHER_CODE).unwrap();
        // 2 documented + 18 new codes fill the 20; the remaining 12 are "other".
        assert_eq!((other.1.as_str(), other.2), ("client", 12.0));
        let auth = series.iter().find(|(c, _, _)| c == "2001").unwrap();
        assert_eq!(auth.2, 1.0, "known codes keep counting past the limit");

        account.remove();
        assert!(error_series_or_empty(&telemetry).is_empty());
    }

    #[test]
    fn junk_codes_never_push_the_exporters_own_codes_into_other() {
        let telemetry = Telemetry::new();
        let account = AccountTelemetry::new(telemetry.clone(), "uqpay", "a", &[], false);
        for i in 0..MAX_CODES_PER_ACCOUNT + 5 {
            account.count_error(&ProviderError::new(
                format!("junk{i}"),
                ErrorClass::Client,
                "x",
            ));
        }
        let own = [
            (codes::TIMEOUT, ErrorClass::Transport),
            (codes::TLS, ErrorClass::Transport),
            ("http_503", ErrorClass::Server),
            (codes::TOO_MANY_CURRENCIES, ErrorClass::Decode),
        ];
        for (code, class) in own {
            account.count_error(&ProviderError::new(code, class, "x"));
        }
        let series = error_series(&telemetry);
        for (code, class) in own {
            assert!(
                series.contains(&(code.to_owned(), class.as_str().to_owned(), 1.0)),
                "{code} has its own series: {series:?}"
            );
        }
        let other: Vec<_> = series.iter().filter(|(c, _, _)| c == OTHER_CODE).collect();
        assert_eq!(other, [&(OTHER_CODE.to_owned(), "client".to_owned(), 5.0)]);
        // The exporter's codes took no provider code's place: the cap is still full.
        account.count_error(&ProviderError::new("junk_late", ErrorClass::Client, "x"));
        let series = error_series(&telemetry);
        assert!(!series.iter().any(|(c, _, _)| c == "junk_late"));
        // ... and a provider code posing as an HTTP status out of range is the provider's.
        account.count_error(&ProviderError::new("http_999", ErrorClass::Server, "x"));
        assert!(
            !error_series(&telemetry)
                .iter()
                .any(|(c, _, _)| c == "http_999")
        );
    }

    #[test]
    fn a_snapshot_with_too_many_currencies_fails_the_poll_and_is_counted() {
        use rust_decimal::Decimal;
        let telemetry = Telemetry::new();
        let account = AccountTelemetry::new(telemetry.clone(), "uqpay", "a", &[], false);
        let mut snapshot = Snapshot::default();
        for c in ["AED", "EUR", "USD"] {
            snapshot.add(c, "available", Some(Decimal::ONE));
        }
        assert_eq!(account.admit(Ok(snapshot.clone()), 3), Ok(snapshot.clone()));
        assert!(error_series_or_empty(&telemetry).is_empty());

        let error = account.admit(Ok(snapshot), 2).unwrap_err();
        assert_eq!(error.code, codes::TOO_MANY_CURRENCIES);
        assert_eq!(
            error_series(&telemetry),
            [(
                codes::TOO_MANY_CURRENCIES.to_owned(),
                "decode".to_owned(),
                1.0
            )]
        );

        // A fetch error was counted where it happened: admitting it counts nothing more.
        let failed = ProviderError::new(codes::TIMEOUT, ErrorClass::Transport, "x");
        assert_eq!(account.admit(Err(failed.clone()), 2), Err(failed));
        assert_eq!(error_series(&telemetry).len(), 1);
    }

    fn error_series_or_empty(t: &Telemetry) -> Vec<String> {
        t.gather()
            .iter()
            .filter(|f| f.name() == "balance_api_errors_total")
            .flat_map(|f| f.get_metric().iter().map(|m| format!("{m:?}")))
            .collect()
    }
}
