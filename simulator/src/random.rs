//! Deterministic pseudo-randomness: every simulated value is a pure function of the seed, the
//! terminal and the slot, so a run is reproducible and needs no per-terminal state.

/// SplitMix64's output function: a good 64-bit mix of any input.
pub fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

/// A uniform number in [0, 1) from the given parts.
pub fn unit(parts: &[u64]) -> f64 {
    let hash = parts.iter().fold(0u64, |state, part| mix(state ^ part));
    // The top 53 bits fill an f64 mantissa exactly.
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// An index in 0..len from the given parts (`len` > 0).
pub fn pick(parts: &[u64], len: usize) -> usize {
    ((unit(parts) * len as f64) as usize).min(len.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_uniform_enough_and_reproducible() {
        let count = 100_000;
        let below_half = (0..count).filter(|i| unit(&[7, *i]) < 0.5).count();
        assert!((49_000..51_000).contains(&below_half), "{below_half}");
        assert_eq!(unit(&[1, 2, 3]), unit(&[1, 2, 3]));
        assert_ne!(unit(&[1, 2, 3]), unit(&[1, 2, 4]));
        assert!((0..1000).all(|i| pick(&[i], 3) < 3));
    }
}
