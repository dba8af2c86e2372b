//! Statistics: a group's moments from its raw sums, the variance estimator and 1/σ, the
//! running-statistics update and the fixed statistics of eval mode, the dx terms of the
//! backward pass, and `stats()`'s moments.

use ndarray::{ArrayD, ArrayViewMutD, IxDyn};
use norm_spec::{EpsMode, Momentum, Stage, Statistic};

use crate::kernels::exec::{self, ShiftedSums, Stat, Units};
use crate::plan::Plan;
use crate::state::{resize, values, LayerInfo, Running};
use crate::types::Mode;
use crate::Float;

/// The variance estimator of a stage from a group's M2 over `n` values.
fn estimator(stage: &Stage, m2: f64, n: usize) -> f64 {
    if stage.statistic == Statistic::Sum {
        m2
    } else if !stage.center {
        m2 / n as f64
    } else if stage.unbiased {
        m2 / (n as f64 - 1.0)
    } else {
        m2 / n as f64
    }
}

fn rstd(stage: &Stage, var: f64) -> f64 {
    match stage.eps_mode {
        EpsMode::Var => 1.0 / (var + stage.eps).sqrt(),
        EpsMode::Std => 1.0 / (var.sqrt() + stage.eps),
    }
}

/// The statistics of a group of `n` values with mean `mean` and M2 `m2`.
pub(crate) fn group_stat(stage: &Stage, mean: f64, m2: f64, n: usize) -> Stat {
    let var = estimator(stage, m2, n);
    Stat {
        mean,
        var,
        m2,
        rstd: rstd(stage, var),
    }
}

/// Mean and M2 of a group from its raw shifted sums (M2 = Σx² without centering).
pub(crate) fn mean_m2(stage: &Stage, raw: ShiftedSums, n: usize) -> (f64, f64) {
    if stage.center {
        let d = raw.sum / n as f64;
        // Clamp rounding below zero, but keep NaN (f64::max would turn NaN into 0).
        let m2 = raw.sq - raw.sum * d;
        (raw.shift + d, if m2 < 0.0 { 0.0 } else { m2 })
    } else {
        (0.0, raw.sq)
    }
}

/// The fixed statistics of every group from the running statistics (eval mode).
pub(crate) fn running_stats<T: Float>(
    stage: &Stage,
    plan: &Plan,
    running: &Running<'_, T>,
    stats: &mut [Stat],
) {
    let (rm, rv) = (running.mean(), running.var());
    let (rm, rv) = (values(&rm), values(&rv));
    plan.for_each_group(|s, _, r| {
        let (mean, var) = (rm[r].to_acc(), rv[r].to_acc());
        stats[s] = Stat {
            mean,
            var,
            m2: 0.0,
            rstd: rstd(stage, var),
        };
    });
}

/// In train mode (which measured batch statistics; fixed statistics are eval only), the
/// running statistics, if any, move toward `stats`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_running<T: Float>(
    stage: &Stage,
    plan: &Plan,
    mode: Mode,
    n: usize,
    stats: &[Stat],
    running: Option<&mut Running<'_, T>>,
    buf: &mut Vec<f64>,
) {
    if mode != Mode::Train {
        return;
    }
    if let Some(Running::Mut {
        mean: rm,
        var: rv,
        count,
    }) = running
    {
        // (The tuple is built in the call: its fields are coercion sites.)
        update_running(stage, plan, n, stats, (rm, rv, count), buf);
    }
}

/// running ← (1 − m)·running + m·batch, the batch value averaged over `N` where the
/// statistics are per sample; the variance is the unbiased one (as PyTorch).
fn update_running<T: Float>(
    stage: &Stage,
    plan: &Plan,
    n: usize,
    stats: &[Stat],
    running: (
        &mut ArrayViewMutD<'_, T>,
        &mut ArrayViewMutD<'_, T>,
        &mut u64,
    ),
    buf: &mut Vec<f64>,
) {
    let (rmean, rvar, count) = running;
    if plan.groups == 0 {
        // An empty batch (a kept axis of size 0): nothing was measured, nothing changes.
        return;
    }
    let size = plan.running_shape.numel();
    resize(buf, 2 * size, 0.0);
    let n = n as f64;
    plan.for_each_group(|s, _, r| {
        buf[r] += stats[s].mean;
        buf[size + r] += stats[s].m2 / (n - 1.0);
    });
    let per = (plan.groups / size.max(1)).max(1) as f64;
    *count += 1;
    let m = match stage.momentum {
        Momentum::Exponential(m) => m,
        Momentum::Cumulative => 1.0 / *count as f64,
    };
    let (mean_batch, var_batch) = buf.split_at(size);
    blend(rmean, mean_batch, m, per);
    blend(rvar, var_batch, m, per);
}

/// `running ← (1 − m)·running + m·batch/per`, element by element in logical order (a plain
/// slice loop where the running statistics are contiguous, as they are unless replaced by
/// hand: iterating a dynamic-rank view costs more than the update).
fn blend<T: Float>(running: &mut ArrayViewMutD<'_, T>, batch: &[f64], m: f64, per: f64) {
    let update = |v: &mut T, b: f64| *v = T::from_acc((1.0 - m) * v.to_acc() + m * b / per);
    match running.as_slice_mut() {
        Some(slice) => slice.iter_mut().zip(batch).for_each(|(v, &b)| update(v, b)),
        None => running
            .iter_mut()
            .zip(batch)
            .for_each(|(v, &b)| update(v, b)),
    }
}

/// The moments of stage `k` of a checked input.
pub(crate) fn moments<T: Float>(
    info: &LayerInfo<'_>,
    k: usize,
    plan: &Plan,
    x: &[T],
) -> (ArrayD<T>, ArrayD<T>) {
    let stage = &info.spec.stages[k];
    let n = plan.group_len;
    let mut raws = vec![ShiftedSums::default(); plan.groups];
    exec::raw_sums(&Units::new(plan), x, stage.center, &mut raws);
    let mut mean = Vec::with_capacity(plan.groups);
    let mut var = Vec::with_capacity(plan.groups);
    for raw in raws {
        let (m, m2) = mean_m2(stage, raw, n);
        mean.push(T::from_acc(m));
        var.push(T::from_acc(estimator(stage, m2, n)));
    }
    let shape = IxDyn(plan.stat_shape.as_slice());
    (
        ArrayD::from_shape_vec(shape.clone(), mean).expect("groups = product of the stat shape"),
        ArrayD::from_shape_vec(shape, var).expect("groups = product of the stat shape"),
    )
}

pub(crate) fn fill_grad<T: Float>(slot: &mut Option<ArrayD<T>>, shape: &[usize], values: &[f64]) {
    let ok = slot
        .as_ref()
        .is_some_and(|a| a.shape() == shape && a.is_standard_layout());
    if !ok {
        *slot = Some(ArrayD::zeros(IxDyn(shape)));
    }
    if let Some(a) = slot.as_mut() {
        for (o, &v) in a.iter_mut().zip(values) {
            *o = T::from_acc(v);
        }
    }
}

/// The dx terms of a group of `n` values with statistics `st` and backward sums
/// `sg = Σg`, `sgx = Σg·x̂` (g = dy·γ): dx = g·r + x̂·c1 + c0; returns (c0, c1). Fixed
/// statistics (running statistics in eval) are constants: (0, 0).
pub(crate) fn dx_terms(
    stage: &Stage,
    st: &Stat,
    n: usize,
    fixed: bool,
    sg: f64,
    sgx: f64,
) -> (f64, f64) {
    if fixed {
        return (0.0, 0.0);
    }
    let d = if stage.statistic == Statistic::Sum {
        1.0
    } else if stage.center && stage.unbiased {
        n as f64 - 1.0
    } else {
        n as f64
    };
    let c1 = match stage.eps_mode {
        EpsMode::Var => -st.rstd * sgx / d,
        EpsMode::Std => -sgx / (d * st.var.sqrt()),
    };
    let c0 = if stage.center {
        -st.rstd * sg / n as f64
    } else {
        0.0
    };
    (c0, c1)
}
