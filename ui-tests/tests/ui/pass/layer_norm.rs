//! Layer Norm (Ba et al. 2016) over the feature axis of a sequence, as in Transformers.
use normkit::ndarray::Array3;
use normkit::prelude::*;

#[norm(input = "N,L,D", axes = "D", affine = "D", eps = 1e-6)]
struct LayerNorm;

fn main() -> Result<(), NormError> {
    let mut ln = LayerNorm::<f32>::new(8);
    assert_eq!(ln.gamma.shape(), &[8]);
    let x = Array3::from_shape_fn((2, 5, 8), |(n, l, d)| (n * 40 + l * 8 + d) as f32 * 0.1);
    let (y, saved) = ln.forward_train(x.view())?;
    for row in y.rows() {
        let mean: f32 = row.sum() / 8.0;
        assert!(mean.abs() < 1e-5);
    }
    let grads = ln.backward(x.view(), y.view(), &saved)?;
    assert_eq!(grads.dgamma.unwrap().shape(), &[8]);
    assert_eq!(ln.stats(x.view())?.mean.shape(), &[2, 5]);
    Ok(())
}
