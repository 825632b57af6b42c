//! Properties of decoding, validation and credentials over arbitrary input: never a panic, a
//! refusal always names a field that exists, and what is accepted survives the wire unchanged.

use proptest::prelude::*;

use crate::strategies::{any_batch, any_text};
use crate::{validate_batch, FleetKey, Keyring, ReportBatch};

const FIXTURES: [&str; 3] = [
    include_str!("../fixtures/v1/full.json"),
    include_str!("../fixtures/v1/minimal.json"),
    include_str!("../fixtures/v1/delta.json"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Validation never panics; a refusal names a field under `reports`.
    #[test]
    fn validation_names_a_field_or_accepts(batch in any_batch()) {
        match validate_batch(&batch, 100) {
            Ok(()) => prop_assert!(!batch.reports.is_empty()),
            Err(error) => {
                prop_assert!(error.field.starts_with("reports"), "{}", error.field);
                prop_assert!(!error.problem.is_empty());
            }
        }
    }

    /// A batch that validates goes over the wire and comes back the same (floats within the
    /// last bit serde_json's fast parser may round differently).
    #[test]
    fn a_valid_batch_round_trips(batch in any_batch()) {
        if validate_batch(&batch, 100).is_ok() {
            let bytes = serde_json::to_vec(&batch);
            prop_assert!(bytes.is_ok(), "{:?}", bytes.err());
            let back: Result<ReportBatch, _> = serde_json::from_slice(&bytes.unwrap_or_default());
            prop_assert!(back.is_ok(), "{:?}", back.err());
            let sent = serde_json::to_value(&batch).unwrap_or_default();
            let received = serde_json::to_value(back.unwrap_or(ReportBatch { reports: Vec::new() }))
                .unwrap_or_default();
            prop_assert!(same(&sent, &received), "{sent}\n{received}");
        }
    }

    /// Mutated golden fixtures (bytes flipped, cut, spliced) decode to an error or to a batch
    /// that validation judges, never to a panic.
    #[test]
    fn mutated_fixtures_never_panic(
        fixture in 0..FIXTURES.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = FIXTURES[fixture].as_bytes().to_vec();
        for (index, byte) in edits {
            let position = index.index(bytes.len());
            bytes[position] = byte;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(batch) = serde_json::from_slice::<ReportBatch>(&bytes) {
            let _ = validate_batch(&batch, 100);
        }
    }

    /// Any token for any terminal id: accepted only if it is that terminal's token.
    #[test]
    fn token_verification_never_panics(token in any_text(true), terminal in any_text(true)) {
        let key = FleetKey::new("k1", vec![7_u8; 32]);
        prop_assert!(key.is_ok());
        let Ok(key) = key else { return Ok(()) };
        let genuine = crate::terminal_token(&key, &terminal);
        let keyring = Keyring::new(key, Vec::new());
        prop_assert_eq!(keyring.verify(&token, &terminal).is_ok(), token == genuine);
        prop_assert!(keyring.verify(&genuine, &terminal).is_ok());
    }
}

/// Equal JSON values, numbers within a relative 1e-12.
fn same(left: &serde_json::Value, right: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => match (left.as_f64(), right.as_f64()) {
            (Some(left), Some(right)) => {
                (left - right).abs() <= 1e-12 * left.abs().max(right.abs()).max(1.0)
            }
            _ => left == right,
        },
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len() && left.iter().zip(right).all(|(l, r)| same(l, r))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .all(|(key, value)| right.get(key).is_some_and(|other| same(value, other)))
        }
        _ => left == right,
    }
}
