//! The provider simulator: each provider's API served on loopback the way the real one answers,
//! enforcing what `providers.md` marks **enforce**, with scriptable state. Tests and `--demo`
//! use the same code.
//!
//! This module has the provider-neutral parts: the server, the request log, balances that drain
//! over time ([`Ledger`]) and injected faults ([`Fault`], [`FaultPlan`]). Each provider's
//! handler lives beside its client, in `providers/<name>/sim.rs`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::HeaderMap;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::serve::{Handler, accept_loop_tls};

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
}

impl SimResponse {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        SimResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
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
                    let mut response = hyper::Response::new(Full::new(answer.body));
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

/// Locks simulator state; a panic in a handler (a test assertion) must not wedge the rest.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

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
    /// A success status with a body over the exporter's 1 MiB cap.
    Oversized,
    /// Any status and body, as a proxy in front of the provider might send.
    Raw { status: u16, body: String },
}

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
}

/// Which requests of an account get which fault.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    queue: VecDeque<Fault>,
    always: Option<Fault>,
    every: Option<(u64, Fault)>,
    requests: u64,
}

impl FaultPlan {
    /// The next `n` requests get `fault` (after any already queued).
    pub fn next(&mut self, fault: Fault, n: usize) {
        self.queue.extend(std::iter::repeat_n(fault, n));
    }

    /// Every request gets `fault` until cleared.
    pub fn always(&mut self, fault: Fault) {
        self.always = Some(fault);
    }

    /// Every `n`th request gets `fault`.
    pub fn every(&mut self, n: u64, fault: Fault) {
        self.every = Some((n.max(1), fault));
    }

    pub fn clear(&mut self) {
        *self = FaultPlan {
            requests: self.requests,
            ..FaultPlan::default()
        };
    }

    /// The fault for the request being served, if any.
    pub fn take(&mut self) -> Option<Fault> {
        self.requests += 1;
        if let Some(fault) = self.queue.pop_front() {
            return Some(fault);
        }
        if let Some(fault) = &self.always {
            return Some(fault.clone());
        }
        match &self.every {
            Some((n, fault)) if self.requests.is_multiple_of(*n) => Some(fault.clone()),
            _ => None,
        }
    }
}

/// Applies a provider-neutral fault: waits for `Latency` (then `None`: answer normally), never
/// returns for `Hang`, answers `Malformed`, `Oversized` and `Raw`. `Code` is the provider's to
/// answer and gives `None`.
pub async fn neutral_fault(fault: &Fault) -> Option<SimResponse> {
    match fault {
        Fault::Latency(delay) => {
            tokio::time::sleep(*delay).await;
            None
        }
        Fault::Hang => std::future::pending().await,
        Fault::Malformed => Some(SimResponse::json(200, r#"{"balance": 12.5, "curr"#)),
        Fault::Oversized => {
            let mut body = String::with_capacity(2 * 1024 * 1024 + 32);
            body.push_str(r#"{"padding":""#);
            body.extend(std::iter::repeat_n('x', 2 * 1024 * 1024));
            body.push_str(r#""}"#);
            Some(SimResponse::json(200, body))
        }
        Fault::Raw { status, body } => Some(SimResponse {
            status: *status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: Bytes::from(body.clone()),
        }),
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

/// Checks a request timestamp in milliseconds since the epoch (PayBy's and Onerway's
/// `requestTime`) against the simulator's wall clock and a window of `window` either side.
pub fn time_window(request_time_ms: i64, window: Duration) -> TimeWindow {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let window_ms = window.as_millis() as i64;
    match request_time_ms.saturating_sub(now_ms) {
        d if d < -window_ms => TimeWindow::TooEarly,
        d if d > window_ms => TimeWindow::TooLate,
        _ => TimeWindow::Inside,
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
        plan.always(Fault::Oversized);
        assert_eq!(plan.take(), Some(Fault::Oversized));
        plan.clear();
        assert_eq!(plan.take(), None);
    }

    #[test]
    fn time_window_both_ways() {
        let now = crate::clock::Clock::system().now_millis() as i64;
        let window = Duration::from_secs(15 * 60);
        let minute = 60_000;
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
