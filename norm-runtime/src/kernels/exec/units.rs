//! A plan seen as units of lines, the output they write, and the per-group values the
//! passes exchange.

use std::ops::Range;

use super::{Coef3, TASKS, TASK_ELEMS, TASK_MAX_ELEMS};
use crate::kernels::lines::ParamLine;
use crate::plan::{Dim, Plan, MAX_DIMS};
use crate::Float;

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
    pub groups_per_unit: usize,
    /// Whether every reduced dim lies outside every kept dim in memory (NCHW batch norm:
    /// `N` reduced, `C` kept, the `H·W` line): unit-major order then strides across the
    /// tensor, and an elementwise pass runs faster in memory order.
    pub(super) reduced_outer: bool,
}

/// The lines `j0..j1` of one unit: (input offset, parameter offset) pairs. It borrows the
/// reduced dims (no per-unit copy of the plan).
#[derive(Clone)]
pub(super) struct LineIter<'a> {
    rd: &'a [Dim],
    idx: [usize; MAX_DIMS],
    xo: usize,
    po: usize,
    left: usize,
}

impl LineIter<'_> {
    /// Moves a fresh iterator (index zero, at the unit's base) to line `j` of the unit.
    #[inline(always)]
    fn seek(&mut self, mut j: usize) {
        for k in (0..self.rd.len()).rev() {
            let d = self.rd[k];
            let i = j % d.size;
            j /= d.size;
            self.idx[k] = i;
            self.xo += i * d.xs;
            self.po += i * d.ps;
        }
    }
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
            groups_per_unit: if line.ss == 0 { 1 } else { line.size },
            reduced_outer: true,
        };
        for d in &plan.dims[..plan.ndims - 1] {
            if d.ss != 0 {
                u.kd[u.nk] = *d;
                u.nk += 1;
                u.count *= d.size;
            } else {
                u.reduced_outer &= u.nk == 0;
                u.rd[u.nr] = *d;
                u.nr += 1;
                u.lines *= d.size;
            }
        }
        u.reduced_outer &= u.nk > 0 && u.lines > 1;
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
            groups_per_unit: 1,
            reduced_outer: false,
        }
    }

    /// Elements per unit.
    pub(super) fn elems(&self) -> usize {
        self.lines * self.line.size
    }

    /// Input and parameter offsets of unit `u`'s first line.
    #[inline(always)]
    pub(super) fn base(&self, mut u: usize) -> (usize, usize) {
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

    /// The bases (input offset, parameter offset) of units `u0..u1` in order: divisions
    /// once at `u0`, none per unit.
    #[inline(always)]
    pub(super) fn bases(&self, u0: usize, u1: usize) -> LineIter<'_> {
        // Built in place, as `lines_of`.
        let mut it = LineIter {
            rd: &self.kd[..self.nk],
            idx: [0; MAX_DIMS],
            xo: 0,
            po: 0,
            left: u1.saturating_sub(u0),
        };
        if 0 < u0 && u0 < u1 {
            it.seek(u0);
        }
        it
    }

    /// Every line of the unit whose first line is at `(xo, po)` (a base).
    #[inline(always)]
    pub(super) fn lines_at(&self, (xo, po): (usize, usize)) -> LineIter<'_> {
        LineIter {
            rd: &self.rd[..self.nr],
            idx: [0usize; MAX_DIMS],
            xo,
            po,
            left: self.lines,
        }
    }

    /// The lines `j0..j1` of unit `u`.
    #[inline(always)]
    pub(super) fn lines_of(&self, u: usize, (j0, j1): (usize, usize)) -> LineIter<'_> {
        let (xo, po) = self.base(u);
        // Built in place, its index zero; only a start past the unit's first line moves it.
        // (An index array computed apart, one 8-byte store per dim, was then copied into
        // the iterator as one 64-byte block: a load spanning several pending stores, which
        // waits until the store buffer drains, full of the previous line's output in the
        // pipelined forward: ~15 % of the AVX-512 task body of a weight-standardization
        // forward.)
        let mut it = LineIter {
            rd: &self.rd[..self.nr],
            idx: [0; MAX_DIMS],
            xo,
            po,
            left: j1 - j0,
        };
        if j0 > 0 {
            it.seek(j0);
        }
        it
    }

    /// Lines `j0..j1` of unit `u` as one contiguous run `(start, lines)`, when the reduced
    /// dims lay the unit's lines end to end (channels-last statistics over the leading dims).
    #[inline(always)]
    pub(super) fn run(&self, u: usize, (j0, j1): (usize, usize)) -> Option<(usize, usize)> {
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

    /// Rows per tile of the short-row passes (`forward::rows`, `backward::rows`): where
    /// every unit is one contiguous row of at most [`SHORT_ROW_BYTES`] (`elem` bytes per
    /// value) and unit u starts at u·len, a tile of about [`ROW_TILE_BYTES`] of rows
    /// (a multiple of [`ROW_TILE_STEP`]) is summed, finished and written in three calls.
    /// `None` for other plans. A function of the shape only.
    pub(super) fn row_tile(&self, elem: usize) -> Option<usize> {
        let len = self.line.size;
        let bytes = len.saturating_mul(elem);
        if self.lines != 1
            || self.groups_per_unit != 1
            || self.line.xs != 1
            || bytes == 0
            || bytes > SHORT_ROW_BYTES
        {
            return None;
        }
        let mut span = len;
        for d in self.kd[..self.nk].iter().rev() {
            if d.size > 1 && d.xs != span {
                return None;
            }
            span = span.saturating_mul(d.size);
        }
        let rows = (ROW_TILE_BYTES / bytes).clamp(ROW_TILE_STEP, MAX_TILE_ROWS);
        Some(rows / ROW_TILE_STEP * ROW_TILE_STEP)
    }

    /// Whether every element of every line of the plan has its own offset, below `len`:
    /// the lines `(u, j)` (`u < count`, `j < lines`, each `line.size` contiguous values)
    /// are pairwise disjoint and lie inside a slice of `len` values. The proof that lets
    /// [`SharedOut`](super::out::SharedOut) hand out the lines of distinct units or chunks
    /// as disjoint `&mut` slices; checked once per pass, a few comparisons per dim.
    pub(super) fn fits(&self, len: usize) -> bool {
        if self.count == 0 || self.lines == 0 || self.line.size == 0 {
            return true;
        }
        if self.line.xs != 1 && self.line.size > 1 {
            return false;
        }
        let line = Dim { xs: 1, ..self.line };
        let mut dims = [Dim::default(); 2 * MAX_DIMS + 1];
        let mut n = 0;
        for d in self.kd[..self.nk]
            .iter()
            .chain(&self.rd[..self.nr])
            .chain(std::iter::once(&line))
        {
            if d.size > 1 {
                dims[n] = *d;
                n += 1;
            }
        }
        let dims = &mut dims[..n];
        dims.sort_unstable_by_key(|d| d.xs);
        // Ascending strides, each beyond the last offset the smaller ones reach: distinct
        // indices give distinct offsets.
        let mut reach = 0usize;
        for d in dims.iter() {
            if d.xs <= reach {
                return false;
            }
            let Some(r) = (d.size - 1)
                .checked_mul(d.xs)
                .and_then(|e| e.checked_add(reach))
            else {
                return false;
            };
            reach = r;
        }
        reach < len
    }

    /// Whether every unit is one contiguous line and unit `u` starts at `u · line.size`
    /// (the units laid end to end from offset 0).
    pub(super) fn rows_contiguous(&self) -> bool {
        if self.lines != 1 || (self.line.xs != 1 && self.line.size > 1) {
            return false;
        }
        let mut span = self.line.size;
        for d in self.kd[..self.nk].iter().rev() {
            if d.size > 1 && d.xs != span {
                return false;
            }
            span = span.saturating_mul(d.size);
        }
        true
    }

    /// Whether every unit has the same parameters (no kept dim moves them).
    pub(super) fn shared_params(&self) -> bool {
        self.kd[..self.nk].iter().all(|d| d.ps == 0)
    }

    /// Whether the plan runs the split path.
    pub(super) fn split(&self) -> bool {
        super::splits(self.count, self.elems())
    }

    /// Lines per chunk on the split path, and chunks per unit.
    pub(super) fn chunking(&self) -> (usize, usize) {
        let lpc = super::chunk_lines(self.line.size);
        (lpc, self.lines.div_ceil(lpc).max(1))
    }

    /// (unit, chunk) tasks per parallel job of the split-path passes: enough that a job
    /// covers about [`TASK_ELEMS`] elements (small units — the cells of a fused chain — would
    /// otherwise pay the dispatch once per unit).
    pub(super) fn per_job(&self) -> usize {
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
    pub(super) fn adjacent(&self, v: usize, r: usize, end: usize, mut at: usize) -> bool {
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
    pub(super) fn chunk(&self, c: usize) -> (usize, usize) {
        let (lpc, _) = self.chunking();
        (c * lpc, ((c + 1) * lpc).min(self.lines))
    }

    /// Units per task on the fused path: about [`TASKS`] tasks, each of
    /// [`TASK_ELEMS`]..[`TASK_MAX_ELEMS`] elements where units allow. A function of the
    /// shape only, never of the number of threads.
    pub(super) fn per_task(&self) -> usize {
        let e = self.elems().max(1);
        let lo = (TASK_ELEMS / e).max(1);
        let hi = (TASK_MAX_ELEMS / e).max(lo);
        self.count.div_ceil(TASKS).clamp(lo, hi)
    }
}

/// The longest row (bytes) of the tiled short-row passes ([`Units::row_tile`]): up to
/// 768 `f32` the tiles beat the row pipeline (AMD EPYC Zen 4, both passes, 1 thread); at
/// 1024 the pipelined backward is faster.
const SHORT_ROW_BYTES: usize = 3 << 10;

/// The bytes of a row tile's input ([`Units::row_tile`]): its rows stay in the L1 cache
/// from the sums to the elementwise pass.
const ROW_TILE_BYTES: usize = 8 << 10;

/// Rows per tile are a multiple of this (the backward pass flushes its staged γ sums every
/// eight rows).
pub(super) const ROW_TILE_STEP: usize = 8;

/// The most rows per tile.
const MAX_TILE_ROWS: usize = 128;

/// Scratch of the executor, reused across calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct Acc {
    /// Partial sums and shifts.
    pub f: Vec<f64>,
    /// Merged raw sums (split path).
    pub raws: Vec<ShiftedSums>,
}

/// Raw shifted sums of one group.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ShiftedSums {
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

impl<T> CoefMut<'_, T> {
    /// The run of groups `r` of these arrays.
    #[inline(always)]
    pub(crate) fn part(&mut self, r: Range<usize>) -> CoefMut<'_, T> {
        CoefMut {
            stat: &mut self.stat[r.clone()],
            m: &mut self.m[r.clone()],
            a: &mut self.a[r.clone()],
            b: &mut self.b[r],
        }
    }
}

/// Unfolded parameters.
#[derive(Clone, Copy)]
pub(crate) struct Params<'a, T> {
    pub gamma: Option<&'a [T]>,
    pub beta: Option<&'a [T]>,
}

impl<'a, T: Float> Params<'a, T> {
    #[inline(always)]
    pub(super) fn line(&self, line: Dim, po: usize) -> ParamLine<'a, T> {
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

/// A group's statistics from its raw sums: `one(group, raw, &mut stat)` writes the
/// statistics and returns the coefficients (m, a, b) of the elementwise pass. (The
/// statistics go out through the reference: returned through memory and copied, their load
/// would wait on a store buffer full of the pass's output — a failed store forwarding.)
pub(crate) type FinishOne<'a, T> = dyn Fn(usize, ShiftedSums, &mut Stat) -> (T, T, T) + Sync + 'a;

/// The statistics and coefficients of the consecutive groups `g0..g0 + sums.len()` from
/// their raw sums (columns: a unit of channels-last statistics), into `out`; the same
/// arithmetic as [`FinishOne`] group by group.
pub(crate) type FinishMany<'a, T> = dyn Fn(usize, ColumnSums<'_>, CoefMut<'_, T>) + Sync + 'a;

/// How the statistics of groups are finished: one at a time (rows, where the next unit's
/// sums run in the same loop) or a run of them (columns).
pub(crate) struct Finish<'a, T> {
    /// One group.
    pub one: &'a FinishOne<'a, T>,
    /// A run of consecutive groups.
    pub many: &'a FinishMany<'a, T>,
}

/// The raw shifted sums of consecutive groups, as columns.
#[derive(Clone, Copy)]
pub(crate) struct ColumnSums<'a> {
    /// The shift of each group.
    pub shift: &'a [f64],
    /// Σ(x − shift).
    pub sum: &'a [f64],
    /// Σ(x − shift)².
    pub sq: &'a [f64],
}

impl<'a> ColumnSums<'a> {
    /// The run of groups `r` of these sums.
    #[inline(always)]
    pub(crate) fn part(self, r: Range<usize>) -> ColumnSums<'a> {
        ColumnSums {
            shift: &self.shift[r.clone()],
            sum: &self.sum[r.clone()],
            sq: &self.sq[r],
        }
    }
}

/// Per-group dx coefficients from the group's backward sums: dx = dy·c·γ + (x − m)·a + b.
pub(crate) type DxFinishOne<'a, T> = dyn Fn(usize, f64, f64) -> (T, T, T, T) + Sync + 'a;

/// [`DxFinishOne`] for the consecutive groups `g0..g0 + sg.len()` (a unit of column
/// statistics) in one call: `(g0, (sg, sgx), out)`.
pub(crate) type DxFinishMany<'a, T> = dyn Fn(usize, (&[f64], &[f64]), DxCoefMut<'_, T>) + Sync + 'a;

/// How the dx coefficients of groups are finished: one at a time (rows, pipelined with the
/// next unit's sums) or a run of them (columns).
pub(crate) struct DxFinish<'a, T> {
    /// One group.
    pub one: &'a DxFinishOne<'a, T>,
    /// A run of consecutive groups.
    pub many: &'a DxFinishMany<'a, T>,
}

/// Per-group dx coefficients (c, m, a, b) of a run of groups.
pub(crate) struct DxCoefMut<'a, T> {
    pub c: &'a mut [T],
    pub m: &'a mut [T],
    pub a: &'a mut [T],
    pub b: &'a mut [T],
}

/// The inputs of the forward pass (and of each of its tasks): the units, the input, whether
/// the sums are shifted by each group's first value, the affine parameters and how the
/// statistics are finished.
#[derive(Clone, Copy)]
pub(crate) struct FwdIn<'a, T> {
    /// The plan's units.
    pub units: &'a Units,
    /// The input.
    pub x: &'a [T],
    /// Whether the sums are shifted (by each group's first value).
    pub center: bool,
    /// The affine parameters not folded into the coefficients.
    pub params: Params<'a, T>,
    /// Finishes the statistics and coefficients of groups.
    pub finish: &'a Finish<'a, T>,
}

/// The inputs of the backward pass (and of each of its tasks): the units, the input and its
/// upstream gradient, the saved x̂ coefficients (m, a, b) and γ where it is not folded.
#[derive(Clone, Copy)]
pub(crate) struct BackIn<'a, T> {
    /// The plan's units.
    pub units: &'a Units,
    /// The input.
    pub x: &'a [T],
    /// The upstream gradient, shaped as `x`.
    pub dy: &'a [T],
    /// Per group: x̂ = (x − m)·a + b.
    pub xhat: Coef3<'a, T>,
    /// γ, where it is not folded into the coefficients.
    pub gamma: Option<&'a [T]>,
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
