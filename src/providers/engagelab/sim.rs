//! EngageLab in the simulator: `GET /v1/balance` with Basic auth (**enforced**), the SMS or
//! OTP body, the documented error bodies, and answers that are wrong under a 2xx
//! ([`BodyFault`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rust_decimal::Decimal;

use super::Product;
use crate::sim::{
    DemoPart, Fault, FaultPlan, Ledger, SimHandler, SimRequest, SimResponse, SimServer, lock,
    neutral_fault,
};

/// One simulated EngageLab account.
#[derive(Debug, Clone)]
pub struct SimAccount {
    pub dev_secret: String,
    /// OTP only: the currency the answer names.
    pub currency: String,
    pub normal: Ledger,
    pub gift: Ledger,
    pub faults: FaultPlan,
    /// Wrong answers under HTTP 200, drawn for requests that [`SimAccount::faults`] left
    /// alone (so that each one drawn is one answered).
    pub body_faults: FaultPlan<BodyFault>,
}

/// An EngageLab answer that is wrong under HTTP 200.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyFault {
    /// `200 {}`: no balance field at all (a wrong `base_url`, a changed API). Counted as
    /// `no_balance`.
    NoBalance,
    /// The documented error envelope of `code` (`1000`, `2001`, `2002`...) under HTTP 200.
    /// Counted under `code` with its documented class.
    ErrorUnder200 { code: String },
    /// A hostile or buggy gateway: `401` code `2001` whose `message` echoes the request's
    /// `Authorization` header value and the `dev_key:dev_secret` it decodes to. Counted
    /// under `2001`, the credentials redacted.
    EchoCredentials,
}

impl BodyFault {
    pub fn error_under_200(code: impl Into<String>) -> Self {
        BodyFault::ErrorUnder200 { code: code.into() }
    }
}

impl SimAccount {
    pub fn new(dev_secret: &str, normal: Ledger, gift: Ledger) -> Self {
        SimAccount {
            dev_secret: dev_secret.to_owned(),
            currency: "USD".to_owned(),
            normal,
            gift,
            faults: FaultPlan::default(),
            body_faults: FaultPlan::default(),
        }
    }
}

/// The EngageLab API of one product (SMS and OTP answer on the same path, on different hosts).
pub struct EngageLabSim {
    product: Product,
    accounts: Mutex<HashMap<String, SimAccount>>,
}

impl EngageLabSim {
    pub fn new(product: Product) -> Arc<Self> {
        Arc::new(EngageLabSim {
            product,
            accounts: Mutex::new(HashMap::new()),
        })
    }

    pub fn add_account(&self, dev_key: &str, account: SimAccount) {
        lock(&self.accounts).insert(dev_key.to_owned(), account);
    }

    /// Changes an account's state (balances, currency, faults) in place.
    pub fn update(&self, dev_key: &str, change: impl FnOnce(&mut SimAccount)) {
        if let Some(account) = lock(&self.accounts).get_mut(dev_key) {
            change(account);
        }
    }

    pub async fn start(self: &Arc<Self>) -> std::io::Result<SimServer> {
        SimServer::start(self.clone()).await
    }

    /// The account the `Authorization` header names, if its credentials are right.
    fn authenticate(&self, request: &SimRequest) -> Option<String> {
        let encoded = request.header("authorization")?.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (key, secret) = decoded.split_once(':')?;
        let accounts = lock(&self.accounts);
        (accounts.get(key)?.dev_secret == secret).then(|| key.to_owned())
    }

    fn take_fault(&self, dev_key: &str) -> Option<Fault> {
        lock(&self.accounts).get_mut(dev_key)?.faults.take()
    }

    fn take_body_fault(&self, dev_key: &str) -> Option<BodyFault> {
        lock(&self.accounts).get_mut(dev_key)?.body_faults.take()
    }

    fn balance_body(&self, account: &SimAccount) -> String {
        let normal = account.normal.amount(4);
        let gift = account.gift.amount(4);
        let total = normal + gift;
        match self.product {
            Product::Sms => {
                let scaled = |d: Decimal| (d * Decimal::from(10_000)).trunc();
                format!(
                    r#"{{"balance10000":{},"gift_balance10000":{},"total_balance10000":{},"balance":{},"gift_balance":{},"total_balance":{}}}"#,
                    scaled(normal),
                    scaled(gift),
                    scaled(total),
                    normal.normalize(),
                    gift.normalize(),
                    total.normalize()
                )
            }
            Product::Otp => format!(
                r#"{{"currency":"{}","balance":"{}","gift_balance":"{}","total_balance":"{}"}}"#,
                account.currency,
                normal.round_dp(4),
                gift.round_dp(4),
                total.round_dp(4)
            ),
        }
    }
}

/// The documented error answer for `code`.
fn error_response(code: &str, status: Option<u16>) -> SimResponse {
    let (default_status, message) = match code {
        "1000" => (500, "internal error, retry later"),
        "2001" => (401, "invalid dev_key or dev_secret"),
        "2002" => (401, "token expired or disabled"),
        _ => (400, "error"),
    };
    let status = status.unwrap_or(default_status);
    let code_json = code
        .parse::<i64>()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| format!("{code:?}"));
    SimResponse::json(
        status,
        format!(r#"{{"code":{code_json},"message":"{message}"}}"#),
    )
}

/// `401 2001` with the credentials of `request` in the message, as it sent them and decoded.
fn echo_credentials(request: &SimRequest) -> SimResponse {
    let header = request.header("authorization").unwrap_or_default();
    let decoded = header
        .strip_prefix("Basic ")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = format!("invalid credentials: Authorization: {header} ({decoded})");
    SimResponse::json(
        401,
        serde_json::json!({ "code": 2001, "message": message }).to_string(),
    )
}

#[async_trait::async_trait]
impl SimHandler for EngageLabSim {
    async fn handle(&self, request: &SimRequest) -> SimResponse {
        if request.path != "/v1/balance" {
            return SimResponse::json(404, r#"{"code":404,"message":"not found"}"#);
        }
        if request.method != "GET" {
            return SimResponse::json(405, r#"{"code":405,"message":"method not allowed"}"#);
        }
        let Some(dev_key) = self.authenticate(request) else {
            return error_response("2001", None);
        };
        if let Some(fault) = self.take_fault(&dev_key) {
            if let Fault::Code { code, status } = &fault {
                return error_response(code, *status);
            }
            if let Some(response) = neutral_fault(&fault).await {
                return response;
            }
        }
        match self.take_body_fault(&dev_key) {
            Some(BodyFault::NoBalance) => return SimResponse::json(200, "{}"),
            Some(BodyFault::ErrorUnder200 { code }) => return error_response(&code, Some(200)),
            Some(BodyFault::EchoCredentials) => return echo_credentials(request),
            None => {}
        }
        // Read the account after any latency, so a slow answer carries the balance of when
        // it was sent.
        let account = lock(&self.accounts).get(&dev_key).cloned();
        match account {
            Some(account) => SimResponse::json(200, self.balance_body(&account)),
            None => error_response("2002", Some(403)),
        }
    }
}

/// EngageLab's part of `--demo`: an SMS account that drains through its thresholds, a healthy
/// SMS account with occasional internal errors, and an OTP account with occasional garbled
/// answers.
pub async fn demo() -> std::io::Result<DemoPart> {
    let sms = EngageLabSim::new(Product::Sms);
    let d = |units: i64, scale: u32| Decimal::new(units, scale);
    // total 125, warning 100 after ~62 s, critical 20 after ~262 s.
    sms.add_account(
        "demo-sms-main",
        SimAccount::new(
            "demo-secret-sms-main",
            Ledger::draining(d(120, 0), d(4, 1), Some(Decimal::ZERO)),
            Ledger::fixed(d(5, 0)),
        ),
    );
    let mut marketing = SimAccount::new(
        "demo-secret-sms-marketing",
        Ledger::draining(d(4800, 0), d(2, 3), None),
        Ledger::fixed(d(200, 0)),
    );
    marketing.faults.every(7, Fault::code("1000"));
    sms.add_account("demo-sms-marketing", marketing);

    let otp = EngageLabSim::new(Product::Otp);
    let mut otp_main = SimAccount::new(
        "demo-secret-otp-main",
        Ledger::fixed(d(8504500, 4)),
        Ledger::fixed(d(25, 0)),
    );
    otp_main.faults.every(11, Fault::Malformed);
    otp.add_account("demo-otp-main", otp_main);
    let sms_server = sms.start().await?;
    let otp_server = otp.start().await?;

    let accounts_yaml = format!(
        r#"
  - name: sms-main
    provider: engagelab
    product: sms
    base_url: {sms}
    dev_key: demo-sms-main
    dev_secret: demo-secret-sms-main
    currency: USD
    thresholds:
      - warning: 100
        critical: 20
  - name: sms-marketing
    provider: engagelab
    product: sms
    base_url: {sms}
    dev_key: demo-sms-marketing
    dev_secret: demo-secret-sms-marketing
    thresholds:
      - warning: 500
        critical: 100
  - name: otp-main
    provider: engagelab
    product: otp
    base_url: {otp}
    dev_key: demo-otp-main
    dev_secret: demo-secret-otp-main
    thresholds:
      - warning: 200
        critical: 50
"#,
        sms = sms_server.base_url(),
        otp = otp_server.base_url()
    );
    Ok(DemoPart {
        servers: vec![sms_server, otp_server],
        accounts_yaml,
    })
}
