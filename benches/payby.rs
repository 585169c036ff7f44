//! The cost of PayBy's cryptography per request: signing the request body with the merchant's
//! RSA-2048 key (blinded, as the exporter does it) and verifying the answer's signature with
//! PayBy's public key. Keys and bodies are the test vector's.
//!
//! `cargo bench --bench payby`

use std::hint::black_box;

use balance_exporter::providers::payby::{SigningKey, VerifyingKey};
use criterion::{Criterion, criterion_group, criterion_main};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/payby/");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DATA}{name}")).expect("test vector file")
}

fn bench(c: &mut Criterion) {
    let merchant = SigningKey::from_pem(&read("merchant_private_key_pkcs8.pem")).expect("key");
    let payby = VerifyingKey::from_text(&read("payby_public_key.pem")).expect("key");
    let request = read("request_body.json");
    let response = read("response_body.json");
    let response_sign = read("response_sign.txt");
    assert!(payby.verify(response.as_bytes(), &response_sign));

    c.bench_function("payby sign + verify", |b| {
        b.iter(|| {
            let sign = merchant.sign(black_box(request.as_bytes())).expect("sign");
            let ok = payby.verify(black_box(response.as_bytes()), black_box(&response_sign));
            black_box((sign, ok))
        })
    });
    c.bench_function("payby sign (blinded)", |b| {
        b.iter(|| merchant.sign(black_box(request.as_bytes())).expect("sign"))
    });
    c.bench_function("payby verify", |b| {
        b.iter(|| payby.verify(black_box(response.as_bytes()), black_box(&response_sign)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
