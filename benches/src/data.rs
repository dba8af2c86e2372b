//! Deterministic input data: a SplitMix64 generator with uniform and normal draws.
//!
//! The benchmark numbers do not depend on the values (no data-dependent branches in the
//! kernels), only on them being ordinary finite floats written to every element, so a tiny
//! generator is enough and keeps runs reproducible without a `rand` dependency.

/// SplitMix64: a 64-bit generator with good statistical quality for its size.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Fills `out` with standard normal values (Box–Muller, two values per pair of draws).
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        let mut chunks = out.chunks_exact_mut(2);
        for pair in &mut chunks {
            let (a, b) = self.normal_pair();
            pair[0] = a as f32;
            pair[1] = b as f32;
        }
        if let [last] = chunks.into_remainder() {
            *last = self.normal_pair().0 as f32;
        }
    }

    /// Fills `out` with uniform values in `[lo, hi)`.
    pub fn fill_uniform(&mut self, out: &mut [f32], lo: f64, hi: f64) {
        for v in out {
            *v = self.uniform_in(lo, hi) as f32;
        }
    }

    fn normal_pair(&mut self) -> (f64, f64) {
        // 1 − u is in (0, 1], so the logarithm is finite.
        let r = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        let t = std::f64::consts::TAU * self.uniform();
        (r * t.cos(), r * t.sin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_unit_moments() {
        let mut v = vec![0.0f32; 100_001];
        Rng::new(1).fill_normal(&mut v);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let u = a.uniform_in(0.5, 1.5);
            assert_eq!(u, b.uniform_in(0.5, 1.5));
            assert!((0.5..1.5).contains(&u));
        }
    }
}
