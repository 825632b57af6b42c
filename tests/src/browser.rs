//! A real headless Chromium driven over the WebDriver protocol (chromedriver), for the
//! dashboard's browser tests: open pages, click, type, answer prompts, read the console (to
//! catch Content-Security-Policy violations) and keep screenshots in `test-artifacts/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::{find_program, program, wait_for};

/// The names Chromium is installed under.
pub const CHROMIUM: [&str; 2] = ["chromium", "chromium-browser"];

/// The W3C WebDriver element reference key.
pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where screenshots are kept.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-artifacts/dashboard");
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{error}"));
    dir
}

/// A chromedriver process and one browser session, both ended when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start(chromedriver: &Path, chromium: &Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_else(|error| panic!("{error}"));
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start chromedriver: {error}"));
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|error| panic!("{error}"));
        let ready = wait_for(Duration::from_secs(20), || {
            client
                .get(format!("{base}/status"))
                .send()
                .ok()
                .and_then(|response| response.json::<Value>().ok())
                .filter(|status| status["value"]["ready"] == true)
        });
        assert!(ready.is_some(), "chromedriver did not start");
        let profile = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--lang=en-US".into(),
            "--window-size=1600,1100".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium.display().to_string(), "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        } } });
        let response: Value = client
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .and_then(|response| response.json())
            .unwrap_or_else(|error| panic!("new session: {error}"));
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {response}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            client,
            _profile: profile,
        }
    }

    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.client.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request
            .send()
            .and_then(|response| response.json())
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        if response["value"]["error"].is_string() {
            panic!("{path}: {}", response["value"]);
        }
        response["value"].clone()
    }

    pub fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    pub fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// The element matching `selector`, waiting up to 20 s for it.
    pub fn element(&self, selector: &str) -> String {
        let url = format!("{}/session/{}/element", self.base, self.session);
        let found = wait_for(Duration::from_secs(20), || {
            let response: Value = self
                .client
                .post(&url)
                .json(&json!({ "using": "css selector", "value": selector }))
                .send()
                .and_then(|response| response.json())
                .ok()?;
            response["value"][ELEMENT].as_str().map(str::to_string)
        });
        found.unwrap_or_else(|| panic!("no element {selector} on the page"))
    }

    /// Answers the page's `prompt()` with `text`.
    pub fn answer_prompt(&self, text: &str) {
        let open = wait_for(Duration::from_secs(20), || {
            let url = format!("{}/session/{}/alert/text", self.base, self.session);
            let response: Value = self.client.get(&url).send().ok()?.json().ok()?;
            response["value"].is_string().then_some(())
        });
        assert!(open.is_some(), "no prompt opened");
        self.call(
            reqwest::Method::POST,
            "/alert/text",
            Some(json!({ "text": text })),
        );
        self.call(reqwest::Method::POST, "/alert/accept", Some(json!({})));
    }

    pub fn click(&self, selector: &str) {
        let element = self.element(selector);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Types `text` into the field matching `selector`.
    pub fn type_text(&self, selector: &str, text: &str) {
        let element = self.element(selector);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn text(&self, selector: &str) -> String {
        let element = self.element(selector);
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Waits up to 30 s for `script` (returning a boolean) to be true.
    pub fn wait_until(&self, what: &str, script: &str) {
        let done = wait_for(Duration::from_secs(30), || {
            (self.script(script) == Value::Bool(true)).then_some(())
        });
        assert!(done.is_some(), "timed out waiting for {what}");
    }

    /// The browser console's messages since the last call (chromedriver's log endpoint).
    pub fn console(&self) -> Vec<String> {
        let entries = self.call(
            reqwest::Method::POST,
            "/se/log",
            Some(json!({ "type": "browser" })),
        );
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails on a Content-Security-Policy violation reported in the console.
    pub fn assert_no_csp_violation(&self, when: &str) {
        let violations: Vec<String> = self
            .console()
            .into_iter()
            .filter(|message| message.contains("Content Security Policy"))
            .collect();
        assert!(violations.is_empty(), "{when}: {violations:#?}");
    }

    pub fn screenshot(&self, name: &str) {
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(artifacts().join(format!("{name}.png")), png)
            .unwrap_or_else(|error| panic!("{error}"));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .client
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver and Chromium, which the test declared it needs.
pub fn programs() -> (PathBuf, PathBuf) {
    let chromium = CHROMIUM
        .iter()
        .find_map(|name| find_program(name))
        .unwrap_or_else(|| panic!("none of {CHROMIUM:?} is installed"));
    (program("chromedriver"), chromium)
}
