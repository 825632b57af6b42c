//! Delivery: sends spooled reports to the collector, oldest first, and forgets them only once
//! acknowledged. With `transport = "datagram"` (the default) a spool of a few reports that each
//! fit one datagram goes by UDP (`datagram.rs`), one sealed datagram per report and one sealed
//! acknowledgement back; everything else — a batch after an outage, a report too large, a
//! refusal, datagrams that go unanswered (then HTTPS is preferred for a while) — goes in
//! bounded gzip-compressed batches over one kept-alive HTTPS connection.
//!
//! Failures never block the queue for long and never lose a report: a 5xx, a timeout or a broken
//! connection retries after exponential backoff with full jitter; 429 and 503 honour
//! `Retry-After`; a 4xx that names one report as bad sets that report aside (a copy under
//! `rejected/`, counted as dropped) and the rest go on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use posmon_protocol::limits::CLOCK_OFFSET_MAX_MS;
use posmon_protocol::{BatchAck, ClockStatus, ErrorBody};
use reqwest::StatusCode;
use time::OffsetDateTime;

use posmon_protocol::datagram::{AckControl, Answer as DatagramAnswer, Refusal};

use crate::backoff::{full_jitter, retry_after, Jitter};
use crate::config::Transport;
use crate::datagram::{DatagramClient, DatagramFailure, LOOKUP_BYTES};
use crate::spool::{Pending, Spool, SpoolError};

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub collector_url: String,
    /// This terminal's id: sent in the terminal header, so the collector checks the token
    /// before it reads the body; an acknowledgement for another terminal is not one.
    pub terminal_id: String,
    pub token: String,
    pub request_timeout: Duration,
    /// Reports per request at most.
    pub max_batch_reports: usize,
    /// Uncompressed bytes per request, about (one report may exceed it).
    pub max_batch_bytes: usize,
    /// PEM bundle of the CAs that may sign the collector's certificate; the built-in web roots
    /// when absent.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and private key, when the collector asks for one.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Where reports the collector refuses as bad are set aside.
    pub rejected_dir: PathBuf,
    /// First retry delay bound and the cap of the exponential backoff.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Datagrams first, or HTTPS only.
    pub transport: Transport,
    /// The collector's UDP port; absent: the port of `collector_url`.
    pub datagram_port: Option<u16>,
}

/// The most reports a delivery sends as datagrams; a longer spool (after an outage) goes as
/// HTTPS batches, which cost less per report once there are many.
pub const DATAGRAM_REPORTS_MAX: usize = 3;
/// How long HTTPS is preferred after datagrams went unanswered (UDP blocked, or no listener).
const HTTPS_AFTER_SILENCE: Duration = Duration::from_secs(30 * 60);
/// And after a refusal (rate limit, overload, a report the collector would not take).
const HTTPS_AFTER_REFUSAL: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("invalid collector_url: {0}")]
    Url(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable PEM {what}: {source}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        source: reqwest::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Everything spooled is acknowledged.
    Drained,
    /// Try again after this long.
    RetryAfter(Duration),
}

/// The largest answer read from the collector: an acknowledgement or an error is a few hundred
/// bytes; anything larger is a broken or hostile collector, and reading it unbounded would let
/// it exhaust the terminal's memory.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One answer from the collector, classified.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Acknowledged(BatchAck, Duration),
    /// Overloaded or rate-limited: wait as told (or back off when not told).
    SlowDown(Option<Duration>),
    /// The report at this index of the batch is bad.
    BadReport {
        index: usize,
        message: String,
    },
    /// The batch is too large as a whole.
    TooLarge,
    /// Anything else: retry with backoff.
    Failed(String),
}

pub struct Deliverer {
    config: DeliveryConfig,
    client: reqwest::Client,
    url: reqwest::Url,
    authorization: String,
    jitter: Jitter,
    /// Consecutive failures, for the backoff exponent.
    failures: u32,
    /// The clock offset estimated from the latest acknowledgement.
    clock: Option<ClockStatus>,
    /// Requests sent and bytes on the wire (compressed bodies), for the log and benchmarks.
    pub requests: u64,
    pub body_bytes: u64,
    /// The datagram client, with `transport = "datagram"`.
    datagrams: Option<DatagramClient>,
    /// HTTPS is preferred until then.
    https_until: Option<Instant>,
    /// Estimated IP bytes of the HTTPS exchanges since the last `take_traffic`.
    https_traffic: u64,
    /// When the last HTTPS request was answered or failed: whether its connection is kept.
    last_https: Option<Instant>,
    /// Whether the collector's latest acknowledgement said it takes heartbeats.
    heartbeats: bool,
    /// What acknowledgements asked of the terminal since the loop last took it.
    asked: Asked,
}

/// What an acknowledgement asks of the terminal (fleet control).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    /// The settings version to run.
    pub config: Option<String>,
    /// A probe request to answer.
    pub probe_request: Option<u64>,
}

impl Asked {
    fn note(&mut self, config: Option<String>, probe_request: Option<u64>) {
        if config.is_some() {
            self.config = config;
        }
        if probe_request.is_some() {
            self.probe_request = probe_request;
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, DeliveryError> {
    std::fs::read(path).map_err(|source| DeliveryError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The HTTP client for the collector, as delivery and `posmon-agent enroll` use it: timeouts,
/// the configured CA bundle (exactly those CAs) or the built-in web roots, the client
/// certificate when given, and no redirects (a request goes to the configured collector only,
/// never where an answer points).
pub fn https_client_builder(
    request_timeout: Duration,
    ca_file: Option<&Path>,
    client_certificate: Option<(&Path, &Path)>,
) -> Result<reqwest::ClientBuilder, DeliveryError> {
    let mut builder = reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let bundle = read(path)?;
        let certificates = reqwest::Certificate::from_pem_bundle(&bundle).map_err(|source| {
            DeliveryError::Pem {
                path: path.to_path_buf(),
                what: "CA bundle",
                source,
            }
        })?;
        // A private PKI: trust exactly the configured CAs.
        builder = builder.tls_built_in_root_certs(false);
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some((certificate, key)) = client_certificate {
        let mut pem = read(certificate)?;
        pem.push(b'\n');
        pem.extend(read(key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|source| DeliveryError::Pem {
            path: certificate.to_path_buf(),
            what: "client certificate and key",
            source,
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

/// [`https_client_builder`] with the agent config's timeout, CA bundle and client certificate:
/// the client of every request to the collector besides the deliveries.
pub fn collector_client_builder(
    config: &crate::config::AgentConfig,
) -> Result<reqwest::ClientBuilder, DeliveryError> {
    https_client_builder(
        config.request_timeout(),
        config.collector_ca_file.as_deref(),
        config
            .client_cert_file
            .as_deref()
            .zip(config.client_key_file.as_deref()),
    )
}

impl Deliverer {
    pub fn new(config: DeliveryConfig) -> Result<Self, DeliveryError> {
        let url = reqwest::Url::parse(&config.collector_url)
            .and_then(|base| base.join(posmon_protocol::REPORTS_PATH))
            .map_err(|error| DeliveryError::Url(error.to_string()))?;
        let client = https_client_builder(
            config.request_timeout,
            config.ca_file.as_deref(),
            config
                .client_certificate
                .as_ref()
                .map(|(certificate, key)| (certificate.as_path(), key.as_path())),
        )?
        // One connection, kept: a new TLS handshake costs more bytes than many reports.
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(POOL_IDLE)
        .tcp_keepalive(TCP_KEEPALIVE)
        .build()
        .map_err(DeliveryError::Client)?;
        let authorization = format!("Bearer {}", config.token);
        let datagrams = match config.transport {
            Transport::Https => None,
            Transport::Datagram => datagram_client(&config, &url),
        };
        Ok(Deliverer {
            config,
            client,
            url,
            authorization,
            jitter: Jitter::new(),
            failures: 0,
            clock: None,
            requests: 0,
            body_bytes: 0,
            datagrams,
            https_until: None,
            https_traffic: 0,
            last_https: None,
            heartbeats: false,
            asked: Asked::default(),
        })
    }

    /// IP bytes both ways spent on delivery since the last call: datagrams exactly (UDP payload
    /// plus 28 header bytes on IPv4, 48 on IPv6) and the collector's name lookups estimated;
    /// HTTPS estimated from what reqwest shows ([`https_exchange_bytes`]).
    pub fn take_traffic(&mut self) -> u64 {
        let datagrams = self
            .datagrams
            .as_mut()
            .map_or(0, DatagramClient::take_traffic);
        datagrams.saturating_add(std::mem::take(&mut self.https_traffic))
    }

    /// What acknowledgements asked of the terminal since the last call.
    pub fn take_asked(&mut self) -> Asked {
        std::mem::take(&mut self.asked)
    }

    /// The clock offset from the latest acknowledgement, for the next report.
    pub fn clock(&self) -> Option<ClockStatus> {
        self.clock.clone()
    }

    /// Whether the collector takes heartbeats, as its latest acknowledgement said: one from
    /// before them reads a heartbeat as a report without probes (and closes path findings), so
    /// none is sent until an acknowledgement says so. Every datagram acknowledgement does: only
    /// collectors that take heartbeats answer datagrams.
    pub fn takes_heartbeats(&self) -> bool {
        self.heartbeats
    }

    /// As if an acknowledgement had said the collector takes heartbeats.
    #[cfg(test)]
    pub(crate) fn assume_heartbeats(&mut self) {
        self.heartbeats = true;
    }

    fn backoff(&mut self) -> Duration {
        let delay = full_jitter(
            self.failures,
            self.config.backoff_base,
            self.config.backoff_cap,
            self.jitter.unit(),
        );
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Sends what the spool holds until it is drained or the collector cannot take more now:
    /// by datagram when that fits, else by HTTPS.
    pub async fn deliver(&mut self, spool: &mut Spool) -> Result<Outcome, SpoolError> {
        if let Some(outcome) = self.deliver_by_datagram(spool).await? {
            return Ok(outcome);
        }
        self.deliver_by_https(spool).await
    }

    /// Sends a short spool report by report as datagrams. `None`: this delivery goes by
    /// HTTPS (a batch, a report that does not fit, a refusal, no answer, or HTTPS preferred).
    async fn deliver_by_datagram(
        &mut self,
        spool: &mut Spool,
    ) -> Result<Option<Outcome>, SpoolError> {
        if self.https_until.is_some_and(|until| Instant::now() < until) {
            return Ok(None);
        }
        self.https_until = None;
        if self.datagrams.is_none() {
            return Ok(None);
        }
        let pending = spool.pending(DATAGRAM_REPORTS_MAX + 1, self.config.max_batch_bytes)?;
        if pending.is_empty() {
            return Ok(Some(Outcome::Drained));
        }
        if pending.len() > DATAGRAM_REPORTS_MAX {
            return Ok(None);
        }
        let instance = spool.instance().to_string();
        for report in &pending {
            // An acknowledgement of a later report (the collector took it before, and its
            // answer was lost) covers this one too.
            if report.sequence <= spool.acknowledged() {
                continue;
            }
            let Some(client) = self.datagrams.as_mut() else {
                return Ok(None);
            };
            let answered = match client.exchange(&report.payload, &instance).await {
                Ok(answered) => answered,
                Err(DatagramFailure::Unfit(error)) => {
                    tracing::debug!(%error, sequence = report.sequence, "A report does not fit one datagram; it goes by HTTPS.");
                    return Ok(None);
                }
                Err(failure) => {
                    tracing::warn!(%failure, minutes = HTTPS_AFTER_SILENCE.as_secs() / 60, "Report datagrams go unanswered; using HTTPS for a while.");
                    self.https_until = Some(Instant::now() + HTTPS_AFTER_SILENCE);
                    return Ok(None);
                }
            };
            match answered.answer {
                DatagramAnswer::Ack {
                    sequence,
                    collector_time_unix_ms,
                    control,
                } => {
                    self.heartbeats = true;
                    self.asked.note(
                        control.config.map(AckControl::version_text),
                        control.probe_request,
                    );
                    let collector_time = OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(collector_time_unix_ms) * 1_000_000,
                    )
                    .ok();
                    // Only an answer to the first send gives a round trip to trust.
                    let clock = answered.round_trip.zip(collector_time).map(
                        |(round_trip, collector_time)| {
                            let elapsed =
                                time::Duration::try_from(round_trip).unwrap_or(time::Duration::MAX);
                            let sent_at = OffsetDateTime::now_utc().saturating_sub(elapsed);
                            estimate_clock(sent_at, round_trip, collector_time)
                        },
                    );
                    if let Some(outcome) =
                        self.take_acknowledgement(spool, sequence, clock, report.sequence)?
                    {
                        return Ok(Some(outcome));
                    }
                }
                DatagramAnswer::Refusal(refusal) => {
                    // A new instance is known to the collector once HTTPS delivered it:
                    // datagrams work again at once. Anything else: HTTPS for a while.
                    if refusal != Refusal::NewInstance {
                        tracing::info!(
                            reason = refusal.as_str(),
                            minutes = HTTPS_AFTER_REFUSAL.as_secs() / 60,
                            "The collector refused a report datagram; using HTTPS for a while."
                        );
                        self.https_until = Some(Instant::now() + HTTPS_AFTER_REFUSAL);
                    }
                    return Ok(None);
                }
            }
        }
        if spool.pending(1, self.config.max_batch_bytes)?.is_empty() {
            Ok(Some(Outcome::Drained))
        } else {
            Ok(None)
        }
    }

    /// Forgets what an acknowledgement of reports up to `last` (the last one sent) covers.
    /// `Some`: stop delivering for now with this outcome.
    fn take_acknowledgement(
        &mut self,
        spool: &mut Spool,
        acknowledged: u64,
        clock: Option<ClockStatus>,
        last: u64,
    ) -> Result<Option<Outcome>, SpoolError> {
        if clock.is_some() {
            self.clock = clock;
        }
        // Above the last report sent but not above the last one issued: the collector took
        // later reports before (their answer was lost); they are acknowledged, as any are.
        let issued = spool.next_sequence().saturating_sub(1);
        if acknowledged > issued {
            // The collector holds a higher mark for this instance than this spool issued, so
            // it took these reports for repeats and applied none of them: another device with
            // this token and instance, or a forged report, pinned the mark. A new instance
            // makes the collector start the terminal's sequences anew; what was not applied is
            // counted as dropped, never taken as delivered.
            tracing::error!(
                acknowledged,
                issued,
                "The collector holds sequences above those this agent issued; starting a new agent instance."
            );
            spool.start_anew()?;
            return Ok(Some(Outcome::RetryAfter(Duration::ZERO)));
        }
        spool.acknowledge(acknowledged)?;
        if acknowledged < last {
            // The collector holds less than it was sent: do not loop on it.
            tracing::warn!(
                acknowledged,
                sent = last,
                "The collector acknowledged fewer reports than were sent; retrying later."
            );
            return Ok(Some(Outcome::RetryAfter(self.backoff())));
        }
        // Only a whole acknowledgement ends a run of failures: one that keeps taking part of
        // each batch must not keep the retries at their fastest.
        self.failures = 0;
        Ok(None)
    }

    /// Sends batches by HTTPS until the spool is drained or the collector cannot take more now.
    async fn deliver_by_https(&mut self, spool: &mut Spool) -> Result<Outcome, SpoolError> {
        let mut max_reports = self.config.max_batch_reports.max(1);
        loop {
            let batch = spool.pending(max_reports, self.config.max_batch_bytes)?;
            let Some(last) = batch.last().map(|pending| pending.sequence) else {
                return Ok(Outcome::Drained);
            };
            match self.send(&batch).await {
                Answer::Acknowledged(ack, _) if ack.terminal_id != self.config.terminal_id => {
                    let delay = self.backoff();
                    tracing::warn!(
                        acknowledged_terminal = %ack.terminal_id,
                        retry_seconds = delay.as_secs_f64(),
                        "The collector acknowledged another terminal's reports; they stay in the spool."
                    );
                    return Ok(Outcome::RetryAfter(delay));
                }
                Answer::Acknowledged(ack, round_trip) => {
                    max_reports = self.config.max_batch_reports.max(1);
                    self.heartbeats = ack.heartbeats;
                    self.asked.note(ack.config.clone(), ack.probe_request);
                    let round_trip_time =
                        time::Duration::try_from(round_trip).unwrap_or(time::Duration::MAX);
                    let sent_at = OffsetDateTime::now_utc().saturating_sub(round_trip_time);
                    let clock = estimate_clock(sent_at, round_trip, ack.collector_time);
                    if let Some(outcome) = self.take_acknowledgement(
                        spool,
                        ack.acknowledged_sequence,
                        Some(clock),
                        last,
                    )? {
                        return Ok(outcome);
                    }
                }
                Answer::SlowDown(told) => {
                    let fallback = self.backoff();
                    let delay = told.map_or(fallback, |told| {
                        told.saturating_add(Duration::from_secs_f64(self.jitter.unit()))
                    });
                    tracing::info!(
                        delay_seconds = delay.as_secs_f64(),
                        "The collector asked to slow down."
                    );
                    return Ok(Outcome::RetryAfter(delay));
                }
                Answer::BadReport { index, message } if index > 0 => {
                    // The reports before the bad one are fine: send them alone first.
                    tracing::debug!(index, %message, "A report in the batch was refused; sending the ones before it.");
                    max_reports = index;
                }
                Answer::BadReport { message, .. } => {
                    self.set_aside(spool, &batch[0], &message)?;
                }
                Answer::TooLarge if batch.len() > 1 => {
                    max_reports = (batch.len() / 2).max(1);
                }
                Answer::TooLarge => {
                    self.set_aside(spool, &batch[0], "larger than the collector accepts")?;
                }
                Answer::Failed(message) => {
                    let delay = self.backoff();
                    tracing::warn!(%message, retry_seconds = delay.as_secs_f64(), pending = spool.pending_count(), "Could not deliver reports; they stay in the spool.");
                    return Ok(Outcome::RetryAfter(delay));
                }
            }
        }
    }

    /// Keeps a copy of a refused report for a field engineer, counts it as dropped, and moves on.
    fn set_aside(
        &mut self,
        spool: &mut Spool,
        report: &Pending,
        reason: &str,
    ) -> Result<(), SpoolError> {
        tracing::error!(sequence = report.sequence, %reason, "The collector refused a report as bad; it is set aside.");
        let kept = std::fs::create_dir_all(&self.config.rejected_dir).and_then(|()| {
            let path = self
                .config
                .rejected_dir
                .join(format!("{:020}.json", report.sequence));
            let mut file = std::fs::File::create(path)?;
            writeln!(
                file,
                "{{\"reason\":{},\"report\":",
                serde_json::Value::String(reason.to_string())
            )?;
            file.write_all(&report.payload)?;
            file.write_all(b"}\n")
        });
        if let Err(error) = kept {
            tracing::warn!(%error, "Could not keep a copy of the refused report.");
        }
        prune(&self.config.rejected_dir, REJECTED_KEPT_MAX);
        spool.set_aside(report.sequence)
    }

    async fn send(&mut self, batch: &[Pending]) -> Answer {
        let body = batch_body(batch);
        let compressed = match gzip(&body) {
            Ok(compressed) => compressed,
            Err(error) => return Answer::Failed(format!("cannot compress: {error}")),
        };
        self.requests += 1;
        let request_bytes = compressed.len() as u64;
        self.body_bytes += request_bytes;
        let started = Instant::now();
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(posmon_protocol::TERMINAL_HEADER, &self.config.terminal_id)
            // No content-type: JSON is the collector's only format, and every byte counts.
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .body(compressed)
            .send()
            .await;
        let connection = self.https_connection_bytes();
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                // At least the attempt to connect (whatever else happened is not known).
                self.https_traffic = self
                    .https_traffic
                    .saturating_add(connection)
                    .saturating_add(https_exchange_bytes(request_bytes, 0));
                return Answer::Failed(format!(
                    "cannot reach the collector: {}",
                    error_chain(&error)
                ));
            }
        };
        let status = response.status();
        let told = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry_after(value, SystemTime::now()));
        let body = read_answer(response, MAX_ANSWER_BYTES).await;
        let answer_bytes = body.as_ref().map_or(MAX_ANSWER_BYTES, Vec::len) as u64;
        self.https_traffic = self
            .https_traffic
            .saturating_add(connection)
            .saturating_add(https_exchange_bytes(request_bytes, answer_bytes));
        let body = match body {
            Ok(body) => body,
            Err(problem) => return Answer::Failed(problem),
        };
        classify(status, told, &body, started.elapsed())
    }

    /// The estimated bytes of the connection under the next HTTPS request: the keepalives of
    /// an idle kept connection since the last request, or, when the pool has let it go, the old
    /// one's close and idle keepalives, a name lookup, a TCP handshake and a TLS handshake.
    fn https_connection_bytes(&mut self) -> u64 {
        let now = Instant::now();
        let previous = self.last_https.replace(now);
        let keepalives = |idle: Duration| {
            (idle.as_secs() / TCP_KEEPALIVE.as_secs()).saturating_mul(TCP_KEEPALIVE_BYTES)
        };
        match previous {
            Some(at) if now.duration_since(at) < POOL_IDLE => keepalives(now.duration_since(at)),
            previous => {
                let closed = previous.map_or(0, |_| TCP_CLOSE_BYTES + keepalives(POOL_IDLE));
                closed + https_connection_setup_bytes(self.url.scheme() == "https")
            }
        }
    }
}

/// How [`read_answer`]'s error for an answer above its limit begins.
pub(crate) const ANSWER_TOO_LARGE: &str = "the answer is larger than";

/// Reads an answer's body, at most `limit` bytes: a larger one is an error, never an
/// allocation of whatever size the collector announces or sends.
pub(crate) async fn read_answer(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let too_large = || format!("{ANSWER_TOO_LARGE} {limit} bytes");
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len().saturating_add(chunk.len()) > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(format!("the answer broke off: {}", error_chain(&error))),
        }
    }
}

/// The most refused reports kept on disk.
const REJECTED_KEPT_MAX: usize = 20;

fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    if files.len() <= keep {
        return;
    }
    files.sort();
    for path in &files[..files.len() - keep] {
        let _ = std::fs::remove_file(path);
    }
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The kept HTTPS connection's idle life and keepalive period (reqwest's pool and TCP).
const POOL_IDLE: Duration = Duration::from_secs(600);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

// The HTTPS traffic estimate: what reqwest does not show, in IP bytes (IPv4; IPv6 adds 20 a
// packet). Measured orders of magnitude, not exact figures: the collector's certificate chain
// alone moves the TLS handshake between 3 and 6 KB.
/// SYN and SYN-ACK with their options, and the ACK.
const TCP_HANDSHAKE_BYTES: u64 = 60 + 60 + 52;
/// FIN and ACK each way.
const TCP_CLOSE_BYTES: u64 = 4 * 52;
/// A TLS 1.3 handshake with a chain of two certificates (no resumption).
const TLS_HANDSHAKE_BYTES: u64 = 5_000;
/// A keepalive probe and its ACK.
pub(crate) const TCP_KEEPALIVE_BYTES: u64 = 2 * 52;
/// The request line and headers (bearer token, terminal, encoding) and the response's.
const HTTP_HEADER_BYTES: u64 = 450;
/// Payload per TCP segment, and each packet's IP, TCP (with timestamps) and TLS record bytes.
const SEGMENT_PAYLOAD_BYTES: u64 = 1_400;
const PACKET_OVERHEAD_BYTES: u64 = 52 + 22;

/// The estimated IP bytes of opening a connection to the collector: its name looked up, the TCP
/// handshake and, over TLS, the TLS handshake.
pub(crate) fn https_connection_setup_bytes(tls: bool) -> u64 {
    let handshake = if tls { TLS_HANDSHAKE_BYTES } else { 0 };
    LOOKUP_BYTES + TCP_HANDSHAKE_BYTES + handshake
}

/// The estimated IP bytes of one HTTPS request and its answer over an open connection: the
/// bodies and headers, each direction's packets with their headers, and one ACK each way.
pub fn https_exchange_bytes(request_body: u64, answer_body: u64) -> u64 {
    let outgoing = request_body.saturating_add(HTTP_HEADER_BYTES / 2);
    let incoming = answer_body.saturating_add(HTTP_HEADER_BYTES / 2);
    let packets =
        outgoing.div_ceil(SEGMENT_PAYLOAD_BYTES) + incoming.div_ceil(SEGMENT_PAYLOAD_BYTES) + 2;
    outgoing
        .saturating_add(incoming)
        .saturating_add(packets.saturating_mul(PACKET_OVERHEAD_BYTES))
}

/// The datagram client for `config`, towards the collector URL's host and port (or
/// `datagram_port`). None when the token cannot be named in a datagram: HTTPS only.
fn datagram_client(config: &DeliveryConfig, url: &reqwest::Url) -> Option<DatagramClient> {
    let host = url.host_str()?;
    let port = config
        .datagram_port
        .or_else(|| url.port_or_known_default())?;
    match DatagramClient::new(&config.terminal_id, &config.token, host, port) {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::debug!(%error, "No report datagrams with this token: HTTPS only.");
            None
        }
    }
}

/// `{"reports":[…]}` from the spooled JSON payloads, without decoding them.
pub fn batch_body(batch: &[Pending]) -> Vec<u8> {
    let size: usize = batch.iter().map(|pending| pending.payload.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 16);
    body.extend_from_slice(b"{\"reports\":[");
    for (index, pending) in batch.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&pending.payload);
    }
    body.extend_from_slice(b"]}");
    body
}

pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 3),
        flate2::Compression::best(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

/// The index of the batch entry a field path like `reports[3].labels` names.
fn report_index(field: &str) -> Option<usize> {
    field
        .strip_prefix("reports[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

fn classify(
    status: StatusCode,
    told: Option<Duration>,
    body: &[u8],
    round_trip: Duration,
) -> Answer {
    if status.is_success() {
        return match serde_json::from_slice::<BatchAck>(body) {
            Ok(ack) => Answer::Acknowledged(ack, round_trip),
            Err(error) => Answer::Failed(format!("the answer is not an acknowledgement: {error}")),
        };
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        return Answer::SlowDown(told);
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Answer::TooLarge;
    }
    let error = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|body| body.error);
    let message = match &error {
        Some(error) => format!(
            "{status} {}: {}{}",
            error.reason,
            error
                .field
                .as_deref()
                .map(|f| format!("{f}: "))
                .unwrap_or_default(),
            error.message
        ),
        None => format!(
            "{status}: {}",
            String::from_utf8_lossy(body)
                .chars()
                .take(300)
                .collect::<String>()
        ),
    };
    if status == StatusCode::BAD_REQUEST {
        if let Some(index) = error
            .as_ref()
            .and_then(|error| error.field.as_deref())
            .and_then(report_index)
        {
            return Answer::BadReport { index, message };
        }
        if error
            .as_ref()
            .is_some_and(|error| error.field.as_deref() == Some("reports"))
        {
            return Answer::TooLarge;
        }
    }
    Answer::Failed(message)
}

/// NTP-style: the collector stamped its answer at about the midpoint of the exchange, so the
/// offset is local midpoint minus collector time, uncertain by half the round trip.
pub fn estimate_clock(
    sent_at: OffsetDateTime,
    round_trip: Duration,
    collector_time: OffsetDateTime,
) -> ClockStatus {
    // Saturating: the collector's time is not trusted (year 9999 or -9999 must not panic).
    let half = time::Duration::try_from(round_trip / 2).unwrap_or(time::Duration::MAX);
    let midpoint = sent_at.saturating_add(half);
    let offset = midpoint - collector_time;
    // A clock further off than the protocol carries is reported as that far off: an absurd
    // collector time must not make every later report invalid (and set aside).
    let bounded = |milliseconds: f64| milliseconds.clamp(-CLOCK_OFFSET_MAX_MS, CLOCK_OFFSET_MAX_MS);
    ClockStatus {
        offset_ms: bounded(offset.as_seconds_f64() * 1000.0),
        uncertainty_ms: bounded(round_trip.as_secs_f64() * 1000.0 / 2.0),
        ntp_synchronized: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn an_absurd_collector_time_gives_an_offset_the_protocol_accepts() {
        let sent = datetime!(2026-11-26 02:00:00 UTC);
        for collector_time in [
            datetime!(9999-12-31 23:59:59 UTC),
            datetime!(-9999-01-01 00:00:00 UTC),
            datetime!(1970-01-01 00:00:00 UTC),
        ] {
            let clock = estimate_clock(sent, Duration::from_secs(u64::MAX), collector_time);
            assert!(
                clock.offset_ms.abs() <= CLOCK_OFFSET_MAX_MS
                    && clock.uncertainty_ms <= CLOCK_OFFSET_MAX_MS,
                "{collector_time}: {clock:?}"
            );
        }
    }

    #[test]
    fn the_clock_offset_is_taken_at_the_midpoint() {
        let sent = datetime!(2026-11-26 02:00:00 UTC);
        let clock = estimate_clock(
            sent,
            Duration::from_millis(200),
            datetime!(2026-11-26 01:59:58.100 UTC),
        );
        assert!((clock.offset_ms - 2000.0).abs() < 1e-6, "{clock:?}");
        assert!((clock.uncertainty_ms - 100.0).abs() < 1e-6);
    }

    fn check(status: u16, body: &str, expected: Answer) {
        let status = StatusCode::from_u16(status).unwrap();
        assert_eq!(
            classify(status, None, body.as_bytes(), Duration::ZERO),
            expected,
            "{status} {body}"
        );
    }

    #[test]
    fn answers_are_classified() {
        let ack = BatchAck {
            terminal_id: "T-1".into(),
            acknowledged_sequence: 9,
            collector_time: datetime!(2026-11-26 02:00 UTC),
            heartbeats: true,
            config: None,
            probe_request: None,
        };
        check(
            200,
            &serde_json::to_string(&ack).unwrap(),
            Answer::Acknowledged(ack, Duration::ZERO),
        );
        check(200, "{}", Answer::Failed("the answer is not an acknowledgement: missing field `terminal_id` at line 1 column 2".into()));
        check(429, "", Answer::SlowDown(None));
        check(503, "busy", Answer::SlowDown(None));
        check(413, "", Answer::TooLarge);
        check(
            400,
            r#"{"error":{"reason":"invalid_field","field":"reports[2].labels.region","message":"too long"}}"#,
            Answer::BadReport {
                index: 2,
                message: "400 Bad Request invalid_field: reports[2].labels.region: too long".into(),
            },
        );
        check(
            400,
            r#"{"error":{"reason":"invalid_field","field":"reports","message":"too many reports (9 > 5)"}}"#,
            Answer::TooLarge,
        );
        check(
            401,
            r#"{"error":{"reason":"invalid_token","message":"token is malformed"}}"#,
            Answer::Failed("401 Unauthorized invalid_token: token is malformed".into()),
        );
        check(
            500,
            "boom",
            Answer::Failed("500 Internal Server Error: boom".into()),
        );
    }

    #[test]
    fn https_traffic_is_estimated_from_bodies_headers_and_packets() {
        // (request body, answer body) → IP bytes: the bodies, half the headers each way, a
        // packet per 1 400 bytes each way plus an ACK each way, 74 bytes a packet.
        for (request, answer, expected) in [
            (0, 0, 450 + 4 * 74),
            (2_000, 120, 2_120 + 450 + 5 * 74),
            (1_175, 1_175, 2_350 + 450 + 4 * 74),
            (1_176, 0, 1_176 + 450 + 5 * 74),
            (u64::MAX, u64::MAX, u64::MAX),
        ] {
            assert_eq!(
                https_exchange_bytes(request, answer),
                expected,
                "{request} {answer}"
            );
        }
    }

    #[test]
    fn a_new_connection_costs_its_handshakes_and_a_kept_one_its_keepalives() {
        let directory = std::env::temp_dir();
        let config = |url: &str| DeliveryConfig {
            collector_url: url.into(),
            terminal_id: "T-1".into(),
            token: "k1.x".into(),
            request_timeout: Duration::from_secs(1),
            max_batch_reports: 1,
            max_batch_bytes: 1024,
            ca_file: None,
            client_certificate: None,
            rejected_dir: directory.clone(),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(1),
            transport: Transport::Https,
            datagram_port: None,
        };
        let mut plain = Deliverer::new(config("http://127.0.0.1:1")).unwrap();
        assert_eq!(
            plain.https_connection_bytes(),
            LOOKUP_BYTES + TCP_HANDSHAKE_BYTES
        );
        // Kept: nothing idle yet.
        assert_eq!(plain.https_connection_bytes(), 0);
        let mut secure = Deliverer::new(config("https://127.0.0.1:1")).unwrap();
        assert_eq!(
            secure.https_connection_bytes(),
            LOOKUP_BYTES + TCP_HANDSHAKE_BYTES + TLS_HANDSHAKE_BYTES
        );
        // Long idle: the old connection's keepalives and close, then a new one.
        secure.last_https = Instant::now().checked_sub(POOL_IDLE * 2);
        assert_eq!(
            secure.https_connection_bytes(),
            TCP_CLOSE_BYTES
                + 10 * TCP_KEEPALIVE_BYTES
                + LOOKUP_BYTES
                + TCP_HANDSHAKE_BYTES
                + TLS_HANDSHAKE_BYTES
        );
    }

    #[test]
    fn a_batch_body_is_the_payloads_in_order() {
        let batch = [
            Pending {
                sequence: 1,
                payload: b"{\"a\":1}".to_vec(),
            },
            Pending {
                sequence: 2,
                payload: b"{\"b\":2}".to_vec(),
            },
        ];
        assert_eq!(batch_body(&batch), b"{\"reports\":[{\"a\":1},{\"b\":2}]}");
        assert_eq!(batch_body(&[]), b"{\"reports\":[]}");
        let compressed = gzip(&batch_body(&batch)).unwrap();
        let mut decoded = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut decoded,
        )
        .unwrap();
        assert_eq!(decoded, "{\"reports\":[{\"a\":1},{\"b\":2}]}");
    }
}
