//! UQPay: Global Acquiring balances, behind a single-active access token.
//!
//! `POST {base}/v1/connect/token` with `x-client-id` and `x-api-key` mints a token
//! (`{"auth_token","expired_at"}`); balance calls carry `x-auth-token: Bearer <token>`. Minting
//! logs out the previous holder of the key, so the token lives in one slot per credential set
//! (kept in the scheduler's [`SharedState`], see [`token`]): minted lazily, reused across polls, accounts and reloads,
//! refreshed a minute before `expired_at`, and after a 401 re-minted once and the call retried
//! once. Balances come from the paginated list (`page_size=100`, every page) or, when the
//! account names its currencies, from `/v2/payment/balances/{currency}` each. Errors come as
//! `{"type","code","message"}` (string or numeric `code`), as the auth gateway's
//! `{"error","message"}`, or not as JSON at all.
//!
//! Every balance request carries a fresh UUIDv4 `x-idempotency-key` (built per attempt, so a
//! retry gets a new one): the reference marks it required, and a reused key would replay a
//! stale balance for a day. The token mint states its empty body (`Content-Length: 0`).

#[cfg(feature = "demo")]
pub mod sim;
pub mod token;

// Against the simulator, which the lean build (no `demo` feature) lacks.
#[cfg(all(test, feature = "demo"))]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::collections::HashSet;

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, DATE, HeaderValue};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use self::token::{
    CredentialKey, Lifetime, MAX_PLAUSIBLE_LIFETIME, Minted, Token, TokenSlot, TokenSlots, Usable,
};
use super::http::{join_url, scrub_error};
use super::{
    CurrencyScope, ErrorClass, PollContext, Provider, ProviderError, ProviderSettings, Response,
    SharedState, codes,
};
use crate::clock::signed_seconds_between;
use crate::fields::{Fields, is_currency_code};
use crate::money::parse_amount;
use crate::secret::Secret;
use crate::snapshot::Snapshot;

/// The `provider` value in the config and the `provider` label.
pub const NAME: &str = "uqpay";

pub const PRODUCTION_BASE_URL: &str = "https://api.uqpay.com/api";
pub const SANDBOX_BASE_URL: &str = "https://api-sandbox.uqpaytech.com/api";

/// Entries asked for per page of the balance list.
pub const PAGE_SIZE: u32 = 100;

/// The kinds, with the wire field of each.
const FIELDS: [(&str, &str); 6] = [
    ("available", "available_balance"),
    ("payable", "payable_balance"),
    ("pending", "pending_balance"),
    ("reserved", "reserved_balance"),
    ("margin", "margin_balance"),
    ("frozen", "frozen_balance"),
];
const KINDS: &[&str] = &[
    "available",
    "payable",
    "pending",
    "reserved",
    "margin",
    "frozen",
];
const DOCUMENTED_ERRORS: &[(&str, ErrorClass)] = &[
    ("unauthorized", ErrorClass::Auth),
    ("not_found", ErrorClass::Client),
    ("too_many_requests", ErrorClass::RateLimit),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Sandbox,
}

impl Environment {
    pub fn base_url(self) -> &'static str {
        match self {
            Environment::Production => PRODUCTION_BASE_URL,
            Environment::Sandbox => SANDBOX_BASE_URL,
        }
    }
}

/// Compared on reload (secrets by value): an account whose config is unchanged keeps running.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub environment: Environment,
    pub base_url: reqwest::Url,
    pub client_id: String,
    pub api_key: Secret,
    /// `x-on-behalf-of`: the sub-account whose balances to read; no header when absent.
    pub on_behalf_of: Option<String>,
    /// `None`: every currency, from the paginated list.
    pub currencies: Option<Vec<String>>,
}

impl Config {
    pub fn read(fields: &mut Fields<'_>) -> Option<Config> {
        let environment: Option<Environment> = fields.optional("environment");
        let client_id = fields.required_string("client_id");
        let api_key = fields.secret("api_key");
        let on_behalf_of: Option<String> = fields.optional("on_behalf_of");
        let currencies = read_currencies(fields);
        if let Some(id) = &client_id
            && !header_safe(id)
        {
            fields.error("client_id", "must be printable ASCII without spaces");
        }
        if let Some(key) = &api_key
            && !header_safe(key.value.expose())
        {
            fields.error_at(&key.path, "must be printable ASCII without spaces");
        }
        if let Some(id) = &on_behalf_of
            && !header_safe(id)
        {
            fields.error(
                "on_behalf_of",
                "must be a non-empty sub-account id of printable ASCII without spaces (leave the key out for the main account)",
            );
        }
        let environment = environment.unwrap_or(Environment::Production);
        let base_url = fields.base_url(Some(environment.base_url()))?;
        Some(Config {
            environment,
            base_url,
            client_id: client_id?,
            api_key: api_key?.value,
            on_behalf_of,
            currencies: currencies?,
        })
    }
}

/// `currencies`: `Some(None)` when absent (every currency), `None` when invalid.
fn read_currencies(fields: &mut Fields<'_>) -> Option<Option<Vec<String>>> {
    if !fields.has("currencies") {
        return Some(None);
    }
    fields.currencies("currencies", false).map(Some)
}

/// Fits in an HTTP header as it is: visible ASCII, no spaces.
fn header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
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
        match &self.currencies {
            Some(list) => CurrencyScope::Fixed(list.clone()),
            None => CurrencyScope::Discovered,
        }
    }

    fn documented_errors(&self) -> &'static [(&'static str, ErrorClass)] {
        DOCUMENTED_ERRORS
    }

    fn mints_tokens(&self) -> bool {
        true
    }

    fn build(&self, state: &SharedState) -> Arc<dyn Provider> {
        Arc::new(UqPay::new(self.clone(), &state.part::<TokenSlots>()))
    }

    fn clear_pauses(&self, state: &SharedState) {
        state
            .part::<TokenSlots>()
            .clear_mint_pause(&CredentialKey::of(self));
    }
}

pub(crate) struct UqPay {
    config: Config,
    slot: Arc<TokenSlot>,
    token_url: reqwest::Url,
    list_url: reqwest::Url,
}

/// A failed balance call, and whether it was a 401 (which a new token may cure).
struct Failure {
    error: ProviderError,
    unauthorized: bool,
}

impl UqPay {
    pub(crate) fn new(config: Config, slots: &TokenSlots) -> Self {
        let slot = slots.slot_for(CredentialKey::of(&config));
        UqPay {
            token_url: join_url(&config.base_url, "/v1/connect/token"),
            list_url: join_url(&config.base_url, "/v2/payment/balances"),
            config,
            slot,
        }
    }

    /// One poll: balances with the cached token; after a 401, once more with a new one.
    pub(crate) async fn poll(&self, x: &PollContext<'_>) -> Result<Snapshot, ProviderError> {
        let token = self.token(x, None).await?;
        match self.balances(x, token.value()).await {
            Ok(snapshot) => Ok(snapshot),
            Err(Failure {
                unauthorized: true, ..
            }) => {
                let token = self.token(x, Some(&token)).await?;
                self.balances(x, token.value()).await.map_err(|f| {
                    let mut error = f.error;
                    if f.unauthorized {
                        token.mark_refused_when_new();
                        error.message = format!("{} (again with a new token)", error.message);
                    }
                    error
                })
            }
            Err(failure) => Err(failure.error),
        }
    }

    /// A token to use: the cached one, or a new one minted by this poll (one poll at a time).
    async fn token(
        &self,
        x: &PollContext<'_>,
        rejected: Option<&Token>,
    ) -> Result<Arc<Token>, ProviderError> {
        let mut slot = self.slot.lock(x.deadline()).await?;
        match slot.usable(rejected, Instant::now()) {
            Usable::Token(token) => return Ok(token),
            Usable::Mint {
                rejected_early: true,
            } => tracing::warn!(
                account = x.observer().account(),
                client_id = %self.config.client_id,
                "UQPay rejected an access token before its lifetime was over: another process probably minted one with the same API key (each mint logs out the previous holder); give the exporter its own API key or run a single replica per key"
            ),
            Usable::Mint { .. } => {}
        }
        slot.check_mint_allowed(Instant::now())?;
        let requested_at = Instant::now();
        let minted = self.mint(x).await;
        if minted.is_ok() {
            x.observer().token_minted();
        }
        slot.store(minted, requested_at, x.observer().account())
    }

    async fn mint(&self, x: &PollContext<'_>) -> Result<Minted, ProviderError> {
        let c = &self.config;
        let requested_wall = x.clock().now();
        x.call(
            "token",
            |client| {
                // An empty body stated as such: without a length a front end may answer 411.
                Ok(client
                    .post(self.token_url.clone())
                    .header(ACCEPT, "application/json")
                    .header(CONTENT_TYPE, "application/json")
                    .header(CONTENT_LENGTH, "0")
                    .body(Vec::new())
                    .header("x-client-id", &c.client_id)
                    .header("x-api-key", sensitive(c.api_key.expose())?))
            },
            |response| parse_token(response, requested_wall),
        )
        .await
    }

    async fn balances(&self, x: &PollContext<'_>, token: &Secret) -> Result<Snapshot, Failure> {
        match &self.config.currencies {
            Some(currencies) => {
                let mut merged = Merged::new(usize::MAX);
                for currency in currencies {
                    let url = join_url(
                        &self.config.base_url,
                        &format!("/v2/payment/balances/{currency}"),
                    );
                    let one = self
                        .get(x, "balance", url, token, |r| parse_single(r, currency))
                        .await?;
                    merged.add(one).map_err(Failure::from)?;
                }
                Ok(merged.snapshot)
            }
            None => self.walk(x, token).await,
        }
    }

    /// Every page of the list, within `max_currencies`: past it the walk stops at once
    /// (`too_many_currencies`), and pages are only fetched while the list can still fit.
    async fn walk(&self, x: &PollContext<'_>, token: &Secret) -> Result<Snapshot, Failure> {
        let max = x.max_currencies();
        let mut merged = Merged::new(max);
        let mut per_page: Option<u64> = None;
        let mut page: u64 = 1;
        loop {
            let mut url = self.list_url.clone();
            url.query_pairs_mut()
                .append_pair("page_number", &page.to_string())
                .append_pair("page_size", &PAGE_SIZE.to_string());
            // Checked while interpreting the answer, so that the error is counted under its
            // code like any other failed request.
            let done = self
                .get(x, "balances", url, token, |r| {
                    let part = read_page(r)?;
                    let total_pages = part.total_pages;
                    let length = part.entries.len() as u64;
                    merged.add(part.entries)?;
                    if page >= total_pages {
                        return Ok(true);
                    }
                    // Every page but the last is full: with pages of `per_page`, total_pages
                    // claims more than (total_pages - 1) * per_page entries. Once that exceeds
                    // `max`, walking on could only end in too_many_currencies: a hostile
                    // total_pages costs one request.
                    let per_page = *per_page.get_or_insert(length);
                    if per_page == 0 {
                        return Err(ProviderError::decode(format!(
                            "page 1 of the balance list is empty but claims {total_pages} pages"
                        )));
                    }
                    if total_pages > (max as u64).div_ceil(per_page) {
                        return Err(too_many_currencies(format!(
                            "the balance list claims {total_pages} pages of {per_page}: more than max_currencies ({max})"
                        )));
                    }
                    Ok(false)
                })
                .await?;
            if done {
                return Ok(merged.snapshot);
            }
            page += 1;
        }
    }

    /// An authenticated GET, noting whether its last answer was a 401.
    async fn get<T: Send>(
        &self,
        x: &PollContext<'_>,
        endpoint: &'static str,
        url: reqwest::Url,
        token: &Secret,
        mut parse: impl FnMut(&Response) -> Result<T, ProviderError> + Send,
    ) -> Result<T, Failure> {
        let c = &self.config;
        let mut unauthorized = false;
        let result = x
            .call(
                endpoint,
                |client| {
                    let mut request = client
                        .get(url.clone())
                        .header(ACCEPT, "application/json")
                        .header("x-client-id", &c.client_id)
                        .header("x-idempotency-key", new_idempotency_key())
                        .header(
                            "x-auth-token",
                            sensitive(&format!("Bearer {}", token.expose()))?,
                        );
                    if let Some(id) = &c.on_behalf_of {
                        request = request.header("x-on-behalf-of", id);
                    }
                    Ok(request)
                },
                |response| {
                    unauthorized = response.status == 401;
                    if !response.is_success() {
                        return Err(error_from(response, token));
                    }
                    match parse(response) {
                        // An error envelope under a 2xx is that error, as with its status.
                        Err(e) if e.code == codes::NO_BALANCE => {
                            match envelope_under_2xx(response, token) {
                                Some(error) => {
                                    unauthorized = error.code == "unauthorized";
                                    Err(error)
                                }
                                None => Err(e),
                            }
                        }
                        other => other,
                    }
                },
            )
            .await;
        result.map_err(|error| Failure {
            error,
            unauthorized,
        })
    }
}

#[async_trait::async_trait]
impl Provider for UqPay {
    async fn fetch(&self, http: &PollContext<'_>) -> Result<Snapshot, ProviderError> {
        self.poll(http).await
    }
}

/// A header value kept out of debug output.
fn sensitive(value: &str) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        ProviderError::new(
            "request",
            ErrorClass::Client,
            "a credential has characters not allowed in an HTTP header",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl From<ProviderError> for Failure {
    fn from(error: ProviderError) -> Self {
        Failure {
            error,
            unauthorized: false,
        }
    }
}

/// A random (version 4) UUID for `x-idempotency-key`.
fn new_idempotency_key() -> String {
    let bits = rand::random::<u128>();
    // Version 4 in the 13th hex digit, variant `10` in the top bits of the 17th.
    let bits = (bits & !(0xf << 76)) | (0x4 << 76);
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn too_many_currencies(message: String) -> ProviderError {
    ProviderError::new(codes::TOO_MANY_CURRENCIES, ErrorClass::Decode, message)
}

/// One poll's balances, merged in linear time (a set of currency and kind, not a scan): a
/// currency and kind already present keeps its first amount. More than `max` currencies
/// with a balance is `too_many_currencies`, as soon as the one too many arrives.
struct Merged {
    snapshot: Snapshot,
    currencies: HashSet<String>,
    max: usize,
}

impl Merged {
    fn new(max: usize) -> Self {
        Merged {
            snapshot: Snapshot::default(),
            currencies: HashSet::new(),
            max,
        }
    }

    fn add(&mut self, entries: Vec<ReadEntry>) -> Result<(), ProviderError> {
        for (currency, amounts) in entries {
            if amounts.iter().all(Option::is_none) {
                continue;
            }
            if !self.currencies.contains(&currency) {
                if self.currencies.len() >= self.max {
                    return Err(too_many_currencies(format!(
                        "more than max_currencies ({}) currencies",
                        self.max
                    )));
                }
                self.currencies.insert(currency.clone());
            }
            // `Snapshot::add` keeps the first amount of a currency and kind, in constant time.
            for ((kind, _), amount) in FIELDS.iter().zip(amounts) {
                self.snapshot.add(&currency, kind, amount);
            }
        }
        Ok(())
    }
}

/// An error envelope (`code` or the gateway's `error`) in a 2xx answer without balances.
fn envelope_under_2xx(response: &Response, token: &Secret) -> Option<ProviderError> {
    let body = serde_json::from_slice::<ErrorBody>(&response.body).ok()?;
    [&body.code, &body.error].into_iter().find_map(code_text)?;
    Some(error_from(response, token))
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    message: Option<String>,
}

/// The error of a non-2xx answer: the body's `code` (string or number), else the gateway's
/// `error`, else its `type`, else `http_<status>`; the class from the status.
fn error_from(response: &Response, token: &Secret) -> ProviderError {
    let body = serde_json::from_slice::<ErrorBody>(&response.body).ok();
    let code = body
        .as_ref()
        .and_then(|b| [&b.code, &b.error, &b.kind].into_iter().find_map(code_text));
    let message = body
        .as_ref()
        .and_then(|b| b.message.clone())
        // A gateway's page: the status and what the body is, as for every provider.
        .unwrap_or_else(|| response.status_error().message);
    let error = match code {
        Some(code) => {
            let class = match code.as_str() {
                "too_many_requests" => ErrorClass::RateLimit,
                "unauthorized" => ErrorClass::Auth,
                _ => ErrorClass::of_http_status(response.status),
            };
            ProviderError::new(code, class, message)
        }
        None => ProviderError::http_status(response.status, message),
    };
    // The message or the code may echo the token, which only this poll knows; the config's
    // secrets are scrubbed by the caller.
    scrub_error(error, std::slice::from_ref(token)).with_retry_after(response.retry_after())
}

/// A usable `code` label from a JSON string or number.
fn code_text(value: &Option<serde_json::Value>) -> Option<String> {
    let text = match value.as_ref()? {
        serde_json::Value::String(s) => s.trim().to_owned(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let fits = !text.is_empty() && text.len() <= 64 && !text.chars().any(char::is_control);
    fits.then_some(text)
}

#[derive(Deserialize)]
struct TokenBody {
    auth_token: Option<String>,
    expired_at: Option<serde_json::Value>,
}

/// The token answer. `expired_at` is absolute (unix seconds, the provider's clock): its
/// distance from the answer's `Date` (or, without one, from our clock when we asked) is the
/// lifetime.
fn parse_token(response: &Response, requested_wall: SystemTime) -> Result<Minted, ProviderError> {
    if !response.is_success() {
        return Err(error_from(response, &Secret::new("")));
    }
    let body: TokenBody = response.json()?;
    let value = body
        .auth_token
        .filter(|t| header_safe(t))
        .ok_or_else(|| ProviderError::decode("the token answer has no usable auth_token"))?;
    // `Date` has whole seconds, rounded down: the provider's clock when we asked was at most
    // a second past it, so counting from there never believes a token lives longer than it does.
    let reference = response
        .header(DATE.as_str())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .map(|date| date + Duration::from_secs(1))
        .unwrap_or(requested_wall);
    let expired_at = body.expired_at.as_ref().and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    });
    Ok(Minted {
        value: Secret::new(value),
        lifetime: lifetime(expired_at, reference),
    })
}

/// The lifetime `expired_at` gives at `reference`, unless it cannot be believed.
fn lifetime(expired_at: Option<i64>, reference: SystemTime) -> Lifetime {
    let Some(expired_at) = expired_at else {
        return Lifetime::Fallback("the token answer has no expired_at".into());
    };
    let at = if expired_at >= 0 {
        let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(expired_at.unsigned_abs()));
        let Some(at) = at else {
            return Lifetime::Fallback(format!(
                "expired_at {expired_at} is past the clock's range"
            ));
        };
        at
    } else {
        SystemTime::UNIX_EPOCH
    };
    let remaining = signed_seconds_between(at, reference);
    if remaining <= 0.0 {
        Lifetime::Fallback(format!(
            "expired_at {expired_at} is {:.0}s in the past",
            -remaining
        ))
    } else if remaining > MAX_PLAUSIBLE_LIFETIME.as_secs_f64() {
        Lifetime::Fallback(format!(
            "expired_at {expired_at} is {remaining:.0}s ahead, not a plausible lifetime"
        ))
    } else {
        Lifetime::Stated(Duration::from_secs_f64(remaining))
    }
}

/// One balance entry; any amount may be missing or null.
#[derive(Deserialize)]
struct Entry<'a> {
    currency: Option<String>,
    #[serde(borrow)]
    available_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    payable_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    pending_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    reserved_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    margin_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    frozen_balance: Option<&'a RawValue>,
    /// Some answers wrap the entry in `data`.
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

impl Entry<'_> {
    /// This entry's currency (its own, or the one asked for) and amounts.
    fn read(&self, asked: Option<&str>) -> Result<ReadEntry, ProviderError> {
        let wire = self
            .currency
            .as_deref()
            .map(|c| c.trim().to_ascii_uppercase());
        let currency = match (wire, asked) {
            (Some(wire), Some(asked)) if wire != asked => {
                return Err(ProviderError::wrong_currency(asked, &wire));
            }
            (Some(wire), _) if is_currency_code(&wire) => wire,
            (None, Some(asked)) => asked.to_owned(),
            (wire, _) => {
                return Err(ProviderError::decode(format!(
                    "a balance without a valid currency ({:?})",
                    wire.map(|w| crate::providers::wire::label_text(&w))
                )));
            }
        };
        let mut amounts = [None; 6];
        for ((slot, (_, field)), raw) in amounts.iter_mut().zip(FIELDS).zip(self.amounts()) {
            *slot = parse_amount(raw)
                .map_err(|e| ProviderError::decode(format!("{currency} {field}: {e}")))?;
        }
        Ok((currency, amounts))
    }

    /// The amounts in the order of [`FIELDS`].
    fn amounts(&self) -> [Option<&RawValue>; 6] {
        [
            self.available_balance,
            self.payable_balance,
            self.pending_balance,
            self.reserved_balance,
            self.margin_balance,
            self.frozen_balance,
        ]
    }

    fn is_empty(&self) -> bool {
        self.currency.is_none() && self.amounts().iter().all(Option::is_none)
    }
}

/// A currency and its amounts in the order of [`FIELDS`].
type ReadEntry = (String, [Option<Decimal>; 6]);

#[derive(Deserialize)]
struct PageBody<'a> {
    total_pages: Option<u64>,
    /// Absent: not a page at all. `Some(None)`, `null`: an empty page.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<Option<&'a RawValue>>,
}

/// A field that is there, even as `null` (which a plain `Option` reads as absent).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// One page of the list, read.
struct Page {
    entries: Vec<ReadEntry>,
    total_pages: u64,
}

fn read_page(response: &Response) -> Result<Page, ProviderError> {
    let body: PageBody = response.json()?;
    let Some(data) = body.data else {
        return Err(ProviderError::no_balance(
            "the balance list answer has no data: not a balance page",
        ));
    };
    let entries: Vec<Entry> = match data {
        None => Vec::new(),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| ProviderError::decode(format!("unexpected balance list data: {e}")))?,
    };
    if entries.len() > PAGE_SIZE as usize {
        return Err(ProviderError::new(
            codes::PAGE_TOO_LONG,
            ErrorClass::Decode,
            format!(
                "a page of {} balances, {PAGE_SIZE} asked for",
                entries.len()
            ),
        ));
    }
    // An empty account may leave total_pages out; a page with entries must say.
    let total_pages = match body.total_pages {
        Some(n) => n,
        None if entries.is_empty() => 0,
        None => return Err(ProviderError::decode("a balance page without total_pages")),
    };
    let entries = entries
        .iter()
        .map(|e| e.read(None))
        .collect::<Result<_, _>>()?;
    Ok(Page {
        entries,
        total_pages,
    })
}

/// One page of the list: its balances and the number of pages. Public for `benches/parse.rs`.
pub fn parse_page(response: &Response) -> Result<(Snapshot, u64), ProviderError> {
    let page = read_page(response)?;
    let mut merged = Merged::new(usize::MAX);
    merged.add(page.entries)?;
    Ok((merged.snapshot, page.total_pages))
}

/// The balance of one currency, bare or wrapped in `data`.
fn parse_single(response: &Response, currency: &str) -> Result<Vec<ReadEntry>, ProviderError> {
    let outer: Entry = response.json()?;
    let inner: Entry;
    let entry = match outer.data {
        Some(data) if outer.is_empty() => {
            inner = serde_json::from_str(data.get())
                .map_err(|e| ProviderError::decode(format!("unexpected balance data: {e}")))?;
            &inner
        }
        _ => &outer,
    };
    let read = entry.read(Some(currency))?;
    if read.1.iter().all(Option::is_none) {
        return Err(ProviderError::no_balance(format!(
            "the {currency} answer holds no balance"
        )));
    }
    Ok(vec![read])
}
