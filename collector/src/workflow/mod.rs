//! The problem workflow: an operator acknowledges an open finding (a terminal's, or a
//! localized cause), assigns it to a person or a party, comments on it, or closes it by hand;
//! every action is recorded with who and when in the audit log (`store.rs`), which also records
//! the maintenance windows' creation and early end. The state of each open finding
//! ([`ProblemState`]) is kept in memory as one shared snapshot that views and the alert
//! notifier read without a lock held, and in the database, so it survives a restart; the state
//! of a finding that closed is dropped ([`Workflow::retain_open`]).
//!
//! What an action means is decided here ([`apply`], pure); closing a finding is the fleet's
//! (`fleet/by_hand.rs`). Bounded: comments, names, the number of states
//! ([`STATES_MAX`]: new ones refused beyond) and the audit log ([`store::AUDIT_MAX`]: the
//! oldest rows dropped).

pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use posmon_diagnosis::findings::Finding;
use posmon_diagnosis::Party;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::StoreError;
use store::WorkflowStore;
pub use store::{AuditEntry, AuditFilter};

/// The longest comment an action carries.
pub const COMMENT_MAX_CHARS: usize = 2000;
/// The longest person's name a problem is assigned to.
pub const PERSON_MAX_CHARS: usize = 100;
/// The most findings with a workflow state at once; acting on one more is refused.
pub const STATES_MAX: usize = 100_000;

/// Who a problem is assigned to: a person by name, or a party (the network provider…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignee {
    Person(String),
    Party(Party),
}

/// What the operations team did about one open finding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemState {
    /// Empty for a fleet-wide finding.
    #[serde(default)]
    pub terminal_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub acknowledged_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<Assignee>,
    /// Comments made on it.
    #[serde(default)]
    pub comments: u32,
}

/// One action on one open finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    Unacknowledge,
    /// `None`: nobody any more.
    Assign(Option<Assignee>),
    Comment,
    Close,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Unacknowledge => "unacknowledge",
            Action::Assign(Some(_)) => "assign",
            Action::Assign(None) => "unassign",
            Action::Comment => "comment",
            Action::Close => "close",
        }
    }
}

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The request is wrong: the field and why.
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    /// The action does not fit the problem's state (acknowledging it twice…).
    #[error("{0}")]
    Conflict(String),
    #[error("too many problems have a workflow state (at most {STATES_MAX})")]
    Full,
    #[error("the finding is no longer open")]
    NotOpen,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a comment: at most [`COMMENT_MAX_CHARS`], no control characters but line breaks;
/// surrounding blanks trimmed, empty is none.
pub fn comment(text: Option<&str>) -> Result<Option<String>, WorkflowError> {
    let Some(text) = text.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > COMMENT_MAX_CHARS {
        return Err(WorkflowError::Invalid {
            field: "comment",
            problem: format!("too long (at most {COMMENT_MAX_CHARS} characters)"),
        });
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(WorkflowError::Invalid {
            field: "comment",
            problem: "must not hold control characters".into(),
        });
    }
    Ok(Some(text.to_string()))
}

/// The assignee of an assign request: a person's name (checked like a comment, one line, at
/// most [`PERSON_MAX_CHARS`]) or a party by its name; neither unassigns.
pub fn assignee(
    person: Option<&str>,
    party: Option<&str>,
) -> Result<Option<Assignee>, WorkflowError> {
    let person = person.map(str::trim).filter(|name| !name.is_empty());
    let party = party.map(str::trim).filter(|name| !name.is_empty());
    match (person, party) {
        (Some(_), Some(_)) => Err(WorkflowError::Invalid {
            field: "person",
            problem: "give a person or a party, not both".into(),
        }),
        (Some(name), None) => {
            if name.chars().count() > PERSON_MAX_CHARS || name.chars().any(char::is_control) {
                return Err(WorkflowError::Invalid {
                    field: "person",
                    problem: format!("must be one line of at most {PERSON_MAX_CHARS} characters"),
                });
            }
            Ok(Some(Assignee::Person(name.to_string())))
        }
        (None, Some(name)) => Party::ALL
            .iter()
            .find(|party| party.as_str() == name)
            .map(|party| Some(Assignee::Party(*party)))
            .ok_or_else(|| WorkflowError::Invalid {
                field: "party",
                problem: format!(
                    "must be one of {}",
                    Party::ALL
                        .iter()
                        .map(|party| party.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        (None, None) => Ok(None),
    }
}

/// The state after `action` by `actor` at `now` on a finding whose state was `before`
/// (`None`: nothing done yet), or why the action does not fit. Closing leaves the state as it
/// was: the finding is gone, and its state with it.
pub fn apply(
    before: Option<&ProblemState>,
    terminal_id: &str,
    action: &Action,
    actor: &str,
    now: OffsetDateTime,
) -> Result<ProblemState, WorkflowError> {
    let mut state = before.cloned().unwrap_or_else(|| ProblemState {
        terminal_id: terminal_id.to_string(),
        ..ProblemState::default()
    });
    match action {
        Action::Acknowledge => {
            if let Some(by) = &state.acknowledged_by {
                return Err(WorkflowError::Conflict(format!(
                    "already acknowledged by {by}"
                )));
            }
            state.acknowledged_by = Some(actor.to_string());
            state.acknowledged_at = Some(now);
        }
        Action::Unacknowledge => {
            if state.acknowledged_by.is_none() {
                return Err(WorkflowError::Conflict("not acknowledged".into()));
            }
            state.acknowledged_by = None;
            state.acknowledged_at = None;
        }
        Action::Assign(assignee) => state.assignee = assignee.clone(),
        Action::Comment => state.comments = state.comments.saturating_add(1),
        Action::Close => {}
    }
    Ok(state)
}

/// The workflow: states in memory and in the database, and the audit log.
pub struct Workflow {
    store: WorkflowStore,
    states: RwLock<Arc<HashMap<u64, ProblemState>>>,
    /// One action at a time: an action reads the state, writes the database, then publishes.
    acting: Mutex<()>,
}

impl Workflow {
    /// Opens the tables in the state database in `data_dir` (already migrated) and loads the
    /// states.
    pub fn open(data_dir: &Path) -> Result<Workflow, StoreError> {
        let store = WorkflowStore::open(data_dir)?;
        let states = store.load_states()?;
        Ok(Workflow {
            store,
            states: RwLock::new(Arc::new(states)),
            acting: Mutex::new(()),
        })
    }

    /// The highest finding id any state or audit row names (0 without any).
    pub fn highest_finding_id(&self) -> Result<u64, StoreError> {
        self.store.highest_finding_id()
    }

    /// Every open finding's state, by finding id: a snapshot.
    pub fn states(&self) -> Arc<HashMap<u64, ProblemState>> {
        Arc::clone(&self.states.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn publish(&self, states: HashMap<u64, ProblemState>) {
        *self.states.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(states);
    }

    /// Records `action` by `actor` on the open `finding` (with `comment`), and returns the
    /// finding's state after it. `in_fleet` runs first, under the same lock as the record: it
    /// says whether the finding is still open — and for [`Action::Close`] closes it (its state
    /// is then dropped and the closing recorded) —, so no action lands on a finding another
    /// one just closed.
    pub fn act(
        &self,
        finding: &Finding,
        action: &Action,
        actor: &str,
        comment: Option<&str>,
        now: OffsetDateTime,
        in_fleet: impl FnOnce() -> bool,
    ) -> Result<(ProblemState, AuditEntry), WorkflowError> {
        let _acting = self.acting.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.states();
        let before = current.get(&finding.id);
        if before.is_none() && *action != Action::Close && current.len() >= STATES_MAX {
            return Err(WorkflowError::Full);
        }
        let after = apply(before, &finding.terminal_id, action, actor, now)?;
        if !in_fleet() {
            return Err(WorkflowError::NotOpen);
        }
        let entry = AuditEntry::of_finding(finding, action, actor, comment, now);
        let kept = (*action != Action::Close).then_some(&after);
        let entry = self.store.record(finding.id, kept, entry).inspect_err(|error| {
            if *action == Action::Close {
                tracing::error!(%error, finding = finding.id, "A finding was closed by hand but the closing could not be recorded in the audit log.");
            }
        })?;
        let mut states = (*current).clone();
        match kept {
            Some(state) => states.insert(finding.id, state.clone()),
            None => states.remove(&finding.id),
        };
        self.publish(states);
        Ok((after, entry))
    }

    /// Records an action that concerns no finding (a maintenance window's creation or end).
    pub fn record(&self, entry: AuditEntry) -> Result<AuditEntry, StoreError> {
        self.store.record_other(entry)
    }

    /// Drops the states of findings that are no longer open (`is_open(terminal id, finding
    /// id)`); returns how many.
    pub fn retain_open(&self, is_open: impl Fn(&str, u64) -> bool) -> Result<usize, StoreError> {
        let _acting = self.acting.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.states();
        let gone: Vec<u64> = current
            .iter()
            .filter(|(id, state)| !is_open(&state.terminal_id, **id))
            .map(|(id, _)| *id)
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        self.store.forget_states(&gone)?;
        let mut states = (*current).clone();
        for id in &gone {
            states.remove(id);
        }
        self.publish(states);
        Ok(gone.len())
    }

    /// The newest audit entries that `filter` keeps, newest first.
    pub fn audit(&self, filter: &AuditFilter, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.audit(filter, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-03 10:00 UTC);

    fn check(before: Option<&ProblemState>, action: Action, expected: Result<ProblemState, &str>) {
        let got = apply(before, "T-1", &action, "wang", NOW).map_err(|error| error.to_string());
        assert_eq!(got, expected.map_err(str::to_string), "{action:?}");
    }

    #[test]
    fn actions_change_the_state_or_say_why_they_do_not_fit() {
        let fresh = ProblemState {
            terminal_id: "T-1".into(),
            ..ProblemState::default()
        };
        let acknowledged = ProblemState {
            acknowledged_by: Some("wang".into()),
            acknowledged_at: Some(NOW),
            ..fresh.clone()
        };
        check(None, Action::Acknowledge, Ok(acknowledged.clone()));
        check(
            Some(&acknowledged),
            Action::Acknowledge,
            Err("already acknowledged by wang"),
        );
        check(
            Some(&acknowledged),
            Action::Unacknowledge,
            Ok(fresh.clone()),
        );
        check(None, Action::Unacknowledge, Err("not acknowledged"));
        let network = Some(Assignee::Party(Party::NetworkProvider));
        check(
            Some(&acknowledged),
            Action::Assign(network.clone()),
            Ok(ProblemState {
                assignee: network.clone(),
                ..acknowledged.clone()
            }),
        );
        check(
            Some(&ProblemState {
                assignee: network,
                ..fresh.clone()
            }),
            Action::Assign(None),
            Ok(fresh.clone()),
        );
        check(
            None,
            Action::Comment,
            Ok(ProblemState {
                comments: 1,
                ..fresh.clone()
            }),
        );
        check(None, Action::Close, Ok(fresh));
    }

    #[test]
    fn states_and_audit_rows_survive_a_reopen_and_name_the_highest_finding_id() {
        use posmon_diagnosis::findings::Finding;
        use posmon_diagnosis::rules::network_path::HOST_UNREACHABLE;
        use posmon_diagnosis::Severity;
        let dir = tempfile::tempdir().unwrap();
        crate::store::Store::open(dir.path()).unwrap();
        let workflow = Workflow::open(dir.path()).unwrap();
        assert_eq!(workflow.highest_finding_id().unwrap(), 0);
        let finding = Finding {
            id: 41,
            terminal_id: "T-1".into(),
            kind: &HOST_UNREACHABLE,
            severity: Severity::Critical,
            subject: "pay".into(),
            evidence: vec![],
            since: NOW,
            last_seen: NOW,
            closed_at: None,
            suppressed_by: None,
            explains: 0,
        };
        workflow
            .act(
                &finding,
                &Action::Acknowledge,
                "wang",
                Some("mine"),
                NOW,
                || true,
            )
            .unwrap();
        let closed = Finding {
            id: 42,
            ..finding.clone()
        };
        workflow
            .act(&closed, &Action::Close, "wang", None, NOW, || true)
            .unwrap();
        let refused = workflow.act(&finding, &Action::Comment, "li", Some("x"), NOW, || false);
        assert!(matches!(refused, Err(WorkflowError::NotOpen)));
        drop(workflow);
        let reopened = Workflow::open(dir.path()).unwrap();
        assert_eq!(reopened.highest_finding_id().unwrap(), 42);
        assert_eq!(
            reopened
                .states()
                .get(&41)
                .and_then(|state| state.acknowledged_by.clone()),
            Some("wang".to_string())
        );
        assert!(!reopened.states().contains_key(&42));
        let entries = reopened.audit(&AuditFilter::default(), 10).unwrap();
        let actions: Vec<&str> = entries.iter().map(|entry| entry.action.as_str()).collect();
        assert_eq!(actions, ["close", "acknowledge"]);
        assert_eq!(entries[1].comment.as_deref(), Some("mine"));
    }

    #[test]
    fn comments_and_assignees_are_checked() {
        assert_eq!(comment(Some("  ")).unwrap(), None);
        assert_eq!(
            comment(Some(" line one\nline two ")).unwrap().as_deref(),
            Some("line one\nline two")
        );
        assert!(comment(Some(&"x".repeat(COMMENT_MAX_CHARS + 1))).is_err());
        assert!(comment(Some("bell\u{7}")).is_err());
        assert_eq!(
            assignee(Some("李工"), None).unwrap(),
            Some(Assignee::Person("李工".into()))
        );
        assert_eq!(
            assignee(None, Some("network_provider")).unwrap(),
            Some(Assignee::Party(Party::NetworkProvider))
        );
        assert_eq!(assignee(Some(""), None).unwrap(), None);
        for (person, party, expected) in [
            (Some("a"), Some("acquirer"), "person: give a person or a party, not both"),
            (None, Some("plumber"), "party: must be one of merchant, pos_vendor, network_provider, software_vendor, acquirer, operations"),
            (Some("two\nlines"), None, "person: must be one line of at most 100 characters"),
        ] {
            assert_eq!(assignee(person, party).unwrap_err().to_string(), expected);
        }
    }
}
