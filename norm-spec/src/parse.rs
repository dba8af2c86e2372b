//! Syntax: token trees → [`Raw`], a per-key record of what was written, with spans.
//!
//! Checks that need one key only (value types, ranges, axis-list syntax, duplicates) live
//! here; rules that relate several keys live in [`crate::check`]. Parsing never stops at an
//! error: it records the error, skips to the next `,` and goes on, and a key whose value was
//! rejected is remembered as [`Field::Bad`] so that `check` does not pile on.
//!
//! Leniencies (documented in the crate's grammar): `affine = true` is the `affine` flag and
//! `affine = false` means no affine parameters; `unbiased` and `running_stats` accept
//! `= true`/`= false` as well as the bare flag; trailing commas are allowed everywhere
//! (outside strings).

use std::borrow::Cow;

use crate::ir::{Axis, EpsMode, Momentum, MAX_RANK};
use crate::keys::{self, Key};
use crate::token::{Delimiter, LitKind, Literal, TokenTree};
use crate::Error;

/// One key as written: its value, the key's span and the value's span (the key's for flags).
pub(crate) struct Set<S, T> {
    pub value: T,
    pub key: S,
    pub span: S,
}

/// What the declaration says about one key.
pub(crate) enum Field<S, T> {
    /// Not written.
    Absent,
    /// Written, but the value was rejected (an error was recorded); the span is the key's.
    Bad(S),
    /// Written and well-formed.
    Set(Set<S, T>),
}

impl<S, T> Field<S, T> {
    fn is_present(&self) -> bool {
        !matches!(self, Field::Absent)
    }

    /// The value, if the key was written with a good value.
    pub(crate) fn get(&self) -> Option<&Set<S, T>> {
        match self {
            Field::Set(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the key was written with a bad value.
    pub(crate) fn is_bad(&self) -> bool {
        matches!(self, Field::Bad(_))
    }

    fn key_span(&self) -> Option<&S> {
        match self {
            Field::Absent => None,
            Field::Bad(s) => Some(s),
            Field::Set(s) => Some(&s.key),
        }
    }
}

/// The value of `affine` as written.
pub(crate) enum RawAffine {
    /// The bare flag or `affine = true`: per channel.
    PerChannel,
    /// `affine = false`.
    Off,
    /// `affine = external`.
    External,
    /// `affine = "C,H,W"`: axis names as written (non-empty, no duplicates).
    List(Vec<String>),
}

/// The stage keys of the top level or of one `chain` stage.
pub(crate) struct RawStage<S> {
    /// The stage name and its span (chain stages only).
    pub name: Option<(String, S)>,
    pub axes: Field<S, Vec<String>>,
    pub groups: Field<S, usize>,
    pub affine: Field<S, RawAffine>,
    pub bias: Field<S, bool>,
    pub center: Field<S, bool>,
    pub eps: Field<S, f64>,
    pub eps_mode: Field<S, EpsMode>,
    pub unbiased: Field<S, bool>,
    pub running_stats: Field<S, bool>,
    pub momentum: Field<S, Momentum>,
    /// An unknown key that looks like a misspelled `axes` was written (so a missing `axes`
    /// is not reported a second time).
    pub axes_misspelled: bool,
}

impl<S> RawStage<S> {
    fn new(name: Option<(String, S)>) -> Self {
        RawStage {
            name,
            axes: Field::Absent,
            groups: Field::Absent,
            affine: Field::Absent,
            bias: Field::Absent,
            center: Field::Absent,
            eps: Field::Absent,
            eps_mode: Field::Absent,
            unbiased: Field::Absent,
            running_stats: Field::Absent,
            momentum: Field::Absent,
            axes_misspelled: false,
        }
    }

    /// The stage keys that were written, with their key spans, in table order.
    pub(crate) fn present_keys(&self) -> Vec<(Key, &S)> {
        let all: [(Key, Option<&S>); 10] = [
            (Key::Axes, self.axes.key_span()),
            (Key::Groups, self.groups.key_span()),
            (Key::Affine, self.affine.key_span()),
            (Key::Bias, self.bias.key_span()),
            (Key::Center, self.center.key_span()),
            (Key::Eps, self.eps.key_span()),
            (Key::EpsMode, self.eps_mode.key_span()),
            (Key::Unbiased, self.unbiased.key_span()),
            (Key::RunningStats, self.running_stats.key_span()),
            (Key::Momentum, self.momentum.key_span()),
        ];
        all.into_iter()
            .filter_map(|(k, s)| s.map(|s| (k, s)))
            .collect()
    }

    fn has(&self, key: Key) -> bool {
        match key {
            Key::Axes => self.axes.is_present(),
            Key::Groups => self.groups.is_present(),
            Key::Affine => self.affine.is_present(),
            Key::Bias => self.bias.is_present(),
            Key::Center => self.center.is_present(),
            Key::Eps => self.eps.is_present(),
            Key::EpsMode => self.eps_mode.is_present(),
            Key::Unbiased => self.unbiased.is_present(),
            Key::RunningStats => self.running_stats.is_present(),
            Key::Momentum => self.momentum.is_present(),
            Key::Input | Key::Chain => false,
        }
    }
}

/// The whole declaration as written, plus the syntax errors found so far.
pub(crate) struct Raw<S> {
    /// Errors found while parsing (check appends its own).
    pub errors: Vec<Error<S>>,
    /// `input = "..."`, resolved into axes (valid names, sizes, no duplicates, rank ≤ 8).
    pub input: Field<S, Vec<Axis>>,
    /// The stage keys written at the top level.
    pub top: RawStage<S>,
    /// `chain(...)`: its stages (those whose syntax was usable).
    pub chain: Field<S, Vec<RawStage<S>>>,
}

/// Parse the tokens inside `#[norm(...)]`. Always returns a [`Raw`]; syntax errors are in
/// [`Raw::errors`] (the `Result` is for symmetry with `check`).
pub(crate) fn parse<S: Clone>(tokens: &[TokenTree<S>], _whole: S) -> Result<Raw<S>, Vec<Error<S>>> {
    let mut p = Parser { errors: Vec::new() };
    let mut raw = Raw {
        errors: Vec::new(),
        input: Field::Absent,
        top: RawStage::new(None),
        chain: Field::Absent,
    };
    p.items(
        tokens,
        Level::Top(&mut raw.input, &mut raw.chain),
        &mut raw.top,
    );
    raw.errors = p.errors;
    Ok(raw)
}

/// Where a list of items is being parsed.
enum Level<'a, S> {
    /// The top level: `input` and `chain` go here.
    Top(
        &'a mut Field<S, Vec<Axis>>,
        &'a mut Field<S, Vec<RawStage<S>>>,
    ),
    /// Inside the stage with this name.
    Stage(String),
}

struct Parser<S> {
    errors: Vec<Error<S>>,
}

/// A short description of a token for "found ..." messages.
fn describe<S>(tok: &TokenTree<S>) -> String {
    match tok {
        TokenTree::Ident { name, .. } => format!("`{name}`"),
        TokenTree::Punct { ch, .. } => format!("`{ch}`"),
        TokenTree::Literal { lit, .. } => format!("`{}`", lit.text),
        TokenTree::Group { delimiter, .. } => match delimiter {
            Delimiter::Parenthesis => "`(...)`".to_string(),
            Delimiter::Bracket => "`[...]`".to_string(),
            Delimiter::Brace => "`{...}`".to_string(),
        },
    }
}

fn is_punct<S>(tok: Option<&TokenTree<S>>, c: char) -> bool {
    matches!(tok, Some(TokenTree::Punct { ch, .. }) if *ch == c)
}

/// A value after `key =`: the tokens up to (not including) the next `,`.
struct Value<'t, S> {
    /// A leading `-`, if any.
    minus: bool,
    /// The value token (after the optional `-`).
    tok: &'t TokenTree<S>,
}

/// Example values, used in "expected ..." messages.
fn example(key: Key) -> &'static str {
    match key {
        Key::Input => "input = \"N,C,H,W\"",
        Key::Axes => "axes = \"C,H,W\"",
        Key::Groups => "groups = 32",
        Key::Affine => "affine = \"C\"",
        Key::Bias => "bias = false",
        Key::Center => "center = false",
        Key::Eps => "eps = 1e-5",
        Key::EpsMode => "eps_mode = \"std\"",
        Key::Unbiased => "unbiased",
        Key::RunningStats => "running_stats",
        Key::Momentum => "momentum = 0.1",
        Key::Chain => "chain(bn(axes = \"N,H,W\"), gn(axes = \"C,H,W\", groups = 2))",
    }
}

impl<S: Clone> Parser<S> {
    fn error(&mut self, span: S, message: String) {
        self.errors.push(Error { span, message });
    }

    /// Parse comma-separated items into `stage` (and, at the top, `input`/`chain`).
    fn items(&mut self, tokens: &[TokenTree<S>], mut level: Level<'_, S>, stage: &mut RawStage<S>) {
        let mut i = 0;
        while i < tokens.len() {
            let tok = &tokens[i];
            let (name, key_span) = match tok {
                TokenTree::Ident { name, span } => (name.as_str(), span.clone()),
                TokenTree::Punct { ch: ',', span } => {
                    self.error(span.clone(), "expected a key before `,`".to_string());
                    i += 1;
                    continue;
                }
                other => {
                    self.error(
                        other.span(),
                        format!("expected a key such as `axes`, found {}", describe(other)),
                    );
                    i = skip_to_comma(tokens, i);
                    continue;
                }
            };
            i += 1;
            let key = self.resolve_key(name, &key_span, &level);
            if Key::from_name(name).is_none()
                && keys::suggest_key(name, matches!(level, Level::Stage(_))) == Some("axes")
            {
                stage.axes_misspelled = true;
            }
            // What follows the key: `=` value, a group (chain), or `,`/end (a flag).
            let next = tokens.get(i);
            let mut value: Option<Value<'_, S>> = None;
            let mut group: Option<&[TokenTree<S>]> = None;
            let mut group_span = None;
            match next {
                None | Some(TokenTree::Punct { ch: ',', .. }) => {}
                Some(TokenTree::Punct {
                    ch: '=',
                    span: eq_span,
                }) => {
                    i += 1;
                    let minus = is_punct(tokens.get(i), '-');
                    let minus_span = tokens.get(i).map(TokenTree::span);
                    if minus {
                        i += 1;
                    }
                    match tokens.get(i) {
                        None | Some(TokenTree::Punct { ch: ',', .. }) => {
                            let span = if minus { minus_span } else { None };
                            self.error(
                                span.unwrap_or_else(|| eq_span.clone()),
                                if minus {
                                    format!("expected a number after `{name} = -`")
                                } else {
                                    format!("expected a value after `{name} =`")
                                },
                            );
                            // Remember the key so that it is not also reported missing.
                            if let Some(key) = key {
                                self.mark_bad(key, key_span.clone(), &mut level, stage);
                            }
                            i = skip_to_comma(tokens, i);
                            i = step_comma(tokens, i);
                            continue;
                        }
                        Some(tok) => {
                            value = Some(Value { minus, tok });
                            i += 1;
                        }
                    }
                }
                Some(TokenTree::Group {
                    delimiter: Delimiter::Parenthesis,
                    inner,
                    span,
                }) => {
                    group = Some(inner);
                    group_span = Some(span.clone());
                    i += 1;
                }
                Some(other) => {
                    self.error(
                        other.span(),
                        format!(
                            "expected `=` or `,` after `{name}`, found {}",
                            describe(other)
                        ),
                    );
                    if let Some(key) = key {
                        self.mark_bad(key, key_span.clone(), &mut level, stage);
                    }
                    i = skip_to_comma(tokens, i);
                    i = step_comma(tokens, i);
                    continue;
                }
            }
            if let Some(key) = key {
                if let Some(gs) = group_span.clone().filter(|_| key != Key::Chain) {
                    self.error(
                        gs,
                        format!("`{name}` does not take parentheses; write {}", example(key)),
                    );
                    self.mark_bad(key, key_span.clone(), &mut level, stage);
                } else {
                    let consumed = self.key_value(
                        key,
                        key_span.clone(),
                        value.as_ref(),
                        group.map(|g| (g, group_span.clone().unwrap_or(key_span.clone()))),
                        &mut level,
                        stage,
                        &tokens[i..],
                    );
                    i += consumed;
                }
            }
            // After the item: `,` or the end. Anything else is a missing comma.
            match tokens.get(i) {
                None => {}
                Some(TokenTree::Punct { ch: ',', .. }) => i += 1,
                Some(other) => {
                    let what = if value.is_some() {
                        format!("after the value of `{name}`")
                    } else {
                        format!("after `{name}`")
                    };
                    self.error(
                        other.span(),
                        format!("expected `,` {what}, found {}", describe(other)),
                    );
                    // A missing comma before another `key ...`: go on with that key.
                    if !matches!(other, TokenTree::Ident { .. }) {
                        i = skip_to_comma(tokens, i);
                        i = step_comma(tokens, i);
                    }
                }
            }
        }
    }

    /// Resolve a key name at this level; report unknown or misplaced keys and duplicates.
    /// `None`: the item is to be skipped (its value is still consumed by the caller).
    fn resolve_key(&mut self, name: &str, span: &S, level: &Level<'_, S>) -> Option<Key> {
        let in_stage = matches!(level, Level::Stage(_));
        let Some(key) = Key::from_name(name) else {
            let hint = keys::suggest_key(name, in_stage)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| ";".to_string());
            let place = match level {
                Level::Stage(stage) => format!(" in stage `{stage}`"),
                Level::Top(..) => String::new(),
            };
            self.error(
                span.clone(),
                format!(
                    "unknown key `{name}`{place}{hint} valid keys: {}",
                    keys::valid_keys(in_stage)
                ),
            );
            return None;
        };
        if let Level::Stage(stage) = level {
            match key {
                Key::Input => {
                    self.error(
                        span.clone(),
                        format!(
                            "`input` belongs at the top level, not inside stage `{stage}`: \
                             all stages of a chain share one input"
                        ),
                    );
                    return None;
                }
                Key::Chain => {
                    self.error(
                        span.clone(),
                        format!("`chain` cannot be nested inside stage `{stage}`"),
                    );
                    return None;
                }
                _ => {}
            }
        }
        Some(key)
    }

    /// Record that `key` was written with a bad value (unless it was already written).
    fn mark_bad(
        &mut self,
        key: Key,
        key_span: S,
        level: &mut Level<'_, S>,
        stage: &mut RawStage<S>,
    ) {
        if self.duplicate(key, &key_span, level, stage) {
            return;
        }
        let k = key_span;
        match key {
            Key::Input | Key::Chain => {
                if let Level::Top(input, chain) = level {
                    if key == Key::Input {
                        **input = Field::Bad(k);
                    } else {
                        **chain = Field::Bad(k);
                    }
                }
            }
            Key::Axes => stage.axes = Field::Bad(k),
            Key::Groups => stage.groups = Field::Bad(k),
            Key::Affine => stage.affine = Field::Bad(k),
            Key::Bias => stage.bias = Field::Bad(k),
            Key::Center => stage.center = Field::Bad(k),
            Key::Eps => stage.eps = Field::Bad(k),
            Key::EpsMode => stage.eps_mode = Field::Bad(k),
            Key::Unbiased => stage.unbiased = Field::Bad(k),
            Key::RunningStats => stage.running_stats = Field::Bad(k),
            Key::Momentum => stage.momentum = Field::Bad(k),
        }
    }

    /// Report a duplicate key; `true` if `key` was already written at this level.
    fn duplicate(&mut self, key: Key, span: &S, level: &Level<'_, S>, stage: &RawStage<S>) -> bool {
        let present = match (key, level) {
            (Key::Input, Level::Top(input, _)) => input.is_present(),
            (Key::Chain, Level::Top(_, chain)) => chain.is_present(),
            _ => stage.has(key),
        };
        if present {
            self.error(span.clone(), format!("duplicate key `{}`", key.name()));
        }
        present
    }

    /// Handle one known key with its value/group/flag form. Returns how many tokens after
    /// the value it consumed (for the unquoted-axis-list recovery).
    #[allow(clippy::too_many_arguments)]
    fn key_value(
        &mut self,
        key: Key,
        key_span: S,
        value: Option<&Value<'_, S>>,
        group: Option<(&[TokenTree<S>], S)>,
        level: &mut Level<'_, S>,
        stage: &mut RawStage<S>,
        after: &[TokenTree<S>],
    ) -> usize {
        if self.duplicate(key, &key_span, level, stage) {
            return 0;
        }
        let name = key.name();
        let mut consumed = 0;
        macro_rules! store {
            ($field:expr, $result:expr) => {{
                let result: Result<(_, S), ()> = $result;
                $field = match result {
                    Ok((value, span)) => Field::Set(Set {
                        value,
                        key: key_span.clone(),
                        span,
                    }),
                    Err(()) => Field::Bad(key_span.clone()),
                };
            }};
        }
        match key {
            Key::Chain => {
                let Level::Top(_, chain) = level else {
                    return 0;
                };
                **chain = match group {
                    Some((inner, span)) => self.chain(inner, span, key_span),
                    None => {
                        let at = value.map_or(key_span.clone(), |v| v.tok.span());
                        self.error(
                            at,
                            format!(
                                "`chain` lists stages in parentheses, e.g. {}",
                                example(Key::Chain)
                            ),
                        );
                        Field::Bad(key_span)
                    }
                };
            }
            Key::Input => {
                let result = self.string_value(key, &key_span, value, after, &mut consumed);
                let result = result
                    .and_then(|(s, span)| self.input_axes(&s, &span).map(|axes| (axes, span)));
                if let Level::Top(input, _) = level {
                    store!(**input, result);
                }
            }
            Key::Axes => {
                let result = self.string_value(key, &key_span, value, after, &mut consumed);
                let result =
                    result.and_then(|(s, span)| self.axis_list(&s, &span, key).map(|l| (l, span)));
                store!(stage.axes, result);
            }
            Key::Affine => {
                let result = match value {
                    None => Ok((RawAffine::PerChannel, key_span.clone())),
                    Some(v) => match v.tok {
                        TokenTree::Ident { name: id, span } if !v.minus => match id.as_str() {
                            "true" => Ok((RawAffine::PerChannel, span.clone())),
                            "false" => Ok((RawAffine::Off, span.clone())),
                            "external" => Ok((RawAffine::External, span.clone())),
                            _ => {
                                let hint =
                                    keys::closest(&id.to_lowercase(), ["external"].into_iter())
                                        .map(|s| format!("; did you mean `{s}`?"))
                                        .unwrap_or_default();
                                self.error(
                                    span.clone(),
                                    format!(
                                        "expected `external`, `true`, `false` or an axis list for \
                                         `affine`, e.g. affine = \"C\"; found `{id}`{hint}"
                                    ),
                                );
                                Err(())
                            }
                        },
                        TokenTree::Literal {
                            lit:
                                Literal {
                                    kind: LitKind::Str(s),
                                    ..
                                },
                            span,
                        } if !v.minus => self
                            .axis_list(s, span, key)
                            .map(|l| (RawAffine::List(l), span.clone())),
                        other => {
                            self.error(
                                other.span(),
                                format!(
                                    "expected `external`, `true`, `false` or an axis list for \
                                     `affine`, e.g. affine = \"C\"; found {}",
                                    found(v)
                                ),
                            );
                            Err(())
                        }
                    },
                };
                store!(stage.affine, result);
            }
            Key::Groups => {
                let result = match value {
                    None => {
                        self.error(
                            key_span.clone(),
                            format!("`groups` needs a value, e.g. {}", example(key)),
                        );
                        Err(())
                    }
                    Some(v) => match &v.tok {
                        TokenTree::Literal { lit, span } => match lit.kind {
                            LitKind::Int(n) if !v.minus && n >= 1 && n <= usize::MAX as u128 => {
                                Ok((n as usize, span.clone()))
                            }
                            LitKind::Int(_) | LitKind::Float(_) => {
                                self.error(
                                    span.clone(),
                                    format!("`groups` must be an integer ≥ 1, got {}", signed(v)),
                                );
                                Err(())
                            }
                            _ => {
                                self.error(
                                    span.clone(),
                                    format!(
                                        "expected an integer for `groups`, e.g. {}; found {}",
                                        example(key),
                                        found(v)
                                    ),
                                );
                                Err(())
                            }
                        },
                        other => {
                            self.error(
                                other.span(),
                                format!(
                                    "expected an integer for `groups`, e.g. {}; found {}",
                                    example(key),
                                    found(v)
                                ),
                            );
                            Err(())
                        }
                    },
                };
                store!(stage.groups, result);
            }
            Key::Bias | Key::Center => {
                let result = match value {
                    None => {
                        self.error(
                            key_span.clone(),
                            format!(
                                "`{name}` needs a value: {name} = true or {name} = false \
                                 (the default is true)"
                            ),
                        );
                        Err(())
                    }
                    Some(v) => self.bool_value(key, v),
                };
                if key == Key::Bias {
                    store!(stage.bias, result);
                } else {
                    store!(stage.center, result);
                }
            }
            Key::Unbiased | Key::RunningStats => {
                let result = match value {
                    None => Ok((true, key_span.clone())),
                    Some(v) => self.bool_value(key, v),
                };
                if key == Key::Unbiased {
                    store!(stage.unbiased, result);
                } else {
                    store!(stage.running_stats, result);
                }
            }
            Key::Eps => {
                let result = match self.number_value(key, &key_span, value) {
                    Ok((x, span, text)) => {
                        if x.is_finite() && x >= 0.0 {
                            // `-0` is zero.
                            Ok((x.abs(), span))
                        } else {
                            self.error(
                                span,
                                format!("`eps` must be a finite number ≥ 0, got {text}"),
                            );
                            Err(())
                        }
                    }
                    Err(()) => Err(()),
                };
                store!(stage.eps, result);
            }
            Key::EpsMode => {
                let result = match value {
                    Some(Value {
                        minus: false,
                        tok:
                            TokenTree::Literal {
                                lit:
                                    Literal {
                                        kind: LitKind::Str(s),
                                        text,
                                    },
                                span,
                            },
                    }) => match s.as_str() {
                        "var" => Ok((EpsMode::Var, span.clone())),
                        "std" => Ok((EpsMode::Std, span.clone())),
                        _ => {
                            self.error(
                                span.clone(),
                                format!("`eps_mode` must be \"var\" or \"std\", got {text}"),
                            );
                            Err(())
                        }
                    },
                    _ => {
                        let at = value.map_or(key_span.clone(), |v| v.tok.span());
                        let got = value
                            .map(found)
                            .map(|f| format!("; found {f}"))
                            .unwrap_or_default();
                        self.error(
                            at,
                            format!(
                                "expected a string literal for `eps_mode`, \"var\" or \"std\", \
                                 e.g. eps_mode = \"std\"{got}"
                            ),
                        );
                        Err(())
                    }
                };
                store!(stage.eps_mode, result);
            }
            Key::Momentum => {
                let msg = |got: &str| {
                    format!("`momentum` must be in (0, 1] or \"cumulative\", got {got}")
                };
                let result = match value {
                    Some(Value {
                        minus: false,
                        tok:
                            TokenTree::Literal {
                                lit:
                                    Literal {
                                        kind: LitKind::Str(s),
                                        text,
                                    },
                                span,
                            },
                    }) => {
                        if s == "cumulative" {
                            Ok((Momentum::Cumulative, span.clone()))
                        } else {
                            self.error(span.clone(), msg(text));
                            Err(())
                        }
                    }
                    _ => match self.number_value(key, &key_span, value) {
                        Ok((m, span, text)) => {
                            if m > 0.0 && m <= 1.0 {
                                Ok((Momentum::Exponential(m), span))
                            } else {
                                self.error(span, msg(&text));
                                Err(())
                            }
                        }
                        Err(()) => Err(()),
                    },
                };
                store!(stage.momentum, result);
            }
        }
        consumed
    }

    /// `key = true|false`.
    fn bool_value(&mut self, key: Key, v: &Value<'_, S>) -> Result<(bool, S), ()> {
        match v.tok {
            TokenTree::Ident { name, span } if !v.minus && (name == "true" || name == "false") => {
                Ok((name == "true", span.clone()))
            }
            other => {
                let name = key.name();
                self.error(
                    other.span(),
                    format!(
                        "expected `true` or `false` for `{name}`; found {}",
                        found(v)
                    ),
                );
                Err(())
            }
        }
    }

    /// A number (int or float literal, optionally negated): value, span, text as written.
    fn number_value(
        &mut self,
        key: Key,
        key_span: &S,
        value: Option<&Value<'_, S>>,
    ) -> Result<(f64, S, String), ()> {
        let name = key.name();
        let Some(v) = value else {
            self.error(
                key_span.clone(),
                format!("`{name}` needs a value, e.g. {}", example(key)),
            );
            return Err(());
        };
        let number = match v.tok {
            TokenTree::Literal { lit, span } => match lit.kind {
                LitKind::Int(n) => Some((n as f64, span.clone())),
                LitKind::Float(x) => Some((x, span.clone())),
                _ => None,
            },
            _ => None,
        };
        match number {
            Some((x, span)) => Ok((if v.minus { -x } else { x }, span, signed(v))),
            None => {
                let extra = if key == Key::Momentum {
                    " or \"cumulative\""
                } else {
                    ""
                };
                self.error(
                    v.tok.span(),
                    format!(
                        "expected a number{extra} for `{name}`, e.g. {}; found {}",
                        example(key),
                        found(v)
                    ),
                );
                Err(())
            }
        }
    }

    /// A string literal value (for `input`, `axes`). On an unquoted list such as
    /// `axes = C, H, W`, the following non-key identifiers are swallowed (counted in
    /// `consumed`) and the message shows the quoted form.
    fn string_value(
        &mut self,
        key: Key,
        key_span: &S,
        value: Option<&Value<'_, S>>,
        after: &[TokenTree<S>],
        consumed: &mut usize,
    ) -> Result<(String, S), ()> {
        let name = key.name();
        let Some(v) = value else {
            self.error(
                key_span.clone(),
                format!(
                    "expected a string literal for `{name}`, e.g. {}",
                    example(key)
                ),
            );
            return Err(());
        };
        match v.tok {
            TokenTree::Literal {
                lit:
                    Literal {
                        kind: LitKind::Str(s),
                        ..
                    },
                span,
            } if !v.minus => Ok((s.clone(), span.clone())),
            TokenTree::Ident { name: first, span } if !v.minus => {
                // `axes = C, H, W`: gather the unquoted list for the message.
                let mut list = vec![first.clone()];
                let mut k = 0;
                while let (
                    Some(TokenTree::Punct { ch: ',', .. }),
                    Some(TokenTree::Ident { name: id, .. }),
                ) = (after.get(k), after.get(k + 1))
                {
                    let is_item = Key::from_name(id).is_some()
                        || is_punct(after.get(k + 2), '=')
                        || matches!(after.get(k + 2), Some(TokenTree::Group { .. }));
                    if is_item {
                        break;
                    }
                    list.push(id.clone());
                    k += 2;
                }
                *consumed = k;
                self.error(
                    span.clone(),
                    format!(
                        "expected a string literal for `{name}`, e.g. {}; found `{}` (write {name} = \"{}\")",
                        example(key),
                        list.join(", "),
                        list.join(",")
                    ),
                );
                Err(())
            }
            other => {
                self.error(
                    other.span(),
                    format!(
                        "expected a string literal for `{name}`, e.g. {}; found {}",
                        example(key),
                        found(v)
                    ),
                );
                Err(())
            }
        }
    }

    /// Split a comma-separated list inside a string into trimmed entries (possibly empty).
    fn split_list(s: &str) -> Vec<&str> {
        s.split(',').map(str::trim).collect()
    }

    /// `input = "N,C=64,H,W"`.
    fn input_axes(&mut self, s: &str, span: &S) -> Result<Vec<Axis>, ()> {
        if s.trim().is_empty() {
            self.error(
                span.clone(),
                "empty `input`: name the axes of the input tensor, e.g. input = \"N,C,H,W\"".into(),
            );
            return Err(());
        }
        let mut axes: Vec<Axis> = Vec::new();
        let mut ok = true;
        for entry in Self::split_list(s) {
            let (name, size) = match entry.split_once('=') {
                Some((n, sz)) => (n.trim(), Some(sz.trim())),
                None => (entry, None),
            };
            if name.is_empty() {
                self.error(span.clone(), format!("empty axis name in `input` \"{s}\""));
                ok = false;
                continue;
            }
            if !keys::is_ascii_ident(name) {
                self.error(
                    span.clone(),
                    format!(
                        "axis name `{name}` in `input` is not an identifier (use letters, digits \
                         and `_`, e.g. `C` or `kh`)"
                    ),
                );
                ok = false;
                continue;
            }
            let lower = name.to_ascii_lowercase();
            if keys::is_keyword(&lower) {
                self.error(
                    span.clone(),
                    format!(
                        "axis name `{name}` in `input` cannot be used: its lower-case form `{lower}` \
                         (the name of its `new` argument) is a Rust keyword"
                    ),
                );
                ok = false;
                continue;
            }
            let size = match size {
                None => None,
                Some(text) => {
                    let digits: String = text.chars().filter(|&c| c != '_').collect();
                    match digits.parse::<usize>() {
                        Ok(n) if n >= 1 && !text.starts_with('_') && !text.starts_with('+') => {
                            Some(n)
                        }
                        _ => {
                            self.error(
                                span.clone(),
                                format!(
                                    "the size of `{name}` in `input` must be an integer ≥ 1, got `{text}`"
                                ),
                            );
                            ok = false;
                            None
                        }
                    }
                }
            };
            if axes.iter().any(|a| a.name == name) {
                self.error(span.clone(), format!("duplicate axis `{name}` in `input`"));
                ok = false;
                continue;
            }
            if let Some(other) = axes.iter().find(|a| a.name.to_ascii_lowercase() == lower) {
                self.error(
                    span.clone(),
                    format!(
                        "axes `{}` and `{name}` in `input` differ only in case; both would name \
                         the `new` argument `{lower}`",
                        other.name
                    ),
                );
                ok = false;
                continue;
            }
            axes.push(Axis {
                name: Cow::Owned(name.to_string()),
                size,
            });
        }
        if axes.len() > MAX_RANK {
            self.error(
                span.clone(),
                format!(
                    "`input` has {} axes; at most {MAX_RANK} are supported",
                    axes.len()
                ),
            );
            ok = false;
        }
        if ok {
            Ok(axes)
        } else {
            Err(())
        }
    }

    /// An axis list of `axes` or `affine` (names only; no duplicates; non-empty).
    fn axis_list(&mut self, s: &str, span: &S, key: Key) -> Result<Vec<String>, ()> {
        let name = key.name();
        if s.trim().is_empty() {
            let what = if key == Key::Axes {
                "say which axes the statistics run over, e.g. axes = \"C,H,W\""
            } else {
                "name the axes that index the parameters, e.g. affine = \"C\", or write the bare \
                 flag `affine`"
            };
            self.error(span.clone(), format!("empty `{name}`: {what}"));
            return Err(());
        }
        let mut out: Vec<String> = Vec::new();
        let mut ok = true;
        for entry in Self::split_list(s) {
            if entry.is_empty() {
                self.error(span.clone(), format!("empty axis name in `{name}` \"{s}\""));
                ok = false;
            } else if entry.contains('=') {
                self.error(
                    span.clone(),
                    format!(
                        "`{name}` lists axis names only, got `{entry}`; fix sizes in `input`, \
                         e.g. input = \"N,{}\"",
                        entry.replace(' ', "")
                    ),
                );
                ok = false;
            } else if out.iter().any(|a| a == entry) {
                self.error(
                    span.clone(),
                    format!("duplicate axis `{entry}` in `{name}`"),
                );
                ok = false;
            } else {
                out.push(entry.to_string());
            }
        }
        if ok {
            Ok(out)
        } else {
            Err(())
        }
    }

    /// The inside of `chain( ... )`: `name(keys...)` entries.
    fn chain(
        &mut self,
        tokens: &[TokenTree<S>],
        span: S,
        key_span: S,
    ) -> Field<S, Vec<RawStage<S>>> {
        if tokens.iter().all(|t| is_punct(Some(t), ',')) {
            self.error(
                span,
                format!(
                    "empty `chain`: list at least one stage, e.g. {}",
                    example(Key::Chain)
                ),
            );
            return Field::Bad(key_span);
        }
        let mut stages: Vec<RawStage<S>> = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Punct { ch: ',', span } => {
                    self.error(span.clone(), "expected a stage before `,`".into());
                    i += 1;
                    continue;
                }
                TokenTree::Ident {
                    name,
                    span: name_span,
                } => {
                    let next = tokens.get(i + 1);
                    match next {
                        Some(TokenTree::Group {
                            delimiter: Delimiter::Parenthesis,
                            inner,
                            ..
                        }) => {
                            self.stage_name(name, name_span, &stages);
                            if stages.len() == crate::MAX_STAGES {
                                self.error(
                                    name_span.clone(),
                                    format!("a chain has at most {} stages", crate::MAX_STAGES),
                                );
                            }
                            let mut stage = RawStage::new(Some((name.clone(), name_span.clone())));
                            self.items(inner, Level::Stage(name.clone()), &mut stage);
                            stages.push(stage);
                            i += 2;
                        }
                        _ if Key::from_name(name).is_some() && is_punct(next, '=') => {
                            self.error(
                                name_span.clone(),
                                format!(
                                    "`{name}` inside `chain(...)` belongs to a named stage, e.g. \
                                     chain(bn({name} = ...), ...)"
                                ),
                            );
                            i = skip_to_comma(tokens, i);
                        }
                        _ => {
                            let found = next
                                .map(describe)
                                .map(|d| format!(", found {d}"))
                                .unwrap_or_default();
                            self.error(
                                next.filter(|t| !is_punct(Some(*t), ','))
                                    .map_or(name_span.clone(), TokenTree::span),
                                format!(
                                    "expected `(` after stage name `{name}`, e.g. \
                                     {name}(axes = \"C,H,W\"){found}"
                                ),
                            );
                            i = skip_to_comma(tokens, i);
                        }
                    }
                }
                other => {
                    self.error(
                        other.span(),
                        format!(
                            "expected a stage such as `bn(axes = \"N,H,W\")` inside `chain`, found {}",
                            describe(other)
                        ),
                    );
                    i = skip_to_comma(tokens, i);
                }
            }
            match tokens.get(i) {
                None => {}
                Some(TokenTree::Punct { ch: ',', .. }) => i += 1,
                Some(other) => {
                    self.error(
                        other.span(),
                        format!("expected `,` between stages, found {}", describe(other)),
                    );
                    if !matches!(other, TokenTree::Ident { .. }) {
                        i = skip_to_comma(tokens, i);
                    }
                }
            }
        }
        Field::Set(Set {
            value: stages,
            key: key_span,
            span,
        })
    }

    /// Check a stage name: a lower-case identifier, not `dx`, not a keyword, not repeated.
    fn stage_name(&mut self, name: &str, span: &S, stages: &[RawStage<S>]) {
        let lower_ident =
            keys::is_ascii_ident(name) && !name.chars().any(|c| c.is_ascii_uppercase());
        if !lower_ident {
            let lower = name.to_lowercase();
            let hint = if keys::is_ascii_ident(&lower) {
                format!(", e.g. `{lower}`")
            } else {
                String::new()
            };
            self.error(
                span.clone(),
                format!(
                    "stage name `{name}` must be a lower-case identifier (it names a field){hint}"
                ),
            );
        } else if name == "dx" {
            self.error(
                span.clone(),
                "stage name `dx` is reserved: the generated gradients struct has a field `dx`"
                    .into(),
            );
        } else if keys::is_keyword(name) {
            self.error(
                span.clone(),
                format!("stage name `{name}` is a Rust keyword; choose another name"),
            );
        } else if stages
            .iter()
            .any(|s| s.name.as_ref().is_some_and(|(n, _)| n == name))
        {
            self.error(
                span.clone(),
                format!("duplicate stage name `{name}` in `chain`"),
            );
        }
    }
}

/// The value as written, with its `-`: `-1e-5`.
fn signed<S>(v: &Value<'_, S>) -> String {
    let text = match v.tok {
        TokenTree::Literal { lit, .. } => lit.text.clone(),
        other => describe(other).trim_matches('`').to_string(),
    };
    if v.minus {
        format!("-{text}")
    } else {
        text
    }
}

/// "`value`" for messages.
fn found<S>(v: &Value<'_, S>) -> String {
    match v.tok {
        TokenTree::Group { .. } => describe(v.tok),
        _ => format!("`{}`", signed(v)),
    }
}

/// The index of the next `,` at or after `i` (or the end).
fn skip_to_comma<S>(tokens: &[TokenTree<S>], mut i: usize) -> usize {
    while i < tokens.len() && !is_punct(tokens.get(i), ',') {
        i += 1;
    }
    i
}

/// Step over a `,` at `i`, if there is one.
fn step_comma<S>(tokens: &[TokenTree<S>], i: usize) -> usize {
    if is_punct(tokens.get(i), ',') {
        i + 1
    } else {
        i
    }
}
