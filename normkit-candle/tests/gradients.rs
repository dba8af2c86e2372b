//! Gradients through normkit-candle against the same layers written with candle tensor ops
//! and differentiated by candle (tests/support): outputs and the gradients of x, weight and
//! bias, f32 and f64, batch 1, odd sizes, non-contiguous inputs.
//!
//! Tolerances (|a − b| ≤ atol + rtol·|b|): f64 rtol 1e-9, atol 1e-10 (rounding only);
//! f32 rtol 2e-4, atol 2e-5 (candle accumulates in f32, normkit in f64).

mod support;

use candle_core::{DType, Module, ModuleT, Result, Tensor};
use normkit::prelude::*;
use normkit_candle::{NormModule, SpecLayer};
use support::*;

const DTYPES: [DType; 2] = [DType::F64, DType::F32];

#[test]
fn layer_norm_matches_composed_ops() -> Result<()> {
    for dtype in DTYPES {
        for dims in [&[1usize, 7][..], &[5, 13], &[3, 4, 9]] {
            let d = *dims.last().unwrap();
            let (map, vb) = builder(dtype);
            let ln = normkit_candle::layer_norm(d, 1e-5, vb.pp("ln"))?;
            randomize(&map, 3)?;
            let (w, b) = (get(&map, "ln.weight"), get(&map, "ln.bias"));
            let x = var(dims, 1, dtype)?;
            compare_grads(
                &format!("LN {dims:?} {dtype:?}"),
                x.as_tensor(),
                &[("x", x.as_tensor()), ("weight", &w), ("bias", &b)],
                |x| ln.forward(x),
                |x| ref_layer_norm(x, Some(&w), Some(&b), 1e-5, true),
                tol(dtype),
            )?;
        }
    }
    Ok(())
}

#[test]
fn rms_norm_matches_composed_ops() -> Result<()> {
    for dtype in DTYPES {
        for dims in [&[1usize, 5][..], &[6, 33]] {
            let d = *dims.last().unwrap();
            let (map, vb) = builder(dtype);
            let rms = normkit_candle::rms_norm(d, 1e-6, vb.pp("rms"))?;
            randomize(&map, 4)?;
            let w = get(&map, "rms.weight");
            assert!(map.data().lock().unwrap().get("rms.bias").is_none());
            let x = var(dims, 2, dtype)?;
            compare_grads(
                &format!("RMS {dims:?} {dtype:?}"),
                x.as_tensor(),
                &[("x", x.as_tensor()), ("weight", &w)],
                |x| rms.forward(x),
                |x| ref_layer_norm(x, Some(&w), None, 1e-6, false),
                tol(dtype),
            )?;
        }
    }
    Ok(())
}

#[test]
fn group_norm_matches_composed_ops() -> Result<()> {
    for dtype in DTYPES {
        for (dims, groups) in [
            (&[1usize, 6, 5, 3][..], 3),
            (&[2, 4, 7][..], 2),
            (&[3, 9], 3),
        ] {
            let c = dims[1];
            let (map, vb) = builder(dtype);
            let gn = normkit_candle::group_norm(groups, c, 1e-5, vb.pp("gn"))?;
            randomize(&map, 5)?;
            let (w, b) = (get(&map, "gn.weight"), get(&map, "gn.bias"));
            let x = var(dims, 3, dtype)?;
            compare_grads(
                &format!("GN {dims:?} {dtype:?}"),
                x.as_tensor(),
                &[("x", x.as_tensor()), ("weight", &w), ("bias", &b)],
                |x| gn.forward(x),
                |x| ref_group_norm(x, groups, Some(&w), Some(&b), 1e-5, false),
                tol(dtype),
            )?;
        }
    }
    Ok(())
}

#[test]
fn batch_norm_train_matches_composed_ops_and_updates_running_stats() -> Result<()> {
    for dtype in DTYPES {
        for dims in [&[1usize, 3, 5, 2][..], &[4, 5, 3], &[7, 3]] {
            let c = dims[1];
            let (map, vb) = builder(dtype);
            let bn = normkit_candle::batch_norm(c, 1e-5, vb.pp("bn"))?;
            randomize(&map, 6)?;
            let (w, b) = (get(&map, "bn.weight"), get(&map, "bn.bias"));
            let x = var(dims, 4, dtype)?;
            compare_grads(
                &format!("BN train {dims:?} {dtype:?}"),
                x.as_tensor(),
                &[("x", x.as_tensor()), ("weight", &w), ("bias", &b)],
                |x| bn.forward_t(x, true),
                |x| ref_batch_norm_train(x, Some(&w), Some(&b), 1e-5),
                tol(dtype),
            )?;
            // One train call: running = 0.9·(0, 1) + 0.1·(batch mean, unbiased variance).
            let (m, v) = channel_moments(x.as_tensor())?;
            let want_m = (m * 0.1)?;
            let want_v = ((v * 0.1)? + 0.9)?;
            assert_close(
                "running_mean",
                bn.running_mean().unwrap(),
                &want_m,
                tol(dtype),
            );
            assert_close(
                "running_var",
                bn.running_var().unwrap(),
                &want_v,
                tol(dtype),
            );
            assert_eq!(bn.num_batches_tracked(), Some(1));
            let count = get(&map, "bn.num_batches_tracked");
            assert_eq!(count.to_scalar::<i64>()?, 1);
            // The VarMap's variables are the module's state.
            assert_close(
                "VarMap running_mean",
                &get(&map, "bn.running_mean"),
                &want_m,
                tol(dtype),
            );
        }
    }
    Ok(())
}

#[test]
fn batch_norm_eval_uses_running_stats_and_differentiates_through_them_fixed() -> Result<()> {
    for dtype in DTYPES {
        let dims = [3usize, 4, 5, 3];
        let (map, vb) = builder(dtype);
        let bn = normkit_candle::batch_norm(4, 1e-5, vb.pp("bn"))?;
        randomize(&map, 7)?;
        for seed in 0..3 {
            bn.forward_t(&data(&dims, 20 + seed, 0.5, dtype)?, true)?;
        }
        let (m, v) = (
            bn.running_mean().unwrap().copy()?,
            bn.running_var().unwrap().copy()?,
        );
        let (w, b) = (get(&map, "bn.weight"), get(&map, "bn.bias"));
        let x = var(&dims, 8, dtype)?;
        compare_grads(
            &format!("BN eval {dtype:?}"),
            x.as_tensor(),
            &[("x", x.as_tensor()), ("weight", &w), ("bias", &b)],
            |x| bn.forward_t(x, false),
            |x| ref_batch_norm_eval(x, Some(&w), Some(&b), &m, &v, 1e-5),
            tol(dtype),
        )?;
        // Eval changes nothing.
        assert_close(
            "running_mean unchanged",
            bn.running_mean().unwrap(),
            &m,
            F64,
        );
        assert_eq!(bn.num_batches_tracked(), Some(3));
    }
    Ok(())
}

#[test]
fn instance_norm_matches_composed_ops() -> Result<()> {
    for dtype in DTYPES {
        let dims = [2usize, 3, 4, 5];
        let (map, vb) = builder(dtype);
        let config = normkit_candle::InstanceNormConfig {
            eps: 1e-5,
            affine: true,
        };
        let inorm = normkit_candle::instance_norm(3, config, vb.pp("in"))?;
        randomize(&map, 9)?;
        let (w, b) = (get(&map, "in.weight"), get(&map, "in.bias"));
        let x = var(&dims, 10, dtype)?;
        compare_grads(
            &format!("IN {dtype:?}"),
            x.as_tensor(),
            &[("x", x.as_tensor()), ("weight", &w), ("bias", &b)],
            |x| inorm.forward(x),
            |x| ref_group_norm(x, 3, Some(&w), Some(&b), 1e-5, false),
            tol(dtype),
        )?;
    }
    Ok(())
}

#[test]
fn adain_external_scale_and_shift_get_gradients() -> Result<()> {
    for dtype in DTYPES {
        let spec = r#"input = "N,C,H,W", axes = "H,W", unbiased, affine = external"#;
        let (_map, vb) = builder(dtype);
        let adain = NormModule::new(SpecLayer::new(spec, &[])?, vb)?;
        let x = var(&[2, 3, 4, 3], 11, dtype)?;
        let scale = Var::from_tensor(&(data(&[2, 3], 12, 1.0, dtype)?))?;
        let shift = var(&[2, 3], 13, dtype)?;
        let (s, h) = (scale.as_tensor(), shift.as_tensor());
        compare_grads(
            &format!("AdaIN {dtype:?}"),
            x.as_tensor(),
            &[("x", x.as_tensor()), ("scale", s), ("shift", h)],
            |x| adain.forward_external(x, s, h, Mode::Train),
            |x| {
                let y = ref_group_norm(x, 3, None, None, 1e-5, true)?;
                y.broadcast_mul(&s.reshape((2, 3, 1, 1))?)?
                    .broadcast_add(&h.reshape((2, 3, 1, 1))?)
            },
            tol(dtype),
        )?;
    }
    Ok(())
}

#[test]
fn batch_channel_chain_matches_composed_ops() -> Result<()> {
    for dtype in DTYPES {
        let spec = r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2, affine))"#;
        let (map, vb) = builder(dtype);
        let bcn = NormModule::new(SpecLayer::new(spec, &[("C", 4)])?, vb.pp("bcn"))?;
        randomize(&map, 14)?;
        let names = ["bn.weight", "bn.bias", "gn.weight", "gn.bias"];
        let p: Vec<Tensor> = names
            .iter()
            .map(|n| get(&map, &format!("bcn.{n}")))
            .collect();
        let x = var(&[3, 4, 3, 5], 15, dtype)?;
        let mut wrt = vec![("x", x.as_tensor())];
        for (n, v) in names.iter().zip(&p) {
            wrt.push((*n, v));
        }
        compare_grads(
            &format!("BCN {dtype:?}"),
            x.as_tensor(),
            &wrt,
            |x| bcn.forward_mode(x, Mode::Train),
            |x| {
                let y = ref_batch_norm_train(x, Some(&p[0]), Some(&p[1]), 1e-5)?;
                ref_group_norm(&y, 2, Some(&p[2]), Some(&p[3]), 1e-5, false)
            },
            tol(dtype),
        )?;
        assert!(map
            .data()
            .lock()
            .unwrap()
            .contains_key("bcn.bn.running_mean"));
    }
    Ok(())
}

#[test]
fn non_contiguous_inputs_give_the_contiguous_results() -> Result<()> {
    for dtype in DTYPES {
        let (map, vb) = builder(dtype);
        let gn = normkit_candle::group_norm(2, 4, 1e-5, vb.pp("gn"))?;
        let ln = normkit_candle::layer_norm(6, 1e-5, vb.pp("ln"))?;
        randomize(&map, 16)?;
        let (w, b) = (get(&map, "gn.weight"), get(&map, "gn.bias"));
        // [N=3, L=7, C=4] transposed to [3, 4, 7]: the op reads it strided (one copy).
        let base = var(&[3, 7, 4], 17, dtype)?;
        let t = |v: &Tensor| v.transpose(1, 2);
        assert!(!t(base.as_tensor())?.is_contiguous());
        compare_grads(
            &format!("GN transposed {dtype:?}"),
            base.as_tensor(),
            &[("x", base.as_tensor()), ("weight", &w), ("bias", &b)],
            |x| gn.forward(&t(x)?),
            |x| ref_group_norm(&t(x)?, 2, Some(&w), Some(&b), 1e-5, false),
            tol(dtype),
        )?;
        // A narrowed column block of a wider matrix through the layer norm.
        let (lw, lb) = (get(&map, "ln.weight"), get(&map, "ln.bias"));
        let wide = var(&[5, 11], 18, dtype)?;
        let cut = |v: &Tensor| v.narrow(1, 3, 6);
        compare_grads(
            &format!("LN narrowed {dtype:?}"),
            wide.as_tensor(),
            &[("x", wide.as_tensor()), ("weight", &lw), ("bias", &lb)],
            |x| ln.forward(&cut(x)?),
            |x| ref_layer_norm(&cut(x)?, Some(&lw), Some(&lb), 1e-5, true),
            tol(dtype),
        )?;
    }
    Ok(())
}

#[test]
fn candle_2168_fused_layer_norm_has_no_gradient_normkit_has_the_right_one() -> Result<()> {
    let dtype = DType::F32;
    let x = var(&[4, 16], 19, dtype)?;
    let w = var(&[16], 20, dtype)?;
    let b = var(&[16], 21, dtype)?;
    // candle's fused op: a fast forward without backward (candle#2168).
    let y = candle_nn::ops::layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5)?;
    let grads = y.sqr()?.sum_all()?.backward()?;
    assert!(grads.get(x.as_tensor()).is_none() && grads.get(w.as_tensor()).is_none());
    let y = candle_nn::ops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-6)?;
    assert!(y.sqr()?.sum_all()?.backward()?.get(x.as_tensor()).is_none());

    // normkit-candle's LayerNorm and RmsNorm with the same weights: gradients, correct.
    let (map, vb) = builder(dtype);
    let ln = normkit_candle::layer_norm(16, 1e-5, vb.pp("ln"))?;
    let rms = normkit_candle::rms_norm(16, 1e-6, vb.pp("rms"))?;
    get_var(&map, "ln.weight").set(w.as_tensor())?;
    get_var(&map, "ln.bias").set(b.as_tensor())?;
    get_var(&map, "rms.weight").set(w.as_tensor())?;
    let (lw, lb, rw) = (
        get(&map, "ln.weight"),
        get(&map, "ln.bias"),
        get(&map, "rms.weight"),
    );
    compare_grads(
        "LN (candle#2168)",
        x.as_tensor(),
        &[("x", x.as_tensor()), ("weight", &lw), ("bias", &lb)],
        |x| ln.forward(x),
        |x| ref_layer_norm(x, Some(&lw), Some(&lb), 1e-5, true),
        F32,
    )?;
    compare_grads(
        "RMS (candle#2168)",
        x.as_tensor(),
        &[("x", x.as_tensor()), ("weight", &rw)],
        |x| rms.forward(x),
        |x| ref_layer_norm(x, Some(&rw), None, 1e-6, false),
        F32,
    )
}

/// A user's own declarations: candle modules as they are (`#[norm]` emits `NormLayer`).
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
pub struct MyGroupNorm;

#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 2, affine)
    )
)]
pub struct MyBcn;

#[test]
fn generated_layers_run_as_modules_like_their_dynamic_twins() -> Result<()> {
    let dtype = DType::F64;
    let x = var(&[2, 4, 3, 3], 22, dtype)?;
    // Group norm: the generated layer against the reference.
    let (map, vb) = builder(dtype);
    let gn = NormModule::new(MyGroupNorm::<f64>::new(4), vb.pp("gn"))?;
    randomize(&map, 23)?;
    let (w, b) = (get(&map, "gn.weight"), get(&map, "gn.bias"));
    compare_grads(
        "generated GN",
        x.as_tensor(),
        &[("x", x.as_tensor()), ("weight", &w), ("bias", &b)],
        |x| gn.forward_t(x, true),
        |x| ref_group_norm(x, 2, Some(&w), Some(&b), 1e-5, false),
        F64,
    )?;
    // The chain: bit-identical to the DynNorm of the same spec, running stats included.
    let spec = r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2, affine))"#;
    let (m1, vb1) = builder(dtype);
    let (m2, vb2) = builder(dtype);
    let a = NormModule::new(MyBcn::<f64>::new(4), vb1)?;
    let d = NormModule::new(SpecLayer::new(spec, &[("C", 4)])?, vb2)?;
    randomize(&m1, 24)?;
    randomize(&m2, 24)?;
    let ya = a.forward_t(x.as_tensor(), true)?;
    let yd = d.forward_t(x.as_tensor(), true)?;
    let diff = (&ya - &yd)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert_eq!(diff, 0.0, "generated chain vs DynNorm");
    let ga = ya.sqr()?.sum_all()?.backward()?;
    let gd = yd.sqr()?.sum_all()?.backward()?;
    for n in ["bn.weight", "bn.bias", "gn.weight", "gn.bias"] {
        let (va, vd) = (get(&m1, n), get(&m2, n));
        assert_close(n, ga.get(&va).unwrap(), gd.get(&vd).unwrap(), F64);
    }
    assert_close(
        "running_var",
        &get(&m1, "bn.running_var"),
        &get(&m2, "bn.running_var"),
        F64,
    );
    assert_eq!(a.num_batches_tracked(0), Some(1));
    Ok(())
}

#[test]
fn a_second_backward_and_interleaved_calls_use_each_calls_own_state() -> Result<()> {
    let dtype = DType::F64;
    let (map, vb) = builder(dtype);
    let gn = normkit_candle::group_norm(2, 4, 1e-5, vb.pp("gn"))?;
    randomize(&map, 25)?;
    let (w, b) = (get(&map, "gn.weight"), get(&map, "gn.bias"));
    let x1 = var(&[2, 4, 5], 26, dtype)?;
    let x2 = var(&[3, 4, 2], 27, dtype)?;
    // Two forward calls of one module in one graph, then backward (twice).
    let y1 = gn.forward(x1.as_tensor())?;
    let y2 = gn.forward(x2.as_tensor())?;
    let loss = ((y1.sqr()?.sum_all()? * 0.5)? + y2.powf(3.0)?.sum_all()?)?;
    let r1 = ref_group_norm(x1.as_tensor(), 2, Some(&w), Some(&b), 1e-5, false)?;
    let r2 = ref_group_norm(x2.as_tensor(), 2, Some(&w), Some(&b), 1e-5, false)?;
    let rloss = ((r1.sqr()?.sum_all()? * 0.5)? + r2.powf(3.0)?.sum_all()?)?;
    let want = rloss.backward()?;
    for _ in 0..2 {
        let got = loss.backward()?;
        for (n, t) in [
            ("x1", x1.as_tensor()),
            ("x2", x2.as_tensor()),
            ("w", &w),
            ("b", &b),
        ] {
            assert_close(n, got.get(t).unwrap(), want.get(t).unwrap(), F64);
        }
    }
    Ok(())
}

/// candle's own composed path of `candle_nn::LayerNorm` (taken for a non-contiguous input)
/// agrees with normkit-candle's `composed::layer_norm` (what runs on GPUs) and with
/// normkit-candle on the CPU.
#[test]
fn composed_fallback_matches_candle_nn_and_normkit() -> Result<()> {
    let dtype = DType::F64;
    let (map, vb) = builder(dtype);
    let ln = normkit_candle::layer_norm(6, 1e-5, vb.pp("ln"))?;
    randomize(&map, 28)?;
    let (w, b) = (get(&map, "ln.weight"), get(&map, "ln.bias"));
    let cnn = candle_nn::LayerNorm::new(w.clone(), b.clone(), 1e-5);
    let x = data(&[6, 4], 29, 0.0, dtype)?.t()?;
    let a = cnn.forward(&x)?;
    let c = normkit_candle::composed::layer_norm(&x, Some(&w), Some(&b), 1e-5, true)?;
    assert_close("candle-nn vs composed", &c, &a, F64);
    assert_close("candle-nn vs normkit", &ln.forward(&x)?, &a, F64);
    let g = normkit_candle::composed::group_norm(&x.reshape((2, 3, 4))?, 3, None, None, 1e-5)?;
    let r = ref_group_norm(&x.reshape((2, 3, 4))?, 3, None, None, 1e-5, false)?;
    assert_close("composed GN", &g, &r, F64);
    Ok(())
}

use candle_core::Var;
