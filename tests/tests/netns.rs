//! Rungs that need a network the test controls: a port blackholed by an nftables drop rule (TCP
//! times out rather than being refused) and an address with no route (unreachable). Each test
//! runs the real agent inside a network namespace it creates and deletes, so no packet leaves
//! the namespace. Needs root, `ip` (iproute2) and `nft` (nftables): without them the tests are
//! ignored (with the reason) on a developer's machine and fail under CI.

use std::process::ExitCode;

use posmon_e2e_tests::netns::Namespace;
use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{healthy_system_root, ladder_of, probe_once, trial};

fn main() -> ExitCode {
    // Creating a network namespace needs root and `ip`; the drop rule needs `nft`.
    trials::run(vec![
        trial!(
            a_blackholed_port_times_out_and_an_unroutable_address_is_unreachable,
            Need::Root,
            Need::Program("ip"),
            Need::Program("nft")
        ),
        trial!(
            a_namespace_without_an_interface_has_no_link,
            Need::Root,
            Need::Program("ip"),
            Need::Program("nft")
        ),
    ])
}

fn a_blackholed_port_times_out_and_an_unroutable_address_is_unreachable() {
    let namespace = Namespace::create();
    // Inside the namespace only: drop every SYN to port 7443 on loopback.
    namespace.run(
        "nft",
        &["add table inet posmon; \
             add chain inet posmon output { type filter hook output priority 0; }; \
             add rule inet posmon output tcp dport 7443 drop"],
        true,
    );
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let root = healthy_system_root(dir.path());
    // The namespace has no route at all, so nothing is sent towards 10.255.0.2.
    let config = format!(
        "terminal_id = \"T-NETNS\"\ncollector_url = \"http://127.0.0.1:9\"\ntoken = \"k1.x\"\n\
         probe_timeout_seconds = 1\nattempts = 2\nicmp = false\nsystem_root = {:?}\n\
         [[targets]]\nname = \"blackhole\"\naddress = \"127.0.0.1:7443\"\n\
         [[targets]]\nname = \"unroutable\"\naddress = \"10.255.0.2:443\"\n",
        root.display().to_string()
    );
    let report = probe_once(dir.path(), "netns", &config, &namespace.wrapper());
    let tcp = |target: &str| {
        ladder_of(&report, target)
            .last()
            .cloned()
            .unwrap_or_default()
    };
    let failed = |error: &str| ("tcp".to_string(), "failed".to_string(), error.to_string());
    assert_eq!(tcp("blackhole"), failed("timeout"), "{report:#}");
    assert_eq!(tcp("unroutable"), failed("unreachable"), "{report:#}");
    assert_eq!(
        ladder_of(&report, "blackhole").len(),
        3,
        "link, gateway, tcp"
    );
}

fn a_namespace_without_an_interface_has_no_link() {
    let namespace = Namespace::create();
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    // The real /sys and /proc as the namespace sees them: loopback only, no route.
    let config = "terminal_id = \"T-NETNS\"\ncollector_url = \"http://127.0.0.1:9\"\n\
                  token = \"k1.x\"\nprobe_timeout_seconds = 1\n\
                  [[targets]]\nname = \"pay\"\naddress = \"127.0.0.1:443\"\n";
    let report = probe_once(dir.path(), "no-link", config, &namespace.wrapper());
    assert_eq!(
        ladder_of(&report, "pay"),
        vec![(
            "link".to_string(),
            "failed".to_string(),
            "no_carrier".to_string()
        )]
    );
}
