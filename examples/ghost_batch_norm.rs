//! Ghost Batch Norm (Hoffer et al. 2017): `ghost = 4` splits the batch axis `N` into
//! chunks of 4 samples, each normalized with its own statistics, and updates the running
//! statistics once per chunk. Its parent, BatchNorm, normalizes the whole batch at once:
//! here the batch's chunks come from differently shifted data, so BatchNorm leaves each
//! chunk's mean where it was, while Ghost BN centres every chunk.
//!
//! Run: `cargo run --release --example ghost_batch_norm`

use normkit::ndarray::{s, Array4};
use normkit::prelude::*;

/// Ghost BN: statistics over chunks of 4 samples.
#[norm(input = "N,C,H,W", axes = "N,H,W", ghost = 4, affine, running_stats)]
pub struct GhostBn;

/// The parent: BatchNorm over the whole batch.
#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
pub struct Bn;

fn chunk_means(y: &Array4<f64>, ghost: usize) -> Vec<String> {
    (0..y.shape()[0] / ghost)
        .map(|k| {
            let m = y
                .slice(s![k * ghost..(k + 1) * ghost, 0, .., ..])
                .mean()
                .unwrap_or(0.0);
            format!("{m:+.3}")
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, c, h, w) = (16, 2, 3, 3);
    // Sample i is shifted by its chunk index: chunk k has mean ≈ k.
    let x = Array4::from_shape_fn((n, c, h, w), |(i, j, k, l)| {
        (i / 4) as f64 + ((i * 13 + j * 5 + k * 3 + l) as f64 * 0.71).sin()
    });
    let mut ghost = GhostBn::<f64>::new(c);
    let mut bn = Bn::<f64>::new(c);
    let (yg, _) = ghost.forward(x.view(), Mode::Train)?;
    let (yb, _) = bn.forward(x.view(), Mode::Train)?;
    println!("x = [N,C,H,W] = [{n}, {c}, {h}, {w}]; chunk k of 4 samples has mean ≈ k");
    println!("channel 0 mean per chunk of 4:");
    println!("  x                : {:?}", chunk_means(&x, 4));
    println!("  BatchNorm        : {:?}", chunk_means(&yb, 4));
    println!("  Ghost BN, ghost=4: {:?}", chunk_means(&yg, 4));
    println!(
        "running statistics updates: BatchNorm {}, Ghost BN {} (one per chunk)",
        bn.num_batches_tracked, ghost.num_batches_tracked
    );
    println!(
        "running_mean[0]: BatchNorm {:.4}, Ghost BN {:.4}",
        bn.running_mean[0], ghost.running_mean[0]
    );
    let (ye, _) = ghost.forward(x.view(), Mode::Eval)?;
    println!(
        "eval uses the running statistics: chunk means {:?}",
        chunk_means(&ye, 4)
    );
    Ok(())
}
