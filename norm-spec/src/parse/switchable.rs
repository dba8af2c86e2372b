//! The alternatives of `axes` (Switchable Normalization): `axes = "H,W" | "C,H,W" | "N,H,W"`.
//! The first alternative is the ordinary value of `axes`; each `| "..."` after it is read
//! here, with the axis-list reader of `axes`, into [`StageKeys::switch`].

use super::lists::AxisList;
use super::{describe, is_punct, Parser};
use crate::check_switchable::Alternative;
use crate::declaration::StageKeys;
use crate::token::{LitKind, Literal, TokenTree};

impl<S: Clone> Parser<S> {
    /// `| "..."` repeated, at the start of `tokens` (right after the value of `axes`).
    /// Returns how many tokens it consumed.
    pub(super) fn alternatives(
        &mut self,
        tokens: &[TokenTree<S>],
        keys: &mut StageKeys<S>,
    ) -> usize {
        let mut i = 0;
        while is_punct(tokens.get(i), '|') {
            let bar = tokens[i].span();
            i += 1;
            match tokens.get(i) {
                Some(TokenTree::Literal {
                    lit:
                        Literal {
                            kind: LitKind::Str(s),
                            ..
                        },
                    span,
                }) => {
                    i += 1;
                    let list = AxisList {
                        name: "axes",
                        if_empty: "each alternative of `axes` names the axes of one set of \
                                   statistics, e.g. axes = \"H,W\" | \"C,H,W\"",
                    };
                    match self.axis_list(s, span, list) {
                        Ok(names) => keys.switch.push(Alternative {
                            bar,
                            names,
                            span: span.clone(),
                        }),
                        Err(()) => keys.switch_bad = true,
                    }
                }
                other => {
                    let (at, found) = match other {
                        Some(tok) => (tok.span(), format!(", found {}", describe(tok))),
                        None => (bar, String::new()),
                    };
                    self.error(
                        at,
                        format!(
                            "expected a string of axis names after `|` in `axes` (Switchable \
                             Normalization), e.g. axes = \"H,W\" | \"C,H,W\" | \"N,H,W\"{found}"
                        ),
                    );
                    keys.switch_bad = true;
                    // Skip the rest of the broken item.
                    while i < tokens.len() && !is_punct(tokens.get(i), ',') {
                        i += 1;
                    }
                    return i;
                }
            }
        }
        i
    }
}
