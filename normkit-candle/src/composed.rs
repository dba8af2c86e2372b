//! The layers written with candle's own tensor ops, differentiated by candle's autodiff:
//! what the drop-in modules run on a non-CPU device (CUDA, Metal), where normkit's kernels
//! do not run, and a reference for tests.
//!
//! Statistics in the input's dtype (f16/bf16 are widened to f32, as candle-nn does);
//! the variance is computed after subtracting the mean (not `E[x²] − E[x]²`).

use candle_core::{DType, Result, Tensor, Var, D};

fn widen(x: &Tensor) -> Result<Tensor> {
    match x.dtype() {
        DType::F16 | DType::BF16 => x.to_dtype(DType::F32),
        _ => Ok(x.clone()),
    }
}

/// Standardizes each row of a 2-D tensor; returns x̂ and the rows' mean and biased
/// variance (the mean square when `center` is false), both shaped `[rows, 1]`.
pub fn standardize_rows(x: &Tensor, eps: f64, center: bool) -> Result<(Tensor, Tensor, Tensor)> {
    let k = x.dim(1)? as f64;
    let (xc, mean) = if center {
        let mean = (x.sum_keepdim(1)? / k)?;
        (x.broadcast_sub(&mean)?, mean)
    } else {
        (x.clone(), x.narrow(1, 0, 1)?.zeros_like()?)
    };
    let var = (xc.sqr()?.sum_keepdim(1)? / k)?;
    let xhat = xc.broadcast_div(&(&var + eps)?.sqrt()?)?;
    Ok((xhat, mean, var))
}

/// `y * weight + bias` with the parameters shaped `shape` for broadcasting.
fn affine(
    y: Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    shape: &[usize],
) -> Result<Tensor> {
    let y = match weight {
        Some(w) => y.broadcast_mul(&w.reshape(shape)?)?,
        None => y,
    };
    match bias {
        Some(b) => y.broadcast_add(&b.reshape(shape)?),
        None => Ok(y),
    }
}

/// Layer norm over the last axis (RMS norm with `remove_mean = false`).
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    remove_mean: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let d = x.dim(D::Minus1)?;
    let x2 = widen(x)?.reshape(((), d))?;
    let (y, _, _) = standardize_rows(&x2, eps, remove_mean)?;
    let y = y.to_dtype(x.dtype())?.reshape(dims)?;
    affine(y, weight, bias, &[d])
}

/// The shape `[1, C, 1, …]` of per-channel parameters for an input of rank `rank`.
fn channel_shape(rank: usize, c: usize) -> Vec<usize> {
    let mut s = vec![1; rank];
    s[1] = c;
    s
}

/// Group norm of `x[N, C, …]` with `groups` groups.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.len() < 2 {
        candle_core::bail!("group norm: expected an input [N, C, …], got {dims:?}")
    }
    let n = dims[0];
    let x2 = widen(x)?.reshape((n * groups, ()))?;
    let (y, _, _) = standardize_rows(&x2, eps, true)?;
    let y = y.to_dtype(x.dtype())?.reshape(dims.as_slice())?;
    affine(y, weight, bias, &channel_shape(dims.len(), dims[1]))
}

/// Instance norm of `x[N, C, …]` (statistics per sample and channel).
pub fn instance_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.len() < 2 {
        candle_core::bail!("instance norm: expected an input [N, C, …], got {dims:?}")
    }
    group_norm(x, dims[1], weight, bias, eps)
}

/// Batch norm of `x[N, C, …]` in train mode: batch statistics, and the running statistics
/// updated with `momentum` (unbiased variance, as PyTorch).
pub fn batch_norm_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running: Option<(&Var, &Var)>,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.len() < 2 {
        candle_core::bail!("batch norm: expected an input [N, C, …], got {dims:?}")
    }
    let c = dims[1];
    let xt = widen(x)?.transpose(0, 1)?;
    let tdims = xt.dims().to_vec();
    let x2 = xt.reshape((c, ()))?;
    let (y, mean, var) = standardize_rows(&x2, eps, true)?;
    if let Some((rm, rv)) = running {
        let k = x2.dim(1)? as f64;
        let unbiased = if k > 1.0 {
            (&var * (k / (k - 1.0)))?
        } else {
            var.clone()
        };
        let dtype = rm.dtype();
        let m = ((rm.as_detached_tensor() * (1.0 - momentum))?
            + (mean.detach().flatten_all()?.to_dtype(dtype)? * momentum)?)?;
        let v = ((rv.as_detached_tensor() * (1.0 - momentum))?
            + (unbiased.detach().flatten_all()?.to_dtype(dtype)? * momentum)?)?;
        rm.set(&m)?;
        rv.set(&v)?;
    }
    let y = y.reshape(tdims)?.transpose(0, 1)?.to_dtype(x.dtype())?;
    affine(y, weight, bias, &channel_shape(dims.len(), c))
}

/// Batch norm of `x[N, C, …]` in eval mode: the running statistics.
pub fn batch_norm_eval(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.len() < 2 {
        candle_core::bail!("batch norm: expected an input [N, C, …], got {dims:?}")
    }
    let shape = channel_shape(dims.len(), dims[1]);
    let m = running_mean.detach().reshape(shape.as_slice())?;
    let s = (running_var.detach().reshape(shape.as_slice())? + eps)?.sqrt()?;
    let y = x.broadcast_sub(&m)?.broadcast_div(&s)?;
    affine(y, weight, bias, &shape)
}
