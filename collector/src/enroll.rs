//! One-time enrollment codes: an administrator creates a code for a terminal id; the agent on
//! that terminal trades it once for the terminal's token (`http/enroll.rs`,
//! `posmon-agent enroll`).
//!
//! Only a hash of each code is stored (table `enrollment_codes`, bound to its terminal:
//! `posmon_protocol::enroll::code_hash`), with when it expires; redeeming checks and deletes it
//! in one transaction, so a code works once. Outstanding codes are bounded per terminal and in
//! total. Redemption is unauthenticated: [`FailedRedemptions`] bounds how many wrong codes all
//! senders together may try (a token taken before a redemption is read, given back when it
//! succeeds), so guessing 80 bits is hopeless.
//!
//! What this module must never do: store or log a code or a token.

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use posmon_protocol::enroll::{code_hash, format_code, normalize_code, CODE_BYTES};
use rusqlite::{params, Connection, TransactionBehavior};
use time::OffsetDateTime;

use crate::http::admission::TokenBucket;
use crate::store::{open_connection, StoreError};

/// How long a code is good for unless the administrator says otherwise: a day.
pub const DEFAULT_EXPIRY_SECONDS: u64 = 24 * 3600;
/// The longest a code may be good for: 30 days.
pub const MAX_EXPIRY_SECONDS: u64 = 30 * 24 * 3600;
/// Outstanding codes per terminal at most: a reinstall or two, not a stockpile.
pub const OUTSTANDING_PER_TERMINAL_MAX: usize = 3;
/// Outstanding codes in total at most: a large rollout's worth.
pub const OUTSTANDING_MAX: usize = 100_000;
/// Wrong codes all senders together may try: a burst, then one every two seconds. At that rate
/// the chance of guessing one of the at most [`OUTSTANDING_PER_TERMINAL_MAX`] codes of a chosen
/// terminal (80 bits each) within the longest life of a code (30 days: about 1.3 million
/// guesses) is below 10^-17.
pub const FAILED_REDEMPTIONS_BURST: u32 = 10;
pub const FAILED_REDEMPTIONS_PER_MINUTE: u32 = 30;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("terminal {terminal_id:?} has {OUTSTANDING_PER_TERMINAL_MAX} outstanding enrollment codes already: cancel them (DELETE /api/v1/enrollments/{terminal_id}) or let them expire")]
    TerminalFull { terminal_id: String },
    #[error("{OUTSTANDING_MAX} enrollment codes are outstanding already: cancel some or let them expire")]
    Full,
    /// Unknown, used, expired, for another terminal, or not a code at all: the sender learns
    /// nothing more.
    #[error("invalid or expired code")]
    Invalid,
    #[error("cannot draw a random code: {0}")]
    Random(String),
    #[error("expires_in_seconds: the expiry is beyond the calendar")]
    Expiry,
    /// The token for a matching code could not be made: the code is kept.
    #[error("deriving the terminal's token: {0}")]
    Token(#[from] posmon_protocol::CredentialError),
}

/// A code just created: the only time it exists in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: i64,
    pub code: String,
    pub expires_at: OffsetDateTime,
}

/// An outstanding code as the list shows it: never the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outstanding {
    pub id: i64,
    pub terminal_id: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// The enrollment codes in the state database.
pub struct Enrollments {
    /// Enrollments are rare (an administrator's action, an installation): one connection.
    connection: Mutex<Connection>,
}

fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

fn from_unix(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Equal bytes, in time independent of where they differ.
fn same_hash(a: &[u8], b: &[u8; 32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Enrollments {
    /// Opens the codes in the state database in `data_dir` (already migrated by `Store::open`).
    pub fn open(data_dir: &Path) -> Result<Self, EnrollError> {
        Ok(Enrollments {
            connection: Mutex::new(open_connection(data_dir)?),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a code for `terminal_id` (checked by the caller) from the OS's random numbers,
    /// good for `expires_in` from `now`. Blocking (SQLite).
    pub fn create(
        &self,
        terminal_id: &str,
        now: OffsetDateTime,
        expires_in: time::Duration,
    ) -> Result<Created, EnrollError> {
        let mut random = [0u8; CODE_BYTES];
        getrandom::fill(&mut random).map_err(|error| EnrollError::Random(error.to_string()))?;
        self.create_from(terminal_id, &random, now, expires_in)
    }

    fn create_from(
        &self,
        terminal_id: &str,
        random: &[u8; CODE_BYTES],
        now: OffsetDateTime,
        expires_in: time::Duration,
    ) -> Result<Created, EnrollError> {
        let code = format_code(random);
        // The canonical form of a formatted code: its characters without the dashes.
        let hash = code_hash(terminal_id, &code.replace('-', ""));
        let expires_at = now.checked_add(expires_in).ok_or(EnrollError::Expiry)?;
        let mut connection = self.connection();
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Expired codes count for nothing: forget them first.
        transaction.execute(
            "DELETE FROM enrollment_codes WHERE expires_at <= ?1",
            [unix(now)],
        )?;
        let for_terminal: i64 = transaction.query_row(
            "SELECT COUNT(*) FROM enrollment_codes WHERE terminal_id = ?1",
            [terminal_id],
            |row| row.get(0),
        )?;
        if usize::try_from(for_terminal).map_or(true, |n| n >= OUTSTANDING_PER_TERMINAL_MAX) {
            return Err(EnrollError::TerminalFull {
                terminal_id: terminal_id.to_string(),
            });
        }
        let total: i64 =
            transaction.query_row("SELECT COUNT(*) FROM enrollment_codes", [], |row| {
                row.get(0)
            })?;
        if usize::try_from(total).map_or(true, |n| n >= OUTSTANDING_MAX) {
            return Err(EnrollError::Full);
        }
        transaction.execute(
            "INSERT INTO enrollment_codes (terminal_id, code_hash, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![terminal_id, &hash[..], unix(now), unix(expires_at)],
        )?;
        let id = transaction.last_insert_rowid();
        transaction.commit()?;
        Ok(Created {
            id,
            code,
            expires_at,
        })
    }

    /// The codes not expired at `now`, oldest first. Blocking (SQLite).
    pub fn list(&self, now: OffsetDateTime) -> Result<Vec<Outstanding>, EnrollError> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT id, terminal_id, created_at, expires_at FROM enrollment_codes
             WHERE expires_at > ?1 ORDER BY id LIMIT ?2",
        )?;
        let limit = i64::try_from(OUTSTANDING_MAX).unwrap_or(i64::MAX);
        let mut rows = statement.query(params![unix(now), limit])?;
        let mut outstanding = Vec::new();
        while let Some(row) = rows.next()? {
            // A row damaged by hand is left out rather than failing the list.
            let Some(terminal_id) = crate::store::lenient_text(row, 1) else {
                continue;
            };
            let integer = |index| row.get_ref(index).ok().and_then(|v| v.as_i64().ok());
            let (Some(id), Some(created), Some(expires)) = (integer(0), integer(2), integer(3))
            else {
                continue;
            };
            outstanding.push(Outstanding {
                id,
                terminal_id,
                created_at: from_unix(created),
                expires_at: from_unix(expires),
            });
        }
        Ok(outstanding)
    }

    /// Cancels every outstanding code of `terminal_id`; returns how many. Blocking (SQLite).
    pub fn cancel(&self, terminal_id: &str) -> Result<usize, EnrollError> {
        Ok(self.connection().execute(
            "DELETE FROM enrollment_codes WHERE terminal_id = ?1",
            [terminal_id],
        )?)
    }

    /// Checks `typed` against the codes of `terminal_id` not expired at `now` and, when one
    /// matches, calls `issue` (which makes the token) and only then deletes the code, in the
    /// same transaction: an error of `issue` or of the database leaves the code unspent. A code
    /// that does not match is [`EnrollError::Invalid`]. Blocking (SQLite).
    pub fn redeem<T>(
        &self,
        terminal_id: &str,
        typed: &str,
        now: OffsetDateTime,
        issue: impl FnOnce() -> Result<T, EnrollError>,
    ) -> Result<T, EnrollError> {
        let canonical = normalize_code(typed).map_err(|_| EnrollError::Invalid)?;
        let hash = code_hash(terminal_id, &canonical);
        let mut connection = self.connection();
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut matched = None;
        {
            let mut statement = transaction.prepare(
                "SELECT id, code_hash FROM enrollment_codes
                 WHERE terminal_id = ?1 AND expires_at > ?2 LIMIT ?3",
            )?;
            // More than the bound only if written by hand: the first ones are compared.
            let limit = i64::try_from(OUTSTANDING_PER_TERMINAL_MAX * 4).unwrap_or(i64::MAX);
            let mut rows = statement.query(params![terminal_id, unix(now), limit])?;
            while let Some(row) = rows.next()? {
                let id = row.get_ref(0).ok().and_then(|v| v.as_i64().ok());
                let stored = row.get_ref(1).ok().and_then(|v| v.as_blob().ok());
                // Every row compared in full: the time does not say which one was close.
                if let (Some(id), Some(stored)) = (id, stored) {
                    if same_hash(stored, &hash) && matched.is_none() {
                        matched = Some(id);
                    }
                }
            }
        }
        let Some(id) = matched else {
            return Err(EnrollError::Invalid);
        };
        // Dropped on an error, the transaction rolls back: nothing is spent.
        let issued = issue()?;
        transaction.execute("DELETE FROM enrollment_codes WHERE id = ?1", [id])?;
        transaction.commit()?;
        Ok(issued)
    }
}

/// The wrong codes all senders together may still try: a token bucket from which every
/// redemption takes a token before anything of it is read, and which gets it back when the
/// redemption succeeds (or fails on the collector's side). So concurrent redemptions cannot all
/// pass a check made before any of them failed: at most as many reach a code as there are
/// tokens. When it is empty every redemption waits — an attacker can delay enrollments, never
/// guess a code or touch report ingest.
pub struct FailedRedemptions {
    bucket: Mutex<TokenBucket>,
    per_second: f64,
    burst: f64,
}

impl FailedRedemptions {
    pub fn new(burst: u32, per_minute: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        FailedRedemptions {
            bucket: Mutex::new(TokenBucket::full(burst, now)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            burst,
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the token a redemption starting at `now` may fail with, or says how long until
    /// one is there. Taken up front: a failure is known only later.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        self.bucket().take(now, self.per_second, self.burst)
    }

    /// Gives back at `now` the token of a redemption that did not fail by the sender's doing.
    pub fn refund(&self, now: Instant) {
        self.bucket().give_back(now, self.per_second, self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollments(dir: &Path) -> Enrollments {
        crate::store::Store::open(dir).unwrap_or_else(|error| panic!("{error}"));
        Enrollments::open(dir).unwrap_or_else(|error| panic!("{error}"))
    }

    fn at(seconds: i64) -> OffsetDateTime {
        from_unix(1_790_000_000 + seconds)
    }

    const HOUR: time::Duration = time::Duration::hours(1);

    /// What a redemption hands out in these tests: nothing.
    fn issued() -> Result<(), EnrollError> {
        Ok(())
    }

    #[test]
    fn a_code_is_spent_only_once_its_token_is_made() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let codes = enrollments(dir.path());
        let created = codes
            .create_from("T-1", &[7; CODE_BYTES], at(0), HOUR)
            .unwrap_or_else(|error| panic!("{error}"));
        // Making the token fails: the code stays, and the token is not asked for a wrong code.
        let failing = || -> Result<String, EnrollError> {
            Err(posmon_protocol::CredentialError::UnknownKey("k9".into()).into())
        };
        assert!(matches!(
            codes.redeem("T-1", &created.code, at(1), failing),
            Err(EnrollError::Token(_))
        ));
        assert_eq!(codes.list(at(1)).map(|l| l.len()).ok(), Some(1));
        let mut asked = false;
        let wrong = codes.redeem("T-1", "0000-0000-0000-0000", at(1), || {
            asked = true;
            Ok("token".to_string())
        });
        assert!(matches!(wrong, Err(EnrollError::Invalid)) && !asked);
        // The next try gets the token and spends the code.
        let token = codes.redeem("T-1", &created.code, at(2), || Ok("token".to_string()));
        assert_eq!(token.ok().as_deref(), Some("token"));
        assert!(codes.list(at(2)).map(|l| l.is_empty()).unwrap_or(false));
    }

    #[test]
    fn a_code_works_once_for_its_terminal_until_it_expires() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let codes = enrollments(dir.path());
        let created = codes
            .create_from("T-1", &[7; CODE_BYTES], at(0), HOUR)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(created.expires_at, at(3600));
        let other = codes
            .create_from("T-2", &[8; CODE_BYTES], at(0), HOUR)
            .unwrap_or_else(|error| panic!("{error}"));
        // Only the hash is stored.
        let stored: Vec<u8> = open_connection(dir.path())
            .and_then(|c| {
                Ok(c.query_row(
                    "SELECT code_hash FROM enrollment_codes WHERE id = ?1",
                    [created.id],
                    |row| row.get(0),
                )?)
            })
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(stored.len(), 32);
        assert!(!String::from_utf8_lossy(&stored).contains(&created.code[..4]));

        let refused = |terminal: &str, code: &str, now| {
            matches!(
                codes.redeem(terminal, code, now, issued),
                Err(EnrollError::Invalid)
            )
        };
        assert!(refused("T-2", &created.code, at(1)), "another terminal's");
        assert!(refused("T-1", "not a code", at(1)));
        assert!(refused("T-1", &"0".repeat(16), at(1)));
        assert!(refused("T-1", &created.code, at(3600)), "expired");
        // Typed loosely, within its time: accepted once.
        let typed = created.code.to_lowercase().replace('-', " ");
        assert!(codes.redeem("T-1", &typed, at(3599), issued).is_ok());
        assert!(refused("T-1", &created.code, at(3599)), "used");
        // The other terminal's code is untouched, and survives a reopening.
        drop(codes);
        let codes = enrollments(dir.path());
        let listed = codes.list(at(2)).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].id, listed[0].terminal_id.as_str()),
            (other.id, "T-2")
        );
        assert_eq!(listed[0].created_at, at(0));
        assert!(codes.list(at(3600)).map(|l| l.is_empty()).unwrap_or(false));
        assert!(codes.redeem("T-2", &other.code, at(2), issued).is_ok());
    }

    #[test]
    fn an_expiry_beyond_the_calendar_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let codes = enrollments(dir.path());
        let end = time::PrimitiveDateTime::MAX.assume_utc();
        assert!(matches!(
            codes.create("T-1", end, HOUR),
            Err(EnrollError::Expiry)
        ));
    }

    #[test]
    fn outstanding_codes_are_bounded_per_terminal_and_expired_ones_do_not_count() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let codes = enrollments(dir.path());
        for seed in 0..OUTSTANDING_PER_TERMINAL_MAX {
            let random = [u8::try_from(seed).unwrap_or(0); CODE_BYTES];
            assert!(codes.create_from("T-1", &random, at(0), HOUR).is_ok());
        }
        assert!(matches!(
            codes.create_from("T-1", &[9; CODE_BYTES], at(1), HOUR),
            Err(EnrollError::TerminalFull { .. })
        ));
        assert!(
            codes.create("T-2", at(1), HOUR).is_ok(),
            "others unaffected"
        );
        // Once they expired, there is room again; a cancel makes room too.
        assert!(codes.create("T-1", at(3600), HOUR).is_ok());
        assert_eq!(codes.cancel("T-1").ok(), Some(1));
        assert_eq!(codes.cancel("T-1").ok(), Some(0));
        assert!(codes.list(at(3600)).map(|l| l.len() == 1).unwrap_or(false));
    }

    #[test]
    fn the_total_is_bounded() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let codes = enrollments(dir.path());
        // Filled by hand up to the bound: creating one more is refused.
        {
            let mut connection = codes.connection();
            let transaction = connection.transaction().unwrap_or_else(|e| panic!("{e}"));
            for index in 0..OUTSTANDING_MAX {
                transaction
                    .execute(
                        "INSERT INTO enrollment_codes (terminal_id, code_hash, created_at, expires_at) VALUES (?1, x'00', 0, ?2)",
                        params![format!("T-{index}"), unix(at(3600))],
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            transaction.commit().unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(matches!(
            codes.create("T-new", at(0), HOUR),
            Err(EnrollError::Full)
        ));
        // A damaged row (a hash that is not a blob) never matches and never panics.
        assert!(matches!(
            codes.redeem("T-5", "0000-0000-0000-0000", at(0), issued),
            Err(EnrollError::Invalid)
        ));
    }

    #[test]
    fn failed_redemptions_are_taken_up_front_refunded_on_success_and_refill() {
        let start = Instant::now();
        let limiter = FailedRedemptions::new(3, 60, start);
        // Three redemptions in flight at once take the three tokens; a fourth waits, though
        // none of them has failed yet.
        for _ in 0..3 {
            assert!(limiter.take(start).is_ok());
        }
        let wait = limiter.take(start).err();
        assert!(wait.is_some_and(|wait| wait <= Duration::from_secs(1)));
        // One succeeded: its token is back, for one more.
        limiter.refund(start);
        assert!(limiter.take(start).is_ok());
        assert!(limiter.take(start).is_err());
        assert!(limiter.take(start + Duration::from_secs(1)).is_ok());
        // Refunds never raise the bucket above its burst.
        let later = start + Duration::from_secs(3600);
        for _ in 0..10 {
            limiter.refund(later);
        }
        for _ in 0..3 {
            assert!(limiter.take(later).is_ok());
        }
        assert!(limiter.take(later).is_err());
    }
}
