//! Fleet control: configuration profiles laid over each other into a terminal's settings, the
//! agents' account of what they run, and "probe now".
//!
//! - `profile.rs` (pure): a profile, its selector, rank, rollout and validation.
//! - `layers.rs` (pure): the profile set in layer order and a terminal's effective settings.
//! - `store.rs`: tables `config_profiles` and `config_history`.
//! - `terminals.rs`: per-terminal state in memory (what it runs, its labels, the cached
//!   effective settings, the probe request, the held long-poll).
//! - here: [`Control`], what the HTTP edge calls — the ingest hook, the long-poll, profile writes
//!   (stored before they apply), probe requests, and the counts of the read API and metrics.
//!
//! What this module must never do: hold a lock across an await or IO, answer a terminal about
//! another terminal, or keep state for a terminal that did not authenticate.

pub mod layers;
pub mod profile;
pub mod store;
pub mod terminals;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use posmon_protocol::control::{ConfigState, ControlAnswer, Rejection, PROBE_REQUEST_MAX};
use posmon_protocol::Labels;
use prometheus::{IntCounter, IntGauge};
use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};

use crate::config::ControlConfig;
use crate::store::StoreError;
use layers::{Effective, ProfileSet};
use profile::{Invalid, Profile, ProfileRequest};
use store::{ControlStore, HistoryEntry};
use terminals::{Entry, Terminals, Waiter, Wake};

pub use terminals::ProbeRequest;

/// A stored row skipped at start: its table and key.
pub type Unreadable = (&'static str, String);

/// A poll that answered something does not answer the same again for this long (the agent is
/// fetching or probing): it holds instead, so an agent that polls again at once does not spin.
/// The acknowledgements keep naming it meanwhile.
pub const REDELIVER_AFTER: Duration = Duration::from_secs(30);

/// Why a profile write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{}: {}", .0.field, .0.problem)]
    Invalid(Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a probe request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe request ids are exhausted")]
    Exhausted,
}

/// A terminal's control state, as the read API shows it.
#[derive(Debug, Clone)]
pub struct TerminalControl {
    pub reported: Option<ConfigState>,
    pub effective: Arc<Effective>,
    pub probe: Option<ProbeRequest>,
}

/// Terminals by the settings version they run or refused, and those in no step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Version → (running, rejected, assigned: terminals whose effective version it is).
    pub versions: BTreeMap<String, VersionCount>,
    /// Terminals that report a state but neither run nor refused their effective version.
    pub pending: u64,
    /// Terminals of the fleet that never reported a state.
    pub unknown: u64,
    /// Terminals that run their effective version.
    pub running: u64,
    /// Terminals that refused their effective version.
    pub rejected: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionCount {
    pub running: u64,
    pub rejected: u64,
    pub assigned: u64,
}

/// The control metrics, registered in the collector's registry (`metrics.rs`).
#[derive(Clone)]
pub struct ControlMetrics {
    pub waiting: IntGauge,
    pub probe_requests: IntCounter,
}

pub struct Control {
    config: ControlConfig,
    store: ControlStore,
    profiles: RwLock<Arc<ProfileSet>>,
    /// Serializes profile writes: each sees the set the previous one left.
    writing: Mutex<()>,
    terminals: Terminals,
    next_probe: AtomicU64,
    next_poll: AtomicU64,
    waiting: AtomicU64,
    closed: watch::Sender<bool>,
    metrics: ControlMetrics,
}

impl Control {
    /// Opens the profiles in the state database in `data_dir`; returns the rows skipped too.
    pub fn open(
        data_dir: &Path,
        config: ControlConfig,
        metrics: ControlMetrics,
    ) -> Result<(Self, Vec<Unreadable>), StoreError> {
        let store = ControlStore::open(data_dir)?;
        let loaded = store.load()?;
        if !loaded.profiles.is_empty() {
            tracing::info!(
                profiles = loaded.profiles.len(),
                "Loaded the configuration profiles."
            );
        }
        let profiles = ProfileSet::new(loaded.profiles.into_iter().map(Arc::new).collect(), 1);
        // Probe ids start at the clock's milliseconds: above the ids of an earlier run (an
        // agent may still answer one), and far below 2^53.
        let start = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            .unwrap_or(1)
            .clamp(1, PROBE_REQUEST_MAX / 2);
        Ok((
            Control {
                config,
                store,
                profiles: RwLock::new(Arc::new(profiles)),
                writing: Mutex::new(()),
                terminals: Terminals::new(),
                next_probe: AtomicU64::new(start),
                next_poll: AtomicU64::new(1),
                waiting: AtomicU64::new(0),
                closed: watch::channel(false).0,
                metrics,
            },
            loaded.unreadable,
        ))
    }

    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// The profiles in force, in layer order.
    pub fn profiles(&self) -> Arc<ProfileSet> {
        Arc::clone(&self.profiles.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn replace_profiles(&self, profiles: Vec<Arc<Profile>>) {
        let mut current = self
            .profiles
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let generation = current.generation.saturating_add(1);
        *current = Arc::new(ProfileSet::new(profiles, generation));
    }

    /// Wakes every held poll to look again (the profile set changed).
    fn wake_all(&self) {
        self.terminals.for_each(|_, entry| entry.wake());
    }

    /// Creates or replaces profile `name` (validated here), stored before it applies. Blocking
    /// (SQLite).
    pub fn put_profile(
        &self,
        name: &str,
        request: ProfileRequest,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Arc<Profile>, WriteError> {
        profile::check_name(name).map_err(WriteError::Invalid)?;
        request.validate().map_err(WriteError::Invalid)?;
        // Whole seconds, as stored: the profile reads the same after a restart.
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let set = self.profiles();
        let old = set.get(name);
        let profile = Arc::new(Profile::next(old.map(Arc::as_ref), request, name, by, now));
        let others = set.profiles.iter().filter(|other| other.name != name);
        profile::check_set(&profile, others.clone().map(Arc::as_ref))
            .map_err(WriteError::Invalid)?;
        self.store.put(&profile)?;
        let mut profiles: Vec<Arc<Profile>> = others.cloned().collect();
        profiles.push(Arc::clone(&profile));
        self.replace_profiles(profiles);
        self.wake_all();
        tracing::info!(
            profile = name,
            revision = profile.revision,
            by,
            "A configuration profile was written."
        );
        Ok(profile)
    }

    /// Deletes profile `name`, stored before it applies; `None` when there is none. Blocking.
    pub fn delete_profile(
        &self,
        name: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Arc<Profile>>, StoreError> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let set = self.profiles();
        let Some(old) = set.get(name).cloned() else {
            return Ok(None);
        };
        self.store.delete(&old, by, now, None)?;
        self.replace_profiles(
            set.profiles
                .iter()
                .filter(|profile| profile.name != name)
                .cloned()
                .collect(),
        );
        self.wake_all();
        tracing::info!(profile = name, by, "A configuration profile was deleted.");
        Ok(Some(old))
    }

    /// The newest history rows, newest first. Blocking (SQLite).
    pub fn history(
        &self,
        profile: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.store.history(profile, limit)
    }

    /// Makes sure `terminal_id` (authenticated, or of the fleet) has an entry, with the labels
    /// `labels` gives when it is new (its newest report's, from the fleet).
    pub fn prime(&self, terminal_id: &str, labels: impl FnOnce() -> Option<Labels>) {
        let mut shard = self.terminals.shard(terminal_id);
        if !shard.contains_key(terminal_id) {
            let mut entry = Entry::default();
            if let Some(labels) = labels() {
                entry.set_labels(&labels);
            }
            shard.insert(terminal_id.into(), entry);
        }
    }

    /// The ingest hook, as a batch is taken (its reports not yet consumed): the newest
    /// report's `labels`, the newest `config` state a report of the batch carried, and the
    /// (probe request, sequence) pairs its reports answer. Returns whether the terminal reads
    /// control fields (it ever reported a state): only then is [`Control::answer`] asked.
    pub fn observe(
        &self,
        terminal_id: &str,
        labels: &Labels,
        config: Option<ConfigState>,
        answered: &[(u64, u64)],
        now: OffsetDateTime,
    ) -> bool {
        let mut shard = self.terminals.shard(terminal_id);
        let entry = shard.entry(terminal_id.into()).or_default();
        entry.set_labels(labels);
        if let Some(config) = config {
            entry.reported = Some(config);
        }
        if let Some(probe) = entry.probe.as_mut() {
            if probe.answered_at.is_none() {
                if let Some((_, sequence)) = answered.iter().find(|(id, _)| *id == probe.id) {
                    probe.answered_at = Some(now);
                    probe.answered_sequence = Some(*sequence);
                }
            }
        }
        entry.reported.is_some()
    }

    /// What an acknowledgement tells `terminal_id` after its batch applied: the settings version
    /// to fetch, the pending probe request (nothing to an agent that never reported a state).
    /// No profile walk when the cached effective settings are of the current profile set.
    pub fn answer(&self, terminal_id: &str) -> ControlAnswer {
        let profiles = self.profiles();
        let mut shard = self.terminals.shard(terminal_id);
        match shard.get_mut(terminal_id) {
            Some(entry) => entry.answer(terminal_id, &profiles),
            None => ControlAnswer::default(),
        }
    }

    /// [`Control::observe`] then [`Control::answer`], as ingest calls them.
    #[cfg(test)]
    fn on_ingest(
        &self,
        terminal_id: &str,
        labels: &Labels,
        config: Option<ConfigState>,
        answered: &[(u64, u64)],
        now: OffsetDateTime,
    ) -> ControlAnswer {
        if self.observe(terminal_id, labels, config, answered, now) {
            self.answer(terminal_id)
        } else {
            ControlAnswer::default()
        }
    }

    /// Records what a polling agent says it runs (`applied`) and refused (`rejected`; the
    /// reason the reports gave is kept for the same version).
    fn record_poll_state(entry: &mut Entry, applied: Option<String>, rejected: Option<String>) {
        let reason = |version: &str| {
            entry
                .reported
                .as_ref()
                .and_then(|state| state.rejected.as_ref())
                .filter(|rejection| rejection.version == version)
                .map(|rejection| rejection.reason.clone())
                .unwrap_or_default()
        };
        let rejected = rejected.map(|version| Rejection {
            reason: reason(&version),
            version,
        });
        entry.reported = Some(ConfigState { applied, rejected });
    }

    /// The long-poll of `terminal_id` (authenticated, primed): records its state, then answers
    /// at once when there is something for it, else holds for up to `wait` (at most
    /// `control.max_hold_seconds`) and answers when woken or empty at the end. One held poll
    /// per terminal; at most `control.max_waiting` held in all.
    pub async fn poll(
        self: &Arc<Self>,
        terminal_id: &str,
        applied: Option<String>,
        rejected: Option<String>,
        wait: Duration,
    ) -> ControlAnswer {
        let hold = wait.min(Duration::from_secs(self.config.max_hold_seconds));
        let deadline = tokio::time::Instant::now() + hold;
        let poll = self.next_poll.fetch_add(1, Ordering::Relaxed);
        let mut closed = self.closed.subscribe();
        let mut held: Option<Held> = None;
        {
            let mut shard = self.terminals.shard(terminal_id);
            let entry = shard.entry(terminal_id.into()).or_default();
            Self::record_poll_state(entry, applied, rejected);
            // A newer poll ends the one held before it.
            if let Some(old) = entry.waiter.take() {
                let _ = old.wake.send(Wake::Replaced);
            }
        }
        loop {
            let (wake, recheck_at) = {
                let profiles = self.profiles();
                let mut shard = self.terminals.shard(terminal_id);
                let entry = shard.entry(terminal_id.into()).or_default();
                let answer = entry.answer(terminal_id, &profiles);
                let mut recheck_at = deadline;
                if answer != ControlAnswer::default() {
                    match &entry.delivered {
                        Some((told, at)) if *told == answer && at.elapsed() < REDELIVER_AFTER => {
                            if let Some(again) = at.checked_add(REDELIVER_AFTER) {
                                recheck_at = recheck_at.min(tokio::time::Instant::from_std(again));
                            }
                        }
                        _ => {
                            entry.delivered = Some((answer.clone(), Instant::now()));
                            if entry.waiter.as_ref().is_some_and(|w| w.poll == poll) {
                                entry.waiter = None;
                            }
                            return answer;
                        }
                    }
                }
                if *closed.borrow() || tokio::time::Instant::now() >= deadline {
                    if entry.waiter.as_ref().is_some_and(|w| w.poll == poll) {
                        entry.waiter = None;
                    }
                    return ControlAnswer::default();
                }
                if held.is_none() {
                    let before = self.waiting.fetch_add(1, Ordering::AcqRel);
                    if before >= self.config.max_waiting {
                        self.waiting.fetch_sub(1, Ordering::AcqRel);
                        return ControlAnswer {
                            retry_after_seconds: Some(self.config.poll_retry_seconds),
                            ..ControlAnswer::default()
                        };
                    }
                    self.metrics.waiting.inc();
                    held = Some(Held {
                        control: Arc::clone(self),
                        terminal_id: terminal_id.into(),
                        poll,
                    });
                }
                let (sender, receiver) = oneshot::channel();
                entry.waiter = Some(Waiter { poll, wake: sender });
                (receiver, recheck_at)
            };
            tokio::select! {
                woken = wake => match woken {
                    Ok(Wake::Check) => continue,
                    // Replaced, or the entry dropped its waiter: this poll is over.
                    Ok(Wake::Replaced) | Err(_) => return ControlAnswer::default(),
                },
                () = tokio::time::sleep_until(recheck_at) => continue,
                _ = closed.changed() => return ControlAnswer::default(),
            }
        }
    }

    /// Ends every held poll with an empty answer, and every later one at once: the collector
    /// is stopping and must not wait for them.
    pub fn close(&self) {
        self.closed.send_replace(true);
        self.wake_all();
    }

    /// How many polls are held now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Acquire)
    }

    /// Asks `terminal_id` (of the fleet: checked by the caller) to probe at once; a pending
    /// request of it is replaced. Wakes its held poll.
    pub fn request_probe(
        &self,
        terminal_id: &str,
        by: &str,
        now: OffsetDateTime,
        labels: impl FnOnce() -> Option<Labels>,
    ) -> Result<ProbeRequest, ProbeError> {
        let id = self
            .next_probe
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |id| {
                (id < PROBE_REQUEST_MAX).then(|| id + 1)
            })
            .map_err(|_| ProbeError::Exhausted)?;
        let request = ProbeRequest {
            id,
            terminal_id: terminal_id.to_string(),
            requested_by: by.to_string(),
            requested_at: now,
            answered_at: None,
            answered_sequence: None,
        };
        self.prime(terminal_id, labels);
        let mut shard = self.terminals.shard(terminal_id);
        let entry = shard.entry(terminal_id.into()).or_default();
        entry.probe = Some(request.clone());
        entry.wake();
        self.metrics.probe_requests.inc();
        Ok(request)
    }

    /// The effective settings of `terminal_id` (primed with `labels` if it has no entry).
    pub fn effective(
        &self,
        terminal_id: &str,
        labels: impl FnOnce() -> Option<Labels>,
    ) -> Arc<Effective> {
        self.prime(terminal_id, labels);
        let profiles = self.profiles();
        let mut shard = self.terminals.shard(terminal_id);
        shard
            .entry(terminal_id.into())
            .or_default()
            .effective(terminal_id, &profiles)
    }

    /// The control state of `terminal_id`, as the read API shows it.
    pub fn terminal(
        &self,
        terminal_id: &str,
        labels: impl FnOnce() -> Option<Labels>,
    ) -> TerminalControl {
        self.prime(terminal_id, labels);
        let profiles = self.profiles();
        let mut shard = self.terminals.shard(terminal_id);
        let entry = shard.entry(terminal_id.into()).or_default();
        TerminalControl {
            reported: entry.reported.clone(),
            effective: entry.effective(terminal_id, &profiles),
            probe: entry.probe.clone(),
        }
    }

    /// The terminals by settings version; `fleet_terminals` is the fleet's size (those without
    /// a reported state are `unknown`). A pass over every entry: off the async workers.
    pub fn tally(&self, fleet_terminals: usize) -> Tally {
        let profiles = self.profiles();
        let mut tally = Tally::default();
        let mut reporting: u64 = 0;
        self.terminals.for_each(|terminal_id, entry| {
            let Some(reported) = entry.reported.clone() else {
                return;
            };
            reporting = reporting.saturating_add(1);
            let effective = entry.effective(terminal_id, &profiles);
            fn count<'a>(
                versions: &'a mut BTreeMap<String, VersionCount>,
                version: &str,
            ) -> &'a mut VersionCount {
                versions.entry(version.to_string()).or_default()
            }
            if let Some(applied) = &reported.applied {
                count(&mut tally.versions, applied).running += 1;
            }
            if let Some(rejection) = &reported.rejected {
                count(&mut tally.versions, &rejection.version).rejected += 1;
            }
            if !effective.layers.is_empty() || reported.applied.is_some() {
                count(&mut tally.versions, &effective.version).assigned += 1;
            }
            if reported.applied.as_deref() == Some(effective.version.as_str()) {
                tally.running += 1;
            } else if reported
                .rejected
                .as_ref()
                .is_some_and(|rejection| rejection.version == effective.version)
            {
                tally.rejected += 1;
            } else if effective.to_tell(&reported).is_some() {
                tally.pending += 1;
            } else {
                // On its local file alone, as it should be with no profile: in step.
                tally.running += 1;
            }
        });
        tally.unknown = u64::try_from(fleet_terminals)
            .unwrap_or(u64::MAX)
            .saturating_sub(reporting);
        tally
    }
}

/// A held poll's place: counted in `waiting` while it lives; its waiter goes with it (a client
/// that hangs up drops the future, and with it this).
struct Held {
    control: Arc<Control>,
    terminal_id: Box<str>,
    poll: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        {
            let mut shard = self.control.terminals.shard(&self.terminal_id);
            if let Some(entry) = shard.get_mut(&*self.terminal_id) {
                if entry.waiter.as_ref().is_some_and(|w| w.poll == self.poll) {
                    entry.waiter = None;
                }
            }
        }
        self.control.waiting.fetch_sub(1, Ordering::AcqRel);
        self.control.metrics.waiting.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(max_waiting: u64) -> (Arc<Control>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        crate::store::Store::open(dir.path()).unwrap_or_else(|error| panic!("{error}"));
        let metrics = ControlMetrics {
            waiting: IntGauge::new("w", "w").unwrap_or_else(|error| panic!("{error}")),
            probe_requests: IntCounter::new("p", "p").unwrap_or_else(|error| panic!("{error}")),
        };
        let config = ControlConfig {
            max_waiting,
            ..ControlConfig::default()
        };
        let (control, _) =
            Control::open(dir.path(), config, metrics).unwrap_or_else(|error| panic!("{error}"));
        (Arc::new(control), dir)
    }

    fn put(control: &Control, name: &str, json: &str) -> Arc<Profile> {
        let request: ProfileRequest =
            serde_json::from_str(json).unwrap_or_else(|error| panic!("{error}"));
        control
            .put_profile(name, request, "admin", OffsetDateTime::now_utc())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn reporting() -> Option<ConfigState> {
        Some(ConfigState::default())
    }

    #[test]
    fn acks_name_the_version_only_to_agents_that_report_a_state() {
        let (control, _dir) = control(10);
        put(&control, "fleet", r#"{"settings":{"attempts":2}}"#);
        let labels = Labels::default();
        let now = OffsetDateTime::now_utc();
        let old = control.on_ingest("T-OLD", &labels, None, &[], now);
        assert_eq!(old, ControlAnswer::default());
        let told = control.on_ingest("T-NEW", &labels, reporting(), &[], now);
        let version = told.config.clone().unwrap_or_else(|| panic!("not told"));
        // Without a state in this report, the one reported before still counts.
        let again = control.on_ingest("T-NEW", &labels, None, &[], now);
        assert_eq!(again.config.as_deref(), Some(version.as_str()));
        let applied = Some(ConfigState {
            applied: Some(version.clone()),
            rejected: None,
        });
        assert_eq!(
            control.on_ingest("T-NEW", &labels, applied, &[], now),
            ControlAnswer::default()
        );
        let tally = control.tally(3);
        assert_eq!((tally.running, tally.pending, tally.unknown), (1, 0, 2));
        assert_eq!(tally.versions.get(&version).map(|v| v.running), Some(1));
    }

    #[test]
    fn a_probe_request_is_named_until_a_report_answers_it() {
        let (control, _dir) = control(10);
        let labels = Labels::default();
        let now = OffsetDateTime::now_utc();
        control.on_ingest("T-1", &labels, reporting(), &[], now);
        let request = control
            .request_probe("T-1", "admin", now, || None)
            .unwrap_or_else(|error| panic!("{error}"));
        let ack = control.on_ingest("T-1", &labels, None, &[(request.id + 1, 7)], now);
        assert_eq!(ack.probe_request, Some(request.id));
        let ack = control.on_ingest("T-1", &labels, None, &[(request.id, 8)], now);
        assert_eq!(ack.probe_request, None);
        let view = control.terminal("T-1", || None);
        let probe = view.probe.unwrap_or_else(|| panic!("no probe"));
        assert_eq!(probe.answered_sequence, Some(8));
        assert!(probe.answered_at.is_some());
        let next = control
            .request_probe("T-1", "admin", now, || None)
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(next.id > request.id);
    }

    #[tokio::test]
    async fn a_held_poll_answers_a_probe_request_and_a_new_poll_ends_the_old() {
        let (control, _dir) = control(10);
        let labels = Labels::default();
        control.on_ingest("T-1", &labels, reporting(), &[], OffsetDateTime::now_utc());
        let polling = Arc::clone(&control);
        let first = tokio::spawn(async move {
            polling
                .poll("T-1", None, None, Duration::from_secs(60))
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(control.waiting(), 1);
        let polling = Arc::clone(&control);
        let second = tokio::spawn(async move {
            polling
                .poll("T-1", None, None, Duration::from_secs(60))
                .await
        });
        let ended = tokio::time::timeout(Duration::from_secs(1), first).await;
        assert!(
            matches!(ended, Ok(Ok(ref answer)) if *answer == ControlAnswer::default()),
            "{ended:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let request = control
            .request_probe("T-1", "admin", OffsetDateTime::now_utc(), || None)
            .unwrap_or_else(|error| panic!("{error}"));
        let answer = tokio::time::timeout(Duration::from_secs(1), second).await;
        assert!(
            matches!(answer, Ok(Ok(ref answer)) if answer.probe_request == Some(request.id)),
            "{answer:?}"
        );
        assert_eq!(control.waiting(), 0);
    }

    #[tokio::test]
    async fn polls_beyond_max_waiting_come_back_later_and_close_ends_them() {
        let (control, _dir) = control(2);
        let mut held = Vec::new();
        for terminal in ["T-1", "T-2"] {
            let polling = Arc::clone(&control);
            held.push(tokio::spawn(async move {
                polling
                    .poll(terminal, None, None, Duration::from_secs(600))
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = control
            .poll("T-3", None, None, Duration::from_secs(600))
            .await;
        assert_eq!(refused.retry_after_seconds, Some(300));
        control.close();
        for poll in held {
            let answer = tokio::time::timeout(Duration::from_secs(1), poll).await;
            assert!(matches!(answer, Ok(Ok(ref a)) if *a == ControlAnswer::default()));
        }
        assert_eq!(control.waiting(), 0);
    }

    #[tokio::test]
    async fn a_profile_change_wakes_a_poll_whose_version_it_changes() {
        let (control, _dir) = control(10);
        let labels = Labels {
            region: Some("east".into()),
            ..Labels::default()
        };
        control.on_ingest("T-1", &labels, reporting(), &[], OffsetDateTime::now_utc());
        let polling = Arc::clone(&control);
        let poll = tokio::spawn(async move {
            polling
                .poll("T-1", None, None, Duration::from_secs(60))
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another region's profile changes nothing for it: it keeps waiting.
        put(
            &control,
            "west",
            r#"{"selector":{"region":"west"},"settings":{"attempts":2}}"#,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!poll.is_finished());
        let east = put(
            &control,
            "east",
            r#"{"selector":{"region":"east"},"settings":{"attempts":3}}"#,
        );
        let answer = tokio::time::timeout(Duration::from_secs(1), poll).await;
        assert!(
            matches!(answer, Ok(Ok(ref a)) if a.config.as_deref() == Some(east.settings.version().as_str())),
            "{answer:?}"
        );
    }
}
