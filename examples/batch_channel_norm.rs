//! Batch-Channel Normalization (Qiao et al., as in the official `BCNorm` code): a Batch Norm
//! with running statistics, then a per-sample Group Norm with one γ/β per group. In eval mode
//! the `bn` stage uses its running statistics while the `gn` stage still normalizes every
//! sample with its own (batch) statistics.
//!
//! Run: `cargo run --release --example batch_channel_norm`

use normkit::ndarray::{s, Array4, ArrayD, ArrayView2};
use normkit::prelude::*;

/// BCN with 4 groups: stage `bn` (per channel, running stats), then stage `gn` (per group).
#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 4, affine = "G")
    )
)]
pub struct BatchChannelNorm;

const C: usize = 8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("BatchChannelNorm: #[norm(input = \"N,C,H,W\", chain(bn(axes = \"N,H,W\", affine,");
    println!("    running_stats), gn(axes = \"C,H,W\", groups = 4, affine = \"G\")))], C = {C}");
    let mut bcn = BatchChannelNorm::new(C);
    println!(
        "fields: bcn.bn.gamma {:?}, bcn.bn.running_mean {:?}, bcn.gn.gamma {:?} (one per group)",
        bcn.bn.gamma.shape(),
        bcn.bn.running_mean.shape(),
        bcn.gn.gamma.shape()
    );
    let mut rng = Lcg(11);
    // Channel c has mean c − 4 and std 1 + c / 8.
    for _ in 0..40 {
        let x = batch(&mut rng, 8);
        bcn.forward_train(x.view())?;
    }
    let rm: Vec<String> = bcn
        .bn
        .running_mean
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect();
    println!(
        "after 40 train steps, bn.running_mean = [{}] (true: c − 4)",
        rm.join(" ")
    );

    let x = batch(&mut rng, 4);
    let y_eval = bcn.forward_eval(x.view())?;
    let alone = bcn.forward_eval(x.slice(s![0..1, .., .., ..]))?;
    println!(
        "eval, sample 0 alone vs in a batch of 4: max |Δ| = {} (bn: running stats, gn: per sample)",
        max_diff(
            &alone.into_dyn(),
            &y_eval.slice(s![0..1, .., .., ..]).to_owned().into_dyn()
        )
    );
    println!(
        "eval output, per (sample, group) mean/std: {}",
        fmt(&group_stats(&y_eval)?)
    );
    let shifted = x.mapv(|v| 10.0 * v + 3.0);
    println!(
        "eval on 10·x + 3, per (sample, group)     : {}",
        fmt(&group_stats(&bcn.forward_eval(shifted.view())?)?)
    );
    println!("  (the gn stage normalizes with the batch statistics of each sample even in eval)");

    let (y, saved) = bcn.forward(x.view(), Mode::Train)?;
    let dy = y.mapv(|v| (2.0 * v).sin());
    let grads = bcn.backward(x.view(), dy.view(), &saved)?;
    let shape =
        |g: &Option<ArrayD<f32>>| g.as_ref().map(|a| a.shape().to_vec()).unwrap_or_default();
    println!(
        "backward: grads.dx {:?}, grads.bn.dgamma {:?}, grads.bn.dbeta {:?}, grads.gn.dgamma {:?}, grads.gn.dbeta {:?}",
        grads.dx.shape(),
        shape(&grads.bn.dgamma),
        shape(&grads.bn.dbeta),
        shape(&grads.gn.dgamma),
        shape(&grads.gn.dbeta)
    );
    let train_alone = bcn.forward_train(x.slice(s![0..1, .., .., ..]))?.0;
    println!(
        "train, sample 0 alone vs in the batch: max |Δ| = {:.3} (bn uses batch statistics)",
        max_diff(
            &train_alone.into_dyn(),
            &y.slice(s![0..1, .., .., ..]).to_owned().into_dyn()
        )
    );
    println!("=> batch statistics where they help (training), per-sample statistics always");
    Ok(())
}

/// A tiny deterministic generator: a 64-bit LCG.
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Approximately standard normal (Irwin–Hall with 12 terms).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

/// A batch of `n` images `[n, C, 4, 4]`; channel c has mean c − 4 and std 1 + c / 8.
fn batch(rng: &mut Lcg, n: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, C, 4, 4), |(_, c, _, _)| {
        (c as f64 - 4.0 + (1.0 + c as f64 / 8.0) * rng.normal()) as f32
    })
}

/// Mean and standard deviation of every (sample, group) of 2 channels.
fn group_stats(y: &Array4<f32>) -> Result<Vec<(f64, f64)>, normkit::ndarray::ShapeError> {
    let n = y.shape()[0];
    let rows: ArrayView2<'_, f32> = y.view().into_shape_with_order((n * 4, y.len() / (n * 4)))?;
    Ok(rows
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
        .take(4)
        .map(|&(m, s)| format!("{:.2}/{s:.2}", if m.abs() < 5e-3 { 0.0 } else { m }))
        .collect();
    format!("{} … (sample 0)", parts.join(" "))
}

fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
