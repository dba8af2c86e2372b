//! The lists inside string values: the input's axes (`"N,C=64,H,W"`) and axis-name lists
//! (`"C,H,W"`).

use std::borrow::Cow;

use super::Parser;
use crate::ident::{is_ascii_ident, is_keyword};
use crate::ir::{Axis, MAX_RANK};

/// Which key an axis-name list belongs to, for its messages.
pub(super) struct AxisList {
    /// The key's name.
    pub name: &'static str,
    /// The end of the message about an empty list.
    pub if_empty: &'static str,
}

impl<S: Clone> Parser<S> {
    /// Split a comma-separated list inside a string into trimmed entries (possibly empty).
    fn split_list(s: &str) -> Vec<&str> {
        s.split(',').map(str::trim).collect()
    }

    /// `input = "N,C=64,H,W"`.
    pub(super) fn input_axes(&mut self, s: &str, span: &S) -> Result<Vec<Axis>, ()> {
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
            if let Some(message) = bad_input_name(name, s) {
                self.error(span.clone(), message);
                ok = false;
                continue;
            }
            // A bad size is reported, and the axis still checked against the others.
            let size = match size.map(|text| fixed_size(name, text)).transpose() {
                Ok(size) => size,
                Err(message) => {
                    self.error(span.clone(), message);
                    ok = false;
                    None
                }
            };
            if let Some(message) = clash(name, &axes) {
                self.error(span.clone(), message);
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
    pub(super) fn axis_list(
        &mut self,
        s: &str,
        span: &S,
        list: AxisList,
    ) -> Result<Vec<String>, ()> {
        let AxisList { name, if_empty } = list;
        if s.trim().is_empty() {
            self.error(span.clone(), format!("empty `{name}`: {if_empty}"));
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
}

/// Why `name` cannot name an axis of `input` (written as `list`), if it cannot.
fn bad_input_name(name: &str, list: &str) -> Option<String> {
    if name.is_empty() {
        return Some(format!("empty axis name in `input` \"{list}\""));
    }
    if !is_ascii_ident(name) {
        return Some(format!(
            "axis name `{name}` in `input` is not an identifier (use letters, digits \
             and `_`, e.g. `C` or `kh`)"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if is_keyword(&lower) {
        return Some(format!(
            "axis name `{name}` in `input` cannot be used: its lower-case form `{lower}` \
             (the name of its `new` argument) is a Rust keyword"
        ));
    }
    None
}

/// The size fixed by `name=text` in `input`: an integer ≥ 1 (`_` separators allowed inside).
fn fixed_size(name: &str, text: &str) -> Result<usize, String> {
    let digits: String = text.chars().filter(|&c| c != '_').collect();
    match digits.parse::<usize>() {
        Ok(n) if n >= 1 && !text.starts_with('_') && !text.starts_with('+') => Ok(n),
        _ => Err(format!(
            "the size of `{name}` in `input` must be an integer ≥ 1, got `{text}`"
        )),
    }
}

/// Why `name` clashes with an axis already in `input`, if it does.
fn clash(name: &str, axes: &[Axis]) -> Option<String> {
    if axes.iter().any(|a| a.name == name) {
        return Some(format!("duplicate axis `{name}` in `input`"));
    }
    let lower = name.to_ascii_lowercase();
    let other = axes.iter().find(|a| a.name.to_ascii_lowercase() == lower)?;
    Some(format!(
        "axes `{}` and `{name}` in `input` differ only in case; both would name \
         the `new` argument `{lower}`",
        other.name
    ))
}
