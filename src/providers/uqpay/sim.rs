//! UQPay in the simulator, under `/api` as the real bases are: the token endpoint with a
//! single active token per client (**enforced**: a new mint invalidates the previous token)
//! and a configurable lifetime, balance calls that accept only `x-auth-token: Bearer <token>`
//! (**enforced**), the paginated list with its required parameters, per-currency balances,
//! sub-accounts behind `x-on-behalf-of`, rate limits on the token endpoint and on
//! authenticated calls (429 with `Retry-After`), `x-idempotency-key` checks (a UUIDv4; a
//! reused key replays the first answer, as the real API does for 24 h), and every error shape
//! of `providers.md`: `{"type","code","message"}` with a string or numeric code, the auth
//! gateway's `{"error","message"}`, and non-JSON bodies.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rust_decimal::Decimal;
use tokio::time::Instant;

use super::{FIELDS, PAGE_SIZE};
use crate::sim::{
    DemoPart, Fault, FaultPlan, Ledger, SimHandler, SimRequest, SimResponse, SimServer, lock,
    neutral_fault,
};

/// The path every route hangs under (the real bases end in `/api`).
pub const PREFIX: &str = "/api";
const TOKEN_PATH: &str = "/api/v1/connect/token";
const LIST_PATH: &str = "/api/v2/payment/balances";

/// One currency's balance. A kind missing from `amounts` is missing on the wire; `None` is
/// written as `null`.
#[derive(Debug, Clone)]
pub struct SimBalance {
    pub currency: String,
    pub amounts: BTreeMap<&'static str, Option<Ledger>>,
}

impl SimBalance {
    /// `available` as given, `payable` the same, the other kinds zero.
    pub fn new(currency: &str, available: Ledger) -> Self {
        let mut amounts = BTreeMap::new();
        for (kind, _) in FIELDS {
            let amount = match kind {
                "available" | "payable" => available.clone(),
                _ => Ledger::fixed(Decimal::ZERO),
            };
            amounts.insert(kind, Some(amount));
        }
        SimBalance {
            currency: currency.to_owned(),
            amounts,
        }
    }

    /// Sets one kind: `Some` an amount, `None` a JSON `null`.
    pub fn with(mut self, kind: &'static str, amount: Option<Ledger>) -> Self {
        self.amounts.insert(kind, amount);
        self
    }

    /// Leaves one kind out of the answer.
    pub fn without(mut self, kind: &str) -> Self {
        self.amounts.remove(kind);
        self
    }

    fn json(&self) -> String {
        let mut out = format!(
            r#"{{"balance_id":"bal-{}","currency":"{}""#,
            self.currency.to_ascii_lowercase(),
            self.currency
        );
        for (kind, field) in FIELDS {
            match self.amounts.get(kind) {
                None => {}
                Some(None) => out.push_str(&format!(r#","{field}":null"#)),
                Some(Some(ledger)) => {
                    let mut amount = ledger.amount(2);
                    amount.rescale(2);
                    out.push_str(&format!(r#","{field}":"{amount}""#));
                }
            }
        }
        out.push('}');
        out
    }
}

/// Requests admitted per sliding minute.
#[derive(Debug, Clone)]
struct RateWindow {
    per_minute: u32,
    recent: VecDeque<Instant>,
}

impl RateWindow {
    fn new(per_minute: u32) -> Self {
        RateWindow {
            per_minute,
            recent: VecDeque::new(),
        }
    }

    /// Admits a request now, or says how long until one would be.
    fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        const MINUTE: Duration = Duration::from_secs(60);
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.per_minute as usize {
            let oldest = self.recent.front().copied().unwrap_or(now);
            return Err(MINUTE.saturating_sub(now.saturating_duration_since(oldest)));
        }
        self.recent.push_back(now);
        Ok(())
    }
}

/// A UQPay answer that is wrong under HTTP 200 (balance calls). Drawn for requests that
/// [`SimClient::faults`] left alone, so that each one drawn is one answered.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyFault {
    /// `200 {}`: no balance and no list (counted as `no_balance`).
    NoBalance,
    /// List mode: the account seems to hold this many made-up currencies, 100 a page
    /// (counted as `too_many_currencies` past `max_currencies`). A single-currency request
    /// gets its normal answer.
    ManyCurrencies(usize),
    /// List mode: a page one entry longer than the `page_size` asked for (counted as
    /// `page_too_long`). A single-currency request gets its normal answer.
    PageTooLong,
    /// A hostile or buggy gateway: `401` whose `code` is the `x-auth-token` value as the
    /// request carries it and whose `message` echoes it, the client id and its api key.
    /// Counted as `redacted`, no credential anywhere.
    EchoCredentials,
}

/// The provider revoking a client's active token (an operator did, or a security system).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation;

/// Where a request comes in: each has its own rate limit and faults.
#[derive(Clone, Copy)]
enum Door {
    Token,
    Call,
}

/// One API client (client id): its key, token, balances and faults.
#[derive(Debug, Clone)]
pub struct SimClient {
    pub api_key: String,
    /// The main account's balances, in list order.
    pub balances: Vec<SimBalance>,
    /// Balances of sub-accounts, by the id `x-on-behalf-of` names.
    pub sub_accounts: HashMap<String, Vec<SimBalance>>,
    /// Faults of balance calls (after authentication).
    pub faults: FaultPlan,
    /// Faults of the token endpoint (after the credentials check).
    pub token_faults: FaultPlan,
    /// Balance calls whose token is revoked just as they arrive: they get a 401 and the
    /// token stays dead.
    pub revocations: FaultPlan<Revocation>,
    /// Wrong answers under HTTP 200 of balance calls.
    pub body_faults: FaultPlan<BodyFault>,
    /// Token mints answered with a credential echo: `401` whose `code` is the `x-api-key`
    /// sent and whose `message` echoes it with the client id. Counted as `redacted`.
    pub token_echoes: FaultPlan<()>,
    /// `Retry-After` sent with injected `too_many_requests` answers.
    pub retry_after: Option<String>,
    /// The active token and when it expires.
    token: Option<(String, Instant)>,
    mints: u64,
    token_limit: RateWindow,
    call_limit: RateWindow,
}

impl SimClient {
    pub fn new(api_key: &str, balances: Vec<SimBalance>) -> Self {
        SimClient {
            api_key: api_key.to_owned(),
            balances,
            sub_accounts: HashMap::new(),
            faults: FaultPlan::default(),
            token_faults: FaultPlan::default(),
            revocations: FaultPlan::default(),
            body_faults: FaultPlan::default(),
            token_echoes: FaultPlan::default(),
            retry_after: None,
            token: None,
            mints: 0,
            // The sandbox's limits: 60 mints and 500 authenticated calls a minute.
            token_limit: RateWindow::new(60),
            call_limit: RateWindow::new(500),
        }
    }

    /// Sets the token endpoint's limit (mints per minute).
    pub fn token_limit_per_minute(&mut self, n: u32) {
        self.token_limit.per_minute = n;
    }

    /// Sets the limit of authenticated calls per minute.
    pub fn call_limit_per_minute(&mut self, n: u32) {
        self.call_limit.per_minute = n;
    }
}

struct State {
    clients: HashMap<String, SimClient>,
    token_lifetime: Duration,
    max_page_size: u32,
    /// Answers by client and idempotency key, replayed when a key comes again.
    replays: HashMap<(String, String), (Instant, SimResponse)>,
    tokens_issued: u64,
}

/// The UQPay acquiring API.
pub struct UqPaySim {
    state: Mutex<State>,
}

impl UqPaySim {
    /// Tokens live 30 minutes, as in production; pages hold up to 100 entries.
    pub fn new() -> Arc<Self> {
        Arc::new(UqPaySim {
            state: Mutex::new(State {
                clients: HashMap::new(),
                token_lifetime: Duration::from_secs(30 * 60),
                max_page_size: PAGE_SIZE,
                replays: HashMap::new(),
                tokens_issued: 0,
            }),
        })
    }

    pub fn add_client(&self, client_id: &str, client: SimClient) {
        lock(&self.state)
            .clients
            .insert(client_id.to_owned(), client);
    }

    /// Changes a client's state (balances, faults, limits) in place.
    pub fn update(&self, client_id: &str, change: impl FnOnce(&mut SimClient)) {
        if let Some(client) = lock(&self.state).clients.get_mut(client_id) {
            change(client);
        }
    }

    /// How long tokens minted from now on live (whole seconds, at least one).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        lock(&self.state).token_lifetime = lifetime.max(Duration::from_secs(1));
    }

    /// Pages hold at most this many entries, whatever `page_size` asks for.
    pub fn set_max_page_size(&self, n: u32) {
        lock(&self.state).max_page_size = n.max(1);
    }

    /// Tokens minted through the token endpoint for `client_id`.
    pub fn mints(&self, client_id: &str) -> u64 {
        lock(&self.state)
            .clients
            .get(client_id)
            .map_or(0, |c| c.mints)
    }

    /// Mints a token the way another process with the same key would: the exporter's token
    /// stops working. Not counted in [`UqPaySim::mints`].
    pub fn mint_outside(&self, client_id: &str) {
        let mut state = lock(&self.state);
        let lifetime = state.token_lifetime;
        let value = new_token(&mut state, client_id);
        if let Some(client) = state.clients.get_mut(client_id) {
            client.token = Some((value, Instant::now() + lifetime));
        }
    }

    /// The token currently active for `client_id`, if any.
    pub fn active_token(&self, client_id: &str) -> Option<String> {
        lock(&self.state)
            .clients
            .get(client_id)?
            .token
            .as_ref()
            .map(|(t, _)| t.clone())
    }

    pub async fn start(self: &Arc<Self>) -> std::io::Result<SimServer> {
        SimServer::start(self.clone()).await
    }

    /// The `base_url` of a started simulator: its address and the `/api` prefix.
    pub fn base_url(server: &SimServer) -> String {
        format!("{}{PREFIX}", server.base_url())
    }

    /// What the rate limit or an injected fault answers instead of the normal answer (after
    /// any injected latency, `None`: answer normally).
    async fn interfere(&self, client_id: &str, door: Door) -> Option<SimResponse> {
        let (fault, retry_after) = {
            let mut state = lock(&self.state);
            let client = state.clients.get_mut(client_id)?;
            let (limit, faults) = match door {
                Door::Token => (&mut client.token_limit, &mut client.token_faults),
                Door::Call => (&mut client.call_limit, &mut client.faults),
            };
            if let Err(wait) = limit.admit(Instant::now()) {
                return Some(rate_limited(Some(retry_after_seconds(wait))));
            }
            (faults.take()?, client.retry_after.clone())
        };
        match &fault {
            Fault::Code { code, status } => Some(error_response(code, *status, retry_after)),
            _ => neutral_fault(&fault).await,
        }
    }

    async fn token(&self, request: &SimRequest) -> SimResponse {
        if request.method != "POST" {
            return standard(
                405,
                "invalid_request_error",
                "method_not_allowed",
                "use POST",
            );
        }
        // The front end refuses a POST that does not state its length.
        if request.header("content-length").is_none() {
            return SimResponse {
                headers: vec![("content-type".into(), "text/html".into())],
                ..SimResponse::json(
                    411,
                    "<html><head><title>411 Length Required</title></head><body><center><h1>411 Length Required</h1></center></body></html>",
                )
            };
        }
        let client_id = request.header("x-client-id").unwrap_or_default().to_owned();
        let api_key = request.header("x-api-key").unwrap_or_default();
        let known = lock(&self.state)
            .clients
            .get(&client_id)
            .is_some_and(|c| c.api_key == api_key);
        if !known {
            return standard(
                401,
                "unauthorized_error",
                "unauthorized",
                "invalid client id or api key",
            );
        }
        if let Some(response) = self.interfere(&client_id, Door::Token).await {
            return response;
        }
        let echo = lock(&self.state)
            .clients
            .get_mut(&client_id)
            .and_then(|c| c.token_echoes.take());
        if echo.is_some() {
            let body = serde_json::json!({
                "type": "unauthorized_error",
                "code": api_key,
                "message": format!("x-api-key {api_key} of client {client_id} refused"),
            });
            return SimResponse::json(401, body.to_string());
        }
        let mut state = lock(&self.state);
        let lifetime = state.token_lifetime;
        let value = new_token(&mut state, &client_id);
        let Some(client) = state.clients.get_mut(&client_id) else {
            return standard(401, "unauthorized_error", "unauthorized", "client removed");
        };
        // `expired_at` in whole seconds; the token dies exactly then.
        let now = SystemTime::now();
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let expired_at = since_epoch.as_secs() + lifetime.as_secs();
        let left = Duration::from_secs(expired_at).saturating_sub(since_epoch);
        client.token = Some((value.clone(), Instant::now() + left));
        client.mints += 1;
        SimResponse::json(
            200,
            format!(r#"{{"auth_token":"{value}","expired_at":{expired_at}}}"#),
        )
    }

    /// The client whose active token the request carries, or the 401 to answer.
    fn authenticate(&self, request: &SimRequest) -> Result<String, SimResponse> {
        let Some(header) = request.header("x-auth-token") else {
            let hint = if request.header("authorization").is_some() {
                "the token goes in x-auth-token, not Authorization"
            } else {
                "missing x-auth-token"
            };
            return Err(gateway(401, "invalid_token", hint));
        };
        let Some(token) = header
            .strip_prefix("Bearer ")
            .filter(|t| !t.is_empty() && !t.starts_with(' '))
        else {
            return Err(gateway(
                401,
                "invalid_token",
                "x-auth-token must be 'Bearer <token>'",
            ));
        };
        let state = lock(&self.state);
        let now = Instant::now();
        state
            .clients
            .iter()
            .find(|(_, c)| matches!(&c.token, Some((t, expires)) if t == token && now < *expires))
            .map(|(id, _)| id.clone())
            .ok_or_else(token_refused)
    }

    /// Revokes the client's token if its revocation plan says so now.
    fn revoke(&self, client_id: &str) -> bool {
        let mut state = lock(&self.state);
        let Some(client) = state.clients.get_mut(client_id) else {
            return false;
        };
        let revoked = client.revocations.take().is_some();
        if revoked {
            client.token = None;
        }
        revoked
    }

    async fn balances(&self, request: &SimRequest) -> SimResponse {
        if request.method != "GET" {
            return standard(
                405,
                "invalid_request_error",
                "method_not_allowed",
                "use GET",
            );
        }
        let client_id = match self.authenticate(request) {
            Ok(id) => id,
            Err(response) => return response,
        };
        if self.revoke(&client_id) {
            return token_refused();
        }
        // Required, a UUID; a reused one replays the answer it first got (the real API keeps
        // them 24 h).
        let Some(key) = request.header("x-idempotency-key").map(str::to_owned) else {
            return standard(
                400,
                "invalid_request_error",
                "invalid_idempotency_key",
                "x-idempotency-key is required",
            );
        };
        if !is_uuid_v4(&key) {
            return standard(
                400,
                "invalid_request_error",
                "invalid_idempotency_key",
                "x-idempotency-key must be a UUIDv4",
            );
        }
        let replay_key = (client_id.clone(), key);
        {
            let mut state = lock(&self.state);
            let now = Instant::now();
            state
                .replays
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < REPLAY_FOR);
            if let Some((_, replay)) = state.replays.get(&replay_key) {
                return replay.clone();
            }
        }
        if let Some(response) = self.interfere(&client_id, Door::Call).await {
            return response;
        }
        let body_fault = lock(&self.state)
            .clients
            .get_mut(&client_id)
            .and_then(|c| c.body_faults.take());
        let response = match body_fault {
            Some(BodyFault::NoBalance) => SimResponse::json(200, "{}"),
            Some(BodyFault::EchoCredentials) => {
                let token = request.header("x-auth-token").unwrap_or_default();
                let api_key = lock(&self.state)
                    .clients
                    .get(&client_id)
                    .map(|c| c.api_key.clone())
                    .unwrap_or_default();
                let body = serde_json::json!({
                    "type": "unauthorized_error",
                    "code": token,
                    "message": format!(
                        "x-auth-token {token} of client {client_id} (api key {api_key}) refused"
                    ),
                });
                SimResponse::json(401, body.to_string())
            }
            Some(BodyFault::ManyCurrencies(n)) if request.path == LIST_PATH => {
                let made_up: Vec<SimBalance> = (0..n).map(made_up_balance).collect();
                list_page(request, &made_up, PAGE_SIZE)
            }
            Some(BodyFault::PageTooLong) if request.path == LIST_PATH => {
                let made_up: Vec<SimBalance> =
                    (0..PAGE_SIZE as usize + 1).map(made_up_balance).collect();
                let data: Vec<String> = made_up.iter().map(SimBalance::json).collect();
                SimResponse::json(
                    200,
                    format!(
                        r#"{{"total_pages":1,"total_items":{},"data":[{}]}}"#,
                        data.len(),
                        data.join(",")
                    ),
                )
            }
            _ => self.balance_answer(request, &client_id),
        };
        lock(&self.state)
            .replays
            .insert(replay_key, (Instant::now(), response.clone()));
        response
    }

    /// The list or single-currency answer, read after any latency.
    fn balance_answer(&self, request: &SimRequest, client_id: &str) -> SimResponse {
        let state = lock(&self.state);
        let Some(client) = state.clients.get(client_id) else {
            return standard(401, "unauthorized_error", "unauthorized", "client removed");
        };
        let balances = match request.header("x-on-behalf-of") {
            None => &client.balances,
            Some("") => {
                return standard(
                    400,
                    "invalid_request_error",
                    "invalid_on_behalf_of",
                    "x-on-behalf-of must not be empty",
                );
            }
            Some(id) => match client.sub_accounts.get(id) {
                Some(balances) => balances,
                None => {
                    return standard(
                        400,
                        "invalid_request_error",
                        "not_found",
                        "no such sub-account",
                    );
                }
            },
        };
        if request.path == LIST_PATH {
            return list_page(request, balances, state.max_page_size);
        }
        let currency = request.path[LIST_PATH.len() + 1..].to_owned();
        match balances.iter().find(|b| b.currency == currency) {
            Some(balance) => SimResponse::json(200, balance.json()),
            None => standard(
                400,
                "invalid_request_error",
                "not_found",
                "no balance in this currency",
            ),
        }
    }
}

/// How long a used idempotency key replays its answer.
const REPLAY_FOR: Duration = Duration::from_secs(24 * 3600);

/// The `i`th of made-up currencies `AAA`, `AAB`... (not real ones), holding `i`.
fn made_up_balance(i: usize) -> SimBalance {
    let letter = |k: usize| char::from(b'A' + (k % 26) as u8);
    let code: String = [letter(i / 676), letter(i / 26), letter(i)]
        .iter()
        .collect();
    SimBalance::new(&code, Ledger::fixed(Decimal::from(i as u64)))
}

fn new_token(state: &mut State, client_id: &str) -> String {
    state.tokens_issued += 1;
    format!(
        "sim.{}.{}.{:016x}",
        client_id.len(),
        state.tokens_issued,
        rand::random::<u64>()
    )
}

/// A page of the list; `page_number` and `page_size` are required.
fn list_page(request: &SimRequest, balances: &[SimBalance], max_page_size: u32) -> SimResponse {
    let param = |name: &str| -> Result<u32, SimResponse> {
        let value = request.query_param(name).ok_or_else(|| {
            standard(
                400,
                "invalid_request_error",
                "invalid_parameter",
                &format!("{name} is required"),
            )
        })?;
        value.parse::<u32>().map_err(|_| {
            standard(
                400,
                "invalid_request_error",
                "invalid_parameter",
                &format!("{name} must be a positive integer"),
            )
        })
    };
    let (number, size) = match (param("page_number"), param("page_size")) {
        (Ok(number), Ok(size)) => (number, size),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    if number == 0 || size == 0 || size > PAGE_SIZE {
        return standard(
            400,
            "invalid_request_error",
            "invalid_parameter",
            "page_number starts at 1; page_size is 1 to 100",
        );
    }
    let size = size.min(max_page_size) as usize;
    let total_items = balances.len();
    let total_pages = total_items.div_ceil(size);
    let start = (number as usize - 1).saturating_mul(size);
    let data: Vec<String> = balances
        .iter()
        .skip(start)
        .take(size)
        .map(SimBalance::json)
        .collect();
    SimResponse::json(
        200,
        format!(
            r#"{{"total_pages":{total_pages},"total_items":{total_items},"data":[{}]}}"#,
            data.join(",")
        ),
    )
}

/// `{"type","code","message"}`, the usual error shape.
fn standard(status: u16, kind: &str, code: &str, message: &str) -> SimResponse {
    SimResponse::json(
        status,
        format!(r#"{{"type":"{kind}","code":"{code}","message":"{message}"}}"#),
    )
}

/// The answer to a token that is not (or no longer) the client's active one.
fn token_refused() -> SimResponse {
    standard(
        401,
        "unauthorized_error",
        "unauthorized",
        "the access token is expired or was replaced by a newer one",
    )
}

/// `{"error","message"}`, as the auth gateway answers.
fn gateway(status: u16, error: &str, message: &str) -> SimResponse {
    SimResponse::json(
        status,
        format!(r#"{{"error":"{error}","message":"{message}"}}"#),
    )
}

fn rate_limited(retry_after: Option<String>) -> SimResponse {
    let response = standard(
        429,
        "rate_limit_error",
        "too_many_requests",
        "too many requests, slow down",
    );
    match retry_after {
        Some(value) => response.with_header("retry-after", value),
        None => response,
    }
}

fn retry_after_seconds(wait: Duration) -> String {
    wait.as_secs_f64().ceil().max(1.0).to_string()
}

/// Codes answered in the auth gateway's shape.
const GATEWAY_CODES: &[&str] = &["invalid_token", "access_denied"];

/// The answer for an injected error `code`: documented codes with their status and shape, the
/// gateway's codes in its shape, numeric codes as JSON numbers. `status` overrides.
fn error_response(code: &str, status: Option<u16>, retry_after: Option<String>) -> SimResponse {
    let response = match code {
        "too_many_requests" => return rate_limited(retry_after),
        "unauthorized" => standard(401, "unauthorized_error", code, "unauthorized"),
        "not_found" => standard(400, "invalid_request_error", code, "not found"),
        "forbidden" => standard(
            403,
            "permission_error",
            code,
            "IP not allow-listed or wrong environment",
        ),
        _ if GATEWAY_CODES.contains(&code) => gateway(401, code, "rejected by the gateway"),
        _ if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) => SimResponse::json(
            400,
            format!(r#"{{"type":"api_error","code":{code},"message":"error {code}"}}"#),
        ),
        _ => standard(400, "api_error", code, "error"),
    };
    SimResponse {
        status: status.unwrap_or(response.status),
        ..response
    }
}

/// `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`, hex.
pub(crate) fn is_uuid_v4(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    lengths_ok
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b', 'A', 'B'])
}

#[async_trait::async_trait]
impl SimHandler for UqPaySim {
    async fn handle(&self, request: &SimRequest) -> SimResponse {
        let path = request.path.as_str();
        if path == TOKEN_PATH {
            return self.token(request).await;
        }
        let single = path
            .strip_prefix(LIST_PATH)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()));
        if path == LIST_PATH || single {
            return self.balances(request).await;
        }
        standard(404, "invalid_request_error", "not_found", "no such route")
    }
}

/// UQPay's part of `--demo`: one client whose main account holds five currencies, listed two
/// per page (three pages), and a sub-account read per currency through the same credentials,
/// so both share one token. Tokens live two minutes so refreshes show; one balance call in
/// 2,500 is rate-limited (retried after a second): at the demo's ~60 calls a minute that is
/// about every 40 minutes, so BalanceProviderRateLimited (errors in two 15-minute windows in a
/// row) never even goes pending.
pub async fn demo() -> std::io::Result<DemoPart> {
    let sim = UqPaySim::new();
    sim.set_token_lifetime(Duration::from_secs(120));
    sim.set_max_page_size(2);
    let d = |units: i64, scale: u32| Decimal::new(units, scale);
    let balance = |currency: &str, amount: i64, drain: Decimal| {
        SimBalance::new(
            currency,
            Ledger::draining(d(amount, 0), drain, Some(Decimal::ZERO)),
        )
    };
    let mut client = SimClient::new(
        "demo-uqpay-api-key",
        vec![
            balance("SGD", 250_000, d(125, 2))
                .with("pending", Some(Ledger::fixed(d(1_820_050, 2))))
                .with("reserved", Some(Ledger::fixed(d(5_000, 0)))),
            balance("USD", 180_000, d(8, 1)),
            balance("HKD", 920_000, d(3, 0)),
            balance("EUR", 64_000, d(2, 1)).with("frozen", Some(Ledger::fixed(d(1_250, 0)))),
            balance("GBP", 41_500, Decimal::ZERO).with("margin", None),
        ],
    );
    client.sub_accounts.insert(
        "demo-sub-merchant".to_owned(),
        vec![
            balance("SGD", 15_000, d(5, 2)),
            balance("USD", 9_800, d(2, 2)),
        ],
    );
    client.retry_after = Some("1".to_owned());
    client.faults.every(2500, Fault::code("too_many_requests"));
    sim.add_client("demo-uqpay", client);
    let server = sim.start().await?;
    let accounts_yaml = format!(
        r#"
  - name: uqpay-acq
    provider: uqpay
    environment: sandbox
    base_url: {url}
    client_id: demo-uqpay
    api_key: demo-uqpay-api-key
    thresholds:
      - currency: SGD
        warning: 20000
        critical: 5000
      - currency: USD
        warning: 10000
        critical: 2000
  - name: uqpay-sub
    provider: uqpay
    environment: sandbox
    base_url: {url}
    client_id: demo-uqpay
    api_key: demo-uqpay-api-key
    on_behalf_of: demo-sub-merchant
    currencies: [SGD, USD]
    thresholds:
      - currency: SGD
        warning: 2000
        critical: 500
"#,
        url = UqPaySim::base_url(&server)
    );
    Ok(DemoPart {
        servers: vec![server],
        accounts_yaml,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderMap, HeaderName, HeaderValue};

    fn request(
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &[(&str, &str)],
    ) -> SimRequest {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        SimRequest {
            method: method.into(),
            path: path.into(),
            query: query.map(str::to_owned),
            headers: map,
            body: Default::default(),
        }
    }

    fn body(response: &SimResponse) -> serde_json::Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    fn sim_with(balances: usize) -> Arc<UqPaySim> {
        let sim = UqPaySim::new();
        let list = (0..balances)
            .map(|i| {
                let code: String = [b'A' + (i / 26 % 26) as u8, b'A' + (i % 26) as u8, b'X']
                    .iter()
                    .map(|b| *b as char)
                    .collect();
                SimBalance::new(&code, Ledger::fixed(Decimal::from(i as i64)))
            })
            .collect();
        sim.add_client("c", SimClient::new("k", list));
        sim
    }

    async fn ask_for_token(sim: &UqPaySim) -> SimResponse {
        let credentials = [
            ("x-client-id", "c"),
            ("x-api-key", "k"),
            ("content-length", "0"),
        ];
        sim.handle(&request("POST", TOKEN_PATH, None, &credentials))
            .await
    }

    async fn mint(sim: &UqPaySim) -> String {
        let r = ask_for_token(sim).await;
        assert_eq!(r.status, 200);
        body(&r)["auth_token"].as_str().unwrap().to_owned()
    }

    /// A list call with a fresh idempotency key, unless `auth` names one.
    async fn list(sim: &UqPaySim, auth: &[(&str, &str)], query: &str) -> SimResponse {
        let key = super::super::new_idempotency_key();
        let mut headers = auth.to_vec();
        if !auth.iter().any(|(k, _)| *k == "x-idempotency-key") {
            headers.push(("x-idempotency-key", &key));
        }
        sim.handle(&request("GET", LIST_PATH, Some(query), &headers))
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn the_key_is_required_and_the_mint_needs_a_length() {
        let sim = sim_with(1);
        let auth = format!("Bearer {}", mint(&sim).await);
        let r = sim
            .handle(&request(
                "GET",
                LIST_PATH,
                Some("page_number=1&page_size=100"),
                &[("x-auth-token", &auth)],
            ))
            .await;
        assert_eq!(
            (r.status, body(&r)["code"].as_str()),
            (400, Some("invalid_idempotency_key"))
        );
        let no_length = [("x-client-id", "c"), ("x-api-key", "k")];
        let r = sim
            .handle(&request("POST", TOKEN_PATH, None, &no_length))
            .await;
        assert_eq!(r.status, 411);
        assert_eq!(sim.mints("c"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoked_token_stays_dead_until_a_new_one_is_minted() {
        let sim = sim_with(1);
        let q = "page_number=1&page_size=100";
        let bearer = format!("Bearer {}", mint(&sim).await);
        sim.update("c", |c| c.revocations.next(Revocation, 1));
        for _ in 0..2 {
            let r = list(&sim, &[("x-auth-token", &bearer)], q).await;
            assert_eq!(
                (r.status, body(&r)["code"].as_str()),
                (401, Some("unauthorized"))
            );
        }
        assert_eq!(sim.active_token("c"), None);
        let bearer = format!("Bearer {}", mint(&sim).await);
        assert_eq!(
            list(&sim, &[("x-auth-token", &bearer)], q).await.status,
            200
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_newest_token_works_and_only_as_bearer_in_x_auth_token() {
        let sim = sim_with(1);
        let q = "page_number=1&page_size=100";
        let first = mint(&sim).await;
        let bearer = format!("Bearer {first}");
        assert_eq!(
            list(&sim, &[("x-auth-token", &bearer)], q).await.status,
            200
        );
        for wrong in [
            vec![("x-auth-token", first.as_str())],
            vec![("authorization", bearer.as_str())],
            vec![("x-auth-token", &*format!("Bearer  {first}"))],
            vec![("x-auth-token", &*format!("bearer {first}"))],
        ] {
            let r = list(&sim, &wrong, q).await;
            assert_eq!(r.status, 401, "{wrong:?}");
            assert_eq!(body(&r)["error"], "invalid_token");
        }
        let second = mint(&sim).await;
        let r = list(&sim, &[("x-auth-token", &bearer)], q).await;
        assert_eq!(
            (r.status, body(&r)["code"].as_str()),
            (401, Some("unauthorized"))
        );
        let bearer = format!("Bearer {second}");
        assert_eq!(
            list(&sim, &[("x-auth-token", &bearer)], q).await.status,
            200
        );
        sim.mint_outside("c");
        assert_eq!(
            list(&sim, &[("x-auth-token", &bearer)], q).await.status,
            401
        );
        assert_eq!(sim.mints("c"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_expire_at_expired_at() {
        let sim = sim_with(1);
        sim.set_token_lifetime(Duration::from_secs(10));
        let token = mint(&sim).await;
        let auth = format!("Bearer {token}");
        let q = "page_number=1&page_size=100";
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(list(&sim, &[("x-auth-token", &auth)], q).await.status, 200);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(list(&sim, &[("x-auth-token", &auth)], q).await.status, 401);
    }

    #[tokio::test(start_paused = true)]
    async fn pages_need_both_parameters_and_split_the_list() {
        let sim = sim_with(5);
        sim.set_max_page_size(2);
        let auth = format!("Bearer {}", mint(&sim).await);
        let h = [("x-auth-token", auth.as_str())];
        for q in [
            "page_number=1",
            "page_size=100",
            "page_number=0&page_size=100",
            "page_number=1&page_size=101",
            "page_number=x&page_size=1",
        ] {
            let r = list(&sim, &h, q).await;
            assert_eq!(
                (r.status, body(&r)["code"].as_str()),
                (400, Some("invalid_parameter")),
                "{q}"
            );
        }
        let page = body(&list(&sim, &h, "page_number=3&page_size=100").await);
        assert_eq!(page["total_pages"], 3);
        assert_eq!(page["total_items"], 5);
        assert_eq!(page["data"].as_array().unwrap().len(), 1);
        assert_eq!(page["data"][0]["currency"], "AEX");
        assert_eq!(page["data"][0]["available_balance"], "4.00");
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_endpoint_is_rate_limited_with_retry_after() {
        let sim = sim_with(1);
        sim.update("c", |c| c.token_limit_per_minute(2));
        mint(&sim).await;
        tokio::time::advance(Duration::from_secs(20)).await;
        mint(&sim).await;
        let limited = ask_for_token(&sim).await;
        assert_eq!(limited.status, 429);
        assert_eq!(body(&limited)["code"], "too_many_requests");
        let retry_after = limited
            .headers
            .iter()
            .find(|(k, _)| k == "retry-after")
            .unwrap();
        assert_eq!(retry_after.1, "40");
        tokio::time::advance(Duration::from_secs(40)).await;
        mint(&sim).await;
        assert_eq!(sim.mints("c"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn idempotency_keys_must_be_uuid_v4_and_replay_when_reused() {
        let sim = sim_with(1);
        let auth = format!("Bearer {}", mint(&sim).await);
        let key = "3f2b8c1e-9d4a-4b7e-8a1c-2e5f6a7b8c9d";
        let q = "page_number=1&page_size=100";
        let h = [("x-auth-token", auth.as_str()), ("x-idempotency-key", key)];
        let first = list(&sim, &h, q).await;
        sim.update("c", |c| c.balances.clear());
        assert_eq!(
            list(&sim, &h, q).await.body,
            first.body,
            "a reused key replays"
        );
        let bad = [
            ("x-auth-token", auth.as_str()),
            ("x-idempotency-key", "req-1"),
        ];
        assert_eq!(list(&sim, &bad, q).await.status, 400);
    }

    #[test]
    fn error_shapes() {
        let r = error_response("10001", None, None);
        assert_eq!((r.status, body(&r)["code"].as_i64()), (400, Some(10001)));
        let r = error_response("access_denied", Some(403), None);
        assert_eq!(
            (r.status, body(&r)["error"].as_str()),
            (403, Some("access_denied"))
        );
        let r = error_response("too_many_requests", None, Some("3".into()));
        assert_eq!(r.status, 429);
        assert!(r.headers.contains(&("retry-after".into(), "3".into())));
    }

    #[test]
    fn missing_and_null_amounts_stay_apart() {
        let b = SimBalance::new("SGD", Ledger::fixed(Decimal::new(100050, 2)))
            .with("pending", None)
            .without("frozen");
        let json: serde_json::Value = serde_json::from_str(&b.json()).unwrap();
        assert_eq!(json["available_balance"], "1000.50");
        assert_eq!(json["margin_balance"], "0.00");
        assert!(json["pending_balance"].is_null());
        assert!(json.get("pending_balance").is_some());
        assert!(json.get("frozen_balance").is_none());
    }
}
