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
