//! PayBy (UAE acquiring): `getBalance`, one currency per call, signed in both directions.
//!
//! `POST {base}/sgs/api/member/getBalance` with `{"bizContent":{"currencyCode":"AED"},
//! "requestTime":<ms>}`. The body is serialized once per attempt, signed (SHA256withRSA with
//! the merchant key, see [`keys`]) and sent as exactly those bytes, with the signature in the
//! `sign` header. Every answer's `sign` is verified over the raw body with PayBy's public key
//! before the body is parsed; an answer that fails is never believed. Only generic gateway
//! errors may come unsigned. Codes are labelled by their `msg` name because several share
//! the number 400.

pub mod keys;
#[cfg(feature = "demo")]
pub mod sim;

use std::sync::Arc;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::http::join_url;
use super::wire::{WireCode, label_text};
use super::{
    CurrencyScope, ErrorClass, PollContext, Provider, ProviderError, ProviderSettings, Response,
    SharedState,
};
use crate::clock::Clock;
use crate::fields::{Fields, LoadedSecret, is_currency_code};
use crate::money::parse_amount;
use crate::snapshot::Snapshot;
pub use keys::{SigningKey, VerifyingKey};

/// The `provider` value in the config and the `provider` label.
pub const NAME: &str = "payby";

pub const PRODUCTION_BASE_URL: &str = "https://api.payby.com";
pub const UAT_BASE_URL: &str = "https://uat.test2pay.com";
pub const BALANCE_PATH: &str = "/sgs/api/member/getBalance";
/// The `endpoint` label.
const ENDPOINT: &str = "getBalance";
const MAX_PARTNER_ID_LEN: usize = 12;

const KINDS: &[&str] = &["available"];

pub const SIGNATURE_INVALID: &str = "signature_invalid";
pub const SIGNATURE_MISSING: &str = "signature_missing";

/// Every documented `msg` with its class; they start at 0 in `/metrics`. The two signature
/// codes are the exporter's, listed so that the first forged or unsigned answer shows as an
/// increase.
const DOCUMENTED_ERRORS: &[(&str, ErrorClass)] = &[
    ("INVALID_PARAMETER", ErrorClass::Client),
    ("REQUESTTIME_TOO_EARLY", ErrorClass::Clock),
    ("REQUESTTIME_TOO_LATER", ErrorClass::Clock),
    ("RATE_LIMIT_REJECT", ErrorClass::RateLimit),
    ("UNAUTHORIZED", ErrorClass::Auth),
    ("SERVICE_NOT_AVAILABLE", ErrorClass::Server),
    ("SYSTEM_ERROR", ErrorClass::Server),
    ("SERVICE_TIMEOUT", ErrorClass::Server),
    // Refused by PayBy's risk control (merchant state, caller IP): retrying does not help.
    ("RISK_FAIL", ErrorClass::Auth),
    ("CURRENCY_CODE_NOT_SUPPORTED", ErrorClass::Client),
    (SIGNATURE_INVALID, ErrorClass::Signature),
    (SIGNATURE_MISSING, ErrorClass::Signature),
];

/// The `head.code` PayBy sends with each documented `msg`.
pub fn wire_code(msg: &str) -> Option<&'static str> {
    Some(match msg {
        "SUCCESS" => "0",
        "INVALID_PARAMETER" | "REQUESTTIME_TOO_EARLY" | "REQUESTTIME_TOO_LATER" => "400",
        "RATE_LIMIT_REJECT" => "402",
        "UNAUTHORIZED" => "403",
        "SERVICE_NOT_AVAILABLE" => "404",
        "SYSTEM_ERROR" => "500",
        "SERVICE_TIMEOUT" => "504",
        "RISK_FAIL" => "601",
        "CURRENCY_CODE_NOT_SUPPORTED" => "78001",
        _ => return None,
    })
}

/// The documented error `msg`s (without the exporter's signature codes).
pub fn documented_msgs() -> impl Iterator<Item = (&'static str, ErrorClass)> {
    DOCUMENTED_ERRORS
        .iter()
        .copied()
        .filter(|(msg, _)| wire_code(msg).is_some())
}

/// Generic gateway errors, which PayBy may send unsigned: `58xx` and the HTTP-like codes.
pub fn is_generic_gateway_code(code: &str) -> bool {
    code.starts_with("58") || matches!(code, "400" | "402" | "403" | "404" | "500" | "504" | "601")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Uat,
}

impl Environment {
    pub fn base_url(self) -> &'static str {
        match self {
            Environment::Production => PRODUCTION_BASE_URL,
            Environment::Uat => UAT_BASE_URL,
        }
    }
}

/// Compared on reload (secrets by value): an account whose config is unchanged keeps running.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub environment: Environment,
    pub base_url: reqwest::Url,
    pub partner_id: String,
    /// The merchant's private key, parsed and checked at load time.
    pub private_key: SigningKey,
    pub payby_public_key: VerifyingKey,
    pub currencies: Vec<String>,
}

/// `partner_id` as written: `"200000018128"` or an unquoted YAML number.
#[derive(Deserialize)]
#[serde(untagged)]
enum PartnerId {
    Text(String),
    Number(u64),
}

impl Config {
    pub fn read(fields: &mut Fields<'_>) -> Option<Config> {
        let environment = fields
            .optional::<Environment>("environment")
            .unwrap_or(Environment::Production);
        let partner_id = read_partner_id(fields);
        let private_key = fields
            .secret("private_key")
            .and_then(|s| load_key(fields, s, SigningKey::from_pem));
        let payby_public_key = fields
            .secret("payby_public_key")
            .and_then(|s| load_key(fields, s, VerifyingKey::from_text));
        // PayBy answers one currency per call: there is no "all currencies".
        let currencies = fields.currencies("currencies", true);
        let base_url = fields.base_url(Some(environment.base_url()));
        Some(Config {
            environment,
            base_url: base_url?,
            partner_id: partner_id?,
            private_key: private_key?,
            payby_public_key: payby_public_key?,
            currencies: currencies?,
        })
    }
}

fn read_partner_id(fields: &mut Fields<'_>) -> Option<String> {
    let id = match fields.required::<PartnerId>("partner_id")? {
        PartnerId::Text(text) => text,
        PartnerId::Number(n) => n.to_string(),
    };
    if id.is_empty()
        || id.len() > MAX_PARTNER_ID_LEN
        || !id.chars().all(|c| c.is_ascii_alphanumeric())
    {
        fields.error(
            "partner_id",
            format!("{id:?} is not a PayBy partner id (letters and digits, at most {MAX_PARTNER_ID_LEN})"),
        );
        return None;
    }
    Some(id)
}

/// Parses a key read from a secret source; a problem names that source (`private_key_file`).
fn load_key<K>(
    fields: &mut Fields<'_>,
    secret: LoadedSecret,
    parse: impl FnOnce(&str) -> Result<K, String>,
) -> Option<K> {
    match parse(secret.value.expose()) {
        Ok(key) => Some(key),
        Err(problem) => {
            fields.error_at(&secret.path, problem);
            None
        }
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
        "available"
    }

    fn currency_scope(&self) -> CurrencyScope {
        CurrencyScope::Fixed(self.currencies.clone())
    }

    fn documented_errors(&self) -> &'static [(&'static str, ErrorClass)] {
        DOCUMENTED_ERRORS
    }

    fn build(&self, _: &SharedState) -> Arc<dyn Provider> {
        Arc::new(PayBy {
            url: join_url(&self.base_url, BALANCE_PATH),
            config: self.clone(),
        })
    }
}

struct PayBy {
    config: Config,
    url: reqwest::Url,
}

#[async_trait::async_trait]
impl Provider for PayBy {
    async fn fetch(&self, http: &PollContext<'_>) -> Result<Snapshot, ProviderError> {
        let mut snapshot = Snapshot::default();
        for currency in &self.config.currencies {
            let clock = http.clock();
            let balances = http
                .call(
                    ENDPOINT,
                    |client| self.request(client, clock, currency),
                    |response| interpret_for(response, &self.config.payby_public_key, currency),
                )
                .await?;
            for (currency, amount) in balances {
                snapshot.add(&currency, "available", Some(amount));
            }
        }
        Ok(snapshot)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BalanceRequest<'a> {
    biz_content: BizContent<'a>,
    request_time: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BizContent<'a> {
    currency_code: &'a str,
}

/// The body of a `getBalance` request stamped `request_time`, as the bytes that get signed
/// and sent.
pub fn request_body(currency: &str, request_time: u64) -> Vec<u8> {
    let request = BalanceRequest {
        biz_content: BizContent {
            currency_code: currency,
        },
        request_time,
    };
    // Serializing plain strings and integers cannot fail.
    serde_json::to_vec(&request).unwrap_or_default()
}

impl PayBy {
    /// A fresh request: new `requestTime`, new signature over exactly the bytes sent.
    fn request(
        &self,
        client: &reqwest::Client,
        clock: Clock,
        currency: &str,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let body = request_body(currency, clock.now_millis());
        let sign = self.config.private_key.sign(&body).map_err(|e| {
            ProviderError::new(
                "sign_failed",
                ErrorClass::Client,
                format!("cannot sign: {e}"),
            )
        })?;
        Ok(client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header("Partner-Id", &self.config.partner_id)
            .header("sign", sign)
            .header("Content-Language", "en")
            .header("api-version", "v1")
            .body(body))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    apply_status: Option<String>,
    code: Option<WireCode>,
    msg: Option<String>,
    trace_code: Option<WireCode>,
}

impl Head {
    fn code(&self) -> &str {
        self.code.as_ref().map(WireCode::as_str).unwrap_or("")
    }

    fn is_success(&self) -> bool {
        self.apply_status.as_deref() == Some("SUCCESS") && self.code() == "0"
    }

    /// The error this head reports: labelled by `msg` (several codes share 400), classed by
    /// the documented table, else by the number.
    fn error(&self, response: &Response) -> ProviderError {
        let msg = self.msg.as_deref().map(str::trim).unwrap_or("");
        let code = self.code();
        let documented = documented_msgs().find(|(m, _)| *m == msg);
        let (label, class) = match documented {
            Some((m, class)) => (m.to_owned(), class),
            None => {
                let is_name = !msg.is_empty()
                    && msg.len() <= 64
                    && msg
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                let label = if is_name {
                    msg.to_owned()
                } else if !code.is_empty() {
                    label_text(code)
                } else {
                    format!("http_{}", response.status)
                };
                (label, class_of_code(code))
            }
        };
        let trace = self
            .trace_code
            .as_ref()
            .map(WireCode::as_str)
            .unwrap_or("-");
        let apply = self.apply_status.as_deref().unwrap_or("-");
        let message = format!(
            "{} (code {}, applyStatus {}, traceCode {})",
            label_text(msg),
            label_text(code),
            label_text(apply),
            label_text(trace)
        );
        ProviderError::new(label, class, message).with_retry_after(response.retry_after())
    }
}

impl Head {
    /// A generic gateway error that came unsigned. Anyone on the path can write such an
    /// answer, so nothing in it is believed beyond "the gateway failed": the class is always
    /// `server`, and the label is [`gateway_label`] of the numeric code, never the `msg`
    /// (an unsigned `UNAUTHORIZED` must not page as an auth failure). The msg stays in the
    /// message for the operator.
    fn unsigned_error(&self, response: &Response) -> ProviderError {
        let msg = self.msg.as_deref().map(str::trim).unwrap_or("");
        let code = self.code();
        let trace = self
            .trace_code
            .as_ref()
            .map(WireCode::as_str)
            .unwrap_or("-");
        let message = format!(
            "unsigned gateway error, not verified: code {}, msg {}, traceCode {}",
            label_text(code),
            label_text(msg),
            label_text(trace)
        );
        ProviderError::new(gateway_label(code), ErrorClass::Server, message)
            .with_retry_after(response.retry_after())
    }
}

/// The label of an unsigned generic gateway error (`head.code` accepted by
/// [`is_generic_gateway_code`]): `gateway_<code>` for the seven HTTP-like codes and for
/// `58` followed by two digits, `gateway_58xx` for anything else. At most 108 labels, whatever
/// the answer says.
pub fn gateway_label(code: &str) -> String {
    let four_digit_58 =
        code.len() == 4 && code.starts_with("58") && code.bytes().all(|b| b.is_ascii_digit());
    if four_digit_58 || matches!(code, "400" | "402" | "403" | "404" | "500" | "504" | "601") {
        format!("gateway_{code}")
    } else {
        "gateway_58xx".to_owned()
    }
}

/// An unsigned answer without a head and with an error status: `http_<status>`, class
/// `server` whatever the status, for the same reason as [`Head::unsigned_error`].
fn unsigned_status_error(response: &Response) -> ProviderError {
    // The status error's message (a proxy's page quoted), under this code and class.
    let message = format!("unsigned: {}", response.status_error().message);
    ProviderError::new(
        format!("http_{}", response.status),
        ErrorClass::Server,
        message,
    )
    .with_retry_after(response.retry_after())
}

/// The class of an undocumented `head.code`, from its number.
fn class_of_code(code: &str) -> ErrorClass {
    match code {
        "402" => ErrorClass::RateLimit,
        "403" | "601" => ErrorClass::Auth,
        "404" | "500" | "504" => ErrorClass::Server,
        c if c.starts_with("58") => ErrorClass::Server,
        _ => ErrorClass::Client,
    }
}

#[derive(Deserialize)]
struct HeadOnly {
    head: Option<Head>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    head: Option<Head>,
    #[serde(borrow)]
    body: Option<Body<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    #[serde(borrow)]
    balance_list: Option<Vec<Entry<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    #[serde(borrow)]
    available_balance: Option<Money<'a>>,
}

#[derive(Deserialize)]
struct Money<'a> {
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
    currency: Option<String>,
}

fn signature_error(code: &str, message: &str) -> ProviderError {
    ProviderError::new(code, ErrorClass::Signature, message)
}

/// Checks the answer's signature, then reads it: every balance it lists (currency, amount),
/// or the error it reports. Public for `benches/parse.rs`.
pub fn interpret(
    response: &Response,
    payby_key: &VerifyingKey,
) -> Result<Vec<(String, Decimal)>, ProviderError> {
    verify(response, payby_key)?;
    let listed = read_answer(response)?;
    Ok(listed
        .into_iter()
        .filter_map(|(currency, amount)| Some((currency, amount?)))
        .collect())
}

/// [`interpret`] for the answer to a question about `asked`: the balances of `asked` it
/// lists. An answer is tied to its question: one that lists balances but none of `asked` is
/// `wrong_currency`, never exported under the currency it names. Other currencies listed
/// beside `asked` are left out: each configured currency is asked for by its own call. An
/// empty list is a valid answer (the account does not hold `asked`).
pub fn interpret_for(
    response: &Response,
    payby_key: &VerifyingKey,
    asked: &str,
) -> Result<Vec<(String, Decimal)>, ProviderError> {
    verify(response, payby_key)?;
    let listed = read_answer(response)?;
    let Some((first, _)) = listed.first() else {
        return Ok(Vec::new());
    };
    if !listed.iter().any(|(currency, _)| currency == asked) {
        return Err(ProviderError::wrong_currency(asked, first));
    }
    Ok(listed
        .into_iter()
        .filter(|(currency, _)| currency == asked)
        .filter_map(|(currency, amount)| Some((currency, amount?)))
        .collect())
}

/// Lets through only an answer that carries a valid signature; any other is an error:
/// `signature_invalid`, `signature_missing`, or, unsigned, a generic gateway error that is
/// believed no further than "the gateway failed" (class `server`).
fn verify(response: &Response, payby_key: &VerifyingKey) -> Result<(), ProviderError> {
    let sign = response
        .header("sign")
        .map(str::trim)
        .filter(|s| !s.is_empty());
    match sign {
        Some(sign) if payby_key.verify(&response.body, sign) => Ok(()),
        Some(_) => Err(signature_error(
            SIGNATURE_INVALID,
            "the answer's signature does not verify with the PayBy public key; ignored",
        )),
        None => {
            // Believed only as a generic gateway error: such an answer can make a poll fail,
            // never show a balance.
            let parsed = serde_json::from_slice::<HeadOnly>(&response.body);
            let not_json = parsed.is_err()
                && serde_json::from_slice::<serde::de::IgnoredAny>(&response.body).is_err();
            let head = parsed.ok().and_then(|h| h.head);
            Err(match head {
                Some(head) if is_generic_gateway_code(head.code()) => head.unsigned_error(response),
                None if !response.is_success() => unsigned_status_error(response),
                // Not JSON at all (a proxy's page, a login page, a cut body): nothing says the
                // keys are wrong, so not a signature error; say what came instead.
                None if not_json => response.decode_error("an unsigned answer that is not JSON"),
                _ => signature_error(
                    SIGNATURE_MISSING,
                    "the answer has no sign header and is not a generic gateway error; ignored",
                ),
            })
        }
    }
}

/// Reads an answer whose signature has been verified: each balance it lists (currency, and
/// amount if it has one), or the error it reports. A success must carry `body.balanceList`
/// (else `no_balance`); an empty list is a valid answer.
fn read_answer(response: &Response) -> Result<Vec<(String, Option<Decimal>)>, ProviderError> {
    let envelope: Envelope = match serde_json::from_slice(&response.body) {
        Ok(envelope) => envelope,
        Err(_) if !response.is_success() => return Err(response.status_error()),
        Err(e) => return Err(response.decode_error(format_args!("not the JSON expected ({e})"))),
    };
    let Some(head) = envelope.head else {
        return Err(if response.is_success() {
            ProviderError::no_balance("answer without head")
        } else {
            response.status_error()
        });
    };
    if !head.is_success() {
        return Err(head.error(response));
    }
    if !response.is_success() {
        return Err(response.status_error());
    }
    let list = envelope
        .body
        .and_then(|b| b.balance_list)
        .ok_or_else(|| ProviderError::no_balance("success without body.balanceList"))?;
    let mut out = Vec::with_capacity(list.len());
    let entries = list.len();
    for entry in list {
        let Some(money) = entry.available_balance else {
            continue;
        };
        let amount = parse_amount(money.amount)
            .map_err(|e| ProviderError::decode(format!("availableBalance.amount: {e}")))?;
        let currency = money
            .currency
            .map(|c| c.trim().to_ascii_uppercase())
            .filter(|c| is_currency_code(c))
            .ok_or_else(|| ProviderError::decode("availableBalance without a valid currency"))?;
        out.push((currency, amount));
    }
    if entries > 0 && out.is_empty() {
        return Err(ProviderError::no_balance(
            "balanceList entries without availableBalance",
        ));
    }
    Ok(out)
}

// Against the simulator, which the lean build (no `demo` feature) lacks.
#[cfg(all(test, feature = "demo"))]
mod tests;
