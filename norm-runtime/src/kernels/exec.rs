//! Parallel execution of the passes over a plan's *units*.
//!
//! The outer dims of a [`Plan`](crate::plan::Plan) split into kept ones (they index statistics) and reduced
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
//! * Short contiguous rows (a unit is one row of at most 3 KiB, the units one after the
//!   other: layer norm over a short last axis, instance norm over small maps) skip the
//!   pipeline: a tile of rows (about 8 KiB) has its sums, statistics and elementwise pass
//!   computed in one call each (`forward::rows`, `backward::rows`), the same arithmetic per
//!   row without the per-row calls.
//! * Split path (a few large units): fixed-size chunks of lines compute partial sums, merged
//!   in chunk order, then the elementwise pass runs over the chunks. Columns keep their
//!   accumulators (or coefficients) in registers across lines.
//!
//! Task boundaries depend only on the shape, never on the number of threads, so results
//! are bit-identical for any thread count. Each task body is compiled per SIMD level
//! ([`multiversion`](super::simd::multiversion)).

mod backward;
mod finish;
mod forward;
mod out;
mod short;
mod units;

pub(crate) use backward::{backward, dsums_all, dx_all};
pub(crate) use finish::{dx_finish_run, finish_run, DxEstimator, Estimator};
pub(crate) use forward::{forward, normalize, raw_sums, row_raws, sums_all};
pub(crate) use out::{Permutation, SharedOut, Split, TaskOut};
pub(crate) use units::{
    Acc, BackIn, BackOut, CoefMut, ColumnSums, DxCoefMut, DxFinish, Finish, FwdIn, Params,
    ShiftedSums, Stat, Units,
};

use super::lines::{Coef3, Coef4};

/// Target number of elements per task: the least on the fused path, and the chunk size of
/// the split path.
pub(crate) const TASK_ELEMS: usize = 1 << 15;

/// Whether the split path splits the rows of `count` units of `elems` elements in all into
/// chunks of [`chunk_lines`] lines: few units and more than two chunks' worth of values. The
/// column sums of the half layers (`widen/tiled/cols.rs`) take the same chunks, so that they
/// add in the f32 layer's order.
pub(crate) fn splits(count: usize, elems: usize) -> bool {
    count < 8 && elems > 2 * TASK_ELEMS
}

/// Lines per chunk of the split path, for lines of `size` elements: about [`TASK_ELEMS`]
/// elements, at least one line.
pub(crate) fn chunk_lines(size: usize) -> usize {
    (TASK_ELEMS / size.max(1)).max(1)
}

/// The most elements per task on the fused path.
const TASK_MAX_ELEMS: usize = 1 << 20;

/// The number of tasks the fused path aims at: enough to balance a small pool, few enough
/// that units pipeline over long runs (each task restarts the pipeline).
pub(super) const TASKS: usize = 16;
