//! The post-2017 variants against float64 PyTorch autograd references of the papers'
//! formulas (`tests/golden/post2017_a.py`, `post2017_b.py`, `switchable.py`), through
//! `#[norm]` layers and `DynNorm`, one binary:
//!
//! * `post2017_a`: `statistic = "sum"` (L2 norm), Filter Response Normalization + TLU, Ghost
//!   Batch Norm, Batch Renormalization.
//! * `post2017_b`: masked statistics (`mask = "N,T"`).
//! * `switchable`: Switchable Normalization (`axes = "H,W" | "C,H,W" | "N,H,W"`).

mod support;

mod post2017_a;
mod post2017_b;
mod switchable;
