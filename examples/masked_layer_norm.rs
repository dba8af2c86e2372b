//! Padding-aware LayerNorm: `mask = "N,T"` marks the real tokens of each sequence; the
//! statistics of a sequence (over `T, D`) use only those tokens, the normalization is applied
//! to every position, and a sequence with no real token gives zeros (never NaN).
//!
//! The example pads a batch with large values and prints the statistics with and without
//! the mask: the unmasked parent (`axes = "T,D"` alone) lets the padding move the mean and
//! the variance; the masked layer's real tokens do not depend on what the padding holds.
//!
//! Run: `cargo run --release --example masked_layer_norm`

use normkit::ndarray::{s, Array2, Array3};
use normkit::prelude::*;

/// LayerNorm over each whole sequence, statistics over the real tokens only.
#[norm(input = "N,T,D", axes = "T,D", mask = "N,T", affine = "D")]
pub struct PaddedLayerNorm;

/// The parent: the same layer without the mask.
#[norm(input = "N,T,D", axes = "T,D", affine = "D")]
pub struct SequenceLayerNorm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, t, d) = (3, 6, 4);
    // Real lengths 6, 3 and 0 (a fully padded sequence); the padding holds 100.0.
    let lengths = [6, 3, 0];
    let mask = Array2::from_shape_fn((n, t), |(i, j)| j < lengths[i]);
    let x = Array3::from_shape_fn((n, t, d), |(i, j, k)| {
        if mask[[i, j]] {
            ((i * 7 + j * 3 + k) % 5) as f32 - 2.0 + i as f32
        } else {
            100.0
        }
    });
    println!("x = [N={n}, T={t}, D={d}], real lengths {lengths:?}, padding = 100.0");

    let mut masked = PaddedLayerNorm::new(d);
    let mut plain = SequenceLayerNorm::new(d);
    let (ym, saved) = masked.forward_train(x.view(), mask.view())?;
    let (yp, _) = plain.forward_train(x.view())?;
    let mean = |k: usize| saved.mean(0).map(|m| m[k]).unwrap_or(f64::NAN);
    for (i, &len) in lengths.iter().enumerate() {
        let real = x.slice(s![i, ..len, ..]);
        let whole = x.slice(s![i, .., ..]);
        let avg = |v: &[f32]| v.iter().map(|&a| a as f64).sum::<f64>() / v.len() as f64;
        let real_mean = if len == 0 {
            "     n/a".to_string()
        } else {
            format!("{:>8.4}", avg(&real.iter().copied().collect::<Vec<_>>()))
        };
        println!(
            "sequence {i}: mean of real tokens {real_mean} | masked layer's mean {:>8.4} | unmasked layer's mean {:>8.4}",
            mean(i),
            avg(&whole.iter().copied().collect::<Vec<_>>()),
        );
    }
    println!(
        "sequence 1, token 0: masked y = {:?}\n                      unmasked y = {:?}",
        ym.slice(s![1, 0, ..]).to_vec(),
        yp.slice(s![1, 0, ..]).to_vec()
    );
    println!(
        "sequence 2 (all padding): masked y is all zero: {}",
        ym.slice(s![2, .., ..]).iter().all(|&v| v == 0.0)
    );

    // Changing the padding changes nothing for the masked layer.
    let mut x2 = x.clone();
    x2.iter_mut()
        .filter(|v| **v == 100.0)
        .for_each(|v| *v = -7.0);
    let (ym2, _) = masked.forward_train(x2.view(), mask.view())?;
    let real_diff = (0..n)
        .flat_map(|i| (0..lengths[i]).map(move |j| (i, j)))
        .flat_map(|(i, j)| (0..d).map(move |k| (i, j, k)))
        .map(|(i, j, k)| (ym[[i, j, k]] - ym2[[i, j, k]]).abs())
        .fold(0.0f32, f32::max);
    println!("padding 100.0 → -7.0: max |Δy| over real tokens = {real_diff}");

    // Backward takes the mask from `saved`: the same call as for any layer.
    let dy = Array3::from_shape_fn((n, t, d), |(i, j, k)| ((i + j + k) % 3) as f32 - 1.0);
    let grads = masked.backward(x.view(), dy.view(), &saved)?;
    println!(
        "backward: dx of the padded sequence is zero: {}; dgamma = {:?}",
        grads.dx.slice(s![2, .., ..]).iter().all(|&v| v == 0.0),
        grads.dgamma.map(|g| g
            .iter()
            .map(|v| (v * 1e4).round() / 1e4)
            .collect::<Vec<_>>())
    );
    Ok(())
}
