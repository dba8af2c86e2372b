//! Batch Normalization: statistics per channel over the batch and every spatial position,
//! running statistics for inference, in every layout PyTorch has (`BatchNorm1d` on `[N,C]`
//! and `[N,C,L]`, `BatchNorm2d`, `BatchNorm3d`) plus channels-last `[N,H,W,C]`.
//!
//! Run: `cargo run --release --example batch_norm`

use normkit::ndarray::{ArrayD, Dimension, Ix2, Ix3, Ix4, Ix5, IxDyn, ShapeError};
use normkit::prelude::*;

/// `BatchNorm1d` on `[N, C]`.
#[norm(input = "N,C", axes = "N", affine, running_stats)]
pub struct BatchNorm1d;

/// `BatchNorm1d` on sequences `[N, C, L]`.
#[norm(input = "N,C,L", axes = "N,L", affine, running_stats)]
pub struct BatchNorm1dSeq;

/// `BatchNorm2d` on images `[N, C, H, W]`.
#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
pub struct BatchNorm2d;

/// `BatchNorm3d` on volumes `[N, C, D, H, W]`.
#[norm(input = "N,C,D,H,W", axes = "N,D,H,W", affine, running_stats)]
pub struct BatchNorm3d;

/// `BatchNorm2d` on channels-last images `[N, H, W, C]`.
#[norm(input = "N,H,W,C", axes = "N,H,W", affine, running_stats)]
pub struct BatchNorm2dNhwc;

/// The true per-channel mean and standard deviation of the synthetic data.
const MEAN: [f64; 3] = [2.0, -1.0, 5.0];
const STD: [f64; 3] = [0.5, 2.0, 1.0];
const STEPS: usize = 50;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Lcg(7);
    println!("BatchNorm2d: #[norm(input = \"N,C,H,W\", axes = \"N,H,W\", affine, running_stats)]");
    let var = STD.map(|s| s * s);
    println!("data: [N,C,H,W] = [8,3,4,4], true channel mean {MEAN:?}, var {var:?}");
    let mut bn = BatchNorm2d::new(3);
    let x = batch(&mut rng, &[8, 3, 4, 4], 1).into_dimensionality::<Ix4>()?;
    println!(
        "before       mean/std per channel: {}",
        fmt(&per_channel(&x, 1)?)
    );
    let (y, saved) = bn.forward(x.view(), Mode::Train)?;
    println!(
        "after (train)                    : {}",
        fmt(&per_channel(&y, 1)?)
    );
    let dy = noise(&mut rng, &[8, 3, 4, 4]).into_dimensionality::<Ix4>()?;
    let grads = bn.backward(x.view(), dy.view(), &saved)?;
    println!(
        "backward: dgamma {} dbeta {} (dx has shape {:?})",
        fmt1(grads.dgamma.as_ref()),
        fmt1(grads.dbeta.as_ref()),
        grads.dx.shape()
    );

    // Eval mode with fresh running statistics (mean 0, var 1) leaves the data unnormalized.
    let fresh = batch(&mut rng, &[8, 3, 4, 4], 1).into_dimensionality::<Ix4>()?;
    let gap0 = max_diff(
        &bn.forward_eval(fresh.view())?,
        &bn.forward(fresh.view(), Mode::Train)?.0,
    );
    println!("running stats converge to the data's mean and variance (momentum 0.1):");
    while bn.num_batches_tracked < STEPS as u64 {
        let x = batch(&mut rng, &[8, 3, 4, 4], 1).into_dimensionality::<Ix4>()?;
        bn.forward_train(x.view())?;
        let step = bn.num_batches_tracked as usize;
        if [3, 5, 10, 20, STEPS].contains(&step) {
            println!(
                "  step {step:>2}: running_mean {}  running_var {}",
                fmt1(Some(&bn.running_mean.clone().into_dyn())),
                fmt1(Some(&bn.running_var.clone().into_dyn()))
            );
        }
    }
    let fresh = batch(&mut rng, &[8, 3, 4, 4], 1).into_dimensionality::<Ix4>()?;
    let y_eval = bn.forward_eval(fresh.view())?;
    let gap = max_diff(&y_eval, &bn.forward(fresh.view(), Mode::Train)?.0);
    println!("eval vs train output on a new batch: max |Δ| {gap0:.3} after 1 step, {gap:.3} after {STEPS}");

    println!(
        "other layouts after {STEPS} train steps (output mean/std per channel | running_mean):"
    );
    macro_rules! layout {
        ($label:literal, $layer:ty, $shape:expr, $c:expr, $ix:ty) => {{
            let mut layer = <$layer>::new(3);
            let mut y = ArrayD::zeros(IxDyn(&$shape)).into_dimensionality::<$ix>()?;
            for _ in 0..STEPS {
                let x = batch(&mut rng, &$shape, $c).into_dimensionality::<$ix>()?;
                y = layer.forward_train(x.view())?.0;
            }
            println!(
                "  {:<24} {} | {}",
                $label,
                fmt(&per_channel(&y, $c)?),
                fmt1(Some(&layer.running_mean.clone().into_dyn()))
            );
        }};
    }
    layout!("[N,C]       [64,3]", BatchNorm1d, [64, 3], 1, Ix2);
    layout!("[N,C,L]     [8,3,10]", BatchNorm1dSeq, [8, 3, 10], 1, Ix3);
    layout!(
        "[N,C,D,H,W] [2,3,3,4,4]",
        BatchNorm3d,
        [2, 3, 3, 4, 4],
        1,
        Ix5
    );
    layout!(
        "[N,H,W,C]   [8,4,4,3]",
        BatchNorm2dNhwc,
        [8, 4, 4, 3],
        3,
        Ix4
    );
    println!("=> train: every channel is standardized over the batch; eval: the running");
    println!("   estimates of the data's mean and variance are used instead (no batch dependence)");
    Ok(())
}

/// A tiny deterministic generator: a 64-bit LCG.
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Approximately standard normal (Irwin–Hall with 12 terms).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

/// A batch whose channel (axis `c_axis`) `c` has mean `MEAN[c]` and std `STD[c]`.
fn batch(rng: &mut Lcg, shape: &[usize], c_axis: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |i| {
        let c = i[c_axis];
        (MEAN[c] + STD[c] * rng.normal()) as f32
    })
}

/// Zero-mean noise (an upstream gradient).
fn noise(rng: &mut Lcg, shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.normal() as f32)
}

/// Mean and (biased) standard deviation of every channel (axis `c`).
fn per_channel<D: Dimension>(
    x: &normkit::ndarray::Array<f32, D>,
    c: usize,
) -> Result<Vec<(f64, f64)>, ShapeError> {
    let mut v = x.view().into_dyn();
    v.swap_axes(0, c);
    let channels = v.shape()[0];
    let rows = v
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((channels, x.len() / channels))?;
    Ok(rows
        .rows()
        .into_iter()
        .map(|r| {
            let n = r.len() as f64;
            let mean = r.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = r
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean, var.sqrt())
        })
        .collect())
}

fn fmt(stats: &[(f64, f64)]) -> String {
    let parts: Vec<String> = stats
        .iter()
        .map(|(m, s)| format!("{:>6.3}/{:<5.3}", clean(*m), s))
        .collect();
    parts.join(" ")
}

/// Rounds tiny values to 0 so that they do not print as `-0.000`.
fn clean(v: f64) -> f64 {
    if v.abs() < 5e-4 {
        0.0
    } else {
        v
    }
}

fn fmt1(a: Option<&ArrayD<f32>>) -> String {
    match a {
        Some(a) => {
            let parts: Vec<String> = a.iter().map(|v| format!("{v:>6.3}")).collect();
            format!("[{}]", parts.join(","))
        }
        None => "none".to_string(),
    }
}

fn max_diff<D: Dimension>(
    a: &normkit::ndarray::Array<f32, D>,
    b: &normkit::ndarray::Array<f32, D>,
) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
