//! Shared test helpers: seeded data, the layers written with candle tensor ops (the
//! reference candle differentiates itself), comparisons with stated tolerances.
#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

/// Seeded values in [-1.5, 1.5) plus `offset`, shaped `dims`, in `dtype` (a small LCG: the
/// tests need no RNG crate and give the same data on every run).
pub fn data(dims: &[usize], seed: u64, offset: f64, dtype: DType) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            offset + 3.0 * ((s >> 11) as f64 / (1u64 << 53) as f64) - 1.5
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu)?.to_dtype(dtype)
}

/// A variable with seeded values.
pub fn var(dims: &[usize], seed: u64, dtype: DType) -> Result<Var> {
    Var::from_tensor(&data(dims, seed, 0.0, dtype)?)
}

/// A `VarBuilder` over a fresh `VarMap`.
pub fn builder(dtype: DType) -> (VarMap, VarBuilder<'static>) {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, dtype, &Device::Cpu);
    (map, vb)
}

/// The variable `name` of `map`.
pub fn get_var(map: &VarMap, name: &str) -> Var {
    map.data().lock().unwrap()[name].clone()
}

/// The variable `name` of `map` as a tensor (same id: gradients are found by it).
pub fn get(map: &VarMap, name: &str) -> Tensor {
    get_var(map, name).as_tensor().clone()
}

/// Sets every floating-point variable of `map` whose name ends in `weight` or `bias` to
/// seeded values (weights around 1), so parameter gradients are not trivial.
pub fn randomize(map: &VarMap, seed: u64) -> Result<()> {
    let data_ = map.data().lock().unwrap();
    let mut names: Vec<&String> = data_.keys().collect();
    names.sort();
    for (k, name) in names.into_iter().enumerate() {
        let v = &data_[name];
        let offset = if name.ends_with("weight") {
            1.0
        } else if name.ends_with("bias") {
            0.0
        } else {
            continue;
        };
        let t = (data(v.dims(), seed + k as u64, 0.0, v.dtype())? * 0.5)?;
        v.set(&(t + offset)?)?;
    }
    Ok(())
}

/// Tolerances of a comparison: |a − b| ≤ atol + rtol·|b| element-wise.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub rtol: f64,
    pub atol: f64,
}

/// f64: the two computations differ by rounding only.
pub const F64: Tol = Tol {
    rtol: 1e-9,
    atol: 1e-10,
};
/// f32: candle's composed ops accumulate in f32, normkit in f64.
pub const F32: Tol = Tol {
    rtol: 2e-4,
    atol: 2e-5,
};

pub fn tol(dtype: DType) -> Tol {
    if dtype == DType::F64 {
        F64
    } else {
        F32
    }
}

/// Asserts `a ≈ b` element-wise.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: Tol) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let a: Vec<f64> = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f64> = b
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut worst = 0.0f64;
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        let err = (x - y).abs();
        let bound = tol.atol + tol.rtol * y.abs();
        assert!(
            err <= bound,
            "{what}: element {k}: {x} vs {y} (|diff| {err:e} > {bound:e})"
        );
        worst = worst.max(err);
    }
    assert!(a.iter().all(|v| v.is_finite()), "{what}: non-finite values");
}

/// Standardizes the rows of `x2 [R, K]` with two-pass statistics.
pub fn standardize(x2: &Tensor, eps: f64, center: bool, unbiased: bool) -> Result<Tensor> {
    let k = x2.dim(1)? as f64;
    let xc = if center {
        x2.broadcast_sub(&(x2.sum_keepdim(1)? / k)?)?
    } else {
        x2.clone()
    };
    let denom = if unbiased { k - 1.0 } else { k };
    let var = (xc.sqr()?.sum_keepdim(1)? / denom)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)
}

fn per_channel(t: &Tensor, rank: usize) -> Result<Tensor> {
    let mut s = vec![1; rank];
    s[1] = t.elem_count();
    t.reshape(s)
}

fn affine(y: Tensor, w: Option<&Tensor>, b: Option<&Tensor>, rank: usize) -> Result<Tensor> {
    let y = match w {
        Some(w) => y.broadcast_mul(&per_channel(w, rank)?)?,
        None => y,
    };
    match b {
        Some(b) => y.broadcast_add(&per_channel(b, rank)?),
        None => Ok(y),
    }
}

/// Layer norm over the last axis (RMS norm without `center`).
pub fn ref_layer_norm(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    eps: f64,
    center: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let d = *dims.last().unwrap();
    let y = standardize(&x.reshape(((), d))?, eps, center, false)?.reshape(dims)?;
    let y = match w {
        Some(w) => y.broadcast_mul(w)?,
        None => y,
    };
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Group norm of `[N, C, …]`.
pub fn ref_group_norm(
    x: &Tensor,
    groups: usize,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    eps: f64,
    unbiased: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let y = standardize(&x.reshape((dims[0] * groups, ()))?, eps, true, unbiased)?
        .reshape(dims.as_slice())?;
    affine(y, w, b, dims.len())
}

/// Batch norm of `[N, C, …]` with batch statistics.
pub fn ref_batch_norm_train(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let xt = x.transpose(0, 1)?.contiguous()?;
    let tdims = xt.dims().to_vec();
    let y = standardize(&xt.reshape((dims[1], ()))?, eps, true, false)?
        .reshape(tdims)?
        .transpose(0, 1)?;
    affine(y, w, b, dims.len())
}

/// Batch norm of `[N, C, …]` with fixed statistics.
pub fn ref_batch_norm_eval(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let r = x.rank();
    let y = x
        .broadcast_sub(&per_channel(mean, r)?)?
        .broadcast_div(&(per_channel(var, r)? + eps)?.sqrt()?)?;
    affine(y, w, b, r)
}

/// Per-channel mean and unbiased variance of `[N, C, …]` (what a running-statistics update
/// with momentum 1 stores).
pub fn channel_moments(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let c = x.dim(1)?;
    let x2 = x.transpose(0, 1)?.contiguous()?.reshape((c, ()))?;
    let k = x2.dim(1)? as f64;
    let mean = (x2.sum_keepdim(1)? / k)?;
    let var = (x2.broadcast_sub(&mean)?.sqr()?.sum_keepdim(1)? / (k - 1.0))?;
    Ok((mean.flatten_all()?, var.flatten_all()?))
}

/// Runs `ours` and `reference` on `x` and compares outputs and the gradients of
/// `Σ y·g` (g seeded) with respect to every tensor of `wrt`.
pub fn compare_grads(
    what: &str,
    x: &Tensor,
    wrt: &[(&str, &Tensor)],
    ours: impl Fn(&Tensor) -> Result<Tensor>,
    reference: impl Fn(&Tensor) -> Result<Tensor>,
    tol: Tol,
) -> Result<()> {
    let y1 = ours(x)?;
    let y2 = reference(x)?;
    assert_close(&format!("{what}: y"), &y1, &y2, tol);
    let g = data(y1.dims(), 99, 0.0, y1.dtype())?;
    let g1 = (&y1 * &g)?.sum_all()?.backward()?;
    let g2 = (&y2 * &g)?.sum_all()?.backward()?;
    for (name, t) in wrt {
        let a = g1
            .get(t)
            .unwrap_or_else(|| panic!("{what}: no gradient for {name} through normkit"));
        let b = g2
            .get(t)
            .unwrap_or_else(|| panic!("{what}: no gradient for {name} in the reference"));
        assert_close(&format!("{what}: d{name}"), a, b, tol);
    }
    Ok(())
}
