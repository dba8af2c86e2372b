//! Line kernels: one contiguous line of the input, along which the statistics index
//! advances by `DS ∈ {0, 1}` (`DS = false`: the whole line is one group; `true`: element `i`
//! belongs to group `i`, the channels-last columns) and the parameters by 0 or 1.
//!
//! Written for the auto-vectorizer (zipped iterators), with the explicit-SIMD row and
//! column kernels of [`super::reduce`] where the compiler falls short; every function is
//! `#[inline(always)]` so it is compiled inside the caller's `#[target_feature]` copy
//! ([`super::simd::multiversion`]).

use super::reduce::{col_dsums_portable, head, row_dparams_portable, row_dx_portable};
use crate::kernels::elem::RowReduce;
use crate::Float;

/// Coefficient arrays (m, a, b): per group, x̂ = (x − m)·a + b.
pub(crate) type Coef3<'a, T> = (&'a [T], &'a [T], &'a [T]);

/// Per-group dx coefficients (c, m, a, b): dx = dy·c·γ + ((x − m)·a + b).
pub(crate) type Coef4<'a, T> = (&'a [T], &'a [T], &'a [T], &'a [T]);

/// Σ(x − shift) and Σ(x − shift)² of a line in f64 (explicit SIMD, see `reduce`).
#[inline(always)]
pub(crate) fn row_sums<T: Float>(x: &[T], shift: f64) -> (f64, f64) {
    T::row_sums(x, shift)
}

/// The affine parameters along one line (unfolded γ/β).
#[derive(Clone, Copy)]
pub(crate) enum ParamLine<'a, T> {
    /// Folded into the coefficients.
    None,
    /// One γ (and β) for the whole line.
    Scalar(T, T),
    /// `γ[i]` (and `β[i]`) along the line.
    Vector(&'a [T], Option<&'a [T]>),
}

/// y = ((x − m)·a + b)·γ + β over a line; `m`, `a`, `b` have length 1 (`DS = false`) or the
/// line's length.
#[inline(always)]
pub(crate) fn affine<T: Float, const DS: bool>(
    x: &[T],
    y: &mut [T],
    m: &[T],
    a: &[T],
    b: &[T],
    p: ParamLine<'_, T>,
) {
    if !DS {
        // A scalar γ, β folded into (a, b) once, before the two parts (as `stage` folds
        // per-channel ones): left to each part, the fold was computed speculatively from a
        // spilled γ, a stack load that waited behind the previous line's stores (AVX2,
        // weight standardization: 3.5 % of the task body).
        let ((m, a, b), g) = match p {
            ParamLine::None => ((m[0], a[0], b[0]), None),
            ParamLine::Scalar(g, bt) => ((m[0], a[0] * g, b[0] * g + bt), None),
            ParamLine::Vector(g, bt) => ((m[0], a[0], b[0]), Some((g, bt))),
        };
        let h = head(y);
        // Elementwise: the two parts compute exactly what the whole line would.
        let (y0, y1) = y.split_at_mut(h);
        let (x0, x1) = x.split_at(h);
        let rest = match g {
            Some((g, Some(bt))) => Some((&g[h..], Some(&bt[h..]))),
            Some((g, None)) => Some((&g[h..], None)),
            None => None,
        };
        row_affine(x0, y0, (m, a, b), g);
        row_affine(x1, y1, (m, a, b), rest);
        return;
    }
    let it = y.iter_mut().zip(x).zip(m).zip(a).zip(b);
    match p {
        ParamLine::None => {
            for ((((o, &v), &m), &a), &b) in it {
                *o = (v - m) * a + b;
            }
        }
        ParamLine::Scalar(g, bt) => {
            for ((((o, &v), &m), &a), &b) in it {
                *o = ((v - m) * a + b) * g + bt;
            }
        }
        // γ and β zipped, no closure per element (one may stay out of line).
        ParamLine::Vector(g, Some(bt)) => {
            for (((((o, &v), &m), &a), &b), (&g, &bt)) in it.zip(g.iter().zip(bt)) {
                *o = ((v - m) * a + b) * g + bt;
            }
        }
        ParamLine::Vector(g, None) => {
            for (((((o, &v), &m), &a), &b), &g) in it.zip(g) {
                *o = ((v - m) * a + b) * g + T::zero();
            }
        }
    }
}

/// y = ((x − m)·a + b)·γ + β over (part of) a row with one (m, a, b), `g` = γ and β
/// along the row (else y = (x − m)·a + b).
#[inline(always)]
fn row_affine<T: Float>(
    x: &[T],
    y: &mut [T],
    (m, a, b): (T, T, T),
    g: Option<(&[T], Option<&[T]>)>,
) {
    match g {
        None => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = (v - m) * a + b;
            }
        }
        Some((g, Some(bt))) => {
            for (((o, &v), &g), &bt) in y.iter_mut().zip(x).zip(g).zip(bt) {
                *o = ((v - m) * a + b) * g + bt;
            }
        }
        Some((g, None)) => {
            for ((o, &v), &g) in y.iter_mut().zip(x).zip(g) {
                *o = ((v - m) * a + b) * g;
            }
        }
    }
}

/// Parameter-gradient accumulators of one line (unfolded γ only).
pub(crate) enum DParam<'a, T> {
    /// γ folded or absent: sums are of dy.
    None,
    /// One γ for the line: g = γ·dy; accumulates Σdy·x̂ and Σdy into the two slots.
    Scalar(T, &'a mut f64, &'a mut f64),
    /// `γ[i]` along the line; accumulates per element.
    Vector(&'a [T], &'a mut [f64], &'a mut [f64]),
}

/// How a row's backward sums (Σw·dy, Σw·dy·x̂) fold into its group's sums.
pub(crate) enum RowFold<'a> {
    /// Added as they are (no γ, a folded γ, or γ along the row, weighted by the kernel).
    Plain,
    /// One γ for the row: the sums are of dy; they go to γ's gradients as they are and to
    /// the group's sums times γ.
    Scalar(f64, &'a mut f64, &'a mut f64),
}

impl RowFold<'_> {
    /// Folds the row's sums `(t1, t2)` into the group's `sg`, `sgx`.
    #[inline(always)]
    pub(crate) fn apply(self, (t1, t2): (f64, f64), sg: &mut f64, sgx: &mut f64) {
        match self {
            RowFold::Plain => {
                *sg += t1;
                *sgx += t2;
            }
            RowFold::Scalar(g, dg, db) => {
                *dg += t2;
                *db += t1;
                *sg += g * t1;
                *sgx += g * t2;
            }
        }
    }
}

/// Backward sums of a line (`(x, dy)`) with x̂ = (x − m)·a + b: per group Σg and Σg·x̂ into
/// `(sg, sgx)` (index 0 when `DS = false`), and the parameter sums.
#[inline(always)]
pub(crate) fn dsums<T: Float, const DS: bool>(
    (x, dy): (&[T], &[T]),
    (m, a, b): Coef3<'_, T>,
    p: DParam<'_, T>,
    (sg, sgx): (&mut [f64], &mut [f64]),
) {
    if !DS {
        let c = (m[0], a[0], b[0]);
        let (w, fold) = match p {
            DParam::None => (None, RowFold::Plain),
            DParam::Scalar(g, dg, db) => (None, RowFold::Scalar(g.to_acc(), dg, db)),
            DParam::Vector(g, dg, db) => {
                // A line of a larger group: γ's sums straight into f64 (rows of whole groups
                // stage them in the element type, see `exec`).
                row_dparams_portable(x, dy, c, dg, db);
                (Some((g, None)), RowFold::Plain)
            }
        };
        fold.apply(T::row_dsums(x, dy, c, w), &mut sg[0], &mut sgx[0]);
        return;
    }
    match p {
        DParam::None => col_dsums_portable(x, dy, (m, a, b), sg, sgx),
        DParam::Scalar(g, dg, db) => {
            let g = g.to_acc();
            let (mut t1, mut t2) = (0.0, 0.0);
            for i in 0..x.len() {
                let d = dy[i].to_acc();
                let xh = ((x[i] - m[i]) * a[i] + b[i]).to_acc();
                t1 += d;
                t2 += d * xh;
                sg[i] += g * d;
                sgx[i] += g * d * xh;
            }
            *dg += t2;
            *db += t1;
        }
        DParam::Vector(g, dg, db) => {
            for i in 0..x.len() {
                let d = dy[i].to_acc();
                let xh = ((x[i] - m[i]) * a[i] + b[i]).to_acc();
                dg[i] += d * xh;
                db[i] += d;
                let gd = g[i].to_acc() * d;
                sg[i] += gd;
                sgx[i] += gd * xh;
            }
        }
    }
}

/// γ along a line for the dx pass.
#[derive(Clone, Copy)]
pub(crate) enum GammaLine<'a, T> {
    /// Folded into `c` (or absent).
    None,
    /// One γ for the line.
    Scalar(T),
    /// `γ[i]` along the line.
    Vector(&'a [T]),
}

impl<'a, T: Float> GammaLine<'a, T> {
    /// For a row: the dx coefficient `c` with a scalar γ folded in, and γ along the row.
    #[inline(always)]
    pub(crate) fn row(self, c: T) -> (T, Option<&'a [T]>) {
        match self {
            GammaLine::None => (c, None),
            GammaLine::Scalar(g) => (c * g, None),
            GammaLine::Vector(g) => (c, Some(g)),
        }
    }
}

/// dx = dy·c·γ + ((x − m)·a + b) over a line (`(x, dy)`) into `out`.
#[inline(always)]
pub(crate) fn dx<T: Float, const DS: bool>(
    (x, dy): (&[T], &[T]),
    out: &mut [T],
    (c, m, a, b): Coef4<'_, T>,
    g: GammaLine<'_, T>,
) {
    if !DS {
        let (c, g) = g.row(c[0]);
        row_dx_portable(x, dy, out, (c, m[0], a[0], b[0]), g);
        return;
    }
    // Columns: zipped iterators, the γ case hoisted, so the loop vectorizes.
    let coef = c.iter().zip(m).zip(a.iter().zip(b));
    let it = out.iter_mut().zip(x).zip(dy).zip(coef);
    match g {
        GammaLine::None => {
            for (((o, &v), &d), ((&c, &m), (&a, &b))) in it {
                *o = d * c + ((v - m) * a + b);
            }
        }
        GammaLine::Scalar(g) => {
            for (((o, &v), &d), ((&c, &m), (&a, &b))) in it {
                *o = d * (c * g) + ((v - m) * a + b);
            }
        }
        GammaLine::Vector(g) => {
            for ((((o, &v), &d), ((&c, &m), (&a, &b))), &g) in it.zip(g) {
                *o = d * (c * g) + ((v - m) * a + b);
            }
        }
    }
}
