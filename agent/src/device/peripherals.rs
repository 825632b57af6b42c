//! Peripherals the POS application needs (card reader, receipt printer, PIN pad), each found by
//! a device node, a USB vendor:product id under `/sys/bus/usb/devices`, or a check command's
//! exit status. A command runs without a shell, bounded by its timeout, and is killed past it.

use std::time::Duration;

use posmon_protocol::{limits, PeripheralStatus};

use crate::config::{parse_usb_id, PeripheralConfig};
use crate::software::bounded;
use crate::system::SystemRoot;

pub async fn peripherals(
    root: &SystemRoot,
    configured: &[PeripheralConfig],
) -> Vec<PeripheralStatus> {
    let mut found = Vec::with_capacity(configured.len());
    for peripheral in configured.iter().take(limits::DEVICE_LIST_MAX) {
        let (present, detail) = if let Some(device) = &peripheral.device {
            let present = root.path(device).exists();
            let verb = if present { "present" } else { "missing" };
            (present, format!("device node {} {verb}", device.display()))
        } else if let Some(usb) = &peripheral.usb {
            match parse_usb_id(usb).and_then(|id| usb_device(root, id)) {
                Some(device) => (true, format!("USB {usb} at {device}")),
                None => (false, format!("no USB device {usb}")),
            }
        } else if let Some(command) = &peripheral.command {
            check_command(command, Duration::from_secs(peripheral.timeout_seconds)).await
        } else {
            (false, "no source configured".to_string())
        };
        found.push(PeripheralStatus {
            name: peripheral.name.clone(),
            present,
            detail: Some(bounded(&detail, limits::DETAIL_MAX_CHARS)),
        });
    }
    found
}

/// The `/sys/bus/usb/devices` entry with this vendor and product id.
fn usb_device(root: &SystemRoot, (vendor, product): (u16, u16)) -> Option<String> {
    root.list("sys/bus/usb/devices").into_iter().find(|device| {
        let id = |file: &str| {
            root.read_value(format!("sys/bus/usb/devices/{device}/{file}"))
                .and_then(|value| u16::from_str_radix(&value, 16).ok())
        };
        id("idVendor") == Some(vendor) && id("idProduct") == Some(product)
    })
}

async fn check_command(command: &[String], timeout: Duration) -> (bool, String) {
    let program = command.first().map(String::as_str).unwrap_or_default();
    match crate::command::run(command, timeout).await {
        Ok(finished) if finished.status.success() => (true, format!("{program} exited 0")),
        Ok(finished) => (false, format!("{program} {}", finished.status)),
        Err(problem) => (false, problem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::tests::FakeTree;

    fn peripheral(
        name: &str,
        device: Option<&str>,
        usb: Option<&str>,
        command: Option<&[&str]>,
    ) -> PeripheralConfig {
        PeripheralConfig {
            name: name.into(),
            device: device.map(Into::into),
            usb: usb.map(Into::into),
            command: command.map(|words| words.iter().map(|word| word.to_string()).collect()),
            timeout_seconds: 1,
        }
    }

    async fn check(configured: PeripheralConfig, expected: (bool, &str)) {
        let tree = FakeTree::new(&[
            ("dev/ttyACM0", ""),
            ("sys/bus/usb/devices/1-1/idVendor", "0b00\n"),
            ("sys/bus/usb/devices/1-1/idProduct", "0080\n"),
            ("sys/bus/usb/devices/usb1/idVendor", "1d6b\n"),
            ("sys/bus/usb/devices/usb1/idProduct", "0002\n"),
        ]);
        let found = peripherals(&tree.root(), &[configured]).await;
        let got = found
            .first()
            .map(|status| (status.present, status.detail.clone().unwrap_or_default()));
        assert_eq!(got, Some((expected.0, expected.1.to_string())));
    }

    #[tokio::test]
    async fn peripherals_are_found_by_node_usb_id_or_command() {
        check(
            peripheral("card_reader", Some("/dev/ttyACM0"), None, None),
            (true, "device node /dev/ttyACM0 present"),
        )
        .await;
        check(
            peripheral("card_reader", Some("/dev/ttyUSB0"), None, None),
            (false, "device node /dev/ttyUSB0 missing"),
        )
        .await;
        check(
            peripheral("pin_pad", None, Some("0b00:0080"), None),
            (true, "USB 0b00:0080 at 1-1"),
        )
        .await;
        check(
            peripheral("pin_pad", None, Some("0B00:0081"), None),
            (false, "no USB device 0B00:0081"),
        )
        .await;
        check(
            peripheral("printer", None, None, Some(&["true"])),
            (true, "true exited 0"),
        )
        .await;
        check(
            peripheral("printer", None, None, Some(&["false"])),
            (false, "false exit status: 1"),
        )
        .await;
        check(
            peripheral("printer", None, None, Some(&["sleep", "5"])),
            (false, "sleep did not finish within 1s"),
        )
        .await;
        check(
            peripheral("printer", None, None, Some(&["/nonexistent/check"])),
            (
                false,
                "cannot run /nonexistent/check: No such file or directory (os error 2)",
            ),
        )
        .await;
    }
}
