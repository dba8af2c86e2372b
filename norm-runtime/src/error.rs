//! The one error type of every layer call.

use std::fmt;

/// Why a layer call was refused. Every layer method returns it instead of panicking on user
/// input; after an error the layer's state (parameters, running statistics) is unchanged.
///
/// Every message starts with the layer's name and gives the expected and the actual sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NormError {
    /// The input has the wrong number of axes (dynamic layers only; generated layers check the
    /// rank statically).
    Rank {
        /// The layer's name.
        layer: String,
        /// The rank of the declared `input`.
        expected: usize,
        /// The rank of the array passed.
        actual: usize,
    },
    /// An axis of the input disagrees with a fixed size in `input`, with a parameter or with a
    /// running statistic.
    AxisSize {
        /// The layer's name.
        layer: String,
        /// The axis name.
        axis: String,
        /// The size the layer expects.
        expected: usize,
        /// The size of the array passed.
        actual: usize,
        /// Where the expectation comes from (`the fixed size in input`, `gamma`, ...).
        source: String,
    },
    /// The channel axis is not divisible by `groups`.
    GroupsDivide {
        /// The layer's name.
        layer: String,
        /// The size of `C`.
        channels: usize,
        /// The declared `groups`.
        groups: usize,
    },
    /// Two arrays that must have the same shape do not (`dy` vs `x`, an output buffer, an
    /// external scale, a parameter replaced by hand, ...).
    Shape {
        /// The layer's name.
        layer: String,
        /// Which array is wrong.
        what: String,
        /// The shape expected.
        expected: Vec<usize>,
        /// The shape passed.
        actual: Vec<usize>,
    },
    /// A [`crate::Saved`] that does not belong to this layer or to this input.
    Saved {
        /// The layer's name.
        layer: String,
        /// What does not match.
        reason: String,
    },
    /// Train mode with at most one value per statistics group, where the layer needs two
    /// (running statistics use the unbiased variance; `unbiased` normalizes with it).
    TooFewValues {
        /// The layer's name.
        layer: String,
        /// Values per statistics group in this input.
        per_group: usize,
        /// The input's shape.
        shape: Vec<usize>,
    },
    /// A statistics group has no values (a reduced axis of size 0).
    EmptyGroup {
        /// The layer's name.
        layer: String,
        /// The input's shape.
        shape: Vec<usize>,
    },
    /// A size given to a dynamic layer's constructor is missing, unknown or inconsistent.
    Size {
        /// The layer's name.
        layer: String,
        /// What is wrong.
        reason: String,
    },
    /// Exchanging statistics with the other members of a `Collective` failed.
    Collective {
        /// The layer's name.
        layer: String,
        /// What the collective reported.
        reason: String,
    },
    /// A method that does not apply to this layer (e.g. `backward` of a dynamic chain, which
    /// needs `backward_chain` for its per-stage gradients).
    Unsupported {
        /// The layer's name.
        layer: String,
        /// What to do instead.
        reason: String,
    },
    /// A state dict does not fit the layer: a missing key, an unexpected key under the
    /// prefix, a tensor of the wrong shape or dtype (`load_state_dict`). The layer is
    /// unchanged.
    StateDictKey {
        /// The layer's name.
        layer: String,
        /// The full key (`prefix` included), e.g. `layer.gn.weight`.
        key: String,
        /// What the layer expects there (a dtype and a shape, or no key at all).
        expected: String,
        /// What the state dict holds there.
        found: String,
    },
    /// A safetensors file or buffer that cannot be read or written: truncated, a header
    /// that is not valid JSON or whose offsets do not match the data, an I/O error.
    StateDictFile {
        /// The file's path (`<bytes>` for [`crate::StateDict::from_bytes`] and
        /// [`crate::StateDict::to_bytes`]).
        path: String,
        /// What is wrong (what was being done, and the cause).
        reason: String,
    },
}

fn dims(shape: &[usize]) -> String {
    let inner: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", inner.join(", "))
}

impl fmt::Display for NormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NormError::Rank {
                layer,
                expected,
                actual,
            } => write!(
                f,
                "{layer}: expected an input with {expected} axes, got {actual}"
            ),
            NormError::AxisSize {
                layer,
                axis,
                expected,
                actual,
                source,
            } => write!(
                f,
                "{layer}: axis {axis} has size {actual}, but {source} expects {expected}"
            ),
            NormError::GroupsDivide {
                layer,
                channels,
                groups,
            } => write!(
                f,
                "{layer}: C = {channels} is not divisible by groups = {groups}"
            ),
            NormError::Shape {
                layer,
                what,
                expected,
                actual,
            } => write!(
                f,
                "{layer}: {what} has shape {}, expected {}",
                dims(actual),
                dims(expected)
            ),
            NormError::Saved { layer, reason } => write!(f, "{layer}: invalid Saved: {reason}"),
            NormError::TooFewValues {
                layer,
                per_group,
                shape,
            } => write!(
                f,
                "{layer}: expected more than 1 value per statistics group when training, got \
                 {per_group} (input shape {})",
                dims(shape)
            ),
            NormError::EmptyGroup { layer, shape } => write!(
                f,
                "{layer}: statistics groups are empty (input shape {} has a reduced axis of size 0)",
                dims(shape)
            ),
            NormError::Size { layer, reason } => write!(f, "{layer}: {reason}"),
            NormError::Unsupported { layer, reason } => write!(f, "{layer}: {reason}"),
            NormError::StateDictKey {
                layer,
                key,
                expected,
                found,
            } => write!(
                f,
                "{layer}: state dict key `{key}`: expected {expected}, found {found}"
            ),
            NormError::StateDictFile { path, reason } => {
                write!(f, "StateDict `{path}`: {reason}")
            }
            NormError::Collective { layer, reason } => {
                write!(f, "{layer}: synchronizing statistics failed: {reason}")
            }
        }
    }
}

impl std::error::Error for NormError {}
