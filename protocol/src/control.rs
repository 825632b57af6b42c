//! Fleet control (pure): the settings a collector hands an agent, the agent's account of what it
//! runs, and "probe now".
//!
//! The collector holds configuration profiles; their layered [`Settings`] for one terminal have a
//! [`Settings::version`]. Acknowledgements and the control long-poll ([`CONTROL_PATH`]) name the
//! version the terminal should run, when the collector does not know it runs (or refused) it; the
//! agent then fetches the settings ([`AGENT_CONFIG_PATH`]), lays them over its local file (whose
//! `pinned` keys they may not change), checks the result as it checks its file and either runs it
//! or keeps its last good configuration and says why in its next report ([`ConfigState`]).
//!
//! Settings never make an agent run a command: components and peripherals take only files,
//! device nodes and USB ids here, and the keys that say where and how the agent reports (the
//! collector's URL, the token, TLS files of the delivery, the state directory) are local only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits::{
    ATTEMPTS_MAX, COMPONENTS_MAX, DETAIL_MAX_CHARS, DEVICE_LIST_MAX, EXTRA_LABELS_MAX,
    LABEL_VALUE_MAX_CHARS, PROBES_MAX,
};
use crate::validate::{check_label_key, check_name, check_optional_text, check_text};
use crate::ValidationError;

/// The control long-poll: `GET` with the terminal's token and header, and the query
/// `applied=<version>&rejected=<version>&wait=<seconds>`; answered with a [`ControlAnswer`] as
/// soon as there is something for the terminal, or empty after `wait` seconds (at most the
/// collector's hold).
pub const CONTROL_PATH: &str = "/api/v1/agent/control";

/// The terminal's settings: `GET` with the terminal's token and header → [`AgentSettings`].
pub const AGENT_CONFIG_PATH: &str = "/api/v1/agent/config";

/// Characters of a settings version: 64 bits in lower-case hex.
pub const VERSION_CHARS: usize = 16;

/// The most characters of a rejection's reason.
pub const REASON_MAX_CHARS: usize = 512;

/// The largest settings document either side reads, JSON.
pub const SETTINGS_MAX_BYTES: usize = 64 * 1024;

/// The most bytes the layered settings of a terminal may take, by [`Settings::key_bytes`]: an
/// agent reads them, with their version, within [`SETTINGS_MAX_BYTES`].
pub const LAYERED_SETTINGS_MAX_BYTES: usize = SETTINGS_MAX_BYTES - 1024;

/// What a profile may set, in the agent's config file's own keys and shapes. Every key is
/// optional: a layer sets what it names and leaves the rest to the layers below it. Lists
/// replace the list below them whole; labels are laid key by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<TargetSetting>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_probe_interval_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_probe_interval_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_interval_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peripherals: Option<Vec<PeripheralSetting>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<ComponentSetting>>,
    #[serde(default, skip_serializing_if = "LabelSettings::is_empty")]
    pub labels: LabelSettings,
}

/// A target, as in the agent's `[[targets]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSetting {
    pub name: String,
    /// `host:port`, or an `http://` / `https://` URL.
    pub address: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// A CA bundle on the terminal: the agent refuses settings naming one it cannot read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Whom to call about this host (a server's operator), shown at the terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
}

/// The longest contact of a target, in characters (the agent's own bound).
pub const TARGET_CONTACT_MAX_CHARS: usize = 96;

/// A peripheral, as in the agent's `[[peripherals]]`, without `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeripheralSetting {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb: Option<String>,
}

/// A component, as in the agent's `[[components]]`, without `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSetting {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Labels, as in the agent's `[labels]`: each set key replaces the one below it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl LabelSettings {
    pub fn is_empty(&self) -> bool {
        self.merchant.is_none()
            && self.model.is_none()
            && self.region.is_none()
            && self.carrier.is_none()
            && self.extra.is_empty()
    }

    /// The label keys set, as pin and selector keys: `labels.region`, `labels.extra.shop`.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = [
            ("merchant", &self.merchant),
            ("model", &self.model),
            ("region", &self.region),
            ("carrier", &self.carrier),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_some())
        .map(|(name, _)| format!("labels.{name}"))
        .collect();
        keys.extend(self.extra.keys().map(|key| format!("labels.extra.{key}")));
        keys
    }
}

/// The most seconds each interval setting may be (each is at least 1); the agent holds its own
/// file to the same bounds.
pub const INTERVAL_MAX_SECONDS: [(&str, u64); 5] = [
    ("probe_interval_seconds", 86_400),
    ("full_probe_interval_seconds", 7 * 86_400),
    ("failing_probe_interval_seconds", 86_400),
    ("report_interval_seconds", 86_400),
    ("probe_timeout_seconds", 300),
];

/// The top-level keys [`Settings`] has, in the agent's config file's spelling: what a `pinned`
/// entry may name (besides `labels.<key>` and `labels.extra.<key>`).
pub const SETTING_KEYS: [&str; 11] = [
    "targets",
    "probe_interval_seconds",
    "full_probe_interval_seconds",
    "failing_probe_interval_seconds",
    "report_interval_seconds",
    "probe_timeout_seconds",
    "attempts",
    "processes",
    "peripherals",
    "components",
    "labels",
];

/// Whether `key` names something settings can set: a top-level key, `labels.<well-known>` or
/// `labels.extra.<key>`.
pub fn is_setting_key(key: &str) -> bool {
    if SETTING_KEYS.contains(&key) {
        return true;
    }
    match key.strip_prefix("labels.") {
        Some("merchant" | "model" | "region" | "carrier") => true,
        Some(rest) => rest
            .strip_prefix("extra.")
            .is_some_and(|extra| check_label_key(extra, key).is_ok()),
        None => false,
    }
}

impl Settings {
    /// Lays `upper` over `self`: every key `upper` sets replaces this one's (labels key by key).
    pub fn overlay(&mut self, upper: &Settings) {
        fn lay<T: Clone>(lower: &mut Option<T>, upper: &Option<T>) {
            if upper.is_some() {
                lower.clone_from(upper);
            }
        }
        lay(&mut self.targets, &upper.targets);
        lay(
            &mut self.probe_interval_seconds,
            &upper.probe_interval_seconds,
        );
        lay(
            &mut self.full_probe_interval_seconds,
            &upper.full_probe_interval_seconds,
        );
        lay(
            &mut self.failing_probe_interval_seconds,
            &upper.failing_probe_interval_seconds,
        );
        lay(
            &mut self.report_interval_seconds,
            &upper.report_interval_seconds,
        );
        lay(
            &mut self.probe_timeout_seconds,
            &upper.probe_timeout_seconds,
        );
        lay(&mut self.attempts, &upper.attempts);
        lay(&mut self.processes, &upper.processes);
        lay(&mut self.peripherals, &upper.peripherals);
        lay(&mut self.components, &upper.components);
        lay(&mut self.labels.merchant, &upper.labels.merchant);
        lay(&mut self.labels.model, &upper.labels.model);
        lay(&mut self.labels.region, &upper.labels.region);
        lay(&mut self.labels.carrier, &upper.labels.carrier);
        for (key, value) in &upper.labels.extra {
            self.labels.extra.insert(key.clone(), value.clone());
        }
    }

    /// The keys this sets, in [`SETTING_KEYS`] spelling (labels as `labels.<key>`).
    pub fn keys(&self) -> Vec<String> {
        let set = [
            self.targets.is_some(),
            self.probe_interval_seconds.is_some(),
            self.full_probe_interval_seconds.is_some(),
            self.failing_probe_interval_seconds.is_some(),
            self.report_interval_seconds.is_some(),
            self.probe_timeout_seconds.is_some(),
            self.attempts.is_some(),
            self.processes.is_some(),
            self.peripherals.is_some(),
            self.components.is_some(),
        ];
        let mut keys: Vec<String> = SETTING_KEYS
            .iter()
            .zip(set)
            .filter(|(_, set)| *set)
            .map(|(key, _)| (*key).to_string())
            .collect();
        keys.extend(self.labels.keys());
        keys
    }

    /// The JSON bytes each key this sets takes (labels key by key, as they are laid): the
    /// layered settings of several profiles take at most the sum of each key's largest.
    pub fn key_bytes(&self) -> BTreeMap<String, usize> {
        let mut sizes = BTreeMap::new();
        let serde_json::Value::Object(map) = serde_json::to_value(self).unwrap_or_default() else {
            return sizes;
        };
        let bytes = |value: &serde_json::Value| serde_json::to_vec(value).map_or(0, |v| v.len());
        for (key, value) in &map {
            if key != "labels" {
                sizes.insert(key.clone(), key.len() + 4 + bytes(value));
                continue;
            }
            let serde_json::Value::Object(labels) = value else {
                continue;
            };
            for (name, value) in labels {
                if let serde_json::Value::Object(extra) = value {
                    for (name, value) in extra {
                        sizes.insert(
                            format!("labels.extra.{name}"),
                            name.len() + 4 + bytes(value),
                        );
                    }
                } else {
                    sizes.insert(format!("labels.{name}"), name.len() + 4 + bytes(value));
                }
            }
        }
        sizes
    }

    /// The version of these settings: the first 64 bits of SHA-256 over their JSON, in hex.
    /// Equal settings have equal versions on every collector.
    pub fn version(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&json);
        digest[..VERSION_CHARS / 2]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Checks the settings as far as the collector can (the agent checks the rest, such as its
    /// files, when it applies them). Every error names the key from `path`.
    pub fn validate(&self, path: &str) -> Result<(), ValidationError> {
        let key = |name: &str| {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        };
        let values = [
            self.probe_interval_seconds,
            self.full_probe_interval_seconds,
            self.failing_probe_interval_seconds,
            self.report_interval_seconds,
            self.probe_timeout_seconds,
        ];
        for ((name, max), value) in INTERVAL_MAX_SECONDS.into_iter().zip(values) {
            if value.is_some_and(|value| value == 0 || value > max) {
                return Err(ValidationError::new(
                    key(name),
                    format!("must be between 1 and {max}"),
                ));
            }
        }
        if let Some(attempts) = self.attempts {
            check_attempts(attempts, &key("attempts"))?;
        }
        if let Some(targets) = &self.targets {
            check_list(targets, PROBES_MAX, &key("targets"))?;
            for (index, target) in targets.iter().enumerate() {
                let at = format!("{}[{index}]", key("targets"));
                check_name(&target.name, &format!("{at}.name"))?;
                if targets[..index]
                    .iter()
                    .any(|other| other.name == target.name)
                {
                    return Err(ValidationError::new(
                        format!("{at}.name"),
                        format!("duplicate target name {:?}", target.name),
                    ));
                }
                check_text(&target.address, DETAIL_MAX_CHARS, &format!("{at}.address"))?;
                check_address(&target.address, &format!("{at}.address"))?;
                if let Some(attempts) = target.attempts {
                    check_attempts(attempts, &format!("{at}.attempts"))?;
                }
                if let Some(contact) = &target.contact {
                    check_text(contact, TARGET_CONTACT_MAX_CHARS, &format!("{at}.contact"))?;
                }
                if let Some(ca_file) = &target.ca_file {
                    check_path(ca_file, &format!("{at}.ca_file"))?;
                    let tls = target.tls || target.address.starts_with("https://");
                    if !tls {
                        return Err(ValidationError::new(
                            format!("{at}.ca_file"),
                            "only for a TLS target (https:// or tls = true)",
                        ));
                    }
                }
            }
        }
        if let Some(processes) = &self.processes {
            check_list(processes, 16, &key("processes"))?;
            for (index, name) in processes.iter().enumerate() {
                check_name(name, &format!("{}[{index}]", key("processes")))?;
            }
        }
        if let Some(peripherals) = &self.peripherals {
            check_list(peripherals, 16.min(DEVICE_LIST_MAX), &key("peripherals"))?;
            for (index, peripheral) in peripherals.iter().enumerate() {
                let at = format!("{}[{index}]", key("peripherals"));
                check_name(&peripheral.name, &format!("{at}.name"))?;
                match (&peripheral.device, &peripheral.usb) {
                    (Some(device), None) => check_path(device, &format!("{at}.device"))?,
                    (None, Some(usb)) => check_usb(usb, &format!("{at}.usb"))?,
                    _ => {
                        return Err(ValidationError::new(
                            at,
                            "set exactly one of device or usb (a command is set only in the agent's own file)",
                        ))
                    }
                }
            }
        }
        if let Some(components) = &self.components {
            // Room for the built-in os, kernel and agent components.
            check_list(components, COMPONENTS_MAX - 3, &key("components"))?;
            for (index, component) in components.iter().enumerate() {
                let at = format!("{}[{index}]", key("components"));
                check_label_key(&component.name, &format!("{at}.name"))?;
                if matches!(component.name.as_str(), "os" | "kernel" | "agent") {
                    return Err(ValidationError::new(
                        format!("{at}.name"),
                        format!("{:?} is reported by the agent itself", component.name),
                    ));
                }
                match (&component.file, &component.properties) {
                    (Some(file), None) => check_path(file, &format!("{at}.file"))?,
                    (None, Some(properties)) => {
                        check_path(properties, &format!("{at}.properties"))?;
                    }
                    _ => {
                        return Err(ValidationError::new(
                            at,
                            "set exactly one of file or properties (a command is set only in the agent's own file)",
                        ))
                    }
                }
                if component.properties.is_some() != component.key.is_some() {
                    return Err(ValidationError::new(
                        format!("{at}.key"),
                        "a properties source needs a key, and only it takes one",
                    ));
                }
                if let Some(name) = &component.key {
                    check_name(name, &format!("{at}.key"))?;
                }
                if let Some(regex) = &component.regex {
                    check_text(regex, DETAIL_MAX_CHARS, &format!("{at}.regex"))?;
                }
            }
        }
        let labels = key("labels");
        for (name, value) in [
            ("merchant", &self.labels.merchant),
            ("model", &self.labels.model),
            ("region", &self.labels.region),
            ("carrier", &self.labels.carrier),
        ] {
            if let Some(value) = value {
                check_text(value, LABEL_VALUE_MAX_CHARS, &format!("{labels}.{name}"))?;
            }
        }
        if self.labels.extra.len() > EXTRA_LABELS_MAX {
            return Err(ValidationError::new(
                format!("{labels}.extra"),
                format!("at most {EXTRA_LABELS_MAX} labels"),
            ));
        }
        for (name, value) in &self.labels.extra {
            let at = format!("{labels}.extra.{name}");
            check_label_key(name, &at)?;
            check_optional_text(value, LABEL_VALUE_MAX_CHARS, &at)?;
        }
        Ok(())
    }
}

fn check_attempts(attempts: u32, field: &str) -> Result<(), ValidationError> {
    if attempts == 0 || attempts > ATTEMPTS_MAX {
        return Err(ValidationError::new(
            field,
            format!("must be between 1 and {ATTEMPTS_MAX}"),
        ));
    }
    Ok(())
}

fn check_list<T>(items: &[T], max: usize, field: &str) -> Result<(), ValidationError> {
    if items.len() > max {
        return Err(ValidationError::new(
            field,
            format!("at most {max} entries, got {}", items.len()),
        ));
    }
    Ok(())
}

/// An absolute path of the terminal, bounded.
fn check_path(path: &str, field: &str) -> Result<(), ValidationError> {
    check_text(path, DETAIL_MAX_CHARS, field)?;
    if !path.starts_with('/') {
        return Err(ValidationError::new(field, "must be an absolute path"));
    }
    Ok(())
}

fn check_usb(usb: &str, field: &str) -> Result<(), ValidationError> {
    let hex = |part: &str| part.len() == 4 && part.chars().all(|c| c.is_ascii_hexdigit());
    match usb.split_once(':') {
        Some((vendor, product)) if hex(vendor) && hex(product) => Ok(()),
        _ => Err(ValidationError::new(
            field,
            format!("{usb:?} must be vendor:product in hex, e.g. 0b00:0080"),
        )),
    }
}

/// `host:port` or an `http(s)://` URL with a host, as the agent reads a target's address (it
/// checks the host's syntax in full when it applies the settings).
fn check_address(address: &str, field: &str) -> Result<(), ValidationError> {
    let problem = || {
        ValidationError::new(
            field,
            format!("{address:?} must be host:port (e.g. pay.example.com:443 or [::1]:443) or an http(s):// URL"),
        )
    };
    if let Some(rest) = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
    {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        return if host.is_empty() || host.contains(char::is_whitespace) {
            Err(problem())
        } else {
            Ok(())
        };
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(problem)?;
    let port_ok = port.parse::<u16>().is_ok_and(|port| port != 0);
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(problem())
    }
}

/// Checks a settings version's form: [`VERSION_CHARS`] lower-case hex digits.
pub fn check_version(version: &str, field: &str) -> Result<(), ValidationError> {
    if version.len() == VERSION_CHARS
        && version
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be {VERSION_CHARS} lower-case hex digits"),
        ))
    }
}

/// The answer at [`AGENT_CONFIG_PATH`]: the terminal's layered settings and their version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettings {
    pub version: String,
    pub settings: Settings,
}

/// What the agent runs, in a report: sent with the full sections and whenever it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigState {
    /// The settings version it runs; absent: its local file alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// The newest version it refused, and why; it keeps running `applied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejection>,
}

/// Settings an agent could not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub version: String,
    /// The key and what is wrong, e.g. `targets[0].ca_file: cannot read /etc/posmon/ca.pem`.
    pub reason: String,
}

impl ConfigState {
    /// Checks the versions' form and the reason's length; `path` prefixes the field names.
    pub fn validate(&self, path: &str) -> Result<(), ValidationError> {
        if let Some(applied) = &self.applied {
            check_version(applied, &format!("{path}.applied"))?;
        }
        if let Some(rejection) = &self.rejected {
            check_version(&rejection.version, &format!("{path}.rejected.version"))?;
            check_optional_text(
                &rejection.reason,
                REASON_MAX_CHARS,
                &format!("{path}.rejected.reason"),
            )?;
        }
        Ok(())
    }

    /// Whether the agent runs or refused `version`: nothing to tell it.
    pub fn knows(&self, version: &str) -> bool {
        self.applied.as_deref() == Some(version)
            || self
                .rejected
                .as_ref()
                .is_some_and(|rejection| rejection.version == version)
    }
}

/// The answer of the control long-poll: what the terminal should do now. Empty after the wait.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlAnswer {
    /// The settings version the terminal should run: fetch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// A probe request: probe every target at once and report, naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_request: Option<u64>,
    /// The collector holds no more long-polls: poll again after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// The largest probe request id: ids are below 2^53 (exact in JSON numbers).
pub const PROBE_REQUEST_MAX: u64 = crate::limits::SEQUENCE_MAX;

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, address: &str) -> TargetSetting {
        TargetSetting {
            name: name.into(),
            address: address.into(),
            tls: false,
            attempts: None,
            ca_file: None,
            contact: None,
        }
    }

    #[test]
    fn layers_replace_what_they_set_and_labels_go_key_by_key() {
        let mut lower = Settings {
            targets: Some(vec![target("payment-host", "10.0.0.1:443")]),
            report_interval_seconds: Some(300),
            labels: LabelSettings {
                region: Some("east".into()),
                extra: BTreeMap::from([("shop".into(), "a".into())]),
                ..LabelSettings::default()
            },
            ..Settings::default()
        };
        let upper = Settings {
            targets: Some(vec![target("payment-host", "10.0.0.2:443")]),
            labels: LabelSettings {
                extra: BTreeMap::from([("lane".into(), "3".into())]),
                ..LabelSettings::default()
            },
            ..Settings::default()
        };
        lower.overlay(&upper);
        assert_eq!(
            lower.targets.as_deref().map(|t| t[0].address.as_str()),
            Some("10.0.0.2:443")
        );
        assert_eq!(lower.report_interval_seconds, Some(300));
        assert_eq!(lower.labels.region.as_deref(), Some("east"));
        assert_eq!(lower.labels.extra.len(), 2);
        assert_eq!(
            lower.keys(),
            vec![
                "targets",
                "report_interval_seconds",
                "labels",
                "labels.region",
                "labels.extra.lane",
                "labels.extra.shop"
            ]
            .into_iter()
            .filter(|key| *key != "labels")
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn key_bytes_bound_the_document() {
        let settings: Settings = serde_json::from_str(
            r#"{"targets":[{"name":"a","address":"h:1"}],"attempts":3,
                "labels":{"region":"east","extra":{"lane":"3","shop":"7"}}}"#,
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let sizes = settings.key_bytes();
        assert_eq!(
            sizes.keys().cloned().collect::<Vec<_>>(),
            vec![
                "attempts",
                "labels.extra.lane",
                "labels.extra.shop",
                "labels.region",
                "targets"
            ]
        );
        let document = serde_json::to_vec(&settings).map_or(0, |v| v.len());
        assert!(
            sizes.values().sum::<usize>() + 32 >= document,
            "{sizes:?} vs {document}"
        );
    }

    #[test]
    fn a_version_is_stable_and_follows_the_content() {
        let settings = Settings {
            attempts: Some(3),
            ..Settings::default()
        };
        let version = settings.version();
        assert_eq!(version.len(), VERSION_CHARS);
        assert!(check_version(&version, "v").is_ok());
        assert_eq!(version, settings.clone().version());
        let other = Settings {
            attempts: Some(4),
            ..Settings::default()
        };
        assert_ne!(version, other.version());
        assert_ne!(version, Settings::default().version());
    }

    #[test]
    fn every_error_names_its_key() {
        let cases: Vec<(&str, &str)> = vec![
            (
                r#"{"report_interval_seconds":0}"#,
                "report_interval_seconds",
            ),
            (r#"{"attempts":1000}"#, "attempts"),
            (
                r#"{"targets":[{"name":"a","address":"nohost"}]}"#,
                "targets[0].address",
            ),
            (
                r#"{"targets":[{"name":"a","address":"h:1"},{"name":"a","address":"h:2"}]}"#,
                "targets[1].name",
            ),
            (
                r#"{"targets":[{"name":"a","address":"h:443","ca_file":"/ca.pem"}]}"#,
                "targets[0].ca_file",
            ),
            (
                r#"{"targets":[{"name":"a","address":"h:443","tls":true,"ca_file":"ca.pem"}]}"#,
                "targets[0].ca_file",
            ),
            (r#"{"peripherals":[{"name":"p"}]}"#, "peripherals[0]"),
            (
                r#"{"peripherals":[{"name":"p","usb":"xyz"}]}"#,
                "peripherals[0].usb",
            ),
            (
                r#"{"components":[{"name":"os","file":"/v"}]}"#,
                "components[0].name",
            ),
            (
                r#"{"components":[{"name":"pos_app","properties":"/p"}]}"#,
                "components[0].key",
            ),
            (r#"{"labels":{"extra":{"Bad":"x"}}}"#, "labels.extra.Bad"),
        ];
        for (json, field) in cases {
            let settings: Settings =
                serde_json::from_str(json).unwrap_or_else(|error| panic!("{json}: {error}"));
            let error = settings
                .validate("")
                .err()
                .unwrap_or_else(|| panic!("{json} passed"));
            assert_eq!(error.field, field, "{json}: {error}");
        }
        let good: Settings = serde_json::from_str(
            r#"{"targets":[{"name":"payment-host","address":"https://pay.example.com/health","ca_file":"/etc/posmon/ca.pem"},
                           {"name":"tms","address":"[::1]:8443","tls":true}],
                "report_interval_seconds":60,"attempts":3,"processes":["posapp"],
                "peripherals":[{"name":"card_reader","usb":"0b00:0080"}],
                "components":[{"name":"pos_app","properties":"/opt/pos/version.properties","key":"version"}],
                "labels":{"region":"east","extra":{"lane":"3"}}}"#,
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(good.validate("settings"), Ok(()));
    }

    #[test]
    fn a_command_or_an_unknown_key_does_not_decode() {
        for json in [
            r#"{"components":[{"name":"x","command":["/bin/sh","-c","id"]}]}"#,
            r#"{"peripherals":[{"name":"x","command":["true"]}]}"#,
            r#"{"collector_url":"http://evil"}"#,
        ] {
            let error = serde_json::from_str::<Settings>(json)
                .err()
                .unwrap_or_else(|| panic!("{json} decoded"));
            assert!(error.to_string().contains("unknown field"), "{error}");
        }
    }

    #[test]
    fn pin_keys_are_the_settings_keys() {
        for key in [
            "targets",
            "attempts",
            "labels",
            "labels.region",
            "labels.extra.lane",
        ] {
            assert!(is_setting_key(key), "{key}");
        }
        for key in ["collector_url", "labels.gateway", "labels.extra.Bad", "x"] {
            assert!(!is_setting_key(key), "{key}");
        }
    }

    #[test]
    fn a_state_knows_what_it_runs_or_refused() {
        let state = ConfigState {
            applied: Some("0123456789abcdef".into()),
            rejected: Some(Rejection {
                version: "fedcba9876543210".into(),
                reason: "targets[0].ca_file: not found".into(),
            }),
        };
        assert_eq!(state.validate("config"), Ok(()));
        assert!(state.knows("0123456789abcdef") && state.knows("fedcba9876543210"));
        assert!(!state.knows("0000000000000000"));
        let bad = ConfigState {
            applied: Some("XYZ".into()),
            rejected: None,
        };
        assert_eq!(
            bad.validate("reports[0].config").map_err(|e| e.field),
            Err("reports[0].config.applied".to_string())
        );
    }
}
