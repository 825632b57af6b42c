//! The workflow's tables in the state database: `problem_states` (each open finding's state,
//! as JSON) and `audit_log` (every action, at most [`AUDIT_MAX`] rows, the oldest dropped).
//! Own connection, like `control/store.rs`: writes are people's actions, rare. Loading is
//! lenient: a row the collector cannot use is skipped and logged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use posmon_diagnosis::findings::Finding;
use rusqlite::{params, Connection};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Action, ProblemState};
use crate::store::{lenient_text, open_connection, StoreError};

/// Audit rows kept at most: the oldest are dropped.
pub const AUDIT_MAX: i64 = 200_000;

/// One action as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who did it.
    pub actor: String,
    /// `acknowledge`, `unacknowledge`, `assign`, `unassign`, `comment`, `close`,
    /// `maintenance.create`, `maintenance.end`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding_id: Option<u64>,
    /// The finding's terminal (empty for a fleet-wide finding).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The assignee after an `assign`, a maintenance window's id…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl AuditEntry {
    /// The entry of `action` on `finding` (its id given by the store).
    pub fn of_finding(
        finding: &Finding,
        action: &Action,
        actor: &str,
        comment: Option<&str>,
        at: OffsetDateTime,
    ) -> AuditEntry {
        let detail = match action {
            Action::Assign(Some(assignee)) => serde_json::to_value(assignee).ok(),
            _ => None,
        };
        AuditEntry {
            id: 0,
            at,
            actor: actor.to_string(),
            action: action.as_str().to_string(),
            finding_id: Some(finding.id),
            terminal_id: Some(finding.terminal_id.to_string()),
            code: Some(finding.kind.code.to_string()),
            subject: Some(finding.subject.clone()),
            detail,
            comment: comment.map(str::to_string),
        }
    }
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub finding_id: Option<u64>,
    pub terminal_id: Option<String>,
    /// Only entries older than this id (paging back).
    pub before: Option<i64>,
}

pub struct WorkflowStore {
    connection: Mutex<Connection>,
}

fn sql_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

impl WorkflowStore {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(WorkflowStore {
            connection: Mutex::new(open_connection(data_dir)?),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored states; a row that cannot be used is skipped (and logged).
    pub fn load_states(&self) -> Result<HashMap<u64, ProblemState>, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare("SELECT finding_id, state FROM problem_states")?;
        let mut rows = statement.query([])?;
        let mut states = HashMap::new();
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0).unwrap_or(-1);
            let state = lenient_text(row, 1)
                .and_then(|text| serde_json::from_str::<ProblemState>(&text).ok());
            match (u64::try_from(id), state) {
                (Ok(id), Some(state)) => {
                    states.insert(id, state);
                }
                _ => tracing::error!(
                    table = "problem_states",
                    finding = id,
                    "A stored problem state is not usable: skipped."
                ),
            }
        }
        Ok(states)
    }

    /// The highest finding id a state or an audit row names (0 without any).
    pub fn highest_finding_id(&self) -> Result<u64, StoreError> {
        let highest: Option<i64> = self.connection().query_row(
            "SELECT MAX(id) FROM (SELECT MAX(finding_id) AS id FROM problem_states
                                  UNION ALL SELECT MAX(finding_id) FROM audit_log)",
            [],
            |row| row.get(0),
        )?;
        Ok(highest.and_then(|id| u64::try_from(id).ok()).unwrap_or(0))
    }

    /// Stores the state of finding `id` after an action (`None`: drop it) and the action's
    /// audit entry, in one transaction; returns the entry with its id.
    pub fn record(
        &self,
        id: u64,
        state: Option<&ProblemState>,
        mut entry: AuditEntry,
    ) -> Result<AuditEntry, StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        match state {
            Some(state) => {
                let text = serde_json::to_string(state)
                    .map_err(|error| rusqlite::Error::ToSqlConversionFailure(error.into()))?;
                transaction.execute(
                    "INSERT INTO problem_states (finding_id, state) VALUES (?1, ?2)
                     ON CONFLICT (finding_id) DO UPDATE SET state = excluded.state",
                    params![sql_id(id), text],
                )?;
            }
            None => {
                transaction.execute(
                    "DELETE FROM problem_states WHERE finding_id = ?1",
                    [sql_id(id)],
                )?;
            }
        }
        entry.id = insert_entry(&transaction, &entry)?;
        transaction.commit()?;
        Ok(entry)
    }

    /// Records an entry about no finding.
    pub fn record_other(&self, mut entry: AuditEntry) -> Result<AuditEntry, StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        entry.id = insert_entry(&transaction, &entry)?;
        transaction.commit()?;
        Ok(entry)
    }

    pub fn forget_states(&self, ids: &[u64]) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        for id in ids {
            transaction.execute(
                "DELETE FROM problem_states WHERE finding_id = ?1",
                [sql_id(*id)],
            )?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// The newest `limit` entries `filter` keeps, newest first; a row that cannot be read is
    /// left out.
    pub fn audit(&self, filter: &AuditFilter, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT id, at, actor, action, finding_id, terminal_id, code, subject, detail, comment
             FROM audit_log
             WHERE (?1 IS NULL OR finding_id = ?1) AND (?2 IS NULL OR terminal_id = ?2)
               AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4",
        )?;
        let mut rows = statement.query(params![
            filter.finding_id.map(sql_id),
            filter.terminal_id,
            filter.before,
            i64::try_from(limit).unwrap_or(i64::MAX),
        ])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            let Ok(id) = row.get::<_, i64>(0) else {
                continue;
            };
            let at = row
                .get::<_, i64>(1)
                .ok()
                .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            entries.push(AuditEntry {
                id,
                at,
                actor: lenient_text(row, 2).unwrap_or_default(),
                action: lenient_text(row, 3).unwrap_or_default(),
                finding_id: row
                    .get::<_, Option<i64>>(4)
                    .ok()
                    .flatten()
                    .and_then(|id| u64::try_from(id).ok()),
                terminal_id: lenient_text(row, 5),
                code: lenient_text(row, 6),
                subject: lenient_text(row, 7),
                detail: lenient_text(row, 8).and_then(|text| serde_json::from_str(&text).ok()),
                comment: lenient_text(row, 9),
            });
        }
        Ok(entries)
    }
}

fn insert_entry(
    transaction: &rusqlite::Transaction<'_>,
    entry: &AuditEntry,
) -> Result<i64, StoreError> {
    let detail = entry.detail.as_ref().map(serde_json::Value::to_string);
    transaction.execute(
        "INSERT INTO audit_log
             (at, actor, action, finding_id, terminal_id, code, subject, detail, comment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            entry.at.unix_timestamp(),
            entry.actor,
            entry.action,
            entry.finding_id.map(sql_id),
            entry.terminal_id,
            entry.code,
            entry.subject,
            detail,
            entry.comment,
        ],
    )?;
    let id = transaction.last_insert_rowid();
    transaction.execute(
        "DELETE FROM audit_log WHERE id <= ?1",
        [id.saturating_sub(AUDIT_MAX)],
    )?;
    Ok(id)
}
