//! The entry points every layer calls — generated layers and [`crate::DynNorm`] alike, so
//! the two give bit-identical results.
//!
//! They accept inputs of any dimension and any strides (a non-contiguous input is copied
//! to standard layout first), run the stages of a chain in order, and check everything
//! before any state changes.

use std::borrow::Cow;

use ndarray::{ArrayView, ArrayViewMut, Dimension};

use crate::plan::Plan;
use crate::stage::{self, LayerInfo, Scratch, StageState};
use crate::types::{Mode, Moments, Saved, SavedStage, StageGrads};
use crate::{Float, NormError};

/// The values of `a` in standard (logical) order, borrowed when already contiguous.
fn contiguous<'a, T: Copy, D: Dimension>(a: &'a ArrayView<'_, T, D>) -> Cow<'a, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// Runs `f` on a standard-layout slice of `out`, copying back if `out` is strided.
fn with_out<T: Float, D: Dimension, R>(
    out: &mut ArrayViewMut<'_, T, D>,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    if let Some(s) = out.as_slice_mut() {
        return f(s);
    }
    let mut tmp = vec![T::zero(); out.len()];
    let r = f(&mut tmp);
    for (o, v) in out.iter_mut().zip(tmp) {
        *o = v;
    }
    r
}

fn check_same<T, D: Dimension>(
    info: &LayerInfo<'_>,
    what: &str,
    expected: &[usize],
    a: &ArrayViewMut<'_, T, D>,
) -> Result<(), NormError> {
    if a.shape() != expected {
        return Err(NormError::Shape {
            layer: info.name.to_string(),
            what: what.to_string(),
            expected: expected.to_vec(),
            actual: a.shape().to_vec(),
        });
    }
    Ok(())
}

fn plans<T: Float>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    shape: &[usize],
    mode: Option<Mode>,
) -> Result<Vec<Plan>, NormError> {
    stage::check_input(info, shape)?;
    if states.len() != info.spec.stages.len() {
        return Err(NormError::Unsupported {
            layer: info.name.to_string(),
            reason: format!(
                "{} stage states passed for {} stages",
                states.len(),
                info.spec.stages.len()
            ),
        });
    }
    states
        .iter()
        .enumerate()
        .map(|(k, st)| stage::check(info, k, st, shape, mode))
        .collect()
}

/// Forward pass into `out`. With `saved`, records what backward needs (train, or eval with
/// a backward to follow); `mode` decides which statistics are used and whether running
/// statistics are updated.
pub fn forward_into<T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &mut [StageState<'_, T>],
    x: ArrayView<'_, T, D>,
    mode: Mode,
    mut out: ArrayViewMut<'_, T, D>,
    saved: Option<&mut Saved<T>>,
) -> Result<(), NormError> {
    let shape = x.shape();
    let plans = plans(info, states, shape, Some(mode))?;
    check_same(info, "the output buffer", shape, &out)?;
    let xs = contiguous(&x);
    let nstages = plans.len();
    let mut local = Saved::new();
    let saved = saved.unwrap_or(&mut local);
    saved.fingerprint = info.fingerprint;
    saved.shape.clear();
    saved.shape.extend_from_slice(shape);
    saved.stages.resize_with(nstages, SavedStage::default);
    saved.intermediates.resize_with(nstages - 1, Vec::new);
    let mut scratch = Scratch::default();
    with_out(&mut out, |out| {
        for k in 0..nstages {
            let (done, rest) = saved.intermediates.split_at_mut(k);
            let input: &[T] = if k == 0 { &xs } else { &done[k - 1] };
            let output: &mut [T] = if k + 1 == nstages {
                out
            } else {
                let buf = &mut rest[0];
                buf.clear();
                buf.resize(input.len(), T::zero());
                buf
            };
            stage::forward(
                info,
                k,
                &plans[k],
                &mut states[k],
                input,
                mode,
                output,
                &mut saved.stages[k],
                &mut scratch,
            );
        }
    });
    Ok(())
}

/// Backward pass into `dx` and `grads` (one entry per stage).
pub fn backward_into<T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    x: ArrayView<'_, T, D>,
    dy: ArrayView<'_, T, D>,
    saved: &Saved<T>,
    mut dx: ArrayViewMut<'_, T, D>,
    grads: &mut [StageGrads<T>],
) -> Result<(), NormError> {
    let shape = x.shape();
    let plans = plans(info, states, shape, None)?;
    if dy.shape() != shape {
        return Err(NormError::Shape {
            layer: info.name.to_string(),
            what: "dy".to_string(),
            expected: shape.to_vec(),
            actual: dy.shape().to_vec(),
        });
    }
    check_same(info, "the dx buffer", shape, &dx)?;
    let bad = |reason: String| NormError::Saved {
        layer: info.name.to_string(),
        reason,
    };
    if saved.fingerprint != info.fingerprint {
        return Err(bad(if saved.shape.is_empty() {
            "it was never filled by a forward pass".to_string()
        } else {
            "it comes from a layer with another configuration".to_string()
        }));
    }
    if saved.shape != shape {
        return Err(bad(format!(
            "it was saved for an input of shape {:?}, x has shape {:?}",
            saved.shape, shape
        )));
    }
    if saved.stages.len() != plans.len()
        || saved.intermediates.len() + 1 != plans.len()
        || plans
            .iter()
            .zip(&saved.stages)
            .any(|(p, s)| s.stats.len() != p.groups)
    {
        return Err(bad("its statistics do not match this layer".to_string()));
    }
    if grads.len() != plans.len() {
        return Err(NormError::Unsupported {
            layer: info.name.to_string(),
            reason: format!(
                "{} gradient slots passed for {} stages",
                grads.len(),
                plans.len()
            ),
        });
    }
    let xs = contiguous(&x);
    let dys = contiguous(&dy);
    let n = xs.len();
    let mut scratch = Scratch::default();
    with_out(&mut dx, |dx| {
        let last = plans.len() - 1;
        let mut upstream: Cow<'_, [T]> = Cow::Borrowed(&dys);
        for k in (0..plans.len()).rev() {
            let input: &[T] = if k == 0 {
                &xs
            } else {
                &saved.intermediates[k - 1]
            };
            if k == 0 {
                stage::backward(
                    info,
                    k,
                    &plans[k],
                    &states[k],
                    input,
                    &upstream,
                    &saved.stages[k],
                    dx,
                    &mut grads[k],
                    &mut scratch,
                );
            } else {
                let mut next = vec![T::zero(); n];
                stage::backward(
                    info,
                    k,
                    &plans[k],
                    &states[k],
                    input,
                    &upstream,
                    &saved.stages[k],
                    &mut next,
                    &mut grads[k],
                    &mut scratch,
                );
                upstream = Cow::Owned(next);
            }
            let _ = last;
        }
    });
    Ok(())
}

/// The statistics of the first stage of the layer on `x`.
pub fn stats<T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    x: ArrayView<'_, T, D>,
) -> Result<Moments<T>, NormError> {
    let shape = x.shape();
    let plans = plans(info, states, shape, None)?;
    let plan = &plans[0];
    if info.spec.stages[0].unbiased && plan.group_len <= 1 && plan.groups > 0 {
        return Err(NormError::TooFewValues {
            layer: info.name.to_string(),
            per_group: plan.group_len,
            shape: shape.to_vec(),
        });
    }
    let xs = contiguous(&x);
    let (mean, var) = stage::moments(info, 0, plan, &xs);
    Ok(Moments { mean, var })
}
