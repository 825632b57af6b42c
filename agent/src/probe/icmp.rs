//! ICMP echo to a target's address, a side measurement beside the ladder (many networks drop
//! ICMP, so it never names a cause). Uses an unprivileged ICMP datagram socket where
//! `net.ipv4.ping_group_range` allows it, else a raw socket where the agent has CAP_NET_RAW;
//! where neither is permitted the rung is `unavailable`, not failed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use posmon_protocol::{ErrorKind, Stage, StageResult, StageStatus};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::traffic::{self, Traffic};
use super::{stage, Tally};

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
/// The payload sent with each echo: none, the identifier and sequence match the reply (an
/// echo costs 28 bytes each way on a metered link).
const PAYLOAD: &[u8] = b"";

/// `attempts` echoes to `address`, each within `timeout`; counted in `traffic`.
pub async fn echo(
    address: IpAddr,
    attempts: u32,
    timeout: Duration,
    traffic: &Traffic,
) -> StageResult {
    let IpAddr::V4(address) = address else {
        return unavailable("ICMPv6 echo is not measured".to_string());
    };
    let (socket, raw) = match open(address) {
        Ok(opened) => opened,
        Err(error) => {
            return unavailable(format!(
                "no ICMP socket permitted (ping_group_range or CAP_NET_RAW): {error}"
            ))
        }
    };
    let identifier = (std::process::id() & 0xffff) as u16;
    let mut tally = Tally::new(Stage::Icmp);
    for sequence in 0..attempts {
        let sequence = (sequence & 0xffff) as u16;
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(timeout, exchange(&socket, raw, identifier, sequence)).await;
        // The request, and the reply when one came: IP header and echo header.
        let echo_bytes = traffic::udp(true, PAYLOAD.len());
        traffic.add(echo_bytes);
        match outcome {
            Ok(Ok(())) => {
                traffic.add(echo_bytes);
                tally.success(started.elapsed(), format!("{address} answers"));
            }
            Ok(Err(error)) => tally.failure(ErrorKind::Other, format!("{address}: {error}")),
            Err(_) => tally.failure(
                ErrorKind::Timeout,
                format!("{address}: no echo reply within {timeout:?}"),
            ),
        }
    }
    tally.finish()
}

fn unavailable(detail: String) -> StageResult {
    StageResult {
        detail: Some(detail),
        ..stage(Stage::Icmp, StageStatus::Unavailable)
    }
}

/// A connected ICMP socket, and whether it is raw (its replies carry the IP header). It is
/// driven through tokio's datagram socket, which only sends and receives on the descriptor.
fn open(address: Ipv4Addr) -> std::io::Result<(UdpSocket, bool)> {
    let (socket, raw) = match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
        Ok(socket) => (socket, false),
        Err(_) => (
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?,
            true,
        ),
    };
    socket.set_nonblocking(true)?;
    // Connected: the kernel delivers only packets from this address.
    socket.connect(&SocketAddr::from((address, 0)).into())?;
    Ok((UdpSocket::from_std(socket.into())?, raw))
}

async fn exchange(
    socket: &UdpSocket,
    raw: bool,
    identifier: u16,
    sequence: u16,
) -> std::io::Result<()> {
    socket.send(&echo_request(identifier, sequence)).await?;
    let mut buffer = [0u8; 1500];
    loop {
        let read = socket.recv(&mut buffer).await?;
        // A datagram socket's kernel picks the identifier itself: only the sequence is ours.
        let expected_identifier = raw.then_some(identifier);
        if is_reply(&buffer[..read], raw, expected_identifier, sequence) {
            return Ok(());
        }
    }
}

fn echo_request(identifier: u16, sequence: u16) -> Vec<u8> {
    let mut packet = vec![ECHO_REQUEST, 0, 0, 0];
    packet.extend_from_slice(&identifier.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    let checksum = checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` is the echo reply to (`identifier`, `sequence`); a raw socket's packet
/// starts with the IP header.
fn is_reply(packet: &[u8], raw: bool, identifier: Option<u16>, sequence: u16) -> bool {
    let icmp = if raw {
        let header = packet
            .first()
            .map_or(0, |byte| usize::from(byte & 0x0f) * 4);
        packet.get(header..).unwrap_or_default()
    } else {
        packet
    };
    let field = |at: usize| {
        icmp.get(at..at + 2)
            .map(|bytes| u16::from_be_bytes([bytes[0], bytes[1]]))
    };
    icmp.first() == Some(&ECHO_REPLY)
        && identifier.is_none_or(|identifier| field(4) == Some(identifier))
        && field(6) == Some(sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(packet: &[u8], raw: bool, identifier: Option<u16>, expected: bool) {
        assert_eq!(is_reply(packet, raw, identifier, 7), expected, "{packet:?}");
    }

    #[test]
    fn replies_are_matched_by_identifier_and_sequence() {
        let mut reply = echo_request(0x1234, 7);
        reply[0] = ECHO_REPLY;
        let mut with_ip_header = vec![0x45; 1];
        with_ip_header.extend_from_slice(&[0; 19]);
        with_ip_header.extend_from_slice(&reply);
        check(&reply, false, None, true);
        check(&reply, false, Some(0x1234), true);
        check(&reply, false, Some(0x4321), false);
        check(&with_ip_header, true, Some(0x1234), true);
        check(&echo_request(0x1234, 7), false, None, false);
        check(&echo_request(0x1234, 8)[..4], false, None, false);
        check(&[], true, None, false);
    }

    #[test]
    fn the_checksum_of_a_request_verifies() {
        assert_eq!(checksum(&echo_request(1, 2)), 0);
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[tokio::test]
    async fn loopback_answers_or_the_rung_is_unavailable() {
        let traffic = Traffic::default();
        let result = echo(
            IpAddr::from([127, 0, 0, 1]),
            2,
            Duration::from_secs(2),
            &traffic,
        )
        .await;
        match result.status {
            StageStatus::Ok => {
                assert_eq!(result.successes, 2);
                assert_eq!(traffic.take(), 4 * 28);
            }
            StageStatus::Unavailable => assert!(result.detail.is_some()),
            StageStatus::Failed => panic!("loopback did not answer: {result:?}"),
        }
    }
}
