//! The half-precision rows' statistics in f32, two passes over the row (from the cache):
//! Σx, then Σd and Σd² with `d = x − m` (`m`: the mean of the first pass rounded to f32),
//! so that the statistics are centered on the row's own mean (robust to any offset: the
//! corrected two-pass algorithm, `mean = m + Σd/n`, `M2 = Σd² − (Σd)²/n` by
//! `stats::mean_m2`). An uncentered row (RMS norm) takes one pass, Σx².
//!
//! A fixed structure, the same at every level: the row's values in blocks of [`W`] (four
//! chains of 16 lanes, each half of 32 values into two of them as `Format::ld_pair`
//! assigns them: bf16 even and odd indices, widened in place), summed in f32
//! (`d²` added by one fused multiply-add: `Isa::fma`, one rounding at every level), the
//! four chains added pairwise into 16 lanes and those widened into 16
//! f64 lanes every [`BLOCK`] values (the f32 error stays that of one block's sums, whatever
//! the row's length); the values after the last whole block of 64 in scalar f64; the 16
//! f64 lanes added by a fixed tree. Every level and thread count gives the same bits.

use super::{go, ldh, Fmt, Format, Kernel};
use crate::kernels::isa::Isa;

/// Values per block of the f32 accumulators: four chains of 16 lanes.
pub(super) const W: usize = 64;

/// Values summed in f32 before the 16 lanes are widened into f64.
pub(super) const BLOCK: usize = 1024;

/// The accumulators of one sum: `W / LANES` vectors (at most 32, the portable level's).
type Acc<S> = [<S as Isa>::F32; 32];

/// The pairwise sum of the four chains into `lanes` (16 f64), widened.
#[inline(always)]
pub(super) fn fold<S: Isa>(s: S, acc: &Acc<S>, lanes: &mut [f64; 16]) {
    let per = 16 / S::LANES;
    let mut t = [0f32; 16];
    for j in 0..per {
        let a = s.add(acc[j], acc[per + j]);
        let b = s.add(acc[2 * per + j], acc[3 * per + j]);
        s.store(&mut t[j * S::LANES..], s.add(a, b));
    }
    for (l, v) in lanes.iter_mut().zip(t) {
        *l += f64::from(v);
    }
}

/// The 16 lanes added by a fixed tree (lane `j` and `j + w`, w = 8, 4, 2, 1).
#[inline(always)]
pub(super) fn tree(mut lanes: [f64; 16]) -> f64 {
    let mut w = 8;
    while w > 0 {
        for j in 0..w {
            lanes[j] += lanes[j + w];
        }
        w /= 2;
    }
    lanes[0]
}

/// The values of `rest` widened, in order, to `each`.
#[inline(always)]
fn each_rest<S: Isa, F: Format>(s: S, rest: &[u16], mut each: impl FnMut(f32)) {
    let mut b = [0f32; 16];
    for c in rest.chunks(S::LANES) {
        s.store(&mut b, ldh::<S, F>(s, c));
        for &v in &b[..c.len()] {
            each(v);
        }
    }
}

/// Σx of a row (the first pass).
#[inline(always)]
fn sum_x<S: Isa, F: Format>(s: S, x: &[u16]) -> f64 {
    let per = 16 / S::LANES;
    let full = x.len() - x.len() % W;
    let mut lanes = [0f64; 16];
    let mut i = 0;
    while i < full {
        let end = (i + BLOCK).min(full);
        let mut acc: Acc<S> = [s.splat(0.0); 32];
        while i < end {
            let blk = &x[i..i + W];
            for h in 0..2 {
                for q in 0..per {
                    let (a, b) = F::ld_pair(s, &blk[32 * h..], q);
                    let (ka, kb) = (2 * h * per + q, (2 * h + 1) * per + q);
                    acc[ka] = s.add(acc[ka], a);
                    acc[kb] = s.add(acc[kb], b);
                }
            }
            i += W;
        }
        fold(s, &acc, &mut lanes);
    }
    let mut tail = 0f64;
    each_rest::<S, F>(s, &x[full..], |v| tail += f64::from(v));
    tree(lanes) + tail
}

/// Σd and Σd² with `d = x − m` (the second pass; `C` false: `m` is 0 and only Σx²).
#[inline(always)]
fn sums_d<S: Isa, F: Format, const C: bool>(s: S, x: &[u16], m: f32) -> (f64, f64) {
    let per = 16 / S::LANES;
    let vm = s.splat(m);
    let full = x.len() - x.len() % W;
    let (mut ls, mut lq) = ([0f64; 16], [0f64; 16]);
    let mut i = 0;
    while i < full {
        let end = (i + BLOCK).min(full);
        let mut sd: Acc<S> = [s.splat(0.0); 32];
        let mut sq: Acc<S> = [s.splat(0.0); 32];
        while i < end {
            let blk = &x[i..i + W];
            for h in 0..2 {
                for q in 0..per {
                    let (a, b) = F::ld_pair(s, &blk[32 * h..], q);
                    let ks = [2 * h * per + q, (2 * h + 1) * per + q];
                    for (k, xv) in ks.into_iter().zip([a, b]) {
                        let d = if C { s.sub(xv, vm) } else { xv };
                        if C {
                            sd[k] = s.add(sd[k], d);
                        }
                        sq[k] = s.fma(d, d, sq[k]);
                    }
                }
            }
            i += W;
        }
        if C {
            fold(s, &sd, &mut ls);
        }
        fold(s, &sq, &mut lq);
    }
    let (mut ts, mut tq) = (0f64, 0f64);
    each_rest::<S, F>(s, &x[full..], |v| {
        let d = f64::from(v) - f64::from(m);
        ts += d;
        tq += d * d;
    });
    (if C { tree(ls) + ts } else { 0.0 }, tree(lq) + tq)
}

/// [`row_stats`] as a kernel.
pub(super) struct Stats32<'a> {
    pub(super) x: &'a [u16],
    pub(super) center: bool,
}

impl Kernel for Stats32<'_> {
    type Out = (f64, f64, f64);
    #[inline(always)]
    fn run<S: Isa, F: Format>(self, s: S) -> (f64, f64, f64) {
        let x = self.x;
        if !self.center || x.is_empty() {
            let (_, q) = sums_d::<S, F, false>(s, x, 0.0);
            return (0.0, 0.0, q);
        }
        let m = (sum_x::<S, F>(s, x) / x.len() as f64) as f32;
        let (sd, sq) = sums_d::<S, F, true>(s, x, m);
        (f64::from(m), sd, sq)
    }
}

/// A half row's raw statistics `(shift, Σd, Σd²)` (`stats::mean_m2`'s shifted sums) in
/// f32 lanes, two passes: where `center`, `shift` is the row's mean rounded to f32 and
/// `d = x − shift`; else `(0, 0, Σx²)`. The same bits at every level.
pub(crate) fn row_stats(fmt: Fmt, x: &[u16], center: bool) -> (f64, f64, f64) {
    go(fmt, Stats32 { x, center })
}
