//! Credentials a collector can manage: one terminal's token revoked without rotating the fleet
//! secret. Tokens carry a generation (`posmon_protocol::credential`); the collector keeps, per
//! terminal, the lowest generation it still accepts (table `terminal_credentials`, loaded at
//! start into a map that every verification reads: one hash lookup under a read lock). Revoking
//! raises it by one, so the token in hostile hands stops working at once and the token of the
//! new generation (`posmon-collector token`) works.
//!
//! [`Credentials`] is what ingest verifies against: the keyring plus the revocations, and how
//! often each key was used, so a fleet-secret rotation can tell when the old key is unused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use posmon_protocol::{CredentialError, FleetKey, Keyring};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use time::OffsetDateTime;

use crate::store::{lenient_text, open_connection, StoreError, DATABASE_FILE};

/// The most terminals with a revoked token; beyond it a revocation is refused (rotate the fleet
/// secret instead: a million revocations means the fleet secret itself is in doubt).
pub const REVOKED_TERMINALS_MAX: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("terminal {0:?} is at the last token generation: rotate the fleet secret instead")]
    Exhausted(String),
    #[error("{REVOKED_TERMINALS_MAX} terminals already have revoked tokens: rotate the fleet secret instead")]
    Full,
}

/// Per terminal, the lowest token generation accepted (absent: 0).
pub struct Revocations {
    minimum: RwLock<HashMap<Box<str>, u32>>,
    /// Revocations are rare (an administrator's action): one connection, one at a time.
    connection: Mutex<Connection>,
}

/// A stored generation that is not a `u32` was written by hand: keep the terminal's older tokens
/// locked out rather than guess (only a token of the last generation is then accepted).
fn stored_generation(terminal_id: &str, value: Option<i64>) -> u32 {
    value
        .and_then(|value| u32::try_from(value).ok())
        .unwrap_or_else(|| {
            tracing::error!(
                terminal_id,
                ?value,
                "A stored token generation is not usable: only the terminal's token of the last generation (posmon-collector token prints it) is accepted until the row is fixed."
            );
            u32::MAX
        })
}

impl Revocations {
    /// Loads the revocations from the state database in `data_dir` (already migrated by
    /// `Store::open`).
    pub fn open(data_dir: &Path) -> Result<Self, RevocationError> {
        let connection = open_connection(data_dir)?;
        let mut minimum = HashMap::new();
        {
            let mut statement = connection
                .prepare("SELECT terminal_id, min_generation FROM terminal_credentials")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                // A row the collector cannot use is skipped with an error, never a failed start.
                let Some(terminal_id) = lenient_text(row, 0) else {
                    tracing::error!(
                        "A stored token revocation has no usable terminal id: skipped."
                    );
                    continue;
                };
                let generation = row.get_ref(1).ok().and_then(|value| value.as_i64().ok());
                let generation = stored_generation(&terminal_id, generation);
                minimum.insert(terminal_id.into_boxed_str(), generation);
            }
        }
        if !minimum.is_empty() {
            tracing::info!(
                terminals = minimum.len(),
                "Loaded the terminals whose older tokens are revoked."
            );
        }
        Ok(Revocations {
            minimum: RwLock::new(minimum),
            connection: Mutex::new(connection),
        })
    }

    /// The lowest generation of `terminal_id`'s token accepted.
    pub fn minimum(&self, terminal_id: &str) -> u32 {
        self.minimum
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(terminal_id)
            .copied()
            .unwrap_or(0)
    }

    /// How many terminals have a revoked token.
    pub fn count(&self) -> usize {
        self.minimum
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Revokes every token of `terminal_id` below a new generation, stored before it applies;
    /// returns that generation. Blocking (SQLite).
    pub fn revoke(&self, terminal_id: &str, now: OffsetDateTime) -> Result<u32, RevocationError> {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.minimum(terminal_id);
        let next = current
            .checked_add(1)
            .ok_or_else(|| RevocationError::Exhausted(terminal_id.to_string()))?;
        if current == 0 && self.count() >= REVOKED_TERMINALS_MAX {
            return Err(RevocationError::Full);
        }
        let transaction = connection.transaction()?;
        transaction.execute(
            "INSERT INTO terminal_credentials (terminal_id, min_generation, revoked_at)
             VALUES (?1, ?2, ?3)
             ON CONFLICT (terminal_id) DO UPDATE SET
                 min_generation = excluded.min_generation,
                 revoked_at = excluded.revoked_at",
            params![terminal_id, i64::from(next), now.unix_timestamp()],
        )?;
        transaction.commit()?;
        self.minimum
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(terminal_id.into(), next);
        Ok(next)
    }
}

/// The token generation `terminal_id` is at according to the state database in `data_dir`,
/// read only (the `token` command, while a collector may be running): 0 when there is no
/// database yet or it predates revocations.
pub fn stored_minimum(data_dir: &Path, terminal_id: &str) -> Result<u32, RevocationError> {
    let path = data_dir.join(DATABASE_FILE);
    if !path.exists() {
        return Ok(0);
    }
    let connection = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.clone(),
        source,
    })?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    let has_table: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'terminal_credentials')",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    // Absent: never revoked (0); present but unusable: locked out as at start.
    let value: Option<Option<i64>> = connection
        .query_row(
            "SELECT min_generation FROM terminal_credentials WHERE terminal_id = ?1",
            [terminal_id],
            |row| Ok(row.get_ref(0).ok().and_then(|value| value.as_i64().ok())),
        )
        .optional()?;
    Ok(value.map_or(0, |value| stored_generation(terminal_id, value)))
}

/// How much one fleet key was used since the collector started.
#[derive(Default)]
struct KeyUse {
    accepted: AtomicU64,
    /// Unix seconds of the last accepted request; 0: never.
    last_accepted: AtomicI64,
}

/// One key's use, as the credentials endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    pub id: String,
    pub current: bool,
    pub accepted_requests: u64,
    pub last_accepted_at: Option<OffsetDateTime>,
}

/// The keyring and the revocations: what a report's token is checked against.
pub struct Credentials {
    keyring: Keyring,
    revocations: Revocations,
    usage: Vec<KeyUse>,
}

impl Credentials {
    pub fn new(keyring: Keyring, revocations: Revocations) -> Self {
        let usage = keyring.keys().iter().map(|_| KeyUse::default()).collect();
        Credentials {
            keyring,
            revocations,
            usage,
        }
    }

    /// Accepts `token` only if it was derived for `terminal_id` under a key of the ring and its
    /// generation is not revoked.
    pub fn verify(&self, token: &str, terminal_id: &str) -> Result<(), CredentialError> {
        let verified = self.keyring.verify_generation(token, terminal_id)?;
        let minimum = self.revocations.minimum(terminal_id);
        if verified.generation < minimum {
            return Err(CredentialError::Revoked {
                terminal_id: terminal_id.to_string(),
                generation: verified.generation,
                minimum,
            });
        }
        self.note_use(verified.key_index);
        Ok(())
    }

    pub fn current(&self) -> &FleetKey {
        self.keyring.current()
    }

    /// The token of `terminal_id` at `generation` under the key named `key_id`, and the key's
    /// index, if this collector holds that key and the generation is not revoked: what a report
    /// datagram's key is derived from (`posmon_protocol::datagram`). Not yet a use of the key:
    /// the caller says [`Credentials::note_use`] once the datagram authenticated.
    pub fn token_at(
        &self,
        key_id: &str,
        terminal_id: &str,
        generation: u32,
    ) -> Result<(String, usize), CredentialError> {
        let (key_index, key) = self
            .keyring
            .keys()
            .iter()
            .enumerate()
            .find(|(_, key)| key.id() == key_id)
            .ok_or_else(|| CredentialError::UnknownKey(key_id.chars().take(64).collect()))?;
        let minimum = self.revocations.minimum(terminal_id);
        if generation < minimum {
            return Err(CredentialError::Revoked {
                terminal_id: terminal_id.to_string(),
                generation,
                minimum,
            });
        }
        let token = posmon_protocol::terminal_token_at(key, terminal_id, generation);
        Ok((token, key_index))
    }

    /// Counts an accepted use of the key at `key_index` (see [`Credentials::key_usage`]).
    pub fn note_use(&self, key_index: usize) {
        if let Some(usage) = self.usage.get(key_index) {
            usage.accepted.fetch_add(1, Ordering::Relaxed);
            // Written once a second at most: readers of a shared line stay cheap under load.
            let now = OffsetDateTime::now_utc().unix_timestamp();
            if usage.last_accepted.load(Ordering::Relaxed) < now {
                usage.last_accepted.fetch_max(now, Ordering::Relaxed);
            }
        }
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Each key's use since start, the current key first.
    pub fn key_usage(&self) -> Vec<KeyUsage> {
        self.keyring
            .keys()
            .iter()
            .zip(&self.usage)
            .enumerate()
            .map(|(index, (key, usage))| {
                let last = usage.last_accepted.load(Ordering::Relaxed);
                KeyUsage {
                    id: key.id().to_string(),
                    current: index == 0,
                    accepted_requests: usage.accepted.load(Ordering::Relaxed),
                    last_accepted_at: (last > 0)
                        .then(|| OffsetDateTime::from_unix_timestamp(last).ok())
                        .flatten(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_protocol::terminal_token_at;

    fn key(id: &str) -> FleetKey {
        FleetKey::new(id, format!("{id}-0123456789abcdef").into_bytes())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn credentials(dir: &Path) -> Credentials {
        crate::store::Store::open(dir).unwrap_or_else(|error| panic!("{error}"));
        let revocations = Revocations::open(dir).unwrap_or_else(|error| panic!("{error}"));
        Credentials::new(Keyring::new(key("k2"), vec![key("k1")]), revocations)
    }

    #[test]
    fn a_revoked_generation_is_refused_and_the_next_accepted_across_restarts() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let now = OffsetDateTime::now_utc();
        let first = credentials(dir.path());
        let old = terminal_token_at(&key("k2"), "T-1", 0);
        let other = terminal_token_at(&key("k2"), "T-2", 0);
        assert_eq!(first.verify(&old, "T-1"), Ok(()));
        assert_eq!(stored_minimum(dir.path(), "T-1").ok(), Some(0));
        let generation = first
            .revocations()
            .revoke("T-1", now)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(generation, 1);
        assert!(matches!(
            first.verify(&old, "T-1"),
            Err(CredentialError::Revoked {
                generation: 0,
                minimum: 1,
                ..
            })
        ));
        assert_eq!(first.verify(&other, "T-2"), Ok(()), "others are unaffected");
        let new = terminal_token_at(&key("k2"), "T-1", 1);
        assert_eq!(first.verify(&new, "T-1"), Ok(()));
        // The previous key's token of the new generation works too; of the old, not.
        assert_eq!(
            first.verify(&terminal_token_at(&key("k1"), "T-1", 1), "T-1"),
            Ok(())
        );
        assert!(first
            .verify(&terminal_token_at(&key("k1"), "T-1", 0), "T-1")
            .is_err());
        drop(first);

        let again = credentials(dir.path());
        assert!(again.verify(&old, "T-1").is_err(), "survives a restart");
        assert_eq!(again.verify(&new, "T-1"), Ok(()));
        assert_eq!(stored_minimum(dir.path(), "T-1").ok(), Some(1));
        assert_eq!(stored_minimum(dir.path(), "T-2").ok(), Some(0));
        assert_eq!(again.revocations().revoke("T-1", now).ok(), Some(2));
        assert!(again.verify(&new, "T-1").is_err());
        assert_eq!(again.revocations().count(), 1);
    }

    #[test]
    fn usage_is_counted_per_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let credentials = credentials(dir.path());
        let _ = credentials.verify(&terminal_token_at(&key("k1"), "T-1", 0), "T-1");
        let _ = credentials.verify(&terminal_token_at(&key("k1"), "T-1", 0), "T-9");
        let usage = credentials.key_usage();
        assert_eq!(usage.len(), 2);
        assert_eq!((usage[0].id.as_str(), usage[0].current), ("k2", true));
        assert_eq!(usage[0].accepted_requests, 0);
        assert_eq!(usage[0].last_accepted_at, None);
        assert_eq!(
            usage[1].accepted_requests, 1,
            "a refused token is not counted"
        );
        assert!(usage[1].last_accepted_at.is_some());
    }

    #[test]
    fn out_of_range_stored_generations_lock_the_terminal_out_and_no_database_means_zero() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(stored_minimum(dir.path(), "T-1").ok(), Some(0));
        let _ = credentials(dir.path());
        let connection = open_connection(dir.path()).unwrap_or_else(|error| panic!("{error}"));
        for (terminal, value) in [
            ("T-big", i64::MAX),
            ("T-neg", -1),
            ("T-max", i64::from(u32::MAX)),
        ] {
            connection
                .execute(
                    "INSERT INTO terminal_credentials VALUES (?1, ?2, 0)",
                    params![terminal, value],
                )
                .unwrap_or_else(|error| panic!("{error}"));
        }
        // Damaged by hand: text for a generation (locked out), a blob for an id (skipped).
        connection
            .execute(
                "INSERT INTO terminal_credentials VALUES ('T-text', 'seven', 0), (x'00ff', 3, 0)",
                [],
            )
            .unwrap_or_else(|error| panic!("{error}"));
        let credentials = credentials(dir.path());
        for terminal in ["T-big", "T-neg", "T-max", "T-text"] {
            assert_eq!(credentials.revocations().minimum(terminal), u32::MAX);
            assert!(matches!(
                credentials
                    .revocations()
                    .revoke(terminal, OffsetDateTime::now_utc()),
                Err(RevocationError::Exhausted(_))
            ));
            assert_eq!(stored_minimum(dir.path(), terminal).ok(), Some(u32::MAX));
        }
    }
}
