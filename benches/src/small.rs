//! Small calls (issue 13, item 6): the fixed cost of a call (validation, planning, the
//! running update, dispatch) against a plain scalar Rust loop that computes the same thing
//! on the same data, single-threaded, through the public `_into` entry points with their
//! buffers (and `Saved`) reused.
//!
//! Each case times the library call and its plain loop alternately, in batches of calls
//! (about 50 µs each, so the clock's own cost does not count), and reports the medians per
//! call and their ratio (`normkit / plain`). The plain loops are what one would write by
//! hand: two passes over the data, f64 accumulators (the library's accuracy), the
//! elementwise pass in f32.

use std::hint::black_box;
use std::time::Instant;

use normkit::ndarray::{Array, Array1, Array2, Array4, ArrayViewMut, Dimension};
use normkit::prelude::*;

use crate::data::Rng;

/// `nn.BatchNorm1d(C)`: statistics over N per feature, running statistics.
#[norm(input = "N,C", axes = "N", affine, running_stats, momentum = 0.1)]
pub struct BatchNorm1d;

/// `nn.BatchNorm2d(C)` (eval here).
#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    affine,
    running_stats,
    momentum = 0.1
)]
pub struct BatchNorm2dSmall;

/// `F.layer_norm(x, (D,), w, b, 1e-5)`.
#[norm(input = "N,D", axes = "D", affine = "D")]
pub struct LayerNormSmall;

/// A small case: its name, shape and what it times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmallCase {
    /// The case name (`--small-cases`).
    pub name: &'static str,
    /// The input shape.
    pub shape: &'static [usize],
    /// What is timed.
    pub what: &'static str,
}

/// The small cases.
pub const SMALL: [SmallCase; 6] = [
    SmallCase {
        name: "bn1d_train",
        shape: &[32, 128],
        what: "BatchNorm1d train forward (forward_train_into, Saved reused, running update)",
    },
    SmallCase {
        name: "ln_eval",
        shape: &[32, 128],
        what: "LayerNorm eval forward (forward_eval_into)",
    },
    SmallCase {
        name: "ln_1x768",
        shape: &[1, 768],
        what: "LayerNorm eval forward, one row",
    },
    SmallCase {
        name: "ln_1x4096",
        shape: &[1, 4096],
        what: "LayerNorm eval forward, one row",
    },
    SmallCase {
        name: "ln_8x4096",
        shape: &[8, 4096],
        what: "LayerNorm eval forward",
    },
    SmallCase {
        name: "bn2d_eval",
        shape: &[1, 64, 8, 8],
        what: "BatchNorm2d eval forward (running statistics)",
    },
];

/// What one small case measured (seconds per call, medians).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SmallTiming {
    /// The library call.
    pub normkit: f64,
    /// The plain scalar loop.
    pub plain: f64,
    /// The largest difference between the two outputs (a sanity check of the plain loop).
    pub max_diff: f64,
}

impl SmallTiming {
    /// `normkit / plain`.
    pub fn ratio(&self) -> f64 {
        self.normkit / self.plain
    }
}

fn filled(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    rng.fill_uniform(&mut v, lo, hi);
    v
}

/// Times `a` and `b` alternately: `samples` batches of each, `inner` calls per batch.
fn alternate(mut a: impl FnMut(), mut b: impl FnMut(), samples: usize) -> (f64, f64) {
    // Calls per batch: about 50 µs of `a`.
    let t0 = Instant::now();
    let mut probe = 0usize;
    while probe < 10_000 && t0.elapsed().as_secs_f64() < 2e-3 {
        a();
        b();
        probe += 1;
    }
    let per = t0.elapsed().as_secs_f64() / (2 * probe.max(1)) as f64;
    let inner = ((50e-6 / per.max(1e-9)) as usize).clamp(1, 10_000);
    let (mut ta, mut tb) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        let t = Instant::now();
        for _ in 0..inner {
            a();
        }
        ta.push(t.elapsed().as_secs_f64() / inner as f64);
        let t = Instant::now();
        for _ in 0..inner {
            b();
        }
        tb.push(t.elapsed().as_secs_f64() / inner as f64);
    }
    (median(&mut ta), median(&mut tb))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

/// Plain BatchNorm1d train forward on `[n, c]` (row-major): per-feature mean and biased
/// variance, y = (x − μ)/√(σ² + eps)·γ + β, running statistics with momentum 0.1 and the
/// unbiased variance. Two passes over `x`, then per-feature coefficients and one
/// elementwise pass; the per-feature accumulators are arrays, so the loops run along rows.
pub fn plain_bn1d_train(
    x: &[f32],
    (n, c): (usize, usize),
    (gamma, beta): (&[f32], &[f32]),
    running: (&mut [f32], &mut [f32]),
    acc: (&mut [f64], &mut [f64]),
    coef: (&mut [f32], &mut [f32]),
    y: &mut [f32],
) {
    let (sum, sq) = acc;
    sum.fill(0.0);
    sq.fill(0.0);
    for row in x.chunks_exact(c) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += f64::from(v);
        }
    }
    for s in sum.iter_mut() {
        *s /= n as f64;
    }
    for row in x.chunks_exact(c) {
        for ((q, &m), &v) in sq.iter_mut().zip(sum.iter()).zip(row) {
            let d = f64::from(v) - m;
            *q += d * d;
        }
    }
    let (rm, rv) = running;
    let (a, b) = coef;
    // Per feature: the running statistics (unbiased variance), then y = x·a + b with
    // a = γ/σ, b = β − μ·a.
    for k in 0..c {
        let var = sq[k] / n as f64;
        rm[k] = (0.9 * f64::from(rm[k]) + 0.1 * sum[k]) as f32;
        rv[k] = (0.9 * f64::from(rv[k]) + 0.1 * sq[k] / (n as f64 - 1.0)) as f32;
        let r = 1.0 / (var + 1e-5).sqrt() * f64::from(gamma[k]);
        a[k] = r as f32;
        b[k] = (f64::from(beta[k]) - sum[k] * r) as f32;
    }
    for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for ((o, &v), (&a, &b)) in yr.iter_mut().zip(xr).zip(a.iter().zip(b.iter())) {
            *o = v * a + b;
        }
    }
}

/// Plain LayerNorm forward over rows of `d`: mean, biased variance, y = (x − μ)·r·γ + β.
pub fn plain_ln(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let mut s = 0.0f64;
        for &v in xr {
            s += f64::from(v);
        }
        let m = s / d as f64;
        let mut q = 0.0f64;
        for &v in xr {
            let e = f64::from(v) - m;
            q += e * e;
        }
        let r = 1.0 / (q / d as f64 + 1e-5).sqrt();
        let (mf, rf) = (m as f32, r as f32);
        for ((o, &v), (&g, &b)) in yr.iter_mut().zip(xr).zip(gamma.iter().zip(beta)) {
            *o = (v - mf) * rf * g + b;
        }
    }
}

/// Plain BatchNorm2d eval on NCHW: `y = (x − rm[c])/√(rv[c] + eps)·γ[c] + β[c]` per channel `c`.
pub fn plain_bn2d_eval(x: &[f32], shape: &[usize], p: [&[f32]; 4], y: &mut [f32]) {
    let [gamma, beta, rm, rv] = p;
    let (c, hw) = (shape[1], shape[2] * shape[3]);
    for (k, (xs, ys)) in x.chunks_exact(hw).zip(y.chunks_exact_mut(hw)).enumerate() {
        let ch = k % c;
        let r = 1.0 / (f64::from(rv[ch]) + 1e-5).sqrt();
        let a = (r * f64::from(gamma[ch])) as f32;
        let b = (f64::from(beta[ch]) - f64::from(rm[ch]) * r * f64::from(gamma[ch])) as f32;
        for (o, &v) in ys.iter_mut().zip(xs) {
            *o = v * a + b;
        }
    }
}

/// Times the library call `lib` (writing its output into the view it is given) against the
/// plain loop `plain` (writing into a slice): one call of `lib` first (its buffers grow),
/// then [`alternate`]; the outputs compared after. `ya` is the library's output buffer.
fn time_against_plain<D: Dimension>(
    mut lib: impl FnMut(ArrayViewMut<'_, f32, D>) -> Result<(), NormError>,
    mut plain: impl FnMut(&mut [f32]),
    mut ya: Array<f32, D>,
    samples: usize,
) -> Result<SmallTiming, NormError> {
    lib(ya.view_mut())?;
    let mut yp = vec![0.0f32; ya.len()];
    let mut err = Ok(());
    let (tn, tp) = alternate(
        || {
            if let Err(e) = lib(ya.view_mut()) {
                err = Err(e);
            }
            black_box(&ya);
        },
        || {
            plain(&mut yp);
            black_box(&yp);
        },
        samples,
    );
    err?;
    Ok(SmallTiming {
        normkit: tn,
        plain: tp,
        max_diff: max_diff(ya.as_slice().expect("standard layout"), &yp),
    })
}

/// Runs case `case` (`samples` alternating batches) on the calling thread.
pub fn run_case(case: &SmallCase, samples: usize, seed: u64) -> Result<SmallTiming, NormError> {
    let mut rng = Rng::new(seed);
    let shape = case.shape;
    let numel: usize = shape.iter().product();
    let x = filled(&mut rng, numel, -2.0, 2.0);
    match case.name {
        "bn1d_train" => {
            let (n, c) = (shape[0], shape[1]);
            let mut l = BatchNorm1d::new(c);
            l.gamma = Array1::from(filled(&mut rng, c, 0.5, 1.5));
            l.beta = Array1::from(filled(&mut rng, c, -0.5, 0.5));
            let (g, b) = (l.gamma.to_vec(), l.beta.to_vec());
            let xa = Array2::from_shape_vec((n, c), x.clone()).expect("shape");
            let mut saved = Saved::new();
            let (mut rm, mut rv) = (vec![0.0f32; c], vec![1.0f32; c]);
            let (mut s, mut q) = (vec![0.0f64; c], vec![0.0f64; c]);
            let (mut ca, mut cb) = (vec![0.0f32; c], vec![0.0f32; c]);
            time_against_plain(
                |ya| l.forward_train_into(xa.view(), ya, &mut saved),
                |yp| {
                    let run = (&mut rm[..], &mut rv[..]);
                    let acc = (&mut s[..], &mut q[..]);
                    let coef = (&mut ca[..], &mut cb[..]);
                    plain_bn1d_train(&x, (n, c), (&g, &b), run, acc, coef, yp);
                },
                Array2::<f32>::zeros((n, c)),
                samples,
            )
        }
        "ln_eval" | "ln_1x768" | "ln_1x4096" | "ln_8x4096" => {
            let (n, d) = (shape[0], shape[1]);
            let mut l = LayerNormSmall::new(d);
            l.gamma = Array1::from(filled(&mut rng, d, 0.5, 1.5));
            l.beta = Array1::from(filled(&mut rng, d, -0.5, 0.5));
            let (g, b) = (l.gamma.to_vec(), l.beta.to_vec());
            let xa = Array2::from_shape_vec((n, d), x.clone()).expect("shape");
            time_against_plain(
                |ya| l.forward_eval_into(xa.view(), ya),
                |yp| plain_ln(&x, d, &g, &b, yp),
                Array2::<f32>::zeros((n, d)),
                samples,
            )
        }
        _ => {
            // "bn2d_eval"
            let c = shape[1];
            let mut l = BatchNorm2dSmall::new(c);
            l.gamma = Array1::from(filled(&mut rng, c, 0.5, 1.5));
            l.beta = Array1::from(filled(&mut rng, c, -0.5, 0.5));
            l.running_mean = Array1::from(filled(&mut rng, c, -0.5, 0.5));
            l.running_var = Array1::from(filled(&mut rng, c, 0.5, 2.0));
            let p = [
                l.gamma.to_vec(),
                l.beta.to_vec(),
                l.running_mean.to_vec(),
                l.running_var.to_vec(),
            ];
            let dims = (shape[0], shape[1], shape[2], shape[3]);
            let xa = Array4::from_shape_vec(dims, x.clone()).expect("shape");
            time_against_plain(
                |ya| l.forward_eval_into(xa.view(), ya),
                |yp| plain_bn2d_eval(&x, shape, [&p[0], &p[1], &p[2], &p[3]], yp),
                Array4::<f32>::zeros(dims),
                samples,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain loops compute what the layers compute (to f32 rounding), so the ratio
    /// compares like with like.
    #[test]
    fn plain_loops_match_the_layers() {
        for case in SMALL {
            let t = run_case(&case, 3, 7).unwrap();
            assert!(t.max_diff < 1e-4, "{}: max diff {}", case.name, t.max_diff);
            assert!(t.normkit > 0.0 && t.plain > 0.0, "{}", case.name);
        }
    }
}
