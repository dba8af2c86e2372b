//! The f32 elementwise loops of the fused half-precision paths (`crate::widen`), compiled
//! per SIMD level ([`multiversion`]: AVX-512, AVX2+FMA, baseline). Each is a plain loop the
//! compiler vectorizes; Rust never contracts `a * b + c` into an FMA, so every level
//! computes the same bits (the expressions of the f32 layers' portable kernels). Generic
//! over the element type (the macro's signature); the fused paths use them on `f32`.
//!
//! A module of its own, not part of `convert`: the conversions are what `Float`'s half
//! types call, and these loops are generic over `Float`, so keeping them apart leaves no
//! import cycle (`.ci/module_cycles.py`).

use crate::kernels::isa::multiversion;
use crate::Float;

multiversion! {
    /// `y = (y − m)·a + b`.
    pub(crate) fn affine<T: Float>(y: &mut [T], m: T, a: T, b: T) {
        for v in y.iter_mut() {
            *v = (*v - m) * a + b;
        }
    }
}

multiversion! {
    /// `y = ((y − m)·a + b)·γ + β` along the line.
    pub(crate) fn affine_gb<T: Float>(y: &mut [T], m: T, a: T, b: T, g: &[T], bt: &[T]) {
        let n = y.len();
        let (g, bt) = (&g[..n], &bt[..n]);
        for i in 0..n {
            y[i] = ((y[i] - m) * a + b) * g[i] + bt[i];
        }
    }
}

multiversion! {
    /// `y = ((y − m)·a + b)·γ` along the line (no β).
    pub(crate) fn affine_g<T: Float>(y: &mut [T], m: T, a: T, b: T, g: &[T]) {
        let n = y.len();
        let g = &g[..n];
        for i in 0..n {
            y[i] = ((y[i] - m) * a + b) * g[i];
        }
    }
}

multiversion! {
    /// `x = dy·c + ((x − m)·a + b)`.
    pub(crate) fn dx<T: Float>(x: &mut [T], dy: &[T], c: T, m: T, a: T, b: T) {
        let n = x.len();
        let dy = &dy[..n];
        for i in 0..n {
            x[i] = dy[i] * c + ((x[i] - m) * a + b);
        }
    }
}

multiversion! {
    /// `x = dy·(c·γ) + ((x − m)·a + b)` along the line.
    pub(crate) fn dx_g<T: Float>(x: &mut [T], dy: &[T], c: T, m: T, a: T, b: T, g: &[T]) {
        let n = x.len();
        let (dy, g) = (&dy[..n], &g[..n]);
        for i in 0..n {
            x[i] = dy[i] * (c * g[i]) + ((x[i] - m) * a + b);
        }
    }
}

multiversion! {
    /// Rows of `m.len()` columns: `y = (y − m[j])·a[j] + b[j]`.
    pub(crate) fn col_affine<T: Float>(y: &mut [T], m: &[T], a: &[T], b: &[T]) {
        let k = m.len();
        let (a, b) = (&a[..k], &b[..k]);
        for row in y.chunks_exact_mut(k) {
            for j in 0..k {
                row[j] = (row[j] - m[j]) * a[j] + b[j];
            }
        }
    }
}

multiversion! {
    /// Rows of `m.len()` columns: `x = dy·c[j] + ((x − m[j])·a[j] + b[j])`.
    pub(crate) fn col_dx<T: Float>(x: &mut [T], dy: &[T], c: &[T], m: &[T], a: &[T], b: &[T]) {
        let k = m.len();
        let (c, a, b) = (&c[..k], &a[..k], &b[..k]);
        for (row, d) in x.chunks_exact_mut(k).zip(dy.chunks_exact(k)) {
            for j in 0..k {
                row[j] = d[j] * c[j] + ((row[j] - m[j]) * a[j] + b[j]);
            }
        }
    }
}

multiversion! {
    /// The parameter-gradient terms along a line: `dg += dy·x̂`, `db += dy` with
    /// `x̂ = (x − m)·a + b`, in f64.
    pub(crate) fn dparams<T: Float>(x: &[T], dy: &[T], m: T, a: T, b: T, dg: &mut [f64], db: &mut [f64]) {
        let n = x.len();
        let (dy, dg, db) = (&dy[..n], &mut dg[..n], &mut db[..n]);
        for i in 0..n {
            let d = dy[i].to_acc();
            dg[i] += d * ((x[i] - m) * a + b).to_acc();
            db[i] += d;
        }
    }
}
