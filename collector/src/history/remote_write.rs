//! Optional: the history's series also go to a Prometheus-compatible TSDB by remote write
//! (Prometheus remote-write 1.0: a snappy-compressed protobuf `WriteRequest` POSTed to
//! `[history.remote_write] url`), for teams that keep their history there.
//!
//! The history writer hands each batch's samples over a bounded queue ([`RemoteWrite::offer`],
//! which never waits: a full queue drops the samples and counts them); one task sends them in
//! requests of at most `batch_max_samples`, retrying a network error, a 429 or a 5xx with
//! exponential backoff (full jitter, capped at 30 s) up to `max_retries` times, and dropping
//! (counted as failed) what the receiver refuses with another 4xx.
//!
//! Series (timestamps: the report's time for a terminal's, the point's for the trend):
//! `posmon_history_terminal_latency_milliseconds{terminal_id}`,
//! `posmon_history_terminal_loss_ratio{terminal_id}`,
//! `posmon_history_terminal_can_pay{terminal_id}` (1 can pay or at risk, 0 cannot pay; absent
//! while unknown), `posmon_history_fleet_terminals{readiness}`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounterVec;
use serde::Deserialize;
use tokio::sync::mpsc;

/// The protobuf messages of remote-write 1.0 (prometheus/prompb `types.proto` and
/// `remote.proto`), the four this client sends, derived by hand.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// `[history.remote_write]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    /// The receiver's remote-write URL (http or https), e.g.
    /// `http://127.0.0.1:8428/api/v1/write`; none: off.
    pub url: Option<String>,
    /// A file holding a bearer token, relative to `data_dir` unless absolute.
    pub bearer_token_file: Option<PathBuf>,
    /// Basic auth: a user and a file holding the password.
    pub basic_auth_user: Option<String>,
    pub basic_auth_password_file: Option<PathBuf>,
    pub timeout_seconds: u64,
    /// Samples in one request at most.
    pub batch_max_samples: usize,
    /// Samples waiting to be sent at most; beyond, new ones are dropped and counted.
    pub queue_max_samples: usize,
    /// Tries after the first for a request that failed with a network error, 429 or 5xx.
    pub max_retries: u32,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            url: None,
            bearer_token_file: None,
            basic_auth_user: None,
            basic_auth_password_file: None,
            timeout_seconds: 10,
            batch_max_samples: 5000,
            queue_max_samples: 100_000,
            max_retries: 5,
        }
    }
}

impl RemoteWriteConfig {
    /// The key (under `history.remote_write.`) and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if let Some(url) = &self.url {
            match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
                _ => return Err(("url", "must be an http or https URL")),
            }
        }
        if self.bearer_token_file.is_some()
            && (self.basic_auth_user.is_some() || self.basic_auth_password_file.is_some())
        {
            return Err((
                "bearer_token_file",
                "a bearer token and basic auth cannot both be set",
            ));
        }
        if self.basic_auth_user.is_some() != self.basic_auth_password_file.is_some() {
            return Err((
                "basic_auth_user",
                "basic_auth_user and basic_auth_password_file must be set together",
            ));
        }
        if !(1..=300).contains(&self.timeout_seconds) {
            return Err(("timeout_seconds", "must be between 1 and 300"));
        }
        if !(1..=100_000).contains(&self.batch_max_samples) {
            return Err(("batch_max_samples", "must be between 1 and 100000"));
        }
        if !(1..=10_000_000).contains(&self.queue_max_samples) {
            return Err(("queue_max_samples", "must be between 1 and 10000000"));
        }
        if self.max_retries > 100 {
            return Err(("max_retries", "must be at most 100"));
        }
        Ok(())
    }
}

/// One sample of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: &'static str,
    /// (label name, value)
    pub label: Option<(&'static str, Arc<str>)>,
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// The remote writer's metrics, registered in the collector's registry (`metrics.rs`).
#[derive(Clone)]
pub struct RemoteWriteMetrics {
    /// Samples by result: sent, failed (refused or out of retries), dropped (queue full).
    pub samples: IntCounterVec,
}

/// The handle the history writer offers samples to.
pub struct RemoteWrite {
    sender: mpsc::Sender<Vec<Point>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    queue_max: usize,
    metrics: RemoteWriteMetrics,
}

/// Why the remote writer cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("config key history.remote_write.{key}: cannot read {path}: {source}")]
    ReadSecret {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("history.remote_write: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

/// What the sending task needs.
pub struct Sender {
    receiver: mpsc::Receiver<Vec<Point>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    client: reqwest::Client,
    url: String,
    auth: Auth,
    batch_max: usize,
    max_retries: u32,
    metrics: RemoteWriteMetrics,
}

fn read_secret(
    key: &'static str,
    data_dir: &std::path::Path,
    file: &std::path::Path,
) -> Result<String, RemoteWriteError> {
    let path = data_dir.join(file);
    std::fs::read_to_string(&path)
        .map(|text| text.trim().to_string())
        .map_err(|source| RemoteWriteError::ReadSecret { key, path, source })
}

impl RemoteWrite {
    /// The handle and the task's half, when a URL is configured.
    pub fn new(
        config: &RemoteWriteConfig,
        data_dir: &std::path::Path,
        metrics: RemoteWriteMetrics,
    ) -> Result<Option<(RemoteWrite, Sender)>, RemoteWriteError> {
        let Some(url) = config.url.clone() else {
            return Ok(None);
        };
        let auth = match (
            &config.bearer_token_file,
            &config.basic_auth_user,
            &config.basic_auth_password_file,
        ) {
            (Some(file), _, _) => Auth::Bearer(read_secret("bearer_token_file", data_dir, file)?),
            (None, Some(user), Some(file)) => Auth::Basic(
                user.clone(),
                read_secret("basic_auth_password_file", data_dir, file)?,
            ),
            _ => Auth::None,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        // A channel of batches, bounded by samples through `queued`.
        let (sender, receiver) = mpsc::channel(1024);
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        Ok(Some((
            RemoteWrite {
                sender,
                queued: Arc::clone(&queued),
                queue_max: config.queue_max_samples,
                metrics: metrics.clone(),
            },
            Sender {
                receiver,
                queued,
                client,
                url,
                auth,
                batch_max: config.batch_max_samples,
                max_retries: config.max_retries,
                metrics,
            },
        )))
    }

    /// Queues samples; never waits. Beyond the queue's bound they are dropped and counted.
    pub fn offer(&self, points: Vec<Point>) {
        use std::sync::atomic::Ordering;
        if points.is_empty() {
            return;
        }
        let count = points.len();
        let before = self.queued.fetch_add(count, Ordering::SeqCst);
        if before.saturating_add(count) > self.queue_max {
            self.queued.fetch_sub(count, Ordering::SeqCst);
            self.drop_count(count);
            return;
        }
        if self.sender.try_send(points).is_err() {
            self.queued.fetch_sub(count, Ordering::SeqCst);
            self.drop_count(count);
        }
    }

    fn drop_count(&self, count: usize) {
        self.metrics
            .samples
            .with_label_values(&["dropped"])
            .inc_by(count as u64);
    }
}

/// Encodes samples as one remote-write request body: the series grouped, each one's samples in
/// time order, protobuf, snappy (block format).
pub fn encode(points: &[Point]) -> Vec<u8> {
    use prost::Message;
    /// A series: its metric name and its one label, if any.
    type SeriesKey<'a> = (&'a str, Option<(&'a str, &'a str)>);
    let mut series: std::collections::BTreeMap<SeriesKey<'_>, Vec<proto::Sample>> =
        std::collections::BTreeMap::new();
    for point in points {
        let key = (
            point.name,
            point.label.as_ref().map(|(name, value)| (*name, &**value)),
        );
        series.entry(key).or_default().push(proto::Sample {
            value: point.value,
            timestamp: point.timestamp_ms,
        });
    }
    let request = proto::WriteRequest {
        timeseries: series
            .into_iter()
            .map(|((name, label), mut samples)| {
                samples.sort_by_key(|sample| sample.timestamp);
                // Labels sorted by name, as the protocol asks: __name__ sorts first.
                let mut labels = vec![proto::Label {
                    name: "__name__".into(),
                    value: name.into(),
                }];
                if let Some((label, value)) = label {
                    labels.push(proto::Label {
                        name: label.into(),
                        value: value.into(),
                    });
                }
                proto::TimeSeries { labels, samples }
            })
            .collect(),
    };
    let bytes = request.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&bytes)
        .unwrap_or_default()
}

/// The wait before retry `attempt` (1, 2, …): full jitter over an exponential cap from
/// 500 ms to 30 s.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let cap = (0.5 * 2f64.powi(attempt.min(16) as i32)).min(30.0);
    Duration::from_secs_f64(cap * jitter.clamp(0.0, 1.0))
}

impl Sender {
    /// Sends until the handle is dropped and the queue is empty.
    pub async fn run(mut self) {
        while let Some(mut batch) = self.receiver.recv().await {
            // Take what else waits, up to a request's bound.
            while batch.len() < self.batch_max {
                match self.receiver.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            self.queued
                .fetch_sub(batch.len(), std::sync::atomic::Ordering::SeqCst);
            for chunk in batch.chunks(self.batch_max) {
                let result = if self.send(chunk).await {
                    "sent"
                } else {
                    "failed"
                };
                self.metrics
                    .samples
                    .with_label_values(&[result])
                    .inc_by(chunk.len() as u64);
            }
        }
    }

    async fn send(&self, points: &[Point]) -> bool {
        let body = encode(points);
        let mut attempt = 0;
        loop {
            let mut request = self
                .client
                .post(&self.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(body.clone());
            request = match &self.auth {
                Auth::None => request,
                Auth::Bearer(token) => request.bearer_auth(token),
                Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
            };
            let retry = match request.send().await {
                Ok(response) if response.status().is_success() => return true,
                Ok(response) => {
                    let status = response.status();
                    let retry = status.is_server_error() || status.as_u16() == 429;
                    if !retry {
                        tracing::warn!(%status, "The remote-write receiver refused a batch; it is dropped.");
                    }
                    retry
                }
                Err(error) => {
                    tracing::warn!(error = %error.without_url(), "Cannot reach the remote-write receiver.");
                    true
                }
            };
            attempt += 1;
            if !retry || attempt > self.max_retries {
                return false;
            }
            let mut jitter = [0u8; 2];
            let jitter = match getrandom::fill(&mut jitter) {
                Ok(()) => f64::from(u16::from_le_bytes(jitter)) / f64::from(u16::MAX),
                Err(_) => 1.0,
            };
            tokio::time::sleep(backoff(attempt, jitter)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_request_decodes_back_with_series_grouped_and_in_time_order() {
        let terminal: Arc<str> = Arc::from("T-1");
        let points = vec![
            Point {
                name: "posmon_history_terminal_latency_milliseconds",
                label: Some(("terminal_id", Arc::clone(&terminal))),
                value: 40.0,
                timestamp_ms: 2000,
            },
            Point {
                name: "posmon_history_terminal_latency_milliseconds",
                label: Some(("terminal_id", Arc::clone(&terminal))),
                value: 20.0,
                timestamp_ms: 1000,
            },
            Point {
                name: "posmon_history_fleet_terminals",
                label: Some(("readiness", Arc::from("can_pay"))),
                value: 3.0,
                timestamp_ms: 1000,
            },
        ];
        let body = encode(&points);
        let bytes = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = proto::WriteRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(request.timeseries.len(), 2);
        let latency = &request.timeseries[1];
        assert_eq!(
            latency.labels[0].value,
            "posmon_history_terminal_latency_milliseconds"
        );
        assert_eq!(latency.labels[1].name, "terminal_id");
        let times: Vec<i64> = latency
            .samples
            .iter()
            .map(|sample| sample.timestamp)
            .collect();
        assert_eq!(times, vec![1000, 2000]);
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(10, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(5, 0.0), Duration::ZERO);
        assert_eq!(backoff(5, 7.0), Duration::from_secs(16));
    }

    #[test]
    fn config_errors_name_the_key() {
        let check = |config: RemoteWriteConfig, key: &str| {
            assert_eq!(
                config.validate().err().map(|(k, _)| k),
                Some(key).filter(|k| !k.is_empty())
            );
        };
        check(RemoteWriteConfig::default(), "");
        check(
            RemoteWriteConfig {
                url: Some("ftp://x".into()),
                ..RemoteWriteConfig::default()
            },
            "url",
        );
        check(
            RemoteWriteConfig {
                basic_auth_user: Some("u".into()),
                ..RemoteWriteConfig::default()
            },
            "basic_auth_user",
        );
        check(
            RemoteWriteConfig {
                batch_max_samples: 0,
                ..RemoteWriteConfig::default()
            },
            "batch_max_samples",
        );
    }
}
