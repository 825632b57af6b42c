//! Who may take an ingest slot, decided before the body is read.
//!
//! An agent names its terminal in the [`TERMINAL_HEADER`] header; its token is checked against
//! that name first, then the terminal's own limits (requests in flight, a token bucket), and only
//! then does the request take a slot of the identified pool. A request without the header (an
//! agent from before it, or anybody without a token) takes its slot from a small pool of its own,
//! so slow or unauthenticated senders can never take the slots of identified agents.
//!
//! Per-terminal state exists only for terminals whose token was valid, so its size is bounded by
//! the fleet; entries idle long enough for their bucket to be full again are pruned.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use posmon_protocol::TERMINAL_HEADER;

/// A token bucket: `burst` tokens at most, refilled at `per_second`; a request takes one.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn full(burst: f64, now: Instant) -> Self {
        TokenBucket {
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant, per_second: f64, burst: f64) {
        // A clock that went backwards adds nothing rather than panicking.
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.updated = now;
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Instant, per_second: f64, burst: f64) -> Result<(), Duration> {
        self.refill(now, per_second, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let seconds = (1.0 - self.tokens) / per_second;
        Err(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::from_secs(3600)))
    }

    /// Puts back, at `now`, a token taken for something that turned out not to cost one; never
    /// beyond `burst`.
    pub fn give_back(&mut self, now: Instant, per_second: f64, burst: f64) {
        self.refill(now, per_second, burst);
        self.tokens = (self.tokens + 1.0).min(burst);
    }

    /// Whether a token is there at `now`, without taking it.
    pub fn has_token(&mut self, now: Instant, per_second: f64, burst: f64) -> bool {
        self.refill(now, per_second, burst);
        self.tokens >= 1.0
    }

    /// Whether the bucket is full at `now`: the terminal has been quiet long enough to forget.
    pub fn is_full(&self, now: Instant, per_second: f64, burst: f64) -> bool {
        let mut bucket = *self;
        bucket.refill(now, per_second, burst);
        bucket.tokens >= burst
    }
}

/// Which pool a request takes its ingest slot from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The request names its terminal: its token is checked before a slot is taken.
    Terminal(String),
    /// No terminal header: the small pool of `limits.max_concurrent_unidentified_ingest`.
    Unidentified,
}

/// The claim of a request from its terminal header; an unusable header is an error naming it.
pub fn claim(header: Option<&[u8]>) -> Result<Claim, String> {
    let Some(bytes) = header else {
        return Ok(Claim::Unidentified);
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| format!("the {TERMINAL_HEADER} header is not text"))?
        .trim();
    posmon_protocol::validate::check_terminal_id(text, TERMINAL_HEADER)
        .map_err(|error| format!("the {TERMINAL_HEADER} header: {}", error.problem))?;
    Ok(Claim::Terminal(text.to_string()))
}

/// Why a terminal's request is refused before it takes a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many of its requests in flight at once.
    Busy,
    /// Faster than its rate: a token is there after this long.
    RateLimited(Duration),
}

/// The `Retry-After` seconds for a wait: whole seconds, rounded up, at least one.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs();
    let rounded = if wait.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    rounded.max(1)
}

/// How often a shard drops the entries of quiet terminals.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Shards of the per-terminal map: ingest of different terminals rarely waits on one lock.
const SHARDS: usize = 16;

struct Entry {
    in_flight: usize,
    bucket: TokenBucket,
}

struct Shard {
    entries: HashMap<String, Entry>,
    next_prune: Option<Instant>,
}

/// Per-terminal fairness: requests in flight and a rate per terminal.
pub struct Fairness {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    max_in_flight: usize,
    per_second: f64,
    burst: f64,
}

impl Fairness {
    pub fn new(max_in_flight: usize, requests_per_minute: u32, burst: u32) -> Self {
        Fairness {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::new(),
                        next_prune: None,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            max_in_flight: max_in_flight.max(1),
            per_second: f64::from(requests_per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
        }
    }

    fn shard_of(&self, terminal: &str) -> usize {
        // The remainder is below SHARDS, so the conversion cannot truncate.
        (self.hasher.hash_one(terminal) % SHARDS as u64) as usize
    }

    /// Admits one request of an authenticated `terminal` at `now`: the returned guard counts
    /// it in flight until dropped.
    pub fn enter(self: &Arc<Self>, terminal: &str, now: Instant) -> Result<InFlight, Refusal> {
        let index = self.shard_of(terminal);
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.next_prune.is_none_or(|when| now >= when) {
            self.prune_shard(&mut shard, now);
        }
        let burst = self.burst;
        let entry = match shard.entries.get_mut(terminal) {
            Some(entry) => entry,
            None => shard
                .entries
                .entry(terminal.to_string())
                .or_insert_with(|| Entry {
                    in_flight: 0,
                    bucket: TokenBucket::full(burst, now),
                }),
        };
        if entry.in_flight >= self.max_in_flight {
            return Err(Refusal::Busy);
        }
        entry
            .bucket
            .take(now, self.per_second, self.burst)
            .map_err(Refusal::RateLimited)?;
        entry.in_flight += 1;
        Ok(InFlight {
            fairness: Arc::clone(self),
            shard: index,
            terminal: terminal.to_string(),
        })
    }

    fn prune_shard(&self, shard: &mut Shard, now: Instant) {
        let (per_second, burst) = (self.per_second, self.burst);
        shard.entries.retain(|_, entry| {
            entry.in_flight > 0 || !entry.bucket.is_full(now, per_second, burst)
        });
        shard.next_prune = now.checked_add(PRUNE_INTERVAL);
    }

    /// Forgets every terminal with nothing in flight and a full bucket at `now` (each shard
    /// also does it by itself every [`PRUNE_INTERVAL`] when it is used).
    #[cfg(test)]
    pub fn prune(&self, now: Instant) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            self.prune_shard(&mut shard, now);
        }
    }

    /// Terminals with an entry now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }
}

/// One request of a terminal in flight; dropping it ends it.
pub struct InFlight {
    fairness: Arc<Fairness>,
    shard: usize,
    terminal: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut shard = self.fairness.shards[self.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = shard.entries.get_mut(&self.terminal) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(3.0, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(start, 1.0, 3.0), Ok(()));
        }
        let wait = bucket.take(start, 1.0, 3.0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-9, "{wait:?}");
        // Half a second later half a token is there: half a second to go.
        let later = start + Duration::from_millis(500);
        let wait = bucket.take(later, 1.0, 3.0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        let later = start + Duration::from_secs(1);
        assert_eq!(bucket.take(later, 1.0, 3.0), Ok(()));
        // A long quiet spell refills to the burst, not beyond.
        let much_later = start + Duration::from_secs(1_000_000);
        assert!(bucket.is_full(much_later, 1.0, 3.0));
        for _ in 0..3 {
            assert_eq!(bucket.take(much_later, 1.0, 3.0), Ok(()));
        }
        assert!(bucket.take(much_later, 1.0, 3.0).is_err());
        // Time going backwards neither panics nor refills.
        assert!(bucket.take(start, 1.0, 3.0).is_err());
    }

    #[test]
    fn extreme_rates_do_not_panic() {
        let now = Instant::now();
        let mut bucket = TokenBucket::full(1.0, now);
        assert_eq!(bucket.take(now, 1e-300, 1.0), Ok(()));
        let wait = bucket.take(now, 1e-300, 1.0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(3600), "capped");
        assert_eq!(retry_after_seconds(wait), 3600);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        for (wait, seconds) in [
            (Duration::ZERO, 1),
            (Duration::from_millis(1), 1),
            (Duration::from_secs(1), 1),
            (Duration::from_millis(1001), 2),
            (Duration::from_secs(59), 59),
            (Duration::MAX, u64::MAX),
        ] {
            assert_eq!(retry_after_seconds(wait), seconds, "{wait:?}");
        }
    }

    #[test]
    fn the_header_chooses_the_pool() {
        let long = "T".repeat(65);
        type Case<'a> = (Option<&'a [u8]>, Result<Claim, &'a str>);
        let cases: [Case; 7] = [
            (None, Ok(Claim::Unidentified)),
            (Some(b"T-0001"), Ok(Claim::Terminal("T-0001".into()))),
            (Some(b" T-0001 "), Ok(Claim::Terminal("T-0001".into()))),
            (Some(b""), Err("x-posmon-terminal header")),
            (Some(b"T 1"), Err("x-posmon-terminal header")),
            (Some(b"\xff\xfe"), Err("not text")),
            (Some(long.as_bytes()), Err("x-posmon-terminal header")),
        ];
        for (header, expected) in cases {
            let claimed = claim(header);
            match (&claimed, expected) {
                (Ok(claimed), Ok(expected)) => assert_eq!(claimed, &expected),
                (Err(message), Err(fragment)) => {
                    assert!(message.contains(fragment), "{header:?}: {message}")
                }
                _ => panic!("{header:?}: {claimed:?}"),
            }
        }
    }

    #[test]
    fn a_terminal_has_a_bounded_number_in_flight_and_a_rate() {
        let fairness = Arc::new(Fairness::new(2, 60, 5));
        let now = Instant::now();
        let first = fairness.enter("T-1", now).unwrap();
        let second = fairness.enter("T-1", now).unwrap();
        assert_eq!(fairness.enter("T-1", now).err(), Some(Refusal::Busy));
        // Another terminal is not affected.
        let other = fairness.enter("T-2", now).unwrap();
        drop(first);
        let third = fairness.enter("T-1", now).unwrap();
        drop((second, third, other));
        // Two tokens of five are left for T-1; then it waits a second per request.
        fairness.enter("T-1", now).unwrap();
        fairness.enter("T-1", now).unwrap();
        match fairness.enter("T-1", now).err() {
            Some(Refusal::RateLimited(wait)) => {
                assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}")
            }
            other => panic!("{other:?}"),
        }
        assert!(fairness.enter("T-1", now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn quiet_terminals_are_forgotten() {
        let fairness = Arc::new(Fairness::new(2, 60, 5));
        let now = Instant::now();
        for index in 0..200 {
            drop(fairness.enter(&format!("T-{index}"), now).unwrap());
        }
        let busy = fairness.enter("T-busy", now).unwrap();
        assert_eq!(fairness.tracked(), 201);
        // Half a second later no bucket is full again yet (each took one of five tokens, and
        // one comes back a second): nobody is forgotten.
        fairness.prune(now + Duration::from_millis(500));
        assert_eq!(fairness.tracked(), 201);
        // Five seconds refill five tokens: only the one in flight stays.
        fairness.prune(now + Duration::from_secs(5));
        assert_eq!(fairness.tracked(), 1);
        drop(busy);
        fairness.prune(now + Duration::from_secs(5));
        assert_eq!(fairness.tracked(), 0);
    }
}
