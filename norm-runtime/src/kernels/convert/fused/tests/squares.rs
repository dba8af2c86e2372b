//! The sums of uncentered rows (Σd² only) against the full sums, at every level.

use super::*;

#[derive(Clone)]
struct RunSquares(Vec<u16>);
impl Kernel for RunSquares {
    type Out = (f64, f64);
    fn run<S: Isa, F: Format>(self, s: S) -> (f64, f64) {
        Squares {
            x: &self.0,
            shift: 0.0,
        }
        .run::<S, F>(s)
    }
}

/// An uncentered row's sums (`row_sums` without `center`: Σd² only) are, at every level,
/// Σd as 0 and the bits of the full sums' Σd² with the shift 0, which are the f32 row
/// kernel's of the widened values; and they are Σx² to rounding.
fn squares_agree<F: Conv>(fmt: Fmt) {
    use crate::kernels::elem::RowReduce;
    for &n in LENS.iter().chain(&[200, 1000, 1024, 4099]) {
        let x = data::<F>(n, 23, 0.75);
        let xs: Vec<f32> = x.iter().map(|&v| F::to(v)).collect();
        let full = at_every_level::<_, F>(&RunSums(x.clone(), 0.0));
        let squares = at_every_level::<_, F>(&RunSquares(x.clone()));
        for (f, q) in full.iter().zip(&squares) {
            assert_eq!(q.0.to_bits(), 0, "n={n}");
            assert_eq!(q.1.to_bits(), f.1.to_bits(), "n={n}");
        }
        let want = <f32 as RowReduce>::row_sums(&xs, 0.0).1;
        assert_eq!(row_sums(fmt, &x, 0.0, false), (0.0, want), "n={n}");
        assert_eq!(row_sums(fmt, &x, 0.0, true), sums(fmt, &x, 0.0), "n={n}");
        let sq: f64 = xs.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        close("sq", want, sq, sq);
    }
}

#[test]
fn uncentered_row_sums_are_the_squares_of_the_full_sums() {
    squares_agree::<Bf16>(Fmt::Bf16);
    squares_agree::<F16>(Fmt::F16);
}
