//! Helpers for end-to-end tests: start the real `posmon-collector` and `posmon-agent` binaries
//! on ephemeral loopback ports, wait for conditions, and clean up (processes are killed when
//! their handle drops).
//!
//! The binaries are found next to the test executable's directory (`target/<profile>/`), so run
//! `cargo build --workspace` before `cargo test --workspace` (the README's test command does).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Set (by `.ci/run`) to turn every "skip" of a test that lacks a program or root into a
/// failure.
pub const REQUIRE_ALL_ENV: &str = "POSMON_REQUIRE_ALL_TESTS";

/// Whether a test that needs something this machine lacks must skip (`true`, after printing
/// why) or fail (under CI, where [`REQUIRE_ALL_ENV`] is set: it panics with the reason).
pub fn skip(reason: &str) -> bool {
    if std::env::var_os(REQUIRE_ALL_ENV).is_some() {
        panic!("{reason} (and {REQUIRE_ALL_ENV} is set, so this test may not skip)");
    }
    eprintln!("SKIPPED: {reason}");
    true
}

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

/// `Some(path)` of a program a test needs; `None` after [`skip`] when it is missing.
pub fn require_program(program: &str) -> Option<PathBuf> {
    match find_program(program) {
        Some(path) => Some(path),
        None => {
            skip(&format!("{program} is not installed"));
            None
        }
    }
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

fn spawn(binary_name: &str, args: &[&str], log: &Path, stdout: Stdio) -> Child {
    let log_file =
        std::fs::File::create(log).unwrap_or_else(|error| panic!("{}: {error}", log.display()));
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
        let config = dir.join("collector.toml");
        let data_dir = dir.join("collector-data");
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n{config_toml}",
            data_dir.display().to_string()
        );
        std::fs::write(&config, text).unwrap_or_else(|error| panic!("{error}"));
        let log = dir.join("collector.log");
        let config_arg = config.display().to_string();
        let mut child = spawn(
            "posmon-collector",
            &["serve", "--config", &config_arg],
            &log,
            Stdio::piped(),
        );
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
