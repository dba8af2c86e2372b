//! `Serialize`/`Deserialize` (feature `serde`) for the values a configuration file carries:
//! a [`NormSpec`] (as its text), [`Moments`], a [`DynNorm`](crate::DynNorm) stage's
//! [`StageParams`], and a [`StateDict`] (what `state_dict`/`load_state_dict` get from and
//! set on any layer).
//!
//! Formats (shown as JSON):
//! - `NormSpec`: the canonical text, `"input = \"N,C,H,W\", axes = \"N,H,W\", ..."`; any
//!   text `NormSpec::parse` accepts deserializes, anything else is an error with the
//!   parser's messages.
//! - `Moments`, `StageParams`: structs whose arrays use ndarray's format
//!   (`{"v": 1, "dim": [3], "data": [...]}`).
//! - `StateDict`: a map from tensor names to `{"dtype": "F32", "shape": [3], "data": [...]}`,
//!   plus `"__metadata__": {...}` when the metadata is not empty. Float data are written as
//!   the exact f64 value of each element (so `F32`, `BF16`, `F16` round-trip exactly; `F64`
//!   round-trips exactly with a serializer that does, e.g. serde_json's `float_roundtrip`);
//!   NaN and infinities as the strings `"NaN"`, `"inf"`, `"-inf"`. `I64` data are integers.
//!   Tensors of other dtypes (`U8`, ...) are not serializable.

use std::collections::BTreeMap;
use std::fmt;

use ndarray::{ArrayD, IxDyn};
use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};

use crate::dynamic::{NormSpec, StageParams};
use crate::state_dict::{bf16, f16, Dtype, Element, StateDict, Tensor};
use crate::types::Moments;

impl Serialize for NormSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NormSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        NormSpec::parse(&text).map_err(|e| de::Error::custom(format!("invalid NormSpec: {e}")))
    }
}

#[derive(Serialize)]
struct MomentsRef<'a, T> {
    mean: &'a ArrayD<T>,
    var: &'a ArrayD<T>,
}

#[derive(Deserialize)]
struct MomentsOwned<T> {
    mean: ArrayD<T>,
    var: ArrayD<T>,
}

impl<T: Serialize> Serialize for Moments<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MomentsRef {
            mean: &self.mean,
            var: &self.var,
        }
        .serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Moments<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let m = MomentsOwned::<T>::deserialize(deserializer)?;
        if m.mean.shape() != m.var.shape() {
            return Err(de::Error::custom(format!(
                "Moments: mean has shape {:?} but var has shape {:?}",
                m.mean.shape(),
                m.var.shape()
            )));
        }
        Ok(Moments {
            mean: m.mean,
            var: m.var,
        })
    }
}

#[derive(Serialize)]
struct StageParamsRef<'a, T> {
    gamma: &'a Option<ArrayD<T>>,
    beta: &'a Option<ArrayD<T>>,
    running_mean: &'a Option<ArrayD<T>>,
    running_var: &'a Option<ArrayD<T>>,
    num_batches_tracked: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tau: &'a Option<ArrayD<T>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rmax: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dmax: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mean_weight: &'a Option<ArrayD<T>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    var_weight: &'a Option<ArrayD<T>>,
}

#[derive(Deserialize)]
struct StageParamsOwned<T> {
    gamma: Option<ArrayD<T>>,
    beta: Option<ArrayD<T>>,
    running_mean: Option<ArrayD<T>>,
    running_var: Option<ArrayD<T>>,
    num_batches_tracked: u64,
    #[serde(default = "none")]
    tau: Option<ArrayD<T>>,
    #[serde(default)]
    rmax: Option<f64>,
    #[serde(default)]
    dmax: Option<f64>,
    #[serde(default = "none")]
    mean_weight: Option<ArrayD<T>>,
    #[serde(default = "none")]
    var_weight: Option<ArrayD<T>>,
}

/// An absent optional tensor (older serialized stages have no `tau`).
fn none<T>() -> Option<T> {
    None
}

impl<T: Serialize> Serialize for StageParams<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StageParamsRef {
            gamma: &self.gamma,
            beta: &self.beta,
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            num_batches_tracked: self.num_batches_tracked,
            tau: &self.tau,
            rmax: self.rmax,
            dmax: self.dmax,
            mean_weight: &self.mean_weight,
            var_weight: &self.var_weight,
        }
        .serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StageParams<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let p = StageParamsOwned::<T>::deserialize(deserializer)?;
        Ok(StageParams {
            gamma: p.gamma,
            beta: p.beta,
            running_mean: p.running_mean,
            running_var: p.running_var,
            num_batches_tracked: p.num_batches_tracked,
            tau: p.tau,
            rmax: p.rmax,
            dmax: p.dmax,
            mean_weight: p.mean_weight,
            var_weight: p.var_weight,
        })
    }
}

/// One element of a tensor's `data`: an integer, a float, or a non-finite float's name.
#[derive(Deserialize)]
#[serde(untagged)]
enum Num {
    Int(i64),
    Float(f64),
    Name(String),
}

/// A float element as written: the number, or `"NaN"`, `"inf"`, `"-inf"`.
struct FloatOut(f64);

impl Serialize for FloatOut {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_finite() {
            serializer.serialize_f64(v)
        } else if v.is_nan() {
            serializer.serialize_str("NaN")
        } else if v > 0.0 {
            serializer.serialize_str("inf")
        } else {
            serializer.serialize_str("-inf")
        }
    }
}

#[derive(Serialize)]
struct TensorOut<'a, D> {
    dtype: String,
    shape: &'a [usize],
    data: D,
}

impl Serialize for Tensor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let dtype = self.dtype();
        let shape = self.shape();
        if let Some(values) = self.to_f64_vec() {
            let data: Vec<FloatOut> = values.into_iter().map(FloatOut).collect();
            let dtype = dtype.to_string();
            return TensorOut { dtype, shape, data }.serialize(serializer);
        }
        match self.to_array::<i64>() {
            Some(a) if dtype == Dtype::I64 => {
                let data: Vec<i64> = a.iter().copied().collect();
                let dtype = dtype.to_string();
                TensorOut { dtype, shape, data }.serialize(serializer)
            }
            _ => Err(ser::Error::custom(format!(
                "a {dtype} tensor cannot be serialized (only F32, F64, BF16, F16 and I64)"
            ))),
        }
    }
}

#[derive(Deserialize)]
struct TensorIn {
    dtype: String,
    shape: Vec<usize>,
    data: Vec<Num>,
}

fn float_of(n: &Num) -> Result<f64, String> {
    match n {
        Num::Int(i) => Ok(*i as f64),
        Num::Float(f) => Ok(*f),
        Num::Name(s) => match s.as_str() {
            "NaN" | "nan" => Ok(f64::NAN),
            "inf" | "+inf" | "Infinity" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(format!("`{s}` is not a number (NaN, inf and -inf are)")),
        },
    }
}

fn build<E: Element>(shape: &[usize], data: Vec<E>) -> Result<Tensor, String> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| e.to_string())?;
    Ok(Tensor::from_array(&a))
}

impl TensorIn {
    fn into_tensor(self) -> Result<Tensor, String> {
        let n = self
            .shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| format!("shape {:?} overflows", self.shape))?;
        if n != self.data.len() {
            return Err(format!(
                "shape {:?} has {n} elements but data has {}",
                self.shape,
                self.data.len()
            ));
        }
        let floats = || {
            self.data
                .iter()
                .map(float_of)
                .collect::<Result<Vec<_>, _>>()
        };
        match self.dtype.as_str() {
            "F32" => build(
                &self.shape,
                floats()?.into_iter().map(|v| v as f32).collect(),
            ),
            "F64" => build(&self.shape, floats()?),
            "BF16" => build(
                &self.shape,
                floats()?.into_iter().map(bf16::from_f64).collect(),
            ),
            "F16" => build(
                &self.shape,
                floats()?.into_iter().map(f16::from_f64).collect(),
            ),
            "I64" => {
                let ints = self
                    .data
                    .iter()
                    .map(|n| match n {
                        Num::Int(i) => Ok(*i),
                        _ => Err("an I64 tensor holds integers only".to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                build(&self.shape, ints)
            }
            other => Err(format!(
                "dtype `{other}` is not one of F32, F64, BF16, F16, I64"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Tensor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        TensorIn::deserialize(deserializer)?
            .into_tensor()
            .map_err(de::Error::custom)
    }
}

impl Serialize for StateDict {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeMap;
        let extra = usize::from(!self.metadata().is_empty());
        let mut map = serializer.serialize_map(Some(self.len() + extra))?;
        if !self.metadata().is_empty() {
            map.serialize_entry("__metadata__", self.metadata())?;
        }
        for (name, t) in self.iter() {
            map.serialize_entry(name, t)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for StateDict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = StateDict;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from tensor names to {dtype, shape, data}")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<StateDict, A::Error> {
                let mut sd = StateDict::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__metadata__" {
                        *sd.metadata_mut() = map.next_value::<BTreeMap<String, String>>()?;
                        continue;
                    }
                    let t = map.next_value::<TensorIn>()?.into_tensor().map_err(|e| {
                        <A::Error as de::Error>::custom(format!("tensor `{key}`: {e}"))
                    })?;
                    if sd.insert_tensor(key.clone(), t).is_some() {
                        return Err(de::Error::custom(format!("tensor `{key}` appears twice")));
                    }
                }
                Ok(sd)
            }
        }
        deserializer.deserialize_map(Visit)
    }
}
