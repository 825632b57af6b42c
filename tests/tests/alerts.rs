//! Alerting end to end, against the real collector binary and receivers the tests own on
//! loopback: the request shapes and signatures of every receiver kind (checked with openssl),
//! a real Alertmanager, a receiver that is down across a collector restart, and a region that
//! loses the payment host.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers as well as tests: a failed unwrap is the test failing"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{
    free_port, openssl_hmac, program, trial, wait_for, Collector, HttpSink, Process, SmtpSink,
};
use posmon_protocol::{terminal_token, FleetKey};
use serde_json::{json, Value};

const SECRET: &str = "an end-to-end alerting fleet secret";
const PAYMENT_HOST: &str = "pay.acquirer.test:443";
const ROBOT_SECRET: &str = "SECrobot-signing-secret";
const WEBHOOK_SECRET: &str = "webhook signing secret";
/// Where Debian's prometheus-alertmanager package installs Alertmanager.
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

fn main() -> ExitCode {
    trials::run(vec![
        // openssl: an HMAC implementation independent of the collector's.
        trial!(
            every_receiver_gets_its_documented_request_shape_and_signature,
            Need::Program("openssl")
        ),
        trial!(
            a_real_alertmanager_lists_the_alert_then_resolves_it_and_notifies_its_webhook,
            Need::Program(ALERTMANAGER)
        ),
        trial!(a_receiver_down_across_a_collector_restart_gets_every_notification_once),
        trial!(a_region_losing_the_payment_host_is_one_grouped_message),
        trial!(a_host_outage_is_sent_instead_of_the_terminal_findings_it_explains),
        trial!(a_silence_holds_back_matching_findings_until_it_is_expired),
    ])
}

/// Starts a collector with a fleet secret the test knows, quick evaluation, no upstream
/// outages unless `outages`, and `alerts` appended.
fn start(dir: &Path, outages: bool, alerts: &str) -> Collector {
    start_with(dir, outages, "", alerts)
}

/// [`start`] with more `[auth]` keys.
fn start_with(dir: &Path, outages: bool, auth: &str, alerts: &str) -> Collector {
    let secret_file = dir.join("fleet-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    std::fs::write(dir.join("robot-secret"), ROBOT_SECRET).unwrap();
    std::fs::write(dir.join("webhook-secret"), WEBHOOK_SECRET).unwrap();
    let upstream = if outages { 5 } else { 100_000 };
    let collector = Collector::start(
        dir,
        &format!(
            "[auth]\nsecret_file = {:?}\n{auth}\n[diagnosis]\nevaluation_interval_seconds = 1\nupstream_min_terminals = {upstream}\n\n{alerts}",
            secret_file.display().to_string()
        ),
    );
    // The start-up warning that nothing will be sent is for collectors without a receiver
    // only (the dashboard's browser test sees it on one without).
    let log = collector.process.log();
    assert_eq!(
        log.contains("No alert receiver is configured"),
        !alerts.contains("[[alerts.receivers]]"),
        "{log}"
    );
    collector
}

fn file(dir: &Path, name: &str) -> String {
    format!("{{ file = {:?} }}", dir.join(name).display().to_string())
}

/// The `[alerts]` timing of the tests: no waiting unless asked, quick retries.
fn alerts_section(group_wait_seconds: u64) -> String {
    format!(
        "[alerts]\ndashboard_url = \"http://dash.test\"\ndefault_receiver = \"default\"\ngroup_wait_seconds = {group_wait_seconds}\ngroup_interval_seconds = 1\nrepeat_interval_seconds = 3600\nretry_initial_seconds = 1\nretry_max_seconds = 1\nrequest_timeout_seconds = 2\n"
    )
}

fn webhook(dir: &Path, name: &str, url: &str) -> String {
    format!(
        "[[alerts.receivers]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = {}\n",
        file(dir, "webhook-secret")
    )
}

fn report(terminal_id: &str, sequence: u64, region: &str, host_down: bool) -> Value {
    let tcp = if host_down {
        json!({ "stage": "tcp", "status": "failed", "error": "timeout" })
    } else {
        json!({ "stage": "tcp", "status": "ok", "latency_ms": { "min": 30.0, "avg": 35.0, "max": 41.0 } })
    };
    json!({
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": format!("{}T02:{:02}:{:02}Z", posmon_e2e_tests::recent_day(), sequence / 60 % 60, sequence % 60),
        "agent_version": "0.1.0",
        "labels": { "model": "PAX-A920", "region": region, "carrier": "carrier-x", "merchant": format!("M-{terminal_id}") },
        "software": { "pos_app": { "version": "2.9.1" } },
        "probes": [ { "target": "payment-host", "address": PAYMENT_HOST, "stages": [
            { "stage": "gateway", "status": "ok", "attempts": 3, "successes": 3 }, tcp ] } ]
    })
}

struct Fleet<'a> {
    collector: &'a Collector,
    client: reqwest::blocking::Client,
    sequences: BTreeMap<String, u64>,
}

impl<'a> Fleet<'a> {
    fn new(collector: &'a Collector) -> Self {
        Fleet {
            collector,
            client: reqwest::blocking::Client::new(),
            sequences: BTreeMap::new(),
        }
    }

    /// Sends `count` reports of a terminal with the host up or down: two down open a
    /// host_unreachable finding, two up close it.
    fn send(&mut self, terminal_id: &str, region: &str, host_down: bool, count: usize) {
        let key = FleetKey::new("k1", SECRET.as_bytes().to_vec()).unwrap();
        for _ in 0..count {
            let sequence = self.sequences.entry(terminal_id.to_string()).or_insert(0);
            *sequence += 1;
            let response = self
                .client
                .post(format!("{}/api/v1/reports", self.collector.url))
                .bearer_auth(terminal_token(&key, terminal_id))
                .json(&json!({ "reports": [report(terminal_id, *sequence, region, host_down)] }))
                .send()
                .unwrap();
            assert!(
                response.status().is_success(),
                "{}",
                response.text().unwrap()
            );
        }
    }
}

fn wait_requests(
    sink: &HttpSink,
    count: usize,
    collector: &Collector,
) -> Vec<posmon_e2e_tests::Request> {
    wait_for(Duration::from_secs(20), || {
        let requests = sink.requests();
        (requests.len() >= count).then_some(requests)
    })
    .unwrap_or_else(|| {
        panic!(
            "{} requests, expected {count}; log:\n{}",
            sink.requests().len(),
            collector.process.log()
        )
    })
}

/// `%XX` decoding of a query value (form encoding: `+` is a space).
fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn query(target: &str) -> BTreeMap<String, String> {
    target
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn every_receiver_gets_its_documented_request_shape_and_signature() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let ding = HttpSink::start();
    ding.set_reply(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    let wecom = HttpSink::start();
    wecom.set_reply(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    let feishu = HttpSink::start();
    feishu.set_reply(200, r#"{"code":0,"msg":"success","data":{}}"#);
    let smtp = SmtpSink::start();
    let path = dir.path();
    let mut config = alerts_section(0);
    config.push_str(&webhook(path, "default", &hook.url()));
    config.push_str(&format!(
        "[[alerts.receivers]]\nname = \"ding\"\nkind = \"dingtalk\"\nlanguage = \"zh-CN\"\nurl = \"{}/robot/send?access_token=TOKEN\"\nsecret = {}\n",
        ding.url(),
        file(path, "robot-secret")
    ));
    config.push_str(&format!(
        "[[alerts.receivers]]\nname = \"wecom\"\nkind = \"wecom\"\nurl = \"{}/cgi-bin/webhook/send?key=KEY\"\n",
        wecom.url()
    ));
    config.push_str(&format!(
        "[[alerts.receivers]]\nname = \"feishu\"\nkind = \"feishu\"\nurl = \"{}/open-apis/bot/v2/hook/HOOK\"\nsecret = {}\n",
        feishu.url(),
        file(path, "robot-secret")
    ));
    config.push_str(&format!(
        "[[alerts.receivers]]\nname = \"mail\"\nkind = \"email\"\nsmtp_server = \"{}\"\nsmtp_tls = \"none\"\nfrom = \"posmon <posmon@collector.test>\"\nto = [\"noc@acquirer.test\"]\n",
        smtp.address
    ));
    for receiver in ["default", "ding", "wecom", "feishu", "mail"] {
        config.push_str(&format!(
            "[[alerts.routes]]\nname = \"all-to-{receiver}\"\nreceiver = \"{receiver}\"\ncontinue = true\n"
        ));
    }
    let collector = start(path, false, &config);
    let mut fleet = Fleet::new(&collector);
    fleet.send("T-1", "cn-east", false, 1);
    fleet.send("T-1", "cn-east", true, 2);

    // The generic webhook: JSON signed with HMAC-SHA256 of the body.
    let request = &wait_requests(&hook, 1, &collector)[0];
    assert_eq!(request.method, "POST");
    let (hex, _) = openssl_hmac(WEBHOOK_SECRET.as_bytes(), &request.body);
    assert_eq!(
        request.header("x-posmon-signature"),
        Some(format!("sha256={hex}").as_str())
    );
    let body = request.json();
    assert_eq!(
        request.header("x-posmon-idempotency-key"),
        body["idempotency_key"].as_str()
    );
    assert_eq!(body["status"], "firing");
    assert_eq!(
        body["group_labels"],
        json!({ "code": "env.network.host_unreachable", "region": "cn-east" })
    );
    let alert = &body["firing"][0];
    assert_eq!(alert["terminal_id"], "T-1");
    assert_eq!(alert["merchant"], "M-T-1");
    assert_eq!(alert["region"], "cn-east");
    assert_eq!(alert["party"], "network_provider");
    assert_eq!(alert["link"], "http://dash.test/#/terminal/T-1");
    assert!(
        alert["since"].as_str().is_some_and(
            |since| since.starts_with(&format!("{}T02:00:02", posmon_e2e_tests::recent_day()))
        ),
        "{alert}"
    );
    assert!(alert["evidence"].to_string().contains("timeout"), "{alert}");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("What to do") && text.contains("**T-1**"),
        "{text}"
    );

    // DingTalk: markdown; timestamp (ms) and the URL-encoded base64 sign in the query.
    let request = &wait_requests(&ding, 1, &collector)[0];
    assert!(
        request
            .target
            .starts_with("/robot/send?access_token=TOKEN&timestamp="),
        "{}",
        request.target
    );
    let parameters = query(&request.target);
    let timestamp = &parameters["timestamp"];
    assert_eq!(timestamp.len(), 13, "milliseconds: {timestamp}");
    let raw_sign = &parameters["sign"];
    assert!(
        !raw_sign.contains('+') && !raw_sign.contains('/') && !raw_sign.contains('='),
        "URL-encoded: {raw_sign}"
    );
    let (_, expected) = openssl_hmac(
        ROBOT_SECRET.as_bytes(),
        format!("{timestamp}\n{ROBOT_SECRET}").as_bytes(),
    );
    assert_eq!(url_decode(raw_sign), expected);
    let body = request.json();
    assert_eq!(body["msgtype"], "markdown");
    assert!(
        body["markdown"]["title"]
            .as_str()
            .unwrap()
            .starts_with("【告警:1】无法收款：支付主机不可达"),
        "{body}"
    );
    let text = body["markdown"]["text"].as_str().unwrap();
    assert!(
        text.contains("**负责方**: 网络运营商")
            && text.contains("商户 M-T-1")
            && text.contains("http://dash.test/#/terminal/T-1"),
        "{text}"
    );

    // WeCom: markdown content within 4096 bytes.
    let request = &wait_requests(&wecom, 1, &collector)[0];
    assert_eq!(request.target, "/cgi-bin/webhook/send?key=KEY");
    let body = request.json();
    assert_eq!(body["msgtype"], "markdown");
    let content = body["markdown"]["content"].as_str().unwrap();
    assert!(
        content.len() <= 4096
            && content.contains("[FIRING:1] Cannot take payments: Payment host unreachable"),
        "{content}"
    );
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");

    // Feishu: a card; timestamp (s) and sign = base64 HMAC keyed by "timestamp\nsecret" over "".
    let request = &wait_requests(&feishu, 1, &collector)[0];
    assert_eq!(request.target, "/open-apis/bot/v2/hook/HOOK");
    let body = request.json();
    let timestamp = body["timestamp"].as_str().unwrap();
    assert_eq!(timestamp.len(), 10, "seconds: {timestamp}");
    let (_, expected) = openssl_hmac(format!("{timestamp}\n{ROBOT_SECRET}").as_bytes(), b"");
    assert_eq!(body["sign"], expected.as_str());
    assert_eq!(body["msg_type"], "interactive");
    assert!(body["card"]["header"]["title"]["content"]
        .as_str()
        .unwrap()
        .contains("Payment host unreachable"));
    assert_eq!(body["card"]["elements"][0]["tag"], "markdown");

    // Email over SMTP.
    let mail = wait_for(Duration::from_secs(20), || smtp.messages().first().cloned())
        .unwrap_or_else(|| panic!("no mail; log:\n{}", collector.process.log()));
    assert!(
        mail.contains("Subject: [FIRING:1] Cannot take payments: Payment host unreachable"),
        "{mail}"
    );
    assert!(
        mail.contains("To: noc@acquirer.test") && mail.contains("T-1"),
        "{mail}"
    );

    // It closes: every receiver hears that too, once.
    fleet.send("T-1", "cn-east", false, 2);
    let requests = wait_requests(&hook, 2, &collector);
    let resolved = requests[1].json();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolved"][0]["terminal_id"], "T-1");
    assert!(resolved["resolved"][0]["closed_at"].is_string());
    for sink in [&ding, &wecom, &feishu] {
        wait_requests(sink, 2, &collector);
    }
    wait_for(Duration::from_secs(10), || {
        (smtp.messages().len() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no second mail"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.requests().len(), 2, "nothing more");

    // Delivery state in the API and metrics.
    let listed = collector.get_json("/api/v1/alerts/notifications");
    let notifications = listed["notifications"].as_array().unwrap();
    assert_eq!(notifications.len(), 10, "{listed}");
    assert!(
        notifications
            .iter()
            .all(|n| n["status"] == "delivered" && n["attempts"] == 1),
        "{listed}"
    );
    let metrics = collector.metrics();
    assert!(
        metrics
            .contains("posmon_alert_notifications_total{receiver=\"ding\",result=\"delivered\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("posmon_alert_outbox_pending 0"),
        "{metrics}"
    );
    assert!(
        !collector.process.log().contains(ROBOT_SECRET),
        "a secret was logged"
    );
}

/// A real Alertmanager the test starts, delivering to a webhook the test owns.
struct Alertmanager {
    _process: Process,
    url: String,
}

fn start_alertmanager(dir: &Path, sink: &HttpSink) -> Alertmanager {
    let program = program(ALERTMANAGER);
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: test\n  group_by: [alertname, region]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: test\n    webhook_configs:\n      - url: {}/alertmanager\n        send_resolved: true\n",
            sink.url()
        ),
    )
    .unwrap();
    let port = free_port();
    let storage = dir.join("alertmanager-data");
    let process = Process::spawn_program(
        &program,
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.path={}", storage.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=",
        ],
        &dir.join("alertmanager.log"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let ready = wait_for(Duration::from_secs(20), || {
        reqwest::blocking::get(format!("{url}/-/ready"))
            .ok()
            .filter(|response| response.status().is_success())
    });
    assert!(
        ready.is_some(),
        "alertmanager did not start:\n{}",
        process.log()
    );
    Alertmanager {
        _process: process,
        url,
    }
}

fn a_real_alertmanager_lists_the_alert_then_resolves_it_and_notifies_its_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let alertmanager_hook = HttpSink::start();
    let alertmanager = start_alertmanager(dir.path(), &alertmanager_hook);
    let config = format!(
        "{}[[alerts.receivers]]\nname = \"default\"\nkind = \"alertmanager\"\nurl = \"{}\"\n",
        alerts_section(0),
        alertmanager.url
    );
    let collector = start(dir.path(), false, &config);
    let mut fleet = Fleet::new(&collector);
    fleet.send("T-7", "cn-north", false, 1);
    fleet.send("T-7", "cn-north", true, 2);

    let listed = wait_for(Duration::from_secs(20), || {
        let alerts: Value = reqwest::blocking::get(format!("{}/api/v2/alerts", alertmanager.url))
            .ok()?
            .json()
            .ok()?;
        alerts.as_array().filter(|list| !list.is_empty()).cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "alertmanager lists no alert; log:\n{}",
            collector.process.log()
        )
    });
    assert_eq!(listed.len(), 1, "{listed:?}");
    let labels = &listed[0]["labels"];
    for (name, value) in [
        ("alertname", "env.network.host_unreachable"),
        ("code", "env.network.host_unreachable"),
        ("severity", "critical"),
        ("category", "environment"),
        ("party", "network_provider"),
        ("terminal", "T-7"),
        ("region", "cn-north"),
        ("carrier", "carrier-x"),
        ("model", "PAX-A920"),
        ("merchant", "M-T-7"),
        ("subject", "payment-host"),
    ] {
        assert_eq!(labels[name], value, "{name} in {labels}");
    }
    assert_eq!(listed[0]["status"]["state"], "active", "{listed:?}");
    assert_eq!(
        listed[0]["annotations"]["dashboard"],
        "http://dash.test/#/terminal/T-7"
    );

    // Alertmanager delivers to its webhook, which the test owns.
    let firing = wait_for(Duration::from_secs(20), || {
        alertmanager_hook
            .requests()
            .into_iter()
            .find(|request| request.json()["status"] == "firing")
    })
    .unwrap_or_else(|| panic!("alertmanager sent nothing to its webhook"));
    assert_eq!(firing.json()["alerts"][0]["labels"]["terminal"], "T-7");

    // The finding closes: the alert resolves in Alertmanager and its webhook hears of it.
    fleet.send("T-7", "cn-north", false, 2);
    let resolved = wait_for(Duration::from_secs(30), || {
        alertmanager_hook
            .requests()
            .into_iter()
            .find(|request| request.json()["status"] == "resolved")
    })
    .unwrap_or_else(|| {
        panic!(
            "no resolution reached the webhook; log:\n{}",
            collector.process.log()
        )
    });
    let alert = &resolved.json()["alerts"][0];
    assert_eq!(alert["status"], "resolved");
    assert_eq!(alert["labels"]["terminal"], "T-7");
    let active: Value = reqwest::blocking::get(format!(
        "{}/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=false",
        alertmanager.url
    ))
    .unwrap()
    .json()
    .unwrap();
    assert!(
        active.as_array().is_some_and(|list| list
            .iter()
            .all(|alert| alert["status"]["state"] != "active")),
        "{active}"
    );
}

fn a_receiver_down_across_a_collector_restart_gets_every_notification_once() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver's port, with nothing listening yet: it is down.
    let port = free_port();
    let config = format!(
        "{}{}",
        alerts_section(0),
        webhook(dir.path(), "default", &format!("http://127.0.0.1:{port}"))
    );
    let mut collector = start(dir.path(), false, &config);
    let regions = ["cn-east", "cn-north", "cn-south", "cn-west"];
    let pending = |collector: &Collector, count: usize| {
        wait_for(Duration::from_secs(20), || {
            let listed = collector.get_json("/api/v1/alerts/notifications?status=pending");
            let pending = listed["notifications"].as_array()?.clone();
            // Delivered in order: the oldest has been tried and failed.
            (pending.len() == count && pending.last()?["attempts"].as_u64() >= Some(1))
                .then_some(())
        })
        .unwrap_or_else(|| panic!("{}", collector.get_json("/api/v1/alerts/notifications")))
    };
    {
        let mut fleet = Fleet::new(&collector);
        for (index, region) in regions.iter().enumerate() {
            fleet.send(&format!("T-{index}"), region, true, 2);
        }
        pending(&collector, 4);
        // Two of them recover while the receiver is still down: their resolutions queue too.
        fleet.send("T-0", "cn-east", false, 2);
        fleet.send("T-1", "cn-north", false, 2);
    }
    pending(&collector, 6);
    let notifications = collector.get_json("/api/v1/alerts/notifications");
    assert!(
        notifications.to_string().contains("cannot reach"),
        "{notifications}"
    );
    assert!(collector
        .metrics()
        .contains("posmon_alert_outbox_pending 6"));
    collector.process.kill();

    // The collector comes back first, the receiver a little later.
    let collector = Collector::start_again(dir.path());
    std::thread::sleep(Duration::from_secs(2));
    let sink = HttpSink::start_on(format!("127.0.0.1:{port}").parse().unwrap());
    let requests = wait_requests(&sink, 6, &collector);
    std::thread::sleep(Duration::from_secs(3));
    let requests = if sink.requests().len() > requests.len() {
        sink.requests()
    } else {
        requests
    };
    let mut keys: Vec<String> = requests
        .iter()
        .map(|request| {
            request
                .header("x-posmon-idempotency-key")
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), requests.len(), "a notification arrived twice");
    let mut told: Vec<(String, String)> = Vec::new();
    for request in &requests {
        let body = request.json();
        for (state, list) in [("firing", &body["firing"]), ("resolved", &body["resolved"])] {
            for alert in list.as_array().unwrap() {
                told.push((
                    alert["terminal_id"].as_str().unwrap().to_string(),
                    state.to_string(),
                ));
            }
        }
    }
    told.sort();
    let expected: Vec<(String, String)> = [
        ("T-0", "firing"),
        ("T-0", "resolved"),
        ("T-1", "firing"),
        ("T-1", "resolved"),
        ("T-2", "firing"),
        ("T-3", "firing"),
    ]
    .iter()
    .map(|(terminal, state)| (terminal.to_string(), state.to_string()))
    .collect();
    assert_eq!(told, expected);
    // Each firing reached the receiver before its resolution.
    let position = |terminal: &str, status: &str| {
        requests.iter().position(|request| {
            request.json()[status]
                .as_array()
                .is_some_and(|list| list.iter().any(|alert| alert["terminal_id"] == terminal))
        })
    };
    assert!(position("T-0", "firing") < position("T-0", "resolved"));

    // Another restart sends nothing again.
    drop(collector);
    let collector = Collector::start_again(dir.path());
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        sink.requests().len(),
        6,
        "log:\n{}",
        collector.process.log()
    );
    let delivered = collector.get_json("/api/v1/alerts/notifications?status=delivered");
    assert_eq!(delivered["notifications"].as_array().map(Vec::len), Some(6));
}

/// 100 terminals of cn-east lose the payment host; returns the one message the webhook gets
/// (and checks that no other follows).
fn only_message_when_a_region_loses_the_host(collector: &Collector, hook: &HttpSink) -> Value {
    let mut fleet = Fleet::new(collector);
    for index in 0..100 {
        fleet.send(&format!("T-{index:03}"), "cn-east", true, 2);
    }
    let requests = wait_requests(hook, 1, collector);
    std::thread::sleep(Duration::from_secs(3));
    let titles: Vec<Value> = hook
        .requests()
        .iter()
        .map(|request| request.json()["title"].clone())
        .collect();
    assert_eq!(
        titles.len(),
        1,
        "one message, not one per terminal: {titles:?}"
    );
    requests[0].json()
}

fn a_region_losing_the_payment_host_is_one_grouped_message() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let wecom = HttpSink::start();
    wecom.set_reply(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    let config = format!(
        "{}{}[[alerts.receivers]]\nname = \"carrier-x\"\nkind = \"wecom\"\nurl = \"{}/send?key=K\"\n[[alerts.routes]]\nname = \"carrier-x-network\"\nreceiver = \"carrier-x\"\nmatch = {{ code = [\"env.network.*\"], carrier = [\"carrier-x\"], region = [\"cn-east\"] }}\ncontinue = true\n[[alerts.routes]]\nname = \"operations\"\nreceiver = \"default\"\n",
        alerts_section(4),
        webhook(dir.path(), "default", &hook.url()),
        wecom.url()
    );
    let collector = start(dir.path(), false, &config);
    let body = only_message_when_a_region_loses_the_host(&collector, &hook);
    assert_eq!(body["firing"].as_array().map(Vec::len), Some(100));
    assert_eq!(body["group_labels"]["region"], "cn-east");
    // The carrier's robot: one message within WeCom's 4096 bytes, counting all 100.
    let robot = wait_requests(&wecom, 1, &collector);
    assert_eq!(wecom.requests().len(), 1);
    let content = robot[0].json()["markdown"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(content.len() <= 4096, "{}", content.len());
    assert!(
        content.contains("[FIRING:100] Cannot take payments: Payment host unreachable · cn-east"),
        "{content}"
    );
    assert!(content.contains("more, see the dashboard"), "{content}");
}

fn a_host_outage_is_sent_instead_of_the_terminal_findings_it_explains() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let config = format!(
        "{}{}",
        alerts_section(4),
        webhook(dir.path(), "default", &hook.url())
    );
    let collector = start(dir.path(), true, &config);
    let body = only_message_when_a_region_loses_the_host(&collector, &hook);
    let firing = body["firing"].as_array().unwrap();
    assert_eq!(firing.len(), 1, "{body}");
    assert_eq!(firing[0]["code"], "upstream.host_outage");
    assert_eq!(firing[0]["subject"], "target=payment-host");
    assert_eq!(firing[0]["explains"], 100);
    assert_eq!(firing[0]["party"], "acquirer");
}

fn a_silence_holds_back_matching_findings_until_it_is_expired() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    std::fs::write(dir.path().join("admin-token"), "an-admin-token-for-tests").unwrap();
    let config = format!(
        "{}{}",
        alerts_section(0),
        webhook(dir.path(), "default", &hook.url())
    );
    let auth = format!(
        "admin_token_file = {:?}\n",
        dir.path().join("admin-token").display().to_string()
    );
    let collector = start_with(dir.path(), false, &auth, &config);
    let client = reqwest::blocking::Client::new();
    let created: Value = client
        .post(format!("{}/api/v1/alerts/silences", collector.url))
        .bearer_auth("an-admin-token-for-tests")
        .json(&json!({ "matchers": { "region": ["cn-west"] }, "duration_seconds": 3600, "created_by": "ops", "comment": "maintenance" }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(created["state"], "active", "{created}");
    let refused = client
        .post(format!("{}/api/v1/alerts/silences", collector.url))
        .json(&json!({ "matchers": { "region": ["cn-west"] }, "duration_seconds": 60, "created_by": "x" }))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);
    let mut fleet = Fleet::new(&collector);
    fleet.send("T-W", "cn-west", true, 2);
    fleet.send("T-E", "cn-east", true, 2);
    let requests = wait_requests(&hook, 1, &collector);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.requests().len(), 1);
    assert_eq!(requests[0].json()["firing"][0]["terminal_id"], "T-E");
    let id = created["id"].as_u64().unwrap();
    let expired: Value = client
        .delete(format!("{}/api/v1/alerts/silences/{id}", collector.url))
        .bearer_auth("an-admin-token-for-tests")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(expired["state"], "expired");
    let requests = wait_requests(&hook, 2, &collector);
    assert_eq!(requests[1].json()["firing"][0]["terminal_id"], "T-W");
    let listed = collector.get_json("/api/v1/alerts/silences");
    assert_eq!(listed["silences"][0]["state"], "expired");
}
