//! `posmon-agent enroll`: trades a one-time enrollment code, which an administrator created at
//! the collector for this terminal, for the terminal's token, and writes it to the config's
//! `token_file`.
//!
//! The code comes from [`CODE_ENV`] or one line of standard input ([`read_code`]), never the
//! command line: `ps` and shell histories show command lines.
//!
//! The token file is written atomically (a temporary file in the same directory, given its mode
//! 0640 and, when run as root, its group — the directory's: `/etc/posmon` owned
//! `root:posmon-agent` makes the token readable by the service and nobody else — through its
//! open descriptor before the token is in it, fsynced, renamed over the target, then the
//! directory fsynced; that last step failing is only a warning, the token being in place). The
//! temporary file is created before the collector is asked, so a directory that cannot be
//! written does not waste the code; an existing token file is kept unless `force`.
//!
//! What this module must never do: print or log the code or the token.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use posmon_protocol::enroll::{normalize_code, CodeError, EnrollRequest, Enrolled, ENROLL_PATH};
use posmon_protocol::ErrorBody;
use reqwest::StatusCode;

use crate::backoff::retry_after;
use crate::config::{AgentConfig, TOKEN_ENV};
use crate::deliver::{error_chain, read_answer, DeliveryError};

/// The environment variable the code comes from; without it, standard input.
pub const CODE_ENV: &str = "POSMON_ENROLL_CODE";
/// The longest line of standard input taken for a code: a code is 19 characters, and a person
/// may type spaces around it.
const CODE_LINE_MAX_BYTES: u64 = 256;
/// The prompt on standard error when standard input is a terminal.
pub const CODE_PROMPT: &str = "Enrollment code / 注册码: ";
/// The token file's mode: the service's group reads it, nobody else.
pub const TOKEN_FILE_MODE: u32 = 0o640;
/// The largest answer read: an enrollment or an error is a few hundred bytes.
const ANSWER_MAX_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    // The cause follows in the error chain the binary prints.
    #[error("the enrollment code")]
    Code(#[from] CodeError),
    #[error("no enrollment code: set {CODE_ENV} or give the code on standard input")]
    NoCode,
    #[error("the enrollment code on standard input: {0}")]
    CodeInput(String),
    #[error("config key token_file: not set; enroll writes the token there")]
    NoTokenFile,
    #[error("config key token: the token is set inline and would be used instead of token_file: remove it first")]
    InlineToken,
    #[error("{0} exists already: pass --force to replace it")]
    Exists(PathBuf),
    #[error("config key token_file: cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] DeliveryError),
    #[error("cannot reach the collector at {url}: {problem}")]
    Unreachable { url: String, problem: String },
    #[error("the collector refused the code: {0} (ask the administrator for a new one)")]
    InvalidCode(String),
    #[error("the collector refuses enrollments for now (too many failed attempts or too many at once): try again in {0} s")]
    TryLater(u64),
    #[error("the collector refused the enrollment ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the collector's answer is not a usable enrollment: {0}")]
    Answer(String),
}

/// What an enrollment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub terminal_id: String,
    pub token_file: PathBuf,
    pub key_id: String,
    pub generation: u32,
    /// Whether a token file was there before (replaced under `--force`).
    pub replaced: bool,
    /// The group the file was given (run as root), by id.
    pub group: Option<u32>,
    /// Something to tell although the token was written (its directory not synced to disk).
    pub warning: Option<String>,
}

/// The code: [`CODE_ENV`] when set and not empty (`from_env`), else one line of `input`, a
/// prompt first written to `prompt_to` when `interactive` (a person at a terminal). Not yet
/// checked as a code: [`enroll`] does that.
pub fn read_code(
    from_env: Option<OsString>,
    input: &mut impl BufRead,
    interactive: bool,
    prompt_to: &mut impl Write,
) -> Result<String, EnrollError> {
    if let Some(value) = from_env.filter(|value| !value.is_empty()) {
        return value
            .into_string()
            .map_err(|_| EnrollError::CodeInput(format!("{CODE_ENV} is not text")));
    }
    if interactive {
        // A prompt that cannot be written is no reason not to read the answer.
        let _ = write!(prompt_to, "{CODE_PROMPT}").and_then(|()| prompt_to.flush());
    }
    let mut line = Vec::new();
    input
        .take(CODE_LINE_MAX_BYTES + 1)
        .read_until(b'\n', &mut line)
        .map_err(|error| EnrollError::CodeInput(error.to_string()))?;
    if u64::try_from(line.len()).map_or(true, |length| length > CODE_LINE_MAX_BYTES) {
        return Err(EnrollError::CodeInput(format!(
            "the line is longer than {CODE_LINE_MAX_BYTES} bytes"
        )));
    }
    let line = String::from_utf8(line)
        .map_err(|_| EnrollError::CodeInput("the line is not text".to_string()))?;
    let code = line.trim();
    if code.is_empty() {
        return Err(EnrollError::NoCode);
    }
    Ok(code.to_string())
}

/// Enrolls `config`'s terminal with `typed_code`: asks the collector for the token and writes
/// it to the token file.
pub async fn enroll(
    config: &AgentConfig,
    typed_code: &str,
    force: bool,
) -> Result<Enrollment, EnrollError> {
    let code = normalize_code(typed_code)?;
    if config.token.is_some() {
        return Err(EnrollError::InlineToken);
    }
    let path = config.token_file.clone().ok_or(EnrollError::NoTokenFile)?;
    let replaced = path.symlink_metadata().is_ok();
    let prepared = PreparedTokenFile::create(&path, force)?;
    let enrolled = ask(config, code).await?;
    check_answer(&enrolled, &config.terminal_id)?;
    let committed = prepared.commit(&enrolled.token)?;
    Ok(Enrollment {
        terminal_id: enrolled.terminal_id,
        token_file: path,
        key_id: enrolled.key_id,
        generation: enrolled.generation,
        replaced,
        group: committed.group,
        warning: committed.warning,
    })
}

/// The collector's answer to the code.
async fn ask(config: &AgentConfig, code: String) -> Result<Enrolled, EnrollError> {
    let url = reqwest::Url::parse(&config.collector_url)
        .and_then(|base| base.join(ENROLL_PATH))
        .map_err(|error| DeliveryError::Url(error.to_string()))?;
    let client = crate::deliver::collector_client_builder(config)?
        .build()
        .map_err(DeliveryError::Client)?;
    let request = EnrollRequest {
        terminal_id: config.terminal_id.clone(),
        code,
    };
    let unreachable = |problem: String| EnrollError::Unreachable {
        url: config.collector_url.clone(),
        problem,
    };
    let response = client
        .post(url)
        .json(&request)
        .send()
        .await
        .map_err(|error| unreachable(error_chain(&error)))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| retry_after(value, SystemTime::now()));
    let body = read_answer(response, ANSWER_MAX_BYTES)
        .await
        .map_err(unreachable)?;
    interpret(status, retry_after, &body)
}

/// How long to wait when the collector asks to come back later without saying when.
const TRY_LATER_DEFAULT: Duration = Duration::from_secs(60);

/// The enrollment in an answer, or the error it says.
fn interpret(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Enrolled, EnrollError> {
    if status == StatusCode::OK {
        return serde_json::from_slice(body)
            .map_err(|error| EnrollError::Answer(error.to_string()));
    }
    // The collector's reason and message, bounded and printable; else the status alone.
    let (reason, message) = serde_json::from_slice::<ErrorBody>(body)
        .map(|error| (error.error.reason, error.error.message))
        .unwrap_or_else(|_| (String::new(), "no error message".to_string()));
    let message = message
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect::<String>();
    Err(match status {
        StatusCode::FORBIDDEN if reason == "invalid_code" => EnrollError::InvalidCode(message),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            let wait = retry_after.unwrap_or(TRY_LATER_DEFAULT);
            EnrollError::TryLater(wait.as_secs().max(1))
        }
        _ => EnrollError::Refused {
            status: status.as_u16(),
            message,
        },
    })
}

/// Refuses an answer for another terminal or with a token that is not one of its key and
/// generation (`<key_id>.<signature>` at generation 0, `<key_id>.<generation>.<signature>`).
fn check_answer(enrolled: &Enrolled, terminal_id: &str) -> Result<(), EnrollError> {
    if enrolled.terminal_id != terminal_id {
        return Err(EnrollError::Answer(format!(
            "it is for terminal {:?}, not {terminal_id:?}",
            enrolled.terminal_id.chars().take(64).collect::<String>()
        )));
    }
    let token = &enrolled.token;
    let printable = (1..=256).contains(&token.len()) && token.chars().all(|c| c.is_ascii_graphic());
    let prefix = if enrolled.generation == 0 {
        format!("{}.", enrolled.key_id)
    } else {
        format!("{}.{}.", enrolled.key_id, enrolled.generation)
    };
    let signature = token.strip_prefix(&prefix).unwrap_or_default();
    let well_formed = printable
        && !enrolled.key_id.is_empty()
        && !signature.is_empty()
        && signature
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !well_formed {
        return Err(EnrollError::Answer(
            "the token is not a well-formed terminal token of the key and generation it names"
                .into(),
        ));
    }
    Ok(())
}

/// A token file about to be written: its temporary file, created (empty) before the collector
/// is asked; removed unless committed.
struct PreparedTokenFile {
    path: PathBuf,
    temporary: PathBuf,
    file: Option<File>,
}

impl PreparedTokenFile {
    fn create(path: &Path, force: bool) -> Result<Self, EnrollError> {
        let write_error = |source| EnrollError::Write {
            path: path.to_path_buf(),
            source,
        };
        if !force && path.symlink_metadata().is_ok() {
            return Err(EnrollError::Exists(path.to_path_buf()));
        }
        let name = path
            .file_name()
            .ok_or_else(|| write_error(std::io::Error::other("not a file name")))?;
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(name);
        temporary_name.push(format!(".enroll-{}", std::process::id()));
        let temporary = path.with_file_name(temporary_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(TOKEN_FILE_MODE)
            .open(&temporary)
            .map_err(write_error)?;
        Ok(PreparedTokenFile {
            path: path.to_path_buf(),
            temporary,
            file: Some(file),
        })
    }

    /// Gives the file its mode (and, as root, the directory's group), writes `token`, renames
    /// it into place and makes that durable.
    fn commit(self, token: &str) -> Result<Committed, EnrollError> {
        self.commit_with(token, sync_directory)
    }

    /// [`PreparedTokenFile::commit`] with the directory synced by `sync_directory`.
    fn commit_with(
        mut self,
        token: &str,
        sync_directory: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<Committed, EnrollError> {
        let path = self.path.clone();
        let write_error = |source| EnrollError::Write {
            path: path.clone(),
            source,
        };
        let mut file = self
            .file
            .take()
            .ok_or_else(|| write_error(std::io::Error::other("already written")))?;
        let directory = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Mode and group first, through the open file (whatever its path names by now), so
        // the token is never in a file that others may read: exactly 0640 whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(TOKEN_FILE_MODE))
            .map_err(write_error)?;
        let metadata = file.metadata().map_err(write_error)?;
        // The file was created by this process: its owner is who we run as.
        let group = if metadata.uid() == 0 {
            let group = directory.metadata().map_err(write_error)?.gid();
            std::os::unix::fs::fchown(&file, None, Some(group)).map_err(write_error)?;
            Some(group)
        } else {
            None
        };
        file.write_all(format!("{token}\n").as_bytes())
            .map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        std::fs::rename(&self.temporary, &self.path).map_err(write_error)?;
        // The token is in place and readable: a directory that cannot be synced only means a
        // power loss might undo the rename. Told, not failed: failing would leave the terminal
        // with a token file but the code spent and an error saying it is not enrolled.
        let warning = sync_directory(&directory).err().map(|error| {
            format!(
                "Warning: the token is written to {}, but its directory {} could not be synced to disk ({error}): after a power loss, check that the file is there.\n\
                 警告：令牌已写入 {}，但目录 {} 未能同步到磁盘（{error}）：断电后请检查该文件是否还在。",
                self.path.display(),
                directory.display(),
                self.path.display(),
                directory.display(),
            )
        });
        Ok(Committed { group, warning })
    }
}

/// What writing the token file did.
struct Committed {
    /// The group the file was given (run as root), by id.
    group: Option<u32>,
    /// Why the write may not survive a power loss, if it may not.
    warning: Option<String>,
}

/// Makes a rename in `directory` durable.
fn sync_directory(directory: &Path) -> std::io::Result<()> {
    File::open(directory)?.sync_all()
}

impl Drop for PreparedTokenFile {
    fn drop(&mut self) {
        // Not committed (or failed on the way): leave nothing behind.
        if self.temporary.exists() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// What `posmon-agent enroll` prints when done, in English and Simplified Chinese.
pub fn describe(enrollment: &Enrollment, collector_url: &str) -> String {
    let group = enrollment
        .group
        .map(|gid| format!(", group {gid}"))
        .unwrap_or_default();
    let verb = if enrollment.replaced {
        "replaced"
    } else {
        "wrote"
    };
    let mut text = format!(
        "Enrolled terminal {} with the collector at {collector_url}: {verb} its token (key {}, generation {}) to {} (mode 0640{group}).\n\
         终端 {} 已向采集端注册：令牌已写入 {}。\n\
         Next: posmon-agent check-config, then start the agent (systemctl restart posmon-agent).",
        enrollment.terminal_id,
        enrollment.key_id,
        enrollment.generation,
        enrollment.token_file.display(),
        enrollment.terminal_id,
        enrollment.token_file.display(),
    );
    if std::env::var_os(TOKEN_ENV).is_some_and(|value| !value.is_empty()) {
        text.push_str(&format!(
            "\nNote: {TOKEN_ENV} is set in this environment; where it is set, it is used instead of the token file."
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrolled(token: &str, key_id: &str, generation: u32) -> Enrolled {
        Enrolled {
            token: token.into(),
            terminal_id: "T-1".into(),
            key_id: key_id.into(),
            generation,
        }
    }

    #[test]
    fn only_a_well_formed_token_for_this_terminal_is_taken() {
        let key = posmon_protocol::FleetKey::new("k1", b"0123456789abcdef0123".to_vec())
            .unwrap_or_else(|error| panic!("{error}"));
        for generation in [0, 1, 42] {
            let token = posmon_protocol::terminal_token_at(&key, "T-1", generation);
            assert!(check_answer(&enrolled(&token, "k1", generation), "T-1").is_ok());
            assert!(check_answer(&enrolled(&token, "k1", generation), "T-2").is_err());
            assert!(check_answer(&enrolled(&token, "k2", generation), "T-1").is_err());
            assert!(check_answer(&enrolled(&token, "k1", generation + 1), "T-1").is_err());
        }
        for bad in [
            "",
            "k1.",
            "k1.a b",
            "k1.abc\n",
            &format!("k1.{}", "a".repeat(300)),
        ] {
            assert!(
                check_answer(&enrolled(bad, "k1", 0), "T-1").is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn answers_become_enrollments_or_clear_errors() {
        let error = |reason: &str, message: &str| {
            format!(r#"{{"error":{{"reason":"{reason}","field":"code","message":"{message}"}}}}"#)
        };
        let ok = r#"{"token":"k1.abc","terminal_id":"T-1","key_id":"k1","generation":0}"#;
        assert!(interpret(StatusCode::OK, None, ok.as_bytes()).is_ok());
        assert!(matches!(
            interpret(StatusCode::OK, None, b"{}"),
            Err(EnrollError::Answer(_))
        ));
        let invalid = error("invalid_code", "invalid or expired code");
        assert!(matches!(
            interpret(StatusCode::FORBIDDEN, None, invalid.as_bytes()),
            Err(EnrollError::InvalidCode(message)) if message == "invalid or expired code"
        ));
        let seconds = |value: &str| retry_after(value, SystemTime::now());
        assert!(matches!(
            interpret(StatusCode::TOO_MANY_REQUESTS, seconds("7"), b""),
            Err(EnrollError::TryLater(7))
        ));
        assert!(matches!(
            interpret(
                StatusCode::SERVICE_UNAVAILABLE,
                seconds("99999999999999999999"),
                b""
            ),
            Err(EnrollError::TryLater(600))
        ));
        assert!(matches!(
            interpret(StatusCode::SERVICE_UNAVAILABLE, None, b""),
            Err(EnrollError::TryLater(60))
        ));
        // Another 403 (a proxy's, say) is not taken for a refused code.
        assert!(matches!(
            interpret(
                StatusCode::FORBIDDEN,
                None,
                error("admin_disabled", "code").as_bytes()
            ),
            Err(EnrollError::Refused { status: 403, .. })
        ));
        let hostile = error("x", "a\\u001b[31mred");
        assert!(matches!(
            interpret(StatusCode::BAD_REQUEST, None, hostile.as_bytes()),
            Err(EnrollError::Refused { status: 400, message }) if message == "a[31mred"
        ));
    }

    /// Checks what [`read_code`] makes of `from_env` and `input`: `expected` the code or the
    /// error's text, `prompt` what it wrote to standard error.
    fn check(
        from_env: Option<&str>,
        input: &[u8],
        interactive: bool,
        expected: &str,
        prompt: &str,
    ) {
        let mut written = Vec::new();
        let code = read_code(
            from_env.map(OsString::from),
            &mut &input[..],
            interactive,
            &mut written,
        )
        .unwrap_or_else(|error| format!("error: {error}"));
        assert_eq!(
            (code.as_str(), String::from_utf8_lossy(&written).as_ref()),
            (expected, prompt),
            "{from_env:?} {:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn the_code_comes_from_the_environment_or_one_line_of_standard_input() {
        let none =
            "error: no enrollment code: set POSMON_ENROLL_CODE or give the code on standard input";
        // The environment first; then input is not read and nothing is asked.
        check(Some("7K3Q-M2XD"), b"other\n", true, "7K3Q-M2XD", "");
        // Empty is not set.
        check(Some(""), b" 7k3q-m2xd \n", false, "7k3q-m2xd", "");
        check(
            None,
            b"7K3Q-M2XD-9RTB-04HF\r\nmore\n",
            false,
            "7K3Q-M2XD-9RTB-04HF",
            "",
        );
        // Asked only when a person is at a terminal.
        check(None, b"7K3Q", true, "7K3Q", CODE_PROMPT);
        check(None, b"", false, none, "");
        check(None, b"   \n", true, none, CODE_PROMPT);
        let too_long =
            "error: the enrollment code on standard input: the line is longer than 256 bytes";
        check(
            None,
            format!("{}\n", "7".repeat(300)).as_bytes(),
            false,
            too_long,
            "",
        );
        let not_text = "error: the enrollment code on standard input: the line is not text";
        check(None, b"\xff\xfe\n", false, not_text, "");
        // Exactly the bound is still a line.
        check(None, &[b'7'; 256], false, &"7".repeat(256), "");
    }

    #[test]
    fn the_token_file_is_written_whole_with_its_mode_and_kept_unless_forced() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let path = dir.path().join("agent-token");
        let root = dir.path().metadata().map(|m| m.uid() == 0).unwrap_or(false);
        if root {
            // As /etc/posmon owned root:posmon-agent: a group that is not root's own.
            std::os::unix::fs::chown(dir.path(), None, Some(4242))
                .unwrap_or_else(|error| panic!("{error}"));
        }
        let prepared =
            PreparedTokenFile::create(&path, false).unwrap_or_else(|error| panic!("{error}"));
        assert!(!path.exists(), "nothing in place before the token is there");
        let committed = prepared
            .commit("k1.secret")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(committed.warning, None);
        let group = committed.group;
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("k1.secret\n")
        );
        let metadata = std::fs::metadata(&path).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(metadata.permissions().mode() & 0o7777, TOKEN_FILE_MODE);
        if root {
            assert_eq!(
                (group, metadata.gid(), metadata.uid()),
                (Some(4242), 4242, 0)
            );
        } else {
            assert_eq!(group, None, "only root gives the file another group");
        }
        assert!(matches!(
            PreparedTokenFile::create(&path, false),
            Err(EnrollError::Exists(_))
        ));
        // Abandoned (the collector refused): the old file stays, no temporary is left.
        drop(PreparedTokenFile::create(&path, true).unwrap_or_else(|error| panic!("{error}")));
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("k1.secret\n")
        );
        let names = || {
            std::fs::read_dir(dir.path())
                .map(|entries| entries.filter_map(Result::ok).count())
                .unwrap_or(0)
        };
        assert_eq!(names(), 1);
        let forced =
            PreparedTokenFile::create(&path, true).unwrap_or_else(|error| panic!("{error}"));
        assert!(forced.commit("k1.other").is_ok());
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("k1.other\n")
        );
        assert_eq!(names(), 1);
        // A directory that cannot be synced after the rename: the token is written all the
        // same, with a warning naming the directory.
        let unsynced =
            PreparedTokenFile::create(&path, true).unwrap_or_else(|error| panic!("{error}"));
        let committed = unsynced
            .commit_with("k1.third", |_| Err(std::io::Error::other("sync refused")))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("k1.third\n")
        );
        let warning = committed.warning.unwrap_or_default();
        assert!(
            warning.contains("sync refused")
                && warning.contains(&dir.path().display().to_string())
                && warning.contains("警告")
                && !warning.contains("k1.third"),
            "{warning}"
        );
        assert_eq!(names(), 1);
        // A directory that is not there fails before the collector is asked.
        assert!(matches!(
            PreparedTokenFile::create(&dir.path().join("missing/agent-token"), false),
            Err(EnrollError::Write { .. })
        ));
    }
}
