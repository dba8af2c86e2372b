//! Padding-aware Layer Norm: statistics over the real tokens of each sequence (`mask`), every
//! generated forward method taking the mask right after `x`.
#![deny(warnings, missing_docs)]
use normkit::ndarray::{Array2, Array3};
use normkit::prelude::*;

/// The masked layer.
#[norm(input = "N,T,D", axes = "T,D", mask = "N,T", affine = "D")]
pub struct PaddedLayerNorm;

fn main() -> Result<(), NormError> {
    let mut ln = PaddedLayerNorm::<f64>::new(4);
    let x = Array3::from_shape_fn((2, 3, 4), |(n, t, d)| (n * 12 + t * 4 + d) as f64);
    let mask = Array2::from_shape_fn((2, 3), |(n, t)| t < 2 - n);
    let (y, saved) = ln.forward(x.view(), mask.view(), Mode::Train)?;
    let (y2, _) = ln.forward_train(x.view(), mask.view())?;
    assert_eq!(y, y2);
    assert_eq!(ln.forward_eval(x.view(), mask.view())?, y);
    let mut out = Array3::zeros((2, 3, 4));
    ln.forward_eval_into(x.view(), mask.view(), out.view_mut())?;
    let mut saved2 = Saved::new();
    ln.forward_train_into(x.view(), mask.view(), out.view_mut(), &mut saved2)?;
    let grads = ln.backward(x.view(), y.view(), &saved)?;
    assert_eq!(grads.dx.shape(), &[2, 3, 4]);
    Ok(())
}
