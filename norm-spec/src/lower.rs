//! Lowering: a checked [`Declaration`] → the IR ([`Spec`]).
//!
//! Runs only when [`crate::check`] found nothing wrong, so it may assume every axis name
//! resolves. Each key reaches the IR through its row of the key table: simple keys set
//! their stage fields through [`Lowering::Stage`], from the written value or the row's
//! default; the structural ones (`input`, `axes`, `affine`, `chain`) are resolved here.

use std::borrow::Cow;

use crate::declaration::{written_input, AffineValue, Declaration, StageKeys, Value};
use crate::ir::{Affine, Axis, EpsMode, Momentum, ParamAxis, Spec, Stage, Statistic};
use crate::keys::{Key, Lowering, KEYS};

/// The input's axes, for resolving axis names.
pub(crate) struct Layout<'a> {
    pub axes: &'a [Axis],
    /// Index of the axis named `C`, if any.
    pub channel: Option<usize>,
    /// Index of the axis named `N`, if any.
    pub batch: Option<usize>,
}

/// Why an axis name in `affine` does not name a parameter axis.
pub(crate) enum ParamAxisError {
    /// `G` without `groups` (and no input axis named `G`).
    GroupWithoutGroups,
    /// The batch axis `N`.
    Batch,
    /// Not an axis of `input`.
    Unknown,
}

impl<'a> Layout<'a> {
    pub(crate) fn new(axes: &'a [Axis]) -> Self {
        Layout {
            axes,
            channel: axes.iter().position(|a| a.name == "C"),
            batch: axes.iter().position(|a| a.name == "N"),
        }
    }

    /// The index of the input axis `name`.
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.axes.iter().position(|a| a.name == name)
    }

    /// "N, C, H, W"
    pub(crate) fn names(&self) -> String {
        self.axes
            .iter()
            .map(|a| a.name.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The parameter axis an `affine` axis name refers to; `G` is the group axis when the
    /// stage has `groups` (or when `input` has no axis named `G`, to say that it needs them).
    pub(crate) fn param_axis(
        &self,
        name: &str,
        has_groups: bool,
    ) -> Result<ParamAxis, ParamAxisError> {
        if name == "G" && (has_groups || self.index("G").is_none()) {
            return if has_groups {
                Ok(ParamAxis::Group)
            } else {
                Err(ParamAxisError::GroupWithoutGroups)
            };
        }
        match self.index(name) {
            Some(i) if Some(i) == self.batch => Err(ParamAxisError::Batch),
            Some(i) => Ok(ParamAxis::Input(i)),
            None => Err(ParamAxisError::Unknown),
        }
    }
}

/// Build the IR of a declaration that passed [`crate::check`].
pub(crate) fn lower<S>(decl: &Declaration<S>) -> Spec {
    let input = written_input(&decl.top).unwrap_or_default();
    let layout = Layout::new(&input);
    let stages: Vec<Stage> = decl
        .stages()
        .iter()
        .map(|keys| lower_stage(keys, &layout))
        .collect();
    Spec {
        channel: layout.channel,
        batch: layout.batch,
        stages: Cow::Owned(stages),
        chain: decl.chain.is_present(),
        input: Cow::Owned(input.into_owned()),
    }
}

/// One stage: every field is set below, by its key's lowering (from the written value, else
/// the row's default; a key absent without a default leaves the field unset: no `groups`)
/// or by resolving axis names against `input`.
fn lower_stage<S>(keys: &StageKeys<S>, layout: &Layout<'_>) -> Stage {
    let mut stage = Stage {
        name: Cow::Owned(
            keys.name
                .as_ref()
                .map(|(n, _)| n.clone())
                .unwrap_or_default(),
        ),
        axes: 0,
        groups: None,
        affine: Affine::None,
        bias: false,
        center: false,
        eps: 0.0,
        eps_mode: EpsMode::Var,
        unbiased: false,
        running_stats: false,
        momentum: Momentum::Cumulative,
        statistic: Statistic::Mean,
        tlu: false,
        ghost: None,
        renorm: None,
        mask: 0,
        switch: Cow::Borrowed(&[]),
    };
    for info in KEYS {
        if let Lowering::Stage(lower) = info.lowering {
            let written = keys.written(info.key).map(|w| &w.value);
            if let Some(value) = written.or(info.default.as_ref()) {
                lower(&mut stage, value);
            }
        }
    }
    if let Some(Value::AxisNames(names)) = keys.axis_names().map(|w| &w.value) {
        for i in names.iter().filter_map(|name| layout.index(name)) {
            stage.axes |= 1 << i;
        }
    }
    if let Some(Value::AxisNames(names)) = keys.written(Key::Mask).map(|w| &w.value) {
        for i in names.iter().filter_map(|name| layout.index(name)) {
            stage.mask |= 1 << i;
        }
    }
    crate::check_switchable::lower(keys, layout, &mut stage);
    stage.affine = match keys.affine() {
        None | Some((AffineValue::Off, _)) => Affine::None,
        Some((AffineValue::External, _)) => Affine::External,
        Some((AffineValue::PerChannel, _)) => match layout.channel {
            Some(c) => Affine::Axes(Cow::Owned(vec![ParamAxis::Input(c)])),
            None => Affine::None,
        },
        Some((AffineValue::Axes(names), _)) => {
            let has_groups = stage.groups.is_some();
            let mut axes: Vec<ParamAxis> = names
                .iter()
                .filter_map(|name| layout.param_axis(name, has_groups).ok())
                .collect();
            // Memory order; `G` sits where `C` is.
            let channel = layout.channel.unwrap_or(0);
            axes.sort_by_key(|a| match a {
                ParamAxis::Input(i) => *i,
                ParamAxis::Group => channel,
            });
            Affine::Axes(Cow::Owned(axes))
        }
    };
    // `beta` exists only beside a learnable `gamma`.
    stage.bias &= matches!(stage.affine, Affine::Axes(_));
    stage
}
