//! The HTTP/1 accept loop shared by the exporter's web server and the simulator.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// A response body: whole (the exporter's pages) or streamed (the simulator's slow answers).
pub type Body = BoxBody<Bytes, Infallible>;

pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// A TLS handshake that takes longer than this is given up (the connection is dropped).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long responses in flight at shutdown may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The same warning (connections refused, accept failing) is logged at most this often.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What one server lets its clients hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted. `None`: no cap.
    pub max_connections: Option<usize>,
    /// `None`: a connection may stay open, silent, for ever (the simulator).
    pub timeouts: Option<Timeouts>,
}

/// How long a connection may hold a slot without progress.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request's head must be complete this long after its first byte; the first request's,
    /// this long after the connection was accepted (so a silent connection is closed).
    pub header: Duration,
    /// An idle keep-alive connection is closed after this long without a new request; also
    /// the bound on one exchange (an answer not ready, or not read by the client).
    pub idle: Duration,
}

impl Limits {
    /// No cap and no timeouts: the simulator, whose faults include answers that never end.
    pub const UNLIMITED: Limits = Limits {
        max_connections: None,
        timeouts: None,
    };

    /// The exporter's web server. The header timeout is Go's common `ReadHeaderTimeout`; the
    /// idle one outlasts any sane scrape interval, so Prometheus keeps its connection.
    pub fn exporter(max_connections: usize) -> Limits {
        Limits {
            max_connections: Some(max_connections),
            timeouts: Some(Timeouts {
                header: Duration::from_secs(30),
                idle: Duration::from_secs(5 * 60),
            }),
        }
    }
}

/// Serves plain HTTP connections from `listener` with `handler` until `shutdown` completes,
/// with no limits.
pub async fn accept_loop(
    listener: TcpListener,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop_tls(listener, None, handler, shutdown).await
}

/// Like [`accept_loop`], over TLS when `tls` is given.
pub async fn accept_loop_tls(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop_limited(listener, tls, handler, Limits::UNLIMITED, shutdown).await
}

/// Serves connections from `listener` (over TLS when `tls` is given) with `handler`, within
/// `limits`, until `shutdown` completes. The handshake runs in the connection's own task: a
/// slow or failing client costs only its connection. When `shutdown` completes, stops
/// accepting, closes idle keep-alive connections, and gives responses in flight
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn accept_loop_limited(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    serve(vec![listener], tls, handler, limits, shutdown).await
}

/// Like [`accept_loop_limited`], on every listener of `listeners` at once (the repeated
/// `--web.listen-address`): the same TLS, handler and shutdown for each, and `limits` for all
/// of them together, since the connection cap guards the process' file descriptors.
pub async fn serve(
    listeners: Vec<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut next_first = 0;
    let tls = tls.map(TlsAcceptor::from);
    let slots = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let mut refusals = Throttled::default();
    let mut accept_errors = Throttled::default();
    tokio::pin!(shutdown);
    let connections = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => {
                drop(listeners);
                if tokio::time::timeout(SHUTDOWN_GRACE, connections.shutdown()).await.is_err() {
                    tracing::debug!("connections still open after the shutdown grace; closing them");
                }
                return;
            }
            accepted = accept_any(&listeners, next_first) => accepted,
        };
        // The next accept asks another listener first: one flooded address cannot keep the
        // others' connections waiting in their backlogs.
        next_first = next_first.wrapping_add(1);
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: the connection stays in the backlog,
                // so wait a little instead of spinning on it.
                if let Some(failures) = accept_errors.note() {
                    tracing::warn!(error = %e, failures, "accepting connections fails");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let accepted_at = Instant::now();
        let slot = match &slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    // Refused at once: closing it costs nothing, and the client learns now
                    // rather than after its own timeout.
                    drop(stream);
                    if let Some(refused) = refusals.note() {
                        tracing::warn!(
                            %peer,
                            max_connections = limits.max_connections.unwrap_or_default(),
                            refused,
                            "connection limit reached; refusing new connections"
                        );
                    }
                    continue;
                }
            },
        };
        // Answers are written whole; Nagle would hold back the tail of a large body until the
        // client's delayed ACK (tens of milliseconds).
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            handler: handler.clone(),
            watcher: connections.watcher(),
            timeouts: limits.timeouts,
            accepted_at,
            peer,
            _slot: slot,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return connection.serve(stream).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => connection.serve(stream).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// The next connection on any of `listeners`, asking them in turn from `first` on. With no
/// listener, waits for ever (until shutdown).
async fn accept_any(
    listeners: &[TcpListener],
    first: usize,
) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        let start = first.checked_rem(n).unwrap_or(0);
        for i in 0..n {
            if let Poll::Ready(accepted) = listeners[(start + i) % n].poll_accept(cx) {
                return Poll::Ready(accepted);
            }
        }
        Poll::Pending
    })
    .await
}

/// Counts occurrences of an event, and says when to log it: at the first and then at most
/// once per [`WARNING_INTERVAL`], with the count since the last time.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    count: u64,
}

impl Throttled {
    fn note(&mut self) -> Option<u64> {
        self.count = self.count.saturating_add(1);
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARNING_INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// One accepted connection and what it holds: its slot is freed when it is dropped.
struct Connection {
    handler: Handler,
    watcher: Watcher,
    timeouts: Option<Timeouts>,
    accepted_at: Instant,
    peer: SocketAddr,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Connection {
    async fn serve(self, stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static) {
        let Some(timeouts) = self.timeouts else {
            let handler = self.handler;
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(request).await) }
            });
            let connection = self.watcher.watch(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
            if let Err(e) = connection.await {
                tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
            }
            return;
        };
        // hyper's own header_read_timeout runs from the moment it starts waiting for a head,
        // idle keep-alive time included: it would close Prometheus' connection between
        // scrapes. The phases are tracked here instead, and a watchdog drops the connection.
        let activity = Arc::new(Activity::new(self.accepted_at));
        let handler = self.handler;
        let on_request = activity.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            let activity = on_request.clone();
            activity.set(Phase::Busy {
                since: Instant::now(),
            });
            async move {
                let response = handler(request).await;
                activity.set(Phase::AwaitingHead {
                    since: Instant::now(),
                    first_byte: None,
                    first_request: false,
                });
                Ok::<_, Infallible>(response)
            }
        });
        let stream = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        let connection = self.watcher.watch(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service),
        );
        tokio::pin!(connection);
        loop {
            let deadline = activity.deadline(timeouts);
            tokio::select! {
                ended = &mut connection => {
                    if let Err(e) = ended {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = activity.changed.notified() => {}
                _ = sleep_until(deadline) => {
                    // The phase may have changed without the notification being seen yet.
                    if activity.deadline(timeouts).is_some_and(|d| d <= Instant::now()) {
                        tracing::debug!(
                            peer = %self.peer,
                            waiting_for = activity.waiting_for(),
                            "closing a connection that made no progress in time"
                        );
                        return;
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Where a connection is in its request/response cycle, as seen from its reads and its
/// service calls.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head; `first_byte` is when the first byte of it arrived.
    AwaitingHead {
        since: Instant,
        first_byte: Option<Instant>,
        first_request: bool,
    },
    /// A request is being answered.
    Busy { since: Instant },
}

struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new(accepted_at: Instant) -> Activity {
        Activity {
            phase: Mutex::new(Phase::AwaitingHead {
                since: accepted_at,
                first_byte: None,
                first_request: true,
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        *crate::sync::lock(&self.phase)
    }

    fn set(&self, phase: Phase) {
        *crate::sync::lock(&self.phase) = phase;
        self.changed.notify_one();
    }

    /// Bytes came in: the first of them after an idle spell starts the head's clock.
    fn received(&self) {
        let mut phase = crate::sync::lock(&self.phase);
        if let Phase::AwaitingHead {
            first_byte: first_byte @ None,
            first_request: false,
            ..
        } = &mut *phase
        {
            *first_byte = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// When the connection is to be dropped if it is still in the phase it is in now.
    /// `None` when the timeout is too large to add: as good as none.
    fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        match self.phase() {
            Phase::AwaitingHead {
                since,
                first_request: true,
                ..
            } => since.checked_add(timeouts.header),
            Phase::AwaitingHead {
                first_byte: Some(first_byte),
                ..
            } => first_byte.checked_add(timeouts.header),
            Phase::AwaitingHead { since, .. } | Phase::Busy { since } => {
                since.checked_add(timeouts.idle)
            }
        }
    }

    fn waiting_for(&self) -> &'static str {
        match self.phase() {
            Phase::AwaitingHead {
                first_request: true,
                ..
            }
            | Phase::AwaitingHead {
                first_byte: Some(_),
                ..
            } => "request head",
            Phase::AwaitingHead { .. } => "next request (idle keep-alive)",
            Phase::Busy { .. } => "end of the exchange",
        }
    }
}

/// A stream that reports arriving bytes to its connection's [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response with a body and a content type.
pub fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
