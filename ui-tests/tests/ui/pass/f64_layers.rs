//! Every layer is generic over its element type: f64 works like f32.
use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
struct GroupNorm;

#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    affine,
    running_stats,
    momentum = "cumulative"
)]
struct BatchNorm;

fn main() -> Result<(), NormError> {
    let x = Array4::from_shape_fn((2, 4, 3, 3), |(n, c, h, w)| {
        (n * 7 + c * 5 + h * 3 + w) as f64
    });
    let mut gn = GroupNorm::<f64>::new(4);
    let (y, saved) = gn.forward(x.view(), Mode::Train)?;
    let grads = gn.backward(x.view(), y.view(), &saved)?;
    let dx: normkit::ndarray::Array4<f64> = grads.dx;
    assert!(dx.iter().all(|v| v.is_finite()));
    let mut bn = BatchNorm::<f64>::new(4);
    bn.forward_train(x.view())?;
    bn.forward_train(x.view())?;
    assert_eq!(bn.num_batches_tracked, 2);
    let y32 = GroupNorm::<f32>::new(4).forward_eval(x.mapv(|v| v as f32).view())?;
    assert!((y32[[0, 0, 0, 0]] as f64 - y[[0, 0, 0, 0]]).abs() < 1e-5);
    Ok(())
}
