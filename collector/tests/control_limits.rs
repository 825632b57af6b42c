//! Fleet control at its edges: a label-only rollout, a revision that never passed its canary,
//! and profiles as large as an agent can read (or refused at the collector when laid together
//! they could be larger).

#![allow(clippy::unwrap_used, reason = "test code")]

use std::sync::Arc;

use posmon_collector::config::Config;
use posmon_collector::control::profile::{Applies, MatchLabels, Profile, ProfileRequest};
use posmon_collector::http::{serve, AppState};
use posmon_protocol::control::SETTINGS_MAX_BYTES;
use posmon_protocol::{terminal_token, FleetKey, Keyring};
use serde_json::{json, Value};

fn profile(json: &str) -> Profile {
    let request: ProfileRequest = serde_json::from_str(json).unwrap();
    request.validate().unwrap();
    Profile::next(
        None,
        request,
        "p",
        "admin",
        time::OffsetDateTime::UNIX_EPOCH,
    )
}

/// README: `"rollout": {"label": {"key": "canary", "value": "yes"}}` puts the terminals carrying
/// the label in the rollout "at once; the others keep the profile's previous settings". But
/// `percent` defaults to 100, so a label-only rollout is full: every terminal runs it.
#[test]
fn a_label_only_rollout_reaches_only_the_labelled_terminals() {
    let first = profile(r#"{"settings":{"attempts":1}}"#);
    let request: ProfileRequest = serde_json::from_str(
        r#"{"settings":{"attempts":2},"rollout":{"label":{"key":"canary","value":"yes"}}}"#,
    )
    .unwrap();
    request.validate().unwrap();
    let second = Profile::next(
        Some(&first),
        request,
        "p",
        "admin",
        time::OffsetDateTime::UNIX_EPOCH,
    );
    let plain = MatchLabels::default();
    let outside = (0..100)
        .filter(|i| {
            matches!(
                second.applies(&format!("T-{i}"), &plain),
                Applies::Current(_)
            )
        })
        .count();
    assert_eq!(
        outside, 0,
        "{outside} of 100 terminals without the canary label run the canary settings"
    );
}

fn keyring() -> Keyring {
    Keyring::new(
        FleetKey::new("k1", b"review secret of sixteen+".to_vec()).unwrap(),
        vec![],
    )
}

/// A profile the collector accepts (body under SETTINGS_MAX_BYTES) whose settings document, as
/// served at GET /api/v1/agent/config, is over SETTINGS_MAX_BYTES: no agent can read it
/// (`read_answer` refuses it), so none ever applies or refuses it.
#[tokio::test]
async fn an_accepted_profile_is_one_every_agent_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let state = Arc::new(AppState::open(config, keyring(), Some("admin-token".into())).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, None, async move {
        let _ = stopped.await;
    }));
    let base = format!("http://{address}");
    // 3-byte characters: the collector bounds characters, the agent bytes.
    let wide = |n: usize| "路".repeat(n);
    // `count` targets, each as large as validation lets it be.
    let build = |count: usize| {
        let targets: Vec<Value> = (0..count)
            .map(|i| {
                json!({
                    "name": format!("{i:02}{}", wide(62)),
                    "address": format!("https://h/{}", wide(245)),
                    "tls": true,
                    "ca_file": format!("/{}", wide(250)),
                    "contact": wide(96),
                })
            })
            .collect();
        json!({ "settings": { "targets": targets } })
    };
    let client = reqwest::Client::new();
    let token = terminal_token(keyring().current(), "T-1");
    // From a profile past what an agent reads down to one within it: each is refused at the
    // collector, naming `settings`, or served within what an agent reads.
    let (mut refused, mut accepted) = (0, 0);
    for count in [32, 24, 16, 8, 4, 1] {
        let body = build(count);
        let put = client
            .put(format!("{base}/api/v1/config/profiles/big"))
            .bearer_auth("admin-token")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = put.status().as_u16();
        let answer: Value = put.json().await.unwrap_or(Value::Null);
        if status == 413 {
            // Larger than a profile may be at all.
            refused += 1;
            continue;
        }
        if status == 400 {
            assert_eq!(answer["error"]["field"], "settings", "{answer}");
            refused += 1;
            continue;
        }
        assert_eq!(status, 200, "{answer}");
        accepted += 1;
        let served = client
            .get(format!("{base}/api/v1/agent/config"))
            .bearer_auth(&token)
            .header(posmon_protocol::TERMINAL_HEADER, "T-1")
            .send()
            .await
            .unwrap();
        assert!(served.status().is_success());
        let bytes = served.bytes().await.unwrap();
        let _: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            bytes.len() <= SETTINGS_MAX_BYTES,
            "accepted a profile whose settings are served as {} bytes > {SETTINGS_MAX_BYTES}: no agent can fetch them",
            bytes.len()
        );
    }
    assert!(
        refused > 0 && accepted > 0,
        "refused {refused}, accepted {accepted}"
    );
}

/// README: outside a partial rollout the terminals "keep the profile's previous settings — its
/// last fully rolled-out ones — or run nothing of it if it has none". A new profile written at
/// 10 % and then revised at 10 % makes revision 1 (never rolled out past 10 %) the `previous`
/// of revision 2: the other ~90 % of the selected terminals now run revision 1.
#[test]
fn a_never_rolled_out_revision_does_not_become_the_fleet_default() {
    let partial = |json: &str, old: Option<&Profile>| {
        let request: ProfileRequest = serde_json::from_str(json).unwrap();
        request.validate().unwrap();
        Profile::next(old, request, "p", "admin", time::OffsetDateTime::UNIX_EPOCH)
    };
    let first = partial(
        r#"{"settings":{"attempts":1},"rollout":{"percent":10}}"#,
        None,
    );
    let second = partial(
        r#"{"settings":{"attempts":2},"rollout":{"percent":10}}"#,
        Some(&first),
    );
    let labels = MatchLabels::default();
    let running_first = (0..1000)
        .filter(|i| matches!(second.applies(&format!("T-{i}"), &labels), Applies::Previous(s) if s.attempts == Some(1)))
        .count();
    assert_eq!(
        running_first, 0,
        "{running_first} of 1000 terminals run revision 1, which never passed its 10 % canary"
    );
}
