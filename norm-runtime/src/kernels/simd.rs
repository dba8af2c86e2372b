//! Runtime CPU dispatch: the level (AVX-512, AVX2+FMA, scalar) is detected once and each
//! parallel task runs its body inside a `#[target_feature]` trampoline, so the
//! `#[inline(always)]` line kernels it calls are compiled for that level. Never
//! `-C target-cpu=native`: one binary runs everywhere.
//!
//! `NORMKIT_SIMD=scalar|avx2|avx512` caps the level (tests compare the levels).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// An instruction-set level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable code only (the compiler's baseline for the target).
    Scalar,
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
    Level::Scalar
}

/// The best level this CPU supports.
pub fn detected() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

static CAP: AtomicU8 = AtomicU8::new(u8::MAX);

/// The level in use: the detected one, capped by `NORMKIT_SIMD` (read once) and by
/// [`set_cap`].
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    let env = *LEVEL.get_or_init(|| {
        let cap = match std::env::var("NORMKIT_SIMD").as_deref() {
            Ok("scalar") => Level::Scalar,
            Ok("avx2") => Level::Avx2,
            _ => Level::Avx512,
        };
        detected().min(cap)
    });
    match CAP.load(Ordering::Relaxed) {
        0 => Level::Scalar,
        1 => env.min(Level::Avx2),
        _ => env,
    }
}

/// Caps the level process-wide (`None` lifts the cap). For tests and benchmarks that compare
/// the levels; results at different levels differ only by rounding.
pub fn set_cap(cap: Option<Level>) {
    let v = match cap {
        Some(Level::Scalar) => 0,
        Some(Level::Avx2) => 1,
        Some(Level::Avx512) | None => u8::MAX,
    };
    CAP.store(v, Ordering::Relaxed);
}

/// Defines a function compiled three times (AVX-512, AVX2+FMA, baseline) that picks the
/// copy for the current [`level`] at run time. Its body and everything it calls must be
/// `#[inline(always)]` and closure-free in the hot loops, so they are compiled inside the
/// `#[target_feature]` copy.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$T:ident: Float>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$T: Float>($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$T: Float>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx512<$T: Float>($($arg: $ty),*) {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2<$T: Float>($($arg: $ty),*) {
                body($($arg),*)
            }

            match $crate::kernels::simd::level() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `level()` never exceeds the features detected at run time.
                $crate::kernels::simd::Level::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `level()` never exceeds the features detected at run time.
                $crate::kernels::simd::Level::Avx2 => unsafe { avx2($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

/// Default of [`stream_threshold`]: 72 MiB. On the development machine (2 MiB L2 per
/// core, a shared last-level cache of which ~100 MB is usable under load) backward passes
/// over 77–100 MB ran 10–20 % faster with streaming stores at one thread (0–15 % at two);
/// forward passes over 64 MiB ran 10–40 % slower.
const STREAM_DEFAULT: usize = 72 << 20;

/// `usize::MAX` when unset: [`set_stream_threshold`] overrides the environment.
static STREAM_SET: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(usize::MAX);

/// The working set (bytes read and written by one pass) above which the elementwise passes
/// write their output with non-temporal stores where the kernels can (AVX-512, f32). Such a
/// pass does not fit the cache: ordinary stores would read each output line first and evict
/// the inputs the next call reads. `NORMKIT_STREAM_BYTES` (read once) or
/// [`set_stream_threshold`] sets it; the default is 72 MiB. Results do not depend on it.
pub fn stream_threshold() -> usize {
    static ENV: OnceLock<usize> = OnceLock::new();
    match STREAM_SET.load(Ordering::Relaxed) {
        usize::MAX => *ENV.get_or_init(|| {
            std::env::var("NORMKIT_STREAM_BYTES")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(STREAM_DEFAULT)
        }),
        t => t,
    }
}

/// Sets [`stream_threshold`] process-wide (`None`: back to the environment or default). For
/// tests (0 streams every pass) and for tuning on other machines.
pub fn set_stream_threshold(bytes: Option<usize>) {
    STREAM_SET.store(bytes.unwrap_or(usize::MAX), Ordering::Relaxed);
}

/// Whether a pass with this working set streams its output (see [`stream_threshold`]).
pub(crate) fn streams(bytes: usize) -> bool {
    bytes > stream_threshold()
}
