//! The reduction and elementwise kernels, over the lines of a [`Plan`](crate::plan::Plan).
//!
//! Each pass walks the plan's lines; along a line the statistics index advances by
//! `ds ∈ {0, 1}` and the parameter index by `dp ∈ {0, 1}`. Accumulation is in `f64`.

pub(crate) mod backward;
pub(crate) mod moments;
pub(crate) mod normalize;

/// Σ (x − shift) and Σ (x − shift)² over a line, in f64 with four accumulators.
#[inline]
pub(crate) fn shifted_sums<T: crate::Float>(line: &[T], shift: f64) -> (f64, f64) {
    let mut s = [0.0f64; 4];
    let mut q = [0.0f64; 4];
    let mut chunks = line.chunks_exact(4);
    for c in &mut chunks {
        for k in 0..4 {
            let d = c[k].to_acc() - shift;
            s[k] += d;
            q[k] += d * d;
        }
    }
    for (k, &v) in chunks.remainder().iter().enumerate() {
        let d = v.to_acc() - shift;
        s[k] += d;
        q[k] += d * d;
    }
    ((s[0] + s[1]) + (s[2] + s[3]), (q[0] + q[1]) + (q[2] + q[3]))
}

/// Per-group coefficients of an elementwise pass: v = (x − m)·a + b.
#[derive(Clone, Debug, Default)]
pub(crate) struct Coef<T> {
    /// The group mean rounded to the element type.
    pub m: Vec<T>,
    /// The multiplier.
    pub a: Vec<T>,
    /// The offset (including the mean's rounding remainder).
    pub b: Vec<T>,
}

impl<T: crate::Float> Coef<T> {
    /// Empties the coefficients, keeping their buffers.
    pub fn clear(&mut self) {
        self.m.clear();
        self.a.clear();
        self.b.clear();
    }

    /// Appends the coefficients of v = (x − μ)·a + b for a group with mean `mean`.
    #[inline]
    pub fn push(&mut self, mean: f64, a: f64, b: f64) {
        let m = T::from_acc(mean);
        self.m.push(m);
        self.a.push(T::from_acc(a));
        self.b.push(T::from_acc(b - (mean - m.to_acc()) * a));
    }
}
