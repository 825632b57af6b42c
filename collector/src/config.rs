//! The collector's configuration: one TOML file, overridden by environment variables and flags
//! (see `cli.rs`), merged into one validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

// The `[diagnosis]` section and the version policy are the rules' own types.
pub use posmon_diagnosis::readiness::PaymentRoles;
pub use posmon_diagnosis::thresholds::Thresholds;
pub use posmon_diagnosis::version_policy::{validate_version_policy, VersionRule};

/// The commented default configuration, printed by `posmon-collector print-default-config`.
/// A test checks that it parses to exactly [`Config::default`].
pub const DEFAULT_CONFIG: &str = include_str!("../examples/collector.toml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API, dashboard and metrics listen on.
    pub listen: SocketAddr,
    /// Directory for the fleet secret and (later) the state database.
    pub data_dir: PathBuf,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub diagnosis: Thresholds,
    /// What a payment needs (targets, peripherals, processes): what makes a terminal
    /// `cannot_pay`, and a signal critical.
    pub readiness: PaymentRoles,
    pub state: StateConfig,
    /// Report datagrams (UDP) beside the HTTP listener (`datagram.rs`).
    pub datagram: crate::datagram::DatagramConfig,
    /// The initial version policy; once the collector has stored one (`PUT
    /// /api/v1/policy/versions`), the stored one applies.
    pub version_policy: Vec<VersionRule>,
    pub metrics: MetricsConfig,
    pub tls: TlsConfig,
    /// Receivers, routes and delivery of alert notifications.
    pub alerts: crate::alert::config::AlertsConfig,
    pub web: WebConfig,
    /// Fleet control: the agents' long-poll and probe requests (`control/`).
    pub control: ControlConfig,
    /// History that lasts (`history/`): retention and the writer's queue.
    pub history: crate::history::HistoryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("posmon-data"),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            diagnosis: Thresholds::default(),
            readiness: PaymentRoles::default(),
            state: StateConfig::default(),
            datagram: crate::datagram::DatagramConfig::default(),
            version_policy: Vec::new(),
            metrics: MetricsConfig::default(),
            tls: TlsConfig::default(),
            alerts: crate::alert::config::AlertsConfig::default(),
            web: WebConfig::default(),
            control: ControlConfig::default(),
            history: crate::history::HistoryConfig::default(),
        }
    }
}

/// Fleet control (`[control]`): the agents' control long-poll and probe requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The longest a control long-poll is held before it is answered empty.
    pub max_hold_seconds: u64,
    /// Long-polls held at once over all terminals; beyond, a poll is answered at once with
    /// `retry_after_seconds`.
    pub max_waiting: u64,
    /// The `retry_after_seconds` of a poll answered at once because `max_waiting` are held.
    pub poll_retry_seconds: u32,
    /// The most terminals one `POST /api/v1/probe` may ask.
    pub max_probe_batch: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            max_hold_seconds: 1800,
            max_waiting: 10_000,
            poll_retry_seconds: 300,
            max_probe_batch: 500,
        }
    }
}

impl ControlConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.max_hold_seconds) {
            return invalid("control.max_hold_seconds", "must be between 1 and 86400");
        }
        if !(1..=10_000_000).contains(&self.max_waiting) {
            return invalid("control.max_waiting", "must be between 1 and 10000000");
        }
        if !(1..=86_400).contains(&self.poll_retry_seconds) {
            return invalid("control.poll_retry_seconds", "must be between 1 and 86400");
        }
        if !(1..=100_000).contains(&self.max_probe_batch) {
            return invalid("control.max_probe_batch", "must be between 1 and 100000");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Id of the current fleet key: it prefixes every terminal token.
    pub key_id: String,
    /// File holding the current fleet secret, relative to `data_dir` unless absolute.
    pub secret_file: PathBuf,
    /// Keys still accepted while terminals move to the current one.
    pub previous_keys: Vec<PreviousKey>,
    /// File holding the admin token (a service credential acting as the admin `admin-token`),
    /// relative to `data_dir` unless absolute. `POSMON_ADMIN_TOKEN` overrides it.
    pub admin_token_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            key_id: "k1".into(),
            secret_file: PathBuf::from("fleet-secret"),
            previous_keys: Vec::new(),
            admin_token_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousKey {
    pub id: String,
    pub secret_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most reports accepted in one request.
    pub max_reports_per_request: usize,
    /// Most findings kept in the closed-findings history (oldest dropped first).
    pub max_history_findings: usize,
    /// Report requests processed at once; more are answered 503 with `Retry-After`.
    pub max_concurrent_ingest: usize,
    /// The `Retry-After` an overloaded collector answers with, in seconds (agents add jitter).
    pub overload_retry_after_seconds: u64,
    /// Report requests without the terminal header (old agents, or nobody yet known) processed
    /// at once: a pool of their own, so they never take the slots of identified agents.
    pub max_concurrent_unidentified_ingest: usize,
    /// Report requests of one terminal in flight at once; more are answered 429.
    pub max_concurrent_ingest_per_terminal: usize,
    /// Report requests one terminal may send per minute on average (a token bucket).
    pub terminal_requests_per_minute: u32,
    /// And at once after a quiet spell: the bucket's size.
    pub terminal_request_burst: u32,
    /// A report body not received whole within this is answered 408 and its slot freed.
    pub body_read_timeout_seconds: u64,
    /// Connections open at once; more are accepted and closed at once (clamped below the
    /// usable open-file limit).
    pub max_connections: usize,
    /// A connection must send complete request headers within this, including a kept-alive
    /// connection waiting for its next request over HTTP/1.1.
    pub header_read_timeout_seconds: u64,
    /// A connection with no request in flight for this long is closed (HTTP/2 between requests).
    pub idle_timeout_seconds: u64,
    /// A TLS handshake must complete within this.
    pub tls_handshake_timeout_seconds: u64,
    /// A report observed longer ago than this (by the collector's clock) is refused: more than
    /// an agent's spool keeps (`spool_max_age_seconds`, 7 days by default).
    pub max_report_age_seconds: u64,
    /// A report observed further ahead of the collector's clock than this is refused; a
    /// terminal ahead by less is accepted (and its clock found skewed).
    pub max_clock_ahead_seconds: u64,
    /// Most closed findings kept per terminal (and for the fleet-wide findings), in memory and
    /// in the database: a terminal whose findings flap drops only its own oldest.
    pub max_history_findings_per_terminal: usize,
    /// Most open findings per terminal; beyond, its new problems are not tracked until some
    /// close (counted in `posmon_findings_capped_signals_total`).
    pub max_open_findings_per_terminal: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 1024 * 1024,
            max_reports_per_request: 100,
            max_history_findings: 100_000,
            max_concurrent_ingest: 512,
            overload_retry_after_seconds: 10,
            max_concurrent_unidentified_ingest: 32,
            max_concurrent_ingest_per_terminal: 2,
            terminal_requests_per_minute: 60,
            terminal_request_burst: 60,
            body_read_timeout_seconds: 10,
            max_connections: 10_000,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 75,
            tls_handshake_timeout_seconds: 10,
            max_report_age_seconds: 8 * 86_400,
            max_clock_ahead_seconds: 86_400,
            max_history_findings_per_terminal: 200,
            max_open_findings_per_terminal: 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Latency points kept in memory per terminal and target for charts (oldest dropped).
    /// Each costs 8 bytes per target per terminal.
    pub latency_points_per_target: usize,
    /// Acknowledge a report only once it is written to the database (a group commit), so that
    /// a crash loses no acknowledged report. Off: acknowledged from memory, written within
    /// about a second.
    pub durable_acknowledgements: bool,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            latency_points_per_target: 30,
            durable_acknowledgements: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Export series per terminal (`terminal_id` label). A cardinality risk: one series per
    /// terminal per metric. Leave off for large fleets.
    pub per_terminal_series: bool,
    /// Most distinct values of a label (region, model, target) exported; further values are
    /// exported as `other`, so a typo in a terminal's labels cannot blow up the series.
    pub max_label_values: usize,
    /// Most of those values one terminal may bring in, per label; its further new values are
    /// exported as `other`, so one terminal cannot take every slot.
    pub max_label_values_per_terminal: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            per_terminal_series: false,
            max_label_values: 200,
            max_label_values_per_terminal: 8,
        }
    }
}

/// HTTPS on the collector's own listener (rustls). Off by default: plain HTTP, for a TLS proxy
/// in front.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. With `key_file`, turns HTTPS on.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the leaf certificate.
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle: when set, every client must present a certificate it signed.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The certificate and key files, when HTTPS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }
}

/// The built-in dashboard: who may read it and the fleet trend it draws.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// File holding the viewer token (at least 16 characters), relative to `data_dir` unless
    /// absolute. `POSMON_VIEWER_TOKEN` overrides it.
    pub viewer_token_file: Option<PathBuf>,
    /// User name for HTTP basic auth, with `viewer_password_file`.
    pub viewer_user: Option<String>,
    /// File holding the basic-auth password, relative to `data_dir` unless absolute.
    pub viewer_password_file: Option<PathBuf>,
    /// Whether `/metrics` also requires the viewer credentials when they are configured.
    pub protect_metrics: bool,
    /// How often the fleet trend takes a point.
    pub trend_interval_seconds: u64,
    /// Points of the fleet trend kept in memory (oldest dropped).
    pub trend_points: usize,
    /// How often the dashboard polls for fresh data.
    pub refresh_interval_seconds: u64,
    /// How long a sign-in session lasts at most.
    pub session_max_age_seconds: u64,
    /// How long a session lasts without a request.
    pub session_idle_timeout_seconds: u64,
    /// OpenID Connect sign-in (`[web.oidc]`); absent: off.
    pub oidc: Option<OidcConfig>,
}

/// OpenID Connect sign-in (`[web.oidc]`, `oidc.rs`): the provider, this collector as its client,
/// and how the ID token's claims map to a user name and a role.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (`https://`; `http://` only on 127.0.0.1, ::1 or localhost).
    /// Its discovery document is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// What the sign-in page's button names ("Sign in with …").
    #[serde(default = "default_oidc_display_name")]
    pub display_name: String,
    pub client_id: String,
    /// File holding the client secret, relative to `data_dir` unless absolute.
    pub client_secret_file: PathBuf,
    /// This collector's public `…/login/oidc/callback`, as registered at the provider.
    pub redirect_url: String,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// The claim holding the user's groups or roles (a string or an array of strings); a dotted
    /// path reaches into objects (`realm_access.roles`).
    #[serde(default = "default_oidc_role_claim")]
    pub role_claim: String,
    /// Claim values and the role each gives; the highest one found wins.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, crate::http::auth::Role>,
    /// The role of a user whose claim maps to none; absent: such a user is refused.
    #[serde(default)]
    pub default_role: Option<crate::http::auth::Role>,
    /// The claim naming the user (falling back to `sub`).
    #[serde(default = "default_oidc_username_claim")]
    pub username_claim: String,
}

fn default_oidc_display_name() -> String {
    "OpenID Connect".to_string()
}

fn default_oidc_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}

fn default_oidc_role_claim() -> String {
    "groups".to_string()
}

fn default_oidc_username_claim() -> String {
    "preferred_username".to_string()
}

/// Whether `text` is a URL the collector may talk to the provider at (or send a browser to):
/// `https://`, or `http://` on the loopback (tests, a provider on the same host).
pub fn provider_url_allowed(text: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(text) else {
        return false;
    };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
        _ => false,
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            viewer_token_file: None,
            viewer_user: None,
            viewer_password_file: None,
            protect_metrics: false,
            trend_interval_seconds: 60,
            trend_points: 1440,
            refresh_interval_seconds: 5,
            session_max_age_seconds: 86_400,
            session_idle_timeout_seconds: 7200,
            oidc: None,
        }
    }
}

/// A configuration that cannot be used, naming the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key}: {problem}")]
    Invalid { key: String, problem: String },
}

/// A config error naming `key`.
fn invalid<T>(key: &str, problem: &str) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.to_string(),
    })
}

fn validate_oidc(oidc: &OidcConfig) -> Result<(), ConfigError> {
    let invalid = |key: &str, problem: &str| {
        Err(ConfigError::Invalid {
            key: format!("web.oidc.{key}"),
            problem: problem.to_string(),
        })
    };
    let bad_text = |text: &str, max: usize| {
        text.is_empty() || text.chars().count() > max || text.chars().any(char::is_control)
    };
    if !provider_url_allowed(&oidc.issuer) {
        return invalid(
            "issuer",
            "must be an https:// URL (http:// only on 127.0.0.1, ::1 or localhost)",
        );
    }
    if bad_text(&oidc.display_name, 64) {
        return invalid("display_name", "must be 1 to 64 characters");
    }
    if bad_text(&oidc.client_id, 256) {
        return invalid("client_id", "must be 1 to 256 characters");
    }
    let redirect_ok = reqwest::Url::parse(&oidc.redirect_url).is_ok_and(|url| {
        matches!(url.scheme(), "https" | "http")
            && url.host().is_some()
            && url.path().ends_with("/login/oidc/callback")
            && url.query().is_none()
            && url.fragment().is_none()
    });
    if !redirect_ok {
        return invalid(
            "redirect_url",
            "must be the collector's public http(s) URL ending in /login/oidc/callback",
        );
    }
    if !oidc.scopes.iter().any(|scope| scope == "openid") {
        return invalid("scopes", "must include openid");
    }
    if oidc.scopes.iter().any(|scope| {
        scope.is_empty()
            || scope.len() > 128
            || !scope
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    }) {
        return invalid("scopes", "each must be 1 to 128 visible ASCII characters");
    }
    if bad_text(&oidc.role_claim, 128) {
        return invalid("role_claim", "must be 1 to 128 characters");
    }
    if oidc.roles.keys().any(|value| bad_text(value, 256)) {
        return invalid("roles", "each claim value must be 1 to 256 characters");
    }
    if oidc.roles.is_empty() && oidc.default_role.is_none() {
        return invalid(
            "roles",
            "map at least one claim value to a role, or set web.oidc.default_role",
        );
    }
    if bad_text(&oidc.username_claim, 128) {
        return invalid("username_claim", "must be 1 to 128 characters");
    }
    Ok(())
}

impl Config {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text).map_err(|error| match error {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: PathBuf::new(),
            message: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if posmon_protocol::FleetKey::new(&self.auth.key_id, vec![0; 32]).is_err() {
            return invalid(
                "auth.key_id",
                "must be 1 to 64 characters from A-Z a-z 0-9 _ -",
            );
        }
        for (index, key) in self.auth.previous_keys.iter().enumerate() {
            if key.id == self.auth.key_id {
                return invalid(
                    &format!("auth.previous_keys[{index}].id"),
                    "must differ from auth.key_id",
                );
            }
        }
        if self.limits.max_body_bytes < 1024 {
            return invalid("limits.max_body_bytes", "must be at least 1024");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid("tls.key_file", "cert_file and key_file go together");
        }
        if self.tls.client_ca_file.is_some() && self.tls.cert_file.is_none() {
            return invalid("tls.client_ca_file", "needs tls.cert_file and tls.key_file");
        }
        if self.limits.max_concurrent_ingest == 0 {
            return invalid("limits.max_concurrent_ingest", "must be at least 1");
        }
        if !(1..=3600).contains(&self.limits.overload_retry_after_seconds) {
            return invalid(
                "limits.overload_retry_after_seconds",
                "must be between 1 and 3600",
            );
        }
        self.validate_connection_limits()?;
        // Ten years: the window stays far inside what the calendar arithmetic holds.
        for (key, value) in [
            (
                "limits.max_report_age_seconds",
                self.limits.max_report_age_seconds,
            ),
            (
                "limits.max_clock_ahead_seconds",
                self.limits.max_clock_ahead_seconds,
            ),
        ] {
            if !(60..=315_360_000).contains(&value) {
                return invalid(key, "must be between 60 and 315360000 (ten years)");
            }
        }
        let max_batch = posmon_protocol::limits::REPORTS_PER_BATCH_MAX;
        if self.limits.max_reports_per_request == 0
            || self.limits.max_reports_per_request > max_batch
        {
            return invalid(
                "limits.max_reports_per_request",
                &format!("must be between 1 and {max_batch}"),
            );
        }
        if let Err((key, problem)) = validate_version_policy(&self.version_policy) {
            return invalid(&format!("version_policy{key}"), &problem);
        }
        if let Err(error) = self.diagnosis.validate() {
            return invalid(&format!("diagnosis.{}", error.key), &error.problem);
        }
        if let Err(error) = self.readiness.validate() {
            return invalid(&format!("readiness.{}", error.key), &error.problem);
        }
        if self.state.latency_points_per_target > 1000 {
            return invalid("state.latency_points_per_target", "must be at most 1000");
        }
        if self.metrics.max_label_values == 0 {
            return invalid("metrics.max_label_values", "must be at least 1");
        }
        self.validate_per_terminal_bounds()?;
        self.control.validate()?;
        if let Err((key, problem)) = self.history.validate() {
            return invalid(&format!("history.{key}"), problem);
        }
        if let Err((key, problem)) = self.datagram.validate() {
            return invalid(&format!("datagram.{key}"), problem);
        }
        if let Err((key, problem)) = self.alerts.validate() {
            return invalid(&key, &problem);
        }
        self.validate_web()
    }

    /// The bounds of one terminal's share of the collector.
    fn validate_per_terminal_bounds(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        if limits.max_history_findings_per_terminal == 0 {
            return invalid(
                "limits.max_history_findings_per_terminal",
                "must be at least 1",
            );
        }
        if !(1..=10_000).contains(&limits.max_open_findings_per_terminal) {
            return invalid(
                "limits.max_open_findings_per_terminal",
                "must be between 1 and 10000",
            );
        }
        if self.metrics.max_label_values_per_terminal == 0 {
            return invalid(
                "metrics.max_label_values_per_terminal",
                "must be at least 1",
            );
        }
        Ok(())
    }

    fn validate_web(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| {
            Err(ConfigError::Invalid {
                key: format!("web.{key}"),
                problem: problem.to_string(),
            })
        };
        let web = &self.web;
        if web.viewer_user.is_some() != web.viewer_password_file.is_some() {
            return invalid(
                "viewer_user",
                "viewer_user and viewer_password_file must be set together",
            );
        }
        if web
            .viewer_user
            .as_deref()
            .is_some_and(|user| user.is_empty() || user.contains(':') || user.len() > 128)
        {
            return invalid("viewer_user", "must be 1 to 128 characters without ':'");
        }
        if !(1..=86_400).contains(&web.trend_interval_seconds) {
            return invalid("trend_interval_seconds", "must be between 1 and 86400");
        }
        if !(1..=100_000).contains(&web.trend_points) {
            return invalid("trend_points", "must be between 1 and 100000");
        }
        if !(1..=3600).contains(&web.refresh_interval_seconds) {
            return invalid("refresh_interval_seconds", "must be between 1 and 3600");
        }
        if !(60..=2_592_000).contains(&web.session_max_age_seconds) {
            return invalid(
                "session_max_age_seconds",
                "must be between 60 and 2592000 (30 days)",
            );
        }
        if !(60..=web.session_max_age_seconds).contains(&web.session_idle_timeout_seconds) {
            return invalid(
                "session_idle_timeout_seconds",
                "must be between 60 and session_max_age_seconds",
            );
        }
        match &web.oidc {
            Some(oidc) => validate_oidc(oidc),
            None => Ok(()),
        }
    }

    /// The connection, admission and fairness limits of `[limits]`.
    fn validate_connection_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        let at_least_one = [
            (
                "limits.max_concurrent_unidentified_ingest",
                limits.max_concurrent_unidentified_ingest,
            ),
            (
                "limits.max_concurrent_ingest_per_terminal",
                limits.max_concurrent_ingest_per_terminal,
            ),
            ("limits.max_connections", limits.max_connections),
            (
                "limits.terminal_requests_per_minute",
                limits.terminal_requests_per_minute as usize,
            ),
            (
                "limits.terminal_request_burst",
                limits.terminal_request_burst as usize,
            ),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        let seconds = [
            (
                "limits.body_read_timeout_seconds",
                limits.body_read_timeout_seconds,
            ),
            (
                "limits.header_read_timeout_seconds",
                limits.header_read_timeout_seconds,
            ),
            ("limits.idle_timeout_seconds", limits.idle_timeout_seconds),
            (
                "limits.tls_handshake_timeout_seconds",
                limits.tls_handshake_timeout_seconds,
            ),
        ];
        for (key, value) in seconds {
            if !(1..=3600).contains(&value) {
                return invalid(key, "must be between 1 and 3600");
            }
        }
        Ok(())
    }

    /// `path` resolved against the data directory unless it is absolute.
    pub fn in_data_dir(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.data_dir.join(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_the_default() {
        let parsed = Config::from_toml(DEFAULT_CONFIG).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(parsed, Config::default());
    }

    fn check(text: &str, expected: &str) {
        let error = Config::from_toml(text).err().map(|error| error.to_string());
        assert_eq!(error.as_deref(), Some(expected), "{text}");
    }

    #[test]
    fn bad_configs_name_the_key() {
        check(
            "[limits]\nmax_reports_per_request = 0",
            "config key limits.max_reports_per_request: must be between 1 and 500",
        );
        for (text, expected) in [
            (
                "[limits]\nmax_connections = 0",
                "config key limits.max_connections: must be at least 1",
            ),
            (
                "[limits]\nmax_concurrent_unidentified_ingest = 0",
                "config key limits.max_concurrent_unidentified_ingest: must be at least 1",
            ),
            (
                "[limits]\nterminal_requests_per_minute = 0",
                "config key limits.terminal_requests_per_minute: must be at least 1",
            ),
            (
                "[limits]\nbody_read_timeout_seconds = 0",
                "config key limits.body_read_timeout_seconds: must be between 1 and 3600",
            ),
            (
                "[limits]\nheader_read_timeout_seconds = 18446744073709551615",
                "config key limits.header_read_timeout_seconds: must be between 1 and 3600",
            ),
            (
                "[limits]\ntls_handshake_timeout_seconds = 3601",
                "config key limits.tls_handshake_timeout_seconds: must be between 1 and 3600",
            ),
        ] {
            check(text, expected);
        }
        check(
            "[auth]\nkey_id = \"k 1\"",
            "config key auth.key_id: must be 1 to 64 characters from A-Z a-z 0-9 _ -",
        );
        check(
            "[[version_policy]]\ncomponent = \"pos_app\"\nminimum = \"\"",
            "config key version_policy[0].minimum: must not be empty",
        );
        check(
            "[web]\nviewer_user = \"ops\"",
            "config key web.viewer_user: viewer_user and viewer_password_file must be set together",
        );
        for (text, expected) in [
            (
                "[control]\nmax_hold_seconds = 0",
                "config key control.max_hold_seconds: must be between 1 and 86400",
            ),
            (
                "[control]\nmax_waiting = 0",
                "config key control.max_waiting: must be between 1 and 10000000",
            ),
            (
                "[control]\npoll_retry_seconds = 100000",
                "config key control.poll_retry_seconds: must be between 1 and 86400",
            ),
            (
                "[control]\nmax_probe_batch = 0",
                "config key control.max_probe_batch: must be between 1 and 100000",
            ),
        ] {
            check(text, expected);
        }
        check(
            "[web]\ntrend_points = 0",
            "config key web.trend_points: must be between 1 and 100000",
        );
        check(
            "[readiness]\ntargets = [\"\"]",
            "config key readiness.targets: \"\": a name is 1 to 128 bytes",
        );
        check(
            "[diagnosis]\nsilent_after_intervals = 0",
            "config key diagnosis.silent_after_intervals: must be at least 1",
        );
        check(
            "[diagnosis]\npacket_loss_percent = 120",
            "config key diagnosis.packet_loss_percent: must be a percentage above 0 and at most 100",
        );
        check(
            "[diagnosis]\nupstream_max_dimensions = 3",
            "config key diagnosis.upstream_max_dimensions: must be 1 or 2",
        );
        check(
            "[diagnosis]\nupstream_min_contrast = 0.5",
            "config key diagnosis.upstream_min_contrast: must be a number of at least 1",
        );
        check(
            "[diagnosis.hysteresis.\"env.network.nope\"]\nopen_after_observations = 1\nclose_after_observations = 1",
            "config key diagnosis.hysteresis.\"env.network.nope\": unknown finding code",
        );
        check(
            "[diagnosis.hysteresis.\"env.clock_skew\"]\nopen_after_observations = 0\nclose_after_observations = 1",
            "config key diagnosis.hysteresis.\"env.clock_skew\": open_after_observations and close_after_observations must be at least 1",
        );
        let bad_date = Config::from_toml(
            "[[version_policy]]\ncomponent = \"pos_app\"\nminimum = \"1\"\nlatest_released_on = \"soon\"",
        )
        .err()
        .map(|e| e.to_string());
        assert!(
            bad_date
                .as_deref()
                .is_some_and(|text| text.contains("latest_released_on")
                    && text.contains("expected YYYY-MM-DD")),
            "{bad_date:?}"
        );
        let receiver = "[[alerts.receivers]]\nname = \"ops\"\nkind = \"wecom\"\nurl = \"http://127.0.0.1:1/\"\n";
        check(
            &format!("{receiver}[[alerts.routes]]\nname = \"hardware\"\nreceiver = \"vendor\""),
            "config key alerts.routes[0] \"hardware\": no receiver is named \"vendor\"",
        );
        check(
            &format!("{receiver}[[alerts.routes]]\nname = \"old\"\nreceiver = \"ops\"\nmatch = {{ code = [\"outdate.*\"] }}"),
            "config key alerts.routes[0] \"old\" match.code[0]: \"outdate.*\" matches none of env.network.link_down, env.network.gateway_unreachable, env.network.dns_failure, env.network.dns_router_failure, env.network.host_unreachable, env.network.host_refused, env.network.tls_failure, env.network.high_latency, env.network.packet_loss, env.clock_skew, env.clock_breaks_tls, env.hardware.peripheral_missing, env.hardware.disk_full, env.hardware.memory_pressure, env.hardware.overheat, env.hardware.battery_low, env.software.app_not_running, outdated.pos_app, outdated.os, outdated.firmware, terminal.silent, upstream.host_outage, upstream.carrier_outage, upstream.regional_outage, upstream.resolver_outage, upstream.model_fault, upstream.firmware_fault, upstream.app_fault, upstream.merchant_outage, upstream.gateway_outage",
        );
        check(
            "[[alerts.receivers]]\nname = \"robot\"\nkind = \"dingtalk\"\nurl = \"http://x/\"\nsecret = \"inline\"",
            "config key alerts.receivers[0] \"robot\": secret must come from { env = \"NAME\" } or { file = \"path\" }, not the config file",
        );
        check(
            "[[alerts.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://x/\"",
            "config key alerts.receivers[0] \"hook\": secret is required: the webhook's body is signed with it",
        );
        check(
            "[alerts]\ndefault_receiver = \"nobody\"",
            "config key alerts.default_receiver: no receiver is named \"nobody\"",
        );
        let oidc = |extra: &str| {
            format!(
                "[web.oidc]\nclient_id = \"posmon\"\nclient_secret_file = \"oidc-secret\"\n\
                 redirect_url = \"https://posmon.example/login/oidc/callback\"\n{extra}"
            )
        };
        let good =
            "issuer = \"https://id.example/realms/ops\"\n[web.oidc.roles]\nops = \"operator\"";
        let config = Config::from_toml(&oidc(good)).unwrap_or_else(|e| panic!("{e}"));
        let parsed = config.web.oidc.unwrap_or_else(|| panic!("no [web.oidc]"));
        assert_eq!(parsed.scopes, ["openid", "profile", "email"]);
        assert_eq!(parsed.username_claim, "preferred_username");
        assert_eq!(parsed.default_role, None);
        for (extra, expected) in [
            (
                "issuer = \"http://id.example/\"\ndefault_role = \"viewer\"",
                "config key web.oidc.issuer: must be an https:// URL (http:// only on 127.0.0.1, ::1 or localhost)",
            ),
            (
                "issuer = \"https://id.example/\"",
                "config key web.oidc.roles: map at least one claim value to a role, or set web.oidc.default_role",
            ),
            (
                "issuer = \"https://id.example/\"\ndefault_role = \"viewer\"\nscopes = [\"profile\"]",
                "config key web.oidc.scopes: must include openid",
            ),
        ] {
            check(&oidc(extra), expected);
        }
        check(
            "[web.oidc]\nissuer = \"http://127.0.0.1:1/\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\n\
             redirect_url = \"https://p.example/login\"\ndefault_role = \"viewer\"",
            "config key web.oidc.redirect_url: must be the collector's public http(s) URL ending in /login/oidc/callback",
        );
        let unknown = Config::from_toml("listen_port = 1")
            .err()
            .map(|e| e.to_string());
        assert!(
            unknown
                .as_deref()
                .is_some_and(|text| text.contains("unknown field `listen_port`")),
            "{unknown:?}"
        );
    }
}
