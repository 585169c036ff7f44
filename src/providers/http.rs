//! The one way providers talk HTTP.
//!
//! [`PollContext::call`] sends a request built by the provider, with the request timeout (cut to what
//! is left of the poll), a body cap, the concurrency limit, request counting and latency, the
//! clock-skew reading from `Date`, and retries of transient failures with backoff and jitter,
//! honouring `Retry-After`, all inside the poll's deadline. The provider only builds requests
//! and interprets responses.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, DATE, HeaderMap, LOCATION, RETRY_AFTER};
use rustls::pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::wire::label_text;
use super::{ErrorClass, ProviderError, codes};
use crate::clock::{Clock, signed_seconds_between};
use crate::secret::{Secret, redact, reveals};
use crate::transport::{Answer, Transport};

/// At most this many attempts of one request within a poll.
pub const MAX_ATTEMPTS: u32 = 3;
/// Response bodies larger than this are refused (`body_too_large`).
pub const BODY_LIMIT: usize = 1024 * 1024;
const MESSAGE_LIMIT: usize = 200;
/// How much of a body [`Response::body_start`] quotes: more than [`MESSAGE_LIMIT`], so that
/// [`scrub_error`] makes the cut after redacting.
pub const BODY_START_LIMIT: usize = 2 * MESSAGE_LIMIT;
/// A `Retry-After` (or any other wait a provider names) is believed up to this long: beyond
/// it the number is noise, and no arithmetic on it may overflow.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// A pause a provider makes us take between polls (rate-limit back-off, token-mint pause) is
/// capped at the larger of this and the account's poll interval ([`pause_cap`]).
pub const MIN_PAUSE_CAP: Duration = Duration::from_secs(10 * 60);
/// What [`later`] gives for a time past the clock's range: tokio's own "far future".
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// The longest pause between polls a provider can make an account with `poll_interval` take.
pub fn pause_cap(poll_interval: Duration) -> Duration {
    MIN_PAUSE_CAP.max(poll_interval)
}

/// `at + wait` without overflow: a wait past the clock's range is the far future.
pub fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .or_else(|| at.checked_add(FAR_FUTURE))
        .unwrap_or(at)
}

/// Everything the HTTP client is built from, in one value: `config` produces it, and the
/// scheduler compares the new one with the running client's to decide whether to rebuild it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// The accounts that trust extra CAs (`ca_file`), by name, with those CAs.
    pub extra_roots: Vec<(String, Vec<CertificateDer<'static>>)>,
}

/// What a poll reports as it happens, for the metrics side to count: the provider layer
/// knows nothing of metrics, only this.
pub trait PollObserver: Send + Sync {
    /// The account polled (for logs, and to pick its client).
    fn account(&self) -> &str;
    /// A request to `endpoint` got an answer, or failed to, after `duration`.
    fn request_done(&self, endpoint: &'static str, duration: Duration);
    /// An attempt failed with `error` (already scrubbed of secrets).
    fn request_failed(&self, error: &ProviderError);
    /// The provider's `Date` minus the local clock, in seconds.
    fn clock_skew(&self, seconds: f64);
    /// A new access token was minted.
    fn token_minted(&self);
}

/// The HTTP clients shared by all accounts: one for the platform's roots, and one more per
/// distinct `ca_file` content, shared by the accounts naming it, so connections stay pooled.
#[derive(Clone)]
pub struct HttpClient {
    default: reqwest::Client,
    /// One client per distinct set of `ca_file` certificates.
    extra_root_clients: Arc<Vec<reqwest::Client>>,
    /// Accounts with a `ca_file`, by name: the index of their client.
    account_clients: Arc<HashMap<String, usize>>,
    permits: Arc<Semaphore>,
    request_timeout: Duration,
    clock: Clock,
    /// Where every account's requests go instead of the network (a simulator called
    /// in-process, in tests); requests are still built with the clients above.
    transport: Option<Arc<dyn Transport>>,
}

impl HttpClient {
    /// A client whose requests all go through `transport` (a simulator's handler in tests),
    /// with the timeouts, concurrency limit and body cap of `settings`.
    pub fn with_transport(
        settings: &HttpSettings,
        clock: Clock,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, reqwest::Error> {
        let mut client = HttpClient::new(settings, clock)?;
        client.transport = Some(transport);
        Ok(client)
    }

    pub fn new(settings: &HttpSettings, clock: Clock) -> Result<Self, reqwest::Error> {
        let mut extra_root_clients = Vec::new();
        let mut by_roots: HashMap<&[CertificateDer<'static>], usize> = HashMap::new();
        let mut account_clients = HashMap::new();
        for (account, roots) in &settings.extra_roots {
            let roots = roots.as_slice();
            if roots.is_empty() {
                continue;
            }
            let index = match by_roots.get(roots) {
                Some(index) => *index,
                None => {
                    extra_root_clients.push(build_client(settings, roots)?);
                    by_roots.insert(roots, extra_root_clients.len() - 1);
                    extra_root_clients.len() - 1
                }
            };
            account_clients.insert(account.clone(), index);
        }
        Ok(HttpClient {
            default: build_client(settings, &[])?,
            extra_root_clients: Arc::new(extra_root_clients),
            account_clients: Arc::new(account_clients),
            permits: Arc::new(Semaphore::new(settings.max_concurrent_requests.max(1))),
            request_timeout: settings.request_timeout,
            clock,
            transport: None,
        })
    }

    /// The client for `account`'s requests.
    fn client_for(&self, account: &str) -> &reqwest::Client {
        self.account_clients
            .get(account)
            .and_then(|index| self.extra_root_clients.get(*index))
            .unwrap_or(&self.default)
    }
}

/// A client trusting the platform's roots plus `extra_roots`. Certificates are always verified:
/// there is deliberately no way to turn that off.
fn build_client(
    settings: &HttpSettings,
    extra_roots: &[CertificateDer<'static>],
) -> Result<reqwest::Client, reqwest::Error> {
    let extra_roots = extra_roots
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()?;
    reqwest::Client::builder()
        .user_agent(concat!("balance_exporter/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.request_timeout)
        // A balance API has no reason to redirect; following one could carry credentials
        // somewhere unexpected.
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_merge(extra_roots)
        .build()
}

#[cfg(test)]
impl HttpClient {
    /// Whether both are the same client (clones share their pool and permits).
    pub(crate) fn is_same(&self, other: &HttpClient) -> bool {
        Arc::ptr_eq(&self.permits, &other.permits)
    }
}

/// A response as read: status, headers and the whole (capped) body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    received_at: SystemTime,
}

impl Response {
    /// A response from its parts, as read at `received_at` (for answers that did not come
    /// over a socket, such as a simulator's called in-process under paused time).
    pub fn new(status: u16, headers: HeaderMap, body: Bytes, received_at: SystemTime) -> Self {
        Response {
            status,
            headers,
            body,
            received_at,
        }
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Retry-After` as seconds or as an HTTP date, at most [`MAX_RETRY_AFTER`].
    pub fn retry_after(&self) -> Option<Duration> {
        let value = self.headers.get(RETRY_AFTER)?.to_str().ok()?;
        parse_retry_after(value, self.received_at)
    }

    /// An error for this response's status, carrying its `Retry-After`. A redirect names
    /// where it points (the usual cause is an `http://` base_url for an `https://` API); any
    /// other status quotes the start of the body (a proxy's page says whose it is).
    pub fn status_error(&self) -> ProviderError {
        let message = if self.is_redirect() {
            match self.header(LOCATION.as_str()) {
                // The Location last: see [`Response::body_start`].
                Some(location) => format!(
                    "HTTP {}: redirects are not followed: set base_url to the address it points to (https:// for http://?); Location: {}",
                    self.status,
                    printable(location)
                ),
                None => format!(
                    "HTTP {} without a Location: redirects are not followed",
                    self.status
                ),
            }
        } else if self.body.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            format!("HTTP {}: {}", self.status, self.body_start())
        };
        ProviderError::http_status(self.status, message).with_retry_after(self.retry_after())
    }

    /// A 3xx: never followed (see [`build_client`]), never a balance.
    pub fn is_redirect(&self) -> bool {
        (300..400).contains(&self.status)
    }

    /// The body as JSON of type `T`, or a `decode` error quoting what came instead
    /// ([`Response::decode_error`]).
    pub fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| self.decode_error(format_args!("not the JSON expected ({e})")))
    }

    /// A `decode` error: `problem`, then what the body is (content type and start), so that a
    /// login page or a proxy's error page says whose it is:
    /// `not the JSON expected (...): text/html: <html><head><title>Gateway login...`.
    pub fn decode_error(&self, problem: impl fmt::Display) -> ProviderError {
        ProviderError::decode(format!("{problem}: {}", self.body_start()))
    }

    /// The body's content type and the start of the body, printable (whitespace runs made one
    /// space, control and invisible characters escaped): `text/html: <html><head>...`.
    ///
    /// Put it last in a message. It is cut at [`BODY_START_LIMIT`] bytes, past what
    /// [`scrub_error`] keeps of a message, so that scrubbing, which redacts secrets before it
    /// shortens, makes the cut: a secret the provider echoed is never shown in part. (A cut
    /// this makes itself, in a short message, ends the message, where a partial secret is
    /// redacted too.)
    pub fn body_start(&self) -> String {
        let content_type = self
            .header(CONTENT_TYPE.as_str())
            .map(|t| printable(t).chars().take(64).collect::<String>())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "no content type".to_owned());
        if self.body.is_empty() {
            return format!("{content_type}, empty body");
        }
        let start = &self.body[..self.body.len().min(BODY_START_LIMIT)];
        format!(
            "{content_type}: {}",
            printable(String::from_utf8_lossy(start).trim())
        )
    }
}

/// `text` fit for one line of a message: runs of whitespace become one space, control and
/// invisible formatting characters (zero-width, bidirectional overrides) are escaped as
/// `\u{..}`, so provider text can neither break a log line nor hide what it says.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        let invisible = matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        );
        if c.is_control() || invisible {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The HTTP client as one poll of one account sees it.
pub struct PollContext<'a> {
    client: &'a HttpClient,
    /// The account's own client (see [`HttpClient`]), which builds its requests.
    reqwest: &'a reqwest::Client,
    /// What sends them: that client, or the transport the [`HttpClient`] was made with.
    transport: &'a dyn Transport,
    observer: &'a dyn PollObserver,
    secrets: &'a [Secret],
    deadline: Instant,
    max_currencies: usize,
}

impl<'a> PollContext<'a> {
    pub fn new(
        client: &'a HttpClient,
        observer: &'a dyn PollObserver,
        secrets: &'a [Secret],
        deadline: Instant,
        max_currencies: usize,
    ) -> Self {
        let reqwest = client.client_for(observer.account());
        PollContext {
            client,
            reqwest,
            transport: client.transport.as_deref().unwrap_or(reqwest),
            observer,
            secrets,
            deadline,
            max_currencies,
        }
    }

    /// The account's `max_currencies`: a provider that walks pages stops once past it.
    pub fn max_currencies(&self) -> usize {
        self.max_currencies
    }

    /// The wall clock to stamp requests with.
    pub fn clock(&self) -> Clock {
        self.client.clock
    }

    /// Where this poll reports what happened (a provider reports its token mints here).
    pub fn observer(&self) -> &dyn PollObserver {
        self.observer
    }

    /// When this poll must be over: waits outside [`PollContext::call`] (a lock shared with other
    /// polls, say) should end by then too.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Sends a request to `endpoint` (the `endpoint` label) until it succeeds, fails for good,
    /// or the poll runs out of time. `build` makes a fresh request for every attempt (so
    /// nonces and timestamps are new); `interpret` turns a response into a value or an error.
    /// Every failed attempt is counted by code.
    pub async fn call<T>(
        &self,
        endpoint: &'static str,
        mut build: impl FnMut(&reqwest::Client) -> Result<reqwest::RequestBuilder, ProviderError>,
        mut interpret: impl FnMut(&Response) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match build(self.reqwest) {
                Ok(request) => self.send(endpoint, request).await,
                Err(e) => Err(e),
            };
            // A redirect is the same for every provider: it is not followed and holds no
            // balance, whatever the provider would make of its body.
            let error = match result.and_then(|response| {
                if response.is_redirect() {
                    Err(response.status_error())
                } else {
                    interpret(&response)
                }
            }) {
                Ok(value) => return Ok(value),
                Err(error) => self.scrub(error),
            };
            self.observer.request_failed(&error);
            let retry_in = if error.is_retryable() && attempt < MAX_ATTEMPTS {
                let delay = error
                    .retry_after
                    .unwrap_or_else(|| backoff(attempt, error.class));
                // A wait past the poll's end ends the poll; the scheduler takes it from there.
                (later(Instant::now(), delay) < self.deadline).then_some(delay)
            } else {
                None
            };
            let Some(delay) = retry_in else {
                return Err(error);
            };
            tracing::debug!(
                account = self.observer.account(),
                endpoint,
                code = %error.code,
                attempt,
                retry_in = ?delay,
                "request failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn send(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, ProviderError> {
        let _permit =
            self.client.permits.acquire().await.map_err(|_| {
                ProviderError::new("timeout", ErrorClass::Transport, "shutting down")
            })?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProviderError::new(
                "timeout",
                ErrorClass::Transport,
                "no time left in this poll",
            ));
        }
        let timeout = left.min(self.client.request_timeout);
        let request = request
            .timeout(timeout)
            .build()
            .map_err(|e| ProviderError::new("request", ErrorClass::Client, e.to_string()))?;
        let started = Instant::now();
        let sent_at = self.client.clock.now();
        let result = self.exchange(request, timeout).await;
        let elapsed = started.elapsed();
        self.observer.request_done(endpoint, elapsed);
        let response = result?;
        if let Some(date) = response.header(DATE.as_str())
            && let Ok(date) = httpdate::parse_http_date(date)
        {
            // `Date` has whole seconds: +0.5 s centres it; the midpoint of the exchange is
            // our best guess of when the provider wrote it.
            let local = sent_at + elapsed / 2;
            let skew = signed_seconds_between(date, local) + 0.5;
            self.observer.clock_skew(skew);
        }
        Ok(response)
    }

    /// One exchange through the transport, within `timeout` whatever the transport (the
    /// network's client enforces it too), and with the body cap.
    async fn exchange(
        &self,
        request: reqwest::Request,
        timeout: Duration,
    ) -> Result<Response, ProviderError> {
        let answer = tokio::time::timeout(timeout, self.transport.send(request, BODY_LIMIT))
            .await
            .map_err(|_| timed_out())??;
        if answer.body.len() > BODY_LIMIT {
            return Err(body_too_large());
        }
        Ok(Response {
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
            received_at: self.client.clock.now(),
        })
    }

    /// Makes an error safe to log, show and label ([`scrub_error`] with the account's
    /// secrets).
    fn scrub(&self, error: ProviderError) -> ProviderError {
        scrub_error(error, self.secrets)
    }
}

/// Makes an error safe to log, show and export: a message without secrets (in any form,
/// see [`redact`]) or control characters, of bounded length; a code that reveals a secret
/// becomes [`codes::REDACTED`] (it is a label value; a piece of it would still leak), any
/// other code printable and bounded. Applying it twice changes nothing more.
pub fn scrub_error(mut error: ProviderError, secrets: &[Secret]) -> ProviderError {
    let redacted = redact(&error.message, secrets);
    let mut clean: String = redacted
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MESSAGE_LIMIT)
        .collect();
    if redacted.chars().count() > MESSAGE_LIMIT {
        clean.push_str("...");
    }
    error.message = clean;
    if reveals(&error.code, secrets) {
        error.code = codes::REDACTED.to_owned();
    } else {
        let bounded = label_text(&error.code);
        if bounded != error.code {
            error.code = if bounded.is_empty() {
                codes::REDACTED.to_owned()
            } else {
                bounded
            };
        }
    }
    error
}

/// The network: reqwest's client, reading the body only up to the cap.
#[async_trait::async_trait]
impl Transport for reqwest::Client {
    async fn send(
        &self,
        request: reqwest::Request,
        body_limit: usize,
    ) -> Result<Answer, ProviderError> {
        let mut response = self.execute(request).await.map_err(transport_error)?;
        if response
            .content_length()
            .is_some_and(|n| n > body_limit as u64)
        {
            return Err(body_too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > body_limit {
                return Err(body_too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: body.freeze(),
        })
    }
}

fn timed_out() -> ProviderError {
    ProviderError::new("timeout", ErrorClass::Transport, "request timed out")
}

fn body_too_large() -> ProviderError {
    ProviderError::new(
        "body_too_large",
        ErrorClass::Decode,
        format!("response body larger than {BODY_LIMIT} bytes"),
    )
}

/// The exporter's own code for a request that got no usable answer.
fn transport_error(error: reqwest::Error) -> ProviderError {
    let is_timeout = error.is_timeout();
    // Without the URL: the log needs the failure, not the endpoint's address again.
    let error = error.without_url();
    let chain = error_chain(&error);
    if is_timeout {
        return timed_out();
    }
    if is_tls_failure(&error) {
        // A bad certificate or a server that does not speak TLS does not fix itself between
        // attempts.
        return ProviderError::new("tls", ErrorClass::Transport, chain).final_attempt();
    }
    ProviderError::new("connect", ErrorClass::Transport, chain)
}

/// Whether a rustls error is somewhere in the chain. `io::Error` hides the error it wraps from
/// `source()`, so it is looked into explicitly.
fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && is_tls_failure(inner)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// The error and its sources in one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A `Retry-After` value received at `received_at`: delay-seconds or an HTTP date (a date in
/// the past is no wait), clamped to [`MAX_RETRY_AFTER`]. Anything else is no `Retry-After`.
fn parse_retry_after(value: &str, received_at: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 still say "wait long".
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(received_at).unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Exponential backoff with jitter: about 1 s, 2 s, 4 s... (twice that after a rate limit).
fn backoff(attempt: u32, class: ErrorClass) -> Duration {
    let base_ms: u64 = if class == ErrorClass::RateLimit {
        2000
    } else {
        1000
    };
    let exp = base_ms.saturating_mul(1 << (attempt - 1).min(6));
    let jittered = rand::random_range(exp / 2..=exp + exp / 2);
    Duration::from_millis(jittered)
}

/// Joins a base URL (which may carry a path, like UQPay's `/api`) and an API path.
pub fn join_url(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(&joined);
    url
}

/// A [`PollObserver`] that only counts, for the provider layer's own tests.
#[cfg(all(test, feature = "demo"))]
pub(crate) struct CountingObserver {
    account: String,
    requests: std::sync::atomic::AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
    tokens: std::sync::atomic::AtomicU64,
}

#[cfg(all(test, feature = "demo"))]
impl CountingObserver {
    pub(crate) fn new(account: &str) -> Self {
        CountingObserver {
            account: account.to_owned(),
            requests: Default::default(),
            errors: Default::default(),
            tokens: Default::default(),
        }
    }

    /// Requests that got an answer or failed to.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The codes of failed attempts, in order.
    pub(crate) fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    pub(crate) fn tokens_minted(&self) -> u64 {
        self.tokens.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(all(test, feature = "demo"))]
impl PollObserver for CountingObserver {
    fn account(&self) -> &str {
        &self.account
    }

    fn request_done(&self, _: &'static str, _: Duration) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn request_failed(&self, error: &ProviderError) {
        self.errors.lock().unwrap().push(error.code.clone());
    }

    fn clock_skew(&self, _: f64) {}

    fn token_minted(&self) {
        self.tokens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Settings of a client with no extra CAs.
#[cfg(all(test, feature = "demo"))]
pub(crate) fn plain_settings() -> HttpSettings {
    HttpSettings {
        request_timeout: Duration::from_secs(10),
        max_concurrent_requests: 16,
        extra_roots: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_jittered() {
        for _ in 0..50 {
            let first = backoff(1, ErrorClass::Server);
            let second = backoff(2, ErrorClass::Server);
            assert!((500..=1500).contains(&first.as_millis()), "{first:?}");
            assert!((1000..=3000).contains(&second.as_millis()), "{second:?}");
            let limited = backoff(1, ErrorClass::RateLimit);
            assert!((1000..=3000).contains(&limited.as_millis()));
        }
    }

    #[test]
    fn join_keeps_the_base_path() {
        let base = reqwest::Url::parse("https://api.uqpay.com/api/").unwrap();
        assert_eq!(
            join_url(&base, "/v1/connect/token").as_str(),
            "https://api.uqpay.com/api/v1/connect/token"
        );
        let bare = reqwest::Url::parse("https://smsapi.engagelab.com").unwrap();
        assert_eq!(
            join_url(&bare, "/v1/balance").as_str(),
            "https://smsapi.engagelab.com/v1/balance"
        );
    }

    #[test]
    fn accounts_naming_the_same_cas_share_one_client() {
        use crate::config::{Format, parse};
        let dir = std::env::temp_dir().join(format!("be-http-cas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, name) in [("a.pem", "CA a"), ("b.pem", "CA b")] {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(dir.join(file), cert.pem()).unwrap();
        }
        let account = |name: &str, ca: &str| {
            format!(
                "  - {{name: {name}, provider: engagelab, product: sms, dev_key: k, \
                 dev_secret: s{ca}}}\n"
            )
        };
        let text = format!(
            "accounts:\n{}{}{}{}",
            account("one", ", ca_file: a.pem"),
            account("two", ", ca_file: a.pem"),
            account("three", ", ca_file: b.pem"),
            account("plain", ""),
        );
        let config = parse(&text, Format::Yaml, &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let client = HttpClient::new(&config.http_settings(), Clock::system()).unwrap();
        assert_eq!(client.extra_root_clients.len(), 2);
        let index = |name: &str| client.account_clients.get(name).copied();
        assert_eq!(index("one"), index("two"));
        assert_ne!(index("one"), index("three"));
        assert_eq!(index("plain"), None);
    }

    fn response_with(headers: &[(&str, &str)]) -> Response {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Response {
            status: 429,
            headers: map,
            body: Bytes::new(),
            received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(
            response_with(&[("retry-after", "7")]).retry_after(),
            Some(Duration::from_secs(7))
        );
        let date =
            httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_030));
        assert_eq!(
            response_with(&[("retry-after", &date)]).retry_after(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            response_with(&[("retry-after", "soon")]).retry_after(),
            None
        );
        assert_eq!(response_with(&[]).retry_after(), None);
    }

    /// What `Retry-After: value` says at 2023-11-14T22:13:20Z.
    fn retry_after_of(value: &[u8]) -> Option<Duration> {
        let mut response = response_with(&[]);
        response.headers.insert(
            RETRY_AFTER,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
        response.retry_after()
    }

    #[test]
    fn a_hostile_retry_after_is_clamped_or_ignored() {
        for huge in [
            &b"18446744073709551615"[..],
            b"18446744073709551616",
            b"99999999999999999999999999999999999999999",
            b"86401",
            b" 86400 ",
            b"Fri, 31 Dec 9999 23:59:59 GMT",
            b"Thu, 01 Jan 2099 00:00:00 GMT",
        ] {
            let shown = String::from_utf8_lossy(huge);
            assert_eq!(retry_after_of(huge), Some(MAX_RETRY_AFTER), "{shown}");
        }
        assert_eq!(retry_after_of(b"0"), Some(Duration::ZERO));
        // A date in the past (the epoch, even): no wait.
        for past in [
            &b"Thu, 01 Jan 1970 00:00:00 GMT"[..],
            b"Sun, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(retry_after_of(past), Some(Duration::ZERO));
        }
        for odd in [
            &b"-1"[..],
            b"-18446744073709551615",
            b"+5",
            b"1.5",
            b"1e9",
            b"0x10",
            b"",
            b"   ",
            b"5 5",
            "\u{0661}\u{0662}".as_bytes(),
            b"Fri, 31 Dec 10000 23:59:59 GMT",
            b"Mon, 99 Foo 2026 99:99:99 GMT",
            // Not even UTF-8.
            &[0xff, b'9', 0xfe],
        ] {
            let shown = String::from_utf8_lossy(odd);
            assert_eq!(retry_after_of(odd), None, "{shown}");
        }
    }

    #[test]
    fn later_saturates_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        for wait in [Duration::MAX, Duration::from_secs(i64::MAX as u64)] {
            assert!(later(now, wait) >= now + Duration::from_secs(365 * 24 * 60 * 60));
        }
        assert_eq!(pause_cap(Duration::from_secs(60)), MIN_PAUSE_CAP);
        assert_eq!(
            pause_cap(Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut response = response_with(headers);
        response.status = status;
        response.body = Bytes::copy_from_slice(body);
        response
    }

    #[test]
    fn a_body_that_is_not_the_json_expected_is_quoted_with_its_content_type() {
        let page = answer(
            200,
            &[("content-type", "text/html; charset=utf-8")],
            b"<html>\r\n  <head><title>Gateway login</title>\t</head>\x1b[2J\xe2\x80\xae\xff",
        );
        let error = page.json::<serde_json::Value>().unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("decode", ErrorClass::Decode)
        );
        assert_eq!(
            error.message,
            "not the JSON expected (expected value at line 1 column 1): text/html; charset=utf-8: \
             <html> <head><title>Gateway login</title> </head>\\u{1b}[2J\\u{202e}\u{fffd}"
        );
        let bare = answer(200, &[], b"");
        assert_eq!(
            bare.json::<serde_json::Value>().unwrap_err().message,
            "not the JSON expected (EOF while parsing a value at line 1 column 0): no content type, empty body"
        );
        // Well-formed JSON of the wrong shape says so too, with what it was.
        let wrong = answer(200, &[("content-type", "application/json")], br#"{"a":1}"#);
        let error = wrong.json::<Vec<u8>>().unwrap_err();
        assert!(
            error.message.ends_with(r#"(invalid type: map, expected a sequence at line 1 column 0): application/json: {"a":1}"#),
            "{}",
            error.message
        );
    }

    #[test]
    fn the_start_of_a_long_body_is_capped_and_scrubbing_makes_the_cut() {
        let secret = Secret::new("abcdefghij-secret");
        // ASCII: the message is longer than scrubbing keeps, which cuts it after redacting.
        let mut body = "x".repeat(BODY_START_LIMIT - 5).into_bytes();
        body.extend_from_slice(b"abcdefghij-secret and more");
        let long = answer(200, &[("content-type", "text/plain")], &body);
        let quoted = long.body_start();
        assert!(
            quoted.len() <= "text/plain: ".len() + BODY_START_LIMIT,
            "{quoted}"
        );
        let error = scrub_error(
            long.json::<serde_json::Value>().unwrap_err(),
            std::slice::from_ref(&secret),
        );
        assert!(error.message.ends_with("xxx..."), "{}", error.message);
        assert_eq!(error.message.chars().count(), MESSAGE_LIMIT + 3);
        // Four-byte characters: the cut is body_start's own, at the end of a short message,
        // in the middle of an echoed secret; what is left of the secret is redacted.
        let mut body = "\u{1d11e}".repeat((BODY_START_LIMIT - 8) / 4).into_bytes();
        body.extend_from_slice(b"abcdefghij-secret");
        let wide = answer(200, &[("content-type", "text/plain")], &body);
        let error = scrub_error(wide.json::<serde_json::Value>().unwrap_err(), &[secret]);
        assert!(
            error.message.chars().count() < MESSAGE_LIMIT,
            "{}",
            error.message
        );
        assert!(
            error.message.ends_with("\u{1d11e}<redacted>"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_redirect_names_its_location_and_other_statuses_quote_the_body() {
        let moved = answer(
            301,
            &[
                ("location", "https://api.example/v1/balance"),
                ("content-type", "text/html"),
            ],
            b"<html>Moved</html>",
        );
        let error = moved.status_error();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("http_301", ErrorClass::Client)
        );
        assert_eq!(
            error.message,
            "HTTP 301: redirects are not followed: set base_url to the address it points to \
             (https:// for http://?); Location: https://api.example/v1/balance"
        );
        assert!(!error.is_retryable());
        assert_eq!(
            answer(307, &[], b"").status_error().message,
            "HTTP 307 without a Location: redirects are not followed"
        );
        let proxy = answer(
            502,
            &[("content-type", "text/html")],
            b"<html>Bad Gateway</html>\n",
        );
        assert_eq!(
            proxy.status_error().message,
            "HTTP 502: text/html: <html>Bad Gateway</html>"
        );
        assert_eq!(answer(503, &[], b"").status_error().message, "HTTP 503");
    }

    /// A server on loopback answering every request with `fault`.
    #[cfg(feature = "demo")]
    async fn always_answering(fault: crate::sim::Fault) -> crate::sim::SimServer {
        use crate::sim::{Fault, SimHandler, SimRequest, SimResponse, SimServer, neutral_fault};
        struct Always(Fault);
        #[async_trait::async_trait]
        impl SimHandler for Always {
            async fn handle(&self, _: &SimRequest) -> SimResponse {
                neutral_fault(&self.0).await.expect("a neutral fault")
            }
        }
        SimServer::start(Arc::new(Always(fault))).await.unwrap()
    }

    /// A redirect ends the call whatever the provider's `interpret` would make of it, after
    /// one attempt: the client never follows it.
    #[cfg(feature = "demo")]
    #[tokio::test]
    async fn a_call_refuses_a_redirect_once_without_following_it() {
        let server = always_answering(crate::sim::Fault::https_redirect(
            "http://127.0.0.1:1/v1/balance",
        ))
        .await;
        let client = HttpClient::new(&plain_settings(), Clock::system()).unwrap();
        let observer = CountingObserver::new("a");
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = PollContext::new(&client, &observer, &[], deadline, 100);
        let url = server.base_url();
        let error = http
            .call("balance", |c| Ok(c.get(&url)), |_| Ok(()))
            .await
            .unwrap_err();
        assert_eq!(error.code, "http_301");
        assert!(
            error
                .message
                .ends_with("Location: https://127.0.0.1:1/v1/balance"),
            "{}",
            error.message
        );
        assert_eq!(server.request_count(), 1);
        assert_eq!(observer.errors(), ["http_301"]);
    }

    /// A 429 whose `Retry-After` overflows `Instant + Duration` ends the call with the rate
    /// limit (clamped), without a panic and without another attempt.
    #[cfg(feature = "demo")]
    #[tokio::test]
    async fn a_call_survives_a_retry_after_past_the_clock() {
        let server = always_answering(crate::sim::Fault::TooManyRequests {
            retry_after_seconds: u64::MAX,
        })
        .await;
        let client = HttpClient::new(&plain_settings(), Clock::system()).unwrap();
        let observer = CountingObserver::new("a");
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = PollContext::new(&client, &observer, &[], deadline, 100);
        let url = server.base_url();
        let error = http
            .call(
                "balance",
                |c| Ok(c.get(&url)),
                |r| Err::<(), _>(r.status_error()),
            )
            .await
            .unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("http_429", ErrorClass::RateLimit)
        );
        assert_eq!(error.retry_after, Some(MAX_RETRY_AFTER));
        assert_eq!(server.request_count(), 1);
        assert_eq!(observer.requests(), 1);
        assert_eq!(observer.errors(), ["http_429"]);
    }
}
