//! Shared by `post2017_b` and `switchable`: reading the golden cases that the post-2017
//! scripts write as JSON values (`{"shape": [..], "data": [..]}` tensors), the tolerance
//! against them, and the comparison of a `#[norm]` layer with `DynNorm`.

use normkit::ndarray::{ArrayD, Dimension, IxDyn};
use normkit::{Float, Grads};
use serde_json::Value;

/// The case `name` of the data folder `tests/golden/data/{dir}/`.
pub fn load(dir: &str, name: &str) -> Value {
    let path = format!(
        "{}/tests/golden/data/{dir}/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("valid JSON")
}

/// A tensor's shape.
pub fn shape_of(v: &Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect()
}

/// A tensor, its values rounded to `T` once.
pub fn tensor<T: Float>(v: &Value) -> ArrayD<T> {
    let data: Vec<T> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| T::from_acc(d.as_f64().expect("number")))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape_of(v)), data).expect("shape matches data")
}

/// The tolerance relative to `max(1, max|ref|)`: 1e-10 in f64, 2e-4 in f32.
pub fn tol<T: Float>() -> f64 {
    if T::NAME == "f64" {
        1e-10
    } else {
        2e-4
    }
}

/// `max|a − ref| ≤ tol · max(1, max|ref|)`, with the shapes equal and every value finite.
pub fn close<T: Float>(what: &str, a: &ArrayD<T>, reference: &Value) {
    let r = tensor::<f64>(reference);
    assert_eq!(a.shape(), r.shape(), "{what}: shape");
    let scale = r.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(r.iter())
        .fold(0.0f64, |m, (x, y)| m.max((x.to_acc() - y).abs()));
    assert!(
        err <= tol::<T>() * scale,
        "{what} ({}): max error {err:e} > {:e}",
        T::NAME,
        tol::<T>() * scale
    );
    assert!(
        a.iter().all(|v| v.to_acc().is_finite()),
        "{what}: not finite"
    );
}

/// The macro layer's and `DynNorm`'s results are the same bits.
pub fn same<T: Float>(what: &str, a: &ArrayD<T>, b: &ArrayD<T>) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let ok = a
        .iter()
        .zip(b.iter())
        .all(|(x, y)| x.to_acc().to_bits() == y.to_acc().to_bits());
    assert!(ok, "{what}: the macro layer and DynNorm differ");
}

/// A generated layer's gradients with a dynamic `dx`.
pub fn dyn_grads<T: Float, D: Dimension>(g: Grads<T, D>) -> Grads<T, IxDyn> {
    let mut out = Grads::new(g.dx.clone().into_dyn());
    let mut g = g;
    out.set_params(g.take_params());
    out
}
