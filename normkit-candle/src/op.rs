//! The candle custom op: one normkit forward in `cpu_fwd`, normkit's fused backward in
//! `bwd`.
//!
//! The op takes three tensors: the input `x`, every differentiable parameter flattened
//! into one vector (each stage's `gamma` then `beta`, then the external scale and shift),
//! and the running statistics flattened the same way (each stage's mean then variance; not
//! differentiated). Packing makes one op serve every layer, chains included; the packed
//! vectors have a few hundred values, the copies are negligible beside the input.
//!
//! An op value is made for one call. Its forward stores normkit's `Saved` in the op (behind
//! a `Mutex`), where its backward finds it; a second backward through the same graph reads
//! it again. Should the `Saved` not match the tensors backward is given (it always does for
//! ops made by this crate), backward recomputes it from the inputs, which it has.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, WithDType,
};
use normkit::ndarray::{ArrayViewD, IxDyn};
use normkit::{Float, Mode, Saved, StageGrads};

use crate::error::{msg, norm_err};
use crate::layer::{stages_of, CandleLayer, StageMut};

/// The element types the op computes in.
pub(crate) trait Elem: Float + WithDType {
    fn typed<L: CandleLayer>(l: &mut L) -> Option<&mut dyn normkit::NormLayer<Elem = Self>>;
    fn wrap(s: Saved<Self>) -> SavedAny;
    fn unwrap(s: &SavedAny) -> Option<&Saved<Self>>;
}

impl Elem for f32 {
    fn typed<L: CandleLayer>(l: &mut L) -> Option<&mut dyn normkit::NormLayer<Elem = f32>> {
        l.as_f32()
    }
    fn wrap(s: Saved<f32>) -> SavedAny {
        SavedAny::F32(s)
    }
    fn unwrap(s: &SavedAny) -> Option<&Saved<f32>> {
        match s {
            SavedAny::F32(s) => Some(s),
            SavedAny::F64(_) => None,
        }
    }
}

impl Elem for f64 {
    fn typed<L: CandleLayer>(l: &mut L) -> Option<&mut dyn normkit::NormLayer<Elem = f64>> {
        l.as_f64()
    }
    fn wrap(s: Saved<f64>) -> SavedAny {
        SavedAny::F64(s)
    }
    fn unwrap(s: &SavedAny) -> Option<&Saved<f64>> {
        match s {
            SavedAny::F64(s) => Some(s),
            SavedAny::F32(_) => None,
        }
    }
}

/// A `Saved` of either element type.
pub(crate) enum SavedAny {
    F32(Saved<f32>),
    F64(Saved<f64>),
}

/// What a forward call leaves for its backward call and for the module.
#[derive(Default)]
pub(crate) struct Slot {
    saved: Option<SavedAny>,
    /// The running statistics after a train-mode forward, packed like the op's third input.
    pub running: Option<Tensor>,
    /// `num_batches_tracked` of every stage that tracks it, after the forward.
    pub counts: Vec<u64>,
}

/// One call of a normkit layer as a candle op.
pub(crate) struct NormOp<L> {
    pub layer: Arc<Mutex<L>>,
    pub mode: Mode,
    /// The shape of the external scale (= that of the shift), packed at the end of the
    /// parameters.
    pub external: Option<Vec<usize>>,
    /// `num_batches_tracked` of every stage that tracks it, before the call.
    pub counts: Vec<u64>,
    pub slot: Arc<Mutex<Slot>>,
    pub name: String,
    /// The shape the layer sees `x` (and `dy`) as, when it differs from the tensor's (e.g.
    /// `[rows, D]` for a `[B, T, D]` input): the same values in the same order. The output
    /// and `dx` keep the tensor's shape. Viewing inside the op instead of reshaping around
    /// it keeps two nodes out of candle's graph, each of which would cost a zero-filled
    /// gradient accumulator and a full-size add in backward.
    pub view: Option<Vec<usize>>,
}

fn lock<'a, X>(m: &'a Mutex<X>, name: &str) -> Result<MutexGuard<'a, X>> {
    m.lock()
        .map_err(|_| msg(format!("{name}: a previous call panicked (poisoned lock)")))
}

/// The values of a tensor's CPU storage in logical order: borrowed when contiguous, one
/// gathered copy otherwise.
fn read<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, name: &str) -> Result<Cow<'a, [T]>> {
    let data: &[T] = s.as_slice::<T>().map_err(|_| {
        msg(format!(
            "{name}: the tensors of one call must share a dtype: expected {:?}, got {:?}",
            T::DTYPE,
            s.dtype()
        ))
    })?;
    let bad = || {
        msg(format!(
            "{name}: a tensor's layout points outside its storage"
        ))
    };
    if let Some((a, b)) = l.contiguous_offsets() {
        return data.get(a..b).map(Cow::Borrowed).ok_or_else(bad);
    }
    let dims = l.dims();
    let strides = l.stride();
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(Cow::Owned(out));
    }
    let rank = dims.len();
    // Runs along the last axis when it is unit-strided; otherwise one value at a time.
    let (run, outer) = if rank > 0 && strides[rank - 1] == 1 {
        (dims[rank - 1], rank - 1)
    } else {
        (1, rank)
    };
    let mut idx = vec![0usize; outer];
    let mut off = l.start_offset();
    loop {
        out.extend_from_slice(data.get(off..off + run).ok_or_else(bad)?);
        let mut k = outer;
        loop {
            if k == 0 {
                return Ok(Cow::Owned(out));
            }
            k -= 1;
            idx[k] += 1;
            off += strides[k];
            if idx[k] < dims[k] {
                break;
            }
            off -= strides[k] * dims[k];
            idx[k] = 0;
        }
    }
}

/// The CPU storage of a tensor, or an error naming the device.
fn cpu<'a>(s: &'a Storage, name: &str) -> Result<&'a CpuStorage> {
    match s {
        Storage::Cpu(s) => Ok(s),
        other => Err(msg(format!(
            "{name}: normkit-candle computes on CPU storage, got a tensor on {:?}",
            other.device().location()
        ))),
    }
}

/// Where each stage's values sit in the packed parameter and running vectors.
struct Packing {
    params: usize,
    running: usize,
}

fn packing<T>(stages: &[StageMut<'_, T>], external: Option<&[usize]>) -> Packing {
    let mut params = 0;
    let mut running = 0;
    for st in stages {
        params += st.gamma.as_ref().map_or(0, |a| a.len());
        params += st.beta.as_ref().map_or(0, |a| a.len());
        running += st.running_mean.as_ref().map_or(0, |a| a.len());
        running += st.running_var.as_ref().map_or(0, |a| a.len());
    }
    if let Some(shape) = external {
        params += 2 * shape.iter().product::<usize>();
    }
    Packing { params, running }
}

/// Copies the packed parameters and running statistics into the layer's stages.
fn load<T: Float>(
    stages: &mut [StageMut<'_, T>],
    params: &[T],
    running: &[T],
    counts: &[u64],
) -> usize {
    let mut p = 0;
    let mut r = 0;
    let mut c = 0;
    let fill =
        |a: &mut Option<normkit::ndarray::ArrayViewMutD<'_, T>>, src: &[T], at: &mut usize| {
            if let Some(a) = a {
                let n = a.len();
                let part = src.get(*at..*at + n).unwrap_or(&[]);
                for (d, s) in a.iter_mut().zip(part) {
                    *d = *s;
                }
                *at += n;
            }
        };
    for st in stages.iter_mut() {
        fill(&mut st.gamma, params, &mut p);
        fill(&mut st.beta, params, &mut p);
        fill(&mut st.running_mean, running, &mut r);
        fill(&mut st.running_var, running, &mut r);
        if let Some(n) = st.num_batches_tracked.as_deref_mut() {
            if let Some(v) = counts.get(c) {
                *n = *v;
            }
            c += 1;
        }
    }
    p
}

fn params_len_error(name: &str, expected: usize, got: usize) -> candle_core::Error {
    msg(format!(
        "{name}: the layer has {expected} parameter values (weights, biases, external scale and \
         shift), got {got}"
    ))
}

impl<L: CandleLayer> NormOp<L> {
    /// The shape the layer sees a tensor of shape `dims` as (see [`NormOp::view`]).
    fn seen<'a>(&'a self, dims: &'a [usize]) -> Result<&'a [usize]> {
        match &self.view {
            Some(v) if v.iter().product::<usize>() == dims.iter().product::<usize>() => Ok(v),
            Some(v) => Err(msg(format!(
                "{}: cannot view an input of shape {dims:?} as {v:?}",
                self.name
            ))),
            None => Ok(dims),
        }
    }

    fn forward<T: Elem>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        (s3, l3): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name.as_str();
        let xs = read::<T>(s1, l1, name)?;
        let ps = read::<T>(s2, l2, name)?;
        let rs = read::<T>(s3, l3, name)?;
        let x = ArrayViewD::from_shape(IxDyn(self.seen(l1.dims())?), &xs)
            .map_err(|e| msg(e.to_string()))?;
        let mut guard = lock(&self.layer, name)?;
        let layer = T::typed(&mut *guard).ok_or_else(|| dtype_error(name, T::DTYPE))?;
        let ext_at = {
            let mut stages = stages_of(layer);
            let pk = packing(&stages, self.external.as_deref());
            if pk.params != ps.len() {
                return Err(params_len_error(name, pk.params, ps.len()));
            }
            if pk.running != rs.len() {
                return Err(msg(format!(
                    "{name}: the layer has {} running-statistics values, got {}",
                    pk.running,
                    rs.len()
                )));
            }
            load(&mut stages, &ps, &rs, &self.counts)
        };
        let ext = external_views(&ps, ext_at, self.external.as_deref())?;
        let (y, saved) = layer.forward_layer(x, ext, self.mode).map_err(norm_err)?;
        let mut slot = lock(&self.slot, name)?;
        if self.mode == Mode::Train {
            let mut running = Vec::with_capacity(rs.len());
            slot.counts.clear();
            for st in stages_of(layer) {
                for a in [&st.running_mean, &st.running_var].into_iter().flatten() {
                    running.extend(a.iter().copied());
                }
                if let Some(n) = st.num_batches_tracked {
                    slot.counts.push(*n);
                }
            }
            if !running.is_empty() {
                let n = running.len();
                slot.running = Some(Tensor::from_vec(running, n, &candle_core::Device::Cpu)?);
            }
        }
        slot.saved = Some(T::wrap(saved));
        let shape = Shape::from_dims(l1.dims());
        let (data, offset) = y.into_raw_vec_and_offset();
        if offset.unwrap_or(0) != 0 || data.len() != shape.elem_count() {
            return Err(msg(format!("{name}: unexpected output layout")));
        }
        Ok((T::to_cpu_storage_owned(data), shape))
    }

    fn backward<T: Elem>(
        &self,
        x: &Tensor,
        params: &Tensor,
        running: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name.as_str();
        let (xg, xl) = x.storage_and_layout();
        let (pg, pl) = params.storage_and_layout();
        let (rg, rl) = running.storage_and_layout();
        let (gg, gl) = grad.storage_and_layout();
        let xs = read::<T>(cpu(&xg, name)?, xl, name)?;
        let ps = read::<T>(cpu(&pg, name)?, pl, name)?;
        let rs = read::<T>(cpu(&rg, name)?, rl, name)?;
        let dys = read::<T>(cpu(&gg, name)?, gl, name)?;
        let seen = self.seen(xl.dims())?;
        if gl.dims() != xl.dims() {
            return Err(msg(format!(
                "{name}: the output gradient has shape {:?}, the input {:?}",
                gl.dims(),
                xl.dims()
            )));
        }
        let xv = ArrayViewD::from_shape(IxDyn(seen), &xs).map_err(|e| msg(e.to_string()))?;
        let dyv = ArrayViewD::from_shape(IxDyn(seen), &dys).map_err(|e| msg(e.to_string()))?;
        let mut guard = lock(&self.layer, name)?;
        let layer = T::typed(&mut *guard).ok_or_else(|| dtype_error(name, T::DTYPE))?;
        // The parameters of the forward call (the layer may have run other calls since).
        let (ext_at, kinds) = {
            let mut stages = stages_of(layer);
            let pk = packing(&stages, self.external.as_deref());
            if pk.params != ps.len() || pk.running != rs.len() {
                return Err(params_len_error(name, pk.params, ps.len()));
            }
            let at = load(&mut stages, &ps, &rs, &self.counts);
            let kinds: Vec<(usize, usize, bool)> = stages
                .iter()
                .map(|s| {
                    (
                        s.gamma.as_ref().map_or(0, |a| a.len()),
                        s.beta.as_ref().map_or(0, |a| a.len()),
                        s.external,
                    )
                })
                .collect();
            (at, kinds)
        };
        let mut slot = lock(&self.slot, name)?;
        let fresh = slot
            .saved
            .as_ref()
            .and_then(T::unwrap)
            .is_some_and(|s| s.shape() == seen);
        if !fresh {
            let ext = external_views(&ps, ext_at, self.external.as_deref())?;
            // Recomputing must not count a second batch: work on the statistics as given.
            let (_, saved) = layer
                .forward_layer(xv.view(), ext, self.mode)
                .map_err(norm_err)?;
            let mut stages = stages_of(layer);
            load(&mut stages, &ps, &rs, &self.counts);
            slot.saved = Some(T::wrap(saved));
        }
        let saved = slot
            .saved
            .as_ref()
            .and_then(T::unwrap)
            .ok_or_else(|| msg(format!("{name}: no saved state for backward")))?;
        let normkit::ChainGrads { dx, stages: grads } =
            layer.backward_layer(xv, dyv, saved).map_err(norm_err)?;
        drop(slot);
        drop(guard);
        let (dx, offset) = dx.into_raw_vec_and_offset();
        if offset.unwrap_or(0) != 0 {
            return Err(msg(format!("{name}: unexpected gradient layout")));
        }
        let dx = Tensor::from_vec(dx, Shape::from_dims(xl.dims()), x.device())?;
        let dparams = if ps.is_empty() {
            None
        } else {
            let packed = pack_grads(&kinds, grads, ext_at, ps.len());
            Some(Tensor::from_vec(packed, ps.len(), params.device())?.reshape(params.shape())?)
        };
        Ok((Some(dx), dparams, None))
    }
}

fn dtype_error(name: &str, dtype: DType) -> candle_core::Error {
    msg(format!("{name}: this layer does not compute in {dtype:?}"))
}

/// The external scale and shift, packed after the parameters.
fn external_views<'a, T>(
    ps: &'a [T],
    at: usize,
    shape: Option<&[usize]>,
) -> Result<Option<(ArrayViewD<'a, T>, ArrayViewD<'a, T>)>> {
    let Some(shape) = shape else {
        return Ok(None);
    };
    let n: usize = shape.iter().product();
    let view = |a: usize| {
        let part = ps
            .get(a..a + n)
            .ok_or_else(|| msg("normkit: external scale/shift missing"))?;
        ArrayViewD::from_shape(IxDyn(shape), part).map_err(|e| msg(e.to_string()))
    };
    Ok(Some((view(at)?, view(at + n)?)))
}

/// The parameter gradients in the packed order (external stages' gradients go to the scale
/// and shift at the end).
fn pack_grads<T: Float>(
    kinds: &[(usize, usize, bool)],
    grads: Vec<StageGrads<T>>,
    ext_at: usize,
    len: usize,
) -> Vec<T> {
    let mut out = vec![T::zero(); len];
    let mut p = 0;
    let mut add = |src: Option<normkit::ndarray::ArrayD<T>>, at: usize, n: usize| {
        if let (Some(g), Some(dst)) = (src, out.get_mut(at..at + n)) {
            for (d, s) in dst.iter_mut().zip(g.iter()) {
                *d = *d + *s;
            }
        }
    };
    for (&(ng, nb, external), g) in kinds.iter().zip(grads) {
        if external {
            let n = (len - ext_at) / 2;
            add(g.dgamma, ext_at, n);
            add(g.dbeta, ext_at + n, n);
        } else {
            add(g.dgamma, p, ng);
            p += ng;
            add(g.dbeta, p, nb);
            p += nb;
        }
    }
    out
}

impl<L: CandleLayer> CustomOp3 for NormOp<L> {
    fn name(&self) -> &'static str {
        "normkit"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match s1.dtype() {
            DType::F32 => self.forward::<f32>((s1, l1), (s2, l2), (s3, l3)),
            DType::F64 => self.forward::<f64>((s1, l1), (s2, l2), (s3, l3)),
            other => Err(msg(format!(
                "{}: normkit computes in f32 and f64, got {other:?}",
                self.name
            ))),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        running: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            DType::F32 => self.backward::<f32>(x, params, running, grad),
            DType::F64 => self.backward::<f64>(x, params, running, grad),
            other => Err(msg(format!(
                "{}: normkit computes in f32 and f64, got {other:?}",
                self.name
            ))),
        }
    }
}

/// What one call of [`apply`] returns besides the output.
pub(crate) struct Applied {
    pub y: Tensor,
    pub running: Option<Tensor>,
    pub counts: Vec<u64>,
}

/// One call of [`apply`] apart from its tensors: the layer and how to run it.
pub(crate) struct Call<'a, L> {
    pub layer: &'a Arc<Mutex<L>>,
    /// The layer's name, for errors.
    pub name: &'a str,
    /// The shape of the external scale and shift, packed at the end of the parameters.
    pub external: Option<Vec<usize>>,
    /// `num_batches_tracked` of every stage that tracks it, before the call.
    pub counts: Vec<u64>,
    pub mode: Mode,
    /// The shape the layer sees `x` as ([`NormOp::view`]).
    pub view: Option<Vec<usize>>,
}

/// Runs the layer of `call` on `x` as a differentiable candle op, with the packed
/// parameters and running statistics.
pub(crate) fn apply<L: CandleLayer>(
    call: Call<'_, L>,
    x: &Tensor,
    (params, running): (&Tensor, &Tensor),
) -> Result<Applied> {
    let Call {
        layer,
        name,
        external,
        counts,
        mode,
        view,
    } = call;
    let slot = Arc::new(Mutex::new(Slot::default()));
    let op = NormOp {
        layer: Arc::clone(layer),
        mode,
        external,
        counts,
        slot: Arc::clone(&slot),
        name: name.to_string(),
        view,
    };
    let y = x.apply_op3(params, running, op)?;
    let mut s = lock(&slot, name)?;
    Ok(Applied {
        y,
        running: s.running.take(),
        counts: std::mem::take(&mut s.counts),
    })
}
