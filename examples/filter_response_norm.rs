//! Filter Response Normalization + TLU (Singh & Krishnan 2019): per sample and channel,
//! x / √(mean(x²) + eps) over H,W (no mean subtraction, like an RMSNorm over the spatial
//! axes), then the affine, then the thresholded linear unit y = max(γ·x̂ + β, τ) with a
//! learned per-channel threshold τ (`tau`, gradient `dtau`). Its parent is the same
//! declaration without `tlu`: the TLU is what replaces the ReLU after the layer.
//!
//! Run: `cargo run --release --example filter_response_norm`

use normkit::ndarray::{Array1, Array4, Axis};
use normkit::prelude::*;

/// FRN with TLU: `axes = "H,W", center = false, affine, tlu, eps = 1e-6`.
#[norm(
    input = "N,C,H,W",
    axes = "H,W",
    center = false,
    affine,
    tlu,
    eps = 1e-6
)]
pub struct Frn;

/// The parent: FRN without the threshold.
#[norm(input = "N,C,H,W", axes = "H,W", center = false, affine, eps = 1e-6)]
pub struct FrnNoTlu;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, c, h, w) = (2, 3, 4, 4);
    let x = Array4::from_shape_fn((n, c, h, w), |(i, j, k, l)| {
        ((i * 7 + j * 3 + k * 5 + l) as f64 * 0.37).sin() * (1.0 + j as f64) + 0.2
    });
    let mut frn = Frn::<f64>::new(c);
    frn.tau = Array1::from(vec![-0.5, 0.0, 0.5]);
    let mut plain = FrnNoTlu::<f64>::new(c);
    let (y, saved) = frn.forward(x.view(), Mode::Train)?;
    let (z, _) = plain.forward(x.view(), Mode::Train)?;
    println!(
        "x = [N,C,H,W] = [{n}, {c}, {h}, {w}], tau = {:?}",
        frn.tau.to_vec()
    );
    for ch in 0..c {
        let (yc, zc) = (y.index_axis(Axis(1), ch), z.index_axis(Axis(1), ch));
        let min =
            |a: &normkit::ndarray::ArrayView3<'_, f64>| a.fold(f64::INFINITY, |m, &v| m.min(v));
        let clamped = zc.iter().filter(|&&v| v <= frn.tau[ch]).count();
        println!(
            "channel {ch}: min without TLU {:+.3}, with TLU {:+.3}; {clamped}/{} values raised to tau",
            min(&zc),
            min(&yc),
            zc.len()
        );
    }
    let dy = Array4::from_elem(x.raw_dim(), 1.0);
    let grads = frn.backward(x.view(), dy.view(), &saved)?;
    println!(
        "dtau (dL/dtau for L = sum y) = {:?}: the number of clamped values per channel",
        grads.dtau.map(|t| t.iter().copied().collect::<Vec<f64>>())
    );
    println!("=> TLU: max(z, tau) per channel; without it the layer's output is unbounded below");
    Ok(())
}
