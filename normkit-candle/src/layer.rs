//! The layers the candle op runs: any [`normkit::NormLayer`] (every `#[norm]` declaration
//! and [`DynNorm`]), picked by the element type of a call through [`CandleLayer`].
//!
//! [`SpecLayer`] holds an `f32` and an `f64` copy of one spec so a module computes in
//! whatever dtype its tensors have.

use std::borrow::Cow;

use candle_core::Result;
use normkit::ndarray::ArrayViewMutD;
use normkit::{DynNorm, Float, NormSpec};

use crate::error::{msg, norm_err};

/// The state of one stage of a layer, borrowed mutably: what the candle op reads parameters
/// and running statistics into, and the updated running statistics out of.
///
/// The field names are those of the `#[norm]`-generated structs (the parameters keep the
/// PyTorch names `weight`/`bias` in a `VarBuilder`).
#[derive(Debug)]
pub struct StageMut<'a, T> {
    /// The stage's name in a chain (`""` for a single-stage layer): the `VarBuilder` prefix
    /// of its parameters.
    pub name: Cow<'static, str>,
    /// The stage takes its scale and shift from outside (`affine = external`).
    pub external: bool,
    /// `gamma` (PyTorch `weight`).
    pub gamma: Option<ArrayViewMutD<'a, T>>,
    /// `beta` (PyTorch `bias`).
    pub beta: Option<ArrayViewMutD<'a, T>>,
    /// `running_mean`.
    pub running_mean: Option<ArrayViewMutD<'a, T>>,
    /// `running_var`.
    pub running_var: Option<ArrayViewMutD<'a, T>>,
    /// `num_batches_tracked`.
    pub num_batches_tracked: Option<&'a mut u64>,
}

impl<T> StageMut<'_, T> {
    /// A stage with nothing borrowed yet.
    pub fn empty(name: impl Into<Cow<'static, str>>, external: bool) -> Self {
        StageMut {
            name: name.into(),
            external,
            gamma: None,
            beta: None,
            running_mean: None,
            running_var: None,
            num_batches_tracked: None,
        }
    }
}

/// The stages of `layer` as [`StageMut`] entries: its named parameters and running
/// statistics ([`normkit::NormLayer::tensors_mut`]) with the stage's `affine = external`
/// flag.
pub fn stages_of<L: normkit::NormLayer + ?Sized>(layer: &mut L) -> Vec<StageMut<'_, L::Elem>> {
    let n = layer.layer_spec().stages.len();
    let external: Vec<bool> = (0..n).map(|k| layer.is_external(k)).collect();
    layer
        .tensors_mut()
        .into_iter()
        .zip(external)
        .map(|(t, external)| StageMut {
            name: Cow::Owned(t.name.to_string()),
            external,
            gamma: t.gamma,
            beta: t.beta,
            running_mean: t.running_mean,
            running_var: t.running_var,
            num_batches_tracked: t.num_batches_tracked,
        })
        .collect()
}

/// A layer the candle op can run: it hands out the [`normkit::NormLayer`] for the element
/// type of the call (`None` for a type it does not compute in).
///
/// Implemented by every [`normkit::NormLayer`] in `f32` or `f64` — each `#[norm]`
/// declaration and [`DynNorm`] — and by [`SpecLayer`] (both types).
pub trait CandleLayer: Send + 'static {
    /// The layer in `f32`, if it computes in `f32`.
    fn as_f32(&mut self) -> Option<&mut dyn normkit::NormLayer<Elem = f32>> {
        None
    }
    /// The layer in `f64`, if it computes in `f64`.
    fn as_f64(&mut self) -> Option<&mut dyn normkit::NormLayer<Elem = f64>> {
        None
    }
}

/// The element types a candle module computes in, picking a layer's view for each.
#[doc(hidden)]
pub trait PickElem: Float {
    /// `layer` as an `f32` layer, if `Self` is `f32`.
    fn pick_f32<L: normkit::NormLayer<Elem = Self> + 'static>(
        layer: &mut L,
    ) -> Option<&mut dyn normkit::NormLayer<Elem = f32>>;
    /// `layer` as an `f64` layer, if `Self` is `f64`.
    fn pick_f64<L: normkit::NormLayer<Elem = Self> + 'static>(
        layer: &mut L,
    ) -> Option<&mut dyn normkit::NormLayer<Elem = f64>>;
}

impl PickElem for f32 {
    fn pick_f32<L: normkit::NormLayer<Elem = f32> + 'static>(
        layer: &mut L,
    ) -> Option<&mut dyn normkit::NormLayer<Elem = f32>> {
        Some(layer)
    }
    fn pick_f64<L: normkit::NormLayer<Elem = f32> + 'static>(
        _: &mut L,
    ) -> Option<&mut dyn normkit::NormLayer<Elem = f64>> {
        None
    }
}

impl PickElem for f64 {
    fn pick_f32<L: normkit::NormLayer<Elem = f64> + 'static>(
        _: &mut L,
    ) -> Option<&mut dyn normkit::NormLayer<Elem = f32>> {
        None
    }
    fn pick_f64<L: normkit::NormLayer<Elem = f64> + 'static>(
        layer: &mut L,
    ) -> Option<&mut dyn normkit::NormLayer<Elem = f64>> {
        Some(layer)
    }
}

impl<L> CandleLayer for L
where
    L: normkit::NormLayer + Send + 'static,
    L::Elem: PickElem,
{
    fn as_f32(&mut self) -> Option<&mut dyn normkit::NormLayer<Elem = f32>> {
        L::Elem::pick_f32(self)
    }
    fn as_f64(&mut self) -> Option<&mut dyn normkit::NormLayer<Elem = f64>> {
        L::Elem::pick_f64(self)
    }
}

/// A run-time configured layer in both element types: an `f32` and an `f64` [`DynNorm`] of
/// one spec, so the dtype of the tensors decides at each call. The engine of the drop-in
/// modules.
///
/// ```
/// use normkit_candle::SpecLayer;
/// let gn = SpecLayer::new(r#"input = "N,C,L", axes = "C,L", groups = 4, affine"#, &[("C", 16)])?;
/// assert!(gn.spec().to_string().contains("groups"));
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SpecLayer {
    f32: DynNorm<f32>,
    f64: DynNorm<f64>,
}

impl SpecLayer {
    /// Parses `spec` (the `#[norm(...)]` syntax) and sizes its parameters (e.g.
    /// `&[("C", 64)]`). The parser's and the constructor's messages become the error.
    pub fn new(spec: &str, sizes: &[(&str, usize)]) -> Result<Self> {
        let spec = NormSpec::parse(spec).map_err(|e| msg(format!("normkit spec: {e}")))?;
        Self::from_spec(&spec, sizes)
    }

    /// A layer for an already parsed spec.
    pub fn from_spec(spec: &NormSpec, sizes: &[(&str, usize)]) -> Result<Self> {
        Ok(SpecLayer {
            f32: DynNorm::new(spec, sizes).map_err(norm_err)?,
            f64: DynNorm::new(spec, sizes).map_err(norm_err)?,
        })
    }

    /// Sets the name shown in error messages.
    pub fn with_name(self, name: &str) -> Self {
        SpecLayer {
            f32: self.f32.with_name(name),
            f64: self.f64.with_name(name),
        }
    }

    /// The configuration.
    pub fn spec(&self) -> &NormSpec {
        self.f32.spec()
    }
}

impl CandleLayer for SpecLayer {
    fn as_f32(&mut self) -> Option<&mut dyn normkit::NormLayer<Elem = f32>> {
        Some(&mut self.f32)
    }
    fn as_f64(&mut self) -> Option<&mut dyn normkit::NormLayer<Elem = f64>> {
        Some(&mut self.f64)
    }
}
