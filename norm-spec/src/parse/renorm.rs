//! `renorm(rmax = 3.0, dmax = 5.0)`: Batch Renormalization's clipping limits, each optional
//! (the bare `renorm` or a missing limit takes the row's default, 3 and 5).

use super::{describe, is_punct, skip_to_comma, step_comma, Form, Parser, ValueToken};
use crate::declaration::{Field, Value, Written};
use crate::keys::{Key, KeyInfo, Lowering, ValueKind};
use crate::token::TokenTree;

/// The limits' rows: read with the number reader of the key table.
const LIMITS: [KeyInfo; 2] = [
    KeyInfo {
        key: Key::Renorm,
        name: "rmax",
        in_stage: true,
        kind: ValueKind::Number {
            accept: |r| r.is_finite() && r >= 1.0,
            words: &[],
            must_be: "a finite number ≥ 1",
        },
        default: Some(Value::Number(3.0)),
        example: "renorm(rmax = 3.0, dmax = 5.0)",
        aliases: &[],
        lowering: Lowering::Structural,
        canonical: |_, _| None,
    },
    KeyInfo {
        key: Key::Renorm,
        name: "dmax",
        in_stage: true,
        kind: ValueKind::Number {
            accept: |d| d.is_finite() && d >= 0.0,
            words: &[],
            must_be: "a finite number ≥ 0",
        },
        default: Some(Value::Number(5.0)),
        example: "renorm(rmax = 3.0, dmax = 5.0)",
        aliases: &[],
        lowering: Lowering::Structural,
        canonical: |_, _| None,
    },
];

impl<S: Clone> Parser<S> {
    /// `renorm`, `renorm(rmax = .., dmax = ..)`; `renorm = ...` is an error.
    pub(super) fn renorm_item(&mut self, form: &Form<'_, S>, key_span: S) -> Field<S, Value> {
        let mut limits = [3.0, 5.0];
        let (inner, span) = match form {
            Form::Flag => (&[][..], key_span.clone()),
            Form::Group { inner, span } => (*inner, span.clone()),
            Form::Value(v) => {
                self.error(
                    v.tok.span(),
                    format!(
                        "`renorm` takes its limits in parentheses, e.g. {}",
                        LIMITS[0].example
                    ),
                );
                return Field::Bad(key_span);
            }
        };
        let mut ok = true;
        let mut seen = [false; 2];
        let mut i = 0;
        while i < inner.len() {
            let TokenTree::Ident {
                name,
                span: name_span,
            } = &inner[i]
            else {
                self.error(
                    inner[i].span(),
                    format!(
                        "expected `rmax` or `dmax` inside `renorm(...)`, found {}",
                        describe(&inner[i])
                    ),
                );
                ok = false;
                i = step_comma(inner, skip_to_comma(inner, i));
                continue;
            };
            let Some(k) = LIMITS.iter().position(|l| l.name == name) else {
                self.error(
                    name_span.clone(),
                    format!("unknown key `{name}` in `renorm`; valid keys: rmax, dmax"),
                );
                ok = false;
                i = step_comma(inner, skip_to_comma(inner, i + 1));
                continue;
            };
            if seen[k] {
                self.error(
                    name_span.clone(),
                    format!("duplicate key `{name}` in `renorm`"),
                );
                ok = false;
            }
            seen[k] = true;
            i += 1;
            let value = if is_punct(inner.get(i), '=') {
                i += 1;
                let minus = is_punct(inner.get(i), '-');
                if minus {
                    i += 1;
                }
                let v = inner.get(i).map(|tok| ValueToken { minus, tok });
                if v.is_some() {
                    i += 1;
                }
                v
            } else {
                None
            };
            match self.read_value(&LIMITS[k], name_span, value.as_ref(), &[], &mut 0) {
                Ok((Value::Number(x), _)) => limits[k] = x,
                _ => ok = false,
            }
            match inner.get(i) {
                None => {}
                Some(TokenTree::Punct { ch: ',', .. }) => i += 1,
                Some(other) => {
                    self.error(
                        other.span(),
                        format!(
                            "expected `,` after the value of `{name}`, found {}",
                            describe(other)
                        ),
                    );
                    ok = false;
                    i = step_comma(inner, skip_to_comma(inner, i));
                }
            }
        }
        if !ok {
            return Field::Bad(key_span);
        }
        Field::Set(Written {
            value: Value::Renorm {
                rmax: limits[0],
                dmax: limits[1],
            },
            key: key_span,
            span,
        })
    }
}
