//! The row and column kernels with explicit SIMD: the compiler does not vectorize an
//! f32 → f64 widening reduction, and these loops carry the statistics and backward passes.
//!
//! * [`RowReduce::row_sums`]: Σ(x − h) and Σ(x − h)² of a line, exact f64 differences.
//! * [`RowReduce::row_dsums`] / [`RowReduce::dsums_rows`]: Σw·dy and Σw·dy·x̂ with
//!   x̂ = (x − m)·a + b (computed in the element type, as the portable kernels do), with an
//!   optional γ along the line (w = γ) whose gradient terms dy·x̂ and dy are staged per
//!   element on the way ([`Stage`]); several rows sharing γ stage their terms summed.
//! * Software-pipelined rows: [`RowReduce::affine_then_sums`] (forward) and
//!   [`RowReduce::dx_then_dsums`] (backward) write the elementwise pass of one row in the
//!   same loop that reduces the next, so the stores of one overlap the loads of the other.
//! * Columns: [`RowReduce::col_sums`], [`RowReduce::col_dsums`], [`RowReduce::col_affine`],
//!   [`RowReduce::col_dx`] keep per-column accumulators or coefficients in registers across
//!   lines.
//!
//! The AVX-512 elementwise passes start their vector stores at 64-byte boundaries of the
//! output (masked head and tail vectors): a store that straddles two cache lines costs both,
//! and `Vec` buffers start 16 bytes past a boundary. Where a pass's working set exceeds
//! [`super::simd::stream_threshold`], the full vectors are non-temporal stores, fenced at the
//! end of each kernel call. Neither changes a bit of the results.
//!
//! The kernels are AVX-512 and AVX2+FMA (x86-64, module `x86`) and NEON (aarch64, module
//! `arm`: the row reductions only; the other loops are portable code the compiler
//! vectorizes for NEON).
//!
//! Accumulation is in f64 (the f32 backward sums first add 64 values, or 8 lines, in f32);
//! lane sums reduce in a fixed order, so a level's result is deterministic, and the plain
//! and the pipelined kernels of a level share their accumulator type, so their sums are
//! bit-identical. Levels differ from each other only by rounding (FMA, lane order, partial
//! sums).

use super::simd::level;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::simd::Level;

/// Accumulators of a row's γ-gradient sums in the element type, one slot per element:
/// dy·x̂ is added into the first, dy into the second. The caller flushes them into f64
/// every few rows, so each f32 partial sums only a handful of terms.
pub type Stage<'a, T> = (&'a mut [T], &'a mut [T]);

/// γ along a row (the weight of the backward sums) and, optionally, the staging
/// accumulators of its gradient sums.
pub type RowParam<'a, T> = (&'a [T], Option<Stage<'a, T>>);

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
}

/// A row parameter reborrowed for one call.
#[inline(always)]
pub(crate) fn reborrow<'b, T>(p: &'b mut Option<RowParam<'_, T>>) -> Option<RowParam<'b, T>> {
    p.as_mut()
        .map(|(g, st)| (&**g, st.as_mut().map(|(a, b)| (&mut **a, &mut **b))))
}

/// [`RowReduce::col_sums`] line by line (the default, and the fallback of other levels).
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

/// [`RowReduce::col_dsums`] line by line (the default, and the fallback of other levels).
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

/// [`RowReduce::dsums_rows`] row by row (the default, and the fallback of other levels).
#[inline(always)]
pub(crate) fn dsums_rows_each<T: crate::Float, const R: usize>(
    rows: Rows<'_, T, R>,
    mut p: Option<RowParam<'_, T>>,
) -> [(f64, f64); R] {
    std::array::from_fn(|r| T::row_dsums(rows.x[r], rows.dy[r], rows.c[r], reborrow(&mut p)))
}

/// [`RowReduce::dx_then_dsums`] as two passes (the default, and the fallback of other
/// levels).
#[inline(always)]
pub(crate) fn dx_then_dsums_apart<T: crate::Float, const R: usize>(
    cur: DxRows<'_, T, R>,
    next: Rows<'_, T, R>,
    p: Option<RowParam<'_, T>>,
) -> [(f64, f64); R] {
    for (r, dx) in cur.dx.into_iter().enumerate() {
        row_dx_portable(cur.x[r], cur.dy[r], dx, cur.c[r], cur.g);
    }
    T::dsums_rows(next, p)
}

/// The values of `out` before its first 64-byte boundary: an elementwise loop split there
/// stores whole cache lines (an unaligned vector store straddles two).
#[inline(always)]
pub(crate) fn head<T>(out: &[T]) -> usize {
    out.as_ptr().align_offset(64).min(out.len())
}

/// Portable reference of [`RowReduce::row_sums`].
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

/// One line of [`RowReduce::col_sums`].
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

/// One line of [`RowReduce::col_dsums`] (zipped iterators, so the loop vectorizes).
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

/// Portable reference of [`RowReduce::row_dsums`].
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

/// Element types with SIMD row reductions.
pub trait RowReduce: Sized + Copy {
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
    /// `y = (x − m[c])·a[c] + b[c]` over a run of `lines` contiguous whole lines of
    /// `w = m.len()` columns from offset `start` (`run = (start, lines)`), the coefficients
    /// held in registers (f32 with AVX-512, w ∈ {16, 32, 48, 64}); with `stream`, full
    /// vectors may be non-temporal stores (`simd::streams`). Returns false, writing
    /// nothing, where no such kernel exists.
    ///
    /// # Safety
    /// `out[start..start + lines·w]` must lie in the `out_len` values at `out` (checked) and
    /// be written by no one else meanwhile.
    #[inline(always)]
    unsafe fn col_affine(
        _x: &[Self],
        _out: *mut Self,
        _out_len: usize,
        _run: (usize, usize),
        _c: (&[Self], &[Self], &[Self]),
        _stream: bool,
    ) -> bool {
        false
    }
    /// `dx = dy·c[c] + ((x − m[c])·a[c] + b[c])` over a run of whole lines, as
    /// [`col_affine`](RowReduce::col_affine).
    ///
    /// # Safety
    /// As [`col_affine`](RowReduce::col_affine).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn col_dx(
        _x: &[Self],
        _dy: &[Self],
        _out: *mut Self,
        _out_len: usize,
        _run: (usize, usize),
        _c: (&[Self], &[Self], &[Self], &[Self]),
        _stream: bool,
    ) -> bool {
        false
    }
    /// Software pipelining of two rows: writes y = ((x − m)·a + b)·γ + β for the current row
    /// and returns the shifted sums of the `next` row (all rows of one length), with exactly
    /// the arithmetic of the separate passes, so results are bit-identical. `None` where no
    /// pipelined kernel exists for the type and level (the caller then runs the two passes).
    /// With `ahead`, the values after `next` in memory are the next call's row: the kernel
    /// may prefetch them (see [`Rows::ahead`]).
    fn affine_then_sums(
        _x: &[Self],
        _y: &mut [Self],
        _c: (Self, Self, Self),
        _p: Option<(&[Self], Option<&[Self]>)>,
        _next: (&[Self], bool),
        _shift: f64,
        _stream: bool,
    ) -> Option<(f64, f64)> {
        None
    }
    /// [`row_dsums`](RowReduce::row_dsums) of `R` rows sharing `p` (γ and its staging,
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
    /// [`dsums_rows`](RowReduce::dsums_rows) of the `R` next rows, with exactly the
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
}

impl RowReduce for f32 {
    #[inline(always)]
    fn row_sums(x: &[f32], shift: f64) -> (f64, f64) {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::sums_f32_avx512(x, shift) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx2 => unsafe { x86::sums_f32_avx2(x, shift) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `level()` is NEON only where it was detected.
            Level::Neon => unsafe { arm::sums_f32_neon(x, shift) },
            _ => row_sums_portable(x, shift),
        }
    }
    #[inline(always)]
    fn row_dsums(
        x: &[f32],
        dy: &[f32],
        c: (f32, f32, f32),
        p: Option<RowParam<'_, f32>>,
    ) -> (f64, f64) {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe {
                let rows = Rows {
                    x: [x],
                    dy: [dy],
                    c: [c],
                    ahead: false,
                };
                x86::dsums_f32_avx512(rows, p)[0]
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx2 => unsafe { x86::dsums_f32_avx2(x, dy, c, p) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `level()` is NEON only where it was detected.
            Level::Neon => unsafe { arm::dsums_f32_neon(x, dy, c, stage_portable(x, dy, c, p)) },
            _ => row_dsums_portable(x, dy, c, p),
        }
    }
    // Only x86-64 has these kernels: elsewhere the arguments go unused.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    #[inline(always)]
    unsafe fn col_affine(
        x: &[f32],
        out: *mut f32,
        out_len: usize,
        run: (usize, usize),
        c: (&[f32], &[f32], &[f32]),
        stream: bool,
    ) -> bool {
        let k = (c.0, c.1, c.2, c.2);
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time; the output
            // contract is the caller's.
            Level::Avx512 => unsafe {
                x86::col_run_f32_avx512::<false>(x, x, out, out_len, run, k, stream)
            },
            _ => false,
        }
    }
    // Only x86-64 has these kernels: elsewhere the arguments go unused.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    #[inline(always)]
    unsafe fn col_dx(
        x: &[f32],
        dy: &[f32],
        out: *mut f32,
        out_len: usize,
        run: (usize, usize),
        c: (&[f32], &[f32], &[f32], &[f32]),
        stream: bool,
    ) -> bool {
        let k = (c.1, c.2, c.3, c.0);
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time; the output
            // contract is the caller's.
            Level::Avx512 => unsafe {
                x86::col_run_f32_avx512::<true>(x, dy, out, out_len, run, k, stream)
            },
            _ => false,
        }
    }
    #[inline(always)]
    fn col_sums<I: Iterator<Item = usize> + Clone>(
        x: &[f32],
        lines: I,
        shift: &[f64],
        sum: &mut [f64],
        sq: &mut [f64],
    ) {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::col_sums_f32_avx512(x, lines, shift, sum, sq) },
            _ => col_sums_lines(x, lines, shift, sum, sq),
        }
    }
    #[inline(always)]
    fn col_dsums<I: Iterator<Item = usize> + Clone>(
        x: &[f32],
        dy: &[f32],
        lines: I,
        c: (&[f32], &[f32], &[f32]),
        sg: &mut [f64],
        sgx: &mut [f64],
    ) {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::col_dsums_f32_avx512(x, dy, lines, c, sg, sgx) },
            _ => col_dsums_lines(x, dy, lines, c, sg, sgx),
        }
    }
    #[inline(always)]
    fn dsums_rows<const R: usize>(
        rows: Rows<'_, f32, R>,
        p: Option<RowParam<'_, f32>>,
    ) -> [(f64, f64); R] {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::dsums_f32_avx512(rows, p) },
            _ => dsums_rows_each(rows, p),
        }
    }
    #[inline(always)]
    fn dx_then_dsums<const R: usize>(
        cur: DxRows<'_, f32, R>,
        next: Rows<'_, f32, R>,
        p: Option<RowParam<'_, f32>>,
    ) -> [(f64, f64); R] {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::dx_then_dsums_f32_avx512(cur, next, p) },
            _ => dx_then_dsums_apart(cur, next, p),
        }
    }
    // Only x86-64 has these kernels: elsewhere the arguments go unused.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    #[inline(always)]
    fn affine_then_sums(
        x: &[f32],
        y: &mut [f32],
        c: (f32, f32, f32),
        p: Option<(&[f32], Option<&[f32]>)>,
        next: (&[f32], bool),
        shift: f64,
        stream: bool,
    ) -> Option<(f64, f64)> {
        match level() {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                // SAFETY: `level()` never exceeds the features detected at run time.
                let sums =
                    unsafe { x86::affine_then_sums_f32_avx512(x, y, c, p, next, shift, stream) };
                Some(sums)
            }
            _ => None,
        }
    }
}

impl RowReduce for f64 {
    #[inline(always)]
    fn row_sums(x: &[f64], shift: f64) -> (f64, f64) {
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::sums_f64_avx512(x, shift) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx2 => unsafe { x86::sums_f64_avx2(x, shift) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `level()` is NEON only where it was detected.
            Level::Neon => unsafe { arm::sums_f64_neon(x, shift) },
            _ => row_sums_portable(x, shift),
        }
    }
    #[inline(always)]
    fn row_dsums(
        x: &[f64],
        dy: &[f64],
        c: (f64, f64, f64),
        p: Option<RowParam<'_, f64>>,
    ) -> (f64, f64) {
        // f64 rows: the staging loop is plain f64 arithmetic the compiler vectorizes.
        let w = stage_portable(x, dy, c, p);
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level()` never exceeds the features detected at run time.
            Level::Avx512 => unsafe { x86::dsums_f64_avx512(x, dy, c, w) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx2 => unsafe { x86::dsums_f64_avx2(x, dy, c, w) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `level()` is NEON only where it was detected.
            Level::Neon => unsafe { arm::dsums_f64_neon(x, dy, c, w) },
            _ => row_dsums_weighted(x, dy, c, w),
        }
    }
}

/// The NEON reductions (aarch64, where NEON is part of the baseline): the row sums of the
/// statistics and of the backward pass, in f64 chains of two lanes. The elementwise passes
/// and the column sums are the portable loops, which the compiler vectorizes for NEON
/// itself; the row reductions are not vectorized without reassociation, hence these.
#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    use super::{row_dsums_weighted, row_sums_portable};

    /// Four chains of two f64 lanes.
    type Chains = [float64x2_t; 4];

    /// The sum of the chains' lanes, in a fixed order.
    #[inline]
    #[target_feature(enable = "neon")]
    fn hsum(c: Chains) -> f64 {
        vaddvq_f64(vaddq_f64(vaddq_f64(c[0], c[1]), vaddq_f64(c[2], c[3])))
    }

    /// 4 f32 → two vectors of 2 f64.
    #[inline]
    #[target_feature(enable = "neon")]
    fn widen(v: float32x4_t) -> (float64x2_t, float64x2_t) {
        (vcvt_f64_f32(vget_low_f32(v)), vcvt_high_f64_f32(v))
    }

    /// (Σd, Σd·e) over the first `full` values (a multiple of 8), eight values per step:
    /// `step(i)` gives the pairs (d, e) of values `i..i + 8`, two lanes each, one pair per
    /// chain.
    #[inline]
    #[target_feature(enable = "neon")]
    fn chains8(full: usize, step: impl Fn(usize) -> [(float64x2_t, float64x2_t); 4]) -> (f64, f64) {
        let z = vdupq_n_f64(0.0);
        let (mut s, mut t): (Chains, Chains) = ([z; 4], [z; 4]);
        for i in (0..full).step_by(8) {
            for (k, (d, e)) in step(i).into_iter().enumerate() {
                s[k] = vaddq_f64(s[k], d);
                t[k] = vfmaq_f64(t[k], d, e);
            }
        }
        (hsum(s), hsum(t))
    }

    /// Σ(x − shift) and Σ(x − shift)² of an f32 row.
    #[target_feature(enable = "neon")]
    pub(super) fn sums_f32_neon(x: &[f32], shift: f64) -> (f64, f64) {
        let h = vdupq_n_f64(shift);
        let full = x.len() - x.len() % 8;
        let (s, q) = chains8(full, |i| {
            // SAFETY: i + 8 ≤ full ≤ x.len(): two 16-byte loads in bounds.
            let (a, b) = unsafe {
                (
                    vld1q_f32(x.as_ptr().add(i)),
                    vld1q_f32(x.as_ptr().add(i + 4)),
                )
            };
            let (a0, a1) = widen(a);
            let (b0, b1) = widen(b);
            [a0, a1, b0, b1].map(|v| {
                let d = vsubq_f64(v, h);
                (d, d)
            })
        });
        let (rs, rq) = row_sums_portable(&x[full..], shift);
        (s + rs, q + rq)
    }

    /// Σ(x − shift) and Σ(x − shift)² of an f64 row.
    #[target_feature(enable = "neon")]
    pub(super) fn sums_f64_neon(x: &[f64], shift: f64) -> (f64, f64) {
        let h = vdupq_n_f64(shift);
        let full = x.len() - x.len() % 8;
        let (s, q) = chains8(full, |i| {
            [0, 2, 4, 6].map(|k| {
                // SAFETY: i + k + 2 ≤ full ≤ x.len(): a 16-byte load in bounds.
                let d = vsubq_f64(unsafe { vld1q_f64(x.as_ptr().add(i + k)) }, h);
                (d, d)
            })
        });
        let (rs, rq) = row_sums_portable(&x[full..], shift);
        (s + rs, q + rq)
    }

    /// The part of a row's backward sums that both element types share: the common length
    /// of the row, its gradient and its weight rounded down to whole steps of 8 (`full`),
    /// and the portable sums of the values from `full` on.
    #[inline(always)]
    fn dsums_rest<T: crate::Float>(
        x: &[T],
        dy: &[T],
        c: (T, T, T),
        w: Option<&[T]>,
    ) -> (usize, (f64, f64)) {
        let n = x.len().min(dy.len()).min(w.map_or(usize::MAX, <[T]>::len));
        let full = n - n % 8;
        let rest = row_dsums_weighted(&x[full..n], &dy[full..n], c, w.map(|w| &w[full..n]));
        (full, rest)
    }

    /// Σw·dy and Σw·dy·x̂ of an f32 row (w = 1 when absent), x̂ = (x − m)·a + b in f32 as
    /// the portable kernel computes it (a multiply, then an add).
    #[target_feature(enable = "neon")]
    pub(super) fn dsums_f32_neon(
        x: &[f32],
        dy: &[f32],
        (m, a, b): (f32, f32, f32),
        w: Option<&[f32]>,
    ) -> (f64, f64) {
        let (full, (r1, r2)) = dsums_rest(x, dy, (m, a, b), w);
        let (vm, va, vb) = (vdupq_n_f32(m), vdupq_n_f32(a), vdupq_n_f32(b));
        let four = |j: usize| {
            // SAFETY: j + 4 ≤ full ≤ the length of `x`, `dy` (and `w`).
            let (vx, mut vd) =
                unsafe { (vld1q_f32(x.as_ptr().add(j)), vld1q_f32(dy.as_ptr().add(j))) };
            if let Some(w) = w {
                // SAFETY: as above.
                vd = vmulq_f32(vd, unsafe { vld1q_f32(w.as_ptr().add(j)) });
            }
            let xh = vaddq_f32(vmulq_f32(vsubq_f32(vx, vm), va), vb);
            let ((d0, d1), (x0, x1)) = (widen(vd), widen(xh));
            [(d0, x0), (d1, x1)]
        };
        let (s, t) = chains8(full, |i| {
            let ([p0, p1], [p2, p3]) = (four(i), four(i + 4));
            [p0, p1, p2, p3]
        });
        (s + r1, t + r2)
    }

    /// [`dsums_f32_neon`] for f64 rows.
    #[target_feature(enable = "neon")]
    pub(super) fn dsums_f64_neon(
        x: &[f64],
        dy: &[f64],
        (m, a, b): (f64, f64, f64),
        w: Option<&[f64]>,
    ) -> (f64, f64) {
        let (full, (r1, r2)) = dsums_rest(x, dy, (m, a, b), w);
        let (vm, va, vb) = (vdupq_n_f64(m), vdupq_n_f64(a), vdupq_n_f64(b));
        let (s, t) = chains8(full, |i| {
            [0, 2, 4, 6].map(|k| {
                let j = i + k;
                // SAFETY: j + 2 ≤ full ≤ the length of `x`, `dy` (and `w`).
                let (vx, mut vd) =
                    unsafe { (vld1q_f64(x.as_ptr().add(j)), vld1q_f64(dy.as_ptr().add(j))) };
                if let Some(w) = w {
                    // SAFETY: as above.
                    vd = vmulq_f64(vd, unsafe { vld1q_f64(w.as_ptr().add(j)) });
                }
                (vd, vaddq_f64(vmulq_f64(vsubq_f64(vx, vm), va), vb))
            })
        });
        (s + r1, t + r2)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{
        col_dsums_portable, col_sums_portable, reborrow, row_dsums_portable, row_dsums_weighted,
        row_sums_portable, stage_portable, DxRows, RowParam, Rows,
    };

    /// Prefetches into L2 the two cache lines at `p`, `p + 16` if `ahead` (nothing is read:
    /// a prefetch never faults, whatever the address).
    #[inline(always)]
    fn prefetch2(p: *const f32, ahead: bool) {
        if ahead {
            // SAFETY: SSE, part of the x86-64 baseline; a prefetch accesses no memory
            // architecturally and never faults.
            unsafe {
                _mm_prefetch::<_MM_HINT_T1>(p.cast());
                _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(16).cast());
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn hsum512(v: __m512d) -> f64 {
        _mm512_reduce_add_pd(v)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum256(v: __m256d) -> f64 {
        let lo = _mm256_castpd256_pd128(v);
        let hi = _mm256_extractf128_pd::<1>(v);
        let s = _mm_add_pd(lo, hi);
        _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
    }

    /// 16 f32 → two vectors of 8 f64, shifted by `h`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn widen16(v: __m512, h: __m512d) -> (__m512d, __m512d) {
        (
            _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), h),
            _mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(v)), h),
        )
    }

    /// The eight accumulator chains of the f32 shifted sums (AVX-512): four for Σd, four
    /// for Σd². One type for the plain and the pipelined reduction, so both perform the same
    /// operations in the same order (bit-identical sums).
    struct Sums16x2 {
        h: __m512d,
        s: [__m512d; 4],
        q: [__m512d; 4],
    }

    impl Sums16x2 {
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn new(shift: f64) -> Self {
            let z = _mm512_setzero_pd();
            Sums16x2 {
                h: _mm512_set1_pd(shift),
                s: [z; 4],
                q: [z; 4],
            }
        }

        /// Adds the 32 values at `p`. Eight independent chains: the add latency, not memory,
        /// would otherwise bound the loop. Halves are loaded as 256-bit vectors and widened
        /// from there (no lane extraction).
        ///
        /// # Safety
        /// `p` must be valid for reading 32 values.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq,fma")]
        unsafe fn add32(&mut self, p: *const f32) {
            // SAFETY: 32 values readable at `p` (the caller's contract).
            let [a, b, c, d] = [0, 8, 16, 24].map(|k| unsafe {
                _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(p.add(k))), self.h)
            });
            for (k, v) in [a, b, c, d].into_iter().enumerate() {
                self.s[k] = _mm512_add_pd(self.s[k], v);
                self.q[k] = _mm512_fmadd_pd(v, v, self.q[k]);
            }
        }

        /// Adds the last `rest.len() < 32` values and reduces: (Σd, Σd²).
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq,fma")]
        fn finish(mut self, mut rest: &[f32], shift: f64) -> (f64, f64) {
            if rest.len() >= 16 {
                // SAFETY: `rest` holds at least 16 f32: one unaligned 64-byte load in bounds.
                let v = unsafe { _mm512_loadu_ps(rest.as_ptr()) };
                let (a, b) = widen16(v, self.h);
                for (k, v) in [a, b].into_iter().enumerate() {
                    self.s[k] = _mm512_add_pd(self.s[k], v);
                    self.q[k] = _mm512_fmadd_pd(v, v, self.q[k]);
                }
                rest = &rest[16..];
            }
            let (rs, rq) = row_sums_portable(rest, shift);
            let [s0, s1, s2, s3] = self.s;
            let [q0, q1, q2, q3] = self.q;
            let s = _mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3));
            let q = _mm512_add_pd(_mm512_add_pd(q0, q1), _mm512_add_pd(q2, q3));
            (hsum512(s) + rs, hsum512(q) + rq)
        }
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn sums_f32_avx512(x: &[f32], shift: f64) -> (f64, f64) {
        let mut acc = Sums16x2::new(shift);
        let mut chunks = x.chunks_exact(32);
        for c in &mut chunks {
            // SAFETY: `c` holds 32 f32.
            unsafe { acc.add32(c.as_ptr()) };
        }
        acc.finish(chunks.remainder(), shift)
    }

    /// The elements before the first 64-byte boundary at or after `p` (at most `n`). The
    /// elementwise passes start their full vectors there: an unaligned 64-byte store
    /// straddles two cache lines, and a pass whose stores all do runs ~20 % slower when its
    /// output streams from the last-level cache (`Vec` buffers start 16 bytes past a line).
    #[inline(always)]
    fn head16(p: *const f32, n: usize) -> usize {
        // f32 pointers are 4-byte aligned: the offset is below 16 elements.
        p.align_offset(64).min(n)
    }

    /// The mask of the first `k` of 16 lanes.
    #[inline(always)]
    fn lanes(k: usize) -> __mmask16 {
        if k >= 16 {
            0xffff
        } else {
            ((1u32 << k) - 1) as __mmask16
        }
    }

    /// Loads the lanes of `mask` at `p` (zero elsewhere); a full mask is a plain load.
    ///
    /// # Safety
    /// The lanes of `mask` at `p` must be readable.
    #[inline(always)]
    unsafe fn load16(p: *const f32, mask: __mmask16) -> __m512 {
        // SAFETY: the caller's contract; masked-off lanes are not accessed (no fault).
        unsafe {
            if mask == 0xffff {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(mask, p)
            }
        }
    }

    /// Stores the lanes of `mask` of `v` at `p`. A full mask is a plain store, or with
    /// `stream` at a 64-byte boundary a non-temporal one (which [`Aligned::fence`] orders).
    ///
    /// # Safety
    /// The lanes of `mask` at `p` must be writable, exclusively.
    #[inline(always)]
    unsafe fn store16(p: *mut f32, v: __m512, mask: __mmask16, stream: bool) {
        // SAFETY: the caller's contract; masked-off lanes are not written; the streaming
        // store's alignment is checked.
        unsafe {
            if mask != 0xffff {
                _mm512_mask_storeu_ps(p, mask, v)
            } else if stream && (p as usize).is_multiple_of(64) {
                _mm512_stream_ps(p, v)
            } else {
                _mm512_storeu_ps(p, v)
            }
        }
    }

    /// The blocks of an elementwise pass over `n` contiguous values whose vector stores
    /// start at 64-byte boundaries: full body blocks, taken one at a time alongside the loop
    /// of another pass ([`Aligned::body`]), then the head before the first boundary and the
    /// values after the last block as masked vectors ([`Aligned::rest`]). With `stream`, the
    /// full vectors are non-temporal stores: they skip the read for ownership and leave the
    /// cache to the pass's inputs (see `simd::streams`).
    #[derive(Clone, Copy)]
    struct Aligned {
        /// Values before the first boundary.
        head: usize,
        /// Values of the pass.
        n: usize,
        /// The start of the next body block.
        next: usize,
        /// Whether full vectors are streamed.
        stream: bool,
    }

    impl Aligned {
        #[inline(always)]
        fn new(out: *const f32, n: usize, stream: bool) -> Self {
            let head = head16(out, n);
            Aligned {
                head,
                n,
                next: head,
                stream,
            }
        }

        /// The start of the next body block of `len` values (a multiple of 16), if it lies
        /// in the pass.
        #[inline(always)]
        fn body(&mut self, len: usize) -> Option<usize> {
            let i = self.next;
            (i + len <= self.n).then(|| {
                self.next = i + len;
                i
            })
        }

        /// The head and the values after the last body block, as (start, lanes) vectors.
        #[inline(always)]
        fn rest(&self) -> impl Iterator<Item = (usize, __mmask16)> {
            let head = (self.head > 0).then_some((0, lanes(self.head)));
            let n = self.n;
            let tail = (self.next..n).step_by(16).map(move |i| (i, lanes(n - i)));
            head.into_iter().chain(tail)
        }

        /// Orders the pass's streaming stores before anything that follows (a reader on
        /// another thread, after the task's join): required after non-temporal stores.
        #[inline(always)]
        fn fence(&self) {
            if self.stream {
                // SAFETY: SSE, part of the x86-64 baseline; `sfence` touches no memory.
                unsafe { _mm_sfence() };
            }
        }
    }

    /// y = ((x − m)·a + b)·γ + β on the lanes of `mask` from `i`: the portable kernel's
    /// operations, lane by lane.
    ///
    /// # Safety
    /// The lanes of `mask` from `i` must lie in `x`, `y` (and γ, β); `y` written by no one
    /// else.
    #[inline(always)]
    unsafe fn affine16(
        x: *const f32,
        y: *mut f32,
        (vm, va, vb): (__m512, __m512, __m512),
        p: Option<(*const f32, Option<*const f32>)>,
        i: usize,
        mask: __mmask16,
        stream: bool,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            let mut v = _mm512_sub_ps(load16(x.add(i), mask), vm);
            v = _mm512_add_ps(_mm512_mul_ps(v, va), vb);
            if let Some((g, bt)) = p {
                v = _mm512_mul_ps(v, load16(g.add(i), mask));
                if let Some(bt) = bt {
                    v = _mm512_add_ps(v, load16(bt.add(i), mask));
                }
            }
            store16(y.add(i), v, mask, stream);
        }
    }

    /// dx = dy·(c·γ) + ((x − m)·a + b) on the lanes of `mask` from `i`: the portable
    /// kernel's operations, lane by lane.
    ///
    /// # Safety
    /// The lanes of `mask` from `i` must lie in `x`, `dy`, `dx` (and γ); `dx` written by no
    /// one else.
    #[inline(always)]
    unsafe fn dx16(
        (x, dy, dx): (*const f32, *const f32, *mut f32),
        (vc, vm, va, vb): (__m512, __m512, __m512, __m512),
        g: Option<*const f32>,
        i: usize,
        mask: __mmask16,
        stream: bool,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            let v = load16(x.add(i), mask);
            let d = load16(dy.add(i), mask);
            let xh = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, vm), va), vb);
            let k = g.map_or(vc, |g| _mm512_mul_ps(vc, load16(g.add(i), mask)));
            store16(
                dx.add(i),
                _mm512_add_ps(_mm512_mul_ps(d, k), xh),
                mask,
                stream,
            );
        }
    }

    /// `sums_f32_avx512` over `next` with the affine pass over (`x`, `y`) in the same loop.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn affine_then_sums_f32_avx512(
        x: &[f32],
        y: &mut [f32],
        (m, a, b): (f32, f32, f32),
        p: Option<(&[f32], Option<&[f32]>)>,
        (next, ahead): (&[f32], bool),
        shift: f64,
        stream: bool,
    ) -> (f64, f64) {
        let n = next.len();
        assert!(x.len() == n && y.len() == n, "rows of one length");
        if let Some((g, bt)) = p {
            assert!(
                g.len() == n && bt.is_none_or(|bt| bt.len() == n),
                "parameters span the row"
            );
        }
        let k = (_mm512_set1_ps(m), _mm512_set1_ps(a), _mm512_set1_ps(b));
        let p = p.map(|(g, bt)| (g.as_ptr(), bt.map(|bt| bt.as_ptr())));
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        let mut acc = Sums16x2::new(shift);
        // The row after `next`: prefetched along the loop when the caller says it is the
        // next call's (`ahead`).
        let after = next.as_ptr().wrapping_add(n);
        let mut out = Aligned::new(yp, n, stream);
        let full = n - n % 32;
        let mut i = 0;
        while i < full {
            // SAFETY: i + 32 ≤ n and the body block j + 32 ≤ n, the length of `next`, `x`,
            // `y` (and γ, β: asserted above); `y` is borrowed mutably.
            unsafe {
                // The next row's loads first: a load behind a store to an address 4 KiB
                // apart (rows of whole pages) would wait on it (4K aliasing).
                acc.add32(next.as_ptr().add(i));
                prefetch2(after.wrapping_add(i), ahead);
                if let Some(j) = out.body(32) {
                    affine16(xp, yp, k, p, j, 0xffff, stream);
                    affine16(xp, yp, k, p, j + 16, 0xffff, stream);
                }
            }
            i += 32;
        }
        for (j, mask) in out.rest() {
            // SAFETY: the lanes of `mask` from `j` lie in the row (`Aligned::rest`).
            unsafe { affine16(xp, yp, k, p, j, mask, stream) };
        }
        out.fence();
        // The rest of the sums, exactly as `sums_f32_avx512` finishes.
        acc.finish(&next[full..], shift)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sums_f32_avx2(x: &[f32], shift: f64) -> (f64, f64) {
        let h = _mm256_set1_pd(shift);
        let (mut s0, mut s1, mut q0, mut q1) = (
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
        );
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            // SAFETY: `c` holds 8 f32 = 32 bytes; `loadu` has no alignment requirement.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            let lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), h);
            let hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)), h);
            s0 = _mm256_add_pd(s0, lo);
            s1 = _mm256_add_pd(s1, hi);
            q0 = _mm256_fmadd_pd(lo, lo, q0);
            q1 = _mm256_fmadd_pd(hi, hi, q1);
        }
        let (rs, rq) = row_sums_portable(chunks.remainder(), shift);
        (
            hsum256(_mm256_add_pd(s0, s1)) + rs,
            hsum256(_mm256_add_pd(q0, q1)) + rq,
        )
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn sums_f64_avx512(x: &[f64], shift: f64) -> (f64, f64) {
        let h = _mm512_set1_pd(shift);
        let (mut s0, mut s1, mut q0, mut q1) = (
            _mm512_setzero_pd(),
            _mm512_setzero_pd(),
            _mm512_setzero_pd(),
            _mm512_setzero_pd(),
        );
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 f64 = 128 bytes: two unaligned 64-byte loads in bounds.
            let (a, b) = unsafe {
                (
                    _mm512_loadu_pd(c.as_ptr()),
                    _mm512_loadu_pd(c.as_ptr().add(8)),
                )
            };
            let (a, b) = (_mm512_sub_pd(a, h), _mm512_sub_pd(b, h));
            s0 = _mm512_add_pd(s0, a);
            s1 = _mm512_add_pd(s1, b);
            q0 = _mm512_fmadd_pd(a, a, q0);
            q1 = _mm512_fmadd_pd(b, b, q1);
        }
        let (rs, rq) = row_sums_portable(chunks.remainder(), shift);
        (
            hsum512(_mm512_add_pd(s0, s1)) + rs,
            hsum512(_mm512_add_pd(q0, q1)) + rq,
        )
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sums_f64_avx2(x: &[f64], shift: f64) -> (f64, f64) {
        let h = _mm256_set1_pd(shift);
        let (mut s0, mut s1, mut q0, mut q1) = (
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
        );
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            // SAFETY: `c` holds 8 f64 = 64 bytes: two unaligned 32-byte loads in bounds.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_pd(c.as_ptr()),
                    _mm256_loadu_pd(c.as_ptr().add(4)),
                )
            };
            let (a, b) = (_mm256_sub_pd(a, h), _mm256_sub_pd(b, h));
            s0 = _mm256_add_pd(s0, a);
            s1 = _mm256_add_pd(s1, b);
            q0 = _mm256_fmadd_pd(a, a, q0);
            q1 = _mm256_fmadd_pd(b, b, q1);
        }
        let (rs, rq) = row_sums_portable(chunks.remainder(), shift);
        (
            hsum256(_mm256_add_pd(s0, s1)) + rs,
            hsum256(_mm256_add_pd(q0, q1)) + rq,
        )
    }

    /// Raw pointers to element `i` of a row's γ and, if staged, its two gradient
    /// accumulators.
    type ParamPtrs = Option<(*const f32, Option<(*mut f32, *mut f32)>)>;

    /// The accumulators of one row's f32 backward sums (AVX-512): Σw·dy and Σw·dy·x̂, each in
    /// two f64 chains (low and high lanes). 64 values at a time are first summed in f32 —
    /// four terms per lane, a few roundings of the element type — then widened once, which
    /// keeps the lane-crossing conversions off the critical port. The plain and the
    /// pipelined kernels, for any number of rows at a time, perform the same operations on
    /// a row in the same order (bit-identical sums).
    struct DSums {
        coef: (f32, f32, f32),
        vm: __m512,
        va: __m512,
        vb: __m512,
        s: [__m512d; 2],
        t: [__m512d; 2],
    }

    impl DSums {
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn new((m, a, b): (f32, f32, f32)) -> Self {
            let z = _mm512_setzero_pd();
            DSums {
                coef: (m, a, b),
                vm: _mm512_set1_ps(m),
                va: _mm512_set1_ps(a),
                vb: _mm512_set1_ps(b),
                s: [z; 2],
                t: [z; 2],
            }
        }

        /// (dy, x̂) of the 16 values at `x`, `dy`.
        ///
        /// # Safety
        /// `x` and `dy` must be valid for reading 16 values.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn raw16(&self, x: *const f32, dy: *const f32) -> (__m512, __m512) {
            // SAFETY: 16 values readable at `x` and `dy` (the caller's contract).
            let (vx, vd) = unsafe { (_mm512_loadu_ps(x), _mm512_loadu_ps(dy)) };
            let xh = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(vx, self.vm), self.va), self.vb);
            (vd, xh)
        }

        /// Widens f32 partial sums of w·dy (`ps`) and w·dy·x̂ (`pt`) into the chains.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq")]
        fn push(&mut self, ps: __m512, pt: __m512) {
            let lo = |v: __m512| _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            let hi = |v: __m512| _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(v));
            self.s[0] = _mm512_add_pd(self.s[0], lo(ps));
            self.s[1] = _mm512_add_pd(self.s[1], hi(ps));
            self.t[0] = _mm512_add_pd(self.t[0], lo(pt));
            self.t[1] = _mm512_add_pd(self.t[1], hi(pt));
        }

        /// Adds the last values of the row (`x.len() < 64`) and reduces: (Σw·dy, Σw·dy·x̂).
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq,fma")]
        fn finish(
            &mut self,
            x: &[f32],
            dy: &[f32],
            mut p: Option<RowParam<'_, f32>>,
        ) -> (f64, f64) {
            let n = x.len();
            let base = ptrs(&mut p);
            let mut i = 0;
            while i + 16 <= n {
                // SAFETY: i + 16 ≤ n, the length of the row, γ and its accumulators (checked
                // by the kernels that call `finish`); `p` is borrowed mutably here.
                unsafe {
                    let (vd, xh) = self.raw16(x.as_ptr().add(i), dy.as_ptr().add(i));
                    let vw = weigh(vd, xh, at(base, i));
                    self.push(vw, _mm512_mul_ps(vw, xh));
                }
                i += 16;
            }
            let p = tail(p, i);
            let (r1, r2) = row_dsums_portable(&x[i..], &dy[i..], self.coef, p);
            let s = _mm512_add_pd(self.s[0], self.s[1]);
            let t = _mm512_add_pd(self.t[0], self.t[1]);
            (hsum512(s) + r1, hsum512(t) + r2)
        }
    }

    /// One row's 16 values (dy, x̂) → w·dy, staging dy·x̂ and dy first if `p` is staged.
    ///
    /// # Safety
    /// γ (and the accumulators) at `p` must be valid for reading (and writing) 16 values,
    /// exclusively.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn weigh(vd: __m512, xh: __m512, p: ParamPtrs) -> __m512 {
        let Some((g, st)) = p else { return vd };
        // SAFETY: the caller's contract.
        unsafe {
            if let Some((sg, sb)) = st {
                _mm512_storeu_ps(sg, _mm512_fmadd_ps(vd, xh, _mm512_loadu_ps(sg)));
                _mm512_storeu_ps(sb, _mm512_add_ps(_mm512_loadu_ps(sb), vd));
            }
            _mm512_mul_ps(vd, _mm512_loadu_ps(g))
        }
    }

    /// Adds 64 columns of `R` rows sharing γ: each row sums its four blocks of 16 in f32
    /// before one push; a staged γ gets the terms of all `R` rows summed in registers, then
    /// one update of its accumulators per block of 16.
    ///
    /// # Safety
    /// Every `x[r]`, `dy[r]` must be valid for reading 64 values, γ (and the accumulators)
    /// at `p` for reading (and writing) 64 values, exclusively; the caller must be compiled
    /// with AVX-512 F/DQ and FMA (it is inlined into the `#[target_feature]` kernels: an
    /// out-of-line call per 64 values kept the accumulators in memory).
    #[inline(always)]
    unsafe fn add64<const R: usize>(
        acc: &mut [DSums; R],
        x: [*const f32; R],
        dy: [*const f32; R],
        p: ParamPtrs,
    ) {
        // SAFETY: the caller runs with AVX-512 F (the contract).
        let z = unsafe { _mm512_setzero_ps() };
        let (mut ps, mut pt) = ([z; R], [z; R]);
        for k in 0..4 {
            let off = 16 * k;
            // SAFETY: all offsets below 64 (the caller's contract).
            unsafe {
                let (g, st) = match at(p, off) {
                    Some((g, st)) => (Some(_mm512_loadu_ps(g)), st),
                    None => (None, None),
                };
                let mut staged = st.map(|(sg, sb)| (_mm512_loadu_ps(sg), _mm512_loadu_ps(sb)));
                for r in 0..R {
                    let (vd, xh) = acc[r].raw16(x[r].add(off), dy[r].add(off));
                    if let Some((sg, sb)) = &mut staged {
                        *sg = _mm512_fmadd_ps(vd, xh, *sg);
                        *sb = _mm512_add_ps(*sb, vd);
                    }
                    let vw = g.map_or(vd, |g| _mm512_mul_ps(vd, g));
                    if k == 0 {
                        (ps[r], pt[r]) = (vw, _mm512_mul_ps(vw, xh));
                    } else {
                        ps[r] = _mm512_add_ps(ps[r], vw);
                        pt[r] = _mm512_fmadd_ps(vw, xh, pt[r]);
                    }
                }
                if let (Some((a, b)), Some((sg, sb))) = (st, staged) {
                    _mm512_storeu_ps(a, sg);
                    _mm512_storeu_ps(b, sb);
                }
            }
        }
        for r in 0..R {
            // SAFETY: the caller runs with AVX-512 F and DQ (the contract).
            unsafe { acc[r].push(ps[r], pt[r]) };
        }
    }

    /// The base pointers of a row parameter.
    fn ptrs(p: &mut Option<RowParam<'_, f32>>) -> ParamPtrs {
        p.as_mut().map(|(g, st)| {
            let st = st
                .as_mut()
                .map(|(sg, sb)| (sg.as_mut_ptr(), sb.as_mut_ptr()));
            (g.as_ptr(), st)
        })
    }

    /// The pointers `i` elements further (`wrapping_add`: only dereferenced in bounds).
    #[inline(always)]
    fn at(p: ParamPtrs, i: usize) -> ParamPtrs {
        p.map(|(g, st)| {
            let st = st.map(|(sg, sb)| (sg.wrapping_add(i), sb.wrapping_add(i)));
            (g.wrapping_add(i), st)
        })
    }

    /// The values from `from` on of a row parameter.
    fn tail<'a>(p: Option<RowParam<'a, f32>>, from: usize) -> Option<RowParam<'a, f32>> {
        p.map(|(g, st)| {
            (
                &g[from..],
                st.map(|(sg, sb)| (&mut sg[from..], &mut sb[from..])),
            )
        })
    }

    /// Asserts that rows, upstream gradients and the parameter all have length `n`.
    fn check_rows<const R: usize>(
        n: usize,
        rows: &Rows<'_, f32, R>,
        p: &Option<RowParam<'_, f32>>,
    ) {
        for r in 0..R {
            assert!(
                rows.x[r].len() == n && rows.dy[r].len() == n,
                "rows of one length"
            );
        }
        if let Some((g, st)) = p {
            assert!(
                g.len() == n
                    && st
                        .as_ref()
                        .is_none_or(|(sg, sb)| sg.len() == n && sb.len() == n),
                "parameters span the row"
            );
        }
    }

    /// The accumulators of `R` rows.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn dsums_acc<const R: usize>(rows: &Rows<'_, f32, R>) -> [DSums; R] {
        let mut acc = [const { None }; R];
        for (a, &c) in acc.iter_mut().zip(&rows.c) {
            *a = Some(DSums::new(c));
        }
        acc.map(|a| a.expect("every row set"))
    }

    /// Each row's rest from `full` on, and the reduced sums. The accumulators are borrowed,
    /// not moved: a by-value move copied them through memory with other access widths than
    /// they were stored with, and the failed store forwarding waited for the store buffer
    /// (full of dx) to drain, once per row.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,fma")]
    fn dsums_finish<const R: usize>(
        acc: &mut [DSums; R],
        rows: &Rows<'_, f32, R>,
        full: usize,
        mut p: Option<RowParam<'_, f32>>,
    ) -> [(f64, f64); R] {
        let mut out = [(0.0, 0.0); R];
        for (r, a) in acc.iter_mut().enumerate() {
            let (x, dy) = (&rows.x[r][full..], &rows.dy[r][full..]);
            out[r] = a.finish(x, dy, tail(reborrow(&mut p), full));
        }
        out
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn dsums_f32_avx512<const R: usize>(
        rows: Rows<'_, f32, R>,
        mut p: Option<RowParam<'_, f32>>,
    ) -> [(f64, f64); R] {
        let n = rows.x[0].len();
        check_rows(n, &rows, &p);
        let mut acc = dsums_acc(&rows);
        let full = n - n % 64;
        let base = ptrs(&mut p);
        let mut i = 0;
        while i < full {
            // SAFETY: i + 64 ≤ n, the length of every row, γ and its accumulators (checked
            // above), which `p` borrows mutably for the loop.
            unsafe {
                let x = rows.x.map(|x| x.as_ptr().add(i));
                let dy = rows.dy.map(|d| d.as_ptr().add(i));
                add64(&mut acc, x, dy, at(base, i));
            }
            i += 64;
        }
        dsums_finish(&mut acc, &rows, full, p)
    }

    /// dx of the current rows (see `row_dx_portable`) with `dsums_f32_avx512` of the next
    /// rows in the same loop.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn dx_then_dsums_f32_avx512<const R: usize>(
        cur: DxRows<'_, f32, R>,
        next: Rows<'_, f32, R>,
        mut p: Option<RowParam<'_, f32>>,
    ) -> [(f64, f64); R] {
        let n = next.x[0].len();
        check_rows(n, &next, &p);
        for r in 0..R {
            assert!(
                cur.x[r].len() == n && cur.dy[r].len() == n && cur.dx[r].len() == n,
                "rows of one length"
            );
        }
        assert!(
            cur.g.is_none_or(|g| g.len() == n),
            "parameters span the row"
        );
        let DxRows {
            x,
            dy,
            dx,
            c,
            g,
            stream,
        } = cur;
        let coef = c.map(|(c, m, a, b)| {
            (
                _mm512_set1_ps(c),
                _mm512_set1_ps(m),
                _mm512_set1_ps(a),
                _mm512_set1_ps(b),
            )
        });
        let (xp, dyp) = (x.map(|x| x.as_ptr()), dy.map(|d| d.as_ptr()));
        let dxp = dx.map(|d| d.as_mut_ptr());
        let g = g.map(|g| g.as_ptr());
        let mut out = [Aligned::new(dxp[0], n, stream); R];
        for (o, &p) in out.iter_mut().zip(&dxp) {
            *o = Aligned::new(p, n, stream);
        }
        let mut acc = dsums_acc(&next);
        let full = n - n % 64;
        let base = ptrs(&mut p);
        // The R rows after `next` (`Rows::ahead`): R·64 values of each per step.
        let ahead = next.ahead;
        let ax = next.x[R - 1].as_ptr().wrapping_add(n);
        let ad = next.dy[R - 1].as_ptr().wrapping_add(n);
        let mut i = 0;
        while i < full {
            // SAFETY: i + 64 ≤ n and every body block j + 64 ≤ n, the length of every row, γ
            // and accumulator (checked above); the dx rows are borrowed mutably, `p` for the
            // loop.
            unsafe {
                // The next rows' loads first: a load behind a store to an address 4 KiB
                // apart (rows of whole pages) would wait on it (4K aliasing).
                let nx = next.x.map(|x| x.as_ptr().add(i));
                let ndy = next.dy.map(|d| d.as_ptr().add(i));
                add64(&mut acc, nx, ndy, at(base, i));
                for k in 0..2 * R {
                    prefetch2(ax.wrapping_add(R * i + 32 * k), ahead);
                    prefetch2(ad.wrapping_add(R * i + 32 * k), ahead);
                }
                for r in 0..R {
                    if let Some(j) = out[r].body(64) {
                        for j in [j, j + 16, j + 32, j + 48] {
                            dx16((xp[r], dyp[r], dxp[r]), coef[r], g, j, 0xffff, stream);
                        }
                    }
                }
            }
            i += 64;
        }
        for r in 0..R {
            for (j, mask) in out[r].rest() {
                // SAFETY: the lanes of `mask` from `j` lie in the row (`Aligned::rest`).
                unsafe { dx16((xp[r], dyp[r], dxp[r]), coef[r], g, j, mask, stream) };
            }
        }
        out[0].fence();
        dsums_finish(&mut acc, &next, full, p)
    }

    /// The elementwise passes over a run of `lines` contiguous lines of `w = 16·V` columns
    /// from `start`, coefficients in registers: y = (x − m)·a + b, and with `DX`,
    /// dx = dy·c + ((x − m)·a + b) — the portable kernels' operations, lane by lane.
    /// `k` = (m, a, b, c). The run is walked as one flat range whose full vectors start at
    /// 64-byte boundaries of the output ([`Aligned`]): the vector at flat offset `h + 16·t`
    /// (`h` the head) holds columns `(h + 16·t + lane) mod w`, so the coefficients are
    /// loaded once per run, rotated by `h`.
    ///
    /// # Safety
    /// As `RowReduce::col_affine`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn col_run<const V: usize, const DX: bool>(
        x: &[f32],
        dy: &[f32],
        out: *mut f32,
        out_len: usize,
        (start, lines): (usize, usize),
        (m, a, b, c): (&[f32], &[f32], &[f32], &[f32]),
        stream: bool,
    ) {
        let w = 16 * V;
        assert!(
            m.len() == w && a.len() == w && b.len() == w && c.len() == w,
            "one coefficient per column"
        );
        let n = lines * w;
        let end = start.checked_add(n);
        let fits = |len: usize| end.is_some_and(|e| e <= len);
        assert!(
            fits(x.len()) && fits(out_len) && (!DX || fits(dy.len())),
            "run out of bounds"
        );
        // SAFETY: `start + n` ≤ every length (asserted): the offsets below stay in bounds.
        let (xp, dyp, op) = unsafe {
            (
                x.as_ptr().add(start),
                dy.as_ptr().add(start),
                out.add(start),
            )
        };
        let mut walk = Aligned::new(op, n, stream);
        let h = walk.head;
        let zs = _mm512_setzero_ps();
        // The coefficients of the vectors from offset h + 16·v (rotated) and from 0 (plain).
        let mut rot = [[zs; 4]; 4];
        let mut plain = [zs; 4];
        for (j, arr) in [m, a, b, c].into_iter().enumerate() {
            let mut twice = [0.0f32; 2 * 64];
            for (i, t) in twice[..2 * w].iter_mut().enumerate() {
                *t = arr[i % w];
            }
            for (v, r) in rot.iter_mut().take(V).enumerate() {
                // SAFETY: h + 16v + 16 ≤ 15 + 16·V ≤ 2w values of `twice`.
                r[j] = unsafe { _mm512_loadu_ps(twice.as_ptr().add(h + 16 * v)) };
            }
            // SAFETY: 16 ≤ w values of `arr`.
            plain[j] = unsafe { _mm512_loadu_ps(arr.as_ptr()) };
        }
        let ptrs = (xp, dyp, op);
        while let Some(i) = walk.body(w) {
            for (v, &k) in rot.iter().take(V).enumerate() {
                // SAFETY: a body block of the run (`Aligned::body`).
                unsafe { col16::<DX>(ptrs, i + 16 * v, k, 0xffff, stream) };
            }
        }
        for (i, mask) in walk.rest() {
            let k = if i < h { plain } else { rot[(i - h) / 16 % V] };
            // SAFETY: the lanes of `mask` from `i` lie in the run (`Aligned::rest`).
            unsafe { col16::<DX>(ptrs, i, k, mask, stream) };
        }
        walk.fence();
    }

    /// One vector of `col_run`: the lanes of `mask` from `i`, coefficients (m, a, b, c).
    ///
    /// # Safety
    /// The lanes of `mask` from `i` must lie in the run at `x`, `dy` (read with `DX`) and
    /// `out` (written by no one else).
    #[inline(always)]
    unsafe fn col16<const DX: bool>(
        (x, dy, out): (*const f32, *const f32, *mut f32),
        i: usize,
        [vm, va, vb, vc]: [__m512; 4],
        mask: __mmask16,
        stream: bool,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            let v = load16(x.add(i), mask);
            let xh = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, vm), va), vb);
            let y = if DX {
                _mm512_add_ps(_mm512_mul_ps(load16(dy.add(i), mask), vc), xh)
            } else {
                xh
            };
            store16(out.add(i), y, mask, stream);
        }
    }

    /// `col_run` for the widths it has (16, 32, 48, 64); false otherwise.
    ///
    /// # Safety
    /// As `RowReduce::col_affine`.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn col_run_f32_avx512<const DX: bool>(
        x: &[f32],
        dy: &[f32],
        out: *mut f32,
        out_len: usize,
        run: (usize, usize),
        k: (&[f32], &[f32], &[f32], &[f32]),
        stream: bool,
    ) -> bool {
        match k.0.len() {
            // SAFETY: the caller's contract (as for every arm below).
            16 => unsafe { col_run::<1, DX>(x, dy, out, out_len, run, k, stream) },
            // SAFETY: as above.
            32 => unsafe { col_run::<2, DX>(x, dy, out, out_len, run, k, stream) },
            // SAFETY: as above.
            48 => unsafe { col_run::<3, DX>(x, dy, out, out_len, run, k, stream) },
            // SAFETY: as above.
            64 => unsafe { col_run::<4, DX>(x, dy, out, out_len, run, k, stream) },
            _ => return false,
        }
        true
    }

    /// Lines per flush of the f32 partial column sums of the backward pass.
    const COL_FLUSH: usize = 8;

    /// Checks that every line `o..o + w` lies in `len` values (one comparison per line).
    #[inline(always)]
    fn line_in(o: usize, w: usize, len: usize) {
        assert!(
            o.checked_add(w).is_some_and(|e| e <= len),
            "line out of bounds"
        );
    }

    /// `col_sums` of the `16·V` columns from `c0`, accumulators in registers for the whole
    /// run of lines, exact f64 differences as the portable kernel.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,fma")]
    fn col_sums_block<const V: usize, I: Iterator<Item = usize>>(
        x: &[f32],
        lines: I,
        c0: usize,
        shift: &[f64],
        sum: &mut [f64],
        sq: &mut [f64],
    ) {
        let w = 16 * V;
        let (shift, sum, sq) = (
            &shift[c0..c0 + w],
            &mut sum[c0..c0 + w],
            &mut sq[c0..c0 + w],
        );
        let z = _mm512_setzero_pd();
        let mut h = [z; 8];
        for (k, v) in h.iter_mut().take(2 * V).enumerate() {
            // SAFETY: 8 f64 at 8k < w = shift.len().
            *v = unsafe { _mm512_loadu_pd(shift.as_ptr().add(8 * k)) };
        }
        let (mut s, mut q) = ([z; 8], [z; 8]);
        for o in lines {
            line_in(o + c0, w, x.len());
            for v in 0..V {
                // SAFETY: o + c0 + w ≤ x.len() (checked above), 16v + 16 ≤ w.
                let xv = unsafe { _mm512_loadu_ps(x.as_ptr().add(o + c0 + 16 * v)) };
                let lo = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(xv)), h[2 * v]);
                let hi = _mm512_sub_pd(
                    _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(xv)),
                    h[2 * v + 1],
                );
                s[2 * v] = _mm512_add_pd(s[2 * v], lo);
                s[2 * v + 1] = _mm512_add_pd(s[2 * v + 1], hi);
                q[2 * v] = _mm512_fmadd_pd(lo, lo, q[2 * v]);
                q[2 * v + 1] = _mm512_fmadd_pd(hi, hi, q[2 * v + 1]);
            }
        }
        for k in 0..2 * V {
            // SAFETY: 8 f64 at 8k < w = sum.len() = sq.len().
            unsafe {
                let (ps, pq) = (sum.as_mut_ptr().add(8 * k), sq.as_mut_ptr().add(8 * k));
                _mm512_storeu_pd(ps, _mm512_add_pd(_mm512_loadu_pd(ps), s[k]));
                _mm512_storeu_pd(pq, _mm512_add_pd(_mm512_loadu_pd(pq), q[k]));
            }
        }
    }

    /// `col_sums`: blocks of 64 columns, then of 16, then the rest per line.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn col_sums_f32_avx512<I: Iterator<Item = usize> + Clone>(
        x: &[f32],
        lines: I,
        shift: &[f64],
        sum: &mut [f64],
        sq: &mut [f64],
    ) {
        let w = shift.len();
        assert!(
            sum.len() == w && sq.len() == w,
            "one accumulator per column"
        );
        let mut c0 = 0;
        while c0 + 64 <= w {
            col_sums_block::<4, I>(x, lines.clone(), c0, shift, sum, sq);
            c0 += 64;
        }
        while c0 + 16 <= w {
            col_sums_block::<1, I>(x, lines.clone(), c0, shift, sum, sq);
            c0 += 16;
        }
        if c0 < w {
            for o in lines {
                let (h, s, q) = (&shift[c0..], &mut sum[c0..], &mut sq[c0..]);
                col_sums_portable(&x[o + c0..o + w], h, s, q);
            }
        }
    }

    /// `col_dsums` of the `16·V` columns from `c0`: f32 partial sums over up to
    /// [`COL_FLUSH`] lines, then added into the f64 accumulators.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,fma")]
    fn col_dsums_block<const V: usize, I: Iterator<Item = usize>>(
        (x, dy): (&[f32], &[f32]),
        lines: I,
        c0: usize,
        (m, a, b): (&[f32], &[f32], &[f32]),
        sg: &mut [f64],
        sgx: &mut [f64],
    ) {
        let w = 16 * V;
        let (m, a, b) = (&m[c0..c0 + w], &a[c0..c0 + w], &b[c0..c0 + w]);
        let (sg, sgx) = (&mut sg[c0..c0 + w], &mut sgx[c0..c0 + w]);
        let zs = _mm512_setzero_ps();
        let mut coef = [(zs, zs, zs); 4];
        for (v, k) in coef.iter_mut().take(V).enumerate() {
            // SAFETY: 16 values at 16v < w = m.len() = a.len() = b.len().
            *k = unsafe {
                (
                    _mm512_loadu_ps(m.as_ptr().add(16 * v)),
                    _mm512_loadu_ps(a.as_ptr().add(16 * v)),
                    _mm512_loadu_ps(b.as_ptr().add(16 * v)),
                )
            };
        }
        let flush = |ps: &mut [__m512; 4],
                     pt: &mut [__m512; 4],
                     sg: &mut [f64],
                     sgx: &mut [f64]| {
            for v in 0..V {
                for (half, acc) in [(0, &mut *sg), (1, &mut *sgx)] {
                    let p = if half == 0 { ps[v] } else { pt[v] };
                    let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(p));
                    let hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(p));
                    // SAFETY: 16 f64 at 16v < w = acc.len().
                    unsafe {
                        let q = acc.as_mut_ptr().add(16 * v);
                        _mm512_storeu_pd(q, _mm512_add_pd(_mm512_loadu_pd(q), lo));
                        _mm512_storeu_pd(q.add(8), _mm512_add_pd(_mm512_loadu_pd(q.add(8)), hi));
                    }
                }
                ps[v] = _mm512_setzero_ps();
                pt[v] = _mm512_setzero_ps();
            }
        };
        let (mut ps, mut pt) = ([zs; 4], [zs; 4]);
        let mut n = 0;
        for o in lines {
            line_in(o + c0, w, x.len().min(dy.len()));
            for v in 0..V {
                let (vm, va, vb) = coef[v];
                // SAFETY: o + c0 + w ≤ the length of `x` and `dy` (checked above), 16v + 16 ≤ w.
                let (xv, d) = unsafe {
                    (
                        _mm512_loadu_ps(x.as_ptr().add(o + c0 + 16 * v)),
                        _mm512_loadu_ps(dy.as_ptr().add(o + c0 + 16 * v)),
                    )
                };
                let xh = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(xv, vm), va), vb);
                ps[v] = _mm512_add_ps(ps[v], d);
                pt[v] = _mm512_fmadd_ps(d, xh, pt[v]);
            }
            n += 1;
            if n == COL_FLUSH {
                flush(&mut ps, &mut pt, sg, sgx);
                n = 0;
            }
        }
        if n > 0 {
            flush(&mut ps, &mut pt, sg, sgx);
        }
    }

    /// `col_dsums`: blocks of 64 columns, then of 16, then the rest per line.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn col_dsums_f32_avx512<I: Iterator<Item = usize> + Clone>(
        x: &[f32],
        dy: &[f32],
        lines: I,
        c: (&[f32], &[f32], &[f32]),
        sg: &mut [f64],
        sgx: &mut [f64],
    ) {
        let w = c.0.len();
        assert!(
            c.1.len() == w && c.2.len() == w && sg.len() == w && sgx.len() == w,
            "one coefficient and accumulator per column"
        );
        let mut c0 = 0;
        while c0 + 64 <= w {
            col_dsums_block::<4, I>((x, dy), lines.clone(), c0, c, sg, sgx);
            c0 += 64;
        }
        while c0 + 16 <= w {
            col_dsums_block::<1, I>((x, dy), lines.clone(), c0, c, sg, sgx);
            c0 += 16;
        }
        if c0 < w {
            let (m, a, b) = (&c.0[c0..], &c.1[c0..], &c.2[c0..]);
            for o in lines {
                let (xs, ds) = (&x[o + c0..o + w], &dy[o + c0..o + w]);
                col_dsums_portable(xs, ds, (m, a, b), &mut sg[c0..], &mut sgx[c0..]);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dsums_f32_avx2(
        x: &[f32],
        dy: &[f32],
        (m, a, b): (f32, f32, f32),
        p: Option<RowParam<'_, f32>>,
    ) -> (f64, f64) {
        let w = stage_portable(x, dy, (m, a, b), p);
        let n = x
            .len()
            .min(dy.len())
            .min(w.map_or(usize::MAX, <[f32]>::len));
        let (vm, va, vb) = (_mm256_set1_ps(m), _mm256_set1_ps(a), _mm256_set1_ps(b));
        let (mut s0, mut s1, mut t0, mut t1) = (
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
        );
        let full = n - n % 8;
        let mut i = 0;
        while i < full {
            // SAFETY: i + 8 ≤ n ≤ the length of `x`, `dy` (and `w`): 32-byte unaligned loads.
            let (vx, mut vd) = unsafe {
                (
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    _mm256_loadu_ps(dy.as_ptr().add(i)),
                )
            };
            if let Some(w) = w {
                // SAFETY: as above.
                vd = _mm256_mul_ps(vd, unsafe { _mm256_loadu_ps(w.as_ptr().add(i)) });
            }
            let xh = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(vx, vm), va), vb);
            let dl = _mm256_cvtps_pd(_mm256_castps256_ps128(vd));
            let dh = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(vd));
            let xl = _mm256_cvtps_pd(_mm256_castps256_ps128(xh));
            let xhh = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(xh));
            s0 = _mm256_add_pd(s0, dl);
            s1 = _mm256_add_pd(s1, dh);
            t0 = _mm256_fmadd_pd(dl, xl, t0);
            t1 = _mm256_fmadd_pd(dh, xhh, t1);
            i += 8;
        }
        let (r1, r2) =
            row_dsums_weighted(&x[full..n], &dy[full..n], (m, a, b), w.map(|w| &w[full..n]));
        (
            hsum256(_mm256_add_pd(s0, s1)) + r1,
            hsum256(_mm256_add_pd(t0, t1)) + r2,
        )
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn dsums_f64_avx512(
        x: &[f64],
        dy: &[f64],
        (m, a, b): (f64, f64, f64),
        w: Option<&[f64]>,
    ) -> (f64, f64) {
        let n = x
            .len()
            .min(dy.len())
            .min(w.map_or(usize::MAX, <[f64]>::len));
        let (vm, va, vb) = (_mm512_set1_pd(m), _mm512_set1_pd(a), _mm512_set1_pd(b));
        let (mut s0, mut t0) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        let full = n - n % 8;
        let mut i = 0;
        while i < full {
            // SAFETY: i + 8 ≤ n ≤ the length of `x`, `dy` (and `w`): 64-byte unaligned loads.
            let (vx, mut vd) = unsafe {
                (
                    _mm512_loadu_pd(x.as_ptr().add(i)),
                    _mm512_loadu_pd(dy.as_ptr().add(i)),
                )
            };
            if let Some(w) = w {
                // SAFETY: as above.
                vd = _mm512_mul_pd(vd, unsafe { _mm512_loadu_pd(w.as_ptr().add(i)) });
            }
            let xh = _mm512_add_pd(_mm512_mul_pd(_mm512_sub_pd(vx, vm), va), vb);
            s0 = _mm512_add_pd(s0, vd);
            t0 = _mm512_fmadd_pd(vd, xh, t0);
            i += 8;
        }
        let (r1, r2) =
            row_dsums_weighted(&x[full..n], &dy[full..n], (m, a, b), w.map(|w| &w[full..n]));
        (hsum512(s0) + r1, hsum512(t0) + r2)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dsums_f64_avx2(
        x: &[f64],
        dy: &[f64],
        (m, a, b): (f64, f64, f64),
        w: Option<&[f64]>,
    ) -> (f64, f64) {
        let n = x
            .len()
            .min(dy.len())
            .min(w.map_or(usize::MAX, <[f64]>::len));
        let (vm, va, vb) = (_mm256_set1_pd(m), _mm256_set1_pd(a), _mm256_set1_pd(b));
        let (mut s0, mut t0) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let full = n - n % 4;
        let mut i = 0;
        while i < full {
            // SAFETY: i + 4 ≤ n ≤ the length of `x`, `dy` (and `w`): 32-byte unaligned loads.
            let (vx, mut vd) = unsafe {
                (
                    _mm256_loadu_pd(x.as_ptr().add(i)),
                    _mm256_loadu_pd(dy.as_ptr().add(i)),
                )
            };
            if let Some(w) = w {
                // SAFETY: as above.
                vd = _mm256_mul_pd(vd, unsafe { _mm256_loadu_pd(w.as_ptr().add(i)) });
            }
            let xh = _mm256_add_pd(_mm256_mul_pd(_mm256_sub_pd(vx, vm), va), vb);
            s0 = _mm256_add_pd(s0, vd);
            t0 = _mm256_fmadd_pd(vd, xh, t0);
            i += 4;
        }
        let (r1, r2) =
            row_dsums_weighted(&x[full..n], &dy[full..n], (m, a, b), w.map(|w| &w[full..n]));
        (hsum256(s0) + r1, hsum256(t0) + r2)
    }
}
