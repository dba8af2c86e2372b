//! From a generic `T: Float` to the kernels of the concrete element type, without a kernel
//! trait on `Float` and without a type-id lookup: each element type selects its entry of
//! [`Witness`] (a `TypeMap`), a [`Cast`] from `T` to itself, and the kernels run on the
//! cast arguments. All casts are identities on the type they were made for, so after
//! monomorphization the selection and the casts compile to nothing.

use super::reduce::{DxRows, Elem, RowParam, Rows, TileSums};
use crate::float::sealed::{Sealed, TypeMap};
use crate::Float;

/// A proof that `T` is `U`: identity functions on every borrow the kernels take.
pub struct Cast<T, U> {
    r: for<'a> fn(&'a [T]) -> &'a [U],
    w: for<'a> fn(&'a mut [T]) -> &'a mut [U],
    v: fn(T) -> U,
}

impl<T> Cast<T, T> {
    /// The identity (the only way to make a `Cast`).
    #[inline(always)]
    fn id() -> Self {
        Cast {
            r: |s| s,
            w: |s| s,
            v: |v| v,
        }
    }
}

// Every method below is closure-free (`match`, plain loops): a closure, or `Option::map`
// / `<[_; N]>::map` taking one, may stay out of line, and there the cast is a call through
// a function pointer whose result comes back through memory, once per kernel call (the
// load of it, a different width than the stores, then waits for the store buffer full of
// the previous row's output). Inlined, the pointers are constants and the casts vanish.
impl<T: Copy, U> Cast<T, U> {
    /// A shared slice.
    #[inline(always)]
    pub fn r<'a>(&self, s: &'a [T]) -> &'a [U] {
        (self.r)(s)
    }
    /// A mutable slice.
    #[inline(always)]
    pub fn w<'a>(&self, s: &'a mut [T]) -> &'a mut [U] {
        (self.w)(s)
    }
    /// A value.
    #[inline(always)]
    pub fn v(&self, v: T) -> U {
        (self.v)(v)
    }
    /// Three values.
    #[inline(always)]
    pub fn v3(&self, (a, b, c): (T, T, T)) -> (U, U, U) {
        (self.v(a), self.v(b), self.v(c))
    }
    /// Three slices.
    #[inline(always)]
    pub fn r3<'a>(&self, (a, b, c): (&'a [T], &'a [T], &'a [T])) -> (&'a [U], &'a [U], &'a [U]) {
        (self.r(a), self.r(b), self.r(c))
    }
    /// An optional slice.
    #[inline(always)]
    pub fn opt<'a>(&self, s: Option<&'a [T]>) -> Option<&'a [U]> {
        match s {
            Some(s) => Some(self.r(s)),
            None => None,
        }
    }
    /// γ and β along a row, if any.
    #[inline(always)]
    pub fn affine<'a>(
        &self,
        p: Option<(&'a [T], Option<&'a [T]>)>,
    ) -> Option<(&'a [U], Option<&'a [U]>)> {
        match p {
            Some((g, bt)) => Some((self.r(g), self.opt(bt))),
            None => None,
        }
    }
    /// A row parameter (γ and its staging accumulators).
    #[inline(always)]
    pub fn param<'a>(&self, p: Option<RowParam<'a, T>>) -> Option<RowParam<'a, U>> {
        match p {
            Some((g, Some((a, b)))) => Some((self.r(g), Some((self.w(a), self.w(b))))),
            Some((g, None)) => Some((self.r(g), None)),
            None => None,
        }
    }
    /// `R` rows of the backward sums.
    #[inline(always)]
    pub fn rows<'a, const R: usize>(&self, rows: Rows<'a, T, R>) -> Rows<'a, U, R>
    where
        U: Copy,
    {
        let (x0, c0) = (self.r(rows.x[0]), self.v3(rows.c[0]));
        let mut out = Rows {
            x: [x0; R],
            dy: [x0; R],
            c: [c0; R],
            ahead: rows.ahead,
        };
        for r in 0..R {
            out.x[r] = self.r(rows.x[r]);
            out.dy[r] = self.r(rows.dy[r]);
            out.c[r] = self.v3(rows.c[r]);
        }
        out
    }
    /// `R` rows of the dx pass.
    #[inline(always)]
    pub fn dx_rows<'a, const R: usize>(&self, rows: DxRows<'a, T, R>) -> DxRows<'a, U, R>
    where
        U: Copy,
    {
        let DxRows {
            x,
            dy,
            dx,
            c,
            g,
            stream,
            pipeline,
        } = rows;
        let (x0, c0) = (self.r(x[0]), c[0].0);
        let c0 = self.v(c0);
        let mut xs = [x0; R];
        let mut ds = [x0; R];
        let mut cs = [(c0, c0, c0, c0); R];
        for r in 0..R {
            xs[r] = self.r(x[r]);
            ds[r] = self.r(dy[r]);
            let (c, m, a, b) = c[r];
            cs[r] = (self.v(c), self.v(m), self.v(a), self.v(b));
        }
        // The outputs move over one by one (a `&mut` array has no `Copy` fill value); the
        // closure below only unwraps.
        let mut dx = dx.into_iter();
        let mut outs: [Option<&'a mut [U]>; R] = [const { None }; R];
        for o in &mut outs {
            if let Some(d) = dx.next() {
                *o = Some(self.w(d));
            }
        }
        let dx = outs.map(|o| o.expect("R outputs"));
        DxRows {
            x: xs,
            dy: ds,
            dx,
            c: cs,
            g: self.opt(g),
            stream,
            pipeline,
        }
    }
}

/// The concrete type behind a `T: Float`.
pub enum Which<T> {
    /// `T` is `f32`.
    F32(Cast<T, f32>),
    /// `T` is `f64`.
    F64(Cast<T, f64>),
    /// `T` is `bf16`.
    Bf16(Cast<T, half::bf16>),
    /// `T` is `f16`.
    F16(Cast<T, half::f16>),
}

/// The `TypeMap` whose entry for each type is its [`Which`].
pub struct Witness;

impl TypeMap for Witness {
    type Out<T: Float> = Which<T>;
    #[inline(always)]
    fn f32() -> Which<f32> {
        Which::F32(Cast::id())
    }
    #[inline(always)]
    fn f64() -> Which<f64> {
        Which::F64(Cast::id())
    }
    #[inline(always)]
    fn bf16() -> Which<half::bf16> {
        Which::Bf16(Cast::id())
    }
    #[inline(always)]
    fn f16() -> Which<half::f16> {
        Which::F16(Cast::id())
    }
}

/// The concrete type of `T`.
#[inline(always)]
pub fn which<T: Float>() -> Which<T> {
    <T as Sealed>::map::<Witness>()
}

/// Runs `$e` with `$c` the cast from `$T` to its concrete type (the expression is compiled
/// once per concrete type; it names the kernels through [`Elem`] on the cast arguments).
macro_rules! by_type {
    ($T:ty, $c:ident => $e:expr) => {
        match $crate::kernels::elem::which::<$T>() {
            $crate::kernels::elem::Which::F32($c) => $e,
            $crate::kernels::elem::Which::F64($c) => $e,
            $crate::kernels::elem::Which::Bf16($c) => $e,
            $crate::kernels::elem::Which::F16($c) => $e,
        }
    };
}

/// The kernels for any `T: Float`: each call selects the concrete type's [`Elem`] kernels
/// (`elem::which`, resolved at compile time). `Float` does not name this trait.
pub trait RowReduce: Sized + Copy {
    /// [`Elem::row_sums`].
    fn row_sums(x: &[Self], shift: f64) -> (f64, f64);
    /// [`Elem::row_dsums`].
    fn row_dsums(
        x: &[Self],
        dy: &[Self],
        c: (Self, Self, Self),
        p: Option<RowParam<'_, Self>>,
    ) -> (f64, f64);
    /// [`Elem::col_sums`].
    fn col_sums<I: Iterator<Item = usize> + Clone>(
        x: &[Self],
        lines: I,
        shift: &[f64],
        sum: &mut [f64],
        sq: &mut [f64],
    );
    /// [`Elem::col_dsums`].
    fn col_dsums<I: Iterator<Item = usize> + Clone>(
        x: &[Self],
        dy: &[Self],
        lines: I,
        c: (&[Self], &[Self], &[Self]),
        sg: &mut [f64],
        sgx: &mut [f64],
    );
    /// [`Elem::col_affine`].
    fn col_affine(
        x: &[Self],
        out: &mut [Self],
        start: usize,
        c: (&[Self], &[Self], &[Self]),
        stream: bool,
    ) -> bool;
    /// [`Elem::col_dx`].
    fn col_dx(
        x: &[Self],
        dy: &[Self],
        out: &mut [Self],
        start: usize,
        c: (&[Self], &[Self], &[Self], &[Self]),
        stream: bool,
    ) -> bool;
    /// [`Elem::affine_then_sums`].
    fn affine_then_sums(
        x: &[Self],
        y: &mut [Self],
        c: (Self, Self, Self),
        p: Option<(&[Self], Option<&[Self]>)>,
        next: (&[Self], bool),
        shift: (f64, bool),
        stream: bool,
    ) -> Option<(f64, f64)>;
    /// [`Elem::dsums_rows`].
    fn dsums_rows<const R: usize>(
        rows: Rows<'_, Self, R>,
        p: Option<RowParam<'_, Self>>,
    ) -> [(f64, f64); R];
    /// [`Elem::dx_then_dsums`].
    fn dx_then_dsums<const R: usize>(
        cur: DxRows<'_, Self, R>,
        next: Rows<'_, Self, R>,
        p: Option<RowParam<'_, Self>>,
    ) -> [(f64, f64); R];
    /// [`Elem::rows_sums`].
    fn rows_sums(x: &[Self], len: usize, center: bool, out: TileSums<'_>);
    /// [`Elem::rows_dsums`].
    fn rows_dsums(
        io: (&[Self], &[Self]),
        len: usize,
        c: (&[Self], &[Self], &[Self]),
        p: Option<RowParam<'_, Self>>,
        out: &mut [(f64, f64)],
    );
    /// [`Elem::rows_affine`].
    fn rows_affine(
        io: (&[Self], &mut [Self]),
        len: usize,
        c: (&[Self], &[Self], &[Self]),
        p: Option<(&[Self], Option<&[Self]>)>,
        stream: bool,
    );
    /// [`Elem::rows_dx`].
    fn rows_dx(
        io: (&[Self], &[Self], &mut [Self]),
        len: usize,
        c: (&[Self], &[Self], &[Self], &[Self]),
        g: Option<&[Self]>,
        stream: bool,
    );
}

impl<T: crate::Float> RowReduce for T {
    #[inline(always)]
    fn row_sums(x: &[T], shift: f64) -> (f64, f64) {
        by_type!(T, k => Elem::row_sums(k.r(x), shift))
    }
    #[inline(always)]
    fn row_dsums(x: &[T], dy: &[T], c: (T, T, T), p: Option<RowParam<'_, T>>) -> (f64, f64) {
        by_type!(T, k => Elem::row_dsums(k.r(x), k.r(dy), k.v3(c), k.param(p)))
    }
    #[inline(always)]
    fn col_sums<I: Iterator<Item = usize> + Clone>(
        x: &[T],
        lines: I,
        shift: &[f64],
        sum: &mut [f64],
        sq: &mut [f64],
    ) {
        by_type!(T, k => Elem::col_sums(k.r(x), lines, shift, sum, sq))
    }
    #[inline(always)]
    fn col_dsums<I: Iterator<Item = usize> + Clone>(
        x: &[T],
        dy: &[T],
        lines: I,
        c: (&[T], &[T], &[T]),
        sg: &mut [f64],
        sgx: &mut [f64],
    ) {
        by_type!(T, k => Elem::col_dsums(k.r(x), k.r(dy), lines, k.r3(c), sg, sgx))
    }
    #[inline(always)]
    fn col_affine(
        x: &[T],
        out: &mut [T],
        start: usize,
        c: (&[T], &[T], &[T]),
        stream: bool,
    ) -> bool {
        by_type!(T, k => Elem::col_affine(k.r(x), k.w(out), start, k.r3(c), stream))
    }
    #[inline(always)]
    fn col_dx(
        x: &[T],
        dy: &[T],
        out: &mut [T],
        start: usize,
        (c0, c1, c2, c3): (&[T], &[T], &[T], &[T]),
        stream: bool,
    ) -> bool {
        by_type!(T, k => {
            let c = (k.r(c0), k.r(c1), k.r(c2), k.r(c3));
            Elem::col_dx(k.r(x), k.r(dy), k.w(out), start, c, stream)
        })
    }
    #[inline(always)]
    fn affine_then_sums(
        x: &[T],
        y: &mut [T],
        c: (T, T, T),
        p: Option<(&[T], Option<&[T]>)>,
        (next, ahead): (&[T], bool),
        shift: (f64, bool),
        stream: bool,
    ) -> Option<(f64, f64)> {
        by_type!(T, k => {
            Elem::affine_then_sums(k.r(x), k.w(y), k.v3(c), k.affine(p), (k.r(next), ahead), shift, stream)
        })
    }
    #[inline(always)]
    fn dsums_rows<const R: usize>(
        rows: Rows<'_, T, R>,
        p: Option<RowParam<'_, T>>,
    ) -> [(f64, f64); R] {
        by_type!(T, k => Elem::dsums_rows(k.rows(rows), k.param(p)))
    }
    #[inline(always)]
    fn dx_then_dsums<const R: usize>(
        cur: DxRows<'_, T, R>,
        next: Rows<'_, T, R>,
        p: Option<RowParam<'_, T>>,
    ) -> [(f64, f64); R] {
        by_type!(T, k => Elem::dx_then_dsums(k.dx_rows(cur), k.rows(next), k.param(p)))
    }
    #[inline(always)]
    fn rows_sums(x: &[T], len: usize, center: bool, out: TileSums<'_>) {
        by_type!(T, k => Elem::rows_sums(k.r(x), len, center, out))
    }
    #[inline(always)]
    fn rows_dsums(
        (x, dy): (&[T], &[T]),
        len: usize,
        c: (&[T], &[T], &[T]),
        p: Option<RowParam<'_, T>>,
        out: &mut [(f64, f64)],
    ) {
        by_type!(T, k => Elem::rows_dsums((k.r(x), k.r(dy)), len, k.r3(c), k.param(p), out))
    }
    #[inline(always)]
    fn rows_affine(
        (x, y): (&[T], &mut [T]),
        len: usize,
        c: (&[T], &[T], &[T]),
        p: Option<(&[T], Option<&[T]>)>,
        stream: bool,
    ) {
        by_type!(T, k => {
            Elem::rows_affine((k.r(x), k.w(y)), len, k.r3(c), k.affine(p), stream)
        })
    }
    #[inline(always)]
    fn rows_dx(
        (x, dy, dx): (&[T], &[T], &mut [T]),
        len: usize,
        (c0, c1, c2, c3): (&[T], &[T], &[T], &[T]),
        g: Option<&[T]>,
        stream: bool,
    ) {
        by_type!(T, k => {
            let c = (k.r(c0), k.r(c1), k.r(c2), k.r(c3));
            Elem::rows_dx((k.r(x), k.r(dy), k.w(dx)), len, c, k.opt(g), stream)
        })
    }
}
