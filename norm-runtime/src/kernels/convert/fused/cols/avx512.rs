//! The bf16 column sums (`ColSums`) at the AVX-512 level without lane-crossing widening.
//!
//! The token kernel widens 16 bf16 values with a 512-bit zero extension and shift, a
//! 256-bit extraction and two `vcvtps2pd`: on Zen 4 those 512-bit shuffles, not the f64
//! arithmetic, bounded the forward's first pass (~30 cycles per 64 values in the L2
//! cache). Here 16 values load as one 256-bit vector and widen to f32 by two in-lane
//! interleaves with zero (`vpunpcklwd`, `vpunpckhwd`: each value's bits in the upper half
//! of a 32-bit lane, the token's shift), then to f64 (`vcvtps2pd` from a 256-bit register,
//! no extraction). The interleaves put columns `0–3, 8–11` of each 16 in one f64 vector and
//! `4–7, 12–15` in the other ([`PERM`]): the shifts, the accumulators and the partial sums
//! are kept in that order and put back in column order at the end. Each column's f64
//! operations and their order are the token kernel's (`x − h`, `s + d`, `fma(d, d, q)` from
//! zero over the rows in order, then added into the caller's sums; the columns past the
//! last 16 in scalar `f64`), so the sums are its bits.

use std::arch::x86_64::*;

use super::{col_chunk, ColWork, MAX_V};
use crate::kernels::simd::{self, Level};

/// Stored position `i` of a group of 16 columns holds column `PERM[i]` of the group.
const PERM: [usize; 16] = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15];

/// `ColSums` of bf16 rows of `h.len()` values (`sum[j] += Σ (x − h[j])`, `sq[j] += Σ (x −
/// h[j])²`) where the level is AVX-512, its partial sums in `work`; `false` (nothing
/// done) elsewhere.
pub(super) fn col_sums(
    x: &[u16],
    h: &[f64],
    (sum, sq): (&mut [f64], &mut [f64]),
    work: &mut ColWork,
) -> bool {
    if simd::level() != Level::Avx512 {
        return false;
    }
    // SAFETY: the level is AVX-512 (F, BW, DQ, VL detected), the features of `sums`.
    unsafe { sums(x, h, (sum, sq), work) };
    true
}

/// [`col_sums`] inside the level's features.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn sums(x: &[u16], h: &[f64], (sum, sq): (&mut [f64], &mut [f64]), work: &mut ColWork) {
    let k = h.len();
    if k == 0 {
        return;
    }
    let (sum, sq) = (&mut sum[..k], &mut sq[..k]);
    let vk = k - k % 16;
    // The shifts in the stored order; the vector columns' sums from zero, in that order.
    let (hp, acc) = work.d(3 * vk).split_at_mut(vk);
    for (i, v) in hp.iter_mut().enumerate() {
        *v = h[i - i % 16 + PERM[i % 16]];
    }
    let (sv, qv) = acc.split_at_mut(vk);
    for rows in x.chunks(col_chunk(k, 16)) {
        let mut c0 = 0;
        while c0 + 64 <= vk {
            block::<4>(rows, k, c0, hp, (&mut *sv, &mut *qv));
            c0 += 64;
        }
        while c0 < vk {
            block::<1>(rows, k, c0, hp, (&mut *sv, &mut *qv));
            c0 += 16;
        }
    }
    // The columns past the last 16: per row in scalar f64 (as the token kernel's rest).
    if vk < k {
        for row in x.chunks_exact(k) {
            for (j, &v) in row.iter().enumerate().skip(vk) {
                let d = f64::from(f32::from_bits(u32::from(v) << 16)) - h[j];
                sum[j] += d;
                sq[j] += d * d;
            }
        }
    }
    for (i, (&s, &q)) in sv.iter().zip(&*qv).enumerate() {
        let j = i - i % 16 + PERM[i % 16];
        sum[j] += s;
        sq[j] += q;
    }
}

/// Eight f64 values of a slice.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn ld8(v: &[f64]) -> __m512d {
    let a: [f64; 8] = v[..8].try_into().expect("8 values");
    bytemuck::cast(a)
}

/// Stores eight f64 values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn st8(v: &mut [f64], r: __m512d) {
    let a: &mut [f64; 8] = (&mut v[..8]).try_into().expect("8 values");
    *a = bytemuck::cast(r);
}

/// The `16·V` columns from `c0` over the rows of one chunk, the stored-order accumulators
/// `sv`, `qv` loaded into registers and stored back.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn block<const V: usize>(
    x: &[u16],
    k: usize,
    c0: usize,
    hp: &[f64],
    (sv, qv): (&mut [f64], &mut [f64]),
) {
    let z = _mm512_setzero_pd();
    let (mut hv, mut s, mut q) = ([z; 2 * MAX_V], [z; 2 * MAX_V], [z; 2 * MAX_V]);
    for i in 0..2 * V {
        let o = c0 + 8 * i;
        hv[i] = ld8(&hp[o..]);
        s[i] = ld8(&sv[o..]);
        q[i] = ld8(&qv[o..]);
    }
    let zi = _mm256_setzero_si256();
    for row in x.chunks_exact(k) {
        let line = &row[c0..c0 + 16 * V];
        for v in 0..V {
            let a: [u16; 16] = line[16 * v..16 * v + 16].try_into().expect("16 values");
            let w: __m256i = bytemuck::cast(a);
            let lo = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm256_unpacklo_epi16(zi, w)));
            let hi = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm256_unpackhi_epi16(zi, w)));
            let (lo, hi) = (
                _mm512_sub_pd(lo, hv[2 * v]),
                _mm512_sub_pd(hi, hv[2 * v + 1]),
            );
            s[2 * v] = _mm512_add_pd(s[2 * v], lo);
            s[2 * v + 1] = _mm512_add_pd(s[2 * v + 1], hi);
            q[2 * v] = _mm512_fmadd_pd(lo, lo, q[2 * v]);
            q[2 * v + 1] = _mm512_fmadd_pd(hi, hi, q[2 * v + 1]);
        }
    }
    for i in 0..2 * V {
        let o = c0 + 8 * i;
        st8(&mut sv[o..], s[i]);
        st8(&mut qv[o..], q[i]);
    }
}
