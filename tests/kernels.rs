//! The fast kernels against a naive reference: every SIMD level available on this machine,
//! odd line lengths (1, 7, 15, 17, 1023, ...), one-element groups, rows / columns / sandwich
//! patterns, the split path (a few huge groups), and bit-identical results for 1 and 2
//! threads.

use std::sync::Mutex;

use normkit::ndarray::{ArrayD, Axis, IxDyn};
use normkit::prelude::*;
use normkit::simd::{self, Level};

/// Serializes the tests of this file: the SIMD cap is process-wide.
static LOCK: Mutex<()> = Mutex::new(());

fn lcg(seed: u64, n: usize, offset: f64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            offset + ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 4.0
        })
        .collect()
}

/// Naive forward and backward of "normalize over `reduced` axes" (no groups, no affine,
/// biased variance, eps 1e-5) in f64: y and dx for upstream gradient `dy`.
fn reference(x: &ArrayD<f64>, dy: &ArrayD<f64>, reduced: &[usize]) -> (ArrayD<f64>, ArrayD<f64>) {
    let nd = x.ndim();
    let kept: Vec<usize> = (0..nd).filter(|a| !reduced.contains(a)).collect();
    let order: Vec<usize> = kept.iter().chain(reduced).copied().collect();
    let k: usize = kept.iter().map(|&a| x.shape()[a]).product();
    let r: usize = reduced.iter().map(|&a| x.shape()[a]).product();
    let xp = x
        .view()
        .permuted_axes(order.clone())
        .as_standard_layout()
        .into_shape_with_order((k, r))
        .expect("reshape")
        .to_owned();
    let dp = dy
        .view()
        .permuted_axes(order.clone())
        .as_standard_layout()
        .into_shape_with_order((k, r))
        .expect("reshape")
        .to_owned();
    let mut y = xp.clone();
    let mut dx = xp.clone();
    for g in 0..k {
        let row = xp.index_axis(Axis(0), g);
        let drow = dp.index_axis(Axis(0), g);
        let n = r as f64;
        let mean = row.sum() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let rs = 1.0 / (var + 1e-5).sqrt();
        let xh: Vec<f64> = row.iter().map(|v| (v - mean) * rs).collect();
        let mg = drow.sum() / n;
        let mgx = drow.iter().zip(&xh).map(|(d, h)| d * h).sum::<f64>() / n;
        for j in 0..r {
            y[[g, j]] = xh[j];
            dx[[g, j]] = rs * (drow[j] - mg - xh[j] * mgx);
        }
    }
    let shape: Vec<usize> = order.iter().map(|&a| x.shape()[a]).collect();
    let mut inverse = vec![0; nd];
    for (i, &a) in order.iter().enumerate() {
        inverse[a] = i;
    }
    let back = |a: ArrayD<f64>| -> ArrayD<f64> {
        a.into_shape_with_order(IxDyn(&shape))
            .expect("reshape")
            .permuted_axes(inverse.clone())
            .as_standard_layout()
            .to_owned()
    };
    (back(y.into_dyn()), back(dx.into_dyn()))
}

/// Largest |a − b| relative to the largest |b| (and at least `floor`: dx of a two-element
/// group is mathematically ~0, so its error is measured against the scale of dy).
fn max_rel(a: &ArrayD<f64>, b: &ArrayD<f64>, floor: f64) -> f64 {
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0, |m, (x, y)| m.max((x - y).abs() / scale))
}

/// Runs one layer in f32 and f64 at the current level and checks it against the reference.
fn check_case(input: &str, axes: &str, shape: &[usize], reduced: &[usize], what: &str) {
    let spec = NormSpec::parse(&format!("input = \"{input}\", axes = \"{axes}\"")).expect("spec");
    let n: usize = shape.iter().product();
    let x = ArrayD::from_shape_vec(IxDyn(shape), lcg(n as u64, n, 3.0)).expect("shape");
    let dy = ArrayD::from_shape_vec(IxDyn(shape), lcg(n as u64 + 1, n, 0.0)).expect("shape");
    let (ry, rdx) = reference(&x, &dy, reduced);

    let mut l64 = DynNorm::<f64>::new(&spec, &[]).expect("layer");
    let (y, saved) = l64.forward_train(x.view()).expect("forward");
    let g = l64.backward(x.view(), dy.view(), &saved).expect("backward");
    let (ey, edx) = (max_rel(&y, &ry, 1e-30), max_rel(&g.dx, &rdx, 1.0));
    assert!(ey < 1e-12 && edx < 1e-11, "{what} f64: y {ey:e} dx {edx:e}");

    let (x32, dy32) = (x.mapv(|v| v as f32), dy.mapv(|v| v as f32));
    let (rx, rdy) = (x32.mapv(f64::from), dy32.mapv(f64::from));
    let (ry, rdx) = reference(&rx, &rdy, reduced);
    let mut l32 = DynNorm::<f32>::new(&spec, &[]).expect("layer");
    let (y, saved) = l32.forward_train(x32.view()).expect("forward");
    let g = l32
        .backward(x32.view(), dy32.view(), &saved)
        .expect("backward");
    let (ey, edx) = (
        max_rel(&y.mapv(f64::from), &ry, 1e-30),
        max_rel(&g.dx.mapv(f64::from), &rdx, 1.0),
    );
    assert!(ey < 2e-6 && edx < 2e-5, "{what} f32: y {ey:e} dx {edx:e}");
}

fn levels() -> Vec<Level> {
    simd::available()
}

/// A cap runs the best available level at or below it: a level of another architecture
/// (NEON on x86-64, AVX2 on aarch64) never runs, and the portable code is always there.
#[test]
fn a_cap_runs_the_best_available_level_below_it() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let avail = simd::available();
    assert_eq!(avail.first(), Some(&Level::Scalar));
    assert_eq!(avail.last(), Some(&simd::detected()));
    for cap in [Level::Scalar, Level::Neon, Level::Avx2, Level::Avx512] {
        simd::set_cap(Some(cap));
        let best = *avail.iter().filter(|&&l| l <= cap).max().expect("scalar");
        assert_eq!(simd::level(), best, "cap {cap:?}");
        assert!(avail.contains(&simd::level()));
    }
    simd::set_cap(None);
    if std::env::var_os("NORMKIT_SIMD").is_none() {
        assert_eq!(simd::level(), simd::detected());
    }
}

#[test]
fn every_level_on_odd_lengths() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for level in levels() {
        simd::set_cap(Some(level));
        assert_eq!(simd::level(), level);
        for len in [1usize, 2, 7, 15, 16, 17, 31, 32, 33, 48, 64, 65, 130, 1023] {
            // Rows: each group is one contiguous line.
            if len > 1 {
                check_case(
                    "N,D",
                    "D",
                    &[3, len],
                    &[1],
                    &format!("{level:?} rows len {len}"),
                );
            }
            // Columns: channels-last batch norm, groups along the line (19 lines: more than
            // one flush of the f32 partial sums of the backward pass).
            check_case(
                "N,C",
                "N",
                &[19, len],
                &[0],
                &format!("{level:?} columns len {len}"),
            );
            // Sandwich: NCHW batch norm, lines of length `len` per channel.
            check_case(
                "N,C,L",
                "N,L",
                &[3, 2, len],
                &[0, 2],
                &format!("{level:?} sandwich len {len}"),
            );
        }
        // One-element lines inside a group (interleaved kept/reduced runs).
        check_case(
            "A,B,C,D",
            "A,C",
            &[3, 2, 5, 1],
            &[0, 2],
            &format!("{level:?} interleaved"),
        );
    }
    simd::set_cap(None);
}

#[test]
fn split_path_for_few_huge_groups() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    simd::set_cap(None);
    // One column block of 3 groups over 70 000 rows, and two rows of 100 003 elements.
    check_case("N,F", "N", &[70_000, 3], &[0], "split columns");
    check_case("N,F", "N", &[3_000, 64], &[0], "split columns of 64");
    check_case("N,D", "D", &[2, 100_003], &[1], "split rows");
    // Sandwich with 3 channels of 3 × 40 000 values each.
    check_case("N,C,L", "N,L", &[3, 3, 40_000], &[0, 2], "split sandwich");
}

#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
struct Bn;

#[norm(input = "N,D", axes = "D", affine = "D")]
struct Ln;

/// Runs `f` on a rayon pool with `threads` threads.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool")
        .install(f)
}

#[test]
fn bit_identical_for_one_and_two_threads() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    simd::set_cap(None);
    let x = ArrayD::from_shape_vec(IxDyn(&[8, 16, 20, 20]), lcg(7, 8 * 16 * 400, 1.0))
        .expect("shape")
        .into_dimensionality()
        .expect("4-d");
    let run = || {
        let mut bn = Bn::<f32>::new(16);
        let x = x.mapv(|v: f64| v as f32);
        let (y, saved) = bn.forward_train(x.view()).expect("forward");
        let g = bn.backward(x.view(), y.view(), &saved).expect("backward");
        (y, g.dx, g.dgamma, bn.running_var)
    };
    assert_eq!(on_threads(1, run), on_threads(2, run));

    let x2 = ArrayD::from_shape_vec(IxDyn(&[300, 1000]), lcg(9, 300_000, -2.0))
        .expect("shape")
        .into_dimensionality()
        .expect("2-d");
    let run = || {
        let mut ln = Ln::<f64>::new(1000);
        ln.gamma
            .iter_mut()
            .enumerate()
            .for_each(|(i, g)| *g = 1.0 + i as f64 * 1e-3);
        let (y, saved) = ln.forward_train(x2.view()).expect("forward");
        let g = ln.backward(x2.view(), y.view(), &saved).expect("backward");
        (y, g.dx, g.dgamma, g.dbeta)
    };
    assert_eq!(on_threads(1, run), on_threads(2, run));

    // A fused chain (Batch-Channel Normalization, 512 cells of 100 values: several tasks).
    let spec = NormSpec::parse(
        r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 4, affine))"#,
    )
    .expect("spec");
    let x3 = ArrayD::from_shape_vec(IxDyn(&[8, 64, 10, 10]), lcg(11, 51_200, 0.5)).expect("shape");
    let run = || {
        let mut l = DynNorm::<f32>::new(&spec, &[("C", 64)]).expect("layer");
        let x = x3.mapv(|v| v as f32);
        let (y, saved) = l.forward_train(x.view()).expect("forward");
        let g = l
            .backward_chain(x.view(), y.view(), &saved)
            .expect("backward");
        (y, g, l.stages()[0].running_var.clone())
    };
    assert_eq!(on_threads(1, run), on_threads(2, run));
}

/// Naive LayerNorm backward over the last axis of `[rows, d]` with γ indexed by
/// `param_of(row)` (a row of the `[P, d]` γ): dx, dγ, dβ in f64, and the scale of the terms
/// dx cancels (max r·|dy·γ|: dx of a one-element row is ~0, its f32 error is not).
fn layer_norm_reference(
    x: &[f64],
    dy: &[f64],
    gamma: &[f64],
    d: usize,
    param_of: impl Fn(usize) -> usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, f64) {
    let rows = x.len() / d;
    let mut scale = 0.0f64;
    let mut dx = vec![0.0; x.len()];
    let (mut dg, mut db) = (vec![0.0; gamma.len()], vec![0.0; gamma.len()]);
    for r in 0..rows {
        let (xr, dr) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
        let g = &gamma[param_of(r) * d..(param_of(r) + 1) * d];
        let mean = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let rs = 1.0 / (var + 1e-5).sqrt();
        let xh: Vec<f64> = xr.iter().map(|v| (v - mean) * rs).collect();
        let gd: Vec<f64> = dr.iter().zip(g).map(|(a, b)| a * b).collect();
        scale = gd.iter().fold(scale, |m, v| m.max(rs * v.abs()));
        let mg = gd.iter().sum::<f64>() / d as f64;
        let mgx = gd.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / d as f64;
        for j in 0..d {
            dx[r * d + j] = rs * (gd[j] - mg - xh[j] * mgx);
            dg[param_of(r) * d + j] += dr[j] * xh[j];
            db[param_of(r) * d + j] += dr[j];
        }
    }
    (dx, dg, db, scale)
}

/// Rows carrying γ along the line take the blocked, staged backward kernels (blocks of
/// rows sharing γ, γ-gradient sums staged in f32 and flushed every few rows): 19 rows cross
/// several flushes and end on a partial block. With γ over `C,D` the rows of a block do not
/// share γ and the staging flushes whenever it changes.
#[test]
fn rows_with_gamma_along_the_line_at_every_level() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let shared = NormSpec::parse(r#"input = "N,D", axes = "D", affine = "D""#).expect("spec");
    let per_c = NormSpec::parse(r#"input = "N,C,D", axes = "D", affine = "C,D""#).expect("spec");
    for level in levels() {
        simd::set_cap(Some(level));
        for d in [1usize, 7, 16, 17, 63, 64, 65, 130, 1023] {
            let rows = 19;
            let n = rows * d;
            let x = lcg(d as u64, n, 2.0);
            let dy = lcg(d as u64 + 7, n, 0.5);
            // One γ for all rows, and one γ per row (C = the 19 rows of a [1, 19, d] input).
            for (spec, per_row, shape) in [
                (&shared, false, vec![rows, d]),
                (&per_c, true, vec![1, rows, d]),
            ] {
                let prow = if per_row { rows } else { 1 };
                let gamma = lcg(d as u64 + 3, prow * d, 1.0);
                let param_of = |r: usize| if per_row { r } else { 0 };
                let (rdx, rdg, rdb, terms) = layer_norm_reference(&x, &dy, &gamma, d, param_of);
                let (gshape, sizes) = if per_row {
                    (vec![rows, d], vec![("C", rows), ("D", d)])
                } else {
                    (vec![d], vec![("D", d)])
                };
                let g32 = ArrayD::from_shape_vec(
                    IxDyn(&gshape),
                    gamma.iter().map(|&v| v as f32).collect(),
                )
                .expect("gamma");
                let mut layer = DynNorm::<f32>::new(spec, &sizes).expect("layer");
                assert_eq!(
                    layer.stages()[0].gamma.as_ref().map(|g| g.shape().to_vec()),
                    Some(gshape.clone())
                );
                layer.stages_mut()[0].gamma = Some(g32);
                let x32 =
                    ArrayD::from_shape_vec(IxDyn(&shape), x.iter().map(|&v| v as f32).collect())
                        .expect("x");
                let dy32 =
                    ArrayD::from_shape_vec(IxDyn(&shape), dy.iter().map(|&v| v as f32).collect())
                        .expect("dy");
                let (_, saved) = layer.forward_train(x32.view()).expect("forward");
                let g = layer
                    .backward(x32.view(), dy32.view(), &saved)
                    .expect("backward");
                let err = |a: &[f32], b: &[f64], floor: f64| {
                    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
                    a.iter()
                        .zip(b)
                        .fold(0.0f64, |m, (&p, q)| m.max((f64::from(p) - q).abs() / scale))
                };
                let what = format!("{level:?} d {d} per-row γ {per_row}");
                let dx = g.dx.as_slice().expect("contiguous");
                let dg = g.dgamma.as_ref().expect("dgamma");
                let db = g.dbeta.as_ref().expect("dbeta");
                let (ex, eg, eb) = (
                    err(dx, &rdx, terms),
                    err(dg.as_slice().expect("contiguous"), &rdg, 1.0),
                    err(db.as_slice().expect("contiguous"), &rdb, 1.0),
                );
                assert!(
                    ex < 2e-5 && eg < 2e-6 && eb < 2e-6,
                    "{what}: dx {ex:e} dγ {eg:e} dβ {eb:e}"
                );
            }
        }
    }
    simd::set_cap(None);
}

/// A layer declaration, its named sizes and an input shape.
type Case = (&'static str, &'static [(&'static str, usize)], Vec<usize>);

/// y and dx of `layer` on `x`, `dy`, written into buffers that start `off` elements into
/// a larger allocation (every offset moves the outputs' 64-byte alignment).
fn outputs_at(
    layer: &mut DynNorm<f32>,
    x: &ArrayD<f32>,
    dy: &ArrayD<f32>,
    off: usize,
) -> (Vec<f32>, Vec<f32>) {
    let n = x.len();
    let shape = x.shape().to_vec();
    let mut ybuf = vec![f32::NAN; off + n + 16];
    let mut saved = Saved::new();
    let y = normkit::ndarray::ArrayViewMutD::from_shape(IxDyn(&shape), &mut ybuf[off..off + n])
        .expect("y view");
    layer
        .forward_train_into(x.view(), y, &mut saved)
        .expect("forward");
    // The padding around the output is untouched (masked heads and tails stay inside).
    assert!(ybuf[..off]
        .iter()
        .chain(&ybuf[off + n..])
        .all(|v| v.is_nan()));
    // An owned dx whose data starts `off` elements into its allocation.
    let dxbuf = ArrayD::from_elem(IxDyn(&[off + n + 16]), f32::NAN);
    let dx = dxbuf
        .slice_move(normkit::ndarray::s![off..off + n])
        .into_shape_with_order(IxDyn(&shape))
        .expect("dx shape");
    let mut grads = Grads::new(dx);
    layer
        .backward_into(x.view(), dy.view(), &saved, &mut grads)
        .expect("backward");
    let dx = grads.dx.as_slice().expect("contiguous").to_vec();
    (ybuf[off..off + n].to_vec(), dx)
}

/// The elementwise passes start their vectors at 64-byte boundaries of the output (masked
/// heads and tails) and stream the full vectors of large outputs: the results are the same
/// bits at every output alignment, streamed or not, for rows (with and without γ along the
/// line), NCHW lines, runs of channels-last columns (widths with and without a register
/// kernel) and columns that are not one run; and they agree with the portable level.
#[test]
fn outputs_at_every_alignment_streamed_or_not() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cases: &[Case] = &[
        (r#"input = "N,D", axes = "D""#, &[], vec![5, 1029]),
        (
            r#"input = "N,D", axes = "D", affine = "D""#,
            &[("D", 33)],
            vec![7, 33],
        ),
        (
            r#"input = "N,D", axes = "D", affine = "D""#,
            &[("D", 200)],
            vec![6, 200],
        ),
        (
            r#"input = "N,D", axes = "D", affine = "D""#,
            &[("D", 7)],
            vec![9, 7],
        ),
        (
            r#"input = "N,C,L", axes = "N,L", affine"#,
            &[("C", 3)],
            vec![4, 3, 150],
        ),
        (
            r#"input = "N,C", axes = "N", affine"#,
            &[("C", 64)],
            vec![37, 64],
        ),
        (
            r#"input = "N,C", axes = "N", affine"#,
            &[("C", 48)],
            vec![21, 48],
        ),
        (r#"input = "N,C", axes = "N""#, &[], vec![13, 16]),
        (r#"input = "N,C", axes = "N""#, &[], vec![9, 80]),
        // Runs of 6 and 8 vectors: 48 and 64 columns at AVX2, 96 and 128 at AVX-512.
        (r#"input = "N,C", axes = "N""#, &[], vec![10, 96]),
        (r#"input = "N,C", axes = "N""#, &[], vec![11, 128]),
        (r#"input = "N,L,C", axes = "L""#, &[], vec![3, 11, 32]),
        (r#"input = "N,H,W,C", axes = "N,W""#, &[], vec![3, 4, 5, 16]),
        // Short lines (small maps): GroupNorm on 5×5 and 1×1 maps, NCHW batch norm on 3×3.
        (
            r#"input = "N,C,H,W", axes = "C,H,W", groups = 4, affine"#,
            &[("C", 8)],
            vec![3, 8, 5, 5],
        ),
        (
            r#"input = "N,C,H,W", axes = "C,H,W", groups = 4, affine"#,
            &[("C", 12)],
            vec![5, 12, 1, 1],
        ),
        (
            r#"input = "N,C,H,W", axes = "N,H,W", affine"#,
            &[("C", 6)],
            vec![7, 6, 3, 3],
        ),
    ];
    for (spec, sizes, shape) in cases {
        let spec = NormSpec::parse(spec).expect("spec");
        let n: usize = shape.iter().product();
        let x = ArrayD::from_shape_vec(
            IxDyn(shape),
            lcg(n as u64, n, 1.5).iter().map(|&v| v as f32).collect(),
        )
        .expect("x");
        let dy = ArrayD::from_shape_vec(
            IxDyn(shape),
            lcg(n as u64 + 5, n, 0.2)
                .iter()
                .map(|&v| v as f32)
                .collect(),
        )
        .expect("dy");
        let mut layer = DynNorm::<f32>::new(&spec, sizes).expect("layer");
        for st in layer.stages_mut() {
            if let Some(g) = st.gamma.as_mut() {
                let k = g.len();
                g.iter_mut()
                    .zip(lcg(k as u64, k, 1.0))
                    .for_each(|(g, v)| *g = v as f32);
            }
            if let Some(b) = st.beta.as_mut() {
                let k = b.len();
                b.iter_mut()
                    .zip(lcg(k as u64 + 1, k, 0.0))
                    .for_each(|(b, v)| *b = v as f32);
            }
        }
        simd::set_cap(Some(Level::Scalar));
        let (py, pdx) = outputs_at(&mut layer, &x, &dy, 0);
        for level in levels() {
            simd::set_cap(Some(level));
            let (y0, dx0) = outputs_at(&mut layer, &x, &dy, 0);
            let what = format!("{level:?} {shape:?}");
            let close = |a: &[f32], b: &[f32], tol: f32| {
                let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                a.iter().zip(b).all(|(p, q)| (p - q).abs() <= tol * scale)
            };
            assert!(
                close(&y0, &py, 1e-5) && close(&dx0, &pdx, 1e-4),
                "{what} vs portable"
            );
            for stream in [false, true] {
                simd::set_stream_threshold(stream.then_some(0));
                for off in 0..16 {
                    let (y, dx) = outputs_at(&mut layer, &x, &dy, off);
                    let same = |a: &[f32], b: &[f32]| {
                        a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits())
                    };
                    assert!(same(&y, &y0), "{what} y at offset {off}, streamed {stream}");
                    assert!(
                        same(&dx, &dx0),
                        "{what} dx at offset {off}, streamed {stream}"
                    );
                }
            }
            simd::set_stream_threshold(None);
        }
    }
    simd::set_cap(None);
}
