//! The drop-in modules as candle users meet them: checkpoints under PyTorch's names (VarMap
//! round trip, candle-nn's safetensors), training beside candle-nn, errors instead of panics.

mod support;

use std::collections::HashMap;

use candle_core::{DType, Device, Module, ModuleT, Result, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use normkit::Mode;
use normkit_candle::{NormModule, SpecLayer};
use support::*;

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("normkit-candle-{}-{name}", std::process::id()))
}

#[test]
fn varmap_save_and_load_round_trip_under_pytorch_names() -> Result<()> {
    let dtype = DType::F32;
    let (map, vb) = builder(dtype);
    let bn = normkit_candle::batch_norm(3, 1e-5, vb.pp("bn"))?;
    let ln = normkit_candle::layer_norm(5, 1e-5, vb.pp("ln"))?;
    randomize(&map, 1)?;
    for seed in 0..2 {
        bn.forward_t(&data(&[4, 3, 2], seed, 1.0, dtype)?, true)?;
    }
    let mut names: Vec<String> = map.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bn.bias",
            "bn.num_batches_tracked",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight",
            "ln.bias",
            "ln.weight"
        ]
    );
    let path = tmp("roundtrip.safetensors");
    map.save(&path)?;

    // A fresh model loads every value back.
    let (mut map2, vb2) = builder(dtype);
    let bn2 = normkit_candle::batch_norm(3, 1e-5, vb2.pp("bn"))?;
    let ln2 = normkit_candle::layer_norm(5, 1e-5, vb2.pp("ln"))?;
    map2.load(&path)?;
    for n in &names {
        let (a, b) = (get(&map, n), get(&map2, n));
        let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert_eq!(d, 0.0, "{n}");
    }
    assert_eq!(bn2.num_batches_tracked(), Some(2));
    let x = data(&[2, 3, 2], 10, 0.0, dtype)?;
    assert_close(
        "eval after load",
        &bn2.forward_t(&x, false)?,
        &bn.forward_t(&x, false)?,
        F32,
    );
    let z = data(&[3, 5], 11, 0.0, dtype)?;
    assert_close("ln after load", &ln2.forward(&z)?, &ln.forward(&z)?, F32);
    // The same file through VarBuilder's safetensors reader.
    let vb3 = VarBuilder::from_buffered_safetensors(std::fs::read(&path)?, dtype, &Device::Cpu)?;
    let bn3 = normkit_candle::batch_norm(3, 1e-5, vb3.pp("bn"))?;
    assert_close(
        "eval from file",
        &bn3.forward_t(&x, false)?,
        &bn.forward_t(&x, false)?,
        F32,
    );
    assert_eq!(bn3.num_batches_tracked(), Some(2));
    // The loaded count is picked up by the next train call.
    bn2.forward_t(&x, true)?;
    assert_eq!(bn2.num_batches_tracked(), Some(3));
    std::fs::remove_file(&path).ok();
    Ok(())
}

#[test]
fn a_candle_nn_checkpoint_loads_and_gives_candle_nn_results() -> Result<()> {
    let dtype = DType::F64;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, dtype, &Device::Cpu);
    let c_bn = candle_nn::batch_norm(4, 1e-5, vb.pp("bn"))?;
    let c_ln = candle_nn::layer_norm(6, 1e-5, vb.pp("ln"))?;
    let c_gn = candle_nn::group_norm(2, 4, 1e-5, vb.pp("gn"))?;
    let c_rms = candle_nn::rms_norm(6, 1e-6, vb.pp("rms"))?;
    randomize(&map, 2)?;
    // Non-trivial running statistics, as a trained candle-nn model has.
    {
        let d = map.data().lock().unwrap();
        d["bn.running_mean"].set(&data(&[4], 3, 0.0, dtype)?)?;
        d["bn.running_var"].set(&(data(&[4], 4, 2.0, dtype)?))?;
    }
    let path = tmp("candle-nn.safetensors");
    map.save(&path)?;
    let vb = VarBuilder::from_buffered_safetensors(std::fs::read(&path)?, dtype, &Device::Cpu)?;
    let bn = normkit_candle::batch_norm(4, 1e-5, vb.pp("bn"))?;
    let ln = normkit_candle::layer_norm(6, 1e-5, vb.pp("ln"))?;
    let gn = normkit_candle::group_norm(2, 4, 1e-5, vb.pp("gn"))?;
    let rms = normkit_candle::rms_norm(6, 1e-6, vb.pp("rms"))?;
    // candle-nn has no num_batches_tracked: the module counts without it.
    assert_eq!(bn.num_batches_tracked(), Some(0));
    let x = data(&[3, 4, 5], 5, 0.0, dtype)?;
    let z = data(&[5, 6], 6, 0.0, dtype)?;
    assert_close(
        "BN eval",
        &bn.forward_t(&x, false)?,
        &c_bn.forward_t(&x, false)?,
        F64,
    );
    assert_close("GN", &gn.forward(&x)?, &c_gn.forward(&x)?, F64);
    // candle-nn's LN/RMS fused ops are f32-only: a non-contiguous view takes their composed
    // path, which runs in f64.
    let zt = z.t()?.contiguous()?.t()?;
    assert_close("LN", &ln.forward(&z)?, &c_ln.forward(&zt)?, F64);
    assert_close("RMS", &rms.forward(&z)?, &c_rms.forward(&zt)?, F64);
    // Train mode updates the same running statistics as candle-nn's.
    let c_y = c_bn.forward_t(&x, true)?;
    let y = bn.forward_t(&x, true)?;
    assert_close("BN train", &y, &c_y, F64);
    assert_close(
        "running_mean",
        bn.running_mean().unwrap(),
        c_bn.running_mean(),
        F64,
    );
    assert_close(
        "running_var",
        bn.running_var().unwrap(),
        c_bn.running_var(),
        F64,
    );
    std::fs::remove_file(&path).ok();
    Ok(())
}

/// The MLP of the training test: linear → layer norm → tanh → linear.
fn mlp_loss(
    vb: &VarBuilder<'_>,
    norm: &dyn Fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    t: &Tensor,
) -> Result<Tensor> {
    let l1 = candle_nn::linear(8, 16, vb.pp("l1"))?;
    let l2 = candle_nn::linear(16, 3, vb.pp("l2"))?;
    let h = norm(&l1.forward(x)?)?.tanh()?;
    (l2.forward(&h)? - t)?.sqr()?.mean_all()
}

#[test]
fn fifty_training_steps_match_candle_nn_layer_norm() -> Result<()> {
    let dtype = DType::F64;
    let x = data(&[32, 8], 1, 0.0, dtype)?;
    let t = data(&[32, 3], 2, 0.0, dtype)?;
    // One initialization, copied into both models.
    let (map_a, vb_a) = builder(dtype);
    let (map_b, vb_b) = builder(dtype);
    let ours = normkit_candle::layer_norm(16, 1e-5, vb_a.pp("ln"))?;
    let theirs = candle_nn::layer_norm(16, 1e-5, vb_b.pp("ln"))?;
    mlp_loss(&vb_a, &|h| ours.forward(h), &x, &t)?;
    let composed = |h: &Tensor| theirs.forward(&h.t()?.contiguous()?.t()?);
    mlp_loss(&vb_b, &composed, &x, &t)?;
    let init: HashMap<String, Tensor> = map_a
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    {
        let b = map_b.data().lock().unwrap();
        assert_eq!(b.len(), init.len());
        for (k, v) in &init {
            b[k].set(v)?;
        }
    }
    let params = candle_nn::ParamsAdamW {
        lr: 0.01,
        ..Default::default()
    };
    let mut opt_a = candle_nn::AdamW::new(map_a.all_vars(), params.clone())?;
    let mut opt_b = candle_nn::AdamW::new(map_b.all_vars(), params)?;
    let mut first = None;
    let mut last = 0.0;
    for step in 0..50 {
        let la = mlp_loss(&vb_a, &|h| ours.forward(h), &x, &t)?;
        // candle-nn's LayerNorm takes its fused op, which has no backward (candle#2168), on
        // contiguous inputs: give it a transposed copy's view so it runs its composed path.
        let lb = mlp_loss(&vb_b, &composed, &x, &t)?;
        let (a, b) = (la.to_scalar::<f64>()?, lb.to_scalar::<f64>()?);
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "step {step}: normkit {a} vs candle-nn {b}"
        );
        first.get_or_insert(a);
        last = a;
        opt_a.backward_step(&la)?;
        opt_b.backward_step(&lb)?;
    }
    assert!(
        last < 0.8 * first.unwrap(),
        "the MLP trained: {first:?} -> {last}"
    );
    Ok(())
}

#[test]
fn bad_inputs_are_errors_not_panics() -> Result<()> {
    let (_map, vb) = builder(DType::F32);
    let gn = normkit_candle::group_norm(2, 4, 1e-5, vb.pp("gn"))?;
    let bn = normkit_candle::batch_norm(4, 1e-5, vb.pp("bn"))?;
    let ln = normkit_candle::layer_norm(6, 1e-5, vb.pp("ln"))?;
    let err = |r: Result<Tensor>| r.expect_err("expected an error").to_string();

    // Wrong channels: normkit's message names the layer, the axis and both sizes.
    let e = err(gn.forward(&data(&[2, 6, 3], 1, 0.0, DType::F32)?));
    assert!(
        e.contains("GroupNorm") && e.contains('6') && e.contains('4'),
        "{e}"
    );
    let e = err(bn.forward_t(&data(&[2, 5, 3], 1, 0.0, DType::F32)?, true));
    assert!(e.contains("BatchNorm") && e.contains('5'), "{e}");
    let e = err(ln.forward(&data(&[2, 7], 1, 0.0, DType::F32)?));
    assert!(
        e.contains("LayerNorm") && e.contains('7') && e.contains('6'),
        "{e}"
    );
    // Wrong dtype: f64 input into an f32 module, and an integer tensor.
    let e = err(ln.forward(&data(&[2, 6], 1, 0.0, DType::F64)?));
    assert!(e.contains("F64") && e.contains("F32"), "{e}");
    let e = err(ln.forward(&Tensor::zeros((2, 6), DType::U32, &Device::Cpu)?));
    assert!(e.contains("U32"), "{e}");
    // Rank: a 1-D input to batch norm, a rank mismatch in a fixed-rank module.
    let e = err(bn.forward_t(&data(&[4], 1, 0.0, DType::F32)?, true));
    assert!(e.contains("rank"), "{e}");
    let spec = r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#;
    let m = NormModule::new(SpecLayer::new(spec, &[("C", 4)])?, vb.pp("m"))?;
    let e = err(m.forward_mode(&data(&[2, 4, 3], 1, 0.0, DType::F32)?, Mode::Train));
    assert!(e.contains("4 axes") && e.contains('3'), "{e}");
    // One value per channel when training batch norm (PyTorch's error).
    let e = err(bn.forward_t(&data(&[1, 4], 1, 0.0, DType::F32)?, true));
    assert!(e.contains("more than 1 value"), "{e}");
    // External scale/shift of the wrong shape.
    let spec = r#"input = "N,C,L", axes = "L", affine = external"#;
    let a = NormModule::new(SpecLayer::new(spec, &[])?, vb.pp("a"))?;
    let x = data(&[2, 3, 4], 1, 0.0, DType::F32)?;
    let s = data(&[2, 4], 2, 1.0, DType::F32)?;
    let e = err(a.forward_external(&x, &s, &s, Mode::Train));
    assert!(e.contains("scale"), "{e}");
    let e = err(a.forward_mode(&x, Mode::Train));
    assert!(e.contains("external"), "{e}");
    // Invalid configurations.
    assert!(normkit_candle::group_norm(3, 4, 1e-5, vb.pp("g3")).is_err());
    let e = SpecLayer::new(r#"input = "N,C", axes = "X""#, &[]).unwrap_err();
    assert!(e.to_string().contains('X'), "{e}");
    // The module still works after the errors.
    gn.forward(&data(&[2, 4, 3], 1, 0.0, DType::F32)?)?;
    Ok(())
}
