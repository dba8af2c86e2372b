//! Positional Normalization (Li et al. 2019): across the channels at every position.
use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C")]
struct PositionalNorm;

fn main() -> Result<(), NormError> {
    let mut pono = PositionalNorm::<f32>::default();
    let x = Array4::from_shape_fn((2, 3, 4, 4), |(n, c, h, w)| (n + c * c + h + w) as f32);
    let (y, saved) = pono.forward(x.view(), Mode::Train)?;
    assert_eq!(pono.stats(x.view())?.mean.shape(), &[2, 4, 4]);
    let grads = pono.backward(x.view(), y.view(), &saved)?;
    assert!(grads.dgamma.is_none() && grads.dbeta.is_none());
    Ok(())
}
