//! The [`Elem`] kernels of `f32` and `f64`: each call picks the level once
//! ([`dispatch`]) and runs the kernel written once over the token (`sums`, `dsums`,
//! `cols`). A stored type computed in `f32` lanes (bf16, f16) would be one more impl here
//! with loads that widen into `Isa::F32`.

use super::{
    cols, dsums, reborrow, row_dx_portable, stage_portable, sums, DxRows, Elem, RowParam, Rows,
    TileSums,
};
use crate::kernels::isa::{dispatch, Isa, WithIsa};

/// The arguments of `sums::row_sums_f32`.
struct SumsF32<'a> {
    x: &'a [f32],
    shift: f64,
}

impl WithIsa for SumsF32<'_> {
    type Out = (f64, f64);
    #[inline(always)]
    fn run<S: Isa>(self, s: S) -> (f64, f64) {
        let SumsF32 { x, shift } = self;
        sums::row_sums_f32(s, x, shift)
    }
}

/// The arguments of `sums::row_sums_f64`.
struct SumsF64<'a> {
    x: &'a [f64],
    shift: f64,
}

impl WithIsa for SumsF64<'_> {
    type Out = (f64, f64);
    #[inline(always)]
    fn run<S: Isa>(self, s: S) -> (f64, f64) {
        let SumsF64 { x, shift } = self;
        sums::row_sums_f64(s, x, shift)
    }
}

impl<const ST: bool, const D: bool> WithIsa for sums::AffineThenSums<'_, ST, D> {
    /// The sums as a pair, not an `Option`: a pair of `f64` comes back from the level's
    /// trampoline in two registers, an `Option` of it through memory, and the caller's load
    /// of it waited behind the row's output stores (AVX-512, one thread: 7 % of a group norm
    /// forward's task body).
    type Out = (f64, f64);
    /// The pipelined kernel at every level: the callers ask for it only where the level
    /// pipelines (`TaskOut::pipelined`, [`Isa::PIPELINE`], asked once per pass).
    #[inline(always)]
    fn run<S: Isa>(self, s: S) -> (f64, f64) {
        sums::affine_then_sums_f32(s, self)
    }
}

/// The arguments of `dsums::dsums_f32`.
struct DSumsF32<'a, 'b, const R: usize> {
    rows: Rows<'a, f32, R>,
    p: Option<RowParam<'b, f32>>,
}

impl<const R: usize> WithIsa for DSumsF32<'_, '_, R> {
    type Out = [(f64, f64); R];
    #[inline(always)]
    fn run<S: Isa>(self, s: S) -> [(f64, f64); R] {
        let DSumsF32 { rows, p } = self;
        if S::PIPELINE || R == 1 {
            dsums::dsums_f32(s, rows, p)
        } else {
            each_row(s, rows, p)
        }
    }
}

/// The arguments of `dsums::dx_then_dsums_f32`.
struct DxThenDSums<'a, 'b, 'c, const R: usize> {
    cur: DxRows<'a, f32, R>,
    next: Rows<'b, f32, R>,
    p: Option<RowParam<'c, f32>>,
}

impl<const R: usize> WithIsa for DxThenDSums<'_, '_, '_, R> {
    type Out = [(f64, f64); R];
    #[inline(always)]
    fn run<S: Isa>(self, s: S) -> [(f64, f64); R] {
        let DxThenDSums { cur, next, p } = self;
        // A level without the pipelined kernels (AVX2: two rows' chains spill its 16
        // registers) still runs one row pipelined when the rows stream from memory (`stream`:
        // the pass is beyond the cache) and the rows after `next` follow in memory (`ahead`):
        // only the pipelined loop prefetches them across the 4 KiB pages where the hardware
        // prefetcher stops. AVX2, 1 thread, in-process A/B: InstanceNorm [8,64,128,128]
        // backward −3…6 %; in cache the two passes stay faster (weight standardization
        // backward +16…20 % pipelined), so they keep them.
        if S::PIPELINE || (R == 1 && S::LANES >= 8 && cur.stream && next.ahead) {
            return dsums::dx_then_dsums_f32(s, cur, next, p);
        }
        for (r, dx) in cur.dx.into_iter().enumerate() {
            row_dx_portable(cur.x[r], cur.dy[r], dx, cur.c[r], cur.g);
        }
        each_row(s, next, p)
    }
}

/// `dsums::dsums_f32` one row at a time (levels that do not pipeline).
#[inline(always)]
fn each_row<S: Isa, const R: usize>(
    s: S,
    rows: Rows<'_, f32, R>,
    mut p: Option<RowParam<'_, f32>>,
) -> [(f64, f64); R] {
    // A plain loop: `array::from_fn` stays out of line, and outside this level's
    // `#[target_feature]` context every token operation became a call (callgrind: 6x the
    // instructions of the backward sums at AVX2).
    let mut out = [(0.0, 0.0); R];
    for (r, o) in out.iter_mut().enumerate() {
        let row = Rows {
            x: [rows.x[r]],
            dy: [rows.dy[r]],
            c: [rows.c[r]],
            ahead: false,
        };
        [*o] = dsums::dsums_f32(s, row, reborrow(&mut p));
    }
    out
}

/// The arguments of `dsums::dsums_f64`.
struct DSumsF64<'a> {
    x: &'a [f64],
    dy: &'a [f64],
    c: (f64, f64, f64),
    w: Option<&'a [f64]>,
}

impl WithIsa for DSumsF64<'_> {
    type Out = (f64, f64);
    #[inline(always)]
    fn run<S: Isa>(self, s: S) -> (f64, f64) {
        let DSumsF64 { x, dy, c, w } = self;
        dsums::dsums_f64(s, x, dy, c, w)
    }
}

/// The arguments of `cols::col_sums_f32`.
struct ColSums<'a, I> {
    x: &'a [f32],
    lines: I,
    shift: &'a [f64],
    sum: &'a mut [f64],
    sq: &'a mut [f64],
}

impl<I: Iterator<Item = usize> + Clone> WithIsa for ColSums<'_, I> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa>(self, s: S) {
        let ColSums {
            x,
            lines,
            shift,
            sum,
            sq,
        } = self;
        cols::col_sums_f32(s, x, lines, shift, sum, sq)
    }
}

/// The arguments of `cols::col_dsums_f32`.
struct ColDSums<'a, I> {
    x: &'a [f32],
    dy: &'a [f32],
    lines: I,
    c: (&'a [f32], &'a [f32], &'a [f32]),
    sg: &'a mut [f64],
    sgx: &'a mut [f64],
}

impl<I: Iterator<Item = usize> + Clone> WithIsa for ColDSums<'_, I> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa>(self, s: S) {
        let ColDSums {
            x,
            dy,
            lines,
            c,
            sg,
            sgx,
        } = self;
        cols::col_dsums_f32(s, (x, dy), lines, c, sg, sgx)
    }
}

/// The arguments of `cols::col_run_f32::<_, DX>`.
struct ColRun<'a, const DX: bool> {
    x: &'a [f32],
    dy: &'a [f32],
    out: &'a mut [f32],
    start: usize,
    k: (&'a [f32], &'a [f32], &'a [f32], &'a [f32]),
    stream: bool,
}

impl<const DX: bool> WithIsa for ColRun<'_, DX> {
    type Out = bool;
    #[inline(always)]
    fn run<S: Isa>(self, s: S) -> bool {
        let ColRun {
            x,
            dy,
            out,
            start,
            k,
            stream,
        } = self;
        cols::col_run_f32::<_, DX>(s, (x, dy), out, start, k, stream)
    }
}

/// The arguments of `sums::rows_sums_f32`.
struct RowsSumsF32<'a> {
    x: &'a [f32],
    len: usize,
    center: bool,
    out: TileSums<'a>,
}

impl WithIsa for RowsSumsF32<'_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa>(self, s: S) {
        let RowsSumsF32 {
            x,
            len,
            center,
            out,
        } = self;
        sums::rows_sums_f32(s, x, len, center, out);
    }
}

/// The arguments of `sums::rows_affine_f32`.
struct RowsAffine<'a> {
    io: (&'a [f32], &'a mut [f32]),
    len: usize,
    c: (&'a [f32], &'a [f32], &'a [f32]),
    p: Option<(&'a [f32], Option<&'a [f32]>)>,
    stream: bool,
}

impl WithIsa for RowsAffine<'_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa>(self, s: S) {
        let RowsAffine {
            io,
            len,
            c,
            p,
            stream,
        } = self;
        sums::rows_affine_f32(s, io, len, c, p, stream);
    }
}

/// The arguments of `dsums::rows_dx_f32`.
struct RowsDx<'a> {
    io: (&'a [f32], &'a [f32], &'a mut [f32]),
    len: usize,
    c: (&'a [f32], &'a [f32], &'a [f32], &'a [f32]),
    g: Option<&'a [f32]>,
    stream: bool,
}

impl WithIsa for RowsDx<'_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa>(self, s: S) {
        let RowsDx {
            io,
            len,
            c,
            g,
            stream,
        } = self;
        dsums::rows_dx_f32(s, io, len, c, g, stream);
    }
}

/// The arguments of `dsums::rows_dsums_f32`.
struct RowsDSums<'a, 'p> {
    io: (&'a [f32], &'a [f32]),
    len: usize,
    c: (&'a [f32], &'a [f32], &'a [f32]),
    p: Option<RowParam<'p, f32>>,
    out: &'a mut [(f64, f64)],
}

impl WithIsa for RowsDSums<'_, '_> {
    type Out = ();
    #[inline(always)]
    fn run<S: Isa>(self, s: S) {
        let RowsDSums { io, len, c, p, out } = self;
        dsums::rows_dsums_f32(s, io, len, c, p, out);
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn rows_dsums(
        io: (&[f32], &[f32]),
        len: usize,
        c: (&[f32], &[f32], &[f32]),
        p: Option<RowParam<'_, f32>>,
        out: &mut [(f64, f64)],
    ) {
        dispatch(RowsDSums { io, len, c, p, out });
    }
    #[inline(always)]
    fn rows_sums(x: &[f32], len: usize, center: bool, out: TileSums<'_>) {
        dispatch(RowsSumsF32 {
            x,
            len,
            center,
            out,
        });
    }
    #[inline(always)]
    fn rows_affine(
        io: (&[f32], &mut [f32]),
        len: usize,
        c: (&[f32], &[f32], &[f32]),
        p: Option<(&[f32], Option<&[f32]>)>,
        stream: bool,
    ) {
        dispatch(RowsAffine {
            io,
            len,
            c,
            p,
            stream,
        });
    }
    #[inline(always)]
    fn rows_dx(
        io: (&[f32], &[f32], &mut [f32]),
        len: usize,
        c: (&[f32], &[f32], &[f32], &[f32]),
        g: Option<&[f32]>,
        stream: bool,
    ) {
        dispatch(RowsDx {
            io,
            len,
            c,
            g,
            stream,
        });
    }
    #[inline(always)]
    fn row_sums(x: &[f32], shift: f64) -> (f64, f64) {
        dispatch(SumsF32 { x, shift })
    }
    #[inline(always)]
    fn row_dsums(
        x: &[f32],
        dy: &[f32],
        c: (f32, f32, f32),
        p: Option<RowParam<'_, f32>>,
    ) -> (f64, f64) {
        let rows = Rows {
            x: [x],
            dy: [dy],
            c: [c],
            ahead: false,
        };
        let [sums] = dispatch(DSumsF32 { rows, p });
        sums
    }
    #[inline(always)]
    fn col_sums<I: Iterator<Item = usize> + Clone>(
        x: &[f32],
        lines: I,
        shift: &[f64],
        sum: &mut [f64],
        sq: &mut [f64],
    ) {
        dispatch(ColSums {
            x,
            lines,
            shift,
            sum,
            sq,
        });
    }
    #[inline(always)]
    fn col_dsums<I: Iterator<Item = usize> + Clone>(
        x: &[f32],
        dy: &[f32],
        lines: I,
        c: (&[f32], &[f32], &[f32]),
        sg: &mut [f64],
        sgx: &mut [f64],
    ) {
        dispatch(ColDSums {
            x,
            dy,
            lines,
            c,
            sg,
            sgx,
        });
    }
    #[inline(always)]
    fn col_affine(
        x: &[f32],
        out: &mut [f32],
        start: usize,
        (m, a, b): (&[f32], &[f32], &[f32]),
        stream: bool,
    ) -> bool {
        dispatch(ColRun::<false> {
            x,
            dy: x,
            out,
            start,
            k: (m, a, b, b),
            stream,
        })
    }
    #[inline(always)]
    fn col_dx(
        x: &[f32],
        dy: &[f32],
        out: &mut [f32],
        start: usize,
        (c, m, a, b): (&[f32], &[f32], &[f32], &[f32]),
        stream: bool,
    ) -> bool {
        dispatch(ColRun::<true> {
            x,
            dy,
            out,
            start,
            k: (m, a, b, c),
            stream,
        })
    }
    #[inline(always)]
    fn affine_then_sums(
        x: &[f32],
        y: &mut [f32],
        c: (f32, f32, f32),
        p: Option<(&[f32], Option<&[f32]>)>,
        next: (&[f32], bool),
        shift: (f64, bool),
        stream: bool,
    ) -> Option<(f64, f64)> {
        // Streaming and Σd as type parameters (see `sums::AffineThenSums`).
        let (shift, center) = shift;
        macro_rules! at {
            ($st:literal, $d:literal) => {
                Some(dispatch(sums::AffineThenSums::<$st, $d> {
                    x,
                    y,
                    c,
                    p,
                    next,
                    shift,
                }))
            };
        }
        match (stream, center) {
            (true, true) => at!(true, true),
            (true, false) => at!(true, false),
            (false, true) => at!(false, true),
            (false, false) => at!(false, false),
        }
    }
    #[inline(always)]
    fn dsums_rows<const R: usize>(
        rows: Rows<'_, f32, R>,
        p: Option<RowParam<'_, f32>>,
    ) -> [(f64, f64); R] {
        dispatch(DSumsF32 { rows, p })
    }
    #[inline(always)]
    fn dx_then_dsums<const R: usize>(
        cur: DxRows<'_, f32, R>,
        next: Rows<'_, f32, R>,
        p: Option<RowParam<'_, f32>>,
    ) -> [(f64, f64); R] {
        dispatch(DxThenDSums { cur, next, p })
    }
}

impl Elem for f64 {
    #[inline(always)]
    fn row_sums(x: &[f64], shift: f64) -> (f64, f64) {
        dispatch(SumsF64 { x, shift })
    }
    #[inline(always)]
    fn row_dsums(
        x: &[f64],
        dy: &[f64],
        c: (f64, f64, f64),
        p: Option<RowParam<'_, f64>>,
    ) -> (f64, f64) {
        // f64 rows: the staging loop is plain f64 arithmetic the compiler vectorizes.
        let w = stage_portable(x, dy, c, p);
        dispatch(DSumsF64 { x, dy, c, w })
    }
}
