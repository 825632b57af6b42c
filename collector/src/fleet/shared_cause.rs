//! Shared causes in the fleet: the incremental tallies the localization reads, the failing
//! terminals per symptom, the fleet-level findings of the localized causes, and the
//! suppression of the terminal findings they explain.
//!
//! Nothing here walks the fleet. The tallies (terminals per population and combination of
//! attribute values) change only when a terminal's labels, versions or targets do; the failing
//! terminals per symptom change only when a finding opens or closes. So one evaluation costs
//! O(failing terminals) — gathering their attributes, the search, the suppression — plus one
//! lookup per candidate scope, however large the fleet.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use posmon_diagnosis::findings::{Change, Finding, FindingEvent};
use posmon_diagnosis::localize::{
    self, parse_subject, scopes_of, Attributes, Dimension, Scope, Symptom, SymptomInput,
};
use posmon_diagnosis::rules::silent::SILENT;
use posmon_diagnosis::rules::upstream;
use posmon_diagnosis::{Category, FindingKind};
use time::OffsetDateTime;

use super::{lock, Fleet, Terminal, Thresholds};

/// Stripes of the tallies: a terminal's change locks each at most once, and two cores rarely
/// meet.
const STRIPES: usize = 16;

/// The attribute values of a terminal: its labels, and its firmware and POS app versions.
pub(super) fn attributes(terminal: &Terminal) -> Attributes {
    let labels = &terminal.labels;
    let version = |component: &str| {
        terminal
            .versions
            .iter()
            .find(|(name, _)| &**name == component)
            .map(|(_, version)| Arc::clone(version))
    };
    let mut attributes: Attributes = Default::default();
    attributes[Dimension::Carrier.index()] = labels.carrier.clone();
    attributes[Dimension::Firmware.index()] = version("firmware");
    attributes[Dimension::Gateway.index()] = labels.gateway.clone();
    attributes[Dimension::Merchant.index()] = labels.merchant.clone();
    attributes[Dimension::Model.index()] = labels.model.clone();
    attributes[Dimension::PosApp.index()] = version("pos_app");
    attributes[Dimension::Region.index()] = labels.region.clone();
    attributes[Dimension::Resolver.index()] = labels.resolver.clone();
    attributes
}

/// What a terminal counts in: its attributes, in every population it belongs to (all
/// terminals, and the probers of each of its targets).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Membership {
    attributes: Attributes,
    /// Sorted, without repeats.
    targets: Vec<Arc<str>>,
}

impl Membership {
    pub(super) fn of(terminal: &Terminal) -> Self {
        let mut targets: Vec<Arc<str>> = terminal
            .targets
            .iter()
            .map(|target| Arc::clone(&target.name))
            .collect();
        targets.sort();
        targets.dedup();
        Membership {
            attributes: attributes(terminal),
            targets,
        }
    }
}

/// Terminals per population and scope (the empty scope, each value, each pair of values that
/// [`scopes_of`] pairs), kept as counts under a keyed 64-bit hash of (population, scope): a
/// terminal adds a bounded number of keys (populations ≤ its targets + 1, times the scopes of
/// eight values), and a key is dropped when its count is back to zero. The hash is keyed per
/// process, so no terminal can aim for a collision.
#[derive(Debug)]
pub(super) struct Tallies {
    hasher: RandomState,
    stripes: Box<[Mutex<HashMap<u64, u32>>]>,
}

impl Default for Tallies {
    fn default() -> Self {
        Tallies {
            hasher: RandomState::new(),
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Tallies {
    fn key(&self, population: Option<&str>, scope: &Scope) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        population.hash(&mut hasher);
        for (dimension, value) in &scope.0 {
            dimension.index().hash(&mut hasher);
            value.hash(&mut hasher);
        }
        hasher.finish()
    }

    fn keys(&self, membership: &Membership) -> Vec<u64> {
        let scopes = scopes_of(&membership.attributes, 2);
        let populations =
            std::iter::once(None).chain(membership.targets.iter().map(|target| Some(&**target)));
        let mut keys = Vec::with_capacity(scopes.len() * (membership.targets.len() + 1));
        for population in populations {
            for scope in &scopes {
                keys.push(self.key(population, scope));
            }
        }
        keys.sort_unstable_by_key(|key| (key % STRIPES as u64, *key));
        keys
    }

    fn change(&self, keys: &[u64], add: bool) {
        for stripe_keys in keys.chunk_by(|a, b| a % STRIPES as u64 == b % STRIPES as u64) {
            let Some(first) = stripe_keys.first() else {
                continue;
            };
            let mut stripe = lock(&self.stripes[(first % STRIPES as u64) as usize]);
            for key in stripe_keys {
                if add {
                    let count = stripe.entry(*key).or_insert(0);
                    *count = count.saturating_add(1);
                } else if let Some(count) = stripe.get_mut(key) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        stripe.remove(key);
                    }
                }
            }
        }
    }

    /// Moves a terminal from one membership to another (`None`: it was not counted / is gone).
    pub(super) fn update(&self, old: Option<&Membership>, new: Option<&Membership>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.change(&self.keys(old), false);
        }
        if let Some(new) = new {
            self.change(&self.keys(new), true);
        }
    }

    pub(super) fn total(&self, population: Option<&str>, scope: &Scope) -> u64 {
        let key = self.key(population, scope);
        let stripe = lock(&self.stripes[(key % STRIPES as u64) as usize]);
        stripe.get(&key).copied().map_or(0, u64::from)
    }

    /// Distinct keys held, for the tests of the bound.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.stripes.iter().map(|stripe| lock(stripe).len()).sum()
    }
}

/// Whether a kind's findings are symptoms a shared cause may explain: what a terminal's
/// environment shows, and silence. Outdated software is policy, not a fault.
fn symptom_kind(kind: &FindingKind) -> bool {
    matches!(
        kind.category,
        Category::Environment | Category::Availability
    )
}

/// The terminals of one shard showing each symptom.
#[derive(Debug, Default)]
pub(super) struct Failing {
    by_symptom: HashMap<Symptom, HashSet<Arc<str>>>,
}

impl Failing {
    /// Follows the opened and closed findings of one terminal.
    pub(super) fn follow(&mut self, terminal_id: &Arc<str>, events: &[FindingEvent]) {
        for event in events {
            let finding = &event.finding;
            if !symptom_kind(finding.kind) {
                continue;
            }
            let symptom = Symptom {
                code: finding.kind.code,
                subject: Arc::from(finding.subject.as_str()),
            };
            match event.change {
                Change::Opened => {
                    self.by_symptom
                        .entry(symptom)
                        .or_default()
                        .insert(Arc::clone(terminal_id));
                }
                Change::Closed => {
                    if let Some(terminals) = self.by_symptom.get_mut(&symptom) {
                        terminals.remove(terminal_id);
                        if terminals.is_empty() {
                            self.by_symptom.remove(&symptom);
                        }
                    }
                }
                Change::Suppressed | Change::Unsuppressed => {}
            }
        }
    }

    /// Adds the open findings of a terminal restored from the database.
    pub(super) fn restore(&mut self, terminal: &Terminal) {
        for finding in terminal.findings.findings() {
            if symptom_kind(finding.kind) {
                self.by_symptom
                    .entry(Symptom {
                        code: finding.kind.code,
                        subject: Arc::from(finding.subject.as_str()),
                    })
                    .or_default()
                    .insert(Arc::clone(&terminal.id));
            }
        }
    }
}

/// One open cause: the finding, what it explains, where.
#[derive(Debug)]
struct Explainer {
    id: u64,
    symptoms: Vec<String>,
    scope: Scope,
    target: Option<Arc<str>>,
}

/// The open fleet-level findings by what they explain, for suppressing terminal findings.
#[derive(Debug, Default)]
pub(super) struct Suppressions {
    explainers: Vec<Explainer>,
}

impl Suppressions {
    pub(super) fn from_open<'a>(findings: impl Iterator<Item = &'a Finding>) -> Self {
        let mut explainers: Vec<Explainer> = findings
            .filter(|finding| finding.kind.category == Category::Upstream)
            .filter_map(|finding| {
                // A subject of an older format explains nothing; it closes at the next
                // evaluations.
                let (scope, target) = parse_subject(&finding.subject)?;
                Some(Explainer {
                    id: finding.id,
                    symptoms: upstream::symptoms_of(&finding.evidence)
                        .map(str::to_string)
                        .collect(),
                    scope,
                    target,
                })
            })
            .collect();
        explainers.sort_by_key(|explainer| explainer.id);
        Suppressions { explainers }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.explainers.is_empty()
    }

    /// The fleet-level finding that explains a terminal's finding, if any.
    pub(super) fn explaining(&self, attributes: &Attributes, finding: &Finding) -> Option<u64> {
        self.explainers
            .iter()
            .find(|explainer| {
                explainer
                    .symptoms
                    .iter()
                    .any(|code| code == finding.kind.code)
                    && explainer
                        .target
                        .as_deref()
                        .is_none_or(|target| target == finding.subject)
                    && explainer.scope.contains(attributes)
            })
            .map(|explainer| explainer.id)
    }
}

impl Fleet {
    /// Follows findings opened and closed outside ingest (the periodic silence check).
    fn follow_findings(&self, events: &[FindingEvent]) {
        for event in events {
            if !symptom_kind(event.finding.kind)
                || !matches!(event.change, Change::Opened | Change::Closed)
            {
                continue;
            }
            let terminal_id = &event.finding.terminal_id;
            lock(self.shard_of(terminal_id))
                .failing
                .follow(terminal_id, std::slice::from_ref(event));
        }
    }

    /// The failing terminals of every symptom with their attributes; a silent terminal's
    /// other findings are stale and left out.
    fn symptom_inputs(&self) -> Vec<SymptomInput> {
        let mut inputs: HashMap<Symptom, SymptomInput> = HashMap::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for (symptom, terminals) in &shard.failing.by_symptom {
                for id in terminals {
                    let Some(terminal) = shard.terminals.get(id) else {
                        continue;
                    };
                    let silence = std::ptr::eq(symptom.code, SILENT.code);
                    if !silence && terminal.is_silent() {
                        continue;
                    }
                    let Some(finding) = terminal.findings.findings().find(|finding| {
                        finding.kind.code == symptom.code && *finding.subject == *symptom.subject
                    }) else {
                        continue;
                    };
                    let input = inputs
                        .entry(symptom.clone())
                        .or_insert_with(|| SymptomInput {
                            symptom: symptom.clone(),
                            severity: finding.severity,
                            failing: Vec::new(),
                        });
                    input.severity = input.severity.max(finding.severity);
                    input.failing.push(attributes(terminal));
                }
            }
        }
        let mut inputs: Vec<SymptomInput> = inputs.into_values().collect();
        inputs.sort_by(|a, b| a.symptom.cmp(&b.symptom));
        inputs
    }

    /// The shared-cause part of the periodic evaluation ([`Fleet::evaluate`] runs it after the
    /// silence check; public for the benchmark that times it alone): follows the findings
    /// `events` opened and closed, localizes the causes, opens, updates and closes their
    /// fleet-level findings, and suppresses the terminal findings they explain.
    /// O(failing terminals).
    pub fn evaluate_shared_causes(
        &self,
        now: OffsetDateTime,
        thresholds: &Thresholds,
        events: &mut Vec<FindingEvent>,
    ) {
        self.follow_findings(events);
        let inputs = self.symptom_inputs();
        let open: HashSet<String> = lock(&self.fleet_wide)
            .tracker
            .findings()
            .map(|finding| finding.subject.clone())
            .collect();
        let mut totals =
            |population: Option<&str>, scope: &Scope| self.tallies.total(population, scope);
        let causes = localize::localize(&inputs, &mut totals, &open, thresholds);
        let signals = upstream::evaluate(&causes, thresholds.upstream_min_share_percent);
        let mut next_id = || self.next_id();
        let _suppressing = lock(&self.suppressing);
        let suppressions = {
            let mut fleet_wide = lock(&self.fleet_wide);
            let changes = fleet_wide.tracker.observe_scope(
                "",
                signals,
                now,
                thresholds,
                &mut next_id,
                |kind| kind.category == Category::Upstream,
            );
            fleet_wide.changed = true;
            events.extend(changes);
            Suppressions::from_open(fleet_wide.tracker.findings())
        };
        self.enforce_suppressions(suppressions, events);
    }

    /// Puts `suppressions` (those of the open fleet-wide findings) in force: marks the terminal
    /// findings they explain or no longer explain (as events), and counts what each fleet-wide
    /// finding explains.
    pub(super) fn enforce_suppressions(
        &self,
        suppressions: Suppressions,
        events: &mut Vec<FindingEvent>,
    ) {
        self.set_suppressions(suppressions);
        let explains = self.apply_suppressions(events);
        let mut fleet_wide = lock(&self.fleet_wide);
        for finding in fleet_wide.tracker.findings_mut() {
            finding.explains = explains.get(&finding.id).copied().unwrap_or(0);
        }
    }

    /// Marks every open symptom finding with the fleet-level finding that explains it (or
    /// none), records the changes as events, and counts what each fleet-level finding
    /// explains. Only terminals showing a symptom can hold a suppressed finding, so only they
    /// are visited.
    fn apply_suppressions(&self, events: &mut Vec<FindingEvent>) -> HashMap<u64, u32> {
        let suppressions = self.suppressions();
        let mut explains = HashMap::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let shard = &mut *shard;
            let terminals: HashSet<&Arc<str>> =
                shard.failing.by_symptom.values().flatten().collect();
            for id in terminals {
                let Some(terminal) = shard.terminals.get_mut(id) else {
                    continue;
                };
                let attributes = attributes(terminal);
                let mut changed = false;
                for finding in terminal.findings.findings_mut() {
                    if !symptom_kind(finding.kind) {
                        continue;
                    }
                    let wanted = suppressions.explaining(&attributes, finding);
                    if let Some(cause) = wanted {
                        *explains.entry(cause).or_insert(0) += 1;
                    }
                    if wanted == finding.suppressed_by {
                        continue;
                    }
                    let change = if wanted.is_some() {
                        Change::Suppressed
                    } else {
                        Change::Unsuppressed
                    };
                    finding.suppressed_by = wanted;
                    changed = true;
                    events.push(FindingEvent {
                        change,
                        finding: finding.clone(),
                        replayed: false,
                    });
                }
                if changed {
                    shard.dirty.insert(Arc::clone(id));
                }
            }
        }
        explains
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_diagnosis::test_support::{healthy_report, stage};
    use posmon_diagnosis::{diagnose, Policy};
    use posmon_protocol::{ErrorKind, Report, Stage, StageStatus};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-26 02:00 UTC);
    const REGIONS: [&str; 4] = ["cn-south", "cn-east", "cn-north", "cn-west"];

    /// Terminal `index` of a fleet of four regions and two carriers, its report `sequence`,
    /// failing the payment host or not.
    fn report(index: usize, sequence: u64, host_down: bool) -> Report {
        let mut report = healthy_report();
        report.terminal_id = format!("T-{index}");
        report.sequence = sequence;
        report.observed_at = T0 + time::Duration::seconds(sequence as i64);
        report.labels.region = Some(REGIONS[index % 4].into());
        report.labels.carrier = Some(["cm", "cu"][index / 4 % 2].into());
        report.labels.merchant = Some(format!("M-{}", index / 3));
        if host_down {
            report.probes[0].stages = vec![stage(
                Stage::Tcp,
                StageStatus::Failed,
                Some(ErrorKind::Timeout),
            )];
        }
        report
    }

    fn send(fleet: &Fleet, report: Report) {
        let thresholds = Thresholds::default();
        let policy = Policy {
            versions: &[],
            thresholds: &thresholds,
            roles: &posmon_diagnosis::readiness::PaymentRoles::default(),
        };
        let signals = diagnose(&report, &policy);
        let at = report.observed_at;
        fleet.apply_batch(
            &report.terminal_id.clone(),
            vec![(report, signals)],
            at,
            &thresholds,
        );
    }

    /// Two reports of every terminal (findings of the path open after two), `down` failing.
    fn round(fleet: &Fleet, terminals: usize, sequence: u64, down: impl Fn(usize) -> bool) {
        for step in 0..2 {
            for index in 0..terminals {
                send(fleet, report(index, sequence + step, down(index)));
            }
        }
    }

    fn evidence(finding: &Finding, name: &str) -> String {
        finding
            .evidence
            .iter()
            .find(|evidence| evidence.name == name)
            .map(|evidence| evidence.value.clone())
            .unwrap_or_default()
    }

    fn suppressed(fleet: &Fleet, terminals: usize) -> usize {
        (0..terminals)
            .filter_map(|index| fleet.terminal(&format!("T-{index}")))
            .flat_map(|terminal| terminal.findings.findings().cloned().collect::<Vec<_>>())
            .filter(|finding| finding.suppressed_by.is_some())
            .count()
    }

    #[test]
    fn a_regional_host_outage_is_one_cause_that_follows_the_incident() {
        let fleet = Fleet::new(1000, 10);
        let thresholds = Thresholds::default();
        let terminals = 200;
        let now = |seconds: i64| T0 + time::Duration::minutes(1) + time::Duration::seconds(seconds);
        // Half of cn-south (index % 4 == 0), of both carriers, fails the host, and one
        // terminal elsewhere.
        let down = |index: usize| (index % 4 == 0 && (index / 8) % 2 == 0) || index == 1;
        round(&fleet, terminals, 1, down);
        let events = fleet.evaluate(now(0), &thresholds);
        let opened: Vec<&Finding> = events
            .iter()
            .filter(|event| event.change == Change::Opened)
            .map(|event| &event.finding)
            .filter(|finding| finding.kind.category == Category::Upstream)
            .collect();
        assert_eq!(opened.len(), 1, "{events:#?}");
        let outage = opened[0];
        assert_eq!(outage.kind.code, "upstream.host_outage");
        assert_eq!(outage.kind.party.as_str(), "acquirer");
        assert_eq!(outage.subject, "region=cn-south,target=payment-host");
        assert_eq!(evidence(outage, "symptom"), "env.network.host_unreachable");
        assert_eq!(evidence(outage, "failing_inside"), "26");
        assert_eq!(evidence(outage, "total_inside"), "50");
        assert_eq!(evidence(outage, "failing_outside"), "1");
        assert_eq!(evidence(outage, "total_outside"), "150");
        let id = outage.id;
        // Its 26 findings are suppressed, the one elsewhere is not.
        assert_eq!(suppressed(&fleet, terminals), 26);
        assert_eq!(
            fleet.fleet_wide_findings()[0].explains,
            26,
            "{:?}",
            fleet.fleet_wide_findings()
        );
        let elsewhere = fleet.terminal("T-1").unwrap();
        assert!(elsewhere
            .findings
            .findings()
            .all(|finding| finding.suppressed_by.is_none()));

        // It grows to all of cn-south: the same finding, with new counts.
        round(&fleet, terminals, 3, |index| index % 4 == 0 || index == 1);
        fleet.evaluate(now(1), &thresholds);
        let open = fleet.fleet_wide_findings();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].id, id);
        assert_eq!(evidence(&open[0], "failing_inside"), "50");
        assert_eq!(open[0].explains, 50);
        assert_eq!(suppressed(&fleet, terminals), 50);

        // It ends: the cause closes after three evaluations without it, and nothing stays
        // suppressed.
        round(&fleet, terminals, 5, |_| false);
        for seconds in 2..5 {
            fleet.evaluate(now(seconds), &thresholds);
        }
        assert!(fleet.fleet_wide_findings().is_empty());
        assert_eq!(suppressed(&fleet, terminals), 0);
        assert_eq!(fleet.history_of("", 10).len(), 1);
    }

    #[test]
    fn a_restored_fleet_keeps_its_cause_its_tallies_and_suppresses_new_findings() {
        let fleet = Fleet::new(1000, 10);
        let thresholds = Thresholds::default();
        let now = |seconds: i64| T0 + time::Duration::minutes(1) + time::Duration::seconds(seconds);
        // All of cn-south but T-0 fails the host.
        round(&fleet, 200, 1, |index| index % 4 == 0 && index != 0);
        fleet.evaluate(now(0), &thresholds);
        let cause = fleet.fleet_wide_findings();
        assert_eq!(cause.len(), 1);
        let changes = fleet.take_changes();
        let restored = Fleet::restore(
            super::super::Restored {
                terminals: changes.terminals,
                history: Vec::new(),
                fleet_wide: changes.fleet_wide.unwrap_or_default(),
                next_finding_id: changes.next_finding_id,
                unreadable: Vec::new(),
            },
            1000,
            10,
        );
        let south = Scope(vec![(Dimension::Region, Arc::from("cn-south"))]);
        assert_eq!(restored.tallies.total(Some("payment-host"), &south), 50);
        assert_eq!(restored.tallies.len(), fleet.tallies.len());
        assert_eq!(suppressed(&restored, 200), 49);
        // T-0 fails too now: its new finding is suppressed as it opens.
        send(&restored, report(0, 10, true));
        send(&restored, report(0, 11, true));
        assert_eq!(suppressed(&restored, 200), 50);
        // The evaluation after the restart keeps the same finding.
        restored.evaluate(now(1), &thresholds);
        let after = restored.fleet_wide_findings();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].id, cause[0].id);
        assert_eq!(after[0].explains, 50);
    }

    #[test]
    fn scattered_failures_make_no_cause() {
        let fleet = Fleet::new(1000, 10);
        let thresholds = Thresholds::default();
        // One terminal in 25 fails the host, spread over every region and carrier.
        round(&fleet, 400, 1, |index| index % 25 == 3);
        let events = fleet.evaluate(T0 + time::Duration::minutes(1), &thresholds);
        assert!(fleet.fleet_wide_findings().is_empty(), "{events:#?}");
        assert_eq!(suppressed(&fleet, 400), 0);
    }

    #[test]
    fn the_tallies_follow_label_changes_and_forget_what_no_terminal_holds() {
        let fleet = Fleet::new(1000, 10);
        let region = |name: &str| Scope(vec![(Dimension::Region, Arc::from(name))]);
        for index in 0..8 {
            send(&fleet, report(index, 1, false));
        }
        let keys = fleet.tallies.len();
        assert_eq!(fleet.tallies.total(None, &Scope::default()), 8);
        assert_eq!(
            fleet.tallies.total(Some("payment-host"), &Scope::default()),
            8
        );
        assert_eq!(fleet.tallies.total(None, &region("cn-south")), 2);
        // The same labels again change nothing.
        send(&fleet, report(0, 2, false));
        assert_eq!(fleet.tallies.len(), keys);
        // T-0 moves to a new region: counted there, not in its old one.
        let mut moved = report(0, 3, false);
        moved.labels.region = Some("cn-far".into());
        send(&fleet, moved);
        assert_eq!(fleet.tallies.total(None, &region("cn-south")), 1);
        assert_eq!(fleet.tallies.total(None, &region("cn-far")), 1);
        assert_eq!(fleet.tallies.total(None, &Scope::default()), 8);
        // And back: the keys of cn-far are gone.
        send(&fleet, report(0, 4, false));
        assert_eq!(fleet.tallies.total(None, &region("cn-far")), 0);
        assert_eq!(fleet.tallies.len(), keys);
    }
}
