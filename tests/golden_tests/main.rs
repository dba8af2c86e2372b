//! The f64/f32 layers against references, one binary (`cargo test -p normkit --test golden`):
//!
//! * `golden`: PyTorch golden data (`tests/golden/data/*.json`) through `DynNorm`, and
//!   `#[norm]` layers bit-identical to it.
//! * `gradcheck`: central finite-difference gradient checks in f64 for every variant.

#[path = "../golden_support/mod.rs"]
mod golden_support;

mod golden;
mod gradcheck;
