//! The problem workflow against the real collector binary and a loopback webhook receiver
//! (issue 15): an acknowledged problem is told to the receiver once with who took it and then
//! not repeated; assignment and comments are recorded with who and when; the state survives a
//! restart; closing by hand resolves it at the receiver and puts it in the history, and a
//! problem that persists opens a new finding; a maintenance window holds notifications while
//! findings are still recorded, and what it held is sent once it ends.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers as well as tests: a failed unwrap is the test failing"
)]

use std::path::Path;
use std::time::Duration;

use posmon_e2e_tests::{wait_for, Collector, HttpSink};
use serde_json::{json, Value};

const ADMIN: &str = "an-admin-token-for-the-workflow-test";

fn start(dir: &Path, sink: &HttpSink) -> Collector {
    start_with(dir, sink, 100_000)
}

/// With `upstream_min_terminals` failing terminals a shared cause (an outage) can open.
fn start_with(dir: &Path, sink: &HttpSink, upstream_min_terminals: u32) -> Collector {
    std::fs::write(dir.join("admin-token"), ADMIN).unwrap();
    std::fs::write(dir.join("webhook-secret"), "webhook signing secret").unwrap();
    Collector::start(
        dir,
        &format!(
            "[auth]\nadmin_token_file = {:?}\n\n[diagnosis]\nevaluation_interval_seconds = 1\nupstream_min_terminals = {upstream_min_terminals}\n\n\
             [alerts]\ndashboard_url = \"http://dash.test\"\ndefault_receiver = \"hook\"\ngroup_by = [\"code\"]\n\
             group_wait_seconds = 0\ngroup_interval_seconds = 1\nrepeat_interval_seconds = 2\n\
             retry_initial_seconds = 1\nretry_max_seconds = 1\nrequest_timeout_seconds = 2\n\n\
             [[alerts.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = {{ file = {:?} }}\n",
            dir.join("admin-token").display().to_string(),
            sink.url(),
            dir.join("webhook-secret").display().to_string(),
        ),
    )
}

fn report(terminal_id: &str, sequence: u64, failing: bool) -> Value {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let tcp = if failing {
        json!({ "stage": "tcp", "status": "failed", "error": "refused" })
    } else {
        json!({ "stage": "tcp", "status": "ok", "latency_ms": { "min": 30.0, "avg": 31.0, "max": 33.0 } })
    };
    json!({ "reports": [ {
        "schema_version": 1, "terminal_id": terminal_id, "sequence": sequence, "observed_at": now,
        "agent_version": "0.1.0",
        "labels": { "region": "cn-flow", "model": "PAX-A920", "carrier": "china-mobile", "merchant": "M-1" },
        "probes": [ { "target": "pay", "address": "pay.flow.test:443", "stages": [
            { "stage": "gateway", "status": "ok", "attempts": 3, "successes": 3 }, tcp ] } ]
    } ] })
}

fn send(collector: &Collector, terminal_id: &str, sequence: u64, failing: bool) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(collector.token(terminal_id))
        .json(&report(terminal_id, sequence, failing))
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text());
}

/// POSTs an action; returns the status and the answer.
fn act(collector: &Collector, token: Option<&str>, path: &str, body: Value) -> (u16, Value) {
    let mut request = reqwest::blocking::Client::new()
        .post(format!("{}{path}", collector.url))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn open_finding(collector: &Collector, terminal_id: &str) -> Option<Value> {
    let findings = collector.get_json(&format!("/api/v1/findings?terminal={terminal_id}"));
    findings["findings"].as_array()?.first().cloned()
}

/// The webhook bodies received so far.
fn told(sink: &HttpSink) -> Vec<Value> {
    sink.requests()
        .iter()
        .map(|request| request.json())
        .collect()
}

#[test]
fn an_acknowledged_problem_is_told_once_with_who_took_it_survives_a_restart_and_closes_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let sink = HttpSink::start();
    let collector = start(dir.path(), &sink);
    send(&collector, "FLOW-1", 1, true);
    send(&collector, "FLOW-1", 2, true);
    let finding = wait_for(Duration::from_secs(10), || {
        open_finding(&collector, "FLOW-1")
    })
    .unwrap();
    let id = finding["id"].as_u64().unwrap();
    let path = |action: &str| format!("/api/v1/findings/{id}/{action}");
    // Firing, then reminded every 2 s while nobody holds it.
    let reminded = wait_for(Duration::from_secs(20), || {
        told(&sink)
            .iter()
            .any(|body| body["repeat"] == true)
            .then_some(())
    });
    assert!(reminded.is_some(), "no reminder: {:#?}", told(&sink));

    // Nobody but an operator acts: no token, a wrong token.
    assert_eq!(
        act(&collector, None, &path("acknowledge"), json!({})).0,
        401
    );
    assert_eq!(
        act(&collector, Some("wrong"), &path("acknowledge"), json!({})).0,
        401
    );
    // Bad requests name the field.
    let (status, answer) = act(
        &collector,
        Some(ADMIN),
        &path("assign"),
        json!({ "party": "plumber" }),
    );
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("party")),
        "{answer}"
    );
    let (status, answer) = act(&collector, Some(ADMIN), &path("comment"), json!({}));
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("comment")),
        "{answer}"
    );
    let (status, answer) = act(
        &collector,
        Some(ADMIN),
        &path("acknowledge"),
        json!({ "surprise": 1 }),
    );
    assert_eq!(status, 400, "{answer}");
    let (status, _) = act(
        &collector,
        Some(ADMIN),
        "/api/v1/findings/999999/acknowledge",
        json!({}),
    );
    assert_eq!(status, 404);

    // Acknowledged: the receiver hears who took it, once.
    let (status, answer) = act(
        &collector,
        Some(ADMIN),
        &path("acknowledge"),
        json!({ "comment": "on it" }),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"]["acknowledged_by"], "admin-token");
    let (status, answer) = act(&collector, Some(ADMIN), &path("acknowledge"), json!({}));
    assert_eq!(status, 409, "acknowledged twice: {answer}");
    let taken = wait_for(Duration::from_secs(10), || {
        told(&sink).into_iter().find(|body| {
            body["repeat"] == false && body["firing"][0]["acknowledged_by"] == "admin-token"
        })
    })
    .unwrap_or_else(|| panic!("the receiver never heard who took it: {:#?}", told(&sink)));
    assert!(
        taken["text"]
            .as_str()
            .unwrap_or_default()
            .contains("acknowledged by admin"),
        "{taken}"
    );
    // … and no reminder while it is held (repeat interval 2 s; watched for 6 s).
    let count = told(&sink).len();
    std::thread::sleep(Duration::from_secs(6));
    let later = told(&sink);
    assert_eq!(
        later.len(),
        count,
        "reminded while acknowledged: {:#?}",
        &later[count..]
    );

    let (status, _) = act(
        &collector,
        Some(ADMIN),
        &path("assign"),
        json!({ "person": "李工" }),
    );
    assert_eq!(status, 200);
    let (status, _) = act(
        &collector,
        Some(ADMIN),
        &path("comment"),
        json!({ "comment": "carrier ticket 4711" }),
    );
    assert_eq!(status, 200);
    let activity = collector.get_json(&format!("/api/v1/findings/{id}/activity"));
    let actions: Vec<&str> = activity["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["comment", "assign", "acknowledge"], "{activity}");
    assert!(activity["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|entry| entry["actor"] == "admin-token" && entry["at"].is_string()));
    assert_eq!(activity["entries"][2]["comment"], "on it");

    // A restart keeps what the team did.
    let collector = collector.restart_healthy(dir.path());
    let finding = open_finding(&collector, "FLOW-1").unwrap();
    assert_eq!(finding["id"].as_u64(), Some(id));
    assert_eq!(
        finding["workflow"]["acknowledged_by"], "admin-token",
        "{finding}"
    );
    assert_eq!(
        finding["workflow"]["assignee"]["person"], "李工",
        "{finding}"
    );
    assert_eq!(finding["workflow"]["comments"], 1, "{finding}");
    let audit = collector.get_json("/api/v1/audit?terminal=FLOW-1");
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(3),
        "{audit}"
    );

    // Closed by hand: resolved at the receiver, in the history, recorded.
    let (status, answer) = act(
        &collector,
        Some(ADMIN),
        &path("close"),
        json!({ "comment": "replaced the router" }),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(open_finding(&collector, "FLOW-1").is_none());
    let resolved = wait_for(Duration::from_secs(10), || {
        told(&sink)
            .into_iter()
            .find(|body| body["resolved"][0]["finding_id"].as_u64() == Some(id))
    });
    assert!(resolved.is_some(), "no resolution: {:#?}", told(&sink));
    let terminal = collector.get_json("/api/v1/terminals/FLOW-1");
    assert_eq!(
        terminal["findings_history"][0]["id"].as_u64(),
        Some(id),
        "{terminal}"
    );
    let audit = collector.get_json(&format!("/api/v1/audit?finding={id}"));
    assert_eq!(audit["entries"][0]["action"], "close", "{audit}");
    assert_eq!(
        audit["entries"][0]["comment"], "replaced the router",
        "{audit}"
    );
    let (status, _) = act(&collector, Some(ADMIN), &path("close"), json!({}));
    assert_eq!(status, 404, "closed twice");
    // Still failing: a new finding, without the old one's workflow.
    send(&collector, "FLOW-1", 3, true);
    send(&collector, "FLOW-1", 4, true);
    let reopened = wait_for(Duration::from_secs(10), || {
        open_finding(&collector, "FLOW-1")
    })
    .unwrap();
    assert_ne!(reopened["id"].as_u64(), Some(id));
    assert!(reopened.get("workflow").is_none(), "{reopened}");
}

#[test]
fn a_maintenance_window_holds_notifications_and_what_it_held_goes_out_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let sink = HttpSink::start();
    let collector = start(dir.path(), &sink);
    let client = reqwest::blocking::Client::new();
    let created: Value = client
        .post(format!("{}/api/v1/alerts/silences", collector.url))
        .bearer_auth(ADMIN)
        .json(
            &json!({ "matchers": { "region": ["cn-flow"] }, "duration_seconds": 3600,
                       "created_by": "ops", "comment": "carrier maintenance",
                       "recurrence": { "every": "daily", "duration_seconds": 7200 } }),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(created["state"], "active", "{created}");
    send(&collector, "FLOW-2", 1, true);
    send(&collector, "FLOW-2", 2, true);
    // The finding is recorded, the window matches it, nothing is sent.
    let finding = wait_for(Duration::from_secs(10), || {
        open_finding(&collector, "FLOW-2")
    })
    .unwrap();
    let window = collector.get_json(&format!("/api/v1/alerts/silences/{}", created["id"]));
    assert_eq!(window["matching"], 1, "{window}");
    assert_eq!(
        window["matched"][0]["finding_id"], finding["id"],
        "{window}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        told(&sink).is_empty(),
        "sent during the window: {:#?}",
        told(&sink)
    );
    // Ended early: what it held goes out.
    let ended = client
        .delete(format!(
            "{}/api/v1/alerts/silences/{}",
            collector.url, created["id"]
        ))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(ended.status().as_u16(), 200);
    let sent = wait_for(Duration::from_secs(10), || {
        told(&sink)
            .into_iter()
            .find(|body| body["firing"][0]["finding_id"] == finding["id"])
    });
    assert!(sent.is_some(), "the held finding was never sent");
    let audit = collector.get_json("/api/v1/audit");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["maintenance.end", "maintenance.create"],
        "{audit}"
    );
}

#[test]
fn a_localized_cause_is_owned_and_closed_by_hand_like_a_terminal_finding() {
    let dir = tempfile::tempdir().unwrap();
    let sink = HttpSink::start();
    let collector = start_with(dir.path(), &sink, 5);
    let terminals: Vec<String> = (1..=8).map(|n| format!("HOST-{n}")).collect();
    for sequence in 1..=2 {
        for terminal in &terminals {
            send(&collector, terminal, sequence, true);
        }
    }
    let outage = wait_for(Duration::from_secs(20), || {
        let findings = collector.get_json("/api/v1/findings?category=upstream");
        findings["findings"].as_array()?.first().cloned()
    })
    .unwrap_or_else(|| panic!("no outage: {}", collector.get_json("/api/v1/findings")));
    let id = outage["id"].as_u64().unwrap();
    // Its terminals' findings are explained by it.
    let visible = collector.get_json("/api/v1/findings?category=environment");
    assert_eq!(visible["total"], 0, "{visible}");
    let (status, answer) = act(
        &collector,
        Some(ADMIN),
        &format!("/api/v1/findings/{id}/acknowledge"),
        json!({}),
    );
    assert_eq!(status, 200, "{answer}");
    let overview = collector.get_json("/api/v1/overview");
    assert_eq!(
        overview["outages"][0]["workflow"]["acknowledged_by"], "admin-token",
        "{overview}"
    );
    let taken = wait_for(Duration::from_secs(10), || {
        told(&sink).into_iter().find(|body| {
            body["firing"][0]["code"] == "upstream.host_outage"
                && body["firing"][0]["acknowledged_by"] == "admin-token"
        })
    });
    assert!(
        taken.is_some(),
        "no acknowledgement told: {:#?}",
        told(&sink)
    );
    // Closed by hand: its terminals' findings are no longer explained by it (the failures
    // persist, so a new outage may open and explain them: never the closed one).
    let (status, answer) = act(
        &collector,
        Some(ADMIN),
        &format!("/api/v1/findings/{id}/close"),
        json!({ "comment": "the acquirer restored the host" }),
    );
    assert_eq!(status, 200, "{answer}");
    let own = collector.get_json("/api/v1/findings?category=environment&suppressed=include");
    assert_eq!(own["total"], 8, "{own}");
    assert!(
        own["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|finding| finding["suppressed_by"].as_u64() != Some(id)),
        "still explained by a closed outage: {own}"
    );
    let reopened = collector.get_json("/api/v1/findings?category=upstream");
    assert!(
        reopened["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|finding| finding["id"].as_u64() != Some(id)),
        "{reopened}"
    );
    let history = collector.get_json("/api/v1/audit?limit=1");
    assert_eq!(history["entries"][0]["action"], "close", "{history}");
    assert_eq!(history["entries"][0]["terminal_id"], "", "{history}");
}
