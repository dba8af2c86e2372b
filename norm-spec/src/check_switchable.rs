//! Switchable Normalization (Luo et al. 2018): alternatives of statistics axes separated by
//! `|`, `axes = "H,W" | "C,H,W" | "N,H,W"`. The rules of the alternatives (called from
//! `Checker::stage`, see [`crate::check`]), their lowering into [`Stage::switch`] and their
//! canonical text.
//!
//! Restrictions, each an error on the token: 2 to 4 alternatives, no alternative twice; with
//! `running_stats`, exactly one alternative over `N` (it alone keeps running statistics); top level only (not inside `chain`), and none of `groups`,
//! `mask`, `ghost`, `renorm`, `tlu`, `unbiased`, `statistic = "sum"`, `center = false`,
//! `eps_mode = "std"`, `affine = external`.

use std::borrow::Cow;

use crate::declaration::{AffineValue, StageKeys, Value};
use crate::ir::{Spec, Stage};
use crate::keys::Key;
use crate::lower::Layout;
use crate::shapes::join_axes;
use crate::Error;

/// The most alternatives `axes` may have.
pub(crate) const MAX_ALTERNATIVES: usize = 4;

/// One alternative of `axes` after the first: `| "C,H,W"`.
pub(crate) struct Alternative<S> {
    /// The span of the `|` before it.
    pub bar: S,
    /// The axis names as written (non-empty, no duplicates).
    pub names: Vec<String>,
    /// The span of the string.
    pub span: S,
}

/// The alternatives as written, first one included: (names, span of the list).
fn written<S>(st: &StageKeys<S>) -> Option<Vec<(&[String], &S)>> {
    let first = st.axis_names()?;
    let Value::AxisNames(names) = &first.value else {
        return None;
    };
    let mut all = vec![(&names[..], &first.span)];
    all.extend(st.switch.iter().map(|a| (&a.names[..], &a.span)));
    Some(all)
}

/// Every error of the alternatives of one stage, appended to `errors`.
pub(crate) fn check<S: Clone>(
    st: &StageKeys<S>,
    layout: Option<&Layout<'_>>,
    errors: &mut Vec<Error<S>>,
) {
    if st.switch.is_empty() && !st.switch_bad {
        return;
    }
    let mut error = |span: &S, message: String| {
        errors.push(Error {
            span: span.clone(),
            message,
        })
    };
    let first_bar = st.switch.first().map(|a| a.bar.clone());
    if let (Some((stage, _)), Some(bar)) = (&st.name, &first_bar) {
        error(
            bar,
            format!(
                "alternatives of `axes` (`|`, Switchable Normalization) are not supported \
                 inside `chain` (stage `{stage}`); declare the switchable layer on its own"
            ),
        );
    }
    if let Some(extra) = st.switch.get(MAX_ALTERNATIVES - 1) {
        error(
            &extra.bar,
            format!(
                "Switchable Normalization takes 2 to {MAX_ALTERNATIVES} alternatives of \
                 `axes`; this is alternative {}",
                MAX_ALTERNATIVES + 1
            ),
        );
    }
    // Keys whose semantics are not defined for a mixture of statistics.
    let incompatible: [(Key, Option<Value>, &str); 10] = [
        (Key::Groups, None, "`groups`"),
        (Key::Mask, None, "`mask`"),
        (Key::Ghost, None, "`ghost`"),
        (Key::Renorm, None, "`renorm`"),
        (Key::Tlu, Some(Value::Bool(true)), "`tlu`"),
        (Key::Unbiased, Some(Value::Bool(true)), "`unbiased`"),
        (
            Key::Statistic,
            Some(Value::Word("sum")),
            "`statistic = \"sum\"`",
        ),
        (Key::Center, Some(Value::Bool(false)), "`center = false`"),
        (
            Key::EpsMode,
            Some(Value::Word("std")),
            "`eps_mode = \"std\"`",
        ),
        (
            Key::Affine,
            Some(Value::Affine(AffineValue::External)),
            "`affine = external`",
        ),
    ];
    for (key, value, what) in incompatible {
        if let Some(w) = st.written(key) {
            if value.as_ref().is_none_or(|v| *v == w.value) {
                error(
                    &w.key,
                    format!(
                        "{what} cannot be combined with alternatives of `axes` (Switchable \
                         Normalization): the layer mixes plain mean/variance statistics"
                    ),
                );
            }
        }
    }
    let (Some(layout), Some(alts)) = (layout, written(st)) else {
        return;
    };
    let mut masks: Vec<Option<u16>> = Vec::new();
    for (k, (names, span)) in alts.iter().enumerate() {
        let mut mask = Some(0u16);
        for name in names.iter() {
            match layout.index(name) {
                Some(i) => mask = mask.map(|m| m | 1 << i),
                None => {
                    // The first alternative's names are checked with `axes`.
                    if k > 0 {
                        error(span, unknown_axis(layout, name));
                    }
                    mask = None;
                }
            }
        }
        if let Some(m) = mask {
            if masks.contains(&Some(m)) {
                error(
                    span,
                    "this alternative of `axes` reduces the same axes as an earlier one; \
                     each alternative must be a different set of statistics"
                        .into(),
                );
            }
        }
        masks.push(mask);
    }
    if masks.iter().any(Option::is_none) || st.switch_bad {
        return;
    }
    let over_batch: Vec<usize> = match layout.batch {
        Some(b) => (0..masks.len())
            .filter(|&k| masks[k].is_some_and(|m| m & 1 << b != 0))
            .collect(),
        None => Vec::new(),
    };
    let running = st.written_true(Key::RunningStats);
    if let (Some(&second), Some(_)) = (over_batch.get(1), running) {
        error(
            alts[second].1,
            "with `running_stats`, at most one alternative of `axes` may reduce the batch \
             axis `N`: it alone keeps running statistics"
                .into(),
        );
    }
    if let Some(r) = running {
        if over_batch.is_empty() {
            error(
                &r.key,
                "`running_stats` with alternatives of `axes` tracks the alternative that \
                 reduces the batch axis `N`, but none does; add one (e.g. \"N,H,W\") or \
                 remove `running_stats`"
                    .into(),
            );
        }
    }
}

/// "unknown axis `X` in `axes`; `input` has N, C, H, W" (as `check` says it for `axes`).
fn unknown_axis(layout: &Layout<'_>, name: &str) -> String {
    let hint = layout
        .axes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
        .map(|a| format!("; did you mean `{}`?", a.name))
        .unwrap_or_default();
    format!(
        "unknown axis `{name}` in `axes`; `input` has {}{hint}",
        layout.names()
    )
}

/// Sets [`Stage::switch`] (and `axes` to the alternative over `N`) of a checked stage.
pub(crate) fn lower<S>(keys: &StageKeys<S>, layout: &Layout<'_>, stage: &mut Stage) {
    if keys.switch.is_empty() {
        return;
    }
    let Some(alts) = written(keys) else {
        return;
    };
    let masks: Vec<u16> = alts
        .iter()
        .map(|(names, _)| {
            names
                .iter()
                .filter_map(|n| layout.index(n))
                .fold(0u16, |m, i| m | 1 << i)
        })
        .collect();
    if let Some(b) = layout.batch {
        if let Some(&m) = masks.iter().find(|&&m| m & 1 << b != 0) {
            stage.axes = m;
        }
    }
    stage.switch = Cow::Owned(masks);
}

/// `axes = "H,W" | "C,H,W"`: the canonical text of a stage with alternatives.
pub(crate) fn canonical(spec: &Spec, stage: &Stage) -> Option<String> {
    if stage.switch.is_empty() {
        return None;
    }
    let alts: Vec<String> = stage
        .switch
        .iter()
        .map(|&m| {
            let axes = (0..spec.input.len())
                .filter(|&i| m & 1 << i != 0)
                .map(crate::ir::ParamAxis::Input);
            format!("\"{}\"", join_axes(spec, axes))
        })
        .collect();
    Some(format!("axes = {}", alts.join(" | ")))
}
