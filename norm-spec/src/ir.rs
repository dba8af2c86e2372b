//! The validated configuration of a normalization layer.
//!
//! Every type here is `const`-constructible (`Cow::Borrowed`), so the `#[norm]` macro can
//! bake a validated [`Spec`] into the generated code as a `static` ([`Spec::const_expr`]),
//! while `DynNorm` builds the same value at run time. Code that receives a `Spec` may assume
//! it passed [`crate::parse_tokens`]. A field added to [`Stage`] is written in two places in
//! this file: its declaration and its line in `Stage::const_expr`.

use std::borrow::Cow;

/// The largest input rank a layer may declare.
pub const MAX_RANK: usize = 8;

/// The most stages a `chain(...)` may have.
pub const MAX_STAGES: usize = 8;

/// One axis of the input tensor, in memory order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Axis {
    /// The axis name as written (`N`, `C`, `kh`, ...).
    pub name: Cow<'static, str>,
    /// The size fixed in `input` (`"C=64"`), if any.
    pub size: Option<usize>,
}

/// An axis that indexes affine parameters: an input axis or the implicit group axis `G`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamAxis {
    /// The input axis with this index into [`Spec::input`].
    Input(usize),
    /// The implicit group axis `G` created by `groups` (it sits where `C` is).
    Group,
}

/// The affine transformation applied after normalization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Affine {
    /// No scale or shift.
    None,
    /// Learnable `gamma`/`beta` indexed by these axes, listed in memory order
    /// (`Group` sits at the position of `C`). The bare `affine` flag is `Axes([Input(C)])`.
    Axes(Cow<'static, [ParamAxis]>),
    /// Scale and shift are passed to `forward_*`, indexed by the kept axes.
    External,
}

/// Where `eps` enters the normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EpsMode {
    /// x̂ = (x − μ) / √(σ² + eps)
    Var,
    /// x̂ = (x − μ) / (√σ² + eps) (Weight Standardization)
    Std,
}

/// The running-statistics update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Momentum {
    /// running ← (1 − m)·running + m·batch
    Exponential(f64),
    /// plain average over `num_batches_tracked` (m = 1/num_batches_tracked)
    Cumulative,
}

/// What the normalizer divides by: the root of the mean or of the sum of squares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Statistic {
    /// x̂ = (x − μ) / √(mean((x − μ)²) + eps): the usual variance.
    Mean,
    /// x̂ = (x − μ) / √(Σ(x − μ)² + eps): with `center = false`, L2 normalization.
    Sum,
}

/// Batch Renormalization's clipping limits (the initial values of the layer's public
/// `rmax`/`dmax`, which a training loop may ramp).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Renorm {
    /// r = clamp(σ_B / σ_running, 1/rmax, rmax); ≥ 1.
    pub rmax: f64,
    /// d = clamp((μ_B − μ_running) / σ_running, −dmax, dmax); ≥ 0.
    pub dmax: f64,
}

/// One normalization stage: the whole layer, or one step of a `chain(...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// The stage's field name in a chain (`bn`, `gn`); empty for a single-stage layer.
    pub name: Cow<'static, str>,
    /// Bit `i` set: input axis `i` is reduced (statistics run over it).
    pub axes: u16,
    /// `groups = g`: `C` is split into `g` contiguous groups.
    pub groups: Option<usize>,
    /// The affine parameters.
    pub affine: Affine,
    /// Whether `beta` exists (`bias = false`: scale only). Always `false` without `Affine::Axes`.
    pub bias: bool,
    /// `false`: no mean subtraction; divide by the root mean square (RMSNorm).
    pub center: bool,
    /// The epsilon added to the variance (or to the standard deviation, see `eps_mode`).
    pub eps: f64,
    /// Where `eps` enters.
    pub eps_mode: EpsMode,
    /// Normalize with the unbiased (n − 1) variance.
    pub unbiased: bool,
    /// Keep running statistics (used in eval mode).
    pub running_stats: bool,
    /// The running-statistics update rule (meaningful only with `running_stats`).
    pub momentum: Momentum,
    /// `statistic = "sum"`: divide by the root of the sum of squares instead of the mean.
    pub statistic: Statistic,
    /// `tlu`: Filter Response Normalization's thresholded linear unit, y = max(z, τ), with a
    /// learned `tau` shaped like `gamma` (needs `affine` with axes).
    pub tlu: bool,
    /// `ghost = k`: Ghost Batch Norm, the batch axis `N` split into chunks of `k` (the last
    /// may be smaller), each normalized with its own statistics in train mode.
    pub ghost: Option<usize>,
    /// `renorm(rmax, dmax)`: Batch Renormalization (needs `running_stats`).
    pub renorm: Option<Renorm>,
    /// `mask = "N,T"`: bit `i` set: input axis `i` indexes the boolean mask that selects the
    /// positions the statistics use (0: no mask). Top level only (never inside a chain).
    pub mask: u16,
    /// Switchable Normalization (`axes = "H,W" | "C,H,W" | "N,H,W"`): the reduced-axes masks
    /// of the alternatives, in the order written (empty: one set of statistics, `axes`).
    /// With alternatives, `axes` is the alternative that reduces `N` (its running
    /// statistics), or the first one.
    pub switch: Cow<'static, [u16]>,
}

impl Stage {
    /// Whether input axis `i` is reduced.
    pub fn reduces(&self, i: usize) -> bool {
        self.axes & (1 << i) != 0
    }

    /// Whether input axis `i` indexes the mask (`mask = "..."`).
    pub fn masks(&self, i: usize) -> bool {
        self.mask & (1 << i) != 0
    }
}

/// A validated layer configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// The input axes in memory order (last is fastest).
    pub input: Cow<'static, [Axis]>,
    /// Index of the axis named `C`, if any.
    pub channel: Option<usize>,
    /// Index of the axis named `N`, if any.
    pub batch: Option<usize>,
    /// The stages: one for a plain layer, one per `chain` entry otherwise.
    pub stages: Cow<'static, [Stage]>,
    /// Whether the layer was declared with `chain(...)`.
    pub chain: bool,
}

/// The IR as a Rust constant expression. `#[norm]` parses this text into the `static` it
/// bakes into the generated layer, so code generation never lists the IR's fields: a new
/// field is written here, next to its declaration.
impl Spec {
    /// Rust source of a constant expression equal to this spec, naming this crate's types
    /// through `path` (e.g. `::normkit::__private::spec`).
    pub fn const_expr(&self, path: &str) -> String {
        let input: Vec<String> = self
            .input
            .iter()
            .map(|a| {
                format!(
                    "{path}::Axis {{ name: {}, size: {} }}",
                    borrowed_str(&a.name),
                    option_usize(a.size)
                )
            })
            .collect();
        let stages: Vec<String> = self.stages.iter().map(|s| s.const_expr(path)).collect();
        format!(
            "{path}::Spec {{ input: ::std::borrow::Cow::Borrowed(&[{}]), channel: {}, \
             batch: {}, stages: ::std::borrow::Cow::Borrowed(&[{}]), chain: {}, }}",
            input.join(", "),
            option_usize(self.channel),
            option_usize(self.batch),
            stages.join(", "),
            self.chain
        )
    }
}

impl Stage {
    /// Rust source of a constant expression equal to this stage (see [`Spec::const_expr`]).
    fn const_expr(&self, path: &str) -> String {
        let affine = match &self.affine {
            Affine::None => format!("{path}::Affine::None"),
            Affine::External => format!("{path}::Affine::External"),
            Affine::Axes(axes) => {
                let axes: Vec<String> = axes
                    .iter()
                    .map(|a| match a {
                        ParamAxis::Input(i) => format!("{path}::ParamAxis::Input({i}usize)"),
                        ParamAxis::Group => format!("{path}::ParamAxis::Group"),
                    })
                    .collect();
                format!(
                    "{path}::Affine::Axes(::std::borrow::Cow::Borrowed(&[{}]))",
                    axes.join(", ")
                )
            }
        };
        let eps_mode = match self.eps_mode {
            EpsMode::Var => format!("{path}::EpsMode::Var"),
            EpsMode::Std => format!("{path}::EpsMode::Std"),
        };
        let momentum = match self.momentum {
            Momentum::Exponential(m) => format!("{path}::Momentum::Exponential({m}f64)"),
            Momentum::Cumulative => format!("{path}::Momentum::Cumulative"),
        };
        let statistic = match self.statistic {
            Statistic::Mean => format!("{path}::Statistic::Mean"),
            Statistic::Sum => format!("{path}::Statistic::Sum"),
        };
        let renorm = match self.renorm {
            Some(r) => format!(
                "::std::option::Option::Some({path}::Renorm {{ rmax: {:?}f64, dmax: {:?}f64 }})",
                r.rmax, r.dmax
            ),
            None => "::std::option::Option::None".to_string(),
        };
        format!(
            "{path}::Stage {{ name: {}, axes: {}u16, groups: {}, affine: {affine}, bias: {}, \
             center: {}, eps: {}f64, eps_mode: {eps_mode}, unbiased: {}, running_stats: {}, \
             momentum: {momentum}, statistic: {statistic}, tlu: {}, ghost: {}, \
             renorm: {renorm}, mask: {}u16, \
             switch: ::std::borrow::Cow::Borrowed(&[{}]), }}",
            borrowed_str(&self.name),
            self.axes,
            option_usize(self.groups),
            self.bias,
            self.center,
            self.eps,
            self.unbiased,
            self.running_stats,
            self.tlu,
            option_usize(self.ghost),
            self.mask,
            self.switch
                .iter()
                .map(|m| format!("{m}u16"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// `Some(4usize)` / `None`, as Rust source.
fn option_usize(v: Option<usize>) -> String {
    match v {
        Some(n) => format!("::std::option::Option::Some({n}usize)"),
        None => "::std::option::Option::None".to_string(),
    }
}

/// `Cow::Borrowed("name")`, as Rust source.
fn borrowed_str(s: &str) -> String {
    format!("::std::borrow::Cow::Borrowed({s:?})")
}
