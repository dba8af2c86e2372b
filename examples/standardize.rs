//! Input standardization of a feature matrix `[N, F]`: every feature (column) gets mean 0
//! and standard deviation 1 over the batch, so that age (0–65 years) and salary
//! (0–10,000 per month) end up on the same scale.
//!
//! Run: `cargo run --release --example standardize`

use normkit::ndarray::{Array2, ArrayView2, Axis};
use normkit::prelude::*;

/// Standardize each feature over the batch: one mean and variance per column.
#[norm(input = "N,F", axes = "N")]
pub struct Standardize;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 10 people: age in years (column 0), monthly salary (column 1).
    let x = Array2::from_shape_fn((10, 2), |(n, f)| {
        let t = n as f64;
        if f == 0 {
            2.0 + 7.0 * t // 2 .. 65 years
        } else {
            800.0 + 1000.0 * t + 250.0 * (1.7 * t).sin() // ~800 .. ~9,800
        }
    });
    println!("Standardize: #[norm(input = \"N,F\", axes = \"N\")] on x = [N, F] = [10, 2], f64");
    print_stats("before", x.view());

    let mut layer = Standardize::<f64>::new();
    let (y, saved) = layer.forward(x.view(), Mode::Train)?;
    print_stats("after ", y.view());
    println!(
        "row 0: age {:.1}, salary {:.1}  ->  {:.3}, {:.3}",
        x[[0, 0]],
        x[[0, 1]],
        y[[0, 0]],
        y[[0, 1]]
    );

    // Backward of L = Σ y·dy. The train-mode gradient cannot move a column's mean
    // (shifting a whole column does not change y), so every dx column sums to zero.
    let dy = Array2::from_shape_fn(y.raw_dim(), |(n, f)| (n as f64 - 4.5) * (1.0 + f as f64));
    let grads = layer.backward(x.view(), dy.view(), &saved)?;
    let dx_sum = grads.dx.sum_axis(Axis(0));
    println!(
        "backward: dx column sums [{:.1e}, {:.1e}]; no parameters, so dgamma = {:?}",
        dx_sum[0], dx_sum[1], grads.dgamma
    );
    println!("=> both features have mean 0 and std 1: salary no longer dwarfs age");
    Ok(())
}

/// Per-column mean and (biased) standard deviation of age and salary.
fn print_stats(label: &str, x: ArrayView2<'_, f64>) {
    let n = x.nrows() as f64;
    let stat = |f: usize| {
        let col = x.column(f);
        let mean = col.sum() / n;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    };
    let clean = |v: f64| if v.abs() < 5e-4 { 0.0 } else { v };
    let ((am, asd), (sm, ssd)) = (stat(0), stat(1));
    let (am, sm) = (clean(am), clean(sm));
    println!("{label}: age mean {am:>8.3} std {asd:>7.3} | salary mean {sm:>9.3} std {ssd:>8.3}");
}
