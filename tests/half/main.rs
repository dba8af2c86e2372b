//! Half-precision layers (`bf16`, `f16`), one binary:
//!
//! * `dtypes`: golden data from PyTorch in bf16 and f16, and every call path of a half
//!   layer against the f32 layer, rounded.
//! * `chain`: the fused half-precision chain (`norm-runtime/src/widen/chain.rs`).
//! * `tiled`: the tiled half-precision path (`norm-runtime/src/widen/tiled.rs`) and rows
//!   with parameters (`widen/rows.rs`) against a float64 reference.
//!
//! `chain` and `tiled` run at every SIMD level (`simd::set_cap`, global to the process) under
//! `support`'s lock; the `dtypes` tests that compare two results hold the level fixed.

#[path = "../golden_support/mod.rs"]
#[allow(dead_code)]
mod golden_support;
mod support;

mod chain;
mod dtypes;
mod tiled;
