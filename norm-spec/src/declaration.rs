//! The declaration as written: what the parser read for each key, with spans, before any
//! rule that relates several keys has run.
//!
//! Every key's value is one [`Value`], stored in [`StageKeys`] at the key's index in the key
//! table ([`crate::keys::KEYS`]), so no code here names a particular key.

use std::borrow::Cow;

use crate::ir::Axis;
use crate::keys::{Key, KEYS};
use crate::Error;

/// A well-formed value, as read by the reader of its key's value kind.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// `input = "N,C=64,H,W"`: the axes (valid names, sizes, no duplicates, rank ≤ 8).
    InputAxes(Cow<'static, [Axis]>),
    /// `axes = "C,H,W"`: axis names as written (non-empty, no duplicates).
    AxisNames(Vec<String>),
    /// The value of `affine`.
    Affine(AffineValue),
    /// An integer ≥ 1.
    Count(usize),
    /// `true` or `false` (or a bare flag).
    Bool(bool),
    /// A number the key's constraint accepts (never negative; `-0` is read as `0`).
    Number(f64),
    /// One of the words the key accepts, written as a string literal (`"std"`).
    Word(&'static str),
    /// `renorm(rmax = .., dmax = ..)`: Batch Renormalization's limits.
    Renorm {
        /// The largest correction r (and 1/rmax the smallest).
        rmax: f64,
        /// The largest |d|.
        dmax: f64,
    },
}

/// The value of `affine` as written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AffineValue {
    /// The bare flag or `affine = true`: per channel.
    PerChannel,
    /// `affine = false`.
    Off,
    /// `affine = external`.
    External,
    /// `affine = "C,H,W"`: axis names as written (non-empty, no duplicates).
    Axes(Vec<String>),
}

/// A key written with a well-formed value: the value, the key's span and the value's span
/// (the key's for a bare flag).
pub(crate) struct Written<S, T> {
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
    Set(Written<S, T>),
}

impl<S, T> Field<S, T> {
    pub(crate) fn is_present(&self) -> bool {
        !matches!(self, Field::Absent)
    }

    /// The value, if the key was written with a good value.
    pub(crate) fn get(&self) -> Option<&Written<S, T>> {
        match self {
            Field::Set(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the key was written with a bad value.
    pub(crate) fn is_bad(&self) -> bool {
        matches!(self, Field::Bad(_))
    }

    pub(crate) fn key_span(&self) -> Option<&S> {
        match self {
            Field::Absent => None,
            Field::Bad(s) => Some(s),
            Field::Set(s) => Some(&s.key),
        }
    }
}

/// The keys written at one level: the top level or one `chain` stage. `chain` itself is
/// kept in [`Declaration::chain`], because its value holds stages.
pub(crate) struct StageKeys<S> {
    /// The stage name and its span (chain stages only).
    pub name: Option<(String, S)>,
    /// One field per row of the key table, at the key's index.
    fields: Vec<Field<S, Value>>,
    /// An unknown key that looks like a misspelled `axes` was written (so a missing `axes`
    /// is not reported a second time).
    pub axes_misspelled: bool,
    /// The alternatives of `axes` after the first (`axes = "H,W" | "C,H,W"`), as written.
    pub switch: Vec<crate::check_switchable::Alternative<S>>,
    /// An alternative of `axes` was rejected by the parser (its error is reported).
    pub switch_bad: bool,
}

impl<S> StageKeys<S> {
    pub(crate) fn new(name: Option<(String, S)>) -> Self {
        StageKeys {
            name,
            fields: KEYS.iter().map(|_| Field::Absent).collect(),
            axes_misspelled: false,
            switch: Vec::new(),
            switch_bad: false,
        }
    }

    /// What was written for `key`.
    pub(crate) fn field(&self, key: Key) -> &Field<S, Value> {
        &self.fields[key.index()]
    }

    /// Record what was written for `key`.
    pub(crate) fn set(&mut self, key: Key, field: Field<S, Value>) {
        self.fields[key.index()] = field;
    }

    /// `key` with its well-formed value, if it was written so.
    pub(crate) fn written(&self, key: Key) -> Option<&Written<S, Value>> {
        self.field(key).get()
    }

    /// `key` if it was written as `true` (or as a bare flag).
    pub(crate) fn written_true(&self, key: Key) -> Option<&Written<S, Value>> {
        self.written(key).filter(|w| w.value == Value::Bool(true))
    }

    /// The value of a boolean `key`: as written, else `None`.
    pub(crate) fn bool(&self, key: Key) -> Option<bool> {
        match self.written(key)?.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The axis names written for `axes`.
    pub(crate) fn axis_names(&self) -> Option<&Written<S, Value>> {
        self.written(Key::Axes)
    }

    /// The value of `affine`, if written with a good value.
    pub(crate) fn affine(&self) -> Option<(&AffineValue, &Written<S, Value>)> {
        let written = self.written(Key::Affine)?;
        match &written.value {
            Value::Affine(a) => Some((a, written)),
            _ => None,
        }
    }

    /// `groups = g`, if written with a good value.
    pub(crate) fn groups(&self) -> Option<(usize, &Written<S, Value>)> {
        let written = self.written(Key::Groups)?;
        match written.value {
            Value::Count(g) => Some((g, written)),
            _ => None,
        }
    }

    /// The stage keys that were written, with their key spans, in table order.
    pub(crate) fn written_stage_keys(&self) -> impl Iterator<Item = (Key, &S)> {
        KEYS.iter()
            .filter(|info| info.in_stage)
            .filter_map(|info| Some((info.key, self.field(info.key).key_span()?)))
    }
}

/// The whole declaration as written, plus the syntax errors found while reading it.
pub(crate) struct Declaration<S> {
    /// Errors found while parsing (`check` reports its own).
    pub errors: Vec<Error<S>>,
    /// The keys written at the top level (`input` and every stage key).
    pub top: StageKeys<S>,
    /// `chain(...)`: its stages (those whose syntax was usable).
    pub chain: Field<S, Vec<StageKeys<S>>>,
}

impl<S> Declaration<S> {
    /// The stages the layer will have: the chain's, or the top level as the one stage.
    pub(crate) fn stages(&self) -> &[StageKeys<S>] {
        match &self.chain {
            Field::Absent => std::slice::from_ref(&self.top),
            Field::Bad(_) => &[],
            Field::Set(chain) => &chain.value,
        }
    }
}

/// `input` as written: `None` when its value was rejected, the default when absent.
pub(crate) fn written_input<S>(top: &StageKeys<S>) -> Option<Cow<'static, [Axis]>> {
    match top.field(Key::Input) {
        Field::Absent => match &Key::Input.info().default {
            Some(Value::InputAxes(axes)) => Some(axes.clone()),
            _ => None,
        },
        Field::Bad(_) => None,
        Field::Set(written) => match &written.value {
            Value::InputAxes(axes) => Some(axes.clone()),
            _ => None,
        },
    }
}
