//! The operations team's daily work in a real headless Chromium (issue 15), signed in as an
//! operator: find any terminal by its serial number, acknowledge, assign and comment on its
//! problem (the audit shows who and when, the problem list shows it acknowledged), plan a
//! recurring maintenance window and see what it hides, end it early; in English and in Chinese.
//! Screenshots go to `test-artifacts/dashboard/`.
#![allow(
    clippy::unwrap_used,
    reason = "tests (under the trials harness): a failed unwrap fails the test"
)]

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};

use posmon_e2e_tests::browser::{programs, Browser, CHROMIUM};
use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{binary, trial, Collector};
use serde_json::{json, Value};

fn main() -> ExitCode {
    trials::run(vec![trial!(
        the_operations_day_in_a_real_browser,
        Need::Program("chromedriver"),
        Need::AnyProgram(&CHROMIUM)
    )])
}

/// The test's own reads of the API (reads close once an account exists).
const ADMIN_TOKEN: &str = "admin-token-for-the-operations-browser-test";
const OPERATOR: &str = "wang";
const PASSWORD: &str = "an operator's long password";

fn get(collector: &Collector, path: &str) -> Value {
    reqwest::blocking::Client::new()
        .get(format!("{}{path}", collector.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// One report: `failing` refuses the payment host (a finding opens after two).
fn report(terminal_id: &str, sequence: u64, serial: &str, merchant: &str, failing: bool) -> Value {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let tcp = if failing {
        json!({ "stage": "tcp", "status": "failed", "error": "refused" })
    } else {
        json!({ "stage": "tcp", "status": "ok", "latency_ms": { "min": 30.0, "avg": 31.0, "max": 33.0 } })
    };
    json!({ "reports": [ {
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": now,
        "agent_version": "0.1.0",
        "labels": { "merchant": merchant, "model": "PAX-A920", "region": "cn-ops", "carrier": "china-mobile",
                    "extra": { "serial": serial } },
        "software": { "pos_app": { "version": "3.2.1" } },
        "probes": [ { "target": format!("{terminal_id}-host"), "address": "pay.ops.test:443", "stages": [
            { "stage": "gateway", "status": "ok", "attempts": 3, "successes": 3 }, tcp ] } ]
    } ] })
}

fn the_operations_day_in_a_real_browser() {
    let (chromedriver, chromium) = programs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let collector = Collector::start(
        dir.path(),
        &format!(
            "[auth]\nadmin_token_file = {:?}\n\n[web]\nrefresh_interval_seconds = 1\n\n[diagnosis]\nupstream_min_terminals = 100000\n",
            dir.path().join("admin-token").display().to_string()
        ),
    );
    let mut user = Command::new(binary("posmon-collector"))
        .args(["user", "add", OPERATOR, "--role", "operator", "--config"])
        .arg(&collector.config)
        .env_remove("POSMON_PASSWORD")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(user.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(user.wait().unwrap().success(), "user add {OPERATOR}");
    let client = reqwest::blocking::Client::new();
    let terminals = [
        ("OPS-0001", "SN-A1001", "Harbour Café", true),
        ("OPS-0002", "SN-B2002", "张记面馆", false),
        ("OPS-0003", "SN-C3003", "Bakery", false),
    ];
    for sequence in 1..=2 {
        for (id, serial, merchant, failing) in terminals {
            let response = client
                .post(format!("{}/api/v1/reports", collector.url))
                .bearer_auth(collector.token(id))
                .json(&report(id, sequence, serial, merchant, failing))
                .send()
                .unwrap();
            assert!(response.status().is_success(), "{:?}", response.text());
        }
    }
    let findings = get(&collector, "/api/v1/findings?terminal=OPS-0001");
    let finding = findings["findings"][0]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no finding: {findings}"));

    let browser = Browser::start(&chromedriver, &chromium);
    browser.open(&format!("{}/login", collector.url));
    browser.type_text("#login-name", OPERATOR);
    browser.type_text("#login-password", PASSWORD);
    browser.click("#login-submit");
    browser.wait_until(
        "signed in as the operator",
        &format!("return document.querySelector('#who-name')?.textContent === '{OPERATOR}'"),
    );
    // Find a terminal posmon sees nothing wrong with, by its serial number.
    browser.open(&format!("{}/#/terminals", collector.url));
    browser.wait_until(
        "the whole fleet listed",
        "return document.querySelector('#terminals-total')?.dataset.total === '3'",
    );
    browser.type_text("#terminals-q", "sn-b2002\n");
    browser.wait_until(
        "the one terminal with that serial",
        "const rows = document.querySelectorAll('#terminals tr.terminal-row'); \
         return rows.length === 1 && rows[0].dataset.terminal === 'OPS-0002' \
         && rows[0].textContent.includes('张记面馆') && rows[0].textContent.includes('Can pay')",
    );
    browser.screenshot("ops-1-terminal-search-en");

    // Own the problem of the failing one: acknowledge.
    browser.open(&format!("{}/#/terminal/OPS-0001", collector.url));
    let workflow = format!(".workflow[data-workflow=\"{finding}\"]");
    browser.click(&format!("{workflow} button[data-act=acknowledge]"));
    browser.wait_until(
        "the acknowledgement shown",
        &format!(
            "return document.querySelector('{workflow} .badge.acked')?.textContent.includes('Acknowledged by wang') === true"
        ),
    );
    // Assign it to the network provider.
    browser.click(&format!("{workflow} button[data-open=assign]"));
    browser.click("#workflow-party option[value=network_provider]");
    browser.click(&format!("{workflow} button[data-save=assign]"));
    browser.wait_until(
        "the assignee shown",
        &format!(
            "return document.querySelector('{workflow} .badge.assignee')?.textContent.includes('Network provider') === true"
        ),
    );
    // Comment.
    browser.click(&format!("{workflow} button[data-open=comment]"));
    browser.type_text("#workflow-text", "Carrier ticket 4711 opened");
    browser.click(&format!("{workflow} button[data-save=comment]"));
    browser.wait_until(
        "the activity with who did what",
        "const items = [...document.querySelectorAll('#activity li')]; \
         return items.length === 3 && items[0].dataset.action === 'comment' \
         && items[0].textContent.includes('Carrier ticket 4711') \
         && items[1].dataset.action === 'assign' && items[2].dataset.action === 'acknowledge' \
         && items.every(item => item.textContent.includes('wang'))",
    );
    browser.screenshot("ops-2-problem-owned-en");
    // The problem list shows it acknowledged.
    browser.open(&format!("{}/#/problems", collector.url));
    browser.wait_until(
        "the problem list's acknowledged badge",
        "return document.querySelector('tr.problem-row[data-terminal=\"OPS-0001\"] .badge.acked') !== null",
    );
    // The API agrees, with who and when.
    let activity = get(&collector, &format!("/api/v1/findings/{finding}/activity"));
    assert_eq!(activity["state"]["acknowledged_by"], OPERATOR, "{activity}");
    assert_eq!(
        activity["state"]["assignee"]["party"], "network_provider",
        "{activity}"
    );
    assert_eq!(activity["entries"].as_array().map(Vec::len), Some(3));

    // Plan tonight's network change: every day, two hours, region cn-ops.
    browser.open(&format!("{}/#/maintenance", collector.url));
    browser.click("#mw-region option[value=cn-ops]");
    browser.click("#mw-kind option[value=daily]");
    browser.type_text("#mw-comment", "Carrier maintenance");
    browser.click("#mw-create");
    browser.wait_until(
        "the new recurring window matching the open problem",
        "const row = document.querySelector('#maintenance-windows tr[data-silence]'); \
         return row !== null && row.dataset.state === 'active' && row.textContent.includes('every day at') \
         && row.textContent.includes('Matches 1 open findings')",
    );
    // What it hides.
    browser.click("#maintenance-windows button[data-unfold]");
    browser.wait_until(
        "the hidden finding listed",
        "return document.querySelector('#maintenance-windows .matched-list a')?.textContent === 'OPS-0001'",
    );
    browser.screenshot("ops-3-maintenance-en");
    let silences = get(&collector, "/api/v1/alerts/silences");
    assert_eq!(
        silences["silences"][0]["recurrence"]["every"], "daily",
        "{silences}"
    );

    // The same in Chinese.
    browser.click("#lang-toggle");
    browser.wait_until(
        "the maintenance page in Chinese",
        "return document.querySelector('#maintenance-new h2')?.textContent === '新建维护窗口' \
         && document.querySelector('#maintenance-windows tr[data-silence]')?.textContent.includes('生效中')",
    );
    browser.screenshot("ops-4-maintenance-zh-CN");
    // End it early.
    browser.click("#maintenance-windows button[data-end]");
    browser.wait_until(
        "the window over",
        "return document.querySelector('#maintenance-windows tr[data-silence]')?.dataset.state === 'expired'",
    );
    browser.click("#nav a[data-view=terminals]");
    browser.wait_until(
        "the terminals page in Chinese",
        "return document.querySelector('#terminals-total')?.textContent.includes('共 3 台终端') \
         && document.querySelector('#terminals th')?.textContent === '终端'",
    );
    browser.screenshot("ops-5-terminals-zh-CN");
    browser.open(&format!("{}/#/terminal/OPS-0001", collector.url));
    browser.wait_until(
        "the workflow in Chinese",
        &format!(
            "return document.querySelector('{workflow} .badge.acked')?.textContent.includes('已由 wang 确认') === true \
             && document.querySelector('#activity h2')?.textContent === '此终端的操作记录'"
        ),
    );
    browser.screenshot("ops-6-problem-owned-zh-CN");
    browser.click("#nav a[data-view=activity]");
    browser.wait_until(
        "the audit log with the maintenance window's end",
        "const items = [...document.querySelectorAll('#audit li')]; \
         return items.length === 5 && items[0].dataset.action === 'maintenance.end' \
         && items[1].dataset.action === 'maintenance.create'",
    );
    browser.screenshot("ops-7-activity-zh-CN");
    browser.assert_no_csp_violation("the operations walk");
}
