//! Delivery of report batches to the collector over HTTP(S), and the clock offset estimated from
//! each exchange.

use std::time::{Duration, Instant};

use posmon_protocol::{BatchAck, ClockStatus, ErrorBody, ReportBatch};
use time::OffsetDateTime;

use crate::config::AgentConfig;

/// The most bytes of an error answer kept for the log.
const ERROR_BODY_MAX_CHARS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("invalid collector_url: {0}")]
    Url(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("cannot reach the collector: {0}")]
    Transport(reqwest::Error),
    #[error("the collector refused the reports ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the collector's answer is not an acknowledgement: {0}")]
    BadAnswer(String),
}

pub struct Pusher {
    client: reqwest::Client,
    url: reqwest::Url,
    authorization: String,
}

/// An acknowledged delivery.
pub struct Delivered {
    pub ack: BatchAck,
    /// The clock offset estimated from this exchange.
    pub clock: ClockStatus,
}

impl Pusher {
    pub fn new(config: &AgentConfig, token: &str) -> Result<Self, PushError> {
        let url = reqwest::Url::parse(&config.collector_url)
            .and_then(|base| base.join(posmon_protocol::REPORTS_PATH))
            .map_err(|error| PushError::Url(error.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout())
            .connect_timeout(config.request_timeout())
            .user_agent(concat!("posmon-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(PushError::Client)?;
        Ok(Pusher {
            client,
            url,
            authorization: format!("Bearer {token}"),
        })
    }

    pub async fn push(&self, batch: &ReportBatch) -> Result<Delivered, PushError> {
        let sent_at = OffsetDateTime::now_utc();
        let started = Instant::now();
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .json(batch)
            .send()
            .await
            .map_err(PushError::Transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(PushError::Transport)?;
        let round_trip = started.elapsed();
        if !status.is_success() {
            let message = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(error) => match error.error.field {
                    Some(field) => {
                        format!("{}: {field}: {}", error.error.reason, error.error.message)
                    }
                    None => format!("{}: {}", error.error.reason, error.error.message),
                },
                Err(_) => String::from_utf8_lossy(&body)
                    .chars()
                    .take(ERROR_BODY_MAX_CHARS)
                    .collect(),
            };
            return Err(PushError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        let ack: BatchAck = serde_json::from_slice(&body)
            .map_err(|error| PushError::BadAnswer(error.to_string()))?;
        let clock = estimate_clock(sent_at, round_trip, ack.collector_time);
        Ok(Delivered { ack, clock })
    }
}

/// NTP-style: the collector stamped its answer at about the midpoint of the exchange, so the
/// offset is local midpoint minus collector time, uncertain by half the round trip.
pub fn estimate_clock(
    sent_at: OffsetDateTime,
    round_trip: Duration,
    collector_time: OffsetDateTime,
) -> ClockStatus {
    let midpoint = sent_at + round_trip / 2;
    let offset = midpoint - collector_time;
    ClockStatus {
        offset_ms: offset.as_seconds_f64() * 1000.0,
        uncertainty_ms: round_trip.as_secs_f64() * 1000.0 / 2.0,
        ntp_synchronized: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

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
}
