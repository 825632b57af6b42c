//! posmon wire protocol v1: what an agent sends to the collector and what it gets back.
//!
//! This crate holds only the protocol — serde types, their validation and the terminal
//! credential scheme — so that the agent and the collector (and any third-party sender) agree on
//! one definition. It must never depend on an async runtime, an HTTP client or server: it does
//! no IO at all. The field-by-field documentation, with units and limits, is `README.md` beside
//! this file; golden fixtures under `fixtures/` must keep parsing for as long as v1 is accepted.

pub mod control;
pub mod credential;
pub mod datagram;
pub mod enroll;
pub mod limits;
pub mod report;
#[cfg(any(test, feature = "proptest"))]
pub mod strategies;
pub mod validate;

#[cfg(test)]
mod properties;

pub use credential::{
    terminal_token, terminal_token_at, CredentialError, FleetKey, Keyring, Verified,
};
pub use report::*;
pub use validate::{validate_batch, validate_report, ValidationError};

/// The schema version this crate speaks. A report with any other value is refused as a whole.
pub const SCHEMA_VERSION: u32 = 1;

/// The path the collector accepts report batches on.
pub const REPORTS_PATH: &str = "/api/v1/reports";

/// The request header an agent names its terminal in (lower case, as HTTP/2 sends it). The
/// collector checks the token against it before it takes an ingest slot or reads the body, and
/// every report of the batch must carry the same terminal id. Requests without it (agents
/// before it) are still accepted, from a small pool of their own.
pub const TERMINAL_HEADER: &str = "x-posmon-terminal";
