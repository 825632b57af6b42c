//! Terminal credentials with the real collector binary: one terminal's token revoked over the
//! admin API (the old token refused, the new one from `posmon-collector token` accepted, other
//! terminals unaffected, the revocation kept across a restart); a rotation of the whole fleet
//! secret step by step (new key, old key still accepted, then removed); and `token` refusing to
//! invent a fleet secret.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers as well as tests: a failed unwrap is the test failing"
)]

use std::path::Path;
use std::process::{Command, Output};

use posmon_e2e_tests::{binary, recent_day, Collector};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "an-admin-token-for-the-credentials-test";

fn report(terminal_id: &str, sequence: u64) -> Value {
    json!({ "reports": [ {
        "schema_version": 1,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "observed_at": format!("{}T02:00:{:02}Z", recent_day(), sequence % 60),
        "agent_version": "0.1.0",
        "labels": { "model": "PAX-A920", "region": "cn-east" },
        "software": { "pos_app": { "version": "2.9.1" } },
        "probes": []
    } ] })
}

/// Posts one report of `terminal_id` with `token`; the status and the error body.
fn post(collector: &Collector, terminal_id: &str, sequence: u64, token: &str) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/reports", collector.url))
        .bearer_auth(token)
        .json(&report(terminal_id, sequence))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn revoke(collector: &Collector, terminal_id: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::blocking::Client::new().post(format!(
        "{}/api/v1/terminals/{terminal_id}/revoke",
        collector.url
    ));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// `posmon-collector token` with `args`, without the caller's fleet secret variable.
fn token_command(args: &[&str]) -> Output {
    Command::new(binary("posmon-collector"))
        .arg("token")
        .args(args)
        .env_remove("POSMON_FLEET_SECRET")
        .env_remove("POSMON_DATA_DIR")
        .env_remove("POSMON_CONFIG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// The config `Collector::start` writes, with `body` after its `listen` and `data_dir`: to
/// change it and start again.
fn write_config(dir: &Path, body: &str) {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n{body}",
        dir.join("collector-data").display().to_string()
    );
    std::fs::write(dir.join("collector.toml"), text).unwrap();
}

fn auth_section(dir: &Path, key_id: &str, secret_file: &str, previous: &[(&str, &str)]) -> String {
    std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap();
    let mut text = format!(
        "[auth]\nkey_id = \"{key_id}\"\nsecret_file = {:?}\nadmin_token_file = {:?}\n",
        dir.join(secret_file).display().to_string(),
        dir.join("admin-token").display().to_string()
    );
    for (id, file) in previous {
        text.push_str(&format!(
            "[[auth.previous_keys]]\nid = \"{id}\"\nsecret_file = {:?}\n",
            dir.join(file).display().to_string()
        ));
    }
    text
}

#[test]
fn one_terminals_token_is_revoked_without_touching_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(path.join("secret-1"), "the first fleet secret, 32 bytes!").unwrap();
    let mut collector = Collector::start(path, &auth_section(path, "k1", "secret-1", &[]));
    let old = collector.token("T-1");
    let other = collector.token("T-2");
    assert_eq!(post(&collector, "T-1", 1, &old).0, 200);
    assert_eq!(post(&collector, "T-2", 1, &other).0, 200);

    // Only the admin may revoke; a bad terminal id is named.
    assert_eq!(revoke(&collector, "T-1", None).0, 401);
    assert_eq!(revoke(&collector, "T-1", Some(&old)).0, 401);
    let (status, body) = revoke(&collector, "T%201", Some(ADMIN_TOKEN));
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("terminal_id")),
        "{body}"
    );
    assert_eq!(
        post(&collector, "T-1", 2, &old).0,
        200,
        "nothing revoked yet"
    );

    let (status, body) = revoke(&collector, "T-1", Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generation"], 1, "{body}");
    assert_eq!(body["terminal_id"], "T-1", "{body}");

    // The token in hostile hands is refused at once; the new one works; T-2 is unaffected.
    let (status, body) = post(&collector, "T-1", 3, &old);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{body}"
    );
    let output = token_command(&["--config", &collector.config.display().to_string(), "T-1"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let new = text(&output.stdout).trim().to_string();
    assert!(new.starts_with("k1.1.") && new != old, "{new}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&path.join("collector-data").display().to_string())
            && stderr.contains(&path.join("secret-1").display().to_string())
            && stderr.contains("token generation 1"),
        "it says which data directory and secret it used: {stderr}"
    );
    assert_eq!(post(&collector, "T-1", 4, &new).0, 200);
    assert_eq!(post(&collector, "T-2", 2, &other).0, 200);
    assert_eq!(collector.token("T-2"), other, "T-2 keeps its token");

    // The revocation survives a restart.
    collector.process.terminate();
    let collector = Collector::start_again(path);
    assert_eq!(post(&collector, "T-1", 5, &old).0, 401);
    assert_eq!(post(&collector, "T-1", 6, &new).0, 200);
    assert_eq!(post(&collector, "T-2", 3, &other).0, 200);
    assert_eq!(collector.token("T-1"), new);

    // Revoking again moves on to generation 2.
    let (status, body) = revoke(&collector, "T-1", Some(ADMIN_TOKEN));
    assert_eq!(
        (status, body["generation"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    assert_eq!(post(&collector, "T-1", 7, &new).0, 401);
    assert_eq!(post(&collector, "T-1", 8, &collector.token("T-1")).0, 200);
}

#[test]
fn a_fleet_secret_rotation_drill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let client = reqwest::blocking::Client::new();
    let usage = |collector: &Collector| -> Value {
        client
            .get(format!("{}/api/v1/policy/credentials", collector.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };

    // Before: key k1; T-2's first token revoked.
    std::fs::write(path.join("secret-k1"), "the old fleet secret, 32 bytes..").unwrap();
    let mut collector = Collector::start(path, &auth_section(path, "k1", "secret-k1", &[]));
    let t1_k1 = collector.token("T-1");
    assert_eq!(revoke(&collector, "T-2", Some(ADMIN_TOKEN)).0, 200);
    let t2_k1 = collector.token("T-2");
    assert!(
        t1_k1.starts_with("k1.") && t2_k1.starts_with("k1.1."),
        "{t2_k1}"
    );
    assert_eq!(post(&collector, "T-1", 1, &t1_k1).0, 200);

    // Step 1: a new secret under a new key id; the old key stays accepted.
    std::fs::write(path.join("secret-k2"), "the new fleet secret, 32 bytes...").unwrap();
    collector.process.terminate();
    write_config(
        path,
        &auth_section(path, "k2", "secret-k2", &[("k1", "secret-k1")]),
    );
    let mut collector = Collector::start_again(path);
    assert_eq!(
        post(&collector, "T-1", 2, &t1_k1).0,
        200,
        "old tokens still work"
    );
    assert_eq!(post(&collector, "T-2", 1, &t2_k1).0, 200);

    // Step 2: each terminal gets its token under the new key (same generation).
    let t1_k2 = collector.token("T-1");
    let t2_k2 = collector.token("T-2");
    assert!(
        t1_k2.starts_with("k2.") && t2_k2.starts_with("k2.1."),
        "{t1_k2} {t2_k2}"
    );
    assert_eq!(post(&collector, "T-1", 3, &t1_k2).0, 200);
    assert_eq!(post(&collector, "T-2", 2, &t2_k2).0, 200);

    // Step 3: the old key's use shows when every terminal has moved.
    let seen = usage(&collector);
    assert_eq!(seen["current_key"], "k2", "{seen}");
    assert_eq!(seen["keys"][0]["id"], "k2", "{seen}");
    assert_eq!(seen["keys"][0]["accepted_requests"], 2, "{seen}");
    assert_eq!(seen["keys"][1]["id"], "k1", "{seen}");
    assert_eq!(seen["keys"][1]["accepted_requests"], 2, "{seen}");
    assert!(seen["keys"][1]["last_accepted_at"].is_string(), "{seen}");
    assert_eq!(seen["revoked_terminals"], 1, "{seen}");

    // Step 4: the old key is removed; its tokens are refused, the new ones work.
    collector.process.terminate();
    write_config(path, &auth_section(path, "k2", "secret-k2", &[]));
    let collector = Collector::start_again(path);
    let (status, body) = post(&collector, "T-1", 4, &t1_k1);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("k1"),
        "{body}"
    );
    assert_eq!(post(&collector, "T-1", 5, &t1_k2).0, 200);
    assert_eq!(post(&collector, "T-2", 3, &t2_k2).0, 200);
    let seen = usage(&collector);
    assert_eq!(seen["keys"].as_array().map(Vec::len), Some(1), "{seen}");
}

#[test]
fn token_without_a_fleet_secret_fails_naming_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("no-collector-here");
    let data_arg = data_dir.display().to_string();
    let output = token_command(&["--data-dir", &data_arg, "T-1"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "no token printed");
    assert!(
        stderr.contains(&format!("no fleet secret in data directory {data_arg}"))
            && stderr.contains("posmon-collector serve")
            && stderr.contains("POSMON_FLEET_SECRET"),
        "{stderr}"
    );
    assert!(!data_dir.exists(), "nothing was created");

    // With the variable set it works, and says where the secret came from.
    let output = Command::new(binary("posmon-collector"))
        .args(["token", "--data-dir", &data_arg, "T-1"])
        .env("POSMON_FLEET_SECRET", "a fleet secret from the environment")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).trim().starts_with("k1."));
    assert!(
        text(&output.stderr).contains("environment variable POSMON_FLEET_SECRET"),
        "{}",
        text(&output.stderr)
    );
    assert!(!data_dir.exists(), "nothing was created");
}
