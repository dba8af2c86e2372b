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
