//! The small CNN of the tour and its training loop:
//!
//! ```text
//! x (N,1,8,8) → conv3×3 → norm → ReLU → maxpool 2 → conv3×3 → norm → ReLU → maxpool 2 → linear → logits
//! ```
//!
//! The normalizers (and the optional weight transform on the convolutions)
//! are passed in as trait objects, so this file does not depend on normkit.

use ndarray::{Array1, Array2, Array4, ArrayView4, Axis};

use crate::nn::{self, c, ConvCache, Normalizer, Phase, Rng, Scalar, Sgd, WeightTransform};

/// Errors surfaced by the training code (normkit errors, shape errors).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The normalizers compared in the tour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormKind {
    /// No normalization (convolutions get a bias instead).
    None,
    /// Batch Normalization: statistics over `N,H,W`, per channel.
    Batch,
    /// Layer Normalization: over `C,H,W`, per example.
    Layer,
    /// Instance Normalization: over `H,W`, per example and channel.
    Instance,
    /// Group Normalization: over `C,H,W` within each of the channel groups.
    Group,
    /// Group Normalization + Weight Standardization of the conv weights.
    GroupWs,
    /// Batch-Channel Normalization (BN then GN) + Weight Standardization.
    BatchChannelWs,
}

impl NormKind {
    /// Every variant, in table order.
    pub const ALL: [NormKind; 7] = [
        NormKind::None,
        NormKind::Batch,
        NormKind::Layer,
        NormKind::Instance,
        NormKind::Group,
        NormKind::GroupWs,
        NormKind::BatchChannelWs,
    ];

    /// Display name.
    pub fn label(self) -> &'static str {
        match self {
            NormKind::None => "none",
            NormKind::Batch => "BN",
            NormKind::Layer => "LN",
            NormKind::Instance => "IN",
            NormKind::Group => "GN",
            NormKind::GroupWs => "GN+WS",
            NormKind::BatchChannelWs => "BCN+WS",
        }
    }

    /// Whether the convolution weights are standardized.
    pub fn uses_ws(self) -> bool {
        matches!(self, NormKind::GroupWs | NormKind::BatchChannelWs)
    }
}

/// conv → norm → ReLU.
pub struct ConvBlock<T: Scalar> {
    /// Raw convolution weight `O,I,3,3`.
    pub w: Array4<T>,
    /// Convolution bias (only without normalization: a norm cancels it).
    pub b: Option<Array1<T>>,
    /// Weight Standardization (or another reparametrization) of `w`.
    pub ws: Option<Box<dyn WeightTransform<T>>>,
    /// The normalization layer.
    pub norm: Box<dyn Normalizer<T>>,
    w_eff: Option<Array4<T>>,
    conv: Option<ConvCache<T>>,
    out: Option<Array4<T>>,
    dw: Array4<T>,
    db: Option<Array1<T>>,
}

const PAD: usize = 1;

impl<T: Scalar> ConvBlock<T> {
    fn new(
        cin: usize,
        cout: usize,
        norm: Box<dyn Normalizer<T>>,
        ws: Option<Box<dyn WeightTransform<T>>>,
        rng: &mut Rng,
    ) -> Self {
        let w = nn::he_normal((cout, cin, 3, 3), cin * 9, rng);
        let b = (norm.name() == "none").then(|| Array1::zeros(cout));
        Self {
            dw: Array4::zeros(w.dim()),
            db: b.clone(),
            w,
            b,
            ws,
            norm,
            w_eff: None,
            conv: None,
            out: None,
        }
    }

    fn forward(&mut self, x: ArrayView4<'_, T>, phase: Phase) -> Result<Array4<T>, Error> {
        let w_eff = match &mut self.ws {
            Some(ws) => ws.forward(self.w.view())?,
            None => self.w.clone(),
        };
        let (z, cache) =
            nn::conv2d_forward(x, w_eff.view(), self.b.as_ref().map(|b| b.view()), PAD);
        let y = nn::relu(self.norm.forward(z, phase)?);
        self.w_eff = Some(w_eff);
        self.conv = Some(cache);
        self.out = Some(y.clone());
        Ok(y)
    }

    fn backward(&mut self, dy: ArrayView4<'_, T>) -> Result<Array4<T>, Error> {
        let out = self.out.take().expect("forward before backward");
        let dz = self
            .norm
            .backward(nn::relu_backward(out.view(), dy).view())?;
        let w_eff = self.w_eff.take().expect("forward before backward");
        let cache = self.conv.take().expect("forward before backward");
        let (dx, dw_eff, db) = nn::conv2d_backward(dz.view(), w_eff.view(), &cache, PAD);
        self.dw = match &mut self.ws {
            Some(ws) => ws.backward(self.w.view(), dw_eff.view())?,
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

/// Builds one normalizer for a given channel count.
pub type NormFactory<'a, T> = &'a dyn Fn(usize) -> Box<dyn Normalizer<T>>;
/// Builds one weight transform (or none).
pub type WsFactory<'a, T> = &'a dyn Fn() -> Option<Box<dyn WeightTransform<T>>>;

/// What a max-pooling layer keeps: the argmax indices and the input shape.
type PoolCache = (Vec<usize>, (usize, usize, usize, usize));

/// The tour's CNN.
pub struct Cnn<T: Scalar> {
    /// First block (1 → c1 channels, 8×8).
    pub block1: ConvBlock<T>,
    /// Second block (c1 → c2 channels, 4×4).
    pub block2: ConvBlock<T>,
    /// Classifier weight `10 × (c2·2·2)`.
    pub fc_w: Array2<T>,
    /// Classifier bias.
    pub fc_b: Array1<T>,
    pool1: Option<PoolCache>,
    pool2: Option<PoolCache>,
    feat: Option<Array2<T>>,
    dfc_w: Array2<T>,
    dfc_b: Array1<T>,
}

/// Number of classes of the digits data.
pub const CLASSES: usize = 10;

impl<T: Scalar> Cnn<T> {
    /// A freshly initialized network (He-normal convolutions, zero biases).
    pub fn new(
        c1: usize,
        c2: usize,
        norm: NormFactory<'_, T>,
        ws: WsFactory<'_, T>,
        rng: &mut Rng,
    ) -> Self {
        let block1 = ConvBlock::new(1, c1, norm(c1), ws(), rng);
        let block2 = ConvBlock::new(c1, c2, norm(c2), ws(), rng);
        let fan_in = c2 * 4;
        let fc_w = nn::he_normal((CLASSES, fan_in), fan_in, rng).mapv(|v: T| v * c(0.5));
        Self {
            block1,
            block2,
            dfc_w: Array2::zeros(fc_w.dim()),
            fc_w,
            fc_b: Array1::zeros(CLASSES),
            dfc_b: Array1::zeros(CLASSES),
            pool1: None,
            pool2: None,
            feat: None,
        }
    }

    /// Logits for a batch `N,1,8,8`.
    pub fn forward(&mut self, x: ArrayView4<'_, T>, phase: Phase) -> Result<Array2<T>, Error> {
        let h1 = self.block1.forward(x, phase)?;
        let (p1, arg1) = nn::maxpool2_forward(h1.view());
        self.pool1 = Some((arg1, h1.dim()));
        let h2 = self.block2.forward(p1.view(), phase)?;
        let (p2, arg2) = nn::maxpool2_forward(h2.view());
        self.pool2 = Some((arg2, h2.dim()));
        let n = p2.dim().0;
        let feat = p2
            .into_shape_with_order((n, self.fc_w.ncols()))
            .expect("contiguous");
        let logits = nn::linear_forward(feat.view(), self.fc_w.view(), self.fc_b.view());
        self.feat = Some(feat);
        Ok(logits)
    }

    /// Backward pass from the gradient of the logits; stores all parameter
    /// gradients (returns the input gradient, used by the tests).
    pub fn backward(&mut self, dlogits: ndarray::ArrayView2<'_, T>) -> Result<Array4<T>, Error> {
        let feat = self.feat.take().expect("forward before backward");
        let (dfeat, dw, db) = nn::linear_backward(feat.view(), self.fc_w.view(), dlogits);
        self.dfc_w = dw;
        self.dfc_b = db;
        let (arg2, shape2) = self.pool2.take().expect("forward before backward");
        let dp2 = dfeat
            .into_shape_with_order((shape2.0, shape2.1, shape2.2 / 2, shape2.3 / 2))
            .expect("contiguous");
        let dh2 = nn::maxpool2_backward(dp2.view(), &arg2, shape2);
        let dp1 = self.block2.backward(dh2.view())?;
        let (arg1, shape1) = self.pool1.take().expect("forward before backward");
        let dh1 = nn::maxpool2_backward(dp1.view(), &arg1, shape1);
        self.block1.backward(dh1.view())
    }

    /// Visits every parameter with its gradient, in a fixed order.
    pub fn visit_params(&mut self, f: &mut dyn FnMut(&mut [T], &[T])) {
        self.block1.visit_params(f);
        self.block2.visit_params(f);
        f(
            self.fc_w.as_slice_mut().expect("contiguous"),
            self.dfc_w.as_slice().expect("contiguous"),
        );
        f(
            self.fc_b.as_slice_mut().expect("contiguous"),
            self.dfc_b.as_slice().expect("contiguous"),
        );
    }

    /// One SGD step with the stored gradients.
    pub fn step(&mut self, opt: &mut Sgd<T>) {
        opt.begin();
        self.visit_params(&mut |p, g| opt.update(p, g));
    }

    /// Accuracy on a data set, evaluated in chunks of `chunk` examples.
    pub fn accuracy(
        &mut self,
        x: ArrayView4<'_, T>,
        y: &[usize],
        chunk: usize,
        phase: Phase,
    ) -> Result<f64, Error> {
        let mut correct = 0usize;
        let n = y.len();
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            let logits = self.forward(x.slice_axis(Axis(0), (start..end).into()), phase)?;
            correct += nn::argmax_rows(logits.view())
                .iter()
                .zip(&y[start..end])
                .filter(|(p, t)| p == t)
                .count();
            start = end;
        }
        Ok(correct as f64 / n.max(1) as f64)
    }
}

/// The hyperparameters of one training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Examples per SGD step.
    pub batch: usize,
    /// Passes over the training set (the fixed budget of examples seen).
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Seed for the batch order.
    pub seed: u64,
}

/// What a training run reports.
#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    /// Mean training loss of each epoch (NaN/inf once diverged).
    pub epoch_loss: Vec<f64>,
    /// Whether the loss became non-finite.
    pub diverged: bool,
    /// SGD steps taken.
    pub steps: usize,
}

/// Trains `model` on `(x, y)` with SGD; calls `tick` after every step.
pub fn train<T: Scalar>(
    model: &mut Cnn<T>,
    x: ArrayView4<'_, T>,
    y: &[usize],
    cfg: &TrainConfig,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<TrainReport, Error> {
    let mut rng = Rng::new(cfg.seed);
    let mut opt = Sgd::new(c(cfg.lr), c(cfg.momentum));
    let mut order: Vec<usize> = (0..y.len()).collect();
    let mut report = TrainReport::default();
    let steps_per_epoch = y.len() / cfg.batch;
    'epochs: for _ in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let mut sum = 0.0;
        for chunk in order.chunks_exact(cfg.batch) {
            let xb = x.select(Axis(0), chunk);
            let yb: Vec<usize> = chunk.iter().map(|&i| y[i]).collect();
            let logits = model.forward(xb.view(), Phase::Train)?;
            let (loss, dlogits) = nn::softmax_cross_entropy(logits.view(), &yb);
            let loss = loss.to_f64().unwrap_or(f64::NAN);
            report.steps += 1;
            tick(1);
            if !loss.is_finite() || loss > 1e6 {
                report.diverged = true;
                report.epoch_loss.push(f64::INFINITY);
                tick(((cfg.epochs * steps_per_epoch) - report.steps) as u64);
                break 'epochs;
            }
            sum += loss;
            model.backward(dlogits.view())?;
            model.step(&mut opt);
        }
        report.epoch_loss.push(sum / steps_per_epoch.max(1) as f64);
    }
    Ok(report)
}
