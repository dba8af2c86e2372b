//! Ghost Batch Norm (Hoffer et al. 2017): in train mode (and in eval without running
//! statistics) the batch axis `N` is split into consecutive chunks of `ghost` samples (the
//! last may be smaller) and each chunk runs the ordinary stage on its own: its own
//! statistics, its own running-statistics update (in chunk order), its own backward. The
//! chunk inputs are slices of `x` when `N` is the outermost axis, copies otherwise.

use crate::plan::Plan;
use crate::scratch::Scratch;
use crate::stage::{self, BackwardIo, StageCall};
use crate::state::{LayerInfo, StageState};
use crate::stats::fill_grad;
use crate::types::{Mode, SavedStage, StageGrads};
use crate::{Float, NormError};

/// How an input splits into chunks of the batch axis.
struct Chunks {
    /// The product of the sizes before `N`, the size of `N`, the product after it.
    outer: usize,
    batch: usize,
    inner: usize,
    /// Samples per chunk.
    ghost: usize,
}

impl Chunks {
    /// The chunks of a call's input; an error for a synchronized call (a chunk's statistics
    /// stay local).
    fn of(call: StageCall<'_>) -> Result<Chunks, NormError> {
        let StageCall { info, k, plan, .. } = call;
        if call.sync.is_some() {
            return Err(unsupported(info));
        }
        let shape = plan.shape.as_slice();
        let b = info.spec.batch.unwrap_or(0);
        Ok(Chunks {
            outer: shape[..b].iter().product(),
            batch: shape.get(b).copied().unwrap_or(0),
            inner: shape[b + 1..].iter().product(),
            ghost: info.spec.stages[k].ghost.unwrap_or(1).max(1),
        })
    }

    fn count(&self) -> usize {
        self.batch.div_ceil(self.ghost)
    }

    /// The first sample and the number of samples of chunk `c`.
    fn range(&self, c: usize) -> (usize, usize) {
        let start = c * self.ghost;
        (start, self.ghost.min(self.batch - start))
    }

    /// The plan of chunk `c`.
    fn plan(&self, info: &LayerInfo<'_>, k: usize, plan: &Plan, c: usize) -> Plan {
        let mut shape = plan.shape;
        let b = info.spec.batch.unwrap_or(0);
        shape.dims[b] = self.range(c).1;
        // A chunk is no larger than the input, whose plan exists: no product overflows.
        Plan::new(info.spec, &info.spec.stages[k], shape.as_slice())
            .expect("a chunk's sizes are bounded by the input's")
    }

    /// Copies chunk `c` of `src` into `dst` (resized), or back with `back`.
    fn copy<T: Float>(&self, c: usize, src: &[T], dst: &mut [T], back: bool) {
        let (start, len) = self.range(c);
        let block = len * self.inner;
        for o in 0..self.outer {
            let at = (o * self.batch + start) * self.inner;
            let (full, part) = (at..at + block, o * block..(o + 1) * block);
            if back {
                dst[full].copy_from_slice(&src[part]);
            } else {
                dst[part].copy_from_slice(&src[full]);
            }
        }
    }

    /// Chunk `c` of `whole` as a slice, when it is contiguous (`N` outermost).
    fn slice(&self, c: usize) -> Option<std::ops::Range<usize>> {
        let (start, len) = self.range(c);
        (self.outer == 1).then(|| start * self.inner..(start + len) * self.inner)
    }
}

fn unsupported(info: &LayerInfo<'_>) -> NormError {
    NormError::Unsupported {
        layer: info.name.to_string(),
        reason: "`ghost` normalizes each chunk of the local batch with its own statistics; \
                 it is not synchronized across processes (use forward/backward)"
            .to_string(),
    }
}

/// Forward pass of a `ghost` stage whose statistics are measured (not fixed).
pub(crate) fn forward<T: Float>(
    call: StageCall<'_>,
    state: &mut StageState<'_, T>,
    (x, out): (&[T], &mut [T]),
    mode: Mode,
    saved: &mut SavedStage<T>,
    scratch: &mut Scratch<T>,
) -> Result<(), NormError> {
    let chunks = Chunks::of(call)?;
    let StageCall { info, k, plan, .. } = call;
    let stage = &info.spec.stages[k];
    let n = chunks.count();
    // Every chunk must have enough values before any running statistic moves: the last
    // chunk is the smallest.
    if n > 0 && (stage.running_stats || stage.unbiased) {
        let last = chunks.plan(info, k, plan, n - 1);
        if last.groups > 0 && last.group_len <= 1 {
            return Err(NormError::TooFewValues {
                layer: info.name.to_string(),
                per_group: last.group_len,
                shape: last.shape.as_slice().to_vec(),
            });
        }
    }
    saved.chunks.resize_with(n, SavedStage::default);
    let (mut xbuf, mut obuf) = (Vec::new(), Vec::new());
    for c in 0..n {
        let cplan = chunks.plan(info, k, plan, c);
        // A chunk runs as the plain stage over its own plan (never synchronized).
        let chunk_call = call.local(&cplan);
        let saved_c = &mut saved.chunks[c];
        match chunks.slice(c) {
            Some(r) => stage::forward_plain(
                chunk_call,
                state,
                (&x[r.clone()], &mut out[r]),
                mode,
                saved_c,
                scratch,
            )?,
            None => {
                xbuf.resize(cplan.numel, T::zero());
                obuf.resize(cplan.numel, T::zero());
                chunks.copy(c, x, &mut xbuf, false);
                stage::forward_plain(
                    chunk_call,
                    state,
                    (&xbuf, &mut obuf),
                    mode,
                    saved_c,
                    scratch,
                )?;
                chunks.copy(c, &obuf, out, true);
            }
        }
    }
    // The whole-batch fields backward's checks read: the first chunk's statistics stand
    // for the groups (each chunk has the same groups), the batch's count.
    saved.stats.clear();
    match saved.chunks.first() {
        Some(first) => saved.stats.extend_from_slice(&first.stats),
        None => saved.stats.resize(plan.groups, Default::default()),
    }
    saved.count = plan.group_len;
    saved.fixed = false;
    saved.synced = false;
    saved.scale.clear();
    saved.tlu_pass.clear();
    Ok(())
}

/// Backward pass of a `ghost` stage: each chunk's backward, parameter gradients summed.
pub(crate) fn backward<T: Float>(
    call: StageCall<'_>,
    state: &StageState<'_, T>,
    io: BackwardIo<'_, T>,
    saved: &SavedStage<T>,
    grads: &mut StageGrads<T>,
    scratch: &mut Scratch<T>,
) -> Result<(), NormError> {
    let chunks = Chunks::of(call)?;
    let StageCall { info, k, plan, .. } = call;
    let BackwardIo { x, dy, dx } = io;
    let n = chunks.count();
    if saved.chunks.len() != n {
        return Err(NormError::Saved {
            layer: info.name.to_string(),
            reason: "its statistics do not match this layer".to_string(),
        });
    }
    // Σ over chunks of dγ, dβ, dτ, in f64.
    let mut sums: [Option<Vec<f64>>; 3] = [None, None, None];
    let mut chunk_grads = StageGrads::default();
    let (mut xbuf, mut dybuf, mut dxbuf) = (Vec::new(), Vec::new(), Vec::new());
    for c in 0..n {
        let cplan = chunks.plan(info, k, plan, c);
        let saved_c = &saved.chunks[c];
        let g = &mut chunk_grads;
        match chunks.slice(c) {
            Some(r) => stage::backward_plain(
                call.local(&cplan),
                state,
                BackwardIo {
                    x: &x[r.clone()],
                    dy: &dy[r.clone()],
                    dx: &mut dx[r],
                },
                saved_c,
                g,
                scratch,
            )?,
            None => {
                for b in [&mut xbuf, &mut dybuf, &mut dxbuf] {
                    b.resize(cplan.numel, T::zero());
                }
                chunks.copy(c, x, &mut xbuf, false);
                chunks.copy(c, dy, &mut dybuf, false);
                let io = BackwardIo {
                    x: &xbuf,
                    dy: &dybuf,
                    dx: &mut dxbuf,
                };
                let chunk_call = call.local(&cplan);
                stage::backward_plain(chunk_call, state, io, saved_c, g, scratch)?;
                chunks.copy(c, &dxbuf, dx, true);
            }
        }
        for (sum, grad) in sums.iter_mut().zip([&g.dgamma, &g.dbeta, &g.dtau]) {
            if let Some(a) = grad {
                let s = sum.get_or_insert_with(|| vec![0.0; a.len()]);
                s.iter_mut()
                    .zip(a.iter())
                    .for_each(|(s, v)| *s += v.to_acc());
            }
        }
    }
    let shape = plan.param_shape.as_slice();
    let stage = &info.spec.stages[k];
    let [dgamma, dbeta, dtau] = sums;
    // Without chunks (an empty batch) the parameters the stage has get zero gradients.
    let has = [
        stage.affine != norm_spec::Affine::None,
        stage.bias || stage.affine == norm_spec::Affine::External,
        stage.tlu,
    ];
    let zeros = || vec![0.0; plan.param_shape.numel()];
    for ((slot, sum), has) in [
        (&mut grads.dgamma, dgamma),
        (&mut grads.dbeta, dbeta),
        (&mut grads.dtau, dtau),
    ]
    .into_iter()
    .zip(has)
    {
        match sum.or_else(|| has.then(zeros)) {
            Some(s) => fill_grad(slot, shape, &s),
            None => *slot = None,
        }
    }
    Ok(())
}
