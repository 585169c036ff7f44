//! `http_json`: any balance API that answers JSON, configured rather than coded.
//!
//! One request (`GET` or `POST` with a body sent byte for byte) with one of five auth types,
//! and RFC 6901 pointers into the answer for each balance's amount and currency, optionally
//! per element of an array (`items`). Amounts are read as decimals from their exact text and
//! may be integers in minor units (`scale`). A non-2xx answer is counted under the code an
//! `error_code` pointer finds, else `http_<status>`; a 2xx in which no amount resolves is
//! `no_balance`. The built-in presets (`presets.rs`: Twilio, Telnyx, Vonage) are this with
//! defaults.

pub mod kinds;
pub mod pointer;
pub mod presets;
#[cfg(feature = "demo")]
pub mod sim;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::join_url;
use super::{
    CurrencyScope, ErrorClass, PollContext, Provider, ProviderError, ProviderSettings, Response,
    SharedState,
};
use crate::fields::{Fields, is_currency_code};
use crate::money::{minor_units, parse_amount};
use crate::secret::Secret;
use crate::snapshot::Snapshot;
pub use pointer::Pointer;
pub use presets::Preset;

/// The `provider` value in the config and the `provider` label.
pub const NAME: &str = "http_json";

/// At most this many `balances` entries per account (each is a series per currency).
pub const MAX_BALANCES: usize = 32;
/// The largest `scale` digit count: a `Decimal` has 28 decimal digits.
pub const MAX_SCALE: u32 = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// How requests authenticate. Secrets as [`Secret`], so `Debug` redacts them.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    None,
    Basic { username: String, password: Secret },
    Bearer { token: Secret },
    Header { name: HeaderName, value: Secret },
    Query { name: String, value: Secret },
}

/// How an amount is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// As it is (`"1234.5600"`, `12.3`).
    Exact,
    /// An integer divided by 10^n.
    Digits(u32),
    /// An integer in the currency's minor units (ISO 4217: JPY 0, USD 2, KWD 3).
    Iso4217,
}

/// One balance read from each element: its kind and where its amount and currency are.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceSpec {
    pub kind: &'static str,
    pub amount: Pointer,
    /// Where the currency is; `None`: the account's fixed `currency`.
    pub currency: Option<Pointer>,
    pub scale: Scale,
}

/// An extra condition on a 2xx answer: the value at `pointer` is `equals` (a string's text, or
/// any other value as written: `true`, `0`).
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    pub pointer: Pointer,
    pub equals: String,
}

/// Compared on reload (secrets by value): an account whose config is unchanged keeps running.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `http_json`, or the preset's name.
    pub provider: &'static str,
    /// Boxed: the account configs of all providers are one enum, sized by its largest.
    pub request: Box<RequestSpec>,
    /// Fixed currency of every balance without a currency pointer, and of those whose pointer
    /// resolves to nothing.
    pub currency: Option<String>,
    pub items: Option<Pointer>,
    pub balances: Vec<BalanceSpec>,
    pub error_code: Option<Pointer>,
    pub success: Option<Success>,
    kinds: Vec<&'static str>,
    documented_errors: &'static [(&'static str, ErrorClass)],
    default_threshold_kind: &'static str,
}

/// What the request is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    pub base_url: reqwest::Url,
    pub path: String,
    pub method: Method,
    pub body: Option<String>,
    pub auth: Auth,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Config {
    /// Reads a `provider: http_json` account.
    pub fn read(fields: &mut Fields<'_>) -> Option<Config> {
        let base_url = fields.base_url(None);
        let path = read_path(fields);
        let method = match fields.optional::<String>("method").as_deref() {
            None | Some("GET") => Some(Method::Get),
            Some("POST") => Some(Method::Post),
            Some(other) => {
                fields.error("method", format!("{other:?} is not GET or POST"));
                None
            }
        };
        let body: Option<String> = fields.optional("body");
        if let Some(text) = &body {
            if method == Some(Method::Get) {
                fields.error("body", "only with method: POST");
            } else if serde_json::from_str::<&RawValue>(text).is_err() {
                fields.error("body", "is not JSON (it is sent as application/json)");
            }
        }
        let auth = fields.section("auth", read_auth);
        let headers = read_headers(fields, auth.as_ref());
        let currency = read_currency(fields);
        let items = read_pointer(fields, "items");
        let balances = read_balances(fields, currency.clone().flatten().as_deref());
        let error_code = read_pointer(fields, "error_code");
        let success = read_success(fields);
        let balances = balances?;
        let kinds = balances.iter().map(|b| b.kind).collect();
        let default_threshold_kind = balances.first()?.kind;
        Some(Config {
            provider: NAME,
            request: Box::new(RequestSpec {
                base_url: base_url?,
                path: path?,
                method: method?,
                body,
                auth: auth?,
                headers: headers?,
            }),
            currency: currency?,
            items: items?,
            balances,
            error_code: error_code?,
            success: success?,
            kinds,
            documented_errors: &[],
            default_threshold_kind,
        })
    }

    /// Reads an account of a preset: its own keys, mapped onto `http_json`.
    pub fn read_preset(preset: &'static Preset, fields: &mut Fields<'_>) -> Option<Config> {
        let base_url = fields.base_url(Some(preset.default_base_url));
        let mut path = Some(preset.path.to_owned());
        let mut keys = BTreeMap::new();
        for key in preset.keys {
            match fields.required_string(key) {
                // Identifiers go into the path and the Basic user: nothing that could
                // change either's meaning.
                Some(value)
                    if value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                {
                    path = path.map(|p| p.replace(&format!("{{{key}}}"), &value));
                    keys.insert(*key, value);
                }
                Some(_) => {
                    fields.error(key, "only letters, digits, - and _");
                    path = None;
                }
                None => path = None,
            }
        }
        let auth = match preset.auth {
            presets::PresetAuth::Basic { username, password } => {
                let password = fields.secret(password);
                keys.get(username)
                    .cloned()
                    .zip(password)
                    .map(|(username, password)| Auth::Basic {
                        username,
                        password: password.value,
                    })
            }
            presets::PresetAuth::Bearer { token } => fields
                .secret(token)
                .map(|t| Auth::Bearer { token: t.value }),
        };
        let mut balances = Vec::new();
        for b in preset.balances {
            let parsed = (
                kinds::intern(b.kind),
                Pointer::parse(b.amount),
                b.currency.map(Pointer::parse).transpose(),
            );
            match parsed {
                (Ok(kind), Ok(amount), Ok(currency)) => balances.push(BalanceSpec {
                    kind,
                    amount,
                    currency,
                    scale: Scale::Exact,
                }),
                _ => {
                    fields.error_here(format!("the {} preset is broken (a bug)", preset.name));
                    return None;
                }
            }
        }
        let error_code = match preset.error_code.map(Pointer::parse).transpose() {
            Ok(pointer) => pointer,
            Err(e) => {
                fields.error_here(format!("the {} preset is broken (a bug): {e}", preset.name));
                return None;
            }
        };
        Some(Config {
            provider: preset.name,
            request: Box::new(RequestSpec {
                base_url: base_url?,
                path: path?,
                method: Method::Get,
                body: None,
                auth: auth?,
                headers: vec![(
                    reqwest::header::ACCEPT,
                    HeaderValue::from_static("application/json"),
                )],
            }),
            currency: preset.currency.map(str::to_owned),
            items: None,
            kinds: balances.iter().map(|b| b.kind).collect(),
            balances,
            error_code,
            success: None,
            documented_errors: preset.documented_errors,
            default_threshold_kind: preset.default_threshold_kind,
        })
    }
}

fn read_path(fields: &mut Fields<'_>) -> Option<String> {
    let path: String = fields.required("path")?;
    if !path.starts_with('/') || path.contains(['?', '#']) || path.contains(char::is_whitespace) {
        fields.error(
            "path",
            format!("{path:?} must start with / and have no query, fragment or space"),
        );
        return None;
    }
    Some(path)
}

fn read_pointer(fields: &mut Fields<'_>, key: &str) -> Option<Option<Pointer>> {
    let Some(text) = fields.optional::<String>(key) else {
        return Some(None);
    };
    match Pointer::parse(&text) {
        Ok(pointer) => Some(Some(pointer)),
        Err(e) => {
            fields.error(key, e);
            None
        }
    }
}

fn read_currency(fields: &mut Fields<'_>) -> Option<Option<String>> {
    let Some(given) = fields.optional::<String>("currency") else {
        return Some(None);
    };
    let code = given.trim().to_ascii_uppercase();
    if !is_currency_code(&code) {
        fields.error(
            "currency",
            format!("{given:?} is not a currency code like USD"),
        );
        return None;
    }
    Some(Some(code))
}

/// `auth`: absent (none), or exactly one `type` with its keys.
fn read_auth(fields: &mut Fields<'_>) -> Option<Auth> {
    let kind: Option<String> = fields.optional("type");
    match kind.as_deref() {
        None | Some("none") => Some(Auth::None),
        Some("basic") => {
            let username = fields.required_string("username");
            let password = fields.secret("password");
            Some(Auth::Basic {
                username: username?,
                password: password?.value,
            })
        }
        Some("bearer") => Some(Auth::Bearer {
            token: fields.secret("token")?.value,
        }),
        Some("header") => {
            let name =
                fields.required_string("name").and_then(|name| {
                    match HeaderName::from_bytes(name.as_bytes()) {
                        Ok(header) => Some(header),
                        Err(_) => {
                            fields.error("name", format!("{name:?} is not an HTTP header name"));
                            None
                        }
                    }
                });
            let value = fields.secret("value").and_then(|value| {
                if HeaderValue::from_str(value.value.expose()).is_err() {
                    fields.error_at(&value.path, "not valid in an HTTP header (value not shown)");
                    return None;
                }
                Some(value.value)
            });
            Some(Auth::Header {
                name: name?,
                value: value?,
            })
        }
        Some("query") => {
            let name = fields.required_string("name").and_then(|name| {
                if name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
                {
                    Some(name)
                } else {
                    fields.error(
                        "name",
                        format!("{name:?}: a query parameter name of letters, digits, - _ . ~"),
                    );
                    None
                }
            });
            let value = fields.secret("value");
            Some(Auth::Query {
                name: name?,
                value: value?.value,
            })
        }
        Some(other) => {
            fields.error(
                "type",
                format!("{other:?} is not an auth type (none, basic, bearer, header or query)"),
            );
            None
        }
    }
}

/// `headers`: non-secret headers. Credentials belong in `auth`, where they are secrets.
fn read_headers(
    fields: &mut Fields<'_>,
    auth: Option<&Auth>,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let Some(given) = fields.optional::<BTreeMap<String, String>>("headers") else {
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (name, value) in given {
        let at = format!("headers.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            fields.error(&at, "not an HTTP header name");
            ok = false;
            continue;
        };
        let reserved = matches!(header.as_str(), "authorization" | "host" | "content-length")
            || matches!(auth, Some(Auth::Header { name, .. }) if *name == header);
        if reserved {
            fields.error(
                &at,
                "set by the exporter: give credentials in auth, where they are kept secret",
            );
            ok = false;
            continue;
        }
        match HeaderValue::from_str(&value) {
            Ok(value) => out.push((header, value)),
            Err(_) => {
                fields.error(&at, "not a valid HTTP header value");
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScaleText {
    Digits(u32),
    Name(String),
}

fn read_balances(fields: &mut Fields<'_>, fixed: Option<&str>) -> Option<Vec<BalanceSpec>> {
    if !fields.has("balances") {
        fields.required::<Vec<figment::value::Value>>("balances");
        return None;
    }
    let mut ok = true;
    let mut seen: Vec<&'static str> = Vec::new();
    let list = fields.list("balances", |path, value, problems| {
        let mut item = Fields::new(path, value, problems);
        let spec = read_balance(&mut item, fixed, &mut seen);
        item.finish();
        if spec.is_none() {
            ok = false;
        }
        spec
    })?;
    if list.is_empty() && ok {
        fields.error("balances", "list at least one balance");
        return None;
    }
    if list.len() > MAX_BALANCES {
        fields.error(
            "balances",
            format!("at most {MAX_BALANCES} balances per account"),
        );
        return None;
    }
    ok.then_some(list)
}

fn read_balance(
    item: &mut Fields<'_>,
    fixed: Option<&str>,
    seen: &mut Vec<&'static str>,
) -> Option<BalanceSpec> {
    let kind = item
        .required_string("kind")
        .and_then(|name| match kinds::intern(&name) {
            Ok(kind) if seen.contains(&kind) => {
                item.error("kind", format!("{kind:?} is listed twice"));
                None
            }
            Ok(kind) => {
                seen.push(kind);
                Some(kind)
            }
            Err(e) => {
                item.error("kind", e);
                None
            }
        });
    let amount = item
        .required::<String>("amount")
        .and_then(|text| match Pointer::parse(&text) {
            Ok(pointer) => Some(pointer),
            Err(e) => {
                item.error("amount", e);
                None
            }
        });
    let currency = read_pointer(item, "currency");
    if matches!(currency, Some(None)) && fixed.is_none() {
        item.error(
            "currency",
            "required: a pointer to the currency, unless the account sets a fixed currency",
        );
    }
    let scale = match item.optional::<ScaleText>("scale") {
        None => Some(Scale::Exact),
        Some(ScaleText::Digits(n)) if n <= MAX_SCALE => Some(Scale::Digits(n)),
        Some(ScaleText::Name(name)) if name == "iso4217" => match (fixed, &currency) {
            (Some(code), Some(None)) if minor_units(code).is_none() => {
                item.error(
                    "scale",
                    format!("iso4217: ISO 4217 gives {code} no minor units"),
                );
                None
            }
            _ => Some(Scale::Iso4217),
        },
        Some(_) => {
            item.error(
                "scale",
                format!("an integer from 0 to {MAX_SCALE}, or iso4217"),
            );
            None
        }
    };
    let currency = currency?;
    if currency.is_none() && fixed.is_none() {
        return None;
    }
    Some(BalanceSpec {
        kind: kind?,
        amount: amount?,
        currency,
        scale: scale?,
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Equals {
    Text(String),
    Int(i64),
    Bool(bool),
    Float(f64),
}

fn read_success(fields: &mut Fields<'_>) -> Option<Option<Success>> {
    if !fields.has("success") {
        fields.optional::<figment::value::Value>("success");
        return Some(None);
    }
    fields.section("success", |s| {
        let pointer =
            s.required::<String>("pointer")
                .and_then(|text| match Pointer::parse(&text) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        s.error("pointer", e);
                        None
                    }
                });
        let equals = s.required::<Equals>("equals").map(|e| match e {
            Equals::Text(t) => t,
            Equals::Int(n) => n.to_string(),
            Equals::Bool(b) => b.to_string(),
            Equals::Float(f) => f.to_string(),
        });
        Some(Some(Success {
            pointer: pointer?,
            equals: equals?,
        }))
    })
}

impl ProviderSettings for Config {
    fn provider(&self) -> &'static str {
        self.provider
    }

    fn kinds(&self) -> &[&'static str] {
        &self.kinds
    }

    fn default_threshold_kind(&self) -> &'static str {
        self.default_threshold_kind
    }

    /// Fixed when no balance names its currency; one from the answer when every balance
    /// reads it from the same place of one document; otherwise as many as the answer names.
    fn currency_scope(&self) -> CurrencyScope {
        let pointers: HashSet<&str> = self
            .balances
            .iter()
            .filter_map(|b| b.currency.as_ref().map(Pointer::as_str))
            .collect();
        let all_fixed = pointers.is_empty();
        let all_pointed = self.balances.iter().all(|b| b.currency.is_some());
        match (&self.currency, all_fixed) {
            (Some(code), true) => CurrencyScope::Fixed(vec![code.clone()]),
            _ if self.items.is_none() && pointers.len() == 1 && all_pointed => {
                CurrencyScope::SingleFromProvider
            }
            _ => CurrencyScope::Discovered,
        }
    }

    fn documented_errors(&self) -> &'static [(&'static str, ErrorClass)] {
        self.documented_errors
    }

    /// The auth secret (read inside `auth`, so listed here to be redacted with the others)
    /// and, for Basic, `username:password` as the header carries it.
    fn derived_secrets(&self) -> Vec<Secret> {
        match &self.request.auth {
            Auth::None => Vec::new(),
            Auth::Basic { username, password } => vec![
                password.clone(),
                Secret::new(format!("{username}:{}", password.expose())),
            ],
            Auth::Bearer { token } => vec![token.clone()],
            Auth::Header { value, .. } => vec![value.clone()],
            // Also as the query string carries it: form encoding writes a space as `+`,
            // which the percent-encoded form `secret::redact` looks for does not.
            Auth::Query { name, value } => {
                let mut out = vec![value.clone()];
                if let Ok(mut url) = reqwest::Url::parse("http://query.invalid/") {
                    url.query_pairs_mut().append_pair(name, value.expose());
                    let encoded = url.query().unwrap_or_default();
                    let encoded = encoded.split_once('=').map_or(encoded, |(_, v)| v);
                    out.push(Secret::new(encoded));
                }
                out
            }
        }
    }

    fn build(&self, _: &SharedState) -> Arc<dyn Provider> {
        Arc::new(HttpJson {
            url: join_url(&self.request.base_url, &self.request.path),
            config: self.clone(),
        })
    }
}

struct HttpJson {
    config: Config,
    url: reqwest::Url,
}

#[async_trait::async_trait]
impl Provider for HttpJson {
    async fn fetch(&self, http: &PollContext<'_>) -> Result<Snapshot, ProviderError> {
        let max_currencies = http.max_currencies();
        http.call(
            "balance",
            |client| Ok(self.request(client)),
            |response| parse(&self.config, response, max_currencies),
        )
        .await
    }
}

impl HttpJson {
    fn request(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        let c = &self.config.request;
        let mut url = self.url.clone();
        if let Auth::Query { name, value } = &c.auth {
            url.query_pairs_mut().append_pair(name, value.expose());
        }
        let mut request = match c.method {
            Method::Get => client.get(url),
            Method::Post => client.post(url),
        };
        for (name, value) in &c.headers {
            request = request.header(name, value.clone());
        }
        request = match &c.auth {
            Auth::None | Auth::Query { .. } => request,
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
            Auth::Bearer { token } => request.bearer_auth(token.expose()),
            Auth::Header { name, value } => match HeaderValue::from_str(value.expose()) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request.header(name, value)
                }
                // Checked when the config was read.
                Err(_) => request,
            },
        };
        if c.method == Method::Post {
            request = match &c.body {
                Some(body) => request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone()),
                None => request.body(Vec::new()),
            };
        }
        request
    }
}

/// Reads one answer into a snapshot, or the error it is. Public for the tests and benches.
pub fn parse(
    config: &Config,
    response: &Response,
    max_currencies: usize,
) -> Result<Snapshot, ProviderError> {
    if !response.is_success() {
        return Err(error_of(config, response));
    }
    let document: &RawValue = response.json()?;
    if let Some(success) = &config.success {
        let found = resolve(&success.pointer, document)?.and_then(pointer::scalar_text);
        if found.as_deref() != Some(success.equals.as_str()) {
            return Err(not_a_success(config, response, document, success, found));
        }
    }
    let elements: Vec<&RawValue> = match &config.items {
        None => vec![document],
        Some(items) => match resolve(items, document)? {
            Some(list) if list.get().trim_start().starts_with('[') => {
                serde_json::from_str(list.get()).map_err(|e| {
                    ProviderError::decode(format!("items {items}: not an array: {e}"))
                })?
            }
            Some(_) => {
                return Err(ProviderError::decode(format!(
                    "items {items} is not an array"
                )));
            }
            None => {
                return Err(ProviderError::no_balance(format!(
                    "HTTP {}: items {items} names nothing",
                    response.status
                )));
            }
        },
    };
    let mut snapshot = Snapshot::default();
    let mut currencies: HashSet<String> = HashSet::new();
    for element in elements {
        for spec in &config.balances {
            let Some(amount) = amount_at(spec, element)? else {
                continue;
            };
            let currency = currency_at(config, spec, element)?;
            let amount = scaled(amount, spec, &currency)?;
            currencies.insert(currency.clone());
            snapshot.add(&currency, spec.kind, Some(amount));
        }
        // A hostile list of currencies ends the reading as soon as it is too many.
        if currencies.len() > max_currencies {
            snapshot.check_currencies(max_currencies)?;
        }
    }
    if snapshot.balances.is_empty() {
        let pointers: Vec<&str> = config.balances.iter().map(|b| b.amount.as_str()).collect();
        return Err(ProviderError::no_balance(format!(
            "HTTP {}: none of the amounts ({}) resolves{}",
            response.status,
            pointers.join(", "),
            if config.items.is_some() {
                " in any item"
            } else {
                ""
            }
        )));
    }
    Ok(snapshot)
}

fn resolve<'a>(
    pointer: &Pointer,
    document: &'a RawValue,
) -> Result<Option<&'a RawValue>, ProviderError> {
    pointer
        .resolve(document)
        .map_err(|e| ProviderError::decode(format!("{pointer}: {e}")))
}

/// The amount at the spec's pointer: `None` when it names nothing or `null`/`""` (no sample),
/// a `decode` error naming the pointer when it names something that is not an amount.
fn amount_at(spec: &BalanceSpec, element: &RawValue) -> Result<Option<Decimal>, ProviderError> {
    let raw = resolve(&spec.amount, element)?;
    parse_amount(raw)
        .map_err(|e| ProviderError::decode(format!("{} amount {}: {e}", spec.kind, spec.amount)))
}

fn currency_at(
    config: &Config,
    spec: &BalanceSpec,
    element: &RawValue,
) -> Result<String, ProviderError> {
    let found = match &spec.currency {
        Some(pointer) => match resolve(pointer, element)? {
            Some(raw) if raw.get().trim() != "null" => {
                let text: Option<String> = serde_json::from_str(raw.get()).ok();
                let code = text.map(|t| t.trim().to_ascii_uppercase());
                match code {
                    Some(code) if is_currency_code(&code) => Some(code),
                    _ => {
                        return Err(ProviderError::decode(format!(
                            "{} currency {pointer}: not a currency code like USD",
                            spec.kind
                        )));
                    }
                }
            }
            _ => None,
        },
        None => None,
    };
    found.or_else(|| config.currency.clone()).ok_or_else(|| {
        let at = spec
            .currency
            .as_ref()
            .map(Pointer::to_string)
            .unwrap_or_default();
        ProviderError::decode(format!("{} currency {at} names nothing", spec.kind))
    })
}

/// The amount in units of its currency: minor units divided exactly (by moving the decimal
/// point, never by a float).
fn scaled(amount: Decimal, spec: &BalanceSpec, currency: &str) -> Result<Decimal, ProviderError> {
    let digits = match spec.scale {
        Scale::Exact => return Ok(amount),
        Scale::Digits(n) => n,
        Scale::Iso4217 => minor_units(currency).ok_or_else(|| {
            ProviderError::decode(format!(
                "{} amount {}: scale iso4217, but ISO 4217 gives {currency} no minor units",
                spec.kind, spec.amount
            ))
        })?,
    };
    if !amount.fract().is_zero() {
        return Err(ProviderError::decode(format!(
            "{} amount {}: {amount} is not a whole number of minor units",
            spec.kind, spec.amount
        )));
    }
    let mut out = amount;
    out.set_scale(amount.scale() + digits).map_err(|_| {
        ProviderError::decode(format!(
            "{} amount {}: {amount} / 10^{digits} has too many digits",
            spec.kind, spec.amount
        ))
    })?;
    Ok(out)
}

/// The code the `error_code` pointer finds in `document`, if any.
fn code_in(config: &Config, document: Option<&RawValue>) -> Option<String> {
    let pointer = config.error_code.as_ref()?;
    let found = pointer.resolve(document?).ok()??;
    pointer::scalar_text(found).filter(|code| !code.trim().is_empty())
}

fn documented_class(config: &Config, code: &str) -> Option<ErrorClass> {
    config
        .documented_errors
        .iter()
        .find(|(documented, _)| *documented == code)
        .map(|(_, class)| *class)
}

/// A non-2xx answer: its code at `error_code` with the class it is documented with (else the
/// status's class), or `http_<status>`.
fn error_of(config: &Config, response: &Response) -> ProviderError {
    let document = serde_json::from_slice::<&RawValue>(&response.body).ok();
    match code_in(config, document) {
        Some(code) => {
            let class = documented_class(config, &code)
                .unwrap_or_else(|| ErrorClass::of_http_status(response.status));
            ProviderError::new(
                code.trim().to_owned(),
                class,
                format!("HTTP {}", response.status),
            )
            .with_retry_after(response.retry_after())
        }
        None => response.status_error(),
    }
}

/// A 2xx answer failing the `success` condition: the code it carries (a refusal, `client`,
/// unless documented otherwise), else `no_balance`.
fn not_a_success(
    config: &Config,
    response: &Response,
    document: &RawValue,
    success: &Success,
    found: Option<String>,
) -> ProviderError {
    let message = format!(
        "HTTP {}: success condition {} = {:?} not met (found {})",
        response.status,
        success.pointer,
        success.equals,
        found.map_or("nothing".to_owned(), |f| format!("{f:?}"))
    );
    match code_in(config, Some(document)) {
        Some(code) => {
            let class = documented_class(config, &code).unwrap_or(ErrorClass::Client);
            ProviderError::new(code.trim().to_owned(), class, message)
                .with_retry_after(response.retry_after())
        }
        None => ProviderError::no_balance(message),
    }
}

// Against the simulator, which the lean build (no `demo` feature) lacks.
#[cfg(all(test, feature = "demo"))]
mod tests;
