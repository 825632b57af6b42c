//! A black-box fuzzer against the real collector: thousands of mutated report bodies (JSON
//! values swapped for extremes, bytes flipped, bodies cut, bad compression, wrong headers),
//! most of them signed with a valid terminal token so that they get past authentication, in a
//! bounded time. Every answer must be a deliberate one (2xx or 4xx, or 503/429 with
//! `Retry-After`), never a 500 or a dropped connection; the collector must stay up and answer
//! `/healthz` throughout, and start again healthy on the state the attack left.
//!
//! The seed is printed; `POSMON_FUZZ_SEED` replays a run, `POSMON_FUZZ_CASES` sets its size.

use std::io::Write;
use std::time::{Duration, Instant};

use posmon_e2e_tests::{wait_for, Collector, HttpSink, SmtpSink};
use serde_json::{json, Value};

const FIXTURES: [&str; 3] = [
    include_str!("../../protocol/fixtures/v1/full.json"),
    include_str!("../../protocol/fixtures/v1/minimal.json"),
    include_str!("../../protocol/fixtures/v1/delta.json"),
];

const TERMINALS: [&str; 3] = ["T-FUZZ-1", "T-FUZZ-2", "T-FUZZ-3"];

/// The time the whole run may take (both collector lives included).
const BUDGET: Duration = Duration::from_secs(120);

/// SplitMix64: small, deterministic, good enough to pick mutations.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Values a hostile terminal may put anywhere.
fn extreme(random: &mut Random) -> Value {
    match random.below(24) {
        0 => json!(u64::MAX),
        1 => json!(i64::MIN),
        2 => json!(-1),
        3 => json!(1e308),
        4 => json!(-1e308),
        5 => json!(0.000_000_1),
        6 => json!("9999-12-31T23:59:59Z"),
        7 => json!("0000-01-01T00:00:00Z"),
        8 => json!("-9999-01-01T00:00:00Z"),
        9 => json!("2026-13-45T25:61:61Z"),
        10 => json!("x".repeat(5_000)),
        11 => json!("[click](https://evil.example) <script>alert(1)</script> @all\n# forged"),
        12 => json!("收银台\u{202e}\u{0000}\u{ffff}"),
        13 => Value::Null,
        14 => json!(true),
        15 => json!([]),
        16 => json!({}),
        17 => json!({"unknown": [1, 2, {"deeper": null}]}),
        18 => json!(18_446_744_073_709_551_615_u64),
        19 => json!(9_007_199_254_740_993_u64),
        20 => json!(""),
        21 => json!(4_294_967_296_u64),
        22 => json!(["ok", "failed", "unavailable", "other"][random.below(4)]),
        _ => json!(random.next() as i64),
    }
}

/// Every path (object keys and array indexes) in a value, to pick one to mutate.
fn paths(value: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                prefix.push(Value::String(key.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                prefix.push(json!(index));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(value: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    let mut current = value;
    for step in path {
        current = match step {
            Value::String(key) => current.get_mut(key.as_str())?,
            Value::Number(index) => current.get_mut(index.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(current)
}

/// A structural mutation: a few values replaced, removed, duplicated or multiplied.
fn mutate_json(random: &mut Random, batch: &mut Value, most: usize) {
    for _ in 0..=random.below(most) {
        let mut all = Vec::new();
        paths(batch, &mut Vec::new(), &mut all);
        let path = random.pick(&all).clone();
        let choice = random.below(10);
        if choice == 0 && !path.is_empty() {
            // Remove the value from its parent.
            let (last, parent_path) = path.split_last().unwrap_or((&Value::Null, &[]));
            if let Some(parent) = at(batch, parent_path) {
                match (parent, last) {
                    (Value::Object(map), Value::String(key)) => {
                        map.remove(key);
                    }
                    (Value::Array(items), Value::Number(index)) => {
                        let index = index.as_u64().unwrap_or(0) as usize;
                        if index < items.len() {
                            items.remove(index);
                        }
                    }
                    _ => {}
                }
            }
        } else if choice == 1 {
            // Multiply an array (up to past the batch and list limits).
            if let Some(Value::Array(items)) = at(batch, &path) {
                if let Some(first) = items.first().cloned() {
                    let copies = *random.pick(&[2, 40, 600]);
                    items.extend(std::iter::repeat_n(first, copies));
                }
            }
        } else if let Some(slot) = at(batch, &path) {
            *slot = extreme(random);
        }
    }
}

/// A byte-level mutation: flips, cuts and insertions.
fn mutate_bytes(random: &mut Random, bytes: &mut Vec<u8>) {
    match random.below(3) {
        0 => {
            for _ in 0..=random.below(8) {
                let position = random.below(bytes.len());
                if let Some(byte) = bytes.get_mut(position) {
                    *byte = random.next() as u8;
                }
            }
        }
        1 => {
            let keep = random.below(bytes.len() + 1);
            bytes.truncate(keep);
        }
        _ => {
            let position = random.below(bytes.len() + 1);
            let inserted: Vec<u8> = (0..random.below(16) + 1)
                .map(|_| *random.pick(b"{}[]\",:0123456789e-.\\ntrufalsn\x00\xff"))
                .collect();
            bytes.splice(position..position, inserted);
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // A stored (uncompressed) deflate stream is enough to exercise the decoder; the
    // container's framing and CRC are what a mutation breaks.
    let mut encoder = GzipStored::default();
    encoder
        .write_all(bytes)
        .unwrap_or_else(|error| panic!("{error}"));
    encoder.finish()
}

/// A minimal gzip writer (stored blocks) so the test needs no compression crate.
#[derive(Default)]
struct GzipStored(Vec<u8>);

impl Write for GzipStored {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl GzipStored {
    fn finish(self) -> Vec<u8> {
        let data = self.0;
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        let mut chunks = data.chunks(65_535).peekable();
        if chunks.peek().is_none() {
            out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        while let Some(chunk) = chunks.next() {
            out.push(u8::from(chunks.peek().is_none()));
            let length = chunk.len() as u16;
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(&(!length).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(&crc32(&data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One fuzzed request: body, content encoding and whether to sign it.
struct Case {
    terminal: &'static str,
    body: Vec<u8>,
    encoding: Option<&'static str>,
    content_type: &'static str,
    signed: bool,
}

fn case(random: &mut Random, sequence: &mut u64) -> Case {
    let terminal = *random.pick(&TERMINALS);
    let mut batch: Value = serde_json::from_str(FIXTURES[random.below(FIXTURES.len())])
        .unwrap_or_else(|error| panic!("{error}"));
    if let Some(reports) = batch.get_mut("reports").and_then(Value::as_array_mut) {
        for report in reports {
            report["terminal_id"] = json!(terminal);
            *sequence += 1;
            report["sequence"] = json!(*sequence);
            // The fixtures' own dates age out of the collector's window.
            report["observed_at"] = json!(now_rfc3339());
        }
    }
    // Mostly one value changed, so that many bodies still validate and reach diagnosis,
    // state, the store and the alerts; then several; then bytes.
    let kind = random.below(10);
    if kind < 5 {
        mutate_json(random, &mut batch, 1);
    } else if kind < 8 {
        mutate_json(random, &mut batch, 4);
    }
    let mut body = serde_json::to_vec(&batch).unwrap_or_else(|error| panic!("{error}"));
    if kind >= 7 {
        mutate_bytes(random, &mut body);
    }
    let (body, encoding) = match random.below(8) {
        0 => (gzip(&body), Some("gzip")),
        1 => {
            let mut compressed = gzip(&body);
            mutate_bytes(random, &mut compressed);
            (compressed, Some("gzip"))
        }
        2 => (
            body,
            Some(*random.pick(&["zstd", "br", "gzip, gzip", "identity", "x"])),
        ),
        _ => (body, None),
    };
    let content_type = if random.below(20) == 0 {
        *random.pick(&[
            "text/plain",
            "application/json; charset=utf-16",
            "",
            "application/x",
        ])
    } else {
        "application/json"
    };
    Case {
        terminal,
        body,
        encoding,
        content_type,
        signed: random.below(10) != 0,
    }
}

/// Statuses a deliberate refusal or acceptance may have.
fn deliberate(status: u16) -> bool {
    matches!(
        status,
        200 | 400 | 401 | 403 | 404 | 408 | 409 | 413 | 415 | 422 | 429 | 503
    )
}

#[test]
fn thousands_of_mutated_bodies_get_deliberate_answers() {
    let seed = std::env::var("POSMON_FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as u64)
                .unwrap_or(1)
        });
    let cases: usize = std::env::var("POSMON_FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(4_000);
    eprintln!("fuzz seed {seed} (POSMON_FUZZ_SEED={seed} replays it), {cases} cases");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    // Every message format renders what the fuzzed reports open: the alert pipeline is where
    // a far-future date once crashed the collector (and again after every restart).
    let sinks: Vec<HttpSink> = (0..4).map(|_| HttpSink::start()).collect();
    // The robots' success answers.
    sinks[1].set_reply(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    sinks[2].set_reply(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    sinks[3].set_reply(200, r#"{"code":0,"msg":"success"}"#);
    let smtp = SmtpSink::start();
    let mut config = String::from(
        "[limits]\nterminal_requests_per_minute = 1000000\nterminal_request_burst = 1000000\n\n[diagnosis]\nevaluation_interval_seconds = 1\n\n[alerts]\ndashboard_url = \"http://dash.test\"\ndefault_receiver = \"hook\"\ngroup_wait_seconds = 1\ngroup_interval_seconds = 1\nretry_initial_seconds = 1\nretry_max_seconds = 1\nrequest_timeout_seconds = 2\n",
    );
    let secret_file = dir.path().join("receiver-secret");
    std::fs::write(&secret_file, "a-receiver-secret-of-some-length")
        .unwrap_or_else(|error| panic!("{error}"));
    let secret = format!("{{ file = {:?} }}", secret_file.display().to_string());
    for (name, kind, sink) in [
        ("hook", "webhook", &sinks[0]),
        ("ding", "dingtalk", &sinks[1]),
        ("wecom", "wecom", &sinks[2]),
        ("feishu", "feishu", &sinks[3]),
    ] {
        config.push_str(&format!(
            "[[alerts.receivers]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{}/hook\"\n{}",
            sink.url(),
            if kind == "wecom" {
                String::new()
            } else {
                format!("secret = {secret}\n")
            }
        ));
    }
    config.push_str(&format!(
        "[[alerts.receivers]]\nname = \"mail\"\nkind = \"email\"\nsmtp_server = \"{}\"\nsmtp_tls = \"none\"\nfrom = \"posmon <posmon@collector.test>\"\nto = [\"noc@acquirer.test\"]\n",
        smtp.address
    ));
    for receiver in ["hook", "ding", "wecom", "feishu", "mail"] {
        config.push_str(&format!(
            "[[alerts.routes]]\nname = \"all-to-{receiver}\"\nreceiver = \"{receiver}\"\ncontinue = true\n"
        ));
    }
    let mut collector = Collector::start(dir.path(), &config);
    let tokens: Vec<(&str, String)> = TERMINALS
        .iter()
        .map(|terminal| (*terminal, collector.token(terminal)))
        .collect();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let url = format!("{}{}", collector.url, posmon_protocol::REPORTS_PATH);
    let mut random = Random(seed);
    let mut sequence = 0_u64;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut sent = 0;
    // Requests whose connection closed before an answer (the collector still up).
    let mut closed = 0;
    for index in 0..cases {
        if started.elapsed() > BUDGET / 2 {
            break;
        }
        let case = case(&mut random, &mut sequence);
        let mut request = client.post(&url).body(case.body.clone());
        if !case.content_type.is_empty() {
            request = request.header("content-type", case.content_type);
        }
        if let Some(encoding) = case.encoding {
            request = request.header("content-encoding", encoding);
        }
        if case.signed {
            let token = tokens
                .iter()
                .find(|(terminal, _)| *terminal == case.terminal)
                .map(|(_, token)| token.as_str())
                .unwrap_or_default();
            request = request
                .bearer_auth(token)
                .header("x-posmon-terminal", case.terminal);
        }
        let response = match request.send() {
            Ok(response) => response,
            // A body over the limit is answered 413 as soon as its length is known and the
            // connection closed: a client still writing it may see the close instead. And a
            // connection the collector closed after refusing a body it did not read may be
            // the one the client's pool picks next. Either way the collector must still be
            // there.
            Err(error) => {
                let alive = client
                    .get(format!("{}/healthz", collector.url))
                    .send()
                    .is_ok_and(|response| response.status().is_success());
                assert!(
                    alive,
                    "case {index} (seed {seed}): no answer ({error}) and the collector is gone; body {:?}; log tail:\n{}",
                    String::from_utf8_lossy(&case.body[..case.body.len().min(400)]),
                    tail(&collector.process.log())
                );
                closed += 1;
                continue;
            }
        };
        let status = response.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        assert!(
            deliberate(status),
            "case {index} (seed {seed}): status {status}: {}; body {:?}",
            response.text().unwrap_or_default(),
            String::from_utf8_lossy(&case.body[..case.body.len().min(400)])
        );
        sent += 1;
        if index % 250 == 0 {
            assert_healthy(&client, &collector, seed);
        }
    }
    eprintln!(
        "sent {sent} mutated bodies in {:.1} s; answers by status: {statuses:?}; {closed} connections closed without an answer",
        started.elapsed().as_secs_f64()
    );
    assert!(
        closed * 20 <= sent,
        "more than 5 % of the requests got no answer ({closed} of {sent})"
    );
    assert!(sent >= 500, "too few cases ran in the time budget ({sent})");
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > 0,
        "no mutated body was accepted: the mutations never reach the accepting paths"
    );
    assert!(
        statuses.keys().any(|status| (400..500).contains(status)),
        "no mutated body was refused: the mutations are too gentle"
    );
    // A finale that surely opens findings: three failing reports in a row per terminal, one
    // with the time now, the others dated at the edges of what `time` can represent.
    let now = now_rfc3339();
    for (terminal, observed_at) in
        TERMINALS
            .iter()
            .zip([now.as_str(), "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z"])
    {
        let token = &tokens
            .iter()
            .find(|(id, _)| id == terminal)
            .unwrap_or_else(|| panic!("no token for {terminal}"))
            .1;
        for _ in 0..3 {
            let mut batch: Value =
                serde_json::from_str(FIXTURES[0]).unwrap_or_else(|error| panic!("{error}"));
            for report in batch["reports"].as_array_mut().into_iter().flatten() {
                sequence += 1;
                report["terminal_id"] = json!(terminal);
                report["sequence"] = json!(sequence);
                report["observed_at"] = json!(observed_at);
            }
            let status = client
                .post(&url)
                .bearer_auth(token)
                .header("x-posmon-terminal", *terminal)
                .json(&batch)
                .send()
                .map(|response| response.status().as_u16())
                .unwrap_or_else(|error| panic!("finale: {error}"));
            assert!(deliberate(status), "finale: status {status}");
            *statuses.entry(status).or_default() += 1;
        }
    }
    // The evaluation and the notifier work on what the attack left: the finale's findings
    // reach the receivers.
    let notified = wait_for(Duration::from_secs(20), || {
        let count: usize = sinks.iter().map(|sink| sink.requests().len()).sum();
        (count > 0).then_some(count)
    });
    assert!(
        notified.is_some(),
        "no finding reached a receiver: the alert path was not exercised; log tail:\n{}",
        tail(&collector.process.log())
    );
    assert_healthy(&client, &collector, seed);
    // Whatever the attack stored must not stop the collector from starting again.
    collector.process.terminate();
    assert!(
        !collector.process.log().contains("panicked"),
        "the collector panicked (seed {seed}):\n{}",
        tail(&collector.process.log())
    );
    let mut collector = Collector::start_again(dir.path());
    assert_healthy(&client, &collector, seed);
    std::thread::sleep(Duration::from_secs(3));
    assert_healthy(&client, &collector, seed);
    let terminals = collector.get_json("/api/v1/terminals");
    assert!(terminals.is_object() || terminals.is_array(), "{terminals}");
    for terminal in TERMINALS {
        let _ = collector.get_json(&format!("/api/v1/terminals/{terminal}"));
    }
    let _ = collector.get_json("/api/v1/overview");
    let _ = collector.get_json("/api/v1/problems");
    let _ = collector.get_json("/api/v1/findings");
    let notified: usize = sinks.iter().map(|sink| sink.requests().len()).sum();
    eprintln!(
        "notifications received: {notified} by the HTTP receivers, {} e-mails",
        smtp.messages().len()
    );
    collector.process.terminate();
    let log = collector.process.log();
    let panic = log.lines().find(|line| line.contains("panicked"));
    assert!(
        panic.is_none(),
        "the collector panicked (seed {seed}): {panic:?}"
    );
    assert!(
        notified > 0,
        "no finding reached a receiver: the alert path was not exercised; log tail:\n{}",
        tail(&log)
    );
    assert!(started.elapsed() < BUDGET, "the run took over its budget");
}

fn assert_healthy(client: &reqwest::blocking::Client, collector: &Collector, seed: u64) {
    let health = client
        .get(format!("{}/healthz", collector.url))
        .send()
        .map(|response| response.status().as_u16());
    assert_eq!(
        health.ok(),
        Some(200),
        "the collector stopped answering (seed {seed}); log tail:\n{}",
        tail(&collector.process.log())
    );
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|error| panic!("{error}"))
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
