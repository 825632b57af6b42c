//! User accounts and roles with the real collector binary: the first admin made with the
//! command line (reads close at once); every write route refused to a viewer (found by reading
//! the router's routes from the source, not hand-picked); CSRF refused; session fixation
//! impossible; sign-in locked after failures per account and per address; and no password,
//! session id, CSRF token or API token ever in the collector's log (which the tests run at
//! debug level).
#![allow(
    clippy::unwrap_used,
    reason = "test helpers as well as tests: a failed unwrap is the test failing"
)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use posmon_e2e_tests::{binary, Collector};
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};
use serde_json::{json, Value};

const ADMIN_PASSWORD: &str = "admin-password-7f3a";
const OPERATOR_PASSWORD: &str = "operator-password-2b9c";
const VIEWER_PASSWORD: &str = "viewer-password-91de";

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `posmon-collector user <args>` on the collector's config, `password` on standard input.
fn user_command(collector: &Collector, args: &[&str], password: Option<&str>) -> (bool, String) {
    let mut child = Command::new(binary("posmon-collector"))
        .arg("user")
        .args(args)
        .arg("--config")
        .arg(&collector.config)
        .env_remove("POSMON_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(password) = password {
        // A command that refuses before it reads (a name already taken…) may close its input
        // first: what it answers is checked below.
        let _ = writeln!(child.stdin.take().unwrap(), "{password}");
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn add_user(collector: &Collector, name: &str, role: &str, password: &str) {
    let (ok, text) = user_command(collector, &["add", name, "--role", role], Some(password));
    assert!(ok, "user add {name}: {text}");
}

/// A collector with an admin, an operator and a viewer.
fn collector_with_users(dir: &Path) -> Collector {
    let collector = Collector::start(dir, "");
    add_user(&collector, "boss", "admin", ADMIN_PASSWORD);
    add_user(&collector, "li", "operator", OPERATOR_PASSWORD);
    add_user(&collector, "wang", "viewer", VIEWER_PASSWORD);
    collector
}

/// The session id a response sets, if any.
fn set_session(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookie| {
            let value = cookie.strip_prefix("posmon_session=")?;
            Some(value.split(';').next().unwrap_or_default().to_string())
        })
        .filter(|id| !id.is_empty())
}

/// Signs in with the form; the status, the new session id and the page.
fn sign_in(
    collector: &Collector,
    name: &str,
    password: &str,
    cookie: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut request = client().post(format!("{}/login", collector.url)).form(&[
        ("name", name),
        ("password", password),
        ("lang", "en"),
    ]);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, format!("posmon_session={cookie}"));
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let session = set_session(&response);
    (status, session, response.text().unwrap_or_default())
}

/// A signed-in browser: its session id and CSRF token.
struct Session {
    id: String,
    csrf: String,
}

fn session(collector: &Collector, name: &str, password: &str) -> Session {
    let (status, id, page) = sign_in(collector, name, password, None);
    assert_eq!(status, 303, "{page}");
    let id = id.unwrap();
    let me = me(collector, &id);
    assert_eq!(me.0, 200);
    assert_eq!(me.1["name"], name);
    Session {
        id,
        csrf: me.1["csrf_token"].as_str().unwrap().to_string(),
    }
}

fn me(collector: &Collector, id: &str) -> (u16, Value) {
    let response = client()
        .get(format!("{}/api/v1/me", collector.url))
        .header(COOKIE, format!("posmon_session={id}"))
        .send()
        .unwrap();
    (
        response.status().as_u16(),
        response.json().unwrap_or(Value::Null),
    )
}

/// Sends `method path` with `headers` and a JSON body; the status and the answer.
fn send(
    collector: &Collector,
    method: &str,
    path: &str,
    headers: HeaderMap,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client()
        .request(method.parse().unwrap(), format!("{}{path}", collector.url))
        .headers(headers);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn with_session(session: &Session, csrf: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        COOKIE,
        HeaderValue::from_str(&format!("posmon_session={}", session.id)).unwrap(),
    );
    if let Some(csrf) = csrf {
        headers.insert("x-csrf-token", HeaderValue::from_str(csrf).unwrap());
    }
    headers
}

fn with_bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

/// Makes an API token for the signed-in user.
fn api_token(collector: &Collector, session: &Session, role: Option<&str>) -> String {
    let (status, answer) = send(
        collector,
        "POST",
        "/api/v1/me/tokens",
        with_session(session, Some(&session.csrf)),
        Some(json!({ "label": "script", "role": role })),
    );
    assert_eq!(status, 201, "{answer}");
    answer["token"].as_str().unwrap().to_string()
}

#[test]
fn the_first_admin_is_made_on_the_command_line_and_reads_close() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path(), "");
    let log = collector.process.log();
    assert!(
        log.contains("No user account and no viewer credential exist"),
        "{log}"
    );
    // Open reads, no writes, until the first account.
    assert_eq!(
        send(
            &collector,
            "GET",
            "/api/v1/overview",
            HeaderMap::new(),
            None
        )
        .0,
        200
    );
    let (status, answer) = send(
        &collector,
        "POST",
        "/api/v1/probe",
        HeaderMap::new(),
        Some(json!({})),
    );
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["reason"], "missing_token");

    // Refused: a short password, a reserved name, no password at all.
    let (ok, text) = user_command(
        &collector,
        &["add", "boss", "--role", "admin"],
        Some("short"),
    );
    assert!(!ok && text.contains("password"), "{text}");
    let (ok, text) = user_command(
        &collector,
        &["add", "admin-token", "--role", "admin"],
        Some(ADMIN_PASSWORD),
    );
    assert!(!ok && text.contains("reserved"), "{text}");
    let (ok, text) = user_command(
        &collector,
        &["add", "boss", "--role", "root"],
        Some(ADMIN_PASSWORD),
    );
    assert!(!ok && text.contains("viewer, operator or admin"), "{text}");
    // The password never on the command line: there is no such option.
    let (ok, _) = user_command(
        &collector,
        &[
            "add",
            "boss",
            "--role",
            "admin",
            "--password",
            ADMIN_PASSWORD,
        ],
        None,
    );
    assert!(!ok);

    add_user(&collector, "boss", "admin", ADMIN_PASSWORD);
    let (ok, text) = user_command(
        &collector,
        &["add", "boss", "--role", "viewer"],
        Some(ADMIN_PASSWORD),
    );
    assert!(!ok && text.contains("exists already"), "{text}");
    let (ok, text) = user_command(&collector, &["list"], None);
    assert!(ok && text.contains("boss\tadmin\tenabled"), "{text}");
    assert!(!text.contains(ADMIN_PASSWORD));

    // The running collector closes its reads at once; the page shows the sign-in form.
    assert_eq!(
        send(
            &collector,
            "GET",
            "/api/v1/overview",
            HeaderMap::new(),
            None
        )
        .0,
        401
    );
    let page = client().get(format!("{}/", collector.url)).send().unwrap();
    assert_eq!(page.status().as_u16(), 401);
    assert!(page.text().unwrap().contains("id=\"login-form\""));
    let chinese = client()
        .get(format!("{}/login?lang=zh-CN", collector.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(chinese.contains("用户名") && chinese.contains("lang=\"zh-CN\""));

    let boss = session(&collector, "boss", ADMIN_PASSWORD);
    assert_eq!(me(&collector, &boss.id).1["role"], "admin");
    assert_eq!(
        send(
            &collector,
            "GET",
            "/api/v1/overview",
            with_session(&boss, None),
            None
        )
        .0,
        200
    );
    // Disabled on the command line: the session ends with the next request.
    let (ok, text) = user_command(&collector, &["disable", "boss"], None);
    assert!(ok, "{text}");
    assert_eq!(me(&collector, &boss.id).0, 401);
    let (status, _, _) = sign_in(&collector, "boss", ADMIN_PASSWORD, None);
    assert_eq!(status, 401);
    let (ok, text) = user_command(&collector, &["enable", "boss"], None);
    assert!(ok, "{text}");
    let boss = session(&collector, "boss", ADMIN_PASSWORD);
    // A password reset ends the sessions made before it.
    let (ok, text) = user_command(&collector, &["reset", "boss"], Some("a-new-admin-password"));
    assert!(ok, "{text}");
    assert_eq!(me(&collector, &boss.id).0, 401);
    session(&collector, "boss", "a-new-admin-password");
}

/// Every literal `/api/v1/…` path in the collector's source, with its parameters filled in.
fn api_paths() -> BTreeSet<String> {
    fn walk(dir: &Path, paths: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, paths);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("\"/api/v1/").skip(1) {
                    let Some(end) = piece.find('"') else { continue };
                    let route = &piece[..end];
                    if route.is_empty() || route.ends_with('/') || route.contains(' ') {
                        continue;
                    }
                    let filled: Vec<String> = route
                        .split('/')
                        .map(|segment| {
                            if segment == "{id}" {
                                "1".to_string()
                            } else if segment.starts_with('{') {
                                "T-1".to_string()
                            } else {
                                segment.to_string()
                            }
                        })
                        .collect();
                    paths.insert(format!("/api/v1/{}", filled.join("/")));
                }
            }
        }
    }
    let mut paths = BTreeSet::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/src"),
        &mut paths,
    );
    paths
}

/// Whether a path is not for user roles: a terminal's own endpoints, or a user's own session
/// and tokens (which every signed-in user may manage).
fn not_for_roles(path: &str) -> bool {
    path == "/api/v1/reports"
        || path == "/api/v1/enroll"
        || path.starts_with("/api/v1/agent/")
        || path == "/api/v1/logout"
        || path.starts_with("/api/v1/me/")
}

#[test]
fn a_viewer_is_refused_on_every_write_route() {
    let dir = tempfile::tempdir().unwrap();
    let collector = collector_with_users(dir.path());
    let viewer = session(&collector, "wang", VIEWER_PASSWORD);
    let viewer_token = api_token(&collector, &viewer, None);
    let operator = session(&collector, "li", OPERATOR_PASSWORD);
    let paths = api_paths();
    assert!(paths.contains("/api/v1/policy/versions"), "{paths:?}");
    let mut refused = Vec::new();
    for path in paths.iter().filter(|path| !not_for_roles(path)) {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let (status, answer) = send(
                &collector,
                method,
                path,
                with_session(&viewer, Some(&viewer.csrf)),
                Some(json!({})),
            );
            let no_route = status == 405
                || (status == 404 && answer["error"]["message"] == "no such endpoint");
            if no_route {
                continue;
            }
            assert_eq!(status, 403, "{method} {path} as a viewer: {answer}");
            assert_eq!(answer["error"]["reason"], "forbidden", "{method} {path}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("role is needed"),
                "{answer}"
            );
            // The viewer's API token too.
            let (status, answer) = send(
                &collector,
                method,
                path,
                with_bearer(&viewer_token),
                Some(json!({})),
            );
            assert_eq!(status, 403, "{method} {path} with a viewer token: {answer}");
            refused.push(format!("{method} {path}"));
        }
    }
    // Not vacuous: the write routes of today are all among them.
    for expected in [
        "PUT /api/v1/policy/versions",
        "POST /api/v1/probe",
        "POST /api/v1/terminals/T-1/probe",
        "POST /api/v1/alerts/silences",
        "DELETE /api/v1/alerts/silences/1",
        "PUT /api/v1/config/profiles/T-1",
        "DELETE /api/v1/config/profiles/T-1",
        "POST /api/v1/enrollments",
        "POST /api/v1/terminals/T-1/revoke",
        "POST /api/v1/users",
        "PATCH /api/v1/users/T-1",
    ] {
        assert!(
            refused.iter().any(|route| route == expected),
            "{expected} not refused: {refused:?}"
        );
    }

    // An operator probes and silences, but changes no policy and no user.
    let as_operator = || with_session(&operator, Some(&operator.csrf));
    let (status, answer) = send(
        &collector,
        "POST",
        "/api/v1/probe",
        as_operator(),
        Some(json!({})),
    );
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = send(
        &collector,
        "POST",
        "/api/v1/alerts/silences",
        as_operator(),
        Some(
            json!({ "matchers": { "region": ["cn-east"] }, "duration_seconds": 600, "comment": "works" }),
        ),
    );
    assert!(status == 200 || status == 201, "{answer}");
    for (method, path) in [
        ("PUT", "/api/v1/policy/versions"),
        ("POST", "/api/v1/users"),
        ("POST", "/api/v1/enrollments"),
    ] {
        let (status, answer) = send(&collector, method, path, as_operator(), Some(json!({})));
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the admin role is needed"));
    }
    // A token cannot be above its user.
    let (status, answer) = send(
        &collector,
        "POST",
        "/api/v1/me/tokens",
        as_operator(),
        Some(json!({ "label": "too much", "role": "admin" })),
    );
    assert_eq!(status, 400, "{answer}");
}

#[test]
fn csrf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let collector = collector_with_users(dir.path());
    let operator = session(&collector, "li", OPERATOR_PASSWORD);
    let probe = |headers: HeaderMap| {
        send(
            &collector,
            "POST",
            "/api/v1/probe",
            headers,
            Some(json!({})),
        )
    };
    for (headers, why) in [
        (with_session(&operator, None), "no token"),
        (
            with_session(&operator, Some("not-the-token")),
            "a wrong token",
        ),
        (
            {
                let mut headers = with_session(&operator, Some(&operator.csrf));
                headers.insert("origin", HeaderValue::from_static("http://evil.example"));
                headers
            },
            "another origin",
        ),
        (
            {
                let mut headers = with_session(&operator, Some(&operator.csrf));
                headers.insert(
                    "referer",
                    HeaderValue::from_static("https://evil.example/page"),
                );
                headers
            },
            "another referer",
        ),
    ] {
        let (status, answer) = probe(headers);
        assert_eq!(status, 403, "{why}: {answer}");
        assert_eq!(answer["error"]["reason"], "csrf", "{why}");
    }
    // Another session's token is no good either.
    let viewer = session(&collector, "wang", VIEWER_PASSWORD);
    let (status, _) = probe(with_session(&operator, Some(&viewer.csrf)));
    assert_eq!(status, 403);
    // The right token from the page itself passes.
    let mut headers = with_session(&operator, Some(&operator.csrf));
    headers.insert("origin", HeaderValue::from_str(&collector.url).unwrap());
    assert_eq!(probe(headers).0, 202);
    // A script's bearer token needs none.
    let token = api_token(&collector, &operator, None);
    assert_eq!(probe(with_bearer(&token)).0, 202);
    // A sign-in form posted from another site is refused.
    let response = client()
        .post(format!("{}/login", collector.url))
        .header("origin", "http://evil.example")
        .form(&[("name", "li"), ("password", OPERATOR_PASSWORD)])
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert!(set_session(&response).is_none());
    // Sign-out is a write too.
    let (status, _) = send(
        &collector,
        "POST",
        "/api/v1/logout",
        with_session(&operator, None),
        None,
    );
    assert_eq!(status, 403);
    assert_eq!(me(&collector, &operator.id).0, 200);
}

#[test]
fn session_fixation_is_impossible() {
    let dir = tempfile::tempdir().unwrap();
    let collector = collector_with_users(dir.path());
    // An id the attacker chose is never promoted.
    let chosen = "attacker-chosen-session-id-0123456789abcdefghij";
    let (status, id, _) = sign_in(&collector, "li", OPERATOR_PASSWORD, Some(chosen));
    assert_eq!(status, 303);
    let id = id.unwrap();
    assert_ne!(id, chosen);
    assert_eq!(id.len(), 43, "256 random bits");
    assert_eq!(me(&collector, chosen).0, 401);
    assert_eq!(me(&collector, &id).1["name"], "li");

    // The attacker's own live session, planted in a victim's browser, ends when the victim
    // signs in, and never becomes the victim's.
    let attacker = session(&collector, "wang", VIEWER_PASSWORD);
    let (status, victim, _) = sign_in(&collector, "li", OPERATOR_PASSWORD, Some(&attacker.id));
    assert_eq!(status, 303);
    let victim = victim.unwrap();
    assert_ne!(victim, attacker.id);
    assert_eq!(me(&collector, &attacker.id).0, 401);
    assert_eq!(me(&collector, &victim).1["role"], "operator");

    // Each sign-in gets a new id; sign-out ends it.
    let again = session(&collector, "li", OPERATOR_PASSWORD);
    assert_ne!(again.id, victim);
    let (status, _) = send(
        &collector,
        "POST",
        "/api/v1/logout",
        with_session(&again, Some(&again.csrf)),
        None,
    );
    assert_eq!(status, 204);
    assert_eq!(me(&collector, &again.id).0, 401);

    // The cookie's attributes.
    let response = client()
        .post(format!("{}/login", collector.url))
        .form(&[("name", "li"), ("password", OPERATOR_PASSWORD)])
        .send()
        .unwrap();
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    // Sessions live in memory: a restart ends them.
    let id = set_session(&response).unwrap();
    let mut collector = collector;
    collector.process.terminate();
    let collector = Collector::start_again(dir.path());
    assert_eq!(me(&collector, &id).0, 401);
}

#[test]
fn sign_in_is_locked_after_failures_per_account_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let collector = collector_with_users(dir.path());
    for attempt in 0..5 {
        let (status, id, page) = sign_in(&collector, "li", "not-the-password", None);
        assert_eq!(status, 401, "attempt {attempt}: {page}");
        assert!(id.is_none());
        assert!(page.contains("Wrong user name or password."));
    }
    // Locked: even the right password is not tried.
    let (status, id, page) = sign_in(&collector, "li", OPERATOR_PASSWORD, None);
    assert_eq!(status, 429, "{page}");
    assert!(id.is_none());
    assert!(
        page.contains("Too many failed sign-ins. Try again in 15 minutes."),
        "{page}"
    );
    // Other accounts are not locked by it…
    assert_eq!(sign_in(&collector, "wang", VIEWER_PASSWORD, None).0, 303);
    // …until this address has failed 20 times, over any names.
    for attempt in 5..20 {
        let (status, _, _) = sign_in(
            &collector,
            &format!("guess{attempt}"),
            "nope-nope-nope",
            None,
        );
        assert_eq!(status, 401, "attempt {attempt}");
    }
    let (status, _, page) = sign_in(&collector, "boss", ADMIN_PASSWORD, None);
    assert_eq!(status, 429, "{page}");
    let log = collector.process.log();
    assert!(log.contains("A sign-in was refused"), "{log}");
}

#[test]
fn passwords_session_ids_and_tokens_are_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let collector = collector_with_users(dir.path());
    let mut secrets: Vec<String> = vec![
        ADMIN_PASSWORD.into(),
        OPERATOR_PASSWORD.into(),
        VIEWER_PASSWORD.into(),
    ];
    // Wrong passwords, one typed into the name field.
    let typo = "wrong-password-typed-5e1f";
    secrets.push(typo.into());
    assert_eq!(sign_in(&collector, "li", typo, None).0, 401);
    assert_eq!(sign_in(&collector, typo, typo, None).0, 401);
    let boss = session(&collector, "boss", ADMIN_PASSWORD);
    secrets.push(boss.id.clone());
    secrets.push(boss.csrf.clone());
    let as_admin = || with_session(&boss, Some(&boss.csrf));
    // A user made and reset over the API.
    let new_password = "new-user-password-c4d2";
    let reset_password = "reset-user-password-8a7b";
    secrets.extend([new_password.to_string(), reset_password.to_string()]);
    let (status, answer) = send(
        &collector,
        "POST",
        "/api/v1/users",
        as_admin(),
        Some(json!({ "name": "zhao", "role": "operator", "password": new_password })),
    );
    assert_eq!(status, 201, "{answer}");
    let zhao = session(&collector, "zhao", new_password);
    secrets.push(zhao.id.clone());
    let (status, answer) = send(
        &collector,
        "PATCH",
        "/api/v1/users/zhao",
        as_admin(),
        Some(json!({ "password": reset_password, "role": "viewer" })),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["role"], "viewer");
    // The reset ended zhao's session.
    assert_eq!(me(&collector, &zhao.id).0, 401);
    let zhao = session(&collector, "zhao", reset_password);
    secrets.push(zhao.id.clone());
    // API tokens: used, listed (without the secret), revoked.
    let token = api_token(&collector, &boss, Some("operator"));
    secrets.push(token.clone());
    assert_eq!(
        send(
            &collector,
            "POST",
            "/api/v1/probe",
            with_bearer(&token),
            Some(json!({}))
        )
        .0,
        202
    );
    let (status, listed) = send(&collector, "GET", "/api/v1/users", as_admin(), None);
    assert_eq!(status, 200);
    assert!(!listed.to_string().contains(&token));
    assert!(!listed.to_string().contains("argon2"));
    let id = listed["tokens"][0]["id"].as_i64().unwrap();
    let (status, _) = send(
        &collector,
        "DELETE",
        &format!("/api/v1/users/boss/tokens/{id}"),
        as_admin(),
        None,
    );
    assert_eq!(status, 204);
    assert_eq!(
        send(
            &collector,
            "POST",
            "/api/v1/probe",
            with_bearer(&token),
            Some(json!({}))
        )
        .0,
        401
    );
    // The CLI says nothing of the password either.
    let (ok, text) = user_command(
        &collector,
        &["reset", "wang"],
        Some("cli-reset-password-3c3c"),
    );
    assert!(ok && !text.contains("cli-reset-password-3c3c"), "{text}");
    secrets.push("cli-reset-password-3c3c".into());

    let log = collector.process.log();
    assert!(log.contains("A user signed in."), "{log}");
    assert!(log.contains("A sign-in failed"), "{log}");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log holds {secret:?}:\n{log}"
        );
    }
    // Nor is any password stored in the clear: only argon2id hashes.
    // The database and its write-ahead log.
    let mut database = Vec::new();
    for file in ["state.sqlite3", "state.sqlite3-wal"] {
        database.extend(
            std::fs::read(dir.path().join("collector-data").join(file)).unwrap_or_default(),
        );
    }
    let database = String::from_utf8_lossy(&database);
    for secret in &secrets {
        assert!(
            !database.contains(secret.as_str()),
            "the database holds {secret:?}"
        );
    }
    assert!(database.contains("$argon2id$v=19$"));
}
