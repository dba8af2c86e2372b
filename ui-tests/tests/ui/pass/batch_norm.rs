//! Batch Norm (Ioffe & Szegedy 2015): statistics per channel over N, H, W, running
//! statistics for inference.
use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    affine,
    running_stats,
    momentum = 0.1
)]
struct BatchNorm;

fn main() -> Result<(), NormError> {
    let mut bn = BatchNorm::<f32>::new(3);
    assert_eq!(bn.gamma.shape(), &[3]);
    assert_eq!(bn.beta.shape(), &[3]);
    assert_eq!(bn.running_mean.shape(), &[3]);
    let x = Array4::from_shape_fn((2, 3, 4, 5), |(n, c, h, w)| (n + 2 * c + h * w) as f32);
    let (y, saved) = bn.forward(x.view(), Mode::Train)?;
    assert_eq!(bn.num_batches_tracked, 1);
    let grads = bn.backward(x.view(), y.view(), &saved)?;
    assert_eq!(grads.dx.shape(), x.shape());
    assert_eq!(grads.dgamma.unwrap().shape(), &[3]);
    assert_eq!(grads.dbeta.unwrap().shape(), &[3]);
    let y_eval = bn.forward_eval(x.view())?;
    assert_eq!(y_eval.shape(), x.shape());
    let (_, saved_eval) = bn.forward(x.view(), Mode::Eval)?;
    assert!(saved_eval.used_running_stats());
    let moments = bn.stats(x.view())?;
    assert_eq!(moments.mean.shape(), &[3]);
    Ok(())
}
