//! Software inventory: the versions of the operating system, the kernel, the agent and every
//! configured component, each read from a file (plus an optional regex), a command's output
//! (plus a regex, bounded by a timeout) or a `key=value` property file. A source that cannot be
//! read yields an "unknown" version with the reason, never an error.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use posmon_protocol::{limits, ComponentVersion};

use crate::config::ComponentConfig;

/// The most bytes read from a version file.
const VERSION_FILE_MAX_BYTES: u64 = 64 * 1024;

/// A component source with its regex compiled once.
pub struct ComponentSource {
    config: ComponentConfig,
    regex: Option<regex_lite::Regex>,
}

impl ComponentSource {
    /// Compiles the source's regex; config validation has already checked it compiles.
    pub fn new(config: &ComponentConfig) -> Result<Self, regex_lite::Error> {
        let regex = config
            .regex
            .as_deref()
            .map(regex_lite::Regex::new)
            .transpose()?;
        Ok(ComponentSource {
            config: config.clone(),
            regex,
        })
    }

    async fn read(&self) -> ComponentVersion {
        let config = &self.config;
        let (text, origin) = if let Some(path) = &config.file {
            match read_file(path) {
                Ok(text) => (text, path.display().to_string()),
                Err(reason) => return unknown(&reason),
            }
        } else if let Some(command) = &config.command {
            let timeout = Duration::from_secs(config.timeout_seconds);
            let program = command.first().cloned().unwrap_or_default();
            match crate::command::run(command, timeout).await {
                Ok(finished) if finished.status.success() => {
                    (finished.stdout, format!("the output of {program}"))
                }
                Ok(finished) => return unknown(&format!("{program} {}", finished.status)),
                Err(reason) => return unknown(&reason),
            }
        } else if let (Some(path), Some(key)) = (&config.properties, &config.key) {
            match read_file(path) {
                Ok(text) => match property(&text, key) {
                    Some(value) => (value, path.display().to_string()),
                    None => {
                        return unknown(&format!("no key {key} in {}", path.display()));
                    }
                },
                Err(reason) => return unknown(&reason),
            }
        } else {
            return unknown("no source configured");
        };
        match self.find_version(&text) {
            Some(version) => ComponentVersion::known(bounded(&version, limits::VERSION_MAX_CHARS)),
            None => unknown(&format!("no version found in {origin}")),
        }
    }

    /// The regex's first capture group (or whole match), else the first non-empty line.
    fn find_version(&self, text: &str) -> Option<String> {
        let found = match &self.regex {
            Some(regex) => regex.captures(text).and_then(|captures| {
                captures
                    .get(1)
                    .or_else(|| captures.get(0))
                    .map(|found| found.as_str().trim().to_string())
            }),
            None => text
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(str::to_string),
        };
        found.filter(|version| !version.is_empty())
    }
}

fn unknown(reason: &str) -> ComponentVersion {
    ComponentVersion::unknown(bounded(reason, limits::DETAIL_MAX_CHARS))
}

fn read_file(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(VERSION_FILE_MAX_BYTES).read_to_string(&mut text))
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(text)
}

/// The value of `key` in a `key=value` file (`#` and `!` start comments; quotes are removed).
fn property(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('!') {
            return None;
        }
        let (name, value) = line.split_once('=').or_else(|| line.split_once(':'))?;
        (name.trim() == key).then(|| {
            value
                .trim()
                .trim_matches('"')
                .trim_matches('\'')
                .to_string()
        })
    })
}

/// `text` without control characters, cut to at most `max_chars` characters.
pub fn bounded(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

fn known_or(value: Option<String>, reason: &str) -> ComponentVersion {
    match value
        .map(|value| bounded(value.trim(), limits::VERSION_MAX_CHARS))
        .filter(|value| !value.is_empty())
    {
        Some(value) => ComponentVersion::known(value),
        None => ComponentVersion::unknown(reason),
    }
}

/// Every component's version, read now.
pub async fn inventory(sources: &[ComponentSource]) -> BTreeMap<String, ComponentVersion> {
    let mut software = BTreeMap::new();
    software.insert(
        "os".to_string(),
        known_or(
            sysinfo::System::long_os_version(),
            "the OS does not report its version",
        ),
    );
    software.insert(
        "kernel".to_string(),
        known_or(
            sysinfo::System::kernel_version(),
            "the OS does not report its kernel version",
        ),
    );
    software.insert(
        "agent".to_string(),
        ComponentVersion::known(env!("CARGO_PKG_VERSION")),
    );
    for source in sources {
        software.insert(source.config.name.clone(), source.read().await);
    }
    software
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The source kinds a test can configure; `FILE` in a path or reason is the test's file.
    enum Source<'a> {
        File(Option<&'a str>),
        Properties(&'a str, &'a str),
        Command(&'a [&'a str]),
    }

    async fn check(source: Source<'_>, regex: Option<&str>, expected: ComponentVersion) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("VERSION");
        let mut config = ComponentConfig {
            name: "pos_app".into(),
            file: None,
            command: None,
            properties: None,
            key: None,
            regex: regex.map(str::to_string),
            timeout_seconds: 1,
        };
        match source {
            Source::File(content) => {
                if let Some(content) = content {
                    std::fs::write(&file, content).unwrap();
                }
                config.file = Some(file.clone());
            }
            Source::Properties(content, key) => {
                std::fs::write(&file, content).unwrap();
                config.properties = Some(file.clone());
                config.key = Some(key.into());
            }
            Source::Command(words) => {
                config.command = Some(words.iter().map(|word| word.to_string()).collect());
            }
        }
        let got = ComponentSource::new(&config).unwrap().read().await;
        let expected = match expected.unknown_reason {
            Some(reason) => {
                ComponentVersion::unknown(reason.replace("FILE", &file.display().to_string()))
            }
            None => expected,
        };
        assert_eq!(got, expected, "{regex:?}");
    }

    #[tokio::test]
    async fn versions_come_from_files_and_regexes() {
        use Source::File;
        check(
            File(Some("\n  2.3.1 \nignored\n")),
            None,
            ComponentVersion::known("2.3.1"),
        )
        .await;
        check(
            File(Some("name=pos\nversion=V2.3.1_20240501\n")),
            Some(r"version=(\S+)"),
            ComponentVersion::known("V2.3.1_20240501"),
        )
        .await;
        check(
            File(Some("release 7.1")),
            Some(r"\d+\.\d+"),
            ComponentVersion::known("7.1"),
        )
        .await;
        check(
            File(Some("nothing here")),
            Some(r"version=(\S+)"),
            ComponentVersion::unknown("no version found in FILE"),
        )
        .await;
        check(
            File(Some("")),
            None,
            ComponentVersion::unknown("no version found in FILE"),
        )
        .await;
        check(
            File(None),
            None,
            ComponentVersion::unknown("cannot read FILE: No such file or directory (os error 2)"),
        )
        .await;
        check(
            File(Some(&"9".repeat(200))),
            None,
            ComponentVersion::known("9".repeat(64)),
        )
        .await;
    }

    #[tokio::test]
    async fn versions_come_from_property_files() {
        use Source::Properties;
        let text = "# build info\nro.build.display.id = PAX_A920_V08.1.12\nemv.kernel=\"4.3e\"\n";
        check(
            Properties(text, "emv.kernel"),
            None,
            ComponentVersion::known("4.3e"),
        )
        .await;
        check(
            Properties(text, "ro.build.display.id"),
            Some(r"V([\d.]+)"),
            ComponentVersion::known("08.1.12"),
        )
        .await;
        check(
            Properties(text, "missing"),
            None,
            ComponentVersion::unknown("no key missing in FILE"),
        )
        .await;
    }

    #[tokio::test]
    async fn versions_come_from_commands_bounded_in_time() {
        use Source::Command;
        check(
            Command(&["echo", "firmware", "FW-3.2.0-build7"]),
            Some(r"FW-(\S+)"),
            ComponentVersion::known("3.2.0-build7"),
        )
        .await;
        check(
            Command(&["false"]),
            None,
            ComponentVersion::unknown("false exit status: 1"),
        )
        .await;
        check(
            Command(&["sleep", "5"]),
            None,
            ComponentVersion::unknown("sleep did not finish within 1s"),
        )
        .await;
        check(
            Command(&["/nonexistent/fwversion"]),
            None,
            ComponentVersion::unknown(
                "cannot run /nonexistent/fwversion: No such file or directory (os error 2)",
            ),
        )
        .await;
    }

    #[tokio::test]
    async fn the_inventory_always_has_os_kernel_and_agent() {
        let missing = ComponentConfig {
            name: "firmware".into(),
            file: Some(PathBuf::from("/nonexistent/posmon/firmware")),
            command: None,
            properties: None,
            key: None,
            regex: None,
            timeout_seconds: 5,
        };
        let sources = [ComponentSource::new(&missing).unwrap()];
        let software = inventory(&sources).await;
        for name in ["os", "kernel", "agent", "firmware"] {
            assert!(software.contains_key(name), "{name}");
        }
        assert!(software["firmware"].unknown_reason.is_some());
        assert_eq!(
            software["agent"].version.as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
}
