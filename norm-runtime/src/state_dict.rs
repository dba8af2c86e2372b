//! PyTorch state dicts: named tensors read and written as safetensors ([`StateDict`]), and
//! the strict loading and saving of a layer's parameters and running statistics under
//! PyTorch's names (`weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`).
//!
//! Generated layers and [`DynNorm`] share one implementation: they lend their tensors as
//! `StageTensors` / `StageTensorsMut` views, and `save_stages` / `load_stages` do the rest. Loading validates every key, dtype and shape before it writes anything, so a
//! failed load leaves the layer unchanged.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use ndarray::{ArrayBase, ArrayD, ArrayViewD, ArrayViewMutD, Data, Dimension, IxDyn};
use safetensors::Dtype as StDtype;

use crate::dynamic::DynNorm;
use crate::{Float, NormError};
use sealed::Sealed;

pub use half::{bf16, f16};

/// The element type of a tensor in a [`StateDict`], with safetensors' names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// 32-bit float (`torch.float32`).
    F32,
    /// 64-bit float (`torch.float64`).
    F64,
    /// bfloat16 (`torch.bfloat16`): 8 exponent bits, 7 mantissa bits.
    BF16,
    /// IEEE half precision (`torch.float16`).
    F16,
    /// 64-bit signed integer (`torch.int64`, e.g. `num_batches_tracked`).
    I64,
    /// Any other safetensors dtype (`U8`, `I32`, `BOOL`, `F8_E4M3`, ...), by its name. Such
    /// tensors are kept as bytes and written back unchanged, but not converted.
    Other(String),
}

impl Dtype {
    /// Whether the elements are floating point numbers normkit converts from and to
    /// (`F32`, `F64`, `BF16`, `F16`).
    pub fn is_float(&self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64 | Dtype::BF16 | Dtype::F16)
    }

    fn of(st: StDtype) -> Dtype {
        match st {
            StDtype::F32 => Dtype::F32,
            StDtype::F64 => Dtype::F64,
            StDtype::BF16 => Dtype::BF16,
            StDtype::F16 => Dtype::F16,
            StDtype::I64 => Dtype::I64,
            other => Dtype::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dtype::F32 => f.write_str("F32"),
            Dtype::F64 => f.write_str("F64"),
            Dtype::BF16 => f.write_str("BF16"),
            Dtype::F16 => f.write_str("F16"),
            Dtype::I64 => f.write_str("I64"),
            Dtype::Other(name) => f.write_str(name),
        }
    }
}

mod sealed {
    /// The conversions behind [`super::Element`].
    pub trait Sealed: Copy + 'static {
        /// The safetensors dtype.
        const ST: safetensors::Dtype;
        /// Bytes per element.
        const SIZE: usize;
        /// Whether the type is a float (converts from every float dtype).
        const FLOAT: bool;
        /// Appends the little-endian bytes.
        fn put(self, out: &mut Vec<u8>);
        /// Reads one element from `SIZE` little-endian bytes.
        fn get(bytes: &[u8]) -> Self;
        /// Rounds from f64 (floats only; never called for integers).
        fn from_f64(value: f64) -> Self;
    }
}

/// An element type a [`StateDict`] stores: `f32`, `f64`, [`bf16`], [`f16`](struct@f16), `i64`.
pub trait Element: sealed::Sealed {}

macro_rules! element {
    ($t:ty, $st:ident, $size:expr, $float:expr, $from:path) => {
        impl sealed::Sealed for $t {
            const ST: StDtype = StDtype::$st;
            const SIZE: usize = $size;
            const FLOAT: bool = $float;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut a = [0u8; $size];
                a.copy_from_slice(&bytes[..$size]);
                <$t>::from_le_bytes(a)
            }
            fn from_f64(value: f64) -> Self {
                $from(value)
            }
        }
        impl Element for $t {}
    };
}

fn f64_to_f32(v: f64) -> f32 {
    v as f32
}

fn f64_to_f64(v: f64) -> f64 {
    v
}

fn f64_to_i64(v: f64) -> i64 {
    v as i64
}

element!(f32, F32, 4, true, f64_to_f32);
element!(f64, F64, 8, true, f64_to_f64);
element!(bf16, BF16, 2, true, bf16::from_f64);
element!(f16, F16, 2, true, f16::from_f64);
element!(i64, I64, 8, false, f64_to_i64);

/// One tensor of a [`StateDict`]: dtype, shape, and the elements in row-major order (kept as
/// safetensors' little-endian bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Tensor {
    /// A tensor holding a copy of `array`'s elements (in logical row-major order, whatever
    /// its strides).
    pub fn from_array<E: Element, S: Data<Elem = E>, D: Dimension>(
        array: &ArrayBase<S, D>,
    ) -> Tensor {
        let mut data = Vec::with_capacity(array.len() * E::SIZE);
        for &v in array.iter() {
            v.put(&mut data);
        }
        Tensor {
            dtype: E::ST,
            shape: array.shape().to_vec(),
            data,
        }
    }

    /// A tensor of a layer's element type, stored as that type (`F32` for `f32` layers, `F64`
    /// for `f64`, `BF16`/`F16` for half-precision layers).
    fn from_float<T: Float>(array: &ArrayViewD<'_, T>) -> Tensor {
        match T::NAME {
            "f32" => Tensor::from_array(&array.mapv(|v| v.to_acc() as f32)),
            "bf16" => Tensor::from_array(&array.mapv(|v| bf16::from_f64(v.to_acc()))),
            "f16" => Tensor::from_array(&array.mapv(|v| f16::from_f64(v.to_acc()))),
            _ => Tensor::from_array(&array.mapv(|v| v.to_acc())),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        Dtype::of(self.dtype)
    }

    /// The shape (`[]` for a scalar such as `num_batches_tracked`).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements (an axis of size 0).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as stored: little-endian, row-major.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The elements as f64 (exact for every float dtype), or `None` for a non-float dtype.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        let d = &self.data;
        Some(match self.dtype {
            StDtype::F32 => d.chunks_exact(4).map(|b| f64::from(f32::get(b))).collect(),
            StDtype::F64 => d.chunks_exact(8).map(f64::get).collect(),
            StDtype::BF16 => d.chunks_exact(2).map(|b| bf16::get(b).to_f64()).collect(),
            StDtype::F16 => d.chunks_exact(2).map(|b| f16::get(b).to_f64()).collect(),
            _ => return None,
        })
    }

    /// The tensor as an array of `E`. Float types convert from every float dtype (rounding
    /// to nearest even when narrowing, e.g. an `F64` tensor as `f32`); `i64` needs an `I64`
    /// tensor. `None` when the dtype does not convert.
    pub fn to_array<E: Element>(&self) -> Option<ArrayD<E>> {
        let values: Vec<E> = if self.dtype == E::ST {
            self.data.chunks_exact(E::SIZE).map(E::get).collect()
        } else if E::FLOAT {
            self.to_f64_vec()?.into_iter().map(E::from_f64).collect()
        } else {
            return None;
        };
        ArrayD::from_shape_vec(IxDyn(&self.shape), values).ok()
    }

    /// "dtype F32, shape [3]", for messages.
    fn describe(&self) -> String {
        format!("dtype {}, shape {}", self.dtype(), dims(&self.shape))
    }
}

impl safetensors::View for &Tensor {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn dims(shape: &[usize]) -> String {
    let inner: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", inner.join(", "))
}

/// Named tensors, as PyTorch's `module.state_dict()` saved with
/// `safetensors.torch.save_file`: read and written in the safetensors format.
///
/// Keys are kept sorted. A file's `__metadata__` (free-form text pairs) is kept in
/// [`StateDict::metadata`] and written back. Tensors of dtypes normkit does not convert
/// (`U8`, `I32`, ...) are kept as bytes, so a whole model's file reads and writes back
/// unchanged even when only its norm layers are loaded.
///
/// ```
/// use ndarray::{arr0, arr1};
/// use norm_runtime::state_dict::{Dtype, StateDict};
///
/// let mut sd = StateDict::new();
/// sd.insert("bn.weight", &arr1(&[1.0f32, 2.0, 3.0]));
/// sd.insert("bn.num_batches_tracked", &arr0(5i64));
/// let bytes = sd.to_bytes()?;
/// let back = StateDict::from_bytes(&bytes)?;
/// assert_eq!(back, sd);
/// assert_eq!(back.get("bn.weight").unwrap().dtype(), Dtype::F32);
/// assert_eq!(back.keys().collect::<Vec<_>>(), ["bn.num_batches_tracked", "bn.weight"]);
/// # Ok::<(), norm_runtime::NormError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    tensors: BTreeMap<String, Tensor>,
    metadata: BTreeMap<String, String>,
}

fn file_error(path: &str, reason: String) -> NormError {
    NormError::StateDictFile {
        path: path.to_string(),
        reason,
    }
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        StateDict::default()
    }

    /// Reads a safetensors file. A truncated or corrupt file is an error (never a panic);
    /// memory use is bounded by the file's size.
    pub fn read(path: impl AsRef<Path>) -> Result<StateDict, NormError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| file_error(&shown, format!("cannot read the file: {e}")))?;
        StateDict::parse(&bytes, &shown)
    }

    /// Reads the bytes of a safetensors file.
    pub fn from_bytes(bytes: &[u8]) -> Result<StateDict, NormError> {
        StateDict::parse(bytes, "<bytes>")
    }

    fn parse(bytes: &[u8], shown: &str) -> Result<StateDict, NormError> {
        let invalid = |e: String| file_error(shown, format!("not a valid safetensors file: {e}"));
        // Validates the header: its length against the buffer, the JSON, every tensor's
        // shape × dtype against its offsets, and that the offsets tile the data exactly.
        let (n, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| invalid(e.to_string()))?;
        let data = bytes.get(8 + n..).unwrap_or_default();
        let mut tensors = BTreeMap::new();
        for (name, info) in header.tensors() {
            let (start, end) = info.data_offsets;
            let Some(slice) = data.get(start..end) else {
                return Err(invalid(format!(
                    "the offsets of `{name}` are outside the data"
                )));
            };
            let tensor = Tensor {
                dtype: info.dtype,
                shape: info.shape.clone(),
                data: slice.to_vec(),
            };
            tensors.insert(name, tensor);
        }
        let metadata = header
            .metadata()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(StateDict { tensors, metadata })
    }

    /// The safetensors bytes (the format of `safetensors.torch.save`): tensors ordered by
    /// dtype alignment, then name, as the reference implementation writes them.
    pub fn to_bytes(&self) -> Result<Vec<u8>, NormError> {
        self.serialize("<bytes>")
    }

    fn serialize(&self, shown: &str) -> Result<Vec<u8>, NormError> {
        let metadata = (!self.metadata.is_empty()).then(|| {
            self.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<String, String>>()
        });
        safetensors::serialize(self.tensors.iter().map(|(k, t)| (k.as_str(), t)), metadata)
            .map_err(|e| file_error(shown, format!("cannot serialize: {e}")))
    }

    /// Writes a safetensors file (the bytes of [`StateDict::to_bytes`]).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), NormError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let bytes = self.serialize(&shown)?;
        std::fs::write(path, bytes)
            .map_err(|e| file_error(&shown, format!("cannot write the file: {e}")))
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The tensor named `name` as an array of `E` (see [`Tensor::to_array`]): an error names
    /// the key when it is missing or its dtype does not convert.
    pub fn get_array<E: Element>(&self, name: &str) -> Result<ArrayD<E>, NormError> {
        let wanted = Dtype::of(E::ST);
        let expected = if E::FLOAT {
            "a float tensor (F32, F64, BF16 or F16)".to_string()
        } else {
            format!("a {wanted} tensor")
        };
        let err = |found: String| NormError::StateDictKey {
            layer: "StateDict".to_string(),
            key: name.to_string(),
            expected: expected.clone(),
            found,
        };
        let t = self.get(name).ok_or_else(|| err("no such key".into()))?;
        t.to_array().ok_or_else(|| err(t.describe()))
    }

    /// Stores a copy of `array` under `name` with its element type's dtype, replacing (and
    /// returning) a tensor of that name.
    pub fn insert<E: Element, S: Data<Elem = E>, D: Dimension>(
        &mut self,
        name: impl Into<String>,
        array: &ArrayBase<S, D>,
    ) -> Option<Tensor> {
        self.tensors.insert(name.into(), Tensor::from_array(array))
    }

    /// Stores `tensor` under `name`, replacing (and returning) a tensor of that name.
    pub fn insert_tensor(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        self.tensors.insert(name.into(), tensor)
    }

    /// Removes and returns the tensor named `name`.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// The names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.tensors.keys().map(String::as_str)
    }

    /// Names and tensors, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> + '_ {
        self.tensors.iter().map(|(k, t)| (k.as_str(), t))
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The file's `__metadata__` text pairs (written back when not empty).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Mutable access to the `__metadata__` text pairs.
    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.metadata
    }
}

/// One stage's parameters and running statistics, borrowed from a layer by name
/// ([`crate::NormLayer::tensors`]; also what the state-dict methods save).
#[derive(Debug)]
pub struct StageTensors<'a, T> {
    /// The chain stage's name (`bn`, `gn`), empty for a single-stage layer.
    pub name: &'a str,
    /// `gamma` (PyTorch `weight`).
    pub gamma: Option<ArrayViewD<'a, T>>,
    /// `beta` (PyTorch `bias`).
    pub beta: Option<ArrayViewD<'a, T>>,
    /// `running_mean`.
    pub running_mean: Option<ArrayViewD<'a, T>>,
    /// `running_var`.
    pub running_var: Option<ArrayViewD<'a, T>>,
    /// `num_batches_tracked` (with running statistics).
    pub num_batches_tracked: Option<u64>,
    /// Switchable Normalization's `mean_weight` (the official implementation's name).
    pub mean_weight: Option<ArrayViewD<'a, T>>,
    /// Switchable Normalization's `var_weight`.
    pub var_weight: Option<ArrayViewD<'a, T>>,
}

/// One stage's parameters and running statistics, borrowed mutably by name
/// ([`crate::NormLayer::tensors_mut`]; also what the state-dict methods load).
#[derive(Debug)]
pub struct StageTensorsMut<'a, T> {
    /// The chain stage's name (`bn`, `gn`), empty for a single-stage layer.
    pub name: &'a str,
    /// `gamma` (PyTorch `weight`).
    pub gamma: Option<ArrayViewMutD<'a, T>>,
    /// `beta` (PyTorch `bias`).
    pub beta: Option<ArrayViewMutD<'a, T>>,
    /// `running_mean`.
    pub running_mean: Option<ArrayViewMutD<'a, T>>,
    /// `running_var`.
    pub running_var: Option<ArrayViewMutD<'a, T>>,
    /// `num_batches_tracked` (with running statistics).
    pub num_batches_tracked: Option<&'a mut u64>,
    /// Switchable Normalization's `mean_weight`.
    pub mean_weight: Option<ArrayViewMutD<'a, T>>,
    /// Switchable Normalization's `var_weight`.
    pub var_weight: Option<ArrayViewMutD<'a, T>>,
}

/// PyTorch's names of the float tensors, in the order of `StageTensors`' fields (Switchable
/// Normalization's logits under the official implementation's names).
const FLOAT_KEYS: [&str; 6] = [
    "weight",
    "bias",
    "running_mean",
    "running_var",
    "mean_weight",
    "var_weight",
];
const COUNT_KEY: &str = "num_batches_tracked";

fn key_of(prefix: &str, stage: &str, leaf: &str) -> String {
    if stage.is_empty() {
        format!("{prefix}{leaf}")
    } else {
        format!("{prefix}{stage}.{leaf}")
    }
}

/// Writes a layer's tensors into `sd` under `prefix` (replacing keys of the same name).
#[doc(hidden)]
pub fn save_stages<T: Float>(sd: &mut StateDict, prefix: &str, stages: &[StageTensors<'_, T>]) {
    for st in stages {
        let floats = [
            &st.gamma,
            &st.beta,
            &st.running_mean,
            &st.running_var,
            &st.mean_weight,
            &st.var_weight,
        ];
        for (leaf, slot) in FLOAT_KEYS.iter().zip(floats) {
            if let Some(view) = slot {
                sd.insert_tensor(key_of(prefix, st.name, leaf), Tensor::from_float(view));
            }
        }
        if let Some(n) = st.num_batches_tracked {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            sd.insert(key_of(prefix, st.name, COUNT_KEY), &ndarray::arr0(n));
        }
    }
}

/// Whether a tensor of shape `found` holds the elements of shape `expected` in the same
/// order: equal shapes, or equal after dropping axes of size 1 (a `[1, G, 1]` parameter of
/// the official Batch-Channel Norm code into normkit's `[G]`).
fn same_layout(expected: &[usize], found: &[usize]) -> bool {
    expected == found
        || expected
            .iter()
            .filter(|&&n| n != 1)
            .eq(found.iter().filter(|&&n| n != 1))
}

/// Loads a layer's tensors from `sd` under `prefix`, strictly: every key the layer has must
/// be there with a float dtype (an `I64` scalar for `num_batches_tracked`) and the layer's
/// shape, and no other key may start with `prefix`. Everything is checked before anything is
/// written, so on error the layer is unchanged.
#[doc(hidden)]
pub fn load_stages<T: Float>(
    layer: &str,
    sd: &StateDict,
    prefix: &str,
    stages: &mut [StageTensorsMut<'_, T>],
) -> Result<(), NormError> {
    let err = |key: &str, expected: String, found: String| NormError::StateDictKey {
        layer: layer.to_string(),
        key: key.to_string(),
        expected,
        found,
    };
    let mut values: Vec<Vec<T>> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut known: Vec<String> = Vec::new();
    for st in stages.iter() {
        let floats = [
            &st.gamma,
            &st.beta,
            &st.running_mean,
            &st.running_var,
            &st.mean_weight,
            &st.var_weight,
        ];
        for (leaf, slot) in FLOAT_KEYS.iter().zip(floats) {
            let Some(view) = slot else { continue };
            let key = key_of(prefix, st.name, leaf);
            let expected = format!(
                "a float tensor (F32, F64, BF16 or F16) of shape {}",
                dims(view.shape())
            );
            let Some(t) = sd.get(&key) else {
                return Err(err(&key, expected, "no such key".into()));
            };
            let converted = match t.to_f64_vec() {
                Some(v) if same_layout(view.shape(), t.shape()) => v,
                _ => return Err(err(&key, expected, t.describe())),
            };
            values.push(converted.into_iter().map(T::from_acc).collect());
            known.push(key);
        }
        if st.num_batches_tracked.is_some() {
            let key = key_of(prefix, st.name, COUNT_KEY);
            let expected = "an I64 scalar (shape []) >= 0".to_string();
            let Some(t) = sd.get(&key) else {
                return Err(err(&key, expected, "no such key".into()));
            };
            let n = match t.to_array::<i64>() {
                Some(a) if same_layout(&[], t.shape()) => a.iter().next().copied(),
                _ => None,
            };
            match n.map(u64::try_from) {
                Some(Ok(n)) => counts.push(n),
                Some(Err(_)) => {
                    let found = format!("{}, value {}", t.describe(), n.unwrap_or_default());
                    return Err(err(&key, expected, found));
                }
                None => return Err(err(&key, expected, t.describe())),
            }
            known.push(key);
        }
    }
    if let Some((key, t)) = sd
        .iter()
        .find(|(k, _)| k.starts_with(prefix) && !known.iter().any(|n| n == k))
    {
        let names: Vec<String> = known
            .iter()
            .map(|k| format!("`{}`", &k[prefix.len()..]))
            .collect();
        let expected = if names.is_empty() {
            format!("no key under `{prefix}` (the layer has no parameters or running statistics)")
        } else {
            format!(
                "no such key (the layer's keys under `{prefix}` are {})",
                names.join(", ")
            )
        };
        return Err(err(key, expected, t.describe()));
    }
    // Everything checked: write.
    let mut values = values.into_iter();
    let mut counts = counts.into_iter();
    for st in stages.iter_mut() {
        let slots = [
            &mut st.gamma,
            &mut st.beta,
            &mut st.running_mean,
            &mut st.running_var,
            &mut st.mean_weight,
            &mut st.var_weight,
        ];
        for view in slots.into_iter().flatten() {
            if let Some(v) = values.next() {
                for (d, s) in view.iter_mut().zip(v) {
                    *d = s;
                }
            }
        }
        if let Some(c) = st.num_batches_tracked.as_deref_mut() {
            if let Some(n) = counts.next() {
                *c = n;
            }
        }
    }
    Ok(())
}

/// PyTorch state dicts for layers configured at run time.
impl<T: Float> DynNorm<T> {
    fn stage_names(&self) -> Vec<String> {
        let spec = self.spec().spec();
        spec.stages
            .iter()
            .map(|s| {
                if spec.chain {
                    s.name.to_string()
                } else {
                    String::new()
                }
            })
            .collect()
    }

    /// Writes the layer's parameters and running statistics into `sd` under PyTorch's names:
    /// `{prefix}weight` (γ), `{prefix}bias` (β), `{prefix}running_mean`,
    /// `{prefix}running_var`, `{prefix}num_batches_tracked` (an `I64` scalar); a chain's
    /// stages under `{prefix}{stage}.`. Tensors have the layer's element type.
    pub fn save_into(&self, sd: &mut StateDict, prefix: &str) {
        let names = self.stage_names();
        let stages: Vec<StageTensors<'_, T>> = self
            .stages()
            .iter()
            .zip(&names)
            .map(|(p, name)| StageTensors {
                name,
                gamma: p.gamma.as_ref().map(|a| a.view()),
                beta: p.beta.as_ref().map(|a| a.view()),
                running_mean: p.running_mean.as_ref().map(|a| a.view()),
                running_var: p.running_var.as_ref().map(|a| a.view()),
                num_batches_tracked: p.running_mean.is_some().then_some(p.num_batches_tracked),
                mean_weight: p.mean_weight.as_ref().map(|a| a.view()),
                var_weight: p.var_weight.as_ref().map(|a| a.view()),
            })
            .collect();
        save_stages(sd, prefix, &stages);
    }

    /// The layer's parameters and running statistics as a new [`StateDict`] (see
    /// [`DynNorm::save_into`]).
    pub fn state_dict(&self, prefix: &str) -> StateDict {
        let mut sd = StateDict::new();
        self.save_into(&mut sd, prefix);
        sd
    }

    /// Loads the layer's parameters and running statistics from `sd` under `prefix`
    /// (PyTorch's names, see [`DynNorm::save_into`]), converting from any float dtype.
    ///
    /// Strict: a missing key, a key under `prefix` the layer does not have, a shape other
    /// than the layer's (up to axes of size 1) or a non-float dtype is a
    /// [`NormError::StateDictKey`] naming the key, and the layer is unchanged.
    pub fn load_state_dict(&mut self, sd: &StateDict, prefix: &str) -> Result<(), NormError> {
        let names = self.stage_names();
        let layer = self.name().to_string();
        let mut stages: Vec<StageTensorsMut<'_, T>> = self
            .stages_mut()
            .iter_mut()
            .zip(&names)
            .map(|(p, name)| {
                let running = p.running_mean.is_some();
                StageTensorsMut {
                    name,
                    gamma: p.gamma.as_mut().map(|a| a.view_mut()),
                    beta: p.beta.as_mut().map(|a| a.view_mut()),
                    running_mean: p.running_mean.as_mut().map(|a| a.view_mut()),
                    running_var: p.running_var.as_mut().map(|a| a.view_mut()),
                    num_batches_tracked: running.then_some(&mut p.num_batches_tracked),
                    mean_weight: p.mean_weight.as_mut().map(|a| a.view_mut()),
                    var_weight: p.var_weight.as_mut().map(|a| a.view_mut()),
                }
            })
            .collect();
        load_stages(&layer, sd, prefix, &mut stages)
    }
}
