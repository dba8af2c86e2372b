//! Slice conversions between the half-precision types and `f32`, the edges of every
//! half-precision layer call (`crate::widen`).
//!
//! * bf16 → f32 is exact (the 16 bits become the high half of the f32): a plain loop, which
//!   the compiler vectorizes.
//! * f32 → bf16 rounds to nearest even: AVX512_BF16 `vcvtneps2bf16` where the CPU has it,
//!   the `half` crate's conversion otherwise. The instruction treats subnormal f32 inputs
//!   (|x| < 2⁻¹²⁶) as zero; the portable path rounds them. Both quiet NaNs.
//! * f16 ↔ f32: F16C `vcvtph2ps` / `vcvtps2ph` (round to nearest even) where the CPU has it,
//!   the `half` crate's slice conversion otherwise (which itself uses the hardware on
//!   aarch64).
//!
//! Each conversion has a [`Conv`] level so the tests run every level this CPU supports
//! against the portable one.

use half::{bf16, f16};

/// Calls the `#[target_feature]` conversion `x86::$f` from a context without its features:
/// only right after the `assert!` that this CPU has them (`bf16_hardware`,
/// `f16_hardware`).
#[cfg(target_arch = "x86_64")]
macro_rules! hardware {
    ($f:ident($($a:expr),*)) => {
        // SAFETY: every use follows the `assert!` that the CPU has the function's features.
        unsafe { x86::$f($($a),*) }
    };
}

/// A conversion implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv {
    /// Portable code (the `half` crate).
    Portable,
    /// The x86-64 instructions: AVX512_BF16 for bf16, F16C for f16.
    Hardware,
}

/// Whether this CPU runs the [`Conv::Hardware`] bf16 conversion.
pub fn bf16_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the [`Conv::Hardware`] f16 conversion.
pub fn f16_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The best bf16 level of this CPU.
fn bf16_level() -> Conv {
    if bf16_hardware() {
        Conv::Hardware
    } else {
        Conv::Portable
    }
}

/// The best f16 level of this CPU.
fn f16_level() -> Conv {
    if f16_hardware() {
        Conv::Hardware
    } else {
        Conv::Portable
    }
}

/// `value` rounded to f32 *to odd* (truncated toward zero, the last bit set when inexact):
/// rounding that to a format with at least two fewer significant bits (bf16, f16) to
/// nearest even gives the correctly rounded result of `value`, without the double-rounding
/// error of rounding to f32 to nearest first. (The `half` crate's `from_f64` drops the low
/// 32 bits of the f64 before rounding, so it misrounds values just above a tie.)
pub fn f64_to_f32_odd(value: f64) -> f32 {
    let f = value as f32;
    if !f.is_finite() || f64::from(f) == value {
        return f;
    }
    // Toward zero: step back one ulp where rounding went away from zero.
    let t = if f64::from(f).abs() > value.abs() {
        f32::from_bits(f.to_bits() - 1)
    } else {
        f
    };
    f32::from_bits(t.to_bits() | 1)
}

/// `value` correctly rounded to bf16 (nearest even).
pub fn f64_to_bf16(value: f64) -> bf16 {
    bf16::from_f32(f64_to_f32_odd(value))
}

/// `value` correctly rounded to f16 (nearest even).
pub fn f64_to_f16(value: f64) -> f16 {
    f16::from_f32(f64_to_f32_odd(value))
}

/// `dst[i] = src[i]` as f32 (exact). Panics if the lengths differ.
pub fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "bf16_to_f32: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if super::simd::level() == super::simd::Level::Avx512 {
        // SAFETY: the AVX-512 level is only reported where the CPU has AVX512F/BW.
        return unsafe { bf16_to_f32_avx512(src, dst) };
    }
    bf16_to_f32_loop(src, dst);
}

/// The exact widening loop (the compiler vectorizes it for the target's features).
#[inline(always)]
fn bf16_to_f32_loop(src: &[bf16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(u32::from(s.to_bits()) << 16);
    }
}

/// [`bf16_to_f32_loop`] compiled for AVX-512 (16 values per instruction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn bf16_to_f32_avx512(src: &[bf16], dst: &mut [f32]) {
    bf16_to_f32_loop(src, dst);
}

/// `dst[i] = src[i]` rounded to nearest even, with the best level of this CPU.
pub fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    f32_to_bf16_with(bf16_level(), src, dst);
}

/// `dst[i] = src[i]` rounded to nearest even with `level`. Panics if the lengths differ or
/// the CPU lacks the level's instructions.
pub fn f32_to_bf16_with(level: Conv, src: &[f32], dst: &mut [bf16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_bf16: lengths differ");
    match level {
        Conv::Portable => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = bf16::from_f32(s);
            }
        }
        Conv::Hardware => {
            assert!(bf16_hardware(), "this CPU has no AVX512_BF16");
            #[cfg(target_arch = "x86_64")]
            hardware!(f32_to_bf16_avx512(src, dst));
        }
    }
}

/// `dst[i] = src[i]` as f32 (exact), with the best level of this CPU.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    f16_to_f32_with(f16_level(), src, dst);
}

/// `dst[i] = src[i]` as f32 with `level`. Panics if the lengths differ or the CPU lacks
/// the level's instructions.
pub fn f16_to_f32_with(level: Conv, src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: lengths differ");
    match level {
        Conv::Portable => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s.to_f32();
            }
        }
        Conv::Hardware => {
            assert!(f16_hardware(), "this CPU has no F16C");
            #[cfg(target_arch = "x86_64")]
            hardware!(f16_to_f32_f16c(src, dst));
        }
    }
}

/// `dst[i] = src[i]` rounded to nearest even, with the best level of this CPU.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    f32_to_f16_with(f16_level(), src, dst);
}

/// `dst[i] = src[i]` rounded to nearest even with `level`. Panics if the lengths differ or
/// the CPU lacks the level's instructions.
pub fn f32_to_f16_with(level: Conv, src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16: lengths differ");
    match level {
        Conv::Portable => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = f16::from_f32(s);
            }
        }
        Conv::Hardware => {
            assert!(f16_hardware(), "this CPU has no F16C");
            #[cfg(target_arch = "x86_64")]
            hardware!(f32_to_f16_f16c(src, dst));
        }
    }
}

/// The hardware conversions: safe `#[target_feature]` functions over fixed-size chunks
/// (vectors made from arrays with `bytemuck`, no pointers), the tails through a zeroed
/// stack buffer of one vector.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    /// 16 f32 rounded to bf16 bit patterns.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn bf16x16(s: &[f32]) -> [u16; 16] {
        let a: [f32; 16] = s.try_into().expect("16 values");
        bytemuck::cast(_mm512_cvtneps_pbh(bytemuck::cast(a)))
    }

    /// `dst[i] = src[i]` rounded to nearest even (lengths equal: the caller asserts it).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) fn f32_to_bf16_avx512(src: &[f32], dst: &mut [bf16]) {
        let mut s = src.chunks_exact(16);
        let mut d = dst.chunks_exact_mut(16);
        for (s, d) in (&mut s).zip(&mut d) {
            for (o, h) in d.iter_mut().zip(bf16x16(s)) {
                *o = bf16::from_bits(h);
            }
        }
        let (s, d) = (s.remainder(), d.into_remainder());
        if !s.is_empty() {
            let mut buf = [0f32; 16];
            buf[..s.len()].copy_from_slice(s);
            for (o, h) in d.iter_mut().zip(bf16x16(&buf)) {
                *o = bf16::from_bits(h);
            }
        }
    }

    /// 8 f16 bit patterns widened to f32.
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    fn f32x8(h: [u16; 8]) -> [f32; 8] {
        bytemuck::cast(_mm256_cvtph_ps(bytemuck::cast(h)))
    }

    /// `dst[i] = src[i]` as f32 (lengths equal: the caller asserts it).
    #[target_feature(enable = "avx,f16c")]
    pub(super) fn f16_to_f32_f16c(src: &[f16], dst: &mut [f32]) {
        let mut s = src.chunks_exact(8);
        let mut d = dst.chunks_exact_mut(8);
        for (s, d) in (&mut s).zip(&mut d) {
            let mut h = [0u16; 8];
            for (h, v) in h.iter_mut().zip(s) {
                *h = v.to_bits();
            }
            d.copy_from_slice(&f32x8(h));
        }
        let (s, d) = (s.remainder(), d.into_remainder());
        if !s.is_empty() {
            let mut h = [0u16; 8];
            for (h, v) in h.iter_mut().zip(s) {
                *h = v.to_bits();
            }
            d.copy_from_slice(&f32x8(h)[..s.len()]);
        }
    }

    /// 8 f32 rounded to f16 bit patterns (nearest even).
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    fn f16x8(s: &[f32]) -> [u16; 8] {
        let a: [f32; 8] = s.try_into().expect("8 values");
        bytemuck::cast(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
            bytemuck::cast(a),
        ))
    }

    /// `dst[i] = src[i]` rounded to nearest even (lengths equal: the caller asserts it).
    #[target_feature(enable = "avx,f16c")]
    pub(super) fn f32_to_f16_f16c(src: &[f32], dst: &mut [f16]) {
        let mut s = src.chunks_exact(8);
        let mut d = dst.chunks_exact_mut(8);
        for (s, d) in (&mut s).zip(&mut d) {
            for (o, h) in d.iter_mut().zip(f16x8(s)) {
                *o = f16::from_bits(h);
            }
        }
        let (s, d) = (s.remainder(), d.into_remainder());
        if !s.is_empty() {
            let mut buf = [0f32; 8];
            buf[..s.len()].copy_from_slice(s);
            for (o, h) in d.iter_mut().zip(f16x8(&buf)) {
                *o = f16::from_bits(h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bf16 → f32 at every implementation this CPU runs equals the bit shift, on lengths
    /// below, at and around one vector.
    #[test]
    fn bf16_widening_is_exact_at_every_level() {
        for n in [0usize, 1, 3, 15, 16, 17, 33, 100, 2049] {
            let src: Vec<bf16> = (0..n)
                .map(|i| bf16::from_bits((i as u16).wrapping_mul(40503) ^ 0x3f80))
                .collect();
            let want: Vec<u32> = src.iter().map(|v| u32::from(v.to_bits()) << 16).collect();
            let mut out = vec![0f32; n];
            bf16_to_f32_loop(&src, &mut out);
            assert!(
                out.iter().map(|v| v.to_bits()).eq(want.iter().copied()),
                "loop, n {n}"
            );
            out.fill(0.0);
            bf16_to_f32(&src, &mut out);
            assert!(
                out.iter().map(|v| v.to_bits()).eq(want.iter().copied()),
                "best, n {n}"
            );
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512bw") {
                out.fill(0.0);
                // SAFETY: AVX512F/BW detected just above.
                unsafe { bf16_to_f32_avx512(&src, &mut out) };
                assert!(
                    out.iter().map(|v| v.to_bits()).eq(want.iter().copied()),
                    "avx512, n {n}"
                );
            }
        }
    }

    /// Values across the ranges: normal, ties, halfway cases, near overflow, infinities,
    /// f16 subnormals, and lengths that leave every tail.
    fn samples(n: usize) -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            1.0,
            -1.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            65504.0,
            65520.0,
            1e-5,
            6e-8,
            3.0e38,
            -3.4e38,
            1.0 + f32::EPSILON,
            // bf16 ties: exactly halfway between two bf16 values (even and odd last bit).
            f32::from_bits(0x3F80_8000),
            f32::from_bits(0x3F81_8000),
            f32::from_bits(0x3F80_8001),
        ];
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        while v.len() < n {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let e = (s % 60) as i32 - 30;
            let m = ((s >> 8) % 1_000_000) as f32 / 1e6 + 0.5;
            let sign = if s & 1 == 0 { 1.0 } else { -1.0 };
            v.push(sign * m * 2f32.powi(e));
            // Random bit patterns of normal numbers too (every rounding position).
            let b = (s >> 32) as u32;
            let f = f32::from_bits(b);
            if f.is_normal() {
                v.push(f);
            }
        }
        v.truncate(n);
        v
    }

    fn same_bits_bf16(a: &[bf16], b: &[bf16]) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let nan = x.is_nan() && y.is_nan();
            assert!(nan || x.to_bits() == y.to_bits(), "{i}: {x} vs {y}");
        }
    }

    #[test]
    fn bf16_widening_is_exact_and_roundtrips() {
        let bits: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        let mut wide = vec![0f32; bits.len()];
        bf16_to_f32(&bits, &mut wide);
        for (b, w) in bits.iter().zip(&wide) {
            assert!(b.is_nan() && w.is_nan() || b.to_f32().to_bits() == w.to_bits());
        }
        let mut back = vec![bf16::ZERO; bits.len()];
        f32_to_bf16_with(Conv::Portable, &wide, &mut back);
        same_bits_bf16(&back, &bits);
    }

    #[test]
    fn bf16_portable_rounds_to_nearest_even() {
        // Reference: round the f64 value (exact) to 8 significant bits, ties to even.
        for &x in &samples(5000) {
            // (Finite normal values whose bf16 neighbours are finite.)
            if !x.is_finite() || x.abs() < f32::MIN_POSITIVE || x.abs() > 3.3e38 {
                continue;
            }
            let mut out = [bf16::ZERO];
            f32_to_bf16_with(Conv::Portable, &[x], &mut out);
            let bits = x.to_bits();
            let (lo, hi) = (bits & 0xFFFF_0000, (bits & 0xFFFF_0000) + 0x1_0000);
            let (dl, dh) = (
                (f64::from(x) - f64::from(f32::from_bits(lo))).abs(),
                (f64::from(f32::from_bits(hi)) - f64::from(x)).abs(),
            );
            let want = if dl < dh || (dl == dh && (lo >> 16) & 1 == 0) {
                lo
            } else {
                hi
            };
            assert_eq!(u32::from(out[0].to_bits()) << 16, want, "{x:e}");
        }
    }

    #[test]
    fn bf16_levels_agree() {
        if !bf16_hardware() {
            eprintln!("no AVX512_BF16 here: only the portable level runs");
            return;
        }
        for n in [0, 1, 15, 16, 17, 33, 1000, 4099] {
            let src = samples(n);
            let (mut p, mut h) = (vec![bf16::ZERO; n], vec![bf16::ONE; n]);
            f32_to_bf16_with(Conv::Portable, &src, &mut p);
            f32_to_bf16_with(Conv::Hardware, &src, &mut h);
            same_bits_bf16(&h, &p);
        }
        // Subnormal f32 inputs: the instruction treats them as zero (documented).
        let mut h = [bf16::ONE];
        f32_to_bf16_with(Conv::Hardware, &[1e-40], &mut h);
        assert_eq!(h[0].to_f32(), 0.0);
    }

    /// The f16 nearest to `v` (ties to the even bit pattern), by search over the finite f16
    /// values: an independent reference. Beyond the largest finite value, the IEEE rule.
    fn nearest_f16(v: f64) -> f16 {
        let max = f16::MAX.to_f64();
        if v.is_nan() || v.abs() >= max + (max - f16::from_bits(0x7BFE).to_f64()) / 2.0 {
            // NaN and overflow: the IEEE result, which the callers skip or check otherwise.
            return f16::from_f64(v);
        }
        // Candidates: the f16 values around v found by bisection over the ordered bits.
        let (mut lo, mut hi) = (0u16, 0x7C00u16);
        let a = v.abs();
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if f16::from_bits(mid).to_f64() <= a {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (dl, dh) = (
            a - f16::from_bits(lo).to_f64(),
            f16::from_bits(hi).to_f64() - a,
        );
        let bits = if dl < dh || (dl == dh && lo & 1 == 0) {
            lo
        } else {
            hi
        };
        f16::from_bits(bits | if v.is_sign_negative() { 0x8000 } else { 0 })
    }

    #[test]
    fn f64_rounding_to_half_types_is_correct_where_half_from_f64_is_not() {
        // 1 + 2^-8 + 2^-40: just above a bf16 tie; the nearest bf16 is 1 + 2^-7.
        let v = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        assert_eq!(f64_to_bf16(v).to_f64(), 1.0 + 2f64.powi(-7));
        // 1 + 2^-11 + 2^-40 for f16.
        let v = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(f64_to_f16(v).to_f64(), 1.0 + 2f64.powi(-10));
        // Random f64 values against exact references.
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let e = (s % 40) as i32 - 20;
            let v = f64::from_bits((s >> 12) | 0x3FF0_0000_0000_0000) * 2f64.powi(e);
            let v = if s & 1 == 0 { v } else { -v };
            if v.abs() > 65000.0 {
                continue;
            }
            assert_eq!(f64_to_f16(v).to_bits(), nearest_f16(v).to_bits(), "{v:e}");
            // bf16: nearest of the two bf16 values around v, exact in f64.
            let b = f64_to_bf16(v).to_f64();
            let t = f32::from_bits((v as f32).to_bits() & 0xFFFF_0000);
            let t = if f64::from(t).abs() > v.abs() {
                f32::from_bits(t.to_bits() - 0x1_0000)
            } else {
                t
            };
            let (lo, hi) = (
                f64::from(t),
                f64::from(f32::from_bits(t.to_bits() + 0x1_0000)),
            );
            let (dl, dh) = ((v - lo).abs(), (hi - v).abs());
            let want = if dl < dh || (dl == dh && (t.to_bits() >> 16) & 1 == 0) {
                lo
            } else {
                hi
            };
            assert_eq!(b, want, "{v:e}");
        }
    }

    #[test]
    fn f16_levels_agree_with_the_portable_rounding() {
        let levels: &[Conv] = if f16_hardware() {
            &[Conv::Portable, Conv::Hardware]
        } else {
            &[Conv::Portable]
        };
        for &level in levels {
            for n in [0, 1, 7, 8, 9, 100, 4097] {
                let src = samples(n);
                let mut out = vec![f16::ONE; n];
                f32_to_f16_with(level, &src, &mut out);
                for (i, (&s, o)) in src.iter().zip(&out).enumerate() {
                    if s.is_finite() && s.abs() > 65504.0 {
                        assert!(o.is_infinite() || o.to_f64().abs() == 65504.0, "{s}");
                        continue;
                    }
                    let want = nearest_f16(f64::from(s));
                    let nan = want.is_nan() && o.is_nan();
                    assert!(nan || want.to_bits() == o.to_bits(), "{level:?} {i}: {s:e}");
                }
            }
            // Every f16 widens exactly (and back).
            let bits: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
            let mut wide = vec![0f32; bits.len()];
            f16_to_f32_with(level, &bits, &mut wide);
            for (b, w) in bits.iter().zip(&wide) {
                assert!(b.is_nan() && w.is_nan() || f64::from(*w) == b.to_f64());
            }
            let mut back = vec![f16::ZERO; bits.len()];
            f32_to_f16_with(level, &wide, &mut back);
            for (b, w) in bits.iter().zip(&back) {
                assert!(b.is_nan() && w.is_nan() || b.to_bits() == w.to_bits());
            }
        }
    }
}
