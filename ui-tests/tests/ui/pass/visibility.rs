//! `pub(crate)` and `pub` layers inside modules, used from outside the module.
mod layers {
    use normkit::prelude::*;

    /// Crate-visible Layer Norm.
    #[norm(input = "N,D", axes = "D", affine = "D")]
    pub(crate) struct LayerNorm;

    /// Public chain inside a private module.
    #[norm(input = "N,C,L", chain(bn(axes = "N,L", affine), ln(axes = "C,L")))]
    pub struct Bcn;
}

use normkit::ndarray::{Array2, Array3};
use normkit::prelude::*;

fn main() -> Result<(), NormError> {
    let mut ln = layers::LayerNorm::<f32>::new(4);
    let x = Array2::from_shape_fn((3, 4), |(n, d)| (n * 4 + d) as f32);
    let (y, saved) = ln.forward_train(x.view())?;
    let grads = ln.backward(x.view(), y.view(), &saved)?;
    assert_eq!(grads.dgamma.unwrap().shape(), &[4]);
    ln.gamma.fill(2.0);

    let mut bcn = layers::Bcn::<f32>::new(2);
    let x = Array3::from_shape_fn((3, 2, 5), |(n, c, l)| (n * c + l) as f32);
    let (y, saved) = bcn.forward_train(x.view())?;
    let grads: layers::BcnGrads<f32> = bcn.backward(x.view(), y.view(), &saved)?;
    assert_eq!(grads.bn.dgamma.unwrap().shape(), &[2]);
    assert!(grads.ln.dgamma.is_none());
    Ok(())
}
