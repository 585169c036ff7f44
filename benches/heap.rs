//! Heap bytes per series of the metrics state, counted by a counting global allocator: the
//! state of N UQPay accounts (3 currencies x 6 kinds, a threshold each, polled once, every
//! documented error code at 0), live after a render ("steady": state, per-account series and
//! the served plain + gzip bodies) and the most live at once during a render ("peak"), against
//! the size of the rendered text. In-process, without pollers, HTTP client or simulators: the
//! exporter's own VmRSS/VmHWM come from `bench/run`.
//!
//! `cargo bench --bench heap [-- 10 100 1000 10000]`, one line per account count.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use balance_exporter::metrics::Metrics;

/// Counts the bytes allocated and not yet freed, and the most at once since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn measure(accounts: usize) {
    let config = common::uqpay_config(accounts);
    let before = live();
    let metrics = Metrics::new();
    let handles = metrics.configure(&config.accounts, config.global.stale_after);
    for (i, account) in config.accounts.iter().enumerate() {
        let snapshot = common::uqpay_snapshot(i);
        handles[i].observe_request("balance", Duration::from_millis(80));
        handles[i].observe_request("token", Duration::from_millis(40));
        handles[i].count_token_refresh();
        metrics.record_poll(&account.name, &Ok(snapshot), Duration::from_millis(120));
    }
    metrics.render_now();
    let steady = live() - before;
    PEAK.store(live(), Ordering::Relaxed);
    metrics.render_now();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let body = metrics.bodies();
    let series = body
        .plain
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .count();
    let per = |bytes: usize| bytes as f64 / series as f64;
    println!(
        "{accounts}\t{series}\t{}\t{}\t{steady}\t{peak}\t{:.0}\t{:.0}\t{:.0}",
        body.plain.len(),
        body.gzip.len(),
        per(steady),
        per(peak),
        per(body.plain.len()),
    );
    drop(body);
    drop(handles);
    drop(metrics);
}

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![10, 100, 1_000, 5_000, 10_000]
    } else {
        counts
    };
    println!(
        "accounts\tseries\tplain_bytes\tgzip_bytes\tsteady_heap_bytes\tpeak_heap_bytes\tsteady_per_series\tpeak_per_series\ttext_per_series"
    );
    for n in counts {
        measure(n);
    }
}
