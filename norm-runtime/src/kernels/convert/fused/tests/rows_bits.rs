//! `params_rows` (a task's bf16 rows in one call) against the per-row kernels, bit for bit,
//! on values over the whole bf16 range: every exponent, subnormals and ±0, the largest
//! values (outputs overflowing to infinity), and rows holding an infinity or a NaN in the
//! blocks of 32 or in the last value (the statistics of each row asked once, in order).

use super::lead_tests::params;
use super::*;
use half::bf16;

/// `n` bf16 bit patterns from a hash of `(i, seed)`, kind `kind`: 0 every finite pattern
/// (exponents 0..=254, both signs), 1 subnormals and ±0, 2 the largest exponents, 3 as 0
/// with +∞ in the blocks of 32, 4 with a NaN there, 5 with −∞ in the last value only.
fn row(n: usize, seed: u32, kind: u32) -> Vec<u16> {
    let mut x: Vec<u16> = (0..n)
        .map(|i| {
            let h = (i as u32 ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(2_654_435_761);
            let (sign, frac) = (((h >> 31) as u16) << 15, ((h >> 8) & 0x7f) as u16);
            let exp = match kind {
                1 => u16::from((h >> 16).is_multiple_of(4)) * ((h >> 18) % 2) as u16,
                2 => 250 + ((h >> 16) % 5) as u16,
                _ => ((h >> 16) % 255) as u16,
            };
            sign | (exp << 7) | frac
        })
        .collect();
    match kind {
        3 => x[n / 3] = 0x7f80,
        4 => x[n / 2] = 0x7fc1,
        5 => x[n - 1] = 0xff80,
        _ => {}
    }
    x
}

/// Bitwise equal, or both NaN.
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn bf16_task_rows_are_the_per_row_kernels_over_the_whole_range() {
    let kinds = [0u32, 1, 2, 3, 0, 4, 1, 5];
    let mut ran = 0;
    for n in [96usize, 1000, 1024, 1055] {
        let xs: Vec<u16> = (0..kinds.len())
            .flat_map(|r| row(n, 11 + r as u32, kinds[r]))
            .collect();
        let (g, bt) = (params(n, 35), params(n, 36));
        for center in [true, false] {
            for beta in [false, true] {
                let p = (&g[..], beta.then_some(&bt[..]));
                let what = format!("n={n} center={center} beta={beta}");
                let mut ys = vec![0u16; xs.len()];
                let mut calls = Vec::new();
                let c = (0.25f32, 1.5f32, -0.125f32);
                let mut stat = |i: usize, raw: (f64, f64, f64)| {
                    calls.push((i, raw));
                    c
                };
                if !params_rows(Fmt::Bf16, (&xs, &mut ys), n, p, center, &mut stat) {
                    continue;
                }
                ran += 1;
                let order: Vec<usize> = calls.iter().map(|&(i, _)| i).collect();
                let want: Vec<usize> = (0..kinds.len()).collect();
                assert_eq!(order, want, "statistics calls {what}");
                for (r, (x, y)) in xs.chunks(n).zip(ys.chunks(n)).enumerate() {
                    let (shift, sum, sq) = row_stats(Fmt::Bf16, x, center);
                    let got = calls[r].1;
                    assert!(same(got.0, shift), "shift row {r} {what}");
                    assert!(same(got.1, sum), "sum row {r} {what}: {} {sum}", got.1);
                    assert!(same(got.2, sq), "sq row {r} {what}: {} {sq}", got.2);
                    let mut w = vec![0u16; n];
                    affine(Fmt::Bf16, x, &mut w, c, Some((&g[..n], p.1)));
                    for (k, (&a, &b)) in y.iter().zip(&w).enumerate() {
                        let nan = |v: u16| v & 0x7fff > 0x7f80;
                        assert!(a == b || (nan(a) && nan(b)), "row {r} value {k} {what}");
                    }
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::level() == crate::kernels::simd::Level::Avx512
        && std::arch::is_x86_feature_detected!("avx512bf16")
    {
        assert_eq!(ran, 4 * 4, "the kernel ran for every case");
    }
    #[cfg(not(target_arch = "x86_64"))]
    assert_eq!(ran, 0, "no fast kernel off x86-64");
}

/// The data reach what the test is about: row 0 spans the exponents, row 1 holds
/// subnormals and both zeros, row 2's Σx² exceeds f32 (the f32 statistics overflow to
/// +∞ there, where the f32 layer's f64 sums do not).
#[test]
fn rows_bits_data_cover_the_range() {
    let x0 = row(1024, 11, 0);
    let exps: std::collections::BTreeSet<u16> = x0.iter().map(|&b| (b >> 7) & 0xff).collect();
    assert!(exps.len() > 200 && exps.contains(&0) && exps.contains(&254));
    let x1 = row(1024, 12, 1);
    assert!(x1.contains(&0) && x1.contains(&0x8000));
    assert!(
        x1.iter()
            .filter(|&&b| b & 0x7f80 == 0 && b & 0x7f != 0)
            .count()
            > 100
    );
    let x2 = row(1024, 13, 2);
    let sq: f64 = x2
        .iter()
        .map(|&b| f64::from(bf16::from_bits(b).to_f32()).powi(2))
        .sum();
    assert!(sq.is_finite() && sq > f64::from(f32::MAX));
    assert_eq!(row_stats(Fmt::Bf16, &x2, false).2, f64::INFINITY);
}
