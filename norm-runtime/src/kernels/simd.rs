//! Runtime CPU dispatch: the level (AVX-512, AVX2+FMA, NEON, scalar) is detected once and
//! each parallel task runs its body inside a `#[target_feature]` trampoline
//! (`isa::multiversion!`), so the
//! `#[inline(always)]` line kernels it calls are compiled for that level. Never
//! `-C target-cpu=native`: one binary runs everywhere. NEON is part of the aarch64
//! baseline, so it needs no trampoline: only the reduction kernels differ there.
//!
//! `NORMKIT_SIMD=scalar|neon|avx2|avx512` caps the level (tests compare the levels).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// An instruction-set level, lowest first: a cap keeps the best level at or below it that
/// this machine runs (see [`available`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable code only (the compiler's baseline for the target).
    Scalar,
    /// aarch64 Advanced SIMD (NEON), part of the aarch64 baseline.
    Neon,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL, DQ).
    Avx512,
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Level::Neon;
        }
    }
    Level::Scalar
}

/// The best level this CPU supports.
pub fn detected() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

/// The levels this build runs on this CPU, lowest first: `Scalar`, then the architecture's
/// own levels up to [`detected`] (NEON on aarch64; AVX2 and AVX-512 on x86-64).
pub fn available() -> Vec<Level> {
    let own: &[Level] = if cfg!(target_arch = "x86_64") {
        &[Level::Avx2, Level::Avx512]
    } else if cfg!(target_arch = "aarch64") {
        &[Level::Neon]
    } else {
        &[]
    };
    let top = detected();
    std::iter::once(Level::Scalar)
        .chain(own.iter().copied().filter(|&l| l <= top))
        .collect()
}

/// The best available level at or below `cap`.
fn capped(cap: Level) -> Level {
    available()
        .into_iter()
        .filter(|&l| l <= cap)
        .max()
        .unwrap_or(Level::Scalar)
}

/// No cap set by [`set_cap`].
const NO_CAP: u8 = u8::MAX;

static CAP: AtomicU8 = AtomicU8::new(NO_CAP);

/// The level in use: the detected one, capped by `NORMKIT_SIMD` (read once) and by
/// [`set_cap`]. Inlined: the per-row kernels' dispatch asks for it once per line, and
/// an out-of-line call there spilled the line loop's vectors.
#[inline]
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    static CAPPED: OnceLock<[Level; 4]> = OnceLock::new();
    let env = *LEVEL.get_or_init(|| {
        let cap = match std::env::var("NORMKIT_SIMD").as_deref() {
            Ok("scalar") => Level::Scalar,
            Ok("neon") => Level::Neon,
            Ok("avx2") => Level::Avx2,
            _ => Level::Avx512,
        };
        capped(cap)
    });
    #[cfg(test)]
    if let Some(cap) = THREAD_CAP.with(std::cell::Cell::get) {
        return capped(cap).min(env);
    }
    match CAP.load(Ordering::Relaxed) {
        NO_CAP => env,
        cap => {
            let table = CAPPED.get_or_init(|| {
                [Level::Scalar, Level::Neon, Level::Avx2, Level::Avx512].map(capped)
            });
            table[usize::from(cap)].min(env)
        }
    }
}

/// Caps the level process-wide (`None` lifts the cap): the best available level at or below
/// `cap` runs. For tests and benchmarks that compare the levels; results at different levels
/// differ only by rounding.
pub fn set_cap(cap: Option<Level>) {
    CAP.store(cap.map_or(NO_CAP, |l| l as u8), Ordering::Relaxed);
}

#[cfg(test)]
std::thread_local! {
    /// A cap for the calling thread only (the crate's unit tests: [`with_thread_cap`]).
    static THREAD_CAP: std::cell::Cell<Option<Level>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the level capped at `cap` on the calling thread only, so a unit test that
/// compares the levels does not change the level of tests running beside it (the
/// process-wide [`set_cap`] would). Work that `f` hands to other threads runs at the
/// process-wide level: use it for single-threaded calls.
#[cfg(test)]
pub(crate) fn with_thread_cap<R>(cap: Level, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            THREAD_CAP.with(|c| c.set(None));
        }
    }
    THREAD_CAP.with(|c| c.set(Some(cap)));
    let _reset = Reset;
    f()
}

/// Default of [`stream_threshold`]: 72 MiB. On the development machine (2 MiB L2 per
/// core, a shared last-level cache of which ~100 MB is usable under load) backward passes
/// over 77–100 MB ran 10–20 % faster with streaming stores at one thread (0–15 % at two);
/// forward passes over 64 MiB ran 10–40 % slower.
const STREAM_DEFAULT: usize = 72 << 20;

/// A size in bytes, from an environment variable (read once) unless its setter overrides it.
struct Knob {
    env: &'static str,
    default: usize,
    /// `usize::MAX` when unset.
    set: AtomicUsize,
    /// The environment variable's value, if set (read once).
    read: OnceLock<Option<usize>>,
}

impl Knob {
    const fn new(env: &'static str, default: usize) -> Knob {
        Knob {
            env,
            default,
            set: AtomicUsize::new(usize::MAX),
            read: OnceLock::new(),
        }
    }

    fn get(&self) -> usize {
        self.explicit().unwrap_or(self.default)
    }

    /// The value set by the setter or the environment, if either.
    fn explicit(&self) -> Option<usize> {
        match self.set.load(Ordering::Relaxed) {
            usize::MAX => *self.read.get_or_init(|| {
                std::env::var(self.env)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
            }),
            t => Some(t),
        }
    }

    fn set(&self, bytes: Option<usize>) {
        self.set
            .store(bytes.unwrap_or(usize::MAX), Ordering::Relaxed);
    }
}

static STREAM: Knob = Knob::new("NORMKIT_STREAM_BYTES", STREAM_DEFAULT);

/// The working set (bytes read and written by one pass) above which the elementwise passes
/// write their output with non-temporal stores where the kernels can (AVX-512 and AVX2,
/// f32). Such a pass does not fit the cache: ordinary stores would read each output line
/// first and evict the inputs the next call reads. `NORMKIT_STREAM_BYTES` (read once) or
/// [`set_stream_threshold`] sets it; the default is 72 MiB, except for forward passes on a
/// CPU with its own choice (`cpu::Tuning::stream_forward_above`), which only a value set
/// here overrides. Results do not depend on it.
pub fn stream_threshold() -> usize {
    STREAM.get()
}

/// Sets [`stream_threshold`] process-wide (`None`: back to the environment or default). For
/// tests (0 streams every pass) and for tuning on other machines.
pub fn set_stream_threshold(bytes: Option<usize>) {
    STREAM.set(bytes);
}

/// Default of [`block_bytes`]: 512 KiB, a quarter of the development machine's 2 MiB L2
/// per core, so a block of x and dy stays in it between the two passes of a backward.
const BLOCK_DEFAULT: usize = 512 << 10;

static BLOCK: Knob = Knob::new("NORMKIT_BLOCK_BYTES", BLOCK_DEFAULT);

/// The most input bytes (x, of one block) for which a fused chain runs both passes of a
/// block back to back in one task, its second pass reading the block from the core's
/// cache; chains whose blocks are larger run each pass over the whole input, and smaller
/// blocks are merged up to an eighth of it. `NORMKIT_BLOCK_BYTES` (read once) or
/// [`set_block_bytes`] sets it; the default is 512 KiB. Results do not depend on it.
pub fn block_bytes() -> usize {
    BLOCK.get()
}

/// Sets [`block_bytes`] process-wide (`None`: back to the environment or default). For tests
/// (0 runs every chain as one block) and for tuning to other caches.
pub fn set_block_bytes(bytes: Option<usize>) {
    BLOCK.set(bytes);
}

static PIPELINE: Knob = Knob::new("NORMKIT_PIPELINE_BYTES", usize::MAX);

/// The override of the row forward's pipelining limit (`cpu::Tuning::pipeline_forward_max`,
/// the largest working set for which the row forward runs software-pipelined), if any:
/// `NORMKIT_PIPELINE_BYTES` (read once) or [`set_pipeline_threshold`]. `None` leaves the
/// choice to [`crate::cpu`]. Results do not depend on it.
pub fn pipeline_threshold() -> Option<usize> {
    PIPELINE.explicit()
}

/// Sets [`pipeline_threshold`] process-wide (`None`: back to the environment, else the
/// choice of [`crate::cpu`]). For tests and for tuning on other machines.
pub fn set_pipeline_threshold(bytes: Option<usize>) {
    PIPELINE.set(bytes);
}

/// [`stream_threshold`] where `NORMKIT_STREAM_BYTES` or [`set_stream_threshold`] set it
/// (`None` otherwise: a CPU's own choice, `crate::cpu`, may then apply).
pub(crate) fn stream_override() -> Option<usize> {
    STREAM.explicit()
}

/// Whether a pass with this working set streams its output (see [`stream_threshold`]).
pub(crate) fn streams(bytes: usize) -> bool {
    bytes > stream_threshold()
}
