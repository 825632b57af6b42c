//! The writer thread: once a second it takes what changed in the fleet and writes it in one
//! transaction, outside every fleet lock, so a crash loses at most about a second of state.
//! On stop it writes what is left. A failed write is retried with the next batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fleet::{Changes, Fleet};
use crate::metrics::Metrics;

use super::Store;

/// How often changes are written: the most state a crash can lose.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(1);

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
    if let Some(mut failed) = retry.take() {
        // The older batch first, so that newer terminal states overwrite older ones.
        failed.terminals.append(&mut changes.terminals);
        failed.closed.append(&mut changes.closed);
        failed.fleet_wide = changes.fleet_wide.or(failed.fleet_wide);
        failed.next_finding_id = changes.next_finding_id;
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
    ) -> std::io::Result<Writer> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("posmon-state-writer".into())
            .spawn(move || {
                let mut retry = None;
                let mut next = Instant::now() + WRITE_INTERVAL;
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    if Instant::now() < next {
                        continue;
                    }
                    next = Instant::now() + WRITE_INTERVAL;
                    write_changes(&fleet, &store, &metrics, history_limit, &mut retry);
                }
                if !write_changes(&fleet, &store, &metrics, history_limit, &mut retry) {
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
