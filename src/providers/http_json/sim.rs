//! `http_json` and its presets in the simulator: one account per server, answering as the
//! API of its [`Shape`] does. Each shape **enforces** its auth (a wrong or missing credential
//! gets the provider's documented refusal), its method and path, and, for the generic shape's
//! `POST`, the exact request body.
//!
//! - [`Shape::Acme`]: the example API of the `http_json` docs (`docs/providers/http_json.md`):
//!   `{"status":"ok","wallets":[{"cur":"USD","avail":"1234.5600","held_minor":1500}]}`,
//!   errors `{"status":"error","error":{"code":"E_AUTH","message":"..."}}`.
//! - [`Shape::Twilio`], [`Shape::Telnyx`], [`Shape::Vonage`]: as their references and official
//!   SDKs show them (see `presets.rs`).

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rust_decimal::Decimal;

use super::presets::Preset;
use crate::money::minor_units;
use crate::sim::{
    DemoPart, Fault, FaultPlan, Ledger, SimHandler, SimRequest, SimResponse, SimServer, lock,
    neutral_fault,
};

/// Which API the simulator answers as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// The generic example: `method` on `path`, with `body` required byte for byte on POST.
    Acme {
        method: &'static str,
        path: String,
        body: Option<String>,
    },
    /// `GET /2010-04-01/Accounts/{sid}/Balance.json`.
    Twilio,
    /// `GET /v2/balance`.
    Telnyx,
    /// `GET /account/get-balance`.
    Vonage,
}

/// The credentials the simulator accepts (**enforced**).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimAuth {
    None,
    Basic { username: String, password: String },
    Bearer(String),
    Header { name: String, value: String },
    Query { name: String, value: String },
}

/// One currency's balances: `main` (Acme `avail`, Twilio `balance`, Telnyx `balance`, Vonage
/// `value`) and `other` (Acme `held_minor`, Telnyx `credit_limit`).
#[derive(Debug, Clone)]
pub struct Wallet {
    pub currency: String,
    pub main: Ledger,
    pub other: Ledger,
}

impl Wallet {
    pub fn new(currency: &str, main: Ledger, other: Ledger) -> Self {
        Wallet {
            currency: currency.to_owned(),
            main,
            other,
        }
    }
}

/// A wrong answer under HTTP 200 (or a credential echo), drawn after [`SimState::faults`].
#[derive(Debug, Clone, PartialEq)]
pub enum BodyFault {
    /// `200 {}`: nothing the pointers name. Counted as `no_balance`.
    NoBalance,
    /// Acme only: `200 {"status":"error","error":{"code":...}}`, failing the success
    /// condition. Counted under the code.
    ErrorUnder200 { code: String },
    /// `401` whose message echoes the request's credentials as sent (the `Authorization`
    /// header, or the query string).
    EchoCredentials,
}

/// The simulated account: its wallets and what goes wrong.
#[derive(Debug, Clone)]
pub struct SimState {
    pub wallets: Vec<Wallet>,
    pub faults: FaultPlan,
    pub body_faults: FaultPlan<BodyFault>,
}

pub struct HttpJsonSim {
    shape: Shape,
    auth: SimAuth,
    state: Mutex<SimState>,
}

impl HttpJsonSim {
    pub fn new(shape: Shape, auth: SimAuth, wallets: Vec<Wallet>) -> Arc<Self> {
        Arc::new(HttpJsonSim {
            shape,
            auth,
            state: Mutex::new(SimState {
                wallets,
                faults: FaultPlan::default(),
                body_faults: FaultPlan::default(),
            }),
        })
    }

    /// Changes the account's state (wallets, faults) in place.
    pub fn update(&self, change: impl FnOnce(&mut SimState)) {
        change(&mut lock(&self.state));
    }

    pub async fn start(self: &Arc<Self>) -> std::io::Result<SimServer> {
        SimServer::start(self.clone()).await
    }

    fn authenticated(&self, request: &SimRequest) -> bool {
        let basic = || -> Option<(String, String)> {
            let encoded = request.header("authorization")?.strip_prefix("Basic ")?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
            Some((user.to_owned(), password.to_owned()))
        };
        match &self.auth {
            SimAuth::None => true,
            SimAuth::Basic { username, password } => {
                basic().is_some_and(|(u, p)| u == *username && p == *password)
            }
            SimAuth::Bearer(token) => {
                request.header("authorization") == Some(format!("Bearer {token}").as_str())
            }
            SimAuth::Header { name, value } => request.header(name) == Some(value.as_str()),
            SimAuth::Query { name, value } => request
                .query_param(name)
                .is_some_and(|v| decode_query(&v) == *value),
        }
    }

    fn route(&self, request: &SimRequest) -> Result<(), SimResponse> {
        let (method, path) = match &self.shape {
            Shape::Acme { method, path, .. } => (*method, path.clone()),
            Shape::Twilio => {
                let sid = match &self.auth {
                    SimAuth::Basic { username, .. } => username.clone(),
                    _ => String::new(),
                };
                ("GET", format!("/2010-04-01/Accounts/{sid}/Balance.json"))
            }
            Shape::Telnyx => ("GET", "/v2/balance".to_owned()),
            Shape::Vonage => ("GET", "/account/get-balance".to_owned()),
        };
        if request.path != path {
            // Twilio: another account's SID, with these credentials, is not found.
            return Err(self.error("not_found", Some(404)));
        }
        if request.method != method {
            return Err(self.error("method", Some(405)));
        }
        if let Shape::Acme {
            body: Some(body), ..
        } = &self.shape
        {
            let typed = request
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/json"));
            if request.body.as_ref() != body.as_bytes() || !typed {
                return Err(self.error("E_BAD_REQUEST", Some(400)));
            }
        }
        Ok(())
    }

    /// The provider's error answer for `code` (or for a generic failure: `not_found`,
    /// `method`, `auth`).
    pub fn error(&self, code: &str, status: Option<u16>) -> SimResponse {
        match &self.shape {
            Shape::Acme { .. } => {
                let (default_status, message) = match code {
                    "auth" | "E_AUTH" => (401, "invalid api key"),
                    "E_RATE" => (429, "slow down"),
                    "E_INTERNAL" => (500, "internal error"),
                    "not_found" => (404, "no such route"),
                    "method" => (405, "method not allowed"),
                    _ => (400, "bad request"),
                };
                let code = if code == "auth" { "E_AUTH" } else { code };
                let body = serde_json::json!({
                    "status": "error",
                    "error": {"code": code, "message": message}
                });
                SimResponse::json(status.unwrap_or(default_status), body.to_string())
            }
            Shape::Twilio => {
                let (code, default_status, message) = match code {
                    "auth" | "20003" => (20003, 401, "Authenticate"),
                    "not_found" | "20404" => (20404, 404, "The requested resource was not found"),
                    "20429" => (20429, 429, "Too Many Requests"),
                    "method" => (20004, 405, "Method not allowed"),
                    _ => (20500, 500, "Internal Server Error"),
                };
                let status = status.unwrap_or(default_status);
                let body = serde_json::json!({
                    "code": code,
                    "message": message,
                    "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                    "status": status,
                });
                SimResponse::json(status, body.to_string())
            }
            Shape::Telnyx => {
                let (code, default_status, title) = match code {
                    "auth" | "10009" => ("10009", 401, "Authentication failed"),
                    "10010" => ("10010", 403, "Authorization failed"),
                    "10011" => ("10011", 429, "Too many requests"),
                    "not_found" => ("10005", 404, "Resource not found"),
                    "method" => ("10006", 405, "Method not allowed"),
                    _ => ("10007", 500, "Unexpected error"),
                };
                let body = serde_json::json!({"errors": [{
                    "code": code,
                    "title": title,
                    "detail": title,
                }]});
                SimResponse::json(status.unwrap_or(default_status), body.to_string())
            }
            Shape::Vonage => {
                let (default_status, title, detail) = match code {
                    "auth" | "http_401" => (
                        401,
                        "Unauthorized",
                        "You did not provide correct credentials.",
                    ),
                    "http_429" => (429, "Too Many Requests", "Slow down."),
                    "not_found" => (404, "Not Found", "No such resource."),
                    "method" => (405, "Method Not Allowed", "Use GET."),
                    _ => (500, "Internal Server Error", "Try again later."),
                };
                let body = serde_json::json!({
                    "type": "https://developer.vonage.com/api-errors#unauthorized",
                    "title": title,
                    "detail": detail,
                    "instance": "bf0ca0bf927b3b52e3cb03217e1a1ddf",
                });
                SimResponse::json(status.unwrap_or(default_status), body.to_string())
            }
        }
    }

    fn balance_body(&self, wallets: &[Wallet]) -> String {
        let first = wallets.first();
        let main = |scale| first.map_or(Decimal::ZERO, |w| w.main.amount(scale));
        let other = |scale| first.map_or(Decimal::ZERO, |w| w.other.amount(scale));
        let currency = first.map_or("USD", |w| w.currency.as_str());
        match &self.shape {
            Shape::Acme { .. } => {
                let wallets: Vec<serde_json::Value> = wallets
                    .iter()
                    .map(|w| {
                        let digits = minor_units(&w.currency).unwrap_or(2);
                        let held = w.other.amount(digits) * Decimal::from(10u64.pow(digits));
                        // Raw numbers keep their digits: formatted, not through f64.
                        serde_json::json!({
                            "cur": w.currency,
                            "avail": format!("{:.4}", w.main.amount(4)),
                            "held_minor": RawNumber(held.trunc().to_string()),
                        })
                    })
                    .collect();
                serde_json::json!({"status": "ok", "wallets": wallets}).to_string()
            }
            Shape::Twilio => {
                let sid = match &self.auth {
                    SimAuth::Basic { username, .. } => username.as_str(),
                    _ => "",
                };
                serde_json::json!({
                    "account_sid": sid,
                    "balance": format!("{:.5}", main(5)),
                    "currency": currency,
                })
                .to_string()
            }
            Shape::Telnyx => {
                let (balance, limit) = (main(2), other(2));
                serde_json::json!({"data": {
                    "record_type": "balance",
                    "balance": format!("{balance:.2}"),
                    "credit_limit": format!("{limit:.2}"),
                    "available_credit": format!("{:.2}", balance + limit),
                    "pending": "0.00",
                    "currency": currency,
                }})
                .to_string()
            }
            // A JSON number, as the reference shows it.
            Shape::Vonage => format!(r#"{{"value":{},"autoReload":false}}"#, main(2).normalize()),
        }
    }

    fn echo_credentials(&self, request: &SimRequest) -> SimResponse {
        let header = match &self.auth {
            SimAuth::Header { name, .. } => name.as_str(),
            _ => "authorization",
        };
        let sent = request
            .header(header)
            .map(str::to_owned)
            .or_else(|| request.query.clone())
            .unwrap_or_default();
        let mut response = self.error("auth", Some(401));
        let echoed = format!("invalid credentials: {sent}");
        if let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&response.body) {
            for pointer in ["/message", "/error/message", "/errors/0/detail", "/detail"] {
                if let Some(field) = body.pointer_mut(pointer) {
                    *field = serde_json::Value::String(echoed.clone());
                }
            }
            response.body = body.to_string().into();
        }
        response
    }
}

/// A JSON number written from its decimal text.
struct RawNumber(String);

impl serde::Serialize for RawNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::value::RawValue::from_string(self.0.clone()) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_str(&self.0),
        }
    }
}

/// A query value as sent (`%XX` escapes and `+` for space undone).
fn decode_query(value: &str) -> String {
    url_decode(&value.replace('+', " "))
}

fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok();
        match (bytes[i], hex().and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait::async_trait]
impl SimHandler for HttpJsonSim {
    async fn handle(&self, request: &SimRequest) -> SimResponse {
        // Credentials first: a stranger learns nothing of the routes.
        if !self.authenticated(request) {
            return self.error("auth", None);
        }
        if let Err(refusal) = self.route(request) {
            return refusal;
        }
        let fault = lock(&self.state).faults.take();
        if let Some(fault) = fault {
            if let Fault::Code { code, status } = &fault {
                return self.error(code, *status);
            }
            if let Some(response) = neutral_fault(&fault).await {
                return response;
            }
        }
        let body_fault = lock(&self.state).body_faults.take();
        match body_fault {
            Some(BodyFault::NoBalance) => return SimResponse::json(200, "{}"),
            Some(BodyFault::ErrorUnder200 { code }) => return self.error(&code, Some(200)),
            Some(BodyFault::EchoCredentials) => return self.echo_credentials(request),
            None => {}
        }
        // Read after any latency: a slow answer carries the balance of when it was sent.
        let wallets = lock(&self.state).wallets.clone();
        SimResponse::json(200, self.balance_body(&wallets))
    }
}

/// The simulator of `preset` with the given credentials (as the preset's keys name them).
pub fn preset_sim(preset: &Preset, auth: SimAuth, wallets: Vec<Wallet>) -> Arc<HttpJsonSim> {
    let shape = match preset.name {
        "twilio" => Shape::Twilio,
        "telnyx" => Shape::Telnyx,
        _ => Shape::Vonage,
    };
    HttpJsonSim::new(shape, auth, wallets)
}

/// The generic example's part of `--demo`: a POST API with a header key, two wallets (one in
/// minor units of JPY), and now and then a 2xx that is not a success.
pub async fn demo() -> std::io::Result<DemoPart> {
    let d = Decimal::new;
    let sim = HttpJsonSim::new(
        Shape::Acme {
            method: "POST",
            path: "/v3/wallets".to_owned(),
            body: Some(r#"{"scope":"all"}"#.to_owned()),
        },
        SimAuth::Header {
            name: "x-api-key".to_owned(),
            value: "demo-acme-key".to_owned(),
        },
        vec![
            Wallet::new(
                "USD",
                Ledger::draining(d(5000, 0), d(1, 1), None),
                Ledger::fixed(d(1500, 2)),
            ),
            Wallet::new("JPY", Ledger::fixed(d(120000, 0)), Ledger::fixed(d(300, 0))),
        ],
    );
    sim.update(|s| {
        s.body_faults.every(
            13,
            BodyFault::ErrorUnder200 {
                code: "E_MAINTENANCE".to_owned(),
            },
        )
    });
    let server = sim.start().await?;
    let accounts_yaml = format!(
        r#"
  - name: acme-wallets
    provider: http_json
    base_url: {base}
    path: /v3/wallets
    method: POST
    body: '{{"scope":"all"}}'
    auth:
      type: header
      name: X-Api-Key
      value: demo-acme-key
    headers: {{Accept: application/json}}
    items: /wallets
    balances:
      - kind: available
        amount: /avail
        currency: /cur
      - kind: on_hold
        amount: /held_minor
        currency: /cur
        scale: iso4217
    error_code: /error/code
    success: {{pointer: /status, equals: ok}}
    thresholds:
      - currency: USD
        warning: 1000
        critical: 100
"#,
        base = server.base_url()
    );
    Ok(DemoPart {
        servers: vec![server],
        accounts_yaml,
    })
}

/// A preset's part of `--demo`: one healthy account, with a server error now and then.
pub async fn preset_demo(preset: &'static Preset) -> std::io::Result<DemoPart> {
    let d = Decimal::new;
    let name = preset.name;
    let (auth, keys) = match name {
        "twilio" => (
            SimAuth::Basic {
                username: "AC00000000000000000000000000000de0".to_owned(),
                password: "demo-twilio-token".to_owned(),
            },
            "account_sid: AC00000000000000000000000000000de0\n    auth_token: demo-twilio-token",
        ),
        "telnyx" => (
            SimAuth::Bearer("KEYdemo-telnyx".to_owned()),
            "api_key: KEYdemo-telnyx",
        ),
        _ => (
            SimAuth::Basic {
                username: "demo-vonage".to_owned(),
                password: "demo-vonage-secret".to_owned(),
            },
            "api_key: demo-vonage\n    api_secret: demo-vonage-secret",
        ),
    };
    let currency = if name == "vonage" { "EUR" } else { "USD" };
    let sim = preset_sim(
        preset,
        auth,
        vec![Wallet::new(
            currency,
            Ledger::draining(d(2500, 0), d(5, 2), Some(Decimal::ZERO)),
            Ledger::fixed(d(100, 0)),
        )],
    );
    // A server error (retried within the poll): a rate limit would raise an alert in a demo
    // that should show only the draining accounts'.
    let server_error = match name {
        "twilio" => "20500",
        "telnyx" => "10007",
        _ => "http_500",
    };
    sim.update(|s| s.faults.every(17, Fault::code(server_error)));
    let server = sim.start().await?;
    let accounts_yaml = format!(
        r#"
  - name: {name}-main
    provider: {name}
    base_url: {base}
    {keys}
    thresholds:
      - warning: 500
        critical: 100
"#,
        base = server.base_url()
    );
    Ok(DemoPart {
        servers: vec![server],
        accounts_yaml,
    })
}
