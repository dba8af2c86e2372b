//! The AVX-512 level (F, BW, VL, DQ, with FMA): 16 `f32` lanes, 8 `f64` lanes.

use std::arch::x86_64::*;

use super::{Isa, WithIsa};
use crate::kernels::simd::{detected, Level};

/// Proof that the CPU runs AVX-512 F/BW/VL/DQ and FMA (made only by [`Avx512::try_new`]),
/// and whether the code it runs in was compiled with AVX512_BF16 (`true` only inside the
/// trampoline of [`Isa::vectorize_bf16`], after the feature was detected once per call).
#[derive(Clone, Copy, Debug)]
pub struct Avx512 {
    bf16: bool,
}

impl Avx512 {
    /// The token, if the CPU has the features (`simd::detected` checks all of them).
    #[inline(always)]
    pub fn try_new() -> Option<Self> {
        (detected() >= Level::Avx512).then_some(Avx512 { bf16: false })
    }
}

/// The mask of the first `k ≤ 16` lanes.
#[inline(always)]
fn lanes(k: usize) -> __mmask16 {
    assert!(k <= 16, "a partial vector has at most 16 lanes");
    ((1u32 << k) - 1) as __mmask16
}

/// The level's operations: each body is a `#[target_feature]` function (the intrinsics
/// are safe there), called from the token's method.
macro_rules! ops {
    (#[$inline:meta] $($name:ident $(<$g:ident: $b:path>)? ($($a:ident: $t:ty),*) $(-> $r:ty)? $body:block)*) => {$(
        #[inline(always)]
        fn $name $(<$g: $b>)? (self, $($a: $t),*) $(-> $r)? {
            #[$inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
            fn imp $(<$g: $b>)? ($($a: $t),*) $(-> $r)? $body
            // SAFETY: an `Avx512` exists only where these features were detected.
            unsafe { imp($($a),*) }
        }
    )*};
}

impl Isa for Avx512 {
    type F32 = __m512;
    type F64 = __m512d;
    const LANES: usize = 16;
    const ALIGN: usize = 64;
    const PIPELINE: bool = true;

    // The kernel of a call, in a function of its own: one call per kernel call (as the
    // `#[target_feature]` kernels before the token design), not the kernel of every level
    // inlined at each call site inside a task body compiled for this level.
    ops! {
        #[inline(never)]
        vectorize<Op: WithIsa>(op: Op) -> Op::Out { op.run(Avx512 { bf16: false }) }
    }

    ops! {
        #[inline]
        splat(v: f32) -> __m512 { _mm512_set1_ps(v) }
        add(a: __m512, b: __m512) -> __m512 { _mm512_add_ps(a, b) }
        sub(a: __m512, b: __m512) -> __m512 { _mm512_sub_ps(a, b) }
        mul(a: __m512, b: __m512) -> __m512 { _mm512_mul_ps(a, b) }
        mul_add(a: __m512, b: __m512, c: __m512) -> __m512 { _mm512_fmadd_ps(a, b, c) }
        load_part(s: &[f32]) -> __m512 {
            let m = lanes(s.len());
            // SAFETY: the lanes of `m` are the `s.len()` values of `s`; the others are not
            // accessed.
            unsafe { _mm512_maskz_loadu_ps(m, s.as_ptr()) }
        }
        store_part(s: &mut [f32], v: __m512) {
            let m = lanes(s.len());
            // SAFETY: as in `load_part`, on a slice borrowed mutably.
            unsafe { _mm512_mask_storeu_ps(s.as_mut_ptr(), m, v) }
        }
        stream(s: &mut [f32], v: __m512) {
            let a: &mut [f32; 16] = (&mut s[..16]).try_into().expect("16 values");
            if (a.as_ptr() as usize).is_multiple_of(64) {
                // SAFETY: 16 values (64 bytes) at a 64-byte boundary, borrowed mutably.
                unsafe { _mm512_stream_ps(a.as_mut_ptr(), v) }
            } else {
                *a = bytemuck::cast(v);
            }
        }
        fence() { _mm_sfence() }
        widen(v: __m512) -> (__m512d, __m512d) {
            (
                _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(v)),
            )
        }
        splat_d(v: f64) -> __m512d { _mm512_set1_pd(v) }
        add_d(a: __m512d, b: __m512d) -> __m512d { _mm512_add_pd(a, b) }
        sub_d(a: __m512d, b: __m512d) -> __m512d { _mm512_sub_pd(a, b) }
        mul_d(a: __m512d, b: __m512d) -> __m512d { _mm512_mul_pd(a, b) }
        mul_add_d(a: __m512d, b: __m512d, c: __m512d) -> __m512d { _mm512_fmadd_pd(a, b, c) }
        sum_d(v: __m512d) -> f64 { _mm512_reduce_add_pd(v) }
        load_wide(s: &[f32]) -> (__m512d, __m512d) {
            // Halves loaded as 256-bit vectors and widened from there (no lane extraction).
            let a: [f32; 16] = s[..16].try_into().expect("16 values");
            let [lo, hi]: [[f32; 8]; 2] = bytemuck::cast(a);
            (
                _mm512_cvtps_pd(bytemuck::cast(lo)),
                _mm512_cvtps_pd(bytemuck::cast(hi)),
            )
        }
    }

    #[inline(always)]
    fn load(self, s: &[f32]) -> __m512 {
        let a: [f32; 16] = s[..16].try_into().expect("16 values");
        bytemuck::cast(a)
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m512) {
        let a: &mut [f32; 16] = (&mut s[..16]).try_into().expect("16 values");
        *a = bytemuck::cast(v);
    }
    #[inline(always)]
    fn load_d(self, s: &[f64]) -> __m512d {
        let a: [f64; 8] = s[..8].try_into().expect("8 values");
        bytemuck::cast(a)
    }
    #[inline(always)]
    fn store_d(self, s: &mut [f64], v: __m512d) {
        let a: &mut [f64; 8] = (&mut s[..8]).try_into().expect("8 values");
        *a = bytemuck::cast(v);
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        super::prefetch2(p);
    }

    // half-precision loads/stores (half3): bf16 widened by a 16-bit shift and rounded with
    // integer arithmetic (`bf16_round`: nearest even, NaN quieted, the `half` crate's
    // bits); `store_bf16_ne` by AVX512_BF16 `vcvtneps2bf16` where the CPU has it (inline
    // inside `vectorize_bf16`, whose trampoline enables the feature), except for vectors
    // holding an f32 subnormal, which the instruction reads as zero: those round as
    // `store_bf16`. f16 by `vcvtph2ps` / `vcvtps2ph` (AVX-512F).
    #[inline(always)]
    fn store_bf16(self, s: &mut [u16], v: __m512) {
        // SAFETY: an `Avx512` exists only where these features were detected.
        unsafe { bf16_round(s, v) }
    }
    #[inline(always)]
    fn store_bf16_ne(self, s: &mut [u16], v: __m512) {
        // `self.bf16` is a constant inside each trampoline (no test per vector).
        if self.bf16 {
            // SAFETY: an `Avx512` exists only where its features were detected, and one
            // with `bf16` is made only by `vectorize_bf16`, after AVX512_BF16 was detected.
            if unsafe { bf16_round_ne(s, v) } {
                return;
            }
        }
        self.store_bf16(s, v)
    }
    #[inline(always)]
    fn vectorize_bf16<Op: WithIsa>(self, op: Op) -> Op::Out {
        /// The trampoline of `vectorize` with AVX512_BF16 (`bf16_round_ne` inlines there).
        #[inline(never)]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,avx512bf16")]
        fn imp<Op: WithIsa>(op: Op) -> Op::Out {
            op.run(Avx512 { bf16: true })
        }
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            // SAFETY: an `Avx512` exists only where its features were detected, and
            // AVX512_BF16 was detected just above.
            unsafe { imp(op) }
        } else {
            self.vectorize(op)
        }
    }

    ops! {
        #[inline]
        load_bf16(s: &[u16]) -> __m512 {
            let a: [u16; 16] = s[..16].try_into().expect("16 values");
            let w = _mm512_cvtepu16_epi32(bytemuck::cast(a));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
        }
        load_bf16_pair(s: &[u16]) -> (__m512, __m512) {
            let a: [u16; 32] = s[..32].try_into().expect("32 values");
            let v: __m512i = bytemuck::cast(a);
            let e = _mm512_slli_epi32::<16>(v);
            let o = _mm512_and_si512(v, _mm512_set1_epi32(-65536));
            (_mm512_castsi512_ps(e), _mm512_castsi512_ps(o))
        }
        load_f16(s: &[u16]) -> __m512 {
            let a: [u16; 16] = s[..16].try_into().expect("16 values");
            _mm512_cvtph_ps(bytemuck::cast(a))
        }
        store_f16(s: &mut [u16], v: __m512) {
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let h: [u16; 16] = bytemuck::cast(h);
            s[..16].copy_from_slice(&h);
        }
    }
}

/// `v` rounded to bf16 into the first 16 values of `s` with integer arithmetic (nearest
/// even, NaN quieted, subnormals rounded: the `half` crate's bits).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
fn bf16_round(s: &mut [u16], v: __m512) {
    let b = _mm512_castps_si512(v);
    let hi = _mm512_srli_epi32::<16>(b);
    let odd = _mm512_and_si512(hi, _mm512_set1_epi32(1));
    let bias = _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff));
    let r = _mm512_srli_epi32::<16>(_mm512_add_epi32(b, bias));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    let q = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));
    let r = _mm512_mask_blend_epi32(nan, r, q);
    let h: [u16; 16] = bytemuck::cast(_mm512_cvtepi32_epi16(r));
    s[..16].copy_from_slice(&h);
}

/// [`bf16_round`] by `vcvtneps2bf16` (the same bits), unless a lane of `v` is an f32
/// subnormal (the instruction reads those as zero): then nothing is stored and the result
/// is `false`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,avx512bf16")]
fn bf16_round_ne(s: &mut [u16], v: __m512) -> bool {
    let b = _mm512_castps_si512(v);
    let zero_exp = _mm512_testn_epi32_mask(b, _mm512_set1_epi32(0x7f80_0000));
    let tiny = _mm512_mask_test_epi32_mask(zero_exp, b, _mm512_set1_epi32(0x007f_ffff));
    if tiny != 0 {
        return false;
    }
    let h: [u16; 16] = bytemuck::cast(_mm512_cvtneps_pbh(v));
    s[..16].copy_from_slice(&h);
    true
}
