//! Runs cases: for each, a fresh collector (its binary, a loopback port it picks, a data
//! directory of its own, a one-second fleet evaluation), the simulated fleet playing the case's
//! incidents against it, and a poll of its public API (`/api/v1/findings`,
//! `/api/v1/terminals`) every second until the run ends. Cases run side by side, `parallel` at
//! a time.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use posmon_protocol::FleetKey;
use serde::Serialize;
use serde_json::Value;

use super::cases::Case;
use super::score::{score, CaseScore, Observed, Poll};
use crate::load::{run, LoadConfig, Sink};

/// The prefix of the simulated terminals' ids.
pub const ID_PREFIX: &str = "EV-";
/// The most items one API page lists (the collector's own limit).
const PAGE: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The `posmon-collector` binary to start.
    pub collector_binary: PathBuf,
    /// Where each case's collector keeps its config, data and log (a directory per case).
    pub work_dir: PathBuf,
    /// Cases run at once.
    pub parallel: usize,
    pub seed: u64,
    pub poll_interval: Duration,
}

/// What one case showed.
#[derive(Debug, Clone, Serialize)]
pub struct CaseRun {
    #[serde(flatten)]
    pub score: CaseScore,
    pub reports_sent: u64,
    pub reports_accepted: u64,
    pub wall_seconds: f64,
    /// The fleet could not keep its schedule (the machine or the collector was too slow): its
    /// incidents happened later than the polls assume, so the times are not valid.
    pub fell_behind: bool,
    /// A few of the fleet's errors (refused reports, transport errors), to read.
    pub fleet_errors: Vec<String>,
}

/// A fleet that needed more than this share of its run time over it fell behind.
const BEHIND_TOLERANCE: f64 = 0.1;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("the collector did not start within 30 s; its log {0}")]
    NoStart(PathBuf),
    #[error("the fleet: {0}")]
    Load(#[from] crate::load::LoadError),
    #[error("the fleet key: {0}")]
    Key(String),
    #[error("the collector's API: {0}")]
    Api(String),
}

/// Runs every case, `parallel` at a time; results in the cases' order.
pub async fn run_all(settings: Settings, cases: Vec<Case>) -> Vec<Result<CaseRun, RunError>> {
    let settings = Arc::new(settings);
    let permits = Arc::new(tokio::sync::Semaphore::new(settings.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, case) in cases.into_iter().enumerate() {
        let (settings, permits) = (Arc::clone(&settings), Arc::clone(&permits));
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            eprintln!("eval: {} …", case.name);
            let result = run_case(&settings, index, &case).await;
            if let Err(error) = &result {
                eprintln!("eval: {}: {error}", case.name);
            }
            (index, result)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(error) => eprintln!("eval: a case's task failed: {error}"),
        }
    }
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// A child process killed when dropped.
struct Collector {
    child: std::process::Child,
    url: String,
    data_dir: PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |error| RunError::Io(what, error)
}

/// The collector's config for a case: loopback on a port it picks, data in `dir`, a fleet
/// evaluation every second, silence after three of the fleet's report intervals, a version
/// policy that makes `outdated_app` outdated; and the clock guard wide enough to accept a
/// terminal a year ahead (the evaluation judges the diagnosis of such a clock, not the guard).
fn collector_config(dir: &Path, case: &Case) -> String {
    let interval = case.report_interval_seconds.ceil().max(1.0) as u64;
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[diagnosis]\nreport_interval_seconds = {interval}\n\
         evaluation_interval_seconds = 1\n\n[limits]\nmax_clock_ahead_seconds = 40000000\n\n\
         [[version_policy]]\ncomponent = \"pos_app\"\nminimum = \"2.5.0\"\n",
        dir.join("data").display().to_string()
    )
}

async fn start_collector(binary: &Path, dir: &Path, case: &Case) -> Result<Collector, RunError> {
    std::fs::create_dir_all(dir).map_err(io(dir.display().to_string()))?;
    let config = dir.join("collector.toml");
    std::fs::write(&config, collector_config(dir, case)).map_err(io("collector.toml"))?;
    let log = dir.join("collector.log");
    let log_file = std::fs::File::create(&log).map_err(io(log.display().to_string()))?;
    let mut child = Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(io(format!("starting {}", binary.display())))?;
    let stdout = child.stdout.take();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        // Reads to the end, so the collector never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("posmon-collector listening on ") {
                let _ = sender.send(url.trim().to_string());
            }
        }
    });
    let url = tokio::task::spawn_blocking(move || receiver.recv_timeout(Duration::from_secs(30)))
        .await
        .ok()
        .and_then(Result::ok);
    let collector = Collector {
        child,
        url: url.unwrap_or_default(),
        data_dir: dir.join("data"),
    };
    if collector.url.is_empty() {
        return Err(RunError::NoStart(log));
    }
    Ok(collector)
}

async fn run_case(settings: &Settings, index: usize, case: &Case) -> Result<CaseRun, RunError> {
    let dir = settings.work_dir.join(format!("case-{index:02}"));
    let collector = start_collector(&settings.collector_binary, &dir, case).await?;
    let secret_path = collector.data_dir.join("fleet-secret");
    let secret = std::fs::read_to_string(&secret_path).map_err(io("the fleet secret"))?;
    let key = FleetKey::new("k1", secret.trim().as_bytes().to_vec())
        .map_err(|error| RunError::Key(error.to_string()))?;
    let load = LoadConfig {
        collector_url: collector.url.clone(),
        sink: Sink::Posmon,
        key,
        terminals: case.terminals,
        rate_per_second: case.terminals as f64 / case.report_interval_seconds,
        duration: Some(Duration::from_secs_f64(case.run_seconds)),
        concurrency: 32,
        seed: settings.seed,
        id_prefix: ID_PREFIX.to_string(),
        scenario: case.scenario(),
        request_timeout: Duration::from_secs(10),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|error| RunError::Api(error.to_string()))?;
    let started = Instant::now();
    let fleet = tokio::spawn(run(load, std::future::pending()));
    let mut polls = Vec::new();
    let mut next = started;
    while !fleet.is_finished() {
        let at_seconds = started.elapsed().as_secs_f64();
        // A poll the collector does not answer (busy) is skipped, not fatal.
        if let Ok(findings) = findings(&client, &collector.url).await {
            polls.push(Poll {
                at_seconds,
                findings,
            });
        }
        next += settings.poll_interval;
        tokio::time::sleep_until(next.into()).await;
    }
    let summary = fleet
        .await
        .map_err(|error| RunError::Api(format!("the fleet's task: {error}")))??;
    polls.push(Poll {
        at_seconds: started.elapsed().as_secs_f64(),
        findings: findings(&client, &collector.url).await?,
    });
    let readiness = readiness(&client, &collector.url).await?;
    drop(collector);
    let score = score(case, settings.seed, ID_PREFIX, &polls, readiness.as_ref());
    Ok(CaseRun {
        score,
        reports_sent: summary.reports_sent,
        reports_accepted: summary.reports_accepted,
        wall_seconds: started.elapsed().as_secs_f64(),
        fell_behind: summary.elapsed_seconds > case.run_seconds * (1.0 + BEHIND_TOLERANCE),
        fleet_errors: summary.sample_errors,
    })
}

/// Every item of a paged list endpoint (`total`, `offset`, and the items under `key`).
async fn all_pages(client: &reqwest::Client, url: &str, key: &str) -> Result<Vec<Value>, RunError> {
    let mut items = Vec::new();
    loop {
        let page_url = format!("{url}&limit={PAGE}&offset={}", items.len());
        let body: Value = client
            .get(&page_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| RunError::Api(error.to_string()))?
            .json()
            .await
            .map_err(|error| RunError::Api(error.to_string()))?;
        let page = body[key].as_array().cloned().unwrap_or_default();
        let total = body["total"].as_u64().unwrap_or(0) as usize;
        let empty = page.is_empty();
        items.extend(page);
        if empty || items.len() >= total {
            return Ok(items);
        }
    }
}

/// The open findings, fleet-level ones and suppressed ones included.
async fn findings(client: &reqwest::Client, base: &str) -> Result<Vec<Observed>, RunError> {
    let url = format!("{base}/api/v1/findings?suppressed=include");
    let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
    Ok(all_pages(client, &url, "findings")
        .await?
        .iter()
        .map(|finding| Observed {
            id: finding["id"].as_u64().unwrap_or_default(),
            terminal_id: text(&finding["terminal_id"]),
            code: text(&finding["code"]),
            party: text(&finding["party"]),
            subject: text(&finding["subject"]),
            suppressed_by: finding["suppressed_by"].as_u64(),
        })
        .collect())
}

/// Each terminal's readiness, or `None` when the API shows none.
async fn readiness(
    client: &reqwest::Client,
    base: &str,
) -> Result<Option<HashMap<String, String>>, RunError> {
    let url = format!("{base}/api/v1/terminals?");
    let terminals = all_pages(client, &url, "terminals").await?;
    let shown: HashMap<String, String> = terminals
        .iter()
        .filter_map(|terminal| {
            let id = terminal["terminal_id"].as_str()?;
            // A plain string, or an object with its state.
            let shown = &terminal["readiness"];
            let readiness = shown.as_str().or_else(|| shown["state"].as_str())?;
            Some((id.to_string(), readiness.to_string()))
        })
        .collect();
    Ok((!shown.is_empty()).then_some(shown))
}
