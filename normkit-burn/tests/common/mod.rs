//! Helpers shared by the normkit-burn tests.
#![allow(dead_code)]

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

/// A small deterministic generator (SplitMix64): test data without a `rand` dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// A tensor of `shape` with values from `rng` in [lo, hi), as f32 (`f64 = false`) or f64.
pub fn tensor<const D: usize>(
    rng: &mut Rng,
    shape: [usize; D],
    lo: f64,
    hi: f64,
    device: &Device,
    f64_: bool,
) -> Tensor<D> {
    let n = shape.iter().product();
    let v = rng.vec(n, lo, hi);
    let data = if f64_ {
        TensorData::new(v, shape.to_vec())
    } else {
        TensorData::new(
            v.iter().map(|&a| a as f32).collect::<Vec<f32>>(),
            shape.to_vec(),
        )
    };
    Tensor::from_data(data, device)
}

pub fn param(t: Tensor<1>) -> Param<Tensor<1>> {
    Param::from_tensor(t)
}

/// The values of a tensor as f64.
pub fn vals<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Asserts `a ≈ b` elementwise: |a − b| ≤ tol · max(1, |b|).
#[track_caller]
pub fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let mut worst = 0.0f64;
    let mut at = 0;
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        let err = (x - y).abs() / y.abs().max(1.0);
        assert!(err.is_finite(), "{what}: non-finite at {k}: {x} vs {y}");
        if err > worst {
            worst = err;
            at = k;
        }
    }
    assert!(
        worst <= tol,
        "{what}: max relative error {worst:e} > {tol:e} at {at}: {} vs {}",
        a[at],
        b[at]
    );
}

/// `$run(x, w, forward, params)` (a test's runner) on each module listed, with the same
/// forward and the same parameter gradients: `$grads` is an expression in the module `$m`
/// and the gradients `$gr` (normkit's modules and burn-nn's have the same field names but
/// no common trait to write a function over). An array of the results, in order.
#[allow(unused_macros)]
macro_rules! on_each {
    ($run:ident, ($x:expr, $w:expr), [$($module:expr),+], |$m:ident, $gr:ident| $grads:expr) => {
        [$({
            let $m = &$module;
            $run($x, $w, |x| $m.forward(x), |$gr| $grads)
        }),+]
    };
}
