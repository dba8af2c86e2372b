//! The row backward kernels of the half row path against the plain ones, bit for bit: the
//! row-blocked sums (`DSumsRows`) against `R` calls of the row kernel (`DSums`) at every
//! level in both formats, and the streamed dx against `dx`.

use super::*;

/// `R` rows of `n` values with their own coefficients, γ, and the accumulators' start.
#[derive(Clone)]
struct Block<const R: usize> {
    x: Vec<Vec<u16>>,
    dy: Vec<Vec<u16>>,
    c: [(f32, f32, f32); R],
    g: Vec<f32>,
    acc: (Vec<f64>, Vec<f64>),
    /// Whether the kernel gets a `next` block to prefetch (it must not change a bit).
    ahead: bool,
}

type Sums<const R: usize> = ([(f64, f64); R], Vec<f64>, Vec<f64>);

/// The blocked kernel.
#[derive(Clone)]
struct Blocked<const R: usize>(Block<R>);
impl<const R: usize> Kernel for Blocked<R> {
    type Out = Sums<R>;
    fn run<S: Isa, F: Format>(self, s: S) -> Sums<R> {
        let b = self.0;
        let (mut dg, mut db) = b.acc.clone();
        let x: [&[u16]; R] = std::array::from_fn(|r| &b.x[r][..]);
        let dy: [&[u16]; R] = std::array::from_fn(|r| &b.dy[r][..]);
        let sums = DSumsRows {
            x,
            dy,
            c: b.c,
            g: &b.g,
            acc: (&mut dg, &mut db),
            next: b.ahead.then_some((&b.x[0][..], &b.dy[0][..])),
        }
        .run::<S, F>(s);
        (sums, dg, db)
    }
}

/// `R` calls of the row kernel, one row after the other.
#[derive(Clone)]
struct OneByOne<const R: usize>(Block<R>);
impl<const R: usize> Kernel for OneByOne<R> {
    type Out = Sums<R>;
    fn run<S: Isa, F: Format>(self, s: S) -> Sums<R> {
        let b = self.0;
        let (mut dg, mut db) = b.acc.clone();
        let sums = std::array::from_fn(|r| {
            DSums {
                x: &b.x[r],
                dy: &b.dy[r],
                c: b.c[r],
                g: Some(&b.g),
                acc: Some((&mut dg, &mut db)),
            }
            .run::<S, F>(s)
        });
        (sums, dg, db)
    }
}

fn bits<const R: usize>((sums, dg, db): &Sums<R>) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let s = sums.iter().flat_map(|&(a, b)| [a.to_bits(), b.to_bits()]);
    let f = |v: &Vec<f64>| v.iter().map(|v| v.to_bits()).collect();
    (s.collect(), f(dg), f(db))
}

fn block<F: Conv, const R: usize>(n: usize, ahead: bool) -> Block<R> {
    let seed = |r: usize| 40 + 2 * r as u32;
    Block {
        x: (0..R).map(|r| data::<F>(n, seed(r), 1.5)).collect(),
        dy: (0..R).map(|r| data::<F>(n, seed(r) + 1, 0.0)).collect(),
        c: std::array::from_fn(|r| (0.25 + r as f32 * 0.125, 1.75 - r as f32 * 0.25, -0.5)),
        g: params(n, 11),
        acc: (
            (0..n).map(|i| i as f64 * 0.375 - 3.0).collect(),
            (0..n).map(|i| 1.0 / (i as f64 + 3.0)).collect(),
        ),
        ahead,
    }
}

fn blocked_agree<F: Conv, const R: usize>() {
    for &n in LENS.iter().chain(&[200, 1000, 1024, 4099]) {
        for ahead in [false, true] {
            let b = block::<F, R>(n, ahead);
            let got = at_every_level::<_, F>(&Blocked(b.clone()));
            let want = at_every_level::<_, F>(&OneByOne(b.clone()));
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(bits(g), bits(w), "n={n} R={R}");
            }
            // And the row kernel's sums are the f32 kernel's (`same_sums_as_f32`): here,
            // the first row's Σγ·dy against a plain f64 sum, to rounding.
            let xs: Vec<f32> = b.x[0].iter().map(|&v| F::to(v)).collect();
            let ds: Vec<f32> = b.dy[0].iter().map(|&v| F::to(v)).collect();
            let (m, a, bb) = b.c[0];
            let (mut s1, mut s2) = (0.0, 0.0);
            for i in 0..n {
                let xh = (xs[i] - m) * a + bb;
                let w = f64::from(ds[i]) * f64::from(b.g[i]);
                s1 += w;
                s2 += w * f64::from(xh);
            }
            let scale = ds.iter().map(|&d| f64::from(d).abs()).sum::<f64>() * 8.0;
            for (g, _, _) in &got {
                assert!(
                    (g[0].0 - s1).abs() <= 1e-5 * scale.max(1.0),
                    "n={n}: {} vs {s1}",
                    g[0].0
                );
                assert!(
                    (g[0].1 - s2).abs() <= 1e-5 * scale.max(1.0),
                    "n={n}: {} vs {s2}",
                    g[0].1
                );
            }
            // The accumulators moved: every row's terms landed.
            let (_, dg, db) = &got[0];
            let moved = dg.iter().zip(&b.acc.0).filter(|(a, b)| a != b).count();
            assert!(moved * 2 >= n, "n={n}: {moved} of dγ changed");
            assert!(db.iter().zip(&b.acc.1).any(|(a, b)| a != b));
        }
    }
}

#[test]
fn blocked_backward_sums_are_the_row_kernels_sums() {
    blocked_agree::<Bf16, 4>();
    blocked_agree::<F16, 4>();
    blocked_agree::<Bf16, 2>();
    blocked_agree::<F16, 1>();
}

/// The public entry point at the current level: the same bits as `dsums` row by row.
#[test]
fn dsums_rows_is_dsums_row_by_row() {
    let b = block::<Bf16, 4>(1000, true);
    let x: [&[u16]; 4] = std::array::from_fn(|r| &b.x[r][..]);
    let dy: [&[u16]; 4] = std::array::from_fn(|r| &b.dy[r][..]);
    let (mut dg, mut db) = b.acc.clone();
    let got = dsums_rows(Fmt::Bf16, (x, dy), b.c, &b.g, (&mut dg, &mut db), None);
    let (mut wg, mut wb) = b.acc.clone();
    for r in 0..4 {
        let want = dsums(
            Fmt::Bf16,
            (x[r], dy[r]),
            b.c[r],
            Some(&b.g),
            Some((&mut wg, &mut wb)),
        );
        assert_eq!(got[r].0.to_bits(), want.0.to_bits(), "row {r}");
        assert_eq!(got[r].1.to_bits(), want.1.to_bits(), "row {r}");
    }
    assert_eq!(dg, wg);
    assert_eq!(db, wb);
}

/// `dx_streamed` (non-temporal stores where the kernel has them) writes `dx`'s bits at
/// every alignment of the output, with and without γ, and where outputs are f32
/// subnormals (the rerun with ordinary stores).
#[test]
fn streamed_dx_is_dx() {
    for &n in LENS.iter().chain(&[200, 1000, 1024, 4099]) {
        let x = data::<Bf16>(n, 5, 1.5);
        let dy = data::<Bf16>(n, 6, 0.0);
        let g = params(n, 7);
        let tiny = (0.0, 0.0, 1e-39, 0.0);
        for k in [(0.75, 0.25, 1.75, -0.5), tiny] {
            for gamma in [None, Some(&g[..])] {
                let mut want = vec![0u16; n];
                dx(Fmt::Bf16, (&x, &dy, &mut want), k, gamma);
                for off in [0, 1, 5, 31, 32] {
                    let mut buf = vec![0xFFFFu16; n + 40];
                    dx_streamed(Fmt::Bf16, (&x, &dy, &mut buf[off..off + n]), k, gamma);
                    stream_fence();
                    assert_eq!(&buf[off..off + n], &want[..], "n={n} off={off}");
                    assert!(buf[..off]
                        .iter()
                        .chain(&buf[off + n..])
                        .all(|&v| v == 0xFFFF));
                }
                if k == tiny && n >= 8 {
                    // The subnormal outputs are there (not flushed to zero).
                    assert!(
                        want.iter().any(|&v| v & 0x7FFF != 0 && v & 0x7F80 == 0),
                        "n={n}"
                    );
                }
            }
        }
    }
}
