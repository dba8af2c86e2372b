//! Compile-time fixture (issue 13, item 8): a crate with 20 `#[norm]` declarations, to
//! time what the expansion costs. `benches/README.md` ("Compile time of 20 declarations")
//! has the command; the binary runs one train and one eval forward of each layer.
//!
//! Run: `cargo run -p norm-bench --example compile20`

use normkit::ndarray::{Array, Array2, Array3, Array4, Dimension};
use normkit::prelude::*;

#[norm(input = "N,C", axes = "N", affine, running_stats)]
pub struct Bn1d;
#[norm(input = "N,C,L", axes = "N,L", affine, running_stats)]
pub struct Bn1dL;
#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
pub struct Bn2d;
#[norm(input = "N,H,W,C", axes = "N,H,W", affine, running_stats)]
pub struct Bn2dLast;
#[norm(input = "N,C,H,W", axes = "N,H,W", affine)]
pub struct Bn2dNoRunning;
#[norm(input = "N,D", axes = "D", affine = "D")]
pub struct Ln;
#[norm(input = "N,T,D", axes = "D", affine = "D")]
pub struct Ln3;
#[norm(input = "N,C,H,W", axes = "C,H,W", affine = "C,H,W")]
pub struct LnChw;
#[norm(
    input = "N,T,D",
    axes = "D",
    center = false,
    affine = "D",
    bias = false,
    eps = 1e-6
)]
pub struct Rms;
#[norm(input = "N,D", axes = "D", center = false, eps = 1e-12)]
pub struct L2;
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
pub struct Gn2;
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 4, affine)]
pub struct Gn4;
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 1, affine)]
pub struct Gn1;
#[norm(input = "N,C,H,W", axes = "H,W")]
pub struct In;
#[norm(input = "N,C,H,W", axes = "H,W", affine, running_stats)]
pub struct InAffine;
#[norm(input = "N,C,H,W", axes = "H,W", unbiased, affine = external)]
pub struct AdaIn;
#[norm(input = "N,C,H,W", axes = "H,W", center = false, affine, eps = 1e-6)]
pub struct Frn;
#[norm(input = "N,D", axes = "N", unbiased)]
pub struct Standardize;
#[norm(input = "N,C,H,W", axes = "N,H,W", ghost = 2, affine, running_stats)]
pub struct Ghost;
#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 2, affine)
    )
)]
pub struct Chain;

/// A deterministic input of the given shape.
fn input<D: Dimension>(shape: D) -> Array<f32, D> {
    let mut k = 0u32;
    Array::from_shape_simple_fn(shape, || {
        k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        f32::from((k >> 16) as u16) / 65_536.0 - 0.5
    })
}

macro_rules! run {
    ($name:literal, $layer:expr, $x:expr) => {{
        let mut layer = $layer;
        let (y, _) = layer.forward_train($x.view())?;
        let e = layer.forward_eval($x.view())?;
        println!(
            "{:>14}: sum y = {:+.4}, sum eval = {:+.4}",
            $name,
            y.sum(),
            e.sum()
        );
    }};
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let x2: Array2<f32> = input(normkit::ndarray::Dim([4, 8]));
    let x3: Array3<f32> = input(normkit::ndarray::Dim([4, 8, 6]));
    let x4: Array4<f32> = input(normkit::ndarray::Dim([4, 8, 3, 3]));
    run!("Bn1d", Bn1d::new(8), x2);
    run!("Bn1dL", Bn1dL::new(8), x3);
    run!("Bn2d", Bn2d::new(8), x4);
    run!("Bn2dLast", Bn2dLast::new(3), x4);
    run!("Bn2dNoRunning", Bn2dNoRunning::new(8), x4);
    run!("Ln", Ln::new(8), x2);
    run!("Ln3", Ln3::new(6), x3);
    run!("LnChw", LnChw::new(8, 3, 3), x4);
    run!("Rms", Rms::new(6), x3);
    run!("L2", L2::new(), x2);
    run!("Gn2", Gn2::new(8), x4);
    run!("Gn4", Gn4::new(8), x4);
    run!("Gn1", Gn1::new(8), x4);
    run!("In", In::new(), x4);
    run!("InAffine", InAffine::new(8), x4);
    let mut adain = AdaIn::new();
    let (scale, shift) = (
        input(normkit::ndarray::Dim([4, 8])),
        input(normkit::ndarray::Dim([4, 8])),
    );
    let (y, _) = adain.forward_train(x4.view(), scale.view(), shift.view())?;
    println!("{:>14}: sum y = {:+.4}", "AdaIn", y.sum());
    run!("Frn", Frn::new(8), x4);
    run!("Standardize", Standardize::new(), x2);
    run!("Ghost", Ghost::new(8), x4);
    run!("Chain", Chain::new(8), x4);
    Ok(())
}
