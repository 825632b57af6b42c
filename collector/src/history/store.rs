//! The history's tables in the state database (migration 7 in `store/schema.rs`):
//!
//! - `history_terminals` — a small integer key per terminal id, so the other tables repeat
//!   4 bytes, not the id.
//! - `history_slots` — one row per (tier, period, terminal): the period's slots as a blob
//!   (`slots.rs`), keyed by period before terminal so that pruning is a range delete.
//! - `history_readiness` — one row per readiness change (terminal, time, readiness): the
//!   intervals availability is computed from, exactly.
//! - `history_fleet` — the fleet trend, one row per point.
//!
//! The writer (`mod.rs`) owns one connection; queries use another (WAL: readers never wait
//! for the writer).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use posmon_diagnosis::readiness::Readiness;

use super::slots::{Row, Slot, Tier, DAY_SECONDS};
use crate::store::{open_connection, StoreError};
use crate::web::trend::TrendPoint;

/// The setting holding until when the history writer last wrote (Unix seconds).
const ALIVE_KEY: &str = "history_alive_until";

/// A readiness as stored.
pub fn readiness_code(readiness: Readiness) -> i64 {
    match readiness {
        Readiness::CannotPay => 0,
        Readiness::AtRisk => 1,
        Readiness::CanPay => 2,
        Readiness::Unknown => 3,
    }
}

/// A stored readiness; an unknown code (damage) reads as unknown.
pub fn readiness_of_code(code: i64) -> Readiness {
    match code {
        0 => Readiness::CannotPay,
        1 => Readiness::AtRisk,
        2 => Readiness::CanPay,
        _ => Readiness::Unknown,
    }
}

/// What the writer holds of one terminal: its key and its last recorded readiness change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Known {
    pub key: i64,
    pub last: Option<(i64, Readiness)>,
}

pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let mut connection = open_connection(data_dir)?;
    crate::store::schema::migrate(&mut connection)?;
    Ok(connection)
}

/// Every terminal's key and last readiness change.
pub fn load_known(
    connection: &Connection,
) -> Result<HashMap<std::sync::Arc<str>, Known>, StoreError> {
    let mut known = HashMap::new();
    let mut statement = connection.prepare(
        "SELECT t.key, t.id,
                (SELECT at FROM history_readiness WHERE terminal = t.key ORDER BY at DESC LIMIT 1),
                (SELECT readiness FROM history_readiness WHERE terminal = t.key ORDER BY at DESC LIMIT 1)
         FROM history_terminals t",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let key: i64 = row.get(0)?;
        let Some(id) = crate::store::lenient_text(row, 1) else {
            continue;
        };
        let at: Option<i64> = row.get(2).ok().flatten();
        let code: Option<i64> = row.get(3).ok().flatten();
        let last = at.zip(code).map(|(at, code)| (at, readiness_of_code(code)));
        known.insert(std::sync::Arc::from(id), Known { key, last });
    }
    Ok(known)
}

pub fn alive_until(connection: &Connection) -> Option<i64> {
    connection
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            [ALIVE_KEY],
            |row| row.get::<_, String>(0),
        )
        .optional()
        .ok()
        .flatten()
        .and_then(|text| text.parse().ok())
}

pub fn set_alive_until(transaction: &Transaction<'_>, at: i64) -> Result<(), StoreError> {
    transaction.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![ALIVE_KEY, at.to_string()],
    )?;
    Ok(())
}

/// The key of `id`, added if new.
pub fn insert_terminal(transaction: &Transaction<'_>, id: &str) -> Result<i64, StoreError> {
    transaction
        .prepare_cached("INSERT INTO history_terminals (id) VALUES (?1)")?
        .execute([id])?;
    Ok(transaction.last_insert_rowid())
}

pub fn insert_readiness(
    transaction: &Transaction<'_>,
    key: i64,
    at: i64,
    readiness: Readiness,
) -> Result<(), StoreError> {
    transaction
        .prepare_cached(
            "INSERT OR REPLACE INTO history_readiness (terminal, at, readiness) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![key, at, readiness_code(readiness)])?;
    Ok(())
}

/// Adds reports (slot index, latency ms, loss ratio) to one terminal's row of a tier.
/// Returns whether the stored row was damaged (and read as far as it went).
pub fn add_to_row(
    transaction: &Transaction<'_>,
    tier: Tier,
    period: i64,
    key: i64,
    adds: &[(usize, Option<f64>, Option<f64>)],
) -> Result<bool, StoreError> {
    let stored: Option<Vec<u8>> = transaction
        .prepare_cached(
            "SELECT slots FROM history_slots WHERE tier = ?1 AND period = ?2 AND terminal = ?3",
        )?
        .query_row(params![tier.id, period, key], |row| row.get(0))
        .optional()?;
    let (mut row, whole) = match &stored {
        Some(bytes) => Row::decode(tier, bytes),
        None => (Row::empty(tier), true),
    };
    for &(index, latency, loss) in adds {
        if let Some(slot) = row.slot_mut(index) {
            slot.add(latency, loss);
        }
    }
    transaction
        .prepare_cached(
            "INSERT OR REPLACE INTO history_slots (tier, period, terminal, slots) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![tier.id, period, key, row.encode()])?;
    Ok(!whole)
}

pub fn insert_trend(transaction: &Transaction<'_>, point: &TrendPoint) -> Result<(), StoreError> {
    transaction
        .prepare_cached(
            "INSERT OR REPLACE INTO history_fleet (at, cannot_pay, at_risk, can_pay, unknown,
                 environment, outdated, availability, upstream, critical_findings)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            point.at,
            point.cannot_pay,
            point.at_risk,
            point.can_pay,
            point.unknown,
            point.environment,
            point.outdated,
            point.availability,
            point.upstream,
            point.critical_findings
        ])?;
    Ok(())
}

/// Deletes what is older than its tier's retention at `now`: fine slots after
/// `fine_days`, coarse slots, readiness changes and trend points after `retention_days` —
/// keeping each terminal's last readiness change before the cutoff, which gives its state
/// at the cutoff. Returns the rows deleted.
pub fn prune(
    connection: &Connection,
    now: i64,
    fine_days: i64,
    retention_days: i64,
) -> Result<u64, StoreError> {
    // Whole days: today and the days before it.
    let today = now.div_euclid(DAY_SECONDS).saturating_mul(DAY_SECONDS);
    let cutoff = now.saturating_sub(retention_days.saturating_mul(DAY_SECONDS));
    let mut deleted = 0;
    for (tier, days) in [
        (super::slots::FINE, fine_days),
        (super::slots::COARSE, retention_days),
    ] {
        let oldest = today.saturating_sub(days.saturating_mul(DAY_SECONDS));
        deleted += connection.execute(
            "DELETE FROM history_slots WHERE tier = ?1 AND period < ?2",
            params![tier.id, oldest.div_euclid(tier.row_seconds())],
        )?;
    }
    deleted += connection.execute(
        "DELETE FROM history_readiness WHERE at < ?1 AND EXISTS (
             SELECT 1 FROM history_readiness later
             WHERE later.terminal = history_readiness.terminal
               AND later.at > history_readiness.at AND later.at <= ?1)",
        [cutoff],
    )?;
    deleted += connection.execute("DELETE FROM history_fleet WHERE at < ?1", [cutoff])?;
    Ok(deleted as u64)
}

/// The newest `limit` trend points, oldest first.
pub fn recent_trend(connection: &Connection, limit: usize) -> Result<Vec<TrendPoint>, StoreError> {
    let mut statement = connection.prepare(
        "SELECT at, cannot_pay, at_risk, can_pay, unknown, environment, outdated, availability,
                upstream, critical_findings
         FROM history_fleet ORDER BY at DESC LIMIT ?1",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut points = Vec::new();
    let mut rows = statement.query([limit])?;
    let count = |row: &rusqlite::Row<'_>, index| {
        u32::try_from(crate::store::lenient_int(row, index)).unwrap_or(0)
    };
    while let Some(row) = rows.next()? {
        points.push(TrendPoint {
            at: crate::store::lenient_int(row, 0),
            cannot_pay: count(row, 1),
            at_risk: count(row, 2),
            can_pay: count(row, 3),
            unknown: count(row, 4),
            environment: count(row, 5),
            outdated: count(row, 6),
            availability: count(row, 7),
            upstream: count(row, 8),
            critical_findings: count(row, 9),
        });
    }
    points.reverse();
    Ok(points)
}

/// The fleet trend's means by readiness per bucket of `step` seconds in `[from, to)`:
/// (bucket start, [cannot_pay, at_risk, can_pay, unknown]).
pub fn trend_buckets(
    connection: &Connection,
    from: i64,
    to: i64,
    step: i64,
) -> Result<Vec<(i64, [f64; 4])>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT (at - ?1) / ?3, AVG(cannot_pay), AVG(at_risk), AVG(can_pay), AVG(unknown)
         FROM history_fleet WHERE at >= ?1 AND at < ?2 GROUP BY 1 ORDER BY 1",
    )?;
    let mut rows = statement.query(params![from, to, step.max(1)])?;
    let mut buckets = Vec::new();
    while let Some(row) = rows.next()? {
        let index: i64 = row.get(0)?;
        let mean = |column| {
            row.get::<_, Option<f64>>(column)
                .ok()
                .flatten()
                .unwrap_or(0.0)
        };
        buckets.push((
            from.saturating_add(index.saturating_mul(step)),
            [mean(1), mean(2), mean(3), mean(4)],
        ));
    }
    Ok(buckets)
}

pub fn terminal_key(connection: &Connection, id: &str) -> Result<Option<i64>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT key FROM history_terminals WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?)
}

/// One terminal's row of `tier` for `period`, empty when none is stored.
pub fn row(connection: &Connection, tier: Tier, period: i64, key: i64) -> Result<Row, StoreError> {
    let stored: Option<Vec<u8>> = connection
        .prepare_cached(
            "SELECT slots FROM history_slots WHERE tier = ?1 AND period = ?2 AND terminal = ?3",
        )?
        .query_row(params![tier.id, period, key], |row| row.get(0))
        .optional()?;
    Ok(stored.map_or_else(|| Row::empty(tier), |bytes| Row::decode(tier, &bytes).0))
}

/// The slots of `tier` from `from` to `to` (slot starts), one terminal: (slot start, slot).
pub fn slots_between(
    connection: &Connection,
    tier: Tier,
    key: i64,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Slot)>, StoreError> {
    let mut slots = Vec::new();
    let first = from.div_euclid(tier.row_seconds());
    let last = to.saturating_sub(1).div_euclid(tier.row_seconds());
    let mut period = first;
    while period <= last {
        let stored = row(connection, tier, period, key)?;
        let period_start = period.saturating_mul(tier.row_seconds());
        for index in 0..tier.slots_per_row {
            let start = period_start.saturating_add(index as i64 * tier.slot_seconds);
            if start >= from && start < to {
                slots.push((start, stored.slot(index)));
            }
        }
        period += 1;
    }
    Ok(slots)
}

/// Readiness changes of one terminal (`Some(key)`) or of all, for a period starting at
/// `from` and ending before `to`: each terminal's last change at or before `from`, then those
/// after it. By terminal key, in time order.
pub fn readiness_changes(
    connection: &Connection,
    key: Option<i64>,
    from: i64,
    to: i64,
) -> Result<HashMap<i64, Vec<(i64, Readiness)>>, StoreError> {
    let mut changes: HashMap<i64, Vec<(i64, Readiness)>> = HashMap::new();
    let mut take = |terminal: i64, at: i64, code: i64| {
        let list = changes.entry(terminal).or_default();
        // Only the last change at or before `from` counts among the earlier ones.
        if at <= from {
            list.clear();
        }
        list.push((at, readiness_of_code(code)));
    };
    match key {
        Some(key) => {
            let mut statement = connection.prepare_cached(
                "SELECT terminal, at, readiness FROM history_readiness
                 WHERE terminal = ?1 AND at < ?2 ORDER BY at",
            )?;
            let mut rows = statement.query(params![key, to])?;
            while let Some(row) = rows.next()? {
                take(row.get(0)?, row.get(1)?, row.get(2)?);
            }
        }
        None => {
            let mut statement = connection.prepare_cached(
                "SELECT terminal, at, readiness FROM history_readiness
                 WHERE at < ?1 ORDER BY terminal, at",
            )?;
            let mut rows = statement.query([to])?;
            while let Some(row) = rows.next()? {
                take(row.get(0)?, row.get(1)?, row.get(2)?);
            }
        }
    }
    Ok(changes)
}

/// Every terminal's id by key.
pub fn terminal_ids(connection: &Connection) -> Result<HashMap<i64, String>, StoreError> {
    let mut ids = HashMap::new();
    let mut statement = connection.prepare("SELECT key, id FROM history_terminals")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        if let Some(id) = crate::store::lenient_text(row, 1) {
            ids.insert(row.get(0)?, id);
        }
    }
    Ok(ids)
}
