//! Instance Normalization (style transfer): every (sample, channel) is standardized over its
//! spatial positions, which removes per-image contrast. With `running_stats` the per-sample
//! statistics, averaged over the batch, are tracked for eval mode.
//!
//! Run: `cargo run --release --example instance_norm`

use normkit::ndarray::{arr1, Array4, ArrayView2};
use normkit::prelude::*;

/// `nn.InstanceNorm2d(C)`: no parameters, batch statistics in train and eval.
#[norm(input = "N,C,H,W", axes = "H,W")]
pub struct InstanceNorm;

/// `nn.InstanceNorm2d(C, affine=True, track_running_stats=True)`.
#[norm(input = "N,C,H,W", axes = "H,W", affine, running_stats)]
pub struct InstanceNormTracked;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Image n, channel c: mean 2n + c, std 0.5 + n + c / 2 (a different "contrast" each).
    let image = |n_samples: usize, phase: f32| {
        Array4::from_shape_fn((n_samples, 3, 4, 4), move |(n, c, h, w)| {
            let wave = ((h * 4 + w) as f32 * 0.8 + c as f32 + phase).sin() * 1.41;
            (2 * n + c) as f32 + (0.5 + n as f32 + c as f32 / 2.0) * wave
        })
    };
    let x = image(2, 0.0);
    println!("InstanceNorm: #[norm(input = \"N,C,H,W\", axes = \"H,W\")], x = [2, 3, 4, 4]");
    println!("before, per (n, c) mean/std: {}", fmt(&rows(x.view())?));
    let mut inorm = InstanceNorm::new();
    let (y, saved) = inorm.forward(x.view(), Mode::Train)?;
    println!("after,  per (n, c) mean/std: {}", fmt(&rows(y.view())?));
    let dy = y.mapv(|v| (v * 2.0).cos());
    let grads = inorm.backward(x.view(), dy.view(), &saved)?;
    let eval = inorm.forward_eval(x.view())?;
    let same = eval == y;
    println!(
        "no running stats: eval == train output: {same}; backward dx {:?}, dgamma {:?}",
        grads.dx.shape(),
        grads.dgamma
    );

    println!();
    println!("InstanceNormTracked: ... axes = \"H,W\", affine, running_stats");
    let mut tracked = InstanceNormTracked::new(3);
    tracked.gamma = arr1(&[1.0, 2.0, 0.5]);
    tracked.beta = arr1(&[0.0, 1.0, -1.0]);
    for step in 0..60 {
        tracked.forward_train(image(2, step as f32 * 0.1).view())?;
    }
    let fmt_vec = |a: &normkit::ndarray::Array1<f32>| {
        let v: Vec<String> = a.iter().map(|v| format!("{v:.3}")).collect();
        format!("[{}]", v.join(", "))
    };
    println!(
        "after 60 steps: running_mean {} running_var {}",
        fmt_vec(&tracked.running_mean),
        fmt_vec(&tracked.running_var)
    );
    println!(
        "  (per channel, the per-sample statistics averaged over N: c = 0 has means 0 and 2 -> 1)"
    );
    let (y_train, saved) = tracked.forward(x.view(), Mode::Train)?;
    println!(
        "train output with γ = [1, 2, 0.5], β = [0, 1, -1]: {}",
        fmt(&rows(y_train.view())?)
    );
    let y_eval = tracked.forward_eval(x.view())?;
    println!(
        "eval output (running statistics):             {}",
        fmt(&rows(y_eval.view())?)
    );
    let grads = tracked.backward(x.view(), y_train.view(), &saved)?;
    let show = |g: &Option<normkit::ndarray::ArrayD<f32>>| {
        let v: Vec<String> = g.iter().flatten().map(|v| format!("{v:.1}")).collect();
        format!("[{}]", v.join(", "))
    };
    println!(
        "backward (dy = y): dgamma {} dbeta {}",
        show(&grads.dgamma),
        show(&grads.dbeta)
    );
    println!(
        "=> every image and channel is standardized on its own, then scaled by γ and shifted by β"
    );
    Ok(())
}

/// Mean and (biased) standard deviation of every (sample, channel).
fn rows(
    x: normkit::ndarray::ArrayView4<'_, f32>,
) -> Result<Vec<(f64, f64)>, normkit::ndarray::ShapeError> {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let flat: ArrayView2<'_, f32> = x.into_shape_with_order((n * c, 16))?;
    Ok(flat
        .rows()
        .into_iter()
        .map(|r| {
            let len = r.len() as f64;
            let mean = r.iter().map(|&v| f64::from(v)).sum::<f64>() / len;
            let var = r
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / len;
            (mean, var.sqrt())
        })
        .collect())
}

fn fmt(stats: &[(f64, f64)]) -> String {
    let parts: Vec<String> = stats
        .iter()
        .map(|&(m, s)| format!("{:.2}/{s:.2}", if m.abs() < 5e-3 { 0.0 } else { m }))
        .collect();
    parts.join(" ")
}
