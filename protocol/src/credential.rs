//! Terminal credentials: a token per terminal derived from a fleet secret that only the collector
//! holds, so the collector needs no per-terminal table and a token is useless for any other
//! terminal.
//!
//! `token = <key_id> "." base64url_nopad(HMAC-SHA256(secret, terminal_id))`
//!
//! The key id lets the fleet secret rotate: during a rotation the collector holds the old and the
//! new key in its [`Keyring`] and accepts tokens of either.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::limits::VERSION_MAX_CHARS;

type HmacSha256 = Hmac<Sha256>;

/// A fleet secret and its id.
#[derive(Clone)]
pub struct FleetKey {
    id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        formatter
            .debug_struct("FleetKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("key id {0:?} must be 1 to 64 characters from A-Z a-z 0-9 _ -")]
    InvalidKeyId(String),
    #[error("fleet secret must be at least {minimum} bytes, got {actual}")]
    SecretTooShort { minimum: usize, actual: usize },
    #[error("token is malformed (expected <key_id>.<signature>)")]
    Malformed,
    #[error("token was issued under key {0:?}, which this collector does not hold")]
    UnknownKey(String),
    #[error("token does not belong to terminal {0:?}")]
    WrongTerminal(String),
}

/// The shortest fleet secret accepted: 128 bits.
pub const SECRET_MIN_BYTES: usize = 16;

impl FleetKey {
    pub fn new(id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<Self, CredentialError> {
        let id = id.into();
        let valid_id = !id.is_empty()
            && id.len() <= VERSION_MAX_CHARS
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_id {
            return Err(CredentialError::InvalidKeyId(id));
        }
        let secret = secret.into();
        if secret.len() < SECRET_MIN_BYTES {
            return Err(CredentialError::SecretTooShort {
                minimum: SECRET_MIN_BYTES,
                actual: secret.len(),
            });
        }
        Ok(FleetKey { id, secret })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self, terminal_id: &str) -> HmacSha256 {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(terminal_id.as_bytes());
        mac
    }
}

/// The token of `terminal_id` under `key`.
pub fn terminal_token(key: &FleetKey, terminal_id: &str) -> String {
    let signature = key.mac(terminal_id).finalize().into_bytes();
    format!("{}.{}", key.id, URL_SAFE_NO_PAD.encode(signature))
}

/// The keys a collector accepts tokens under; the first is the current one.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<FleetKey>,
}

impl Keyring {
    /// `current` signs new tokens; `previous` keys are still accepted during a rotation.
    pub fn new(current: FleetKey, previous: Vec<FleetKey>) -> Self {
        let mut keys = vec![current];
        keys.extend(previous);
        Keyring { keys }
    }

    pub fn current(&self) -> &FleetKey {
        &self.keys[0]
    }

    /// Accepts `token` only if it was derived for `terminal_id` under a key of this ring. The
    /// signature comparison is constant-time.
    pub fn verify(&self, token: &str, terminal_id: &str) -> Result<(), CredentialError> {
        let (key_id, signature) = token.split_once('.').ok_or(CredentialError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| CredentialError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|key| key.id == key_id)
            .ok_or_else(|| CredentialError::UnknownKey(key_id.chars().take(64).collect()))?;
        key.mac(terminal_id)
            .verify_slice(&signature)
            .map_err(|_| CredentialError::WrongTerminal(terminal_id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: &str) -> FleetKey {
        FleetKey::new(id, secret.as_bytes().to_vec())
            .unwrap_or_else(|error| panic!("test key must be valid: {error}"))
    }

    #[test]
    fn a_known_vector() {
        // HMAC-SHA256("0123456789abcdef", "T-0001"), checked with:
        // printf T-0001 | openssl dgst -sha256 -hmac 0123456789abcdef -binary | basenc --base64url | tr -d =
        let token = terminal_token(&key("k1", "0123456789abcdef"), "T-0001");
        assert_eq!(token, "k1.80Uu6M6lGjz8e0onWs0LAkCxovCaO0bQmgmF0gt4-og");
    }

    #[test]
    fn a_token_is_valid_for_its_own_terminal_only() {
        let ring = Keyring::new(key("k1", "0123456789abcdef"), vec![]);
        let token = terminal_token(ring.current(), "T-0001");
        assert_eq!(ring.verify(&token, "T-0001"), Ok(()));
        assert_eq!(
            ring.verify(&token, "T-0002"),
            Err(CredentialError::WrongTerminal("T-0002".into()))
        );
    }

    #[test]
    fn rotation_accepts_old_and_new_keys() {
        let old = key("k1", "0123456789abcdef");
        let new = key("k2", "fedcba9876543210");
        let ring = Keyring::new(new.clone(), vec![old.clone()]);
        assert_eq!(ring.verify(&terminal_token(&old, "T-1"), "T-1"), Ok(()));
        assert_eq!(ring.verify(&terminal_token(&new, "T-1"), "T-1"), Ok(()));
        let after = Keyring::new(new, vec![]);
        assert_eq!(
            after.verify(&terminal_token(&old, "T-1"), "T-1"),
            Err(CredentialError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn malformed_tokens_and_keys_are_refused() {
        let ring = Keyring::new(key("k1", "0123456789abcdef"), vec![]);
        assert_eq!(
            ring.verify("no-dot", "T-1"),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            ring.verify("k1.***", "T-1"),
            Err(CredentialError::Malformed)
        );
        assert!(matches!(
            FleetKey::new("k 1", b"0123456789abcdef".to_vec()),
            Err(CredentialError::InvalidKeyId(_))
        ));
        assert!(matches!(
            FleetKey::new("k1", b"short".to_vec()),
            Err(CredentialError::SecretTooShort { .. })
        ));
    }
}
