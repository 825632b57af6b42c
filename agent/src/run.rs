//! The agent's loop: every interval, probe → report → push. Between cycles it sleeps.

use posmon_protocol::{ClockStatus, ReportBatch};

use crate::config::AgentConfig;
use crate::cycle::Measurer;
use crate::push::Pusher;
use crate::report::build;
use crate::sequence::Sequence;

/// Everything the loop keeps between cycles.
pub struct Agent {
    config: AgentConfig,
    measurer: Measurer,
    sequence: Sequence,
    pusher: Pusher,
    /// The clock offset from the latest exchange with the collector, sent with the next report.
    clock: Option<ClockStatus>,
}

impl Agent {
    pub fn new(config: AgentConfig, token: &str) -> anyhow::Result<Self> {
        let measurer = Measurer::new(&config)?;
        let sequence = Sequence::open(&config.state_dir)?;
        let pusher = Pusher::new(&config, token)?;
        Ok(Agent {
            config,
            measurer,
            sequence,
            pusher,
            clock: None,
        })
    }

    /// Runs cycles until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.config.report_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => self.cycle().await,
            }
        }
    }

    /// One probe cycle and its delivery.
    pub async fn cycle(&mut self) {
        let cycle = self.measurer.measure(self.clock.clone()).await;
        let sequence = match self.sequence.issue() {
            Ok(sequence) => sequence,
            Err(error) => {
                tracing::error!(%error, "Cannot issue a sequence number; skipping this cycle.");
                return;
            }
        };
        let batch = ReportBatch {
            reports: vec![build(&self.config, sequence, cycle)],
        };
        match self.pusher.push(&batch).await {
            Ok(delivered) => {
                tracing::debug!(
                    sequence,
                    acknowledged = delivered.ack.acknowledged_sequence,
                    "Delivered a report."
                );
                self.clock = Some(delivered.clock);
            }
            Err(error) => tracing::warn!(sequence, %error, "Could not deliver a report."),
        }
    }
}
