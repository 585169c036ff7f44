//! EngageLab: prepaid SMS and OTP balances.
//!
//! `GET {base}/v1/balance` with HTTP Basic auth (`dev_key:dev_secret`). SMS answers with
//! integer amounts x 10000 (exact) and float copies; it carries no currency, so the config
//! names it. OTP answers with string amounts and its currency. Errors come as 4xx/5xx with
//! `{"code": <int>, "message": "..."}`; code 2002 is documented with 401 and 403, so the HTTP
//! status decides the class. The same envelope under a 2xx is the same error (see
//! [`check_status`]), and a 2xx without any balance field is `no_balance`: never a success.

#[cfg(feature = "demo")]
pub mod sim;

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::join_url;
use super::{
    CurrencyScope, ErrorClass, PollContext, Provider, ProviderError, ProviderSettings, Response,
    SharedState,
};
use crate::fields::{Fields, is_currency_code};
use crate::money::parse_amount;
use crate::secret::Secret;
use crate::snapshot::Snapshot;

/// The `provider` value in the config and the `provider` label.
pub const NAME: &str = "engagelab";

pub const SMS_BASE_URL: &str = "https://smsapi.engagelab.com";
pub const OTP_BASE_URL: &str = "https://otp.api.engagelab.cc";

const KINDS: &[&str] = &["normal", "gift", "total"];
const DOCUMENTED_ERRORS: &[(&str, ErrorClass)] = &[
    ("1000", ErrorClass::Server),
    ("2001", ErrorClass::Auth),
    ("2002", ErrorClass::Auth),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Sms,
    Otp,
}

/// Compared on reload (secrets by value): an account whose config is unchanged keeps running.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub product: Product,
    pub base_url: reqwest::Url,
    pub dev_key: String,
    pub dev_secret: Secret,
    /// SMS only: the wire has no currency.
    pub currency: String,
}

impl Config {
    pub fn read(fields: &mut Fields<'_>) -> Option<Config> {
        let product = match fields.required::<String>("product").as_deref() {
            Some("sms") => Some(Product::Sms),
            Some("otp") => Some(Product::Otp),
            Some(other) => {
                fields.error(
                    "product",
                    format!("{other:?} is not a product (sms or otp)"),
                );
                None
            }
            None => None,
        };
        let default_base = match product {
            Some(Product::Otp) => OTP_BASE_URL,
            _ => SMS_BASE_URL,
        };
        let base_url = fields.base_url(Some(default_base));
        let dev_key = fields.required_string("dev_key");
        let dev_secret = fields.secret("dev_secret");
        let currency: Option<String> = fields.optional("currency");
        if product == Some(Product::Otp) && currency.is_some() {
            fields.error(
                "currency",
                "only for product sms: OTP answers carry their currency",
            );
        }
        let currency = currency.unwrap_or_else(|| "USD".to_owned());
        if !is_currency_code(&currency) {
            fields.error(
                "currency",
                format!("{currency:?} is not a currency code like USD"),
            );
        }
        Some(Config {
            product: product?,
            base_url: base_url?,
            dev_key: dev_key?,
            dev_secret: dev_secret?.value,
            currency,
        })
    }
}

impl ProviderSettings for Config {
    fn provider(&self) -> &'static str {
        NAME
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn default_threshold_kind(&self) -> &'static str {
        "total"
    }

    fn currency_scope(&self) -> CurrencyScope {
        match self.product {
            Product::Sms => CurrencyScope::Fixed(vec![self.currency.clone()]),
            Product::Otp => CurrencyScope::SingleFromProvider,
        }
    }

    fn documented_errors(&self) -> &'static [(&'static str, ErrorClass)] {
        DOCUMENTED_ERRORS
    }

    /// The Basic credentials, as a provider echoing its `Authorization` header shows them.
    fn derived_secrets(&self) -> Vec<Secret> {
        vec![Secret::new(format!(
            "{}:{}",
            self.dev_key,
            self.dev_secret.expose()
        ))]
    }

    fn build(&self, _: &SharedState) -> Arc<dyn Provider> {
        Arc::new(EngageLab {
            config: self.clone(),
            url: join_url(&self.base_url, "/v1/balance"),
        })
    }
}

struct EngageLab {
    config: Config,
    url: reqwest::Url,
}

#[async_trait::async_trait]
impl Provider for EngageLab {
    async fn fetch(&self, http: &PollContext<'_>) -> Result<Snapshot, ProviderError> {
        let c = &self.config;
        http.call(
            "balance",
            |client| {
                Ok(client
                    .get(self.url.clone())
                    .basic_auth(&c.dev_key, Some(c.dev_secret.expose())))
            },
            |response| match c.product {
                Product::Sms => parse_sms(response, &c.currency),
                Product::Otp => parse_otp(response),
            },
        )
        .await
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    code: i64,
    #[serde(default)]
    message: Option<String>,
}

/// The error of an answer that carries the error envelope: a non-2xx answer with its `code`
/// and a class from the HTTP status, or a 2xx answer whose body is the envelope with a
/// non-zero `code`.
///
/// Under a 2xx the status says nothing, so the class is the one the code is documented with
/// (1000 server, 2001 and 2002 auth: the same as with their documented statuses, retries
/// included). An undocumented code under a 2xx is `client`: it is a definite refusal, not a
/// failure that waiting cures (so not retried), and a code we do not know must not raise the
/// credentials alert that `auth` pages for.
fn check_status(response: &Response) -> Result<(), ProviderError> {
    let envelope = serde_json::from_slice::<ErrorBody>(&response.body).ok();
    if response.is_success() {
        return match envelope {
            Some(body) if body.code != 0 => {
                let code = body.code.to_string();
                let class = DOCUMENTED_ERRORS
                    .iter()
                    .find(|(documented, _)| *documented == code)
                    .map_or(ErrorClass::Client, |(_, class)| *class);
                Err(envelope_error(code, class, body.message, response))
            }
            _ => Ok(()),
        };
    }
    match envelope {
        Some(body) => {
            let class = ErrorClass::of_http_status(response.status);
            Err(envelope_error(
                body.code.to_string(),
                class,
                body.message,
                response,
            ))
        }
        None => Err(response.status_error()),
    }
}

fn envelope_error(
    code: String,
    class: ErrorClass,
    message: Option<String>,
    response: &Response,
) -> ProviderError {
    let message = message.unwrap_or_else(|| format!("HTTP {}", response.status));
    ProviderError::new(code, class, message).with_retry_after(response.retry_after())
}

#[derive(Deserialize)]
struct SmsBody<'a> {
    #[serde(borrow)]
    balance10000: Option<&'a RawValue>,
    #[serde(borrow)]
    gift_balance10000: Option<&'a RawValue>,
    #[serde(borrow)]
    total_balance10000: Option<&'a RawValue>,
    #[serde(borrow)]
    balance: Option<&'a RawValue>,
    #[serde(borrow)]
    gift_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    total_balance: Option<&'a RawValue>,
}

/// Public for `benches/parse.rs`.
pub fn parse_sms(response: &Response, currency: &str) -> Result<Snapshot, ProviderError> {
    check_status(response)?;
    let body: SmsBody = response.json()?;
    let mut snapshot = Snapshot::default();
    for (kind, scaled, float) in [
        ("normal", body.balance10000, body.balance),
        ("gift", body.gift_balance10000, body.gift_balance),
        ("total", body.total_balance10000, body.total_balance),
    ] {
        // The x10000 integers are exact; the floats are only a fallback.
        let amount = match amount(kind, scaled)? {
            Some(scaled) => Some(scaled / Decimal::from(10_000)),
            None => amount(kind, float)?,
        };
        snapshot.add(currency, kind, amount);
    }
    if snapshot.balances.is_empty() {
        return Err(no_balance(response));
    }
    Ok(snapshot)
}

#[derive(Deserialize)]
struct OtpBody<'a> {
    currency: Option<String>,
    #[serde(borrow)]
    balance: Option<&'a RawValue>,
    #[serde(borrow)]
    gift_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    total_balance: Option<&'a RawValue>,
}

/// Public for `benches/parse.rs`.
pub fn parse_otp(response: &Response) -> Result<Snapshot, ProviderError> {
    check_status(response)?;
    let body: OtpBody = response.json()?;
    let amounts = [
        ("normal", amount("normal", body.balance)?),
        ("gift", amount("gift", body.gift_balance)?),
        ("total", amount("total", body.total_balance)?),
    ];
    // Before the currency: `{}` is an answer without balances, not one without a currency.
    if amounts.iter().all(|(_, a)| a.is_none()) {
        return Err(no_balance(response));
    }
    let currency = body
        .currency
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| is_currency_code(c))
        .ok_or_else(|| ProviderError::decode("OTP balance without a valid currency"))?;
    let mut snapshot = Snapshot::default();
    for (kind, amount) in amounts {
        snapshot.add(&currency, kind, amount);
    }
    Ok(snapshot)
}

/// A 2xx answer with none of the balance fields: a wrong `base_url`, a proxy's page, a
/// changed API, or the other product's host.
fn no_balance(response: &Response) -> ProviderError {
    ProviderError::no_balance(format!(
        "HTTP {} without any balance field: {}",
        response.status,
        response.body_start()
    ))
}

fn amount(kind: &str, raw: Option<&RawValue>) -> Result<Option<Decimal>, ProviderError> {
    parse_amount(raw).map_err(|e| ProviderError::decode(format!("{kind} balance: {e}")))
}

// Against the simulator, which the lean build (no `demo` feature) lacks.
#[cfg(all(test, feature = "demo"))]
mod tests;
