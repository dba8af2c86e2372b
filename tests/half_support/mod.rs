//! Inputs and parameters shared by the half-precision tests (`half.rs`, `half_chain.rs`).

use normkit::ndarray::{ArrayD, IxDyn};
use normkit::{DynNorm, Float};

/// Seeded values of `shape`, already representable in `T` (so the f32 layer sees the same
/// input as the half one).
pub fn input<T: Float>(shape: &[usize], seed: u64, offset: f64) -> (ArrayD<T>, ArrayD<f32>) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let v: Vec<T> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            T::from_acc(offset + 3.0 * (u - 0.5))
        })
        .collect();
    let wide: Vec<f32> = v.iter().map(|x| x.to_acc() as f32).collect();
    (
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap(),
        ArrayD::from_shape_vec(IxDyn(shape), wide).unwrap(),
    )
}

/// Sets every stage's parameters (and running statistics) of both layers to the same
/// `T`-representable values.
pub fn same_params<T: Float>(h: &mut DynNorm<T>, w: &mut DynNorm<f32>, seed: u64) {
    for (k, (sh, sw)) in h.stages_mut().iter_mut().zip(w.stages_mut()).enumerate() {
        let s = seed + 10 * k as u64;
        let pairs = [
            (&mut sh.gamma, &mut sw.gamma, 1.0),
            (&mut sh.beta, &mut sw.beta, 0.0),
            (&mut sh.running_mean, &mut sw.running_mean, 0.3),
            (&mut sh.running_var, &mut sw.running_var, 2.0),
        ];
        for (i, (ph, pw, offset)) in pairs.into_iter().enumerate() {
            if let (Some(ph), Some(pw)) = (ph.as_mut(), pw.as_mut()) {
                let (a, b) = input::<T>(ph.shape(), s + i as u64, offset);
                *ph = a;
                *pw = b;
            }
        }
    }
}
