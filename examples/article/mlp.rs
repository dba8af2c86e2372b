//! The deep plain network of the tour's parts 2–4: a multilayer perceptron
//! without residual connections,
//!
//! ```text
//! x (N,64) → [linear → norm → ReLU] × depth → linear → logits (N,10)
//! ```
//!
//! Fully connected layers are the Group Norm paper's small-batch regime taken
//! to its end: Batch Norm's statistics of a hidden unit at batch size 2 are
//! computed from 2 values. The activations `N,C` are handed to the
//! normalizers as `N,C,1,1`, so the tour's `#[norm]` declarations over
//! `N,C,H,W` are exactly `BatchNorm1d` (statistics over `N`), Layer Norm (over
//! `C`) and Group Norm (over groups of `C`) here; Weight Standardization sees a
//! weight `O,I` as `O,I,1,1` (statistics over `I`, per output unit).
//!
//! Like `model.rs`, this file does not depend on normkit: the normalizers and
//! weight transforms are trait objects.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::nn::{self, c, Error, Normalizer, Phase, Rng, Scalar, Sgd, WeightTransform};

/// Builds one normalizer for a given width.
pub type NormFactory<'a, T> = &'a dyn Fn(usize) -> Box<dyn Normalizer<T>>;
/// Builds one weight transform (or none).
pub type WsFactory<'a, T> = &'a dyn Fn() -> Option<Box<dyn WeightTransform<T>>>;

/// linear → norm → ReLU.
pub struct Hidden<T: Scalar> {
    /// Raw weight `out × in`.
    pub w: Array2<T>,
    /// Bias (only without normalization: BN cancels it, and the normalizers
    /// bring their own β).
    pub b: Option<Array1<T>>,
    /// Weight Standardization of `w`, if any.
    pub ws: Option<Box<dyn WeightTransform<T>>>,
    /// The normalization layer (the identity for "none").
    pub norm: Box<dyn Normalizer<T>>,
    x: Option<Array2<T>>,
    w_eff: Option<Array2<T>>,
    out: Option<Array2<T>>,
    dw: Array2<T>,
    db: Option<Array1<T>>,
}

fn to4<T: Scalar>(a: Array2<T>) -> ndarray::Array4<T> {
    let (n, k) = a.dim();
    a.into_shape_with_order((n, k, 1, 1))
        .expect("standard layout")
}

fn to2<T: Scalar>(a: ndarray::Array4<T>) -> Array2<T> {
    let (n, k, h, w) = a.dim();
    a.as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, k * h * w))
        .expect("standard layout")
}

impl<T: Scalar> Hidden<T> {
    fn new(
        fan_in: usize,
        width: usize,
        norm: Box<dyn Normalizer<T>>,
        ws: Option<Box<dyn WeightTransform<T>>>,
        rng: &mut Rng,
    ) -> Self {
        let w: Array2<T> = nn::he_normal((width, fan_in), fan_in, rng);
        let b = (norm.name() == "none").then(|| Array1::zeros(width));
        Self {
            dw: Array2::zeros(w.dim()),
            db: b.clone(),
            w,
            b,
            ws,
            norm,
            x: None,
            w_eff: None,
            out: None,
        }
    }

    fn forward(&mut self, x: Array2<T>, phase: Phase) -> Result<Array2<T>, Error> {
        let w_eff = match &mut self.ws {
            Some(ws) => to2(ws.forward(to4(self.w.clone()).view())?),
            None => self.w.clone(),
        };
        let mut z = x.dot(&w_eff.t());
        if let Some(b) = &self.b {
            z += b;
        }
        let y = to2(nn::relu(self.norm.forward(to4(z), phase)?));
        self.x = Some(x);
        self.w_eff = Some(w_eff);
        self.out = Some(y.clone());
        Ok(y)
    }

    fn backward(&mut self, dy: Array2<T>) -> Result<Array2<T>, Error> {
        let out = self.out.take().ok_or("forward before backward")?;
        let mut dz = dy;
        dz.zip_mut_with(&out, |d, &v| {
            if v <= T::zero() {
                *d = T::zero();
            }
        });
        let dz = to2(self.norm.backward(to4(dz).view())?);
        let x = self.x.take().ok_or("forward before backward")?;
        let w_eff = self.w_eff.take().ok_or("forward before backward")?;
        let (dx, dw_eff, db) = nn::linear_backward(x.view(), w_eff.view(), dz.view());
        self.dw = match &mut self.ws {
            Some(ws) => to2(ws.backward(to4(self.w.clone()).view(), to4(dw_eff).view())?),
            None => dw_eff,
        };
        if let Some(g) = &mut self.db {
            *g = db;
        }
        Ok(dx)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut [T], &[T])) {
        f(
            self.w.as_slice_mut().expect("standard layout"),
            self.dw.as_slice().expect("standard layout"),
        );
        if let (Some(b), Some(db)) = (&mut self.b, &self.db) {
            f(
                b.as_slice_mut().expect("contiguous"),
                db.as_slice().expect("contiguous"),
            );
        }
        self.norm.visit_params(f);
    }
}

/// The deep plain MLP.
pub struct Mlp<T: Scalar> {
    /// The hidden layers, input first.
    pub hidden: Vec<Hidden<T>>,
    /// Classifier weight `classes × width`.
    pub out_w: Array2<T>,
    /// Classifier bias.
    pub out_b: Array1<T>,
    feat: Option<Array2<T>>,
    dout_w: Array2<T>,
    dout_b: Array1<T>,
}

impl<T: Scalar> Mlp<T> {
    /// A freshly initialized network: `depth` hidden layers of `width` units
    /// (He-normal weights, zero biases), then a linear classifier. The
    /// weights are drawn from `rng` in the same order whatever the
    /// normalizer, so every variant starts from the same weights.
    pub fn new(
        inputs: usize,
        width: usize,
        depth: usize,
        classes: usize,
        norm: NormFactory<'_, T>,
        ws: WsFactory<'_, T>,
        rng: &mut Rng,
    ) -> Self {
        let hidden = (0..depth)
            .map(|i| {
                Hidden::new(
                    if i == 0 { inputs } else { width },
                    width,
                    norm(width),
                    ws(),
                    rng,
                )
            })
            .collect();
        let out_w = nn::he_normal((classes, width), width, rng).mapv(|v: T| v * c(0.5));
        Self {
            hidden,
            dout_w: Array2::zeros(out_w.dim()),
            out_w,
            out_b: Array1::zeros(classes),
            dout_b: Array1::zeros(classes),
            feat: None,
        }
    }

    /// Logits for a batch `N × inputs`.
    pub fn forward(&mut self, x: ArrayView2<'_, T>, phase: Phase) -> Result<Array2<T>, Error> {
        let mut h = x.to_owned();
        for layer in &mut self.hidden {
            h = layer.forward(h, phase)?;
        }
        let logits = nn::linear_forward(h.view(), self.out_w.view(), self.out_b.view());
        self.feat = Some(h);
        Ok(logits)
    }

    /// Backward pass from the gradient of the logits; stores every parameter
    /// gradient and returns the input gradient (used by the tests).
    pub fn backward(&mut self, dlogits: ArrayView2<'_, T>) -> Result<Array2<T>, Error> {
        let feat = self.feat.take().ok_or("forward before backward")?;
        let (mut d, dw, db) = nn::linear_backward(feat.view(), self.out_w.view(), dlogits);
        self.dout_w = dw;
        self.dout_b = db;
        for layer in self.hidden.iter_mut().rev() {
            d = layer.backward(d)?;
        }
        Ok(d)
    }

    /// Visits every parameter with its gradient, in a fixed order.
    pub fn visit_params(&mut self, f: &mut dyn FnMut(&mut [T], &[T])) {
        for layer in &mut self.hidden {
            layer.visit_params(f);
        }
        f(
            self.out_w.as_slice_mut().expect("contiguous"),
            self.dout_w.as_slice().expect("contiguous"),
        );
        f(
            self.out_b.as_slice_mut().expect("contiguous"),
            self.dout_b.as_slice().expect("contiguous"),
        );
    }

    /// One SGD step with the stored gradients.
    pub fn step(&mut self, opt: &mut Sgd<T>) {
        opt.begin();
        self.visit_params(&mut |p, g| opt.update(p, g));
    }

    /// Predicted classes of `x`, evaluated in chunks of `chunk` rows (the
    /// last chunk may be smaller; with [`Phase::BatchStats`] a last chunk of
    /// one row joins the previous chunk, since one value has no variance).
    pub fn predict(
        &mut self,
        x: ArrayView2<'_, T>,
        chunk: usize,
        phase: Phase,
    ) -> Result<Vec<usize>, Error> {
        let n = x.nrows();
        let chunk = chunk.max(1);
        let mut pred = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let mut end = (start + chunk).min(n);
            if phase == Phase::BatchStats && n - end == 1 {
                end = n;
            }
            let logits = self.forward(x.slice_axis(Axis(0), (start..end).into()), phase)?;
            pred.extend(nn::argmax_rows(logits.view()));
            start = end;
        }
        Ok(pred)
    }

    /// Accuracy of [`Mlp::predict`] against `y`.
    pub fn accuracy(
        &mut self,
        x: ArrayView2<'_, T>,
        y: &[usize],
        chunk: usize,
        phase: Phase,
    ) -> Result<f64, Error> {
        let pred = self.predict(x, chunk, phase)?;
        Ok(agreement(&pred, y))
    }
}

/// Fraction of positions where `a` and `b` agree.
pub fn agreement(a: &[usize], b: &[usize]) -> f64 {
    let same = a.iter().zip(b).filter(|(p, q)| p == q).count();
    same as f64 / a.len().max(1) as f64
}
