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
use posmon_diagnosis::explain::{headline, rung_error, Caller};
use posmon_diagnosis::readiness::{effect, readiness_of_signals, PaymentRoles, Readiness};
use posmon_diagnosis::{Evidence, Party, Severity, Signal, Text};
use posmon_protocol::{Report, Stage, StageResult, StageStatus};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::{Contact, Contacts};

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

/// The verdict on `report` given the rules' `signals` over it.
pub fn verdict(
    report: &Report,
    signals: &[Signal],
    roles: &PaymentRoles,
    contacts: &Contacts,
) -> Verdict {
    let readiness = readiness_of_signals(signals, roles);
    let mut findings: Vec<LocalFinding> = signals
        .iter()
        .map(|signal| {
            let kind = signal.kind;
            LocalFinding {
                code: kind.code,
                title: kind.title,
                severity: signal.severity,
                subject: signal.subject.clone(),
                effect: effect(kind, &signal.subject, signal.severity, roles),
                party: kind.party,
                party_label: kind.party.label(),
                contact: contacts.of(kind.party).cloned(),
                remediation: kind.remediation,
                evidence: signal.evidence.clone(),
                rung: rung_of(report, signal),
            }
        })
        .collect();
    // Stable: the rules' order within each effect.
    findings.sort_by_key(|finding| finding.effect.urgency());
    let worst = signals
        .iter()
        .filter(|signal| effect(signal.kind, &signal.subject, signal.severity, roles) == readiness)
        .map(|signal| {
            let caller = contacts.of(signal.kind.party).map(|contact| Caller {
                name_en: &contact.name,
                name_zh_cn: contact.name_zh_cn.as_deref().unwrap_or(&contact.name),
                phone: contact.phone.as_deref(),
            });
            (signal.kind, caller)
        })
        .next();
    let (en, zh_cn) = headline(readiness, worst);
    Verdict {
        readiness,
        readiness_label: readiness.label(),
        headline: Bilingual { en, zh_cn },
        findings,
    }
}

/// The failed rung behind a signal about the path: the first failed rung (ICMP aside) of the
/// subject's probe, or for a terminal-wide one (link, gateway) of the first probe it broke.
fn rung_of(report: &Report, signal: &Signal) -> Option<RungFailure> {
    if !signal
        .evidence
        .iter()
        .any(|evidence| evidence.name == "stage")
    {
        return None;
    }
    let first_failed = |stages: &[StageResult]| {
        stages
            .iter()
            .find(|stage| stage.status == StageStatus::Failed && stage.stage != Stage::Icmp)
            .cloned()
    };
    let failed = report
        .probes
        .iter()
        .filter(|probe| signal.subject.is_empty() || probe.target == signal.subject)
        .filter_map(|probe| first_failed(&probe.stages))
        .find(|stage| {
            !signal.subject.is_empty() || matches!(stage.stage, Stage::Link | Stage::Gateway)
        })?;
    let error = failed.error.unwrap_or(posmon_protocol::ErrorKind::Other);
    Some(RungFailure {
        stage: failed.stage.as_str(),
        error: error.as_str(),
        plain: rung_error(failed.stage, error),
        detail: failed.detail,
    })
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
/// or the new: a temporary file in the same directory, written, made world-readable (0644: the
/// POS application is another user), synced, then renamed over the old one.
pub fn write_status(dir: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(STATUS_FILE);
    let temporary = dir.join(format!(".{STATUS_FILE}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
    let mut file = options.open(&temporary)?;
    // The mode above is masked by the umask; the POS application must be able to read it.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, &path)?;
    // The rename itself survives a power cut once the directory is synced.
    if let Ok(directory) = std::fs::File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(path)
}

/// The largest previous status file read back at start.
const PREVIOUS_STATUS_MAX_BYTES: u64 = 1024 * 1024;

/// When the collector last acknowledged a report, as the status file the previous run left in
/// `dir` says, so that "not since …" survives a restart (a power cut during an outage, say).
/// Lenient: a missing, oversized or unreadable file, or a field that does not parse, is none.
pub fn previous_acknowledgement(dir: &Path) -> Option<OffsetDateTime> {
    let path = dir.join(STATUS_FILE);
    if std::fs::metadata(&path).ok()?.len() > PREVIOUS_STATUS_MAX_BYTES {
        return None;
    }
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
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
    use posmon_protocol::{ErrorKind, ProbeResult};
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

    fn verdict_of(report: &Report, contacts: &Contacts) -> Verdict {
        let roles = PaymentRoles::default();
        let thresholds = Thresholds::default();
        let policy = Policy {
            versions: &[],
            thresholds: &thresholds,
            roles: &roles,
        };
        let signals = diagnose(report, &policy);
        verdict(report, &signals, &roles, contacts)
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
        const ERRORS: [ErrorKind; 18] = [
            ErrorKind::NoCarrier,
            ErrorKind::NoAddress,
            ErrorKind::NoDefaultRoute,
            ErrorKind::Refused,
            ErrorKind::Timeout,
            ErrorKind::Unreachable,
            ErrorKind::Reset,
            ErrorKind::Nxdomain,
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
