//! Parallel execution of the passes over a plan's *units*.
//!
//! The outer dims of a [`Plan`] split into kept ones (they index statistics) and reduced
//! ones. A *unit* is one combination of the kept outer indices: one statistics group when
//! the line is reduced (rows: layer/instance/group norm; sandwich: NCHW batch norm), or a
//! block of `line.size` groups when the line is kept (columns: channels-last batch norm).
//! Its lines are the combinations of the reduced outer indices.
//!
//! * Fused path (many units): each rayon task takes a run of units (about 1/16 of the
//!   work). Where a unit is one group, the task is software-pipelined line by line: the
//!   elementwise pass of unit u (forward: normalize and affine; backward: dx) runs in the
//!   same loop as the reduction of unit u + 1, so the stores of one overlap the loads of the
//!   other and each element is read from memory once per pass. Rows that share a γ along
//!   the line run in blocks of two, their γ-gradient terms staged in the element type and
//!   flushed into f64 every few rows.
//! * Split path (a few large units): fixed-size chunks of lines compute partial sums, merged
//!   in chunk order, then the elementwise pass runs over the chunks. Columns keep their
//!   accumulators (or coefficients) in registers across lines.
//!
//! Task boundaries depend only on the shape, never on the number of threads, so results
//! are bit-identical for any thread count. Each task body is compiled per SIMD level
//! ([`multiversion`]).

use rayon::prelude::*;

use super::lines::{self, DParam, GammaLine, ParamLine, RowFold};
use super::reduce::{row_dx_portable, DxRows, RowParam, Rows};
use super::simd;
use super::simd::multiversion;
use crate::plan::{Dim, Plan, MAX_DIMS};
use crate::Float;

/// Target number of elements per task: the least on the fused path, and the chunk size of
/// the split path.
pub(super) const TASK_ELEMS: usize = 1 << 15;

/// The most elements per task on the fused path.
const TASK_MAX_ELEMS: usize = 1 << 20;

/// The number of tasks the fused path aims at: enough to balance a small pool, few enough
/// that units pipeline over long runs (each task restarts the pipeline).
pub(super) const TASKS: usize = 16;

/// A plan seen as units of lines (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Units {
    kd: [Dim; MAX_DIMS],
    nk: usize,
    rd: [Dim; MAX_DIMS],
    nr: usize,
    /// The line.
    pub line: Dim,
    /// Number of units.
    pub count: usize,
    /// Lines per unit.
    pub lines: usize,
    /// Statistics groups per unit (1, or the line length for columns).
    pub gpu: usize,
}

/// The lines `j0..j1` of one unit: (input offset, parameter offset) pairs. It borrows the
/// reduced dims (no per-unit copy of the plan).
#[derive(Clone)]
struct LineIter<'a> {
    rd: &'a [Dim],
    idx: [usize; MAX_DIMS],
    xo: usize,
    po: usize,
    left: usize,
}

impl Iterator for LineIter<'_> {
    type Item = (usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let item = (self.xo, self.po);
        for k in (0..self.rd.len()).rev() {
            let d = self.rd[k];
            self.idx[k] += 1;
            self.xo += d.xs;
            self.po += d.ps;
            if self.idx[k] < d.size {
                break;
            }
            self.xo -= d.size * d.xs;
            self.po -= d.size * d.ps;
            self.idx[k] = 0;
        }
        Some(item)
    }
}

impl Units {
    pub fn new(plan: &Plan) -> Units {
        let line = plan.line();
        let mut u = Units {
            kd: [Dim::default(); MAX_DIMS],
            nk: 0,
            rd: [Dim::default(); MAX_DIMS],
            nr: 0,
            line,
            count: 1,
            lines: 1,
            gpu: if line.ss == 0 { 1 } else { line.size },
        };
        for d in &plan.dims[..plan.ndims - 1] {
            if d.ss != 0 {
                u.kd[u.nk] = *d;
                u.nk += 1;
                u.count *= d.size;
            } else {
                u.rd[u.nr] = *d;
                u.nr += 1;
                u.lines *= d.size;
            }
        }
        if plan.numel == 0 {
            u.count = 0;
        }
        u
    }

    /// `count` contiguous rows of `len` elements, each its own group (the cells of a fused
    /// chain).
    pub fn rows(count: usize, len: usize) -> Units {
        let mut kd = [Dim::default(); MAX_DIMS];
        kd[0] = Dim {
            size: count,
            xs: len,
            ss: 1,
            ps: 0,
        };
        Units {
            kd,
            nk: 1,
            rd: [Dim::default(); MAX_DIMS],
            nr: 0,
            line: Dim {
                size: len,
                xs: 1,
                ss: 0,
                ps: 0,
            },
            count,
            lines: 1,
            gpu: 1,
        }
    }

    /// Elements per unit.
    fn elems(&self) -> usize {
        self.lines * self.line.size
    }

    /// Input and parameter offsets of unit `u`'s first line.
    #[inline(always)]
    fn base(&self, mut u: usize) -> (usize, usize) {
        let (mut xo, mut po) = (0, 0);
        for d in self.kd[..self.nk].iter().rev() {
            // No division once the rest is within the dim (always, for one kept dim): the
            // pipelined paths ask for a unit's base several times per unit.
            let i = if u < d.size {
                std::mem::take(&mut u)
            } else {
                let i = u % d.size;
                u /= d.size;
                i
            };
            xo += i * d.xs;
            po += i * d.ps;
        }
        (xo, po)
    }

    /// The lines `j0..j1` of unit `u`.
    #[inline(always)]
    fn lines_of(&self, u: usize, (j0, j1): (usize, usize)) -> LineIter<'_> {
        let (mut xo, mut po) = self.base(u);
        let rd = &self.rd[..self.nr];
        let mut idx = [0usize; MAX_DIMS];
        let mut j = j0;
        for k in (0..rd.len()).rev() {
            let d = rd[k];
            idx[k] = j % d.size;
            j /= d.size;
            xo += idx[k] * d.xs;
            po += idx[k] * d.ps;
        }
        LineIter {
            rd,
            idx,
            xo,
            po,
            left: j1 - j0,
        }
    }

    /// Lines `j0..j1` of unit `u` as one contiguous run `(start, lines)`, when the reduced
    /// dims lay the unit's lines end to end (channels-last statistics over the leading dims).
    #[inline(always)]
    fn run(&self, u: usize, (j0, j1): (usize, usize)) -> Option<(usize, usize)> {
        if self.line.xs != 1 {
            return None;
        }
        let mut span = self.line.size;
        for d in self.rd[..self.nr].iter().rev() {
            if d.size > 1 && d.xs != span {
                return None;
            }
            span *= d.size;
        }
        let (start, _) = self.lines_of(u, (j0, j1)).next()?;
        Some((start, j1 - j0))
    }

    /// Whether every unit has the same parameters (no kept dim moves them).
    fn shared_params(&self) -> bool {
        self.kd[..self.nk].iter().all(|d| d.ps == 0)
    }

    /// Whether the plan runs the split path.
    fn split(&self) -> bool {
        self.count < 8 && self.elems() > 2 * TASK_ELEMS
    }

    /// Lines per chunk on the split path, and chunks per unit.
    fn chunking(&self) -> (usize, usize) {
        let lpc = (TASK_ELEMS / self.line.size.max(1)).max(1);
        (lpc, self.lines.div_ceil(lpc).max(1))
    }

    /// (unit, chunk) tasks per parallel job of the split-path passes: enough that a job
    /// covers about [`TASK_ELEMS`] elements (small units — the cells of a fused chain — would
    /// otherwise pay the dispatch once per unit).
    fn per_job(&self) -> usize {
        let (lpc, cpu) = self.chunking();
        let elems = if cpu == 1 {
            self.elems()
        } else {
            lpc * self.line.size
        };
        (TASK_ELEMS / elems.max(1)).max(1)
    }

    /// Whether units `v..v + r` are single lines below `end`, laid out one after the other
    /// from offset `at`: the rows a pipelined kernel may prefetch along its loop
    /// (`Rows::ahead`) when `at` is where the rows it reduces now end.
    #[inline(always)]
    fn adjacent(&self, v: usize, r: usize, end: usize, mut at: usize) -> bool {
        self.lines == 1
            && v + r <= end
            && (v..v + r).all(|w| {
                let xo = self.base(w).0;
                let follows = xo == at;
                at = xo + self.line.size;
                follows
            })
    }

    /// The line range of chunk `c`.
    fn chunk(&self, c: usize) -> (usize, usize) {
        let (lpc, _) = self.chunking();
        (c * lpc, ((c + 1) * lpc).min(self.lines))
    }

    /// Units per task on the fused path: about [`TASKS`] tasks, each of
    /// [`TASK_ELEMS`]..[`TASK_MAX_ELEMS`] elements where units allow. A function of the
    /// shape only, never of the number of threads.
    fn per_task(&self) -> usize {
        let e = self.elems().max(1);
        let lo = (TASK_ELEMS / e).max(1);
        let hi = (TASK_MAX_ELEMS / e).max(lo);
        self.count.div_ceil(TASKS).clamp(lo, hi)
    }
}

/// An output written by many tasks, each to lines no other task writes. It holds the
/// exclusive borrow `'a` of the output slice for as long as it lives (the `PhantomData`),
/// so no one else can read or write the output meanwhile; the lines handed out by
/// [`line`](Self::line) live no longer than `&self`.
pub(crate) struct SharedOut<'a, T> {
    ptr: *mut T,
    len: usize,
    /// Whether the pass streams its output (`simd::streams`).
    pub(super) stream: bool,
    _out: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a `SharedOut` is the exclusive borrow of a `[T]` (`T: Send`, so `&mut [T]` is
// `Send`); tasks only write through `line`, to ranges no other task asks for (see there).
unsafe impl<T: Send> Send for SharedOut<'_, T> {}
// SAFETY: as above: concurrent `line` calls never overlap, and nothing reads through `&self`.
unsafe impl<T: Send> Sync for SharedOut<'_, T> {}

impl<'a, T> SharedOut<'a, T> {
    /// The output of a pass that touches `arrays` arrays of its size (inputs and output).
    pub(super) fn new(out: &'a mut [T], arrays: usize) -> Self {
        let bytes = arrays.saturating_mul(std::mem::size_of_val(out));
        SharedOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            stream: simd::streams(bytes),
            _out: std::marker::PhantomData,
        }
    }

    /// The base pointer and length, for kernels that write whole runs of lines (each
    /// write under the same contract as [`line`](Self::line)).
    #[inline(always)]
    fn raw(&self) -> (*mut T, usize) {
        (self.ptr, self.len)
    }

    /// The mutable line `off..off + len`.
    ///
    /// # Safety
    /// No other live reference may overlap the line: every line of a plan belongs to exactly
    /// one unit and one chunk, and each (unit, chunk) is processed by exactly one task, which
    /// drops the line before asking for the next.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub(super) unsafe fn line(&self, off: usize, len: usize) -> &mut [T] {
        assert!(
            off.checked_add(len).is_some_and(|end| end <= self.len),
            "line out of bounds"
        );
        // SAFETY: in bounds (asserted) of the slice that `new` borrowed mutably for `'a`,
        // which outlives `&self` (the `PhantomData` holds that borrow); exclusive by the
        // caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) }
    }
}

/// Scratch of the executor, reused across calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct Acc {
    /// Partial sums and shifts.
    pub f: Vec<f64>,
    /// Merged raw sums (split path).
    pub raws: Vec<Raw>,
}

/// Raw shifted sums of one group.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Raw {
    pub shift: f64,
    pub sum: f64,
    pub sq: f64,
}

/// The statistics of one group as normalized with.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Stat {
    /// The mean subtracted (0 without centering).
    pub mean: f64,
    /// The variance estimate (mean square without centering).
    pub var: f64,
    /// Σ(x − mean)² (Σx² without centering).
    pub m2: f64,
    /// 1/σ as applied.
    pub rstd: f64,
}

/// Per-group statistics and coefficients, struct of arrays.
pub(crate) struct CoefMut<'a, T> {
    pub stat: &'a mut [Stat],
    pub m: &'a mut [T],
    pub a: &'a mut [T],
    pub b: &'a mut [T],
}

/// Unfolded parameters.
#[derive(Clone, Copy)]
pub(crate) struct Params<'a, T> {
    pub gamma: Option<&'a [T]>,
    pub beta: Option<&'a [T]>,
}

impl<'a, T: Float> Params<'a, T> {
    #[inline(always)]
    fn line(&self, line: Dim, po: usize) -> ParamLine<'a, T> {
        match self.gamma {
            None => ParamLine::None,
            Some(g) if line.ps == 0 => {
                ParamLine::Scalar(g[po], self.beta.map_or(T::zero(), |b| b[po]))
            }
            Some(g) => ParamLine::Vector(
                &g[po..po + line.size],
                self.beta.map(|b| &b[po..po + line.size]),
            ),
        }
    }
}

/// Coefficient arrays (m, a, b).
type Coef3<'a, T> = (&'a [T], &'a [T], &'a [T]);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn elementwise<T: Float>(
    units: &Units,
    x: &[T],
    out: &SharedOut<'_, T>,
    coef: Coef3<'_, T>,
    params: Params<'_, T>,
    u: usize,
    g0: usize,
    range: (usize, usize),
) {
    let len = units.line.size;
    let w = units.gpu;
    let (m, a, b) = (
        &coef.0[g0..g0 + w],
        &coef.1[g0..g0 + w],
        &coef.2[g0..g0 + w],
    );
    let run = (w > 1 && params.gamma.is_none())
        .then(|| units.run(u, range))
        .flatten();
    if let Some(run) = run {
        let (ptr, n) = out.raw();
        // SAFETY: the lines of unit `u` in this task's chunk are written by this task only.
        if unsafe { T::col_affine(x, ptr, n, run, (m, a, b), out.stream) } {
            return;
        }
    }
    for (xo, po) in units.lines_of(u, range) {
        // SAFETY: line `xo` of unit `u` in this task's chunk: written by this task only.
        let y = unsafe { out.line(xo, len) };
        let xs = &x[xo..xo + len];
        let p = params.line(units.line, po);
        if w == 1 {
            lines::affine::<T, false>(xs, y, m, a, b, p);
        } else {
            lines::affine::<T, true>(xs, y, m, a, b, p);
        }
    }
}

/// The first line's values (or zero) as the shifts of a unit's groups.
#[inline(always)]
fn shifts<T: Float>(units: &Units, x: &[T], u: usize, center: bool, out: &mut [f64]) {
    let (bx, _) = units.base(u);
    for (i, h) in out.iter_mut().enumerate() {
        *h = if center { x[bx + i].to_acc() } else { 0.0 };
    }
}

#[inline(always)]
fn unit_sums<T: Float>(
    units: &Units,
    x: &[T],
    u: usize,
    range: (usize, usize),
    shift: &[f64],
    sum: &mut [f64],
    sq: &mut [f64],
) {
    let len = units.line.size;
    if units.gpu == 1 {
        let (mut s, mut q) = (0.0, 0.0);
        for (xo, _) in units.lines_of(u, range) {
            let (a, b) = lines::row_sums(&x[xo..xo + len], shift[0]);
            s += a;
            q += b;
        }
        sum[0] += s;
        sq[0] += q;
    } else {
        T::col_sums(
            x,
            units.lines_of(u, range).map(|(xo, _)| xo),
            shift,
            sum,
            sq,
        );
    }
}

multiversion! {
    /// Elementwise pass with known coefficients over tasks `t0..t1` (task t: chunk
    /// `t % cpu` of unit `t / cpu`).
    fn normalize_task<T: Float>(
        units: &Units,
        x: &[T],
        out: &SharedOut<'_, T>,
        coef: Coef3<'_, T>,
        params: Params<'_, T>,
        t0: usize,
        t1: usize,
    ) {
        let (_, cpu) = units.chunking();
        for t in t0..t1 {
            let (u, c) = (t / cpu, t % cpu);
            elementwise(units, x, out, coef, params, u, u * units.gpu, units.chunk(c));
        }
    }
}

multiversion! {
    /// Shifted sums of chunk `c` of unit `u`.
    fn sums_task<T: Float>(
        units: &Units,
        x: &[T],
        u: usize,
        c: usize,
        shift: &[f64],
        sum: &mut [f64],
        sq: &mut [f64],
    ) {
        unit_sums(units, x, u, units.chunk(c), shift, sum, sq);
    }
}

multiversion! {
    /// Fused forward of units `u0..u1`: sums, `finish`, elementwise. The slices are this
    /// task's share of the per-group arrays.
    fn fused_forward_task<T: Float>(
        units: &Units,
        x: &[T],
        center: bool,
        params: Params<'_, T>,
        finish: &Finish<'_, T>,
        u0: usize,
        u1: usize,
        c: CoefMut<'_, T>,
        acc: &mut [f64],
        out: &SharedOut<'_, T>,
    ) {
        let gpu = units.gpu;
        if gpu == 1 {
            groups_forward(units, x, center, params, finish, u0, u1, c, out);
            return;
        }
        let n = c.m.len();
        let (shift, rest) = acc.split_at_mut(n);
        let (sum, sq) = rest.split_at_mut(n);
        let all = (0, units.lines);
        for (ui, u) in (u0..u1).enumerate() {
            let l = ui * gpu..(ui + 1) * gpu;
            shifts(units, x, u, center, &mut shift[l.clone()]);
            sum[l.clone()].fill(0.0);
            sq[l.clone()].fill(0.0);
            unit_sums(units, x, u, all, &shift[l.clone()], &mut sum[l.clone()], &mut sq[l.clone()]);
            for i in l.clone() {
                let raw = Raw { shift: shift[i], sum: sum[i], sq: sq[i] };
                (c.m[i], c.a[i], c.b[i]) = finish(u * gpu + i - l.start, raw, &mut c.stat[i]);
            }
            elementwise(units, x, out, (&c.m[..], &c.a[..], &c.b[..]), params, u, l.start, all);
        }
    }
}

/// The fused forward of units that are one group each (rows, NCHW batch norm, …),
/// software-pipelined line by line: the affine pass of line j of unit u runs in the same loop
/// as the sums of line j of unit u + 1, so the loads of one overlap the stores of the other.
/// The per-line sums add up in line order: bit-identical to the two separate passes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn groups_forward<T: Float>(
    units: &Units,
    x: &[T],
    center: bool,
    params: Params<'_, T>,
    finish: &Finish<'_, T>,
    u0: usize,
    u1: usize,
    c: CoefMut<'_, T>,
    out: &SharedOut<'_, T>,
) {
    if u0 >= u1 {
        return;
    }
    let (len, all) = (units.line.size, (0, units.lines));
    let shift_of = |u: usize| {
        if center {
            x[units.base(u).0].to_acc()
        } else {
            0.0
        }
    };
    let mut raw = Raw {
        shift: shift_of(u0),
        ..Raw::default()
    };
    for (xo, _) in units.lines_of(u0, all) {
        let (s, q) = lines::row_sums(&x[xo..xo + len], raw.shift);
        raw.sum += s;
        raw.sq += q;
    }
    for (ui, u) in (u0..u1).enumerate() {
        let (m, a, b) = finish(u, raw, &mut c.stat[ui]);
        (c.m[ui], c.a[ui], c.b[ui]) = (m, a, b);
        raw = Raw {
            shift: if u + 1 < u1 { shift_of(u + 1) } else { 0.0 },
            ..Raw::default()
        };
        // The next unit's lines (none after the last unit). A plain `LineIter`: an iterator
        // adapter here copied its state through memory once per unit, and that load waited
        // for the store buffer full of this pass's output to drain.
        let mut next = units.lines_of((u + 1).min(u1 - 1), if u + 1 < u1 { all } else { (0, 0) });
        for (xo, po) in units.lines_of(u, all) {
            let xs = &x[xo..xo + len];
            // SAFETY: line `xo` belongs to unit `u` of this task: written by this task only.
            let y = unsafe { out.line(xo, len) };
            let p = params.line(units.line, po);
            // The fallbacks take the coefficients through `black_box`, an optimization
            // barrier: otherwise the compiler hoists their broadcasts above the pipelined
            // kernel's call (in this task's AVX-512 copy, where the fallback of the `None`
            // arm is dead code) and spills and reloads four vectors around every call. With
            // rows of 1024 values that cost 8–14 % of a one-thread LayerNorm forward.
            let Some((nxo, _)) = next.next() else {
                let (m, a, b) = std::hint::black_box((m, a, b));
                lines::affine::<T, false>(xs, y, &[m], &[a], &[b], p);
                continue;
            };
            let nx = &x[nxo..nxo + len];
            let (coef, vector) = match p {
                ParamLine::None => ((m, a, b), None),
                ParamLine::Scalar(g, bt) => ((m, a * g, b * g + bt), None),
                ParamLine::Vector(g, bt) => ((m, a, b), Some((g, bt))),
            };
            // One line per unit: the call after this one reduces the line of unit u + 2.
            let next_row = (nx, units.adjacent(u + 2, 1, u1, nxo + len));
            let (s, q) =
                match T::affine_then_sums(xs, y, coef, vector, next_row, raw.shift, out.stream) {
                    Some(sums) => sums,
                    None => {
                        let (m, a, b, shift) = std::hint::black_box((m, a, b, raw.shift));
                        lines::affine::<T, false>(xs, y, &[m], &[a], &[b], p);
                        lines::row_sums(nx, shift)
                    }
                };
            raw.sum += s;
            raw.sq += q;
        }
    }
}

/// The elementwise pass with known coefficients (eval with running statistics, and the
/// second phase of the split path).
pub(crate) fn normalize<T: Float>(
    units: &Units,
    x: &[T],
    coef: Coef3<'_, T>,
    params: Params<'_, T>,
    out: &mut [T],
) {
    let shared = SharedOut::new(out, 2);
    let (_, cpu) = units.chunking();
    let ntasks = units.count * cpu;
    let per = units.per_job();
    if ntasks <= per {
        // One job: run it here, without handing it to the thread pool.
        normalize_task(units, x, &shared, coef, params, 0, ntasks);
        return;
    }
    (0..ntasks.div_ceil(per)).into_par_iter().for_each(|j| {
        let t1 = ((j + 1) * per).min(ntasks);
        normalize_task(units, x, &shared, coef, params, j * per, t1);
    });
}

/// Raw shifted sums of every group into `raws`: fixed chunks of lines in parallel, merged in
/// chunk order. The first phase of the split path, and of synchronized statistics.
pub(crate) fn sums_all<T: Float>(
    units: &Units,
    x: &[T],
    center: bool,
    raws: &mut [Raw],
    acc: &mut Vec<f64>,
) {
    let gpu = units.gpu;
    let groups = units.count * gpu;
    let (_, cpu) = units.chunking();
    let ntasks = units.count * cpu;
    acc.clear();
    acc.resize(groups + 2 * gpu * ntasks, 0.0);
    let (shift, parts) = acc.split_at_mut(groups);
    if groups == 0 {
        // A zero-size axis: no unit or no group has values to sum.
        raws.fill(Raw::default());
        return;
    }
    for u in 0..units.count {
        shifts(units, x, u, center, &mut shift[u * gpu..(u + 1) * gpu]);
    }
    let shift = &*shift;
    let task = |(t, part): (usize, &mut [f64])| {
        let u = t / cpu;
        let (sum, sq) = part.split_at_mut(gpu);
        sums_task(
            units,
            x,
            u,
            t % cpu,
            &shift[u * gpu..(u + 1) * gpu],
            sum,
            sq,
        );
    };
    if ntasks == 1 {
        parts.chunks_mut(2 * gpu).enumerate().for_each(task);
    } else {
        parts.par_chunks_mut(2 * gpu).enumerate().for_each(task);
    }
    for (g, raw) in raws.iter_mut().enumerate().take(groups) {
        let (u, i) = (g / gpu, g % gpu);
        *raw = Raw {
            shift: shift[g],
            ..Raw::default()
        };
        for c in 0..cpu {
            let part = &parts[(u * cpu + c) * 2 * gpu..];
            raw.sum += part[i];
            raw.sq += part[gpu + i];
        }
    }
}

/// The batch-statistics forward pass: per group, raw shifted sums → `finish(group, raw)`
/// gives the statistics and coefficients → y = ((x − m)·a + b)·γ + β. `acc` is scratch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Float>(
    units: &Units,
    x: &[T],
    center: bool,
    params: Params<'_, T>,
    finish: &Finish<'_, T>,
    coef: CoefMut<'_, T>,
    acc: &mut Acc,
    out: &mut [T],
) {
    let gpu = units.gpu;
    let groups = units.count * gpu;
    if units.split() {
        let mut raws = std::mem::take(&mut acc.raws);
        raws.clear();
        raws.resize(groups, Raw::default());
        sums_all(units, x, center, &mut raws, &mut acc.f);
        for (g, &raw) in raws.iter().enumerate() {
            (coef.m[g], coef.a[g], coef.b[g]) = finish(g, raw, &mut coef.stat[g]);
        }
        acc.raws = raws;
        normalize(units, x, (coef.m, coef.a, coef.b), params, out);
        return;
    }
    let acc = &mut acc.f;
    let upt = units.per_task();
    let gpt = upt * gpu;
    acc.clear();
    acc.resize(3 * groups, 0.0);
    let shared = SharedOut::new(out, 2);
    if units.count <= upt {
        // One task: run it here, without handing it to the thread pool.
        fused_forward_task(
            units,
            x,
            center,
            params,
            finish,
            0,
            units.count,
            coef,
            acc,
            &shared,
        );
        return;
    }
    coef.m
        .par_chunks_mut(gpt)
        .zip(coef.a.par_chunks_mut(gpt))
        .zip(coef.b.par_chunks_mut(gpt))
        .zip(coef.stat.par_chunks_mut(gpt))
        .zip(acc.par_chunks_mut(3 * gpt))
        .enumerate()
        .for_each(|(t, ((((m, a), b), stat), acc))| {
            let u0 = t * upt;
            let u1 = (u0 + upt).min(units.count);
            let c = CoefMut { stat, m, a, b };
            fused_forward_task(units, x, center, params, finish, u0, u1, c, acc, &shared);
        });
}

/// γ of the line at parameter offset `po`, with its gradient accumulators.
#[inline(always)]
fn dparam_line<'a, T: Float>(
    gamma: Option<&'a [T]>,
    line: Dim,
    po: usize,
    dg: &'a mut [f64],
    db: &'a mut [f64],
) -> DParam<'a, T> {
    let len = line.size;
    match gamma {
        None => DParam::None,
        Some(g) if line.ps == 0 => DParam::Scalar(g[po], &mut dg[po], &mut db[po]),
        Some(g) => DParam::Vector(
            &g[po..po + len],
            &mut dg[po..po + len],
            &mut db[po..po + len],
        ),
    }
}

/// γ of the line at parameter offset `po`, for the dx pass.
#[inline(always)]
fn gamma_line<T: Float>(gamma: Option<&[T]>, line: Dim, po: usize) -> GammaLine<'_, T> {
    match gamma {
        None => GammaLine::None,
        Some(g) if line.ps == 0 => GammaLine::Scalar(g[po]),
        Some(g) => GammaLine::Vector(&g[po..po + line.size]),
    }
}

/// A group's statistics from its raw sums: `finish(group, raw, &mut stat)` writes the
/// statistics and returns the coefficients (m, a, b) of the elementwise pass. (The
/// statistics go out through the reference: returned through memory and copied, their load
/// would wait on a store buffer full of the pass's output — a failed store forwarding.)
pub(crate) type Finish<'a, T> = dyn Fn(usize, Raw, &mut Stat) -> (T, T, T) + Sync + 'a;

/// Per-group dx coefficients from the group's backward sums: dx = dy·c·γ + (x − m)·a + b.
pub(crate) type DxFinish<'a, T> = dyn Fn(usize, f64, f64) -> (T, T, T, T) + Sync + 'a;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn unit_dsums<T: Float>(
    units: &Units,
    x: &[T],
    dy: &[T],
    xhat: Coef3<'_, T>,
    gamma: Option<&[T]>,
    u: usize,
    range: (usize, usize),
    sg: &mut [f64],
    sgx: &mut [f64],
    dparams: &mut [f64],
) {
    let len = units.line.size;
    let gpu = units.gpu;
    let g0 = u * gpu;
    let (m, a, b) = (
        &xhat.0[g0..g0 + gpu],
        &xhat.1[g0..g0 + gpu],
        &xhat.2[g0..g0 + gpu],
    );
    if gpu > 1 && gamma.is_none() {
        // Columns with γ folded (or absent): register-blocked over the lines.
        let lines = units.lines_of(u, range).map(|(xo, _)| xo);
        T::col_dsums(x, dy, lines, (m, a, b), sg, sgx);
        return;
    }
    let np = dparams.len() / 2;
    let (dg, db) = dparams.split_at_mut(np);
    for (xo, po) in units.lines_of(u, range) {
        let p = dparam_line(gamma, units.line, po, dg, db);
        let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
        if gpu == 1 {
            lines::dsums::<T, false>(xs, ds, m, a, b, p, sg, sgx);
        } else {
            lines::dsums::<T, true>(xs, ds, m, a, b, p, sg, sgx);
        }
    }
}

/// Per-group dx coefficients (c, m, a, b).
type Coef4<'a, T> = (&'a [T], &'a [T], &'a [T], &'a [T]);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn unit_dx<T: Float>(
    units: &Units,
    x: &[T],
    dy: &[T],
    out: &SharedOut<'_, T>,
    coef: Coef4<'_, T>,
    g0: usize,
    gamma: Option<&[T]>,
    u: usize,
    range: (usize, usize),
) {
    let len = units.line.size;
    let w = units.gpu;
    let (c, m, a, b) = (
        &coef.0[g0..g0 + w],
        &coef.1[g0..g0 + w],
        &coef.2[g0..g0 + w],
        &coef.3[g0..g0 + w],
    );
    let run = (w > 1 && gamma.is_none())
        .then(|| units.run(u, range))
        .flatten();
    if let Some(run) = run {
        let (ptr, n) = out.raw();
        // SAFETY: the lines of unit `u` in this task's chunk are written by this task only.
        if unsafe { T::col_dx(x, dy, ptr, n, run, (c, m, a, b), out.stream) } {
            return;
        }
    }
    for (xo, po) in units.lines_of(u, range) {
        let g = gamma_line(gamma, units.line, po);
        // SAFETY: line `xo` of unit `u` in this task's chunk: written by this task only.
        let o = unsafe { out.line(xo, len) };
        let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
        if w == 1 {
            lines::dx::<T, false>(xs, ds, o, c, m, a, b, g);
        } else {
            lines::dx::<T, true>(xs, ds, o, c, m, a, b, g);
        }
    }
}

/// Outputs of the backward pass.
pub(crate) struct BackOut<'a, T> {
    /// Per group: Σg, Σg·x̂ (g = dy·γ for unfolded γ, dy otherwise).
    pub sg: &'a mut [f64],
    pub sgx: &'a mut [f64],
    /// Per parameter (unfolded γ): Σdy·x̂ then Σdy, `2·P` values.
    pub dparams: &'a mut [f64],
    /// Per-group dx coefficients (scratch).
    pub c: &'a mut [T],
    pub m: &'a mut [T],
    pub a: &'a mut [T],
    pub b: &'a mut [T],
    /// Staging of γ-gradient sums (two lines per task when rows carry γ along the line).
    pub stage: &'a mut [T],
}

multiversion! {
    /// Backward sums of tasks `t0..` (as `normalize_task`), one part of `acc` each: Σg, Σg·x̂
    /// of the unit's groups, then the parameter sums.
    fn dsums_task<T: Float>(
        units: &Units,
        x: &[T],
        dy: &[T],
        xhat: Coef3<'_, T>,
        gamma: Option<&[T]>,
        t0: usize,
        stride: usize,
        acc: &mut [f64],
    ) {
        let (gpu, (_, cpu)) = (units.gpu, units.chunking());
        for (i, part) in acc.chunks_mut(stride).enumerate() {
            let (u, c) = ((t0 + i) / cpu, (t0 + i) % cpu);
            let (sg, rest) = part.split_at_mut(gpu);
            let (sgx, dp) = rest.split_at_mut(gpu);
            unit_dsums(units, x, dy, xhat, gamma, u, units.chunk(c), sg, sgx, dp);
        }
    }
}

multiversion! {
    /// dx with known coefficients over tasks `t0..t1` (as `normalize_task`).
    fn dx_task<T: Float>(
        units: &Units,
        x: &[T],
        dy: &[T],
        out: &SharedOut<'_, T>,
        coef: Coef4<'_, T>,
        gamma: Option<&[T]>,
        t0: usize,
        t1: usize,
    ) {
        let (_, cpu) = units.chunking();
        for t in t0..t1 {
            let (u, c) = (t / cpu, t % cpu);
            unit_dx(units, x, dy, out, coef, u * units.gpu, gamma, u, units.chunk(c));
        }
    }
}

multiversion! {
    /// Fused backward of units `u0..u1`: sums, `finish`, dx. The slices are this task's
    /// share of the per-group arrays; `dparams` is its own parameter-sum accumulator.
    fn fused_backward_task<T: Float>(
        units: &Units,
        x: &[T],
        dy: &[T],
        xhat: Coef3<'_, T>,
        gamma: Option<&[T]>,
        finish: &DxFinish<'_, T>,
        u0: usize,
        u1: usize,
        o: BackOut<'_, T>,
        out: &SharedOut<'_, T>,
    ) {
        let gpu = units.gpu;
        let all = (0, units.lines);
        o.sg.fill(0.0);
        o.sgx.fill(0.0);
        if gpu == 1 {
            let t = TaskRows { units, x, dy, xhat, gamma };
            if units.lines == 1 && gamma_along(gamma, units.line) && units.shared_params() {
                rows_backward(&t, finish, u0, u1, o, out);
            } else {
                groups_backward(&t, finish, u0, u1, o, out);
            }
            return;
        }
        for (ui, u) in (u0..u1).enumerate() {
            let l = ui * gpu..(ui + 1) * gpu;
            unit_dsums(
                units,
                x,
                dy,
                xhat,
                gamma,
                u,
                all,
                &mut o.sg[l.clone()],
                &mut o.sgx[l.clone()],
                o.dparams,
            );
            for i in l.clone() {
                let (c, m, a, b) = finish(u * gpu + i - l.start, o.sg[i], o.sgx[i]);
                (o.c[i], o.m[i], o.a[i], o.b[i]) = (c, m, a, b);
            }
            let coef = (&o.c[..], &o.m[..], &o.a[..], &o.b[..]);
            unit_dx(units, x, dy, out, coef, l.start, gamma, u, all);
        }
    }
}

/// Rows per block where rows share a γ along the line.
const ROW_BLOCK: usize = 2;

/// Whether γ runs along the line (unfolded, a value per element): its gradient sums are
/// staged per element.
#[inline(always)]
fn gamma_along<T>(gamma: Option<&[T]>, line: Dim) -> bool {
    gamma.is_some() && line.ps != 0
}

/// Rows per flush of the staged γ-gradient sums: each element-type partial sums at most this
/// many terms before it is added into f64.
const STAGE_ROWS: usize = 8;

/// The parameter gradients of a task's rows: a scalar γ per row accumulates straight into
/// f64; a γ along the row stages its per-element sums in the element type (`stage`: two
/// rows' worth) and flushes them into f64 every [`STAGE_ROWS`] rows, or when the next row
/// has other parameters.
struct RowGrads<'a, T> {
    gamma: Option<&'a [T]>,
    line: Dim,
    dg: &'a mut [f64],
    db: &'a mut [f64],
    stage: (&'a mut [T], &'a mut [T]),
    staged: Option<usize>,
    rows: usize,
}

impl<'a, T: Float> RowGrads<'a, T> {
    /// Takes the task's parameter sums (`o.dparams`: Σdy·x̂ then Σdy per parameter) and
    /// staging (`o.stage`: at least two lines when γ runs along the line) out of `o`.
    #[inline(always)]
    fn take<'o: 'a>(gamma: Option<&'a [T]>, line: Dim, o: &mut BackOut<'o, T>) -> Self {
        let dparams = std::mem::take(&mut o.dparams);
        let stage = std::mem::take(&mut o.stage);
        let np = dparams.len() / 2;
        let (dg, db) = dparams.split_at_mut(np);
        let n = if gamma_along(gamma, line) {
            line.size
        } else {
            0
        };
        let (sg, rest) = stage.split_at_mut(n);
        let sb = &mut rest[..n];
        sg.fill(T::zero());
        sb.fill(T::zero());
        RowGrads {
            gamma,
            line,
            dg,
            db,
            stage: (sg, sb),
            staged: None,
            rows: 0,
        }
    }

    /// Adds the staged sums into f64 and clears them.
    #[inline(always)]
    fn flush(&mut self) {
        if let Some(po) = self.staged.take() {
            let len = self.line.size;
            let (sg, sb) = (&mut *self.stage.0, &mut *self.stage.1);
            for (d, s) in self.dg[po..po + len].iter_mut().zip(sg.iter_mut()) {
                *d += s.to_acc();
                *s = T::zero();
            }
            for (d, s) in self.db[po..po + len].iter_mut().zip(sb.iter_mut()) {
                *d += s.to_acc();
                *s = T::zero();
            }
            self.rows = 0;
        }
    }

    /// The row kernels' parameter for `rows` rows at parameter offset `po`: γ along the
    /// line with its staging (flushed first if it holds other parameters or is full).
    #[inline(always)]
    fn param(&mut self, po: usize, rows: usize) -> Option<RowParam<'_, T>> {
        let g = self.gamma.filter(|_| gamma_along(self.gamma, self.line))?;
        if self.staged.is_some_and(|p| p != po) || self.rows + rows > STAGE_ROWS {
            self.flush();
        }
        self.staged = Some(po);
        self.rows += rows;
        let stage = (&mut *self.stage.0, &mut *self.stage.1);
        Some((&g[po..po + self.line.size], Some(stage)))
    }

    /// Folds a row's sums (Σw·dy, Σw·dy·x̂) into its group's `sg`, `sgx` as the line kernels
    /// do ([`RowFold`]): a scalar γ gets the sums of dy as its gradients and scales the
    /// group's.
    #[inline(always)]
    fn fold(&mut self, po: usize, sums: (f64, f64), sg: &mut f64, sgx: &mut f64) {
        let fold = match self.gamma {
            Some(g) if self.line.ps == 0 => {
                RowFold::Scalar(g[po].to_acc(), &mut self.dg[po], &mut self.db[po])
            }
            _ => RowFold::Plain,
        };
        fold.apply(sums, sg, sgx);
    }
}

/// The inputs of a task of the fused backward pass (rows and groups of lines alike).
struct TaskRows<'a, T> {
    units: &'a Units,
    x: &'a [T],
    dy: &'a [T],
    xhat: Coef3<'a, T>,
    gamma: Option<&'a [T]>,
}

impl<'a, T: Float> TaskRows<'a, T> {
    /// Rows `u..u + R` for the sums, and their parameter offsets.
    #[inline(always)]
    fn rows<const R: usize>(&self, u: usize) -> (Rows<'a, T, R>, [usize; R]) {
        let len = self.units.line.size;
        let (x, dy, xh) = (self.x, self.dy, self.xhat);
        let zero = T::zero();
        let mut rows = Rows {
            x: [&x[..0]; R],
            dy: [&dy[..0]; R],
            c: [(zero, zero, zero); R],
            ahead: false,
        };
        let mut po = [0usize; R];
        for (r, p) in po.iter_mut().enumerate() {
            let xo;
            (xo, *p) = self.units.base(u + r);
            rows.x[r] = &x[xo..xo + len];
            rows.dy[r] = &dy[xo..xo + len];
            rows.c[r] = (xh.0[u + r], xh.1[u + r], xh.2[u + r]);
        }
        (rows, po)
    }

    /// Rows `u..u + R` for dx, with their coefficients (c, m, a, b) (`k`: the rows' index
    /// in the task's coefficient arrays).
    ///
    /// # Safety
    /// The rows must belong to the calling task's units (no other live reference to them).
    #[inline(always)]
    unsafe fn dx_rows<const R: usize>(
        &self,
        u: usize,
        out: &'a SharedOut<'_, T>,
        coef: Coef4<'_, T>,
        k: usize,
    ) -> DxRows<'a, T, R> {
        let (len, line) = (self.units.line.size, self.units.line);
        // Plain loops: `array::from_fn` here stayed out of line, and its loads of the
        // closure's captures waited on the store buffer (full of dx) once per block.
        let mut base = [(0usize, 0usize); R];
        for (r, b) in base.iter_mut().enumerate() {
            *b = self.units.base(u + r);
        }
        let mut g = None;
        let zero = T::zero();
        let mut c = [(zero, zero, zero, zero); R];
        for (r, cr) in c.iter_mut().enumerate() {
            let (c, gv) = gamma_line(self.gamma, line, base[r].1).row(coef.0[k + r]);
            g = gv;
            *cr = (c, coef.1[k + r], coef.2[k + r], coef.3[k + r]);
        }
        DxRows {
            x: base.map(|(xo, _)| &self.x[xo..xo + len]),
            dy: base.map(|(xo, _)| &self.dy[xo..xo + len]),
            // SAFETY: the rows belong to this task's units (the caller's contract).
            dx: base.map(|(xo, _)| unsafe { out.line(xo, len) }),
            c,
            g,
            stream: out.stream,
        }
    }

    /// The sums of rows `u..u + R` (task indices `k..`) into `sg`, `sgx`.
    #[inline(always)]
    fn sums<const R: usize>(
        &self,
        u: usize,
        k: usize,
        grads: &mut RowGrads<'_, T>,
        o: &mut BackOut<'_, T>,
    ) {
        let (rows, po) = self.rows::<R>(u);
        let sums = T::dsums_rows(rows, grads.param(po[0], R));
        for r in 0..R {
            grads.fold(po[r], sums[r], &mut o.sg[k + r], &mut o.sgx[k + r]);
        }
    }

    /// dx of rows `u..u + R` (task indices `k..`) with the sums of rows `u + R..u + 2R`; the
    /// task's rows end at `end`.
    ///
    /// # Safety
    /// As [`dx_rows`](Self::dx_rows).
    #[inline(always)]
    unsafe fn dx_then_sums<const R: usize>(
        &self,
        (u, end): (usize, usize),
        k: usize,
        out: &'a SharedOut<'_, T>,
        grads: &mut RowGrads<'_, T>,
        o: &mut BackOut<'_, T>,
    ) {
        // SAFETY: the caller's contract.
        let cur = unsafe { self.dx_rows::<R>(u, out, (&o.c[..], &o.m[..], &o.a[..], &o.b[..]), k) };
        let (mut next, po) = self.rows::<R>(u + R);
        let after = self.units.base(u + 2 * R - 1).0 + self.units.line.size;
        next.ahead = self.units.adjacent(u + 2 * R, R, end, after);
        let sums = T::dx_then_dsums(cur, next, grads.param(po[0], R));
        for r in 0..R {
            grads.fold(po[r], sums[r], &mut o.sg[k + R + r], &mut o.sgx[k + R + r]);
        }
    }
}

/// The fused backward of rows (one contiguous line per group) that share a γ along the line,
/// in blocks of [`ROW_BLOCK`] rows (their staged γ-gradient terms are summed in registers
/// before one update of the staging), software-pipelined: dx of a block runs in the same
/// loop as the sums of the next block (`RowReduce::dx_then_dsums`), which are those of the
/// plain kernel. `o.sg`, `o.sgx` must be zero; `o.stage` holds two lines.
#[inline(always)]
fn rows_backward<T: Float>(
    t: &TaskRows<'_, T>,
    finish: &DxFinish<'_, T>,
    u0: usize,
    u1: usize,
    mut o: BackOut<'_, T>,
    out: &SharedOut<'_, T>,
) {
    if u0 >= u1 {
        return;
    }
    let (line, rb) = (t.units.line, ROW_BLOCK);
    let mut grads = RowGrads::take(t.gamma, line, &mut o);
    let block = |b: usize| (b, (b + rb).min(u1));
    let (b0, b1) = block(u0);
    match b1 - b0 {
        ROW_BLOCK => t.sums::<ROW_BLOCK>(b0, 0, &mut grads, &mut o),
        w => (0..w).for_each(|r| t.sums::<1>(b0 + r, r, &mut grads, &mut o)),
    }
    let mut b = u0;
    while b < u1 {
        let (b0, b1) = block(b);
        for u in b0..b1 {
            let k = u - u0;
            (o.c[k], o.m[k], o.a[k], o.b[k]) = finish(u, o.sg[k], o.sgx[k]);
        }
        let (n0, n1) = block(b1);
        let k = b0 - u0;
        match (b1 - b0, n1 - n0) {
            // SAFETY: rows b0..n1 belong to this task's units.
            (ROW_BLOCK, ROW_BLOCK) => unsafe {
                t.dx_then_sums::<ROW_BLOCK>((b0, u1), k, out, &mut grads, &mut o)
            },
            // The last block, short or followed by a short one.
            (w, rest) => {
                for r in 0..w {
                    let coef = (&o.c[..], &o.m[..], &o.a[..], &o.b[..]);
                    // SAFETY: row b0 + r belongs to this task's units.
                    let cur = unsafe { t.dx_rows::<1>(b0 + r, out, coef, k + r) };
                    let DxRows {
                        x,
                        dy,
                        dx: [dx],
                        c,
                        g,
                        ..
                    } = cur;
                    row_dx_portable(x[0], dy[0], dx, c[0], g);
                }
                for r in 0..rest {
                    t.sums::<1>(n0 + r, n0 + r - u0, &mut grads, &mut o);
                }
            }
        }
        b = b1;
    }
    grads.flush();
}

/// The fused backward of groups of several lines (one group per unit: NCHW batch norm, a
/// layer norm over T,D, …), software-pipelined line by line: dx of line j of unit u runs in
/// the same loop as the sums of line j of unit u + 1. The per-line sums add up in line order,
/// as in the plain path. `o.sg`, `o.sgx` must be zero; `o.stage` holds two lines when γ runs
/// along the line.
#[inline(always)]
fn groups_backward<T: Float>(
    t: &TaskRows<'_, T>,
    finish: &DxFinish<'_, T>,
    u0: usize,
    u1: usize,
    mut o: BackOut<'_, T>,
    out: &SharedOut<'_, T>,
) {
    if u0 >= u1 {
        return;
    }
    let &TaskRows {
        units,
        x,
        dy,
        xhat,
        gamma,
    } = t;
    let (len, line, all) = (units.line.size, units.line, (0, units.lines));
    let mut grads = RowGrads::take(gamma, line, &mut o);
    let xh = |u: usize| (xhat.0[u], xhat.1[u], xhat.2[u]);
    for (xo, po) in units.lines_of(u0, all) {
        let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
        let sums = T::row_dsums(xs, ds, xh(u0), grads.param(po, 1));
        grads.fold(po, sums, &mut o.sg[0], &mut o.sgx[0]);
    }
    for (ui, u) in (u0..u1).enumerate() {
        let (c, m, a, b) = finish(u, o.sg[ui], o.sgx[ui]);
        (o.c[ui], o.m[ui], o.a[ui], o.b[ui]) = (c, m, a, b);
        // The next unit's lines (none after the last unit). A plain `LineIter`: an iterator
        // adapter here copied its state through memory once per unit, and that load waited
        // for the store buffer full of this pass's output to drain.
        let mut next = units.lines_of((u + 1).min(u1 - 1), if u + 1 < u1 { all } else { (0, 0) });
        for (xo, po) in units.lines_of(u, all) {
            let (c, g) = gamma_line(gamma, line, po).row(c);
            let (xs, ds) = (&x[xo..xo + len], &dy[xo..xo + len]);
            // SAFETY: line `xo` of unit `u` belongs to this task: written by this task only.
            let dx = unsafe { out.line(xo, len) };
            let Some((nxo, npo)) = next.next() else {
                row_dx_portable(xs, ds, dx, (c, m, a, b), g);
                continue;
            };
            let cur = DxRows {
                x: [xs],
                dy: [ds],
                dx: [dx],
                c: [(c, m, a, b)],
                g,
                stream: out.stream,
            };
            let rows = Rows {
                x: [&x[nxo..nxo + len]],
                dy: [&dy[nxo..nxo + len]],
                c: [xh(u + 1)],
                // One line per unit: the call after this one reduces the line of unit u + 2.
                ahead: units.adjacent(u + 2, 1, u1, nxo + len),
            };
            let [sums] = T::dx_then_dsums(cur, rows, grads.param(npo, 1));
            grads.fold(npo, sums, &mut o.sg[ui + 1], &mut o.sgx[ui + 1]);
        }
    }
    grads.flush();
}

/// Backward sums of every group (and per unfolded parameter) into `sg`, `sgx`, `dparams`:
/// fixed chunks of lines in parallel, merged in chunk order. The first phase of the split
/// path, and of synchronized statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dsums_all<T: Float>(
    units: &Units,
    x: &[T],
    dy: &[T],
    xhat: Coef3<'_, T>,
    gamma: Option<&[T]>,
    sg: &mut [f64],
    sgx: &mut [f64],
    dparams: &mut [f64],
    acc: &mut Vec<f64>,
) {
    let gpu = units.gpu;
    let np2 = dparams.len();
    let (_, cpu) = units.chunking();
    let ntasks = units.count * cpu;
    let stride = 2 * gpu + np2;
    sg.fill(0.0);
    sgx.fill(0.0);
    dparams.fill(0.0);
    if ntasks == 0 || stride == 0 {
        // A zero-size axis: every sum is over no values.
        return;
    }
    acc.clear();
    acc.resize(stride * ntasks, 0.0);
    let per = units.per_job();
    if ntasks <= per {
        dsums_task(units, x, dy, xhat, gamma, 0, stride, acc);
    } else {
        acc.par_chunks_mut(stride * per)
            .enumerate()
            .for_each(|(j, parts)| dsums_task(units, x, dy, xhat, gamma, j * per, stride, parts));
    }
    for (t, part) in acc.chunks(stride).enumerate() {
        let g0 = (t / cpu) * gpu;
        for i in 0..gpu {
            sg[g0 + i] += part[i];
            sgx[g0 + i] += part[gpu + i];
        }
        for (d, &v) in dparams.iter_mut().zip(&part[2 * gpu..]) {
            *d += v;
        }
    }
}

/// dx with known per-group coefficients, over fixed chunks of lines in parallel.
pub(crate) fn dx_all<T: Float>(
    units: &Units,
    x: &[T],
    dy: &[T],
    coef: Coef4<'_, T>,
    gamma: Option<&[T]>,
    dx: &mut [T],
) {
    let shared = SharedOut::new(dx, 3);
    let (_, cpu) = units.chunking();
    let ntasks = units.count * cpu;
    let per = units.per_job();
    if ntasks <= per {
        dx_task(units, x, dy, &shared, coef, gamma, 0, ntasks);
        return;
    }
    (0..ntasks.div_ceil(per)).into_par_iter().for_each(|j| {
        let t1 = ((j + 1) * per).min(ntasks);
        dx_task(units, x, dy, &shared, coef, gamma, j * per, t1);
    });
}

/// The backward pass: sums per group (and per unfolded parameter), `finish` → per-group dx
/// coefficients, then dx. `acc` is scratch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<'a, T: Float>(
    units: &Units,
    x: &[T],
    dy: &[T],
    xhat: Coef3<'_, T>,
    gamma: Option<&[T]>,
    finish: &DxFinish<'_, T>,
    mut o: BackOut<'a, T>,
    acc: &mut Vec<f64>,
    stage: &'a mut Vec<T>,
    dx: &mut [T],
) {
    let gpu = units.gpu;
    let groups = units.count * gpu;
    let np2 = o.dparams.len();
    // Groups with γ along the line stage its gradient sums: two lines per task.
    let staged = gamma_along(gamma, units.line) && gpu == 1;
    let sstride = if staged { 2 * units.line.size } else { 0 };
    if units.split() {
        dsums_all(units, x, dy, xhat, gamma, o.sg, o.sgx, o.dparams, acc);
        for g in 0..groups {
            let (c, m, a, b) = finish(g, o.sg[g], o.sgx[g]);
            (o.c[g], o.m[g], o.a[g], o.b[g]) = (c, m, a, b);
        }
        dx_all(
            units,
            x,
            dy,
            (&o.c[..], &o.m[..], &o.a[..], &o.b[..]),
            gamma,
            dx,
        );
        return;
    }
    let shared = SharedOut::new(dx, 3);
    let upt = units.per_task();
    let gpt = upt * gpu;
    let ntasks = units.count.div_ceil(upt);
    // Sized only: each task clears the part it uses (`RowGrads::take`).
    stage.resize(ntasks * sstride.max(1), T::zero());
    if units.count <= upt {
        // One task: run it here, without handing it to the thread pool.
        o.dparams.fill(0.0);
        o.stage = &mut stage[..];
        fused_backward_task(
            units,
            x,
            dy,
            xhat,
            gamma,
            finish,
            0,
            units.count,
            o,
            &shared,
        );
        return;
    }
    let dstride = np2.max(1);
    acc.clear();
    acc.resize(dstride * ntasks, 0.0);
    o.sg.par_chunks_mut(gpt)
        .zip(o.sgx.par_chunks_mut(gpt))
        .zip(o.c.par_chunks_mut(gpt))
        .zip(o.m.par_chunks_mut(gpt))
        .zip(o.a.par_chunks_mut(gpt))
        .zip(o.b.par_chunks_mut(gpt))
        .zip(acc.par_chunks_mut(dstride))
        .zip(stage.par_chunks_mut(sstride.max(1)))
        .enumerate()
        .for_each(|(t, (((((((sg, sgx), c), m), a), b), dp), stage))| {
            let u0 = t * upt;
            let u1 = (u0 + upt).min(units.count);
            let dparams = &mut dp[..np2];
            let part = BackOut {
                sg,
                sgx,
                dparams,
                c,
                m,
                a,
                b,
                stage,
            };
            fused_backward_task(units, x, dy, xhat, gamma, finish, u0, u1, part, &shared);
        });
    o.dparams.fill(0.0);
    for part in acc.chunks(dstride) {
        for (d, &v) in o.dparams.iter_mut().zip(&part[..np2]) {
            *d += v;
        }
    }
}

multiversion! {
    /// Raw sums of unit `u` into `raws`, with `acc` as its 3·gpu scratch.
    fn raw_sums_task<T: Float>(
        units: &Units,
        x: &[T],
        center: bool,
        u: usize,
        raws: &mut [Raw],
        acc: &mut [f64],
    ) {
        let gpu = units.gpu;
        let (shift, rest) = acc.split_at_mut(gpu);
        let (sum, sq) = rest.split_at_mut(gpu);
        shifts(units, x, u, center, shift);
        unit_sums(units, x, u, (0, units.lines), shift, sum, sq);
        for (i, r) in raws.iter_mut().enumerate() {
            *r = Raw { shift: shift[i], sum: sum[i], sq: sq[i] };
        }
    }
}

multiversion! {
    /// Raw shifted sums of rows `u0..u0 + raws.len()` (units of one line each).
    fn row_raws_task<T: Float>(units: &Units, x: &[T], center: bool, u0: usize, raws: &mut [Raw]) {
        let len = units.line.size;
        for (i, r) in raws.iter_mut().enumerate() {
            let (xo, _) = units.base(u0 + i);
            let row = &x[xo..xo + len];
            let shift = if center { row[0].to_acc() } else { 0.0 };
            let (sum, sq) = lines::row_sums(row, shift);
            *r = Raw { shift, sum, sq };
        }
    }
}

/// Raw shifted sums of units of one line each (shift: the line's first value), in parallel
/// over fixed runs of rows; no allocation.
pub(crate) fn row_raws<T: Float>(units: &Units, x: &[T], center: bool, out: &mut [Raw]) {
    debug_assert!(units.lines == 1 && units.gpu == 1, "one line per unit");
    let upt = units.per_task();
    if units.count <= upt {
        row_raws_task(units, x, center, 0, out);
        return;
    }
    out.par_chunks_mut(upt)
        .enumerate()
        .for_each(|(t, raws)| row_raws_task(units, x, center, t * upt, raws));
}

/// Raw shifted sums of every group (for `stats`), in the same order as the forward pass.
///
/// An input with a zero-size axis has no units (or no groups per unit): every group keeps
/// its default (zero) sums.
pub(crate) fn raw_sums<T: Float>(units: &Units, x: &[T], center: bool, out: &mut [Raw]) {
    let gpu = units.gpu;
    if units.count == 0 || gpu == 0 {
        out.fill(Raw::default());
        return;
    }
    let mut acc = vec![0.0f64; 3 * gpu * units.count];
    if units.count <= units.per_task() {
        // Small inputs: on the calling thread, without handing tasks to the pool.
        out.chunks_mut(gpu)
            .zip(acc.chunks_mut(3 * gpu))
            .enumerate()
            .for_each(|(u, (raws, acc))| raw_sums_task(units, x, center, u, raws, acc));
        return;
    }
    out.par_chunks_mut(gpu)
        .zip(acc.par_chunks_mut(3 * gpu))
        .enumerate()
        .for_each(|(u, (raws, acc))| raw_sums_task(units, x, center, u, raws, acc));
}
