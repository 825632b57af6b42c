//! The link rung: an interface (other than loopback) with carrier and an address, preferring the
//! one that holds the default route. Reads `/sys/class/net` and the routing table only; it sends
//! nothing.

use posmon_protocol::{ErrorKind, Stage, StageResult};

use super::routes::{default_route, has_address, Route};
use super::{failed, succeeded};
use crate::system::SystemRoot;

/// Measures the link rung from `routes` and `/sys/class/net`.
pub fn measure(root: &SystemRoot, routes: &[Route]) -> StageResult {
    let has_carrier = |interface: &str| {
        root.read_value(format!("sys/class/net/{interface}/carrier"))
            .is_some_and(|carrier| carrier == "1")
    };
    if let Some(route) = default_route(routes) {
        let interface = route.interface.as_str();
        return if !has_carrier(interface) {
            failed(
                Stage::Link,
                ErrorKind::NoCarrier,
                &format!("{interface} holds the default route but has no carrier"),
            )
        } else if !has_address(root, routes, interface) {
            failed(
                Stage::Link,
                ErrorKind::NoAddress,
                &format!("{interface} holds the default route but has no address"),
            )
        } else {
            succeeded(
                Stage::Link,
                format!("{interface} is up and holds the default route"),
            )
        };
    }
    let interfaces: Vec<String> = root
        .list("sys/class/net")
        .into_iter()
        .filter(|name| name != "lo")
        .collect();
    let with_carrier: Vec<&String> = interfaces.iter().filter(|name| has_carrier(name)).collect();
    match with_carrier
        .iter()
        .find(|name| has_address(root, routes, name))
    {
        Some(interface) => succeeded(Stage::Link, format!("{interface} is up (no default route)")),
        None if with_carrier.is_empty() => failed(
            Stage::Link,
            ErrorKind::NoCarrier,
            &format!("no interface has carrier (of {})", describe(&interfaces)),
        ),
        None => failed(
            Stage::Link,
            ErrorKind::NoAddress,
            &format!(
                "no interface with carrier has an address ({})",
                describe(&interfaces)
            ),
        ),
    }
}

fn describe(interfaces: &[String]) -> String {
    if interfaces.is_empty() {
        "none found".to_string()
    } else {
        interfaces.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::routes::tests::HEADER as ROUTE_HEADER;
    use crate::probe::rung_on_tree;
    use posmon_protocol::StageStatus;

    const DEFAULT_VIA_ETH0: &str = "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
    const SUBNET_ON_ETH0: &str = "eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";

    fn check(files: &[(&str, &str)], expected: (StageStatus, Option<ErrorKind>, &str)) {
        let (status, error, detail) = rung_on_tree(files, measure);
        assert_eq!((status, error, detail.as_str()), expected, "{files:?}");
    }

    #[test]
    fn the_link_needs_carrier_and_an_address() {
        let route = format!("{ROUTE_HEADER}{DEFAULT_VIA_ETH0}{SUBNET_ON_ETH0}");
        check(
            &[
                ("proc/net/route", &route),
                ("sys/class/net/eth0/carrier", "1\n"),
            ],
            (
                StageStatus::Ok,
                None,
                "eth0 is up and holds the default route",
            ),
        );
        check(
            &[
                ("proc/net/route", &route),
                ("sys/class/net/eth0/carrier", "0\n"),
            ],
            (
                StageStatus::Failed,
                Some(ErrorKind::NoCarrier),
                "eth0 holds the default route but has no carrier",
            ),
        );
        let default_only = format!("{ROUTE_HEADER}{DEFAULT_VIA_ETH0}");
        check(
            &[
                ("proc/net/route", &default_only),
                ("sys/class/net/eth0/carrier", "1\n"),
            ],
            (
                StageStatus::Failed,
                Some(ErrorKind::NoAddress),
                "eth0 holds the default route but has no address",
            ),
        );
        // An IPv6-only link: a global address in if_inet6 counts.
        check(
            &[
                ("proc/net/route", &default_only),
                ("sys/class/net/eth0/carrier", "1\n"),
                (
                    "proc/net/if_inet6",
                    "20010db8000000000000000000000001 02 40 00 80 eth0\n",
                ),
            ],
            (
                StageStatus::Ok,
                None,
                "eth0 is up and holds the default route",
            ),
        );
        // No default route: any interface with carrier and an address is a link.
        check(
            &[
                ("proc/net/route", &format!("{ROUTE_HEADER}{SUBNET_ON_ETH0}")),
                ("sys/class/net/lo/carrier", "1\n"),
                ("sys/class/net/eth0/carrier", "1\n"),
            ],
            (StageStatus::Ok, None, "eth0 is up (no default route)"),
        );
        check(
            &[
                ("proc/net/route", ROUTE_HEADER),
                ("sys/class/net/lo/carrier", "1\n"),
                ("sys/class/net/wlan0/carrier", "0\n"),
            ],
            (
                StageStatus::Failed,
                Some(ErrorKind::NoCarrier),
                "no interface has carrier (of wlan0)",
            ),
        );
        check(
            &[
                ("proc/net/route", ROUTE_HEADER),
                ("sys/class/net/wlan0/carrier", "1\n"),
            ],
            (
                StageStatus::Failed,
                Some(ErrorKind::NoAddress),
                "no interface with carrier has an address (wlan0)",
            ),
        );
        check(
            &[],
            (
                StageStatus::Failed,
                Some(ErrorKind::NoCarrier),
                "no interface has carrier (of none found)",
            ),
        );
    }
}
