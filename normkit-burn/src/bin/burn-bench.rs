//! Forward + backward of normalization layers on `Device::flex().autodiff()`, f32:
//! normkit-burn (fused path) vs burn-nn vs normkit's own `_into` API on the same shapes, at 1
//! and 2 threads (rayon pools: Flex and normkit both run on rayon). Medians of `--reps` runs
//! after one warm-up.
//!
//! ```text
//! cargo run --release -p normkit-burn --bin burn-bench [-- --reps 7] [--out FILE.md] [--quick]
//! ```
//!
//! The autodiff rows time `y = layer.forward(x); y.backward()` (backward seeded with ones),
//! reading nothing back; normkit's row times `forward_train_into` + `backward_into` with
//! buffers allocated once and dy = 1.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use normkit::ndarray::{ArrayD, IxDyn};
use normkit::{DynNorm, Grads, NormSpec, Saved};

struct Case {
    name: &'static str,
    shape: Vec<usize>,
    spec: &'static str,
    sizes: Vec<(&'static str, usize)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f();
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    median(t)
}

/// forward + backward of a burn module (`fwd`) on `x`.
fn burn_run<const D: usize>(
    reps: usize,
    dims: [usize; D],
    fwd: impl Fn(Tensor<D>) -> Tensor<D>,
) -> f64 {
    let dev = Device::flex().autodiff();
    let x = Tensor::<D>::random(dims, burn::tensor::Distribution::Normal(0.5, 1.5), &dev);
    time(reps, || {
        let xg = x.clone().detach().require_grad();
        let y = fwd(xg.clone());
        let grads = y.backward();
        std::hint::black_box(xg.grad(&grads));
    })
}

fn normkit_run(reps: usize, case: &Case) -> f64 {
    let spec = NormSpec::parse(case.spec).expect("valid spec");
    let mut layer = DynNorm::<f32>::new(&spec, &case.sizes).expect("valid sizes");
    let n: usize = case.shape.iter().product();
    let values: Vec<f32> = (0..n).map(|k| (k % 17) as f32 * 0.25 - 1.0).collect();
    let x = ArrayD::from_shape_vec(IxDyn(&case.shape), values).expect("n values");
    let dy = ArrayD::<f32>::ones(IxDyn(&case.shape));
    let mut out = ArrayD::<f32>::zeros(IxDyn(&case.shape));
    let mut saved = Saved::new();
    let mut grads = Grads::new(ArrayD::zeros(IxDyn(&case.shape)));
    assert_eq!(x.len(), n);
    time(reps, || {
        layer
            .forward_train_into(x.view(), out.view_mut(), &mut saved)
            .expect("forward");
        layer
            .backward_into(x.view(), dy.view(), &saved, &mut grads)
            .expect("backward");
    })
}

fn run_case(reps: usize, case: &Case) -> (f64, f64, f64) {
    let dev = Device::flex().autodiff();
    let s = &case.shape;
    let (ours, theirs) = match case.name {
        "LayerNorm" => {
            let a = normkit_burn::LayerNormConfig::new(s[1]).init(&dev);
            let b = burn::nn::LayerNormConfig::new(s[1]).init(&dev);
            (
                burn_run(reps, [s[0], s[1]], |x| a.forward(x)),
                burn_run(reps, [s[0], s[1]], |x| b.forward(x)),
            )
        }
        "RmsNorm" => {
            let a = normkit_burn::RmsNormConfig::new(s[1]).init(&dev);
            let b = burn::nn::RmsNormConfig::new(s[1]).init(&dev);
            (
                burn_run(reps, [s[0], s[1]], |x| a.forward(x)),
                burn_run(reps, [s[0], s[1]], |x| b.forward(x)),
            )
        }
        "GroupNorm" => {
            let a = normkit_burn::GroupNormConfig::new(32, s[1]).init(&dev);
            let b = burn::nn::GroupNormConfig::new(32, s[1]).init(&dev);
            let d = [s[0], s[1], s[2], s[3]];
            (
                burn_run(reps, d, |x| a.forward(x)),
                burn_run(reps, d, |x| b.forward(x)),
            )
        }
        "BatchNorm" => {
            let a = normkit_burn::BatchNormConfig::new(s[1]).init(&dev);
            let b = burn::nn::BatchNormConfig::new(s[1]).init(&dev);
            let d = [s[0], s[1], s[2], s[3]];
            let r = (
                burn_run(reps, d, |x| a.forward(x)),
                burn_run(reps, d, |x| b.forward(x)),
            );
            // keep the modules (their running state) alive until here
            std::hint::black_box((a.num_params(), b.num_params()));
            r
        }
        other => unreachable!("{other}"),
    };
    (ours, theirs, normkit_run(reps, case))
}

fn cpu_model() -> String {
    std::process::Command::new("lscpu")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            let field = |key: &str| {
                s.lines()
                    .find(|l| l.starts_with(key))
                    .map(|l| l[key.len()..].trim().to_string())
            };
            let name = field("Model name:")?;
            Some(match (field("CPU family:"), field("Model:")) {
                (Some(f), Some(m)) => format!("{name} (family {f}, model {m})"),
                _ => name,
            })
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let reps: usize = value("--reps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2 } else { 7 });
    let out = value("--out");
    let scale = |n: usize| if quick { (n / 8).max(1) } else { n };
    let cases = [
        Case {
            name: "LayerNorm",
            shape: vec![scale(8192), 1024],
            spec: r#"input = "N,D", axes = "D", affine = "D""#,
            sizes: vec![("D", 1024)],
        },
        Case {
            name: "GroupNorm",
            shape: vec![scale(8), 256, 28, 28],
            spec: r#"input = "N,C,H,W", axes = "C,H,W", groups = 32, affine"#,
            sizes: vec![("C", 256)],
        },
        Case {
            name: "BatchNorm",
            shape: vec![scale(32), 64, 56, 56],
            spec: r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#,
            sizes: vec![("C", 64)],
        },
        Case {
            name: "RmsNorm",
            shape: vec![scale(8192), 1024],
            spec: r#"input = "N,D", axes = "D", center = false, affine = "D", bias = false"#,
            sizes: vec![("D", 1024)],
        },
    ];
    let mut report = String::new();
    report.push_str(&format!(
        "# normkit-burn vs burn-nn vs normkit, forward + backward, f32, Device::flex().autodiff()\n\n\
         - CPU: {} ({} logical CPUs)\n- commit: {}\n- burn 0.22.1 (Flex with simd + rayon); median of {reps} runs after one warm-up\n\
         - command: `cargo run --release -p normkit-burn --bin burn-bench -- --reps {reps}{}`\n\n\
         | layer | shape | threads | normkit-burn ms | burn-nn ms | normkit `_into` ms | speedup vs burn-nn | normkit-burn / normkit |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        commit(),
        if quick { " --quick" } else { "" },
    ));
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon pool");
        for case in &cases {
            let (ours, theirs, direct) = pool.install(|| run_case(reps, case));
            let line = format!(
                "| {} | {:?} | {threads} | {ours:.2} | {theirs:.2} | {direct:.2} | {:.2}x | {:.2} |\n",
                case.name,
                case.shape,
                theirs / ours,
                ours / direct
            );
            print!("{line}");
            report.push_str(&line);
        }
    }
    if let Some(path) = out {
        std::fs::write(&path, &report).expect("write the report");
        println!("wrote {path}");
    } else {
        println!("\n{report}");
    }
}
