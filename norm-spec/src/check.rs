//! Validation apart from parsing and lowering: every rule that relates several keys, and
//! every axis name checked against `input`.
//!
//! All errors are collected, in a fixed order (per stage: `axes`, `groups`, `affine`,
//! `bias`, centering, `momentum`). A key whose value was already rejected by the parser
//! ([`Field::Bad`]) or an unusable `input` silences the rules that depend on it, so one
//! mistake gives one error. [`crate::lower`] runs only when this finds nothing.

use crate::declaration::{written_input, AffineValue, Declaration, Field, StageKeys, Value};
use crate::ir::ParamAxis;
use crate::keys::Key;
use crate::lower::{Layout, ParamAxisError};
use crate::Error;

/// Every error of the declaration that the parser could not see. `whole` is the span for
/// errors about the declaration as a whole (a missing `axes`).
pub(crate) fn check<S: Clone>(decl: &Declaration<S>, whole: S) -> Vec<Error<S>> {
    let mut cx = Checker { errors: Vec::new() };
    let input = written_input(&decl.top);
    let layout = input.as_deref().map(Layout::new);
    match &decl.chain {
        Field::Absent => {
            if !decl.top.field(Key::Axes).is_present() && !decl.top.axes_misspelled {
                cx.error(
                    whole,
                    "missing `axes`: say which axes the statistics run over, e.g. axes = \"C,H,W\""
                        .into(),
                );
            }
            cx.stage(&decl.top, layout.as_ref());
        }
        Field::Bad(_) => {
            cx.top_level_keys_with_chain(&decl.top);
            cx.mask_with_chain(&decl.top);
        }
        Field::Set(chain) => {
            cx.top_level_keys_with_chain(&decl.top);
            cx.mask_with_chain(&decl.top);
            for stage in &chain.value {
                cx.external_in_chain(stage);
                cx.stage(stage, layout.as_ref());
            }
        }
    }
    cx.errors
}

/// "unknown axis `X` in `axes`; `input` has N, C, H, W" (with a case suggestion).
fn unknown_axis(layout: &Layout<'_>, name: &str, key: &str) -> String {
    let hint = layout
        .axes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
        .map(|a| format!("; did you mean `{}`?", a.name))
        .unwrap_or_default();
    format!(
        "unknown axis `{name}` in `{key}`; `input` has {}{hint}",
        layout.names()
    )
}

struct Checker<S> {
    errors: Vec<Error<S>>,
}

impl<S: Clone> Checker<S> {
    fn error(&mut self, span: S, message: String) {
        self.errors.push(Error { span, message });
    }

    /// With `chain`, stage keys belong inside the stages.
    fn top_level_keys_with_chain(&mut self, top: &StageKeys<S>) {
        for (key, span) in top.written_stage_keys() {
            let name = key.name();
            self.error(
                span.clone(),
                format!(
                    "`{name}` belongs inside a chain stage when `chain` is used, e.g. \
                     chain(bn({name} = ...))"
                ),
            );
        }
    }

    fn external_in_chain(&mut self, stage: &StageKeys<S>) {
        if let Some((AffineValue::External, written)) = stage.affine() {
            self.error(
                written.key.clone(),
                "`affine = external` is not supported inside a chain: the generated \
                 `forward` takes one scale and shift; normalize with a chain, then \
                 apply the external affine with a separate layer"
                    .into(),
            );
        }
    }

    /// The rules of one stage.
    fn stage(&mut self, st: &StageKeys<S>, layout: Option<&Layout<'_>>) {
        if let (Some((n, span)), false, false) = (
            &st.name,
            st.field(Key::Axes).is_present(),
            st.axes_misspelled,
        ) {
            self.error(
                span.clone(),
                format!(
                    "missing `axes` in stage `{n}`: say which axes the statistics run over, \
                     e.g. {n}(axes = \"C,H,W\")"
                ),
            );
        }
        if let Some(layout) = layout {
            self.axes(st, layout);
            self.groups(st, layout);
            self.affine(st, layout);
            self.mask(st, layout);
        }
        self.bias(st);
        self.centering(st);
        self.momentum(st);
        crate::check_post2017::check(st, layout, &mut self.errors);
        crate::check_switchable::check(st, layout, &mut self.errors);
    }

    /// Every name in `axes` is an input axis.
    fn axes(&mut self, st: &StageKeys<S>, layout: &Layout<'_>) {
        let Some(written) = st.axis_names() else {
            return;
        };
        if let Value::AxisNames(names) = &written.value {
            for name in names.iter().filter(|name| layout.index(name).is_none()) {
                self.error(written.span.clone(), unknown_axis(layout, name, "axes"));
            }
        }
    }

    /// Every name in `mask` is an input axis.
    fn mask(&mut self, st: &StageKeys<S>, layout: &Layout<'_>) {
        let Some(written) = st.written(Key::Mask) else {
            return;
        };
        if let Value::AxisNames(names) = &written.value {
            for name in names.iter().filter(|name| layout.index(name).is_none()) {
                self.error(written.span.clone(), unknown_axis(layout, name, "mask"));
            }
        }
        // The masked statistics path computes plain means and variances over the unmasked
        // positions; the post-2017 statistics keys are not defined on it (yet).
        let combined = [
            (st.written(Key::Ghost), "ghost"),
            (st.written(Key::Renorm), "renorm"),
            (st.written_true(Key::Tlu), "tlu"),
            (
                st.written(Key::Statistic)
                    .filter(|w| w.value == Value::Word("sum")),
                "statistic = \"sum\"",
            ),
        ];
        for (w, name) in combined.into_iter().filter_map(|(w, n)| Some((w?, n))) {
            self.error(
                w.key.clone(),
                format!(
                    "`{name}` is not supported together with `mask`: masked statistics are \
                     plain means and variances over the unmasked positions"
                ),
            );
        }
    }

    /// A chain's stages see one another's outputs: one mask for all of them is not defined.
    fn mask_with_chain(&mut self, top: &StageKeys<S>) {
        if let Some(span) = top.field(Key::Mask).key_span() {
            self.error(
                span.clone(),
                "`mask` is not supported with `chain`: declare the masked normalization as \
                 its own layer"
                    .into(),
            );
        }
    }

    /// `groups` splits `C`: `C` in `input` and in `axes`, divisible when fixed; no input
    /// axis named `G`.
    fn groups(&mut self, st: &StageKeys<S>, layout: &Layout<'_>) {
        let Some((groups, written)) = st.groups() else {
            return;
        };
        match layout.channel {
            None => self.error(
                written.key.clone(),
                format!(
                    "`groups` requires an axis named `C` in `input` (groups split the \
                     channels); `input` has {}",
                    layout.names()
                ),
            ),
            Some(c) => {
                if let Some(Value::AxisNames(axes)) = st.axis_names().map(|w| &w.value) {
                    if !axes.iter().any(|a| a == "C") {
                        self.error(
                            written.key.clone(),
                            "`groups` requires `C` in `axes` (statistics must run over the \
                             channels of each group)"
                                .into(),
                        );
                    }
                }
                if let Some(size) = layout.axes[c].size {
                    if size % groups != 0 {
                        self.error(
                            written.span.clone(),
                            format!("`groups = {groups}` does not divide `C = {size}`"),
                        );
                    }
                }
            }
        }
        if layout.index("G").is_some() {
            self.error(
                written.key.clone(),
                "`groups` creates the group axis `G`, but `input` already has an axis named \
                 `G`; rename that axis"
                    .into(),
            );
        }
    }

    /// The axes of `affine` name parameter axes: `C` for the bare flag; in a list, input
    /// axes other than `N`, or `G` with `groups`, not both `G` and `C`.
    fn affine(&mut self, st: &StageKeys<S>, layout: &Layout<'_>) {
        let Some((affine, written)) = st.affine() else {
            return;
        };
        match affine {
            AffineValue::Off | AffineValue::External => {}
            AffineValue::PerChannel => {
                if layout.channel.is_none() {
                    self.error(
                        written.key.clone(),
                        "`affine` (per-channel) needs an axis named `C` in `input`; use an \
                         axis list such as affine = \"D\""
                            .into(),
                    );
                }
            }
            AffineValue::Axes(names) => {
                let has_groups = st.groups().is_some();
                let mut axes = Vec::new();
                for name in names {
                    match layout.param_axis(name, has_groups) {
                        Ok(axis) => axes.push(axis),
                        Err(ParamAxisError::GroupWithoutGroups) => {
                            if !st.field(Key::Groups).is_bad() {
                                self.error(
                                    written.span.clone(),
                                    "`G` names the group axis and needs `groups`".into(),
                                );
                            }
                        }
                        Err(ParamAxisError::Batch) => self.error(
                            written.span.clone(),
                            "affine parameters cannot be indexed by the batch axis `N`".into(),
                        ),
                        Err(ParamAxisError::Unknown) => {
                            self.error(written.span.clone(), unknown_axis(layout, name, "affine"));
                        }
                    }
                }
                let has_c = layout
                    .channel
                    .is_some_and(|c| axes.contains(&ParamAxis::Input(c)));
                if axes.contains(&ParamAxis::Group) && has_c {
                    self.error(
                        written.span.clone(),
                        "`affine` lists both `G` and `C`; `C` already contains the groups, \
                         so list only one of them"
                            .into(),
                    );
                }
            }
        }
    }

    /// `bias` needs learnable parameters to drop the shift of.
    fn bias(&mut self, st: &StageKeys<S>) {
        let Some(bias) = st.written(Key::Bias) else {
            return;
        };
        let message = match st.affine().map(|(a, _)| a) {
            None if !st.field(Key::Affine).is_bad() => {
                "`bias` without `affine`: there is no learnable shift to drop; add `affine` \
                 or remove `bias`"
            }
            Some(AffineValue::Off) => {
                "`bias` without `affine` (`affine = false`): there is no learnable shift to \
                 drop; remove `bias`"
            }
            Some(AffineValue::External) => {
                "`bias` cannot be combined with `affine = external`: scale and shift are \
                 passed to `forward`"
            }
            _ => return,
        };
        self.error(bias.key.clone(), message.into());
    }

    /// Without centering there is no variance around the mean: no `unbiased`, no running
    /// statistics.
    fn centering(&mut self, st: &StageKeys<S>) {
        if st.bool(Key::Center) != Some(false) {
            return;
        }
        if let Some(unbiased) = st.written_true(Key::Unbiased) {
            self.error(
                unbiased.key.clone(),
                "`unbiased` has no meaning with `center = false`: the n − 1 correction is for \
                 a variance around the mean"
                    .into(),
            );
        }
        if let Some(running) = st.written_true(Key::RunningStats) {
            self.error(
                running.key.clone(),
                "`running_stats` needs centering: a running mean and variance are not \
                 defined with `center = false`"
                    .into(),
            );
        }
    }

    /// `momentum` is the update rule of running statistics.
    fn momentum(&mut self, st: &StageKeys<S>) {
        let Some(momentum) = st.written(Key::Momentum) else {
            return;
        };
        let running = st.written_true(Key::RunningStats).is_some();
        if !running && !st.field(Key::RunningStats).is_bad() {
            self.error(
                momentum.key.clone(),
                "`momentum` has no effect without `running_stats`".into(),
            );
        }
    }
}
