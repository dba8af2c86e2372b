//! Validation: everything a call could refuse, checked before any state changes (the
//! compute steps after it cannot fail). [`check`] also builds the stage's [`Plan`], the one
//! plan of that stage for the call.

use norm_spec::{shapes, Affine, Spec, Stage};

use crate::plan::{Plan, PlanCache};
use crate::state::{LayerInfo, StageState};
use crate::types::Mode;
use crate::{Float, NormError};

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
///
/// An input without statistics groups (a kept axis of size 0) has nothing to refuse, as
/// in [`check`]. The shape named in the errors is the local statistics shape.
pub(crate) fn check_count(
    info: &LayerInfo<'_>,
    stage: &Stage,
    mode: Mode,
    count: usize,
    plan: &Plan,
) -> Result<(), NormError> {
    if plan.groups == 0 {
        return Ok(());
    }
    let shape = plan.stat_shape.as_slice();
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
    let mut plan = Plan::default();
    check_into(info, (k, state), shape, (purpose, sync), (&mut plan, None))?;
    Ok(plan)
}

/// [`check`] writing the plan into `plan` (a slot of the caller's buffer: the plan, over a
/// kilobyte, is not moved through the results), copied from `cache` where it holds it.
pub(crate) fn check_into<T: Float>(
    info: &LayerInfo<'_>,
    (k, state): (usize, &StageState<'_, T>),
    shape: &[usize],
    (purpose, sync): (Purpose, bool),
    (plan, cache): (&mut Plan, Option<&mut PlanCache>),
) -> Result<(), NormError> {
    let mode = match purpose {
        Purpose::Forward(m) => Some(m),
        Purpose::Backward | Purpose::Stats => None,
    };
    let spec = info.spec;
    let stage = &spec.stages[k];
    let built = match cache {
        Some(cache) => cache.plan_into((spec, stage, shape), plan),
        None => Plan::new(spec, stage, shape).map(|p| *plan = p),
    };
    built.ok_or_else(|| NormError::Size {
        layer: info.name.to_string(),
        reason: format!("the sizes of an input of shape {shape:?} overflow usize"),
    })?;
    let plan = &*plan;
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
        match (&state.tau, stage.tlu) {
            (Some(t), true) => check_indexed(info, stage, "tau", axes, expected, t.shape())?,
            (None, true) => return Err(missing(info, "tau")),
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
    Ok(())
}

fn missing(info: &LayerInfo<'_>, what: &str) -> NormError {
    NormError::Unsupported {
        layer: info.name.to_string(),
        reason: format!("{what} missing from the layer state"),
    }
}
