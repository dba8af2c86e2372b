//! Fused chains: every stage of a chain (Batch-Channel Normalization: batch norm, then group
//! norm) in two passes over the input, instead of two passes per stage plus a saved
//! intermediate.
//!
//! The idea is a common refinement of the stages' statistics groups. Take the longest
//! trailing run of `L` elements (the *cell*, e.g. the `H·W` plane of one sample and channel)
//! over which no stage's statistics group or parameter changes. Within a cell every stage
//! is an affine map of the chain's input: stage `s` sees `z_s = λ·x + ν` with per-cell
//! `λ`, `ν`. So
//!
//! * **forward**: one pass takes each cell's mean and M2 (exact shifted f64 sums); the
//!   statistics of every stage follow from those in f64 — a cell of `z_s` has mean
//!   `λ·mean + ν` and M2 `λ²·M2`, merged per group with Chan's formula in cell order — and a
//!   second pass writes `y = λ_out·x + ν_out`;
//! * **backward**: one pass takes each cell's `Σdy` and `Σdy·(x − m)`; the upstream gradient
//!   of every stage stays affine in `(dy, x)` per cell, so each stage's group sums and
//!   parameter gradients follow in f64, down to `dx = e·dy + f·(x − m) + h`, written by a
//!   second pass;
//! * **blocks**: the cells split into blocks that no stage's statistics group crosses (for
//!   Batch-Channel Normalization: one group of channels over the whole batch). Where there
//!   are several, of one size and small enough for a core's cache
//!   ([`simd::block_bytes`]), one task runs both passes of a block back to back, so the
//!   second pass reads the block from the cache instead of memory
//!   ([`crate::kernels::cells`]); otherwise each pass runs over all the cells. The sums of a
//!   group are taken in the same order either way: the blocking does not change the
//!   results.
//!
//! The arithmetic is that of the stage-by-stage path (the same per-group statistics and dx
//! terms, [`stats::dx_terms`]), except that the intermediate is never rounded to the element
//! type; results agree to rounding. The fused path takes chains whose stages normalize
//! with batch statistics or fixed running statistics and carry axis parameters (or none);
//! synchronized calls and external affine run stage by stage.

use norm_spec::{Affine, Spec};

use crate::collective::merge;
use crate::kernels::cells::{self, BlockDxFinish, BlockFinish, Cells, CoefOut};
use crate::kernels::coef;
use crate::kernels::exec::{Acc, ShiftedSums, Stat};
use crate::plan::Plan;
use crate::state::{resize, values, BackwardIo, LayerInfo, StageState};
use crate::stats;
use crate::types::{Mode, Saved, StageGrads};
use crate::Float;

mod layout;

use layout::{constant_on, Layout};

/// Cells shorter than this run stage by stage: per-cell bookkeeping would outweigh the pass
/// it saves.
const MIN_CELL: usize = 64;

/// One block's state (reused across calls).
#[derive(Debug, Default)]
pub(crate) struct Block {
    /// Per slot: the cell's mean and M2.
    cells: Vec<(f64, f64)>,
    /// Per stage and slot (`s · block + j`): the stage input z_s = λ·x + ν.
    lam: Vec<f64>,
    nu: Vec<f64>,
    /// Per local group of the stage at hand: (count, mean, M2) or the backward sums.
    acc: Vec<(f64, f64, f64)>,
    /// Per stage (at `Layout::loff`) and local group: the statistics.
    stats: Vec<Stat>,
    /// Per slot: the upstream gradient δ = e·dy + f·(x − m) + h.
    e: Vec<f64>,
    f: Vec<f64>,
    h: Vec<f64>,
    /// Per slot, for the stage at hand: x̂ = p·(x − m) + q, and γ.
    pqg: Vec<(f64, f64, f64)>,
    /// Per stage and slot: the cell's Σδ·x̂ and Σδ (parameter gradients).
    dp: Vec<(f64, f64)>,
}

/// Every stage's γ and β in f64 (1 and 0 where absent), per parameter offset.
#[derive(Debug, Default)]
struct Affines {
    /// Where each stage's values start.
    off: Vec<usize>,
    gb: Vec<(f64, f64)>,
}

impl Affines {
    /// From the stages' parameters (`params[s]` values each).
    fn fill<T: Float>(&mut self, states: &[StageState<'_, T>], params: &[usize]) {
        self.off.clear();
        self.gb.clear();
        for (st, &np) in states.iter().zip(params) {
            let at = self.gb.len();
            self.off.push(at);
            self.gb.resize(at + np.max(1), (1.0, 0.0));
            if let Some(g) = st.gamma.as_ref() {
                for (d, v) in self.gb[at..].iter_mut().zip(values(g).iter()) {
                    d.0 = v.to_acc();
                }
            }
            if let Some(b) = st.beta.as_ref() {
                for (d, v) in self.gb[at..].iter_mut().zip(values(b).iter()) {
                    d.1 = v.to_acc();
                }
            }
        }
    }

    /// γ and β of stage `s` at parameter offset `p`.
    fn at(&self, s: usize, p: usize) -> (f64, f64) {
        self.gb[self.off[s] + p]
    }
}

/// Per-call scratch of the fused path (reused across calls: no allocation once grown).
#[derive(Debug, Default)]
pub(crate) struct ChainScratch<T> {
    layout: Layout,
    blocks: Vec<Block>,
    aff: Affines,
    /// Per slot: raw sums (forward), Σdy and Σdy·(x − m) (backward).
    raws: Vec<ShiftedSums>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    /// Per slot: the elementwise coefficients.
    c: Vec<T>,
    m: Vec<T>,
    a: Vec<T>,
    b: Vec<T>,
    dparams: Vec<f64>,
    run: Vec<f64>,
    exec: Acc,
}

impl<T: Float> ChainScratch<T> {
    /// The layout for `shape` (elements of type `E`), each stage's γ and β in f64, and one
    /// state per block.
    fn prepare<E: Float>(
        &mut self,
        info: &LayerInfo<'_>,
        states: &[StageState<'_, E>],
        shaped: Shaped<'_>,
        len: usize,
    ) {
        let lay = &mut self.layout;
        lay.build(info, shaped, len, std::mem::size_of::<E>());
        self.blocks.resize_with(lay.blocks(), Block::default);
        self.aff.fill(states, &lay.params);
        let n = lay.cells;
        // Sized, not zeroed: every slot's coefficients are written (by its block's finish,
        // or the backward's cell means) before a pass reads them.
        for v in [&mut self.c, &mut self.m, &mut self.a, &mut self.b] {
            v.resize(n, T::zero());
        }
    }
}

/// An input shape with the plan of every stage on it (built once per call).
pub(crate) type Shaped<'a> = (&'a [usize], &'a [Plan]);

/// The cell length of a chain on `shape`, if it takes the fused path: the longest trailing
/// run (a product of trailing dims, shorter than the input) over which, in every stage's
/// plan, neither the statistics group nor the parameters move.
pub(crate) fn cell_len(info: &LayerInfo<'_>, plans: &[Plan], shape: &[usize]) -> Option<usize> {
    let spec = info.spec;
    if spec.stages.len() < 2
        || spec.stages.iter().any(|s| s.affine == Affine::External)
        || spec.stages.iter().any(crate::variants::unfusable)
    {
        return None;
    }
    let numel = plans.first()?.numel;
    if numel == 0 {
        return None;
    }
    // Candidate k: the product of the last k + 1 dims; a bit per candidate every stage takes.
    let mut ok = u32::MAX;
    for plan in plans {
        let mut len = 1;
        for (k, &d) in shape.iter().rev().enumerate() {
            // A product of trailing sizes of a non-empty input: at most `numel`.
            len *= d;
            if !constant_on(plan, len) {
                ok &= !(1 << k);
            }
        }
    }
    let mut len = 1;
    let mut best = None;
    for (k, &d) in shape.iter().rev().enumerate() {
        len *= d;
        if len < numel && ok & (1 << k) != 0 {
            best = Some(len);
        }
    }
    best.filter(|&l| l >= MIN_CELL)
}

/// What every block of a call reads: the layout and the stages' parameters.
struct Ctx<'a> {
    spec: &'a Spec,
    lay: &'a Layout,
    aff: &'a Affines,
    /// Elements per cell.
    len: f64,
}

impl<'a> Ctx<'a> {
    fn new(spec: &'a Spec, lay: &'a Layout, aff: &'a Affines, len: usize) -> Self {
        let len = len as f64;
        Ctx {
            spec,
            lay,
            aff,
            len,
        }
    }

    /// Index of stage `s` and slot `i` in the per-stage, per-slot arrays of the layout.
    fn at(&self, s: usize, i: usize) -> usize {
        s * self.lay.cells + i
    }

    /// The cell at slot `i`.
    fn cell(&self, i: usize) -> usize {
        self.lay.order[i]
    }

    /// γ and β of stage `s` at slot `i`.
    fn affine(&self, s: usize, i: usize) -> (f64, f64) {
        self.aff.at(s, self.lay.param[self.at(s, self.cell(i))])
    }

    /// The input of stage `s + 1` at the slots of block `b` from that of stage `s`
    /// (`blk.lam`, `blk.nu`, per stage and slot): y = ((z − mean)·rstd)·γ + β, where `stat(j)`
    /// gives the stage's statistics at the block's slot `j`.
    fn advance(&self, s: usize, b: usize, blk: &mut Block, stat: impl Fn(&Block, usize) -> Stat) {
        let bs = self.lay.block;
        for j in 0..bs {
            let st = stat(blk, j);
            let (g, beta) = self.affine(s, b * bs + j);
            let scale = st.rstd * g;
            let (i0, i1) = (s * bs + j, (s + 1) * bs + j);
            blk.lam[i1] = blk.lam[i0] * scale;
            blk.nu[i1] = (blk.nu[i0] - st.mean) * scale + beta;
        }
    }

    /// Forward: the statistics of every stage over block `b` from its cells' raw sums, and
    /// the cells' coefficients of y = λ·x + ν = (x − mean)·λ + (λ·mean + ν). Stages with
    /// fixed statistics take them from `saved`.
    fn finish_forward<'s, T: Float>(
        &self,
        b: usize,
        blk: &mut Block,
        raws: &[ShiftedSums],
        (m, a, bb): CoefOut<'_, T>,
        fixed: impl Fn(usize) -> Option<&'s [Stat]>,
    ) {
        let (lay, nst, lf) = (self.lay, self.spec.stages.len(), self.len);
        let bs = lay.block;
        blk.cells.clear();
        blk.cells.extend(raws.iter().map(|r| {
            let d = r.sum / lf;
            let m2 = r.sq - r.sum * d;
            (r.shift + d, if m2 < 0.0 { 0.0 } else { m2 })
        }));
        resize(&mut blk.lam, (nst + 1) * bs, 1.0);
        resize(&mut blk.nu, (nst + 1) * bs, 0.0);
        resize(&mut blk.stats, lay.ng.iter().sum(), Stat::default());
        for (s, stage) in self.spec.stages.iter().enumerate() {
            let (ng, lo) = (lay.ng[s], lay.loff[s]);
            if let Some(stats) = fixed(s) {
                for j in 0..ng {
                    blk.stats[lo + j] = stats[lay.global(s, b, j)];
                }
            } else {
                // Cells of z_s merged per group in cell order (Chan's formula; plain sums of
                // squares without centering).
                resize(&mut blk.acc, ng, (0.0, 0.0, 0.0));
                for j in 0..bs {
                    let (lam, nu) = (blk.lam[s * bs + j], blk.nu[s * bs + j]);
                    let (cm, cm2) = blk.cells[j];
                    let (mb, m2b) = (lam * cm + nu, lam * lam * cm2);
                    let a = &mut blk.acc[lay.local[self.at(s, b * bs + j)]];
                    if stage.center {
                        merge((&mut a.0, &mut a.1, &mut a.2), (lf, mb, m2b));
                    } else {
                        a.0 += lf;
                        a.2 += m2b + lf * mb * mb;
                    }
                }
                for (j, &(_, mean, m2)) in blk.acc.iter().enumerate() {
                    blk.stats[lo + j] = stats::group_stat(stage, mean, m2, lay.count[s]);
                }
            }
            let local = |blk: &Block, j: usize| blk.stats[lo + lay.local[self.at(s, b * bs + j)]];
            self.advance(s, b, blk, local);
        }
        for j in 0..bs {
            let (lam, nu) = (blk.lam[nst * bs + j], blk.nu[nst * bs + j]);
            let mean = blk.cells[j].0;
            (m[j], a[j], bb[j]) = coef(mean, lam, lam * mean + nu);
        }
    }

    /// Backward: from the cells' Σdy and Σdy·(x − m) over block `b` (m: the cell's mean in
    /// the element type, `xm`), each stage's group sums and the cells' parameter-gradient
    /// terms (`blk.dp`), down to the cells' coefficients of dx = e·dy + f·(x − m) + h.
    fn finish_backward<E: Float, T: Float>(
        &self,
        b: usize,
        blk: &mut Block,
        (s1, s2): (&[f64], &[f64]),
        (c, a, bb): CoefOut<'_, T>,
        saved: &Saved<E>,
        xm: &[T],
    ) {
        let (lay, nst, lf) = (self.lay, self.spec.stages.len(), self.len);
        let bs = lay.block;
        let base = b * bs;
        // The stage inputs z_s = λ·x + ν per cell, as in the forward pass.
        resize(&mut blk.lam, nst * bs, 1.0);
        resize(&mut blk.nu, nst * bs, 0.0);
        for s in 0..nst - 1 {
            let stats = &saved.stages[s].stats;
            let stat = |_: &Block, j: usize| stats[lay.group[self.at(s, self.cell(base + j))]];
            self.advance(s, b, blk, stat);
        }
        // The upstream gradient δ = e·dy + f·u + h per cell, u = x − m; δ = dy at the output.
        resize(&mut blk.e, bs, 1.0);
        resize(&mut blk.f, bs, 0.0);
        resize(&mut blk.h, bs, 0.0);
        resize(&mut blk.pqg, bs, (0.0, 0.0, 0.0));
        resize(&mut blk.dp, nst * bs, (0.0, 0.0));
        for s in (0..nst).rev() {
            let stage = &self.spec.stages[s];
            let sv = &saved.stages[s];
            let stat_at = |j: usize| sv.stats[lay.group[self.at(s, self.cell(base + j))]];
            resize(&mut blk.acc, lay.ng[s], (0.0, 0.0, 0.0));
            // x̂ = p·u + q per cell; the cell's Σδ, Σδ·x̂ into the group and parameter sums.
            for j in 0..bs {
                let i = base + j;
                let stat = stat_at(j);
                let (lam, nu) = (blk.lam[s * bs + j], blk.nu[s * bs + j]);
                let m = xm[i].to_acc();
                let (p, q) = (lam * stat.rstd, (lam * m + nu - stat.mean) * stat.rstd);
                let (g, _) = self.affine(s, i);
                blk.pqg[j] = (p, q, g);
                let (mean, m2) = saved.cells[self.cell(i)];
                let dm = mean - m;
                let (u1, u2) = (lf * dm, m2 + lf * dm * dm);
                let (e, f, h) = (blk.e[j], blk.f[j], blk.h[j]);
                let sd = e * s1[j] + f * u1 + h * lf;
                let sdu = e * s2[j] + f * u2 + h * u1;
                let sdx = p * sdu + q * sd;
                blk.dp[s * bs + j] = (sdx, sd);
                let a = &mut blk.acc[lay.local[self.at(s, i)]];
                a.0 += g * sd;
                a.1 += g * sdx;
            }
            // Per group: dz = g·r + x̂·c1 + c0 (the stage-by-stage path's terms).
            for (j, a) in blk.acc.iter_mut().enumerate() {
                let stat = &sv.stats[lay.global(s, b, j)];
                let (c0, c1) = stats::dx_terms(stage, stat, sv.count, sv.fixed, a.0, a.1);
                *a = (c0, c1, 0.0);
            }
            for j in 0..bs {
                let stat = stat_at(j);
                let (c0, c1, _) = blk.acc[lay.local[self.at(s, base + j)]];
                let (p, q, g) = blk.pqg[j];
                let gr = g * stat.rstd;
                let (e, f, h) = (blk.e[j], blk.f[j], blk.h[j]);
                blk.e[j] = gr * e;
                blk.f[j] = gr * f + p * c1;
                blk.h[j] = gr * h + q * c1 + c0;
            }
        }
        for j in 0..bs {
            c[j] = T::from_acc(blk.e[j]);
            a[j] = T::from_acc(blk.f[j]);
            bb[j] = T::from_acc(blk.h[j]);
        }
    }
}

/// A fused chain in one call: what both passes need besides their buffers.
#[derive(Clone, Copy)]
pub(crate) struct Fused<'a> {
    /// The layer.
    pub info: &'a LayerInfo<'a>,
    /// The input shape.
    pub shape: &'a [usize],
    /// The plan of every stage on it (built once per call).
    pub plans: &'a [Plan],
    /// The cell length ([`cell_len`]).
    pub len: usize,
}

/// The two forward passes over the cells for [`forward_by`] (`cells::forward` on the
/// element type's data; the half-precision path passes its own): the cells, their raw sums
/// out, their coefficients out, one state per block, and the finish of a block.
pub(crate) trait ForwardPasses<C: Float> {
    /// Runs both passes.
    fn run(
        self,
        cells: &Cells<'_>,
        raws: &mut [ShiftedSums],
        coefs: CoefOut<'_, C>,
        blocks: &mut [Block],
        finish: &BlockFinish<'_, C, Block>,
    );
}

/// What the two backward passes of [`backward_by`] work on besides the data.
pub(crate) struct DxPass<'a, C> {
    /// The cells.
    pub cells: &'a Cells<'a>,
    /// Each slot's cell mean.
    pub xm: &'a [C],
    /// Σdy and Σdy·(x − m) per slot, out.
    pub sums: (&'a mut [f64], &'a mut [f64]),
    /// The dx coefficients per slot, out.
    pub coefs: CoefOut<'a, C>,
    /// One state per block.
    pub blocks: &'a mut [Block],
    /// The finish of a block.
    pub finish: &'a BlockDxFinish<'a, C, Block>,
    /// An accumulator buffer.
    pub acc: &'a mut Vec<f64>,
}

/// The two backward passes over the cells for [`backward_by`] ([`DxPass`]: what they
/// work on).
pub(crate) trait BackwardPasses<C: Float> {
    /// Runs both passes.
    fn run(self, pass: DxPass<'_, C>);
}

/// `cells::forward` over the element type's own data.
struct Own<'d, T>(&'d [T], &'d mut [T]);

impl<T: Float> ForwardPasses<T> for Own<'_, T> {
    fn run(
        self,
        cells: &Cells<'_>,
        raws: &mut [ShiftedSums],
        coefs: CoefOut<'_, T>,
        blocks: &mut [Block],
        finish: &BlockFinish<'_, T, Block>,
    ) {
        cells::forward(cells, self.0, raws, coefs, blocks, finish, self.1);
    }
}

/// `cells::backward` over the element type's own data.
struct OwnDx<'d, T>(BackwardIo<'d, T>);

impl<T: Float> BackwardPasses<T> for OwnDx<'_, T> {
    fn run(self, pass: DxPass<'_, T>) {
        let BackwardIo { x, dy, dx } = self.0;
        let DxPass {
            cells,
            xm,
            sums,
            coefs,
            blocks,
            finish,
            acc,
        } = pass;
        cells::backward(cells, (x, dy, xm), sums, coefs, (blocks, finish), acc, dx);
    }
}

/// Forward pass of a fused chain with cells of `len` elements (see the module docs).
pub(crate) fn forward<T: Float>(
    call: Fused<'_>,
    states: &mut [StageState<'_, T>],
    (x, out): (&[T], &mut [T]),
    mode: Mode,
    saved: &mut Saved<T>,
    cs: &mut ChainScratch<T>,
) {
    forward_by(call, states, mode, saved, cs, Own(x, out));
    if mode == Mode::Train {
        for (s, stage) in call.info.spec.stages.iter().enumerate() {
            let sv = &saved.stages[s];
            let running = states[s].running.as_mut();
            stats::train_running(
                stage,
                &call.plans[s],
                sv.count,
                &sv.stats,
                running,
                &mut cs.run,
            );
        }
    }
}

/// The forward pass of a fused chain on data of type `E` with coefficients in `C`
/// (`passes` runs the two passes over the data): the statistics into `saved`, not the
/// running statistics (the caller updates them from `saved`'s statistics in train mode).
pub(crate) fn forward_by<E: Float, C: Float>(
    call: Fused<'_>,
    states: &[StageState<'_, E>],
    mode: Mode,
    saved: &mut Saved<E>,
    cs: &mut ChainScratch<C>,
    passes: impl ForwardPasses<C>,
) {
    let Fused {
        info,
        shape,
        plans,
        len,
    } = call;
    let spec = info.spec;
    cs.prepare(info, states, (shape, plans), len);
    let fixed = |s: usize| mode == Mode::Eval && spec.stages[s].running_stats;
    for (s, stage) in spec.stages.iter().enumerate() {
        let sv = &mut saved.stages[s];
        resize(&mut sv.stats, cs.layout.groups[s], Stat::default());
        if fixed(s) {
            let running = states[s]
                .running
                .as_ref()
                .expect("checked: running statistics present");
            stats::running_stats(stage, &plans[s], running, &mut sv.stats);
        }
        sv.fixed = fixed(s);
        sv.synced = false;
        sv.count = cs.layout.count[s];
        sv.scale.clear();
    }
    let ChainScratch {
        layout: lay,
        blocks,
        aff,
        raws,
        m,
        a,
        b,
        ..
    } = cs;
    let ctx = Ctx::new(spec, lay, aff, len);
    // Sized, not zeroed: the first pass writes every slot's sums before they are read.
    raws.resize(lay.cells, ShiftedSums::default());
    let stages = &saved.stages;
    let finish = |k: usize, blk: &mut Block, raws: &[ShiftedSums], coefs: CoefOut<'_, C>| {
        let stats = |s: usize| fixed(s).then_some(&stages[s].stats[..]);
        ctx.finish_forward(k, blk, raws, coefs, stats);
    };
    let cells = Cells {
        len,
        order: &lay.order,
        block: lay.block,
    };
    passes.run(&cells, raws, (m, a, b), blocks, &finish);
    // The cells' moments and the statistics back into the saved state, in cell and group
    // order.
    let bs = lay.block;
    // Sized, not zeroed: `order` is a permutation, so the loop writes every cell.
    saved.cells.resize(lay.cells, (0.0, 0.0));
    for (i, &k) in lay.order.iter().enumerate() {
        saved.cells[k] = blocks[i / bs].cells[i % bs];
    }
    saved.cell_len = len;
    for v in &mut saved.intermediates {
        v.clear();
    }
    for s in 0..spec.stages.len() {
        let sv = &mut saved.stages[s];
        if !sv.fixed {
            for (k, blk) in blocks.iter().enumerate() {
                for j in 0..lay.ng[s] {
                    sv.stats[lay.global(s, k, j)] = blk.stats[lay.loff[s] + j];
                }
            }
        }
    }
}

/// Backward pass of a fused chain (`saved` from [`forward`], whose cell length `call`
/// carries; see the module docs).
pub(crate) fn backward<T: Float>(
    call: Fused<'_>,
    states: &[StageState<'_, T>],
    io: BackwardIo<'_, T>,
    saved: &Saved<T>,
    grads: &mut [StageGrads<T>],
    cs: &mut ChainScratch<T>,
) {
    backward_by(call, states, saved, grads, cs, OwnDx(io));
}

/// The backward pass of a fused chain on data of type `E` with coefficients in `C`
/// (`passes` runs the two passes over the data). The parameter gradients are rounded
/// through `C` (as the layer of element type `C` computes them) and then to `E`.
pub(crate) fn backward_by<E: Float, C: Float>(
    call: Fused<'_>,
    states: &[StageState<'_, E>],
    saved: &Saved<E>,
    grads: &mut [StageGrads<E>],
    cs: &mut ChainScratch<C>,
    passes: impl BackwardPasses<C>,
) {
    let Fused {
        info,
        shape,
        plans,
        len,
    } = call;
    let spec = info.spec;
    cs.prepare(info, states, (shape, plans), len);
    let ChainScratch {
        layout: lay,
        blocks,
        aff,
        s1,
        s2,
        c,
        m,
        a,
        b,
        dparams,
        exec,
        ..
    } = cs;
    // m: each cell's mean in the coefficients' type, per slot.
    for (mi, &k) in m.iter_mut().zip(lay.order.iter()) {
        *mi = C::from_acc(saved.cells[k].0);
    }
    resize(s1, lay.cells, 0.0);
    resize(s2, lay.cells, 0.0);
    let ctx = Ctx::new(spec, lay, aff, len);
    let xm = &m[..];
    let finish = |k: usize, blk: &mut Block, sums: (&[f64], &[f64]), coefs: CoefOut<'_, C>| {
        ctx.finish_backward(k, blk, sums, coefs, saved, xm);
    };
    let cells = Cells {
        len,
        order: &lay.order,
        block: lay.block,
    };
    let coefs = (&mut c[..], &mut a[..], &mut b[..]);
    passes.run(DxPass {
        cells: &cells,
        xm,
        sums: (s1, s2),
        coefs,
        blocks,
        finish: &finish,
        acc: &mut exec.f,
    });
    // Parameter gradients: the cells' terms summed in cell order.
    let bs = lay.block;
    for (s, stage) in spec.stages.iter().enumerate() {
        let gr = &mut grads[s];
        if !matches!(stage.affine, Affine::Axes(_)) {
            gr.dgamma = None;
            gr.dbeta = None;
            continue;
        }
        let params = lay.params[s];
        resize(dparams, 2 * params, 0.0);
        for k in 0..lay.cells {
            let i = lay.slot[k];
            let (sdx, sd) = blocks[i / bs].dp[s * bs + i % bs];
            let p = lay.param[s * lay.cells + k];
            dparams[p] += sdx;
            dparams[params + p] += sd;
        }
        for v in dparams.iter_mut() {
            *v = C::from_acc(*v).to_acc();
        }
        let pshape = plans[s].param_shape.as_slice();
        stats::fill_grad(&mut gr.dgamma, pshape, &dparams[..params]);
        if stage.bias {
            stats::fill_grad(&mut gr.dbeta, pshape, &dparams[params..]);
        } else {
            gr.dbeta = None;
        }
    }
}
