//! The IPv4 routing table (`/proc/net/route`) and the interfaces' IPv6 addresses
//! (`/proc/net/if_inet6`), as read by the link and gateway rungs. Parsing only: unreadable or
//! malformed lines are skipped, never an error.

use std::net::Ipv4Addr;

use crate::system::SystemRoot;

/// `RTF_UP`: the route is usable.
const ROUTE_UP: u32 = 0x1;

/// One line of `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub interface: String,
    pub destination: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub metric: u32,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.destination.is_unspecified() && self.mask.is_unspecified()
    }
}

/// The usable routes of `/proc/net/route`.
pub fn routes(root: &SystemRoot) -> Vec<Route> {
    root.read("proc/net/route")
        .map(|text| parse_routes(&text))
        .unwrap_or_default()
}

/// The default route with the lowest metric.
pub fn default_route(routes: &[Route]) -> Option<&Route> {
    routes
        .iter()
        .filter(|route| route.is_default())
        .min_by_key(|route| route.metric)
}

fn parse_routes(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            (flags & ROUTE_UP != 0).then_some(())?;
            Some(Route {
                interface: (*fields.first()?).to_string(),
                destination: hex_address(fields.get(1)?)?,
                gateway: hex_address(fields.get(2)?)?,
                metric: fields.get(6)?.parse().ok()?,
                mask: hex_address(fields.get(7)?)?,
            })
        })
        .collect()
}

/// The subnet of the default route's gateway, as `192.168.1.0/24`: the prefix route on the
/// gateway's interface that holds the gateway. `None` on a point-to-point link (no gateway
/// address) or without a default route.
pub fn gateway_subnet(routes: &[Route]) -> Option<String> {
    let default = default_route(routes)?;
    if default.gateway.is_unspecified() {
        return None;
    }
    routes
        .iter()
        .filter(|route| {
            !route.is_default()
                && route.interface == default.interface
                && route.gateway.is_unspecified()
                && u32::from(default.gateway) & u32::from(route.mask)
                    == u32::from(route.destination)
        })
        // The most specific prefix that holds the gateway.
        .max_by_key(|route| u32::from(route.mask).count_ones())
        .map(|route| {
            format!(
                "{}/{}",
                route.destination,
                u32::from(route.mask).count_ones()
            )
        })
}

/// An address as `/proc/net/route` and `/proc/net/arp` write it: hex, in host byte order
/// (little-endian on every Linux target the agent runs on).
fn hex_address(text: &str) -> Option<Ipv4Addr> {
    u32::from_str_radix(text, 16)
        .ok()
        .map(|value| Ipv4Addr::from(value.swap_bytes()))
}

/// Whether `interface` has an address: the kernel adds a prefix route for every IPv4 address,
/// and `/proc/net/if_inet6` lists IPv6 ones (only global scope counts: a link-local address
/// reaches no host).
pub fn has_address(root: &SystemRoot, routes: &[Route], interface: &str) -> bool {
    let ipv4 = routes
        .iter()
        .any(|route| route.interface == interface && !route.is_default());
    ipv4 || root.read("proc/net/if_inet6").is_ok_and(|text| {
        text.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(3) == Some(&"00") && fields.get(5) == Some(&interface)
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The header line of `/proc/net/route`.
    pub const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    fn check(lines: &str, expected_default: Option<(&str, [u8; 4])>) {
        let routes = parse_routes(&format!("{HEADER}{lines}"));
        let got = default_route(&routes).map(|route| (route.interface.as_str(), route.gateway));
        let expected = expected_default.map(|(name, octets)| (name, Ipv4Addr::from(octets)));
        assert_eq!(got, expected, "{lines}");
    }

    #[test]
    fn the_default_route_is_the_lowest_metric_usable_one() {
        check(
            "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n",
            Some(("eth0", [192, 168, 1, 1])),
        );
        check(
            "wlan0\t00000000\t0100000A\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             wwan0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0\n",
            Some(("wwan0", [0, 0, 0, 0])),
        );
        // Not up (flags 0): not a route.
        check(
            "eth0\t00000000\t0101A8C0\t0002\t0\t0\t100\t00000000\t0\t0\t0\n",
            None,
        );
        check(
            "eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
            None,
        );
        check("garbage line\n\n", None);
    }

    #[test]
    fn the_gateway_subnet_is_the_prefix_route_holding_the_gateway() {
        let subnet = |lines: &str| gateway_subnet(&parse_routes(&format!("{HEADER}{lines}")));
        assert_eq!(
            subnet(
                "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 eth0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
                 eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
            ),
            Some("192.168.1.0/24".to_string())
        );
        // The same prefix on another interface is another network.
        assert_eq!(
            subnet(
                "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 wlan0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
            ),
            None
        );
        // Point-to-point: no gateway address, no subnet.
        assert_eq!(
            subnet("ppp0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n"),
            None
        );
        assert_eq!(subnet(""), None);
    }
}
