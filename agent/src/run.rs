//! The agent's loop: every interval, probe → report → push. Between cycles it sleeps.

use posmon_protocol::{ClockStatus, ReportBatch};
use time::OffsetDateTime;
use tokio::task::JoinSet;

use crate::config::AgentConfig;
use crate::device::DeviceProbe;
use crate::probe::tcp;
use crate::push::Pusher;
use crate::report::{build, Cycle};
use crate::sequence::Sequence;
use crate::software::{inventory, ComponentSource};

/// Everything the loop keeps between cycles.
pub struct Agent {
    config: AgentConfig,
    sources: Vec<ComponentSource>,
    device: DeviceProbe,
    sequence: Sequence,
    pusher: Pusher,
    /// The clock offset from the latest exchange with the collector, sent with the next report.
    clock: Option<ClockStatus>,
}

impl Agent {
    pub fn new(config: AgentConfig, token: &str) -> anyhow::Result<Self> {
        let sources = config
            .components
            .iter()
            .map(ComponentSource::new)
            .collect::<Result<Vec<_>, _>>()?;
        let sequence = Sequence::open(&config.state_dir)?;
        let pusher = Pusher::new(&config, token)?;
        Ok(Agent {
            config,
            sources,
            device: DeviceProbe::new(),
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
        let observed_at = OffsetDateTime::now_utc();
        let probes = probe_all(&self.config).await;
        let cycle = Cycle {
            observed_at,
            probes,
            software: inventory(&self.sources),
            device: self.device.measure(),
            clock: self.clock.clone(),
        };
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

/// Probes every target at once; results keep the configured order.
async fn probe_all(config: &AgentConfig) -> Vec<posmon_protocol::ProbeResult> {
    let timeout = config.probe_timeout();
    let mut tasks = JoinSet::new();
    for (index, target) in config.targets.iter().cloned().enumerate() {
        tasks.spawn(async move { (index, tcp::probe(&target, timeout).await) });
    }
    let mut results = Vec::with_capacity(config.targets.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(error) => tracing::error!(%error, "A probe task failed."),
        }
    }
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}
