//! The suite in half precision (`norm-bench --dtype bf16|f16`): the cases of [`SUITE`]
//! with every buffer (x, dy, output, dx, parameters, running statistics) in `bf16` or `f16`,
//! as `torch_suite_bf16.py` runs PyTorch (`x.to(torch.bfloat16)` with a bf16 module).
//!
//! Each case is a `DynNorm<T>` built from the case's declaration (the same entry points as
//! the generated layers of [`crate::cases`]); timed like the f32 suite: `forward_train_into`
//! (`forward_eval_into` for the eval cases) and `backward_into` (`backward_chain` for the
//! chain `bcn`, which allocates its gradients) with buffers allocated once. `gbps` counts 2
//! bytes per element: fwd 2·numel·2, bwd 3·numel·2.

use normkit::ndarray::{ArrayD, IxDyn};
use normkit::prelude::*;

use crate::cases::{case_info, Pass, SUITE};
use crate::data::Rng;
use crate::report::{json_str, num};
use crate::timing::{time_fn, Timing};

/// The `DynNorm` spec of a suite case and whether it runs in eval mode; its tensor is
/// channels-last for `bn_train_nhwc` (the spec's input order).
pub fn spec_of(case: &str) -> Option<(&'static str, bool)> {
    const BN2D: &str =
        r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats, momentum = 0.1"#;
    const BN1D: &str = r#"input = "N,C", axes = "N", affine, running_stats, momentum = 0.1"#;
    Some(match case {
        "bn_train" => (BN2D, false),
        "bn_eval" => (BN2D, true),
        "bn_train_nhwc" => (
            r#"input = "N,H,W,C", axes = "N,H,W", affine, running_stats, momentum = 0.1"#,
            false,
        ),
        "bn1d_train" | "bn1d_big_train" => (BN1D, false),
        "bn1d_eval" => (BN1D, true),
        "ln" => (r#"input = "N,D", axes = "D", affine = "D""#, false),
        "rms" => (
            r#"input = "N,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6"#,
            false,
        ),
        "gn" | "gn_big" => (
            r#"input = "N,C,H,W", axes = "C,H,W", groups = 32, affine"#,
            false,
        ),
        "in" => (r#"input = "N,C,H,W", axes = "H,W""#, false),
        "ws" => (
            r#"input = "O,I,kh,kw", axes = "I,kh,kw", unbiased, eps_mode = "std", eps = 1e-5"#,
            false,
        ),
        "bcn" => (
            r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 32, affine))"#,
            false,
        ),
        _ => return None,
    })
}

/// The element types `--dtype` accepts besides f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `bf16`.
    Bf16,
    /// `f16`.
    F16,
}

impl Dtype {
    /// Parses `"bf16"` / `"f16"`.
    pub fn parse(s: &str) -> Option<Dtype> {
        match s {
            "bf16" => Some(Dtype::Bf16),
            "f16" => Some(Dtype::F16),
            _ => None,
        }
    }

    /// The name, as in the JSON lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }
}

/// A half-precision case with its buffers, ready to be timed.
pub struct HalfRunner<T: Float> {
    layer: DynNorm<T>,
    x: ArrayD<T>,
    dy: ArrayD<T>,
    y: ArrayD<T>,
    saved: Saved<T>,
    grads: Grads<T, IxDyn>,
    eval: bool,
    chain: bool,
}

fn values<T: Float>(rng: &mut Rng, shape: &[usize], f: impl Fn(&mut Rng, &mut [f32])) -> ArrayD<T> {
    let mut a = ArrayD::<f32>::zeros(IxDyn(shape));
    if let Some(s) = a.as_slice_mut() {
        f(rng, s);
    }
    a.mapv(|v| T::from_acc(f64::from(v)))
}

impl<T: Float> HalfRunner<T> {
    /// Builds case `name` on the suite's shape (NCHW data made channels-last for
    /// `bn_train_nhwc`), primes `Saved` and the gradients.
    pub fn new(name: &str, seed: u64) -> Result<Self, String> {
        let info = case_info(name).ok_or_else(|| format!("unknown case {name:?}"))?;
        let (spec, eval) = spec_of(name).ok_or_else(|| format!("no spec for {name:?}"))?;
        let mut shape = info.shape.to_vec();
        if name == "bn_train_nhwc" {
            shape = vec![shape[0], shape[2], shape[3], shape[1]];
        }
        let mut rng = Rng::new(seed);
        let normal = |r: &mut Rng, s: &mut [f32]| r.fill_normal(s);
        let x = values::<T>(&mut rng, &shape, normal);
        let dy = values::<T>(&mut rng, &shape, normal);
        let spec = NormSpec::parse(spec).map_err(|e| e.to_string())?;
        let sizes: Vec<(&str, usize)> = match name {
            "ln" | "rms" => vec![("D", shape[1])],
            "in" | "ws" => vec![],
            "bn_train_nhwc" => vec![("C", shape[3])],
            _ => vec![("C", shape[1])],
        };
        let mut layer = DynNorm::<T>::new(&spec, &sizes).map_err(|e| e.to_string())?;
        let chain = layer.stages().len() > 1;
        for st in layer.stages_mut() {
            if let Some(g) = st.gamma.as_mut() {
                let s = g.shape().to_vec();
                *g = values(&mut rng, &s, |r, v| r.fill_uniform(v, 0.5, 1.5));
            }
            if let Some(b) = st.beta.as_mut() {
                let s = b.shape().to_vec();
                *b = values(&mut rng, &s, |r, v| r.fill_uniform(v, -0.5, 0.5));
            }
        }
        let mut r = HalfRunner {
            y: ArrayD::from_elem(x.raw_dim(), T::zero()),
            grads: Grads::new(ArrayD::from_elem(x.raw_dim(), T::zero())),
            layer,
            x,
            dy,
            saved: Saved::new(),
            eval,
            chain,
        };
        if !eval {
            r.fwd().map_err(|e| e.to_string())?;
            r.bwd().map_err(|e| e.to_string())?;
        }
        Ok(r)
    }

    /// One forward pass into the preallocated output.
    pub fn fwd(&mut self) -> Result<(), NormError> {
        if self.eval {
            self.layer
                .forward_eval_into(self.x.view(), self.y.view_mut())
        } else {
            self.layer
                .forward_train_into(self.x.view(), self.y.view_mut(), &mut self.saved)
        }
    }

    /// One backward pass (dx and the parameter gradients).
    pub fn bwd(&mut self) -> Result<(), NormError> {
        if self.chain {
            let g = self
                .layer
                .backward_chain(self.x.view(), self.dy.view(), &self.saved)?;
            self.grads.dx = g.dx;
            return Ok(());
        }
        self.layer
            .backward_into(self.x.view(), self.dy.view(), &self.saved, &mut self.grads)
    }

    /// The elements of the tensor.
    pub fn numel(&self) -> usize {
        self.x.len()
    }

    /// The output (for checks).
    pub fn output(&self) -> &ArrayD<T> {
        &self.y
    }

    /// The input gradient (for checks).
    pub fn dx(&self) -> &ArrayD<T> {
        &self.grads.dx
    }
}

/// One JSON line in `torch_suite_bf16.py`'s format (2 bytes per element in `gbps`).
pub fn json_line(
    case: &str,
    pass: Pass,
    threads: usize,
    numel: usize,
    t: &Timing,
    dtype: Dtype,
) -> String {
    let bytes = pass.bytes(numel) / 2;
    let mut s = format!(
        "{{\"case\": {}, \"pass\": \"{}\", \"threads\": {threads}, \"median_ms\": {}, \"gbps\": {}, \
         \"min_ms\": {}, \"reps\": {}, \"impl\": \"normkit _into {}\", \"dtype\": \"{}\"",
        json_str(case),
        pass.as_str(),
        num(t.median * 1e3, 4),
        num(bytes as f64 / t.median / 1e9, 2),
        num(t.min * 1e3, 4),
        t.reps,
        dtype.as_str(),
        dtype.as_str(),
    );
    if let Some(a) = t.allocs_per_call {
        s += &format!(", \"allocs_per_call\": {}", num(a, 1));
    }
    if let Some(f) = t.minflt_per_call {
        s += &format!(", \"minflt_per_call\": {}", num(f, 1));
    }
    s.push('}');
    s
}

fn run_cases<T: Float>(
    cases: &[&str],
    threads: usize,
    (reps, budget, seed): (usize, f64, u64),
    dtype: Dtype,
    emit: &mut (dyn FnMut(String) + Send),
) -> Result<(), String> {
    for &name in cases {
        let mut r = HalfRunner::<T>::new(name, seed)?;
        let mut passes = vec![Pass::Fwd];
        if !r.eval {
            passes.push(Pass::Bwd);
        }
        for pass in passes {
            let t = match pass {
                Pass::Fwd => time_fn(|| r.fwd(), reps, budget),
                Pass::Bwd => time_fn(|| r.bwd(), reps, budget),
            }
            .map_err(|e| e.to_string())?;
            emit(json_line(name, pass, threads, r.numel(), &t, dtype));
        }
    }
    Ok(())
}

/// Times `cases` in `dtype` inside a pool of `threads` threads, emitting JSON lines.
pub fn run_suite(
    cases: &[&str],
    threads: usize,
    (reps, budget, seed): (usize, f64, u64),
    dtype: Dtype,
    emit: &mut (dyn FnMut(String) + Send),
) -> Result<(), String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())?;
    pool.install(|| match dtype {
        Dtype::Bf16 => {
            run_cases::<normkit::bf16>(cases, threads, (reps, budget, seed), dtype, emit)
        }
        Dtype::F16 => run_cases::<normkit::f16>(cases, threads, (reps, budget, seed), dtype, emit),
    })
}

/// Every suite case has a spec here.
pub fn all_cases() -> Vec<&'static str> {
    SUITE.iter().map(|c| c.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case's spec parses, and a small bf16 layer of it matches the f32 layer's output
    /// rounded (the half layers compute in f32).
    #[test]
    fn every_case_has_a_spec_and_small_runs_match_f32() {
        for case in all_cases() {
            let (spec, eval) = spec_of(case).unwrap();
            let spec = NormSpec::parse(spec).unwrap();
            let shape: Vec<usize> = match case {
                "ln" | "rms" => vec![4, 64],
                c if c.starts_with("bn1d") => vec![5, 64],
                "ws" => vec![4, 8, 3, 3],
                "bn_train_nhwc" => vec![2, 3, 3, 64],
                _ => vec![2, 64, 3, 3],
            };
            let sizes: Vec<(&str, usize)> = match case {
                "ln" | "rms" => vec![("D", 64)],
                "in" | "ws" => vec![],
                "bn_train_nhwc" => vec![("C", 64)],
                _ => vec![("C", 64)],
            };
            let mut h = DynNorm::<normkit::bf16>::new(&spec, &sizes).unwrap();
            let mut w = DynNorm::<f32>::new(&spec, &sizes).unwrap();
            let mut rng = Rng::new(3);
            let xw = values::<f32>(&mut rng, &shape, |r, s| r.fill_normal(s))
                .mapv(|v| normkit::bf16::from_f32(v).to_f32());
            let x = xw.mapv(normkit::bf16::from_f32);
            let mode = if eval { Mode::Eval } else { Mode::Train };
            let (y, _) = h.forward(x.view(), mode).unwrap();
            let (yw, _) = w.forward(xw.view(), mode).unwrap();
            for (a, b) in y.iter().zip(&yw) {
                assert_eq!(*a, normkit::bf16::from_f32(*b), "{case}");
            }
        }
    }
}
