//! What follows from a validated [`Spec`]: the axes of statistics, parameters and running
//! statistics, the constructor arguments, a canonical text form and a fingerprint.
//!
//! The macro uses these at compile time and the runtime at run time, so both agree on every
//! shape by construction.

use std::fmt;

use crate::ir::{Affine, ParamAxis, Spec, Stage};
use crate::keys;

/// The axes that index the statistics of `stage`: its kept input axes in memory order, with
/// the group axis `G` at the position of `C` when the stage has `groups`.
///
/// `Moments`, the `Saved` statistics and `affine = external` scale/shift have this shape.
pub fn stats_axes(spec: &Spec, stage: &Stage) -> Vec<ParamAxis> {
    let mut out = Vec::new();
    for i in 0..spec.input.len() {
        if stage.groups.is_some() && Some(i) == spec.channel {
            out.push(ParamAxis::Group);
        } else if !stage.reduces(i) {
            out.push(ParamAxis::Input(i));
        }
    }
    out
}

/// The axes of `running_mean`/`running_var`: [`stats_axes`] without the batch axis `N`.
/// `None` when the stage keeps no running statistics.
pub fn running_axes(spec: &Spec, stage: &Stage) -> Option<Vec<ParamAxis>> {
    if !stage.running_stats {
        return None;
    }
    let batch = spec.batch;
    Some(
        stats_axes(spec, stage)
            .into_iter()
            .filter(|a| !matches!(a, ParamAxis::Input(i) if Some(*i) == batch))
            .collect(),
    )
}

/// The axes of `gamma`/`beta`, or `None` when the stage has no learnable affine parameters.
pub fn param_axes(stage: &Stage) -> Option<&[ParamAxis]> {
    match &stage.affine {
        Affine::Axes(axes) => Some(axes),
        Affine::None | Affine::External => None,
    }
}

/// The input axes that are arguments of the generated `new`, in input order: every axis
/// without a fixed size that sizes a parameter or a running statistic of any stage.
pub fn ctor_args(spec: &Spec) -> Vec<usize> {
    let mut used = vec![false; spec.input.len()];
    for stage in spec.stages.iter() {
        let params = param_axes(stage)
            .map(<[ParamAxis]>::to_vec)
            .unwrap_or_default();
        let running = running_axes(spec, stage).unwrap_or_default();
        for axis in params.into_iter().chain(running) {
            if let ParamAxis::Input(i) = axis {
                used[i] = true;
            }
        }
    }
    (0..spec.input.len())
        .filter(|&i| used[i] && spec.input[i].size.is_none())
        .collect()
}

/// The size of `axis` given the size of every input axis (`G` is the stage's `groups`).
pub fn axis_size(stage: &Stage, axis: ParamAxis, input_sizes: &[usize]) -> usize {
    match axis {
        ParamAxis::Input(i) => input_sizes[i],
        ParamAxis::Group => stage.groups.unwrap_or(1),
    }
}

/// The name of `axis` (`G` for the group axis).
pub fn axis_name(spec: &Spec, axis: ParamAxis) -> &str {
    match axis {
        ParamAxis::Input(i) => &spec.input[i].name,
        ParamAxis::Group => "G",
    }
}

/// A stable 64-bit fingerprint of the configuration (FNV-1a of its canonical text).
///
/// Two layers with equal specs have equal fingerprints; `Saved` values carry it so that a
/// `Saved` from another kind of layer is rejected.
pub fn fingerprint(spec: &Spec) -> u64 {
    let text = spec.to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// "C,H,W": the names of `axes`, comma-separated.
pub(crate) fn join_axes(spec: &Spec, axes: impl Iterator<Item = ParamAxis>) -> String {
    axes.map(|a| axis_name(spec, a).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The canonical text of a spec: every key written out, in a fixed order. It parses back to
/// an equal `Spec`.
impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input: Vec<String> = self
            .input
            .iter()
            .map(|a| match a.size {
                Some(n) => format!("{}={n}", a.name),
                None => a.name.to_string(),
            })
            .collect();
        write!(f, "input = \"{}\", ", input.join(","))?;
        if self.chain {
            write!(f, "chain(")?;
            for (k, stage) in self.stages.iter().enumerate() {
                if k > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{}(", stage.name)?;
                write!(f, "{}", keys::canonical_stage(self, stage))?;
                write!(f, ")")?;
            }
            write!(f, ")")
        } else {
            write!(f, "{}", keys::canonical_stage(self, &self.stages[0]))
        }
    }
}
