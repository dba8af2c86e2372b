//! Forward and forward+backward times of normalization layers in candle: normkit-candle's
//! modules (through candle's autodiff), normkit's own `_into` API on the same shapes,
//! candle-nn's composed modules, and candle's fused forward where one exists.
//!
//! ```text
//! cargo run --release -p normkit-candle --bin candle-bench [-- --threads 1,2 --reps 21 --slow-reps 3 --cases ln,gn]
//! ```
//!
//! (`--slow-reps 0`: no candle-nn rows. `--only direct|module|identity|copies`: time that
//! forward+backward row alone, for a profiler: `perf stat -e page-faults`, valgrind.)
//!
//! f32. At each thread count (a rayon pool of that size; candle's own thread count follows
//! `RAYON_NUM_THREADS`, set to the same value), after one warm-up of each:
//!
//! - the **overhead rows** run interleaved, one repetition of each in turn, `--reps` times
//!   (medians and minima), so that a load change on a shared machine hits all of them alike:
//!   - `normkit direct (_into)`: `forward_train_into` + `backward_into` into buffers
//!     allocated once, dy = 1;
//!   - `normkit-candle module`: `y = module.forward_t(x, true)?; y.backward()?` with `x` a
//!     `Var` (candle seeds dy = 1: the same work as the direct row, plus candle's);
//!   - `identity op (framework floor)`: the same `y.backward()` through a custom op that only
//!     copies (forward: x into a fresh buffer; backward: dy into a fresh buffer), i.e. what
//!     candle costs around any custom op: the output and gradient buffers it owns (fresh
//!     allocations, page faults), the seed, the zero-filled gradient accumulator and its add;
//!   - `two copies into reused buffers`: the identity op's own work done directly, so
//!     `floor = identity - copies` is candle's cost alone;
//! - the candle-nn rows run after them, `--slow-reps` times (they take 10-40x longer).
//!
//! The ratios printed: normkit-candle / direct, and normkit-candle / (direct + floor), the
//! latter being the bridge's own overhead once candle's unavoidable per-op work is counted.
//! Fresh buffers dominate that floor with glibc's default malloc, which returns buffers of
//! 32 MB and more to the kernel on free (so every call page-faults them in again); run with
//! `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736` to keep
//! freed memory in the process (the header prints the variable).

use std::time::Instant;

use candle_core::{
    CpuStorage, CustomOp1, DType, Device, Layout, ModuleT, Result, Shape, Tensor, Var,
};
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
    slow_reps: usize,
    cases: Vec<Case>,
    /// `--only ROW`: time one forward+backward row alone (for a profiler).
    only: Option<usize>,
}

/// The forward+backward rows `--only` selects, in the order `run_case` builds them.
const ROWS: [&str; 4] = ["direct", "module", "identity", "copies"];

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        threads: vec![1, 2],
        reps: 21,
        slow_reps: 3,
        cases: vec![Case::Ln, Case::Rms, Case::Gn, Case::Bn],
        only: None,
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
            "--slow-reps" => args.slow_reps = value()?.parse().map_err(|_| "bad --slow-reps")?,
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
            "--only" => {
                let v = value()?;
                args.only = Some(
                    ROWS.iter()
                        .position(|r| *r == v)
                        .ok_or(format!("unknown row {v} ({})", ROWS.join(", ")))?,
                )
            }
            "-h" | "--help" => {
                return Err(
                    "usage: candle-bench [--threads 1,2] [--reps 21] [--slow-reps 3] [--cases ln,rms,gn,bn] [--only direct|module|identity|copies]".into(),
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

/// A timed job of [`interleaved`].
type Job<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// Median and minimum in milliseconds of each of `fs`, run in turn `reps` times after one
/// warm-up of each.
fn interleaved(reps: usize, fs: &mut [Job<'_>]) -> Result<Vec<(f64, f64)>> {
    for f in fs.iter_mut() {
        f()?;
    }
    let mut t = vec![Vec::with_capacity(reps); fs.len()];
    for _ in 0..reps.max(1) {
        for (f, t) in fs.iter_mut().zip(t.iter_mut()) {
            let s = Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(t.into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            (t[t.len() / 2], t[0])
        })
        .collect())
}

/// y = x, dx = dy: a custom op doing nothing but produce the buffers candle owns.
struct Identity;

impl CustomOp1 for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = s.as_slice::<f32>()?;
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("identity: contiguous input only".into()))?;
        Ok((CpuStorage::F32(v[a..b].to_vec()), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        dy.copy().map(Some)
    }
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

fn run_case(case: Case, reps: usize, slow_reps: usize, only: Option<usize>) -> Result<Vec<Row>> {
    let dims = case.shape();
    let x = Var::from_tensor(&seeded(&dims, 1)?)?;
    let mut rows = Vec::new();

    // normkit direct: the `_into` API with buffers allocated once, dy = 1.
    let (spec, sizes) = case.spec();
    let spec = NormSpec::parse(spec).map_err(candle_core::Error::wrap)?;
    let mut layer = DynNorm::<f32>::new(&spec, &sizes).map_err(candle_core::Error::wrap)?;
    let xa = ArrayD::from_shape_vec(IxDyn(&dims), x.as_tensor().flatten_all()?.to_vec1::<f32>()?)
        .map_err(candle_core::Error::wrap)?;
    let ones_a = ArrayD::<f32>::ones(IxDyn(&dims));
    let mut out = ArrayD::<f32>::zeros(IxDyn(&dims));
    let mut copy1 = ArrayD::<f32>::zeros(IxDyn(&dims));
    let mut copy2 = ArrayD::<f32>::zeros(IxDyn(&dims));
    let mut saved = Saved::new();
    let mut grads = Grads::new(ArrayD::<f32>::zeros(IxDyn(&dims)));
    let w = candle_core::Error::wrap;

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
    let backward = |y: Tensor| -> Result<()> {
        std::hint::black_box(y.backward()?);
        Ok(())
    };

    // Forward only, interleaved (not with `--only`).
    let fwd = match only {
        Some(_) => Vec::new(),
        None => interleaved(
            reps,
            &mut [
                Box::new(|| {
                    layer
                        .forward_train_into(xa.view(), out.view_mut(), &mut saved)
                        .map_err(w)
                }),
                Box::new(|| ours.forward_t(xt, true).map(drop)),
            ],
        )?,
    };
    // Forward + backward: the rows of `ROWS`.
    let mut jobs: [Job<'_>; 4] = [
        Box::new(|| {
            layer
                .forward_train_into(xa.view(), out.view_mut(), &mut saved)
                .map_err(w)?;
            layer
                .backward_into(xa.view(), ones_a.view(), &saved, &mut grads)
                .map_err(w)
        }),
        Box::new(|| backward(ours.forward_t(xt, true)?)),
        Box::new(|| backward(xt.apply_op1(Identity)?)),
        Box::new(|| {
            copy1.assign(&xa);
            copy2.assign(&ones_a);
            Ok(())
        }),
    ];
    // `--only`: one forward+backward row alone, `reps` times (for perf, valgrind).
    if let Some(k) = only {
        let t = time(reps, &mut jobs[k])?;
        rows.push(Row {
            what: format!("{} alone", ROWS[k]),
            fwd: None,
            both: Some(t),
        });
        return Ok(rows);
    }
    // Interleaved.
    let both = interleaved(reps, &mut jobs)?;
    rows.push(Row {
        what: "normkit direct (_into)".into(),
        fwd: Some(fwd[0]),
        both: Some(both[0]),
    });
    rows.push(Row {
        what: "normkit-candle module".into(),
        fwd: Some(fwd[1]),
        both: Some(both[1]),
    });
    rows.push(Row {
        what: "identity op (framework floor)".into(),
        fwd: None,
        both: Some(both[2]),
    });
    rows.push(Row {
        what: "two copies into reused buffers".into(),
        fwd: None,
        both: Some(both[3]),
    });
    if slow_reps == 0 {
        return Ok(rows);
    }
    let reps = slow_reps;

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
                both: Some(time(reps, || backward(slow(xt)?))?),
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
                    both: Some(time(reps, || backward(m.forward_t(xt, true)?))?),
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
    println!(
        "- GLIBC_TUNABLES: {}",
        std::env::var("GLIBC_TUNABLES")
            .unwrap_or_else(|_| "(unset: glibc's default malloc)".into())
    );
    println!(
        "- times: median (min), ms; overhead rows interleaved, {} reps; candle-nn rows {} reps\n",
        args.reps, args.slow_reps
    );
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
            let rows = match pool.install(|| run_case(case, args.reps, args.slow_reps, args.only)) {
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
            let both = |k: usize| rows.get(k).and_then(|r| r.both);
            if let (Some(d), Some(m), Some(id), Some(cp)) = (direct, both(1), both(2), both(3)) {
                let floor = id.0 - cp.0;
                println!(
                    "\nfwd+bwd: normkit-candle / direct = {:.2}x; candle floor (identity - copies) \
                     = {:.2} ms; normkit-candle / (direct + floor) = {:.2}x\n",
                    m.0 / d,
                    floor,
                    m.0 / (d + floor)
                );
            }
        }
    }
}
