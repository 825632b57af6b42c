//! Delivery: sends spooled reports to the collector, oldest first, in bounded gzip-compressed
//! batches over one kept-alive connection, and forgets them only once acknowledged.
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

use crate::backoff::{full_jitter, retry_after, Jitter};
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
}

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
}

fn read(path: &Path) -> Result<Vec<u8>, DeliveryError> {
    std::fs::read(path).map_err(|source| DeliveryError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl Deliverer {
    pub fn new(config: DeliveryConfig) -> Result<Self, DeliveryError> {
        let url = reqwest::Url::parse(&config.collector_url)
            .and_then(|base| base.join(posmon_protocol::REPORTS_PATH))
            .map_err(|error| DeliveryError::Url(error.to_string()))?;
        let mut builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            // One connection, kept: a new TLS handshake costs more bytes than many reports.
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(600))
            .tcp_keepalive(Duration::from_secs(60))
            // A report goes to the configured collector only: never where an answer points.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.ca_file {
            let bundle = read(path)?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&bundle).map_err(|source| {
                    DeliveryError::Pem {
                        path: path.clone(),
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
        if let Some((certificate, key)) = &config.client_certificate {
            let mut pem = read(certificate)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity =
                reqwest::Identity::from_pem(&pem).map_err(|source| DeliveryError::Pem {
                    path: certificate.clone(),
                    what: "client certificate and key",
                    source,
                })?;
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(DeliveryError::Client)?;
        let authorization = format!("Bearer {}", config.token);
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
        })
    }

    /// The clock offset from the latest acknowledgement, for the next report.
    pub fn clock(&self) -> Option<ClockStatus> {
        self.clock.clone()
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

    /// Sends batches until the spool is drained or the collector cannot take more now.
    pub async fn deliver(&mut self, spool: &mut Spool) -> Result<Outcome, SpoolError> {
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
                    let round_trip_time =
                        time::Duration::try_from(round_trip).unwrap_or(time::Duration::MAX);
                    let sent_at = OffsetDateTime::now_utc().saturating_sub(round_trip_time);
                    self.clock = Some(estimate_clock(sent_at, round_trip, ack.collector_time));
                    if ack.acknowledged_sequence > last {
                        // The collector holds a higher mark for this instance than this spool
                        // issued, so it took these reports for repeats and applied none of
                        // them: another device with this token and instance, or a forged
                        // report, pinned the mark. A new instance makes the collector start
                        // the terminal's sequences anew; what was not applied is counted as
                        // dropped, never taken as delivered.
                        tracing::error!(
                            acknowledged = ack.acknowledged_sequence,
                            sent = last,
                            "The collector holds sequences above those this agent issued; starting a new agent instance."
                        );
                        spool.start_anew()?;
                        return Ok(Outcome::RetryAfter(Duration::ZERO));
                    }
                    spool.acknowledge(ack.acknowledged_sequence)?;
                    if ack.acknowledged_sequence < last {
                        // The collector holds less than it was sent: do not loop on it.
                        tracing::warn!(
                            acknowledged = ack.acknowledged_sequence,
                            sent = last,
                            "The collector acknowledged fewer reports than were sent; retrying later."
                        );
                        return Ok(Outcome::RetryAfter(self.backoff()));
                    }
                    // Only a whole acknowledgement ends a run of failures: one that keeps
                    // taking part of each batch must not keep the retries at their fastest.
                    self.failures = 0;
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
        self.body_bytes += compressed.len() as u64;
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
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return Answer::Failed(format!(
                    "cannot reach the collector: {}",
                    error_chain(&error)
                ))
            }
        };
        let status = response.status();
        let told = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry_after(value, SystemTime::now()));
        let body = match read_answer(response, MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            Err(problem) => return Answer::Failed(problem),
        };
        classify(status, told, &body, started.elapsed())
    }
}

/// Reads an answer's body, at most `limit` bytes: a larger one is an error, never an
/// allocation of whatever size the collector announces or sends.
async fn read_answer(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("the answer is larger than {limit} bytes");
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

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
