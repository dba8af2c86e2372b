//! The column kernels with the caller's buffers and the streamed column dx, against the
//! kernels as they were (fresh buffers, ordinary stores) bit for bit, and against values
//! computed here lane by lane: `col_sums_with` / `col_dsums_with` with one [`ColWork`]
//! reused across row lengths and formats (its stale contents must not leak into a call),
//! `col_dx_streamed` at every offset of the output from a 64-byte boundary, on chunks of
//! whole rows, with subnormal outputs (the ordinary-store rerun), and with a rotation of
//! another pass (refused: ordinary stores).

use half::{bf16, f16};

use super::*;

/// `n` half values of `fmt` spread over about `[offset − 3, offset + 3)`.
fn data(fmt: Fmt, n: usize, seed: u32, offset: f32) -> Vec<u16> {
    (0..n)
        .map(|i| {
            let t = (i as u32).wrapping_mul(0x9E37_79B1).wrapping_add(seed) >> 9;
            let v = offset + (t as f32 / (1u32 << 23) as f32 - 0.5) * 6.0;
            to_half(fmt, v)
        })
        .collect()
}

/// `n` coefficients in `[0.4, 1.7]`.
fn coefs(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.4 + ((i as u32 * 11 + seed) % 17) as f32 / 13.0)
        .collect()
}

fn to_half(fmt: Fmt, v: f32) -> u16 {
    match fmt {
        Fmt::Bf16 => bf16::from_f32(v).to_bits(),
        Fmt::F16 => f16::from_f32(v).to_bits(),
    }
}

fn to_f32(fmt: Fmt, v: u16) -> f32 {
    match fmt {
        Fmt::Bf16 => bf16::from_bits(v).to_f32(),
        Fmt::F16 => f16::from_bits(v).to_f32(),
    }
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|v| v.to_bits()).collect()
}

/// Row lengths below, at and around the blocks of every level, then long rows; the
/// buffers grow and shrink between them.
const KS: &[usize] = &[1, 7, 16, 17, 33, 64, 100, 130, 1024, 40, 256, 3];

#[test]
fn column_sums_with_reused_buffers_are_the_plain_kernels() {
    let mut work = ColWork::default();
    for fmt in [Fmt::Bf16, Fmt::F16] {
        for &k in KS {
            for rows in [1usize, 6, 37] {
                let x = data(fmt, rows * k, 3 + k as u32, 0.25);
                let h: Vec<f64> = (0..k).map(|j| 0.1 - 0.02 * j as f64).collect();
                let (mut s1, mut q1) = (vec![0.5; k], vec![0.75; k]);
                col_sums(fmt, &x, &h, &mut s1, &mut q1);
                let (mut s2, mut q2) = (vec![0.5; k], vec![0.75; k]);
                col_sums_with(fmt, &x, &h, (&mut s2, &mut q2), &mut work);
                let what = format!("{fmt:?} k={k} rows={rows}");
                assert_eq!(bits(&s1), bits(&s2), "sum {what}");
                assert_eq!(bits(&q1), bits(&q2), "sq {what}");
                for j in 0..k {
                    let (mut s, mut q) = (0.5, 0.75);
                    for r in 0..rows {
                        let d = f64::from(to_f32(fmt, x[r * k + j])) - h[j];
                        s += d;
                        q += d * d;
                    }
                    assert!((s2[j] - s).abs() <= 1e-12 * q, "sum {what} j={j}");
                    assert!((q2[j] - q).abs() <= 1e-12 * q, "sq {what} j={j}");
                }
            }
        }
    }
}

#[test]
fn column_backward_sums_with_reused_buffers_are_the_plain_kernels() {
    let mut work = ColWork::default();
    for fmt in [Fmt::Bf16, Fmt::F16] {
        for &k in KS {
            for rows in [1usize, 5, 9, 37] {
                let x = data(fmt, rows * k, 5 + k as u32, -0.5);
                let dy = data(fmt, rows * k, 77 + k as u32, 0.0);
                let (m, a) = (coefs(k, 1), coefs(k, 2));
                let b: Vec<f32> = coefs(k, 3).iter().map(|v| v - 1.0).collect();
                let c = (&m[..], &a[..], &b[..]);
                let (mut g1, mut t1) = (vec![0.25; k], vec![-0.5; k]);
                col_dsums(fmt, (&x, &dy), c, &mut g1, &mut t1);
                let (mut g2, mut t2) = (vec![0.25; k], vec![-0.5; k]);
                col_dsums_with(fmt, (&x, &dy), c, (&mut g2, &mut t2), &mut work);
                let what = format!("{fmt:?} k={k} rows={rows}");
                assert_eq!(bits(&g1), bits(&g2), "Σdy {what}");
                assert_eq!(bits(&t1), bits(&t2), "Σdy·x̂ {what}");
                // Independently, in f64 from the f32 x̂ (the kernel sums in f32 over a
                // few rows at a time: to that rounding).
                for j in 0..k {
                    let (mut sg, mut sgx, mut mag) = (0.25, -0.5, 1.0);
                    for r in 0..rows {
                        let xh = (to_f32(fmt, x[r * k + j]) - m[j]) * a[j] + b[j];
                        let d = f64::from(to_f32(fmt, dy[r * k + j]));
                        sg += d;
                        sgx += d * f64::from(xh);
                        mag += (d * f64::from(xh)).abs() + d.abs();
                    }
                    assert!((g2[j] - sg).abs() <= 1e-6 * mag, "Σdy {what} j={j}");
                    assert!((t2[j] - sgx).abs() <= 1e-6 * mag, "Σdy·x̂ {what} j={j}");
                }
            }
        }
    }
}

/// `dy·c + ((x − m)·a + b)` per value, rounded to `fmt` (the kernels' f32 expression).
fn dx_reference(fmt: Fmt, (x, dy): (&[u16], &[u16]), cc: &[f32], (m, a, b): Cols<'_>) -> Vec<u16> {
    let k = m.len();
    (0..x.len())
        .map(|i| {
            let j = i % k;
            let xh = (to_f32(fmt, x[i]) - m[j]) * a[j] + b[j];
            to_half(fmt, to_f32(fmt, dy[i]) * cc[j] + xh)
        })
        .collect()
}

#[test]
fn column_dx_streamed_is_column_dx() {
    let mut rot = Streamed::default();
    for fmt in [Fmt::Bf16, Fmt::F16] {
        for k in [32usize, 64, 96, 1024] {
            let rows = 5;
            let n = rows * k;
            let x = data(fmt, n, 41, 0.5);
            let dy = data(fmt, n, 42, 0.0);
            for tiny in [false, true] {
                let (m, mut a, cc) = (coefs(k, 4), coefs(k, 5), coefs(k, 6));
                let mut b: Vec<f32> = coefs(k, 7).iter().map(|v| v - 1.0).collect();
                let mut cc = cc;
                if tiny {
                    // One column's outputs are f32 subnormals.
                    a[k / 3] = 1e-39;
                    b[k / 3] = 0.0;
                    cc[k / 3] = 0.0;
                }
                let c = (&m[..], &a[..], &b[..]);
                let want = dx_reference(fmt, (&x, &dy), &cc, c);
                let mut buf = vec![0u16; n + 64];
                for off in 0..33 {
                    let what = format!("{fmt:?} k={k} off={off} tiny={tiny}");
                    let out = &mut buf[off..off + n];
                    out.fill(0);
                    col_dx(fmt, (&x, &dy, out), &cc, c);
                    assert_eq!(out, &want[..], "plain {what}");
                    out.fill(0);
                    assert!(rot.set(out, c, Some(&cc)) || cfg!(not(target_arch = "x86_64")));
                    col_dx_streamed(fmt, (&x, &dy, out), &cc, c, Some(&rot));
                    assert_eq!(out, &want[..], "streamed {what}");
                    // A chunk of whole rows of the pass streams with the pass's rotation.
                    let (x2, d2, o2) = (&x[k..], &dy[k..], &mut out[k..]);
                    o2.fill(0);
                    col_dx_streamed(fmt, (x2, d2, o2), &cc, c, Some(&rot));
                    assert_eq!(o2, &want[k..], "chunk {what}");
                    // A rotation of an affine pass (no `c`), or of another offset: the
                    // kernel does not stream with it.
                    out.fill(0);
                    rot.set(&buf[(off + 1) % 32..], c, Some(&cc));
                    let out = &mut buf[off..off + n];
                    col_dx_streamed(fmt, (&x, &dy, out), &cc, c, Some(&rot));
                    assert_eq!(out, &want[..], "other offset {what}");
                    rot.set(out, c, None);
                    out.fill(0);
                    col_dx_streamed(fmt, (&x, &dy, out), &cc, c, Some(&rot));
                    assert_eq!(out, &want[..], "affine rotation {what}");
                }
            }
        }
    }
}
