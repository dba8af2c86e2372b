//! Layers configured at run time: `NormSpec::parse` reads the attribute's syntax (with the
//! macro's validator and messages) and `DynNorm` runs it, bit for bit like the `#[norm]`
//! layer with the same spec.
//!
//! Run: `cargo run --release --example dynamic`

use normkit::ndarray::{Array4, ArrayD};
use normkit::prelude::*;

/// The compile-time twin of the run-time layer below.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
pub struct GroupNorm2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A configuration read from a file or a command line: every error is reported at once.
    let bad = r#"input = "N,C,H,W", axes = "C,H,X", groups = 0, afine"#;
    println!("NormSpec::parse({bad:?}):");
    match NormSpec::parse(bad) {
        Ok(spec) => println!("  unexpectedly accepted: {spec}"),
        Err(e) => {
            for line in e.to_string().lines() {
                println!("  error: {line}");
            }
        }
    }

    let text = r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#;
    let spec = NormSpec::parse(text)?;
    println!("NormSpec::parse({text:?}) -> canonical form:");
    println!("  {spec}");
    let mut dynamic = DynNorm::<f32>::new(&spec, &[("C", 4)])?.with_name("GroupNorm2(dyn)");
    let mut fixed = GroupNorm2::<f32>::new(4);

    let x = Array4::from_shape_fn((2, 4, 3, 3), |(n, c, h, w)| {
        ((n * 36 + c * 9 + h * 3 + w) as f32 * 0.37).sin() * (1.0 + c as f32)
    });
    let dy = x.mapv(|v| (v * 1.7).cos());
    let (y_dyn, saved_dyn) = dynamic.forward(x.view().into_dyn(), Mode::Train)?;
    let (y_mac, saved_mac) = fixed.forward(x.view(), Mode::Train)?;
    let g_dyn = dynamic.backward(x.view().into_dyn(), dy.view().into_dyn(), &saved_dyn)?;
    let g_mac = fixed.backward(x.view(), dy.view(), &saved_mac)?;
    println!(
        "DynNorm vs #[norm]: y bit-identical {}, dx {}, dgamma {}, dbeta {}",
        bits(&y_dyn) == bits(&y_mac.into_dyn()),
        bits(&g_dyn.dx) == bits(&g_mac.dx.into_dyn()),
        g_dyn.dgamma.as_ref().map(bits) == g_mac.dgamma.as_ref().map(bits),
        g_dyn.dbeta.as_ref().map(bits) == g_mac.dbeta.as_ref().map(bits)
    );
    let m = dynamic.stats(x.view().into_dyn())?;
    println!("stats(): mean/var shaped [N, G] = {:?}", m.mean.shape());

    // Run-time errors are values, never panics.
    let wrong = Array4::<f32>::zeros((2, 6, 3, 3));
    if let Err(e) = dynamic.forward(wrong.view().into_dyn(), Mode::Train) {
        println!("forward on C = 6: {e}");
    }
    if let Err(e) = dynamic.forward(
        wrong
            .view()
            .into_dyn()
            .index_axis_move(normkit::ndarray::Axis(0), 0),
        Mode::Train,
    ) {
        println!("forward on a rank-3 input: {e}");
    }
    if let Err(e) = DynNorm::<f32>::new(&spec, &[]) {
        println!("DynNorm::new without sizes: {e}");
    }
    println!("=> one configuration language, checked at compile time or at run time");
    Ok(())
}

/// The exact bit patterns of an array, for bit-for-bit comparisons.
fn bits(a: &ArrayD<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}
