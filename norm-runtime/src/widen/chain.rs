//! The fused half-precision path of chains (Batch-Channel Normalization): the f32 layer's
//! fused chain (`crate::chain`: per-cell sums, every stage's statistics from them in f64,
//! then one elementwise pass with per-cell coefficients), with its two passes reading the
//! half tensor directly and writing the half output once (`kernels::convert::fused`).
//!
//! The bookkeeping is `chain::forward_by` / `chain::backward_by` with f32 coefficients, so
//! the statistics, the saved cell moments and the coefficients are the f32 layer's; the
//! passes use the kernels whose sums are those of the f32 row kernels bit for bit. The
//! intermediate (the batch norm's output feeding the group norm) exists only as per-cell
//! coefficients in f64, never rounded. Running statistics are updated in f32 and rounded
//! once, and the parameter gradients are rounded through f32, as the f32 layer's.
//!
//! Blocks (cells that no stage's statistics group crosses, `chain::layout`) are tasks: a
//! block's sums, its finish and its output run back to back, so the second pass reads the
//! block from the core's cache. The output cells of a block are not contiguous; they are
//! handed to the block's task as disjoint slices. Every sum is taken per cell in a fixed
//! order: results do not depend on the number of threads.

use rayon::prelude::*;

use super::tiled::{self, half_bits, widen_one};
use crate::chain::{self, BackwardPasses, Block, DxPass, ForwardPasses, Fused};
use crate::check::{self, Purpose};
use crate::kernels::cells::{BlockFinish, Cells, CoefOut};
use crate::kernels::convert::fused::{self, Fmt};
use crate::kernels::exec::ShiftedSums;
use crate::plan::Plan;
use crate::scratch::{with_scratch, Scratch};
use crate::state::{LayerInfo, StageState};
use crate::types::{Mode, Saved, SavedStage, StageGrads};
use crate::Float;

/// Cells per task of the passes over all cells (one block).
const TASK: usize = 1 << 16;

/// The plans of every stage and the cell length, when the call takes the fused chain
/// (`None`: the whole-tensor path runs it and reports any error).
fn plans_of<T: Float>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    shape: &[usize],
    purpose: Purpose,
) -> Option<(Vec<Plan>, usize)> {
    let spec = info.spec;
    if !spec.chain || states.len() != spec.stages.len() || spec.stages.len() < 2 {
        return None;
    }
    check::check_input(info, shape).ok()?;
    let plans = states
        .iter()
        .enumerate()
        .map(|(k, st)| check::check(info, k, st, shape, purpose, false).ok())
        .collect::<Option<Vec<Plan>>>()?;
    let len = chain::cell_len(info, &plans, shape)?;
    Some((plans, len))
}

/// The cells of `data` (lines of `len`) handed out per block: block `j` gets the cells of
/// its slots, in slot order (`order` is a permutation, so the slices are disjoint).
fn by_block<'d>(data: &'d mut [u16], cells: &Cells<'_>) -> Vec<Vec<&'d mut [u16]>> {
    let mut lines: Vec<Option<&mut [u16]>> = data.chunks_mut(cells.len).map(Some).collect();
    cells
        .order
        .chunks(cells.block)
        .map(|slots| {
            slots
                .iter()
                .map(|&k| lines[k].take().expect("a permutation of the cells"))
                .collect()
        })
        .collect()
}

/// The shifted sums of one cell (shift: its first value).
#[inline]
fn cell_sums(fmt: Fmt, x: &[u16], shift: f32) -> ShiftedSums {
    let shift = f64::from(shift);
    let (sum, sq) = fused::sums(fmt, x, shift);
    ShiftedSums { shift, sum, sq }
}

/// The forward passes over half data.
struct HalfForward<'d, T> {
    x: &'d [T],
    out: &'d mut [T],
}

impl<T: Float> ForwardPasses<f32> for HalfForward<'_, T> {
    fn run(
        self,
        cells: &Cells<'_>,
        raws: &mut [ShiftedSums],
        (m, a, b): CoefOut<'_, f32>,
        blocks: &mut [Block],
        finish: &BlockFinish<'_, f32, Block>,
    ) {
        let HalfForward { x: xt, out } = self;
        let h = half_bits::<T>();
        let (fmt, len, bs) = (h.fmt, cells.len, cells.block);
        let x = h.r(xt);
        let out = h.w(out);
        let first = |k: usize| widen_one(xt[k * len]);
        if bs == cells.order.len() {
            // One block (cells in memory order): each pass in parallel over the cells.
            let per = (TASK / len).max(1);
            raws.par_chunks_mut(per).enumerate().for_each(|(t, rs)| {
                for (j, r) in rs.iter_mut().enumerate() {
                    let k = t * per + j;
                    *r = cell_sums(fmt, &x[k * len..(k + 1) * len], first(k));
                }
            });
            finish(0, &mut blocks[0], raws, (&mut *m, &mut *a, &mut *b));
            x.par_chunks(per * len)
                .zip(out.par_chunks_mut(per * len))
                .enumerate()
                .for_each(|(t, (xs, os))| {
                    let lines = xs.chunks(len).zip(os.chunks_mut(len));
                    for (j, (xl, ol)) in lines.enumerate() {
                        let i = t * per + j;
                        fused::affine(fmt, xl, ol, (m[i], a[i], b[i]), None);
                    }
                });
            return;
        }
        let mut outs = by_block(out, cells);
        outs.par_iter_mut()
            .zip(raws.par_chunks_mut(bs))
            .zip(m.par_chunks_mut(bs))
            .zip(a.par_chunks_mut(bs))
            .zip(b.par_chunks_mut(bs))
            .zip(blocks.par_iter_mut())
            .enumerate()
            .for_each(|(j, (((((ys, rs), m), a), b), blk))| {
                let slots = &cells.order[j * bs..(j + 1) * bs];
                for (&k, r) in slots.iter().zip(rs.iter_mut()) {
                    *r = cell_sums(fmt, &x[k * len..(k + 1) * len], first(k));
                }
                finish(j, blk, rs, (&mut *m, &mut *a, &mut *b));
                for (i, (&k, y)) in slots.iter().zip(ys.iter_mut()).enumerate() {
                    let xl = &x[k * len..(k + 1) * len];
                    fused::affine(fmt, xl, y, (m[i], a[i], b[i]), None);
                }
            });
    }
}

/// The backward passes over half data.
struct HalfBackward<'d, T> {
    x: &'d [T],
    dy: &'d [T],
    dx: &'d mut [T],
}

impl<T: Float> BackwardPasses<f32> for HalfBackward<'_, T> {
    fn run(self, pass: DxPass<'_, f32>) {
        let DxPass {
            cells,
            xm,
            sums: (s1, s2),
            coefs: (c, a, b),
            blocks,
            finish,
            ..
        } = pass;
        let HalfBackward { x, dy, dx } = self;
        let h = half_bits::<T>();
        let (fmt, len, bs) = (h.fmt, cells.len, cells.block);
        let (x, dy, dx) = (h.r(x), h.r(dy), h.w(dx));
        let line = |k: usize| k * len..(k + 1) * len;
        // Σdy and Σdy·(x − m) of the cell at slot `i`.
        let sums = |k: usize, i: usize| {
            let r = line(k);
            fused::dsums(fmt, (&x[r.clone()], &dy[r]), (xm[i], 1.0, 0.0), None, None)
        };
        if bs == cells.order.len() {
            let per = (TASK / len).max(1);
            s1.par_chunks_mut(per)
                .zip(s2.par_chunks_mut(per))
                .enumerate()
                .for_each(|(t, (p1, p2))| {
                    for (j, (v1, v2)) in p1.iter_mut().zip(p2.iter_mut()).enumerate() {
                        let k = t * per + j;
                        (*v1, *v2) = sums(k, k);
                    }
                });
            finish(0, &mut blocks[0], (s1, s2), (&mut *c, &mut *a, &mut *b));
            dx.par_chunks_mut(per * len)
                .enumerate()
                .for_each(|(t, os)| {
                    for (j, ol) in os.chunks_mut(len).enumerate() {
                        let k = t * per + j;
                        let r = line(k);
                        let io = (&x[r.clone()], &dy[r], ol);
                        fused::dx(fmt, io, (c[k], xm[k], a[k], b[k]), None);
                    }
                });
            return;
        }
        let mut outs = by_block(dx, cells);
        outs.par_iter_mut()
            .zip(s1.par_chunks_mut(bs))
            .zip(s2.par_chunks_mut(bs))
            .zip(c.par_chunks_mut(bs))
            .zip(a.par_chunks_mut(bs))
            .zip(b.par_chunks_mut(bs))
            .zip(blocks.par_iter_mut())
            .enumerate()
            .for_each(|(j, ((((((ds, p1), p2), c), a), b), blk))| {
                let base = j * bs;
                let slots = &cells.order[base..base + bs];
                for (i, &k) in slots.iter().enumerate() {
                    (p1[i], p2[i]) = sums(k, base + i);
                }
                finish(j, blk, (&*p1, &*p2), (&mut *c, &mut *a, &mut *b));
                for (i, (&k, d)) in slots.iter().zip(ds.iter_mut()).enumerate() {
                    let r = line(k);
                    let io = (&x[r.clone()], &dy[r], &mut **d);
                    fused::dx(fmt, io, (c[i], xm[base + i], a[i], b[i]), None);
                }
            });
    }
}

/// The fused forward pass of a half-precision chain, or `None` when the call does not fit
/// it (nothing changed then).
pub(super) fn forward<T: Float>(
    info: &LayerInfo<'_>,
    states: &mut [StageState<'_, T>],
    (shape, x, out): (&[usize], &[T], &mut [T]),
    mode: Mode,
    saved: Option<&mut Saved<T>>,
) -> Option<()> {
    let (plans, len) = plans_of(info, states, shape, Purpose::Forward(mode))?;
    let nstages = states.len();
    let mut local = None;
    let saved = match saved {
        Some(s) => s,
        None => local.insert(Saved::new()),
    };
    saved.fingerprint = info.fingerprint;
    saved.shape.clear();
    saved.shape.extend_from_slice(shape);
    saved.stages.resize_with(nstages, SavedStage::default);
    saved.intermediates.resize_with(nstages - 1, Vec::new);
    saved.mask.clear();
    saved.counts.clear();
    let call = Fused {
        info,
        shape,
        plans: &plans,
        len,
    };
    with_scratch(|s: &mut Scratch<f32>| {
        chain::forward_by(
            call,
            states,
            mode,
            saved,
            &mut s.chain,
            HalfForward { x, out },
        );
    });
    if mode == Mode::Train {
        for (k, stage) in info.spec.stages.iter().enumerate() {
            let sv = &saved.stages[k];
            let running = states[k].running.as_mut();
            tiled::update_running(stage, &plans[k], sv.count, &sv.stats, running);
        }
    }
    Some(())
}

/// The fused backward pass of a half-precision chain, or `None` when the call does not fit
/// it (nothing changed then; the whole-tensor path reports any error).
pub(super) fn backward<T: Float>(
    info: &LayerInfo<'_>,
    states: &[StageState<'_, T>],
    shape: &[usize],
    (x, dy, dx): (&[T], &[T], &mut [T]),
    saved: &Saved<T>,
    grads: &mut [StageGrads<T>],
) -> Option<()> {
    let (plans, len) = plans_of(info, states, shape, Purpose::Backward)?;
    let nstages = states.len();
    // The checks of the f32 backward pass on a fused chain's `Saved`.
    let consistent = saved.fingerprint == info.fingerprint
        && saved.shape == shape
        && saved.stages.len() == nstages
        && saved.intermediates.len() + 1 == nstages
        && grads.len() == nstages
        && saved.cell_len == len
        && saved.cells.len().checked_mul(len) == Some(x.len())
        && saved.mask.is_empty()
        && saved
            .stages
            .iter()
            .zip(&plans)
            .all(|(s, p)| s.stats.len() == p.groups && !s.synced && s.count == p.group_len);
    if !consistent {
        return None;
    }
    let call = Fused {
        info,
        shape,
        plans: &plans,
        len,
    };
    with_scratch(|s: &mut Scratch<f32>| {
        let passes = HalfBackward { x, dy, dx };
        chain::backward_by(call, states, saved, grads, &mut s.chain, passes);
    });
    Some(())
}
