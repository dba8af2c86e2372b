//! A STREAM-style bandwidth probe: `copy` (`a[i] = b[i]`) and `triad`
//! (`a[i] = b[i] + s·c[i]`) over f32 arrays, split evenly over the threads of the current
//! rayon pool, timed like the suite. Bandwidth counts bytes read + bytes written, as STREAM
//! does (no write-allocate traffic).
//!
//! The copy loop is written `a[i] = b[i] + z` with an opaque `z = 0.0`: a plain copy loop
//! is turned into a `memcpy` call by the compiler, and glibc's `memcpy` switches to
//! non-temporal stores for large sizes, which would measure something else than the normal
//! stores that the normalization kernels make. Both kernels are compiled for AVX-512F, AVX2
//! and the baseline, chosen at run time.

use rayon::prelude::*;

use crate::timing::{time_fn, Timing};

/// Which STREAM kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `a[i] = b[i]`: 2 arrays, 8 bytes per element.
    Copy,
    /// `a[i] = b[i] + s·c[i]`: 3 arrays, 12 bytes per element.
    Triad,
}

impl Kernel {
    /// `"copy"` or `"triad"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kernel::Copy => "copy",
            Kernel::Triad => "triad",
        }
    }

    /// The number of arrays the kernel touches (read + written).
    pub fn arrays(self) -> usize {
        match self {
            Kernel::Copy => 2,
            Kernel::Triad => 3,
        }
    }
}

/// One STREAM measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamResult {
    /// The kernel.
    pub kernel: Kernel,
    /// Bytes read + written per call (the working set).
    pub bytes: usize,
    /// Threads of the pool it ran in.
    pub threads: usize,
    /// GB/s (10⁹ bytes) at the median time.
    pub gbps: f64,
    /// GB/s at the fastest call (what STREAM itself reports).
    pub best_gbps: f64,
    /// The timing.
    pub timing: Timing,
}

/// Arrays are a whole number of this many f32 (one 64-byte cache line).
const LINE: usize = 16;

/// Measures `kernel` with a working set of about `bytes` (read + written per call), split
/// over the threads of the current rayon pool; `reps == 0`: auto from `budget` seconds.
pub fn measure(kernel: Kernel, bytes: usize, reps: usize, budget: f64) -> StreamResult {
    let threads = rayon::current_num_threads().max(1);
    let n = (bytes / (4 * kernel.arrays()) / LINE).max(1) * LINE;
    let chunk = n.div_ceil(threads).div_ceil(LINE) * LINE;
    let pattern = |i: usize| (i % 1021) as f32 * 1e-3;
    // Every page is written here, so no timed call reads the shared zero page.
    let mut a: Vec<f32> = (0..n).map(|_| 0.0).collect();
    let b: Vec<f32> = (0..n).map(pattern).collect();
    let c: Vec<f32> = match kernel {
        Kernel::Copy => Vec::new(),
        Kernel::Triad => (0..n).map(|i| pattern(i + 7)).collect(),
    };
    let z = std::hint::black_box(0.0f32);
    let s = std::hint::black_box(3.0f32);
    let timing = match time_fn(
        || {
            match kernel {
                Kernel::Copy => a
                    .par_chunks_mut(chunk)
                    .zip(b.par_chunks(chunk))
                    .for_each(|(a, b)| copy(a, b, z)),
                Kernel::Triad => a
                    .par_chunks_mut(chunk)
                    .zip(b.par_chunks(chunk))
                    .zip(c.par_chunks(chunk))
                    .for_each(|((a, b), c)| triad(a, b, c, s)),
            }
            Ok::<(), std::convert::Infallible>(())
        },
        reps,
        budget,
    ) {
        Ok(t) => t,
        Err(e) => match e {},
    };
    std::hint::black_box(&a);
    let moved = n * 4 * kernel.arrays();
    StreamResult {
        kernel,
        bytes: moved,
        threads,
        gbps: moved as f64 / timing.median / 1e9,
        best_gbps: moved as f64 / timing.min / 1e9,
        timing,
    }
}

#[inline(always)]
fn copy_body(a: &mut [f32], b: &[f32], z: f32) {
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s + z;
    }
}

#[inline(always)]
fn triad_body(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    for ((d, x), y) in a.iter_mut().zip(b).zip(c) {
        *d = *x + s * *y;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn copy_avx512(a: &mut [f32], b: &[f32], z: f32) {
    copy_body(a, b, z);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn copy_avx2(a: &mut [f32], b: &[f32], z: f32) {
    copy_body(a, b, z);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn triad_avx512(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    triad_body(a, b, c, s);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn triad_avx2(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    triad_body(a, b, c, s);
}

/// `a[i] = b[i] + z` over the common length, with the best instruction set available.
pub fn copy(a: &mut [f32], b: &[f32], z: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { copy_avx512(a, b, z) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { copy_avx2(a, b, z) };
        }
    }
    copy_body(a, b, z);
}

/// `a[i] = b[i] + s·c[i]` over the common length, with the best instruction set available.
pub fn triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { triad_avx512(a, b, c, s) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { triad_avx2(a, b, c, s) };
        }
    }
    triad_body(a, b, c, s);
}

/// The working-set sizes of the suite (one per distinct pass traffic, with the
/// `case/pass` names that share it), smallest first.
pub fn suite_sizes(cases: &[&str]) -> Vec<(usize, Vec<String>)> {
    let mut sizes: Vec<(usize, Vec<String>)> = Vec::new();
    for info in crate::cases::SUITE
        .iter()
        .filter(|c| cases.contains(&c.name))
    {
        let numel: usize = info.shape.iter().product();
        let passes: &[crate::cases::Pass] = if info.has_bwd {
            &[crate::cases::Pass::Fwd, crate::cases::Pass::Bwd]
        } else {
            &[crate::cases::Pass::Fwd]
        };
        for &p in passes {
            let bytes = p.bytes(numel);
            let label = format!("{}/{}", info.name, p.as_str());
            match sizes.iter_mut().find(|(b, _)| *b == bytes) {
                Some((_, labels)) => labels.push(label),
                None => sizes.push((bytes, vec![label])),
            }
        }
    }
    sizes.sort_by_key(|(b, _)| *b);
    sizes
}

/// The DRAM-sized working set of `--stream`: 1 GiB per call.
pub const DRAM_BYTES: usize = 1 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_compute_stream() {
        let b: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let c: Vec<f32> = (0..1000).map(|i| (i * 2) as f32).collect();
        let mut a = vec![0.0; 1000];
        copy(&mut a, &b, 0.0);
        assert_eq!(a, b);
        triad(&mut a, &b, &c, 3.0);
        assert!(a.iter().enumerate().all(|(i, &v)| v == (7 * i) as f32));
    }

    #[test]
    fn measure_small_in_a_pool() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let r = pool.install(|| measure(Kernel::Triad, 3 * 4 * 1000, 10, 0.0));
        assert_eq!(r.threads, 2);
        assert_eq!(r.bytes % (3 * 4 * LINE), 0);
        assert!(r.gbps > 0.0 && r.best_gbps >= r.gbps);
    }

    #[test]
    fn sizes_group_cases() {
        let s = suite_sizes(&["gn", "bcn", "bn_eval"]);
        let gn = 8 * 256 * 28 * 28;
        assert_eq!(
            s[0],
            (8 * gn, vec!["gn/fwd".to_string(), "bcn/fwd".to_string()])
        );
        assert_eq!(s[1].0, 12 * gn);
        assert_eq!(s[2].1, vec!["bn_eval/fwd".to_string()]);
    }
}
