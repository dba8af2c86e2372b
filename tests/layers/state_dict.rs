//! PyTorch state dicts: `StateDict` (safetensors) and `state_dict` / `load_state_dict` on
//! generated layers and `DynNorm`.
//!
//! - PyTorch's files (tests/golden/state_dicts/, written by tests/golden/state_dicts.py with
//!   `safetensors.torch.save_file`): every layer loads strictly under its prefix, its eval
//!   output equals PyTorch's (float64 reference from the saved parameters) within f32
//!   tolerance (f32 layers) or 1e-10 (f64 layers), and `state_dict(prefix)` has exactly
//!   PyTorch's keys. The normkit-saved files are written to
//!   `$CARGO_TARGET_TMPDIR/state_dicts/` for the script's `--check` mode.
//! - Round trips write → read → load for every variant (BN, LN, GN, IN, RMS, WS, BCN, AdaIN),
//!   generated and dynamic, in every dtype (F32, F64, BF16, F16 files into f32/f64 layers).
//! - Bad files and bad state dicts: clear errors, the layer unchanged; random bytes never
//!   panic (proptest).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use normkit::ndarray::{arr0, Array, Array1, ArrayD, Dimension, Ix2, Ix3, Ix4, IxDyn};
use normkit::prelude::*;
use normkit::state_dict::{bf16, f16, Dtype};
use normkit::{StageParams, StateDict};
use proptest::prelude::*;
use serde::Deserialize;

type Res = Result<(), Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------
// Layers (the fixtures' specs, and one of every variant)
// ---------------------------------------------------------------------------------------

/// `torch.nn.BatchNorm2d(C)`.
#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    affine,
    running_stats,
    momentum = 0.1
)]
#[derive(Clone, Debug, PartialEq)]
struct Bn2d;

/// `torch.nn.BatchNorm1d(C)` on `[N, C]`.
#[norm(input = "N,C", axes = "N", affine, running_stats, momentum = 0.1)]
#[derive(Clone, Debug, PartialEq)]
struct Bn1d;

/// `torch.nn.GroupNorm(2, C)`.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
#[derive(Clone, Debug, PartialEq)]
struct Gn2;

/// `torch.nn.LayerNorm(D, bias=False)`.
#[norm(input = "N,T,D", axes = "D", affine = "D", bias = false)]
#[derive(Clone, Debug, PartialEq)]
struct LnNoBias;

/// `torch.nn.LayerNorm([C, H, W])`.
#[norm(input = "N,C,H,W", axes = "C,H,W", affine = "C,H,W")]
#[derive(Clone, Debug, PartialEq)]
struct LnChw;

/// `torch.nn.LayerNorm(D)` on `[N, D]`.
#[norm(input = "N,D", axes = "D", affine = "D")]
#[derive(Clone, Debug, PartialEq)]
struct LnD;

/// `torch.nn.InstanceNorm2d(C, affine=True, track_running_stats=True)`.
#[norm(input = "N,C,H,W", axes = "H,W", affine, running_stats, momentum = 0.1)]
#[derive(Clone, Debug, PartialEq)]
struct In2d;

/// `torch.nn.RMSNorm(D, eps=1e-6)`.
#[norm(
    input = "N,T,D",
    axes = "D",
    center = false,
    affine = "D",
    bias = false,
    eps = 1e-6
)]
#[derive(Clone, Debug, PartialEq)]
struct Rms;

/// Batch-Channel Norm (official BCNorm layout: per-group γ/β).
#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 2, affine = "G")
    )
)]
#[derive(Clone, Debug, PartialEq)]
struct Bcn;

/// Weight Standardization: no parameters.
#[norm(input = "O,I,kh,kw", axes = "I,kh,kw", unbiased, eps_mode = "std")]
#[derive(Clone, Debug, PartialEq)]
struct Ws;

/// AdaIN: external scale and shift, no parameters.
#[norm(input = "N,C,H,W", axes = "H,W", unbiased, affine = external)]
#[derive(Clone, Debug, PartialEq)]
struct AdaIn;

// ---------------------------------------------------------------------------------------
// The PyTorch fixtures
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    file: String,
    file_dtype: String,
    prefix: String,
    spec: String,
    sizes: BTreeMap<String, usize>,
    keys: Vec<String>,
    x: Tensor,
    y: Tensor,
}

#[derive(Deserialize)]
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl Tensor {
    fn array(&self) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.data.clone()).expect("shape")
    }
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/state_dicts")
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture_dir().join("cases.json")).expect("cases.json");
    let cases: Cases = serde_json::from_str(&text).expect("cases.json parses");
    assert!(cases.cases.len() >= 10, "fixture cases missing");
    cases.cases
}

/// `max |a - b| / max(|b|_max, 1)`.
fn rel_err<A: Float>(a: &ArrayD<A>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x.to_f64().unwrap() - y).abs()));
    diff / scale
}

/// The generated layer of a fixture case: loads the case's file, returns the f32 and f64
/// eval outputs and the f32 layer's `state_dict(prefix)`.
macro_rules! generated {
    ($ty:ident, $ix:ty, $sd:expr, $case:expr, ($($arg:expr),*)) => {{
        let (sd, case): (&StateDict, &Case) = ($sd, $case);
        let x = case.x.array();
        let mut l32 = $ty::<f32>::new($($arg),*);
        l32.load_state_dict(sd, &case.prefix)?;
        let x32 = x.mapv(|v| v as f32).into_dimensionality::<$ix>()?;
        let y32 = l32.forward_eval(x32.view())?.into_dyn();
        let mut l64 = $ty::<f64>::new($($arg),*);
        l64.load_state_dict(sd, &case.prefix)?;
        let y64 = l64.forward_eval(x.view().into_dimensionality::<$ix>()?)?.into_dyn();
        let saved = if case.file_dtype == "F64" {
            l64.state_dict(&case.prefix)
        } else {
            l32.state_dict(&case.prefix)
        };
        (y32, y64, saved)
    }};
}

type Outputs = (ArrayD<f32>, ArrayD<f64>, StateDict);

fn run_generated(case: &Case, sd: &StateDict) -> Result<Outputs, Box<dyn std::error::Error>> {
    let s = |k: &str| case.sizes[k];
    Ok(match case.name.as_str() {
        "bn2d" | "bf16_bn" => generated!(Bn2d, Ix4, sd, case, (s("C"))),
        "nested_gn" | "bf16_gn" => generated!(Gn2, Ix4, sd, case, (s("C"))),
        "ln_nobias" => generated!(LnNoBias, Ix3, sd, case, (s("D"))),
        "ln_chw" => generated!(LnChw, Ix4, sd, case, (s("C"), s("H"), s("W"))),
        "in2d_running" => generated!(In2d, Ix4, sd, case, (s("C"))),
        "rms" => generated!(Rms, Ix3, sd, case, (s("D"))),
        "bcn" => generated!(Bcn, Ix4, sd, case, (s("C"))),
        "f16_ln" => generated!(LnD, Ix2, sd, case, (s("D"))),
        "f64_bn1d" => generated!(Bn1d, Ix2, sd, case, (s("C"))),
        other => panic!("no generated layer for fixture case `{other}`"),
    })
}

fn run_dynamic(case: &Case, sd: &StateDict) -> Result<Outputs, Box<dyn std::error::Error>> {
    let spec = NormSpec::parse(&case.spec)?;
    let sizes: Vec<(&str, usize)> = case.sizes.iter().map(|(k, &v)| (k.as_str(), v)).collect();
    let x = case.x.array();
    let mut l32 = DynNorm::<f32>::new(&spec, &sizes)?;
    l32.load_state_dict(sd, &case.prefix)?;
    let y32 = l32.forward_eval(x.mapv(|v| v as f32).view())?;
    let mut l64 = DynNorm::<f64>::new(&spec, &sizes)?;
    l64.load_state_dict(sd, &case.prefix)?;
    let y64 = l64.forward_eval(x.view())?;
    let saved = if case.file_dtype == "F64" {
        l64.state_dict(&case.prefix)
    } else {
        l32.state_dict(&case.prefix)
    };
    Ok((y32, y64, saved))
}

#[test]
fn pytorch_files_load_and_give_pytorchs_eval_outputs() -> Res {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("state_dicts");
    std::fs::create_dir_all(&out_dir)?;
    for case in cases() {
        let sd = StateDict::read(fixture_dir().join(&case.file))?;
        let y = case.y.array();
        // The file's float tensors under the prefix have the dtype PyTorch saved them in.
        for key in &case.keys {
            let t = sd
                .get(key)
                .unwrap_or_else(|| panic!("{}: no `{key}`", case.name));
            if t.dtype().is_float() {
                assert_eq!(
                    t.dtype().to_string(),
                    case.file_dtype,
                    "{} {key}",
                    case.name
                );
            }
        }

        let (g32, g64, g_sd) = run_generated(&case, &sd)?;
        let (d32, d64, d_sd) = run_dynamic(&case, &sd)?;
        for (what, y32, y64) in [("generated", &g32, &g64), ("DynNorm", &d32, &d64)] {
            let e32 = rel_err(y32, &y);
            let e64 = rel_err(y64, &y);
            assert!(e32 < 1e-5, "{} {what} f32: error {e32:e}", case.name);
            assert!(e64 < 1e-10, "{} {what} f64: error {e64:e}", case.name);
        }
        assert_eq!(g32, d32, "{}: generated and DynNorm differ", case.name);
        assert_eq!(g64, d64, "{}: generated and DynNorm differ", case.name);

        // Saving gives exactly PyTorch's keys under the prefix, with the values loaded.
        let keys: Vec<&str> = g_sd.keys().collect();
        assert_eq!(keys, case.keys, "{}: saved keys", case.name);
        assert_eq!(
            g_sd, d_sd,
            "{}: generated and DynNorm save differently",
            case.name
        );
        for (key, t) in g_sd.iter() {
            let theirs = sd.get(key).expect("key").to_f64_vec();
            match theirs {
                Some(theirs) => {
                    let ours = t.to_f64_vec().expect("float");
                    for (a, b) in ours.iter().zip(&theirs) {
                        // Exact unless an F64 file was saved from an f32 layer (not done).
                        assert_eq!(a.to_bits(), b.to_bits(), "{} {key}", case.name);
                    }
                }
                None => assert_eq!(t, sd.get(key).expect("key"), "{} {key}", case.name),
            }
        }
        g_sd.write(out_dir.join(format!("{}.safetensors", case.name)))?;
    }
    Ok(())
}

#[test]
fn nested_prefix_ignores_the_rest_of_the_model() -> Res {
    let sd = StateDict::read(fixture_dir().join("nested_gn.safetensors"))?;
    // The file holds the whole model: conv, gn and head.
    assert!(sd.keys().any(|k| k == "layer.conv.weight"));
    assert!(sd.keys().any(|k| k == "head.bias"));
    let mut gn = Gn2::<f32>::new(6);
    gn.load_state_dict(&sd, "layer.gn.")?;
    let w: Array1<f32> = sd
        .get_array::<f32>("layer.gn.weight")?
        .into_dimensionality()?;
    assert_eq!(gn.gamma, w);
    // Without the prefix every key of the model is unexpected (or missing).
    let before = gn.clone();
    let err = gn.load_state_dict(&sd, "").unwrap_err();
    assert_eq!(gn, before);
    assert!(matches!(err, NormError::StateDictKey { .. }), "{err}");
    Ok(())
}

#[test]
fn bcn_group_parameters_of_shape_1_g_1_load_into_g() -> Res {
    let sd = StateDict::read(fixture_dir().join("bcn.safetensors"))?;
    assert_eq!(sd.get("gn.weight").unwrap().shape(), &[1, 2, 1]);
    let mut bcn = Bcn::<f64>::new(4);
    bcn.load_state_dict(&sd, "")?;
    assert_eq!(bcn.gn.gamma.shape(), &[2]);
    let w = sd.get("gn.weight").unwrap().to_f64_vec().unwrap();
    assert_eq!(bcn.gn.gamma.to_vec(), w);
    assert_eq!(bcn.bn.num_batches_tracked, 2);
    // Saved back with normkit's shape [G].
    assert_eq!(bcn.state_dict("").get("gn.weight").unwrap().shape(), &[2]);
    Ok(())
}

#[test]
fn bf16_file_into_f32_and_f64_layers_is_exact() -> Res {
    let sd = StateDict::read(fixture_dir().join("bf16_net.safetensors"))?;
    let t = sd.get("norm.running_var").unwrap();
    assert_eq!(t.dtype(), Dtype::BF16);
    assert_eq!(
        sd.get("norm.num_batches_tracked").unwrap().dtype(),
        Dtype::I64
    );
    let mut bn = Bn2d::<f32>::new(4);
    bn.load_state_dict(&sd, "norm.")?;
    let bits: Vec<bf16> = t.to_array::<bf16>().unwrap().iter().copied().collect();
    let want: Vec<f32> = bits.iter().map(|b| b.to_f32()).collect();
    assert_eq!(bn.running_var.to_vec(), want);
    assert_eq!(bn.num_batches_tracked, 3);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Round trips: every variant, generated and dynamic, every dtype
// ---------------------------------------------------------------------------------------

/// Deterministic values away from the defaults (γ = 1, β = 0, mean 0, var 1).
fn fill<A: Float, D: Dimension>(a: &mut Array<A, D>, seed: f64) {
    for (i, v) in a.iter_mut().enumerate() {
        let t = ((i as f64 + 1.0) * 0.731 + seed).sin();
        *v = A::from(0.5 + 0.9 * t.abs() + 0.013 * seed).unwrap();
    }
}

/// Fills every tensor of a dynamic layer; `num_batches_tracked` = 7 + stage.
fn fill_dyn<A: Float>(layer: &mut DynNorm<A>) {
    for (k, st) in layer.stages_mut().iter_mut().enumerate() {
        let s = k as f64 * 10.0;
        let slots = [
            &mut st.gamma,
            &mut st.beta,
            &mut st.running_mean,
            &mut st.running_var,
        ];
        for (j, a) in slots.into_iter().flatten().enumerate() {
            fill(a, s + j as f64);
        }
        if st.running_mean.is_some() {
            st.num_batches_tracked = 7 + k as u64;
        }
    }
}

/// Every float tensor of `sd` converted to dtype `to` (through the element types).
fn converted(sd: &StateDict, to: &Dtype) -> StateDict {
    let mut out = StateDict::new();
    for (k, t) in sd.iter() {
        if !t.dtype().is_float() {
            out.insert_tensor(k, t.clone());
            continue;
        }
        match to {
            Dtype::F32 => out.insert(k, &t.to_array::<f32>().unwrap()),
            Dtype::F64 => out.insert(k, &t.to_array::<f64>().unwrap()),
            Dtype::BF16 => out.insert(k, &t.to_array::<bf16>().unwrap()),
            Dtype::F16 => out.insert(k, &t.to_array::<f16>().unwrap()),
            other => panic!("not a float dtype: {other}"),
        };
    }
    out
}

/// The values a layer of element type `A` holds after loading `sd`'s tensors: every float
/// rounded to `A` (the reference for the loaded layer, computed from the file's values).
fn expected_stages<A: Float>(
    sd: &StateDict,
    template: &[StageParams<A>],
    names: &[&str],
    prefix: &str,
) -> Vec<StageParams<A>> {
    template
        .iter()
        .zip(names)
        .map(|(st, name)| {
            let key = |leaf: &str| {
                if name.is_empty() {
                    format!("{prefix}{leaf}")
                } else {
                    format!("{prefix}{name}.{leaf}")
                }
            };
            let get = |slot: &Option<ArrayD<A>>, leaf: &str| {
                slot.as_ref().map(|a| {
                    let v = sd.get(&key(leaf)).unwrap().to_f64_vec().unwrap();
                    let v: Vec<A> = v.into_iter().map(|x| A::from(x).unwrap()).collect();
                    ArrayD::from_shape_vec(a.raw_dim(), v).unwrap()
                })
            };
            let count = if st.running_mean.is_some() {
                let n = sd.get(&key("num_batches_tracked")).unwrap();
                assert_eq!(n.shape(), &[] as &[usize]);
                n.to_array::<i64>().unwrap().into_iter().next().unwrap() as u64
            } else {
                0
            };
            StageParams {
                gamma: get(&st.gamma, "weight"),
                beta: get(&st.beta, "bias"),
                running_mean: get(&st.running_mean, "running_mean"),
                running_var: get(&st.running_var, "running_var"),
                num_batches_tracked: count,
                tau: None,
                rmax: None,
                dmax: None,
                mean_weight: None,
                var_weight: None,
            }
        })
        .collect()
}

struct Variant {
    name: &'static str,
    spec: &'static str,
    sizes: &'static [(&'static str, usize)],
    /// PyTorch's keys with an empty prefix.
    keys: &'static [&'static str],
}

const BN_KEYS: &[&str] = &[
    "bias",
    "num_batches_tracked",
    "running_mean",
    "running_var",
    "weight",
];

const VARIANTS: &[Variant] = &[
    Variant {
        name: "BN",
        spec: r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats, momentum = 0.1"#,
        sizes: &[("C", 3)],
        keys: BN_KEYS,
    },
    Variant {
        name: "LN",
        spec: r#"input = "N,T,D", axes = "D", affine = "D", bias = false"#,
        sizes: &[("D", 5)],
        keys: &["weight"],
    },
    Variant {
        name: "GN",
        spec: r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#,
        sizes: &[("C", 4)],
        keys: &["bias", "weight"],
    },
    Variant {
        name: "IN",
        spec: r#"input = "N,C,H,W", axes = "H,W", affine, running_stats, momentum = 0.1"#,
        sizes: &[("C", 3)],
        keys: BN_KEYS,
    },
    Variant {
        name: "RMS",
        spec: r#"input = "N,T,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6"#,
        sizes: &[("D", 5)],
        keys: &["weight"],
    },
    Variant {
        name: "WS",
        spec: r#"input = "O,I,kh,kw", axes = "I,kh,kw", unbiased, eps_mode = "std""#,
        sizes: &[],
        keys: &[],
    },
    Variant {
        name: "BCN",
        spec: r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 2, affine = "G"))"#,
        sizes: &[("C", 4)],
        keys: &[
            "bn.bias",
            "bn.num_batches_tracked",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight",
            "gn.bias",
            "gn.weight",
        ],
    },
    Variant {
        name: "AdaIN",
        spec: r#"input = "N,C,H,W", axes = "H,W", unbiased, affine = external"#,
        sizes: &[],
        keys: &[],
    },
];

fn stage_names(spec: &NormSpec) -> Vec<&str> {
    let s = spec.spec();
    s.stages
        .iter()
        .map(|st| if s.chain { st.name.as_ref() } else { "" })
        .collect()
}

/// Saves a filled `A` layer, converts to every float dtype, writes, reads, loads into a
/// fresh `B` layer: the loaded values are the file's values rounded to `B`.
fn dyn_round_trip<A: Float, B: Float>(v: &Variant, prefix: &str) -> Res {
    let spec = NormSpec::parse(v.spec)?;
    let mut src = DynNorm::<A>::new(&spec, v.sizes)?;
    fill_dyn(&mut src);
    let sd = src.state_dict(prefix);
    let want_keys: Vec<String> = v.keys.iter().map(|k| format!("{prefix}{k}")).collect();
    assert_eq!(sd.keys().collect::<Vec<_>>(), want_keys, "{}", v.name);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("state_dict_round_trip");
    std::fs::create_dir_all(&dir)?;
    for dtype in [Dtype::F32, Dtype::F64, Dtype::BF16, Dtype::F16] {
        let file_sd = converted(&sd, &dtype);
        let path = dir.join(format!(
            "{}_{}_{}_{dtype}.safetensors",
            v.name,
            A::NAME,
            B::NAME
        ));
        file_sd.write(&path)?;
        let read = StateDict::read(&path)?;
        assert_eq!(read, file_sd, "{} {dtype}: write → read", v.name);
        assert_eq!(StateDict::from_bytes(&file_sd.to_bytes()?)?, file_sd);
        for (_, t) in read.iter().filter(|(_, t)| t.dtype().is_float()) {
            assert_eq!(t.dtype(), dtype);
        }
        let mut dst = DynNorm::<B>::new(&spec, v.sizes)?;
        dst.load_state_dict(&read, prefix)?;
        let want = expected_stages(&read, dst.stages(), &stage_names(&spec), prefix);
        assert_eq!(
            dst.stages(),
            &want[..],
            "{} {dtype} {}→{}",
            v.name,
            A::NAME,
            B::NAME
        );
        // Same dtype as the layer: the round trip is exact.
        if A::NAME == B::NAME && dtype.to_string().to_lowercase() == A::NAME {
            assert_eq!(dst.state_dict(prefix), sd, "{} {dtype}: not exact", v.name);
        }
    }
    Ok(())
}

#[test]
fn dynamic_round_trip_every_variant_and_dtype() -> Res {
    for v in VARIANTS {
        for prefix in ["", "model.norm."] {
            dyn_round_trip::<f32, f32>(v, prefix)?;
            dyn_round_trip::<f64, f64>(v, prefix)?;
            dyn_round_trip::<f32, f64>(v, prefix)?;
            dyn_round_trip::<f64, f32>(v, prefix)?;
        }
    }
    Ok(())
}

/// A generated layer's round trip through bytes; also into the `DynNorm` of the same spec
/// and back.
macro_rules! generated_round_trip {
    ($ty:ident, $spec:expr, $sizes:expr, ($($arg:expr),*), |$l:ident| $fill:block) => {{
        for prefix in ["", "block.0."] {
            let mut $l = $ty::<f32>::new($($arg),*);
            $fill
            let sd = $l.state_dict(prefix);
            let bytes = sd.to_bytes()?;
            let mut back = $ty::<f32>::new($($arg),*);
            back.load_state_dict(&StateDict::from_bytes(&bytes)?, prefix)?;
            assert_eq!(back, $l, "{}: round trip", stringify!($ty));
            // The dynamic layer of the same spec reads and writes the same keys and values.
            let spec = NormSpec::parse($spec)?;
            let mut dynamic = DynNorm::<f32>::new(&spec, $sizes)?;
            dynamic.load_state_dict(&sd, prefix)?;
            assert_eq!(dynamic.state_dict(prefix), sd, "{}: DynNorm", stringify!($ty));
            // An f64 copy through a BF16 file: the values rounded to bf16.
            let half = converted(&sd, &Dtype::BF16);
            let mut wide = $ty::<f64>::new($($arg),*);
            wide.load_state_dict(&StateDict::from_bytes(&half.to_bytes()?)?, prefix)?;
            let mut again = $ty::<f64>::new($($arg),*);
            again.load_state_dict(&wide.state_dict(prefix), prefix)?;
            assert_eq!(again, wide);
            for (k, t) in wide.state_dict(prefix).iter() {
                assert_eq!(t.to_f64_vec(), half.get(k).unwrap().to_f64_vec(), "{k}");
            }
        }
    }};
}

#[test]
fn generated_round_trip_every_variant() -> Res {
    generated_round_trip!(Bn2d, VARIANTS[0].spec, &[("C", 3)], (3), |l| {
        fill(&mut l.gamma, 1.0);
        fill(&mut l.beta, 2.0);
        fill(&mut l.running_mean, 3.0);
        fill(&mut l.running_var, 4.0);
        l.num_batches_tracked = 11;
    });
    generated_round_trip!(LnNoBias, VARIANTS[1].spec, &[("D", 5)], (5), |l| {
        fill(&mut l.gamma, 1.0);
    });
    generated_round_trip!(
        Gn2,
        r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#,
        &[("C", 4)],
        (4),
        |l| {
            fill(&mut l.gamma, 1.0);
            fill(&mut l.beta, 2.0);
        }
    );
    generated_round_trip!(In2d, VARIANTS[3].spec, &[("C", 3)], (3), |l| {
        fill(&mut l.gamma, 1.0);
        fill(&mut l.beta, 2.0);
        fill(&mut l.running_mean, 3.0);
        fill(&mut l.running_var, 4.0);
        l.num_batches_tracked = 2;
    });
    generated_round_trip!(Rms, VARIANTS[4].spec, &[("D", 5)], (5), |l| {
        fill(&mut l.gamma, 1.0);
    });
    generated_round_trip!(Ws, VARIANTS[5].spec, &[], (), |l| {
        let _ = &mut l;
    });
    generated_round_trip!(Bcn, VARIANTS[6].spec, &[("C", 4)], (4), |l| {
        fill(&mut l.bn.gamma, 1.0);
        fill(&mut l.bn.beta, 2.0);
        fill(&mut l.bn.running_mean, 3.0);
        fill(&mut l.bn.running_var, 4.0);
        l.bn.num_batches_tracked = 5;
        fill(&mut l.gn.gamma, 6.0);
        fill(&mut l.gn.beta, 7.0);
    });
    generated_round_trip!(AdaIn, VARIANTS[7].spec, &[], (), |l| {
        let _ = &mut l;
    });
    // Parameterless layers have an empty state dict.
    assert!(Ws::<f32>::new().state_dict("").is_empty());
    assert!(AdaIn::<f32>::new().state_dict("x.").is_empty());
    Ok(())
}

#[test]
fn trained_layer_round_trip_gives_the_same_outputs() -> Res {
    let x = Array::from_shape_fn((4, 3, 5, 5), |(n, c, h, w)| {
        ((n * 29 + c * 13 + h * 5 + w) as f32 * 0.41).sin() * (c as f32 + 1.0) + c as f32
    });
    let mut bn = Bn2d::<f32>::new(3);
    for _ in 0..3 {
        let (y, saved) = bn.forward_train(x.view())?;
        let g = bn.backward(x.view(), y.view(), &saved)?;
        let dgamma: Array1<f32> = g.dgamma.unwrap().into_dimensionality()?;
        bn.gamma = &bn.gamma - &(dgamma * 0.01);
    }
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trained_bn.safetensors");
    bn.state_dict("").write(&path)?;
    let mut back = Bn2d::<f32>::new(3);
    back.load_state_dict(&StateDict::read(&path)?, "")?;
    assert_eq!(back, bn);
    assert_eq!(back.num_batches_tracked, 3);
    assert_eq!(back.forward_eval(x.view())?, bn.forward_eval(x.view())?);
    Ok(())
}

#[test]
fn state_dict_api() -> Res {
    let mut sd = StateDict::new();
    assert!(sd.is_empty());
    let w = Array1::from(vec![1.5f32, -2.0, 0.25]);
    assert!(sd.insert("b.weight", &w).is_none());
    sd.insert("a.count", &arr0(-3i64));
    sd.insert(
        "c.half",
        &Array1::from(vec![bf16::from_f32(0.5), bf16::from_f32(-1.25)]),
    );
    sd.insert("c.f16", &Array1::from(vec![f16::from_f32(65504.0)]));
    sd.insert(
        "d.f64",
        &Array::from_shape_vec((2, 1), vec![0.1f64, 1e300])?,
    );
    sd.metadata_mut().insert("format".into(), "pt".into());
    assert_eq!(
        sd.keys().collect::<Vec<_>>(),
        ["a.count", "b.weight", "c.f16", "c.half", "d.f64"]
    );
    assert_eq!(sd.len(), 5);
    let back = StateDict::from_bytes(&sd.to_bytes()?)?;
    assert_eq!(back, sd);
    assert_eq!(back.metadata()["format"], "pt");
    assert_eq!(
        back.get("b.weight").unwrap().to_array::<f32>().unwrap(),
        w.into_dyn()
    );
    assert_eq!(back.get_array::<i64>("a.count")?, arr0(-3i64).into_dyn());
    assert_eq!(
        back.get("c.half").unwrap().to_f64_vec(),
        Some(vec![0.5, -1.25])
    );
    assert_eq!(back.get("c.f16").unwrap().to_f64_vec(), Some(vec![65504.0]));
    assert_eq!(back.get("d.f64").unwrap().shape(), &[2, 1]);
    // f64 → f32 rounds to nearest; 1e300 overflows to inf as `as f32` does.
    let narrowed = back.get_array::<f32>("d.f64")?;
    assert_eq!(narrowed.as_slice().unwrap(), &[0.1f32, f32::INFINITY]);
    // An integer tensor is not a float, and a float not an integer.
    let e = back.get_array::<f32>("a.count").unwrap_err();
    assert!(
        e.to_string().contains("`a.count`") && e.to_string().contains("I64"),
        "{e}"
    );
    assert!(back.get_array::<i64>("b.weight").is_err());
    assert!(back
        .get_array::<f32>("nope")
        .unwrap_err()
        .to_string()
        .contains("no such key"));
    // Non-contiguous arrays are stored in logical order.
    let t = Array::from_shape_vec((2, 3), (0..6).map(|v| v as f64).collect())?;
    sd.insert("t", &t.t());
    assert_eq!(
        sd.get("t").unwrap().to_f64_vec(),
        Some(vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0])
    );
    assert_eq!(sd.remove("t").unwrap().shape(), &[3, 2]);
    Ok(())
}

#[test]
fn other_dtypes_are_kept_but_not_converted() -> Res {
    // A hand-made file with a U8 tensor (header written here, independently of the crate).
    let header = r#"{"mask":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[1, 0, 1]);
    let sd = StateDict::from_bytes(&bytes)?;
    let t = sd.get("mask").unwrap();
    assert_eq!(t.dtype(), Dtype::Other("U8".into()));
    assert_eq!(t.bytes(), &[1, 0, 1]);
    assert!(t.to_f64_vec().is_none() && t.to_array::<f32>().is_none());
    // Written back unchanged (the header is padded to 8 bytes, the data the same).
    let again = StateDict::from_bytes(&sd.to_bytes()?)?;
    assert_eq!(again, sd);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Bad files and bad state dicts
// ---------------------------------------------------------------------------------------

fn trained_bn() -> Bn2d<f32> {
    let mut bn = Bn2d::<f32>::new(3);
    fill(&mut bn.gamma, 1.0);
    fill(&mut bn.beta, 2.0);
    fill(&mut bn.running_mean, 3.0);
    fill(&mut bn.running_var, 4.0);
    bn.num_batches_tracked = 4;
    bn
}

/// Loads `sd` into a perturbed BN layer, which must refuse and stay unchanged.
fn refused(sd: &StateDict, prefix: &str) -> NormError {
    let mut bn = trained_bn();
    let before = bn.clone();
    let err = bn.load_state_dict(sd, prefix).expect_err("must be refused");
    assert_eq!(bn, before, "layer changed by a refused load");
    let spec = NormSpec::parse(VARIANTS[0].spec).unwrap();
    let mut d = DynNorm::<f32>::new(&spec, &[("C", 3)])
        .unwrap()
        .with_name("Bn2d");
    fill_dyn(&mut d);
    let before = d.stages().to_vec();
    let derr = d
        .load_state_dict(sd, prefix)
        .expect_err("DynNorm must refuse too");
    assert_eq!(d.stages(), &before[..], "DynNorm changed by a refused load");
    assert_eq!(derr, err, "DynNorm and the generated layer disagree");
    err
}

fn key_error(err: &NormError) -> (&str, &str, &str) {
    match err {
        NormError::StateDictKey {
            layer,
            key,
            expected,
            found,
        } => {
            assert_eq!(layer, "Bn2d");
            (key, expected, found)
        }
        other => panic!("expected StateDictKey, got {other:?}"),
    }
}

fn good_bn_dict() -> StateDict {
    let mut other = Bn2d::<f32>::new(3);
    fill(&mut other.gamma, 9.0);
    other.num_batches_tracked = 1;
    other.state_dict("")
}

#[test]
fn missing_key() {
    for leaf in BN_KEYS {
        let mut sd = good_bn_dict();
        sd.remove(leaf);
        let err = refused(&sd, "");
        let (key, expected, found) = key_error(&err);
        assert_eq!(key, *leaf);
        assert_eq!(found, "no such key");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("Bn2d: state dict key `{leaf}`")),
            "{msg}"
        );
        if *leaf == "num_batches_tracked" {
            assert!(expected.contains("I64 scalar"), "{msg}");
        } else {
            assert!(expected.contains("shape [3]"), "{msg}");
        }
    }
}

#[test]
fn unexpected_key_under_the_prefix() {
    let mut sd = good_bn_dict();
    sd.insert("weight_extra", &Array1::<f32>::zeros(3));
    let err = refused(&sd, "");
    let (key, expected, found) = key_error(&err);
    assert_eq!(key, "weight_extra");
    assert!(expected.contains("`weight`") && expected.contains("`num_batches_tracked`"));
    assert_eq!(found, "dtype F32, shape [3]");
    // Keys outside the prefix are someone else's.
    let mut nested = StateDict::new();
    trained_bn().save_into(&mut nested, "enc.bn.");
    nested.insert("enc.conv.weight", &Array1::<f32>::zeros(2));
    nested.insert("enc.bn2.weight", &Array1::<f32>::zeros(2));
    let mut bn = Bn2d::<f32>::new(3);
    bn.load_state_dict(&nested, "enc.bn.").unwrap();
    assert_eq!(bn, trained_bn());
    nested.insert("enc.bn.extra", &arr0(1i64));
    let err = refused(&nested, "enc.bn.");
    assert_eq!(key_error(&err).0, "enc.bn.extra");
    // A layer without parameters refuses any key under its prefix.
    let mut ws = Ws::<f32>::new();
    let e = ws.load_state_dict(&nested, "enc.").unwrap_err();
    assert!(e.to_string().contains("has no parameters"), "{e}");
    ws.load_state_dict(&nested, "dec.").unwrap();
}

#[test]
fn wrong_shape() {
    let mut sd = good_bn_dict();
    sd.insert("running_var", &Array1::<f32>::ones(4));
    let err = refused(&sd, "");
    let (key, expected, found) = key_error(&err);
    assert_eq!(key, "running_var");
    assert!(expected.contains("shape [3]"), "{expected}");
    assert_eq!(found, "dtype F32, shape [4]");
    assert_eq!(
        err.to_string(),
        "Bn2d: state dict key `running_var`: expected a float tensor (F32, F64, BF16 or F16) \
         of shape [3], found dtype F32, shape [4]"
    );
    // Same count, other layout: [3, 1] is [3] up to a unit axis (accepted), [1, 3, 2] is not.
    let mut ok = good_bn_dict();
    ok.insert("weight", &Array::<f32, _>::ones((3, 1)));
    trained_bn().load_state_dict(&ok, "").unwrap();
    let mut bad = good_bn_dict();
    bad.insert("weight", &Array::<f32, _>::ones((1, 3, 2)));
    assert_eq!(key_error(&refused(&bad, "")).0, "weight");
    // num_batches_tracked must be a scalar.
    let mut bad = good_bn_dict();
    bad.insert("num_batches_tracked", &Array1::<i64>::zeros(2));
    let err = refused(&bad, "");
    assert_eq!(key_error(&err).2, "dtype I64, shape [2]");
}

#[test]
fn wrong_dtype() {
    let mut sd = good_bn_dict();
    sd.insert("bias", &Array1::<i64>::zeros(3));
    let err = refused(&sd, "");
    let (key, expected, found) = key_error(&err);
    assert_eq!(key, "bias");
    assert!(expected.starts_with("a float tensor"), "{expected}");
    assert_eq!(found, "dtype I64, shape [3]");
    // num_batches_tracked stored as a float, or negative.
    let mut sd = good_bn_dict();
    sd.insert("num_batches_tracked", &arr0(2.0f32));
    assert_eq!(key_error(&refused(&sd, "")).2, "dtype F32, shape []");
    let mut sd = good_bn_dict();
    sd.insert("num_batches_tracked", &arr0(-1i64));
    assert_eq!(
        key_error(&refused(&sd, "")).2,
        "dtype I64, shape [], value -1"
    );
}

#[test]
fn the_last_key_failing_leaves_everything_unchanged() {
    // weight, bias, running_mean are fine; running_var (checked last among floats) is bad.
    let mut sd = good_bn_dict();
    sd.insert("running_var", &Array1::<f32>::ones(2));
    refused(&sd, "");
    // A chain: stage bn is fine, stage gn is bad.
    let mut bcn = Bcn::<f32>::new(4);
    fill(&mut bcn.bn.gamma, 3.0);
    let mut sd = bcn.state_dict("");
    sd.insert("gn.bias", &Array1::<f32>::ones(3));
    let mut target = Bcn::<f32>::new(4);
    let before = target.clone();
    let err = target.load_state_dict(&sd, "").unwrap_err();
    assert_eq!(target, before);
    assert!(err.to_string().contains("`gn.bias`"), "{err}");
}

fn bn_bytes() -> Vec<u8> {
    good_bn_dict().to_bytes().unwrap()
}

fn file_error(bytes: &[u8]) -> String {
    match StateDict::from_bytes(bytes) {
        Err(NormError::StateDictFile { path, reason }) => {
            assert_eq!(path, "<bytes>");
            reason
        }
        other => panic!("expected StateDictFile, got {other:?}"),
    }
}

#[test]
fn truncated_and_corrupt_files() -> Res {
    let bytes = bn_bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    // Truncated: inside the length, inside the header, inside the data, one byte short.
    for cut in [0, 5, 8, 8 + n / 2, 8 + n, bytes.len() - 1] {
        let reason = file_error(&bytes[..cut]);
        assert!(
            reason.starts_with("not a valid safetensors file"),
            "{reason}"
        );
    }
    // A trailing byte is not covered by the header either.
    let mut longer = bytes.clone();
    longer.push(0);
    file_error(&longer);
    // Wrong header length: too large (beyond the file, absurd), too small.
    for len in [n as u64 + 8, u64::MAX, 1 << 40, n as u64 - 1, 0] {
        let mut b = bytes.clone();
        b[..8].copy_from_slice(&len.to_le_bytes());
        let reason = file_error(&b);
        assert!(
            reason.starts_with("not a valid safetensors file"),
            "{len}: {reason}"
        );
    }
    // Corrupt header JSON; a header whose offsets disagree with the shape.
    let mut b = bytes.clone();
    b[8] = b'[';
    assert!(file_error(&b).contains("JSON"));
    let header = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&[0; 8]);
    file_error(&b);
    // A shape whose byte size overflows.
    let header = r#"{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    file_error(&b);
    // A missing file names its path.
    let err = StateDict::read("/nonexistent/normkit.safetensors").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("StateDict `/nonexistent/normkit.safetensors`: cannot read the file"),
        "{err}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = StateDict::from_bytes(&bytes);
    }

    #[test]
    fn random_header_lengths_never_panic(len in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut b = len.to_le_bytes().to_vec();
        b.extend_from_slice(&tail);
        prop_assert!(StateDict::from_bytes(&b).is_err() || len as usize <= tail.len());
    }

    #[test]
    fn mutated_files_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let bytes = bn_bytes();
        let mut b = bytes.clone();
        let i = pos.index(b.len());
        b[i] = byte;
        let b = &b[..b.len() - cut.index(b.len() / 4)];
        if let Ok(sd) = StateDict::from_bytes(b) {
            // Whatever parses must also load or be refused cleanly.
            let mut bn = Bn2d::<f32>::new(3);
            let _ = bn.load_state_dict(&sd, "");
        }
    }
}

/// The README's "PyTorch state dicts" snippet, as written there (paths from the repository
/// root, where `cargo test` runs integration tests).
#[test]
fn readme_snippet() -> Result<(), NormError> {
    #[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
    pub struct BatchNorm2d;

    #[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
    pub struct GroupNorm2;

    // torch.nn.BatchNorm2d(3) after a few training steps, saved by PyTorch.
    let sd = StateDict::read("tests/golden/state_dicts/bn2d.safetensors")?;
    let mut bn = BatchNorm2d::<f32>::new(3);
    bn.load_state_dict(&sd, "")?; // weight, bias, running_mean, running_var, num_batches_tracked

    // A GroupNorm nested in a model: only the keys under the prefix are read.
    let model = StateDict::read("tests/golden/state_dicts/nested_gn.safetensors")?;
    let mut gn = GroupNorm2::<f64>::new(6); // F32 file into an f64 layer: converted
    gn.load_state_dict(&model, "layer.gn.")?;

    // Strict: a wrong prefix, shape or dtype is an error naming the key; the layer is unchanged.
    assert!(gn.load_state_dict(&model, "layer.").is_err());

    // Save under a prefix; write a file PyTorch loads.
    let mut out = StateDict::new();
    bn.save_into(&mut out, "encoder.bn.");
    gn.save_into(&mut out, "encoder.gn.");
    out.write(std::env::temp_dir().join("encoder.safetensors"))?;

    assert_eq!(bn.num_batches_tracked, 3);
    assert_eq!(out.len(), 7);
    Ok(())
}
