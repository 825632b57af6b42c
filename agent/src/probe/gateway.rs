//! The gateway rung: the default route's gateway, and whether it answers ARP, read from the
//! kernel's neighbour table (`/proc/net/arp`), then verified actively by an ICMP echo.
//!
//! The neighbour table alone is late: the kernel keeps a dead router's entry complete until its
//! own timers run out (24–54 s), and meanwhile the rungs behind the router fail and would name
//! DNS. So every cycle also sends the gateway an echo (on the local link only: it never crosses
//! the merchant's metered uplink), and when every target fails behind it and a gateway that
//! answered echoes before stops answering, the gateway is unreachable at once. A router that does not
//! answer echoes while everything works filters them: it is judged by the neighbour table
//! alone, as where no ICMP socket is permitted.

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

/// The gateway the rung asks: the default route's, unless the link is point-to-point.
pub fn address(routes: &[Route]) -> Option<Ipv4Addr> {
    default_route(routes)
        .map(|route| route.gateway)
        .filter(|gateway| !gateway.is_unspecified())
}

/// The gateway rung after the echo: `passive` (from the neighbour table) confirmed, completed or
/// overruled by `echo` (the echo rung towards `gateway`), given whether every target's ladder
/// failed behind the gateway this cycle. `answered_before` is the gateway last seen answering
/// echoes; it is updated here.
pub fn verify(
    passive: StageResult,
    gateway: Ipv4Addr,
    echo: &StageResult,
    behind_failed: bool,
    answered_before: &mut Option<Ipv4Addr>,
) -> StageResult {
    if passive.status == StageStatus::Failed {
        return passive;
    }
    match echo.status {
        StageStatus::Ok => {
            *answered_before = Some(gateway);
            if passive.status == StageStatus::Unavailable {
                return succeeded(Stage::Gateway, format!("gateway {gateway} answers echo"));
            }
            passive
        }
        StageStatus::Failed if behind_failed && *answered_before == Some(gateway) => failed(
            Stage::Gateway,
            ErrorKind::Unreachable,
            &format!(
                "gateway {gateway} stopped answering echo (it answered before) while the rungs behind it fail"
            ),
        ),
        StageStatus::Failed => {
            if !behind_failed {
                // Something works behind it: the router routes, and filters echoes.
                *answered_before = None;
            }
            passive
        }
        StageStatus::Unavailable => passive,
    }
}

/// Whether nothing behind the gateway answered this cycle: every target's ladder failed, and no
/// rung behind the gateway worked or failed with an answer — a refusal or a reset, a resolver's
/// error, a certificate or a TLS alert, an HTTP status — each of which the router forwarded.
/// Only then can an unanswered echo mean a dead router: a host refusing while the router drops a
/// pair of echoes is the host's operator's, not the merchant's.
pub fn nothing_answered_behind<'a>(ladders: impl IntoIterator<Item = &'a [StageResult]>) -> bool {
    let mut ladders = ladders.into_iter().peekable();
    ladders.peek().is_some()
        && ladders.all(|stages| {
            let rungs = || stages.iter().filter(|stage| stage.stage != Stage::Icmp);
            rungs().any(|stage| stage.status == StageStatus::Failed)
                && rungs().all(|stage| {
                    stage.status != StageStatus::Ok && !stage.error.is_some_and(is_an_answer)
                })
        })
}

/// An error that something behind the gateway sent (rather than silence, or nothing sent).
fn is_an_answer(error: ErrorKind) -> bool {
    !matches!(
        error,
        ErrorKind::Timeout
            | ErrorKind::Unreachable
            | ErrorKind::NoResolver
            | ErrorKind::NoCarrier
            | ErrorKind::NoAddress
            | ErrorKind::NoDefaultRoute
            | ErrorKind::Other
    )
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

    #[test]
    fn the_echo_overrules_a_stale_neighbour_entry_only_for_a_gateway_that_answered_before() {
        let gateway = Ipv4Addr::new(192, 168, 1, 1);
        let other = Ipv4Addr::new(192, 168, 1, 254);
        let passive_ok = || succeeded(Stage::Gateway, "answers ARP".into());
        let no_entry = || stage(Stage::Gateway, StageStatus::Unavailable);
        let echo = |status| stage(Stage::Icmp, status);
        use StageStatus::{Failed, Ok, Unavailable};
        // (passive, echo, every target failed behind it, answered before) -> (status, answered before after)
        let rows = [
            (passive_ok(), Ok, false, None, Ok, Some(gateway)),
            (no_entry(), Ok, false, None, Ok, Some(gateway)),
            (
                passive_ok(),
                Failed,
                true,
                Some(gateway),
                Failed,
                Some(gateway),
            ),
            // It never answered echoes: the neighbour table decides.
            (passive_ok(), Failed, true, None, Ok, None),
            // Another router answered before (the terminal moved).
            (passive_ok(), Failed, true, Some(other), Ok, Some(other)),
            // Everything works without echoes: the router filters them.
            (passive_ok(), Failed, false, Some(gateway), Ok, None),
            // No ICMP socket permitted.
            (
                passive_ok(),
                Unavailable,
                true,
                Some(gateway),
                Ok,
                Some(gateway),
            ),
            (no_entry(), Unavailable, true, None, Unavailable, None),
            // The neighbour table already says failed.
            (
                failed(Stage::Gateway, ErrorKind::Unreachable, "no ARP"),
                Ok,
                true,
                None,
                Failed,
                None,
            ),
        ];
        for (number, (passive, echo_status, later, before, status, after)) in
            rows.into_iter().enumerate()
        {
            let mut answered_before = before;
            let verdict = verify(
                passive,
                gateway,
                &echo(echo_status),
                later,
                &mut answered_before,
            );
            assert_eq!(
                (verdict.status, answered_before),
                (status, after),
                "row {number}"
            );
        }
    }

    #[test]
    fn only_silence_behind_the_gateway_lets_the_echo_doubt_it() {
        use ErrorKind::*;
        let down = |rung: Stage, error: ErrorKind| failed(rung, error, "");
        let up = |rung: Stage| succeeded(rung, String::new());
        let dead = vec![down(Stage::Dns, Timeout)];
        let no_route = vec![up(Stage::Dns), down(Stage::Tcp, Unreachable)];
        // (ladders, nothing answered behind the gateway)
        let rows: Vec<(Vec<Vec<StageResult>>, bool)> = vec![
            (vec![], false),
            (vec![dead.clone()], true),
            (vec![dead.clone(), vec![down(Stage::Tcp, Timeout)]], true),
            // The ICMP side measurement is no rung.
            (vec![vec![down(Stage::Tcp, Timeout), up(Stage::Icmp)]], true),
            // The resolver answered: the router forwards.
            (vec![no_route.clone()], false),
            (vec![dead.clone(), vec![up(Stage::Tcp)]], false),
            // The host refuses, resets, or answers with a server error or a TLS alert.
            (vec![vec![down(Stage::Tcp, Refused)]], false),
            (vec![vec![down(Stage::Tcp, Reset)]], false),
            (vec![vec![down(Stage::Dns, Servfail)]], false),
            (vec![vec![down(Stage::Tls, HandshakeFailed)]], false),
            (vec![vec![down(Stage::Http, HttpStatus)]], false),
        ];
        for (number, (ladders, expected)) in rows.into_iter().enumerate() {
            assert_eq!(
                nothing_answered_behind(ladders.iter().map(Vec::as_slice)),
                expected,
                "row {number}"
            );
        }
    }

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
