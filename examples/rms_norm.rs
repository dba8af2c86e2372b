//! RMSNorm (LLaMA, T5): no mean subtraction; every token is divided by its root mean
//! square and scaled per feature, without a shift.
//!
//! Run: `cargo run --release --example rms_norm`

use normkit::ndarray::{Array3, ArrayView2};
use normkit::prelude::*;

/// `x / sqrt(mean(x²) + 1e-6) · γ`, γ per feature.
#[norm(
    input = "N,T,D",
    axes = "D",
    center = false,
    affine = "D",
    bias = false,
    eps = 1e-6
)]
pub struct RmsNorm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, t, d) = (2, 3, 16);
    // Token j of sample i: amplitude grows with the token, plus a positive offset.
    let x = Array3::from_shape_fn((n, t, d), |(i, j, k)| {
        let token = (i * t + j) as f32;
        (0.5 + 2.0 * token) * (k as f32 * 0.7 + token).sin() + 0.4 * token
    });
    println!("RmsNorm: #[norm(input = \"N,T,D\", axes = \"D\", center = false, affine = \"D\", bias = false, eps = 1e-6)]");
    println!("x = [N,T,D] = [2, 3, 16]; per token mean / RMS:");
    println!(
        "  before: {}",
        fmt(&row_stats(x.view().into_shape_with_order((n * t, d))?))
    );
    let mut rms = RmsNorm::new(d);
    let (y, saved) = rms.forward(x.view(), Mode::Train)?;
    println!(
        "  after : {}",
        fmt(&row_stats(y.view().into_shape_with_order((n * t, d))?))
    );
    let moments = rms.stats(x.view())?;
    let zero_mean = moments.mean.iter().all(|&m| m == 0.0);
    let ms0 = moments.var.iter().next().copied().unwrap_or_default();
    println!(
        "stats(): mean all zero = {zero_mean} (center = false), var = mean square: token 0 {ms0:.3} = {:.2}²",
        ms0.sqrt()
    );

    let dy = Array3::from_shape_fn(y.raw_dim(), |(i, j, k)| ((i + j + k) % 3) as f32 - 1.0);
    let grads = rms.backward(x.view(), dy.view(), &saved)?;
    println!(
        "backward: dx {:?}, dgamma {:?}, dbeta {:?} (bias = false: no β)",
        grads.dx.shape(),
        grads
            .dgamma
            .as_ref()
            .map(|g| g.shape().to_vec())
            .unwrap_or_default(),
        grads.dbeta.as_ref().map(|g| g.shape().to_vec())
    );
    println!("=> every token has RMS 1; its mean is only rescaled, never subtracted");
    Ok(())
}

/// Mean and root mean square of every row.
fn row_stats(x: ArrayView2<'_, f32>) -> Vec<(f64, f64)> {
    x.rows()
        .into_iter()
        .map(|r| {
            let n = r.len() as f64;
            let mean = r.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let ms = r.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n;
            (mean, ms.sqrt())
        })
        .collect()
}

fn fmt(stats: &[(f64, f64)]) -> String {
    let parts: Vec<String> = stats
        .iter()
        .map(|&(m, r)| format!("{m:>5.2}/{r:.2}"))
        .collect();
    parts.join(" ")
}
