//! PayBy in the simulator: `POST /sgs/api/member/getBalance`, enforcing what PayBy enforces:
//! the request's `sign` must verify over the raw body with the merchant's public key, and
//! `requestTime` must be within 15 minutes. Answers are signed with the simulator's PayBy key,
//! or, on request, signed wrongly, tampered with after signing, or not signed at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;

use super::keys::{SigningKey, VerifyingKey};
use super::{BALANCE_PATH, is_generic_gateway_code, wire_code};
use crate::sim::{
    DemoPart, Fault, FaultPlan, Ledger, SimClock, SimHandler, SimRequest, SimResponse, SimServer,
    TimeWindow, lock, neutral_fault,
};

/// How far `requestTime` may be from PayBy's clock.
pub const TIME_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The test-only key pairs of `testdata/payby/` (never used anywhere real): the simulator's
/// PayBy key and the demo merchant's key.
pub const TEST_PAYBY_PRIVATE_KEY: &str =
    include_str!("../../../testdata/payby/payby_private_key.pem");
pub const TEST_PAYBY_PUBLIC_KEY: &str =
    include_str!("../../../testdata/payby/payby_public_key.pem");
pub const TEST_MERCHANT_PRIVATE_KEY: &str =
    include_str!("../../../testdata/payby/merchant_private_key_pkcs8.pem");
pub const TEST_MERCHANT_PUBLIC_KEY: &str =
    include_str!("../../../testdata/payby/merchant_public_key.pem");

/// How the simulator signs its answers for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// A valid `sign` over the body sent.
    Valid,
    /// No `sign` header.
    Omitted,
    /// A well-formed signature of other bytes.
    Wrong,
    /// Signed, then the body changed (an amount inflated): what a man in the middle does.
    Tampered,
    /// Generic gateway errors unsigned (as PayBy may send them), everything else valid.
    GatewayErrorsUnsigned,
}

/// Answers to a balance call that look right and are not (issue 11), request by request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerFault {
    /// A correctly signed SUCCESS head without `body`: no balance in it.
    SuccessWithoutBody,
    /// A correctly signed balance answer for this currency, whatever was asked.
    WrongCurrency(String),
    /// An unsigned generic gateway error with this `head.code` and a documented `msg`
    /// (`5801` with `UNAUTHORIZED`, say): what anyone on the path could write.
    UnsignedGatewayError { code: String, msg: String },
}

/// One simulated PayBy merchant, by partner id.
#[derive(Debug, Clone)]
pub struct SimAccount {
    /// The merchant public key PayBy holds to check request signatures.
    pub merchant_key: VerifyingKey,
    pub member_id: String,
    /// Balances held, in the order PayBy lists them.
    pub balances: Vec<(String, Ledger)>,
    /// List every held currency on every call, not only the one asked for.
    pub list_all: bool,
    pub signing: Signing,
    /// Balance answers signed otherwise than `signing` says, request by request.
    pub signing_faults: FaultPlan<Signing>,
    /// Balance answers replaced by a misleading one, request by request.
    pub answer_faults: FaultPlan<AnswerFault>,
    pub faults: FaultPlan,
}

impl SimAccount {
    pub fn new(merchant_key: VerifyingKey, balances: Vec<(&str, Ledger)>) -> Self {
        SimAccount {
            merchant_key,
            member_id: "200000030907".to_owned(),
            balances: balances
                .into_iter()
                .map(|(c, l)| (c.to_owned(), l))
                .collect(),
            list_all: false,
            signing: Signing::Valid,
            signing_faults: FaultPlan::default(),
            answer_faults: FaultPlan::default(),
            faults: FaultPlan::default(),
        }
    }
}

/// The PayBy API.
pub struct PayBySim {
    key: SigningKey,
    accounts: Mutex<HashMap<String, SimAccount>>,
    trace: AtomicU64,
    clock: SimClock,
}

impl PayBySim {
    /// A simulator that signs its answers with `key` (PayBy's private key).
    pub fn new(key: SigningKey) -> Arc<Self> {
        Arc::new(PayBySim {
            key,
            accounts: Mutex::new(HashMap::new()),
            trace: AtomicU64::new(375_000),
            clock: SimClock::default(),
        })
    }

    /// Puts PayBy's clock `seconds` ahead of the real one (behind if negative): its `Date`
    /// header and its `requestTime` window move with it.
    pub fn set_clock_offset(&self, seconds: i64) {
        self.clock.set_offset(seconds);
    }

    pub fn add_account(&self, partner_id: &str, account: SimAccount) {
        lock(&self.accounts).insert(partner_id.to_owned(), account);
    }

    /// Changes an account's state (balances, signing, faults) in place.
    pub fn update(&self, partner_id: &str, change: impl FnOnce(&mut SimAccount)) {
        if let Some(account) = lock(&self.accounts).get_mut(partner_id) {
            change(account);
        }
    }

    pub async fn start(self: &Arc<Self>) -> std::io::Result<SimServer> {
        SimServer::start(self.clone()).await
    }

    fn head(&self, apply_status: &str, msg: &str) -> String {
        let code = wire_code(msg).unwrap_or("500");
        let success = msg == "SUCCESS";
        let trace = self.trace.fetch_add(1, Ordering::Relaxed);
        format!(
            r#"{{"applyStatus":"{apply_status}","code":"{code}","msg":"{msg}","success":{success},"traceCode":"{trace}"}}"#
        )
    }

    /// An answer carrying `msg` (a documented code), signed as `signing` says.
    fn error(&self, signing: Signing, status: u16, apply_status: &str, msg: &str) -> SimResponse {
        let body = format!(r#"{{"head":{}}}"#, self.head(apply_status, msg));
        let generic = is_generic_gateway_code(wire_code(msg).unwrap_or("500"));
        let signing = match signing {
            Signing::GatewayErrorsUnsigned if generic => Signing::Omitted,
            other => other,
        };
        self.signed(signing, status, body)
    }

    fn signed(&self, signing: Signing, status: u16, body: String) -> SimResponse {
        let sign = match signing {
            Signing::Omitted => None,
            Signing::Valid | Signing::Tampered | Signing::GatewayErrorsUnsigned => {
                self.key.sign(body.as_bytes()).ok()
            }
            Signing::Wrong => self.key.sign(format!("{body} ").as_bytes()).ok(),
        };
        let body = if signing == Signing::Tampered {
            tamper(&body)
        } else {
            body
        };
        let response = SimResponse::json(status, body);
        match sign {
            Some(sign) => response.with_header("sign", sign),
            None => response,
        }
    }

    fn balances(&self, account: &SimAccount, currency: &str, signing: Signing) -> SimResponse {
        let entries: Vec<String> = account
            .balances
            .iter()
            .filter(|(c, _)| account.list_all || c == currency)
            .map(|(c, ledger)| {
                format!(
                    r#"{{"availableBalance":{{"amount":{},"currency":"{c}"}}}}"#,
                    ledger.amount(2)
                )
            })
            .collect();
        let body = format!(
            r#"{{"body":{{"balanceList":[{}],"memberId":"{}"}},"head":{}}}"#,
            entries.join(","),
            account.member_id,
            self.head("SUCCESS", "SUCCESS")
        );
        self.signed(signing, 200, body)
    }
}

/// The body with its first amount inflated (or, without one, its trace code changed).
fn tamper(body: &str) -> String {
    if body.contains(r#""amount":"#) {
        body.replacen(r#""amount":"#, r#""amount":1"#, 1)
    } else {
        body.replacen(r#""traceCode":""#, r#""traceCode":"9"#, 1)
    }
}

/// `currencyCode` and `requestTime` of a request body, if it has both.
fn parse_request(body: &[u8]) -> Option<(String, i64)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let currency = value.get("bizContent")?.get("currencyCode")?.as_str()?;
    let time = value.get("requestTime")?.as_i64()?;
    Some((currency.to_owned(), time))
}

#[async_trait::async_trait]
impl SimHandler for PayBySim {
    async fn handle(&self, request: &SimRequest) -> SimResponse {
        self.answer(request)
            .await
            .with_header("date", self.clock.http_date())
    }
}

impl PayBySim {
    async fn answer(&self, request: &SimRequest) -> SimResponse {
        if request.path != BALANCE_PATH || request.method != "POST" {
            // The gateway's own answer: generic, unsigned.
            let body = format!(
                r#"{{"head":{}}}"#,
                self.head("FAIL", "SERVICE_NOT_AVAILABLE")
            );
            return SimResponse::json(404, body);
        }
        let partner = request.header("partner-id").unwrap_or("").to_owned();
        let Some(account) = lock(&self.accounts).get(&partner).cloned() else {
            return self.error(Signing::Valid, 200, "FAIL", "UNAUTHORIZED");
        };
        let signing = account.signing;
        let signed_by_merchant = request
            .header("sign")
            .is_some_and(|sign| account.merchant_key.verify(&request.body, sign));
        if !signed_by_merchant {
            // PayBy could not verify the request's signature.
            return self.error(signing, 200, "ERROR", "UNAUTHORIZED");
        }
        let json = request
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"));
        let Some((currency, request_time)) = parse_request(&request.body).filter(|_| json) else {
            return self.error(signing, 200, "FAIL", "INVALID_PARAMETER");
        };
        match self.clock.time_window(request_time, TIME_WINDOW) {
            TimeWindow::Inside => {}
            TimeWindow::TooEarly => {
                return self.error(signing, 200, "FAIL", "REQUESTTIME_TOO_EARLY");
            }
            TimeWindow::TooLate => {
                return self.error(signing, 200, "FAIL", "REQUESTTIME_TOO_LATER");
            }
        }
        let fault = lock(&self.accounts)
            .get_mut(&partner)
            .and_then(|a| a.faults.take());
        if let Some(fault) = fault {
            if let Fault::Code { code, status } = &fault {
                return self.error(signing, status.unwrap_or(200), "FAIL", code);
            }
            if let Some(response) = neutral_fault(&fault).await {
                return response;
            }
        }
        if !crate::fields::is_currency_code(&currency) {
            return self.error(signing, 200, "FAIL", "CURRENCY_CODE_NOT_SUPPORTED");
        }
        // Read the balances after any latency, as of when the answer is written.
        let account = lock(&self.accounts)
            .get(&partner)
            .cloned()
            .unwrap_or(account);
        let signing = lock(&self.accounts)
            .get_mut(&partner)
            .and_then(|a| a.signing_faults.take())
            .unwrap_or(signing);
        let answer_fault = lock(&self.accounts)
            .get_mut(&partner)
            .and_then(|a| a.answer_faults.take());
        match answer_fault {
            None => self.balances(&account, &currency, signing),
            Some(AnswerFault::SuccessWithoutBody) => {
                let body = format!(r#"{{"head":{}}}"#, self.head("SUCCESS", "SUCCESS"));
                self.signed(signing, 200, body)
            }
            Some(AnswerFault::WrongCurrency(other)) => {
                let amount = account
                    .balances
                    .iter()
                    .find(|(c, _)| *c == currency)
                    .map(|(_, l)| l.amount(2))
                    .unwrap_or(Decimal::ONE);
                let body = format!(
                    r#"{{"body":{{"balanceList":[{{"availableBalance":{{"amount":{amount},"currency":"{other}"}}}}],"memberId":"{}"}},"head":{}}}"#,
                    account.member_id,
                    self.head("SUCCESS", "SUCCESS")
                );
                self.signed(signing, 200, body)
            }
            Some(AnswerFault::UnsignedGatewayError { code, msg }) => {
                let trace = self.trace.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    r#"{{"head":{{"applyStatus":"FAIL","code":"{code}","msg":"{msg}","success":false,"traceCode":"{trace}"}}}}"#
                );
                SimResponse::json(200, body)
            }
        }
    }
}

/// A PEM key as a YAML block scalar under a key indented by four spaces.
fn yaml_block(pem: &str) -> String {
    let mut out = String::from("|\n");
    for line in pem.trim().lines() {
        out.push_str("      ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// PayBy's part of `--demo`: a healthy merchant with AED and USD balances and, rarely, a rate
/// limit that the exporter backs off from and retries.
pub async fn demo() -> std::io::Result<DemoPart> {
    let invalid = |e: String| std::io::Error::other(format!("demo PayBy key: {e}"));
    let sim = PayBySim::new(SigningKey::from_pem(TEST_PAYBY_PRIVATE_KEY).map_err(invalid)?);
    let merchant = VerifyingKey::from_text(TEST_MERCHANT_PUBLIC_KEY).map_err(invalid)?;
    let mut account = SimAccount::new(
        merchant,
        vec![
            (
                "AED",
                Ledger::draining(Decimal::new(89_799_388, 2), Decimal::new(35, 2), None),
            ),
            ("USD", Ledger::fixed(Decimal::new(2_450_000, 2))),
        ],
    );
    // One rate limit early on (the sixth request), then one every 600 requests: about every
    // 25 minutes at the demo's 5 s interval, rare enough not to look like "keeps coming"
    // (the BalanceProviderRateLimited alert). The retry succeeds within the poll.
    account.faults.next(Fault::Latency(Duration::ZERO), 5);
    account.faults.next(Fault::code("RATE_LIMIT_REJECT"), 1);
    account.faults.every(600, Fault::code("RATE_LIMIT_REJECT"));
    sim.add_account("200000018128", account);
    let server = sim.start().await?;
    let accounts_yaml = format!(
        r#"
  - name: payby-ae
    provider: payby
    environment: uat
    base_url: {base}
    partner_id: "200000018128"
    private_key: {private_key}    payby_public_key: {public_key}    currencies: [AED, USD]
    thresholds:
      - currency: AED
        warning: 100000
        critical: 25000
      - currency: USD
        warning: 5000
"#,
        base = server.base_url(),
        private_key = yaml_block(TEST_MERCHANT_PRIVATE_KEY),
        public_key = yaml_block(TEST_PAYBY_PUBLIC_KEY),
    );
    Ok(DemoPart {
        servers: vec![server],
        accounts_yaml,
    })
}
