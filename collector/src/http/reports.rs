//! `POST /api/v1/reports`: limits, decode, validate, authenticate, diagnose, apply, acknowledge;
//! and the one ingest path that HTTP batches and report datagrams (`crate::datagram`) share
//! once their bytes are in hand and their sender is known: [`ingest_json`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use posmon_protocol::datagram::Refusal as DatagramRefusal;
use posmon_protocol::{
    validate_batch, BatchAck, CredentialError, Report, ReportBatch, Section, SCHEMA_VERSION,
};
use serde::Deserialize;
use time::OffsetDateTime;

use super::admission::{self, Claim, InFlight};
use super::encoding::{decode as decode_body, EncodingError};
use super::error::{ApiError, Reason};
use super::AppState;
use crate::fleet::{connect_latency, Fleet};
use posmon_diagnosis::{diagnose, Policy};

pub async fn post_reports(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let mut admitted = match admit(&state, &headers) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.respond(&state),
    };
    let outcome = ingest(&state, &headers, body, &mut admitted).await;
    drop(admitted);
    state
        .metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    match outcome {
        Ok(ack) => Json(ack).into_response(),
        Err(refusal) => refusal.respond(&state),
    }
}

/// A request let in: its slot, and the terminal it counts against once that is known.
struct Admitted {
    /// The terminal the header names (its token already checked); `None` without the header.
    claimed: Option<String>,
    in_flight: Option<InFlight>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// A refused request: the error, and when to come back for the ones that are not final.
pub(crate) struct Refusal {
    error: ApiError,
    retry_after_seconds: Option<u64>,
    /// What a datagram sender is told, where the error's reason does not say it.
    datagram: Option<DatagramRefusal>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal {
            error,
            retry_after_seconds: None,
            datagram: None,
        }
    }
}

impl Refusal {
    pub(super) fn respond(self, state: &AppState) -> Response {
        // Every overload says when to come back, whichever step found it.
        let overloaded = matches!(
            self.error.reason,
            Reason::Overloaded | Reason::OverloadedUnidentified
        );
        let retry_after_seconds = self
            .retry_after_seconds
            .or_else(|| overloaded.then_some(state.config.limits.overload_retry_after_seconds));
        let mut response = refused(state, self.error);
        if let Some(seconds) = retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// Decides, from the headers alone, whether a request may take an ingest slot: a request that
/// names its terminal has its token checked and its terminal's limits applied first, then takes
/// a slot of the main pool; one without the header takes a slot of the small pool of its own
/// (its token is checked once the body says which terminal it is).
fn admit(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Admitted, Refusal> {
    match terminal_claim(headers)? {
        Claim::Unidentified => {
            let Ok(permit) = Arc::clone(&state.unidentified_permits).try_acquire_owned() else {
                return Err(overloaded(state, Reason::OverloadedUnidentified));
            };
            Ok(Admitted {
                claimed: None,
                in_flight: None,
                _permit: permit,
            })
        }
        Claim::Terminal(terminal_id) => {
            let token = bearer_token(headers)?;
            verify(state, token, &terminal_id)?;
            // Shed load rather than queue it: a permit per request in flight, none to wait for.
            // Taken before the terminal's own limits, so that a request shed for the
            // collector's load does not spend the terminal's rate.
            let Ok(permit) = Arc::clone(&state.ingest_permits).try_acquire_owned() else {
                return Err(overloaded(state, Reason::Overloaded));
            };
            let in_flight = enter(state, &terminal_id)?;
            Ok(Admitted {
                claimed: Some(terminal_id),
                in_flight: Some(in_flight),
                _permit: permit,
            })
        }
    }
}

/// The terminal a request names in its header, if any (a malformed header is a 400).
pub(crate) fn terminal_claim(headers: &HeaderMap) -> Result<Claim, ApiError> {
    admission::claim(
        headers
            .get(posmon_protocol::TERMINAL_HEADER)
            .map(header::HeaderValue::as_bytes),
    )
    .map_err(|problem| {
        ApiError::field(
            Reason::InvalidField,
            posmon_protocol::TERMINAL_HEADER,
            problem,
        )
    })
}

/// Counts a request against its authenticated terminal's limits.
fn enter(state: &Arc<AppState>, terminal_id: &str) -> Result<InFlight, Refusal> {
    enter_in(&state.fairness, state, terminal_id)
}

/// Counts a request against its authenticated terminal's limits in `fairness`.
pub(super) fn enter_in(
    fairness: &Arc<admission::Fairness>,
    state: &AppState,
    terminal_id: &str,
) -> Result<InFlight, Refusal> {
    fairness
        .enter(terminal_id, Instant::now())
        .map_err(|refusal| match refusal {
            admission::Refusal::Busy => Refusal {
                error: ApiError::new(
                    Reason::TerminalBusy,
                    format!(
                        "terminal {terminal_id:?} has {} report requests in flight already",
                        state.config.limits.max_concurrent_ingest_per_terminal
                    ),
                ),
                retry_after_seconds: Some(1),
                datagram: None,
            },
            admission::Refusal::RateLimited(wait) => {
                let seconds = admission::retry_after_seconds(wait);
                Refusal {
                    error: ApiError::new(
                        Reason::RateLimited,
                        format!(
                            "terminal {terminal_id:?} sends more than {} report requests a minute; retry after {seconds} s",
                            state.config.limits.terminal_requests_per_minute
                        ),
                    ),
                    retry_after_seconds: Some(seconds),
                    datagram: None,
                }
            }
        })
}

pub(super) fn verify(state: &AppState, token: &str, terminal_id: &str) -> Result<(), ApiError> {
    state
        .keyring
        .verify(token, terminal_id)
        .map_err(|error| match error {
            CredentialError::WrongTerminal(_) => ApiError::new(
                Reason::WrongTerminal,
                format!("the token is not valid for terminal {terminal_id:?}"),
            ),
            other => ApiError::new(Reason::InvalidToken, other.to_string()),
        })
}

/// Fills the sections a report marks `unchanged` from the report before it: the previous one in
/// the batch, or what the terminal last reported.
fn fill_unchanged(fleet: &Fleet, terminal_id: &str, reports: &mut [Report]) {
    if reports.iter().all(|report| report.unchanged.is_empty()) {
        return;
    }
    let (mut labels, mut software) = fleet.identity(terminal_id).unwrap_or_default();
    for report in reports {
        if report.unchanged.contains(&Section::Labels) {
            report.labels = labels.clone();
        } else {
            labels = report.labels.clone();
        }
        if report.unchanged.contains(&Section::Software) {
            report.software = software.clone();
        } else {
            software = report.software.clone();
        }
    }
}

/// Once a terminal's agent names its instance, a report without one is refused: it can only
/// come from an older agent than the one the terminal has, or from somebody with its token
/// trying to move its sequence mark without knowing the instance.
fn require_instance(fleet: &Fleet, terminal_id: &str, reports: &[Report]) -> Result<(), ApiError> {
    let Some(index) = reports
        .iter()
        .position(|report| report.agent_instance.is_none())
    else {
        return Ok(());
    };
    match fleet.agent_instance(terminal_id) {
        Some(instance) => Err(ApiError::field(
            Reason::InvalidField,
            format!("reports[{index}].agent_instance"),
            format!(
                "terminal {terminal_id:?} reports with agent instance {instance:?}; a report without one is refused"
            ),
        )),
        None => Ok(()),
    }
}

/// How long a durable acknowledgement waits for the write before answering 503.
const DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// 503 with `Retry-After`: the pool of slots (`reason`) is full.
fn overloaded(state: &AppState, reason: Reason) -> Refusal {
    let seconds = state.config.limits.overload_retry_after_seconds;
    Refusal {
        error: ApiError::new(
            reason,
            format!("too many report requests at once; retry after {seconds} s"),
        ),
        retry_after_seconds: Some(seconds),
        datagram: None,
    }
}

/// The answer to a refused request, counted by reason.
fn refused(state: &AppState, error: ApiError) -> Response {
    state
        .metrics
        .rejected_requests
        .with_label_values(&[error.reason.as_str()])
        .inc();
    tracing::debug!(reason = error.reason.as_str(), message = %error.message, "Refused a report request.");
    error.into_response()
}

async fn ingest(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    admitted: &mut Admitted,
) -> Result<BatchAck, Refusal> {
    check_content_type(headers)?;
    let token = bearer_token(headers)?;
    let limit = state.config.limits.max_body_bytes;
    let deadline = Duration::from_secs(state.config.limits.body_read_timeout_seconds);
    let bytes = tokio::time::timeout(deadline, read_body(headers, body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                Reason::BodyTimeout,
                format!(
                    "the request body did not arrive within {} s",
                    deadline.as_secs()
                ),
            )
        })??;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("(not text)"));
    let bytes = decode_body(encoding, bytes.to_vec(), limit).map_err(|error| {
        let reason = match error {
            EncodingError::Unsupported(_) => Reason::UnsupportedMediaType,
            EncodingError::TooLarge(_) => Reason::BodyTooLarge,
            EncodingError::Corrupt { .. } => Reason::BadEncoding,
        };
        ApiError::new(reason, error.to_string())
    })?;
    let sender = match &admitted.claimed {
        Some(terminal_id) => Sender::Named(terminal_id),
        None => Sender::Unidentified {
            token,
            in_flight: &mut admitted.in_flight,
        },
    };
    ingest_json(state, &bytes, sender).await
}

/// Who sent a body, as far as that is known before it is decoded.
pub(crate) enum Sender<'a> {
    /// An HTTP request that named its terminal in the header, its token checked.
    Named(&'a str),
    /// An HTTP request without the header (an agent from before it): authenticated by `token`
    /// once the batch says which terminal it is, and counted against that terminal from then on.
    Unidentified {
        token: &'a str,
        in_flight: &'a mut Option<InFlight>,
    },
    /// A report datagram that authenticated under this terminal's key.
    Datagram(&'a str),
}

/// The one ingest path of HTTP batches and report datagrams: decode → validate → time window →
/// one terminal → (late authentication) → agent instance → fill unchanged → diagnose → apply →
/// (durable write) → acknowledge.
pub(crate) async fn ingest_json(
    state: &Arc<AppState>,
    bytes: &[u8],
    sender: Sender<'_>,
) -> Result<BatchAck, Refusal> {
    let mut batch = decode(bytes).map_err(Refusal::from)?;
    if matches!(sender, Sender::Datagram(_)) && batch.reports.len() != 1 {
        // Its JSON was spliced into a batch: it must not have spliced in more.
        return Err(ApiError::field(
            Reason::InvalidField,
            "reports",
            "a datagram carries exactly one report",
        )
        .into());
    }
    validate_batch(&batch, state.config.limits.max_reports_per_request).map_err(|error| {
        let reason = if error.unsupported_schema {
            Reason::UnsupportedSchemaVersion
        } else {
            Reason::InvalidField
        };
        ApiError::field(reason, error.field, error.problem)
    })?;
    crate::ingest_guard::admit_times(
        &mut batch.reports,
        OffsetDateTime::now_utc(),
        &state.config.limits,
    )
    .map_err(|error| ApiError::field(Reason::InvalidField, error.field, error.problem))?;
    let terminal_id = match &sender {
        Sender::Named(terminal_id) | Sender::Datagram(terminal_id) => terminal_id.to_string(),
        Sender::Unidentified { .. } => batch.reports[0].terminal_id.clone(),
    };
    if let Some(index) = batch
        .reports
        .iter()
        .position(|report| report.terminal_id != terminal_id)
    {
        let message = match &sender {
            Sender::Named(_) => format!(
                "every report must carry the terminal id of the {} header ({terminal_id:?})",
                posmon_protocol::TERMINAL_HEADER
            ),
            Sender::Datagram(_) => format!(
                "the report must carry the terminal id of the datagram's header ({terminal_id:?})"
            ),
            Sender::Unidentified { .. } => {
                format!("a batch carries the reports of one terminal ({terminal_id:?})")
            }
        };
        return Err(ApiError::field(
            Reason::InvalidField,
            format!("reports[{index}].terminal_id"),
            message,
        )
        .into());
    }
    match sender {
        Sender::Unidentified { token, in_flight } => {
            // An agent from before the terminal header: authenticated only now, and counted
            // against its terminal's limits from here on.
            verify(state, token, &terminal_id)?;
            *in_flight = Some(enter(state, &terminal_id)?);
        }
        Sender::Datagram(_) => require_known_instance(&state.fleet, &terminal_id, &batch.reports)?,
        Sender::Named(_) => {}
    }
    require_instance(&state.fleet, &terminal_id, &batch.reports)?;
    fill_unchanged(&state.fleet, &terminal_id, &mut batch.reports);
    // Fleet control, before the reports are consumed: the newest report's labels, the newest
    // settings state a report carries, the probe requests the reports answer.
    let reads_control = {
        let newest = batch.reports.iter().max_by_key(|report| report.sequence);
        let config = batch
            .reports
            .iter()
            .filter(|report| report.config.is_some())
            .max_by_key(|report| report.sequence)
            .and_then(|report| report.config.clone());
        let answered: Vec<(u64, u64)> = batch
            .reports
            .iter()
            .filter_map(|report| report.probe_request.map(|id| (id, report.sequence)))
            .collect();
        newest.is_some_and(|newest| {
            state.control.observe(
                &terminal_id,
                &newest.labels,
                config,
                &answered,
                OffsetDateTime::now_utc(),
            )
        })
    };
    for probe in batch.reports.iter().flat_map(|report| &report.probes) {
        if let Some(milliseconds) = connect_latency(probe) {
            state
                .metrics
                .observe_latency(&terminal_id, &probe.target, milliseconds);
        }
    }
    // The history's points, with each report's sequence: a duplicate adds none.
    let held_sequence = state.fleet.highest_sequence(&terminal_id);
    let history_points: Vec<_> = batch
        .reports
        .iter()
        .map(|report| (report.sequence, crate::history::ReportPoint::of(report)))
        .collect();
    let started = Instant::now();
    let versions = state.version_policy();
    let policy = Policy {
        versions: &versions,
        thresholds: &state.config.diagnosis,
        roles: &state.config.readiness,
    };
    let diagnosed: Vec<_> = batch
        .reports
        .into_iter()
        .map(|report| {
            // A heartbeat runs no rule: the fleet keeps the terminal's findings as they are.
            let signals = if crate::fleet::is_heartbeat(&report) {
                Vec::new()
            } else {
                diagnose(&report, &policy)
            };
            (report, signals)
        })
        .collect();
    let mut outcome = state.fleet.apply_batch(
        &terminal_id,
        diagnosed,
        OffsetDateTime::now_utc(),
        &state.config.diagnosis,
    );
    // The version policy was replaced while this batch was diagnosed under the old one: judge
    // the terminal again under the new one, which the replacement's pass may have done before
    // the old judgement landed.
    let current = state.version_policy();
    if !Arc::ptr_eq(&current, &versions) {
        let policy = Policy {
            versions: &current,
            ..policy
        };
        outcome.events.extend(state.fleet.rejudge_versions_of(
            &terminal_id,
            &policy,
            OffsetDateTime::now_utc(),
            &state.config.diagnosis,
        ));
    }
    state
        .metrics
        .diagnosis_duration
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .reports
        .with_label_values(&["applied"])
        .inc_by(outcome.applied);
    state
        .metrics
        .reports
        .with_label_values(&["duplicate"])
        .inc_by(outcome.duplicates);
    state
        .metrics
        .agent_dropped_reports
        .inc_by(outcome.dropped_reports);
    crate::ingest_guard::note_sequence_resets(
        &state.metrics,
        &terminal_id,
        &outcome.sequence_resets,
        OffsetDateTime::now_utc(),
    );
    if outcome.applied > 0 {
        state.history.record(crate::history::Message::Reports {
            readiness: state
                .fleet
                .readiness_of(&terminal_id, &state.config.readiness),
            terminal: Arc::from(terminal_id.as_str()),
            received_at: OffsetDateTime::now_utc().unix_timestamp(),
            points: history_points
                .into_iter()
                .filter(|(sequence, _)| outcome.duplicates == 0 || *sequence > held_sequence)
                .map(|(_, point)| point)
                .collect(),
        });
    }
    let acknowledged_sequence = outcome.highest_sequence;
    state.publish(outcome.events);
    if state.config.state.durable_acknowledgements {
        let ticket = state.durability.ticket();
        if !state.durability.wait_written(ticket, DURABLE_WAIT).await {
            // Applied but not yet on disk: the agent keeps the reports and sends them again;
            // they are duplicates by then, acknowledged once written.
            return Err(Refusal {
                datagram: Some(DatagramRefusal::NotWritten),
                ..Refusal::from(ApiError::new(
                    Reason::Overloaded,
                    "the reports could not be written in time; retry",
                ))
            });
        }
    }
    // What the acknowledgement asks of an agent that reads it: the settings version to fetch,
    // the probe request waiting for it.
    let control = if reads_control {
        state.control.answer(&terminal_id)
    } else {
        posmon_protocol::control::ControlAnswer::default()
    };
    // Milliseconds: finer than any clock offset a terminal can estimate, and shorter on the wire.
    let now = OffsetDateTime::now_utc();
    let collector_time = now - time::Duration::nanoseconds(i64::from(now.nanosecond() % 1_000_000));
    Ok(BatchAck {
        terminal_id,
        acknowledged_sequence,
        collector_time,
        heartbeats: true,
        config: control.config,
        probe_request: control.probe_request,
    })
}

/// A datagram may carry only reports of the agent instance the collector already holds for
/// its terminal: a new instance restarts the terminal's sequences, and that must come by HTTPS,
/// where it cannot be replayed (a datagram captured from an earlier instance could otherwise
/// move the sequence mark back).
fn require_known_instance(
    fleet: &Fleet,
    terminal_id: &str,
    reports: &[Report],
) -> Result<(), Refusal> {
    let known = fleet.agent_instance(terminal_id);
    let Some(index) = reports
        .iter()
        .position(|report| known.is_none() || report.agent_instance.as_deref() != known.as_deref())
    else {
        return Ok(());
    };
    Err(Refusal {
        datagram: Some(DatagramRefusal::NewInstance),
        ..Refusal::from(ApiError::field(
            Reason::InvalidField,
            format!("reports[{index}].agent_instance"),
            "a report of an agent instance the collector does not hold yet goes by HTTPS",
        ))
    })
}

/// An authenticated report datagram's place: a slot of the main ingest pool and its terminal's
/// share (the same limits as its HTTP requests), held while it is ingested.
pub(crate) struct DatagramSlot {
    _in_flight: InFlight,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Takes an ingest slot for a datagram of `terminal_id` (already authenticated), or says why
/// not: the terminal's datagram limits, apart from its HTTPS ones.
pub(crate) fn admit_datagram(
    state: &Arc<AppState>,
    terminal_id: &str,
) -> Result<DatagramSlot, DatagramRefusal> {
    let Ok(permit) = Arc::clone(&state.ingest_permits).try_acquire_owned() else {
        return Err(DatagramRefusal::Overloaded);
    };
    let in_flight = enter_in(&state.datagram_fairness, state, terminal_id)
        .map_err(|refusal| datagram_refusal(&refusal))?;
    Ok(DatagramSlot {
        _in_flight: in_flight,
        _permit: permit,
    })
}

/// Ingests one authenticated report datagram's JSON through the one ingest path.
pub(crate) async fn ingest_datagram(
    state: &Arc<AppState>,
    terminal_id: &str,
    report_json: &[u8],
) -> Result<BatchAck, DatagramRefusal> {
    // As a batch of one, so that every error names its field as it would over HTTP.
    let mut batch = Vec::with_capacity(report_json.len() + 16);
    batch.extend_from_slice(b"{\"reports\":[");
    batch.extend_from_slice(report_json);
    batch.extend_from_slice(b"]}");
    ingest_json(state, &batch, Sender::Datagram(terminal_id))
        .await
        .map_err(|refusal| {
            tracing::debug!(reason = refusal.error.reason.as_str(), message = %refusal.error.message, "Refused a report datagram.");
            datagram_refusal(&refusal)
        })
}

/// What a datagram sender is told for a refusal: all mean "use HTTPS" to the agent.
fn datagram_refusal(refusal: &Refusal) -> DatagramRefusal {
    if let Some(told) = refusal.datagram {
        return told;
    }
    match refusal.error.reason {
        Reason::RateLimited | Reason::TerminalBusy => DatagramRefusal::RateLimited,
        Reason::Overloaded | Reason::OverloadedUnidentified | Reason::Internal => {
            DatagramRefusal::Overloaded
        }
        _ => DatagramRefusal::Invalid,
    }
}

/// Reads a JSON request body of at most `limit` bytes.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(limit));
    }
    to_bytes(body, limit).await.map_err(|error| {
        if is_length_limit(&error) {
            too_large(limit)
        } else {
            ApiError::new(
                Reason::MalformedJson,
                format!("cannot read request body: {error}"),
            )
        }
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        Reason::BodyTooLarge,
        format!("request body is larger than the limit of {limit} bytes"),
    )
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

pub(super) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let is_json = value
        .to_str()
        .ok()
        .and_then(|text| text.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            Reason::UnsupportedMediaType,
            "content-type must be application/json",
        ))
    }
}

pub(super) fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            Reason::MissingToken,
            "missing Authorization: Bearer <token> header",
        )
    })?;
    value
        .to_str()
        .ok()
        .and_then(|text| text.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                Reason::InvalidToken,
                "Authorization header must be \"Bearer <token>\"",
            )
        })
}

/// Decodes a batch; a type error names the field by its path.
fn decode(bytes: &[u8]) -> Result<ReportBatch, ApiError> {
    // The fast path: most bodies are valid. Only a failure is decoded again, with the path
    // tracking that names the field (it costs a good share of the decoding time).
    if let Ok(batch) = serde_json::from_slice::<ReportBatch>(bytes) {
        return Ok(batch);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let batch: Result<ReportBatch, _> = serde_path_to_error::deserialize(&mut deserializer);
    let batch = match batch {
        Ok(batch) => batch,
        Err(error) => {
            // A report of another schema version may fail to decode as v1: say so rather than
            // naming whichever field differs.
            if let Some(unsupported) = unsupported_schema(bytes) {
                return Err(unsupported);
            }
            let path = error.path().to_string();
            let inner = error.into_inner();
            return Err(match inner.classify() {
                serde_json::error::Category::Data => {
                    let message = strip_position(&inner.to_string());
                    ApiError::field(Reason::InvalidField, path, message)
                }
                _ => ApiError::new(Reason::MalformedJson, format!("malformed JSON: {inner}")),
            });
        }
    };
    deserializer.end().map_err(|error| {
        ApiError::new(Reason::MalformedJson, format!("malformed JSON: {error}"))
    })?;
    Ok(batch)
}

/// serde_json appends " at line L column C"; with the field path given, it is noise.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(position) => message[..position].to_string(),
        None => message.to_string(),
    }
}

fn unsupported_schema(bytes: &[u8]) -> Option<ApiError> {
    #[derive(Deserialize)]
    struct VersionsOnly {
        reports: Vec<VersionOnly>,
    }
    #[derive(Deserialize)]
    struct VersionOnly {
        schema_version: Option<u64>,
    }
    let versions: VersionsOnly = serde_json::from_slice(bytes).ok()?;
    versions
        .reports
        .iter()
        .enumerate()
        .find_map(|(index, report)| match report.schema_version {
            Some(version) if version != u64::from(SCHEMA_VERSION) => Some(ApiError::field(
                Reason::UnsupportedSchemaVersion,
                format!("reports[{index}].schema_version"),
                format!(
                    "unsupported schema version {version} (this collector speaks {SCHEMA_VERSION})"
                ),
            )),
            _ => None,
        })
}
