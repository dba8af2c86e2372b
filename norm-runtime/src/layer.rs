//! The entry points every layer calls — generated layers and [`crate::DynNorm`] alike, so
//! the two give bit-identical results.
//!
//! They accept inputs of any dimension and any strides (a non-contiguous input is copied
//! to standard layout first), run the stages of a chain in order, and check everything
//! before any state changes. Scratch memory is kept per thread, so a `*_into` call does not
//! allocate once the buffers have grown.

use std::borrow::Cow;

use ndarray::{ArrayView, ArrayViewMut, Dimension, IxDyn};

use crate::chain;
use crate::check::{self, Purpose};
use crate::collective::Collective;
use crate::plan::{Plan, PlanCache};
use crate::scratch::{with_scratch, Scratch};
use crate::stage::{self, BackwardIo, StageCall};
use crate::state::{LayerInfo, StageState};
use crate::stats;
use crate::types::{Mode, Moments, Saved, SavedStage, StageGrads};
use crate::{Float, NormError};

/// The forward pass of one stage on a checked input: [`stage::forward`] (the generic
/// path) or a monomorphized path's (`crate::path::train`).
pub(crate) type StageForward<T> = for<'a, 'b, 'c> fn(
    StageCall<'a>,
    &mut StageState<'b, T>,
    (&[T], &mut [T]),
    Mode,
    &mut SavedStage<T>,
    &mut Scratch<T>,
) -> Result<(), NormError>;

/// The backward pass of one stage on a checked input: [`stage::backward`] or a
/// monomorphized path's.
pub(crate) type StageBackward<T> = for<'a, 'b, 'c> fn(
    StageCall<'a>,
    &StageState<'b, T>,
    BackwardIo<'c, T>,
    &SavedStage<T>,
    &mut StageGrads<T>,
    &mut Scratch<T>,
) -> Result<(), NormError>;

/// The inputs and outputs of one backward call (besides the layer and its states).
pub struct BackwardArgs<'a, T, D: Dimension> {
    /// The forward input.
    pub x: ArrayView<'a, T, D>,
    /// The gradient of the loss with respect to the output.
    pub dy: ArrayView<'a, T, D>,
    /// What the forward pass saved.
    pub saved: &'a Saved<T>,
    /// Receives dx.
    pub dx: ArrayViewMut<'a, T, D>,
    /// Receives the parameter gradients, one entry per stage.
    pub grads: &'a mut [StageGrads<T>],
    /// The collective of a `backward_sync` call.
    pub sync: Option<&'a dyn Collective>,
}

impl<'a, T, D: Dimension> BackwardArgs<'a, T, D> {
    /// The same arguments with dynamic-rank views.
    pub fn into_dyn(self) -> BackwardArgs<'a, T, IxDyn> {
        BackwardArgs {
            x: self.x.into_dyn(),
            dy: self.dy.into_dyn(),
            saved: self.saved,
            dx: self.dx.into_dyn(),
            grads: self.grads,
            sync: self.sync,
        }
    }
}

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

/// Checks the input and every stage's state; nothing changes before this succeeds. On
/// success `plans` holds the plan of every stage: the one plan of each stage for this call.
fn check_all<T: Float>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    shape: &[usize],
    purpose: Purpose,
    sync: bool,
    (plans, cache): (&mut Vec<Plan>, &mut PlanCache),
) -> Result<(), NormError> {
    plans.clear();
    check::check_input(info, shape)?;
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
    for (k, st) in states.iter().enumerate() {
        plans.push(Plan::default());
        if let Some(plan) = plans.last_mut() {
            let out = (plan, Some(&mut *cache));
            check::check_into(info, (k, st), shape, (purpose, sync), out)?;
        }
    }
    Ok(())
}

/// Runs `f` with this thread's scratch and the stage plans of this call, built once by
/// [`check_all`] (their buffer comes from the scratch and goes back after the call).
pub(crate) fn checked<'s, T: Float + 's, S, R>(
    info: &LayerInfo<'_>,
    states: S,
    shape: &[usize],
    (purpose, sync): (Purpose, bool),
    f: impl FnOnce(S, &[Plan], &mut Scratch<T>) -> Result<R, NormError>,
) -> Result<R, NormError>
where
    S: std::ops::Deref<Target = [StageState<'s, T>]>,
{
    with_scratch(|scratch: &mut Scratch<T>| {
        let mut plans = std::mem::take(&mut scratch.plans);
        let cache = &mut scratch.plan_cache;
        let r = check_all(info, &states, shape, purpose, sync, (&mut plans, cache))
            .and_then(|()| f(states, &plans, scratch));
        scratch.plans = plans;
        r
    })
}

/// Forward pass into `out`. With `saved`, records what backward needs (train, or eval with
/// a backward to follow); `mode` decides which statistics are used and whether running
/// statistics are updated. The rank is erased here (as in `crate::path::forward_into`).
#[inline]
pub fn forward_into<T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &mut [StageState<'_, T>],
    x: ArrayView<'_, T, D>,
    mode: Mode,
    out: ArrayViewMut<'_, T, D>,
    saved: Option<&mut Saved<T>>,
    sync: Option<&dyn Collective>,
) -> Result<(), NormError> {
    let io = (x.into_dyn(), out.into_dyn());
    forward_with(info, states, io, mode, saved, sync, stage::forward)
}

/// [`forward_into`] with `run` as the forward pass of each stage (a monomorphized path's
/// for a one-stage layer of its class; checks, plan and buffers as on the generic path).
pub(crate) fn forward_with<T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &mut [StageState<'_, T>],
    (x, mut out): (ArrayView<'_, T, D>, ArrayViewMut<'_, T, D>),
    mode: Mode,
    saved: Option<&mut Saved<T>>,
    sync: Option<&dyn Collective>,
    run: StageForward<T>,
) -> Result<(), NormError> {
    if info.spec.stages.first().is_some_and(|s| s.mask != 0) {
        return Err(crate::masked::needs_mask(info));
    }
    if T::WIDE {
        let run: &crate::widen::Forward32<'_> =
            &|st, x, out, saved, sync| forward_into(info, st, x, mode, out, saved, sync);
        return crate::widen::forward_into(info, states, (x, out), mode, saved, sync, run);
    }
    let shape = x.shape();
    let purpose = (Purpose::Forward(mode), sync.is_some());
    checked(info, states, shape, purpose, |states, plans, scratch| {
        check_same(info, "the output buffer", shape, &out)?;
        let xs = contiguous(&x);
        let nstages = states.len();
        // Inference saves nothing for the caller: reuse this thread's buffers.
        let mut local = None;
        let saved = match saved {
            Some(s) => s,
            None => local.insert(std::mem::take(&mut scratch.saved)),
        };
        saved.fingerprint = info.fingerprint;
        saved.shape.clear();
        saved.shape.extend_from_slice(shape);
        saved.stages.resize_with(nstages, SavedStage::default);
        saved.intermediates.resize_with(nstages - 1, Vec::new);
        // A chain whose stages share cells runs fused (two passes in all); synchronized
        // calls run stage by stage (their statistics cross processes per stage).
        let fused = if sync.is_none() {
            chain::cell_len(info, plans, shape)
        } else {
            None
        };
        saved.cell_len = 0;
        saved.cells.clear();
        let r = with_out(&mut out, |out| -> Result<(), NormError> {
            if let Some(len) = fused {
                let call = chain::Fused {
                    info,
                    shape,
                    plans,
                    len,
                };
                chain::forward(call, states, (&xs, out), mode, saved, &mut scratch.chain);
                return Ok(());
            }
            for k in 0..nstages {
                let (done, rest) = saved.intermediates.split_at_mut(k);
                let input: &[T] = if k == 0 { &xs } else { &done[k - 1] };
                let output: &mut [T] = if k + 1 == nstages {
                    out
                } else {
                    // Sized only: the stage writes every value (no zeroing pass per call).
                    let buf = &mut rest[0];
                    buf.resize(input.len(), T::zero());
                    buf
                };
                let call = StageCall {
                    info,
                    k,
                    plan: &plans[k],
                    sync,
                };
                let (state, saved_k) = (&mut states[k], &mut saved.stages[k]);
                run(call, state, (input, output), mode, saved_k, scratch)?;
            }
            Ok(())
        });
        if let Some(s) = local {
            scratch.saved = s;
        }
        r
    })
}

/// Backward pass into `args.dx` and `args.grads` (one entry per stage).
#[inline]
pub fn backward_into<T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    args: BackwardArgs<'_, T, D>,
) -> Result<(), NormError> {
    backward_with(info, states, args.into_dyn(), stage::backward)
}

/// [`backward_into`] with `run` as the backward pass of each stage (see [`forward_with`]).
pub(crate) fn backward_with<T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    args: BackwardArgs<'_, T, D>,
    run: StageBackward<T>,
) -> Result<(), NormError> {
    let BackwardArgs {
        x,
        dy,
        saved,
        mut dx,
        grads,
        sync,
    } = args;
    if T::WIDE {
        return crate::widen::backward_into(
            (info, sync),
            states,
            (x, dy),
            saved,
            dx,
            grads,
            |st, (x, dy), saved, dx, grads| {
                let args = BackwardArgs {
                    x,
                    dy,
                    saved,
                    dx,
                    grads,
                    sync,
                };
                backward_into(info, st, args)
            },
        );
    }
    let shape = x.shape();
    let purpose = (Purpose::Backward, sync.is_some());
    checked(info, states, shape, purpose, |states, plans, scratch| {
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
        let nstages = states.len();
        let consistent = saved.stages.len() == nstages
            && saved.intermediates.len() + 1 == nstages
            && (0..nstages).all(|k| {
                let p = &plans[k];
                let s = &saved.stages[k];
                // Switchable Normalization checks its own (per-alternative) statistics.
                !info.spec.stages[k].switch.is_empty()
                    || s.stats.len() == p.groups && (s.synced || s.count == p.group_len)
            });
        if !consistent {
            return Err(bad("its statistics do not match this layer".to_string()));
        }
        if grads.len() != nstages {
            return Err(NormError::Unsupported {
                layer: info.name.to_string(),
                reason: format!("{} gradient slots passed for {nstages} stages", grads.len()),
            });
        }
        if saved.cell_len > 0 {
            let fused_ok = saved.cells.len().checked_mul(saved.cell_len) == Some(x.len())
                && chain::cell_len(info, plans, shape) == Some(saved.cell_len);
            if !fused_ok {
                return Err(bad("its statistics do not match this layer".to_string()));
            }
            let synced = info
                .spec
                .stages
                .iter()
                .zip(&saved.stages)
                .any(|(st, sv)| check::syncs(info.spec, st) && !sv.fixed);
            if sync.is_some() && synced {
                return Err(bad("it comes from forward, not forward_sync".to_string()));
            }
        }
        let xs = contiguous(&x);
        let dys = contiguous(&dy);
        with_out(&mut dx, |dx| -> Result<(), NormError> {
            if info.spec.stages[0].mask != 0 {
                let (st, g) = (&states[0], &mut grads[0]);
                let call = StageCall {
                    info,
                    k: 0,
                    plan: &plans[0],
                    sync,
                };
                let io = BackwardIo {
                    x: &xs,
                    dy: &dys,
                    dx,
                };
                return crate::masked::backward(call, st, io, saved, g);
            }
            if saved.cell_len > 0 {
                let call = chain::Fused {
                    info,
                    shape,
                    plans,
                    len: saved.cell_len,
                };
                let io = BackwardIo {
                    x: &xs,
                    dy: &dys,
                    dx,
                };
                chain::backward(call, states, io, saved, grads, &mut scratch.chain);
                return Ok(());
            }
            let mut up = std::mem::take(&mut scratch.up);
            let mut down = std::mem::take(&mut scratch.down);
            for k in (0..nstages).rev() {
                let input: &[T] = if k == 0 {
                    &xs
                } else {
                    &saved.intermediates[k - 1]
                };
                let upstream: &[T] = if k + 1 == nstages { &dys } else { &up };
                let call = StageCall {
                    info,
                    k,
                    plan: &plans[k],
                    sync,
                };
                let (st, sv, g) = (&states[k], &saved.stages[k], &mut grads[k]);
                let io = |dx| BackwardIo {
                    x: input,
                    dy: upstream,
                    dx,
                };
                let r = if k == 0 {
                    run(call, st, io(dx), sv, g, scratch)
                } else {
                    // Sized only: the stage writes every value of dx.
                    down.resize(input.len(), T::zero());
                    let r = run(call, st, io(&mut down), sv, g, scratch);
                    std::mem::swap(&mut up, &mut down);
                    r
                };
                if r.is_err() {
                    scratch.up = up;
                    scratch.down = down;
                    return r;
                }
            }
            scratch.up = up;
            scratch.down = down;
            Ok(())
        })
    })
}

/// The statistics of the first stage of the layer on `x` (the rank is erased here).
#[inline]
pub fn stats<T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    x: ArrayView<'_, T, D>,
) -> Result<Moments<T>, NormError> {
    stats_dyn(info, states, x.into_dyn())
}

/// [`stats`] on a dynamic-rank view.
pub(crate) fn stats_dyn<T: Float>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    x: ArrayView<'_, T, IxDyn>,
) -> Result<Moments<T>, NormError> {
    if T::WIDE {
        return crate::widen::stats(states, x, |st, x| stats(info, st, x));
    }
    let shape = x.shape();
    checked(
        info,
        states,
        shape,
        (Purpose::Stats, false),
        |_, plans, _| moments_of(info, &plans[0], shape, &x),
    )
}

/// The statistics of the first stage on `x`, with its plan.
fn moments_of<T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    plan: &crate::plan::Plan,
    shape: &[usize],
    x: &ArrayView<'_, T, D>,
) -> Result<Moments<T>, NormError> {
    if info.spec.stages[0].unbiased && plan.group_len <= 1 && plan.groups > 0 {
        return Err(NormError::TooFewValues {
            layer: info.name.to_string(),
            per_group: plan.group_len,
            shape: shape.to_vec(),
        });
    }
    let xs = contiguous(x);
    let (mean, var) = stats::moments(info, 0, plan, &xs);
    Ok(Moments { mean, var })
}
