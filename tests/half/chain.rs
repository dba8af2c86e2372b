//! The fused half-precision chain (`norm-runtime/src/widen/chain.rs`): Batch-Channel
//! Normalization in bf16 and f16 on shapes whose cells take the fused path (several
//! blocks, one block), train, train, eval steps, against the f32 layer on the same
//! (representable) values: the output, the running statistics, dx and the parameter
//! gradients are the f32 layer's rounded once, bit for bit, at every SIMD level this CPU
//! runs, and the same bits for 1, 2 and 3 threads.

use normkit::prelude::*;
use normkit::{bf16, f16};

use crate::support::{
    adopt_running, at_every_level_and_thread_count, input, rounded, rounded_opt, same_params,
};

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
        bits.extend(rounded(&format!("{ctx}: y"), &y, &yw));
        for (k, (sh, sw)) in h.stages().iter().zip(w.stages()).enumerate() {
            let what = format!("{ctx}: stage {k} running");
            bits.extend(rounded_opt(&what, &sh.running_mean, &sw.running_mean));
            bits.extend(rounded_opt(&what, &sh.running_var, &sw.running_var));
            assert_eq!(sh.num_batches_tracked, sw.num_batches_tracked, "{what}");
        }
        let g = h.backward_chain(x.view(), dy.view(), &saved).unwrap();
        let gw = w.backward_chain(xw.view(), dyw.view(), &savedw).unwrap();
        bits.extend(rounded(&format!("{ctx}: dx"), &g.dx, &gw.dx));
        for (k, (s, sw)) in g.stages.iter().zip(&gw.stages).enumerate() {
            let what = format!("{ctx}: stage {k}");
            bits.extend(rounded_opt(
                &format!("{what} dgamma"),
                &s.dgamma,
                &sw.dgamma,
            ));
            bits.extend(rounded_opt(&format!("{what} dbeta"), &s.dbeta, &sw.dbeta));
        }
        // The f32 layer takes the half layer's (rounded) running statistics.
        adopt_running(&h, &mut w);
    }
    bits
}

const BCN: &str = r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 4, affine))"#;
const BCN1: &str = r#"input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), gn(axes = "C,H,W", groups = 1, affine))"#;

fn every_case<T: Float>() {
    // (spec, C, shape): blocks of one channel group over the batch (odd cells of 81 and
    // 100 values), and one block (groups = 1) over more than one task.
    let cases: [(&str, usize, &[usize]); 3] = [
        (BCN, 8, &[3, 8, 9, 9]),
        (BCN, 16, &[4, 16, 10, 10]),
        (BCN1, 4, &[3, 4, 70, 70]),
    ];
    at_every_level_and_thread_count::<T, _>(
        &cases,
        |(_, _, shape)| format!("{shape:?}"),
        |&(spec, c, shape), ctx| run::<T>(spec, c, shape, ctx),
    );
}

#[test]
fn bf16_fused_chain_is_the_f32_chain_rounded() {
    every_case::<bf16>();
}

#[test]
fn f16_fused_chain_is_the_f32_chain_rounded() {
    every_case::<f16>();
}
