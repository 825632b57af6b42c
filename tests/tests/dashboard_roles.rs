//! Signing in to the dashboard in a real headless Chromium, as a viewer, an operator and an
//! admin, in English and in Chinese: the sign-in page in the asked language, the name and role
//! in the bar, the controls a role cannot use hidden (a viewer sees no action button) and the
//! server refusing the viewer anyway (a request made from the page with the session's own CSRF
//! token is answered 403), the operator's probe accepted, the admin's Users page, and sign-out.
//! Screenshots go to `test-artifacts/` (`roles-<role>-<lang>-…`).
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
        signing_in_with_each_role_in_a_real_browser,
        Need::Program("chromedriver"),
        Need::AnyProgram(&CHROMIUM)
    )])
}

const TERMINAL: &str = "ROLE-0001";

/// The users: name, role, password, the role's name in Chinese.
const USERS: [(&str, &str, &str, &str); 3] = [
    ("wang", "viewer", "viewer-password-1a2b", "查看者"),
    ("li", "operator", "operator-password-3c4d", "操作员"),
    ("boss", "admin", "admin-password-5e6f", "管理员"),
];

fn failing_report(sequence: u64) -> Value {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    json!({ "reports": [ {
        "schema_version": 1,
        "terminal_id": TERMINAL,
        "sequence": sequence,
        "observed_at": now,
        "agent_version": "0.1.0",
        "labels": { "merchant": "Role Test Shop", "model": "PAX-A920", "region": "cn-test-roles" },
        "software": { "pos_app": { "version": "3.2.1" } },
        "probes": [ { "target": "roles-host", "address": "pay.roles.test:443", "stages": [
            { "stage": "link", "status": "ok" },
            { "stage": "dns", "status": "ok" },
            { "stage": "tcp", "status": "failed", "error": "timeout" }
        ] } ]
    } ] })
}

/// Sends `method path` from the page with the session's cookie and CSRF token; the status.
fn status_from_page(browser: &Browser, method: &str, path: &str) -> i64 {
    browser.script(&format!(
        "window.lastStatus = null; \
         fetch('{path}', {{ method: '{method}', credentials: 'same-origin', \
           headers: {{ 'Content-Type': 'application/json', 'X-CSRF-Token': window.posmonSession.csrf_token }}, body: '{{}}' }}) \
         .then(response => {{ window.lastStatus = response.status; }}); return true;"
    ));
    browser.wait_until(
        &format!("the answer to {method} {path}"),
        "return window.lastStatus !== null",
    );
    browser.script("return window.lastStatus").as_i64().unwrap()
}

fn signing_in_with_each_role_in_a_real_browser() {
    let (chromedriver, chromium) = programs();
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path(), "[web]\nrefresh_interval_seconds = 1\n");
    for (name, role, password, _) in USERS {
        let mut child = Command::new(binary("posmon-collector"))
            .args(["user", "add", name, "--role", role, "--config"])
            .arg(&collector.config)
            .env_remove("POSMON_PASSWORD")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        assert!(child.wait().unwrap().success(), "user add {name}");
    }
    let client = reqwest::blocking::Client::new();
    for sequence in 1..=2 {
        let response = client
            .post(format!("{}/api/v1/reports", collector.url))
            .bearer_auth(collector.token(TERMINAL))
            .json(&failing_report(sequence))
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{:?}", response.text());
    }

    let browser = Browser::start(&chromedriver, &chromium);
    for lang in ["en", "zh-CN"] {
        for (name, role, password, chinese_role) in USERS {
            let shot = |step: &str| browser.screenshot(&format!("roles-{role}-{lang}-{step}"));
            // Without a session the dashboard shows the sign-in form, in the asked language.
            browser.open(&format!("{}/login?lang={lang}", collector.url));
            browser.element("#login-form");
            let label = browser.text("label[for=login-name]");
            assert_eq!(
                label,
                if lang == "en" {
                    "User name"
                } else {
                    "用户名"
                }
            );
            // A wrong password first: told so, in the page's language.
            browser.type_text("#login-name", name);
            browser.type_text("#login-password", "not-the-password");
            browser.click("#login-submit");
            let error = browser.text("#login-error");
            assert_eq!(
                error,
                if lang == "en" {
                    "Wrong user name or password."
                } else {
                    "用户名或密码错误。"
                }
            );
            browser.type_text("#login-name", name);
            browser.type_text("#login-password", password);
            shot("1-sign-in");
            browser.click("#login-submit");
            let role_text = if lang == "en" { role } else { chinese_role };
            browser.wait_until(
                "the name and role in the bar",
                &format!(
                    "return document.querySelector('#who-name')?.textContent === '{name}' \
                     && document.querySelector('#who-role')?.textContent === '{role_text}' \
                     && document.documentElement.lang === '{lang}' \
                     && document.body.dataset.role === '{role}'"
                ),
            );
            // The terminal page: the probe button and the workflow's actions only for operators
            // and admins.
            browser.open(&format!("{}/#/terminal/{TERMINAL}", collector.url));
            browser.element("#probe-now");
            browser.wait_until(
                "the terminal page with its problem",
                "return document.querySelector('.workflow .actions') !== null && window.posmonSession !== null",
            );
            let visible = |selector: &str| {
                browser.script(&format!(
                    "return document.querySelector('{selector}').offsetParent !== null"
                )) == Value::Bool(true)
            };
            let may_act = role != "viewer";
            assert_eq!(visible("#probe-now"), may_act, "{role}: probe now");
            assert_eq!(visible(".workflow .actions"), may_act, "{role}: workflow");
            shot("2-terminal");
            // The server decides, whatever the page shows.
            let probe = status_from_page(
                &browser,
                "POST",
                &format!("/api/v1/terminals/{TERMINAL}/probe"),
            );
            assert_eq!(probe, if may_act { 202 } else { 403 }, "{role}: probe");
            let policy = status_from_page(&browser, "PUT", "/api/v1/policy/versions");
            assert_eq!(
                policy,
                if role == "admin" { 400 } else { 403 },
                "{role}: policy"
            );
            // The Users page: own tokens for everyone, the users for the admin.
            browser.click("#nav-users");
            browser.element("#token-form");
            let users_table = browser.script("return document.querySelector('#users') !== null");
            assert_eq!(
                users_table,
                Value::Bool(role == "admin"),
                "{role}: users table"
            );
            if role == "admin" {
                browser.wait_until(
                    "the three users",
                    "return document.querySelectorAll('#users tbody tr').length === 3",
                );
            }
            shot("3-users");
            browser.assert_no_csp_violation(&format!("{role} in {lang}"));
            // Signing out ends the session: the sign-in form again.
            browser.click("#sign-out");
            browser.element("#login-form");
            let me = browser.script(
                "const request = new XMLHttpRequest(); request.open('GET', '/api/v1/me', false); \
                 request.send(); return request.status;",
            );
            assert_eq!(me, json!(401), "{role}: signed out");
        }
    }
}
