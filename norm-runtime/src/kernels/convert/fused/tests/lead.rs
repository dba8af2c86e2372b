//! The pipelined bf16 row pass whose sums run ahead of its affine pass (`bf16x`'s
//! `params_pipe`, `LEAD` values ahead) against the separate kernels, bit for bit, on
//! rows shorter than, equal to and longer than the lead, with and without a rest after
//! the whole blocks of 32.

use super::*;
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

/// `params_affine_then_sums` gives the bits of `affine` with the same parameters and of
/// `row_sums` of the next row, for every kind of sums (shifted, shift +0.0, uncentered)
/// and both parameter cases (γ; γ and β).
#[test]
fn bf16_rows_with_sums_ahead_are_the_separate_kernels() {
    let lens = [
        96usize, 127, 128, 129, 159, 160, 161, 192, 224, 1000, 1024, 1056, 4099,
    ];
    for &n in &lens {
        let x = data(n, 31, 0.5);
        let mut next = data(n, 32, -0.75);
        let (g, bt) = (params(n, 33), params(n, 34));
        let c = (0.125f32, 1.5f32, -0.25f32);
        let first = bf16::from_bits(next[0]).to_f32();
        for (shift, center) in [(f64::from(first), true), (0.0, true), (0.0, false)] {
            for p in [Some((&g[..], None)), Some((&g[..], Some(&bt[..])))] {
                let mut y = vec![0u16; n];
                let got =
                    params_affine_then_sums(Fmt::Bf16, (&x, &mut y), c, p, (&next, shift, center));
                let mut want_y = vec![0u16; n];
                affine(Fmt::Bf16, &x, &mut want_y, c, p);
                let want = row_sums(Fmt::Bf16, &next, shift, center);
                let what = format!(
                    "n={n} shift={shift} center={center} beta={}",
                    p.is_some_and(|p| p.1.is_some())
                );
                assert_eq!(y, want_y, "{what}");
                assert_eq!(got.0.to_bits(), want.0.to_bits(), "sum {what}");
                assert_eq!(got.1.to_bits(), want.1.to_bits(), "sq {what}");
                if !center {
                    assert_eq!(got.0.to_bits(), 0, "uncentered sum {what}");
                }
            }
        }
        // A value of the next row past the lead counts in its sums.
        let p = Some((&g[..], None));
        let io = (&x[..], &mut vec![0u16; n][..]);
        let before = params_affine_then_sums(Fmt::Bf16, io, c, p, (&next, 0.0, true));
        next[n / 2] = bf16::from_f32(bf16::from_bits(next[n / 2]).to_f32() + 64.0).to_bits();
        let io = (&x[..], &mut vec![0u16; n][..]);
        let after = params_affine_then_sums(Fmt::Bf16, io, c, p, (&next, 0.0, true));
        assert_ne!(before.1.to_bits(), after.1.to_bits(), "n={n}");
    }
}
