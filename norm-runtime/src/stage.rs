//! One normalization stage: validation, statistics, running update, normalize, backward.
//!
//! Everything a call could refuse is checked in [`check`] before any state changes; the
//! compute functions after it cannot fail.

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use norm_spec::{shapes, Affine, EpsMode, Momentum, Spec, Stage};

use crate::collective::{merge_moments, Collective};
use crate::kernels::coef;
use crate::kernels::exec::{self, Acc, BackOut, CoefMut, Params, Raw, Stat, Units};
use crate::plan::Plan;
use crate::types::{Mode, Saved, SavedStage, StageGrads};

use crate::{Float, NormError};

/// The identity of a layer: its spec, its name (for messages) and its fingerprint (for
/// `Saved` checks).
#[derive(Clone, Copy, Debug)]
pub struct LayerInfo<'a> {
    /// The validated configuration.
    pub spec: &'a Spec,
    /// The layer's name as shown in errors.
    pub name: &'a str,
    /// [`norm_spec::shapes::fingerprint`] of `spec`.
    pub fingerprint: u64,
}

/// Running statistics of a stage, borrowed from the layer: read-only for inference,
/// mutable for training.
#[derive(Debug)]
pub enum Running<'a, T> {
    /// Read-only (`forward_eval`, `stats`, `backward`).
    View {
        /// `running_mean`.
        mean: ArrayViewD<'a, T>,
        /// `running_var`.
        var: ArrayViewD<'a, T>,
    },
    /// Updatable (`forward` in train mode).
    Mut {
        /// `running_mean`.
        mean: ArrayViewMutD<'a, T>,
        /// `running_var`.
        var: ArrayViewMutD<'a, T>,
        /// `num_batches_tracked`.
        count: &'a mut u64,
    },
}

impl<T> Running<'_, T> {
    fn mean(&self) -> ArrayViewD<'_, T> {
        match self {
            Running::View { mean, .. } => mean.view(),
            Running::Mut { mean, .. } => mean.view(),
        }
    }
    fn var(&self) -> ArrayViewD<'_, T> {
        match self {
            Running::View { var, .. } => var.view(),
            Running::Mut { var, .. } => var.view(),
        }
    }
}

/// The parameters and state of one stage, borrowed from the layer for one call.
#[derive(Debug, Default)]
pub struct StageState<'a, T> {
    /// `gamma` (`affine` with axes).
    pub gamma: Option<ArrayViewD<'a, T>>,
    /// `beta` (`affine` with axes and `bias`).
    pub beta: Option<ArrayViewD<'a, T>>,
    /// The external scale and shift (`affine = external`).
    pub external: Option<(ArrayViewD<'a, T>, ArrayViewD<'a, T>)>,
    /// The running statistics (`running_stats`).
    pub running: Option<Running<'a, T>>,
}

/// A view's values in standard (logical) order, borrowed when already contiguous.
pub(crate) fn values<'a, T: Copy>(a: &'a ArrayViewD<'_, T>) -> Cow<'a, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

fn shape_error(
    info: &LayerInfo<'_>,
    what: &str,
    expected: &[usize],
    actual: &[usize],
) -> NormError {
    NormError::Shape {
        layer: info.name.to_string(),
        what: what.to_string(),
        expected: expected.to_vec(),
        actual: actual.to_vec(),
    }
}

/// Checks an array indexed by `axes` against the sizes the input implies.
fn check_indexed(
    info: &LayerInfo<'_>,
    stage: &Stage,
    what: &str,
    axes: &[norm_spec::ParamAxis],
    expected: &[usize],
    actual: &[usize],
) -> Result<(), NormError> {
    if expected == actual {
        return Ok(());
    }
    if expected.len() == actual.len() {
        for (k, (&e, &a)) in expected.iter().zip(actual).enumerate() {
            if e != a {
                let axis = shapes::axis_name(info.spec, axes[k]).to_string();
                let source = if stage.name.is_empty() {
                    what.to_string()
                } else {
                    format!("{}.{what}", stage.name)
                };
                return Err(NormError::AxisSize {
                    layer: info.name.to_string(),
                    axis,
                    expected: a,
                    actual: e,
                    source,
                });
            }
        }
    }
    Err(shape_error(info, what, expected, actual))
}

/// Checks the input shape against the declaration (rank, fixed sizes, groups).
pub(crate) fn check_input(info: &LayerInfo<'_>, shape: &[usize]) -> Result<(), NormError> {
    let spec = info.spec;
    if shape.len() != spec.input.len() {
        return Err(NormError::Rank {
            layer: info.name.to_string(),
            expected: spec.input.len(),
            actual: shape.len(),
        });
    }
    for (axis, &n) in spec.input.iter().zip(shape) {
        if let Some(fixed) = axis.size {
            if fixed != n {
                return Err(NormError::AxisSize {
                    layer: info.name.to_string(),
                    axis: axis.name.to_string(),
                    expected: fixed,
                    actual: n,
                    source: "the fixed size in `input`".to_string(),
                });
            }
        }
    }
    for stage in spec.stages.iter() {
        if let (Some(g), Some(c)) = (stage.groups, spec.channel) {
            if !shape[c].is_multiple_of(g) {
                return Err(NormError::GroupsDivide {
                    layer: info.name.to_string(),
                    channels: shape[c],
                    groups: g,
                });
            }
        }
    }
    Ok(())
}

/// What a call is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A forward pass in this mode.
    Forward(Mode),
    /// A backward pass (its `Saved` says which statistics were used).
    Backward,
    /// `stats()`: batch statistics, nothing saved.
    Stats,
}

/// Whether a stage's statistics run over the batch axis `N` (synchronized by `*_sync`).
pub(crate) fn syncs(spec: &Spec, stage: &Stage) -> bool {
    spec.batch.is_some_and(|b| stage.reduces(b))
}

/// The global count checks of a synchronized stage (the local ones of [`check`]).
fn check_count(
    info: &LayerInfo<'_>,
    stage: &Stage,
    mode: Mode,
    count: usize,
    shape: &[usize],
) -> Result<(), NormError> {
    if count == 0 {
        return Err(NormError::EmptyGroup {
            layer: info.name.to_string(),
            shape: shape.to_vec(),
        });
    }
    let uses_batch = mode == Mode::Train || !stage.running_stats;
    if (stage.running_stats || stage.unbiased) && uses_batch && count <= 1 {
        return Err(NormError::TooFewValues {
            layer: info.name.to_string(),
            per_group: count,
            shape: shape.to_vec(),
        });
    }
    Ok(())
}

/// Checks one stage's parameters and state for an input of `shape`; returns its plan.
pub(crate) fn check<T: Float>(
    info: &LayerInfo<'_>,
    k: usize,
    state: &StageState<'_, T>,
    shape: &[usize],
    purpose: Purpose,
    sync: bool,
) -> Result<Plan, NormError> {
    let mode = match purpose {
        Purpose::Forward(m) => Some(m),
        Purpose::Backward | Purpose::Stats => None,
    };
    let spec = info.spec;
    let stage = &spec.stages[k];
    let plan = Plan::new(spec, stage, shape);
    // Synchronized statistics count the whole group's batch: checked after the exchange.
    let local_counts = !(sync && syncs(spec, stage));
    // Inference with running statistics needs no values per group, and neither does its
    // backward (whose forward already passed this check).
    let fixed = mode == Some(Mode::Eval) && stage.running_stats;
    let backward = purpose == Purpose::Backward;
    if local_counts && !fixed && !backward && plan.group_len == 0 && plan.groups > 0 {
        return Err(NormError::EmptyGroup {
            layer: info.name.to_string(),
            shape: shape.to_vec(),
        });
    }
    let needs_two = stage.running_stats || stage.unbiased;
    let uses_batch = match mode {
        Some(Mode::Train) => true,
        Some(Mode::Eval) => !stage.running_stats,
        None => false,
    };
    if local_counts && needs_two && uses_batch && plan.group_len <= 1 && plan.groups > 0 {
        return Err(NormError::TooFewValues {
            layer: info.name.to_string(),
            per_group: plan.group_len,
            shape: shape.to_vec(),
        });
    }
    if let Some(axes) = shapes::param_axes(stage) {
        let expected = plan.param_shape.as_slice();
        let axes: &[norm_spec::ParamAxis] = axes;
        match &state.gamma {
            Some(g) => check_indexed(info, stage, "gamma", axes, expected, g.shape())?,
            None => return Err(missing(info, "gamma")),
        }
        match (&state.beta, stage.bias) {
            (Some(b), true) => check_indexed(info, stage, "beta", axes, expected, b.shape())?,
            (None, true) => return Err(missing(info, "beta")),
            _ => {}
        }
    }
    if let (Affine::External, Some(_)) = (&stage.affine, mode) {
        let axes = plan.stat_axes.as_slice();
        let expected = plan.stat_shape.as_slice();
        match &state.external {
            Some((scale, shift)) => {
                check_indexed(info, stage, "scale", axes, expected, scale.shape())?;
                check_indexed(info, stage, "shift", axes, expected, shift.shape())?;
            }
            None => return Err(missing(info, "scale/shift")),
        }
    }
    if stage.running_stats {
        let axes = plan.running_axes.as_slice();
        let expected = plan.running_shape.as_slice();
        match &state.running {
            Some(r) => {
                check_indexed(
                    info,
                    stage,
                    "running_mean",
                    axes,
                    expected,
                    r.mean().shape(),
                )?;
                check_indexed(info, stage, "running_var", axes, expected, r.var().shape())?;
            }
            None => return Err(missing(info, "running statistics")),
        }
    }
    Ok(plan)
}

fn missing(info: &LayerInfo<'_>, what: &str) -> NormError {
    NormError::Unsupported {
        layer: info.name.to_string(),
        reason: format!("{what} missing from the layer state"),
    }
}

/// The variance estimator of a stage from a group's M2 over `n` values.
fn estimator(stage: &Stage, m2: f64, n: usize) -> f64 {
    if !stage.center {
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
fn mean_m2(stage: &Stage, raw: Raw, n: usize) -> (f64, f64) {
    if stage.center {
        let d = raw.sum / n as f64;
        // Clamp rounding below zero, but keep NaN (f64::max would turn NaN into 0).
        let m2 = raw.sq - raw.sum * d;
        (raw.shift + d, if m2 < 0.0 { 0.0 } else { m2 })
    } else {
        (0.0, raw.sq)
    }
}

/// Scratch buffers of a layer call, reused across calls (see `layer::with_scratch`).
#[derive(Debug, Default)]
pub(crate) struct Scratch<T> {
    /// The `Saved` of an inference call, which the caller does not keep.
    pub saved: Saved<T>,
    /// A chain's backward: the upstream gradient of the stage being processed.
    pub up: Vec<T>,
    /// A chain's backward: the gradient written by that stage.
    pub down: Vec<T>,
    xm: Vec<T>,
    xa: Vec<T>,
    xb: Vec<T>,
    m: Vec<T>,
    a: Vec<T>,
    b: Vec<T>,
    c: Vec<T>,
    acc: Acc,
    sg: Vec<f64>,
    sgx: Vec<f64>,
    dparams: Vec<f64>,
    /// The staged γ-gradient sums of the backward pass (element type).
    stage: Vec<T>,
    run: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
    sync_local: Vec<f64>,
    sync_all: Vec<f64>,
    sync_merged: Vec<(f64, f64, f64)>,
    /// The fused path of chains.
    pub chain: crate::chain::ChainScratch<T>,
}

/// `v` as `n` copies of `zero`, reusing its allocation.
pub(crate) fn resize<V: Clone>(v: &mut Vec<V>, n: usize, zero: V) {
    v.clear();
    v.resize(n, zero);
}

/// Forward pass of stage `k` on a checked input.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Float>(
    info: &LayerInfo<'_>,
    k: usize,
    plan: &Plan,
    state: &mut StageState<'_, T>,
    x: &[T],
    mode: Mode,
    out: &mut [T],
    saved: &mut SavedStage<T>,
    scratch: &mut Scratch<T>,
    sync: Option<&dyn Collective>,
) -> Result<(), NormError> {
    let stage = &info.spec.stages[k];
    let groups = plan.groups;
    let mut n = plan.group_len;
    let units = Units::new(plan);
    resize(&mut saved.stats, groups, Stat::default());
    for v in [&mut scratch.m, &mut scratch.a, &mut scratch.b] {
        resize(v, groups, T::zero());
    }
    let fixed = mode == Mode::Eval && stage.running_stats;
    saved.fixed = fixed;
    // A group of one (`Solo`) exchanges nothing: it runs the unsynchronized kernels, so its
    // results are bit-identical to `forward`'s; `synced` still records the kind of call.
    let synced = sync.is_some() && !fixed && syncs(info.spec, stage);
    let comm = sync.filter(|c| synced && c.size() > 1);
    saved.synced = synced;

    let gamma = state.gamma.as_ref().map(values);
    let beta = state.beta.as_ref().map(values);
    let external = state.external.as_ref().map(|(s, h)| (values(s), values(h)));
    let fold = plan.foldable;
    // The affine of group s when it folds into the coefficients: (scale, shift).
    let group_affine = |s: usize| -> (f64, f64) {
        match (&gamma, &external) {
            (Some(g), _) if fold => {
                let p = plan.group_offsets(s).0;
                (
                    g[p].to_acc(),
                    beta.as_ref().map_or(0.0, |bt| bt[p].to_acc()),
                )
            }
            (_, Some((sc, sh))) => (sc[s].to_acc(), sh[s].to_acc()),
            _ => (1.0, 0.0),
        }
    };
    let params = Params {
        gamma: gamma.as_deref().filter(|_| !fold),
        beta: beta.as_deref().filter(|_| !fold),
    };

    if fixed {
        let running = state
            .running
            .as_ref()
            .expect("checked: running statistics present");
        running_stats(stage, plan, running, &mut saved.stats);
        for (s, st) in saved.stats.iter().enumerate() {
            let (g, h) = group_affine(s);
            (scratch.m[s], scratch.a[s], scratch.b[s]) = coef(st.mean, st.rstd * g, h);
        }
        let c = (&scratch.m[..], &scratch.a[..], &scratch.b[..]);
        exec::normalize(&units, x, c, params, out);
    } else if let Some(comm) = comm {
        // Local (count, mean, M2) per group → all members → merged in rank order.
        let mut raws = std::mem::take(&mut scratch.acc.raws);
        resize(&mut raws, groups, Raw::default());
        exec::sums_all(&units, x, stage.center, &mut raws, &mut scratch.acc.f);
        let mut local = std::mem::take(&mut scratch.sync_local);
        local.clear();
        for &raw in &raws {
            let (mean, m2) = if n == 0 {
                (0.0, 0.0)
            } else {
                mean_m2(stage, raw, n)
            };
            local.extend_from_slice(&[n as f64, mean, m2]);
        }
        scratch.acc.raws = raws;
        let gathered = comm.all_gather(&local, &mut scratch.sync_all);
        scratch.sync_local = local;
        gathered.map_err(|reason| NormError::Collective {
            layer: info.name.to_string(),
            reason,
        })?;
        if scratch.sync_all.len() != 3 * groups * comm.size() {
            return Err(NormError::Collective {
                layer: info.name.to_string(),
                reason: format!(
                    "all_gather returned {} values, expected {} ({} members × {} groups × 3)",
                    scratch.sync_all.len(),
                    3 * groups * comm.size(),
                    comm.size(),
                    groups
                ),
            });
        }
        let mut merged = std::mem::take(&mut scratch.sync_merged);
        resize(&mut merged, groups, (0.0, 0.0, 0.0));
        merge_moments(&scratch.sync_all, groups, &mut merged);
        n = merged.first().map_or(0, |m| m.0 as usize);
        check_count(info, stage, mode, n, &saved_shape_hint(plan))?;
        for (s, &(_, mean, m2)) in merged.iter().enumerate() {
            let st = group_stat(stage, mean, m2, n);
            saved.stats[s] = st;
            let (g, h) = group_affine(s);
            (scratch.m[s], scratch.a[s], scratch.b[s]) = coef(mean, st.rstd * g, h);
        }
        scratch.sync_merged = merged;
        let c = (&scratch.m[..], &scratch.a[..], &scratch.b[..]);
        exec::normalize(&units, x, c, params, out);
    } else {
        if synced {
            // The checks `check` leaves to the exchange of a synchronized stage.
            check_count(info, stage, mode, n, &saved_shape_hint(plan))?;
        }
        let finish = |s: usize, raw: Raw, out: &mut Stat| {
            let (mean, m2) = mean_m2(stage, raw, n);
            let st = group_stat(stage, mean, m2, n);
            *out = st;
            let (g, h) = group_affine(s);
            coef(mean, st.rstd * g, h)
        };
        let c = CoefMut {
            stat: &mut saved.stats,
            m: &mut scratch.m,
            a: &mut scratch.a,
            b: &mut scratch.b,
        };
        exec::forward(
            &units,
            x,
            stage.center,
            params,
            &finish,
            c,
            &mut scratch.acc,
            out,
        );
    }
    let running = state.running.as_mut();
    train_running(
        stage,
        plan,
        mode,
        n,
        &saved.stats,
        running,
        &mut scratch.run,
    );
    saved.count = n;
    saved.scale.clear();
    if let Some((sc, _)) = &external {
        saved.scale.extend_from_slice(sc);
    }
    Ok(())
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

/// The shape named in a synchronized stage's count errors: the local statistics shape.
fn saved_shape_hint(plan: &Plan) -> Vec<usize> {
    plan.stat_shape.as_slice().to_vec()
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
    for (r, v) in rmean.iter_mut().enumerate() {
        *v = T::from_acc((1.0 - m) * v.to_acc() + m * buf[r] / per);
    }
    for (r, v) in rvar.iter_mut().enumerate() {
        *v = T::from_acc((1.0 - m) * v.to_acc() + m * buf[size + r] / per);
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
    let mut raws = vec![Raw::default(); plan.groups];
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
    let d = if stage.center && stage.unbiased {
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

/// Backward pass of stage `k`: writes dx and the stage's parameter gradients.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Float>(
    info: &LayerInfo<'_>,
    k: usize,
    plan: &Plan,
    state: &StageState<'_, T>,
    x: &[T],
    dy: &[T],
    saved: &SavedStage<T>,
    dx: &mut [T],
    grads: &mut StageGrads<T>,
    scratch: &mut Scratch<T>,
    sync: Option<&dyn Collective>,
) -> Result<(), NormError> {
    let stage = &info.spec.stages[k];
    let groups = plan.groups;
    let n = saved.count;
    let units = Units::new(plan);
    let gamma = state.gamma.as_ref().map(values);
    let fold = plan.foldable;
    let unfolded: Option<&[T]> = gamma.as_deref().filter(|_| !fold);
    let nparams = if unfolded.is_some() {
        plan.param_shape.numel()
    } else {
        0
    };

    // x̂ = (x − m)·r + b per group, in `scratch.xm/xa/xb`.
    for v in [&mut scratch.xm, &mut scratch.xa, &mut scratch.xb] {
        v.clear();
    }
    for st in &saved.stats {
        let (m, a, b) = coef::<T>(st.mean, st.rstd, 0.0);
        scratch.xm.push(m);
        scratch.xa.push(a);
        scratch.xb.push(b);
    }
    // The scale of g = dy·γ when γ folds per group (1 when unfolded or absent).
    let group_scale = |s: usize| -> f64 {
        match (&stage.affine, &gamma) {
            (Affine::Axes(_), Some(g)) if fold => g[plan.group_offsets(s).0].to_acc(),
            (Affine::External, _) => saved.scale[s].to_acc(),
            _ => 1.0,
        }
    };
    // dx = g·r + x̂·c1 + c0 = dy·(γ r) + (x − m)·(r c1) + (c0 − (μ − m)·r·c1).
    let finish = |s: usize, sg: f64, sgx: f64| {
        let st = saved.stats[s];
        let gs = group_scale(s);
        let r = st.rstd;
        let (c0, c1) = dx_terms(stage, &st, n, saved.fixed, gs * sg, gs * sgx);
        let (m, a, b) = coef::<T>(st.mean, r * c1, c0);
        (T::from_acc(r * gs), m, a, b)
    };
    resize(&mut scratch.sg, groups, 0.0);
    resize(&mut scratch.sgx, groups, 0.0);
    resize(&mut scratch.dparams, 2 * nparams, 0.0);
    for v in [
        &mut scratch.c,
        &mut scratch.m,
        &mut scratch.a,
        &mut scratch.b,
    ] {
        resize(v, groups, T::zero());
    }
    let out = BackOut {
        sg: &mut scratch.sg,
        sgx: &mut scratch.sgx,
        dparams: &mut scratch.dparams,
        c: &mut scratch.c,
        m: &mut scratch.m,
        a: &mut scratch.a,
        b: &mut scratch.b,
        stage: &mut [],
    };
    let xhat = (&scratch.xm[..], &scratch.xa[..], &scratch.xb[..]);
    if saved.synced && sync.is_none() {
        return Err(NormError::Saved {
            layer: info.name.to_string(),
            reason: "it comes from forward_sync: call backward_sync".to_string(),
        });
    }
    // A group of one exchanges nothing (bit-identical to `backward`, as in `forward`).
    if let Some(comm) = sync.filter(|c| saved.synced && c.size() > 1) {
        // Local sums (kept for the local parameter gradients) → all members → summed in
        // rank order for the dx coefficients.
        exec::dsums_all(
            &units,
            x,
            dy,
            xhat,
            unfolded,
            out.sg,
            out.sgx,
            out.dparams,
            &mut scratch.acc.f,
        );
        let mut local = std::mem::take(&mut scratch.sync_local);
        local.clear();
        local.extend_from_slice(out.sg);
        local.extend_from_slice(out.sgx);
        let gathered = comm.all_gather(&local, &mut scratch.sync_all);
        scratch.sync_local = local;
        gathered.map_err(|reason| NormError::Collective {
            layer: info.name.to_string(),
            reason,
        })?;
        if scratch.sync_all.len() != 2 * groups * comm.size() {
            return Err(NormError::Collective {
                layer: info.name.to_string(),
                reason: format!(
                    "all_gather returned {} values, expected {}",
                    scratch.sync_all.len(),
                    2 * groups * comm.size()
                ),
            });
        }
        for g in 0..groups {
            let (mut sg, mut sgx) = (0.0, 0.0);
            for r in 0..comm.size() {
                sg += scratch.sync_all[r * 2 * groups + g];
                sgx += scratch.sync_all[r * 2 * groups + groups + g];
            }
            let (c, m, a, b) = finish(g, sg, sgx);
            (out.c[g], out.m[g], out.a[g], out.b[g]) = (c, m, a, b);
        }
        let coef = (&out.c[..], &out.m[..], &out.a[..], &out.b[..]);
        exec::dx_all(&units, x, dy, coef, unfolded, dx);
    } else {
        if !saved.synced && sync.is_some() && syncs(info.spec, stage) && !saved.fixed {
            return Err(NormError::Saved {
                layer: info.name.to_string(),
                reason: "it comes from forward, not forward_sync".to_string(),
            });
        }
        exec::backward(
            &units,
            x,
            dy,
            xhat,
            unfolded,
            &finish,
            out,
            &mut scratch.acc.f,
            &mut scratch.stage,
            dx,
        );
    }

    let params = plan.param_shape.numel();
    let (sg, sgx) = (&scratch.sg, &scratch.sgx);
    let (dgamma, dbeta) = (&mut scratch.dgamma, &mut scratch.dbeta);
    resize(dgamma, params, 0.0);
    resize(dbeta, params, 0.0);
    match (&stage.affine, fold) {
        (Affine::Axes(_), true) => {
            plan.for_each_group(|s, p, _| {
                dgamma[p] += sgx[s];
                dbeta[p] += sg[s];
            });
        }
        (Affine::Axes(_), false) => {
            dgamma.copy_from_slice(&scratch.dparams[..params]);
            dbeta.copy_from_slice(&scratch.dparams[params..]);
        }
        (Affine::External, _) => {
            dgamma.copy_from_slice(sgx);
            dbeta.copy_from_slice(sg);
        }
        (Affine::None, _) => {}
    }
    match &stage.affine {
        Affine::Axes(_) => {
            let shape = plan.param_shape.as_slice();
            fill_grad(&mut grads.dgamma, shape, dgamma);
            if stage.bias {
                fill_grad(&mut grads.dbeta, shape, dbeta);
            } else {
                grads.dbeta = None;
            }
        }
        Affine::External => {
            let shape = plan.stat_shape.as_slice();
            fill_grad(&mut grads.dgamma, shape, dgamma);
            fill_grad(&mut grads.dbeta, shape, dbeta);
        }
        Affine::None => {
            grads.dgamma = None;
            grads.dbeta = None;
        }
    }
    Ok(())
}
