//! The configuration profiles and their history in the state database: tables
//! `config_profiles` (the profiles in force) and `config_history` (every PUT and DELETE, at most
//! [`HISTORY_MAX`] rows, the oldest dropped). Own connection, like `revocation.rs`: writes are an
//! administrator's, rare. Loading is lenient: a row the collector cannot use is skipped, logged
//! and reported to the caller, which counts it.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use posmon_protocol::control::Settings;
use rusqlite::{params, Connection};
use serde::Serialize;
use time::OffsetDateTime;

use super::profile::{Profile, Rollout, Selector};
use crate::store::{lenient_text, open_connection, StoreError};

/// History rows kept at most: the oldest are dropped.
pub const HISTORY_MAX: usize = 10_000;

/// The tables' names, as `posmon_state_unreadable_rows_total{table}` counts them.
pub const PROFILES_TABLE: &str = "config_profiles";

/// A change of a profile, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub id: i64,
    pub profile: String,
    pub revision: u64,
    /// `put` or `delete`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<serde_json::Value>,
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What [`ControlStore::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub profiles: Vec<Profile>,
    /// (table, key) of every row skipped.
    pub unreadable: Vec<(&'static str, String)>,
}

pub struct ControlStore {
    connection: Mutex<Connection>,
    history_max: usize,
}

fn json<T: Serialize>(value: &T) -> Result<String, rusqlite::Error> {
    serde_json::to_string(value)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(error.into()))
}

fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

fn from_unix(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl ControlStore {
    /// Opens the tables in the state database in `data_dir` (already migrated by `Store::open`).
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(ControlStore {
            connection: Mutex::new(open_connection(data_dir)?),
            history_max: HISTORY_MAX,
        })
    }

    #[cfg(test)]
    fn with_history_max(mut self, history_max: usize) -> Self {
        self.history_max = history_max;
        self
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored profiles; a row that cannot be used is skipped (and named in `unreadable`).
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT name, revision, selector, settings, rollout, previous, updated_at, updated_by, comment
             FROM config_profiles ORDER BY name",
        )?;
        let mut rows = statement.query([])?;
        let mut loaded = Loaded::default();
        while let Some(row) = rows.next()? {
            let name = lenient_text(row, 0).unwrap_or_default();
            match read_profile(row, &name) {
                Ok(profile) => loaded.profiles.push(profile),
                Err(problem) => {
                    tracing::error!(table = PROFILES_TABLE, profile = %name, problem, "A stored configuration profile is not usable: skipped.");
                    loaded.unreadable.push((PROFILES_TABLE, name));
                }
            }
        }
        Ok(loaded)
    }

    /// Stores `profile` (a new revision) and its history row, in one transaction.
    pub fn put(&self, profile: &Profile) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        let previous = profile.previous.as_ref().map(json).transpose()?;
        transaction.execute(
            "INSERT INTO config_profiles
                 (name, revision, selector, settings, rollout, previous, updated_at, updated_by, comment)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (name) DO UPDATE SET
                 revision = excluded.revision, selector = excluded.selector,
                 settings = excluded.settings, rollout = excluded.rollout,
                 previous = excluded.previous, updated_at = excluded.updated_at,
                 updated_by = excluded.updated_by, comment = excluded.comment",
            params![
                profile.name,
                i64::try_from(profile.revision).unwrap_or(i64::MAX),
                json(&profile.selector)?,
                json(&profile.settings)?,
                json(&profile.rollout)?,
                previous,
                unix(profile.updated_at),
                profile.updated_by,
                profile.comment,
            ],
        )?;
        insert_history(
            &transaction,
            &profile.name,
            profile.revision,
            "put",
            Some((
                json(&profile.selector)?,
                json(&profile.settings)?,
                json(&profile.rollout)?,
            )),
            &profile.updated_by,
            profile.updated_at,
            profile.comment.as_deref(),
            self.history_max,
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// Deletes `profile` and records it in the history, in one transaction.
    pub fn delete(
        &self,
        profile: &Profile,
        by: &str,
        at: OffsetDateTime,
        comment: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        transaction.execute(
            "DELETE FROM config_profiles WHERE name = ?1",
            [&profile.name],
        )?;
        insert_history(
            &transaction,
            &profile.name,
            profile.revision,
            "delete",
            None,
            by,
            at,
            comment,
            self.history_max,
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// The newest `limit` history rows (of one profile, when given), newest first; a row that
    /// cannot be read is left out.
    pub fn history(
        &self,
        profile: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let connection = self.connection();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut statement = connection.prepare(
            "SELECT id, profile, revision, action, selector, settings, rollout, changed_by, changed_at, comment
             FROM config_history WHERE ?1 IS NULL OR profile = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let mut rows = statement.query(params![profile, limit])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            let integer = |index| row.get_ref(index).ok().and_then(|v| v.as_i64().ok());
            let value =
                |index| lenient_text(row, index).and_then(|text| serde_json::from_str(&text).ok());
            let (Some(id), Some(profile), Some(revision), Some(action), Some(by), Some(at)) = (
                integer(0),
                lenient_text(row, 1),
                integer(2).and_then(|r| u64::try_from(r).ok()),
                lenient_text(row, 3),
                lenient_text(row, 7),
                integer(8),
            ) else {
                tracing::error!(
                    table = "config_history",
                    "A configuration history row is not usable: left out."
                );
                continue;
            };
            entries.push(HistoryEntry {
                id,
                profile,
                revision,
                action,
                selector: value(4),
                settings: value(5),
                rollout: value(6),
                by,
                at: from_unix(at),
                comment: lenient_text(row, 9),
            });
        }
        Ok(entries)
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one history row's columns, written in one place"
)]
fn insert_history(
    transaction: &rusqlite::Transaction<'_>,
    profile: &str,
    revision: u64,
    action: &str,
    contents: Option<(String, String, String)>,
    by: &str,
    at: OffsetDateTime,
    comment: Option<&str>,
    history_max: usize,
) -> Result<(), StoreError> {
    let (selector, settings, rollout) = match contents {
        Some((selector, settings, rollout)) => (Some(selector), Some(settings), Some(rollout)),
        None => (None, None, None),
    };
    transaction.execute(
        "INSERT INTO config_history
             (profile, revision, action, selector, settings, rollout, changed_by, changed_at, comment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            profile,
            i64::try_from(revision).unwrap_or(i64::MAX),
            action,
            selector,
            settings,
            rollout,
            by,
            unix(at),
            comment,
        ],
    )?;
    // Ids only grow (AUTOINCREMENT): keeping the newest ids keeps at most `history_max` rows.
    let keep = i64::try_from(history_max).unwrap_or(i64::MAX);
    transaction.execute(
        "DELETE FROM config_history WHERE id <= (SELECT MAX(id) FROM config_history) - ?1",
        [keep],
    )?;
    Ok(())
}

/// One stored profile, or what is wrong with it.
fn read_profile(row: &rusqlite::Row<'_>, name: &str) -> Result<Profile, String> {
    super::profile::check_name(name).map_err(|error| error.problem)?;
    let text = |index: usize, what: &str| {
        lenient_text(row, index).ok_or_else(|| format!("{what} is not text"))
    };
    let integer = |index: usize, what: &str| {
        row.get_ref(index)
            .ok()
            .and_then(|value| value.as_i64().ok())
            .ok_or_else(|| format!("{what} is not an integer"))
    };
    let revision = u64::try_from(integer(1, "revision")?).map_err(|_| "revision is negative")?;
    let selector: Selector = serde_json::from_str(&text(2, "selector")?)
        .map_err(|error| format!("selector: {error}"))?;
    let settings: Settings = serde_json::from_str(&text(3, "settings")?)
        .map_err(|error| format!("settings: {error}"))?;
    let rollout: Rollout =
        serde_json::from_str(&text(4, "rollout")?).map_err(|error| format!("rollout: {error}"))?;
    let previous: Option<Settings> = match lenient_text(row, 5) {
        Some(previous) => {
            Some(serde_json::from_str(&previous).map_err(|error| format!("previous: {error}"))?)
        }
        None => None,
    };
    // What a PUT would refuse is refused here too: the database is outside input as well.
    let request = super::profile::ProfileRequest {
        selector: selector.clone(),
        settings: settings.clone(),
        rollout: Some(rollout.clone()),
        comment: lenient_text(row, 8),
    };
    request
        .validate()
        .map_err(|error| format!("{}: {}", error.field, error.problem))?;
    if let Some(previous) = &previous {
        previous
            .validate("previous")
            .map_err(|error| error.to_string())?;
    }
    Ok(Profile {
        name: name.to_string(),
        selector,
        settings,
        rollout,
        revision,
        previous,
        updated_at: from_unix(integer(6, "updated_at")?),
        updated_by: text(7, "updated_by")?,
        comment: lenient_text(row, 8),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::profile::ProfileRequest;

    fn open() -> (ControlStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        crate::store::Store::open(dir.path()).unwrap_or_else(|error| panic!("{error}"));
        let store = ControlStore::open(dir.path()).unwrap_or_else(|error| panic!("{error}"));
        (store, dir)
    }

    fn profile(name: &str, attempts: u32, revision: u64) -> Profile {
        let request: ProfileRequest = serde_json::from_str(&format!(
            r#"{{"selector":{{"region":"east"}},"settings":{{"attempts":{attempts}}},"comment":"c"}}"#
        ))
        .unwrap_or_else(|error| panic!("{error}"));
        let mut profile = Profile::next(
            None,
            request,
            name,
            "admin",
            OffsetDateTime::from_unix_timestamp(1_800_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        );
        profile.revision = revision;
        profile
    }

    #[test]
    fn profiles_and_history_survive_and_bad_rows_are_skipped() {
        let (store, dir) = open();
        let first = profile("east", 2, 1);
        store.put(&first).unwrap_or_else(|error| panic!("{error}"));
        let mut second = profile("east", 3, 2);
        second.previous = Some(first.settings.clone());
        store.put(&second).unwrap_or_else(|error| panic!("{error}"));
        let gone = profile("gone", 1, 1);
        store.put(&gone).unwrap_or_else(|error| panic!("{error}"));
        store
            .delete(&gone, "admin", gone.updated_at, Some("not needed"))
            .unwrap_or_else(|error| panic!("{error}"));
        drop(store);
        let connection = open_connection(dir.path()).unwrap_or_else(|error| panic!("{error}"));
        for (name, settings) in [
            ("bad-json", "{not json"),
            ("Bad Name", "{}"),
            (
                "a-command",
                r#"{"components":[{"name":"x","command":["id"]}]}"#,
            ),
            ("invalid", r#"{"attempts":0}"#),
        ] {
            connection
                .execute(
                    "INSERT INTO config_profiles (name, revision, selector, settings, rollout, updated_at, updated_by)
                     VALUES (?1, 1, '{}', ?2, '{\"percent\":100}', 0, 'x')",
                    params![name, settings],
                )
                .unwrap_or_else(|error| panic!("{error}"));
        }
        let store = ControlStore::open(dir.path()).unwrap_or_else(|error| panic!("{error}"));
        let loaded = store.load().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(loaded.profiles, vec![second]);
        let mut skipped: Vec<&str> = loaded
            .unreadable
            .iter()
            .map(|(_, key)| key.as_str())
            .collect();
        skipped.sort_unstable();
        assert_eq!(skipped, ["Bad Name", "a-command", "bad-json", "invalid"]);
        let history = store
            .history(None, 10)
            .unwrap_or_else(|error| panic!("{error}"));
        let actions: Vec<(&str, u64, &str)> = history
            .iter()
            .map(|entry| {
                (
                    entry.profile.as_str(),
                    entry.revision,
                    entry.action.as_str(),
                )
            })
            .collect();
        assert_eq!(
            actions,
            [
                ("gone", 1, "delete"),
                ("gone", 1, "put"),
                ("east", 2, "put"),
                ("east", 1, "put")
            ]
        );
        assert_eq!(history[0].comment.as_deref(), Some("not needed"));
        assert_eq!(
            history[2].settings,
            Some(serde_json::json!({"attempts": 3}))
        );
        let east = store
            .history(Some("east"), 1)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(east.len(), 1);
        assert_eq!(east[0].revision, 2);
    }

    #[test]
    fn the_history_keeps_only_the_newest_rows() {
        let (store, _dir) = open();
        let store = store.with_history_max(5);
        for revision in 1..=12 {
            store
                .put(&profile("p", 1, revision))
                .unwrap_or_else(|error| panic!("{error}"));
        }
        let history = store
            .history(None, 100)
            .unwrap_or_else(|error| panic!("{error}"));
        let revisions: Vec<u64> = history.iter().map(|entry| entry.revision).collect();
        assert_eq!(revisions, [12, 11, 10, 9, 8]);
    }
}
