//! The `[alerts]` section of the collector's config: receivers, routes, the default receiver
//! and the delivery timing. Validated with the rest of the config, so a bad route stops the
//! collector at start with an error naming it. Secrets (robot URLs with tokens, signing keys,
//! SMTP passwords) come from environment variables or files and are resolved when the notifier
//! starts; they are never logged (see [`Secret`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::matchers::Matchers;

/// Most receivers and routes: their names are metric label values.
pub const RECEIVERS_MAX: usize = 64;
pub const ROUTES_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// The dashboard messages link to: `<dashboard_url>/#/terminal/<id>`.
    pub dashboard_url: String,
    /// Receiver of the findings no route matches; none: they are not sent.
    pub default_receiver: Option<String>,
    /// Defaults of every route (and of the default receiver).
    pub group_by: Vec<GroupLabel>,
    pub group_wait_seconds: u64,
    pub group_interval_seconds: u64,
    pub repeat_interval_seconds: u64,
    /// A notification not delivered within this long is given up (`expired`).
    pub expire_after_seconds: u64,
    /// Retry backoff: doubles from the first to the cap, with jitter.
    pub retry_initial_seconds: u64,
    pub retry_max_seconds: u64,
    /// One delivery attempt may take this long.
    pub request_timeout_seconds: u64,
    /// Delivered, failed and expired notifications kept for the API (oldest dropped).
    pub keep_notifications: usize,
    pub receivers: Vec<ReceiverConfig>,
    pub routes: Vec<RouteConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            dashboard_url: "http://127.0.0.1:8080".into(),
            default_receiver: None,
            group_by: vec![GroupLabel::Code, GroupLabel::Region],
            group_wait_seconds: 5,
            group_interval_seconds: 15,
            repeat_interval_seconds: 14_400,
            expire_after_seconds: 86_400,
            retry_initial_seconds: 2,
            retry_max_seconds: 300,
            request_timeout_seconds: 10,
            keep_notifications: 10_000,
            receivers: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// What a group key is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupLabel {
    Code,
    Category,
    Party,
    Severity,
    Terminal,
    Region,
    Carrier,
    Model,
    Merchant,
}

impl GroupLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupLabel::Code => "code",
            GroupLabel::Category => "category",
            GroupLabel::Party => "party",
            GroupLabel::Severity => "severity",
            GroupLabel::Terminal => "terminal",
            GroupLabel::Region => "region",
            GroupLabel::Carrier => "carrier",
            GroupLabel::Model => "model",
            GroupLabel::Merchant => "merchant",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Language {
    #[default]
    #[serde(rename = "en")]
    En,
    #[serde(rename = "zh-CN")]
    ZhCn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    Webhook,
    Alertmanager,
    Dingtalk,
    Wecom,
    Feishu,
    Email,
}

impl ReceiverKind {
    /// The robots allow about 20 messages a minute per robot (DingTalk, WeCom and Feishu
    /// document 20/min); the others take what the network does.
    pub fn default_messages_per_minute(self) -> u32 {
        match self {
            ReceiverKind::Dingtalk | ReceiverKind::Wecom | ReceiverKind::Feishu => 20,
            ReceiverKind::Webhook | ReceiverKind::Alertmanager | ReceiverKind::Email => 600,
        }
    }
}

/// A value that may be a secret: written in the config (`"…"`), or read from an environment
/// variable (`{ env = "NAME" }`) or a file (`{ file = "path" }`, relative to `data_dir`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretSource {
    Inline(String),
    Env { env: String },
    File { file: PathBuf },
}

/// A resolved secret. Its `Debug` hides the value, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(***)")
    }
}

impl SecretSource {
    /// Reads the value; the error names the variable or file, never the value.
    pub fn resolve(&self, data_dir: &std::path::Path) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Inline(value) => value.clone(),
            SecretSource::Env { env } => {
                std::env::var(env).map_err(|_| format!("environment variable {env} is not set"))?
            }
            SecretSource::File { file } => {
                let path = if file.is_absolute() {
                    file.clone()
                } else {
                    data_dir.join(file)
                };
                std::fs::read_to_string(&path)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))?
            }
        };
        let value = value.trim();
        if value.is_empty() {
            return Err("is empty".into());
        }
        Ok(Secret::new(value))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a test.
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Names the receiver in routes, the API and metrics: 1 to 64 of A-Z a-z 0-9 _ - .
    pub name: String,
    pub kind: ReceiverKind,
    /// The language of its messages: `en` or `zh-CN`.
    #[serde(default)]
    pub language: Language,
    /// Where to POST (webhook, alertmanager's base URL, the robots' webhook URLs, which hold
    /// their access token: prefer `{ env = … }`).
    #[serde(default)]
    pub url: Option<SecretSource>,
    /// Signing key: the webhook's HMAC key, DingTalk's and Feishu's "sign" secrets. From an
    /// environment variable or a file only.
    #[serde(default)]
    pub secret: Option<SecretSource>,
    /// Rate limit; the kind's documented limit by default.
    #[serde(default)]
    pub messages_per_minute: Option<u32>,
    /// Email: the SMTP server as `host:port`.
    #[serde(default)]
    pub smtp_server: Option<String>,
    #[serde(default)]
    pub smtp_tls: SmtpTls,
    #[serde(default)]
    pub smtp_username: Option<String>,
    /// From an environment variable or a file only.
    #[serde(default)]
    pub smtp_password: Option<SecretSource>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
}

impl ReceiverConfig {
    pub fn messages_per_minute(&self) -> u32 {
        self.messages_per_minute
            .unwrap_or_else(|| self.kind.default_messages_per_minute())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Names the route in errors and logs.
    pub name: String,
    pub receiver: String,
    /// Which findings it takes; none: every finding.
    #[serde(default, rename = "match")]
    pub matchers: Matchers,
    /// Also try the routes after this one when it matches (default: the first match wins).
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Overrides of the `[alerts]` defaults.
    #[serde(default)]
    pub group_by: Option<Vec<GroupLabel>>,
    #[serde(default)]
    pub group_wait_seconds: Option<u64>,
    #[serde(default)]
    pub group_interval_seconds: Option<u64>,
    #[serde(default)]
    pub repeat_interval_seconds: Option<u64>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl AlertsConfig {
    /// The error names the key (`alerts.routes[2] "carrier-x"`) and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: String, problem: &str| Err((key, problem.to_string()));
        if !(self.dashboard_url.starts_with("http://")
            || self.dashboard_url.starts_with("https://"))
        {
            return fail(
                "alerts.dashboard_url".into(),
                "must start with http:// or https://",
            );
        }
        for (key, value) in [
            ("group_interval_seconds", self.group_interval_seconds),
            ("repeat_interval_seconds", self.repeat_interval_seconds),
            ("expire_after_seconds", self.expire_after_seconds),
            ("retry_initial_seconds", self.retry_initial_seconds),
            ("retry_max_seconds", self.retry_max_seconds),
            ("request_timeout_seconds", self.request_timeout_seconds),
        ] {
            if value == 0 {
                return fail(format!("alerts.{key}"), "must be at least 1");
            }
        }
        if self.retry_max_seconds < self.retry_initial_seconds {
            return fail(
                "alerts.retry_max_seconds".into(),
                "must be at least retry_initial_seconds",
            );
        }
        if self.receivers.len() > RECEIVERS_MAX {
            return fail(
                "alerts.receivers".into(),
                &format!("at most {RECEIVERS_MAX} receivers"),
            );
        }
        if self.routes.len() > ROUTES_MAX {
            return fail(
                "alerts.routes".into(),
                &format!("at most {ROUTES_MAX} routes"),
            );
        }
        for (index, receiver) in self.receivers.iter().enumerate() {
            let key = format!("alerts.receivers[{index}] {:?}", receiver.name);
            if let Err(problem) = validate_receiver(receiver) {
                return Err((key, problem));
            }
            if self.receivers[..index]
                .iter()
                .any(|other| other.name == receiver.name)
            {
                return fail(key, "the name is used twice");
            }
        }
        let known = |name: &str| self.receivers.iter().any(|receiver| receiver.name == name);
        if let Some(name) = &self.default_receiver {
            if !known(name) {
                return fail(
                    "alerts.default_receiver".into(),
                    &format!("no receiver is named {name:?}"),
                );
            }
        }
        for (index, route) in self.routes.iter().enumerate() {
            let key = format!("alerts.routes[{index}] {:?}", route.name);
            if !valid_name(&route.name) {
                return fail(key, "name must be 1 to 64 of A-Z a-z 0-9 _ - .");
            }
            if !known(&route.receiver) {
                return Err((key, format!("no receiver is named {:?}", route.receiver)));
            }
            if let Err((field, problem)) = route.matchers.validate() {
                return Err((format!("{key} match.{field}"), problem));
            }
            for (field, value) in [
                ("group_interval_seconds", route.group_interval_seconds),
                ("repeat_interval_seconds", route.repeat_interval_seconds),
            ] {
                if value == Some(0) {
                    return Err((format!("{key} {field}"), "must be at least 1".into()));
                }
            }
        }
        Ok(())
    }
}

fn validate_receiver(receiver: &ReceiverConfig) -> Result<(), String> {
    if !valid_name(&receiver.name) {
        return Err("name must be 1 to 64 of A-Z a-z 0-9 _ - .".into());
    }
    if receiver.messages_per_minute == Some(0) {
        return Err("messages_per_minute must be at least 1".into());
    }
    for (field, source) in [
        ("secret", &receiver.secret),
        ("smtp_password", &receiver.smtp_password),
    ] {
        if matches!(source, Some(SecretSource::Inline(_))) {
            return Err(format!(
                "{field} must come from {{ env = \"NAME\" }} or {{ file = \"path\" }}, not the config file"
            ));
        }
    }
    let email = receiver.kind == ReceiverKind::Email;
    if email {
        let server = receiver.smtp_server.as_deref().unwrap_or_default();
        let port_ok = server
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err("smtp_server must be host:port".into());
        }
        if receiver
            .from
            .as_deref()
            .is_none_or(|from| !from.contains('@'))
        {
            return Err("from must be an email address".into());
        }
        if receiver.to.is_empty() || receiver.to.iter().any(|to| !to.contains('@')) {
            return Err("to must list at least one email address".into());
        }
        if receiver.url.is_some() {
            return Err("url does not apply to email".into());
        }
    } else {
        match &receiver.url {
            None => return Err("url is required".into()),
            Some(SecretSource::Inline(url))
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                return Err("url must start with http:// or https://".into())
            }
            Some(_) => {}
        }
    }
    let signs = matches!(
        receiver.kind,
        ReceiverKind::Webhook | ReceiverKind::Dingtalk | ReceiverKind::Feishu
    );
    if receiver.kind == ReceiverKind::Webhook && receiver.secret.is_none() {
        return Err("secret is required: the webhook's body is signed with it".into());
    }
    if receiver.secret.is_some() && !signs {
        return Err("secret applies to webhook, dingtalk and feishu only".into());
    }
    Ok(())
}
