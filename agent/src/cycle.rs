//! One probe cycle's measurements: the ladder towards every target, the software inventory,
//! the device status and the NTP state. Shared by the agent's loop and `posmon-agent probe`.

use posmon_protocol::ClockStatus;
use time::OffsetDateTime;

use crate::config::AgentConfig;
use crate::device::DeviceProbe;
use crate::probe::Ladder;
use crate::report::Cycle;
use crate::software::{inventory, ComponentSource};
use crate::system::SystemRoot;

/// What a cycle needs, prepared once.
pub struct Measurer {
    ladder: Ladder,
    sources: Vec<ComponentSource>,
    device: DeviceProbe,
    root: SystemRoot,
}

impl Measurer {
    pub fn new(config: &AgentConfig) -> anyhow::Result<Self> {
        let sources = config
            .components
            .iter()
            .map(ComponentSource::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Measurer {
            ladder: Ladder::new(config)?,
            sources,
            device: DeviceProbe::new(config),
            root: SystemRoot::new(&config.system_root),
        })
    }

    /// Measures everything once. `clock` is the offset from the latest exchange with the
    /// collector, if any; the local NTP state is added to it.
    pub async fn measure(&mut self, clock: Option<ClockStatus>) -> Cycle {
        let observed_at = OffsetDateTime::now_utc();
        let measured = self.ladder.probe_all().await;
        let software = inventory(&self.sources).await;
        let device = self.device.measure().await;
        let clock = match clock {
            Some(clock) => Some(ClockStatus {
                ntp_synchronized: crate::clock::ntp_synchronized(&self.root).await,
                ..clock
            }),
            None => None,
        };
        Cycle {
            observed_at,
            probes: measured.probes,
            network: measured.network,
            software,
            device,
            clock,
        }
    }
}
