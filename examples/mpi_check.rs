//! Synchronized batch statistics across MPI ranks, checked and measured (feature `mpi`).
//!
//! ```text
//! cargo build --release --features mpi --example mpi_check
//! mpirun -np 2 target/release/examples/mpi_check
//! mpirun -np 4 --oversubscribe target/release/examples/mpi_check
//! mpirun -np 2 target/release/examples/mpi_check --bench [reps]
//! ```
//!
//! **Check** (default): every rank holds one micro-batch of a global batch (uneven sizes,
//! rank 1's micro-batch EMPTY), runs the layer with `forward_sync`/`backward_sync` over an
//! [`MpiCollective`], and compares with the plain layer on the whole concatenated batch,
//! which every rank computes locally as the reference (the data is deterministic from a
//! seed): its rows of the output and of dx, the parameter gradients summed over the ranks
//! (`MPI_Allreduce`), and the running statistics (also bit-identical on every rank). Layers:
//! BN over N,C,H,W, BN over [N, C], channels-last BN, Batch-Channel Norm (only its BN stage
//! synchronizes), and a `DynNorm`; three training steps and an eval step each. Exits with 1
//! on any mismatch.
//!
//! **Bench** (`--bench`): the cost of the exchanges for the bench suite's `bn_train` shape,
//! x[32, 64, 56, 56] f32 split over the ranks (16 per rank with 2 ranks): forward_sync +
//! backward_sync against forward + backward on the same micro-batch, the time spent inside
//! the two all-gathers, and the bytes exchanged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use normkit::mpi::collective::SystemOperation;
use normkit::mpi::traits::CommunicatorCollectives;
use normkit::ndarray::{Array4, ArrayD, ArrayViewD, Axis, IxDyn, Slice};
use normkit::prelude::*;
use normkit::{ChainGrads, Collective, MpiCollective, NormLayer};

/// BN over N,C,H,W: per channel, γ/β, running statistics.
#[norm(input = "N,C,H,W", axes = "N,H,W", affine, running_stats)]
#[derive(Clone)]
struct Bn2d;

/// BN over [N, C], cumulative momentum.
#[norm(
    input = "N,C",
    axes = "N",
    affine,
    running_stats,
    momentum = "cumulative"
)]
#[derive(Clone)]
struct Bn1d;

/// BN on channels-last data.
#[norm(input = "N,H,W,C", axes = "N,H,W", affine, running_stats)]
#[derive(Clone)]
struct BnNhwc;

/// Batch-Channel Normalization: only the `bn` stage synchronizes.
#[norm(
    input = "N,C,H,W",
    chain(
        bn(axes = "N,H,W", affine, running_stats),
        gn(axes = "C,H,W", groups = 2, affine = "G")
    )
)]
#[derive(Clone)]
struct Bcn;

/// The bench suite's `bn_train` layer (`benches/src/cases.rs`).
#[norm(
    input = "N,C,H,W",
    axes = "N,H,W",
    affine,
    running_stats,
    momentum = 0.1
)]
struct BatchNorm2d;

type Error = Box<dyn std::error::Error>;

/// The calls the check makes on every kind of layer, over dynamic-rank arrays: written once
/// for every `NormLayer` (the `#[norm]` layers and `DynNorm`).
trait Layer: NormLayer<Elem = f64> + Clone {
    fn fwd(
        &mut self,
        x: ArrayViewD<'_, f64>,
        mode: Mode,
        comm: Option<&dyn Collective>,
    ) -> Result<(ArrayD<f64>, Saved<f64>), NormError> {
        let mut y = ArrayD::zeros(x.raw_dim());
        let mut saved = Saved::new();
        self.forward_layer_into(x, None, mode, y.view_mut(), &mut saved, comm)?;
        Ok((y, saved))
    }
    fn bwd(
        &self,
        x: ArrayViewD<'_, f64>,
        dy: ArrayViewD<'_, f64>,
        saved: &Saved<f64>,
        comm: Option<&dyn Collective>,
    ) -> Result<(ArrayD<f64>, Vec<ArrayD<f64>>), NormError> {
        let dx = ArrayD::zeros(x.raw_dim());
        let ChainGrads { dx, stages } = self.backward_layer_into(x, dy, saved, dx, comm)?;
        let grads = stages.into_iter().flat_map(|g| [g.dgamma, g.dbeta]);
        Ok((dx, grads.flatten().collect()))
    }
    fn state(&self) -> Vec<ArrayD<f64>> {
        let mut out = Vec::new();
        for st in self.tensors() {
            if let (Some(m), Some(v)) = (st.running_mean, st.running_var) {
                let n = st.num_batches_tracked.unwrap_or(0);
                out.extend([m.to_owned(), v.to_owned(), count(n)]);
            }
        }
        out
    }
}

impl<L: NormLayer<Elem = f64> + Clone> Layer for L {}

fn count(n: u64) -> ArrayD<f64> {
    ArrayD::from_elem(IxDyn(&[]), n as f64)
}

/// SplitMix64 → U(−1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn data(shape: &[usize], seed: u64, offset: f64) -> ArrayD<f64> {
    let mut rng = Rng(seed);
    let mut a = ArrayD::zeros(IxDyn(shape));
    for (i, v) in a.iter_mut().enumerate() {
        *v = offset + (i % 5) as f64 * 0.3 + 1.5 * rng.next();
    }
    a
}

fn rows(a: &ArrayD<f64>, start: usize, len: usize) -> ArrayD<f64> {
    a.slice_axis(Axis(0), Slice::from(start..start + len))
        .to_owned()
}

/// Counts the comparisons; prints the failing ones.
struct Tally {
    rank: usize,
    passed: usize,
    failed: usize,
}

impl Tally {
    fn close(&mut self, a: &ArrayD<f64>, b: &ArrayD<f64>, what: &str) {
        let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let worst = if a.shape() == b.shape() {
            a.iter()
                .zip(b)
                .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        } else {
            f64::INFINITY
        };
        if worst <= 1e-12 * scale {
            self.passed += 1;
        } else {
            self.failed += 1;
            eprintln!(
                "rank {}: MISMATCH {what}: max |Δ| = {worst:e} (shapes {:?} vs {:?})",
                self.rank,
                a.shape(),
                b.shape()
            );
        }
    }
}

/// The micro-batch size of `rank`: uneven, and with `empty` rank 1's is empty (when there
/// are several ranks).
fn micro_batch(rank: usize, size: usize, empty: bool) -> usize {
    if empty && rank == 1 && size > 1 {
        0
    } else {
        [3, 2, 1, 4][rank % 4]
    }
}

fn check<L: Layer>(
    name: &str,
    empty: bool,
    layer: &L,
    rest: &[usize],
    world: &normkit::mpi::topology::SimpleCommunicator,
    comm: &MpiCollective,
    tally: &mut Tally,
) -> Result<(), Error> {
    let (rank, size) = (comm.rank(), comm.size());
    let sizes: Vec<usize> = (0..size).map(|r| micro_batch(r, size, empty)).collect();
    let name = &format!("{name} {sizes:?}");
    let start: usize = sizes[..rank].iter().sum();
    let len = sizes[rank];
    let total: usize = sizes.iter().sum();
    let mut shape = vec![total];
    shape.extend_from_slice(rest);

    let mut reference = layer.clone();
    let mut local = layer.clone();
    let steps = 3;
    for s in 0..=steps {
        let mode = if s < steps { Mode::Train } else { Mode::Eval };
        let seed = 1000 * s as u64 + 17;
        let (x, dy) = (
            data(&shape, seed, 3.0 + s as f64),
            data(&shape, seed ^ 0xABCD, 0.0),
        );
        let (y_ref, saved) = reference.fwd(x.view(), mode, None)?;
        let (dx_ref, g_ref) = reference.bwd(x.view(), dy.view(), &saved, None)?;

        let (xl, dyl) = (rows(&x, start, len), rows(&dy, start, len));
        let (y, saved) = local.fwd(xl.view(), mode, Some(comm))?;
        let (dx, g) = local.bwd(xl.view(), dyl.view(), &saved, Some(comm))?;
        let what = format!("{name}, step {s}");
        tally.close(&y, &rows(&y_ref, start, len), &format!("{what}: y"));
        tally.close(&dx, &rows(&dx_ref, start, len), &format!("{what}: dx"));
        for (p, (gl, gr)) in g.iter().zip(&g_ref).enumerate() {
            // Data parallelism: the parameter gradients are summed over the ranks.
            let local_sum = gl.as_standard_layout().into_owned();
            let mut sum = ArrayD::zeros(gl.raw_dim());
            world.all_reduce_into(
                local_sum.as_slice().expect("standard layout"),
                sum.as_slice_mut().expect("standard layout"),
                SystemOperation::sum(),
            );
            tally.close(&sum, gr, &format!("{what}: summed parameter gradient {p}"));
        }
    }
    let state = local.state();
    for (i, (a, b)) in state.iter().zip(&reference.state()).enumerate() {
        tally.close(a, b, &format!("{name}: running statistic {i}"));
    }
    // Every rank holds bit-identical running statistics.
    let mine: Vec<f64> = state.iter().flat_map(|a| a.iter().copied()).collect();
    let mut all = Vec::new();
    comm.all_gather(&mine, &mut all)?;
    if all.chunks(mine.len().max(1)).all(|c| c == &mine[..]) {
        tally.passed += 1;
    } else {
        tally.failed += 1;
        eprintln!("rank {rank}: {name}: running statistics differ between ranks");
    }
    Ok(())
}

fn run_check(
    world: &normkit::mpi::topology::SimpleCommunicator,
    comm: &MpiCollective,
) -> Result<bool, Error> {
    let (rank, size) = (comm.rank(), comm.size());
    let mut tally = Tally {
        rank,
        passed: 0,
        failed: 0,
    };
    // The collective itself: rank order.
    let mut out = Vec::new();
    comm.all_gather(&[rank as f64, -(rank as f64)], &mut out)?;
    let expected: Vec<f64> = (0..size).flat_map(|r| [r as f64, -(r as f64)]).collect();
    tally.close(
        &ArrayD::from_shape_vec(IxDyn(&[out.len()]), out)?,
        &ArrayD::from_shape_vec(IxDyn(&[expected.len()]), expected)?,
        "all_gather rank order",
    );

    for empty in [false, true] {
        let t = &mut tally;
        check(
            "BN N,C,H,W",
            empty,
            &Bn2d::<f64>::new(3),
            &[3, 4, 5],
            world,
            comm,
            t,
        )?;
        check(
            "BN [N, C]",
            empty,
            &Bn1d::<f64>::new(6),
            &[6],
            world,
            comm,
            t,
        )?;
        check(
            "BN channels-last",
            empty,
            &BnNhwc::<f64>::new(4),
            &[3, 2, 4],
            world,
            comm,
            t,
        )?;
        let mut bcn = Bcn::<f64>::new(4);
        bcn.gn.gamma = normkit::ndarray::array![1.5, -0.5];
        check("BCN chain", empty, &bcn, &[4, 3, 3], world, comm, t)?;
        let spec = NormSpec::parse(r#"input = "N,C,L", axes = "N,L", affine, running_stats"#)?;
        let dynamic = DynNorm::<f64>::new(&spec, &[("C", 5)])?;
        check("DynNorm N,C,L", empty, &dynamic, &[5, 7], world, comm, t)?;
    }

    let sizes: Vec<usize> = (0..size).map(|r| micro_batch(r, size, true)).collect();
    let uneven: Vec<usize> = (0..size).map(|r| micro_batch(r, size, false)).collect();
    println!(
        "rank {rank}/{size}: micro-batches {uneven:?} and {sizes:?}: {} passed, {} failed",
        tally.passed, tally.failed
    );
    let counts = [tally.passed as u64, tally.failed as u64];
    let mut totals = [0u64; 2];
    world.all_reduce_into(&counts[..], &mut totals[..], SystemOperation::sum());
    if rank == 0 {
        println!(
            "mpi_check over {size} ranks: {} passed, {} failed",
            totals[0], totals[1]
        );
    }
    Ok(totals[1] == 0)
}

/// A [`Collective`] that times the exchanges of another.
struct Timed<'a> {
    inner: &'a dyn Collective,
    spent: Mutex<(Duration, usize, usize)>,
}

impl Collective for Timed<'_> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_gather(&self, local: &[f64], out: &mut Vec<f64>) -> Result<(), String> {
        let t = Instant::now();
        let r = self.inner.all_gather(local, out);
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        spent.0 += t.elapsed();
        spent.1 += 1;
        spent.2 += 8 * out.len();
        r
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A stand-in group of `size` members that all hold this member's data: the synchronized
/// code path without any communication (to separate the two).
struct Mirror {
    size: usize,
}

impl Collective for Mirror {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_gather(&self, local: &[f64], out: &mut Vec<f64>) -> Result<(), String> {
        out.clear();
        for _ in 0..self.size {
            out.extend_from_slice(local);
        }
        Ok(())
    }
}

fn run_bench(
    world: &normkit::mpi::topology::SimpleCommunicator,
    comm: &MpiCollective,
    reps: usize,
) -> Result<(), Error> {
    let (rank, size) = (comm.rank(), comm.size());
    let (global, c, h, w) = (32usize, 64usize, 56usize, 56usize);
    let n = global / size;
    let mut rng = Rng(7 + rank as u64);
    let x = Array4::from_shape_simple_fn((n, c, h, w), || rng.next() as f32);
    let dy = Array4::from_shape_simple_fn((n, c, h, w), || rng.next() as f32);
    let mut bn = BatchNorm2d::<f32>::new(c);
    let timed = Timed {
        inner: comm,
        spent: Mutex::new((Duration::ZERO, 0, 0)),
    };
    let mirror = Mirror { size: size.max(2) };
    // Per step: plain, sync path without communication, synchronized, inside the gathers.
    let mut times: [Vec<f64>; 4] = Default::default();
    // One step: forward + backward, everything dropped before the clock stops (so that
    // every variant sees the same allocator state).
    let step = |bn: &mut BatchNorm2d<f32>, comm: Option<&dyn Collective>| {
        world.barrier();
        let t = Instant::now();
        match comm {
            None => {
                let (y, saved) = bn.forward(x.view(), Mode::Train)?;
                let g = bn.backward(x.view(), dy.view(), &saved)?;
                drop((y, g));
            }
            Some(c) => {
                let (y, saved) = bn.forward_sync(x.view(), Mode::Train, c)?;
                let g = bn.backward_sync(x.view(), dy.view(), &saved, c)?;
                drop((y, g));
            }
        }
        Ok::<f64, NormError>(t.elapsed().as_secs_f64())
    };
    for i in 0..reps + 2 {
        let t_plain = step(&mut bn, None)?;
        let t_mirror = step(&mut bn, Some(&mirror))?;
        *timed.spent.lock().unwrap_or_else(|e| e.into_inner()) = (Duration::ZERO, 0, 0);
        let t_sync = step(&mut bn, Some(&timed))?;
        let t_exchange = timed
            .spent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .as_secs_f64();
        if i >= 2 {
            for (v, t) in times
                .iter_mut()
                .zip([t_plain, t_mirror, t_sync, t_exchange])
            {
                v.push(t);
            }
        }
    }
    let (calls, bytes) = {
        let s = timed.spent.lock().unwrap_or_else(|e| e.into_inner());
        (s.1, s.2)
    };
    // The bare collectives (latency), many times.
    let mut bare = Vec::new();
    let mut out = Vec::new();
    for _ in 0..200 {
        world.barrier();
        let t = Instant::now();
        comm.all_gather(&vec![1.0; 3 * c], &mut out)?;
        comm.all_gather(&vec![1.0; 2 * c], &mut out)?;
        bare.push(t.elapsed().as_secs_f64());
    }
    let mut mine: Vec<f64> = times.iter_mut().map(|v| median(v)).collect();
    mine.push(median(&mut bare));
    let mut all = Vec::new();
    comm.all_gather(&mine, &mut all)?;
    if rank == 0 {
        println!(
            "bn_train x[{global}, {c}, {h}, {w}] f32 over {size} ranks ({n} per rank), \
             median of {reps} steps, forward + backward per step (ms):"
        );
        println!(
            "{:>4} {:>10} {:>18} {:>12} {:>16} {:>18}",
            "rank",
            "plain",
            "sync path, no comm",
            "synchronized",
            "inside all_gather",
            "bare 2 gathers µs"
        );
        for (r, m) in all.chunks(5).enumerate() {
            println!(
                "{r:>4} {:>10.2} {:>18.2} {:>12.2} {:>16.3} {:>18.1}",
                1e3 * m[0],
                1e3 * m[1],
                1e3 * m[2],
                1e3 * m[3],
                1e6 * m[4]
            );
        }
        println!(
            "exchanged per step and rank: {calls} all-gathers, {bytes} bytes received \
             (forward 8·3·C·size = {}, backward 8·2·C·size = {})",
            8 * 3 * c * size,
            8 * 2 * c * size
        );
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let universe = normkit::mpi::initialize().ok_or("MPI was already initialized")?;
    let world = universe.world();
    let comm = MpiCollective::new(universe.world());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = if args.first().map(String::as_str) == Some("--bench") {
        let reps = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
        run_bench(&world, &comm, reps)?;
        true
    } else {
        run_check(&world, &comm)?
    };
    drop(comm);
    drop(universe);
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
