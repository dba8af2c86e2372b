//! Generated layers and `DynNorm` through their API, one binary:
//!
//! * `layer_trait`, `layer_trait_grads`: `NormLayer`, code generic over both kinds of layer.
//! * `running_stats`: running-statistics updates against values computed by hand.
//! * `mono_path`: the monomorphized eval paths, bit for bit the generic path's.
//! * `sync`: synchronized batch statistics over the members of a `ThreadGroup`.
//! * `state_dict`: PyTorch state dicts (safetensors) load and save.
//! * `try_new`: the generated constructor with absurd sizes.
//! * `errors`: the run-time error catalogue.

mod errors;
mod layer_trait;
mod layer_trait_grads;
mod mono_path;
mod running_stats;
mod state_dict;
mod sync;
mod try_new;
