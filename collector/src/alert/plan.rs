//! The notification plan: compares the alerts that should be known (open findings, not
//! suppressed by a fleet-wide one, not silenced) with what each receiver was already told,
//! and decides which notifications go out now — like Alertmanager reconciles firing alerts.
//! Findings events only wake the notifier; this comparison is the truth, so a lost event
//! loses nothing.
//!
//! Per (receiver, group): new alerts or resolutions wait `group_wait` after the first of them
//! (then `group_interval` after the last message) and go out together; a group that still
//! fires with nothing new is repeated every `repeat_interval`.
//!
//! Pure: no IO, no clock (callers pass the time and the state).

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::message::{AlertItem, Notification, ALERTS_PER_NOTIFICATION_MAX};
use super::routing::{facts, group_of, Routes, Timing};
use super::silences::Silence;

/// One open finding as alerting sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Active {
    pub item: AlertItem,
    /// Explained by a fleet-wide finding, which is sent instead.
    pub suppressed: bool,
}

/// Identifies an alert across restarts: the finding id alone could be reused if the last
/// second of state was lost in a crash, so the finding's terminal, code and subject are in it.
pub fn alert_key(item: &AlertItem) -> String {
    format!(
        "{}|{}|{}|{}",
        item.finding_id, item.terminal_id, item.code, item.subject
    )
}

/// (receiver, group key)
pub type GroupId = (String, String);

/// What the receivers were told (persisted), and when groups first had news (in memory).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// (receiver, alert key) → the group it was sent in and the alert as sent.
    pub notified: BTreeMap<(String, String), (String, AlertItem)>,
    /// When each group's last notification was queued.
    pub last_sent: HashMap<GroupId, OffsetDateTime>,
    /// When each group first had news not yet sent; restarts with `group_wait` after a
    /// restart.
    pub news_since: HashMap<GroupId, OffsetDateTime>,
}

/// One notification to queue, and how it changes the state once queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub notification: Notification,
    /// Unique per (receiver, group, the changes it tells): the outbox refuses a second row with
    /// it, and receivers get it to drop a repeat.
    pub idempotency_key: String,
    pub added: Vec<(String, AlertItem)>,
    pub removed: Vec<String>,
}

impl State {
    /// Records a queued notification.
    pub fn apply(&mut self, planned: &Planned) {
        let receiver = &planned.notification.receiver;
        let group = &planned.notification.group_key;
        for (key, item) in &planned.added {
            self.notified.insert(
                (receiver.clone(), key.clone()),
                (group.clone(), item.clone()),
            );
        }
        for key in &planned.removed {
            self.notified.remove(&(receiver.clone(), key.clone()));
        }
        let id = (receiver.clone(), group.clone());
        self.news_since.remove(&id);
        self.last_sent.insert(id, planned.notification.created_at);
    }
}

impl State {
    /// Groups whose last message no longer matters: none of their alerts is open with the
    /// receiver, and it went out longer than `longest_interval` (the longest `group_interval`
    /// of any route) ago, so forgetting it changes no timing.
    pub fn quiet_groups(
        &self,
        now: OffsetDateTime,
        longest_interval: time::Duration,
    ) -> Vec<GroupId> {
        let told: std::collections::BTreeSet<(&str, &str)> = self
            .notified
            .iter()
            .map(|((receiver, _), (group, _))| (receiver.as_str(), group.as_str()))
            .collect();
        self.last_sent
            .iter()
            .filter(|((receiver, group), sent)| {
                !told.contains(&(receiver.as_str(), group.as_str()))
                    && !self
                        .news_since
                        .contains_key(&(receiver.clone(), group.clone()))
                    && later(**sent, longest_interval) < now
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets the groups [`State::quiet_groups`] named.
    pub fn forget(&mut self, groups: &[GroupId]) {
        for id in groups {
            self.last_sent.remove(id);
        }
    }
}

#[derive(Default)]
struct Group {
    labels: BTreeMap<String, String>,
    timing: Option<Timing>,
    /// (alert key, alert) routed here now.
    desired: Vec<(String, AlertItem)>,
}

/// What to send at `now`. `closed_at` holds the close time of findings that closed recently
/// (from events); others that vanished are resolved at `now`. Updates `state.news_since`.
pub fn plan(
    active: &[Active],
    routes: &Routes,
    silences: &[Silence],
    state: &mut State,
    closed_at: &HashMap<u64, OffsetDateTime>,
    now: OffsetDateTime,
) -> Vec<Planned> {
    let mut groups: BTreeMap<GroupId, Group> = BTreeMap::new();
    let mut still_open: HashSet<String> = HashSet::with_capacity(active.len());
    // Which silences hold now, judged once (a recurring one looks for its window).
    let silences: Vec<&Silence> = silences
        .iter()
        .filter(|silence| silence.state(now) == "active")
        .collect();
    for alert in active {
        let key = alert_key(&alert.item);
        still_open.insert(key.clone());
        let facts = facts(&alert.item);
        if alert.suppressed
            || silences
                .iter()
                .any(|silence| silence.matchers.matches(&facts))
        {
            continue;
        }
        for route in routes.route(&facts) {
            let (group_key, labels) = group_of(route, &alert.item);
            let group = groups
                .entry((route.receiver.clone(), group_key))
                .or_default();
            if group.timing.is_none() {
                group.timing = Some(route.timing);
                group.labels = labels;
            }
            if !group.desired.iter().any(|(existing, _)| *existing == key) {
                group.desired.push((key.clone(), alert.item.clone()));
            }
        }
    }
    // Groups with alerts sent earlier, which may have resolved.
    let mut resolved: BTreeMap<GroupId, Vec<(String, AlertItem)>> = BTreeMap::new();
    for ((receiver, key), (group_key, item)) in &state.notified {
        if still_open.contains(key) {
            continue;
        }
        let mut item = item.clone();
        item.closed_at = Some(closed_at.get(&item.finding_id).copied().unwrap_or(now));
        resolved
            .entry((receiver.clone(), group_key.clone()))
            .or_default()
            .push((key.clone(), item));
    }
    let ids: Vec<GroupId> = groups
        .keys()
        .chain(resolved.keys())
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut planned = Vec::new();
    for id in ids {
        let group = groups.remove(&id).unwrap_or_default();
        let gone = resolved.remove(&id).unwrap_or_default();
        let (receiver, group_key) = &id;
        let timing = group.timing.unwrap_or(routes.default_timing);
        let (old, new): (Vec<_>, Vec<_>) = group.desired.into_iter().partition(|(key, _)| {
            state
                .notified
                .contains_key(&(receiver.clone(), key.clone()))
        });
        // Alerts acknowledged (or no longer) since they were sent: news, so that the
        // receiver hears who took the problem.
        let (taken, old): (Vec<_>, Vec<_>) = old.into_iter().partition(|(key, item)| {
            state
                .notified
                .get(&(receiver.clone(), key.clone()))
                .is_some_and(|(_, sent)| sent.acknowledged_by != item.acknowledged_by)
        });
        let last_sent = state.last_sent.get(&id).copied();
        let repeat = if !new.is_empty() || !gone.is_empty() || !taken.is_empty() {
            let since = *state.news_since.entry(id.clone()).or_insert(now);
            let due = match last_sent {
                None => later(since, timing.group_wait),
                Some(sent) => {
                    later(sent, timing.group_interval).max(later(since, timing.group_wait))
                }
            };
            if now < due {
                continue;
            }
            false
        } else {
            state.news_since.remove(&id);
            let repeat_due =
                last_sent.is_some_and(|sent| now >= later(sent, timing.repeat_interval));
            // An acknowledged alert is not repeated: someone took it — except to a receiver
            // that forgets alerts not repeated (Alertmanager would resolve it).
            let unacknowledged = old.iter().any(|(_, item)| item.acknowledged_by.is_none());
            if old.is_empty() || !(unacknowledged || timing.keep_alive) || !repeat_due {
                continue;
            }
            true
        };
        let labels = if group.labels.is_empty() {
            parse_group_key(group_key)
        } else {
            group.labels
        };
        planned.push(build(
            receiver,
            group_key,
            labels,
            repeat,
            old,
            Changed { new, taken, gone },
            last_sent,
            now,
        ));
    }
    planned
}

/// `at` plus `wait`, or the last instant the calendar holds when that lies beyond it: a wait
/// that long (a stored time far ahead, a huge configured interval) is never over.
fn later(at: OffsetDateTime, wait: time::Duration) -> OffsetDateTime {
    at.checked_add(wait)
        .unwrap_or_else(|| time::PrimitiveDateTime::MAX.assume_utc())
}

fn parse_group_key(group_key: &str) -> BTreeMap<String, String> {
    group_key
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// What changed in one group since its last message: alerts new to the receiver, alerts
/// acknowledged or unacknowledged since they were sent, alerts resolved.
struct Changed {
    new: Vec<(String, AlertItem)>,
    taken: Vec<(String, AlertItem)>,
    gone: Vec<(String, AlertItem)>,
}

#[allow(clippy::too_many_arguments)] // reason: the parts of one notification, named
fn build(
    receiver: &str,
    group_key: &str,
    group_labels: BTreeMap<String, String>,
    repeat: bool,
    old: Vec<(String, AlertItem)>,
    changed: Changed,
    last_sent: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Planned {
    let Changed {
        mut new,
        taken,
        gone,
    } = changed;
    let mut hasher = Sha256::new();
    for part in [receiver, "\n", group_key, "\n"] {
        hasher.update(part.as_bytes());
    }
    for (key, _) in &new {
        hasher.update(format!("{key} opened\n").as_bytes());
    }
    for (key, item) in &taken {
        let after = last_sent.map_or(0, |sent| sent.unix_timestamp_nanos());
        hasher.update(
            format!(
                "{key} acknowledged by {:?} after {after}\n",
                item.acknowledged_by
            )
            .as_bytes(),
        );
    }
    for (key, _) in &gone {
        hasher.update(format!("{key} closed\n").as_bytes());
    }
    if repeat {
        let after = last_sent.map_or(0, |sent| sent.unix_timestamp_nanos());
        hasher.update(format!("repeat after {after}\n").as_bytes());
    }
    let idempotency_key: String = hasher.finalize()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let sorted = |list: &[(String, AlertItem)]| {
        let mut items: Vec<AlertItem> = list.iter().map(|(_, item)| item.clone()).collect();
        items.sort_by(|a, b| {
            (&a.terminal_id, &a.code, &a.subject).cmp(&(&b.terminal_id, &b.code, &b.subject))
        });
        let more = items.len().saturating_sub(ALERTS_PER_NOTIFICATION_MAX);
        items.truncate(ALERTS_PER_NOTIFICATION_MAX);
        (items, more)
    };
    // Told again, to be recorded as told with the acknowledgement.
    new.extend(taken);
    let mut firing_all = old;
    firing_all.extend(new.iter().cloned());
    let (firing, more_firing) = sorted(&firing_all);
    let (resolved, more_resolved) = sorted(&gone);
    Planned {
        notification: Notification {
            receiver: receiver.to_string(),
            group_key: group_key.to_string(),
            group_labels,
            repeat,
            firing,
            resolved,
            more_firing,
            more_resolved,
            created_at: now,
        },
        idempotency_key,
        added: new,
        removed: gone.into_iter().map(|(key, _)| key).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::config::AlertsConfig;
    use crate::alert::matchers::Matchers;
    use crate::alert::message::tests::item;
    use time::macros::datetime;
    use time::Duration;

    fn routes() -> Routes {
        let config = AlertsConfig {
            default_receiver: Some("ops".into()),
            group_wait_seconds: 10,
            group_interval_seconds: 60,
            repeat_interval_seconds: 600,
            receivers: vec![],
            ..AlertsConfig::default()
        };
        Routes::from_config(&config, |_| None)
    }

    fn alert(terminal: &str, id: u64, region: &str) -> Active {
        let mut item = item(terminal, "env.network.host_unreachable", region);
        item.finding_id = id;
        Active {
            item,
            suppressed: false,
        }
    }

    /// Runs the plan at each second offset with the alerts given for it, applying what it
    /// queues, and returns (second, firing terminals, resolved terminals, repeat) per message.
    fn check(
        steps: &[(i64, Vec<Active>)],
        silences: &[Silence],
        expected: &[(i64, Vec<&str>, Vec<&str>, bool)],
    ) {
        let start = datetime!(2026-11-26 02:00 UTC);
        let mut state = State::default();
        let mut got = Vec::new();
        for (second, active) in steps {
            let now = start + Duration::seconds(*second);
            for planned in plan(
                active,
                &routes(),
                silences,
                &mut state,
                &HashMap::new(),
                now,
            ) {
                state.apply(&planned);
                let names = |items: &[AlertItem]| -> Vec<String> {
                    items.iter().map(|item| item.terminal_id.clone()).collect()
                };
                got.push((
                    *second,
                    names(&planned.notification.firing),
                    names(&planned.notification.resolved),
                    planned.notification.repeat,
                ));
            }
        }
        let expected: Vec<(i64, Vec<String>, Vec<String>, bool)> = expected
            .iter()
            .map(|(second, firing, resolved, repeat)| {
                (
                    *second,
                    firing.iter().map(|s| s.to_string()).collect(),
                    resolved.iter().map(|s| s.to_string()).collect(),
                    *repeat,
                )
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_group_waits_then_goes_out_once_with_every_alert() {
        let a = || alert("T-1", 1, "cn-east");
        let b = || alert("T-2", 2, "cn-east");
        let west = || alert("T-3", 3, "cn-west");
        check(
            &[
                (0, vec![a()]),
                (5, vec![a(), b(), west()]),
                (10, vec![a(), b(), west()]),
                (14, vec![a(), b(), west()]),
                (15, vec![a(), b(), west()]),
                (30, vec![a(), b(), west()]),
            ],
            &[],
            &[
                (10, vec!["T-1", "T-2"], vec![], false),
                (15, vec!["T-3"], vec![], false),
            ],
        );
    }

    #[test]
    fn resolutions_wait_for_the_group_interval_and_repeats_come_while_firing() {
        let a = || alert("T-1", 1, "cn-east");
        let b = || alert("T-2", 2, "cn-east");
        check(
            &[
                (0, vec![a(), b()]),
                (10, vec![a(), b()]),
                (20, vec![a()]),
                (69, vec![a()]),
                (70, vec![a()]),
                (600, vec![a()]),
                (670, vec![a()]),
                (680, vec![]),
                (740, vec![]),
            ],
            &[],
            &[
                (10, vec!["T-1", "T-2"], vec![], false),
                (70, vec!["T-1"], vec!["T-2"], false),
                (670, vec!["T-1"], vec![], true),
                (740, vec![], vec!["T-1"], false),
            ],
        );
    }

    #[test]
    fn an_acknowledged_alert_tells_who_took_it_once_and_is_not_repeated() {
        let a = || alert("T-1", 1, "cn-east");
        let taken = || {
            let mut alert = alert("T-1", 1, "cn-east");
            alert.item.acknowledged_by = Some("wang".into());
            alert
        };
        check(
            &[
                (0, vec![a()]),
                (10, vec![a()]),
                // Acknowledged: news, after the group interval.
                (20, vec![taken()]),
                (70, vec![taken()]),
                (80, vec![taken()]),
                // No reminder while acknowledged…
                (700, vec![taken()]),
                (1300, vec![taken()]),
                // … until nobody holds it any more: told, then reminded again.
                (1310, vec![a()]),
                (1320, vec![a()]),
                (1920, vec![a()]),
                (1930, vec![]),
                (1980, vec![]),
            ],
            &[],
            &[
                (10, vec!["T-1"], vec![], false),
                (70, vec!["T-1"], vec![], false),
                (1320, vec!["T-1"], vec![], false),
                (1920, vec!["T-1"], vec![], true),
                (1980, vec![], vec!["T-1"], false),
            ],
        );
        // What the receiver got at 70 s names who took it.
        let start = datetime!(2026-11-26 02:00 UTC);
        let mut state = State::default();
        for planned in plan(
            &[a()],
            &routes(),
            &[],
            &mut state,
            &HashMap::new(),
            start + Duration::seconds(10),
        ) {
            state.apply(&planned);
        }
        let told = plan(
            &[taken()],
            &routes(),
            &[],
            &mut state,
            &HashMap::new(),
            start + Duration::seconds(70),
        );
        assert_eq!(told.len(), 1);
        assert_eq!(
            told[0].notification.firing[0].acknowledged_by.as_deref(),
            Some("wang")
        );
        assert_eq!(told[0].added.len(), 1);
        // To a receiver that forgets alerts not repeated (Alertmanager), still repeated.
        let config = AlertsConfig {
            default_receiver: Some("am".into()),
            group_wait_seconds: 10,
            group_interval_seconds: 60,
            repeat_interval_seconds: 600,
            ..AlertsConfig::default()
        };
        let capped = Routes::from_config(&config, |_| Some(60));
        let mut state = State::default();
        let mut repeats = 0;
        for second in (0..=400).step_by(10) {
            let alerts = if second < 20 {
                vec![a()]
            } else {
                vec![taken()]
            };
            for planned in plan(
                &alerts,
                &capped,
                &[],
                &mut state,
                &HashMap::new(),
                start + Duration::seconds(second),
            ) {
                repeats += usize::from(planned.notification.repeat);
                state.apply(&planned);
            }
        }
        assert!(
            repeats >= 4,
            "{repeats} repeats of an acknowledged alert to Alertmanager"
        );
    }

    #[test]
    fn suppressed_and_silenced_alerts_are_not_sent_and_not_resolved() {
        let mut suppressed = alert("T-1", 1, "cn-east");
        suppressed.suppressed = true;
        let silence = Silence {
            id: 1,
            matchers: Matchers {
                region: vec!["cn-west".into()],
                ..Matchers::default()
            },
            starts_at: datetime!(2026-11-26 02:00 UTC),
            ends_at: datetime!(2026-11-26 03:00 UTC),
            created_by: "ops".into(),
            comment: String::new(),
            created_at: datetime!(2026-11-26 02:00 UTC),
            recurrence: None,
        };
        let west = || alert("T-3", 3, "cn-west");
        check(
            &[
                (0, vec![suppressed.clone(), west()]),
                (10, vec![suppressed.clone(), west()]),
                (20, vec![alert("T-1", 1, "cn-east"), west()]),
                (30, vec![alert("T-1", 1, "cn-east"), west()]),
            ],
            std::slice::from_ref(&silence),
            &[(30, vec!["T-1"], vec![], false)],
        );
        // Sent before the silence: no resolution while silenced and open.
        let mut state = State::default();
        let start = datetime!(2026-11-26 01:00 UTC);
        for planned in plan(
            &[west()],
            &routes(),
            &[],
            &mut state,
            &HashMap::new(),
            start,
        ) {
            state.apply(&planned);
        }
        let later = start + Duration::seconds(10);
        let sent = plan(
            &[west()],
            &routes(),
            &[],
            &mut state,
            &HashMap::new(),
            later,
        );
        assert_eq!(sent.len(), 1);
        state.apply(&sent[0]);
        let silenced_now = datetime!(2026-11-26 02:30 UTC);
        let nothing = plan(
            &[west()],
            &routes(),
            &[silence],
            &mut state,
            &HashMap::new(),
            silenced_now,
        );
        assert!(nothing.is_empty(), "{nothing:?}");
    }

    #[test]
    fn the_idempotency_key_names_the_changes() {
        let mut state = State::default();
        let start = datetime!(2026-11-26 02:00 UTC);
        let once = |state: &mut State| {
            plan(
                &[alert("T-1", 1, "x")],
                &routes(),
                &[],
                state,
                &HashMap::new(),
                start,
            );
            plan(
                &[alert("T-1", 1, "x")],
                &routes(),
                &[],
                state,
                &HashMap::new(),
                start + Duration::seconds(10),
            )
        };
        let first = once(&mut state.clone());
        let again = once(&mut state);
        assert_eq!(first[0].idempotency_key, again[0].idempotency_key);
        assert_eq!(first[0].idempotency_key.len(), 32);
        let other = plan(
            &[alert("T-1", 2, "x")],
            &routes(),
            &[],
            &mut State::default(),
            &HashMap::new(),
            start,
        );
        assert!(other.is_empty(), "waits for group_wait");
    }

    #[test]
    fn only_groups_with_nothing_open_and_past_their_interval_are_forgotten() {
        let now = datetime!(2026-11-26 03:00 UTC);
        let group = |name: &str| ("ops".to_string(), name.to_string());
        let mut state = State::default();
        // "open" still has an alert the receiver was told of; "waiting" has news pending;
        // "recent" sent a minute ago; "old" sent an hour ago with nothing open.
        state.notified.insert(
            ("ops".into(), "alert-1".into()),
            (
                "open".into(),
                item("T-1", "env.network.host_unreachable", "cn-east"),
            ),
        );
        state.news_since.insert(group("waiting"), now);
        for (name, minutes_ago) in [("open", 60), ("waiting", 60), ("recent", 1), ("old", 60)] {
            state
                .last_sent
                .insert(group(name), now - Duration::minutes(minutes_ago));
        }
        let quiet = state.quiet_groups(now, Duration::minutes(5));
        assert_eq!(quiet, [group("old")]);
        state.forget(&quiet);
        let mut kept: Vec<&str> = state
            .last_sent
            .keys()
            .map(|(_, name)| name.as_str())
            .collect();
        kept.sort_unstable();
        assert_eq!(kept, ["open", "recent", "waiting"]);
    }

    #[test]
    fn times_at_the_ends_of_the_calendar_and_endless_intervals_do_not_panic() {
        let end = time::PrimitiveDateTime::MAX.assume_utc();
        let start = time::PrimitiveDateTime::MIN.assume_utc();
        for seconds in [0, 10, u64::MAX] {
            let config = AlertsConfig {
                default_receiver: Some("ops".into()),
                group_wait_seconds: seconds,
                group_interval_seconds: seconds,
                repeat_interval_seconds: seconds,
                receivers: vec![],
                ..AlertsConfig::default()
            };
            let routes = Routes::from_config(&config, |_| None);
            for since in [start, end] {
                let mut far = alert("T-1", 1, "cn-east");
                far.item.since = since;
                let mut state = State::default();
                let mut sent = 0;
                for now in [start, datetime!(2026-11-26 02:00 UTC), end, end] {
                    for planned in plan(
                        std::slice::from_ref(&far),
                        &routes,
                        &[],
                        &mut state,
                        &HashMap::new(),
                        now,
                    ) {
                        state.apply(&planned);
                        sent += 1;
                    }
                    // And the close of a finding whose close time is at an end.
                    let closed: HashMap<u64, OffsetDateTime> = [(1, since)].into();
                    let _ = plan(&[], &routes, &[], &mut state.clone(), &closed, now);
                }
                let expected = if seconds == u64::MAX { 0 } else { 1 };
                assert!(sent >= expected, "{seconds} s: {sent} sent");
            }
        }
    }
}
