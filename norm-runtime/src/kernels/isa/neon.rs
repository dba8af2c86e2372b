//! The aarch64 Advanced SIMD level (NEON, part of the aarch64 baseline): 4 `f32` lanes,
//! 2 `f64` lanes. Loads and stores go through arrays (`bytemuck`), partial vectors through
//! a zeroed array.

use std::arch::aarch64::*;

use super::{Isa, WithIsa};

/// The NEON level (always available on aarch64).
#[derive(Clone, Copy, Debug)]
pub struct Neon;

/// The level's operations: each body is a `#[target_feature]` function (the intrinsics
/// are safe there), called from the token's method.
macro_rules! ops {
    ($($name:ident($($a:ident: $t:ty),*) -> $r:ty $body:block)*) => {$(
        #[inline(always)]
        fn $name(self, $($a: $t),*) -> $r {
            #[inline]
            #[target_feature(enable = "neon")]
            fn imp($($a: $t),*) -> $r $body
            // SAFETY: NEON is part of the aarch64 baseline: every aarch64 target runs it.
            unsafe { imp($($a),*) }
        }
    )*};
}

impl Isa for Neon {
    type F32 = float32x4_t;
    type F64 = float64x2_t;
    const LANES: usize = 4;
    const ALIGN: usize = 16;
    const PIPELINE: bool = true;

    ops! {
        splat(v: f32) -> float32x4_t { vdupq_n_f32(v) }
        add(a: float32x4_t, b: float32x4_t) -> float32x4_t { vaddq_f32(a, b) }
        sub(a: float32x4_t, b: float32x4_t) -> float32x4_t { vsubq_f32(a, b) }
        mul(a: float32x4_t, b: float32x4_t) -> float32x4_t { vmulq_f32(a, b) }
        mul_add(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t { vfmaq_f32(c, a, b) }
        widen(v: float32x4_t) -> (float64x2_t, float64x2_t) { (vcvt_f64_f32(vget_low_f32(v)), vcvt_high_f64_f32(v)) }
        splat_d(v: f64) -> float64x2_t { vdupq_n_f64(v) }
        add_d(a: float64x2_t, b: float64x2_t) -> float64x2_t { vaddq_f64(a, b) }
        sub_d(a: float64x2_t, b: float64x2_t) -> float64x2_t { vsubq_f64(a, b) }
        mul_d(a: float64x2_t, b: float64x2_t) -> float64x2_t { vmulq_f64(a, b) }
        mul_add_d(a: float64x2_t, b: float64x2_t, c: float64x2_t) -> float64x2_t { vfmaq_f64(c, a, b) }
        sum_d(v: float64x2_t) -> f64 { vaddvq_f64(v) }
    }

    #[inline(always)]
    fn vectorize<Op: WithIsa>(self, op: Op) -> Op::Out {
        op.run(self)
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> float32x4_t {
        let a: [f32; 4] = s[..4].try_into().expect("4 values");
        bytemuck::cast(a)
    }
    #[inline(always)]
    fn load_part(self, s: &[f32]) -> float32x4_t {
        let mut a = [0.0f32; 4];
        a[..s.len()].copy_from_slice(s);
        bytemuck::cast(a)
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: float32x4_t) {
        let a: &mut [f32; 4] = (&mut s[..4]).try_into().expect("4 values");
        *a = bytemuck::cast(v);
    }
    #[inline(always)]
    fn store_part(self, s: &mut [f32], v: float32x4_t) {
        let a: [f32; 4] = bytemuck::cast(v);
        let n = s.len();
        s.copy_from_slice(&a[..n]);
    }
    #[inline(always)]
    fn stream(self, s: &mut [f32], v: float32x4_t) {
        self.store(s, v);
    }
    #[inline(always)]
    fn fence(self) {}
    #[inline(always)]
    fn load_wide(self, s: &[f32]) -> (float64x2_t, float64x2_t) {
        self.widen(self.load(s))
    }
    #[inline(always)]
    fn load_d(self, s: &[f64]) -> float64x2_t {
        let a: [f64; 2] = s[..2].try_into().expect("2 values");
        bytemuck::cast(a)
    }
    #[inline(always)]
    fn store_d(self, s: &mut [f64], v: float64x2_t) {
        let a: &mut [f64; 2] = (&mut s[..2]).try_into().expect("2 values");
        *a = bytemuck::cast(v);
    }
    #[inline(always)]
    fn prefetch(self, _: *const f32) {}

    // half-precision loads/stores (half3): the trait's lane-by-lane defaults.
}
