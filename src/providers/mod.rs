//! The providers: one module each, behind one small trait.
//!
//! A provider module owns everything about its API: its config keys, auth, signing, envelopes,
//! error-code mapping, and its simulator counterpart (`<name>/sim.rs`). The rest of the crate
//! sees only [`Provider::fetch`], [`ProviderSettings`] and [`ProviderError`]. Adding a provider
//! means its folder and one line in `with_providers!` (CONTRIBUTING.md has the steps).

#[cfg(test)]
pub(crate) mod fuzz;
pub mod http;
pub mod state;
pub mod wire;

use std::fmt;
use std::sync::Arc;

use crate::fields::Fields;
use crate::secret::Secret;
use crate::snapshot::Snapshot;

pub use crate::error::{ErrorClass, ProviderError, codes};
pub use http::{HttpClient, PollContext, Response};
pub use state::SharedState;

/// Polls one account of one provider.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// Fetches the account's balances. Every request goes through `http`, which times it,
    /// counts it, caps its body and retries transient failures.
    async fn fetch(&self, http: &PollContext<'_>) -> Result<Snapshot, ProviderError>;
}

/// What the provider-agnostic parts need to know about an account's provider config.
pub trait ProviderSettings: fmt::Debug + Send + Sync {
    /// The `provider` label.
    fn provider(&self) -> &'static str;
    /// The `kind` label values this provider reports (`http_json`'s are configured: interned,
    /// so still `&'static str`, but listed per account).
    fn kinds(&self) -> &[&'static str];
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

/// Every provider, each on one line: `module => Variant`. The module (`providers/<module>/`)
/// exports `NAME` (its `provider` value in the config and its `provider` label) and `Config`
/// (read by `Config::read`, described by [`ProviderSettings`]); `Variant` is its
/// [`ProviderConfig`] variant. This is the one place a provider is registered: the module
/// declaration, [`PROVIDERS`], [`ProviderConfig`] and its dispatch are generated from it here,
/// and `--demo`'s table of simulators in `demo.rs`.
///
/// After the modules come the presets: built-in providers that are `http_json` plus defaults,
/// as data (`http_json/presets.rs`), each named by its constant there. They get a
/// [`PROVIDERS`] entry under their own name and a place in `--demo`, and read into
/// `ProviderConfig::HttpJson`.
///
/// Calls the macro `$then!` with the list, so that each table is generated where it belongs.
/// (`cargo fmt` does not follow modules declared inside a macro: `.ci/run` runs `rustfmt` on
/// `src/providers/*/mod.rs`.)
macro_rules! with_providers {
    ($then:ident) => {
        $then! {
            engagelab => EngageLab,
            payby => PayBy,
            onerway => Onerway,
            uqpay => UqPay,
            stripe => Stripe,
            http_json => HttpJson;
            presets: TWILIO, TELNYX, VONAGE
        }
    };
}
// For `--demo`'s table of simulators (demo.rs).
#[cfg(feature = "demo")]
pub(crate) use with_providers;

/// The registry, from `with_providers!`'s list.
macro_rules! registry {
    ($($module:ident => $variant:ident),+ ; presets: $($preset:ident),* $(,)?) => {
        $(pub mod $module;)+

        /// One entry per provider, in registration order (the presets last): its name in the
        /// config and how its keys are read.
        pub const PROVIDERS: &[ProviderEntry] = &[$(ProviderEntry {
            name: $module::NAME,
            read: |fields| $module::Config::read(fields).map(ProviderConfig::$variant),
        },)+ $(ProviderEntry {
            name: http_json::presets::$preset.name,
            read: |fields| {
                http_json::Config::read_preset(&http_json::presets::$preset, fields)
                    .map(ProviderConfig::HttpJson)
            },
        },)*];

        /// An account's provider-specific configuration.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ProviderConfig {
            $($variant($module::Config),)+
        }

        impl ProviderConfig {
            pub fn settings(&self) -> &dyn ProviderSettings {
                match self {
                    $(ProviderConfig::$variant(c) => c,)+
                }
            }
        }
    };
}
with_providers!(registry);

/// A provider as the config loader sees it.
pub struct ProviderEntry {
    pub name: &'static str,
    pub read: fn(&mut Fields<'_>) -> Option<ProviderConfig>,
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
}

#[cfg(test)]
mod tests {
    /// A copied module that kept the name it was copied from would read the other's accounts.
    #[test]
    fn provider_names_are_unique_and_fit_for_a_label() {
        let mut names: Vec<&str> = super::PROVIDERS.iter().map(|p| p.name).collect();
        for name in &names {
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name:?}"
            );
        }
        let registered = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), registered, "{names:?}");
    }
}
