//! [`NormModule`]: any normkit layer as a candle module, its state in a `VarBuilder` under
//! PyTorch's names.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, ModuleT, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use normkit::Mode;

use crate::error::msg;
use crate::layer::{stages_of, CandleLayer};
use crate::op;

/// The candle tensors of one stage's state.
#[derive(Clone, Debug)]
pub(crate) struct StageVars {
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub running_mean: Option<Var>,
    pub running_var: Option<Var>,
    /// `num_batches_tracked` in the `VarBuilder` (an `i64` scalar, as PyTorch stores it),
    /// when the builder has or can make one.
    pub tracked_var: Option<Var>,
    /// The count itself (kept here too: a safetensors file from candle-nn has none).
    pub tracked: Option<Arc<Mutex<u64>>>,
}

/// The shapes of one stage's state, read from the layer.
struct StageShapes {
    name: String,
    gamma: Option<Vec<usize>>,
    beta: Option<Vec<usize>>,
    running: Option<Vec<usize>>,
    tracked: bool,
    external: bool,
}

fn shapes<L: CandleLayer>(layer: &mut L, dtype: DType, name: &str) -> Result<Vec<StageShapes>> {
    fn read<T>(stages: Vec<crate::StageMut<'_, T>>) -> Vec<StageShapes> {
        stages
            .into_iter()
            .map(|s| StageShapes {
                name: s.name.to_string(),
                gamma: s.gamma.as_ref().map(|a| a.shape().to_vec()),
                beta: s.beta.as_ref().map(|a| a.shape().to_vec()),
                running: s.running_mean.as_ref().map(|a| a.shape().to_vec()),
                tracked: s.num_batches_tracked.is_some(),
                external: s.external,
            })
            .collect()
    }
    match dtype {
        DType::F32 => layer.as_f32().map(|l| read(stages_of(l))),
        DType::F64 => layer.as_f64().map(|l| read(stages_of(l))),
        _ => None,
    }
    .ok_or_else(|| {
        msg(format!(
            "{name}: the layer does not compute in {dtype:?} (the VarBuilder's dtype); normkit \
             computes in f32 and f64"
        ))
    })
}

/// Any normkit layer as a candle module: a [`crate::SpecLayer`], a [`normkit::DynNorm`], or
/// your own `#[norm]` declaration (every [`normkit::NormLayer`]).
///
/// The parameters come from the `VarBuilder` under PyTorch's names — `weight`, `bias`,
/// `running_mean`, `running_var`, `num_batches_tracked`, with the stage name as prefix in a
/// chain (`bn.weight`) — so they train with candle's optimizers and save and load with
/// `VarMap`. Forward and backward run normkit's kernels through a candle custom op: the
/// gradients of the input and of every parameter come from normkit's fused backward.
///
/// ```
/// use candle_core::{DType, Device, ModuleT, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use normkit::prelude::*;
/// use normkit_candle::NormModule;
///
/// /// A new variant: group statistics, one γ/β per group.
/// #[norm(input = "N,C,L", axes = "C,L", groups = 2, affine = "G")]
/// pub struct PerGroup;
///
/// let map = VarMap::new();
/// let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
/// let norm = NormModule::new(PerGroup::<f32>::new(), vb.pp("norm"))?;
/// let x = Tensor::randn(0f32, 1., (4, 6, 5), &Device::Cpu)?;
/// let y = norm.forward_t(&x, true)?;
/// let grads = (y.sqr()?.sum_all()?).backward()?;
/// let weight = map.data().lock().unwrap()["norm.weight"].clone();
/// assert_eq!(grads.get(&weight).unwrap().dims(), &[2]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub struct NormModule<L> {
    layer: Arc<Mutex<L>>,
    stages: Vec<StageVars>,
    external: Option<usize>,
    dtype: DType,
    name: String,
}

impl<L> Clone for NormModule<L> {
    fn clone(&self) -> Self {
        NormModule {
            layer: Arc::clone(&self.layer),
            stages: self.stages.clone(),
            external: self.external,
            dtype: self.dtype,
            name: self.name.clone(),
        }
    }
}

impl<L> std::fmt::Debug for NormModule<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NormModule")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("stages", &self.stages)
            .finish()
    }
}

fn tracked_var(vb: &VarBuilder<'_>) -> Option<Var> {
    let name = "num_batches_tracked";
    // A VarMap makes the variable; a checkpoint without one (candle-nn's) keeps the count
    // in the module only.
    let t = vb
        .get_with_hints_dtype((), name, Init::Const(0.), DType::I64)
        .ok()?;
    Var::from_tensor(&t).ok()
}

impl<L: CandleLayer> NormModule<L> {
    /// Wraps `layer`, taking its parameters from `vb` (created there with the layer's
    /// initial values — γ = 1, β = 0, running mean 0, running variance 1 — when `vb` is
    /// backed by a `VarMap`). The module computes in `vb`'s dtype.
    pub fn new(layer: L, vb: VarBuilder<'_>) -> Result<Self> {
        let name = std::any::type_name::<L>()
            .rsplit("::")
            .next()
            .unwrap_or("layer")
            .to_string();
        Self::with_name(layer, vb, &name)
    }

    /// [`NormModule::new`] with the name shown in error messages.
    pub fn with_name(mut layer: L, vb: VarBuilder<'_>, name: &str) -> Result<Self> {
        let dtype = vb.dtype();
        let shapes = shapes(&mut layer, dtype, name)?;
        let mut stages = Vec::new();
        let mut external = None;
        for s in shapes {
            let vb = if s.name.is_empty() {
                vb.clone()
            } else {
                vb.pp(&s.name)
            };
            let get = |shape: &Option<Vec<usize>>, key: &str, init: f64| {
                shape
                    .as_ref()
                    .map(|sh| vb.get_with_hints(sh.as_slice(), key, Init::Const(init)))
                    .transpose()
            };
            let var = |t: Option<Tensor>| t.map(|t| Var::from_tensor(&t)).transpose();
            if s.external {
                external = Some(stages.len());
            }
            stages.push(StageVars {
                weight: get(&s.gamma, "weight", 1.0)?,
                bias: get(&s.beta, "bias", 0.0)?,
                running_mean: var(get(&s.running, "running_mean", 0.0)?)?,
                running_var: var(get(&s.running, "running_var", 1.0)?)?,
                tracked_var: if s.tracked { tracked_var(&vb) } else { None },
                tracked: s.tracked.then(|| Arc::new(Mutex::new(0))),
            });
        }
        Ok(NormModule {
            layer: Arc::new(Mutex::new(layer)),
            stages,
            external,
            dtype,
            name: name.to_string(),
        })
    }

    /// The wrapped layer (its own parameter arrays are scratch: the module's tensors are
    /// the state).
    pub fn layer(&self) -> &Arc<Mutex<L>> {
        &self.layer
    }

    /// The dtype the module computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The `weight` of stage `stage` (0 unless a chain).
    pub fn weight(&self, stage: usize) -> Option<&Tensor> {
        self.stages.get(stage)?.weight.as_ref()
    }

    /// The `bias` of stage `stage`.
    pub fn bias(&self, stage: usize) -> Option<&Tensor> {
        self.stages.get(stage)?.bias.as_ref()
    }

    /// The `running_mean` of stage `stage`.
    pub fn running_mean(&self, stage: usize) -> Option<&Tensor> {
        self.stages
            .get(stage)?
            .running_mean
            .as_ref()
            .map(|v| v.as_tensor())
    }

    /// The `running_var` of stage `stage`.
    pub fn running_var(&self, stage: usize) -> Option<&Tensor> {
        self.stages
            .get(stage)?
            .running_var
            .as_ref()
            .map(|v| v.as_tensor())
    }

    pub(crate) fn running_vars(&self, stage: usize) -> Option<(&Var, &Var)> {
        let s = self.stages.get(stage)?;
        Some((s.running_mean.as_ref()?, s.running_var.as_ref()?))
    }

    /// `num_batches_tracked` of stage `stage` (training batches seen).
    pub fn num_batches_tracked(&self, stage: usize) -> Option<u64> {
        let s = self.stages.get(stage)?;
        let n = s.tracked.as_ref()?;
        if let Some(v) = &s.tracked_var {
            // The variable is the source of truth (it may have been loaded).
            return v
                .as_tensor()
                .to_scalar::<i64>()
                .ok()
                .map(|c| c.max(0) as u64);
        }
        n.lock().ok().map(|n| *n)
    }

    /// Forward pass; `Mode::Train` updates the running statistics (batch statistics are
    /// used), `Mode::Eval` uses them where the layer has them.
    pub fn forward_mode(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if self.external.is_some() {
            return Err(msg(format!(
                "{}: this layer has `affine = external`: call forward_external",
                self.name
            )));
        }
        self.run(x, None, mode, None)
    }

    /// [`NormModule::forward_mode`] with the layer seeing `x` as `view` (same number of
    /// values, same order; the output keeps `x`'s shape): what the drop-in modules use
    /// instead of reshaping around the op.
    pub(crate) fn forward_viewed(
        &self,
        x: &Tensor,
        view: Vec<usize>,
        mode: Mode,
    ) -> Result<Tensor> {
        if self.external.is_some() {
            return Err(msg(format!(
                "{}: this layer has `affine = external`: call forward_external",
                self.name
            )));
        }
        let view = (view.as_slice() != x.dims()).then_some(view);
        self.run(x, None, mode, view)
    }

    /// Forward pass of an `affine = external` layer (AdaIN, FiLM): `scale` and `shift` are
    /// shaped by the kept axes (e.g. `[N, C]`) and get gradients too.
    pub fn forward_external(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        if self.external.is_none() {
            return Err(msg(format!(
                "{}: this layer has no `affine = external`: call forward_mode",
                self.name
            )));
        }
        if scale.dims() != shift.dims() {
            return Err(msg(format!(
                "{}: scale has shape {:?} but shift has shape {:?}",
                self.name,
                scale.dims(),
                shift.dims()
            )));
        }
        self.run(x, Some((scale, shift)), mode, None)
    }

    fn run(
        &self,
        x: &Tensor,
        ext: Option<(&Tensor, &Tensor)>,
        mode: Mode,
        view: Option<Vec<usize>>,
    ) -> Result<Tensor> {
        let name = self.name.as_str();
        if !x.device().is_cpu() {
            return Err(msg(format!(
                "{name}: normkit-candle computes on the CPU; x is on {:?}. Move the tensors to \
                 the CPU, or use the drop-in LayerNorm/RmsNorm/GroupNorm/BatchNorm/\
                 InstanceNorm, which fall back to candle's composed ops on other devices",
                x.device().location()
            )));
        }
        if x.dtype() != self.dtype {
            return Err(msg(format!(
                "{name}: x has dtype {:?}, the module computes in {:?} (its VarBuilder's dtype)",
                x.dtype(),
                self.dtype
            )));
        }
        let mut params = Vec::new();
        let mut running = Vec::new();
        let mut counts = Vec::new();
        for s in &self.stages {
            for t in [&s.weight, &s.bias].into_iter().flatten() {
                params.push(t.flatten_all()?);
            }
            for v in [&s.running_mean, &s.running_var].into_iter().flatten() {
                running.push(v.as_detached_tensor().flatten_all()?);
            }
            if let Some(n) = &s.tracked {
                let mut n = n.lock().map_err(|_| msg("poisoned lock"))?;
                if let Some(v) = &s.tracked_var {
                    // The variable may have been loaded since: it is the source of truth.
                    *n = u64::try_from(v.as_tensor().to_scalar::<i64>()?).unwrap_or(0);
                }
                counts.push(*n);
            }
        }
        let mut ext_shape = None;
        if let Some((scale, shift)) = ext {
            for t in [scale, shift] {
                if t.dtype() != self.dtype || !t.device().is_cpu() {
                    return Err(msg(format!(
                        "{name}: scale and shift must be {:?} CPU tensors like x",
                        self.dtype
                    )));
                }
                params.push(t.flatten_all()?);
            }
            ext_shape = Some(scale.dims().to_vec());
        }
        let pack = |ts: Vec<Tensor>| -> Result<Tensor> {
            match ts.as_slice() {
                [] => Tensor::zeros(0, self.dtype, &Device::Cpu),
                [one] => Ok(one.clone()),
                _ => Tensor::cat(&ts, 0),
            }
        };
        let params = pack(params)?;
        let running = pack(running)?;
        let call = op::Call {
            layer: &self.layer,
            name,
            external: ext_shape,
            counts,
            mode,
            view,
        };
        let out = op::apply(call, x, (&params, &running))?;
        if let Some(r) = out.running {
            let r = r.to_dtype(self.dtype)?;
            let mut at = 0;
            for s in &self.stages {
                for v in [&s.running_mean, &s.running_var].into_iter().flatten() {
                    let n = v.elem_count();
                    v.set(&r.narrow(0, at, n)?.reshape(v.shape())?)?;
                    at += n;
                }
            }
        }
        let mut counts = out.counts.into_iter();
        if mode == Mode::Train {
            for s in &self.stages {
                if let Some(n) = &s.tracked {
                    let Some(c) = counts.next() else { break };
                    *n.lock().map_err(|_| msg("poisoned lock"))? = c;
                    if let Some(v) = &s.tracked_var {
                        v.set(&Tensor::new(c as i64, &Device::Cpu)?)?;
                    }
                }
            }
        }
        Ok(out.y)
    }
}

impl<L: CandleLayer> ModuleT for NormModule<L> {
    /// `train`: batch statistics (running statistics updated); otherwise eval mode.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_mode(xs, if train { Mode::Train } else { Mode::Eval })
    }
}
