//! Scoring one case from what the collector's API showed: precision, recall and F1 of the
//! fleet-level causes and of the per-terminal parties, the time from onset to the right
//! finding, and the readiness of the terminals hit. Pure: the runner gives the polls.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::cases::Case;
use crate::fleet::SimTerminal;

/// One open finding as the API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: u64,
    /// Empty for a fleet-level finding.
    pub terminal_id: String,
    pub code: String,
    pub party: String,
    pub subject: String,
    pub suppressed_by: Option<u64>,
}

/// The open findings at one instant of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    /// Seconds since the start of the run.
    pub at_seconds: f64,
    pub findings: Vec<Observed>,
}

/// True positives, false positives, false negatives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.true_positives += other.true_positives;
        self.false_positives += other.false_positives;
        self.false_negatives += other.false_negatives;
    }

    /// 1 when nothing was found and nothing was expected.
    pub fn precision(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    pub fn recall(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }

    pub fn f1(&self) -> f64 {
        let (precision, recall) = (self.precision(), self.recall());
        if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

/// How one case scored.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CaseScore {
    pub name: String,
    /// Fleet-level causes open at the end vs the expected ones.
    pub causes: Counts,
    /// (terminal, party) pairs at the end: the parties of each terminal's open findings (a
    /// suppressed finding counts with the party of the cause that explains it) vs the parties
    /// the incidents expect for the terminals they hit.
    pub terminals: Counts,
    /// Terminals hit by the case's incidents.
    pub hit_terminals: u64,
    /// Seconds from the onset until every expected cause was open (or, without expected
    /// causes, until every hit terminal showed its party); `None`: never, or nothing to find.
    pub detect_seconds: Option<f64>,
    /// Whether there was something to find.
    pub expects_finding: bool,
    /// Expected causes not open at the end.
    pub missed_causes: Vec<String>,
    /// Fleet-level causes that were open at some point and are not expected (`scope → party`).
    pub wrong_causes_ever: Vec<String>,
    /// Hit terminals whose readiness was as expected, of those checked; `None` when the API
    /// shows no readiness.
    pub readiness_right: Option<(u64, u64)>,
    /// Distinct findings (terminal and fleet-level) open at any poll.
    pub findings_seen: u64,
    /// The case is a healthy fleet (any finding is wrong).
    pub healthy: bool,
    /// A few wrong or missing (terminal, party) pairs, to read.
    pub terminal_mistakes: Vec<String>,
}

/// Which terminal ids each expected party applies to at `at_seconds` (the terminals each
/// incident hits then, or, for an incident already over, in its last instant).
pub fn expected_pairs(
    case: &Case,
    seed: u64,
    id_prefix: &str,
    at_seconds: f64,
) -> (BTreeSet<(String, String)>, BTreeMap<String, String>, u64) {
    let mut pairs = BTreeSet::new();
    let mut readiness = BTreeMap::new();
    let mut hit = BTreeSet::new();
    for index in 0..case.terminals {
        let terminal = SimTerminal::new(seed, id_prefix, index);
        for (position, expected) in case.incidents.iter().enumerate() {
            let incident = &expected.incident;
            let end = incident.start_seconds + incident.duration_seconds;
            let when = at_seconds.min(end - 1e-3);
            if !incident.covers(seed, position, &terminal, when) {
                continue;
            }
            hit.insert(terminal.id.clone());
            if let Some(party) = &expected.party {
                pairs.insert((terminal.id.clone(), party.clone()));
            }
            if let Some(wanted) = &expected.readiness {
                readiness.insert(terminal.id.clone(), wanted.clone());
            }
        }
    }
    (pairs, readiness, hit.len() as u64)
}

/// The (terminal, party) pairs of one poll.
fn observed_pairs(poll: &Poll) -> BTreeSet<(String, String)> {
    observed_codes(poll).into_keys().collect()
}

/// The (terminal, party) pairs of one poll with the codes of the findings behind each.
fn observed_codes(poll: &Poll) -> BTreeMap<(String, String), BTreeSet<String>> {
    let fleet: HashMap<u64, &str> = poll
        .findings
        .iter()
        .filter(|f| f.terminal_id.is_empty())
        .map(|f| (f.id, f.party.as_str()))
        .collect();
    let mut pairs: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for finding in poll.findings.iter().filter(|f| !f.terminal_id.is_empty()) {
        let party = finding
            .suppressed_by
            .and_then(|id| fleet.get(&id).copied())
            .unwrap_or(&finding.party);
        pairs
            .entry((finding.terminal_id.clone(), party.to_string()))
            .or_default()
            .insert(finding.code.clone());
    }
    pairs
}

fn causes_of(poll: &Poll) -> BTreeSet<(String, String)> {
    poll.findings
        .iter()
        .filter(|f| f.terminal_id.is_empty())
        .map(|f| (f.subject.clone(), f.party.clone()))
        .collect()
}

const MISTAKES_SHOWN: usize = 5;

/// Scores one case from its polls (oldest first; the last is the final state) and the
/// readiness of each terminal at the end (`None`: the API shows none).
pub fn score(
    case: &Case,
    seed: u64,
    id_prefix: &str,
    polls: &[Poll],
    readiness: Option<&HashMap<String, String>>,
) -> CaseScore {
    let mut result = CaseScore {
        name: case.name.clone(),
        healthy: case.healthy,
        ..CaseScore::default()
    };
    let Some(last) = polls.last() else {
        return result;
    };
    let onset = case.onset_seconds();

    // Causes at the end: each expected cause matched by at most one open cause.
    let open = causes_of(last);
    let mut unmatched: Vec<&(String, String)> = open.iter().collect();
    for expected in &case.causes {
        match unmatched
            .iter()
            .position(|(subject, party)| expected.matches(subject, party))
        {
            Some(at) => {
                unmatched.remove(at);
                result.causes.true_positives += 1;
            }
            None => {
                result.causes.false_negatives += 1;
                result.missed_causes.push(expected.describe());
            }
        }
    }
    result.causes.false_positives = unmatched.len() as u64;
    let wrong: BTreeSet<String> = polls
        .iter()
        .flat_map(causes_of)
        .filter(|(subject, party)| !case.causes.iter().any(|c| c.matches(subject, party)))
        .map(|(subject, party)| format!("{subject} → {party}"))
        .collect();
    result.wrong_causes_ever = wrong.into_iter().collect();

    // Terminal parties at the end.
    let (expected, wanted_readiness, hit) = expected_pairs(case, seed, id_prefix, last.at_seconds);
    result.hit_terminals = hit;
    let codes = observed_codes(last);
    let observed: BTreeSet<(String, String)> = codes.keys().cloned().collect();
    result.terminals = Counts {
        true_positives: observed.intersection(&expected).count() as u64,
        false_positives: observed.difference(&expected).count() as u64,
        false_negatives: expected.difference(&observed).count() as u64,
    };
    let extra = observed.difference(&expected).map(|pair| {
        let codes = codes
            .get(pair)
            .map(|c| c.iter().cloned().collect::<Vec<_>>());
        let codes = codes.unwrap_or_default().join(", ");
        format!("{}: {} not expected ({codes})", pair.0, pair.1)
    });
    let missing = expected
        .difference(&observed)
        .map(|(terminal, party)| format!("{terminal}: {party} missing"));
    result.terminal_mistakes = extra.chain(missing).take(MISTAKES_SHOWN).collect();

    // Time to the right finding.
    result.expects_finding = !case.causes.is_empty() || !expected.is_empty();
    let first_poll_where = |right: &dyn Fn(&Poll) -> bool| {
        polls
            .iter()
            .find(|poll| poll.at_seconds >= onset && right(poll))
            .map(|poll| poll.at_seconds - onset)
    };
    result.detect_seconds = if !case.causes.is_empty() {
        first_poll_where(&|poll: &Poll| {
            let open = causes_of(poll);
            case.causes
                .iter()
                .all(|cause| open.iter().any(|(s, p)| cause.matches(s, p)))
        })
    } else if !expected.is_empty() {
        first_poll_where(&|poll: &Poll| expected.is_subset(&observed_pairs(poll)))
    } else {
        None
    };

    result.readiness_right = readiness.map(|shown| {
        let right = wanted_readiness
            .iter()
            .filter(|(terminal, wanted)| shown.get(*terminal) == Some(*wanted))
            .count() as u64;
        (right, wanted_readiness.len() as u64)
    });
    let ids: BTreeSet<u64> = polls
        .iter()
        .flat_map(|poll| poll.findings.iter().map(|f| f.id))
        .collect();
    result.findings_seen = ids.len() as u64;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::cases::parse;

    fn finding(id: u64, terminal: &str, party: &str, subject: &str, by: Option<u64>) -> Observed {
        Observed {
            id,
            terminal_id: terminal.into(),
            code: "env.network.host_unreachable".into(),
            party: party.into(),
            subject: subject.into(),
            suppressed_by: by,
        }
    }

    fn case(text: &str) -> Case {
        parse(text)
            .unwrap_or_else(|error| panic!("{error}"))
            .remove(0)
    }

    #[test]
    fn a_right_cause_with_its_terminals_scores_one_and_a_wrong_party_does_not() {
        let case = case(
            "[[case]]\nname = \"x\"\nterminals = 30\nonset_seconds = 10\nrun_seconds = 40\nincidents = [{ fault = \"host_outage\", merchant = \"M-000002\", party = \"acquirer\" }]\ncauses = [{ scope = \"merchant=M-000002\", party = \"acquirer\" }]\n",
        );
        let hit = ["T-0000006", "T-0000007", "T-0000008"];
        let terminal_findings = |party: &str, by: Option<u64>| -> Vec<Observed> {
            hit.iter()
                .enumerate()
                .map(|(i, t)| finding(10 + i as u64, t, party, "payment-host", by))
                .collect()
        };
        let mut right = terminal_findings("network_provider", Some(1));
        right.push(finding(1, "", "acquirer", "merchant=M-000002", None));
        let polls = vec![
            Poll {
                at_seconds: 5.0,
                findings: vec![],
            },
            Poll {
                at_seconds: 15.0,
                findings: terminal_findings("network_provider", None),
            },
            Poll {
                at_seconds: 22.0,
                findings: right.clone(),
            },
            Poll {
                at_seconds: 39.0,
                findings: right,
            },
        ];
        let scored = score(&case, 1, "T-", &polls, None);
        assert_eq!(scored.hit_terminals, 3);
        assert_eq!(
            (scored.causes.f1(), scored.terminals.f1()),
            (1.0, 1.0),
            "{scored:?}"
        );
        assert_eq!(scored.detect_seconds, Some(12.0));
        assert_eq!(scored.findings_seen, 4);

        // The cause names the wrong party: every measure falls.
        let mut wrong = terminal_findings("network_provider", Some(1));
        wrong.push(finding(
            1,
            "",
            "network_provider",
            "merchant=M-000002",
            None,
        ));
        let polls = vec![Poll {
            at_seconds: 39.0,
            findings: wrong,
        }];
        let scored = score(&case, 1, "T-", &polls, None);
        assert_eq!(scored.causes.f1(), 0.0);
        assert_eq!(scored.terminals.f1(), 0.0);
        assert_eq!(scored.detect_seconds, None);
        assert_eq!(
            scored.wrong_causes_ever,
            vec!["merchant=M-000002 → network_provider"]
        );
        assert_eq!(scored.missed_causes, vec!["merchant=M-000002 → acquirer"]);
    }

    #[test]
    fn any_finding_on_a_healthy_fleet_is_a_false_positive() {
        let case = case("[[case]]\nname = \"healthy\"\nterminals = 10\nhealthy = true\n");
        let quiet = score(
            &case,
            1,
            "T-",
            &[Poll {
                at_seconds: 70.0,
                findings: vec![],
            }],
            None,
        );
        assert_eq!((quiet.causes.f1(), quiet.terminals.f1()), (1.0, 1.0));
        assert!(!quiet.expects_finding);
        let noisy = score(
            &case,
            1,
            "T-",
            &[Poll {
                at_seconds: 70.0,
                findings: vec![finding(3, "T-0000001", "network_provider", "tms", None)],
            }],
            Some(&HashMap::new()),
        );
        assert_eq!(noisy.terminals.false_positives, 1);
        assert_eq!(noisy.terminals.precision(), 0.0);
        assert_eq!(noisy.findings_seen, 1);
        assert_eq!(noisy.readiness_right, Some((0, 0)));
    }

    #[test]
    fn counts_add_up() {
        let mut total = Counts::default();
        total.add(Counts {
            true_positives: 3,
            false_positives: 1,
            false_negatives: 0,
        });
        total.add(Counts {
            true_positives: 1,
            false_positives: 0,
            false_negatives: 4,
        });
        assert_eq!(total.precision(), 0.8);
        assert_eq!(total.recall(), 0.5);
        assert!((total.f1() - 8.0 / 13.0).abs() < 1e-12);
    }
}
