//! `chain(name(keys...), ...)`: the stages of a chain and their names.

use super::{describe, is_punct, skip_to_comma, Form, Level, Parser};
use crate::declaration::{Field, StageKeys, Written};
use crate::ident::{is_ascii_ident, is_keyword};
use crate::keys::Key;
use crate::token::{Delimiter, TokenTree};
use crate::MAX_STAGES;

impl<S: Clone> Parser<S> {
    /// The `chain` key with what follows it: stages in parentheses, else an error.
    pub(super) fn chain_item(
        &mut self,
        form: &Form<'_, S>,
        key_span: S,
    ) -> Field<S, Vec<StageKeys<S>>> {
        match form {
            Form::Group { inner, span } => self.chain(inner, span.clone(), key_span),
            Form::Value(_) | Form::Flag => {
                let at = form.value().map_or(key_span.clone(), |v| v.tok.span());
                self.error(
                    at,
                    format!(
                        "`chain` lists stages in parentheses, e.g. {}",
                        Key::Chain.info().example
                    ),
                );
                Field::Bad(key_span)
            }
        }
    }

    /// The inside of `chain( ... )`: `name(keys...)` entries.
    fn chain(
        &mut self,
        tokens: &[TokenTree<S>],
        span: S,
        key_span: S,
    ) -> Field<S, Vec<StageKeys<S>>> {
        if tokens.iter().all(|t| is_punct(Some(t), ',')) {
            self.error(
                span,
                format!(
                    "empty `chain`: list at least one stage, e.g. {}",
                    Key::Chain.info().example
                ),
            );
            return Field::Bad(key_span);
        }
        let mut stages: Vec<StageKeys<S>> = Vec::new();
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
                } => i = self.chain_entry(tokens, i, (name, name_span), &mut stages),
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
        Field::Set(Written {
            value: stages,
            key: key_span,
            span,
        })
    }

    /// The chain entry that starts with the stage name at `i`: `name(keys...)`. Returns the
    /// index after it.
    fn chain_entry(
        &mut self,
        tokens: &[TokenTree<S>],
        i: usize,
        (name, name_span): (&String, &S),
        stages: &mut Vec<StageKeys<S>>,
    ) -> usize {
        let next = tokens.get(i + 1);
        match next {
            Some(TokenTree::Group {
                delimiter: Delimiter::Parenthesis,
                inner,
                ..
            }) => {
                self.stage_name(name, name_span, stages);
                if stages.len() == MAX_STAGES {
                    self.error(
                        name_span.clone(),
                        format!("a chain has at most {MAX_STAGES} stages"),
                    );
                }
                let mut stage = StageKeys::new(Some((name.clone(), name_span.clone())));
                self.items(inner, Level::Stage(name.clone()), &mut stage);
                stages.push(stage);
                i + 2
            }
            _ if Key::from_name(name).is_some() && is_punct(next, '=') => {
                self.error(
                    name_span.clone(),
                    format!(
                        "`{name}` inside `chain(...)` belongs to a named stage, e.g. \
                         chain(bn({name} = ...), ...)"
                    ),
                );
                skip_to_comma(tokens, i)
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
                skip_to_comma(tokens, i)
            }
        }
    }

    /// Check a stage name: a lower-case identifier, not `dx`, not a keyword, not repeated.
    fn stage_name(&mut self, name: &str, span: &S, stages: &[StageKeys<S>]) {
        let lower_ident = is_ascii_ident(name) && !name.chars().any(|c| c.is_ascii_uppercase());
        if !lower_ident {
            let lower = name.to_lowercase();
            let hint = if is_ascii_ident(&lower) {
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
        } else if is_keyword(name) {
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
