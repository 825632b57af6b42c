//! The database schema, migrated by version (`PRAGMA user_version`): migration *n* brings a
//! database from version *n* to *n + 1*. Never edit a released migration; add one.

use rusqlite::Connection;

use super::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: terminal registry with its state summary (JSON), closed findings, settings (the
    //    version policy, the fleet-wide findings, the next finding id).
    "CREATE TABLE terminals (
         id TEXT PRIMARY KEY NOT NULL,
         state TEXT NOT NULL
     );
     CREATE TABLE findings_history (
         id INTEGER PRIMARY KEY NOT NULL,
         terminal_id TEXT NOT NULL,
         code TEXT NOT NULL,
         closed_at TEXT,
         finding TEXT NOT NULL
     );
     CREATE INDEX findings_history_by_terminal ON findings_history (terminal_id, id);
     CREATE TABLE settings (
         key TEXT PRIMARY KEY NOT NULL,
         value TEXT NOT NULL
     );",
    // 2: alerting (alert/outbox.rs): the outbox of notifications, what each receiver was told,
    //    when each group was last sent, and the silences.
    "CREATE TABLE alert_outbox (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         idempotency_key TEXT NOT NULL UNIQUE,
         receiver TEXT NOT NULL,
         group_key TEXT NOT NULL,
         notification TEXT NOT NULL,
         status TEXT NOT NULL,
         attempts INTEGER NOT NULL,
         last_error TEXT,
         created_at INTEGER NOT NULL,
         updated_at INTEGER NOT NULL,
         next_attempt_at INTEGER NOT NULL,
         delivered_at INTEGER
     );
     CREATE INDEX alert_outbox_by_receiver ON alert_outbox (receiver, status, id);
     CREATE INDEX alert_outbox_by_status ON alert_outbox (status, id);
     CREATE TABLE alert_notified (
         receiver TEXT NOT NULL,
         alert_key TEXT NOT NULL,
         group_key TEXT NOT NULL,
         item TEXT NOT NULL,
         PRIMARY KEY (receiver, alert_key)
     );
     CREATE TABLE alert_groups (
         receiver TEXT NOT NULL,
         group_key TEXT NOT NULL,
         last_sent_at INTEGER NOT NULL,
         PRIMARY KEY (receiver, group_key)
     );
     CREATE TABLE alert_silences (
         id INTEGER PRIMARY KEY NOT NULL,
         silence TEXT NOT NULL,
         ends_at INTEGER NOT NULL
     );",
    // 3: the agent instance each terminal's sequences come from (also in its state JSON), so
    //    that sequence resets can be looked up in SQL.
    "ALTER TABLE terminals ADD COLUMN agent_instance TEXT;",
    // 4: the lowest token generation accepted per terminal (revocations).
    REVOCATIONS_MIGRATION,
    // 5: one-time enrollment codes (enroll.rs).
    ENROLLMENTS_MIGRATION,
    // 6: fleet control: configuration profiles and their history (control/store.rs).
    CONTROL_MIGRATION,
    // 7: the problem workflow (workflow/store.rs): each open finding's state and the audit log.
    WORKFLOW_MIGRATION,
    // 8: user accounts and their API tokens (users.rs).
    USERS_MIGRATION,
    // 9: history (history/store.rs): per-terminal series in downsampling tiers, readiness
    //    changes, the fleet trend.
    HISTORY_MIGRATION,
];

/// The schema version this collector writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database to [`CURRENT_VERSION`], one migration per transaction. Refuses a
/// database written by a newer collector.
pub fn migrate(connection: &mut Connection) -> Result<u32, StoreError> {
    let found: u32 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > CURRENT_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: CURRENT_VERSION,
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index as u32 + 1)?;
        transaction.commit()?;
    }
    Ok(found)
}

/// Token revocation (`revocation.rs`): per terminal, the lowest token generation still
/// accepted, and when it was last raised (Unix seconds).
const REVOCATIONS_MIGRATION: &str = "CREATE TABLE terminal_credentials (
         terminal_id TEXT PRIMARY KEY NOT NULL,
         min_generation INTEGER NOT NULL,
         revoked_at INTEGER NOT NULL
     );";

/// Enrollment codes (`enroll.rs`): only the SHA-256 of each code, bound to its terminal
/// (`posmon_protocol::enroll::code_hash`), with when it was created and expires (Unix seconds).
const ENROLLMENTS_MIGRATION: &str = "CREATE TABLE enrollment_codes (
         id INTEGER PRIMARY KEY NOT NULL,
         terminal_id TEXT NOT NULL,
         code_hash BLOB NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL
     );
     CREATE INDEX enrollment_codes_by_terminal ON enrollment_codes (terminal_id, expires_at);";

/// Fleet control (`control/store.rs`): the configuration profiles in force (selector, settings,
/// rollout and previous settings as their API's JSON; times in Unix seconds), and the history of
/// every change (bounded by the writer: the oldest rows dropped).
const CONTROL_MIGRATION: &str = "CREATE TABLE config_profiles (
         name TEXT PRIMARY KEY NOT NULL,
         revision INTEGER NOT NULL,
         selector TEXT NOT NULL,
         settings TEXT NOT NULL,
         rollout TEXT NOT NULL,
         previous TEXT,
         updated_at INTEGER NOT NULL,
         updated_by TEXT NOT NULL,
         comment TEXT
     );
     CREATE TABLE config_history (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         profile TEXT NOT NULL,
         revision INTEGER NOT NULL,
         action TEXT NOT NULL,
         selector TEXT,
         settings TEXT,
         rollout TEXT,
         changed_by TEXT NOT NULL,
         changed_at INTEGER NOT NULL,
         comment TEXT
     );
     CREATE INDEX config_history_by_profile ON config_history (profile, id);";

/// The problem workflow (`workflow/store.rs`): the state of each open finding an operator acted
/// on (its API's JSON), and the audit log of every action (times in Unix seconds; bounded by the
/// writer: the oldest rows dropped).
const WORKFLOW_MIGRATION: &str = "CREATE TABLE problem_states (
         finding_id INTEGER PRIMARY KEY NOT NULL,
         state TEXT NOT NULL
     );
     CREATE TABLE audit_log (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         at INTEGER NOT NULL,
         actor TEXT NOT NULL,
         action TEXT NOT NULL,
         finding_id INTEGER,
         terminal_id TEXT,
         code TEXT,
         subject TEXT,
         detail TEXT,
         comment TEXT
     );
     CREATE INDEX audit_log_by_finding ON audit_log (finding_id, id);
     CREATE INDEX audit_log_by_terminal ON audit_log (terminal_id, id);";

/// User accounts (`users.rs`): name, role, the argon2id PHC string of the password (NULL for a
/// user who signs in only through OpenID Connect), disabled, the generation a password reset
/// raises (ending older sessions), times in Unix seconds; and each per-user API token's
/// SHA-256, never the token.
const USERS_MIGRATION: &str = "CREATE TABLE users (
         name TEXT PRIMARY KEY NOT NULL,
         role TEXT NOT NULL,
         password_hash TEXT,
         disabled INTEGER NOT NULL DEFAULT 0,
         generation INTEGER NOT NULL DEFAULT 0,
         created_at INTEGER NOT NULL,
         updated_at INTEGER NOT NULL
     );
     CREATE TABLE user_tokens (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         user_name TEXT NOT NULL,
         token_hash BLOB NOT NULL UNIQUE,
         role TEXT NOT NULL,
         label TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         revoked_at INTEGER
     );
     CREATE INDEX user_tokens_by_user ON user_tokens (user_name, revoked_at);";

/// History (`history/store.rs`): a key per terminal id; per (tier, period, terminal) the
/// period's slots as one blob (`history/slots.rs`; a period is a tier's row length, counted
/// from 1970-01-01); readiness changes; the fleet trend's points. Times in Unix seconds.
const HISTORY_MIGRATION: &str = "CREATE TABLE history_terminals (
         key INTEGER PRIMARY KEY NOT NULL,
         id TEXT NOT NULL UNIQUE
     );
     CREATE TABLE history_slots (
         tier INTEGER NOT NULL,
         period INTEGER NOT NULL,
         terminal INTEGER NOT NULL,
         slots BLOB NOT NULL,
         PRIMARY KEY (tier, period, terminal)
     ) WITHOUT ROWID;
     CREATE TABLE history_readiness (
         terminal INTEGER NOT NULL,
         at INTEGER NOT NULL,
         readiness INTEGER NOT NULL,
         PRIMARY KEY (terminal, at)
     ) WITHOUT ROWID;
     CREATE TABLE history_fleet (
         at INTEGER PRIMARY KEY NOT NULL,
         cannot_pay INTEGER NOT NULL,
         at_risk INTEGER NOT NULL,
         can_pay INTEGER NOT NULL,
         unknown INTEGER NOT NULL,
         environment INTEGER NOT NULL,
         outdated INTEGER NOT NULL,
         availability INTEGER NOT NULL,
         upstream INTEGER NOT NULL,
         critical_findings INTEGER NOT NULL
     );";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_is_migrated_and_a_newer_one_refused() {
        let mut connection = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut connection).unwrap(), 0);
        let version: u32 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, CURRENT_VERSION);
        // Running again is a no-op.
        assert_eq!(migrate(&mut connection).unwrap(), CURRENT_VERSION);
        connection
            .pragma_update(None, "user_version", CURRENT_VERSION + 1)
            .unwrap();
        let error = migrate(&mut connection).err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(format!("the state database has schema version {}, newer than this collector's {CURRENT_VERSION}: upgrade the collector", CURRENT_VERSION + 1).as_str())
        );
    }
}
