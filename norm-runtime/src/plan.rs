//! The canonical reduction plan: a stage's configuration applied to an input shape.
//!
//! The input (in standard layout) is viewed through its *logical axes*: the input axes, with
//! `C` split into `(G, C/G)` when the stage has `groups`. Every logical axis is kept (it
//! indexes statistics) or reduced, and carries three strides: into the input, into the
//! statistics (standard layout over the kept axes) and into the affine parameters.
//! Neighbouring axes whose strides all merge are fused, so every variant becomes a short
//! list of [`Dim`]s whose innermost entry is a contiguous *line* of the input along which
//! the statistics index and the parameter index each either stay put or advance by one.
//! Rows (layer/instance/group norm), columns (channels-last batch norm) and the sandwich
//! (NCHW batch norm) are the common shapes of that list; any other declaration runs through
//! the same code.

use norm_spec::{shapes, Affine, ParamAxis, Spec, Stage, MAX_RANK};

/// A fixed-capacity list of axes (no allocation on the hot path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AxisList {
    len: usize,
    items: [ParamAxis; MAX_DIMS],
}

impl Default for AxisList {
    fn default() -> Self {
        AxisList::new()
    }
}

impl AxisList {
    fn new() -> Self {
        AxisList {
            len: 0,
            items: [ParamAxis::Group; MAX_DIMS],
        }
    }
    fn push(&mut self, a: ParamAxis) {
        self.items[self.len] = a;
        self.len += 1;
    }
    pub fn as_slice(&self) -> &[ParamAxis] {
        &self.items[..self.len]
    }
}

/// [`shapes::stats_axes`] without allocating.
fn stats_axes(spec: &Spec, stage: &Stage) -> AxisList {
    let mut out = AxisList::new();
    for i in 0..spec.input.len() {
        if stage.groups.is_some() && Some(i) == spec.channel {
            out.push(ParamAxis::Group);
        } else if !stage.reduces(i) {
            out.push(ParamAxis::Input(i));
        }
    }
    out
}

/// The most logical axes a plan can have (`C` split into two).
pub(crate) const MAX_DIMS: usize = MAX_RANK + 1;

/// One (merged) axis of the element space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dim {
    /// Number of indices.
    pub size: usize,
    /// Stride into the (standard-layout) input.
    pub xs: usize,
    /// Stride into the statistics (0 on reduced axes).
    pub ss: usize,
    /// Stride into the affine parameters (0 where they do not vary, or when folded).
    pub ps: usize,
}

/// One kept axis of the statistics space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StatDim {
    pub size: usize,
    /// Stride into the affine parameters (or the external scale/shift).
    pub ps: usize,
    /// Stride into the running statistics (0 on the batch axis).
    pub rs: usize,
}

/// A fixed-capacity list of sizes (no allocation on the hot path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    pub len: usize,
    pub dims: [usize; MAX_DIMS],
}

impl Shape {
    fn push(&mut self, n: usize) {
        self.dims[self.len] = n;
        self.len += 1;
    }
    pub fn as_slice(&self) -> &[usize] {
        &self.dims[..self.len]
    }
    /// The number of elements (the product was checked when the plan was built).
    pub fn numel(&self) -> usize {
        product(self.as_slice().iter().copied()).unwrap_or(usize::MAX)
    }
}

/// The checked product of `sizes` (zero if any is zero, whatever the others).
fn product(sizes: impl Iterator<Item = usize> + Clone) -> Option<usize> {
    if sizes.clone().any(|n| n == 0) {
        return Some(0);
    }
    sizes
        .into_iter()
        .try_fold(1usize, |acc, n| acc.checked_mul(n))
}

/// Standard-layout strides of `sizes`; `None` if a stride overflows `usize`.
fn strides_of(sizes: &[usize]) -> Option<[usize; MAX_DIMS]> {
    let mut out = [0; MAX_DIMS];
    let mut acc = 1usize;
    for i in (0..sizes.len()).rev() {
        out[i] = acc;
        // The stride past the outermost axis is never used: an empty array stays valid.
        acc = if sizes[i] == 0 {
            0
        } else {
            acc.checked_mul(sizes[i])?
        };
    }
    Some(out)
}

/// Which part of an input axis a logical axis is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Whole,
    Group,
    WithinGroup,
}

#[derive(Clone, Copy, Debug)]
struct Logical {
    input: usize,
    part: Part,
    size: usize,
    kept: bool,
}

/// The stride of a logical axis inside an array indexed by `axes` (param or running axes).
fn stride_in(
    axes: &[ParamAxis],
    strides: &[usize; MAX_DIMS],
    axis: &Logical,
    within_group: usize,
) -> usize {
    let pos = |target: ParamAxis| axes.iter().position(|&a| a == target);
    match axis.part {
        Part::Whole => pos(ParamAxis::Input(axis.input)).map_or(0, |k| strides[k]),
        Part::Group => {
            if let Some(k) = pos(ParamAxis::Input(axis.input)) {
                // At most the parameter array's size, a product checked by the caller.
                strides[k].saturating_mul(within_group)
            } else {
                pos(ParamAxis::Group).map_or(0, |k| strides[k])
            }
        }
        Part::WithinGroup => pos(ParamAxis::Input(axis.input)).map_or(0, |k| strides[k]),
    }
}

/// Everything of a spec, a stage and an input shape that [`Plan::new`] reads: equal keys
/// give equal plans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PlanKey {
    shape: Shape,
    channel: Option<usize>,
    batch: Option<usize>,
    groups: Option<usize>,
    /// The stage's reduced axes (bit i: input axis i).
    axes: u16,
    /// 0: no affine parameters, 1: `params`, 2: external.
    affine: u8,
    params: AxisList,
    running_stats: bool,
}

impl PlanKey {
    /// The key of `stage` of `spec` on `shape`; `None` beyond the lists' capacity.
    fn of(spec: &Spec, stage: &Stage, shape: &[usize]) -> Option<PlanKey> {
        if shape.len() > MAX_DIMS || spec.input.len() != shape.len() {
            return None;
        }
        let mut key = PlanKey {
            channel: spec.channel,
            batch: spec.batch,
            groups: stage.groups,
            axes: stage.axes,
            running_stats: stage.running_stats,
            ..PlanKey::default()
        };
        shape.iter().for_each(|&n| key.shape.push(n));
        match &stage.affine {
            Affine::None => {}
            Affine::Axes(axes) if axes.len() <= MAX_DIMS => {
                key.affine = 1;
                axes.iter().for_each(|&a| key.params.push(a));
            }
            Affine::Axes(_) => return None,
            Affine::External => key.affine = 2,
        }
        Some(key)
    }
}

/// Plans kept per thread (and element type) by their [`PlanKey`].
const CACHED: usize = 4;

/// The plans of the last [`CACHED`] distinct (spec, stage, shape) keys a thread built: a
/// call on the shape of one of them copies its plan instead of deriving it again. Keyed by
/// content (not by the spec's address or fingerprint), so a hit is always the plan
/// [`Plan::new`] would build.
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    slots: [(PlanKey, Plan); CACHED],
    used: usize,
    next: usize,
}

impl PlanCache {
    /// [`Plan::new`] into `out`, from the cache where it holds the key; `None` on an
    /// overflowing size (nothing cached then).
    pub(crate) fn plan_into(
        &mut self,
        (spec, stage, shape): (&Spec, &Stage, &[usize]),
        out: &mut Plan,
    ) -> Option<()> {
        let Some(key) = PlanKey::of(spec, stage, shape) else {
            *out = Plan::new(spec, stage, shape)?;
            return Some(());
        };
        if let Some((_, plan)) = self.slots[..self.used].iter().find(|(k, _)| *k == key) {
            *out = *plan;
            return Some(());
        }
        *out = Plan::new(spec, stage, shape)?;
        self.slots[self.next] = (key, *out);
        self.next = (self.next + 1) % CACHED;
        self.used = (self.used + 1).min(CACHED);
        Some(())
    }
}

/// A stage applied to one input shape.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Plan {
    /// Element-space dims, outer to inner; at least one.
    pub dims: [Dim; MAX_DIMS],
    pub ndims: usize,
    /// Kept logical axes, outer to inner (the statistics space).
    pub sdims: [StatDim; MAX_DIMS],
    pub nsdims: usize,
    /// Number of statistics groups.
    pub groups: usize,
    /// Values per statistics group.
    pub group_len: usize,
    /// Number of input elements.
    pub numel: usize,
    /// The parameters vary only along kept axes: they fold into per-group coefficients.
    pub foldable: bool,
    /// Shape of the statistics (kept logical axes).
    pub stat_shape: Shape,
    /// Shape of gamma/beta (or the external scale/shift).
    pub param_shape: Shape,
    /// Shape of the running statistics.
    pub running_shape: Shape,
    /// The axes of the statistics and of the running statistics.
    pub stat_axes: AxisList,
    pub running_axes: AxisList,
    /// The input shape the plan was built for.
    pub shape: Shape,
}

impl Plan {
    /// The plan of `stage` on an input of `shape` (already checked against the spec);
    /// `None` if a size product overflows `usize` (every product here is checked).
    pub fn new(spec: &Spec, stage: &Stage, shape: &[usize]) -> Option<Plan> {
        let groups = stage.groups.unwrap_or(1);
        let mut logical = [Logical {
            input: 0,
            part: Part::Whole,
            size: 0,
            kept: false,
        }; MAX_DIMS];
        let mut nl = 0;
        let mut within_group = 1;
        for (i, &n) in shape.iter().enumerate() {
            let reduced = stage.reduces(i);
            if stage.groups.is_some() && Some(i) == spec.channel {
                within_group = n / groups;
                logical[nl] = Logical {
                    input: i,
                    part: Part::Group,
                    size: groups,
                    kept: true,
                };
                logical[nl + 1] = Logical {
                    input: i,
                    part: Part::WithinGroup,
                    size: within_group,
                    kept: false,
                };
                nl += 2;
            } else {
                logical[nl] = Logical {
                    input: i,
                    part: Part::Whole,
                    size: n,
                    kept: !reduced,
                };
                nl += 1;
            }
        }
        let logical = &logical[..nl];

        let stat_axes = stats_axes(spec, stage);
        let mut param_axes = AxisList::new();
        match &stage.affine {
            Affine::Axes(axes) => axes.iter().for_each(|&a| param_axes.push(a)),
            Affine::External => param_axes = stat_axes,
            Affine::None => {}
        }
        let mut running_axes = AxisList::new();
        if stage.running_stats {
            for &a in stat_axes.as_slice() {
                if !matches!(a, ParamAxis::Input(i) if Some(i) == spec.batch) {
                    running_axes.push(a);
                }
            }
        }
        let mut stat_shape = Shape::default();
        let mut param_shape = Shape::default();
        let mut running_shape = Shape::default();
        for &a in stat_axes.as_slice() {
            stat_shape.push(shapes::axis_size(stage, a, shape));
        }
        for &a in param_axes.as_slice() {
            param_shape.push(shapes::axis_size(stage, a, shape));
        }
        for &a in running_axes.as_slice() {
            running_shape.push(shapes::axis_size(stage, a, shape));
        }
        // Every size the plan derives is a checked product (an overflow: `None`).
        product(param_shape.as_slice().iter().copied())?;
        product(running_shape.as_slice().iter().copied())?;
        let pstrides = strides_of(param_shape.as_slice())?;
        let rstrides = strides_of(running_shape.as_slice())?;

        // Logical strides.
        let mut sizes = Shape::default();
        let mut kept_sizes = Shape::default();
        for l in logical {
            sizes.push(l.size);
            if l.kept {
                kept_sizes.push(l.size);
            }
        }
        let xstrides = strides_of(sizes.as_slice())?;
        let sstrides_kept = strides_of(kept_sizes.as_slice())?;
        let mut full = [Dim::default(); MAX_DIMS];
        let mut sdims = [StatDim::default(); MAX_DIMS];
        let mut nsdims = 0;
        let mut foldable = true;
        for (k, l) in logical.iter().enumerate() {
            let ps = stride_in(param_axes.as_slice(), &pstrides, l, within_group);
            let ss = if l.kept {
                let s = sstrides_kept[nsdims];
                sdims[nsdims] = StatDim {
                    size: l.size,
                    ps,
                    rs: stride_in(running_axes.as_slice(), &rstrides, l, within_group),
                };
                nsdims += 1;
                s
            } else {
                // A reduced axis indexing the parameters (an empty one too: then there is
                // no parameter to fold per group).
                if ps != 0 && l.size != 1 {
                    foldable = false;
                }
                0
            };
            full[k] = Dim {
                size: l.size,
                xs: xstrides[k],
                ss,
                ps,
            };
        }
        if foldable {
            for d in &mut full[..nl] {
                d.ps = 0;
            }
        }

        // Drop size-1 axes, then merge neighbours whose strides all agree.
        let mut dims = [Dim::default(); MAX_DIMS];
        let mut ndims = 0;
        for d in full[..nl].iter().filter(|d| d.size != 1) {
            if ndims > 0 {
                let outer = dims[ndims - 1];
                let spans = |inner: usize, outer: usize| inner.checked_mul(d.size) == Some(outer);
                if spans(d.xs, outer.xs) && spans(d.ss, outer.ss) && spans(d.ps, outer.ps) {
                    dims[ndims - 1] = Dim {
                        size: outer.size.checked_mul(d.size)?,
                        xs: d.xs,
                        ss: d.ss,
                        ps: d.ps,
                    };
                    continue;
                }
            }
            dims[ndims] = *d;
            ndims += 1;
        }
        if ndims == 0 {
            dims[0] = Dim {
                size: 1,
                xs: 1,
                ss: 0,
                ps: 0,
            };
            ndims = 1;
        }
        let numel = product(shape.iter().copied())?;
        let mut input_shape = Shape::default();
        shape.iter().for_each(|&n| input_shape.push(n));
        let group_len = product(logical.iter().filter(|l| !l.kept).map(|l| l.size))?;
        Some(Plan {
            dims,
            ndims,
            sdims,
            nsdims,
            groups: product(stat_shape.as_slice().iter().copied())?,
            group_len,
            numel,
            foldable,
            stat_shape,
            param_shape,
            running_shape,
            stat_axes,
            running_axes,
            shape: input_shape,
        })
    }

    /// The innermost dim: the contiguous line.
    pub fn line(&self) -> Dim {
        self.dims[self.ndims - 1]
    }

    /// The parameter and running-statistics offsets of statistics group `s`.
    pub fn group_offsets(&self, mut s: usize) -> (usize, usize) {
        let (mut p, mut r) = (0, 0);
        for d in self.sdims[..self.nsdims].iter().rev() {
            // No division once the rest is within the dim (always, for one kept dim): the
            // forward pass asks once per group.
            let i = if s < d.size {
                std::mem::take(&mut s)
            } else {
                let i = s % d.size;
                s /= d.size;
                i
            };
            p += i * d.ps;
            r += i * d.rs;
        }
        (p, r)
    }

    /// Whether statistics group `s` has parameter offset `s` for every `s` (the parameters
    /// are laid out like the statistics: BatchNorm's γ per channel), so the offsets of
    /// [`group_offsets`](Self::group_offsets) need no arithmetic.
    pub fn params_follow_groups(&self) -> bool {
        Self::standard(self.sdims[..self.nsdims].iter().map(|d| (d.size, d.ps)))
    }

    /// Whether statistics group `s` has running-statistics offset `s` for every `s`.
    pub fn running_follow_groups(&self) -> bool {
        Self::standard(self.sdims[..self.nsdims].iter().map(|d| (d.size, d.rs)))
    }

    /// Whether `(size, stride)` pairs, outer to inner, are standard-layout strides (a size-1
    /// dim may have any stride).
    fn standard(dims: impl DoubleEndedIterator<Item = (usize, usize)>) -> bool {
        let mut stride = 1usize;
        for (size, s) in dims.rev() {
            if size > 1 && s != stride {
                return false;
            }
            stride = stride.saturating_mul(size);
        }
        true
    }

    /// Calls `f(s, p, r)` for every statistics group `s` in order, with its parameter offset
    /// `p` and its running-statistics offset `r`.
    pub fn for_each_group(&self, mut f: impl FnMut(usize, usize, usize)) {
        let sd = &self.sdims[..self.nsdims];
        let mut idx = [0usize; MAX_DIMS];
        for s in 0..self.groups {
            let (mut p, mut r) = (0, 0);
            for (d, &i) in sd.iter().zip(&idx) {
                p += i * d.ps;
                r += i * d.rs;
            }
            f(s, p, r);
            for k in (0..sd.len()).rev() {
                idx[k] += 1;
                if idx[k] < sd[k].size {
                    break;
                }
                idx[k] = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache gives what `Plan::new` builds, for specs that differ only in what the plan
    /// reads (reduced axes, groups, affine axes, running statistics) on the same shapes, in
    /// an order that evicts entries and returns to them.
    #[test]
    fn cached_plans_are_the_plans_new_builds() {
        let decls = [
            r#"input = "N,C", axes = "N", affine, running_stats"#,
            r#"input = "N,C", axes = "C", affine = "C""#,
            r#"input = "N,C", axes = "N""#,
            r#"input = "N,C,H,W", axes = "C,H,W", groups = 2, affine"#,
            r#"input = "N,C,H,W", axes = "C,H,W", groups = 4, affine"#,
            r#"input = "N,C,H,W", axes = "N,H,W", affine, running_stats"#,
            r#"input = "N,C,H,W", axes = "H,W""#,
        ];
        let specs: Vec<Spec> = decls
            .iter()
            .map(|d| norm_spec::parse_str(d).unwrap())
            .collect();
        let shapes2: [&[usize]; 3] = [&[32, 128], &[4, 8], &[1, 8]];
        let shapes4: [&[usize]; 3] = [&[2, 8, 3, 3], &[1, 8, 1, 5], &[3, 4, 2, 2]];
        let mut cache = PlanCache::default();
        let mut misses = 0;
        for round in 0..3 {
            for spec in &specs {
                let shapes = if spec.input.len() == 2 {
                    &shapes2
                } else {
                    &shapes4
                };
                for shape in shapes.iter() {
                    let stage = &spec.stages[0];
                    let expected = Plan::new(spec, stage, shape).unwrap();
                    let before = cache.used;
                    let mut got = Plan::default();
                    cache.plan_into((spec, stage, shape), &mut got).unwrap();
                    misses += usize::from(cache.used != before || cache.used == CACHED);
                    assert_eq!(
                        format!("{got:?}"),
                        format!("{expected:?}"),
                        "{spec}, {shape:?}, round {round}"
                    );
                }
            }
        }
        assert!(misses > CACHED, "the rounds evict entries");
        // A repeated call hits: the same plan without a new entry.
        let (spec, shape) = (&specs[0], [32usize, 128]);
        let mut got = Plan::default();
        cache
            .plan_into((spec, &spec.stages[0], &shape), &mut got)
            .unwrap();
        let next = cache.next;
        cache
            .plan_into((spec, &spec.stages[0], &shape), &mut got)
            .unwrap();
        assert_eq!(cache.next, next, "a hit adds no entry");
        let expected = Plan::new(spec, &spec.stages[0], &shape).unwrap();
        assert_eq!(format!("{got:?}"), format!("{expected:?}"));
    }
}
