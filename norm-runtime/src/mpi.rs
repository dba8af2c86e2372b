//! The MPI [`Collective`] (feature `mpi`): members are MPI ranks, on one machine or on a
//! cluster, through the `mpi` crate (rsmpi) and the system's MPI library (Open MPI, MPICH).
//!
//! ```no_run
//! use mpi::traits::Communicator;
//! use ndarray::ArrayD;
//! use norm_runtime::{Collective, DynNorm, Mode, MpiCollective, NormSpec};
//!
//! let universe = mpi::initialize().expect("MPI initializes once");
//! let comm = MpiCollective::new(universe.world());
//! let spec = NormSpec::parse(r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#)?;
//! let mut bn = DynNorm::<f32>::new(&spec, &[("C", 16)])?;
//! // This rank's micro-batch (sizes may differ between ranks, and may be 0).
//! let x = ArrayD::<f32>::ones(vec![2, 16, 8, 8]);
//! let (y, saved) = bn.forward_sync(x.view(), Mode::Train, &comm)?;
//! let grads = bn.backward_sync(x.view(), y.view(), &saved, &comm)?;
//! // grads.stages[0].dgamma/dbeta are this rank's share: all-reduce (sum) them like the
//! // other parameter gradients.
//! drop(comm); // before `universe`, which finalizes MPI
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// rsmpi's communicator holds a raw MPI handle, which is neither `Send` nor `Sync`; neither
// is an `MpiCollective`, and `Collective` does not ask for either (no `unsafe` here).

use std::fmt;
use std::sync::Mutex;
use std::thread::ThreadId;

use ::mpi::environment::{self, Threading};
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::{Communicator, CommunicatorCollectives};

use crate::collective::Collective;

/// A [`Collective`] over an MPI communicator: the members are the communicator's ranks.
///
/// `all_gather` is one `MPI_Allgather` of `f64` values (the lengths are equal on every rank
/// by construction of the layers' exchanges). Every rank must call the layers' `*_sync`
/// methods in the same order — also a rank whose micro-batch is empty — as for any MPI
/// collective operation.
///
/// Cost, per synchronized stage (a BN layer) and training step: forward, one all-gather of
/// 3 values per statistics group (count, mean, M2), so each rank receives
/// `8 · 3 · C · size` bytes for `C` channels; backward, one all-gather of 2 values per group
/// (Σg, Σg·x̂): `8 · 2 · C · size` bytes. Eval mode with running statistics exchanges
/// nothing, and neither does a communicator of one rank. The parameter gradients are not
/// exchanged: sum them over the ranks with the model's other gradients.
///
/// Threads: the calls are serialized by an internal lock. If MPI was initialized with less
/// than [`Threading::Serialized`] (as by `mpi::initialize()`), MPI may only be called from
/// the thread that initialized it: create the `MpiCollective` on that thread, and exchanges
/// made from another thread fail with an error instead of breaking MPI's rules.
///
/// Drop it before the `Universe` (which finalizes MPI) when it wraps a communicator of your
/// own (from `duplicate` or `split_*`): that communicator is freed on drop.
pub struct MpiCollective {
    comm: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    owner: ThreadId,
    any_thread: bool,
}

// Like the communicator it wraps, an `MpiCollective` is neither `Send` nor `Sync`: use it
// on the thread that owns it (the layers call it on the calling thread only).

impl fmt::Debug for MpiCollective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiCollective")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("any_thread", &self.any_thread)
            .finish_non_exhaustive()
    }
}

impl MpiCollective {
    /// Wraps a communicator (`universe.world()`, or one of your own from `duplicate` or
    /// `split_*` to keep the layers' exchanges apart from other traffic). MPI must be
    /// initialized. Create it on the thread that initialized MPI unless MPI was initialized
    /// with `Threading::Serialized` or `Threading::Multiple`.
    ///
    /// # Panics
    ///
    /// If MPI is not initialized.
    pub fn new(comm: SimpleCommunicator) -> Self {
        assert!(
            environment::is_initialized() && !environment::is_finalized(),
            "MpiCollective::new: MPI is not initialized (call mpi::initialize() first)"
        );
        let rank = usize::try_from(comm.rank()).expect("MPI ranks are non-negative");
        let size = usize::try_from(comm.size()).expect("MPI sizes are positive");
        MpiCollective {
            comm: Mutex::new(comm),
            rank,
            size,
            owner: std::thread::current().id(),
            any_thread: environment::threading_support() >= Threading::Serialized,
        }
    }

    /// The bytes one rank receives from an all-gather of `values_per_rank` values per rank
    /// (`8 · values_per_rank · size`): per synchronized stage and step,
    /// `values_per_rank = 3 · groups` forward and `2 · groups` backward.
    pub fn gathered_bytes(&self, values_per_rank: usize) -> usize {
        8 * values_per_rank * self.size
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    /// One `MPI_Allgather` of `local.len()` `f64` per rank into `out`.
    fn all_gather(&self, local: &[f64], out: &mut Vec<f64>) -> Result<(), String> {
        if !self.any_thread && std::thread::current().id() != self.owner {
            return Err(format!(
                "MPI was initialized with thread level {:?}: call forward_sync/backward_sync \
                 from the thread that created the MpiCollective, or initialize MPI with \
                 mpi::initialize_with_threading(Threading::Serialized)",
                environment::threading_support()
            ));
        }
        if environment::is_finalized() {
            return Err("MPI is already finalized (the Universe was dropped)".to_string());
        }
        out.clear();
        out.resize(local.len() * self.size, 0.0);
        let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        comm.all_gather_into(local, &mut out[..]);
        Ok(())
    }
}
