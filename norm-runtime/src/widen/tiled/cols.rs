//! The column layout of the tiled path (`[A, K, 1]`, `A > 1`: BatchNorm1d and channels-last
//! batch norm, one statistics group per column of rows of `K` values), forward and
//! backward, without allocation once warm: the per-call arrays (parameter offsets, shifts,
//! each task's partial sums, the coefficients as arrays, the rotated coefficients of the
//! streaming stores, the parameter gradients' sums) live in a per-thread [`Scratch`] of the
//! calling thread, with one [`ColWork`] (the column kernels' own partial sums) per worker
//! of the pool, grown before each parallel pass (so no task allocates, whichever worker
//! runs it), and the statistics in the caller's `Saved` (its previous vector reused).
//!
//! The arithmetic is that of the rest of the tiled path (the f32 layers' on the widened
//! values): each task (a run of rows fixed by the shape) sums its rows from zero into its
//! part, the parts are added in task order, the groups finished by the same functions. So
//! the results are bit-identical for any number of threads.

use std::cell::RefCell;
use std::sync::Mutex;

use rayon::prelude::*;

use norm_spec::Affine;

use super::{
    fill_param_grads, fill_saved, finish_group, half_bits, offsets, stats_buffer, streams,
    update_running, widen_one, Layout,
};
use crate::kernels::coef;
use crate::kernels::convert::fused::{self, zeroed, ColWork, Streamed};
use crate::kernels::exec::{self, ShiftedSums, Stat};
use crate::plan::Plan;
use crate::state::{values, LayerInfo, StageState};
use crate::stats::{dx_terms, running_stats};
use crate::types::{Mode, Saved, SavedStage, StageGrads};
use crate::Float;

/// Rows per task of the column sums: the f32 layer's chunks of rows where it splits them
/// (`exec::splits`, one unit of `a·k` values), else all of them. The same chunks, so that
/// their f64 sums, and the backward's f32 partial sums (flushed every few rows of a chunk),
/// are added in the same order as the f32 layer's (`tests.rs` compares the bits on inputs
/// of several chunks).
fn sum_rows(lay: Layout) -> usize {
    if exec::splits(1, lay.a * lay.k) {
        exec::chunk_lines(lay.k)
    } else {
        lay.a
    }
}

/// A call's buffers, kept per thread between calls.
#[derive(Default)]
struct Scratch {
    /// Each group's parameter offset.
    base: Vec<usize>,
    /// Each column's shift (forward).
    shift: Vec<f64>,
    /// Each task's partial sums, in task order: `2·K` values per task (Σ(x − h) then
    /// Σ(x − h)², or Σdy then Σdy·x̂).
    parts: Vec<f64>,
    /// The tasks' sums merged in task order (`2·K`).
    sums: Vec<f64>,
    /// Per-column coefficients as arrays of `K`: `m, a, b` (forward, and the backward's
    /// x̂), then the backward's dx coefficients `c, m, a, b`.
    coef: Vec<f32>,
    /// The statistics of a forward that saves none.
    stats: Vec<Stat>,
    /// dγ then dβ (backward).
    grads: Vec<f64>,
    /// The rotated coefficients of a streamed pass.
    stream: Streamed,
    /// The column kernels' buffers, one per worker of the pool ([`Workers`]).
    work: Vec<Mutex<ColWork>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The column kernels' buffers of a parallel pass, one per worker of the current pool.
struct Workers<'a>(&'a [Mutex<ColWork>]);

impl<'a> Workers<'a> {
    /// `work` with one buffer per worker of the current pool, each grown for rows of `k`
    /// columns.
    fn new(work: &'a mut Vec<Mutex<ColWork>>, k: usize) -> Workers<'a> {
        work.resize_with(rayon::current_num_threads(), Default::default);
        for w in work.iter_mut() {
            w.get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .reserve(k);
        }
        Workers(work)
    }

    /// Runs `f` with the buffers of the worker running the task (fresh ones on a thread
    /// outside the pool, which a pass's tasks never run on).
    fn with<R>(&self, f: impl FnOnce(&mut ColWork) -> R) -> R {
        let slot = rayon::current_thread_index().and_then(|i| self.0.get(i));
        match slot.and_then(|m| m.try_lock().ok()) {
            Some(mut w) => f(&mut w),
            None => f(&mut ColWork::default()),
        }
    }
}

/// The column forward (`lay.a > 1`, `lay.b == 1`), or `None` when the call does not fit it
/// (nothing changed then): eval with running statistics and none given.
pub(super) fn forward<T: Float>(
    info: &LayerInfo<'_>,
    state: &mut StageState<'_, T>,
    (plan, lay, shape): (&Plan, Layout, &[usize]),
    (x, out): (&[T], &mut [T]),
    mode: Mode,
    saved: Option<&mut Saved<T>>,
) -> Option<()> {
    let stage = &info.spec.stages[0];
    let fixed = mode == Mode::Eval && stage.running_stats;
    if fixed && state.running.is_none() {
        return None;
    }
    let (n, k) = (plan.group_len, lay.k);
    let gamma = state.gamma.as_ref().map(values);
    let beta = state.beta.as_ref().map(values);
    let h = half_bits::<T>();
    let rows = lay.rows_per_task() * k;
    let mut saved = saved;
    crate::widen::with_local(&SCRATCH, |sc| {
        let mut stats = stats_buffer(saved.as_deref_mut(), &mut sc.stats, k);
        if gamma.is_some() {
            offsets(plan, &mut sc.base);
        }
        let affine = |s: usize| -> (f64, f64) {
            match &gamma {
                Some(g) => {
                    let p = sc.base[s];
                    (g[p].to_acc(), beta.as_ref().map_or(0.0, |b| b[p].to_acc()))
                }
                None => (1.0, 0.0),
            }
        };
        let coefs = zeroed(&mut sc.coef, 3 * k);
        let (m, rest) = coefs.split_at_mut(k);
        let (a, b) = rest.split_at_mut(k);
        if let (true, Some(running)) = (fixed, state.running.as_ref()) {
            running_stats(stage, plan, running, &mut stats);
            for (s, st) in stats.iter().enumerate() {
                let (g, sh) = affine(s);
                (m[s], a[s], b[s]) = coef(st.mean, st.rstd * g, sh);
            }
        } else {
            let shift = zeroed(&mut sc.shift, k);
            if stage.center {
                for (v, &xv) in shift.iter_mut().zip(&x[..k]) {
                    *v = f64::from(widen_one(xv));
                }
            }
            let per = sum_rows(lay);
            let parts = zeroed(&mut sc.parts, lay.a.div_ceil(per) * 2 * k);
            let work = Workers::new(&mut sc.work, k);
            x.par_chunks(per * k)
                .zip(parts.par_chunks_mut(2 * k))
                .for_each(|(xs, part)| {
                    let (sum, sq) = part.split_at_mut(k);
                    work.with(|w| fused::col_sums_with(h.fmt, h.r(xs), shift, (sum, sq), w));
                });
            let sums = zeroed(&mut sc.sums, 2 * k);
            for part in parts.chunks(2 * k) {
                for (s, &v) in sums.iter_mut().zip(part) {
                    *s += v;
                }
            }
            let (sum, sq) = sums.split_at(k);
            for s in 0..k {
                let raw = ShiftedSums {
                    shift: shift[s],
                    sum: sum[s],
                    sq: sq[s],
                };
                let (st, c) = finish_group(info, raw, n, affine(s));
                stats[s] = st;
                (m[s], a[s], b[s]) = c;
            }
        }
        let cc = (&*m, &*a, &*b);
        // The streaming kernel's rotated coefficients, once per pass (the tasks' chunks are
        // whole rows of `k` columns from `out`'s start).
        let stream = streams(2 * std::mem::size_of_val(x)) && sc.stream.set(h.r(out), cc, None);
        let stream = stream.then_some(&sc.stream);
        x.par_chunks(rows)
            .zip(out.par_chunks_mut(rows))
            .for_each(|(xs, os)| fused::col_affine(h.fmt, h.r(xs), h.w(os), cc, stream));
        if mode == Mode::Train {
            update_running(stage, plan, n, &stats, state.running.as_mut());
        }
        match saved {
            Some(saved) => fill_saved(info, saved, shape, fixed, n, stats),
            None => sc.stats = stats,
        }
    });
    Some(())
}

/// The column backward (`lay.a > 1`, `lay.b == 1`) with the statistics of `sv`: the sums
/// Σdy, Σdy·x̂ per column (tasks of rows, merged in task order), the dx coefficients, then
/// dx, written with non-temporal stores when x, dy and dx do not fit the cache
/// ([`streams`]).
pub(super) fn backward<T: Float>(
    info: &LayerInfo<'_>,
    state: &StageState<'_, T>,
    (plan, lay): (&Plan, Layout),
    (x, dy, dx): (&[T], &[T], &mut [T]),
    sv: &SavedStage<T>,
    grads: &mut [StageGrads<T>],
) {
    let stage = &info.spec.stages[0];
    let (n, k) = (sv.count, lay.k);
    let gamma = state.gamma.as_ref().map(values);
    let h = half_bits::<T>();
    let rows = lay.rows_per_task() * k;
    crate::widen::with_local(&SCRATCH, |sc| {
        if gamma.is_some() {
            offsets(plan, &mut sc.base);
        }
        let base = &sc.base;
        let scale = |s: usize| match &gamma {
            Some(g) => g[base[s]].to_acc(),
            None => 1.0,
        };
        // x̂ = (x − m)·a + b per column, then dx = dy·c + (x − m')·a' + b'.
        let coefs = zeroed(&mut sc.coef, 7 * k);
        let (xhat, dxc) = coefs.split_at_mut(3 * k);
        let (xm, rest) = xhat.split_at_mut(k);
        let (xa, xb) = rest.split_at_mut(k);
        for (s, st) in sv.stats.iter().enumerate() {
            (xm[s], xa[s], xb[s]) = coef(st.mean, st.rstd, 0.0);
        }
        let xc = (&*xm, &*xa, &*xb);
        let per = sum_rows(lay);
        let parts = zeroed(&mut sc.parts, lay.a.div_ceil(per) * 2 * k);
        let work = Workers::new(&mut sc.work, k);
        x.par_chunks(per * k)
            .zip(dy.par_chunks(per * k))
            .zip(parts.par_chunks_mut(2 * k))
            .for_each(|((xs, ds), part)| {
                let (sg, sgx) = part.split_at_mut(k);
                let xd = (h.r(xs), h.r(ds));
                work.with(|w| fused::col_dsums_with(h.fmt, xd, xc, (sg, sgx), w));
            });
        let sums = zeroed(&mut sc.sums, 2 * k);
        for part in parts.chunks(2 * k) {
            for (s, &v) in sums.iter_mut().zip(part) {
                *s += v;
            }
        }
        let (sg, sgx) = sums.split_at(k);
        let (c, rest) = dxc.split_at_mut(k);
        let (m, rest) = rest.split_at_mut(k);
        let (a, b) = rest.split_at_mut(k);
        for s in 0..k {
            let st = sv.stats[s];
            let gs = scale(s);
            let (c0, c1) = dx_terms(stage, &st, n, sv.fixed, gs * sg[s], gs * sgx[s]);
            (m[s], a[s], b[s]) = coef(st.mean, st.rstd * c1, c0);
            c[s] = (st.rstd * gs) as f32;
        }
        let (cc, cols) = (&*c, (&*m, &*a, &*b));
        // x, dy and dx: whether the pass does not fit the cache.
        let stream =
            streams(3 * std::mem::size_of_val(x)) && sc.stream.set(h.r(dx), cols, Some(cc));
        let stream = stream.then_some(&sc.stream);
        x.par_chunks(rows)
            .zip(dy.par_chunks(rows))
            .zip(dx.par_chunks_mut(rows))
            .for_each(|((xs, ds), os)| {
                let io = (h.r(xs), h.r(ds), h.w(os));
                fused::col_dx_streamed(h.fmt, io, cc, cols, stream);
            });
        let params = plan.param_shape.numel();
        let (dgamma, dbeta) = zeroed(&mut sc.grads, 2 * params).split_at_mut(params);
        if matches!(stage.affine, Affine::Axes(_)) {
            plan.for_each_group(|s, p, _| {
                dgamma[p] += sgx[s];
                dbeta[p] += sg[s];
            });
        }
        fill_param_grads(stage, plan, &mut grads[0], dgamma, dbeta);
    });
}

#[cfg(test)]
mod tests;
