//! Every parameter size fixed in `input`: `new()` takes no argument and `Default` exists.
use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(input = "N,C=64,H,W", axes = "N,H,W", affine, running_stats)]
struct BatchNorm64;

#[norm(input = "N,L,D=16", axes = "D", affine = "D")]
struct LayerNorm16;

fn main() -> Result<(), NormError> {
    let mut bn: BatchNorm64 = Default::default();
    assert_eq!(bn.gamma.shape(), &[64]);
    assert_eq!(bn.running_mean.shape(), &[64]);
    let same = BatchNorm64::<f32>::new();
    assert_eq!(same.gamma, bn.gamma);
    let x = Array4::from_shape_fn((2, 64, 2, 2), |(n, c, h, w)| (n + c + h + w) as f32);
    let (y, _) = bn.forward_train(x.view())?;
    assert_eq!(y.shape(), x.shape());
    let ln = LayerNorm16::<f64>::default();
    assert_eq!(ln.gamma.len(), 16);
    Ok(())
}
