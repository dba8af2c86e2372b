//! Shared data of the bf16 row tests (`rows`, `rows_bits`).

use half::bf16;

/// `n` bf16 bit patterns spread over about `offset ± 3`.
pub(super) fn data(n: usize, seed: u32, offset: f32) -> Vec<u16> {
    (0..n)
        .map(|i| {
            let t = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32;
            bf16::from_f32(offset + (t / (1u32 << 24) as f32 - 0.5) * 6.0).to_bits()
        })
        .collect()
}

/// `n` parameters in about [0.5, 1.5).
pub(super) fn params(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.5 + ((i as u32).wrapping_mul(40503).wrapping_add(seed) % 1000) as f32 / 1000.0)
        .collect()
}
