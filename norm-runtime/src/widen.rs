//! Half-precision layer calls (`bf16`, `f16`): storage in 16 bits, arithmetic in f32.
//!
//! Each entry point of `layer` hands a call whose element type is `WIDE`
//! (`float::sealed::Sealed`) to this module. Three paths, the first that fits:
//!
//! * `tiled` (fused): single-stage layers whose plan is `[A, K, B]` with one kept dim and
//!   parameters per statistics group or none — batch norm (NCHW, BatchNorm1d,
//!   channels-last), instance norm, WS, layer/RMS norm without parameters — forward (train
//!   and eval, running statistics) and backward. The half tensor is read and the half
//!   output written once by kernels that load half values into f32 lanes and round on the
//!   store (`kernels::convert::fused`).
//! * `rows` (fused): single-stage layers with parameters along contiguous groups — layer
//!   norm, RMS norm, group norm with γ/β — forward and backward, per group on converted
//!   tiles.
//! * `chain` (fused): chains whose stages share cells (Batch-Channel Normalization), forward
//!   and backward: the f32 layer's fused chain (`crate::chain`) with f32 coefficients, its
//!   two passes over the half tensor (per-cell sums, then the output or dx), block by block.
//! * The whole-tensor conversion below, for everything else: other chains, variants (`tlu`,
//!   `ghost`, `renorm`, masks), `affine = external` (AdaIN), synchronized calls, `stats`,
//!   strided (non-contiguous) buffers. It converts the input, the upstream gradient and
//!   every stage's parameters and running statistics to f32 (exactly), runs the f32 call,
//!   and rounds its results back once. The forward of one-stage layers keeping axis 0
//!   there runs as blocks of rows (`forward_blocks`).
//!
//! Every path computes in f32 with statistics and backward sums in f64 (the shifted
//! scheme), as PyTorch's CPU kernels do for bf16 (`opmath_t = float`), so a half-precision
//! layer is as accurate as PyTorch's. The fused paths use the f32 layers' row kernels and
//! elementwise expressions, so their results are the f32 layer's rounded in the cases
//! `tests/half/dtypes.rs` checks; their sums run in another order than the f32 layer's where the
//! layouts differ (tiles, columns), which may move a result by one rounding of the half type.
//!
//! The checks are the f32 call's (the fused paths run the same `check` on the half-typed
//! state and fall back to the whole path, which reports the error, when anything does not
//! fit), so errors are the same; running statistics are written back only after the call
//! succeeded, so a failed call changes nothing. The f32 buffers are kept per thread and
//! reused.

use std::cell::RefCell;
use std::thread::LocalKey;

use ndarray::{ArrayD, ArrayView, ArrayViewD, ArrayViewMut, Dimension, IxDyn};
use rayon::prelude::*;

use crate::collective::Collective;
use crate::state::{LayerInfo, Running, StageState};
use crate::types::{Mode, Moments, Saved, SavedStage, StageGrads};
use crate::{Float, NormError};

mod chain;
mod rows;
mod tiled;

/// The per-thread f32 buffers of the data (input, upstream gradient, output).
#[derive(Default)]
struct Bufs {
    x: Vec<f32>,
    dy: Vec<f32>,
    out: Vec<f32>,
}

thread_local! {
    static BUFS: RefCell<Bufs> = RefCell::new(Bufs::default());
}

/// Runs `f` with this thread's buffers (fresh ones inside a nested call).
fn with_bufs<R>(f: impl FnOnce(&mut Bufs) -> R) -> R {
    with_local(&BUFS, f)
}

/// Runs `f` with this thread's value of `key` (a fresh one inside a nested call, which
/// finds the thread's value borrowed).
fn with_local<S: Default + 'static, R>(
    key: &'static LocalKey<RefCell<S>>,
    f: impl FnOnce(&mut S) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut b) => f(&mut b),
        Err(_) => f(&mut S::default()),
    })
}

/// `buf` of length `n` (its values are overwritten by the caller: no zeroing pass when the
/// length is already right).
fn sized<V: Copy + Default>(buf: &mut Vec<V>, n: usize) {
    if buf.len() != n {
        buf.clear();
        buf.resize(n, V::default());
    }
}

/// Elements per conversion task: large tensors convert in parallel on rayon's current pool.
const CHUNK: usize = 1 << 16;

/// `T::widen` over chunks in parallel (the same values as one call).
fn widen_par<T: Float>(src: &[T], dst: &mut [f32]) {
    if src.len() <= CHUNK {
        return T::widen(src, dst);
    }
    src.par_chunks(CHUNK)
        .zip(dst.par_chunks_mut(CHUNK))
        .for_each(|(s, d)| T::widen(s, d));
}

/// `T::narrow` over chunks in parallel (the same values as one call).
fn narrow_par<T: Float>(src: &[f32], dst: &mut [T]) {
    if src.len() <= CHUNK {
        return T::narrow(src, dst);
    }
    src.par_chunks(CHUNK)
        .zip(dst.par_chunks_mut(CHUNK))
        .for_each(|(s, d)| T::narrow(s, d));
}

/// `buf` holding `a`'s values in logical order, widened to f32.
fn widen_into<T: Float, D: Dimension>(a: &ArrayView<'_, T, D>, buf: &mut Vec<f32>) {
    sized(buf, a.len());
    match a.as_slice() {
        Some(s) => widen_par(s, buf),
        None => {
            let v: Vec<T> = a.iter().copied().collect();
            T::widen(&v, buf);
        }
    }
}

/// `a` widened to an owned f32 array (its logical shape).
fn widen_array<T: Float>(a: &ArrayViewD<'_, T>) -> ArrayD<f32> {
    let mut v = Vec::new();
    widen_into(a, &mut v);
    ArrayD::from_shape_vec(a.raw_dim(), v).expect("the shape of the values' own view")
}

/// Writes `src` (logical order) into `dst`, rounded.
fn narrow_into<T: Float, D: Dimension>(src: &[f32], dst: &mut ArrayViewMut<'_, T, D>) {
    match dst.as_slice_mut() {
        Some(s) => narrow_par(src, s),
        None => {
            let mut v = vec![T::zero(); src.len()];
            T::narrow(src, &mut v);
            for (o, x) in dst.iter_mut().zip(v) {
                *o = x;
            }
        }
    }
}

/// `v` rounded to `T`.
fn narrow_vec<T: Float>(v: &[f32]) -> Vec<T> {
    let mut out = vec![T::zero(); v.len()];
    T::narrow(v, &mut out);
    out
}

/// `v` widened to f32.
fn widen_vec<T: Float>(v: &[T]) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    T::widen(v, &mut out);
    out
}

/// An owned f32 copy of one stage's state.
struct WideStage {
    gamma: Option<ArrayD<f32>>,
    beta: Option<ArrayD<f32>>,
    external: Option<(ArrayD<f32>, ArrayD<f32>)>,
    /// mean, var, count, and whether the caller lent them mutably.
    running: Option<(ArrayD<f32>, ArrayD<f32>, u64, bool)>,
    /// The TLU threshold (`tlu`).
    tau: Option<ArrayD<f32>>,
    /// Batch Renormalization's limits (`renorm`).
    renorm: Option<(f64, f64)>,
    /// Switchable Normalization's logits.
    switch: Option<(ArrayD<f32>, ArrayD<f32>)>,
}

impl WideStage {
    fn of<T: Float>(st: &StageState<'_, T>) -> Self {
        WideStage {
            gamma: st.gamma.as_ref().map(widen_array),
            beta: st.beta.as_ref().map(widen_array),
            external: st
                .external
                .as_ref()
                .map(|(s, b)| (widen_array(s), widen_array(b))),
            running: st.running.as_ref().map(|r| match r {
                Running::View { mean, var } => (widen_array(mean), widen_array(var), 0, false),
                Running::Mut { mean, var, count } => (
                    widen_array(&mean.view()),
                    widen_array(&var.view()),
                    **count,
                    true,
                ),
            }),
            tau: st.tau.as_ref().map(widen_array),
            renorm: st.renorm,
            switch: st
                .switch
                .as_ref()
                .map(|(m, v)| (widen_array(m), widen_array(v))),
        }
    }

    /// Read-only views (no running statistics lent mutably: [`blockable`] calls have none).
    fn view(&self) -> StageState<'_, f32> {
        StageState {
            gamma: self.gamma.as_ref().map(|a| a.view()),
            beta: self.beta.as_ref().map(|a| a.view()),
            external: self.external.as_ref().map(|(s, b)| (s.view(), b.view())),
            running: self.running.as_ref().map(|(m, v, _, _)| Running::View {
                mean: m.view(),
                var: v.view(),
            }),
            tau: self.tau.as_ref().map(|a| a.view()),
            renorm: self.renorm,
            switch: self.switch.as_ref().map(|(m, v)| (m.view(), v.view())),
        }
    }

    fn state(&mut self) -> StageState<'_, f32> {
        StageState {
            gamma: self.gamma.as_ref().map(|a| a.view()),
            beta: self.beta.as_ref().map(|a| a.view()),
            external: self.external.as_ref().map(|(s, b)| (s.view(), b.view())),
            running: self.running.as_mut().map(|(m, v, count, lent)| {
                if *lent {
                    Running::Mut {
                        mean: m.view_mut(),
                        var: v.view_mut(),
                        count,
                    }
                } else {
                    Running::View {
                        mean: m.view(),
                        var: v.view(),
                    }
                }
            }),
            tau: self.tau.as_ref().map(|a| a.view()),
            renorm: self.renorm,
            switch: self.switch.as_ref().map(|(m, v)| (m.view(), v.view())),
        }
    }

    /// Rounds the (updated) running statistics back into the caller's.
    fn write_back<T: Float>(&self, st: &mut StageState<'_, T>) {
        if let (Some((m, v, c, true)), Some(Running::Mut { mean, var, count })) =
            (&self.running, st.running.as_mut())
        {
            narrow_into(m.as_slice().expect("owned, standard layout"), mean);
            narrow_into(v.as_slice().expect("owned, standard layout"), var);
            **count = *c;
        }
    }
}

/// `saved` widened to f32 (for a backward call).
fn widen_saved<T: Float>(saved: &Saved<T>) -> Saved<f32> {
    Saved {
        fingerprint: saved.fingerprint,
        shape: saved.shape.clone(),
        stages: saved.stages.iter().map(widen_stage).collect(),
        intermediates: saved.intermediates.iter().map(|v| widen_vec(v)).collect(),
        cell_len: saved.cell_len,
        cells: saved.cells.clone(),
        mask: saved.mask.clone(),
        counts: saved.counts.clone(),
    }
}

/// Stores an f32 forward's `wide` into the caller's `saved` (intermediate outputs rounded,
/// as a chain of half-precision modules rounds between them).
fn narrow_saved<T: Float>(wide: Saved<f32>, saved: &mut Saved<T>) {
    saved.fingerprint = wide.fingerprint;
    saved.shape = wide.shape;
    saved.stages = wide.stages.into_iter().map(narrow_stage).collect();
    saved.intermediates = wide.intermediates.iter().map(|v| narrow_vec(v)).collect();
    saved.cell_len = wide.cell_len;
    saved.cells = wide.cells;
    saved.mask = wide.mask;
    saved.counts = wide.counts;
}

/// One stage's saved values widened to f32 (a `ghost` stage's chunks too).
fn widen_stage<T: Float>(s: &SavedStage<T>) -> SavedStage<f32> {
    SavedStage {
        fixed: s.fixed,
        count: s.count,
        synced: s.synced,
        stats: s.stats.clone(),
        scale: widen_vec(&s.scale),
        tlu_pass: s.tlu_pass.clone(),
        renorm: s.renorm.clone(),
        chunks: s.chunks.iter().map(widen_stage).collect(),
    }
}

/// One stage's saved values rounded to `T` (the inverse of [`widen_stage`]).
fn narrow_stage<T: Float>(s: SavedStage<f32>) -> SavedStage<T> {
    SavedStage {
        fixed: s.fixed,
        count: s.count,
        synced: s.synced,
        stats: s.stats,
        scale: narrow_vec(&s.scale),
        tlu_pass: s.tlu_pass,
        renorm: s.renorm,
        chunks: s.chunks.into_iter().map(narrow_stage).collect(),
    }
}

/// An optional gradient widened (so the f32 call sees the caller's slot as it is).
fn widen_grad<T: Float>(g: &Option<ArrayD<T>>) -> Option<ArrayD<f32>> {
    g.as_ref().map(|a| widen_array(&a.view()))
}

/// An optional f32 gradient rounded into the caller's slot (reusing its array when the
/// shapes agree).
fn narrow_grad<T: Float>(g: Option<ArrayD<f32>>, slot: &mut Option<ArrayD<T>>) {
    match g {
        None => *slot = None,
        Some(g) => {
            let values = g.as_standard_layout();
            let values = values.as_slice().expect("standard layout");
            let fits = slot
                .as_ref()
                .is_some_and(|a| a.shape() == g.shape() && a.is_standard_layout());
            if !fits {
                *slot = Some(ArrayD::from_elem(g.raw_dim(), T::zero()));
            }
            if let Some(a) = slot.as_mut() {
                T::narrow(values, a.as_slice_mut().expect("standard layout"));
            }
        }
    }
}

/// The f32 forward entry point (`layer::forward_into` for `info` and the call's mode),
/// passed in by `layer` so that this module does not name `layer`, which calls it.
pub(crate) type Forward32<'r> = dyn Fn(
        &mut [StageState<'_, f32>],
        ArrayViewD<'_, f32>,
        ArrayViewMut<'_, f32, IxDyn>,
        Option<&mut Saved<f32>>,
        Option<&dyn Collective>,
    ) -> Result<(), NormError>
    + Sync
    + 'r;

/// `layer::forward_into` for a `WIDE` type (`run`: the f32 entry point).
pub(crate) fn forward_into<T: Float, D: Dimension>(
    info: &LayerInfo<'_>,
    states: &mut [StageState<'_, T>],
    (x, mut out): (ArrayView<'_, T, D>, ArrayViewMut<'_, T, D>),
    mode: Mode,
    saved: Option<&mut Saved<T>>,
    sync: Option<&dyn Collective>,
    run: &Forward32<'_>,
) -> Result<(), NormError> {
    let mut saved = saved;
    if info.spec.chain && sync.is_none() && x.shape() == out.shape() {
        if let (Some(xs), Some(os)) = (x.as_slice(), out.as_slice_mut()) {
            let s = saved.as_deref_mut();
            if chain::forward(info, states, (x.shape(), xs, os), mode, s).is_some() {
                return Ok(());
            }
        }
    }
    if let ([st], true) = (&mut *states, tiled::eligible(info, sync.is_some())) {
        if let (Some(xs), true) = (x.as_slice(), x.shape() == out.shape()) {
            if let Some(os) = out.as_slice_mut() {
                let shape = x.shape();
                let s = saved.as_deref_mut();
                let done = match tiled::forward(info, st, (shape, xs, &mut *os), mode, s) {
                    Some(()) => true,
                    None => {
                        let s = saved.as_deref_mut();
                        rows::forward(info, st, (shape, xs, os), mode, s).is_some()
                    }
                };
                if done {
                    return Ok(());
                }
            }
        }
    }
    let mut wide: Vec<WideStage> = states.iter().map(WideStage::of).collect();
    if sync.is_none() && blockable(info, x.shape(), out.shape()) {
        if let (Some(xs), Some(os)) = (x.as_slice(), out.as_slice_mut()) {
            // On an error, the whole call below reports it (with the whole input's shape).
            if forward_blocks(info, &wide, xs, x.shape(), os, saved.as_deref_mut(), run).is_ok() {
                return Ok(());
            }
            return forward_whole(states, &mut wide, x, out, saved, sync, run);
        }
    }
    forward_whole(states, &mut wide, x, out, saved, sync, run)
}

/// The whole call in f32 at once.
fn forward_whole<T: Float, D: Dimension>(
    states: &mut [StageState<'_, T>],
    wide: &mut [WideStage],
    x: ArrayView<'_, T, D>,
    mut out: ArrayViewMut<'_, T, D>,
    saved: Option<&mut Saved<T>>,
    sync: Option<&dyn Collective>,
    run: &Forward32<'_>,
) -> Result<(), NormError> {
    with_bufs(|b| {
        widen_into(&x, &mut b.x);
        sized(&mut b.out, out.len());
        let x32 = ArrayView::from_shape(IxDyn(x.shape()), &b.x).expect("x's own shape");
        let out32 = ArrayViewMut::from_shape(IxDyn(out.shape()), &mut b.out)
            .expect("the output's own shape");
        let mut saved32 = saved.as_ref().map(|_| Saved::<f32>::new());
        {
            let mut st32: Vec<StageState<'_, f32>> =
                wide.iter_mut().map(WideStage::state).collect();
            run(&mut st32, x32, out32, saved32.as_mut(), sync)?;
        }
        narrow_into(&b.out, &mut out);
        for (w, st) in wide.iter().zip(states.iter_mut()) {
            w.write_back(st);
        }
        if let (Some(s), Some(s32)) = (saved, saved32) {
            narrow_saved(s32, s);
        }
        Ok(())
    })
}

/// Elements per block of [`forward_blocks`]: the f32 copies of a block stay in the L2 cache.
const BLOCK: usize = 1 << 16;

/// Whether a forward call can run as independent blocks of the first axis: one stage that
/// keeps axis 0 (statistics per row of it), no parameter, running statistic or external
/// affine indexed by it (nor any running statistics, updated over the whole batch), axis 0
/// not of fixed size, no per-element or per-chunk saved state (`tlu`, `ghost`, `renorm`,
/// `mask`), and enough elements to matter.
fn blockable(info: &LayerInfo<'_>, shape: &[usize], out: &[usize]) -> bool {
    let spec = info.spec;
    let [st] = &spec.stages[..] else {
        return false;
    };
    let numel: usize = shape.iter().product();
    let by_axis0 = match &st.affine {
        norm_spec::Affine::None => false,
        norm_spec::Affine::External => true,
        norm_spec::Affine::Axes(axes) => axes.contains(&norm_spec::ParamAxis::Input(0)),
    };
    shape == out
        && shape.len() >= 2
        && shape.len() == spec.input.len()
        && shape[0] >= 2
        && numel >= 2 * BLOCK
        && spec.input[0].size.is_none()
        && st.axes & 1 == 0
        && !st.running_stats
        && !by_axis0
        && !st.tlu
        && st.ghost.is_none()
        && st.renorm.is_none()
        && st.mask == 0
}

/// The forward pass of a [`blockable`] call as blocks of whole rows of axis 0, in parallel:
/// each block is widened, run through the f32 layer and narrowed while its f32 copies are in
/// cache. The statistics of each group are those of the whole call (a group lies in one
/// block); `Saved` concatenates the blocks' statistics, in group order (axis 0 outermost).
fn forward_blocks<T: Float>(
    info: &LayerInfo<'_>,
    wide: &[WideStage],
    x: &[T],
    shape: &[usize],
    out: &mut [T],
    saved: Option<&mut Saved<T>>,
    run: &Forward32<'_>,
) -> Result<(), NormError> {
    let per = x.len() / shape[0];
    let rows = (BLOCK / per.max(1)).max(1);
    let want_saved = saved.is_some();
    let blocks: Result<Vec<Option<SavedStage<f32>>>, NormError> = x
        .par_chunks(rows * per)
        .zip(out.par_chunks_mut(rows * per))
        .map(|(xb, ob)| {
            let mut bshape = shape.to_vec();
            bshape[0] = xb.len() / per;
            with_bufs(|b| {
                sized(&mut b.x, xb.len());
                T::widen(xb, &mut b.x);
                sized(&mut b.out, ob.len());
                let x32 = ArrayView::from_shape(IxDyn(&bshape), &b.x).expect("block shape");
                let o32 =
                    ArrayViewMut::from_shape(IxDyn(&bshape), &mut b.out).expect("block shape");
                let mut st32: Vec<StageState<'_, f32>> = wide.iter().map(WideStage::view).collect();
                let mut s32 = want_saved.then(Saved::<f32>::new);
                run(&mut st32, x32, o32, s32.as_mut(), None)?;
                T::narrow(&b.out, ob);
                Ok(s32.and_then(|s| s.stages.into_iter().next()))
            })
        })
        .collect();
    let blocks = blocks?;
    if let Some(saved) = saved {
        let first = blocks[0].as_ref().expect("saved requested");
        let stage = SavedStage {
            fixed: first.fixed,
            count: first.count,
            synced: first.synced,
            stats: blocks
                .iter()
                .flat_map(|b| b.as_ref().expect("saved requested").stats.iter().copied())
                .collect(),
            scale: Vec::new(),
            tlu_pass: Vec::new(),
            renorm: Vec::new(),
            chunks: Vec::new(),
        };
        saved.fingerprint = info.fingerprint;
        saved.shape = shape.to_vec();
        saved.stages = vec![stage];
        saved.intermediates.clear();
        saved.cell_len = 0;
        saved.cells.clear();
    }
    Ok(())
}

/// `layer::backward_into` for a `WIDE` type (`run`: the f32 entry point).
#[allow(clippy::type_complexity)]
pub(crate) fn backward_into<T: Float, D: Dimension>(
    (info, sync): (&LayerInfo<'_>, Option<&dyn Collective>),
    states: &[StageState<'_, T>],
    (x, dy): (ArrayView<'_, T, D>, ArrayView<'_, T, D>),
    saved: &Saved<T>,
    mut dx: ArrayViewMut<'_, T, D>,
    grads: &mut [StageGrads<T>],
    run: impl FnOnce(
        &[StageState<'_, f32>],
        (ArrayViewD<'_, f32>, ArrayViewD<'_, f32>),
        &Saved<f32>,
        ArrayViewMut<'_, f32, IxDyn>,
        &mut [StageGrads<f32>],
    ) -> Result<(), NormError>,
) -> Result<(), NormError> {
    let same = x.shape() == dy.shape() && x.shape() == dx.shape();
    if info.spec.chain && sync.is_none() && same {
        if let (Some(xs), Some(ds), Some(os)) = (x.as_slice(), dy.as_slice(), dx.as_slice_mut()) {
            let io = (xs, ds, os);
            if chain::backward(info, states, x.shape(), io, saved, grads).is_some() {
                return Ok(());
            }
        }
    }
    if let ([st], true) = (states, tiled::eligible(info, sync.is_some())) {
        if let (Some(xs), Some(ds), true) = (x.as_slice(), dy.as_slice(), same) {
            if let Some(os) = dx.as_slice_mut() {
                let shape = x.shape();
                let done = match tiled::backward(info, st, shape, (xs, ds, &mut *os), saved, grads)
                {
                    Some(()) => true,
                    None => rows::backward(info, st, shape, (xs, ds, os), saved, grads).is_some(),
                };
                if done {
                    return Ok(());
                }
            }
        }
    }
    let mut wide: Vec<WideStage> = states.iter().map(WideStage::of).collect();
    let saved32 = widen_saved(saved);
    let mut grads32: Vec<StageGrads<f32>> = grads
        .iter()
        .map(|g| StageGrads {
            dgamma: widen_grad(&g.dgamma),
            dbeta: widen_grad(&g.dbeta),
            dtau: widen_grad(&g.dtau),
            dmean_weight: widen_grad(&g.dmean_weight),
            dvar_weight: widen_grad(&g.dvar_weight),
        })
        .collect();
    with_bufs(|b| {
        widen_into(&x, &mut b.x);
        widen_into(&dy, &mut b.dy);
        sized(&mut b.out, dx.len());
        let x32 = ArrayView::from_shape(IxDyn(x.shape()), &b.x).expect("x's own shape");
        let dy32 = ArrayView::from_shape(IxDyn(dy.shape()), &b.dy).expect("dy's own shape");
        let dx32 = ArrayViewMut::from_shape(IxDyn(dx.shape()), &mut b.out).expect("dx's own shape");
        {
            let st32: Vec<StageState<'_, f32>> = wide.iter_mut().map(WideStage::state).collect();
            run(&st32, (x32, dy32), &saved32, dx32, &mut grads32)?;
        }
        narrow_into(&b.out, &mut dx);
        for (g32, g) in grads32.into_iter().zip(grads.iter_mut()) {
            narrow_grad(g32.dgamma, &mut g.dgamma);
            narrow_grad(g32.dbeta, &mut g.dbeta);
            narrow_grad(g32.dtau, &mut g.dtau);
            narrow_grad(g32.dmean_weight, &mut g.dmean_weight);
            narrow_grad(g32.dvar_weight, &mut g.dvar_weight);
        }
        Ok(())
    })
}

/// `layer::stats` for a `WIDE` type: the moments rounded from f64 through f32 (`run`: the
/// f32 entry point).
pub(crate) fn stats<T: Float, D: Dimension>(
    states: &[StageState<'_, T>],
    x: ArrayView<'_, T, D>,
    run: impl FnOnce(&[StageState<'_, f32>], ArrayViewD<'_, f32>) -> Result<Moments<f32>, NormError>,
) -> Result<Moments<T>, NormError> {
    let mut wide: Vec<WideStage> = states.iter().map(WideStage::of).collect();
    let mut x32 = Vec::new();
    widen_into(&x, &mut x32);
    let x32 = ArrayView::from_shape(IxDyn(x.shape()), &x32).expect("x's own shape");
    let st32: Vec<StageState<'_, f32>> = wide.iter_mut().map(WideStage::state).collect();
    let m = run(&st32, x32)?;
    let narrow = |a: ArrayD<f32>| {
        let a = a.as_standard_layout().into_owned();
        let v = narrow_vec::<T>(a.as_slice().expect("standard layout"));
        ArrayD::from_shape_vec(a.raw_dim(), v).expect("the moments' own shape")
    };
    Ok(Moments {
        mean: narrow(m.mean),
        var: narrow(m.var),
    })
}
