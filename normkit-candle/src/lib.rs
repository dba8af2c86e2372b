//! # normkit-candle
//!
//! normkit's normalization layers inside [candle](https://github.com/huggingface/candle):
//! differentiable (candle's autodiff gets the input and parameter gradients from normkit's
//! fused backward), drop-in (candle-nn's constructors and module traits), with PyTorch's
//! parameter names.
//!
//! ```
//! use candle_core::{DType, Device, Module, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//!
//! let map = VarMap::new();
//! let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
//! let ln = normkit_candle::layer_norm(64, 1e-5, vb.pp("ln"))?;
//! let bn = normkit_candle::batch_norm(8, 1e-5, vb.pp("bn"))?;
//! let x = Tensor::randn(0f32, 1., (16, 64), &Device::Cpu)?;
//! let loss = ln.forward(&x)?.sqr()?.sum_all()?;
//! let grads = loss.backward()?; // gradients through normkit's fused backward
//! let w = map.data().lock().unwrap()["ln.weight"].clone();
//! assert!(grads.get(&w).is_some());
//! let y = bn.forward_t(&Tensor::randn(0f32, 1., (4, 8, 5, 5), &Device::Cpu)?, true)?;
//! assert_eq!(y.dims(), &[4, 8, 5, 5]);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! - [`LayerNorm`], [`RmsNorm`], [`GroupNorm`], [`BatchNorm`], [`InstanceNorm`] with the
//!   constructors [`layer_norm`], [`rms_norm`], [`group_norm`], [`batch_norm`],
//!   [`instance_norm`]: `candle_nn::Module` (`ModuleT` for batch norm), parameters
//!   `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked` in the
//!   `VarBuilder`, so checkpoints of candle-nn (and PyTorch) load.
//! - [`NormModule`]: any layer — a run-time spec ([`SpecLayer`], [`normkit::DynNorm`]) or
//!   your own `#[norm]` declaration (every [`normkit::NormLayer`]) — as a candle module,
//!   external affine (AdaIN) and chains (Batch-Channel Norm) included.
//!
//! ## How it runs
//!
//! Each call is one candle custom op (`CustomOp3`): `cpu_fwd` reads the input's CPU storage
//! as an ndarray view (no copy when contiguous, one copy otherwise) and runs normkit's
//! forward in the tensor's dtype (f32 or f64, chosen at run time); `bwd` runs normkit's
//! fused backward with the statistics the forward saved, returning dx and the packed
//! parameter gradients to candle's `GradStore`. On a CUDA or Metal device the drop-in
//! modules run the same layer written with candle's tensor ops ([`composed`]);
//! [`NormModule`] returns an error there.
//!
//! Errors are `candle_core::Error`s carrying normkit's message (the layer, the expected and
//! the actual shape); nothing panics on user input.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod composed;
mod error;
mod layer;
mod module;
mod nn;
mod op;

pub use layer::{stages_of, CandleLayer, PickElem, SpecLayer, StageMut};
pub use module::NormModule;
pub use nn::{
    batch_norm, group_norm, instance_norm, layer_norm, rms_norm, BatchNorm, GroupNorm,
    InstanceNorm, InstanceNormConfig, LayerNorm, RmsNorm,
};
