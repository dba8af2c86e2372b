//! The readers of key values, one per [`ValueKind`]: each checks the written value against
//! the kind's constraint and reports what would be valid, using the key's row of the table
//! for the key's name, example and the words of its message.

use std::borrow::Cow;

use super::lists::AxisList;
use super::{describe, is_punct, Parser, ValueToken};
use crate::declaration::{AffineValue, Value};
use crate::keys::{Key, KeyInfo, ValueKind};
use crate::suggest::closest;
use crate::token::{LitKind, Literal, TokenTree};

/// A value read: the value and its span, or `Err` after the error was recorded.
type Read<S> = Result<(Value, S), ()>;

/// The value as written, with its `-`: `-1e-5`.
fn signed<S>(v: &ValueToken<'_, S>) -> String {
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
fn found<S>(v: &ValueToken<'_, S>) -> String {
    match v.tok {
        TokenTree::Group { .. } => describe(v.tok),
        _ => format!("`{}`", signed(v)),
    }
}

/// The string literal of `v` with its text as written, unless it is negated.
fn string_literal<'t, S>(v: &ValueToken<'t, S>) -> Option<(&'t str, &'t str, &'t S)> {
    match v.tok {
        TokenTree::Literal {
            lit:
                Literal {
                    kind: LitKind::Str(s),
                    text,
                },
            span,
        } if !v.minus => Some((s.as_str(), text.as_str(), span)),
        _ => None,
    }
}

impl<S: Clone> Parser<S> {
    /// Read the value of the key in row `info` (`None`: the key was written bare).
    /// `after` and `consumed` serve the unquoted-list recovery of string values.
    pub(super) fn read_value(
        &mut self,
        info: &KeyInfo,
        key_span: &S,
        value: Option<&ValueToken<'_, S>>,
        after: &[TokenTree<S>],
        consumed: &mut usize,
    ) -> Read<S> {
        match &info.kind {
            ValueKind::InputAxes => {
                let (s, span) = self.string_value(info, key_span, value, after, consumed)?;
                let axes = self.input_axes(&s, &span)?;
                Ok((Value::InputAxes(Cow::Owned(axes)), span))
            }
            ValueKind::AxisNames { if_empty } => {
                let (s, span) = self.string_value(info, key_span, value, after, consumed)?;
                let list = AxisList {
                    name: info.name,
                    if_empty,
                };
                let names = self.axis_list(&s, &span, list)?;
                Ok((Value::AxisNames(names), span))
            }
            ValueKind::Affine { if_empty } => self.affine_value(info, if_empty, key_span, value),
            ValueKind::Count => self.count_value(info, key_span, value),
            ValueKind::Bool { bare } => match value {
                None => self.bare_flag(info, *bare, key_span),
                Some(v) => self.bool_value(info, v),
            },
            ValueKind::Number {
                accept,
                words,
                must_be,
            } => match value.and_then(string_literal) {
                Some((s, text, span)) if !words.is_empty() => {
                    self.word(info.name, words, must_be, (s, text, span))
                }
                _ => self.number_value(info, (*accept, words, must_be), key_span, value),
            },
            ValueKind::Word { words, must_be } => match value.and_then(string_literal) {
                Some(literal) => self.word(info.name, words, must_be, literal),
                None => {
                    let at = value.map_or(key_span.clone(), |v| v.tok.span());
                    let got = value
                        .map(found)
                        .map(|f| format!("; found {f}"))
                        .unwrap_or_default();
                    let (name, example) = (info.name, info.example);
                    self.error(
                        at,
                        format!(
                            "expected a string literal for `{name}`, {must_be}, e.g. {example}{got}"
                        ),
                    );
                    Err(())
                }
            },
            // `chain` is read by `Parser::chain_item`, never here.
            ValueKind::Stages | ValueKind::Renorm => Err(()),
        }
    }

    /// A string literal that must be one of `words`.
    fn word(
        &mut self,
        name: &str,
        words: &[&'static str],
        must_be: &str,
        (s, text, span): (&str, &str, &S),
    ) -> Read<S> {
        match words.iter().find(|w| **w == s) {
            Some(word) => Ok((Value::Word(word), span.clone())),
            None => {
                self.error(
                    span.clone(),
                    format!("`{name}` must be {must_be}, got {text}"),
                );
                Err(())
            }
        }
    }

    /// A bool key written bare: its `bare` meaning, else an error.
    fn bare_flag(&mut self, info: &KeyInfo, bare: Option<bool>, key_span: &S) -> Read<S> {
        if let Some(b) = bare {
            return Ok((Value::Bool(b), key_span.clone()));
        }
        let name = info.name;
        let default = match info.default {
            Some(Value::Bool(b)) => b,
            _ => true,
        };
        self.error(
            key_span.clone(),
            format!(
                "`{name}` needs a value: {name} = true or {name} = false \
                 (the default is {default})"
            ),
        );
        Err(())
    }

    /// `key = true|false`.
    fn bool_value(&mut self, info: &KeyInfo, v: &ValueToken<'_, S>) -> Read<S> {
        match v.tok {
            TokenTree::Ident { name, span } if !v.minus && (name == "true" || name == "false") => {
                Ok((Value::Bool(name == "true"), span.clone()))
            }
            other => {
                self.error(
                    other.span(),
                    format!(
                        "expected `true` or `false` for `{}`; found {}",
                        info.name,
                        found(v)
                    ),
                );
                Err(())
            }
        }
    }

    /// The value of `key = value`; an error at the key when it has none.
    fn needs_value<'v, 't>(
        &mut self,
        info: &KeyInfo,
        key_span: &S,
        value: Option<&'v ValueToken<'t, S>>,
    ) -> Result<&'v ValueToken<'t, S>, ()> {
        let (name, example) = (info.name, info.example);
        value.ok_or_else(|| {
            self.error(
                key_span.clone(),
                format!("`{name}` needs a value, e.g. {example}"),
            )
        })
    }

    /// `key = n`: an integer ≥ 1.
    fn count_value(
        &mut self,
        info: &KeyInfo,
        key_span: &S,
        value: Option<&ValueToken<'_, S>>,
    ) -> Read<S> {
        let (name, example) = (info.name, info.example);
        let v = self.needs_value(info, key_span, value)?;
        let not_an_integer = format!(
            "expected an integer for `{name}`, e.g. {example}; found {}",
            found(v)
        );
        let TokenTree::Literal { lit, span } = &v.tok else {
            self.error(v.tok.span(), not_an_integer);
            return Err(());
        };
        match lit.kind {
            LitKind::Int(n) if !v.minus && n >= 1 && n <= usize::MAX as u128 => {
                Ok((Value::Count(n as usize), span.clone()))
            }
            LitKind::Int(_) | LitKind::Float(_) => {
                self.error(
                    span.clone(),
                    format!("`{name}` must be an integer ≥ 1, got {}", signed(v)),
                );
                Err(())
            }
            _ => {
                self.error(span.clone(), not_an_integer);
                Err(())
            }
        }
    }

    /// `key = x`: a number (int or float literal, optionally negated) that `accept` accepts.
    fn number_value(
        &mut self,
        info: &KeyInfo,
        (accept, words, must_be): (fn(f64) -> bool, &[&str], &str),
        key_span: &S,
        value: Option<&ValueToken<'_, S>>,
    ) -> Read<S> {
        let (name, example) = (info.name, info.example);
        let v = self.needs_value(info, key_span, value)?;
        let number = match v.tok {
            TokenTree::Literal { lit, span } => match lit.kind {
                LitKind::Int(n) => Some((n as f64, span.clone())),
                LitKind::Float(x) => Some((x, span.clone())),
                _ => None,
            },
            _ => None,
        };
        let Some((x, span)) = number else {
            let or_words: String = words.iter().map(|w| format!(" or \"{w}\"")).collect();
            self.error(
                v.tok.span(),
                format!(
                    "expected a number{or_words} for `{name}`, e.g. {example}; found {}",
                    found(v)
                ),
            );
            return Err(());
        };
        let x = if v.minus { -x } else { x };
        if accept(x) {
            // Accepted numbers are never negative: `abs` only turns `-0` into `0`.
            Ok((Value::Number(x.abs()), span))
        } else {
            self.error(
                span,
                format!("`{name}` must be {must_be}, got {}", signed(v)),
            );
            Err(())
        }
    }

    /// `affine`, `affine = true|false|external`, `affine = "C,H,W"`.
    fn affine_value(
        &mut self,
        info: &KeyInfo,
        if_empty: &'static str,
        key_span: &S,
        value: Option<&ValueToken<'_, S>>,
    ) -> Read<S> {
        let (name, example) = (info.name, info.example);
        let expected = format!(
            "expected `external`, `true`, `false` or an axis list for `{name}`, e.g. {example}"
        );
        let Some(v) = value else {
            return Ok((Value::Affine(AffineValue::PerChannel), key_span.clone()));
        };
        let affine = match v.tok {
            TokenTree::Ident { name: id, span } if !v.minus => match id.as_str() {
                "true" => (AffineValue::PerChannel, span.clone()),
                "false" => (AffineValue::Off, span.clone()),
                "external" => (AffineValue::External, span.clone()),
                _ => {
                    let hint = closest(&id.to_lowercase(), ["external"].into_iter())
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    self.error(span.clone(), format!("{expected}; found `{id}`{hint}"));
                    return Err(());
                }
            },
            _ => match string_literal(v) {
                Some((s, _, span)) => {
                    let names = self.axis_list(s, span, AxisList { name, if_empty })?;
                    (AffineValue::Axes(names), span.clone())
                }
                None => {
                    self.error(v.tok.span(), format!("{expected}; found {}", found(v)));
                    return Err(());
                }
            },
        };
        Ok((Value::Affine(affine.0), affine.1))
    }

    /// A string literal value (for `input`, `axes`). On an unquoted list such as
    /// `axes = C, H, W`, the following non-key identifiers are swallowed (counted in
    /// `consumed`) and the message shows the quoted form.
    fn string_value(
        &mut self,
        info: &KeyInfo,
        key_span: &S,
        value: Option<&ValueToken<'_, S>>,
        after: &[TokenTree<S>],
        consumed: &mut usize,
    ) -> Result<(String, S), ()> {
        let (name, example) = (info.name, info.example);
        let Some(v) = value else {
            self.error(
                key_span.clone(),
                format!("expected a string literal for `{name}`, e.g. {example}"),
            );
            return Err(());
        };
        if let Some((s, _, span)) = string_literal(v) {
            return Ok((s.to_string(), span.clone()));
        }
        match v.tok {
            TokenTree::Ident { name: first, span } if !v.minus => {
                let list = unquoted_list(first, after, consumed);
                self.error(
                    span.clone(),
                    format!(
                        "expected a string literal for `{name}`, e.g. {example}; found `{}` (write {name} = \"{}\")",
                        list.join(", "),
                        list.join(",")
                    ),
                );
            }
            other => {
                self.error(
                    other.span(),
                    format!(
                        "expected a string literal for `{name}`, e.g. {example}; found {}",
                        found(v)
                    ),
                );
            }
        }
        Err(())
    }
}

/// `axes = C, H, W`: the identifiers of an unquoted list, starting with `first`; the ones
/// taken from `after` are counted in `consumed`. An identifier that starts another item (a
/// key, or followed by `=` or a group) ends the list.
fn unquoted_list<S>(first: &str, after: &[TokenTree<S>], consumed: &mut usize) -> Vec<String> {
    let mut list = vec![first.to_string()];
    let mut k = 0;
    while let (Some(TokenTree::Punct { ch: ',', .. }), Some(TokenTree::Ident { name: id, .. })) =
        (after.get(k), after.get(k + 1))
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
    list
}
