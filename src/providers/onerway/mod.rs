//! Onerway (account service): balances per currency, or an overview of all currencies.
//!
//! `POST {base}{balance_path}` with `{"requestId","requestTime","currency"}` per configured
//! currency, or `POST {base}{overview_path}` with `{"requestId","requestTime",
//! "displayCurrency"}` once. The `apikey` header authenticates; `requestId` is fresh on every
//! request, retries included (a reused one is refused as a duplicate, 40006). The public
//! documentation shows neither the hosts nor the paths, so all three are configuration with
//! no defaults. Two success envelopes exist (`code "200"` and `respCode "20000"`), with codes
//! as strings or numbers.

#[cfg(feature = "demo")]
pub mod sim;

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::http::join_url;
use super::wire::{WireCode, label_text};
use super::{
    CurrencyScope, ErrorClass, PollContext, Provider, ProviderError, ProviderSettings, Response,
    SharedState, codes,
};
use crate::clock::Clock;
use crate::fields::{Fields, is_currency_code};
use crate::money::parse_amount;
use crate::secret::Secret;
use crate::snapshot::{AccountStatus, Overview, Snapshot};

/// The `provider` value in the config and the `provider` label.
pub const NAME: &str = "onerway";

const KINDS: &[&str] = &["available", "withdrawable", "on_hold", "deposit", "total"];

/// The documented codes with their class.
const DOCUMENTED_ERRORS: &[(&str, ErrorClass)] = &[
    ("40001", ErrorClass::Client), // INVALID_PARAMETER
    ("40002", ErrorClass::Clock),  // INVALID_TIME_RANGE: requestTime outside the window
    ("40003", ErrorClass::Auth),   // UNAUTHORIZED_ACCESS
    ("40004", ErrorClass::Client), // RESOURCE_NOT_FOUND
    ("40005", ErrorClass::Server), // REQUEST_FAILED
    ("40006", ErrorClass::Client), // DUPLICATE_REQUEST: a reused requestId
    ("40007", ErrorClass::Client), // global-account errors
    ("40008", ErrorClass::Client),
    ("40009", ErrorClass::Client),
];

/// The documented name of a code, for messages and the simulator.
pub fn code_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "40001" => "INVALID_PARAMETER",
        "40002" => "INVALID_TIME_RANGE",
        "40003" => "UNAUTHORIZED_ACCESS",
        "40004" => "RESOURCE_NOT_FOUND",
        "40005" => "REQUEST_FAILED",
        "40006" => "DUPLICATE_REQUEST",
        "40007" | "40008" | "40009" => "GLOBAL_ACCOUNT_ERROR",
        _ => return None,
    })
}

/// What one poll asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// One overview call for all currencies.
    Overview {
        path: String,
        display_currency: Option<String>,
    },
    /// One balance call per currency.
    Currencies {
        path: String,
        currencies: Vec<String>,
    },
}

/// Compared on reload (secrets by value): an account whose config is unchanged keeps running.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub base_url: reqwest::Url,
    pub apikey: Secret,
    pub mode: Mode,
}

impl Config {
    pub fn read(fields: &mut Fields<'_>) -> Option<Config> {
        let base_url = fields.base_url(None);
        let apikey = fields.secret("apikey");
        let overview_given = fields.has("overview_path");
        let balance_given = fields.has("balance_path");
        let overview_path = read_path(fields, "overview_path");
        let balance_path = read_path(fields, "balance_path");
        let display_currency: Option<String> = fields.optional("display_currency");
        if let Some(c) = &display_currency
            && !is_currency_code(c)
        {
            fields.error(
                "display_currency",
                format!("{c:?} is not a currency code like USD"),
            );
        }
        let given_currencies = fields.has("currencies");
        let currencies = fields.currencies("currencies", false);
        let mode = match (currencies, given_currencies) {
            (Some(currencies), _) => match balance_path {
                Some(path) => Some(Mode::Currencies { path, currencies }),
                None => {
                    if !balance_given {
                        missing_path(fields, "balance_path", "currencies is set");
                    }
                    None
                }
            },
            // Invalid currencies: reported already.
            (None, true) => None,
            (None, false) => match overview_path {
                Some(path) => Some(Mode::Overview {
                    path,
                    display_currency: display_currency.clone(),
                }),
                None => {
                    if !overview_given {
                        missing_path(fields, "overview_path", "currencies is absent");
                    }
                    None
                }
            },
        };
        Some(Config {
            base_url: base_url?,
            apikey: apikey?.value,
            mode: mode?,
        })
    }
}

/// A path key (`/v1/...`), if present and valid. Absent is not a problem here: which one is
/// required depends on `currencies`.
fn read_path(fields: &mut Fields<'_>, key: &str) -> Option<String> {
    let path: String = fields.optional(key)?;
    let path = path.trim().to_owned();
    let valid = path.starts_with('/')
        && path.len() > 1
        && !path.contains(['?', '#'])
        && !path.chars().any(char::is_whitespace);
    if !valid {
        fields.error(
            key,
            format!("{path:?} is not a path like /from/onerway/docs (no query, no spaces)"),
        );
        return None;
    }
    Some(path)
}

fn missing_path(fields: &mut Fields<'_>, key: &str, because: &str) {
    fields.error(
        key,
        format!("required when {because}: the path from Onerway's account-service documentation"),
    );
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
        match &self.mode {
            Mode::Currencies { currencies, .. } => CurrencyScope::Fixed(currencies.clone()),
            Mode::Overview { .. } => CurrencyScope::Discovered,
        }
    }

    fn documented_errors(&self) -> &'static [(&'static str, ErrorClass)] {
        DOCUMENTED_ERRORS
    }

    fn build(&self, _: &SharedState) -> Arc<dyn Provider> {
        let path = match &self.mode {
            Mode::Overview { path, .. } | Mode::Currencies { path, .. } => path,
        };
        Arc::new(Onerway {
            url: join_url(&self.base_url, path),
            config: self.clone(),
        })
    }
}

struct Onerway {
    config: Config,
    url: reqwest::Url,
}

#[async_trait::async_trait]
impl Provider for Onerway {
    async fn fetch(&self, http: &PollContext<'_>) -> Result<Snapshot, ProviderError> {
        let mut snapshot = Snapshot::default();
        let clock = http.clock();
        match &self.config.mode {
            Mode::Currencies { currencies, .. } => {
                for currency in currencies {
                    // Read inside the call, so that a misleading answer is counted as this
                    // request's error.
                    let answer = http
                        .call(
                            "balance",
                            |client| self.request(client, clock, Target::Currency(currency)),
                            |response| {
                                let data = interpret(response)?;
                                let data: CurrencyData = parse_data(&data)?;
                                let mut answer = Snapshot::default();
                                add_asked_currency(&mut answer, &data, currency)?;
                                Ok(answer)
                            },
                        )
                        .await?;
                    for balance in answer.balances {
                        snapshot.add(&balance.currency, balance.kind, Some(balance.amount));
                    }
                    snapshot.statuses.extend(answer.statuses);
                }
            }
            Mode::Overview {
                display_currency, ..
            } => {
                snapshot = http
                    .call(
                        "overview",
                        |client| {
                            self.request(
                                client,
                                clock,
                                Target::Overview(display_currency.as_deref()),
                            )
                        },
                        |response| {
                            parse_overview(
                                &interpret(response)?,
                                display_currency.as_deref(),
                                http.max_currencies(),
                            )
                        },
                    )
                    .await?;
            }
        }
        Ok(snapshot)
    }
}

enum Target<'a> {
    Currency(&'a str),
    Overview(Option<&'a str>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    request_id: String,
    request_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_currency: Option<&'a str>,
}

/// A request id that no other request carries: 128 random bits from the thread's CSPRNG.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Onerway {
    /// A fresh request: a new `requestId` and `requestTime` on every attempt.
    fn request(
        &self,
        client: &reqwest::Client,
        clock: Clock,
        target: Target<'_>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let (currency, display_currency) = match target {
            Target::Currency(c) => (Some(c), None),
            Target::Overview(d) => (None, d),
        };
        let body = serde_json::to_vec(&Request {
            request_id: new_request_id(),
            request_time: clock.now_millis(),
            currency,
            display_currency,
        })
        .map_err(|e| ProviderError::new("request", ErrorClass::Client, e.to_string()))?;
        // Marked sensitive so that no HTTP-level logging ever prints it.
        let mut apikey = HeaderValue::from_str(self.config.apikey.expose()).map_err(|_| {
            ProviderError::new(
                "request",
                ErrorClass::Client,
                "the apikey is not a valid header value",
            )
            .final_attempt()
        })?;
        apikey.set_sensitive(true);
        Ok(client
            .post(self.url.clone())
            .header("apikey", apikey)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    code: Option<WireCode>,
    message: Option<String>,
    resp_code: Option<WireCode>,
    resp_msg: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

impl Envelope<'_> {
    /// Success: `code "200"` or `respCode "20000"`, and no other code saying otherwise.
    fn is_success(&self) -> bool {
        let code = self.code.as_ref().map(WireCode::as_str);
        let resp_code = self.resp_code.as_ref().map(WireCode::as_str);
        match (code, resp_code) {
            (None, None) => false,
            (code, resp_code) => {
                code.is_none_or(|c| c == "200") && resp_code.is_none_or(|c| c == "20000")
            }
        }
    }

    fn error(&self, response: &Response) -> ProviderError {
        // respCode is the account service's own; code the other envelope's.
        let code = self
            .resp_code
            .as_ref()
            .filter(|c| c.as_str() != "20000")
            .or(self.code.as_ref().filter(|c| c.as_str() != "200"));
        let Some(code) = code
            .map(|c| label_text(c.as_str()))
            .filter(|c| !c.is_empty())
        else {
            return if response.is_success() {
                ProviderError::decode("answer without code or respCode")
            } else {
                response.status_error()
            };
        };
        let class = DOCUMENTED_ERRORS
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, class)| *class)
            .unwrap_or_else(|| undocumented_class(&code, response.status));
        let text = self
            .resp_msg
            .as_deref()
            .or(self.message.as_deref())
            .unwrap_or("");
        let name = code_name(&code).unwrap_or("undocumented");
        ProviderError::new(code, class, format!("{name}: {}", label_text(text)))
            .with_retry_after(response.retry_after())
    }
}

/// The class of an undocumented code: HTTP-like codes (`401`, `500`) by their number, others
/// by the HTTP status of the answer.
fn undocumented_class(code: &str, status: u16) -> ErrorClass {
    match code.parse::<u16>() {
        Ok(n @ 100..=599) => ErrorClass::of_http_status(n),
        _ if !(200..300).contains(&status) => ErrorClass::of_http_status(status),
        _ => ErrorClass::Client,
    }
}

/// The `data` of a successful answer, as its JSON text.
/// Public for `benches/parse.rs`.
pub fn interpret(response: &Response) -> Result<String, ProviderError> {
    let envelope: Envelope = match serde_json::from_slice(&response.body) {
        Ok(envelope) => envelope,
        Err(_) if !response.is_success() => return Err(response.status_error()),
        Err(e) => return Err(response.decode_error(format_args!("not the JSON expected ({e})"))),
    };
    let has_data = envelope.data.is_some_and(|d| d.get() != "null");
    if envelope.code.is_none() && envelope.resp_code.is_none() && !has_data && response.is_success()
    {
        // `{}` or any object with nothing of Onerway's in it: a wrong base_url, a proxy.
        return Err(ProviderError::no_balance(
            "answer without code, respCode or data",
        ));
    }
    if !envelope.is_success() {
        return Err(envelope.error(response));
    }
    if !response.is_success() {
        return Err(response.status_error());
    }
    match envelope.data {
        Some(data) if data.get() != "null" => Ok(data.get().to_owned()),
        _ => Err(ProviderError::no_balance("success without data")),
    }
}

/// The `data` of an overview answer, refused (`too_many_currencies`) as soon as it names more
/// than `max_currencies` currencies. Public for `benches/parse.rs`.
pub fn parse_overview(
    data: &str,
    display_currency: Option<&str>,
    max_currencies: usize,
) -> Result<Snapshot, ProviderError> {
    let data: OverviewData = parse_data(data)?;
    let mut snapshot = Snapshot::default();
    add_overview(&mut snapshot, &data, display_currency, max_currencies)?;
    Ok(snapshot)
}

fn parse_data<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, ProviderError> {
    serde_json::from_str(text).map_err(|e| ProviderError::decode(format!("unexpected data: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CurrencyData<'a> {
    currency: Option<String>,
    #[serde(borrow)]
    available_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    withdrawable_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    fund_on_hold: Option<&'a RawValue>,
    #[serde(borrow)]
    deposit_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    total_balance: Option<&'a RawValue>,
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OverviewData<'a> {
    #[serde(borrow)]
    total_amount: Option<&'a RawValue>,
    display_currency: Option<String>,
    /// Left raw, so that each entry is read only while the account is within
    /// `max_currencies` (see [`add_overview`]).
    #[serde(borrow)]
    currency_balances: Option<Vec<&'a RawValue>>,
}

fn amount(what: &str, raw: Option<&RawValue>) -> Result<Option<Decimal>, ProviderError> {
    parse_amount(raw).map_err(|e| ProviderError::decode(format!("{what}: {e}")))
}

fn currency_code(text: Option<&str>) -> Option<String> {
    text.map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| is_currency_code(c))
}

/// Adds one currency's balances and status. `asked` is the currency requested, used when the
/// answer does not name one.
fn add_currency(
    snapshot: &mut Snapshot,
    data: &CurrencyData<'_>,
    asked: Option<&str>,
) -> Result<(), ProviderError> {
    let currency = currency_code(data.currency.as_deref())
        .or_else(|| asked.map(str::to_owned))
        .ok_or_else(|| ProviderError::decode("a balance without a valid currency"))?;
    for (kind, raw) in [
        ("available", data.available_balance),
        ("withdrawable", data.withdrawable_balance),
        ("on_hold", data.fund_on_hold),
        ("deposit", data.deposit_balance),
        ("total", data.total_balance),
    ] {
        snapshot.add(&currency, kind, amount(kind, raw)?);
    }
    let status = data.status.as_deref().map(label_text).unwrap_or_default();
    if !status.is_empty() && !snapshot.statuses.iter().any(|s| s.currency == currency) {
        snapshot.statuses.push(AccountStatus { currency, status });
    }
    Ok(())
}

/// Adds the answer to a question about `asked`. The answer is tied to its question: its
/// `currency` must be `asked` (else `wrong_currency`, nothing exported), and it must carry at
/// least one of the documented amount fields (else `no_balance`).
fn add_asked_currency(
    snapshot: &mut Snapshot,
    data: &CurrencyData<'_>,
    asked: &str,
) -> Result<(), ProviderError> {
    let amounts = [
        data.available_balance,
        data.withdrawable_balance,
        data.fund_on_hold,
        data.deposit_balance,
        data.total_balance,
    ];
    if amounts.iter().all(Option::is_none) {
        return Err(ProviderError::no_balance(
            "data without any of the documented balance fields",
        ));
    }
    match currency_code(data.currency.as_deref()) {
        Some(currency) if currency == asked => {}
        Some(currency) => return Err(ProviderError::wrong_currency(asked, &currency)),
        None => {
            return Err(ProviderError::new(
                crate::providers::codes::WRONG_CURRENCY,
                ErrorClass::Decode,
                format!("asked for {asked}, the answer names no valid currency"),
            ));
        }
    }
    add_currency(snapshot, data, Some(asked))
}

/// Adds the overview's currencies one entry at a time: the first entry naming a currency past
/// `max_currencies` ends the reading (`too_many_currencies`), so that a hostile list costs
/// no more than the cap in decoded amounts and series.
fn add_overview(
    snapshot: &mut Snapshot,
    data: &OverviewData<'_>,
    display_currency: Option<&str>,
    max_currencies: usize,
) -> Result<(), ProviderError> {
    let balances = data
        .currency_balances
        .as_ref()
        .ok_or_else(|| ProviderError::no_balance("overview without currencyBalances"))?;
    let mut seen: HashSet<String> = HashSet::new();
    for raw in balances {
        let entry: CurrencyData = parse_data(raw.get())?;
        if let Some(currency) = currency_code(entry.currency.as_deref())
            && seen.insert(currency)
            && seen.len() > max_currencies
        {
            return Err(ProviderError::new(
                codes::TOO_MANY_CURRENCIES,
                ErrorClass::Decode,
                format!(
                    "the overview names more than max_currencies ({max_currencies}) \
                     currencies; the previous balances stay"
                ),
            ));
        }
        add_currency(snapshot, &entry, None)?;
    }
    let total = amount("totalAmount", data.total_amount)?;
    let currency = currency_code(data.display_currency.as_deref())
        .or_else(|| display_currency.map(str::to_owned));
    match (total, currency) {
        (Some(amount), Some(currency)) => snapshot.overviews.push(Overview { currency, amount }),
        (Some(_), None) => {
            tracing::debug!("Onerway overview total without a display currency: not exported")
        }
        (None, _) => {}
    }
    Ok(())
}

// Against the simulator, which the lean build (no `demo` feature) lacks.
#[cfg(all(test, feature = "demo"))]
mod tests;
