//! The golden-data format of `tests/golden/README.md`, read with serde.
//!
//! Numbers are parsed with `str::parse` (correctly rounded), not by serde_json: without its
//! `float_roundtrip` feature serde_json's fast float parser is off by one ulp on some
//! shortest-round-trip decimals, which would silently change float32-exact inputs (e.g.
//! `0.30000001192092896`) into values that are no longer float32. [`load`] therefore turns
//! every number literal into a string before serde sees it, and the fields below parse
//! those strings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use normkit::ndarray::{ArrayD, IxDyn};
use normkit::Float;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The groups (`tests/golden/data/<group>.json`), one per layer family.
pub const GROUPS: [&str; 11] = [
    "adain",
    "batchnorm",
    "bcn",
    "groupnorm",
    "instancenorm",
    "layernorm",
    "posnorm",
    "rmsnorm",
    "standardize",
    "stress",
    "weight_std",
];

#[derive(Debug, Deserialize)]
pub struct File {
    pub meta: Meta,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
pub struct Meta {
    #[serde(deserialize_with = "num")]
    pub format_version: u32,
    pub group: String,
    pub torch: String,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    pub spec: String,
    #[serde(deserialize_with = "num_map")]
    pub sizes: BTreeMap<String, usize>,
    pub steps: Vec<Step>,
    /// `{"y": "1e-7", ...}` (numbers as strings, see the module doc), chains also
    /// `"stages": [{...}, {...}]`.
    pub f32_torch_err: serde_json::Value,
    pub exact_zero: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Tensor {
    #[serde(deserialize_with = "num_vec")]
    pub shape: Vec<usize>,
    #[serde(deserialize_with = "num_vec")]
    pub data: Vec<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Step {
    pub mode: String,
    pub x: Tensor,
    pub dy: Tensor,
    pub gamma: Option<Tensor>,
    pub beta: Option<Tensor>,
    pub scale: Option<Tensor>,
    pub shift: Option<Tensor>,
    pub y: Tensor,
    pub dx: Tensor,
    pub dgamma: Option<Tensor>,
    pub dbeta: Option<Tensor>,
    pub dscale: Option<Tensor>,
    pub dshift: Option<Tensor>,
    pub running_mean_before: Option<Tensor>,
    pub running_mean_after: Option<Tensor>,
    pub running_var_before: Option<Tensor>,
    pub running_var_after: Option<Tensor>,
    #[serde(deserialize_with = "num_opt")]
    pub num_batches_tracked_before: Option<u64>,
    #[serde(deserialize_with = "num_opt")]
    pub num_batches_tracked_after: Option<u64>,
    pub mean: Option<Tensor>,
    pub var: Option<Tensor>,
    pub stages: Option<Vec<StageRef>>,
}

/// One stage of a chain step.
#[derive(Debug, Deserialize)]
pub struct StageRef {
    pub name: String,
    pub gamma: Option<Tensor>,
    pub beta: Option<Tensor>,
    pub dgamma: Option<Tensor>,
    pub dbeta: Option<Tensor>,
    pub running_mean_before: Option<Tensor>,
    pub running_mean_after: Option<Tensor>,
    pub running_var_before: Option<Tensor>,
    pub running_var_after: Option<Tensor>,
    #[serde(deserialize_with = "num_opt")]
    pub num_batches_tracked_before: Option<u64>,
    #[serde(deserialize_with = "num_opt")]
    pub num_batches_tracked_after: Option<u64>,
    pub mean: Option<Tensor>,
    pub var: Option<Tensor>,
}

impl Tensor {
    /// The tensor in precision `T`. Inputs are float32-exact, so for `f32` this is exact.
    pub fn to_array<T: Float>(&self) -> ArrayD<T> {
        let data = self.data.iter().map(|&v| T::from_acc(v)).collect();
        ArrayD::from_shape_vec(IxDyn(&self.shape), data).expect("tensor shape matches its data")
    }

    /// Whether every value is exactly representable in f32 (inputs must be).
    pub fn is_f32_exact(&self) -> bool {
        self.data.iter().all(|&v| f64::from(v as f32) == v)
    }
}

impl Case {
    /// `DynNorm::new`'s size arguments.
    pub fn size_args(&self) -> Vec<(&str, usize)> {
        self.sizes.iter().map(|(k, &v)| (k.as_str(), v)).collect()
    }

    /// Torch's own float32 error for output `key` (of chain stage `stage`), if recorded.
    pub fn torch_err(&self, stage: Option<usize>, key: &str) -> Option<f64> {
        let table = match stage {
            None => &self.f32_torch_err,
            Some(k) => self.f32_torch_err.get("stages")?.get(k)?,
        };
        table.get(key)?.as_str()?.parse().ok()
    }

    pub fn is_exact_zero(&self, key: &str) -> bool {
        self.exact_zero.iter().any(|k| k == key)
    }
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/data")
}

/// Reads `tests/golden/data/<group>.json`.
pub fn load(group: &str) -> File {
    load_path(&data_dir().join(format!("{group}.json")), group)
}

/// Reads `tests/golden/data/half/<dtype>.json` (`tests/golden/half.py`).
#[allow(dead_code)] // used by the half tests only (tests/half/dtypes.rs)
pub fn load_half(dtype: &str) -> File {
    load_path(
        &data_dir().join("half").join(format!("{dtype}.json")),
        dtype,
    )
}

/// Reads a golden-data file whose `meta.group` is `group`.
pub fn load_path(path: &std::path::Path, group: &str) -> File {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file: File = serde_json::from_str(&quote_numbers(&text))
        .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()));
    assert_eq!(
        file.meta.format_version,
        1,
        "{}: format_version",
        path.display()
    );
    assert_eq!(file.meta.group, group, "{}: meta.group", path.display());
    file
}

/// Finds one case by name in a group.
pub fn case(group: &str, name: &str) -> Case {
    load(group)
        .cases
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case `{name}` in {group}.json"))
}

/// Rewrites every number literal outside strings as a string literal (`1.5` → `"1.5"`).
fn quote_numbers(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 4);
    let mut chars = json.chars().peekable();
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == '-' || c.is_ascii_digit() {
            out.push('"');
            out.push(c);
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() || matches!(d, '.' | 'e' | 'E' | '+' | '-') {
                    out.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push('"');
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_str<T: FromStr, E: de::Error>(s: &str) -> Result<T, E> {
    s.parse().map_err(|_| {
        E::custom(format!(
            "`{s}` is not a valid {}",
            std::any::type_name::<T>()
        ))
    })
}

fn num<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<T, D::Error> {
    parse_str(&String::deserialize(d)?)
}

fn num_vec<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_str(s))
        .collect()
}

fn num_opt<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<Option<T>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_str(&s))
        .transpose()
}

fn num_map<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<BTreeMap<String, T>, D::Error> {
    BTreeMap::<String, String>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| Ok((k, parse_str(&v)?)))
        .collect()
}
