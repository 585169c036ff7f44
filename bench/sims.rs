//! The simulators for `bench/run`, in their own process so that the exporter's CPU and memory
//! are its own: starts many simulated accounts on loopback, writes an exporter configuration
//! polling them, prints `ready`, and serves until killed.
//!
//! `bench_sims <shape> <accounts> <poll_interval> <dir>`
//! - `uqpay`: every account a UQPay client with 3 currencies x 6 kinds of balance (18
//!   `balance_amount` series per account), all on one simulated host.
//! - `mixed`: accounts spread evenly over EngageLab SMS, PayBy (one currency, so one RSA sign
//!   and verify per poll), UQPay (3 currencies) and Onerway (3 currencies), one host each.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use balance_exporter::providers::engagelab::Product;
use balance_exporter::providers::engagelab::sim as engagelab;
use balance_exporter::providers::onerway::sim as onerway;
use balance_exporter::providers::payby::sim as payby;
use balance_exporter::providers::payby::{SigningKey, VerifyingKey};
use balance_exporter::providers::uqpay::sim as uqpay;
use balance_exporter::sim::{Ledger, SimServer};
use rust_decimal::Decimal;

const ONERWAY_BALANCE_PATH: &str = "/bench/account/balance";
const ONERWAY_OVERVIEW_PATH: &str = "/bench/account/balance/overview";
const CURRENCIES: [&str; 3] = ["SGD", "USD", "HKD"];

/// A slowly draining balance, different per account, so every render has something new.
fn ledger(i: usize) -> Ledger {
    let start = Decimal::new(1_000_000 + (i as i64 * 7_919) % 500_000, 2);
    Ledger::draining(start, Decimal::new(1, 2), Some(Decimal::ZERO))
}

fn uqpay_account(sim: &uqpay::UqPaySim, i: usize, base_url: &str, yaml: &mut String) {
    let client = format!("bench-uqpay-{i}");
    let balances = CURRENCIES
        .iter()
        .map(|c| uqpay::SimBalance::new(c, ledger(i)))
        .collect();
    let mut sim_client = uqpay::SimClient::new(&format!("{client}-key"), balances);
    // One client per account here; its limits are the sandbox's, far above one poll a minute.
    sim_client.call_limit_per_minute(10_000);
    sim.add_client(&client, sim_client);
    let _ = write!(
        yaml,
        "  - name: uqpay-{i:05}\n    provider: uqpay\n    base_url: {base_url}\n    client_id: {client}\n    api_key: {client}-key\n    thresholds:\n      - currency: USD\n        warning: 1000\n        critical: 100\n"
    );
}

async fn start(
    shape: &str,
    accounts: usize,
    dir: &Path,
) -> std::io::Result<(Vec<SimServer>, String)> {
    let mut yaml = String::from("accounts:\n");
    let mut servers = Vec::new();
    let uq = uqpay::UqPaySim::new();
    let uq_server = uq.start().await?;
    let uq_url = uqpay::UqPaySim::base_url(&uq_server);
    if shape == "uqpay" {
        for i in 0..accounts {
            uqpay_account(&uq, i, &uq_url, &mut yaml);
        }
        return Ok((vec![uq_server], yaml));
    }
    let invalid = |e: String| std::io::Error::other(format!("test key: {e}"));
    let sms = engagelab::EngageLabSim::new(Product::Sms);
    let sms_server = sms.start().await?;
    let pb =
        payby::PayBySim::new(SigningKey::from_pem(payby::TEST_PAYBY_PRIVATE_KEY).map_err(invalid)?);
    let pb_server = pb.start().await?;
    let merchant = VerifyingKey::from_text(payby::TEST_MERCHANT_PUBLIC_KEY).map_err(invalid)?;
    let ow = onerway::OnerwaySim::new(ONERWAY_BALANCE_PATH, ONERWAY_OVERVIEW_PATH);
    let ow_server = ow.start().await?;
    let private_key = dir.join("payby_merchant_private_key.pem");
    let public_key = dir.join("payby_public_key.pem");
    std::fs::write(&private_key, payby::TEST_MERCHANT_PRIVATE_KEY)?;
    std::fs::write(&public_key, payby::TEST_PAYBY_PUBLIC_KEY)?;
    for i in 0..accounts {
        match i % 4 {
            0 => {
                let key = format!("bench-sms-{i}");
                sms.add_account(
                    &key,
                    engagelab::SimAccount::new(
                        &format!("{key}-secret"),
                        ledger(i),
                        Ledger::fixed(Decimal::ONE),
                    ),
                );
                let _ = write!(
                    yaml,
                    "  - name: sms-{i:05}\n    provider: engagelab\n    product: sms\n    base_url: {}\n    dev_key: {key}\n    dev_secret: {key}-secret\n    currency: USD\n",
                    sms_server.base_url()
                );
            }
            1 => {
                let partner = format!("{}", 200_000_000_000u64 + i as u64);
                pb.add_account(
                    &partner,
                    payby::SimAccount::new(merchant.clone(), vec![("AED", ledger(i))]),
                );
                let _ = write!(
                    yaml,
                    "  - name: payby-{i:05}\n    provider: payby\n    base_url: {}\n    partner_id: \"{partner}\"\n    private_key_file: {}\n    payby_public_key_file: {}\n    currencies: [AED]\n",
                    pb_server.base_url(),
                    private_key.display(),
                    public_key.display()
                );
            }
            2 => uqpay_account(&uq, i, &uq_url, &mut yaml),
            _ => {
                let apikey = format!("bench-onerway-{i}");
                let currencies = CURRENCIES
                    .iter()
                    .map(|c| (*c, onerway::SimCurrency::simple(ledger(i).amount(2))))
                    .collect();
                ow.add_account(&apikey, onerway::SimAccount::new(currencies));
                let _ = write!(
                    yaml,
                    "  - name: onerway-{i:05}\n    provider: onerway\n    base_url: {}\n    overview_path: {ONERWAY_OVERVIEW_PATH}\n    apikey: {apikey}\n    display_currency: USD\n",
                    ow_server.base_url()
                );
            }
        }
    }
    servers.extend([uq_server, sms_server, pb_server, ow_server]);
    Ok((servers, yaml))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [shape, accounts, interval, dir] = args.as_slice() else {
        eprintln!("usage: bench_sims uqpay|mixed <accounts> <poll_interval> <dir>");
        return std::process::ExitCode::FAILURE;
    };
    let (Ok(accounts), true) = (
        accounts.parse::<usize>(),
        shape == "uqpay" || shape == "mixed",
    ) else {
        eprintln!("usage: bench_sims uqpay|mixed <accounts> <poll_interval> <dir>");
        return std::process::ExitCode::FAILURE;
    };
    let dir = PathBuf::from(dir);
    let (servers, accounts_yaml) = match start(shape, accounts, &dir).await {
        Ok(started) => started,
        Err(e) => {
            eprintln!("cannot start the simulators: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let config = format!(
        "global:\n  poll_interval: {interval}\n  request_timeout: 10s\n  stale_after: 1h\n{accounts_yaml}"
    );
    if let Err(e) = std::fs::write(dir.join("config.yml"), config) {
        eprintln!("cannot write the configuration: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let hosts: Vec<String> = servers.iter().map(|s| s.addr().to_string()).collect();
    println!("ready {}", hosts.join(" "));
    let _ = tokio::signal::ctrl_c().await;
    drop(servers);
    std::process::ExitCode::SUCCESS
}
