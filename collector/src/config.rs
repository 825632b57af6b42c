//! The collector's configuration: one TOML file, overridden by environment variables and flags
//! (see `cli.rs`), merged into one validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    pub version_policy: Vec<VersionRule>,
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("posmon-data"),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            version_policy: Vec::new(),
            metrics: MetricsConfig::default(),
        }
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
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            key_id: "k1".into(),
            secret_file: PathBuf::from("fleet-secret"),
            previous_keys: Vec::new(),
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 1024 * 1024,
            max_reports_per_request: 100,
            max_history_findings: 100_000,
        }
    }
}

/// The oldest acceptable version of one software component, for one terminal model or all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRule {
    /// Component name as the agent reports it: `pos_app`, `os`, `firmware`, …
    pub component: String,
    /// Terminal model this rule applies to; every model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Versions below this are outdated.
    pub minimum: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Export series per terminal (`terminal_id` label). A cardinality risk: one series per
    /// terminal per metric. Leave off for large fleets.
    pub per_terminal_series: bool,
}

#[allow(
    clippy::derivable_impls,
    reason = "explicit: the default is a decision, documented in examples/collector.toml"
)]
impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            per_terminal_series: false,
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
        let invalid = |key: &str, problem: &str| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                problem: problem.to_string(),
            })
        };
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
        let max_batch = posmon_protocol::limits::REPORTS_PER_BATCH_MAX;
        if self.limits.max_reports_per_request == 0
            || self.limits.max_reports_per_request > max_batch
        {
            return invalid(
                "limits.max_reports_per_request",
                &format!("must be between 1 and {max_batch}"),
            );
        }
        for (index, rule) in self.version_policy.iter().enumerate() {
            if rule.component.trim().is_empty() {
                return invalid(
                    &format!("version_policy[{index}].component"),
                    "must not be empty",
                );
            }
            if !crate::diagnose::rules::outdated::KNOWN_COMPONENTS
                .contains(&rule.component.as_str())
            {
                return invalid(
                    &format!("version_policy[{index}].component"),
                    &format!(
                        "unknown component {:?} (expected one of {})",
                        rule.component,
                        crate::diagnose::rules::outdated::KNOWN_COMPONENTS.join(", ")
                    ),
                );
            }
            if rule.minimum.trim().is_empty() {
                return invalid(
                    &format!("version_policy[{index}].minimum"),
                    "must not be empty",
                );
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
        check(
            "[auth]\nkey_id = \"k 1\"",
            "config key auth.key_id: must be 1 to 64 characters from A-Z a-z 0-9 _ -",
        );
        check(
            "[[version_policy]]\ncomponent = \"pos_app\"\nminimum = \"\"",
            "config key version_policy[0].minimum: must not be empty",
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
