//! The fused backward of short contiguous rows, a tile of rows at a time
//! ([`Units::row_tile`]): the tile's sums eight rows per kernel call (γ's staged gradient
//! terms of the eight summed in registers), its dx coefficients in one `finish.many` call,
//! its dx in one kernel call. Per row that is the arithmetic of the row-by-row path
//! (`dsums_rows`, `finish.one`, `row_dx_portable`), and the staged γ sums are flushed after
//! the same rows, so the results are the same bits.

use super::{gamma_along, BackIn, RowGrads, STAGE_ROWS};
use crate::kernels::elem::RowReduce;
use crate::kernels::exec::out::TaskOut;
use crate::kernels::exec::units::{BackOut, DxCoefMut, DxFinish, Units, ROW_TILE_STEP};
use crate::Float;

/// Rows per tile where the tiled pass applies to this plan and γ (absent or folded, or
/// along the row and shared by every row), else `None`.
#[inline(always)]
pub(super) fn tile<T: Float>(units: &Units, gamma: Option<&[T]>) -> Option<usize> {
    let shared = gamma.is_none() || (gamma_along(gamma, units.line) && units.shared_params());
    units.row_tile(std::mem::size_of::<T>()).filter(|_| shared)
}

/// The fused backward of rows `u0..u1` in tiles of `tile` rows (a multiple of
/// [`STAGE_ROWS`]). `o.sg`, `o.sgx` must be zero; `o.stage` holds two lines when γ runs
/// along the line.
#[inline(always)]
pub(super) fn backward<T: Float>(
    t: &BackIn<'_, T>,
    finish: &DxFinish<'_, T>,
    (u0, u1): (usize, usize),
    tile: usize,
    mut o: BackOut<'_, T>,
    out: &mut TaskOut<'_, T>,
) {
    const { assert!(ROW_TILE_STEP.is_multiple_of(STAGE_ROWS)) };
    let (line, len) = (t.units.line, t.units.line.size);
    if u0 >= u1 || len == 0 {
        return;
    }
    let mut grads = RowGrads::take(t.gamma, line, &mut o);
    // Shared parameters: unit 0's γ is every row's.
    let g = t
        .gamma
        .filter(|&g| gamma_along(Some(g), line))
        .map(|g| &g[..len]);
    let mut b = u0;
    while b < u1 {
        let e = (b + tile).min(u1);
        // Blocks of STAGE_ROWS rows from u0: the staging is flushed after every
        // STAGE_ROWS rows of the task, as on the row-by-row path.
        let mut u = b;
        while u < e {
            let v = (u + STAGE_ROWS).min(e);
            block_sums(t, (u, v), u0, &mut grads, &mut o);
            u = v;
        }
        let (k0, k1) = (b - u0, e - u0);
        let run = DxCoefMut {
            c: &mut o.c[k0..k1],
            m: &mut o.m[k0..k1],
            a: &mut o.a[k0..k1],
            b: &mut o.b[k0..k1],
        };
        (finish.many)(b, (&o.sg[k0..k1], &o.sgx[k0..k1]), run);
        let (x0, x1) = (b * len, e * len);
        let stream = out.stream;
        // Rows laid end to end (`Units::row_tile`): the span from x0.
        let dx = out.row_span(b, e);
        let io = (&t.x[x0..x1], &t.dy[x0..x1], dx);
        let coef = (&o.c[k0..k1], &o.m[k0..k1], &o.a[k0..k1], &o.b[k0..k1]);
        T::rows_dx(io, len, coef, g, stream);
        b = e;
    }
    grads.flush();
}

/// The backward sums of rows `u..v` (at most [`STAGE_ROWS`], task indices from `u − u0`)
/// into `o.sg`, `o.sgx`, γ's terms into its staging: one kernel call.
#[inline(always)]
fn block_sums<T: Float>(
    t: &BackIn<'_, T>,
    (u, v): (usize, usize),
    u0: usize,
    grads: &mut RowGrads<'_, T>,
    o: &mut BackOut<'_, T>,
) {
    let len = t.units.line.size;
    let w = v - u;
    let mut sums = [(0.0, 0.0); STAGE_ROWS];
    let (xm, xa, xb) = t.xhat;
    let c = (&xm[u..v], &xa[u..v], &xb[u..v]);
    let io = (&t.x[u * len..v * len], &t.dy[u * len..v * len]);
    // Shared parameters: every row's parameter offset is 0.
    T::rows_dsums(io, len, c, grads.param(0, w), &mut sums[..w]);
    for (r, &s) in sums[..w].iter().enumerate() {
        let k = u - u0 + r;
        grads.fold(0, s, &mut o.sg[k], &mut o.sgx[k]);
    }
}
