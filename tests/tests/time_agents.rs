//! Time that cannot lie, with real agents: a terminal's clock that jumps ten minutes ahead and
//! back (libfaketime moves only the agent's clock) opens and closes its clock finding and never
//! freezes the terminal; a collector stopped for longer than the silence threshold, while its
//! agents keep probing, calls nobody silent and opens no fleet-level finding when it comes back;
//! an agent reporting every 300 s is judged by its own schedule, not the collector's default
//! guess; and a terminal that starts up broken is shown within seconds.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use posmon_e2e_tests::trials::{run, Need};
use posmon_e2e_tests::{
    binary, free_port, quick_agent_config, start_agent, trial, wait_for, Collector, Process,
    TargetServer,
};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn main() -> std::process::ExitCode {
    run(vec![
        trial!(
            a_clock_jumping_ten_minutes_ahead_and_back_opens_closes_and_a_later_fault_is_seen,
            Need::Program("faketime")
        ),
        trial!(a_collector_stopped_longer_than_the_silence_threshold_calls_nobody_silent),
        trial!(a_backfill_proving_the_agents_kept_reporting_erases_their_silence),
        trial!(an_agent_reporting_every_300_s_is_not_silent_between_its_reports),
        trial!(a_terminal_that_starts_broken_is_shown_within_seconds),
    ])
}

/// A collector evaluating every second, an upstream outage from 2 terminals. The agents measure
/// the test machine's own disks and memory, which the test does not control: those findings
/// are turned off.
fn collector_config(diagnosis: &str) -> String {
    format!(
        "[diagnosis]\nevaluation_interval_seconds = 1\nupstream_min_terminals = 2\n\
         disk_free_percent = 0.001\nmemory_available_percent = 0.001\n{diagnosis}\n"
    )
}

fn agent_labels(region: &str) -> String {
    format!("[labels]\nmodel = \"PAX-A920\"\nregion = \"{region}\"\ncarrier = \"carrier-x\"\n")
}

/// The open findings of a terminal (codes) and the codes of its closed ones.
fn history_codes(collector: &Collector, terminal_id: &str) -> Vec<String> {
    let detail = collector.get_json(&format!("/api/v1/terminals/{terminal_id}"));
    detail["findings_history"]
        .as_array()
        .map(|history| {
            history
                .iter()
                .filter_map(|finding| finding["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The open fleet-wide findings (no terminal id).
fn fleet_wide_codes(collector: &Collector) -> Vec<String> {
    let body = collector.get_json("/api/v1/findings?suppressed=include");
    body["findings"]
        .as_array()
        .map(|findings| {
            findings
                .iter()
                .filter(|finding| finding["terminal_id"].as_str().is_none_or(str::is_empty))
                .filter_map(|finding| finding["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// How many findings opened so far, by the collector's own count.
fn opened(collector: &Collector) -> f64 {
    collector.metric("posmon_findings_events_total{change=\"opened\"}")
}

fn sequence(collector: &Collector, terminal_id: &str) -> u64 {
    collector.get_json(&format!("/api/v1/terminals/{terminal_id}"))["sequence"]
        .as_u64()
        .unwrap_or(0)
}

fn wait_codes(
    collector: &Collector,
    terminal_id: &str,
    seconds: u64,
    want: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut last = Vec::new();
    let found = wait_for(Duration::from_secs(seconds), || {
        last = collector.finding_codes(terminal_id);
        want(&last).then_some(())
    });
    assert!(found.is_some(), "{terminal_id}: findings stayed {last:?}");
    last
}

/// Starts `posmon-agent run` under libfaketime, whose offset (`+600`, `+0`: seconds) is read
/// from `clock_file` at every clock reading; monotonic time stays real, so the agent's timers
/// keep their pace.
fn start_agent_with_clock(dir: &Path, name: &str, config_toml: &str, clock_file: &Path) -> Process {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, config_toml).unwrap_or_else(|error| panic!("{error}"));
    let library = faketime_library();
    let arguments: Vec<String> = vec![
        format!("LD_PRELOAD={}", library.display()),
        format!("FAKETIME_TIMESTAMP_FILE={}", clock_file.display()),
        "FAKETIME_NO_CACHE=1".to_string(),
        "FAKETIME_DONT_FAKE_MONOTONIC=1".to_string(),
        binary("posmon-agent").display().to_string(),
        "run".to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ];
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    Process::spawn_program(
        Path::new("/usr/bin/env"),
        &arguments,
        &dir.join(format!("{name}.log")),
    )
}

/// libfaketime's preload library, beside the `faketime` program's.
fn faketime_library() -> PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!("faketime is installed but libfaketime.so.1 is in none of {candidates:?}")
        })
}

fn a_clock_jumping_ten_minutes_ahead_and_back_opens_closes_and_a_later_fault_is_seen() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let dir = dir.path();
    let collector = Collector::start(dir, &collector_config(""));
    let mut target = TargetServer::start();
    let clock = dir.join("agent-clock");
    std::fs::write(&clock, "+0\n").unwrap_or_else(|error| panic!("{error}"));
    let config = quick_agent_config(
        &collector.url,
        &collector.token("T-CLOCK"),
        dir,
        "T-CLOCK",
        &target,
        2,
        &agent_labels("cn-east"),
    );
    let mut agent = start_agent_with_clock(dir, "agent", &config, &clock);
    assert!(
        wait_for(Duration::from_secs(20), || (sequence(
            &collector, "T-CLOCK"
        ) >= 2)
            .then_some(()))
        .is_some(),
        "the agent never reported; log:\n{}",
        agent.log()
    );
    assert!(collector.finding_codes("T-CLOCK").is_empty());
    // The terminal's clock jumps ten minutes ahead.
    std::fs::write(&clock, "+600\n").unwrap_or_else(|error| panic!("{error}"));
    wait_codes(&collector, "T-CLOCK", 30, |codes| {
        codes == ["env.clock_skew"]
    });
    let ahead = collector.get_json("/api/v1/terminals/T-CLOCK");
    let observed = OffsetDateTime::parse(ahead["observed_at"].as_str().unwrap_or(""), &Rfc3339)
        .unwrap_or_else(|error| panic!("observed_at: {error}: {ahead}"));
    assert!(
        observed - OffsetDateTime::now_utc() > time::Duration::minutes(9),
        "the agent's clock was not moved: {ahead}"
    );
    // NTP corrects it: every later report is dated before the one that moved the state, and
    // each still moves it; the corrected clock closes its finding.
    std::fs::write(&clock, "+0\n").unwrap_or_else(|error| panic!("{error}"));
    let before = sequence(&collector, "T-CLOCK");
    wait_codes(&collector, "T-CLOCK", 30, |codes| codes.is_empty());
    assert!(
        sequence(&collector, "T-CLOCK") > before,
        "the terminal froze"
    );
    // A later fault is still seen: its payment host refuses connections.
    target.close();
    wait_codes(&collector, "T-CLOCK", 30, |codes| {
        codes.iter().any(|code| code == "env.network.host_refused")
    });
    assert!(
        !collector
            .finding_codes("T-CLOCK")
            .contains(&"env.clock_skew".to_string()),
        "the skew stayed closed"
    );
    let history = history_codes(&collector, "T-CLOCK");
    assert!(
        history.contains(&"env.clock_skew".to_string()),
        "{history:?}"
    );
    assert!(
        agent.exited().is_none(),
        "the agent died; log:\n{}",
        agent.log()
    );
}

fn a_collector_stopped_longer_than_the_silence_threshold_calls_nobody_silent() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let dir = dir.path();
    // The collector's own default guess would call them silent after 2 s; their own schedule
    // (a report every 2 s, silent after 3 of them: 6 s) is what counts.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut collector = Collector::start_at(
        dir,
        &collector_config("report_interval_seconds = 1\nsilent_after_intervals = 3\n"),
        &listen,
    );
    let target = TargetServer::start();
    let terminals = ["T-A", "T-B", "T-C"];
    let mut agents: Vec<Process> = terminals
        .iter()
        .map(|terminal_id| {
            let config = quick_agent_config(
                &collector.url,
                &collector.token(terminal_id),
                dir,
                terminal_id,
                &target,
                2,
                &agent_labels("cn-east"),
            );
            start_agent(dir, terminal_id, &config)
        })
        .collect();
    for terminal_id in terminals {
        assert!(
            wait_for(Duration::from_secs(20), || (sequence(
                &collector,
                terminal_id
            ) >= 2)
                .then_some(()))
            .is_some(),
            "{terminal_id} never reported"
        );
    }
    let opened_before = opened(&collector);
    let held: Vec<u64> = terminals
        .iter()
        .map(|terminal_id| sequence(&collector, terminal_id))
        .collect();
    // Down for 15 s, more than twice the silence threshold; the agents keep probing and
    // spooling.
    collector.process.terminate();
    std::thread::sleep(Duration::from_secs(15));
    let spooled: Vec<u64> = terminals
        .iter()
        .map(|terminal_id| {
            posmon_e2e_tests::highest_spooled(&dir.join(format!("{terminal_id}-state/spool")))
        })
        .collect();
    let collector = Collector::start_again(dir);
    assert_eq!(
        collector.url,
        format!("http://{listen}"),
        "back on its port"
    );
    let back = Instant::now();
    // It knows it was away, from the store's record of its previous run.
    assert!(
        wait_for(Duration::from_secs(5), || collector
            .process
            .log()
            .contains("Listening again: nothing was heard for")
            .then_some(()))
        .is_some(),
        "{}",
        collector.process.log()
    );
    // Every agent backfills what it spooled meanwhile.
    for ((terminal_id, held), spooled) in terminals.iter().zip(held).zip(spooled) {
        assert!(
            spooled > held + 3,
            "{terminal_id} did not keep probing ({held} → {spooled})"
        );
        assert!(
            wait_for(Duration::from_secs(20), || (sequence(
                &collector,
                terminal_id
            ) >= spooled)
                .then_some(()))
            .is_some(),
            "{terminal_id} did not backfill up to {spooled}"
        );
    }
    // And a while longer than the threshold after the restart.
    let settle = Duration::from_secs(8).saturating_sub(back.elapsed());
    std::thread::sleep(settle);
    for terminal_id in terminals {
        let history = history_codes(&collector, terminal_id);
        assert!(
            !history.contains(&"terminal.silent".to_string()),
            "{terminal_id}: a silence in its history: {history:?}"
        );
        assert!(
            collector.finding_codes(terminal_id).is_empty(),
            "{terminal_id}"
        );
    }
    assert_eq!(
        fleet_wide_codes(&collector),
        Vec::<String>::new(),
        "no fleet-level finding"
    );
    assert_eq!(
        opened(&collector),
        0.0,
        "nothing opened since the restart (before it: {opened_before})"
    );
    for agent in &mut agents {
        assert!(
            agent.exited().is_none(),
            "an agent died; log:\n{}",
            agent.log()
        );
    }
}

fn an_agent_reporting_every_300_s_is_not_silent_between_its_reports() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let dir = dir.path();
    // The collector's default guess: a report every 2 s, silent after 2 of them (4 s).
    let collector = Collector::start(
        dir,
        &collector_config("report_interval_seconds = 2\nsilent_after_intervals = 2\n"),
    );
    let target = TargetServer::start();
    let config = quick_agent_config(
        &collector.url,
        &collector.token("T-SLOW"),
        dir,
        "T-SLOW",
        &target,
        300,
        &agent_labels("cn-east"),
    );
    let mut agent = start_agent(dir, "agent", &config);
    // An agent that says nothing of its schedule, reporting once: judged by the default.
    let quiet = json!({
        "schema_version": 1, "terminal_id": "T-QUIET", "sequence": 1,
        "observed_at": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        "agent_version": "0.1.0"
    });
    let status = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(collector.token("T-QUIET"))
        .json(&json!({ "reports": [quiet] }))
        .send()
        .map(|response| response.status().as_u16())
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(status, 200);
    assert!(
        wait_for(Duration::from_secs(20), || (sequence(&collector, "T-SLOW")
            >= 1)
            .then_some(()))
        .is_some(),
        "the agent never reported; log:\n{}",
        agent.log()
    );
    // 15 s: more than three times the default silence, far less than its own.
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        collector.finding_codes("T-QUIET"),
        ["terminal.silent"],
        "the control"
    );
    assert!(
        collector.finding_codes("T-SLOW").is_empty(),
        "{:?}",
        collector.finding_codes("T-SLOW")
    );
    assert!(history_codes(&collector, "T-SLOW").is_empty());
    assert!(
        sequence(&collector, "T-SLOW") <= 2,
        "it reports every 300 s (a first report and its confirmation)"
    );
    assert!(
        agent.exited().is_none(),
        "the agent died; log:\n{}",
        agent.log()
    );
}

fn a_terminal_that_starts_broken_is_shown_within_seconds() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let dir = dir.path();
    let collector = Collector::start(dir, &collector_config(""));
    let mut target = TargetServer::start();
    target.close();
    // Probing every second, reporting every 300 s: only the first report and its confirmation
    // can show the fault in time.
    let config = quick_agent_config(
        &collector.url,
        &collector.token("T-BROKEN"),
        dir,
        "T-BROKEN",
        &target,
        300,
        &agent_labels("cn-east"),
    );
    let started = Instant::now();
    let mut agent = start_agent(dir, "agent", &config);
    wait_codes(&collector, "T-BROKEN", 15, |codes| {
        codes.iter().any(|code| code == "env.network.host_refused")
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shown after {:?}",
        started.elapsed()
    );
    assert!(
        agent.exited().is_none(),
        "the agent died; log:\n{}",
        agent.log()
    );
}

/// The way from the agents to the collector, which the test can cut (every connection closed,
/// new ones dropped at once) and mend: the collector keeps running but hears nothing.
struct Relay {
    url: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: &str) -> Relay {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"));
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (is_cut, streams) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                if let (Ok(a), Ok(b), Ok(mut held)) =
                    (client.try_clone(), server.try_clone(), streams.lock())
                {
                    held.push(a);
                    held.push(b);
                }
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 16 * 1024];
                        while let Ok(read) = from.read(&mut buffer) {
                            if read == 0 || to.write_all(&buffer[..read]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                };
                if let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone())
                {
                    pipe(client, server_copy);
                    pipe(server, client_copy);
                }
            }
        });
        Relay {
            url: format!("http://{address}"),
            cut,
            open,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut held) = self.open.lock() {
            for stream in held.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn a_backfill_proving_the_agents_kept_reporting_erases_their_silence() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let dir = dir.path();
    let collector = Collector::start(dir, &collector_config(""));
    let relay = Relay::start(&collector.url);
    let target = TargetServer::start();
    // In regions of their own: one silent terminal per carrier and region is no carrier
    // outage, which would fold (suppress) their silences.
    let terminals = ["T-D", "T-E"];
    let mut agents: Vec<Process> = terminals
        .iter()
        .map(|terminal_id| {
            let region = format!("cn-{terminal_id}").to_lowercase();
            // A report every 2 s: silent after 6 s.
            let config = quick_agent_config(
                &relay.url,
                &collector.token(terminal_id),
                dir,
                terminal_id,
                &target,
                2,
                &agent_labels(&region),
            );
            start_agent(dir, terminal_id, &config)
        })
        .collect();
    for terminal_id in terminals {
        assert!(
            wait_for(Duration::from_secs(20), || (sequence(
                &collector,
                terminal_id
            ) >= 2)
                .then_some(()))
            .is_some(),
            "{terminal_id} never reported"
        );
    }
    // The way to the collector is cut: it hears nothing, and calls them silent.
    relay.cut();
    for terminal_id in terminals {
        wait_codes(&collector, terminal_id, 30, |codes| {
            codes == ["terminal.silent"]
        });
    }
    std::thread::sleep(Duration::from_secs(4));
    let spooled: Vec<u64> = terminals
        .iter()
        .map(|terminal_id| {
            posmon_e2e_tests::highest_spooled(&dir.join(format!("{terminal_id}-state/spool")))
        })
        .collect();
    // Mended: the backfill shows the agents reported every 2 s throughout.
    relay.mend();
    for (terminal_id, spooled) in terminals.iter().zip(spooled) {
        assert!(
            wait_for(Duration::from_secs(20), || (sequence(
                &collector,
                terminal_id
            ) >= spooled)
                .then_some(()))
            .is_some(),
            "{terminal_id} did not backfill up to {spooled}"
        );
        wait_codes(&collector, terminal_id, 10, |codes| codes.is_empty());
        let history = history_codes(&collector, terminal_id);
        assert!(
            !history.contains(&"terminal.silent".to_string()),
            "{terminal_id}: the disproved silence stayed in its history: {history:?}"
        );
    }
    for agent in &mut agents {
        assert!(
            agent.exited().is_none(),
            "an agent died; log:\n{}",
            agent.log()
        );
    }
}
