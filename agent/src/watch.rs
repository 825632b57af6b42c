//! The passive watch: the POS application's own connections to the targets, read from the
//! kernel's TCP socket table (`/proc/net/tcp` and `tcp6`) and TCP counters (`/proc/net/snmp`)
//! under the system root, at no cost on the link. An established connection to a target shows
//! its path works (no active probe is needed); a connect waiting for an answer for a second or
//! more, a connection retransmitting, or new failed connects or resets on the host are a
//! *trigger*: the target's full ladder runs at once. A socket in trouble triggers once, however
//! long it stays so (a stuck flow retransmits for many minutes); a rise of the counters stays
//! news until a target not connected takes it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::system::SystemRoot;

/// `TCP_ESTABLISHED` and `TCP_SYN_SENT` in the socket table's `st` column.
const ESTABLISHED: u8 = 0x01;
const SYN_SENT: u8 = 0x02;
/// The states of a connection that was established and is closing or closed (`FIN_WAIT1`,
/// `FIN_WAIT2`, `TIME_WAIT`, `CLOSE_WAIT`, `LAST_ACK`, `CLOSING`): a payment's short
/// connection is seen in them (a minute in `TIME_WAIT`) when it came and went between two
/// reads of the table. The agent's own probes end with a reset, which leaves none of them.
const CLOSING: [u8; 6] = [0x04, 0x05, 0x06, 0x08, 0x09, 0x0b];
/// How long a connect may wait for an answer before it is a trigger: the kernel retransmits
/// an unanswered SYN after one second.
const SYN_SENT_TRIGGER: Duration = Duration::from_secs(1);
/// The most waiting connects, and sockets in trouble that triggered, remembered (only those
/// towards a target are).
const WAITING_MAX: usize = 256;

/// One row of the socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    /// Unanswered retransmissions of the segment (or SYN) in flight.
    pub retransmits: u32,
}

/// The kernel's TCP counters that show connections failing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub attempt_fails: u64,
    pub estab_resets: u64,
    pub retrans_segs: u64,
    pub out_rsts: u64,
}

/// The rows of a `/proc/net/tcp` or `tcp6` text; lines that do not parse are skipped.
pub fn parse_sockets(text: &str) -> Vec<Socket> {
    text.lines().skip(1).filter_map(parse_socket).collect()
}

fn parse_socket(line: &str) -> Option<Socket> {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    let mut fields = line.split_whitespace();
    fields.next()?.strip_suffix(':')?;
    let local = parse_address(fields.next()?)?;
    let remote = parse_address(fields.next()?)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    fields.next()?;
    fields.next()?;
    let retransmits = u32::from_str_radix(fields.next()?, 16).ok()?;
    Some(Socket {
        local,
        remote,
        state,
        retransmits,
    })
}

/// `0100007F:01BB` (IPv4) or 32 hex digits and a port (IPv6). The kernel prints each 32-bit
/// word of the address as a number in the host's byte order, the port in network order.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |index: usize| {
        address
            .get(index * 8..index * 8 + 8)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .map(u32::to_ne_bytes)
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for index in 0..4 {
                bytes[index * 4..index * 4 + 4].copy_from_slice(&word(index)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4 peer of a dual-stack socket shows as ::ffff:a.b.c.d.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The TCP counters of a `/proc/net/snmp` text: the `Tcp:` header line names the columns of
/// the `Tcp:` line after it.
pub fn parse_counters(text: &str) -> Option<Counters> {
    let mut tcp = text.lines().filter(|line| line.starts_with("Tcp:"));
    let names = tcp.next()?.split_whitespace().skip(1);
    let values = tcp.next()?.split_whitespace().skip(1);
    let mut counters = Counters::default();
    let mut found = 0;
    for (name, value) in names.zip(values) {
        let slot = match name {
            "AttemptFails" => &mut counters.attempt_fails,
            "EstabResets" => &mut counters.estab_resets,
            "RetransSegs" => &mut counters.retrans_segs,
            "OutRsts" => &mut counters.out_rsts,
            _ => continue,
        };
        *slot = value.parse().ok()?;
        found += 1;
    }
    (found == 4).then_some(counters)
}

/// What the watch saw of one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sighting {
    /// A connection to the target that is established or closing, not retransmitting: its
    /// path works (or worked within the last minute, for a connection in `TIME_WAIT`).
    pub working: bool,
    /// One of them is established now.
    pub connected: bool,
    /// Why the target should be probed at once, if it should.
    pub trigger: Option<Trigger>,
}

/// Why the watch asks for a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A connection to the target is in trouble: its full ladder runs.
    Connection(String),
    /// The host counted failed connects or resets, to some peer: the counters do not say
    /// which, and another application's failures move them too, so a cheap probe runs (the
    /// full ladder follows only when it fails).
    Counters,
}

/// The watch's memory between two reads.
#[derive(Debug)]
pub struct Watch {
    root: SystemRoot,
    /// Connects to a target seen waiting for an answer, and since when.
    waiting: BTreeMap<(SocketAddr, SocketAddr), Instant>,
    /// Sockets (local, remote) whose trouble triggered already, while they stay in trouble.
    triggered: BTreeSet<(SocketAddr, SocketAddr)>,
    counters: Option<Counters>,
    /// Whether the socket table could be read last time (to say so once when it cannot).
    readable: bool,
}

impl Watch {
    pub fn new(root: SystemRoot) -> Self {
        Watch {
            root,
            waiting: BTreeMap::new(),
            triggered: BTreeSet::new(),
            counters: None,
            readable: true,
        }
    }

    /// Reads the tables and returns what they show of each target, given each target's
    /// addresses (`targets[i]`), at `now`. Without a socket table nothing is seen.
    pub fn observe(&mut self, targets: &[Vec<SocketAddr>], now: Instant) -> Vec<Sighting> {
        let mut sockets = Vec::new();
        let mut readable = false;
        for table in ["proc/net/tcp", "proc/net/tcp6"] {
            if let Ok(text) = self.root.read(table) {
                readable = true;
                sockets.extend(parse_sockets(&text));
            }
        }
        if !readable && self.readable {
            tracing::info!(
                root = %self.root.path("proc/net").display(),
                "No TCP socket table to watch: targets are probed actively only."
            );
        }
        self.readable = readable;
        let counters = self
            .root
            .read("proc/net/snmp")
            .ok()
            .and_then(|text| parse_counters(&text));
        let failures = match (self.counters, counters) {
            (Some(before), Some(now)) => {
                now.attempt_fails > before.attempt_fails || now.estab_resets > before.estab_resets
            }
            _ => false,
        };
        let sightings = sight(
            &sockets,
            targets,
            &mut Memory {
                waiting: &mut self.waiting,
                triggered: &mut self.triggered,
            },
            failures,
            now,
        );
        // A rise no target took (each was connected) stays news: the POS application's refused
        // connect is seen once its other connection is gone, not lost to it.
        let taken = sightings
            .iter()
            .any(|sighting| sighting.trigger == Some(Trigger::Counters));
        if !failures || taken {
            self.counters = counters.or(self.counters);
        }
        sightings
    }

    /// Forgets the counters' rise so far: the agent's own probes and deliveries (a refused
    /// connect, a reset) move them too.
    pub fn rebaseline(&mut self) {
        self.counters = self
            .root
            .read("proc/net/snmp")
            .ok()
            .and_then(|text| parse_counters(&text))
            .or(self.counters);
    }
}

/// What [`sight`] remembers between reads: the connects seen waiting, and since when; the
/// sockets whose trouble triggered.
struct Memory<'a> {
    waiting: &'a mut BTreeMap<(SocketAddr, SocketAddr), Instant>,
    triggered: &'a mut BTreeSet<(SocketAddr, SocketAddr)>,
}

/// The sightings of each target in `sockets`; `failures` says whether the host's failed-connect
/// or reset counters rose.
fn sight(
    sockets: &[Socket],
    targets: &[Vec<SocketAddr>],
    memory: &mut Memory<'_>,
    failures: bool,
    now: Instant,
) -> Vec<Sighting> {
    let mut still_waiting = BTreeMap::new();
    let mut still_triggered = BTreeSet::new();
    let sightings = targets
        .iter()
        .map(|addresses| {
            let mut sighting = Sighting::default();
            for socket in sockets
                .iter()
                .filter(|socket| addresses.contains(&socket.remote))
            {
                let remote = socket.remote;
                let key = (socket.local, remote);
                let trouble = match socket.state {
                    ESTABLISHED if socket.retransmits == 0 => {
                        sighting.working = true;
                        sighting.connected = true;
                        None
                    }
                    state if CLOSING.contains(&state) && socket.retransmits == 0 => {
                        sighting.working = true;
                        None
                    }
                    ESTABLISHED => Some(format!(
                        "a connection to {remote} is retransmitting ({} times)",
                        socket.retransmits
                    )),
                    SYN_SENT => {
                        let since = memory.waiting.get(&key).copied().unwrap_or(now);
                        if still_waiting.len() < WAITING_MAX {
                            still_waiting.insert(key, since);
                        }
                        (socket.retransmits > 0
                            || now.saturating_duration_since(since) >= SYN_SENT_TRIGGER)
                            .then(|| format!("a connect to {remote} waits for an answer"))
                    }
                    _ => None,
                };
                // A socket's trouble triggers once; it is remembered while it lasts.
                if let Some(why) = trouble {
                    if still_triggered.len() < WAITING_MAX {
                        still_triggered.insert(key);
                    }
                    if !memory.triggered.contains(&key) {
                        sighting.trigger = Some(Trigger::Connection(why));
                    }
                }
            }
            // Only an established connection shows the target takes connects now: one in
            // TIME_WAIT may be a good payment's from before a refused one.
            if failures && !sighting.connected && sighting.trigger.is_none() {
                sighting.trigger = Some(Trigger::Counters);
            }
            sighting
        })
        .collect();
    *memory.waiting = still_waiting;
    *memory.triggered = still_triggered;
    sightings
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19581 1 0000000000000000 100 0 0 10 0\n\
   1: 0F02000A:C350 0700000A:01BB 01 00000000:00000000 02:000A7D4C 00000000  1000        0 41234 2 0000000000000000 20 4 30 10 -1\n\
   2: 0F02000A:C352 0800000A:01BB 02 00000001:00000000 01:00000064 00000002  1000        0 41240 2 0000000000000000 1000 0 0 2 -1\n\
   3: 0F02000A:C354 0900000A:01BB 01 00000120:00000000 01:0000012C 00000003  1000        0 41250 2 0000000000000000 200 4 30 10 -1\n\
   garbage line\n";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20001 1 0000000000000000 100 0 0 10 0\n\
   1: 0000000000000000FFFF00000F02000A:C360 0000000000000000FFFF00000700000A:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 20002 1 0000000000000000 20 4 30 10 -1\n\
   2: B80D0120000000000000000001000000:C362 B80D0120000000000000000002000000:01BB 02 00000001:00000000 01:00000064 00000000  1000        0 20003 1 0000000000000000 1000 0 0 2 -1\n";

    const SNMP: &str = "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 1000\n\
Icmp: InMsgs InErrors\nIcmp: 3 0\n\
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n\
Tcp: 1 200 120000 -1 812 3 41 17 5 90210 88000 123 0 56 0\n\
Udp: InDatagrams NoPorts\nUdp: 10 0\n";

    fn address(text: &str) -> SocketAddr {
        text.parse()
            .unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    // The tables are written as a little-endian host prints them.
    #[cfg(target_endian = "little")]
    #[test]
    fn socket_tables_are_parsed() {
        let sockets = parse_sockets(TCP);
        assert_eq!(sockets.len(), 4, "the header and garbage are skipped");
        assert_eq!(
            sockets[1],
            Socket {
                local: address("10.0.2.15:50000"),
                remote: address("10.0.0.7:443"),
                state: ESTABLISHED,
                retransmits: 0,
            }
        );
        assert_eq!(
            (sockets[2].remote, sockets[2].state, sockets[2].retransmits),
            (address("10.0.0.8:443"), SYN_SENT, 2)
        );
        assert_eq!(sockets[3].retransmits, 3);
        let sockets = parse_sockets(TCP6);
        assert_eq!(sockets.len(), 3);
        assert_eq!(
            sockets[1].remote,
            address("10.0.0.7:443"),
            "a v4-mapped peer"
        );
        assert_eq!(sockets[2].remote, address("[2001:db8::2]:443"));
        assert_eq!(sockets[2].state, SYN_SENT);
        for bad in [
            "",
            "0: 0100007F 00000000:0000 01 0:0 0:0 0",
            "0: 0100007F:0CEA 00000000:0000 ZZ 0:0 0:0 0",
            "0: 01007F:0CEA 00000000:0000 01 0:0 0:0 0",
            "0: 0100007F:0CEA 00000000:0000 01 0:0 0:0",
        ] {
            assert_eq!(parse_socket(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tcp_counters_are_read_by_their_names() {
        assert_eq!(
            parse_counters(SNMP),
            Some(Counters {
                attempt_fails: 41,
                estab_resets: 17,
                retrans_segs: 123,
                out_rsts: 56,
            })
        );
        assert_eq!(parse_counters("Ip: Forwarding\nIp: 1\n"), None);
        assert_eq!(parse_counters("Tcp: AttemptFails\nTcp: 4\n"), None);
        assert_eq!(
            parse_counters(&SNMP.replace(" 41 17 ", " x 17 ")),
            None,
            "a value that is no number"
        );
    }

    #[test]
    fn connections_to_targets_are_evidence_or_triggers() {
        let socket = |remote: &str, state: u8, retransmits: u32| Socket {
            local: address("10.0.2.15:50000"),
            remote: address(remote),
            state,
            retransmits,
        };
        let targets = vec![
            vec![address("10.0.0.7:443")],
            vec![address("10.0.0.8:443")],
            vec![address("10.0.0.9:443")],
            vec![],
            vec![address("10.0.0.10:8583")],
        ];
        let start = Instant::now();
        let (mut waiting, mut triggered) = (BTreeMap::new(), BTreeSet::new());
        let mut sight = |sockets: &[Socket], failures: bool, now: Instant| {
            let mut memory = Memory {
                waiting: &mut waiting,
                triggered: &mut triggered,
            };
            sight(sockets, &targets, &mut memory, failures, now)
        };
        let sockets = [
            socket("10.0.0.7:443", ESTABLISHED, 0),
            socket("10.0.0.7:80", SYN_SENT, 0),
            socket("10.0.0.8:443", SYN_SENT, 0),
            socket("10.0.0.9:443", ESTABLISHED, 1),
            // A payment's connection that came and went: TIME_WAIT.
            socket("10.0.0.10:8583", 0x06, 0),
        ];
        let seen = sight(&sockets, false, start);
        assert!(seen[4].working && !seen[4].connected, "{seen:?}");
        assert!(seen[0].connected);
        assert!(seen[0].working && seen[0].trigger.is_none(), "{seen:?}");
        assert_eq!(seen[1], Sighting::default(), "a connect just begun");
        assert!(!seen[2].working && seen[2].trigger.is_some());
        assert_eq!(seen[3], Sighting::default());
        // A second later the connect still waits: a trigger. The connection still
        // retransmitting triggered already: not again (a stuck flow lasts many minutes).
        let later = start + Duration::from_secs(1);
        let seen = sight(&sockets, false, later);
        assert!(seen[1].trigger.is_some(), "{seen:?}");
        assert_eq!(seen[2].trigger, None, "{seen:?}");
        let seen = sight(&sockets, false, later + Duration::from_secs(1));
        assert_eq!(seen[1].trigger, None, "{seen:?}");
        // Once they are gone, they are forgotten: a new connect in trouble is news again.
        let seen = sight(&sockets[..1], false, later);
        assert!(seen[1].trigger.is_none());
        let seen = sight(&sockets[3..4], false, later);
        assert!(seen[2].trigger.is_some(), "{seen:?}");
        // Failed connects on the host: every target not connected, even one with a
        // connection in TIME_WAIT (a good payment's, from before a refused one).
        let seen = sight(&sockets[..1], true, later);
        assert!(seen[0].trigger.is_none());
        assert_eq!(seen[1].trigger, Some(Trigger::Counters));
        assert_eq!(seen[3].trigger, Some(Trigger::Counters));
        let seen = sight(&sockets[4..], true, later);
        assert_eq!(seen[4].trigger, Some(Trigger::Counters), "{seen:?}");
        assert_eq!(waiting.len(), 0);
    }

    #[test]
    fn a_root_without_proc_net_sees_nothing() {
        let tree = crate::system::tests::FakeTree::new(&[("etc/hosts", "")]);
        let mut watch = Watch::new(tree.root());
        let targets = vec![vec![address("10.0.0.7:443")]];
        for _ in 0..3 {
            assert_eq!(
                watch.observe(&targets, Instant::now()),
                vec![Sighting::default()]
            );
        }
        watch.rebaseline();
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn counters_that_rise_between_reads_trigger() {
        let tree =
            crate::system::tests::FakeTree::new(&[("proc/net/tcp", TCP), ("proc/net/snmp", SNMP)]);
        let mut watch = Watch::new(tree.root());
        let targets = vec![vec![address("10.0.0.7:443")], vec![address("10.0.0.1:443")]];
        let first = watch.observe(&targets, Instant::now());
        assert!(first[0].working && first[1].trigger.is_none());
        let risen = SNMP.replace(" 41 17 ", " 42 17 ");
        std::fs::write(tree.root().path("proc/net/snmp"), &risen)
            .unwrap_or_else(|error| panic!("{error}"));
        let second = watch.observe(&targets, Instant::now());
        assert_eq!(second[1].trigger, Some(Trigger::Counters), "{second:?}");
        assert!(
            second[0].trigger.is_none(),
            "a working target is not doubted"
        );
        let third = watch.observe(&targets, Instant::now());
        assert!(third[1].trigger.is_none(), "a rise counts once");
        // A rise while every target is connected stays news until one is not.
        let connected = vec![vec![address("10.0.0.7:443")]];
        std::fs::write(
            tree.root().path("proc/net/snmp"),
            risen.replace(" 42 17 ", " 43 17 "),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(watch.observe(&connected, Instant::now())[0].trigger, None);
        std::fs::write(
            tree.root().path("proc/net/tcp"),
            TCP.replace(" 01 00000000:", " 06 00000000:"),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            watch.observe(&connected, Instant::now())[0].trigger,
            Some(Trigger::Counters),
            "its connection is gone (TIME_WAIT): the rise is still seen"
        );
    }
}
