//! Columns: whole rows of `k` values, one statistics group per column (BatchNorm1d and
//! channels-last batch norm in half precision), in the parent module's storage formats and
//! with its arithmetic.

use super::*;

#[cfg(target_arch = "x86_64")]
use super::avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

pub(super) struct ColSums<'a> {
    pub(super) x: &'a [u16],
    pub(super) h: &'a [f64],
    pub(super) sum: &'a mut [f64],
    pub(super) sq: &'a mut [f64],
}

/// The column kernels' working buffers (the per-column partial sums of one call), kept by
/// the caller between calls (one per thread) so that a call allocates nothing once they
/// have grown to its row length. Their contents between calls mean nothing: each call
/// clears what it reads.
#[derive(Default)]
pub(crate) struct ColWork {
    /// `f64` partial sums (and the AVX-512 bf16 sums' reordered shifts).
    d: Vec<f64>,
    /// `f32` partial sums.
    f: Vec<f32>,
}

impl ColWork {
    /// Grows the buffers to what a call over rows of `k` columns uses (any kernel, any
    /// level): that call then allocates nothing.
    pub(crate) fn reserve(&mut self, k: usize) {
        self.d.clear();
        self.d.reserve(3 * k + line_of::<f64>());
        self.f.clear();
        self.f.reserve(2 * k + line_of::<f32>());
    }

    /// `n` zeroed `f64` values.
    #[inline(always)]
    pub(super) fn d(&mut self, n: usize) -> &mut [f64] {
        zeroed(&mut self.d, n)
    }

    /// `n` zeroed `f32` values.
    #[inline(always)]
    fn f(&mut self, n: usize) -> &mut [f32] {
        zeroed(&mut self.f, n)
    }
}

/// Values of `V` in 64 bytes, the most [`zeroed`] skips to align its slice.
const fn line_of<V>() -> usize {
    64 / std::mem::size_of::<V>()
}

/// `n` zeros in `v` from its first 64-byte boundary (a whole cache line per vector of the
/// kernels; its allocation reused: `line_of::<V>()` values more than `n` at most).
#[inline(always)]
pub(crate) fn zeroed<V: Copy + Default>(v: &mut Vec<V>, n: usize) -> &mut [V] {
    let extra = line_of::<V>();
    v.clear();
    v.resize(n + extra, V::default());
    let at = v.as_ptr().align_offset(64).min(extra);
    &mut v[at..at + n]
}

/// [`ColSums`] with its partial sums in the caller's [`ColWork`].
struct ColSumsWith<'a> {
    k: ColSums<'a>,
    work: &'a mut ColWork,
}

/// Column blocks of at most this many vectors keep their accumulators in registers.
const MAX_V: usize = 4;

/// Rows per chunk of the column sums of rows longer than one block of columns: each chunk
/// walks its rows across all the columns, a block of columns at a time (sixteen row
/// streams at once, instead of one column block down every row of the task).
const COL_ROWS: usize = 16;

/// Values per chunk of rows of `k` columns: [`COL_ROWS`] rows, or all of them when one
/// block of `4·lanes` columns covers the row.
#[inline(always)]
fn col_chunk(k: usize, lanes: usize) -> usize {
    if k <= 4 * lanes {
        usize::MAX
    } else {
        COL_ROWS * k
    }
}

/// The `LANES·V` columns from `c0` of `ColSums` over the rows of one chunk, the block's
/// accumulators kept in `acc` between chunks (loaded into registers, stored back: the
/// f32 column kernel's operations and order).
#[inline(always)]
fn col_sums_block<S: Isa, F: Format, const V: usize>(
    s: S,
    x: &[u16],
    k: usize,
    c0: usize,
    h: &[f64],
    (sum, sq): (&mut [f64], &mut [f64]),
) {
    let (l, hl) = (S::LANES, S::LANES / 2);
    let z = s.splat_d(0.0);
    let mut hv = [z; 2 * MAX_V];
    let (mut sv, mut qv) = ([z; 2 * MAX_V], [z; 2 * MAX_V]);
    for q in 0..2 * V {
        let o = c0 + hl * q;
        hv[q] = s.load_d(&h[o..]);
        sv[q] = s.load_d(&sum[o..]);
        qv[q] = s.load_d(&sq[o..]);
    }
    for row in x.chunks_exact(k) {
        let line = &row[c0..c0 + l * V];
        for v in 0..V {
            let (lo, hi) = s.widen(F::ld(s, &line[l * v..]));
            let (lo, hi) = (s.sub_d(lo, hv[2 * v]), s.sub_d(hi, hv[2 * v + 1]));
            sv[2 * v] = s.add_d(sv[2 * v], lo);
            sv[2 * v + 1] = s.add_d(sv[2 * v + 1], hi);
            qv[2 * v] = s.mul_add_d(lo, lo, qv[2 * v]);
            qv[2 * v + 1] = s.mul_add_d(hi, hi, qv[2 * v + 1]);
        }
    }
    for q in 0..2 * V {
        let o = c0 + hl * q;
        s.store_d(&mut sum[o..], sv[q]);
        s.store_d(&mut sq[o..], qv[q]);
    }
}

/// (Tests only: the layers pass their [`ColWork`] through [`ColSumsWith`].)
#[cfg(test)]
impl Kernel for ColSums<'_> {
    type Out = ();
    /// [`ColSumsWith`] with buffers of its own.
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) {
        let work = &mut ColWork::default();
        ColSumsWith { k: self, work }.run::<S, F>(s)
    }
}

impl Kernel for ColSumsWith<'_> {
    type Out = ();
    /// Chunks of [`COL_ROWS`] rows; in each, blocks of `4·LANES` columns, then of `LANES`
    /// (their sums from zero over all rows, in `f64` accumulators kept between chunks, then
    /// added into `sum`, `sq`), then the rest per row in scalar `f64`: the f32 column
    /// kernel's operations in its order.
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) {
        let l = S::LANES;
        let ColSums { x, h, sum, sq } = self.k;
        let k = h.len();
        let (sum, sq) = (&mut sum[..k], &mut sq[..k]);
        let vk = k - k % l;
        let (sv, qv) = self.work.d(2 * vk).split_at_mut(vk);
        for rows in x.chunks(col_chunk(k, l)) {
            let mut c0 = 0;
            if S::LANES == 8 {
                // AVX2's 16 registers: blocks of two vectors (shifts, sums and squares in
                // 12 registers; four spilled the accumulators to the stack, a store and a
                // reload in each row's dependency chain). The same operations per column.
                while c0 + 2 * l <= k {
                    col_sums_block::<S, F, 2>(s, rows, k, c0, h, (&mut *sv, &mut *qv));
                    c0 += 2 * l;
                }
            }
            while c0 + 4 * l <= k {
                col_sums_block::<S, F, 4>(s, rows, k, c0, h, (&mut *sv, &mut *qv));
                c0 += 4 * l;
            }
            while c0 + l <= k {
                col_sums_block::<S, F, 1>(s, rows, k, c0, h, (&mut *sv, &mut *qv));
                c0 += l;
            }
            if c0 < k {
                for row in rows.chunks_exact(k) {
                    let xc = &row[c0..];
                    let v = s.widen(ldh::<S, F>(s, xc));
                    let v = wide_array(s, v);
                    for (i, &v) in v[..xc.len()].iter().enumerate() {
                        let d = v - h[c0 + i];
                        sum[c0 + i] += d;
                        sq[c0 + i] += d * d;
                    }
                }
            }
        }
        for (a, v) in sum.iter_mut().zip(&*sv) {
            *a += v;
        }
        for (a, v) in sq.iter_mut().zip(&*qv) {
            *a += v;
        }
    }
}

/// Per column `j` of whole rows of `h.len()` values: `sum[j] += x − h[j]`,
/// `sq[j] += (x − h[j])²`.
#[cfg(test)]
pub(crate) fn col_sums(fmt: Fmt, x: &[u16], h: &[f64], sum: &mut [f64], sq: &mut [f64]) {
    col_sums_with(fmt, x, h, (sum, sq), &mut ColWork::default())
}

/// [`col_sums`](fn@col_sums) with its partial sums in `work` (no allocation once `work`
/// has grown to `h.len()` columns): the same bits.
pub(crate) fn col_sums_with(
    fmt: Fmt,
    x: &[u16],
    h: &[f64],
    (sum, sq): (&mut [f64], &mut [f64]),
    work: &mut ColWork,
) {
    #[cfg(target_arch = "x86_64")]
    if fmt == Fmt::Bf16 && avx512::col_sums(x, h, (&mut *sum, &mut *sq), &mut *work) {
        return;
    }
    let k = ColSums { x, h, sum, sq };
    go(fmt, ColSumsWith { k, work })
}

/// Per-column coefficients `(m, a, b)`.
pub(crate) type Cols<'a> = (&'a [f32], &'a [f32], &'a [f32]);

pub(super) struct ColAffine<'a> {
    pub(super) x: &'a [u16],
    pub(super) y: &'a mut [u16],
    pub(super) c: Cols<'a>,
}

impl Kernel for ColAffine<'_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) {
        let l = S::LANES;
        let (m, a, b) = self.c;
        let k = m.len();
        let (a, b) = (&a[..k], &b[..k]);
        for (xr, yr) in self.x.chunks_exact(k).zip(self.y.chunks_exact_mut(k)) {
            for (j, (xc, yc)) in xr.chunks(l).zip(yr.chunks_mut(l)).enumerate() {
                let r = j * l..j * l + xc.len();
                let c = (ldf(s, &m[r.clone()]), ldf(s, &a[r.clone()]), ldf(s, &b[r]));
                sth::<S, F>(s, yc, xhat(s, ldh::<S, F>(s, xc), c));
            }
        }
    }
}

/// The coefficients of a [`col_affine`] or [`col_dx_streamed`] pass with non-temporal
/// stores, rotated once per pass: the streaming kernel stores blocks of 32 values from the
/// output's first 64-byte boundary, `head` values in, so block `j` of a row starts at
/// column `(head + 32·j) mod k` (`k` a multiple of 32): the arrays here are columns
/// `head..k, 0..head`. Every chunk of the output whose offset from the pass's first value
/// is a multiple of 64 bytes (whole rows, `k` a multiple of 32) has the same `head`. Only
/// the AVX512_BF16 kernels read it (elsewhere [`Streamed::set`] gives `false`). Its
/// buffers are reused from pass to pass ([`Streamed::set`]).
#[derive(Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Streamed {
    /// The values before the output's first 64-byte boundary (`< 32`).
    pub(super) head: usize,
    /// `m`, `a`, `b` rotated by `head`.
    pub(super) m: Vec<f32>,
    pub(super) a: Vec<f32>,
    pub(super) b: Vec<f32>,
    /// The dx pass's `c` rotated by `head` (empty for an affine pass).
    pub(super) c: Vec<f32>,
}

impl Streamed {
    /// The rotated coefficients of an affine pass for the output `y` (its first value's
    /// address), or `None` where no kernel streams: `k` not a multiple of 32, or not x86-64.
    #[cfg(test)]
    pub(crate) fn new(y: &[u16], c: Cols<'_>) -> Option<Streamed> {
        let mut s = Streamed::default();
        s.set(y, c, None).then_some(s)
    }

    /// Rotates the coefficients of a pass writing `y` (its first value's address) into
    /// these buffers: `(m, a, b)`, and the dx pass's `c` where given (else the pass is an
    /// affine one). `false` where no kernel streams (`k` not a multiple of 32, or not
    /// x86-64): the pass then runs without.
    pub(crate) fn set(&mut self, y: &[u16], (m, a, b): Cols<'_>, c: Option<&[f32]>) -> bool {
        let k = m.len();
        if cfg!(not(target_arch = "x86_64")) || k == 0 || !k.is_multiple_of(32) {
            return false;
        }
        let head = y.as_ptr().cast::<u8>().align_offset(64) / 2;
        let rot = |v: &[f32], into: &mut Vec<f32>| {
            into.clear();
            into.extend_from_slice(&v[head..k]);
            into.extend_from_slice(&v[..head]);
        };
        self.head = head;
        rot(m, &mut self.m);
        rot(a, &mut self.a);
        rot(b, &mut self.b);
        match c {
            Some(c) => rot(c, &mut self.c),
            None => self.c.clear(),
        }
        true
    }
}

/// Rows of `m.len()` columns: `y = (x − m[j])·a[j] + b[j]`; `stream`: the output may be
/// written with non-temporal stores (where the kernel has them: the AVX512_BF16 one),
/// with the pass's rotated coefficients ([`Streamed`]).
pub(crate) fn col_affine(
    fmt: Fmt,
    x: &[u16],
    y: &mut [u16],
    c: Cols<'_>,
    stream: Option<&Streamed>,
) {
    #[cfg(target_arch = "x86_64")]
    if fmt == Fmt::Bf16 {
        if let Some((_, true)) = bf16x::run(bf16x::Op::ColAffine(x, &mut *y, c, stream)) {
            return;
        }
        // The AVX2 level's kernel (no stream: it has none).
        if avx2::col_affine(x, &mut *y, c) {
            return;
        }
    }
    // Elsewhere no kernel streams: the flag is a hint.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = stream;
    go(fmt, ColAffine { x, y, c })
}

pub(super) struct ColDSums<'a> {
    pub(super) x: &'a [u16],
    pub(super) dy: &'a [u16],
    pub(super) c: Cols<'a>,
    pub(super) sg: &'a mut [f64],
    pub(super) sgx: &'a mut [f64],
}

/// Rows per flush of the f32 partial column sums of `ColDSums` (as the f32 kernel).
const COL_FLUSH: usize = 8;

/// Adds f32 partial sums into `f64` accumulators at `o` (`LANES` values) and clears them.
#[inline(always)]
fn flush_into<S: Isa>(s: S, p: &mut S::F32, acc: &mut [f64]) {
    let (lo, hi) = s.widen(*p);
    let h = S::LANES / 2;
    let (a, b) = (s.load_d(acc), s.load_d(&acc[h..]));
    s.store_d(acc, s.add_d(a, lo));
    s.store_d(&mut acc[h..], s.add_d(b, hi));
    *p = s.splat(0.0);
}

/// Rows per chunk of the column backward sums: each chunk walks its rows across all the
/// columns, a block of columns at a time, the f32 partial sums of the block loaded from
/// memory and stored back between chunks (few row streams at once: the hardware
/// prefetchers follow two arrays of a few rows, not of sixteen). The partial sums flush
/// every [`COL_FLUSH`] rows of the call whatever the chunk.
const DSUM_ROWS: usize = 4;

/// The `LANES·V` columns from `c0` of `ColDSums` over the rows of one chunk, whose first
/// row is row `r0` of the call: f32 partial sums (`ps_mem`, `pt_mem`: kept between
/// chunks), added into the f64 accumulators and cleared every [`COL_FLUSH`] rows of the
/// call and, when `last`, at the chunk's end (the f32 kernel's order).
#[inline(always)]
fn col_dsums_block<S: Isa, F: Format, const V: usize>(
    s: S,
    (x, dy): (&[u16], &[u16]),
    c0: usize,
    (m, a, b): Cols<'_>,
    (ps_mem, pt_mem): (&mut [f32], &mut [f32]),
    (sg, sgx): (&mut [f64], &mut [f64]),
    (r0, last): (usize, bool),
) {
    let l = S::LANES;
    let k = m.len();
    let zs = s.splat(0.0);
    let mut coef = [(zs, zs, zs); MAX_V];
    let (mut ps, mut pt) = ([zs; MAX_V], [zs; MAX_V]);
    for v in 0..V {
        let o = c0 + l * v;
        coef[v] = (s.load(&m[o..]), s.load(&a[o..]), s.load(&b[o..]));
        ps[v] = s.load(&ps_mem[o..]);
        pt[v] = s.load(&pt_mem[o..]);
    }
    let mut r = r0;
    for (xr, dr) in x.chunks_exact(k).zip(dy.chunks_exact(k)) {
        for v in 0..V {
            let o = c0 + l * v;
            let d = F::ld(s, &dr[o..]);
            let xh = xhat(s, F::ld(s, &xr[o..]), coef[v]);
            ps[v] = s.add(ps[v], d);
            pt[v] = s.mul_add(d, xh, pt[v]);
        }
        r += 1;
        if r % COL_FLUSH == 0 {
            for v in 0..V {
                flush_into(s, &mut ps[v], &mut sg[c0 + l * v..]);
                flush_into(s, &mut pt[v], &mut sgx[c0 + l * v..]);
            }
        }
    }
    for v in 0..V {
        let o = c0 + l * v;
        if last && r % COL_FLUSH != 0 {
            flush_into(s, &mut ps[v], &mut sg[o..]);
            flush_into(s, &mut pt[v], &mut sgx[o..]);
        }
        s.store(&mut ps_mem[o..], ps[v]);
        s.store(&mut pt_mem[o..], pt[v]);
    }
}

/// [`ColDSums`] with its `f32` partial sums in the caller's [`ColWork`].
struct ColDSumsWith<'a> {
    k: ColDSums<'a>,
    work: &'a mut ColWork,
}

/// (Tests only: the layers pass their [`ColWork`] through [`ColDSumsWith`].)
#[cfg(test)]
impl Kernel for ColDSums<'_> {
    type Out = ();
    /// [`ColDSumsWith`] with buffers of its own.
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) {
        let work = &mut ColWork::default();
        ColDSumsWith { k: self, work }.run::<S, F>(s)
    }
}

impl Kernel for ColDSumsWith<'_> {
    type Out = ();
    /// Chunks of [`DSUM_ROWS`] rows (all of them when one block covers a row), in each blocks of `4·LANES` columns, then of `LANES`
    /// (f32 partial sums over [`COL_FLUSH`] rows, then added into the f64 sums); then the
    /// rest per row in scalar `f64`: the f32 column kernel's operations in its order.
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) {
        let l = S::LANES;
        let ColDSums { x, dy, c, sg, sgx } = self.k;
        let (m, a, b) = c;
        let k = m.len();
        let (a, b) = (&a[..k], &b[..k]);
        let (sg, sgx) = (&mut sg[..k], &mut sgx[..k]);
        if k == 0 {
            return;
        }
        let vk = k - k % l;
        let (ps, pt) = self.work.f(2 * vk).split_at_mut(vk);
        let n = x.len() / k;
        // When one block covers a row, the rows are contiguous: one chunk (partial sums in
        // registers throughout).
        let rows = if k <= 4 * l { n.max(1) } else { DSUM_ROWS };
        let chunks = x.chunks(rows * k).zip(dy.chunks(rows * k));
        let mut r0 = 0;
        for xd in chunks {
            let at = (r0, r0 + xd.0.len() / k == n);
            let mut c0 = 0;
            if S::LANES == 8 {
                // AVX2's 16 registers: blocks of two vectors (coefficients, partial sums
                // in 10 registers; four need 20 and spilled them to the stack, a store
                // and a reload in each row's chains), as `ColSumsWith`. The same
                // operations per column, in their order.
                while c0 + 2 * l <= k {
                    let (p, acc) = ((&mut *ps, &mut *pt), (&mut *sg, &mut *sgx));
                    col_dsums_block::<S, F, 2>(s, xd, c0, (m, a, b), p, acc, at);
                    c0 += 2 * l;
                }
            }
            while c0 + 4 * l <= k {
                let (p, acc) = ((&mut *ps, &mut *pt), (&mut *sg, &mut *sgx));
                col_dsums_block::<S, F, 4>(s, xd, c0, (m, a, b), p, acc, at);
                c0 += 4 * l;
            }
            while c0 + l <= k {
                let (p, acc) = ((&mut *ps, &mut *pt), (&mut *sg, &mut *sgx));
                col_dsums_block::<S, F, 1>(s, xd, c0, (m, a, b), p, acc, at);
                c0 += l;
            }
            r0 += xd.0.len() / k;
        }
        let c0 = vk;
        if c0 < k {
            let r = c0..k;
            let c = (
                ldf(s, &m[r.clone()]),
                ldf(s, &a[r.clone()]),
                ldf(s, &b[r.clone()]),
            );
            for (xr, dr) in x.chunks_exact(k).zip(dy.chunks_exact(k)) {
                let xh = s.widen(xhat(s, ldh::<S, F>(s, &xr[r.clone()]), c));
                let d = s.widen(ldh::<S, F>(s, &dr[r.clone()]));
                let (xh, d) = (wide_array(s, xh), wide_array(s, d));
                for i in 0..k - c0 {
                    sg[c0 + i] += d[i];
                    sgx[c0 + i] += d[i] * xh[i];
                }
            }
        }
    }
}

/// Rows of `m.len()` columns: `sg[j] += dy`, `sgx[j] += dy·((x − m[j])·a[j] + b[j])`.
#[cfg(test)]
pub(crate) fn col_dsums(
    fmt: Fmt,
    (x, dy): (&[u16], &[u16]),
    c: Cols<'_>,
    sg: &mut [f64],
    sgx: &mut [f64],
) {
    col_dsums_with(fmt, (x, dy), c, (sg, sgx), &mut ColWork::default())
}

/// [`col_dsums`](fn@col_dsums) with its partial sums in `work` (no allocation once `work`
/// has grown to `m.len()` columns): the same bits.
pub(crate) fn col_dsums_with(
    fmt: Fmt,
    (x, dy): (&[u16], &[u16]),
    c: Cols<'_>,
    (sg, sgx): (&mut [f64], &mut [f64]),
    work: &mut ColWork,
) {
    let k = ColDSums { x, dy, c, sg, sgx };
    go(fmt, ColDSumsWith { k, work })
}

pub(super) struct ColDx<'a> {
    pub(super) x: &'a [u16],
    pub(super) dy: &'a [u16],
    pub(super) out: &'a mut [u16],
    pub(super) cc: &'a [f32],
    pub(super) c: Cols<'a>,
}

impl Kernel for ColDx<'_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) {
        let l = S::LANES;
        let (m, a, b) = self.c;
        let k = m.len();
        let (a, b, cc) = (&a[..k], &b[..k], &self.cc[..k]);
        let rows = self.x.chunks_exact(k).zip(self.dy.chunks_exact(k));
        for ((xr, dr), or) in rows.zip(self.out.chunks_exact_mut(k)) {
            let cols = xr.chunks(l).zip(dr.chunks(l)).zip(or.chunks_mut(l));
            for (j, ((xc, dc), oc)) in cols.enumerate() {
                let r = j * l..j * l + xc.len();
                let c = (
                    ldf(s, &m[r.clone()]),
                    ldf(s, &a[r.clone()]),
                    ldf(s, &b[r.clone()]),
                );
                let d = ldh::<S, F>(s, dc);
                let v = s.add(s.mul(d, ldf(s, &cc[r])), xhat(s, ldh::<S, F>(s, xc), c));
                sth::<S, F>(s, oc, v);
            }
        }
    }
}

/// Rows of `m.len()` columns: `dx = dy·c[j] + ((x − m[j])·a[j] + b[j])`.
#[cfg(test)]
pub(crate) fn col_dx(
    fmt: Fmt,
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    cc: &[f32],
    c: Cols<'_>,
) {
    col_dx_streamed(fmt, (x, dy, out), cc, c, None)
}

/// [`col_dx`](fn@col_dx); `stream`: the output may be written with non-temporal stores
/// (where the kernel has them: the AVX512_BF16 one, which fences them before it returns),
/// with the pass's rotated coefficients ([`Streamed::set`]). The same bits.
pub(crate) fn col_dx_streamed(
    fmt: Fmt,
    (x, dy, out): (&[u16], &[u16], &mut [u16]),
    cc: &[f32],
    c: Cols<'_>,
    stream: Option<&Streamed>,
) {
    #[cfg(target_arch = "x86_64")]
    if fmt == Fmt::Bf16 {
        let op = bf16x::Op::ColDx((x, dy, &mut *out), cc, c, stream);
        if let Some((_, true)) = bf16x::run(op) {
            return;
        }
        if avx2::col_dx((x, dy, &mut *out), cc, c) {
            return;
        }
    }
    // Elsewhere no kernel streams: the flag is a hint.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = stream;
    go(fmt, ColDx { x, dy, out, cc, c })
}

#[cfg(test)]
#[path = "tests/cols_work.rs"]
mod tests;
