//! The fused path: a burn backend extension whose Flex implementation runs normkit's kernels
//! on the tensors' memory, and whose `Autodiff<Flex, C>` implementation records one graph
//! node whose backward is normkit's fused backward (dx, dγ, dβ in one call).
//!
//! `#[backend_extension(Flex, Autodiff)]` generates the `Dispatch` implementation that routes a
//! call to `Flex` or to `Autodiff<Flex, C>` by the input's device. Devices that are not listed
//! (CubeCL's CPU, wgpu, CUDA, ...) would panic in that generated code, so
//! [`crate::normalize`] never sends them here: it checks the device first and takes the
//! composed path (burn tensor ops) for them.

use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{
    backend_extension, tensor::FloatTensor, Autodiff, Backend, Flex, TensorMetadata,
};
use burn::tensor::{DType, TensorData};
use normkit::ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use normkit::{ChainGrads, DynNorm, Mode, NormError, NormLayer as _, Saved};

use crate::layer::NormLayer;
use crate::spare::Pooled;

/// What a fused call needs besides its tensors.
#[derive(Clone, Debug)]
pub struct NormCall {
    /// The layer configuration.
    pub layer: NormLayer,
    /// Train (batch statistics, running statistics updated) or eval.
    pub mode: Mode,
    /// Batches seen so far (the cumulative momentum's divisor).
    pub num_batches_tracked: u64,
}

/// The output of [`NormkitOps::normkit_norm`]: the normalized tensor, the updated running
/// mean and variance (train mode with running statistics), and normkit's error if the call
/// was refused (then the first element is the input, unchanged). (The trait spells the tuple
/// out: `#[backend_extension]` reads the signature's syntax, not this alias.)
pub type NormOutput<B> = (
    FloatTensor<B>,
    Option<FloatTensor<B>>,
    Option<FloatTensor<B>>,
    Option<NormError>,
);

/// Normalization as a burn backend extension: one fused operation per layer call.
///
/// `gamma`, `beta`, `running_mean` and `running_var` are rank-1 tensors holding the layer's
/// parameters flattened in the spec's parameter-axis order; a tensor the layer does not have
/// is passed as an empty tensor and ignored.
#[backend_extension(Flex, Autodiff)]
pub trait NormkitOps: Backend {
    /// Normalizes `x` with the layer of `call`.
    #[allow(clippy::type_complexity)]
    fn normkit_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        running_mean: FloatTensor<Self>,
        running_var: FloatTensor<Self>,
        call: NormCall,
    ) -> (
        FloatTensor<Self>,
        Option<FloatTensor<Self>>,
        Option<FloatTensor<Self>>,
        Option<NormError>,
    );
}

/// f32 and f64, the element types normkit's kernels run on.
trait Elem: Pooled {
    fn slice(t: &FlexTensor) -> Option<&[Self]>;
    fn pack(layer: DynNorm<Self>, saved: Saved<Self>) -> Fused;
}

impl Elem for f32 {
    fn slice(t: &FlexTensor) -> Option<&[f32]> {
        t.as_slice::<f32>()
    }
    fn pack(layer: DynNorm<f32>, saved: Saved<f32>) -> Fused {
        Fused::F32(Box::new((layer, saved)))
    }
}

impl Elem for f64 {
    fn slice(t: &FlexTensor) -> Option<&[f64]> {
        t.as_slice::<f64>()
    }
    fn pack(layer: DynNorm<f64>, saved: Saved<f64>) -> Fused {
        Fused::F64(Box::new((layer, saved)))
    }
}

/// What backward needs from a fused forward: the normkit layer (with the γ/β used) and its
/// saved statistics.
#[derive(Clone, Debug)]
pub(crate) enum Fused {
    F32(Box<(DynNorm<f32>, Saved<f32>)>),
    F64(Box<(DynNorm<f64>, Saved<f64>)>),
}

/// The values of `t` in standard order: borrowed when contiguous (no copy), gathered once
/// otherwise (Flex's contiguous copy, whose buffer becomes the `Vec`).
fn values<T: Elem>(t: &FlexTensor) -> Cow<'_, [T]> {
    match T::slice(t) {
        Some(s) => Cow::Borrowed(s),
        None => {
            let c = t.to_contiguous();
            match c.into_data().try_into_vec::<T>() {
                Ok(v) => Cow::Owned(v),
                Err(e) => panic!(
                    "normkit-burn: a {:?} tensor read as {:?}: {e:?}",
                    t.dtype(),
                    <T as burn::tensor::Element>::dtype()
                ),
            }
        }
    }
}

fn read<T: Elem>(
    layer: &NormLayer,
    what: &str,
    t: &FlexTensor,
    shape: &[usize],
) -> Result<ArrayD<T>, NormError> {
    let v = values::<T>(t);
    ArrayD::from_shape_vec(IxDyn(shape), v.into_owned()).map_err(|_| NormError::Shape {
        layer: layer.name().to_string(),
        what: what.to_string(),
        expected: vec![shape.iter().product()],
        actual: t.shape().to_vec(),
    })
}

fn to_flex<T: Elem>(a: ArrayD<T>) -> FlexTensor {
    let shape = a.shape().to_vec();
    let (v, offset) = a.into_raw_vec_and_offset();
    debug_assert!(
        offset.unwrap_or(0) == 0,
        "normkit outputs are standard layout"
    );
    FlexTensor::from_data(TensorData::new(v, shape))
}

type FlexOut = (FlexTensor, Option<FlexTensor>, Option<FlexTensor>);

/// Runs normkit's forward on Flex tensors; with `keep`, also returns what backward needs.
fn forward<T: Elem>(
    x: &FlexTensor,
    params: [&FlexTensor; 4],
    call: &NormCall,
    keep: bool,
) -> Result<(FlexOut, Option<Fused>), NormError> {
    let layer = &call.layer;
    let shape = x.shape().to_vec();
    layer.check(&shape, call.mode)?;
    let mut norm = layer.dyn_norm::<T>();
    {
        let st = &mut norm.stages_mut()[0];
        if let Some(p) = layer.param_shape() {
            st.gamma = Some(read(layer, "gamma", params[0], p)?);
            if layer.has_beta() {
                st.beta = Some(read(layer, "beta", params[1], p)?);
            }
        }
        if let Some(r) = layer.running_shape() {
            st.running_mean = Some(read(layer, "running_mean", params[2], r)?);
            st.running_var = Some(read(layer, "running_var", params[3], r)?);
            st.num_batches_tracked = call.num_batches_tracked;
        }
    }
    let xs = values::<T>(x);
    let xv = ArrayViewD::from_shape(IxDyn(&shape), &xs).expect("shape matches the values");
    // The output goes into a recycled gradient buffer when the layer has one (see `spare`):
    // the kernels write every element, so no fresh allocation and no zero fill.
    let mut y = layer.spare().take::<T>(xs.len());
    let mut saved = Saved::new();
    let out = ArrayViewMutD::from_shape(IxDyn(&shape), &mut y).expect("n values");
    if let Err(e) = norm.forward_layer_into(xv, None, call.mode, out, &mut saved, None) {
        layer.spare().give(y);
        return Err(e);
    }
    let y = ArrayD::from_shape_vec(IxDyn(&shape), y).expect("n values");
    let updated = call.mode == Mode::Train && layer.running_shape().is_some();
    let (rm, rv) = if updated {
        let st = &norm.stages()[0];
        (
            st.running_mean.clone().map(to_flex),
            st.running_var.clone().map(to_flex),
        )
    } else {
        (None, None)
    };
    let fused = keep.then(|| T::pack(norm, saved));
    Ok(((to_flex(y), rm, rv), fused))
}

fn forward_any(
    x: &FlexTensor,
    params: [&FlexTensor; 4],
    call: &NormCall,
    keep: bool,
) -> Result<(FlexOut, Option<Fused>), NormError> {
    match x.dtype() {
        DType::F32 => forward::<f32>(x, params, call, keep),
        DType::F64 => forward::<f64>(x, params, call, keep),
        other => Err(NormError::Unsupported {
            layer: call.layer.name().to_string(),
            reason: format!("the fused path runs on f32 and f64 tensors, got {other:?}"),
        }),
    }
}

impl NormkitOps for Flex {
    fn normkit_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        running_mean: FlexTensor,
        running_var: FlexTensor,
        call: NormCall,
    ) -> NormOutput<Flex> {
        let params = [&gamma, &beta, &running_mean, &running_var];
        match forward_any(&x, params, &call, false) {
            Ok(((y, rm, rv), _)) => (y, rm, rv, None),
            Err(e) => (x, None, None, Some(e)),
        }
    }
}

/// The graph node of a fused call: its backward is one call of normkit's fused backward.
#[derive(Debug)]
struct NormBackward;

/// The state of a [`NormBackward`] node: the input (shared storage, not a copy) and the
/// normkit layer with its saved statistics.
#[derive(Clone, Debug)]
struct NormState {
    x: FlexTensor,
    fused: Fused,
    gamma_len: usize,
    /// The layer configuration (its spare buffers).
    layer: NormLayer,
}

fn run_backward<T: Elem>(
    spare: &NormLayer,
    layer: &DynNorm<T>,
    saved: &Saved<T>,
    x: &FlexTensor,
    dy: FlexTensor,
) -> (FlexTensor, Option<FlexTensor>, Option<FlexTensor>) {
    let shape = x.shape().to_vec();
    let xs = values::<T>(x);
    let mut grads = {
        let dys = values::<T>(&dy);
        let xv = ArrayViewD::from_shape(IxDyn(&shape), &xs).expect("shape matches the values");
        let dyv = ArrayViewD::from_shape(IxDyn(&shape), &dys).expect("dy has the shape of x");
        // dx into a spare buffer when there is one (every element is written).
        let dx = spare.spare().take::<T>(xs.len());
        let mut grads = ChainGrads {
            dx: ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("n values"),
            stages: Vec::new(),
        };
        // The forward pass checked this layer and input, and `saved` comes from it: normkit
        // cannot refuse here. A failure would be a bug in normkit, not a user error.
        layer
            .backward_layer_into_grads(xv, dyv, saved, &mut grads, None)
            .unwrap_or_else(|e| panic!("normkit backward failed: {e}"));
        grads
    };
    // dy has been read: its memory (when burn gave it to this node alone) becomes the
    // buffer of the layer's next output.
    spare.spare().recycle::<T>(dy);
    let g = grads.stages.pop().unwrap_or_default();
    let flat = |a: ArrayD<T>| {
        let n = a.len();
        to_flex(
            a.into_shape_with_order(IxDyn(&[n]))
                .expect("standard layout"),
        )
    };
    (to_flex(grads.dx), g.dgamma.map(flat), g.dbeta.map(flat))
}

impl Backward<Flex, 3> for NormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let state = ops.state;
        let (dx, dgamma, dbeta) = match &state.fused {
            Fused::F32(b) => run_backward(&state.layer, &b.0, &b.1, &state.x, dy),
            Fused::F64(b) => run_backward(&state.layer, &b.0, &b.1, &state.x, dy),
        };
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, dx);
        }
        if let (Some(node), Some(dg)) = (node_gamma, dgamma) {
            debug_assert_eq!(dg.shape().num_elements(), state.gamma_len);
            grads.register::<Flex>(node.id, dg);
        }
        if let (Some(node), Some(db)) = (node_beta, dbeta) {
            grads.register::<Flex>(node.id, db);
        }
    }
}

impl<C: CheckpointStrategy> NormkitOps for Autodiff<Flex, C> {
    fn normkit_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        running_mean: FloatTensor<Self>,
        running_var: FloatTensor<Self>,
        call: NormCall,
    ) -> NormOutput<Self> {
        let guards = [x.node(), gamma.node(), beta.node()];
        let gamma_len = gamma.primitive().shape().num_elements();
        let rm = running_mean.into_primitive();
        let rv = running_var.into_primitive();
        let xp = x.primitive().clone();
        let params = [gamma.primitive(), beta.primitive(), &rm, &rv];
        let untracked = |t: Option<FlexTensor>| t.map(<FloatTensor<Self>>::new);
        match NormBackward.prepare::<C>(guards).compute_bound().stateful() {
            OpsKind::Tracked(prep) => match forward_any(&xp, params, &call, true) {
                Ok(((y, rm, rv), Some(fused))) => {
                    let state = NormState {
                        x: xp,
                        fused,
                        gamma_len,
                        layer: call.layer.clone(),
                    };
                    (prep.finish(state, y), untracked(rm), untracked(rv), None)
                }
                Ok((_, None)) => unreachable!("keep = true returns the saved state"),
                Err(e) => (x, None, None, Some(e)),
            },
            OpsKind::UnTracked(prep) => match forward_any(&xp, params, &call, false) {
                Ok(((y, rm, rv), _)) => (prep.finish(y), untracked(rm), untracked(rv), None),
                Err(e) => (x, None, None, Some(e)),
            },
        }
    }
}
