//! The output of a pass, written by many tasks at once, each through a [`TaskOut`] that can
//! reach only its own lines.
//!
//! The proof is in two parts, both checked by the types here rather than by the callers:
//!
//! * **The lines are disjoint.** [`SharedOut::new`] checks [`Units::fits`]: every line
//!   `(unit, j)` of the plan is `line.size` contiguous values of the output, no two lines
//!   share a value and all lie inside the output. So lines with different `(unit, j)` are
//!   disjoint memory.
//! * **The tasks are disjoint.** A `SharedOut` hands out its tasks once, from
//!   [`tasks`](SharedOut::tasks) (a parallel iterator that yields task `t` exactly once) or
//!   [`whole`](SharedOut::whole) (one task of everything); both borrow it mutably, so no
//!   second set of tasks exists while the first lives. Task `t` *claims* the items
//!   `t·per..(t + 1)·per` of a [`Split`] (units, (unit, chunk) cells, (line, unit) items, or
//!   slots of a [`Permutation`], a type checked once when made); claims of different tasks
//!   share no line.
//!
//! A [`TaskOut`] then gives out only lines of its claim (every accessor checks the claim:
//! one or two comparisons per unit, none per line) and only while it is borrowed mutably:
//! the lines of one call are distinct lines, those of the next call wait until the previous
//! ones are dropped. The one `unsafe` block of the module turns such a line into a slice.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use rayon::prelude::*;

use super::units::{LineIter, Units};
use crate::kernels::elem::Cast;
use crate::kernels::isa::{dispatch, Isa, WithIsa};

/// How the items of a pass are split into tasks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Split<'s> {
    /// Item `u`: unit `u`, all its lines (the fused passes).
    Units,
    /// Item `t`: chunk `t % cpu` of unit `t / cpu` (`Units::chunking`; the split path).
    Cells,
    /// Item `i`: line `i / count` of unit `i % count` (an elementwise pass in memory order).
    Outer,
    /// Item `i`: the line of unit `order[i]`, one-line units; `order` must have one slot
    /// per unit (checked; that it is a permutation, its type proves).
    Slots(&'s Permutation),
}

/// A permutation of `0..n`: every index below its length once, checked when made (once per
/// layout, not per pass), so that a [`Split::Slots`] of it gives every task its own lines.
/// It reads as the slice of its indices.
#[derive(Clone, Debug, Default)]
pub(crate) struct Permutation(Vec<usize>);

impl Permutation {
    /// `order` as a permutation, or `Err(order)` if it is none.
    pub(crate) fn new(order: Vec<usize>) -> Result<Permutation, Vec<usize>> {
        if permutation(&order) {
            Ok(Permutation(order))
        } else {
            Err(order)
        }
    }

    /// The indices back as a vector (to rebuild it without allocating).
    pub(crate) fn into_vec(self) -> Vec<usize> {
        self.0
    }
}

impl std::ops::Deref for Permutation {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        &self.0
    }
}

/// Whether the level in use has the pipelined row kernels ([`Isa::PIPELINE`]), and
/// whether it has 8 or more lanes: an x86 vector level, whose streamed row forward (the
/// pipelined kernel with its output streamed runs its two passes in turn, each in a loop of
/// its own, so it does not spill where `PIPELINE` is false) pays out of cache.
struct Pipelines;

impl WithIsa for Pipelines {
    type Out = (bool, bool);
    #[inline(always)]
    fn run<S: Isa>(self, _: S) -> (bool, bool) {
        (S::PIPELINE, S::LANES >= 8)
    }
}

/// An output written by many tasks, each to lines no other task writes (see the module
/// docs). It holds the exclusive borrow `'a` of the output (the `PhantomData`); the base
/// pointer sits in an `AtomicPtr` (only ever loaded) so that the type is `Send` and `Sync`
/// like that borrow.
pub(crate) struct SharedOut<'a, T> {
    ptr: AtomicPtr<T>,
    units: Units,
    /// Whether the pass streams its output (`cpu::streams`).
    stream: bool,
    /// Whether the level in use has the pipelined row kernels ([`Isa::PIPELINE`]).
    pipelined: bool,
    /// Whether the row forward may run software-pipelined: `pipelined` (or a streamed pass
    /// at a level of 8 lanes or more, AVX2, whose pipelined kernel then runs its two
    /// passes in turn), at this working set (`cpu::tuning().pipeline_forward_max`).
    pipeline: bool,
    _out: PhantomData<&'a mut [T]>,
}

impl<'a, T> SharedOut<'a, T> {
    /// The output of a pass over `units` that touches `arrays` arrays of its size (inputs
    /// and output).
    ///
    /// # Panics
    /// If the plan's lines overlap or leave `out` ([`Units::fits`]): a plan of a standard
    /// layout tensor of `out.len()` values never does.
    pub(in crate::kernels) fn new(out: &'a mut [T], units: &Units, arrays: usize) -> Self {
        assert!(
            units.fits(out.len()),
            "plan lines overlap or exceed the output"
        );
        let bytes = arrays.saturating_mul(std::mem::size_of_val(out));
        // Asked once per pass: where the level has no pipelined kernels, the tasks do not
        // call them per line only to be told so (a dispatch per line, AVX2: 5 % of a group
        // norm forward's instructions).
        let (pipelined, wide) = dispatch(Pipelines);
        let stream = crate::cpu::streams(bytes, arrays);
        // AVX2 (no interleaved kernel) still takes the pipelined call when the pass streams:
        // it then runs the streamed two-pass kernel (`sums::blocked`), the only row forward
        // with non-temporal stores. AMD Zen 3, LayerNorm [8192, 1024]: see `cpu::TABLE`.
        let rows = pipelined || (stream && wide);
        SharedOut {
            ptr: AtomicPtr::new(out.as_mut_ptr()),
            units: *units,
            stream,
            pipelined,
            pipeline: rows && bytes <= crate::cpu::tuning().pipeline_forward_max,
            _out: PhantomData,
        }
    }

    /// The number of items of `split`; checks that a `Slots` order has a slot per unit.
    fn items(&self, split: Split<'_>) -> usize {
        let u = &self.units;
        match split {
            Split::Units => u.count,
            Split::Cells => u.count * u.chunking().1,
            Split::Outer => u.count * u.lines,
            Split::Slots(order) => {
                assert!(
                    u.lines == 1 && order.len() == u.count,
                    "slots are not a permutation of the units"
                );
                u.count
            }
        }
    }

    /// The claim of items `k0..k1`.
    fn claim<'s>(&'s self, split: Split<'s>, k0: usize, k1: usize) -> TaskClaim<'s, T> {
        TaskClaim {
            out: self,
            split,
            k0,
            k1,
        }
    }

    /// Tasks of `per` items of `split` each, task `t` in position `t`: to be zipped with the
    /// tasks' other chunks.
    pub(in crate::kernels) fn tasks<'s>(
        &'s mut self,
        split: Split<'s>,
        per: usize,
    ) -> impl IndexedParallelIterator<Item = TaskClaim<'s, T>> + 's
    where
        T: Send + Sync,
    {
        let n = self.items(split);
        let per = per.max(1);
        let this = &*self;
        (0..n.div_ceil(per))
            .into_par_iter()
            .map(move |t| this.claim(split, t * per, ((t + 1) * per).min(n)))
    }

    /// One task of every item of `split` (a pass run on the calling thread).
    pub(in crate::kernels) fn whole<'s>(&'s mut self, split: Split<'s>) -> TaskOut<'s, T> {
        let n = self.items(split);
        self.claim(split, 0, n).open()
    }
}

std::thread_local! {
    /// The bitset of [`permutation`], kept per thread so that the check allocates only
    /// while it grows (the `_into` methods allocate nothing after warm-up: `tests/alloc.rs`).
    static SEEN: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `order` holds every index below its length once.
fn permutation(order: &[usize]) -> bool {
    SEEN.with_borrow_mut(|seen| {
        seen.clear();
        seen.resize(order.len().div_ceil(64), 0);
        order.iter().all(|&i| {
            let (w, b) = (i / 64, 1u64 << (i % 64));
            let fresh = i < order.len() && seen[w] & b == 0;
            if fresh {
                seen[w] |= b;
            }
            fresh
        })
    })
}

/// A task's claim on the output: items `k0..k1` of a split. It is `Send` (it crosses to a
/// worker); the task opens it there.
pub(crate) struct TaskClaim<'s, T> {
    out: &'s SharedOut<'s, T>,
    split: Split<'s>,
    k0: usize,
    k1: usize,
}

/// Task ids: a line token is good only in the task that made it.
static TASK_IDS: AtomicUsize = AtomicUsize::new(0);

impl<'s, T> TaskClaim<'s, T> {
    /// The claimed items.
    pub(in crate::kernels) fn range(&self) -> (usize, usize) {
        (self.k0, self.k1)
    }

    /// The task's access to its lines.
    pub(in crate::kernels) fn open(self) -> TaskOut<'s, T> {
        let out = self.out;
        let (lpc, cpu) = out.units.chunking();
        TaskOut {
            lpc,
            cpu,
            ptr: out.ptr.load(Ordering::Relaxed),
            units: &out.units,
            split: self.split,
            k0: self.k0,
            k1: self.k1,
            id: TASK_IDS.fetch_add(1, Ordering::Relaxed),
            stream: out.stream,
            pipelined: out.pipelined,
            pipeline: out.pipeline,
            rows: out.units.rows_contiguous(),
            _out: PhantomData,
        }
    }
}

/// One task's access to the lines of its claim (see the module docs).
pub(crate) struct TaskOut<'s, T> {
    ptr: *mut T,
    units: &'s Units,
    split: Split<'s>,
    k0: usize,
    k1: usize,
    /// `Units::chunking`: lines per chunk, chunks per unit.
    lpc: usize,
    cpu: usize,
    id: usize,
    /// Whether the pass streams its output (`cpu::streams`).
    pub(in crate::kernels) stream: bool,
    /// Whether the level in use has the pipelined row kernels ([`Isa::PIPELINE`]); where
    /// not, they would only answer `None`.
    pub(in crate::kernels) pipelined: bool,
    /// Whether the row forward may run software-pipelined: the level's kernels, at this
    /// working set.
    pub(in crate::kernels) pipeline: bool,
    /// Whether the units are one-line rows laid end to end (`Units::rows_contiguous`).
    rows: bool,
    _out: PhantomData<&'s mut [T]>,
}

/// The `len` values at `off` of the output at `ptr`.
///
/// Private to this module, whose accessors call it only for lines (or contiguous runs of
/// lines) of the calling task's claim — in bounds and disjoint from every other task's lines
/// by [`Units::fits`] and the claims — and tie the result to a mutable borrow of the
/// [`TaskOut`].
#[inline(always)]
fn line_at<'t, T>(ptr: *mut T, off: usize, len: usize) -> &'t mut [T] {
    // SAFETY: `ptr` is the base of the output slice a `SharedOut` borrowed mutably for at
    // least `'t` (the `TaskOut` borrows it); `off..off + len` lies inside it and no other live
    // reference overlaps it: the callers in this module pass only claimed lines (see above).
    unsafe { std::slice::from_raw_parts_mut(ptr.add(off), len) }
}

impl<'s, T> TaskOut<'s, T> {
    /// Whether lines `j0..j1` of unit `u` are this task's: a few comparisons (the claims
    /// end at or before the last unit), divisions only where a unit has several chunks.
    #[inline(always)]
    fn owns(&self, u: usize, (j0, j1): (usize, usize)) -> bool {
        let lines = j0 <= j1 && j1 <= self.units.lines;
        match self.split {
            Split::Units => lines && u.wrapping_sub(self.k0) < self.k1 - self.k0,
            Split::Cells if self.cpu == 1 => lines && u.wrapping_sub(self.k0) < self.k1 - self.k0,
            Split::Cells => {
                let (lpc, cpu) = (self.lpc, self.cpu);
                j0 == j1
                    || (lines
                        && u < self.units.count
                        && self.k0 <= u * cpu + j0 / lpc
                        && u * cpu + (j1 - 1) / lpc < self.k1)
            }
            Split::Outer | Split::Slots(_) => false,
        }
    }

    /// The same output as `U` (the cast proves that `T` is `U`), for the kernels of the
    /// concrete element type.
    pub(in crate::kernels) fn cast<U>(&mut self, _: &Cast<T, U>) -> TaskOut<'_, U> {
        TaskOut {
            ptr: self.ptr.cast::<U>(),
            units: self.units,
            split: self.split,
            k0: self.k0,
            k1: self.k1,
            lpc: self.lpc,
            cpu: self.cpu,
            id: self.id,
            stream: self.stream,
            pipelined: self.pipelined,
            pipeline: self.pipeline,
            rows: self.rows,
            _out: PhantomData,
        }
    }

    /// Lines `range` of unit `u`: (input offset, parameter offset, output line).
    ///
    /// # Panics
    /// If they are not this task's.
    #[inline(always)]
    pub(in crate::kernels) fn lines(&mut self, u: usize, range: (usize, usize)) -> LinesMut<'_, T> {
        assert!(self.owns(u, range), "lines outside the task");
        LinesMut {
            it: self.units.lines_of(u, range),
            ptr: self.ptr,
            len: self.units.line.size,
            _out: PhantomData,
        }
    }

    /// Lines `range` of unit `u` as one contiguous run (start offset, number of lines,
    /// values), where the plan lays them end to end (`Units::run`).
    ///
    /// # Panics
    /// If they are not this task's.
    #[inline(always)]
    pub(in crate::kernels) fn run(
        &mut self,
        u: usize,
        range: (usize, usize),
    ) -> Option<(usize, usize, &mut [T])> {
        assert!(self.owns(u, range), "lines outside the task");
        let (start, n) = self.units.run(u, range)?;
        Some((start, n, line_at(self.ptr, start, n * self.units.line.size)))
    }

    /// The lines of the one-line units `u..u + R`: their bases (input offset, parameter
    /// offset) and output lines.
    ///
    /// # Panics
    /// If the units have several lines or are not this task's.
    #[inline(always)]
    pub(in crate::kernels) fn rows<const R: usize>(
        &mut self,
        u: usize,
    ) -> ([(usize, usize); R], [&mut [T]; R]) {
        assert!(
            matches!(self.split, Split::Units)
                && self.units.lines == 1
                && self.k0 <= u
                && u + R <= self.k1,
            "rows outside the task"
        );
        let len = self.units.line.size;
        let mut base = [(0usize, 0usize); R];
        for (r, b) in base.iter_mut().enumerate() {
            *b = self.units.base(u + r);
        }
        // Distinct one-line units: distinct lines.
        let lines = base.map(|(xo, _)| line_at(self.ptr, xo, len));
        (base, lines)
    }

    /// The rows `u0..u1` as one slice, from offset `u0 · line.size`, where the units are
    /// one-line rows laid end to end (`Units::rows_contiguous`, implied by
    /// `Units::row_tile`).
    ///
    /// # Panics
    /// If the rows are not laid so or not this task's.
    #[inline(always)]
    pub(in crate::kernels) fn row_span(&mut self, u0: usize, u1: usize) -> &mut [T] {
        assert!(
            self.rows
                && matches!(self.split, Split::Units)
                && self.k0 <= u0
                && u0 <= u1
                && u1 <= self.k1,
            "rows outside the task"
        );
        let len = self.units.line.size;
        line_at(self.ptr, u0 * len, (u1 - u0) * len)
    }

    /// The claimed (line, unit) items of a [`Split::Outer`] task in order: (unit, input
    /// offset, parameter offset, output line).
    ///
    /// # Panics
    /// If the task's split is another.
    #[inline(always)]
    pub(in crate::kernels) fn outer(&mut self) -> OuterLines<'_, T> {
        assert!(matches!(self.split, Split::Outer), "not an outer split");
        OuterLines {
            units: self.units,
            ptr: self.ptr,
            i: self.k0,
            i1: self.k1,
            line: usize::MAX,
            at: (0, 0),
            _out: PhantomData,
        }
    }

    /// The line of the task's `i`-th slot (slot `k0 + i` of a [`Split::Slots`] task):
    /// (input offset, output line).
    ///
    /// # Panics
    /// If the task has fewer slots.
    #[inline(always)]
    pub(in crate::kernels) fn slot(&mut self, i: usize) -> (usize, &mut [T]) {
        let Split::Slots(order) = self.split else {
            panic!("not a slot split");
        };
        assert!(i < self.k1 - self.k0, "slot outside the task");
        let (cell, len) = (order[self.k0 + i], self.units.line.size);
        // Rows end to end (the chains' cells): the base without a walk over the plan's dims.
        let xo = if self.rows {
            cell * len
        } else {
            self.units.base(cell).0
        };
        (xo, line_at(self.ptr, xo, len))
    }

    /// The bases of units `u0..u1` as tokens for [`unit_lines`](Self::unit_lines) and
    /// [`line_in`](Self::line_in), walked without a division per unit. It borrows the plan,
    /// not the task.
    ///
    /// # Panics
    /// If the units are not this task's.
    #[inline(always)]
    pub(in crate::kernels) fn bases(&self, u0: usize, u1: usize) -> UnitBases<'s> {
        assert!(
            matches!(self.split, Split::Units) && self.k0 <= u0 && u0 <= u1 && u1 <= self.k1,
            "units outside the task"
        );
        UnitBases {
            it: self.units.bases(u0, u1),
            id: self.id,
        }
    }

    /// Every line of the unit at `b` (a token of this task): (input offset, parameter offset,
    /// output line).
    ///
    /// # Panics
    /// If `b` is another task's.
    #[inline(always)]
    pub(in crate::kernels) fn unit_lines(&mut self, b: UnitBase) -> LinesMut<'_, T> {
        assert!(b.id == self.id, "a unit of another task");
        LinesMut {
            it: self.units.lines_at((b.xo, b.po)),
            ptr: self.ptr,
            len: self.units.line.size,
            _out: PhantomData,
        }
    }

    /// The offsets of a unit's lines from its base, as tokens for [`line_in`](Self::line_in).
    /// It borrows the plan, not the task.
    #[inline(always)]
    pub(in crate::kernels) fn line_offsets(&self) -> LineOffsets<'s> {
        LineOffsets {
            it: self.units.lines_at((0, 0)),
            id: self.id,
        }
    }

    /// The line at `l` of the unit at `b` (tokens of this task): (input offset, output line).
    ///
    /// # Panics
    /// If a token is another task's.
    #[inline(always)]
    pub(in crate::kernels) fn line_in(&mut self, b: UnitBase, l: LineOffset) -> (usize, &mut [T]) {
        assert!(b.id == self.id && l.id == self.id, "a line of another task");
        let xo = b.xo + l.xo;
        (xo, line_at(self.ptr, xo, self.units.line.size))
    }
}

/// The lines of one unit with their output lines (see [`TaskOut::lines`]).
pub(crate) struct LinesMut<'t, T> {
    it: LineIter<'t>,
    ptr: *mut T,
    len: usize,
    _out: PhantomData<&'t mut [T]>,
}

impl<'t, T> Iterator for LinesMut<'t, T> {
    type Item = (usize, usize, &'t mut [T]);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let (xo, po) = self.it.next()?;
        // A line of a claimed unit, each yielded once.
        Some((xo, po, line_at(self.ptr, xo, self.len)))
    }
}

/// The (line, unit) items of an outer task (see [`TaskOut::outer`]).
pub(crate) struct OuterLines<'t, T> {
    units: &'t Units,
    ptr: *mut T,
    i: usize,
    i1: usize,
    /// The line of the last item, and its offsets in unit 0.
    line: usize,
    at: (usize, usize),
    _out: PhantomData<&'t mut [T]>,
}

impl<'t, T> Iterator for OuterLines<'t, T> {
    type Item = (usize, usize, usize, &'t mut [T]);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.i1 {
            return None;
        }
        let units = self.units;
        let (j, u) = (self.i / units.count, self.i % units.count);
        self.i += 1;
        if j != self.line {
            // Unit 0 sits at offset 0: its line j gives the line's offsets in every unit.
            self.at = units.lines_of(0, (j, j + 1)).next().unwrap_or((0, 0));
            self.line = j;
        }
        let (bx, bp) = units.base(u);
        let (xo, po) = (bx + self.at.0, bp + self.at.1);
        // Item i of the claim, each yielded once.
        Some((u, xo, po, line_at(self.ptr, xo, units.line.size)))
    }
}

/// A unit's base (input offset, parameter offset), good in the task that made it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UnitBase {
    xo: usize,
    po: usize,
    id: usize,
}

impl Default for UnitBase {
    fn default() -> Self {
        UnitBase {
            xo: 0,
            po: 0,
            id: usize::MAX,
        }
    }
}

impl UnitBase {
    /// (input offset, parameter offset).
    #[inline(always)]
    pub(in crate::kernels) fn at(&self) -> (usize, usize) {
        (self.xo, self.po)
    }
}

/// The bases of a task's units (see [`TaskOut::bases`]).
pub(crate) struct UnitBases<'s> {
    it: LineIter<'s>,
    id: usize,
}

impl Iterator for UnitBases<'_> {
    type Item = UnitBase;

    #[inline(always)]
    fn next(&mut self) -> Option<UnitBase> {
        let (xo, po) = self.it.next()?;
        Some(UnitBase {
            xo,
            po,
            id: self.id,
        })
    }
}

/// The offset of a line from its unit's base, good in the task that made it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineOffset {
    xo: usize,
    id: usize,
}

/// The offsets of a unit's lines (see [`TaskOut::line_offsets`]).
pub(crate) struct LineOffsets<'s> {
    it: LineIter<'s>,
    id: usize,
}

impl Iterator for LineOffsets<'_> {
    type Item = LineOffset;

    #[inline(always)]
    fn next(&mut self) -> Option<LineOffset> {
        let (xo, _) = self.it.next()?;
        Some(LineOffset { xo, id: self.id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    #[test]
    fn rows_fit_exactly_their_slice() {
        assert!(Units::rows(5, 3).fits(15));
        assert!(!Units::rows(5, 3).fits(14));
        assert!(Units::rows(0, 3).fits(0));
        assert!(Units::rows(7, 1).fits(7));
    }

    #[test]
    fn permutations_are_checked() {
        assert!(permutation(&[2, 0, 1]));
        assert!(permutation(&[]));
        assert!(!permutation(&[0, 0, 2]));
        assert!(!permutation(&[0, 3, 1]));
        let made = Permutation::new(vec![1, 2, 0]).expect("a permutation");
        assert_eq!(&made[..], &[1, 2, 0]);
        assert_eq!(made.into_vec(), vec![1, 2, 0]);
        assert_eq!(Permutation::new(vec![1, 1]).err(), Some(vec![1, 1]));
    }

    #[test]
    fn unit_claims_write_every_line_once() {
        let units = Units::rows(10, 4);
        let mut out = vec![0u32; 40];
        let mut shared = SharedOut::new(&mut out, &units, 1);
        shared.tasks(Split::Units, 3).for_each(|claim| {
            let (u0, u1) = claim.range();
            let mut task = claim.open();
            for u in u0..u1 {
                for (xo, po, y) in task.lines(u, (0, 1)) {
                    assert_eq!((xo, po), (4 * u, 0));
                    y.iter_mut().for_each(|v| *v += u as u32 + 1);
                }
            }
        });
        let want: Vec<u32> = (0..40).map(|i| i / 4 + 1).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn slot_claims_follow_the_order() {
        let units = Units::rows(6, 2);
        let order = Permutation::new(vec![3, 5, 0, 1, 4, 2]).expect("a permutation");
        let mut out = vec![0usize; 12];
        let mut shared = SharedOut::new(&mut out, &units, 1);
        shared.tasks(Split::Slots(&order), 4).for_each(|claim| {
            let (k0, k1) = claim.range();
            let mut task = claim.open();
            for i in 0..k1 - k0 {
                let (xo, y) = task.slot(i);
                assert_eq!(xo, 2 * order[k0 + i]);
                y.fill(k0 + i + 1);
            }
        });
        let mut want = vec![0usize; 12];
        for (slot, &cell) in order.iter().enumerate() {
            want[2 * cell..2 * cell + 2].fill(slot + 1);
        }
        assert_eq!(out, want);
    }

    #[test]
    fn a_task_reaches_only_its_claim() {
        let units = Units::rows(6, 2);
        let mut out = vec![0f32; 12];
        let mut shared = SharedOut::new(&mut out, &units, 1);
        let claims: Vec<_> = shared.tasks(Split::Units, 2).collect();
        let mut tasks: Vec<_> = claims.into_iter().map(TaskClaim::open).collect();
        let (first, rest) = tasks.split_at_mut(1);
        let (a, b) = (&mut first[0], &mut rest[0]);
        // Units 0..2 belong to the first task, 2..4 to the second.
        assert!(catch_unwind(AssertUnwindSafe(|| a.lines(2, (0, 1)).count())).is_err());
        assert!(catch_unwind(AssertUnwindSafe(|| a.row_span(1, 3).len())).is_err());
        assert!(catch_unwind(AssertUnwindSafe(|| a.rows::<2>(1).0)).is_err());
        assert_eq!(a.row_span(0, 2).len(), 4);
        // A unit token of the first task is refused by the second.
        let token = a.bases(0, 1).next().expect("a unit");
        assert!(catch_unwind(AssertUnwindSafe(|| b.unit_lines(token).count())).is_err());
        assert_eq!(a.unit_lines(token).count(), 1);
    }

    #[test]
    #[should_panic(expected = "plan lines overlap or exceed the output")]
    fn a_short_output_is_refused() {
        let mut out = vec![0f32; 11];
        let _ = SharedOut::new(&mut out, &Units::rows(6, 2), 1);
    }
}
