//! A compact summary of a terminal's device health (resources, sensors, peripherals, processes
//! and clock) from its newest report, kept in the fleet state for the dashboard's terminal page.
//!
//! Plain data, no IO. It holds only what a person reads on the terminal page: the rules see the
//! full report, so nothing here may feed a diagnosis.

use std::sync::Arc;

use posmon_protocol::limits::DEVICE_LIST_MAX;
use posmon_protocol::{ClockStatus, DeviceStatus};
use serde::{Deserialize, Serialize};

/// One named thing (a peripheral or a process) and whether it is there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub name: Arc<str>,
    pub ok: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_available_percent: Option<f32>,
    /// The fullest disk's free share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_percent: Option<f32>,
    /// The hottest sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_percent: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_charging: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// The terminal clock minus the collector's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peripherals: Vec<Presence>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<Presence>,
}

fn percent(part: u64, whole: u64) -> Option<f32> {
    (whole > 0).then(|| (part as f64 * 100.0 / whole as f64) as f32)
}

impl DeviceSummary {
    /// The summary of a report's device and clock sections; `None` when it has neither.
    /// `intern` shares the names' strings with the rest of the fleet state. The lists keep at
    /// most the protocol's `DEVICE_LIST_MAX` entries each, whoever validated the report.
    pub fn from_report(
        device: Option<&DeviceStatus>,
        clock: Option<&ClockStatus>,
        mut intern: impl FnMut(&str) -> Arc<str>,
    ) -> Option<Box<DeviceSummary>> {
        if device.is_none() && clock.is_none() {
            return None;
        }
        let mut summary = DeviceSummary {
            clock_offset_ms: clock.map(|clock| clock.offset_ms as f32),
            ..DeviceSummary::default()
        };
        if let Some(device) = device {
            summary.cpu_percent = device.cpu_percent.map(|value| value as f32);
            summary.memory_available_percent =
                match (device.memory_available_bytes, device.memory_total_bytes) {
                    (Some(available), Some(total)) => percent(available, total),
                    _ => None,
                };
            summary.disk_free_percent = device
                .disks
                .iter()
                .filter_map(|disk| percent(disk.available_bytes, disk.total_bytes))
                .reduce(f32::min);
            summary.temperature_celsius = device
                .temperatures
                .iter()
                .map(|sensor| sensor.celsius as f32)
                .reduce(f32::max);
            summary.battery_percent = device.battery.as_ref().map(|b| b.percent as f32);
            summary.battery_charging = device.battery.as_ref().and_then(|b| b.charging);
            summary.uptime_seconds = device.uptime_seconds;
            summary.peripherals = device
                .peripherals
                .iter()
                .take(DEVICE_LIST_MAX)
                .map(|p| Presence {
                    name: intern(&p.name),
                    ok: p.present,
                })
                .collect();
            summary.processes = device
                .processes
                .iter()
                .take(DEVICE_LIST_MAX)
                .map(|p| Presence {
                    name: intern(&p.name),
                    ok: p.running,
                })
                .collect();
        }
        Some(Box::new(summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_protocol::{BatteryStatus, DiskStatus, PeripheralStatus, Temperature};

    fn check(device: Option<DeviceStatus>, expected: Option<DeviceSummary>) {
        let summary = DeviceSummary::from_report(device.as_ref(), None, |text| Arc::from(text));
        assert_eq!(summary.map(|summary| *summary), expected);
    }

    #[test]
    fn summarises_the_worst_disk_and_hottest_sensor() {
        check(None, None);
        check(
            Some(DeviceStatus {
                memory_total_bytes: Some(1000),
                memory_available_bytes: Some(250),
                disks: vec![
                    DiskStatus {
                        mount: "/".into(),
                        total_bytes: 100,
                        available_bytes: 50,
                    },
                    DiskStatus {
                        mount: "/data".into(),
                        total_bytes: 100,
                        available_bytes: 2,
                    },
                    DiskStatus {
                        mount: "/empty".into(),
                        total_bytes: 0,
                        available_bytes: 0,
                    },
                ],
                temperatures: vec![
                    Temperature {
                        sensor: "cpu".into(),
                        celsius: 61.0,
                    },
                    Temperature {
                        sensor: "board".into(),
                        celsius: 85.5,
                    },
                ],
                battery: Some(BatteryStatus {
                    percent: 12.0,
                    charging: Some(false),
                }),
                peripherals: vec![PeripheralStatus {
                    name: "card_reader".into(),
                    present: false,
                    detail: None,
                }],
                ..DeviceStatus::default()
            }),
            Some(DeviceSummary {
                memory_available_percent: Some(25.0),
                disk_free_percent: Some(2.0),
                temperature_celsius: Some(85.5),
                battery_percent: Some(12.0),
                battery_charging: Some(false),
                peripherals: vec![Presence {
                    name: Arc::from("card_reader"),
                    ok: false,
                }],
                ..DeviceSummary::default()
            }),
        );
    }

    #[test]
    fn the_lists_keep_at_most_the_protocols_limit() {
        let named = |count: usize| -> Vec<PeripheralStatus> {
            (0..count)
                .map(|index| PeripheralStatus {
                    name: format!("device-{index}"),
                    present: true,
                    detail: None,
                })
                .collect()
        };
        for (given, kept) in [
            (0, 0),
            (3, 3),
            (DEVICE_LIST_MAX, DEVICE_LIST_MAX),
            (1000, DEVICE_LIST_MAX),
        ] {
            let device = DeviceStatus {
                peripherals: named(given),
                ..DeviceStatus::default()
            };
            let summary = DeviceSummary::from_report(Some(&device), None, |text| Arc::from(text));
            assert_eq!(summary.map(|s| s.peripherals.len()), Some(kept), "{given}");
        }
    }
}
