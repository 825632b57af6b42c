//! Device status: CPU, load, memory, swap, disks and uptime (from sysinfo), and from the files
//! under the system root: temperatures, battery, interface counters and Wi-Fi signal, the POS
//! application's processes and the peripherals. Nothing here fails: what cannot be read is left
//! out of the report.

mod interfaces;
mod peripherals;
mod power;
mod processes;
mod thermal;

use posmon_protocol::{limits, DeviceStatus, DiskStatus};
use sysinfo::{Disks, System};

use crate::config::{AgentConfig, PeripheralConfig};
use crate::software::bounded;
use crate::system::SystemRoot;

/// Keeps the OS handles between cycles: CPU usage is measured between two refreshes.
pub struct DeviceProbe {
    system: System,
    disks: Disks,
    root: SystemRoot,
    processes: Vec<String>,
    peripherals: Vec<PeripheralConfig>,
}

impl DeviceProbe {
    pub fn new(config: &AgentConfig) -> Self {
        let mut system = System::new();
        // The first refresh sets the baseline the first cycle's CPU usage is measured from.
        system.refresh_cpu_usage();
        DeviceProbe {
            system,
            disks: Disks::new(),
            root: SystemRoot::new(&config.system_root),
            processes: config.processes.clone(),
            peripherals: config.peripherals.clone(),
        }
    }

    /// The device status now.
    pub async fn measure(&mut self) -> DeviceStatus {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        let load = System::load_average();
        let mut disks: Vec<DiskStatus> = Vec::new();
        for disk in self.disks.list() {
            let total_bytes = disk.total_space();
            let mount = bounded(
                &disk.mount_point().to_string_lossy(),
                limits::DETAIL_MAX_CHARS,
            );
            if total_bytes == 0 || mount.is_empty() || disks.iter().any(|seen| seen.mount == mount)
            {
                continue;
            }
            disks.push(DiskStatus {
                mount,
                total_bytes,
                available_bytes: disk.available_space().min(total_bytes),
            });
            if disks.len() == limits::DEVICE_LIST_MAX {
                break;
            }
        }
        let cpu = f64::from(self.system.global_cpu_usage());
        DeviceStatus {
            cpu_percent: cpu.is_finite().then_some(cpu.max(0.0)),
            load_average_1m: (load.one.is_finite() && load.one >= 0.0).then_some(load.one),
            memory_total_bytes: Some(self.system.total_memory()),
            memory_available_bytes: Some(self.system.available_memory()),
            swap_total_bytes: Some(self.system.total_swap()),
            swap_used_bytes: Some(self.system.used_swap()),
            uptime_seconds: Some(System::uptime()),
            disks,
            temperatures: thermal::temperatures(&self.root),
            battery: power::battery(&self.root),
            interfaces: interfaces::interfaces(&self.root),
            processes: processes::processes(&self.root, &self.processes),
            peripherals: peripherals::peripherals(&self.root, &self.peripherals).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_measurement_passes_the_protocols_validation() {
        let mut probe = DeviceProbe::new(&AgentConfig::example());
        let status = probe.measure().await;
        assert!(status.memory_total_bytes.is_some_and(|total| total > 0));
        assert!(status.uptime_seconds.is_some());
        let mut report = crate::report::tests::minimal_report();
        report.device = Some(status);
        posmon_protocol::validate_report(&report, "report")
            .unwrap_or_else(|error| panic!("{error}"));
    }
}
