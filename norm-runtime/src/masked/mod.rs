//! Masked statistics (`mask = "N,T"`): the statistics (and the running statistics) use only
//! the positions where a boolean mask, indexed by the mask axes, is `true`; the
//! normalization is applied to every position.
//!
//! A statistics group with no unmasked position has no statistics: its output and its dx
//! are zero (and it adds nothing to the parameter gradients), never NaN. In eval mode with
//! running statistics the mask plays no part (the statistics are fixed).
//!
//! The mask is stored in [`Saved`] by the forward pass (with each group's count of unmasked
//! positions), so `backward` takes the same arguments as for an unmasked layer.
//!
//! The walk: the input is visited row by row, a row being the innermost axis when it is
//! reduced and not a mask axis (padding-aware LayerNorm over `"T,D"` with mask `"N,T"`: one
//! row per token, all of whose values share a group and a mask bit); every row whose mask
//! bit is set is summed by the SIMD row kernel (`RowReduce::row_sums`) and merged into
//! its group (Chan et al.'s pairwise update), a masked row is skipped. Other layouts walk
//! element by element (rows of one value).

use ndarray::{ArrayView, ArrayViewMut, Dimension, IxDyn};
use norm_spec::{Affine, ParamAxis, Spec, Stage, MAX_RANK};

use crate::check::{self, Purpose};
use crate::kernels::elem::RowReduce;
use crate::kernels::exec::Stat;
use crate::plan::Plan;
use crate::state::{values, LayerInfo, Running, StageState};
use crate::stats::{group_stat, running_stats};
use crate::types::{Mode, Saved, SavedStage};
use crate::{Float, NormError};

/// How the input maps onto statistics groups, mask positions and parameters, per axis.
#[derive(Clone)]
struct Walk {
    shape: [usize; MAX_RANK],
    /// Per input axis: stride into the statistics groups (kept axes), the mask and the
    /// affine parameters (0 where the axis does not index them).
    ss: [usize; MAX_RANK],
    ms: [usize; MAX_RANK],
    ps: [usize; MAX_RANK],
    /// With `groups`: the channel axis, the channels per group, and the strides of the
    /// group index into the statistics and the parameters.
    split: Option<(usize, usize, usize, usize)>,
    /// Values per row (the innermost axis, or 1) and the parameter stride along a row.
    row: usize,
    row_ps: usize,
    /// The number of axes walked per row (the rank, or the rank − 1 with a row axis).
    outer: usize,
    /// The outermost axis is kept and walked: its indices own disjoint groups, so the
    /// input splits into independent parts along it.
    splits: bool,
}

/// Row-major strides of `sizes`.
fn strides(sizes: &[usize]) -> Vec<usize> {
    let mut s = vec![1; sizes.len()];
    for k in (0..sizes.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * sizes[k + 1];
    }
    s
}

impl Walk {
    fn new(spec: &Spec, stage: &Stage, shape: &[usize]) -> Walk {
        let rank = shape.len();
        let mut w = Walk {
            shape: [0; MAX_RANK],
            ss: [0; MAX_RANK],
            ms: [0; MAX_RANK],
            ps: [0; MAX_RANK],
            split: None,
            row: 1,
            row_ps: 0,
            outer: rank,
            splits: false,
        };
        w.shape[..rank].copy_from_slice(shape);
        let grouped = |i: usize| stage.groups.is_some() && Some(i) == spec.channel;
        // The statistics space: kept axes in memory order, `G` where `C` is.
        let mut kept: Vec<(usize, usize)> = Vec::new();
        for (i, &n) in shape.iter().enumerate() {
            if grouped(i) {
                kept.push((i, stage.groups.unwrap_or(1)));
            } else if !stage.reduces(i) {
                kept.push((i, n));
            }
        }
        let ks = strides(&kept.iter().map(|k| k.1).collect::<Vec<_>>());
        let mut group_ss = 0;
        for (&(i, _), &s) in kept.iter().zip(&ks) {
            if grouped(i) {
                group_ss = s;
            } else {
                w.ss[i] = s;
            }
        }
        // The mask space.
        let masked: Vec<usize> = (0..rank).filter(|&i| stage.masks(i)).collect();
        let mstr = strides(&masked.iter().map(|&i| shape[i]).collect::<Vec<_>>());
        for (&i, &s) in masked.iter().zip(&mstr) {
            w.ms[i] = s;
        }
        // The parameter space.
        let mut group_ps = 0;
        if let Affine::Axes(axes) = &stage.affine {
            let sizes: Vec<usize> = axes
                .iter()
                .map(|a| norm_spec::shapes::axis_size(stage, *a, shape))
                .collect();
            for (a, s) in axes.iter().zip(strides(&sizes)) {
                match a {
                    ParamAxis::Input(i) => w.ps[*i] = s,
                    ParamAxis::Group => group_ps = s,
                }
            }
        }
        if let (Some(g), Some(c)) = (stage.groups, spec.channel) {
            let within = (shape[c] / g.max(1)).max(1);
            w.split = Some((c, within, group_ss, group_ps));
        }
        if rank > 0 {
            let last = rank - 1;
            if stage.reduces(last) && !stage.masks(last) && !grouped(last) {
                w.row = shape[last];
                w.row_ps = w.ps[last];
                w.outer = last;
            }
        }
        w.splits = w.outer > 0 && !stage.reduces(0) && !grouped(0);
        w
    }

    /// The number of independent parts (the outermost axis's size when it splits, else 1)
    /// and the walk of one part.
    fn parts(&self) -> (usize, Walk) {
        if !self.splits || self.shape[0] <= 1 {
            return (1, self.clone());
        }
        let mut sub = self.clone();
        sub.shape[0] = 1;
        (self.shape[0], sub)
    }

    /// Calls `f(start, group, mask index, parameter offset)` for every row, in memory order.
    fn rows(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let outer = &self.shape[..self.outer];
        if self.row == 0 || outer.contains(&0) {
            return;
        }
        let mut idx = [0usize; MAX_RANK];
        let mut start = 0;
        loop {
            let (mut s, mut m, mut p) = (0, 0, 0);
            for (i, &j) in idx[..self.outer].iter().enumerate() {
                s += j * self.ss[i];
                m += j * self.ms[i];
                p += j * self.ps[i];
            }
            if let Some((c, within, gs, gp)) = self.split {
                if c < self.outer {
                    let g = idx[c] / within;
                    s += g * gs;
                    p += g * gp;
                }
            }
            f(start, s, m, p);
            start += self.row;
            let mut k = self.outer;
            loop {
                if k == 0 {
                    return;
                }
                k -= 1;
                idx[k] += 1;
                if idx[k] < outer[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
    }
}

/// Per group: number of unmasked values, their mean and M2 (Σ(x − mean)², Σx² without
/// centering), merged row by row.
#[derive(Clone, Copy, Default)]
struct Acc {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Acc {
    fn merge(&mut self, center: bool, n: f64, mean: f64, m2: f64) {
        if !center {
            self.n += n;
            self.m2 += m2;
            return;
        }
        let total = self.n + n;
        let d = mean - self.mean;
        self.mean += d * n / total;
        self.m2 += m2 + d * d * self.n * n / total;
        self.n = total;
    }
}

fn unsupported(info: &LayerInfo<'_>, reason: &str) -> NormError {
    NormError::Unsupported {
        layer: info.name.to_string(),
        reason: reason.to_string(),
    }
}

/// The shape the mask must have for an input of `shape`.
fn mask_shape(stage: &Stage, shape: &[usize]) -> Vec<usize> {
    (0..shape.len())
        .filter(|&i| stage.masks(i))
        .map(|i| shape[i])
        .collect()
}

/// The error of a layer without `mask` called with one.
pub(crate) fn no_mask(info: &LayerInfo<'_>) -> NormError {
    unsupported(
        info,
        "this layer has no `mask`: call the forward method without a mask",
    )
}

/// The error of a masked layer called without its mask.
pub(crate) fn needs_mask(info: &LayerInfo<'_>) -> NormError {
    unsupported(
        info,
        "this layer has `mask`: pass the boolean mask (DynNorm: forward_masked)",
    )
}

/// Forward pass of a masked layer (one stage) on `(x, mask)` into `out` (the ranks are
/// erased here, as in `crate::path::forward_into`).
#[inline]
pub fn forward_masked_into<T: Float, D: Dimension, M: Dimension>(
    info: &LayerInfo<'_>,
    states: &mut [StageState<'_, T>],
    (x, mask): (ArrayView<'_, T, D>, ArrayView<'_, bool, M>),
    mode: Mode,
    out: ArrayViewMut<'_, T, D>,
    saved: Option<&mut Saved<T>>,
    sync: Option<&dyn crate::Collective>,
) -> Result<(), NormError> {
    let io = (x.into_dyn(), mask.into_dyn());
    forward_masked_dyn(info, states, io, mode, out.into_dyn(), saved, sync)
}

/// [`forward_masked_into`] on dynamic-rank views.
pub(crate) fn forward_masked_dyn<T: Float>(
    info: &LayerInfo<'_>,
    states: &mut [StageState<'_, T>],
    (x, mask): (ArrayView<'_, T, IxDyn>, ArrayView<'_, bool, IxDyn>),
    mode: Mode,
    mut out: ArrayViewMut<'_, T, IxDyn>,
    saved: Option<&mut Saved<T>>,
    sync: Option<&dyn crate::Collective>,
) -> Result<(), NormError> {
    let spec = info.spec;
    let shape = x.shape();
    if spec.stages.len() != 1 || states.len() != 1 {
        return Err(no_mask(info));
    }
    let stage = &spec.stages[0];
    if stage.mask == 0 {
        return Err(no_mask(info));
    }
    if sync.is_some() {
        return Err(unsupported(
            info,
            "synchronized statistics are not supported with `mask`",
        ));
    }
    if T::WIDE {
        return Err(unsupported(
            info,
            "masked layers run in f32 and f64: convert half-precision data to f32",
        ));
    }
    check::check_input(info, shape)?;
    let plan = check::check(info, 0, &states[0], shape, Purpose::Forward(mode), false)?;
    let shape_error = |what: &str, expected: Vec<usize>, actual: &[usize]| NormError::Shape {
        layer: info.name.to_string(),
        what: what.to_string(),
        expected,
        actual: actual.to_vec(),
    };
    let expected = mask_shape(stage, shape);
    if mask.shape() != expected.as_slice() {
        return Err(shape_error("the mask", expected, mask.shape()));
    }
    if out.shape() != shape {
        return Err(shape_error(
            "the output buffer",
            shape.to_vec(),
            out.shape(),
        ));
    }
    let xs: Vec<T>;
    let xv: &[T] = match x.as_slice() {
        Some(s) => s,
        None => {
            xs = x.iter().copied().collect();
            &xs
        }
    };
    let mut local = Saved::new();
    let saved = saved.unwrap_or(&mut local);
    saved.mask.clear();
    saved.mask.extend(mask.iter().copied());
    let walk = Walk::new(spec, stage, shape);
    let groups = plan.groups;
    let state = &mut states[0];
    let fixed = mode == Mode::Eval && stage.running_stats;
    let mut stats = vec![Stat::default(); groups];
    let mut counts = vec![0usize; groups];
    if fixed {
        let running = state
            .running
            .as_ref()
            .expect("checked: running statistics present");
        running_stats(stage, &plan, running, &mut stats);
        counts.iter_mut().for_each(|c| *c = plan.group_len);
    }
    let gamma = state.gamma.as_ref().map(values);
    let beta = state.beta.as_ref().map(values);
    let external = state.external.as_ref().map(|(s, h)| (values(s), values(h)));
    let affine = Coefs {
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
        external: external.as_ref().map(|(s, h)| (&s[..], &h[..])),
    };
    let uses_two = stage.unbiased || (stage.running_stats && mode == Mode::Train);
    let (parts, sub) = walk.parts();
    let too_few = if xv.is_empty() || groups == 0 {
        false
    } else {
        let (xlen, glen) = (xv.len() / parts, groups / parts);
        let part = |k: usize, y: &mut [T], st: &mut [Stat], cn: &mut [usize]| -> bool {
            let off = Offsets {
                s: k * walk.ss[0],
                m: k * walk.ms[0],
                p: k * walk.ps[0],
            };
            let x = &xv[k * xlen..(k + 1) * xlen];
            let mut bad = false;
            if !fixed {
                let accs = masked_sums(stage, &sub, x, &saved.mask, off, glen);
                for ((acc, st), cn) in accs.iter().zip(st.iter_mut()).zip(cn.iter_mut()) {
                    let n = acc.n as usize;
                    *cn = n;
                    bad |= uses_two && n == 1;
                    if n > 0 {
                        *st = group_stat(stage, acc.mean, acc.m2, n);
                    }
                }
            }
            normalize(&sub, off, x, y, st, cn, &affine);
            bad
        };
        let mut run = |o: &mut [T]| -> bool {
            if parts > 1 && xv.len() >= PARALLEL_MIN {
                use rayon::prelude::*;
                o.par_chunks_mut(xlen)
                    .zip(stats.par_chunks_mut(glen))
                    .zip(counts.par_chunks_mut(glen))
                    .enumerate()
                    .map(|(k, ((y, st), cn))| part(k, y, st, cn))
                    .reduce(|| false, |a, b| a | b)
            } else {
                o.chunks_mut(xlen)
                    .zip(stats.chunks_mut(glen))
                    .zip(counts.chunks_mut(glen))
                    .enumerate()
                    .fold(false, |a, (k, ((y, st), cn))| a | part(k, y, st, cn))
            }
        };
        match out.as_slice_mut() {
            Some(o) => run(o),
            None => {
                let mut tmp = vec![T::zero(); xv.len()];
                let bad = run(&mut tmp);
                out.iter_mut().zip(tmp).for_each(|(o, v)| *o = v);
                bad
            }
        }
    };
    if too_few {
        return Err(NormError::TooFewValues {
            layer: info.name.to_string(),
            per_group: 1,
            shape: shape.to_vec(),
        });
    }
    if mode == Mode::Train {
        if let Some(Running::Mut { mean, var, count }) = state.running.as_mut() {
            update_running(stage, &plan, &stats, &counts, (mean, var, count));
        }
    }
    saved.fingerprint = info.fingerprint;
    saved.shape.clear();
    saved.shape.extend_from_slice(shape);
    saved.stages.resize_with(1, SavedStage::default);
    saved.intermediates.clear();
    saved.cell_len = 0;
    saved.cells.clear();
    saved.counts = counts;
    let sv = &mut saved.stages[0];
    sv.fixed = fixed;
    sv.count = plan.group_len;
    sv.synced = false;
    sv.stats = stats;
    sv.scale.clear();
    if let Some((sc, _)) = &external {
        sv.scale.extend_from_slice(sc);
    }
    Ok(())
}

/// Inputs of at least this many values run their independent parts in parallel (the
/// result does not depend on it: every group is computed by one task, in the same order).
const PARALLEL_MIN: usize = 1 << 16;

/// Where a part starts in the groups, the mask and the parameters.
#[derive(Clone, Copy)]
struct Offsets {
    s: usize,
    m: usize,
    p: usize,
}

/// The affine parameters of a call.
struct Coefs<'a, T> {
    gamma: Option<&'a [T]>,
    beta: Option<&'a [T]>,
    external: Option<(&'a [T], &'a [T])>,
}

/// Per group of a part, the count, mean and M2 of the unmasked values.
fn masked_sums<T: Float>(
    stage: &Stage,
    walk: &Walk,
    x: &[T],
    mask: &[bool],
    off: Offsets,
    groups: usize,
) -> Vec<Acc> {
    let mut accs = vec![Acc::default(); groups];
    let center = stage.center;
    let len = walk.row as f64;
    walk.rows(|start, s, m, _| {
        if !mask[off.m + m] {
            return;
        }
        let row = &x[start..start + walk.row];
        let shift = if center { row[0].to_acc() } else { 0.0 };
        let (sum, sq) = T::row_sums(row, shift);
        let (mean, m2) = if center {
            let d = sum / len;
            let m2 = sq - sum * d;
            (shift + d, if m2 < 0.0 { 0.0 } else { m2 })
        } else {
            (0.0, sq)
        };
        accs[s].merge(center, len, mean, m2);
    });
    accs
}

/// y of a part: (x − μ)/σ·γ + β everywhere, zero in the groups without statistics.
fn normalize<T: Float>(
    walk: &Walk,
    off: Offsets,
    x: &[T],
    out: &mut [T],
    stats: &[Stat],
    counts: &[usize],
    affine: &Coefs<'_, T>,
) {
    walk.rows(|start, s, _, p| {
        let (xr, yr) = (
            &x[start..start + walk.row],
            &mut out[start..start + walk.row],
        );
        if counts[s] == 0 {
            yr.iter_mut().for_each(|y| *y = T::zero());
            return;
        }
        let (m, r) = (T::from_acc(stats[s].mean), T::from_acc(stats[s].rstd));
        match (affine.gamma, affine.external) {
            (Some(g), _) => {
                let p = off.p + p;
                let step = walk.row_ps;
                match (affine.beta, step) {
                    (Some(b), 1) => {
                        let (g, b) = (&g[p..p + xr.len()], &b[p..p + xr.len()]);
                        for (((y, &v), &g), &b) in yr.iter_mut().zip(xr).zip(g).zip(b) {
                            *y = (v - m) * r * g + b;
                        }
                    }
                    (None, 1) => {
                        let g = &g[p..p + xr.len()];
                        for ((y, &v), &g) in yr.iter_mut().zip(xr).zip(g) {
                            *y = (v - m) * r * g;
                        }
                    }
                    _ => {
                        for (j, (y, &v)) in yr.iter_mut().zip(xr).enumerate() {
                            let q = p + j * step;
                            let shift = affine.beta.map_or(T::zero(), |b| b[q]);
                            *y = (v - m) * r * g[q] + shift;
                        }
                    }
                }
            }
            (None, Some((sc, sh))) => {
                let (a, b) = (sc[off.s + s], sh[off.s + s]);
                for (y, &v) in yr.iter_mut().zip(xr) {
                    *y = (v - m) * r * a + b;
                }
            }
            (None, None) => {
                for (y, &v) in yr.iter_mut().zip(xr) {
                    *y = (v - m) * r;
                }
            }
        }
    });
}

/// running ← (1 − m)·running + m·batch: per running slot, the mean over the groups with at
/// least two unmasked values of their mean and unbiased variance (a slot with none keeps
/// its value); `num_batches_tracked` counts the call.
fn update_running<T: Float>(
    stage: &Stage,
    plan: &Plan,
    stats: &[Stat],
    counts: &[usize],
    running: (
        &mut ndarray::ArrayViewMutD<'_, T>,
        &mut ndarray::ArrayViewMutD<'_, T>,
        &mut u64,
    ),
) {
    let (rmean, rvar, count) = running;
    *count += 1;
    let size = rmean.len();
    let mut acc = vec![(0.0f64, 0.0f64, 0usize); size];
    plan.for_each_group(|s, _, r| {
        if counts[s] >= 2 {
            acc[r].0 += stats[s].mean;
            acc[r].1 += stats[s].m2 / (counts[s] as f64 - 1.0);
            acc[r].2 += 1;
        }
    });
    let m = match stage.momentum {
        norm_spec::Momentum::Exponential(m) => m,
        norm_spec::Momentum::Cumulative => 1.0 / *count as f64,
    };
    let blend = |v: &mut T, b: f64| *v = T::from_acc((1.0 - m) * v.to_acc() + m * b);
    for (v, a) in rmean.iter_mut().zip(&acc).filter(|(_, a)| a.2 > 0) {
        blend(v, a.0 / a.2 as f64);
    }
    for (v, a) in rvar.iter_mut().zip(&acc).filter(|(_, a)| a.2 > 0) {
        blend(v, a.1 / a.2 as f64);
    }
}

mod backward;
pub(crate) use backward::backward;
