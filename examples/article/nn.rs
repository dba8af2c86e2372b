//! The example's own small neural-network toolkit: convolution via im2col +
//! matrix multiplication, a linear layer, ReLU, pooling, softmax
//! cross-entropy, SGD with momentum and a tiny deterministic RNG.
//!
//! Everything is generic over the float type so that `tests/article/article_nn.rs`
//! can check every backward pass against central finite differences in f64.
//! Nothing here knows about normalization: that lives behind the
//! [`Normalizer`] trait, implemented with normkit in `norms.rs`.

use ndarray::{Array1, Array2, Array4, ArrayView1, ArrayView2, ArrayView4, Axis, NdFloat};
use num_traits::FromPrimitive;

/// The float types the toolkit runs on (f32 for training, f64 for the tests).
pub trait Scalar: NdFloat + FromPrimitive + std::iter::Sum + Default {}
impl<T: NdFloat + FromPrimitive + std::iter::Sum + Default> Scalar for T {}

/// Errors of the training code (normkit's `NormError`, shape mismatches).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Converts an `f64` constant to `T`.
pub fn c<T: Scalar>(v: f64) -> T {
    T::from_f64(v).expect("representable constant")
}

// ---------------------------------------------------------------------------
// Normalization and weight-transform interfaces (implemented in norms.rs)
// ---------------------------------------------------------------------------

/// How a normalization layer computes its statistics in a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Batch statistics; running statistics are updated.
    Train,
    /// Running statistics where the layer keeps them (inference).
    Eval,
    /// Batch statistics, running statistics left untouched (to show what
    /// batch-dependent inference would do).
    BatchStats,
}

/// A normalization layer on `N,C,H,W` activations. The layer keeps whatever
/// it needs for the backward pass of the last forward pass.
pub trait Normalizer<T: Scalar>: Send {
    /// Short display name (`"BN"`, `"GN"`, ...).
    fn name(&self) -> &'static str;
    /// Forward pass.
    fn forward(&mut self, x: Array4<T>, phase: Phase) -> Result<Array4<T>, Error>;
    /// Backward pass of the last forward pass; stores parameter gradients.
    fn backward(&mut self, dy: ArrayView4<'_, T>) -> Result<Array4<T>, Error>;
    /// Visits every learnable parameter with its gradient.
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut [T], &[T]));
}

/// A reparametrization of a convolution weight `O,I,kh,kw` (Weight
/// Standardization), applied before every forward pass.
pub trait WeightTransform<T: Scalar>: Send {
    /// Transformed weight used by the convolution.
    fn forward(&mut self, w: ArrayView4<'_, T>) -> Result<Array4<T>, Error>;
    /// Gradient with respect to the raw weight, given the gradient with
    /// respect to the transformed weight.
    fn backward(&mut self, w: ArrayView4<'_, T>, dw: ArrayView4<'_, T>)
        -> Result<Array4<T>, Error>;
}

/// The identity normalizer ("no normalization").
pub struct Identity;

impl<T: Scalar> Normalizer<T> for Identity {
    fn name(&self) -> &'static str {
        "none"
    }
    fn forward(&mut self, x: Array4<T>, _phase: Phase) -> Result<Array4<T>, Error> {
        Ok(x)
    }
    fn backward(&mut self, dy: ArrayView4<'_, T>) -> Result<Array4<T>, Error> {
        Ok(dy.to_owned())
    }
    fn visit_params(&mut self, _f: &mut dyn FnMut(&mut [T], &[T])) {}
}

// ---------------------------------------------------------------------------
// Convolution (stride 1, square kernel, zero padding) via im2col
// ---------------------------------------------------------------------------

/// Output spatial size of a stride-1 convolution.
fn out_size(n: usize, k: usize, pad: usize) -> usize {
    n + 2 * pad + 1 - k
}

/// For output coordinate `o`, the kernel offsets `kk` whose input coordinate
/// `o + kk − pad` lies inside `0..n`.
fn valid_taps(o: usize, k: usize, pad: usize, n: usize) -> std::ops::Range<usize> {
    let end = k.min((n + pad).saturating_sub(o));
    pad.saturating_sub(o).min(end)..end
}

/// Unfolds `x` (`N,I,H,W`) into a matrix with one row per output position
/// (`N·OH·OW` rows) and one column per `(i, ky, kx)` (`I·k·k` columns).
pub fn im2col<T: Scalar>(x: ArrayView4<'_, T>, k: usize, pad: usize) -> Array2<T> {
    let (n, ci, h, w) = x.dim();
    let (oh, ow) = (out_size(h, k, pad), out_size(w, k, pad));
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let mut cols = Array2::<T>::zeros((n * oh * ow, ci * k * k));
    let width = ci * k * k;
    let cs = cols.as_slice_mut().expect("standard layout");
    for b in 0..n {
        for oy in 0..oh {
            let ys = valid_taps(oy, k, pad, h);
            for ox in 0..ow {
                let xr = valid_taps(ox, k, pad, w);
                let r = (b * oh + oy) * ow + ox;
                let row = &mut cs[r * width..(r + 1) * width];
                for c in 0..ci {
                    let plane = &xs[(b * ci + c) * h * w..(b * ci + c + 1) * h * w];
                    for ky in ys.clone() {
                        let iy = oy + ky - pad;
                        let dst = (c * k + ky) * k;
                        let src = iy * w + ox + xr.start - pad;
                        let out = &mut row[dst + xr.start..dst + xr.end];
                        for (o, &v) in out.iter_mut().zip(&plane[src..src + xr.len()]) {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
    cols
}

/// The adjoint of [`im2col`]: sums the column gradients back into an
/// `N,I,H,W` input gradient.
pub fn col2im<T: Scalar>(
    cols: ArrayView2<'_, T>,
    shape: (usize, usize, usize, usize),
    k: usize,
    pad: usize,
) -> Array4<T> {
    let (n, ci, h, w) = shape;
    let (oh, ow) = (out_size(h, k, pad), out_size(w, k, pad));
    let cols = cols.as_standard_layout();
    let cs = cols.as_slice().expect("standard layout");
    let width = ci * k * k;
    let mut x = Array4::<T>::zeros(shape);
    let xs = x.as_slice_mut().expect("standard layout");
    for b in 0..n {
        for oy in 0..oh {
            let ys = valid_taps(oy, k, pad, h);
            for ox in 0..ow {
                let xr = valid_taps(ox, k, pad, w);
                let r = (b * oh + oy) * ow + ox;
                let row = &cs[r * width..(r + 1) * width];
                for c in 0..ci {
                    let plane = &mut xs[(b * ci + c) * h * w..(b * ci + c + 1) * h * w];
                    for ky in ys.clone() {
                        let iy = oy + ky - pad;
                        let src = (c * k + ky) * k + xr.start;
                        let dst = iy * w + ox + xr.start - pad;
                        for (p, &g) in plane[dst..dst + xr.len()]
                            .iter_mut()
                            .zip(&row[src..src + xr.len()])
                        {
                            *p += g;
                        }
                    }
                }
            }
        }
    }
    x
}

/// What [`conv2d_forward`] keeps for the backward pass.
pub struct ConvCache<T> {
    cols: Array2<T>,
    x_shape: (usize, usize, usize, usize),
}

/// Stride-1 convolution `y = w ⋆ x + b` with weight `O,I,k,k`.
pub fn conv2d_forward<T: Scalar>(
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    b: Option<ArrayView1<'_, T>>,
    pad: usize,
) -> (Array4<T>, ConvCache<T>) {
    let (n, _, h, wd) = x.dim();
    let (o, ci, k, k2) = w.dim();
    assert_eq!(k, k2, "square kernels only");
    assert_eq!(ci, x.dim().1, "input channels");
    let (oh, ow) = (out_size(h, k, pad), out_size(wd, k, pad));
    let cols = im2col(x, k, pad);
    let wm = w
        .into_shape_with_order((o, ci * k * k))
        .expect("contiguous weight");
    let mut out = cols.dot(&wm.t()); // (N·OH·OW, O)
    if let Some(b) = b {
        out += &b;
    }
    let y = positions_to_nchw(out.view(), (n, o, oh, ow));
    (
        y,
        ConvCache {
            cols,
            x_shape: x.dim(),
        },
    )
}

/// `(N·H·W, C)` rows (one per position) → `N,C,H,W`.
fn positions_to_nchw<T: Scalar>(
    m: ArrayView2<'_, T>,
    shape: (usize, usize, usize, usize),
) -> Array4<T> {
    let (n, ch, h, w) = shape;
    let m = m.as_standard_layout();
    let ms = m.as_slice().expect("standard layout");
    let hw = h * w;
    let mut out = vec![T::zero(); n * ch * hw];
    for b in 0..n {
        for p in 0..hw {
            let row = &ms[(b * hw + p) * ch..(b * hw + p + 1) * ch];
            for (c, &v) in row.iter().enumerate() {
                out[(b * ch + c) * hw + p] = v;
            }
        }
    }
    Array4::from_shape_vec(shape, out).expect("n·c·h·w values")
}

/// `N,C,H,W` → `(N·H·W, C)` rows (one per position).
fn nchw_to_positions<T: Scalar>(x: ArrayView4<'_, T>) -> Array2<T> {
    let (n, ch, h, w) = x.dim();
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let hw = h * w;
    let mut out = vec![T::zero(); n * ch * hw];
    for b in 0..n {
        for c in 0..ch {
            let plane = &xs[(b * ch + c) * hw..(b * ch + c + 1) * hw];
            for (p, &v) in plane.iter().enumerate() {
                out[(b * hw + p) * ch + c] = v;
            }
        }
    }
    Array2::from_shape_vec((n * hw, ch), out).expect("n·h·w·c values")
}

/// Gradients of [`conv2d_forward`]: `(dx, dw, db)`.
pub fn conv2d_backward<T: Scalar>(
    dy: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    cache: &ConvCache<T>,
    pad: usize,
) -> (Array4<T>, Array4<T>, Array1<T>) {
    let o = dy.dim().1;
    let (_, ci, k, _) = w.dim();
    let dym = nchw_to_positions(dy);
    let wm = w
        .into_shape_with_order((o, ci * k * k))
        .expect("contiguous weight");
    let dw = dym
        .t()
        .dot(&cache.cols)
        .into_shape_with_order((o, ci, k, k))
        .expect("contiguous");
    let db = dym.sum_axis(Axis(0));
    let dcols = dym.dot(&wm);
    let dx = col2im(dcols.view(), cache.x_shape, k, pad);
    (dx, dw, db)
}

// ---------------------------------------------------------------------------
// Linear layer, ReLU, pooling
// ---------------------------------------------------------------------------

/// `y = x wᵀ + b` with `x: N×in`, `w: out×in`.
pub fn linear_forward<T: Scalar>(
    x: ArrayView2<'_, T>,
    w: ArrayView2<'_, T>,
    b: ArrayView1<'_, T>,
) -> Array2<T> {
    x.dot(&w.t()) + b
}

/// Gradients of [`linear_forward`]: `(dx, dw, db)`.
pub fn linear_backward<T: Scalar>(
    x: ArrayView2<'_, T>,
    w: ArrayView2<'_, T>,
    dy: ArrayView2<'_, T>,
) -> (Array2<T>, Array2<T>, Array1<T>) {
    (dy.dot(&w), dy.t().dot(&x), dy.sum_axis(Axis(0)))
}

/// `max(x, 0)`, elementwise.
pub fn relu<T: Scalar>(x: Array4<T>) -> Array4<T> {
    x.mapv_into(|v| if v > T::zero() { v } else { T::zero() })
}

/// Gradient of [`relu`] given its output `y`.
pub fn relu_backward<T: Scalar>(y: ArrayView4<'_, T>, dy: ArrayView4<'_, T>) -> Array4<T> {
    let mut dx = dy.to_owned();
    dx.zip_mut_with(&y, |d, &v| {
        if v <= T::zero() {
            *d = T::zero();
        }
    });
    dx
}

/// 2×2 max pooling with stride 2; returns the output and the flat index
/// of each maximum in the input.
pub fn maxpool2_forward<T: Scalar>(x: ArrayView4<'_, T>) -> (Array4<T>, Vec<usize>) {
    let (n, ch, h, w) = x.dim();
    let (oh, ow) = (h / 2, w / 2);
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let mut y = Vec::with_capacity(n * ch * oh * ow);
    let mut arg = Vec::with_capacity(n * ch * oh * ow);
    for plane in 0..n * ch {
        let base = plane * h * w;
        for oy in 0..oh {
            let top = base + 2 * oy * w;
            let (r0, r1) = (&xs[top..top + w], &xs[top + w..top + 2 * w]);
            for (ox, (a, b)) in r0
                .chunks_exact(2)
                .zip(r1.chunks_exact(2))
                .take(ow)
                .enumerate()
            {
                let i0 = top + 2 * ox;
                let (mut best, mut at) = (a[0], i0);
                for (v, i) in [(a[1], i0 + 1), (b[0], i0 + w), (b[1], i0 + w + 1)] {
                    if v > best {
                        (best, at) = (v, i);
                    }
                }
                y.push(best);
                arg.push(at);
            }
        }
    }
    (
        Array4::from_shape_vec((n, ch, oh, ow), y).expect("n·c·oh·ow values"),
        arg,
    )
}

/// Gradient of [`maxpool2_forward`].
pub fn maxpool2_backward<T: Scalar>(
    dy: ArrayView4<'_, T>,
    arg: &[usize],
    x_shape: (usize, usize, usize, usize),
) -> Array4<T> {
    let mut dx = Array4::<T>::zeros(x_shape);
    let flat = dx.as_slice_mut().expect("standard layout");
    for (&i, &g) in arg.iter().zip(dy.iter()) {
        flat[i] += g;
    }
    dx
}

// ---------------------------------------------------------------------------
// Loss
// ---------------------------------------------------------------------------

/// Mean softmax cross-entropy over the batch and its gradient with respect
/// to the logits.
pub fn softmax_cross_entropy<T: Scalar>(
    logits: ArrayView2<'_, T>,
    labels: &[usize],
) -> (T, Array2<T>) {
    let n = logits.nrows();
    assert_eq!(n, labels.len(), "one label per row");
    let inv_n = T::one() / c::<T>(n as f64);
    let mut grad = Array2::<T>::zeros(logits.dim());
    let mut loss = T::zero();
    for (i, row) in logits.outer_iter().enumerate() {
        let max = row.fold(T::neg_infinity(), |m, &v| m.max(v));
        let sum: T = row.iter().map(|&v| (v - max).exp()).sum();
        let log_z = max + sum.ln();
        loss += log_z - row[labels[i]];
        for (j, &v) in row.iter().enumerate() {
            let p = (v - log_z).exp();
            let target = if j == labels[i] { T::one() } else { T::zero() };
            grad[[i, j]] = (p - target) * inv_n;
        }
    }
    (loss * inv_n, grad)
}

/// Index of the largest logit in each row.
pub fn argmax_rows<T: Scalar>(logits: ArrayView2<'_, T>) -> Vec<usize> {
    logits
        .outer_iter()
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Optimizer and randomness
// ---------------------------------------------------------------------------

/// SGD with (heavy-ball) momentum. Parameters are visited in a fixed order;
/// the i-th visited parameter owns the i-th velocity buffer.
pub struct Sgd<T> {
    /// Step size.
    pub lr: T,
    /// Momentum coefficient (0 for plain SGD).
    pub momentum: T,
    velocity: Vec<Vec<T>>,
    cursor: usize,
}

impl<T: Scalar> Sgd<T> {
    /// A new optimizer with empty velocity buffers.
    pub fn new(lr: T, momentum: T) -> Self {
        Self {
            lr,
            momentum,
            velocity: Vec::new(),
            cursor: 0,
        }
    }

    /// Starts a step: the next visited parameter is the first one.
    pub fn begin(&mut self) {
        self.cursor = 0;
    }

    /// Updates one parameter in place: `v ← μv + g`, `p ← p − lr·v`.
    pub fn update(&mut self, param: &mut [T], grad: &[T]) {
        assert_eq!(param.len(), grad.len(), "parameter and gradient sizes");
        if self.velocity.len() == self.cursor {
            self.velocity.push(vec![T::zero(); param.len()]);
        }
        let v = &mut self.velocity[self.cursor];
        for ((p, &g), v) in param.iter_mut().zip(grad).zip(v.iter_mut()) {
            *v = self.momentum * *v + g;
            *p -= self.lr * *v;
        }
        self.cursor += 1;
    }
}

/// SplitMix64: small, fast, reproducible on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<X>(&mut self, v: &mut [X]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// He (Kaiming) normal initialization for a weight with `fan_in` inputs.
pub fn he_normal<T: Scalar, D: ndarray::Dimension>(
    shape: impl ndarray::ShapeBuilder<Dim = D>,
    fan_in: usize,
    rng: &mut Rng,
) -> ndarray::Array<T, D> {
    let std = (2.0 / fan_in as f64).sqrt();
    ndarray::Array::from_shape_simple_fn(shape, || c(rng.normal() * std))
}
