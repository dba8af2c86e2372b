//! The NEON row reductions (see the parent module's docs of `arm`).

use std::arch::aarch64::*;

use super::{row_dsums_weighted, row_sums_portable};

/// Four chains of two f64 lanes.
type Chains = [float64x2_t; 4];

/// The sum of the chains' lanes, in a fixed order.
#[inline]
#[target_feature(enable = "neon")]
fn hsum(c: Chains) -> f64 {
    vaddvq_f64(vaddq_f64(vaddq_f64(c[0], c[1]), vaddq_f64(c[2], c[3])))
}

/// 4 f32 → two vectors of 2 f64.
#[inline]
#[target_feature(enable = "neon")]
fn widen(v: float32x4_t) -> (float64x2_t, float64x2_t) {
    (vcvt_f64_f32(vget_low_f32(v)), vcvt_high_f64_f32(v))
}

/// (Σd, Σd·e) over the first `full` values (a multiple of 8), eight values per step:
/// `step(i)` gives the pairs (d, e) of values `i..i + 8`, two lanes each, one pair per
/// chain.
#[inline]
#[target_feature(enable = "neon")]
fn chains8(full: usize, step: impl Fn(usize) -> [(float64x2_t, float64x2_t); 4]) -> (f64, f64) {
    let z = vdupq_n_f64(0.0);
    let (mut s, mut t): (Chains, Chains) = ([z; 4], [z; 4]);
    for i in (0..full).step_by(8) {
        for (k, (d, e)) in step(i).into_iter().enumerate() {
            s[k] = vaddq_f64(s[k], d);
            t[k] = vfmaq_f64(t[k], d, e);
        }
    }
    (hsum(s), hsum(t))
}

/// Σ(x − shift) and Σ(x − shift)² of an f32 row.
#[target_feature(enable = "neon")]
pub(super) fn sums_f32_neon(x: &[f32], shift: f64) -> (f64, f64) {
    let h = vdupq_n_f64(shift);
    let full = x.len() - x.len() % 8;
    let (s, q) = chains8(full, |i| {
        // SAFETY: i + 8 ≤ full ≤ x.len(): two 16-byte loads in bounds.
        let (a, b) = unsafe {
            (
                vld1q_f32(x.as_ptr().add(i)),
                vld1q_f32(x.as_ptr().add(i + 4)),
            )
        };
        let (a0, a1) = widen(a);
        let (b0, b1) = widen(b);
        [a0, a1, b0, b1].map(|v| {
            let d = vsubq_f64(v, h);
            (d, d)
        })
    });
    let (rs, rq) = row_sums_portable(&x[full..], shift);
    (s + rs, q + rq)
}

/// Σ(x − shift) and Σ(x − shift)² of an f64 row.
#[target_feature(enable = "neon")]
pub(super) fn sums_f64_neon(x: &[f64], shift: f64) -> (f64, f64) {
    let h = vdupq_n_f64(shift);
    let full = x.len() - x.len() % 8;
    let (s, q) = chains8(full, |i| {
        [0, 2, 4, 6].map(|k| {
            // SAFETY: i + k + 2 ≤ full ≤ x.len(): a 16-byte load in bounds.
            let d = vsubq_f64(unsafe { vld1q_f64(x.as_ptr().add(i + k)) }, h);
            (d, d)
        })
    });
    let (rs, rq) = row_sums_portable(&x[full..], shift);
    (s + rs, q + rq)
}

/// The part of a row's backward sums that both element types share: the common length
/// of the row, its gradient and its weight rounded down to whole steps of 8 (`full`),
/// and the portable sums of the values from `full` on.
#[inline(always)]
fn dsums_rest<T: crate::Float>(
    x: &[T],
    dy: &[T],
    c: (T, T, T),
    w: Option<&[T]>,
) -> (usize, (f64, f64)) {
    let n = x.len().min(dy.len()).min(w.map_or(usize::MAX, <[T]>::len));
    let full = n - n % 8;
    let rest = row_dsums_weighted(&x[full..n], &dy[full..n], c, w.map(|w| &w[full..n]));
    (full, rest)
}

/// Σw·dy and Σw·dy·x̂ of an f32 row (w = 1 when absent), x̂ = (x − m)·a + b in f32 as
/// the portable kernel computes it (a multiply, then an add).
#[target_feature(enable = "neon")]
pub(super) fn dsums_f32_neon(
    x: &[f32],
    dy: &[f32],
    (m, a, b): (f32, f32, f32),
    w: Option<&[f32]>,
) -> (f64, f64) {
    let (full, (r1, r2)) = dsums_rest(x, dy, (m, a, b), w);
    let (vm, va, vb) = (vdupq_n_f32(m), vdupq_n_f32(a), vdupq_n_f32(b));
    let four = |j: usize| {
        // SAFETY: j + 4 ≤ full ≤ the length of `x`, `dy` (and `w`).
        let (vx, mut vd) = unsafe { (vld1q_f32(x.as_ptr().add(j)), vld1q_f32(dy.as_ptr().add(j))) };
        if let Some(w) = w {
            // SAFETY: as above.
            vd = vmulq_f32(vd, unsafe { vld1q_f32(w.as_ptr().add(j)) });
        }
        let xh = vaddq_f32(vmulq_f32(vsubq_f32(vx, vm), va), vb);
        let ((d0, d1), (x0, x1)) = (widen(vd), widen(xh));
        [(d0, x0), (d1, x1)]
    };
    let (s, t) = chains8(full, |i| {
        let ([p0, p1], [p2, p3]) = (four(i), four(i + 4));
        [p0, p1, p2, p3]
    });
    (s + r1, t + r2)
}

/// [`dsums_f32_neon`] for f64 rows.
#[target_feature(enable = "neon")]
pub(super) fn dsums_f64_neon(
    x: &[f64],
    dy: &[f64],
    (m, a, b): (f64, f64, f64),
    w: Option<&[f64]>,
) -> (f64, f64) {
    let (full, (r1, r2)) = dsums_rest(x, dy, (m, a, b), w);
    let (vm, va, vb) = (vdupq_n_f64(m), vdupq_n_f64(a), vdupq_n_f64(b));
    let (s, t) = chains8(full, |i| {
        [0, 2, 4, 6].map(|k| {
            let j = i + k;
            // SAFETY: j + 2 ≤ full ≤ the length of `x`, `dy` (and `w`).
            let (vx, mut vd) =
                unsafe { (vld1q_f64(x.as_ptr().add(j)), vld1q_f64(dy.as_ptr().add(j))) };
            if let Some(w) = w {
                // SAFETY: as above.
                vd = vmulq_f64(vd, unsafe { vld1q_f64(w.as_ptr().add(j)) });
            }
            (vd, vaddq_f64(vmulq_f64(vsubq_f64(vx, vm), va), vb))
        })
    });
    (s + r1, t + r2)
}
