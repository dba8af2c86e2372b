//! Issue 13, item 7: the generated constructor with absurd sizes. `try_new` returns
//! `NormError::Size` (naming the layer and the array) where `DynNorm::new` does, with the same
//! reason; `new` panics with that message; valid sizes give the layer `new` documents.

use std::panic::{catch_unwind, AssertUnwindSafe};

use normkit::prelude::*;
use normkit::NormSpec;

/// BatchNorm2d: γ/β and running statistics per channel.
#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
#[derive(Clone, Debug, PartialEq)]
struct BatchNorm;

const BN: &str = r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#;

/// Running statistics only (the first array is `running_mean`).
#[norm(input = "N,C", axes = "N", running_stats)]
#[derive(Clone, Debug, PartialEq)]
struct PlainBatchNorm1d;

/// Parameters over two axes: their product can overflow while each size is valid.
#[norm(input = "N,L,D", axes = "L,D", affine = "L,D")]
#[derive(Clone, Debug, PartialEq)]
struct LayerNorm2;

const LN2: &str = r#"input = "N,L,D", axes = "L,D", affine = "L,D""#;

/// Group Norm with per-channel γ/β.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
#[derive(Clone, Debug, PartialEq)]
struct GroupNorm2;

const GN: &str = r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#;

/// A chain: the error names the stage's array.
#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 2)
    )
)]
#[derive(Clone, Debug, PartialEq)]
struct Chained;

fn size_reason(e: NormError, layer_name: &str) -> String {
    match e {
        NormError::Size { layer, reason } => {
            assert_eq!(layer, layer_name);
            reason
        }
        other => panic!("expected NormError::Size, got {other:?}"),
    }
}

fn dyn_reason(spec: &str, sizes: &[(&str, usize)]) -> String {
    let spec = NormSpec::parse(spec).unwrap();
    size_reason(DynNorm::<f32>::new(&spec, sizes).unwrap_err(), "DynNorm")
}

/// The message `new` panics with.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("new must panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .expect("a string panic payload")
}

#[test]
fn usize_max_is_a_size_error() {
    let e = BatchNorm::<f32>::try_new(usize::MAX).unwrap_err();
    let shown = e.to_string();
    let reason = size_reason(e, "BatchNorm");
    assert!(reason.contains("gamma"), "{reason}");
    assert!(reason.contains(&usize::MAX.to_string()), "{reason}");
    assert!(reason.contains("too large"), "{reason}");
    assert!(shown.contains("BatchNorm"), "{shown}");
    // The same reason as DynNorm's for the same declaration and size.
    assert_eq!(reason, dyn_reason(BN, &[("C", usize::MAX)]));
}

#[test]
fn overflowing_product_is_a_size_error() {
    let e = LayerNorm2::<f64>::try_new(1 << 40, 1 << 40).unwrap_err();
    let reason = size_reason(e, "LayerNorm2");
    assert!(
        reason.contains("gamma") && reason.contains("too large"),
        "{reason}"
    );
    assert!(reason.contains("1099511627776"), "{reason}");
}

#[test]
fn allocation_too_large_is_a_size_error() {
    // 2^50 f32 values (4 PiB): a valid size that no allocator can serve.
    let e = GroupNorm2::<f32>::try_new(1 << 50).unwrap_err();
    let reason = size_reason(e, "GroupNorm2");
    assert!(reason.contains("more than can be allocated"), "{reason}");
    assert!(reason.contains("1125899906842624"), "{reason}");
    assert_eq!(reason, dyn_reason(GN, &[("C", 1 << 50)]));
}

#[test]
fn the_failing_array_is_named() {
    let e = PlainBatchNorm1d::<f32>::try_new(usize::MAX).unwrap_err();
    let reason = size_reason(e, "PlainBatchNorm1d");
    assert!(reason.starts_with("running_mean"), "{reason}");
    let e = Chained::<f32>::try_new(usize::MAX).unwrap_err();
    let reason = size_reason(e, "Chained");
    assert!(reason.starts_with("bn.gamma"), "{reason}");
    assert_eq!(
        size_reason(
            LayerNorm2::<f32>::try_new(3, usize::MAX).unwrap_err(),
            "LayerNorm2"
        ),
        dyn_reason(LN2, &[("L", 3), ("D", usize::MAX)])
    );
}

#[test]
fn new_panics_with_the_same_message() {
    let expected = BatchNorm::<f32>::try_new(usize::MAX)
        .unwrap_err()
        .to_string();
    let got = panic_message(|| {
        let _ = BatchNorm::<f32>::new(usize::MAX);
    });
    assert_eq!(got, expected);
    let expected = LayerNorm2::<f64>::try_new(1 << 40, 1 << 40)
        .unwrap_err()
        .to_string();
    let got = panic_message(|| {
        let _ = LayerNorm2::<f64>::new(1 << 40, 1 << 40);
    });
    assert_eq!(got, expected);
}

#[test]
fn valid_sizes_give_the_documented_layer() {
    let bn = BatchNorm::<f32>::try_new(3).unwrap();
    assert_eq!(bn, BatchNorm::<f32>::new(3));
    assert_eq!(bn.gamma.to_vec(), vec![1.0; 3]);
    assert_eq!(bn.beta.to_vec(), vec![0.0; 3]);
    assert_eq!(bn.running_mean.to_vec(), vec![0.0; 3]);
    assert_eq!(bn.running_var.to_vec(), vec![1.0; 3]);
    assert_eq!(bn.num_batches_tracked, 0);
    let ln = LayerNorm2::<f64>::try_new(2, 5).unwrap();
    assert_eq!(ln.gamma.shape(), &[2, 5]);
    assert!(ln.gamma.iter().all(|&v| v == 1.0) && ln.beta.iter().all(|&v| v == 0.0));
    // A zero size is valid (empty parameters), as for DynNorm.
    let empty = GroupNorm2::<f32>::try_new(0).unwrap();
    assert_eq!(empty.gamma.len(), 0);
    let c = Chained::<f32>::try_new(4).unwrap();
    assert_eq!(c.bn.gamma.len(), 4);
}
