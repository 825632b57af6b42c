//! Software inventory: the versions of the operating system, the kernel, the agent and every
//! configured component. A source that cannot be read yields an "unknown" version with the
//! reason, never an error.

use std::collections::BTreeMap;
use std::io::Read;

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

    fn read(&self) -> ComponentVersion {
        let path = &self.config.file;
        let mut text = String::new();
        let read = std::fs::File::open(path)
            .and_then(|file| file.take(VERSION_FILE_MAX_BYTES).read_to_string(&mut text));
        if let Err(error) = read {
            return ComponentVersion::unknown(bounded(
                &format!("cannot read {}: {error}", path.display()),
                limits::DETAIL_MAX_CHARS,
            ));
        }
        let found = match &self.regex {
            Some(regex) => regex.captures(&text).and_then(|captures| {
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
        match found.filter(|version| !version.is_empty()) {
            Some(version) => ComponentVersion::known(bounded(&version, limits::VERSION_MAX_CHARS)),
            None => ComponentVersion::unknown(bounded(
                &format!("no version found in {}", path.display()),
                limits::DETAIL_MAX_CHARS,
            )),
        }
    }
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
pub fn inventory(sources: &[ComponentSource]) -> BTreeMap<String, ComponentVersion> {
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
        software.insert(source.config.name.clone(), source.read());
    }
    software
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn check(content: Option<&str>, regex: Option<&str>, expected: ComponentVersion) {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let file = dir.path().join("VERSION");
        if let Some(content) = content {
            std::fs::write(&file, content).unwrap_or_else(|error| panic!("{error}"));
        }
        let config = ComponentConfig {
            name: "pos_app".into(),
            file: file.clone(),
            regex: regex.map(str::to_string),
        };
        let source = ComponentSource::new(&config).unwrap_or_else(|error| panic!("{error}"));
        let got = source.read();
        let expected = match expected.unknown_reason {
            Some(reason) => {
                ComponentVersion::unknown(reason.replace("FILE", &file.display().to_string()))
            }
            None => expected,
        };
        assert_eq!(got, expected, "{content:?} {regex:?}");
    }

    #[test]
    fn versions_come_from_files_and_regexes() {
        check(
            Some("\n  2.3.1 \nignored\n"),
            None,
            ComponentVersion::known("2.3.1"),
        );
        check(
            Some("name=pos\nversion=V2.3.1_20240501\n"),
            Some(r"version=(\S+)"),
            ComponentVersion::known("V2.3.1_20240501"),
        );
        check(
            Some("release 7.1"),
            Some(r"\d+\.\d+"),
            ComponentVersion::known("7.1"),
        );
        check(
            Some("nothing here"),
            Some(r"version=(\S+)"),
            ComponentVersion::unknown("no version found in FILE"),
        );
        check(
            Some(""),
            None,
            ComponentVersion::unknown("no version found in FILE"),
        );
        check(
            None,
            None,
            ComponentVersion::unknown("cannot read FILE: No such file or directory (os error 2)"),
        );
        check(
            Some(&"9".repeat(200)),
            None,
            ComponentVersion::known("9".repeat(64)),
        );
    }

    #[test]
    fn the_inventory_always_has_os_kernel_and_agent() {
        let missing = ComponentConfig {
            name: "firmware".into(),
            file: PathBuf::from("/nonexistent/posmon/firmware"),
            regex: None,
        };
        let sources = [ComponentSource::new(&missing).unwrap_or_else(|error| panic!("{error}"))];
        let software = inventory(&sources);
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
