//! Weight Standardization (Qiao et al.): the weights of a convolution are standardized per
//! output channel, over the input channels and the kernel window, before the convolution.
//! The official code divides by the unbiased standard deviation plus 1e-5.
//!
//! Run: `cargo run --release --example weight_standardization`

use normkit::ndarray::{Array4, Axis};
use normkit::prelude::*;

/// `(w − mean) / (w.std(unbiased) + 1e-5)` per output channel `O`.
#[norm(
    input = "O,I,kh,kw",
    axes = "I,kh,kw",
    unbiased,
    eps_mode = "std",
    eps = 1e-5
)]
pub struct WeightStd;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Conv weights [O, I, kh, kw] = [4, 3, 3, 3] with a different scale and offset per filter.
    let w = Array4::from_shape_fn((4, 3, 3, 3), |(o, i, h, k)| {
        let t = (o * 27 + i * 9 + h * 3 + k) as f64;
        0.05 * o as f64 - 0.08 + (0.02 + 0.1 * o as f64) * (t * 2.399).sin()
    });
    println!("WeightStd: #[norm(input = \"O,I,kh,kw\", axes = \"I,kh,kw\", unbiased, eps_mode = \"std\", eps = 1e-5)]");
    let mut ws = WeightStd::<f64>::new();
    let before = ws.stats(w.view())?;
    println!("weights [4, 3, 3, 3]; per output channel mean / unbiased std:");
    println!("  before: {}", fmt(&before.mean, &before.var));
    let (w_hat, saved) = ws.forward(w.view(), Mode::Train)?;
    let after = ws.stats(w_hat.view())?;
    println!("  after : {}", fmt(&after.mean, &after.var));
    println!(
        "  (std is 1 − 1e-5/σ: eps is added to σ, e.g. filter 0: σ = {:.4} -> {:.6})",
        before.var[[0]].sqrt(),
        after.var[[0]].sqrt()
    );

    // Backward: the gradient of the loss w.r.t. ŵ (from the convolution) mapped to w.
    let d_what = Array4::from_shape_fn(w.raw_dim(), |(o, i, h, k)| {
        ((o + 2 * i + h * k) % 5) as f64 - 2.0
    });
    let grads = ws.backward(w.view(), d_what.view(), &saved)?;
    let per_filter = grads
        .dx
        .sum_axis(Axis(3))
        .sum_axis(Axis(2))
        .sum_axis(Axis(1));
    // cos(dw, w − mean): rescaling a filter leaves ŵ unchanged up to eps.
    let cosines: Vec<String> = (0..4)
        .map(|o| {
            let g = grads.dx.index_axis(Axis(0), o);
            let c = w.index_axis(Axis(0), o).mapv(|v| v - before.mean[[o]]);
            let cos = (&g * &c).sum() / ((&g * &g).sum().sqrt() * (&c * &c).sum().sqrt());
            format!("{cos:.0e}")
        })
        .collect();
    let sums: Vec<String> = per_filter.iter().map(|v| format!("{v:.0e}")).collect();
    println!("backward: dw {:?}", grads.dx.shape());
    println!(
        "  Σ dw per filter [{}] (adding a constant to a filter changes nothing)",
        sums.join(", ")
    );
    println!(
        "  cos(dw, w − mean) per filter [{}] (neither does rescaling it, up to eps)",
        cosines.join(", ")
    );
    println!("=> every filter has mean 0 and std ≈ 1, and its gradient ignores shift and scale");
    Ok(())
}

fn fmt(mean: &normkit::ndarray::ArrayD<f64>, var: &normkit::ndarray::ArrayD<f64>) -> String {
    let parts: Vec<String> = mean
        .iter()
        .zip(var)
        .map(|(&m, &v)| {
            format!(
                "{:>6.3}/{:.4}",
                if m.abs() < 5e-4 { 0.0 } else { m },
                v.sqrt()
            )
        })
        .collect();
    parts.join("  ")
}
