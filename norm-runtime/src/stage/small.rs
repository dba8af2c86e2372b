//! The small column forward: a batch-statistics forward over a plan of plain columns (the
//! input `[lines, w]` in standard layout, one statistics group per column: BatchNorm1d on
//! `[N, C]`, channels-last batch norm over the leading dims), small enough to run as the
//! executor's one task, without the executor's per-call machinery (units, output claims,
//! the generic line walk).
//!
//! It runs exactly the executor's operations for such a plan (`kernels::exec::forward`,
//! one unit of `w` groups, all lines in one task): the shifts (each column's first value),
//! the shifted column sums (`col_sums`, lines in order), `finish.many` over all the groups,
//! then y = (x − m)·a + b per column (`col_affine` where the level has a run of that width,
//! else the same three operations in a plain loop). So the results are the same bits, and
//! (the executor runs such a plan on the calling thread) independent of the thread count.

use crate::kernels::elem::{which, RowReduce, Which};
use crate::kernels::exec::{self, CoefMut, ColumnSums, Finish, Params};
use crate::kernels::isa::multiversion;
use crate::kernels::reduce::small_cols;
use crate::plan::Plan;
use crate::Float;

/// The (lines, columns) of `plan` when the small column path takes it: two dims, the outer
/// reduced with stride `w`, the inner the contiguous line of `w > 1` kept groups, at most
/// one task's worth of values (`exec::TASK_ELEMS`: a plan the executor does not split,
/// `exec::splits`, so it runs it as one task over all its lines, the order used here), and
/// no parameter left to the elementwise pass.
#[inline(always)]
pub(crate) fn columns<T>(plan: &Plan, params: Params<'_, T>) -> Option<(usize, usize)> {
    if plan.ndims != 2 || params.gamma.is_some() || params.beta.is_some() {
        return None;
    }
    let (outer, line) = (plan.dims[0], plan.dims[1]);
    let w = line.size;
    let plain = line.xs == 1 && line.ss == 1 && outer.ss == 0 && outer.xs == w;
    let fits = w > 1 && outer.size > 0 && plan.groups == w && plan.numel <= exec::TASK_ELEMS;
    (plain && fits && plan.numel == outer.size * w).then_some((outer.size, w))
}

multiversion! {
    /// The shifts (each column's first value where `center`, else 0) and zeroed sums.
    fn start_sums<T: Float>(x: &[T], center: bool, shift: &mut [f64], sum: &mut [f64], sq: &mut [f64]) {
        if center {
            for (h, &v) in shift.iter_mut().zip(x) {
                *h = v.to_acc();
            }
        } else {
            shift.fill(0.0);
        }
        sum.fill(0.0);
        sq.fill(0.0);
    }
}

/// Columns per block of [`affine_lines`]: 64 coefficients of each kind stay in registers
/// (four AVX-512 vectors) across the lines.
const BLOCK: usize = 64;

multiversion! {
    /// y = (x − m)·a + b over the lines of `w = m.len()` columns, in blocks of [`BLOCK`]
    /// columns whose coefficients are copied to local arrays (registers) first. Also the
    /// column pass of the fixed-coefficient eval (`path::columns`).
    pub(crate) fn affine_lines<T: Float>(x: &[T], out: &mut [T], m: &[T], a: &[T], b: &[T]) {
        let w = m.len();
        if w % BLOCK != 0 {
            // Other widths in one pass over whole lines: blocks and a partial last block
            // spilled the slices' pointers (AVX2: +9 instructions per line).
            affine_cols((x, out), w, 0, (m, a, b));
            return;
        }
        for c0 in (0..w).step_by(BLOCK) {
            let c = c0..c0 + BLOCK;
            let k = (&m[c.clone()], &a[c.clone()], &b[c]);
            if let (Ok(m), Ok(a), Ok(b)) = (<[T; BLOCK]>::try_from(k.0), <[T; BLOCK]>::try_from(k.1), <[T; BLOCK]>::try_from(k.2)) {
                affine_cols((x, &mut *out), w, c0, (&m, &a, &b));
            }
        }
    }
}

/// Columns `c0..c0 + n` of every line of `w` values, `n` = the length of `k` = (m, a, b):
/// y = (x − m)·a + b, every slice cut to `n` first (zipped slices of unknown lengths
/// vectorized worse: AVX2, +0.8 instructions per value on 37 columns).
#[inline(always)]
fn affine_cols<T: Float>((x, out): (&[T], &mut [T]), w: usize, c0: usize, k: (&[T], &[T], &[T])) {
    let n = k.0.len();
    let (m, a, b) = (k.0, &k.1[..n], &k.2[..n]);
    for (yl, xl) in out.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
        let (ys, xs) = (&mut yl[c0..c0 + n], &xl[c0..c0 + n]);
        for i in 0..n {
            ys[i] = (xs[i] - m[i]) * a[i] + b[i];
        }
    }
}

/// The forward of a plan of `(lines, w)` columns (see [`columns`]): statistics into
/// `coef.stat`, the coefficients into `coef.m/a/b`, y into `out`; `acc` is scratch.
#[inline(always)]
pub(crate) fn forward<T: Float>(
    (lines, w): (usize, usize),
    (x, out): (&[T], &mut [T]),
    center: bool,
    finish: &Finish<'_, T>,
    coef: CoefMut<'_, T>,
    acc: &mut Vec<f64>,
) {
    let n = lines * w;
    let (x, out) = (&x[..n], &mut out[..n]);
    acc.resize(3 * w, 0.0);
    let (shift, rest) = acc[..3 * w].split_at_mut(w);
    let (sum, sq) = rest.split_at_mut(w);
    start_sums(x, center, shift, sum, sq);
    let f32s = match which::<T>() {
        Which::F32(k) => Some(k),
        _ => None,
    };
    if !f32s
        .as_ref()
        .is_some_and(|k| small_cols::sums(k.r(x), shift, sum, sq))
    {
        T::col_sums(x, (0..lines).map(move |j| j * w), shift, sum, sq);
    }
    let mut coef = coef;
    let sums = ColumnSums { shift, sum, sq };
    (finish.many)(0, sums, coef.part(0..w));
    let c = (&coef.m[..w], &coef.a[..w], &coef.b[..w]);
    if let Some(k) = &f32s {
        if small_cols::affine(k.r(x), k.w(out), k.r3(c)) {
            return;
        }
    }
    if !T::col_affine(x, out, 0, c, false) {
        affine_lines(x, out, c.0, c.1, c.2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::coef;
    use crate::kernels::exec::{self, Acc, FwdIn, ShiftedSums, Stat, Units};
    use crate::stats::{estimator_of, group_stat, mean_m2};

    /// What one forward produced: the statistics, the coefficients and y, as bits.
    type Bits = (Vec<Stat>, Vec<u64>, Vec<u64>);

    fn run<T: Float>(decl: &str, shape: &[usize], x: &[T], center: bool, small: bool) -> Bits {
        let spec = norm_spec::parse_str(decl).unwrap();
        let stage = &spec.stages[0];
        let plan = Plan::new(&spec, stage, shape).unwrap();
        let params = Params {
            gamma: None,
            beta: None,
        };
        let cols = columns(&plan, params).expect("a small column plan");
        let (groups, n) = (plan.groups, plan.group_len);
        let est = estimator_of(stage, n);
        let affine = |s: usize| (0.5 + s as f64 * 0.01, s as f64 * -0.02);
        let one = |s: usize, raw: ShiftedSums, out: &mut Stat| {
            let (mean, m2) = mean_m2(stage, raw, n);
            *out = group_stat(stage, mean, m2, n);
            let (g, h) = affine(s);
            coef(mean, out.rstd * g, h)
        };
        let many = |s0: usize, raw: ColumnSums<'_>, out: CoefMut<'_, T>| {
            exec::finish_run(s0, raw, est, affine, out);
        };
        let finish = Finish {
            one: &one,
            many: &many,
        };
        let mut stat = vec![Stat::default(); groups];
        let (mut m, mut a, mut b) = (
            vec![T::zero(); groups],
            vec![T::zero(); groups],
            vec![T::zero(); groups],
        );
        let mut y = vec![T::zero(); x.len()];
        let c = CoefMut {
            stat: &mut stat,
            m: &mut m,
            a: &mut a,
            b: &mut b,
        };
        // A used scratch buffer: the paths must not depend on its old contents.
        let mut acc = Acc {
            f: vec![7.0; 5],
            raws: Vec::new(),
        };
        if small {
            forward(cols, (x, &mut y), center, &finish, c, &mut acc.f);
        } else {
            let units = Units::new(&plan);
            let t = FwdIn {
                units: &units,
                x,
                center,
                params,
                finish: &finish,
            };
            exec::forward(t, c, &mut acc, &mut y);
        }
        let coefs = m.iter().chain(&a).chain(&b).map(|v| v.to_acc().to_bits());
        let y = y.iter().map(|v| v.to_acc().to_bits()).collect();
        (stat, coefs.collect(), y)
    }

    fn compare<T: Float>(seed: u64) {
        let decls = [
            r#"input = "N,C", axes = "N", affine, running_stats"#,
            r#"input = "N,H,W,C", axes = "N,H,W", affine, eps = 0.001"#,
            r#"input = "N,C", axes = "N", affine, eps_mode = "std""#,
        ];
        let shapes: [&[usize]; 12] = [
            &[2, 2],
            &[32, 128],
            &[7, 65],
            &[3, 200],
            &[17, 8],
            &[5, 3],
            &[256, 128],
            &[1000, 31],
            &[4, 64],
            &[9, 192],
            &[2, 3, 5, 16],
            &[8, 4, 4, 129],
        ];
        // A 64-bit LCG (Knuth's MMIX constants), its top 53 bits as a value in [0, 1).
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        // The cap of this thread only (as `stats`' tests).
        for level in crate::simd::available() {
            crate::kernels::simd::with_thread_cap(level, || {
                for decl in decls {
                    let rank = norm_spec::parse_str(decl).unwrap().input.len();
                    for shape in shapes.iter().filter(|s| s.len() == rank) {
                        let len: usize = shape.iter().product();
                        let offset = 10.0 * next();
                        let x: Vec<T> = (0..len)
                            .map(|_| T::from_acc(offset + 4.0 * next() - 2.0))
                            .collect();
                        for center in [true, false] {
                            let small = run(decl, shape, &x, center, true);
                            let general = run(decl, shape, &x, center, false);
                            assert!(
                                small == general,
                                "{decl}, {shape:?}, center {center}, {level:?}"
                            );
                        }
                    }
                }
            });
        }
    }

    /// The small column path gives the executor's bits (statistics, coefficients, y) on
    /// plans of many widths (under, at and over a block of columns, not multiples of the
    /// vector width), at every ISA level, shifted or not.
    #[test]
    fn small_columns_are_bit_identical_to_the_executor_f32() {
        compare::<f32>(0x2545_f491_4f6c_dd1d);
    }

    #[test]
    fn small_columns_are_bit_identical_to_the_executor_f64() {
        compare::<f64>(0x9e37_79b9_7f4a_7c15);
    }

    /// Which plans take the small path: plain columns up to the bound, nothing else.
    #[test]
    fn small_columns_apply_to_plain_columns_only() {
        let none = Params::<f32> {
            gamma: None,
            beta: None,
        };
        let of = |decl: &str, shape: &[usize]| {
            let spec = norm_spec::parse_str(decl).unwrap();
            let plan = Plan::new(&spec, &spec.stages[0], shape).unwrap();
            columns(&plan, none)
        };
        let bn1d = r#"input = "N,C", axes = "N", affine, running_stats"#;
        assert_eq!(of(bn1d, &[32, 128]), Some((32, 128)));
        assert_eq!(of(bn1d, &[256, 128]), Some((256, 128)));
        assert_eq!(of(bn1d, &[257, 128]), None, "over the bound");
        assert_eq!(of(bn1d, &[32, 1]), None, "one column: rows");
        let nhwc = r#"input = "N,H,W,C", axes = "N,H,W", affine"#;
        assert_eq!(of(nhwc, &[2, 3, 5, 16]), Some((30, 16)));
        let nchw = r#"input = "N,C,H,W", axes = "N,H,W", affine"#;
        assert_eq!(of(nchw, &[2, 3, 4, 4]), None, "NCHW: lines of one group");
        let ln = r#"input = "N,D", axes = "D", affine = "D""#;
        assert_eq!(of(ln, &[32, 128]), None, "rows");
        let g = [1.0f32; 4];
        let with_gamma = Params {
            gamma: Some(&g[..]),
            beta: None,
        };
        let spec = norm_spec::parse_str(bn1d).unwrap();
        let plan = Plan::new(&spec, &spec.stages[0], &[8, 4]).unwrap();
        assert_eq!(columns(&plan, with_gamma), None, "γ left to the pass");
    }
}
