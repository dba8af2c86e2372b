//! One normalization stage: validation, statistics, running update, normalize, backward.
//!
//! Everything a call could refuse is checked in [`check`] before any state changes; the
//! compute functions after it cannot fail.

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use norm_spec::{shapes, Affine, EpsMode, Momentum, Spec, Stage};

use crate::kernels::backward::{self, BackAcc};
use crate::kernels::moments::MomentAcc;
use crate::kernels::normalize::{normalize, Unfolded};
use crate::kernels::Coef;
use crate::plan::Plan;
use crate::types::{Mode, SavedStage, StageGrads};
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
            if shape[c] % g != 0 {
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

/// Checks one stage's parameters and state for an input of `shape`; returns its plan.
pub(crate) fn check<T: Float>(
    info: &LayerInfo<'_>,
    k: usize,
    state: &StageState<'_, T>,
    shape: &[usize],
    mode: Option<Mode>,
) -> Result<Plan, NormError> {
    let spec = info.spec;
    let stage = &spec.stages[k];
    let plan = Plan::new(spec, stage, shape);
    if plan.group_len == 0 && plan.groups > 0 {
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
    if needs_two && uses_batch && plan.group_len <= 1 && plan.groups > 0 {
        return Err(NormError::TooFewValues {
            layer: info.name.to_string(),
            per_group: plan.group_len,
            shape: shape.to_vec(),
        });
    }
    if let Some(axes) = shapes::param_axes(stage) {
        let expected = plan.param_shape.as_slice();
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
        let axes = shapes::stats_axes(spec, stage);
        let expected = plan.stat_shape.as_slice();
        match &state.external {
            Some((scale, shift)) => {
                check_indexed(info, stage, "scale", &axes, expected, scale.shape())?;
                check_indexed(info, stage, "shift", &axes, expected, shift.shape())?;
            }
            None => return Err(missing(info, "scale/shift")),
        }
    }
    if let Some(axes) = shapes::running_axes(spec, stage) {
        let expected = plan.running_shape.as_slice();
        match &state.running {
            Some(r) => {
                check_indexed(
                    info,
                    stage,
                    "running_mean",
                    &axes,
                    expected,
                    r.mean().shape(),
                )?;
                check_indexed(info, stage, "running_var", &axes, expected, r.var().shape())?;
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
    if stage.unbiased {
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

/// Per-group mean and variance (as normalized with) of a batch.
fn batch_moments<T: Float>(
    stage: &Stage,
    plan: &Plan,
    x: &[T],
    acc: &mut MomentAcc,
    mut f: impl FnMut(usize, f64, f64, f64),
) {
    acc.accumulate(plan, x, stage.center);
    let n = plan.group_len;
    for s in 0..plan.groups {
        if stage.center {
            let m = acc.group(s, n);
            f(s, m.mean, estimator(stage, m.m2, n), m.m2);
        } else {
            f(s, 0.0, acc.sq[s] / n as f64, acc.sq[s]);
        }
    }
}

/// Scratch buffers of a stage call.
#[derive(Debug, Default)]
pub(crate) struct Scratch<T> {
    moments: MomentAcc,
    back: BackAcc,
    m2: Vec<f64>,
    coef: Coef<T>,
    c: Vec<T>,
    run: Vec<f64>,
    gs: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
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
) {
    let stage = &info.spec.stages[k];
    let groups = plan.groups;
    for v in [&mut saved.mean, &mut saved.var, &mut saved.rstd] {
        v.clear();
        v.resize(groups, 0.0);
    }
    let fixed = mode == Mode::Eval && stage.running_stats;
    saved.fixed = fixed;
    if fixed {
        let running = state
            .running
            .as_ref()
            .expect("checked: running statistics present");
        let (rm, rv) = (running.mean(), running.var());
        let (rm, rv) = (values(&rm), values(&rv));
        plan.for_each_group(|s, _, r| {
            saved.mean[s] = rm[r].to_acc();
            saved.var[s] = rv[r].to_acc();
        });
    } else {
        scratch.m2.clear();
        scratch.m2.resize(groups, 0.0);
        let (mean, var, m2) = (&mut saved.mean, &mut saved.var, &mut scratch.m2);
        batch_moments(stage, plan, x, &mut scratch.moments, |s, m, v, q| {
            mean[s] = m;
            var[s] = v;
            m2[s] = q;
        });
        if mode == Mode::Train {
            if let Some(Running::Mut {
                mean: rm,
                var: rv,
                count,
            }) = state.running.as_mut()
            {
                let batch = (&saved.mean[..], &scratch.m2[..]);
                update_running(stage, plan, batch, (rm, rv, count), &mut scratch.run);
            }
        }
    }

    // Per-group coefficients: y = (x − m)·a + b (with unfolded parameters applied after).
    let gamma = state.gamma.as_ref().map(values);
    let beta = state.beta.as_ref().map(values);
    let external = state.external.as_ref().map(|(s, h)| (values(s), values(h)));
    let fold = plan.foldable;
    scratch.coef.clear();
    {
        let coef = &mut scratch.coef;
        let saved = &mut *saved;
        plan.for_each_group(|s, p, _| {
            let r = rstd(stage, saved.var[s]);
            saved.rstd[s] = r;
            let (g, h) = match (&gamma, &external) {
                (Some(g), _) if fold => (
                    g[p].to_acc(),
                    beta.as_ref().map_or(0.0, |bt| bt[p].to_acc()),
                ),
                (_, Some((sc, sh))) => (sc[s].to_acc(), sh[s].to_acc()),
                _ => (1.0, 0.0),
            };
            coef.push(saved.mean[s], r * g, h);
        });
    }
    saved.scale.clear();
    if let Some((sc, _)) = &external {
        saved.scale.extend_from_slice(sc);
    }
    let unfolded = match (&gamma, fold) {
        (Some(g), false) => Some(Unfolded {
            gamma: g,
            beta: beta.as_deref(),
        }),
        _ => None,
    };
    normalize(plan, x, &scratch.coef, unfolded.as_ref(), out);
}

/// running ← (1 − m)·running + m·batch, the batch value averaged over `N` where the
/// statistics are per sample; the variance is the unbiased one (as PyTorch).
fn update_running<T: Float>(
    stage: &Stage,
    plan: &Plan,
    batch: (&[f64], &[f64]),
    running: (
        &mut ArrayViewMutD<'_, T>,
        &mut ArrayViewMutD<'_, T>,
        &mut u64,
    ),
    buf: &mut Vec<f64>,
) {
    let (rmean, rvar, count) = running;
    let (mean, m2) = batch;
    let size = plan.running_shape.numel();
    buf.clear();
    buf.resize(2 * size, 0.0);
    let n = plan.group_len as f64;
    plan.for_each_group(|s, _, r| {
        buf[r] += mean[s];
        buf[size + r] += m2[s] / (n - 1.0);
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
    let mut mean = vec![T::zero(); plan.groups];
    let mut var = vec![T::zero(); plan.groups];
    let mut acc = MomentAcc::default();
    batch_moments(stage, plan, x, &mut acc, |s, m, v, _| {
        mean[s] = T::from_acc(m);
        var[s] = T::from_acc(v);
    });
    let shape = IxDyn(plan.stat_shape.as_slice());
    (
        ArrayD::from_shape_vec(shape.clone(), mean).expect("groups = product of the stat shape"),
        ArrayD::from_shape_vec(shape, var).expect("groups = product of the stat shape"),
    )
}

fn fill_grad<T: Float>(slot: &mut Option<ArrayD<T>>, shape: &[usize], values: &[f64]) {
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
) {
    let stage = &info.spec.stages[k];
    let groups = plan.groups;
    let n = plan.group_len;
    // x̂ = (x − m)·r + b.
    scratch.coef.clear();
    for s in 0..groups {
        scratch.coef.push(saved.mean[s], saved.rstd[s], 0.0);
    }
    let gamma = state.gamma.as_ref().map(values);
    let fold = plan.foldable;
    let unfolded: Option<&[T]> = match (&gamma, fold) {
        (Some(g), false) => Some(g),
        _ => None,
    };
    scratch
        .back
        .accumulate(plan, x, dy, &scratch.coef, unfolded);
    let acc = &scratch.back;

    // Per-group scale of g = dy·γ (1 when γ is unfolded or absent).
    let params = plan.param_shape.numel();
    let (gs, dgamma, dbeta) = (&mut scratch.gs, &mut scratch.dgamma, &mut scratch.dbeta);
    gs.clear();
    gs.resize(groups, 1.0);
    dgamma.clear();
    dgamma.resize(params, 0.0);
    dbeta.clear();
    dbeta.resize(params, 0.0);
    match (&stage.affine, fold) {
        (Affine::Axes(_), true) => {
            let g = gamma.as_ref().expect("checked: gamma present");
            plan.for_each_group(|s, p, _| {
                gs[s] = g[p].to_acc();
                dgamma[p] += acc.sgx[s];
                dbeta[p] += acc.sg[s];
            });
        }
        (Affine::Axes(_), false) => {
            dgamma.copy_from_slice(&acc.dgamma);
            dbeta.copy_from_slice(&acc.dbeta);
        }
        (Affine::External, _) => {
            for s in 0..groups {
                gs[s] = saved.scale[s].to_acc();
                dgamma[s] = acc.sgx[s];
                dbeta[s] = acc.sg[s];
            }
        }
        (Affine::None, _) => {}
    }

    // dx = g·r + x̂·c1 + c0 = dy·(γ r) + (x − m)·(r c1) + (c0 − (μ − m)·r·c1).
    let d = if stage.center && stage.unbiased {
        n as f64 - 1.0
    } else {
        n as f64
    };
    scratch.c.clear();
    scratch.coef.clear();
    for s in 0..groups {
        let r = saved.rstd[s];
        let (c0, c1) = if saved.fixed {
            (0.0, 0.0)
        } else {
            let sg = gs[s] * acc.sg[s];
            let sgx = gs[s] * acc.sgx[s];
            let c1 = match stage.eps_mode {
                EpsMode::Var => -r * sgx / d,
                EpsMode::Std => -sgx / (d * saved.var[s].sqrt()),
            };
            let c0 = if stage.center {
                -r * sg / n as f64
            } else {
                0.0
            };
            (c0, c1)
        };
        scratch.c.push(T::from_acc(r * gs[s]));
        scratch.coef.push(saved.mean[s], r * c1, c0);
    }
    backward::dx(plan, x, dy, &scratch.c, &scratch.coef, unfolded, dx);

    match &stage.affine {
        Affine::Axes(_) => {
            let shape = plan.param_shape.as_slice();
            fill_grad(&mut grads.dgamma, shape, &scratch.dgamma);
            if stage.bias {
                fill_grad(&mut grads.dbeta, shape, &scratch.dbeta);
            } else {
                grads.dbeta = None;
            }
        }
        Affine::External => {
            let shape = plan.stat_shape.as_slice();
            fill_grad(&mut grads.dgamma, shape, &scratch.dgamma);
            fill_grad(&mut grads.dbeta, shape, &scratch.dbeta);
        }
        Affine::None => {
            grads.dgamma = None;
            grads.dbeta = None;
        }
    }
}
