//! Per-terminal control state, in memory only: after a restart the agents tell it again (their
//! next report or poll says what they run; a pending probe request is forgotten). An entry
//! exists only for a terminal that authenticated (a report, a poll, a config fetch) or that an
//! administrator asked to probe (a terminal of the fleet). 16 locked shards; no lock is held
//! across an await or IO.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use posmon_protocol::control::{ConfigState, ControlAnswer};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::layers::{Effective, ProfileSet};
use super::profile::MatchLabels;

const SHARDS: usize = 16;

/// A request to probe at once, and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRequest {
    pub id: u64,
    pub terminal_id: String,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub answered_at: Option<OffsetDateTime>,
    /// The sequence of the report that answered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_sequence: Option<u64>,
}

impl ProbeRequest {
    pub fn pending(&self) -> Option<u64> {
        self.answered_at.is_none().then_some(self.id)
    }
}

/// What wakes a held poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// Something may be there for it: look again.
    Check,
    /// A newer poll of the same terminal took its place: answer empty.
    Replaced,
}

pub(super) struct Waiter {
    pub poll: u64,
    pub wake: oneshot::Sender<Wake>,
}

/// One terminal's control state.
#[derive(Default)]
pub(super) struct Entry {
    /// What the agent last said it runs and refused; `None`: it never said (an agent that does
    /// not read settings, which is never told of them).
    pub reported: Option<ConfigState>,
    pub labels: MatchLabels,
    /// The effective settings for the profile set's generation.
    pub cached: Option<(u64, Arc<Effective>)>,
    pub probe: Option<ProbeRequest>,
    /// The held long-poll, if any.
    pub waiter: Option<Waiter>,
    /// What a poll last answered and when: not answered again at once.
    pub delivered: Option<(ControlAnswer, Instant)>,
}

impl Entry {
    /// The effective settings under `profiles`, from the cache when it is of their generation.
    pub fn effective(&mut self, terminal_id: &str, profiles: &ProfileSet) -> Arc<Effective> {
        if let Some((generation, effective)) = &self.cached {
            if *generation == profiles.generation {
                return Arc::clone(effective);
            }
        }
        let effective = Arc::new(profiles.effective(terminal_id, &self.labels));
        self.cached = Some((profiles.generation, Arc::clone(&effective)));
        effective
    }

    /// Takes new labels; the cache goes when they changed.
    pub fn set_labels(&mut self, labels: &posmon_protocol::Labels) {
        if !self.labels.same_as(labels) {
            self.labels = MatchLabels::of(labels);
            self.cached = None;
        }
    }

    /// What the terminal should hear now: the version to fetch, the pending probe request.
    pub fn answer(&mut self, terminal_id: &str, profiles: &ProfileSet) -> ControlAnswer {
        let Some(reported) = self.reported.clone() else {
            return ControlAnswer::default();
        };
        let effective = self.effective(terminal_id, profiles);
        ControlAnswer {
            config: effective.to_tell(&reported).map(str::to_string),
            probe_request: self.probe.as_ref().and_then(ProbeRequest::pending),
            retry_after_seconds: None,
        }
    }

    /// Wakes the held poll, if any, to look again.
    pub fn wake(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            // A poll gone already is no error.
            let _ = waiter.wake.send(Wake::Check);
        }
    }
}

/// One shard's entries, by terminal id.
pub(super) type Shard = HashMap<Box<str>, Entry>;

/// The entries, in locked shards.
pub(super) struct Terminals {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Terminals {
    pub fn new() -> Self {
        Terminals {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    pub fn shard(&self, terminal_id: &str) -> MutexGuard<'_, Shard> {
        let index = usize::try_from(self.hasher.hash_one(terminal_id) % SHARDS as u64).unwrap_or(0);
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Visits every entry, one shard locked at a time.
    pub fn for_each(&self, mut visit: impl FnMut(&str, &mut Entry)) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (terminal_id, entry) in shard.iter_mut() {
                visit(terminal_id, entry);
            }
        }
    }
}
