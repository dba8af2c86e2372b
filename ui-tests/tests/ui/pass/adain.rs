//! AdaIN (Huang & Belongie 2017): instance statistics, scale and shift from a style input.
use normkit::ndarray::{Array2, Array4};
use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W", affine = external, unbiased)]
struct AdaIn;

fn main() -> Result<(), NormError> {
    let mut adain = AdaIn::<f32>::new();
    let x = Array4::from_shape_fn((2, 3, 4, 4), |(n, c, h, w)| (n * c + h * 4 + w) as f32);
    let style_std = Array2::from_elem((2, 3), 2.0f32);
    let style_mean = Array2::from_elem((2, 3), 0.5f32);
    let (y, saved) = adain.forward(x.view(), style_std.view(), style_mean.view(), Mode::Train)?;
    let grads = adain.backward(x.view(), y.view(), &saved)?;
    assert_eq!(grads.dgamma.unwrap().shape(), &[2, 3]);
    assert_eq!(grads.dbeta.unwrap().shape(), &[2, 3]);
    let y2 = adain.forward_eval(x.view(), style_std.view(), style_mean.view())?;
    assert_eq!(y, y2);
    Ok(())
}
