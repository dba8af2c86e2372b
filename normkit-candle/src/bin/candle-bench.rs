//! Forward and forward+backward times of normalization layers in candle: normkit-candle's
//! modules (through candle's autodiff), normkit's own `_into` API on the same shapes,
//! candle-nn's composed modules, and candle's fused forward where one exists.
//!
//! ```text
//! cargo run --release -p normkit-candle --bin candle-bench [-- --threads 1,2 --reps 7 --cases ln,gn]
//! ```
//!
//! f32. Medians (and minima) of `--reps` timed repetitions after one warm-up, at each thread
//! count (a rayon pool of that size; candle's own thread count follows `RAYON_NUM_THREADS`,
//! set to the same value). "fwd+bwd" in candle is `y = norm(x)`, then
//! `(y · g).sum_all().backward()` with a fixed g: candle's gradient bookkeeping (the seed
//! gradient, zero-filled accumulators, allocations) is included, and so is the loss; the
//! `loss only` row times the same loss and backward on `x` itself, the part of every candle
//! row that is not the normalization. normkit direct runs `forward_train_into` and
//! `backward_into` into buffers allocated once, with g as dy.

use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use normkit::ndarray::{ArrayD, IxDyn};
use normkit::{DynNorm, Grads, NormSpec, Saved};

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Ln,
    Rms,
    Gn,
    Bn,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Ln => "ln",
            Case::Rms => "rms",
            Case::Gn => "gn",
            Case::Bn => "bn_train",
        }
    }
    fn shape(self) -> Vec<usize> {
        match self {
            Case::Ln | Case::Rms => vec![8192, 1024],
            Case::Gn => vec![8, 256, 28, 28],
            Case::Bn => vec![32, 64, 56, 56],
        }
    }
    fn spec(self) -> (&'static str, Vec<(&'static str, usize)>) {
        match self {
            Case::Ln => (
                r#"input = "N,D", axes = "D", affine = "D""#,
                vec![("D", 1024)],
            ),
            Case::Rms => (
                r#"input = "N,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6"#,
                vec![("D", 1024)],
            ),
            Case::Gn => (
                r#"input = "N,C,H,W", axes = "C,H,W", groups = 32, affine"#,
                vec![("C", 256)],
            ),
            Case::Bn => (
                r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#,
                vec![("C", 64)],
            ),
        }
    }
}

struct Args {
    threads: Vec<usize>,
    reps: usize,
    cases: Vec<Case>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        threads: vec![1, 2],
        reps: 7,
        cases: vec![Case::Ln, Case::Rms, Case::Gn, Case::Bn],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--threads" => {
                args.threads = value()?
                    .split(',')
                    .map(|t| t.parse().map_err(|_| format!("bad thread count {t}")))
                    .collect::<std::result::Result<_, _>>()?
            }
            "--reps" => args.reps = value()?.parse().map_err(|_| "bad --reps")?,
            "--cases" => {
                let v = value()?;
                args.cases = v
                    .split(',')
                    .map(|c| match c {
                        "ln" => Ok(Case::Ln),
                        "rms" => Ok(Case::Rms),
                        "gn" => Ok(Case::Gn),
                        "bn" | "bn_train" => Ok(Case::Bn),
                        _ => Err(format!("unknown case {c} (ln, rms, gn, bn)")),
                    })
                    .collect::<std::result::Result<_, _>>()?
            }
            "-h" | "--help" => {
                return Err(
                    "usage: candle-bench [--threads 1,2] [--reps 7] [--cases ln,rms,gn,bn]".into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Median and minimum in milliseconds of `reps` runs of `f` after one warm-up.
fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f().map(|_| s.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok((t[t.len() / 2], t[0]))
}

fn seeded(dims: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

struct Row {
    what: String,
    fwd: Option<(f64, f64)>,
    both: Option<(f64, f64)>,
}

fn fmt(t: Option<(f64, f64)>) -> String {
    t.map_or("—".to_string(), |(m, lo)| format!("{m:.2} ({lo:.2})"))
}

fn run_case(case: Case, reps: usize) -> Result<Vec<Row>> {
    let dims = case.shape();
    let x = Var::from_tensor(&seeded(&dims, 1)?)?;
    let g = seeded(&dims, 2)?;
    let loss_of = |y: &Tensor| -> Result<()> {
        (y * &g)?.sum_all()?.backward()?;
        Ok(())
    };
    let mut rows = Vec::new();

    // normkit direct: the `_into` API with buffers allocated once.
    let (spec, sizes) = case.spec();
    let spec = NormSpec::parse(spec).map_err(candle_core::Error::wrap)?;
    let mut layer = DynNorm::<f32>::new(&spec, &sizes).map_err(candle_core::Error::wrap)?;
    let xa = ArrayD::from_shape_vec(IxDyn(&dims), x.as_tensor().flatten_all()?.to_vec1::<f32>()?)
        .map_err(candle_core::Error::wrap)?;
    let ga = ArrayD::from_shape_vec(IxDyn(&dims), g.flatten_all()?.to_vec1::<f32>()?)
        .map_err(candle_core::Error::wrap)?;
    let mut out = ArrayD::<f32>::zeros(IxDyn(&dims));
    let mut saved = Saved::new();
    let mut grads = Grads::new(ArrayD::<f32>::zeros(IxDyn(&dims)));
    let w = candle_core::Error::wrap;
    let fwd = time(reps, || {
        layer
            .forward_train_into(xa.view(), out.view_mut(), &mut saved)
            .map_err(w)
    })?;
    let both = time(reps, || {
        layer
            .forward_train_into(xa.view(), out.view_mut(), &mut saved)
            .map_err(w)?;
        layer
            .backward_into(xa.view(), ga.view(), &saved, &mut grads)
            .map_err(w)
    })?;
    rows.push(Row {
        what: "normkit direct (_into)".into(),
        fwd: Some(fwd),
        both: Some(both),
    });

    // normkit-candle's drop-in module, and candle-nn's composed one.
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let xt = x.as_tensor();
    let (ours, theirs): (Box<dyn ModuleT>, Option<Box<dyn ModuleT>>) = match case {
        Case::Ln => (
            Box::new(normkit_candle::layer_norm(1024, 1e-5, vb.pp("a"))?),
            None,
        ),
        Case::Rms => (
            Box::new(normkit_candle::rms_norm(1024, 1e-6, vb.pp("a"))?),
            None,
        ),
        Case::Gn => (
            Box::new(normkit_candle::group_norm(32, 256, 1e-5, vb.pp("a"))?),
            Some(Box::new(candle_nn::group_norm(32, 256, 1e-5, vb.pp("b"))?)),
        ),
        Case::Bn => (
            Box::new(normkit_candle::batch_norm(64, 1e-5, vb.pp("a"))?),
            Some(Box::new(candle_nn::batch_norm(64, 1e-5, vb.pp("b"))?)),
        ),
    };
    let fwd = time(reps, || ours.forward_t(xt, true).map(drop))?;
    let both = time(reps, || loss_of(&ours.forward_t(xt, true)?))?;
    rows.push(Row {
        what: "normkit-candle module".into(),
        fwd: Some(fwd),
        both: Some(both),
    });
    let loss = time(reps, || loss_of(xt))?;
    rows.push(Row {
        what: "  loss only (Σ x·g, backward)".into(),
        fwd: None,
        both: Some(loss),
    });

    // candle-nn composed (with backward) and fused (forward only).
    let ones = Tensor::ones(1024, DType::F32, &Device::Cpu)?;
    let zeros = Tensor::zeros(1024, DType::F32, &Device::Cpu)?;
    match case {
        Case::Ln | Case::Rms => {
            let slow = |x: &Tensor| -> Result<Tensor> {
                if case == Case::Ln {
                    candle_nn::ops::layer_norm_slow(x, &ones, &zeros, 1e-5)
                } else {
                    candle_nn::ops::rms_norm_slow(x, &ones, 1e-6)
                }
            };
            let fast = |x: &Tensor| -> Result<Tensor> {
                if case == Case::Ln {
                    candle_nn::ops::layer_norm(x, &ones, &zeros, 1e-5)
                } else {
                    candle_nn::ops::rms_norm(x, &ones, 1e-6)
                }
            };
            rows.push(Row {
                what: "candle-nn composed (ops::*_slow)".into(),
                fwd: Some(time(reps, || slow(xt).map(drop))?),
                both: Some(time(reps, || loss_of(&slow(xt)?))?),
            });
            rows.push(Row {
                what: "candle-nn fused (ops::*, no backward)".into(),
                fwd: Some(time(reps, || fast(xt).map(drop))?),
                both: None,
            });
        }
        Case::Gn | Case::Bn => {
            if let Some(m) = theirs {
                rows.push(Row {
                    what: "candle-nn composed module".into(),
                    fwd: Some(time(reps, || m.forward_t(xt, true).map(drop))?),
                    both: Some(time(reps, || loss_of(&m.forward_t(xt, true)?))?),
                });
            }
        }
    }
    Ok(rows)
}

fn command(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let cpu = command("lscpu", &[])
        .lines()
        .find(|l| l.starts_with("Model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let commit = command("git", &["rev-parse", "--short", "HEAD"]);
    let load = command("cat", &["/proc/loadavg"]);
    println!("# candle-bench (normkit-candle)\n");
    println!("- CPU: {cpu}");
    println!("- commit: {}", commit.trim());
    println!(
        "- candle-core/candle-nn 0.11, f32, SIMD level {:?}",
        normkit::simd::level()
    );
    println!("- load average at start: {}", load.trim());
    println!("- times: median (min) of {} reps, ms\n", args.reps);
    for &t in &args.threads {
        // candle's own thread count (used by a few ops) follows RAYON_NUM_THREADS.
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        let pool = match rayon::ThreadPoolBuilder::new().num_threads(t).build() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("thread pool: {e}");
                std::process::exit(1);
            }
        };
        println!("## {t} thread{}\n", if t == 1 { "" } else { "s" });
        for &case in &args.cases {
            let rows = match pool.install(|| run_case(case, args.reps)) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}: {e}", case.name());
                    std::process::exit(1);
                }
            };
            println!("### {} {:?}\n", case.name(), case.shape());
            println!("| variant | fwd ms | fwd+bwd ms |");
            println!("|---|---:|---:|");
            let direct = rows[0].both.map(|b| b.0);
            for r in &rows {
                println!("| {} | {} | {} |", r.what, fmt(r.fwd), fmt(r.both));
            }
            if let (Some(d), Some(m), Some(l)) = (direct, rows[1].both, rows[2].both) {
                println!(
                    "\nnormkit-candle / normkit direct, fwd+bwd: {:.2}x ({:.2}x without the loss-only time)\n",
                    m.0 / d,
                    (m.0 - l.0) / d
                );
            }
        }
    }
}
