//! The statistics and coefficients of a run of groups at once (a unit of column
//! statistics: BatchNorm1d, channels-last batch norm), compiled per SIMD level so the
//! divisions and square roots of many groups share vectors.
//!
//! The arithmetic is `stats::mean_m2`, `stats::group_stat` and `kernels::coef`, operation
//! for operation (so the results are the same bits as finishing the groups one by one);
//! what a stage decides (centering, the estimator's divisor, where eps goes) arrives as an
//! [`Estimator`].

use super::units::{CoefMut, ColumnSums, DxCoefMut, Stat};
use crate::kernels::isa::multiversion;
use crate::Float;

/// How a stage turns a group's raw sums into its statistics (decided by `stats`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Estimator {
    /// Mean subtraction (else the mean square).
    pub center: bool,
    /// `eps_mode = "var"`: 1/√(σ² + eps); else 1/(σ + eps).
    pub eps_var: bool,
    /// The number of values per group.
    pub count: f64,
    /// The variance's divisor (n, or n − 1 for the unbiased estimator).
    pub denom: f64,
    /// eps.
    pub eps: f64,
}

/// The groups' statistics into `out.stat` and their coefficients (m, a, b) with the folded
/// affine `(scale, shift)` of each group into `out.m/a/b`.
#[inline(always)]
fn run<T: Float, const CENTER: bool, const EPS_VAR: bool, const POW2: bool>(
    raw: ColumnSums<'_>,
    est: Estimator,
    (scale, shift): (&[f64], &[f64]),
    out: CoefMut<'_, T>,
) {
    let len = out.stat.len();
    let (h, sum, sq) = (&raw.shift[..len], &raw.sum[..len], &raw.sq[..len]);
    let (scale, shift) = (&scale[..len], &shift[..len]);
    let (m, a, b) = (&mut out.m[..len], &mut out.a[..len], &mut out.b[..len]);
    // With POW2 the count and the divisor are powers of two: v·(1/d) is v/d, bit for bit.
    let (rc, rd) = (1.0 / est.count, 1.0 / est.denom);
    for i in 0..len {
        let (mean, m2) = if CENTER {
            let d = if POW2 {
                sum[i] * rc
            } else {
                sum[i] / est.count
            };
            let m2 = sq[i] - sum[i] * d;
            (h[i] + d, if m2 < 0.0 { 0.0 } else { m2 })
        } else {
            (0.0, sq[i])
        };
        let var = if POW2 { m2 * rd } else { m2 / est.denom };
        let rstd = if EPS_VAR {
            1.0 / (var + est.eps).sqrt()
        } else {
            1.0 / (var.sqrt() + est.eps)
        };
        out.stat[i] = Stat {
            mean,
            var,
            m2,
            rstd,
        };
        // `kernels::coef(mean, rstd·scale, shift)`.
        let ai = rstd * scale[i];
        let mi = T::from_acc(mean);
        m[i] = mi;
        a[i] = T::from_acc(ai);
        b[i] = T::from_acc(shift[i] - (mean - mi.to_acc()) * ai);
    }
}

multiversion! {
    /// The statistics and coefficients of `out.stat.len()` consecutive groups from their
    /// raw sums, each with its folded affine `(scale, shift)`.
    fn finish_columns<T: Float>(
        raw: ColumnSums<'_>,
        est: Estimator,
        affine: (&[f64], &[f64]),
        out: CoefMut<'_, T>,
    ) {
        let p2 = exact_recip(est.count) && exact_recip(est.denom);
        match (est.center, est.eps_var, p2) {
            (true, true, true) => run::<T, true, true, true>(raw, est, affine, out),
            (true, true, false) => run::<T, true, true, false>(raw, est, affine, out),
            (true, false, _) => run::<T, true, false, false>(raw, est, affine, out),
            (false, true, _) => run::<T, false, true, false>(raw, est, affine, out),
            (false, false, _) => run::<T, false, false, false>(raw, est, affine, out),
        }
    }
}

/// Whether `d` is a power of two whose reciprocal is a normal number: then v·(1/d) rounds
/// the exact v/d once, as the division does (BatchNorm on a batch of 32: the mean's and the
/// biased variance's divisions of [`run`] become multiplications, the same bits).
fn exact_recip(d: f64) -> bool {
    d.is_normal() && d > 0.0 && d.to_bits() & ((1u64 << 52) - 1) == 0 && (1.0 / d).is_normal()
}

/// Groups per batch of [`finish_run`]: the folded affine goes through stack buffers of this
/// size.
const BATCH: usize = 64;

/// The statistics and coefficients of the consecutive groups `g0..g0 + out.stat.len()`,
/// the folded affine of group `s` given by `affine(s)`.
pub(crate) fn finish_run<T: Float>(
    g0: usize,
    raw: ColumnSums<'_>,
    est: Estimator,
    affine: impl Fn(usize) -> (f64, f64),
    mut out: CoefMut<'_, T>,
) {
    let (mut scale, mut shift) = ([0.0f64; BATCH], [0.0f64; BATCH]);
    let len = out.stat.len();
    for i0 in (0..len).step_by(BATCH) {
        let i1 = (i0 + BATCH).min(len);
        for i in i0..i1 {
            (scale[i - i0], shift[i - i0]) = affine(g0 + i);
        }
        let affine = (&scale[..i1 - i0], &shift[..i1 - i0]);
        finish_columns(raw.part(i0..i1), est, affine, out.part(i0..i1));
    }
}

/// How a stage turns a group's backward sums into its dx coefficients (decided by `stats`:
/// `stats::dx_terms`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DxEstimator {
    /// Mean subtraction (the c0 term).
    pub center: bool,
    /// `eps_mode = "var"`: c1 = −(1/σ)·Σg·x̂ / d; else −Σg·x̂ / (d·σ).
    pub eps_var: bool,
    /// The number of values per group.
    pub count: f64,
    /// The variance's divisor d.
    pub denom: f64,
    /// Fixed statistics (eval with running statistics): no c0, c1 terms.
    pub fixed: bool,
}

/// The dx coefficients (c, m, a, b) of a run of groups from their statistics, their folded
/// γ (`scale`) and their backward sums: `stats::dx_terms` and `kernels::coef`, operation
/// for operation.
#[inline(always)]
fn dx_run<T: Float, const CENTER: bool, const EPS_VAR: bool>(
    stats: &[Stat],
    scale: &[f64],
    (sg, sgx): (&[f64], &[f64]),
    est: DxEstimator,
    out: DxCoefMut<'_, T>,
) {
    let len = out.c.len();
    let (stats, scale, sg, sgx) = (&stats[..len], &scale[..len], &sg[..len], &sgx[..len]);
    let (c, m, a, b) = (
        &mut out.c[..len],
        &mut out.m[..len],
        &mut out.a[..len],
        &mut out.b[..len],
    );
    for i in 0..len {
        let st = stats[i];
        let (gs, r) = (scale[i], st.rstd);
        let (sg, sgx) = (gs * sg[i], gs * sgx[i]);
        let (c0, c1) = if est.fixed {
            (0.0, 0.0)
        } else {
            let c1 = if EPS_VAR {
                -st.rstd * sgx / est.denom
            } else {
                -sgx / (est.denom * st.var.sqrt())
            };
            let c0 = if CENTER {
                -st.rstd * sg / est.count
            } else {
                0.0
            };
            (c0, c1)
        };
        // `kernels::coef(mean, r·c1, c0)`.
        let ai = r * c1;
        let mi = T::from_acc(st.mean);
        c[i] = T::from_acc(r * gs);
        m[i] = mi;
        a[i] = T::from_acc(ai);
        b[i] = T::from_acc(c0 - (st.mean - mi.to_acc()) * ai);
    }
}

multiversion! {
    /// The dx coefficients of `out.c.len()` consecutive groups (see [`dx_run`]).
    fn dx_columns<T: Float>(
        stats: &[Stat],
        scale: &[f64],
        sums: (&[f64], &[f64]),
        est: DxEstimator,
        out: DxCoefMut<'_, T>,
    ) {
        match (est.center, est.eps_var) {
            (true, true) => dx_run::<T, true, true>(stats, scale, sums, est, out),
            (true, false) => dx_run::<T, true, false>(stats, scale, sums, est, out),
            (false, true) => dx_run::<T, false, true>(stats, scale, sums, est, out),
            (false, false) => dx_run::<T, false, false>(stats, scale, sums, est, out),
        }
    }
}

/// The dx coefficients of the consecutive groups `g0..g0 + out.c.len()` (`stats`: their
/// statistics), the folded γ of group `s` given by `scale(s)`.
pub(crate) fn dx_finish_run<T: Float>(
    g0: usize,
    stats: &[Stat],
    est: DxEstimator,
    scale: impl Fn(usize) -> f64,
    sums: (&[f64], &[f64]),
    out: DxCoefMut<'_, T>,
) {
    let mut buf = [0.0f64; BATCH];
    let len = out.c.len();
    let DxCoefMut { c, m, a, b } = out;
    for i0 in (0..len).step_by(BATCH) {
        let i1 = (i0 + BATCH).min(len);
        for i in i0..i1 {
            buf[i - i0] = scale(g0 + i);
        }
        let out = DxCoefMut {
            c: &mut c[i0..i1],
            m: &mut m[i0..i1],
            a: &mut a[i0..i1],
            b: &mut b[i0..i1],
        };
        let part = (&sums.0[i0..i1], &sums.1[i0..i1]);
        dx_columns(&stats[i0..i1], &buf[..i1 - i0], part, est, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Multiplying by the reciprocal of a power of two is the division, bit for bit.
    #[test]
    fn power_of_two_divisors_give_the_same_bits() {
        assert!(exact_recip(32.0) && exact_recip(1.0) && exact_recip(0.5));
        assert!(!exact_recip(31.0) && !exact_recip(0.0) && !exact_recip(f64::INFINITY));
        let len = 37;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let h: Vec<f64> = (0..len).map(|_| 10.0 * next() - 5.0).collect();
        let sum: Vec<f64> = (0..len).map(|_| 64.0 * next() - 32.0).collect();
        let sq: Vec<f64> = (0..len)
            .map(|i| 100.0 * next() + sum[i] * sum[i] / 32.0)
            .collect();
        let scale: Vec<f64> = (0..len).map(|_| next() + 0.5).collect();
        let shift: Vec<f64> = (0..len).map(|_| next() - 0.5).collect();
        for count in [32.0, 1024.0, 2.0] {
            let est = Estimator {
                center: true,
                eps_var: true,
                count,
                denom: count,
                eps: 1e-5,
            };
            let mut outs = Vec::new();
            for pow2 in [true, false] {
                let mut stat = vec![Stat::default(); len];
                let (mut m, mut a, mut b) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
                let raw = ColumnSums {
                    shift: &h,
                    sum: &sum,
                    sq: &sq,
                };
                let out = CoefMut {
                    stat: &mut stat,
                    m: &mut m,
                    a: &mut a,
                    b: &mut b,
                };
                if pow2 {
                    run::<f32, true, true, true>(raw, est, (&scale, &shift), out);
                } else {
                    run::<f32, true, true, false>(raw, est, (&scale, &shift), out);
                }
                outs.push((stat, m, a, b));
            }
            assert!(outs[0] == outs[1], "count {count}");
        }
    }
}
