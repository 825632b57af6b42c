//! Temperatures: `/sys/class/thermal/thermal_zone*/temp` (millidegrees Celsius), named by the
//! zone's `type`.

use posmon_protocol::{limits, Temperature};

use crate::software::bounded;
use crate::system::SystemRoot;

pub fn temperatures(root: &SystemRoot) -> Vec<Temperature> {
    root.list("sys/class/thermal")
        .into_iter()
        .filter(|zone| zone.starts_with("thermal_zone"))
        .filter_map(|zone| {
            let base = format!("sys/class/thermal/{zone}");
            let millidegrees: f64 = root.read_value(format!("{base}/temp"))?.parse().ok()?;
            let sensor = root
                .read_value(format!("{base}/type"))
                .filter(|name| !name.is_empty())
                .unwrap_or(zone);
            Some(Temperature {
                sensor: bounded(&sensor, limits::NAME_MAX_CHARS),
                celsius: millidegrees / 1000.0,
            })
        })
        .filter(|temperature| (-100.0..=200.0).contains(&temperature.celsius))
        .take(limits::DEVICE_LIST_MAX)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::tests::FakeTree;

    #[test]
    fn zones_are_read_in_degrees() {
        let tree = FakeTree::new(&[
            ("sys/class/thermal/thermal_zone0/temp", "48500\n"),
            ("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n"),
            ("sys/class/thermal/thermal_zone1/temp", "junk\n"),
            ("sys/class/thermal/cooling_device0/type", "fan\n"),
        ]);
        assert_eq!(
            temperatures(&tree.root()),
            vec![Temperature {
                sensor: "cpu-thermal".into(),
                celsius: 48.5
            }]
        );
    }
}
