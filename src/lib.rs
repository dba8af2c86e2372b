//! # normkit
//!
//! Every normalization layer of deep learning — Batch Norm, Layer Norm, Instance Norm,
//! Group Norm, Weight Standardization, Batch-Channel Norm, AdaIN, RMSNorm and any variant a
//! researcher can think of — as **one declaration**, checked at compile time, with
//! specialized forward and backward passes over [`ndarray`].
//!
//! ```
//! use normkit::prelude::*;
//! use normkit::ndarray::Array4;
//!
//! /// Group Norm with 2 groups and per-channel γ/β.
//! #[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
//! pub struct GroupNorm2;
//!
//! let mut gn = GroupNorm2::<f64>::new(4); // C = 4
//! let x = Array4::from_shape_fn((2, 4, 3, 3), |(n, c, h, w)| (n * 7 + c * 5 + h * 3 + w) as f64);
//! let (y, saved) = gn.forward(x.view(), Mode::Train)?;
//! let grads = gn.backward(x.view(), y.view(), &saved)?;
//! assert_eq!(grads.dgamma.unwrap().shape(), &[4]);
//! # Ok::<(), NormError>(())
//! ```
//!
//! A wrong configuration is a compile error that points at the offending token:
//!
//! ```compile_fail
//! use normkit::prelude::*;
//! #[norm(input = "N,C=48,H,W", axes = "C,H,W", groups = 32)]
//! struct Bad;
//! ```
//!
//! The same configuration language works at run time through [`NormSpec`] and [`DynNorm`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The `mpi` crate (rsmpi) that [`MpiCollective`] is built on (feature `mpi`): initialize
/// MPI with `normkit::mpi::initialize()` without depending on it yourself.
#[cfg(feature = "mpi")]
pub use mpi;
pub use ndarray;
pub use norm_macros::norm;
/// What the CPU is and the kernel choices made for it (see [`cpu_report`]).
pub use norm_runtime::cpu;
/// The SIMD level in use and how to cap it (for tests and benchmarks).
pub use norm_runtime::simd;
/// PyTorch state dicts: [`StateDict`] (named tensors read and written as safetensors), its
/// [`Tensor`](state_dict::Tensor)s and [`Dtype`](state_dict::Dtype)s, and the `bf16`/`f16`
/// element types of half-precision tensors.
pub use norm_runtime::state_dict;

/// What normkit chose on this machine and why: the CPU (vendor, family, model), its caches,
/// the SIMD level, the measured table entry or the default rule, and the size thresholds.
///
/// ```
/// let report = normkit::cpu_report();
/// assert!(report.contains("simd:"));
/// ```
pub fn cpu_report() -> String {
    norm_runtime::cpu::report()
}

/// The half-precision element types (from the `half` crate): `DynNorm::<bf16>`,
/// `MyLayer::<f16>::new(..)` store everything in 16 bits and compute in f32/f64 (see
/// [`Float`]).
pub use norm_runtime::state_dict::{bf16, f16};
/// Synchronized batch statistics across MPI ranks (feature `mpi`).
#[cfg(feature = "mpi")]
pub use norm_runtime::MpiCollective;
pub use norm_runtime::StateDict;
pub use norm_runtime::{alloc, External, NormLayer, StageTensors, StageTensorsMut};
pub use norm_runtime::{
    ChainGrads, Collective, DynNorm, Float, Grads, Mode, Moments, NormError, NormSpec, Saved, Solo,
    SpecError, SpecIssue, StageGrads, StageParams, ThreadGroup, ThreadMember,
};
/// The configuration language's validated form and derived shapes (`norm-spec`).
pub use norm_spec as spec;

/// The names most programs need: `use normkit::prelude::*;`.
pub mod prelude {
    pub use crate::{
        ndarray, norm, DynNorm, Float, Grads, Mode, Moments, NormError, NormSpec, Saved, StageGrads,
    };
}

/// Items used by the code `#[norm]` generates. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use norm_runtime::__private::*;
    pub use norm_runtime::{ChainGrads, External, NormLayer, StageTensors, StageTensorsMut};
    pub use norm_runtime::{Collective, Float, Grads, Mode, Moments, NormError, Saved, StageGrads};
}
