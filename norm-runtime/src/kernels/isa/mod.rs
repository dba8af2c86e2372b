//! The ISA-token interface the SIMD kernels are written against, once.
//!
//! An [`Isa`] is a zero-sized token whose existence proves that the CPU runs its
//! instruction set (pulp's `Simd` idea): only the level's own file makes one, after run-time
//! detection. Its methods are the few vector operations the kernels need, on `f32` vectors
//! of [`Isa::LANES`] lanes and `f64` vectors of half as many (one `f32` vector widens into
//! two), with loads and stores that take slices (bounds-checked, no raw pointers in the
//! kernels). A kernel is a generic function over `S: Isa`; [`dispatch`] picks the level
//! once for a call and runs the kernel inside the level's `#[target_feature]` trampoline
//! ([`WithIsa`]), so every `#[inline(always)]` operation compiles to the level's
//! instructions.
//!
//! Levels, one file each: [`avx512`] (AVX-512 F/BW/VL/DQ + FMA), [`avx2`] (AVX2 + FMA),
//! `neon` (aarch64 Advanced SIMD), [`scalar`] (portable, two lanes). Adding a level is
//! one more file implementing [`Isa`] and one arm in [`dispatch`].
//!
//! Element types other than `f32`/`f64` (bf16/f16 storage computed as `f32` lanes) fit as
//! one more pair of load/store methods widening into [`Isa::F32`].

use super::simd::{level, Level};

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod scalar;

/// An instruction-set level as a token type; see the module docs.
pub trait Isa: Copy + Send + Sync + 'static {
    /// A vector of [`LANES`](Isa::LANES) `f32`.
    type F32: Copy;
    /// A vector of `LANES / 2` `f64`.
    type F64: Copy;
    /// The `f32` lanes of a vector.
    const LANES: usize;
    /// The alignment (bytes) at which a vector store does not straddle a cache line.
    const ALIGN: usize;
    /// Whether the pipelined and multi-row kernels (`affine_then_sums`, `dx_then_dsums`,
    /// `dsums_rows` of several rows) pay at this level: their eight `f64` chains plus
    /// coefficients need more than 16 vector registers, so with 16 (AVX2) they spill and
    /// the two passes run in half the instructions (callgrind, `benches/results/…`).
    const PIPELINE: bool;

    /// Runs `op` with this token inside the level's `#[target_feature]` context.
    fn vectorize<Op: WithIsa>(self, op: Op) -> Op::Out;

    /// Every lane `v`.
    fn splat(self, v: f32) -> Self::F32;
    /// a + b.
    fn add(self, a: Self::F32, b: Self::F32) -> Self::F32;
    /// a − b.
    fn sub(self, a: Self::F32, b: Self::F32) -> Self::F32;
    /// a · b.
    fn mul(self, a: Self::F32, b: Self::F32) -> Self::F32;
    /// a · b + c, fused where the level has FMA.
    fn mul_add(self, a: Self::F32, b: Self::F32, c: Self::F32) -> Self::F32;
    /// a · b + c rounded once at every level (the vector levels' [`mul_add`](Isa::mul_add);
    /// the portable level overrides it with `f32::mul_add`, software where the target has
    /// no FMA): for kernels whose bits must not depend on the level.
    #[inline(always)]
    fn fma(self, a: Self::F32, b: Self::F32, c: Self::F32) -> Self::F32 {
        self.mul_add(a, b, c)
    }
    /// The first `LANES` values of `s` (panics if shorter).
    fn load(self, s: &[f32]) -> Self::F32;
    /// The values of `s` (at most `LANES`), zero in the lanes after.
    fn load_part(self, s: &[f32]) -> Self::F32;
    /// Stores `v` into the first `LANES` values of `s` (panics if shorter).
    fn store(self, s: &mut [f32], v: Self::F32);
    /// Stores the first `s.len()` (at most `LANES`) lanes of `v` into `s`.
    fn store_part(self, s: &mut [f32], v: Self::F32);
    /// [`store`](Isa::store), non-temporal where the level has it and `s` is aligned to
    /// [`ALIGN`](Isa::ALIGN); [`fence`](Isa::fence) orders such stores.
    fn stream(self, s: &mut [f32], v: Self::F32);
    /// Orders the non-temporal stores made so far before later stores.
    fn fence(self);
    /// The first `LANES` values of `s` widened to `f64`: (low half, high half).
    fn load_wide(self, s: &[f32]) -> (Self::F64, Self::F64);
    /// `v` widened to `f64`: (low half, high half).
    fn widen(self, v: Self::F32) -> (Self::F64, Self::F64);

    /// Every lane `v`.
    fn splat_d(self, v: f64) -> Self::F64;
    /// a + b.
    fn add_d(self, a: Self::F64, b: Self::F64) -> Self::F64;
    /// a − b.
    fn sub_d(self, a: Self::F64, b: Self::F64) -> Self::F64;
    /// a · b.
    fn mul_d(self, a: Self::F64, b: Self::F64) -> Self::F64;
    /// a · b + c, fused where the level has FMA.
    fn mul_add_d(self, a: Self::F64, b: Self::F64, c: Self::F64) -> Self::F64;
    /// The first `LANES / 2` values of `s` (panics if shorter).
    fn load_d(self, s: &[f64]) -> Self::F64;
    /// Stores `v` into the first `LANES / 2` values of `s` (panics if shorter).
    fn store_d(self, s: &mut [f64], v: Self::F64);
    /// The sum of the lanes, in the level's fixed order.
    fn sum_d(self, v: Self::F64) -> f64;

    /// Asks for the two cache lines from `p` in L2: a hint, never a memory access (any
    /// address is fine); nothing where the level has no prefetch.
    fn prefetch(self, p: *const f32);

    // half-precision loads/stores (half3)
    //
    // Half-precision storage (bit patterns of `bf16` / `f16` as `u16`) read into and written
    // from `f32` lanes, so the kernels of `kernels::half::fused` read a half row once and
    // write it once. Widening is exact; narrowing rounds to nearest even with NaN kept NaN
    // (quiet), subnormal results rounded (not flushed), the same bits at every level and
    // as the `half` crate's `from_f32`. The defaults go lane by lane through an array (the
    // portable and NEON levels); the x86 levels replace them with vector code.

    /// The first `LANES` bf16 bit patterns of `s` widened to `f32` (panics if shorter).
    #[inline(always)]
    fn load_bf16(self, s: &[u16]) -> Self::F32 {
        let mut a = [0f32; 16];
        for (o, &h) in a.iter_mut().zip(&s[..Self::LANES]) {
            *o = half::bf16::from_bits(h).to_f32();
        }
        self.load(&a)
    }
    /// The first `2·LANES` bf16 bit patterns of `s` widened to `f32`: the values at even
    /// indices, then those at odd indices (panics if shorter). The x86 levels widen them in
    /// place (a shift and a mask of 32-bit lanes, no shuffle), for sums whose order of
    /// terms is free.
    #[inline(always)]
    fn load_bf16_pair(self, s: &[u16]) -> (Self::F32, Self::F32) {
        let (mut e, mut o) = ([0f32; 16], [0f32; 16]);
        for (j, p) in s[..2 * Self::LANES].chunks_exact(2).enumerate() {
            e[j] = half::bf16::from_bits(p[0]).to_f32();
            o[j] = half::bf16::from_bits(p[1]).to_f32();
        }
        (self.load(&e), self.load(&o))
    }
    /// `v` rounded to bf16 into the first `LANES` values of `s` (panics if shorter).
    #[inline(always)]
    fn store_bf16(self, s: &mut [u16], v: Self::F32) {
        let mut a = [0f32; 16];
        self.store(&mut a, v);
        for (o, &x) in s[..Self::LANES].iter_mut().zip(&a) {
            *o = half::bf16::from_f32(x).to_bits();
        }
    }
    /// Runs `op` as [`vectorize`](Isa::vectorize), with the level's bf16 rounding
    /// instruction enabled where the CPU has one (AVX-512: AVX512_BF16), so that
    /// [`store_bf16_ne`](Isa::store_bf16_ne) compiles to it inside `op`.
    #[inline(always)]
    fn vectorize_bf16<Op: WithIsa>(self, op: Op) -> Op::Out {
        self.vectorize(op)
    }
    /// [`store_bf16`](Isa::store_bf16) (the same bits) by the level's rounding instruction
    /// where the CPU has one; inline only inside
    /// [`vectorize_bf16`](Isa::vectorize_bf16).
    #[inline(always)]
    fn store_bf16_ne(self, s: &mut [u16], v: Self::F32) {
        self.store_bf16(s, v)
    }
    /// The first `LANES` f16 bit patterns of `s` widened to `f32` (panics if shorter).
    #[inline(always)]
    fn load_f16(self, s: &[u16]) -> Self::F32 {
        let mut a = [0f32; 16];
        for (o, &h) in a.iter_mut().zip(&s[..Self::LANES]) {
            *o = half::f16::from_bits(h).to_f32();
        }
        self.load(&a)
    }
    /// `v` rounded to f16 into the first `LANES` values of `s` (panics if shorter).
    #[inline(always)]
    fn store_f16(self, s: &mut [u16], v: Self::F32) {
        let mut a = [0f32; 16];
        self.store(&mut a, v);
        for (o, &x) in s[..Self::LANES].iter_mut().zip(&a) {
            *o = half::f16::from_f32(x).to_bits();
        }
    }
}

/// Prefetches into L2 the two cache lines at `p`, `p + 16` (x86-64: SSE, baseline).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch2(p: *const f32) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    // SAFETY: a prefetch is a hint: it accesses no memory architecturally and never
    // faults, whatever the address (hence `wrapping_add`).
    unsafe {
        _mm_prefetch::<_MM_HINT_T1>(p.cast());
        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(16).cast());
    }
}

/// A kernel call generic over the level: [`dispatch`] runs `run` with the token of the
/// current level, inside that level's `#[target_feature]` context. `run` must be
/// `#[inline(always)]`, as must everything in its loops.
pub trait WithIsa {
    /// The result.
    type Out;
    /// The kernel at level `S`.
    fn run<S: Isa>(self, s: S) -> Self::Out;
}

/// Defines a function whose body runs at the current level (`simd::level`): inside the level's
/// `#[target_feature]` trampoline (`isa::dispatch`, one choice per call), so the body and
/// everything it calls are compiled for that level. Its body and everything it calls must
/// be `#[inline(always)]` and closure-free in the hot loops.
///
/// The body becomes the `#[inline(always)]` [`WithIsa::run`] of a struct holding the
/// arguments, not a closure: a closure is a function of its own that the compiler may keep
/// out of line, and then the body ran without the level's features (callgrind: twice the
/// instructions of the elementwise passes at AVX2).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$T:ident: Float>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name<$T: Float>($($arg: $ty),*) {
            /// The arguments of the call.
            struct Args<A, $T>(A, std::marker::PhantomData<$T>);

            impl<$T: Float> $crate::kernels::isa::WithIsa for Args<($($ty,)*), $T> {
                type Out = ();
                #[inline(always)]
                fn run<S: $crate::kernels::isa::Isa>(self, _: S) {
                    let ($($arg,)*) = self.0;
                    $body
                }
            }

            $crate::kernels::isa::dispatch(Args(($($arg,)*), std::marker::PhantomData))
        }
    };
}
pub(crate) use multiversion;

/// Runs `op` at the current level ([`super::simd::level`]): one choice per call.
#[inline(always)]
pub fn dispatch<Op: WithIsa>(op: Op) -> Op::Out {
    match level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => match avx512::Avx512::try_new() {
            Some(s) => s.vectorize(op),
            None => scalar::Scalar.vectorize(op),
        },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => match avx2::Avx2::try_new() {
            Some(s) => s.vectorize(op),
            None => scalar::Scalar.vectorize(op),
        },
        #[cfg(target_arch = "aarch64")]
        Level::Neon => neon::Neon.vectorize(op),
        _ => scalar::Scalar.vectorize(op),
    }
}

/// [`dispatch`] through the level's [`Isa::vectorize_bf16`] (kernels storing bf16).
#[inline(always)]
pub fn dispatch_bf16<Op: WithIsa>(op: Op) -> Op::Out {
    match level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => match avx512::Avx512::try_new() {
            Some(s) => s.vectorize_bf16(op),
            None => scalar::Scalar.vectorize(op),
        },
        _ => dispatch(op),
    }
}

/// The vectors of an elementwise pass over `n` values whose full vectors start at
/// [`Isa::ALIGN`] boundaries of the output: full body blocks, taken one at a time alongside
/// the loop of another pass ([`Aligned::body`]), then the head before the first boundary
/// and the values after the last block as partial or full vectors ([`Aligned::rest`]).
/// A store straddling two cache lines costs both, and `Vec` buffers start 16 bytes past
/// a boundary.
#[derive(Clone, Copy)]
pub(crate) struct Aligned {
    /// Values before the first boundary.
    pub head: usize,
    /// Values of the pass.
    n: usize,
    /// The start of the next body block.
    next: usize,
    /// Lanes of a vector.
    lanes: usize,
}

impl Aligned {
    /// The pass writing `out`.
    #[inline(always)]
    pub fn new<S: Isa, T>(_: S, out: &[T]) -> Self {
        let n = out.len();
        let head = out.as_ptr().align_offset(S::ALIGN).min(n);
        // Element-aligned outputs have head < LANES; anything else walks as partial vectors.
        Aligned {
            head,
            n,
            next: head,
            lanes: S::LANES,
        }
    }

    /// Every remaining body block of `len` values (a multiple of `LANES`) at once: the
    /// range they cover, a multiple of `len` values (for a pass that walks it as
    /// `chunks_exact(len)`, whose constant-length blocks need no bounds check per vector).
    #[inline(always)]
    pub fn bodies(&mut self, len: usize) -> std::ops::Range<usize> {
        let i = self.next;
        let k = self.n.saturating_sub(i) / len.max(1) * len;
        self.next = i + k;
        i..i + k
    }

    /// The head and the values after the last body block, as (start, len ≤ LANES).
    #[inline(always)]
    pub fn rest(&self) -> Rest {
        Rest {
            at: 0,
            end: self.head,
            next: self.next,
            n: self.n,
            lanes: self.lanes,
        }
    }
}

/// The vectors of [`Aligned::rest`]: those of the head, then those after the last body
/// block (a plain iterator: adapters with closures may stay out of line).
pub(crate) struct Rest {
    /// The start of the next vector.
    at: usize,
    /// The end of the current range (the head, then the pass).
    end: usize,
    /// The start of the tail.
    next: usize,
    /// Values of the pass.
    n: usize,
    /// Lanes of a vector.
    lanes: usize,
}

impl Iterator for Rest {
    type Item = (usize, usize);
    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.at >= self.end {
            if self.end == self.n || self.next >= self.n {
                return None;
            }
            // The head is done: the tail from the last body block to the end.
            (self.at, self.end) = (self.next, self.n);
        }
        let i = self.at;
        let len = self.lanes.min(self.end - i);
        self.at = i + len;
        Some((i, len))
    }
}
