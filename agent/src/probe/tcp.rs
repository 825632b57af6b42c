//! The TCP rung: connect to the resolved addresses in turn, within the timeout.

use std::io::ErrorKind as IoErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use posmon_protocol::ErrorKind;
use tokio::net::TcpStream;

use super::Try;

/// Connects to the first address that accepts; the failure is the last address's.
pub async fn connect(addresses: &[SocketAddr], timeout: Duration) -> Try<TcpStream> {
    let started = Instant::now();
    let mut last = (ErrorKind::Other, "no address to connect to".to_string());
    for address in addresses {
        let remaining = timeout.saturating_sub(started.elapsed());
        last = match tokio::time::timeout(remaining, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                return Ok((stream, started.elapsed(), format!("connected to {address}")));
            }
            Ok(Err(error)) => (connect_error_kind(&error), format!("{address}: {error}")),
            Err(_) => (
                ErrorKind::Timeout,
                format!("{address}: no answer within {timeout:?}"),
            ),
        };
    }
    Err(last)
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
        let connected = connect(&[open], Duration::from_secs(2)).await;
        assert!(connected.is_ok());
        drop(listener);
        let refused = connect(&[open], Duration::from_secs(2)).await;
        assert_eq!(
            refused.err().map(|(kind, _)| kind),
            Some(ErrorKind::Refused)
        );
    }
}
