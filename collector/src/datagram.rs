//! Report datagrams: the UDP listener beside the HTTP one (same address and port number by
//! default). Each datagram carries one report, authenticated and encrypted under its terminal's
//! token (`posmon_protocol::datagram`); it goes through the same ingest path as an HTTP batch
//! (`http::reports::ingest_json`) and the same per-terminal limits, and is answered by one
//! small sealed datagram: an acknowledgement, or a refusal that sends the agent to HTTPS.
//!
//! What this listener must never do: answer before a datagram authenticated (a spoofed source
//! address gets nothing back), answer with more bytes than it received (no amplification),
//! allocate or work beyond its bounds for a datagram from anybody (the size is checked before
//! anything else; authentication comes first, each datagram's work before it bounded: a parse,
//! at most two HMACs and one AEAD over at most 1 200 bytes; a token bucket over all senders is
//! charged only by the datagrams that fail to parse or to authenticate, and once it is empty a
//! datagram under a key not authenticated recently is dropped unread, so a flood of garbage
//! never stops the terminals whose keys are cached; an authenticated one takes a slot of the
//! main ingest pool and its terminal's datagram share, apart from its HTTPS one), or let a
//! replay do harm (each cached key remembers its last nonces: a datagram is taken at most twice,
//! its first send and the agent's one resend of the same bytes, later repeats are dropped
//! unanswered before admission; a replayed report is a duplicate by its sequence; one of an
//! agent instance the collector does not hold is refused, so an old capture cannot move a
//! terminal's mark).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use posmon_protocol::datagram::{
    authenticate_report, decompress_report, parse_report, seal_answer, Answer, DatagramError,
    DatagramKey, ParsedReport, Refusal, DATAGRAM_MAX_BYTES, NONCE_BYTES,
};
use posmon_protocol::CredentialError;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
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
    /// Datagrams that fail to parse or to authenticate per second at most, over all senders
    /// (a token bucket of one second's worth, charged only by those); once it is empty, a
    /// datagram under a key not in the cache of recently authenticated ones is dropped unread.
    pub max_datagrams_per_second: u32,
    /// Keys of recently authenticated terminals held (about 100 bytes each, with their last
    /// nonces): size it to the terminals reporting by datagram.
    pub max_cached_keys: usize,
}

impl Default for DatagramConfig {
    fn default() -> Self {
        DatagramConfig {
            enabled: true,
            address: None,
            max_datagrams_per_second: 20_000,
            max_cached_keys: 262_144,
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
        if self.max_cached_keys < 2 {
            return Err(("max_cached_keys".into(), "must be at least 2"));
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
    /// Under a key not cached while the failures of all senders together are over their rate.
    FleetRate,
    /// Not a report datagram of this version.
    Malformed,
    /// Under a key this collector does not hold, or a revoked generation.
    UnknownKey,
    Revoked,
    /// The seal does not open under the terminal's key.
    Unauthentic,
    /// Authentic, but taken twice already (its first send and its resend): a replay.
    Replayed,
    /// Authentic, but its terminal is over its rate or has its requests in flight already.
    TerminalRate,
    /// Authentic, but every slot of the ingest pool is taken.
    Overloaded,
    /// The answer would have been larger than the datagram (never sent).
    AnswerTooLarge,
}

impl Dropped {
    const ALL: [Dropped; 10] = [
        Dropped::TooLarge,
        Dropped::FleetRate,
        Dropped::Malformed,
        Dropped::UnknownKey,
        Dropped::Revoked,
        Dropped::Unauthentic,
        Dropped::Replayed,
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
            Dropped::Replayed => "replayed",
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
    cached_keys: IntGauge,
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
        let cached_keys = IntGauge::new(
            "posmon_ingest_datagram_keys_cached",
            "Keys of recently authenticated terminals the datagram listener holds (datagram.max_cached_keys at most).",
        )?;
        let acknowledged = IntCounter::new(
            "posmon_ingest_datagrams_acknowledged_total",
            "Report datagrams answered with an acknowledgement.",
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "posmon_ingest_datagrams_dropped_total",
                "Report datagrams dropped without an answer, by reason (too_large, fleet_rate, malformed, unknown_key, revoked, unauthentic, replayed, terminal_rate, overloaded, answer_too_large).",
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
        registry.register(Box::new(cached_keys.clone()))?;
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
            cached_keys,
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

/// How many of each key's last nonces are remembered.
const RECENT_NONCES: usize = 4;

/// A recently authenticated key and the last nonces seen under it (their first 8 bytes, random
/// bits: an agent's two nonces sharing them is a chance of one in 2^64).
struct Known {
    key: DatagramKey,
    key_index: usize,
    nonces: [u64; RECENT_NONCES],
    /// Which of `nonces` was taken twice already.
    resent: [bool; RECENT_NONCES],
    /// How many were seen, to know the slots in use and the next to reuse.
    seen: usize,
}

impl Known {
    fn new(key: DatagramKey, key_index: usize) -> Self {
        Known {
            key,
            key_index,
            nonces: [0; RECENT_NONCES],
            resent: [false; RECENT_NONCES],
            seen: 0,
        }
    }

    /// Notes `nonce`; false when it was taken twice already (a replay).
    fn take_nonce(&mut self, nonce: &[u8; NONCE_BYTES]) -> bool {
        let mut prefix = [0_u8; 8];
        prefix.copy_from_slice(&nonce[..8]);
        let nonce = u64::from_le_bytes(prefix);
        let used = self.seen.min(RECENT_NONCES);
        if let Some(slot) = (0..used).find(|&slot| self.nonces[slot] == nonce) {
            if self.resent[slot] {
                return false;
            }
            self.resent[slot] = true;
            return true;
        }
        let slot = self.seen % RECENT_NONCES;
        self.nonces[slot] = nonce;
        self.resent[slot] = false;
        self.seen = self.seen.wrapping_add(1);
        true
    }
}

/// The keys of recently authenticated (terminal, key id, generation), at most `capacity`: two
/// generations of maps, the older dropped when the newer is half full (a key used since moves
/// to the newer). Only a datagram that authenticated adds one, so garbage cannot churn it.
/// Keyed by a keyed hash of the triple: nobody can aim at a collision, and one by chance (one in
/// 2^64 per pair) only makes a terminal's datagrams fail until the entry ages out.
struct KeyCache {
    hasher: RandomState,
    current: HashMap<u64, Known>,
    previous: HashMap<u64, Known>,
    capacity: usize,
}

impl KeyCache {
    fn new(capacity: usize) -> Self {
        KeyCache {
            hasher: RandomState::new(),
            current: HashMap::new(),
            previous: HashMap::new(),
            capacity: capacity.max(2),
        }
    }

    fn name(&self, terminal_id: &str, key_id: &str, generation: u32) -> u64 {
        self.hasher.hash_one((terminal_id, key_id, generation))
    }

    fn get(&mut self, name: u64) -> Option<&mut Known> {
        if !self.current.contains_key(&name) {
            let known = self.previous.remove(&name)?;
            self.insert(name, known);
        }
        self.current.get_mut(&name)
    }

    fn insert(&mut self, name: u64, known: Known) {
        if self.current.len() >= self.capacity / 2 {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(name, known);
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// The pre-authentication budget: the failures of all senders per second.
struct Failures {
    bucket: TokenBucket,
    per_second: f64,
}

impl Failures {
    fn room(&mut self) -> bool {
        self.bucket
            .has_token(Instant::now(), self.per_second, self.per_second)
    }

    fn charge(&mut self) {
        // Empty already: nothing more to take.
        let _ = self
            .bucket
            .take(Instant::now(), self.per_second, self.per_second);
    }
}

/// Authenticates a parsed datagram, with its key from the cache or derived (while the failures
/// leave room), charging the failures; then checks its nonce, and only then looks up its
/// terminal's agent instance and decompresses it.
fn open(
    state: &AppState,
    keys: &mut KeyCache,
    failures: &mut Failures,
    parsed: &ParsedReport<'_>,
) -> Result<Opened, Dropped> {
    let header = &parsed.header;
    // Checked at each use, a cached key's included: a revocation takes effect at once.
    if header.generation < state.keyring.revocations().minimum(&header.terminal_id) {
        failures.charge();
        return Err(Dropped::Revoked);
    }
    let name = keys.name(&header.terminal_id, &header.key_id, header.generation);
    let body = match keys.get(name) {
        Some(known) => authenticate_report(&known.key, parsed).map_err(|_| {
            failures.charge();
            Dropped::Unauthentic
        })?,
        None => {
            if !failures.room() {
                return Err(Dropped::FleetRate);
            }
            let (body, known) = derive(state, parsed).inspect_err(|_| failures.charge())?;
            keys.insert(name, known);
            body
        }
    };
    // Just inserted if it was not there.
    let known = keys.get(name).ok_or(Dropped::Unauthentic)?;
    if !known.take_nonce(&header.nonce) {
        return Err(Dropped::Replayed);
    }
    let (key, key_index) = (known.key.clone(), known.key_index);
    let instance = state.fleet.agent_instance(&header.terminal_id);
    let report_json = decompress_report(&body, &header.terminal_id, instance.as_deref()).ok();
    Ok(Opened {
        terminal_id: header.terminal_id.clone(),
        key,
        key_index,
        header: parsed.header_bytes.to_vec(),
        report_json,
    })
}

/// Derives the key of a datagram's header from the keyring and authenticates the datagram
/// under it: its body and the key to cache.
fn derive(state: &AppState, parsed: &ParsedReport<'_>) -> Result<(Vec<u8>, Known), Dropped> {
    let header = &parsed.header;
    let (token, key_index) = state
        .keyring
        .token_at(&header.key_id, &header.terminal_id, header.generation)
        .map_err(|error| match error {
            CredentialError::Revoked { .. } => Dropped::Revoked,
            _ => Dropped::UnknownKey,
        })?;
    let key = DatagramKey::from_token(&token);
    let body = authenticate_report(&key, parsed).map_err(|_| Dropped::Unauthentic)?;
    Ok((body, Known::new(key, key_index)))
}

/// How long the listener pauses after a failed receive.
const RECEIVE_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Reads report datagrams until the task is aborted.
pub async fn serve(socket: UdpSocket, state: Arc<AppState>) {
    let socket = Arc::new(socket);
    let metrics = &state.metrics.datagrams;
    let per_second = f64::from(state.config.datagram.max_datagrams_per_second);
    let mut failures = Failures {
        bucket: TokenBucket::full(per_second, Instant::now()),
        per_second,
    };
    let mut keys = KeyCache::new(state.config.datagram.max_cached_keys);
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
        let parsed = match parse_report(&buffer[..length]) {
            Ok(parsed) => parsed,
            Err(error) => {
                failures.charge();
                metrics.drop(match error {
                    DatagramError::TooLarge { .. } => Dropped::TooLarge,
                    _ => Dropped::Malformed,
                });
                continue;
            }
        };
        let opened = match open(&state, &mut keys, &mut failures, &parsed) {
            Ok(opened) => opened,
            Err(reason) => {
                metrics.drop(reason);
                continue;
            }
        };
        metrics
            .cached_keys
            .set(i64::try_from(keys.len()).unwrap_or(i64::MAX));
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
                control: posmon_protocol::datagram::AckControl {
                    config: ack
                        .config
                        .as_deref()
                        .and_then(posmon_protocol::datagram::AckControl::version_bits),
                    probe_request: ack.probe_request,
                },
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
        // The first send and the agent's resend of the same bytes (its ack lost).
        for _ in 0..2 {
            let answer = harness
                .exchange(&request)
                .await
                .unwrap_or_else(|| panic!("no answer"));
            let Answer::Ack {
                sequence,
                collector_time_unix_ms,
                ..
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
        // Any more of it is a replay: no answer, nothing admitted.
        for _ in 0..3 {
            assert_eq!(harness.exchange(&request).await, None);
        }
        assert_eq!(harness.dropped(Dropped::Replayed), 3);
        assert_eq!(reports.with_label_values(&["duplicate"]).get(), 1);
    }

    #[tokio::test]
    async fn datagrams_never_spend_the_terminals_https_share() {
        let harness = harness(|config| {
            config.limits.terminal_request_burst = 3;
            config.limits.terminal_requests_per_minute = 1;
        })
        .await;
        harness.know("T-1").await;
        let token = terminal_token(keyring().current(), "T-1");
        // Captures replayed and fresh datagrams, more than the terminal's burst.
        let capture = sealed("T-1", &token, 0, &report_json("T-1", 2));
        for _ in 0..10 {
            harness.exchange(&capture).await;
        }
        for sequence in 3..8 {
            harness
                .exchange(&sealed("T-1", &token, 0, &report_json("T-1", sequence)))
                .await;
        }
        assert_eq!(harness.dropped(Dropped::Replayed), 8);
        assert!(harness.dropped(Dropped::TerminalRate) > 0);
        // The terminal's HTTPS reports are taken as if no datagram had come.
        let now = Instant::now();
        for _ in 0..3 {
            assert!(
                harness.state.fairness.enter("T-1", now).is_ok(),
                "the HTTPS share spent by datagrams"
            );
        }
    }

    #[tokio::test]
    async fn garbage_over_the_failure_rate_does_not_stop_authenticated_terminals() {
        let harness = harness(|config| {
            config.datagram.max_datagrams_per_second = 5;
        })
        .await;
        harness.know("T-1").await;
        harness.know("T-2").await;
        let token = terminal_token(keyring().current(), "T-1");
        // T-1's key is cached by its first datagram.
        let first = sealed("T-1", &token, 0, &report_json("T-1", 2));
        assert!(harness.exchange(&first).await.is_some());
        // A flood of garbage, forged datagrams under T-1's and T-2's names among it.
        let mut forged = first.clone();
        if let Some(last) = forged.last_mut() {
            *last ^= 1;
        }
        let t2_forged = sealed("T-2", "k1.not-the-token", 0, &report_json("T-2", 2));
        for _ in 0..30 {
            for datagram in [&b"garbage"[..], &forged, &t2_forged] {
                harness
                    .client
                    .send_to(datagram, harness.collector)
                    .await
                    .unwrap_or_else(|error| panic!("{error}"));
            }
        }
        // Let the listener read them all (their drops are counted).
        for _ in 0..100 {
            if harness.state.metrics.datagrams.received.get() >= 91 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            harness.dropped(Dropped::FleetRate) > 0,
            "the failures are over their rate"
        );
        // T-1 is served still; T-2, whose key is not cached yet, waits for the failures to ebb.
        let next = sealed("T-1", &token, 0, &report_json("T-1", 3));
        let answer = harness.exchange(&next).await;
        assert!(
            matches!(
                answer.map(|answer| answer_to(&next, &token, &answer)),
                Some(Answer::Ack { sequence: 3, .. })
            ),
            "an authenticated terminal dropped for others' garbage"
        );
        let t2_token = terminal_token(keyring().current(), "T-2");
        let t2 = sealed("T-2", &t2_token, 0, &report_json("T-2", 2));
        let before = harness.dropped(Dropped::FleetRate);
        assert_eq!(harness.exchange(&t2).await, None);
        assert_eq!(harness.dropped(Dropped::FleetRate), before + 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            harness.exchange(&t2).await.is_some(),
            "taken once the failures ebbed"
        );
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
        // Its key cached by a datagram taken before the revocation.
        let before = sealed("T-1", &old, 0, &report_json("T-1", 2));
        assert!(harness.exchange(&before).await.is_some());
        let minimum = harness
            .state
            .keyring
            .revocations()
            .revoke("T-1", time::OffsetDateTime::now_utc())
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(minimum, 1);
        let request = sealed("T-1", &old, 0, &report_json("T-1", 3));
        assert_eq!(harness.exchange(&request).await, None);
        assert_eq!(harness.dropped(Dropped::Revoked), 1);
        let new = posmon_protocol::terminal_token_at(keyring().current(), "T-1", 1);
        let request = sealed("T-1", &new, 1, &report_json("T-1", 3));
        let answer = harness.exchange(&request).await;
        assert!(
            matches!(
                answer.map(|answer| answer_to(&request, &new, &answer)),
                Some(Answer::Ack { sequence: 3, .. })
            ),
            "the new generation is taken"
        );
    }

    #[tokio::test]
    async fn an_authentic_flood_is_cut_at_the_terminal_rate() {
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
        // Authentic datagrams spend nothing of the failures' rate; the terminal's burst (and
        // its two in flight) lets some in, acknowledged; the rest get no answer (their agent
        // goes to HTTPS).
        assert_eq!(harness.dropped(Dropped::FleetRate), 0);
        assert!((1..=5).contains(&acks), "{answers:?}");
        assert_eq!(answers.len(), acks, "{answers:?}");
        assert_eq!(harness.dropped(Dropped::TerminalRate) as usize, 38 - acks);
    }

    #[test]
    fn the_key_cache_is_bounded_and_a_nonce_taken_twice_at_most() {
        let mut keys = KeyCache::new(8);
        let key = DatagramKey::from_token("k1.token");
        for terminal in 0..100 {
            let name = keys.name(&format!("T-{terminal}"), "k1", 0);
            keys.insert(name, Known::new(key.clone(), 0));
            assert!(keys.len() <= 8, "{}", keys.len());
        }
        // The newest are there.
        let newest = keys.name("T-99", "k1", 0);
        let known = keys
            .get(newest)
            .unwrap_or_else(|| panic!("the newest key is gone"));
        let nonce = |byte: u8| [byte; NONCE_BYTES];
        assert!(known.take_nonce(&nonce(1)));
        assert!(known.take_nonce(&nonce(1)), "the agent's resend");
        assert!(!known.take_nonce(&nonce(1)), "a replay");
        for byte in 2..=4 {
            assert!(known.take_nonce(&nonce(byte)));
        }
        assert!(!known.take_nonce(&nonce(1)), "still remembered");
        // Pushed out by newer ones: remembered no longer (the terminal's rate bounds those).
        assert!(known.take_nonce(&nonce(5)));
        assert!(known.take_nonce(&nonce(1)));
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
        let config = DatagramConfig {
            max_cached_keys: 1,
            ..DatagramConfig::default()
        };
        assert_eq!(
            config.validate().map_err(|(key, _)| key),
            Err("max_cached_keys".to_string())
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
