//! posmon-agent: a small daemon on each POS terminal host. Every interval it probes the path to
//! the hosts the terminal needs, reads software versions and device status, and pushes a report
//! to the collector.
//!
//! Data flows one way: `config` → `run` (schedule) → `cycle` (`probe`, `device`, `software`,
//! `clock`) → `report` → `push`, and → `status` (the local verdict: `status.json`, `GET /status`),
//! or → `status` → `render` for `posmon-agent probe`. Probes never return
//! errors: a failure is a measurement in the report.

pub mod backoff;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod control;
pub mod cycle;
pub mod datagram;
pub mod deliver;
pub mod device;
pub mod enroll;
pub mod probe;
pub mod render;
pub mod report;
pub mod run;
pub mod software;
pub mod spool;
pub mod status;
pub mod system;
pub mod watch;
