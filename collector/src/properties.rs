//! Properties over arbitrary reports, dates and policies: diagnosis, the fleet's state and its
//! evaluation, the store and message rendering never panic, whatever a terminal or an admin
//! sent and whatever time it claims. The strategies are the protocol crate's (half plausible
//! reports, half hostile: any date `time` can represent, any integer, NaN, markup and links).

use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use time::OffsetDateTime;

use crate::alert::config::Language;
use crate::alert::escape::Format;
use crate::alert::item_of;
use crate::alert::message::{markdown, title, AlertItem, Notification};
use crate::config::{PaymentRoles, Thresholds, VersionRule};
use crate::fleet::{Fleet, TerminalLabels};
use crate::store::Store;
use posmon_diagnosis::findings::Finding;
use posmon_diagnosis::{diagnose, Policy};
use posmon_protocol::strategies::{any_report, any_text, any_time};
use posmon_protocol::Report;

/// A version policy with arbitrary versions and dates.
fn any_policy() -> impl Strategy<Value = Vec<VersionRule>> {
    let date = prop_oneof![
        Just(time::Date::MIN),
        Just(time::Date::MAX),
        any_time(true).prop_map(|at| at.date()),
    ];
    let rule = (
        prop_oneof![Just("pos_app".to_string()), Just("os".to_string())],
        any_text(true),
        proptest::option::of(any_text(true)),
        proptest::option::of(date),
        any::<u32>(),
    )
        .prop_map(
            |(component, minimum, latest, latest_released_on, update_within_days)| VersionRule {
                component,
                model: None,
                minimum,
                latest,
                latest_released_on,
                update_within_days,
            },
        );
    vec(rule, 0..3)
}

/// A terminal's labels as the alerts read them, any text.
fn any_labels() -> impl Strategy<Value = TerminalLabels> {
    let text = || proptest::option::of(any_text(true).prop_map(Arc::<str>::from));
    (text(), text(), text(), text()).prop_map(|(merchant, model, region, carrier)| TerminalLabels {
        merchant,
        model,
        region,
        carrier,
        extra: Vec::new(),
        ..TerminalLabels::default()
    })
}

const FORMATS: [Format; 5] = [
    Format::DingTalk,
    Format::WeCom,
    Format::Feishu,
    Format::Email,
    Format::Webhook,
];

/// Whatever a terminal wrote, a message holds no link but posmon's own dashboard link and
/// no mention: the strategies plant `https://evil.example` links and `@all`.
fn assert_inert(text: &str, format: Format) {
    // posmon's own links (to the dashboard, the terminal id percent-encoded) are left out of
    // the search for planted ones.
    let mut outside_links = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("(http://dashboard/#/") {
        outside_links.push_str(&rest[..start]);
        rest = rest[start..]
            .find(')')
            .map_or("", |end| &rest[start + end + 1..]);
    }
    outside_links.push_str(rest);
    let text_outside = outside_links.as_str();
    for link in ["://evil", "evil.example", "<a ", "<img"] {
        assert!(
            !text_outside.contains(link),
            "{link:?} is active in {text:?}"
        );
    }
    // Plain-text mail shows brackets as brackets; every markdown format links only posmon's
    // dashboard.
    let markdown_links = if format == Format::Email { "" } else { text };
    for (index, _) in markdown_links.match_indices("](") {
        assert!(
            markdown_links[index..].starts_with("](http://dashboard/#/"),
            "a link that is not posmon's in {format:?}: {text:?}"
        );
    }
    assert!(!text.contains("@all"), "a mention is active in {text:?}");
    for line in text.lines() {
        assert!(!line.starts_with("## forged"), "a forged line in {text:?}");
    }
}

fn render_all(findings: &[Finding], labels: &TerminalLabels, created_at: OffsetDateTime) {
    let items: Vec<AlertItem> = findings
        .iter()
        .map(|finding| item_of(finding, labels, "http://dashboard"))
        .collect();
    let notification = Notification {
        receiver: "ops".into(),
        group_key: "code=any".into(),
        group_labels: Default::default(),
        repeat: false,
        firing: items.clone(),
        resolved: items,
        more_firing: 0,
        more_resolved: 0,
        created_at,
    };
    for language in [Language::En, Language::ZhCn] {
        for format in FORMATS {
            let title = title(&notification, language, format);
            assert_inert(&title, format);
            for limit in [0, 100, 4096, 20_000] {
                let text = markdown(&notification, language, format, limit);
                assert!(limit == 0 || text.len() <= limit.max(64), "over the limit");
                assert_inert(&text, format);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A terminal's reports, received and evaluated at any times, under any policy: no panic
    /// anywhere from diagnosis to rendering the alerts.
    #[test]
    fn diagnosis_fleet_and_messages_never_panic(
        reports in vec(any_report(), 1..6),
        received in vec(any_time(true), 6),
        evaluations in vec(any_time(true), 3),
        rules in any_policy(),
        labels in any_labels(),
    ) {
        let thresholds = Thresholds::default();
        let roles = PaymentRoles::default();
        let policy = Policy { versions: &rules, thresholds: &thresholds, roles: &roles };
        let fleet = Fleet::new(50, 5);
        for (index, report) in reports.into_iter().enumerate() {
            let terminal_id = report.terminal_id.clone();
            let signals = diagnose(&report, &policy);
            let batch: Vec<(Report, _)> = vec![(report, signals)];
            let outcome = fleet.apply_batch(&terminal_id, batch, received[index], &thresholds);
            let findings: Vec<Finding> =
                outcome.events.iter().map(|event| event.finding.clone()).collect();
            render_all(&findings, &labels, received[index]);
        }
        for now in evaluations {
            let events = fleet.evaluate(now, &thresholds);
            let findings: Vec<Finding> = events.iter().map(|event| event.finding.clone()).collect();
            render_all(&findings, &labels, now);
        }
        let mut open = Vec::new();
        fleet.for_each_terminal(|terminal| {
            let _ = terminal.readiness(&roles);
            open.extend(terminal.findings.findings().cloned());
        });
        open.extend(fleet.fleet_wide_findings());
        render_all(&open, &labels, OffsetDateTime::UNIX_EPOCH);
    }
}

proptest! {
    // Each case opens a database: fewer of them.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Whatever state arbitrary reports leave, the store writes it and a restart loads it.
    #[test]
    fn the_store_writes_and_loads_any_state(
        reports in vec(any_report(), 1..4),
        received in any_time(true),
    ) {
        let thresholds = Thresholds::default();
        let roles = PaymentRoles::default();
        let policy = Policy { versions: &[], thresholds: &thresholds, roles: &roles };
        let fleet = Fleet::new(50, 5);
        for report in reports {
            let terminal_id = report.terminal_id.clone();
            let signals = diagnose(&report, &policy);
            fleet.apply_batch(&terminal_id, vec![(report, signals)], received, &thresholds);
        }
        fleet.evaluate(received, &thresholds);
        let directory = tempfile::tempdir();
        prop_assert!(directory.is_ok());
        let Ok(directory) = directory else { return Ok(()) };
        let store = Store::open(directory.path());
        prop_assert!(store.is_ok(), "{:?}", store.err());
        let Ok(store) = store else { return Ok(()) };
        let written = store.write(&fleet.take_changes(), 50);
        prop_assert!(written.is_ok(), "{:?}", written.err());
        drop(store);
        let store = Store::open(directory.path());
        prop_assert!(store.is_ok(), "{:?}", store.err());
        if let Ok(store) = store {
            let loaded = store.load(50);
            prop_assert!(loaded.is_ok(), "{:?}", loaded.err());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A heartbeat after any report leaves the terminal's findings as that report seen again at
    /// the heartbeat's time would, its path state and device as they were, and moves its
    /// sequence; its data usage, at any time, shows and sums without a panic whatever numbers
    /// it holds.
    #[test]
    fn a_heartbeat_repeats_the_last_observation_and_any_usage_shows(
        first in any_report(),
        second in any_report(),
        received in vec(any_time(true), 2),
        now in any_time(true),
    ) {
        let thresholds = Thresholds::default();
        let roles = PaymentRoles::default();
        let policy = Policy { versions: &[], thresholds: &thresholds, roles: &roles };
        let fleet = Fleet::new(50, 5);
        // The same report twice, the second with the heartbeat's sequence and time.
        let twin = Fleet::new(50, 5);
        let terminal_id = first.terminal_id.clone();
        let sequence = first.sequence;
        let signals = diagnose(&first, &policy);
        fleet.apply_batch(&terminal_id, vec![(first.clone(), signals.clone())], received[0], &thresholds);
        twin.apply_batch(&terminal_id, vec![(first.clone(), signals.clone())], received[0], &thresholds);
        let Some(before) = fleet.terminal(&terminal_id) else { return Ok(()) };
        let mut heartbeat = second;
        heartbeat.terminal_id = terminal_id.clone();
        heartbeat.agent_instance = before.agent_instance.as_deref().map(str::to_string);
        heartbeat.sequence = sequence.saturating_add(1);
        heartbeat.unchanged.push(posmon_protocol::Section::Measurements);
        let mut again = first;
        again.sequence = heartbeat.sequence;
        again.observed_at = heartbeat.observed_at;
        again.agent_instance = heartbeat.agent_instance.clone();
        let repeated =
            twin.apply_batch(&terminal_id, vec![(again, signals)], received[1], &thresholds);
        let signals = diagnose(&heartbeat, &policy);
        let outcome =
            fleet.apply_batch(&terminal_id, vec![(heartbeat.clone(), signals)], received[1], &thresholds);
        let Some(after) = fleet.terminal(&terminal_id) else { return Ok(()) };
        let Some(twin) = twin.terminal(&terminal_id) else { return Ok(()) };
        // Compared as text: a hostile report's NaN equals itself there.
        prop_assert_eq!(format!("{:?}", outcome.events), format!("{:?}", repeated.events));
        prop_assert_eq!(format!("{:?}", after.findings), format!("{:?}", twin.findings));
        prop_assert_eq!(format!("{:?}", after.targets), format!("{:?}", before.targets));
        prop_assert_eq!(format!("{:?}", after.device), format!("{:?}", before.device));
        prop_assert_eq!(after.highest_sequence, heartbeat.sequence.max(before.highest_sequence));
        if let Some(usage) = heartbeat.data_usage {
            let _ = serde_json::to_string(&crate::data_usage::UsageView::new(&usage, now));
            let mut sums = crate::data_usage::FleetUsage::new(now);
            sums.add(Some(&usage));
            sums.add(Some(&usage));
            if crate::data_usage::Standing::of(&usage, now).current {
                prop_assert_eq!(sums.terminals_reporting, 2);
                prop_assert!(sums.total_bytes >= usage.total_bytes());
            } else {
                prop_assert_eq!(sums.total_bytes, 0);
            }
        }
    }
}
