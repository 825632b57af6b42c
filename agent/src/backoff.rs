//! Retry timing: exponential backoff with full jitter, and the collector's `Retry-After`.
//!
//! Full jitter (a uniform delay between zero and the exponential bound) spreads thousands of
//! agents that failed at the same instant — a collector outage — over the whole window, so they
//! do not come back as one wave.

use std::time::{Duration, SystemTime};

/// The delay before retry number `attempt` (0 for the first retry): uniform in
/// `[0, min(cap, base · 2^attempt)]`, where `unit` is a uniform random number in [0, 1).
pub fn full_jitter(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let factor = 2f64.powi(attempt.min(62) as i32);
    let bound = (base.as_secs_f64() * factor).min(cap.as_secs_f64());
    Duration::from_secs_f64(bound * unit.clamp(0.0, 1.0))
}

/// The longest wait a `Retry-After` can impose: the collector is not trusted to park an agent
/// for days (a broken or hostile one could say 2^64 − 1 seconds, or a date in year 9999).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);

/// A `Retry-After` value: delay-seconds or an HTTP date, relative to `now`, at most
/// [`RETRY_AFTER_MAX`]. A date in the past means "now"; anything unparsable is ignored.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if value.bytes().all(|byte| byte.is_ascii_digit()) && !value.is_empty() {
        // More digits than a u64 holds is still "a very long time", not garbage.
        value
            .parse::<u64>()
            .map_or(RETRY_AFTER_MAX, Duration::from_secs)
    } else {
        let when = httpdate::parse_http_date(value).ok()?;
        when.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

/// A small fast generator for jitter, seeded from the OS. Not for secrets.
pub struct Jitter(u64);

impl Jitter {
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        // Without OS randomness, fall back to the clock: jitter only needs to differ between
        // terminals, not to be unpredictable.
        if getrandom::fill(&mut seed).is_err() {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos() as u64);
            seed = (nanos ^ u64::from(std::process::id())).to_le_bytes();
        }
        Jitter(u64::from_le_bytes(seed) | 1)
    }

    /// A uniform number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (value >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(attempt: u32, unit: f64, expected_seconds: f64) {
        let delay = full_jitter(
            attempt,
            Duration::from_secs(1),
            Duration::from_secs(300),
            unit,
        );
        assert!(
            (delay.as_secs_f64() - expected_seconds).abs() < 1e-9,
            "attempt {attempt}, unit {unit}: {delay:?}"
        );
    }

    #[test]
    fn the_bound_doubles_up_to_the_cap() {
        check(0, 0.999_999_999, 0.999_999_999);
        check(0, 0.5, 0.5);
        check(3, 1.0, 8.0);
        check(3, 0.25, 2.0);
        check(8, 1.0, 256.0);
        check(9, 1.0, 300.0);
        check(1000, 1.0, 300.0);
        check(1000, 0.0, 0.0);
        check(2, -3.0, 0.0);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Thu, 26 Nov 2026 02:00:00 GMT").unwrap();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Thu, 26 Nov 2026 02:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Thu, 26 Nov 2026 01:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn retry_after_is_capped_and_never_overflows() {
        let now = httpdate::parse_http_date("Thu, 26 Nov 2026 02:00:00 GMT").unwrap();
        let cases: [(&str, Option<Duration>); 12] = [
            ("18446744073709551615", Some(RETRY_AFTER_MAX)),
            ("99999999999999999999999999", Some(RETRY_AFTER_MAX)),
            ("601", Some(RETRY_AFTER_MAX)),
            ("600", Some(Duration::from_secs(600))),
            ("0", Some(Duration::ZERO)),
            ("Fri, 31 Dec 9999 23:59:59 GMT", Some(RETRY_AFTER_MAX)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(Duration::ZERO)),
            ("Mon, 01 Jan 0001 00:00:00 GMT", None),
            ("Sat, 01 Jan 10000 00:00:00 GMT", None),
            ("", None),
            ("1e308", None),
            ("NaN", None),
        ];
        for (value, expected) in cases {
            assert_eq!(retry_after(value, now), expected, "{value:?}");
        }
        // The far future seen from the far past, and the reverse.
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(
            retry_after("Fri, 31 Dec 9999 23:59:59 GMT", epoch),
            Some(RETRY_AFTER_MAX)
        );
        let far = epoch + Duration::from_secs(253_402_300_799);
        assert_eq!(
            retry_after("Thu, 01 Jan 1970 00:00:00 GMT", far),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn jitter_spreads_over_the_whole_window() {
        let mut jitter = Jitter::new();
        let draws: Vec<f64> = (0..10_000).map(|_| jitter.unit()).collect();
        assert!(draws.iter().all(|draw| (0.0..1.0).contains(draw)));
        for decile in 0..10 {
            let low = f64::from(decile) / 10.0;
            let count = draws
                .iter()
                .filter(|draw| (low..low + 0.1).contains(*draw))
                .count();
            assert!((800..1200).contains(&count), "decile {decile}: {count}");
        }
    }
}
