//! Semantics: [`Raw`] → [`Spec`]. Resolves axis names against `input` and checks every rule
//! that relates several keys. All errors are collected; a key whose value was already
//! rejected by the parser ([`Field::Bad`]) or an unusable `input` silences the checks that
//! depend on it, so one mistake gives one error.

use std::borrow::Cow;

use crate::ir::{Affine, Axis, EpsMode, Momentum, ParamAxis, Spec, Stage};
use crate::parse::{Field, Raw, RawAffine, RawStage};
use crate::Error;

/// The default `input`: `"N,C,H,W"`.
fn default_input() -> Vec<Axis> {
    ["N", "C", "H", "W"]
        .into_iter()
        .map(|n| Axis {
            name: Cow::Borrowed(n),
            size: None,
        })
        .collect()
}

/// Validate the parsed declaration and build the [`Spec`], or return every error found
/// (the parser's first, then the semantic ones).
pub(crate) fn check<S: Clone>(raw: Raw<S>, whole: S) -> Result<Spec, Vec<Error<S>>> {
    let mut cx = Cx { errors: raw.errors };
    let input: Option<Vec<Axis>> = match raw.input {
        Field::Absent => Some(default_input()),
        Field::Bad(_) => None,
        Field::Set(set) => Some(set.value),
    };
    let layout = input.as_deref().map(Layout::new);
    let mut stages = Vec::new();
    let chain = !matches!(raw.chain, Field::Absent);
    if chain {
        for (key, span) in raw.top.present_keys() {
            let name = key.name();
            cx.error(
                span.clone(),
                format!(
                    "`{name}` belongs inside a chain stage when `chain` is used, e.g. \
                     chain(bn({name} = ...))"
                ),
            );
        }
        if let Field::Set(set) = &raw.chain {
            for stage in &set.value {
                if let Field::Set(a) = &stage.affine {
                    if matches!(a.value, RawAffine::External) {
                        cx.error(
                            a.key.clone(),
                            "`affine = external` is not supported inside a chain: the generated \
                             `forward` takes one scale and shift; normalize with a chain, then \
                             apply the external affine with a separate layer"
                                .into(),
                        );
                    }
                }
                stages.push(cx.stage(stage, layout.as_ref()));
            }
        }
    } else {
        if matches!(raw.top.axes, Field::Absent) && !raw.top.axes_misspelled {
            cx.error(
                whole,
                "missing `axes`: say which axes the statistics run over, e.g. axes = \"C,H,W\""
                    .into(),
            );
        }
        stages.push(cx.stage(&raw.top, layout.as_ref()));
    }
    match (cx.errors.is_empty(), input) {
        (true, Some(input)) => {
            let layout = Layout::new(&input);
            Ok(Spec {
                channel: layout.channel,
                batch: layout.batch,
                input: Cow::Owned(input),
                stages: Cow::Owned(stages),
                chain,
            })
        }
        _ => Err(cx.errors),
    }
}

/// What `check` needs to know about a valid `input`.
struct Layout<'a> {
    axes: &'a [Axis],
    channel: Option<usize>,
    batch: Option<usize>,
}

impl<'a> Layout<'a> {
    fn new(axes: &'a [Axis]) -> Self {
        Layout {
            axes,
            channel: axes.iter().position(|a| a.name == "C"),
            batch: axes.iter().position(|a| a.name == "N"),
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.axes.iter().position(|a| a.name == name)
    }

    /// "N, C, H, W"
    fn names(&self) -> String {
        self.axes
            .iter()
            .map(|a| a.name.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// "unknown axis `X` in `axes`; `input` has N, C, H, W" (with a case suggestion).
    fn unknown(&self, name: &str, key: &str) -> String {
        let hint = self
            .axes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .map(|a| format!("; did you mean `{}`?", a.name))
            .unwrap_or_default();
        format!(
            "unknown axis `{name}` in `{key}`; `input` has {}{hint}",
            self.names()
        )
    }
}

struct Cx<S> {
    errors: Vec<Error<S>>,
}

impl<S: Clone> Cx<S> {
    fn error(&mut self, span: S, message: String) {
        self.errors.push(Error { span, message });
    }

    /// Resolve one stage. The result is meaningful only if no error was recorded.
    fn stage(&mut self, st: &RawStage<S>, layout: Option<&Layout<'_>>) -> Stage {
        let name = st.name.as_ref().map(|(n, _)| n.clone()).unwrap_or_default();
        if let (Some((n, span)), Field::Absent, false) = (&st.name, &st.axes, st.axes_misspelled) {
            self.error(
                span.clone(),
                format!(
                    "missing `axes` in stage `{n}`: say which axes the statistics run over, \
                     e.g. {n}(axes = \"C,H,W\")"
                ),
            );
        }

        // axes
        let mut mask = 0u16;
        if let (Some(layout), Some(axes)) = (layout, st.axes.get()) {
            for a in &axes.value {
                match layout.index(a) {
                    Some(i) => mask |= 1 << i,
                    None => self.error(axes.span.clone(), layout.unknown(a, "axes")),
                }
            }
        }

        // groups
        let groups = st.groups.get().map(|g| g.value);
        if let (Some(layout), Some(g)) = (layout, st.groups.get()) {
            match layout.channel {
                None => self.error(
                    g.key.clone(),
                    format!(
                        "`groups` requires an axis named `C` in `input` (groups split the \
                         channels); `input` has {}",
                        layout.names()
                    ),
                ),
                Some(c) => {
                    if let Some(axes) = st.axes.get() {
                        if !axes.value.iter().any(|a| a == "C") {
                            self.error(
                                g.key.clone(),
                                "`groups` requires `C` in `axes` (statistics must run over the \
                                 channels of each group)"
                                    .into(),
                            );
                        }
                    }
                    if let Some(size) = layout.axes[c].size {
                        if size % g.value != 0 {
                            self.error(
                                g.span.clone(),
                                format!("`groups = {}` does not divide `C = {size}`", g.value),
                            );
                        }
                    }
                }
            }
            if layout.index("G").is_some() {
                self.error(
                    g.key.clone(),
                    "`groups` creates the group axis `G`, but `input` already has an axis named \
                     `G`; rename that axis"
                        .into(),
                );
            }
        }

        // affine
        let affine = match (&st.affine, layout) {
            (Field::Set(set), Some(layout)) => match &set.value {
                RawAffine::Off => Affine::None,
                RawAffine::External => Affine::External,
                RawAffine::PerChannel => match layout.channel {
                    Some(c) => Affine::Axes(Cow::Owned(vec![ParamAxis::Input(c)])),
                    None => {
                        self.error(
                            set.key.clone(),
                            "`affine` (per-channel) needs an axis named `C` in `input`; use an \
                             axis list such as affine = \"D\""
                                .into(),
                        );
                        Affine::None
                    }
                },
                RawAffine::List(names) => {
                    let mut axes = Vec::new();
                    for n in names {
                        let axis = if n == "G" && (groups.is_some() || layout.index("G").is_none())
                        {
                            if groups.is_some() {
                                Some(ParamAxis::Group)
                            } else {
                                if !st.groups.is_bad() {
                                    self.error(
                                        set.span.clone(),
                                        "`G` names the group axis and needs `groups`".into(),
                                    );
                                }
                                None
                            }
                        } else {
                            match layout.index(n) {
                                Some(i) if Some(i) == layout.batch => {
                                    self.error(
                                        set.span.clone(),
                                        "affine parameters cannot be indexed by the batch axis `N`"
                                            .into(),
                                    );
                                    None
                                }
                                Some(i) => Some(ParamAxis::Input(i)),
                                None => {
                                    self.error(set.span.clone(), layout.unknown(n, "affine"));
                                    None
                                }
                            }
                        };
                        axes.extend(axis);
                    }
                    let has_group = axes.contains(&ParamAxis::Group);
                    let has_c = layout
                        .channel
                        .is_some_and(|c| axes.contains(&ParamAxis::Input(c)));
                    if has_group && has_c {
                        self.error(
                            set.span.clone(),
                            "`affine` lists both `G` and `C`; `C` already contains the groups, \
                             so list only one of them"
                                .into(),
                        );
                    }
                    // Memory order; `G` sits where `C` is.
                    let channel = layout.channel.unwrap_or(0);
                    axes.sort_by_key(|a| match a {
                        ParamAxis::Input(i) => *i,
                        ParamAxis::Group => channel,
                    });
                    Affine::Axes(Cow::Owned(axes))
                }
            },
            _ => Affine::None,
        };

        // bias
        let affine_written = st.affine.get().map(|a| &a.value);
        if let Some(bias) = st.bias.get() {
            match affine_written {
                None if !st.affine.is_bad() => self.error(
                    bias.key.clone(),
                    "`bias` without `affine`: there is no learnable shift to drop; add `affine` \
                     or remove `bias`"
                        .into(),
                ),
                Some(RawAffine::Off) => self.error(
                    bias.key.clone(),
                    "`bias` without `affine` (`affine = false`): there is no learnable shift to \
                     drop; remove `bias`"
                        .into(),
                ),
                Some(RawAffine::External) => self.error(
                    bias.key.clone(),
                    "`bias` cannot be combined with `affine = external`: scale and shift are \
                     passed to `forward`"
                        .into(),
                ),
                _ => {}
            }
        }
        let bias = matches!(affine, Affine::Axes(_)) && st.bias.get().is_none_or(|b| b.value);

        // center, unbiased, running_stats, momentum
        let center = st.center.get().is_none_or(|c| c.value);
        let center_off = st.center.get().is_some_and(|c| !c.value);
        let unbiased = st.unbiased.get().is_some_and(|u| u.value);
        let running_stats = st.running_stats.get().is_some_and(|r| r.value);
        if center_off {
            if let Some(u) = st.unbiased.get().filter(|u| u.value) {
                self.error(
                    u.key.clone(),
                    "`unbiased` has no meaning with `center = false`: the n − 1 correction is for \
                     a variance around the mean"
                        .into(),
                );
            }
            if let Some(r) = st.running_stats.get().filter(|r| r.value) {
                self.error(
                    r.key.clone(),
                    "`running_stats` needs centering: a running mean and variance are not \
                     defined with `center = false`"
                        .into(),
                );
            }
        }
        if let Some(m) = st.momentum.get() {
            if !running_stats && !st.running_stats.is_bad() {
                self.error(
                    m.key.clone(),
                    "`momentum` has no effect without `running_stats`".into(),
                );
            }
        }

        Stage {
            name: Cow::Owned(name),
            axes: mask,
            groups,
            affine,
            bias,
            center,
            eps: st.eps.get().map_or(1e-5, |e| e.value),
            eps_mode: st.eps_mode.get().map_or(EpsMode::Var, |e| e.value),
            unbiased,
            running_stats,
            momentum: st
                .momentum
                .get()
                .map_or(Momentum::Exponential(0.1), |m| m.value),
        }
    }
}
