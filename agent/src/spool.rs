//! The on-disk spool: every report is written here before it is sent, and removed only after the
//! collector acknowledges it, so reports survive collector outages, agent crashes and power cuts.
//!
//! Layout: `<dir>/<first sequence, 20 digits>.seg` segment files and a `state` file. A segment is
//! a run of records `[payload length u32][crc32 u32][sequence u64][observed_at unix s i64]
//! [carried u64][payload]` (little-endian), where `carried` is the dropped count the report
//! carries; the CRC covers everything after it. `state` holds the
//! highest acknowledged sequence, the highest issued one and the count of dropped reports not yet
//! reported, and is replaced atomically.
//!
//! Durability policy: [`Spool::append`] fsyncs the segment (and the directory when it creates a
//! segment) before it returns, so a report is on disk before it can leave the agent. The state
//! file is written with write-temporary, fsync, rename, fsync-directory. A power cut can leave a
//! torn last record: [`Spool::open`] detects it by length and CRC and truncates it; older records
//! are never touched. The spool issues sequence numbers itself: a record that was torn was never
//! sent, so its number is issued again and no number is ever skipped or sent twice.
//!
//! Instance: `<dir>/instance` holds a random id created with the spool, sent in every report
//! (`agent_instance`) beside the sequence. A wiped directory gives a new id, so the collector
//! knows that sequences start again at 1 rather than taking the new reports for repeats. The
//! spool never issues a sequence above [`SEQUENCE_MAX`]: a state file claiming one (corrupt or
//! forged) starts the spool anew under a new instance.
//!
//! Bounds: at most `max_bytes` on disk and records at most `max_age` old. When a bound is hit
//! the oldest segment goes first; its unacknowledged reports are counted as dropped, and the
//! count travels in the next report (`dropped_reports`). A dropped report's own carried count
//! is counted again, so no drop goes unreported however full the spool stays.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use posmon_protocol::limits::SEQUENCE_MAX;

const HEADER_BYTES: usize = 32;
/// A record larger than this is corrupt (reports are far smaller).
const RECORD_MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool state file {path} is corrupt: {problem}")]
    CorruptState { path: PathBuf, problem: String },
    #[error("a report of {size} bytes is larger than the spool allows ({limit} bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("the spool has issued every sequence number up to {SEQUENCE_MAX}")]
    SequencesExhausted,
    #[error("cannot create a random agent instance id: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The spool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    pub max_bytes: u64,
    pub max_age_seconds: i64,
}

impl SpoolLimits {
    /// Segments are a sixteenth of the bound (at least 4 KiB, at most 1 MiB), so dropping the
    /// oldest segment frees a little, not everything.
    fn segment_bytes(self) -> u64 {
        (self.max_bytes / 16).clamp(4096, 1024 * 1024)
    }
}

/// One record's place in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    sequence: u64,
    observed_at: i64,
    /// The dropped count the report carries.
    carried: u64,
    offset: u64,
    length: u32,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    entries: Vec<Entry>,
}

impl Segment {
    fn last_sequence(&self) -> u64 {
        self.entries.last().map_or(0, |entry| entry.sequence)
    }
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting for delivery.
    pub pending: usize,
    /// Bytes cut off torn or corrupt tails.
    pub truncated_bytes: u64,
}

/// A spooled report waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub sequence: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    segments: VecDeque<Segment>,
    acknowledged: u64,
    issued: u64,
    dropped_unreported: u64,
    instance: String,
}

/// The file holding the agent instance id, in the spool directory.
const INSTANCE_FILE: &str = "instance";

/// A new random instance id: 128 bits as a UUID (version 4) string.
fn new_instance() -> Result<String, SpoolError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| SpoolError::Random(error.to_string()))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// The instance id stored in `dir`, or `None` when there is none or it is not a valid one.
fn read_instance(dir: &Path) -> Result<Option<String>, SpoolError> {
    let path = dir.join(INSTANCE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            let valid = posmon_protocol::validate::check_agent_instance(text, "instance").is_ok();
            if !valid {
                tracing::warn!(path = %path.display(), "The agent instance file is not valid; creating a new instance.");
            }
            Ok(valid.then(|| text.to_string()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SpoolError::Io { path, source }),
    }
}

/// Writes the instance id atomically: temporary file, fsync, rename, fsync the directory.
fn write_instance(dir: &Path, instance: &str) -> Result<(), SpoolError> {
    let path = dir.join(INSTANCE_FILE);
    let temporary = dir.join("instance.tmp");
    let mut file = File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(format!("{instance}\n").as_bytes())
        .map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    sync_dir(dir)
}

fn crc(sequence: u64, observed_at: i64, carried: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(&observed_at.to_le_bytes());
    hasher.update(&carried.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, truncating any torn tail; `now` (unix seconds)
    /// applies the age bound.
    pub fn open(
        dir: &Path,
        limits: SpoolLimits,
        now: i64,
    ) -> Result<(Spool, Recovery), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (acknowledged, issued, dropped_unreported) = read_state(&dir.join("state"))?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let first = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(".seg"))
                .and_then(|number| number.parse::<u64>().ok());
            if let Some(first) = first {
                names.push((first, path));
            }
        }
        names.sort();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        for (_, path) in names {
            let (segment, truncated) = scan(&path)?;
            recovery.truncated_bytes += truncated;
            if segment.entries.is_empty() || segment.last_sequence() <= acknowledged {
                std::fs::remove_file(&path).map_err(io(&path))?;
            } else {
                segments.push_back(segment);
            }
        }
        let highest_spooled = segments.back().map_or(0, Segment::last_sequence);
        let instance = match read_instance(dir)? {
            Some(instance) => instance,
            None => {
                let instance = new_instance()?;
                write_instance(dir, &instance)?;
                instance
            }
        };
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            limits,
            segments,
            acknowledged,
            issued: issued.max(highest_spooled).max(acknowledged),
            dropped_unreported,
            instance,
        };
        if spool.issued >= SEQUENCE_MAX {
            spool.start_anew()?;
        }
        spool.enforce_bounds(now)?;
        recovery.pending = spool.pending_count();
        Ok((spool, recovery))
    }

    /// The sequence number the next appended report gets.
    pub fn next_sequence(&self) -> u64 {
        self.issued.saturating_add(1)
    }

    /// The agent instance id the reports of this spool carry.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Forgets every spooled report (counted as dropped) and starts the sequences at 1 under a
    /// new instance id: the way out of a state that claims the last sequence number, and of a
    /// collector that holds a higher mark for this instance than it ever issued (another device
    /// with this terminal's token and instance, or a forged report): the collector starts the
    /// terminal's sequences anew for a new instance.
    pub fn start_anew(&mut self) -> Result<(), SpoolError> {
        let dropped: u64 = self
            .segments
            .iter()
            .flat_map(|segment| &segment.entries)
            .filter(|entry| entry.sequence > self.acknowledged)
            .map(|entry| entry.carried.saturating_add(1))
            .fold(0, u64::saturating_add);
        for segment in self.segments.drain(..) {
            std::fs::remove_file(&segment.path).map_err(io(&segment.path))?;
        }
        let old = std::mem::replace(&mut self.instance, new_instance()?);
        tracing::warn!(old_instance = %old, new_instance = %self.instance, issued = self.issued, dropped, "Starting the sequences anew at 1 under a new instance; the unacknowledged reports are dropped and counted.");
        self.acknowledged = 0;
        self.issued = 0;
        self.dropped_unreported = self.dropped_unreported.saturating_add(dropped);
        write_instance(&self.dir, &self.instance)?;
        self.write_state()
    }

    pub fn acknowledged(&self) -> u64 {
        self.acknowledged
    }

    /// Reports dropped and not yet reported; the caller puts the count in its next report and,
    /// once that report is spooled, calls [`Spool::forget_dropped`].
    pub fn dropped(&self) -> u64 {
        self.dropped_unreported
    }

    /// `count` dropped reports are now reported (drops since then stay counted).
    pub fn forget_dropped(&mut self, count: u64) -> Result<(), SpoolError> {
        if count == 0 {
            return Ok(());
        }
        self.dropped_unreported = self.dropped_unreported.saturating_sub(count);
        self.write_state()
    }

    pub fn pending_count(&self) -> usize {
        self.segments
            .iter()
            .flat_map(|segment| &segment.entries)
            .filter(|entry| entry.sequence > self.acknowledged)
            .count()
    }

    /// Appends the report numbered [`Spool::next_sequence`], durably, then applies the bounds
    /// (`now` is unix seconds, for the age bound). `carried` is the dropped count the report
    /// carries: counted again should the report itself be dropped.
    pub fn append(
        &mut self,
        observed_at: i64,
        payload: &[u8],
        carried: u64,
        now: i64,
    ) -> Result<u64, SpoolError> {
        let size = HEADER_BYTES + payload.len();
        let limit = usize::try_from(self.limits.max_bytes)
            .unwrap_or(usize::MAX)
            .min(RECORD_MAX_BYTES);
        if size > limit {
            return Err(SpoolError::TooLarge { size, limit });
        }
        let sequence = self.next_sequence();
        if sequence > SEQUENCE_MAX {
            return Err(SpoolError::SequencesExhausted);
        }
        let needs_segment = self
            .segments
            .back()
            .is_none_or(|segment| segment.bytes + size as u64 > self.limits.segment_bytes());
        if needs_segment {
            let path = self.dir.join(format!("{sequence:020}.seg"));
            File::create(&path).map_err(io(&path))?;
            sync_dir(&self.dir)?;
            self.segments.push_back(Segment {
                path,
                bytes: 0,
                entries: Vec::new(),
            });
        }
        let segment = self
            .segments
            .back_mut()
            .unwrap_or_else(|| unreachable!("a segment was just ensured"));
        let mut record = Vec::with_capacity(size);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc(sequence, observed_at, carried, payload).to_le_bytes());
        record.extend_from_slice(&sequence.to_le_bytes());
        record.extend_from_slice(&observed_at.to_le_bytes());
        record.extend_from_slice(&carried.to_le_bytes());
        record.extend_from_slice(payload);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&segment.path)
            .map_err(io(&segment.path))?;
        file.write_all(&record).map_err(io(&segment.path))?;
        file.sync_data().map_err(io(&segment.path))?;
        segment.entries.push(Entry {
            sequence,
            observed_at,
            carried,
            offset: segment.bytes,
            length: payload.len() as u32,
        });
        segment.bytes += size as u64;
        self.issued = sequence;
        self.enforce_bounds(now)?;
        Ok(sequence)
    }

    /// The oldest unacknowledged reports, at most `max_records` and about `max_bytes`
    /// (at least one).
    pub fn pending(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Pending>, SpoolError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for segment in &self.segments {
            let mut file: Option<File> = None;
            for entry in segment
                .entries
                .iter()
                .filter(|entry| entry.sequence > self.acknowledged)
            {
                if out.len() >= max_records
                    || (!out.is_empty() && bytes + entry.length as usize > max_bytes)
                {
                    return Ok(out);
                }
                let handle = match &mut file {
                    Some(handle) => handle,
                    None => file.insert(File::open(&segment.path).map_err(io(&segment.path))?),
                };
                let mut payload = vec![0; entry.length as usize];
                handle
                    .seek(SeekFrom::Start(entry.offset + HEADER_BYTES as u64))
                    .and_then(|_| handle.read_exact(&mut payload))
                    .map_err(io(&segment.path))?;
                bytes += payload.len();
                out.push(Pending {
                    sequence: entry.sequence,
                    payload,
                });
            }
        }
        Ok(out)
    }

    /// Forgets every report up to `sequence`.
    pub fn acknowledge(&mut self, sequence: u64) -> Result<(), SpoolError> {
        let sequence = sequence.min(self.issued);
        if sequence <= self.acknowledged {
            return Ok(());
        }
        self.acknowledged = sequence;
        // The state goes first: a crash between the two leaves segments that open() removes.
        self.write_state()?;
        while self
            .segments
            .front()
            .is_some_and(|segment| segment.last_sequence() <= self.acknowledged)
        {
            if let Some(segment) = self.segments.pop_front() {
                std::fs::remove_file(&segment.path).map_err(io(&segment.path))?;
            }
        }
        Ok(())
    }

    /// Gives up on one report the collector refused as bad: it no longer blocks the queue and is
    /// counted as dropped. Only the oldest pending report can be set aside.
    pub fn set_aside(&mut self, sequence: u64) -> Result<(), SpoolError> {
        let oldest = self
            .segments
            .iter()
            .flat_map(|segment| &segment.entries)
            .find(|entry| entry.sequence > self.acknowledged)
            .copied();
        let Some(entry) = oldest.filter(|entry| entry.sequence == sequence) else {
            return Ok(());
        };
        self.dropped_unreported += 1 + entry.carried;
        self.acknowledge(sequence)?;
        // acknowledge() skips writing when nothing moved; the dropped count must persist.
        self.write_state()
    }

    /// Drops the oldest segments while the spool is over its byte bound or holds reports older
    /// than its age bound, counting the unacknowledged reports they held.
    fn enforce_bounds(&mut self, now: i64) -> Result<(), SpoolError> {
        let oldest_allowed = now.saturating_sub(self.limits.max_age_seconds);
        let mut dropped = 0u64;
        loop {
            let total: u64 = self.segments.iter().map(|segment| segment.bytes).sum();
            let Some(front) = self.segments.front() else {
                break;
            };
            let newest_in_front = front
                .entries
                .last()
                .map_or(i64::MIN, |entry| entry.observed_at);
            let over_size = total > self.limits.max_bytes && self.segments.len() > 1;
            let too_old = newest_in_front < oldest_allowed;
            if !(over_size || too_old) {
                break;
            }
            if let Some(segment) = self.segments.pop_front() {
                dropped += segment
                    .entries
                    .iter()
                    .filter(|entry| entry.sequence > self.acknowledged)
                    .map(|entry| 1 + entry.carried)
                    .sum::<u64>();
                self.acknowledged = self.acknowledged.max(segment.last_sequence());
                std::fs::remove_file(&segment.path).map_err(io(&segment.path))?;
            }
        }
        if dropped > 0 {
            self.dropped_unreported += dropped;
            tracing::warn!(
                dropped,
                "The spool is full or holds reports too old; dropped the oldest."
            );
            self.write_state()?;
        }
        Ok(())
    }

    fn write_state(&self) -> Result<(), SpoolError> {
        let path = self.dir.join("state");
        let temporary = self.dir.join("state.tmp");
        let text = format!(
            "acknowledged={}\nissued={}\ndropped={}\n",
            self.acknowledged, self.issued, self.dropped_unreported
        );
        let mut file = File::create(&temporary).map_err(io(&temporary))?;
        file.write_all(text.as_bytes()).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        std::fs::rename(&temporary, &path).map_err(io(&path))?;
        sync_dir(&self.dir)
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io(dir))
}

/// (acknowledged, issued, dropped) from the state file; zeros when it does not exist.
fn read_state(path: &Path) -> Result<(u64, u64, u64), SpoolError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0, 0)),
        Err(source) => {
            return Err(SpoolError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |problem: String| SpoolError::CorruptState {
        path: path.to_path_buf(),
        problem,
    };
    let mut values = [None; 3];
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| corrupt(format!("line {line:?}")))?;
        let slot = match key {
            "acknowledged" => 0,
            "issued" => 1,
            "dropped" => 2,
            other => return Err(corrupt(format!("unknown key {other:?}"))),
        };
        values[slot] = Some(
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| corrupt(format!("{key} is not a number")))?,
        );
    }
    match values {
        [Some(acknowledged), Some(issued), Some(dropped)] => Ok((acknowledged, issued, dropped)),
        _ => Err(corrupt("a key is missing".to_string())),
    }
}

/// Reads a segment's index, truncating the file after its last intact record.
fn scan(path: &Path) -> Result<(Segment, u64), SpoolError> {
    let data = std::fs::read(path).map_err(io(path))?;
    let mut entries = Vec::new();
    let mut offset = 0usize;
    let mut previous = 0u64;
    while offset + HEADER_BYTES <= data.len() {
        let field = |from: usize, to: usize| &data[offset + from..offset + to];
        let length = u32::from_le_bytes(field(0, 4).try_into().unwrap_or_default()) as usize;
        let checksum = u32::from_le_bytes(field(4, 8).try_into().unwrap_or_default());
        let sequence = u64::from_le_bytes(field(8, 16).try_into().unwrap_or_default());
        let observed_at = i64::from_le_bytes(field(16, 24).try_into().unwrap_or_default());
        let carried = u64::from_le_bytes(field(24, 32).try_into().unwrap_or_default());
        let end = offset + HEADER_BYTES + length;
        if length > RECORD_MAX_BYTES || end > data.len() || sequence <= previous {
            break;
        }
        if crc(
            sequence,
            observed_at,
            carried,
            &data[offset + HEADER_BYTES..end],
        ) != checksum
        {
            break;
        }
        entries.push(Entry {
            sequence,
            observed_at,
            carried,
            offset: offset as u64,
            length: length as u32,
        });
        previous = sequence;
        offset = end;
    }
    let truncated = (data.len() - offset) as u64;
    if truncated > 0 {
        tracing::warn!(path = %path.display(), bytes = truncated, "Truncated a torn or corrupt spool tail.");
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        file.set_len(offset as u64).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
    }
    Ok((
        Segment {
            path: path.to_path_buf(),
            bytes: offset as u64,
            entries,
        },
        truncated,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SpoolLimits = SpoolLimits {
        max_bytes: 64 * 1024,
        max_age_seconds: 3600,
    };

    fn open(dir: &Path) -> (Spool, Recovery) {
        Spool::open(dir, LIMITS, 1000).unwrap()
    }

    fn payload(sequence: u64) -> Vec<u8> {
        format!(
            "{{\"report\":{sequence},\"pad\":\"{}\"}}",
            "x".repeat((sequence % 300) as usize)
        )
        .into_bytes()
    }

    /// The dropped count, then marked as reported.
    fn take_dropped(spool: &mut Spool) -> u64 {
        let dropped = spool.dropped();
        spool.forget_dropped(dropped).unwrap();
        dropped
    }

    fn sequences(spool: &Spool) -> Vec<u64> {
        spool
            .pending(usize::MAX, usize::MAX)
            .unwrap()
            .iter()
            .map(|p| p.sequence)
            .collect()
    }

    #[test]
    fn reports_wait_until_acknowledged_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path());
        for expected in 1..=5 {
            assert_eq!(
                spool.append(1000, &payload(expected), 0, 1000).unwrap(),
                expected
            );
        }
        assert_eq!(sequences(&spool), [1, 2, 3, 4, 5]);
        let batch = spool.pending(2, usize::MAX).unwrap();
        assert_eq!(batch[1].payload, payload(2));
        spool.acknowledge(3).unwrap();
        assert_eq!(sequences(&spool), [4, 5]);
        drop(spool);
        let (mut spool, recovery) = open(dir.path());
        assert_eq!(
            recovery,
            Recovery {
                pending: 2,
                truncated_bytes: 0
            }
        );
        assert_eq!(sequences(&spool), [4, 5]);
        assert_eq!(spool.next_sequence(), 6);
        spool.acknowledge(5).unwrap();
        drop(spool);
        let (spool, _) = open(dir.path());
        assert_eq!(
            spool.next_sequence(),
            6,
            "numbers keep growing after everything was acknowledged"
        );
        assert_eq!(sequences(&spool), Vec::<u64>::new());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_older_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path());
        for _ in 0..3 {
            spool.append(1000, &payload(7), 0, 1000).unwrap();
        }
        let segment = spool.segments[0].path.clone();
        drop(spool);
        let length = std::fs::metadata(&segment).unwrap().len();
        for cut in [1, 10, 30] {
            let file = OpenOptions::new().write(true).open(&segment).unwrap();
            file.set_len(length - cut).unwrap();
            drop(file);
            let (spool, recovery) = open(dir.path());
            assert_eq!(sequences(&spool), [1, 2], "cut {cut}");
            assert!(recovery.truncated_bytes > 0);
            assert_eq!(spool.next_sequence(), 3, "the torn number is issued again");
        }
    }

    #[test]
    fn a_flipped_byte_drops_that_record_and_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path());
        for sequence in 1..=3 {
            spool.append(1000, &payload(sequence), 0, 1000).unwrap();
        }
        let segment = spool.segments[0].path.clone();
        drop(spool);
        let mut data = std::fs::read(&segment).unwrap();
        let second = HEADER_BYTES + payload(1).len() + HEADER_BYTES + 3;
        data[second] ^= 0xff;
        std::fs::write(&segment, data).unwrap();
        let (spool, _) = open(dir.path());
        assert_eq!(sequences(&spool), [1]);
    }

    #[test]
    fn when_full_the_oldest_go_first_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_bytes: 16 * 1024,
            max_age_seconds: 3600,
        };
        let (mut spool, _) = Spool::open(dir.path(), limits, 1000).unwrap();
        for _ in 0..200 {
            spool.append(1000, &[b'x'; 200], 0, 1000).unwrap();
        }
        let kept = sequences(&spool);
        let on_disk: u64 = spool.segments.iter().map(|segment| segment.bytes).sum();
        assert!(on_disk <= limits.max_bytes, "{on_disk}");
        assert_eq!(kept.last(), Some(&200), "the newest are kept");
        assert!(kept.windows(2).all(|pair| pair[1] == pair[0] + 1));
        let dropped = take_dropped(&mut spool);
        assert_eq!(dropped + kept.len() as u64, 200);
        assert_eq!(take_dropped(&mut spool), 0, "counted once");
    }

    #[test]
    fn a_refused_report_is_set_aside_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path());
        for sequence in 1..=3 {
            spool.append(1000, &payload(sequence), 0, 1000).unwrap();
        }
        spool.set_aside(2).unwrap();
        assert_eq!(
            sequences(&spool),
            [1, 2, 3],
            "only the oldest pending report can be set aside"
        );
        spool.set_aside(1).unwrap();
        assert_eq!(sequences(&spool), [2, 3]);
        drop(spool);
        let (mut spool, _) = open(dir.path());
        assert_eq!(take_dropped(&mut spool), 1, "the count survives a restart");
    }

    #[test]
    fn a_drop_count_survives_the_drop_of_the_report_carrying_it() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_bytes: 8 * 1024,
            max_age_seconds: 3600,
        };
        let (mut spool, _) = Spool::open(dir.path(), limits, 1000).unwrap();
        // As the agent does: each report carries the drops not yet reported.
        for _ in 0..200 {
            let carried = spool.dropped();
            spool.append(1000, &[b'x'; 300], carried, 1000).unwrap();
            spool.forget_dropped(carried).unwrap();
        }
        let pending: Vec<Entry> = spool
            .segments
            .iter()
            .flat_map(|segment| segment.entries.iter().copied())
            .collect();
        let reported_in_pending: u64 = pending.iter().map(|entry| entry.carried).sum();
        assert_eq!(
            reported_in_pending + spool.dropped(),
            200 - pending.len() as u64,
            "every dropped report is counted exactly once"
        );
    }

    #[test]
    fn reports_older_than_the_age_bound_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_bytes: 64 * 1024,
            max_age_seconds: 100,
        };
        let (mut spool, _) = Spool::open(dir.path(), limits, 1000).unwrap();
        spool.append(1000, b"old", 0, 1000).unwrap();
        spool.append(1050, b"newer", 0, 1050).unwrap();
        // Both in one 4 KiB segment, the big one in the next: the first segment goes once its
        // newest record is too old.
        spool.append(1200, &[b'y'; 5000], 0, 1200).unwrap();
        assert_eq!(sequences(&spool), [3]);
        assert_eq!(take_dropped(&mut spool), 2);
    }

    #[test]
    fn a_model_of_random_operations_and_crashes() {
        // A small deterministic generator, so a failure replays.
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_bytes: 1 << 20,
            max_age_seconds: i64::MAX / 4,
        };
        let (mut spool, _) = Spool::open(dir.path(), limits, 1000).unwrap();
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut issued = 0;
        for step in 0..2000 {
            match next(10) {
                0..=5 => {
                    issued = spool.append(step, &payload(issued + 1), 0, step).unwrap();
                    model.push_back(issued);
                }
                6 | 7 if !model.is_empty() => {
                    let upto = model[next(model.len() as u64) as usize];
                    spool.acknowledge(upto).unwrap();
                    model.retain(|sequence| *sequence > upto);
                }
                8 => {
                    drop(spool);
                    spool = Spool::open(dir.path(), limits, 1000).unwrap().0;
                }
                _ => {
                    // A crash that tears the last record while it was being written: it was
                    // never sent, so it is gone, and its number may be issued again.
                    let Some(segment) = spool.segments.back().map(|s| s.path.clone()) else {
                        continue;
                    };
                    if model.back() != Some(&issued) {
                        continue;
                    }
                    drop(spool);
                    let length = std::fs::metadata(&segment).unwrap().len();
                    let file = OpenOptions::new().write(true).open(&segment).unwrap();
                    file.set_len(length - 1 - next(20)).unwrap();
                    model.pop_back();
                    spool = Spool::open(dir.path(), limits, 1000).unwrap().0;
                    assert!(spool.next_sequence() >= issued, "step {step}");
                    issued = spool.next_sequence() - 1;
                }
            }
            assert_eq!(sequences(&spool), Vec::from(model.clone()), "step {step}");
            assert_eq!(spool.next_sequence(), issued + 1, "step {step}");
        }
    }

    #[test]
    fn the_instance_survives_restarts_and_a_wiped_directory_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let (spool, _) = open(&spool_dir);
        let first = spool.instance().to_string();
        assert_eq!(
            posmon_protocol::validate::check_agent_instance(&first, "instance"),
            Ok(())
        );
        assert_eq!(first.len(), 36, "{first}");
        drop(spool);
        assert_eq!(open(&spool_dir).0.instance(), first, "kept across restarts");
        std::fs::remove_dir_all(&spool_dir).unwrap();
        let (spool, _) = open(&spool_dir);
        assert_ne!(
            spool.instance(),
            first,
            "a wiped directory is a new instance"
        );
        assert_eq!(spool.next_sequence(), 1);
        drop(spool);
        // An instance file someone broke is replaced, not sent.
        std::fs::write(spool_dir.join(INSTANCE_FILE), "not an id!\n").unwrap();
        let (spool, _) = open(&spool_dir);
        assert_eq!(
            posmon_protocol::validate::check_agent_instance(spool.instance(), "instance"),
            Ok(())
        );
    }

    #[test]
    fn a_state_claiming_the_last_sequence_starts_anew_under_a_new_instance() {
        for issued in [SEQUENCE_MAX, SEQUENCE_MAX + 1, u64::MAX] {
            let dir = tempfile::tempdir().unwrap();
            let (mut spool, _) = open(dir.path());
            let before = spool.instance().to_string();
            spool.append(1000, &payload(1), 0, 1000).unwrap();
            drop(spool);
            std::fs::write(
                dir.path().join("state"),
                format!("acknowledged=0\nissued={issued}\ndropped=0\n"),
            )
            .unwrap();
            let (mut spool, _) = open(dir.path());
            assert_ne!(spool.instance(), before, "issued {issued}");
            assert_eq!(spool.next_sequence(), 1, "issued {issued}");
            assert_eq!(spool.dropped(), 1, "the report spooled before is counted");
            assert_eq!(spool.append(1000, &payload(1), 0, 1000).unwrap(), 1);
        }
    }
}
