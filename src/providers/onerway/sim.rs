//! Onerway in the simulator: the balance and overview calls on configurable paths (the public
//! documentation does not show the real ones), enforcing the `apikey` header, unique
//! `requestId`s (a reused one gets 40006) and a `requestTime` within 10 minutes. Each account
//! answers in either success envelope, with codes as strings or numbers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;

use super::code_name;
use crate::sim::{
    DemoPart, Fault, FaultPlan, Ledger, SimClock, SimHandler, SimRequest, SimResponse, SimServer,
    TimeWindow, lock, neutral_fault,
};

/// How far `requestTime` may be from Onerway's clock.
pub const TIME_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Which of the two documented success envelopes an account answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// `{"code":"200","message":"success","data":{...}}` (the balance pages).
    Code200,
    /// `{"respCode":"20000","respMsg":"Success","data":{...}}` (the account-service setup page).
    RespCode20000,
}

/// One currency of a simulated account. The total is available + on hold + deposit.
#[derive(Debug, Clone)]
pub struct SimCurrency {
    pub available: Ledger,
    pub withdrawable: Ledger,
    pub on_hold: Ledger,
    pub deposit: Ledger,
    pub status: String,
}

impl SimCurrency {
    /// `available` with nothing on hold or deposited, all of it withdrawable, `ACTIVE`.
    pub fn simple(available: Decimal) -> Self {
        SimCurrency {
            available: Ledger::fixed(available),
            withdrawable: Ledger::fixed(available),
            on_hold: Ledger::fixed(Decimal::ZERO),
            deposit: Ledger::fixed(Decimal::ZERO),
            status: "ACTIVE".to_owned(),
        }
    }
}

/// Answers that look like a success and are not (issue 11), request by request. An error
/// under HTTP 200 needs none: `Fault::code("40003")` already answers with status 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerFault {
    /// The success envelope without `data`.
    SuccessWithoutData,
    /// `{}` under HTTP 200.
    EmptyObject,
    /// A balance call answered with the data of this currency, whatever was asked.
    WrongCurrency(String),
    /// A hostile or buggy gateway: an error under HTTP 200 whose code field is the request's
    /// `apikey` and whose message echoes it. Counted as `redacted`, the key nowhere.
    EchoApikey,
}

/// One simulated Onerway merchant, by apikey.
#[derive(Debug, Clone)]
pub struct SimAccount {
    pub currencies: Vec<(String, SimCurrency)>,
    pub envelope: Envelope,
    /// Codes as JSON numbers (`"code":200`) instead of strings.
    pub numeric_codes: bool,
    /// USD per unit of each currency, for the overview's converted total (1 when absent).
    pub usd_rates: Vec<(String, Decimal)>,
    /// Successes replaced by a misleading answer, request by request.
    pub answer_faults: FaultPlan<AnswerFault>,
    pub faults: FaultPlan,
}

impl SimAccount {
    pub fn new(currencies: Vec<(&str, SimCurrency)>) -> Self {
        SimAccount {
            currencies: currencies
                .into_iter()
                .map(|(c, b)| (c.to_owned(), b))
                .collect(),
            envelope: Envelope::RespCode20000,
            numeric_codes: false,
            usd_rates: Vec::new(),
            answer_faults: FaultPlan::default(),
            faults: FaultPlan::default(),
        }
    }

    fn usd_rate(&self, currency: &str) -> Decimal {
        self.usd_rates
            .iter()
            .find(|(c, _)| c == currency)
            .map(|(_, r)| *r)
            .unwrap_or(Decimal::ONE)
    }

    /// The sum of every currency's total converted into `display`, to 2 decimals.
    pub fn overview_total(&self, display: &str) -> Decimal {
        let usd: Decimal = self
            .currencies
            .iter()
            .map(|(c, b)| total(b) * self.usd_rate(c))
            .sum();
        (usd / self.usd_rate(display)).round_dp(2)
    }
}

fn total(b: &SimCurrency) -> Decimal {
    b.available.amount(2) + b.on_hold.amount(2) + b.deposit.amount(2)
}

/// The Onerway account service.
pub struct OnerwaySim {
    balance_path: String,
    overview_path: String,
    accounts: Mutex<HashMap<String, SimAccount>>,
    request_ids: Mutex<HashSet<String>>,
    clock: SimClock,
}

impl OnerwaySim {
    pub fn new(balance_path: &str, overview_path: &str) -> Arc<Self> {
        Arc::new(OnerwaySim {
            balance_path: balance_path.to_owned(),
            overview_path: overview_path.to_owned(),
            accounts: Mutex::new(HashMap::new()),
            request_ids: Mutex::new(HashSet::new()),
            clock: SimClock::default(),
        })
    }

    /// Puts Onerway's clock `seconds` ahead of the real one (behind if negative): its `Date`
    /// header and its `requestTime` window move with it.
    pub fn set_clock_offset(&self, seconds: i64) {
        self.clock.set_offset(seconds);
    }

    pub fn add_account(&self, apikey: &str, account: SimAccount) {
        lock(&self.accounts).insert(apikey.to_owned(), account);
    }

    /// Changes an account's state (balances, envelope, faults) in place.
    pub fn update(&self, apikey: &str, change: impl FnOnce(&mut SimAccount)) {
        if let Some(account) = lock(&self.accounts).get_mut(apikey) {
            change(account);
        }
    }

    pub async fn start(self: &Arc<Self>) -> std::io::Result<SimServer> {
        SimServer::start(self.clone()).await
    }
}

/// A code as the account writes codes: `"40006"` or `40006`.
fn code_json(code: &str, numeric: bool) -> String {
    match code.parse::<i64>() {
        Ok(n) if numeric => n.to_string(),
        _ => format!("{code:?}"),
    }
}

/// An answer in the account's envelope: success with `data`, or the error `code`.
fn answer(style: Envelope, numeric: bool, result: Result<String, &str>) -> SimResponse {
    let (code, text, data) = match (&result, style) {
        (Ok(data), Envelope::Code200) => ("200", "success", data.as_str()),
        (Ok(data), Envelope::RespCode20000) => ("20000", "Success", data.as_str()),
        (Err(code), _) => (*code, code_name(code).unwrap_or("ERROR"), "null"),
    };
    let (code_key, text_key) = match style {
        Envelope::Code200 => ("code", "message"),
        Envelope::RespCode20000 => ("respCode", "respMsg"),
    };
    SimResponse::json(
        200,
        format!(
            r#"{{"{code_key}":{},"{text_key}":"{text}","data":{data}}}"#,
            code_json(code, numeric)
        ),
    )
}

fn currency_json(currency: &str, b: &SimCurrency) -> String {
    format!(
        r#"{{"currency":"{currency}","withdrawableBalance":"{:.2}","availableBalance":"{:.2}","fundOnHold":"{:.2}","depositBalance":"{:.2}","totalBalance":"{:.2}","status":"{}"}}"#,
        b.withdrawable.amount(2),
        b.available.amount(2),
        b.on_hold.amount(2),
        b.deposit.amount(2),
        total(b),
        b.status
    )
}

/// What a request body asks: its id, time and the currency fields.
struct Asked {
    request_id: String,
    request_time: i64,
    currency: Option<String>,
    display_currency: Option<String>,
}

fn parse_request(body: &[u8]) -> Option<Asked> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let request_id = text("requestId").filter(|id| !id.trim().is_empty())?;
    Some(Asked {
        request_id,
        request_time: value.get("requestTime")?.as_i64()?,
        currency: text("currency"),
        display_currency: text("displayCurrency"),
    })
}

impl OnerwaySim {
    fn data(
        &self,
        path: &str,
        account: &SimAccount,
        asked: &Asked,
    ) -> Result<String, &'static str> {
        if path == self.balance_path {
            let currency = asked.currency.as_deref().ok_or("40001")?;
            let (_, b) = account
                .currencies
                .iter()
                .find(|(c, _)| c == currency)
                .ok_or("40004")?;
            return Ok(currency_json(currency, b));
        }
        let display = asked.display_currency.as_deref().unwrap_or("USD");
        let entries: Vec<String> = account
            .currencies
            .iter()
            .map(|(c, b)| currency_json(c, b))
            .collect();
        Ok(format!(
            r#"{{"totalAmount":"{:.2}","displayCurrency":"{display}","currencyBalances":[{}]}}"#,
            account.overview_total(display),
            entries.join(",")
        ))
    }
}

#[async_trait::async_trait]
impl SimHandler for OnerwaySim {
    async fn handle(&self, request: &SimRequest) -> SimResponse {
        self.answer(request)
            .await
            .with_header("date", self.clock.http_date())
    }
}

impl OnerwaySim {
    async fn answer(&self, request: &SimRequest) -> SimResponse {
        let known_path = request.path == self.balance_path || request.path == self.overview_path;
        if !known_path || request.method != "POST" {
            return SimResponse::json(404, r#"{"status":404,"error":"Not Found"}"#);
        }
        let apikey = request.header("apikey").unwrap_or("");
        let Some(account) = lock(&self.accounts).get(apikey).cloned() else {
            return answer(Envelope::RespCode20000, false, Err("40003"));
        };
        let (style, numeric) = (account.envelope, account.numeric_codes);
        let reply = |result| answer(style, numeric, result);
        let Some(asked) = parse_request(&request.body) else {
            return reply(Err("40001"));
        };
        if !lock(&self.request_ids).insert(asked.request_id.clone()) {
            return reply(Err("40006"));
        }
        if self.clock.time_window(asked.request_time, TIME_WINDOW) != TimeWindow::Inside {
            return reply(Err("40002"));
        }
        let fault = lock(&self.accounts)
            .get_mut(apikey)
            .and_then(|a| a.faults.take());
        if let Some(fault) = fault {
            if let Fault::Code { code, status } = &fault {
                let mut response = answer(style, numeric, Err(code));
                response.status = status.unwrap_or(200);
                return response;
            }
            if let Some(response) = neutral_fault(&fault).await {
                return response;
            }
        }
        // Read the balances after any latency, as of when the answer is written.
        let account = lock(&self.accounts).get(apikey).cloned().unwrap_or(account);
        let answer_fault = lock(&self.accounts)
            .get_mut(apikey)
            .and_then(|a| a.answer_faults.take());
        match answer_fault {
            None => reply(self.data(&request.path, &account, &asked)),
            Some(AnswerFault::EmptyObject) => SimResponse::json(200, "{}"),
            Some(AnswerFault::SuccessWithoutData) => {
                let (code, text) = match style {
                    Envelope::Code200 => ("code", "message"),
                    Envelope::RespCode20000 => ("respCode", "respMsg"),
                };
                let value = code_json(
                    if style == Envelope::Code200 {
                        "200"
                    } else {
                        "20000"
                    },
                    numeric,
                );
                SimResponse::json(200, format!(r#"{{"{code}":{value},"{text}":"Success"}}"#))
            }
            Some(AnswerFault::EchoApikey) => {
                let (code, text) = match style {
                    Envelope::Code200 => ("code", "message"),
                    Envelope::RespCode20000 => ("respCode", "respMsg"),
                };
                let body = serde_json::json!({
                    code: apikey,
                    text: format!("apikey {apikey} is not allowed"),
                });
                SimResponse::json(200, body.to_string())
            }
            Some(AnswerFault::WrongCurrency(other)) => {
                let b = account
                    .currencies
                    .first()
                    .map(|(_, b)| b.clone())
                    .unwrap_or_else(|| SimCurrency::simple(Decimal::ONE));
                reply(Ok(currency_json(&other, &b)))
            }
        }
    }
}

/// Onerway's part of `--demo`: an overview account in three currencies, with now and then a
/// failed request that the exporter retries.
pub async fn demo() -> std::io::Result<DemoPart> {
    const BALANCE_PATH: &str = "/demo/account/balance";
    const OVERVIEW_PATH: &str = "/demo/account/balance/overview";
    let sim = OnerwaySim::new(BALANCE_PATH, OVERVIEW_PATH);
    let d = |units: i64, scale: u32| Decimal::new(units, scale);
    let mut usd = SimCurrency::simple(d(1_825_040, 2));
    usd.available = Ledger::draining(d(1_825_040, 2), d(12, 2), None);
    usd.withdrawable = Ledger::draining(d(1_500_000, 2), d(12, 2), None);
    usd.on_hold = Ledger::fixed(d(310_000, 2));
    usd.deposit = Ledger::fixed(d(500_000, 2));
    let mut eur = SimCurrency::simple(d(942_317, 2));
    eur.withdrawable = Ledger::fixed(d(900_000, 2));
    let mut gbp = SimCurrency::simple(d(0, 2));
    gbp.status = "INACTIVE".to_owned();
    let mut account = SimAccount::new(vec![("USD", usd), ("EUR", eur), ("GBP", gbp)]);
    account.usd_rates = vec![("EUR".into(), d(108, 2)), ("GBP".into(), d(127, 2))];
    account.faults.every(19, Fault::code("40005"));
    sim.add_account("demo-onerway-apikey", account);
    let server = sim.start().await?;
    let accounts_yaml = format!(
        r#"
  - name: onerway-main
    provider: onerway
    base_url: {base}
    overview_path: {OVERVIEW_PATH}
    apikey: demo-onerway-apikey
    display_currency: USD
    thresholds:
      - currency: USD
        warning: 5000
        critical: 1000
"#,
        base = server.base_url()
    );
    Ok(DemoPart {
        servers: vec![server],
        accounts_yaml,
    })
}
