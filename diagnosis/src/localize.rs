//! Localizing shared causes: given, per symptom (a terminal finding code and its subject), the
//! attribute values of the terminals that show it and the fleet's totals per combination of
//! attribute values, find the smallest combinations whose terminals fail far more than the rest
//! of the fleet — "payment-host in cn-south (41 of 43 failing; elsewhere 0.3 %)".
//!
//! How it differs from the papers it learns from (Adtributor, NSDI 2014: one dimension,
//! explanatory power and surprise; iDice, ICSE 2016: impact pruning, change detection and
//! isolation power; HotSpot, 2018: Monte-Carlo tree search over the ripple effect of forecast
//! deviations; Squeeze, ISSRE 2019: bottom-up clustering of deviations then top-down search by a
//! generalized potential score): those work on real-valued measures against a forecast and must
//! guess which leaves are abnormal. Here every terminal is either showing the symptom or not,
//! and the fleet's totals are exact, so each candidate scope has an exact contingency table
//! (failing / total inside and outside). That allows:
//! - a score that is the F1 of the scope against the failing set (precision: the share failing
//!   inside; recall: the share of the still unexplained failing terminals it covers), which is
//!   what Squeeze's potential score approximates;
//! - four gates every cause must pass: enough failing terminals
//!   (`upstream_min_terminals`), a high failing share inside (`upstream_min_share_percent`), a
//!   large contrast to the background (`upstream_min_contrast`: the failing share of the
//!   terminals outside every cause found, so that two simultaneous causes do not hide each
//!   other), and a binomial significance bound (a Chernoff bound on seeing that many failures inside if the outside
//!   rate held there, corrected for the number of candidates tried), so scattered single faults
//!   never add up to a cause however large the fleet;
//! - the ripple check Squeeze relies on, made exact: a finer scope must fail at least
//!   [`REFINE_CONTRAST`] times more than the rest of each coarser scope it refines, and
//!   significantly so (the same binomial bound), so a fluctuation inside a coarser incident —
//!   or the first few terminals of a growing one that happen to share a carrier — never
//!   becomes a cause of its own;
//! - a resolver is a place only for DNS failures (a carrier's resolver per region would
//!   otherwise tie with the carrier in that region for every symptom);
//! - Occam: among scopes scoring within [`OCCAM_MARGIN`] of the best, the one with the fewest
//!   dimensions wins; between equally coarse ones the dimension that fits the symptom (the
//!   resolver for a DNS failure, the gateway for a dead router, the host's region for a host
//!   that refuses);
//! - several causes per symptom: the best scope is taken, the failing terminals it explains
//!   are set aside, and the search runs again on the rest (precision still counts every failing
//!   terminal inside, so overlapping incidents are told apart);
//! - stability over time: a scope that is open already keeps a bonus ([`STICKY_BONUS`]) and
//!   stays a cause down to half the share, so a growing or shrinking incident keeps its subject
//!   while its scope stays.
//!
//! The search space is bounded by the domain: the symptom's population (the terminals probing
//! its target, or all terminals) and combinations of at most two attribute values among the
//! broad dimensions, plus a merchant with one of its gateway subnets (a shop's router); the
//! target itself is the third dimension of a host symptom. Only combinations that some failing
//! terminal has are candidates, so the work is proportional to the failing terminals, never to
//! the fleet.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::thresholds::Thresholds;
use crate::Severity;

/// Among scopes scoring within this of the best, the coarsest (fewest dimensions) wins.
pub const OCCAM_MARGIN: f64 = 0.05;
/// A scope that is open already scores this much more, so an incident keeps its subject.
pub const STICKY_BONUS: f64 = 0.1;
/// The significance a cause needs, in nats: a false cause from chance alone at most about once
/// in a million evaluations (before the correction for the candidates tried).
pub const SIGNIFICANCE_NATS: f64 = 13.8;
/// Causes looked for per symptom at most.
pub const MAX_CAUSES_PER_SYMPTOM: usize = 4;
/// How many times the failing share of the rest of each coarser scope a finer scope's share
/// must be.
pub const REFINE_CONTRAST: f64 = 2.0;
/// The one symptom a resolver can cause.
const DNS_FAILURE: &str = "env.network.dns_failure";
/// Where nothing fails outside, the outside rate taken for the significance bound.
const OUTSIDE_RATE_FLOOR: f64 = 1e-4;

/// An attribute dimension of a terminal (the symptom's `target` aside), in the order of their
/// names, which is the canonical order of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Carrier,
    Firmware,
    Gateway,
    Merchant,
    Model,
    PosApp,
    Region,
    Resolver,
}

/// How many attribute dimensions there are.
pub const DIMENSIONS: usize = 8;

impl Dimension {
    pub const ALL: [Dimension; DIMENSIONS] = [
        Dimension::Carrier,
        Dimension::Firmware,
        Dimension::Gateway,
        Dimension::Merchant,
        Dimension::Model,
        Dimension::PosApp,
        Dimension::Region,
        Dimension::Resolver,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Carrier => "carrier",
            Dimension::Firmware => "firmware",
            Dimension::Gateway => "gateway",
            Dimension::Merchant => "merchant",
            Dimension::Model => "model",
            Dimension::PosApp => "pos_app",
            Dimension::Region => "region",
            Dimension::Resolver => "resolver",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    fn from_name(name: &str) -> Option<Dimension> {
        Dimension::ALL
            .into_iter()
            .find(|dimension| dimension.name() == name)
    }

    /// The broad dimensions, which pair with each other. A merchant pairs only with a gateway
    /// subnet (one of its shops), and a gateway subnet means nothing alone (`192.168.1.0/24`
    /// is in thousands of shops).
    fn broad(self) -> bool {
        !matches!(self, Dimension::Merchant | Dimension::Gateway)
    }
}

/// A terminal's attribute values, by [`Dimension::index`].
pub type Attributes = [Option<Arc<str>>; DIMENSIONS];

/// A combination of at most two attribute values, sorted by dimension; empty: the whole
/// population.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(pub Vec<(Dimension, Arc<str>)>);

impl Scope {
    pub fn dimensions(&self) -> usize {
        self.0.len()
    }

    pub fn has(&self, dimension: Dimension) -> bool {
        self.0.iter().any(|(d, _)| *d == dimension)
    }

    /// Whether a terminal with these attributes is inside.
    pub fn contains(&self, attributes: &Attributes) -> bool {
        self.0.iter().all(|(dimension, value)| {
            attributes[dimension.index()]
                .as_deref()
                .is_some_and(|have| have == &**value)
        })
    }
}

/// Every scope a terminal with these attributes is inside (the empty scope first), up to
/// `max_dimensions` (1 or 2) values: what the fleet's tallies count and what the search tries.
pub fn scopes_of(attributes: &Attributes, max_dimensions: usize) -> Vec<Scope> {
    let present: Vec<(Dimension, &Arc<str>)> = Dimension::ALL
        .into_iter()
        .filter_map(|dimension| {
            attributes[dimension.index()]
                .as_ref()
                .map(|value| (dimension, value))
        })
        .collect();
    let mut scopes = Vec::with_capacity(1 + present.len() * (present.len() + 1) / 2);
    scopes.push(Scope::default());
    for (dimension, value) in &present {
        if *dimension != Dimension::Gateway {
            scopes.push(Scope(vec![(*dimension, Arc::clone(value))]));
        }
    }
    if max_dimensions >= 2 {
        for (i, (first, first_value)) in present.iter().enumerate() {
            for (second, second_value) in &present[i + 1..] {
                let pairs = (first.broad() && second.broad())
                    || (*first == Dimension::Gateway && *second == Dimension::Merchant);
                if pairs {
                    scopes.push(Scope(vec![
                        (*first, Arc::clone(first_value)),
                        (*second, Arc::clone(second_value)),
                    ]));
                }
            }
        }
    }
    scopes
}

/// What terminals show: a finding code and its subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symptom {
    pub code: &'static str,
    pub subject: Arc<str>,
}

impl Symptom {
    /// The target whose probers are the symptom's population (a path finding about one
    /// target), or none: every terminal could show it.
    pub fn target(&self) -> Option<&str> {
        (self.code.starts_with("env.network.") && !self.subject.is_empty())
            .then_some(&*self.subject)
    }
}

/// One symptom and the terminals showing it.
#[derive(Debug, Clone)]
pub struct SymptomInput {
    pub symptom: Symptom,
    /// The worst severity among the terminals' findings.
    pub severity: Severity,
    pub failing: Vec<Attributes>,
}

/// A localized cause of one symptom, with its contingency table.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub symptom: Symptom,
    pub severity: Severity,
    pub scope: Scope,
    pub failing_inside: u64,
    pub total_inside: u64,
    pub failing_outside: u64,
    pub total_outside: u64,
}

impl Cause {
    /// The canonical subject: `dim=value` pairs sorted by dimension name, joined with `,`;
    /// `target=` included when the cause is the host's (a scope of the target alone or with a
    /// region), since then the host is what failed. Other scopes (a carrier, a model, a
    /// resolver…) are the cause whatever the target, so the target is left out and the same
    /// cause seen on several targets is one.
    pub fn subject(&self) -> String {
        subject_of(&self.scope, self.host_target())
    }

    /// The target, when the host is the cause.
    pub fn host_target(&self) -> Option<&str> {
        let host_scope = self
            .scope
            .0
            .iter()
            .all(|(dimension, _)| *dimension == Dimension::Region);
        self.symptom.target().filter(|_| host_scope)
    }
}

/// The canonical subject of a scope (and a target).
pub fn subject_of(scope: &Scope, target: Option<&str>) -> String {
    let mut subject = String::new();
    for (dimension, value) in &scope.0 {
        if !subject.is_empty() {
            subject.push(',');
        }
        let _ = write!(subject, "{}={}", dimension.name(), value);
    }
    if let Some(target) = target {
        if !subject.is_empty() {
            subject.push(',');
        }
        let _ = write!(subject, "target={target}");
    }
    subject
}

/// A canonical subject read back: its scope and target. `None` for anything else (a subject
/// of an older format, a value holding `,` or `=`).
pub fn parse_subject(subject: &str) -> Option<(Scope, Option<Arc<str>>)> {
    let mut scope = Vec::new();
    let mut target = None;
    for pair in subject.split(',').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=')?;
        if value.contains('=') {
            return None;
        }
        if name == "target" {
            target = Some(Arc::from(value));
        } else {
            scope.push((Dimension::from_name(name)?, Arc::from(value)));
        }
    }
    scope.sort();
    Some((Scope(scope), target))
}

/// The dimensions that fit a symptom, most fitting first: on a tie the cause is put where the
/// symptom points (the resolver for a DNS failure, the shop for a dead router).
fn preference(symptom: &Symptom, dimension: Dimension) -> usize {
    let order: &[Dimension] = match symptom.code {
        DNS_FAILURE => &[
            Dimension::Resolver,
            Dimension::Carrier,
            Dimension::Region,
            Dimension::Merchant,
            Dimension::Gateway,
        ],
        "env.network.link_down" | "env.network.gateway_unreachable" => &[
            Dimension::Merchant,
            Dimension::Gateway,
            Dimension::Carrier,
            Dimension::Region,
        ],
        "terminal.silent" => &[
            Dimension::Carrier,
            Dimension::Region,
            Dimension::Merchant,
            Dimension::Gateway,
        ],
        code if code.starts_with("env.network.") => &[
            Dimension::Region,
            Dimension::Carrier,
            Dimension::Resolver,
            Dimension::Merchant,
            Dimension::Gateway,
        ],
        _ => &[
            Dimension::PosApp,
            Dimension::Firmware,
            Dimension::Model,
            Dimension::Merchant,
        ],
    };
    order
        .iter()
        .position(|d| *d == dimension)
        .unwrap_or(order.len() + dimension.index())
}

/// The KL divergence of Bernoulli(q) from Bernoulli(p), in nats.
fn divergence(q: f64, p: f64) -> f64 {
    let term = |a: f64, b: f64| if a <= 0.0 { 0.0 } else { a * (a / b).ln() };
    term(q, p) + term(1.0 - q, 1.0 - p)
}

/// One candidate's standing in a round of the search.
struct Candidate<'a> {
    scope: &'a Scope,
    all_inside: u64,
    new_inside: u64,
    total_inside: u64,
    score: f64,
    sticky: bool,
}

/// Localizes the causes of every symptom. `totals(target, scope)` is the number of terminals of
/// the population (the target's probers, or every terminal for `None`) inside `scope`; `open`
/// holds the subjects of the causes open now (for stickiness).
pub fn localize(
    inputs: &[SymptomInput],
    totals: &mut dyn FnMut(Option<&str>, &Scope) -> u64,
    open: &HashSet<String>,
    thresholds: &Thresholds,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    for input in inputs {
        localize_one(input, totals, open, thresholds, &mut causes);
    }
    causes
}

fn localize_one(
    input: &SymptomInput,
    totals: &mut dyn FnMut(Option<&str>, &Scope) -> u64,
    open: &HashSet<String>,
    thresholds: &Thresholds,
    causes: &mut Vec<Cause>,
) {
    let min_terminals = u64::from(thresholds.upstream_min_terminals);
    let failing = input.failing.len();
    if (failing as u64) < min_terminals {
        return;
    }
    let max_dimensions = thresholds.upstream_max_dimensions.clamp(1, 2) as usize;
    let target = input.symptom.target();
    // Each failing terminal's scopes, and every failing terminal inside each scope.
    let per_terminal: Vec<Vec<Scope>> = input
        .failing
        .iter()
        .map(|attributes| scopes_of(attributes, max_dimensions))
        .collect();
    let mut all_inside: HashMap<&Scope, u64> = HashMap::new();
    for scopes in &per_terminal {
        for scope in scopes {
            *all_inside.entry(scope).or_insert(0) += 1;
        }
    }
    // Without a target, the whole population is no place: "everything fails" is the
    // collector's own view, not a shared cause. A resolver can only fail name lookups: for any
    // other symptom it is no place either (a carrier's resolver per region would otherwise
    // tie with the carrier in that region).
    let dns = input.symptom.code == DNS_FAILURE;
    let counts = all_inside.clone();
    all_inside.retain(|scope, count| {
        *count >= min_terminals
            && (target.is_some() || scope.dimensions() > 0)
            && (dns || !scope.has(Dimension::Resolver))
    });
    if all_inside.is_empty() {
        return;
    }
    let population = totals(target, &Scope::default()).max(failing as u64);
    let mut total_of: HashMap<&Scope, u64> = all_inside
        .iter()
        .map(|(scope, count)| (*scope, totals(target, scope).max(*count).min(population)))
        .collect();
    let whole = &per_terminal[0][0];
    total_of.insert(whole, population);
    // A finer scope must fail clearly more than the rest of each coarser scope it refines:
    // otherwise it is a chance fluctuation inside a coarser incident (or a coarser incident
    // under the threshold), not a cause of its own.
    let refines_clearly = |scope: &Scope| {
        let all = counts.get(scope).copied().unwrap_or(0);
        let total = total_of.get(scope).copied().unwrap_or(0).max(1);
        let precision = all as f64 / total as f64;
        parents(scope).iter().all(|parent| {
            let parent_all = if parent.dimensions() == 0 {
                Some(failing as u64)
            } else {
                counts.get(parent).copied()
            };
            let parent_total = total_of.get(parent).copied();
            let (Some(parent_all), Some(parent_total)) = (parent_all, parent_total) else {
                // A parent that is no scope of its own (a gateway subnet alone).
                return true;
            };
            let rest_total = parent_total.saturating_sub(total);
            if rest_total == 0 {
                // The same terminals: the coarser scope says it with fewer values.
                return false;
            }
            let rest_rate = parent_all.saturating_sub(all) as f64 / rest_total as f64;
            // And significantly so: at the onset of a growing incident a few terminals that
            // happen to share a carrier must not make a carrier outage of a host outage.
            let evidence = total as f64 * divergence(precision, rest_rate.max(OUTSIDE_RATE_FLOOR));
            precision >= REFINE_CONTRAST * rest_rate && evidence >= SIGNIFICANCE_NATS
        })
    };
    let clear: HashSet<&Scope> = all_inside
        .keys()
        .copied()
        .filter(|scope| refines_clearly(scope))
        .collect();
    all_inside.retain(|scope, _| clear.contains(scope));
    let correction = (all_inside.len().max(1) as f64).ln();
    let mut explained = vec![false; failing];
    let mut found = Vec::new();
    for _ in 0..MAX_CAUSES_PER_SYMPTOM {
        let remaining = explained.iter().filter(|done| !**done).count() as u64;
        if remaining < min_terminals {
            break;
        }
        let mut new_inside: HashMap<&Scope, u64> = HashMap::new();
        for (scopes, done) in per_terminal.iter().zip(&explained) {
            if *done {
                continue;
            }
            for scope in scopes {
                if all_inside.contains_key(scope) {
                    *new_inside.entry(scope).or_insert(0) += 1;
                }
            }
        }
        let mut candidates = Vec::new();
        for (scope, new) in new_inside {
            if new < min_terminals {
                continue;
            }
            let all = all_inside[scope];
            let total = total_of[scope];
            let precision = all as f64 / total as f64;
            let recall = new as f64 / remaining as f64;
            let subject = subject_of(scope, target.filter(|_| host_scope(scope)));
            let sticky = open.contains(&subject);
            let min_share = thresholds.upstream_min_share_percent / 100.0;
            let min_share = if sticky { min_share / 2.0 } else { min_share };
            if precision < min_share {
                continue;
            }
            // Significance against the rest (which may hold another cause: the contrast to
            // the background is judged once all causes are known).
            let outside_total = population.saturating_sub(total);
            if outside_total > 0 {
                let outside_failing = remaining - new;
                let outside_rate = outside_failing as f64 / outside_total as f64;
                let evidence =
                    total as f64 * divergence(precision, outside_rate.max(OUTSIDE_RATE_FLOOR));
                if precision <= outside_rate || evidence < SIGNIFICANCE_NATS + correction {
                    continue;
                }
            }
            let f1 = 2.0 * precision * recall / (precision + recall);
            candidates.push(Candidate {
                scope,
                all_inside: all,
                new_inside: new,
                total_inside: total,
                score: f1 + if sticky { STICKY_BONUS } else { 0.0 },
                sticky,
            });
        }
        let Some(best) = candidates.iter().map(|c| c.score).reduce(f64::max) else {
            break;
        };
        let symptom = &input.symptom;
        let rank = |candidate: &Candidate<'_>| {
            let fit = candidate
                .scope
                .0
                .iter()
                .map(|(dimension, _)| preference(symptom, *dimension))
                .min()
                .unwrap_or(0);
            (candidate.scope.dimensions(), !candidate.sticky, fit)
        };
        let Some(chosen) = candidates
            .iter()
            .filter(|candidate| candidate.score >= best - OCCAM_MARGIN)
            .min_by(|a, b| {
                rank(a)
                    .cmp(&rank(b))
                    .then(b.score.total_cmp(&a.score))
                    .then(a.scope.cmp(b.scope))
            })
        else {
            break;
        };
        for ((scopes, done), _) in per_terminal.iter().zip(&mut explained).zip(0..) {
            if !*done && scopes.contains(chosen.scope) {
                *done = true;
            }
        }
        let outside_failing = (failing as u64).saturating_sub(chosen.all_inside);
        found.push(Cause {
            symptom: symptom.clone(),
            severity: input.severity,
            scope: chosen.scope.clone(),
            failing_inside: chosen.all_inside,
            total_inside: chosen.total_inside,
            failing_outside: outside_failing,
            total_outside: population.saturating_sub(chosen.total_inside),
        });
        debug_assert!(chosen.new_inside >= min_terminals);
    }
    // The contrast: each cause against the background, the failing terminals no cause explains
    // over the terminals outside every cause.
    let unexplained = explained.iter().filter(|done| !**done).count() as f64;
    let covered: u64 = found.iter().map(|cause| cause.total_inside).sum();
    let background_total = population.saturating_sub(covered);
    let background = if background_total == 0 {
        0.0
    } else {
        unexplained / background_total as f64
    };
    causes.extend(found.into_iter().filter(|cause| {
        let precision = cause.failing_inside as f64 / cause.total_inside.max(1) as f64;
        precision >= thresholds.upstream_min_contrast * background
    }));
}

/// The scopes one value coarser.
fn parents(scope: &Scope) -> Vec<Scope> {
    (0..scope.0.len())
        .map(|skip| {
            Scope(
                scope
                    .0
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| *index != skip)
                    .map(|(_, value)| value.clone())
                    .collect(),
            )
        })
        .collect()
}

fn host_scope(scope: &Scope) -> bool {
    scope
        .0
        .iter()
        .all(|(dimension, _)| *dimension == Dimension::Region)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic terminal: its attributes, the targets it probes, and the symptoms it shows.
    #[derive(Clone)]
    struct Sim {
        attributes: Attributes,
        failing: Vec<Symptom>,
    }

    fn host(code: &'static str) -> Symptom {
        Symptom {
            code,
            subject: Arc::from("payment-host"),
        }
    }

    const UNREACHABLE: &str = "env.network.host_unreachable";

    /// A fleet of `n` terminals with attributes drawn deterministically from the index:
    /// 6 regions, 3 carriers, 4 models (each with its firmware), 3 app versions, 3 terminals per
    /// merchant, 2 gateway subnets, a resolver per (carrier, region).
    fn fleet(n: usize) -> Vec<Sim> {
        (0..n)
            .map(|i| {
                let mix = |salt: usize| (i.wrapping_mul(2_654_435_761) >> salt) ^ (i / 7);
                let region = format!("r{}", mix(3) % 6);
                let carrier = format!("c{}", mix(7) % 3);
                let model = mix(11) % 4;
                let app = if mix(13) % 10 < 7 { "3.2" } else { "3.1" };
                let value = |text: String| Some(Arc::<str>::from(text));
                let mut attributes: Attributes = Default::default();
                attributes[Dimension::Region.index()] = value(region.clone());
                attributes[Dimension::Carrier.index()] = value(carrier.clone());
                attributes[Dimension::Model.index()] = value(format!("m{model}"));
                attributes[Dimension::Firmware.index()] = value(format!("fw{model}.{}", i % 2));
                attributes[Dimension::PosApp.index()] = value(app.to_string());
                attributes[Dimension::Merchant.index()] = value(format!("M{}", i / 3));
                attributes[Dimension::Gateway.index()] =
                    value(format!("192.168.{}.0/24", mix(17) % 2));
                attributes[Dimension::Resolver.index()] = value(format!("dns-{carrier}-{region}"));
                Sim {
                    attributes,
                    failing: Vec::new(),
                }
            })
            .collect()
    }

    fn is(sim: &Sim, dimension: Dimension, value: &str) -> bool {
        sim.attributes[dimension.index()].as_deref() == Some(value)
    }

    /// A uniform draw in [0, 1) from an index (SplitMix64).
    fn draw(index: usize) -> f64 {
        let mut z = (index as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Makes a random `share` of the terminals `inside` selects show `symptom`; a larger share
    /// hits a superset (each terminal's draw is fixed).
    fn fail(fleet: &mut [Sim], symptom: &Symptom, share: f64, inside: impl Fn(&Sim) -> bool) {
        for (index, sim) in fleet.iter_mut().enumerate() {
            if inside(sim) && draw(index) < share && !sim.failing.contains(symptom) {
                sim.failing.push(symptom.clone());
            }
        }
    }

    /// Scattered single faults: every `every`-th terminal (by a hash of its index) shows it.
    fn scatter(fleet: &mut [Sim], symptom: &Symptom, every: usize) {
        for (i, sim) in fleet.iter_mut().enumerate() {
            if (i.wrapping_mul(40_503) >> 4) % every == 0 {
                sim.failing.push(symptom.clone());
            }
        }
    }

    fn run(fleet: &[Sim], open: &HashSet<String>) -> Vec<Cause> {
        let mut inputs: HashMap<Symptom, SymptomInput> = HashMap::new();
        for sim in fleet {
            for symptom in &sim.failing {
                inputs
                    .entry(symptom.clone())
                    .or_insert_with(|| SymptomInput {
                        symptom: symptom.clone(),
                        severity: Severity::Critical,
                        failing: Vec::new(),
                    })
                    .failing
                    .push(sim.attributes.clone());
            }
        }
        let mut inputs: Vec<SymptomInput> = inputs.into_values().collect();
        inputs.sort_by(|a, b| a.symptom.cmp(&b.symptom));
        // Every terminal probes payment-host; the population is the whole fleet either way.
        // Counted like the collector's tallies: every scope of every terminal.
        let mut counts: HashMap<Scope, u64> = HashMap::new();
        for sim in fleet {
            for scope in scopes_of(&sim.attributes, 2) {
                *counts.entry(scope).or_insert(0) += 1;
            }
        }
        let mut totals = |_: Option<&str>, scope: &Scope| counts.get(scope).copied().unwrap_or(0);
        localize(&inputs, &mut totals, open, &Thresholds::default())
    }

    fn subjects(causes: &[Cause]) -> Vec<(String, &'static str)> {
        let mut subjects: Vec<(String, &'static str)> = causes
            .iter()
            .map(|cause| (cause.subject(), cause.symptom.code))
            .collect();
        subjects.sort();
        subjects
    }

    #[test]
    fn the_tables_of_synthetic_fleets() {
        let dns = host("env.network.dns_failure");
        let unreachable = host(UNREACHABLE);
        let tls = host("env.network.tls_failure");
        let silent = Symptom {
            code: "terminal.silent",
            subject: Arc::from(""),
        };
        let reader = Symptom {
            code: "env.hardware.peripheral_missing",
            subject: Arc::from("card_reader"),
        };
        let gateway = Symptom {
            code: "env.network.gateway_unreachable",
            subject: Arc::from(""),
        };
        type Case = (
            &'static str,
            Box<dyn Fn(&mut Vec<Sim>)>,
            Vec<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "regional host outage with background noise",
                Box::new({
                    let unreachable = unreachable.clone();
                    move |f| {
                        fail(f, &unreachable, 0.95, |s| is(s, Dimension::Region, "r2"));
                        scatter(f, &unreachable, 300);
                    }
                }),
                vec![("region=r2,target=payment-host", UNREACHABLE)],
            ),
            (
                "the host down everywhere",
                Box::new({
                    let unreachable = unreachable.clone();
                    move |f| fail(f, &unreachable, 0.9, |_| true)
                }),
                vec![("target=payment-host", UNREACHABLE)],
            ),
            (
                "carrier in one region, silent",
                Box::new({
                    let silent = silent.clone();
                    move |f| {
                        fail(f, &silent, 0.8, |s| {
                            is(s, Dimension::Carrier, "c1") && is(s, Dimension::Region, "r4")
                        })
                    }
                }),
                vec![("carrier=c1,region=r4", "terminal.silent")],
            ),
            (
                "one model loses its card reader",
                Box::new({
                    let reader = reader.clone();
                    move |f| fail(f, &reader, 0.7, |s| is(s, Dimension::Model, "m3"))
                }),
                vec![("model=m3", "env.hardware.peripheral_missing")],
            ),
            (
                "one firmware breaks TLS",
                Box::new({
                    let tls = tls.clone();
                    move |f| {
                        fail(f, &tls, 1.0, |s| is(s, Dimension::Firmware, "fw1.1"));
                        scatter(f, &tls, 500);
                    }
                }),
                vec![("firmware=fw1.1", "env.network.tls_failure")],
            ),
            (
                "an app version fails the host",
                Box::new({
                    let tls = tls.clone();
                    move |f| fail(f, &tls, 0.9, |s| is(s, Dimension::PosApp, "3.1"))
                }),
                vec![("pos_app=3.1", "env.network.tls_failure")],
            ),
            (
                "one merchant's shops lose their router",
                Box::new({
                    let gateway = gateway.clone();
                    move |f| {
                        fail(f, &gateway, 1.0, |s| {
                            is(s, Dimension::Merchant, "M7") || is(s, Dimension::Merchant, "M8")
                        });
                        scatter(f, &gateway, 400);
                    }
                }),
                // M7 and M8 have three terminals each: too few alone, so nothing.
                vec![],
            ),
            (
                "a resolver fails",
                Box::new({
                    let dns = dns.clone();
                    move |f| {
                        fail(f, &dns, 1.0, |s| {
                            is(s, Dimension::Resolver, "dns-c0-r1")
                                || is(s, Dimension::Resolver, "dns-c2-r5")
                        })
                    }
                }),
                // Each resolver is one carrier in one region: the DNS symptom puts the cause
                // at the resolver.
                vec![
                    ("resolver=dns-c0-r1", "env.network.dns_failure"),
                    ("resolver=dns-c2-r5", "env.network.dns_failure"),
                ],
            ),
            (
                "two overlapping causes of one symptom: a region and a model",
                Box::new({
                    let unreachable = unreachable.clone();
                    move |f| {
                        fail(f, &unreachable, 1.0, |s| is(s, Dimension::Region, "r0"));
                        fail(f, &unreachable, 1.0, |s| is(s, Dimension::Model, "m2"));
                    }
                }),
                vec![
                    ("model=m2", UNREACHABLE),
                    ("region=r0,target=payment-host", UNREACHABLE),
                ],
            ),
            (
                "two independent symptoms at once",
                Box::new({
                    let unreachable = unreachable.clone();
                    let silent = silent.clone();
                    move |f| {
                        fail(f, &unreachable, 0.9, |s| is(s, Dimension::Region, "r3"));
                        fail(f, &silent, 0.9, |s| {
                            is(s, Dimension::Carrier, "c2") && is(s, Dimension::Region, "r3")
                        });
                    }
                }),
                vec![
                    ("carrier=c2,region=r3", "terminal.silent"),
                    ("region=r3,target=payment-host", UNREACHABLE),
                ],
            ),
            (
                "random noise: 1 % of a large fleet, several symptoms",
                Box::new({
                    let unreachable = unreachable.clone();
                    let silent = silent.clone();
                    let gateway = gateway.clone();
                    move |f| {
                        scatter(f, &unreachable, 100);
                        scatter(f, &silent, 97);
                        scatter(f, &gateway, 101);
                    }
                }),
                vec![],
            ),
        ];
        for (name, play, expected) in cases {
            let mut sims = fleet(3000);
            play(&mut sims);
            let causes = run(&sims, &HashSet::new());
            let got = subjects(&causes);
            let expected: Vec<(String, &str)> = expected
                .into_iter()
                .map(|(subject, code)| (subject.to_string(), code))
                .collect();
            assert_eq!(got, expected, "{name}: {causes:#?}");
        }
    }

    #[test]
    fn random_noise_in_a_large_fleet_with_large_merchants_is_no_cause() {
        // 20 000 terminals, merchants of ten, 3 % of them failing each symptom at random.
        let mut sims = fleet(20_000);
        for (index, sim) in sims.iter_mut().enumerate() {
            sim.attributes[Dimension::Merchant.index()] =
                Some(Arc::from(format!("M{}", index / 10)));
        }
        for (salt, symptom) in [
            host(UNREACHABLE),
            host("env.network.dns_failure"),
            Symptom {
                code: "env.network.gateway_unreachable",
                subject: Arc::from(""),
            },
        ]
        .into_iter()
        .enumerate()
        {
            for (index, sim) in sims.iter_mut().enumerate() {
                if draw(index * 7 + salt) < 0.03 {
                    sim.failing.push(symptom.clone());
                }
            }
        }
        let causes = run(&sims, &HashSet::new());
        assert!(causes.is_empty(), "{causes:#?}");
    }

    #[test]
    fn a_merchant_outage_needs_enough_terminals() {
        // A merchant with eight terminals (two shops of four) loses one shop's router.
        let mut sims = fleet(600);
        for (i, sim) in sims.iter_mut().take(8).enumerate() {
            sim.attributes[Dimension::Merchant.index()] = Some(Arc::from("BIG"));
            sim.attributes[Dimension::Gateway.index()] =
                Some(Arc::from(if i < 5 { "10.0.1.0/24" } else { "10.0.2.0/24" }));
        }
        let gateway = Symptom {
            code: "env.network.gateway_unreachable",
            subject: Arc::from(""),
        };
        fail(&mut sims, &gateway, 1.0, |s| {
            is(s, Dimension::Gateway, "10.0.1.0/24") && is(s, Dimension::Merchant, "BIG")
        });
        let causes = run(&sims, &HashSet::new());
        assert_eq!(
            subjects(&causes),
            [(
                "gateway=10.0.1.0/24,merchant=BIG".to_string(),
                "env.network.gateway_unreachable"
            )]
        );
        // The whole merchant down: the merchant, not one shop.
        fail(&mut sims, &gateway, 1.0, |s| {
            is(s, Dimension::Merchant, "BIG")
        });
        let causes = run(&sims, &HashSet::new());
        assert_eq!(
            subjects(&causes),
            [(
                "merchant=BIG".to_string(),
                "env.network.gateway_unreachable"
            )]
        );
    }

    #[test]
    fn the_demo_numbers_name_the_region_with_its_evidence() {
        // 300 terminals, 45 of them in r2; 43 of those fail the host, and one elsewhere.
        let mut sims = fleet(300);
        let unreachable = host(UNREACHABLE);
        fail(&mut sims, &unreachable, 0.96, |s| {
            is(s, Dimension::Region, "r2")
        });
        let outside = sims
            .iter()
            .position(|s| !is(s, Dimension::Region, "r2"))
            .unwrap();
        sims[outside].failing.push(unreachable.clone());
        let causes = run(&sims, &HashSet::new());
        assert_eq!(causes.len(), 1, "{causes:#?}");
        let cause = &causes[0];
        assert_eq!(cause.subject(), "region=r2,target=payment-host");
        let in_region = sims
            .iter()
            .filter(|s| is(s, Dimension::Region, "r2"))
            .count() as u64;
        assert_eq!(cause.total_inside, in_region);
        assert_eq!(cause.total_outside, 300 - in_region);
        assert_eq!(cause.failing_outside, 1);
        assert!(cause.failing_inside * 100 >= 90 * in_region, "{cause:?}");
    }

    #[test]
    fn a_slowly_growing_incident_keeps_one_subject_once_found() {
        let unreachable = host(UNREACHABLE);
        let mut open = HashSet::new();
        let mut seen: Vec<String> = Vec::new();
        for step in 1..=10 {
            let mut sims = fleet(3000);
            fail(&mut sims, &unreachable, f64::from(step) / 10.0, |s| {
                is(s, Dimension::Region, "r1")
            });
            let causes = run(&sims, &open);
            assert!(causes.len() <= 1, "step {step}: {causes:#?}");
            open = causes.iter().map(Cause::subject).collect();
            if let Some(cause) = causes.first() {
                if seen.last() != Some(&cause.subject()) {
                    seen.push(cause.subject());
                }
            }
        }
        assert_eq!(seen, ["region=r1,target=payment-host"]);
        // And shrinking back, the open subject stays down to half the share.
        let mut sims = fleet(3000);
        fail(&mut sims, &unreachable, 0.2, |s| {
            is(s, Dimension::Region, "r1")
        });
        assert_eq!(subjects(&run(&sims, &open)).len(), 1);
        assert!(run(&sims, &HashSet::new()).is_empty());
    }

    #[test]
    fn the_onset_of_a_regional_outage_is_no_carrier_outage() {
        // The demo's onset: 11 of a region's 50 terminals have opened their findings so far,
        // 7 of them of one carrier (16 terminals there): under the share for the region, and
        // the carrier's excess is no evidence of a carrier outage.
        let mut sims = fleet(300);
        let unreachable = host(UNREACHABLE);
        let in_region: Vec<usize> = (0..sims.len())
            .filter(|index| is(&sims[*index], Dimension::Region, "r2"))
            .collect();
        let (carrier, other): (Vec<usize>, Vec<usize>) = in_region
            .iter()
            .partition(|index| is(&sims[**index], Dimension::Carrier, "c1"));
        for index in carrier.iter().take(7).chain(other.iter().take(4)) {
            sims[*index].failing.push(unreachable.clone());
        }
        let causes = run(&sims, &HashSet::new());
        assert!(causes.is_empty(), "{causes:#?}");
    }

    #[test]
    fn subjects_read_back() {
        let scope = Scope(vec![
            (Dimension::Carrier, Arc::from("china-mobile")),
            (Dimension::Region, Arc::from("cn-east")),
        ]);
        let subject = subject_of(&scope, Some("payment-host"));
        assert_eq!(
            subject,
            "carrier=china-mobile,region=cn-east,target=payment-host"
        );
        assert_eq!(
            parse_subject(&subject),
            Some((scope, Some(Arc::from("payment-host"))))
        );
        assert_eq!(parse_subject("pay.example:443"), None);
        assert_eq!(parse_subject("china-mobile/cn-east"), None);
        assert_eq!(parse_subject("colour=red"), None);
    }
}
