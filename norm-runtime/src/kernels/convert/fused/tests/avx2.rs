//! The AVX2 bf16 passes against the token kernels at the scalar level (the `half` crate's
//! rounding), bit for bit: the public column and row passes with the level capped at AVX2
//! (the kernels here) and at scalar, on lengths below, at and around the blocks of 16,
//! with values that round to ties, overflow to infinity, give f32 subnormals, infinities
//! and NaNs (quiet and signalling, either sign).

use super::super::{
    affine, affine_streamed, col_affine, col_dx, dx, dx_streamed, stream_fence, Fmt,
};
use crate::kernels::simd::{detected, with_thread_cap, Level};

/// `n` bf16 bit patterns of ordinary values in about `[−3, 3)`, with special values at
/// some positions where `special` (NaNs only where `nan`: an operation on two NaNs may
/// keep either payload, as the compiler orders its operands).
fn data(n: usize, seed: u32, special: bool, nan: bool) -> Vec<u16> {
    const SPECIAL: [u16; 8] = [
        0xff80, 0x7f80, 0x0001, 0x8000, 0x7f7f, 0x7fc0, 0xffc1, 0x7f81,
    ];
    let kinds = if nan { SPECIAL.len() } else { 5 };
    (0..n)
        .map(|i| {
            let t = (i as u32).wrapping_mul(0x9E37_79B1).wrapping_add(seed) >> 9;
            if special && t % 7 == 3 {
                return SPECIAL[(t as usize / 7) % kinds];
            }
            let v = (t as f32 / (1u32 << 23) as f32 - 0.5) * 6.0;
            half::bf16::from_f32(v).to_bits()
        })
        .collect()
}

/// `n` coefficients in `[0.4, 1.7]`, with one that makes f32 subnormals (`1e-39`) and
/// one that makes ties and overflow (`3e38`) where `special`.
fn coefs(n: usize, seed: u32, special: bool) -> Vec<f32> {
    (0..n)
        .map(|i| match (special, i % 11) {
            (true, 5) => 1e-39,
            (true, 9) => 3e38,
            (true, 2) => 1.0 + 1.0 / 256.0 + 1.0 / 65536.0,
            _ => 0.4 + ((i as u32 * 11 + seed) % 17) as f32 / 13.0,
        })
        .collect()
}

/// Runs `f` with the level capped at AVX2 (the kernels here) and at scalar; `None` where
/// this CPU has no AVX2.
fn both<R>(f: impl Fn() -> R) -> Option<(R, R)> {
    if detected() < Level::Avx2 {
        return None;
    }
    Some((
        with_thread_cap(Level::Avx2, &f),
        with_thread_cap(Level::Scalar, &f),
    ))
}

const KS: &[usize] = &[1, 7, 8, 15, 16, 17, 31, 32, 33, 48, 100, 512];

#[test]
fn avx2_column_passes_are_the_scalar_tokens_bits() {
    for &k in KS {
        for rows in [1usize, 3] {
            for special in [false, true] {
                let seed = k as u32;
                let x = data(rows * k, seed, special, true);
                let dy = data(rows * k, seed + 1, special, false);
                let (m, a) = (coefs(k, 1, false), coefs(k, 2, special));
                let (b, cc) = (coefs(k, 3, special), coefs(k, 4, special));
                let got = both(|| {
                    let mut y = vec![0u16; rows * k];
                    col_affine(Fmt::Bf16, &x, &mut y, (&m, &a, &b), None);
                    let mut out = vec![0u16; rows * k];
                    col_dx(Fmt::Bf16, (&x, &dy, &mut out), &cc, (&m, &a, &b));
                    (y, out)
                });
                let Some((avx2, scalar)) = got else { return };
                assert_eq!(avx2.0, scalar.0, "col affine k={k} rows={rows} {special}");
                assert_eq!(avx2.1, scalar.1, "col dx k={k} rows={rows} {special}");
            }
        }
    }
}

#[test]
fn avx2_row_passes_are_the_scalar_tokens_bits() {
    for &n in KS.iter().chain(&[3136, 1000]) {
        for special in [false, true] {
            let seed = n as u32 + 7;
            let (x, dy) = (
                data(n, seed, special, true),
                data(n, seed + 1, special, false),
            );
            // Ordinary γ: a zero `c·γ` times an infinite `dy` would be a second NaN.
            let g = coefs(n, 5, false);
            let cs: &[(f32, f32, f32, f32)] = if special {
                &[
                    (0.7, 0.25, 1e-39, 0.0),
                    (1.5, -0.5, 3e38, 0.5),
                    (1e-39, 0.0, 1.0, -0.25),
                ]
            } else {
                &[(0.7, 0.25, 1.3, -0.1), (1.1, -0.5, 0.8, 0.5)]
            };
            for &(c, m, a, b) in cs {
                let got = both(|| {
                    let mut y = vec![0u16; n];
                    affine(Fmt::Bf16, &x, &mut y, (m, a, b), None);
                    let mut out = vec![0u16; n];
                    dx(Fmt::Bf16, (&x, &dy, &mut out), (c, m, a, b), None);
                    let mut outg = vec![0u16; n];
                    dx(Fmt::Bf16, (&x, &dy, &mut outg), (c, m, a, b), Some(&g));
                    (y, out, outg)
                });
                let Some((avx2, scalar)) = got else { return };
                assert_eq!(avx2.0, scalar.0, "row affine n={n} {special} {c}");
                assert_eq!(avx2.1, scalar.1, "row dx n={n} {special} {c}");
                assert_eq!(avx2.2, scalar.2, "row dx with γ n={n} {special} {c}");
            }
        }
    }
}

/// The row passes with γ (and β) along the row, and every row pass with non-temporal
/// stores at several offsets of the output from a 64-byte line boundary: the scalar tokens' bits
/// (the stores change, not the values), the values around the row untouched.
#[test]
fn avx2_row_passes_with_parameters_and_streaming_are_the_scalar_tokens_bits() {
    for &n in KS.iter().chain(&[1000, 1024]) {
        for special in [false, true] {
            let seed = n as u32 + 3;
            let (x, dy) = (
                data(n, seed, special, true),
                data(n, seed + 1, special, false),
            );
            let (g, bt) = (coefs(n, 5, false), coefs(n, 6, special));
            let (c, m, a, b) = (0.7, 0.25, 1.3, -0.1);
            for off in [0usize, 1, 7, 15, 24, 31] {
                let got = both(|| {
                    let mut outs = Vec::new();
                    for stream in [false, true] {
                        for p in [None, Some((&g[..], None)), Some((&g[..], Some(&bt[..])))] {
                            let mut y = vec![0x5555u16; n + 32];
                            let yr = &mut y[off..off + n];
                            affine_streamed(Fmt::Bf16, &x, yr, (m, a, b), p, stream);
                            outs.push(y);
                        }
                        for gg in [None, Some(&g[..])] {
                            let mut o = vec![0x5555u16; n + 32];
                            let io = (&x[..], &dy[..], &mut o[off..off + n]);
                            if stream {
                                dx_streamed(Fmt::Bf16, io, (c, m, a, b), gg);
                            } else {
                                dx(Fmt::Bf16, io, (c, m, a, b), gg);
                            }
                            outs.push(o);
                        }
                        stream_fence();
                    }
                    outs
                });
                let Some((avx2, scalar)) = got else { return };
                for (i, (v, s)) in avx2.iter().zip(&scalar).enumerate() {
                    assert_eq!(v, s, "pass {i} n={n} off={off} {special}");
                    assert!(v[..off].iter().chain(&v[off + n..]).all(|&u| u == 0x5555));
                }
                // The streamed passes are the plain ones (the scalar level streams nothing).
                let half = avx2.len() / 2;
                assert_eq!(avx2[..half], avx2[half..], "streamed n={n} off={off}");
            }
        }
    }
}
