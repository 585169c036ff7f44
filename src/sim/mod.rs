//! The provider simulator: each provider's API served on loopback the way the real one answers,
//! enforcing what `providers.md` marks **enforce**, with scriptable state. Tests and `--demo`
//! use the same code.
//!
//! This module has the provider-neutral parts: the server, the request log, balances that drain
//! over time ([`Ledger`]) and injected faults ([`Fault`], [`FaultPlan`]). Each provider's
//! handler lives beside its client, in `providers/<name>/sim.rs`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::header::HeaderMap;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::listener::{Body, Handler, accept_loop_tls};

pub mod in_process;

/// A request as the simulator received it.
#[derive(Clone)]
pub struct SimRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl SimRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_owned())
        })
    }
}

/// A simulated answer.
#[derive(Debug, Clone)]
pub struct SimResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delivery: Delivery,
}

/// How a body goes onto the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// At once, with its `Content-Length`.
    #[default]
    Whole,
    /// Chunked, with no `Content-Length`: the reader learns the size only by reading.
    Chunked,
    /// One byte, then a pause of this long, and so on.
    Paced(Duration),
}

impl SimResponse {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        SimResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            delivery: Delivery::Whole,
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// One provider's request handler.
#[async_trait::async_trait]
pub trait SimHandler: Send + Sync + 'static {
    async fn handle(&self, request: &SimRequest) -> SimResponse;
}

/// A simulated provider listening on loopback. Stops when dropped.
pub struct SimServer {
    addr: SocketAddr,
    tls: bool,
    log: Arc<Mutex<Vec<SimRequest>>>,
    task: JoinHandle<()>,
}

impl SimServer {
    /// Serves `handler` on an ephemeral loopback port.
    pub async fn start(handler: Arc<dyn SimHandler>) -> std::io::Result<SimServer> {
        Self::start_with(handler, None).await
    }

    /// Serves `handler` over TLS with `tls` (a provider behind a private CA, say).
    pub async fn start_tls(
        handler: Arc<dyn SimHandler>,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<SimServer> {
        Self::start_with(handler, Some(tls)).await
    }

    async fn start_with(
        handler: Arc<dyn SimHandler>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let log: Arc<Mutex<Vec<SimRequest>>> = Arc::default();
        let handler: Handler = {
            let log = log.clone();
            Arc::new(move |request| {
                let handler = handler.clone();
                let log = log.clone();
                Box::pin(async move {
                    let (parts, body) = request.into_parts();
                    // Request bodies of these APIs are small; anything bigger is refused.
                    let body = match Limited::new(body, 64 * 1024).collect().await {
                        Ok(collected) => collected.to_bytes(),
                        Err(_) => Bytes::new(),
                    };
                    let request = SimRequest {
                        method: parts.method.to_string(),
                        path: parts.uri.path().to_owned(),
                        query: parts.uri.query().map(str::to_owned),
                        headers: parts.headers,
                        body,
                    };
                    lock(&log).push(request.clone());
                    let answer = handler.handle(&request).await;
                    let mut response =
                        hyper::Response::new(wire_body(answer.body, answer.delivery));
                    *response.status_mut() = hyper::StatusCode::from_u16(answer.status)
                        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                    for (name, value) in answer.headers {
                        if let (Ok(name), Ok(value)) = (
                            hyper::header::HeaderName::from_bytes(name.as_bytes()),
                            hyper::header::HeaderValue::from_str(&value),
                        ) {
                            response.headers_mut().append(name, value);
                        }
                    }
                    response
                })
            })
        };
        let is_tls = tls.is_some();
        let task = tokio::spawn(accept_loop_tls(
            listener,
            tls,
            handler,
            std::future::pending(),
        ));
        Ok(SimServer {
            addr,
            tls: is_tls,
            log,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (`https` over TLS), to use as an account's `base_url`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<SimRequest> {
        lock(&self.log).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.log).len()
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const CHUNK: usize = 64 * 1024;

fn wire_body(bytes: Bytes, delivery: Delivery) -> Body {
    match delivery {
        Delivery::Whole => Full::new(bytes).boxed(),
        Delivery::Chunked => {
            let chunks: Vec<Bytes> = (0..bytes.len())
                .step_by(CHUNK)
                .map(|at| bytes.slice(at..(at + CHUNK).min(bytes.len())))
                .collect();
            let frames = chunks.into_iter().map(|c| Ok(Frame::data(c)));
            StreamBody::new(stream::iter(frames)).boxed()
        }
        Delivery::Paced(pause) => {
            let frames = stream::unfold(0, move |at| {
                let bytes = bytes.clone();
                async move {
                    if at >= bytes.len() {
                        return None;
                    }
                    if at > 0 {
                        tokio::time::sleep(pause).await;
                    }
                    let frame: Result<_, Infallible> = Ok(Frame::data(bytes.slice(at..at + 1)));
                    Some((frame, at + 1))
                }
            });
            StreamBody::new(frames).boxed()
        }
    }
}

/// Locks simulator state; a panic in a handler (a test assertion) must not wedge the rest.
pub use crate::sync::lock;

/// A balance that drains at a steady rate from when it was set, down to an optional floor.
#[derive(Debug, Clone)]
pub struct Ledger {
    start: Decimal,
    drain_per_second: Decimal,
    floor: Option<Decimal>,
    since: Instant,
}

impl Ledger {
    pub fn fixed(amount: Decimal) -> Self {
        Ledger::draining(amount, Decimal::ZERO, None)
    }

    pub fn draining(start: Decimal, drain_per_second: Decimal, floor: Option<Decimal>) -> Self {
        Ledger {
            start,
            drain_per_second,
            floor,
            since: Instant::now(),
        }
    }

    /// The amount now, with `scale` decimals (as the provider would write it).
    pub fn amount(&self, scale: u32) -> Decimal {
        let elapsed_ms = Decimal::from(self.since.elapsed().as_millis() as u64);
        let drained = self.drain_per_second * elapsed_ms / Decimal::from(1000);
        let mut amount = self.start - drained;
        if let Some(floor) = self.floor {
            amount = amount.max(floor);
        }
        amount.round_dp(scale)
    }
}

/// Something going wrong on purpose.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The provider's own error for `code`, as it would send it. `status` overrides the HTTP
    /// status where the provider uses one code with several (EngageLab 2002: 401 or 403).
    Code { code: String, status: Option<u16> },
    /// Answer normally after this delay.
    Latency(Duration),
    /// Never answer.
    Hang,
    /// A success status with a truncated JSON body.
    Malformed,
    /// A success status with random bytes for a body: not JSON, not even UTF-8.
    Garbage,
    /// A success status with a body of this many bytes, sent chunked without a
    /// `Content-Length`, so that only reading it tells how big it is.
    Oversized(usize),
    /// A success status with a body that trickles in, one byte per this long.
    SlowBody(Duration),
    /// 429 with `Retry-After` in seconds, as a gateway in front of the provider sends it.
    TooManyRequests { retry_after_seconds: u64 },
    /// Any status and body, as a proxy in front of the provider might send.
    Raw { status: u16, body: String },
    /// A redirect (`status` 301, 302, 307 or 308) to `location`, as a server answers a
    /// plain-HTTP request it wants on HTTPS, or a moved API.
    Redirect { status: u16, location: String },
    /// `status` (429 or 503) with a `Retry-After` that overflows naive time arithmetic:
    /// [`HOSTILE_RETRY_AFTER_SECONDS`], or with `far_date` [`HOSTILE_RETRY_AFTER_DATE`].
    HostileRetryAfter { status: u16, far_date: bool },
    /// Answer normally once the test opens this [`Gate`]: a request in flight for exactly as
    /// long as the test needs, however slow the machine.
    Held(Gate),
}

/// Holds the answers to requests until the test opens it, and lets the test wait until a
/// request has arrived. Clones share one gate. Use it as [`Fault::Held`] with any provider's
/// simulator.
#[derive(Clone)]
pub struct Gate {
    status: Arc<tokio::sync::watch::Sender<GateStatus>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct GateStatus {
    arrived: usize,
    open: bool,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate {
            status: Arc::new(tokio::sync::watch::Sender::new(GateStatus::default())),
        }
    }

    /// Lets every held request and every later one through.
    pub fn open(&self) {
        self.status.send_modify(|s| s.open = true);
    }

    /// How many requests have reached the gate so far (held now or let through).
    pub fn arrived(&self) -> usize {
        self.status.borrow().arrived
    }

    /// Waits until `n` requests have reached the gate. No timeout: wrap it in one.
    pub async fn until_arrived(&self, n: usize) {
        let mut status = self.status.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = status.wait_for(|s| s.arrived >= n).await;
    }

    /// Counts the request in and waits until the gate is open.
    async fn pass(&self) {
        let mut status = self.status.subscribe();
        self.status.send_modify(|s| s.arrived += 1);
        let _ = status.wait_for(|s| s.open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = *self.status.borrow();
        f.debug_struct("Gate")
            .field("arrived", &status.arrived)
            .field("open", &status.open)
            .finish()
    }
}

/// The same gate, not two gates in the same state.
impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        Arc::ptr_eq(&self.status, &other.status)
    }
}

/// `Retry-After` in seconds as the largest `u64`: `Instant::now() + Duration` overflows.
pub const HOSTILE_RETRY_AFTER_SECONDS: &str = "18446744073709551615";
/// `Retry-After` as the last HTTP date there is, millennia ahead.
pub const HOSTILE_RETRY_AFTER_DATE: &str = "Fri, 31 Dec 9999 23:59:59 GMT";

impl Fault {
    pub fn code(code: impl Into<String>) -> Fault {
        Fault::Code {
            code: code.into(),
            status: None,
        }
    }

    pub fn code_with_status(code: impl Into<String>, status: u16) -> Fault {
        Fault::Code {
            code: code.into(),
            status: Some(status),
        }
    }

    /// 429 with `Retry-After: 18446744073709551615`.
    pub fn hostile_retry_after() -> Fault {
        Fault::HostileRetryAfter {
            status: 429,
            far_date: false,
        }
    }

    /// 503 with `Retry-After: Fri, 31 Dec 9999 23:59:59 GMT`.
    pub fn hostile_retry_after_date() -> Fault {
        Fault::HostileRetryAfter {
            status: 503,
            far_date: true,
        }
    }

    /// What a server that wants HTTPS answers a plain-HTTP request: 301 to the `https://`
    /// address of `url`.
    pub fn https_redirect(url: &str) -> Fault {
        Fault::Redirect {
            status: 301,
            location: url.replacen("http://", "https://", 1),
        }
    }

    /// A load balancer's HTML error page with `status` (502, 503, 504...).
    pub fn gateway_error(status: u16) -> Fault {
        Fault::Raw {
            status,
            body: format!(
                "<html><head><title>{status}</title></head><body><h1>{status}</h1><hr>gateway</body></html>"
            ),
        }
    }
}

/// Which requests of an account get which fault: queued ones first, then the one for every
/// request, then every `n`th, then faults mixed in at random at given rates. Provider-specific
/// misbehaviour (a bad signature, a revoked token) uses the same plan with its own `F`.
#[derive(Debug, Clone)]
pub struct FaultPlan<F = Fault> {
    queue: VecDeque<F>,
    always: Option<F>,
    every: Option<(u64, F)>,
    mixed: Vec<Mixed<F>>,
    /// The mixed fault being repeated and how many more requests it gets.
    burst: Option<(usize, usize)>,
    rng: Option<SmallRng>,
    requests: u64,
}

#[derive(Debug, Clone)]
struct Mixed<F> {
    rate: f64,
    fault: F,
    run: usize,
    injected: u64,
}

impl<F> Default for FaultPlan<F> {
    fn default() -> Self {
        FaultPlan {
            queue: VecDeque::new(),
            always: None,
            every: None,
            mixed: Vec::new(),
            burst: None,
            rng: None,
            requests: 0,
        }
    }
}

impl<F: Clone> FaultPlan<F> {
    /// The next `n` requests get `fault` (after any already queued).
    pub fn next(&mut self, fault: F, n: usize) {
        self.queue.extend(std::iter::repeat_n(fault, n));
    }

    /// Every request gets `fault` until cleared.
    pub fn always(&mut self, fault: F) {
        self.always = Some(fault);
    }

    /// Every `n`th request gets `fault`.
    pub fn every(&mut self, n: u64, fault: F) {
        self.every = Some((n.max(1), fault));
    }

    /// A share `rate` (0 to 1) of requests get `fault`, each request drawn at random. The
    /// rates of all mixed faults add up to at most 1.
    pub fn mix(&mut self, rate: f64, fault: F) {
        self.burst(rate, fault, 1);
    }

    /// Runs of `run` requests in a row get `fault`; a run starts at a share `rate` of the
    /// requests outside runs.
    pub fn burst(&mut self, rate: f64, fault: F, run: usize) {
        self.mixed.push(Mixed {
            rate: rate.clamp(0.0, 1.0),
            fault,
            run: run.max(1),
            injected: 0,
        });
    }

    /// Makes the random draws of [`FaultPlan::mix`] and [`FaultPlan::burst`] repeatable.
    pub fn seed(&mut self, seed: u64) {
        self.rng = Some(SmallRng::seed_from_u64(seed));
    }

    /// Each mixed fault, in the order added, with how many requests it has hit.
    pub fn injected(&self) -> impl Iterator<Item = (&F, u64)> {
        self.mixed.iter().map(|m| (&m.fault, m.injected))
    }

    pub fn clear(&mut self) {
        *self = FaultPlan {
            requests: self.requests,
            ..FaultPlan::default()
        };
    }

    /// The fault for the request being served, if any.
    pub fn take(&mut self) -> Option<F> {
        self.requests += 1;
        if let Some(fault) = self.queue.pop_front() {
            return Some(fault);
        }
        if let Some(fault) = &self.always {
            return Some(fault.clone());
        }
        match &self.every {
            Some((n, fault)) if self.requests.is_multiple_of(*n) => return Some(fault.clone()),
            _ => {}
        }
        self.take_mixed()
    }

    fn take_mixed(&mut self) -> Option<F> {
        let index = match self.burst {
            Some((index, left)) => {
                self.burst = (left > 1).then_some((index, left - 1));
                index
            }
            None => {
                if self.mixed.is_empty() {
                    return None;
                }
                let rng = self
                    .rng
                    .get_or_insert_with(|| SmallRng::seed_from_u64(rand::random()));
                let mut draw: f64 = rng.random();
                let index = self.mixed.iter().position(|m| {
                    let hit = draw < m.rate;
                    draw -= m.rate;
                    hit
                })?;
                let run = self.mixed[index].run;
                self.burst = (run > 1).then_some((index, run - 1));
                index
            }
        };
        let mixed = &mut self.mixed[index];
        mixed.injected += 1;
        Some(mixed.fault.clone())
    }
}

/// Applies a provider-neutral fault: waits for `Latency` (then `None`: answer normally), never
/// returns for `Hang`, answers the others except `Code`, which is the provider's to answer
/// and gives `None`.
pub async fn neutral_fault(fault: &Fault) -> Option<SimResponse> {
    match fault {
        Fault::Latency(delay) => {
            tokio::time::sleep(*delay).await;
            None
        }
        Fault::Hang => std::future::pending().await,
        Fault::Held(gate) => {
            gate.pass().await;
            None
        }
        Fault::Malformed => Some(SimResponse::json(200, r#"{"balance": 12.5, "curr"#)),
        Fault::Garbage => {
            let mut bytes = vec![0u8; 512];
            rand::rng().fill(&mut bytes[..]);
            // 0xff starts no JSON value and no UTF-8 sequence.
            bytes[0] = 0xff;
            Some(SimResponse::json(200, bytes))
        }
        Fault::Oversized(size) => {
            let (open, close) = (r#"{"padding":""#, r#""}"#);
            let mut body = Vec::with_capacity((*size).max(open.len() + close.len()));
            body.extend_from_slice(open.as_bytes());
            body.resize(size.saturating_sub(close.len()).max(open.len()), b'x');
            body.extend_from_slice(close.as_bytes());
            Some(SimResponse {
                delivery: Delivery::Chunked,
                ..SimResponse::json(200, body)
            })
        }
        Fault::SlowBody(pause) => Some(SimResponse {
            delivery: Delivery::Paced(*pause),
            ..SimResponse::json(200, r#"{"balance":"12.50","currency":"USD"}"#)
        }),
        Fault::TooManyRequests {
            retry_after_seconds,
        } => Some(
            SimResponse {
                headers: vec![("content-type".into(), "text/plain".into())],
                ..SimResponse::json(429, "Too Many Requests\n")
            }
            .with_header("retry-after", retry_after_seconds.to_string()),
        ),
        Fault::Redirect { status, location } => Some(
            SimResponse {
                headers: vec![("content-type".into(), "text/html".into())],
                ..SimResponse::json(
                    *status,
                    format!("<html><body>Moved to {location}</body></html>"),
                )
            }
            .with_header("location", location.clone()),
        ),
        Fault::Raw { status, body } => Some(SimResponse {
            headers: vec![("content-type".into(), "text/html".into())],
            ..SimResponse::json(*status, body.clone())
        }),
        Fault::HostileRetryAfter { status, far_date } => {
            let value = if *far_date {
                HOSTILE_RETRY_AFTER_DATE
            } else {
                HOSTILE_RETRY_AFTER_SECONDS
            };
            let reason = hyper::StatusCode::from_u16(*status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Unavailable");
            Some(
                SimResponse {
                    headers: vec![("content-type".into(), "text/plain".into())],
                    ..SimResponse::json(*status, format!("{reason}\n"))
                }
                .with_header("retry-after", value),
            )
        }
        Fault::Code { .. } => None,
    }
}

/// Where a request's timestamp falls against the simulator's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeWindow {
    Inside,
    /// Further in the past than the window allows (the caller's clock is behind).
    TooEarly,
    /// Further in the future than the window allows (the caller's clock is ahead).
    TooLate,
}

/// A simulated provider's wall clock: the system's, or off by a set offset, as the clock of
/// a provider whose time is wrong.
#[derive(Debug, Default)]
pub struct SimClock {
    offset_ms: AtomicI64,
}

impl SimClock {
    /// Puts this clock `seconds` ahead of the system's (behind if negative).
    pub fn set_offset(&self, seconds: i64) {
        self.offset_ms
            .store(seconds.saturating_mul(1000), Ordering::Relaxed);
    }

    pub fn now(&self) -> SystemTime {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        let magnitude = Duration::from_millis(offset.unsigned_abs());
        if offset >= 0 {
            SystemTime::now() + magnitude
        } else {
            SystemTime::now() - magnitude
        }
    }

    /// The time as an HTTP `Date` header writes it.
    pub fn http_date(&self) -> String {
        httpdate::fmt_http_date(self.now())
    }

    /// Checks a request timestamp in milliseconds since the epoch (PayBy's and Onerway's
    /// `requestTime`) against this clock and a window of `window` either side.
    pub fn time_window(&self, request_time_ms: i64, window: Duration) -> TimeWindow {
        let now_ms = self
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let window_ms = window.as_millis() as i64;
        match request_time_ms.saturating_sub(now_ms) {
            d if d < -window_ms => TimeWindow::TooEarly,
            d if d > window_ms => TimeWindow::TooLate,
            _ => TimeWindow::Inside,
        }
    }
}

/// A provider's contribution to `--demo`: its running simulators and the `accounts:` entries
/// (YAML list items) that point at them.
pub struct DemoPart {
    pub servers: Vec<SimServer>,
    pub accounts_yaml: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_plan_order() {
        let mut plan = FaultPlan::default();
        plan.every(3, Fault::Malformed);
        plan.next(Fault::Hang, 1);
        assert_eq!(plan.take(), Some(Fault::Hang));
        assert_eq!(plan.take(), None);
        assert_eq!(plan.take(), Some(Fault::Malformed));
        plan.always(Fault::Oversized(10));
        assert_eq!(plan.take(), Some(Fault::Oversized(10)));
        plan.clear();
        assert_eq!(plan.take(), None);
    }

    /// A count of `n` draws at probability `p` is within five standard deviations.
    fn assert_binomial(count: u64, n: u64, p: f64) {
        let mean = n as f64 * p;
        let sd = (mean * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - mean).abs() < 5.0 * sd,
            "{count} hits of {n} at rate {p}: expected {mean:.0} +- {:.0}",
            5.0 * sd
        );
    }

    #[test]
    fn mixed_faults_come_at_their_rates() {
        let mut plan = FaultPlan::default();
        plan.seed(7);
        plan.mix(0.02, Fault::Hang);
        plan.mix(0.05, Fault::Latency(Duration::from_secs(1)));
        plan.mix(0.10, Fault::Garbage);
        let n = 200_000;
        let taken: Vec<Option<Fault>> = (0..n).map(|_| plan.take()).collect();
        let count = |f: &Fault| taken.iter().filter(|t| t.as_ref() == Some(f)).count() as u64;
        for (fault, rate) in [
            (Fault::Hang, 0.02),
            (Fault::Latency(Duration::from_secs(1)), 0.05),
            (Fault::Garbage, 0.10),
        ] {
            assert_binomial(count(&fault), n, rate);
        }
        let injected: Vec<u64> = plan.injected().map(|(_, n)| n).collect();
        assert_eq!(
            injected,
            [
                count(&Fault::Hang),
                count(&Fault::Latency(Duration::from_secs(1))),
                count(&Fault::Garbage)
            ]
        );
        let clean = taken.iter().filter(|t| t.is_none()).count() as u64;
        assert_binomial(clean, n, 0.83);
    }

    #[test]
    fn bursts_come_in_runs() {
        let mut plan = FaultPlan::default();
        plan.seed(11);
        plan.burst(0.01, Fault::gateway_error(502), 4);
        let taken: Vec<bool> = (0..100_000).map(|_| plan.take().is_some()).collect();
        let runs: Vec<usize> = taken
            .split(|faulted| !faulted)
            .map(<[bool]>::len)
            .filter(|&len| len > 0)
            .collect();
        // A new run may start right after one ends, so runs that touch merge.
        assert!(runs.iter().all(|len| len % 4 == 0), "{runs:?}");
        let faulted: usize = runs.iter().sum();
        let starts = (faulted / 4) as u64;
        let outside = (taken.len() - faulted + starts as usize) as u64;
        assert_binomial(starts, outside, 0.01);
        assert_eq!(plan.injected().map(|(_, n)| n).sum::<u64>(), faulted as u64);
    }

    #[test]
    fn explicit_faults_come_before_mixed_ones_and_clear_ends_both() {
        let mut plan = FaultPlan::default();
        plan.mix(1.0, Fault::Garbage);
        plan.next(Fault::Hang, 2);
        assert_eq!(plan.take(), Some(Fault::Hang));
        assert_eq!(plan.take(), Some(Fault::Hang));
        assert_eq!(plan.take(), Some(Fault::Garbage));
        plan.burst(0.0, Fault::Malformed, 3);
        plan.clear();
        assert!((0..100).all(|_| plan.take().is_none()));
        assert_eq!(plan.injected().count(), 0);
    }

    #[test]
    fn a_plan_of_provider_faults() {
        #[derive(Debug, Clone, PartialEq)]
        struct Revoke;
        let mut plan: FaultPlan<Revoke> = FaultPlan::default();
        plan.every(2, Revoke);
        assert_eq!(plan.take(), None);
        assert_eq!(plan.take(), Some(Revoke));
    }

    #[test]
    fn a_skewed_clock_moves_its_window_and_its_date() {
        let clock = SimClock::default();
        clock.set_offset(-3600);
        let now = crate::clock::Clock::system().now_millis() as i64;
        let window = Duration::from_secs(600);
        assert_eq!(clock.time_window(now, window), TimeWindow::TooLate);
        let date = httpdate::parse_http_date(&clock.http_date()).unwrap();
        let behind = SystemTime::now().duration_since(date).unwrap();
        assert!((3598..=3602).contains(&behind.as_secs()), "{behind:?}");
    }

    struct Answer(SimResponse);

    #[async_trait::async_trait]
    impl SimHandler for Answer {
        async fn handle(&self, _: &SimRequest) -> SimResponse {
            self.0.clone()
        }
    }

    /// Answers 200 once `Fault::Held` lets the request through.
    struct Behind(Gate);

    #[async_trait::async_trait]
    impl SimHandler for Behind {
        async fn handle(&self, _: &SimRequest) -> SimResponse {
            assert!(neutral_fault(&Fault::Held(self.0.clone())).await.is_none());
            SimResponse::json(200, "{}")
        }
    }

    #[tokio::test]
    async fn a_held_request_is_answered_only_once_the_gate_opens() {
        let gate = Gate::new();
        let server = SimServer::start(Arc::new(Behind(gate.clone())))
            .await
            .unwrap();
        let url = server.base_url();
        let first = tokio::spawn(reqwest::get(url.clone()));
        let second = tokio::spawn(reqwest::get(url.clone()));
        tokio::time::timeout(Duration::from_secs(60), gate.until_arrived(2))
            .await
            .expect("two requests at the gate within 60 s");
        assert_eq!(gate.arrived(), 2);
        assert!(!first.is_finished() && !second.is_finished(), "{gate:?}");
        gate.open();
        for held in [first, second] {
            assert_eq!(held.await.unwrap().unwrap().status().as_u16(), 200);
        }
        // Open stays open.
        assert_eq!(reqwest::get(url).await.unwrap().status().as_u16(), 200);
        assert_eq!(gate.arrived(), 3);
        assert_eq!(Fault::Held(gate.clone()), Fault::Held(gate));
        assert_ne!(Fault::Held(Gate::new()), Fault::Held(Gate::new()));
    }

    #[tokio::test]
    async fn a_hostile_retry_after_is_sent_as_is() {
        for (fault, status, value) in [
            (
                Fault::hostile_retry_after(),
                429,
                HOSTILE_RETRY_AFTER_SECONDS,
            ),
            (
                Fault::hostile_retry_after_date(),
                503,
                HOSTILE_RETRY_AFTER_DATE,
            ),
        ] {
            let answer = neutral_fault(&fault).await.unwrap();
            let server = SimServer::start(Arc::new(Answer(answer))).await.unwrap();
            let response = reqwest::get(server.base_url()).await.unwrap();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()["retry-after"].to_str().unwrap(), value);
        }
    }

    #[tokio::test]
    async fn an_oversized_body_comes_chunked_without_a_length() {
        let fault = Fault::Oversized(3 * 1024 * 1024 + 5);
        let answer = neutral_fault(&fault).await.unwrap();
        let server = SimServer::start(Arc::new(Answer(answer))).await.unwrap();
        let response = reqwest::get(server.base_url()).await.unwrap();
        assert_eq!(response.content_length(), None);
        assert_eq!(
            response.headers()["transfer-encoding"].to_str().unwrap(),
            "chunked"
        );
        let body = response.bytes().await.unwrap();
        assert_eq!(body.len(), 3 * 1024 * 1024 + 5);
        assert!(body.starts_with(br#"{"padding":"xxx"#) && body.ends_with(br#"xx"}"#));
    }

    #[tokio::test]
    async fn a_slow_body_trickles_a_byte_per_pause() {
        let pause = Duration::from_millis(40);
        let answer = neutral_fault(&Fault::SlowBody(pause)).await.unwrap();
        let len = answer.body.len();
        let server = SimServer::start(Arc::new(Answer(answer))).await.unwrap();
        let started = Instant::now();
        let mut response = reqwest::get(server.base_url()).await.unwrap();
        let mut first = None;
        let mut received = 0;
        while let Some(chunk) = response.chunk().await.unwrap() {
            first.get_or_insert(chunk.len());
            received += chunk.len();
        }
        assert_eq!((first, received), (Some(1), len));
        // The pauses between the bytes are sleeps in the server: a lower bound, never flaky.
        assert!(started.elapsed() >= pause * (len as u32 - 1));
    }

    #[test]
    fn time_window_both_ways() {
        let now = crate::clock::Clock::system().now_millis() as i64;
        let window = Duration::from_secs(15 * 60);
        let minute = 60_000;
        let clock = SimClock::default();
        let time_window = |at, window| clock.time_window(at, window);
        assert_eq!(time_window(now, window), TimeWindow::Inside);
        assert_eq!(time_window(now - 14 * minute, window), TimeWindow::Inside);
        assert_eq!(time_window(now + 14 * minute, window), TimeWindow::Inside);
        assert_eq!(time_window(now - 16 * minute, window), TimeWindow::TooEarly);
        assert_eq!(time_window(now + 16 * minute, window), TimeWindow::TooLate);
    }

    #[tokio::test(start_paused = true)]
    async fn ledger_drains_to_its_floor() {
        let ledger = Ledger::draining(Decimal::from(10), Decimal::new(5, 1), Some(Decimal::ZERO));
        assert_eq!(ledger.amount(2), Decimal::from(10));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(ledger.amount(2), Decimal::from(8));
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(ledger.amount(2), Decimal::ZERO);
    }
}
