//! Positional Normalization (Li et al., PONO): statistics across the channels at every
//! spatial position. The removed mean and std maps carry the image's structure (PONO passes
//! them on as "moment shortcuts"); the output has mean 0 and std 1 at every pixel.
//!
//! Run: `cargo run --release --example positional_norm`

use normkit::ndarray::{Array4, ArrayD, Axis};
use normkit::prelude::*;

/// Mean and variance over `C`, separately for every (n, h, w).
#[norm(input = "N,C,H,W", axes = "C")]
pub struct PositionalNorm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 6 channels on a 3×4 image; brightness grows to the right, contrast downwards.
    let x = Array4::from_shape_fn((1, 6, 3, 4), |(_, c, h, w)| {
        w as f32 + (0.2 + h as f32) * ((c * 5 + h + w) as f32 * 0.9).sin()
    });
    println!("PositionalNorm: #[norm(input = \"N,C,H,W\", axes = \"C\")], x = [1, 6, 3, 4]");
    let mut pono = PositionalNorm::new();
    let before = pono.stats(x.view())?;
    println!(
        "stats() is shaped [N, H, W] = {:?}: one mean/std per pixel",
        before.mean.shape()
    );
    print_maps("before", &before.mean, &before.var);
    let (y, saved) = pono.forward(x.view(), Mode::Train)?;
    let after = pono.stats(y.view())?;
    print_maps("after ", &after.mean, &after.var);

    let dy = y.mapv(|v| v.cos());
    let grads = pono.backward(x.view(), dy.view(), &saved)?;
    let max_col = grads
        .dx
        .sum_axis(Axis(1))
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    println!(
        "backward: dx {:?}; Σ over C of dx at every pixel ≤ {max_col:.0e} (shifting a pixel's channels changes nothing)",
        grads.dx.shape()
    );
    println!(
        "=> each pixel's channel vector is standardized; the mean/std maps hold the structure"
    );
    Ok(())
}

/// Prints the mean and std maps of sample 0 side by side, one image row per line.
fn print_maps(label: &str, mean: &ArrayD<f32>, var: &ArrayD<f32>) {
    println!("{label}: mean map              | std map");
    let (m, v) = (mean.index_axis(Axis(0), 0), var.index_axis(Axis(0), 0));
    for h in 0..m.shape()[0] {
        let row = |a: &normkit::ndarray::ArrayViewD<'_, f32>, sqrt: bool| {
            let parts: Vec<String> = a
                .index_axis(Axis(0), h)
                .iter()
                .map(|&x| {
                    let x = if sqrt { x.sqrt() } else { x };
                    format!("{:>5.2}", if x.abs() < 5e-3 { 0.0 } else { x })
                })
                .collect();
            parts.join(" ")
        };
        println!("  {}    | {}", row(&m, false), row(&v, true));
    }
}
