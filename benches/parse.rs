//! The cost of reading each provider's answer into a snapshot, on bodies shaped like the
//! documented ones (`providers.md`): EngageLab SMS and OTP, a UQPay page of 3 currencies x 6
//! kinds, an Onerway overview of 3 currencies, and PayBy's signed test vector (its figure
//! includes the RSA verify; `benches/payby.rs` has the verify alone).
//!
//! `cargo bench --bench parse`

use std::hint::black_box;
use std::time::SystemTime;

use balance_exporter::providers::payby::VerifyingKey;
use balance_exporter::providers::{Response, engagelab, onerway, payby, uqpay};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hyper::header::{HeaderMap, HeaderValue};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/payby/");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DATA}{name}")).expect("test vector file")
}

fn response(body: &str, headers: HeaderMap) -> Response {
    Response::new(
        200,
        headers,
        Bytes::from(body.to_owned()),
        SystemTime::now(),
    )
}

fn uqpay_page() -> String {
    let entries: Vec<String> = ["SGD", "USD", "HKD"]
        .iter()
        .map(|c| {
            format!(
                r#"{{"balance_id":"bal-{c}","currency":"{c}","available_balance":"182050.25","payable_balance":"180000.00","pending_balance":"2050.25","reserved_balance":"5000.00","margin_balance":"0.00","frozen_balance":"1250.00"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"total_pages":1,"total_items":3,"data":[{}]}}"#,
        entries.join(",")
    )
}

fn onerway_overview() -> String {
    let entries: Vec<String> = ["USD", "EUR", "GBP"]
        .iter()
        .map(|c| {
            format!(
                r#"{{"currency":"{c}","withdrawableBalance":"15000.00","availableBalance":"18250.40","fundOnHold":"3100.00","depositBalance":"5000.00","totalBalance":"26350.40","status":"ACTIVE"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"respCode":"20000","respMsg":"Success","data":{{"totalAmount":"71234.56","displayCurrency":"USD","currencyBalances":[{}]}}}}"#,
        entries.join(",")
    )
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");

    let sms = response(
        r#"{"balance10000":123456,"gift_balance10000":20000,"total_balance10000":143456,"balance":12.3456,"gift_balance":2,"total_balance":14.3456}"#,
        HeaderMap::new(),
    );
    assert_eq!(
        engagelab::parse_sms(&sms, "USD")
            .expect("sms")
            .balances
            .len(),
        3
    );
    group.bench_function("engagelab sms", |b| {
        b.iter(|| engagelab::parse_sms(black_box(&sms), "USD"))
    });

    let otp = response(
        r#"{"currency":"USD","balance":"123.4500","gift_balance":"1.0000","total_balance":"124.4500"}"#,
        HeaderMap::new(),
    );
    assert_eq!(engagelab::parse_otp(&otp).expect("otp").balances.len(), 3);
    group.bench_function("engagelab otp", |b| {
        b.iter(|| engagelab::parse_otp(black_box(&otp)))
    });

    let page = response(&uqpay_page(), HeaderMap::new());
    assert_eq!(uqpay::parse_page(&page).expect("page").0.balances.len(), 18);
    group.bench_function("uqpay page, 3 currencies x 6 kinds", |b| {
        b.iter(|| uqpay::parse_page(black_box(&page)))
    });

    let overview = response(&onerway_overview(), HeaderMap::new());
    let read_overview = |r: &Response| {
        onerway::interpret(r).and_then(|data| onerway::parse_overview(&data, Some("USD"), 100))
    };
    assert_eq!(
        read_overview(&overview).expect("overview").balances.len(),
        15
    );
    group.bench_function("onerway overview, 3 currencies", |b| {
        b.iter(|| read_overview(black_box(&overview)))
    });

    let payby_key = VerifyingKey::from_text(&read("payby_public_key.pem")).expect("key");
    let mut headers = HeaderMap::new();
    let sign = read("response_sign.txt");
    headers.insert("sign", HeaderValue::from_str(sign.trim()).expect("header"));
    let signed = response(&read("response_body.json"), headers);
    assert!(
        !payby::interpret(&signed, &payby_key)
            .expect("payby")
            .is_empty()
    );
    group.bench_function("payby (verify + parse)", |b| {
        b.iter(|| payby::interpret(black_box(&signed), &payby_key))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
