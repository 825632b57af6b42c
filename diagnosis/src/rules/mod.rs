//! One file per rule: its logic, its finding kinds with their messages and default hysteresis,
//! and its table of reports that open it, must not open it, and close it.

pub mod app_not_running;
pub mod battery_low;
pub mod clock_skew;
pub mod disk_full;
pub mod high_latency;
pub mod memory_pressure;
pub mod network_path;
pub mod outdated;
pub mod overheat;
pub mod packet_loss;
pub mod peripheral_missing;
pub mod silent;
pub mod upstream;
