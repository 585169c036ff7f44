//! The providers: one module each, behind one small trait.
//!
//! A provider module owns everything about its API: its config keys, auth, signing, envelopes,
//! error-code mapping, and its simulator counterpart (`<name>/sim.rs`). The rest of the crate
//! sees only [`Provider::fetch`], [`ProviderSettings`] and [`ProviderError`]. Adding a provider
//! means its folder and one line in `with_providers!` (CONTRIBUTING.md has the steps).

#[cfg(test)]
pub(crate) mod fuzz;
pub mod http;
pub mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Fields;
use crate::secret::Secret;
use crate::snapshot::Snapshot;

pub use http::{Http, HttpClient, Response};

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
    /// The poller for this account.
    fn build(&self) -> Arc<dyn Provider>;
    /// Forgets any pause the provider asked for that outlives a poll (UQPay's token-mint
    /// pause, kept process-wide): a reload starts without them.
    fn clear_pauses(&self) {}
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
        }
    };
}
// For `--demo`'s table of simulators (demo.rs).
#[cfg(feature = "demo")]
pub(crate) use with_providers;

/// The registry, from `with_providers!`'s list.
macro_rules! registry {
    ($($module:ident => $variant:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// One entry per provider, in registration order: its name in the config and how its
        /// keys are read.
        pub const PROVIDERS: &[ProviderEntry] = &[$(ProviderEntry {
            name: $module::NAME,
            read: |fields| $module::Config::read(fields).map(ProviderConfig::$variant),
        }),+];

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

/// The exporter's own error codes (the `code` label where the provider gave none). Their set
/// is fixed, so they are never folded into `other` by the per-account cap on provider codes.
pub mod codes {
    pub const TIMEOUT: &str = "timeout";
    pub const CONNECT: &str = "connect";
    pub const TLS: &str = "tls";
    pub const REQUEST: &str = "request";
    pub const DECODE: &str = "decode";
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    pub const SIGN_FAILED: &str = "sign_failed";
    pub const SIGNATURE_INVALID: &str = "signature_invalid";
    pub const SIGNATURE_MISSING: &str = "signature_missing";
    /// A 2xx answer with no balance in it ([`super::ProviderError::no_balance`]).
    pub const NO_BALANCE: &str = "no_balance";
    /// More currencies than the account's `max_currencies`.
    pub const TOO_MANY_CURRENCIES: &str = "too_many_currencies";
    /// A single-currency answer for another currency than asked.
    pub const WRONG_CURRENCY: &str = "wrong_currency";
    /// A list page with more entries than the `page_size` asked for (UQPay).
    pub const PAGE_TOO_LONG: &str = "page_too_long";
    /// A provider's code that cannot be a label as it came: it revealed a secret (it echoed
    /// a credential) or had no printable character. One fixed value instead.
    pub const REDACTED: &str = "redacted";

    /// Every code above. `http_<status>` codes are the exporter's too ([`is_exporter_code`]).
    pub const ALL: &[&str] = &[
        TIMEOUT,
        CONNECT,
        TLS,
        REQUEST,
        DECODE,
        BODY_TOO_LARGE,
        SIGN_FAILED,
        SIGNATURE_INVALID,
        SIGNATURE_MISSING,
        NO_BALANCE,
        TOO_MANY_CURRENCIES,
        WRONG_CURRENCY,
        PAGE_TOO_LONG,
        REDACTED,
    ];

    /// Whether `code` is one of the exporter's own: one of [`ALL`] or `http_<status>` with a
    /// status from 100 to 599. A bounded set, whatever a provider sends.
    pub fn is_exporter_code(code: &str) -> bool {
        ALL.contains(&code)
            || code.strip_prefix("http_").is_some_and(|status| {
                status.len() == 3 && status.parse::<u16>().is_ok_and(|s| (100..600).contains(&s))
            })
    }
}

/// The `class` label: what kind of failure an error code is, derived from the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// Credentials rejected, expired or not allowed (IP allow-list, environment).
    Auth,
    RateLimit,
    /// The request's timestamp was outside the provider's window: the host clock is off.
    Clock,
    /// The provider rejected the request as malformed or unsupported.
    Client,
    /// The provider failed (5xx, internal error).
    Server,
    /// No usable answer: timeout, connection or TLS failure.
    Transport,
    /// An answer that does not parse or is too large.
    Decode,
    /// A response signature that is missing or does not verify.
    Signature,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::Auth,
        ErrorClass::RateLimit,
        ErrorClass::Clock,
        ErrorClass::Client,
        ErrorClass::Server,
        ErrorClass::Transport,
        ErrorClass::Decode,
        ErrorClass::Signature,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Auth => "auth",
            ErrorClass::RateLimit => "rate_limit",
            ErrorClass::Clock => "clock",
            ErrorClass::Client => "client",
            ErrorClass::Server => "server",
            ErrorClass::Transport => "transport",
            ErrorClass::Decode => "decode",
            ErrorClass::Signature => "signature",
        }
    }

    /// Failures that may succeed when tried again within the same poll.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimit | ErrorClass::Server | ErrorClass::Transport
        )
    }

    /// The class of an HTTP status when the body gives nothing better.
    pub fn of_http_status(status: u16) -> ErrorClass {
        match status {
            401 | 403 => ErrorClass::Auth,
            429 => ErrorClass::RateLimit,
            408 => ErrorClass::Transport,
            500..=599 => ErrorClass::Server,
            _ => ErrorClass::Client,
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed request or poll: the provider's own code (or the exporter's, where the provider
/// gave none), its class, and a message fit for logs and the status page.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} ({class}): {message}")]
pub struct ProviderError {
    /// The `code` label: `2001`, `RATE_LIMIT_REJECT`, `timeout`, `http_502`...
    pub code: String,
    pub class: ErrorClass,
    pub message: String,
    /// How long the provider asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
    retryable: bool,
}

impl ProviderError {
    pub fn new(code: impl Into<String>, class: ErrorClass, message: impl Into<String>) -> Self {
        ProviderError {
            code: code.into(),
            class,
            message: message.into(),
            retry_after: None,
            retryable: class.is_transient(),
        }
    }

    /// An error status with nothing better in the body: code `http_<status>`.
    pub fn http_status(status: u16, message: impl Into<String>) -> Self {
        Self::new(
            format!("http_{status}"),
            ErrorClass::of_http_status(status),
            message,
        )
    }

    /// An answer that could not be understood.
    pub fn decode(message: impl Into<String>) -> Self {
        Self::new(codes::DECODE, ErrorClass::Decode, message)
    }

    /// A 2xx answer that carries none of the provider's documented balance fields or lists:
    /// a wrong `base_url`, a proxy's page, a changed API. Never a successful poll.
    pub fn no_balance(message: impl Into<String>) -> Self {
        Self::new(codes::NO_BALANCE, ErrorClass::Decode, message)
    }

    /// A single-currency answer that names another currency than the one asked for.
    pub fn wrong_currency(asked: &str, answered: &str) -> Self {
        Self::new(
            codes::WRONG_CURRENCY,
            ErrorClass::Decode,
            format!(
                "asked for {asked}, the answer is for {}",
                wire::label_text(answered)
            ),
        )
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Marks an error of a transient class as one that retrying will not fix.
    pub fn final_attempt(mut self) -> Self {
        self.retryable = false;
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

#[cfg(test)]
mod tests {
    use super::codes::is_exporter_code;

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

    #[test]
    fn exporter_codes_are_a_bounded_set() {
        for code in [
            "timeout",
            "tls",
            "no_balance",
            "http_503",
            "http_100",
            "http_599",
        ] {
            assert!(is_exporter_code(code), "{code}");
        }
        for code in [
            "2001",
            "http_5033",
            "http_099",
            "http_600",
            "http_abc",
            "Timeout",
            "",
        ] {
            assert!(!is_exporter_code(code), "{code}");
        }
    }
}
