//! The command lines as a user meets them: help, default configs, config checks, tokens, and
//! bad input over a real socket.

use std::process::{Command, Output};

use posmon_e2e_tests::{binary, Collector};

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name))
        .args(args)
        .env_remove("POSMON_AGENT_TOKEN")
        .env_remove("POSMON_FLEET_SECRET")
        .output()
        .unwrap_or_else(|error| panic!("{error}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn every_command_has_help() {
    for (name, commands) in [
        (
            "posmon-collector",
            &["serve", "print-default-config", "token"][..],
        ),
        (
            "posmon-agent",
            &["run", "probe", "print-default-config", "check-config"][..],
        ),
    ] {
        let output = run(name, &["--help"]);
        assert!(output.status.success());
        for command in commands {
            assert!(
                text(&output.stdout).contains(command),
                "{name} --help lists {command}"
            );
            let output = run(name, &[command, "--help"]);
            assert!(output.status.success(), "{name} {command} --help");
            assert!(text(&output.stdout).contains("Usage:"));
        }
    }
}

#[test]
fn the_agent_checks_its_config() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let default = run("posmon-agent", &["print-default-config"]);
    assert!(default.status.success());
    let good = dir.path().join("good.toml");
    let with_token = format!("token = \"k1.abc\"\n{}", text(&default.stdout))
        .replace("token_file = \"/etc/posmon/agent-token\"\n", "");
    std::fs::write(&good, with_token).unwrap_or_else(|error| panic!("{error}"));
    let output = run(
        "posmon-agent",
        &["check-config", &good.display().to_string()],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("ok (terminal T-0001"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "terminal_id = \"T-1\"\ncollector_url = \"http://127.0.0.1:1\"\ntoken = \"t\"\nreport_interval_seconds = 0\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let output = run(
        "posmon-agent",
        &["check-config", &bad.display().to_string()],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr)
            .contains("config key report_interval_seconds: must be between 1 and 86400"),
        "{}",
        text(&output.stderr)
    );
    // `run` refuses the same file before doing anything.
    let output = run(
        "posmon-agent",
        &["run", "--config", &bad.display().to_string()],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("report_interval_seconds"));

    // A key in the wrong table is an error, not silently ignored.
    std::fs::write(
        &bad,
        "terminal_id = \"T-1\"\ncollector_url = \"http://127.0.0.1:1\"\n[labels]\ntoken = \"t\"\n",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let output = run(
        "posmon-agent",
        &["check-config", &bad.display().to_string()],
    );
    assert!(
        text(&output.stderr).contains("unknown field `token`"),
        "{}",
        text(&output.stderr)
    );

    let missing = run("posmon-agent", &["check-config", "/nonexistent/agent.toml"]);
    assert!(text(&missing.stderr).contains("cannot read config file /nonexistent/agent.toml"));
}

#[test]
fn the_collector_prints_its_default_config_and_tokens() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let default = run("posmon-collector", &["print-default-config"]);
    assert!(default.status.success());
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, &default.stdout).unwrap_or_else(|error| panic!("{error}"));
    let data_dir = dir.path().join("data").display().to_string();
    let config_arg = config.display().to_string();
    // `token` never creates the fleet secret (only `serve` does): it names where it looked.
    let none = run(
        "posmon-collector",
        &["token", "--data-dir", &data_dir, "T-1"],
    );
    assert_eq!(none.status.code(), Some(1));
    assert!(
        text(&none.stderr).contains(&format!("no fleet secret in data directory {data_dir}")),
        "{}",
        text(&none.stderr)
    );
    std::fs::create_dir_all(dir.path().join("data")).unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(
        dir.path().join("data/fleet-secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let first = run(
        "posmon-collector",
        &[
            "token",
            "--config",
            &config_arg,
            "--data-dir",
            &data_dir,
            "T-1",
        ],
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    let token = text(&first.stdout).trim().to_string();
    assert!(token.starts_with("k1.") && token.len() > 40, "{token}");
    let again = run(
        "posmon-collector",
        &[
            "token",
            "--config",
            &config_arg,
            "--data-dir",
            &data_dir,
            "T-1",
        ],
    );
    assert_eq!(
        text(&again.stdout).trim(),
        token,
        "the same secret is read again"
    );
    let other = run(
        "posmon-collector",
        &["token", "--data-dir", &data_dir, "T-2"],
    );
    assert_ne!(text(&other.stdout).trim(), token);

    let bad = run(
        "posmon-collector",
        &["token", "--data-dir", &data_dir, "T 1"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("TERMINAL_ID: character ' ' not allowed"));

    std::fs::write(&config, "[limits]\nmax_body_bytes = 10\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let refused = run("posmon-collector", &["serve", "--config", &config_arg]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("config key limits.max_body_bytes: must be at least 1024")
    );
}

#[test]
fn bad_input_over_a_real_socket_is_refused_and_the_collector_keeps_serving() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let collector = Collector::start(dir.path(), "[limits]\nmax_body_bytes = 2048\n");
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/api/v1/reports", collector.url);
    let day = posmon_e2e_tests::recent_day();
    let report = |terminal: &str| {
        format!(
            r#"{{"reports":[{{"schema_version":1,"terminal_id":"{terminal}","sequence":1,"observed_at":"{day}T02:00:00Z","agent_version":"0.1.0"}}]}}"#
        )
    };
    let post = |body: String, token: &str| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body(body)
            .send()
            .unwrap_or_else(|error| panic!("{error}"))
    };
    let t2_token = collector.token("T-2");
    let response = post(report("T-1"), &t2_token);
    assert_eq!(response.status().as_u16(), 403);
    let body: serde_json::Value = response.json().unwrap_or_default();
    assert_eq!(body["error"]["reason"], "wrong_terminal");

    let response = post(
        format!("{}{}", report("T-1"), " ".repeat(4000)),
        &collector.token("T-1"),
    );
    assert_eq!(response.status().as_u16(), 413);

    let response = post(report("T-2"), &t2_token);
    assert_eq!(response.status().as_u16(), 200);
    let ack: serde_json::Value = response.json().unwrap_or_default();
    assert_eq!(ack["acknowledged_sequence"], 1);
    let metrics = collector.metrics();
    assert!(metrics.contains("posmon_ingest_rejected_requests_total{reason=\"wrong_terminal\"} 1"));
    assert!(metrics.contains("posmon_ingest_rejected_requests_total{reason=\"body_too_large\"} 1"));
}
