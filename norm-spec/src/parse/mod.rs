//! Syntax: token trees → [`Declaration`], a per-key record of what was written, with spans.
//!
//! Checks that need one key only (value types, ranges, axis-list syntax, duplicates) live
//! here, in the reader of the key's value kind ([`values`]); rules that relate several keys
//! live in [`crate::check`]. Parsing never stops at an error: it records the error, skips to
//! the next `,` and goes on, and a key whose value was rejected is remembered as
//! [`Field::Bad`] so that `check` does not pile on.
//!
//! Leniencies (documented in the crate's grammar): `affine = true` is the `affine` flag and
//! `affine = false` means no affine parameters; `unbiased` and `running_stats` accept
//! `= true`/`= false` as well as the bare flag; trailing commas are allowed everywhere
//! (outside strings).

mod chain;
mod lists;
mod renorm;
mod switchable;
mod values;

use crate::declaration::{Declaration, Field, StageKeys, Written};
use crate::keys::{self, Key};
use crate::token::{Delimiter, TokenTree};
use crate::Error;

/// Parse the tokens inside `#[norm(...)]`. Syntax errors are in [`Declaration::errors`].
pub(crate) fn parse<S: Clone>(tokens: &[TokenTree<S>]) -> Declaration<S> {
    let mut parser = Parser { errors: Vec::new() };
    let mut top = StageKeys::new(None);
    let mut chain = Field::Absent;
    parser.items(tokens, Level::Top(&mut chain), &mut top);
    Declaration {
        errors: parser.errors,
        top,
        chain,
    }
}

/// Where a list of items is being parsed.
enum Level<'a, S> {
    /// The top level: `chain` is stored here (`input` with the other keys).
    Top(&'a mut Field<S, Vec<StageKeys<S>>>),
    /// Inside the stage with this name.
    Stage(String),
}

impl<S> Level<'_, S> {
    fn in_stage(&self) -> bool {
        matches!(self, Level::Stage(_))
    }
}

/// The value after `key =`: an optional `-` and the one token up to the next `,`.
struct ValueToken<'t, S> {
    /// A leading `-`, if any.
    minus: bool,
    /// The value token (after the optional `-`).
    tok: &'t TokenTree<S>,
}

/// What follows a key.
enum Form<'t, S> {
    /// Nothing: `,` or the end (a bare flag).
    Flag,
    /// `= value`.
    Value(ValueToken<'t, S>),
    /// A parenthesized group (`chain(...)`).
    Group { inner: &'t [TokenTree<S>], span: S },
}

impl<'t, S> Form<'t, S> {
    fn value(&self) -> Option<&ValueToken<'t, S>> {
        match self {
            Form::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// One known key and what follows it.
struct KeyItem<'f, 't, S> {
    key: Key,
    key_span: S,
    form: &'f Form<'t, S>,
    /// The tokens after the item (for the unquoted-axis-list recovery).
    after: &'t [TokenTree<S>],
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

impl<S: Clone> Parser<S> {
    fn error(&mut self, span: S, message: String) {
        self.errors.push(Error { span, message });
    }

    /// Parse comma-separated items into `keys` (and, at the top, `chain`).
    fn items(&mut self, tokens: &[TokenTree<S>], mut level: Level<'_, S>, keys: &mut StageKeys<S>) {
        let mut i = 0;
        while i < tokens.len() {
            let Some((name, key_span)) = self.key_token(tokens, &mut i) else {
                continue;
            };
            let key = self.resolve_key(name, &key_span, &level);
            if Key::from_name(name).is_none()
                && keys::suggest_key(name, level.in_stage()) == Some("axes")
            {
                keys.axes_misspelled = true;
            }
            let Some(form) = self.form(tokens, &mut i, name) else {
                // Remember the key so that it is not also reported missing.
                if let Some(key) = key {
                    self.mark_bad(key, key_span, &mut level, keys);
                }
                i = step_comma(tokens, skip_to_comma(tokens, i));
                continue;
            };
            if let Some(key) = key {
                let item = KeyItem {
                    key,
                    key_span,
                    form: &form,
                    after: &tokens[i..],
                };
                i += self.key_item(item, &mut level, keys);
            }
            self.end_of_item(tokens, &mut i, name, form.value().is_some());
        }
    }

    /// The key at `i`, stepping over it; on anything else, report it and skip it.
    fn key_token<'t>(&mut self, tokens: &'t [TokenTree<S>], i: &mut usize) -> Option<(&'t str, S)> {
        match &tokens[*i] {
            TokenTree::Ident { name, span } => {
                *i += 1;
                Some((name.as_str(), span.clone()))
            }
            TokenTree::Punct { ch: ',', span } => {
                self.error(span.clone(), "expected a key before `,`".to_string());
                *i += 1;
                None
            }
            other => {
                self.error(
                    other.span(),
                    format!("expected a key such as `axes`, found {}", describe(other)),
                );
                *i = skip_to_comma(tokens, *i);
                None
            }
        }
    }

    /// What follows the key `name` at `i`: `=` value, a group, or `,`/end (a flag). `None`
    /// (after reporting it) when that is malformed; `i` is then inside the broken item.
    fn form<'t>(
        &mut self,
        tokens: &'t [TokenTree<S>],
        i: &mut usize,
        name: &str,
    ) -> Option<Form<'t, S>> {
        match tokens.get(*i) {
            None | Some(TokenTree::Punct { ch: ',', .. }) => Some(Form::Flag),
            Some(TokenTree::Punct {
                ch: '=',
                span: eq_span,
            }) => {
                *i += 1;
                let minus = is_punct(tokens.get(*i), '-');
                let minus_span = tokens.get(*i).map(TokenTree::span);
                if minus {
                    *i += 1;
                }
                match tokens.get(*i) {
                    None | Some(TokenTree::Punct { ch: ',', .. }) => {
                        let (span, message) = match minus_span.filter(|_| minus) {
                            Some(span) => (span, format!("expected a number after `{name} = -`")),
                            None => (
                                eq_span.clone(),
                                format!("expected a value after `{name} =`"),
                            ),
                        };
                        self.error(span, message);
                        None
                    }
                    Some(tok) => {
                        *i += 1;
                        Some(Form::Value(ValueToken { minus, tok }))
                    }
                }
            }
            Some(TokenTree::Group {
                delimiter: Delimiter::Parenthesis,
                inner,
                span,
            }) => {
                *i += 1;
                Some(Form::Group {
                    inner,
                    span: span.clone(),
                })
            }
            Some(other) => {
                self.error(
                    other.span(),
                    format!(
                        "expected `=` or `,` after `{name}`, found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    /// After an item: `,` or the end. Anything else is a missing comma.
    fn end_of_item(&mut self, tokens: &[TokenTree<S>], i: &mut usize, name: &str, had_value: bool) {
        match tokens.get(*i) {
            None => {}
            Some(TokenTree::Punct { ch: ',', .. }) => *i += 1,
            Some(other) => {
                let what = if had_value {
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
                    *i = step_comma(tokens, skip_to_comma(tokens, *i));
                }
            }
        }
    }

    /// Resolve a key name at this level; report unknown or misplaced keys.
    /// `None`: the item is to be skipped (its value is still consumed by the caller).
    fn resolve_key(&mut self, name: &str, span: &S, level: &Level<'_, S>) -> Option<Key> {
        let Some(key) = Key::from_name(name) else {
            self.unknown_key(name, span, level);
            return None;
        };
        if let Level::Stage(stage) = level {
            if !key.info().in_stage {
                let message = if key == Key::Input {
                    format!(
                        "`input` belongs at the top level, not inside stage `{stage}`: \
                         all stages of a chain share one input"
                    )
                } else {
                    format!("`{name}` cannot be nested inside stage `{stage}`")
                };
                self.error(span.clone(), message);
                return None;
            }
        }
        Some(key)
    }

    /// "unknown key `x`; did you mean `axes`? valid keys: ..."
    fn unknown_key(&mut self, name: &str, span: &S, level: &Level<'_, S>) {
        let in_stage = level.in_stage();
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
    }

    /// Record that `key` was written with a bad value (unless it was already written).
    fn mark_bad(
        &mut self,
        key: Key,
        key_span: S,
        level: &mut Level<'_, S>,
        keys: &mut StageKeys<S>,
    ) {
        if self.duplicate(key, &key_span, level, keys) {
            return;
        }
        match (key, level) {
            (Key::Chain, Level::Top(chain)) => **chain = Field::Bad(key_span),
            (Key::Chain, Level::Stage(_)) => {}
            _ => keys.set(key, Field::Bad(key_span)),
        }
    }

    /// Report a duplicate key; `true` if `key` was already written at this level.
    fn duplicate(&mut self, key: Key, span: &S, level: &Level<'_, S>, keys: &StageKeys<S>) -> bool {
        let present = match (key, level) {
            (Key::Chain, Level::Top(chain)) => chain.is_present(),
            (Key::Chain, Level::Stage(_)) => false,
            _ => keys.field(key).is_present(),
        };
        if present {
            self.error(span.clone(), format!("duplicate key `{}`", key.name()));
        }
        present
    }

    /// One known key with its value, group or flag form: reads the value with the reader of
    /// the key's value kind and records it. Returns how many tokens after the value it
    /// consumed (for the unquoted-axis-list recovery).
    fn key_item(
        &mut self,
        item: KeyItem<'_, '_, S>,
        level: &mut Level<'_, S>,
        keys: &mut StageKeys<S>,
    ) -> usize {
        let KeyItem {
            key,
            key_span,
            form,
            after,
        } = item;
        let info = key.info();
        let takes_group = key == Key::Chain || key == Key::Renorm;
        if let (Form::Group { span, .. }, false) = (form, takes_group) {
            self.error(
                span.clone(),
                format!(
                    "`{}` does not take parentheses; write {}",
                    info.name, info.example
                ),
            );
            self.mark_bad(key, key_span, level, keys);
            return 0;
        }
        if self.duplicate(key, &key_span, level, keys) {
            return 0;
        }
        if key == Key::Chain {
            if let Level::Top(chain) = level {
                **chain = self.chain_item(form, key_span);
            }
            return 0;
        }
        if key == Key::Renorm {
            let field = self.renorm_item(form, key_span);
            keys.set(key, field);
            return 0;
        }
        let mut consumed = 0;
        let field = match self.read_value(info, &key_span, form.value(), after, &mut consumed) {
            Ok((value, span)) => Field::Set(Written {
                value,
                key: key_span,
                span,
            }),
            Err(()) => Field::Bad(key_span),
        };
        keys.set(key, field);
        if key == Key::Axes {
            consumed += self.alternatives(&after[consumed..], keys);
        }
        consumed
    }
}
