//! Delivery against a collector that misbehaves in every way the network and an overloaded or
//! broken server do: 500, a hang, a connection closed mid-body, 429 with Retry-After, a report
//! refused as bad. Nothing is lost, nothing blocks the queue for good, waits are honoured.
//!
//! The misbehaving server is scripted here on loopback: the real collector does not produce these
//! failures on demand.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap fails the test, as it should"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use posmon_agent::backoff::RETRY_AFTER_MAX;
use posmon_agent::config::Transport;
use posmon_agent::deliver::{Deliverer, DeliveryConfig, Outcome};
use posmon_agent::spool::{Spool, SpoolLimits};
use posmon_protocol::datagram::{
    open_report, parse_report, seal_answer, Answer, DatagramKey, Refusal, NONCE_BYTES,
};

/// What the scripted collector does with one request.
#[derive(Debug, Clone)]
enum Step {
    Status500,
    Hang,
    CloseMidBody,
    TooMany {
        retry_after_seconds: u64,
    },
    /// 400 naming `reports[index]` as bad.
    BadReport {
        index: usize,
    },
    Accept,
    /// Writes these bytes as the whole answer, then closes the connection.
    Raw(String),
}

struct Received {
    /// The sequences of each request's batch, in arrival order.
    batches: Vec<Vec<u64>>,
    /// Sequences acknowledged so far (highest held).
    held: u64,
    at: Vec<Instant>,
    /// The terminal header of each request.
    terminals: Vec<Option<String>>,
}

fn read_request(stream: &mut TcpStream) -> Option<(Vec<u8>, Option<String>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0usize;
    let mut gzip = false;
    let mut terminal = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
        if lower.starts_with("content-encoding:") && lower.contains("gzip") {
            gzip = true;
        }
        if let Some(value) = lower.strip_prefix("x-posmon-terminal:") {
            // The value as sent (header names are case-insensitive, values are not).
            let start = line.len() - value.len();
            terminal = Some(line[start..].trim().to_string());
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    if gzip {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .ok()?;
        body = plain;
    }
    Some((body, terminal))
}

fn sequences(body: &[u8]) -> Vec<u64> {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|report| report["sequence"].as_u64().unwrap())
        .collect()
}

fn respond(stream: &mut TcpStream, status: &str, headers: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
}

/// Serves `script` (then accepts everything) and records what arrived.
fn scripted_collector(script: Vec<Step>) -> (String, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Received {
        batches: vec![],
        held: 0,
        at: vec![],
        terminals: vec![],
    }));
    let record = Arc::clone(&received);
    let steps = Arc::new(Mutex::new(script.into_iter()));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let record = Arc::clone(&record);
            let steps = Arc::clone(&steps);
            // A thread per connection: a hung one must not hold up the next.
            std::thread::spawn(move || serve_connection(stream, &steps, &record));
        }
    });
    (url, received)
}

fn serve_connection(
    mut stream: TcpStream,
    steps: &Mutex<std::vec::IntoIter<Step>>,
    record: &Mutex<Received>,
) {
    // Keep-alive: serve requests on this connection until it closes.
    while let Some((body, terminal)) = read_request(&mut stream) {
        let batch = sequences(&body);
        let step = steps.lock().unwrap().next().unwrap_or(Step::Accept);
        let mut received = record.lock().unwrap();
        received.batches.push(batch.clone());
        received.at.push(Instant::now());
        received.terminals.push(terminal);
        match step {
            Step::Status500 => respond(&mut stream, "500 Internal Server Error", "", "{}"),
            Step::Hang => {
                drop(received);
                std::thread::sleep(Duration::from_secs(3));
                break;
            }
            Step::CloseMidBody => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{\"terminal_id\":");
                break;
            }
            Step::TooMany {
                retry_after_seconds,
            } => respond(
                &mut stream,
                "429 Too Many Requests",
                &format!("retry-after: {retry_after_seconds}\r\n"),
                "{}",
            ),
            Step::BadReport { index } => respond(
                &mut stream,
                "400 Bad Request",
                "",
                &format!(
                    r#"{{"error":{{"reason":"invalid_field","field":"reports[{index}].labels.region","message":"too long"}}}}"#
                ),
            ),
            Step::Raw(answer) => {
                let _ = stream.write_all(answer.as_bytes());
                break;
            }
            Step::Accept => {
                received.held = received.held.max(*batch.iter().max().unwrap());
                let ack = format!(
                    r#"{{"terminal_id":"T-1","acknowledged_sequence":{},"collector_time":"2026-11-26T02:00:00Z"}}"#,
                    received.held
                );
                respond(&mut stream, "200 OK", "", &ack);
            }
        }
    }
}

fn deliverer(url: &str, dir: &std::path::Path) -> Deliverer {
    Deliverer::new(https_config(url, dir)).unwrap()
}

/// These scripts are HTTP servers: HTTPS only, unless a test turns datagrams on.
fn https_config(url: &str, dir: &std::path::Path) -> DeliveryConfig {
    DeliveryConfig {
        collector_url: url.to_string(),
        terminal_id: "T-1".into(),
        token: "k1.test".into(),
        request_timeout: Duration::from_millis(700),
        max_batch_reports: 4,
        max_batch_bytes: 64 * 1024,
        ca_file: None,
        client_certificate: None,
        rejected_dir: dir.join("rejected"),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        transport: Transport::Https,
        datagram_port: None,
    }
}

fn spool_with(dir: &std::path::Path, count: u64) -> Spool {
    let limits = SpoolLimits {
        max_bytes: 1 << 20,
        max_age_seconds: 86_400,
    };
    let (mut spool, _) = Spool::open(&dir.join("spool"), limits, 1000).unwrap();
    for _ in 0..count {
        let sequence = spool.next_sequence();
        let payload =
            format!(r#"{{"schema_version":1,"terminal_id":"T-1","sequence":{sequence}}}"#);
        spool.append(1000, payload.as_bytes(), 0, 1000).unwrap();
    }
    spool
}

/// Delivers until drained, sleeping as told between attempts; returns the delays asked for.
async fn drain(deliverer: &mut Deliverer, spool: &mut Spool) -> Vec<Duration> {
    let mut waits = Vec::new();
    for _ in 0..50 {
        match deliverer.deliver(spool).await.unwrap() {
            Outcome::Drained => return waits,
            Outcome::RetryAfter(delay) => {
                waits.push(delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
    panic!("never drained; waits {waits:?}");
}

#[tokio::test]
async fn failures_retry_with_backoff_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (url, received) = scripted_collector(vec![
        Step::Status500,
        Step::Hang,
        Step::CloseMidBody,
        Step::Status500,
    ]);
    let mut spool = spool_with(dir.path(), 10);
    let mut deliverer = deliverer(&url, dir.path());
    let waits = drain(&mut deliverer, &mut spool).await;
    assert_eq!(waits.len(), 4, "one retry per failure: {waits:?}");
    assert!(
        waits.iter().all(|wait| *wait <= Duration::from_millis(200)),
        "capped: {waits:?}"
    );
    let received = received.lock().unwrap();
    assert_eq!(received.held, 10);
    // The failed batch was sent again, and everything arrived in order.
    let delivered: Vec<u64> = received.batches[4..].concat();
    assert_eq!(delivered, (1..=10).collect::<Vec<_>>());
    assert!(received.batches[..4]
        .iter()
        .all(|batch| batch == &[1, 2, 3, 4]));
    assert_eq!(spool.pending_count(), 0);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (url, received) = scripted_collector(vec![Step::TooMany {
        retry_after_seconds: 2,
    }]);
    let mut spool = spool_with(dir.path(), 3);
    let mut deliverer = deliverer(&url, dir.path());
    let waits = drain(&mut deliverer, &mut spool).await;
    assert_eq!(waits.len(), 1);
    assert!(
        waits[0] >= Duration::from_secs(2) && waits[0] < Duration::from_secs(3),
        "{waits:?}"
    );
    let received = received.lock().unwrap();
    assert!(received.at[1] - received.at[0] >= Duration::from_secs(2));
    assert_eq!(received.held, 3);
}

#[tokio::test]
async fn a_refused_report_is_set_aside_and_does_not_block_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    // The batch [1..4] is refused at index 2: the agent sends [1, 2] alone, then [3, 4, 5, 6]
    // is refused at index 0: report 3 is set aside, and the rest goes on.
    let (url, received) = scripted_collector(vec![
        Step::BadReport { index: 2 },
        Step::Accept,
        Step::BadReport { index: 0 },
    ]);
    let mut spool = spool_with(dir.path(), 8);
    let mut deliverer = deliverer(&url, dir.path());
    let waits = drain(&mut deliverer, &mut spool).await;
    assert!(waits.is_empty(), "a bad report needs no wait: {waits:?}");
    let received = received.lock().unwrap();
    assert_eq!(
        received.batches,
        vec![
            vec![1, 2, 3, 4],
            vec![1, 2],
            vec![3, 4, 5, 6],
            vec![4, 5, 6, 7],
            vec![8]
        ]
    );
    assert_eq!(received.held, 8);
    let kept = std::fs::read_to_string(dir.path().join("rejected").join(format!("{:020}.json", 3)))
        .unwrap();
    assert!(
        kept.contains("too long") && kept.contains("\"sequence\":3"),
        "{kept}"
    );
    assert_eq!(spool.dropped(), 1, "the set-aside report is counted");
}

fn answer(status: &str, headers: &str, body: &str) -> Step {
    Step::Raw(format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
        body.len()
    ))
}

fn ack(terminal: &str, sequence: u64, collector_time: &str) -> String {
    format!(
        r#"{{"terminal_id":"{terminal}","acknowledged_sequence":{sequence},"collector_time":"{collector_time}"}}"#
    )
}

/// A collector in hostile hands answers whatever it likes: the agent must neither panic, nor
/// allocate without bound, nor wait for ever, nor forget a report it has not delivered.
#[tokio::test]
async fn a_hostile_collector_cannot_crash_the_agent_or_lose_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let now = "2026-11-26T02:00:00Z";
    let huge_chunked = {
        let chunk = "x".repeat(16 * 1024);
        let mut raw = String::from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        for _ in 0..16 {
            raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
        }
        raw.push_str("0\r\n\r\n");
        raw
    };
    let script = vec![
        answer(
            "429 Too Many Requests",
            "retry-after: 18446744073709551615\r\n",
            "{}",
        ),
        answer(
            "503 Service Unavailable",
            "retry-after: Fri, 31 Dec 9999 23:59:59 GMT\r\n",
            "",
        ),
        answer("429 Too Many Requests", "retry-after: -1e308\r\n", ""),
        answer("200 OK", "", "not json at all"),
        answer("200 OK", "", &ack("T-2", 4, now)),
        answer(
            "200 OK",
            "",
            "{\"terminal_id\":\"T-1\",\"acknowledged_sequence\":1e308}",
        ),
        Step::Raw(huge_chunked),
        Step::Raw("HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\n{".into()),
        answer("299 Whatever", "", "?"),
        answer("200 OK", "", &ack("T-1", 3, "-9999-01-01T00:00:00Z")),
        // Above what this spool ever issued: the collector holds another device's (or a forged)
        // mark and applied none of these; the agent starts a new instance, counting the
        // reports it could not deliver as dropped rather than delivered.
        answer("200 OK", "", &ack("T-1", 1_000_000, "9999-12-31T23:59:59Z")),
    ];
    let hostile = script.len();
    let (url, received) = scripted_collector(script);
    let mut spool = spool_with(dir.path(), 10);
    let instance = spool.instance().to_string();
    let mut deliverer = deliverer(&url, dir.path());
    let mut waits = Vec::new();
    for _ in 0..40 {
        match deliverer.deliver(&mut spool).await.unwrap() {
            Outcome::Drained => break,
            Outcome::RetryAfter(delay) => {
                waits.push(delay);
                // The waits asked for are checked below; the test does not sit them out.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    assert_eq!(
        spool.pending_count(),
        0,
        "drained in the end; waits {waits:?}"
    );
    assert_eq!(
        spool.dropped(),
        10,
        "the reports the collector never applied are counted as dropped, not delivered"
    );
    assert_ne!(spool.instance(), instance, "a new agent instance");
    let cap = RETRY_AFTER_MAX + Duration::from_secs(1);
    assert!(waits.iter().all(|wait| *wait <= cap), "{waits:?}");
    assert!(
        waits[..2].iter().all(|wait| *wait >= RETRY_AFTER_MAX),
        "a huge Retry-After is honoured up to the cap: {waits:?}"
    );
    let received = received.lock().unwrap();
    assert!(
        received
            .terminals
            .iter()
            .all(|terminal| terminal.as_deref() == Some("T-1")),
        "{:?}",
        received.terminals
    );
    // Until the last hostile answer nothing was acknowledged: every batch was [1, 2, 3, 4].
    assert!(
        received.batches[..hostile]
            .iter()
            .all(|batch| batch == &[1, 2, 3, 4]),
        "{:?}",
        received.batches
    );
    assert_eq!(received.batches.len(), hostile, "{:?}", received.batches);
}

/// A datagram collector on loopback that answers each report datagram by `respond` (given the
/// report's sequence), and records the sequences it got.
fn datagram_collector(
    port: u16,
    instance: String,
    respond: impl Fn(u64) -> Option<Answer> + Send + 'static,
) -> Arc<Mutex<Vec<u64>>> {
    let socket = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&received);
    std::thread::spawn(move || {
        let key = DatagramKey::from_token("k1.test");
        let mut buffer = vec![0; 2048];
        while let Ok((length, peer)) = socket.recv_from(&mut buffer) {
            let Ok(parsed) = parse_report(&buffer[..length]) else {
                continue;
            };
            let Ok(json) = open_report(&key, &parsed, Some(&instance)) else {
                continue;
            };
            let sequence = sequences(
                format!("{{\"reports\":[{}]}}", String::from_utf8_lossy(&json)).as_bytes(),
            )[0];
            record.lock().unwrap().push(sequence);
            if let Some(answer) = respond(sequence) {
                let sealed = seal_answer(&key, parsed.header_bytes, &answer, [5; NONCE_BYTES]);
                let _ = socket.send_to(&sealed, peer);
            }
        }
    });
    received
}

fn datagram_deliverer(url: &str, dir: &std::path::Path) -> Deliverer {
    Deliverer::new(DeliveryConfig {
        transport: Transport::Datagram,
        ..https_config(url, dir)
    })
    .unwrap()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_short_spool_goes_by_datagram_and_its_clock_comes_from_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (url, over_https) = scripted_collector(vec![]);
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let mut spool = spool_with(dir.path(), 2);
    let instance = spool.instance().to_string();
    let by_datagram = datagram_collector(port_of(&url), instance, move |sequence| {
        Some(Answer::Ack {
            sequence,
            // The collector's clock is a minute behind.
            collector_time_unix_ms: now_ms - 60_000,
            control: posmon_protocol::datagram::AckControl::default(),
        })
    });
    let mut deliverer = datagram_deliverer(&url, dir.path());
    assert_eq!(
        deliverer.deliver(&mut spool).await.unwrap(),
        Outcome::Drained
    );
    assert_eq!(*by_datagram.lock().unwrap(), vec![1, 2]);
    assert!(over_https.lock().unwrap().batches.is_empty());
    assert_eq!(spool.pending_count(), 0);
    let offset = deliverer
        .clock()
        .map(|clock| clock.offset_ms)
        .unwrap_or_default();
    assert!((offset - 60_000.0).abs() < 5_000.0, "{offset}");
    // Two datagrams and two answers, each with 28 header bytes, and one name lookup.
    let traffic = deliverer.take_traffic();
    assert!((300..1_000).contains(&traffic), "{traffic}");
    assert_eq!(deliverer.take_traffic(), 0);
}

#[tokio::test]
async fn batches_refusals_and_silence_go_by_https_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (url, over_https) = scripted_collector(vec![]);
    let mut spool = spool_with(dir.path(), 4);
    let instance = spool.instance().to_string();
    // Refuses sequence 5 (a new instance), never answers from 7 on.
    let by_datagram = datagram_collector(port_of(&url), instance, |sequence| match sequence {
        5 => Some(Answer::Refusal(Refusal::NewInstance)),
        7.. => None,
        _ => Some(Answer::Ack {
            sequence,
            collector_time_unix_ms: 0,
            control: posmon_protocol::datagram::AckControl::default(),
        }),
    });
    let mut deliverer = datagram_deliverer(&url, dir.path());
    // After an outage: a batch, by HTTPS.
    assert_eq!(
        deliverer.deliver(&mut spool).await.unwrap(),
        Outcome::Drained
    );
    assert_eq!(over_https.lock().unwrap().batches, vec![vec![1, 2, 3, 4]]);
    assert!(by_datagram.lock().unwrap().is_empty());
    assert!(
        !deliverer.takes_heartbeats(),
        "an acknowledgement from before heartbeats"
    );
    let https_traffic = deliverer.take_traffic();
    assert!(
        https_traffic > 500,
        "an HTTP exchange is estimated: {https_traffic}"
    );
    // A new instance is refused by datagram: HTTPS, and datagrams again at once.
    append(&mut spool, 1);
    assert_eq!(
        deliverer.deliver(&mut spool).await.unwrap(),
        Outcome::Drained
    );
    assert_eq!(over_https.lock().unwrap().batches.last(), Some(&vec![5]));
    append(&mut spool, 1);
    assert_eq!(
        deliverer.deliver(&mut spool).await.unwrap(),
        Outcome::Drained
    );
    assert_eq!(*by_datagram.lock().unwrap(), vec![5, 6]);
    assert!(deliverer.takes_heartbeats(), "a datagram's acknowledgement");
    // Silence: sent twice, then HTTPS, and HTTPS for a while after.
    append(&mut spool, 1);
    let started = Instant::now();
    assert_eq!(
        deliverer.deliver(&mut spool).await.unwrap(),
        Outcome::Drained
    );
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(*by_datagram.lock().unwrap(), vec![5, 6, 7, 7]);
    append(&mut spool, 1);
    assert_eq!(
        deliverer.deliver(&mut spool).await.unwrap(),
        Outcome::Drained
    );
    assert_eq!(by_datagram.lock().unwrap().len(), 4);
    assert_eq!(over_https.lock().unwrap().batches[2..], [vec![7], vec![8]]);
    assert_eq!(over_https.lock().unwrap().held, 8);
    assert!(
        !deliverer.takes_heartbeats(),
        "the latest acknowledgement rules"
    );
    assert_eq!(spool.pending_count(), 0);
}

fn append(spool: &mut Spool, count: u64) {
    for _ in 0..count {
        let sequence = spool.next_sequence();
        let payload =
            format!(r#"{{"schema_version":1,"terminal_id":"T-1","sequence":{sequence}}}"#);
        spool.append(1000, payload.as_bytes(), 0, 1000).unwrap();
    }
}

/// An answer lost after the collector took reports 1 to 3 over HTTPS: the datagram of report 1
/// is answered with 3. That covers 2 and 3 (nothing is sent twice, nothing dropped); only an
/// acknowledgement above every report issued starts the sequences anew.
#[tokio::test]
async fn a_datagram_acknowledgement_of_later_reports_covers_them() {
    let dir = tempfile::tempdir().unwrap();
    let (url, over_https) = scripted_collector(vec![]);
    let mut spool = spool_with(dir.path(), 3);
    let instance = spool.instance().to_string();
    let first = spool.instance().to_string();
    let by_datagram = datagram_collector(port_of(&url), instance, |sequence| match sequence {
        1 => Some(Answer::Ack {
            sequence: 3,
            collector_time_unix_ms: 0,
            control: posmon_protocol::datagram::AckControl::default(),
        }),
        _ => Some(Answer::Ack {
            sequence: 9,
            collector_time_unix_ms: 0,
            control: posmon_protocol::datagram::AckControl::default(),
        }),
    });
    let mut deliverer = datagram_deliverer(&url, dir.path());
    assert_eq!(
        deliverer.deliver(&mut spool).await.unwrap(),
        Outcome::Drained
    );
    assert_eq!(*by_datagram.lock().unwrap(), vec![1]);
    assert_eq!(
        (spool.pending_count(), spool.dropped(), spool.instance()),
        (0, 0, first.as_str()),
        "acknowledged, not dropped; the same instance"
    );
    assert!(over_https.lock().unwrap().batches.is_empty());
    // Report 4's datagram is answered with 9: above anything issued, the sequences start anew.
    append(&mut spool, 1);
    assert_eq!(
        deliverer.deliver(&mut spool).await.unwrap(),
        Outcome::RetryAfter(Duration::ZERO)
    );
    assert_ne!(spool.instance(), first);
    assert_eq!(spool.dropped(), 1);
}
