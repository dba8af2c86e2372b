//! The passes of a fused chain ([`crate::chain`]) over its *cells*: contiguous lines of
//! `len` elements, each with its own coefficients.
//!
//! The chain visits the cells in *blocks*: sets of cells that no stage's statistics group
//! crosses (for Batch-Channel Normalization, one group of channels over the whole batch).
//! A block can be finished on its own, so one task runs both passes of a block back to back:
//! the first pass reads the block from memory, the chain's bookkeeping turns its sums into
//! coefficients, and the second pass reads the block again from the core's own cache. The
//! second pass of a block runs in the same loop as the first pass of the task's next block
//! (the pipelined row kernels of `reduce`). When the whole input is one block, each pass
//! runs in parallel over the cells instead, with the bookkeeping between them.
//!
//! Blocks are a function of the shape only, and every sum is taken in the same order as in
//! the one-block case: results do not depend on the blocking or on the number of threads.

use rayon::prelude::*;

use super::exec::{
    self, BackIn, Params, Permutation, SharedOut, ShiftedSums, Split, TaskOut, Units, TASKS,
    TASK_ELEMS,
};
use super::isa::multiversion;
use super::lines::{self, DParam, ParamLine};
use super::reduce::{row_dx_portable, DxRows, Rows};
use crate::kernels::elem::RowReduce;
use crate::Float;

/// The cells of a fused chain in visiting order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cells<'a> {
    /// Elements per cell.
    pub len: usize,
    /// Slot → cell (a cell `k` is the line `k·len..(k + 1)·len`). A permutation of
    /// `0..order.len()` (its type checks it): every slot writes its own line.
    pub order: &'a Permutation,
    /// Slots per block; a divisor of `order.len()`. One block of all the cells has `order`
    /// the identity.
    pub block: usize,
}

/// One task's cells: `slots`, a run of a [`Cells::order`], in blocks of `block` slots.
#[derive(Clone, Copy)]
struct TaskCells<'a> {
    len: usize,
    slots: &'a [usize],
    block: usize,
}

impl Cells<'_> {
    /// Blocks per task: about [`TASKS`]` / 2` tasks (a task pipelines across its blocks, so
    /// fewer, longer tasks), none smaller than [`TASK_ELEMS`] elements where the blocks
    /// allow. A function of the shape only.
    fn per_task(&self) -> usize {
        let blocks = self.order.len() / self.block;
        let least = (TASK_ELEMS / (self.block * self.len).max(1)).max(1);
        blocks.div_ceil(TASKS / 2).max(least)
    }

    /// Whether the cells are one block (in memory order).
    fn single(&self) -> bool {
        self.block == self.order.len()
    }
}

/// Per-slot coefficients of one block, written by its finish: (m, a, b) forward, (c, a, b)
/// backward.
pub(crate) type CoefOut<'a, T> = (&'a mut [T], &'a mut [T], &'a mut [T]);

/// Finishes a block of the forward pass: `(block, its state, its slots' raw sums, their
/// coefficients out)`.
pub(crate) type BlockFinish<'a, T, S> =
    dyn Fn(usize, &mut S, &[ShiftedSums], CoefOut<'_, T>) + Sync + 'a;

/// Finishes a block of the backward pass: `(block, its state, its slots' Σdy and
/// Σdy·(x − m), their dx coefficients (c, a, b) out)`.
pub(crate) type BlockDxFinish<'a, T, S> =
    dyn Fn(usize, &mut S, (&[f64], &[f64]), CoefOut<'_, T>) + Sync + 'a;

/// Raw shifted sums of cell `k` (shift: its first value).
#[inline(always)]
fn cell_sums<T: Float>(x: &[T], len: usize, k: usize) -> ShiftedSums {
    let row = &x[k * len..(k + 1) * len];
    let shift = row[0].to_acc();
    let (sum, sq) = lines::row_sums(row, shift);
    ShiftedSums { shift, sum, sq }
}

/// Raw shifted sums of the cells `slots`.
#[inline(always)]
fn raws_of<T: Float>(x: &[T], len: usize, slots: &[usize], raws: &mut [ShiftedSums]) {
    for (&k, r) in slots.iter().zip(raws) {
        *r = cell_sums(x, len, k);
    }
}

/// Σdy and Σdy·(x − m) of the cells `slots`, one m per slot.
#[inline(always)]
fn dsums_of<T: Float>(
    x: &[T],
    dy: &[T],
    len: usize,
    slots: &[usize],
    m: &[T],
    (s1, s2): (&mut [f64], &mut [f64]),
) {
    let (one, zero) = ([T::one()], [T::zero()]);
    for (i, &k) in slots.iter().enumerate() {
        let r = k * len..(k + 1) * len;
        let (xs, ds) = (&x[r.clone()], &dy[r]);
        s1[i] = 0.0;
        s2[i] = 0.0;
        let (sg, sgx) = (&mut s1[i..=i], &mut s2[i..=i]);
        lines::dsums::<T, false>((xs, ds), (&m[i..=i], &one, &zero), DParam::None, (sg, sgx));
    }
}

/// Whether slot `i + 1` of `slots` is the cell right after that of slot `i` in memory: a
/// pipelined kernel reducing slot `i` may prefetch it ([`Rows::ahead`]).
#[inline(always)]
fn ahead(slots: &[usize], i: usize) -> bool {
    i + 1 < slots.len() && slots[i + 1] == slots[i] + 1
}

/// The forward finish of one task's blocks: `(block within the task, raw sums, coefficients
/// out)`.
type TaskFinish<'a, T> = dyn FnMut(usize, &[ShiftedSums], CoefOut<'_, T>) + 'a;

/// The backward finish of one task's blocks: `(block within the task, sums, coefficients
/// out)`.
type TaskDxFinish<'a, T> = dyn FnMut(usize, (&[f64], &[f64]), CoefOut<'_, T>) + 'a;

multiversion! {
    /// Both forward passes over the blocks of one task (`task`: its slots, `bs` slots per
    /// block), software-pipelined across blocks: the affine pass of block j runs in the same
    /// loop as the sums of block j + 1, slot by slot (bit-identical to the separate passes).
    fn forward_task<T: Float>(
        x: &[T],
        task: TaskCells<'_>,
        raws: &mut [ShiftedSums],
        coef: CoefOut<'_, T>,
        finish: &mut TaskFinish<'_, T>,
        out: TaskOut<'_, T>,
    ) {
        let mut out = out;
        let TaskCells { len, slots, block: bs } = task;
        let (stream, pipelined) = (out.stream, out.pipelined);
        let (m, a, b) = coef;
        let blocks = slots.len() / bs;
        raws_of(x, len, &slots[..bs], &mut raws[..bs]);
        for j in 0..blocks {
            let r = j * bs..(j + 1) * bs;
            finish(j, &raws[r.clone()], (&mut m[r.clone()], &mut a[r.clone()], &mut b[r.clone()]));
            let next = (j + 1 < blocks).then(|| &slots[r.end..r.end + bs]);
            let Some(next) = (if pipelined { next } else { None }) else {
                // The two passes in turn: at levels without the pipelined kernel, and the
                // last block's affine pass. In a loop without the pipelined call, which needs
                // no `black_box` (below).
                for i in r.clone() {
                    // The line of cell `slots[i]`, its length as `len` (as `xs`): the
                    // kernels' length checks fold away.
                    let (xo, y) = out.slot(i);
                    let (xs, y) = (&x[xo..xo + len], &mut y[..len]);
                    lines::affine::<T, false>(xs, y, &[m[i]], &[a[i]], &[b[i]], ParamLine::None);
                    if let Some(next) = next {
                        raws[i + bs] = cell_sums(x, len, next[i - r.start]);
                    }
                }
                continue;
            };
            for i in r.clone() {
                let (xo, y) = out.slot(i);
                let (xs, y) = (&x[xo..xo + len], &mut y[..len]);
                let c = (m[i], a[i], b[i]);
                let nxo = next[i - r.start] * len;
                let nx = &x[nxo..nxo + len];
                let shift = nx[0].to_acc();
                let row = (nx, ahead(next, i - r.start));
                let sh = (shift, true);
                let (sum, sq) = match T::affine_then_sums(xs, y, c, None, row, sh, stream) {
                    Some(sums) => sums,
                    None => {
                        // Through `black_box`, as in `exec::groups_forward`: no spills around
                        // the pipelined kernel's call.
                        let (c, shift) = std::hint::black_box((c, shift));
                        lines::affine::<T, false>(xs, y, &[c.0], &[c.1], &[c.2], ParamLine::None);
                        lines::row_sums(nx, shift)
                    }
                };
                raws[i + bs] = ShiftedSums { shift, sum, sq };
            }
        }
    }
}

multiversion! {
    /// Both backward passes over the blocks of one task (as `forward_task`) of the input
    /// `io` = (x, dy): the dx pass of block j runs in the same loop as the sums of block
    /// j + 1. `m`: each slot's cell mean.
    fn backward_task<T: Float>(
        io: (&[T], &[T]),
        task: TaskCells<'_>,
        m: &[T],
        sums: (&mut [f64], &mut [f64]),
        coef: CoefOut<'_, T>,
        finish: &mut TaskDxFinish<'_, T>,
        out: TaskOut<'_, T>,
    ) {
        let mut out = out;
        let (x, dy) = io;
        let TaskCells { len, slots, block: bs } = task;
        let stream = out.stream;
        let ((s1, s2), (c, a, b)) = (sums, coef);
        let blocks = slots.len() / bs;
        dsums_of(x, dy, len, &slots[..bs], &m[..bs], (&mut s1[..bs], &mut s2[..bs]));
        for j in 0..blocks {
            let r = j * bs..(j + 1) * bs;
            let coefs = (&mut c[r.clone()], &mut a[r.clone()], &mut b[r.clone()]);
            finish(j, (&s1[r.clone()], &s2[r.clone()]), coefs);
            let next = (j + 1 < blocks).then(|| &slots[r.end..r.end + bs]);
            for i in r.clone() {
                // The line of cell `slots[i]`.
                let (xo, dx) = out.slot(i);
                // The line's length as `len`, as in `forward_task`.
                let dx = &mut dx[..len];
                let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
                let cur = (c[i], m[i], a[i], b[i]);
                let Some(next) = next else {
                    row_dx_portable(xs, ds, dx, cur, None);
                    continue;
                };
                let nxo = next[i - r.start] * len;
                let rows = Rows {
                    x: [&x[nxo..nxo + len]],
                    dy: [&dy[nxo..nxo + len]],
                    c: [(m[i + bs], T::one(), T::zero())],
                    ahead: ahead(next, i - r.start),
                };
                let cur = DxRows {
                    x: [xs],
                    dy: [ds],
                    dx: [dx],
                    c: [cur],
                    g: None,
                    stream,
                    pipeline: false,
                };
                let [(t1, t2)] = T::dx_then_dsums(cur, rows, None);
                (s1[i + bs], s2[i + bs]) = (t1, t2);
            }
        }
    }
}

/// The forward passes: raw sums per slot into `raws`, `finish` per block → (m, a, b) per
/// slot, y = (x − m)·a + b. `locals` holds one state per block.
pub(crate) fn forward<T: Float, S: Send>(
    cells: &Cells<'_>,
    x: &[T],
    raws: &mut [ShiftedSums],
    (m, a, b): CoefOut<'_, T>,
    locals: &mut [S],
    finish: &BlockFinish<'_, T, S>,
    out: &mut [T],
) {
    let (len, bs) = (cells.len, cells.block);
    if cells.single() {
        let units = Units::rows(cells.order.len(), len);
        exec::row_raws(&units, x, true, raws);
        finish(0, &mut locals[0], raws, (&mut *m, &mut *a, &mut *b));
        let none = Params {
            gamma: None,
            beta: None,
        };
        exec::normalize(&units, x, (m, a, b), none, out);
        return;
    }
    let units = Units::rows(cells.order.len(), len);
    let mut shared = SharedOut::new(out, &units, 2);
    let split = Split::Slots(cells.order);
    let bpt = cells.per_task();
    let span = bpt * bs;
    let task = |t: usize,
                raws: &mut [ShiftedSums],
                coef: CoefOut<'_, T>,
                locals: &mut [S],
                out: TaskOut<'_, T>| {
        let slots = &cells.order[t * span..t * span + raws.len()];
        let mut fin = |j: usize, raws: &[ShiftedSums], coef: CoefOut<'_, T>| {
            finish(t * bpt + j, &mut locals[j], raws, coef);
        };
        let task = TaskCells {
            len,
            slots,
            block: bs,
        };
        forward_task(x, task, raws, coef, &mut fin, out);
    };
    if cells.order.len() <= span {
        task(0, raws, (m, a, b), locals, shared.whole(split));
        return;
    }
    raws.par_chunks_mut(span)
        .zip(m.par_chunks_mut(span))
        .zip(a.par_chunks_mut(span))
        .zip(b.par_chunks_mut(span))
        .zip(locals.par_chunks_mut(bpt))
        .zip(shared.tasks(split, span))
        .enumerate()
        .for_each(|(t, (((((raws, m), a), b), locals), claim))| {
            task(t, raws, (m, a, b), locals, claim.open())
        });
}

/// The backward passes of the input `(x, dy, m)`: Σdy and Σdy·(x − m) per slot into `s1`,
/// `s2` (m: each slot's cell mean in the element type), `finish` per block → (c, a, b) per
/// slot, dx = dy·c + ((x − m)·a + b). `locals` holds one state per block; `acc` is scratch.
pub(crate) fn backward<T: Float, S: Send>(
    cells: &Cells<'_>,
    (x, dy, m): (&[T], &[T], &[T]),
    (s1, s2): (&mut [f64], &mut [f64]),
    (c, a, b): CoefOut<'_, T>,
    (locals, finish): (&mut [S], &BlockDxFinish<'_, T, S>),
    acc: &mut Vec<f64>,
    dx: &mut [T],
) {
    let (len, bs) = (cells.len, cells.block);
    if cells.single() {
        let units = Units::rows(cells.order.len(), len);
        // x̂ = x − m for the sums: a = 1, b = 0 until `finish` overwrites them.
        a.fill(T::one());
        b.fill(T::zero());
        let xhat = (m, &*a, &*b);
        let t = BackIn {
            units: &units,
            x,
            dy,
            xhat,
            gamma: None,
        };
        exec::dsums_all(t, s1, s2, &mut [], acc);
        finish(0, &mut locals[0], (s1, s2), (&mut *c, &mut *a, &mut *b));
        exec::dx_all(&units, x, dy, (c, m, a, b), None, dx);
        return;
    }
    let units = Units::rows(cells.order.len(), len);
    let mut shared = SharedOut::new(dx, &units, 3);
    let split = Split::Slots(cells.order);
    let bpt = cells.per_task();
    let span = bpt * bs;
    let task = |t: usize,
                sums: (&mut [f64], &mut [f64]),
                coef: CoefOut<'_, T>,
                locals: &mut [S],
                out: TaskOut<'_, T>| {
        let at = t * span..t * span + sums.0.len();
        let (slots, m) = (&cells.order[at.clone()], &m[at]);
        let mut fin = |j: usize, sums: (&[f64], &[f64]), coef: CoefOut<'_, T>| {
            finish(t * bpt + j, &mut locals[j], sums, coef);
        };
        let task = TaskCells {
            len,
            slots,
            block: bs,
        };
        backward_task((x, dy), task, m, sums, coef, &mut fin, out);
    };
    if cells.order.len() <= span {
        task(0, (s1, s2), (c, a, b), locals, shared.whole(split));
        return;
    }
    s1.par_chunks_mut(span)
        .zip(s2.par_chunks_mut(span))
        .zip(c.par_chunks_mut(span))
        .zip(a.par_chunks_mut(span))
        .zip(b.par_chunks_mut(span))
        .zip(locals.par_chunks_mut(bpt))
        .zip(shared.tasks(split, span))
        .enumerate()
        .for_each(|(t, ((((((s1, s2), c), a), b), locals), claim))| {
            task(t, (s1, s2), (c, a, b), locals, claim.open())
        });
}
