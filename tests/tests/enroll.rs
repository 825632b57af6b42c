//! Enrollment with the real collector and agent binaries: an administrator creates a one-time
//! code, `posmon-agent enroll` trades it (from standard input or the environment, never the
//! command line) for the terminal's token and writes the token file, `posmon-agent run` reports
//! with it and the collector accepts; the code works once, also for several requests at once; a
//! wrong, an expired or a cancelled code is refused; only the admin creates and lists codes (never
//! shown again); outstanding codes are bounded; a flood of wrong codes is rate-limited while
//! report ingest of another terminal goes on. Over HTTPS, the agent uses its config's CA file and
//! client certificate, and a collector its CA did not sign gets nothing (the code is not spent).
#![allow(
    clippy::unwrap_used,
    reason = "test helpers as well as tests: a failed unwrap is the test failing"
)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use posmon_e2e_tests::{
    binary, quick_agent_config, recent_day, start_agent, wait_for, Collector, Pki, TargetServer,
};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "an-admin-token-for-the-enrollment-test";
const TERMINAL: &str = "T-ENROLL-1";

fn start_collector(dir: &Path) -> Collector {
    std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap();
    std::fs::write(
        dir.join("secret"),
        "the fleet secret of the enrollment test",
    )
    .unwrap();
    Collector::start(
        dir,
        &format!(
            "[auth]\nkey_id = \"k1\"\nsecret_file = {:?}\nadmin_token_file = {:?}\n",
            dir.join("secret").display().to_string(),
            dir.join("admin-token").display().to_string()
        ),
    )
}

fn answer(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// `POST /api/v1/enrollments` with `admin` as the bearer token (none: `None`).
fn create_code(collector: &Collector, admin: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/enrollments", collector.url))
        .json(body);
    if let Some(token) = admin {
        request = request.bearer_auth(token);
    }
    answer(request.send().unwrap())
}

/// A new code for `terminal_id`, good for `seconds` (absent: the default).
fn code_for(collector: &Collector, terminal_id: &str, seconds: Option<u64>) -> String {
    let mut body = json!({ "terminal_id": terminal_id });
    if let Some(seconds) = seconds {
        body["expires_in_seconds"] = json!(seconds);
    }
    let (status, created) = create_code(collector, Some(ADMIN_TOKEN), &body);
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["terminal_id"], terminal_id, "{created}");
    created["code"].as_str().unwrap().to_string()
}

/// `POST /api/v1/enroll`: the status, the body and the `Retry-After`.
fn redeem(collector: &Collector, terminal_id: &str, code: &str) -> (u16, Value, Option<String>) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/enroll", collector.url))
        .json(&json!({ "terminal_id": terminal_id, "code": code }))
        .send()
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let (status, body) = answer(response);
    (status, body, retry_after)
}

/// `posmon-agent enroll` with the config at `config`, the code on standard input or in the
/// environment.
fn agent_enroll(config: &Path, code: &str, from_env: bool, force: bool) -> Output {
    let mut command = Command::new(binary("posmon-agent"));
    command
        .args(["enroll", "--config"])
        .arg(config)
        .env_remove("POSMON_AGENT_TOKEN")
        .env_remove("POSMON_ENROLL_CODE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if from_env {
        // Nothing on standard input: the environment's code is the one used.
        command.env("POSMON_ENROLL_CODE", code).stdin(Stdio::null());
    } else {
        command.stdin(Stdio::piped());
    }
    if force {
        command.arg("--force");
    }
    let mut child = command.spawn().unwrap();
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{code}").unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// One report of `terminal_id` posted with `token`: the status.
fn post_report(collector: &Collector, terminal_id: &str, sequence: u64, token: &str) -> u16 {
    let batch = json!({ "reports": [ {
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": format!("{}T02:00:{:02}Z", recent_day(), sequence % 60),
        "agent_version": "0.1.0",
        "labels": { "model": "PAX-A920" },
        "probes": []
    } ] });
    reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(token)
        .json(&batch)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn an_agent_enrolls_once_with_a_code_and_reports_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let collector = start_collector(path);

    // Only the admin creates codes.
    let body = json!({ "terminal_id": TERMINAL });
    assert_eq!(create_code(&collector, None, &body).0, 401);
    assert_eq!(create_code(&collector, Some("not-the-admin"), &body).0, 401);
    let (status, refused) = create_code(
        &collector,
        Some(ADMIN_TOKEN),
        &json!({ "terminal_id": TERMINAL, "expires_in_seconds": 0 }),
    );
    assert_eq!(
        (status, refused["error"]["field"].as_str()),
        (400, Some("expires_in_seconds")),
        "{refused}"
    );
    let code = code_for(&collector, TERMINAL, None);
    assert_eq!(code.len(), 19, "four groups of four: {code}");

    // Listed without the code; only for the admin.
    let list = |admin: Option<&str>| {
        let mut request =
            reqwest::blocking::Client::new().get(format!("{}/api/v1/enrollments", collector.url));
        if let Some(token) = admin {
            request = request.bearer_auth(token);
        }
        answer(request.send().unwrap())
    };
    assert_eq!(list(None).0, 401);
    let (status, listed) = list(Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["enrollments"][0]["terminal_id"], TERMINAL,
        "{listed}"
    );
    assert!(!listed.to_string().contains(&code), "{listed}");

    // The agent's config names the token file, which does not exist yet.
    let target = TargetServer::start();
    let token_file = path.join("etc/agent-token");
    std::fs::create_dir_all(path.join("etc")).unwrap();
    let config_text = quick_agent_config(&collector.url, "UNUSED", path, TERMINAL, &target, 1, "")
        .replace(
            "token = \"UNUSED\"",
            &format!("token_file = {:?}", token_file.display().to_string()),
        );
    let config = path.join("agent.toml");
    std::fs::write(&config, &config_text).unwrap();

    // The code on the command line is a usage error (exit status 3) and is not sent; no code
    // at all is an error naming where it comes from.
    let on_command_line = Command::new(binary("posmon-agent"))
        .args(["enroll", "--config"])
        .arg(&config)
        .args(["--code", &code])
        .env_remove("POSMON_ENROLL_CODE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        on_command_line.status.code(),
        Some(3),
        "{}",
        text(&on_command_line.stderr)
    );
    assert!(
        text(&on_command_line.stderr).contains("--code"),
        "{}",
        text(&on_command_line.stderr)
    );
    let without = Command::new(binary("posmon-agent"))
        .args(["enroll", "--config"])
        .arg(&config)
        .env_remove("POSMON_ENROLL_CODE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(1));
    assert!(
        text(&without.stderr).contains("POSMON_ENROLL_CODE"),
        "{}",
        text(&without.stderr)
    );
    assert!(!token_file.exists());

    // From standard input (not a terminal: no prompt), typed loosely: the code still works.
    let enrolled = agent_enroll(&config, &code.to_lowercase(), false, false);
    assert!(enrolled.status.success(), "{}", text(&enrolled.stderr));
    assert!(
        !text(&enrolled.stderr).contains("Enrollment code"),
        "no prompt for piped input: {}",
        text(&enrolled.stderr)
    );
    let said = text(&enrolled.stdout);
    assert!(said.contains("Enrolled terminal T-ENROLL-1"), "{said}");
    assert!(!said.contains(&code), "the code is never printed: {said}");
    let token = collector.token(TERMINAL);
    assert!(!said.contains(&token), "the token is never printed: {said}");
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        format!("{token}\n")
    );
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o640);

    // Neither the code nor the token reach the collector's log.
    let log = collector.process.log();
    assert!(log.contains("A terminal enrolled"), "{log}");
    assert!(!log.contains(&code) && !log.contains(&token), "{log}");

    // The agent runs with the token from the file; the collector takes its reports.
    let mut agent = start_agent(path, "agent", &config_text);
    let seen = wait_for(Duration::from_secs(30), || {
        let response =
            reqwest::blocking::get(format!("{}/api/v1/terminals/{TERMINAL}", collector.url))
                .ok()?;
        (response.status().as_u16() == 200).then_some(())
    });
    assert!(
        seen.is_some(),
        "the enrolled agent's reports did not arrive; agent log:\n{}",
        agent.log()
    );
    agent.kill();

    // The token file is kept without --force; the code works once.
    let again = agent_enroll(&config, &code, false, false);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("exists already"),
        "{}",
        text(&again.stderr)
    );
    let used = agent_enroll(&config, &code, true, true);
    assert!(!used.status.success());
    assert!(
        text(&used.stderr).contains("invalid or expired code"),
        "{}",
        text(&used.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        format!("{token}\n"),
        "a refused enrollment leaves the token file alone"
    );
    let leftovers = std::fs::read_dir(path.join("etc")).unwrap().count();
    assert_eq!(leftovers, 1, "no temporary file is left behind");

    // A wrong code, an expired one and a cancelled one are refused alike.
    let other = code_for(&collector, "T-ENROLL-2", None);
    let (status, body, _) = redeem(&collector, TERMINAL, &other);
    assert_eq!(
        (status, body["error"]["reason"].as_str()),
        (403, Some("invalid_code")),
        "another terminal's code: {body}"
    );
    assert_eq!(
        redeem(&collector, "T-ENROLL-2", "0000-0000-0000-0000").0,
        403
    );
    let short = code_for(&collector, "T-ENROLL-3", Some(1));
    std::thread::sleep(Duration::from_millis(2100));
    let (status, body, _) = redeem(&collector, "T-ENROLL-3", &short);
    assert_eq!(status, 403, "expired: {body}");
    let cancelled = code_for(&collector, "T-ENROLL-4", None);
    let response = reqwest::blocking::Client::new()
        .delete(format!("{}/api/v1/enrollments/T-ENROLL-4", collector.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    let (status, body) = answer(response);
    assert_eq!(
        (status, body["cancelled"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    assert_eq!(redeem(&collector, "T-ENROLL-4", &cancelled).0, 403);
    // The code from the environment, for the other terminal: it works (and is then used up).
    let config_2 = path.join("agent-2.toml");
    std::fs::write(
        &config_2,
        config_text
            .replace(TERMINAL, "T-ENROLL-2")
            .replace("agent-token", "agent-token-2"),
    )
    .unwrap();
    let from_env = agent_enroll(&config_2, &other, true, false);
    assert!(from_env.status.success(), "{}", text(&from_env.stderr));

    // Outstanding codes are bounded per terminal.
    for _ in 0..3 {
        code_for(&collector, "T-ENROLL-5", None);
    }
    let (status, body) = create_code(
        &collector,
        Some(ADMIN_TOKEN),
        &json!({ "terminal_id": "T-ENROLL-5" }),
    );
    assert_eq!(
        (status, body["error"]["reason"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );

    // One code redeemed by four requests at once (as many as are let in together): exactly
    // one gets the token, the others are refused like any used code.
    let contested = code_for(&collector, "T-ENROLL-7", None);
    let start = Arc::new(Barrier::new(4));
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let start = Arc::clone(&start);
            let url = collector.url.clone();
            let code = contested.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                start.wait();
                answer(
                    client
                        .post(format!("{url}/api/v1/enroll"))
                        .json(&json!({ "terminal_id": "T-ENROLL-7", "code": code }))
                        .send()
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut statuses: Vec<u16> = Vec::new();
    let mut tokens = Vec::new();
    for racer in racers {
        let (status, body) = racer.join().unwrap();
        statuses.push(status);
        if let Some(token) = body["token"].as_str() {
            tokens.push(token.to_string());
        }
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 403, 403, 403], "{tokens:?}");
    assert_eq!(tokens, vec![collector.token("T-ENROLL-7")]);

    // A flood of wrong codes runs out of tries; ingest of another terminal goes on, and a
    // right code waits as well until the failures' budget refills.
    let waiting = code_for(&collector, "T-ENROLL-6", None);
    let mut limited = 0;
    for attempt in 0..40 {
        let (status, body, retry_after) = redeem(
            &collector,
            "T-ENROLL-6",
            &format!("0000-0000-0000-{attempt:04}"),
        );
        match status {
            403 => {}
            429 => {
                limited += 1;
                assert!(retry_after.is_some(), "429 without Retry-After: {body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        limited >= 25,
        "only {limited} of 40 wrong codes were rate-limited"
    );
    let reporter = collector.token("T-REPORTING");
    for sequence in 1..=5 {
        assert_eq!(
            post_report(&collector, "T-REPORTING", sequence, &reporter),
            200
        );
    }
    let (status, _, _) = redeem(&collector, "T-ENROLL-6", &waiting);
    assert_eq!(
        status, 429,
        "the right code waits too while the budget is spent"
    );
    let refilled = wait_for(Duration::from_secs(10), || {
        let (status, body, _) = redeem(&collector, "T-ENROLL-6", &waiting);
        (status == 200).then_some(body)
    })
    .unwrap();
    assert_eq!(refilled["terminal_id"], "T-ENROLL-6", "{refilled}");
    assert_eq!(
        refilled["token"],
        collector.token("T-ENROLL-6"),
        "{refilled}"
    );
    let metrics = collector.metrics();
    for (result, at_least) in [("enrolled", 4), ("refused", 8), ("rate_limited", 25)] {
        let counted = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!(
                    "posmon_enroll_redemptions_total{{result=\"{result}\"}} "
                ))
            })
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(
            counted >= f64::from(at_least),
            "{result}: {counted}\n{metrics}"
        );
    }

    // After the flood the collector starts again healthy, its outstanding codes kept.
    let collector = collector.restart_healthy(path);
    let outstanding = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/enrollments", collector.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    let kept = outstanding["enrollments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|code| code["terminal_id"] == "T-ENROLL-5")
        .count();
    assert_eq!(kept, 3, "{outstanding}");
}

#[test]
fn enrollment_over_https_uses_the_configs_ca_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let server_pki = Pki::new("posmon enrollment test server CA");
    let client_pki = Pki::new("posmon enrollment test terminal CA");
    let wrong_pki = Pki::new("somebody else's CA");
    let (server_cert, server_key) = server_pki.leaf_pem(&["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = client_pki.leaf_pem(&[TERMINAL]);
    let write = |name: &str, text: &str| {
        let file = path.join(name);
        std::fs::write(&file, text).unwrap();
        file.display().to_string()
    };
    let server_cert = write("server.crt", &server_cert);
    let server_key = write("server.key", &server_key);
    let client_cert_file = write("client.crt", &client_cert);
    let client_key_file = write("client.key", &client_key);
    server_pki.write_ca(&path.join("server-ca.crt"));
    client_pki.write_ca(&path.join("client-ca.crt"));
    wrong_pki.write_ca(&path.join("wrong-ca.crt"));
    std::fs::write(path.join("admin-token"), ADMIN_TOKEN).unwrap();
    let collector = Collector::start(
        path,
        &format!(
            "[auth]\nadmin_token_file = {:?}\n[tls]\ncert_file = {server_cert:?}\nkey_file = {server_key:?}\nclient_ca_file = {:?}\n",
            path.join("admin-token").display().to_string(),
            path.join("client-ca.crt").display().to_string()
        ),
    );
    assert!(collector.url.starts_with("https://"), "{}", collector.url);

    // The administrator's client, with the terminal CA's certificate the collector requires.
    let admin = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(path.join("server-ca.crt")).unwrap())
                .unwrap(),
        )
        .identity(
            reqwest::Identity::from_pem(format!("{client_cert}\n{client_key}").as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let created: Value = admin
        .post(format!("{}/api/v1/enrollments", collector.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "terminal_id": TERMINAL }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let code = created["code"].as_str().unwrap().to_string();

    let target = TargetServer::start();
    let token_file = path.join("agent-token");
    let config_for = |ca: &str| {
        let tls = format!(
            "collector_ca_file = {:?}\nclient_cert_file = {client_cert_file:?}\nclient_key_file = {client_key_file:?}",
            path.join(ca).display().to_string()
        );
        quick_agent_config(&collector.url, "UNUSED", path, TERMINAL, &target, 1, &tls).replace(
            "token = \"UNUSED\"",
            &format!("token_file = {:?}", token_file.display().to_string()),
        )
    };
    let wrong_config = path.join("wrong-ca.toml");
    std::fs::write(&wrong_config, config_for("wrong-ca.crt")).unwrap();
    let good_config = path.join("agent.toml");
    std::fs::write(&good_config, config_for("server-ca.crt")).unwrap();

    // A collector the config's CA did not sign gets nothing, and the code is not spent.
    let refused = agent_enroll(&wrong_config, &code, false, false);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("cannot reach the collector"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!token_file.exists());
    let enrolled = agent_enroll(&good_config, &code, false, false);
    assert!(enrolled.status.success(), "{}", text(&enrolled.stderr));
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        format!("{}\n", collector.token(TERMINAL))
    );
}
