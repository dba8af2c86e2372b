//! Group Norm (Wu & He 2018): channels split into groups, statistics per sample and group.
use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
struct GroupNorm;

fn main() -> Result<(), NormError> {
    let mut gn = GroupNorm::<f32>::new(4);
    let x = Array4::from_shape_fn((2, 4, 3, 3), |(n, c, h, w)| {
        (n * 7 + c * 5 + h * 3 + w) as f32
    });
    let (y, saved) = gn.forward(x.view(), Mode::Train)?;
    let grads = gn.backward(x.view(), y.view(), &saved)?;
    assert_eq!(grads.dgamma.unwrap().shape(), &[4]);
    assert_eq!(gn.stats(x.view())?.mean.shape(), &[2, 2]);
    Ok(())
}
