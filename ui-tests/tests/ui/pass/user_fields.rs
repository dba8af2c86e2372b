//! User fields that implement `Default` sit next to the generated ones.
use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
struct TrackedBatchNorm {
    /// A label shown in logs.
    pub label: String,
    steps: u64,
    history: Vec<f32>,
}

fn main() -> Result<(), NormError> {
    let mut bn = TrackedBatchNorm::<f32>::new(3);
    assert!(bn.label.is_empty() && bn.steps == 0 && bn.history.is_empty());
    bn.label.push_str("bn1");
    let x = Array4::from_shape_fn((2, 3, 2, 2), |(n, c, h, w)| (n * c + h + w) as f32);
    let (y, _) = bn.forward(x.view(), Mode::Train)?;
    bn.steps += 1;
    bn.history.push(y.sum());
    assert_eq!(
        (bn.label.as_str(), bn.steps, bn.history.len()),
        ("bn1", 1, 1)
    );
    Ok(())
}
