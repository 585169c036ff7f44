//! Stripe: the account's balance object, one list of amounts per kind of funds.
//!
//! `GET {base}/v1/balance` with `Authorization: Bearer <secret or restricted key>`, and for a
//! Connect platform reading a connected account, `Stripe-Account: acct_...`. The answer is the
//! balance object: `available`, `pending`, and where the account has them `instant_available`,
//! `connect_reserved`, `issuing.available` and `refund_and_dispute_prefunding.{available,
//! pending}`, each a list of `{"amount": <integer in minor units>, "currency": "usd"}`.
//! Minor units follow Stripe's own currency table ([`stripe_exponent`]), which is not ISO
//! 4217's. Errors are `{"error": {"type", "code", "message"}}` under a 4xx/5xx; the code label
//! is Stripe's `code` where it gives one, else what the status and `type` say ([`error_code`]).
//! A `Stripe-Should-Retry: false` answer is not retried.

#[cfg(feature = "demo")]
pub mod sim;

use std::sync::Arc;

use reqwest::header::AUTHORIZATION;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::join_url;
use super::wire::label_text;
use super::{
    CurrencyScope, ErrorClass, PollContext, Provider, ProviderError, ProviderSettings, Response,
    SharedState,
};
use crate::fields::{Fields, is_currency_code};
use crate::money::parse_amount;
use crate::secret::Secret;
use crate::snapshot::Snapshot;

/// The `provider` value in the config and the `provider` label.
pub const NAME: &str = "stripe";

pub const BASE_URL: &str = "https://api.stripe.com";
pub const BALANCE_PATH: &str = "/v1/balance";

/// The kinds, one per list of the balance object (nested lists joined with `_`).
pub const AVAILABLE: &str = "available";
pub const PENDING: &str = "pending";
pub const INSTANT_AVAILABLE: &str = "instant_available";
pub const CONNECT_RESERVED: &str = "connect_reserved";
pub const ISSUING_AVAILABLE: &str = "issuing_available";
pub const PREFUNDING_AVAILABLE: &str = "refund_and_dispute_prefunding_available";
pub const PREFUNDING_PENDING: &str = "refund_and_dispute_prefunding_pending";

const KINDS: &[&str] = &[
    AVAILABLE,
    PENDING,
    INSTANT_AVAILABLE,
    CONNECT_RESERVED,
    ISSUING_AVAILABLE,
    PREFUNDING_AVAILABLE,
    PREFUNDING_PENDING,
];

/// The codes a balance read can end in, with their class. Stripe's error `type`s stand in
/// where its answer has no `code`; 401 and 403 without one are named after the status (the
/// SDK's `AuthenticationError` and `PermissionError`).
const DOCUMENTED_ERRORS: &[(&str, ErrorClass)] = &[
    ("authentication_error", ErrorClass::Auth), // 401: no, an unknown or a revoked key
    ("api_key_expired", ErrorClass::Auth),      // 401
    ("permission_error", ErrorClass::Auth),     // 403: a restricted key without "Balance: read"
    ("account_invalid", ErrorClass::Auth),      // 403: a Stripe-Account the key may not act for
    ("rate_limit", ErrorClass::RateLimit),      // 429 (once 400)
    ("api_error", ErrorClass::Server),          // 5xx
    ("invalid_request_error", ErrorClass::Client),
    ("idempotency_error", ErrorClass::Client),
    ("card_error", ErrorClass::Client),
];

/// Stripe's zero-decimal currencies: amounts are whole units.
const ZERO_DECIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];
/// Stripe's three-decimal currencies.
const THREE_DECIMAL: &[&str] = &["BHD", "JOD", "KWD", "OMR", "TND"];

/// The number of decimals of an amount of `currency` (upper-case) in Stripe's API: 0 for its
/// zero-decimal currencies, 3 for its three-decimal ones, 2 for every other, as its currency
/// guide says. Not ISO 4217 (`money::minor_units`): ISK is zero-decimal in ISO but two-decimal
/// in Stripe's API (100 is 1 ISK), MGA the other way round, and HUF and TWD stay two-decimal
/// although Stripe pays them out in whole units.
pub fn stripe_exponent(currency: &str) -> u32 {
    if ZERO_DECIMAL.contains(&currency) {
        0
    } else if THREE_DECIMAL.contains(&currency) {
        3
    } else {
        2
    }
}

/// Compared on reload (secrets by value): an account whose config is unchanged keeps running.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub base_url: reqwest::Url,
    /// A secret (`sk_`) or restricted (`rk_`) key.
    pub api_key: Secret,
    /// The connected account to read (Connect), sent as `Stripe-Account`.
    pub stripe_account: Option<String>,
}

impl Config {
    pub fn read(fields: &mut Fields<'_>) -> Option<Config> {
        let base_url = fields.base_url(Some(BASE_URL));
        let api_key = fields.secret("api_key").and_then(|key| {
            match key_problem(key.value.expose()) {
                // The problem names the prefix at most, never the key.
                Some(problem) => {
                    fields.error_at(&key.path, problem);
                    None
                }
                None => Some(key.value),
            }
        });
        let stripe_account = match fields.optional::<String>("stripe_account") {
            None => Some(None),
            Some(account) if is_account_id(account.trim()) => Some(Some(account.trim().to_owned())),
            Some(account) => {
                fields.error(
                    "stripe_account",
                    format!(
                        "{:?} is not a Stripe account id like acct_1Nv0FGQ9RKHgCVdK",
                        label_text(&account)
                    ),
                );
                None
            }
        };
        Some(Config {
            base_url: base_url?,
            api_key: api_key?,
            stripe_account: stripe_account?,
        })
    }
}

/// What is wrong with an API key, told without its value: only secret (`sk_`) and restricted
/// (`rk_`) keys may read a balance.
fn key_problem(key: &str) -> Option<&'static str> {
    if key.starts_with("sk_") || key.starts_with("rk_") {
        if key.bytes().all(|b| b.is_ascii_graphic()) {
            None
        } else {
            Some("the key has spaces or control characters in it (value not shown)")
        }
    } else if key.starts_with("pk_") {
        Some(
            "a publishable key (pk_) cannot read balances: use a secret key (sk_) or a \
             restricted key (rk_) with \"Balance: read\"",
        )
    } else {
        Some(
            "not a Stripe secret (sk_live_/sk_test_) or restricted (rk_live_/rk_test_) key \
             (value not shown)",
        )
    }
}

/// `acct_` and letters and digits, as Stripe's account ids are.
pub fn is_account_id(id: &str) -> bool {
    id.strip_prefix("acct_").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

impl ProviderSettings for Config {
    fn provider(&self) -> &'static str {
        NAME
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    /// What can be paid out or transferred now.
    fn default_threshold_kind(&self) -> &'static str {
        AVAILABLE
    }

    fn currency_scope(&self) -> CurrencyScope {
        CurrencyScope::Discovered
    }

    fn documented_errors(&self) -> &'static [(&'static str, ErrorClass)] {
        DOCUMENTED_ERRORS
    }

    fn build(&self, _: &SharedState) -> Arc<dyn Provider> {
        Arc::new(Stripe {
            url: join_url(&self.base_url, BALANCE_PATH),
            config: self.clone(),
        })
    }
}

struct Stripe {
    config: Config,
    url: reqwest::Url,
}

#[async_trait::async_trait]
impl Provider for Stripe {
    async fn fetch(&self, http: &PollContext<'_>) -> Result<Snapshot, ProviderError> {
        let c = &self.config;
        http.call(
            "balance",
            |client| {
                let mut request = client
                    .get(self.url.clone())
                    .header(AUTHORIZATION, format!("Bearer {}", c.api_key.expose()));
                if let Some(account) = &c.stripe_account {
                    request = request.header("stripe-account", account);
                }
                Ok(request)
            },
            parse_balance,
        )
        .await
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The `code` label of a Stripe error: its `code` where it has one, else what 401, 403 and 429
/// mean, else its `type`, else `http_<status>`.
pub fn error_code(status: u16, kind: Option<&str>, code: Option<&str>) -> String {
    let printable = |text: &str| Some(label_text(text)).filter(|t| !t.is_empty());
    if let Some(code) = code.and_then(printable) {
        return code;
    }
    match status {
        401 => return "authentication_error".to_owned(),
        403 => return "permission_error".to_owned(),
        429 => return "rate_limit".to_owned(),
        _ => {}
    }
    match kind.and_then(printable) {
        Some(kind) => kind,
        None => format!("http_{status}"),
    }
}

/// The class of `code`: its documented class, else the status's (a 2xx that carries an error
/// is a refusal: `client`).
fn error_class(code: &str, status: u16) -> ErrorClass {
    DOCUMENTED_ERRORS
        .iter()
        .find(|(documented, _)| *documented == code)
        .map_or_else(
            || match status {
                200..=299 => ErrorClass::Client,
                _ => ErrorClass::of_http_status(status),
            },
            |(_, class)| *class,
        )
}

/// The error of an answer with the error envelope (whatever its status), or of a non-2xx
/// answer without it; `None` for a 2xx without it.
fn check_error(response: &Response) -> Option<ProviderError> {
    let envelope = serde_json::from_slice::<ErrorEnvelope>(&response.body).ok();
    let error = match envelope {
        Some(ErrorEnvelope { error }) => {
            let code = error_code(
                response.status,
                error.kind.as_deref(),
                error.code.as_deref(),
            );
            let class = error_class(&code, response.status);
            let mut message = error
                .message
                .unwrap_or_else(|| format!("HTTP {}", response.status));
            if let Some(id) = response.header("request-id") {
                message = format!("{message} (request {})", label_text(id));
            }
            ProviderError::new(code, class, message).with_retry_after(response.retry_after())
        }
        None if response.is_success() => return None,
        None => response.status_error(),
    };
    // Stripe tells when a retry cannot help (the SDK obeys it too).
    let should_retry = response
        .header("stripe-should-retry")
        .map(|v| v.trim().to_ascii_lowercase());
    Some(if should_retry.as_deref() == Some("false") {
        error.final_attempt()
    } else {
        error
    })
}

#[derive(Deserialize)]
struct Funds<'a> {
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
    currency: Option<String>,
}

#[derive(Deserialize)]
struct Issuing<'a> {
    #[serde(borrow, default)]
    available: Option<Vec<Funds<'a>>>,
}

#[derive(Deserialize)]
struct Prefunding<'a> {
    #[serde(borrow, default)]
    available: Option<Vec<Funds<'a>>>,
    #[serde(borrow, default)]
    pending: Option<Vec<Funds<'a>>>,
}

/// The parts of the balance object that hold amounts (`livemode` and `source_types` are not
/// balances; `instant_available[].net_available` is a breakdown of its entry).
#[derive(Deserialize)]
struct BalanceBody<'a> {
    #[serde(default)]
    object: Option<String>,
    #[serde(borrow, default)]
    available: Option<Vec<Funds<'a>>>,
    #[serde(borrow, default)]
    pending: Option<Vec<Funds<'a>>>,
    #[serde(borrow, default)]
    instant_available: Option<Vec<Funds<'a>>>,
    #[serde(borrow, default)]
    connect_reserved: Option<Vec<Funds<'a>>>,
    #[serde(borrow, default)]
    issuing: Option<Issuing<'a>>,
    #[serde(borrow, default)]
    refund_and_dispute_prefunding: Option<Prefunding<'a>>,
}

/// Reads a `GET /v1/balance` answer, whatever its status.
pub fn parse_balance(response: &Response) -> Result<Snapshot, ProviderError> {
    if let Some(error) = check_error(response) {
        return Err(error);
    }
    let body: BalanceBody = response.json()?;
    if let Some(object) = &body.object
        && object != "balance"
    {
        return Err(ProviderError::no_balance(format!(
            "HTTP {} with a {:?} object, not a balance",
            response.status,
            label_text(object)
        )));
    }
    let (issuing, prefunding) = (body.issuing, body.refund_and_dispute_prefunding);
    let (prefunding_available, prefunding_pending) = match prefunding {
        Some(p) => (p.available, p.pending),
        None => (None, None),
    };
    let lists = [
        (AVAILABLE, body.available),
        (PENDING, body.pending),
        (INSTANT_AVAILABLE, body.instant_available),
        (CONNECT_RESERVED, body.connect_reserved),
        (ISSUING_AVAILABLE, issuing.and_then(|i| i.available)),
        (PREFUNDING_AVAILABLE, prefunding_available),
        (PREFUNDING_PENDING, prefunding_pending),
    ];
    let mut snapshot = Snapshot::default();
    for (kind, list) in lists {
        for (i, funds) in list.iter().flatten().enumerate() {
            let Some(amount) = amount(kind, i, funds)? else {
                continue;
            };
            let currency = currency(kind, i, funds)?;
            let amount = from_minor_units(amount, stripe_exponent(&currency)).ok_or_else(|| {
                ProviderError::decode(format!("{kind}[{i}]: amount out of range"))
            })?;
            snapshot.add(&currency, kind, Some(amount));
        }
    }
    if snapshot.balances.is_empty() {
        return Err(ProviderError::no_balance(format!(
            "HTTP {} without any balance amount ({} bytes)",
            response.status,
            response.body.len()
        )));
    }
    Ok(snapshot)
}

/// An entry's amount in minor units: `None` when absent or null (no sample), an error when it
/// is not a whole number.
fn amount(kind: &str, i: usize, funds: &Funds<'_>) -> Result<Option<Decimal>, ProviderError> {
    let amount = parse_amount(funds.amount)
        .map_err(|e| ProviderError::decode(format!("{kind}[{i}].amount: {e}")))?;
    match amount {
        Some(a) if !a.fract().is_zero() => Err(ProviderError::decode(format!(
            "{kind}[{i}].amount: {a} is not a whole number of minor units"
        ))),
        other => Ok(other),
    }
}

/// An entry's currency, upper-cased; one that is not a three-letter code is an error (an
/// amount without a currency cannot be told apart from the others).
fn currency(kind: &str, i: usize, funds: &Funds<'_>) -> Result<String, ProviderError> {
    let currency = funds
        .currency
        .as_deref()
        .map(|c| c.trim().to_ascii_uppercase())
        .unwrap_or_default();
    if is_currency_code(&currency) {
        Ok(currency)
    } else {
        Err(ProviderError::decode(format!(
            "{kind}[{i}]: {:?} is not a currency code",
            label_text(&currency)
        )))
    }
}

/// `minor` (whole) divided by 10^`exponent`, exactly.
fn from_minor_units(minor: Decimal, exponent: u32) -> Option<Decimal> {
    minor.checked_mul(Decimal::new(1, exponent))
}

// Against the simulator, which the lean build (no `demo` feature) lacks.
#[cfg(all(test, feature = "demo"))]
mod tests;
