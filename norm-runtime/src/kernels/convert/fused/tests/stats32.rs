//! The f32 two-pass row statistics (`row_stats`): the same bits at every level, in both
//! formats, on lengths around the blocks of 64 and of 1024; within 1e-6 of a float64
//! reference, also on rows with a large offset and an outlier first value.

use super::*;

#[derive(Clone)]
struct RunStats(Vec<u16>, bool);
impl Kernel for RunStats {
    type Out = (f64, f64, f64);
    fn run<S: Isa, F: Format>(self, s: S) -> (f64, f64, f64) {
        crate::kernels::convert::fused::stats32::Stats32 {
            x: &self.0,
            center: self.1,
        }
        .run::<S, F>(s)
    }
}

/// Mean and M2 (Σ(x − mean)²) of the widened values in f64, two passes.
fn reference(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    (mean, xs.iter().map(|v| (v - mean) * (v - mean)).sum())
}

/// `(mean, M2)` from the raw statistics, as `stats::mean_m2`.
fn mean_m2((shift, sum, sq): (f64, f64, f64), n: usize) -> (f64, f64) {
    let d = sum / n as f64;
    (shift + d, sq - sum * d)
}

fn agree<F: Conv>(fmt: Fmt, x: &[u16], what: &str) {
    let xs: Vec<f64> = x.iter().map(|&v| f64::from(F::to(v))).collect();
    let n = x.len();
    let (mean, m2) = reference(&xs);
    let sq: f64 = xs.iter().map(|v| v * v).sum();
    for center in [true, false] {
        let all = at_every_level::<_, F>(&RunStats(x.to_vec(), center));
        let bits = |r: &(f64, f64, f64)| (r.0.to_bits(), r.1.to_bits(), r.2.to_bits());
        for r in &all {
            assert_eq!(bits(r), bits(&all[0]), "{what} n={n} center={center}");
        }
        assert_eq!(row_stats(fmt, x, center), all[0], "{what} n={n}");
        if center {
            let (m, q) = mean_m2(all[0], n);
            let sd = (m2 / n as f64).sqrt();
            assert!(
                (m - mean).abs() <= 1e-6 * (mean.abs() + sd),
                "{what} n={n}: mean {m} vs {mean}"
            );
            assert!((q - m2).abs() <= 1e-6 * m2, "{what} n={n}: M2 {q} vs {m2}");
        } else {
            assert_eq!((all[0].0, all[0].1), (0.0, 0.0));
            assert!(
                (all[0].2 - sq).abs() <= 1e-6 * sq,
                "{what} n={n}: Σx² {} vs {sq}",
                all[0].2
            );
        }
    }
}

#[test]
fn f32_row_statistics_are_the_same_bits_at_every_level_and_within_1e6() {
    for &n in LENS
        .iter()
        .chain(&[63, 65, 128, 200, 1023, 1024, 1025, 1088, 3000, 4099])
    {
        agree::<Bf16>(Fmt::Bf16, &data::<Bf16>(n, 5, 0.75), "bf16");
        agree::<F16>(Fmt::F16, &data::<F16>(n, 6, -1.5), "f16");
    }
}

/// A row of 1000 + small noise whose first value is an outlier: the statistics (f32 lanes,
/// centered on the f32 mean) stay within 1e-6 of float64's; a one-pass Σx² − (Σx)²/n in
/// f32 would lose the variance entirely (1000² against a variance near 1e-2).
#[test]
fn f32_row_statistics_of_a_large_offset_stay_within_1e6() {
    for &n in &[100usize, 1024, 4100] {
        let mut x: Vec<u16> = (0..n)
            .map(|i| {
                let t = ((i as u32).wrapping_mul(2654435761) >> 8) as f32 / (1u32 << 24) as f32;
                f16::from_f32(1000.0 + (t - 0.5) * 0.5).to_bits()
            })
            .collect();
        x[0] = f16::from_f32(-3000.0).to_bits();
        agree::<F16>(Fmt::F16, &x, "f16 offset");
        let xb: Vec<u16> = (0..n)
            .map(|i| {
                let t = ((i as u32).wrapping_mul(40503) % 64) as f32 / 64.0;
                let w = if i == 0 {
                    -3000.0
                } else {
                    1000.0 + 8.0 * (t - 0.5)
                };
                bf16::from_f32(w).to_bits()
            })
            .collect();
        agree::<Bf16>(Fmt::Bf16, &xb, "bf16 offset");
    }
}

/// In-L2 time per 1024-value bf16 row: the statistics alone, the statistics then the
/// affine pass (with γ, β) row by row, and the task kernel (`params_rows`, each row's first
/// pass in the previous row's affine loop). Timing only:
/// `cargo test --release -p norm-runtime --lib row_time -- --ignored --nocapture`.
#[test]
#[ignore]
fn row_time() {
    use std::time::Instant;
    let (n, rows) = (1024, 128);
    let x = data::<Bf16>(n * rows, 3, 0.5);
    let mut y = vec![0u16; n * rows];
    let (g, bt) = (params(n, 1), params(n, 2));
    let best = |f: &mut dyn FnMut()| {
        let mut b = f64::MAX;
        for _ in 0..200 {
            let t = Instant::now();
            f();
            b = b.min(t.elapsed().as_secs_f64() * 1e9 / rows as f64);
        }
        b
    };
    let mut stats_only = || {
        for r in x.chunks(n) {
            std::hint::black_box(row_stats(Fmt::Bf16, r, true));
        }
    };
    let ts = best(&mut stats_only);
    let mut new = || {
        for (r, o) in x.chunks(n).zip(y.chunks_mut(n)) {
            let (sh, s, q) = row_stats(Fmt::Bf16, r, true);
            let m = sh + s / n as f64;
            let a = (1.0 / ((q - s * s / n as f64) / n as f64 + 1e-5).sqrt()) as f32;
            affine(Fmt::Bf16, r, o, (m as f32, a, 0.0), Some((&g, Some(&bt))));
        }
    };
    let tn = best(&mut new);
    let mut aff = || {
        for (r, o) in x.chunks(n).zip(y.chunks_mut(n)) {
            affine(Fmt::Bf16, r, o, (0.5, 1.25, 0.0), Some((&g, Some(&bt))));
        }
    };
    let ta = best(&mut aff);
    let mut old = || {
        let mut stat = |_: usize, (sh, s, q): (f64, f64, f64)| {
            let m = sh + s / n as f64;
            let a = (1.0 / ((q - s * s / n as f64) / n as f64 + 1e-5).sqrt()) as f32;
            (m as f32, a, 0.0)
        };
        assert!(params_rows(
            Fmt::Bf16,
            (&x, &mut y),
            n,
            (&g, Some(&bt)),
            true,
            &mut stat
        ));
    };
    let to = best(&mut old);
    println!("ns/row: stats {ts:.1}, affine {ta:.1}, stats + affine {tn:.1}, params_rows {to:.1}");
}
