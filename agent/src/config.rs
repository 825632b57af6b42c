//! The agent's configuration: one TOML file, checked as a whole before the agent starts. A bad
//! file names the key and the problem, and the agent refuses to start.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use posmon_diagnosis::readiness::PaymentRoles;
use posmon_diagnosis::Party;
use posmon_protocol::{limits, Labels};
use serde::Deserialize;

/// The commented example configuration, printed by `posmon-agent print-default-config`. A test
/// checks that it parses to [`AgentConfig::example`].
pub const DEFAULT_CONFIG: &str = include_str!("../examples/agent.toml");

/// The environment variable that, when set, holds the terminal's token.
pub const TOKEN_ENV: &str = "POSMON_AGENT_TOKEN";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This terminal's id, unique in the fleet.
    pub terminal_id: String,
    /// Base URL of the collector, e.g. `https://posmon.example:8443`.
    pub collector_url: String,
    /// The terminal's token, inline. Prefer `token_file`.
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the terminal's token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Directory for the agent's own state: the spool of undelivered reports.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Seconds between two cheap active probes of a target (DNS from its cache, a TCP connect
    /// closed at once); none while the POS application's own connection shows the path works.
    #[serde(default = "default_probe_interval")]
    pub probe_interval_seconds: u64,
    /// Seconds between two full ladders of a target (DNS, TCP, TLS, HTTP, ICMP).
    #[serde(default = "default_full_probe_interval")]
    pub full_probe_interval_seconds: u64,
    /// Seconds between two probes of a target that fails, to see it recover (at most the probe
    /// interval), doubled while the failure stays the same.
    #[serde(default = "default_failing_probe_interval")]
    pub failing_probe_interval_seconds: u64,
    /// Seconds between two local checks (link, neighbour table, device, software, processes,
    /// peripherals): they cost no traffic; a changed outcome is reported at once.
    #[serde(default = "default_check_interval")]
    pub check_interval_seconds: u64,
    /// Seconds between two reads of the kernel's socket table and TCP counters (the passive
    /// watch of the POS application's connections); 0 turns the watch off.
    #[serde(default = "default_watch_interval")]
    pub watch_interval_seconds: u64,
    /// Seconds between reports when nothing changes (most are heartbeats).
    #[serde(default = "default_report_interval")]
    pub report_interval_seconds: u64,
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout_seconds: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// Bytes the spool may hold on disk; beyond it the oldest reports are dropped (and counted).
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Seconds a report may wait in the spool before it is dropped (and counted).
    #[serde(default = "default_spool_max_age")]
    pub spool_max_age_seconds: u64,
    /// Reports per request at most when the spool is drained.
    #[serde(default = "default_batch_max_reports")]
    pub batch_max_reports: usize,
    /// The cap of the delay between retries, in seconds.
    #[serde(default = "default_retry_max")]
    pub retry_max_seconds: u64,
    /// PEM CA bundle the collector's certificate must chain to (instead of the web roots).
    #[serde(default)]
    pub collector_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for a collector that asks for one.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Tries per target per cycle, unless the target sets its own.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Whether to send ICMP echoes to each target beside the ladder.
    #[serde(default = "default_icmp")]
    pub icmp: bool,
    /// The root under which `/sys`, `/proc`, `/etc/resolv.conf`, `/etc/hosts`, `/dev` and `/run`
    /// are read.
    #[serde(default = "default_system_root")]
    pub system_root: PathBuf,
    /// Nameservers (`ip` or `ip:port`) asked instead of those of `resolv.conf`.
    #[serde(default)]
    pub dns_servers: Vec<String>,
    #[serde(default)]
    pub labels: LabelsConfig,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub components: Vec<ComponentConfig>,
    /// Process names (as in `/proc/<pid>/comm`) whose running state is reported.
    #[serde(default)]
    pub processes: Vec<String>,
    #[serde(default)]
    pub peripherals: Vec<PeripheralConfig>,

    // --- The data budget (`budget.rs`) ---
    /// The agent's own traffic allowed per calendar month (UTC), in IP bytes both ways; 0 for
    /// no budget (the usage is still counted and reported).
    #[serde(default = "default_data_budget_bytes_per_month")]
    pub data_budget_bytes_per_month: u64,
    /// The most the cheap probes and heartbeats are ever stretched to stay within the budget, in
    /// percent of their configured intervals (100: never). Bounds how late a fault the passive
    /// watch cannot see is found once the budget is spent.
    #[serde(default = "default_data_budget_max_stretch_percent")]
    pub data_budget_max_stretch_percent: u32,
    /// How reports travel to the collector (`deliver.rs`, `datagram.rs`).
    #[serde(default)]
    pub transport: Transport,
    /// The collector's UDP port for report datagrams; absent: the port of `collector_url`.
    #[serde(default)]
    pub datagram_port: Option<u16>,

    // --- The local verdict (`status.rs`, `posmon-agent probe`) ---
    /// What a payment needs: the targets, peripherals and processes whose failure means the
    /// terminal cannot take payments. The same section, with the same defaults, as the
    /// collector's.
    #[serde(default)]
    pub readiness: PaymentRoles,
    /// Whom to call, per party (`merchant`, `pos_vendor`, `network_provider`,
    /// `software_vendor`, `acquirer`, `operations`).
    #[serde(default)]
    pub contacts: Contacts,
    /// A loopback address on which `GET /status` serves the status file's JSON; off when
    /// absent.
    #[serde(default)]
    pub status_listen: Option<SocketAddr>,

    // --- Fleet control (`control.rs`) ---
    /// Keys the collector's settings may not change here: `targets`, `report_interval_seconds`,
    /// … (`posmon_protocol::control::SETTING_KEYS`), `labels.<key>`, `labels.extra.<key>`.
    #[serde(default)]
    pub pinned: Vec<String>,
    /// How long the control long-poll waits at the collector for a settings change or a probe
    /// request; 0: no long-poll (they come with acknowledgements only).
    #[serde(default = "default_control_hold")]
    pub control_hold_seconds: u64,
    /// TCP keepalive of the long-poll's connection: often enough that a carrier's NAT keeps it.
    #[serde(default = "default_control_keepalive")]
    pub control_keepalive_seconds: u64,
}

/// Whom to call for each party; a party without one is named by its label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contacts {
    #[serde(default)]
    pub merchant: Option<Contact>,
    #[serde(default)]
    pub pos_vendor: Option<Contact>,
    #[serde(default)]
    pub network_provider: Option<Contact>,
    #[serde(default)]
    pub software_vendor: Option<Contact>,
    #[serde(default)]
    pub acquirer: Option<Contact>,
    #[serde(default)]
    pub operations: Option<Contact>,
}

impl Contacts {
    pub fn of(&self, party: Party) -> Option<&Contact> {
        match party {
            Party::Merchant => self.merchant.as_ref(),
            Party::PosVendor => self.pos_vendor.as_ref(),
            Party::NetworkProvider => self.network_provider.as_ref(),
            Party::SoftwareVendor => self.software_vendor.as_ref(),
            Party::Acquirer => self.acquirer.as_ref(),
            Party::Operations => self.operations.as_ref(),
        }
    }

    fn all(&self) -> [(&'static str, Option<&Contact>); 6] {
        [
            Party::Merchant,
            Party::PosVendor,
            Party::NetworkProvider,
            Party::SoftwareVendor,
            Party::Acquirer,
            Party::Operations,
        ]
        .map(|party| (party.as_str(), self.of(party)))
    }
}

/// One party's contact: who, and the number to call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// The name in English (or the only one), e.g. `China Mobile`.
    pub name: String,
    /// The name in Simplified Chinese, e.g. `中国移动`; `name` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_zh_cn: Option<String>,
    /// The number to call, e.g. `400-100-8611`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// The longest contact name, in characters, and the longest phone number.
const CONTACT_NAME_MAX_CHARS: usize = 64;
const CONTACT_PHONE_MAX_CHARS: usize = 32;
/// The longest contact of a target, in characters: a name and a number (the collector's
/// settings are held to it too).
pub use posmon_protocol::control::TARGET_CONTACT_MAX_CHARS;

/// How reports travel to the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A report that fits one datagram goes as one authenticated, encrypted UDP datagram
    /// (about a hundred bytes for a heartbeat); HTTPS when it does not fit, for batches after an
    /// outage, and for a while after datagrams went unanswered or were refused.
    #[default]
    Datagram,
    /// Always HTTPS.
    Https,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/posmon-agent")
}
// The schedule's defaults fit a 10 MiB/month data plan: see "Data plan" in ARCHITECTURE.md.
fn default_probe_interval() -> u64 {
    600
}
fn default_full_probe_interval() -> u64 {
    12 * 3600
}
fn default_failing_probe_interval() -> u64 {
    60
}
fn default_check_interval() -> u64 {
    10
}
fn default_watch_interval() -> u64 {
    1
}
fn default_report_interval() -> u64 {
    300
}
fn default_spool_max_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_spool_max_age() -> u64 {
    7 * 86_400
}
fn default_batch_max_reports() -> usize {
    50
}
// The control channel's defaults: see "Data plan" in ARCHITECTURE.md.
fn default_control_hold() -> u64 {
    1800
}
fn default_control_keepalive() -> u64 {
    300
}
fn default_retry_max() -> u64 {
    300
}
fn default_probe_timeout() -> u64 {
    5
}
fn default_request_timeout() -> u64 {
    10
}
fn default_attempts() -> u32 {
    3
}
fn default_icmp() -> bool {
    true
}
fn default_system_root() -> PathBuf {
    PathBuf::from("/")
}
pub(crate) fn default_command_timeout() -> u64 {
    5
}
fn default_data_budget_bytes_per_month() -> u64 {
    10 * 1024 * 1024
}
fn default_data_budget_max_stretch_percent() -> u32 {
    400
}

/// The most tries per target per cycle.
const ATTEMPTS_MAX: u32 = 20;
/// The most nameservers, process names and peripherals.
const LIST_MAX: usize = 16;

/// The terminal's labels as configured: the wire type, but strict about unknown keys so that a
/// misplaced option is an error rather than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsConfig {
    #[serde(default)]
    pub merchant: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub carrier: Option<String>,
    #[serde(default)]
    pub extra: std::collections::BTreeMap<String, String>,
}

impl LabelsConfig {
    pub fn to_labels(&self) -> Labels {
        Labels {
            merchant: self.merchant.clone(),
            model: self.model.clone(),
            region: self.region.clone(),
            carrier: self.carrier.clone(),
            gateway: None,
            resolver: None,
            extra: self.extra.clone(),
        }
    }
}

/// A host the terminal must reach.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Short name used in findings, e.g. `payment-host`.
    pub name: String,
    /// `host:port`, or an `http://` / `https://` URL.
    pub address: String,
    /// Handshake TLS on a `host:port` target (a URL says it by its scheme).
    #[serde(default)]
    pub tls: bool,
    /// Tries per cycle, instead of the global `attempts`.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// PEM file of the CA certificates to verify this target against, instead of the public
    /// web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Whom to call about this target's host (up to `TARGET_CONTACT_MAX_CHARS` characters,
    /// e.g. `TMS helpdesk 400-800-1234`): in its findings it stands for the host's operator,
    /// the party `acquirer` for the payment host. A TMS or an update server is run by someone
    /// else.
    #[serde(default)]
    pub contact: Option<String>,
}

/// Where a target is and what is spoken there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
    pub tls: bool,
    /// The path and query of an HTTP target.
    pub http_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Address(IpAddr),
}

impl TargetConfig {
    /// The endpoint the address describes, or what is wrong with it.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let address = self.address.as_str();
        if address.starts_with("http://") || address.starts_with("https://") {
            let url =
                reqwest::Url::parse(address).map_err(|error| format!("not a URL: {error}"))?;
            let host = url
                .host_str()
                .filter(|host| !host.is_empty())
                .ok_or_else(|| "the URL has no host".to_string())?;
            let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
            let host = match unbracketed.parse::<IpAddr>() {
                Ok(address) => Host::Address(address),
                Err(_) => Host::Name(host.to_string()),
            };
            let port = url
                .port_or_known_default()
                .ok_or_else(|| "the URL has no port".to_string())?;
            let mut path = url.path().to_string();
            if let Some(query) = url.query() {
                path = format!("{path}?{query}");
            }
            return Ok(Endpoint {
                host,
                port,
                tls: url.scheme() == "https",
                http_path: Some(path),
            });
        }
        let problem = || {
            format!("{address:?} must be host:port (e.g. pay.example.com:443 or [::1]:443) or an http(s):// URL")
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(problem)?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(problem)?;
        let bracketed = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'));
        let host = match bracketed.unwrap_or(host).parse::<IpAddr>() {
            // An IPv6 address needs its brackets: without them the port is ambiguous.
            Ok(address) if bracketed.is_some() || address.is_ipv4() => Host::Address(address),
            Err(_) if bracketed.is_none() && is_host_name(host) => Host::Name(host.to_string()),
            _ => return Err(problem()),
        };
        Ok(Endpoint {
            host,
            port,
            tls: self.tls,
            http_path: None,
        })
    }
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, at most 253 characters.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

impl Endpoint {
    /// The name the TLS certificate must hold.
    pub fn server_name(&self) -> Option<rustls::pki_types::ServerName<'static>> {
        match &self.host {
            Host::Name(name) => rustls::pki_types::ServerName::try_from(name.clone()).ok(),
            Host::Address(address) => {
                Some(rustls::pki_types::ServerName::IpAddress((*address).into()))
            }
        }
    }

    /// The `Host` header: the host, and the port unless it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = match &self.host {
            Host::Name(name) => name.clone(),
            Host::Address(IpAddr::V6(address)) => format!("[{address}]"),
            Host::Address(address) => address.to_string(),
        };
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A nameserver as configured: `ip` (port 53) or `ip:port` (`[v6]:port`).
pub fn parse_dns_server(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// A software component's version source: exactly one of `file`, `command` or `properties`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// Component name: `pos_app`, `firmware`, `emv_kernel`, …
    pub name: String,
    /// A file holding the version.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A command (program and arguments, no shell) whose output holds the version.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// A `key=value` property file; `key` names the entry holding the version.
    #[serde(default)]
    pub properties: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<String>,
    /// Optional regex: the first capture group (or the whole match) is the version. Without it,
    /// the first non-empty line is.
    #[serde(default)]
    pub regex: Option<String>,
    /// Seconds the command may run.
    #[serde(default = "default_command_timeout")]
    pub timeout_seconds: u64,
}

/// A peripheral the POS application needs, found by exactly one of a device node, a USB
/// vendor:product id, or a check command's exit status.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeripheralConfig {
    /// `card_reader`, `printer`, `pin_pad`, …
    pub name: String,
    /// A device node, e.g. `/dev/ttyACM0` (under `system_root`).
    #[serde(default)]
    pub device: Option<PathBuf>,
    /// A USB `vendor:product` id in hex, e.g. `0b00:0080`, looked up in `/sys/bus/usb/devices`.
    #[serde(default)]
    pub usb: Option<String>,
    /// A command (no shell) that exits 0 when the peripheral is there.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Seconds the command may run.
    #[serde(default = "default_command_timeout")]
    pub timeout_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl AgentConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: AgentConfig = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration [`DEFAULT_CONFIG`] describes: defaults plus the example's required keys.
    pub fn example() -> Self {
        AgentConfig {
            terminal_id: "T-0001".into(),
            collector_url: "http://127.0.0.1:8080".into(),
            token: None,
            token_file: Some(PathBuf::from("/etc/posmon/agent-token")),
            state_dir: default_state_dir(),
            probe_interval_seconds: default_probe_interval(),
            full_probe_interval_seconds: default_full_probe_interval(),
            failing_probe_interval_seconds: default_failing_probe_interval(),
            check_interval_seconds: default_check_interval(),
            watch_interval_seconds: default_watch_interval(),
            report_interval_seconds: default_report_interval(),
            probe_timeout_seconds: default_probe_timeout(),
            request_timeout_seconds: default_request_timeout(),
            spool_max_bytes: default_spool_max_bytes(),
            spool_max_age_seconds: default_spool_max_age(),
            batch_max_reports: default_batch_max_reports(),
            retry_max_seconds: default_retry_max(),
            collector_ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            attempts: default_attempts(),
            icmp: default_icmp(),
            system_root: default_system_root(),
            dns_servers: Vec::new(),
            labels: LabelsConfig::default(),
            targets: Vec::new(),
            components: Vec::new(),
            processes: Vec::new(),
            peripherals: Vec::new(),
            data_budget_bytes_per_month: default_data_budget_bytes_per_month(),
            data_budget_max_stretch_percent: default_data_budget_max_stretch_percent(),
            transport: Transport::default(),
            datagram_port: None,
            readiness: PaymentRoles::default(),
            contacts: Contacts::default(),
            status_listen: None,
            pinned: Vec::new(),
            control_hold_seconds: default_control_hold(),
            control_keepalive_seconds: default_control_keepalive(),
        }
    }

    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.report_interval_seconds)
    }

    /// How often a target is probed cheaply.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_secs(self.probe_interval_seconds)
    }

    /// How often a target climbs the full ladder (never less often than it is probed cheaply).
    pub fn full_probe_interval(&self) -> Duration {
        Duration::from_secs(
            self.full_probe_interval_seconds
                .max(self.probe_interval_seconds),
        )
    }

    /// How often a failing target is probed at first: never less often than a healthy one.
    pub fn failing_probe_interval(&self) -> Duration {
        Duration::from_secs(
            self.failing_probe_interval_seconds
                .min(self.probe_interval_seconds),
        )
    }

    /// How often the local checks run: the check interval, or the probe or report interval
    /// when that is shorter.
    pub fn check_interval(&self) -> Duration {
        Duration::from_secs(
            self.check_interval_seconds
                .min(self.probe_interval_seconds)
                .min(self.report_interval_seconds),
        )
    }

    /// How often the socket table is read; `None` when the watch is off.
    pub fn watch_interval(&self) -> Option<Duration> {
        (self.watch_interval_seconds > 0).then(|| Duration::from_secs(self.watch_interval_seconds))
    }

    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs(self.probe_timeout_seconds)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    /// The configured nameservers (validated: every entry parses).
    pub fn dns_server_addresses(&self) -> Vec<SocketAddr> {
        self.dns_servers
            .iter()
            .filter_map(|server| parse_dns_server(server))
            .collect()
    }

    /// Checks every key; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        posmon_protocol::validate::check_terminal_id(&self.terminal_id, "terminal_id")
            .map_err(|error| invalid("terminal_id", error.problem))?;
        let url = reqwest::Url::parse(&self.collector_url)
            .map_err(|error| invalid("collector_url", format!("not a URL: {error}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(
                "collector_url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        if self.datagram_port == Some(0) {
            return Err(invalid("datagram_port", "must be 1 to 65535"));
        }
        // The token is checked where it is needed (`run`, `check-config`): `probe` needs none.
        let settable = [
            self.probe_interval_seconds,
            self.full_probe_interval_seconds,
            self.failing_probe_interval_seconds,
            self.report_interval_seconds,
            self.probe_timeout_seconds,
        ];
        let settable = posmon_protocol::control::INTERVAL_MAX_SECONDS
            .into_iter()
            .zip(settable)
            .map(|((key, max), value)| (key, value, max));
        for (key, value, max) in settable.chain([
            ("check_interval_seconds", self.check_interval_seconds, 3600),
            ("request_timeout_seconds", self.request_timeout_seconds, 300),
            (
                "spool_max_age_seconds",
                self.spool_max_age_seconds,
                90 * 86_400,
            ),
            (
                "batch_max_reports",
                self.batch_max_reports as u64,
                limits::REPORTS_PER_BATCH_MAX as u64,
            ),
            ("retry_max_seconds", self.retry_max_seconds, 3600),
        ]) {
            if value == 0 || value > max {
                return Err(invalid(key, format!("must be between 1 and {max}")));
            }
        }
        if self.watch_interval_seconds > 60 {
            return Err(invalid(
                "watch_interval_seconds",
                "must be between 0 (off) and 60",
            ));
        }
        if !(4 * 1024..=1 << 30).contains(&self.spool_max_bytes) {
            return Err(invalid(
                "spool_max_bytes",
                "must be between 4096 and 1073741824",
            ));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(invalid(
                "client_key_file",
                "client_cert_file and client_key_file go together",
            ));
        }
        // The labels must pass the collector's validation: check them the same way.
        posmon_protocol::validate::validate_labels(&self.labels.to_labels(), "labels")
            .map_err(|error| invalid(error.field, error.problem))?;
        if self.targets.len() > limits::PROBES_MAX {
            return Err(invalid(
                "targets",
                format!("at most {} targets", limits::PROBES_MAX),
            ));
        }
        for (index, target) in self.targets.iter().enumerate() {
            let key = format!("targets[{index}]");
            check_name(&target.name, &format!("{key}.name"))?;
            if self.targets[..index]
                .iter()
                .any(|other| other.name == target.name)
            {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate target name {:?}", target.name),
                ));
            }
            if target.address.chars().count() > limits::DETAIL_MAX_CHARS {
                return Err(invalid(format!("{key}.address"), "too long"));
            }
            let endpoint = target
                .endpoint()
                .map_err(|problem| invalid(format!("{key}.address"), problem))?;
            if endpoint.tls && endpoint.server_name().is_none() {
                return Err(invalid(
                    format!("{key}.address"),
                    "not a name a TLS certificate can hold",
                ));
            }
            if target.ca_file.is_some() && !endpoint.tls {
                return Err(invalid(
                    format!("{key}.ca_file"),
                    "only for a TLS target (https:// or tls = true)",
                ));
            }
            if let Some(attempts) = target.attempts {
                check_attempts(attempts, &format!("{key}.attempts"))?;
            }
        }
        check_attempts(self.attempts, "attempts")?;
        check_count(self.dns_servers.len(), "dns_servers")?;
        for (index, server) in self.dns_servers.iter().enumerate() {
            if parse_dns_server(server).is_none() {
                return Err(invalid(
                    format!("dns_servers[{index}]"),
                    format!("{server:?} must be an IP address, optionally with :port"),
                ));
            }
        }
        check_count(self.processes.len(), "processes")?;
        for (index, name) in self.processes.iter().enumerate() {
            check_name(name, &format!("processes[{index}]"))?;
        }
        check_count(self.peripherals.len(), "peripherals")?;
        for (index, peripheral) in self.peripherals.iter().enumerate() {
            let key = format!("peripherals[{index}]");
            check_name(&peripheral.name, &format!("{key}.name"))?;
            let sources = [
                peripheral.device.is_some(),
                peripheral.usb.is_some(),
                peripheral.command.is_some(),
            ];
            if sources.iter().filter(|set| **set).count() != 1 {
                return Err(invalid(key, "set exactly one of device, usb or command"));
            }
            if let Some(usb) = &peripheral.usb {
                if parse_usb_id(usb).is_none() {
                    return Err(invalid(
                        format!("{key}.usb"),
                        format!("{usb:?} must be vendor:product in hex, e.g. 0b00:0080"),
                    ));
                }
            }
            if let Some(command) = &peripheral.command {
                check_command(command, &format!("{key}.command"))?;
            }
            check_timeout(
                peripheral.timeout_seconds,
                &format!("{key}.timeout_seconds"),
            )?;
        }
        // Leave room for the built-in os, kernel and agent components.
        let max_components = limits::COMPONENTS_MAX - 3;
        if self.components.len() > max_components {
            return Err(invalid(
                "components",
                format!("at most {max_components} components"),
            ));
        }
        for (index, component) in self.components.iter().enumerate() {
            let key = format!("components[{index}]");
            let valid_name = component.name.len() <= limits::NAME_MAX_CHARS
                && component.name.starts_with(|c: char| c.is_ascii_lowercase())
                && component
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid_name {
                return Err(invalid(
                    format!("{key}.name"),
                    "must match [a-z][a-z0-9_]*, at most 64 characters",
                ));
            }
            if matches!(component.name.as_str(), "os" | "kernel" | "agent") {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} is reported by the agent itself", component.name),
                ));
            }
            let sources = [
                component.file.is_some(),
                component.command.is_some(),
                component.properties.is_some(),
            ];
            if sources.iter().filter(|set| **set).count() != 1 {
                return Err(invalid(
                    key,
                    "set exactly one of file, command or properties",
                ));
            }
            if component.properties.is_some() != component.key.is_some() {
                return Err(invalid(
                    format!("{key}.key"),
                    "a properties source needs a key, and only it takes one",
                ));
            }
            if let Some(command) = &component.command {
                check_command(command, &format!("{key}.command"))?;
            }
            check_timeout(component.timeout_seconds, &format!("{key}.timeout_seconds"))?;
            if let Some(pattern) = &component.regex {
                regex_lite::Regex::new(pattern).map_err(|error| {
                    invalid(
                        format!("{key}.regex"),
                        format!("not a valid regex: {error}"),
                    )
                })?;
            }
        }
        self.validate_data_budget()?;
        self.validate_control()?;
        self.validate_local_verdict()
    }

    /// The pins name settings keys; the long-poll's hold and keepalive are bounded.
    fn validate_control(&self) -> Result<(), ConfigError> {
        check_count(self.pinned.len(), "pinned")?;
        for (index, key) in self.pinned.iter().enumerate() {
            if !posmon_protocol::control::is_setting_key(key) {
                return Err(invalid(
                    format!("pinned[{index}]"),
                    format!(
                        "{key:?} is not a key the collector can set (one of {}, labels.<key>, labels.extra.<key>)",
                        posmon_protocol::control::SETTING_KEYS.join(", ")
                    ),
                ));
            }
        }
        if self.control_hold_seconds > 3600 {
            return Err(invalid(
                "control_hold_seconds",
                "must be between 0 (no long-poll) and 3600",
            ));
        }
        if !(10..=3600).contains(&self.control_keepalive_seconds) {
            return Err(invalid(
                "control_keepalive_seconds",
                "must be between 10 and 3600",
            ));
        }
        Ok(())
    }

    /// The long-poll's hold; `None` when it is off.
    pub fn control_hold(&self) -> Option<Duration> {
        (self.control_hold_seconds > 0).then(|| Duration::from_secs(self.control_hold_seconds))
    }

    /// The payment roles, the contacts and the status endpoint: bounded names, and an
    /// endpoint only on loopback (the status is for the POS application on this terminal).
    fn validate_local_verdict(&self) -> Result<(), ConfigError> {
        self.readiness
            .validate()
            .map_err(|error| invalid(format!("readiness.{}", error.key), error.problem))?;
        // A payment target the operator named must be probed, or the verdict could never say
        // "cannot pay" for it. The built-in default (`payment-host`) is not refused: a config
        // without such a target has no payment target, and its verdict is "unknown".
        if self.readiness.targets != PaymentRoles::default().targets {
            if let Some(name) = self
                .readiness
                .targets
                .iter()
                .find(|name| !self.targets.iter().any(|target| &target.name == *name))
            {
                return Err(invalid(
                    "readiness.targets",
                    format!("{name:?} names no [[targets]] entry"),
                ));
            }
        }
        for (index, target) in self.targets.iter().enumerate() {
            if let Some(contact) = &target.contact {
                check_text(
                    contact,
                    TARGET_CONTACT_MAX_CHARS,
                    &format!("targets[{index}].contact"),
                )?;
            }
        }
        for (party, contact) in self.contacts.all() {
            let Some(contact) = contact else {
                continue;
            };
            let key = |field: &str| format!("contacts.{party}.{field}");
            let names = [
                ("name", Some(&contact.name)),
                ("name_zh_cn", contact.name_zh_cn.as_ref()),
            ];
            for (field, name) in names {
                if let Some(name) = name {
                    check_text(name, CONTACT_NAME_MAX_CHARS, &key(field))?;
                }
            }
            if let Some(phone) = &contact.phone {
                check_text(phone, CONTACT_PHONE_MAX_CHARS, &key("phone"))?;
            }
        }
        if let Some(address) = self.status_listen {
            if !address.ip().is_loopback() {
                return Err(invalid(
                    "status_listen",
                    format!("{address} is not a loopback address (127.0.0.0/8 or ::1): the status is only for this terminal's POS application"),
                ));
            }
        }
        Ok(())
    }

    /// The data budget's keys: a budget of 0 (none) or at least 64 KiB, at most the protocol's
    /// byte bound; a stretch cap within the protocol's range.
    fn validate_data_budget(&self) -> Result<(), ConfigError> {
        let budget = self.data_budget_bytes_per_month;
        if budget != 0 && !(64 * 1024..=limits::DATA_BYTES_MAX).contains(&budget) {
            return Err(invalid(
                "data_budget_bytes_per_month",
                format!(
                    "must be 0 (no budget) or between 65536 and {}",
                    limits::DATA_BYTES_MAX
                ),
            ));
        }
        let range = limits::STRETCH_PERCENT_MIN..=limits::STRETCH_PERCENT_MAX;
        if !range.contains(&self.data_budget_max_stretch_percent) {
            return Err(invalid(
                "data_budget_max_stretch_percent",
                format!("must be between {} and {}", range.start(), range.end()),
            ));
        }
        Ok(())
    }
}

fn check_name(name: &str, key: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.chars().count() > limits::NAME_MAX_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(invalid(
            key,
            format!(
                "must be 1 to {} printable characters",
                limits::NAME_MAX_CHARS
            ),
        ));
    }
    Ok(())
}

/// Text shown to a person: 1 to `max_chars` characters, no control characters.
fn check_text(text: &str, max_chars: usize, key: &str) -> Result<(), ConfigError> {
    if text.trim().is_empty()
        || text.chars().count() > max_chars
        || text.chars().any(char::is_control)
    {
        return Err(invalid(
            key,
            format!("must be 1 to {max_chars} printable characters"),
        ));
    }
    Ok(())
}

fn check_attempts(attempts: u32, key: &str) -> Result<(), ConfigError> {
    if attempts == 0 || attempts > ATTEMPTS_MAX {
        return Err(invalid(
            key,
            format!("must be between 1 and {ATTEMPTS_MAX}"),
        ));
    }
    Ok(())
}

fn check_count(count: usize, key: &str) -> Result<(), ConfigError> {
    if count > LIST_MAX {
        return Err(invalid(key, format!("at most {LIST_MAX} entries")));
    }
    Ok(())
}

fn check_timeout(seconds: u64, key: &str) -> Result<(), ConfigError> {
    if seconds == 0 || seconds > 300 {
        return Err(invalid(key, "must be between 1 and 300"));
    }
    Ok(())
}

fn check_command(command: &[String], key: &str) -> Result<(), ConfigError> {
    if command
        .first()
        .is_none_or(|program| program.trim().is_empty())
    {
        return Err(invalid(
            key,
            "must name a program: [\"program\", \"argument\", ...]",
        ));
    }
    Ok(())
}

/// A USB `vendor:product` id in hex.
pub fn parse_usb_id(text: &str) -> Option<(u16, u16)> {
    let (vendor, product) = text.split_once(':')?;
    let parse = |part: &str| {
        (part.len() == 4)
            .then(|| u16::from_str_radix(part, 16).ok())
            .flatten()
    };
    Some((parse(vendor)?, parse(product)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        let config: AgentConfig = toml::from_str(text).map_err(|error| error.to_string())?;
        config.validate().map_err(|error| error.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_example_is_the_default() {
        assert_eq!(parse(DEFAULT_CONFIG), Ok(AgentConfig::example()));
    }

    const BASE: &str =
        "terminal_id = \"T-1\"\ncollector_url = \"http://127.0.0.1:1\"\ntoken = \"k1.x\"\n";

    fn check(extra: &str, expected: &str) {
        let error = parse(&format!("{BASE}{extra}")).err().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{error:?} should contain {expected:?}"
        );
    }

    fn endpoint(address: &str, tls: bool) -> Result<Endpoint, String> {
        TargetConfig {
            name: "t".into(),
            address: address.into(),
            tls,
            attempts: None,
            ca_file: None,
            contact: None,
        }
        .endpoint()
    }

    #[test]
    fn addresses_are_host_port_or_urls() {
        let name = |name: &str| Host::Name(name.into());
        let address = |text: &str| Host::Address(text.parse().unwrap());
        let cases = [
            (
                "pay.example:443",
                false,
                name("pay.example"),
                443,
                false,
                None,
            ),
            (
                "pay.example:8443",
                true,
                name("pay.example"),
                8443,
                true,
                None,
            ),
            ("[::1]:53", false, address("::1"), 53, false, None),
            ("10.0.0.7:443", false, address("10.0.0.7"), 443, false, None),
            (
                "https://tms.example/health?x=1",
                false,
                name("tms.example"),
                443,
                true,
                Some("/health?x=1"),
            ),
            (
                "http://127.0.0.1:8080",
                false,
                address("127.0.0.1"),
                8080,
                false,
                Some("/"),
            ),
            (
                "https://[::1]:8443/",
                false,
                address("::1"),
                8443,
                true,
                Some("/"),
            ),
        ];
        for (text, tls, host, port, expected_tls, path) in cases {
            let expected = Endpoint {
                host,
                port,
                tls: expected_tls,
                http_path: path.map(str::to_string),
            };
            assert_eq!(endpoint(text, tls), Ok(expected), "{text}");
        }
        for bad in [
            "pay.example",
            "pay.example:0",
            ":443",
            "a b:1",
            "https://",
            "::1:53",
        ] {
            assert!(endpoint(bad, false).is_err(), "{bad}");
        }
        let header = |text: &str| endpoint(text, false).map(|endpoint| endpoint.host_header());
        assert_eq!(header("https://tms.example/x"), Ok("tms.example".into()));
        assert_eq!(
            header("http://tms.example:8080/x"),
            Ok("tms.example:8080".into())
        );
        assert_eq!(header("https://[::1]:8443/"), Ok("[::1]:8443".into()));
    }

    #[test]
    fn bad_configs_name_the_key_and_the_problem() {
        assert!(parse(BASE).is_ok());
        check(
            "report_interval_seconds = 0",
            "config key report_interval_seconds: must be between 1 and 86400",
        );
        check(
            "[[targets]]\nname = \"pay\"\naddress = \"pay.example\"",
            "config key targets[0].address: \"pay.example\" must be host:port",
        );
        check(
            "[[targets]]\nname = \"pay\"\naddress = \"bad host!:443\"",
            "config key targets[0].address: \"bad host!:443\" must be host:port",
        );
        check(
            "[[targets]]\nname = \"pay\"\naddress = \"a:1\"\nca_file = \"/ca.pem\"",
            "config key targets[0].ca_file: only for a TLS target",
        );
        check(
            "[[targets]]\nname = \"pay\"\naddress = \"a:1\"\nattempts = 0",
            "config key targets[0].attempts: must be between 1 and 20",
        );
        check(
            "attempts = 21",
            "config key attempts: must be between 1 and 20",
        );
        check(
            "dns_servers = [\"dns.example\"]",
            "config key dns_servers[0]: \"dns.example\" must be an IP address",
        );
        check(
            "[[components]]\nname = \"pos_app\"\nfile = \"/x\"\ncommand = [\"v\"]",
            "config key components[0]: set exactly one of file, command or properties",
        );
        check(
            "[[components]]\nname = \"pos_app\"\nproperties = \"/x\"",
            "config key components[0].key: a properties source needs a key",
        );
        check(
            "[[components]]\nname = \"pos_app\"\ncommand = []",
            "config key components[0].command: must name a program",
        );
        check(
            "[[peripherals]]\nname = \"pin_pad\"\nusb = \"0b00\"",
            "config key peripherals[0].usb: \"0b00\" must be vendor:product in hex",
        );
        check(
            "[[peripherals]]\nname = \"pin_pad\"",
            "config key peripherals[0]: set exactly one of device, usb or command",
        );
        check(
            "[[targets]]\nname = \"pay\"\naddress = \"a:1\"\n[[targets]]\nname = \"pay\"\naddress = \"b:2\"",
            "config key targets[1].name: duplicate target name",
        );
        check(
            "[[components]]\nname = \"pos_app\"\nfile = \"/x\"\nregex = \"(\"",
            "config key components[0].regex: not a valid regex",
        );
        check(
            "[[components]]\nname = \"kernel\"\nfile = \"/x\"",
            "config key components[0].name",
        );
        check(
            "[labels]\nregion = \"\"",
            "config key labels.region: must not be empty",
        );
        check("colour = \"red\"", "unknown field `colour`");
        check(
            "probe_timeout_seconds = \"5\"",
            "invalid type: string \"5\", expected u64",
        );
        let error =
            parse("collector_url = \"ftp://x\"\nterminal_id = \"T-1\"\ntoken = \"t\"").err();
        assert_eq!(
            error.as_deref(),
            Some("config key collector_url: must be an http:// or https:// URL with a host")
        );
        let error =
            parse("collector_url = \"http://x\"\nterminal_id = \"T 1\"\ntoken = \"t\"").err();
        assert_eq!(
            error.as_deref(),
            Some("config key terminal_id: character ' ' not allowed (use A-Z a-z 0-9 . _ : -)")
        );
    }

    #[test]
    fn the_local_verdict_keys_are_checked() {
        let config = parse(&format!(
            "{BASE}status_listen = \"[::1]:8787\"\n[[targets]]\nname = \"pay\"\naddress = \"a:1\"\n\
             contact = \"TMS helpdesk 400-800-1234\"\n[readiness]\ntargets = [\"pay\"]\n\
             [contacts.network_provider]\nname = \"China Mobile\"\nname_zh_cn = \"中国移动\"\nphone = \"400-100-8611\"\n"
        ))
        .unwrap();
        assert_eq!(config.readiness.targets, ["pay"]);
        assert_eq!(
            config.targets[0].contact.as_deref(),
            Some("TMS helpdesk 400-800-1234")
        );
        assert_eq!(
            config.readiness.peripherals,
            PaymentRoles::default().peripherals
        );
        let contact = config.contacts.of(Party::NetworkProvider).unwrap();
        assert_eq!(contact.name_zh_cn.as_deref(), Some("中国移动"));
        assert!(config.contacts.of(Party::Acquirer).is_none());
        check(
            "status_listen = \"0.0.0.0:8787\"",
            "config key status_listen: 0.0.0.0:8787 is not a loopback address",
        );
        check(
            "status_listen = \"192.168.1.5:8787\"",
            "config key status_listen: 192.168.1.5:8787 is not a loopback address",
        );
        check("status_listen = \"localhost\"", "status_listen");
        check(
            "pinned = [\"targets\", \"collector_url\"]",
            "config key pinned[1]: \"collector_url\" is not a key the collector can set",
        );
        check(
            "control_hold_seconds = 3601",
            "config key control_hold_seconds",
        );
        check(
            "control_keepalive_seconds = 5",
            "config key control_keepalive_seconds",
        );
        check(
            "[readiness]\ntargets = [\"\"]",
            "config key readiness.targets: \"\": a name is 1 to 128 bytes",
        );
        check(
            "[[targets]]\nname = \"pay\"\naddress = \"a:1\"\n[readiness]\ntargets = [\"pay\", \"tms\"]",
            "config key readiness.targets: \"tms\" names no [[targets]] entry",
        );
        check(
            "[readiness]\ntargets = [\"pay\"]",
            "config key readiness.targets: \"pay\" names no [[targets]] entry",
        );
        check(
            &format!(
                "[[targets]]\nname = \"tms\"\naddress = \"a:1\"\ncontact = \"{}\"",
                "x".repeat(97)
            ),
            "config key targets[0].contact: must be 1 to 96 printable characters",
        );
        check(
            "[[targets]]\nname = \"tms\"\naddress = \"a:1\"\ncontact = \"a\\nb\"",
            "config key targets[0].contact",
        );
        check("[readiness]\ntarget = []", "unknown field `target`");
        check(
            "[contacts.carrier]\nname = \"x\"",
            "unknown field `carrier`",
        );
        check(
            "[contacts.acquirer]\nname = \"\"",
            "config key contacts.acquirer.name: must be 1 to 64 printable characters",
        );
        check(
            &format!("[contacts.merchant]\nname = \"{}\"", "x".repeat(65)),
            "config key contacts.merchant.name: must be 1 to 64",
        );
        check(
            "[contacts.operations]\nname = \"Ops\"\nphone = \"1\\n2\"",
            "config key contacts.operations.phone: must be 1 to 32 printable characters",
        );
        check(
            "[contacts.pos_vendor]\nname = \"PAX\"\nname_zh_cn = \"\\u0007\"",
            "config key contacts.pos_vendor.name_zh_cn",
        );
        check(
            "[contacts.pos_vendor]\nphone = \"1\"",
            "missing field `name`",
        );
    }

    #[test]
    fn the_data_budget_keys_are_bounded() {
        for (extra, expected) in [
            (
                "data_budget_bytes_per_month = 1000",
                "config key data_budget_bytes_per_month: must be 0",
            ),
            (
                "data_budget_bytes_per_month = 1099511627777",
                "config key data_budget_bytes_per_month",
            ),
            (
                "data_budget_max_stretch_percent = 99",
                "config key data_budget_max_stretch_percent: must be between 100 and 10000",
            ),
            (
                "data_budget_max_stretch_percent = 10001",
                "config key data_budget_max_stretch_percent",
            ),
        ] {
            check(extra, expected);
        }
        for extra in [
            "data_budget_bytes_per_month = 0",
            "data_budget_bytes_per_month = 65536\ndata_budget_max_stretch_percent = 100",
            "data_budget_max_stretch_percent = 10000",
        ] {
            assert!(parse(&format!("{BASE}{extra}")).is_ok(), "{extra}");
        }
    }
}
