//! Switchable Normalization (Luo et al. 2018), `axes = "H,W" | "C,H,W" | "N,H,W"`: each
//! alternative k has its own statistics (μ_k, biased σ²_k) over its axes; every element is
//! normalized with μ = Σ_k softmax(mean_weight)_k μ_k and σ² = Σ_k softmax(var_weight)_k σ²_k.
//! With `running_stats`, the alternative over `N` (the stage's `axes`) keeps running
//! statistics (momentum, unbiased running variance, as BatchNorm) used in eval mode; the
//! others stay per sample in eval too.
//!
//! Backward in two passes over the input: per element, ∂L/∂μ = −g/σ and
//! ∂L/∂σ² = −g·(x − μ)/(2σ³) (g = dy·γ) are pooled into each alternative's groups with its
//! softmax weight (and into the weights' gradients), then dx in one elementwise pass. Simple
//! portable loops: the alternatives' groups are indexed by an odometer over the input.

use ndarray::ArrayViewD;
use norm_spec::{Momentum, ParamAxis, Spec, Stage, MAX_RANK};

use crate::kernels::exec::Stat;
use crate::plan::Plan;
use crate::state::{values, LayerInfo, Running, StageState};
use crate::stats::fill_grad;
use crate::types::{Mode, SavedStage, StageGrads};
use crate::{Float, NormError};

/// Index sets walked together: one per alternative (at most 4) and the affine parameters.
const SETS: usize = 5;
const PARAMS: usize = SETS - 1;

/// How an input splits into each alternative's groups.
struct Layout {
    shape: Vec<usize>,
    /// `strides[s][i]`: the step of index set `s` along input axis `i` (0 where reduced).
    strides: [[usize; MAX_RANK]; SETS],
    /// Per alternative: number of groups and values per group.
    groups: Vec<usize>,
    counts: Vec<usize>,
    /// Per alternative: whether it reduces `N` (the stage's running statistics).
    batch: Vec<bool>,
}

impl Layout {
    fn new(spec: &Spec, stage: &Stage, shape: &[usize]) -> Layout {
        let rank = shape.len();
        let mut strides = [[0usize; MAX_RANK]; SETS];
        let (mut groups, mut counts, mut batch) = (Vec::new(), Vec::new(), Vec::new());
        for (k, &mask) in stage.switch.iter().enumerate().take(PARAMS) {
            let mut step = 1;
            let mut count = 1;
            for i in (0..rank).rev() {
                if mask & 1 << i == 0 {
                    strides[k][i] = step;
                    step *= shape[i];
                } else {
                    count *= shape[i];
                }
            }
            groups.push(step);
            counts.push(count);
            batch.push(spec.batch.is_some_and(|b| mask & 1 << b != 0));
        }
        if let norm_spec::Affine::Axes(axes) = &stage.affine {
            let mut step = 1;
            for a in axes.iter().rev() {
                if let ParamAxis::Input(i) = *a {
                    strides[PARAMS][i] = step;
                    step *= shape[i];
                }
            }
        }
        Layout {
            shape: shape.to_vec(),
            strides,
            groups,
            counts,
            batch,
        }
    }

    /// Calls `f(e, idx)` for every element `e` in standard order, with its group in every
    /// alternative (`idx[k]`) and its affine parameter offset (`idx[PARAMS]`).
    fn each(&self, mut f: impl FnMut(usize, &[usize; SETS])) {
        let numel: usize = self.shape.iter().product();
        if numel == 0 {
            return;
        }
        let rank = self.shape.len();
        let mut pos = [0usize; MAX_RANK];
        let mut idx = [0usize; SETS];
        for e in 0..numel {
            f(e, &idx);
            for i in (0..rank).rev() {
                pos[i] += 1;
                for (s, v) in idx.iter_mut().enumerate() {
                    *v += self.strides[s][i];
                }
                if pos[i] < self.shape[i] {
                    break;
                }
                for (s, v) in idx.iter_mut().enumerate() {
                    *v -= self.strides[s][i] * self.shape[i];
                }
                pos[i] = 0;
            }
        }
    }

    /// Where alternative `k`'s statistics start in the concatenated `SavedStage::stats`.
    fn offset(&self, k: usize) -> usize {
        self.groups[..k].iter().sum()
    }
}

/// softmax(logits), in f64.
fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// The softmax weights of the means and of the variances, checked against the layer.
fn weights<T: Float>(
    info: &LayerInfo<'_>,
    k: usize,
    state: &StageState<'_, T>,
) -> Result<(Vec<f64>, Vec<f64>), NormError> {
    let alternatives = info.spec.stages[k].switch.len();
    let logits = |a: &ArrayViewD<'_, T>| -> Vec<f64> { a.iter().map(|v| v.to_acc()).collect() };
    match &state.switch {
        Some((m, v)) if m.shape() == [alternatives] && v.shape() == [alternatives] => {
            Ok((softmax(&logits(m)), softmax(&logits(v))))
        }
        Some((m, v)) => Err(NormError::Unsupported {
            layer: info.name.to_string(),
            reason: format!(
                "`mean_weight`/`var_weight` have shapes {:?}/{:?}; this layer has {} \
                 alternatives of `axes` (shape [{}])",
                m.shape(),
                v.shape(),
                alternatives,
                alternatives
            ),
        }),
        None => Err(NormError::Unsupported {
            layer: info.name.to_string(),
            reason: "mean_weight/var_weight missing from the layer state".to_string(),
        }),
    }
}

fn unsynced(info: &LayerInfo<'_>) -> NormError {
    NormError::Unsupported {
        layer: info.name.to_string(),
        reason: "Switchable Normalization is not synchronized across processes (use \
                 forward/backward)"
            .to_string(),
    }
}

/// Forward pass of a stage with alternatives of `axes`.
pub(crate) fn forward<T: Float>(
    (info, k, plan, synced): (&LayerInfo<'_>, usize, &Plan, bool),
    state: &mut StageState<'_, T>,
    (x, out): (&[T], &mut [T]),
    mode: Mode,
    saved: &mut SavedStage<T>,
) -> Result<(), NormError> {
    if synced {
        return Err(unsynced(info));
    }
    let stage = &info.spec.stages[k];
    let lay = Layout::new(info.spec, stage, plan.shape.as_slice());
    let (p, q) = weights(info, k, state)?;
    let fixed = mode == Mode::Eval && stage.running_stats;
    let alternatives = lay.groups.len();
    // Σx per group, then Σ(x − μ)² (two passes, in f64).
    let total: usize = lay.groups.iter().sum();
    let mut sum = vec![0.0f64; total];
    let offs: Vec<usize> = (0..alternatives).map(|a| lay.offset(a)).collect();
    lay.each(|e, idx| {
        let v = x[e].to_acc();
        for a in 0..alternatives {
            sum[offs[a] + idx[a]] += v;
        }
    });
    let mut mean = vec![0.0f64; total];
    for a in 0..alternatives {
        let n = lay.counts[a].max(1) as f64;
        for g in 0..lay.groups[a] {
            mean[offs[a] + g] = sum[offs[a] + g] / n;
        }
    }
    let mut m2 = vec![0.0f64; total];
    lay.each(|e, idx| {
        let v = x[e].to_acc();
        for a in 0..alternatives {
            let d = v - mean[offs[a] + idx[a]];
            m2[offs[a] + idx[a]] += d * d;
        }
    });
    let mut stats: Vec<Stat> = (0..total)
        .map(|i| Stat {
            mean: mean[i],
            var: 0.0,
            m2: m2[i],
            rstd: 0.0,
        })
        .collect();
    for a in 0..alternatives {
        let n = lay.counts[a].max(1) as f64;
        for g in 0..lay.groups[a] {
            let st = &mut stats[offs[a] + g];
            st.var = st.m2 / n;
        }
    }
    // Eval with running statistics: the alternative over `N` uses them.
    if fixed {
        let running = state
            .running
            .as_ref()
            .expect("checked: running statistics present");
        let (rm, rv) = (
            values(&running.mean()).into_owned(),
            values(&running.var()).into_owned(),
        );
        for a in (0..alternatives).filter(|&a| lay.batch[a]) {
            for g in 0..lay.groups[a] {
                let st = &mut stats[offs[a] + g];
                st.mean = rm[g].to_acc();
                st.var = rv[g].to_acc();
            }
        }
    }
    let gamma = state.gamma.as_ref().map(values);
    let beta = state.beta.as_ref().map(values);
    let eps = stage.eps;
    lay.each(|e, idx| {
        let (mut mu, mut var) = (0.0, 0.0);
        for a in 0..alternatives {
            let st = &stats[offs[a] + idx[a]];
            mu += p[a] * st.mean;
            var += q[a] * st.var;
        }
        let xhat = (x[e].to_acc() - mu) / (var + eps).sqrt();
        let pi = idx[PARAMS];
        let gm = gamma.as_ref().map_or(1.0, |g| g[pi].to_acc());
        let bt = beta.as_ref().map_or(0.0, |b| b[pi].to_acc());
        out[e] = T::from_acc(xhat * gm + bt);
    });
    // Train: the running statistics of the alternative over `N` (unbiased variance).
    if mode == Mode::Train {
        if let Some(Running::Mut { mean, var, count }) = state.running.as_mut() {
            if let Some(a) = (0..alternatives).find(|&a| lay.batch[a]) {
                **count += 1;
                let m = match stage.momentum {
                    Momentum::Exponential(m) => m,
                    Momentum::Cumulative => 1.0 / **count as f64,
                };
                let n = lay.counts[a];
                let unbiased = if n > 1 {
                    n as f64 / (n - 1) as f64
                } else {
                    1.0
                };
                for ((g, rm), rv) in mean.iter_mut().enumerate().zip(var.iter_mut()) {
                    let st = &stats[offs[a] + g];
                    *rm = T::from_acc((1.0 - m) * rm.to_acc() + m * st.mean);
                    *rv = T::from_acc((1.0 - m) * rv.to_acc() + m * st.var * unbiased);
                }
            }
        }
    }
    saved.stats = stats;
    saved.fixed = fixed;
    saved.count = 0;
    saved.synced = false;
    saved.scale.clear();
    saved.tlu_pass.clear();
    saved.renorm.clear();
    saved.chunks.clear();
    Ok(())
}

/// Backward pass of a stage with alternatives of `axes`: dx, dγ, dβ, dmean_weight and
/// dvar_weight (the softmax Jacobian applied to ∂L/∂softmax).
pub(crate) fn backward<T: Float>(
    (info, k, plan, synced): (&LayerInfo<'_>, usize, &Plan, bool),
    state: &StageState<'_, T>,
    (x, dy, dx): (&[T], &[T], &mut [T]),
    saved: &SavedStage<T>,
    grads: &mut StageGrads<T>,
) -> Result<(), NormError> {
    if synced {
        return Err(unsynced(info));
    }
    let stage = &info.spec.stages[k];
    let lay = Layout::new(info.spec, stage, plan.shape.as_slice());
    let (p, q) = weights(info, k, state)?;
    let alternatives = lay.groups.len();
    let total: usize = lay.groups.iter().sum();
    if saved.stats.len() != total {
        return Err(NormError::Saved {
            layer: info.name.to_string(),
            reason: "its statistics do not match this layer".to_string(),
        });
    }
    let offs: Vec<usize> = (0..alternatives).map(|a| lay.offset(a)).collect();
    let stats = &saved.stats;
    let gamma = state.gamma.as_ref().map(values);
    let nparams = plan.param_shape.numel();
    let (mut dgamma, mut dbeta) = (vec![0.0f64; nparams], vec![0.0f64; nparams]);
    // Per group of each alternative: ∂L/∂μ_k and ∂L/∂σ²_k; per alternative: ∂L/∂p_k, ∂L/∂q_k.
    let (mut dmu, mut dvar) = (vec![0.0f64; total], vec![0.0f64; total]);
    let (mut dp, mut dq) = (vec![0.0f64; alternatives], vec![0.0f64; alternatives]);
    let eps = stage.eps;
    let mixed = |idx: &[usize; SETS]| {
        let (mut mu, mut var) = (0.0, 0.0);
        for a in 0..alternatives {
            let st = &stats[offs[a] + idx[a]];
            mu += p[a] * st.mean;
            var += q[a] * st.var;
        }
        (mu, 1.0 / (var + eps).sqrt())
    };
    lay.each(|e, idx| {
        let (mu, s) = mixed(idx);
        let pi = idx[PARAMS];
        let d = dy[e].to_acc();
        let gm = gamma.as_ref().map_or(1.0, |g| g[pi].to_acc());
        let xc = x[e].to_acc() - mu;
        if nparams > 0 {
            dgamma[pi] += d * xc * s;
            dbeta[pi] += d;
        }
        let g = d * gm;
        let dmu_e = -s * g;
        let dvar_e = -0.5 * s * s * s * g * xc;
        for a in 0..alternatives {
            let i = offs[a] + idx[a];
            dmu[i] += p[a] * dmu_e;
            dvar[i] += q[a] * dvar_e;
            dp[a] += dmu_e * stats[i].mean;
            dq[a] += dvar_e * stats[i].var;
        }
    });
    lay.each(|e, idx| {
        let (_, s) = mixed(idx);
        let gm = gamma.as_ref().map_or(1.0, |g| g[idx[PARAMS]].to_acc());
        let v = x[e].to_acc();
        let mut acc = dy[e].to_acc() * gm * s;
        for a in 0..alternatives {
            // Running statistics in eval are constants.
            if saved.fixed && lay.batch[a] {
                continue;
            }
            let i = offs[a] + idx[a];
            let n = lay.counts[a] as f64;
            acc += dmu[i] / n + dvar[i] * 2.0 * (v - stats[i].mean) / n;
        }
        dx[e] = T::from_acc(acc);
    });
    // Through the softmax: ∂L/∂l_j = s_j (∂L/∂s_j − Σ_i s_i ∂L/∂s_i).
    let jacobian = |s: &[f64], d: &[f64]| -> Vec<f64> {
        let dot: f64 = s.iter().zip(d).map(|(a, b)| a * b).sum();
        s.iter().zip(d).map(|(a, b)| a * (b - dot)).collect()
    };
    fill_grad(&mut grads.dmean_weight, &[alternatives], &jacobian(&p, &dp));
    fill_grad(&mut grads.dvar_weight, &[alternatives], &jacobian(&q, &dq));
    let shape = plan.param_shape.as_slice();
    if nparams > 0 && matches!(stage.affine, norm_spec::Affine::Axes(_)) {
        fill_grad(&mut grads.dgamma, shape, &dgamma);
        if stage.bias {
            fill_grad(&mut grads.dbeta, shape, &dbeta);
        } else {
            grads.dbeta = None;
        }
    } else {
        grads.dgamma = None;
        grads.dbeta = None;
    }
    grads.dtau = None;
    Ok(())
}
