//! The fused half-precision chain (`norm-runtime/src/widen/chain.rs`): Batch-Channel
//! Normalization in bf16 and f16 on shapes whose cells take the fused path (several
//! blocks, one block), train, train, eval steps, against the f32 layer on the same
//! (representable) values: the output, the running statistics, dx and the parameter
//! gradients are the f32 layer's rounded once, bit for bit, at every SIMD level this CPU
//! runs, and the same bits for 1, 2 and 3 threads.

mod half_support;

use std::sync::Mutex;

use normkit::ndarray::ArrayD;
use normkit::prelude::*;
use normkit::simd;
use normkit::{bf16, f16};

use half_support::{input, same_params};

/// `simd::set_cap` is global to the process.
static LOCK: Mutex<()> = Mutex::new(());

/// Asserts `half[i]` is `wide[i]` rounded to `T`; returns the bits (for the comparison
/// across thread counts).
fn rounded<T: Float>(what: &str, half: &ArrayD<T>, wide: &ArrayD<f32>, bits: &mut Vec<u64>) {
    assert_eq!(half.shape(), wide.shape(), "{what}: shape");
    for (i, (h, w)) in half.iter().zip(wide.iter()).enumerate() {
        let want = T::from_acc(f64::from(*w));
        assert!(
            h.to_acc() == want.to_acc() && !h.is_nan(),
            "{what}[{i}]: {h} is not {w} rounded to {} ({want})",
            T::NAME
        );
        bits.push(h.to_acc().to_bits());
    }
}

fn rounded_opt<T: Float>(
    what: &str,
    half: &Option<ArrayD<T>>,
    wide: &Option<ArrayD<f32>>,
    bits: &mut Vec<u64>,
) {
    match (half, wide) {
        (Some(h), Some(w)) => rounded(what, h, w, bits),
        (None, None) => {}
        _ => panic!("{what}: present in one precision only"),
    }
}

/// Train, train, eval with backward after each, against the f32 layer.
fn run<T: Float>(spec: &str, c: usize, shape: &[usize], ctx: &str) -> Vec<u64> {
    let spec = NormSpec::parse(spec).unwrap();
    let mut h = DynNorm::<T>::new(&spec, &[("C", c)]).unwrap();
    let mut w = DynNorm::<f32>::new(&spec, &[("C", c)]).unwrap();
    same_params(&mut h, &mut w, 0);
    let mut bits = Vec::new();
    for (step, mode) in [Mode::Train, Mode::Train, Mode::Eval]
        .into_iter()
        .enumerate()
    {
        let ctx = format!("{ctx} step {step}");
        let (x, xw) = input::<T>(shape, 100 + step as u64, 0.5);
        let (dy, dyw) = input::<T>(shape, 200 + step as u64, 0.0);
        let (y, saved) = h.forward(x.view(), mode).unwrap();
        let (yw, savedw) = w.forward(xw.view(), mode).unwrap();
        rounded(&format!("{ctx}: y"), &y, &yw, &mut bits);
        for (k, (sh, sw)) in h.stages().iter().zip(w.stages()).enumerate() {
            let what = format!("{ctx}: stage {k} running");
            rounded_opt(&what, &sh.running_mean, &sw.running_mean, &mut bits);
            rounded_opt(&what, &sh.running_var, &sw.running_var, &mut bits);
            assert_eq!(sh.num_batches_tracked, sw.num_batches_tracked, "{what}");
        }
        let g = h.backward_chain(x.view(), dy.view(), &saved).unwrap();
        let gw = w.backward_chain(xw.view(), dyw.view(), &savedw).unwrap();
        rounded(&format!("{ctx}: dx"), &g.dx, &gw.dx, &mut bits);
        for (k, (s, sw)) in g.stages.iter().zip(&gw.stages).enumerate() {
            let what = format!("{ctx}: stage {k}");
            rounded_opt(&format!("{what} dgamma"), &s.dgamma, &sw.dgamma, &mut bits);
            rounded_opt(&format!("{what} dbeta"), &s.dbeta, &sw.dbeta, &mut bits);
        }
        // The f32 layer takes the half layer's (rounded) running statistics.
        for (sh, sw) in h.stages().iter().zip(w.stages_mut()) {
            if let (Some(a), Some(b)) = (&sh.running_mean, sw.running_mean.as_mut()) {
                *b = a.mapv(|v| v.to_acc() as f32);
            }
            if let (Some(a), Some(b)) = (&sh.running_var, sw.running_var.as_mut()) {
                *b = a.mapv(|v| v.to_acc() as f32);
            }
        }
    }
    bits
}

const BCN: &str = r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 4, affine))"#;
const BCN1: &str = r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 1, affine))"#;

fn every_case<T: Float>() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // (spec, C, shape): blocks of one channel group over the batch (odd cells of 81 and
    // 100 values), and one block (groups = 1) over more than one task.
    let cases: [(&str, usize, &[usize]); 3] = [
        (BCN, 8, &[3, 8, 9, 9]),
        (BCN, 16, &[4, 16, 10, 10]),
        (BCN1, 4, &[3, 4, 70, 70]),
    ];
    for level in simd::available() {
        simd::set_cap(Some(level));
        for (spec, c, shape) in cases {
            let mut first: Option<Vec<u64>> = None;
            for threads in [1, 2, 3] {
                let ctx = format!("{} {level:?} {shape:?} T={threads}", T::NAME);
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got = pool.install(|| run::<T>(spec, c, shape, &ctx));
                match &first {
                    None => first = Some(got),
                    Some(f) => assert!(*f == got, "{ctx}: results differ from 1 thread's"),
                }
            }
        }
    }
    simd::set_cap(None);
}

#[test]
fn bf16_fused_chain_is_the_f32_chain_rounded() {
    every_case::<bf16>();
}

#[test]
fn f16_fused_chain_is_the_f32_chain_rounded() {
    every_case::<f16>();
}
