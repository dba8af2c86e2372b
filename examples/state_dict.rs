//! PyTorch state dicts: load norm layers from files PyTorch saved with
//! `safetensors.torch.save_file`, run them, and save them back.
//!
//! The files are the committed fixtures in `tests/golden/state_dicts/` (written by
//! `tests/golden/state_dicts.py`), with PyTorch's eval outputs on a fixed input in
//! `cases.json`; the example prints normkit's outputs next to PyTorch's.
//!
//! Run: `cargo run --release --example state_dict`

use std::error::Error;
use std::path::{Path, PathBuf};

use normkit::ndarray::{Array4, ArrayD, IxDyn};
use normkit::prelude::*;
use normkit::StateDict;

/// `torch.nn.BatchNorm2d(C)`.
#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
pub struct BatchNorm2d;

/// `torch.nn.GroupNorm(2, C)`.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
pub struct GroupNorm2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/state_dicts")
}

/// The input and PyTorch's float64 eval output of fixture case `name`.
fn case(name: &str) -> Result<(Array4<f32>, ArrayD<f64>), Box<dyn Error>> {
    let text = std::fs::read_to_string(fixtures().join("cases.json"))?;
    let all: serde_json::Value = serde_json::from_str(&text)?;
    let case = all["cases"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .ok_or(format!("no case {name}"))?;
    let array = |key: &str| -> Result<ArrayD<f64>, Box<dyn Error>> {
        let shape: Vec<usize> = serde_json::from_value(case[key]["shape"].clone())?;
        let data: Vec<f64> = serde_json::from_value(case[key]["data"].clone())?;
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), data)?)
    };
    let x = array("x")?.mapv(|v| v as f32).into_dimensionality()?;
    Ok((x, array("y")?))
}

fn max_diff(ours: &ArrayD<f32>, theirs: &ArrayD<f64>) -> f64 {
    ours.iter()
        .zip(theirs)
        .map(|(&a, &b)| (f64::from(a) - b).abs())
        .fold(0.0, f64::max)
}

fn show(sd: &StateDict) {
    for (name, t) in sd.iter() {
        println!("  {name:<32} {:<5} {:?}", t.dtype().to_string(), t.shape());
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    // 1. torch.nn.BatchNorm2d(3) after 3 training steps.
    println!("bn2d.safetensors (torch.nn.BatchNorm2d(3) after 3 SGD steps):");
    let sd = StateDict::read(fixtures().join("bn2d.safetensors"))?;
    show(&sd);
    let mut bn = BatchNorm2d::<f32>::new(3);
    bn.load_state_dict(&sd, "")?;
    println!("  gamma        {:.5}", bn.gamma);
    println!("  beta         {:.5}", bn.beta);
    println!("  running_mean {:.5}", bn.running_mean);
    println!("  running_var  {:.5}", bn.running_var);
    println!("  num_batches_tracked {}", bn.num_batches_tracked);
    let (x, want) = case("bn2d")?;
    let y = bn.forward_eval(x.view())?;
    println!("  eval y[0, :, 0, 0..4]:");
    for c in 0..3 {
        let ours: Vec<String> = (0..4).map(|w| format!("{:+.5}", y[[0, c, 0, w]])).collect();
        let torch: Vec<String> = (0..4)
            .map(|w| format!("{:+.5}", want[[0, c, 0, w]]))
            .collect();
        println!(
            "    normkit [{}]  torch [{}]",
            ours.join(" "),
            torch.join(" ")
        );
    }
    println!(
        "  max |normkit - torch| over all {} outputs: {:.2e}",
        y.len(),
        max_diff(&y.into_dyn(), &want)
    );

    // 2. A GroupNorm nested in a model (conv, gn, head): load the keys under `layer.gn.`.
    println!("\nnested_gn.safetensors (a model; its GroupNorm(2, 6) under `layer.gn.`):");
    let sd = StateDict::read(fixtures().join("nested_gn.safetensors"))?;
    show(&sd);
    let mut gn = GroupNorm2::<f32>::new(6);
    gn.load_state_dict(&sd, "layer.gn.")?;
    let (x, want) = case("nested_gn")?;
    let y = gn.forward_eval(x.view())?.into_dyn();
    println!("  max |normkit - torch|: {:.2e}", max_diff(&y, &want));
    // Strict: the wrong prefix names the offending key.
    let err = gn.load_state_dict(&sd, "layer.").unwrap_err();
    println!("  load with prefix `layer.`: {err}");

    // 3. A model saved in bfloat16: loaded into an f32 layer (bf16 values are exact in f32).
    println!("\nbf16_net.safetensors (model.to(torch.bfloat16); BatchNorm2d(4) under `norm.`):");
    let sd = StateDict::read(fixtures().join("bf16_net.safetensors"))?;
    let mut bn4 = BatchNorm2d::<f32>::new(4);
    bn4.load_state_dict(&sd, "norm.")?;
    println!("  running_var (from BF16) {:.6}", bn4.running_var);
    let (x, want) = case("bf16_bn")?;
    let y = bn4.forward_eval(x.view())?.into_dyn();
    println!("  max |normkit - torch|: {:.2e}", max_diff(&y, &want));

    // 4. Save: PyTorch's names under a prefix, F32 tensors, I64 num_batches_tracked.
    let out = std::env::temp_dir().join("normkit_state_dict_example.safetensors");
    let mut model = StateDict::new();
    bn.save_into(&mut model, "encoder.bn.");
    gn.save_into(&mut model, "encoder.gn.");
    model.write(&out)?;
    println!("\nwrote {} ({} tensors):", out.display(), model.len());
    show(&StateDict::read(&out)?);
    println!("  (torch: model.load_state_dict(safetensors.torch.load_file(path)))");
    Ok(())
}
