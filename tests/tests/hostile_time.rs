//! Hostile times and sequences against the real binaries: a terminal clock far off is refused
//! naming the field, extreme values that get through (and admin dates) never crash the
//! collector — not even after a restart, when they are read back —, a sequence beyond 2^53 - 1
//! is refused, a clock that jumps back does not freeze a terminal, and a real agent whose
//! state directory was wiped is applied again from its first report.

use std::path::Path;
use std::time::Duration;

use posmon_e2e_tests::{
    quick_agent_config, start_agent, wait_for, Collector, HttpSink, TargetServer,
};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const ADMIN_TOKEN: &str = "an-admin-token-for-hostile-time";
const PAYMENT_HOST: &str = "pay.acquirer.example:443";

/// A collector with an admin token and a webhook receiver (so that alerts are planned and
/// rendered for whatever opens), evaluating every second.
fn start(dir: &Path, hook: &HttpSink) -> Collector {
    std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(dir.join("webhook-secret"), "a-webhook-secret")
        .unwrap_or_else(|error| panic!("{error}"));
    Collector::start(
        dir,
        &format!(
            "[auth]\nadmin_token_file = {:?}\n\n[diagnosis]\nevaluation_interval_seconds = 1\n\n\
             [alerts]\ndashboard_url = \"http://dash.test\"\ndefault_receiver = \"hook\"\n\
             group_wait_seconds = 0\ngroup_interval_seconds = 1\nretry_initial_seconds = 1\n\
             retry_max_seconds = 1\nrequest_timeout_seconds = 2\n\n\
             [[alerts.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\
             secret = {{ file = {:?} }}\n",
            dir.join("admin-token").display().to_string(),
            hook.url(),
            dir.join("webhook-secret").display().to_string(),
        ),
    )
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .unwrap_or_else(|error| panic!("{error}"))
}

/// A report observed at `observed_at` (RFC 3339 text, so that any year can be sent).
fn report(terminal_id: &str, sequence: u64, observed_at: &str, host_down: bool) -> Value {
    let tcp = if host_down {
        json!({ "stage": "tcp", "status": "failed", "error": "timeout" })
    } else {
        json!({ "stage": "tcp", "status": "ok", "latency_ms": { "min": 30.0, "avg": 35.0, "max": 41.0 } })
    };
    json!({
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": observed_at,
        "agent_version": "0.1.0",
        "labels": { "model": "PAX-A920", "region": "cn-east", "carrier": "carrier-x" },
        "software": { "pos_app": { "version": "2.9.1" } },
        "probes": [ { "target": "payment-host", "address": PAYMENT_HOST, "stages": [
            { "stage": "gateway", "status": "ok" }, tcp ] } ]
    })
}

/// Posts reports with the terminal's token: (status, JSON answer).
fn post(collector: &Collector, reports: Vec<Value>) -> (u16, Value) {
    let terminal_id = reports[0]["terminal_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a report without terminal_id"))
        .to_string();
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(collector.token(&terminal_id))
        .json(&json!({ "reports": reports }))
        .send()
        .unwrap_or_else(|error| panic!("POST /api/v1/reports: {error}"));
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// An admin request with a JSON body: (status, JSON answer).
fn admin(collector: &Collector, method: &str, path: &str, body: Value) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let url = format!("{}{path}", collector.url);
    let request = match method {
        "PUT" => client.put(url),
        _ => client.post(url),
    };
    let response = request
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn healthy(collector: &mut Collector) -> bool {
    collector.process.exited().is_none()
        && reqwest::blocking::get(format!("{}/healthz", collector.url))
            .is_ok_and(|response| response.status().is_success())
}

fn metric(collector: &Collector, name: &str) -> f64 {
    collector
        .metrics()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_far_future_report_is_refused_naming_the_field_and_ten_minutes_ahead_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let mut collector = start(dir.path(), &hook);
    let now = OffsetDateTime::now_utc();
    let minutes = |m: i64| rfc3339(now + time::Duration::minutes(m));
    // Observed times of the batch's fourth report that are refused.
    let cases = [
        "9999-12-31T23:59:59Z".to_string(),
        "0000-01-01T00:00:00Z".to_string(),
        minutes(2 * 24 * 60),
        minutes(-9 * 24 * 60),
    ];
    for observed_at in &cases {
        let reports = vec![
            report("T-AHEAD", 1, &minutes(-3), false),
            report("T-AHEAD", 2, &minutes(-2), false),
            report("T-AHEAD", 3, &minutes(-1), false),
            report("T-AHEAD", 4, observed_at, true),
        ];
        let (status, body) = post(&collector, reports);
        assert_eq!(status, 400, "{observed_at}: {body}");
        assert_eq!(body["error"]["reason"], "invalid_field", "{body}");
        assert_eq!(body["error"]["field"], "reports[3].observed_at", "{body}");
    }
    // Nothing of a refused batch was applied.
    let detail = collector.get_json("/api/v1/terminals/T-AHEAD");
    assert!(detail["sequence"].is_null(), "{detail}");

    // Ten minutes ahead: accepted, and the clock is found skewed.
    let (status, body) = post(
        &collector,
        vec![
            report("T-AHEAD", 1, &minutes(10), false),
            report("T-AHEAD", 2, &minutes(10), false),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["acknowledged_sequence"], 2);
    let (status, _) = post(&collector, vec![report("T-AHEAD", 3, &minutes(11), false)]);
    assert_eq!(status, 200);
    assert_eq!(collector.finding_codes("T-AHEAD"), ["env.clock_skew"]);
    assert!(healthy(&mut collector));
}

#[test]
fn extreme_values_and_admin_dates_never_crash_the_collector_nor_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let mut collector = start(dir.path(), &hook);
    let now = OffsetDateTime::now_utc();
    // The extremes that get through: a day ahead less a minute, a failing probe (a finding
    // and its alert dated then), a certificate at ±a century, the longest uptime, the largest
    // clock offset and latency.
    let ahead = rfc3339(now + time::Duration::hours(24) - time::Duration::minutes(1));
    let mut reports = Vec::new();
    for sequence in 1..=3 {
        let mut report = report("T-EXTREME", sequence, &ahead, true);
        report["probes"][0]["stages"][0] = json!({ "stage": "gateway", "status": "ok",
            "latency_ms": { "min": 3_600_000.0, "avg": 3_600_000.0, "max": 3_600_000.0, "jitter": 3_600_000.0 } });
        report["probes"].as_array_mut().unwrap().push(json!({
            "target": "tls-host", "address": "tls.example:443", "stages": [
                { "stage": "tls", "status": "ok", "certificate_days_left": if sequence % 2 == 0 { 36_600 } else { -36_600 } } ] }));
        report["device"] = json!({ "uptime_seconds": 100u64 * 366 * 86_400 });
        report["clock"] =
            json!({ "offset_ms": 316_224_000_000.0, "uncertainty_ms": 316_224_000_000.0 });
        reports.push(report);
    }
    let (status, body) = post(&collector, reports);
    assert_eq!(status, 200, "{body}");
    // Just beyond each bound: refused, naming the field.
    for (path, value, field) in [
        (
            "certificate_days_left",
            json!(36_601),
            "reports[0].probes[1].stages[0].certificate_days_left",
        ),
        (
            "uptime",
            json!(u64::MAX),
            "reports[0].device.uptime_seconds",
        ),
        ("offset", json!(1e308), "reports[0].clock.offset_ms"),
    ] {
        let mut report = report("T-EXTREME", 9, &rfc3339(now), false);
        report["probes"].as_array_mut().unwrap().push(json!({
            "target": "tls-host", "address": "tls.example:443", "stages": [ { "stage": "tls", "status": "ok" } ] }));
        match path {
            "certificate_days_left" => {
                report["probes"][1]["stages"][0]["certificate_days_left"] = value
            }
            "uptime" => report["device"] = json!({ "uptime_seconds": value }),
            _ => report["clock"] = json!({ "offset_ms": value, "uncertainty_ms": 1.0 }),
        }
        let (status, body) = post(&collector, vec![report]);
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}"
        );
    }

    // Admin dates: out of range is a 400 naming the field, never a panic.
    let silence = |extra: Value| {
        let mut body = json!({ "matchers": { "region": ["cn-west"] }, "created_by": "ops" });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    for (extra, field) in [
        (json!({ "duration_seconds": u64::MAX }), "duration_seconds"),
        (
            json!({ "duration_seconds": 40_000_000 }),
            "duration_seconds",
        ),
        (json!({ "ends_at": "9999-12-31T23:59:59Z" }), "ends_at"),
        (json!({ "ends_at": "-9999-01-01T00:00:00Z" }), "ends_at"),
        (json!({ "ends_at": "2000-01-01T00:00:00Z" }), "ends_at"),
        (
            json!({ "starts_at": "9999-12-31T23:00:00Z", "duration_seconds": 60 }),
            "starts_at",
        ),
    ] {
        let (status, body) = admin(
            &collector,
            "POST",
            "/api/v1/alerts/silences",
            silence(extra.clone()),
        );
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{extra}: {body}"
        );
    }
    let (status, body) = admin(
        &collector,
        "POST",
        "/api/v1/alerts/silences",
        silence(json!({ "duration_seconds": 366 * 86_400 })),
    );
    assert_eq!(status, 201, "{body}");
    let rule = |released: &str, days: u64| {
        json!({ "rules": [ { "component": "pos_app", "minimum": "1.0", "latest": "3.0",
                             "latest_released_on": released, "update_within_days": days } ] })
    };
    for (body, field) in [
        (rule("9999-12-31", 1), "rules[0].latest_released_on"),
        (
            rule("2026-11-01", u64::from(u32::MAX)),
            "rules[0].update_within_days",
        ),
    ] {
        let (status, answer) = admin(&collector, "PUT", "/api/v1/policy/versions", body);
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some(field)),
            "{answer}"
        );
    }
    let released = rfc3339(now)[..10].to_string();
    let (status, body) = admin(
        &collector,
        "PUT",
        "/api/v1/policy/versions",
        rule(&released, 3660),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&collector, vec![report("T-EXTREME", 4, &ahead, true)]);
    assert_eq!(status, 200, "{body}");

    // The finding dated a day ahead opens and is alerted on.
    let alerted = wait_for(Duration::from_secs(15), || {
        hook.requests()
            .iter()
            .any(|request| request.json()["firing"][0]["terminal_id"] == "T-EXTREME")
            .then_some(())
    });
    assert!(
        alerted.is_some(),
        "no alert; log:\n{}",
        collector.process.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(healthy(&mut collector), "log:\n{}", collector.process.log());

    // Stopped and started again, it reads all of it back and stays up.
    assert!(collector.process.terminate().success());
    let mut collector = Collector::start_again(dir.path());
    std::thread::sleep(Duration::from_secs(3));
    assert!(healthy(&mut collector), "log:\n{}", collector.process.log());
    let detail = collector.get_json("/api/v1/terminals/T-EXTREME");
    assert_eq!(detail["sequence"], 4, "{detail}");
    assert_eq!(detail["readiness"], "cannot_pay", "{detail}");
    let silences = collector.get_json("/api/v1/alerts/silences");
    assert_eq!(silences["silences"][0]["state"], "active", "{silences}");
    let notifications = collector.get_json("/api/v1/alerts/notifications");
    assert!(!notifications["notifications"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        metric(
            &collector,
            "posmon_state_unreadable_rows_total{table=\"terminals\"}"
        ),
        0.0
    );
}

#[test]
fn a_sequence_beyond_2_to_the_53_is_refused_and_a_new_instance_unpins_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let mut collector = start(dir.path(), &hook);
    let now = rfc3339(OffsetDateTime::now_utc());
    for sequence in [u64::MAX, 1 << 53] {
        let (status, body) = post(&collector, vec![report("T-SEQ", sequence, &now, false)]);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["field"], "reports[0].sequence", "{body}");
    }
    let highest = (1u64 << 53) - 1;
    let (status, body) = post(&collector, vec![report("T-SEQ", highest, &now, false)]);
    assert_eq!(
        (status, body["acknowledged_sequence"].as_u64()),
        (200, Some(highest))
    );
    // Pinned at the highest: a report without an instance is a repeat...
    let (_, body) = post(&collector, vec![report("T-SEQ", 5, &now, true)]);
    assert_eq!(body["acknowledged_sequence"].as_u64(), Some(highest));
    // ...but an agent naming its instance starts anew, and later ones name a new instance.
    for (instance, sequence) in [("11111111-aaaa", 1), ("22222222-bbbb", 1)] {
        let mut fresh = report("T-SEQ", sequence, &now, false);
        fresh["agent_instance"] = json!(instance);
        let (status, body) = post(&collector, vec![fresh]);
        assert_eq!(status, 200, "{body}");
        if instance.starts_with('2') {
            assert_eq!(body["acknowledged_sequence"], 1, "{body}");
        }
    }
    let detail = collector.get_json("/api/v1/terminals/T-SEQ");
    assert_eq!(detail["sequence"], 1, "{detail}");
    assert_eq!(
        detail["sequence_resets"], 2,
        "an instance counting from below the pinned mark, even the first one, starts anew: {detail}"
    );
    assert!(healthy(&mut collector));
}

#[test]
fn a_clock_that_jumps_back_does_not_freeze_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let mut collector = start(dir.path(), &hook);
    let now = OffsetDateTime::now_utc();
    let at = |minutes: i64| rfc3339(now + time::Duration::minutes(minutes));
    // Ten minutes ahead, healthy: the clock is found skewed.
    for sequence in 1..=2 {
        let (status, body) = post(&collector, vec![report("T-JUMP", sequence, &at(10), false)]);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(collector.finding_codes("T-JUMP"), ["env.clock_skew"]);
    // NTP steps the clock back ten minutes; then the payment host goes down. Every report is
    // dated before the state it follows, and each still moves it.
    for sequence in 3..=4 {
        let (status, body) = post(&collector, vec![report("T-JUMP", sequence, &at(0), true)]);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        collector.finding_codes("T-JUMP"),
        ["env.network.host_unreachable"],
        "the fault is seen and the corrected clock closed its finding"
    );
    let detail = collector.get_json("/api/v1/terminals/T-JUMP");
    assert_eq!(detail["readiness"], "cannot_pay", "{detail}");
    assert_eq!(detail["sequence"], 4);
    for sequence in 5..=6 {
        post(&collector, vec![report("T-JUMP", sequence, &at(1), false)]);
    }
    assert!(collector.finding_codes("T-JUMP").is_empty());
    assert!(healthy(&mut collector));
}

#[test]
fn a_real_agent_whose_state_was_wiped_is_applied_again_from_its_first_report() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let mut collector = start(dir.path(), &hook);
    let target = TargetServer::start();
    let token = collector.token("T-WIPED");
    let state = dir.path().join("T-WIPED-state");
    let config = quick_agent_config(
        &collector.url,
        &token,
        dir.path(),
        "T-WIPED",
        &target,
        1,
        "",
    );
    let detail = || collector.get_json("/api/v1/terminals/T-WIPED");
    let mut agent = start_agent(dir.path(), "agent", &config);
    let first = wait_for(Duration::from_secs(30), || {
        let detail = detail();
        (detail["sequence"].as_u64()? >= 6).then_some(detail)
    })
    .unwrap_or_else(|| panic!("the agent did not report; log:\n{}", agent.log()));
    let first_instance = first["agent_instance"].as_str().unwrap().to_string();
    assert!(first["sequence_resets"].is_null(), "{first}");
    agent.kill();
    let before = detail()["sequence"].as_u64().unwrap();

    // A re-install: the state directory is gone, the counter starts at 1 again.
    std::fs::remove_dir_all(&state).unwrap();
    let mut agent = start_agent(dir.path(), "agent-again", &config);
    let started = std::time::Instant::now();
    let again = wait_for(Duration::from_secs(20), || {
        let detail = detail();
        (detail["sequence_resets"] == 1 && detail["sequence"].as_u64()? >= 2).then_some(detail)
    })
    .unwrap_or_else(|| {
        panic!(
            "the new agent's reports were not applied; log:\n{}",
            agent.log()
        )
    });
    // Within about a report interval of its first delivery (start-up and one probe included).
    eprintln!(
        "the wiped agent was applied again {:?} after it started",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        again["sequence"].as_u64().unwrap() < before,
        "{again} after {before}"
    );
    assert_ne!(again["agent_instance"], first_instance.as_str(), "{again}");
    assert!(again["last_sequence_reset_at"].is_string(), "{again}");
    assert_eq!(again["readiness"], "can_pay", "{again}");
    // Its reports keep being applied, and the reset is counted and logged.
    let later = wait_for(Duration::from_secs(10), || {
        let sequence = detail()["sequence"].as_u64()?;
        (sequence > again["sequence"].as_u64()?).then_some(sequence)
    });
    assert!(later.is_some(), "{}", agent.log());
    assert_eq!(
        metric(&collector, "posmon_ingest_sequence_resets_total"),
        1.0
    );
    assert!(
        collector
            .process
            .log()
            .contains("T-WIPED started its sequences anew"),
        "{}",
        collector.process.log()
    );
    // The dashboard shows it on the terminal page.
    let script = reqwest::blocking::get(format!("{}/assets/app.js", collector.url))
        .and_then(|response| response.text())
        .unwrap_or_default();
    assert!(
        script.contains("terminal.resets"),
        "the terminal page names the reset"
    );
    agent.kill();
    assert!(healthy(&mut collector));
}
