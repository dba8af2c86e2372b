//! The composed path: the same normalization written with burn tensor operations, so it runs
//! (and differentiates, through burn's own autodiff) on every device burn supports.
//!
//! The input is viewed at a fixed working rank [`W`]: the declared axes in memory order, `C`
//! split into `(G, C/G)` when the layer has `groups`, padded with leading axes of size 1.
//! Statistics are reduced with `mean_dim` (which keeps the axis), so every intermediate
//! broadcasts against the input. Two passes (mean, then the mean of squared deviations), as
//! normkit: no E[x²]−E[x]² cancellation.

use burn::tensor::Tensor;
use normkit::spec::{EpsMode, Momentum, ParamAxis};
use normkit::Mode;

use crate::layer::NormLayer;

/// The working rank: the largest declared rank (8) plus the split of `C` into `(G, C/G)`.
const W: usize = 9;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// A leading axis of size 1.
    Pad,
    /// Input axis `i`, kept (statistics per index).
    Kept(usize),
    /// Input axis `i`, reduced.
    Reduced(usize),
    /// The group part `G` of `C` (kept).
    Group,
    /// The within-group part `C/G` of `C` (reduced).
    Within,
}

struct View {
    sizes: [usize; W],
    roles: [Role; W],
}

fn view(layer: &NormLayer, shape: &[usize]) -> View {
    let spec = layer.raw();
    let stage = layer.stage();
    let mut axes = Vec::with_capacity(W);
    for (i, &n) in shape.iter().enumerate() {
        match stage.groups {
            Some(g) if Some(i) == spec.channel => {
                axes.push((g, Role::Group));
                axes.push((n / g, Role::Within));
            }
            _ if stage.reduces(i) => axes.push((n, Role::Reduced(i))),
            _ => axes.push((n, Role::Kept(i))),
        }
    }
    let mut sizes = [1; W];
    let mut roles = [Role::Pad; W];
    let pad = W - axes.len();
    for (k, (n, r)) in axes.into_iter().enumerate() {
        sizes[pad + k] = n;
        roles[pad + k] = r;
    }
    View { sizes, roles }
}

impl View {
    fn reduced(&self) -> impl Iterator<Item = usize> + '_ {
        (0..W).filter(|&d| matches!(self.roles[d], Role::Reduced(_) | Role::Within))
    }

    fn group_len(&self) -> usize {
        self.reduced().map(|d| self.sizes[d]).product()
    }

    /// The broadcast shape of a tensor indexed by `axes` (parameter axes in memory order).
    fn param_shape(&self, axes: &[ParamAxis], channel: Option<usize>) -> [usize; W] {
        std::array::from_fn(|d| {
            let keep = match self.roles[d] {
                Role::Pad => false,
                Role::Kept(i) | Role::Reduced(i) => axes.contains(&ParamAxis::Input(i)),
                Role::Group => {
                    axes.contains(&ParamAxis::Group)
                        || channel.is_some_and(|c| axes.contains(&ParamAxis::Input(c)))
                }
                Role::Within => channel.is_some_and(|c| axes.contains(&ParamAxis::Input(c))),
            };
            if keep {
                self.sizes[d]
            } else {
                1
            }
        })
    }

    /// The broadcast shape of the running statistics: the kept axes without `N`, and `G`.
    fn running_shape(&self, batch: Option<usize>) -> [usize; W] {
        std::array::from_fn(|d| {
            let keep = match self.roles[d] {
                Role::Kept(i) => Some(i) != batch,
                Role::Group => true,
                _ => false,
            };
            if keep {
                self.sizes[d]
            } else {
                1
            }
        })
    }
}

fn mean_over<I: Iterator<Item = usize>>(t: Tensor<W>, dims: I) -> Tensor<W> {
    dims.fold(t, |t, d| t.mean_dim(d))
}

/// The composed forward of `layer` on `x`: the output and, in train mode with running
/// statistics, the updated running mean and variance (flattened, detached).
///
/// `gamma`/`beta`/`running` are the layer's flattened parameters (see [`NormLayer`]). The
/// caller has run [`NormLayer::check`].
pub(crate) fn forward<const D: usize>(
    x: Tensor<D>,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    running: Option<(Tensor<1>, Tensor<1>)>,
    layer: &NormLayer,
    mode: Mode,
    num_batches_tracked: u64,
) -> (Tensor<D>, Option<(Tensor<1>, Tensor<1>)>) {
    let spec = layer.raw();
    let stage = layer.stage();
    let shape = x.dims();
    let v = view(layer, &shape);
    let xe: Tensor<W> = x.reshape(v.sizes);
    let n = v.group_len();
    let fixed = mode == Mode::Eval && stage.running_stats;
    let mut updated = None;
    let (mean, var) = if fixed {
        let (rm, rv) = running.expect("a layer with running statistics has them");
        let rshape = v.running_shape(spec.batch);
        (Some(rm.reshape(rshape)), rv.reshape(rshape))
    } else {
        let mean = stage.center.then(|| mean_over(xe.clone(), v.reduced()));
        let dev = match &mean {
            Some(m) => xe.clone() - m.clone(),
            None => xe.clone(),
        };
        // The mean of squared deviations (or the mean square with `center = false`).
        let m2n = mean_over(dev.square(), v.reduced());
        let var = if stage.center && stage.unbiased {
            m2n.clone().mul_scalar(n as f64 / (n as f64 - 1.0))
        } else {
            m2n.clone()
        };
        if let (Mode::Train, Some((rm, rv))) = (mode, running) {
            // The batch values, averaged over `N` where the statistics are per sample; the
            // variance is the unbiased one (PyTorch).
            let per_n = |t: Tensor<W>| match spec.batch {
                Some(b) => mean_over(t, (0..W).filter(|&d| v.roles[d] == Role::Kept(b))),
                None => t,
            };
            let bmean = match &mean {
                Some(m) => per_n(m.clone().detach()),
                None => per_n(m2n.clone().detach().zeros_like()),
            };
            let bvar = per_n(m2n.detach().mul_scalar(n as f64 / (n as f64 - 1.0)));
            let m = match stage.momentum {
                Momentum::Exponential(m) => m,
                Momentum::Cumulative => 1.0 / (num_batches_tracked + 1) as f64,
            };
            let len = rm.dims()[0];
            let new_mean = rm.detach().mul_scalar(1.0 - m) + bmean.reshape([len]).mul_scalar(m);
            let new_var = rv.detach().mul_scalar(1.0 - m) + bvar.reshape([len]).mul_scalar(m);
            updated = Some((new_mean, new_var));
        }
        (mean, var)
    };
    let centered = match mean {
        Some(m) => xe - m,
        None => xe,
    };
    let denom = match stage.eps_mode {
        EpsMode::Var => var.add_scalar(stage.eps).sqrt(),
        EpsMode::Std => var.sqrt().add_scalar(stage.eps),
    };
    let mut y = centered / denom;
    if let (Some(axes), Some(g)) = (normkit::spec::shapes::param_axes(stage), gamma) {
        let pshape = v.param_shape(axes, spec.channel);
        y = y * g.reshape(pshape);
        if let Some(b) = beta {
            y = y + b.reshape(pshape);
        }
    }
    (y.reshape(shape), updated)
}
