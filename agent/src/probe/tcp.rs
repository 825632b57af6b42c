//! DNS resolution and TCP connect to a `host:port` target: the DNS rung (skipped for an IP
//! literal) and the TCP rung of the path ladder.

use std::io::ErrorKind as IoErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use posmon_protocol::{ErrorKind, ProbeResult, Stage, StageResult};
use tokio::net::TcpStream;

use super::{failed, succeeded};
use crate::config::TargetConfig;

/// Resolves and connects to `target` within `timeout` per rung.
pub async fn probe(target: &TargetConfig, timeout: Duration) -> ProbeResult {
    let mut stages = Vec::with_capacity(2);
    let addresses = match target.address.parse::<SocketAddr>() {
        Ok(address) => vec![address],
        Err(_) => match resolve(&target.address, timeout).await {
            Ok((addresses, stage)) => {
                stages.push(stage);
                addresses
            }
            Err(stage) => {
                stages.push(stage);
                return finish(target, stages);
            }
        },
    };
    stages.push(connect(&addresses, timeout).await);
    finish(target, stages)
}

fn finish(target: &TargetConfig, stages: Vec<StageResult>) -> ProbeResult {
    ProbeResult {
        target: target.name.clone(),
        address: target.address.clone(),
        stages,
    }
}

async fn resolve(
    address: &str,
    timeout: Duration,
) -> Result<(Vec<SocketAddr>, StageResult), StageResult> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::lookup_host(address)).await {
        Err(_) => Err(failed(
            Stage::Dns,
            ErrorKind::Timeout,
            &format!("no answer within {timeout:?}"),
        )),
        Ok(Err(error)) => Err(failed(
            Stage::Dns,
            resolver_error_kind(&error),
            &error.to_string(),
        )),
        Ok(Ok(found)) => {
            let addresses: Vec<SocketAddr> = found.collect();
            if addresses.is_empty() {
                return Err(failed(Stage::Dns, ErrorKind::Nxdomain, "no addresses"));
            }
            let detail = format!("{} addresses", addresses.len());
            Ok((
                addresses,
                succeeded(Stage::Dns, started.elapsed(), Some(detail)),
            ))
        }
    }
}

/// getaddrinfo reports only a message; its wording tells the kinds apart.
fn resolver_error_kind(error: &std::io::Error) -> ErrorKind {
    let message = error.to_string();
    if message.contains("not known") || message.contains("No address associated") {
        ErrorKind::Nxdomain
    } else if message.contains("Temporary failure") {
        ErrorKind::Timeout
    } else {
        ErrorKind::Other
    }
}

async fn connect(addresses: &[SocketAddr], timeout: Duration) -> StageResult {
    let started = Instant::now();
    let mut last = failed(Stage::Tcp, ErrorKind::Other, "no address to connect to");
    for address in addresses {
        let remaining = timeout.saturating_sub(started.elapsed());
        last = match tokio::time::timeout(remaining, TcpStream::connect(address)).await {
            Ok(Ok(_stream)) => {
                return succeeded(
                    Stage::Tcp,
                    started.elapsed(),
                    Some(format!("connected to {address}")),
                )
            }
            Ok(Err(error)) => failed(
                Stage::Tcp,
                connect_error_kind(&error),
                &format!("{address}: {error}"),
            ),
            Err(_) => failed(
                Stage::Tcp,
                ErrorKind::Timeout,
                &format!("{address}: no answer within {timeout:?}"),
            ),
        };
    }
    last
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
    use posmon_protocol::StageStatus;

    fn target(address: &str) -> TargetConfig {
        TargetConfig {
            name: "pay".into(),
            address: address.into(),
        }
    }

    fn summary(result: &ProbeResult) -> Vec<(Stage, StageStatus, Option<ErrorKind>)> {
        result
            .stages
            .iter()
            .map(|stage| (stage.stage, stage.status, stage.error))
            .collect()
    }

    #[tokio::test]
    async fn an_open_port_connects_and_a_closed_one_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let open = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"));
        let result = probe(&target(&open.to_string()), Duration::from_secs(2)).await;
        assert_eq!(summary(&result), [(Stage::Tcp, StageStatus::Ok, None)]);
        assert!(result.stages[0].latency_ms.is_some());

        drop(listener);
        let result = probe(&target(&open.to_string()), Duration::from_secs(2)).await;
        assert_eq!(
            summary(&result),
            [(Stage::Tcp, StageStatus::Failed, Some(ErrorKind::Refused))]
        );
    }

    #[tokio::test]
    async fn a_name_is_resolved_first() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|error| panic!("{error}"));
        let result = probe(
            &target(&format!("localhost:{port}")),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(result.stages[0].stage, Stage::Dns);
        assert_eq!(result.stages[0].status, StageStatus::Ok);
        // localhost may resolve to ::1 first, where nothing listens; the probe tries each address.
        assert_eq!(result.stages[1].status, StageStatus::Ok, "{result:?}");
    }
}
