//! The fleet secret: read from `POSMON_FLEET_SECRET` or from a file in the data directory, which
//! `serve` creates with a random secret and mode 0600 on first start. Only `serve` creates it:
//! `token` reads an existing secret or fails naming where it looked, so it never prints tokens
//! that the running collector would refuse. Secrets are never logged.

use std::io::Write;
use std::path::{Path, PathBuf};

use posmon_protocol::{FleetKey, Keyring};

use crate::config::Config;

/// The environment variable that, when set, holds the current fleet secret.
pub const SECRET_ENV: &str = "POSMON_FLEET_SECRET";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create fleet secret file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read fleet secret file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin token: {0}")]
    AdminToken(String),
    #[error("cannot generate a random fleet secret: {0}")]
    Random(String),
    #[error("fleet key {id}: {source}")]
    Key {
        id: String,
        source: posmon_protocol::CredentialError,
    },
    #[error("no fleet secret in data directory {data_dir} (looked for {path}): start `posmon-collector serve` once with this data directory (it creates the secret), pass the collector's data directory with --data-dir or its config with --config, or set {SECRET_ENV}")]
    Missing { data_dir: PathBuf, path: PathBuf },
}

/// Where the current fleet secret came from, for the `token` command to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Environment,
    File(PathBuf),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Environment => write!(formatter, "the environment variable {SECRET_ENV}"),
            SecretSource::File(path) => write!(formatter, "the file {}", path.display()),
        }
    }
}

/// The environment variable that, when set, holds the admin token of the policy endpoints.
pub const ADMIN_TOKEN_ENV: &str = "POSMON_ADMIN_TOKEN";

/// Tokens shorter than this are too easy to guess.
const ADMIN_TOKEN_MIN_CHARS: usize = 16;

/// The admin token from `POSMON_ADMIN_TOKEN` (its value `env_token`) or from
/// `auth.admin_token_file`; `None` when neither is set.
pub fn load_admin_token(
    config: &Config,
    env_token: Option<String>,
) -> Result<Option<String>, SecretError> {
    let token = match env_token.filter(|value| !value.trim().is_empty()) {
        Some(value) => value.trim().to_string(),
        None => match &config.auth.admin_token_file {
            Some(file) => {
                let path = config.in_data_dir(file);
                String::from_utf8_lossy(&read(&path)?).trim().to_string()
            }
            None => return Ok(None),
        },
    };
    if token.chars().count() < ADMIN_TOKEN_MIN_CHARS || token.chars().any(char::is_whitespace) {
        return Err(SecretError::AdminToken(format!(
            "must be at least {ADMIN_TOKEN_MIN_CHARS} characters without spaces"
        )));
    }
    Ok(Some(token))
}

/// Loads the keyring the config describes, creating the current secret file when absent and
/// `POSMON_FLEET_SECRET` is not set. `env_secret` is that variable's value.
pub fn load_keyring(config: &Config, env_secret: Option<String>) -> Result<Keyring, SecretError> {
    let current_secret = match env_secret.filter(|value| !value.trim().is_empty()) {
        Some(value) => value.trim().as_bytes().to_vec(),
        None => read_or_create(&config.in_data_dir(&config.auth.secret_file))?,
    };
    keyring(config, current_secret)
}

/// Loads the keyring the config describes without creating anything: with neither
/// `POSMON_FLEET_SECRET` (`env_secret`) nor the secret file, [`SecretError::Missing`] names the
/// data directory and the file it looked for.
pub fn load_existing_keyring(
    config: &Config,
    env_secret: Option<String>,
) -> Result<(Keyring, SecretSource), SecretError> {
    let (current_secret, source) = match env_secret.filter(|value| !value.trim().is_empty()) {
        Some(value) => (value.trim().as_bytes().to_vec(), SecretSource::Environment),
        None => {
            let path = config.in_data_dir(&config.auth.secret_file);
            match read(&path) {
                Ok(secret) => (secret, SecretSource::File(path)),
                Err(SecretError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Err(SecretError::Missing {
                        data_dir: config.data_dir.clone(),
                        path,
                    });
                }
                Err(other) => return Err(other),
            }
        }
    };
    Ok((keyring(config, current_secret)?, source))
}

/// The current key from `current_secret` and the previous keys from their files.
fn keyring(config: &Config, current_secret: Vec<u8>) -> Result<Keyring, SecretError> {
    let current = key(&config.auth.key_id, current_secret)?;
    let mut previous = Vec::new();
    for old in &config.auth.previous_keys {
        let path = config.in_data_dir(&old.secret_file);
        previous.push(key(&old.id, read(&path)?)?);
    }
    Ok(Keyring::new(current, previous))
}

fn key(id: &str, secret: Vec<u8>) -> Result<FleetKey, SecretError> {
    FleetKey::new(id, secret).map_err(|source| SecretError::Key {
        id: id.to_string(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.trim().as_bytes().to_vec())
}

fn read_or_create(path: &Path) -> Result<Vec<u8>, SecretError> {
    match read(path) {
        Err(SecretError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            create(path)
        }
        other => other,
    }
}

fn create(path: &Path) -> Result<Vec<u8>, SecretError> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        create_private_dir(parent).map_err(|source| SecretError::CreateDir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|error| SecretError::Random(error.to_string()))?;
    let secret: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let create_error = |source| SecretError::Create {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(create_error)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(create_error)?;
    tracing::info!(path = %path.display(), "Created a new fleet secret.");
    Ok(secret.into_bytes())
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use posmon_protocol::terminal_token;

    fn config_in(dir: &Path) -> Config {
        Config {
            data_dir: dir.join("data"),
            ..Config::default()
        }
    }

    #[test]
    fn the_secret_file_is_created_once_with_safe_permissions() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let config = config_in(dir.path());
        let first = load_keyring(&config, None).unwrap_or_else(|error| panic!("{error}"));
        let second = load_keyring(&config, None).unwrap_or_else(|error| panic!("{error}"));
        let token = terminal_token(first.current(), "T-1");
        assert_eq!(
            second.verify(&token, "T-1"),
            Ok(()),
            "the same secret is read back"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = config.data_dir.join("fleet-secret");
            let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600));
        }
    }

    #[test]
    fn the_environment_overrides_the_file_and_previous_keys_must_exist() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let mut config = config_in(dir.path());
        let ring = load_keyring(&config, Some("an environment secret".into()))
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            !config.data_dir.exists(),
            "no file is created when the variable is set"
        );
        let expected = FleetKey::new("k1", b"an environment secret".to_vec())
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            ring.verify(&terminal_token(&expected, "T-9"), "T-9"),
            Ok(())
        );

        config.auth.previous_keys.push(crate::config::PreviousKey {
            id: "k0".into(),
            secret_file: "missing".into(),
        });
        let error = load_keyring(&config, Some("an environment secret".into())).err();
        assert!(matches!(error, Some(SecretError::Read { .. })), "{error:?}");
        let short = load_keyring(&config_in(dir.path()), Some("short".into())).err();
        assert!(
            short.is_some_and(|e| e.to_string().contains("at least 16 bytes")),
            "a short secret is refused"
        );
    }

    #[test]
    fn the_token_command_never_creates_a_secret_and_names_where_it_looked() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let config = config_in(dir.path());
        let error = load_existing_keyring(&config, None).err();
        let message = error.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            matches!(error, Some(SecretError::Missing { .. })),
            "{message}"
        );
        assert!(
            message.contains(&config.data_dir.display().to_string())
                && message.contains("posmon-collector serve")
                && message.contains(SECRET_ENV),
            "{message}"
        );
        assert!(!config.data_dir.exists(), "nothing was created");

        let (ring, source) = load_existing_keyring(&config, Some("an environment secret".into()))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(source, SecretSource::Environment);
        let created = load_keyring(&config, None).unwrap_or_else(|error| panic!("{error}"));
        let (read, source) =
            load_existing_keyring(&config, None).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            source,
            SecretSource::File(config.data_dir.join("fleet-secret"))
        );
        let token = terminal_token(created.current(), "T-1");
        assert_eq!(read.verify(&token, "T-1"), Ok(()));
        assert!(ring.verify(&token, "T-1").is_err());
    }
}
