//! Recent values of each thresholded balance of an account: the status page's trend over the
//! last hour and its runway at the current burn rate. Display only: the amounts shown and
//! exported stay decimal; these points are `f32`.
//!
//! Memory is the constraint (thousands of accounts in a few tens of MiB): an account keeps one
//! allocation, nothing when it has no threshold. Its layout is the key of each series (a 32-bit
//! hash of kind and currency), then a ring of points, each a poll time (`u32`
//! seconds since the Unix epoch) followed by one `f32` per series. A ring holds at most
//! [`MAX_POINTS`] points, and one point per poll interval of the last hour at most: 15,000
//! thresholded balances at 5,000 accounts polled every 10 minutes take 184 bytes an account
//! with allocator overhead, 0.88 MiB in all
//! (`the_history_of_5000_accounts_polled_every_10_minutes_fits_in_under_a_mebibyte`).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rust_decimal::Decimal;

use super::AccountState;
use crate::config::Threshold;
use crate::snapshot::Snapshot;

/// How far back the trend goes.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// The most points a series keeps, whatever the poll interval.
pub const MAX_POINTS: usize = 60;

/// Points kept per series for `poll_interval`: one per interval over [`WINDOW`], plus the
/// newest, at most [`MAX_POINTS`].
pub fn capacity(poll_interval: Duration) -> usize {
    let per_window = WINDOW.as_secs() / poll_interval.as_secs().max(1) + 1;
    usize::try_from(per_window).map_or(MAX_POINTS, |n| n.min(MAX_POINTS))
}

/// The key of a balance's series. A collision (two currencies of one account with the same
/// hash, which only crafted names could cause) mixes their trend lines, nothing more.
pub fn key(kind: &str, currency: &str) -> u32 {
    // Fixed keys: the same balance has the same key in every copy of the state.
    let mut hasher = std::hash::DefaultHasher::new();
    kind.hash(&mut hasher);
    currency.hash(&mut hasher);
    // The low half: a handful of series per account need no more to stay apart.
    hasher.finish() as u32
}

/// One point of a series: when, and the amount then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds since the Unix epoch.
    pub at: u32,
    pub value: f32,
}

/// The recent points of an account's thresholded balances (see the module docs for the
/// layout). Cloning shares the points until one copy records a new one.
#[derive(Debug, Clone, Default)]
pub struct History {
    data: Option<Arc<[u32]>>,
    series: u16,
    capacity: u8,
    /// Ring slot of the oldest point.
    head: u8,
    /// Points stored.
    len: u8,
}

impl History {
    /// Records one poll at `at` (seconds since the Unix epoch): `samples` are the series to
    /// keep, each with its amount (`None`: absent from this answer). Series not among them are
    /// dropped, new ones start empty; an empty list frees everything. Polls closer together
    /// than the ring's spacing (an hour over its capacity) replace the newest point, so that
    /// the ring spans the hour whatever the interval. A clock that went back starts over.
    pub fn record(&mut self, at: u32, capacity: usize, samples: &[(u32, Option<f32>)]) {
        let capacity = capacity.clamp(1, MAX_POINTS);
        if samples.is_empty() {
            *self = History::default();
            return;
        }
        let keys: Vec<u32> = samples.iter().map(|(k, _)| *k).collect();
        if !self.keys().eq(keys.iter().copied()) || usize::from(self.capacity) != capacity {
            self.reshape(&keys, capacity);
        }
        if self.len > 0 && self.time(self.len - 1) > at {
            self.len = 0;
        }
        let spacing = (WINDOW.as_secs() / (capacity as u64 - 1).max(1)) as u32;
        let slot = if self.len >= 2 && at.saturating_sub(self.time(self.len - 2)) < spacing {
            self.len - 1
        } else if usize::from(self.len) < capacity {
            self.len += 1;
            self.len - 1
        } else {
            self.head = ((usize::from(self.head) + 1) % capacity) as u8;
            self.len - 1
        };
        let start = self.offset(slot);
        let Some(data) = self.data.as_mut() else {
            return;
        };
        let data = Arc::make_mut(data);
        data[start] = at;
        for (i, (_, value)) in samples.iter().enumerate() {
            let value = value.filter(|v| v.is_finite()).unwrap_or(f32::NAN);
            data[start + 1 + i] = value.to_bits();
        }
    }

    /// The points of series `key`, oldest first, without the polls that lacked it.
    pub fn points(&self, key: u32) -> Vec<Point> {
        let Some(series) = self.keys().position(|k| k == key) else {
            return Vec::new();
        };
        let Some(data) = &self.data else {
            return Vec::new();
        };
        (0..self.len)
            .map(|i| self.offset(i))
            .map(|start| Point {
                at: data[start],
                value: f32::from_bits(data[start + 1 + series]),
            })
            .filter(|p| p.value.is_finite())
            .collect()
    }

    /// Bytes on the heap (the one allocation, with its reference counts).
    pub fn heap_bytes(&self) -> usize {
        self.data
            .as_ref()
            .map_or(0, |d| 2 * size_of::<usize>() + size_of_val(&**d))
    }

    fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        let data = self.data.as_deref().unwrap_or(&[]);
        data.iter().take(usize::from(self.series)).copied()
    }

    /// Index in `data` of the `i`-th point from the oldest.
    fn offset(&self, i: u8) -> usize {
        let slot = (usize::from(self.head) + usize::from(i)) % usize::from(self.capacity).max(1);
        usize::from(self.series) + slot * (1 + usize::from(self.series))
    }

    fn time(&self, i: u8) -> u32 {
        self.data.as_ref().map_or(0, |d| d[self.offset(i)])
    }

    /// Rebuilds the allocation for series `keys` and `capacity`, keeping the newest points of
    /// the series that stay.
    fn reshape(&mut self, keys: &[u32], capacity: usize) {
        // More series than this are not tracked (an account guarding that many is a config
        // mistake the metrics already show).
        let keys = &keys[..keys.len().min(usize::from(u16::MAX))];
        let series = keys.len();
        let mut data = vec![0u32; series + capacity * (1 + series)];
        data[..series].copy_from_slice(keys);
        let old_keys: Vec<u32> = self.keys().collect();
        let kept = usize::from(self.len).min(capacity);
        let skipped = usize::from(self.len) - kept;
        if let Some(old) = &self.data {
            for n in 0..kept {
                let from = self.offset((skipped + n) as u8);
                let to = series + n * (1 + series);
                data[to] = old[from];
                for (i, k) in keys.iter().enumerate() {
                    data[to + 1 + i] = match old_keys.iter().position(|o| o == k) {
                        Some(j) => old[from + 1 + j],
                        None => f32::NAN.to_bits(),
                    };
                }
            }
        }
        *self = History {
            data: Some(Arc::from(data)),
            series: series as u16,
            capacity: capacity as u8,
            head: 0,
            len: kept as u8,
        };
    }
}

impl AccountState {
    /// The balances with a threshold: `(threshold, currency)`, each currency and kind once
    /// (its first threshold), in threshold order.
    pub fn thresholded_balances(&self) -> Vec<(&Threshold, &str)> {
        let mut out: Vec<(&Threshold, &str)> = Vec::new();
        for (t, currency) in self.resolved_thresholds() {
            if !out.iter().any(|(o, c)| o.kind == t.kind && *c == currency) {
                out.push((t, currency));
            }
        }
        out
    }

    /// Adds `snapshot`, fetched at `at`, to the history of the thresholded balances.
    pub(super) fn record_history(&mut self, snapshot: &Snapshot, at: SystemTime) {
        let tracked: Vec<u32> = self
            .thresholded_balances()
            .into_iter()
            .map(|(t, currency)| key(t.kind, currency))
            .collect();
        let mut samples: Vec<(u32, Option<f32>)> = tracked.iter().map(|k| (*k, None)).collect();
        if !samples.is_empty() {
            // One pass over the balances, however many a hostile answer lists.
            let index: std::collections::HashMap<u32, usize> =
                tracked.iter().enumerate().map(|(i, k)| (*k, i)).collect();
            for b in &snapshot.balances {
                if let Some(&i) = index.get(&key(b.kind, &b.currency)) {
                    samples[i].1.get_or_insert(to_point_value(b.amount));
                }
            }
        }
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        self.history
            .record(secs, capacity(self.poll_interval), &samples);
    }
}

fn to_point_value(amount: Decimal) -> f32 {
    crate::money::to_gauge(amount) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(h: &History, key: u32) -> Vec<(u32, f32)> {
        h.points(key).iter().map(|p| (p.at, p.value)).collect()
    }

    #[test]
    fn capacity_is_an_hour_of_polls_plus_one_at_most_sixty() {
        let s = Duration::from_secs;
        assert_eq!(capacity(s(600)), 7);
        assert_eq!(capacity(s(300)), 13);
        assert_eq!(capacity(s(60)), MAX_POINTS);
        assert_eq!(capacity(s(5)), MAX_POINTS);
        assert_eq!(capacity(Duration::ZERO), MAX_POINTS);
        assert_eq!(capacity(s(7200)), 1);
    }

    #[test]
    fn the_ring_keeps_the_newest_points_one_per_poll() {
        let (a, b) = (key("total", "USD"), key("gift", "USD"));
        let mut h = History::default();
        for i in 0..10u32 {
            h.record(
                1_000 + 600 * i,
                7,
                &[
                    (a, Some(i as f32)),
                    (b, (i % 2 == 0).then_some(-(i as f32))),
                ],
            );
        }
        let kept = values(&h, a);
        assert_eq!(kept.len(), 7);
        assert_eq!(kept[0], (1_000 + 600 * 3, 3.0));
        assert_eq!(kept[6], (1_000 + 600 * 9, 9.0));
        // The polls that lacked it are gaps, not zeros.
        assert_eq!(values(&h, b), [(3_400, -4.0), (4_600, -6.0), (5_800, -8.0)]);
        assert!(h.points(key("total", "EUR")).is_empty());
    }

    #[test]
    fn polls_closer_than_the_spacing_replace_the_newest_point() {
        let a = key("total", "USD");
        let mut h = History::default();
        // Every 5 s for 10 minutes, 60 points over an hour: one per ~61 s.
        for i in 0..120u32 {
            h.record(5 * i, 60, &[(a, Some(i as f32))]);
        }
        let kept = values(&h, a);
        assert!((9..=11).contains(&kept.len()), "{kept:?}");
        assert_eq!(kept[0], (0, 0.0));
        assert_eq!(*kept.last().unwrap(), (595, 119.0), "the newest is current");
        for pair in kept.windows(3) {
            assert!(pair[2].0 - pair[0].0 >= 61, "{pair:?}");
        }
    }

    #[test]
    fn changed_series_keep_the_points_of_those_that_stay() {
        let (a, b, c) = (key("x", "A"), key("x", "B"), key("x", "C"));
        let mut h = History::default();
        h.record(0, 7, &[(a, Some(1.0)), (b, Some(2.0))]);
        h.record(600, 7, &[(a, Some(1.5)), (b, Some(2.5))]);
        h.record(1200, 7, &[(c, Some(3.0)), (b, Some(3.5))]);
        assert!(h.points(a).is_empty());
        assert_eq!(values(&h, b), [(0, 2.0), (600, 2.5), (1200, 3.5)]);
        assert_eq!(values(&h, c), [(1200, 3.0)]);
        // A shorter ring (a longer poll interval) keeps the newest; its spacing is then an
        // hour, so a poll 20 minutes on replaces the newest point.
        h.record(1800, 2, &[(b, Some(4.0))]);
        assert_eq!(values(&h, b), [(600, 2.5), (1800, 4.0)]);
        // No series left: nothing kept.
        h.record(2400, 2, &[]);
        assert_eq!(h.heap_bytes(), 0);
    }

    #[test]
    fn a_clock_that_went_back_starts_over_and_non_finite_values_are_gaps() {
        let a = key("x", "A");
        let mut h = History::default();
        h.record(10_000, 7, &[(a, Some(1.0))]);
        h.record(10_600, 7, &[(a, Some(f32::INFINITY))]);
        h.record(11_200, 7, &[(a, Some(f32::NAN))]);
        assert_eq!(values(&h, a), [(10_000, 1.0)]);
        h.record(5_000, 7, &[(a, Some(2.0))]);
        assert_eq!(values(&h, a), [(5_000, 2.0)]);
    }

    #[test]
    fn a_copy_keeps_its_points_when_the_original_records() {
        let a = key("x", "A");
        let mut h = History::default();
        h.record(0, 7, &[(a, Some(1.0))]);
        let copy = h.clone();
        h.record(600, 7, &[(a, Some(2.0))]);
        assert_eq!(values(&copy, a), [(0, 1.0)]);
        assert_eq!(values(&h, a).len(), 2);
    }

    /// The memory budget: 5,000 accounts of three thresholded balances each, polled every
    /// 10 minutes, with full rings.
    #[test]
    fn the_history_of_5000_accounts_polled_every_10_minutes_fits_in_under_a_mebibyte() {
        let capacity = capacity(Duration::from_secs(600));
        let mut total = 0;
        for account in 0..5_000u32 {
            let mut h = History::default();
            let keys: Vec<u32> = ["available", "total", "frozen"]
                .iter()
                .map(|kind| key(kind, &format!("C{account}")))
                .collect();
            for poll in 0..20u32 {
                let samples: Vec<(u32, Option<f32>)> =
                    keys.iter().map(|k| (*k, Some(poll as f32))).collect();
                h.record(600 * poll, capacity, &samples);
            }
            assert_eq!(h.points(keys[0]).len(), 7);
            // Allocator overhead: a header and rounding to 16 bytes per allocation.
            total += size_of::<History>() + h.heap_bytes().div_ceil(16) * 16 + 16;
        }
        assert!(total < 1 << 20, "{total} bytes");
        assert_eq!(total, 5_000 * 184, "the figure in the module docs");
    }
}
