//! The portable level: two `f32` lanes (one `f64`), plain arithmetic the compiler may
//! vectorize for the target's baseline. No fused multiply-add (the baseline may lack it).

use super::{Isa, WithIsa};

/// The portable level (always available).
#[derive(Clone, Copy, Debug)]
pub struct Scalar;

impl Isa for Scalar {
    type F32 = [f32; 2];
    type F64 = f64;
    const LANES: usize = 2;
    const ALIGN: usize = 8;
    const PIPELINE: bool = false;

    /// A function of its own, as the other levels' trampolines (see `avx512.rs`).
    #[inline(never)]
    fn vectorize<Op: WithIsa>(self, op: Op) -> Op::Out {
        op.run(self)
    }
    #[inline(always)]
    fn splat(self, v: f32) -> [f32; 2] {
        [v; 2]
    }
    #[inline(always)]
    fn add(self, a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
        [a[0] + b[0], a[1] + b[1]]
    }
    #[inline(always)]
    fn sub(self, a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
        [a[0] - b[0], a[1] - b[1]]
    }
    #[inline(always)]
    fn mul(self, a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
        [a[0] * b[0], a[1] * b[1]]
    }
    #[inline(always)]
    fn mul_add(self, a: [f32; 2], b: [f32; 2], c: [f32; 2]) -> [f32; 2] {
        self.add(self.mul(a, b), c)
    }
    #[inline(always)]
    fn fma(self, a: [f32; 2], b: [f32; 2], c: [f32; 2]) -> [f32; 2] {
        [a[0].mul_add(b[0], c[0]), a[1].mul_add(b[1], c[1])]
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> [f32; 2] {
        [s[0], s[1]]
    }
    #[inline(always)]
    fn load_part(self, s: &[f32]) -> [f32; 2] {
        let mut v = [0.0; 2];
        v[..s.len()].copy_from_slice(s);
        v
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: [f32; 2]) {
        s[..2].copy_from_slice(&v);
    }
    #[inline(always)]
    fn store_part(self, s: &mut [f32], v: [f32; 2]) {
        let n = s.len();
        s.copy_from_slice(&v[..n]);
    }
    #[inline(always)]
    fn stream(self, s: &mut [f32], v: [f32; 2]) {
        self.store(s, v);
    }
    #[inline(always)]
    fn fence(self) {}
    #[inline(always)]
    fn load_wide(self, s: &[f32]) -> (f64, f64) {
        (f64::from(s[0]), f64::from(s[1]))
    }
    #[inline(always)]
    fn widen(self, v: [f32; 2]) -> (f64, f64) {
        (f64::from(v[0]), f64::from(v[1]))
    }
    #[inline(always)]
    fn splat_d(self, v: f64) -> f64 {
        v
    }
    #[inline(always)]
    fn add_d(self, a: f64, b: f64) -> f64 {
        a + b
    }
    #[inline(always)]
    fn sub_d(self, a: f64, b: f64) -> f64 {
        a - b
    }
    #[inline(always)]
    fn mul_d(self, a: f64, b: f64) -> f64 {
        a * b
    }
    #[inline(always)]
    fn mul_add_d(self, a: f64, b: f64, c: f64) -> f64 {
        a * b + c
    }
    #[inline(always)]
    fn load_d(self, s: &[f64]) -> f64 {
        s[0]
    }
    #[inline(always)]
    fn store_d(self, s: &mut [f64], v: f64) {
        s[0] = v;
    }
    #[inline(always)]
    fn sum_d(self, v: f64) -> f64 {
        v
    }
    #[inline(always)]
    fn prefetch(self, _: *const f32) {}

    // half-precision loads/stores (half3): the trait's lane-by-lane defaults.
}
