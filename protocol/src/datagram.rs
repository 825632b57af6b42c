//! The datagram transport of protocol v1: one report in one authenticated, encrypted UDP
//! datagram, and the collector's answer in one small datagram back. Pure: this module builds
//! and reads bytes; it never touches a socket, a clock or a random source (callers pass the
//! nonces and times in).
//!
//! ```text
//! report   = "pm" 0x01 0x01  len(terminal_id) terminal_id  len(key_id) key_id  leb128(generation)
//!            nonce[12]  ChaCha20-Poly1305(body, aad = everything before it)
//!   body   = zstd frame (with its checksum, without its 4 magic bytes) of the report's JSON,
//!            compressed with the shared dictionary followed by the terminal's own suffix
//!            `"terminal_id":<id>,"agent_instance":<instance>}`
//! answer   = "pm" 0x01 kind  nonce[12]  ChaCha20-Poly1305(answer body,
//!                                             aad = its own 4 bytes ‖ the request's header)
//!   ack      (kind 0x02) = leb128(acknowledged_sequence) collector_time_unix_ms[i64 LE]
//!   refusal  (kind 0x03) = reason[u8]
//! ```
//!
//! The key is HMAC-SHA256(token, "posmon datagram v1 key") of the terminal's token; the header
//! carries in clear what the collector needs to recompute that token from its keyring (terminal
//! id, key id, generation), so a revoked generation or a retired key opens nothing. An answer
//! is bound to the request it answers (the request's header, nonce included, is part of its
//! associated data), so an old answer replayed, or one for another request, does not open.
//! Every answer is sealed under the terminal's key too: nobody without the token can make an
//! agent forget reports (an ack) or fall back to HTTPS (a refusal). A refusal only ever sends
//! the agent to HTTPS: it never makes it drop a report.
//!
//! The dictionary's terminal suffix saves the two strings every report repeats (the instance id
//! alone is 36 characters of randomness). The collector builds it from the header's terminal id
//! and the agent instance it holds for that terminal: a report of another instance (a new one,
//! which must come by HTTPS anyway) fails the frame's checksum, and an authentic datagram whose
//! body does not decompress is answered with [`Refusal::NewInstance`].
//!
//! Sizes are bounded before anything is allocated: a datagram is at most
//! [`DATAGRAM_MAX_BYTES`] on the wire and its body at most [`REPORT_JSON_MAX_BYTES`]
//! decompressed.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::limits::{TERMINAL_ID_MAX_CHARS, VERSION_MAX_CHARS};

/// The first two bytes of every posmon datagram.
pub const MAGIC: [u8; 2] = *b"pm";
/// The datagram format this module speaks.
pub const DATAGRAM_VERSION: u8 = 1;
/// The largest datagram either side sends or reads, UDP payload: fits the smallest MTU a
/// mobile path has in practice (IPv6's 1 280 minus its 48 header bytes) without fragments.
pub const DATAGRAM_MAX_BYTES: usize = 1200;
/// The largest report JSON a datagram may carry once decompressed. A report that needs more
/// goes by HTTPS; a datagram that would decompress to more is refused while decompressing,
/// never allocated.
pub const REPORT_JSON_MAX_BYTES: usize = 64 * 1024;
/// ChaCha20-Poly1305's nonce and tag.
pub const NONCE_BYTES: usize = 12;
pub const TAG_BYTES: usize = 16;
/// IP and UDP header bytes per datagram, as a carrier bills them.
pub const IPV4_UDP_OVERHEAD_BYTES: u64 = 20 + 8;
pub const IPV6_UDP_OVERHEAD_BYTES: u64 = 40 + 8;

/// The shared zstd dictionary: raw content (typical compact agent reports), made by
/// `tests::generated_dictionary` (regenerate with `POSMON_WRITE_DICTIONARY=1 cargo test -p
/// posmon-protocol datagram`; a test fails when the file and the generator differ). Changing
/// it changes the wire format: that takes a new [`DATAGRAM_VERSION`].
pub const DICTIONARY: &[u8] = include_bytes!("datagram.dict");

/// zstd's level for report bodies: reports are a few hundred bytes, so even the highest
/// levels cost microseconds; the dictionary, not the level, does most of the work.
const COMPRESSION_LEVEL: i32 = 19;
/// A zstd frame's first four bytes, left out on the wire.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The label the datagram key is derived under.
const KEY_LABEL: &[u8] = b"posmon datagram v1 key";

const HEADER_FIXED_BYTES: usize = 4;

/// The largest answer: the fixed header, the nonce, a 10-byte sequence and an 8-byte time, the
/// tag.
pub const ANSWER_MAX_BYTES: usize =
    HEADER_FIXED_BYTES + NONCE_BYTES + 10 + 8 + (1 + 8) + (1 + 10) + TAG_BYTES;

/// What a datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Report = 1,
    Ack = 2,
    Refusal = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Report),
            2 => Some(Kind::Ack),
            3 => Some(Kind::Refusal),
            _ => None,
        }
    }
}

/// Why a datagram could not be built or read. Each names the part of the datagram at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("datagram is {actual} bytes, more than the {maximum} allowed")]
    TooLarge { actual: usize, maximum: usize },
    #[error("datagram ends inside {field}")]
    Truncated { field: &'static str },
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("datagram does not authenticate under the terminal's key")]
    Unauthentic,
    #[error("body: cannot compress: {0}")]
    Compress(String),
    #[error("body: does not decompress within {maximum} bytes: {problem}")]
    Decompress { maximum: usize, problem: String },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> DatagramError {
    DatagramError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// The symmetric key of one terminal token.
#[derive(Clone)]
pub struct DatagramKey(ChaCha20Poly1305);

impl std::fmt::Debug for DatagramKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        formatter.write_str("DatagramKey(..)")
    }
}

impl DatagramKey {
    /// The key of `token`: HMAC-SHA256(token, "posmon datagram v1 key").
    pub fn from_token(token: &str) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(KEY_LABEL);
        let derived = mac.finalize().into_bytes();
        DatagramKey(ChaCha20Poly1305::new(Key::from_slice(&derived)))
    }

    fn seal(&self, nonce: &[u8; NONCE_BYTES], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        self.0
            .encrypt(Nonce::from_slice(nonce), Payload { msg: plain, aad })
            // Encryption fails only for messages of gigabytes; ours are bounded far below.
            .unwrap_or_default()
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_BYTES],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, DatagramError> {
        self.0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| DatagramError::Unauthentic)
    }
}

/// The clear header of a report datagram: who sent it and under which token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportHeader {
    pub terminal_id: String,
    /// The fleet key id and the generation of the terminal's token (see `credential.rs`).
    pub key_id: String,
    pub generation: u32,
    pub nonce: [u8; NONCE_BYTES],
}

/// The key id and generation of `token` (`<key_id>.<signature>` or
/// `<key_id>.<generation>.<signature>`), for the header.
pub fn token_parts(token: &str) -> Result<(String, u32), DatagramError> {
    let (key_id, generation, _) =
        crate::credential::parse(token).map_err(|error| invalid("token", error.to_string()))?;
    Ok((key_id.to_string(), generation.unwrap_or(0)))
}

/// A report datagram read up to its sealed body: the header, and where the body starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedReport<'a> {
    pub header: ReportHeader,
    /// The header's bytes: the associated data of the body and of the answer.
    pub header_bytes: &'a [u8],
    sealed: &'a [u8],
}

/// Seals a report's JSON (the agent's spooled payload, as is) of `agent_instance` into one
/// datagram. A report that does not fit ([`DatagramError::TooLarge`]) goes by HTTPS.
pub fn seal_report(
    key: &DatagramKey,
    header: &ReportHeader,
    agent_instance: Option<&str>,
    report_json: &[u8],
) -> Result<Vec<u8>, DatagramError> {
    if report_json.len() > REPORT_JSON_MAX_BYTES {
        return Err(DatagramError::TooLarge {
            actual: report_json.len(),
            maximum: REPORT_JSON_MAX_BYTES,
        });
    }
    let mut datagram = Vec::with_capacity(DATAGRAM_MAX_BYTES);
    datagram.extend_from_slice(&MAGIC);
    datagram.push(DATAGRAM_VERSION);
    datagram.push(Kind::Report as u8);
    put_text(
        &mut datagram,
        &header.terminal_id,
        "terminal_id",
        TERMINAL_ID_MAX_CHARS,
    )?;
    put_text(&mut datagram, &header.key_id, "key_id", VERSION_MAX_CHARS)?;
    put_varint(&mut datagram, u64::from(header.generation));
    datagram.extend_from_slice(&header.nonce);
    let body = compress(
        report_json,
        &terminal_dictionary(&header.terminal_id, agent_instance),
    )?;
    let sealed = key.seal(&header.nonce, &datagram, &body);
    datagram.extend_from_slice(&sealed);
    if datagram.len() > DATAGRAM_MAX_BYTES {
        return Err(DatagramError::TooLarge {
            actual: datagram.len(),
            maximum: DATAGRAM_MAX_BYTES,
        });
    }
    Ok(datagram)
}

/// Reads a report datagram's clear header, without authenticating it: what the collector needs
/// to find the key. Nothing in it may be trusted before [`open_report`] succeeds.
pub fn parse_report(datagram: &[u8]) -> Result<ParsedReport<'_>, DatagramError> {
    let mut reader = Reader::new(datagram)?;
    let kind = reader.kind()?;
    if kind != Kind::Report {
        return Err(invalid("kind", format!("expected a report, got {kind:?}")));
    }
    let terminal_id = reader.text("terminal_id", TERMINAL_ID_MAX_CHARS)?;
    let key_id = reader.text("key_id", VERSION_MAX_CHARS)?;
    let generation = u32::try_from(reader.varint("generation")?)
        .map_err(|_| invalid("generation", "larger than 2^32 - 1"))?;
    let nonce = reader.nonce()?;
    let header_bytes = reader.consumed();
    let sealed = reader.rest();
    if sealed.len() < TAG_BYTES {
        return Err(DatagramError::Truncated { field: "body" });
    }
    Ok(ParsedReport {
        header: ReportHeader {
            terminal_id,
            key_id,
            generation,
            nonce,
        },
        header_bytes,
        sealed,
    })
}

/// Authenticates and decrypts a parsed report datagram under `key` and decompresses its body
/// with the dictionary of its terminal and `agent_instance` (the one the collector holds): the
/// report's JSON, at most [`REPORT_JSON_MAX_BYTES`]. [`DatagramError::Unauthentic`] comes before
/// anything is decompressed; [`DatagramError::Decompress`] after it means an authentic sender
/// of another instance (or a broken one).
pub fn open_report(
    key: &DatagramKey,
    parsed: &ParsedReport<'_>,
    agent_instance: Option<&str>,
) -> Result<Vec<u8>, DatagramError> {
    let body = authenticate_report(key, parsed)?;
    decompress_report(&body, &parsed.header.terminal_id, agent_instance)
}

/// The first half of [`open_report`]: authenticates and decrypts a parsed report datagram under
/// `key`, giving its still compressed body ([`DatagramError::Unauthentic`] otherwise). The
/// collector looks up the terminal's agent instance only after this.
pub fn authenticate_report(
    key: &DatagramKey,
    parsed: &ParsedReport<'_>,
) -> Result<Vec<u8>, DatagramError> {
    key.open(&parsed.header.nonce, parsed.header_bytes, parsed.sealed)
}

/// The second half of [`open_report`]: decompresses an authenticated body of `terminal_id`
/// with the dictionary of `agent_instance`.
pub fn decompress_report(
    body: &[u8],
    terminal_id: &str,
    agent_instance: Option<&str>,
) -> Result<Vec<u8>, DatagramError> {
    decompress(body, &terminal_dictionary(terminal_id, agent_instance))
}

/// The collector's answer to a report datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The collector holds every report of the terminal up to `sequence`; its clock read
    /// `collector_time_unix_ms` when it answered. It carries no `heartbeats` flag: every
    /// collector that answers datagrams takes heartbeats (both came in the same version), so
    /// an ack read from a datagram means `BatchAck::heartbeats`.
    Ack {
        sequence: u64,
        collector_time_unix_ms: i64,
        /// What the collector asks of the terminal (`BatchAck::config`, `probe_request`): only
        /// for an agent that reports its settings state, which reads these fields.
        control: AckControl,
    },
    /// Not taken by datagram: send it by HTTPS (which says why in full, and where a bad
    /// report is set aside).
    Refusal(Refusal),
}

/// The fleet control fields of an acknowledgement, each after the ack's time as a tag byte and
/// its value: `0x01` the settings version (8 bytes, big-endian: its hex digits in order),
/// `0x02` a probe request (leb128). A reader stops at a tag it does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckControl {
    pub config: Option<u64>,
    pub probe_request: Option<u64>,
}

impl AckControl {
    /// A settings version ([`crate::control::Settings::version`]) as the datagram carries it.
    pub fn version_bits(version: &str) -> Option<u64> {
        if version.len() != crate::control::VERSION_CHARS {
            return None;
        }
        u64::from_str_radix(version, 16).ok()
    }

    /// The settings version of `bits`, in its hex form.
    pub fn version_text(bits: u64) -> String {
        format!("{bits:016x}")
    }
}

const TAG_CONFIG: u8 = 1;
const TAG_PROBE_REQUEST: u8 = 2;

/// Why a datagram was refused. Every reason means the same to the agent: use HTTPS for this
/// report; the reason is for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The report did not validate, or was outside the time window.
    Invalid,
    /// The terminal sends faster than it may.
    RateLimited,
    /// The collector is busy.
    Overloaded,
    /// The report starts a new agent instance: that goes by HTTPS, where it cannot be replayed.
    NewInstance,
    /// The report was applied but not written in time (durable acknowledgements).
    NotWritten,
    /// A reason from a newer collector.
    Other,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::Invalid => 1,
            Refusal::RateLimited => 2,
            Refusal::Overloaded => 3,
            Refusal::NewInstance => 4,
            Refusal::NotWritten => 5,
            Refusal::Other => 255,
        }
    }

    fn from_code(code: u8) -> Refusal {
        match code {
            1 => Refusal::Invalid,
            2 => Refusal::RateLimited,
            3 => Refusal::Overloaded,
            4 => Refusal::NewInstance,
            5 => Refusal::NotWritten,
            _ => Refusal::Other,
        }
    }

    /// A metric label and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid",
            Refusal::RateLimited => "rate_limited",
            Refusal::Overloaded => "overloaded",
            Refusal::NewInstance => "new_instance",
            Refusal::NotWritten => "not_written",
            Refusal::Other => "other",
        }
    }
}

/// Seals the answer to the request whose header is `request_header` (from [`ParsedReport`]),
/// under the terminal's key and a fresh random `nonce`: at most [`ANSWER_MAX_BYTES`]. The
/// collector sends it only when it is no larger than the request (no amplification).
pub fn seal_answer(
    key: &DatagramKey,
    request_header: &[u8],
    answer: &Answer,
    nonce: [u8; NONCE_BYTES],
) -> Vec<u8> {
    let kind = match answer {
        Answer::Ack { .. } => Kind::Ack,
        Answer::Refusal(_) => Kind::Refusal,
    };
    let mut datagram = Vec::with_capacity(64);
    datagram.extend_from_slice(&MAGIC);
    datagram.push(DATAGRAM_VERSION);
    datagram.push(kind as u8);
    let mut aad = datagram.clone();
    aad.extend_from_slice(request_header);
    let mut plain = Vec::with_capacity(16);
    match answer {
        Answer::Ack {
            sequence,
            collector_time_unix_ms,
            control,
        } => {
            put_varint(&mut plain, *sequence);
            plain.extend_from_slice(&collector_time_unix_ms.to_le_bytes());
            if let Some(config) = control.config {
                plain.push(TAG_CONFIG);
                plain.extend_from_slice(&config.to_be_bytes());
            }
            if let Some(id) = control.probe_request {
                plain.push(TAG_PROBE_REQUEST);
                put_varint(&mut plain, id);
            }
        }
        Answer::Refusal(refusal) => plain.push(refusal.code()),
    }
    datagram.extend_from_slice(&nonce);
    let sealed = key.seal(&nonce, &aad, &plain);
    datagram.extend_from_slice(&sealed);
    datagram
}

/// Reads the answer to the request whose header is `request_header`: only an answer sealed
/// under `key` for exactly that request opens.
pub fn open_answer(
    key: &DatagramKey,
    request_header: &[u8],
    datagram: &[u8],
) -> Result<Answer, DatagramError> {
    let mut reader = Reader::new(datagram)?;
    let kind = reader.kind()?;
    let mut aad = datagram[..HEADER_FIXED_BYTES].to_vec();
    aad.extend_from_slice(request_header);
    let nonce = reader.nonce()?;
    let plain = key.open(&nonce, &aad, reader.rest())?;
    let mut body = Reader {
        bytes: &plain,
        position: 0,
    };
    match kind {
        Kind::Ack => {
            let sequence = body.varint("acknowledged_sequence")?;
            let time = body.take(8, "collector_time")?;
            let collector_time_unix_ms = i64::from_le_bytes(time.try_into().unwrap_or([0; 8]));
            let mut control = AckControl::default();
            while let Ok(tag) = body.take(1, "control") {
                match tag[0] {
                    TAG_CONFIG => {
                        let bits = body.take(8, "config")?;
                        control.config =
                            Some(u64::from_be_bytes(bits.try_into().unwrap_or([0; 8])));
                    }
                    TAG_PROBE_REQUEST => {
                        control.probe_request = Some(body.varint("probe_request")?);
                    }
                    // A field of a newer collector: the rest is its.
                    _ => break,
                }
            }
            Ok(Answer::Ack {
                sequence,
                collector_time_unix_ms,
                control,
            })
        }
        Kind::Refusal => {
            let code = body.take(1, "reason")?[0];
            body.end()?;
            Ok(Answer::Refusal(Refusal::from_code(code)))
        }
        Kind::Report => Err(invalid("kind", "expected an answer, got a report")),
    }
}

/// The dictionary of one terminal's reports: the shared one, then the strings only this
/// terminal's reports hold, nearest to the data (the shortest offsets).
fn terminal_dictionary(terminal_id: &str, agent_instance: Option<&str>) -> Vec<u8> {
    let text = |value: &str| serde_json::to_string(value).unwrap_or_default();
    let mut dictionary = DICTIONARY.to_vec();
    dictionary.extend_from_slice(b"\"terminal_id\":");
    dictionary.extend_from_slice(text(terminal_id).as_bytes());
    if let Some(instance) = agent_instance {
        dictionary.extend_from_slice(b",\"agent_instance\":");
        dictionary.extend_from_slice(text(instance).as_bytes());
    }
    dictionary.push(b'}');
    dictionary
}

/// A zstd frame of `json` with `dictionary` and a checksum, without its 4 magic bytes.
fn compress(json: &[u8], dictionary: &[u8]) -> Result<Vec<u8>, DatagramError> {
    let frame = zstd::bulk::Compressor::with_dictionary(COMPRESSION_LEVEL, dictionary)
        .and_then(|mut compressor| {
            // Tells a wrong dictionary (another agent instance) from the right one.
            compressor.include_checksum(true)?;
            compressor.compress(json)
        })
        .map_err(|error| DatagramError::Compress(error.to_string()))?;
    match frame.strip_prefix(&ZSTD_MAGIC[..]) {
        Some(rest) => Ok(rest.to_vec()),
        None => Err(DatagramError::Compress("not a zstd frame".into())),
    }
}

fn decompress(body: &[u8], dictionary: &[u8]) -> Result<Vec<u8>, DatagramError> {
    let mut frame = Vec::with_capacity(ZSTD_MAGIC.len() + body.len());
    frame.extend_from_slice(&ZSTD_MAGIC);
    frame.extend_from_slice(body);
    let failed = |problem: String| DatagramError::Decompress {
        maximum: REPORT_JSON_MAX_BYTES,
        problem,
    };
    // The frame names its size: refuse a large one before allocating for it.
    match zstd::zstd_safe::get_frame_content_size(&frame) {
        Ok(Some(size)) if size <= REPORT_JSON_MAX_BYTES as u64 => {}
        Ok(Some(size)) => return Err(failed(format!("it says {size} bytes"))),
        Ok(None) => return Err(failed("it does not say its size".into())),
        Err(_) => return Err(failed("not a zstd frame".into())),
    }
    let json = zstd::bulk::Decompressor::with_dictionary(dictionary)
        .and_then(|mut decompressor| decompressor.decompress(&frame, REPORT_JSON_MAX_BYTES))
        .map_err(|error| failed(error.to_string()))?;
    Ok(json)
}

fn put_text(
    datagram: &mut Vec<u8>,
    text: &str,
    field: &'static str,
    maximum: usize,
) -> Result<(), DatagramError> {
    let length = u8::try_from(text.len())
        .ok()
        .filter(|length| *length > 0 && usize::from(*length) <= maximum)
        .ok_or_else(|| invalid(field, format!("must be 1 to {maximum} bytes")))?;
    datagram.push(length);
    datagram.extend_from_slice(text.as_bytes());
    Ok(())
}

/// LEB128: seven bits a byte, low first; a heartbeat's sequence takes two or three bytes.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// A cursor over received bytes; every read is bounded and names its field.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// Checks the size, magic and version.
    fn new(bytes: &'a [u8]) -> Result<Self, DatagramError> {
        if bytes.len() > DATAGRAM_MAX_BYTES {
            return Err(DatagramError::TooLarge {
                actual: bytes.len(),
                maximum: DATAGRAM_MAX_BYTES,
            });
        }
        let mut reader = Reader { bytes, position: 0 };
        if reader.take(2, "magic")? != MAGIC {
            return Err(invalid("magic", "not a posmon datagram"));
        }
        let version = reader.take(1, "version")?[0];
        if version != DATAGRAM_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "unsupported datagram version {version} (this side speaks {DATAGRAM_VERSION})"
                ),
            ));
        }
        Ok(reader)
    }

    fn take(&mut self, count: usize, field: &'static str) -> Result<&'a [u8], DatagramError> {
        let end = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(DatagramError::Truncated { field })?;
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    fn kind(&mut self) -> Result<Kind, DatagramError> {
        let byte = self.take(1, "kind")?[0];
        Kind::from_byte(byte).ok_or_else(|| invalid("kind", format!("unknown kind {byte}")))
    }

    fn text(&mut self, field: &'static str, maximum: usize) -> Result<String, DatagramError> {
        let length = usize::from(self.take(1, field)?[0]);
        if length == 0 || length > maximum {
            return Err(invalid(field, format!("must be 1 to {maximum} bytes")));
        }
        let bytes = self.take(length, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid(field, "not UTF-8"))
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, DatagramError> {
        let mut value: u64 = 0;
        for index in 0..10 {
            let byte = self.take(1, field)?[0];
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * index;
            // The tenth byte holds bit 63 only; a longer or wider number is not a u64.
            if index == 9 && byte > 1 {
                break;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                if index > 0 && byte == 0 {
                    return Err(invalid(field, "not in its shortest form"));
                }
                return Ok(value);
            }
        }
        Err(invalid(field, "larger than 2^64 - 1"))
    }

    fn nonce(&mut self) -> Result<[u8; NONCE_BYTES], DatagramError> {
        let bytes = self.take(NONCE_BYTES, "nonce")?;
        Ok(bytes.try_into().unwrap_or([0; NONCE_BYTES]))
    }

    fn consumed(&self) -> &'a [u8] {
        &self.bytes[..self.position]
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.position..]
    }

    fn end(&self) -> Result<(), DatagramError> {
        if self.position == self.bytes.len() {
            Ok(())
        } else {
            Err(invalid("end", "bytes after the last field"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use time::macros::datetime;

    use super::*;
    use crate::report::*;

    const TOKEN: &str = "k1.3.qfe73r2DOVolGgwEq-2T9S5JqRlYO8O41Y1YUiAA7mM";

    fn header(terminal_id: &str) -> ReportHeader {
        ReportHeader {
            terminal_id: terminal_id.into(),
            key_id: "k1".into(),
            generation: 3,
            nonce: [7; NONCE_BYTES],
        }
    }

    fn fixture(name: &str) -> ReportBatch {
        let path = format!("{}/fixtures/v1/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn json(report: &Report) -> Vec<u8> {
        serde_json::to_vec(report).unwrap_or_else(|error| panic!("{error}"))
    }

    fn round_trip(
        report_json: &[u8],
        terminal_id: &str,
        instance: Option<&str>,
    ) -> Result<Vec<u8>, DatagramError> {
        let key = DatagramKey::from_token(TOKEN);
        let datagram = seal_report(&key, &header(terminal_id), instance, report_json)?;
        let parsed = parse_report(&datagram)?;
        assert_eq!(parsed.header, header(terminal_id));
        open_report(&key, &parsed, instance)
    }

    /// What the agent sends at first and hourly: every section.
    fn agent_full_report() -> Report {
        let stage = |stage: Stage, latency: Option<f64>| StageResult {
            stage,
            status: StageStatus::Ok,
            error: None,
            detail: None,
            attempts: 1,
            successes: 1,
            latency_ms: latency.map(|value| LatencyStats {
                min: value,
                avg: value,
                max: value,
                jitter: 0.0,
            }),
            http_status: None,
            tls_version: None,
            certificate_days_left: None,
        };
        let mut tls = stage(Stage::Tls, Some(112.0));
        tls.tls_version = Some("TLSv1.3".into());
        tls.certificate_days_left = Some(63);
        let mut http = stage(Stage::Http, Some(48.0));
        http.http_status = Some(200);
        let link = StageResult {
            successes: 0,
            attempts: 1,
            ..stage(Stage::Link, None)
        };
        let payment = ProbeResult {
            target: "payment-host".into(),
            address: "https://pay.acquirer.example/health".into(),
            stages: vec![
                link.clone(),
                stage(Stage::Gateway, Some(3.0)),
                stage(Stage::Dns, Some(21.0)),
                stage(Stage::Tcp, Some(38.0)),
                tls,
                http,
            ],
        };
        let tms = ProbeResult {
            target: "tms".into(),
            address: "tms.vendor.example:443".into(),
            stages: vec![
                link,
                stage(Stage::Dns, Some(18.0)),
                stage(Stage::Tcp, Some(41.0)),
            ],
        };
        let software = [
            ("agent", "0.1.0"),
            ("kernel", "5.10.0-21-arm64"),
            ("os", "Debian GNU/Linux 11 (bullseye)"),
            ("pos_app", "3.2.1"),
        ]
        .into_iter()
        .map(|(name, version)| (name.to_string(), ComponentVersion::known(version)))
        .chain([(
            "firmware".to_string(),
            ComponentVersion::unknown("file /etc/firmware-version not found"),
        )])
        .collect::<BTreeMap<_, _>>();
        Report {
            schema_version: 1,
            terminal_id: "T-0001".into(),
            sequence: 1,
            observed_at: datetime!(2026-12-02 04:30:00.125 UTC),
            agent_version: "0.1.0".into(),
            labels: Labels {
                merchant: Some("M-1001".into()),
                model: Some("PAX-A920".into()),
                region: Some("cn-east".into()),
                carrier: Some("china-mobile".into()),
                gateway: Some("192.168.1.0/24".into()),
                resolver: Some("192.168.1.1".into()),
                extra: BTreeMap::new(),
            },
            probes: vec![payment, tms],
            software,
            device: Some(DeviceStatus {
                cpu_percent: Some(4.0),
                load_average_1m: Some(0.3),
                memory_total_bytes: Some(1_073_741_824),
                memory_available_bytes: Some(536_870_912),
                swap_total_bytes: Some(0),
                swap_used_bytes: Some(0),
                uptime_seconds: Some(86_400),
                disks: vec![DiskStatus {
                    mount: "/".into(),
                    total_bytes: 7_516_192_768,
                    available_bytes: 3_221_225_472,
                }],
                temperatures: vec![Temperature {
                    sensor: "cpu_thermal".into(),
                    celsius: 48.0,
                }],
                battery: None,
                interfaces: vec![
                    InterfaceStatus {
                        name: "wwan0".into(),
                        up: true,
                        ..InterfaceStatus::default()
                    },
                    InterfaceStatus {
                        name: "wlan0".into(),
                        up: false,
                        wifi_signal_dbm: Some(-67),
                        ..InterfaceStatus::default()
                    },
                ],
                processes: vec![ProcessStatus {
                    name: "posapp".into(),
                    running: true,
                }],
                peripherals: vec![
                    PeripheralStatus {
                        name: "card_reader".into(),
                        present: true,
                        detail: None,
                    },
                    PeripheralStatus {
                        name: "printer".into(),
                        present: true,
                        detail: None,
                    },
                ],
            }),
            clock: Some(ClockStatus {
                offset_ms: 12.0,
                uncertainty_ms: 20.0,
                ntp_synchronized: Some(true),
            }),
            dropped_reports: 0,
            unchanged: Vec::new(),
            agent_instance: Some("6f1c2a9e-4b7d-4e21-9a3f-0c5d8e7b1a42".into()),
            intervals: Some(Intervals {
                probe_seconds: 60,
                report_seconds: 300,
                retry_max_seconds: 300,
            }),
            data_usage: Some(DataUsage {
                month: 24_323,
                report_bytes: 412_000,
                probe_bytes: 1_250_000,
                other_bytes: 3_000,
                budget_bytes: Some(10 * 1024 * 1024),
                stretch_percent: 100,
            }),
            config: None,
            probe_request: None,
        }
    }

    /// Probes, device and clock, labels and software marked unchanged.
    fn agent_delta_report() -> Report {
        let mut report = agent_full_report();
        report.sequence = 2;
        report.observed_at = datetime!(2026-12-02 04:31:00.250 UTC);
        report.labels = Labels::default();
        report.software.clear();
        report.unchanged = vec![Section::Labels, Section::Software];
        report.intervals = None;
        report.data_usage = None;
        report
    }

    /// A heartbeat: nothing but liveness.
    fn agent_heartbeat() -> Report {
        let mut report = agent_delta_report();
        report.sequence = 1207;
        report.observed_at = datetime!(2026-12-02 04:35:00.500 UTC);
        report.probes.clear();
        report.device = None;
        report.clock = None;
        report.unchanged = vec![Section::Labels, Section::Software, Section::Measurements];
        report
    }

    /// The dictionary: raw zstd content, the samples concatenated, the most frequent kind of
    /// report last (zstd reaches near content with the shortest offsets). Built from this
    /// module's reports and two golden fixtures that never change.
    fn generated_dictionary() -> Vec<u8> {
        let mut failed_stage = agent_full_report().probes[0].stages[3].clone();
        failed_stage.status = StageStatus::Failed;
        failed_stage.error = Some(ErrorKind::Timeout);
        failed_stage.detail = Some("connect timed out after 5s".into());
        failed_stage.successes = 0;
        failed_stage.latency_ms = None;
        let failed_stage = serde_json::to_vec(&failed_stage).unwrap_or_default();
        let mut heartbeat_with_usage = agent_heartbeat();
        heartbeat_with_usage.data_usage = agent_full_report().data_usage;
        let samples = [
            json(&fixture("full.json").reports[0]),
            failed_stage,
            json(&fixture("delta.json").reports[0]),
            // A delta's probes, device and clock are the full report's, and reach them there.
            json(&agent_full_report()),
            json(&heartbeat_with_usage),
            json(&agent_heartbeat()),
        ];
        samples.concat()
    }

    #[test]
    fn the_embedded_dictionary_is_what_the_generator_makes() {
        let generated = generated_dictionary();
        if std::env::var_os("POSMON_WRITE_DICTIONARY").is_some() {
            let path = format!("{}/src/datagram.dict", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(&path, &generated).unwrap_or_else(|error| panic!("{path}: {error}"));
            return;
        }
        assert!(
            generated == DICTIONARY,
            "src/datagram.dict differs from the generator: regenerate it with POSMON_WRITE_DICTIONARY=1 (and bump DATAGRAM_VERSION)"
        );
        assert!(DICTIONARY.len() < 8 * 1024, "{} bytes", DICTIONARY.len());
    }

    #[test]
    fn every_golden_fixture_round_trips() {
        let directory = format!("{}/fixtures/v1", env!("CARGO_MANIFEST_DIR"));
        let mut count = 0;
        for entry in std::fs::read_dir(&directory).unwrap_or_else(|error| panic!("{error}")) {
            let name = entry.unwrap_or_else(|error| panic!("{error}")).file_name();
            for report in fixture(&name.to_string_lossy()).reports {
                let sent = json(&report);
                let received =
                    round_trip(&sent, &report.terminal_id, report.agent_instance.as_deref())
                        .unwrap_or_else(|error| panic!("{name:?}: {error}"));
                assert_eq!(received, sent, "{name:?}");
                let decoded: Report = serde_json::from_slice(&received)
                    .unwrap_or_else(|error| panic!("{name:?}: {error}"));
                assert_eq!(decoded, report, "{name:?}");
                count += 1;
            }
        }
        assert!(count >= 5, "expected the golden fixtures in {directory}");
    }

    /// Other measurements than the dictionary's samples, as another terminal and hour has.
    fn vary(report: &mut Report) {
        for (index, stage) in report
            .probes
            .iter_mut()
            .flat_map(|probe| probe.stages.iter_mut())
            .enumerate()
        {
            if let Some(latency) = stage.latency_ms.as_mut() {
                let value = 17.0 + 13.0 * index as f64;
                *latency = LatencyStats {
                    min: value,
                    avg: value + 2.0,
                    max: value + 5.0,
                    jitter: 1.0,
                };
            }
        }
        if let Some(device) = report.device.as_mut() {
            device.cpu_percent = Some(11.0);
            device.load_average_1m = Some(0.71);
            device.memory_available_bytes = Some(402_653_184);
            device.uptime_seconds = Some(1_210_455);
            device.disks[0].available_bytes = 2_987_654_144;
            device.temperatures[0].celsius = 52.5;
        }
        if let Some(clock) = report.clock.as_mut() {
            clock.offset_ms = -431.0;
            clock.uncertainty_ms = 35.0;
        }
        if let Some(usage) = report.data_usage.as_mut() {
            usage.report_bytes = 1_904_311;
            usage.probe_bytes = 4_711_942;
        }
    }

    /// The sizes on the wire, printed for BENCHMARKS and checked against the aim.
    #[test]
    fn a_heartbeat_takes_tens_of_bytes() {
        let key = DatagramKey::from_token(TOKEN);
        let mut sizes = Vec::new();
        for (name, report) in [
            ("heartbeat", agent_heartbeat()),
            ("delta", agent_delta_report()),
            ("full", agent_full_report()),
        ] {
            let mut report = report;
            // Not the sample itself: another terminal, later, another instance.
            report.terminal_id = "SH-0042".into();
            report.sequence += 86_400;
            report.observed_at += time::Duration::milliseconds(3_600_321);
            report.agent_instance = Some("0d9e8a7b-1c2d-4e3f-8a9b-0c1d2e3f4a5b".into());
            vary(&mut report);
            let sent = json(&report);
            let instance = report.agent_instance.as_deref();
            let datagram = seal_report(&key, &header("SH-0042"), instance, &sent)
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            println!(
                "{name}: JSON {} bytes, datagram {} bytes, {} on IPv4",
                sent.len(),
                datagram.len(),
                datagram.len() as u64 + IPV4_UDP_OVERHEAD_BYTES
            );
            sizes.push(datagram.len());
        }
        let request = seal_report(&key, &header("SH-0042"), None, b"{}").unwrap_or_default();
        let parsed = parse_report(&request).unwrap_or_else(|error| panic!("{error}"));
        let ack = seal_answer(
            &key,
            parsed.header_bytes,
            &Answer::Ack {
                sequence: 87_607,
                collector_time_unix_ms: 1_796_000_000_000,
                control: AckControl::default(),
            },
            [9; NONCE_BYTES],
        );
        println!(
            "ack: {} bytes, {} on IPv4",
            ack.len(),
            ack.len() as u64 + IPV4_UDP_OVERHEAD_BYTES
        );
        assert!(sizes[0] < 120, "a heartbeat datagram is {} bytes", sizes[0]);
        assert!(sizes[2] < DATAGRAM_MAX_BYTES, "a full report does not fit");
        assert!(ack.len() <= ANSWER_MAX_BYTES && ack.len() < sizes[0]);
    }

    #[test]
    fn an_ack_reader_stops_at_a_field_it_does_not_know() {
        let key = DatagramKey::from_token(TOKEN);
        let request = seal_report(&key, &header("T-1"), None, b"{}").unwrap_or_default();
        let parsed = parse_report(&request).unwrap_or_else(|error| panic!("{error}"));
        let mut plain = Vec::new();
        put_varint(&mut plain, 5);
        plain.extend_from_slice(&9_i64.to_le_bytes());
        plain.extend_from_slice(&[TAG_PROBE_REQUEST, 3, 0x7f, 1, 2, 3]);
        let nonce = [4; NONCE_BYTES];
        let mut datagram = MAGIC.to_vec();
        datagram.extend_from_slice(&[DATAGRAM_VERSION, Kind::Ack as u8]);
        let mut aad = datagram.clone();
        aad.extend_from_slice(parsed.header_bytes);
        datagram.extend_from_slice(&nonce);
        datagram.extend_from_slice(&key.seal(&nonce, &aad, &plain));
        assert_eq!(
            open_answer(&key, parsed.header_bytes, &datagram),
            Ok(Answer::Ack {
                sequence: 5,
                collector_time_unix_ms: 9,
                control: AckControl {
                    config: None,
                    probe_request: Some(3),
                },
            })
        );
        assert_eq!(
            AckControl::version_bits("0123456789abcdef")
                .map(AckControl::version_text)
                .as_deref(),
            Some("0123456789abcdef")
        );
        assert_eq!(AckControl::version_bits("0123"), None);
    }

    #[test]
    fn answers_round_trip_and_bind_to_their_request() {
        let key = DatagramKey::from_token(TOKEN);
        let first = seal_report(&key, &header("T-1"), None, b"{\"a\":1}").unwrap_or_default();
        let mut other_header = header("T-1");
        other_header.nonce = [8; NONCE_BYTES];
        let second = seal_report(&key, &other_header, None, b"{\"a\":1}").unwrap_or_default();
        let first = parse_report(&first).unwrap_or_else(|error| panic!("{error}"));
        let second = parse_report(&second).unwrap_or_else(|error| panic!("{error}"));
        for answer in [
            Answer::Ack {
                sequence: crate::limits::SEQUENCE_MAX,
                collector_time_unix_ms: -1,
                control: AckControl::default(),
            },
            Answer::Ack {
                sequence: u64::MAX,
                collector_time_unix_ms: i64::MAX,
                control: AckControl {
                    config: Some(u64::MAX),
                    probe_request: Some(u64::MAX),
                },
            },
            Answer::Ack {
                sequence: 7,
                collector_time_unix_ms: 0,
                control: AckControl {
                    config: AckControl::version_bits("00ff00ff00ff00ff"),
                    probe_request: None,
                },
            },
            Answer::Refusal(Refusal::NewInstance),
            Answer::Refusal(Refusal::Invalid),
        ] {
            let sealed = seal_answer(&key, first.header_bytes, &answer, [1; NONCE_BYTES]);
            assert!(sealed.len() <= ANSWER_MAX_BYTES);
            assert_eq!(open_answer(&key, first.header_bytes, &sealed), Ok(answer));
            // Not an answer to another request, nor under another token.
            assert_eq!(
                open_answer(&key, second.header_bytes, &sealed),
                Err(DatagramError::Unauthentic)
            );
            let stranger = DatagramKey::from_token("k1.other");
            assert_eq!(
                open_answer(&stranger, first.header_bytes, &sealed),
                Err(DatagramError::Unauthentic)
            );
            // An ack cannot pass for a refusal or back.
            let mut flipped = sealed.clone();
            flipped[3] ^= 1;
            assert!(open_answer(&key, first.header_bytes, &flipped).is_err());
        }
        // A refusal from a newer collector is a refusal all the same.
        assert_eq!(Refusal::from_code(77), Refusal::Other);
    }

    #[test]
    fn tampering_with_any_byte_is_detected() {
        let key = DatagramKey::from_token(TOKEN);
        let sent = json(&agent_heartbeat());
        let instance = agent_heartbeat().agent_instance;
        let instance = instance.as_deref();
        let datagram = seal_report(&key, &header("T-0001"), instance, &sent).unwrap_or_default();
        for index in 0..datagram.len() {
            let mut tampered = datagram.clone();
            tampered[index] ^= 0x01;
            let opened = parse_report(&tampered).and_then(|parsed| {
                // The collector derives the key from the header it read.
                let token = if parsed.header == header("T-0001") {
                    TOKEN
                } else {
                    "k1.another-token"
                };
                open_report(&DatagramKey::from_token(token), &parsed, instance)
            });
            assert!(opened.is_err(), "byte {index} changed unnoticed");
        }
        for length in 0..datagram.len() {
            let opened = parse_report(&datagram[..length])
                .and_then(|parsed| open_report(&key, &parsed, instance));
            assert!(opened.is_err(), "truncated to {length} bytes");
        }
    }

    fn check_parse(datagram: &[u8], expected: DatagramError) {
        assert_eq!(
            parse_report(datagram).map(|_| ()),
            Err(expected),
            "{datagram:?}"
        );
    }

    #[test]
    fn header_errors_name_the_field() {
        let too_long = vec![b'x'; 65];
        let mut long_id = b"pm\x01\x01\x41".to_vec();
        long_id.extend_from_slice(&too_long);
        let cases: Vec<(Vec<u8>, DatagramError)> = vec![
            (vec![], DatagramError::Truncated { field: "magic" }),
            (
                b"xx\x01\x01".to_vec(),
                invalid("magic", "not a posmon datagram"),
            ),
            (
                b"pm\x02\x01".to_vec(),
                invalid(
                    "version",
                    "unsupported datagram version 2 (this side speaks 1)",
                ),
            ),
            (
                b"pm\x01".to_vec(),
                DatagramError::Truncated { field: "kind" },
            ),
            (b"pm\x01\x09".to_vec(), invalid("kind", "unknown kind 9")),
            (
                b"pm\x01\x02".to_vec(),
                invalid("kind", "expected a report, got Ack"),
            ),
            (
                b"pm\x01\x01".to_vec(),
                DatagramError::Truncated {
                    field: "terminal_id",
                },
            ),
            (
                b"pm\x01\x01\x00".to_vec(),
                invalid("terminal_id", "must be 1 to 64 bytes"),
            ),
            (long_id, invalid("terminal_id", "must be 1 to 64 bytes")),
            (
                b"pm\x01\x01\x03T-1".to_vec(),
                DatagramError::Truncated { field: "key_id" },
            ),
            (
                b"pm\x01\x01\x03T-1\x02k1".to_vec(),
                DatagramError::Truncated {
                    field: "generation",
                },
            ),
            (
                b"pm\x01\x01\x03T-1\x02k1\x80\x80\x80\x80\x10".to_vec(),
                invalid("generation", "larger than 2^32 - 1"),
            ),
            (
                b"pm\x01\x01\x03T-1\x02k1\x81\x00".to_vec(),
                invalid("generation", "not in its shortest form"),
            ),
            (
                b"pm\x01\x01\x03T-1\x02k1\x00abc".to_vec(),
                DatagramError::Truncated { field: "nonce" },
            ),
            (
                b"pm\x01\x01\x03T-1\x02k1\x00abcdefghijkl0123".to_vec(),
                DatagramError::Truncated { field: "body" },
            ),
            (
                vec![0; DATAGRAM_MAX_BYTES + 1],
                DatagramError::TooLarge {
                    actual: DATAGRAM_MAX_BYTES + 1,
                    maximum: DATAGRAM_MAX_BYTES,
                },
            ),
        ];
        for (datagram, expected) in cases {
            check_parse(&datagram, expected);
        }
    }

    #[test]
    fn oversized_reports_and_bodies_are_refused() {
        let key = DatagramKey::from_token(TOKEN);
        // Too much JSON to carry at all.
        let huge = vec![b' '; REPORT_JSON_MAX_BYTES + 1];
        assert!(matches!(
            seal_report(&key, &header("T-1"), None, &huge),
            Err(DatagramError::TooLarge { .. })
        ));
        // Incompressible JSON that does not fit one datagram.
        let mut state: u32 = 2_463_534_242;
        let noisy: String = (0..3000)
            .map(|_| {
                // xorshift32: no pattern zstd can find.
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect();
        let noisy = format!("{{\"x\":\"{noisy}\"}}");
        assert!(matches!(
            seal_report(&key, &header("T-1"), None, noisy.as_bytes()),
            Err(DatagramError::TooLarge { .. })
        ));
        // A sealed bomb: a small frame that says it holds a megabyte is refused before
        // anything is allocated for it, even from a terminal with a valid key.
        let bomb = zstd::bulk::compress(&vec![b'a'; 1 << 20], 19).unwrap_or_default();
        let mut bomb_datagram = b"pm\x01\x01\x03T-1\x02k1\x03".to_vec();
        bomb_datagram.extend_from_slice(&[7; NONCE_BYTES]);
        let body = bomb.strip_prefix(&ZSTD_MAGIC[..]).unwrap_or_default();
        let sealed = key.seal(&[7; NONCE_BYTES], &bomb_datagram.clone(), body);
        bomb_datagram.extend_from_slice(&sealed);
        let parsed = parse_report(&bomb_datagram).unwrap_or_else(|error| panic!("{error}"));
        assert!(
            matches!(
                open_report(&key, &parsed, None),
                Err(DatagramError::Decompress { .. })
            ),
            "{:?}",
            open_report(&key, &parsed, None)
        );
    }

    #[test]
    fn a_report_of_another_instance_does_not_open() {
        let key = DatagramKey::from_token(TOKEN);
        // An instance the shared dictionary does not hold (so it is taken from the suffix).
        let instance = "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d";
        let mut report = agent_heartbeat();
        report.agent_instance = Some(instance.into());
        let datagram = seal_report(&key, &header("T-0001"), Some(instance), &json(&report))
            .unwrap_or_default();
        let parsed = parse_report(&datagram).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            open_report(&key, &parsed, Some(instance)),
            Ok(json(&report))
        );
        for other in [
            None,
            Some("0d9e8a7b-1c2d-4e3f-8a9b-0c1d2e3f4a5b"),
            Some("short-01"),
        ] {
            assert!(
                matches!(
                    open_report(&key, &parsed, other),
                    Err(DatagramError::Decompress { .. })
                ),
                "{other:?}"
            );
        }
    }

    #[test]
    fn tokens_name_their_key_and_generation() {
        assert_eq!(token_parts(TOKEN), Ok(("k1".into(), 3)));
        assert_eq!(token_parts("k2.abc"), Ok(("k2".into(), 0)));
        assert!(matches!(
            token_parts("nodot"),
            Err(DatagramError::Invalid { field: "token", .. })
        ));
    }

    #[test]
    fn varints_take_the_shortest_form() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, value);
            let mut reader = Reader {
                bytes: &bytes,
                position: 0,
            };
            assert_eq!(reader.varint("value"), Ok(value), "{bytes:?}");
            assert!(reader.end().is_ok());
        }
        let mut too_wide = Reader {
            bytes: &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            position: 0,
        };
        assert_eq!(
            too_wide.varint("value"),
            Err(invalid("value", "larger than 2^64 - 1"))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any report round-trips byte for byte, or is refused as too large: never garbled.
        #[test]
        fn any_report_round_trips_or_is_too_large(report in crate::strategies::any_report()) {
            let sent = json(&report);
            match round_trip(&sent, "T-0001", report.agent_instance.as_deref()) {
                Ok(received) => prop_assert_eq!(received, sent),
                Err(DatagramError::TooLarge { .. }) => {}
                Err(error) => prop_assert!(false, "{}", error),
            }
        }

        /// Whatever arrives, reading it never panics.
        #[test]
        fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            let key = DatagramKey::from_token(TOKEN);
            if let Ok(parsed) = parse_report(&bytes) {
                let _ = open_report(&key, &parsed, Some("6f1c2a9e"));
            }
            let _ = open_answer(&key, b"pm\x01\x01", &bytes);
        }
    }
}
