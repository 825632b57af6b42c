//! Fleet control end to end (issue 14): configuration profiles at the real collector, real
//! agents (`posmon-agent run`) following them — by the control long-poll, or by the
//! acknowledgements alone —, an invalid profile refused at the collector, settings one agent
//! cannot use refused by that agent while it keeps working; and "probe now" against an agent in
//! a shop built of network namespaces (needs root, `ip` and `nft`: without them that test is
//! ignored with the reason, and fails under CI).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use posmon_e2e_tests::netns::{self, Serve, Shop, PAYMENT_HOST};
use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{
    binary, healthy_system_root, start_agent, trial, wait_for, Collector, Process, TargetServer,
};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "an-admin-token-for-the-fleet-control-test";

fn main() -> ExitCode {
    if netns::serve_if_asked() {
        return ExitCode::FAILURE;
    }
    trials::run(vec![
        trial!(fifty_agents_follow_a_profile_and_one_refuses_what_it_cannot_use),
        trial!(
            probe_now_shows_a_fault_on_the_terminal_page_within_seconds,
            Need::Root,
            Need::Program("ip"),
            Need::Program("nft")
        ),
    ])
}

fn start_collector(dir: &Path) -> Collector {
    std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap_or_else(|e| panic!("{e}"));
    Collector::start(
        dir,
        &format!(
            "[auth]\nadmin_token_file = {:?}\n\n[diagnosis]\nevaluation_interval_seconds = 1\n",
            dir.join("admin-token").display().to_string()
        ),
    )
}

/// An admin request: its status and JSON answer.
fn admin(
    collector: &Collector,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::blocking::Client::new()
        .request(method, format!("{}{path}", collector.url))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .unwrap_or_else(|error| panic!("{path}: {error}"));
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn put_profile(collector: &Collector, name: &str, body: Value) -> (u16, Value) {
    admin(
        collector,
        reqwest::Method::PUT,
        &format!("/api/v1/config/profiles/{name}"),
        Some(body),
    )
}

/// The address a terminal's latest report probed for `target`, from the terminal page's API.
fn probed_address(terminal: &Value, target: &str) -> Option<String> {
    terminal["targets"]
        .as_array()?
        .iter()
        .find(|view| view["target"] == target)
        .and_then(|view| view["address"].as_str())
        .map(str::to_string)
}

fn agent_config(
    collector: &Collector,
    dir: &Path,
    terminal_id: &str,
    target: &str,
    report_interval_seconds: u64,
    extra: &str,
) -> String {
    format!(
        r#"terminal_id = "{terminal_id}"
collector_url = "{url}"
token = "{token}"
state_dir = "{state}"
system_root = "{root}"
probe_interval_seconds = {report_interval_seconds}
report_interval_seconds = {report_interval_seconds}
check_interval_seconds = 2
watch_interval_seconds = 0
probe_timeout_seconds = 1
request_timeout_seconds = 5
retry_max_seconds = 2
attempts = 1
icmp = false
{extra}

[[targets]]
name = "payment-host"
address = "{target}"
"#,
        url = collector.url,
        token = collector.token(terminal_id),
        state = dir.join(format!("{terminal_id}-state")).display(),
        root = healthy_system_root(dir).display(),
    )
}

/// Must show 1: a profile changes the payment host's address and 50 real agents probe the new
/// one within two report intervals — half told by the long-poll, half only by the
/// acknowledgements of their reports; an invalid profile is refused at the collector, naming
/// the key; a profile the collector takes but one agent cannot use (a CA bundle it lacks) is
/// refused by that agent, which keeps probing with its last settings and says why in its next
/// report.
fn fifty_agents_follow_a_profile_and_one_refuses_what_it_cannot_use() {
    const AGENTS: usize = 50;
    const REPORT_INTERVAL: u64 = 10;
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let collector = start_collector(dir.path());
    let old_host = TargetServer::start();
    let new_host = TargetServer::start();
    let ids: Vec<String> = (0..AGENTS)
        .map(|index| format!("T-FC-{index:02}"))
        .collect();
    let mut agents: Vec<Process> = Vec::with_capacity(AGENTS);
    for (index, id) in ids.iter().enumerate() {
        // The even ones keep the long-poll; the odd ones learn from acknowledgements only.
        let extra = if index % 2 == 0 {
            "control_hold_seconds = 600"
        } else {
            "control_hold_seconds = 0"
        };
        let config = agent_config(
            &collector,
            dir.path(),
            id,
            &old_host.address.to_string(),
            REPORT_INTERVAL,
            extra,
        );
        agents.push(start_agent(dir.path(), id, &config));
    }
    let terminal = |id: &str| collector.get_json(&format!("/api/v1/terminals/{id}"));
    let old = old_host.address.to_string();
    let all_on = |address: &str| {
        ids.iter()
            .all(|id| probed_address(&terminal(id), "payment-host").as_deref() == Some(address))
    };
    assert!(
        wait_for(Duration::from_secs(60), || all_on(&old).then_some(())).is_some(),
        "not every agent reported on the old host; one log:\n{}",
        agents[0].log()
    );

    // Refused at the collector, naming the key; nothing changes.
    let (status, body) = put_profile(
        &collector,
        "payment",
        json!({"selector": {}, "settings": {"targets": [{"name": "payment-host", "address": "no port here"}]}}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["field"], "settings.targets[0].address",
        "{body}"
    );
    let (status, body) = put_profile(
        &collector,
        "payment",
        json!({"selector": {}, "settings": {"components": [{"name": "pos_app", "command": ["/bin/sh", "-c", "id"]}]}}),
    );
    assert_eq!(status, 400, "a command is never a setting: {body}");

    // The payment host moves.
    let new = new_host.address.to_string();
    let (status, body) = put_profile(
        &collector,
        "payment",
        json!({"selector": {}, "settings": {"targets": [{"name": "payment-host", "address": new}]},
               "comment": "the acquirer moved the payment host"}),
    );
    assert_eq!(status, 200, "{body}");
    let changed = Instant::now();
    let mut followed: Vec<Option<Duration>> = vec![None; AGENTS];
    let deadline = Duration::from_secs(2 * REPORT_INTERVAL);
    while changed.elapsed() < deadline + Duration::from_secs(10)
        && followed.iter().any(Option::is_none)
    {
        for (index, id) in ids.iter().enumerate() {
            if followed[index].is_none()
                && probed_address(&terminal(id), "payment-host").as_deref() == Some(new.as_str())
            {
                followed[index] = Some(changed.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let slowest = |parity: usize| {
        followed
            .iter()
            .enumerate()
            .filter(|(index, _)| index % 2 == parity)
            .map(|(_, took)| took.unwrap_or(Duration::MAX))
            .max()
            .unwrap_or_default()
    };
    println!(
        "{AGENTS} agents on the new payment host: long-poll slowest {:?}, acknowledgements only slowest {:?} (report interval {REPORT_INTERVAL} s)",
        slowest(0),
        slowest(1)
    );
    for (index, took) in followed.iter().enumerate() {
        assert!(
            took.is_some_and(|took| took <= deadline),
            "{} probed the new address after {took:?} (within {deadline:?} expected); its log:\n{}",
            ids[index],
            agents[index].log()
        );
    }
    let versions = collector.get_json("/api/v1/config/versions");
    let running: u64 = versions["versions"]
        .as_array()
        .map(|versions| versions.iter().filter_map(|v| v["running"].as_u64()).sum())
        .unwrap_or_default();
    assert_eq!(running, AGENTS as u64, "{versions:#}");
    let history = collector.get_json("/api/v1/config/history?profile=payment");
    assert_eq!(history["history"][0]["by"], "admin-token", "{history:#}");

    // One terminal gets settings naming a CA bundle it does not have.
    let lacking = ids[AGENTS - 1].as_str();
    let (status, body) = put_profile(
        &collector,
        "lacks-ca",
        json!({"selector": {"terminal": lacking},
               "settings": {"targets": [{"name": "payment-host", "address": format!("pay.test:{}", new_host.address.port()),
                                         "tls": true, "ca_file": "/nonexistent/posmon-private-ca.pem"}]}}),
    );
    assert_eq!(status, 200, "valid for the collector: {body}");
    let sequence_at = |id: &str| terminal(id)["sequence"].as_u64().unwrap_or(0);
    let rejected = wait_for(Duration::from_secs(2 * REPORT_INTERVAL), || {
        let view = terminal(lacking);
        view["config"]["rejected"]["reason"]
            .as_str()
            .map(str::to_string)
    });
    let rejected = rejected.unwrap_or_else(|| {
        panic!(
            "{lacking} did not report the refusal; its view: {:#}\nits log:\n{}",
            terminal(lacking),
            agents[AGENTS - 1].log()
        )
    });
    assert!(rejected.starts_with("targets[0].ca_file"), "{rejected}");
    // It keeps working on its last settings: reports keep coming, on the new host.
    let before = sequence_at(lacking);
    assert!(
        wait_for(Duration::from_secs(3 * REPORT_INTERVAL), || (sequence_at(
            lacking
        ) > before)
            .then_some(()))
        .is_some(),
        "{lacking} stopped reporting"
    );
    let view = terminal(lacking);
    assert_eq!(
        probed_address(&view, "payment-host").as_deref(),
        Some(new.as_str()),
        "{view:#}"
    );
    // It can take payments (`at_risk` at most: the test machine's own disk is the agents').
    assert!(
        ["can_pay", "at_risk"].contains(&view["readiness"].as_str().unwrap_or_default()),
        "{view:#}"
    );
    let versions = collector.get_json("/api/v1/config/versions");
    let refused: u64 = versions["versions"]
        .as_array()
        .map(|versions| versions.iter().filter_map(|v| v["rejected"].as_u64()).sum())
        .unwrap_or_default();
    assert_eq!(refused, 1, "{versions:#}");
    for agent in &agents {
        let log = agent.log();
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// Must show 2: with the report interval at 60 s, a fault injected in the shop's namespaces
/// shows on the terminal's page within 5 s of "probe now".
fn probe_now_shows_a_fault_on_the_terminal_page_within_seconds() {
    const TERMINAL: &str = "T-PROBE-NOW";
    const PORT: u16 = 7000;
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let collector = start_collector(dir.path());
    let shop = Shop::new();
    let (forward_port, _forwarder) = shop
        .terminal
        .forward_to(dir.path(), ([127, 0, 0, 1], collector.port()).into());
    let _switch = shop
        .router
        .serve(dir.path(), "switch", &[Serve::Switch(PAYMENT_HOST, PORT)]);
    let config = format!(
        "terminal_id = \"{TERMINAL}\"\ncollector_url = \"http://127.0.0.1:{forward_port}\"\n\
         token = \"{token}\"\nstate_dir = {state:?}\nsystem_root = {root:?}\ntransport = \"https\"\n\
         probe_interval_seconds = 60\nreport_interval_seconds = 60\nprobe_timeout_seconds = 2\n\
         request_timeout_seconds = 5\nretry_max_seconds = 2\nattempts = 1\nicmp = false\n\n\
         [[targets]]\nname = \"payment-host\"\naddress = \"{PAYMENT_HOST}:{PORT}\"\n",
        token = collector.token(TERMINAL),
        state = dir.path().join("state").display().to_string(),
        root = healthy_system_root(dir.path()).display().to_string(),
    );
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, config).unwrap_or_else(|error| panic!("{error}"));
    let config_arg = config_path.display().to_string();
    let agent = shop.terminal.spawn(
        &binary("posmon-agent"),
        &["run", "--config", &config_arg],
        &[("POSMON_LOG", "debug")],
        &dir.path().join("agent.log"),
    );
    let terminal = || collector.get_json(&format!("/api/v1/terminals/{TERMINAL}"));
    let status_of = |view: &Value| {
        view["targets"]
            .as_array()
            .and_then(|targets| targets.first())
            .and_then(|target| target["status"].as_str())
            .map(str::to_string)
    };
    let healthy = wait_for(Duration::from_secs(30), || {
        let view = terminal();
        (status_of(&view).as_deref() == Some("ok") && view["readiness"] == "can_pay").then_some(())
    });
    assert!(
        healthy.is_some(),
        "never healthy: {:#}\n{}",
        terminal(),
        agent.log()
    );
    // Past the start's confirming cycle: the next scheduled probe is a minute away.
    std::thread::sleep(Duration::from_secs(5));
    let sequence = terminal()["sequence"].as_u64().unwrap_or(0);

    // The payment host's firewall starts refusing the payment port.
    shop.router.nft(&format!(
        "add table inet host; \
         add chain inet host input {{ type filter hook input priority 0; }}; \
         add rule inet host input ip daddr {PAYMENT_HOST} tcp dport {PORT} reject with tcp reset"
    ));
    let (status, body) = admin(
        &collector,
        reqwest::Method::POST,
        &format!("/api/v1/terminals/{TERMINAL}/probe"),
        None,
    );
    let requested = Instant::now();
    assert_eq!(status, 202, "{body}");
    let id = body["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id: {body}"));
    let shown = wait_for(Duration::from_secs(15), || {
        let view = terminal();
        (status_of(&view).as_deref() == Some("failed")).then(|| (requested.elapsed(), view))
    });
    let (took, view) = shown.unwrap_or_else(|| {
        panic!(
            "the fault never showed: {:#}\nagent log:\n{}",
            terminal(),
            agent.log()
        )
    });
    println!("probe now: the fault showed on the terminal page {took:?} after the request");
    assert!(
        took <= Duration::from_secs(5),
        "{took:?}; agent log:\n{}",
        agent.log()
    );
    // It was the request's probe that showed it, not a scheduled one.
    assert_eq!(view["probe"]["id"].as_u64(), Some(id), "{view:#}");
    assert_eq!(view["probe"]["requested_by"], "admin-token", "{view:#}");
    assert!(view["probe"]["answered_at"].is_string(), "{view:#}");
    assert!(view["sequence"].as_u64().unwrap_or(0) > sequence);
    let error = view["targets"][0]["error"].as_str().unwrap_or_default();
    assert_eq!(error, "refused", "{view:#}");
    drop(agent);
}
