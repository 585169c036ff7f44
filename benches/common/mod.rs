//! The state both metrics benches measure: N UQPay accounts, each with a threshold and, once
//! polled, 3 currencies x 6 kinds of balance with different amounts, as real balances are.

use std::path::Path;

use balance_exporter::config::{self, Config, Format};
use balance_exporter::snapshot::Snapshot;
use rust_decimal::Decimal;

const CURRENCIES: [&str; 3] = ["SGD", "USD", "HKD"];
const KINDS: [&str; 6] = [
    "available",
    "payable",
    "pending",
    "reserved",
    "margin",
    "frozen",
];

/// A configuration of `accounts` UQPay accounts, a USD threshold each.
pub fn uqpay_config(accounts: usize) -> Config {
    let mut yaml = String::from("accounts:\n");
    for i in 0..accounts {
        yaml.push_str(&format!(
            "  - name: uqpay-{i:05}\n    provider: uqpay\n    base_url: http://127.0.0.1:1/api\n    client_id: client-{i}\n    api_key: key-{i}\n    thresholds:\n      - currency: USD\n        warning: 1000\n        critical: 100\n"
        ));
    }
    config::parse(&yaml, Format::Yaml, Path::new(".")).expect("valid config")
}

/// What a poll of the `i`th account found: every currency and kind, amounts with cents.
pub fn uqpay_snapshot(i: usize) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for (c, currency) in CURRENCIES.iter().enumerate() {
        for (k, kind) in KINDS.iter().enumerate() {
            let cents = (i * 1_000_003 + c * 7_919 + k * 104_729) as i64;
            snapshot.add(currency, kind, Some(Decimal::new(cents, 2)));
        }
    }
    snapshot
}
