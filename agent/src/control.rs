//! Fleet control on the agent: the collector's settings laid over the local file — kept when
//! they work, refused with the reason when they do not —, the control long-poll, and probe
//! requests.
//!
//! The settings the agent runs are its file with the collector's [`Settings`] laid over it,
//! except the keys the file pins (`pinned`). They are checked as the file is (every key, and
//! every file they name: a target's CA bundle, a component's regex); settings that fail leave
//! the agent on its last good configuration and are reported as refused, with the reason, in
//! the next report. The last applied settings and the last refusal are kept in
//! `state_dir/central.json`, so a restart runs what ran before.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use posmon_protocol::control::{
    AgentSettings, ConfigState, ControlAnswer, Rejection, Settings, AGENT_CONFIG_PATH,
    CONTROL_PATH, REASON_MAX_CHARS, SETTINGS_MAX_BYTES,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::backoff::{full_jitter, Jitter};
use crate::config::{AgentConfig, ComponentConfig, LabelsConfig, PeripheralConfig, TargetConfig};
use crate::cycle::Measurer;
use crate::deliver::{
    https_connection_setup_bytes, https_exchange_bytes, read_answer, ANSWER_TOO_LARGE,
    TCP_KEEPALIVE_BYTES,
};

/// The file in `state_dir` that keeps the applied settings and the last refusal.
pub const CENTRAL_FILE: &str = "central.json";

/// The largest `central.json` read back.
const CENTRAL_FILE_MAX_BYTES: u64 = 2 * SETTINGS_MAX_BYTES as u64;

/// What `central.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    applied: Option<AgentSettings>,
    #[serde(default)]
    rejected: Option<Rejection>,
}

/// The local file, the collector's settings the agent runs and the last ones it refused.
pub struct Central {
    local: AgentConfig,
    applied: Option<AgentSettings>,
    rejected: Option<Rejection>,
    /// When the refusal was made (or found at start): it is forgotten after `REFUSAL_KEPT`,
    /// so that settings refused for want of a file are tried again once it is there.
    rejected_at: Option<Instant>,
}

/// How long a refusal stands before the settings are fetched and tried again.
pub const REFUSAL_KEPT: Duration = Duration::from_secs(3600);

impl Central {
    /// The local file with what `central.json` kept: the configuration to run. Saved settings
    /// that do not apply now (a pin added, a CA bundle not mounted yet) leave the local file
    /// running, and are not refused: the collector names them again and they are tried anew.
    pub fn open(local: AgentConfig) -> (Central, AgentConfig) {
        let saved = read_saved(&local.state_dir.join(CENTRAL_FILE));
        let mut central = Central {
            local: local.clone(),
            applied: None,
            rejected_at: saved.rejected.as_ref().map(|_| Instant::now()),
            rejected: saved.rejected,
        };
        let Some(applied) = saved.applied else {
            return (central, local);
        };
        match lay_over(&local, &applied.settings) {
            Ok(config) => {
                central.applied = Some(applied);
                (central, config)
            }
            Err(reason) => {
                tracing::warn!(version = %applied.version, %reason, "The collector's saved settings do not apply now; running the local file until they are offered again.");
                (central, local)
            }
        }
    }

    /// Forgets a refusal older than `REFUSAL_KEPT`; whether it did (what runs changed).
    pub fn forget_stale_refusal(&mut self, now: Instant) -> bool {
        let stale = self
            .rejected_at
            .is_some_and(|at| now.saturating_duration_since(at) >= REFUSAL_KEPT);
        if stale {
            tracing::info!(
                "Forgetting an old refusal of the collector's settings: they will be tried again."
            );
            self.rejected = None;
            self.rejected_at = None;
            self.save();
        }
        stale
    }

    /// Records that settings `version` could not be read (too large, not decodable): refused
    /// like settings that do not apply, so that the collector stops naming them.
    pub fn refuse(&mut self, version: String, reason: String) {
        self.rejected = Some(Rejection {
            version,
            reason: bounded(reason),
        });
        self.rejected_at = Some(Instant::now());
        self.save();
    }

    /// What the agent runs, as a report says it.
    pub fn state(&self) -> ConfigState {
        ConfigState {
            applied: self.applied.as_ref().map(|applied| applied.version.clone()),
            rejected: self.rejected.clone(),
        }
    }

    /// Takes `offered` when it applies: the configuration and its measurer to run from now.
    /// Otherwise keeps what runs and records the refusal; the reason names the key.
    pub fn offer(&mut self, offered: AgentSettings) -> Result<(AgentConfig, Measurer), String> {
        let outcome = lay_over(&self.local, &offered.settings).and_then(|config| {
            Measurer::new(&config)
                .map(|measurer| (config, measurer))
                .map_err(|error| format!("{error:#}"))
        });
        match &outcome {
            Ok(_) => {
                self.applied = Some(offered);
                self.rejected = None;
            }
            Err(reason) => {
                self.rejected = Some(Rejection {
                    version: offered.version,
                    reason: bounded(reason.clone()),
                });
                self.rejected_at = Some(Instant::now());
            }
        }
        self.save();
        outcome
    }

    /// Writes `central.json` atomically; a failure is logged (the settings still run).
    fn save(&self) {
        let saved = Saved {
            applied: self.applied.clone(),
            rejected: self.rejected.clone(),
        };
        let dir = &self.local.state_dir;
        let written = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(dir, CENTRAL_FILE, &bytes));
        if let Err(error) = written {
            tracing::warn!(%error, dir = %dir.display(), "Cannot keep the collector's settings for the next start.");
        }
    }
}

fn bounded(reason: String) -> String {
    if reason.chars().count() <= REASON_MAX_CHARS {
        return reason;
    }
    let mut cut: String = reason.chars().take(REASON_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// `central.json`, leniently: a missing, oversized or unreadable file is nothing kept.
fn read_saved(path: &Path) -> Saved {
    let Ok(file) = std::fs::File::open(path) else {
        return Saved::default();
    };
    let mut bytes = Vec::new();
    let read = std::io::Read::read_to_end(
        &mut std::io::Read::take(file, CENTRAL_FILE_MAX_BYTES + 1),
        &mut bytes,
    );
    if read.is_err() || bytes.len() as u64 > CENTRAL_FILE_MAX_BYTES {
        tracing::warn!(path = %path.display(), "Ignoring an unreadable or oversized file of the collector's settings.");
        return Saved::default();
    }
    serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        tracing::warn!(%error, path = %path.display(), "Ignoring a corrupt file of the collector's settings.");
        Saved::default()
    })
}

/// A temporary file in `dir`, synced, renamed over `name`, the directory synced.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// `local` with `settings` laid over it, except the keys it pins; checked as a config file is,
/// the CA bundles read. The error names the key.
pub fn lay_over(local: &AgentConfig, settings: &Settings) -> Result<AgentConfig, String> {
    let pinned = |key: &str| {
        local
            .pinned
            .iter()
            .any(|pin| pin == key || key.strip_prefix("labels.").is_some() && pin == "labels")
    };
    let mut config = local.clone();
    if let Some(targets) = settings.targets.as_ref().filter(|_| !pinned("targets")) {
        config.targets = targets
            .iter()
            .map(|target| TargetConfig {
                name: target.name.clone(),
                address: target.address.clone(),
                tls: target.tls,
                attempts: target.attempts,
                ca_file: target.ca_file.as_ref().map(PathBuf::from),
                contact: target.contact.clone(),
            })
            .collect();
    }
    let intervals = [
        (
            "probe_interval_seconds",
            settings.probe_interval_seconds,
            &mut config.probe_interval_seconds,
        ),
        (
            "full_probe_interval_seconds",
            settings.full_probe_interval_seconds,
            &mut config.full_probe_interval_seconds,
        ),
        (
            "failing_probe_interval_seconds",
            settings.failing_probe_interval_seconds,
            &mut config.failing_probe_interval_seconds,
        ),
        (
            "report_interval_seconds",
            settings.report_interval_seconds,
            &mut config.report_interval_seconds,
        ),
        (
            "probe_timeout_seconds",
            settings.probe_timeout_seconds,
            &mut config.probe_timeout_seconds,
        ),
    ];
    for (key, value, field) in intervals {
        if let Some(value) = value.filter(|_| !pinned(key)) {
            *field = value;
        }
    }
    if let Some(attempts) = settings.attempts.filter(|_| !pinned("attempts")) {
        config.attempts = attempts;
    }
    if let Some(processes) = settings.processes.as_ref().filter(|_| !pinned("processes")) {
        config.processes.clone_from(processes);
    }
    if let Some(peripherals) = settings
        .peripherals
        .as_ref()
        .filter(|_| !pinned("peripherals"))
    {
        config.peripherals = peripherals
            .iter()
            .map(|peripheral| PeripheralConfig {
                name: peripheral.name.clone(),
                device: peripheral.device.as_ref().map(PathBuf::from),
                usb: peripheral.usb.clone(),
                command: None,
                timeout_seconds: crate::config::default_command_timeout(),
            })
            .collect();
    }
    if let Some(components) = settings
        .components
        .as_ref()
        .filter(|_| !pinned("components"))
    {
        config.components = components
            .iter()
            .map(|component| ComponentConfig {
                name: component.name.clone(),
                file: component.file.as_ref().map(PathBuf::from),
                command: None,
                properties: component.properties.as_ref().map(PathBuf::from),
                key: component.key.clone(),
                regex: component.regex.clone(),
                timeout_seconds: crate::config::default_command_timeout(),
            })
            .collect();
    }
    lay_labels(&mut config.labels, settings, &pinned);
    config
        .validate()
        .map_err(|error| error.to_string().replace("config key ", ""))?;
    for (index, target) in config.targets.iter().enumerate() {
        if let Some(path) = &target.ca_file {
            crate::probe::tls::Trust::from_ca_file(path)
                .map_err(|error| format!("targets[{index}].ca_file: {error}"))?;
        }
    }
    Ok(config)
}

fn lay_labels(labels: &mut LabelsConfig, settings: &Settings, pinned: &dyn Fn(&str) -> bool) {
    let set = &settings.labels;
    for (key, value, field) in [
        ("labels.merchant", &set.merchant, &mut labels.merchant),
        ("labels.model", &set.model, &mut labels.model),
        ("labels.region", &set.region, &mut labels.region),
        ("labels.carrier", &set.carrier, &mut labels.carrier),
    ] {
        if value.is_some() && !pinned(key) {
            field.clone_from(value);
        }
    }
    for (key, value) in &set.extra {
        if !pinned(&format!("labels.extra.{key}")) {
            labels.extra.insert(key.clone(), value.clone());
        }
    }
}

/// What the control task tells the agent's loop.
#[derive(Debug)]
pub enum Event {
    /// Settings the collector says this terminal should run.
    Settings(Box<AgentSettings>),
    /// Probe every target at once and report, naming this request.
    Probe(u64),
    /// The settings named `version` could not be read: refuse them.
    Unreadable { version: String, reason: String },
}

/// The agent loop's end of the control task: its events, where to ask for settings an
/// acknowledgement named, and what the agent runs (the long-poll tells the collector).
pub struct Link {
    pub events: mpsc::Receiver<Event>,
    pub fetch: mpsc::Sender<String>,
    pub state: watch::Sender<ConfigState>,
    /// IP bytes the control channel spent, estimated, since the loop last took them.
    pub traffic: Arc<AtomicU64>,
    _task: crate::run::AbortOnDrop,
}

impl Link {
    pub fn take_traffic(&self) -> u64 {
        self.traffic.swap(0, Ordering::Relaxed)
    }
}

/// Starts the control task: the long-poll (unless `control_hold_seconds` is 0) and the
/// fetches of settings.
pub fn start(config: &AgentConfig, token: &str, state: ConfigState) -> anyhow::Result<Link> {
    let client = crate::deliver::collector_client_builder(config)?
        // Its own connection, kept: a held request would block the deliveries' connection.
        .pool_max_idle_per_host(1)
        // Never reaped as idle: the pool counts an HTTP/2 connection idle from its last
        // checkout, so a poll held longer than the idle timeout (reqwest's default 90 s) had
        // it evicted meanwhile, and it closed when the hold ended — a TCP and TLS handshake
        // (about 2 KB) every hold. The collector closes a connection left without a request.
        .pool_idle_timeout(None)
        .tcp_keepalive(Duration::from_secs(config.control_keepalive_seconds))
        .build()?;
    let base = reqwest::Url::parse(&config.collector_url)?;
    let (events, events_rx) = mpsc::channel(8);
    let (fetch, fetch_rx) = mpsc::channel(4);
    let (state_tx, state_rx) = watch::channel(state);
    let traffic = Arc::new(AtomicU64::new(0));
    let poller = Poller {
        client,
        control_url: base.join(CONTROL_PATH)?,
        config_url: base.join(AGENT_CONFIG_PATH)?,
        tls: base.scheme() == "https",
        terminal_id: config.terminal_id.clone(),
        authorization: format!("Bearer {token}"),
        hold: config.control_hold(),
        keepalive: Duration::from_secs(config.control_keepalive_seconds),
        request_timeout: config.request_timeout(),
        retry_max: Duration::from_secs(config.retry_max_seconds),
        traffic: Arc::clone(&traffic),
        connected: false,
        failures: 0,
        jitter: Jitter::new(),
        last_probe_request: None,
    };
    let task = tokio::spawn(poller.run(state_rx, fetch_rx, events));
    Ok(Link {
        events: events_rx,
        fetch,
        state: state_tx,
        traffic,
        _task: crate::run::AbortOnDrop(task),
    })
}

/// The control task's own HTTP client and schedule.
struct Poller {
    client: reqwest::Client,
    control_url: reqwest::Url,
    config_url: reqwest::Url,
    tls: bool,
    terminal_id: String,
    authorization: String,
    hold: Option<Duration>,
    keepalive: Duration,
    request_timeout: Duration,
    retry_max: Duration,
    traffic: Arc<AtomicU64>,
    /// Whether the last request left a connection open (no setup to count for the next).
    connected: bool,
    failures: u32,
    jitter: Jitter,
    /// The latest probe request the long-poll brought: a repeat of it is no news.
    last_probe_request: Option<u64>,
}

/// After a collector without fleet control for this terminal: try again this much later.
const NOT_SUPPORTED_WAIT: Duration = Duration::from_secs(3600);
/// The shortest and longest wait a collector's `retry_after_seconds` can ask for.
const RETRY_AFTER_MIN: Duration = Duration::from_secs(30);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

impl Poller {
    async fn run(
        mut self,
        mut state: watch::Receiver<ConfigState>,
        mut fetches: mpsc::Receiver<String>,
        events: mpsc::Sender<Event>,
    ) {
        let mut wait_until: Option<Instant> = None;
        loop {
            let current = state.borrow_and_update().clone();
            let waiting = wait_until.filter(|until| *until > Instant::now());
            tokio::select! {
                version = fetches.recv() => {
                    let Some(version) = version else { return };
                    if !state.borrow().knows(&version) {
                        self.fetch(version, &events).await;
                    }
                }
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = sleep_until(waiting), if waiting.is_some() => wait_until = None,
                polled = self.poll(&current), if waiting.is_none() && self.hold.is_some() => {
                    wait_until = self.after_poll(polled, &current, &events).await;
                }
            }
        }
    }

    /// What one long-poll brought: events for the loop, and how long to wait before the next.
    async fn after_poll(
        &mut self,
        polled: Result<(ControlAnswer, Duration), Polled>,
        current: &ConfigState,
        events: &mpsc::Sender<Event>,
    ) -> Option<Instant> {
        let hold = self.hold.unwrap_or_default();
        match polled {
            Ok((answer, took)) => {
                // News is what the agent did not know: a collector repeating itself at once is
                // backed off like one answering empty.
                let new_probe = answer
                    .probe_request
                    .filter(|id| self.last_probe_request != Some(*id));
                let new_version = answer.config.filter(|version| !current.knows(version));
                let news = new_probe.is_some() || new_version.is_some();
                if let Some(id) = new_probe {
                    self.last_probe_request = Some(id);
                    let _ = events.send(Event::Probe(id)).await;
                }
                if let Some(version) = new_version {
                    self.fetch(version, events).await;
                }
                if let Some(seconds) = answer.retry_after_seconds {
                    let wait = Duration::from_secs(u64::from(seconds))
                        .clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX);
                    return Some(Instant::now() + wait);
                }
                if news || took >= hold / 2 {
                    self.failures = 0;
                    None
                } else {
                    // An empty answer long before the hold: do not spin on a collector that
                    // answers at once.
                    Some(Instant::now() + self.backoff())
                }
            }
            Err(Polled::NotSupported) => Some(Instant::now() + NOT_SUPPORTED_WAIT),
            Err(Polled::Failed(problem) | Polled::TooLarge(problem)) => {
                let wait = self.backoff();
                tracing::debug!(%problem, wait_seconds = wait.as_secs(), "The control long-poll failed.");
                Some(Instant::now() + wait)
            }
        }
    }

    fn backoff(&mut self) -> Duration {
        let delay = full_jitter(
            self.failures,
            Duration::from_secs(1),
            self.retry_max.max(Duration::from_secs(1)),
            self.jitter.unit(),
        )
        .max(Duration::from_secs(1));
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// One long-poll, telling the collector what runs: its answer and how long it took.
    async fn poll(&mut self, state: &ConfigState) -> Result<(ControlAnswer, Duration), Polled> {
        let hold = self.hold.unwrap_or_default();
        let mut url = self.control_url.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(applied) = &state.applied {
                query.append_pair("applied", applied);
            }
            if let Some(rejected) = &state.rejected {
                query.append_pair("rejected", &rejected.version);
            }
            query.append_pair("wait", &hold.as_secs().to_string());
        }
        let started = Instant::now();
        let answered = self
            .get(url, hold.saturating_add(self.request_timeout))
            .await;
        let took = started.elapsed();
        // The connection's keepalives while the request was held.
        let keepalives =
            (took.as_secs() / self.keepalive.as_secs().max(1)).saturating_mul(TCP_KEEPALIVE_BYTES);
        self.traffic.fetch_add(keepalives, Ordering::Relaxed);
        let body = answered?;
        let answer = serde_json::from_slice::<ControlAnswer>(&body)
            .map_err(|error| Polled::Failed(format!("not a control answer: {error}")))?;
        Ok((answer, took))
    }

    /// Fetches the terminal's settings, named `version`, and hands them to the loop; settings
    /// that cannot be read (too large, not decodable: a newer collector's key) are refused, so
    /// that the collector stops naming them. A failed request is only logged: they are named
    /// again.
    async fn fetch(&mut self, version: String, events: &mpsc::Sender<Event>) {
        let url = self.config_url.clone();
        let unreadable = match self.get(url, self.request_timeout).await {
            Ok(body) => match serde_json::from_slice::<AgentSettings>(&body) {
                Ok(settings) => {
                    let _ = events.send(Event::Settings(Box::new(settings))).await;
                    return;
                }
                Err(error) => format!("the settings do not decode: {error}"),
            },
            Err(Polled::TooLarge(problem)) => problem,
            Err(Polled::NotSupported) => return,
            Err(Polled::Failed(problem)) => {
                tracing::warn!(%problem, "Cannot fetch the collector's settings; keeping the configuration that runs.");
                return;
            }
        };
        tracing::warn!(%version, reason = %unreadable, "Refusing the collector's settings: they cannot be read.");
        let _ = events
            .send(Event::Unreadable {
                version,
                reason: unreadable,
            })
            .await;
    }

    /// A GET with the terminal's credentials; the body, bounded.
    async fn get(&mut self, url: reqwest::Url, timeout: Duration) -> Result<Vec<u8>, Polled> {
        let setup = if self.connected {
            0
        } else {
            https_connection_setup_bytes(self.tls)
        };
        let sent = self
            .client
            .get(url)
            .timeout(timeout)
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(posmon_protocol::TERMINAL_HEADER, &self.terminal_id)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                self.connected = false;
                self.traffic.fetch_add(setup, Ordering::Relaxed);
                return Err(Polled::Failed(error.to_string()));
            }
        };
        let status = response.status();
        let body = read_answer(response, SETTINGS_MAX_BYTES).await;
        self.connected = body.is_ok();
        let length = body.as_ref().map_or(0, Vec::len) as u64;
        self.traffic.fetch_add(
            setup.saturating_add(https_exchange_bytes(0, length)),
            Ordering::Relaxed,
        );
        let body = body.map_err(|problem| {
            if problem.starts_with(ANSWER_TOO_LARGE) {
                Polled::TooLarge(problem)
            } else {
                Polled::Failed(problem)
            }
        })?;
        // A collector without fleet control, or one that does not let this terminal use it.
        if matches!(status.as_u16(), 401 | 403 | 404 | 405) {
            return Err(Polled::NotSupported);
        }
        if !status.is_success() {
            return Err(Polled::Failed(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        Ok(body)
    }
}

/// Why a control request brought nothing.
enum Polled {
    /// The collector has no fleet control for this terminal (401, 403, 404, 405).
    NotSupported,
    /// The answer is larger than an agent reads.
    TooLarge(String),
    Failed(String),
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_protocol::control::TargetSetting;

    fn local(dir: &Path) -> AgentConfig {
        let mut config = AgentConfig::example();
        config.state_dir = dir.to_path_buf();
        config.targets = vec![TargetConfig {
            name: "payment-host".into(),
            address: "127.0.0.1:9".into(),
            tls: false,
            attempts: None,
            ca_file: None,
            contact: None,
        }];
        config.labels.region = Some("east".into());
        config
    }

    fn settings(address: &str) -> Settings {
        Settings {
            targets: Some(vec![TargetSetting {
                name: "payment-host".into(),
                address: address.into(),
                tls: false,
                attempts: None,
                ca_file: None,
                contact: None,
            }]),
            report_interval_seconds: Some(60),
            labels: posmon_protocol::control::LabelSettings {
                region: Some("west".into()),
                ..Default::default()
            },
            ..Settings::default()
        }
    }

    fn offered(settings: Settings) -> AgentSettings {
        AgentSettings {
            version: settings.version(),
            settings,
        }
    }

    #[test]
    fn settings_lay_over_the_file_except_what_it_pins() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let mut file = local(dir.path());
        let laid = lay_over(&file, &settings("127.0.0.2:9")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(laid.targets[0].address, "127.0.0.2:9");
        assert_eq!(laid.report_interval_seconds, 60);
        assert_eq!(laid.labels.region.as_deref(), Some("west"));
        file.pinned = vec!["targets".into(), "labels.region".into()];
        let laid = lay_over(&file, &settings("127.0.0.2:9")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(laid.targets[0].address, "127.0.0.1:9", "pinned");
        assert_eq!(laid.report_interval_seconds, 60);
        assert_eq!(laid.labels.region.as_deref(), Some("east"), "pinned");
        file.pinned = vec!["labels".into()];
        let laid = lay_over(&file, &settings("127.0.0.2:9")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            laid.labels.region.as_deref(),
            Some("east"),
            "all labels pinned"
        );
    }

    #[test]
    fn settings_the_agent_cannot_use_are_refused_naming_the_key_and_the_old_ones_run_on() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let (mut central, running) = Central::open(local(dir.path()));
        assert_eq!(running.targets[0].address, "127.0.0.1:9");
        assert_eq!(central.state(), ConfigState::default());
        let good = offered(settings("127.0.0.2:9"));
        let (config, _) = central
            .offer(good.clone())
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.targets[0].address, "127.0.0.2:9");
        let mut lacking = settings("127.0.0.3:443");
        if let Some(targets) = lacking.targets.as_mut() {
            targets[0].tls = true;
            targets[0].ca_file = Some("/nonexistent/posmon-ca.pem".into());
        }
        let lacking = offered(lacking);
        let reason = central
            .offer(lacking.clone())
            .err()
            .unwrap_or_else(|| panic!("a missing CA bundle was taken"));
        assert!(reason.starts_with("targets[0].ca_file"), "{reason}");
        let state = central.state();
        assert_eq!(state.applied.as_deref(), Some(good.version.as_str()));
        assert_eq!(
            state.rejected.as_ref().map(|r| r.version.as_str()),
            Some(lacking.version.as_str())
        );
        assert!(state.knows(&lacking.version) && state.knows(&good.version));
        // A restart runs the last good settings and remembers the refusal.
        let (reopened, running) = Central::open(local(dir.path()));
        assert_eq!(running.targets[0].address, "127.0.0.2:9");
        assert_eq!(reopened.state(), state);
        // Settings that fail the file's own checks name their key too.
        let mut bad = settings("127.0.0.2:9");
        bad.probe_timeout_seconds = Some(1000);
        let reason = central
            .offer(offered(bad))
            .err()
            .unwrap_or_else(|| panic!("taken"));
        assert!(reason.starts_with("probe_timeout_seconds"), "{reason}");
    }

    #[test]
    fn saved_settings_that_do_not_apply_now_are_not_refused_and_old_refusals_are_forgotten() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let ca = dir.path().join("ca.pem");
        let pki = rcgen::generate_simple_self_signed(vec!["pay.test".to_string()])
            .unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(&ca, pki.cert.pem()).unwrap_or_else(|error| panic!("{error}"));
        let (mut central, _) = Central::open(local(dir.path()));
        let mut with_ca = settings("pay.test:443");
        if let Some(targets) = with_ca.targets.as_mut() {
            targets[0].tls = true;
            targets[0].ca_file = Some(ca.display().to_string());
        }
        let with_ca = offered(with_ca);
        assert!(central.offer(with_ca.clone()).is_ok());
        // The bundle is not there at the next start (a late mount): the file runs, nothing is
        // refused, and the collector's naming the version again brings them back.
        std::fs::remove_file(&ca).unwrap_or_else(|error| panic!("{error}"));
        let (mut reopened, running) = Central::open(local(dir.path()));
        assert_eq!(running.targets[0].address, "127.0.0.1:9");
        assert_eq!(reopened.state(), ConfigState::default());
        assert!(reopened.offer(with_ca.clone()).is_err());
        assert!(reopened.state().knows(&with_ca.version));
        // An hour later the refusal is forgotten, and the settings are tried again.
        assert!(!reopened.forget_stale_refusal(Instant::now()));
        assert!(reopened.forget_stale_refusal(Instant::now() + REFUSAL_KEPT));
        assert!(!reopened.state().knows(&with_ca.version));
    }

    /// A collector that answers every long-poll at once — asking to come back at once, or
    /// repeating a probe request — gets a few polls, not a loop that spends the data plan.
    #[tokio::test]
    async fn a_collector_answering_at_once_is_not_polled_in_a_loop() {
        for answer in [
            r#"{"retry_after_seconds":0}"#,
            r#"{"probe_request":5}"#,
            "{}",
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|error| panic!("{error}"));
            let port = listener
                .local_addr()
                .unwrap_or_else(|error| panic!("{error}"))
                .port();
            let polls = Arc::new(AtomicU64::new(0));
            let counted = Arc::clone(&polls);
            let body = answer.to_string();
            let server = tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let counted = Arc::clone(&counted);
                    let body = body.clone();
                    tokio::spawn(async move {
                        let mut buffer = vec![0u8; 4096];
                        while let Ok(read) = stream.read(&mut buffer).await {
                            if read == 0 {
                                return;
                            }
                            counted.fetch_add(1, Ordering::Relaxed);
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if stream.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
            let mut config = local(dir.path());
            config.collector_url = format!("http://127.0.0.1:{port}");
            config.control_hold_seconds = 60;
            let mut link = start(&config, "k1.x", ConfigState::default())
                .unwrap_or_else(|error| panic!("{error}"));
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mut probes = 0;
            while let Ok(event) = link.events.try_recv() {
                if matches!(event, Event::Probe(5)) {
                    probes += 1;
                }
            }
            drop(link);
            server.abort();
            let polls = polls.load(Ordering::Relaxed);
            // The backoff starts at a second and doubles: a handful, where a loop made a hundred.
            assert!(polls <= 6, "{answer}: {polls} polls in 3 s");
            assert!(
                probes <= 1,
                "{answer}: the same probe request {probes} times"
            );
        }
    }

    #[test]
    fn a_corrupt_file_of_settings_is_nothing_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(dir.path().join(CENTRAL_FILE), b"{not json")
            .unwrap_or_else(|error| panic!("{error}"));
        let (central, running) = Central::open(local(dir.path()));
        assert_eq!(central.state(), ConfigState::default());
        assert_eq!(running.targets[0].address, "127.0.0.1:9");
    }
}
