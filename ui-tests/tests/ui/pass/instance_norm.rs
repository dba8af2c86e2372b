//! Instance Norm (Ulyanov et al. 2016): per sample and channel, over H, W.
use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W", affine)]
struct InstanceNorm;

fn main() -> Result<(), NormError> {
    let mut layer = InstanceNorm::<f32>::new(3);
    let x = Array4::from_shape_fn((2, 3, 4, 4), |(n, c, h, w)| (n * c + h * 4 + w) as f32);
    let (y, saved) = layer.forward(x.view(), Mode::Train)?;
    let grads = layer.backward(x.view(), y.view(), &saved)?;
    assert_eq!(grads.dx.dim(), (2, 3, 4, 4));
    assert_eq!(layer.stats(x.view())?.var.shape(), &[2, 3]);
    Ok(())
}
