//! Stripe in the simulator: `GET /v1/balance` with the key as a Bearer token (or, as Stripe
//! also accepts, as the Basic username with no password), **enforced**; a `Stripe-Account`
//! header must name a connected account of the key's platform (**enforced**: 403
//! `account_invalid`); a restricted key without "Balance: read" is refused (403). The answer is
//! the balance object in minor units per Stripe's currency table, lowercase currencies, and the
//! error envelope `{"error": {"type", "code", "message"}}` with Stripe's statuses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Value, json};

use super::{
    AVAILABLE, BALANCE_PATH, CONNECT_RESERVED, INSTANT_AVAILABLE, ISSUING_AVAILABLE, PENDING,
    PREFUNDING_AVAILABLE, PREFUNDING_PENDING, is_account_id, stripe_exponent,
};
use crate::sim::{
    DemoPart, Fault, FaultPlan, Ledger, SimHandler, SimRequest, SimResponse, SimServer, lock,
    neutral_fault,
};

/// One amount of an account's balance: its kind (one of the module's kind names), currency
/// (upper-case, as configured; the wire has it in lowercase) and how it moves.
#[derive(Debug, Clone)]
pub struct SimFunds {
    pub kind: &'static str,
    pub currency: String,
    pub ledger: Ledger,
}

impl SimFunds {
    pub fn new(kind: &'static str, currency: &str, ledger: Ledger) -> Self {
        SimFunds {
            kind,
            currency: currency.to_ascii_uppercase(),
            ledger,
        }
    }
}

/// What one API key reads: its platform account's balance and the connected accounts it may
/// act for with `Stripe-Account`.
#[derive(Debug, Clone)]
pub struct SimAccount {
    pub funds: Vec<SimFunds>,
    /// Connected accounts (`acct_...`) and their balances.
    pub connected: HashMap<String, Vec<SimFunds>>,
    /// A restricted key without the "Balance: read" permission: 403.
    pub lacks_balance_read: bool,
    /// An expired (rolled) key: 401 `api_key_expired`.
    pub expired: bool,
    pub faults: FaultPlan,
    /// Wrong answers under HTTP 200 and misleading errors, drawn for requests that
    /// [`SimAccount::faults`] left alone.
    pub body_faults: FaultPlan<BodyFault>,
}

impl SimAccount {
    pub fn new(funds: Vec<SimFunds>) -> Self {
        SimAccount {
            funds,
            connected: HashMap::new(),
            lacks_balance_read: false,
            expired: false,
            faults: FaultPlan::default(),
            body_faults: FaultPlan::default(),
        }
    }

    pub fn with_connected(mut self, account: &str, funds: Vec<SimFunds>) -> Self {
        self.connected.insert(account.to_owned(), funds);
        self
    }
}

/// Stripe answers that are wrong or misleading in ways [`Fault`] does not cover.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyFault {
    /// `200 {}`: no balance at all. Counted as `no_balance`.
    NoBalance,
    /// `200` with another object (a list), as a wrong `base_url` or path gives. `no_balance`.
    WrongObject,
    /// The balance with its first `available` entry missing its `amount`: that entry is no
    /// sample, the others are.
    MissingAmount,
    /// The balance with a fractional amount (`12.5` minor units): `decode`.
    FractionalAmount,
    /// Stripe's error for `code` with `Stripe-Should-Retry: false`: counted once, not retried
    /// even where its class would be (`api_error`).
    NoRetry { code: String },
    /// A hostile gateway: `401` whose message echoes the `Authorization` header as sent.
    /// Counted under `authentication_error`, the key redacted.
    EchoCredentials,
}

/// The Stripe API for any number of keys.
pub struct StripeSim {
    accounts: Mutex<HashMap<String, SimAccount>>,
    requests: AtomicU64,
}

impl StripeSim {
    pub fn new() -> Arc<Self> {
        Arc::new(StripeSim {
            accounts: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        })
    }

    /// Serves `api_key` (`sk_...` or `rk_...`).
    pub fn add_account(&self, api_key: &str, account: SimAccount) {
        lock(&self.accounts).insert(api_key.to_owned(), account);
    }

    /// Changes a key's state (balances, faults) in place.
    pub fn update(&self, api_key: &str, change: impl FnOnce(&mut SimAccount)) {
        if let Some(account) = lock(&self.accounts).get_mut(api_key) {
            change(account);
        }
    }

    pub async fn start(self: &Arc<Self>) -> std::io::Result<SimServer> {
        SimServer::start(self.clone()).await
    }

    fn take_fault(&self, api_key: &str) -> Option<Fault> {
        lock(&self.accounts).get_mut(api_key)?.faults.take()
    }

    fn take_body_fault(&self, api_key: &str) -> Option<BodyFault> {
        lock(&self.accounts).get_mut(api_key)?.body_faults.take()
    }
}

/// The key a request authenticates with: a Bearer token, or the username of Basic auth (the
/// password empty, as `curl -u sk_test_...:` sends it). `Err` is Stripe's 401 for it.
fn presented_key(request: &SimRequest) -> Result<String, SimResponse> {
    let Some(header) = request.header("authorization") else {
        return Err(error_response(
            401,
            "invalid_request_error",
            None,
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
             YOUR_SECRET_KEY').",
        ));
    };
    let key = if let Some(token) = header.strip_prefix("Bearer ") {
        Some(token.to_owned())
    } else if let Some(encoded) = header.strip_prefix("Basic ") {
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|pair| {
                let (user, password) = pair.split_once(':').unwrap_or((&pair, ""));
                password.is_empty().then(|| user.to_owned())
            })
    } else {
        None
    };
    key.filter(|k| !k.is_empty() && !k.contains(char::is_whitespace))
        .ok_or_else(|| {
            error_response(
                401,
                "invalid_request_error",
                None,
                "Invalid API Key provided: the Authorization header is not Bearer auth with \
                 an API key.",
            )
        })
}

/// A key as Stripe shows it in errors: its prefix and last four characters.
fn masked(key: &str) -> String {
    let prefix_len = key.match_indices('_').nth(1).map_or(3, |(i, _)| i + 1);
    let prefix: String = key.chars().take(prefix_len.min(key.len())).collect();
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "{prefix}{}{tail}",
        "*".repeat(key.len().saturating_sub(prefix_len + 4))
    )
}

/// Stripe's error envelope with `status`.
pub fn error_response(status: u16, kind: &str, code: Option<&str>, message: &str) -> SimResponse {
    let mut error = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        error["code"] = json!(code);
        error["doc_url"] = json!(format!("https://stripe.com/docs/error-codes/{code}"));
    }
    SimResponse::json(status, json!({ "error": error }).to_string())
}

/// Stripe's answer for the documented code `code` (see the module's `DOCUMENTED_ERRORS`),
/// with `status` overriding its usual one.
pub fn coded_error(code: &str, status: Option<u16>) -> SimResponse {
    let (usual, kind, wire_code, message) = match code {
        "authentication_error" => (
            401,
            "invalid_request_error",
            None,
            "Invalid API Key provided",
        ),
        "api_key_expired" => (
            401,
            "invalid_request_error",
            Some(code),
            "Expired API Key provided",
        ),
        "permission_error" => (
            403,
            "invalid_request_error",
            None,
            "The provided key does not have the required permissions for this endpoint. \
             Having the 'rak_balance_read' permission would allow this request to continue.",
        ),
        "account_invalid" => (
            403,
            "invalid_request_error",
            Some(code),
            "The provided key does not have access to the account given in the \
             Stripe-Account header (or that account does not exist).",
        ),
        "rate_limit" => (
            429,
            "invalid_request_error",
            Some(code),
            "Request rate limit exceeded. Learn more about rate limits here \
             https://stripe.com/docs/rate-limits.",
        ),
        "api_error" => (500, "api_error", None, "An unknown error occurred"),
        "idempotency_error" => (
            400,
            "idempotency_error",
            None,
            "Keys for idempotent requests can only be used with the same parameters.",
        ),
        "card_error" => (402, "card_error", None, "Your card was declined."),
        "invalid_request_error" => (
            400,
            "invalid_request_error",
            None,
            "Received unknown parameter.",
        ),
        other => (
            400,
            "invalid_request_error",
            Some(other),
            "Invalid request.",
        ),
    };
    error_response(status.unwrap_or(usual), kind, wire_code, message)
}

/// The balance object of `funds`: `available` and `pending` always (Stripe lists them even
/// when empty), the other lists only where some funds are of their kind.
pub fn balance_body(funds: &[SimFunds], livemode: bool, mutate: Option<&BodyFault>) -> Value {
    let entry = |f: &SimFunds, source_types: bool| {
        let exponent = stripe_exponent(&f.currency);
        let minor = (f.ledger.amount(exponent) * Decimal::from(10_i64.pow(exponent))).trunc();
        let mut entry = json!({
            "amount": minor.to_i64().map_or(Value::Null, Value::from),
            "currency": f.currency.to_ascii_lowercase(),
        });
        if source_types {
            entry["source_types"] = json!({ "card": entry["amount"].clone() });
        }
        entry
    };
    let list = |kind: &str| -> Vec<Value> {
        let with_sources = kind != ISSUING_AVAILABLE;
        funds
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| entry(f, with_sources))
            .collect()
    };
    let mut body = json!({
        "object": "balance",
        "available": list(AVAILABLE),
        "livemode": livemode,
        "pending": list(PENDING),
    });
    for (key, kind) in [
        ("instant_available", INSTANT_AVAILABLE),
        ("connect_reserved", CONNECT_RESERVED),
    ] {
        let entries = list(kind);
        if !entries.is_empty() {
            body[key] = Value::Array(entries);
        }
    }
    let issuing = list(ISSUING_AVAILABLE);
    if !issuing.is_empty() {
        body["issuing"] = json!({ "available": issuing });
    }
    let (prefunded, prefunding) = (list(PREFUNDING_AVAILABLE), list(PREFUNDING_PENDING));
    if !prefunded.is_empty() || !prefunding.is_empty() {
        body["refund_and_dispute_prefunding"] =
            json!({ "available": prefunded, "pending": prefunding });
    }
    match mutate {
        Some(BodyFault::MissingAmount) => {
            if let Some(first) = body["available"].get_mut(0).and_then(Value::as_object_mut) {
                first.remove("amount");
            }
        }
        Some(BodyFault::FractionalAmount) => {
            if let Some(first) = body["available"].get_mut(0) {
                first["amount"] = json!(12.5);
            }
        }
        _ => {}
    }
    body
}

/// `401` with the `Authorization` header of `request` in the message, as it was sent.
fn echo_credentials(request: &SimRequest) -> SimResponse {
    let header = request.header("authorization").unwrap_or_default();
    error_response(
        401,
        "invalid_request_error",
        None,
        &format!("Invalid API Key provided: Authorization: {header}"),
    )
}

#[async_trait::async_trait]
impl SimHandler for StripeSim {
    async fn handle(&self, request: &SimRequest) -> SimResponse {
        let id = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let answer = self.answer(request).await;
        answer.with_header("request-id", format!("req_sim{id:010}"))
    }
}

impl StripeSim {
    async fn answer(&self, request: &SimRequest) -> SimResponse {
        let key = match presented_key(request) {
            Ok(key) => key,
            Err(refusal) => return refusal,
        };
        let Some(account) = lock(&self.accounts).get(&key).cloned() else {
            return error_response(
                401,
                "invalid_request_error",
                None,
                &format!("Invalid API Key provided: {}", masked(&key)),
            );
        };
        if request.path != BALANCE_PATH || request.method != "GET" {
            return error_response(
                404,
                "invalid_request_error",
                None,
                &format!(
                    "Unrecognized request URL ({}: {}).",
                    request.method, request.path
                ),
            );
        }
        if account.expired {
            return coded_error("api_key_expired", None);
        }
        if account.lacks_balance_read {
            return coded_error("permission_error", None);
        }
        // The header is checked whatever its shape: Stripe refuses what names no account the
        // key may act for, and so does a malformed one.
        let funds = match request.header("stripe-account") {
            None => account.funds.clone(),
            Some(connected) => match account.connected.get(connected.trim()) {
                Some(funds) if is_account_id(connected.trim()) => funds.clone(),
                _ => return coded_error("account_invalid", None),
            },
        };
        if let Some(fault) = self.take_fault(&key) {
            if let Fault::Code { code, status } = &fault {
                return coded_error(code, *status);
            }
            if let Some(response) = neutral_fault(&fault).await {
                return response;
            }
        }
        let body_fault = self.take_body_fault(&key);
        match &body_fault {
            Some(BodyFault::NoBalance) => return SimResponse::json(200, "{}"),
            Some(BodyFault::WrongObject) => {
                return SimResponse::json(
                    200,
                    r#"{"object":"list","data":[],"has_more":false,"url":"/v1/charges"}"#,
                );
            }
            Some(BodyFault::NoRetry { code }) => {
                return coded_error(code, None).with_header("stripe-should-retry", "false");
            }
            Some(BodyFault::EchoCredentials) => return echo_credentials(request),
            Some(BodyFault::MissingAmount | BodyFault::FractionalAmount) | None => {}
        }
        // After any latency, so a slow answer carries the balance of when it was sent; the
        // ledgers are shared by the clone, which reads them as of now.
        let livemode = key.contains("_live_");
        SimResponse::json(
            200,
            balance_body(&funds, livemode, body_fault.as_ref()).to_string(),
        )
    }
}

/// Stripe's part of `--demo`: a platform account in USD and EUR whose available USD falls
/// slowly (hours from its warning threshold: the demo's one account that drains through its
/// thresholds is EngageLab's `sms-main`, which tests/e2e_alerts.rs relies on), with occasional
/// API errors, and a connected account (read with
/// `Stripe-Account`) in JPY and KWD, zero- and three-decimal. No rate limiting: a 429 pauses
/// the account past three intervals, and the demo's healthy accounts must raise no alert.
pub async fn demo() -> std::io::Result<DemoPart> {
    let sim = StripeSim::new();
    let d = |units: i64, scale: u32| Decimal::new(units, scale);
    // available USD 12,500.00 less 2.00 a request: warning (1,000) after ~5,750 requests.
    let mut platform = SimAccount::new(vec![
        SimFunds::new(
            AVAILABLE,
            "USD",
            Ledger::draining(d(1_250_000, 2), d(2, 0), Some(Decimal::ZERO)),
        ),
        SimFunds::new(PENDING, "USD", Ledger::fixed(d(48_250, 2))),
        SimFunds::new(AVAILABLE, "EUR", Ledger::fixed(d(987_654, 2))),
        SimFunds::new(PENDING, "EUR", Ledger::fixed(d(0, 2))),
        SimFunds::new(INSTANT_AVAILABLE, "USD", Ledger::fixed(d(30_000, 2))),
    ])
    .with_connected(
        "acct_1DemoConnected00",
        vec![
            SimFunds::new(AVAILABLE, "JPY", Ledger::fixed(d(1_250_000, 0))),
            SimFunds::new(PENDING, "JPY", Ledger::fixed(d(80_000, 0))),
            SimFunds::new(AVAILABLE, "KWD", Ledger::fixed(d(152_340, 3))),
            SimFunds::new(CONNECT_RESERVED, "JPY", Ledger::fixed(d(5_000, 0))),
        ],
    );
    platform.faults.every(9, Fault::code("api_error"));
    sim.add_account("sk_test_demoStripePlatformKey", platform);
    let server = sim.start().await?;
    let accounts_yaml = format!(
        r#"
  - name: stripe-platform
    provider: stripe
    base_url: {base}
    api_key: sk_test_demoStripePlatformKey
    thresholds:
      - currency: USD
        warning: 1000
        critical: 200
  - name: stripe-connected
    provider: stripe
    base_url: {base}
    api_key: sk_test_demoStripePlatformKey
    stripe_account: acct_1DemoConnected00
    thresholds:
      - currency: JPY
        warning: 1000000
        critical: 100000
"#,
        base = server.base_url()
    );
    Ok(DemoPart {
        servers: vec![server],
        accounts_yaml,
    })
}
