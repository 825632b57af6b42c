//! The battery, where the terminal has one: `/sys/class/power_supply/<name>/` with
//! `type` = `Battery`, `capacity` (percent) and `status`.

use posmon_protocol::BatteryStatus;

use crate::system::SystemRoot;

/// The first battery's charge and whether it is charging.
pub fn battery(root: &SystemRoot) -> Option<BatteryStatus> {
    root.list("sys/class/power_supply")
        .into_iter()
        .find_map(|supply| {
            let base = format!("sys/class/power_supply/{supply}");
            (root.read_value(format!("{base}/type"))? == "Battery").then_some(())?;
            let percent: f64 = root.read_value(format!("{base}/capacity"))?.parse().ok()?;
            let charging = match root.read_value(format!("{base}/status")).as_deref() {
                Some("Charging") => Some(true),
                Some("Discharging" | "Not charging" | "Full") => Some(false),
                _ => None,
            };
            Some(BatteryStatus {
                percent: percent.clamp(0.0, 100.0),
                charging,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::tests::FakeTree;

    fn check(files: &[(&str, &str)], expected: Option<(f64, Option<bool>)>) {
        let tree = FakeTree::new(files);
        let got = battery(&tree.root()).map(|battery| (battery.percent, battery.charging));
        assert_eq!(got, expected, "{files:?}");
    }

    #[test]
    fn the_battery_is_found_among_the_power_supplies() {
        check(
            &[
                ("sys/class/power_supply/AC/type", "Mains\n"),
                ("sys/class/power_supply/AC/online", "1\n"),
                ("sys/class/power_supply/BAT0/type", "Battery\n"),
                ("sys/class/power_supply/BAT0/capacity", "87\n"),
                ("sys/class/power_supply/BAT0/status", "Charging\n"),
            ],
            Some((87.0, Some(true))),
        );
        check(
            &[
                ("sys/class/power_supply/battery/type", "Battery\n"),
                ("sys/class/power_supply/battery/capacity", "12\n"),
                ("sys/class/power_supply/battery/status", "Discharging\n"),
            ],
            Some((12.0, Some(false))),
        );
        check(
            &[
                ("sys/class/power_supply/battery/type", "Battery\n"),
                ("sys/class/power_supply/battery/capacity", "140\n"),
            ],
            Some((100.0, None)),
        );
        check(&[("sys/class/power_supply/AC/type", "Mains\n")], None);
        check(&[], None);
    }
}
