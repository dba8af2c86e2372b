//! A crate that denies warnings and missing docs: the generated layer adds no warning.
//!
//! trybuild compiles pass cases with rustc only, so `clippy::all` here documents intent;
//! clippy itself runs on the workspace's own targets.
#![deny(warnings, missing_docs, clippy::all)]

use normkit::ndarray::Array4;
use normkit::prelude::*;

/// Group Norm with 2 groups and per-channel γ/β.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
pub struct GroupNorm2;

/// Batch Norm over 4 fixed channels.
#[norm(input = "N,C=4,H,W", axes = "N,H,W", affine, running_stats)]
pub struct BatchNorm4;

/// A documented chain.
#[norm(
    input = "N,C,H,W",
    chain(bn(axes = "N,H,W", affine), gn(axes = "C,H,W", groups = 2))
)]
pub struct Bcn;

fn main() -> Result<(), NormError> {
    let x = Array4::from_shape_fn((2, 4, 3, 3), |(n, c, h, w)| {
        (n * 7 + c * 5 + h * 3 + w) as f32
    });
    let mut gn = GroupNorm2::<f32>::new(4);
    let (y, saved) = gn.forward(x.view(), Mode::Train)?;
    let _ = gn.backward(x.view(), y.view(), &saved)?;
    let mut bn = BatchNorm4::<f32>::default();
    let _ = bn.forward_train(x.view())?;
    let mut bcn = Bcn::<f32>::new(4);
    let _ = bcn.forward_train(x.view())?;
    Ok(())
}
