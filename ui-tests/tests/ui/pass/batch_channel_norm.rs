//! Batch-Channel Normalization (Qiao et al.): batch norm, then a group ("channel") norm
//! whose γ/β are per group, as in the official code.
use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 2, affine = "G"),
    )
)]
struct BatchChannelNorm;

fn main() -> Result<(), NormError> {
    let mut bcn = BatchChannelNorm::<f32>::new(4);
    assert_eq!(bcn.bn.gamma.shape(), &[4]);
    assert_eq!(bcn.bn.running_var.shape(), &[4]);
    assert_eq!(bcn.gn.gamma.shape(), &[2]);
    let x = Array4::from_shape_fn((2, 4, 3, 3), |(n, c, h, w)| {
        (n * 7 + c * 5 + h * 3 + w) as f32
    });
    let (y, saved) = bcn.forward(x.view(), Mode::Train)?;
    assert_eq!(bcn.bn.num_batches_tracked, 1);
    let grads: BatchChannelNormGrads = bcn.backward(x.view(), y.view(), &saved)?;
    assert_eq!(grads.dx.shape(), x.shape());
    assert_eq!(grads.bn.dgamma.unwrap().shape(), &[4]);
    assert_eq!(grads.gn.dbeta.unwrap().shape(), &[2]);
    let _ = bcn.forward_eval(x.view())?;
    Ok(())
}
