//! Enrollment: an agent trades a one-time code an administrator created for its terminal for the
//! terminal's token (`posmon-agent enroll`, `POST` [`ENROLL_PATH`]).
//!
//! A code is 80 random bits written as four groups of four Crockford base32 characters
//! (`7K3Q-M2XD-9RTB-04HF`): typable, no I, L, O or U, case and dashes optional when typed (an O
//! reads as 0, an I or L as 1). The collector keeps only [`code_hash`] of it, bound to the
//! terminal. Pure: the caller brings the random bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The path an agent redeems its code on (unauthenticated: the code is the credential).
pub const ENROLL_PATH: &str = "/api/v1/enroll";

/// Random bytes in a code: 80 bits.
pub const CODE_BYTES: usize = 10;
/// Characters of a code without its dashes: 5 bits each.
pub const CODE_CHARS: usize = 16;
/// The longest code text accepted before it is normalized (dashes and spaces included).
pub const CODE_TEXT_MAX_BYTES: usize = 64;

/// Crockford's base32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// What the agent sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub terminal_id: String,
    pub code: String,
}

/// What the collector answers: the token of the terminal's current accepted generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub token: String,
    pub terminal_id: String,
    pub key_id: String,
    pub generation: u32,
}

/// Why a typed code is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("longer than {CODE_TEXT_MAX_BYTES} characters")]
    TooLong,
    #[error("character {0:?} is not in a code (0-9 and A-Z but U; dashes and spaces are ignored)")]
    Character(char),
    #[error("has {0} characters, a code has {CODE_CHARS} (four groups of four)")]
    Length(usize),
}

/// The code of `random` bytes, in four dashed groups.
pub fn format_code(random: &[u8; CODE_BYTES]) -> String {
    let mut text = String::with_capacity(CODE_CHARS + 3);
    // 80 bits, 5 at a time from the most significant.
    let mut bits: u128 = 0;
    for byte in random {
        bits = (bits << 8) | u128::from(*byte);
    }
    for index in 0..CODE_CHARS {
        if index > 0 && index % 4 == 0 {
            text.push('-');
        }
        let shift = 5 * (CODE_CHARS - 1 - index);
        // Masked to five bits: an index into the 32-character alphabet.
        let digit = ((bits >> shift) & 0x1f) as usize;
        text.push(char::from(ALPHABET[digit]));
    }
    text
}

/// The canonical form of a typed code (upper case, no dashes or spaces, O as 0, I and L as 1),
/// or why it cannot be one.
pub fn normalize_code(typed: &str) -> Result<String, CodeError> {
    if typed.len() > CODE_TEXT_MAX_BYTES {
        return Err(CodeError::TooLong);
    }
    let mut canonical = String::with_capacity(CODE_CHARS);
    for character in typed.chars() {
        let mapped = match character.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            other if other.is_ascii() && ALPHABET.contains(&(other as u8)) => other,
            _ => return Err(CodeError::Character(character)),
        };
        canonical.push(mapped);
    }
    if canonical.len() != CODE_CHARS {
        return Err(CodeError::Length(canonical.len()));
    }
    Ok(canonical)
}

/// What the collector stores of a code: SHA-256 over a label, the terminal id and the canonical
/// code, so a code is good for its own terminal only.
pub fn code_hash(terminal_id: &str, canonical_code: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"posmon-enrollment-v1\n");
    hasher.update(terminal_id.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical_code.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(typed: &str, expected: Result<&str, CodeError>) {
        assert_eq!(
            normalize_code(typed).as_deref().map_err(Clone::clone),
            expected,
            "{typed:?}"
        );
    }

    #[test]
    fn codes_are_four_groups_of_crockford_base32_and_normalize_back() {
        assert_eq!(format_code(&[0; CODE_BYTES]), "0000-0000-0000-0000");
        assert_eq!(format_code(&[0xff; CODE_BYTES]), "ZZZZ-ZZZZ-ZZZZ-ZZZZ");
        let code = format_code(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(code, "0410-6105-0R3G-G28A");
        check(&code, Ok("041061050R3GG28A"));
        check("0410 6105 0r3g g28a", Ok("041061050R3GG28A"));
        check("o41o-61o5-or3g-g28a", Ok("041061050R3GG28A"));
        check("IL00000000000000", Ok("1100000000000000"));
        check("0410-6105-0R3G-G28", Err(CodeError::Length(15)));
        check("", Err(CodeError::Length(0)));
        check("0410-6105-0R3G-G28U", Err(CodeError::Character('U')));
        check("0410-6105-0R3G-G28é", Err(CodeError::Character('é')));
        check(&"-".repeat(65), Err(CodeError::TooLong));
    }

    #[test]
    fn every_bit_reaches_the_code() {
        for byte in 0..CODE_BYTES {
            for bit in 0..8 {
                let mut random = [0; CODE_BYTES];
                random[byte] = 1 << bit;
                assert_ne!(format_code(&random), format_code(&[0; CODE_BYTES]));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_random_bytes_make_a_code_that_normalizes_back(random: [u8; CODE_BYTES]) {
            let code = format_code(&random);
            proptest::prop_assert_eq!(code.len(), CODE_CHARS + 3);
            let canonical = normalize_code(&code);
            let undashed = code.replace('-', "");
            proptest::prop_assert_eq!(canonical.as_deref().ok(), Some(undashed.as_str()));
            proptest::prop_assert_eq!(normalize_code(&code.to_lowercase()), canonical);
        }

        #[test]
        fn any_text_is_a_code_or_a_reason_never_a_panic(typed in "\\PC{0,80}") {
            if let Ok(canonical) = normalize_code(&typed) {
                proptest::prop_assert_eq!(canonical.len(), CODE_CHARS);
                proptest::prop_assert!(canonical.bytes().all(|byte| ALPHABET.contains(&byte)));
            }
        }
    }

    #[test]
    fn the_hash_binds_the_terminal() {
        let hash = code_hash("T-1", "041061050R3GG28A");
        assert_eq!(hash, code_hash("T-1", "041061050R3GG28A"));
        assert_ne!(hash, code_hash("T-2", "041061050R3GG28A"));
        assert_ne!(hash, code_hash("T-1", "041061050R3GG28B"));
        // Where the terminal id ends is unambiguous (no newline in an id).
        assert_ne!(code_hash("T-1\n0", "41061050R3GG28A"), hash);
    }
}
