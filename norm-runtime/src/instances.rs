//! The runtime compiled once per element type, here, instead of once per crate that uses it.
//!
//! Everything below a layer call is generic over the element type `T` (and was over the
//! rank `D`), so a crate that declares a layer would instantiate the whole runtime (plans,
//! stages, kernels at every ISA level) in its own compilation: every example, test binary
//! and user crate paid the runtime's code generation again (15-30 s of CPU each at the test
//! profile's opt-level 1, about half of `cargo test --workspace` on two cores).
//!
//! rustc links a dependent to an instance its dependency already compiled instead of
//! compiling it again (shared generics). So the public entry points erase the rank (views
//! become `IxDyn`, `crate::path::forward_into` and the others, `#[inline]` wrappers), and
//! [`ROOTS`] makes this crate compile, for `f32`, `f64`, `bf16` and `f16`, the functions those
//! wrappers and [`DynNorm`] reach: the generic and every monomorphized path (through
//! `DynPath`, which names them all), the masked pass, `stats`, the state-dict functions and
//! `DynNorm`'s own methods. A generated layer then compiles its thin wrappers only. The code
//! that runs is the same either way (the same functions at the same opt-level), so this
//! changes build time, not results or speed.

use half::{bf16, f16};
use ndarray::IxDyn;

use crate::layer;
use crate::masked;
use crate::norm_layer::NormLayer;
use crate::path::DynPath;
use crate::state_dict::{load_stages, save_stages};
use crate::{DynNorm, Float};

/// The addresses of the entry points of element type `T` (taking them is what makes the
/// compiler instantiate them in this crate; the values are never used).
fn roots<T: Float>() -> [*const (); 32] {
    [
        DynPath::forward_into::<T, IxDyn> as *const (),
        DynPath::backward_into::<T, IxDyn> as *const (),
        layer::forward_into::<T, IxDyn> as *const (),
        layer::backward_into::<T, IxDyn> as *const (),
        layer::stats_dyn::<T> as *const (),
        masked::forward_masked_dyn::<T> as *const (),
        save_stages::<T> as *const (),
        load_stages::<T> as *const (),
        DynNorm::<T>::new as *const (),
        DynNorm::<T>::forward as *const (),
        DynNorm::<T>::forward_train as *const (),
        DynNorm::<T>::forward_eval as *const (),
        DynNorm::<T>::forward_external as *const (),
        DynNorm::<T>::forward_train_into as *const (),
        DynNorm::<T>::forward_eval_into as *const (),
        DynNorm::<T>::backward as *const (),
        DynNorm::<T>::backward_into as *const (),
        DynNorm::<T>::backward_chain as *const (),
        DynNorm::<T>::forward_sync as *const (),
        DynNorm::<T>::backward_sync as *const (),
        DynNorm::<T>::stats as *const (),
        DynNorm::<T>::forward_masked as *const (),
        DynNorm::<T>::forward_masked_into as *const (),
        DynNorm::<T>::forward_masked_eval as *const (),
        DynNorm::<T>::save_into as *const (),
        DynNorm::<T>::state_dict as *const (),
        DynNorm::<T>::load_state_dict as *const (),
        <DynNorm<T> as NormLayer>::forward_layer_into as *const (),
        <DynNorm<T> as NormLayer>::backward_layer_into as *const (),
        <DynNorm<T> as NormLayer>::backward_layer_into_grads as *const (),
        <DynNorm<T> as NormLayer>::forward_layer as *const (),
        <DynNorm<T> as NormLayer>::backward_layer as *const (),
    ]
}

/// The roots of every element type. Public (hidden) so that the compiler keeps them, and
/// with them the instances dependents link to; nothing calls them.
#[doc(hidden)]
pub static ROOTS: [fn() -> [*const (); 32]; 4] =
    [roots::<f32>, roots::<f64>, roots::<bf16>, roots::<f16>];
