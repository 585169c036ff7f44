//! The providers: one module each, behind one small trait.
//!
//! A provider module owns everything about its API: its config keys, auth, signing, envelopes,
//! error-code mapping, and its simulator counterpart (`<name>/sim.rs`). The rest of the crate
//! sees only [`Provider::fetch`], [`ProviderSettings`] and [`ProviderError`]. Adding a provider
//! means a module here and a line in [`PROVIDERS`].

pub mod engagelab;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod http;
pub mod onerway;
pub mod payby;
pub mod state;
pub mod uqpay;
pub mod wire;

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::fields::Fields;
use crate::secret::Secret;
use crate::sim::DemoPart;
use crate::snapshot::Snapshot;

pub use crate::error::{ErrorClass, ProviderError, codes};
pub use http::{Http, HttpClient, Response};
pub use state::SharedState;

/// Polls one account of one provider.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// Fetches the account's balances. Every request goes through `http`, which times it,
    /// counts it, caps its body and retries transient failures.
    async fn fetch(&self, http: &Http<'_>) -> Result<Snapshot, ProviderError>;
}

/// What the provider-agnostic parts need to know about an account's provider config.
pub trait ProviderSettings: fmt::Debug + Send + Sync {
    /// The `provider` label.
    fn provider(&self) -> &'static str;
    /// The `kind` label values this provider reports.
    fn kinds(&self) -> &'static [&'static str];
    /// The kind a threshold applies to when it names none.
    fn default_threshold_kind(&self) -> &'static str;
    fn currency_scope(&self) -> CurrencyScope;
    /// The provider's documented error codes with their class: exported at 0 from the start,
    /// so that `increase()` sees the first error.
    fn documented_errors(&self) -> &'static [(&'static str, ErrorClass)];
    /// Whether the provider mints access tokens (`balance_token_refreshes_total` starts at 0).
    fn mints_tokens(&self) -> bool {
        false
    }
    /// Credentials derived from the account's secrets that go on the wire (EngageLab's
    /// `dev_key:dev_secret`, sent base64-encoded in a Basic header), so that a provider's
    /// text echoing them is redacted too. Every secret, these included, is also redacted in
    /// its encoded forms (`secret::redact`): list only combinations, not encodings.
    fn derived_secrets(&self) -> Vec<Secret> {
        Vec::new()
    }
    /// The poller for this account, keeping what outlives a poll (a token) in `state`.
    fn build(&self, state: &SharedState) -> Arc<dyn Provider>;
    /// Forgets any pause the provider asked for that outlives a poll (UQPay's token-mint
    /// pause, kept in `state`): a reload starts without them.
    fn clear_pauses(&self, _state: &SharedState) {}
}

/// Which currencies an account has, as far as its config tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CurrencyScope {
    /// Exactly these (from the config).
    Fixed(Vec<String>),
    /// One currency, named by the provider's answer.
    SingleFromProvider,
    /// Any number, named by the provider's answer.
    Discovered,
}

/// One entry per provider: its name in the config, how its keys are read, and its part of
/// `--demo`.
pub struct ProviderEntry {
    pub name: &'static str,
    pub read: fn(&mut Fields<'_>) -> Option<ProviderConfig>,
    pub demo: fn() -> BoxFuture<'static, std::io::Result<DemoPart>>,
}

pub const PROVIDERS: &[ProviderEntry] = &[
    ProviderEntry {
        name: "engagelab",
        read: |fields| engagelab::Config::read(fields).map(ProviderConfig::EngageLab),
        demo: || Box::pin(engagelab::sim::demo()),
    },
    ProviderEntry {
        name: "payby",
        read: |fields| payby::Config::read(fields).map(ProviderConfig::PayBy),
        demo: || Box::pin(payby::sim::demo()),
    },
    ProviderEntry {
        name: "onerway",
        read: |fields| onerway::Config::read(fields).map(ProviderConfig::Onerway),
        demo: || Box::pin(onerway::sim::demo()),
    },
    ProviderEntry {
        name: "uqpay",
        read: |fields| uqpay::Config::read(fields).map(ProviderConfig::UqPay),
        demo: || Box::pin(uqpay::sim::demo()),
    },
];

/// An account's provider-specific configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderConfig {
    EngageLab(engagelab::Config),
    PayBy(payby::Config),
    Onerway(onerway::Config),
    UqPay(uqpay::Config),
}

impl ProviderConfig {
    /// Reads the keys of provider `name` from an account's mapping.
    pub fn read(name: &str, fields: &mut Fields<'_>) -> Option<ProviderConfig> {
        if let Some(entry) = PROVIDERS.iter().find(|p| p.name == name) {
            return (entry.read)(fields);
        }
        let known: Vec<&str> = PROVIDERS.iter().map(|p| p.name).collect();
        fields.error(
            "provider",
            format!("unknown provider {name:?} (one of: {})", known.join(", ")),
        );
        None
    }

    pub fn settings(&self) -> &dyn ProviderSettings {
        match self {
            ProviderConfig::EngageLab(c) => c,
            ProviderConfig::PayBy(c) => c,
            ProviderConfig::Onerway(c) => c,
            ProviderConfig::UqPay(c) => c,
        }
    }
}
