//! Every kernel at every level this CPU runs, in both formats, against a lane-by-lane
//! reference with the same f32 expressions (bit for bit) and f64 sums (to rounding),
//! on lengths below, at and around one vector.

use super::*;
use crate::kernels::isa::scalar::Scalar;
use half::{bf16, f16};

/// Runs `k` with every token this CPU has.
fn at_every_level<K: Kernel + Clone, F: Format>(k: &K) -> Vec<K::Out> {
    let mut out = vec![Scalar.vectorize(At(k.clone(), PhantomData::<F>))];
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::isa::{avx2::Avx2, avx512::Avx512};
        if let Some(t) = Avx2::try_new() {
            out.push(t.vectorize(At(k.clone(), PhantomData::<F>)));
        }
        if let Some(t) = Avx512::try_new() {
            out.push(t.vectorize(At(k.clone(), PhantomData::<F>)));
            // With AVX512_BF16's rounding inline where the CPU has it.
            out.push(t.vectorize_bf16(At(k.clone(), PhantomData::<F>)));
        }
    }
    #[cfg(target_arch = "aarch64")]
    out.push(crate::kernels::isa::neon::Neon.vectorize(At(k.clone(), PhantomData::<F>)));
    out
}

/// A format's scalar conversions (the `half` crate's).
trait Conv: Format {
    fn to(v: u16) -> f32;
    fn from(v: f32) -> u16;
}
impl Conv for Bf16 {
    fn to(v: u16) -> f32 {
        bf16::from_bits(v).to_f32()
    }
    fn from(v: f32) -> u16 {
        bf16::from_f32(v).to_bits()
    }
}
impl Conv for F16 {
    fn to(v: u16) -> f32 {
        f16::from_bits(v).to_f32()
    }
    fn from(v: f32) -> u16 {
        f16::from_f32(v).to_bits()
    }
}

fn data<F: Conv>(n: usize, seed: u32, offset: f32) -> Vec<u16> {
    (0..n)
        .map(|i| {
            let t = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32;
            F::from(offset + (t / (1u32 << 24) as f32 - 0.5) * 6.0)
        })
        .collect()
}

fn params(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.5 + ((i as u32 * 7 + seed) % 13) as f32 / 9.0)
        .collect()
}

fn close(what: &str, got: f64, want: f64, scale: f64) {
    assert!(
        (got - want).abs() <= 1e-12 * scale.max(1.0),
        "{what}: {got} vs {want}"
    );
}

const LENS: &[usize] = &[1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 257];

/// A kernel's arguments, owned (so every level runs on fresh buffers).
#[derive(Clone)]
struct Row {
    x: Vec<u16>,
    dy: Vec<u16>,
    g: Vec<f32>,
    bt: Vec<f32>,
}

#[derive(Clone)]
struct RunSums(Vec<u16>, f64);
impl Kernel for RunSums {
    type Out = (f64, f64);
    fn run<S: Isa, F: Format>(self, s: S) -> (f64, f64) {
        Sums {
            x: &self.0,
            shift: self.1,
        }
        .run::<S, F>(s)
    }
}

#[derive(Clone)]
struct RunAffine(Row, u8);
impl Kernel for RunAffine {
    type Out = Vec<u16>;
    fn run<S: Isa, F: Format>(self, s: S) -> Vec<u16> {
        let r = &self.0;
        let mut y = vec![0u16; r.x.len()];
        let p = match self.1 {
            0 => None,
            1 => Some((&r.g[..], None)),
            _ => Some((&r.g[..], Some(&r.bt[..]))),
        };
        Affine {
            x: &r.x,
            y: &mut y,
            c: (0.25, 1.75, -0.5),
            p,
        }
        .run::<S, F>(s);
        y
    }
}

#[derive(Clone)]
struct RunBack(Row, bool);
impl Kernel for RunBack {
    type Out = ((f64, f64), Vec<f64>, Vec<f64>, Vec<u16>);
    fn run<S: Isa, F: Format>(self, s: S) -> Self::Out {
        let r = &self.0;
        let n = r.x.len();
        let g = self.1.then_some(&r.g[..]);
        let (mut dg, mut db) = (vec![0.5; n], vec![-0.5; n]);
        let sums = DSums {
            x: &r.x,
            dy: &r.dy,
            c: (0.25, 1.75, -0.5),
            g,
            acc: Some((&mut dg, &mut db)),
        }
        .run::<S, F>(s);
        let mut out = vec![0u16; n];
        Dx {
            x: &r.x,
            dy: &r.dy,
            out: &mut out,
            k: (0.75, 0.25, 1.75, -0.5),
            g,
        }
        .run::<S, F>(s);
        (sums, dg, db, out)
    }
}

fn rows_agree<F: Conv>() {
    for &n in LENS {
        let x = data::<F>(n, 1, 2.0);
        let row = Row {
            dy: data::<F>(n, 2, 0.0),
            g: params(n, 3),
            bt: params(n, 4),
            x: x.clone(),
        };
        let xs: Vec<f32> = x.iter().map(|&v| F::to(v)).collect();
        let ds: Vec<f32> = row.dy.iter().map(|&v| F::to(v)).collect();
        // Sums.
        let shift = f64::from(xs[0]);
        let want = xs.iter().fold((0.0, 0.0), |(s, q), &v| {
            let d = f64::from(v) - shift;
            (s + d, q + d * d)
        });
        for got in at_every_level::<_, F>(&RunSums(x.clone(), shift)) {
            close("sum", got.0, want.0, want.1);
            close("sq", got.1, want.1, want.1);
        }
        // Affine, without and with γ, β.
        let (m, a, b) = (0.25f32, 1.75f32, -0.5f32);
        for mode in 0..3u8 {
            let want: Vec<u16> = (0..n)
                .map(|i| {
                    let v = (xs[i] - m) * a + b;
                    F::from(match mode {
                        0 => v,
                        1 => v * row.g[i],
                        _ => v * row.g[i] + row.bt[i],
                    })
                })
                .collect();
            for got in at_every_level::<_, F>(&RunAffine(row.clone(), mode)) {
                assert_eq!(got, want, "affine n={n} mode={mode}");
            }
        }
        // Backward sums, parameter terms and dx, without and with γ.
        for with_g in [false, true] {
            let w = |i: usize| if with_g { f64::from(row.g[i]) } else { 1.0 };
            let xh = |i: usize| f64::from((xs[i] - m) * a + b);
            // Blocks of four vectors are summed in f32 first (as the f32 kernel):
            // within f32 rounding of the sum of magnitudes.
            let (mut s1, mut s2, mut mag) = (0.0, 0.0, 0.0);
            for (i, &dv) in ds.iter().enumerate() {
                let d = f64::from(dv) * w(i);
                s1 += d;
                s2 += d * xh(i);
                mag += d.abs() * (1.0 + xh(i).abs());
            }
            let dg: Vec<f64> = (0..n).map(|i| 0.5 + f64::from(ds[i]) * xh(i)).collect();
            let db: Vec<f64> = (0..n).map(|i| -0.5 + f64::from(ds[i])).collect();
            let dx: Vec<u16> = (0..n)
                .map(|i| {
                    let c = if with_g { 0.75 * row.g[i] } else { 0.75 };
                    F::from(ds[i] * c + ((xs[i] - m) * a + b))
                })
                .collect();
            for got in at_every_level::<_, F>(&RunBack(row.clone(), with_g)) {
                let ok = |g: f64, w: f64| (g - w).abs() <= 1e-6 * mag;
                assert!(ok(got.0 .0, s1), "s1 n={n}: {} vs {s1}", got.0 .0);
                assert!(ok(got.0 .1, s2), "s2 n={n}: {} vs {s2}", got.0 .1);
                for i in 0..n {
                    close("dg", got.1[i], dg[i], 1.0);
                    close("db", got.2[i], db[i], 1.0);
                }
                assert_eq!(got.3, dx, "dx n={n} g={with_g}");
            }
        }
    }
}

#[derive(Clone)]
struct RunCols(Vec<u16>, Vec<u16>, usize);
impl Kernel for RunCols {
    type Out = (Vec<f64>, Vec<f64>, Vec<u16>, Vec<f64>, Vec<f64>, Vec<u16>);
    fn run<S: Isa, F: Format>(self, s: S) -> Self::Out {
        let k = self.2;
        let h: Vec<f64> = (0..k).map(|j| j as f64 * 0.125).collect();
        let (mut sum, mut sq) = (vec![1.0; k], vec![2.0; k]);
        ColSums {
            x: &self.0,
            h: &h,
            sum: &mut sum,
            sq: &mut sq,
        }
        .run::<S, F>(s);
        let (m, a, b) = (params(k, 1), params(k, 2), params(k, 3));
        let mut y = vec![0u16; self.0.len()];
        ColAffine {
            x: &self.0,
            y: &mut y,
            c: (&m, &a, &b),
        }
        .run::<S, F>(s);
        let (mut sg, mut sgx) = (vec![0.0; k], vec![0.0; k]);
        ColDSums {
            x: &self.0,
            dy: &self.1,
            c: (&m, &a, &b),
            sg: &mut sg,
            sgx: &mut sgx,
        }
        .run::<S, F>(s);
        let cc = params(k, 4);
        let mut dx = vec![0u16; self.0.len()];
        ColDx {
            x: &self.0,
            dy: &self.1,
            out: &mut dx,
            cc: &cc,
            c: (&m, &a, &b),
        }
        .run::<S, F>(s);
        (sum, sq, y, sg, sgx, dx)
    }
}

fn cols_agree<F: Conv>() {
    // Rows longer than one block of columns (33, 64 at AVX2; 100, 130 at every level) run
    // in chunks of rows.
    for &k in &[1usize, 3, 8, 16, 19, 33, 64, 100, 130] {
        let rows = 37;
        let x = data::<F>(rows * k, 5, 1.0);
        let dy = data::<F>(rows * k, 6, 0.0);
        let xs: Vec<f32> = x.iter().map(|&v| F::to(v)).collect();
        let ds: Vec<f32> = dy.iter().map(|&v| F::to(v)).collect();
        let (m, a, b, cc) = (params(k, 1), params(k, 2), params(k, 3), params(k, 4));
        let (mut sum, mut sq) = (vec![1.0; k], vec![2.0; k]);
        let (mut sg, mut sgx, mut mag) = (vec![0.0; k], vec![0.0; k], vec![0.0; k]);
        let (mut y, mut dx) = (Vec::new(), Vec::new());
        for (i, (&v, &d)) in xs.iter().zip(&ds).enumerate() {
            let j = i % k;
            let e = f64::from(v) - j as f64 * 0.125;
            sum[j] += e;
            sq[j] += e * e;
            let xh = (v - m[j]) * a[j] + b[j];
            y.push(F::from(xh));
            sg[j] += f64::from(d);
            sgx[j] += f64::from(d) * f64::from(xh);
            mag[j] += f64::from(d).abs() * (1.0 + f64::from(xh).abs());
            dx.push(F::from(d * cc[j] + xh));
        }
        for got in at_every_level::<_, F>(&RunCols(x.clone(), dy.clone(), k)) {
            for j in 0..k {
                close("col sum", got.0[j], sum[j], sq[j]);
                close("col sq", got.1[j], sq[j], sq[j]);
                // Partial sums over up to 8 rows in f32 (as the f32 kernel).
                let ok = |g: f64, w: f64| (g - w).abs() <= 1e-6 * mag[j];
                assert!(ok(got.3[j], sg[j]), "col sg k={k}");
                assert!(ok(got.4[j], sgx[j]), "col sgx k={k}");
            }
            assert_eq!(got.2, y, "col affine k={k}");
            assert_eq!(got.5, dx, "col dx k={k}");
        }
    }
}

/// At the current level, the half row sums are the f32 row kernels' sums of the widened
/// values, bit for bit (what keeps a half layer equal to the f32 layer rounded).
fn same_sums_as_f32<F: Conv>(fmt: Fmt) {
    use crate::kernels::elem::RowReduce;
    for &n in LENS.iter().chain(&[200, 1000, 4099]) {
        let x = data::<F>(n, 7, 1.5);
        let dy = data::<F>(n, 8, 0.0);
        let g = params(n, 9);
        let xs: Vec<f32> = x.iter().map(|&v| F::to(v)).collect();
        let ds: Vec<f32> = dy.iter().map(|&v| F::to(v)).collect();
        let shift = f64::from(xs[0]);
        let c = (0.25, 1.75, -0.5);
        assert_eq!(
            sums(fmt, &x, shift),
            <f32 as RowReduce>::row_sums(&xs, shift)
        );
        assert_eq!(
            dsums(fmt, (&x, &dy), c, None, None),
            <f32 as RowReduce>::row_dsums(&xs, &ds, c, None),
            "n={n}"
        );
        assert_eq!(
            dsums(fmt, (&x, &dy), c, Some(&g), None),
            <f32 as RowReduce>::row_dsums(&xs, &ds, c, Some((&g, None))),
            "n={n} with γ"
        );
    }
}

#[test]
fn half_row_sums_are_the_f32_kernels_sums() {
    same_sums_as_f32::<Bf16>(Fmt::Bf16);
    same_sums_as_f32::<F16>(Fmt::F16);
}

/// At the current level, the half column backward sums are the f32 column kernel's sums
/// of the widened values, bit for bit (its f32 partial sums over 8 rows flushed into f64 on
/// the same rows), whatever the rows per chunk of the half kernel.
fn same_col_dsums_as_f32<F: Conv>(fmt: Fmt) {
    use crate::kernels::elem::RowReduce;
    for &k in &[16usize, 64, 96, 260, 1024, 1100] {
        for &rows in &[1usize, 3, 8, 13, 37, 64] {
            let x = data::<F>(rows * k, 11, 0.5);
            let dy = data::<F>(rows * k, 12, 0.0);
            let xs: Vec<f32> = x.iter().map(|&v| F::to(v)).collect();
            let ds: Vec<f32> = dy.iter().map(|&v| F::to(v)).collect();
            let (m, a, b) = (params(k, 1), params(k, 2), params(k, 3));
            let (mut sg, mut sgx) = (vec![0.5; k], vec![-0.25; k]);
            col_dsums(fmt, (&x, &dy), (&m, &a, &b), &mut sg, &mut sgx);
            let (mut wg, mut wgx) = (vec![0.5; k], vec![-0.25; k]);
            let lines = (0..rows).map(|r| r * k);
            <f32 as RowReduce>::col_dsums(&xs, &ds, lines, (&m, &a, &b), &mut wg, &mut wgx);
            assert_eq!(sg, wg, "sg k={k} rows={rows}");
            assert_eq!(sgx, wgx, "sgx k={k} rows={rows}");
        }
    }
}

#[test]
fn half_column_backward_sums_are_the_f32_kernels_sums() {
    same_col_dsums_as_f32::<Bf16>(Fmt::Bf16);
    same_col_dsums_as_f32::<F16>(Fmt::F16);
}

#[test]
fn bf16_row_kernels_match_the_reference_at_every_level() {
    rows_agree::<Bf16>();
}

#[test]
fn f16_row_kernels_match_the_reference_at_every_level() {
    rows_agree::<F16>();
}

#[test]
fn bf16_column_kernels_match_the_reference_at_every_level() {
    cols_agree::<Bf16>();
}

#[test]
fn f16_column_kernels_match_the_reference_at_every_level() {
    cols_agree::<F16>();
}

/// The token's half loads and stores at every level: widening exact, rounding to
/// nearest even as the `half` crate (ties, NaN, infinities, subnormals, overflow).
#[derive(Clone)]
struct RoundTrip(Vec<f32>);
impl Kernel for RoundTrip {
    type Out = (Vec<u16>, Vec<f32>);
    fn run<S: Isa, F: Format>(self, s: S) -> Self::Out {
        let mut h = vec![0u16; self.0.len()];
        for (c, o) in self.0.chunks(S::LANES).zip(h.chunks_mut(S::LANES)) {
            sth::<S, F>(s, o, ldf(s, c));
        }
        let mut back = vec![0f32; h.len()];
        for (c, o) in h.chunks(S::LANES).zip(back.chunks_mut(S::LANES)) {
            let v = ldh::<S, F>(s, c);
            let mut a = [0f32; 16];
            s.store(&mut a, v);
            o.copy_from_slice(&a[..o.len()]);
        }
        (h, back)
    }
}

fn round_trip<F: Conv>() {
    let mut v: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,
        -3e-39,
        65504.0,
        65520.0,
        6e-8,
        3e-8,
    ];
    // Ties and neighbours of ties in both formats.
    for base in [1.0f32, 3.0, -7.0, 1000.0] {
        let b = base.to_bits();
        for d in [
            0x7fffu32, 0x8000, 0x8001, 0x17fff, 0x18000, 0x18001, 0xfff, 0x1000, 0x1001, 0x3000,
        ] {
            v.push(f32::from_bits(b + d));
        }
    }
    for i in 0..200u32 {
        v.push(f32::from_bits(i.wrapping_mul(2654435761)));
    }
    let want: Vec<u16> = v.iter().map(|&x| F::from(x)).collect();
    let back: Vec<f32> = want.iter().map(|&h| F::to(h)).collect();
    for (h, b) in at_every_level::<_, F>(&RoundTrip(v.clone())) {
        for i in 0..v.len() {
            let (g, w) = (h[i], want[i]);
            let nan = F::to(w).is_nan();
            assert!(
                g == w || (nan && F::to(g).is_nan()),
                "{} -> {g:#06x}, want {w:#06x}",
                v[i]
            );
            assert!(
                b[i].to_bits() == back[i].to_bits() || (nan && b[i].is_nan()),
                "widen {w:#06x}"
            );
        }
    }
}

#[test]
fn bf16_loads_and_stores_round_as_the_half_crate_at_every_level() {
    round_trip::<Bf16>();
}

#[test]
fn f16_loads_and_stores_round_as_the_half_crate_at_every_level() {
    round_trip::<F16>();
}

/// The public bf16 row kernels (the AVX512_BF16 fast path where this CPU runs it, else
/// the token kernels) against the lane-by-lane reference: lengths around the fast path's
/// blocks of 32, NaN inputs, and coefficients whose outputs are f32 subnormals (which the
/// fast path hands back to the token kernels).
#[test]
fn bf16_public_row_kernels_match_the_reference() {
    let lens = [1usize, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 100, 784];
    let coefs = [
        (0.25f32, 1.75f32, -0.5f32),
        (0.0, 1e-39, 0.0),
        (2.0, 3e-39, 1e-40),
    ];
    for &n in &lens {
        let mut x = data::<Bf16>(n, 5, 1.0);
        if n > 20 {
            x[n / 2] = <Bf16 as Conv>::from(f32::NAN);
        }
        let dy = data::<Bf16>(n, 6, 0.0);
        let (g, bt) = (params(n, 7), params(n, 8));
        let xs: Vec<f32> = x.iter().map(|&v| <Bf16 as Conv>::to(v)).collect();
        let ds: Vec<f32> = dy.iter().map(|&v| <Bf16 as Conv>::to(v)).collect();
        for &(m, a, b) in &coefs {
            for mode in 0..3u8 {
                let p = match mode {
                    0 => None,
                    1 => Some((&g[..], None)),
                    _ => Some((&g[..], Some(&bt[..]))),
                };
                let mut y = vec![0u16; n];
                affine(Fmt::Bf16, &x, &mut y, (m, a, b), p);
                for i in 0..n {
                    // With γ along the row: x̂ = fma(x − m, a, b), then x̂·γ or fma(x̂, γ, β).
                    let v = match mode {
                        0 => (xs[i] - m) * a + b,
                        1 => (xs[i] - m).mul_add(a, b) * g[i],
                        _ => (xs[i] - m).mul_add(a, b).mul_add(g[i], bt[i]),
                    };
                    let w = <Bf16 as Conv>::from(v);
                    let nan = v.is_nan() && <Bf16 as Conv>::to(y[i]).is_nan();
                    assert!(nan || y[i] == w, "affine n={n} i={i} c={a:e} mode={mode}");
                }
            }
            for with_g in [false, true] {
                let c = 0.75f32;
                let gs = with_g.then_some(&g[..]);
                let mut out = vec![0u16; n];
                dx(Fmt::Bf16, (&x, &dy, &mut out), (c, m, a, b), gs);
                for i in 0..n {
                    let cg = if with_g { c * g[i] } else { c };
                    let v = ds[i] * cg + ((xs[i] - m) * a + b);
                    let w = <Bf16 as Conv>::from(v);
                    let nan = v.is_nan() && <Bf16 as Conv>::to(out[i]).is_nan();
                    assert!(nan || out[i] == w, "dx n={n} i={i} c={a:e} g={with_g}");
                }
            }
        }
    }
}

/// The public bf16 column kernels (the AVX512_BF16 fast path where this CPU runs it)
/// against the lane-by-lane reference, with subnormal outputs in some columns.
#[test]
fn bf16_public_column_kernels_match_the_reference() {
    for k in [1usize, 16, 31, 32, 33, 64, 100] {
        let rows = 3;
        let x = data::<Bf16>(rows * k, 9, 1.0);
        let dy = data::<Bf16>(rows * k, 10, 0.0);
        let xs: Vec<f32> = x.iter().map(|&v| <Bf16 as Conv>::to(v)).collect();
        let ds: Vec<f32> = dy.iter().map(|&v| <Bf16 as Conv>::to(v)).collect();
        for tiny in [false, true] {
            let m = params(k, 11);
            let mut a = params(k, 12);
            if tiny {
                a[k / 2] = 1e-39;
            }
            let mut b = params(k, 13).iter().map(|v| v - 1.0).collect::<Vec<f32>>();
            if tiny {
                b[k / 2] = 0.0;
            }
            let cc = params(k, 14);
            let mut y = vec![0u16; rows * k];
            col_affine(Fmt::Bf16, &x, &mut y, (&m, &a, &b), None);
            let mut out = vec![0u16; rows * k];
            col_dx(Fmt::Bf16, (&x, &dy, &mut out), &cc, (&m, &a, &b));
            for i in 0..rows * k {
                let j = i % k;
                let v = (xs[i] - m[j]) * a[j] + b[j];
                assert_eq!(y[i], <Bf16 as Conv>::from(v), "col affine k={k} i={i}");
                let v = ds[i] * cc[j] + v;
                assert_eq!(out[i], <Bf16 as Conv>::from(v), "col dx k={k} i={i}");
            }
        }
    }
}

/// The pipelined bf16 row pass (output of one row, sums of the next) gives the bits of
/// the two separate kernels: the same output and the same f64 sums, exactly.
#[test]
fn bf16_affine_then_sums_is_affine_and_sums() {
    for &n in &[
        1usize, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 784, 2304,
    ] {
        let x = data::<Bf16>(n, 15, 1.0);
        let next = data::<Bf16>(n, 16, 3.0);
        for c in [(0.25f32, 1.75f32, -0.5f32), (0.0, 1e-39, 0.0)] {
            let shift = f64::from(<Bf16 as Conv>::to(next[0]));
            let mut y = vec![0u16; n];
            let got = affine_then_sums(Fmt::Bf16, (&x, &mut y), c, (&next, shift), false);
            let mut want_y = vec![0u16; n];
            affine(Fmt::Bf16, &x, &mut want_y, c, None);
            let want = sums(Fmt::Bf16, &next, shift);
            assert_eq!(y, want_y, "n={n}");
            assert_eq!(got.0.to_bits(), want.0.to_bits(), "sum n={n}");
            assert_eq!(got.1.to_bits(), want.1.to_bits(), "sq n={n}");
        }
    }
}

/// The bf16 task kernel with γ (and β) along the rows (`params_rows`, two rows: the
/// second's first pass in the first's affine loop) gives the bits of `affine` with the
/// same parameters and of `row_stats`, and its output is the lane-by-lane expression
/// `x̂·γ` or `fma(x̂, γ, β)` with `x̂ = fma(x − m, a, b)`, rounded: lengths around the blocks of 32 and 64, a NaN input,
/// coefficients with f32 subnormal outputs (the rerun), and γ, β longer than the row
/// (only the first values count).
#[test]
fn bf16_params_rows_are_affine_with_params_and_row_stats() {
    let lens = [
        1usize, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 784, 1024, 2304,
    ];
    for &n in &lens {
        let mut x = data::<Bf16>(n, 19, 1.0);
        if n > 20 {
            x[n / 3] = <Bf16 as Conv>::from(f32::NAN);
        }
        let next = data::<Bf16>(n, 20, -1.5);
        let xs: Vec<f32> = x.iter().map(|&v| <Bf16 as Conv>::to(v)).collect();
        let both: Vec<u16> = x.iter().chain(&next).copied().collect();
        let (g, bt) = (params(n + 5, 21), params(n + 5, 22));
        for c in [
            (0.25f32, 1.75f32, -0.5f32),
            (0.0, 1e-39, 0.0),
            (2.0, 3e-39, 1e-40),
        ] {
            for (beta, center) in [(false, true), (true, true), (true, false)] {
                let p = (&g[..], beta.then_some(&bt[..]));
                let mut ys = vec![0u16; 2 * n];
                let mut raws = Vec::new();
                let mut stat = |_: usize, raw: (f64, f64, f64)| {
                    raws.push(raw);
                    c
                };
                if !params_rows(Fmt::Bf16, (&both, &mut ys), n, p, center, &mut stat) {
                    continue;
                }
                let what = format!("n={n} beta={beta} center={center} c={c:?}");
                let bits = |r: (f64, f64, f64)| (r.0.to_bits(), r.1.to_bits(), r.2.to_bits());
                let want = row_stats(Fmt::Bf16, &next, center);
                assert_eq!(bits(raws[1]), bits(want), "{what}");
                let mut want_y = vec![0u16; n];
                affine(Fmt::Bf16, &x, &mut want_y, c, Some(p));
                let y = &ys[..n];
                assert_eq!(y, &want_y[..], "{what}");
                let (m, a, b) = c;
                for i in 0..n {
                    let v = (xs[i] - m).mul_add(a, b);
                    let v = if beta {
                        v.mul_add(g[i], bt[i])
                    } else {
                        v * g[i]
                    };
                    let nan = v.is_nan() && <Bf16 as Conv>::to(y[i]).is_nan();
                    assert!(nan || y[i] == <Bf16 as Conv>::from(v), "{what} i={i}");
                }
            }
        }
    }
}

/// The public bf16 column sums (the AVX-512 kernel with in-lane widening where this CPU
/// runs it) are the token kernel's at the current level bit for bit, for widths below, at
/// and past whole groups of 16 columns and blocks of 64, on one row and on several chunks
/// of rows; and they are the column sums to rounding.
#[test]
fn bf16_public_column_sums_are_the_token_kernels() {
    for k in [1usize, 7, 15, 16, 17, 33, 48, 64, 65, 80, 100, 130, 200] {
        for rows in [1usize, 5, 37] {
            let x = data::<Bf16>(rows * k, 21, 0.5);
            let xs: Vec<f32> = x.iter().map(|&v| <Bf16 as Conv>::to(v)).collect();
            // Shifts: the first row (as the layers), and values off the data's grid.
            for first in [true, false] {
                let h: Vec<f64> = (0..k)
                    .map(|j| {
                        if first {
                            f64::from(xs[j])
                        } else {
                            0.3 - 0.01 * j as f64
                        }
                    })
                    .collect();
                let (mut sum, mut sq) = (vec![0.5; k], vec![0.25; k]);
                col_sums(Fmt::Bf16, &x, &h, &mut sum, &mut sq);
                let (mut ws, mut wq) = (vec![0.5; k], vec![0.25; k]);
                let token = ColSums {
                    x: &x,
                    h: &h,
                    sum: &mut ws,
                    sq: &mut wq,
                };
                go(Fmt::Bf16, token);
                let bits = |v: &[f64]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&sum), bits(&ws), "sum k={k} rows={rows} first={first}");
                assert_eq!(bits(&sq), bits(&wq), "sq k={k} rows={rows} first={first}");
                for j in 0..k {
                    let (mut s, mut q) = (0.5, 0.25);
                    for r in 0..rows {
                        let d = f64::from(xs[r * k + j]) - h[j];
                        s += d;
                        q += d * d;
                    }
                    close("col sum", sum[j], s, q);
                    close("col sq", sq[j], q, q);
                }
            }
        }
    }
}

/// The bf16 column affine pass with streaming stores gives the bits of the plain one and
/// of the reference, for every offset of the output from a 64-byte boundary (the values
/// stored before and after the streamed lines), with and without subnormal outputs.
#[test]
fn bf16_col_affine_streaming_is_col_affine() {
    for k in [32usize, 64, 96, 128] {
        let rows = 5;
        let n = rows * k;
        let x = data::<Bf16>(n, 31, 1.0);
        let xs: Vec<f32> = x.iter().map(|&v| <Bf16 as Conv>::to(v)).collect();
        for tiny in [false, true] {
            let m = params(k, 32);
            let mut a = params(k, 33);
            let mut b = params(k, 34).iter().map(|v| v - 1.0).collect::<Vec<f32>>();
            if tiny {
                a[k / 3] = 1e-39;
                b[k / 3] = 0.0;
            }
            let want: Vec<u16> = (0..n)
                .map(|i| {
                    let j = i % k;
                    <Bf16 as Conv>::from((xs[i] - m[j]) * a[j] + b[j])
                })
                .collect();
            let mut buf = vec![0u16; n + 64];
            for off in 0..33 {
                let y = &mut buf[off..off + n];
                y.fill(0);
                let rot = Streamed::new(y, (&m, &a, &b));
                assert!(rot.is_some(), "k={k}");
                col_affine(Fmt::Bf16, &x, y, (&m, &a, &b), rot.as_ref());
                assert_eq!(y, &want[..], "stream k={k} off={off} tiny={tiny}");
                y.fill(0);
                col_affine(Fmt::Bf16, &x, y, (&m, &a, &b), None);
                assert_eq!(y, &want[..], "plain k={k} off={off} tiny={tiny}");
                // A chunk of whole rows of the pass streams with the same rotation.
                let (x2, y2) = (&x[k..], &mut y[k..]);
                y2.fill(0);
                col_affine(Fmt::Bf16, x2, y2, (&m, &a, &b), rot.as_ref());
                assert_eq!(y2, &want[k..], "chunk k={k} off={off} tiny={tiny}");
            }
        }
    }
}

mod dsums_rows;
mod stats32;
