//! How a request reaches a provider: one small trait every provider's requests go through
//! (`providers::PollContext` sends with it). In the exporter it is the shared reqwest client;
//! in tests it can be a simulator's handler called in-process (`sim::in_process`), so that
//! any provider runs under paused time. A leaf of the crate, below both the providers and the
//! simulators.

use bytes::Bytes;
use reqwest::header::HeaderMap;

use crate::error::ProviderError;

/// An answer as the transport read it: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends one request and reads its answer. Timeouts, retries, counting and the body cap's
/// error are the caller's; a transport only stops reading once the body passes `body_limit`.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    async fn send(
        &self,
        request: reqwest::Request,
        body_limit: usize,
    ) -> Result<Answer, ProviderError>;
}
