//! The backward passes: one reduction pass (both sums at once), then dx.

use super::Coef;
use crate::plan::Plan;
use crate::Float;

/// Sums of one backward reduction pass, reused across calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct BackAcc {
    /// Per group: Σg (g = dy·γ when γ is unfolded, dy otherwise).
    pub sg: Vec<f64>,
    /// Per group: Σg·x̂.
    pub sgx: Vec<f64>,
    /// Per parameter (unfolded γ only): Σdy·x̂.
    pub dgamma: Vec<f64>,
    /// Per parameter (unfolded γ only): Σdy.
    pub dbeta: Vec<f64>,
}

impl BackAcc {
    fn reset(&mut self, groups: usize, params: usize) {
        for (v, n) in [
            (&mut self.sg, groups),
            (&mut self.sgx, groups),
            (&mut self.dgamma, params),
            (&mut self.dbeta, params),
        ] {
            v.clear();
            v.resize(n, 0.0);
        }
    }

    /// Accumulates Σg and Σg·x̂ per group with x̂ = (x − m)·a + b; with an unfolded `gamma`,
    /// g = dy·γ and the per-parameter sums Σdy·x̂, Σdy are accumulated too.
    pub fn accumulate<T: Float>(
        &mut self,
        plan: &Plan,
        x: &[T],
        dy: &[T],
        xhat: &Coef<T>,
        gamma: Option<&[T]>,
    ) {
        let (m, a, b) = (&xhat.m[..], &xhat.a[..], &xhat.b[..]);
        self.reset(plan.groups, gamma.map_or(0, <[T]>::len));
        let line = plan.line();
        let len = line.size;
        for k in 0..plan.lines() {
            let (xo, so, po) = plan.line_offsets(k);
            let xs = &x[xo..xo + len];
            let ds = &dy[xo..xo + len];
            match (gamma, line.ss, line.ps) {
                (None, 0, _) => {
                    let (m, a, b) = (m[so], a[so], b[so]);
                    let (mut s1, mut s2) = (0.0, 0.0);
                    for (&v, &d) in xs.iter().zip(ds) {
                        let d = d.to_acc();
                        s1 += d;
                        s2 += d * ((v - m) * a + b).to_acc();
                    }
                    self.sg[so] += s1;
                    self.sgx[so] += s2;
                }
                (None, _, _) => {
                    for i in 0..len {
                        let s = so + i;
                        let d = ds[i].to_acc();
                        self.sg[s] += d;
                        self.sgx[s] += d * ((xs[i] - m[s]) * a[s] + b[s]).to_acc();
                    }
                }
                (Some(g), ss, 0) => {
                    let gp = g[po].to_acc();
                    let (mut t1, mut t2) = (0.0, 0.0);
                    for i in 0..len {
                        let s = so + i * ss;
                        let d = ds[i].to_acc();
                        let xh = ((xs[i] - m[s]) * a[s] + b[s]).to_acc();
                        t1 += d;
                        t2 += d * xh;
                        if ss != 0 {
                            self.sg[s] += gp * d;
                            self.sgx[s] += gp * d * xh;
                        }
                    }
                    if ss == 0 {
                        self.sg[so] += gp * t1;
                        self.sgx[so] += gp * t2;
                    }
                    self.dbeta[po] += t1;
                    self.dgamma[po] += t2;
                }
                (Some(g), ss, _) => {
                    for i in 0..len {
                        let s = so + i * ss;
                        let p = po + i;
                        let d = ds[i].to_acc();
                        let xh = ((xs[i] - m[s]) * a[s] + b[s]).to_acc();
                        let gd = g[p].to_acc() * d;
                        self.sg[s] += gd;
                        self.sgx[s] += gd * xh;
                        self.dbeta[p] += d;
                        self.dgamma[p] += d * xh;
                    }
                }
            }
        }
    }
}

/// dx = dy·c[s]·γ[p] + (x − m[s])·a[s] + b[s] (γ only when unfolded; otherwise folded
/// into `c`).
pub(crate) fn dx<T: Float>(
    plan: &Plan,
    x: &[T],
    dy: &[T],
    c: &[T],
    coef: &Coef<T>,
    gamma: Option<&[T]>,
    out: &mut [T],
) {
    let (m, a2, b2) = (&coef.m[..], &coef.a[..], &coef.b[..]);
    let line = plan.line();
    let len = line.size;
    for k in 0..plan.lines() {
        let (xo, so, po) = plan.line_offsets(k);
        let xs = &x[xo..xo + len];
        let ds = &dy[xo..xo + len];
        let os = &mut out[xo..xo + len];
        match (gamma, line.ss, line.ps) {
            (None, 0, _) => {
                let (c, m, a, b) = (c[so], m[so], a2[so], b2[so]);
                for i in 0..len {
                    os[i] = ds[i] * c + ((xs[i] - m) * a + b);
                }
            }
            (None, _, _) => {
                for i in 0..len {
                    let s = so + i;
                    os[i] = ds[i] * c[s] + ((xs[i] - m[s]) * a2[s] + b2[s]);
                }
            }
            (Some(g), 0, 0) => {
                let (c, m, a, b) = (c[so] * g[po], m[so], a2[so], b2[so]);
                for i in 0..len {
                    os[i] = ds[i] * c + ((xs[i] - m) * a + b);
                }
            }
            (Some(g), ss, ps) => {
                for i in 0..len {
                    let s = so + i * ss;
                    let p = po + i * ps;
                    os[i] = ds[i] * (c[s] * g[p]) + ((xs[i] - m[s]) * a2[s] + b2[s]);
                }
            }
        }
    }
}
