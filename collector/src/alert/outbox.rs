//! The outbox: notifications waiting for delivery and what became of them, what each receiver
//! was told (so a restart neither forgets nor repeats), when each group was last sent, and the
//! silences — all in the collector's SQLite database (tables from schema version 2), through a
//! connection of its own.
//!
//! A notification is queued in the same transaction that records its alerts as told, so after
//! a crash either both happened or neither. It is marked delivered right after the receiver
//! accepts it: a crash between those two is the only way a receiver hears of it twice, and it
//! then gets the same idempotency key again.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use prometheus::IntCounterVec;
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use super::message::{AlertItem, Notification};
use super::plan::{GroupId, Planned, State};
use super::silences::Silence;
use crate::store::{lenient_int, lenient_text, open_connection, StoreError};

/// A notification's delivery state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Delivered,
    /// The receiver refused it for good (a bad signature, an unknown robot).
    Failed,
    /// Not delivered within `expire_after_seconds`.
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Expired => "expired",
        }
    }

    fn parse(text: &str) -> Status {
        match text {
            "delivered" => Status::Delivered,
            "failed" => Status::Failed,
            "expired" => Status::Expired,
            _ => Status::Pending,
        }
    }
}

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub idempotency_key: String,
    pub receiver: String,
    pub group_key: String,
    pub notification: Notification,
    pub status: Status,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub next_attempt_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
}

pub struct Outbox {
    connection: Mutex<Connection>,
    /// Counts stored rows skipped because they cannot be used, by table.
    unreadable: Option<IntCounterVec>,
}

fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The latest time read back from a stored row, in Unix milliseconds (3000-01-01): the
/// collector's clock writes nothing later, and a time far beyond (a damaged row) would make
/// the arithmetic on it overflow.
const STORED_MILLIS_MAX: i64 = 32_503_680_000_000;

/// A stored time: Unix milliseconds, clamped to 1970 ..= 3000.
fn from_millis(value: i64) -> OffsetDateTime {
    let value = value.clamp(0, STORED_MILLIS_MAX);
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn encode<T: serde::Serialize>(value: &T, what: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { what, source })
}

const ROW_COLUMNS: &str =
    "id, idempotency_key, receiver, group_key, notification, status, attempts,
     last_error, created_at, updated_at, next_attempt_at, delivered_at";

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Row, String)> {
    let text = lenient_text(row, 4).unwrap_or_default();
    let placeholder = Notification {
        receiver: String::new(),
        group_key: String::new(),
        group_labels: Default::default(),
        repeat: false,
        firing: vec![],
        resolved: vec![],
        more_firing: 0,
        more_resolved: 0,
        created_at: OffsetDateTime::UNIX_EPOCH,
    };
    // Only the id must be right (the key to mark a row failed); every other column of a
    // damaged row reads as a neutral value and the notification's JSON decides.
    let delivered = row
        .get_ref(11)
        .ok()
        .and_then(|value| value.as_i64_or_null().ok().flatten());
    Ok((
        Row {
            id: row.get(0)?,
            idempotency_key: lenient_text(row, 1).unwrap_or_default(),
            receiver: lenient_text(row, 2).unwrap_or_default(),
            group_key: lenient_text(row, 3).unwrap_or_default(),
            notification: placeholder,
            status: Status::parse(&lenient_text(row, 5).unwrap_or_default()),
            attempts: u32::try_from(lenient_int(row, 6)).unwrap_or(0),
            last_error: lenient_text(row, 7),
            created_at: from_millis(lenient_int(row, 8)),
            updated_at: from_millis(lenient_int(row, 9)),
            next_attempt_at: from_millis(lenient_int(row, 10)),
            delivered_at: delivered.map(from_millis),
        },
        text,
    ))
}

/// Rows whose stored notification cannot be read are given up rather than retried forever.
fn decode_row((mut row, text): (Row, String)) -> Result<Row, (i64, String)> {
    match serde_json::from_str(&text) {
        Ok(notification) => {
            row.notification = notification;
            Ok(row)
        }
        Err(error) => Err((row.id, error.to_string())),
    }
}

/// Which rows the API lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<Status>,
    pub receiver: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

impl Outbox {
    /// Opens the collector's database (already created and migrated by the store).
    pub fn open(data_dir: &Path) -> Result<Outbox, StoreError> {
        let connection = open_connection(data_dir)?;
        Ok(Outbox {
            connection: Mutex::new(connection),
            unreadable: None,
        })
    }

    /// Counts the stored rows it skips in `counter`, by table.
    pub fn counting_unreadable(mut self, counter: IntCounterVec) -> Self {
        self.unreadable = Some(counter);
        self
    }

    /// Logs and counts a stored row that cannot be used.
    fn skipped(&self, table: &str, key: &str, problem: &dyn std::fmt::Display) {
        tracing::error!(table, key, %problem, "Skipped a stored row the collector cannot use.");
        if let Some(counter) = &self.unreadable {
            counter.with_label_values(&[table]).inc();
        }
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What the receivers were told and when groups were last sent.
    pub fn load_state(&self) -> Result<State, StoreError> {
        let connection = self.connection();
        let mut state = State::default();
        let mut statement = connection
            .prepare("SELECT receiver, alert_key, group_key, item FROM alert_notified")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let (receiver, key, group) = (
                lenient_text(row, 0),
                lenient_text(row, 1),
                lenient_text(row, 2),
            );
            let item = lenient_text(row, 3).map(|text| serde_json::from_str::<AlertItem>(&text));
            match (receiver, key, group, item) {
                (Some(receiver), Some(key), Some(group), Some(Ok(item))) => {
                    state.notified.insert((receiver, key), (group, item));
                }
                (receiver, key, _, item) => {
                    let name = format!(
                        "{}|{}",
                        receiver.unwrap_or_default(),
                        key.unwrap_or_default()
                    );
                    match item {
                        Some(Err(error)) => self.skipped("alert_notified", &name, &error),
                        _ => self.skipped("alert_notified", &name, &"a column is not text"),
                    }
                }
            }
        }
        let mut statement =
            connection.prepare("SELECT receiver, group_key, last_sent_at FROM alert_groups")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let sent = row.get_ref(2).ok().and_then(|value| value.as_i64().ok());
            match (lenient_text(row, 0), lenient_text(row, 1), sent) {
                (Some(receiver), Some(group), Some(sent)) => {
                    state.last_sent.insert((receiver, group), from_millis(sent));
                }
                (receiver, group, _) => {
                    let name = format!(
                        "{}|{}",
                        receiver.unwrap_or_default(),
                        group.unwrap_or_default()
                    );
                    self.skipped("alert_groups", &name, &"a column has the wrong type");
                }
            }
        }
        Ok(state)
    }

    /// Queues a notification and records what it tells, in one transaction. Returns false
    /// when a notification with the same idempotency key was queued before (nothing changes).
    pub fn enqueue(&self, planned: &Planned) -> Result<bool, StoreError> {
        let notification = &planned.notification;
        let text = encode(notification, "a notification")?;
        let mut items = Vec::with_capacity(planned.added.len());
        for (key, item) in &planned.added {
            items.push((key, encode(item, "an alert")?));
        }
        let now = millis(notification.created_at);
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        let inserted = transaction.execute(
            "INSERT OR IGNORE INTO alert_outbox (idempotency_key, receiver, group_key, notification,
                 status, attempts, created_at, updated_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5, ?5)",
            params![
                planned.idempotency_key,
                notification.receiver,
                notification.group_key,
                text,
                now
            ],
        )?;
        {
            let mut upsert = transaction.prepare_cached(
                "INSERT OR REPLACE INTO alert_notified (receiver, alert_key, group_key, item)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (key, item) in &items {
                upsert.execute(params![
                    notification.receiver,
                    key,
                    notification.group_key,
                    item
                ])?;
            }
            let mut delete = transaction.prepare_cached(
                "DELETE FROM alert_notified WHERE receiver = ?1 AND alert_key = ?2",
            )?;
            for key in &planned.removed {
                delete.execute(params![notification.receiver, key])?;
            }
        }
        transaction.execute(
            "INSERT OR REPLACE INTO alert_groups (receiver, group_key, last_sent_at) VALUES (?1, ?2, ?3)",
            params![notification.receiver, notification.group_key, now],
        )?;
        transaction.commit()?;
        Ok(inserted > 0)
    }

    /// The oldest pending notification of a receiver: delivered in order, so a resolution
    /// never overtakes the alert it resolves. A row that cannot be read is marked failed.
    pub fn next_pending(&self, receiver: &str) -> Result<Option<Row>, StoreError> {
        loop {
            let found = self
                .connection()
                .query_row(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM alert_outbox
                         WHERE receiver = ?1 AND status = 'pending' ORDER BY id LIMIT 1"
                    ),
                    [receiver],
                    read_row,
                )
                .optional()?;
            let Some(found) = found else {
                return Ok(None);
            };
            match decode_row(found) {
                Ok(row) => return Ok(Some(row)),
                Err((id, error)) => {
                    self.skipped(
                        "alert_outbox",
                        &format!("id {id}"),
                        &format!("{error}; marked failed"),
                    );
                    self.finish(
                        id,
                        Status::Failed,
                        Some(&format!("unreadable: {error}")),
                        OffsetDateTime::now_utc(),
                    )?;
                }
            }
        }
    }

    pub fn delivered(&self, id: i64, attempts: u32, now: OffsetDateTime) -> Result<(), StoreError> {
        self.connection().execute(
            "UPDATE alert_outbox SET status = 'delivered', attempts = ?2, updated_at = ?3,
                 delivered_at = ?3 WHERE id = ?1",
            params![id, attempts, millis(now)],
        )?;
        Ok(())
    }

    pub fn retry_later(
        &self,
        id: i64,
        attempts: u32,
        error: &str,
        next_attempt_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.connection().execute(
            "UPDATE alert_outbox SET attempts = ?2, last_error = ?3, next_attempt_at = ?4,
                 updated_at = ?5 WHERE id = ?1",
            params![id, attempts, error, millis(next_attempt_at), millis(now)],
        )?;
        Ok(())
    }

    /// Gives a notification up: `failed` or `expired`.
    pub fn finish(
        &self,
        id: i64,
        status: Status,
        error: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.connection().execute(
            "UPDATE alert_outbox SET status = ?2, last_error = COALESCE(?3, last_error),
                 updated_at = ?4 WHERE id = ?1",
            params![id, status.as_str(), error, millis(now)],
        )?;
        Ok(())
    }

    /// Pending notifications of receivers no longer configured are given up at start.
    pub fn abandon_unknown(
        &self,
        receivers: &[&str],
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare("SELECT DISTINCT receiver FROM alert_outbox WHERE status = 'pending'")?;
        let pending: Vec<String> = statement
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let mut abandoned = 0;
        for receiver in pending
            .iter()
            .filter(|name| !receivers.contains(&name.as_str()))
        {
            abandoned += connection.execute(
                "UPDATE alert_outbox SET status = 'failed', last_error = 'the receiver is no longer configured',
                     updated_at = ?2 WHERE receiver = ?1 AND status = 'pending'",
                params![receiver, millis(now)],
            )?;
            connection.execute("DELETE FROM alert_notified WHERE receiver = ?1", [receiver])?;
        }
        Ok(abandoned)
    }

    pub fn pending_count(&self) -> Result<i64, StoreError> {
        Ok(self.connection().query_row(
            "SELECT COUNT(*) FROM alert_outbox WHERE status = 'pending'",
            [],
            |row| row.get(0),
        )?)
    }

    /// Newest first.
    pub fn list(&self, filter: &Filter) -> Result<Vec<Row>, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare(&format!(
            "SELECT {ROW_COLUMNS} FROM alert_outbox
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR receiver = ?2)
             ORDER BY id DESC LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = statement.query_map(
            params![
                filter.status.map(Status::as_str),
                filter.receiver,
                i64::try_from(filter.limit).unwrap_or(i64::MAX),
                i64::try_from(filter.offset).unwrap_or(i64::MAX)
            ],
            read_row,
        )?;
        let mut list = Vec::new();
        for row in rows {
            match decode_row(row?) {
                Ok(row) => list.push(row),
                Err((id, error)) => {
                    tracing::warn!(id, %error, "Skipped listing a notification that cannot be read.")
                }
            }
        }
        Ok(list)
    }

    /// Keeps the newest `keep` finished notifications.
    pub fn trim(&self, keep: usize) -> Result<(), StoreError> {
        self.connection().execute(
            "DELETE FROM alert_outbox WHERE status != 'pending' AND id NOT IN
                 (SELECT id FROM alert_outbox WHERE status != 'pending' ORDER BY id DESC LIMIT ?1)",
            [i64::try_from(keep).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    /// Forgets when these groups last sent (they have nothing open and are past any interval
    /// their last message imposes): otherwise every group a terminal's labels ever made would
    /// stay in the database and in memory.
    pub fn forget_groups(&self, groups: &[GroupId]) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        {
            let mut delete = transaction.prepare_cached(
                "DELETE FROM alert_groups WHERE receiver = ?1 AND group_key = ?2",
            )?;
            for (receiver, group_key) in groups {
                delete.execute(params![receiver, group_key])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// Every silence that can be read; one that cannot is skipped, logged and counted each
    /// time the silences are read (at start and when they change).
    pub fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        let connection = self.connection();
        let mut statement =
            connection.prepare("SELECT id, silence FROM alert_silences ORDER BY id")?;
        let mut rows = statement.query([])?;
        let mut silences = Vec::new();
        while let Some(row) = rows.next()? {
            let key = format!("id {}", lenient_int(row, 0));
            match lenient_text(row, 1).map(|text| serde_json::from_str::<Silence>(&text)) {
                Some(Ok(silence)) => silences.push(silence),
                Some(Err(error)) => self.skipped("alert_silences", &key, &error),
                None => self.skipped("alert_silences", &key, &"the silence is not text"),
            }
        }
        Ok(silences)
    }

    /// Stores a new silence under the next id and returns it.
    pub fn add_silence(
        &self,
        make: impl FnOnce(u64) -> Result<Silence, (String, String)>,
    ) -> Result<Result<Silence, (String, String)>, StoreError> {
        let connection = self.connection();
        let highest: Option<i64> =
            connection.query_row("SELECT MAX(id) FROM alert_silences", [], |row| row.get(0))?;
        let id = highest.and_then(|id| u64::try_from(id).ok()).unwrap_or(0) + 1;
        let silence = match make(id) {
            Ok(silence) => silence,
            Err(problem) => return Ok(Err(problem)),
        };
        connection.execute(
            "INSERT INTO alert_silences (id, silence, ends_at) VALUES (?1, ?2, ?3)",
            params![
                i64::try_from(id).unwrap_or(i64::MAX),
                encode(&silence, "a silence")?,
                millis(silence.ends_at)
            ],
        )?;
        Ok(Ok(silence))
    }

    /// Ends a silence now; `None` when there is no such silence.
    pub fn expire_silence(
        &self,
        id: u64,
        now: OffsetDateTime,
    ) -> Result<Option<Silence>, StoreError> {
        let connection = self.connection();
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        let text: Option<String> = connection
            .query_row(
                "SELECT silence FROM alert_silences WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .optional()?;
        let Some(text) = text else {
            return Ok(None);
        };
        let mut silence: Silence =
            serde_json::from_str(&text).map_err(|source| StoreError::Decode {
                key: "alert_silences",
                source,
            })?;
        if silence.ends_at > now {
            silence.ends_at = now;
            silence.starts_at = silence.starts_at.min(now);
        }
        connection.execute(
            "UPDATE alert_silences SET silence = ?2, ends_at = ?3 WHERE id = ?1",
            params![id, encode(&silence, "a silence")?, millis(silence.ends_at)],
        )?;
        Ok(Some(silence))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn forgotten_groups_are_gone_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let connection = open_connection(dir.path()).unwrap();
        connection
            .execute_batch(
                "INSERT INTO alert_groups (receiver, group_key, last_sent_at) VALUES
                     ('ops', 'keep', 1000), ('ops', 'quiet', 1000), ('mail', 'quiet', 1000);",
            )
            .unwrap();
        drop(connection);
        let outbox = Outbox::open(dir.path()).unwrap();
        let quiet = ("ops".to_string(), "quiet".to_string());
        outbox.forget_groups(std::slice::from_ref(&quiet)).unwrap();
        let mut left: Vec<(String, String)> =
            outbox.load_state().unwrap().last_sent.into_keys().collect();
        left.sort();
        assert_eq!(
            left,
            [
                ("mail".to_string(), "quiet".to_string()),
                ("ops".to_string(), "keep".to_string())
            ]
        );
    }

    #[test]
    fn rows_the_collector_cannot_use_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let connection = open_connection(dir.path()).unwrap();
        connection
            .execute_batch(
                "INSERT INTO alert_notified (receiver, alert_key, group_key, item) VALUES
                     ('ops', 'k1', 'g', 'not json'),
                     ('ops', 'k2', 'g', x'00ff'),
                     (x'00', 'k3', 'g', '{}');
                 INSERT INTO alert_groups (receiver, group_key, last_sent_at) VALUES
                     ('ops', 'g1', 'yesterday'),
                     ('ops', 'g2', 9223372036854775807),
                     ('ops', 'g3', -9223372036854775808);
                 INSERT INTO alert_silences (id, silence, ends_at) VALUES
                     (1, '{\"id\": 1}', 0),
                     (2, x'00', 0),
                     (3, 42, 0);
                 INSERT INTO alert_outbox (idempotency_key, receiver, group_key, notification,
                     status, attempts, created_at, updated_at, next_attempt_at, delivered_at)
                 VALUES
                     ('a', 'ops', 'g', 'not json', 'pending', 0, 0, 0, 0, NULL),
                     ('b', 'ops', 'g', '{}', 'pending', -5, 'soon', x'00',
                         9223372036854775807, 'never');",
            )
            .unwrap();
        drop(connection);
        let registry = prometheus::Registry::new();
        let counter =
            IntCounterVec::new(prometheus::Opts::new("unreadable", "rows"), &["table"]).unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        let outbox = Outbox::open(dir.path())
            .unwrap()
            .counting_unreadable(counter.clone());
        let state = outbox.load_state().unwrap();
        assert!(state.notified.is_empty());
        // Times that cannot be the collector's are read as the nearest it can write.
        let mut sent: Vec<(String, OffsetDateTime)> = state
            .last_sent
            .into_iter()
            .map(|((_, group), at)| (group, at))
            .collect();
        sent.sort();
        assert_eq!(
            sent,
            [
                ("g2".to_string(), from_millis(STORED_MILLIS_MAX)),
                ("g3".to_string(), OffsetDateTime::UNIX_EPOCH),
            ]
        );
        assert!(outbox.silences().unwrap().is_empty());
        // Pending rows that cannot be read are given up, not retried forever.
        assert_eq!(outbox.next_pending("ops").unwrap(), None);
        assert_eq!(
            outbox
                .list(&Filter {
                    limit: 10,
                    ..Filter::default()
                })
                .unwrap()
                .len(),
            0
        );
        assert_eq!(outbox.pending_count().unwrap(), 0);
        let count = |table: &str| counter.with_label_values(&[table]).get();
        assert_eq!(
            [
                count("alert_notified"),
                count("alert_groups"),
                count("alert_silences"),
                count("alert_outbox")
            ],
            [3, 1, 3, 2]
        );
    }
}
