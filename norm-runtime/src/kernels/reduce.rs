//! The row and column kernels with explicit SIMD: the compiler does not vectorize an
//! f32 → f64 widening reduction, and these loops carry the statistics and backward passes.
//!
//! * [`Elem::row_sums`]: Σ(x − h) and Σ(x − h)² of a line, exact f64 differences.
//! * [`Elem::row_dsums`] / [`Elem::dsums_rows`]: Σw·dy and Σw·dy·x̂ with
//!   x̂ = (x − m)·a + b (computed in the element type, as the portable kernels do), with an
//!   optional γ along the line (w = γ) whose gradient terms dy·x̂ and dy are staged per
//!   element on the way ([`Staging`]); several rows sharing γ stage their terms summed.
//! * Software-pipelined rows: [`Elem::affine_then_sums`] (forward) and
//!   [`Elem::dx_then_dsums`] (backward) write the elementwise pass of one row in the
//!   same loop that reduces the next, so the stores of one overlap the loads of the other.
//! * Columns: [`Elem::col_sums`], [`Elem::col_dsums`], [`Elem::col_affine`],
//!   [`Elem::col_dx`] keep per-column accumulators or coefficients in registers across
//!   lines.
//!
//! The elementwise passes start their full vector stores at the level's vector alignment of
//! the output (partial head and tail vectors): a store that straddles two cache lines costs
//! both, and `Vec` buffers start 16 bytes past a boundary. Where a pass's working set
//! exceeds [`super::simd::stream_threshold`], the full vectors are non-temporal stores where
//! the level has them (AVX-512, AVX2), fenced at the end of each kernel call. Neither
//! changes a bit of the results.
//!
//! Each kernel is written once over the ISA token ([`super::isa::Isa`]): `sums` (statistics
//! rows, pipelined forward), `dsums` (backward rows, pipelined backward), `cols` (columns);
//! `impls` implements [`Elem`] for `f32` and `f64` with one `isa::dispatch` per call.
//!
//! Accumulation is in f64 (the f32 backward sums first add four vectors, or 8 lines, in f32);
//! lane sums reduce in a fixed order, so a level's result is deterministic, and the plain
//! and the pipelined kernels of a level share their accumulator type, so their sums are
//! bit-identical. Levels differ from each other only by rounding (FMA, lane order, partial
//! sums).

/// Accumulators of a row's γ-gradient sums in the element type, one slot per element:
/// dy·x̂ is added into the first, dy into the second. The caller flushes them into f64
/// every few rows, so each f32 partial sums only a handful of terms.
pub type Staging<'a, T> = (&'a mut [T], &'a mut [T]);

/// γ along a row (the weight of the backward sums) and, optionally, the staging
/// accumulators of its gradient sums.
pub type RowParam<'a, T> = (&'a [T], Option<Staging<'a, T>>);

/// `R` rows of one length for the backward sums: the inputs, upstream gradients and the
/// coefficients (m, a, b) of x̂ = (x − m)·a + b, per row.
pub struct Rows<'a, T, const R: usize> {
    /// The inputs.
    pub x: [&'a [T]; R],
    /// The upstream gradients.
    pub dy: [&'a [T]; R],
    /// (m, a, b) per row.
    pub c: [(T, T, T); R],
    /// Whether the `R·len` values that follow the last row in memory (of `x` and `dy`) are
    /// the rows the next call reduces: a pipelined kernel may prefetch them. The hardware
    /// prefetchers stop at 4 KiB page boundaries, so the first lines of every new row of a
    /// few KiB would otherwise miss.
    pub ahead: bool,
}

/// `R` rows of one length for the dx pass: dx = dy·(c·γ) + ((x − m)·a + b).
pub struct DxRows<'a, T, const R: usize> {
    /// The inputs.
    pub x: [&'a [T]; R],
    /// The upstream gradients.
    pub dy: [&'a [T]; R],
    /// The outputs.
    pub dx: [&'a mut [T]; R],
    /// (c, m, a, b) per row.
    pub c: [(T, T, T, T); R],
    /// γ along the rows (shared), if not folded into `c`.
    pub g: Option<&'a [T]>,
    /// Whether kernels may write dx with non-temporal stores (`simd::streams`).
    pub stream: bool,
    /// Whether a level without the pipelined multi-row kernels ([`Isa::PIPELINE`] false:
    /// AVX2) runs one row's dx and the next row's sums in one loop anyway: units of several
    /// lines where the CPU's tuning asks for it (`cpu::Tuning::pipeline_group_backward`),
    /// and one-line rows sharing γ when the pass streams from memory (`rows_backward`).
    /// Same bits either way.
    ///
    /// [`Isa::PIPELINE`]: super::isa::Isa::PIPELINE
    pub pipeline: bool,
}

/// A row parameter reborrowed for one call.
#[inline(always)]
pub(crate) fn reborrow<'b, T>(p: &'b mut Option<RowParam<'_, T>>) -> Option<RowParam<'b, T>> {
    match p {
        Some((g, Some((a, b)))) => Some((&**g, Some((&mut **a, &mut **b)))),
        Some((g, None)) => Some((&**g, None)),
        None => None,
    }
}

/// [`Elem::col_sums`] line by line (the default, and the fallback of other levels).
#[inline(always)]
pub(crate) fn col_sums_lines<T: crate::Float, I: Iterator<Item = usize>>(
    x: &[T],
    lines: I,
    shift: &[f64],
    sum: &mut [f64],
    sq: &mut [f64],
) {
    let w = shift.len();
    for o in lines {
        col_sums_portable(&x[o..o + w], shift, sum, sq);
    }
}

/// [`Elem::col_dsums`] line by line (the default, and the fallback of other levels).
#[inline(always)]
pub(crate) fn col_dsums_lines<T: crate::Float, I: Iterator<Item = usize>>(
    x: &[T],
    dy: &[T],
    lines: I,
    c: (&[T], &[T], &[T]),
    sg: &mut [f64],
    sgx: &mut [f64],
) {
    let w = c.0.len();
    for o in lines {
        col_dsums_portable(&x[o..o + w], &dy[o..o + w], c, sg, sgx);
    }
}

/// [`Elem::dsums_rows`] row by row (the default, and the fallback of other levels).
#[inline(always)]
pub(crate) fn dsums_rows_each<T: crate::Float + Elem, const R: usize>(
    rows: Rows<'_, T, R>,
    mut p: Option<RowParam<'_, T>>,
) -> [(f64, f64); R] {
    // A plain loop, as `impls::each_row` (`array::from_fn` stays out of line).
    let mut out = [(0.0, 0.0); R];
    for (r, o) in out.iter_mut().enumerate() {
        *o = <T as Elem>::row_dsums(rows.x[r], rows.dy[r], rows.c[r], reborrow(&mut p));
    }
    out
}

/// [`Elem::dx_then_dsums`] as two passes (the default, and the fallback of other
/// levels).
#[inline(always)]
pub(crate) fn dx_then_dsums_apart<T: crate::Float + Elem, const R: usize>(
    cur: DxRows<'_, T, R>,
    next: Rows<'_, T, R>,
    p: Option<RowParam<'_, T>>,
) -> [(f64, f64); R] {
    for (r, dx) in cur.dx.into_iter().enumerate() {
        row_dx_portable(cur.x[r], cur.dy[r], dx, cur.c[r], cur.g);
    }
    <T as Elem>::dsums_rows(next, p)
}

/// The values of `out` before its first 64-byte boundary: an elementwise loop split there
/// stores whole cache lines (an unaligned vector store straddles two).
#[inline(always)]
pub(crate) fn head<T>(out: &[T]) -> usize {
    out.as_ptr().align_offset(64).min(out.len())
}

/// Portable reference of [`Elem::row_sums`].
#[inline(always)]
pub(crate) fn row_sums_portable<T: crate::Float>(x: &[T], shift: f64) -> (f64, f64) {
    let (mut s, mut q) = (0.0, 0.0);
    for &v in x {
        let d = v.to_acc() - shift;
        s += d;
        q += d * d;
    }
    (s, q)
}

/// One line of [`Elem::col_sums`].
#[inline(always)]
pub(crate) fn col_sums_portable<T: crate::Float>(
    x: &[T],
    shift: &[f64],
    sum: &mut [f64],
    sq: &mut [f64],
) {
    for (((&v, &h), s), q) in x.iter().zip(shift).zip(sum.iter_mut()).zip(sq.iter_mut()) {
        let d = v.to_acc() - h;
        *s += d;
        *q += d * d;
    }
}

/// One line of [`Elem::col_dsums`] (zipped iterators, so the loop vectorizes).
#[inline(always)]
pub(crate) fn col_dsums_portable<T: crate::Float>(
    x: &[T],
    dy: &[T],
    (m, a, b): (&[T], &[T], &[T]),
    sg: &mut [f64],
    sgx: &mut [f64],
) {
    let coef = m.iter().zip(a).zip(b);
    let acc = sg.iter_mut().zip(sgx.iter_mut());
    for (((&v, &d), ((&m, &a), &b)), (sg, sgx)) in x.iter().zip(dy).zip(coef).zip(acc) {
        let d = d.to_acc();
        *sg += d;
        *sgx += d * ((v - m) * a + b).to_acc();
    }
}

/// Portable reference of [`Elem::row_dsums`].
#[inline(always)]
pub(crate) fn row_dsums_portable<T: crate::Float>(
    x: &[T],
    dy: &[T],
    c: (T, T, T),
    p: Option<RowParam<'_, T>>,
) -> (f64, f64) {
    row_dsums_weighted(x, dy, c, stage_portable(x, dy, c, p))
}

/// Adds a row's γ-gradient terms into its staging accumulators (if any), in the element
/// type; returns γ.
#[inline(always)]
pub(crate) fn stage_portable<'a, T: crate::Float>(
    x: &[T],
    dy: &[T],
    (m, a, b): (T, T, T),
    p: Option<RowParam<'a, T>>,
) -> Option<&'a [T]> {
    let (g, stage) = p?;
    if let Some((sg, sb)) = stage {
        for (((&v, &d), sg), sb) in x.iter().zip(dy).zip(sg.iter_mut()).zip(sb.iter_mut()) {
            *sg = *sg + d * ((v - m) * a + b);
            *sb = *sb + d;
        }
    }
    Some(g)
}

/// The γ-gradient sums of a row straight into f64: `dg[i] += dy[i]·x̂[i]`, `db[i] += dy[i]`.
#[inline(always)]
pub(crate) fn row_dparams_portable<T: crate::Float>(
    x: &[T],
    dy: &[T],
    (m, a, b): (T, T, T),
    dg: &mut [f64],
    db: &mut [f64],
) {
    for (((&v, &d), dg), db) in x.iter().zip(dy).zip(dg.iter_mut()).zip(db.iter_mut()) {
        let d = d.to_acc();
        *dg += d * ((v - m) * a + b).to_acc();
        *db += d;
    }
}

/// Σw·dy and Σw·dy·x̂ of a row (w = 1 when absent), portable.
#[inline(always)]
pub(crate) fn row_dsums_weighted<T: crate::Float>(
    x: &[T],
    dy: &[T],
    (m, a, b): (T, T, T),
    w: Option<&[T]>,
) -> (f64, f64) {
    let (mut s1, mut s2) = (0.0, 0.0);
    for i in 0..x.len() {
        let d = dy[i].to_acc() * w.map_or(1.0, |w| w[i].to_acc());
        s1 += d;
        s2 += d * ((x[i] - m) * a + b).to_acc();
    }
    (s1, s2)
}

/// dx = dy·(c·γ) + ((x − m)·a + b) over a row (γ = 1 when absent), in the element type.
#[inline(always)]
pub(crate) fn row_dx_portable<T: crate::Float>(
    x: &[T],
    dy: &[T],
    out: &mut [T],
    k: (T, T, T, T),
    g: Option<&[T]>,
) {
    // Elementwise: the two parts compute exactly what the whole row would.
    let h = head(out).min(x.len()).min(dy.len());
    let (o0, o1) = out.split_at_mut(h);
    row_dx_part(&x[..h], &dy[..h], o0, k, g);
    row_dx_part(&x[h..], &dy[h..], o1, k, g.map(|g| &g[h.min(g.len())..]));
}

/// [`row_dx_portable`] over part of a row (the loops the compiler vectorizes).
#[inline(always)]
fn row_dx_part<T: crate::Float>(
    x: &[T],
    dy: &[T],
    out: &mut [T],
    (c, m, a, b): (T, T, T, T),
    g: Option<&[T]>,
) {
    match g {
        Some(g) => {
            for (((o, &v), &d), &g) in out.iter_mut().zip(x).zip(dy).zip(g) {
                *o = d * (c * g) + ((v - m) * a + b);
            }
        }
        None => {
            for ((o, &v), &d) in out.iter_mut().zip(x).zip(dy) {
                *o = d * c + ((v - m) * a + b);
            }
        }
    }
}

/// The row and column kernels of one concrete element type (`f32`, `f64`); generic code
/// reaches them through [`super::elem::RowReduce`].
pub trait Elem: Sized + Copy {
    /// Σ(x − shift) and Σ(x − shift)².
    fn row_sums(x: &[Self], shift: f64) -> (f64, f64);
    /// Σw·dy and Σw·dy·((x − m)·a + b), where w is γ along the row when `p` is given (and 1
    /// otherwise); with staging accumulators, dy·x̂ and dy are also added into them.
    fn row_dsums(
        x: &[Self],
        dy: &[Self],
        c: (Self, Self, Self),
        p: Option<RowParam<'_, Self>>,
    ) -> (f64, f64);
    /// Shifted sums of `w = shift.len()` columns over lines: for each line start `o` of
    /// `lines`, `sum[c] += x[o + c] − shift[c]` and `sq[c] += (x[o + c] − shift[c])²`, in f64.
    #[inline(always)]
    fn col_sums<I: Iterator<Item = usize> + Clone>(
        x: &[Self],
        lines: I,
        shift: &[f64],
        sum: &mut [f64],
        sq: &mut [f64],
    ) where
        Self: crate::Float,
    {
        col_sums_lines(x, lines, shift, sum, sq);
    }
    /// Backward sums of `w = m.len()` columns over lines: `sg[c] += dy`, `sgx[c] += dy·x̂`
    /// with `x̂ = (x − m[c])·a[c] + b[c]`.
    #[inline(always)]
    fn col_dsums<I: Iterator<Item = usize> + Clone>(
        x: &[Self],
        dy: &[Self],
        lines: I,
        c: (&[Self], &[Self], &[Self]),
        sg: &mut [f64],
        sgx: &mut [f64],
    ) where
        Self: crate::Float,
    {
        col_dsums_lines(x, dy, lines, c, sg, sgx);
    }
    /// `y = (x − m[c])·a[c] + b[c]` over a run of contiguous whole lines of
    /// `w = m.len()` columns from offset `start` of `x`, written to `out` (the run's
    /// output, a whole number of lines), the coefficients held in registers (`f32`, `w` up
    /// to four vectors of the level) or, for wider lines of whole vectors, loaded with the
    /// values at aligned output vectors; with `stream`, full vectors may be non-temporal
    /// stores (`simd::streams`). Returns false, writing nothing, where no such kernel
    /// exists.
    #[inline(always)]
    fn col_affine(
        _x: &[Self],
        _out: &mut [Self],
        _start: usize,
        _c: (&[Self], &[Self], &[Self]),
        _stream: bool,
    ) -> bool {
        false
    }
    /// `dx = dy·c[c] + ((x − m[c])·a[c] + b[c])` over a run of whole lines, as
    /// [`col_affine`](Elem::col_affine); `c` = (c, m, a, b).
    #[inline(always)]
    fn col_dx(
        _x: &[Self],
        _dy: &[Self],
        _out: &mut [Self],
        _start: usize,
        _c: (&[Self], &[Self], &[Self], &[Self]),
        _stream: bool,
    ) -> bool {
        false
    }
    /// Software pipelining of two rows: writes y = ((x − m)·a + b)·γ + β for the current row
    /// and returns the shifted sums of the `next` row (all rows of one length), with exactly
    /// the arithmetic of the separate passes, so results are bit-identical. `None` where no
    /// pipelined kernel exists for the type (the caller then runs the two passes). The
    /// callers ask for it where the level pipelines
    /// ([`Isa::PIPELINE`](super::isa::Isa::PIPELINE)); `f32`'s kernel runs at any level.
    /// With `ahead`, the values after `next` in memory are the next call's row: the kernel
    /// may prefetch them (see [`Rows::ahead`]). `shift`: the sums' shift and whether the
    /// row is centered; an uncentered row's Σd is never used (`stats::mean_m2`), so the
    /// kernel may skip it and return 0 for it (Σd² is the same bits either way).
    fn affine_then_sums(
        _x: &[Self],
        _y: &mut [Self],
        _c: (Self, Self, Self),
        _p: Option<(&[Self], Option<&[Self]>)>,
        _next: (&[Self], bool),
        _shift: (f64, bool),
        _stream: bool,
    ) -> Option<(f64, f64)> {
        None
    }
    /// [`row_dsums`](Elem::row_dsums) of `R` rows sharing `p` (γ and its staging,
    /// which receives the terms of all `R` rows). Kernels may sum the rows' staged terms in
    /// registers before one update of the accumulators.
    #[inline(always)]
    fn dsums_rows<const R: usize>(
        rows: Rows<'_, Self, R>,
        p: Option<RowParam<'_, Self>>,
    ) -> [(f64, f64); R]
    where
        Self: crate::Float,
    {
        dsums_rows_each(rows, p)
    }
    /// Software pipelining in the backward pass: writes dx of `R` rows and returns
    /// [`dsums_rows`](Elem::dsums_rows) of the `R` next rows, with exactly the
    /// arithmetic of the separate passes. The default runs the two passes one after the
    /// other.
    #[inline(always)]
    fn dx_then_dsums<const R: usize>(
        cur: DxRows<'_, Self, R>,
        next: Rows<'_, Self, R>,
        p: Option<RowParam<'_, Self>>,
    ) -> [(f64, f64); R]
    where
        Self: crate::Float,
    {
        dx_then_dsums_apart(cur, next, p)
    }
    /// The shifted sums of a tile of short rows: `x` is contiguous rows of `len` values,
    /// one slot of `out` (shift, Σ(x − shift), Σ(x − shift)²) per row; a row's shift is its
    /// first value when `center`, else 0. The sums of [`row_sums`](Elem::row_sums), bit
    /// for bit, in one call for the tile.
    #[inline(always)]
    fn rows_sums(x: &[Self], len: usize, center: bool, out: TileSums<'_>)
    where
        Self: crate::Float,
    {
        rows_sums_each(x, len, center, out);
    }
    /// `y = ((x − m[r])·a[r] + b[r])·γ + β` over a tile of contiguous rows of `len` values
    /// (`io`: the tile's input and output, `m.len()` rows), γ and β (if any) along the row
    /// and shared by the rows; `stream` as in [`col_affine`](Elem::col_affine). The
    /// arithmetic of `lines::affine`, bit for bit.
    #[inline(always)]
    fn rows_affine(
        io: (&[Self], &mut [Self]),
        len: usize,
        c: (&[Self], &[Self], &[Self]),
        p: Option<(&[Self], Option<&[Self]>)>,
        _stream: bool,
    ) where
        Self: crate::Float,
    {
        rows_affine_each(io, len, c, p);
    }
    /// [`row_dsums`](Elem::row_dsums) of each of the contiguous rows of `len` values of
    /// `io` (x, dy), row `r` with its `(m[r], a[r], b[r])`, into `out[r]` (`out.len()` rows), all
    /// sharing `p` (γ and its staging, which receives the rows' terms in row order): one call
    /// for a block of rows, the same bits as row by row.
    #[inline(always)]
    fn rows_dsums(
        io: (&[Self], &[Self]),
        len: usize,
        c: (&[Self], &[Self], &[Self]),
        p: Option<RowParam<'_, Self>>,
        out: &mut [(f64, f64)],
    ) where
        Self: crate::Float,
    {
        rows_dsums_each(io, len, c, p, out);
    }
    /// `dx = dy·(c[r]·γ) + ((x − m[r])·a[r] + b[r])` over a tile of contiguous rows of `len`
    /// values (`io`: x, dy and dx of the tile, `c.0.len()` rows), γ (if any) along the row
    /// and shared by the rows. The arithmetic of `row_dx_portable`, bit for bit.
    #[inline(always)]
    fn rows_dx(
        io: (&[Self], &[Self], &mut [Self]),
        len: usize,
        c: (&[Self], &[Self], &[Self], &[Self]),
        g: Option<&[Self]>,
        _stream: bool,
    ) where
        Self: crate::Float,
    {
        rows_dx_each(io, len, c, g);
    }
}

mod cols;
mod dsums;
mod impls;
pub(crate) mod small_cols;
mod sums;
mod tiles;

pub use tiles::TileSums;
use tiles::{rows_affine_each, rows_dsums_each, rows_dx_each, rows_sums_each};
