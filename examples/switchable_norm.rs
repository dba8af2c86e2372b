//! Switchable Normalization (Luo et al. 2018): one layer mixes the statistics of its
//! parents, InstanceNorm (`H,W`), LayerNorm (`C,H,W`) and BatchNorm (`N,H,W`):
//! μ = Σ_k softmax(mean_weight)_k μ_k and σ² = Σ_k softmax(var_weight)_k σ²_k, with the
//! logits learned. This example trains only the logits on a toy problem whose target is
//! instance-normalized data, prints the weights moving toward IN, and shows that with one
//! dominant logit the layer gives its parent's output.
//!
//! Run: `cargo run --release --example switchable_norm`

use normkit::ndarray::{Array1, Array4};
use normkit::prelude::*;

/// Switchable Normalization over IN, LN and BN statistics.
#[norm(input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W", running_stats)]
pub struct Switchable;

/// The parents.
#[norm(input = "N,C,H,W", axes = "H,W")]
pub struct Instance;
#[norm(input = "N,C,H,W", axes = "C,H,W")]
pub struct Layer;
#[norm(input = "N,C,H,W", axes = "N,H,W")]
pub struct Batch;

/// A batch whose every (sample, channel) has its own offset and scale: only per-instance
/// statistics remove them.
fn batch(seed: usize) -> Array4<f64> {
    Array4::from_shape_fn((4, 3, 5, 5), |(n, c, h, w)| {
        let t = ((seed * 131 + n * 37 + c * 11 + h * 5 + w) as f64 * 1.618).sin() * 43758.5453;
        let u = 2.0 * (t - t.floor()) - 1.0;
        let (shift, scale) = (
            (n * 3 + c) as f64 * 0.7 - 2.0,
            0.5 + ((n + 2 * c) % 5) as f64,
        );
        shift + scale * u
    })
}

fn softmax(l: &Array1<f64>) -> Vec<f64> {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = l.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn gap(a: &Array4<f64>, b: &Array4<f64>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sn = Switchable::<f64>::new(3);
    let instance = Instance::<f64>::new();
    println!("weights (IN, LN, BN) of the means | of the variances, training toward IN(x):");
    let lr = 2.0;
    for step in 0..=40 {
        let x = batch(step);
        let target = instance.forward_eval(x.view())?;
        let (y, saved) = sn.forward(x.view(), Mode::Train)?;
        let loss = (&y - &target).mapv(|d| d * d).mean().unwrap_or(0.0);
        let dy = (&y - &target).mapv(|d| 2.0 * d / y.len() as f64);
        let g = sn.backward(x.view(), dy.view(), &saved)?;
        if step % 10 == 0 {
            println!(
                "  step {step:2}: loss {loss:.4}  means {:.3?} | variances {:.3?}",
                softmax(&sn.mean_weight),
                softmax(&sn.var_weight)
            );
        }
        let (dm, dv) = (
            g.dmean_weight.expect("dmean_weight"),
            g.dvar_weight.expect("dvar_weight"),
        );
        sn.mean_weight.zip_mut_with(&dm, |w, d| *w -= lr * d);
        sn.var_weight.zip_mut_with(&dv, |w, d| *w -= lr * d);
    }

    println!("one dominant logit: the layer is its parent (max |SN − parent|):");
    let x = batch(99);
    let parents = [
        ("InstanceNorm", instance.forward_eval(x.view())?),
        ("LayerNorm", Layer::<f64>::new().forward_eval(x.view())?),
        ("BatchNorm", Batch::<f64>::new().forward_eval(x.view())?),
    ];
    for (k, (name, parent)) in parents.iter().enumerate() {
        let mut one = Switchable::<f64>::new(3);
        let logits = Array1::from_shape_fn(3, |i| if i == k { 50.0 } else { -50.0 });
        one.mean_weight = logits.clone();
        one.var_weight = logits;
        let (y, _) = one.forward(x.view(), Mode::Train)?;
        println!("  {name:12}: {:.1e}", gap(&y, parent));
    }
    Ok(())
}
