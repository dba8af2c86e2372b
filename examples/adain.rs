//! Adaptive Instance Normalization (Huang & Belongie): the content features are
//! standardized per (sample, channel) and then given the style's per-channel mean and
//! standard deviation, passed as the external `scale` and `shift`.
//!
//! Run: `cargo run --release --example adain`

use normkit::ndarray::{Array4, Axis, Ix2};
use normkit::prelude::*;

/// Instance statistics with the unbiased variance (as the reference `calc_mean_std`);
/// scale and shift come from outside, shaped by the kept axes `[N, C]`.
#[norm(input = "N,C,H,W", axes = "H,W", unbiased, affine = external)]
pub struct AdaIn;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let features = |mean: [f32; 3], std: [f32; 3], freq: f32| {
        Array4::from_shape_fn((1, 3, 8, 8), move |(_, c, h, w)| {
            mean[c] + std[c] * 1.41 * ((h * 8 + w) as f32 * freq + c as f32).sin()
        })
    };
    let content = features([0.5, -1.0, 2.0], [1.0, 0.3, 2.5], 0.37);
    let style = features([3.0, 0.0, -2.0], [0.2, 1.5, 0.7], 1.13);
    println!("AdaIn: #[norm(input = \"N,C,H,W\", axes = \"H,W\", unbiased, affine = external)]");

    let mut adain = AdaIn::new();
    // The style statistics: stats() gives mean and unbiased var per (sample, channel).
    let s = adain.stats(style.view())?;
    let shift = s.mean.into_dimensionality::<Ix2>()?;
    let scale = s
        .var
        .into_dimensionality::<Ix2>()?
        .mapv(|v| (v + 1e-5).sqrt());
    let (y, saved) = adain.forward(content.view(), scale.view(), shift.view(), Mode::Train)?;

    println!("per channel mean/std (unbiased):");
    for (label, a) in [("content", &content), ("style  ", &style), ("output ", &y)] {
        let m = adain.stats(a.view())?;
        let parts: Vec<String> = m
            .mean
            .iter()
            .zip(&m.var)
            .map(|(mu, v)| format!("{mu:>7.3}/{:.3}", v.sqrt()))
            .collect();
        println!("  {label}: {}", parts.join("  "));
    }

    let dy = y.mapv(|v| (0.5 * v).sin());
    let grads = adain.backward(content.view(), dy.view(), &saved)?;
    let dshift: Vec<String> = grads
        .dbeta
        .iter()
        .flatten()
        .map(|v| format!("{v:.3}"))
        .collect();
    let dy_sums: Vec<String> = (0..3)
        .map(|c| format!("{:.3}", dy.index_axis(Axis(1), c).sum()))
        .collect();
    println!(
        "backward: dx {:?}, d scale {:?}, d shift [{}] (= Σ dy per channel [{}])",
        grads.dx.shape(),
        grads
            .dgamma
            .as_ref()
            .map(|g| g.shape().to_vec())
            .unwrap_or_default(),
        dshift.join(", "),
        dy_sums.join(", ")
    );
    println!(
        "=> the output keeps the content's spatial pattern with the style's channel statistics"
    );
    Ok(())
}
