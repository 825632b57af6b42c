//! A version ordering for the strings terminals report: `1.10` is newer than `1.9`,
//! `V2.3.1_20240501` is 2.3.1 built on a date, `2.0-rc1` comes before `2.0`.
//!
//! A version is split into numbers and words at every non-alphanumeric character and at every
//! change between digits and letters; a leading `v` before a digit is dropped. Tokens compare
//! pairwise: numbers by value, words alphabetically except that pre-release words (`alpha`,
//! `beta`, `pre`, `rc`, `dev`, `snapshot`) sort below everything else, and a number sorts
//! above a word. When one version runs out, it is older unless what the other has left starts
//! with a pre-release word or is all zeros (`1.0` equals `1.0.0`).

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    /// Digits without leading zeros, compared by length then text so that any length works.
    Number(&'a str),
    Word(String),
}

fn tokens(version: &str) -> Vec<Token<'_>> {
    let trimmed = version.trim();
    let trimmed = match trimmed.strip_prefix(['v', 'V']) {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest,
        _ => trimmed,
    };
    let mut out = Vec::new();
    let bytes = trimmed.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let first = bytes[start];
        if !first.is_ascii_alphanumeric() {
            start += 1;
            continue;
        }
        let digit = first.is_ascii_digit();
        let mut end = start;
        while end < bytes.len()
            && bytes[end].is_ascii_alphanumeric()
            && bytes[end].is_ascii_digit() == digit
        {
            end += 1;
        }
        let text = &trimmed[start..end];
        out.push(if digit {
            let significant = text.trim_start_matches('0');
            Token::Number(if significant.is_empty() {
                "0"
            } else {
                significant
            })
        } else {
            Token::Word(text.to_ascii_lowercase())
        });
        start = end;
    }
    out
}

fn pre_release_rank(word: &str) -> Option<u8> {
    match word {
        "dev" | "snapshot" => Some(0),
        "alpha" | "a" => Some(1),
        "beta" | "b" => Some(2),
        "pre" | "preview" => Some(3),
        "rc" => Some(4),
        _ => None,
    }
}

fn compare_tokens(left: &Token<'_>, right: &Token<'_>) -> Ordering {
    match (left, right) {
        (Token::Number(a), Token::Number(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        (Token::Number(_), Token::Word(_)) => Ordering::Greater,
        (Token::Word(_), Token::Number(_)) => Ordering::Less,
        (Token::Word(a), Token::Word(b)) => match (pre_release_rank(a), pre_release_rank(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a.cmp(b),
        },
    }
}

/// How a version with `rest` left over compares with one that has run out.
fn compare_rest(rest: &[Token<'_>]) -> Ordering {
    match rest.first() {
        None => Ordering::Equal,
        Some(Token::Word(word)) if pre_release_rank(word).is_some() => Ordering::Less,
        Some(_) if rest.iter().all(|token| *token == Token::Number("0")) => Ordering::Equal,
        Some(_) => Ordering::Greater,
    }
}

/// Orders two version strings as described in the module documentation.
pub fn compare_versions(left: &str, right: &str) -> Ordering {
    let left = tokens(left);
    let right = tokens(right);
    for (a, b) in left.iter().zip(&right) {
        let order = compare_tokens(a, b);
        if order != Ordering::Equal {
            return order;
        }
    }
    let shared = left.len().min(right.len());
    match left.len().cmp(&right.len()) {
        Ordering::Equal => Ordering::Equal,
        Ordering::Greater => compare_rest(&left[shared..]),
        Ordering::Less => compare_rest(&right[shared..]).reverse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    fn check(left: &str, right: &str, expected: Ordering) {
        assert_eq!(compare_versions(left, right), expected, "{left} vs {right}");
        assert_eq!(
            compare_versions(right, left),
            expected.reverse(),
            "{right} vs {left}"
        );
    }

    #[test]
    fn orders_versions_as_people_mean_them() {
        check("1.10", "1.9", Greater);
        check("1.9", "1.9", Equal);
        check("1.0", "1.0.0", Equal);
        check("1.0.1", "1.0", Greater);
        check("V2.3.1_20240501", "2.3.1", Greater);
        check("V2.3.1_20240501", "v2.3.2", Less);
        check("V2.3.1_20240501", "V2.3.1_20240612", Less);
        check("2.0-rc1", "2.0", Less);
        check("2.0-rc2", "2.0-rc10", Less);
        check("2.0-beta", "2.0-rc1", Less);
        check("2.0.1", "2.0-rc1", Greater);
        check("3.2.0a", "3.2.0", Less);
        check("010.2", "10.2", Equal);
        check(
            "99999999999999999999999.1",
            "99999999999999999999998.9",
            Greater,
        );
        check("1.2.3-build.7", "1.2.3-build.10", Less);
        check("vendorOS 4.1", "vendorOS 4.0", Greater);
        check("", "0.1", Less);
    }
}
