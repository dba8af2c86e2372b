//! The statistics row sums (`f32` and `f64`) and the pipelined forward row (affine pass
//! of one row in the loop that sums the next), written once over the ISA token.

use super::row_sums_portable;
use crate::kernels::isa::Isa;

/// The eight accumulator chains of the `f32` shifted sums: four for Σd, four for Σd².
/// One type for the plain and the pipelined reduction, so both perform the same
/// operations in the same order (bit-identical sums). Without `D` (an uncentered row,
/// whose Σd `stats::mean_m2` never reads) the four Σd chains do not run and Σd is 0; Σd²
/// is the same either way.
pub(super) struct Sums<S: Isa, const D: bool = true> {
    h: S::F64,
    s: [S::F64; 4],
    q: [S::F64; 4],
}

impl<S: Isa, const D: bool> Sums<S, D> {
    #[inline(always)]
    pub(super) fn new(s: S, shift: f64) -> Self {
        let z = s.splat_d(0.0);
        Sums {
            h: s.splat_d(shift),
            s: [z; 4],
            q: [z; 4],
        }
    }

    /// Adds the first `2·LANES` values of `x`. Eight independent chains: the add latency,
    /// not memory, would otherwise bound the loop.
    #[inline(always)]
    pub(super) fn add(&mut self, s: S, x: &[f32]) {
        let l = S::LANES;
        let (a, b) = s.load_wide(&x[..l]);
        let (c, d) = s.load_wide(&x[l..2 * l]);
        for (k, v) in [a, b, c, d].into_iter().enumerate() {
            let v = s.sub_d(v, self.h);
            if D {
                self.s[k] = s.add_d(self.s[k], v);
            }
            self.q[k] = s.mul_add_d(v, v, self.q[k]);
        }
    }

    /// Adds the last `rest.len() < 2·LANES` values and reduces: (Σd, Σd²).
    #[inline(always)]
    pub(super) fn finish(mut self, s: S, mut rest: &[f32], shift: f64) -> (f64, f64) {
        let l = S::LANES;
        if rest.len() >= l {
            let (a, b) = s.widen(s.load(rest));
            for (k, v) in [a, b].into_iter().enumerate() {
                let v = s.sub_d(v, self.h);
                if D {
                    self.s[k] = s.add_d(self.s[k], v);
                }
                self.q[k] = s.mul_add_d(v, v, self.q[k]);
            }
            rest = &rest[l..];
        }
        let (rs, rq) = row_sums_portable(rest, shift);
        let [s0, s1, s2, s3] = self.s;
        let [q0, q1, q2, q3] = self.q;
        let sq = s.add_d(s.add_d(q0, q1), s.add_d(q2, q3));
        if !D {
            return (0.0, s.sum_d(sq) + rq);
        }
        let sum = s.add_d(s.add_d(s0, s1), s.add_d(s2, s3));
        (s.sum_d(sum) + rs, s.sum_d(sq) + rq)
    }
}

/// Σ(x − shift) and Σ(x − shift)² of an `f32` row.
#[inline(always)]
pub(super) fn row_sums_f32<S: Isa>(s: S, x: &[f32], shift: f64) -> (f64, f64) {
    let mut acc = Sums::<S>::new(s, shift);
    let mut chunks = x.chunks_exact(2 * S::LANES);
    for c in &mut chunks {
        acc.add(s, c);
    }
    acc.finish(s, chunks.remainder(), shift)
}

/// Σ(x − shift) and Σ(x − shift)² of an `f64` row: two chains of each.
#[inline(always)]
pub(super) fn row_sums_f64<S: Isa>(s: S, x: &[f64], shift: f64) -> (f64, f64) {
    let half = S::LANES / 2;
    let h = s.splat_d(shift);
    let z = s.splat_d(0.0);
    let (mut s0, mut s1, mut q0, mut q1) = (z, z, z, z);
    let mut chunks = x.chunks_exact(S::LANES);
    for c in &mut chunks {
        let a = s.sub_d(s.load_d(c), h);
        let b = s.sub_d(s.load_d(&c[half..]), h);
        s0 = s.add_d(s0, a);
        s1 = s.add_d(s1, b);
        q0 = s.mul_add_d(a, a, q0);
        q1 = s.mul_add_d(b, b, q1);
    }
    let (rs, rq) = row_sums_portable(chunks.remainder(), shift);
    (s.sum_d(s.add_d(s0, s1)) + rs, s.sum_d(s.add_d(q0, q1)) + rq)
}

/// A partial or full vector: `len` values from `j` (full when `len == LANES`).
#[inline(always)]
pub(super) fn ld<S: Isa>(s: S, v: &[f32], j: usize, len: usize) -> S::F32 {
    if len == S::LANES {
        s.load(&v[j..j + len])
    } else {
        s.load_part(&v[j..j + len])
    }
}

/// Stores a partial or full vector (streamed if asked, full and aligned).
#[inline(always)]
pub(super) fn st<S: Isa>(s: S, out: &mut [f32], j: usize, len: usize, v: S::F32, stream: bool) {
    let o = &mut out[j..j + len];
    if len < S::LANES {
        s.store_part(o, v);
    } else if stream {
        s.stream(o, v);
    } else {
        s.store(o, v);
    }
}

/// Stores a partial or full vector into `o` (`o.len() ≤ LANES`): a full one streamed
/// with `stream` (the level streams only at its alignment).
#[inline(always)]
pub(super) fn put<S: Isa>(s: S, o: &mut [f32], v: S::F32, stream: bool) {
    if o.len() < S::LANES {
        s.store_part(o, v);
    } else if stream {
        s.stream(o, v);
    } else {
        s.store(o, v);
    }
}

/// Whether a backward pass writes dx with non-temporal stores: where the pass streams
/// (`stream`) and the level has the pipelined kernels ([`Isa::PIPELINE`]), or, at AVX2,
/// rows without a γ along them (`gamma_along`: false). On AMD Zen 3, out of the L3, AVX2's
/// streamed dx measured slower for rows with a γ along the row (LayerNorm, RMSNorm) and
/// for columns (channels-last BatchNorm) (2026-12-07, 5afdf2e), and faster for rows without
/// one: InstanceNorm [8, 64, 128, 128] backward 0.80× the time with plain stores at 1 and 2
/// threads (3 alternating rounds, idle, 2026-12-07). The stores change, not the values.
#[inline(always)]
pub(super) fn dx_streams<S: Isa>(stream: bool, gamma_along: bool) -> bool {
    stream && (S::PIPELINE || !gamma_along)
}

/// The affine pass y = ((x − m)·a + b)·γ + β of one row: (m, a, b) in registers, γ along
/// the row when `G` and β when `B` (`B` only with `G`; an absent one is a stand-in of the
/// row's length that is never read). The parameter kinds are type-level, so a loop over the
/// row tests none of them per vector.
#[derive(Clone, Copy)]
struct Affine<'a, S: Isa, const G: bool, const B: bool> {
    k: (S::F32, S::F32, S::F32),
    g: &'a [f32],
    bt: &'a [f32],
}

impl<S: Isa, const G: bool, const B: bool> Affine<'_, S, G, B> {
    /// y of the `len ≤ LANES` values from `j` of the row (`x`; γ and β at the same
    /// offsets): the portable kernel's operations, lane by lane (no fused multiply-add, so
    /// results match it bit for bit).
    #[inline(always)]
    fn at(&self, s: S, x: &[f32], (j, len): (usize, usize)) -> S::F32 {
        let (vm, va, vb) = self.k;
        let mut v = s.add(s.mul(s.sub(ld(s, x, j, len), vm), va), vb);
        if G {
            v = s.mul(v, ld(s, self.g, j, len));
        }
        if B {
            v = s.add(v, ld(s, self.bt, j, len));
        }
        v
    }

    /// The values `0..y.len()` (a multiple of `LANES`) of the row into `y`, as full
    /// vectors.
    #[inline(always)]
    fn block(&self, s: S, x: &[f32], y: &mut [f32], stream: bool) {
        for (t, o) in y.chunks_exact_mut(S::LANES).enumerate() {
            let v = self.at(s, x, (t * S::LANES, S::LANES));
            put(s, o, v, stream);
        }
    }

    /// The values `from..from + y.len()` of the row into `y`, as vectors from `from` (the
    /// last one partial).
    #[inline(always)]
    fn run(&self, s: S, x: &[f32], from: usize, y: &mut [f32], stream: bool) {
        for (t, o) in y.chunks_mut(S::LANES).enumerate() {
            let j = from + t * S::LANES;
            let v = self.at(s, x, (j, o.len()));
            put(s, o, v, stream);
        }
    }
}

/// The inputs of the pipelined forward row ([`affine_then_sums_f32`]): the affine pass of
/// the current row and the row whose shifted sums the same loop computes. `ST`: the output
/// is streamed, and then the two passes run in turn ([`blocked`]); `D`: the row's Σd is
/// wanted (a centered row; else only Σd², see [`Sums`]). Type parameters, not fields: the kernel reads its inputs from the
/// caller's stack, and a flag stored next to `c` was loaded together with it, a load
/// spanning two stores that waited for the store buffer (the previous row's output) to
/// drain, once per row.
pub(super) struct AffineThenSums<'a, const ST: bool, const D: bool> {
    /// The current row's input.
    pub x: &'a [f32],
    /// The current row's output.
    pub y: &'a mut [f32],
    /// (m, a, b) of the current row.
    pub c: (f32, f32, f32),
    /// γ and β along the row, if any.
    pub p: Option<(&'a [f32], Option<&'a [f32]>)>,
    /// The row to sum, and whether the values after it in memory are the next call's row.
    pub next: (&'a [f32], bool),
    /// The shift of the sums.
    pub shift: f64,
}

/// `row_sums_f32` over `next` with the affine pass over (`x`, `y`) in the same loop
/// (exactly the arithmetic of the separate passes).
#[inline(always)]
pub(super) fn affine_then_sums_f32<S: Isa, const ST: bool, const D: bool>(
    s: S,
    a: AffineThenSums<'_, ST, D>,
) -> (f64, f64) {
    let n = a.next.0.len();
    assert!(a.x.len() == n && a.y.len() == n, "rows of one length");
    let (m, va, b) = a.c;
    let k = (s.splat(m), s.splat(va), s.splat(b));
    let x = a.x;
    // One loop per parameter kind: nothing in it tests them per vector.
    match a.p {
        None => pipelined::<S, false, false, ST, D>(s, a, Affine { k, g: x, bt: x }),
        Some((g, None)) => pipelined::<S, true, false, ST, D>(s, a, Affine { k, g, bt: x }),
        Some((g, Some(bt))) => pipelined::<S, true, true, ST, D>(s, a, Affine { k, g, bt }),
    }
}

/// [`affine_then_sums_f32`] with the parameter kinds (`G`, `B`), streaming (`ST`) and Σd
/// (`D`) fixed; a streamed output goes to [`blocked`].
/// The output's full vectors start at its [`Isa::ALIGN`] boundaries: the body blocks of
/// `2·LANES` values from the head pair with the first blocks of the sums, every slice taken
/// once per block by zipped chunk iterators (no bounds test per vector); the head and the
/// values after the last block are partial or full vectors after the loop.
#[inline(always)]
fn pipelined<S: Isa, const G: bool, const B: bool, const ST: bool, const D: bool>(
    s: S,
    a: AffineThenSums<'_, ST, D>,
    f: Affine<'_, S, G, B>,
) -> (f64, f64) {
    let AffineThenSums {
        x,
        y,
        next: (next, ahead),
        shift,
        ..
    } = a;
    let n = next.len();
    assert!(f.g.len() == n && f.bt.len() == n, "parameters span the row");
    if ST {
        return blocked::<S, G, B, D>(s, (x, y), f, (next, ahead), shift);
    }
    let w = 2 * S::LANES;
    let full = n - n % w;
    let head = y.as_ptr().align_offset(S::ALIGN).min(n);
    let body = (n - head) / w * w;
    let mut acc = Sums::<S, D>::new(s, shift);
    // The row after `next`: prefetched along the loop when the caller says it is the
    // next call's (`ahead`), two cache lines (32 values) per 32 values summed.
    let after = next.as_ptr().wrapping_add(n);
    let (y_head, rest) = y.split_at_mut(head);
    let (y_body, y_tail) = rest.split_at_mut(body);
    let span = head..head + body;
    let blocks = next[..body]
        .chunks_exact(w)
        .zip(y_body.chunks_exact_mut(w))
        .zip(x[span.clone()].chunks_exact(w))
        .zip(
            f.g[span.clone()]
                .chunks_exact(w)
                .zip(f.bt[span].chunks_exact(w)),
        );
    let mut i = 0;
    for (((nb, yb), xb), (gb, bb)) in blocks {
        // The next row's loads first: a load behind a store to an address 4 KiB apart
        // (rows of whole pages) would wait on it (4K aliasing).
        acc.add(s, nb);
        if ahead && (w >= 32 || i % 32 == 0) {
            s.prefetch(after.wrapping_add(i));
        }
        let block = Affine::<S, G, B> { g: gb, bt: bb, ..f };
        block.block(s, xb, yb, ST);
        i += w;
    }
    for nb in next[body..full].chunks_exact(w) {
        acc.add(s, nb);
        if ahead && (w >= 32 || i % 32 == 0) {
            s.prefetch(after.wrapping_add(i));
        }
        i += w;
    }
    f.run(s, x, 0, y_head, ST);
    f.run(s, x, head + body, y_tail, ST);
    if ST {
        s.fence();
    }
    // The rest of the sums, exactly as `row_sums_f32` finishes.
    acc.finish(s, &next[full..], shift)
}

/// [`affine_then_sums_f32`] with streaming stores: the affine pass of the row, its full
/// vectors at the output's [`Isa::ALIGN`] boundaries non-temporal (the head and the last
/// partial vector stored plainly, each to its own cache lines), then the sums of `next`
/// in a loop of their own, prefetching the row after it (`ahead`) as [`pipelined`] does.
/// Out of cache the two passes in turn run faster than one loop of both (AMD Zen 4,
/// LayerNorm [8192, 1024] forward: see `cpu::TABLE`): the stores of the interleaved loop
/// fill the store queue and hold back the next row's loads behind them.
#[inline(always)]
fn blocked<S: Isa, const G: bool, const B: bool, const D: bool>(
    s: S,
    (x, y): (&[f32], &mut [f32]),
    f: Affine<'_, S, G, B>,
    (next, ahead): (&[f32], bool),
    shift: f64,
) -> (f64, f64) {
    let n = next.len();
    let l = S::LANES;
    let head = y.as_ptr().align_offset(S::ALIGN).min(n);
    let body = (n - head) / l * l;
    let (y_head, rest) = y.split_at_mut(head);
    let (y_body, y_tail) = rest.split_at_mut(body);
    f.run(s, x, 0, y_head, false);
    let span = head..head + body;
    let vectors = y_body
        .chunks_exact_mut(l)
        .zip(x[span.clone()].chunks_exact(l))
        .zip(
            f.g[span.clone()]
                .chunks_exact(l)
                .zip(f.bt[span].chunks_exact(l)),
        );
    for ((yv, xv), (gv, bv)) in vectors {
        let v = Affine::<S, G, B> { g: gv, bt: bv, ..f }.at(s, xv, (0, l));
        s.stream(yv, v);
    }
    f.run(s, x, head + body, y_tail, false);
    s.fence();
    let w = 2 * l;
    let full = n - n % w;
    let mut acc = Sums::<S, D>::new(s, shift);
    let after = next.as_ptr().wrapping_add(n);
    let mut i = 0;
    for nb in next[..full].chunks_exact(w) {
        acc.add(s, nb);
        if ahead && (w >= 32 || i % 32 == 0) {
            s.prefetch(after.wrapping_add(i));
        }
        i += w;
    }
    acc.finish(s, &next[full..], shift)
}

/// `row_sums_f32` of each contiguous row of `len` values of `x` (shift: the row's first
/// value when `center`), one slot of `out` per row: the tile's sums in one call.
#[inline(always)]
pub(super) fn rows_sums_f32<S: Isa>(
    s: S,
    x: &[f32],
    len: usize,
    center: bool,
    (shift, sum, sq): super::TileSums<'_>,
) {
    if len == 0 {
        return;
    }
    let rows = x.chunks_exact(len).zip(shift.iter_mut());
    for ((row, h), (sr, qr)) in rows.zip(sum.iter_mut().zip(sq.iter_mut())) {
        *h = if center { f64::from(row[0]) } else { 0.0 };
        (*sr, *qr) = row_sums_f32(s, row, *h);
    }
}

/// The affine pass of a tile of contiguous rows of `len` values, row r with its own
/// (m, a, b) and the shared γ, β along the row: whole vectors from the row's start, then
/// one partial vector (each value as [`Affine::at`], so the results are those of the row
/// kernels).
#[inline(always)]
pub(super) fn rows_affine_f32<S: Isa>(
    s: S,
    (x, y): (&[f32], &mut [f32]),
    len: usize,
    (m, a, b): (&[f32], &[f32], &[f32]),
    p: Option<(&[f32], Option<&[f32]>)>,
    stream: bool,
) {
    if len == 0 {
        return;
    }
    let rows = y.chunks_exact_mut(len).zip(x.chunks_exact(len));
    let coef = m.iter().zip(a).zip(b);
    for ((yr, xr), ((&m, &a), &b)) in rows.zip(coef) {
        let k = (s.splat(m), s.splat(a), s.splat(b));
        match p {
            None => Affine::<S, false, false> { k, g: xr, bt: xr }.run(s, xr, 0, yr, stream),
            Some((g, None)) => {
                assert!(g.len() == len, "parameters span the row");
                Affine::<S, true, false> { k, g, bt: xr }.run(s, xr, 0, yr, stream)
            }
            Some((g, Some(bt))) => {
                assert!(g.len() == len && bt.len() == len, "parameters span the row");
                Affine::<S, true, true> { k, g, bt }.run(s, xr, 0, yr, stream)
            }
        }
    }
    if stream {
        s.fence();
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::elem::RowReduce;

    /// The pipelined f32 row writes the bits of `((x − m)·a + b)·γ + β` computed one f32
    /// operation at a time, and of the separate affine pass (`rows_affine`), with and
    /// without γ/β and streaming, at the current level, on lengths around the blocks and a
    /// misaligned output; its sums are those of the separate row sums.
    #[test]
    fn pipelined_row_writes_the_plain_affine_bits() {
        let v = |seed: u32, i: usize| {
            let t = (i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8;
            t as f32 / (1u32 << 24) as f32 * 6.0 - 3.0
        };
        for n in [1usize, 15, 16, 17, 33, 100, 784, 1031] {
            let x: Vec<f32> = (0..n).map(|i| v(11, i) * 1e3).collect();
            let next: Vec<f32> = (0..n).map(|i| v(12, i)).collect();
            let g: Vec<f32> = (0..n).map(|i| v(13, i)).collect();
            let bt: Vec<f32> = (0..n).map(|i| v(14, i) * 1e-3).collect();
            // m near the values (cancellation in x − m), a and b with full mantissas.
            let c = (x[n / 2] * 0.999, 0.1f32 / 3.0, -1.0f32 / 7.0);
            for p in [None, Some((&g[..], None)), Some((&g[..], Some(&bt[..])))] {
                let want: Vec<f32> = (0..n)
                    .map(|i| {
                        let mut y = (x[i] - c.0) * c.1 + c.2;
                        if let Some((g, bt)) = p {
                            y *= g[i];
                            if let Some(bt) = bt {
                                y += bt[i];
                            }
                        }
                        y
                    })
                    .collect();
                let mut sep = vec![0f32; n];
                let coef = (&[c.0][..], &[c.1][..], &[c.2][..]);
                <f32 as RowReduce>::rows_affine((&x, &mut sep), n, coef, p, false);
                assert_eq!(bits(&sep), bits(&want), "n={n}");
                for stream in [false, true] {
                    let mut y = vec![0f32; n + 1];
                    let next_row = (&next[..], false);
                    let shift = (f64::from(next[0]), true);
                    let got = <f32 as RowReduce>::affine_then_sums(
                        &x,
                        &mut y[1..],
                        c,
                        p,
                        next_row,
                        shift,
                        stream,
                    );
                    let Some((sum, sq)) = got else {
                        continue;
                    };
                    assert_eq!(bits(&y[1..]), bits(&want), "n={n} stream={stream}");
                    let (ws, wq) = <f32 as RowReduce>::row_sums(&next, shift.0);
                    assert_eq!((sum.to_bits(), sq.to_bits()), (ws.to_bits(), wq.to_bits()));
                }
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The pipelined f32 row of an uncentered next row (`center` false: no Σd chains) gives
    /// the output and Σd² bits of the centered kernel and of the separate row sums, and Σd
    /// as 0, with and without γ/β and streaming, at the current level, on lengths around
    /// the blocks and a misaligned output.
    #[test]
    fn uncentered_pipelined_row_keeps_the_output_and_squares() {
        for n in [1usize, 7, 16, 31, 32, 33, 100, 1024, 1031] {
            let v = |seed: u32, i: usize| {
                let t = (i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8;
                t as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            };
            let x: Vec<f32> = (0..n).map(|i| v(1, i)).collect();
            let next: Vec<f32> = (0..n + 1).map(|i| v(2, i)).collect();
            let next = &next[1..];
            let g: Vec<f32> = (0..n).map(|i| 0.5 + v(3, i).abs()).collect();
            let bt: Vec<f32> = (0..n).map(|i| v(4, i)).collect();
            let c = (0.0f32, 1.25f32, 0.0f32);
            let (_, want_sq) = <f32 as RowReduce>::row_sums(next, 0.0);
            let sq: f64 = next.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            assert!((want_sq - sq).abs() <= 1e-12 * sq, "n={n}");
            for p in [None, Some((&g[..], None)), Some((&g[..], Some(&bt[..])))] {
                for stream in [false, true] {
                    let run = |center: bool| {
                        let mut y = vec![0f32; n + 1];
                        let r = <f32 as RowReduce>::affine_then_sums(
                            &x,
                            &mut y[1..],
                            c,
                            p,
                            (next, false),
                            (0.0, center),
                            stream,
                        );
                        (r, y)
                    };
                    let ((full, y_full), (un, y_un)) = (run(true), run(false));
                    assert_eq!(y_un, y_full, "n={n}");
                    let (Some(full), Some(un)) = (full, un) else {
                        assert!(full.is_none() && un.is_none(), "n={n}");
                        continue;
                    };
                    assert_eq!(un.0.to_bits(), 0, "n={n}");
                    assert_eq!(un.1.to_bits(), full.1.to_bits(), "n={n}");
                    assert_eq!(un.1.to_bits(), want_sq.to_bits(), "n={n}");
                }
            }
        }
    }
}
