//! The downsampling tiers of the per-terminal series (pure: no IO).
//!
//! A tier cuts time into slots of a fixed length; one database row holds one terminal's slots
//! of one period of the tier (6 hours, a UTC day) as a blob of [`SLOT_BYTES`] per slot. Every report goes into both tiers as it
//! is written (no roll-up job that could fall behind); the fine tier is pruned after
//! [`FINE_RETENTION_DAYS`], the coarse one after `history.retention_days`.
//!
//! | tier | slot | a row | row (blob) | kept | draws |
//! | --- | --- | --- | --- | --- | --- |
//! | fine | 5 min | 6 h, 72 slots | 432 B | 2 days | the last 24 h |
//! | coarse | 1 h | a day, 24 slots | 144 B | `retention_days` | 7 d, 30 d, 90 d |
//!
//! Rows stay under SQLite's largest payload kept in a page of a `WITHOUT ROWID` table (about
//! 1 000 bytes with 4 KiB pages): a day of 5-minute slots (1 728 B) would spill into an
//! overflow page of its own, 4 KiB for 700 bytes.
//!
//! Five minutes is the agents' default heartbeat interval: a finer slot would hold at most one
//! report and show a gap between any two. One hour keeps 90 days of 100 000 terminals within
//! the disk budget (BENCHMARKS.md, "History on disk").
//!
//! A slot is 6 bytes: reports (u8), reports with a latency (u8), their mean latency in tenths
//! of a millisecond (u16 LE), reports with a loss measurement (u8), their mean loss in half
//! percents (u8). Counts saturate at 255 (the mean then moves as an average over the last 255);
//! a latency saturates at 6 553.5 ms. A slot with no report is all zeros: a gap.

/// Seconds in a UTC day.
pub const DAY_SECONDS: i64 = 86_400;

/// Bytes per slot.
pub const SLOT_BYTES: usize = 6;

/// Days the fine tier is kept.
pub const FINE_RETENTION_DAYS: i64 = 2;

/// A tier: its id in the database, the length of its slots and how many a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub id: u8,
    pub slot_seconds: i64,
    pub slots_per_row: usize,
}

pub const FINE: Tier = Tier {
    id: 0,
    slot_seconds: 300,
    slots_per_row: 72,
};

pub const COARSE: Tier = Tier {
    id: 1,
    slot_seconds: 3600,
    slots_per_row: 24,
};

pub const TIERS: [Tier; 2] = [FINE, COARSE];

impl Tier {
    /// Seconds one row covers.
    pub fn row_seconds(self) -> i64 {
        self.slot_seconds * self.slots_per_row as i64
    }

    /// Bytes of one row.
    pub fn row_bytes(self) -> usize {
        self.slots_per_row * SLOT_BYTES
    }

    /// The row's period (rows since 1970-01-01, UTC) and the slot within it of `at` (Unix
    /// seconds).
    pub fn locate(self, at: i64) -> (i64, usize) {
        let period = at.div_euclid(self.row_seconds());
        let slot = at.rem_euclid(self.row_seconds()) / self.slot_seconds;
        (period, slot as usize)
    }

    /// The start (Unix seconds) of the slot holding `at`.
    pub fn slot_start(self, at: i64) -> i64 {
        at.div_euclid(self.slot_seconds)
            .saturating_mul(self.slot_seconds)
    }
}

/// One slot: what the reports in its time said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    pub reports: u8,
    pub latency_count: u8,
    /// Mean latency, tenths of a millisecond.
    pub latency_tenths: u16,
    pub loss_count: u8,
    /// Mean loss, half percents (0 to 200).
    pub loss_half_percents: u8,
}

/// The running mean of `count` values at `mean` with `value` added, rounded and within `max`.
fn mean_with(mean: f64, count: u8, value: f64, max: f64) -> f64 {
    let count = f64::from(count);
    ((mean * count + value) / (count + 1.0))
        .round()
        .clamp(0.0, max)
}

impl Slot {
    /// Adds one report: its latency (ms) and loss (0 to 1), each when it measured one. Values
    /// that are not finite are left out; the others are clamped to what a slot holds.
    pub fn add(&mut self, latency_ms: Option<f64>, loss_ratio: Option<f64>) {
        self.reports = self.reports.saturating_add(1);
        if let Some(latency) = latency_ms.filter(|value| value.is_finite()) {
            let tenths = (latency * 10.0).clamp(0.0, f64::from(u16::MAX));
            let mean = mean_with(
                f64::from(self.latency_tenths),
                self.latency_count,
                tenths,
                f64::from(u16::MAX),
            );
            // Within 0..=u16::MAX: clamped above.
            self.latency_tenths = mean as u16;
            self.latency_count = self.latency_count.saturating_add(1);
        }
        if let Some(loss) = loss_ratio.filter(|value| value.is_finite()) {
            let half_percents = (loss * 200.0).clamp(0.0, 200.0);
            let mean = mean_with(
                f64::from(self.loss_half_percents),
                self.loss_count,
                half_percents,
                200.0,
            );
            self.loss_half_percents = mean as u8;
            self.loss_count = self.loss_count.saturating_add(1);
        }
    }

    /// The mean latency in milliseconds, if a report in the slot measured one.
    pub fn latency_ms(&self) -> Option<f64> {
        (self.latency_count > 0).then(|| f64::from(self.latency_tenths) / 10.0)
    }

    /// The mean loss in percent, if a report in the slot measured it.
    pub fn loss_percent(&self) -> Option<f64> {
        (self.loss_count > 0).then(|| f64::from(self.loss_half_percents) / 2.0)
    }

    /// Adds the reports of another slot (a coarser point of a chart), means weighted by counts.
    pub fn merge(&mut self, other: &Slot) {
        let weighted = |mean: f64, count: u8, other_mean: f64, other_count: u8| {
            let total = f64::from(count) + f64::from(other_count);
            if total == 0.0 {
                0.0
            } else {
                (mean * f64::from(count) + other_mean * f64::from(other_count)) / total
            }
        };
        self.latency_tenths = weighted(
            f64::from(self.latency_tenths),
            self.latency_count,
            f64::from(other.latency_tenths),
            other.latency_count,
        )
        .round()
        .clamp(0.0, f64::from(u16::MAX)) as u16;
        self.loss_half_percents = weighted(
            f64::from(self.loss_half_percents),
            self.loss_count,
            f64::from(other.loss_half_percents),
            other.loss_count,
        )
        .round()
        .clamp(0.0, 200.0) as u8;
        self.reports = self.reports.saturating_add(other.reports);
        self.latency_count = self.latency_count.saturating_add(other.latency_count);
        self.loss_count = self.loss_count.saturating_add(other.loss_count);
    }

    fn encode(&self, out: &mut [u8]) {
        out[0] = self.reports;
        out[1] = self.latency_count;
        out[2..4].copy_from_slice(&self.latency_tenths.to_le_bytes());
        out[4] = self.loss_count;
        out[5] = self.loss_half_percents;
    }

    fn decode(bytes: &[u8]) -> Slot {
        Slot {
            reports: bytes[0],
            latency_count: bytes[1],
            latency_tenths: u16::from_le_bytes([bytes[2], bytes[3]]),
            loss_count: bytes[4],
            // A damaged byte above 100 % reads as 100 %.
            loss_half_percents: bytes[5].min(200),
        }
    }
}

/// One row's slots of one terminal in one tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    slots: Vec<Slot>,
}

impl Row {
    pub fn empty(tier: Tier) -> Row {
        Row {
            slots: vec![Slot::default(); tier.slots_per_row],
        }
    }

    /// A stored blob; one of the wrong length (damage) is read as far as it goes, the rest
    /// empty, and the caller counts it.
    pub fn decode(tier: Tier, bytes: &[u8]) -> (Row, bool) {
        let mut row = Row::empty(tier);
        for (slot, chunk) in row.slots.iter_mut().zip(bytes.chunks_exact(SLOT_BYTES)) {
            *slot = Slot::decode(chunk);
        }
        (row, bytes.len() == tier.row_bytes())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.slots.len() * SLOT_BYTES];
        for (slot, chunk) in self.slots.iter().zip(bytes.chunks_exact_mut(SLOT_BYTES)) {
            slot.encode(chunk);
        }
        bytes
    }

    pub fn slot(&self, index: usize) -> Slot {
        self.slots.get(index).copied().unwrap_or_default()
    }

    pub fn slot_mut(&mut self, index: usize) -> Option<&mut Slot> {
        self.slots.get_mut(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: &[(Option<f64>, Option<f64>)], latency: Option<f64>, loss: Option<f64>) {
        let mut slot = Slot::default();
        for (latency, loss) in values {
            slot.add(*latency, *loss);
        }
        assert_eq!(slot.reports as usize, values.len().min(255), "{values:?}");
        assert_eq!(slot.latency_ms(), latency, "{values:?}");
        assert_eq!(slot.loss_percent(), loss, "{values:?}");
        let mut row = Row::empty(FINE);
        *row.slot_mut(7).unwrap() = slot;
        let (decoded, whole) = Row::decode(FINE, &row.encode());
        assert!(whole);
        assert_eq!(decoded.slot(7), slot);
    }

    #[test]
    fn slots_keep_means_and_clamp_what_they_cannot_hold() {
        check(&[], None, None);
        // A heartbeat: reported, nothing measured.
        check(&[(None, None)], None, None);
        check(
            &[(Some(20.0), Some(0.0)), (Some(40.0), Some(0.5))],
            Some(30.0),
            Some(25.0),
        );
        check(&[(Some(0.04), None)], Some(0.0), None);
        check(&[(Some(12.34), None)], Some(12.3), None);
        // Extremes: clamped, never wrapped; not finite: left out.
        check(&[(Some(1e300), Some(7.0))], Some(6553.5), Some(100.0));
        check(&[(Some(-5.0), Some(-1.0))], Some(0.0), Some(0.0));
        check(&[(Some(f64::NAN), Some(f64::INFINITY))], None, None);
        // Counts saturate; the mean stays within its values.
        let many: Vec<_> = (0..1000).map(|_| (Some(50.0), Some(0.1))).collect();
        check(&many, Some(50.0), Some(10.0));
    }

    #[test]
    fn merged_slots_weigh_their_counts() {
        let mut a = Slot::default();
        a.add(Some(10.0), None);
        a.add(Some(10.0), None);
        let mut b = Slot::default();
        b.add(Some(40.0), Some(1.0));
        b.add(None, None);
        a.merge(&b);
        assert_eq!(a.reports, 4);
        assert_eq!(a.latency_ms(), Some(20.0));
        assert_eq!(a.loss_percent(), Some(100.0));
        let mut empty = Slot::default();
        empty.merge(&Slot::default());
        assert_eq!(empty, Slot::default());
    }

    #[test]
    fn times_land_in_their_day_and_slot() {
        assert_eq!(FINE.locate(0), (0, 0));
        assert_eq!(FINE.locate(299), (0, 0));
        assert_eq!(FINE.locate(300), (0, 1));
        assert_eq!(FINE.locate(DAY_SECONDS - 1), (3, 71));
        assert_eq!(COARSE.locate(DAY_SECONDS + 3600), (1, 1));
        assert_eq!(COARSE.locate(-1), (-1, 23));
        assert_eq!(COARSE.slot_start(7199), 3600);
        assert_eq!(FINE.row_bytes(), 432);
        assert_eq!(COARSE.row_bytes(), 144);
    }

    #[test]
    fn a_damaged_row_is_read_as_far_as_it_goes() {
        let mut bytes = vec![0; 13];
        bytes[0] = 3;
        bytes[6] = 1;
        bytes[11] = 250;
        let (row, whole) = Row::decode(COARSE, &bytes);
        assert!(!whole);
        assert_eq!(row.slot(0).reports, 3);
        assert_eq!(row.slot(1).reports, 1);
        assert_eq!(row.slot(1).loss_half_percents, 200);
        assert_eq!(row.slot(2), Slot::default());
        assert_eq!(row.slot(99), Slot::default());
    }
}
