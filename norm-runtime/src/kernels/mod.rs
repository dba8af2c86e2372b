//! The kernels: SIMD line kernels (`lines`), runtime CPU dispatch ([`simd`]) and the
//! parallel executor over a plan's units (`exec`). Accumulation is in `f64` (the backward
//! pass first sums a handful of terms in the element type, see `reduce`).
//!
//! The only `unsafe` of the runtime lives here, each block with its `SAFETY` argument.
#![allow(unsafe_code)]

pub mod alloc;
pub(crate) mod cells;
pub mod convert;
pub mod elem;
pub(crate) mod ew;
pub(crate) mod exec;
mod half;
pub mod isa;
pub(crate) mod lines;
pub mod reduce;
pub mod simd;

/// The coefficients (m, a, b) in the element type of v = (x − μ)·a + b, with m = μ rounded
/// and the rounding remainder folded into b, so x − m of nearby values is exact.
#[inline]
pub(crate) fn coef<T: crate::Float>(mean: f64, a: f64, b: f64) -> (T, T, T) {
    let m = T::from_acc(mean);
    (m, T::from_acc(a), T::from_acc(b - (mean - m.to_acc()) * a))
}
