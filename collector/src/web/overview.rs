//! The overview: terminals by readiness, open findings by category, code, party and severity,
//! who must act counted in terminals,
//! the open upstream outages, the fleet's data usage this month (terminals near their budget), the values to filter the problem list by, and the trend.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use time::OffsetDateTime;

use crate::data_usage::FleetUsage;
use crate::http::error::ApiError;
use crate::http::queries::{check_parameters, number, Counts};
use crate::http::views::FindingView;
use crate::http::AppState;
use posmon_diagnosis::findings::Finding;
use posmon_diagnosis::{Category, Party};

/// The longest trend one request returns: a week.
const TREND_HOURS_MAX: usize = 24 * 7;

pub async fn overview(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, &[])?;
    let state = Arc::clone(&state);
    // A pass over every terminal: off the async workers.
    tokio::task::spawn_blocking(move || Json(overview_of(&state)))
        .await
        .map_err(|error| ApiError::internal("counting the fleet", error))
}

fn overview_of(state: &AppState) -> serde_json::Value {
    let fleet = &state.fleet;
    let mut readiness = Counts::default();
    let (mut category, mut code, mut party, mut severity) = (
        Counts::default(),
        Counts::default(),
        Counts::default(),
        Counts::default(),
    );
    let (mut region, mut model, mut carrier) =
        (Counts::default(), Counts::default(), Counts::default());
    let now = OffsetDateTime::now_utc();
    let mut data_usage = FleetUsage::new(now);
    let fleet_wide = fleet.fleet_wide_findings();
    let mut who_must_act = WhoMustAct::new(&fleet_wide);
    let mut count_finding = |finding: &Finding| {
        category.add(finding.kind.category.as_str());
        code.add(finding.kind.code);
        party.add(finding.kind.party.as_str());
        severity.add(finding.severity.as_str());
    };
    fleet.for_each_terminal(|terminal| {
        readiness.add(terminal.readiness(&state.config.readiness).as_str());
        let labels = &terminal.labels;
        region.add(labels.region.as_deref().unwrap_or("unknown"));
        model.add(labels.model.as_deref().unwrap_or("unknown"));
        carrier.add(labels.carrier.as_deref().unwrap_or("unknown"));
        data_usage.add(terminal.data_usage.as_ref());
        terminal.visible_findings().for_each(&mut count_finding);
        who_must_act.add(terminal.findings.findings());
    });
    fleet_wide.iter().for_each(&mut count_finding);
    let mut outages: Vec<&Finding> = fleet_wide
        .iter()
        .filter(|finding| finding.kind.category == Category::Upstream)
        .collect();
    outages.sort_by_key(|finding| std::cmp::Reverse(finding.explains));
    let problems = state.workflow.states();
    let outages: Vec<FindingView<'_>> = outages
        .into_iter()
        .map(|finding| FindingView::from(finding).with_workflow(&problems))
        .collect();
    json!({
        "generated_at": now.unix_timestamp(),
        "terminals": fleet.len(),
        "readiness": readiness.into_map(),
        "findings": {
            "category": category.into_map(),
            "code": code.into_map(),
            "party": party.into_map(),
            "severity": severity.into_map(),
        },
        "who_must_act": who_must_act.view(),
        "outages": outages,
        "data_usage": data_usage,
        "facets": {
            "region": region.into_map(),
            "model": model.into_map(),
            "carrier": carrier.into_map(),
        },
    })
}

/// Who must act, counted in terminals: a terminal counts once for each party one of its open
/// findings calls on (two network findings: once for the network provider); a finding a
/// fleet-wide cause explains calls on that cause's party. A fleet-wide finding that explains no
/// terminal's finding is counted apart, as one fleet-wide cause: its terminals are not known.
struct WhoMustAct<'a> {
    /// The party of each open fleet-wide finding, by id.
    outages: HashMap<u64, Party>,
    fleet_wide: &'a [Finding],
    terminals: BTreeMap<&'static str, u64>,
    /// The fleet-wide findings that explain a counted terminal's finding.
    explaining: HashSet<u64>,
}

impl<'a> WhoMustAct<'a> {
    fn new(fleet_wide: &'a [Finding]) -> Self {
        WhoMustAct {
            outages: fleet_wide
                .iter()
                .map(|finding| (finding.id, finding.kind.party))
                .collect(),
            fleet_wide,
            terminals: BTreeMap::new(),
            explaining: HashSet::new(),
        }
    }

    /// One terminal's open findings.
    fn add<'f>(&mut self, findings: impl Iterator<Item = &'f Finding>) {
        // A handful of parties: a list is cheaper than a set.
        let mut parties: Vec<Party> = Vec::new();
        for finding in findings {
            let party = match finding.suppressed_by {
                Some(outage) => {
                    self.explaining.insert(outage);
                    self.outages
                        .get(&outage)
                        .copied()
                        .unwrap_or(finding.kind.party)
                }
                None => finding.kind.party,
            };
            if !parties.contains(&party) {
                parties.push(party);
            }
        }
        for party in parties {
            *self.terminals.entry(party.as_str()).or_default() += 1;
        }
    }

    /// `{"terminals": {party: terminals}, "fleet_wide_causes": {party: fleet-wide findings
    /// that explain no terminal's finding}}`.
    fn view(self) -> serde_json::Value {
        let mut causes: BTreeMap<&'static str, u64> = BTreeMap::new();
        for finding in self.fleet_wide {
            if !self.explaining.contains(&finding.id) {
                *causes.entry(finding.kind.party.as_str()).or_default() += 1;
            }
        }
        json!({ "terminals": self.terminals, "fleet_wide_causes": causes })
    }
}

/// The fleet trend over the last `hours` (default 24).
pub async fn trend(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, &["hours"])?;
    let hours = number(&query, "hours", 24, TREND_HOURS_MAX)?;
    let span = i64::try_from(hours)
        .unwrap_or(i64::MAX)
        .saturating_mul(3600);
    let since = OffsetDateTime::now_utc()
        .unix_timestamp()
        .saturating_sub(span);
    Ok(Json(json!({
        "interval_seconds": state.config.web.trend_interval_seconds,
        "points": state.trend.since(since),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_diagnosis::rules::network_path::{DNS_FAILURE, HOST_UNREACHABLE};
    use posmon_diagnosis::rules::outdated::POS_APP;
    use posmon_diagnosis::rules::upstream::{CARRIER_OUTAGE, HOST_OUTAGE};
    use posmon_diagnosis::{FindingKind, Severity};
    use std::sync::Arc;

    fn finding(id: u64, kind: &'static FindingKind, suppressed_by: Option<u64>) -> Finding {
        Finding {
            id,
            terminal_id: Arc::from(""),
            kind,
            severity: Severity::Warning,
            subject: String::new(),
            evidence: Vec::new(),
            since: OffsetDateTime::UNIX_EPOCH,
            last_seen: OffsetDateTime::UNIX_EPOCH,
            closed_at: None,
            suppressed_by,
            explains: 0,
        }
    }

    #[test]
    fn who_must_act_counts_terminals_not_findings() {
        // A host outage explaining terminal findings, a carrier outage explaining none.
        let fleet_wide = [
            finding(100, &HOST_OUTAGE, None),
            finding(101, &CARRIER_OUTAGE, None),
        ];
        let mut who = WhoMustAct::new(&fleet_wide);
        // Two network findings and an outdated app: once for each party.
        who.add(
            [
                finding(1, &DNS_FAILURE, None),
                finding(2, &HOST_UNREACHABLE, None),
                finding(3, &POS_APP, None),
            ]
            .iter(),
        );
        // Explained by the host outage: its party acts, not the network's.
        who.add([finding(4, &HOST_UNREACHABLE, Some(100))].iter());
        who.add([finding(5, &HOST_UNREACHABLE, Some(100))].iter());
        who.add(std::iter::empty());
        let view = who.view();
        let network = DNS_FAILURE.party.as_str();
        assert_eq!(HOST_UNREACHABLE.party.as_str(), network);
        assert_eq!(view["terminals"][network], 1, "{view}");
        assert_eq!(view["terminals"][POS_APP.party.as_str()], 1, "{view}");
        assert_eq!(view["terminals"][HOST_OUTAGE.party.as_str()], 2, "{view}");
        assert_eq!(
            view["fleet_wide_causes"],
            json!({ CARRIER_OUTAGE.party.as_str(): 1 }),
            "{view}"
        );
    }
}
