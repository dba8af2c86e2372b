//! The AVX2 + FMA level: 8 `f32` lanes, 4 `f64` lanes.

use std::arch::x86_64::*;

use super::{Isa, WithIsa};
use crate::kernels::simd::{detected, Level};

/// Proof that the CPU runs AVX2, FMA and F16C (made only by [`Avx2::try_new`]).
#[derive(Clone, Copy, Debug)]
pub struct Avx2(());

impl Avx2 {
    /// The token, if the CPU has the features (`simd::detected` checks AVX2 and FMA; F16C,
    /// the f16 conversions, comes with every AVX2 CPU and is checked here: without it the
    /// calls run the portable level).
    #[inline(always)]
    pub fn try_new() -> Option<Self> {
        (detected() >= Level::Avx2 && std::arch::is_x86_feature_detected!("f16c"))
            .then_some(Avx2(()))
    }
}

/// The level's operations: each body is a `#[target_feature]` function (the intrinsics
/// are safe there), called from the token's method.
macro_rules! ops {
    (#[$inline:meta] $($name:ident $(<$g:ident: $b:path>)? ($($a:ident: $t:ty),*) $(-> $r:ty)? $body:block)*) => {$(
        #[inline(always)]
        fn $name $(<$g: $b>)? (self, $($a: $t),*) $(-> $r)? {
            #[$inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            fn imp $(<$g: $b>)? ($($a: $t),*) $(-> $r)? $body
            // SAFETY: an `Avx2` exists only where these features were detected.
            unsafe { imp($($a),*) }
        }
    )*};
}

/// The mask vector of the first `k ≤ 8` lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn lanes(k: usize) -> __m256i {
    assert!(k <= 8, "a partial vector has at most 8 lanes");
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(k as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

impl Isa for Avx2 {
    type F32 = __m256;
    type F64 = __m256d;
    const LANES: usize = 8;
    const ALIGN: usize = 32;
    const PIPELINE: bool = false;

    // The kernel of a call, in a function of its own: one call per kernel call (as the
    // `#[target_feature]` kernels before the token design), not the kernel of every level
    // inlined at each call site inside a task body compiled for this level.
    ops! {
        #[inline(never)]
        vectorize<Op: WithIsa>(op: Op) -> Op::Out { op.run(Avx2(())) }
    }

    ops! {
        #[inline]
        splat(v: f32) -> __m256 { _mm256_set1_ps(v) }
        add(a: __m256, b: __m256) -> __m256 { _mm256_add_ps(a, b) }
        sub(a: __m256, b: __m256) -> __m256 { _mm256_sub_ps(a, b) }
        mul(a: __m256, b: __m256) -> __m256 { _mm256_mul_ps(a, b) }
        mul_add(a: __m256, b: __m256, c: __m256) -> __m256 { _mm256_fmadd_ps(a, b, c) }
        load_part(s: &[f32]) -> __m256 {
            let m = lanes(s.len());
            // SAFETY: the lanes of `m` are the `s.len()` values of `s`; the others are not
            // accessed.
            unsafe { _mm256_maskload_ps(s.as_ptr(), m) }
        }
        stream(s: &mut [f32], v: __m256) {
            let a: &mut [f32; 8] = (&mut s[..8]).try_into().expect("8 values");
            if (a.as_ptr() as usize).is_multiple_of(32) {
                // SAFETY: 8 values (32 bytes) at a 32-byte boundary, borrowed mutably.
                unsafe { _mm256_stream_ps(a.as_mut_ptr(), v) }
            } else {
                *a = bytemuck::cast(v);
            }
        }
        fence() { _mm_sfence() }
        widen(v: __m256) -> (__m256d, __m256d) {
            (
                _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)),
            )
        }
        load_wide(s: &[f32]) -> (__m256d, __m256d) {
            let a: [f32; 8] = s[..8].try_into().expect("8 values");
            let [lo, hi]: [[f32; 4]; 2] = bytemuck::cast(a);
            (
                _mm256_cvtps_pd(bytemuck::cast(lo)),
                _mm256_cvtps_pd(bytemuck::cast(hi)),
            )
        }
        splat_d(v: f64) -> __m256d { _mm256_set1_pd(v) }
        add_d(a: __m256d, b: __m256d) -> __m256d { _mm256_add_pd(a, b) }
        sub_d(a: __m256d, b: __m256d) -> __m256d { _mm256_sub_pd(a, b) }
        mul_d(a: __m256d, b: __m256d) -> __m256d { _mm256_mul_pd(a, b) }
        mul_add_d(a: __m256d, b: __m256d, c: __m256d) -> __m256d { _mm256_fmadd_pd(a, b, c) }
        sum_d(v: __m256d) -> f64 {
            let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
            _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
        }
    }

    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        let a: [f32; 8] = s[..8].try_into().expect("8 values");
        bytemuck::cast(a)
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m256) {
        let a: &mut [f32; 8] = (&mut s[..8]).try_into().expect("8 values");
        *a = bytemuck::cast(v);
    }
    /// Through an array: a vector store, then the values copied (a wide store forwards to
    /// the narrow loads of the copy).
    #[inline(always)]
    fn store_part(self, s: &mut [f32], v: __m256) {
        let a: [f32; 8] = bytemuck::cast(v);
        let n = s.len();
        s.copy_from_slice(&a[..n]);
    }
    #[inline(always)]
    fn load_d(self, s: &[f64]) -> __m256d {
        let a: [f64; 4] = s[..4].try_into().expect("4 values");
        bytemuck::cast(a)
    }
    #[inline(always)]
    fn store_d(self, s: &mut [f64], v: __m256d) {
        let a: &mut [f64; 4] = (&mut s[..4]).try_into().expect("4 values");
        *a = bytemuck::cast(v);
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        super::prefetch2(p);
    }

    // half-precision loads/stores (half3): bf16 widened by a 16-bit shift and rounded with
    // integer arithmetic (nearest even, NaN quieted: the `half` crate's bits); f16 by F16C
    // `vcvtph2ps` / `vcvtps2ph` (round to nearest even, subnormals kept, NaN quieted with
    // its payload's top bits: the `half` crate's bits, as the AVX-512 level).
    ops! {
        #[inline]
        load_bf16(s: &[u16]) -> __m256 {
            let a: [u16; 8] = s[..8].try_into().expect("8 values");
            let w = _mm256_cvtepu16_epi32(bytemuck::cast(a));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w))
        }
        load_bf16_pair(s: &[u16]) -> (__m256, __m256) {
            let a: [u16; 16] = s[..16].try_into().expect("16 values");
            let v: __m256i = bytemuck::cast(a);
            let e = _mm256_slli_epi32::<16>(v);
            let o = _mm256_and_si256(v, _mm256_set1_epi32(-65536));
            (_mm256_castsi256_ps(e), _mm256_castsi256_ps(o))
        }
        store_bf16(s: &mut [u16], v: __m256) {
            let b = _mm256_castps_si256(v);
            let hi = _mm256_srli_epi32::<16>(b);
            let odd = _mm256_and_si256(hi, _mm256_set1_epi32(1));
            let bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff));
            let r = _mm256_srli_epi32::<16>(_mm256_add_epi32(b, bias));
            let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            let q = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
            let r = _mm256_blendv_epi8(r, q, nan);
            let p = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
            let h: [u16; 8] = bytemuck::cast(p);
            s[..8].copy_from_slice(&h);
        }
        load_f16(s: &[u16]) -> __m256 {
            let a: [u16; 8] = s[..8].try_into().expect("8 values");
            _mm256_cvtph_ps(bytemuck::cast(a))
        }
        store_f16(s: &mut [u16], v: __m256) {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            let h: [u16; 8] = bytemuck::cast(h);
            s[..8].copy_from_slice(&h);
        }
    }
}
