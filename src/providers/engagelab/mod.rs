//! EngageLab: prepaid SMS and OTP balances.
//!
//! `GET {base}/v1/balance` with HTTP Basic auth (`dev_key:dev_secret`). SMS answers with
//! integer amounts x 10000 (exact) and float copies; it carries no currency, so the config
//! names it. OTP answers with string amounts and its currency. Errors come as 4xx/5xx with
//! `{"code": <int>, "message": "..."}`; code 2002 is documented with 401 and 403, so the HTTP
//! status decides the class.

pub mod sim;

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::join_url;
use super::{CurrencyScope, ErrorClass, Http, Provider, ProviderError, ProviderSettings, Response};
use crate::config::{Fields, is_currency_code};
use crate::money::parse_amount;
use crate::secret::Secret;
use crate::snapshot::Snapshot;

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
        "engagelab"
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

    fn build(&self) -> Arc<dyn Provider> {
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
    async fn fetch(&self, http: &Http<'_>) -> Result<Snapshot, ProviderError> {
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
    message: String,
}

/// The error of a non-2xx answer: its `code` with a class from the HTTP status.
fn check_status(response: &Response) -> Result<(), ProviderError> {
    if response.is_success() {
        return Ok(());
    }
    match serde_json::from_slice::<ErrorBody>(&response.body) {
        Ok(body) => {
            let class = ErrorClass::of_http_status(response.status);
            Err(
                ProviderError::new(body.code.to_string(), class, body.message)
                    .with_retry_after(response.retry_after()),
            )
        }
        Err(_) => Err(response.status_error()),
    }
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
    let currency = body
        .currency
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| is_currency_code(c))
        .ok_or_else(|| ProviderError::decode("OTP balance without a valid currency"))?;
    let mut snapshot = Snapshot::default();
    for (kind, raw) in [
        ("normal", body.balance),
        ("gift", body.gift_balance),
        ("total", body.total_balance),
    ] {
        snapshot.add(&currency, kind, amount(kind, raw)?);
    }
    Ok(snapshot)
}

fn amount(kind: &str, raw: Option<&RawValue>) -> Result<Option<Decimal>, ProviderError> {
    parse_amount(raw).map_err(|e| ProviderError::decode(format!("{kind} balance: {e}")))
}

#[cfg(test)]
mod tests;
