//! The wall clock as the exporter sees it. Providers stamp requests with it and the clock-skew
//! gauge compares against it; tests give it an offset to play a host whose clock is off.

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    /// Added to the system time, in milliseconds (negative: behind).
    offset_ms: i64,
}

impl Clock {
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock `offset_ms` milliseconds ahead of the system's (behind when negative).
    pub fn with_offset_ms(offset_ms: i64) -> Self {
        Clock { offset_ms }
    }

    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let offset = Duration::from_millis(self.offset_ms.unsigned_abs());
        if self.offset_ms >= 0 {
            now + offset
        } else {
            now - offset
        }
    }

    /// Milliseconds since the Unix epoch, as request timestamps are written.
    pub fn now_millis(&self) -> u64 {
        self.now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Seconds since the Unix epoch as a float (negative before it).
pub fn unix_seconds_f64(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// `a - b` in seconds, negative when `a` is earlier.
pub fn signed_seconds_between(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_move_the_clock_both_ways() {
        let ahead = Clock::with_offset_ms(16 * 60 * 1000);
        let behind = Clock::with_offset_ms(-16 * 60 * 1000);
        let diff = signed_seconds_between(ahead.now(), behind.now());
        assert!((diff - 1920.0).abs() < 5.0, "{diff}");
    }
}
