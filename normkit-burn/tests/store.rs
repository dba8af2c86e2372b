//! Records: a model with normkit-burn layers saved and loaded back with burn's store, and a
//! PyTorch `state_dict` (PyTorch's names: `weight`, `bias`, `running_mean`, `running_var`,
//! `num_batches_tracked`) loaded from safetensors, its eval outputs compared with PyTorch's.
//!
//! The PyTorch file and outputs come from `tests/fixtures/make_torch_norms.py` (committed with
//! its output; the test reads them and never needs Python).
//!
//! Remapping: burn-store's `PyTorchToBurnAdapter` renames `weight`/`bias` to `gamma`/`beta`
//! inside modules whose type is named `BatchNorm`, `LayerNorm`, `GroupNorm` or `RmsNorm` —
//! normkit-burn's layers have those names, so nothing more is needed for them. `InstanceNorm`
//! is not on burn-store's list (burn-nn's isn't either): its two keys are remapped with
//! `with_key_remapping`. PyTorch's `num_batches_tracked` has no counterpart (burn-nn's
//! `BatchNorm` has none either) and is reported unused.

mod common;

use burn::module::Module;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{Device, Tensor, TensorData};
use common::{assert_close, tensor, vals, Rng};
use normkit_burn::{
    BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig,
    LayerNorm, LayerNormConfig, NormModule, NormModuleConfig,
};

#[derive(Module, Debug)]
struct TorchModel {
    bn: BatchNorm,
    gn: GroupNorm,
    ln: LayerNorm,
    inorm: InstanceNorm,
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn golden(json: &serde_json::Value, key: &str, device: &Device) -> Tensor<4> {
    let shape: Vec<usize> = json[key]["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = json[key]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

#[test]
fn a_pytorch_state_dict_loads_from_safetensors_and_gives_pytorchs_outputs() {
    let dev = Device::flex();
    let mut model = TorchModel {
        bn: BatchNormConfig::new(4).init(&dev),
        gn: GroupNormConfig::new(2, 4).init(&dev),
        ln: LayerNormConfig::new(5).init(&dev),
        inorm: InstanceNormConfig::new(4).init(&dev),
    };
    let mut store = SafetensorsStore::from_file(fixture("torch_norms.safetensors"))
        .with_from_adapter(PyTorchToBurnAdapter)
        .with_key_remapping(r"^inorm\.weight$", "inorm.gamma")
        .with_key_remapping(r"^inorm\.bias$", "inorm.beta");
    let result = model.load_from(&mut store).expect("load the PyTorch file");
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    assert!(result.missing.is_empty(), "missing: {:?}", result.missing);
    assert_eq!(result.unused, vec!["bn.num_batches_tracked".to_string()]);
    assert_eq!(result.applied.len(), 10, "{:?}", result.applied);

    let text = std::fs::read_to_string(fixture("torch_norms.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let x = golden(&json, "x", &dev);
    // Not an autodiff device: BatchNorm uses its (loaded) running statistics.
    let cases = [
        ("bn", model.bn.forward(x.clone())),
        ("gn", model.gn.forward(x.clone())),
        ("ln", model.ln.forward(x.clone())),
        ("inorm", model.inorm.forward(x.clone())),
    ];
    for (key, y) in cases {
        assert_close(key, &vals(y), &vals(golden(&json, key, &dev)), 2e-5);
    }
}

#[test]
fn a_record_saves_and_loads_back() {
    let dev = Device::flex().autodiff();
    let mut rng = Rng::new(21);
    let bn = BatchNormConfig::new(3).init(&dev);
    let gn = NormModuleConfig::new(
        r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats, momentum = 0.5"#.into(),
    )
    .with_sizes(vec![("C".into(), 3)])
    .init(&dev);
    // A training step moves the running statistics.
    let x = tensor(&mut rng, [4, 3, 2, 2], -1.0, 3.0, &dev, false);
    bn.forward(x.clone()).sum().backward();
    gn.forward(x).sum().backward();

    #[derive(Module, Debug)]
    struct Pair {
        bn: BatchNorm,
        dynamic: NormModule,
    }
    // `RunningState::value` (and a saved record) may lag one update behind: sync first.
    bn.running_mean.value_sync();
    bn.running_var.value_sync();
    gn.running_mean.as_ref().unwrap().value_sync();
    gn.running_var.as_ref().unwrap().value_sync();
    let pair = Pair { bn, dynamic: gn };
    let mut store = SafetensorsStore::from_bytes(None);
    pair.save_into(&mut store).expect("save");
    let bytes = store.get_bytes().expect("bytes");

    let mut fresh = Pair {
        bn: BatchNormConfig::new(3).init(&dev),
        dynamic: NormModuleConfig::new(
            r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats, momentum = 0.5"#.into(),
        )
        .with_sizes(vec![("C".into(), 3)])
        .init(&dev),
    };
    let mut load = SafetensorsStore::from_bytes(Some(bytes));
    let result = fresh.load_from(&mut load).expect("load");
    assert!(result.is_success(), "{result:?}");
    let same = |a: Tensor<1>, b: Tensor<1>| assert_eq!(vals(a), vals(b));
    same(pair.bn.running_mean.value(), fresh.bn.running_mean.value());
    same(pair.bn.running_var.value(), fresh.bn.running_var.value());
    same(pair.bn.gamma.val(), fresh.bn.gamma.val());
    let (a, b) = (&pair.dynamic, &fresh.dynamic);
    same(
        a.running_mean.as_ref().unwrap().value(),
        b.running_mean.as_ref().unwrap().value(),
    );
    same(
        a.running_var.as_ref().unwrap().value(),
        b.running_var.as_ref().unwrap().value(),
    );
    // The running statistics moved away from their initial values, so the check means
    // something.
    assert!(vals(fresh.bn.running_mean.value())
        .iter()
        .any(|&v| v != 0.0));
}
