//! Hostile values on the wire: a `Retry-After` that overflows naive time arithmetic, from
//! every provider's simulator, neither panics `--once` nor stops the daemon's polling.

mod common;

use std::sync::Arc;

use balance_exporter::providers::engagelab::Product;
use balance_exporter::providers::engagelab::sim::{self as engagelab, EngageLabSim};
use balance_exporter::providers::http_json::presets;
use balance_exporter::providers::http_json::sim::{
    HttpJsonSim, Shape, SimAuth, Wallet, preset_sim,
};
use balance_exporter::providers::onerway::sim::{
    OnerwaySim, SimAccount as OnerwayAccount, SimCurrency,
};
use balance_exporter::providers::payby::sim::{
    PayBySim, SimAccount as PayByAccount, TEST_MERCHANT_PUBLIC_KEY, TEST_PAYBY_PRIVATE_KEY,
};
use balance_exporter::providers::payby::{SigningKey, VerifyingKey};
use balance_exporter::providers::stripe::sim::{SimAccount as StripeAccount, SimFunds, StripeSim};
use balance_exporter::providers::uqpay::sim::{SimBalance, SimClient, UqPaySim};
use balance_exporter::sim::{Fault, Ledger, SimServer};
use common::{Exporter, Exposition, TempDir, run_binary};
use rust_decimal::Decimal;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
const UQPAY_KEY: &str = "uqpay-api-key-0123456789";

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// Every simulator, each account answering with `fault` on every request (UQPay on its token
/// endpoint, as the issue found it, and on its balance calls), and the config entries for them.
struct Sims {
    engagelab: Arc<EngageLabSim>,
    _servers: Vec<SimServer>,
    accounts: String,
}

async fn sims(fault: Fault) -> Sims {
    let mut servers = Vec::new();
    let mut accounts = String::new();

    let engagelab = EngageLabSim::new(Product::Sms);
    let mut account = engagelab::SimAccount::new(
        "secret",
        Ledger::fixed(dec("42.00")),
        Ledger::fixed(Decimal::ZERO),
    );
    account.faults.always(fault.clone());
    engagelab.add_account("key", account);
    let server = engagelab.start().await.unwrap();
    accounts += &format!(
        "\n  - {{name: engagelab, provider: engagelab, product: sms, base_url: '{}', dev_key: key, dev_secret: secret}}",
        server.base_url()
    );
    servers.push(server);

    let payby = PayBySim::new(SigningKey::from_pem(TEST_PAYBY_PRIVATE_KEY).unwrap());
    let mut account = PayByAccount::new(
        VerifyingKey::from_text(TEST_MERCHANT_PUBLIC_KEY).unwrap(),
        vec![("AED", Ledger::fixed(dec("10.00")))],
    );
    account.faults.always(fault.clone());
    payby.add_account("200000018128", account);
    let server = payby.start().await.unwrap();
    accounts += &format!(
        "\n  - {{name: payby, provider: payby, base_url: '{}', partner_id: '200000018128', private_key_file: '{TESTDATA}/payby/merchant_private_key_pkcs1.pem', payby_public_key_file: '{TESTDATA}/payby/payby_public_key.pem', currencies: [AED]}}",
        server.base_url()
    );
    servers.push(server);

    let onerway = OnerwaySim::new("/v1/account/balance", "/v1/account/overview");
    let mut account = OnerwayAccount::new(vec![("USD", SimCurrency::simple(dec("15.00")))]);
    account.faults.always(fault.clone());
    onerway.add_account("onerway-key", account);
    let server = onerway.start().await.unwrap();
    accounts += &format!(
        "\n  - {{name: onerway, provider: onerway, base_url: '{}', apikey: onerway-key, balance_path: /v1/account/balance, currencies: [USD]}}",
        server.base_url()
    );
    servers.push(server);

    let uqpay = UqPaySim::new();
    let mut token_refused = SimClient::new(
        UQPAY_KEY,
        vec![SimBalance::new("SGD", Ledger::fixed(dec("5.00")))],
    );
    token_refused.token_faults.always(fault.clone());
    uqpay.add_client("token-refused", token_refused);
    let mut calls_refused = SimClient::new(
        UQPAY_KEY,
        vec![SimBalance::new("SGD", Ledger::fixed(dec("5.00")))],
    );
    calls_refused.faults.always(fault.clone());
    uqpay.add_client("calls-refused", calls_refused);
    let server = uqpay.start().await.unwrap();
    for (name, client) in [
        ("uqpay-token", "token-refused"),
        ("uqpay-calls", "calls-refused"),
    ] {
        accounts += &format!(
            "\n  - {{name: {name}, provider: uqpay, base_url: '{}', client_id: {client}, api_key: {UQPAY_KEY}}}",
            UqPaySim::base_url(&server)
        );
    }
    servers.push(server);

    // http_json, and a preset of it (the presets share its code).
    let acme = HttpJsonSim::new(
        Shape::Acme {
            method: "GET",
            path: "/wallets".to_owned(),
            body: None,
        },
        SimAuth::Bearer("acme-token".to_owned()),
        vec![Wallet::new(
            "USD",
            Ledger::fixed(dec("3.00")),
            Ledger::fixed(Decimal::ZERO),
        )],
    );
    acme.update(|s| s.faults.always(fault.clone()));
    let server = acme.start().await.unwrap();
    accounts += &format!(
        "\n  - {{name: http-json, provider: http_json, base_url: '{}', path: /wallets, auth: {{type: bearer, token: acme-token}}, items: /wallets, balances: [{{kind: available, amount: /avail, currency: /cur}}], error_code: /error/code}}",
        server.base_url()
    );
    servers.push(server);
    let twilio = preset_sim(
        &presets::TWILIO,
        SimAuth::Basic {
            username: "AC1".to_owned(),
            password: "twilio-token".to_owned(),
        },
        vec![Wallet::new(
            "USD",
            Ledger::fixed(dec("3.00")),
            Ledger::fixed(Decimal::ZERO),
        )],
    );
    twilio.update(|s| s.faults.always(fault.clone()));
    let server = twilio.start().await.unwrap();
    accounts += &format!(
        "\n  - {{name: twilio, provider: twilio, base_url: '{}', account_sid: AC1, auth_token: twilio-token}}",
        server.base_url()
    );
    servers.push(server);

    let stripe = StripeSim::new();
    let mut account = StripeAccount::new(vec![SimFunds::new(
        balance_exporter::providers::stripe::AVAILABLE,
        "USD",
        Ledger::fixed(dec("25.00")),
    )]);
    account.faults.always(fault);
    stripe.add_account("sk_test_hostileWire", account);
    let server = stripe.start().await.unwrap();
    accounts += &format!(
        "\n  - {{name: stripe, provider: stripe, base_url: '{}', api_key: sk_test_hostileWire}}",
        server.base_url()
    );
    servers.push(server);

    Sims {
        engagelab,
        _servers: servers,
        accounts,
    }
}

const ACCOUNTS: [&str; 8] = [
    "engagelab",
    "payby",
    "onerway",
    "uqpay-token",
    "uqpay-calls",
    "http-json",
    "twilio",
    "stripe",
];

/// Runs `--once` off the async runtime, so the in-process simulators keep answering.
async fn once(config: std::path::PathBuf) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        run_binary(&["--once", "--config.file", config.to_str().unwrap()], &[])
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn once_fails_cleanly_on_a_retry_after_past_the_clock_from_every_provider() {
    for (tag, fault) in [
        ("seconds", Fault::hostile_retry_after()),
        ("date", Fault::hostile_retry_after_date()),
    ] {
        let sims = sims(fault).await;
        let dir = TempDir::new(&format!("hostile-once-{tag}"));
        let config = dir.write(
            "config.yml",
            &format!(
                "global:\n  request_timeout: 5s\naccounts:{}\n",
                sims.accounts
            ),
        );
        let (code, stdout, stderr) = once(config).await;
        // 101 is a panic; 1 is "some account failed", as it should be.
        assert_eq!(code, 1, "{tag}: {stderr}");
        assert!(!stderr.contains("panicked"), "{tag}: {stderr}");
        let m = Exposition::parse(&stdout);
        for account in ACCOUNTS {
            assert_eq!(
                m.expect("balance_up", &[("account", account)]),
                0.0,
                "{tag}: {account}"
            );
        }
    }
}

#[tokio::test]
async fn the_daemon_keeps_polling_through_hostile_retry_afters() {
    let sims = sims(Fault::hostile_retry_after_date()).await;
    let yaml = format!(
        "global:\n  poll_interval: 1s\n  request_timeout: 5s\naccounts:{}\n",
        sims.accounts
    );
    let mut exporter = Exporter::start(&yaml).await;
    // A 503 whose Retry-After is in year 9999 ends each poll; the next ones come on time.
    for account in ACCOUNTS {
        let polls = exporter.polls(account, 2).await;
        assert!(
            polls.iter().all(|p| p.outcome.is_err()),
            "{account}: {polls:?}"
        );
    }
    let m = exporter.scrape().await;
    for account in ACCOUNTS {
        assert_eq!(
            m.expect("balance_up", &[("account", account)]),
            0.0,
            "{account}"
        );
        assert_eq!(
            m.expect(
                "balance_exporter_poller_restarts_total",
                &[("account", account)]
            ),
            0.0,
            "{account}: no poller died"
        );
    }
    // The provider recovers: so does the account.
    sims.engagelab.update("key", |a| a.faults.clear());
    let recovered = loop {
        let poll = exporter.poll("engagelab").await;
        if poll.outcome.is_ok() {
            break poll;
        }
    };
    assert_eq!(recovered.account, "engagelab");
    let m = exporter.scrape().await;
    assert_eq!(m.expect("balance_up", &[("account", "engagelab")]), 1.0);
}

#[tokio::test]
async fn a_rate_limit_past_the_clock_pauses_the_account_until_a_reload() {
    let sims = sims(Fault::hostile_retry_after()).await;
    let yaml = format!(
        "global:\n  poll_interval: 1s\n  request_timeout: 5s\naccounts:{}\n",
        sims.accounts
    );
    let config = balance_exporter::config::parse(
        &yaml,
        balance_exporter::config::Format::Yaml,
        std::path::Path::new("."),
    )
    .unwrap();
    let mut exporter = Exporter::start(&yaml).await;
    let limited = exporter.poll("engagelab").await;
    assert_eq!(limited.outcome.unwrap_err().code, "http_429");
    // The pause is capped at ten minutes; a reload ends it at once, and the account is
    // polled again on its interval.
    sims.engagelab.update("key", |a| a.faults.clear());
    let applied = exporter.scheduler.apply(&config).unwrap();
    assert_eq!(applied.unchanged, ACCOUNTS.len());
    assert!(exporter.poll("engagelab").await.outcome.is_ok());
    let m = exporter.scrape().await;
    assert_eq!(m.expect("balance_up", &[("account", "engagelab")]), 1.0);
}

/// A login page a proxy puts in front of the API, under 200, echoing credentials it saw.
const LOGIN_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Gateway login</title></head>\n<body>\tsession onerway-key uqpay-api-key-0123456789 \u{1b}[31m</body></html>";

#[tokio::test]
async fn a_login_page_under_200_is_a_decode_error_that_quotes_it_from_every_provider() {
    let sims = sims(Fault::Raw {
        status: 200,
        body: LOGIN_PAGE.to_owned(),
    })
    .await;
    let yaml = format!(
        "global:\n  poll_interval: 1h\n  request_timeout: 5s\naccounts:{}\n",
        sims.accounts
    );
    let mut exporter = Exporter::start(&yaml).await;
    let mut errors = std::collections::HashMap::new();
    for account in ACCOUNTS {
        let error = exporter.poll(account).await.outcome.unwrap_err();
        errors.insert(account, error.clone());
        // Not `signature_missing` for PayBy, not a bare parser complaint for the others.
        assert_eq!(
            (error.code.as_str(), error.class.as_str()),
            ("decode", "decode"),
            "{account}: {error}"
        );
        assert!(
            error.message.contains(
                "text/html: <!DOCTYPE html> <html><head><title>Gateway login</title></head> <body> session"
            ),
            "{account}: {}",
            error.message
        );
        assert!(
            !error.message.contains('\u{1b}') && !error.message.contains('\n'),
            "{account}: {:?}",
            error.message
        );
    }
    // What the page echoed of an account's own credentials is redacted from its error.
    for (account, secret) in [
        ("onerway", "onerway-key"),
        ("uqpay-token", UQPAY_KEY),
        ("uqpay-calls", UQPAY_KEY),
    ] {
        let error = &errors[account];
        assert!(
            !error.message.contains(secret) && error.message.contains("<redacted>"),
            "{account}: {}",
            error.message
        );
    }
    let m = exporter.scrape().await;
    for account in ACCOUNTS {
        let counted = m.expect(
            "balance_api_errors_total",
            &[
                ("account", account),
                ("code", "decode"),
                ("class", "decode"),
            ],
        );
        assert!(counted >= 1.0, "{account}: {counted}");
    }
}

#[tokio::test]
async fn a_redirect_names_its_location_and_is_not_followed_for_every_provider() {
    let target = "https://api.example.test/v1/balance";
    let sims = sims(Fault::https_redirect("http://api.example.test/v1/balance")).await;
    let yaml = format!(
        "global:\n  poll_interval: 1h\n  request_timeout: 5s\naccounts:{}\n",
        sims.accounts
    );
    let mut exporter = Exporter::start(&yaml).await;
    for account in ACCOUNTS {
        let error = exporter.poll(account).await.outcome.unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.class.as_str()),
            ("http_301", "client"),
            "{account}: {error}"
        );
        assert!(
            error.message.contains("redirects are not followed")
                && error.message.ends_with(&format!("Location: {target}")),
            "{account}: {}",
            error.message
        );
    }
    let m = exporter.scrape().await;
    for account in ACCOUNTS {
        // Refused once, not retried: a redirect does not go away by asking again.
        assert_eq!(
            m.expect(
                "balance_api_errors_total",
                &[
                    ("account", account),
                    ("code", "http_301"),
                    ("class", "client")
                ],
            ),
            1.0,
            "{account}"
        );
    }
}
