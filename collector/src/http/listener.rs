//! The accept loop, one code path for plain HTTP and HTTPS: hyper's server connection (HTTP/1.1
//! or HTTP/2, chosen by the client's first bytes; ALPN offers h2 over TLS) over a TCP stream or a
//! tokio-rustls one, with the limits a collector facing the internet needs:
//!
//! - at most `limits.max_connections` open at once; one beyond it is accepted and closed at
//!   once (counted), so the listen backlog never fills with connections nobody serves;
//! - a TLS handshake must finish within `limits.tls_handshake_timeout_seconds`;
//! - the first request's headers must arrive within `limits.header_read_timeout_seconds` of
//!   the connection being served (the watchdog below: it also covers a client that never sends
//!   a byte, which hyper's own timer does not see while it waits to tell HTTP/1.1 from HTTP/2);
//!   hyper applies the same timeout to every later HTTP/1.1 request, the wait of a kept-alive
//!   connection included;
//! - a connection with no request in flight for `limits.idle_timeout_seconds` is closed
//!   (HTTP/2 between requests, where hyper has no header timeout);
//! - at shutdown, no new connection is accepted, each open one is told to finish (HTTP/2
//!   GOAWAY, HTTP/1.1 close after the response in flight) and given [`GRACEFUL_SHUTDOWN`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::LimitsConfig;
use crate::metrics::Metrics;

/// How long in-flight requests may take to finish at shutdown.
pub const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(10);

/// HTTP/2 streams one connection may have open at once: one client cannot multiply its share
/// of the server by multiplexing.
const H2_MAX_CONCURRENT_STREAMS: u32 = 32;

/// Header bytes one HTTP/2 request may carry (agents send a few hundred).
const H2_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// After an accept error (out of file descriptors, most likely), wait this long before trying
/// again rather than spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How long a connection the watchdog closes may take to go after being told (HTTP/2 GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Semaphore permits are bounded by tokio and `acquire_many` counts in `u32`.
const MAX_CONNECTIONS_CEILING: usize = 1 << 24;

/// File descriptors kept for everything but connections: the database, logs, the listener,
/// the runtime, alert receivers' clients.
pub const FD_RESERVE: u64 = 128;

/// The connection limits of `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
}

impl ConnectionLimits {
    pub fn from_config(limits: &LimitsConfig) -> Self {
        ConnectionLimits {
            max_connections: limits.max_connections.clamp(1, MAX_CONNECTIONS_CEILING),
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(limits.idle_timeout_seconds),
            tls_handshake_timeout: Duration::from_secs(limits.tls_handshake_timeout_seconds),
        }
    }
}

/// The most connections the open-file limit `soft` leaves room for, and whether `requested`
/// had to be lowered to it.
pub fn usable_connections(requested: usize, soft: u64) -> (usize, bool) {
    let room = soft.saturating_sub(FD_RESERVE).max(1);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if requested > room {
        (room, true)
    } else {
        (requested, false)
    }
}

/// Raises the soft open-file limit to the hard one (a service manager often starts the
/// collector with 1024) and returns the limits in force, `(soft, hard)`.
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    #[cfg(unix)]
    {
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
        if soft < hard {
            let raised = rlimit::increase_nofile_limit(hard)?;
            return Ok((raised, hard));
        }
        Ok((soft, hard))
    }
    #[cfg(not(unix))]
    {
        Ok((u64::MAX, u64::MAX))
    }
}

/// Why the collector closed a connection itself (the label of
/// `posmon_http_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No complete first request within the header timeout.
    HeaderTimeout,
    /// No request in flight for the idle timeout.
    IdleTimeout,
    TlsHandshakeTimeout,
    TlsHandshakeFailed,
}

impl Closed {
    pub const ALL: [Closed; 4] = [
        Closed::HeaderTimeout,
        Closed::IdleTimeout,
        Closed::TlsHandshakeTimeout,
        Closed::TlsHandshakeFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::TlsHandshakeTimeout => "tls_handshake_timeout",
            Closed::TlsHandshakeFailed => "tls_handshake_failed",
        }
    }
}

/// When a connection's watchdog closes it, from what it has seen: `None` while a request is in
/// flight (the request's own timeouts apply then). Times are offsets from when it was opened.
pub fn watchdog_deadline(
    requests_started: u64,
    in_flight: usize,
    last_request_ended: Duration,
    limits: &ConnectionLimits,
) -> Option<(Duration, Closed)> {
    if requests_started == 0 {
        return Some((limits.header_read_timeout, Closed::HeaderTimeout));
    }
    if in_flight > 0 {
        return None;
    }
    Some((
        last_request_ended.saturating_add(limits.idle_timeout),
        Closed::IdleTimeout,
    ))
}

/// What one connection's requests have done, shared by its service and its watchdog.
struct Activity {
    opened: Instant,
    started: AtomicU64,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the latest request.
    last_ended_ms: AtomicU64,
    /// Wakes the watchdog when a request starts or ends: its deadline moved.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_ended_ms: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Closed)> {
        let (offset, why) = watchdog_deadline(
            self.started.load(Ordering::Acquire),
            self.in_flight.load(Ordering::Acquire),
            Duration::from_millis(self.last_ended_ms.load(Ordering::Acquire)),
            limits,
        )?;
        // Beyond what an Instant can hold: never.
        self.opened.checked_add(offset).map(|when| (when, why))
    }
}

/// Counts a request in flight on its connection until dropped (also when the client resets
/// an HTTP/2 stream and the request's future is dropped).
struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_one();
        RequestGuard(Arc::clone(activity))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let ended = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_ended_ms.fetch_max(ended, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// Accepts connections on `listener` and serves `router` on each until `shutdown` completes;
/// then lets open connections finish for at most [`GRACEFUL_SHUTDOWN`].
pub async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let acceptor = tls.map(TlsAcceptor::from);
    let (stop, stopped) = watch::channel(false);
    let mut last_error_logged: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors or a connection reset before it was taken: keep
                // serving the open ones; say so at most once a second.
                if last_error_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(%error, "Cannot accept a connection; retrying.");
                    last_error_logged = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            // Accepted and closed at once: the backlog does not fill with dead sockets, and
            // the client learns at once that it must come back later.
            metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let connection = Connection {
            router: router.clone(),
            limits,
            metrics: Arc::clone(&metrics),
            stopped: stopped.clone(),
            peer,
        };
        let acceptor = acceptor.clone();
        let open = Arc::clone(&metrics);
        tokio::spawn(async move {
            open.connections_open.inc();
            connection.serve(stream, acceptor).await;
            open.connections_open.dec();
            drop(permit);
        });
    }
    drop(listener);
    // Nobody may be listening any more (every connection ended): that is fine.
    let _ = stop.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(GRACEFUL_SHUTDOWN, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = limits.max_connections - connections.available_permits(),
            "Connections still open at the end of the shutdown grace period are closed."
        );
    }
    Ok(())
}

struct Connection {
    router: Router,
    /// The client's address, given to each request (the sign-in rate limit counts by it).
    peer: std::net::SocketAddr,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stopped: watch::Receiver<bool>,
}

impl Connection {
    fn closed(&self, why: Closed) {
        self.metrics
            .connections_closed
            .with_label_values(&[why.as_str()])
            .inc();
    }

    async fn serve(mut self, stream: tokio::net::TcpStream, acceptor: Option<TlsAcceptor>) {
        // Small answers go out at once rather than waiting for more to coalesce.
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = acceptor else {
            return self.drive(TokioIo::new(stream)).await;
        };
        let handshake = tokio::select! {
            handshake = tokio::time::timeout(self.limits.tls_handshake_timeout, acceptor.accept(stream)) => handshake,
            _ = self.stopped.changed() => return,
        };
        match handshake {
            Ok(Ok(stream)) => self.drive(TokioIo::new(stream)).await,
            Ok(Err(error)) => {
                tracing::debug!(%error, "A TLS handshake failed.");
                self.closed(Closed::TlsHandshakeFailed);
            }
            Err(_) => {
                tracing::debug!(
                    "A TLS handshake did not finish in time; the connection is closed."
                );
                self.closed(Closed::TlsHandshakeTimeout);
            }
        }
    }

    async fn drive<I>(mut self, io: TokioIo<I>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let service_activity = Arc::clone(&activity);
        let router = TowerToHyperService::new(self.router.clone());
        let peer = axum::extract::ConnectInfo(self.peer);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(peer);
            let guard = RequestGuard::start(&service_activity);
            let response = hyper::service::Service::call(&router, request);
            async move {
                let response = response.await;
                drop(guard);
                response
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST_BYTES);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut stopping = false;
        // Once the watchdog has told the connection to close: when it is dropped regardless.
        let mut hard_close: Option<tokio::time::Instant> = None;
        loop {
            let now = tokio::time::Instant::now();
            let wake = match (hard_close, activity.deadline(&self.limits)) {
                (Some(hard), _) => hard,
                (None, Some((when, _))) => tokio::time::Instant::from_std(when),
                // In flight: look again after an idle period (the request's own timeouts apply).
                (None, None) => now
                    .checked_add(self.limits.idle_timeout)
                    .unwrap_or(now + Duration::from_secs(3600)),
            };
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        // hyper's own header timeout (a kept-alive HTTP/1.1 connection that
                        // sent no next request) ends the connection with a timeout error.
                        let timed_out = error
                            .downcast_ref::<hyper::Error>()
                            .is_some_and(hyper::Error::is_timeout);
                        if timed_out && hard_close.is_none() {
                            self.closed(Closed::HeaderTimeout);
                        }
                        tracing::debug!(error = %error, "A connection ended with an error.");
                    }
                    return;
                }
                changed = self.stopped.changed(), if !stopping => {
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                    stopping = true;
                }
                () = activity.changed.notified() => {}
                () = tokio::time::sleep_until(wake) => {
                    if hard_close.is_some_and(|hard| tokio::time::Instant::now() >= hard) {
                        // A request that slipped in before the GOAWAY may finish (its own
                        // timeouts bound it).
                        if activity.in_flight.load(Ordering::Acquire) == 0 {
                            return;
                        }
                        hard_close = tokio::time::Instant::now().checked_add(CLOSE_GRACE);
                        continue;
                    }
                    let expired = activity
                        .deadline(&self.limits)
                        .filter(|(when, _)| Instant::now() >= *when);
                    if let (None, Some((_, why))) = (hard_close, expired) {
                        tracing::debug!(reason = why.as_str(), "Closing a connection that sent no request in time.");
                        self.closed(why);
                        // Politely first (HTTP/2 GOAWAY, so a client does not send on a
                        // connection about to go), then for good after a short grace.
                        if !stopping {
                            connection.as_mut().graceful_shutdown();
                            stopping = true;
                        }
                        hard_close = tokio::time::Instant::now().checked_add(CLOSE_GRACE);
                        if hard_close.is_none() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 10,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_watchdog_deadline_follows_the_requests() {
        let limits = limits();
        let seconds = Duration::from_secs;
        let cases = [
            // (started, in flight, last ended) → deadline
            (
                (0, 0, seconds(0)),
                Some((seconds(10), Closed::HeaderTimeout)),
            ),
            ((1, 1, seconds(0)), None),
            ((5, 2, seconds(30)), None),
            ((1, 0, seconds(3)), Some((seconds(78), Closed::IdleTimeout))),
            (
                (u64::MAX, 0, Duration::MAX),
                Some((Duration::MAX, Closed::IdleTimeout)),
            ),
        ];
        for ((started, in_flight, ended), expected) in cases {
            assert_eq!(
                watchdog_deadline(started, in_flight, ended, &limits),
                expected,
                "{started} {in_flight} {ended:?}"
            );
        }
    }

    #[test]
    fn connections_stay_below_the_open_file_limit() {
        let cases = [
            ((10_000, 1024), (1024 - FD_RESERVE as usize, true)),
            ((500, 1024), (500, false)),
            ((10_000, 1_048_576), (10_000, false)),
            ((10_000, 0), (1, true)),
            ((10_000, u64::MAX), (10_000, false)),
        ];
        for ((requested, soft), expected) in cases {
            assert_eq!(
                usable_connections(requested, soft),
                expected,
                "{requested} {soft}"
            );
        }
    }

    #[test]
    fn extreme_configured_limits_are_clamped() {
        let config = LimitsConfig {
            max_connections: usize::MAX,
            header_read_timeout_seconds: u64::MAX,
            ..LimitsConfig::default()
        };
        let limits = ConnectionLimits::from_config(&config);
        assert_eq!(limits.max_connections, MAX_CONNECTIONS_CEILING);
        let activity = Activity::new();
        // A deadline beyond what an Instant holds is "never", not a panic.
        assert_eq!(activity.deadline(&limits), None);
    }
}
