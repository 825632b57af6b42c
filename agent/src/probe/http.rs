//! The HTTP rung: one `GET` over the connection the lower rungs opened, timed to the first byte
//! of the answer. Only the status line is read (at most 1 KiB); the body is
//! never downloaded, so the rung costs one small exchange on a metered link.

use std::time::{Duration, Instant};

use posmon_protocol::ErrorKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most bytes read while looking for the end of the status line.
const STATUS_LINE_MAX_BYTES: usize = 1024;

/// An HTTP status, the time to the first byte, or why the exchange failed.
pub type Exchange = Result<(u16, Duration), (ErrorKind, String)>;

/// Sends `GET path` for `host` over `stream` and reads the status line within `timeout`.
pub async fn get<S>(stream: &mut S, host: &str, path: &str, timeout: Duration) -> Exchange
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: posmon-agent/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    match tokio::time::timeout(timeout, exchange(stream, &request)).await {
        Ok(result) => result,
        Err(_) => Err((ErrorKind::Timeout, format!("no answer within {timeout:?}"))),
    }
}

async fn exchange<S>(stream: &mut S, request: &str) -> Exchange
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io_error = |error: std::io::Error| {
        let kind = match error.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                ErrorKind::Reset
            }
            _ => ErrorKind::Other,
        };
        (kind, error.to_string())
    };
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let sent = Instant::now();
    let mut buffer = [0u8; STATUS_LINE_MAX_BYTES];
    let mut length = 0;
    let mut first_byte = None;
    while !buffer[..length].contains(&b'\n') && length < buffer.len() {
        let read = stream.read(&mut buffer[length..]).await.map_err(io_error)?;
        if read == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| sent.elapsed());
        length += read;
    }
    let Some(first_byte) = first_byte else {
        return Err((
            ErrorKind::Reset,
            "the server closed the connection without answering".into(),
        ));
    };
    let status = parse_status(&buffer[..length]).ok_or_else(|| {
        (
            ErrorKind::ProtocolError,
            format!(
                "not an HTTP answer: {:?}",
                String::from_utf8_lossy(&buffer[..length.min(40)])
            ),
        )
    })?;
    Ok((status, first_byte))
}

/// The status code of `HTTP/1.x NNN ...`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&byte| byte == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words.next()?.starts_with("HTTP/1.").then_some(())?;
    let code = words.next()?;
    (code.len() == 3).then_some(())?;
    code.parse().ok().filter(|code| (100..=599).contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &str, expected: Option<u16>) {
        assert_eq!(parse_status(head.as_bytes()), expected, "{head:?}");
    }

    #[test]
    fn status_lines_are_parsed() {
        check("HTTP/1.1 200 OK\r\n", Some(200));
        check(
            "HTTP/1.0 503 Service Unavailable\r\nRetry-After: 5",
            Some(503),
        );
        check("HTTP/1.1 204\r\n", Some(204));
        check("HTTP/2 200\r\n", None);
        check("SSH-2.0-OpenSSH_9.2\r\n", None);
        check("HTTP/1.1 2000 OK\r\n", None);
        check("HTTP/1.1 999 Weird\r\n", None);
        check("", None);
    }

    #[tokio::test]
    async fn the_status_and_time_to_first_byte_are_read() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let serve = tokio::spawn(async move {
            let mut request = [0u8; 512];
            let read = server.read(&mut request).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..read]).to_string();
            server
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            request
        });
        let got = get(&mut client, "pay.test", "/health", Duration::from_secs(2)).await;
        assert_eq!(got.map(|(status, _)| status), Ok(503));
        let request = serve.await.unwrap();
        assert!(
            request.starts_with("GET /health HTTP/1.1\r\nHost: pay.test\r\n"),
            "{request}"
        );
    }
}
