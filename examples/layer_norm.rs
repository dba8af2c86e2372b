//! Layer Normalization: statistics per sample (per token) over the feature axes, so the
//! result does not depend on the rest of the batch and train and eval are the same.
//! Two forms: over the last axis of `[N, T, D]` (transformers) and over `C, H, W` of images.
//!
//! Run: `cargo run --release --example layer_norm`

use normkit::ndarray::{s, Array3, Array4, ArrayD, ArrayView2, Axis};
use normkit::prelude::*;

/// `nn.LayerNorm(D)` on token sequences: one mean/variance per token, γ/β per feature.
#[norm(input = "N,T,D", axes = "D", affine = "D")]
pub struct LayerNorm;

/// `nn.LayerNorm([C, H, W])` on images: one mean/variance per image, γ/β per element.
#[norm(input = "N,C,H,W", axes = "C,H,W", affine = "C,H,W")]
pub struct LayerNormChw;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Tokens whose scale and offset vary wildly from token to token.
    let (n, t, d) = (2, 3, 8);
    let x = Array3::from_shape_fn((n, t, d), |(i, j, k)| {
        let token = (i * t + j) as f32;
        (1.0 + 3.0 * token) * ((k as f32 * 0.9 + token).sin()) + 10.0 * (token - 2.0)
    });
    println!("LayerNorm: #[norm(input = \"N,T,D\", axes = \"D\", affine = \"D\")], x = [2, 3, 8]");
    let x2 = x.view().into_shape_with_order((n * t, d))?;
    println!("before, mean/std per token: {}", fmt(&row_stats(x2)));
    let mut ln = LayerNorm::new(d);
    let (y, saved) = ln.forward(x.view(), Mode::Train)?;
    let y2 = y.view().into_shape_with_order((n * t, d))?;
    println!("after,  mean/std per token: {}", fmt(&row_stats(y2)));

    // No batch dependence: sample 1 alone gives the same output; eval = train.
    let alone = ln.forward_eval(x.slice(s![1..2, .., ..]))?;
    let diff = max_diff(alone.iter(), y.slice(s![1..2, .., ..]).iter());
    let eval = ln.forward_eval(x.view())?;
    println!(
        "sample 1 alone vs in the batch: max |Δ| = {diff}; eval vs train: max |Δ| = {}",
        max_diff(eval.iter(), y.iter())
    );
    let dy = Array3::from_shape_fn(y.raw_dim(), |(i, j, k)| {
        ((i + 2 * j + 3 * k) % 5) as f32 - 2.0
    });
    let grads = ln.backward(x.view(), dy.view(), &saved)?;
    let shape =
        |g: &Option<ArrayD<f32>>| g.as_ref().map(|a| a.shape().to_vec()).unwrap_or_default();
    println!(
        "backward: dx {:?}, dgamma {:?}, dbeta {:?} (one γ/β per feature D)",
        grads.dx.shape(),
        shape(&grads.dgamma),
        shape(&grads.dbeta)
    );

    println!();
    println!("LayerNormChw: #[norm(input = \"N,C,H,W\", axes = \"C,H,W\", affine = \"C,H,W\")], x = [3, 2, 4, 4]");
    let img = Array4::from_shape_fn((3, 2, 4, 4), |(i, c, h, w)| {
        (i as f32 + 1.0) * ((h * 4 + w) as f32 * 0.3 + c as f32).cos() + 5.0 * i as f32
    });
    let mut ln2 = LayerNormChw::new(2, 4, 4);
    let img2 = img.view().into_shape_with_order((3, 32))?;
    println!("before, mean/std per image: {}", fmt(&row_stats(img2)));
    let (out, saved2) = ln2.forward(img.view(), Mode::Train)?;
    let out2 = out.view().into_shape_with_order((3, 32))?;
    println!("after,  mean/std per image: {}", fmt(&row_stats(out2)));
    let grads2 = ln2.backward(img.view(), out.view(), &saved2)?;
    println!(
        "backward with dy = y: dgamma {:?} (per element of C,H,W), Σ dx over image 0 = {:.1e}",
        shape(&grads2.dgamma),
        grads2.dx.index_axis(Axis(0), 0).sum()
    );
    println!("=> every token / image is standardized on its own; γ and β are per feature");
    Ok(())
}

/// Mean and (biased) standard deviation of every row.
fn row_stats(x: ArrayView2<'_, f32>) -> Vec<(f64, f64)> {
    x.rows()
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
        .collect()
}

fn fmt(stats: &[(f64, f64)]) -> String {
    let clean = |v: f64| if v.abs() < 5e-4 { 0.0 } else { v };
    let parts: Vec<String> = stats
        .iter()
        .map(|&(m, s)| format!("{:.2}/{:.2}", clean(m), s))
        .collect();
    parts.join("  ")
}

fn max_diff<'a>(a: impl Iterator<Item = &'a f32>, b: impl Iterator<Item = &'a f32>) -> f32 {
    a.zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
