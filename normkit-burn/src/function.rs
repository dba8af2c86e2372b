//! [`normalize`]: one normkit layer call on burn tensors, on the fused or the composed path.

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::{DType, Device, Tensor};
use normkit::{Mode, NormError};

use crate::composed;
use crate::layer::NormLayer;
use crate::ops::{NormCall, NormkitOps};

/// Which implementation a call takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// normkit's kernels on the tensor's memory, one autodiff node with normkit's fused
    /// backward: the Flex backend (`Device::flex()`, with or without `.autodiff()`), f32/f64.
    Fused,
    /// burn tensor operations (mean, subtract, square, sqrt, ...), differentiated by burn's
    /// autodiff: every other device (CubeCL CPU, wgpu, CUDA, ROCm, Metal, Vulkan, remote, ...)
    /// and other float types (f16, bf16).
    Composed,
}

/// The path a call on `device` with elements of `dtype` takes (see [`Path`]).
pub fn path_for(device: &Device, dtype: DType) -> Path {
    let inner = match device.as_dispatch() {
        DispatchDevice::Autodiff(ad) => &**ad,
        other => other,
    };
    let flex = matches!(inner, DispatchDevice::Flex(_));
    if flex && matches!(dtype, DType::F32 | DType::F64) {
        Path::Fused
    } else {
        Path::Composed
    }
}

/// The tensors of a layer call besides the input: parameters and running statistics, each
/// flattened to rank 1 in the spec's parameter-axis order ([`NormLayer::param_shape`],
/// [`NormLayer::running_shape`]). `None` where the layer has none.
#[derive(Clone, Debug, Default)]
pub struct NormTensors {
    /// γ.
    pub gamma: Option<Tensor<1>>,
    /// β.
    pub beta: Option<Tensor<1>>,
    /// Running mean and running variance.
    pub running: Option<(Tensor<1>, Tensor<1>)>,
    /// Batches seen so far (used by `momentum = "cumulative"`).
    pub num_batches_tracked: u64,
}

/// The result of [`normalize`].
#[derive(Clone, Debug)]
pub struct Normalized<const D: usize> {
    /// The normalized tensor, on the input's device, differentiable w.r.t. the input, γ and β.
    pub output: Tensor<D>,
    /// Train mode with running statistics: the updated running mean and variance (detached).
    pub running: Option<(Tensor<1>, Tensor<1>)>,
}

/// Normalizes `x` with `layer` in `mode`, on the path [`path_for`] picks for its device.
///
/// Errors are normkit's ([`NormError`]): a wrong rank, a channel count that disagrees with
/// γ/β or the running statistics, `C` not divisible by `groups`, too few values per group
/// in train mode. Nothing is computed and no state changes on error.
pub fn normalize<const D: usize>(
    x: Tensor<D>,
    tensors: NormTensors,
    layer: &NormLayer,
    mode: Mode,
) -> Result<Normalized<D>, NormError> {
    layer.check(&x.dims(), mode)?;
    let device = x.device();
    // Parameters and statistics follow the input's device (as burn-nn's BatchNorm does).
    let on_device = |t: Tensor<1>| t.to_device(&device);
    let gamma = tensors.gamma.map(on_device);
    let beta = tensors.beta.map(on_device);
    let running = tensors.running.map(|(m, v)| (on_device(m), on_device(v)));
    match path_for(&device, x.dtype()) {
        Path::Composed => {
            let (output, running) = composed::forward(
                x,
                gamma,
                beta,
                running,
                layer,
                mode,
                tensors.num_batches_tracked,
            );
            Ok(Normalized { output, running })
        }
        Path::Fused => {
            let dtype = x.dtype();
            let empty = || Tensor::<1>::zeros([0], &device).cast(dtype);
            let (rm, rv) = running.unwrap_or_else(|| (empty(), empty()));
            let call = NormCall {
                layer: layer.clone(),
                mode,
                num_batches_tracked: tensors.num_batches_tracked,
            };
            let (y, rm, rv, err) = <Dispatch as NormkitOps>::normkit_norm(
                x.into_dispatch(),
                gamma.unwrap_or_else(empty).into_dispatch(),
                beta.unwrap_or_else(empty).into_dispatch(),
                rm.into_dispatch(),
                rv.into_dispatch(),
                call,
            );
            if let Some(e) = err {
                return Err(e);
            }
            let running = match (rm, rv) {
                (Some(m), Some(v)) => Some((Tensor::from_dispatch(m), Tensor::from_dispatch(v))),
                _ => None,
            };
            Ok(Normalized {
                output: Tensor::from_dispatch(y),
                running,
            })
        }
    }
}

/// [`normalize`] forced onto the composed path, whatever the device (for tests and
/// comparisons).
pub fn normalize_composed<const D: usize>(
    x: Tensor<D>,
    tensors: NormTensors,
    layer: &NormLayer,
    mode: Mode,
) -> Result<Normalized<D>, NormError> {
    layer.check(&x.dims(), mode)?;
    let (output, running) = composed::forward(
        x,
        tensors.gamma,
        tensors.beta,
        tensors.running,
        layer,
        mode,
        tensors.num_batches_tracked,
    );
    Ok(Normalized { output, running })
}
