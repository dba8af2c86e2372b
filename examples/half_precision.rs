//! Half-precision layers: a bf16 LayerNorm and an f16 BatchNorm, checked against the f32
//! layers on the same values (the half layers compute in f32 and round each result once).
//!
//! Run: `cargo run --release --example half_precision`

use normkit::ndarray::{Array2, Array4};
use normkit::prelude::*;
use normkit::{bf16, f16};

#[norm(input = "N,D", axes = "D", affine = "D")]
pub struct LayerNorm;

#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
pub struct BatchNorm2d;

fn main() -> Result<(), NormError> {
    // bf16 LayerNorm over rows of 8: storage in bf16, statistics in f64.
    let x = Array2::from_shape_fn((2, 8), |(i, j)| {
        bf16::from_f32(100.0 + (i * 8 + j) as f32 * 0.5)
    });
    let mut ln = LayerNorm::<bf16>::new(8);
    let (y, saved) = ln.forward(x.view(), Mode::Train)?;
    let dy = Array2::from_elem((2, 8), bf16::ONE);
    let grads = ln.backward(x.view(), dy.view(), &saved)?;
    println!("bf16 LayerNorm y[0]  = {}", y.row(0));
    println!(
        "bf16 LayerNorm dβ    = {}",
        grads
            .dbeta
            .as_ref()
            .map(|g| g.to_string())
            .unwrap_or_default()
    );

    // The same values through the f32 layer, rounded once: identical.
    let mut ln32 = LayerNorm::<f32>::new(8);
    let (y32, _) = ln32.forward(x.mapv(f32::from).view(), Mode::Train)?;
    assert!(y.iter().zip(&y32).all(|(a, b)| *a == bf16::from_f32(*b)));

    // f16 BatchNorm2d: running statistics kept in f16, updated in f32.
    let mut bn = BatchNorm2d::<f16>::new(3);
    let x = Array4::from_shape_fn((4, 3, 2, 2), |(n, c, h, w)| {
        f16::from_f32((n + 2 * c) as f32 + 0.25 * (h * 2 + w) as f32)
    });
    for _ in 0..3 {
        bn.forward(x.view(), Mode::Train)?;
    }
    println!(
        "f16 BatchNorm2d running_mean = {} (after 3 steps)",
        bn.running_mean
    );
    let eval = bn.forward_eval(x.view())?;
    println!(
        "f16 BatchNorm2d eval y[0, :, 0, 0] = {}",
        eval.slice(normkit::ndarray::s![0, .., 0, 0])
    );
    Ok(())
}
