//! The exporter's web endpoints: `/metrics` (the last rendered body), `/` (status page),
//! `/-/healthy`, `/-/ready` and `/-/reload`. Nothing here knows about providers.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tokio::net::TcpListener;

use crate::scheduler::Scheduler;
use crate::serve::{Body, Handler, response};
use crate::status_page;

pub const DEFAULT_PORT: u16 = 9863;
const EXPOSITION_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reloads the configuration; the error text is shown to the caller.
pub type Reload = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

pub struct Web {
    pub scheduler: Arc<Scheduler>,
    pub telemetry_path: String,
    /// `None` where there is no file to reload (`--demo`).
    pub reload: Option<Reload>,
}

/// Binds `address`: `host:port`, `[v6]:port`, or `:port` for every interface.
pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{address:?} is not a valid listen address"),
            )
        })?;
        // Both IPv6 and IPv4 where the host allows it, like ":port" in Go exporters.
        return match TcpListener::bind(SocketAddr::from(([0u16; 8], port))).await {
            Ok(listener) => Ok(listener),
            Err(_) => TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await,
        };
    }
    TcpListener::bind(address).await
}

/// A URL a person can open for a listener bound at `addr`.
pub fn browsable_url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://localhost:{}/", addr.port())
    } else {
        format!("http://{addr}/")
    }
}

pub fn handler(web: Arc<Web>) -> Handler {
    Arc::new(move |request| {
        let web = web.clone();
        Box::pin(async move { route(&web, request).await })
    })
}

async fn route(web: &Web, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    let method = request.method();
    let reading = method == Method::GET || method == Method::HEAD;
    let text = |status, body: &str| response(status, "text/plain; charset=utf-8", body.to_owned());
    if path == web.telemetry_path {
        if !reading {
            return text(405, "Method not allowed\n");
        }
        return response(200, EXPOSITION_TYPE, web.scheduler.metrics().body());
    }
    match path {
        "/" if reading => {
            let state = web.scheduler.metrics().snapshot_state();
            let page = status_page::render(&state, &web.telemetry_path, web.reload.is_some());
            response(200, "text/html; charset=utf-8", page)
        }
        "/-/healthy" if reading => text(200, "Healthy\n"),
        "/-/ready" if reading => {
            let (polled, total) = web.scheduler.metrics().readiness();
            if polled == total {
                text(200, "Ready\n")
            } else {
                text(
                    503,
                    &format!("Not ready: {polled} of {total} accounts polled once\n"),
                )
            }
        }
        "/-/reload" if method == Method::POST || method == Method::PUT => match &web.reload {
            None => text(403, "Reload is not available: no configuration file\n"),
            Some(reload) => {
                let reload = reload.clone();
                match tokio::task::spawn_blocking(move || reload()).await {
                    Ok(Ok(())) => text(200, "Configuration reloaded\n"),
                    Ok(Err(e)) => text(500, &format!("Reload failed:\n{e}\n")),
                    Err(_) => text(500, "Reload failed\n"),
                }
            }
        },
        "/" | "/-/healthy" | "/-/ready" | "/-/reload" => text(405, "Method not allowed\n"),
        _ => text(404, "Not found\n"),
    }
}
