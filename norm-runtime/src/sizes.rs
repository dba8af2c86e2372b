//! Checked size arithmetic and fallible allocation: a size a caller passes never panics or
//! aborts the process; it becomes a [`crate::NormError::Size`] where the layer has a name.

use ndarray::{Array, ArrayD, Dimension, IxDyn};

use crate::{Float, NormError};

/// The product of `sizes`, or `None` if it overflows `usize`. A zero anywhere makes the
/// product zero, whatever the other factors (as ndarray counts the elements of an array).
pub(crate) fn product(sizes: &[usize]) -> Option<usize> {
    if sizes.contains(&0) {
        return Some(0);
    }
    sizes.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n))
}

/// An array of `shape` filled with `value`, allocated fallibly: `Err` says why (the element
/// count or the byte size overflows, or the allocator refused) instead of a panic or an
/// abort.
pub(crate) fn filled<T: Clone>(shape: &[usize], value: T, what: &str) -> Result<ArrayD<T>, String> {
    let too_large = || {
        format!(
            "{what} of shape {shape:?} is too large ({} bytes per value)",
            std::mem::size_of::<T>()
        )
    };
    let count = product(shape).ok_or_else(too_large)?;
    // ndarray's limit (and Rust's for one allocation): isize::MAX bytes and elements.
    let bytes = count
        .checked_mul(std::mem::size_of::<T>().max(1))
        .filter(|&b| isize::try_from(b).is_ok())
        .ok_or_else(too_large)?;
    let mut values = Vec::new();
    values.try_reserve_exact(count).map_err(|_| {
        format!("{what} of shape {shape:?} needs {bytes} bytes, more than can be allocated")
    })?;
    values.resize(count, value);
    ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| format!("{what}: {e}"))
}

/// A parameter or running-statistic array of a generated layer's `try_new`: `shape`
/// filled with `value` (one or zero), allocated fallibly; an absurd size is
/// [`NormError::Size`] naming the layer and the array (`what`), as in `DynNorm::new`.
pub fn layer_array<T: Float, D: Dimension>(
    layer: &str,
    what: &str,
    shape: D,
    one: bool,
) -> Result<Array<T, D>, NormError> {
    let value = if one { T::one() } else { T::zero() };
    let err = |reason: String| NormError::Size {
        layer: layer.to_string(),
        reason,
    };
    filled(shape.slice(), value, what)
        .map_err(err)?
        .into_dimensionality::<D>()
        .map_err(|e| err(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_is_checked() {
        assert_eq!(product(&[]), Some(1));
        assert_eq!(product(&[3, 4, 5]), Some(60));
        assert_eq!(product(&[usize::MAX, 2]), None);
        assert_eq!(product(&[usize::MAX, 2, 0]), Some(0));
    }

    #[test]
    fn filled_refuses_absurd_sizes() {
        assert!(filled(&[usize::MAX], 1.0f32, "gamma").is_err());
        assert!(filled(&[1 << 40, 1 << 30], 1.0f64, "gamma").is_err());
        // 2^50 f32 values: 4 PiB, more than any address space the tests run in.
        assert!(filled(&[1 << 50], 0.0f32, "beta").is_err());
        let a = filled(&[2, 0, 3], 1.0f32, "gamma").unwrap();
        assert_eq!(a.shape(), &[2, 0, 3]);
        let b = filled(&[2, 3], 0.5f64, "gamma").unwrap();
        assert!(b.iter().all(|&v| v == 0.5) && b.len() == 6);
    }

    #[test]
    fn layer_array_names_the_layer() {
        let a = layer_array::<f32, _>("L", "gamma", ndarray::Dim([2, 3]), true).unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert!(a.iter().all(|&v| v == 1.0));
        let z = layer_array::<f64, _>("L", "beta", ndarray::Dim([4]), false).unwrap();
        assert!(z.iter().all(|&v| v == 0.0));
        let e = layer_array::<f32, _>("L", "gamma", ndarray::Dim([usize::MAX]), true);
        assert!(matches!(e, Err(NormError::Size { layer, reason })
            if layer == "L" && reason.contains("gamma") && reason.contains("too large")));
    }
}
