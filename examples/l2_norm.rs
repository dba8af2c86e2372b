//! L2 normalization: `statistic = "sum"` with `center = false` divides every row by the
//! root of its *sum* of squares, x / √(Σx² + eps), where RMSNorm (its parent) divides by
//! the root of the *mean* of squares. Rows come out with norm 1 instead of RMS 1.
//!
//! Run: `cargo run --release --example l2_norm`

use normkit::ndarray::{Array2, Axis};
use normkit::prelude::*;

/// x / √(Σ x² + 1e-12) over D (unit-norm rows).
#[norm(
    input = "N,D",
    axes = "D",
    center = false,
    statistic = "sum",
    eps = 1e-12
)]
pub struct L2Norm;

/// The parent: x / √(mean x² + 1e-12) (RMSNorm without a scale).
#[norm(input = "N,D", axes = "D", center = false, eps = 1e-12)]
pub struct Rms;

fn norms(y: &Array2<f64>) -> Vec<String> {
    y.axis_iter(Axis(0))
        .map(|r| format!("{:.4}", r.mapv(|v| v * v).sum().sqrt()))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, d) = (3, 8);
    let x = Array2::from_shape_fn((n, d), |(i, j)| (1.0 + i as f64) * ((j as f64) * 0.9).cos());
    let (l2, _) = L2Norm::<f64>::new().forward(x.view(), Mode::Train)?;
    let (rms, _) = Rms::<f64>::new().forward(x.view(), Mode::Train)?;
    println!("x = [N,D] = [{n}, {d}], rows scaled by 1, 2, 3");
    println!("row L2 norms of x        : {:?}", norms(&x));
    println!("statistic = \"sum\" (L2)   : {:?}", norms(&l2));
    println!(
        "statistic = \"mean\" (RMS) : {:?} (= √D = {:.4})",
        norms(&rms),
        (d as f64).sqrt()
    );
    let ratio = rms[[0, 0]] / l2[[0, 0]];
    println!("=> same direction, RMS output = √D × L2 output (ratio {ratio:.4})");
    Ok(())
}
