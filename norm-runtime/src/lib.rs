//! `norm-runtime`: the kernels, layer state types, errors and the dynamic layer behind
//! normkit's `#[norm]` layers. Use it through the `normkit` crate.
//!
//! The pipeline: a validated [`norm_spec::Spec`] and an input shape make a plan (the
//! canonical reduction pattern); the kernels compute per-group moments, normalize (with the
//! affine parameters folded in where they allow it), and run the fused backward passes.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod chain;
mod check;
mod collective;
pub mod cpu;
mod dynamic;
mod error;
mod float;
mod instances;
#[doc(hidden)]
pub mod kernels;
mod layer;
mod masked;
#[cfg(feature = "mpi")]
mod mpi;
mod norm_layer;
mod path;
mod plan;
mod scratch;
#[cfg(feature = "serde")]
mod serde_impls;
mod sizes;
mod stage;
mod state;
pub mod state_dict;
mod stats;
mod threads;
mod types;
mod variants;
mod widen;

#[cfg(feature = "mpi")]
pub use crate::mpi::MpiCollective;
pub use collective::{Collective, Solo};
pub use dynamic::{DynNorm, NormSpec, SpecError, SpecIssue, StageParams};
pub use error::NormError;
pub use float::Float;
pub use kernels::alloc;
pub use kernels::simd;
pub use norm_layer::{External, NormLayer};
pub use state_dict::StateDict;
pub use state_dict::{StageTensors, StageTensorsMut};
pub use threads::{ThreadGroup, ThreadMember};
pub use types::{ChainGrads, Grads, Mode, Moments, Saved, StageGrads};

/// Items used by the code `#[norm]` generates. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::collective::Collective;
    pub use crate::instances::ROOTS;
    pub use crate::layer::{backward_into, forward_into, stats, BackwardArgs};
    pub use crate::masked::forward_masked_into;
    pub use crate::norm_layer::{
        call_mismatch, fix_rank, fix_rank_mut, fix_rank_owned, single_grads, Mismatch,
    };
    pub use crate::norm_layer::{check_grads_dx, put_single, take_chain, take_single};
    pub use crate::path::{
        backward_into as backward_path, forward_into as forward_path, Generic, Mono, Path,
    };
    pub use crate::sizes::layer_array;
    pub use crate::state::{LayerInfo, Running, StageState};
    pub use crate::state_dict::{
        load_stages, save_stages, StageTensors, StageTensorsMut, StateDict,
    };
    pub use ndarray;
    pub use norm_spec as spec;
}
