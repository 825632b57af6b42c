//! Size limits on everything a report carries. The collector refuses a report that exceeds one;
//! the agent truncates or drops what it collects so that it never produces such a report.

/// `terminal_id`: 1 to 64 characters from `A-Z a-z 0-9 . _ : -`.
pub const TERMINAL_ID_MAX_CHARS: usize = 64;
/// `agent_version`, component versions and fleet key ids.
pub const VERSION_MAX_CHARS: usize = 64;
/// A label value (`merchant`, `model`, `region`, `carrier`, and each extra label).
pub const LABEL_VALUE_MAX_CHARS: usize = 128;
/// A label key, component name, target name, sensor name, mount point or interface name.
pub const NAME_MAX_CHARS: usize = 64;
/// A free-text detail (an error message, an address, a "why unknown" reason).
pub const DETAIL_MAX_CHARS: usize = 256;
/// Extra (free-form) labels per terminal.
pub const EXTRA_LABELS_MAX: usize = 16;
/// Probe results per report.
pub const PROBES_MAX: usize = 32;
/// Stage results per probe (the ladder has six rungs plus ICMP; room to grow).
pub const STAGES_MAX: usize = 12;
/// Software components per report.
pub const COMPONENTS_MAX: usize = 32;
/// Entries in each list of the device status (disks, temperatures, interfaces, processes,
/// peripherals).
pub const DEVICE_LIST_MAX: usize = 32;
/// Reports per request. A collector may be configured lower, never higher.
pub const REPORTS_PER_BATCH_MAX: usize = 500;
/// Attempts per stage in one probe cycle.
pub const ATTEMPTS_MAX: u32 = 100;
/// The highest `sequence` a report may carry: 2^53 − 1, the largest integer every JSON reader
/// (a browser's included) holds exactly, and far below SQLite's `i64`. An agent issuing one a
/// second would need 285 million years to reach it.
pub const SEQUENCE_MAX: u64 = (1 << 53) - 1;
/// `agent_instance`: 8 to 64 characters from `A-Z a-z 0-9 -`.
pub const AGENT_INSTANCE_MIN_CHARS: usize = 8;
pub const AGENT_INSTANCE_MAX_CHARS: usize = 64;
/// `clock.offset_ms` and `clock.uncertainty_ms`: at most ten years either way. A clock further
/// off is reported as that far off.
pub const CLOCK_OFFSET_MAX_MS: f64 = 10.0 * 366.0 * 86_400_000.0;
/// `certificate_days_left`: a certificate valid (or expired) for longer than a century is
/// not a measurement.
pub const CERTIFICATE_DAYS_MAX: i64 = 36_600;
/// `device.uptime_seconds`: a century.
pub const UPTIME_SECONDS_MAX: u64 = 100 * 366 * 86_400;
/// Any latency (`latency_ms.*`): an hour. No probe waits that long.
pub const LATENCY_MAX_MS: f64 = 3_600_000.0;

/// The longest probe or report interval, and the longest retry wait, a report may announce.
pub const INTERVAL_SECONDS_MAX: u32 = 86_400;

/// `data_usage.month` (`year * 12 + month - 1`): from 2000-01 to 2999-12. A month outside is a
/// clock or an encoding gone wrong, not a month of traffic.
pub const DATA_MONTH_MIN: u32 = 2000 * 12;
pub const DATA_MONTH_MAX: u32 = 3000 * 12 - 1;
/// Any byte count of `data_usage` (each kind, and the budget): 1 TiB a month, four hundred
/// thousand times the 10 MiB plan the agent is tuned for, far beyond a POS SIM card's plan.
pub const DATA_BYTES_MAX: u64 = 1 << 40;
/// `data_usage.stretch_percent`: from 100 (the configured intervals) to 10 000 (a hundred times
/// longer). An agent's configured cap must lie within.
pub const STRETCH_PERCENT_MIN: u32 = 100;
pub const STRETCH_PERCENT_MAX: u32 = 10_000;
