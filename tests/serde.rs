//! The `serde` feature: `NormSpec` (as its text), `Moments`, `StageParams` and `StateDict`
//! serialize and deserialize, so a configuration file can carry a spec and its parameters.
//!
//! Runs in `cargo test --workspace` (or `cargo test --test serde`): normkit's dev-dependency on
//! norm-runtime turns the feature on for every test build (Cargo.toml).

use normkit::ndarray::{arr0, Array, Array1, Array4, ArrayD, IxDyn};
use normkit::prelude::*;
use normkit::state_dict::{bf16, f16, Dtype};
use normkit::{StageParams, StateDict};
use serde::{Deserialize, Serialize};

type Res = Result<(), Box<dyn std::error::Error>>;

const BCN: &str = r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2, affine = "G"))"#;

#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 2, affine = "G")
    )
)]
struct Bcn;

fn x() -> Array4<f64> {
    Array4::from_shape_fn((3, 4, 3, 2), |(n, c, h, w)| {
        ((n * 23 + c * 11 + h * 5 + w) as f64 * 0.37).sin() * (c as f64 + 0.5) + c as f64
    })
}

#[test]
fn spec_is_its_canonical_text() -> Res {
    let spec = NormSpec::parse(BCN)?;
    let json = serde_json::to_string(&spec)?;
    let text: String = serde_json::from_str(&json)?;
    assert_eq!(text, spec.to_string());
    let back: NormSpec = serde_json::from_str(&json)?;
    assert_eq!(back, spec);
    // Any text the parser accepts deserializes; an invalid one gives the parser's message.
    let short: NormSpec = serde_json::from_str(r#""axes = \"C,H,W\", groups = 2""#)?;
    assert_eq!(short, NormSpec::parse(r#"axes = "C,H,W", groups = 2"#)?);
    let err = serde_json::from_str::<NormSpec>(r#""axes = \"C,H,X\"""#).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("invalid NormSpec:") && msg.contains('X'),
        "{msg}"
    );
    Ok(())
}

#[test]
fn moments_round_trip() -> Res {
    let spec = NormSpec::parse(r#"input = "N,C,H,W", axes = "C,H,W", groups = 2"#)?;
    let layer = DynNorm::<f64>::new(&spec, &[])?;
    let m = layer.stats(x().into_dyn().view())?;
    assert_eq!(m.mean.shape(), &[3, 2]);
    let json = serde_json::to_string(&m)?;
    let back: Moments<f64> = serde_json::from_str(&json)?;
    assert_eq!(back, m);
    let m32 = Moments {
        mean: m.mean.mapv(|v| v as f32),
        var: m.var.mapv(|v| v as f32),
    };
    let back: Moments<f32> = serde_json::from_str(&serde_json::to_string(&m32)?)?;
    assert_eq!(back, m32);
    // Mean and var of different shapes are refused.
    let bad = Moments {
        mean: m.mean.clone(),
        var: ArrayD::<f64>::zeros(IxDyn(&[2])),
    };
    let err = serde_json::from_str::<Moments<f64>>(&serde_json::to_string(&bad)?).unwrap_err();
    assert!(err.to_string().contains("same shape") || err.to_string().contains("var"));
    Ok(())
}

#[test]
fn stage_params_round_trip() -> Res {
    let spec = NormSpec::parse(BCN)?;
    let mut layer = DynNorm::<f32>::new(&spec, &[("C", 4)])?;
    layer.forward_train(x().mapv(|v| v as f32).into_dyn().view())?;
    let json = serde_json::to_string(layer.stages())?;
    let back: Vec<StageParams<f32>> = serde_json::from_str(&json)?;
    assert_eq!(back, layer.stages());
    assert_eq!(back[0].num_batches_tracked, 1);
    assert!(back[1].running_mean.is_none());
    Ok(())
}

fn every_dtype() -> StateDict {
    let mut sd = StateDict::new();
    let specials32 = [
        0.1f32,
        -0.0,
        1e-40,
        f32::MAX,
        f32::NAN,
        f32::INFINITY,
        -f32::INFINITY,
    ];
    sd.insert("f32", &Array1::from(specials32.to_vec()));
    let specials64 = [
        0.1f64,
        1.0 / 3.0,
        -1e-300,
        5e-324,
        f64::MAX,
        f64::NAN,
        -f64::INFINITY,
    ];
    sd.insert(
        "f64",
        &Array::from_shape_vec((7, 1), specials64.to_vec()).unwrap(),
    );
    let b: Vec<bf16> = [0.5f32, -3.0e38, 1.0e-3, f32::NAN]
        .map(bf16::from_f32)
        .to_vec();
    sd.insert("bf16", &Array::from_shape_vec((2, 2), b).unwrap());
    let h: Vec<f16> = [65504.0f32, -6.0e-8, 0.333, f32::INFINITY]
        .map(f16::from_f32)
        .to_vec();
    sd.insert("f16", &Array1::from(h));
    sd.insert("nbt", &arr0(i64::MAX));
    sd.insert("empty", &Array::<f32, _>::zeros((0, 3)));
    sd.metadata_mut().insert("format".into(), "pt".into());
    sd
}

#[test]
fn state_dict_round_trips_every_dtype_exactly() -> Res {
    let sd = every_dtype();
    let json = serde_json::to_string_pretty(&sd)?;
    assert!(json.contains("\"__metadata__\""));
    assert!(json.contains("\"NaN\"") && json.contains("\"-inf\""));
    let back: StateDict = serde_json::from_str(&json)?;
    // Tensor equality is equality of the stored bytes: bit-exact, NaN payloads included.
    assert_eq!(back, sd);
    assert_eq!(back.get("bf16").unwrap().dtype(), Dtype::BF16);
    assert_eq!(back.get("nbt").unwrap().shape(), &[] as &[usize]);
    // And through safetensors too.
    assert_eq!(StateDict::from_bytes(&back.to_bytes()?)?, sd);
    Ok(())
}

#[test]
fn bad_state_dict_json_is_refused() {
    let cases = [
        (
            r#"{"w": {"dtype": "F32", "shape": [3], "data": [1, 2]}}"#,
            "3 elements",
        ),
        (r#"{"w": {"dtype": "U8", "shape": [1], "data": [1]}}"#, "U8"),
        (
            r#"{"w": {"dtype": "I64", "shape": [], "data": [1.5]}}"#,
            "integers",
        ),
        (
            r#"{"w": {"dtype": "F32", "shape": [1], "data": ["one"]}}"#,
            "`one`",
        ),
        (
            r#"{"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data": []}}"#,
            "overflows",
        ),
        (
            r#"{"w": {"dtype": "F32", "shape": [], "data": [1]}, "w": {"dtype": "F32", "shape": [], "data": [1]}}"#,
            "twice",
        ),
        (r#"[1, 2]"#, "map"),
    ];
    for (json, needle) in cases {
        let err = serde_json::from_str::<StateDict>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

/// What a configuration file holds: the layer's spec, its sizes and its parameters.
#[derive(Serialize, Deserialize)]
struct Config {
    spec: NormSpec,
    sizes: Vec<(String, usize)>,
    params: StateDict,
}

#[test]
fn a_config_file_carries_a_spec_and_its_parameters() -> Res {
    let spec = NormSpec::parse(BCN)?;
    let mut layer = DynNorm::<f32>::new(&spec, &[("C", 4)])?;
    let x = x().mapv(|v| v as f32);
    for _ in 0..3 {
        layer.forward_train(x.view().into_dyn())?;
    }
    for st in layer.stages_mut() {
        if let Some(g) = &mut st.gamma {
            g.iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v += 0.1 * i as f32);
        }
    }
    let config = Config {
        spec: spec.clone(),
        sizes: vec![("C".into(), 4)],
        params: layer.state_dict(""),
    };
    let text = serde_json::to_string_pretty(&config)?;

    let read: Config = serde_json::from_str(&text)?;
    let sizes: Vec<(&str, usize)> = read.sizes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut loaded = DynNorm::<f32>::new(&read.spec, &sizes)?;
    loaded.load_state_dict(&read.params, "")?;
    assert_eq!(loaded.stages(), layer.stages());
    let want = layer.forward_eval(x.view().into_dyn())?;
    assert_eq!(loaded.forward_eval(x.view().into_dyn())?, want);
    // The generated layer of the same spec takes the same parameters.
    let mut generated = Bcn::<f32>::new(4);
    generated.load_state_dict(&read.params, "")?;
    assert_eq!(generated.bn.num_batches_tracked, 3);
    assert_eq!(generated.forward_eval(x.view())?.into_dyn(), want);
    Ok(())
}
