//! The suite of `shared/bench/README.md`, case by case as in `torch_suite.py`: one
//! `#[norm]` declaration per layer configuration, buffers allocated once, and the
//! no-allocation `_into` entry points behind [`Runnable`].

use normkit::ndarray::{Array, Array1, Array2, Array4, ArrayD, Dimension, IxDyn};
use normkit::prelude::*;
use normkit::{ChainGrads, NormLayer};

use crate::data::Rng;

/// `nn.BatchNorm2d(C)` (train and eval): statistics over N,H,W per channel, running stats.
#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    affine,
    running_stats,
    momentum = 0.1
)]
pub struct BatchNorm2d;

/// Ghost Batch Norm (issue 18) on bn_train's tensor: BatchNorm2d with the batch split
/// into chunks of 8 samples, each with its own statistics and running-statistics update.
/// No PyTorch counterpart: compare with `bn_train`.
#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    ghost = 8,
    affine,
    running_stats,
    momentum = 0.1
)]
pub struct GhostBatchNorm2d;

/// `nn.BatchNorm2d(C)` on a channels-last tensor (`torch.channels_last`).
#[norm(
    input = "N,H,W,C",
    axes = "N,H,W",
    affine,
    running_stats,
    momentum = 0.1
)]
pub struct BatchNorm2dNhwc;

/// `nn.BatchNorm1d(C)` on `[N, C]` (MLPs, tabular data): statistics over the rows for
/// every column, running stats.
#[norm(input = "N,C", axes = "N", affine, running_stats, momentum = 0.1)]
pub struct BatchNorm1d;

/// `F.layer_norm(x, (D,), w, b, 1e-5)` on `[rows, D]`.
#[norm(input = "N,D", axes = "D", affine = "D")]
pub struct LayerNorm;

/// `F.rms_norm(x, (D,), w, 1e-6)`: no centering, scale only.
#[norm(
    input = "N,D",
    axes = "D",
    center = false,
    affine = "D",
    bias = false,
    eps = 1e-6
)]
pub struct RmsNorm;

/// `nn.GroupNorm(32, C)`: 32 groups, per-channel γ/β.
#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 32, affine)]
pub struct GroupNorm32;

/// `nn.InstanceNorm2d(C)`: statistics over H,W, no affine, no running statistics.
#[norm(input = "N,C,H,W", axes = "H,W")]
pub struct InstanceNorm2d;

/// Weight Standardization: `(w − mean) / (w.std(unbiased) + 1e-5)` per output channel.
#[norm(
    input = "O,I,kh,kw",
    axes = "I,kh,kw",
    unbiased,
    eps_mode = "std",
    eps = 1e-5
)]
pub struct WeightStd;

/// `GroupNorm(32, C)(BatchNorm2d(C).train()(x))`, the composition `torch_suite.py` times.
#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 32, affine)
    )
)]
pub struct BatchChannelNorm;

/// A case of the suite as `torch_suite.py` defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaseInfo {
    /// The case name shared with `torch_suite.py` (`"bn_train"`, `"ln"`, …).
    pub name: &'static str,
    /// The logical shape of the tensor (NCHW for `bn_train_nhwc`: memory is channels-last).
    pub shape: &'static [usize],
    /// Whether the suite has a backward pass for the case (`bn_eval` has not).
    pub has_bwd: bool,
    /// The `#[norm]` declaration timed.
    pub declaration: &'static str,
    /// Whether one statistics group is larger than a core's L2 cache (2 MiB on the machines
    /// measured), so that the pass must read its inputs from memory twice: once for the
    /// statistics (or gradient sums) and once for the output. See [`Pass::floor_bytes`].
    pub reads_twice: bool,
}

/// The suite, in `torch_suite.py`'s order.
pub const SUITE: [CaseInfo; 13] = [
    CaseInfo {
        name: "bn_train",
        shape: &[32, 64, 56, 56],
        has_bwd: true,
        declaration: r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats (train)"#,
        reads_twice: false,
    },
    CaseInfo {
        name: "bn_eval",
        shape: &[32, 64, 56, 56],
        has_bwd: false,
        declaration: r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats (eval)"#,
        reads_twice: false,
    },
    CaseInfo {
        name: "bn_train_nhwc",
        shape: &[32, 64, 56, 56],
        has_bwd: true,
        declaration: r#"input = "N,H,W,C", axes = "N,H,W", affine, running_stats (train)"#,
        reads_twice: true,
    },
    CaseInfo {
        name: "bn1d_train",
        shape: &[256, 512],
        has_bwd: true,
        declaration: r#"input = "N,C", axes = "N", affine, running_stats (train)"#,
        reads_twice: false,
    },
    CaseInfo {
        name: "bn1d_eval",
        shape: &[256, 512],
        has_bwd: false,
        declaration: r#"input = "N,C", axes = "N", affine, running_stats (eval)"#,
        reads_twice: false,
    },
    CaseInfo {
        name: "bn1d_big_train",
        shape: &[4096, 1024],
        has_bwd: true,
        declaration: r#"input = "N,C", axes = "N", affine, running_stats (train)"#,
        reads_twice: true,
    },
    CaseInfo {
        name: "ln",
        shape: &[8192, 1024],
        has_bwd: true,
        declaration: r#"input = "N,D", axes = "D", affine = "D""#,
        reads_twice: false,
    },
    CaseInfo {
        name: "rms",
        shape: &[8192, 1024],
        has_bwd: true,
        declaration: r#"input = "N,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6"#,
        reads_twice: false,
    },
    CaseInfo {
        name: "gn",
        shape: &[8, 256, 28, 28],
        has_bwd: true,
        declaration: r#"input = "N,C,H,W", axes = "C,H,W", groups = 32, affine"#,
        reads_twice: false,
    },
    CaseInfo {
        name: "gn_big",
        shape: &[2, 320, 64, 64],
        has_bwd: true,
        declaration: r#"input = "N,C,H,W", axes = "C,H,W", groups = 32, affine"#,
        reads_twice: false,
    },
    CaseInfo {
        name: "in",
        shape: &[8, 64, 128, 128],
        has_bwd: true,
        declaration: r#"input = "N,C,H,W", axes = "H,W""#,
        reads_twice: false,
    },
    CaseInfo {
        name: "ws",
        shape: &[512, 256, 3, 3],
        has_bwd: true,
        declaration: r#"input = "O,I,kh,kw", axes = "I,kh,kw", unbiased, eps_mode = "std", eps = 1e-5"#,
        reads_twice: false,
    },
    CaseInfo {
        name: "bcn",
        shape: &[8, 256, 28, 28],
        has_bwd: true,
        declaration: r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 32, affine))"#,
        reads_twice: false,
    },
];

/// Cases without a `torch_suite.py` counterpart: run only when named (`--cases`), never by
/// the default suite or `--alternate`, and compared with their parent case by hand.
pub const EXTRA: [CaseInfo; 1] = [CaseInfo {
    name: "ghost_bn_train",
    shape: &[32, 64, 56, 56],
    has_bwd: true,
    declaration: r#"input = "N,C,H,W", axes = "N,H,W", ghost = 8, affine, running_stats (train; compare with bn_train)"#,
    reads_twice: false,
}];

/// The suite case named `name`.
pub fn case_info(name: &str) -> Option<&'static CaseInfo> {
    SUITE.iter().chain(EXTRA.iter()).find(|c| c.name == name)
}

/// A pass of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pass {
    /// Forward (train mode; eval for `bn_eval`).
    Fwd,
    /// Backward: dx and the parameter gradients.
    Bwd,
}

impl Pass {
    /// `"fwd"` or `"bwd"`, as in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Pass::Fwd => "fwd",
            Pass::Bwd => "bwd",
        }
    }

    /// Parses `"fwd"` / `"bwd"`.
    pub fn parse(s: &str) -> Option<Pass> {
        match s {
            "fwd" => Some(Pass::Fwd),
            "bwd" => Some(Pass::Bwd),
            _ => None,
        }
    }

    /// The minimal traffic of the pass in bytes for `numel` f32 elements: forward reads x and
    /// writes y (2·numel·4), backward reads x and dy and writes dx (3·numel·4); parameter
    /// vectors are ignored.
    pub fn bytes(self, numel: usize) -> usize {
        match self {
            Pass::Fwd => 2 * numel * 4,
            Pass::Bwd => 3 * numel * 4,
        }
    }

    /// The traffic floor of the pass in bytes for its algorithm: [`Pass::bytes`], plus a
    /// second read of the inputs when `reads_twice` (a statistics group larger than the
    /// cache): forward 3·numel·4 (x twice, y once), backward 5·numel·4 (x and dy twice, dx
    /// once).
    pub fn floor_bytes(self, numel: usize, reads_twice: bool) -> usize {
        match (self, reads_twice) {
            (_, false) => self.bytes(numel),
            (Pass::Fwd, true) => 3 * numel * 4,
            (Pass::Bwd, true) => 5 * numel * 4,
        }
    }
}

/// A case with its buffers allocated and its `Saved` primed, ready to be timed.
pub trait Runnable {
    /// The number of elements of the tensor.
    fn numel(&self) -> usize;
    /// Whether the case has a backward pass.
    fn has_bwd(&self) -> bool;
    /// One forward pass into the preallocated output (`forward_train_into`, or
    /// `forward_eval_into` for an eval case); a train pass refills the `Saved`.
    fn fwd(&mut self) -> Result<(), NormError>;
    /// One backward pass (`backward_into`) into the preallocated gradients, from the
    /// `Saved` of the last train forward on the same input.
    fn bwd(&mut self) -> Result<(), NormError>;
    /// The forward output buffer, flattened (for sanity checks).
    fn output(&self) -> &[f32];
    /// The input gradient buffer, flattened (for sanity checks).
    fn dx(&self) -> &[f32];
}

/// A layer with its input, upstream gradient, output, `Saved` and gradients, all allocated
/// once. Any layer runs through [`NormLayer`]'s buffer methods (`forward_layer_into`,
/// `backward_layer_into_grads`), which allocate nothing once `saved` and the parameter
/// gradients have grown (primed by [`Runner::new`]).
pub struct Runner<L: NormLayer<Elem = f32>> {
    layer: L,
    x: ArrayD<f32>,
    dy: ArrayD<f32>,
    y: ArrayD<f32>,
    saved: Saved<f32>,
    grads: ChainGrads<f32>,
    eval: bool,
}

impl<L: NormLayer<Elem = f32>> Runner<L> {
    /// Allocates the output and gradients and runs one forward pass and, for a train case,
    /// one backward pass, so that `Saved` and the parameter gradients exist before timing.
    pub fn new<D: Dimension>(
        layer: L,
        x: Array<f32, D>,
        dy: Array<f32, D>,
        eval: bool,
    ) -> Result<Self, NormError> {
        let (x, dy) = (x.into_dyn(), dy.into_dyn());
        let mut r = Runner {
            layer,
            y: ArrayD::zeros(x.raw_dim()),
            grads: ChainGrads {
                dx: ArrayD::zeros(x.raw_dim()),
                stages: Vec::new(),
            },
            x,
            dy,
            saved: Saved::new(),
            eval,
        };
        r.fwd()?;
        if !eval {
            r.bwd()?;
        }
        Ok(r)
    }
}

impl<L: NormLayer<Elem = f32>> Runnable for Runner<L> {
    fn numel(&self) -> usize {
        self.x.len()
    }

    fn has_bwd(&self) -> bool {
        !self.eval
    }

    fn fwd(&mut self) -> Result<(), NormError> {
        let mode = if self.eval { Mode::Eval } else { Mode::Train };
        self.layer.forward_layer_into(
            self.x.view(),
            None,
            mode,
            self.y.view_mut(),
            &mut self.saved,
            None,
        )
    }

    fn bwd(&mut self) -> Result<(), NormError> {
        self.layer.backward_layer_into_grads(
            self.x.view(),
            self.dy.view(),
            &self.saved,
            &mut self.grads,
            None,
        )
    }

    fn output(&self) -> &[f32] {
        self.y.as_slice().unwrap_or(&[])
    }

    fn dx(&self) -> &[f32] {
        self.grads.dx.as_slice().unwrap_or(&[])
    }
}

/// Why a case could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// No case of that name.
    UnknownCase(String),
    /// The shape has the wrong rank for the case.
    Rank {
        /// The case.
        case: String,
        /// The rank the case needs.
        expected: usize,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// The layer rejected the input while priming.
    Norm(NormError),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::UnknownCase(c) => {
                let known: Vec<&str> = SUITE.iter().chain(EXTRA.iter()).map(|c| c.name).collect();
                write!(f, "unknown case {c:?}; known: {}", known.join(","))
            }
            BuildError::Rank {
                case,
                expected,
                shape,
            } => write!(
                f,
                "case {case} needs a rank-{expected} shape, got {shape:?}"
            ),
            BuildError::Norm(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Norm(e) => Some(e),
            _ => None,
        }
    }
}

impl From<NormError> for BuildError {
    fn from(e: NormError) -> Self {
        BuildError::Norm(e)
    }
}

fn normal(rng: &mut Rng, shape: &[usize]) -> ArrayD<f32> {
    let mut a = ArrayD::zeros(IxDyn(shape));
    if let Some(s) = a.as_slice_mut() {
        rng.fill_normal(s);
    }
    a
}

fn uniform(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Array1<f32> {
    let mut a = Array1::zeros(n);
    if let Some(s) = a.as_slice_mut() {
        rng.fill_uniform(s, lo, hi);
    }
    a
}

fn rank4(case: &str, a: ArrayD<f32>) -> Result<Array4<f32>, BuildError> {
    let shape = a.shape().to_vec();
    a.into_dimensionality().map_err(|_| BuildError::Rank {
        case: case.to_string(),
        expected: 4,
        shape,
    })
}

fn rank2(case: &str, a: ArrayD<f32>) -> Result<Array2<f32>, BuildError> {
    let shape = a.shape().to_vec();
    a.into_dimensionality().map_err(|_| BuildError::Rank {
        case: case.to_string(),
        expected: 2,
        shape,
    })
}

/// Builds case `name` on a tensor of logical shape `shape` (NCHW for `bn_train_nhwc`, whose
/// memory is then made channels-last, like `torch.channels_last`), with standard normal `x`
/// and `dy` and the parameter initialization of `torch_suite.py`.
pub fn build(name: &str, shape: &[usize], seed: u64) -> Result<Box<dyn Runnable>, BuildError> {
    let mut rng = Rng::new(seed);
    let x = normal(&mut rng, shape);
    let dy = normal(&mut rng, shape);
    let c = shape.get(1).copied().unwrap_or(1);
    Ok(match name {
        "bn_train" | "bn_eval" => {
            let mut l = BatchNorm2d::new(c);
            l.gamma = uniform(&mut rng, c, 0.5, 1.5);
            l.beta = uniform(&mut rng, c, -0.5, 0.5);
            let eval = name == "bn_eval";
            Box::new(Runner::new(l, rank4(name, x)?, rank4(name, dy)?, eval)?)
        }
        "bn_train_nhwc" => {
            let mut l = BatchNorm2dNhwc::new(c);
            l.gamma = uniform(&mut rng, c, 0.5, 1.5);
            l.beta = uniform(&mut rng, c, -0.5, 0.5);
            let nhwc = |a: ArrayD<f32>| -> Result<Array4<f32>, BuildError> {
                let a = rank4(name, a)?;
                Ok(a.permuted_axes([0, 2, 3, 1])
                    .as_standard_layout()
                    .into_owned())
            };
            Box::new(Runner::new(l, nhwc(x)?, nhwc(dy)?, false)?)
        }
        "bn1d_train" | "bn1d_eval" | "bn1d_big_train" => {
            let mut l = BatchNorm1d::new(c);
            l.gamma = uniform(&mut rng, c, 0.5, 1.5);
            l.beta = uniform(&mut rng, c, -0.5, 0.5);
            let eval = name == "bn1d_eval";
            Box::new(Runner::new(l, rank2(name, x)?, rank2(name, dy)?, eval)?)
        }
        "ln" | "rms" => {
            let x = rank2(name, x)?;
            let d = x.ncols();
            let w = uniform(&mut rng, d, 0.5, 1.5);
            let dy = rank2(name, dy)?;
            if name == "ln" {
                let mut l = LayerNorm::new(d);
                l.gamma = w;
                let mut b = Array1::zeros(d);
                if let Some(s) = b.as_slice_mut() {
                    rng.fill_normal(s);
                }
                l.beta = b.mapv(|v| v * 0.1);
                Box::new(Runner::new(l, x, dy, false)?)
            } else {
                let mut l = RmsNorm::new(d);
                l.gamma = w;
                Box::new(Runner::new(l, x, dy, false)?)
            }
        }
        "gn" | "gn_big" => {
            let mut l = GroupNorm32::new(c);
            l.gamma = uniform(&mut rng, c, 0.5, 1.5);
            l.beta = uniform(&mut rng, c, -0.5, 0.5);
            Box::new(Runner::new(l, rank4(name, x)?, rank4(name, dy)?, false)?)
        }
        "in" => {
            let l = InstanceNorm2d::new();
            Box::new(Runner::new(l, rank4(name, x)?, rank4(name, dy)?, false)?)
        }
        "ws" => {
            let l = WeightStd::new();
            Box::new(Runner::new(l, rank4(name, x)?, rank4(name, dy)?, false)?)
        }
        "bcn" => {
            let mut l = BatchChannelNorm::new(c);
            l.bn.gamma = uniform(&mut rng, c, 0.5, 1.5);
            l.gn.gamma = uniform(&mut rng, c, 0.5, 1.5);
            l.bn.beta = uniform(&mut rng, c, -0.5, 0.5);
            l.gn.beta = uniform(&mut rng, c, -0.5, 0.5);
            Box::new(Runner::new(l, rank4(name, x)?, rank4(name, dy)?, false)?)
        }
        "ghost_bn_train" => {
            let mut l = GhostBatchNorm2d::new(c);
            l.gamma = uniform(&mut rng, c, 0.5, 1.5);
            l.beta = uniform(&mut rng, c, -0.5, 0.5);
            Box::new(Runner::new(l, rank4(name, x)?, rank4(name, dy)?, false)?)
        }
        _ => return Err(BuildError::UnknownCase(name.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case builds at a small shape and its passes produce finite values with
    /// normalized statistics.
    #[test]
    fn every_case_runs_small() {
        for case in SUITE.iter().chain(EXTRA.iter()) {
            let shape: Vec<usize> = match case.shape.len() {
                2 if case.name.starts_with("bn1d") => vec![5, 64],
                2 => vec![4, 64],
                _ if case.name == "ws" => vec![4, 8, 3, 3],
                _ => vec![2, 64, 3, 3],
            };
            let mut r =
                build(case.name, &shape, 1).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(r.has_bwd(), case.has_bwd, "{}", case.name);
            r.fwd().unwrap();
            assert!(r.output().iter().all(|v| v.is_finite()), "{}", case.name);
            assert_eq!(r.output().len(), r.numel());
            if r.has_bwd() {
                r.bwd().unwrap();
                assert!(r.dx().iter().all(|v| v.is_finite()), "{}", case.name);
                assert!(r.dx().iter().any(|&v| v != 0.0), "{}", case.name);
            }
        }
    }

    #[test]
    fn suite_shapes_and_bytes() {
        let numel: usize = case_info("ln")
            .map(|c| c.shape.iter().product())
            .unwrap_or(0);
        assert_eq!(numel, 8192 * 1024);
        assert_eq!(Pass::Fwd.bytes(numel), 2 * numel * 4);
        assert_eq!(Pass::Bwd.bytes(numel), 3 * numel * 4);
        assert!(case_info("nope").is_none());
        assert!(matches!(
            build("nope", &[1], 0),
            Err(BuildError::UnknownCase(_))
        ));
    }
}
