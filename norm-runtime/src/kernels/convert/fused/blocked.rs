//! The backward sums of several half rows that share γ and the parameter-gradient
//! accumulators (layer norm's and RMS norm's rows): each row's sums are the row kernel's
//! ([`DSums`](super::DSums)), the accumulators loaded and stored once per vector for all
//! the rows.

use super::{dsums_rest, go, push, splat3, xhat, Fmt, Format, Kernel};
use crate::kernels::isa::Isa;

/// `R` backward rows of one length that share γ and the parameter-gradient accumulators.
pub(super) struct DSumsRows<'a, const R: usize> {
    pub(super) x: [&'a [u16]; R],
    pub(super) dy: [&'a [u16]; R],
    pub(super) c: [(f32, f32, f32); R],
    pub(super) g: &'a [f32],
    pub(super) acc: (&'a mut [f64], &'a mut [f64]),
    /// The `x` and `dy` values the next call reads (prefetched into L2 along the loop).
    pub(super) next: Option<(&'a [u16], &'a [u16])>,
}

impl<const R: usize> Kernel for DSumsRows<'_, R> {
    type Out = [(f64, f64); R];
    /// Each row's sums are [`DSums`](super::DSums)'s (the same operations on its own chains); the
    /// parameter-gradient terms of the `R` rows are added in row order into one load of
    /// the accumulators per vector, stored once (the same sums as `R` passes of `DSums`).
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) -> [(f64, f64); R] {
        let (l, h) = (S::LANES, S::LANES / 2);
        let n = self.x[0].len();
        for r in 0..R {
            assert!(
                self.x[r].len() == n && self.dy[r].len() == n,
                "rows of one length"
            );
        }
        let k = self.c.map(|c| splat3(s, c));
        let z = s.splat_d(0.0);
        let (mut s1, mut s2) = ([[z; 2]; R], [[z; 2]; R]);
        let g = &self.g[..n];
        let (dg, db) = self.acc;
        let (dg, db) = (&mut dg[..n], &mut db[..n]);
        let full = n - n % (4 * l);
        let mut i = 0;
        while i < full {
            if let Some((nx, nd)) = self.next {
                // This step's share of the next call's `R·n` values: `8·LANES·R` bytes
                // of each, from byte `2·R·i`.
                for q in 0..(l * R).div_ceil(16) {
                    let at = 2 * R * i + 128 * q;
                    s.prefetch(nx.as_ptr().cast::<u8>().wrapping_add(at).cast());
                    s.prefetch(nd.as_ptr().cast::<u8>().wrapping_add(at).cast());
                }
            }
            let zf = s.splat(0.0);
            let (mut ps, mut pt) = ([zf; R], [zf; R]);
            for j in 0..4 {
                let o = i + j * l;
                let (g0, g1) = dg[o..o + l].split_at_mut(h);
                let (b0, b1) = db[o..o + l].split_at_mut(h);
                let (mut ag, mut ab) = ((s.load_d(g0), s.load_d(g1)), (s.load_d(b0), s.load_d(b1)));
                let gv = s.load(&g[o..o + l]);
                for r in 0..R {
                    let xh = xhat(s, F::ld(s, &self.x[r][o..o + l]), k[r]);
                    let d = F::ld(s, &self.dy[r][o..o + l]);
                    let (xw, dw) = (s.widen(xh), s.widen(d));
                    ag = (
                        s.add_d(ag.0, s.mul_d(dw.0, xw.0)),
                        s.add_d(ag.1, s.mul_d(dw.1, xw.1)),
                    );
                    ab = (s.add_d(ab.0, dw.0), s.add_d(ab.1, dw.1));
                    let w = s.mul(d, gv);
                    if j == 0 {
                        (ps[r], pt[r]) = (w, s.mul(w, xh));
                    } else {
                        (ps[r], pt[r]) = (s.add(ps[r], w), s.mul_add(w, xh, pt[r]));
                    }
                }
                s.store_d(g0, ag.0);
                s.store_d(g1, ag.1);
                s.store_d(b0, ab.0);
                s.store_d(b1, ab.1);
            }
            for r in 0..R {
                push(s, (&mut s1[r], &mut s2[r]), ps[r], pt[r]);
            }
            i += 4 * l;
        }
        let mut acc = Some((dg, db));
        std::array::from_fn(|r| {
            let xd = (self.x[r], self.dy[r]);
            dsums_rest::<S, F>(s, xd, k[r], (Some(g), &mut acc), i, (s1[r], s2[r]))
        })
    }
}

/// [`dsums`] of `R` rows of one length with γ along them, each row's
/// `(Σγ·dy, Σγ·dy·x̂)`, and `dg[i] += dy·x̂`, `db[i] += dy` for the rows in order: the
/// same sums and bits as `R` calls, with one load and store of the accumulators per
/// vector instead of `R`. `next`: the `x` and `dy` values the next call reads, if known
/// (prefetched along the loop).
pub(crate) fn dsums_rows<'a, const R: usize>(
    fmt: Fmt,
    (x, dy): ([&[u16]; R], [&[u16]; R]),
    c: [(f32, f32, f32); R],
    g: &[f32],
    acc: (&mut [f64], &mut [f64]),
    next: Option<(&'a [u16], &'a [u16])>,
) -> [(f64, f64); R] {
    go(
        fmt,
        DSumsRows {
            x,
            dy,
            c,
            g,
            acc,
            next,
        },
    )
}
