//! The local verdict: the shared rules (`posmon-diagnosis`) applied to the agent's own report,
//! with each finding's effect on payments, the party to call (and the contact configured for
//! it), the remediation and, for a failed rung, its plain-language error beside the raw one.
//! `posmon-agent probe` prints it (`render.rs`) and exits with it; the running agent keeps it in
//! `<state_dir>/status.json` for the POS application, rewritten atomically after every cycle, and
//! serves the same bytes on a loopback-only `GET /status` when `status_listen` is set. The
//! fields are documented in `docs/pos-app-status.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use posmon_diagnosis::explain::{
    headline, rung_error, rung_remediation, Caller, CERTIFICATE_DATES_UNCERTAIN,
};
use posmon_diagnosis::readiness::{effect, readiness_of_signals, PaymentRoles, Readiness};
use posmon_diagnosis::rules::network_path::{is_path_kind, TLS_FAILURE};
use posmon_diagnosis::{Evidence, FindingKind, Party, Severity, Signal, Text};
use posmon_protocol::{ErrorKind, Report, Stage};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::{Contact, Contacts, TargetConfig};

/// The version of the status file's schema: a POS application checks it, and a change that
/// removes or renames a field raises it.
pub const STATUS_SCHEMA_VERSION: u32 = 1;

/// The status file's name in the state directory.
pub const STATUS_FILE: &str = "status.json";

/// The process exit status of `posmon-agent probe` for a readiness: 0 can pay, 1 at risk, 2
/// cannot pay (3, the probe could not run, is the command line's).
pub fn exit_code(readiness: Readiness) -> u8 {
    match readiness {
        Readiness::CanPay => 0,
        Readiness::AtRisk | Readiness::Unknown => 1,
        Readiness::CannotPay => 2,
    }
}

/// Text made at run time, in both languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bilingual {
    pub en: String,
    #[serde(rename = "zh-CN")]
    pub zh_cn: String,
}

/// What one report shows, as the POS application and the field engineer read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub readiness: Readiness,
    pub readiness_label: Text,
    /// One line: "Can take payments", or the problem and whom to call.
    pub headline: Bilingual,
    /// Most urgent first: those that stop payments, then the rest, each in the rules' order.
    pub findings: Vec<LocalFinding>,
}

/// One finding of the shared rules over the agent's own report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalFinding {
    pub code: &'static str,
    pub title: Text,
    pub severity: Severity,
    /// The target, peripheral, process or component; empty for the whole terminal.
    pub subject: String,
    /// What it does to payments: `cannot_pay` or `at_risk`.
    pub effect: Readiness,
    pub party: Party,
    pub party_label: Text,
    /// The contact configured for the party, if any.
    pub contact: Option<Contact>,
    pub remediation: Text,
    pub evidence: Vec<Evidence>,
    /// For a failed rung of the path: which, in plain words, and the raw error.
    pub rung: Option<RungFailure>,
}

/// A failed rung: its name and error kind as on the wire, what that means, and the raw error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RungFailure {
    pub stage: &'static str,
    pub error: &'static str,
    pub plain: Text,
    pub detail: Option<String>,
}

/// The verdict on `report` given the rules' `signals` over it, the payment roles, whom to call
/// per party and the configured targets (a target's own `contact` stands for its host's
/// operator). Without a configured payment target (none of `roles.targets` is probed), the
/// verdict cannot say payments work: `unknown`, unless something already stops them.
pub fn verdict(
    report: &Report,
    signals: &[Signal],
    roles: &PaymentRoles,
    contacts: &Contacts,
    targets: &[TargetConfig],
) -> Verdict {
    let payment_target =
        |subject: &str| subject.is_empty() || roles.targets.iter().any(|target| target == subject);
    let payment_configured = roles
        .targets
        .iter()
        .any(|name| targets.iter().any(|target| &target.name == name));
    // The host's operator: the target's own contact, else the acquirer's for the payment host
    // (a TMS is not the acquirer's). Any other party: its configured contact.
    let contact_of = |signal: &Signal| -> Option<Contact> {
        if signal.kind.party != Party::Acquirer || signal.subject.is_empty() {
            return contacts.of(signal.kind.party).cloned();
        }
        let own = targets
            .iter()
            .find(|target| target.name == signal.subject)
            .and_then(|target| target.contact.as_ref());
        match own {
            Some(text) => Some(Contact {
                name: text.clone(),
                name_zh_cn: None,
                phone: None,
            }),
            None if payment_target(&signal.subject) => contacts.of(Party::Acquirer).cloned(),
            None => None,
        }
    };
    let mut readiness = readiness_of_signals(signals, roles);
    let unconfigured = !payment_configured && readiness != Readiness::CannotPay;
    if unconfigured {
        readiness = Readiness::Unknown;
    }
    let mut findings: Vec<LocalFinding> = signals
        .iter()
        .map(|signal| {
            let kind = signal.kind;
            let rung = rung_of(signal);
            LocalFinding {
                code: kind.code,
                title: kind.title,
                severity: signal.severity,
                subject: signal.subject.clone(),
                effect: effect(kind, &signal.subject, signal.severity, roles),
                party: kind.party,
                party_label: kind.party.label_for_target(payment_target(&signal.subject)),
                contact: contact_of(signal),
                remediation: remediation(report, kind, rung.as_ref()),
                evidence: signal.evidence.clone(),
                rung: rung.map(|(rung, _)| rung),
            }
        })
        .collect();
    // Stable: the rules' order within each effect.
    findings.sort_by_key(|finding| finding.effect.urgency());
    let worst = signals
        .iter()
        .find(|signal| effect(signal.kind, &signal.subject, signal.severity, roles) == readiness)
        .map(|signal| (signal, contact_of(signal)));
    let (en, zh_cn) = if unconfigured {
        (
            "Cannot tell whether payments work: no payment target is configured ([readiness] targets)".to_string(),
            "无法判断能否收款：未配置支付目标（[readiness] targets）".to_string(),
        )
    } else {
        headline(
            readiness,
            worst.as_ref().map(|(signal, contact)| {
                let caller = contact.as_ref().map(|contact| Caller {
                    name_en: &contact.name,
                    name_zh_cn: contact.name_zh_cn.as_deref().unwrap_or(&contact.name),
                    phone: contact.phone.as_deref(),
                });
                (signal.kind, caller, payment_target(&signal.subject))
            }),
        )
    };
    Verdict {
        readiness,
        readiness_label: readiness.label(),
        headline: Bilingual { en, zh_cn },
        findings,
    }
}

/// What to do about a finding: the kind's remediation, unless the failed rung says it is wrong
/// here (`rung_remediation`), or a certificate is rejected for its dates while nothing
/// measured the clock (then both the clock and the certificate are possible).
fn remediation(
    report: &Report,
    kind: &FindingKind,
    rung: Option<&(RungFailure, (Stage, ErrorKind))>,
) -> Text {
    let Some((_, (stage, error))) = rung else {
        return kind.remediation;
    };
    if let Some(text) = rung_remediation(*stage, *error) {
        return text;
    }
    let dates = matches!(
        error,
        ErrorKind::CertificateExpired | ErrorKind::CertificateNotYetValid
    );
    if kind.code == TLS_FAILURE.code && dates && report.clock.is_none() {
        return CERTIFICATE_DATES_UNCERTAIN;
    }
    kind.remediation
}

/// The failed rung behind a finding of the path ladder, as its evidence names it (the rule
/// records the failed stage, its error and the raw detail): none for any other kind.
fn rung_of(signal: &Signal) -> Option<(RungFailure, (Stage, ErrorKind))> {
    if !is_path_kind(signal.kind) {
        return None;
    }
    let value = |name: &str| {
        signal
            .evidence
            .iter()
            .find(|evidence| evidence.name == name)
            .map(|evidence| evidence.value.as_str())
    };
    // The wire names; an unknown one reads as `other`, as on the wire.
    let parse = |text: &str| serde_json::Value::String(text.to_string());
    let stage: Stage = serde_json::from_value(parse(value("stage")?)).ok()?;
    let error: ErrorKind = value("error")
        .and_then(|text| serde_json::from_value(parse(text)).ok())
        .unwrap_or(ErrorKind::Other);
    Some((
        RungFailure {
            stage: stage.as_str(),
            error: error.as_str(),
            plain: rung_error(stage, error),
            detail: value("detail").map(str::to_string),
        },
        (stage, error),
    ))
}

/// The status file's content: the verdict on the latest cycle, whose it is and when, and when
/// the collector last acknowledged a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub schema_version: u32,
    pub terminal_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub collector: CollectorStatus,
}

/// What the POS application needs to say "reporting to the collector: ok / not since …".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CollectorStatus {
    /// When the collector last acknowledged a report (kept across restarts through the
    /// previous status file); null before the first.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_acknowledged_at: Option<OffsetDateTime>,
    /// Reports waiting in the spool for the collector.
    pub pending_reports: usize,
}

/// Writes `bytes` to `dir/status.json` so that a reader only ever sees a whole file, the old
/// or the new: a new temporary file in the same directory (created afresh and never through a
/// symbolic link: a leftover is removed first), written, made world-readable (0644: the POS
/// application is another user), then renamed over the old one. No fsync: the atomic rename is
/// what keeps it whole, and the file is rewritten every cycle, so a power cut costs at most the
/// latest cycle's verdict. The temporary file is removed if any step fails.
pub fn write_status(dir: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(STATUS_FILE);
    let temporary = dir.join(format!(".{STATUS_FILE}.tmp"));
    // A crash's leftover, or a link planted there: removed (a link itself, not its target).
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o644).custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = options.open(&temporary)?;
    let written = (|| {
        // The mode above is masked by the umask; the POS application must be able to read it.
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        file.write_all(bytes)?;
        drop(file);
        std::fs::rename(&temporary, &path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    Ok(path)
}

/// Writes the status file every cycle and says so in the log only when that changes: the first
/// failure (and a different one after it), and the first success after failures, not one line
/// per cycle.
#[derive(Debug, Default)]
pub struct StatusWriter {
    failing: Option<String>,
}

impl StatusWriter {
    /// Writes `bytes` as the status file in `dir`; true when that was logged.
    pub fn write(&mut self, dir: &Path, bytes: &[u8]) -> bool {
        match write_status(dir, bytes) {
            Ok(_) => {
                let recovered = self.failing.take().is_some();
                if recovered {
                    tracing::info!(dir = %dir.display(), "The status file is written again.");
                }
                recovered
            }
            Err(error) => {
                let text = error.to_string();
                let changed = self.failing.as_deref() != Some(text.as_str());
                if changed {
                    tracing::warn!(%error, dir = %dir.display(), "Cannot write the status file; the POS application reads an old one until this is fixed.");
                    self.failing = Some(text);
                }
                changed
            }
        }
    }

    /// Whether the latest write failed.
    pub fn failing(&self) -> bool {
        self.failing.is_some()
    }
}

/// Creates the state directory if it is missing, 0755 whatever the umask: the POS application
/// runs as another user and must reach `status.json` in it. An existing directory is left as
/// its owner (or the package) made it.
pub fn create_state_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o755);
    builder.create(dir)?;
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(())
}

/// The largest previous status file read back at start.
const PREVIOUS_STATUS_MAX_BYTES: u64 = 64 * 1024;

/// When the collector last acknowledged a report, as the status file the previous run left in
/// `dir` says, so that "not since …" survives a restart (a power cut during an outage, say).
/// Lenient: a missing, oversized or unreadable file, anything but a regular file (a link is not
/// followed), or a field that does not parse, is none. At most `PREVIOUS_STATUS_MAX_BYTES` are
/// read, whatever the file's size says.
pub fn previous_acknowledgement(dir: &Path) -> Option<OffsetDateTime> {
    use std::io::Read;
    let path = dir.join(STATUS_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Not a FIFO's open that blocks, not a link's target.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(&path).ok()?;
    let metadata = file.metadata().ok()?;
    if !metadata.is_file() || metadata.len() > PREVIOUS_STATUS_MAX_BYTES {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(PREVIOUS_STATUS_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > PREVIOUS_STATUS_MAX_BYTES {
        return None;
    }
    let status: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let text = status
        .get("collector")?
        .get("last_acknowledged_at")?
        .as_str()?;
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Connections the status endpoint serves at once; more are closed unanswered.
const STATUS_CONNECTIONS_MAX: usize = 4;
/// The most of a request buffered: hyper's smallest read buffer (the request line and headers;
/// a body is never read).
const STATUS_REQUEST_MAX_BYTES: usize = 8192;
/// How long a connection may take to send its request and read the answer.
const STATUS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `GET /status` on `listener` with the latest status bytes (503 before the first
/// cycle), 404 for anything else: hyper parses the HTTP, one request per connection, at most
/// `STATUS_CONNECTIONS_MAX` connections at once, each closed after
/// `STATUS_CONNECTION_TIMEOUT`. Runs until the task is dropped.
pub async fn serve_status(listener: TcpListener, latest: watch::Receiver<Arc<[u8]>>) {
    let permits = Arc::new(Semaphore::new(STATUS_CONNECTIONS_MAX));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let body = Arc::clone(&latest.borrow());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let answer = respond(request.method(), request.uri().path(), &body);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(STATUS_REQUEST_MAX_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(STATUS_CONNECTION_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

/// The answer to one request: the status for `GET /status`, else 404.
fn respond(method: &Method, path: &str, body: &Arc<[u8]>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (method, path) {
        (&Method::GET, "/status") if body.is_empty() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"no measurement yet\n"),
        ),
        (&Method::GET, "/status") => (
            StatusCode::OK,
            "application/json",
            Bytes::copy_from_slice(body),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_diagnosis::thresholds::Thresholds;
    use posmon_diagnosis::{diagnose, Policy};
    use posmon_protocol::{ProbeResult, StageResult, StageStatus};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn report(stages: Vec<StageResult>) -> Report {
        let mut report = crate::report::tests::minimal_report();
        report.probes = vec![ProbeResult {
            target: "payment-host".into(),
            address: "127.0.0.1:9".into(),
            stages,
        }];
        report
    }

    fn failed(stage: Stage, error: ErrorKind, detail: &str) -> StageResult {
        StageResult {
            error: Some(error),
            detail: Some(detail.into()),
            ..crate::probe::stage(stage, StageStatus::Failed)
        }
    }

    fn ok(stage: Stage) -> StageResult {
        crate::probe::stage(stage, StageStatus::Ok)
    }

    fn target(name: &str, contact: Option<&str>) -> TargetConfig {
        TargetConfig {
            name: name.into(),
            address: "127.0.0.1:9".into(),
            tls: false,
            attempts: None,
            ca_file: None,
            contact: contact.map(str::to_string),
        }
    }

    /// The verdict with the default roles, the report's targets and `payment-host` configured.
    fn verdict_of(report: &Report, contacts: &Contacts) -> Verdict {
        let mut targets = vec![target("payment-host", None)];
        targets.extend(
            report
                .probes
                .iter()
                .filter(|probe| probe.target != "payment-host")
                .map(|probe| target(&probe.target, None)),
        );
        verdict_with(report, contacts, &targets)
    }

    fn verdict_with(report: &Report, contacts: &Contacts, targets: &[TargetConfig]) -> Verdict {
        let roles = PaymentRoles::default();
        let thresholds = Thresholds::default();
        let policy = Policy {
            versions: &[],
            thresholds: &thresholds,
            roles: &roles,
        };
        let signals = diagnose(report, &policy);
        verdict(report, &signals, &roles, contacts, targets)
    }

    /// Every rung's failure, offline: the finding, the party, its contact, the plain error and
    /// the raw one, and the headline naming whom to call.
    #[test]
    fn every_rung_names_its_party_and_remediation() {
        let mobile = Contact {
            name: "China Mobile".into(),
            name_zh_cn: Some("中国移动".into()),
            phone: Some("400-100-8611".into()),
        };
        let contacts = Contacts {
            network_provider: Some(mobile.clone()),
            ..Contacts::default()
        };
        let before = |stage: Stage| {
            [
                Stage::Link,
                Stage::Gateway,
                Stage::Dns,
                Stage::Tcp,
                Stage::Tls,
            ]
            .into_iter()
            .take_while(|rung| *rung != stage)
            .map(ok)
            .collect::<Vec<_>>()
        };
        // stage, error, raw detail, code, party, plain words (part), headline.
        let cases = [
            (
                Stage::Link,
                ErrorKind::NoCarrier,
                "eth0: no carrier",
                "env.network.link_down",
                Party::Merchant,
                "no cable plugged in",
                "Network problem — call the shop (merchant)",
            ),
            (
                Stage::Link,
                ErrorKind::NoDefaultRoute,
                "no default route",
                "env.network.link_down",
                Party::Merchant,
                "no default route",
                "Network problem — call the shop (merchant)",
            ),
            (
                Stage::Gateway,
                ErrorKind::Unreachable,
                "192.168.1.1: no ARP entry",
                "env.network.gateway_unreachable",
                Party::Merchant,
                "router does not answer",
                "Network problem — call the shop (merchant)",
            ),
            (
                Stage::Dns,
                ErrorKind::Nxdomain,
                "pay.test: NXDOMAIN",
                "env.network.dns_failure",
                Party::NetworkProvider,
                "does not exist",
                "Network problem — call China Mobile: 400-100-8611",
            ),
            (
                Stage::Dns,
                ErrorKind::Servfail,
                "pay.test: SERVFAIL",
                "env.network.dns_failure",
                Party::NetworkProvider,
                "failed to look up",
                "Network problem — call China Mobile: 400-100-8611",
            ),
            (
                Stage::Dns,
                ErrorKind::Timeout,
                "no answer in 5s",
                "env.network.dns_failure",
                Party::NetworkProvider,
                "did not answer in time",
                "Network problem — call China Mobile: 400-100-8611",
            ),
            (
                Stage::Tcp,
                ErrorKind::Timeout,
                "connect timed out",
                "env.network.host_unreachable",
                Party::NetworkProvider,
                "did not answer in time",
                "Network problem — call China Mobile: 400-100-8611",
            ),
            (
                Stage::Tcp,
                ErrorKind::Unreachable,
                "No route to host",
                "env.network.host_unreachable",
                Party::NetworkProvider,
                "no route to the host",
                "Network problem — call China Mobile: 400-100-8611",
            ),
            (
                Stage::Tcp,
                ErrorKind::Refused,
                "Connection refused",
                "env.network.host_refused",
                Party::Acquirer,
                "refused the connection",
                "Payment host problem — call the acquirer, who runs the payment host",
            ),
            (
                Stage::Tls,
                ErrorKind::ProtocolError,
                "received corrupt message of type InvalidContentType",
                "env.network.tls_failure",
                Party::Acquirer,
                "does not speak TLS on this port",
                "Payment host problem — call the acquirer, who runs the payment host",
            ),
            (
                Stage::Tls,
                ErrorKind::UnknownCa,
                "invalid peer certificate: UnknownIssuer",
                "env.network.tls_failure",
                Party::Acquirer,
                "not signed by an authority",
                "Payment host problem — call the acquirer, who runs the payment host",
            ),
            (
                Stage::Tls,
                ErrorKind::CertificateExpired,
                "invalid peer certificate: Expired",
                "env.network.tls_failure",
                Party::Acquirer,
                "has expired",
                "Payment host problem — call the acquirer, who runs the payment host",
            ),
            (
                Stage::Tls,
                ErrorKind::NameMismatch,
                "invalid peer certificate: NotValidForName",
                "env.network.tls_failure",
                Party::Acquirer,
                "for another name",
                "Payment host problem — call the acquirer, who runs the payment host",
            ),
            (
                Stage::Http,
                ErrorKind::HttpStatus,
                "HTTP 503",
                "env.network.host_refused",
                Party::Acquirer,
                "error status",
                "Payment host problem — call the acquirer, who runs the payment host",
            ),
        ];
        for (stage, error, detail, code, party, plain, headline) in cases {
            let mut stages = before(stage);
            stages.push(failed(stage, error, detail));
            let verdict = verdict_of(&report(stages), &contacts);
            let name = format!("{stage:?} {error:?}");
            assert_eq!(verdict.readiness, Readiness::CannotPay, "{name}");
            assert_eq!(verdict.headline.en, headline, "{name}");
            let finding = verdict
                .findings
                .iter()
                .find(|finding| finding.code == code)
                .unwrap_or_else(|| panic!("{name}: no {code} in {verdict:#?}"));
            assert_eq!(finding.party, party, "{name}");
            assert_eq!(finding.effect, Readiness::CannotPay, "{name}");
            let expected_contact = (party == Party::NetworkProvider).then(|| mobile.clone());
            assert_eq!(finding.contact, expected_contact, "{name}");
            assert!(!finding.remediation.en.is_empty() && !finding.remediation.zh_cn.is_empty());
            let rung = finding
                .rung
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: no rung"));
            assert_eq!(
                (rung.stage, rung.error),
                (stage.as_str(), error.as_str()),
                "{name}"
            );
            assert!(rung.plain.en.contains(plain), "{name}: {}", rung.plain.en);
            assert_eq!(rung.detail.as_deref(), Some(detail), "{name}");
            // And the readable form carries the same.
            let text = crate::render::render_verdict(&verdict, crate::render::Lang::Both);
            for part in [
                plain,
                detail,
                finding.party_label.zh_cn,
                finding.remediation.en,
            ] {
                assert!(text.contains(part), "{name}: {part:?} not in\n{text}");
            }
        }
    }

    /// Every rung × every error kind: the finding's party is the one the party table gives,
    /// and the readable form (in each language) carries its plain error, the raw one, whom to
    /// call and what to do.
    #[test]
    fn every_rung_and_error_kind_renders_its_party_and_remediation() {
        use crate::render::{render_verdict, Lang};
        const ERRORS: [ErrorKind; 19] = ErrorKind::ALL;
        // The party table (README, "Who must act") for a payment host whose resolver is not
        // the shop's router and whose terminal clock is right.
        let party = |stage: Stage, error: ErrorKind| match (stage, error) {
            (Stage::Link | Stage::Gateway, _) => Party::Merchant,
            (Stage::Dns, _) => Party::NetworkProvider,
            (Stage::Tcp, ErrorKind::Refused | ErrorKind::Reset) => Party::Acquirer,
            (Stage::Tcp, _) => Party::NetworkProvider,
            _ => Party::Acquirer,
        };
        let contacts = Contacts::default();
        for stage in [
            Stage::Link,
            Stage::Gateway,
            Stage::Dns,
            Stage::Tcp,
            Stage::Tls,
            Stage::Http,
        ] {
            for error in ERRORS {
                let name = format!("{stage:?} {error:?}");
                let mut stages: Vec<StageResult> = [
                    Stage::Link,
                    Stage::Gateway,
                    Stage::Dns,
                    Stage::Tcp,
                    Stage::Tls,
                ]
                .into_iter()
                .take_while(|rung| *rung != stage)
                .map(ok)
                .collect();
                stages.push(failed(stage, error, "raw-error-text"));
                let verdict = verdict_of(&report(stages), &contacts);
                assert_eq!(verdict.readiness, Readiness::CannotPay, "{name}");
                let finding = verdict
                    .findings
                    .iter()
                    .find(|finding| finding.rung.is_some())
                    .unwrap_or_else(|| panic!("{name}: no rung finding in {verdict:#?}"));
                assert_eq!(finding.party, party(stage, error), "{name}");
                let plain = rung_error(stage, error);
                assert_eq!(finding.rung.as_ref().map(|rung| rung.plain), Some(plain));
                let label = finding.party.label();
                for (lang, parts) in [
                    (Lang::En, [plain.en, label.en, finding.remediation.en]),
                    (
                        Lang::ZhCn,
                        [plain.zh_cn, label.zh_cn, finding.remediation.zh_cn],
                    ),
                ] {
                    let text = render_verdict(&verdict, lang);
                    for part in parts.into_iter().chain(["raw-error-text"]) {
                        assert!(text.contains(part), "{name} {lang:?}: {part:?} in\n{text}");
                    }
                }
            }
        }
    }

    /// A certificate rejected for its dates, offline (no clock measurement): a clock before the
    /// floor is the clock's fault; a plausible clock leaves both the clock and the certificate
    /// possible; a measured, right clock leaves the certificate.
    #[test]
    fn a_rejected_certificate_date_names_the_clock_or_both() {
        let rejected = |error: ErrorKind| {
            report(vec![
                ok(Stage::Link),
                ok(Stage::Gateway),
                ok(Stage::Dns),
                ok(Stage::Tcp),
                failed(Stage::Tls, error, "invalid peer certificate"),
            ])
        };
        // The RTC battery is flat: 1970.
        let mut reset = rejected(ErrorKind::CertificateNotYetValid);
        reset.observed_at = time::macros::datetime!(1970-01-01 00:01:00 UTC);
        let verdict = verdict_of(&reset, &Contacts::default());
        assert_eq!(verdict.readiness, Readiness::CannotPay);
        let finding = &verdict.findings[0];
        assert_eq!(finding.code, "env.clock_breaks_tls", "{verdict:#?}");
        assert_eq!(finding.party, Party::Operations);
        assert!(finding.remediation.en.contains("NTP"));
        assert_eq!(
            verdict.headline.en,
            "Clock problem — call the terminal operations team"
        );
        assert_eq!(finding.rung.as_ref().map(|rung| rung.stage), Some("tls"));
        // Today's date and no measurement: either.
        for error in [
            ErrorKind::CertificateExpired,
            ErrorKind::CertificateNotYetValid,
        ] {
            let verdict = verdict_of(&rejected(error), &Contacts::default());
            let finding = &verdict.findings[0];
            assert_eq!(finding.code, "env.network.tls_failure", "{error:?}");
            assert_eq!(
                finding.remediation, CERTIFICATE_DATES_UNCERTAIN,
                "{error:?}"
            );
            let text = crate::render::render_verdict(&verdict, crate::render::Lang::Both);
            assert!(
                text.contains("either the terminal's clock is wrong"),
                "{text}"
            );
            assert!(text.contains("可能是终端时钟错误"), "{text}");
        }
        // The clock measured right: the certificate.
        let mut measured = rejected(ErrorKind::CertificateExpired);
        measured.clock = Some(posmon_protocol::ClockStatus {
            offset_ms: 200.0,
            uncertainty_ms: 50.0,
            ntp_synchronized: Some(true),
        });
        let verdict = verdict_of(&measured, &Contacts::default());
        assert_eq!(verdict.findings[0].code, "env.network.tls_failure");
        assert_eq!(
            verdict.findings[0].remediation, TLS_FAILURE.remediation,
            "{verdict:#?}"
        );
    }

    /// Where the generic remediation is wrong for the rung: a port that does not speak TLS, a
    /// name without an address record.
    #[test]
    fn rungs_with_their_own_remediation() {
        let before_tls = [Stage::Link, Stage::Gateway, Stage::Dns, Stage::Tcp].map(ok);
        let mut stages = before_tls.to_vec();
        stages.push(failed(
            Stage::Tls,
            ErrorKind::ProtocolError,
            "received corrupt message of type InvalidContentType",
        ));
        let verdict = verdict_of(&report(stages), &Contacts::default());
        let finding = &verdict.findings[0];
        assert_eq!(finding.code, "env.network.tls_failure");
        assert!(
            finding.remediation.en.contains("check the host and port")
                && finding.remediation.en.contains("captive portal"),
            "{}",
            finding.remediation.en
        );
        assert!(finding.remediation.zh_cn.contains("强制门户"));
        let verdict = verdict_of(
            &report(vec![
                ok(Stage::Link),
                ok(Stage::Gateway),
                failed(
                    Stage::Dns,
                    ErrorKind::NoData,
                    "pay.test has no address records",
                ),
            ]),
            &Contacts::default(),
        );
        let finding = &verdict.findings[0];
        assert_eq!(finding.code, "env.network.dns_failure");
        assert!(
            finding.remediation.en.contains("no address record")
                && finding.remediation.en.contains("check the host name"),
            "{}",
            finding.remediation.en
        );
        assert_eq!(
            finding.rung.as_ref().map(|rung| rung.error),
            Some("no_data")
        );
        // Any other rung keeps its kind's remediation.
        let verdict = verdict_of(
            &report(vec![
                ok(Stage::Link),
                ok(Stage::Gateway),
                failed(Stage::Dns, ErrorKind::Nxdomain, "pay.test: NXDOMAIN"),
            ]),
            &Contacts::default(),
        );
        assert_eq!(
            verdict.findings[0].remediation,
            posmon_diagnosis::rules::network_path::DNS_FAILURE.remediation
        );
    }

    /// The rung comes from the finding's evidence (its target's failed stage), and only for
    /// the kinds of the path ladder.
    #[test]
    fn the_rung_is_the_findings_own_evidence() {
        let mut two = report(vec![
            ok(Stage::Link),
            ok(Stage::Gateway),
            failed(Stage::Tcp, ErrorKind::Refused, "refused"),
        ]);
        two.probes.push(ProbeResult {
            target: "tms".into(),
            address: "127.0.0.1:10".into(),
            stages: vec![
                ok(Stage::Link),
                ok(Stage::Gateway),
                ok(Stage::Dns),
                ok(Stage::Tcp),
                failed(Stage::Tls, ErrorKind::UnknownCa, "UnknownIssuer"),
            ],
        });
        let verdict = verdict_of(&two, &Contacts::default());
        let rungs: Vec<_> = verdict
            .findings
            .iter()
            .map(|finding| {
                let rung = finding.rung.as_ref().unwrap();
                (
                    finding.subject.as_str(),
                    rung.stage,
                    rung.error,
                    rung.detail.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            rungs,
            [
                ("payment-host", "tcp", "refused", Some("refused")),
                ("tms", "tls", "unknown_ca", Some("UnknownIssuer")),
            ]
        );
        // A kind outside the ladder has no rung, whatever its evidence says.
        let disk = Signal {
            kind: &posmon_diagnosis::rules::disk_full::DISK_FULL,
            severity: Severity::Warning,
            subject: "/".into(),
            evidence: vec![
                Evidence::new("stage", "tcp"),
                Evidence::new("error", "refused"),
            ],
        };
        assert!(rung_of(&disk).is_none());
        // A path kind without a stage in its evidence has none either; an unknown stage or
        // error reads as `other`.
        let mut link = disk.clone();
        link.kind = &posmon_diagnosis::rules::network_path::LINK_DOWN;
        link.evidence.clear();
        assert!(rung_of(&link).is_none());
        link.evidence = vec![Evidence::new("stage", "warp"), Evidence::new("error", "?")];
        let (rung, _) = rung_of(&link).unwrap();
        assert_eq!((rung.stage, rung.error), ("other", "other"));
    }

    /// A target payments do not need is a "server", called through its own contact; with no
    /// payment target configured at all, the verdict cannot say payments work.
    #[test]
    fn servers_and_an_unconfigured_payment_target() {
        let mut tms = report(vec![
            ok(Stage::Link),
            ok(Stage::Gateway),
            ok(Stage::Dns),
            failed(Stage::Tcp, ErrorKind::Refused, "refused"),
        ]);
        tms.probes[0].target = "tms".into();
        let acquirer = Contacts {
            acquirer: Some(Contact {
                name: "Acme Pay".into(),
                name_zh_cn: None,
                phone: Some("95516".into()),
            }),
            ..Contacts::default()
        };
        let targets = [
            target("payment-host", None),
            target("tms", Some("TMS helpdesk 400-800-1234")),
        ];
        let verdict = verdict_with(&tms, &acquirer, &targets);
        assert_eq!(verdict.readiness, Readiness::AtRisk);
        assert_eq!(
            verdict.headline.en,
            "Server problem (payments still work) — call TMS helpdesk 400-800-1234"
        );
        assert_eq!(
            verdict.headline.zh_cn,
            "服务器故障（仍可收款） — 请联系 TMS helpdesk 400-800-1234"
        );
        let finding = &verdict.findings[0];
        assert_eq!(
            finding
                .contact
                .as_ref()
                .map(|contact| contact.name.as_str()),
            Some("TMS helpdesk 400-800-1234")
        );
        assert_eq!(finding.party_label.en, "the server's operator");
        // Without its own contact: the server's operator, not the acquirer.
        let verdict = verdict_with(
            &tms,
            &acquirer,
            &[target("payment-host", None), target("tms", None)],
        );
        assert_eq!(
            verdict.headline.en,
            "Server problem (payments still work) — call the server's operator"
        );
        assert_eq!(verdict.findings[0].contact, None);
        // The payment host itself is still the acquirer's.
        tms.probes[0].target = "payment-host".into();
        let verdict = verdict_with(&tms, &acquirer, &targets);
        assert_eq!(
            verdict.headline.en,
            "Payment host problem — call Acme Pay: 95516"
        );

        // No payment target among the configured ones: healthy is unknown (exit 1).
        let healthy = report(vec![ok(Stage::Link), ok(Stage::Gateway), ok(Stage::Tcp)]);
        let mut only_tms = healthy.clone();
        only_tms.probes[0].target = "tms".into();
        for targets in [&[target("tms", None)][..], &[]] {
            let verdict = verdict_with(&only_tms, &Contacts::default(), targets);
            assert_eq!(verdict.readiness, Readiness::Unknown);
            assert_eq!(exit_code(verdict.readiness), 1);
            assert!(
                verdict
                    .headline
                    .en
                    .contains("no payment target is configured"),
                "{}",
                verdict.headline.en
            );
            assert!(verdict.headline.zh_cn.contains("未配置支付目标"));
        }
        // What stops every payment still says so.
        let unplugged = report(vec![failed(
            Stage::Link,
            ErrorKind::NoCarrier,
            "no carrier",
        )]);
        let verdict = verdict_with(&unplugged, &Contacts::default(), &[target("tms", None)]);
        assert_eq!(verdict.readiness, Readiness::CannotPay);
    }

    #[test]
    fn a_failing_target_payments_do_not_need_is_a_risk() {
        let mut report = report(vec![
            ok(Stage::Link),
            ok(Stage::Gateway),
            failed(Stage::Tcp, ErrorKind::Timeout, "timed out"),
        ]);
        report.probes[0].target = "tms".into();
        let verdict = verdict_of(&report, &Contacts::default());
        assert_eq!(verdict.readiness, Readiness::AtRisk);
        assert_eq!(exit_code(verdict.readiness), 1);
        assert_eq!(
            verdict.headline.en,
            "Network problem (payments still work) — call the network provider"
        );
        let healthy = verdict_of(
            &self::report(vec![ok(Stage::Link), ok(Stage::Gateway), ok(Stage::Tcp)]),
            &Contacts::default(),
        );
        assert_eq!(healthy.readiness, Readiness::CanPay);
        assert_eq!(healthy.headline.zh_cn, "可以收款");
        assert!(healthy.findings.is_empty());
        assert_eq!(exit_code(Readiness::CannotPay), 2);
        assert_eq!(exit_code(Readiness::CanPay), 0);
    }

    /// A reader in a loop during 1 000 rewrites (of alternating sizes) always finds a whole
    /// file that parses, and the file is world-readable.
    #[test]
    fn the_status_file_is_never_torn() {
        let dir = tempfile::tempdir().unwrap();
        let directory = dir.path().to_path_buf();
        let small = serde_json::to_vec(&serde_json::json!({"n": 0})).unwrap();
        write_status(&directory, &small).unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let done = Arc::clone(&done);
            let path = directory.join(STATUS_FILE);
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let bytes = std::fs::read(&path).unwrap();
                    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&bytes);
                    assert!(parsed.is_ok(), "torn after {reads} reads: {bytes:?}");
                    reads += 1;
                }
                reads
            })
        };
        for n in 0..1000u32 {
            let padding = "x".repeat(usize::try_from(n % 7).unwrap() * 1000);
            let bytes = serde_json::to_vec(&serde_json::json!({"n": n, "pad": padding})).unwrap();
            write_status(&directory, &bytes).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(directory.join(STATUS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let leftovers: Vec<_> = std::fs::read_dir(&directory)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        assert_eq!(leftovers, [std::ffi::OsString::from(STATUS_FILE)]);
    }

    /// The temporary file is made afresh, never through a link planted in its place, and
    /// removed when a step fails.
    #[cfg(unix)]
    #[test]
    fn the_status_write_follows_no_link_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "precious").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let temporary = state.join(format!(".{STATUS_FILE}.tmp"));
        std::os::unix::fs::symlink(&elsewhere, &temporary).unwrap();
        write_status(&state, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "precious");
        assert_eq!(std::fs::read(state.join(STATUS_FILE)).unwrap(), b"{}");
        assert!(std::fs::symlink_metadata(&temporary).is_err());
        // The rename fails (a directory is in the file's place): no temporary file is left.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join(STATUS_FILE).join("inside")).unwrap();
        assert!(write_status(&blocked, b"{}").is_err());
        let names: Vec<_> = std::fs::read_dir(&blocked)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(STATUS_FILE)]);
        // Logged when writing starts failing, changes, or recovers; not every cycle.
        let mut writer = StatusWriter::default();
        assert!(writer.write(&blocked, b"{}"));
        assert!(!writer.write(&blocked, b"{}"));
        assert!(writer.failing());
        assert!(writer.write(&dir.path().join("missing"), b"{}"));
        assert!(writer.write(&state, b"{}"));
        assert!(!writer.write(&state, b"{}"));
        assert!(!writer.failing());
    }

    /// The agent creates a missing state directory 0755 (the POS application reads the status
    /// file in it) and leaves an existing one as it is.
    #[cfg(unix)]
    #[test]
    fn the_state_directory_is_created_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var/lib/posmon-agent");
        create_state_dir(&state).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o755);
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, PermissionsExt::from_mode(0o700)).unwrap();
        create_state_dir(&private).unwrap();
        assert_eq!(mode(&private), 0o700);
    }

    /// The previous status is read back only from a regular file of at most 64 KiB, never
    /// through a link, never blocking on a FIFO.
    #[cfg(unix)]
    #[test]
    fn the_previous_status_is_read_back_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"{\"collector\":{\"last_acknowledged_at\":\"2026-12-02T09:02:44Z\"}}";
        std::fs::write(dir.path().join(STATUS_FILE), good).unwrap();
        assert!(previous_acknowledgement(dir.path()).is_some());
        // Padded past the bound: none.
        let mut padded = good.to_vec();
        padded.extend(std::iter::repeat_n(b' ', 64 * 1024));
        std::fs::write(dir.path().join(STATUS_FILE), &padded).unwrap();
        assert_eq!(previous_acknowledgement(dir.path()), None);
        // A link to a good file: not followed.
        let linked = tempfile::tempdir().unwrap();
        let target = dir.path().join("good.json");
        std::fs::write(&target, good).unwrap();
        std::os::unix::fs::symlink(&target, linked.path().join(STATUS_FILE)).unwrap();
        assert_eq!(previous_acknowledgement(linked.path()), None);
        // A directory, a FIFO: none, at once.
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join(STATUS_FILE)).unwrap();
        assert_eq!(previous_acknowledgement(other.path()), None);
        let fifo = tempfile::tempdir().unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(fifo.path().join(STATUS_FILE))
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(previous_acknowledgement(fifo.path()), None);
    }

    #[test]
    fn the_last_acknowledgement_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(previous_acknowledgement(dir.path()), None);
        let when = time::macros::datetime!(2026-12-02 09:02:44 UTC);
        let status = Status {
            schema_version: STATUS_SCHEMA_VERSION,
            terminal_id: "T-1".into(),
            observed_at: when,
            verdict: verdict_of(
                &report(vec![ok(Stage::Link), ok(Stage::Gateway), ok(Stage::Tcp)]),
                &Contacts::default(),
            ),
            collector: CollectorStatus {
                last_acknowledged_at: Some(when),
                pending_reports: 0,
            },
        };
        write_status(dir.path(), &serde_json::to_vec(&status).unwrap()).unwrap();
        assert_eq!(previous_acknowledgement(dir.path()), Some(when));
        for broken in [
            &b"{\"collector\":{\"last_acknowledged_at\":null}}"[..],
            b"{\"collector\":{\"last_acknowledged_at\":\"yesterday\"}}",
            b"{\"collector\":",
            b"[]",
        ] {
            write_status(dir.path(), broken).unwrap();
            assert_eq!(previous_acknowledgement(dir.path()), None);
        }
    }

    #[tokio::test]
    async fn the_endpoint_serves_get_status_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (sender, receiver) = watch::channel(Arc::<[u8]>::from(Vec::new()));
        let server = tokio::spawn(serve_status(listener, receiver));
        let ask = |request: &'static str| async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        };
        assert!(ask("GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 503"));
        sender.send_replace(Arc::from(b"{\"readiness\":\"can_pay\"}".to_vec()));
        let answer = ask("GET /status HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.ends_with("\r\n\r\n{\"readiness\":\"can_pay\"}"),
            "{answer}"
        );
        for other in [
            "GET / HTTP/1.1\r\n\r\n",
            "POST /status HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /status/x HTTP/1.1\r\n\r\n",
        ] {
            assert!(ask(other).await.starts_with("HTTP/1.1 404"), "{other}");
        }
        let answer = ask("nonsense\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        server.abort();
    }
}
