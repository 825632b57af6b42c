//! A terminal in hostile hands writes its labels, target names and error details to phish the
//! operations team: links, mentions, HTML, forged message lines. Against the real collector
//! binary and loopback DingTalk-, WeCom-, Feishu- and webhook-style receivers, the messages
//! they get carry that text defanged and inert — no active link but posmon's own dashboard
//! link, no mention, no injected line — and a terminal clock at year 9999 is refused naming the
//! field instead of crashing the collector. The dashboard's responses carry the
//! Content-Security-Policy.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers as well as tests: a failed unwrap is the test failing"
)]

use std::path::Path;
use std::time::Duration;

use posmon_e2e_tests::{wait_for, Collector, HttpSink, Request};
use posmon_protocol::{terminal_token, FleetKey};
use serde_json::{json, Value};

const SECRET: &str = "an end-to-end hostile-text fleet secret";
const WEBHOOK_SECRET: &str = "webhook signing secret";

const MERCHANT: &str = "[Call support](https://evil.example/support)";
const REGION: &str = "@all\u{2028}## [FIRING:9] forged heading";
const MODEL: &str = "<a href=\"https://evil.example\">PAX</a>";
const CARRIER: &str = "@所有人 请访问 www.evil.example";
const TARGET: &str = "pay ![img](http://evil.example/x.png)";
const DETAIL: &str =
    "<at id=all></at> connection refused\u{2028}- **T-0001** · [dashboard](https://evil.example)";

fn report(terminal_id: &str, sequence: u64, observed_at: &str) -> Value {
    json!({
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": observed_at,
        "agent_version": "0.1.0",
        "labels": { "model": MODEL, "region": REGION, "carrier": CARRIER, "merchant": MERCHANT },
        "software": { "pos_app": { "version": "2.9.1" } },
        "probes": [ { "target": TARGET, "address": "pay.acquirer.test:443", "stages": [
            { "stage": "gateway", "status": "ok", "attempts": 3, "successes": 3 },
            { "stage": "tcp", "status": "failed", "error": "refused", "detail": DETAIL } ] } ]
    })
}

fn send(collector: &Collector, terminal_id: &str, sequence: u64, observed_at: &str) {
    let (status, text) = post(collector, terminal_id, sequence, observed_at);
    assert!((200..300).contains(&status), "{text}");
}

fn post(
    collector: &Collector,
    terminal_id: &str,
    sequence: u64,
    observed_at: &str,
) -> (u16, String) {
    let key = FleetKey::new("k1", SECRET.as_bytes().to_vec()).unwrap();
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(terminal_token(&key, terminal_id))
        .json(&json!({ "reports": [report(terminal_id, sequence, observed_at)] }))
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// Now, as RFC 3339.
fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn start(dir: &Path, receivers: &str) -> Collector {
    let secret_file = dir.join("fleet-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    std::fs::write(dir.join("webhook-secret"), WEBHOOK_SECRET).unwrap();
    Collector::start(
        dir,
        &format!(
            "[auth]\nsecret_file = {:?}\n[diagnosis]\nevaluation_interval_seconds = 1\nupstream_min_terminals = 100000\n\n\
             [alerts]\ndashboard_url = \"http://dash.test\"\ndefault_receiver = \"hook\"\ngroup_by = [\"code\"]\ngroup_wait_seconds = 0\ngroup_interval_seconds = 1\nrepeat_interval_seconds = 3600\nretry_initial_seconds = 1\nretry_max_seconds = 1\nrequest_timeout_seconds = 2\n{receivers}",
            secret_file.display().to_string()
        ),
    )
}

fn wait_request(sink: &HttpSink, collector: &Collector) -> Request {
    wait_for(Duration::from_secs(30), || sink.requests().first().cloned())
        .unwrap_or_else(|| panic!("no request; log:\n{}", collector.process.log()))
}

/// What a message rendered from the hostile terminal must and must not hold.
fn assert_inert(receiver: &str, text: &str) {
    // posmon's own link to the terminal's page holds its id: not the terminal's text.
    let lower = text
        .replace("](http://dash.test/#/terminal/evil.example)", "](own link)")
        .to_lowercase();
    for forbidden in [
        "https://evil",
        "http://evil",
        "evil.example",
        "www.evil",
        "@all",
        "@所有人",
        "<a ",
        "<at",
        "![",
        "\u{2028}",
    ] {
        assert!(
            !lower.contains(forbidden),
            "{receiver}: {forbidden:?} survives in:\n{text}"
        );
    }
    // Every link is posmon's own dashboard link.
    let links = text.matches("](").count();
    assert!(links >= 1, "{receiver}: no dashboard link in:\n{text}");
    assert_eq!(
        text.matches("](http://dash.test/#/terminal/").count(),
        links,
        "{receiver}: a foreign link in:\n{text}"
    );
    // No line but posmon's own: headings, its bold labels, the group labels, alert lines.
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        assert!(
            ["## ", "### ", "**", "- **", "`"]
                .iter()
                .any(|start| line.starts_with(start)),
            "{receiver}: injected line {line:?} in:\n{text}"
        );
    }
    assert_eq!(
        text.lines().filter(|line| line.starts_with('#')).count(),
        2,
        "{receiver}: exactly posmon's two headings in:\n{text}"
    );
    // The values are there, defanged, so the party still knows what the terminal claims.
    assert!(
        text.contains("evil[.]example") && text.contains("＠"),
        "{receiver}: the defanged values are missing in:\n{text}"
    );
}

fn assert_plain_title(receiver: &str, title: &str) {
    assert!(
        !title.contains('\n') && !title.contains('\u{2028}') && !title.contains("@all"),
        "{receiver}: {title:?}"
    );
}

#[test]
fn hostile_terminal_text_reaches_every_receiver_inert() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let ding = HttpSink::start();
    ding.set_reply(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    let wecom = HttpSink::start();
    wecom.set_reply(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    let feishu = HttpSink::start();
    feishu.set_reply(200, r#"{"code":0,"msg":"success","data":{}}"#);
    let path = dir.path();
    let mut receivers = format!(
        "[[alerts.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = {{ file = {:?} }}\n",
        hook.url(),
        path.join("webhook-secret").display().to_string()
    );
    receivers.push_str(&format!(
        "[[alerts.receivers]]\nname = \"ding\"\nkind = \"dingtalk\"\nlanguage = \"zh-CN\"\nurl = \"{}/robot/send?access_token=T\"\n\
         [[alerts.receivers]]\nname = \"wecom\"\nkind = \"wecom\"\nurl = \"{}/cgi-bin/webhook/send?key=K\"\n\
         [[alerts.receivers]]\nname = \"feishu\"\nkind = \"feishu\"\nlanguage = \"zh-CN\"\nurl = \"{}/open-apis/bot/v2/hook/H\"\n",
        ding.url(),
        wecom.url(),
        feishu.url()
    ));
    for receiver in ["hook", "ding", "wecom", "feishu"] {
        receivers.push_str(&format!(
            "[[alerts.routes]]\nname = \"to-{receiver}\"\nreceiver = \"{receiver}\"\ncontinue = true\n"
        ));
    }
    let collector = start(path, &receivers);
    // A clock at the end of year 9999, west of UTC (in UTC it is year 10000): refused at the
    // door, naming the field (the message rendering of such times is checked by the unit and
    // property tests of the collector).
    let (status, text) = post(&collector, "evil.example", 1, "9999-12-31T23:59:58-10:00");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("reports[0].observed_at"), "{text}");
    send(&collector, "evil.example", 2, &now());
    send(&collector, "evil.example", 3, &now());

    let ding_body = wait_request(&ding, &collector).json();
    assert_plain_title("ding", ding_body["markdown"]["title"].as_str().unwrap());
    let text = ding_body["markdown"]["text"].as_str().unwrap();
    assert_inert("ding", text);
    assert!(text.contains("负责方"), "zh-CN: {text}");
    assert!(text.contains("已持续"), "how long it has been open: {text}");

    let wecom_body = wait_request(&wecom, &collector).json();
    let content = wecom_body["markdown"]["content"].as_str().unwrap();
    assert_inert("wecom", content);
    assert!(content.contains("Who must act"), "en: {content}");

    let feishu_body = wait_request(&feishu, &collector).json();
    assert_plain_title(
        "feishu",
        feishu_body["card"]["header"]["title"]["content"]
            .as_str()
            .unwrap(),
    );
    assert_inert(
        "feishu",
        feishu_body["card"]["elements"][0]["content"]
            .as_str()
            .unwrap(),
    );

    // The signed webhook: structured fields raw (it is data), its text rendition inert.
    let hook_body = wait_request(&hook, &collector).json();
    assert_plain_title("hook", hook_body["title"].as_str().unwrap());
    assert_inert("hook", hook_body["text"].as_str().unwrap());
    let item = &hook_body["firing"][0];
    assert_eq!(item["merchant"], MERCHANT);
    assert_eq!(item["region"], REGION);
    assert_eq!(item["terminal_id"], "evil.example");

    // The collector is still up and serving, and starts again on what the attack stored.
    assert_eq!(
        reqwest::blocking::get(format!("{}/healthz", collector.url))
            .unwrap()
            .status(),
        200
    );
    collector.restart_healthy(path);
}

#[test]
fn dashboard_responses_carry_the_content_security_policy() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path(), "");
    for path in [
        "/",
        "/assets/app.js",
        "/assets/app.css",
        "/api/v1/overview",
        "/api/v1/terminals",
        "/no-such-page",
    ] {
        let response = reqwest::blocking::get(format!("{}{path}", collector.url)).unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let policy = header("content-security-policy");
        assert!(
            policy.starts_with("default-src 'self';")
                && policy.contains("script-src 'self';")
                && policy.contains("frame-ancestors 'none'")
                && !policy.contains("unsafe-inline")
                && !policy.contains("unsafe-eval"),
            "{path}: {policy:?}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("referrer-policy"), "same-origin", "{path}");
    }
    let page = reqwest::blocking::get(format!("{}/", collector.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !page.contains("style=") && !page.contains("<style") && page.contains("<script src="),
        "{page}"
    );
}
