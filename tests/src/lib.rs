//! Helpers for end-to-end tests: start the real `posmon-collector` and `posmon-agent` binaries
//! on ephemeral loopback ports, wait for conditions, and clean up (processes are killed when
//! their handle drops).
//!
//! The binaries are found next to the test executable's directory (`target/<profile>/`), so run
//! `cargo build --workspace` before `cargo test --workspace` (the README's test command does).

use std::io::{BufRead, BufReader, Read, Write};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod browser;
pub mod netns;
pub mod trials;

/// Set (by `.ci/run`) to turn every test ignored for lack of a program or root (see [`trials`])
/// into a failure.
pub const REQUIRE_ALL_ENV: &str = "POSMON_REQUIRE_ALL_TESTS";

/// The path of `program` if it is on PATH (or at an absolute path given), else `None`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let candidate = Path::new(program);
    if candidate.is_absolute() {
        return candidate.exists().then(|| candidate.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// The path of a program the running test declared as a [`trials::Need::Program`], which its
/// harness checked is installed before the test ran.
pub fn program(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| panic!("{name} is not installed"))
}

/// The path of a workspace binary built in the same profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|error| panic!("current_exe: {error}"));
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()));
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        path.display()
    );
    path
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped; its stderr goes to a log file.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|error| panic!("kill -s {name}: {error}"));
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Sends SIGTERM and waits for an orderly exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().unwrap_or_else(|error| panic!("{error}"))
    }

    /// Sends SIGKILL and waits for the process to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Process {
    /// Starts an external program (Alertmanager, …) with its output in `log`.
    pub fn spawn_program(program: &Path, args: &[&str], log: &Path) -> Process {
        let log_file =
            std::fs::File::create(log).unwrap_or_else(|error| panic!("{}: {error}", log.display()));
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        Process {
            child,
            log: log.to_path_buf(),
        }
    }
}

fn spawn(binary_name: &str, args: &[&str], log: &Path, stdout: Stdio) -> Child {
    // Append: a collector started again in the same directory keeps the earlier log.
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|error| panic!("{}: {error}", log.display()));
    Command::new(binary(binary_name))
        .args(args)
        .env("POSMON_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {binary_name}: {error}"))
}

/// A running collector.
pub struct Collector {
    pub process: Process,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub config: PathBuf,
}

impl Collector {
    /// Writes `config_toml` (plus a loopback `listen` on port 0 and `data_dir` in `dir`) and
    /// starts `posmon-collector serve`, waiting for its "listening on" line.
    pub fn start(dir: &Path, config_toml: &str) -> Collector {
        Collector::start_at(dir, config_toml, "127.0.0.1:0")
    }

    /// Like [`Collector::start`], listening on `listen` (to come back on the same port).
    pub fn start_at(dir: &Path, config_toml: &str, listen: &str) -> Collector {
        Collector::write_config(dir, config_toml, listen);
        Collector::start_again(dir)
    }

    /// Starts `posmon-collector serve` again with the config and data [`Collector::start`]
    /// wrote in `dir` (on a new port), as after a crash or a restart.
    pub fn start_again(dir: &Path) -> Collector {
        let config = dir.join("collector.toml");
        let log = dir.join("collector.log");
        let config_arg = config.display().to_string();
        let child = spawn(
            "posmon-collector",
            &["serve", "--config", &config_arg],
            &log,
            Stdio::piped(),
        );
        Collector::listening(child, log, config)
    }

    /// Waits for a started collector's "listening on" line.
    fn listening(mut child: Child, log: PathBuf, config: PathBuf) -> Collector {
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("posmon-collector listening on ") {
                    let _ = sender.send(url.to_string());
                }
            }
        });
        let process = Process { child, log };
        let url = receiver
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("collector did not start; log:\n{}", process.log()));
        Collector {
            process,
            url,
            config,
        }
    }

    /// Writes the config [`Collector::start_again`] reads: `config_toml` plus `listen` and a
    /// `data_dir` in `dir`.
    fn write_config(dir: &Path, config_toml: &str, listen: &str) {
        let data_dir = dir.join("collector-data");
        let text = format!(
            "listen = \"{listen}\"\ndata_dir = {:?}\n{config_toml}",
            data_dir.display().to_string()
        );
        std::fs::write(dir.join("collector.toml"), text).unwrap_or_else(|error| panic!("{error}"));
    }

    /// Stops the collector (SIGTERM) and starts it again on the state it left in `dir`, as an
    /// operator would after an attack: it must come back healthy — no panic in its log, started,
    /// `/healthz` and the read API answering — never into a crash loop.
    pub fn restart_healthy(mut self, dir: &Path) -> Collector {
        self.process.terminate();
        let log = self.process.log();
        let panic = log.lines().find(|line| line.contains("panicked"));
        assert!(panic.is_none(), "the collector panicked: {panic:?}");
        let collector = Collector::start_again(dir);
        for path in [
            "/healthz",
            "/api/v1/overview",
            "/api/v1/terminals",
            "/api/v1/findings",
        ] {
            let status = reqwest::blocking::get(format!("{}{path}", collector.url))
                .map(|response| response.status().as_u16())
                .unwrap_or_else(|error| panic!("GET {path} after the restart: {error}"));
            assert_eq!(status, 200, "GET {path} after the restart");
        }
        collector
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.url))
    }

    /// Runs `posmon-collector token` with this collector's config.
    pub fn token(&self, terminal_id: &str) -> String {
        let output = Command::new(binary("posmon-collector"))
            .args(["token", "--config"])
            .arg(&self.config)
            .arg(terminal_id)
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// GETs a path and parses the JSON answer.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let response = reqwest::blocking::get(format!("{}{path}", self.url))
            .unwrap_or_else(|error| panic!("GET {path}: {error}"));
        response
            .json()
            .unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    /// `posmon-simulator run` against this collector, with its fleet secret (from `dir`, the
    /// directory the collector was started in); add the fleet size, rate and scenario.
    pub fn simulator(&self, dir: &Path) -> Command {
        let mut command = Command::new(binary("posmon-simulator"));
        command
            .args(["run", "--collector", &self.url])
            .arg("--secret-file")
            .arg(dir.join("collector-data/fleet-secret"))
            .env_remove("POSMON_FLEET_SECRET");
        command
    }

    pub fn metrics(&self) -> String {
        reqwest::blocking::get(format!("{}/metrics", self.url))
            .and_then(|response| response.text())
            .unwrap_or_else(|error| panic!("GET /metrics: {error}"))
    }

    /// The codes of the open findings of one terminal.
    pub fn finding_codes(&self, terminal_id: &str) -> Vec<String> {
        let body = self.get_json(&format!("/api/v1/findings?terminal={terminal_id}"));
        let mut codes: Vec<String> = body["findings"]
            .as_array()
            .map(|findings| {
                findings
                    .iter()
                    .filter_map(|finding| finding["code"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        codes.sort();
        codes
    }
}

/// Starts `posmon-agent run` with `config_toml` written to `dir/<name>.toml`.
pub fn start_agent(dir: &Path, name: &str, config_toml: &str) -> Process {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, config_toml).unwrap_or_else(|error| panic!("{error}"));
    let log = dir.join(format!("{name}.log"));
    let config_arg = config.display().to_string();
    let child = spawn(
        "posmon-agent",
        &["run", "--config", &config_arg],
        &log,
        Stdio::null(),
    );
    Process { child, log }
}

/// A TCP server the test owns, accepting and dropping connections, that can be closed and
/// opened again on the same port to break and repair a target.
pub struct TargetServer {
    pub address: std::net::SocketAddr,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl TargetServer {
    pub fn start() -> TargetServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"));
        let mut server = TargetServer {
            address,
            running: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|error| panic!("{error}"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        self.running = Some((stop, handle));
    }

    /// Closes the listening socket: connections are refused from now on.
    pub fn close(&mut self) {
        if let Some((stop, handle)) = self.running.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }

    /// Listens again on the same port.
    pub fn reopen(&mut self) {
        let listener = TcpListener::bind(self.address)
            .unwrap_or_else(|error| panic!("rebind {}: {error}", self.address));
        self.serve(listener);
    }
}

impl Drop for TargetServer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Runs `posmon-agent probe --once --json` with `config_toml` written to `dir/<name>.toml`
/// (through `wrapper`, e.g. `ip netns exec NS`, when given) and parses the report it prints
/// (with the local verdict under `verdict`), whatever the verdict's exit status.
pub fn probe_once(
    dir: &Path,
    name: &str,
    config_toml: &str,
    wrapper: &[&str],
) -> serde_json::Value {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, config_toml).unwrap_or_else(|error| panic!("{error}"));
    let agent = binary("posmon-agent");
    let mut command = match wrapper.split_first() {
        Some((program, arguments)) => {
            let mut command = Command::new(program);
            command.args(arguments).arg(&agent);
            command
        }
        None => Command::new(&agent),
    };
    let output = command
        .args(["probe", "--once", "--json", "--config"])
        .arg(&config)
        .env_remove("POSMON_AGENT_TOKEN")
        .output()
        .unwrap_or_else(|error| panic!("cannot run posmon-agent probe: {error}"));
    // 0, 1, 2: can pay, at risk, cannot pay (the probe ran); 3: it could not run.
    assert!(
        matches!(output.status.code(), Some(0..=2)),
        "posmon-agent probe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "posmon-agent probe printed no JSON report ({error}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The stages of the probe of `target` in a report, as (stage, status, error) strings.
pub fn ladder_of(report: &serde_json::Value, target: &str) -> Vec<(String, String, String)> {
    let probe = report["probes"]
        .as_array()
        .and_then(|probes| probes.iter().find(|probe| probe["target"] == target))
        .unwrap_or_else(|| panic!("no probe of {target} in {report:#}"));
    probe["stages"]
        .as_array()
        .map(|stages| {
            stages
                .iter()
                .map(|stage| {
                    let text = |key: &str| stage[key].as_str().unwrap_or("").to_string();
                    (text("stage"), text("status"), text("error"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes a fake system root into `dir`: one Ethernet interface with carrier and an address,
/// a default route through 192.168.1.1, whose ARP entry is complete, and `/etc/hosts` naming
/// localhost. No packet is ever sent to the fake gateway: the agent only reads these files.
pub fn healthy_system_root(dir: &Path) -> PathBuf {
    let root = dir.join("system-root");
    let files = [
        ("sys/class/net/eth0/carrier", "1\n"),
        ("sys/class/net/eth0/operstate", "up\n"),
        (
            "proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n",
        ),
        (
            "proc/net/arp",
            "IP address       HW type     Flags       HW address            Mask     Device\n\
             192.168.1.1      0x1         0x2         aa:bb:cc:dd:ee:ff     *        eth0\n",
        ),
        ("etc/hosts", "127.0.0.1 localhost\n"),
        ("etc/resolv.conf", "# no nameserver\n"),
    ];
    for (path, content) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|error| panic!("{error}"));
        }
        std::fs::write(&path, content).unwrap_or_else(|error| panic!("{error}"));
    }
    // The agent's passive watch (agent/src/watch.rs) reads the real TCP socket table and
    // counters of the network namespace it runs in: /proc/self/net is the reader's own.
    for table in ["tcp", "tcp6", "snmp"] {
        let link = root.join("proc/net").join(table);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(Path::new("/proc/self/net").join(table), &link)
                .unwrap_or_else(|error| panic!("{}: {error}", link.display()));
        }
    }
    root
}

/// A test CA, and leaf certificates it (or another CA) signs.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap_or_else(|error| panic!("{error}"));
        let mut params =
            CertificateParams::new(Vec::new()).unwrap_or_else(|error| panic!("{error}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params
            .self_signed(&ca_key)
            .unwrap_or_else(|error| panic!("{error}"));
        Pki { ca, ca_key }
    }

    fn signed(
        &self,
        names: &[&str],
        from: (i32, u8, u8),
        until: (i32, u8, u8),
    ) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap_or_else(|error| panic!("{error}"));
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let key = KeyPair::generate().unwrap_or_else(|error| panic!("{error}"));
        let certificate = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap_or_else(|error| panic!("{error}"));
        (certificate, key)
    }

    /// A certificate for `names`, valid between the two dates (year, month, day), and its key.
    pub fn leaf(
        &self,
        names: &[&str],
        from: (i32, u8, u8),
        until: (i32, u8, u8),
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let (certificate, key) = self.signed(names, from, until);
        (
            certificate.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// A certificate for `names` valid from 2025 to 2035, and its key, both PEM.
    pub fn leaf_pem(&self, names: &[&str]) -> (String, String) {
        let (certificate, key) = self.signed(names, (2025, 1, 1), (2035, 1, 1));
        (certificate.pem(), key.serialize_pem())
    }

    pub fn write_ca(&self, path: &Path) {
        std::fs::write(path, self.ca.pem()).unwrap_or_else(|error| panic!("{error}"));
    }
}
/// One HTTP request an [`HttpSink`] received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A loopback HTTP server the test owns: records every request and answers each with a set
/// status and body (`Connection: close`). Stops when dropped.
pub struct HttpSink {
    pub address: std::net::SocketAddr,
    requests: Arc<std::sync::Mutex<Vec<Request>>>,
    reply: Arc<std::sync::Mutex<(u16, String)>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpSink {
    /// Listens on a free loopback port, answering 200 with `{}`.
    pub fn start() -> HttpSink {
        HttpSink::start_on("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Listens on `address` (a port picked earlier, for a receiver that comes back).
    pub fn start_on(address: std::net::SocketAddr) -> HttpSink {
        let (listener, address) = listen(address);
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let reply = Arc::new(std::sync::Mutex::new((200, "{}".to_string())));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, answer, stopping) =
            (Arc::clone(&requests), Arc::clone(&reply), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (seen, answer) = (Arc::clone(&seen), Arc::clone(&answer));
                        std::thread::spawn(move || serve_http(stream, &seen, &answer));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpSink {
            address,
            requests,
            reply,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_reply(&self, status: u16, body: &str) {
        *self.reply.lock().unwrap_or_else(|e| e.into_inner()) = (status, body.to_string());
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A non-blocking listener on `address` and the address it got.
fn listen(address: std::net::SocketAddr) -> (TcpListener, std::net::SocketAddr) {
    let listener =
        TcpListener::bind(address).unwrap_or_else(|error| panic!("bind {address}: {error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|error| panic!("{error}"));
    (listener, address)
}

/// Accepts connections on a non-blocking listener until `stop`, handing each to `handle`.
fn accept_loop(
    listener: TcpListener,
    stop: &Arc<AtomicBool>,
    handle: impl Fn(std::net::TcpStream) + Send + 'static,
) -> JoinHandle<()> {
    let stopping = Arc::clone(stop);
    std::thread::spawn(move || {
        while !stopping.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => handle(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

fn serve_http(
    stream: std::net::TcpStream,
    seen: &std::sync::Mutex<Vec<Request>>,
    answer: &std::sync::Mutex<(u16, String)>,
) {
    use std::io::{Read, Write};
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (status, reply) = answer.lock().unwrap_or_else(|e| e.into_inner()).clone();
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Request {
            method,
            target,
            headers,
            body,
        });
    let mut stream = &stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = stream.flush();
}

/// A loopback SMTP server the test owns: speaks just enough SMTP (220, 250, 354, 221) to
/// accept mail and records each message's DATA.
pub struct SmtpSink {
    pub address: std::net::SocketAddr,
    messages: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let (listener, address) = listen("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")));
        let messages = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&messages);
        let thread = accept_loop(listener, &stop, move |stream| {
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || serve_smtp(stream, &seen));
        });
        SmtpSink {
            address,
            messages,
            stop,
            thread: Some(thread),
        }
    }

    /// The DATA of every message received so far.
    pub fn messages(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_smtp(stream: std::net::TcpStream, seen: &std::sync::Mutex<Vec<String>>) {
    use std::io::Write;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    let _ = writer.write_all(b"220 sink ESMTP\r\n");
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_ascii_uppercase();
        let answer: &[u8] = if command.starts_with("DATA") {
            let _ = writer.write_all(b"354 go ahead\r\n");
            let mut data = String::new();
            loop {
                let mut data_line = String::new();
                if reader.read_line(&mut data_line).unwrap_or(0) == 0 {
                    return;
                }
                if data_line == ".\r\n" {
                    break;
                }
                data.push_str(&data_line);
            }
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(data);
            b"250 queued\r\n"
        } else if command.starts_with("QUIT") {
            let _ = writer.write_all(b"221 bye\r\n");
            return;
        } else {
            // EHLO, MAIL FROM, RCPT TO, RSET, NOOP
            b"250 ok\r\n"
        };
        let _ = writer.write_all(answer);
    }
}

/// A loopback port free right now, for a server a test starts later.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("{error}"))
}

/// HMAC-SHA256 computed by `openssl` (an implementation independent of the collector's), as
/// (hex, base64). The test needs [`trials::Need::Program`]`("openssl")`.
pub fn openssl_hmac(key: &[u8], message: &[u8]) -> (String, String) {
    use std::io::Write;
    let openssl = program("openssl");
    // The key as hex, so that any byte (a newline in DingTalk's and Feishu's keys) passes.
    let hex_key: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut child = Command::new(openssl)
        .args([
            "dgst",
            "-sha256",
            "-mac",
            "HMAC",
            "-macopt",
            &format!("hexkey:{hex_key}"),
            "-binary",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("openssl: {error}"));
    child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("no stdin"))
        .write_all(message)
        .unwrap_or_else(|error| panic!("{error}"));
    let output = child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(output.status.success(), "openssl failed");
    let hex = output
        .stdout
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let base64 = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .map(|mut stdin| stdin.write_all(&output.stdout))
                .transpose()?;
            child.wait_with_output()
        })
        .unwrap_or_else(|error| panic!("base64: {error}"));
    (
        hex,
        String::from_utf8_lossy(&base64.stdout).trim().to_string(),
    )
}

/// The open-file limits `(soft, hard)` a child of this process starts with, as `sh` reports
/// them; `None` when they cannot be read (no `sh`) or are unlimited.
pub fn open_file_limits() -> Option<(u64, u64)> {
    let output = Command::new("sh")
        .args(["-c", "ulimit -Sn; ulimit -Hn"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut values = text.lines().map(|line| line.trim().parse::<u64>().ok());
    Some((values.next()??, values.next()??))
}

impl Collector {
    /// Like [`Collector::start`], but `posmon-collector serve` is started by `sh -c` after the
    /// shell commands `prelude` (e.g. `ulimit -Sn 1024`, as a service manager would set it).
    pub fn start_in_shell(dir: &Path, config_toml: &str, prelude: &str) -> Collector {
        Collector::write_config(dir, config_toml, "127.0.0.1:0");
        let config = dir.join("collector.toml");
        let log = dir.join("collector.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|error| panic!("{}: {error}", log.display()));
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{prelude}; exec \"$0\" serve --config \"$1\""))
            .arg(binary("posmon-collector"))
            .arg(&config)
            .env("POSMON_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start sh for posmon-collector: {error}"));
        Collector::listening(child, log, config)
    }

    /// A counter or gauge of `/metrics` by its full series name (with labels), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let prefix = format!("{series} ");
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Yesterday's date (UTC) as `YYYY-MM-DD`, for reports dated at a fixed hour: always in the
/// past, and well within the collector's `limits.max_report_age_seconds` (8 days), which a
/// date written into a test would leave a week later.
pub fn recent_day() -> String {
    let yesterday = time::OffsetDateTime::now_utc().date().previous_day();
    yesterday.map_or_else(|| "2026-11-26".to_string(), |date| date.to_string())
}

impl Process {
    /// The operating system's id of the process (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// An agent config for tests: probes and reports every second (or `report_interval_seconds`),
/// one try per rung, no ICMP, quick retries, a healthy fake system root, its state in
/// `dir/<terminal_id>-state`, one target; `extra` adds top-level keys.
pub fn quick_agent_config(
    collector_url: &str,
    token: &str,
    dir: &Path,
    terminal_id: &str,
    target: &TargetServer,
    report_interval_seconds: u64,
    extra: &str,
) -> String {
    format!(
        r#"
terminal_id = "{terminal_id}"
collector_url = "{collector_url}"
token = "{token}"
state_dir = "{state}"
system_root = "{root}"
probe_interval_seconds = 1
report_interval_seconds = {report_interval_seconds}
probe_timeout_seconds = 1
request_timeout_seconds = 2
retry_max_seconds = 1
attempts = 1
icmp = false
{extra}

[[targets]]
name = "payment-host"
address = "{target}"
"#,
        state = dir.join(format!("{terminal_id}-state")).display(),
        root = healthy_system_root(dir).display(),
        target = target.address,
    )
}

/// The highest sequence written whole in an agent's spool directory (0 when there is none):
/// records are `[length u32][crc u32][sequence u64][time i64][carried u64][payload]`; a torn
/// tail is not counted.
pub fn highest_spooled(spool: &Path) -> u64 {
    let mut highest = 0;
    let Ok(entries) = std::fs::read_dir(spool) else {
        return highest;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|extension| extension != "seg") {
            continue;
        }
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        let mut offset = 0;
        while let (Some(length), Some(sequence)) = (
            data.get(offset..offset + 4),
            data.get(offset + 8..offset + 16),
        ) {
            let length = u32::from_le_bytes(length.try_into().unwrap_or_default()) as usize;
            if offset + 32 + length > data.len() {
                break;
            }
            highest = highest.max(u64::from_le_bytes(sequence.try_into().unwrap_or_default()));
            offset += 32 + length;
        }
    }
    highest
}

/// A stand-in resolver's answer to one DNS query, written by hand (not with the agent's own
/// codec): `resolve` gives, for the question's name and record type, the response code and the
/// IPv4 addresses of the answer. `None` for a query too short to hold its question.
pub fn dns_answer(
    query: &[u8],
    resolve: impl Fn(&str, u16) -> (u8, Vec<[u8; 4]>),
) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let length = usize::from(*query.get(at)?);
        at += 1;
        if length == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + length)?).to_string());
        at += length;
    }
    let question_end = at + 4;
    let record_type = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let (rcode, addresses) = resolve(&labels.join("."), record_type);
    let mut message = query.get(..question_end)?.to_vec();
    message[2] = 0x81;
    message[3] = 0x80 | rcode;
    message[6] = 0;
    message[7] = u8::try_from(addresses.len()).ok()?;
    message[8..12].fill(0);
    for address in addresses {
        message.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        message.extend_from_slice(&address);
    }
    Some(message)
}

/// Forwards every connection to `upstream`, counting bytes in each direction.
/// Returns its address and the counters: bytes up (client to upstream), bytes down, connections.
pub fn counting_proxy(
    upstream: String,
) -> (String, Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    let (sent, received, connections) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let counters = (
        Arc::clone(&sent),
        Arc::clone(&received),
        Arc::clone(&connections),
    );
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            counters.2.fetch_add(1, Ordering::Relaxed);
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let pipe = |mut from: std::net::TcpStream,
                        mut to: std::net::TcpStream,
                        counter: Arc<AtomicU64>| {
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16384];
                    while let Ok(read) = from.read(&mut buffer) {
                        if read == 0 || to.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                        counter.fetch_add(read as u64, Ordering::Relaxed);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            };
            let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone())
            else {
                continue;
            };
            pipe(client, server, Arc::clone(&counters.0));
            pipe(server_copy, client_copy, Arc::clone(&counters.1));
        }
    });
    (address.to_string(), sent, received, connections)
}
