//! One terminal's token in hostile hands must not hurt the fleet, against the real collector
//! binary: a terminal flooding reports with fresh strings everywhere it can (max-length labels,
//! versions, 32 targets with new names that fail and recover, device lists) for 60 s keeps the
//! collector's memory bounded, cannot flush the other terminals' findings history, and cannot
//! take the metric label slots of the other terminals' targets, regions and models.
#![allow(
    clippy::unwrap_used,
    reason = "tests (under the trials harness): a failed unwrap fails the test"
)]

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{trial, wait_for, Collector};
use posmon_protocol::{terminal_token, FleetKey};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn main() -> ExitCode {
    // /proc: the collector's memory is read from /proc/<pid>/status.
    trials::run(vec![trial!(
        one_flooding_token_keeps_its_own_bounded_share,
        Need::Proc
    )])
}

const SECRET: &str = "an end-to-end test fleet secret";
const FLOOD: Duration = Duration::from_secs(60);
/// The bound on the collector's growth while flooded: without the interner's sweep it grows by
/// hundreds of MiB in this time.
const RSS_GROWTH_MAX_KIB: u64 = 64 * 1024;
/// Small bounds, so that the flood crosses each many times over in 60 s even in a debug build.
const HISTORY_TOTAL: usize = 200;
const HISTORY_PER_TERMINAL: usize = 20;
const LABEL_VALUES: usize = 40;
const LABEL_VALUES_PER_TERMINAL: usize = 8;
/// Rounds of fresh strings per request, two reports each (about 45 kB a report).
const ROUNDS_PER_REQUEST: u64 = 4;

/// The per-terminal request rate is lifted: the flood must reach the state with all it can
/// (the rate limit is another defence, tested in `hostile_connections.rs`).
fn start(dir: &Path) -> Collector {
    let secret_file = dir.join("fleet-secret");
    std::fs::write(&secret_file, SECRET).unwrap_or_else(|error| panic!("{error}"));
    Collector::start(
        dir,
        &format!(
            "[auth]\nsecret_file = {:?}\n\n\
             [limits]\nmax_history_findings = {HISTORY_TOTAL}\n\
             max_history_findings_per_terminal = {HISTORY_PER_TERMINAL}\n\
             terminal_requests_per_minute = 100000000\nterminal_request_burst = 100000000\n\n\
             [metrics]\nmax_label_values = {LABEL_VALUES}\n\
             max_label_values_per_terminal = {LABEL_VALUES_PER_TERMINAL}\n",
            secret_file.display().to_string()
        ),
    )
}

fn token(terminal_id: &str) -> String {
    let key =
        FleetKey::new("k1", SECRET.as_bytes().to_vec()).unwrap_or_else(|error| panic!("{error}"));
    terminal_token(&key, terminal_id)
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Stands for the round number in [`hostile_template`]: as wide as the number put in, and
/// valid wherever the number goes (label keys too); no other text has a `q`.
const ROUND: &str = "qqqqqqqq";
const SEQUENCE: &str = "\"~sequence~\"";
const OBSERVED_AT: &str = "~observed_at~";

/// `prefix` made unique by `serial` and filled up to `chars` characters with `fill` (a CJK
/// character takes three bytes).
fn text(prefix: &str, serial: &str, chars: usize, fill: char) -> String {
    let mut text = format!("{prefix}{serial}-");
    let used = text.chars().count();
    text.extend(std::iter::repeat_n(fill, chars.saturating_sub(used)));
    text
}

/// An ordinary report: one target with a measured latency, or refused.
fn ordinary_report(
    terminal_id: &str,
    sequence: u64,
    labels: Value,
    target: &str,
    up: bool,
) -> Value {
    let stages = if up {
        json!([{ "stage": "tcp", "status": "ok", "latency_ms": { "min": 30.0, "avg": 35.0, "max": 41.0 } }])
    } else {
        json!([{ "stage": "tcp", "status": "failed", "error": "refused" }])
    };
    json!({
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": now(),
        "agent_version": "0.1.0",
        "labels": labels,
        "software": { "pos_app": { "version": "2.9.1" } },
        "probes": [ { "target": target, "address": "pay.acquirer.test:443", "stages": stages } ]
    })
}

/// A hostile report, with [`ROUND`], [`SEQUENCE`] and [`OBSERVED_AT`] to fill in: every string
/// new in each round, as long as the protocol allows; 32 targets that answer TCP (with a
/// latency, so the metrics see them) and fail TLS. Filled in by text replacement, since
/// building 40 kB of JSON per report in a debug build would slow the flood down more than the
/// collector does.
fn hostile_template() -> String {
    let round = ROUND;
    let label = |name: &str| text(name, round, 128, '中');
    let extra: serde_json::Map<String, Value> = (0..16)
        .map(|index| {
            (
                text(&format!("k{index}_"), round, 64, 'x').replace('-', "_"),
                Value::from(label("v")),
            )
        })
        .collect();
    let software: serde_json::Map<String, Value> = (0..32)
        .map(|index| {
            (
                text(&format!("c{index}_"), round, 64, 'x').replace('-', "_"),
                json!({ "version": text("", round, 64, '版') }),
            )
        })
        .collect();
    let probes: Vec<Value> = (0..32)
        .map(|index| {
            json!({
                "target": text(&format!("t{index}-"), round, 64, 'x'),
                "address": text(&format!("h{index}-"), round, 256, 'a'),
                "stages": [
                    { "stage": "tcp", "status": "ok", "latency_ms": { "min": 1.0, "avg": 2.0, "max": 3.0 } },
                    { "stage": "tls", "status": "failed", "error": "certificate_expired" },
                ]
            })
        })
        .collect();
    let named = |prefix: &str| -> Vec<String> {
        (0..32)
            .map(|index| text(&format!("{prefix}{index}-"), round, 64, 'x'))
            .collect()
    };
    let report = json!({
        "schema_version": 1,
        "terminal_id": "T-hostile",
        "sequence": "~sequence~",
        "observed_at": OBSERVED_AT,
        "agent_version": text("", round, 64, 'v'),
        "labels": {
            "merchant": label("m"), "model": label("mo"), "region": label("r"), "carrier": label("c"),
            "extra": extra,
        },
        "software": software,
        "probes": probes,
        "device": {
            "processes": named("p").into_iter().map(|name| json!({ "name": name, "running": false })).collect::<Vec<_>>(),
            "peripherals": named("d").into_iter().map(|name| json!({ "name": name, "present": false })).collect::<Vec<_>>(),
            "disks": named("/m").into_iter().map(|mount| json!({ "mount": mount, "total_bytes": 100, "available_bytes": 1 })).collect::<Vec<_>>(),
            "temperatures": named("s").into_iter().map(|sensor| json!({ "sensor": sensor, "celsius": 99.0 })).collect::<Vec<_>>(),
        }
    });
    report.to_string()
}

/// A batch of `reports` from the template, of `round`s starting after `round`, two reports
/// per round, with sequences after `sequence`.
fn hostile_batch(template: &str, sequence: &mut u64, round: &mut u64, rounds: u64) -> String {
    let mut reports = Vec::new();
    for _ in 0..rounds {
        *round += 1;
        let this_round = format!("{:0width$}", *round, width = ROUND.len());
        let with_round = template.replace(ROUND, &this_round);
        for _ in 0..2 {
            *sequence += 1;
            reports.push(
                with_round
                    .replace(SEQUENCE, &sequence.to_string())
                    .replace(OBSERVED_AT, &now()),
            );
        }
    }
    format!("{{\"reports\":[{}]}}", reports.join(","))
}

/// POSTs a batch; `Ok` when accepted, `Err(status)` when the collector refuses or sheds it.
fn post(
    client: &reqwest::blocking::Client,
    collector: &Collector,
    terminal_id: &str,
    reports: &[Value],
) -> Result<(), u16> {
    post_body(
        client,
        collector,
        terminal_id,
        json!({ "reports": reports }).to_string(),
    )
}

fn post_body(
    client: &reqwest::blocking::Client,
    collector: &Collector,
    terminal_id: &str,
    body: String,
) -> Result<(), u16> {
    let response = client
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(token(terminal_id))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap_or_else(|error| panic!("POST /api/v1/reports: {error}"));
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().unwrap_or_default();
    // Shedding or per-terminal fairness may slow the flood down; anything else is a bug.
    assert!(
        status.as_u16() == 429 || status.as_u16() == 503,
        "{status}: {body}"
    );
    Err(status.as_u16())
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("/proc/{pid}/status: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

fn history_ids(collector: &Collector, terminal_id: &str) -> Vec<u64> {
    collector.get_json(&format!("/api/v1/terminals/{terminal_id}"))["findings_history"]
        .as_array()
        .map(|history| history.iter().filter_map(|f| f["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// The value of an unlabelled sample in the metrics text.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

/// The values a metric's label takes in the metrics text.
fn label_values(metrics: &str, metric: &str, label: &str) -> Vec<String> {
    let mut values: Vec<String> = metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .filter_map(|line| {
            let start = line.find(&format!("{label}=\""))? + label.len() + 2;
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_string())
        })
        .collect();
    values.sort();
    values.dedup();
    values
}

fn one_flooding_token_keeps_its_own_bounded_share() {
    let dir = tempfile::tempdir().unwrap();
    let collector = start(dir.path());
    let pid = collector.process.pid();
    let client = reqwest::blocking::Client::new();

    // A quiet terminal of the fleet: one outage that opened and closed, in its history.
    let quiet_labels =
        json!({ "model": "PAX-A920", "region": "cn-east", "carrier": "china-mobile" });
    for (sequence, up) in [(1, false), (2, false), (3, true), (4, true)] {
        let report = ordinary_report(
            "T-quiet",
            sequence,
            quiet_labels.clone(),
            "payment-host",
            up,
        );
        post(&client, &collector, "T-quiet", &[report]).unwrap_or_else(|status| panic!("{status}"));
    }
    let quiet_history = history_ids(&collector, "T-quiet");
    assert_eq!(
        quiet_history.len(),
        1,
        "the quiet terminal's outage is history"
    );
    let _ = collector.metrics();
    let baseline = rss_kib(pid);

    // The flood, with the memory sampled and /metrics scraped beside it (a scrape admits the
    // flooder's current region, model and carrier, so it offers new ones all the time).
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        let url = collector.url.clone();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut peak = 0;
            let mut scrapes = 0;
            let started = Instant::now();
            let mut series = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let rss = rss_kib(pid);
                peak = peak.max(rss);
                if started.elapsed().as_secs() >= 10 * series.len() as u64 {
                    series.push(rss / 1024);
                }
                if let Ok(response) = client.get(format!("{url}/metrics")).send() {
                    scrapes += u32::from(response.status().is_success());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            series.push(rss_kib(pid) / 1024);
            (peak.max(rss_kib(pid)), scrapes, series)
        })
    };
    let template = hostile_template();
    let started = Instant::now();
    let (mut sequence, mut round, mut accepted, mut refused) = (0u64, 0u64, 0u64, 0u64);
    while started.elapsed() < FLOOD {
        // Each round's 32 targets fail in two reports in a row (their findings open), then
        // vanish: the next rounds close them. Four rounds per request.
        let body = hostile_batch(&template, &mut sequence, &mut round, ROUNDS_PER_REQUEST);
        match post_body(&client, &collector, "T-hostile", body) {
            Ok(()) => accepted += 2 * ROUNDS_PER_REQUEST,
            Err(_) => {
                refused += 2 * ROUNDS_PER_REQUEST;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let (peak, scrapes, series) = sampler
        .join()
        .unwrap_or_else(|_| panic!("the sampler panicked"));
    println!("collector VmRSS every 10 s of the flood, MiB: {series:?}");
    let metrics = collector.metrics();
    println!(
        "flood: {accepted} reports accepted ({:.0}/s), {refused} shed; collector VmRSS baseline {} KiB, peak {} KiB (+{} KiB, bound +{RSS_GROWTH_MAX_KIB} KiB); {} interned strings; {scrapes} scrapes",
        accepted as f64 / FLOOD.as_secs_f64(),
        baseline,
        peak,
        peak.saturating_sub(baseline),
        sample(&metrics, "posmon_state_interned_strings"),
    );
    assert!(
        accepted >= 400,
        "the flood hardly got in: {accepted} reports"
    );
    assert!(
        peak <= baseline + RSS_GROWTH_MAX_KIB,
        "the collector grew from {baseline} KiB to {peak} KiB"
    );
    assert_eq!(collector.get_json("/healthz")["status"], "ok");

    // The flooder closed more findings than the whole history holds, yet only its own oldest
    // went.
    let dropped = sample(
        &metrics,
        "posmon_state_history_quota_dropped_findings_total",
    );
    assert!(
        dropped >= HISTORY_TOTAL as f64,
        "the flood closed too few findings to test the history ({dropped})"
    );
    assert_eq!(history_ids(&collector, "T-quiet"), quiet_history);
    assert_eq!(
        history_ids(&collector, "T-hostile").len(),
        HISTORY_PER_TERMINAL
    );
    // Its open findings stay within their bound.
    let hostile = collector.get_json("/api/v1/terminals/T-hostile");
    let open = hostile["open_findings"].as_array().map_or(0, Vec::len);
    assert!(open <= 128, "{open} open findings");

    // Terminals reporting new targets, regions and models after the flood still get their
    // own label values: the flooder spent only its own few slots.
    let hostile_targets = label_values(&metrics, "posmon_probe_latency_seconds_count", "target")
        .into_iter()
        .filter(|target| target.len() == 64)
        .count();
    assert!(
        hostile_targets <= LABEL_VALUES_PER_TERMINAL,
        "{hostile_targets} target values of the flooder"
    );
    let late_labels = json!({ "model": "PAX-late", "region": "cn-late", "carrier": "late-mobile" });
    for index in 0..5 {
        let id = format!("T-late-{index}");
        let report = ordinary_report(&id, 1, late_labels.clone(), "tms-late", true);
        post(&client, &collector, &id, &[report]).unwrap_or_else(|status| panic!("{status}"));
    }
    let metrics = wait_for(Duration::from_secs(10), || {
        let metrics = collector.metrics();
        label_values(&metrics, "posmon_fleet_region_terminals", "region")
            .contains(&"cn-late".to_string())
            .then_some(metrics)
    })
    .unwrap_or_else(|| panic!("the late terminals' region is not exported"));
    for (metric, label, expected) in [
        ("posmon_probe_latency_seconds_count", "target", "tms-late"),
        (
            "posmon_probe_latency_seconds_count",
            "target",
            "payment-host",
        ),
        ("posmon_fleet_region_terminals", "region", "cn-east"),
        ("posmon_fleet_model_terminals", "model", "PAX-late"),
        ("posmon_fleet_segment_terminals", "carrier", "late-mobile"),
    ] {
        let values = label_values(&metrics, metric, label);
        assert!(
            values.contains(&expected.to_string()),
            "{metric}: {label}={expected} missing from {values:?}"
        );
    }
    assert!(
        label_values(&metrics, "posmon_fleet_region_terminals", "region").len() <= LABEL_VALUES + 2,
        "the region label stays bounded"
    );
    // It starts again on the state the flood left (and checks its log for panics).
    collector.restart_healthy(dir.path());
}
