//! The bf16 rows of a whole task in one call (`params_rows`: the row boundary inside the
//! kernel, the integer subnormal test) against the per-row kernels, bit for bit: the raw
//! statistics of each row (`row_stats`, each row's first pass summed in the previous
//! row's loop) and each row's output (`affine` with the coefficients the
//! statistics callback returned), including rows with f32-subnormal and zero outputs and
//! rows starting with ±0.

use super::lead_tests::{data, params};
use super::*;
use half::bf16;

/// The coefficients the test's statistics callback returns for row `i`: ordinary ones,
/// one row whose outputs are f32 subnormals (a scale of 3e-39), one whose outputs are
/// exact zeros where `x = m` (m = 0.5, a value of the data).
fn coefs(i: usize) -> (f32, f32, f32) {
    match i % 4 {
        1 => (0.5, 3e-39, 0.0),
        2 => (0.5, 1.25, 0.0),
        3 => (-0.375, 0.75, 0.125),
        _ => (0.125, 1.5, -0.25),
    }
}

/// Rows of `n` values, `count` of them: the first of row 1 is +0.0 and of row 2 −0.0
/// (shifts of ±0), row 2 holds 0.5 in places.
fn rows_of(n: usize, count: usize) -> Vec<u16> {
    let mut xs = Vec::new();
    for r in 0..count {
        let mut x = data(n, 7 + r as u32, 0.25 * r as f32 - 0.5);
        match r {
            1 => x[0] = 0,
            2 => {
                x[0] = 0x8000;
                for v in x.iter_mut().skip(3).step_by(5) {
                    *v = bf16::from_f32(0.5).to_bits();
                }
            }
            _ => {}
        }
        xs.extend(x);
    }
    xs
}

#[test]
fn bf16_task_rows_are_the_per_row_kernels() {
    let lens = [16usize, 33, 96, 100, 128, 160, 161, 1000, 1024, 1056];
    let mut ran = 0;
    for &n in &lens {
        for count in [1usize, 2, 3, 6] {
            let xs = rows_of(n, count);
            let (g, bt) = (params(n + 3, 33), params(n, 34));
            for center in [true, false] {
                for beta in [false, true] {
                    let p = (&g[..], beta.then_some(&bt[..]));
                    let what = format!("n={n} rows={count} center={center} beta={beta}");
                    let mut ys = vec![0u16; n * count];
                    let mut raws = Vec::new();
                    let mut stat = |i: usize, raw: (f64, f64, f64)| {
                        raws.push((i, raw));
                        coefs(i)
                    };
                    let done = params_rows(Fmt::Bf16, (&xs, &mut ys), n, p, center, &mut stat);
                    if !done {
                        assert!(raws.is_empty() && ys.iter().all(|&v| v == 0), "{what}");
                        continue;
                    }
                    ran += 1;
                    assert_eq!(raws.len(), count, "{what}");
                    for (r, (x, y)) in xs.chunks(n).zip(ys.chunks(n)).enumerate() {
                        let (shift, sum, sq) = row_stats(Fmt::Bf16, x, center);
                        let (i, got) = raws[r];
                        assert_eq!(i, r, "row order {what}");
                        assert_eq!(got.0.to_bits(), shift.to_bits(), "shift row {r} {what}");
                        assert_eq!(got.1.to_bits(), sum.to_bits(), "sum row {r} {what}");
                        assert_eq!(got.2.to_bits(), sq.to_bits(), "sq row {r} {what}");
                        let mut want = vec![0u16; n];
                        affine(Fmt::Bf16, x, &mut want, coefs(r), Some((&g[..n], p.1)));
                        assert_eq!(y, &want[..], "row {r} {what}");
                    }
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::level() == crate::kernels::simd::Level::Avx512
        && std::arch::is_x86_feature_detected!("avx512bf16")
    {
        assert_eq!(ran, lens.len() * 4 * 4, "the kernel ran for every case");
    }
    #[cfg(not(target_arch = "x86_64"))]
    assert_eq!(ran, 0, "no fast kernel off x86-64");
}

/// The subnormal rows do need the portable rounding (the test above would pass with a
/// kernel that never took it only if `vcvtne2ps2bf16` rounded them alike): some output
/// of the 3e-39 row is a nonzero bf16 whose f32 value is subnormal.
#[test]
fn the_subnormal_row_has_subnormal_outputs() {
    let n = 1024;
    let xs = rows_of(n, 2);
    let g = params(n, 33);
    let mut y = vec![0u16; n];
    affine(Fmt::Bf16, &xs[n..], &mut y, coefs(1), Some((&g[..], None)));
    let sub = y
        .iter()
        .filter(|&&v| v & 0x7f80 == 0 && v & 0x7f != 0)
        .count();
    assert!(sub > 100, "{sub} subnormal outputs");
}
