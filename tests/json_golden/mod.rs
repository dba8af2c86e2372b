//! Reading the golden cases that the post-2017 scripts write as JSON values
//! (`{"shape": [..], "data": [..]}` tensors), shared by `tests/post2017_b.rs` and
//! `tests/switchable.rs`.

use normkit::ndarray::{ArrayD, IxDyn};
use normkit::Float;
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
