//! The exporter's web endpoints: `/metrics` (the last rendered body), `/` (status page),
//! `/-/healthy`, `/-/ready` and `/-/reload`. Nothing here knows about providers.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{ACCEPT_ENCODING, CONTENT_ENCODING, HeaderMap, HeaderValue, VARY};
use hyper::{Method, Request, Response};
use tokio::net::TcpListener;

use crate::listener::{Body, Handler, response};
use crate::scheduler::Scheduler;
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
    /// `--web.enable-lifecycle`: whether `POST /-/reload` is allowed (SIGHUP always is).
    pub lifecycle: bool,
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
        let body = web.scheduler.metrics().bodies();
        let gzip = accepts_gzip(request.headers());
        let mut answer = response(
            200,
            EXPOSITION_TYPE,
            if gzip { body.gzip } else { body.plain },
        );
        let headers = answer.headers_mut();
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        if gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        return answer;
    }
    match path {
        "/" if reading => {
            let state = web.scheduler.metrics().snapshot_state();
            let page = status_page::render(
                &state,
                &web.telemetry_path,
                web.reload.is_some(),
                web.lifecycle,
            );
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
                    &format!(
                        "Not ready: {polled} of {total} account{} polled once\n",
                        if total == 1 { "" } else { "s" }
                    ),
                )
            }
        }
        "/-/reload" if method == Method::POST || method == Method::PUT => match &web.reload {
            _ if !web.lifecycle => text(403, "Lifecycle API is not enabled\n"),
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

/// Whether `Accept-Encoding` admits gzip (RFC 9110 12.5.3): `gzip`/`x-gzip` or `*` with a
/// non-zero q-value; an explicit `gzip;q=0` refuses it even if `*` is accepted.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(q > 0.0);
            } else if coding == "*" {
                any = Some(q > 0.0);
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn accept_encoding_for_gzip() {
        // What Prometheus sends.
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["deflate, GZIP;q=0.5"]));
        assert!(accepts(&["br", "x-gzip"]));
        assert!(accepts(&["*"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["identity"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip; q=0.000"]));
        assert!(!accepts(&["*, gzip;q=0"]));
        assert!(!accepts(&["*;q=0"]));
        assert!(accepts(&["*;q=0, gzip"]));
        assert!(!accepts(&["gzipped"]));
    }
}
