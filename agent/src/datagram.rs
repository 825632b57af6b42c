//! The datagram client: sends one spooled report as one sealed UDP datagram to the collector
//! (`posmon_protocol::datagram`) and waits for its sealed answer — an acknowledgement, or a
//! refusal that sends the report by HTTPS instead. `deliver.rs` decides when to use it.
//!
//! It never decides what to forget: it only says what the collector answered, authenticated
//! under the terminal's key and bound to this very request, so a spoofed or replayed answer is
//! not one. Its traffic is counted exactly: every datagram's UDP payload plus the IP and UDP
//! headers, both ways, plus an estimate for the collector's name lookups.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use posmon_protocol::datagram::{
    open_answer, parse_report, seal_report, token_parts, Answer, DatagramError, DatagramKey,
    ReportHeader, DATAGRAM_MAX_BYTES, IPV4_UDP_OVERHEAD_BYTES, IPV6_UDP_OVERHEAD_BYTES,
    NONCE_BYTES,
};
use tokio::net::UdpSocket;

/// How long to wait for an answer before sending the datagram once more, and then before
/// giving up on it: longer than a slow mobile round trip, short enough that a network that
/// drops UDP costs a few seconds before HTTPS.
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// Sends per report: the first and one retry.
const SENDS: u32 = 2;
/// How long a resolved collector address is used before it is looked up again (the system
/// resolver does not tell the record's TTL).
const ADDRESS_KEPT: Duration = Duration::from_secs(15 * 60);
/// Estimated IP bytes of one lookup of the collector's name by the system resolver: a query
/// and an answer for A and for AAAA, about 90 bytes each with their IP and UDP headers.
pub const LOOKUP_BYTES: u64 = 4 * 90;

/// Why a report got no answer by datagram.
#[derive(Debug, thiserror::Error)]
pub enum DatagramFailure {
    /// The report does not fit one datagram (or the token is not one a datagram can name).
    #[error("{0}")]
    Unfit(DatagramError),
    #[error("cannot resolve the collector's address {0}: {1}")]
    Resolve(String, String),
    #[error("cannot send a datagram: {0}")]
    Io(#[from] std::io::Error),
    #[error("no randomness for the nonce: {0}")]
    Random(String),
    #[error("no answer within {} s, {SENDS} sends", ANSWER_WAIT.as_secs())]
    NoAnswer,
}

/// What the collector answered, and how long after the send it was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub answer: Answer,
    /// From the send that the answer may be to; `None` when the datagram was sent twice (the
    /// answer may be to either, so the round trip is unknown).
    pub round_trip: Option<Duration>,
}

pub struct DatagramClient {
    key: DatagramKey,
    terminal_id: String,
    key_id: String,
    generation: u32,
    /// `host:port` of the collector's datagram listener.
    target: String,
    resolved: Option<(SocketAddr, Instant)>,
    /// IP bytes both ways since the last [`DatagramClient::take_traffic`].
    traffic: u64,
}

impl DatagramClient {
    /// A client for `terminal_id` under `token`, towards `host` and `port`.
    pub fn new(
        terminal_id: &str,
        token: &str,
        host: &str,
        port: u16,
    ) -> Result<Self, DatagramError> {
        let (key_id, generation) = token_parts(token)?;
        // An IPv6 literal host comes bracketed from the URL, as `lookup_host` wants it.
        let target = format!("{host}:{port}");
        Ok(DatagramClient {
            key: DatagramKey::from_token(token),
            terminal_id: terminal_id.to_string(),
            key_id,
            generation,
            target,
            resolved: None,
            traffic: 0,
        })
    }

    /// IP bytes both ways since the last call.
    pub fn take_traffic(&mut self) -> u64 {
        std::mem::take(&mut self.traffic)
    }

    async fn address(&mut self) -> Result<SocketAddr, DatagramFailure> {
        if let Some((address, at)) = self.resolved {
            if at.elapsed() < ADDRESS_KEPT {
                return Ok(address);
            }
        }
        self.traffic = self.traffic.saturating_add(LOOKUP_BYTES);
        let address = tokio::net::lookup_host(&self.target)
            .await
            .map_err(|error| DatagramFailure::Resolve(self.target.clone(), error.to_string()))?
            .next()
            .ok_or_else(|| {
                DatagramFailure::Resolve(self.target.clone(), "no address".to_string())
            })?;
        self.resolved = Some((address, Instant::now()));
        Ok(address)
    }

    /// Forgets the resolved address: after a failure, the next try looks it up again.
    fn forget_address(&mut self) {
        self.resolved = None;
    }

    /// Sends one report's JSON of `agent_instance` and waits for the collector's answer (one
    /// retry).
    pub async fn exchange(
        &mut self,
        report_json: &[u8],
        agent_instance: &str,
    ) -> Result<Answered, DatagramFailure> {
        let mut nonce = [0_u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|error| DatagramFailure::Random(error.to_string()))?;
        let header = ReportHeader {
            terminal_id: self.terminal_id.clone(),
            key_id: self.key_id.clone(),
            generation: self.generation,
            nonce,
        };
        let request = seal_report(&self.key, &header, Some(agent_instance), report_json)
            .map_err(DatagramFailure::Unfit)?;
        let request_header = parse_report(&request)
            .map_err(DatagramFailure::Unfit)?
            .header_bytes
            .to_vec();
        let address = self.address().await?;
        let outcome = self.send_and_wait(address, &request, &request_header).await;
        if outcome.is_err() {
            self.forget_address();
        }
        outcome
    }

    async fn send_and_wait(
        &mut self,
        address: SocketAddr,
        request: &[u8],
        request_header: &[u8],
    ) -> Result<Answered, DatagramFailure> {
        let overhead = if address.is_ipv4() {
            IPV4_UDP_OVERHEAD_BYTES
        } else {
            IPV6_UDP_OVERHEAD_BYTES
        };
        let local: SocketAddr = if address.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0_u16; 8], 0))
        };
        let socket = UdpSocket::bind(local).await?;
        // Connected: the kernel passes on only datagrams from the collector's address.
        socket.connect(address).await?;
        let mut buffer = vec![0_u8; DATAGRAM_MAX_BYTES];
        for send in 0..SENDS {
            socket.send(request).await?;
            self.traffic = self.traffic.saturating_add(request.len() as u64 + overhead);
            let sent_at = Instant::now();
            let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
            loop {
                let received = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await;
                let length = match received {
                    Err(_) => break,
                    Ok(Ok(length)) => length,
                    // An ICMP error (port unreachable: no datagram listener) shows as a failed
                    // receive. Believed at once: at worst a forged one sends this delivery by
                    // HTTPS, which a datagram refusal may do anyway.
                    Ok(Err(error)) => return Err(DatagramFailure::Io(error)),
                };
                self.traffic = self.traffic.saturating_add(length as u64 + overhead);
                match open_answer(&self.key, request_header, &buffer[..length]) {
                    Ok(answer) => {
                        return Ok(Answered {
                            answer,
                            round_trip: (send == 0).then(|| sent_at.elapsed()),
                        })
                    }
                    // Not an answer to this request under this key: spoofed, stale or
                    // garbled. Keep waiting for the real one.
                    Err(error) => {
                        tracing::debug!(%error, "Ignored a datagram that is not the answer.");
                    }
                }
            }
        }
        Err(DatagramFailure::NoAnswer)
    }
}

#[cfg(test)]
mod tests {
    use posmon_protocol::datagram::{seal_answer, Refusal};

    use super::*;

    const TOKEN: &str = "k1.2.qfe73r2DOVolGgwEq-2T9S5JqRlYO8O41Y1YUiAA7mM";
    const INSTANCE: &str = "6f1c2a9e-4b7d-4e21-9a3f-0c5d8e7b1a42";

    /// A stand-in collector on loopback: answers each datagram by `respond`.
    async fn collector(
        respond: impl Fn(usize, &[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let address = socket
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"));
        let task = tokio::spawn(async move {
            let mut buffer = vec![0; 2048];
            let mut count = 0;
            while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
                for answer in respond(count, &buffer[..length]) {
                    let _ = socket.send_to(&answer, peer).await;
                }
                count += 1;
            }
        });
        (address, task)
    }

    fn ack_to(request: &[u8], answer: Answer) -> Vec<u8> {
        let parsed = parse_report(request).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(parsed.header.terminal_id, "T-1");
        assert_eq!(
            (parsed.header.key_id.as_str(), parsed.header.generation),
            ("k1", 2)
        );
        seal_answer(
            &DatagramKey::from_token(TOKEN),
            parsed.header_bytes,
            &answer,
            [3; NONCE_BYTES],
        )
    }

    const ACK: Answer = Answer::Ack {
        sequence: 5,
        collector_time_unix_ms: 1_796_000_000_000,
        control: posmon_protocol::datagram::AckControl {
            config: None,
            probe_request: None,
        },
    };

    fn client(address: SocketAddr) -> DatagramClient {
        DatagramClient::new("T-1", TOKEN, "127.0.0.1", address.port())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    #[tokio::test]
    async fn an_answer_is_taken_and_the_traffic_counted_exactly() {
        let (address, task) = collector(|_, request| vec![ack_to(request, ACK)]).await;
        let mut client = client(address);
        let answered = client
            .exchange(b"{\"sequence\":5}", INSTANCE)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(answered.answer, ACK);
        assert!(answered.round_trip.is_some());
        let traffic = client.take_traffic();
        // The lookup estimate, the request and the answer, each with 28 header bytes.
        assert!(
            traffic > LOOKUP_BYTES + 2 * IPV4_UDP_OVERHEAD_BYTES,
            "{traffic}"
        );
        assert_eq!(client.take_traffic(), 0);
        task.abort();
    }

    #[tokio::test]
    async fn spoofed_and_stale_answers_are_ignored_and_a_lost_one_retried() {
        let stale = std::sync::Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
        let kept = std::sync::Arc::clone(&stale);
        let (address, task) = collector(move |count, request| {
            // The first report's two sends are lost (its refusal kept, to be replayed later);
            // the second report's first send is lost too; its retry gets garbage, an answer
            // under another key, the stale refusal, then the real answer.
            let mut stale_answer = kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match count {
                0 => {
                    *stale_answer = Some(ack_to(request, Answer::Refusal(Refusal::Overloaded)));
                    vec![]
                }
                1 | 2 => vec![],
                _ => {
                    let parsed = parse_report(request).unwrap_or_else(|error| panic!("{error}"));
                    let forged = seal_answer(
                        &DatagramKey::from_token("k1.someone-else"),
                        parsed.header_bytes,
                        &Answer::Ack {
                            sequence: 1 << 40,
                            collector_time_unix_ms: 0,
                            control: posmon_protocol::datagram::AckControl::default(),
                        },
                        [4; NONCE_BYTES],
                    );
                    let mut answers = vec![b"garbage".to_vec(), forged];
                    answers.extend(stale_answer.take());
                    answers.push(ack_to(request, ACK));
                    answers
                }
            }
        })
        .await;
        let mut client = client(address);
        let first = client.exchange(b"{\"sequence\":4}", INSTANCE).await;
        assert!(matches!(first, Err(DatagramFailure::NoAnswer)), "{first:?}");
        let answered = client
            .exchange(b"{\"sequence\":5}", INSTANCE)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(answered.answer, ACK);
        assert_eq!(answered.round_trip, None, "answered after the retry");
        assert!(
            stale.lock().map(|kept| kept.is_none()).unwrap_or(false),
            "the stale answer was sent"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_report_too_large_for_a_datagram_is_unfit() {
        let mut client = client(SocketAddr::from(([127, 0, 0, 1], 9)));
        let mut state: u32 = 7;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                b'a' + (state % 26) as u8
            })
            .collect();
        let outcome = client.exchange(&noise, INSTANCE).await;
        assert!(
            matches!(outcome, Err(DatagramFailure::Unfit(_))),
            "{outcome:?}"
        );
        assert_eq!(client.take_traffic(), 0, "nothing was sent");
    }
}
