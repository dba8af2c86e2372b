//! Doc comments and derives on the declared struct apply to the generated struct.
use normkit::ndarray::Array4;
use normkit::prelude::*;

/// Group Norm with 2 groups.
///
/// More documentation.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
#[derive(Clone, Debug, PartialEq)]
struct GroupNorm2;

/// A chain keeps the derives too.
#[norm(
    input = "N,C,H,W",
    chain(bn(axes = "N,H,W", running_stats), gn(axes = "C,H,W", groups = 2))
)]
#[derive(Clone, Debug)]
struct Chain;

fn main() -> Result<(), NormError> {
    let mut gn = GroupNorm2::<f32>::new(4);
    let before = gn.clone();
    assert_eq!(before, gn);
    let text = format!("{gn:?}");
    assert!(text.contains("gamma"), "{text}");
    let x = Array4::from_shape_fn((1, 4, 2, 2), |(n, c, h, w)| (n + c + h * w) as f32);
    gn.forward_train(x.view())?;
    let mut chain = Chain::<f32>::new(4);
    let copy = chain.clone();
    chain.forward_train(x.view())?;
    assert_eq!(copy.bn.num_batches_tracked, 0);
    assert_eq!(chain.bn.num_batches_tracked, 1);
    assert!(format!("{chain:?}").contains("running_mean"));
    Ok(())
}
