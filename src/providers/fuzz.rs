//! Property-test inputs for the response parsers (and the config loader): arbitrary bytes,
//! and valid answers taken apart (bytes flipped, inserted or deleted, numbers replaced by
//! extreme or malformed ones, deep nesting, truncation). The property is always the same: the
//! parser returns, `Ok` or `Err`, and never panics.
//!
//! Cases default to proptest's 256 per property; `PROPTEST_CASES` overrides.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::Response;
#[cfg(feature = "demo")]
use crate::sim::{SimRequest, SimResponse};

/// Numbers that break naive parsing: out of range, negative, exponents, not numbers at all.
const NASTY_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "1E+2147483648",
    "1e-9223372036854775809",
    "79228162514264337593543950336",
    "-79228162514264337593543950336",
    "0.00000000000000000000000000001",
    "99999999999999999999999999999999999999999",
    "18446744073709551616",
    "-9223372036854775809",
    "-0",
    "-",
    "1.",
    ".5",
    "1e",
    "0x10",
    "NaN",
    "Infinity",
    "-Infinity",
    "\"NaN\"",
    "\"1e999999999\"",
    "null",
    "[]",
    "{}",
];

/// One change to a valid body.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    /// Replaces the n-th number with a nasty one.
    Number(usize, usize),
    /// Replaces the n-th number with that number nested this deep in arrays.
    NestNumber(usize, usize),
    /// Wraps the whole body in this many arrays or objects.
    Nest(usize, bool),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), 0..NASTY_NUMBERS.len()).prop_map(|(i, n)| Mutation::Number(i, n)),
        (any::<usize>(), 1..400usize).prop_map(|(i, d)| Mutation::NestNumber(i, d)),
        (1..400usize, any::<bool>()).prop_map(|(d, o)| Mutation::Nest(d, o)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// Byte ranges of the number-looking runs of `body` (inside strings too: amounts come as both).
fn numbers(body: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let starts = body[i].is_ascii_digit()
            || (body[i] == b'-' && body.get(i + 1).is_some_and(u8::is_ascii_digit));
        if starts {
            let start = i;
            i += 1;
            while i < body.len()
                && matches!(body[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
            {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

fn apply(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut body = seed.to_vec();
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match *m {
            Mutation::Flip(i, b) if !body.is_empty() => {
                let i = at(i, body.len());
                body[i] ^= b;
            }
            Mutation::Insert(i, b) => {
                let i = at(i, body.len() + 1);
                body.insert(i, b);
            }
            Mutation::Delete(i) if !body.is_empty() => {
                let i = at(i, body.len());
                body.remove(i);
            }
            Mutation::Number(i, n) | Mutation::NestNumber(i, n) => {
                let found = numbers(&body);
                if found.is_empty() {
                    continue;
                }
                let (start, end) = found[at(i, found.len())];
                let replacement = match m {
                    Mutation::Number(..) => NASTY_NUMBERS[n].as_bytes().to_vec(),
                    _ => {
                        let mut nested = "[".repeat(n).into_bytes();
                        nested.extend_from_slice(&body[start..end]);
                        nested.extend(std::iter::repeat_n(b']', n));
                        nested
                    }
                };
                body.splice(start..end, replacement);
            }
            Mutation::Nest(depth, object) => {
                let (open, close) = if object {
                    (r#"{"a":"#, "}")
                } else {
                    ("[", "]")
                };
                let mut nested = open.repeat(depth).into_bytes();
                nested.extend_from_slice(&body);
                nested.extend(close.repeat(depth).into_bytes());
                body = nested;
            }
            Mutation::Truncate(i) => {
                let i = at(i, body.len() + 1);
                body.truncate(i);
            }
            _ => {}
        }
    }
    body
}

/// Arbitrary bytes, JSON-looking noise, and mutations of `seeds`.
pub fn bodies(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty());
    let count = seeds.len();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        1 => "[\\[\\]{}\":,0-9a-z_.eE+ -]{0,256}".prop_map(String::into_bytes),
        4 => (0..count, proptest::collection::vec(mutation(), 1..6))
            .prop_map(move |(i, m)| apply(&seeds[i], &m)),
    ]
}

/// HTTP statuses a provider (or a proxy in front of it) answers with.
pub fn statuses() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![
        200u16, 201, 204, 400, 401, 403, 404, 429, 500, 502, 503,
    ])
}

/// Runs `parse` on `(status, body)` pairs made from `seeds`; a panic fails with the smallest
/// input found.
#[cfg(feature = "demo")] // for the providers' tests, which need the simulators
pub fn check(seeds: Vec<Vec<u8>>, parse: impl Fn(u16, &[u8])) {
    let mut runner = TestRunner::new(Config::default());
    let result = runner.run(&(statuses(), bodies(seeds)), |(status, body)| {
        parse(status, &body);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A response as `PollContext::call` hands it to a provider.
#[cfg(feature = "demo")] // for the providers' tests, which need the simulators
pub fn response(status: u16, body: &[u8], headers: &[(&str, &str)]) -> Response {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) {
            map.insert(name, value);
        }
    }
    Response::new(
        status,
        map,
        body.to_vec().into(),
        std::time::SystemTime::now(),
    )
}

/// A request as a simulator receives it.
#[cfg(feature = "demo")]
pub fn sim_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> SimRequest {
    let mut map = hyper::header::HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            hyper::header::HeaderValue::from_str(value).expect("header value"),
        );
    }
    SimRequest {
        method: method.into(),
        path: path.into(),
        query: query.map(str::to_owned),
        headers: map,
        body: body.into(),
    }
}

/// Runs a simulator's handler outside any server.
#[cfg(feature = "demo")]
pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// The body of a simulator's answer, checked to be a real one (not a fallback).
#[cfg(feature = "demo")]
pub fn answer_body(response: SimResponse, expected_status: u16) -> Vec<u8> {
    assert_eq!(
        response.status,
        expected_status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.body.to_vec()
}

#[test]
fn mutations_touch_numbers_and_nest() {
    let seed = br#"{"a":12.5,"b":"-3"}"#;
    assert_eq!(numbers(seed), [(5, 9), (15, 17)]);
    assert_eq!(
        apply(seed, &[Mutation::Number(1, 0)]),
        br#"{"a":12.5,"b":"1e400"}"#
    );
    assert_eq!(
        apply(seed, &[Mutation::NestNumber(0, 2)]),
        br#"{"a":[[12.5]],"b":"-3"}"#
    );
    assert_eq!(apply(b"1", &[Mutation::Nest(2, false)]), b"[[1]]");
}

/// Header values a provider (or a proxy) might send: huge and negative numbers, HTTP dates in
/// and out of range, junk, and bytes that are not UTF-8.
pub fn header_values() -> impl Strategy<Value = Vec<u8>> {
    let nasty: Vec<Vec<u8>> = [
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999999999999999999",
        "-1",
        "-18446744073709551615",
        "0",
        "+5",
        "1.5",
        "1e9",
        "",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Fri, 31 Dec 10000 23:59:59 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "bm90IGEgc2lnbmF0dXJl",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    prop_oneof![
        2 => prop::sample::select(nasty),
        1 => "[0-9]{0,40}".prop_map(String::into_bytes),
        1 => "[ -~]{0,64}".prop_map(String::into_bytes),
        // Visible ASCII and obs-text (0x80-0xff): what a header value may carry on the wire.
        1 => proptest::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 0..64),
    ]
}

/// Headers whose values carry meaning: waits, dates, signatures, lengths.
const MEANINGFUL_HEADERS: &[&str] = &[
    "retry-after",
    "date",
    "sign",
    "content-length",
    "content-type",
    "x-ratelimit-reset",
];

/// A response with `status` and `body` and arbitrary values of [`MEANINGFUL_HEADERS`].
pub fn hostile_responses(body: Vec<u8>) -> impl Strategy<Value = Response> {
    let headers = proptest::collection::vec(
        (prop::sample::select(MEANINGFUL_HEADERS), header_values()),
        0..6,
    );
    (statuses(), headers, any::<u64>()).prop_map(move |(status, headers, received)| {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            if let Ok(value) = reqwest::header::HeaderValue::from_bytes(&value) {
                map.append(name, value);
            }
        }
        // Any moment the local clock could read, from the epoch to year 2554.
        let received_at =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(received);
        Response::new(status, map, body.clone().into(), received_at)
    })
}

/// Runs `interpret` on responses with arbitrary statuses and header values around each of
/// `bodies`; a panic fails with the smallest input found. For providers' own interpreters.
pub fn check_headers(bodies: Vec<Vec<u8>>, interpret: impl Fn(&Response)) {
    let mut runner = TestRunner::new(Config::default());
    for body in bodies {
        let result = runner.run(&hostile_responses(body), |response| {
            interpret(&response);
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

#[test]
fn hostile_headers_never_panic_the_shared_interpretation() {
    use crate::providers::http::MAX_RETRY_AFTER;
    check_headers(vec![Vec::new(), b"{}".to_vec()], |response| {
        let wait = response.retry_after();
        assert!(wait.is_none_or(|w| w <= MAX_RETRY_AFTER), "{wait:?}");
        let error = response.status_error();
        assert!(error.retry_after.is_none_or(|w| w <= MAX_RETRY_AFTER));
        let _ = response.header("date");
        let _ = response.header("sign");
        let _ = response.is_success();
        let _ = response.json::<serde_json::Value>();
        // A clamped wait is added to any instant without overflow.
        let _ =
            crate::providers::http::later(tokio::time::Instant::now(), wait.unwrap_or_default());
    });
}
