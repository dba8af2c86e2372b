//! The fused half-precision path of rows with parameters along them: layer norm and RMS
//! norm (γ, β along the row) and group norm (γ, β per channel inside each group), the
//! parameters that do not fold into per-group coefficients (`tiled` takes the others).
//!
//! The statistics groups are contiguous (the kept dims outermost, the reduced ones inner):
//! each task takes a run of groups; per group, its statistics in f32 lanes (two passes:
//! Σx, then Σd and Σd² about the f32 mean, or Σx² uncentered; `fused::row_stats`, half
//! values read into f32 lanes by `kernels::convert::fused`), then its output from the
//! lines read again while the group is in the cache. So the forward statistics are not
//! the f32 layer's (f64 sums) bit for bit, but within 1e-6 of them, the same bits at
//! every level and thread count. Each group is a sequence of lines (the plan's innermost dim)
//! along which the parameter either advances (layer norm) or stays put (group norm: one
//! channel per line). The backward pass does the same with its sums Σγ·dy, Σγ·dy·x̂, and
//! the parameter gradients accumulated per task in f64, merged in task order: results are
//! bit-identical for any number of threads.
//!
//! The elementwise expressions: the forward's `fma(x̂, γ, β)` (`x̂·γ` without β) with
//! `x̂ = fma(x − m, a, b)` (three operations per vector; the statistics are the path's own,
//! so the forward is not the f32 layer's bit for bit anyway), the backward's the f32
//! layers' portable `dy·(c·γ) + ((x − m)·a + b)`, on f32 values, rounded once on the store.

use std::cell::RefCell;

use rayon::prelude::*;

use norm_spec::{Affine, Stage};

use super::tiled;
use crate::check::{self, Purpose};
use crate::kernels::coef;
use crate::kernels::convert::fused;
use crate::kernels::exec::{ShiftedSums, Stat};
use crate::plan::Plan;
use crate::state::{values, LayerInfo, StageState};
use crate::stats::{dx_terms, group_stat, mean_m2, running_stats};
use crate::types::{Mode, Saved, StageGrads};
use crate::Float;

/// Values per task (about; whole groups).
const TASK: usize = 1 << 16;

/// Contiguous groups of `n` values made of `lines` lines of `len`; the parameter offset of
/// line `i` of group `s` is `base[s] + i·ps_outer`, advancing by `ps_line` (0 or 1) along it.
struct Rows {
    n: usize,
    len: usize,
    ps_outer: usize,
    ps_line: usize,
}

impl Rows {
    fn of(plan: &Plan) -> Option<Rows> {
        let dims = &plan.dims[..plan.ndims];
        let nk = dims.iter().take_while(|d| d.ss != 0).count();
        let (kept, reduced) = dims.split_at(nk);
        // Standard layout of the kept dims over the statistics.
        let mut ss = 1;
        for d in kept.iter().rev() {
            if d.ss != ss {
                return None;
            }
            ss *= d.size;
        }
        let (ps_outer, line) = match reduced {
            [line] => (0, *line),
            [r, line] if r.xs == line.size && r.ss == 0 => (r.ps, *line),
            _ => return None,
        };
        let n = plan.group_len;
        let ok = line.xs == 1
            && line.ss == 0
            && line.ps <= 1
            && n > 0
            && plan.groups > 0
            && n.is_multiple_of(line.size)
            && kept.last().is_none_or(|d| d.xs == n)
            && plan.groups.checked_mul(n) == Some(plan.numel);
        ok.then_some(Rows {
            n,
            len: line.size,
            ps_outer,
            ps_line: line.ps,
        })
    }

    fn groups_per_task(&self) -> usize {
        (TASK / self.n).max(1)
    }
}

/// The checked plan and rows of a call the row path takes, or `None`.
fn plan_of<T: Float>(
    info: &LayerInfo<'_>,
    state: &StageState<'_, T>,
    shape: &[usize],
    purpose: Purpose,
) -> Option<(Plan, Rows)> {
    let stage = &info.spec.stages[0];
    if !matches!(stage.affine, Affine::Axes(_)) || state.gamma.is_none() {
        return None;
    }
    check::check_input(info, shape).ok()?;
    let plan = check::check(info, 0, state, shape, purpose, false).ok()?;
    if plan.foldable {
        return None;
    }
    let rows = Rows::of(&plan)?;
    Some((plan, rows))
}

/// The forward pass's buffers, kept per thread between calls (no allocation once warm).
#[derive(Default)]
struct FwdScratch {
    /// γ widened to f32.
    gamma: Vec<f32>,
    /// β widened to f32 (zero without bias).
    beta: Vec<f32>,
    /// Each group's parameter offset.
    base: Vec<usize>,
    /// The groups' statistics when the call keeps no [`Saved`] (else the `Saved`'s own
    /// buffer is filled and handed back to it).
    stats: Vec<Stat>,
}

thread_local! {
    static FWD: RefCell<FwdScratch> = RefCell::new(FwdScratch::default());
}

/// γ and β widened to f32 into `sc` (β zero without bias), and each group's parameter
/// offset.
fn params<T: Float>(state: &StageState<'_, T>, plan: &Plan, sc: &mut FwdScratch) {
    let g = state.gamma.as_ref().map(values).unwrap_or_default();
    super::sized(&mut sc.gamma, g.len());
    T::widen(&g, &mut sc.gamma);
    super::sized(&mut sc.beta, g.len());
    match state.beta.as_ref().map(values) {
        Some(b) if b.len() == g.len() => T::widen(&b, &mut sc.beta),
        _ => sc.beta.fill(0.0),
    }
    super::sized(&mut sc.base, plan.groups);
    plan.for_each_group(|s, p, _| sc.base[s] = p);
}

/// The lines of group `s`: `(start in the group, parameter offset)`.
fn lines(rows: &Rows, base: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    (0..rows.n / rows.len).map(move |i| (i * rows.len, base + i * rows.ps_outer))
}

/// The raw statistics of one group in f32 lanes (`fused::row_stats`: two passes, centered
/// on the group's mean rounded to f32; Σx² only for an uncentered stage).
fn group_sums<T: Float>(stage: &Stage, g: &[T]) -> ShiftedSums {
    let h = tiled::half_bits::<T>();
    let (shift, sum, sq) = fused::row_stats(h.fmt, h.r(g), stage.center);
    ShiftedSums { shift, sum, sq }
}

/// A group's statistics from its raw sums.
fn stat_of(stage: &Stage, raw: ShiftedSums, n: usize) -> Stat {
    let (mean, m2) = mean_m2(stage, raw, n);
    group_stat(stage, mean, m2, n)
}

/// The row path's forward pass, or `None` when the call does not fit it (nothing changed).
pub(crate) fn forward<T: Float>(
    info: &LayerInfo<'_>,
    state: &mut StageState<'_, T>,
    (shape, x, out): (&[usize], &[T], &mut [T]),
    mode: Mode,
    saved: Option<&mut Saved<T>>,
) -> Option<()> {
    let (plan, rows) = plan_of(info, state, shape, Purpose::Forward(mode))?;
    let stage = &info.spec.stages[0];
    let fixed = mode == Mode::Eval && stage.running_stats;
    if fixed && state.running.is_none() {
        return None;
    }
    let mut saved = saved;
    super::with_local(&FWD, |sc| {
        let mut stats = tiled::stats_buffer(saved.as_deref_mut(), &mut sc.stats, plan.groups);
        if let (true, Some(running)) = (fixed, state.running.as_ref()) {
            running_stats(stage, &plan, running, &mut stats);
        }
        params(state, &plan, sc);
        let has_beta = state.beta.is_some();
        run_forward::<T>(stage, (&rows, fixed), sc, (x, out), (&mut stats, has_beta));
        if mode == Mode::Train {
            tiled::update_running(stage, &plan, rows.n, &stats, state.running.as_mut());
        }
        match saved {
            Some(saved) => tiled::fill_saved(info, saved, shape, fixed, rows.n, stats),
            None => sc.stats = stats,
        }
    });
    Some(())
}

/// The tasks of [`forward`]: each group's statistics into `stats` (unless `fixed`: given)
/// and its output, group after group (the group read again from the cache).
fn run_forward<T: Float>(
    stage: &Stage,
    (rows, fixed): (&Rows, bool),
    sc: &FwdScratch,
    (x, out): (&[T], &mut [T]),
    (stats, has_beta): (&mut [Stat], bool),
) {
    let (gamma, beta, base) = (&sc.gamma[..], &sc.beta[..], &sc.base[..]);
    let n = rows.n;
    let per = rows.groups_per_task();
    // x and the output: the pass does not fit the cache. Only lines with γ, β folded into
    // their coefficients have a streaming kernel (`fused::affine_streamed`).
    let stream = rows.ps_line == 0 && tiled::streams(2 * std::mem::size_of_val(x));
    x.par_chunks(per * n)
        .zip(out.par_chunks_mut(per * n))
        .zip(stats.par_chunks_mut(per))
        .enumerate()
        .for_each(|(t, ((xs, os), sts))| {
            let h = tiled::half_bits::<T>();
            let layer_norm =
                !fixed && rows.ps_line == 1 && (rows.n == rows.len || rows.ps_outer == rows.len);
            let s0 = t * per;
            let p = base[s0];
            if layer_norm && base[s0..s0 + sts.len()].iter().all(|&q| q == p) {
                // Layer norm with the task's rows sharing their parameters: all of them in
                // one call where the CPU has the kernel (`fused::params_rows`: each row's
                // first statistics pass in the previous row's affine loop), else row by
                // row below (the same bits).
                let (g, bt) = (&gamma[p..p + n], &beta[p..p + n]);
                let mut stat = |i: usize, (shift, sum, sq): (f64, f64, f64)| {
                    let st = stat_of(stage, ShiftedSums { shift, sum, sq }, n);
                    sts[i] = st;
                    coef(st.mean, st.rstd, 0.0)
                };
                let pr = (g, has_beta.then_some(bt));
                let io = (h.r(xs), h.w(os));
                if fused::params_rows(h.fmt, io, n, pr, stage.center, &mut stat) {
                    return;
                }
            }
            for (i, ((xg, og), st)) in xs.chunks(n).zip(os.chunks_mut(n)).zip(sts).enumerate() {
                let s = t * per + i;
                if !fixed {
                    *st = stat_of(stage, group_sums(stage, xg), n);
                }
                let (m, a, b) = coef(st.mean, st.rstd, 0.0);
                for (o, p) in lines(rows, base[s]) {
                    let len = rows.len;
                    let (xl, ol) = (h.r(&xg[o..o + len]), h.w(&mut og[o..o + len]));
                    if rows.ps_line == 0 {
                        // γ, β folded into the line's coefficients, as the f32 kernel.
                        let (a, b) = (a * gamma[p], b * gamma[p] + beta[p]);
                        fused::affine_streamed(h.fmt, xl, ol, (m, a, b), None, stream);
                    } else {
                        let (g, bt) = (&gamma[p..p + len], &beta[p..p + len]);
                        let pr = Some((g, has_beta.then_some(bt)));
                        fused::affine(h.fmt, xl, ol, (m, a, b), pr);
                    }
                }
            }
            if stream {
                fused::stream_fence();
            }
        });
}

/// The parameter gradients (dγ then dβ, `np` each) summed over one task's groups: a part of
/// [`BackScratch::parts`].
type TaskSums<'a> = &'a mut [f64];

/// Groups per block of the backward sums where several groups share their parameters
/// (layer norm, RMS norm): their dγ, dβ terms are added in group order into one load of
/// the f64 accumulators per vector ([`fused::dsums_rows`]).
const BLOCK: usize = 4;

/// The backward pass's buffers, kept per thread between calls (no allocation once warm).
#[derive(Default)]
struct BackScratch {
    /// γ widened to f32.
    gamma: Vec<f32>,
    /// Each group's parameter offset.
    base: Vec<usize>,
    /// Each task's [`TaskSums`], in task order.
    parts: Vec<f64>,
    /// dγ then dβ: the tasks' sums merged in task order.
    sums: Vec<f64>,
}

thread_local! {
    static SCRATCH: RefCell<BackScratch> = RefCell::new(BackScratch::default());
}

/// What every task of a backward call reads.
struct Back<'a> {
    stage: &'a Stage,
    rows: &'a Rows,
    stats: &'a [Stat],
    fixed: bool,
    gamma: &'a [f32],
    base: &'a [usize],
    /// dx is written with non-temporal stores (`fused::dx_streamed`).
    stream: bool,
}

impl Back<'_> {
    /// Whether groups `s..s + BLOCK` may be summed as one block: γ along their lines, lines
    /// of distinct parameters, and the same parameter offset for all.
    fn blocks(&self, s: usize) -> bool {
        let r = self.rows;
        let distinct = r.n == r.len || r.ps_outer >= r.len;
        let b = &self.base[s..s + BLOCK];
        r.ps_line == 1 && distinct && b.iter().all(|&p| p == b[0])
    }

    /// The sums (Σγ·dy, Σγ·dy·x̂) of groups `s..s + BLOCK` (`xg`, `dyg`: theirs), their
    /// parameter-gradient terms added into `(dg, db)` group after group.
    /// `next`: the values of the task's next groups (prefetched when a group is one line).
    fn block_sums<T: Float>(
        &self,
        s: usize,
        (xg, dyg): ([&[T]; BLOCK], [&[T]; BLOCK]),
        (dg, db): (&mut [f64], &mut [f64]),
        next: (&[T], &[T]),
    ) -> [(f64, f64); BLOCK] {
        let h = tiled::half_bits::<T>();
        let c: [(f32, f32, f32); BLOCK] = std::array::from_fn(|r| {
            let st = self.stats[s + r];
            coef(st.mean, st.rstd, 0.0)
        });
        let mut sums = [(0.0f64, 0.0f64); BLOCK];
        let len = self.rows.len;
        for (o, p) in lines(self.rows, self.base[s]) {
            let xr = xg.map(|g| h.r(&g[o..o + len]));
            let dr = dyg.map(|g| h.r(&g[o..o + len]));
            let g = &self.gamma[p..p + len];
            let acc = (&mut dg[p..p + len], &mut db[p..p + len]);
            let ahead =
                (self.rows.n == len && !next.0.is_empty()).then(|| (h.r(next.0), h.r(next.1)));
            let got = fused::dsums_rows(h.fmt, (xr, dr), c, g, acc, ahead);
            for (a, v) in sums.iter_mut().zip(got) {
                a.0 += v.0;
                a.1 += v.1;
            }
        }
        sums
    }

    /// The sums (Σγ·dy, Σγ·dy·x̂) of group `s`, its parameter-gradient terms added into
    /// `(dg, db)`.
    fn group_sums<T: Float>(
        &self,
        s: usize,
        (xg, dyg): (&[T], &[T]),
        (dg, db): (&mut [f64], &mut [f64]),
    ) -> (f64, f64) {
        let h = tiled::half_bits::<T>();
        let st = self.stats[s];
        let (m, a, b) = coef(st.mean, st.rstd, 0.0);
        let (mut sg, mut sgx) = (0.0f64, 0.0f64);
        let len = self.rows.len;
        for (o, p) in lines(self.rows, self.base[s]) {
            let xd = (h.r(&xg[o..o + len]), h.r(&dyg[o..o + len]));
            if self.rows.ps_line == 0 {
                let (s1, s2) = fused::dsums(h.fmt, xd, (m, a, b), None, None);
                let g = f64::from(self.gamma[p]);
                sg += g * s1;
                sgx += g * s2;
                dg[p] += s2;
                db[p] += s1;
            } else {
                let g = &self.gamma[p..p + len];
                let acc = (&mut dg[p..p + len], &mut db[p..p + len]);
                let (s1, s2) = fused::dsums(h.fmt, xd, (m, a, b), Some(g), Some(acc));
                sg += s1;
                sgx += s2;
            }
        }
        (sg, sgx)
    }

    /// dx of group `s` from its sums `(sg, sgx)`.
    fn group_dx<T: Float>(
        &self,
        s: usize,
        (xg, dyg, og): (&[T], &[T], &mut [T]),
        sums: (f64, f64),
    ) {
        let h = tiled::half_bits::<T>();
        let st = self.stats[s];
        let n = self.rows.n;
        let (c0, c1) = dx_terms(self.stage, &st, n, self.fixed, sums.0, sums.1);
        let (m2, a2, b2) = coef(st.mean, st.rstd * c1, c0);
        let c = st.rstd as f32;
        let len = self.rows.len;
        let dx = if self.stream {
            fused::dx_streamed
        } else {
            fused::dx
        };
        for (o, p) in lines(self.rows, self.base[s]) {
            let (xl, dl) = (h.r(&xg[o..o + len]), h.r(&dyg[o..o + len]));
            let ol = h.w(&mut og[o..o + len]);
            if self.rows.ps_line == 0 {
                let k = (c * self.gamma[p], m2, a2, b2);
                dx(h.fmt, (xl, dl, ol), k, None);
            } else {
                let g = &self.gamma[p..p + len];
                dx(h.fmt, (xl, dl, ol), (c, m2, a2, b2), Some(g));
            }
        }
    }

    /// A task's groups (the first is `s0`): their dx, and their parameter gradients summed
    /// in group order into `part` (dγ then dβ), in blocks of [`BLOCK`] groups where they
    /// share their parameters.
    fn task<T: Float>(&self, s0: usize, (xs, ds, os): (&[T], &[T], &mut [T]), part: TaskSums<'_>) {
        let n = self.rows.n;
        part.fill(0.0);
        let (dg, db) = part.split_at_mut(part.len() / 2);
        let groups = xs.len() / n;
        let mut os = os;
        let mut i = 0;
        while i < groups {
            let s = s0 + i;
            let k = if i + BLOCK <= groups && self.blocks(s) {
                BLOCK
            } else {
                1
            };
            let (xb, dyb) = (&xs[i * n..(i + k) * n], &ds[i * n..(i + k) * n]);
            let (ob, rest) = std::mem::take(&mut os).split_at_mut(k * n);
            os = rest;
            if k == BLOCK {
                let xg: [&[T]; BLOCK] = std::array::from_fn(|r| &xb[r * n..(r + 1) * n]);
                let dyg: [&[T]; BLOCK] = std::array::from_fn(|r| &dyb[r * n..(r + 1) * n]);
                let next = ((i + k) * n).min(xs.len())..((i + 2 * k) * n).min(xs.len());
                let next = (&xs[next.clone()], &ds[next]);
                let sums = self.block_sums(s, (xg, dyg), (&mut *dg, &mut *db), next);
                for (r, og) in ob.chunks_mut(n).enumerate() {
                    self.group_dx(s + r, (xg[r], dyg[r], og), sums[r]);
                }
            } else {
                let sums = self.group_sums(s, (xb, dyb), (&mut *dg, &mut *db));
                self.group_dx(s, (xb, dyb, ob), sums);
            }
            i += k;
        }
        if self.stream {
            fused::stream_fence();
        }
    }
}

/// The row path's backward pass, or `None` when the call does not fit it (nothing changed;
/// the whole-tensor path reports any error). Fixed tasks of whole groups (about [`TASK`]
/// values), each summing its parameter gradients into its own part of the scratch, merged
/// in task order: the same bits for any number of threads.
pub(crate) fn backward<T: Float>(
    info: &LayerInfo<'_>,
    state: &StageState<'_, T>,
    shape: &[usize],
    (x, dy, dx): (&[T], &[T], &mut [T]),
    saved: &Saved<T>,
    grads: &mut [StageGrads<T>],
) -> Option<()> {
    let (plan, rows) = plan_of(info, state, shape, Purpose::Backward)?;
    let sv = tiled::saved_stage(info, &plan, shape, saved, grads.len())?;
    let stage = &info.spec.stages[0];
    let n = rows.n;
    let per = rows.groups_per_task();
    super::with_local(&SCRATCH, |sc| {
        let g = state.gamma.as_ref().map(values).unwrap_or_default();
        let np = g.len();
        super::sized(&mut sc.gamma, np);
        T::widen(&g, &mut sc.gamma);
        super::sized(&mut sc.base, plan.groups);
        plan.for_each_group(|s, p, _| sc.base[s] = p);
        let ntasks = plan.groups.div_ceil(per);
        let stride = (2 * np).max(1);
        super::sized(&mut sc.parts, ntasks * stride);
        let back = Back {
            stage,
            rows: &rows,
            stats: &sv.stats,
            fixed: sv.fixed,
            gamma: &sc.gamma,
            base: &sc.base,
            // x, dy and dx: the pass does not fit the cache.
            stream: tiled::streams(3 * std::mem::size_of_val(x)),
        };
        x.par_chunks(per * n)
            .zip(dy.par_chunks(per * n))
            .zip(dx.par_chunks_mut(per * n))
            .zip(sc.parts.par_chunks_mut(stride))
            .enumerate()
            .for_each(|(t, (((xs, ds), os), part))| {
                back.task(t * per, (xs, ds, os), &mut part[..2 * np]);
            });
        sc.sums.clear();
        sc.sums.resize(2 * np, 0.0);
        for part in sc.parts.chunks(stride) {
            for (a, &v) in sc.sums.iter_mut().zip(&part[..2 * np]) {
                *a += v;
            }
        }
        let (dgamma, dbeta) = sc.sums.split_at_mut(np);
        tiled::fill_param_grads(stage, &plan, &mut grads[0], dgamma, dbeta);
    });
    Some(())
}
