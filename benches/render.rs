//! The cost of one render of `/metrics`: the state of 1,000 UQPay accounts, each with 3
//! currencies x 6 kinds of balance (18,000 `balance_amount` series, plus per-account series),
//! into the exposition text and its gzip. This is what the render task does after polls;
//! scrapes only copy the finished body.
//!
//! `cargo bench --bench render`

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use balance_exporter::config::{self, Format};
use balance_exporter::metrics::{Metrics, gzip};
use balance_exporter::snapshot::Snapshot;
use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;

const ACCOUNTS: usize = 1_000;
const CURRENCIES: [&str; 3] = ["SGD", "USD", "HKD"];
const KINDS: [&str; 6] = [
    "available",
    "payable",
    "pending",
    "reserved",
    "margin",
    "frozen",
];

/// Metrics holding `ACCOUNTS` polled accounts.
fn polled_state() -> std::sync::Arc<Metrics> {
    let mut yaml = String::from("accounts:\n");
    for i in 0..ACCOUNTS {
        yaml.push_str(&format!(
            "  - name: uqpay-{i:05}\n    provider: uqpay\n    base_url: http://127.0.0.1:1/api\n    client_id: client-{i}\n    api_key: key-{i}\n    thresholds:\n      - currency: USD\n        warning: 1000\n        critical: 100\n"
        ));
    }
    let config = config::parse(&yaml, Format::Yaml, Path::new(".")).expect("valid config");
    let metrics = Metrics::new();
    metrics.configure(&config.accounts, config.global.stale_after);
    for (i, account) in config.accounts.iter().enumerate() {
        let mut snapshot = Snapshot::default();
        for (c, currency) in CURRENCIES.iter().enumerate() {
            for (k, kind) in KINDS.iter().enumerate() {
                // Amounts with cents, all different, as real balances are.
                let cents = (i * 1_000_003 + c * 7_919 + k * 104_729) as i64;
                snapshot.add(currency, kind, Some(Decimal::new(cents, 2)));
            }
        }
        metrics.record_poll(&account.name, &Ok(snapshot), Duration::from_millis(120));
    }
    metrics
}

fn bench(c: &mut Criterion) {
    let metrics = polled_state();
    metrics.render_now();
    let body = metrics.bodies();
    assert!(body.plain.len() > 1_000_000, "{} bytes", body.plain.len());
    eprintln!(
        "body: {} bytes plain, {} bytes gzip",
        body.plain.len(),
        body.gzip.len()
    );

    let mut group = c.benchmark_group("render 1,000 accounts x 3 currencies x 6 kinds");
    group.sample_size(20);
    group.bench_function("state -> plain + gzip body", |b| {
        b.iter(|| metrics.render_now())
    });
    group.bench_function("gzip only", |b| b.iter(|| gzip(black_box(&body.plain))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
