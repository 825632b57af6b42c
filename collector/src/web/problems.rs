//! The problem list: terminals with open findings not explained by a fleet-wide one (asked for
//! by readiness, the explained ones too, as readiness counts them), filtered by readiness,
//! region, model, carrier, code, category, party, severity and terminal id, sorted (by default
//! those that cannot take payments first) and paginated.
//!
//! Fast at 100 000 terminals: one pass over the shards keeps only a small sort key per
//! matching terminal (a shared id, no copy of its state); only the terminals of the page asked
//! for are read in full.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use time::OffsetDateTime;

use crate::fleet::{Fleet, Terminal};
use crate::http::error::{ApiError, Reason};
use crate::http::queries::{check_parameters, number, readiness_filter};
use crate::http::views::LabelsView;
use crate::http::AppState;
use crate::workflow::ProblemState;
use posmon_diagnosis::findings::Finding;
use posmon_diagnosis::readiness::{PaymentRoles, Readiness};
use posmon_diagnosis::Severity;

/// The most rows one page lists.
const PAGE_MAX: usize = 1000;
/// The longest terminal id search accepted.
const SEARCH_MAX_CHARS: usize = 64;

const PARAMETERS: &[&str] = &[
    "readiness",
    "region",
    "model",
    "carrier",
    "code",
    "category",
    "party",
    "severity",
    "q",
    "sort",
    "order",
    "limit",
    "offset",
];

/// How the list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Those that cannot take payments first (then at risk, unknown), then the worst
    /// severity, then the oldest problem.
    Readiness,
    /// The oldest problem first.
    Since,
    /// Most findings first.
    Findings,
    /// By terminal id.
    Terminal,
}

impl SortKey {
    fn parse(text: &str) -> Option<SortKey> {
        match text {
            // `severity`: the name of this order before readiness led it.
            "readiness" | "severity" => Some(SortKey::Readiness),
            "since" => Some(SortKey::Since),
            "findings" => Some(SortKey::Findings),
            "terminal" => Some(SortKey::Terminal),
            _ => None,
        }
    }
}

/// What the list needs to sort a terminal: no copy of its state.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub terminal_id: Arc<str>,
    pub readiness: Readiness,
    pub worst: Severity,
    pub since: OffsetDateTime,
    pub findings: u32,
}

impl Row {
    fn compare(&self, other: &Row, key: SortKey) -> Ordering {
        let by_id = || self.terminal_id.cmp(&other.terminal_id);
        match key {
            SortKey::Readiness => self
                .readiness
                .urgency()
                .cmp(&other.readiness.urgency())
                .then(other.worst.cmp(&self.worst))
                .then(self.since.cmp(&other.since))
                .then_with(by_id),
            SortKey::Since => self.since.cmp(&other.since).then_with(by_id),
            SortKey::Findings => other
                .findings
                .cmp(&self.findings)
                .then(other.worst.cmp(&self.worst))
                .then_with(by_id),
            SortKey::Terminal => by_id(),
        }
    }
}

/// The filters of one request: a wanted value per name.
pub struct Filter<'a>(pub HashMap<&'a str, &'a str>);

impl Filter<'_> {
    fn wants(&self, name: &str, value: Option<&str>) -> bool {
        self.0.get(name).is_none_or(|wanted| Some(*wanted) == value)
    }

    fn wants_terminal(&self, terminal: &Terminal) -> bool {
        let labels = &terminal.labels;
        self.wants("region", labels.region.as_deref())
            && self.wants("model", labels.model.as_deref())
            && self.wants("carrier", labels.carrier.as_deref())
            && self
                .0
                .get("q")
                .is_none_or(|search| terminal.id.contains(*search))
    }

    fn wants_finding(&self, finding: &Finding) -> bool {
        self.wants("code", Some(finding.kind.code))
            && self.wants("category", Some(finding.kind.category.as_str()))
            && self.wants("party", Some(finding.kind.party.as_str()))
            && self.wants("severity", Some(finding.severity.as_str()))
    }

    fn matching<'t>(
        &self,
        terminal: &'t Terminal,
    ) -> impl Iterator<Item = &'t Finding> + use<'t, '_> {
        // Readiness counts every open finding, those an outage explains included: a list asked
        // for by readiness shows them too (marked `suppressed_by`), or the terminals behind an
        // outage would be counted as unable to pay and listed nowhere.
        let explained_too = self.0.contains_key("readiness");
        terminal.findings.findings().filter(move |finding| {
            (explained_too || finding.suppressed_by.is_none()) && self.wants_finding(finding)
        })
    }
}

/// The sort key of every terminal with a matching finding, sorted.
pub fn rows(
    fleet: &Fleet,
    roles: &PaymentRoles,
    filter: &Filter<'_>,
    key: SortKey,
    descending: bool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    fleet.for_each_terminal(|terminal| {
        if !filter.wants_terminal(terminal) {
            return;
        }
        let readiness = terminal.readiness(roles);
        if !filter.wants("readiness", Some(readiness.as_str())) {
            return;
        }
        let mut row: Option<Row> = None;
        for finding in filter.matching(terminal) {
            let row = row.get_or_insert_with(|| Row {
                terminal_id: Arc::clone(&terminal.id),
                readiness,
                worst: finding.severity,
                since: finding.since,
                findings: 0,
            });
            row.worst = row.worst.max(finding.severity);
            row.since = row.since.min(finding.since);
            row.findings += 1;
        }
        rows.extend(row);
    });
    rows.sort_unstable_by(|a, b| {
        let order = a.compare(b, key);
        if descending {
            order.reverse()
        } else {
            order
        }
    });
    rows
}

pub async fn problems(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, PARAMETERS)?;
    let limit = number(&query, "limit", 50, PAGE_MAX)?;
    let offset = number(&query, "offset", 0, usize::MAX)?;
    let key = match query.get("sort") {
        None => SortKey::Readiness,
        Some(text) => SortKey::parse(text).ok_or_else(|| {
            ApiError::field(
                Reason::BadQuery,
                "sort",
                "must be readiness, since, findings or terminal",
            )
        })?,
    };
    readiness_filter(&query)?;
    let descending = match query.get("order").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(ApiError::field(
                Reason::BadQuery,
                "order",
                "must be asc or desc",
            ))
        }
    };
    if query
        .get("q")
        .is_some_and(|search| search.chars().count() > SEARCH_MAX_CHARS)
    {
        return Err(ApiError::field(
            Reason::BadQuery,
            "q",
            format!("too long (at most {SEARCH_MAX_CHARS} characters)"),
        ));
    }
    // A pass over every terminal: off the async workers.
    tokio::task::spawn_blocking(move || {
        let filter = Filter(
            query
                .iter()
                .filter(|(name, value)| {
                    !value.is_empty()
                        && !["sort", "order", "limit", "offset"].contains(&name.as_str())
                })
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect(),
        );
        let roles = &state.config.readiness;
        let problems = state.workflow.states();
        let rows = rows(&state.fleet, roles, &filter, key, descending);
        let page: Vec<serde_json::Value> = rows
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|row| state.fleet.terminal(&row.terminal_id))
            .map(|terminal| row_view(&terminal, roles, &filter, &problems))
            .collect();
        Json(json!({
            "total": rows.len(),
            "offset": offset,
            "limit": limit,
            "rows": page,
        }))
    })
    .await
    .map_err(|error| ApiError::internal("listing problems", error))
}

fn row_view(
    terminal: &Terminal,
    roles: &PaymentRoles,
    filter: &Filter<'_>,
    problems: &HashMap<u64, ProblemState>,
) -> serde_json::Value {
    let findings: Vec<serde_json::Value> = filter
        .matching(terminal)
        .map(|finding| {
            json!({
                "id": finding.id,
                "code": finding.kind.code,
                "category": finding.kind.category,
                "party": finding.kind.party,
                "severity": finding.severity,
                "subject": finding.subject,
                "title": finding.kind.title,
                "since": finding.since.unix_timestamp(),
                "suppressed_by": finding.suppressed_by,
                "workflow": problems.get(&finding.id),
            })
        })
        .collect();
    json!({
        "terminal_id": &*terminal.id,
        "readiness": terminal.readiness(roles),
        "labels": LabelsView::from(&terminal.labels),
        "last_seen": terminal.last_seen.unix_timestamp(),
        "findings": findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, readiness: Readiness, worst: Severity, since: i64, findings: u32) -> Row {
        Row {
            terminal_id: Arc::from(id),
            readiness,
            worst,
            since: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(since),
            findings,
        }
    }

    fn check(key: SortKey, expected: &[&str]) {
        let mut rows = [
            row("A", Readiness::AtRisk, Severity::Warning, 10, 3),
            row("B", Readiness::CannotPay, Severity::Critical, 30, 1),
            row("C", Readiness::CannotPay, Severity::Critical, 20, 1),
            row("D", Readiness::AtRisk, Severity::Warning, 5, 1),
            // Silent: unknown, after those at risk however old.
            row("E", Readiness::Unknown, Severity::Warning, 1, 1),
        ];
        rows.sort_by(|a, b| a.compare(b, key));
        let order: Vec<&str> = rows.iter().map(|row| &*row.terminal_id).collect();
        assert_eq!(order, expected, "{key:?}");
    }

    /// Terminals behind a host outage cannot pay although their findings are folded under it:
    /// the list filtered by readiness holds them, as the readiness counts do, and says which
    /// outage explains each finding. Unfiltered, they stay folded under the outage.
    #[test]
    fn the_readiness_filter_lists_terminals_whose_findings_an_outage_explains() {
        use posmon_diagnosis::test_support::{healthy_report, stage};
        use posmon_diagnosis::thresholds::Thresholds;
        use posmon_diagnosis::{diagnose, Policy};
        use posmon_protocol::{ErrorKind, Stage, StageStatus};

        let t0 = time::macros::datetime!(2026-11-26 02:00 UTC);
        let thresholds = Thresholds::default();
        let roles = PaymentRoles::default();
        let policy = Policy {
            versions: &[],
            thresholds: &thresholds,
            roles: &roles,
        };
        let fleet = Fleet::new(100, 30);
        for index in 0..6 {
            let id = format!("T-{index}");
            let reports = (1..=2)
                .map(|sequence| {
                    let mut report = healthy_report();
                    report.terminal_id = id.clone();
                    report.sequence = sequence;
                    report.observed_at = t0 + time::Duration::minutes(sequence as i64);
                    report.probes[0].stages = vec![stage(
                        Stage::Tcp,
                        StageStatus::Failed,
                        Some(ErrorKind::Timeout),
                    )];
                    let signals = diagnose(&report, &policy);
                    (report, signals)
                })
                .collect();
            fleet.apply_batch(&id, reports, t0 + time::Duration::minutes(2), &thresholds);
        }
        fleet.evaluate(t0 + time::Duration::minutes(2), &thresholds);
        let outage = fleet.fleet_wide_findings();
        assert_eq!(outage.len(), 1, "a host outage opens");
        let filter =
            |pairs: &[(&'static str, &'static str)]| Filter(pairs.iter().copied().collect());
        let cannot_pay = filter(&[("readiness", "cannot_pay")]);
        let listed = rows(&fleet, &roles, &cannot_pay, SortKey::Readiness, false);
        assert_eq!(listed.len(), 6, "{listed:?}");
        let terminal = fleet.terminal("T-0").expect("known");
        let view = row_view(&terminal, &roles, &cannot_pay, &HashMap::new());
        assert_eq!(view["findings"][0]["suppressed_by"], outage[0].id, "{view}");
        // Without the filter, the outage's terminals are folded under its banner.
        assert!(rows(&fleet, &roles, &filter(&[]), SortKey::Readiness, false).is_empty());
    }

    #[test]
    fn sort_orders() {
        check(SortKey::Readiness, &["C", "B", "D", "A", "E"]);
        check(SortKey::Since, &["E", "D", "A", "C", "B"]);
        check(SortKey::Findings, &["A", "B", "C", "D", "E"]);
        check(SortKey::Terminal, &["A", "B", "C", "D", "E"]);
    }
}
