//! Weight Standardization (Qiao et al. 2019): each output filter of a convolution weight
//! standardized over its fan-in, unbiased std, eps added to the std.
use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(
    input = "O,I,kh,kw",
    axes = "I,kh,kw",
    unbiased,
    eps_mode = "std",
    eps = 1e-5
)]
struct WeightStandardization;

fn main() -> Result<(), NormError> {
    let mut ws: WeightStandardization = Default::default();
    let w = Array4::from_shape_fn((4, 3, 3, 3), |(o, i, h, k)| {
        (o * 27 + i * 9 + h * 3 + k) as f32
    });
    let (w_hat, saved) = ws.forward_train(w.view())?;
    let grads = ws.backward(w.view(), w_hat.view(), &saved)?;
    assert!(grads.dgamma.is_none());
    assert_eq!(ws.stats(w.view())?.mean.shape(), &[4]);
    Ok(())
}
