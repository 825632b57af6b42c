//! OpenID Connect sign-in with the real collector binary and a fake provider this test runs on
//! loopback: discovery, a JWKS with an RSA key made here, an authorization endpoint that sends
//! the browser back with a code, and a token endpoint that checks the client secret and the PKCE
//! verifier and returns an ID token signed (RS256) with the nonce the authorization request
//! carried, and a key rotation. Driven with reqwest, no browser: the sign-in page's button in English and Chinese,
//! the session and the mapped role at /api/v1/me; and refused, with no session: a wrong or
//! replayed state, a callback in another browser, a bad signature, a wrong audience, an expired
//! token, a wrong nonce, and a user whose claim maps to no role.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers as well as tests: a failed unwrap is the test failing"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use posmon_e2e_tests::{free_port, Collector};
use reqwest::blocking::{Client, Response};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "posmon-dashboard";
const CLIENT_SECRET: &str = "client-secret-5d1e9a7c";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the fake provider puts into (or does to) the next ID token.
#[derive(Clone)]
struct Behaviour {
    username: String,
    groups: Vec<String>,
    audience: String,
    expired: bool,
    wrong_nonce: bool,
    bad_signature: bool,
    /// Sign with the second key, which the JWKS holds only once `rotated`.
    second_key: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            username: "li".to_string(),
            groups: vec!["staff".to_string(), "posmon-ops".to_string()],
            audience: CLIENT_ID.to_string(),
            expired: false,
            wrong_nonce: false,
            bad_signature: false,
            second_key: false,
        }
    }
}

/// A code the authorization endpoint gave: the nonce and PKCE challenge it came with.
struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

struct Provider {
    url: String,
    behaviour: Arc<Mutex<Behaviour>>,
    rotated: Arc<Mutex<bool>>,
    /// Token requests answered with an ID token.
    tokens_issued: Arc<Mutex<u32>>,
}

struct ProviderState {
    issuer: String,
    key: RsaPrivateKey,
    second_key: RsaPrivateKey,
    rotated: Arc<Mutex<bool>>,
    behaviour: Arc<Mutex<Behaviour>>,
    grants: Mutex<HashMap<String, Grant>>,
    next_code: Mutex<u32>,
    tokens_issued: Arc<Mutex<u32>>,
}

struct HttpRequest {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Option<HttpRequest> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|length| length.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Some(HttpRequest {
        method,
        path: path.to_string(),
        query: serde_urlencoded_pairs(query),
        headers,
        body,
    })
}

fn serde_urlencoded_pairs(text: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{text}"))
        .unwrap()
        .query_pairs()
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

fn answer(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &str) {
    let mut text = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    let _ = stream.write_all(text.as_bytes());
}

impl ProviderState {
    fn sign(&self, claims: &Value, bad_signature: bool, second_key: bool) -> String {
        let (key, kid) = if second_key {
            (&self.second_key, "test-key-2")
        } else {
            (&self.key, "test-key-1")
        };
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signature = SigningKey::<Sha256>::new(key.clone())
            .sign(signed.as_bytes())
            .to_vec();
        if bad_signature {
            signature[10] ^= 0x01;
        }
        format!("{signed}.{}", b64(&signature))
    }

    fn handle(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let Some(request) = read_request(&stream) else {
            return;
        };
        let json_answer = |stream: &mut TcpStream, status: &str, body: Value| {
            answer(
                stream,
                status,
                &[("Content-Type", "application/json".to_string())],
                &body.to_string(),
            );
        };
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/.well-known/openid-configuration") => json_answer(
                &mut stream,
                "200 OK",
                json!({
                    "issuer": self.issuer,
                    "authorization_endpoint": format!("{}/authorize", self.issuer),
                    "token_endpoint": format!("{}/token", self.issuer),
                    "jwks_uri": format!("{}/jwks", self.issuer),
                    "response_types_supported": ["code"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                }),
            ),
            ("GET", "/jwks") => {
                let jwk = |key: &RsaPrivateKey, kid: &str| {
                    let public = key.to_public_key();
                    json!({
                        "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                        "n": b64(&public.n().to_bytes_be()),
                        "e": b64(&public.e().to_bytes_be()),
                    })
                };
                // A key of a kind the collector does not use is skipped.
                let mut keys = vec![
                    json!({"kty": "oct", "kid": "ignored", "k": "c2VjcmV0"}),
                    jwk(&self.key, "test-key-1"),
                ];
                if *self.rotated.lock().unwrap() {
                    keys.push(jwk(&self.second_key, "test-key-2"));
                }
                json_answer(&mut stream, "200 OK", json!({ "keys": keys }));
            }
            ("GET", "/authorize") => {
                let q = &request.query;
                assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
                assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
                assert_eq!(
                    q.get("code_challenge_method").map(String::as_str),
                    Some("S256")
                );
                assert!(q["scope"].split(' ').any(|scope| scope == "openid"));
                let code = {
                    let mut next = self.next_code.lock().unwrap();
                    *next += 1;
                    format!("code-{next}-9f8e7d")
                };
                self.grants.lock().unwrap().insert(
                    code.clone(),
                    Grant {
                        nonce: q["nonce"].clone(),
                        challenge: q["code_challenge"].clone(),
                        redirect_uri: q["redirect_uri"].clone(),
                    },
                );
                let mut back = reqwest::Url::parse(&q["redirect_uri"]).unwrap();
                back.query_pairs_mut()
                    .append_pair("code", &code)
                    .append_pair("state", &q["state"]);
                answer(
                    &mut stream,
                    "302 Found",
                    &[("Location", back.to_string())],
                    "",
                );
            }
            ("POST", "/token") => {
                let expected = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
                );
                if request.headers.get("authorization") != Some(&expected) {
                    json_answer(
                        &mut stream,
                        "401 Unauthorized",
                        json!({"error": "invalid_client"}),
                    );
                    return;
                }
                let form = serde_urlencoded_pairs(&String::from_utf8_lossy(&request.body));
                let grant = self.grants.lock().unwrap().remove(&form["code"]);
                let Some(grant) = grant else {
                    json_answer(
                        &mut stream,
                        "400 Bad Request",
                        json!({"error": "invalid_grant"}),
                    );
                    return;
                };
                let verifier_ok = b64(&Sha256::digest(form["code_verifier"].as_bytes()))
                    == grant.challenge
                    && form["redirect_uri"] == grant.redirect_uri
                    && form["grant_type"] == "authorization_code";
                if !verifier_ok {
                    json_answer(
                        &mut stream,
                        "400 Bad Request",
                        json!({"error": "invalid_grant"}),
                    );
                    return;
                }
                let behaviour = self.behaviour.lock().unwrap().clone();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let (iat, exp) = if behaviour.expired {
                    (now - 7200, now - 3600)
                } else {
                    (now, now + 300)
                };
                let nonce = if behaviour.wrong_nonce {
                    "another-nonce".to_string()
                } else {
                    grant.nonce
                };
                let claims = json!({
                    "iss": self.issuer,
                    "sub": "8f14e45f-ceea-467f-a0e6-0d9e5c8a2f3b",
                    "aud": behaviour.audience,
                    "iat": iat,
                    "exp": exp,
                    "nonce": nonce,
                    "preferred_username": behaviour.username,
                    "groups": behaviour.groups,
                });
                let id_token = self.sign(&claims, behaviour.bad_signature, behaviour.second_key);
                *self.tokens_issued.lock().unwrap() += 1;
                json_answer(
                    &mut stream,
                    "200 OK",
                    json!({
                        "access_token": "access-token-not-used",
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "id_token": id_token,
                    }),
                );
            }
            _ => answer(&mut stream, "404 Not Found", &[], ""),
        }
    }
}

impl Provider {
    fn start() -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let second_key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let rotated = Arc::new(Mutex::new(false));
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let tokens_issued = Arc::new(Mutex::new(0));
        let state = Arc::new(ProviderState {
            issuer: url.clone(),
            key,
            second_key,
            rotated: Arc::clone(&rotated),
            behaviour: Arc::clone(&behaviour),
            grants: Mutex::new(HashMap::new()),
            next_code: Mutex::new(0),
            tokens_issued: Arc::clone(&tokens_issued),
        });
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let state = Arc::clone(&state);
                std::thread::spawn(move || state.handle(stream));
            }
        });
        Provider {
            url,
            behaviour,
            rotated,
            tokens_issued,
        }
    }

    fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }
}

/// A collector whose sign-in page offers the provider: `posmon-ops` maps to operator,
/// `posmon-admins` to admin, no default role.
fn collector(dir: &std::path::Path, provider: &Provider) -> Collector {
    let secret_file = dir.join("oidc-client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let port = free_port();
    let config = format!(
        "[web.oidc]\nissuer = {:?}\ndisplay_name = \"Test SSO\"\nclient_id = {CLIENT_ID:?}\n\
         client_secret_file = {:?}\nredirect_url = \"http://127.0.0.1:{port}/login/oidc/callback\"\n\
         role_claim = \"groups\"\n[web.oidc.roles]\nposmon-ops = \"operator\"\nposmon-admins = \"admin\"\n",
        provider.url,
        secret_file.display().to_string(),
    );
    Collector::start_at(dir, &config, &format!("127.0.0.1:{port}"))
}

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn cookie_value(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookie| {
            let value = cookie.strip_prefix(name)?.strip_prefix('=')?;
            let value = value.split(';').next()?;
            (!value.is_empty()).then(|| value.to_string())
        })
}

fn location(response: &Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location in {}", response.status()))
        .to_str()
        .unwrap()
        .to_string()
}

/// Starts a sign-in at the collector and goes through the provider: the callback URL the
/// provider sent the browser to, and the binding cookie the collector set.
fn to_callback(collector: &Collector) -> (String, String) {
    let http = client();
    let started = http
        .get(format!("{}/login/oidc?lang=en", collector.url))
        .send()
        .unwrap();
    assert_eq!(started.status(), 303, "{}", started.text().unwrap());
    let binding = cookie_value(&started, "posmon_oidc").unwrap();
    let authorize = location(&started);
    let back = http.get(&authorize).send().unwrap();
    assert_eq!(back.status(), 302);
    (location(&back), binding)
}

/// The callback, in the browser with `binding`: (status, session id if one was set, page).
fn callback(url: &str, binding: Option<&str>) -> (u16, Option<String>, String) {
    let mut request = client().get(url);
    if let Some(binding) = binding {
        request = request.header(COOKIE, format!("posmon_oidc={binding}"));
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let session = cookie_value(&response, "posmon_session");
    (status, session, response.text().unwrap())
}

fn me(collector: &Collector, session: &str) -> Value {
    let response = client()
        .get(format!("{}/api/v1/me", collector.url))
        .header(COOKIE, format!("posmon_session={session}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().unwrap()
}

#[test]
fn a_provider_user_signs_in_with_the_role_their_groups_map_to() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start();
    let collector = collector(dir.path(), &provider);
    let http = client();

    // The button, in both languages; reads are closed to anonymous requests.
    let page = http
        .get(format!("{}/login?lang=en", collector.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("Sign in with Test SSO"), "{page}");
    assert!(page.contains("href=\"/login/oidc?lang=en\""), "{page}");
    let page = http
        .get(format!("{}/login?lang=zh-CN", collector.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("使用 Test SSO 登录"), "{page}");
    let anonymous = http
        .get(format!("{}/api/v1/overview", collector.url))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let (url, binding) = to_callback(&collector);
    assert!(url.starts_with(&format!("{}/login/oidc/callback?", collector.url)));
    let (status, session, page) = callback(&url, Some(&binding));
    assert_eq!(status, 200, "{page}\n{}", collector.process.log());
    assert!(page.contains("url=/?lang=en"), "{page}");
    let session = session.unwrap();
    let me = me(&collector, &session);
    assert_eq!(me["name"], "oidc:li");
    assert_eq!(me["role"], "operator");
    assert_eq!(me["signed_in"], true);
    let csrf = me["csrf_token"].as_str().unwrap().to_string();
    assert_eq!(csrf.len(), 43);

    // The session is a session like any other: the CSRF token is required for a change, and an
    // operator may not do what an admin may.
    let missing_csrf = http
        .post(format!("{}/api/v1/logout", collector.url))
        .header(COOKIE, format!("posmon_session={session}"))
        .send()
        .unwrap();
    assert_eq!(missing_csrf.status(), 403);
    let users = http
        .get(format!("{}/api/v1/users", collector.url))
        .header(COOKIE, format!("posmon_session={session}"))
        .send()
        .unwrap();
    assert_eq!(users.status(), 403);
    // No local account: no API tokens.
    let token = http
        .post(format!("{}/api/v1/me/tokens", collector.url))
        .header(COOKIE, format!("posmon_session={session}"))
        .header("x-csrf-token", &csrf)
        .header("content-type", "application/json")
        .body("{\"label\":\"script\"}")
        .send()
        .unwrap();
    assert_eq!(token.status(), 403, "{}", token.text().unwrap());

    // The highest mapped group wins; a second sign-in gets a fresh session id.
    provider.behave(Behaviour {
        username: "zhang".to_string(),
        groups: vec!["posmon-ops".to_string(), "posmon-admins".to_string()],
        ..Behaviour::default()
    });
    let (url, binding) = to_callback(&collector);
    let (status, second, _) = callback(&url, Some(&binding));
    assert_eq!(status, 200);
    let second = second.unwrap();
    assert_ne!(second, session);
    let me_again = self::me(&collector, &second);
    assert_eq!(me_again["name"], "oidc:zhang");
    assert_eq!(me_again["role"], "admin");

    // The provider rotates its keys: a token signed with a key the cached JWKS lacks makes the
    // collector fetch the JWKS again (at most every 5 seconds).
    *provider.rotated.lock().unwrap() = true;
    provider.behave(Behaviour {
        second_key: true,
        ..Behaviour::default()
    });
    std::thread::sleep(Duration::from_millis(5500));
    let (url, binding) = to_callback(&collector);
    let (status, rotated_session, page) = callback(&url, Some(&binding));
    assert_eq!(status, 200, "after a key rotation: {page}");
    assert_eq!(
        self::me(&collector, &rotated_session.unwrap())["role"],
        "operator"
    );

    // Signing out ends the session.
    let out = http
        .post(format!("{}/api/v1/logout", collector.url))
        .header(COOKIE, format!("posmon_session={second}"))
        .header("x-csrf-token", me_again["csrf_token"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(out.status(), 204);
    let after = http
        .get(format!("{}/api/v1/me", collector.url))
        .header(COOKIE, format!("posmon_session={second}"))
        .send()
        .unwrap();
    assert_eq!(after.status(), 401);

    let log = collector.process.log();
    assert!(
        log.contains("A user signed in with OpenID Connect."),
        "{log}"
    );
    for secret in [CLIENT_SECRET, &session, &binding, "code-1-9f8e7d"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn forged_replayed_or_unmapped_sign_ins_are_refused_without_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start();
    let collector = collector(dir.path(), &provider);

    // A state the collector never gave.
    let (url, binding) = to_callback(&collector);
    let forged = url.replace("state=", "state=x");
    let (status, session, page) = callback(&forged, Some(&binding));
    assert_eq!((status, session), (400, None));
    assert!(page.contains("expired or was used already"), "{page}");
    // The real one still works once, then never again.
    let (status, session, _) = callback(&url, Some(&binding));
    assert_eq!(status, 200);
    assert!(session.is_some());
    let (status, session, page) = callback(&url, Some(&binding));
    assert_eq!((status, session), (400, None), "replayed: {page}");

    // The callback in a browser that did not start the sign-in (login CSRF).
    let (url, _) = to_callback(&collector);
    assert_eq!(callback(&url, None).1, None);
    let (url, _) = to_callback(&collector);
    let (status, session, _) = callback(&url, Some("another-browser"));
    assert_eq!((status, session), (400, None));

    let issued_before = *provider.tokens_issued.lock().unwrap();
    for (what, behaviour, expected_status, expected_text) in [
        (
            "bad signature",
            Behaviour {
                bad_signature: true,
                ..Behaviour::default()
            },
            401,
            "Signing in with the identity provider failed",
        ),
        (
            "wrong audience",
            Behaviour {
                audience: "another-client".to_string(),
                ..Behaviour::default()
            },
            401,
            "Signing in with the identity provider failed",
        ),
        (
            "expired",
            Behaviour {
                expired: true,
                ..Behaviour::default()
            },
            401,
            "Signing in with the identity provider failed",
        ),
        (
            "wrong nonce",
            Behaviour {
                wrong_nonce: true,
                ..Behaviour::default()
            },
            401,
            "Signing in with the identity provider failed",
        ),
        (
            "no mapped group",
            Behaviour {
                groups: vec!["staff".to_string()],
                ..Behaviour::default()
            },
            403,
            "has no role in posmon",
        ),
    ] {
        provider.behave(behaviour);
        let (url, binding) = to_callback(&collector);
        let (status, session, page) = callback(&url, Some(&binding));
        assert_eq!(status, expected_status, "{what}: {page}");
        assert_eq!(session, None, "{what}");
        assert!(page.contains(expected_text), "{what}: {page}");
        assert!(
            page.contains("id=\"login-form\""),
            "{what}: the sign-in page"
        );
    }
    // Each of them did reach the token endpoint: the refusals are the collector's checks.
    assert_eq!(*provider.tokens_issued.lock().unwrap(), issued_before + 5);

    // The provider's own refusal.
    let (url, binding) = to_callback(&collector);
    let state = reqwest::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(key, _)| key == "state")
        .map(|(_, value)| value.into_owned())
        .unwrap();
    let refused = format!(
        "{}/login/oidc/callback?error=access_denied&state={state}",
        collector.url
    );
    let (status, session, page) = callback(&refused, Some(&binding));
    assert_eq!((status, session), (403, None));
    assert!(page.contains("refused the sign-in"), "{page}");
    // ... which used the state up.
    provider.behave(Behaviour::default());
    assert_eq!(callback(&url, Some(&binding)).0, 400);

    let log = collector.process.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains(CLIENT_SECRET), "{log}");
}
