//! posmon-simulator: plays a fleet of terminals speaking protocol v1 with realistic labels and
//! scripted faults, at a set rate for a set time, and reports the rate it achieved and its
//! errors. It is the load generator for benchmarks, a capacity-test tool for sizing a
//! deployment, and the demo's fleet.
//!
//! Every simulated value is a pure function of the seed, the terminal and the time (`random`),
//! so a million terminals cost no memory and a run is reproducible.

pub mod eval;
pub mod exposition;
pub mod fleet;
pub mod load;
pub mod random;
pub mod report;
pub mod scenario;
