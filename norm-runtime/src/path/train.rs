//! The train forward (batch statistics, normalize, running update) and the backward pass
//! (gradient sums, dx, dγ/dβ) of one stage, monomorphized per class: the parameter kind,
//! centering, the variance estimator and the eps mode are const generic arguments, so the
//! per-group arithmetic has no branch on the spec left and the stage's variant handling
//! (`ghost`, `renorm`, `tlu`, Switchable Normalization, external parameters, synchronized
//! statistics) is not compiled in.
//!
//! Operation for operation this is `stage::forward_plain` / `stage::backward_plain` on a
//! stage of its class, calling the same kernels (`kernels::exec`, `coef`,
//! `exec::finish_run`) with the same arguments, so the results are the same bits; the
//! `path` tests compare the two on random shapes of every class. The layer around it
//! (checks, the plan, `Saved`, buffers) is `layer::forward_with` / `layer::backward_with`.
//! Only called for a one-stage layer without variants and without a collective (the
//! callers in `crate::path` check).
//!
//! The const arguments: `PARAMS` is `norm_spec::path::ParamKind as u8` (none, per channel,
//! per feature), `VARIANCE` is `norm_spec::path::Variance as u8`, `EPS_VAR` whether eps is
//! added to the variance, `CENTER` whether the mean is subtracted.

use norm_spec::path::{ParamKind, Variance};

use crate::kernels::coef;
use crate::kernels::exec::{
    self, BackIn, CoefMut, ColumnSums, DxCoefMut, DxEstimator, DxFinish, Estimator, Finish,
    ShiftedSums, Stat, Units,
};
use crate::scratch::Scratch;
use crate::stage::batch::{forward_batch, normalize_fixed, record_forward, GroupAffine};
use crate::stage::{self, BackwardIo, StageCall};
use crate::state::{sized, values, StageState};
use crate::stats::running_stats;
use crate::types::{Mode, SavedStage, StageGrads};
use crate::{Float, NormError};

const NONE: u8 = ParamKind::None as u8;
const SUM: u8 = Variance::SumOfSquares as u8;
const UNBIASED: u8 = Variance::Unbiased as u8;

/// The variance's divisor for `n` values (`stats::estimator_of`'s `denom`, and the `d` of
/// `stats::dx_terms`).
#[inline(always)]
fn denom<const VARIANCE: u8, const CENTER: bool>(n: usize) -> f64 {
    if VARIANCE == SUM {
        1.0
    } else if CENTER && VARIANCE == UNBIASED {
        n as f64 - 1.0
    } else {
        n as f64
    }
}

/// `stats::mean_m2` with the centering a constant.
#[inline(always)]
fn mean_m2<const CENTER: bool>(raw: ShiftedSums, n: usize) -> (f64, f64) {
    if CENTER {
        let d = raw.sum / n as f64;
        let m2 = raw.sq - raw.sum * d;
        (raw.shift + d, if m2 < 0.0 { 0.0 } else { m2 })
    } else {
        (0.0, raw.sq)
    }
}

/// `stats::group_stat` with the estimator and the eps mode constants.
#[inline(always)]
fn group_stat<const EPS_VAR: bool, const VARIANCE: u8, const CENTER: bool>(
    mean: f64,
    m2: f64,
    n: usize,
    eps: f64,
) -> Stat {
    // As `stats::estimator`: the sum of squares as is, else M2 over the divisor.
    let var = if VARIANCE == SUM {
        m2
    } else {
        m2 / denom::<VARIANCE, CENTER>(n)
    };
    let rstd = if EPS_VAR {
        1.0 / (var + eps).sqrt()
    } else {
        1.0 / (var.sqrt() + eps)
    };
    Stat {
        mean,
        var,
        m2,
        rstd,
    }
}

/// Forward pass of the stage (train, or eval with batch or running statistics).
pub(crate) fn forward<
    T: Float,
    const PARAMS: u8,
    const EPS_VAR: bool,
    const VARIANCE: u8,
    const CENTER: bool,
>(
    call: StageCall<'_>,
    state: &mut StageState<'_, T>,
    (x, out): (&[T], &mut [T]),
    mode: Mode,
    saved: &mut SavedStage<T>,
    scratch: &mut Scratch<T>,
) -> Result<(), NormError> {
    let StageCall { info, k, plan, .. } = call;
    let stage = &info.spec.stages[k];
    saved.chunks.clear();
    let groups = plan.groups;
    let n = plan.group_len;
    let units = Units::new(plan);
    sized(&mut saved.stats, groups, Stat::default());
    scratch.coef_for(groups);
    let fixed = mode == Mode::Eval && stage.running_stats;
    saved.fixed = fixed;
    saved.synced = false;
    saved.renorm.clear();

    let gamma = state.gamma.as_ref().filter(|_| PARAMS != NONE).map(values);
    let beta = state.beta.as_ref().filter(|_| PARAMS != NONE).map(values);
    let affine = GroupAffine::new(plan, gamma.as_deref(), beta.as_deref());
    let group_affine = |s: usize| affine.group(s);
    let params = affine.unfolded();
    let eps = stage.eps;

    if fixed {
        let running = state
            .running
            .as_ref()
            .ok_or_else(|| NormError::Unsupported {
                layer: info.name.to_string(),
                reason: "running statistics missing from the layer state".to_string(),
            })?;
        running_stats(stage, plan, running, &mut saved.stats);
        let io = (&units, x, out);
        normalize_fixed(io, &saved.stats, group_affine, params, scratch);
    } else {
        let one = |s: usize, raw: ShiftedSums, out: &mut Stat| {
            let (mean, m2) = mean_m2::<CENTER>(raw, n);
            let st = group_stat::<EPS_VAR, VARIANCE, CENTER>(mean, m2, n, eps);
            *out = st;
            let (g, h) = group_affine(s);
            coef(mean, st.rstd * g, h)
        };
        let est = Estimator {
            center: CENTER,
            eps_var: EPS_VAR,
            count: n as f64,
            denom: denom::<VARIANCE, CENTER>(n),
            eps,
        };
        let many = |s0: usize, raw: ColumnSums<'_>, out: CoefMut<'_, T>| {
            affine.finish_run((s0, raw), est, group_affine, out);
        };
        let finish = Finish {
            one: &one,
            many: &many,
        };
        let io = (plan, &units, x, out);
        forward_batch(io, (CENTER, params), &finish, &mut saved.stats, scratch);
    }
    let running = state.running.as_mut();
    record_forward((stage, plan), (mode, n), running, saved, scratch);
    saved.tlu_pass.clear();
    Ok(())
}

/// Backward pass of the stage: dx and the parameter gradients.
pub(crate) fn backward<
    T: Float,
    const PARAMS: u8,
    const EPS_VAR: bool,
    const VARIANCE: u8,
    const CENTER: bool,
>(
    call: StageCall<'_>,
    state: &StageState<'_, T>,
    io: BackwardIo<'_, T>,
    saved: &SavedStage<T>,
    grads: &mut StageGrads<T>,
    scratch: &mut Scratch<T>,
) -> Result<(), NormError> {
    let StageCall { info, k, plan, .. } = call;
    let BackwardIo { x, dy, dx } = io;
    let stage = &info.spec.stages[k];
    if saved.synced {
        return Err(NormError::Saved {
            layer: info.name.to_string(),
            reason: "it comes from forward_sync: call backward_sync".to_string(),
        });
    }
    let groups = plan.groups;
    let n = saved.count;
    let units = Units::new(plan);
    let gamma = state.gamma.as_ref().filter(|_| PARAMS != NONE).map(values);
    let affine = GroupAffine::new(plan, gamma.as_deref(), None);
    let unfolded = affine.unfolded().gamma;
    let nparams = unfolded.map_or(0, |_| plan.param_shape.numel());
    let group_scale = |s: usize| affine.scale(s);
    let fixed = saved.fixed;
    // `stats::dx_terms` with the estimator, eps mode and centering constants.
    let one = |s: usize, sg: f64, sgx: f64| {
        let st = saved.stats[s];
        let gs = group_scale(s);
        let r = st.rstd;
        let (sg, sgx) = (gs * sg, gs * sgx);
        let (c0, c1) = if fixed {
            (0.0, 0.0)
        } else {
            let d = denom::<VARIANCE, CENTER>(n);
            let c1 = if EPS_VAR {
                -st.rstd * sgx / d
            } else {
                -sgx / (d * st.var.sqrt())
            };
            let c0 = if CENTER {
                -st.rstd * sg / n as f64
            } else {
                0.0
            };
            (c0, c1)
        };
        let (m, a, b) = coef::<T>(st.mean, r * c1, c0);
        (T::from_acc(r * gs), m, a, b)
    };
    // The same arithmetic for a run of groups (columns), vectorized.
    let dx_est = DxEstimator {
        center: CENTER,
        eps_var: EPS_VAR,
        count: n as f64,
        denom: denom::<VARIANCE, CENTER>(n),
        fixed,
    };
    let many = |s0: usize, sums: (&[f64], &[f64]), out: DxCoefMut<'_, T>| {
        let stats = &saved.stats[s0..s0 + out.c.len()];
        exec::dx_finish_run(s0, stats, dx_est, group_scale, sums, out);
    };
    let finish = DxFinish {
        one: &one,
        many: &many,
    };
    // x̂ = (x − m)·r per group.
    let xhat = saved
        .stats
        .iter()
        .map(|st| coef::<T>(st.mean, st.rstd, 0.0));
    let bufs = stage::back_buffers(scratch, xhat, groups, nparams);
    let t = BackIn {
        units: &units,
        x,
        dy,
        xhat: bufs.xhat,
        gamma: unfolded,
    };
    exec::backward(t, &finish, bufs.out, bufs.acc, dx);

    if PARAMS == NONE {
        grads.dgamma = None;
        grads.dbeta = None;
    } else {
        stage::axes_grads(plan, (plan.foldable, stage.bias), scratch, grads);
    }
    grads.dtau = None;
    Ok(())
}
