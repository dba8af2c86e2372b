//! The fused backward pass of a masked layer: dx and the parameter gradients from the
//! mask and the per-group counts its forward stored in `Saved`.

use norm_spec::{Affine, Stage};

use crate::kernels::coef;
use crate::kernels::elem::RowReduce;
use crate::kernels::reduce::row_dx_portable;
use crate::stage::{BackwardIo, StageCall};
use crate::state::{values, StageState};
use crate::stats::{dx_terms, fill_grad};
use crate::types::{Saved, StageGrads};
use crate::{Float, NormError};

use super::{mask_shape, Offsets, Walk, PARALLEL_MIN};

/// Backward pass of a masked layer (called by `layer::backward_into` after the checks
/// common to every layer): dx and the parameter gradients.
pub(crate) fn backward<T: Float>(
    call: StageCall<'_>,
    state: &StageState<'_, T>,
    io: BackwardIo<'_, T>,
    saved: &Saved<T>,
    grads: &mut StageGrads<T>,
) -> Result<(), NormError> {
    let StageCall { info, plan, .. } = call;
    let BackwardIo { x, dy, dx } = io;
    let spec = info.spec;
    let stage = &spec.stages[0];
    let shape = &saved.shape;
    let groups = plan.groups;
    let expected: usize = mask_shape(stage, shape).iter().product();
    if saved.mask.len() != expected || saved.counts.len() != groups {
        return Err(NormError::Saved {
            layer: info.name.to_string(),
            reason: "it holds no mask for this input: it comes from an unmasked forward"
                .to_string(),
        });
    }
    let walk = Walk::new(spec, stage, shape);
    let gamma = state.gamma.as_ref().map(values);
    let nparams = match &stage.affine {
        Affine::Axes(_) => plan.param_shape.numel(),
        Affine::External => groups,
        Affine::None => 0,
    };
    let (parts, sub) = walk.parts();
    let mut dparams = vec![0.0; 2 * nparams];
    if groups > 0 && !x.is_empty() {
        let (xlen, glen) = (x.len() / parts, groups / parts);
        let ctx = BackCtx {
            stage,
            walk: &sub,
            saved,
            gamma: gamma.as_deref(),
            nparams,
        };
        // Per part: dx, and the part's parameter-gradient sums (dγ then dβ), summed below
        // in part order (the same sums whatever the thread count).
        let part = |k: usize, dx: &mut [T]| -> Vec<f64> {
            let off = Offsets {
                s: k * walk.ss[0],
                m: k * walk.ms[0],
                p: k * walk.ps[0],
            };
            let range = k * xlen..(k + 1) * xlen;
            ctx.part(off, glen, &x[range.clone()], &dy[range], dx)
        };
        let sums: Vec<Vec<f64>> = if parts > 1 && x.len() >= PARALLEL_MIN {
            use rayon::prelude::*;
            dx.par_chunks_mut(xlen)
                .enumerate()
                .map(|(k, d)| part(k, d))
                .collect()
        } else {
            dx.chunks_mut(xlen)
                .enumerate()
                .map(|(k, d)| part(k, d))
                .collect()
        };
        for sum in &sums {
            dparams.iter_mut().zip(sum).for_each(|(a, b)| *a += b);
        }
    } else {
        dx.iter_mut().for_each(|v| *v = T::zero());
    }
    let (dgamma, dbeta) = dparams.split_at(nparams);
    match &stage.affine {
        Affine::Axes(_) => {
            let pshape = plan.param_shape.as_slice();
            fill_grad(&mut grads.dgamma, pshape, dgamma);
            if stage.bias {
                fill_grad(&mut grads.dbeta, pshape, dbeta);
            } else {
                grads.dbeta = None;
            }
        }
        Affine::External => {
            let sshape = plan.stat_shape.as_slice();
            fill_grad(&mut grads.dgamma, sshape, dgamma);
            fill_grad(&mut grads.dbeta, sshape, dbeta);
        }
        Affine::None => {
            grads.dgamma = None;
            grads.dbeta = None;
        }
    }
    Ok(())
}

/// What the backward pass of every part reads.
struct BackCtx<'a, T> {
    stage: &'a Stage,
    walk: &'a Walk,
    saved: &'a Saved<T>,
    gamma: Option<&'a [T]>,
    nparams: usize,
}

impl<T: Float> BackCtx<'_, T> {
    /// dx of one part (`x`, `dy`, `dx` are the part's values); returns its dγ and dβ sums.
    fn part(&self, off: Offsets, groups: usize, x: &[T], dy: &[T], dx: &mut [T]) -> Vec<f64> {
        let (walk, saved) = (self.walk, self.saved);
        let sv = &saved.stages[0];
        let external = self.stage.affine == Affine::External;
        let row = walk.row;
        let mut dparams = vec![0.0; 2 * self.nparams];
        let (dgamma, dbeta) = dparams.split_at_mut(self.nparams);
        // The scale of g = dy·γ at position j of a row with parameter offset p, group s.
        let scale = |s: usize, p: usize, j: usize| -> f64 {
            match self.gamma {
                Some(g) => g[off.p + p + j * walk.row_ps].to_acc(),
                None if external => sv.scale[off.s + s].to_acc(),
                None => 1.0,
            }
        };
        // Σg and Σg·x̂ per group, over every position of the group.
        let (mut sg, mut sgx) = (vec![0.0; groups], vec![0.0; groups]);
        // Rows with γ along them (or none): the SIMD row kernels, as the unmasked layers.
        let rows_fast = row > 1 && !external && (self.gamma.is_none() || walk.row_ps == 1);
        if rows_fast {
            return self.part_rows(off, (groups, &mut sg, &mut sgx), x, dy, dx, dparams);
        }
        walk.rows(|start, s, _, p| {
            let gs = off.s + s;
            if saved.counts[gs] == 0 {
                return;
            }
            let st = sv.stats[gs];
            let (xr, dr) = (&x[start..start + row], &dy[start..start + row]);
            let (mut a, mut b) = (0.0, 0.0);
            for (j, (&xv, &d)) in xr.iter().zip(dr).enumerate() {
                let xh = (xv.to_acc() - st.mean) * st.rstd;
                let d = d.to_acc();
                let g = d * scale(s, p, j);
                a += g;
                b += g * xh;
                if self.nparams > 0 {
                    let q = if external {
                        gs
                    } else {
                        off.p + p + j * walk.row_ps
                    };
                    dgamma[q] += d * xh;
                    dbeta[q] += d;
                }
            }
            sg[s] += a;
            sgx[s] += b;
        });
        let terms: Vec<(f64, f64)> = (0..groups)
            .map(|s| {
                let n = saved.counts[off.s + s];
                if n == 0 {
                    (0.0, 0.0)
                } else {
                    dx_terms(self.stage, &sv.stats[off.s + s], n, sv.fixed, sg[s], sgx[s])
                }
            })
            .collect();
        walk.rows(|start, s, m, p| {
            let gs = off.s + s;
            let out = &mut dx[start..start + row];
            if saved.counts[gs] == 0 {
                out.iter_mut().for_each(|v| *v = T::zero());
                return;
            }
            let st = sv.stats[gs];
            let (c0, c1) = if saved.mask[off.m + m] {
                terms[s]
            } else {
                (0.0, 0.0)
            };
            let (xr, dr) = (&x[start..start + row], &dy[start..start + row]);
            for (j, ((o, &xv), &d)) in out.iter_mut().zip(xr).zip(dr).enumerate() {
                let g = d.to_acc() * scale(s, p, j);
                let xh = (xv.to_acc() - st.mean) * st.rstd;
                *o = T::from_acc(g * st.rstd + xh * c1 + c0);
            }
        });
        dparams
    }

    /// The dx coefficients of group `gs` of a part (Σg, Σg·x̂ given): (c0, c1), zero for
    /// fixed statistics.
    fn terms(&self, gs: usize, sg: f64, sgx: f64) -> (f64, f64) {
        let sv = &self.saved.stages[0];
        dx_terms(
            self.stage,
            &sv.stats[gs],
            self.saved.counts[gs],
            sv.fixed,
            sg,
            sgx,
        )
    }

    /// [`BackCtx::part`] for rows along which γ runs contiguously (or without γ): the
    /// gradient sums by `RowReduce::row_dsums` (γ's sums staged in the element type, as the
    /// unmasked layers do), dx by the vectorized row loop.
    fn part_rows(
        &self,
        off: Offsets,
        (groups, sg, sgx): (usize, &mut [f64], &mut [f64]),
        x: &[T],
        dy: &[T],
        dx: &mut [T],
        mut dparams: Vec<f64>,
    ) -> Vec<f64> {
        let (walk, saved) = (self.walk, self.saved);
        let sv = &saved.stages[0];
        let row = walk.row;
        let np = self.nparams;
        let (mut stage_g, mut stage_b) = (vec![T::zero(); np], vec![T::zero(); np]);
        walk.rows(|start, s, _, p| {
            let gs = off.s + s;
            if saved.counts[gs] == 0 {
                return;
            }
            let st = sv.stats[gs];
            let c = coef::<T>(st.mean, st.rstd, 0.0);
            let q = off.p + p;
            let param = self.gamma.map(|g| {
                let staging = (&mut stage_g[q..q + row], &mut stage_b[q..q + row]);
                (&g[q..q + row], Some(staging))
            });
            let (a, b) = T::row_dsums(&x[start..start + row], &dy[start..start + row], c, param);
            sg[s] += a;
            sgx[s] += b;
        });
        let (dgamma, dbeta) = dparams.split_at_mut(np);
        for (((dg, db), &a), &b) in dgamma.iter_mut().zip(dbeta).zip(&stage_g).zip(&stage_b) {
            *dg = a.to_acc();
            *db = b.to_acc();
        }
        walk.rows(|start, s, m, p| {
            let gs = off.s + s;
            let out = &mut dx[start..start + row];
            if saved.counts[gs] == 0 {
                out.iter_mut().for_each(|v| *v = T::zero());
                return;
            }
            let st = sv.stats[gs];
            let (c0, c1) = if saved.mask[off.m + m] && s < groups {
                self.terms(gs, sg[s], sgx[s])
            } else {
                (0.0, 0.0)
            };
            let (cm, ca, cb) = coef::<T>(st.mean, st.rstd * c1, c0);
            let k = (T::from_acc(st.rstd), cm, ca, cb);
            let q = off.p + p;
            let g = self.gamma.map(|g| &g[q..q + row]);
            row_dx_portable(&x[start..start + row], &dy[start..start + row], out, k, g);
        });
        dparams
    }
}
