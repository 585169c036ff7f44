//! The provider against its simulator called in-process, so that the token lifecycle runs
//! under paused time (real sockets and paused time do not mix). Requests are built by the
//! provider's own code, sent through `PollContext` (retries included) and handed to the simulator's
//! handler as they would arrive.

use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::Clock;
use crate::providers::HttpClient;
use crate::providers::http::{CountingObserver, plain_settings};

use super::sim::{SimBalance, SimClient, UqPaySim};
use super::*;
use crate::config::{Format, parse};
use crate::sim::{Fault, Ledger, SimHandler};

/// One request as the simulator saw it and answered it.
#[derive(Debug, Clone)]
struct Sent {
    endpoint: &'static str,
    status: u16,
    headers: HeaderMap,
}

/// The provider's requests go through [`PollContext`] as in the exporter, to the simulator's handler
/// called in-process ([`crate::sim::in_process`]) instead of a socket.
struct InProcess {
    wire: Arc<crate::sim::in_process::InProcess>,
    client: HttpClient,
    observer: CountingObserver,
    poll_budget: Duration,
    max_currencies: usize,
}

impl InProcess {
    fn new(sim: Arc<UqPaySim>) -> Self {
        let wire = crate::sim::in_process::InProcess::new(sim);
        InProcess {
            client: HttpClient::with_transport(&plain_settings(), Clock::system(), wire.clone())
                .unwrap(),
            wire,
            observer: CountingObserver::new("test"),
            poll_budget: Duration::from_secs(60),
            max_currencies: 1000,
        }
    }

    /// The context of one poll, starting now.
    fn http(&self) -> PollContext<'_> {
        PollContext::new(
            &self.client,
            &self.observer,
            &[],
            Instant::now() + self.poll_budget,
            self.max_currencies,
        )
    }

    fn sent(&self) -> Vec<Sent> {
        self.wire
            .exchanged()
            .into_iter()
            .map(|e| Sent {
                endpoint: endpoint_of(&e.request.path),
                status: e.status.unwrap_or_default(),
                headers: e.request.headers,
            })
            .collect()
    }

    fn count(&self, endpoint: &str, status: Option<u16>) -> usize {
        self.sent()
            .iter()
            .filter(|s| s.endpoint == endpoint && status.is_none_or(|st| st == s.status))
            .count()
    }
}

/// The `endpoint` label of a request to `path`.
fn endpoint_of(path: &str) -> &'static str {
    if path.ends_with("/v1/connect/token") {
        "token"
    } else if path.ends_with("/v2/payment/balances") {
        "balances"
    } else {
        "balance"
    }
}

const CLIENT: &str = "client-1";
const KEY: &str = "api-key-1";

fn sim_with_currencies(currencies: &[&str]) -> Arc<UqPaySim> {
    let sim = UqPaySim::new();
    let balances = currencies
        .iter()
        .map(|c| SimBalance::new(c, Ledger::fixed(Decimal::new(100_050, 2))))
        .collect();
    sim.add_client(CLIENT, SimClient::new(KEY, balances));
    sim
}

/// A provider for `client` with token slots of its own.
fn provider(test: &str, extra: &str) -> UqPay {
    provider_in(&TokenSlots::default(), test, extra)
}

/// A provider for `client` keeping its token in `slots` (shared with the others there).
fn provider_in(slots: &TokenSlots, test: &str, extra: &str) -> UqPay {
    let yaml = format!(
        "accounts:
  - name: a
    provider: uqpay
    base_url: http://{test}.sim.test/api
    client_id: {CLIENT}
    api_key: {KEY}
{extra}"
    );
    let config = parse(&yaml, Format::Yaml, std::path::Path::new(".")).unwrap();
    match &config.accounts[0].provider {
        crate::providers::ProviderConfig::UqPay(c) => UqPay::new(c.clone(), slots),
        other => panic!("not uqpay: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn one_hour_of_60s_polls_with_30_minute_tokens_mints_three_tokens() {
    let sim = sim_with_currencies(&["SGD", "USD"]);
    let uqpay = provider("one-hour", "");
    let x = InProcess::new(sim.clone());
    let started = Instant::now();
    let mut polls: u64 = 0;
    while started.elapsed() < Duration::from_secs(3600) {
        let snapshot = uqpay.poll(&x.http()).await.unwrap();
        assert_eq!(snapshot.currencies(), vec!["SGD", "USD"]);
        polls += 1;
        tokio::time::sleep_until(started + Duration::from_secs(60 * polls)).await;
    }
    assert_eq!(polls, 60);
    // Minted at 0:00, refreshed a minute before expiry at about 29:00 and 58:00.
    assert_eq!(sim.mints(CLIENT), 3);
    assert_eq!(x.observer.tokens_minted(), 3);
    assert_eq!(x.count("token", None), 3);
    // Never a rejected token: each refresh came before the old token died.
    assert_eq!(x.count("balances", Some(401)), 0);
    assert_eq!(x.count("balances", Some(200)), 60);
}

#[tokio::test(start_paused = true)]
async fn a_token_is_refreshed_before_it_expires_without_a_failed_request() {
    let sim = sim_with_currencies(&["SGD"]);
    sim.set_token_lifetime(Duration::from_secs(300));
    let uqpay = provider("refresh", "");
    let x = InProcess::new(sim.clone());
    // Polls every 10 s for 20 minutes: a 300 s token is replaced at about 240 s.
    for _ in 0..120 {
        uqpay.poll(&x.http()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let mints = sim.mints(CLIENT);
    assert!((4..=5).contains(&mints), "{mints} mints in 20 minutes");
    assert_eq!(x.count("balances", Some(401)), 0);
}

#[tokio::test(start_paused = true)]
async fn an_outside_mint_costs_exactly_one_re_mint_and_the_poll_succeeds() {
    let sim = sim_with_currencies(&["SGD"]);
    let uqpay = provider("outside", "");
    let x = InProcess::new(sim.clone());
    uqpay.poll(&x.http()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    sim.mint_outside(CLIENT);
    uqpay.poll(&x.http()).await.unwrap();
    assert_eq!(sim.mints(CLIENT), 2);
    assert_eq!(x.count("balances", Some(401)), 1);
    // And the new token is kept.
    uqpay.poll(&x.http()).await.unwrap();
    assert_eq!(sim.mints(CLIENT), 2);
}

#[tokio::test(start_paused = true)]
async fn a_persistent_401_gives_one_re_mint_per_poll_and_an_auth_error() {
    let sim = sim_with_currencies(&["SGD"]);
    sim.update(CLIENT, |c| c.faults.always(Fault::code("unauthorized")));
    let uqpay = provider("persistent", "");
    let x = InProcess::new(sim.clone());
    let error = uqpay.poll(&x.http()).await.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("unauthorized", ErrorClass::Auth)
    );
    assert!(
        error.message.contains("again with a new token"),
        "{}",
        error.message
    );
    assert_eq!(sim.mints(CLIENT), 2);
    assert_eq!(x.count("balances", None), 2);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(uqpay.poll(&x.http()).await.is_err());
    assert_eq!(sim.mints(CLIENT), 3, "one re-mint per poll, no loop");
    assert_eq!(x.count("balances", None), 4);
}

#[tokio::test(start_paused = true)]
async fn overlapping_polls_of_accounts_sharing_a_key_share_one_mint() {
    let sim = sim_with_currencies(&["SGD", "USD"]);
    sim.update(CLIENT, |c| {
        c.token_faults
            .next(Fault::Latency(Duration::from_secs(2)), 1)
    });
    let slots = TokenSlots::default();
    let accounts = [
        provider_in(&slots, "shared", ""),
        provider_in(&slots, "shared", "    currencies: [USD]"),
        provider_in(&slots, "shared", "    currencies: [SGD, USD]"),
    ];
    let x = InProcess::new(sim.clone());
    let results = join_all(accounts.iter().map(|a| async {
        let http = x.http();
        a.poll(&http).await
    }))
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(sim.mints(CLIENT), 1);
    assert_eq!(x.count("token", None), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_mint_waits_for_retry_after_without_asking_again() {
    let sim = sim_with_currencies(&["SGD"]);
    sim.update(CLIENT, |c| {
        c.retry_after = Some("120".into());
        c.token_faults.next(Fault::code("too_many_requests"), 1);
    });
    let uqpay = provider("token-429", "");
    let x = InProcess::new(sim.clone());
    let error = uqpay.poll(&x.http()).await.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("too_many_requests", ErrorClass::RateLimit)
    );
    assert_eq!(error.retry_after, Some(Duration::from_secs(120)));
    // Polls within the two minutes fail without a request to the token endpoint.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let again = uqpay.poll(&x.http()).await.unwrap_err();
        assert_eq!(again.class, ErrorClass::RateLimit);
    }
    assert_eq!(x.count("token", None), 1);
    tokio::time::sleep(Duration::from_secs(30)).await;
    uqpay.poll(&x.http()).await.unwrap();
    assert_eq!(x.count("token", None), 2);
    assert_eq!(sim.mints(CLIENT), 1);
}

#[tokio::test(start_paused = true)]
async fn a_401_on_a_token_another_account_already_replaced_takes_the_new_one_without_a_mint() {
    let sim = sim_with_currencies(&["SGD"]);
    sim.set_token_lifetime(Duration::from_secs(240));
    let slots = TokenSlots::default();
    let a = provider_in(&slots, "handover", "");
    let b = provider_in(&slots, "handover", "    currencies: [SGD]");
    let x = InProcess::new(sim.clone());
    a.poll(&x.http()).await.unwrap();
    // `b` starts a call with the first token...
    let held = b.token(&x.http(), None).await.unwrap();
    // ... while `a` refreshes it (due 60 s before the end of its 240 s).
    tokio::time::sleep(Duration::from_secs(181)).await;
    a.poll(&x.http()).await.unwrap();
    assert_eq!(sim.mints(CLIENT), 2);
    let failure = b.balances(&x.http(), held.value()).await.err().unwrap();
    assert!(failure.unauthorized);
    // The rejected token is no longer the slot's: `b` gets a's new one, no third mint.
    let next = b.token(&x.http(), Some(&held)).await.unwrap();
    assert_ne!(next.generation(), held.generation());
    assert!(b.balances(&x.http(), next.value()).await.is_ok());
    assert_eq!(sim.mints(CLIENT), 2);
}

#[tokio::test(start_paused = true)]
async fn pages_are_walked_with_the_required_parameters() {
    let codes: Vec<String> = (0..205)
        .map(|i| {
            format!(
                "{}{}Q",
                (b'A' + (i / 26) as u8) as char,
                (b'A' + (i % 26) as u8) as char
            )
        })
        .collect();
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let sim = sim_with_currencies(&refs);
    let uqpay = provider("pages", "");
    let x = InProcess::new(sim);
    let snapshot = uqpay.poll(&x.http()).await.unwrap();
    assert_eq!(snapshot.currencies().len(), 205);
    assert_eq!(snapshot.balances.len(), 205 * 6);
    assert_eq!(x.count("balances", Some(200)), 3);
}

#[tokio::test(start_paused = true)]
async fn the_sub_account_header_is_sent_only_when_configured() {
    let sim = sim_with_currencies(&["SGD"]);
    sim.update(CLIENT, |c| {
        c.sub_accounts.insert(
            "sub-7".into(),
            vec![SimBalance::new("USD", Ledger::fixed(Decimal::from(7)))],
        );
    });
    let slots = TokenSlots::default();
    let main = provider_in(&slots, "sub", "");
    let sub = provider_in(&slots, "sub", "    on_behalf_of: sub-7");
    let x = InProcess::new(sim);
    assert_eq!(
        main.poll(&x.http()).await.unwrap().currencies(),
        vec!["SGD"]
    );
    assert_eq!(sub.poll(&x.http()).await.unwrap().currencies(), vec!["USD"]);
    let sent = x.sent();
    let balance_calls: Vec<_> = sent.iter().filter(|s| s.endpoint == "balances").collect();
    assert_eq!(balance_calls.len(), 2);
    assert!(balance_calls[0].headers.get("x-on-behalf-of").is_none());
    assert_eq!(balance_calls[1].headers["x-on-behalf-of"], "sub-7");
    // The token call carries the credentials, never the sub-account.
    let token_call = sent.iter().find(|s| s.endpoint == "token").unwrap();
    assert!(token_call.headers.get("x-on-behalf-of").is_none());
    assert!(token_call.headers["x-api-key"].is_sensitive());
    assert!(balance_calls[0].headers["x-auth-token"].is_sensitive());
    assert!(balance_calls[0].headers.get("x-idempotency-key").is_some());
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    Response::new(status, map, body.to_owned().into(), SystemTime::now())
}

#[test]
fn every_error_shape_gives_a_useful_code() {
    let token = Secret::new("tok-secret-value");
    let cases = [
        (
            401,
            r#"{"type":"unauthorized_error","code":"unauthorized","message":"m"}"#,
            "unauthorized",
            ErrorClass::Auth,
        ),
        (
            400,
            r#"{"type":"invalid_request_error","code":"not_found","message":"m"}"#,
            "not_found",
            ErrorClass::Client,
        ),
        (
            400,
            r#"{"type":"api_error","code":10001,"message":"m"}"#,
            "10001",
            ErrorClass::Client,
        ),
        (
            403,
            r#"{"error":"access_denied","message":"IP not allowed"}"#,
            "access_denied",
            ErrorClass::Auth,
        ),
        (
            429,
            r#"{"code":"too_many_requests"}"#,
            "too_many_requests",
            ErrorClass::RateLimit,
        ),
        (
            400,
            r#"{"code":"too_many_requests"}"#,
            "too_many_requests",
            ErrorClass::RateLimit,
        ),
        (
            500,
            r#"{"type":"api_error","message":"m"}"#,
            "api_error",
            ErrorClass::Server,
        ),
        (
            502,
            "<html>Bad Gateway</html>",
            "http_502",
            ErrorClass::Server,
        ),
        (403, "Forbidden", "http_403", ErrorClass::Auth),
        (
            404,
            r#"{"code":null,"message":"m"}"#,
            "http_404",
            ErrorClass::Client,
        ),
        (
            400,
            r#"{"code":{"nested":1}}"#,
            "http_400",
            ErrorClass::Client,
        ),
    ];
    for (status, body, code, class) in cases {
        let error = error_from(&response(status, &[], body), &token);
        assert_eq!(
            (error.code.as_str(), error.class),
            (code, class),
            "{status} {body}"
        );
    }
    let echoed = error_from(
        &response(
            401,
            &[],
            r#"{"code":"unauthorized","message":"token tok-secret-value is revoked"}"#,
        ),
        &token,
    );
    assert!(
        !echoed.message.contains("tok-secret-value"),
        "{}",
        echoed.message
    );
    let html = error_from(&response(502, &[], "<html>Bad Gateway</html>"), &token);
    assert!(html.message.contains("Bad Gateway"), "{}", html.message);
    let limited = error_from(&response(429, &[("retry-after", "7")], "{}"), &token);
    assert_eq!(limited.retry_after, Some(Duration::from_secs(7)));
}

#[test]
fn lifetimes_from_expired_at() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(
        lifetime(Some(1_700_001_800), now),
        Lifetime::Stated(Duration::from_secs(1800))
    );
    for (at, why) in [
        (Some(1_699_999_000), "in the past"),
        (Some(1_700_000_000), "in the past"),
        (Some(1_700_001_800_000), "not a plausible lifetime"),
        (Some(-5), "in the past"),
        (None, "no expired_at"),
    ] {
        match lifetime(at, now) {
            Lifetime::Fallback(reason) => assert!(reason.contains(why), "{at:?}: {reason}"),
            stated => panic!("{at:?} gave {stated:?}"),
        }
    }
}

#[test]
fn the_token_lifetime_counts_from_the_providers_date() {
    // Our clock is an hour behind: expired_at read against it would look like 90 minutes.
    let provider_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let ours = provider_now - Duration::from_secs(3600);
    let date = httpdate::fmt_http_date(provider_now);
    let body = r#"{"auth_token":"abc.def","expired_at":1700001800}"#;
    let minted = parse_token(&response(200, &[("date", &date)], body), ours).unwrap();
    assert_eq!(minted.value.expose(), "abc.def");
    assert_eq!(minted.lifetime, Lifetime::Stated(Duration::from_secs(1799)));
    // Without Date, our own clock.
    let minted = parse_token(&response(200, &[], body), provider_now).unwrap();
    assert_eq!(minted.lifetime, Lifetime::Stated(Duration::from_secs(1800)));
    // expired_at as a string is read too.
    let text = r#"{"auth_token":"abc","expired_at":"1700000900"}"#;
    let minted = parse_token(&response(200, &[], text), provider_now).unwrap();
    assert_eq!(minted.lifetime, Lifetime::Stated(Duration::from_secs(900)));
    for bad in [
        r#"{"expired_at":1}"#,
        r#"{"auth_token":"","expired_at":1}"#,
        r#"{"auth_token":"a b"}"#,
        "[]",
    ] {
        assert_eq!(
            parse_token(&response(200, &[], bad), provider_now)
                .unwrap_err()
                .code,
            "decode",
            "{bad}"
        );
    }
    let refused = parse_token(
        &response(
            401,
            &[],
            r#"{"type":"unauthorized_error","code":"unauthorized"}"#,
        ),
        provider_now,
    )
    .unwrap_err();
    assert_eq!(refused.class, ErrorClass::Auth);
}

#[test]
fn balances_are_exact_and_missing_or_null_amounts_are_no_sample() {
    let body = r#"{"total_pages":1,"total_items":2,"data":[
        {"balance_id":"b1","currency":"SGD","available_balance":"1000.10","payable_balance":"950.00",
         "pending_balance":null,"reserved_balance":"-0.01","margin_balance":"12345678901.123456"},
        {"currency":"usd","available_balance":"5"}]}"#;
    let (snapshot, pages) = parse_page(&response(200, &[], body)).unwrap();
    assert_eq!(pages, 1);
    let amount = |c: &str, k: &str| {
        snapshot
            .balances
            .iter()
            .find(|b| b.currency == c && b.kind == k)
            .map(|b| b.amount.to_string())
    };
    assert_eq!(amount("SGD", "available").as_deref(), Some("1000.10"));
    assert_eq!(amount("SGD", "reserved").as_deref(), Some("-0.01"));
    assert_eq!(
        amount("SGD", "margin").as_deref(),
        Some("12345678901.123456")
    );
    assert_eq!(amount("SGD", "pending"), None);
    assert_eq!(amount("SGD", "frozen"), None);
    assert_eq!(amount("USD", "available").as_deref(), Some("5"));
    assert_eq!(snapshot.balances.len(), 5);

    for bad in [
        r#"{"total_pages":1,"data":[{"available_balance":"1"}]}"#,
        r#"{"total_pages":1,"data":[{"currency":"SGD","available_balance":"1,5"}]}"#,
        r#"{"data":[{"currency":"SGD","available_balance":"1"}]}"#,
        r#"{"total_pages":-1,"data":[]}"#,
        r#"{"total_pages":1,"data":{}}"#,
    ] {
        assert_eq!(
            parse_page(&response(200, &[], bad)).unwrap_err().code,
            "decode",
            "{bad}"
        );
    }
}

#[test]
fn a_single_balance_is_read_bare_or_wrapped_and_must_be_the_one_asked_for() {
    let bare = r#"{"currency":"SGD","available_balance":"1.50"}"#;
    let wrapped = r#"{"data":{"currency":"SGD","available_balance":"1.50"}}"#;
    for body in [bare, wrapped] {
        let read = parse_single(&response(200, &[], body), "SGD").unwrap();
        assert_eq!(read.len(), 1, "{body}");
        assert_eq!(read[0].1[0], Some(Decimal::new(150, 2)));
    }
    let wrong = parse_single(&response(200, &[], bare), "USD").unwrap_err();
    assert_eq!(
        (wrong.code.as_str(), wrong.class),
        ("wrong_currency", ErrorClass::Decode)
    );
    let without_currency = r#"{"available_balance":"2"}"#;
    let read = parse_single(&response(200, &[], without_currency), "USD").unwrap();
    assert_eq!(read[0].0, "USD");
    for nothing in [
        "{}",
        r#"{"foo":1}"#,
        r#"{"currency":"USD"}"#,
        r#"{"currency":"USD","available_balance":null}"#,
    ] {
        let error = parse_single(&response(200, &[], nothing), "USD").unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("no_balance", ErrorClass::Decode),
            "{nothing}"
        );
    }
}

#[test]
fn a_list_answer_without_data_is_no_balance_and_null_or_empty_data_is_an_empty_page() {
    for nothing in ["{}", r#"{"total_pages":1}"#, r#"{"code":"x"}"#] {
        let error = parse_page(&response(200, &[], nothing)).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class),
            ("no_balance", ErrorClass::Decode),
            "{nothing}"
        );
    }
    for empty in [
        r#"{"total_pages":0,"total_items":0,"data":null}"#,
        r#"{"total_pages":1,"data":[]}"#,
        r#"{"data":null}"#,
    ] {
        let (snapshot, pages) = parse_page(&response(200, &[], empty)).unwrap();
        assert!(snapshot.balances.is_empty(), "{empty}");
        assert!(pages <= 1);
    }
    let entries: Vec<String> = (0..=PAGE_SIZE)
        .map(|i| {
            format!(
                r#"{{"currency":"A{:02}","available_balance":"1"}}"#,
                i % 100
            )
        })
        .collect();
    let long = format!(r#"{{"total_pages":1,"data":[{}]}}"#, entries.join(","));
    let error = parse_page(&response(200, &[], &long)).unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("page_too_long", ErrorClass::Decode)
    );
}

#[tokio::test(start_paused = true)]
async fn an_account_holding_nothing_is_a_success_with_no_balances() {
    let sim = sim_with_currencies(&[]);
    let uqpay = provider("empty", "");
    let x = InProcess::new(sim);
    let snapshot = uqpay.poll(&x.http()).await.unwrap();
    assert!(snapshot.balances.is_empty());
    assert_eq!(x.count("balances", Some(200)), 1);
}

#[tokio::test(start_paused = true)]
async fn the_walk_stops_past_max_currencies_and_a_hostile_total_pages_costs_one_request() {
    let sim = sim_with_currencies(&["SGD"]);
    let uqpay = provider("hostile", "");
    let mut x = InProcess::new(sim.clone());
    x.max_currencies = 150;
    sim.update(CLIENT, |c| {
        c.body_faults
            .always(super::sim::BodyFault::ManyCurrencies(5000))
    });
    let error = uqpay.poll(&x.http()).await.unwrap_err();
    assert_eq!(
        (error.code.as_str(), error.class),
        ("too_many_currencies", ErrorClass::Decode)
    );
    assert_eq!(x.count("balances", None), 1, "50 pages claimed, one read");
    // 151 currencies on two pages: read both, and fail on the one too many.
    let sim = sim_with_currencies(&[]);
    let list: Vec<SimBalance> = (0..151)
        .map(|i| {
            let code = format!(
                "{}{}Q",
                char::from(b'A' + (i / 26) as u8),
                char::from(b'A' + (i % 26) as u8)
            );
            SimBalance::new(&code, Ledger::fixed(Decimal::ONE))
        })
        .collect();
    sim.update(CLIENT, |c| c.balances = list);
    let mut x = InProcess::new(sim);
    x.max_currencies = 150;
    let uqpay = provider("hostile-2", "");
    assert_eq!(
        uqpay.poll(&x.http()).await.unwrap_err().code,
        "too_many_currencies"
    );
    assert_eq!(x.count("balances", None), 2);
    x.max_currencies = 151;
    assert_eq!(uqpay.poll(&x.http()).await.unwrap().currencies().len(), 151);
}

#[tokio::test(start_paused = true)]
async fn every_balance_request_has_a_fresh_uuid_v4_idempotency_key_and_the_mint_a_length() {
    let sim = sim_with_currencies(&["SGD", "USD"]);
    let uqpay = provider("keys", "");
    let x = InProcess::new(sim.clone());
    uqpay.poll(&x.http()).await.unwrap();
    uqpay.poll(&x.http()).await.unwrap();
    // A 401: re-mint and a second request, with its own key.
    sim.mint_outside(CLIENT);
    uqpay.poll(&x.http()).await.unwrap();
    let sent = x.sent();
    let keys: Vec<String> = sent
        .iter()
        .filter(|s| s.endpoint == "balances")
        .map(|s| s.headers["x-idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 4);
    let distinct: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), 4, "{keys:?}");
    for key in &keys {
        assert!(super::sim::is_uuid_v4(key), "{key}");
    }
    for mint in sent.iter().filter(|s| s.endpoint == "token") {
        assert_eq!(mint.headers["content-length"], "0");
        assert_eq!(mint.headers["content-type"], "application/json");
    }
}

fn config_errors(extra: &str) -> String {
    let yaml = format!(
        "accounts:
  - name: u
    provider: uqpay
{extra}"
    );
    match parse(&yaml, Format::Yaml, std::path::Path::new(".")) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_keys_and_their_problems() {
    let ok = "    client_id: c\n    api_key: k\n";
    assert_eq!(config_errors(ok), "");
    let yaml = format!(
        "accounts:\n  - name: u\n    provider: uqpay\n{ok}    environment: sandbox\n    on_behalf_of: sub-1\n    currencies: [sgd, USD]\n"
    );
    let config = parse(&yaml, Format::Yaml, std::path::Path::new(".")).unwrap();
    let crate::providers::ProviderConfig::UqPay(c) = &config.accounts[0].provider else {
        panic!("not uqpay");
    };
    assert_eq!(c.base_url.as_str(), "https://api-sandbox.uqpaytech.com/api");
    assert_eq!(
        c.currencies.as_deref(),
        Some(&["SGD".to_owned(), "USD".to_owned()][..])
    );
    assert_eq!(c.on_behalf_of.as_deref(), Some("sub-1"));
    assert_eq!(
        c.currency_scope(),
        CurrencyScope::Fixed(vec!["SGD".into(), "USD".into()])
    );

    let secret = "accounts:\n  - name: u\n    provider: uqpay\n    client_id: c\n    api_key: a-long-api-key\n";
    let config = parse(secret, Format::Yaml, std::path::Path::new(".")).unwrap();
    assert!(!format!("{config:?}").contains("a-long-api-key"));
    let errors = config_errors("    api_key: k\n    api_key_env: X\n    environment: staging\n");
    assert!(
        errors.contains("accounts[0] (u).client_id: required"),
        "{errors}"
    );
    assert!(
        errors.contains("accounts[0] (u).api_key: give only one of"),
        "{errors}"
    );
    assert!(errors.contains("accounts[0] (u).environment"), "{errors}");
    let errors = config_errors(&format!("{ok}    currencies: []\n"));
    assert!(
        errors.contains("accounts[0] (u).currencies: list at least one currency"),
        "{errors}"
    );
    let errors = config_errors(&format!("{ok}    currencies: [USD, US, usd]\n"));
    assert!(
        errors.contains("accounts[0] (u).currencies[1]: \"US\""),
        "{errors}"
    );
    assert!(
        errors.contains("accounts[0] (u).currencies[2]: USD is listed twice"),
        "{errors}"
    );
    let errors = config_errors(&format!("{ok}    on_behalf_of: \"\"\n"));
    assert!(errors.contains("accounts[0] (u).on_behalf_of"), "{errors}");
    let errors = config_errors("    client_id: c d\n    api_key: \"k\\n\"\n");
    assert!(
        errors.contains("accounts[0] (u).client_id: must be printable"),
        "{errors}"
    );
    assert!(
        errors.contains("accounts[0] (u).api_key: must be printable"),
        "{errors}"
    );
    let errors = config_errors(&format!("{ok}    currency: USD\n"));
    assert!(
        errors.contains("accounts[0] (u).currency: unknown key"),
        "{errors}"
    );
    // Thresholds of a list-mode account name their currency.
    let errors = config_errors(&format!("{ok}    thresholds:\n      - warning: 5\n"));
    assert!(
        errors.contains("thresholds[0].currency: required"),
        "{errors}"
    );
    let errors = config_errors(&format!(
        "{ok}    currencies: [SGD]\n    thresholds:\n      - kind: frozen\n        warning: 5\n"
    ));
    assert_eq!(errors, "");
}

/// Answers of the simulator: a token, a page of the list, one currency, and errors.
fn sim_answers() -> Vec<Vec<u8>> {
    use crate::providers::fuzz;

    let sim = sim_with_currencies(&["USD", "SGD", "EUR"]);
    sim.update(CLIENT, |c| {
        c.faults.next(Fault::code("too_many_requests"), 1)
    });
    fuzz::block_on(async {
        let credentials = [("x-client-id", CLIENT), ("x-api-key", KEY)];
        let mint_headers = [
            ("x-client-id", CLIENT),
            ("x-api-key", KEY),
            ("content-length", "0"),
        ];
        let mint = fuzz::sim_request("POST", "/api/v1/connect/token", None, &mint_headers, vec![]);
        let token_answer = fuzz::answer_body(sim.handle(&mint).await, 200);
        let token: serde_json::Value = serde_json::from_slice(&token_answer).unwrap();
        let bearer = format!("Bearer {}", token["auth_token"].as_str().unwrap());
        let authorized = [
            ("x-client-id", CLIENT),
            ("x-auth-token", bearer.as_str()),
            ("x-idempotency-key", "3f2b8c1e-9d4a-4b7e-8a1c-2e5f6a7b8c9d"),
        ];
        let authorized_again = [
            ("x-client-id", CLIENT),
            ("x-auth-token", bearer.as_str()),
            ("x-idempotency-key", "3f2b8c1e-9d4a-4b7e-8a1c-2e5f6a7b8c9e"),
        ];

        let get = |path: &str, query: Option<&str>, headers: &[(&str, &str)]| {
            fuzz::sim_request("GET", path, query, headers, vec![])
        };
        let list = get(
            "/api/v2/payment/balances",
            Some("page_number=1&page_size=2"),
            &authorized,
        );
        let one = get("/api/v2/payment/balances/SGD", None, &authorized_again);
        let rate_limited = fuzz::answer_body(sim.handle(&list).await, 429);
        let unauthorized = get("/api/v2/payment/balances/SGD", None, &credentials);
        vec![
            token_answer,
            fuzz::answer_body(sim.handle(&list).await, 200),
            fuzz::answer_body(sim.handle(&one).await, 200),
            rate_limited,
            fuzz::answer_body(sim.handle(&unauthorized).await, 401),
        ]
    })
}

#[test]
fn the_parsers_never_panic_on_arbitrary_or_mutated_answers() {
    use crate::providers::fuzz;

    let seeds = sim_answers();
    let page = fuzz::response(200, &seeds[1], &[]);
    assert_eq!(
        parse_page(&page).unwrap().1,
        2,
        "the seeds are real answers"
    );
    let token = Secret::new("token-value");
    fuzz::check(seeds, |status, body| {
        let date = "Sat, 21 Nov 2026 22:00:00 GMT";
        let response = fuzz::response(status, body, &[("date", date), ("retry-after", "3")]);
        let _ = parse_token(&response, SystemTime::now());
        let _ = parse_token(&fuzz::response(status, body, &[]), SystemTime::UNIX_EPOCH);
        let _ = parse_page(&response);
        let _ = parse_single(&response, "SGD");
        let _ = error_from(&response, &token);
    });
}

#[test]
fn hostile_header_values_never_panic_the_parsers_nor_stretch_a_wait() {
    use crate::providers::fuzz;
    use crate::providers::http::MAX_RETRY_AFTER;

    let token = Secret::new("token-value");
    let bounded = |error: &ProviderError| {
        assert!(
            error.retry_after.is_none_or(|w| w <= MAX_RETRY_AFTER),
            "{error:?}"
        );
    };
    // Arbitrary `Date` values meet `expired_at`, arbitrary `Retry-After` values every error.
    fuzz::check_headers(sim_answers(), |response| {
        for requested in [SystemTime::now(), SystemTime::UNIX_EPOCH] {
            if let Err(error) = parse_token(response, requested) {
                bounded(&error);
            }
        }
        if let Err(error) = parse_page(response) {
            bounded(&error);
        }
        if let Err(error) = parse_single(response, "SGD") {
            bounded(&error);
        }
        bounded(&error_from(response, &token));
    });
}
