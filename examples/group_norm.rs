//! Group Normalization: the channels are split into `groups` contiguous groups and every
//! (sample, group) is standardized over its channels and positions. `groups = 1` is a
//! Layer Norm over `C,H,W`, `groups = C` an Instance Norm; γ/β stay per channel.
//!
//! Run: `cargo run --release --example group_norm`

use normkit::ndarray::{Array4, ArrayD, Axis};
use normkit::prelude::*;

/// One group: Layer Norm over `C, H, W`.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 1, affine)]
pub struct GroupNorm1;

/// Two groups of `C / 2` channels.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
pub struct GroupNorm2;

/// Four groups of `C / 4` channels.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 4, affine)]
pub struct GroupNorm4;

/// One group per channel (C = 8): Instance Norm.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 8, affine)]
pub struct GroupNorm8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Channel c of sample n has mean c − 3 + n and std 0.5 + c / 4.
    let x = Array4::from_shape_fn((2, 8, 4, 4), |(n, c, h, w)| {
        let wave = ((h * 4 + w) as f32 * 1.3 + c as f32).sin() * 1.41;
        (c as f32 - 3.0 + n as f32) + (0.5 + c as f32 / 4.0) * wave
    });
    println!("GroupNorm on x = [N,C,H,W] = [2, 8, 4, 4]; statistics of sample 0 (mean/std):");
    macro_rules! show {
        ($label:literal, $layer:ty) => {{
            let mut gn = <$layer>::new(8);
            let before = gn.stats(x.view())?;
            let (y, saved) = gn.forward(x.view(), Mode::Train)?;
            let after = gn.stats(y.view())?;
            println!("{} -> stats() shape {:?}", $label, before.mean.shape());
            println!("  per group before: {}", fmt(&before));
            println!("  per group after : {}", fmt(&after));
            let channel_means = y.index_axis(Axis(0), 0).mean_axis(Axis(2));
            let channel_means = channel_means.and_then(|m| m.mean_axis(Axis(1)));
            let cm: Vec<String> = channel_means
                .iter()
                .flatten()
                .map(|&v| format!("{:.2}", if v.abs() < 5e-3 { 0.0 } else { v }))
                .collect();
            println!("  per channel mean after: [{}]", cm.join(" "));
            let dy = y.mapv(|v| (3.0 * v).sin());
            gn.backward(x.view(), dy.view(), &saved)?
        }};
    }
    show!("groups = 1 (Layer Norm)", GroupNorm1);
    show!("groups = 2", GroupNorm2);
    let grads = show!("groups = 4", GroupNorm4);
    show!("groups = 8 (Instance Norm)", GroupNorm8);

    let dgamma = grads.dgamma.map(|g| g.shape().to_vec());
    let dx0 = grads.dx.index_axis(Axis(0), 0);
    let group_sums: Vec<String> = (0..4)
        .map(|g| {
            format!(
                "{:.0e}",
                dx0.slice(normkit::ndarray::s![2 * g..2 * g + 2, .., ..])
                    .sum()
            )
        })
        .collect();
    println!(
        "backward (groups = 4): dgamma shape {:?} (per channel), Σ dx per group [{}]",
        dgamma.unwrap_or_default(),
        group_sums.join(" ")
    );
    println!(
        "=> each (sample, group) is standardized as a whole; single channels only when groups = C"
    );
    Ok(())
}

/// The moments of sample 0, one `mean/std` per group.
fn fmt(m: &Moments<f32>) -> String {
    let mean: &ArrayD<f32> = &m.mean;
    let parts: Vec<String> = mean
        .index_axis(Axis(0), 0)
        .iter()
        .zip(m.var.index_axis(Axis(0), 0).iter())
        .map(|(&mu, &var)| {
            let mu = if mu.abs() < 5e-4 { 0.0 } else { mu };
            format!("{mu:.2}/{:.2}", var.sqrt())
        })
        .collect();
    parts.join("  ")
}
