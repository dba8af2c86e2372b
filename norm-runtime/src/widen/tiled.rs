//! The fused half-precision path: the half tensor is read and the half output written once
//! by the kernels of `kernels::convert::fused`, which load half values into f32 lanes and
//! round the results on the store (no f32 copy of the tensor or of a tile).
//!
//! It covers the single-stage declarations whose plan is one kept dim between reduced ones,
//! the input viewed as `[A, K, B]` (statistics group `k` = every `(a, k, b)`): NCHW batch
//! norm (`[N, C, H·W]`), BatchNorm1d and channels-last batch norm (`[N…, C, 1]`), and rows
//! (`[1, K, B]`: instance norm, and layer/group norm without affine parameters), with
//! parameters that fold into per-group coefficients (γ, β per channel) or none, with or
//! without running statistics, in train and eval mode. Everything else (parameters along the
//! line, external affine, chains, variants, synchronized calls) runs through the whole-tensor
//! conversion of `super`.
//!
//! * Rows (`A = 1`): each task takes a run of groups; per group, the shifted sums of its
//!   line, its statistics, then its output from the line read again (the group is in the
//!   cache by then).
//! * `A > 1`: each task takes a run of the outer index `a` and returns per-group partial
//!   sums, merged in task order; a second parallel pass reads the input again and writes
//!   the output (lines; whole rows of `K` columns when `B = 1`: `cols.rs`, allocation-free,
//!   its sums in the f32 layer's chunks of rows).
//!
//! Statistics and backward sums are accumulated in f64 (`fused::sums`, `dsums`,
//! `col_sums`, `col_dsums`), shifted by the first value of each group, and finished with the same functions as the f32 layers
//! (`stats::mean_m2`, `group_stat`, `dx_terms`, `kernels::coef`). Task boundaries depend only
//! on the shape, so results are bit-identical for any number of threads.

use std::cell::RefCell;

use half::slice::HalfFloatSliceExt;
use ndarray::ArrayViewMut;
use rayon::prelude::*;

use norm_spec::{Affine, Stage};

use super::narrow_into;
use crate::check::{self, Purpose};
use crate::float::sealed::{Sealed, TypeMap};
use crate::kernels::coef;
use crate::kernels::convert::fused::{self, zeroed, Fmt};
use crate::kernels::exec::{ShiftedSums, Stat};
use crate::plan::Plan;
use crate::state::{values, LayerInfo, Running, StageState};
use crate::stats::{dx_terms, fill_grad, group_stat, mean_m2, running_stats, train_running};
use crate::types::{Mode, Saved, SavedStage, StageGrads};
use crate::Float;

mod cols;

/// Elements per task (about; whole groups or whole slabs of `a`).
const TASK: usize = 1 << 16;

/// The input as `[A, K, B]`: `K` statistics groups, each the `A·B` values `(a, k, b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Outer reduced extent.
    pub a: usize,
    /// Statistics groups.
    pub k: usize,
    /// Inner reduced extent (contiguous).
    pub b: usize,
}

impl Layout {
    /// The layout of `plan` when it is `[A, K, B]` with one kept dim (or none).
    pub(crate) fn of(plan: &Plan) -> Option<Layout> {
        let dims = &plan.dims[..plan.ndims];
        let kept = |d: &crate::plan::Dim| d.ss != 0;
        let lay = match dims {
            [r] if !kept(r) && r.xs == 1 => Layout {
                a: 1,
                k: 1,
                b: r.size,
            },
            [k, r] if kept(k) && !kept(r) && r.xs == 1 && k.ss == 1 && k.xs == r.size => Layout {
                a: 1,
                k: k.size,
                b: r.size,
            },
            [o, k, r]
                if !kept(o)
                    && kept(k)
                    && !kept(r)
                    && r.xs == 1
                    && k.ss == 1
                    && k.xs == r.size
                    && o.xs == k.size * r.size =>
            {
                Layout {
                    a: o.size,
                    k: k.size,
                    b: r.size,
                }
            }
            [o, k] if !kept(o) && kept(k) && k.xs == 1 && k.ss == 1 && o.xs == k.size => Layout {
                a: o.size,
                k: k.size,
                b: 1,
            },
            _ => return None,
        };
        (lay.k == plan.groups && lay.a * lay.b == plan.group_len && lay.k > 0 && lay.a > 0)
            .then_some(lay)
            .filter(|l| l.b > 0)
    }

    /// Outer indices per task of the `A > 1` passes (fixed by the shape).
    fn rows_per_task(&self) -> usize {
        (TASK / (self.k * self.b).max(1)).max(1)
    }

    /// Groups per task of the row passes (fixed by the shape).
    fn groups_per_task(&self) -> usize {
        (TASK / self.b.max(1)).max(1)
    }
}

/// Whether the stage (the layer's only one) can take the fused paths at all: no variant
/// (`tlu`, `ghost`, `renorm`, mask, Switchable Normalization), no external affine, not
/// synchronized.
pub(crate) fn eligible(info: &LayerInfo<'_>, sync: bool) -> bool {
    let spec = info.spec;
    let [st] = &spec.stages[..] else {
        return false;
    };
    !sync
        && !spec.chain
        && !st.tlu
        && st.ghost.is_none()
        && st.renorm.is_none()
        && st.mask == 0
        && st.switch.is_empty()
        && !matches!(st.affine, Affine::External)
}

/// The checked plan of the tiled path, or `None` (the caller runs the whole-tensor path,
/// which reports any error).
fn plan_of<T: Float>(
    info: &LayerInfo<'_>,
    state: &StageState<'_, T>,
    shape: &[usize],
    purpose: Purpose,
) -> Option<(Plan, Layout)> {
    check::check_input(info, shape).ok()?;
    let plan = check::check(info, 0, state, shape, purpose, false).ok()?;
    let lay = Layout::of(&plan)?;
    let stage = &info.spec.stages[0];
    // Parameters must fold into the groups' coefficients.
    if matches!(stage.affine, Affine::Axes(_)) && !plan.foldable {
        return None;
    }
    Some((plan, lay))
}

/// Each statistics group's parameter offset (folded γ/β) into `base`.
fn offsets(plan: &Plan, base: &mut Vec<usize>) {
    base.clear();
    base.resize(plan.groups, 0);
    plan.for_each_group(|s, off, _| base[s] = off);
}

/// The line paths' buffers (rows, and `A > 1` layouts of lines), kept per thread between
/// calls: no allocation once warm.
#[derive(Default)]
struct Bufs {
    /// Each group's parameter offset.
    base: Vec<usize>,
    /// Each group's shift (`A > 1` forward).
    shift: Vec<f64>,
    /// Each task's partial sums, `K` per task in task order (`A > 1`): (Σ(x − h),
    /// Σ(x − h)²) forward, (Σdy, Σdy·x̂) backward.
    parts: Vec<(f64, f64)>,
    /// Each group's sums, the tasks' merged in task order.
    sums: Vec<(f64, f64)>,
    /// Each group's coefficients (m, a, b): the output's (forward), x̂'s (backward).
    coef: Vec<(f32, f32, f32)>,
    /// Each group's dx coefficients (c, m, a, b).
    dx: Vec<(f32, f32, f32, f32)>,
    /// The statistics of a forward that saves none.
    stats: Vec<Stat>,
    /// dγ then dβ (backward).
    grads: Vec<f64>,
}

thread_local! {
    static BUFS: RefCell<Bufs> = RefCell::new(Bufs::default());
}

/// A half type's slices as their bit patterns (identity reinterpretations).
pub(super) struct Bits<T> {
    /// The format.
    pub fmt: Fmt,
    r: for<'a> fn(&'a [T]) -> &'a [u16],
    w: for<'a> fn(&'a mut [T]) -> &'a mut [u16],
}

impl<T> Bits<T> {
    /// A shared slice's bits.
    #[inline(always)]
    pub fn r<'a>(&self, s: &'a [T]) -> &'a [u16] {
        (self.r)(s)
    }
    /// A mutable slice's bits.
    #[inline(always)]
    pub fn w<'a>(&self, s: &'a mut [T]) -> &'a mut [u16] {
        (self.w)(s)
    }
}

/// The [`TypeMap`] of [`Bits`]: `Some` for the half types.
struct BitsMap;

impl TypeMap for BitsMap {
    type Out<T: Float> = Option<Bits<T>>;
    fn f32() -> Option<Bits<f32>> {
        None
    }
    fn f64() -> Option<Bits<f64>> {
        None
    }
    fn bf16() -> Option<Bits<half::bf16>> {
        Some(Bits {
            fmt: Fmt::Bf16,
            r: |s| s.reinterpret_cast(),
            w: |s| s.reinterpret_cast_mut(),
        })
    }
    fn f16() -> Option<Bits<half::f16>> {
        Some(Bits {
            fmt: Fmt::F16,
            r: |s| s.reinterpret_cast(),
            w: |s| s.reinterpret_cast_mut(),
        })
    }
}

/// `T`'s bits, for the half types.
#[inline(always)]
fn bits<T: Float>() -> Option<Bits<T>> {
    <T as Sealed>::map::<BitsMap>()
}

/// The bits of the half type `T` (the fused paths run only the half types).
#[inline(always)]
pub(super) fn half_bits<T: Float>() -> Bits<T> {
    bits::<T>().expect("the fused paths run the half types only")
}

/// Shifted sums of `x` (one group's contiguous line), read as half values.
pub(super) fn line_sums<T: Float>(x: &[T], shift: f64) -> (f64, f64) {
    let h = half_bits::<T>();
    fused::sums(h.fmt, h.r(x), shift)
}

/// `out = (x − m)·a + b` over a line with one group's coefficients; `stream`: with
/// non-temporal stores where a kernel has them (`fused::affine_streamed`; the caller
/// fences them).
fn line_affine<T: Float>(x: &[T], out: &mut [T], c: (f32, f32, f32), stream: bool) {
    let h = half_bits::<T>();
    fused::affine_streamed(h.fmt, h.r(x), h.w(out), c, None, stream);
}

/// [`line_affine`] over `x` and [`line_sums`] of `next` in one pass (the same bits).
fn line_affine_then_sums<T: Float>(
    x: &[T],
    out: &mut [T],
    c: (f32, f32, f32),
    (next, shift): (&[T], f64),
    stream: bool,
) -> (f64, f64) {
    let h = half_bits::<T>();
    fused::affine_then_sums(h.fmt, (h.r(x), h.w(out)), c, (h.r(next), shift), stream)
}

/// Σdy and Σdy·x̂ (x̂ = (x − m)·a + b) of one group's line.
fn line_dsums<T: Float>(x: &[T], dy: &[T], c: (f32, f32, f32)) -> (f64, f64) {
    let h = half_bits::<T>();
    fused::dsums(h.fmt, (h.r(x), h.r(dy)), c, None, None)
}

/// `dx = dy·c + (x − m)·a + b` over one group's line.
fn line_dx<T: Float>(x: &[T], dy: &[T], dx: &mut [T], k: (f32, f32, f32, f32)) {
    let h = half_bits::<T>();
    fused::dx(h.fmt, (h.r(x), h.r(dy), h.w(dx)), k, None);
}

/// Per-group shifted sums (Σ(x − h), Σ(x − h)²) of `A > 1` layouts of lines (`B > 1`) into
/// `sums` (zero, `K` groups): tasks over runs of `a` (their partial sums in `parts`),
/// merged in task order.
fn outer_sums<T: Float>(
    x: &[T],
    lay: Layout,
    h: &[f64],
    parts: &mut Vec<(f64, f64)>,
    sums: &mut [(f64, f64)],
) {
    let slab = lay.k * lay.b;
    let rows = lay.rows_per_task();
    let parts = zeroed(parts, lay.a.div_ceil(rows) * lay.k);
    x.par_chunks(rows * slab)
        .zip(parts.par_chunks_mut(lay.k))
        .for_each(|(xs, part)| {
            for (i, line) in xs.chunks(lay.b).enumerate() {
                let g = i % lay.k;
                let (a, b) = line_sums(line, h[g]);
                part[g].0 += a;
                part[g].1 += b;
            }
        });
    merge(parts, sums);
}

/// The tasks' partial sums (`sums.len()` per task) added in task order into `sums` (zero).
fn merge(parts: &[(f64, f64)], sums: &mut [(f64, f64)]) {
    for part in parts.chunks(sums.len()) {
        for (s, v) in sums.iter_mut().zip(part) {
            s.0 += v.0;
            s.1 += v.1;
        }
    }
}

/// Whether the column pass (`B = 1`) over `bytes` of input and output writes the output
/// with streaming stores: above the f32 passes' threshold (`simd::streams`), or above half
/// the last-level cache. The half forward reads `x` twice (statistics, then output): an
/// output written through the cache evicts the `x` the second pass and the next call read
/// (bf16 channels-last batch norm, `[100352, 64]`, 25.7 MB with the output, on Zen 4 with
/// 32 MiB L3: ~10 % faster per call streaming; BatchNorm1d `[4096, 1024]`, 16 MiB, does
/// not stream).
pub(super) fn streams(bytes: usize) -> bool {
    crate::kernels::simd::streams(bytes)
        || crate::cpu::info()
            .caches
            .l3
            .is_some_and(|l3| bytes > l3 / 2)
}

/// `out = (x − m)·a + b` per group of `A > 1` layouts of lines (`B > 1`).
fn outer_affine<T: Float>(x: &[T], out: &mut [T], lay: Layout, c: &[(f32, f32, f32)]) {
    let slab = lay.k * lay.b;
    let rows = lay.rows_per_task();
    x.par_chunks(rows * slab)
        .zip(out.par_chunks_mut(rows * slab))
        .for_each(|(xs, os)| {
            for (i, (xl, ol)) in xs.chunks(lay.b).zip(os.chunks_mut(lay.b)).enumerate() {
                line_affine(xl, ol, c[i % lay.k], false);
            }
        });
}

/// The statistics and f32 coefficients of group `s` from its raw sums.
fn finish_group(
    info: &LayerInfo<'_>,
    raw: ShiftedSums,
    n: usize,
    affine: (f64, f64),
) -> (Stat, (f32, f32, f32)) {
    let stage = &info.spec.stages[0];
    let (mean, m2) = mean_m2(stage, raw, n);
    let st = group_stat(stage, mean, m2, n);
    (st, coef(mean, st.rstd * affine.0, affine.1))
}

/// The tiled forward pass, or `None` when the call does not fit it (nothing changed then).
pub(crate) fn forward<T: Float>(
    info: &LayerInfo<'_>,
    state: &mut StageState<'_, T>,
    (shape, x, out): (&[usize], &[T], &mut [T]),
    mode: Mode,
    saved: Option<&mut Saved<T>>,
) -> Option<()> {
    let (plan, lay) = plan_of(info, state, shape, Purpose::Forward(mode))?;
    if lay.a > 1 && lay.b == 1 {
        return cols::forward(info, state, (&plan, lay, shape), (x, out), mode, saved);
    }
    let stage = &info.spec.stages[0];
    let n = plan.group_len;
    let fixed = mode == Mode::Eval && stage.running_stats;
    if fixed && state.running.is_none() {
        return None;
    }
    let gamma = state.gamma.as_ref().map(values);
    let beta = state.beta.as_ref().map(values);
    let mut saved = saved;
    super::with_local(&BUFS, |sc| {
        if gamma.is_some() {
            offsets(&plan, &mut sc.base);
        }
        let Bufs {
            base,
            shift,
            parts,
            sums,
            coef: c,
            stats: own,
            ..
        } = sc;
        let base = &*base;
        let affine = |s: usize| -> (f64, f64) {
            match &gamma {
                Some(g) => (
                    g[base[s]].to_acc(),
                    beta.as_ref().map_or(0.0, |b| b[base[s]].to_acc()),
                ),
                None => (1.0, 0.0),
            }
        };
        let mut stats = stats_buffer(saved.as_deref_mut(), own, lay.k);
        // x and the output: the lines' pass does not fit the cache.
        let stream = streams(2 * std::mem::size_of_val(x));
        if let (true, Some(running)) = (fixed, state.running.as_ref()) {
            running_stats(stage, &plan, running, &mut stats);
            let c = zeroed(c, lay.k);
            for (s, (st, c)) in stats.iter().zip(c.iter_mut()).enumerate() {
                let (g, h) = affine(s);
                *c = coef(st.mean, st.rstd * g, h);
            }
            if lay.a == 1 {
                let per = lay.groups_per_task();
                x.par_chunks(per * lay.b)
                    .zip(out.par_chunks_mut(per * lay.b))
                    .zip(c.par_chunks(per))
                    .for_each(|((xs, os), cs)| {
                        for ((xl, ol), &c) in xs.chunks(lay.b).zip(os.chunks_mut(lay.b)).zip(cs) {
                            line_affine(xl, ol, c, stream);
                        }
                        if stream {
                            fused::stream_fence();
                        }
                    });
            } else {
                outer_affine(x, out, lay, c);
            }
        } else if lay.a == 1 {
            // Rows: sums, statistics and output per group in one task.
            let per = lay.groups_per_task();
            x.par_chunks(per * lay.b)
                .zip(out.par_chunks_mut(per * lay.b))
                .zip(stats.par_chunks_mut(per))
                .enumerate()
                .for_each(|(t, ((xs, os), sts))| {
                    // Pipelined: the output of line `i` in the loop that sums line `i + 1`.
                    let b = lay.b;
                    let shift_of = |l: &[T]| {
                        if stage.center {
                            f64::from(widen_one(l[0]))
                        } else {
                            0.0
                        }
                    };
                    let shift = shift_of(&xs[..b]);
                    let (sum, sq) = line_sums(&xs[..b], shift);
                    let mut raw = ShiftedSums { shift, sum, sq };
                    let lines = xs.len() / b;
                    for (i, (ol, st)) in os.chunks_mut(b).zip(sts.iter_mut()).enumerate() {
                        let (s, c) = finish_group(info, raw, n, affine(t * per + i));
                        *st = s;
                        let xl = &xs[i * b..(i + 1) * b];
                        if i + 1 < lines {
                            let next = &xs[(i + 1) * b..(i + 2) * b];
                            let shift = shift_of(next);
                            let next = (next, shift);
                            let (sum, sq) = line_affine_then_sums(xl, ol, c, next, stream);
                            raw = ShiftedSums { shift, sum, sq };
                        } else {
                            line_affine(xl, ol, c, stream);
                        }
                    }
                    if stream {
                        fused::stream_fence();
                    }
                });
        } else {
            let h = zeroed(shift, lay.k);
            for (g, h) in h.iter_mut().enumerate() {
                if stage.center {
                    *h = f64::from(widen_one(x[g * lay.b]));
                }
            }
            let sums = zeroed(sums, lay.k);
            outer_sums(x, lay, h, parts, sums);
            let c = zeroed(c, lay.k);
            for (s, (&(sum, sq), &shift)) in sums.iter().zip(h.iter()).enumerate() {
                let raw = ShiftedSums { shift, sum, sq };
                (stats[s], c[s]) = finish_group(info, raw, n, affine(s));
            }
            outer_affine(x, out, lay, c);
        }
        if mode == Mode::Train {
            update_running(stage, &plan, n, &stats, state.running.as_mut());
        }
        match saved {
            Some(saved) => fill_saved(info, saved, shape, fixed, n, stats),
            None => *own = stats,
        }
    });
    Some(())
}

/// The train-mode running update of a fused half-precision forward: in f32 and rounded
/// once, as the f32 layer's running statistics (the caller's arrays are small: one value
/// per channel or group; widened into per-thread buffers, no allocation once warm). Shared
/// by the tiled and the row paths.
pub(super) fn update_running<T: Float>(
    stage: &Stage,
    plan: &Plan,
    n: usize,
    stats: &[Stat],
    running: Option<&mut Running<'_, T>>,
) {
    let Some(Running::Mut { mean, var, count }) = running else {
        return;
    };
    super::with_local(&RUNNING, |rb| {
        let RunningBufs {
            mean: m32,
            var: v32,
            buf,
        } = rb;
        super::widen_into(&mean.view(), m32);
        super::widen_into(&var.view(), v32);
        let mut r32 = Running::Mut {
            mean: ArrayViewMut::from_shape(mean.raw_dim(), &mut m32[..])
                .expect("the values of the view, in logical order"),
            var: ArrayViewMut::from_shape(var.raw_dim(), &mut v32[..])
                .expect("the values of the view, in logical order"),
            count,
        };
        train_running(stage, plan, n, stats, Some(&mut r32), buf);
        narrow_into(m32, mean);
        narrow_into(v32, var);
    });
}

/// The f32 running statistics of [`update_running`] and its update's buffer.
#[derive(Default)]
struct RunningBufs {
    mean: Vec<f32>,
    var: Vec<f32>,
    buf: Vec<f64>,
}

thread_local! {
    static RUNNING: RefCell<RunningBufs> = RefCell::new(RunningBufs::default());
}

/// One value widened.
#[inline(always)]
pub(super) fn widen_one<T: Float>(v: T) -> f32 {
    let mut o = [0f32];
    T::widen(&[v], &mut o);
    o[0]
}

/// The tiled backward pass, or `None` when the call does not fit it (nothing changed then;
/// the whole-tensor path reports any error).
pub(crate) fn backward<T: Float>(
    info: &LayerInfo<'_>,
    state: &StageState<'_, T>,
    shape: &[usize],
    (x, dy, dx): (&[T], &[T], &mut [T]),
    saved: &Saved<T>,
    grads: &mut [StageGrads<T>],
) -> Option<()> {
    let (plan, lay) = plan_of(info, state, shape, Purpose::Backward)?;
    let stage = &info.spec.stages[0];
    let sv = saved_stage(info, &plan, shape, saved, grads.len())?;
    if lay.a > 1 && lay.b == 1 {
        cols::backward(info, state, (&plan, lay), (x, dy, dx), sv, grads);
        return Some(());
    }
    let n = sv.count;
    let gamma = state.gamma.as_ref().map(values);
    super::with_local(&BUFS, |sc| {
        if gamma.is_some() {
            offsets(&plan, &mut sc.base);
        }
        let Bufs {
            base,
            parts,
            sums,
            coef: xhat,
            dx: c,
            grads: pg,
            ..
        } = sc;
        let base = &*base;
        let scale = |s: usize| match &gamma {
            Some(g) => g[base[s]].to_acc(),
            None => 1.0,
        };
        // x̂ = (x − m)·a + b per group, and the dx coefficients from the group's sums.
        let xhat = zeroed(xhat, lay.k);
        for (c, st) in xhat.iter_mut().zip(&sv.stats) {
            *c = coef(st.mean, st.rstd, 0.0);
        }
        let xhat = &*xhat;
        let dxc = |s: usize, sg: f64, sgx: f64| -> (f32, f32, f32, f32) {
            let st = sv.stats[s];
            let gs = scale(s);
            let (c0, c1) = dx_terms(stage, &st, n, sv.fixed, gs * sg, gs * sgx);
            let (m, a, b) = coef(st.mean, st.rstd * c1, c0);
            ((st.rstd * gs) as f32, m, a, b)
        };
        let sums = zeroed(sums, lay.k);
        if lay.a == 1 {
            let per = lay.groups_per_task();
            x.par_chunks(per * lay.b)
                .zip(dy.par_chunks(per * lay.b))
                .zip(dx.par_chunks_mut(per * lay.b))
                .zip(sums.par_chunks_mut(per))
                .enumerate()
                .for_each(|(t, (((xs, ds), os), ss))| {
                    let lines = xs.chunks(lay.b).zip(ds.chunks(lay.b));
                    let outs = os.chunks_mut(lay.b).zip(ss);
                    for (i, ((xl, dl), (ol, s))) in lines.zip(outs).enumerate() {
                        let g = t * per + i;
                        *s = line_dsums(xl, dl, xhat[g]);
                        line_dx(xl, dl, ol, dxc(g, s.0, s.1));
                    }
                });
        } else {
            // `A > 1`, lines of `B > 1` values (NCHW batch norm).
            let slab = lay.k * lay.b;
            let rows = lay.rows_per_task();
            let parts = zeroed(parts, lay.a.div_ceil(rows) * lay.k);
            x.par_chunks(rows * slab)
                .zip(dy.par_chunks(rows * slab))
                .zip(parts.par_chunks_mut(lay.k))
                .for_each(|((xs, ds), acc)| {
                    for (i, (xl, dl)) in xs.chunks(lay.b).zip(ds.chunks(lay.b)).enumerate() {
                        let g = i % lay.k;
                        let (a, b) = line_dsums(xl, dl, xhat[g]);
                        acc[g].0 += a;
                        acc[g].1 += b;
                    }
                });
            merge(parts, sums);
            let c = zeroed(c, lay.k);
            for (s, (c, &(sg, sgx))) in c.iter_mut().zip(sums.iter()).enumerate() {
                *c = dxc(s, sg, sgx);
            }
            let c = &*c;
            x.par_chunks(rows * slab)
                .zip(dy.par_chunks(rows * slab))
                .zip(dx.par_chunks_mut(rows * slab))
                .for_each(|((xs, ds), os)| {
                    let lines = xs.chunks(lay.b).zip(ds.chunks(lay.b));
                    for (i, ((xl, dl), ol)) in lines.zip(os.chunks_mut(lay.b)).enumerate() {
                        line_dx(xl, dl, ol, c[i % lay.k]);
                    }
                });
        }
        let params = plan.param_shape.numel();
        let (dgamma, dbeta) = zeroed(pg, 2 * params).split_at_mut(params);
        if matches!(stage.affine, Affine::Axes(_)) {
            plan.for_each_group(|s, p, _| {
                dgamma[p] += sums[s].1;
                dbeta[p] += sums[s].0;
            });
        }
        fill_param_grads(stage, &plan, &mut grads[0], dgamma, dbeta);
    });
    Some(())
}

/// The buffer a forward's statistics go into, `n` default ones: the `Saved`'s (handed back
/// by [`fill_saved`]), else the thread's own (`own`, handed back by the caller). No
/// allocation once warm.
pub(super) fn stats_buffer<T>(
    saved: Option<&mut Saved<T>>,
    own: &mut Vec<Stat>,
    n: usize,
) -> Vec<Stat> {
    let mut stats = match saved.and_then(|sv| sv.stages.first_mut()) {
        Some(st) => std::mem::take(&mut st.stats),
        None => std::mem::take(own),
    };
    stats.clear();
    stats.resize(n, Stat::default());
    stats
}

/// Stores a single-stage forward's statistics into `saved` (as the f32 layer fills it).
pub(super) fn fill_saved<T: Float>(
    info: &LayerInfo<'_>,
    saved: &mut Saved<T>,
    shape: &[usize],
    fixed: bool,
    n: usize,
    stats: Vec<Stat>,
) {
    saved.fingerprint = info.fingerprint;
    saved.shape.clear();
    saved.shape.extend_from_slice(shape);
    saved.stages.resize_with(1, SavedStage::default);
    let s = &mut saved.stages[0];
    s.fixed = fixed;
    s.count = n;
    s.synced = false;
    s.stats = stats;
    s.scale.clear();
    s.tlu_pass.clear();
    s.renorm.clear();
    s.chunks.clear();
    saved.intermediates.clear();
    saved.cell_len = 0;
    saved.cells.clear();
    saved.mask.clear();
    saved.counts.clear();
}

/// The one stage of `saved` when it fits this call (the checks of the f32 backward pass;
/// `None` sends the call to the whole-tensor path, which reports the error).
pub(super) fn saved_stage<'s, T: Float>(
    info: &LayerInfo<'_>,
    plan: &Plan,
    shape: &[usize],
    saved: &'s Saved<T>,
    nslots: usize,
) -> Option<&'s SavedStage<T>> {
    let [sv] = &saved.stages[..] else {
        return None;
    };
    let ok = saved.fingerprint == info.fingerprint
        && saved.shape == shape
        && saved.intermediates.is_empty()
        && sv.stats.len() == plan.groups
        && !sv.synced
        && sv.count == plan.group_len
        && sv.renorm.is_empty()
        && sv.tlu_pass.is_empty()
        && sv.chunks.is_empty()
        && nslots == 1;
    ok.then_some(sv)
}

/// The parameter gradients from their f64 sums (rounded through f32, as the f32 layer's
/// gradients are rounded to the half type).
pub(super) fn fill_param_grads<T: Float>(
    stage: &norm_spec::Stage,
    plan: &Plan,
    g: &mut StageGrads<T>,
    dgamma: &mut [f64],
    dbeta: &mut [f64],
) {
    match &stage.affine {
        Affine::Axes(_) => {
            for v in dgamma.iter_mut().chain(dbeta.iter_mut()) {
                *v = f64::from(*v as f32);
            }
            let shape = plan.param_shape.as_slice();
            fill_grad(&mut g.dgamma, shape, dgamma);
            if stage.bias {
                fill_grad(&mut g.dbeta, shape, dbeta);
            } else {
                g.dbeta = None;
            }
        }
        _ => {
            g.dgamma = None;
            g.dbeta = None;
        }
    }
    g.dtau = None;
}
