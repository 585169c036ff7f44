//! The cost of one render of `/metrics`: the state of 1,000 UQPay accounts, each with 3
//! currencies x 6 kinds of balance (18,000 `balance_amount` series, plus per-account series),
//! into the exposition text and its gzip. This is what the render task does after polls;
//! scrapes only copy the finished body.
//!
//! `cargo bench --bench render`

mod common;

use std::hint::black_box;
use std::time::Duration;

use balance_exporter::metrics::{Metrics, gzip};
use criterion::{Criterion, criterion_group, criterion_main};

const ACCOUNTS: usize = 1_000;
/// Metrics holding `ACCOUNTS` polled accounts.
fn polled_state() -> std::sync::Arc<Metrics> {
    let config = common::uqpay_config(ACCOUNTS);
    let metrics = Metrics::new();
    metrics.configure(&config.accounts, config.global.stale_after);
    for (i, account) in config.accounts.iter().enumerate() {
        let snapshot = common::uqpay_snapshot(i);
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
