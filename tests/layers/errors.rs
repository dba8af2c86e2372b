//! The run-time error catalogue: malformed calls on generated and dynamic layers.
//!
//! Every case in [`CATALOGUE`] makes one bad call and checks that
//! - it returns the documented `NormError` variant, with the exact fields;
//! - the message (`to_string()`) names the layer and the offending sizes;
//! - it does not panic (each case runs under `catch_unwind`);
//! - the layer's parameters and running statistics are unchanged afterwards (the layer
//!   is trained a step and perturbed first, cloned, and compared after the call).
//!
//! Inputs that are not errors but look like they might be (NaN/Inf values, `eps = 0` on a
//! constant group, a `Saved` from an eval forward, empty kept axes, one value per channel in
//! eval mode) are tested below the catalogue with what the library does: it propagates NaN
//! like PyTorch, only into the statistics groups that contain it.
//!
//! The last part checks that `NormSpec::parse` rejects the declarations of the trybuild
//! compile-fail cases (`ui-tests/tests/ui/fail`, the `normkit-ui-tests` member) with the same
//! messages as the macro, pointing at the same text.

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use normkit::ndarray::{Array, Array1, Array2, Array3, Array4, ArrayD, Axis, IxDyn};
use normkit::prelude::*;
use normkit::{NormSpec, StageParams, ThreadGroup, ThreadMember};

// ---------------------------------------------------------------------------------------
// Layers under test
// ---------------------------------------------------------------------------------------

/// Group Norm, 2 groups, per-channel γ/β.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
#[derive(Clone, Debug, PartialEq)]
struct GroupNorm2;

/// Batch Norm with γ/β and running statistics.
#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
#[derive(Clone, Debug, PartialEq)]
struct BatchNorm;

/// Batch Norm without γ/β: the running statistics are the only per-channel state.
#[norm(input = "N,C,H,W", axes = "N,H,W", running_stats)]
#[derive(Clone, Debug, PartialEq)]
struct PlainBatchNorm;

/// Batch Norm over a fixed number of channels.
#[norm(input = "N,C=4,H,W", axes = "N,H,W", affine, running_stats)]
#[derive(Clone, Debug, PartialEq)]
struct BatchNorm4;

/// Instance Norm without parameters.
#[norm(input = "N,C,H,W", axes = "H,W")]
#[derive(Clone, Debug, PartialEq)]
struct InstanceNorm;

/// Weight Standardization: unbiased std, eps added to the std.
#[norm(input = "O,I,kh,kw", axes = "I,kh,kw", unbiased, eps_mode = "std")]
#[derive(Clone, Debug, PartialEq)]
struct WeightStd;

/// AdaIN: scale and shift passed to `forward`, shaped (N, C).
#[norm(input = "N,C,H,W", axes = "H,W", affine = external)]
#[derive(Clone, Debug, PartialEq)]
struct AdaIn;

/// Batch-Channel Norm: batch norm then group norm.
#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 2, affine),
    )
)]
#[derive(Clone, Debug, PartialEq)]
struct Bcn;

/// Layer Norm with `eps = 0`.
#[norm(input = "N,L,D", axes = "D", affine = "D", eps = 0)]
#[derive(Clone, Debug, PartialEq)]
struct LayerNormEps0;

const GN_SPEC: &str = r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#;
const BN4_SPEC: &str = r#"input = "N,C=4,H,W", axes = "N,H,W", affine, running_stats"#;
const ADAIN_SPEC: &str = r#"input = "N,C,H,W", axes = "H,W", affine = external"#;
const BCN_SPEC: &str = r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2, affine))"#;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Deterministic, well-spread test data.
fn x4(shape: (usize, usize, usize, usize)) -> Array4<f32> {
    Array4::from_shape_fn(shape, |(a, b, c, d)| {
        ((a * 31 + b * 17 + c * 7 + d * 3) as f32 * 0.37).sin() * 2.0 + b as f32
    })
}

fn x4d(shape: (usize, usize, usize, usize)) -> ArrayD<f32> {
    x4(shape).into_dyn()
}

/// Non-default parameters: γ and β away from 1 and 0.
fn perturb(a: &mut Array1<f32>, k: f32) {
    for (i, v) in a.iter_mut().enumerate() {
        *v += k * (i as f32 + 1.0);
    }
}

/// Makes `call` on `layer`, which must be refused, and checks the layer is unchanged.
fn refused<L, R>(layer: &mut L, call: impl FnOnce(&mut L) -> Result<R, NormError>) -> NormError
where
    L: Clone + PartialEq + Debug,
    R: Debug,
{
    let before = layer.clone();
    let err = call(layer).expect_err("the call must be refused");
    assert_eq!(*layer, before, "layer state changed by a refused call");
    err
}

/// [`refused`] for a dynamic layer: its state is `stages()`.
fn refused_dyn<R: Debug>(
    layer: &mut DynNorm<f32>,
    call: impl FnOnce(&mut DynNorm<f32>) -> Result<R, NormError>,
) -> NormError {
    let before: Vec<StageParams<f32>> = layer.stages().to_vec();
    let err = call(layer).expect_err("the call must be refused");
    assert_eq!(
        layer.stages(),
        &before[..],
        "layer state changed by a refused call"
    );
    err
}

fn spec(src: &str) -> NormSpec {
    NormSpec::parse(src).unwrap_or_else(|e| panic!("spec `{src}` must parse: {e}"))
}

fn trained_gn() -> GroupNorm2 {
    let mut gn = GroupNorm2::new(4);
    perturb(&mut gn.gamma, 0.5);
    perturb(&mut gn.beta, -0.25);
    gn
}

fn trained_bn() -> BatchNorm {
    let mut bn = BatchNorm::new(3);
    bn.forward_train(x4((2, 3, 4, 4)).view()).unwrap();
    perturb(&mut bn.gamma, 0.5);
    perturb(&mut bn.beta, -0.25);
    bn
}

fn trained_dyn_gn() -> DynNorm<f32> {
    let mut gn = DynNorm::new(&spec(GN_SPEC), &[("C", 4)])
        .unwrap()
        .with_name("gn_dyn");
    if let Some(g) = gn.stages_mut()[0].gamma.as_mut() {
        g.mapv_inplace(|v| v * 1.5);
    }
    gn
}

fn trained_dyn_bcn() -> DynNorm<f32> {
    let mut bcn = DynNorm::new(&spec(BCN_SPEC), &[("C", 4)])
        .unwrap()
        .with_name("bcn_dyn");
    bcn.forward_train(x4d((2, 4, 3, 3)).view()).unwrap();
    bcn
}

// ---------------------------------------------------------------------------------------
// The catalogue
// ---------------------------------------------------------------------------------------

/// One malformed call.
struct Case {
    name: &'static str,
    /// Makes the call (checking the state is unchanged) and returns its error.
    call: fn() -> NormError,
    /// The exact variant and fields expected.
    is: fn(&NormError) -> bool,
    /// Substrings of the message: the layer's name and the offending sizes.
    says: &'static [&'static str],
}

const CATALOGUE: &[Case] = &[
    // --- rank and sizes -------------------------------------------------------------
    Case {
        name: "DynNorm: input of the wrong rank (train)",
        call: || {
            let mut gn = trained_dyn_gn();
            let x = Array3::<f32>::zeros((2, 4, 9)).into_dyn();
            refused_dyn(&mut gn, |l| l.forward_train(x.view()))
        },
        is: |e| matches!(e, NormError::Rank { layer, expected: 4, actual: 3 } if layer == "gn_dyn"),
        says: &["gn_dyn", "4 axes", "got 3"],
    },
    Case {
        name: "DynNorm: input of the wrong rank (eval, stats, backward)",
        call: || {
            let mut gn = trained_dyn_gn();
            let x = ArrayD::<f32>::zeros(IxDyn(&[2, 4, 3, 3, 1]));
            let (_, saved) = gn.forward_train(x4d((2, 4, 3, 3)).view()).unwrap();
            let stats = gn.stats(x.view()).unwrap_err();
            let back = gn.backward(x.view(), x.view(), &saved).unwrap_err();
            let eval = refused_dyn(&mut gn, |l| l.forward_eval(x.view()));
            assert_eq!(stats, eval);
            assert_eq!(back, eval);
            eval
        },
        is: |e| matches!(e, NormError::Rank { layer, expected: 4, actual: 5 } if layer == "gn_dyn"),
        says: &["gn_dyn", "4 axes", "got 5"],
    },
    Case {
        name: "wrong channel count (gamma has C = 4, input C = 6)",
        call: || {
            let mut gn = trained_gn();
            refused(&mut gn, |l| l.forward_train(x4((2, 6, 3, 3)).view()))
        },
        is: |e| {
            matches!(e, NormError::AxisSize { layer, axis, expected: 4, actual: 6, source }
                if layer == "GroupNorm2" && axis == "C" && source == "gamma")
        },
        says: &["GroupNorm2", "axis C", "size 6", "gamma expects 4"],
    },
    Case {
        name: "wrong channel count against the running statistics (train)",
        call: || {
            let mut bn = PlainBatchNorm::new(3);
            bn.forward_train(x4((2, 3, 2, 2)).view()).unwrap();
            refused(&mut bn, |l| l.forward_train(x4((2, 5, 2, 2)).view()))
        },
        is: |e| {
            matches!(e, NormError::AxisSize { layer, axis, expected: 3, actual: 5, source }
                if layer == "PlainBatchNorm" && axis == "C" && source == "running_mean")
        },
        says: &[
            "PlainBatchNorm",
            "axis C",
            "size 5",
            "running_mean expects 3",
        ],
    },
    Case {
        name: "wrong channel count in eval mode",
        call: || {
            let mut bn = trained_bn();
            refused(&mut bn, |l| l.forward_eval(x4((2, 2, 2, 2)).view()))
        },
        is: |e| {
            matches!(e, NormError::AxisSize { layer, axis, expected: 3, actual: 2, source }
                if layer == "BatchNorm" && axis == "C" && source == "gamma")
        },
        says: &["BatchNorm", "axis C", "size 2", "expects 3"],
    },
    Case {
        name: "fixed size in `input` (C=4) disagrees with the input (C = 3)",
        call: || {
            let mut bn = BatchNorm4::new();
            bn.forward_train(x4((2, 4, 2, 2)).view()).unwrap();
            refused(&mut bn, |l| l.forward_train(x4((2, 3, 2, 2)).view()))
        },
        is: |e| {
            matches!(e, NormError::AxisSize { layer, axis, expected: 4, actual: 3, source }
                if layer == "BatchNorm4" && axis == "C" && source == "the fixed size in `input`")
        },
        says: &["BatchNorm4", "axis C", "size 3", "fixed size", "expects 4"],
    },
    Case {
        name: "DynNorm with a fixed size: input disagrees",
        call: || {
            let mut bn = DynNorm::new(&spec(BN4_SPEC), &[]).unwrap().with_name("bn4");
            refused_dyn(&mut bn, |l| l.forward_train(x4d((2, 5, 2, 2)).view()))
        },
        is: |e| {
            matches!(e, NormError::AxisSize { layer, axis, expected: 4, actual: 5, .. }
                if layer == "bn4" && axis == "C")
        },
        says: &["bn4", "axis C", "size 5", "expects 4"],
    },
    Case {
        name: "groups = 2 does not divide C = 5",
        call: || {
            let mut gn = GroupNorm2::new(5);
            refused(&mut gn, |l| l.forward_train(x4((2, 5, 3, 3)).view()))
        },
        is: |e| {
            matches!(e, NormError::GroupsDivide { layer, channels: 5, groups: 2 }
                if layer == "GroupNorm2")
        },
        says: &["GroupNorm2", "C = 5", "groups = 2"],
    },
    // --- backward: dy and Saved -----------------------------------------------------
    Case {
        name: "dy shape differs from x",
        call: || {
            let mut gn = trained_gn();
            let x = x4((2, 4, 3, 3));
            let (_, saved) = gn.forward_train(x.view()).unwrap();
            let dy = x4((2, 4, 3, 2));
            refused(&mut gn, |l| l.backward(x.view(), dy.view(), &saved))
        },
        is: |e| {
            matches!(e, NormError::Shape { layer, what, expected, actual }
                if layer == "GroupNorm2" && what == "dy"
                    && expected == &[2, 4, 3, 3] && actual == &[2, 4, 3, 2])
        },
        says: &["GroupNorm2", "dy", "[2, 4, 3, 2]", "[2, 4, 3, 3]"],
    },
    Case {
        name: "Saved from another layer (instance norm → group norm)",
        call: || {
            let x = x4((2, 4, 3, 3));
            let (_, saved) = InstanceNorm::new().forward_train(x.view()).unwrap();
            let mut gn = trained_gn();
            refused(&mut gn, |l| l.backward(x.view(), x.view(), &saved))
        },
        is: |e| {
            matches!(e, NormError::Saved { layer, reason }
                if layer == "GroupNorm2" && reason.contains("another configuration"))
        },
        says: &["GroupNorm2", "Saved", "another configuration"],
    },
    Case {
        name: "Saved from another layer (group norm → chain)",
        call: || {
            let x = x4((2, 4, 3, 3));
            let (_, saved) = trained_gn().forward_train(x.view()).unwrap();
            let mut bcn = Bcn::new(4);
            bcn.forward_train(x.view()).unwrap();
            refused(&mut bcn, |l| l.backward(x.view(), x.view(), &saved))
        },
        is: |e| {
            matches!(e, NormError::Saved { layer, reason }
                if layer == "Bcn" && reason.contains("another configuration"))
        },
        says: &["Bcn", "Saved"],
    },
    Case {
        name: "Saved for another input shape",
        call: || {
            let mut gn = trained_gn();
            let (_, saved) = gn.forward_train(x4((2, 4, 3, 3)).view()).unwrap();
            let x = x4((2, 4, 5, 5));
            refused(&mut gn, |l| l.backward(x.view(), x.view(), &saved))
        },
        is: |e| {
            matches!(e, NormError::Saved { layer, reason }
                if layer == "GroupNorm2"
                    && reason.contains("[2, 4, 3, 3]") && reason.contains("[2, 4, 5, 5]"))
        },
        says: &["GroupNorm2", "[2, 4, 3, 3]", "[2, 4, 5, 5]"],
    },
    Case {
        name: "Saved::new() never filled by a forward pass",
        call: || {
            let mut bn = trained_bn();
            let x = x4((2, 3, 4, 4));
            refused(&mut bn, |l| l.backward(x.view(), x.view(), &Saved::new()))
        },
        is: |e| {
            matches!(e, NormError::Saved { layer, reason }
                if layer == "BatchNorm" && reason.contains("never filled"))
        },
        says: &["BatchNorm", "Saved", "never filled"],
    },
    Case {
        name: "DynNorm: Saved from a generated layer of another configuration",
        call: || {
            let x = x4((2, 4, 3, 3));
            let (_, saved) = InstanceNorm::new().forward_train(x.view()).unwrap();
            let mut gn = trained_dyn_gn();
            let xd = x.into_dyn();
            refused_dyn(&mut gn, |l| l.backward(xd.view(), xd.view(), &saved))
        },
        is: |e| matches!(e, NormError::Saved { layer, .. } if layer == "gn_dyn"),
        says: &["gn_dyn", "Saved"],
    },
    // --- too few values, empty groups -----------------------------------------------
    Case {
        name: "one value per channel in train mode with running statistics",
        call: || {
            let mut bn = trained_bn();
            refused(&mut bn, |l| l.forward(x4((1, 3, 1, 1)).view(), Mode::Train))
        },
        is: |e| {
            matches!(e, NormError::TooFewValues { layer, per_group: 1, shape }
                if layer == "BatchNorm" && shape == &[1, 3, 1, 1])
        },
        says: &["BatchNorm", "more than 1 value", "got 1", "[1, 3, 1, 1]"],
    },
    Case {
        name: "one value per channel, forward_train_into (saved untouched)",
        call: || {
            let mut bn = trained_bn();
            let x = x4((2, 3, 4, 4));
            let (_, mut saved) = bn.forward_train(x.view()).unwrap();
            let saved_before = saved.clone();
            let one = x4((1, 3, 1, 1));
            let mut out = Array4::<f32>::zeros((1, 3, 1, 1));
            let err = refused(&mut bn, |l| {
                l.forward_train_into(one.view(), out.view_mut(), &mut saved)
            });
            assert_eq!(saved, saved_before, "a refused call changed the Saved");
            assert!(
                out.iter().all(|&v| v == 0.0),
                "a refused call wrote the output"
            );
            err
        },
        is: |e| {
            matches!(e, NormError::TooFewValues { layer, per_group: 1, shape }
                if layer == "BatchNorm" && shape == &[1, 3, 1, 1])
        },
        says: &["BatchNorm", "got 1", "[1, 3, 1, 1]"],
    },
    Case {
        name: "unbiased (weight standardization) with 1-element groups in train",
        call: || {
            let mut ws = WeightStd::new();
            refused(&mut ws, |l| l.forward_train(x4((4, 1, 1, 1)).view()))
        },
        is: |e| {
            matches!(e, NormError::TooFewValues { layer, per_group: 1, shape }
                if layer == "WeightStd" && shape == &[4, 1, 1, 1])
        },
        says: &["WeightStd", "got 1", "[4, 1, 1, 1]"],
    },
    Case {
        name: "unbiased with 1-element groups: eval (batch statistics) and stats()",
        call: || {
            let mut ws = WeightStd::new();
            let x = x4((4, 1, 1, 1));
            let stats = ws.stats(x.view()).unwrap_err();
            let eval = refused(&mut ws, |l| l.forward_eval(x.view()));
            assert_eq!(stats, eval);
            eval
        },
        is: |e| {
            matches!(e, NormError::TooFewValues { layer, per_group: 1, shape }
                if layer == "WeightStd" && shape == &[4, 1, 1, 1])
        },
        says: &["WeightStd", "got 1", "[4, 1, 1, 1]"],
    },
    Case {
        name: "empty reduced axis (H = 0 in instance norm)",
        call: || {
            let mut inorm = InstanceNorm::new();
            refused(&mut inorm, |l| l.forward_train(x4((2, 3, 0, 4)).view()))
        },
        is: |e| {
            matches!(e, NormError::EmptyGroup { layer, shape }
                if layer == "InstanceNorm" && shape == &[2, 3, 0, 4])
        },
        says: &["InstanceNorm", "empty", "[2, 3, 0, 4]"],
    },
    Case {
        name: "empty batch in train mode (N = 0 is reduced in batch norm)",
        call: || {
            let mut bn = trained_bn();
            refused(&mut bn, |l| l.forward_train(x4((0, 3, 2, 2)).view()))
        },
        is: |e| {
            matches!(e, NormError::EmptyGroup { layer, shape }
                if layer == "BatchNorm" && shape == &[0, 3, 2, 2])
        },
        says: &["BatchNorm", "[0, 3, 2, 2]"],
    },
    // --- DynNorm construction and methods -------------------------------------------
    Case {
        name: "DynNorm::new without the size of C",
        call: || DynNorm::<f32>::new(&spec(GN_SPEC), &[]).unwrap_err(),
        is: |e| {
            matches!(e, NormError::Size { layer, reason }
                if layer == "DynNorm" && reason.contains("missing the size of axis `C`"))
        },
        says: &["DynNorm", "axis `C`"],
    },
    Case {
        name: "DynNorm::new with an unknown axis",
        call: || DynNorm::<f32>::new(&spec(GN_SPEC), &[("C", 4), ("X", 3)]).unwrap_err(),
        is: |e| {
            matches!(e, NormError::Size { layer, reason }
                if layer == "DynNorm" && reason.contains("no axis `X`")
                    && reason.contains("N, C, H, W"))
        },
        says: &["DynNorm", "`X`", "N, C, H, W"],
    },
    Case {
        name: "DynNorm::new with a size that conflicts with a fixed size",
        call: || DynNorm::<f32>::new(&spec(BN4_SPEC), &[("C", 8)]).unwrap_err(),
        is: |e| {
            matches!(e, NormError::Size { layer, reason }
                if layer == "DynNorm" && reason.contains("fixed to 4") && reason.contains("got 8"))
        },
        says: &["DynNorm", "`C`", "4", "8"],
    },
    Case {
        name: "DynNorm::new with a size of usize::MAX",
        call: || {
            let bn = r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#;
            DynNorm::<f32>::new(&spec(bn), &[("C", usize::MAX)]).unwrap_err()
        },
        is: |e| {
            matches!(e, NormError::Size { layer, reason }
                if layer == "DynNorm" && reason.contains("gamma")
                    && reason.contains(&usize::MAX.to_string()) && reason.contains("too large"))
        },
        says: &["DynNorm", "gamma", "too large"],
    },
    Case {
        name: "DynNorm::new with sizes whose product overflows",
        call: || {
            let ln = r#"input = "N,L,D", axes = "L,D", affine = "L,D""#;
            DynNorm::<f64>::new(&spec(ln), &[("L", 1 << 40), ("D", 1 << 40)]).unwrap_err()
        },
        is: |e| {
            matches!(e, NormError::Size { layer, reason }
                if layer == "DynNorm" && reason.contains("gamma") && reason.contains("too large"))
        },
        says: &["DynNorm", "gamma", "1099511627776"],
    },
    Case {
        name: "DynNorm::new with an allocation too large",
        // 2^50 f32 values (4 PiB): a valid size that no allocator can serve.
        call: || DynNorm::<f32>::new(&spec(GN_SPEC), &[("C", 1 << 50)]).unwrap_err(),
        is: |e| {
            matches!(e, NormError::Size { layer, reason }
                if layer == "DynNorm" && reason.contains("gamma")
                    && reason.contains("more than can be allocated"))
        },
        says: &["DynNorm", "gamma", "1125899906842624", "bytes"],
    },
    Case {
        name: "stats on an input whose reduced axis is empty",
        call: || {
            let bn1 = r#"input = "N,D", axes = "N", running_stats"#;
            let layer = DynNorm::<f32>::new(&spec(bn1), &[("D", 6)])
                .unwrap()
                .with_name("bn1d");
            let x = Array2::<f32>::zeros((0, 6)).into_dyn();
            layer.stats(x.view()).unwrap_err()
        },
        is: |e| {
            matches!(e, NormError::EmptyGroup { layer, shape }
                if layer == "bn1d" && shape == &[0, 6])
        },
        says: &["bn1d", "[0, 6]"],
    },
    Case {
        name: "DynNorm::new with C not divisible by groups",
        call: || DynNorm::<f32>::new(&spec(GN_SPEC), &[("C", 7)]).unwrap_err(),
        is: |e| {
            matches!(e, NormError::GroupsDivide { layer, channels: 7, groups: 2 }
                if layer == "DynNorm")
        },
        says: &["DynNorm", "C = 7", "groups = 2"],
    },
    Case {
        name: "DynNorm chain: backward is Unsupported (use backward_chain)",
        call: || {
            let mut bcn = trained_dyn_bcn();
            let x = x4d((2, 4, 3, 3));
            let (y, saved) = bcn.forward_train(x.view()).unwrap();
            refused_dyn(&mut bcn, |l| l.backward(x.view(), y.view(), &saved))
        },
        is: |e| {
            matches!(e, NormError::Unsupported { layer, reason }
                if layer == "bcn_dyn" && reason.contains("backward_chain"))
        },
        says: &["bcn_dyn", "2 stages", "backward_chain"],
    },
    Case {
        name: "DynNorm with `affine = external` called without scale/shift",
        call: || {
            let mut adain = DynNorm::new(&spec(ADAIN_SPEC), &[])
                .unwrap()
                .with_name("adain");
            refused_dyn(&mut adain, |l| l.forward_train(x4d((2, 3, 4, 4)).view()))
        },
        is: |e| {
            matches!(e, NormError::Unsupported { layer, reason }
                if layer == "adain" && reason.contains("external"))
        },
        says: &["adain", "scale and shift"],
    },
    // --- external scale/shift, parameters replaced by hand ----------------------------
    Case {
        name: "external scale of the wrong shape ((2, 4) for (N, C) = (2, 3))",
        call: || {
            let mut adain = AdaIn::new();
            let x = x4((2, 3, 4, 4));
            let scale = Array2::<f32>::ones((2, 4));
            let shift = Array2::<f32>::zeros((2, 3));
            refused(&mut adain, |l| {
                l.forward(x.view(), scale.view(), shift.view(), Mode::Train)
            })
        },
        is: |e| {
            matches!(e, NormError::AxisSize { layer, axis, expected: 4, actual: 3, source }
                if layer == "AdaIn" && axis == "C" && source == "scale")
        },
        says: &["AdaIn", "axis C", "size 3", "scale expects 4"],
    },
    Case {
        name: "external shift of the wrong shape (eval)",
        call: || {
            let mut adain = AdaIn::new();
            let x = x4((2, 3, 4, 4));
            let scale = Array2::<f32>::ones((2, 3));
            let shift = Array2::<f32>::zeros((5, 3));
            refused(&mut adain, |l| {
                l.forward_eval(x.view(), scale.view(), shift.view())
            })
        },
        is: |e| {
            matches!(e, NormError::AxisSize { layer, axis, expected: 5, actual: 2, source }
                if layer == "AdaIn" && axis == "N" && source == "shift")
        },
        says: &["AdaIn", "axis N", "size 2", "shift expects 5"],
    },
    Case {
        name: "DynNorm: external scale of the wrong rank",
        call: || {
            let mut adain = DynNorm::new(&spec(ADAIN_SPEC), &[])
                .unwrap()
                .with_name("adain");
            let x = x4d((2, 3, 4, 4));
            let scale = Array1::<f32>::ones(3).into_dyn();
            let shift = Array2::<f32>::zeros((2, 3)).into_dyn();
            refused_dyn(&mut adain, |l| {
                l.forward_external(x.view(), scale.view(), shift.view(), Mode::Train)
            })
        },
        is: |e| {
            matches!(e, NormError::Shape { layer, what, expected, actual }
                if layer == "adain" && what == "scale" && expected == &[2, 3] && actual == &[3])
        },
        says: &["adain", "scale", "[3]", "[2, 3]"],
    },
    Case {
        name: "gamma replaced by hand with the wrong length",
        call: || {
            let mut gn = trained_gn();
            gn.gamma = Array1::ones(6);
            refused(&mut gn, |l| l.forward_train(x4((2, 4, 3, 3)).view()))
        },
        is: |e| {
            matches!(e, NormError::AxisSize { layer, axis, expected: 6, actual: 4, source }
                if layer == "GroupNorm2" && axis == "C" && source == "gamma")
        },
        says: &["GroupNorm2", "axis C", "size 4", "gamma expects 6"],
    },
    Case {
        name: "beta replaced by hand with the wrong length (backward)",
        call: || {
            let mut bn = trained_bn();
            let x = x4((2, 3, 4, 4));
            let (y, saved) = bn.forward_train(x.view()).unwrap();
            bn.beta = Array1::zeros(2);
            refused(&mut bn, |l| l.backward(x.view(), y.view(), &saved))
        },
        is: |e| {
            matches!(e, NormError::AxisSize { layer, axis, expected: 2, actual: 3, source }
                if layer == "BatchNorm" && axis == "C" && source == "beta")
        },
        says: &["BatchNorm", "axis C", "beta expects 2"],
    },
    Case {
        name: "DynNorm: gamma replaced by hand with the wrong rank",
        call: || {
            let mut gn = trained_dyn_gn();
            gn.stages_mut()[0].gamma = Some(ArrayD::ones(IxDyn(&[2, 2])));
            refused_dyn(&mut gn, |l| l.forward_train(x4d((2, 4, 3, 3)).view()))
        },
        is: |e| {
            matches!(e, NormError::Shape { layer, what, expected, actual }
                if layer == "gn_dyn" && what == "gamma" && expected == &[4] && actual == &[2, 2])
        },
        says: &["gn_dyn", "gamma", "[2, 2]", "[4]"],
    },
    Case {
        name: "DynNorm chain: a later stage's gamma is wrong, the first stage is untouched",
        call: || {
            let mut bcn = trained_dyn_bcn();
            bcn.stages_mut()[1].gamma = Some(ArrayD::ones(IxDyn(&[3])));
            refused_dyn(&mut bcn, |l| l.forward_train(x4d((2, 4, 3, 3)).view()))
        },
        is: |e| {
            matches!(e, NormError::AxisSize { layer, axis, expected: 3, actual: 4, source }
                if layer == "bcn_dyn" && axis == "C" && source == "gn.gamma")
        },
        says: &["bcn_dyn", "axis C", "gn.gamma expects 3"],
    },
    Case {
        name: "DynNorm: gamma removed by hand",
        call: || {
            let mut gn = trained_dyn_gn();
            gn.stages_mut()[0].gamma = None;
            refused_dyn(&mut gn, |l| l.forward_train(x4d((2, 4, 3, 3)).view()))
        },
        is: |e| {
            matches!(e, NormError::Unsupported { layer, reason }
                if layer == "gn_dyn" && reason.contains("gamma"))
        },
        says: &["gn_dyn", "gamma"],
    },
    // --- caller buffers -------------------------------------------------------------
    Case {
        name: "forward_train_into: output buffer of the wrong shape",
        call: || {
            let mut bn = trained_bn();
            let x = x4((2, 3, 4, 4));
            let mut out = Array4::<f32>::zeros((2, 3, 4, 5));
            let mut saved = Saved::new();
            let err = refused(&mut bn, |l| {
                l.forward_train_into(x.view(), out.view_mut(), &mut saved)
            });
            assert_eq!(saved, Saved::new(), "a refused call filled the Saved");
            err
        },
        is: |e| {
            matches!(e, NormError::Shape { layer, what, expected, actual }
                if layer == "BatchNorm" && what == "the output buffer"
                    && expected == &[2, 3, 4, 4] && actual == &[2, 3, 4, 5])
        },
        says: &["BatchNorm", "output buffer", "[2, 3, 4, 5]", "[2, 3, 4, 4]"],
    },
    Case {
        name: "forward_eval_into: output buffer of the wrong shape",
        call: || {
            let mut gn = trained_gn();
            let x = x4((2, 4, 3, 3));
            let mut out = Array4::<f32>::zeros((2, 4, 3, 3));
            let mut small = out.slice_axis_mut(Axis(0), (0..1).into());
            refused(&mut gn, |l| l.forward_eval_into(x.view(), small.view_mut()))
        },
        is: |e| {
            matches!(e, NormError::Shape { layer, what, expected, actual }
                if layer == "GroupNorm2" && what == "the output buffer"
                    && expected == &[2, 4, 3, 3] && actual == &[1, 4, 3, 3])
        },
        says: &["GroupNorm2", "output buffer", "[1, 4, 3, 3]"],
    },
    Case {
        name: "backward_into: dx buffer of the wrong shape",
        call: || {
            let mut gn = trained_gn();
            let x = x4((2, 4, 3, 3));
            let (y, saved) = gn.forward_train(x.view()).unwrap();
            let mut grads = Grads::new(Array4::zeros((2, 4, 3, 1)));
            refused(&mut gn, |l| {
                l.backward_into(x.view(), y.view(), &saved, &mut grads)
            })
        },
        is: |e| {
            matches!(e, NormError::Shape { layer, what, expected, actual }
                if layer == "GroupNorm2" && what == "the dx buffer"
                    && expected == &[2, 4, 3, 3] && actual == &[2, 4, 3, 1])
        },
        says: &["GroupNorm2", "dx buffer", "[2, 4, 3, 1]", "[2, 4, 3, 3]"],
    },
    Case {
        name: "DynNorm forward_train_into: output buffer of the wrong rank",
        call: || {
            let mut bcn = trained_dyn_bcn();
            let x = x4d((2, 4, 3, 3));
            let mut out = ArrayD::<f32>::zeros(IxDyn(&[2, 4, 9]));
            let mut saved = Saved::new();
            refused_dyn(&mut bcn, |l| {
                l.forward_train_into(x.view(), out.view_mut(), &mut saved)
            })
        },
        is: |e| {
            matches!(e, NormError::Shape { layer, what, expected, actual }
                if layer == "bcn_dyn" && what == "the output buffer"
                    && expected == &[2, 4, 3, 3] && actual == &[2, 4, 9])
        },
        says: &["bcn_dyn", "output buffer", "[2, 4, 9]"],
    },
];

#[test]
fn catalogue_of_malformed_calls() {
    assert!(CATALOGUE.len() >= 15);
    let mut failures = Vec::new();
    for case in CATALOGUE {
        let outcome = catch_unwind(AssertUnwindSafe(case.call));
        let err = match outcome {
            Ok(err) => err,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: panicked: {msg}", case.name));
                continue;
            }
        };
        if !(case.is)(&err) {
            failures.push(format!("{}: unexpected error {err:?}", case.name));
        }
        let text = err.to_string();
        for s in case.says {
            if !text.contains(s) {
                failures.push(format!(
                    "{}: message {text:?} does not contain {s:?}",
                    case.name
                ));
            }
        }
        // Every message starts with the layer's name.
        let layer = match &err {
            NormError::Rank { layer, .. }
            | NormError::AxisSize { layer, .. }
            | NormError::GroupsDivide { layer, .. }
            | NormError::Shape { layer, .. }
            | NormError::Saved { layer, .. }
            | NormError::TooFewValues { layer, .. }
            | NormError::EmptyGroup { layer, .. }
            | NormError::Size { layer, .. }
            | NormError::Unsupported { layer, .. } => layer.clone(),
            _ => String::new(),
        };
        if !text.starts_with(&format!("{layer}: ")) {
            failures.push(format!(
                "{}: message {text:?} does not start with the layer name",
                case.name
            ));
        }
        // It is a std error.
        let _: &dyn std::error::Error = &err;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CATALOGUE.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// What is not an error
// ---------------------------------------------------------------------------------------

fn finite(a: impl IntoIterator<Item = f32>) -> bool {
    a.into_iter().all(f32::is_finite)
}

fn all_nan(a: impl IntoIterator<Item = f32>) -> bool {
    a.into_iter().all(f32::is_nan)
}

/// NaN in one statistics group: that group's output is NaN, every other group is finite,
/// nothing is refused (as PyTorch). The same holds for the input gradient; γ/β gradients
/// are NaN for the channels of that group only.
#[test]
fn nan_stays_in_its_group() {
    let mut gn = trained_gn();
    let mut x = x4((2, 4, 3, 3));
    x[[0, 1, 2, 0]] = f32::NAN; // sample 0, group 0 (channels 0 and 1)
    let (y, saved) = gn.forward_train(x.view()).expect("NaN is not an error");
    for n in 0..2 {
        for c in 0..4 {
            let block = y.slice(normkit::ndarray::s![n, c, .., ..]);
            if n == 0 && c < 2 {
                assert!(all_nan(block.iter().copied()), "y[{n}, {c}] should be NaN");
            } else {
                assert!(
                    finite(block.iter().copied()),
                    "y[{n}, {c}] should be finite"
                );
            }
        }
    }
    let m = gn.stats(x.view()).unwrap();
    assert!(m.mean[[0, 0]].is_nan()); // the variance: see `nan_variance_is_nan`
    assert!(finite([m.mean[[0, 1]], m.mean[[1, 0]], m.mean[[1, 1]]]));
    assert!(finite([m.var[[0, 1]], m.var[[1, 0]], m.var[[1, 1]]]));

    let dy = x4((2, 4, 3, 3));
    let g = gn
        .backward(x.view(), dy.view(), &saved)
        .expect("NaN is not an error");
    for n in 0..2 {
        for c in 0..4 {
            let block = g.dx.slice(normkit::ndarray::s![n, c, .., ..]);
            let bad = n == 0 && c < 2;
            assert_eq!(!bad, finite(block.iter().copied()), "dx[{n}, {c}]");
        }
    }
    let dgamma = g.dgamma.unwrap();
    assert!(dgamma[0].is_nan() && dgamma[1].is_nan());
    assert!(dgamma[2].is_finite() && dgamma[3].is_finite());
}

/// +Inf in a group: μ = inf, x − μ is NaN, the whole group is NaN; others stay finite.
#[test]
fn inf_makes_its_group_nan() {
    let ln = LayerNormEps0::new(5);
    let mut x = Array3::from_shape_fn((2, 3, 5), |(n, l, d)| (n * 15 + l * 5 + d) as f32 * 0.1);
    x[[1, 2, 4]] = f32::INFINITY;
    x[[0, 0, 0]] = f32::NEG_INFINITY;
    let y = ln.forward_eval(x.view()).expect("Inf is not an error");
    for n in 0..2 {
        for l in 0..3 {
            let row = y.slice(normkit::ndarray::s![n, l, ..]);
            if (n, l) == (1, 2) || (n, l) == (0, 0) {
                assert!(all_nan(row.iter().copied()), "row ({n}, {l}) should be NaN");
            } else {
                assert!(
                    finite(row.iter().copied()),
                    "row ({n}, {l}) should be finite"
                );
            }
        }
    }
}

/// Batch norm trained on a batch with a NaN in channel 1: output and running statistics of
/// channel 1 become NaN (as PyTorch); the other channels are unaffected.
#[test]
fn nan_in_training_reaches_only_its_channel_running_stats() {
    let mut bn = trained_bn();
    let mut x = x4((2, 3, 4, 4));
    x[[1, 1, 3, 3]] = f32::NAN;
    let (y, _) = bn.forward_train(x.view()).expect("NaN is not an error");
    assert!(all_nan(y.index_axis(Axis(1), 1).iter().copied()));
    assert!(finite(y.index_axis(Axis(1), 0).iter().copied()));
    assert!(finite(y.index_axis(Axis(1), 2).iter().copied()));
    assert!(bn.running_mean[1].is_nan()); // running_var: see `nan_variance_is_nan`
    assert!(finite([
        bn.running_mean[0],
        bn.running_mean[2],
        bn.running_var[0],
        bn.running_var[2]
    ]));
    assert_eq!(bn.num_batches_tracked, 2);
}

/// PyTorch: the variance of a group with a NaN is NaN (and ±Inf gives NaN too), so
/// `stats().var` and `running_var` become NaN for that group, like the mean.
#[test]
fn nan_variance_is_nan() {
    let gn = trained_gn();
    let mut x = x4((2, 4, 3, 3));
    x[[0, 1, 2, 0]] = f32::NAN;
    let m = gn.stats(x.view()).unwrap();
    assert!(m.var[[0, 0]].is_nan(), "var {:?}", m.var);

    let mut bn = trained_bn();
    let mut x = x4((2, 3, 4, 4));
    x[[1, 1, 3, 3]] = f32::NAN;
    bn.forward_train(x.view()).unwrap();
    assert!(
        bn.running_var[1].is_nan(),
        "running_var {:?}",
        bn.running_var
    );

    let mut bn = trained_bn();
    let mut x = x4((2, 3, 4, 4));
    x[[1, 1, 3, 3]] = f32::INFINITY;
    assert!(bn.stats(x.view()).unwrap().var[1].is_nan());
    bn.forward_train(x.view()).unwrap();
    assert!(bn.running_mean[1].is_infinite());
    assert!(
        bn.running_var[1].is_nan(),
        "running_var {:?}",
        bn.running_var
    );
}

/// `eps = 0` on a constant group: 0 · ∞ = NaN, as PyTorch (documented); others finite.
#[test]
fn eps_zero_constant_group_is_nan_not_an_error() {
    let mut ln = LayerNormEps0::new(4);
    let mut x = Array3::from_shape_fn((1, 2, 4), |(_, l, d)| (l * 4 + d) as f32);
    x.slice_mut(normkit::ndarray::s![0, 1, ..]).fill(3.0);
    let (y, _) = ln.forward_train(x.view()).unwrap();
    assert!(finite(
        y.slice(normkit::ndarray::s![0, 0, ..]).iter().copied()
    ));
    assert!(all_nan(
        y.slice(normkit::ndarray::s![0, 1, ..]).iter().copied()
    ));
}

/// A `Saved` from an eval forward is accepted by backward: gradients through the fixed
/// running statistics, which for batch norm is dx = dy · γ / √(running_var + eps).
#[test]
fn saved_from_eval_mode_is_accepted() {
    let mut bn = trained_bn();
    let x = x4((2, 3, 4, 4));
    let before = bn.clone();
    let (_, saved) = bn.forward(x.view(), Mode::Eval).unwrap();
    assert_eq!(bn, before, "eval changed the state");
    assert!(saved.used_running_stats());
    let dy = Array4::<f32>::ones((2, 3, 4, 4));
    let g = bn.backward(x.view(), dy.view(), &saved).unwrap();
    for c in 0..3 {
        let expected = bn.gamma[c] / (bn.running_var[c] + 1e-5).sqrt();
        for &v in g.dx.index_axis(Axis(1), c) {
            assert!(
                (v - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "{v} vs {expected}"
            );
        }
    }
    // A train Saved of the same layer is still accepted after more training steps.
    let (_, saved_train) = bn.forward_train(x.view()).unwrap();
    bn.forward_train(x.view()).unwrap();
    bn.backward(x.view(), dy.view(), &saved_train).unwrap();
}

/// One value per channel is refused in train mode only: eval uses the running statistics.
#[test]
fn one_value_per_channel_in_eval_is_fine() {
    let mut bn = trained_bn();
    let x = x4((1, 3, 1, 1));
    let before = bn.clone();
    let y = bn.forward_eval(x.view()).unwrap();
    let (y2, saved) = bn.forward(x.view(), Mode::Eval).unwrap();
    assert_eq!(y, y2);
    assert_eq!(bn, before);
    bn.backward(x.view(), x.view(), &saved).unwrap();
    // Without running statistics and without `unbiased`, one value per group is allowed
    // in train mode too (PyTorch's instance norm does the same): the output is β.
    let (y, _) = InstanceNorm::new().forward_train(x.view()).unwrap();
    assert!(y.iter().all(|&v| v == 0.0));
}

/// An empty *kept* axis (no statistics groups at all) is not an error: empty output.
#[test]
fn empty_kept_axis_gives_empty_output() {
    let mut gn = trained_gn();
    let x = x4((0, 4, 3, 3));
    let (y, saved) = gn.forward_train(x.view()).unwrap();
    assert_eq!(y.shape(), &[0, 4, 3, 3]);
    let g = gn.backward(x.view(), y.view(), &saved).unwrap();
    assert_eq!(g.dx.shape(), &[0, 4, 3, 3]);
    assert!(g.dgamma.unwrap().iter().all(|&v| v == 0.0));
}

/// `stats()` on an input whose *kept* axis is empty (no statistics groups): empty moments,
/// like the empty output of `forward` (issue 13: this panicked in the kernels).
#[test]
fn stats_on_empty_kept_axis_is_empty() {
    let bn1 = spec(r#"input = "N,D", axes = "N", running_stats"#);
    let mut layer = DynNorm::<f32>::new(&bn1, &[("D", 0)]).unwrap();
    let x = Array2::<f32>::zeros((6, 0)).into_dyn();
    let m = layer.stats(x.view()).unwrap();
    assert_eq!(m.mean.shape(), &[0]);
    assert_eq!(m.var.shape(), &[0]);
    let (y, saved) = layer.forward_train(x.view()).unwrap();
    assert_eq!(y.shape(), &[6, 0]);
    let g = layer.backward(x.view(), y.view(), &saved).unwrap();
    assert_eq!(g.dx.shape(), &[6, 0]);
    // The same through the synchronized path with two members (each on its own thread).
    let [a, b]: [ThreadMember; 2] = ThreadGroup::new(2).try_into().unwrap();
    let other = layer.clone();
    std::thread::scope(|s| {
        let x2 = x.clone();
        let h = s.spawn(move || {
            let mut l = other;
            l.forward_sync(x2.view(), Mode::Train, &b)
                .map(|(y, _)| y.shape().to_vec())
        });
        let mine = layer
            .forward_sync(x.view(), Mode::Train, &a)
            .map(|(y, _)| y.shape().to_vec());
        assert_eq!(mine, Ok(vec![6, 0]));
        assert_eq!(h.join().unwrap(), Ok(vec![6, 0]));
    });
}

/// A dynamic chain's gradients come from `backward_chain`, which accepts what `backward`
/// refuses.
#[test]
fn dyn_chain_backward_chain_works() {
    let mut bcn = trained_dyn_bcn();
    let x = x4d((2, 4, 3, 3));
    let (y, saved) = bcn.forward_train(x.view()).unwrap();
    let g = bcn.backward_chain(x.view(), y.view(), &saved).unwrap();
    assert_eq!(g.stages.len(), 2);
    assert_eq!(g.dx.shape(), x.shape());
    assert_eq!(g.stages[1].dgamma.as_ref().unwrap().shape(), &[4]);
}

/// Strided, reversed and broadcast inputs are accepted (not an error).
#[test]
fn any_strides_are_accepted() {
    let gn = trained_gn();
    let x = x4((2, 4, 3, 3));
    let want = gn.forward_eval(x.view()).unwrap();
    let mut rev = x.clone();
    rev.invert_axis(Axis(3));
    let rev_back = {
        let mut y = gn.forward_eval(rev.view()).unwrap();
        y.invert_axis(Axis(3));
        y
    };
    assert!(want
        .iter()
        .zip(&rev_back)
        .all(|(a, b)| (a - b).abs() < 1e-5));
    let row = Array::from_shape_fn((1, 4, 1, 3), |(_, c, _, w)| (c * 3 + w) as f32);
    let broadcast = row.broadcast((2, 4, 3, 3)).unwrap();
    let y = gn.forward_eval(broadcast).unwrap();
    assert_eq!(y.shape(), &[2, 4, 3, 3]);
}

// ---------------------------------------------------------------------------------------
// NormSpec::parse gives the macro's messages
// ---------------------------------------------------------------------------------------

/// The inside of the `#[norm(...)]` attribute in a ui test source, and its byte offset.
fn attribute_args(src: &str) -> Option<(usize, &str)> {
    let start = src.find("#[norm(")? + "#[norm(".len();
    let mut depth = 1usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, ch) in src[start..].char_indices() {
        if in_str {
            match ch {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((start, &src[start..start + i]));
                }
            }
            _ => {}
        }
    }
    None
}

/// One `error: ...` of a trybuild snapshot: the message and the underlined source text.
struct Snapshot {
    message: String,
    underlined: String,
}

/// The spec errors of a `.stderr` (rustc's own `error[E...]` and the macro's item errors
/// are left out), with the text each one underlines in `src`.
fn snapshot_errors(stderr: &str, src: &str) -> Vec<Snapshot> {
    let lines: Vec<&str> = stderr.lines().collect();
    let src_lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    for (k, line) in lines.iter().enumerate() {
        let Some(message) = line.strip_prefix("error: ") else {
            continue;
        };
        if message.starts_with("#[norm]") || message.starts_with("field `") {
            continue; // about the item, not the attribute
        }
        let location = lines[k + 1]
            .trim_start()
            .strip_prefix("--> ")
            .expect("location");
        let mut parts = location.rsplit(':');
        let col: usize = parts.next().unwrap().parse().unwrap();
        let line_no: usize = parts.next().unwrap().parse().unwrap();
        // The underline: the first line after the location made of spaces, `|` and `^`.
        let marks = lines[k + 2..]
            .iter()
            .find(|l| l.contains('^'))
            .expect("underline");
        let width = marks.chars().filter(|&c| c == '^').count();
        let code: Vec<char> = src_lines[line_no - 1].chars().collect();
        let underlined: String = code[col - 1..(col - 1 + width).min(code.len())]
            .iter()
            .collect();
        out.push(Snapshot {
            message: message.to_string(),
            underlined,
        });
    }
    out
}

/// Every compile-fail snapshot: `NormSpec::parse` of the same attribute text reports the
/// same messages, in the same order, and points at the same text (an error about the whole
/// declaration underlines the attribute and spans the whole text at run time).
#[test]
fn parse_errors_match_compile_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-tests/tests/ui/fail");
    let mut checked = 0;
    let mut compared = 0;
    let mut failures = Vec::new();
    for category in std::fs::read_dir(&root).unwrap() {
        let category = category.unwrap().path();
        for file in std::fs::read_dir(&category).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let src = std::fs::read_to_string(&path).unwrap();
            let Ok(stderr) = std::fs::read_to_string(path.with_extension("stderr")) else {
                continue; // snapshot not generated yet
            };
            let Some((_, args)) = attribute_args(&src) else {
                continue;
            };
            let want = snapshot_errors(&stderr, &src);
            let got = match NormSpec::parse(args) {
                Ok(_) => Vec::new(),
                Err(e) => e.errors,
            };
            checked += 1;
            let name = path.strip_prefix(&root).unwrap().display().to_string();
            let got_msgs: Vec<&str> = got.iter().map(|i| i.message.as_str()).collect();
            let want_msgs: Vec<&str> = want.iter().map(|s| s.message.as_str()).collect();
            if got_msgs != want_msgs {
                failures.push(format!(
                    "{name}: parse gives {got_msgs:#?}, macro gives {want_msgs:#?}"
                ));
                continue;
            }
            for (issue, snap) in got.iter().zip(&want) {
                compared += 1;
                let at = &args[issue.span.clone()];
                let ok = if snap.underlined.starts_with("#[norm(") {
                    issue.span == (0..args.len())
                } else {
                    at == snap.underlined
                };
                if !ok {
                    failures.push(format!(
                        "{name}: `{}`: parse points at {at:?}, macro at {:?}",
                        issue.message, snap.underlined
                    ));
                }
            }
        }
    }
    assert!(checked >= 25, "only {checked} snapshots found");
    assert!(compared >= 25, "only {compared} errors compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A few messages spelled out, next to the snapshot they must equal.
#[test]
fn parse_error_text_equals_the_compile_error() {
    let cases: [(&str, &str); 4] = [
        (
            r#"input = "N,C,H,W", axes = "C,H,X""#,
            include_str!("../../ui-tests/tests/ui/fail/axes/axis_not_in_input.stderr"),
        ),
        (
            r#"input = "N,C=48,H,W", axes = "C,H,W", groups = 32"#,
            include_str!("../../ui-tests/tests/ui/fail/groups/fixed_c_not_divisible.stderr"),
        ),
        (
            r#"input = "N,C,H,W", axis = "C,H,W""#,
            include_str!("../../ui-tests/tests/ui/fail/keys/unknown_key.stderr"),
        ),
        (
            r#"input = "N,C,H,W", axes = "C,H,W", eps = -1e-5"#,
            include_str!("../../ui-tests/tests/ui/fail/numbers/eps_negative.stderr"),
        ),
    ];
    for (src, stderr) in cases {
        let err = NormSpec::parse(src).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        let first = stderr.lines().next().unwrap();
        assert_eq!(first, format!("error: {}", err.errors[0].message));
        // The Display of SpecError carries the message and the offending text.
        assert!(err.to_string().starts_with(&err.errors[0].message));
    }
    let err = NormSpec::parse(r#"input = "N,C,H,W", axes = "C,H,X""#).unwrap_err();
    assert_eq!(
        err.errors[0].message,
        "unknown axis `X` in `axes`; `input` has N, C, H, W"
    );
    assert!(err.to_string().ends_with(r#"`"C,H,X"`)"#), "{err}");
}

/// `SpecError::errors` comes in the validator's order: single-key errors in source order,
/// then the rules that relate several keys (the order of the compile errors too).
#[test]
fn spec_errors_come_in_the_validators_order() {
    let src = r#"input = "N,C,H,W", axes = "C,H,X", groups = 0, eps = -1.0, momentum = 0.5, biass = false"#;
    let err = NormSpec::parse(src).unwrap_err();
    assert_eq!(err.errors.len(), 5);
    let messages: Vec<&str> = err.errors.iter().map(|e| e.message.as_str()).collect();
    let position = |needle: &str| {
        messages
            .iter()
            .position(|m| m.contains(needle))
            .unwrap_or_else(|| panic!("no error mentions {needle}: {messages:?}"))
    };
    // Single-key errors first, in source order; the cross-key `momentum` rule after them.
    assert!(
        position("`groups` must be") < position("`eps` must be"),
        "{err}"
    );
    assert!(position("`eps` must be") < position("biass"), "{err}");
    assert!(
        position("biass") < position("`momentum` has no effect"),
        "{err}"
    );
}

/// Every error is a `std::error::Error` with a message that starts with the layer name,
/// including the name given to a dynamic layer.
#[test]
fn errors_are_std_errors_named_after_the_layer() {
    let bn: DynNorm<f64> = DynNorm::new(&spec(BN4_SPEC), &[])
        .unwrap()
        .with_name("encoder.bn1");
    let err = bn
        .forward_eval(Array4::<f64>::zeros((2, 3, 1, 1)).into_dyn().view())
        .unwrap_err();
    let boxed: Box<dyn std::error::Error> = Box::new(err.clone());
    assert!(boxed.to_string().starts_with("encoder.bn1: "), "{boxed}");
    assert_eq!(
        err.to_string(),
        "encoder.bn1: axis C has size 3, but the fixed size in `input` expects 4"
    );
}
