//! Counters and histograms of the requests sent to providers, updated as requests happen, and
//! the process-level gauges of configuration loads.
//!
//! Each account's own series (request and error counters, token refreshes, clock skew, poller
//! restarts) are plain numbers in a small [`AccountSeries`] that the renderer writes as text,
//! like the balance gauges. A `prometheus` child per series cost about 0.5 KB each (its own
//! copy of the description and labels) plus a protobuf copy at every `gather()`: with 5,000
//! accounts, 46,000 children, most of the exporter's memory (BENCHMARKS.md). The `prometheus`
//! registry keeps what does not grow with accounts: the latency histogram (per provider and
//! endpoint), the configuration-load gauges and the process metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::{Gauge, HistogramOpts, HistogramVec, Registry};

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
    durations: HistogramVec,
    reload_successful: Gauge,
    reload_success_time: Gauge,
    /// Every configured account's own series, by account name (the order they are written in).
    accounts: Mutex<BTreeMap<String, Arc<AccountSeries>>>,
}

/// HELP texts of the per-account families written from [`AccountSeries`].
pub(super) const REQUESTS: (&str, &str) = (
    "balance_api_requests_total",
    "HTTP requests sent to the provider's API (balances are polled in the background every poll_interval).",
);
pub(super) const ERRORS: (&str, &str) = (
    "balance_api_errors_total",
    "Failed provider API requests by the provider's error code (or the exporter's where the provider gave none) and its class.",
);
pub(super) const TOKEN_REFRESHES: (&str, &str) = (
    "balance_token_refreshes_total",
    "Access tokens minted for the provider's API.",
);
pub(super) const CLOCK_SKEW: (&str, &str) = (
    "balance_clock_skew_seconds",
    "The provider's Date response header minus the local clock, at the last response (balances are polled in the background every poll_interval).",
);
pub(super) const POLLER_RESTARTS: (&str, &str) = (
    "balance_exporter_poller_restarts_total",
    "Times the account's poller stopped unexpectedly (a panic: an exporter bug, see the error log) and was restarted; the account shows down meanwhile.",
);

impl Telemetry {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "balance_api_request_duration_seconds",
                "Latency of provider API requests, including reading the body.",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["provider", "endpoint"],
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
        for collector in [
            Box::new(durations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reload_successful.clone()),
            Box::new(reload_success_time.clone()),
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
            durations,
            reload_successful,
            reload_success_time,
            accounts: Mutex::new(BTreeMap::new()),
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

    /// The families kept in the `prometheus` registry (none of them per account).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// Every account's series, in account-name order, for the renderer.
    pub(super) fn accounts(&self) -> MutexGuard<'_, BTreeMap<String, Arc<AccountSeries>>> {
        crate::sync::lock(&self.accounts)
    }
}

/// One account's own series: plain numbers, written as text at render.
pub(super) struct AccountSeries {
    pub(super) provider: &'static str,
    counts: Mutex<Counts>,
}

impl AccountSeries {
    pub(super) fn counts(&self) -> MutexGuard<'_, Counts> {
        // Plain numbers: still consistent after a panic elsewhere.
        crate::sync::lock(&self.counts)
    }
}

/// The values of one account's series.
#[derive(Default)]
pub(super) struct Counts {
    /// Failed requests by `(code, class)`, each pair once; a handful per account.
    pub(super) errors: Vec<ErrorCount>,
    /// How many distinct codes of `errors` are the provider's own (counted toward the cap).
    provider_codes: usize,
    /// Requests by endpoint, each endpoint once.
    pub(super) requests: Vec<(&'static str, u64)>,
    /// `None` until the account mints a token (or is of a provider that does).
    pub(super) token_refreshes: Option<u64>,
    /// `None` until a response carries a `Date` header.
    pub(super) clock_skew: Option<f64>,
    pub(super) poller_restarts: u64,
}

pub(super) struct ErrorCount {
    pub(super) code: Box<str>,
    pub(super) class: ErrorClass,
    pub(super) count: u64,
    /// Counted under its own code (documented or seen), as opposed to only the overflow into
    /// `other`: only those codes keep a series of their own past the cap.
    named: bool,
}

impl Counts {
    fn entry(&mut self, code: &str, class: ErrorClass) -> &mut ErrorCount {
        let i = match self
            .errors
            .iter()
            .position(|e| e.class == class && *e.code == *code)
        {
            Some(i) => i,
            None => {
                self.errors.push(ErrorCount {
                    code: code.into(),
                    class,
                    count: 0,
                    named: false,
                });
                self.errors.len() - 1
            }
        };
        &mut self.errors[i]
    }

    fn is_named(&self, code: &str) -> bool {
        self.errors.iter().any(|e| e.named && *e.code == *code)
    }

    /// The series of `code` with `class` under its own code, counting a new provider code
    /// toward the cap.
    fn named(&mut self, code: &str, class: ErrorClass) -> &mut ErrorCount {
        if !self.is_named(code) && !codes::is_exporter_code(code) {
            self.provider_codes += 1;
        }
        let entry = self.entry(code, class);
        entry.named = true;
        entry
    }

    /// Whether `code` gets a series of its own: one already seen, one of the exporter's, or a
    /// provider code while the account has fewer than [`MAX_CODES_PER_ACCOUNT`].
    fn has_room_for(&self, code: &str) -> bool {
        self.is_named(code)
            || codes::is_exporter_code(code)
            || self.provider_codes < MAX_CODES_PER_ACCOUNT
    }
}

/// One account's view of [`Telemetry`].
pub struct AccountTelemetry {
    telemetry: Arc<Telemetry>,
    provider: &'static str,
    account: String,
    series: Arc<AccountSeries>,
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
        let mut counts = Counts::default();
        for (code, class) in documented {
            counts.named(code, *class);
        }
        if mints_tokens {
            counts.token_refreshes = Some(0);
        }
        // poller_restarts starts at 0 too, so that `increase()` sees the first restart.
        let series = Arc::new(AccountSeries {
            provider,
            counts: Mutex::new(counts),
        });
        telemetry
            .accounts()
            .insert(account.to_owned(), series.clone());
        AccountTelemetry {
            telemetry,
            provider,
            account: account.to_owned(),
            series,
        }
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.series.counts()
    }

    pub fn observe_request(&self, endpoint: &'static str, duration: Duration) {
        {
            let mut counts = self.counts();
            match counts.requests.iter_mut().find(|(e, _)| *e == endpoint) {
                Some((_, n)) => *n += 1,
                None => counts.requests.push((endpoint, 1)),
            }
        }
        self.telemetry
            .durations
            .with_label_values(&[self.provider, endpoint])
            .observe(duration.as_secs_f64());
    }

    /// Counts a failed request under its code, or under `other` once the account has
    /// [`MAX_CODES_PER_ACCOUNT`] distinct provider codes (the raw code is logged). The
    /// exporter's own codes always have their own series.
    pub fn count_error(&self, error: &ProviderError) {
        let mut counts = self.counts();
        if counts.has_room_for(&error.code) {
            counts.named(&error.code, error.class).count += 1;
        } else {
            counts.entry(OTHER_CODE, error.class).count += 1;
            drop(counts);
            tracing::info!(
                provider = self.provider,
                account = %self.account,
                code = %error.code,
                "error code exported as \"other\": the account already has {MAX_CODES_PER_ACCOUNT} distinct provider codes"
            );
        }
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
        *self.counts().token_refreshes.get_or_insert(0) += 1;
    }

    /// Counts a restart of the account's poller after it stopped unexpectedly.
    pub fn count_poller_restart(&self) {
        self.counts().poller_restarts += 1;
    }

    pub fn set_clock_skew(&self, seconds: f64) {
        self.counts().clock_skew = Some(seconds);
    }

    /// Removes every series of this account (it left the config).
    pub fn remove(&self) {
        let mut accounts = self.telemetry.accounts();
        // Only this handle's series: an account of the same name may have replaced it.
        if accounts
            .get(&self.account)
            .is_some_and(|s| Arc::ptr_eq(s, &self.series))
        {
            accounts.remove(&self.account);
        }
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
    use std::collections::BTreeSet;

    use super::*;

    /// Every account's error series as `(code, class, value)`.
    fn error_series(t: &Telemetry) -> Vec<(String, String, f64)> {
        t.accounts()
            .values()
            .flat_map(|s| {
                s.counts()
                    .errors
                    .iter()
                    .map(|e| {
                        (
                            e.code.to_string(),
                            e.class.as_str().to_owned(),
                            e.count as f64,
                        )
                    })
                    .collect::<Vec<_>>()
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

    /// Per-account series are plain numbers in the account's own record: the `prometheus`
    /// registry holds the same families and children for 1 account as for 500.
    #[test]
    fn accounts_create_no_registry_children() {
        fn children(t: &Telemetry) -> (usize, usize) {
            let families = t.gather();
            let children = families.iter().map(|f| f.get_metric().len()).sum();
            (families.len(), children)
        }
        let grow = |n: usize| {
            let telemetry = Telemetry::new();
            let accounts: Vec<AccountTelemetry> = (0..n)
                .map(|i| {
                    let documented = [("2001", ErrorClass::Auth), ("1000", ErrorClass::Server)];
                    let a = AccountTelemetry::new(
                        telemetry.clone(),
                        "uqpay",
                        &format!("a{i}"),
                        &documented,
                        true,
                    );
                    a.observe_request("balance", Duration::from_millis(5));
                    a.count_error(&ProviderError::new("2001", ErrorClass::Auth, "x"));
                    a.count_token_refresh();
                    a.set_clock_skew(1.0);
                    a
                })
                .collect();
            assert_eq!(telemetry.accounts().len(), n);
            (children(&telemetry), accounts)
        };
        let (one, _one) = grow(1);
        let (many, _many) = grow(500);
        assert_eq!(one, many);
    }

    fn error_series_or_empty(t: &Telemetry) -> Vec<(String, String, f64)> {
        error_series(t)
    }
}
