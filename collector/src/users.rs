//! User accounts and their API tokens, in the state database: names, roles, argon2id password
//! hashes (PHC strings) and the SHA-256 of each per-user API token. The admin CLI
//! (`posmon-collector user …`) and the users API both write here; the HTTP edge reads a user's
//! row on every authenticated request, so a disabled user or a changed role takes effect at
//! once, from either process.
//!
//! Never stores or logs a password or a token: only their hashes are kept, and [`Password`]
//! and [`IssuedToken`] print as `[redacted]`.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::http::auth::Role;
use crate::store::{open_migrated, StoreError};

/// Shortest password accepted.
pub const PASSWORD_MIN_CHARS: usize = 10;
/// Longest password accepted, in bytes (argon2 hashes any length; a bound keeps work bounded).
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// Longest user name, in characters.
pub const NAME_MAX_CHARS: usize = 64;
/// Most users stored.
pub const USERS_MAX: usize = 10_000;
/// Most live (unrevoked) API tokens one user may hold.
pub const TOKENS_PER_USER_MAX: usize = 20;
/// Longest token label, in characters.
pub const LABEL_MAX_CHARS: usize = 100;
/// What every per-user API token starts with, so that it is told apart from the legacy tokens
/// (and found by secret scanners).
pub const TOKEN_PREFIX: &str = "pmu_";

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("user database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("no user named {0}")]
    NoSuchUser(String),
    #[error("a user named {0} exists already")]
    Exists(String),
    #[error("{0}")]
    Full(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("cannot draw random bytes: {0}")]
    Random(String),
}

/// A password from a person: never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Checks the length bounds, naming the field in the error.
    pub fn new(text: String) -> Result<Password, UserError> {
        let chars = text.chars().count();
        if chars < PASSWORD_MIN_CHARS || text.len() > PASSWORD_MAX_BYTES {
            return Err(UserError::Invalid {
                field: "password",
                problem: format!(
                    "must be {PASSWORD_MIN_CHARS} characters to {PASSWORD_MAX_BYTES} bytes long"
                ),
            });
        }
        Ok(Password(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Password([redacted])")
    }
}

/// Checks a user name: 1 to 64 letters, digits and `._@-`.
pub fn check_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.chars().count() <= NAME_MAX_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if crate::http::auth::RESERVED_NAMES.contains(&name) {
        return Err(UserError::Invalid {
            field: "name",
            problem: format!("{name} is reserved for a service credential"),
        });
    }
    if ok {
        Ok(())
    } else {
        Err(UserError::Invalid {
            field: "name",
            problem: format!(
                "must be 1 to {NAME_MAX_CHARS} ASCII letters, digits, '.', '_', '@' or '-'"
            ),
        })
    }
}

/// One user, as listed (no hash).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    /// Raised by every password reset: sessions made before it end.
    #[serde(skip)]
    pub generation: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One API token, as listed (never the token itself).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub user: String,
    pub label: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A token just made: its secret is shown once and never again.
pub struct IssuedToken {
    pub info: TokenInfo,
    pub secret: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IssuedToken")
            .field("info", &self.info)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], UserError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|error| UserError::Random(error.to_string()))?;
    Ok(bytes)
}

/// URL-safe base64 without padding: cookie- and header-safe.
pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 of a high-entropy secret (a token or a session id): what is stored.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hasher() -> Argon2<'static> {
    // argon2id v19, m = 19 MiB, t = 2, p = 1: the crate's defaults, OWASP's recommendation.
    Argon2::default()
}

/// The PHC string of `password` under a fresh salt.
pub fn hash_password(password: &Password) -> Result<String, UserError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|error| UserError::Hash(error.to_string()))?;
    hasher()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| UserError::Hash(error.to_string()))
}

/// Whether `password` matches the PHC string `stored` (false for a string that is no hash).
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|hash| hasher().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A hash to verify against when the user does not exist, so that a login for an unknown name
/// takes as long as one for a known name.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    Password::new("posmon-dummy-password".into())
        .and_then(|password| hash_password(&password))
        .unwrap_or_default()
});

fn unix(time: OffsetDateTime) -> i64 {
    time.unix_timestamp()
}

fn from_unix(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn role_of(text: &str) -> Role {
    // An unknown role stored by a newer collector gives the least.
    Role::parse(text).unwrap_or(Role::Viewer)
}

pub struct Users {
    connection: Mutex<Connection>,
}

impl Users {
    /// Opens (creating and migrating) the state database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Users, UserError> {
        Ok(Users {
            connection: Mutex::new(open_migrated(data_dir)?),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether any user exists (disabled ones included).
    pub fn any(&self) -> Result<bool, UserError> {
        Ok(self
            .connection()
            .query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |row| row.get(0))?)
    }

    pub fn add(
        &self,
        name: &str,
        role: Role,
        password: &Password,
        now: OffsetDateTime,
    ) -> Result<User, UserError> {
        check_name(name)?;
        let hash = hash_password(password)?;
        let connection = self.connection();
        let count: i64 =
            connection.query_row("SELECT COUNT(*) FROM users", [], |row| row.get(0))?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= USERS_MAX {
            return Err(UserError::Full(format!(
                "at most {USERS_MAX} users may exist"
            )));
        }
        let inserted = connection.execute(
            "INSERT OR IGNORE INTO users (name, role, password_hash, disabled, generation, created_at, updated_at)
             VALUES (?1, ?2, ?3, 0, 0, ?4, ?4)",
            params![name, role.as_str(), hash, unix(now)],
        )?;
        if inserted == 0 {
            return Err(UserError::Exists(name.to_string()));
        }
        Ok(User {
            name: name.to_string(),
            role,
            disabled: false,
            generation: 0,
            created_at: from_unix(unix(now)),
        })
    }

    pub fn get(&self, name: &str) -> Result<Option<User>, UserError> {
        Ok(self
            .connection()
            .query_row(
                "SELECT name, role, disabled, generation, created_at FROM users WHERE name = ?1",
                [name],
                user_row,
            )
            .optional()?)
    }

    pub fn list(&self) -> Result<Vec<User>, UserError> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT name, role, disabled, generation, created_at FROM users ORDER BY name",
        )?;
        let users = statement
            .query_map([], user_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(users)
    }

    fn update(
        &self,
        name: &str,
        sql: &str,
        value: &dyn rusqlite::ToSql,
    ) -> Result<User, UserError> {
        let changed = self
            .connection()
            .execute(sql, params![value, name, unix(OffsetDateTime::now_utc())])?;
        if changed == 0 {
            return Err(UserError::NoSuchUser(name.to_string()));
        }
        self.get(name)?
            .ok_or_else(|| UserError::NoSuchUser(name.to_string()))
    }

    pub fn set_role(&self, name: &str, role: Role) -> Result<User, UserError> {
        self.update(
            name,
            "UPDATE users SET role = ?1, updated_at = ?3 WHERE name = ?2",
            &role.as_str(),
        )
    }

    pub fn set_disabled(&self, name: &str, disabled: bool) -> Result<User, UserError> {
        self.update(
            name,
            "UPDATE users SET disabled = ?1, updated_at = ?3 WHERE name = ?2",
            &disabled,
        )
    }

    /// Sets a new password and raises the user's generation: every session made before ends.
    pub fn reset_password(&self, name: &str, password: &Password) -> Result<User, UserError> {
        let hash = hash_password(password)?;
        self.update(
            name,
            "UPDATE users SET password_hash = ?1, generation = generation + 1, updated_at = ?3 WHERE name = ?2",
            &hash,
        )
    }

    /// The user if `password` is theirs and they are not disabled. Takes an argon2
    /// verification whether or not the user exists.
    pub fn check_password(&self, name: &str, password: &str) -> Result<Option<User>, UserError> {
        let found: Option<(User, Option<String>)> = self
            .connection()
            .query_row(
                "SELECT name, role, disabled, generation, created_at, password_hash FROM users WHERE name = ?1",
                [name],
                |row| Ok((user_row(row)?, row.get::<_, Option<String>>(5)?)),
            )
            .optional()?;
        match found {
            Some((user, Some(hash))) => {
                let matches = verify_password(password, &hash);
                Ok((matches && !user.disabled).then_some(user))
            }
            _ => {
                verify_password(password, &DUMMY_HASH);
                Ok(None)
            }
        }
    }

    /// Makes an API token for `user` with `role` (at most the user's own).
    pub fn issue_token(
        &self,
        user: &str,
        role: Role,
        label: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedToken, UserError> {
        if label.chars().count() > LABEL_MAX_CHARS || label.chars().any(char::is_control) {
            return Err(UserError::Invalid {
                field: "label",
                problem: format!(
                    "must be at most {LABEL_MAX_CHARS} characters, no control characters"
                ),
            });
        }
        let owner = self
            .get(user)?
            .ok_or_else(|| UserError::NoSuchUser(user.to_string()))?;
        if role > owner.role {
            return Err(UserError::Invalid {
                field: "role",
                problem: format!(
                    "must be at most the user's own role ({})",
                    owner.role.as_str()
                ),
            });
        }
        let secret = format!("{TOKEN_PREFIX}{}", encode(&random_bytes::<32>()?));
        let connection = self.connection();
        let live: i64 = connection.query_row(
            "SELECT COUNT(*) FROM user_tokens WHERE user_name = ?1 AND revoked_at IS NULL",
            [user],
            |row| row.get(0),
        )?;
        if usize::try_from(live).unwrap_or(usize::MAX) >= TOKENS_PER_USER_MAX {
            return Err(UserError::Full(format!(
                "at most {TOKENS_PER_USER_MAX} live tokens per user: revoke one first"
            )));
        }
        connection.execute(
            "INSERT INTO user_tokens (user_name, token_hash, role, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user, secret_hash(&secret).as_slice(), role.as_str(), label, unix(now)],
        )?;
        let id = connection.last_insert_rowid();
        Ok(IssuedToken {
            info: TokenInfo {
                id,
                user: user.to_string(),
                label: label.to_string(),
                role,
                created_at: from_unix(unix(now)),
                revoked_at: None,
            },
            secret,
        })
    }

    /// The live tokens of `user`, or of everybody.
    pub fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, UserError> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT id, user_name, label, role, created_at, revoked_at FROM user_tokens
             WHERE revoked_at IS NULL AND (?1 IS NULL OR user_name = ?1) ORDER BY id",
        )?;
        let tokens = statement
            .query_map([user], |row| {
                Ok(TokenInfo {
                    id: row.get(0)?,
                    user: row.get(1)?,
                    label: row.get(2)?,
                    role: role_of(&row.get::<_, String>(3)?),
                    created_at: from_unix(row.get(4)?),
                    revoked_at: row.get::<_, Option<i64>>(5)?.map(from_unix),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(tokens)
    }

    /// Revokes token `id` (of `user` when given). Whether it was live.
    pub fn revoke_token(&self, id: i64, user: Option<&str>) -> Result<bool, UserError> {
        let changed = self.connection().execute(
            "UPDATE user_tokens SET revoked_at = ?3 WHERE id = ?1 AND revoked_at IS NULL AND (?2 IS NULL OR user_name = ?2)",
            params![id, user, unix(OffsetDateTime::now_utc())],
        )?;
        Ok(changed > 0)
    }

    /// Who a per-user API token belongs to and the role it gives: the lower of the token's
    /// and the user's current role; `None` for an unknown or revoked token or a disabled user.
    pub fn token_actor(&self, secret: &str) -> Result<Option<(String, Role)>, UserError> {
        let found: Option<(String, String, String, bool)> = self
            .connection()
            .query_row(
                "SELECT t.user_name, t.role, u.role, u.disabled FROM user_tokens t JOIN users u ON u.name = t.user_name
                 WHERE t.token_hash = ?1 AND t.revoked_at IS NULL",
                [secret_hash(secret).as_slice()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?;
        Ok(found.and_then(|(user, token_role, user_role, disabled)| {
            (!disabled).then(|| (user, role_of(&token_role).min(role_of(&user_role))))
        }))
    }
}

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: row.get(0)?,
        role: role_of(&row.get::<_, String>(1)?),
        disabled: row.get(2)?,
        generation: row.get(3)?,
        created_at: from_unix(row.get(4)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(text: &str) -> Password {
        Password::new(text.to_string()).unwrap()
    }

    #[test]
    fn names_and_passwords_are_bounded() {
        for (name, ok) in [
            ("ops", true),
            ("li.wei@example", true),
            ("", false),
            ("has space", false),
            ("名字", false),
            (&"a".repeat(65), false),
            (&"a".repeat(64), true),
        ] {
            assert_eq!(check_name(name).is_ok(), ok, "{name}");
        }
        assert!(Password::new("short".into()).is_err());
        assert!(Password::new("x".repeat(1025)).is_err());
        assert!(Password::new("long enough".into()).is_ok());
        assert_eq!(
            format!("{:?}", password("a-secret-password")),
            "Password([redacted])"
        );
    }

    #[test]
    fn hashes_are_phc_strings_that_verify() {
        let hash = hash_password(&password("correct horse")).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsE", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        // A fresh salt each time.
        assert_ne!(hash, hash_password(&password("correct horse")).unwrap());
    }

    #[test]
    fn users_roles_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(!users.any().unwrap());
        users
            .add("ops", Role::Operator, &password("operator-pass"), now)
            .unwrap();
        assert!(users.any().unwrap());
        assert!(matches!(
            users.add("ops", Role::Admin, &password("operator-pass"), now),
            Err(UserError::Exists(_))
        ));
        assert_eq!(
            users
                .check_password("ops", "operator-pass")
                .unwrap()
                .unwrap()
                .role,
            Role::Operator
        );
        assert!(users.check_password("ops", "wrong-pass").unwrap().is_none());
        assert!(users
            .check_password("nobody", "operator-pass")
            .unwrap()
            .is_none());

        // A token above the user's role is refused; one at it works until revoked.
        assert!(users.issue_token("ops", Role::Admin, "x", now).is_err());
        let token = users
            .issue_token("ops", Role::Operator, "cron", now)
            .unwrap();
        assert!(token.secret.starts_with(TOKEN_PREFIX));
        assert!(!format!("{token:?}").contains(&token.secret));
        assert_eq!(
            users.token_actor(&token.secret).unwrap(),
            Some(("ops".to_string(), Role::Operator))
        );
        // Lowering the user lowers the token.
        users.set_role("ops", Role::Viewer).unwrap();
        assert_eq!(
            users.token_actor(&token.secret).unwrap(),
            Some(("ops".to_string(), Role::Viewer))
        );
        users.set_disabled("ops", true).unwrap();
        assert_eq!(users.token_actor(&token.secret).unwrap(), None);
        assert!(users
            .check_password("ops", "operator-pass")
            .unwrap()
            .is_none());
        users.set_disabled("ops", false).unwrap();
        assert!(!users
            .revoke_token(token.info.id, Some("someone-else"))
            .unwrap());
        assert!(users.revoke_token(token.info.id, Some("ops")).unwrap());
        assert_eq!(users.token_actor(&token.secret).unwrap(), None);

        // A reset raises the generation (ending sessions) and changes the password.
        let before = users.get("ops").unwrap().unwrap().generation;
        let after = users
            .reset_password("ops", &password("a-new-password"))
            .unwrap();
        assert_eq!(after.generation, before + 1);
        assert!(users
            .check_password("ops", "operator-pass")
            .unwrap()
            .is_none());
        assert!(users
            .check_password("ops", "a-new-password")
            .unwrap()
            .is_some());
        assert!(matches!(
            users.set_role("nobody", Role::Admin),
            Err(UserError::NoSuchUser(_))
        ));
    }
}
