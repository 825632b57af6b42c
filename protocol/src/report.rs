//! The report and batch types of protocol v1, as they appear on the wire.
//!
//! Compatibility rule: within v1, fields are only ever added, and every added field is optional
//! (`#[serde(default)]`), so a collector accepts reports from older agents; unknown fields are
//! ignored, so a collector accepts reports from newer agents. Enumerations carry an `Other`
//! variant that an unknown value from a newer agent deserializes into.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One request body: the reports of one terminal, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBatch {
    pub reports: Vec<Report>,
}

/// What one terminal observed in one probe cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    pub terminal_id: String,
    /// Starts at 1 and grows by one per report; survives agent restarts.
    pub sequence: u64,
    /// When the cycle ran, by the terminal's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
    pub agent_version: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub probes: Vec<ProbeResult>,
    /// Software versions by component name (`os`, `kernel`, `agent`, `pos_app`, `firmware`, …).
    #[serde(default)]
    pub software: BTreeMap<String, ComponentVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockStatus>,
    /// Reports the agent had to drop (spool full or too old) since the previous report it sent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_reports: u64,
    /// Sections left out because they equal those of the terminal's previous report: the
    /// collector uses the ones it holds. Saves bytes on metered links.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<Section>,
    /// Identifies the agent's state (its spool and sequence counter): a random id created with
    /// the state directory, so a wiped directory (a re-install, a new SD card) gives a new one.
    /// A collector that sees a new instance starts the terminal's sequences anew instead of
    /// taking the restarted counter's reports for repeats. Absent from agents before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_instance: Option<String>,
    /// How often the agent probes and reports, and its longest wait between delivery retries:
    /// what the collector judges its silence by. Sent only when it changed (in practice with
    /// the full sections: the first report of a run, hourly, after a drop); absent means "as
    /// before". Absent from agents before it: the collector assumes its own defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<Intervals>,
    /// What the agent's own traffic has cost this month, as the carrier bills it, and its
    /// budget. Sent with the full sections and whenever the agent stretches its intervals;
    /// absent means "as before". Absent from agents before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_usage: Option<DataUsage>,
    /// The central settings the agent runs or refused (`control.rs`): sent with the full
    /// sections, whenever it changed, and after an acknowledgement named a version the agent
    /// already runs or refused. Absent means "as before"; absent from agents before it, which
    /// are never told of settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::control::ConfigState>,
    /// The probe request this report answers: its cycle probed every target at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_request: Option<u64>,
}

/// The agent's data use in the current calendar month (UTC), in IP bytes both ways: what a
/// metered SIM card's plan is charged for the agent's own traffic (not the POS application's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataUsage {
    /// The month the figures are for, as `YYYY * 12 + (month - 1)`: 2026-12 is 24 323.
    pub month: u32,
    /// Reports, acknowledgements and everything else exchanged with the collector.
    pub report_bytes: u64,
    /// The active probes: DNS, TCP, TLS, HTTP and ICMP towards the targets and the gateway.
    pub probe_bytes: u64,
    /// Anything else the agent sent or received (NTP, …).
    #[serde(default)]
    pub other_bytes: u64,
    /// The configured monthly budget, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bytes: Option<u64>,
    /// How far the agent has stretched its probe and report intervals to stay within the
    /// budget, in percent of the configured ones (100: not stretched).
    #[serde(default = "hundred")]
    pub stretch_percent: u32,
}

fn hundred() -> u32 {
    100
}

impl DataUsage {
    /// Every kind of traffic together, saturating.
    pub fn total_bytes(&self) -> u64 {
        self.report_bytes
            .saturating_add(self.probe_bytes)
            .saturating_add(self.other_bytes)
    }
}

/// The agent's schedule, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Intervals {
    /// Between probe cycles.
    pub probe_seconds: u32,
    /// Between reports when nothing changed (an outcome that changes is reported at once).
    pub report_seconds: u32,
    /// The longest wait between two delivery attempts while the collector cannot be reached
    /// (the cap of its backoff).
    pub retry_max_seconds: u32,
}

/// A section of a report that may be marked `unchanged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    Labels,
    Software,
    /// The probes, the device and the clock: equal, within the agent's dead bands, to those of
    /// the previous report, and no rule's outcome changed on the terminal. A report that says so
    /// is a heartbeat: the collector counts it for liveness and keeps the terminal's findings
    /// and measurements as they are (it runs no rule on it).
    Measurements,
    /// A section a newer agent leaves out that this collector does not know: ignored.
    #[serde(other)]
    Other,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Where the terminal stands and what it is. The well-known labels drive fleet aggregation,
/// the localization of shared causes and alert routing; `extra` holds free-form labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// The network the terminal is on, as the agent measures it: its default gateway's subnet
    /// (`192.168.1.0/24`). Terminals behind one router share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The resolver the terminal asks (`10.0.0.53`): the carrier's or the merchant router's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// The path ladder towards one configured target, rung by rung, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The target's configured name, e.g. `payment-host`.
    pub target: String,
    /// `host:port` or a URL, as configured.
    pub address: String,
    /// In ladder order (link, gateway, dns, tcp, tls, http); the first `failed` one names the
    /// cause, later rungs are not attempted.
    pub stages: Vec<StageResult>,
}

impl ProbeResult {
    /// The first rung that failed, if any.
    pub fn first_failure(&self) -> Option<&StageResult> {
        self.stages
            .iter()
            .find(|stage| stage.status == StageStatus::Failed)
    }
}

/// A rung of the path ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Link,
    Gateway,
    Dns,
    Tcp,
    Tls,
    Http,
    Icmp,
    #[serde(other)]
    Other,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Link => "link",
            Stage::Gateway => "gateway",
            Stage::Dns => "dns",
            Stage::Tcp => "tcp",
            Stage::Tls => "tls",
            Stage::Http => "http",
            Stage::Icmp => "icmp",
            Stage::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Ok,
    Failed,
    /// The terminal cannot measure this rung (e.g. ICMP not permitted): not a failure.
    Unavailable,
}

/// Why a rung failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NoCarrier,
    NoAddress,
    NoDefaultRoute,
    Refused,
    Timeout,
    Unreachable,
    Reset,
    Nxdomain,
    /// The name exists but has no address record (NOERROR with an empty answer, "NODATA").
    /// Older collectors read it as `other`.
    NoData,
    Servfail,
    NoResolver,
    CertificateExpired,
    CertificateNotYetValid,
    UnknownCa,
    NameMismatch,
    HandshakeFailed,
    HttpStatus,
    ProtocolError,
    #[serde(other)]
    Other,
}

impl ErrorKind {
    /// Every kind this version knows, `Other` last: for tables over all of them.
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::NoCarrier,
        ErrorKind::NoAddress,
        ErrorKind::NoDefaultRoute,
        ErrorKind::Refused,
        ErrorKind::Timeout,
        ErrorKind::Unreachable,
        ErrorKind::Reset,
        ErrorKind::Nxdomain,
        ErrorKind::NoData,
        ErrorKind::Servfail,
        ErrorKind::NoResolver,
        ErrorKind::CertificateExpired,
        ErrorKind::CertificateNotYetValid,
        ErrorKind::UnknownCa,
        ErrorKind::NameMismatch,
        ErrorKind::HandshakeFailed,
        ErrorKind::HttpStatus,
        ErrorKind::ProtocolError,
        ErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoCarrier => "no_carrier",
            ErrorKind::NoAddress => "no_address",
            ErrorKind::NoDefaultRoute => "no_default_route",
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Reset => "reset",
            ErrorKind::Nxdomain => "nxdomain",
            ErrorKind::NoData => "no_data",
            ErrorKind::Servfail => "servfail",
            ErrorKind::NoResolver => "no_resolver",
            ErrorKind::CertificateExpired => "certificate_expired",
            ErrorKind::CertificateNotYetValid => "certificate_not_yet_valid",
            ErrorKind::UnknownCa => "unknown_ca",
            ErrorKind::NameMismatch => "name_mismatch",
            ErrorKind::HandshakeFailed => "handshake_failed",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::ProtocolError => "protocol_error",
            ErrorKind::Other => "other",
        }
    }
}

/// The outcome of one rung in one cycle, over `attempts` tries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageResult {
    pub stage: Stage,
    pub status: StageStatus,
    /// Set when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorKind>,
    /// Human-readable detail: the OS error, the resolver's answer, the gateway address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Tries made this cycle (1 when omitted) and how many succeeded; loss is derived.
    #[serde(default = "one")]
    pub attempts: u32,
    #[serde(default)]
    pub successes: u32,
    /// Latency over the successful tries, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<LatencyStats>,
    /// HTTP rung: the response status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// TLS rung: the negotiated protocol version, e.g. `TLSv1.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// TLS rung: whole days until the peer certificate expires (negative once expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_days_left: Option<i64>,
}

fn one() -> u32 {
    1
}

impl StageResult {
    /// Share of tries that failed, 0.0 to 1.0.
    pub fn loss_ratio(&self) -> f64 {
        if self.attempts == 0 {
            return 0.0;
        }
        let failed = self.attempts.saturating_sub(self.successes);
        f64::from(failed) / f64::from(self.attempts)
    }
}

/// Latency of the successful tries of one rung, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    /// Mean absolute difference between consecutive tries.
    #[serde(default)]
    pub jitter: f64,
}

/// One software component's version, or why it is unknown. Exactly one field is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
}

impl ComponentVersion {
    pub fn known(version: impl Into<String>) -> Self {
        ComponentVersion {
            version: Some(version.into()),
            unknown_reason: None,
        }
    }

    pub fn unknown(reason: impl Into<String>) -> Self {
        ComponentVersion {
            version: None,
            unknown_reason: Some(reason.into()),
        }
    }
}

/// The terminal host's resources and peripherals. Every field is optional: a terminal reports
/// what it can measure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_average_1m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_available_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temperatures: Vec<Temperature>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<BatteryStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peripherals: Vec<PeripheralStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    pub mount: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    pub sensor: String,
    pub celsius: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatteryStatus {
    pub percent: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    #[serde(default)]
    pub up: bool,
    #[serde(default)]
    pub rx_errors: u64,
    #[serde(default)]
    pub tx_errors: u64,
    #[serde(default)]
    pub rx_dropped: u64,
    #[serde(default)]
    pub tx_dropped: u64,
    /// Wi-Fi signal level in dBm, where the interface is wireless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi_signal_dbm: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub name: String,
    pub running: bool,
}

/// A card reader, receipt printer, PIN pad or other device the POS application needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeripheralStatus {
    pub name: String,
    pub present: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The terminal clock against the collector's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockStatus {
    /// Terminal clock minus collector clock, milliseconds.
    pub offset_ms: f64,
    /// Half the round trip the estimate came from, milliseconds.
    pub uncertainty_ms: f64,
    /// Whether a local NTP client (chrony, systemd-timesyncd) says it is synchronized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp_synchronized: Option<bool>,
}

/// The collector's answer to an accepted batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAck {
    pub terminal_id: String,
    /// The highest sequence number the collector holds for this terminal: the agent may forget
    /// every report up to and including it.
    pub acknowledged_sequence: u64,
    /// The collector's clock when it answered.
    #[serde(with = "time::serde::rfc3339")]
    pub collector_time: OffsetDateTime,
    /// This collector takes heartbeats (Section::Measurements); absent from collectors before them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub heartbeats: bool,
    /// The settings version the terminal should run, when the collector does not know it runs
    /// or refused it: fetch it (`control.rs`). Only to agents that report a `config` state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// A probe request waiting for the terminal: probe every target at once and report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_request: Option<u64>,
}

/// The body of every 4xx and 5xx answer from the collector's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable machine-readable reason, e.g. `invalid_field`, `unauthorized`.
    pub reason: String,
    /// The offending field as a path, e.g. `reports[0].labels.region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_says_heartbeats_only_when_taken() {
        let old = r#"{"terminal_id":"T-1","acknowledged_sequence":3,"collector_time":"2026-11-26T02:00:00Z"}"#;
        let ack: BatchAck = serde_json::from_str(old).unwrap_or_else(|error| panic!("{error}"));
        assert!(!ack.heartbeats, "a collector from before heartbeats");
        assert_eq!(
            serde_json::to_string(&ack).unwrap_or_default(),
            old,
            "false is not written"
        );
        let new = BatchAck {
            heartbeats: true,
            ..ack
        };
        let json = serde_json::to_string(&new).unwrap_or_default();
        assert!(json.ends_with(r#","heartbeats":true}"#), "{json}");
        assert_eq!(serde_json::from_str::<BatchAck>(&json).ok(), Some(new));
    }
}
