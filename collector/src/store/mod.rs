//! The state database: an embedded SQLite file under the data directory holding the terminal
//! registry with each terminal's state summary, the findings history, the fleet-wide findings
//! and the version policy. The in-memory fleet is the truth while running; this is what a
//! restart restores. Only the writer thread (`writer.rs`) and the policy endpoint write, never
//! while a fleet lock is held.

pub mod schema;
pub mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{params, Connection, OptionalExtension};

use crate::config::VersionRule;
use crate::findings::{Finding, Tracker};
use crate::fleet::{Changes, Restored, Terminal};

/// The database file in the data directory.
pub const DATABASE_FILE: &str = "state.sqlite3";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database: cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("state database: setting {key} cannot be read: {source}")]
    Decode {
        key: &'static str,
        source: serde_json::Error,
    },
    #[error("the state database has schema version {found}, newer than this collector's {supported}: upgrade the collector")]
    TooNew { found: u32, supported: u32 },
}

const POLICY_KEY: &str = "version_policy";
const FLEET_WIDE_KEY: &str = "fleet_wide_findings";
const NEXT_ID_KEY: &str = "next_finding_id";

pub struct Store {
    connection: Mutex<Connection>,
}

impl Store {
    /// Opens (creating and migrating) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let mut connection = open_connection(data_dir)?;
        schema::migrate(&mut connection)?;
        Ok(Store {
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything a restart restores: terminals, the newest `history_limit` closed findings,
    /// the fleet-wide findings, the next finding id, and the stored version policy if any. A
    /// terminal row that cannot be read is skipped with a warning rather than keeping the
    /// collector down.
    pub fn load(
        &self,
        history_limit: usize,
    ) -> Result<(Restored, Option<Vec<VersionRule>>), StoreError> {
        let connection = self.connection();
        let mut restored = Restored::default();
        let mut statement = connection.prepare("SELECT id, state FROM terminals")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let state: String = row.get(1)?;
            match serde_json::from_str::<Terminal>(&state) {
                Ok(terminal) => restored.terminals.push(terminal),
                Err(error) => {
                    tracing::warn!(terminal_id = %id, %error, "Skipped a terminal whose stored state cannot be read.");
                }
            }
        }
        let limit = i64::try_from(history_limit).unwrap_or(i64::MAX);
        let mut statement =
            connection.prepare("SELECT finding FROM findings_history ORDER BY id DESC LIMIT ?1")?;
        let mut rows = statement.query([limit])?;
        while let Some(row) = rows.next()? {
            let text: String = row.get(0)?;
            match serde_json::from_str::<Finding>(&text) {
                Ok(finding) => restored.history.push(finding),
                Err(error) => {
                    tracing::warn!(%error, "Skipped a closed finding that cannot be read.")
                }
            }
        }
        restored.history.reverse();
        if let Some(text) = setting(&connection, FLEET_WIDE_KEY)? {
            restored.fleet_wide =
                serde_json::from_str::<Tracker>(&text).map_err(|source| StoreError::Decode {
                    key: FLEET_WIDE_KEY,
                    source,
                })?;
        }
        if let Some(text) = setting(&connection, NEXT_ID_KEY)? {
            restored.next_finding_id = text.parse().unwrap_or(0);
        }
        // Ids must stay unique even if the last write of the counter was lost.
        let highest: Option<i64> =
            connection.query_row("SELECT MAX(id) FROM findings_history", [], |row| row.get(0))?;
        let highest_open = restored
            .terminals
            .iter()
            .flat_map(|terminal| terminal.findings.findings().map(|finding| finding.id))
            .chain(restored.fleet_wide.findings().map(|finding| finding.id))
            .max();
        restored.next_finding_id = restored
            .next_finding_id
            .max(highest.and_then(|id| u64::try_from(id).ok()).unwrap_or(0))
            .max(highest_open.unwrap_or(0));
        let policy = match setting(&connection, POLICY_KEY)? {
            Some(text) => {
                Some(
                    serde_json::from_str(&text).map_err(|source| StoreError::Decode {
                        key: POLICY_KEY,
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok((restored, policy))
    }

    /// Writes one batch of changes in one transaction, and trims the history to
    /// `history_limit` rows.
    pub fn write(&self, changes: &Changes, history_limit: usize) -> Result<(), StoreError> {
        let mut encoded_terminals = Vec::with_capacity(changes.terminals.len());
        for terminal in &changes.terminals {
            let state = serde_json::to_string(terminal).map_err(|source| StoreError::Encode {
                what: "a terminal",
                source,
            })?;
            encoded_terminals.push((&terminal.id, state));
        }
        let mut encoded_history = Vec::with_capacity(changes.closed.len());
        for finding in &changes.closed {
            let text = serde_json::to_string(finding).map_err(|source| StoreError::Encode {
                what: "a closed finding",
                source,
            })?;
            encoded_history.push((finding, text));
        }
        let fleet_wide = match &changes.fleet_wide {
            Some(tracker) => {
                Some(
                    serde_json::to_string(tracker).map_err(|source| StoreError::Encode {
                        what: "the fleet-wide findings",
                        source,
                    })?,
                )
            }
            None => None,
        };
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        {
            let mut upsert = transaction.prepare_cached(
                "INSERT INTO terminals (id, state) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            )?;
            for (id, state) in &encoded_terminals {
                upsert.execute(params![&***id, state])?;
            }
            let mut insert = transaction.prepare_cached(
                "INSERT OR REPLACE INTO findings_history (id, terminal_id, code, closed_at, finding)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (finding, text) in &encoded_history {
                insert.execute(params![
                    i64::try_from(finding.id).unwrap_or(i64::MAX),
                    &*finding.terminal_id,
                    finding.kind.code,
                    finding.closed_at.map(|at| at.unix_timestamp()),
                    text
                ])?;
            }
            if !encoded_history.is_empty() {
                prune_history(
                    &transaction,
                    changes.closed.iter().map(|finding| &*finding.terminal_id),
                    changes.history_per_terminal,
                    history_limit,
                )?;
            }
            if let Some(text) = &fleet_wide {
                put_setting(&transaction, FLEET_WIDE_KEY, text)?;
            }
            put_setting(
                &transaction,
                NEXT_ID_KEY,
                &changes.next_finding_id.to_string(),
            )?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// Stores the version policy (it then wins over the config's at the next start).
    pub fn save_policy(&self, rules: &[VersionRule]) -> Result<(), StoreError> {
        let text = serde_json::to_string(rules).map_err(|source| StoreError::Encode {
            what: "the version policy",
            source,
        })?;
        put_setting(&self.connection(), POLICY_KEY, &text)
    }
}

/// A connection to the database in `data_dir`, in WAL mode: readers do not block the writer,
/// and the alert outbox writes beside the state writer. NORMAL sync: a crash of the collector
/// loses nothing committed (an OS crash may lose the last commits, within the one-second
/// budget's spirit).
pub fn open_connection(data_dir: &Path) -> Result<Connection, StoreError> {
    let path = data_dir.join(DATABASE_FILE);
    let open_error = |source| StoreError::Open {
        path: path.clone(),
        source,
    };
    let connection = Connection::open(&path).map_err(open_error)?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(open_error)?;
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_error)?;
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_error)?;
    Ok(connection)
}

/// Keeps the newest `per_terminal` closed findings of each terminal in `terminals` (the
/// fleet-wide findings, under the empty id, are one more), then the newest `total` of all, so
/// that a terminal whose findings flap drops only its own oldest. Each delete finds its
/// boundary through an index (`findings_history_by_terminal`, the primary key) instead of
/// listing the rows kept.
fn prune_history<'a>(
    connection: &Connection,
    terminals: impl Iterator<Item = &'a str>,
    per_terminal: usize,
    total: usize,
) -> Result<(), StoreError> {
    let mut pruned: HashSet<&str> = HashSet::new();
    // 0 would keep nothing: the fleet keeps at least one per terminal too.
    let per_terminal = i64::try_from(per_terminal.max(1)).unwrap_or(i64::MAX);
    let mut prune_terminal = connection.prepare_cached(
        "DELETE FROM findings_history WHERE terminal_id = ?1 AND id <=
             (SELECT id FROM findings_history WHERE terminal_id = ?1
              ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?;
    for terminal in terminals {
        if !pruned.insert(terminal) {
            continue;
        }
        prune_terminal.execute(params![terminal, per_terminal])?;
    }
    let total = i64::try_from(total).unwrap_or(i64::MAX);
    connection.execute(
        "DELETE FROM findings_history WHERE id <=
             (SELECT id FROM findings_history ORDER BY id DESC LIMIT 1 OFFSET ?1)",
        [total],
    )?;
    Ok(())
}

fn setting(connection: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(connection
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()?)
}

fn put_setting(connection: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiagnosisConfig;
    use crate::diagnose::test_support::{healthy_report, stage};
    use crate::diagnose::{diagnose, Policy};
    use crate::fleet::Fleet;
    use posmon_protocol::{ErrorKind, Stage, StageStatus};
    use time::macros::datetime;

    #[test]
    fn what_is_written_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let thresholds = DiagnosisConfig::default();
        let policy = Policy {
            versions: &[],
            thresholds: &thresholds,
        };
        let fleet = Fleet::new(100, 30);
        let start = datetime!(2026-11-26 02:00 UTC);
        for sequence in 1..=7u64 {
            let mut report = healthy_report();
            report.sequence = sequence;
            report.observed_at = start + time::Duration::minutes(sequence as i64);
            report.labels.region = Some("cn-east".into());
            // Down for 1..=2 (opens, then closes at 3..=4), down again from 6 (open).
            if matches!(sequence, 1 | 2 | 6 | 7) {
                report.probes[0].stages = vec![stage(
                    Stage::Tcp,
                    StageStatus::Failed,
                    Some(ErrorKind::Timeout),
                )];
            }
            let signals = diagnose(&report, &policy);
            fleet.apply_batch("T-1", vec![(report, signals)], start, &thresholds);
        }
        let store = Store::open(dir.path()).unwrap();
        store.write(&fleet.take_changes(), 100).unwrap();
        let rules = vec![VersionRule {
            component: "pos_app".into(),
            model: None,
            minimum: "2.0".into(),
            latest: Some("2.5".into()),
            latest_released_on: Some(time::macros::date!(2026 - 11 - 01)),
            update_within_days: 30,
        }];
        store.save_policy(&rules).unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let (restored, policy) = store.load(100).unwrap();
        assert_eq!(policy, Some(rules));
        assert_eq!(restored.next_finding_id, 2);
        let again = Fleet::restore(restored, 100, 30);
        assert_eq!(again.terminal("T-1"), fleet.terminal("T-1"));
        assert_eq!(again.history_of("T-1", 10), fleet.history_of("T-1", 10));
        assert_eq!(again.history_of("T-1", 10).len(), 1);
    }

    #[test]
    fn the_database_history_keeps_a_quota_per_terminal_and_a_total() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let finding = |id: u64, terminal: &str| Finding {
            id,
            terminal_id: terminal.into(),
            kind: &crate::diagnose::rules::network_path::HOST_UNREACHABLE,
            severity: crate::diagnose::Severity::Critical,
            subject: "payment-host".into(),
            evidence: Vec::new(),
            since: datetime!(2026-11-26 02:00 UTC),
            last_seen: datetime!(2026-11-26 02:00 UTC),
            closed_at: Some(datetime!(2026-11-26 02:01 UTC)),
            suppressed_by: None,
            explains: 0,
        };
        let rows = |store: &Store| -> Vec<(String, i64)> {
            let connection = store.connection();
            let mut statement = connection
                .prepare("SELECT terminal_id, id FROM findings_history ORDER BY id")
                .unwrap();
            let rows = statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows
        };
        let write = |closed: Vec<Finding>, total: usize| {
            let changes = Changes {
                closed,
                history_per_terminal: 3,
                ..Changes::default()
            };
            store.write(&changes, total).unwrap();
        };
        write(vec![finding(1, "quiet"), finding(2, "")], 100);
        // The flapping terminal, in several writes.
        for batch in 0..4u64 {
            write(
                (0..5)
                    .map(|i| finding(10 + batch * 5 + i, "flapping"))
                    .collect(),
                100,
            );
        }
        let expected: Vec<(String, i64)> = [
            ("quiet", 1),
            ("", 2),
            ("flapping", 27),
            ("flapping", 28),
            ("flapping", 29),
        ]
        .into_iter()
        .map(|(t, id)| (t.to_string(), id))
        .collect();
        assert_eq!(rows(&store), expected);
        // The total drops the oldest of all.
        write(vec![finding(30, "other")], 4);
        assert_eq!(
            rows(&store).iter().map(|(_, id)| *id).collect::<Vec<_>>(),
            [27, 28, 29, 30]
        );
    }
}
