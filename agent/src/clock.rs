//! Whether a local NTP client says the clock is synchronized: systemd-timesyncd's flag file, or
//! chrony's `tracking` leap status where chronyd runs. The offset itself is estimated against the
//! collector in `push`.

use std::time::Duration;

use crate::system::SystemRoot;

/// How long `chronyc` may take.
const CHRONYC_TIMEOUT: Duration = Duration::from_secs(2);

/// `Some(true)` when a local NTP client reports sync, `Some(false)` when one runs without it,
/// `None` when no client is found.
pub async fn ntp_synchronized(root: &SystemRoot) -> Option<bool> {
    if root.path("run/systemd/timesync/synchronized").exists() {
        return Some(true);
    }
    if root.path("run/chrony").is_dir() {
        let command = ["chronyc", "-n", "-c", "tracking"].map(String::from);
        if let Ok(finished) = crate::command::run(&command, CHRONYC_TIMEOUT).await {
            if finished.status.success() {
                return Some(chrony_synchronized(&finished.stdout));
            }
        }
    }
    root.path("run/systemd/timesync").is_dir().then_some(false)
}

/// chronyc's CSV tracking line ends with the leap status: `Normal` when synchronized.
fn chrony_synchronized(tracking: &str) -> bool {
    tracking
        .trim()
        .rsplit(',')
        .next()
        .is_some_and(|leap| leap.trim() != "Not synchronised")
        && tracking.contains(',')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::tests::FakeTree;

    #[test]
    fn chronys_leap_status_says_whether_it_is_synchronized() {
        assert!(chrony_synchronized(
            "A29FC87B,162.159.200.123,3,1764121200.1,-0.000012,0.000004,0.000020,-1.2,0.001,0.05,0.012,0.0004,64.0,Normal\n"
        ));
        assert!(!chrony_synchronized(
            "00000000,,0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,Not synchronised\n"
        ));
        assert!(!chrony_synchronized(""));
    }

    #[tokio::test]
    async fn timesyncd_is_read_from_its_flag_file() {
        let synchronized = FakeTree::new(&[("run/systemd/timesync/synchronized", "")]);
        assert_eq!(ntp_synchronized(&synchronized.root()).await, Some(true));
        let waiting = FakeTree::new(&[("run/systemd/timesync/clock", "")]);
        assert_eq!(ntp_synchronized(&waiting.root()).await, Some(false));
        let none = FakeTree::new(&[]);
        assert_eq!(ntp_synchronized(&none.root()).await, None);
    }
}
