//! Report datagrams: the UDP listener beside the HTTP one (same address and port number by
//! default). Each datagram carries one report, authenticated and encrypted under its terminal's
//! token (`posmon_protocol::datagram`); it goes through the same ingest path as an HTTP batch
//! (`http::reports::ingest_json`) and the same per-terminal limits, and is answered by one
//! small sealed datagram: an acknowledgement, or a refusal that sends the agent to HTTPS.
//!
//! What this listener must never do: answer before a datagram authenticated (a spoofed source
//! address gets nothing back), answer with more bytes than it received (no amplification),
//! allocate or work beyond its bounds for a datagram from anybody (the size is checked before
//! anything else, a token bucket bounds the datagrams read per second over all senders, and an
//! authenticated one takes a slot of the main ingest pool and its terminal's share), or let a
//! replay do harm (a replayed report is a duplicate by its sequence; one of an agent instance
//! the collector does not hold is refused, so an old capture cannot move a terminal's mark).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use posmon_protocol::datagram::{
    open_report, parse_report, seal_answer, Answer, DatagramError, DatagramKey, Refusal,
    DATAGRAM_MAX_BYTES, NONCE_BYTES,
};
use posmon_protocol::CredentialError;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use tokio::net::UdpSocket;

use crate::http::admission::TokenBucket;
use crate::http::reports::{admit_datagram, ingest_datagram};
use crate::http::AppState;

/// The `[datagram]` section of the collector's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatagramConfig {
    /// Take report datagrams at all.
    pub enabled: bool,
    /// Where; absent: the HTTP listener's address and port number.
    pub address: Option<SocketAddr>,
    /// Datagrams read per second at most, over all senders; more are dropped unread.
    pub max_datagrams_per_second: u32,
}

impl Default for DatagramConfig {
    fn default() -> Self {
        DatagramConfig {
            enabled: true,
            address: None,
            max_datagrams_per_second: 20_000,
        }
    }
}

impl DatagramConfig {
    /// The key and the problem of an unusable section.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        if self.max_datagrams_per_second == 0 {
            return Err((
                "max_datagrams_per_second".into(),
                "must be at least 1 (turn datagrams off with enabled = false)",
            ));
        }
        Ok(())
    }

    /// Where to listen, given where HTTP listens; `None` when off.
    pub fn address(&self, http: SocketAddr) -> Option<SocketAddr> {
        self.enabled.then(|| self.address.unwrap_or(http))
    }
}

/// Why a datagram was not taken: a metric label. The first ones get no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// Larger than a datagram may be.
    TooLarge,
    /// Over the rate of all senders together.
    FleetRate,
    /// Not a report datagram of this version.
    Malformed,
    /// Under a key this collector does not hold, or a revoked generation.
    UnknownKey,
    Revoked,
    /// The seal does not open under the terminal's key.
    Unauthentic,
    /// Authentic, but its terminal is over its rate or has its requests in flight already.
    TerminalRate,
    /// Authentic, but every slot of the ingest pool is taken.
    Overloaded,
    /// The answer would have been larger than the datagram (never sent).
    AnswerTooLarge,
}

impl Dropped {
    const ALL: [Dropped; 9] = [
        Dropped::TooLarge,
        Dropped::FleetRate,
        Dropped::Malformed,
        Dropped::UnknownKey,
        Dropped::Revoked,
        Dropped::Unauthentic,
        Dropped::TerminalRate,
        Dropped::Overloaded,
        Dropped::AnswerTooLarge,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Dropped::TooLarge => "too_large",
            Dropped::FleetRate => "fleet_rate",
            Dropped::Malformed => "malformed",
            Dropped::UnknownKey => "unknown_key",
            Dropped::Revoked => "revoked",
            Dropped::Unauthentic => "unauthentic",
            Dropped::TerminalRate => "terminal_rate",
            Dropped::Overloaded => "overloaded",
            Dropped::AnswerTooLarge => "answer_too_large",
        }
    }
}

/// The refusals the collector answers with.
const REFUSALS: [Refusal; 5] = [
    Refusal::Invalid,
    Refusal::RateLimited,
    Refusal::Overloaded,
    Refusal::NewInstance,
    Refusal::NotWritten,
];

/// `posmon_ingest_datagrams_*`: registered with the collector's other metrics (`metrics.rs`).
pub struct DatagramMetrics {
    received: IntCounter,
    acknowledged: IntCounter,
    dropped: IntCounterVec,
    refused: IntCounterVec,
}

impl DatagramMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let received = IntCounter::new(
            "posmon_ingest_datagrams_received_total",
            "Report datagrams received (UDP), whatever became of them.",
        )?;
        let acknowledged = IntCounter::new(
            "posmon_ingest_datagrams_acknowledged_total",
            "Report datagrams answered with an acknowledgement.",
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "posmon_ingest_datagrams_dropped_total",
                "Report datagrams dropped without an answer, by reason (too_large, fleet_rate, malformed, unknown_key, revoked, unauthentic, terminal_rate, overloaded, answer_too_large).",
            ),
            &["reason"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "posmon_ingest_datagrams_refused_total",
                "Authenticated report datagrams answered with a refusal (the agent sends the report by HTTPS), by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(received.clone()))?;
        registry.register(Box::new(acknowledged.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        for reason in Dropped::ALL {
            dropped.with_label_values(&[reason.as_str()]);
        }
        for refusal in REFUSALS {
            refused.with_label_values(&[refusal.as_str()]);
        }
        Ok(DatagramMetrics {
            received,
            acknowledged,
            dropped,
            refused,
        })
    }

    fn drop(&self, reason: Dropped) {
        self.dropped.with_label_values(&[reason.as_str()]).inc();
    }
}

/// Binds the UDP socket for report datagrams, or says clearly why not and goes on without.
pub async fn bind(address: SocketAddr) -> Option<UdpSocket> {
    match UdpSocket::bind(address).await {
        Ok(socket) => {
            let bound = socket.local_addr().map_or(address, |bound| bound);
            tracing::info!(address = %bound, "Taking report datagrams (UDP).");
            Some(socket)
        }
        Err(error) => {
            tracing::error!(%address, %error, "Cannot listen for report datagrams (UDP) on {address}: serving HTTP(S) only; agents fall back to it.");
            None
        }
    }
}

/// A datagram that authenticated: its terminal, its key, its header (what the answer is bound
/// to) and its JSON — `None` when the body does not decompress with the dictionary of the agent
/// instance the collector holds for the terminal (a new instance: answered "use HTTPS").
struct Opened {
    terminal_id: String,
    key: DatagramKey,
    key_index: usize,
    header: Vec<u8>,
    report_json: Option<Vec<u8>>,
}

/// Authenticates and opens a datagram, or says why it is dropped unanswered.
fn open(state: &AppState, datagram: &[u8]) -> Result<Opened, Dropped> {
    let parsed = parse_report(datagram).map_err(|error| match error {
        DatagramError::TooLarge { .. } => Dropped::TooLarge,
        _ => Dropped::Malformed,
    })?;
    let header = &parsed.header;
    let (token, key_index) = state
        .keyring
        .token_at(&header.key_id, &header.terminal_id, header.generation)
        .map_err(|error| match error {
            CredentialError::Revoked { .. } => Dropped::Revoked,
            _ => Dropped::UnknownKey,
        })?;
    let key = DatagramKey::from_token(&token);
    let instance = state.fleet.agent_instance(&header.terminal_id);
    let report_json = match open_report(&key, &parsed, instance.as_deref()) {
        Ok(json) => Some(json),
        Err(DatagramError::Unauthentic) => return Err(Dropped::Unauthentic),
        Err(_) => None,
    };
    Ok(Opened {
        terminal_id: header.terminal_id.clone(),
        key,
        key_index,
        header: parsed.header_bytes.to_vec(),
        report_json,
    })
}

/// How long the listener pauses after a failed receive.
const RECEIVE_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Reads report datagrams until the task is aborted.
pub async fn serve(socket: UdpSocket, state: Arc<AppState>) {
    let socket = Arc::new(socket);
    let metrics = &state.metrics.datagrams;
    let per_second = f64::from(state.config.datagram.max_datagrams_per_second);
    let mut fleet_rate = TokenBucket::full(per_second, Instant::now());
    // One byte more than a datagram may have: a longer one shows as filling it.
    let mut buffer = vec![0_u8; DATAGRAM_MAX_BYTES + 1];
    loop {
        let (length, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                // Whatever it is, never a busy loop on a socket that keeps failing.
                tracing::debug!(%error, "Cannot read a datagram.");
                tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                continue;
            }
        };
        metrics.received.inc();
        if length > DATAGRAM_MAX_BYTES {
            metrics.drop(Dropped::TooLarge);
            continue;
        }
        if fleet_rate
            .take(Instant::now(), per_second, per_second)
            .is_err()
        {
            metrics.drop(Dropped::FleetRate);
            continue;
        }
        let opened = match open(&state, &buffer[..length]) {
            Ok(opened) => opened,
            Err(reason) => {
                metrics.drop(reason);
                continue;
            }
        };
        state.keyring.note_use(opened.key_index);
        // Over its terminal's rate, or with the collector's pool full: no answer at all (the
        // agent goes to HTTPS on silence), so that replayed captures cannot make the collector
        // send more than the terminal's rate allows.
        let slot = match admit_datagram(&state, &opened.terminal_id) {
            Ok(slot) => slot,
            Err(refusal) => {
                metrics.drop(match refusal {
                    Refusal::RateLimited => Dropped::TerminalRate,
                    _ => Dropped::Overloaded,
                });
                continue;
            }
        };
        if opened.report_json.is_none() {
            drop(slot);
            let refusal = Err(Refusal::NewInstance);
            answer(&socket, &state, peer, length, &opened, refusal).await;
            continue;
        }
        let socket = Arc::clone(&socket);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let report_json = opened.report_json.as_deref().unwrap_or_default();
            let outcome = ingest_datagram(&state, &opened.terminal_id, report_json).await;
            drop(slot);
            answer(&socket, &state, peer, length, &opened, outcome).await;
        });
    }
}

/// Sends the sealed answer to an authenticated datagram of `request_length` bytes, if it is
/// no larger.
async fn answer(
    socket: &UdpSocket,
    state: &AppState,
    peer: SocketAddr,
    request_length: usize,
    opened: &Opened,
    outcome: Result<posmon_protocol::BatchAck, Refusal>,
) {
    let metrics = &state.metrics.datagrams;
    let answer = match outcome {
        Ok(ack) => {
            let milliseconds = ack.collector_time.unix_timestamp_nanos() / 1_000_000;
            Answer::Ack {
                sequence: ack.acknowledged_sequence,
                collector_time_unix_ms: i64::try_from(milliseconds).unwrap_or(i64::MAX),
            }
        }
        Err(refusal) => Answer::Refusal(refusal),
    };
    let mut nonce = [0_u8; NONCE_BYTES];
    if let Err(error) = getrandom::fill(&mut nonce) {
        // Never a predictable nonce: no answer; the agent falls back to HTTPS.
        tracing::error!(%error, "No randomness for a datagram answer's nonce: not answered.");
        return;
    }
    let sealed = seal_answer(&opened.key, &opened.header, &answer, nonce);
    if sealed.len() > request_length {
        metrics.drop(Dropped::AnswerTooLarge);
        return;
    }
    match answer {
        Answer::Ack { .. } => metrics.acknowledged.inc(),
        Answer::Refusal(refusal) => metrics.refused.with_label_values(&[refusal.as_str()]).inc(),
    }
    if let Err(error) = socket.send_to(&sealed, peer).await {
        tracing::debug!(%peer, %error, "Cannot answer a report datagram.");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use posmon_protocol::datagram::{open_answer, seal_report, ReportHeader};
    use posmon_protocol::{terminal_token, FleetKey, Keyring};

    use super::*;
    use crate::config::Config;
    use crate::http::reports::{ingest_json, Sender};

    const INSTANCE: &str = "6f1c2a9e-4b7d-4e21-9a3f-0c5d8e7b1a42";

    fn keyring() -> Keyring {
        let key = FleetKey::new("k1", b"a test fleet secret".to_vec())
            .unwrap_or_else(|error| panic!("{error}"));
        Keyring::new(key, vec![])
    }

    fn report_json(terminal_id: &str, sequence: u64) -> Vec<u8> {
        let today = time::OffsetDateTime::now_utc().date();
        let yesterday = today.previous_day().unwrap_or(today);
        serde_json::json!({
            "schema_version": 1,
            "terminal_id": terminal_id,
            "sequence": sequence,
            "observed_at": format!("{yesterday}T02:00:{:02}Z", sequence % 60),
            "agent_version": "0.1.0",
            "agent_instance": INSTANCE,
        })
        .to_string()
        .into_bytes()
    }

    struct Harness {
        state: Arc<AppState>,
        collector: SocketAddr,
        client: UdpSocket,
        _dir: tempfile::TempDir,
        listener: tokio::task::JoinHandle<()>,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.listener.abort();
        }
    }

    async fn harness(configure: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        configure(&mut config);
        let state = Arc::new(
            AppState::open(config, keyring(), None).unwrap_or_else(|error| panic!("{error}")),
        );
        let socket = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap_or_else(|| panic!("cannot bind a loopback UDP port"));
        let collector = socket
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"));
        let listener = tokio::spawn(serve(socket, Arc::clone(&state)));
        let client = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        Harness {
            state,
            collector,
            client,
            _dir: dir,
            listener,
        }
    }

    impl Harness {
        /// Makes the collector hold `terminal_id`'s agent instance, as a first HTTPS batch does.
        async fn know(&self, terminal_id: &str) {
            let mut batch = b"{\"reports\":[".to_vec();
            batch.extend(report_json(terminal_id, 1));
            batch.extend(b"]}");
            if ingest_json(&self.state, &batch, Sender::Named(terminal_id))
                .await
                .is_err()
            {
                panic!("the first report was refused");
            }
        }

        /// Sends `datagram` and waits a little for an answer.
        async fn exchange(&self, datagram: &[u8]) -> Option<Vec<u8>> {
            self.client
                .send_to(datagram, self.collector)
                .await
                .unwrap_or_else(|error| panic!("{error}"));
            let mut buffer = vec![0; 2048];
            let received =
                tokio::time::timeout(Duration::from_millis(300), self.client.recv(&mut buffer))
                    .await
                    .ok()?
                    .ok()?;
            buffer.truncate(received);
            Some(buffer)
        }

        fn dropped(&self, reason: Dropped) -> u64 {
            self.state
                .metrics
                .datagrams
                .dropped
                .with_label_values(&[reason.as_str()])
                .get()
        }
    }

    fn sealed(terminal_id: &str, token: &str, generation: u32, json: &[u8]) -> Vec<u8> {
        let mut nonce = [0; NONCE_BYTES];
        getrandom::fill(&mut nonce).unwrap_or_else(|error| panic!("{error}"));
        let header = ReportHeader {
            terminal_id: terminal_id.into(),
            key_id: "k1".into(),
            generation,
            nonce,
        };
        seal_report(
            &DatagramKey::from_token(token),
            &header,
            Some(INSTANCE),
            json,
        )
        .unwrap_or_else(|error| panic!("{error}"))
    }

    fn answer_to(request: &[u8], token: &str, answer: &[u8]) -> Answer {
        let parsed = parse_report(request).unwrap_or_else(|error| panic!("{error}"));
        assert!(
            answer.len() <= request.len(),
            "an answer larger than its request"
        );
        open_answer(&DatagramKey::from_token(token), parsed.header_bytes, answer)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    #[tokio::test]
    async fn a_report_datagram_is_applied_acknowledged_and_a_replay_is_a_duplicate() {
        let harness = harness(|_| {}).await;
        harness.know("T-1").await;
        let token = terminal_token(keyring().current(), "T-1");
        let request = sealed("T-1", &token, 0, &report_json("T-1", 2));
        for _ in 0..2 {
            let answer = harness
                .exchange(&request)
                .await
                .unwrap_or_else(|| panic!("no answer"));
            let Answer::Ack {
                sequence,
                collector_time_unix_ms,
            } = answer_to(&request, &token, &answer)
            else {
                panic!("not an ack");
            };
            assert_eq!(sequence, 2);
            let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
            assert!((collector_time_unix_ms - now).abs() < 5_000);
        }
        assert_eq!(harness.state.fleet.highest_sequence("T-1"), 2);
        let reports = &harness.state.metrics.reports;
        assert_eq!(reports.with_label_values(&["applied"]).get(), 2);
        assert_eq!(reports.with_label_values(&["duplicate"]).get(), 1);
        assert_eq!(harness.state.metrics.datagrams.acknowledged.get(), 2);
    }

    #[tokio::test]
    async fn a_new_instance_or_a_bad_report_is_sent_to_https() {
        let harness = harness(|_| {}).await;
        let token = terminal_token(keyring().current(), "T-1");
        // Nothing known of T-1 yet: its first report comes by HTTPS.
        let request = sealed("T-1", &token, 0, &report_json("T-1", 1));
        let answer = harness.exchange(&request).await;
        assert_eq!(
            answer.map(|answer| answer_to(&request, &token, &answer)),
            Some(Answer::Refusal(Refusal::NewInstance))
        );
        harness.know("T-1").await;
        // Another terminal's report under T-1's key.
        let request = sealed("T-1", &token, 0, &report_json("T-2", 2));
        let answer = harness.exchange(&request).await;
        assert_eq!(
            answer.map(|answer| answer_to(&request, &token, &answer)),
            Some(Answer::Refusal(Refusal::Invalid))
        );
        let two = [report_json("T-1", 2), report_json("T-1", 3)].join(&b',');
        let request = sealed("T-1", &token, 0, &two);
        let answer = harness.exchange(&request).await;
        assert_eq!(
            answer.map(|answer| answer_to(&request, &token, &answer)),
            Some(Answer::Refusal(Refusal::Invalid)),
            "two reports spliced into one datagram"
        );
        let request = sealed("T-1", &token, 0, b"{\"schema_version\":1}");
        let answer = harness.exchange(&request).await;
        assert_eq!(
            answer.map(|answer| answer_to(&request, &token, &answer)),
            Some(Answer::Refusal(Refusal::Invalid))
        );
        let refused = &harness.state.metrics.datagrams.refused;
        assert_eq!(refused.with_label_values(&["new_instance"]).get(), 1);
        assert_eq!(refused.with_label_values(&["invalid"]).get(), 3);
    }

    #[tokio::test]
    async fn nothing_unauthenticated_is_answered() {
        let harness = harness(|_| {}).await;
        harness.know("T-1").await;
        let token = terminal_token(keyring().current(), "T-1");
        let good = sealed("T-1", &token, 0, &report_json("T-1", 2));
        let mut tampered = good.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        let wrong_key = sealed("T-1", "k1.not-the-token", 0, &report_json("T-1", 2));
        let other_terminal = sealed("T-2", &token, 0, &report_json("T-2", 2));
        let unknown_key = {
            let mut datagram = good.clone();
            // "k1" → "k9": a key this collector does not hold.
            let position = 4 + 1 + 3 + 1 + 1;
            datagram[position] = b'9';
            datagram
        };
        let cases: Vec<(Vec<u8>, Dropped)> = vec![
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), Dropped::Malformed),
            (Vec::new(), Dropped::Malformed),
            (good[..good.len() / 2].to_vec(), Dropped::Unauthentic),
            (good[..20].to_vec(), Dropped::Malformed),
            (tampered, Dropped::Unauthentic),
            (wrong_key, Dropped::Unauthentic),
            (other_terminal, Dropped::Unauthentic),
            (unknown_key, Dropped::UnknownKey),
            (vec![b'p'; DATAGRAM_MAX_BYTES + 1], Dropped::TooLarge),
            (vec![0; 65_000], Dropped::TooLarge),
        ];
        for (datagram, reason) in cases {
            let before = harness.dropped(reason);
            assert_eq!(harness.exchange(&datagram).await, None, "{reason:?}");
            assert_eq!(harness.dropped(reason), before + 1, "{reason:?}");
        }
        assert_eq!(harness.state.fleet.highest_sequence("T-1"), 1);
        // And the terminal is served as before.
        assert!(harness.exchange(&good).await.is_some());
    }

    #[tokio::test]
    async fn a_revoked_generation_opens_nothing_and_the_next_one_works() {
        let harness = harness(|_| {}).await;
        harness.know("T-1").await;
        let old = terminal_token(keyring().current(), "T-1");
        let minimum = harness
            .state
            .keyring
            .revocations()
            .revoke("T-1", time::OffsetDateTime::now_utc())
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(minimum, 1);
        let request = sealed("T-1", &old, 0, &report_json("T-1", 2));
        assert_eq!(harness.exchange(&request).await, None);
        assert_eq!(harness.dropped(Dropped::Revoked), 1);
        let new = posmon_protocol::terminal_token_at(keyring().current(), "T-1", 1);
        let request = sealed("T-1", &new, 1, &report_json("T-1", 2));
        let answer = harness.exchange(&request).await;
        assert!(
            matches!(
                answer.map(|answer| answer_to(&request, &new, &answer)),
                Some(Answer::Ack { sequence: 2, .. })
            ),
            "the new generation is taken"
        );
    }

    #[tokio::test]
    async fn a_flood_is_cut_at_the_fleet_rate_and_the_terminal_rate() {
        let harness = harness(|config| {
            config.datagram.max_datagrams_per_second = 20;
            config.limits.terminal_request_burst = 5;
            config.limits.terminal_requests_per_minute = 1;
        })
        .await;
        harness.know("T-1").await;
        let token = terminal_token(keyring().current(), "T-1");
        let requests: Vec<Vec<u8>> = (2..40)
            .map(|sequence| sealed("T-1", &token, 0, &report_json("T-1", sequence)))
            .collect();
        // All at once, faster than either rate.
        for request in &requests {
            harness
                .client
                .send_to(request, harness.collector)
                .await
                .unwrap_or_else(|error| panic!("{error}"));
        }
        let mut answers = Vec::new();
        let mut buffer = vec![0; 2048];
        while let Ok(Ok(length)) =
            tokio::time::timeout(Duration::from_millis(300), harness.client.recv(&mut buffer)).await
        {
            let answer = &buffer[..length];
            let opened = requests.iter().find_map(|request| {
                let parsed = parse_report(request).ok()?;
                open_answer(
                    &DatagramKey::from_token(&token),
                    parsed.header_bytes,
                    answer,
                )
                .ok()
            });
            answers.push(opened.unwrap_or_else(|| panic!("an answer to no request")));
        }
        let acks = answers
            .iter()
            .filter(|answer| matches!(answer, Answer::Ack { .. }))
            .count();
        // The fleet's rate lets 20 in; the terminal's burst (and its two in flight) some of
        // those, acknowledged; the rest get no answer (their agent goes to HTTPS).
        assert_eq!(harness.dropped(Dropped::FleetRate), 18);
        assert!((1..=5).contains(&acks), "{answers:?}");
        assert_eq!(answers.len(), acks, "{answers:?}");
        assert_eq!(harness.dropped(Dropped::TerminalRate) as usize, 20 - acks);
    }

    #[test]
    fn the_config_names_its_key() {
        let config = DatagramConfig {
            max_datagrams_per_second: 0,
            ..DatagramConfig::default()
        };
        assert_eq!(
            config.validate().map_err(|(key, _)| key),
            Err("max_datagrams_per_second".to_string())
        );
        let http = SocketAddr::from(([0, 0, 0, 0], 8080));
        assert_eq!(DatagramConfig::default().address(http), Some(http));
        let off = DatagramConfig {
            enabled: false,
            ..DatagramConfig::default()
        };
        assert_eq!(off.address(http), None);
    }
}
