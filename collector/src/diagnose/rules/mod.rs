//! One file per rule: its logic, its finding kinds with their messages, and its tests.

pub mod network_path;
pub mod outdated;
