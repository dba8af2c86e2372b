//! The one table of configuration keys.
//!
//! A key is one row of [`KEYS`]: its name, where it may appear, the kind of value it takes
//! (with the value's constraint and the words of its message), its default, an example for
//! messages, the names other libraries use for it (for "did you mean"), and its lowering
//! onto the IR. The parser, the unknown-key message, the suggestions and the lowering read
//! this table; nothing else spells a key name. Rules that relate several keys live in
//! [`crate::check`].

use std::borrow::Cow;

use crate::declaration::Value;
use crate::ir::{Affine, Axis, EpsMode, Momentum, ParamAxis, Renorm, Spec, Stage, Statistic};
use crate::shapes::join_axes;
use crate::suggest::closest;

/// A configuration key. The discriminant is the key's row in [`KEYS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    Input,
    Axes,
    Groups,
    Affine,
    Bias,
    Center,
    Eps,
    EpsMode,
    Unbiased,
    RunningStats,
    Momentum,
    Chain,
    Statistic,
    Tlu,
    Ghost,
    Renorm,
    Mask,
}

/// What a key's value looks like: this selects the reader in `parse::values`, and carries
/// the constraint the value must meet and the words of the message when it does not.
pub(crate) enum ValueKind {
    /// `"N,C=64,H,W"`: the input's axis names, each with an optional fixed size.
    InputAxes,
    /// `"C,H,W"`: axis names; `if_empty` ends the message about an empty list.
    AxisNames { if_empty: &'static str },
    /// The bare flag, `true`/`false`, `external`, or an axis list in a string.
    Affine { if_empty: &'static str },
    /// An integer ≥ 1.
    Count,
    /// `true` or `false`; `bare` is what the key alone means (`None`: a value is required).
    Bool { bare: Option<bool> },
    /// A number `accept` accepts, or one of `words` as a string literal; the message says
    /// "`key` must be {must_be}".
    Number {
        accept: fn(f64) -> bool,
        words: &'static [&'static str],
        must_be: &'static str,
    },
    /// One of `words`, as a string literal; the message says "`key` must be {must_be}".
    Word {
        words: &'static [&'static str],
        must_be: &'static str,
    },
    /// `name(keys...)` stages in parentheses.
    Stages,
    /// `renorm(rmax = .., dmax = ..)`, or the bare flag: read by `parse::renorm`.
    Renorm,
}

/// How a key's value reaches the IR ([`Stage`], [`crate::Spec`]).
pub(crate) enum Lowering {
    /// Sets the stage's fields from the value: the written one, else the row's default.
    Stage(fn(&mut Stage, &Value)),
    /// Names axes or stages: `crate::lower` resolves it against `input`.
    Structural,
}

/// One row of the key table.
pub(crate) struct KeyInfo {
    /// The key.
    pub key: Key,
    /// How it is written.
    pub name: &'static str,
    /// Whether it may appear inside a `chain` stage (every key except `input` and `chain`).
    pub in_stage: bool,
    /// The kind of value it takes, with the value's constraint.
    pub kind: ValueKind,
    /// The value when the key is not written (`None`: no default; absent means "none").
    pub default: Option<Value>,
    /// A short example, used in "expected ..." messages.
    pub example: &'static str,
    /// Names other libraries (mostly PyTorch) use for this key: only ever suggestions.
    pub aliases: &'static [&'static str],
    /// How the value reaches the IR.
    pub lowering: Lowering,
    /// The key as the canonical text writes it for a stage (`None`: not written). That text
    /// is [`crate::Spec`]'s `Display` and the source of its fingerprint; it parses back to an
    /// equal stage. `input` and `chain` are written by the `Display` of the whole spec.
    pub canonical: fn(&Spec, &Stage) -> Option<String>,
}

/// The axes of the default `input`, `"N,C,H,W"`.
const NCHW: &[Axis] = &[
    Axis {
        name: Cow::Borrowed("N"),
        size: None,
    },
    Axis {
        name: Cow::Borrowed("C"),
        size: None,
    },
    Axis {
        name: Cow::Borrowed("H"),
        size: None,
    },
    Axis {
        name: Cow::Borrowed("W"),
        size: None,
    },
];

/// The key table, in documentation order (also the order of the "valid keys" lists).
pub(crate) const KEYS: &[KeyInfo] = &[
    KeyInfo {
        key: Key::Input,
        name: "input",
        in_stage: false,
        kind: ValueKind::InputAxes,
        default: Some(Value::InputAxes(Cow::Borrowed(NCHW))),
        example: "input = \"N,C,H,W\"",
        aliases: &["shape", "layout"],
        lowering: Lowering::Structural,
        canonical: |_, _| None,
    },
    KeyInfo {
        key: Key::Axes,
        name: "axes",
        in_stage: true,
        kind: ValueKind::AxisNames {
            if_empty: "say which axes the statistics run over, e.g. axes = \"C,H,W\"",
        },
        default: None,
        example: "axes = \"C,H,W\"",
        aliases: &["dim", "dims", "axis", "reduce", "normalized_shape"],
        lowering: Lowering::Structural,
        canonical: |spec, stage| {
            if let Some(alternatives) = crate::check_switchable::canonical(spec, stage) {
                return Some(alternatives);
            }
            let reduced = (0..spec.input.len()).filter(|&i| stage.reduces(i));
            Some(format!(
                "axes = \"{}\"",
                join_axes(spec, reduced.map(ParamAxis::Input))
            ))
        },
    },
    KeyInfo {
        key: Key::Groups,
        name: "groups",
        in_stage: true,
        kind: ValueKind::Count,
        default: None,
        example: "groups = 32",
        aliases: &["num_groups", "group"],
        lowering: Lowering::Stage(|stage, value| {
            if let Value::Count(groups) = value {
                stage.groups = Some(*groups);
            }
        }),
        canonical: |_, stage| stage.groups.map(|g| format!("groups = {g}")),
    },
    KeyInfo {
        key: Key::Affine,
        name: "affine",
        in_stage: true,
        kind: ValueKind::Affine {
            if_empty: "name the axes that index the parameters, e.g. affine = \"C\", or write \
                       the bare flag `affine`",
        },
        default: None,
        example: "affine = \"C\"",
        aliases: &["elementwise_affine", "scale", "gamma"],
        lowering: Lowering::Structural,
        canonical: |spec, stage| match &stage.affine {
            Affine::None => None,
            Affine::External => Some("affine = external".to_string()),
            Affine::Axes(axes) => Some(format!(
                "affine = \"{}\"",
                join_axes(spec, axes.iter().copied())
            )),
        },
    },
    KeyInfo {
        key: Key::Bias,
        name: "bias",
        in_stage: true,
        kind: ValueKind::Bool { bare: None },
        default: Some(Value::Bool(true)),
        example: "bias = false",
        aliases: &["beta", "shift"],
        // `crate::lower` clears it when the stage has no learnable parameters.
        lowering: Lowering::Stage(|stage, value| stage.bias = *value == Value::Bool(true)),
        canonical: |_, stage| match stage.affine {
            Affine::Axes(_) => Some(format!("bias = {}", stage.bias)),
            Affine::None | Affine::External => None,
        },
    },
    KeyInfo {
        key: Key::Center,
        name: "center",
        in_stage: true,
        kind: ValueKind::Bool { bare: None },
        default: Some(Value::Bool(true)),
        example: "center = false",
        aliases: &[],
        lowering: Lowering::Stage(|stage, value| stage.center = *value == Value::Bool(true)),
        canonical: |_, stage| Some(format!("center = {}", stage.center)),
    },
    KeyInfo {
        key: Key::Eps,
        name: "eps",
        in_stage: true,
        kind: ValueKind::Number {
            accept: |eps| eps.is_finite() && eps >= 0.0,
            words: &[],
            must_be: "a finite number ≥ 0",
        },
        default: Some(Value::Number(1e-5)),
        example: "eps = 1e-5",
        aliases: &["epsilon"],
        lowering: Lowering::Stage(|stage, value| {
            if let Value::Number(eps) = value {
                stage.eps = *eps;
            }
        }),
        canonical: |_, stage| Some(format!("eps = {:?}", stage.eps)),
    },
    KeyInfo {
        key: Key::EpsMode,
        name: "eps_mode",
        in_stage: true,
        kind: ValueKind::Word {
            words: &["var", "std"],
            must_be: "\"var\" or \"std\"",
        },
        default: Some(Value::Word("var")),
        example: "eps_mode = \"std\"",
        aliases: &[],
        lowering: Lowering::Stage(|stage, value| {
            stage.eps_mode = if *value == Value::Word("std") {
                EpsMode::Std
            } else {
                EpsMode::Var
            };
        }),
        canonical: |_, stage| {
            Some(match stage.eps_mode {
                EpsMode::Var => "eps_mode = \"var\"".to_string(),
                EpsMode::Std => "eps_mode = \"std\"".to_string(),
            })
        },
    },
    KeyInfo {
        key: Key::Unbiased,
        name: "unbiased",
        in_stage: true,
        kind: ValueKind::Bool { bare: Some(true) },
        default: Some(Value::Bool(false)),
        example: "unbiased",
        aliases: &["unbiased_var"],
        lowering: Lowering::Stage(|stage, value| stage.unbiased = *value == Value::Bool(true)),
        canonical: |_, stage| stage.unbiased.then(|| "unbiased".to_string()),
    },
    KeyInfo {
        key: Key::RunningStats,
        name: "running_stats",
        in_stage: true,
        kind: ValueKind::Bool { bare: Some(true) },
        default: Some(Value::Bool(false)),
        example: "running_stats",
        aliases: &["track_running_stats", "running"],
        lowering: Lowering::Stage(|stage, value| {
            stage.running_stats = *value == Value::Bool(true);
        }),
        canonical: |_, stage| stage.running_stats.then(|| "running_stats".to_string()),
    },
    KeyInfo {
        key: Key::Momentum,
        name: "momentum",
        in_stage: true,
        kind: ValueKind::Number {
            accept: |m| m > 0.0 && m <= 1.0,
            words: &["cumulative"],
            must_be: "in (0, 1] or \"cumulative\"",
        },
        default: Some(Value::Number(0.1)),
        example: "momentum = 0.1",
        aliases: &[],
        lowering: Lowering::Stage(|stage, value| {
            stage.momentum = match value {
                Value::Number(m) => Momentum::Exponential(*m),
                _ => Momentum::Cumulative,
            };
        }),
        canonical: |_, stage| {
            stage.running_stats.then(|| match stage.momentum {
                Momentum::Exponential(m) => format!("momentum = {m:?}"),
                Momentum::Cumulative => "momentum = \"cumulative\"".to_string(),
            })
        },
    },
    KeyInfo {
        key: Key::Chain,
        name: "chain",
        in_stage: false,
        kind: ValueKind::Stages,
        default: None,
        example: "chain(bn(axes = \"N,H,W\"), gn(axes = \"C,H,W\", groups = 2))",
        aliases: &["stages", "sequential"],
        lowering: Lowering::Structural,
        canonical: |_, _| None,
    },
    KeyInfo {
        key: Key::Statistic,
        name: "statistic",
        in_stage: true,
        kind: ValueKind::Word {
            words: &["mean", "sum"],
            must_be: "\"mean\" or \"sum\"",
        },
        default: Some(Value::Word("mean")),
        example: "statistic = \"sum\"",
        aliases: &["reduction"],
        lowering: Lowering::Stage(|stage, value| {
            stage.statistic = if *value == Value::Word("sum") {
                Statistic::Sum
            } else {
                Statistic::Mean
            };
        }),
        canonical: |_, stage| {
            (stage.statistic == Statistic::Sum).then(|| "statistic = \"sum\"".to_string())
        },
    },
    KeyInfo {
        key: Key::Tlu,
        name: "tlu",
        in_stage: true,
        kind: ValueKind::Bool { bare: Some(true) },
        default: Some(Value::Bool(false)),
        example: "tlu",
        aliases: &["threshold"],
        lowering: Lowering::Stage(|stage, value| stage.tlu = *value == Value::Bool(true)),
        canonical: |_, stage| stage.tlu.then(|| "tlu".to_string()),
    },
    KeyInfo {
        key: Key::Ghost,
        name: "ghost",
        in_stage: true,
        kind: ValueKind::Count,
        default: None,
        example: "ghost = 8",
        aliases: &["virtual_batch_size", "ghost_batch"],
        lowering: Lowering::Stage(|stage, value| {
            if let Value::Count(k) = value {
                stage.ghost = Some(*k);
            }
        }),
        canonical: |_, stage| stage.ghost.map(|k| format!("ghost = {k}")),
    },
    KeyInfo {
        key: Key::Renorm,
        name: "renorm",
        in_stage: true,
        kind: ValueKind::Renorm,
        default: None,
        example: "renorm(rmax = 3.0, dmax = 5.0)",
        aliases: &["batch_renorm", "renormalization"],
        lowering: Lowering::Stage(|stage, value| {
            if let Value::Renorm { rmax, dmax } = value {
                stage.renorm = Some(Renorm {
                    rmax: *rmax,
                    dmax: *dmax,
                });
            }
        }),
        canonical: |_, stage| {
            stage
                .renorm
                .map(|r| format!("renorm(rmax = {:?}, dmax = {:?})", r.rmax, r.dmax))
        },
    },
    KeyInfo {
        key: Key::Mask,
        name: "mask",
        in_stage: false,
        kind: ValueKind::AxisNames {
            if_empty: "name the axes the boolean mask is indexed by, e.g. mask = \"N,T\"",
        },
        default: None,
        example: "mask = \"N,T\"",
        aliases: &["padding_mask", "where"],
        lowering: Lowering::Structural,
        canonical: |spec, stage| {
            (stage.mask != 0).then(|| {
                let masked = (0..spec.input.len()).filter(|&i| stage.masks(i));
                format!(
                    "mask = \"{}\"",
                    join_axes(spec, masked.map(ParamAxis::Input))
                )
            })
        },
    },
];

impl Key {
    /// The key's row in [`KEYS`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The key's row of the table.
    pub(crate) fn info(self) -> &'static KeyInfo {
        &KEYS[self.index()]
    }

    /// How the key is written.
    pub(crate) fn name(self) -> &'static str {
        self.info().name
    }

    /// The key written `name`, if any.
    pub(crate) fn from_name(name: &str) -> Option<Key> {
        KEYS.iter().find(|k| k.name == name).map(|k| k.key)
    }
}

/// The canonical text of a stage's keys: every row's text, in table order.
pub(crate) fn canonical_stage(spec: &Spec, stage: &Stage) -> String {
    KEYS.iter()
        .filter_map(|k| (k.canonical)(spec, stage))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The keys valid at a level, comma-separated: `input, axes, ...` (top level) or the stage keys.
pub(crate) fn valid_keys(in_stage: bool) -> String {
    KEYS.iter()
        .filter(|k| !in_stage || k.in_stage)
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key an unknown `word` most likely meant, among the keys valid at that level: a key
/// another library names `word`, else the most similar key name.
pub(crate) fn suggest_key(word: &str, in_stage: bool) -> Option<&'static str> {
    let lower = word.to_lowercase();
    let valid_here = |k: &&KeyInfo| !in_stage || k.in_stage;
    if let Some(key) = KEYS.iter().find(|k| k.aliases.contains(&lower.as_str())) {
        if valid_here(&key) {
            return Some(key.name);
        }
    }
    closest(&lower, KEYS.iter().filter(valid_here).map(|k| k.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest_key("axis", false), Some("axes"));
        assert_eq!(suggest_key("eps_mod", false), Some("eps_mode"));
        assert_eq!(suggest_key("runing_stats", false), Some("running_stats"));
        assert_eq!(suggest_key("momentun", false), Some("momentum"));
        assert_eq!(suggest_key("Axes", false), Some("axes"));
        assert_eq!(suggest_key("epsilon", true), Some("eps"));
        assert_eq!(suggest_key("num_groups", true), Some("groups"));
        assert_eq!(suggest_key("inpt", false), Some("input"));
        assert_eq!(suggest_key("inpt", true), None);
        assert_eq!(suggest_key("zzz", false), None);
        assert_eq!(suggest_key("", false), None);
    }

    #[test]
    fn every_key_is_its_own_row_and_roundtrips() {
        for (row, k) in KEYS.iter().enumerate() {
            assert_eq!(k.key.index(), row, "`{}` is not at its row", k.name);
            assert_eq!(Key::from_name(k.name), Some(k.key));
            assert_eq!(k.key.name(), k.name);
        }
    }

    #[test]
    fn aliases_are_unique_and_not_key_names() {
        let mut seen: Vec<&str> = Vec::new();
        for k in KEYS {
            for alias in k.aliases {
                assert!(Key::from_name(alias).is_none(), "alias `{alias}` is a key");
                assert!(!seen.contains(alias), "alias `{alias}` is listed twice");
                seen.push(alias);
            }
        }
    }

    #[test]
    fn every_default_meets_its_constraint() {
        for k in KEYS {
            match (&k.kind, &k.default) {
                (ValueKind::Number { accept, .. }, Some(Value::Number(x))) => {
                    assert!(accept(*x), "default of `{}`", k.name);
                }
                (ValueKind::Word { words, .. }, Some(Value::Word(w))) => {
                    assert!(words.contains(w), "default of `{}`", k.name);
                }
                (ValueKind::Number { .. } | ValueKind::Word { .. }, Some(other)) => {
                    panic!("default of `{}` is {other:?}", k.name)
                }
                (ValueKind::Bool { .. }, d) => {
                    assert!(matches!(d, Some(Value::Bool(_))), "`{}`", k.name);
                }
                _ => {}
            }
        }
    }
}
