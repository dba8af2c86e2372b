//! The monomorphized paths against the generic path, bit for bit: train forward (output,
//! saved statistics, running statistics), backward (dx, dγ, dβ) after a train and after an
//! eval forward, and eval, on random shapes (odd sizes, batch 1, a few large enough to split
//! into tasks) of every class `classify` specializes, in f32 and f64, at 1, 2 and 3 threads
//! (the results must not depend on the thread count either).

use ndarray::{ArrayD, IxDyn};

use crate::{DynNorm, Float, Mode, NormSpec};

/// One declaration: the spec, the sizes of its parameter axes, and the input's axis names
/// (a random size is drawn for every axis not in `sizes`).
struct Case {
    spec: &'static str,
    sizes: &'static [(&'static str, usize)],
    axes: &'static [&'static str],
}

const CASES: &[Case] = &[
    // Columns, per-channel parameters (BatchNorm1d).
    Case {
        spec: r#"input = "N,C", axes = "N", affine, running_stats"#,
        sizes: &[("C", 5)],
        axes: &["N", "C"],
    },
    // Columns, no parameters, unbiased, eps added to σ.
    Case {
        spec: r#"input = "N,C", axes = "N", unbiased, eps_mode = "std", eps = 0.01"#,
        sizes: &[],
        axes: &["N", "C"],
    },
    // Columns, channels last, scale only, cumulative momentum.
    Case {
        spec: r#"input = "N,H,W,C", axes = "N,H,W", affine, bias = false, running_stats, momentum = "cumulative""#,
        sizes: &[("C", 3)],
        axes: &["N", "H", "W", "C"],
    },
    // Sandwich (BatchNorm2d).
    Case {
        spec: r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats, momentum = 0.3"#,
        sizes: &[("C", 3)],
        axes: &["N", "C", "H", "W"],
    },
    // Sandwich, no parameters, eps added to σ.
    Case {
        spec: r#"input = "N,C,L", axes = "N,L", running_stats, eps_mode = "std""#,
        sizes: &[("C", 4)],
        axes: &["N", "C", "L"],
    },
    // Rows, per-feature parameters (LayerNorm).
    Case {
        spec: r#"input = "N,T,D", axes = "D", affine = "D""#,
        sizes: &[("D", 7)],
        axes: &["N", "T", "D"],
    },
    // Rows, per-feature, unbiased, eps added to σ.
    Case {
        spec: r#"input = "N,D", axes = "D", affine = "D", unbiased, eps_mode = "std""#,
        sizes: &[("D", 13)],
        axes: &["N", "D"],
    },
    // Rows, RMS norm.
    Case {
        spec: r#"input = "N,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6"#,
        sizes: &[("D", 9)],
        axes: &["N", "D"],
    },
    // Rows, per-channel parameters and running statistics (instance norm).
    Case {
        spec: r#"input = "N,C,H,W", axes = "H,W", affine, running_stats, momentum = 0.1"#,
        sizes: &[("C", 3)],
        axes: &["N", "C", "H", "W"],
    },
    // Rows, per-channel parameters over a reduced-free axis (`affine = "C"`).
    Case {
        spec: r#"input = "N,C,L", axes = "L", affine = "C", bias = false"#,
        sizes: &[("C", 2)],
        axes: &["N", "C", "L"],
    },
    // Rows, the sum of squares (centered and not).
    Case {
        spec: r#"input = "N,C,L", axes = "C,L", statistic = "sum", affine, eps = 1e-5"#,
        sizes: &[("C", 3)],
        axes: &["N", "C", "L"],
    },
    Case {
        spec: r#"input = "N,D", axes = "D", statistic = "sum", center = false"#,
        sizes: &[],
        axes: &["N", "D"],
    },
    // Grouped (GroupNorm), per-feature and per-group parameters.
    Case {
        spec: r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#,
        sizes: &[("C", 4)],
        axes: &["N", "C", "H", "W"],
    },
    Case {
        spec: r#"input = "N,C,L", axes = "C,L", groups = 3, affine = "G", eps_mode = "std""#,
        sizes: &[("C", 6)],
        axes: &["N", "C", "L"],
    },
];

/// A small xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [lo, hi).
    fn unit(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }

    fn array<T: Float>(&mut self, shape: &[usize], lo: f64, hi: f64) -> ArrayD<T> {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || T::from_acc(self.unit(lo, hi)))
    }
}

/// Everything one round returns, as bits (f64 holds both types' values exactly).
type Bits = Vec<Vec<u64>>;

fn bits<T: Float>(a: &ArrayD<T>) -> Vec<u64> {
    a.iter().map(|v| v.to_acc().to_bits()).collect()
}

fn opt_bits<T: Float>(a: &Option<ArrayD<T>>) -> Vec<u64> {
    a.as_ref().map_or_else(Vec::new, bits)
}

/// The layer of `case` with random parameters and running statistics.
fn layer<T: Float>(case: &Case, rng: &mut Rng) -> DynNorm<T> {
    let spec = NormSpec::parse(case.spec).expect("valid spec");
    let mut l = DynNorm::<T>::new(&spec, case.sizes).expect("layer");
    for st in l.stages_mut() {
        for (p, lo, hi) in [
            (&mut st.gamma, 0.5, 1.5),
            (&mut st.beta, -0.5, 0.5),
            (&mut st.running_mean, -0.3, 0.3),
            (&mut st.running_var, 0.5, 2.0),
        ] {
            if let Some(a) = p.as_mut() {
                *a = rng.array(a.shape(), lo, hi);
            }
        }
    }
    l
}

/// Train forward, backward, eval forward, eval forward with `Saved` and its backward, then
/// the running statistics: every result as bits.
/// (An error, e.g. too few values per group for an unbiased estimator, ends the round: the
/// two paths must give the same one.)
fn round<T: Float>(mut l: DynNorm<T>, x: &ArrayD<T>, dy: &ArrayD<T>) -> Result<Bits, String> {
    let e = |e: crate::NormError| e.to_string();
    let mut out = Vec::new();
    let (y, saved) = l.forward_train(x.view()).map_err(e)?;
    out.push(bits(&y));
    let g = l.backward(x.view(), dy.view(), &saved).map_err(e)?;
    out.extend([bits(&g.dx), opt_bits(&g.dgamma), opt_bits(&g.dbeta)]);
    out.push(bits(&l.forward_eval(x.view()).map_err(e)?));
    let (y, saved) = l.forward(x.view(), Mode::Eval).map_err(e)?;
    out.push(bits(&y));
    let g = l.backward(x.view(), dy.view(), &saved).map_err(e)?;
    out.extend([bits(&g.dx), opt_bits(&g.dgamma), opt_bits(&g.dbeta)]);
    for st in l.stages() {
        out.push(opt_bits(&st.running_mean));
        out.push(opt_bits(&st.running_var));
        out.push(vec![st.num_batches_tracked]);
    }
    Ok(out)
}

/// Random shapes for `case`: sizes 1..=max per free axis, `N` = 1 in some.
fn shape(case: &Case, rng: &mut Rng, max: u64) -> Vec<usize> {
    case.axes
        .iter()
        .map(|a| match case.sizes.iter().find(|(n, _)| n == a) {
            Some(&(_, n)) => n,
            None => 1 + (rng.next() % max) as usize,
        })
        .collect()
}

fn compare<T: Float>(seed: u64) {
    let mut rng = Rng(seed);
    for case in CASES {
        // Small odd shapes, batch 1, and one large enough to run several tasks.
        let mut shapes: Vec<Vec<usize>> = (0..4).map(|_| shape(case, &mut rng, 9)).collect();
        let mut one = shape(case, &mut rng, 7);
        one[0] = 1;
        shapes.push(one);
        shapes.push(shape(case, &mut rng, 64));
        let mut compared = 0;
        for sh in shapes {
            let x = rng.array::<T>(&sh, -2.0, 3.0);
            let dy = rng.array::<T>(&sh, -1.0, 1.0);
            let base = layer::<T>(case, &mut rng);
            assert!(
                base.is_specialized(),
                "{}: expected a specialized class",
                case.spec
            );
            let mut first: Option<Result<Bits, String>> = None;
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("thread pool");
                let (mono, generic) = pool.install(|| {
                    let mono = round(base.clone(), &x, &dy);
                    let generic = round(base.clone().on_generic_path(), &x, &dy);
                    (mono, generic)
                });
                let what = format!("{} {} {:?} T={threads}", T::NAME, case.spec, sh);
                match (&mono, &generic) {
                    (Ok(m), Ok(g)) => {
                        compared += 1;
                        for (i, (m, g)) in m.iter().zip(g).enumerate() {
                            assert!(m == g, "{what}: result {i} differs from the generic path");
                        }
                        assert_eq!(m.len(), g.len(), "{what}");
                    }
                    _ => assert_eq!(mono, generic, "{what}"),
                }
                match &first {
                    None => first = Some(mono),
                    Some(f) => assert!(*f == mono, "{what}: results differ from 1 thread's"),
                }
            }
        }
        // Most shapes run to the end (some unbiased ones stop at too few values).
        assert!(
            compared >= 9,
            "{}: only {compared} rounds compared",
            case.spec
        );
    }
}

#[test]
fn specialized_train_and_backward_are_bit_identical_to_the_generic_path_f32() {
    compare::<f32>(0x9e37_79b9_7f4a_7c15);
}

#[test]
fn specialized_train_and_backward_are_bit_identical_to_the_generic_path_f64() {
    compare::<f64>(0x2545_f491_4f6c_dd1d);
}
