//! A simulator's handler as a [`Transport`]: requests built by a provider's own code are
//! handed to the handler as they would arrive over HTTP (the whole body at once: the caller
//! checks its size), with no socket, so that a provider
//! runs against its simulator under paused time. For tests (and only there: it lives with the
//! simulators).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Delivery, SimHandler, SimRequest, lock};
use crate::error::ProviderError;
use crate::transport::{Answer, Transport};

/// One request as the handler saw it, and the status it answered: none while it has not
/// (a hang, or a caller that gave up waiting).
#[derive(Clone)]
pub struct Exchanged {
    pub request: SimRequest,
    pub status: Option<u16>,
}

/// Calls `handler` for every request sent through it, and keeps a log of them.
pub struct InProcess {
    handler: Arc<dyn SimHandler>,
    log: Mutex<Vec<Exchanged>>,
}

impl InProcess {
    pub fn new(handler: Arc<dyn SimHandler>) -> Arc<Self> {
        Arc::new(InProcess {
            handler,
            log: Mutex::new(Vec::new()),
        })
    }

    /// Every request so far, with its answer's status.
    pub fn exchanged(&self) -> Vec<Exchanged> {
        lock(&self.log).clone()
    }
}

#[async_trait::async_trait]
impl Transport for InProcess {
    async fn send(
        &self,
        request: reqwest::Request,
        _body_limit: usize,
    ) -> Result<Answer, ProviderError> {
        let body = request
            .body()
            .and_then(|b| b.as_bytes())
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        let url = request.url();
        let request = SimRequest {
            method: request.method().to_string(),
            path: url.path().to_owned(),
            query: url.query().map(str::to_owned),
            headers: request.headers().clone(),
            body,
        };
        let at = {
            let mut log = lock(&self.log);
            log.push(Exchanged {
                request: request.clone(),
                status: None,
            });
            log.len() - 1
        };
        let answer = self.handler.handle(&request).await;
        if let Some(entry) = lock(&self.log).get_mut(at) {
            entry.status = Some(answer.status);
        }
        // A paced body takes as long as it would on the wire (paused time makes that instant).
        if let Delivery::Paced(pause) = answer.delivery {
            let gaps = u32::try_from(answer.body.len().saturating_sub(1)).unwrap_or(u32::MAX);
            tokio::time::sleep(pause.saturating_mul(gaps).min(Duration::from_secs(86_400))).await;
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &answer.headers {
            // What hyper would refuse to put on the wire is not sent here either.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        // As the loopback server does: a status hyper cannot send goes out as a 500.
        let status = if (100..1000).contains(&answer.status) {
            answer.status
        } else {
            500
        };
        Ok(Answer {
            status,
            headers,
            body: answer.body,
        })
    }
}
