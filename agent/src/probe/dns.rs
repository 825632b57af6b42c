//! The DNS rung: the agent's own minimal stub resolver, because getaddrinfo cannot tell a name
//! that does not exist (NXDOMAIN) from a broken resolver (SERVFAIL), one that does not answer
//! (timeout) or none configured. Names in `/etc/hosts` resolve without DNS, as they would for
//! the POS application. One UDP query per server in turn, each bounded by its share of the
//! timeout; answers are parsed with bounds checks and never trusted for more than addresses.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use posmon_protocol::ErrorKind;
use tokio::net::UdpSocket;

use super::traffic::{self, Traffic};
use crate::system::SystemRoot;

/// At most this many nameservers are asked, as in glibc (`MAXNS`).
const SERVERS_MAX: usize = 3;
/// The largest answer read over UDP without EDNS.
const ANSWER_MAX_BYTES: usize = 512;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Where names are resolved: `/etc/hosts` under the system root, then the nameservers.
#[derive(Debug, Clone)]
pub struct Resolver {
    hosts: Vec<(String, IpAddr)>,
    servers: Vec<SocketAddr>,
}

/// A resolved name, how long the answer may be cached (none for `/etc/hosts`), or why not.
pub type Resolution = Result<(Vec<IpAddr>, Option<Duration>, String), (ErrorKind, String)>;

impl Resolver {
    /// `servers` when given, else the `nameserver` lines of `<root>/etc/resolv.conf`.
    pub fn new(root: &SystemRoot, servers: &[SocketAddr]) -> Self {
        let servers = if servers.is_empty() {
            root.read("etc/resolv.conf")
                .map(|text| nameservers(&text))
                .unwrap_or_default()
        } else {
            servers.to_vec()
        };
        let hosts = root
            .read("etc/hosts")
            .map(|text| hosts_entries(&text))
            .unwrap_or_default();
        Resolver {
            hosts,
            servers: servers.into_iter().take(SERVERS_MAX).collect(),
        }
    }

    /// The address of the first nameserver asked (the `resolver` label), if any.
    pub fn primary(&self) -> Option<IpAddr> {
        self.servers.first().map(SocketAddr::ip)
    }

    /// Resolves `name` within `timeout`; the datagrams are counted in `traffic`.
    pub async fn resolve(&self, name: &str, timeout: Duration, traffic: &Traffic) -> Resolution {
        let from_hosts: Vec<IpAddr> = self
            .hosts
            .iter()
            .filter(|(host, _)| host.eq_ignore_ascii_case(name))
            .map(|(_, address)| *address)
            .collect();
        if !from_hosts.is_empty() {
            return Ok((from_hosts, None, "from /etc/hosts".to_string()));
        }
        if self.servers.is_empty() {
            return Err((
                ErrorKind::NoResolver,
                "no nameserver configured (resolv.conf has none)".to_string(),
            ));
        }
        let share = timeout / u32::try_from(self.servers.len()).unwrap_or(1);
        // Worst first: a definite answer (NXDOMAIN, NODATA) wins over a broken server's, which wins over
        // silence.
        let mut worst: Option<(ErrorKind, String)> = None;
        for server in &self.servers {
            match ask_server(*server, name, share, traffic).await {
                Ok((addresses, ttl)) => {
                    return Ok((addresses, Some(ttl), format!("answered by {server}")));
                }
                Err((kind @ (ErrorKind::Nxdomain | ErrorKind::NoData), detail)) => {
                    return Err((kind, detail))
                }
                Err(error) => {
                    let rank = |kind: ErrorKind| usize::from(kind == ErrorKind::Servfail);
                    if worst
                        .as_ref()
                        .is_none_or(|(kind, _)| rank(error.0) >= rank(*kind))
                    {
                        worst = Some(error);
                    }
                }
            }
        }
        Err(worst.unwrap_or((ErrorKind::Other, "no answer".to_string())))
    }
}

/// Asks one server for A, then AAAA records: the addresses and how long they may be cached.
async fn ask_server(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
    traffic: &Traffic,
) -> Result<(Vec<IpAddr>, Duration), (ErrorKind, String)> {
    let started = Instant::now();
    for record_type in [TYPE_A, TYPE_AAAA] {
        let remaining = timeout.saturating_sub(started.elapsed());
        let answer = tokio::time::timeout(remaining, query(server, name, record_type, traffic))
            .await
            .map_err(|_| {
                (
                    ErrorKind::Timeout,
                    format!("nameserver {server} did not answer within {timeout:?}"),
                )
            })??;
        match answer.rcode {
            0 if !answer.addresses.is_empty() => {
                return Ok((answer.addresses, Duration::from_secs(u64::from(answer.ttl))))
            }
            0 => continue,
            3 => {
                return Err((
                    ErrorKind::Nxdomain,
                    format!("{name} does not exist (NXDOMAIN from {server})"),
                ))
            }
            2 => {
                return Err((
                    ErrorKind::Servfail,
                    format!("nameserver {server} failed (SERVFAIL)"),
                ))
            }
            code => {
                return Err((
                    ErrorKind::Other,
                    format!("nameserver {server} answered with code {code}"),
                ))
            }
        }
    }
    Err((
        ErrorKind::NoData,
        format!("{name} has no address records (answered by {server})"),
    ))
}

async fn query(
    server: SocketAddr,
    name: &str,
    record_type: u16,
    traffic: &Traffic,
) -> Result<Answer, (ErrorKind, String)> {
    let io_error = |error: std::io::Error| {
        let kind = match error.kind() {
            std::io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable => {
                ErrorKind::Unreachable
            }
            _ => ErrorKind::Other,
        };
        (kind, format!("nameserver {server}: {error}"))
    };
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io_error)?;
    socket.connect(server).await.map_err(io_error)?;
    let id = random_id();
    let message = encode_query(id, name, record_type).ok_or_else(|| {
        (
            ErrorKind::Other,
            format!("{name:?} is not a valid DNS name"),
        )
    })?;
    socket.send(&message).await.map_err(io_error)?;
    traffic.add(traffic::udp(server.is_ipv4(), message.len()));
    let mut buffer = [0u8; ANSWER_MAX_BYTES];
    loop {
        let length = socket.recv(&mut buffer).await.map_err(io_error)?;
        traffic.add(traffic::udp(server.is_ipv4(), length));
        // A stray or spoofed datagram is ignored; the caller's timeout bounds the wait.
        if let Some(answer) = decode_answer(&buffer[..length], id) {
            return Ok(answer);
        }
    }
}

/// A query id that an off-path sender cannot guess: the standard library's per-process random
/// hash keys, so the agent needs no random number crate.
fn random_id() -> u16 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    (hasher.finish() & 0xffff) as u16
}

/// The nameservers of a resolv.conf.
fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (fe80::1%eth0) is rare on terminals and skipped.
            let address: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(address, 53))
        })
        .collect()
}

/// The (name, address) pairs of an /etc/hosts.
fn hosts_entries(text: &str) -> Vec<(String, IpAddr)> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(address) = words.next().and_then(|word| word.parse::<IpAddr>().ok()) else {
            continue;
        };
        entries.extend(words.map(|name| (name.to_string(), address)));
    }
    entries
}

/// A standard recursive query for one name, or `None` when the name cannot be encoded.
fn encode_query(id: u16, name: &str, record_type: u16) -> Option<Vec<u8>> {
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let mut message = Vec::with_capacity(18 + name.len());
    message.extend_from_slice(&id.to_be_bytes());
    // Flags: recursion desired. One question, no other records.
    message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        let length = u8::try_from(label.len())
            .ok()
            .filter(|length| (1..=63).contains(length))?;
        message.push(length);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&record_type.to_be_bytes());
    message.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(message)
}

#[derive(Debug, PartialEq)]
struct Answer {
    rcode: u8,
    addresses: Vec<IpAddr>,
    /// The smallest TTL of the address records, in seconds (0 without any).
    ttl: u32,
}

/// The response code and addresses of an answer to query `id`; `None` when it is not a
/// well-formed answer to it.
fn decode_answer(message: &[u8], id: u16) -> Option<Answer> {
    let mut reader = Reader { message, at: 0 };
    let answer_id = reader.u16()?;
    let flags = reader.u16()?;
    let is_response = flags & 0x8000 != 0;
    if answer_id != id || !is_response {
        return None;
    }
    let rcode = (flags & 0x000f) as u8;
    let questions = reader.u16()?;
    let answers = reader.u16()?;
    reader.skip(4)?; // authority and additional counts: not needed.
    for _ in 0..questions {
        reader.skip_name()?;
        reader.skip(4)?;
    }
    let mut addresses = Vec::new();
    let mut ttl: Option<u32> = None;
    for _ in 0..answers {
        reader.skip_name()?;
        let record_type = reader.u16()?;
        let class = reader.u16()?;
        let record_ttl = reader.u32()?;
        let length = usize::from(reader.u16()?);
        let data = reader.take(length)?;
        let address = match (record_type, class, data.len()) {
            (TYPE_A, CLASS_IN, 4) => IpAddr::from(<[u8; 4]>::try_from(data).ok()?),
            (TYPE_AAAA, CLASS_IN, 16) => IpAddr::from(<[u8; 16]>::try_from(data).ok()?),
            _ => continue, // CNAME and others: the addresses that follow are what counts.
        };
        addresses.push(address);
        // RFC 2181: a TTL with the top bit set is taken as zero.
        let record_ttl = if record_ttl & 0x8000_0000 != 0 {
            0
        } else {
            record_ttl
        };
        ttl = Some(ttl.map_or(record_ttl, |ttl| ttl.min(record_ttl)));
    }
    Some(Answer {
        rcode,
        addresses,
        ttl: ttl.unwrap_or(0),
    })
}

struct Reader<'a> {
    message: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(length)?;
        let bytes = self.message.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn skip(&mut self, length: usize) -> Option<()> {
        self.take(length).map(|_| ())
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        let bytes = self.take(4)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Skips a name: labels up to a zero byte, or a compression pointer (two bytes) ending it.
    fn skip_name(&mut self) -> Option<()> {
        loop {
            let length = *self.take(1)?.first()?;
            match length {
                0 => return Some(()),
                pointer if pointer & 0xc0 == 0xc0 => return self.skip(1),
                label if label <= 63 => self.skip(usize::from(label))?,
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `query` with `rcode` and one A record per address, written by hand.
    fn answer_to(query: &[u8], rcode: u8, addresses: &[[u8; 4]]) -> Vec<u8> {
        let mut message = query.to_vec();
        message[2] = 0x81;
        message[3] = 0x80 | rcode;
        message[7] = addresses.len() as u8;
        for address in addresses {
            message.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            message.extend_from_slice(address);
        }
        message
    }

    fn check(message: &[u8], id: u16, expected: Option<(u8, Vec<IpAddr>)>) {
        let got = decode_answer(message, id).map(|answer| (answer.rcode, answer.addresses));
        if let Some(answer) =
            decode_answer(message, id).filter(|answer| !answer.addresses.is_empty())
        {
            assert_eq!(answer.ttl, 60, "the records' TTL");
        }
        assert_eq!(got, expected, "{message:?}");
    }

    #[test]
    fn answers_are_decoded_and_anything_else_is_ignored() {
        let query = encode_query(0x1234, "pay.example.com", TYPE_A).unwrap_or_default();
        assert_eq!(query.len(), 12 + 17 + 4);
        let ok = answer_to(&query, 0, &[[10, 0, 0, 7], [10, 0, 0, 8]]);
        check(
            &ok,
            0x1234,
            Some((
                0,
                vec![IpAddr::from([10, 0, 0, 7]), IpAddr::from([10, 0, 0, 8])],
            )),
        );
        check(&answer_to(&query, 3, &[]), 0x1234, Some((3, vec![])));
        check(&answer_to(&query, 2, &[]), 0x1234, Some((2, vec![])));
        // Another id, the query itself (not a response), truncated and empty messages.
        check(&ok, 0x4321, None);
        check(&query, 0x1234, None);
        check(&ok[..ok.len() - 2], 0x1234, None);
        check(&[], 0x1234, None);
        // A label length that is neither a label nor a pointer.
        let mut bad = ok.clone();
        bad[12] = 0x80;
        check(&bad, 0x1234, None);
    }

    #[test]
    fn names_that_cannot_be_encoded_are_refused() {
        assert!(encode_query(1, "a..b", TYPE_A).is_none());
        assert!(encode_query(1, &"x".repeat(64), TYPE_A).is_none());
        assert!(encode_query(1, "", TYPE_A).is_none());
        assert!(encode_query(1, "localhost.", TYPE_A).is_some());
    }

    #[test]
    fn resolv_conf_and_hosts_are_read() {
        assert_eq!(
            nameservers("# comment\nsearch lan\nnameserver 127.0.0.53\nnameserver ::1\nnameserver bogus\noptions edns0\n"),
            vec![
                SocketAddr::from(([127, 0, 0, 53], 53)),
                SocketAddr::new(IpAddr::from(Ipv6Addr::LOCALHOST), 53)
            ]
        );
        assert_eq!(
            hosts_entries(
                "127.0.0.1 localhost pay # the till\n# 10.0.0.1 gone\nnot-an-address x\n"
            ),
            vec![
                ("localhost".to_string(), IpAddr::from([127, 0, 0, 1])),
                ("pay".to_string(), IpAddr::from([127, 0, 0, 1]))
            ]
        );
    }
}
