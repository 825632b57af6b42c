//! The agent's configuration: one TOML file, checked as a whole before the agent starts. A bad
//! file names the key and the problem, and the agent refuses to start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use posmon_protocol::{limits, Labels};
use serde::Deserialize;

/// The commented example configuration, printed by `posmon-agent print-default-config`. A test
/// checks that it parses to [`AgentConfig::example`].
pub const DEFAULT_CONFIG: &str = include_str!("../examples/agent.toml");

/// The environment variable that, when set, holds the terminal's token.
pub const TOKEN_ENV: &str = "POSMON_AGENT_TOKEN";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This terminal's id, unique in the fleet.
    pub terminal_id: String,
    /// Base URL of the collector, e.g. `https://posmon.example:8443`.
    pub collector_url: String,
    /// The terminal's token, inline. Prefer `token_file`.
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the terminal's token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Directory for the agent's own state (the sequence counter).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_report_interval")]
    pub report_interval_seconds: u64,
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout_seconds: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    #[serde(default)]
    pub labels: LabelsConfig,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub components: Vec<ComponentConfig>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/posmon-agent")
}
fn default_report_interval() -> u64 {
    60
}
fn default_probe_timeout() -> u64 {
    5
}
fn default_request_timeout() -> u64 {
    10
}

/// The terminal's labels as configured: the wire type, but strict about unknown keys so that a
/// misplaced option is an error rather than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsConfig {
    #[serde(default)]
    pub merchant: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub carrier: Option<String>,
    #[serde(default)]
    pub extra: std::collections::BTreeMap<String, String>,
}

impl LabelsConfig {
    pub fn to_labels(&self) -> Labels {
        Labels {
            merchant: self.merchant.clone(),
            model: self.model.clone(),
            region: self.region.clone(),
            carrier: self.carrier.clone(),
            extra: self.extra.clone(),
        }
    }
}

/// A host the terminal must reach.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Short name used in findings, e.g. `payment-host`.
    pub name: String,
    /// `host:port`.
    pub address: String,
}

/// A software component whose version is read from a file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// Component name: `pos_app`, `firmware`, `emv_kernel`, …
    pub name: String,
    /// File holding the version.
    pub file: PathBuf,
    /// Optional regex: the first capture group (or the whole match) is the version. Without it,
    /// the file's first non-empty line is.
    #[serde(default)]
    pub regex: Option<String>,
}

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

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl AgentConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: AgentConfig = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration [`DEFAULT_CONFIG`] describes: defaults plus the example's required keys.
    pub fn example() -> Self {
        AgentConfig {
            terminal_id: "T-0001".into(),
            collector_url: "http://127.0.0.1:8080".into(),
            token: None,
            token_file: Some(PathBuf::from("/etc/posmon/agent-token")),
            state_dir: default_state_dir(),
            report_interval_seconds: default_report_interval(),
            probe_timeout_seconds: default_probe_timeout(),
            request_timeout_seconds: default_request_timeout(),
            labels: LabelsConfig::default(),
            targets: Vec::new(),
            components: Vec::new(),
        }
    }

    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.report_interval_seconds)
    }

    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs(self.probe_timeout_seconds)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    /// Checks every key; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        posmon_protocol::validate::check_terminal_id(&self.terminal_id, "terminal_id")
            .map_err(|error| invalid("terminal_id", error.problem))?;
        let url = reqwest::Url::parse(&self.collector_url)
            .map_err(|error| invalid("collector_url", format!("not a URL: {error}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(
                "collector_url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        if self.token.is_none()
            && self.token_file.is_none()
            && std::env::var_os(TOKEN_ENV).is_none()
        {
            return Err(invalid(
                "token_file",
                format!(
                    "one of token, token_file or the {TOKEN_ENV} environment variable must be set"
                ),
            ));
        }
        for (key, value, max) in [
            (
                "report_interval_seconds",
                self.report_interval_seconds,
                86_400,
            ),
            ("probe_timeout_seconds", self.probe_timeout_seconds, 300),
            ("request_timeout_seconds", self.request_timeout_seconds, 300),
        ] {
            if value == 0 || value > max {
                return Err(invalid(key, format!("must be between 1 and {max}")));
            }
        }
        // The labels must pass the collector's validation: check them the same way.
        posmon_protocol::validate::validate_labels(&self.labels.to_labels(), "labels")
            .map_err(|error| invalid(error.field, error.problem))?;
        if self.targets.len() > limits::PROBES_MAX {
            return Err(invalid(
                "targets",
                format!("at most {} targets", limits::PROBES_MAX),
            ));
        }
        for (index, target) in self.targets.iter().enumerate() {
            let key = format!("targets[{index}]");
            check_name(&target.name, &format!("{key}.name"))?;
            if self.targets[..index]
                .iter()
                .any(|other| other.name == target.name)
            {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate target name {:?}", target.name),
                ));
            }
            check_host_port(&target.address, &format!("{key}.address"))?;
        }
        // Leave room for the built-in os, kernel and agent components.
        let max_components = limits::COMPONENTS_MAX - 3;
        if self.components.len() > max_components {
            return Err(invalid(
                "components",
                format!("at most {max_components} components"),
            ));
        }
        for (index, component) in self.components.iter().enumerate() {
            let key = format!("components[{index}]");
            let valid_name = component.name.len() <= limits::NAME_MAX_CHARS
                && component.name.starts_with(|c: char| c.is_ascii_lowercase())
                && component
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid_name {
                return Err(invalid(
                    format!("{key}.name"),
                    "must match [a-z][a-z0-9_]*, at most 64 characters",
                ));
            }
            if matches!(component.name.as_str(), "os" | "kernel" | "agent") {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} is reported by the agent itself", component.name),
                ));
            }
            if let Some(pattern) = &component.regex {
                regex_lite::Regex::new(pattern).map_err(|error| {
                    invalid(
                        format!("{key}.regex"),
                        format!("not a valid regex: {error}"),
                    )
                })?;
            }
        }
        Ok(())
    }
}

fn check_name(name: &str, key: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.chars().count() > limits::NAME_MAX_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(invalid(
            key,
            format!(
                "must be 1 to {} printable characters",
                limits::NAME_MAX_CHARS
            ),
        ));
    }
    Ok(())
}

fn check_host_port(address: &str, key: &str) -> Result<(), ConfigError> {
    let problem = || {
        invalid(
            key,
            format!("{address:?} must be host:port (e.g. pay.example.com:443 or [::1]:443)"),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(problem)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |port| port == 0) {
        return Err(problem());
    }
    if address.chars().count() > limits::DETAIL_MAX_CHARS {
        return Err(invalid(key, "too long"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        let config: AgentConfig = toml::from_str(text).map_err(|error| error.to_string())?;
        config.validate().map_err(|error| error.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_example_is_the_default() {
        assert_eq!(parse(DEFAULT_CONFIG), Ok(AgentConfig::example()));
    }

    const BASE: &str =
        "terminal_id = \"T-1\"\ncollector_url = \"http://127.0.0.1:1\"\ntoken = \"k1.x\"\n";

    fn check(extra: &str, expected: &str) {
        let error = parse(&format!("{BASE}{extra}")).err().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{error:?} should contain {expected:?}"
        );
    }

    #[test]
    fn bad_configs_name_the_key_and_the_problem() {
        assert!(parse(BASE).is_ok());
        check(
            "report_interval_seconds = 0",
            "config key report_interval_seconds: must be between 1 and 86400",
        );
        check(
            "[[targets]]\nname = \"pay\"\naddress = \"pay.example\"",
            "config key targets[0].address: \"pay.example\" must be host:port",
        );
        check(
            "[[targets]]\nname = \"pay\"\naddress = \"a:1\"\n[[targets]]\nname = \"pay\"\naddress = \"b:2\"",
            "config key targets[1].name: duplicate target name",
        );
        check(
            "[[components]]\nname = \"pos_app\"\nfile = \"/x\"\nregex = \"(\"",
            "config key components[0].regex: not a valid regex",
        );
        check(
            "[[components]]\nname = \"kernel\"\nfile = \"/x\"",
            "config key components[0].name",
        );
        check(
            "[labels]\nregion = \"\"",
            "config key labels.region: must not be empty",
        );
        check("colour = \"red\"", "unknown field `colour`");
        check(
            "probe_timeout_seconds = \"5\"",
            "invalid type: string \"5\", expected u64",
        );
        let error =
            parse("collector_url = \"ftp://x\"\nterminal_id = \"T-1\"\ntoken = \"t\"").err();
        assert_eq!(
            error.as_deref(),
            Some("config key collector_url: must be an http:// or https:// URL with a host")
        );
        let error =
            parse("collector_url = \"http://x\"\nterminal_id = \"T 1\"\ntoken = \"t\"").err();
        assert_eq!(
            error.as_deref(),
            Some("config key terminal_id: character ' ' not allowed (use A-Z a-z 0-9 . _ : -)")
        );
    }
}
