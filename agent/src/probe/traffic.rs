//! What the probes cost on a metered link, in IP bytes both ways as a carrier bills them. The
//! agent cannot see its packets, so each rung adds an estimate from what it knows:
//!
//! - UDP (DNS) and ICMP: the datagram's length plus the IP and UDP/ICMP headers (IPv4 20 + 8,
//!   IPv6 40 + 8), each way, for every datagram sent or received.
//! - TCP: a SYN and a SYN-ACK carry options (IP + 40 bytes each), every other segment of a
//!   connection the timestamp option (IP + 32), the reset a closed port answers with none
//!   (IP + 20). A connect is SYN, SYN-ACK and ACK; a refused one SYN and RST; one that times out
//!   every SYN retransmitted within the timeout (Linux: after 1, 3, 7, 15, 31 s). Closed at once
//!   with SO_LINGER 0: one RST (with timestamps); closed gracefully: FIN, FIN, ACK. Measured on
//!   Linux loopback in a namespace of its own (IpExt OutOctets): 224 bytes for a connect and
//!   its reset, 100 for a refusal, 328 for a connect and a graceful close.
//! - TLS and HTTP: the bytes read and written through the connection, cut into segments of at
//!   most 1,400 bytes, each with its IP + TCP header, and one pure ACK for every two segments
//!   received.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The payload of a full-sized segment on a typical path (1,500-byte MTU less headers, a
/// little less for tunnels).
const SEGMENT_PAYLOAD: u64 = 1400;
/// When Linux retransmits an unanswered SYN, in seconds after the first.
const SYN_RETRIES_AT: [u64; 5] = [1, 3, 7, 15, 31];

/// The bytes counted so far, shared by the rungs of a cycle's tasks.
#[derive(Debug, Default, Clone)]
pub struct Traffic(Arc<AtomicU64>);

impl Traffic {
    pub fn add(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The bytes counted since the last call.
    pub fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

/// The IP header's length towards `address`.
pub fn ip_header(address: &SocketAddr) -> u64 {
    if address.is_ipv4() {
        20
    } else {
        40
    }
}

/// One UDP datagram of `payload` bytes.
pub fn udp(ipv4: bool, payload: usize) -> u64 {
    (if ipv4 { 28 } else { 48 }) + payload as u64
}

/// A TCP connection's opening: SYN, SYN-ACK, ACK.
pub fn tcp_connected(address: &SocketAddr) -> u64 {
    let ip = ip_header(address);
    2 * (ip + 40) + ip + 32
}

/// A connect that was refused: SYN, RST.
pub fn tcp_refused(address: &SocketAddr) -> u64 {
    let ip = ip_header(address);
    (ip + 40) + (ip + 20)
}

/// A connect that got no answer within `waited`: every SYN sent meanwhile.
pub fn tcp_unanswered(address: &SocketAddr, waited: Duration) -> u64 {
    let retries = SYN_RETRIES_AT
        .iter()
        .filter(|at| Duration::from_secs(**at) < waited)
        .count() as u64;
    (1 + retries) * (ip_header(address) + 40)
}

/// A connection aborted with SO_LINGER 0: one RST, with the timestamp option.
pub fn tcp_reset(address: &SocketAddr) -> u64 {
    ip_header(address) + 32
}

/// A connection closed gracefully: FIN, FIN and the last ACK.
pub fn tcp_closed(address: &SocketAddr) -> u64 {
    3 * (ip_header(address) + 32)
}

/// `bytes` of payload written in one call: its segments and their headers.
fn sent(ip: u64, bytes: u64) -> u64 {
    bytes + bytes.div_ceil(SEGMENT_PAYLOAD) * (ip + 32)
}

/// `bytes` of payload read in one call: its segments, their headers, and our ACKs.
fn received(ip: u64, bytes: u64) -> u64 {
    let segments = bytes.div_ceil(SEGMENT_PAYLOAD);
    bytes + segments * (ip + 32) + segments.div_ceil(2) * (ip + 32)
}

/// A stream that counts the IP bytes of what passes through it (see the module's estimate).
pub struct Counted<S> {
    inner: S,
    ip: u64,
    traffic: Traffic,
}

impl<S> Counted<S> {
    pub fn new(inner: S, peer: &SocketAddr, traffic: Traffic) -> Self {
        Counted {
            inner,
            ip: ip_header(peer),
            traffic,
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(context, buffer);
        let read = buffer.filled().len().saturating_sub(before) as u64;
        if read > 0 {
            self.traffic.add(received(self.ip, read));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(context, buffer);
        if let Poll::Ready(Ok(written)) = &polled {
            self.traffic.add(sent(self.ip, *written as u64));
        }
        polled
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_counted_with_their_headers() {
        let v4: SocketAddr = "192.0.2.1:443".parse().unwrap_or_else(|_| unreachable!());
        let v6: SocketAddr = "[2001:db8::1]:443"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(tcp_connected(&v4), 60 + 60 + 52);
        assert_eq!(tcp_connected(&v6), 80 + 80 + 72);
        assert_eq!(tcp_refused(&v4), 100);
        // As measured on Linux loopback: connect and reset 224, refused 100, closed 328.
        assert_eq!(tcp_connected(&v4) + tcp_reset(&v4), 224);
        assert_eq!(tcp_connected(&v4) + tcp_closed(&v4), 328);
        assert_eq!(tcp_unanswered(&v4, Duration::from_secs(1)), 60);
        assert_eq!(tcp_unanswered(&v4, Duration::from_secs(5)), 180);
        assert_eq!(udp(true, 33), 61);
        assert_eq!(udp(false, 33), 81);
        // A 3,000-byte certificate chain: three segments, their headers, two ACKs.
        assert_eq!(received(20, 3000), 3000 + 3 * 52 + 2 * 52);
        assert_eq!(sent(20, 100), 152);
        assert_eq!(sent(20, 0), 0);
    }

    #[test]
    fn taking_resets_the_count() {
        let traffic = Traffic::default();
        traffic.add(5);
        traffic.clone().add(7);
        assert_eq!(traffic.take(), 12);
        assert_eq!(traffic.take(), 0);
    }
}
