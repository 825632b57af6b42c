//! The writer thread: once a second it takes what changed in the fleet and writes it in one
//! transaction, outside every fleet lock, so a crash loses at most about a second of state.
//! On stop it writes what is left. A failed write is retried with the next batch.
//!
//! With durable acknowledgements, a report request takes a [`Durability`] ticket after applying
//! its reports and waits until the writer has written a batch that includes them; the writer
//! then writes as soon as a ticket waits (a group commit: every request waiting at that moment
//! shares one transaction), so an acknowledged report survives a crash.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fleet::{Changes, Fleet};
use crate::metrics::Metrics;

use super::Store;

/// How often changes are written: the most state a crash can lose.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Tickets for applied changes, and the highest ticket whose changes are written.
pub struct Durability {
    issued: AtomicU64,
    written: tokio::sync::watch::Sender<u64>,
    /// Set by a new ticket, to wake the writer at once.
    wake: (Mutex<bool>, Condvar),
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            issued: AtomicU64::new(0),
            written: tokio::sync::watch::Sender::new(0),
            wake: (Mutex::new(false), Condvar::new()),
        }
    }
}

impl Durability {
    /// A ticket for every change applied before this call; wakes the writer.
    pub fn ticket(&self) -> u64 {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        *self.wake.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.1.notify_one();
        ticket
    }

    /// Sleeps until a ticket wakes the writer or `deadline` passes; at most `STOP_CHECK`, so
    /// that a stop is noticed.
    fn sleep_until(&self, deadline: Instant) {
        let mut woken = self.wake.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if !*woken && now < deadline {
            let wait = (deadline - now).min(STOP_CHECK);
            woken = self
                .wake
                .1
                .wait_timeout(woken, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *woken = false;
    }

    /// Whether `ticket`'s changes were written within `timeout`.
    pub async fn wait_written(&self, ticket: u64, timeout: Duration) -> bool {
        let mut written = self.written.subscribe();
        let reached = tokio::time::timeout(timeout, written.wait_for(|done| *done >= ticket))
            .await
            .is_ok_and(|waited| waited.is_ok());
        reached
    }

    fn waiting(&self) -> bool {
        self.issued.load(Ordering::SeqCst) > *self.written.borrow()
    }
}

/// How often the sleeping writer looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Writes the fleet's changes to the store until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Takes the fleet's changes and writes them, keeping a failed batch to retry. Returns whether
/// the write succeeded.
pub fn write_changes(
    fleet: &Fleet,
    store: &Store,
    metrics: &Metrics,
    history_limit: usize,
    retry: &mut Option<Changes>,
) -> bool {
    let started = Instant::now();
    let mut changes = fleet.take_changes();
    let listening_since = fleet.listening_since();
    if listening_since > time::OffsetDateTime::UNIX_EPOCH {
        changes.listening = Some((listening_since, time::OffsetDateTime::now_utc()));
    }
    if let Some(mut failed) = retry.take() {
        // The older batch first, so that newer terminal states overwrite older ones.
        failed.terminals.append(&mut changes.terminals);
        failed.closed.append(&mut changes.closed);
        failed.fleet_wide = changes.fleet_wide.or(failed.fleet_wide);
        failed.next_finding_id = changes.next_finding_id;
        failed.listening = changes.listening.or(failed.listening);
        changes = failed;
    }
    let written = changes.terminals.len();
    match store.write(&changes, history_limit) {
        Ok(()) => {
            metrics
                .persist_duration
                .observe(started.elapsed().as_secs_f64());
            metrics.persisted_terminals.inc_by(written as u64);
            true
        }
        Err(error) => {
            metrics.persist_failures.inc();
            tracing::error!(%error, terminals = written, "Cannot write the fleet state; retrying with the next batch.");
            *retry = Some(changes);
            false
        }
    }
}

impl Writer {
    pub fn start(
        fleet: Arc<Fleet>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        history_limit: usize,
        durability: Arc<Durability>,
    ) -> std::io::Result<Writer> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("posmon-state-writer".into())
            .spawn(move || {
                let mut retry = None;
                let mut next = Instant::now() + WRITE_INTERVAL;
                // Tickets taken before the changes are, so a written batch covers them.
                let write = |retry: &mut Option<Changes>| {
                    let covered = durability.issued.load(Ordering::SeqCst);
                    let written = write_changes(&fleet, &store, &metrics, history_limit, retry);
                    if written {
                        durability.written.send_if_modified(|done| {
                            let moved = covered > *done;
                            *done = (*done).max(covered);
                            moved
                        });
                    }
                    written
                };
                while !stopping.load(Ordering::Relaxed) {
                    durability.sleep_until(next);
                    if Instant::now() < next && !durability.waiting() {
                        continue;
                    }
                    next = Instant::now() + WRITE_INTERVAL;
                    write(&mut retry);
                }
                if !write(&mut retry) {
                    tracing::error!("The last state changes could not be written before stopping.");
                }
            })?;
        Ok(Writer {
            stop,
            thread: Some(thread),
        })
    }

    /// Writes what is left and stops.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("The state writer thread panicked.");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}
