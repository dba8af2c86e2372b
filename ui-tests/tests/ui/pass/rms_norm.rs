//! RMSNorm (Zhang & Sennrich 2019): no centering, divide by the root mean square.
use normkit::ndarray::Array3;
use normkit::prelude::*;

#[norm(
    input = "N,L,D",
    axes = "D",
    center = false,
    affine = "D",
    bias = false,
    eps = 1e-6
)]
struct RmsNorm;

fn main() -> Result<(), NormError> {
    let mut rms = RmsNorm::<f32>::new(8);
    assert_eq!(rms.gamma.shape(), &[8]);
    let x = Array3::from_shape_fn((2, 3, 8), |(n, l, d)| (n + l + d) as f32 + 1.0);
    let (y, saved) = rms.forward_train(x.view())?;
    let grads = rms.backward(x.view(), y.view(), &saved)?;
    assert!(grads.dbeta.is_none());
    assert_eq!(grads.dgamma.unwrap().shape(), &[8]);
    Ok(())
}
