//! Network namespaces for tests that need a network they control: a namespace deleted on drop,
//! a shop (a terminal namespace behind a router namespace that also stands for the carrier's
//! resolver and the payment host), stand-in servers run inside a namespace, and a way for an
//! agent inside one to reach a collector on the host's loopback. No packet leaves the
//! namespaces a test creates. Needs root, `ip` and (for faults) `nft`: the tests declare it.
//!
//! A stand-in server runs inside a namespace as the test binary itself, started again through
//! `ip netns exec` with [`SERVE_ENV`] naming what to serve: a test file using them calls
//! [`serve_if_asked`] first thing in its `main`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{wait_for, Process};

/// The environment variable that makes a test binary a stand-in server (see [`Serve`]).
pub const SERVE_ENV: &str = "POSMON_NETNS_SERVE";

/// The shop's subnet: the terminal is `.2`, the router `.1`.
pub const TERMINAL: &str = "192.168.77.2";
pub const ROUTER: &str = "192.168.77.1";
pub const SHOP_SUBNET: &str = "192.168.77.0/24";
/// Beyond the router: the payment host and the carrier's resolver (addresses of the router
/// namespace, reached through the router).
pub const PAYMENT_HOST: &str = "10.77.0.2";
pub const CARRIER_RESOLVER: &str = "10.77.0.53";
/// The name the resolvers answer with [`PAYMENT_HOST`].
pub const PAYMENT_NAME: &str = "pay.test";

/// A network namespace with loopback up, deleted when dropped (also when the test fails).
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn create() -> Namespace {
        // Tests run in parallel in one process: the pid alone does not make a name unique.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "posmon-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let status = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(
            status.is_ok_and(|status| status.success()),
            "cannot create network namespace {name}"
        );
        // Owned (and so deleted on drop) only once it exists.
        let namespace = Namespace { name };
        namespace.ip(&["link", "set", "lo", "up"]);
        namespace
    }

    /// Runs `program` (inside the namespace when `inside`), failing the test if it fails.
    pub fn run(&self, program: &str, arguments: &[&str], inside: bool) {
        let mut command = if inside {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &self.name, program]);
            command
        } else {
            Command::new(program)
        };
        let output = command
            .args(arguments)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
        assert!(
            output.status.success(),
            "{program} {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `ip -n <namespace> …`
    pub fn ip(&self, arguments: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(arguments);
        self.run("ip", &all, false);
    }

    /// `nft <script>` inside the namespace.
    pub fn nft(&self, script: &str) {
        self.run("nft", &[script], true);
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Starts `program` inside the namespace with `environment`, its stderr in `log`.
    pub fn spawn(
        &self,
        program: &Path,
        arguments: &[&str],
        environment: &[(&str, &str)],
        log: &Path,
    ) -> Process {
        self.spawn_output(program, arguments, environment, None, log)
    }

    /// Like [`Namespace::spawn`], its stdout in the file `output` when given.
    pub fn spawn_output(
        &self,
        program: &Path,
        arguments: &[&str],
        environment: &[(&str, &str)],
        output: Option<&Path>,
        log: &Path,
    ) -> Process {
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        };
        let log_file = open(log);
        let stdout = output.map_or_else(Stdio::null, |path| Stdio::from(open(path)));
        // `ip netns exec` and `env` exec the program: the pid is the program's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, "env"])
            .args(
                environment
                    .iter()
                    .map(|(key, value)| format!("{key}={value}")),
            )
            .arg(program)
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        Process {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Runs `program` inside the namespace and returns its stdout, or `None` when it fails.
    pub fn output(&self, program: &str, arguments: &[&str]) -> Option<String> {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(arguments)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).to_string())
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, setting: &str) {
        self.run("sysctl", &["-q", "-w", setting], true);
    }

    /// The `/etc/resolv.conf` programs run in the namespace with `ip netns exec` see (it
    /// bind-mounts `/etc/netns/<name>/resolv.conf`; removed when the namespace is dropped).
    pub fn set_resolver(&self, nameserver: &str) {
        let dir = Path::new(ETC_NETNS).join(&self.name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .unwrap_or_else(|error| panic!("{error}"));
    }

    /// Starts this test binary inside the namespace as the stand-in servers `serves`, and
    /// waits until they listen.
    pub fn serve(&self, dir: &Path, name: &str, serves: &[Serve]) -> Process {
        let ready = dir.join(format!("{name}.ready"));
        let spec = serves.iter().map(Serve::spec).collect::<Vec<_>>().join(";");
        let program = std::env::current_exe().unwrap_or_else(|error| panic!("{error}"));
        let ready_text = ready.display().to_string();
        let process = self.spawn(
            &program,
            &[],
            &[(SERVE_ENV, &spec), (READY_ENV, &ready_text)],
            &dir.join(format!("{name}.log")),
        );
        assert!(
            wait_for(Duration::from_secs(10), || ready.exists().then_some(())).is_some(),
            "the stand-in servers {spec} did not start:\n{}",
            process.log()
        );
        process
    }

    /// A TCP port on the namespace's loopback that leads to `target` on the host's loopback
    /// (through a Unix socket in `dir`, which both sides see): how an agent in the namespace
    /// reaches a collector the test can query. Returns the port and the forwarder's process.
    pub fn forward_to(&self, dir: &Path, target: SocketAddr) -> (u16, Process) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let socket = dir.join(format!(
            "forward-{}.sock",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let listener = UnixListener::bind(&socket).unwrap_or_else(|error| panic!("{error}"));
        std::thread::spawn(move || {
            for unix in listener.incoming().map_while(Result::ok) {
                if let Ok(tcp) = TcpStream::connect(target) {
                    splice(tcp, unix);
                }
            }
        });
        let process = self.serve(
            dir,
            &format!("forwarder-{}", self.name),
            &[Serve::Forward(socket)],
        );
        let port_file = dir.join(format!("forwarder-{}.ready", self.name));
        let port = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or_else(|| panic!("the forwarder wrote no port"));
        (port, process)
    }
}

impl Namespace {
    /// UDP port `port` on the namespace's loopback forwarded to `target` on the host's loopback
    /// (datagrams both ways through two Unix datagram sockets in `dir`): how an agent in the
    /// namespace sends report datagrams to a collector on the host, on the port number of
    /// [`Namespace::forward_to`]'s TCP forward. Returns the forwarder's process.
    pub fn forward_udp_to(&self, dir: &Path, port: u16, target: SocketAddr) -> Process {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let next = NEXT.fetch_add(1, Ordering::Relaxed);
        let host_path = dir.join(format!("udp-{next}-host.sock"));
        let inside_path = dir.join(format!("udp-{next}-inside.sock"));
        let host = UnixDatagram::bind(&host_path).unwrap_or_else(|error| panic!("{error}"));
        let upstream = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
        upstream
            .connect(target)
            .unwrap_or_else(|error| panic!("{error}"));
        let (host_reader, upstream_reader) = (
            host.try_clone().unwrap_or_else(|error| panic!("{error}")),
            upstream
                .try_clone()
                .unwrap_or_else(|error| panic!("{error}")),
        );
        std::thread::spawn(move || {
            let mut buffer = [0u8; 65_536];
            while let Ok(length) = host_reader.recv(&mut buffer) {
                let _ = upstream.send(&buffer[..length]);
            }
        });
        let inside_for_replies = inside_path.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 65_536];
            while let Ok(length) = upstream_reader.recv(&mut buffer) {
                let _ = host.send_to(&buffer[..length], &inside_for_replies);
            }
        });
        self.serve(
            dir,
            &format!("udp-forwarder-{next}"),
            &[Serve::ForwardUdp(port, inside_path, host_path)],
        )
    }
}

/// Where `ip netns exec` finds the files it shows a namespace's programs in `/etc`.
const ETC_NETNS: &str = "/etc/netns";

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(Path::new(ETC_NETNS).join(&self.name));
    }
}

/// A shop: the terminal's namespace, whose only link (`t0`, [`TERMINAL`]) leads to the
/// router's namespace (`r0`, [`ROUTER`], the default gateway). The router namespace also holds
/// [`PAYMENT_HOST`] and [`CARRIER_RESOLVER`], reached through the router as if across the
/// carrier's network.
pub struct Shop {
    pub terminal: Namespace,
    pub router: Namespace,
}

impl Shop {
    pub fn new() -> Shop {
        let shop = Shop {
            terminal: Namespace::create(),
            router: Namespace::create(),
        };
        let router = shop.router.name.as_str();
        shop.terminal.ip(&[
            "link", "add", "t0", "type", "veth", "peer", "name", "r0", "netns", router,
        ]);
        shop.terminal
            .ip(&["addr", "add", &format!("{TERMINAL}/24"), "dev", "t0"]);
        shop.terminal.ip(&["link", "set", "t0", "up"]);
        shop.router
            .ip(&["addr", "add", &format!("{ROUTER}/24"), "dev", "r0"]);
        shop.router.ip(&["link", "set", "r0", "up"]);
        for address in [PAYMENT_HOST, CARRIER_RESOLVER] {
            shop.router
                .ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"]);
        }
        shop.terminal
            .ip(&["route", "add", "default", "via", ROUTER, "dev", "t0"]);
        shop
    }

    /// The router stops answering anything, ARP included, while its link stays up.
    pub fn kill_router(&self) {
        self.router.nft(
            "add table netdev dead; \
             add chain netdev dead in { type filter hook ingress device r0 priority 0; policy drop; }",
        );
    }
}

impl Default for Shop {
    fn default() -> Self {
        Shop::new()
    }
}

/// A shop whose router is a NAT-capable hop to the carrier's side, a namespace of its own: the
/// terminal (`t0`, [`TERMINAL`]) — the router (`r0`, [`ROUTER`]; `w0`, [`ROUTER_WAN`]) — the
/// carrier (`c0`, [`CARRIER_LINK`]), whose loopback holds [`PAYMENT_HOST`], [`SWITCH_HOST`],
/// [`COLLECTOR_HOST`] and [`CARRIER_RESOLVER`]. Packets to them are forwarded by the router,
/// so a NAT there ([`Uplink::nat`]) sees every flow. IPv6 is off and the links do not offload
/// segmentation: each packet counted on `t0` is a packet as a modem would carry it. The
/// terminal's ephemeral ports leave out [`PAYMENT_PORTS`].
pub struct Uplink {
    pub terminal: Namespace,
    pub router: Namespace,
    pub carrier: Namespace,
}

/// The router's address on the carrier's side, and the carrier's end of that link.
pub const ROUTER_WAN: &str = "10.77.255.1";
pub const CARRIER_LINK: &str = "10.77.255.2";
/// A second payment host beyond the router (a plain TCP payment switch).
pub const SWITCH_HOST: &str = "10.77.0.3";
/// The collector's address beyond the router.
pub const COLLECTOR_HOST: &str = "10.77.0.10";
/// The carrier-side subnet holding the hosts.
pub const HOSTS_SUBNET: &str = "10.77.0.0/24";

impl Uplink {
    pub fn new() -> Uplink {
        let uplink = Uplink {
            terminal: Namespace::create(),
            router: Namespace::create(),
            carrier: Namespace::create(),
        };
        for namespace in [&uplink.terminal, &uplink.router, &uplink.carrier] {
            namespace.sysctl("net.ipv6.conf.all.disable_ipv6=1");
            namespace.sysctl("net.ipv6.conf.default.disable_ipv6=1");
        }
        let (router, carrier) = (uplink.router.name.as_str(), uplink.carrier.name.as_str());
        uplink.terminal.ip(&[
            "link", "add", "t0", "type", "veth", "peer", "name", "r0", "netns", router,
        ]);
        uplink.router.ip(&[
            "link", "add", "w0", "type", "veth", "peer", "name", "c0", "netns", carrier,
        ]);
        let links = [
            (&uplink.terminal, "t0", TERMINAL, 24),
            (&uplink.router, "r0", ROUTER, 24),
            (&uplink.router, "w0", ROUTER_WAN, 24),
            (&uplink.carrier, "c0", CARRIER_LINK, 24),
        ];
        for (namespace, link, address, prefix) in links {
            namespace.ip(&["addr", "add", &format!("{address}/{prefix}"), "dev", link]);
            namespace.run(
                "ethtool",
                &["-K", link, "tso", "off", "gso", "off", "gro", "off"],
                true,
            );
            namespace.ip(&["link", "set", link, "up"]);
        }
        for address in [PAYMENT_HOST, SWITCH_HOST, COLLECTOR_HOST, CARRIER_RESOLVER] {
            uplink
                .carrier
                .ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"]);
        }
        // The terminal's own connections never take a payment's source port.
        let (first, last) = PAYMENT_PORTS;
        uplink
            .terminal
            .sysctl(&format!("net.ipv4.ip_local_reserved_ports={first}-{last}"));
        uplink.router.sysctl("net.ipv4.ip_forward=1");
        uplink
            .terminal
            .ip(&["route", "add", "default", "via", ROUTER, "dev", "t0"]);
        uplink.router.ip(&[
            "route",
            "add",
            HOSTS_SUBNET,
            "via",
            CARRIER_LINK,
            "dev",
            "w0",
        ]);
        uplink
            .carrier
            .ip(&["route", "add", SHOP_SUBNET, "via", ROUTER_WAN, "dev", "c0"]);
        uplink
    }

    /// Makes the router a NAT (masquerade on `w0`) like a carrier's: a flow idle for
    /// `idle_seconds` (TCP established, UDP) is forgotten, and a packet of a forgotten flow is
    /// dropped both ways (no loose pick-up of TCP mid-stream, nothing unsolicited let in), so
    /// the terminal must open a new connection.
    pub fn nat(&self, idle_seconds: u32) {
        let router = &self.router;
        router.nft(
            "add table ip nat; \
             add chain ip nat postrouting { type nat hook postrouting priority srcnat; }; \
             add rule ip nat postrouting oifname \"w0\" masquerade; \
             add table inet carrier; \
             add chain inet carrier forward { type filter hook forward priority 0; }; \
             add rule inet carrier forward ct state invalid drop; \
             add rule inet carrier forward iifname \"w0\" ct state new drop; \
             add chain inet carrier input { type filter hook input priority 0; }; \
             add rule inet carrier input iifname \"w0\" ct state != { established, related } drop",
        );
        // The conntrack settings exist once the rules above loaded conntrack here.
        for setting in [
            "nf_conntrack_tcp_timeout_established",
            "nf_conntrack_udp_timeout",
            "nf_conntrack_udp_timeout_stream",
        ] {
            router.sysctl(&format!("net.netfilter.{setting}={idle_seconds}"));
        }
        router.sysctl("net.netfilter.nf_conntrack_tcp_loose=0");
    }
}

impl Default for Uplink {
    fn default() -> Self {
        Uplink::new()
    }
}

/// What a stand-in server answers.
#[derive(Debug, Clone)]
pub enum Serve {
    /// A DNS server on `address`:53 (UDP) answering [`PAYMENT_NAME`] with [`PAYMENT_HOST`]
    /// (other names: NXDOMAIN).
    Dns(&'static str),
    /// A DNS server on `address`:53 that answers SERVFAIL to everything.
    DnsServfail(&'static str),
    /// A TLS server on `address`:443 presenting the certificate and key (DER files).
    Tls(&'static str, PathBuf, PathBuf),
    /// A server on `address`:443 that ends every handshake with a fatal TLS alert.
    TlsAlert(&'static str),
    /// A TCP port on the namespace's loopback forwarded to a Unix socket; it writes its port
    /// into the ready file.
    Forward(PathBuf),
    /// UDP `port` on the namespace's loopback relayed through the Unix datagram socket it binds
    /// (the first path) to the one the host side bound (the second), replies back to the last
    /// sender.
    ForwardUdp(u16, PathBuf, PathBuf),
    /// A DNS server on `address`:53 answering each name of the list with its IPv4 address
    /// (other names: NXDOMAIN).
    Names(&'static str, Vec<(String, String)>),
    /// An HTTPS server on `address`:443 presenting a PEM certificate chain (leaf first) and
    /// key, answering each request with a small `200 OK` and closing.
    Https(&'static str, PathBuf, PathBuf),
    /// A payment switch on `address`:`port` (plain TCP): answers each message it reads with a
    /// [`SWITCH_REPLY_BYTES`]-byte reply, until the client closes.
    Switch(&'static str, u16),
    /// A POS application: every `every_seconds` one payment to `target` (connect from the next
    /// source port of [`PAYMENT_PORTS`], a [`PAYMENT_REQUEST_BYTES`]-byte request, the reply,
    /// the connection kept [`PAYMENT_HOLD`] as while a receipt prints, close). It logs each
    /// payment on a line `payment <ms since the epoch> ok` (or `failed: <why>`).
    Pos(SocketAddr, u64),
}

/// The source ports a [`Serve::Pos`] pays from, so a packet filter can tell payments apart.
pub const PAYMENT_PORTS: (u16, u16) = (40000, 40999);
/// The sizes of a stand-in payment's request and reply (an ISO 8583 message is a few hundred
/// bytes).
pub const PAYMENT_REQUEST_BYTES: usize = 320;
pub const SWITCH_REPLY_BYTES: usize = 240;
/// How long a stand-in payment keeps its connection open after the reply.
pub const PAYMENT_HOLD: Duration = Duration::from_millis(1500);

/// The payments a [`Serve::Pos`] logged in `log`: (ms since the epoch, whether it went
/// through).
pub fn payments(log: &str) -> Vec<(u128, bool)> {
    log.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("payment ")?.split(' ');
            let millis = words.next()?.parse().ok()?;
            Some((millis, words.next()? == "ok"))
        })
        .collect()
}

/// The environment variable naming the file a stand-in writes once it listens.
const READY_ENV: &str = "POSMON_NETNS_READY";

impl Serve {
    fn spec(&self) -> String {
        match self {
            Serve::Dns(address) => format!("dns,{address}"),
            Serve::DnsServfail(address) => format!("servfail,{address}"),
            Serve::Tls(address, certificate, key) => {
                format!("tls,{address},{},{}", certificate.display(), key.display())
            }
            Serve::TlsAlert(address) => format!("alert,{address}"),
            Serve::Forward(socket) => format!("forward,{}", socket.display()),
            Serve::ForwardUdp(port, inside, host) => {
                format!("udpforward,{port},{},{}", inside.display(), host.display())
            }
            Serve::Names(address, names) => {
                let names: Vec<String> = names
                    .iter()
                    .map(|(name, ip)| format!("{name}={ip}"))
                    .collect();
                format!("names,{address},{}", names.join(","))
            }
            Serve::Https(address, chain, key) => {
                format!("https,{address},{},{}", chain.display(), key.display())
            }
            Serve::Switch(address, port) => format!("switch,{address},{port}"),
            Serve::Pos(target, every) => format!("pos,{target},{every}"),
        }
    }
}

/// When this process was started as a stand-in server ([`SERVE_ENV`] set): serves until
/// killed and returns `true` only if it could not start. Otherwise returns `false` at once.
pub fn serve_if_asked() -> bool {
    let Ok(spec) = std::env::var(SERVE_ENV) else {
        return false;
    };
    let ready = std::env::var(READY_ENV).unwrap_or_else(|error| panic!("{READY_ENV}: {error}"));
    let mut ready_text = String::new();
    for serve in spec.split(';') {
        let fields: Vec<&str> = serve.split(',').collect();
        match fields.as_slice() {
            ["dns", address] => dns(address, false),
            ["servfail", address] => dns(address, true),
            ["tls", address, certificate, key] => tls(address, certificate, key),
            ["alert", address] => alert(address),
            ["forward", socket] => ready_text = forward(PathBuf::from(socket)).to_string(),
            ["udpforward", port, inside, host] => forward_udp(port, inside, host),
            ["names", address, names @ ..] => names_dns(address, names),
            ["https", address, chain, key] => https(address, chain, key),
            ["switch", address, port] => switch(address, port),
            ["pos", target, every] => pos(target, every),
            _ => panic!("unknown stand-in {serve:?}"),
        }
    }
    std::fs::write(&ready, ready_text).unwrap_or_else(|error| panic!("{ready}: {error}"));
    loop {
        std::thread::park();
    }
}

fn dns(address: &str, servfail: bool) {
    let socket = UdpSocket::bind((parse(address), 53)).unwrap_or_else(|error| panic!("{error}"));
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((length, peer)) = socket.recv_from(&mut buffer) {
            if let Some(answer) = dns_answer(&buffer[..length], servfail) {
                let _ = socket.send_to(&answer, peer);
            }
        }
    });
}

/// The stand-in resolver's answer: the payment host's name resolves (or SERVFAIL for every name).
fn dns_answer(query: &[u8], servfail: bool) -> Option<Vec<u8>> {
    let host = parse(PAYMENT_HOST).octets();
    crate::dns_answer(query, |name, record_type| {
        match (servfail, name, record_type) {
            (true, _, _) => (2, vec![]),
            (false, PAYMENT_NAME, 1) => (0, vec![host]),
            (false, PAYMENT_NAME, _) => (0, vec![]),
            _ => (3, vec![]),
        }
    })
}

fn tls(address: &str, certificate: &str, key: &str) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let read = |path: &str| std::fs::read(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let certificates = vec![CertificateDer::from(read(certificate))];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read(key)));
    serve_tls(
        address,
        certificates,
        key,
        Duration::from_secs(5),
        |mut tls| {
            // Completes the handshake, then reads until the client goes away.
            let mut buffer = [0u8; 1024];
            while matches!(tls.read(&mut buffer), Ok(read) if read > 0) {}
        },
    );
}

/// A TLS server on `address`:443 with `certificates` and `key`: each connection on a thread of
/// its own, read with `timeout`, handed to `handle` (which drives the handshake by reading).
fn serve_tls(
    address: &str,
    certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    timeout: Duration,
    handle: fn(rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>),
) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|error| panic!("{error}"))
    .with_no_client_auth()
    .with_single_cert(certificates, key)
    .unwrap_or_else(|error| panic!("{error}"));
    let config = Arc::new(config);
    let listener =
        TcpListener::bind((parse(address), 443)).unwrap_or_else(|error| panic!("{error}"));
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(timeout));
                let Ok(connection) = rustls::ServerConnection::new(config) else {
                    return;
                };
                handle(rustls::StreamOwned::new(connection, stream));
            });
        }
    });
}

fn alert(address: &str) {
    let listener =
        TcpListener::bind((parse(address), 443)).unwrap_or_else(|error| panic!("{error}"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut hello = [0u8; 1024];
            let _ = stream.read(&mut hello);
            // A fatal handshake_failure alert record.
            let _ = stream.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
            let _ = stream.flush();
        }
    });
}

fn names_dns(address: &str, names: &[&str]) {
    let table: Vec<(String, [u8; 4])> = names
        .iter()
        .map(|entry| {
            let (name, ip) = entry
                .split_once('=')
                .unwrap_or_else(|| panic!("not name=ip: {entry}"));
            (name.to_string(), parse(ip).octets())
        })
        .collect();
    let socket = UdpSocket::bind((parse(address), 53)).unwrap_or_else(|error| panic!("{error}"));
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((length, peer)) = socket.recv_from(&mut buffer) {
            let answer = crate::dns_answer(&buffer[..length], |name, record_type| {
                match table.iter().find(|(known, _)| known == name) {
                    Some((_, ip)) if record_type == 1 => (0, vec![*ip]),
                    Some(_) => (0, vec![]),
                    None => (3, vec![]),
                }
            });
            if let Some(answer) = answer {
                let _ = socket.send_to(&answer, peer);
            }
        }
    });
}

fn https(address: &str, chain: &str, key: &str) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certificates = CertificateDer::pem_file_iter(chain)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|error| panic!("{chain}: {error}"));
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|error| panic!("{key}: {error}"));
    serve_tls(
        address,
        certificates,
        key,
        Duration::from_secs(10),
        |mut tls| {
            // Reads the request head (the handshake happens on the way), answers, closes.
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                match tls.read(&mut buffer) {
                    Ok(read) if read > 0 && request.len() < 16 * 1024 => {
                        request.extend_from_slice(&buffer[..read]);
                    }
                    _ => return,
                }
            }
            let body = "{\"status\":\"up\"}";
            let answer = format!(
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 02 Dec 2026 12:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nStrict-Transport-Security: max-age=31536000\r\n\r\n{body}",
            body.len()
        );
            let _ = tls.write_all(answer.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        },
    );
}

fn switch(address: &str, port: &str) {
    let port: u16 = port
        .parse()
        .unwrap_or_else(|error| panic!("{port}: {error}"));
    let listener =
        TcpListener::bind((parse(address), port)).unwrap_or_else(|error| panic!("{error}"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buffer = [0u8; 2048];
                while matches!(stream.read(&mut buffer), Ok(read) if read > 0) {
                    if stream.write_all(&[0x30; SWITCH_REPLY_BYTES]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn pos(target: &str, every: &str) {
    let target: SocketAddr = target
        .parse()
        .unwrap_or_else(|error| panic!("{target}: {error}"));
    let every = Duration::from_secs(
        every
            .parse()
            .unwrap_or_else(|error| panic!("{every}: {error}")),
    );
    std::thread::spawn(move || {
        let (first, last) = PAYMENT_PORTS;
        let mut next = std::time::Instant::now() + every;
        for port in (first..=last).cycle() {
            std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            next += every;
            // A port still in TIME_WAIT (or any failure) is a failed payment: the next one
            // comes on time from the next port.
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis());
            match pay(target, port) {
                Ok(()) => eprintln!("payment {millis} ok"),
                Err(error) => eprintln!("payment {millis} failed: {error}"),
            }
        }
    });
}

/// One payment from source `port`: connect, request, read the reply, close.
fn pay(target: SocketAddr, port: u16) -> std::io::Result<()> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    socket.connect_timeout(&target.into(), Duration::from_secs(10))?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(&[0x31; PAYMENT_REQUEST_BYTES])?;
    let mut reply = [0u8; SWITCH_REPLY_BYTES];
    stream.read_exact(&mut reply)?;
    std::thread::sleep(PAYMENT_HOLD);
    stream.shutdown(Shutdown::Both)
}

/// Relays datagrams between UDP `port` on the namespace's loopback and the host side's Unix
/// datagram socket `host`, through the one it binds at `inside`.
fn forward_udp(port: &str, inside: &str, host: &str) {
    let port: u16 = port
        .parse()
        .unwrap_or_else(|error| panic!("{port}: {error}"));
    let udp =
        UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).unwrap_or_else(|error| panic!("{error}"));
    let unix = UnixDatagram::bind(inside).unwrap_or_else(|error| panic!("{inside}: {error}"));
    unix.connect(host)
        .unwrap_or_else(|error| panic!("{host}: {error}"));
    let (udp_reader, unix_reader) = (
        udp.try_clone().unwrap_or_else(|error| panic!("{error}")),
        unix.try_clone().unwrap_or_else(|error| panic!("{error}")),
    );
    let peer: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    let last_peer = Arc::clone(&peer);
    std::thread::spawn(move || {
        let mut buffer = [0u8; 65_536];
        while let Ok((length, from)) = udp_reader.recv_from(&mut buffer) {
            if let Ok(mut peer) = last_peer.lock() {
                *peer = Some(from);
            }
            let _ = unix.send(&buffer[..length]);
        }
    });
    std::thread::spawn(move || {
        let mut buffer = [0u8; 65_536];
        while let Ok(length) = unix_reader.recv(&mut buffer) {
            let to = peer.lock().ok().and_then(|peer| *peer);
            if let Some(to) = to {
                let _ = udp.send_to(&buffer[..length], to);
            }
        }
    });
}

/// Forwards connections to the namespace's loopback port it returns to `socket`.
fn forward(socket: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"))
        .port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().map_while(Result::ok) {
            if let Ok(unix) = UnixStream::connect(&socket) {
                splice(tcp, unix);
            }
        }
    });
    port
}

/// Copies both ways between a TCP and a Unix stream until either side closes.
fn splice(tcp: TcpStream, unix: UnixStream) {
    let (Ok(mut tcp_reader), Ok(mut unix_reader)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let (mut tcp_writer, mut unix_writer) = (tcp, unix);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut tcp_reader, &mut unix_writer);
        let _ = unix_writer.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut unix_reader, &mut tcp_writer);
        let _ = tcp_writer.shutdown(Shutdown::Write);
    });
}

fn parse(address: &str) -> Ipv4Addr {
    address
        .parse()
        .unwrap_or_else(|error| panic!("{address}: {error}"))
}
