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
use time::OffsetDateTime;

use posmon_protocol::limits::SEQUENCE_MAX;

use crate::config::VersionRule;
use crate::fleet::{Changes, Restored, Terminal};
use posmon_diagnosis::findings::{Finding, Tracker};

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
    #[error("cannot start the history writer: {0}")]
    Thread(String),
    #[error("the state database has schema version {found}, newer than this collector's {supported}: upgrade the collector")]
    TooNew { found: u32, supported: u32 },
}

const POLICY_KEY: &str = "version_policy";
const FLEET_WIDE_KEY: &str = "fleet_wide_findings";
/// When the collector last listened: "<since> <until>", Unix seconds.
const LISTENING_KEY: &str = "collector_listening";
const NEXT_ID_KEY: &str = "next_finding_id";
/// The largest finding id the collector issues or accepts from its database: 2^53 − 1.
pub const FINDING_ID_MAX: u64 = (1 << 53) - 1;

pub struct Store {
    connection: Mutex<Connection>,
}

impl Store {
    /// Opens (creating and migrating) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            connection: Mutex::new(open_migrated(data_dir)?),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything a restart restores: terminals, the newest `history_limit` closed findings,
    /// the fleet-wide findings, the next finding id, and the stored version policy if any. A
    /// row or setting that cannot be used (not JSON, a wrong type, values out of range) is
    /// skipped with an error naming the table and key, and listed in
    /// [`Restored::unreadable`]: one bad row never keeps the collector down.
    pub fn load(
        &self,
        history_limit: usize,
    ) -> Result<(Restored, Option<Vec<VersionRule>>), StoreError> {
        let connection = self.connection();
        let mut restored = Restored::default();
        let mut skip = |table: &'static str, key: String, problem: &dyn std::fmt::Display| {
            tracing::error!(table, key = %key, %problem, "Skipped a stored row the collector cannot use.");
            restored.unreadable.push((table, key));
        };
        let mut terminals = Vec::new();
        let mut statement =
            connection.prepare("SELECT rowid, id, state, agent_instance FROM terminals")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let key =
                lenient_text(row, 1).unwrap_or_else(|| format!("rowid {}", lenient_int(row, 0)));
            let Some(state) = lenient_text(row, 2) else {
                skip("terminals", key, &"the state is not text");
                continue;
            };
            match serde_json::from_str::<Terminal>(&state) {
                Ok(mut terminal) => {
                    if terminal.agent_instance.is_none() {
                        terminal.agent_instance = lenient_text(row, 3).map(Into::into);
                    }
                    // Before sequences were bounded a report could pin a terminal at
                    // u64::MAX: start its sequences anew instead.
                    if terminal.highest_sequence > SEQUENCE_MAX {
                        tracing::warn!(terminal_id = %terminal.id, highest_sequence = terminal.highest_sequence, "A stored terminal held a sequence above 2^53 - 1; its sequences start anew.");
                        terminal.highest_sequence = 0;
                    }
                    if *terminal.id != *key {
                        skip(
                            "terminals",
                            key,
                            &"the state belongs to another terminal id",
                        );
                        continue;
                    }
                    terminals.push(terminal);
                }
                Err(error) => skip("terminals", key, &error),
            }
        }
        let limit = i64::try_from(history_limit).unwrap_or(i64::MAX);
        let mut history = Vec::new();
        let mut statement = connection
            .prepare("SELECT id, finding FROM findings_history ORDER BY id DESC LIMIT ?1")?;
        let mut rows = statement.query([limit])?;
        while let Some(row) = rows.next()? {
            let key = format!("id {}", lenient_int(row, 0));
            match lenient_text(row, 1).map(|text| serde_json::from_str::<Finding>(&text)) {
                Some(Ok(finding)) => history.push(finding),
                Some(Err(error)) => skip("findings_history", key, &error),
                None => skip("findings_history", key, &"the finding is not text"),
            }
        }
        history.reverse();
        let fleet_wide = match setting(&connection, FLEET_WIDE_KEY) {
            Ok(Some(text)) => match serde_json::from_str::<Tracker>(&text) {
                Ok(tracker) => tracker,
                Err(error) => {
                    skip("settings", FLEET_WIDE_KEY.into(), &error);
                    Tracker::default()
                }
            },
            Ok(None) => Tracker::default(),
            Err(error) => {
                skip("settings", FLEET_WIDE_KEY.into(), &error);
                Tracker::default()
            }
        };
        let next_finding_id = match setting(&connection, NEXT_ID_KEY) {
            // Ids stay far below u64::MAX (a million a second for 285 years): a larger stored
            // value is damage, not a count, and would overflow.
            Ok(Some(text)) => match text.parse::<u64>() {
                Ok(id) if id <= FINDING_ID_MAX => id,
                Ok(id) => {
                    skip(
                        "settings",
                        NEXT_ID_KEY.into(),
                        &format!("{id} is above {FINDING_ID_MAX}"),
                    );
                    0
                }
                Err(error) => {
                    skip("settings", NEXT_ID_KEY.into(), &error);
                    0
                }
            },
            Ok(None) => 0,
            Err(error) => {
                skip("settings", NEXT_ID_KEY.into(), &error);
                0
            }
        };
        let policy = match setting(&connection, POLICY_KEY) {
            Ok(Some(text)) => match serde_json::from_str::<Vec<VersionRule>>(&text) {
                Ok(rules) => match crate::config::validate_version_policy(&rules) {
                    Ok(()) => Some(rules),
                    Err((key, problem)) => {
                        skip(
                            "settings",
                            POLICY_KEY.into(),
                            &format!("rules{key}: {problem}; the config's policy applies"),
                        );
                        None
                    }
                },
                Err(error) => {
                    skip(
                        "settings",
                        POLICY_KEY.into(),
                        &format!("{error}; the config's policy applies"),
                    );
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                skip("settings", POLICY_KEY.into(), &error);
                None
            }
        };
        // Ids must stay unique even if the last write of the counter was lost.
        let highest: Option<i64> = connection
            .query_row("SELECT MAX(id) FROM findings_history", [], |row| row.get(0))
            .unwrap_or(None);
        let highest_open = terminals
            .iter()
            .flat_map(|terminal| terminal.findings.findings().map(|finding| finding.id))
            .chain(fleet_wide.findings().map(|finding| finding.id))
            .max();
        restored.terminals = terminals;
        restored.history = history;
        restored.fleet_wide = fleet_wide;
        restored.next_finding_id = next_finding_id
            .max(highest.and_then(|id| u64::try_from(id).ok()).unwrap_or(0))
            .max(highest_open.unwrap_or(0))
            .min(FINDING_ID_MAX);
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
            encoded_terminals.push((terminal, state));
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
                "INSERT INTO terminals (id, state, agent_instance) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                     agent_instance = excluded.agent_instance",
            )?;
            for (terminal, state) in &encoded_terminals {
                upsert.execute(params![
                    &*terminal.id,
                    state,
                    terminal.agent_instance.as_deref()
                ])?;
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
            if let Some((since, until)) = changes.listening {
                let text = format!("{} {}", since.unix_timestamp(), until.unix_timestamp());
                put_setting(&transaction, LISTENING_KEY, &text)?;
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
/// A connection to the state database in `data_dir`, the directory and the database created
/// and migrated first if need be.
pub fn open_migrated(data_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let mut connection = open_connection(data_dir)?;
    schema::migrate(&mut connection)?;
    Ok(connection)
}

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

/// A column as text, `None` when it is NULL or not text.
pub(crate) fn lenient_text(row: &rusqlite::Row<'_>, index: usize) -> Option<String> {
    row.get_ref(index)
        .ok()
        .and_then(|value| value.as_str().ok())
        .map(str::to_string)
}

/// A column as an integer, 0 when it is NULL or not an integer.
pub(crate) fn lenient_int(row: &rusqlite::Row<'_>, index: usize) -> i64 {
    row.get_ref(index)
        .ok()
        .and_then(|value| value.as_i64().ok())
        .unwrap_or(0)
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

impl Store {
    /// When the collector last listened on this data (since, until): its previous run, read
    /// before this one records its own. `None` when nothing (usable) was recorded.
    pub fn last_listening(&self) -> Option<(OffsetDateTime, OffsetDateTime)> {
        let text = match setting(&self.connection(), LISTENING_KEY) {
            Ok(text) => text?,
            Err(error) => {
                tracing::warn!(%error, "Cannot read when the collector last listened.");
                return None;
            }
        };
        let mut parts = text.split(' ').map(|part| {
            part.parse::<i64>()
                .ok()
                .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
        });
        match (parts.next().flatten(), parts.next().flatten(), parts.next()) {
            (Some(since), Some(until), None) if since <= until => Some((since, until)),
            _ => {
                tracing::warn!(key = LISTENING_KEY, value = %text, "Skipped a stored setting the collector cannot use.");
                None
            }
        }
    }
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
    use crate::config::Thresholds;
    use crate::fleet::Fleet;
    use posmon_diagnosis::test_support::{healthy_report, stage};
    use posmon_diagnosis::{diagnose, Policy};
    use posmon_protocol::{ErrorKind, Stage, StageStatus};
    use time::macros::datetime;

    #[test]
    fn when_the_collector_last_listened_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_listening(), None, "a new database");
        let since = datetime!(2026-11-26 02:00 UTC);
        let until = datetime!(2026-11-26 03:00 UTC);
        let changes = Changes {
            listening: Some((since, until)),
            ..Changes::default()
        };
        store.write(&changes, 100).unwrap();
        // Changes without it leave the record alone.
        store.write(&Changes::default(), 100).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_listening(), Some((since, until)));
        for bad in ["", "1 2 3", "x 5", "10 5", "-99999999999999 0"] {
            put_setting(&store.connection(), LISTENING_KEY, bad).unwrap();
            assert_eq!(store.last_listening(), None, "{bad:?}");
        }
    }

    #[test]
    fn what_is_written_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let thresholds = Thresholds::default();
        let roles = posmon_diagnosis::readiness::PaymentRoles::default();
        let policy = Policy {
            versions: &[],
            thresholds: &thresholds,
            roles: &roles,
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
    fn rows_the_collector_cannot_use_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let thresholds = Thresholds::default();
        let fleet = Fleet::new(100, 30);
        let mut report = healthy_report();
        report.sequence = 3;
        report.agent_instance = Some("aaaaaaaa-1111".into());
        fleet.apply_batch(
            "T-GOOD",
            vec![(report, vec![])],
            datetime!(2026-11-26 02:00 UTC),
            &thresholds,
        );
        let store = Store::open(dir.path()).unwrap();
        store.write(&fleet.take_changes(), 100).unwrap();
        let good = serde_json::to_string(&fleet.terminal("T-GOOD").unwrap()).unwrap();
        drop(store);
        // Damage the database behind the collector's back, as a bad disk, a hand edit or an
        // older collector's attack could.
        let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        let pinned = good.replace("\"T-GOOD\"", "\"T-PINNED\"").replace(
            "\"highest_sequence\":3",
            &format!("\"highest_sequence\":{}", u64::MAX),
        );
        let far = good
            .replace("\"T-GOOD\"", "\"T-FAR\"")
            .replace("2026-11-26T02:00:00Z", "9999-12-31T23:59:59Z");
        let rows: [(&str, rusqlite::types::Value); 6] = [
            ("T-NOT-JSON", "{not json".to_string().into()),
            ("T-INTEGER", 42i64.into()),
            ("T-BLOB", vec![0u8, 159, 146, 150].into()),
            ("T-OTHER-ID", good.clone().into()),
            ("T-PINNED", pinned.into()),
            ("T-FAR", far.into()),
        ];
        for (id, state) in rows {
            connection
                .execute(
                    "INSERT INTO terminals (id, state) VALUES (?1, ?2)",
                    params![id, state],
                )
                .unwrap();
        }
        connection
            .execute(
                "INSERT INTO findings_history (id, terminal_id, code, closed_at, finding)
                 VALUES (7, 'T-GOOD', 'x', NULL, 'nope'), (8, 'T-GOOD', 'x', NULL, x'00ff')",
                [],
            )
            .unwrap();
        for (key, value) in [
            (FLEET_WIDE_KEY, "[1,2"),
            (POLICY_KEY, r#"[{"component":"nonsense","minimum":"1"}]"#),
            (NEXT_ID_KEY, "minus one"),
        ] {
            put_setting(&connection, key, value).unwrap();
        }
        drop(connection);

        let store = Store::open(dir.path()).unwrap();
        let (restored, policy) = store.load(100).unwrap();
        let mut unreadable: Vec<(&str, String)> = restored.unreadable.clone();
        unreadable.sort();
        assert_eq!(
            unreadable,
            [
                ("findings_history", "id 7".to_string()),
                ("findings_history", "id 8".to_string()),
                ("settings", FLEET_WIDE_KEY.to_string()),
                ("settings", NEXT_ID_KEY.to_string()),
                ("settings", POLICY_KEY.to_string()),
                ("terminals", "T-BLOB".to_string()),
                ("terminals", "T-INTEGER".to_string()),
                ("terminals", "T-NOT-JSON".to_string()),
                ("terminals", "T-OTHER-ID".to_string()),
            ]
        );
        assert_eq!(policy, None, "the config's policy applies");
        assert_eq!(restored.next_finding_id, 8, "above every stored id");
        let mut kept: Vec<(String, u64, Option<String>)> = restored
            .terminals
            .iter()
            .map(|t| {
                (
                    t.id.to_string(),
                    t.highest_sequence,
                    t.agent_instance.as_deref().map(str::to_string),
                )
            })
            .collect();
        kept.sort();
        let instance = Some("aaaaaaaa-1111".to_string());
        assert_eq!(
            kept,
            [
                ("T-FAR".to_string(), 3, instance.clone()),
                ("T-GOOD".to_string(), 3, instance.clone()),
                // Pinned at u64::MAX by a report from before the bound: starts anew.
                ("T-PINNED".to_string(), 0, instance.clone()),
            ]
        );
        // The terminal dated at the end of the calendar is usable.
        let fleet = Fleet::restore(restored, 100, 30);
        fleet.evaluate(datetime!(2026-11-26 02:10 UTC), &thresholds);
        let mut report = healthy_report();
        report.sequence = 4;
        fleet.apply_batch(
            "T-FAR",
            vec![(report, vec![])],
            datetime!(2026-11-26 02:11 UTC),
            &thresholds,
        );
        assert_eq!(fleet.highest_sequence("T-FAR"), 4);
    }

    #[test]
    fn the_agent_instance_is_kept_in_its_column_too() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::new(100, 30);
        let mut report = healthy_report();
        report.agent_instance = Some("bbbbbbbb-2222".into());
        fleet.apply_batch(
            "T-1",
            vec![(report, vec![])],
            datetime!(2026-11-26 02:00 UTC),
            &Thresholds::default(),
        );
        let store = Store::open(dir.path()).unwrap();
        store.write(&fleet.take_changes(), 100).unwrap();
        let column: Option<String> = store
            .connection()
            .query_row(
                "SELECT agent_instance FROM terminals WHERE id = 'T-1'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(column.as_deref(), Some("bbbbbbbb-2222"));
    }

    #[test]
    fn the_database_history_keeps_a_quota_per_terminal_and_a_total() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let finding = |id: u64, terminal: &str| Finding {
            id,
            terminal_id: terminal.into(),
            kind: &posmon_diagnosis::rules::network_path::HOST_UNREACHABLE,
            severity: posmon_diagnosis::Severity::Critical,
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
