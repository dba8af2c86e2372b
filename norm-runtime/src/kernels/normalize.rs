//! The normalize pass: y = ((x − m)·a + b)·γ + β with per-group coefficients.
//!
//! `m` is the group mean rounded to the element type and `b` carries the rounding remainder
//! (b = −(μ − m)/σ), so an f32 layer keeps full precision on data with a large offset: the
//! subtraction x − m of nearby values is exact. When the parameters vary only along kept
//! axes the caller folds them into `a` and `b` and this pass is a subtract and a
//! multiply-add per element.

use super::Coef;
use crate::plan::Plan;
use crate::Float;

/// Affine parameters that vary inside a statistics group (not folded).
pub(crate) struct Unfolded<'a, T> {
    pub gamma: &'a [T],
    pub beta: Option<&'a [T]>,
}

/// Writes the normalized `x` into `y` (both standard layout).
pub(crate) fn normalize<T: Float>(
    plan: &Plan,
    x: &[T],
    coef: &Coef<T>,
    params: Option<&Unfolded<'_, T>>,
    y: &mut [T],
) {
    let (m, a, b) = (&coef.m[..], &coef.a[..], &coef.b[..]);
    let line = plan.line();
    let len = line.size;
    for k in 0..plan.lines() {
        let (xo, so, po) = plan.line_offsets(k);
        let xs = &x[xo..xo + len];
        let ys = &mut y[xo..xo + len];
        match (line.ss, params) {
            (0, None) => {
                let (m, a, b) = (m[so], a[so], b[so]);
                for (o, &v) in ys.iter_mut().zip(xs) {
                    *o = (v - m) * a + b;
                }
            }
            (_, None) => {
                let (m, a, b) = (&m[so..so + len], &a[so..so + len], &b[so..so + len]);
                for i in 0..len {
                    ys[i] = (xs[i] - m[i]) * a[i] + b[i];
                }
            }
            (ss, Some(p)) => {
                let beta = |i: usize| p.beta.map_or(T::zero(), |bt| bt[i]);
                if line.ps == 0 {
                    let (g, bt) = (p.gamma[po], beta(po));
                    if ss == 0 {
                        let (m, a, b) = (m[so], a[so] * g, b[so] * g + bt);
                        for (o, &v) in ys.iter_mut().zip(xs) {
                            *o = (v - m) * a + b;
                        }
                    } else {
                        for i in 0..len {
                            let s = so + i;
                            ys[i] = ((xs[i] - m[s]) * a[s] + b[s]) * g + bt;
                        }
                    }
                } else {
                    let gm = &p.gamma[po..po + len];
                    for i in 0..len {
                        let s = so + i * ss;
                        ys[i] = ((xs[i] - m[s]) * a[s] + b[s]) * gm[i] + beta(po + i);
                    }
                }
            }
        }
    }
}
