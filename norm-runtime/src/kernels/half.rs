//! The kernels of the half-precision types.
//!
//! Half-precision layers compute in f32: the fused paths of `crate::widen` run the kernels of
//! `super::convert::fused`, which read and write the half storage directly through the ISA
//! token's half loads and stores; everything else converts whole tensors with
//! [`super::convert`] and runs the f32 kernels. These row kernels are only the portable
//! reference loops (f64 accumulation, the shifted scheme of `reduce`) that
//! `kernels::elem::Which` needs for every element type.

use half::{bf16, f16};

use super::reduce::{row_dsums_portable, row_sums_portable, Elem, RowParam};

macro_rules! portable_rows {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            #[inline(always)]
            fn row_sums(x: &[$t], shift: f64) -> (f64, f64) {
                row_sums_portable(x, shift)
            }
            #[inline(always)]
            fn row_dsums(
                x: &[$t],
                dy: &[$t],
                c: ($t, $t, $t),
                p: Option<RowParam<'_, $t>>,
            ) -> (f64, f64) {
                row_dsums_portable(x, dy, c, p)
            }
        }
    )*};
}

portable_rows!(bf16, f16);

#[cfg(test)]
mod tests {
    use super::*;

    /// The shifted sums of a bf16 row equal the f64 sums of its exact values.
    #[test]
    fn row_sums_of_half_rows_are_the_exact_f64_sums() {
        let xs: Vec<f64> = (0..37).map(|i| 1000.0 + f64::from(i) * 0.25).collect();
        let b: Vec<bf16> = xs.iter().map(|&v| bf16::from_f64(v)).collect();
        let h: Vec<f16> = xs.iter().map(|&v| f16::from_f64(v)).collect();
        let shift = 1000.0;
        let want = |v: &[f64]| {
            let s: f64 = v.iter().map(|x| x - shift).sum();
            let q: f64 = v.iter().map(|x| (x - shift) * (x - shift)).sum();
            (s, q)
        };
        let bv: Vec<f64> = b.iter().map(|v| f64::from(v.to_f32())).collect();
        let hv: Vec<f64> = h.iter().map(|v| f64::from(v.to_f32())).collect();
        assert_eq!(<bf16 as Elem>::row_sums(&b, shift), want(&bv));
        assert_eq!(<f16 as Elem>::row_sums(&h, shift), want(&hv));
        let (s1, s2) = <f16 as Elem>::row_dsums(&h, &h, (f16::ZERO, f16::ONE, f16::ZERO), None);
        assert_eq!(s1, hv.iter().sum::<f64>());
        assert_eq!(s2, hv.iter().map(|v| v * v).sum::<f64>());
    }
}
