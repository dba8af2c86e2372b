//! The row and column kernels with explicit SIMD: the compiler does not vectorize an
//! f32 → f64 widening reduction, and these loops carry the statistics and backward passes.
//!
//! * [`RowReduce::row_sums`]: Σ(x − h) and Σ(x − h)² of a line, exact f64 differences.
//! * [`RowReduce::row_dsums`] / [`RowReduce::dsums_rows`]: Σw·dy and Σw·dy·x̂ with
//!   x̂ = (x − m)·a + b (computed in the element type, as the portable kernels do), with an
//!   optional γ along the line (w = γ) whose gradient terms dy·x̂ and dy are staged per
//!   element on the way ([`Staging`]); several rows sharing γ stage their terms summed.
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
mod arm;

#[cfg(target_arch = "x86_64")]
mod x86;
