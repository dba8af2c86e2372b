//! Batch Renormalization (Ioffe 2017): in training, x̂ = (x − μ_B)/σ_B · r + d with
//! r = clamp(σ_B/σ_run, 1/rmax, rmax) and d = clamp((μ_B − μ_run)/σ_run, −dmax, dmax), so
//! a small batch's output matches what eval mode (running statistics) would give. Its
//! parent, BatchNorm, normalizes each small batch with its own noisy statistics. `rmax` and
//! `dmax` are public fields: this example ramps them as the paper does.
//!
//! Run: `cargo run --release --example batch_renorm`

use normkit::ndarray::Array2;
use normkit::prelude::*;

/// Batch Renorm over `N` of `N,C` features.
#[norm(
    input = "N,C",
    axes = "N",
    affine,
    running_stats,
    momentum = 0.1,
    renorm(rmax = 3.0, dmax = 5.0)
)]
pub struct Renorm;

/// The parent: BatchNorm.
#[norm(input = "N,C", axes = "N", affine, running_stats, momentum = 0.1)]
pub struct Bn;

/// A batch of `n` samples of 3 features, mean 3 and spread 2, from a fixed pseudo-random walk.
fn batch(n: usize, seed: usize) -> Array2<f64> {
    Array2::from_shape_fn((n, 3), |(i, j)| {
        let t = ((seed * 31 + i * 7 + j * 3) as f64 * 1.618).sin() * 43758.5453;
        3.0 + 2.0 * (2.0 * (t - t.floor()) - 1.0) * 1.7
    })
}

fn gap(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut renorm = Renorm::<f64>::new(3);
    let mut bn = Bn::<f64>::new(3);
    // Ramp the limits from batch norm (r = 1, d = 0) to the declared ones.
    for step in 0..60 {
        let t = (step as f64 / 30.0).min(1.0);
        renorm.rmax = 1.0 + 2.0 * t;
        renorm.dmax = 5.0 * t;
        let x = batch(32, step);
        renorm.forward(x.view(), Mode::Train)?;
        bn.forward(x.view(), Mode::Train)?;
    }
    println!(
        "60 training steps of 32 samples (mean 3); limits ramped to rmax = {}, dmax = {}",
        renorm.rmax, renorm.dmax
    );
    println!(
        "running_mean: BatchNorm {:.3?}, Batch Renorm {:.3?}",
        bn.running_mean.to_vec(),
        renorm.running_mean.to_vec()
    );
    // A small batch of 4: train-mode output vs the eval-mode output of the same samples.
    let x = batch(4, 1000);
    let (eval_bn, eval_rn) = (bn.forward_eval(x.view())?, renorm.forward_eval(x.view())?);
    let (bn_copy, rn_copy) = (&mut bn, &mut renorm);
    let (train_bn, _) = bn_copy.forward(x.view(), Mode::Train)?;
    let (train_rn, _) = rn_copy.forward(x.view(), Mode::Train)?;
    println!("small batch of 4: max |train − eval| output");
    println!("  BatchNorm    : {:.4}", gap(&train_bn, &eval_bn));
    println!(
        "  Batch Renorm : {:.1e} (r, d correct the batch statistics toward the running ones)",
        gap(&train_rn, &eval_rn)
    );
    Ok(())
}
