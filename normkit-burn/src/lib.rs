//! # normkit-burn
//!
//! normkit's normalization layers as [burn](https://burn.dev) 0.22 modules: drop-in
//! replacements for burn-nn's `LayerNorm`, `RmsNorm`, `GroupNorm`, `BatchNorm` and
//! `InstanceNorm` (same configs, same field and record names), plus [`NormModule`], any
//! single-stage normkit spec as a module.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use normkit_burn::{BatchNormConfig, GroupNormConfig};
//!
//! let device = Device::flex().autodiff();
//! let gn = GroupNormConfig::new(2, 4).with_epsilon(1e-5).init(&device);
//! let bn = BatchNormConfig::new(4).init(&device);
//! let x = Tensor::<4>::ones([2, 4, 3, 3], &device).require_grad();
//! let y = bn.forward(gn.forward(x.clone()));
//! let grads = y.sum().backward();
//! assert_eq!(x.grad(&grads).unwrap().dims(), [2, 4, 3, 3]);
//! ```
//!
//! ## Which device takes which path
//!
//! | device | path |
//! |---|---|
//! | `Device::flex()`, `Device::flex().autodiff()`, f32/f64 | **fused**: normkit's kernels run on the tensor's memory (no copy when contiguous); under autodiff one graph node whose backward is normkit's fused backward (dx, dγ, dβ) |
//! | every other device (`Device::cpu()`, `wgpu`, `cuda`, `rocm`, `metal`, `vulkan`, remote, ...) and f16/bf16 | **composed**: the same normalization written with burn tensor ops, differentiated by burn's autodiff |
//!
//! [`path_for`] tells which; [`normalize_composed`] forces the composed path (the tests
//! compare the two on the CPU).
//!
//! The fused path is a burn backend extension, [`ops::NormkitOps`], declared with
//! `#[backend_extension(Flex, Autodiff)]`: implemented for `Flex`, and for `Autodiff<Flex, C>`
//! with a handwritten backward (`Backward<Flex, 3>`). In burn 0.22.1 the generated `Dispatch`
//! code panics for a backend that is not listed — a trait's default body does not serve the
//! unlisted devices — so [`normalize`] checks the device before dispatching and runs the
//! composed path, written against `Tensor<D>`, for every other device.
//!
//! ## Errors
//!
//! Every module has `forward` (burn's convention: it panics on invalid input, and the panic
//! message is normkit's error message) and `try_forward`, which returns normkit's
//! [`NormError`]: a wrong rank, a channel count that disagrees with γ/β or the running
//! statistics, `C` not divisible by `groups`, one value per channel in train mode. Both paths
//! report the same error ([`NormLayer::check`]). `*Config::init` panics on an invalid
//! configuration, as burn-nn's do (with normkit's message); [`NormModuleConfig::try_init`]
//! returns it.
//!
//! ## Train and eval
//!
//! As burn-nn's `BatchNorm`: train mode (batch statistics, running statistics updated) when
//! the input is on an autodiff device and the module's `training` flag is enabled;
//! `Module::valid()` switches to eval. The running variance is updated with the unbiased
//! batch variance (PyTorch's rule; burn-nn 0.22.1 uses the biased one).
//!
//! ## PyTorch checkpoints
//!
//! Parameters are named as in burn-nn (`gamma`, `beta`, `running_mean`, `running_var`).
//! burn-store's `PyTorchToBurnAdapter` maps PyTorch's `weight`/`bias` to `gamma`/`beta` for
//! modules whose type is named `BatchNorm`, `LayerNorm`, `GroupNorm` or `RmsNorm`, which
//! covers these layers; `InstanceNorm` needs a key remapping
//! (`.with_key_remapping(r"^inorm\.weight$", "inorm.gamma")`, tests/store.rs), and PyTorch's
//! `num_batches_tracked` is reported unused.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod composed;
mod dynamic;
mod function;
mod layer;
mod modules;
pub mod ops;
mod spare;

pub use dynamic::{NormModule, NormModuleConfig};
pub use function::{normalize, normalize_composed, path_for, NormTensors, Normalized, Path};
pub use layer::NormLayer;
pub use modules::{
    BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig,
    LayerNorm, LayerNormConfig, RmsNorm, RmsNormConfig,
};
pub use normkit::{Mode, NormError};
