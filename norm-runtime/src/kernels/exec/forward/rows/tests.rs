//! The tiled short-row passes against the row-by-row arithmetic they replace (the row
//! kernels `row_sums`, `row_dsums`, `row_dx_portable` and the formulas of `lines::affine`,
//! row by row: the same bits), and γ's gradient against an f64 reference.

use crate::kernels::elem::RowReduce;
use crate::kernels::exec::{
    backward, finish_run, forward, Acc, BackIn, BackOut, CoefMut, ColumnSums, DxCoefMut, DxFinish,
    Estimator, Finish, FwdIn, Params, ShiftedSums, Stat, Units,
};
use crate::kernels::reduce::row_dx_portable;

/// Deterministic values in about [−2, 2) with an offset per row.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 4096) as f32 / 1024.0 - 2.0 + (i % 7) as f32 * 0.25
        })
        .collect()
}

/// Contiguous rows of `len` values; γ along the row when `along`.
fn units(count: usize, len: usize, along: bool) -> Units {
    let mut u = Units::rows(count, len);
    if along {
        u.line.ps = 1;
    }
    u
}

const EPS: f64 = 1e-5;

/// `stats::mean_m2` + `group_stat` (population variance, eps added to the variance) +
/// `kernels::coef` of one row: the `finish.one` of a layer norm.
fn finish_one(raw: ShiftedSums, n: usize, center: bool, st: &mut Stat) -> (f32, f32, f32) {
    let (mean, m2) = if center {
        let d = raw.sum / n as f64;
        let m2 = raw.sq - raw.sum * d;
        (raw.shift + d, if m2 < 0.0 { 0.0 } else { m2 })
    } else {
        (0.0, raw.sq)
    };
    let var = m2 / n as f64;
    let rstd = 1.0 / (var + EPS).sqrt();
    *st = Stat {
        mean,
        var,
        m2,
        rstd,
    };
    crate::kernels::coef(mean, rstd, 0.0)
}

#[test]
fn tiled_forward_is_the_row_by_row_arithmetic() {
    for &len in &[
        1usize, 3, 15, 16, 31, 32, 33, 64, 100, 128, 200, 256, 500, 768,
    ] {
        for &count in &[1usize, 7, 8, 9, 130, 1500] {
            for (center, gamma, beta) in [
                (true, true, true),
                (false, true, false),
                (true, false, false),
            ] {
                let u = units(count, len, gamma);
                assert!(u.row_tile(4).is_some(), "len {len}: the tiled path");
                let x = values(count * len, (len * 31 + count) as u32);
                let g = values(len, 3)
                    .iter()
                    .map(|v| 1.0 + v * 0.1)
                    .collect::<Vec<_>>();
                let bt = values(len, 5);
                let params = Params {
                    gamma: gamma.then_some(&g[..]),
                    beta: beta.then_some(&bt[..]),
                };
                let one =
                    |_: usize, raw: ShiftedSums, st: &mut Stat| finish_one(raw, len, center, st);
                let est = Estimator {
                    center,
                    eps_var: true,
                    count: len as f64,
                    denom: len as f64,
                    eps: EPS,
                };
                let many = |s0: usize, raw: ColumnSums<'_>, out: CoefMut<'_, f32>| {
                    finish_run(s0, raw, est, |_| (1.0, 0.0), out);
                };
                let finish = Finish {
                    one: &one,
                    many: &many,
                };
                let (mut stat, mut m, mut a, mut b) = (
                    vec![Stat::default(); count],
                    vec![0f32; count],
                    vec![0f32; count],
                    vec![0f32; count],
                );
                let c = CoefMut {
                    stat: &mut stat,
                    m: &mut m,
                    a: &mut a,
                    b: &mut b,
                };
                let mut y = vec![0f32; count * len];
                let t = FwdIn {
                    units: &u,
                    x: &x,
                    center,
                    params,
                    finish: &finish,
                };
                forward(t, c, &mut Acc::default(), &mut y);
                for r in 0..count {
                    let row = &x[r * len..(r + 1) * len];
                    let shift = if center { f64::from(row[0]) } else { 0.0 };
                    let (sum, sq) = f32::row_sums(row, shift);
                    let mut st = Stat::default();
                    let (mr, ar, br) =
                        finish_one(ShiftedSums { shift, sum, sq }, len, center, &mut st);
                    assert_eq!(stat[r], st, "len {len} count {count} row {r}");
                    assert_eq!((m[r], a[r], b[r]), (mr, ar, br));
                    for i in 0..len {
                        let mut v = (row[i] - mr) * ar + br;
                        if gamma {
                            v *= g[i];
                            if beta {
                                v += bt[i];
                            }
                        }
                        let got = y[r * len + i];
                        assert_eq!(
                            got.to_bits(),
                            v.to_bits(),
                            "len {len} count {count} row {r} value {i}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn tiled_backward_is_the_row_by_row_arithmetic() {
    for &len in &[
        1usize, 3, 15, 16, 31, 32, 33, 64, 100, 128, 200, 256, 500, 768,
    ] {
        for &count in &[1usize, 7, 8, 9, 130, 1500] {
            for gamma in [true, false] {
                let u = units(count, len, gamma);
                let x = values(count * len, (len * 17 + count) as u32);
                let dy = values(count * len, (len * 13 + count + 1) as u32);
                let g = values(len, 9)
                    .iter()
                    .map(|v| 1.0 + v * 0.1)
                    .collect::<Vec<_>>();
                let gs = gamma.then_some(&g[..]);
                // x̂ = (x − m)·a + b per row.
                let xm: Vec<f32> = (0..count).map(|r| x[r * len] * 0.5).collect();
                let xa: Vec<f32> = (0..count).map(|r| 0.75 + (r % 5) as f32 * 0.125).collect();
                let xb: Vec<f32> = (0..count).map(|r| (r % 3) as f32 * 0.01).collect();
                // Any finish will do: the test compares paths, not the layer's gradient.
                let one = |s: usize, sg: f64, sgx: f64| {
                    let k = 1.0 / len as f64;
                    (
                        xa[s],
                        xm[s],
                        (-(sgx * k) * f64::from(xa[s])) as f32,
                        (-(sg * k)) as f32,
                    )
                };
                let many = |s0: usize, (sg, sgx): (&[f64], &[f64]), out: DxCoefMut<'_, f32>| {
                    for (i, (&sg, &sgx)) in sg.iter().zip(sgx).enumerate() {
                        (out.c[i], out.m[i], out.a[i], out.b[i]) = one(s0 + i, sg, sgx);
                    }
                };
                let finish = DxFinish {
                    one: &one,
                    many: &many,
                };
                let np = if gamma { len } else { 0 };
                let (mut sg, mut sgx, mut dp) =
                    (vec![0.0; count], vec![0.0; count], vec![0.0; 2 * np]);
                let (mut c, mut m, mut a, mut b) = (
                    vec![0f32; count],
                    vec![0f32; count],
                    vec![0f32; count],
                    vec![0f32; count],
                );
                let o = BackOut {
                    sg: &mut sg,
                    sgx: &mut sgx,
                    dparams: &mut dp,
                    c: &mut c,
                    m: &mut m,
                    a: &mut a,
                    b: &mut b,
                    stage: &mut [],
                };
                let (mut acc, mut stage, mut dx) =
                    (Vec::new(), Vec::new(), vec![0f32; count * len]);
                let xhat = (&xm[..], &xa[..], &xb[..]);
                let t = BackIn {
                    units: &u,
                    x: &x,
                    dy: &dy,
                    xhat,
                    gamma: gs,
                };
                backward(t, &finish, o, (&mut acc, &mut stage), &mut dx);
                let (mut dg, mut db) = (vec![0f64; len], vec![0f64; len]);
                for r in 0..count {
                    let (xs, ds) = (&x[r * len..(r + 1) * len], &dy[r * len..(r + 1) * len]);
                    let cr = (xm[r], xa[r], xb[r]);
                    let sums = f32::row_dsums(xs, ds, cr, gs.map(|g| (g, None)));
                    let k = one(r, sums.0, sums.1);
                    let mut want = vec![0f32; len];
                    row_dx_portable(xs, ds, &mut want, k, gs);
                    for i in 0..len {
                        assert_eq!(
                            dx[r * len + i].to_bits(),
                            want[i].to_bits(),
                            "len {len} count {count} row {r} value {i}"
                        );
                        let xh = f64::from((xs[i] - cr.0) * cr.1 + cr.2);
                        dg[i] += f64::from(ds[i]) * xh;
                        db[i] += f64::from(ds[i]);
                    }
                }
                if gamma && count * len <= 1 << 15 {
                    // One task: γ's sums as the row-by-row path stages them (the row kernel
                    // with staging, flushed into f64 every eight rows), bit for bit.
                    let (mut sg, mut sb) = (vec![0f32; len], vec![0f32; len]);
                    let (mut fg, mut fb) = (vec![0f64; len], vec![0f64; len]);
                    for r in 0..count {
                        let (xs, ds) = (&x[r * len..(r + 1) * len], &dy[r * len..(r + 1) * len]);
                        let p = Some((&g[..], Some((&mut sg[..], &mut sb[..]))));
                        f32::row_dsums(xs, ds, (xm[r], xa[r], xb[r]), p);
                        if (r + 1) % 8 == 0 || r + 1 == count {
                            for i in 0..len {
                                fg[i] += f64::from(sg[i]);
                                fb[i] += f64::from(sb[i]);
                            }
                            sg.fill(0.0);
                            sb.fill(0.0);
                        }
                    }
                    for i in 0..len {
                        assert_eq!(
                            dp[i].to_bits(),
                            fg[i].to_bits(),
                            "len {len} count {count} dγ[{i}]"
                        );
                        assert_eq!(
                            dp[len + i].to_bits(),
                            fb[i].to_bits(),
                            "len {len} count {count} dβ[{i}]"
                        );
                    }
                }
                if gamma {
                    let scale = count as f64;
                    for i in 0..len {
                        assert!(
                            (dp[i] - dg[i]).abs() <= 1e-5 * scale,
                            "dγ[{i}]: {} vs {}",
                            dp[i],
                            dg[i]
                        );
                        assert!(
                            (dp[len + i] - db[i]).abs() <= 1e-5 * scale,
                            "dβ[{i}]: {} vs {}",
                            dp[len + i],
                            db[i]
                        );
                    }
                }
            }
        }
    }
}
