//! posmon-collector: ingests reports from a fleet of POS terminals, keeps fleet state, diagnoses
//! each terminal and serves the HTTP API and Prometheus metrics.
//!
//! Data flows one way: `http` (limits, decode, validate, authenticate) → `diagnose` (pure rules)
//! → `fleet` and `findings` (state, events) → `store` (SQLite, written by a background thread),
//! `http` queries and `metrics`; `alert` compares the open findings with what receivers were
//! told and delivers notifications through an outbox. See ARCHITECTURE.md.

pub mod alert;
pub mod cli;
pub mod compliance;
pub mod config;
pub mod control;
pub mod data_usage;
pub mod datagram;
pub mod device;
pub mod enroll;
pub mod fleet;
pub mod history;
pub mod http;
pub mod ingest_guard;
pub mod metrics;
pub mod oidc;
#[cfg(test)]
mod properties;
pub mod revocation;
pub mod secret;
pub mod silence;
pub mod store;
pub mod tls;
pub mod users;
pub mod web;
pub mod workflow;
