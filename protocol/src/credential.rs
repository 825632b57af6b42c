//! Terminal credentials: a token per terminal derived from a fleet secret that only the collector
//! holds, so the collector needs no per-terminal table and a token is useless for any other
//! terminal.
//!
//! ```text
//! generation 0:  token = <key_id> "." base64url_nopad(HMAC-SHA256(secret, terminal_id))
//! generation g:  token = <key_id> "." g "." base64url_nopad(HMAC-SHA256(secret, terminal_id "\n" g))
//! ```
//!
//! The key id lets the fleet secret rotate: during a rotation the collector holds the old and the
//! new key in its [`Keyring`] and accepts tokens of either. The generation lets one terminal's
//! token be revoked without touching the others: the collector keeps, per terminal, the lowest
//! generation it still accepts ([`Keyring::verify_generation`] tells which generation a token
//! is; the collector compares). Tokens without a generation are generation 0, so the tokens
//! issued before generations existed keep working. A terminal id never holds a newline, so the
//! two signed messages cannot collide.

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
    #[error(
        "token is malformed (expected <key_id>.<signature> or <key_id>.<generation>.<signature>)"
    )]
    Malformed,
    #[error("token was issued under key {0:?}, which this collector does not hold")]
    UnknownKey(String),
    #[error("token does not belong to terminal {0:?}")]
    WrongTerminal(String),
    #[error("token generation {generation} of terminal {terminal_id:?} was revoked (generation {minimum} or later is accepted)")]
    Revoked {
        terminal_id: String,
        generation: u32,
        minimum: u32,
    },
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

    fn mac(&self, terminal_id: &str, generation: Option<u32>) -> HmacSha256 {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(terminal_id.as_bytes());
        if let Some(generation) = generation {
            mac.update(format!("\n{generation}").as_bytes());
        }
        mac
    }
}

/// The generation-0 token of `terminal_id` under `key` (the form every token had before
/// generations existed).
pub fn terminal_token(key: &FleetKey, terminal_id: &str) -> String {
    terminal_token_at(key, terminal_id, 0)
}

/// The token of `terminal_id` under `key` at `generation`; generation 0 has the short form.
pub fn terminal_token_at(key: &FleetKey, terminal_id: &str, generation: u32) -> String {
    if generation == 0 {
        let signature = key.mac(terminal_id, None).finalize().into_bytes();
        format!("{}.{}", key.id, URL_SAFE_NO_PAD.encode(signature))
    } else {
        let signature = key
            .mac(terminal_id, Some(generation))
            .finalize()
            .into_bytes();
        format!(
            "{}.{generation}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(signature)
        )
    }
}

/// The most digits a generation may have (`u32::MAX` has 10).
const GENERATION_MAX_DIGITS: usize = 10;

/// `<key_id>.<signature>` or `<key_id>.<generation>.<signature>`: (key id, generation as
/// signed, signature). The generation is decimal digits only, no sign, no leading zero.
pub(crate) fn parse(token: &str) -> Result<(&str, Option<u32>, &str), CredentialError> {
    let mut parts = token.split('.');
    let (Some(key_id), Some(second)) = (parts.next(), parts.next()) else {
        return Err(CredentialError::Malformed);
    };
    match (parts.next(), parts.next()) {
        (None, _) => Ok((key_id, None, second)),
        (Some(signature), None) => {
            let digits_only = !second.is_empty()
                && second.len() <= GENERATION_MAX_DIGITS
                && second.bytes().all(|byte| byte.is_ascii_digit())
                // Generation 0 has one form only, the short one.
                && !second.starts_with('0');
            if !digits_only {
                return Err(CredentialError::Malformed);
            }
            let generation = second
                .parse::<u32>()
                .map_err(|_| CredentialError::Malformed)?;
            Ok((key_id, Some(generation), signature))
        }
        (Some(_), Some(_)) => Err(CredentialError::Malformed),
    }
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

    /// Every key, the current one first.
    pub fn keys(&self) -> &[FleetKey] {
        &self.keys
    }

    /// Accepts `token` only if it was derived for `terminal_id` under a key of this ring, at
    /// any generation. The signature comparison is constant-time.
    pub fn verify(&self, token: &str, terminal_id: &str) -> Result<(), CredentialError> {
        self.verify_generation(token, terminal_id).map(|_| ())
    }

    /// Like [`Keyring::verify`], and tells the index of the key in [`Keyring::keys`] and the
    /// token's generation, for the caller to compare with the lowest one it accepts.
    pub fn verify_generation(
        &self,
        token: &str,
        terminal_id: &str,
    ) -> Result<Verified, CredentialError> {
        let (key_id, generation, signature) = parse(token)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| CredentialError::Malformed)?;
        let (key_index, key) = self
            .keys
            .iter()
            .enumerate()
            .find(|(_, key)| key.id == key_id)
            .ok_or_else(|| CredentialError::UnknownKey(key_id.chars().take(64).collect()))?;
        key.mac(terminal_id, generation)
            .verify_slice(&signature)
            .map_err(|_| CredentialError::WrongTerminal(terminal_id.to_string()))?;
        Ok(Verified {
            key_index,
            generation: generation.unwrap_or(0),
        })
    }
}

/// What a valid token says beyond its terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The index in [`Keyring::keys`] of the key that signed it (0: the current key).
    pub key_index: usize,
    pub generation: u32,
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
    fn generations_sign_differently_and_generation_zero_is_the_old_form() {
        let ring = Keyring::new(key("k1", "0123456789abcdef"), vec![]);
        let current = ring.current();
        assert_eq!(
            terminal_token_at(current, "T-0001", 0),
            "k1.80Uu6M6lGjz8e0onWs0LAkCxovCaO0bQmgmF0gt4-og"
        );
        // HMAC-SHA256("0123456789abcdef", "T-0001\n1"), checked with:
        // printf 'T-0001\n1' | openssl dgst -sha256 -hmac 0123456789abcdef -binary | basenc --base64url | tr -d =
        let first = terminal_token_at(current, "T-0001", 1);
        assert_eq!(first, "k1.1.qfe73r2DOVolGgwEq-2T9S5JqRlYO8O41Y1YUiAA7mM");
        let cases: &[(u32, &str)] = &[(0, "T-0001"), (1, "T-0001"), (7, "T-1"), (u32::MAX, "T-1")];
        for (generation, terminal) in cases {
            let token = terminal_token_at(current, terminal, *generation);
            assert_eq!(
                ring.verify_generation(&token, terminal),
                Ok(Verified {
                    key_index: 0,
                    generation: *generation
                }),
                "{token}"
            );
            assert_eq!(
                ring.verify(&token, "T-other"),
                Err(CredentialError::WrongTerminal("T-other".into()))
            );
        }
        // A signature of one generation does not pass as another.
        let (_, signature) = first.rsplit_once('.').unwrap_or_default();
        for forged in [format!("k1.2.{signature}"), format!("k1.{signature}")] {
            assert_eq!(
                ring.verify(&forged, "T-0001"),
                Err(CredentialError::WrongTerminal("T-0001".into())),
                "{forged}"
            );
        }
    }

    #[test]
    fn malformed_generations_are_refused() {
        let ring = Keyring::new(key("k1", "0123456789abcdef"), vec![]);
        for token in [
            "k1.01.AAAA",
            "k1.0.AAAA",
            "k1.+1.AAAA",
            "k1.-1.AAAA",
            "k1.4294967296.AAAA",
            "k1.99999999999999999999.AAAA",
            "k1..AAAA",
            "k1.1.2.AAAA",
            "k1.x.AAAA",
            "",
        ] {
            assert_eq!(
                ring.verify(token, "T-1"),
                Err(CredentialError::Malformed),
                "{token:?}"
            );
        }
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
