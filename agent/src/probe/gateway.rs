//! The gateway rung: the default route's gateway, and whether it answers ARP, read from the
//! kernel's neighbour table (`/proc/net/arp`). Passive on purpose: the terminal's own traffic
//! keeps the entry fresh, so the rung costs no packet on a metered cellular link.

use std::net::Ipv4Addr;

use posmon_protocol::{ErrorKind, Stage, StageResult, StageStatus};

use super::routes::{default_route, Route};
use super::{failed, stage, succeeded};
use crate::system::SystemRoot;

/// `ATF_COM`: the neighbour answered and its hardware address is known.
const ARP_COMPLETE: u32 = 0x2;

/// Measures the gateway rung from `routes` and `/proc/net/arp`.
pub fn measure(root: &SystemRoot, routes: &[Route]) -> StageResult {
    let Some(route) = default_route(routes) else {
        return failed(
            Stage::Gateway,
            ErrorKind::NoDefaultRoute,
            "the routing table has no default route",
        );
    };
    let interface = &route.interface;
    if route.gateway.is_unspecified() {
        // A point-to-point link (PPP, most cellular modems) has no gateway address to ask.
        return succeeded(
            Stage::Gateway,
            format!("point-to-point link on {interface}"),
        );
    }
    let gateway = route.gateway;
    let arp = root.read("proc/net/arp").unwrap_or_default();
    match neighbour_flags(&arp, gateway, interface) {
        Some(flags) if flags & ARP_COMPLETE != 0 => succeeded(
            Stage::Gateway,
            format!("gateway {gateway} on {interface} answers ARP"),
        ),
        Some(_) => failed(
            Stage::Gateway,
            ErrorKind::Unreachable,
            &format!("gateway {gateway} on {interface} does not answer ARP"),
        ),
        None => StageResult {
            detail: Some(format!(
                "gateway {gateway} on {interface}: no neighbour entry yet"
            )),
            ..stage(Stage::Gateway, StageStatus::Unavailable)
        },
    }
}

/// The flags of the neighbour entry of `address` on `interface`.
fn neighbour_flags(arp: &str, address: Ipv4Addr, interface: &str) -> Option<u32> {
    arp.lines().skip(1).find_map(|line| {
        // IP address  HW type  Flags  HW address  Mask  Device
        let fields: Vec<&str> = line.split_whitespace().collect();
        let matches =
            fields.first()?.parse::<Ipv4Addr>().ok()? == address && *fields.get(5)? == interface;
        let flags = fields.get(2)?.trim_start_matches("0x");
        matches
            .then(|| u32::from_str_radix(flags, 16).ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::routes::tests::HEADER;
    use crate::probe::rung_on_tree;

    /// Routes below the header of `/proc/net/route`.
    const ROUTES: &str = "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
";
    const ARP_HEADER: &str =
        "IP address       HW type     Flags       HW address            Mask     Device\n";

    fn check(
        routes_text: &str,
        arp: Option<&str>,
        expected: (StageStatus, Option<ErrorKind>, &str),
    ) {
        let mut files = vec![("proc/net/route", format!("{HEADER}{routes_text}"))];
        if let Some(arp) = arp {
            files.push(("proc/net/arp", format!("{ARP_HEADER}{arp}")));
        }
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(path, text)| (*path, text.as_str()))
            .collect();
        let (status, error, detail) = rung_on_tree(&files, measure);
        assert_eq!((status, error, detail.as_str()), expected, "{arp:?}");
    }

    #[test]
    fn the_gateway_comes_from_the_routing_table_and_answers_arp() {
        check(
            ROUTES,
            Some("192.168.1.1      0x1         0x2         aa:bb:cc:dd:ee:ff     *        eth0\n"),
            (
                StageStatus::Ok,
                None,
                "gateway 192.168.1.1 on eth0 answers ARP",
            ),
        );
        check(
            ROUTES,
            Some("192.168.1.1      0x1         0x0         00:00:00:00:00:00     *        eth0\n"),
            (
                StageStatus::Failed,
                Some(ErrorKind::Unreachable),
                "gateway 192.168.1.1 on eth0 does not answer ARP",
            ),
        );
        // The same address on another interface is another neighbour.
        check(
            ROUTES,
            Some("192.168.1.1      0x1         0x2         aa:bb:cc:dd:ee:ff     *        wlan0\n"),
            (
                StageStatus::Unavailable,
                None,
                "gateway 192.168.1.1 on eth0: no neighbour entry yet",
            ),
        );
        check(
            "",
            None,
            (
                StageStatus::Failed,
                Some(ErrorKind::NoDefaultRoute),
                "the routing table has no default route",
            ),
        );
        check(
            "ppp0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n",
            None,
            (StageStatus::Ok, None, "point-to-point link on ppp0"),
        );
    }
}
