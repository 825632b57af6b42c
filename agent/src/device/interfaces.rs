//! Per-interface state and counters: `/proc/net/dev` (errors and drops since boot),
//! `/sys/class/net/<name>/operstate` (up or not) and `/proc/net/wireless` (Wi-Fi signal).

use std::collections::BTreeMap;

use posmon_protocol::{limits, InterfaceStatus};

use crate::software::bounded;
use crate::system::SystemRoot;

/// Every interface but loopback, at most [`limits::DEVICE_LIST_MAX`].
pub fn interfaces(root: &SystemRoot) -> Vec<InterfaceStatus> {
    let counters = root.read("proc/net/dev").unwrap_or_default();
    let signals = root
        .read("proc/net/wireless")
        .map(|text| wifi_signals(&text))
        .unwrap_or_default();
    parse_counters(&counters)
        .into_iter()
        .filter(|interface| interface.name != "lo")
        .take(limits::DEVICE_LIST_MAX)
        .map(|mut interface| {
            interface.up = root
                .read_value(format!("sys/class/net/{}/operstate", interface.name))
                .is_some_and(|state| state == "up" || state == "unknown");
            interface.wifi_signal_dbm = signals.get(&interface.name).copied();
            interface
        })
        .collect()
}

/// `name: rx_bytes rx_packets rx_errs rx_drop fifo frame compressed multicast tx_bytes
/// tx_packets tx_errs tx_drop ...`
fn parse_counters(text: &str) -> Vec<InterfaceStatus> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = bounded(name.trim(), limits::NAME_MAX_CHARS);
            let values: Vec<u64> = counters
                .split_whitespace()
                .map(|value| value.parse().ok())
                .collect::<Option<_>>()?;
            (!name.is_empty() && values.len() >= 12).then(|| InterfaceStatus {
                name,
                up: false,
                rx_errors: values[2],
                rx_dropped: values[3],
                tx_errors: values[10],
                tx_dropped: values[11],
                wifi_signal_dbm: None,
            })
        })
        .collect()
}

/// `name: status link level noise ...`: the level in dBm. Some drivers write it as an
/// unsigned byte (200 for -56 dBm).
fn wifi_signals(text: &str) -> BTreeMap<String, i32> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, values) = line.split_once(':')?;
            let level = values.split_whitespace().nth(2)?;
            let level = level.trim_end_matches('.').parse::<f64>().ok()?;
            let level = if level > 0.0 && level <= 255.0 {
                level - 256.0
            } else {
                level
            };
            (-150.0..=0.0)
                .contains(&level)
                .then(|| (name.trim().to_string(), level.round() as i32))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::tests::FakeTree;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0
  eth0: 5000 50 3 7 0 0 0 0 4000 40 2 9 0 0 0 0
 wlan0: 9000 90 1 0 0 0 0 0 8000 80 0 4 0 0 0 0
 bogus: 1 2 3
";
    const WIRELESS: &str =
        "Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   54.  -56.  -256        0      0      0      0      0        0
";

    fn check(files: &[(&str, &str)], expected: Vec<InterfaceStatus>) {
        let tree = FakeTree::new(files);
        assert_eq!(interfaces(&tree.root()), expected, "{files:?}");
    }

    #[test]
    fn counters_state_and_wifi_signal_come_from_proc_and_sys() {
        check(
            &[
                ("proc/net/dev", DEV),
                ("proc/net/wireless", WIRELESS),
                ("sys/class/net/eth0/operstate", "down\n"),
                ("sys/class/net/wlan0/operstate", "up\n"),
            ],
            vec![
                InterfaceStatus {
                    name: "eth0".into(),
                    up: false,
                    rx_errors: 3,
                    rx_dropped: 7,
                    tx_errors: 2,
                    tx_dropped: 9,
                    wifi_signal_dbm: None,
                },
                InterfaceStatus {
                    name: "wlan0".into(),
                    up: true,
                    rx_errors: 1,
                    rx_dropped: 0,
                    tx_errors: 0,
                    tx_dropped: 4,
                    wifi_signal_dbm: Some(-56),
                },
            ],
        );
        check(&[], vec![]);
    }

    #[test]
    fn a_signal_written_as_an_unsigned_byte_is_converted() {
        let text = "h1\nh2\n wlan0: 0000 54. 200. 0 0 0 0 0 0 0\n";
        assert_eq!(wifi_signals(text).get("wlan0"), Some(&-56));
        assert!(wifi_signals("h1\nh2\n wlan0: 0000 54. junk. 0\n").is_empty());
    }
}
