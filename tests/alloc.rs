//! The `_into` methods allocate nothing once warmed up: a counting global allocator
//! watches the calls. The binary has its own `main` (`harness = false` in Cargo.toml): the
//! allocator counts every thread, and libtest's main thread allocates while a test runs,
//! which made the count flaky.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use normkit::ndarray::{Array2, Array4, ArrayD, IxDyn};
use normkit::prelude::*;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` after two warm-up calls.
fn allocations(mut f: impl FnMut()) -> usize {
    f();
    f();
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..5 {
        f();
    }
    ALLOCS.load(Ordering::Relaxed) - before
}

/// Asserts that a layer's `_into` calls allocate nothing after warm-up:
/// `forward_train_into`, `forward_eval_into`, then `backward_into` (after one more train
/// forward, whose `Saved` it reads). `$layer`, `$saved` and `$grads` are warmed-up places.
macro_rules! assert_into_calls_free {
    ($what:literal, $layer:ident, $x:expr, $y:expr, $dy:expr, $saved:ident, $grads:ident) => {{
        assert_eq!(
            allocations(|| $layer
                .forward_train_into($x.view(), $y.view_mut(), &mut $saved)
                .expect("fwd")),
            0,
            concat!($what, " forward_train_into")
        );
        assert_eq!(
            allocations(|| $layer
                .forward_eval_into($x.view(), $y.view_mut())
                .expect("eval")),
            0,
            concat!($what, " forward_eval_into")
        );
        $layer
            .forward_train_into($x.view(), $y.view_mut(), &mut $saved)
            .expect("fwd");
        assert_eq!(
            allocations(|| $layer
                .backward_into($x.view(), $dy.view(), &$saved, &mut $grads)
                .expect("bwd")),
            0,
            concat!($what, " backward_into")
        );
    }};
}

#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
struct Bn;

#[norm(input = "N,D", axes = "D", affine = "D")]
struct Ln;

#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 4, affine)
    )
)]
struct Bcn;

fn main() {
    // Start the global thread pool, every worker running a job, before anything is counted:
    // its threads allocate as they start, concurrently with whatever runs then.
    rayon::broadcast(|_| ());
    into_methods_do_not_allocate();
    // In a pool (as the benchmarks call): a parallel pass started from outside any pool
    // goes through rayon's injector queue, which allocates a block every 63 jobs.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    pool.broadcast(|_| ());
    pool.install(bf16_batchnorm1d_into_does_not_allocate);
    pool.install(bf16_lines_into_do_not_allocate);
    println!("alloc: the _into methods allocate nothing after warm-up");
}

#[norm(input = "N,C", axes = "N", affine, running_stats)]
struct Bn1d;

/// A bf16 BatchNorm1d (the fused half-precision column path): forward in train and eval
/// mode and backward, the per-task partial sums in reused per-thread buffers and the
/// statistics in the caller's `Saved`. Several tasks of rows, columns not a multiple of a
/// vector.
fn bf16_batchnorm1d_into_does_not_allocate() {
    use normkit::bf16;
    let (n, c) = (1024, 200);
    let x = Array2::<bf16>::from_shape_fn((n, c), |(i, j)| {
        bf16::from_f32(((i * 5 + j * 3) % 17) as f32 * 0.125 - 1.0)
    });
    let dy = Array2::<bf16>::from_shape_fn((n, c), |(i, j)| {
        bf16::from_f32(((i * 3 + j) % 11) as f32 * 0.25 - 1.25)
    });
    let mut y = x.clone();
    let mut bn = Bn1d::<bf16>::new(c);
    let mut saved = Saved::new();
    bn.forward_train_into(x.view(), y.view_mut(), &mut saved)
        .expect("fwd");
    let mut grads = bn.backward(x.view(), dy.view(), &saved).expect("bwd");
    // The parameter gradients are real: dβ is the column sums of dy.
    let db = grads.dbeta.as_ref().expect("dβ");
    for j in [0, 7, c - 1] {
        let want: f32 = (0..n).map(|i| dy[[i, j]].to_f32()).sum();
        let got = db[[j]].to_f32();
        assert!(
            (got - want).abs() <= want.abs() / 64.0 + 1e-3,
            "dβ[{j}] {got} vs {want}"
        );
    }
    assert_into_calls_free!("bf16 bn1d", bn, x, y, dy, saved, grads);
    // dx of batch statistics sums to zero down each column (to bf16 rounding).
    for j in [0, 99, c - 1] {
        let col = grads.dx.column(j);
        let (sum, mag) = col.iter().fold((0.0f32, 0.0f32), |(s, m), v| {
            (s + v.to_f32(), m + v.to_f32().abs())
        });
        assert!(
            mag > 1.0 && sum.abs() <= mag / 64.0,
            "Σdx[{j}] = {sum} of {mag}"
        );
    }
}

#[norm(input = "N,C,H,W", axes = "H,W", affine)]
struct In;

/// bf16 NCHW BatchNorm (the fused half-precision path over lines of `A > 1` layouts: the
/// tasks' partial sums merged in task order) and InstanceNorm (its rows): forward in train
/// and eval mode and backward, every buffer reused per thread, the statistics in the
/// caller's `Saved`. Two tasks of batch rows; dβ checked against the sums of dy.
fn bf16_lines_into_do_not_allocate() {
    use normkit::bf16;
    let (n, c, h, w) = (16, 8, 32, 32);
    let x = Array4::<bf16>::from_shape_fn((n, c, h, w), |(i, j, k, l)| {
        bf16::from_f32(((i * 5 + j * 3 + k * 7 + l) % 17) as f32 * 0.125 - 1.0)
    });
    let dy = Array4::<bf16>::from_shape_fn((n, c, h, w), |(i, j, k, l)| {
        bf16::from_f32(((i * 3 + j + k + l * 5) % 11) as f32 * 0.25 - 1.25)
    });
    let mut y = x.clone();
    let mut bn = Bn::<bf16>::new(c);
    let mut saved = Saved::new();
    bn.forward_train_into(x.view(), y.view_mut(), &mut saved)
        .expect("fwd");
    let mut grads = bn.backward(x.view(), dy.view(), &saved).expect("bwd");
    let db = grads.dbeta.as_ref().expect("dβ");
    for j in [0, c - 1] {
        let want: f32 = dy
            .index_axis(normkit::ndarray::Axis(1), j)
            .iter()
            .map(|v| v.to_f32())
            .sum();
        let got = db[[j]].to_f32();
        assert!(
            (got - want).abs() <= want.abs() / 64.0 + 1e-2,
            "dβ[{j}] {got} vs {want}"
        );
    }
    assert_into_calls_free!("bf16 bn nchw", bn, x, y, dy, saved, grads);

    let mut inorm = In::<bf16>::new(c);
    let mut si = Saved::new();
    inorm
        .forward_train_into(x.view(), y.view_mut(), &mut si)
        .expect("fwd");
    let mut gi = inorm.backward(x.view(), dy.view(), &si).expect("bwd");
    assert_into_calls_free!("bf16 instance norm", inorm, x, y, dy, si, gi);
}

fn into_methods_do_not_allocate() {
    // The counter counts: the allocating API does allocate.
    let probe = Array2::<f32>::ones((4, 8));
    let mut ln8 = Ln::<f32>::new(8);
    assert!(allocations(|| drop(ln8.forward_train(probe.view()).expect("fwd"))) >= 5);

    // Large enough to run several parallel tasks, so the thread pool is exercised too.
    let x = Array4::<f32>::from_shape_fn((4, 8, 32, 32), |(n, c, h, w)| {
        (n + 3 * c + h * w % 7) as f32
    });
    let mut y = x.clone();
    let mut saved = Saved::new();

    let mut bn = Bn::<f32>::new(8);
    let mut grads = bn
        .forward_train(x.view())
        .and_then(|(_, s)| bn.backward(x.view(), x.view(), &s))
        .expect("warm-up");
    assert_into_calls_free!("bn", bn, x, y, x, saved, grads);

    let mut bcn = Bcn::<f32>::new(8);
    let mut cs = Saved::new();
    bcn.forward_train_into(x.view(), y.view_mut(), &mut cs)
        .expect("fwd");
    let mut cg = bcn.backward(x.view(), x.view(), &cs).expect("bwd");
    assert_into_calls_free!("bcn", bcn, x, y, x, cs, cg);

    let x2 = Array2::<f64>::from_shape_fn((64, 1000), |(i, j)| ((i * 7 + j) % 13) as f64);
    let mut y2 = x2.clone();
    let mut ln = Ln::<f64>::new(1000);
    let mut s2 = Saved::new();
    ln.forward_train_into(x2.view(), y2.view_mut(), &mut s2)
        .expect("fwd");
    let mut g2 = ln.backward(x2.view(), x2.view(), &s2).expect("bwd");
    assert_into_calls_free!("ln f64", ln, x2, y2, x2, s2, g2);

    // A bf16 layer norm's backward (the fused half-precision row path): its per-task
    // parameter-gradient sums live in reused per-thread buffers. Several tasks of rows.
    let xh = Array2::<normkit::bf16>::from_shape_fn((256, 1024), |(i, j)| {
        normkit::bf16::from_f32(((i * 7 + j) % 13) as f32 * 0.25 - 1.5)
    });
    let mut yh = xh.clone();
    let mut lnh = Ln::<normkit::bf16>::new(1024);
    let mut sh = Saved::new();
    lnh.forward_train_into(xh.view(), yh.view_mut(), &mut sh)
        .expect("fwd");
    let mut gh = lnh.backward(xh.view(), yh.view(), &sh).expect("bwd");
    // Its forward too: γ, β widened, the groups' offsets and statistics in reused buffers
    // (the statistics in the `Saved`'s own when it keeps them).
    let dyh = yh.clone();
    assert_into_calls_free!("bf16 ln", lnh, xh, yh, dyh, sh, gh);

    let spec =
        NormSpec::parse(r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#).expect("spec");
    let mut dynl = DynNorm::<f32>::new(&spec, &[("C", 8)]).expect("layer");
    let xd = x.clone().into_dyn();
    let mut yd = ArrayD::<f32>::zeros(IxDyn(&[4, 8, 32, 32]));
    let mut sd = Saved::new();
    dynl.forward_train_into(xd.view(), yd.view_mut(), &mut sd)
        .expect("fwd");
    let mut gd = dynl.backward(xd.view(), xd.view(), &sd).expect("bwd");
    assert_into_calls_free!("DynNorm", dynl, xd, yd, xd, sd, gd);
}
