//! The portable kernels of a tile of short rows (the defaults of [`Elem::rows_sums`],
//! [`Elem::rows_affine`] and [`Elem::rows_dx`]): contiguous rows of one length, each with
//! its own coefficients, the row kernels' arithmetic row by row.

use super::{reborrow, row_dx_portable, Elem, RowParam};

/// The shifts and shifted sums of a tile's rows, one slot per row.
pub type TileSums<'a> = (&'a mut [f64], &'a mut [f64], &'a mut [f64]);

/// [`Elem::rows_sums`] row by row.
#[inline(always)]
pub(crate) fn rows_sums_each<T: crate::Float + Elem>(
    x: &[T],
    len: usize,
    center: bool,
    (shift, sum, sq): TileSums<'_>,
) {
    if len == 0 {
        return;
    }
    let rows = x.chunks_exact(len).zip(shift.iter_mut());
    for ((row, h), (s, q)) in rows.zip(sum.iter_mut().zip(sq.iter_mut())) {
        *h = if center { row[0].to_acc() } else { 0.0 };
        (*s, *q) = <T as Elem>::row_sums(row, *h);
    }
}

/// [`Elem::rows_affine`] row by row (the arithmetic of `lines::affine` on a row).
#[inline(always)]
pub(crate) fn rows_affine_each<T: crate::Float>(
    (x, y): (&[T], &mut [T]),
    len: usize,
    (m, a, b): (&[T], &[T], &[T]),
    p: Option<(&[T], Option<&[T]>)>,
) {
    if len == 0 {
        return;
    }
    let rows = y.chunks_exact_mut(len).zip(x.chunks_exact(len));
    for (r, (yr, xr)) in rows.take(m.len()).enumerate() {
        let (m, a, b) = (m[r], a[r], b[r]);
        match p {
            None => {
                for (o, &v) in yr.iter_mut().zip(xr) {
                    *o = (v - m) * a + b;
                }
            }
            Some((g, Some(bt))) => {
                for (((o, &v), &g), &bt) in yr.iter_mut().zip(xr).zip(g).zip(bt) {
                    *o = ((v - m) * a + b) * g + bt;
                }
            }
            Some((g, None)) => {
                for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(g) {
                    *o = ((v - m) * a + b) * g;
                }
            }
        }
    }
}

/// [`Elem::rows_dx`] row by row (`row_dx_portable`).
#[inline(always)]
pub(crate) fn rows_dx_each<T: crate::Float>(
    (x, dy, dx): (&[T], &[T], &mut [T]),
    len: usize,
    (c, m, a, b): (&[T], &[T], &[T], &[T]),
    g: Option<&[T]>,
) {
    if len == 0 {
        return;
    }
    let rows = dx
        .chunks_exact_mut(len)
        .zip(x.chunks_exact(len).zip(dy.chunks_exact(len)));
    for (r, (o, (xr, dr))) in rows.take(c.len()).enumerate() {
        row_dx_portable(xr, dr, o, (c[r], m[r], a[r], b[r]), g);
    }
}

/// [`Elem::rows_dsums`] row by row ([`Elem::row_dsums`]).
#[inline(always)]
pub(crate) fn rows_dsums_each<T: crate::Float + Elem>(
    (x, dy): (&[T], &[T]),
    len: usize,
    (m, a, b): (&[T], &[T], &[T]),
    mut p: Option<RowParam<'_, T>>,
    out: &mut [(f64, f64)],
) {
    if len == 0 {
        return;
    }
    let rows = x.chunks_exact(len).zip(dy.chunks_exact(len));
    for (r, ((xr, dr), o)) in rows.zip(out.iter_mut()).enumerate() {
        *o = <T as Elem>::row_dsums(xr, dr, (m[r], a[r], b[r]), reborrow(&mut p));
    }
}
