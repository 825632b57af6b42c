//! The TCP rung: connect to the resolved addresses in turn, within the timeout. A cheap probe
//! closes the connection at once with a reset (SO_LINGER 0): one packet, instead of the four of
//! a graceful close, and no TIME_WAIT.

use std::io::ErrorKind as IoErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use posmon_protocol::ErrorKind;
use tokio::net::TcpStream;

use super::traffic::{self, Traffic};
use super::Try;

/// Connects to the first address that accepts; the failure is the last address's. The
/// packets of the attempts are counted in `traffic`.
pub async fn connect(
    addresses: &[SocketAddr],
    timeout: Duration,
    traffic: &Traffic,
) -> Try<(TcpStream, SocketAddr)> {
    let started = Instant::now();
    let mut last = (ErrorKind::Other, "no address to connect to".to_string());
    for address in addresses {
        let remaining = timeout.saturating_sub(started.elapsed());
        let tried = Instant::now();
        last = match tokio::time::timeout(remaining, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                traffic.add(traffic::tcp_connected(address));
                return Ok((
                    (stream, *address),
                    started.elapsed(),
                    format!("connected to {address}"),
                ));
            }
            Ok(Err(error)) => {
                let kind = connect_error_kind(&error);
                traffic.add(match kind {
                    ErrorKind::Refused | ErrorKind::Reset => traffic::tcp_refused(address),
                    _ => traffic::tcp_unanswered(address, tried.elapsed()),
                });
                (kind, format!("{address}: {error}"))
            }
            Err(_) => {
                traffic.add(traffic::tcp_unanswered(address, tried.elapsed()));
                (
                    ErrorKind::Timeout,
                    format!("{address}: no answer within {timeout:?}"),
                )
            }
        };
    }
    Err(last)
}

/// Closes a connection with a reset (SO_LINGER 0): one packet.
pub fn abort(stream: TcpStream, peer: &SocketAddr, traffic: &Traffic) {
    if stream.set_zero_linger().is_ok() {
        traffic.add(traffic::tcp_reset(peer));
    } else {
        traffic.add(traffic::tcp_closed(peer));
    }
}

fn connect_error_kind(error: &std::io::Error) -> ErrorKind {
    match error.kind() {
        IoErrorKind::ConnectionRefused => ErrorKind::Refused,
        IoErrorKind::TimedOut => ErrorKind::Timeout,
        IoErrorKind::HostUnreachable
        | IoErrorKind::NetworkUnreachable
        | IoErrorKind::AddrNotAvailable => ErrorKind::Unreachable,
        IoErrorKind::ConnectionReset => ErrorKind::Reset,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_port_connects_and_a_closed_one_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let traffic = Traffic::default();
        let connected = connect(&[open], Duration::from_secs(2), &traffic).await;
        assert!(connected.is_ok());
        assert_eq!(traffic.take(), 172);
        if let Ok(((stream, peer), _, _)) = connected {
            abort(stream, &peer, &traffic);
            assert_eq!(traffic.take(), 52);
        }
        drop(listener);
        let refused = connect(&[open], Duration::from_secs(2), &traffic).await;
        assert_eq!(traffic.take(), 100);
        assert_eq!(
            refused.err().map(|(kind, _)| kind),
            Some(ErrorKind::Refused)
        );
    }
}
