//! The rules of issue 18's post-2017 variant keys (`statistic`, `tlu`, `ghost`, `renorm`),
//! called from `Checker::stage` (see [`crate::check`]); kept apart so the rules of each
//! variant read in one place.

use crate::declaration::{AffineValue, StageKeys, Value};
use crate::keys::Key;
use crate::lower::Layout;
use crate::Error;

/// Every error of the post-2017 keys of one stage, appended to `errors`.
pub(crate) fn check<S: Clone>(
    st: &StageKeys<S>,
    layout: Option<&Layout<'_>>,
    errors: &mut Vec<Error<S>>,
) {
    let mut error = |span: &S, message: String| {
        errors.push(Error {
            span: span.clone(),
            message,
        })
    };
    // `statistic = "sum"`: no estimator or running statistic is defined for a sum.
    if let Some(w) = st.written(Key::Statistic) {
        if w.value == Value::Word("sum") {
            if let Some(u) = st.written_true(Key::Unbiased) {
                error(
                    &u.key,
                    "`unbiased` has no meaning with `statistic = \"sum\"`: the n − 1 \
                     correction is for a mean"
                        .into(),
                );
            }
            if let Some(r) = st.written_true(Key::RunningStats) {
                error(
                    &r.key,
                    "`running_stats` cannot be combined with `statistic = \"sum\"`: a running \
                     sum of squares would depend on the batch size"
                        .into(),
                );
            }
        }
    }
    // `tlu`: τ is a learned parameter shaped like γ.
    if let Some(tlu) = st.written_true(Key::Tlu) {
        let message = match st.affine().map(|(a, _)| a) {
            None if !st.field(Key::Affine).is_bad() => Some(
                "`tlu` needs `affine`: the threshold τ is learned per parameter index, like γ \
                 and β; add `affine`",
            ),
            Some(AffineValue::Off) => Some(
                "`tlu` needs `affine` (`affine = false`): the threshold τ is learned per \
                 parameter index, like γ and β",
            ),
            Some(AffineValue::External) => Some(
                "`tlu` needs learnable parameters (`affine` or `affine = \"C\"`), not \
                 `affine = external`",
            ),
            _ => None,
        };
        if let Some(m) = message {
            error(&tlu.key, m.into());
        }
    }
    // `renorm`: r and d compare the batch statistics with the running ones.
    if let Some(renorm) = st.written(Key::Renorm) {
        let running = st.written_true(Key::RunningStats).is_some();
        if !running && !st.field(Key::RunningStats).is_bad() {
            error(
                &renorm.key,
                "`renorm` needs `running_stats`: r and d compare the batch statistics with \
                 the running statistics"
                    .into(),
            );
        }
    }
    // `ghost = k`: chunks of the batch axis, which the statistics must run over.
    if let (Some(ghost), Some(layout)) = (st.written(Key::Ghost), layout) {
        match layout.batch {
            None => error(
                &ghost.key,
                format!(
                    "`ghost` splits the batch axis `N` into chunks, but `input` has no axis \
                     named `N`; `input` has {}",
                    layout.names()
                ),
            ),
            Some(_) => {
                if let Some(Value::AxisNames(axes)) = st.axis_names().map(|w| &w.value) {
                    if !axes.iter().any(|a| a == "N") {
                        error(
                            &ghost.key,
                            "`ghost` needs `N` in `axes`: each chunk of the batch gets its \
                             own statistics over `N`"
                                .into(),
                        );
                    }
                }
            }
        }
    }
}
