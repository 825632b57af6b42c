//! The built-in dashboard in a real headless Chromium, driven over the WebDriver protocol
//! (chromedriver): a real collector behind a viewer token, fed by the fleet simulator; the
//! test opens the overview, filters the problem list, opens a terminal, switches the language
//! and watches a new finding appear without a reload. Screenshots go to `test-artifacts/`.
#![allow(
    clippy::unwrap_used,
    reason = "tests (under the trials harness): a failed unwrap fails the test"
)]

use std::process::ExitCode;
use std::time::Duration;

use posmon_e2e_tests::browser::{programs, Browser, CHROMIUM};
use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{trial, Collector};
use serde_json::{json, Value};

fn main() -> ExitCode {
    trials::run(vec![
        trial!(
            the_dashboard_in_a_real_browser,
            Need::Program("chromedriver"),
            Need::AnyProgram(&CHROMIUM)
        ),
        trial!(
            fleet_control_in_a_real_browser,
            Need::Program("chromedriver"),
            Need::AnyProgram(&CHROMIUM)
        ),
    ])
}

const VIEWER_TOKEN: &str = "viewer-token-for-the-browser-test";
const SCENARIO: &str = r#"
[[incidents]]
fault = "host_outage"
start_seconds = 0
duration_seconds = 600
share = 0.5

[[incidents]]
fault = "gateway_down"
start_seconds = 0
duration_seconds = 600
share = 0.1

[[incidents]]
fault = "outdated_app"
start_seconds = 0
duration_seconds = 600
share = 0.2

[[incidents]]
fault = "card_reader_missing"
start_seconds = 0
duration_seconds = 600
share = 0.2
"#;

/// One report of `terminal_id` whose own host (one no other terminal probes, so no fleet-level
/// outage explains it) refuses connections.
fn failing_report(terminal_id: &str, sequence: u64) -> Value {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|error| panic!("{error}"));
    json!({ "reports": [ {
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": now,
        "agent_version": "0.1.0",
        "labels": { "merchant": "Live Test Shop", "model": "PAX-A920", "region": "cn-test-live", "carrier": "china-mobile" },
        "software": { "pos_app": { "version": "3.2.1" } },
        "probes": [ { "target": "live-host", "address": "pay.live.test:443", "stages": [
            { "stage": "link", "status": "ok" },
            { "stage": "gateway", "status": "ok", "attempts": 3, "successes": 3, "latency_ms": { "min": 1.0, "avg": 1.5, "max": 2.0 } },
            { "stage": "dns", "status": "ok", "latency_ms": { "min": 3.0, "avg": 3.0, "max": 3.0 } },
            { "stage": "tcp", "status": "failed", "error": "timeout" }
        ] } ],
        "device": { "cpu_percent": 12.5, "memory_total_bytes": 2147483648u64, "memory_available_bytes": 1073741824u64,
                    "peripherals": [ { "name": "card_reader", "present": true }, { "name": "printer", "present": false } ] }
    } ] })
}

fn the_dashboard_in_a_real_browser() {
    let (chromedriver, chromium) = programs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("collector-data")).unwrap();
    std::fs::write(dir.path().join("collector-data/viewer-token"), VIEWER_TOKEN).unwrap();
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let collector = Collector::start(
        dir.path(),
        &(format!(
            "[auth]\nadmin_token_file = {:?}\n",
            dir.path().join("admin-token").display().to_string()
        ) + r#"
[web]
viewer_token_file = "viewer-token"
trend_interval_seconds = 1
refresh_interval_seconds = 1

# The live terminal pays through a host of its own (the simulated fleet's payment-host outage
# must not explain its finding).
[readiness]
targets = ["payment-host", "live-host"]

[[version_policy]]
component = "pos_app"
minimum = "3.0.0"
latest = "3.2.1"
"#),
    );
    // No alert receiver is configured: the collector says at start that nothing will be sent.
    assert!(
        collector
            .process
            .log()
            .contains("No alert receiver is configured"),
        "{}",
        collector.process.log()
    );
    // The read API and the page are closed without the token; health stays open.
    let client = reqwest::blocking::Client::new();
    for path in ["/", "/api/v1/overview", "/assets/app.js"] {
        let status = client
            .get(format!("{}{path}", collector.url))
            .send()
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 401, "{path}");
    }
    let status = client
        .get(format!("{}/healthz", collector.url))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);

    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let output = collector
        .simulator(dir.path())
        .args([
            "--terminals",
            "200",
            "--rate",
            "400",
            "--duration-seconds",
            "3",
        ])
        .arg("--scenario")
        .arg(&scenario)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The fleet evaluation opens the outage within a second or two.
    std::thread::sleep(Duration::from_secs(3));

    let browser = Browser::start(&chromedriver, &chromium);
    // Without credentials: the sign-in page, styled by its one inline style (allowed by hash).
    browser.open(&format!("{}/", collector.url));
    assert!(browser.text("main").contains("/?token=<viewer token>"));
    assert_eq!(
        browser.script("return getComputedStyle(document.body).backgroundColor"),
        json!("rgb(16, 21, 28)"),
        "the sign-in page's style applies under the CSP"
    );
    browser.assert_no_csp_violation("the sign-in page");
    // The token once in the address: the page keeps it in a cookie and drops it from the URL.
    browser.open(&format!("{}/?token={VIEWER_TOKEN}", collector.url));
    browser.element("#readiness-cannot_pay .value");
    browser.wait_until(
        "the overview to lead with terminals that cannot take payments, and the outage",
        "return Number(document.querySelector('#readiness-cannot_pay .value').textContent.replace(/\\D/g, '')) > 0 \
         && Number(document.querySelector('#readiness-at_risk .value').textContent.replace(/\\D/g, '')) > 0 \
         && document.querySelector('#outages .outage') !== null",
    );
    // The headline tiles, most urgent first.
    assert_eq!(
        browser.script(
            "return [...document.querySelectorAll('#readiness .tile .label')].map(label => label.textContent)"
        ),
        json!(["Cannot take payments", "At risk", "Unknown", "Can pay", "Terminals"])
    );
    assert!(
        !browser
            .script("return location.href")
            .as_str()
            .unwrap_or_default()
            .contains("token="),
        "the token left the address bar"
    );
    assert!(browser.text("#outages").contains("Upstream outage"));
    // The outage names its scope and party, and unfolds the terminal findings it explains.
    assert!(browser.text("#outages").contains("host payment-host"));
    assert!(browser.text("#outages").contains("Acquirer"));
    browser.click("#outages details.explained summary");
    browser.wait_until(
        "the outage to unfold the terminal findings it explains",
        "return document.querySelectorAll('#outages .explained-list a[href^=\"#/terminal/\"]').length > 0",
    );
    // Bar widths are set through the CSSOM (the CSP refuses inline style attributes).
    browser.wait_until(
        "the bars to have their widths",
        "const bars = [...document.querySelectorAll('.bars .fill')]; \
         return bars.length > 0 && bars.every(bar => bar.style.width.endsWith('%'))",
    );
    // Findings are named, not coded (the code stays as the tooltip); who must act is counted
    // in terminals.
    browser.wait_until(
        "the finding names in the counts by code",
        "const bar = document.querySelector('#by-code [data-code=\"outdated.pos_app\"]'); \
         return bar?.textContent === 'POS application outdated' && bar.title === 'outdated.pos_app'",
    );
    assert_eq!(
        browser.text("#by-party h2").to_lowercase(),
        "who must act (terminals)"
    );
    assert_eq!(
        browser.script(
            "const total = Number(document.querySelector('#readiness-total .value').textContent.replace(/\\D/g, '')); \
             const counts = [...document.querySelectorAll('#by-party .bars .num')].map(n => Number(n.textContent.replace(/\\D/g, ''))); \
             return counts.length > 0 && counts.every(count => count > 0 && count <= total)"
        ),
        json!(true),
        "each party's count is a number of terminals"
    );
    // Times: 24-hour YYYY-MM-DD HH:MM:SS, the zone named once in the header.
    browser.wait_until(
        "the header's time and zone",
        "return /^Updated \\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2} \\(UTC[+-]\\d{2}:\\d{2}/.test(document.querySelector('#updated').textContent)",
    );
    browser.assert_no_csp_violation("the overview");
    browser.screenshot("1-overview");

    // The problem list, filtered by region through the select.
    browser.click("#nav a[data-view=problems]");
    browser.element("#problems tbody tr.problem-row");
    assert_eq!(
        browser.text("#filter-code option[value=\"outdated.pos_app\"]"),
        "POS application outdated"
    );
    let all: u64 = browser
        .script("return Number(document.querySelector('#problem-total').dataset.total)")
        .as_u64()
        .unwrap();
    browser.click("#filter-region option[value=cn-east-sh]");
    browser.wait_until(
        "the list to show only cn-east-sh",
        "const rows = [...document.querySelectorAll('#problems tbody tr.problem-row')]; \
         return location.hash.includes('region=cn-east-sh') && rows.length > 0 \
         && rows.every(row => row.children[2].textContent === 'cn-east-sh')",
    );
    let filtered: u64 = browser
        .script("return Number(document.querySelector('#problem-total').dataset.total)")
        .as_u64()
        .unwrap();
    assert!(
        filtered > 0 && filtered < all,
        "filtered {filtered} of {all}"
    );
    browser.screenshot("2-problems-filtered");

    // A terminal's page: identity, the path ladder, versions, findings with remediation.
    let terminal = browser
        .script("return document.querySelector('#problems tbody tr.problem-row').dataset.terminal")
        .as_str()
        .unwrap()
        .to_string();
    browser.click("#problems tbody tr.problem-row td:nth-child(2)");
    browser.wait_until(
        "the terminal page",
        &format!("return document.querySelector('#terminal-title')?.textContent.includes({terminal:?}) === true"),
    );
    browser.element("#path .ladder .rung");
    browser.element("#versions tr[data-component=pos_app]");
    assert_eq!(
        browser.script(
            "return [...document.querySelectorAll('.kv dd')].filter(dd => /^\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}( |$)/.test(dd.textContent)).length >= 3"
        ),
        json!(true),
        "first report, last report and measured at as YYYY-MM-DD HH:MM:SS"
    );
    // The terminal page leads with whether it can take payments.
    let headline = browser.text("#terminal-readiness");
    assert!(
        ["Cannot take payments", "At risk", "Unknown"]
            .iter()
            .any(|label| headline.starts_with(label)),
        "{headline:?}"
    );
    assert!(browser.text("#timeline").contains("What to do"));
    browser.screenshot("3-terminal");
    // Its history (history.js): readiness band, latency and loss, with the range switch.
    browser.element("#history-terminal .history-band");
    browser.click("#history-terminal .range-switch button[data-range='7d']");
    browser.wait_until(
        "the terminal's history over 7 days",
        "const section = document.querySelector('#history-terminal'); \
         return section?.dataset.range === '7d' \
         && section.querySelector('.range-switch button.active')?.dataset.range === '7d' \
         && section.querySelector('.history-band rect[data-readiness]') !== null \
         && section.querySelector('#history-latency svg, #history-latency .history-empty') !== null \
         && section.querySelector('#history-loss svg, #history-loss .history-empty') !== null",
    );
    browser.click("#history-terminal .range-switch button[data-range='24h']");
    browser.element("#history-terminal[data-range='24h'] #history-latency");

    // Simplified Chinese, on the same page, without a reload.
    browser.script("window.notReloaded = true; return true");
    browser.click("#lang-toggle");
    browser.wait_until(
        "the Chinese texts",
        "return document.querySelector('#nav a[data-view=overview]').textContent === '总览' \
         && document.querySelector('#timeline')?.textContent.includes('处理建议') === true",
    );
    browser.screenshot("4-terminal-zh-CN");

    // A new finding appears in the open problem list without a reload.
    browser.open(&format!("{}/#/problems?q=LIVE-", collector.url));
    browser.element("#problem-total");
    browser.script("window.notReloaded = true; return true");
    assert_eq!(
        browser.script("return document.querySelectorAll('tr.problem-row').length"),
        json!(0)
    );
    let token = collector.token("LIVE-0001");
    for sequence in 1..=3 {
        let mut report = failing_report("LIVE-0001", sequence);
        // The last one tells its data usage: 9 MiB of a 10 MiB plan, intervals stretched.
        if sequence == 3 {
            let now = time::OffsetDateTime::now_utc();
            let month = i64::from(now.year()) * 12 + i64::from(u8::from(now.month())) - 1;
            report["reports"][0]["data_usage"] = json!({
                "month": month, "report_bytes": 8u64 << 20, "probe_bytes": 1u64 << 20,
                "budget_bytes": 10u64 << 20, "stretch_percent": 200
            });
        }
        let response = client
            .post(format!("{}/api/v1/reports", collector.url))
            .bearer_auth(&token)
            .json(&report)
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{:?}", response.text());
    }
    browser.wait_until(
        "the new finding in the list",
        "return document.querySelector('tr.problem-row[data-terminal=\"LIVE-0001\"] [data-code=\"env.network.host_unreachable\"]') !== null",
    );
    assert_eq!(
        browser.script("return window.notReloaded === true"),
        json!(true),
        "the page reloaded"
    );
    browser.screenshot("5-new-finding-live");

    // Its terminal page in Chinese: the device and the ladder failing at TCP.
    browser.click("tr.problem-row[data-terminal=\"LIVE-0001\"] td:nth-child(2)");
    browser.wait_until(
        "the failing TCP rung",
        "return document.querySelector('.rung.failed')?.textContent === 'TCP'",
    );
    assert!(
        browser.text("#main").contains("printer: 缺失"),
        "the missing printer is shown"
    );
    // Its payment host refuses: it cannot take payments, and that finding is why (the missing
    // printer is not: payments do not need it).
    browser.wait_until(
        "the readiness headline in Chinese",
        "const headline = document.querySelector('#terminal-readiness'); \
         return headline?.dataset.readiness === 'cannot_pay' \
         && headline.textContent.includes('无法收款') \
         && headline.querySelector('[data-code=\"env.network.host_unreachable\"]') !== null \
         && headline.querySelector('[data-code=\"env.hardware.peripheral_missing\"]') === null",
    );
    // Its data usage: near its budget, stretched.
    browser.wait_until(
        "the data usage line in Chinese",
        "const line = document.querySelector('#data-usage'); \
         return line?.dataset.near === 'true' && line.textContent.includes('预算 10 MiB') \
         && line.textContent.includes('间隔已延长 ×2') && line.textContent.includes('接近预算')",
    );
    browser.screenshot("6-live-terminal-zh-CN");
    // The overview counts it near its budget, beside the fleet's month.
    browser.click("#nav a[data-view=overview]");
    browser.wait_until(
        "the data plan tiles",
        "return document.querySelector('#usage-near')?.dataset.count === '1' \
         && document.querySelector('#usage-near .label').textContent === '接近流量预算' \
         && document.querySelector('#usage-total .value').textContent === '9 MiB'",
    );
    // Unfolded, the tile lists it, linked to its page.
    browser.click("#usage-near-details summary");
    browser.wait_until(
        "the terminals near their budget",
        "return document.querySelector('#usage-near-details .near-list li[data-terminal=\"LIVE-0001\"] a') !== null",
    );
    browser.screenshot("7-overview-data-plan-zh-CN");

    // A new version policy closes the outdated findings at once, without a report: on the
    // terminal's page the finding is closed, styled as closed, with when and after how long.
    let open: Value = client
        .get(format!(
            "{}/api/v1/findings?code=outdated.pos_app&limit=1",
            collector.url
        ))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let outdated = open["findings"][0]["terminal_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no outdated terminal: {open}"))
        .to_string();
    let put = client
        .put(format!("{}/api/v1/policy/versions", collector.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "rules": [ { "component": "pos_app", "minimum": "0.1" } ] }))
        .send()
        .unwrap();
    assert_eq!(put.status().as_u16(), 200, "{:?}", put.text());
    browser.open(&format!("{}/?lang=en#/terminal/{outdated}", collector.url));
    browser.wait_until(
        "the closed outdated finding, styled as closed",
        "const item = document.querySelector('#timeline li.closed[data-code=\"outdated.pos_app\"]'); \
         if (!item) return false; \
         const style = getComputedStyle(item); \
         return !item.classList.contains('critical') && !item.classList.contains('warning') \
           && style.borderLeftColor !== 'rgb(248, 81, 73)' \
           && getComputedStyle(item.querySelector('.title')).textDecorationLine === 'line-through' \
           && /closed at \\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2} after \\d/.test(item.textContent) \
           && item.querySelector('.badge.critical, .badge.warning') === null",
    );
    browser.screenshot("7b-closed-finding");

    // ?lang= in the address: English before the hash, Chinese inside it.
    browser.open(&format!("{}/?lang=en#/alerts", collector.url));
    browser.wait_until(
        "the alerts page saying no receiver is configured, in English",
        "return document.querySelector('#nav a[data-view=overview]').textContent === 'Overview' \
         && document.querySelector('#alerts-no-receiver')?.textContent.includes('no notification will be sent') === true",
    );
    browser.open(&format!("{}/#/alerts?lang=zh-CN", collector.url));
    browser.wait_until(
        "the alerts page in Chinese",
        "return document.documentElement.lang === 'zh-CN' \
         && document.querySelector('#nav a[data-view=overview]').textContent === '总览' \
         && document.querySelector('#alerts-no-receiver')?.textContent.includes('不会向任何人发送通知') === true",
    );
    browser.screenshot("7c-alerts-no-receiver-zh-CN");

    // Availability per region (history.js), in Chinese: the definition, a line per region, the
    // CSV link for the same period.
    browser.click("#nav a[data-view=availability]");
    browser.element("#availability tbody tr[data-group=cn-east-sh]");
    assert!(browser.text("#main").contains("可用率"));
    let csv = browser
        .script("return document.querySelector('#availability-csv').getAttribute('href')")
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        csv.starts_with("/api/v1/availability?by=region&from=") && csv.ends_with("&format=csv"),
        "{csv}"
    );
    browser.assert_no_csp_violation("the availability page");
    browser.screenshot("7e-availability-zh-CN");

    // Kiosk mode: no navigation bar, language toggle or buttons, larger type; kept when a
    // link changes the hash.
    browser.open(&format!("{}/?kiosk=1&lang=en#/", collector.url));
    browser.element("#readiness-cannot_pay .value");
    browser.wait_until(
        "the kiosk overview",
        "return getComputedStyle(document.querySelector('#nav')).display === 'none' \
         && getComputedStyle(document.querySelector('#lang-toggle')).display === 'none' \
         && parseFloat(getComputedStyle(document.documentElement).fontSize) > 17",
    );
    browser.screenshot("7d-kiosk");
    browser.script("location.hash = '#/problems'; return true");
    browser.element("#problems");
    assert_eq!(
        browser.script(
            "return document.documentElement.classList.contains('kiosk') \
             && getComputedStyle(document.querySelector('#probe-page')).display === 'none'"
        ),
        json!(true),
        "kiosk mode stays, without action buttons"
    );
    browser.assert_no_csp_violation("the whole walk");
}

const ADMIN_TOKEN: &str = "admin-token-for-the-browser-test";

/// A report of a terminal whose agent reads fleet control: it tells what it runs.
fn control_report(
    terminal_id: &str,
    sequence: u64,
    config: Value,
    probe_request: Option<u64>,
) -> Value {
    let mut report = failing_report(terminal_id, sequence);
    report["reports"][0]["config"] = config;
    if let Some(id) = probe_request {
        report["reports"][0]["probe_request"] = json!(id);
    }
    report
}

/// The config page and the terminal page's settings and "probe now", in a real browser: a
/// profile's version with the terminals running it, the history; the button asking the admin
/// token, the request shown as requested by the admin, then answered once the terminal's
/// report names it.
fn fleet_control_in_a_real_browser() {
    let (chromedriver, chromium) = programs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("collector-data")).unwrap();
    std::fs::write(dir.path().join("collector-data/viewer-token"), VIEWER_TOKEN).unwrap();
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let collector = Collector::start(
        dir.path(),
        &format!(
            "[auth]\nadmin_token_file = {:?}\n\n[web]\nviewer_token_file = \"viewer-token\"\nrefresh_interval_seconds = 1\n",
            dir.path().join("admin-token").display().to_string()
        ),
    );
    let client = reqwest::blocking::Client::new();
    let put = client
        .put(format!("{}/api/v1/config/profiles/payment", collector.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"selector": {"region": "cn-test-live"},
                      "settings": {"targets": [{"name": "live-host", "address": "pay2.live.test:443"}]},
                      "comment": "the payment host moved"}))
        .send()
        .unwrap();
    assert_eq!(put.status().as_u16(), 200, "{:?}", put.text());
    let terminal = "CTL-0001";
    let token = collector.token(terminal);
    let send = |report: Value| {
        let response = client
            .post(format!("{}/api/v1/reports", collector.url))
            .bearer_auth(&token)
            .json(&report)
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{:?}", response.text());
        response.json::<Value>().unwrap()
    };
    // A new agent: its acknowledgement names the version to run; then it runs it.
    let ack = send(control_report(terminal, 1, json!({}), None));
    let version = ack["config"]
        .as_str()
        .unwrap_or_else(|| panic!("no version in {ack}"))
        .to_string();
    let ack = send(control_report(
        terminal,
        2,
        json!({ "applied": version }),
        None,
    ));
    assert!(ack.get("config").is_none(), "{ack}");

    let browser = Browser::start(&chromedriver, &chromium);
    browser.open(&format!("{}/?token={VIEWER_TOKEN}#/config", collector.url));
    browser.wait_until(
        "the version with its one terminal, the profile and its history",
        &format!(
            "return document.querySelector('#config-versions tr[data-version=\"{version}\"] td:nth-child(3)')?.textContent === '1' \
             && document.querySelector('#config-profiles tr[data-profile=\"payment\"]') !== null \
             && document.querySelector('#config-history')?.textContent.includes('the payment host moved') === true"
        ),
    );
    browser.assert_no_csp_violation("the config page");
    browser.screenshot("8-config");

    browser.open(&format!("{}/#/terminal/{terminal}", collector.url));
    browser.wait_until(
        "the settings the terminal runs",
        &format!("return document.querySelector('#config-applied')?.textContent.includes('{version}') === true"),
    );
    browser.click("#probe-now");
    browser.answer_prompt(ADMIN_TOKEN);
    browser.wait_until(
        "the request, by the admin, waiting",
        "const state = document.querySelector('#probe-state'); \
         return state?.textContent.includes('requested by admin') === true && state.dataset.answered === 'false'",
    );
    let view: Value = client
        .get(format!("{}/api/v1/terminals/{terminal}", collector.url))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = view["probe"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no probe in {view:#}"));
    let ack = send(control_report(
        terminal,
        3,
        json!({ "applied": version }),
        Some(id),
    ));
    assert!(ack.get("probe_request").is_none(), "answered: {ack}");
    browser.wait_until(
        "the request answered",
        "return document.querySelector('#probe-state')?.dataset.answered === 'true'",
    );
    // The problem list probes the terminals of its page at once (the token is kept for the tab).
    browser.open(&format!("{}/#/problems?q=CTL-", collector.url));
    browser.element("tr.problem-row[data-terminal=\"CTL-0001\"]");
    browser.click("#probe-page");
    browser.wait_until(
        "the page's terminals asked to probe",
        "return document.querySelector('#probe-page-message')?.textContent === 'Probe requested for 1 terminals.'",
    );
    let view: Value = client
        .get(format!("{}/api/v1/terminals/{terminal}", collector.url))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        view["probe"]["id"].as_u64() > Some(id),
        "a new request: {view:#}"
    );
    assert!(view["probe"]["answered_at"].is_null(), "{view:#}");
    browser.open(&format!("{}/#/terminal/{terminal}", collector.url));
    browser.click("#lang-toggle");
    browser.wait_until(
        "the Chinese texts",
        "return document.querySelector('#probe-now')?.textContent === '立即探测' \
         && document.querySelector('#control h2')?.textContent === '配置与即时探测' \
         && document.querySelector('#probe-message')?.textContent.includes('已请求探测') === true",
    );
    browser.screenshot("9-terminal-probe-zh-CN");
    browser.assert_no_csp_violation("fleet control");
}
