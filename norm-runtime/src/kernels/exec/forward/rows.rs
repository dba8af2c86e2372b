//! The fused forward of short contiguous rows (layer norm over a short last axis, instance
//! norm over small maps), a tile of rows at a time ([`Units::row_tile`]): the tile's sums in
//! one kernel call, its statistics and coefficients in one `finish.many` call, its affine
//! pass in one kernel call. Per row that is the arithmetic of the row-by-row path
//! (`row_sums`, `finish.one`, `lines::affine`), so the results are the same bits; what goes
//! is the per-row overhead (a kernel dispatch and a statistics call per row, each row's
//! chain of sums → statistics → coefficients waited on before its affine pass).

use super::{ColumnSums, FwdIn};
use crate::kernels::elem::RowReduce;
use crate::kernels::exec::out::TaskOut;
use crate::kernels::exec::units::{CoefMut, Params, Units};
use crate::kernels::lines::ParamLine;
use crate::Float;

/// Rows per tile where the tiled pass applies to this plan and these parameters (γ and β,
/// if any, along the row and shared by every row), else `None`.
#[inline(always)]
pub(super) fn tile<T: Float>(units: &Units, params: Params<'_, T>) -> Option<usize> {
    let shared = params.gamma.is_none() || (units.line.ps != 0 && units.shared_params());
    units.row_tile(std::mem::size_of::<T>()).filter(|_| shared)
}

/// The fused forward of rows `u0..u1` (this task's, written through `out`) in tiles of
/// `tile` rows; `acc` holds at least
/// 3·(u1 − u0) values (shifts, sums, squares), `c` the task's statistics and coefficients.
#[inline(always)]
pub(super) fn forward<T: Float>(
    t: &FwdIn<'_, T>,
    out: &mut TaskOut<'_, T>,
    (u0, u1): (usize, usize),
    tile: usize,
    c: CoefMut<'_, T>,
    acc: &mut [f64],
) {
    let n = u1.saturating_sub(u0);
    let len = t.units.line.size;
    if n == 0 || len == 0 {
        return;
    }
    let (shift, rest) = acc.split_at_mut(n);
    let (sum, rest) = rest.split_at_mut(n);
    let sq = &mut rest[..n];
    // Shared parameters: the line of unit 0 is every row's.
    let p = match t.params.line(t.units.line, 0) {
        ParamLine::Vector(g, bt) => Some((g, bt)),
        _ => None,
    };
    let mut c = c;
    let mut k0 = 0;
    while k0 < n {
        let k1 = (k0 + tile).min(n);
        let (x0, x1) = ((u0 + k0) * len, (u0 + k1) * len);
        let xs = &t.x[x0..x1];
        let sums = (&mut shift[k0..k1], &mut sum[k0..k1], &mut sq[k0..k1]);
        T::rows_sums(xs, len, t.center, sums);
        let raw = ColumnSums {
            shift: &shift[k0..k1],
            sum: &sum[k0..k1],
            sq: &sq[k0..k1],
        };
        (t.finish.many)(u0 + k0, raw, c.part(k0..k1));
        let stream = out.stream;
        // Rows laid end to end (`Units::row_tile`): the span from x0.
        let y = out.row_span(u0 + k0, u0 + k1);
        let coef = (&c.m[k0..k1], &c.a[k0..k1], &c.b[k0..k1]);
        T::rows_affine((xs, y), len, coef, p, stream);
        k0 = k1;
    }
}

#[cfg(test)]
mod tests;
