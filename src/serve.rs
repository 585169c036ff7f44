//! The HTTP/1 accept loop shared by the exporter's web server and the simulator.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A response body: whole (the exporter's pages) or streamed (the simulator's slow answers).
pub type Body = BoxBody<Bytes, Infallible>;

pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// A TLS handshake that takes longer than this is given up (the connection is dropped).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long responses in flight at shutdown may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves plain HTTP connections from `listener` with `handler` until `shutdown` completes.
pub async fn accept_loop(
    listener: TcpListener,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop_tls(listener, None, handler, shutdown).await
}

/// Like [`accept_loop`], over TLS when `tls` is given. The handshake runs in the connection's
/// own task: a slow or failing client costs only its connection. When `shutdown` completes,
/// stops accepting, closes idle keep-alive connections, and gives responses in flight
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn accept_loop_tls(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tls.map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    let connections = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => {
                drop(listener);
                if tokio::time::timeout(SHUTDOWN_GRACE, connections.shutdown()).await.is_err() {
                    tracing::debug!("connections still open after the shutdown grace; closing them");
                }
                return;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Answers are written whole; Nagle would hold back the tail of a large body until the
        // client's delayed ACK (tens of milliseconds).
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        let watcher = connections.watcher();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(stream, handler, watcher).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, handler, watcher).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

async fn serve_connection(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    handler: Handler,
    watcher: Watcher,
) {
    let service = service_fn(move |request| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(request).await) }
    });
    let connection = watcher.watch(
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
    );
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "connection ended with an error");
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
