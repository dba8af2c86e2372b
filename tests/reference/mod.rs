//! A plain, obviously-correct f64 reference of normkit's numerical semantics, written from
//! CONTRACT.md with explicit index loops over standard-layout data, independent of the
//! library (it never looks at `norm_spec::Spec`; it works from the test's own model of the
//! declaration).
//!
//! - Statistics group of an element: its indices on the kept axes, with the group axis `G`
//!   (= `c / (C / groups)`) at the position of `C` when the stage has `groups`.
//! - mean (0 without centering), variance (biased, unbiased, or the mean square without
//!   centering), σ-term by `eps_mode`, y = x̂·γ[param index] + β[param index].
//! - Gradients are exact: the same forward code runs on forward-mode dual numbers, one
//!   seeded input at a time, and the vector–Jacobian product is summed explicitly. The test
//!   file checks this machinery against central finite differences.
//! - Running statistics: unbiased variance in the update, per-sample statistics averaged over
//!   `N`, m = 1/num_batches_tracked for cumulative momentum.

use std::ops::{Add, Div, Mul, Neg, Sub};

// ------------------------------------------------------------------ the declaration model

/// An axis that indexes parameters: an input axis or the group axis `G`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PAxis {
    In(usize),
    G,
}

/// How `affine` is written.
#[derive(Clone, Debug, PartialEq)]
pub enum AffineM {
    /// Not written.
    Absent,
    /// `affine = false`.
    Off,
    /// `affine` (bare) or `affine = true`: per channel.
    Flag { bare: bool },
    /// `affine = "…"`, in the written order.
    List(Vec<PAxis>),
    /// `affine = external`.
    External,
}

/// The `momentum` value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mom {
    Exp(f64),
    Cumulative,
}

/// How a boolean flag key is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagM {
    /// Not written.
    Absent,
    /// `key = false`.
    False,
    /// `key`.
    Bare,
    /// `key = true`.
    True,
}

impl FlagM {
    pub fn on(self) -> bool {
        matches!(self, FlagM::Bare | FlagM::True)
    }
}

/// One stage as the test generated it.
#[derive(Clone, Debug)]
pub struct StageM {
    pub name: &'static str,
    /// Whether input axis `i` is reduced.
    pub reduce: Vec<bool>,
    /// The reduced axes in the order written in `axes = "…"`.
    pub axes_written: Vec<usize>,
    pub groups: Option<usize>,
    pub affine: AffineM,
    /// `bias = …` if written.
    pub bias: Option<bool>,
    /// `center = …` if written.
    pub center: Option<bool>,
    /// `eps = …` if written (default 1e-5).
    pub eps: Option<f64>,
    /// `eps_mode = "std"` (`Some(true)`) / `"var"` (`Some(false)`) if written.
    pub std: Option<bool>,
    pub unbiased: FlagM,
    pub running: FlagM,
    /// `momentum = …` if written (default 0.1).
    pub momentum: Option<Mom>,
    /// A permutation of the stage's key slots: the order the keys are written in.
    pub key_order: Vec<usize>,
}

impl StageM {
    pub fn center(&self) -> bool {
        self.center != Some(false)
    }
    pub fn eps(&self) -> f64 {
        self.eps.unwrap_or(1e-5)
    }
    pub fn eps_std(&self) -> bool {
        self.std == Some(true)
    }
    pub fn unbiased(&self) -> bool {
        self.unbiased.on()
    }
    pub fn running(&self) -> bool {
        self.running.on()
    }
    pub fn momentum(&self) -> Mom {
        self.momentum.unwrap_or(Mom::Exp(0.1))
    }
    pub fn external(&self) -> bool {
        self.affine == AffineM::External
    }
    /// Whether the stage has learnable γ.
    pub fn has_params(&self) -> bool {
        matches!(self.affine, AffineM::Flag { .. } | AffineM::List(_))
    }
    /// Whether the stage has learnable β.
    pub fn has_bias(&self) -> bool {
        self.has_params() && self.bias != Some(false)
    }
}

/// The whole declaration plus the input shape it is run on.
#[derive(Clone, Debug)]
pub struct Model {
    pub names: Vec<&'static str>,
    pub shape: Vec<usize>,
    /// Whether the size is fixed in `input` (`"C=4"`).
    pub fixed: Vec<bool>,
    pub stages: Vec<StageM>,
    pub chain: bool,
    /// Where `input = …` goes among the top-level keys of a single-stage layer (or before /
    /// after `chain(…)`).
    pub input_slot: usize,
}

fn fmt_f64(v: f64) -> String {
    // `{:?}` is the shortest text that round-trips.
    format!("{v:?}")
}

impl Model {
    pub fn c(&self) -> Option<usize> {
        self.names.iter().position(|n| *n == "C")
    }
    pub fn n(&self) -> Option<usize> {
        self.names.iter().position(|n| *n == "N")
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn axis_name(&self, a: PAxis) -> &'static str {
        match a {
            PAxis::In(i) => self.names[i],
            PAxis::G => "G",
        }
    }

    fn stage_keys(&self, st: &StageM) -> Vec<String> {
        let mut slots: Vec<Option<String>> = vec![None; 11];
        let axes: Vec<&str> = st.axes_written.iter().map(|&i| self.names[i]).collect();
        slots[0] = Some(format!("axes = \"{}\"", axes.join(",")));
        slots[1] = st.groups.map(|g| format!("groups = {g}"));
        slots[2] = match &st.affine {
            AffineM::Absent => None,
            AffineM::Off => Some("affine = false".into()),
            AffineM::Flag { bare: true } => Some("affine".into()),
            AffineM::Flag { bare: false } => Some("affine = true".into()),
            AffineM::List(l) => {
                let names: Vec<&str> = l.iter().map(|&a| self.axis_name(a)).collect();
                Some(format!("affine = \"{}\"", names.join(",")))
            }
            AffineM::External => Some("affine = external".into()),
        };
        slots[3] = st.bias.map(|b| format!("bias = {b}"));
        slots[4] = st.center.map(|c| format!("center = {c}"));
        slots[5] = st.eps.map(|e| format!("eps = {}", fmt_f64(e)));
        slots[6] = st
            .std
            .map(|s| format!("eps_mode = \"{}\"", if s { "std" } else { "var" }));
        let flag = |name: &str, f: FlagM| match f {
            FlagM::Absent => None,
            FlagM::False => Some(format!("{name} = false")),
            FlagM::Bare => Some(name.to_string()),
            FlagM::True => Some(format!("{name} = true")),
        };
        slots[7] = flag("unbiased", st.unbiased);
        slots[8] = flag("running_stats", st.running);
        slots[9] = st.momentum.map(|m| match m {
            Mom::Exp(v) => format!("momentum = {}", fmt_f64(v)),
            Mom::Cumulative => "momentum = \"cumulative\"".into(),
        });
        let mut out = Vec::new();
        for &k in &st.key_order {
            if let Some(s) = slots.get(k).cloned().flatten() {
                out.push(s);
            }
        }
        out
    }

    /// The declaration text (`NormSpec::parse` syntax).
    pub fn text(&self) -> String {
        let input: Vec<String> = self
            .names
            .iter()
            .zip(&self.shape)
            .zip(&self.fixed)
            .map(|((n, s), f)| {
                if *f {
                    format!("{n}={s}")
                } else {
                    n.to_string()
                }
            })
            .collect();
        let input = format!("input = \"{}\"", input.join(","));
        let mut keys = if self.chain {
            let stages: Vec<String> = self
                .stages
                .iter()
                .map(|st| format!("{}({})", st.name, self.stage_keys(st).join(", ")))
                .collect();
            vec![format!("chain({})", stages.join(", "))]
        } else {
            self.stage_keys(&self.stages[0])
        };
        let at = self.input_slot.min(keys.len());
        keys.insert(at, input);
        keys.join(", ")
    }

    /// The `(axis, size)` arguments of `DynNorm::new`: every axis whose size is not fixed.
    pub fn sizes(&self) -> Vec<(&'static str, usize)> {
        (0..self.names.len())
            .filter(|&i| !self.fixed[i])
            .map(|i| (self.names[i], self.shape[i]))
            .collect()
    }

    /// The axes of the statistics of `st`: kept axes in memory order, `G` where `C` is.
    pub fn stat_axes(&self, st: &StageM) -> Vec<PAxis> {
        let mut out = Vec::new();
        for i in 0..self.names.len() {
            if st.groups.is_some() && Some(i) == self.c() {
                out.push(PAxis::G);
            } else if !st.reduce[i] {
                out.push(PAxis::In(i));
            }
        }
        out
    }

    /// The axes of γ/β in memory order (`G` sorts where `C` is), if the stage has them.
    pub fn param_axes(&self, st: &StageM) -> Option<Vec<PAxis>> {
        match &st.affine {
            AffineM::Flag { .. } => Some(vec![PAxis::In(self.c().expect("affine flag needs C"))]),
            AffineM::List(l) => {
                let mut l = l.clone();
                let c = self.c().unwrap_or(0);
                l.sort_by_key(|a| match a {
                    PAxis::In(i) => *i,
                    PAxis::G => c,
                });
                Some(l)
            }
            _ => None,
        }
    }

    /// The axes of the running statistics (statistics axes without `N`).
    pub fn run_axes(&self, st: &StageM) -> Option<Vec<PAxis>> {
        if !st.running() {
            return None;
        }
        let n = self.n();
        Some(
            self.stat_axes(st)
                .into_iter()
                .filter(|a| !matches!(a, PAxis::In(i) if Some(*i) == n))
                .collect(),
        )
    }

    fn size_of(&self, st: &StageM, a: PAxis) -> usize {
        match a {
            PAxis::In(i) => self.shape[i],
            PAxis::G => st.groups.expect("G needs groups"),
        }
    }

    fn coord(&self, st: &StageM, a: PAxis, idx: &[usize]) -> usize {
        match a {
            PAxis::In(i) => idx[i],
            PAxis::G => {
                let c = self.c().expect("groups needs C");
                idx[c] / (self.shape[c] / st.groups.expect("G needs groups"))
            }
        }
    }

    pub fn shape_of(&self, st: &StageM, axes: &[PAxis]) -> Vec<usize> {
        axes.iter().map(|&a| self.size_of(st, a)).collect()
    }

    /// Row-major flat index of `idx` restricted to `axes`.
    fn flat(&self, st: &StageM, axes: &[PAxis], idx: &[usize]) -> usize {
        let mut f = 0;
        for &a in axes {
            f = f * self.size_of(st, a) + self.coord(st, a, idx);
        }
        f
    }

    /// Number of statistics groups of stage `st` on this shape.
    pub fn stage_groups(&self, st: &StageM) -> usize {
        let axes = self.stat_axes(st);
        self.shape_of(st, &axes).iter().product()
    }

    /// Values per statistics group of stage `st` on this shape (from the definition).
    pub fn group_len(&self, st: &StageM) -> usize {
        let mut n = 1;
        for i in 0..self.names.len() {
            if st.reduce[i] {
                n *= self.shape[i];
                if st.groups.is_some() && Some(i) == self.c() {
                    n /= st.groups.unwrap_or(1);
                }
            }
        }
        n
    }
}

/// Row-major multi-index of flat index `e` in `shape`.
pub fn unravel(mut e: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        idx[k] = e % shape[k];
        e /= shape[k];
    }
    idx
}

/// Per element (standard layout): statistics, parameter and running-statistics indices.
#[derive(Clone, Debug)]
pub struct Geo {
    pub stat: Vec<usize>,
    pub param: Vec<usize>,
    pub stat_shape: Vec<usize>,
    pub param_shape: Option<Vec<usize>>,
    pub run_shape: Option<Vec<usize>>,
    pub n_stat: usize,
    pub group_len: usize,
    /// The running-statistics index of each statistics group.
    pub run_of_stat: Vec<usize>,
}

pub fn geometry(m: &Model, st: &StageM) -> Geo {
    let sa = m.stat_axes(st);
    let pa = m.param_axes(st);
    let ra = m.run_axes(st);
    let stat_shape = m.shape_of(st, &sa);
    let n_stat: usize = stat_shape.iter().product();
    let numel = m.numel();
    let (mut stat, mut param) = (vec![0; numel], vec![0; numel]);
    let mut count = vec![0usize; n_stat];
    let mut run_of_stat = vec![0; n_stat];
    for e in 0..numel {
        let idx = unravel(e, &m.shape);
        stat[e] = m.flat(st, &sa, &idx);
        count[stat[e]] += 1;
        if let Some(pa) = &pa {
            param[e] = m.flat(st, pa, &idx);
        }
        if let Some(ra) = &ra {
            run_of_stat[stat[e]] = m.flat(st, ra, &idx);
        }
    }
    let group_len = m.group_len(st);
    assert!(
        count.iter().all(|&c| c == group_len),
        "reference geometry: unequal groups"
    );
    Geo {
        stat,
        param,
        param_shape: pa.map(|a| m.shape_of(st, &a)),
        run_shape: ra.map(|a| m.shape_of(st, &a)),
        stat_shape,
        n_stat,
        group_len,
        run_of_stat,
    }
}

// ------------------------------------------------------------------ numbers

/// The arithmetic the reference forward needs: f64 and forward-mode dual numbers.
pub trait Num:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    fn cst(v: f64) -> Self;
    fn sqrt(self) -> Self;
}

impl Num for f64 {
    fn cst(v: f64) -> Self {
        v
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// A forward-mode dual number v + d·ε (ε² = 0) that also carries rounding scales:
///
/// - `m`: the derivative with every partial contribution taken in absolute value (m ≥ |d|):
///   Σ|dy|·m is the magnitude of the terms a gradient sums — the scale of its rounding error
///   where they cancel (a gradient that is exactly 0, e.g. along a constant direction, is
///   computed by any implementation as a cancellation of such terms);
/// - `a`: the first-order rounding scale of the value (its absolute error is ~ε·a): large
///   where the value is a cancellation, e.g. x − μ on data with a large offset;
/// - `mm`: like `m`, with the values' rounding scales in place of their magnitudes (for a
///   gradient like Σ dy·x̂ whose terms x̂ are themselves cancellations).
///
/// Tolerances are `TOL`·(magnitude of the result) plus a noise floor of a few hundred ε
/// times these scales, which only matters where the exact result is ~0.
#[derive(Clone, Copy, Debug)]
pub struct Dual {
    pub v: f64,
    pub d: f64,
    pub m: f64,
    pub a: f64,
    pub mm: f64,
}

impl Dual {
    /// Magnitude including the value's rounding scale.
    fn big(self) -> f64 {
        self.v.abs().max(self.a)
    }
    /// A seeded input: value `v`, derivative `t`.
    pub fn seeded(v: f64, t: f64) -> Dual {
        Dual {
            v,
            d: t,
            m: t.abs(),
            a: v.abs(),
            mm: t.abs(),
        }
    }
}

impl Add for Dual {
    type Output = Dual;
    fn add(self, o: Dual) -> Dual {
        Dual {
            v: self.v + o.v,
            d: self.d + o.d,
            m: self.m + o.m,
            a: self.a + o.a,
            mm: self.mm + o.mm,
        }
    }
}
impl Sub for Dual {
    type Output = Dual;
    fn sub(self, o: Dual) -> Dual {
        Dual {
            v: self.v - o.v,
            d: self.d - o.d,
            m: self.m + o.m,
            a: self.a + o.a,
            mm: self.mm + o.mm,
        }
    }
}
impl Mul for Dual {
    type Output = Dual;
    fn mul(self, o: Dual) -> Dual {
        Dual {
            v: self.v * o.v,
            d: self.d * o.v + self.v * o.d,
            m: self.m * o.v.abs() + self.v.abs() * o.m,
            a: self.a * o.v.abs() + self.v.abs() * o.a,
            mm: self.mm * o.big() + self.big() * o.mm,
        }
    }
}
impl Div for Dual {
    type Output = Dual;
    fn div(self, o: Dual) -> Dual {
        let q = self.v / o.v;
        let den = o.v.abs();
        let aq = (self.a + q.abs() * o.a) / den;
        Dual {
            v: q,
            d: (self.d - q * o.d) / o.v,
            m: (self.m + q.abs() * o.m) / den,
            a: aq,
            mm: (self.mm + q.abs().max(aq) * o.mm) / den,
        }
    }
}
impl Neg for Dual {
    type Output = Dual;
    fn neg(self) -> Dual {
        Dual {
            v: -self.v,
            d: -self.d,
            ..self
        }
    }
}
impl Num for Dual {
    fn cst(v: f64) -> Self {
        Dual {
            v,
            d: 0.0,
            m: 0.0,
            a: v.abs(),
            mm: 0.0,
        }
    }
    fn sqrt(self) -> Self {
        let s = self.v.sqrt();
        let h = 2.0 * s;
        Dual {
            v: s,
            d: self.d / h,
            m: self.m / h,
            a: if s > 0.0 { self.a / h } else { self.a.sqrt() },
            mm: self.mm / h,
        }
    }
}

// ------------------------------------------------------------------ the reference

/// The parameters and state of one stage (flattened, standard layout over their axes).
#[derive(Clone, Debug, Default)]
pub struct RefParams<T> {
    pub gamma: Option<Vec<T>>,
    pub beta: Option<Vec<T>>,
    /// `affine = external`: indexed like the statistics.
    pub scale: Option<Vec<T>>,
    pub shift: Option<Vec<T>>,
    pub rmean: Option<Vec<f64>>,
    pub rvar: Option<Vec<f64>>,
    pub count: u64,
}

impl RefParams<f64> {
    pub fn lift(&self) -> RefParams<Dual> {
        let l = |v: &Option<Vec<f64>>| {
            v.as_ref()
                .map(|v| v.iter().map(|&a| Dual::cst(a)).collect())
        };
        RefParams {
            gamma: l(&self.gamma),
            beta: l(&self.beta),
            scale: l(&self.scale),
            shift: l(&self.shift),
            rmean: self.rmean.clone(),
            rvar: self.rvar.clone(),
            count: self.count,
        }
    }
}

/// Batch moments of one stage: per group (mean, variance as normalized with, M2 = Σ(x−mean)²).
pub fn moments<T: Num>(st: &StageM, geo: &Geo, x: &[T]) -> (Vec<T>, Vec<T>, Vec<T>) {
    let n = geo.group_len as f64;
    let zero = T::cst(0.0);
    let mut mean = vec![zero; geo.n_stat];
    let mut m2 = vec![zero; geo.n_stat];
    if st.center() {
        // mean = x₀ + Σ(x − x₀)/n with x₀ the first value of the group: exact for constant groups.
        let mut first: Vec<Option<T>> = vec![None; geo.n_stat];
        let mut sum = vec![zero; geo.n_stat];
        for (e, &v) in x.iter().enumerate() {
            let s = geo.stat[e];
            let f = *first[s].get_or_insert(v);
            sum[s] = sum[s] + (v - f);
        }
        for s in 0..geo.n_stat {
            let f = first[s].unwrap_or(zero);
            mean[s] = f + sum[s] / T::cst(n);
        }
        for (e, &v) in x.iter().enumerate() {
            let s = geo.stat[e];
            let d = v - mean[s];
            m2[s] = m2[s] + d * d;
        }
    } else {
        for (e, &v) in x.iter().enumerate() {
            let s = geo.stat[e];
            m2[s] = m2[s] + v * v;
        }
    }
    let div = if st.center() && st.unbiased() {
        n - 1.0
    } else {
        n
    };
    let var = m2.iter().map(|&q| q / T::cst(div)).collect();
    (mean, var, m2)
}

/// One stage's forward pass. `eval`: running statistics where the stage has them.
pub fn stage_forward<T: Num>(
    st: &StageM,
    geo: &Geo,
    x: &[T],
    p: &RefParams<T>,
    eval: bool,
) -> Vec<T> {
    let (mean, var) = if eval && st.running() {
        let rm = p.rmean.as_ref().expect("running mean");
        let rv = p.rvar.as_ref().expect("running var");
        let mean = (0..geo.n_stat)
            .map(|s| T::cst(rm[geo.run_of_stat[s]]))
            .collect::<Vec<_>>();
        let var = (0..geo.n_stat)
            .map(|s| T::cst(rv[geo.run_of_stat[s]]))
            .collect::<Vec<_>>();
        (mean, var)
    } else {
        let (mean, var, _) = moments(st, geo, x);
        (mean, var)
    };
    let eps = T::cst(st.eps());
    let denom: Vec<T> = var
        .iter()
        .map(|&v| {
            if st.eps_std() {
                v.sqrt() + eps
            } else {
                (v + eps).sqrt()
            }
        })
        .collect();
    let mut y = Vec::with_capacity(x.len());
    for (e, &v) in x.iter().enumerate() {
        let s = geo.stat[e];
        let xhat = (v - mean[s]) / denom[s];
        let out = match (&p.gamma, &p.scale) {
            (Some(g), _) => {
                let b = p.beta.as_ref().map_or(T::cst(0.0), |b| b[geo.param[e]]);
                xhat * g[geo.param[e]] + b
            }
            (None, Some(sc)) => xhat * sc[s] + p.shift.as_ref().expect("shift")[s],
            (None, None) => xhat,
        };
        y.push(out);
    }
    y
}

/// The whole layer's forward pass.
pub fn forward<T: Num>(
    m: &Model,
    geos: &[Geo],
    x: &[T],
    params: &[RefParams<T>],
    eval: bool,
) -> Vec<T> {
    let mut cur = x.to_vec();
    for (k, st) in m.stages.iter().enumerate() {
        cur = stage_forward(st, &geos[k], &cur, &params[k], eval);
    }
    cur
}

/// The input of every stage in a train-mode forward pass.
pub fn stage_inputs(
    m: &Model,
    geos: &[Geo],
    x: &[f64],
    params: &[RefParams<f64>],
) -> Vec<Vec<f64>> {
    let mut out = vec![x.to_vec()];
    for (k, st) in m.stages.iter().enumerate().take(m.stages.len() - 1) {
        let next = stage_forward(st, &geos[k], &out[k], &params[k], false);
        out.push(next);
    }
    out
}

/// A train-mode forward pass's update of the running statistics (every stage, each on its
/// own input).
pub fn train_update(m: &Model, geos: &[Geo], x: &[f64], params: &mut [RefParams<f64>]) {
    let mut cur = x.to_vec();
    for (k, st) in m.stages.iter().enumerate() {
        let geo = &geos[k];
        if st.running() {
            let (mean, _, m2) = moments(st, geo, &cur);
            let nr: usize = geo
                .run_shape
                .as_ref()
                .expect("running shape")
                .iter()
                .product();
            let (mut sm, mut sv, mut cnt) = (vec![0.0; nr], vec![0.0; nr], vec![0usize; nr]);
            let n = geo.group_len as f64;
            for s in 0..geo.n_stat {
                let r = geo.run_of_stat[s];
                sm[r] += mean[s];
                sv[r] += m2[s] / (n - 1.0);
                cnt[r] += 1;
            }
            let p = &mut params[k];
            p.count += 1;
            let mom = match st.momentum() {
                Mom::Exp(v) => v,
                Mom::Cumulative => 1.0 / p.count as f64,
            };
            let rm = p.rmean.as_mut().expect("running mean");
            let rv = p.rvar.as_mut().expect("running var");
            for r in 0..nr {
                rm[r] = (1.0 - mom) * rm[r] + mom * sm[r] / cnt[r] as f64;
                rv[r] = (1.0 - mom) * rv[r] + mom * sv[r] / cnt[r] as f64;
            }
        }
        cur = stage_forward(st, geo, &cur, &params[k], false);
    }
}

/// One gradient: its values, Σ|dy|·m (the magnitude of the terms it sums) and Σ|dy|·mm (its
/// rounding scale), see [`Dual`].
#[derive(Clone, Debug, Default)]
pub struct Grad {
    pub val: Vec<f64>,
    pub abs: Vec<f64>,
    pub noise: Vec<f64>,
}

impl Grad {
    fn zeros(n: usize) -> Grad {
        Grad {
            val: vec![0.0; n],
            abs: vec![0.0; n],
            noise: vec![0.0; n],
        }
    }
}

/// Σ dy·(∂y/∂seed) with its magnitude and rounding scale.
fn vjp(out: &[Dual], dy: &[f64]) -> (f64, f64, f64) {
    out.iter()
        .zip(dy)
        .fold((0.0, 0.0, 0.0), |(s, a, n), (o, &d)| {
            (s + o.d * d, a + o.m * d.abs(), n + (o.mm + o.m) * d.abs())
        })
}

/// The reference forward's values with their rounding scales (`a`, see [`Dual`]).
pub fn forward_scales(
    m: &Model,
    geos: &[Geo],
    x: &[f64],
    params: &[RefParams<f64>],
    eval: bool,
) -> Vec<f64> {
    let xd: Vec<Dual> = x.iter().map(|&v| Dual::cst(v)).collect();
    let pd: Vec<RefParams<Dual>> = params.iter().map(RefParams::lift).collect();
    forward(m, geos, &xd, &pd, eval)
        .iter()
        .map(|o| o.a)
        .collect()
}

/// Gradients of Σ dy·y with respect to x and to each stage's γ, β (or external scale, shift).
#[derive(Clone, Debug)]
pub struct RefGrads {
    pub dx: Grad,
    /// Per stage: (dγ or dscale, dβ or dshift).
    pub stages: Vec<(Option<Grad>, Option<Grad>)>,
}

/// A parameter of a stage.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    Gamma,
    Beta,
    Scale,
    Shift,
}

fn slot<T>(p: &mut RefParams<T>, s: Slot) -> &mut Option<Vec<T>> {
    match s {
        Slot::Gamma => &mut p.gamma,
        Slot::Beta => &mut p.beta,
        Slot::Scale => &mut p.scale,
        Slot::Shift => &mut p.shift,
    }
}

/// Exact gradients by forward-mode differentiation of [`forward`], one input at a time.
pub fn grads(
    m: &Model,
    geos: &[Geo],
    x: &[f64],
    dy: &[f64],
    params: &[RefParams<f64>],
    eval: bool,
) -> RefGrads {
    let mut xd: Vec<Dual> = x.iter().map(|&v| Dual::cst(v)).collect();
    let mut pd: Vec<RefParams<Dual>> = params.iter().map(RefParams::lift).collect();
    let mut dx = Grad::zeros(x.len());
    for i in 0..x.len() {
        xd[i] = Dual::seeded(x[i], 1.0);
        (dx.val[i], dx.abs[i], dx.noise[i]) = vjp(&forward(m, geos, &xd, &pd, eval), dy);
        xd[i] = Dual::cst(x[i]);
    }
    let mut stages = Vec::new();
    for k in 0..m.stages.len() {
        let mut one = |s: Slot| -> Option<Grad> {
            let len = slot(&mut pd[k], s).as_ref()?.len();
            let mut g = Grad::zeros(len);
            for j in 0..len {
                let v = &mut slot(&mut pd[k], s).as_mut()?[j];
                *v = Dual::seeded(v.v, 1.0);
                (g.val[j], g.abs[j], g.noise[j]) = vjp(&forward(m, geos, &xd, &pd, eval), dy);
                let v = &mut slot(&mut pd[k], s).as_mut()?[j];
                *v = Dual::cst(v.v);
            }
            Some(g)
        };
        let (g, b) = if m.stages[k].external() {
            (one(Slot::Scale), one(Slot::Shift))
        } else {
            (one(Slot::Gamma), one(Slot::Beta))
        };
        stages.push((g, b));
    }
    RefGrads { dx, stages }
}

/// A direction to differentiate in: the input, or one parameter of one stage.
pub enum Dir<'a> {
    X(&'a [f64]),
    Param(usize, Slot, &'a [f64]),
}

/// The directional derivative of Σ dy·y along `dir` (= ⟨gradient, direction⟩), in one
/// forward-mode pass, with its magnitude and rounding scale (see [`Dual`]).
pub fn jvp(
    m: &Model,
    geos: &[Geo],
    x: &[f64],
    dy: &[f64],
    params: &[RefParams<f64>],
    eval: bool,
    dir: Dir<'_>,
) -> (f64, f64, f64) {
    let mut xd: Vec<Dual> = x.iter().map(|&v| Dual::cst(v)).collect();
    let mut pd: Vec<RefParams<Dual>> = params.iter().map(RefParams::lift).collect();
    let seed = |a: &mut [Dual], v: &[f64]| {
        for (a, &t) in a.iter_mut().zip(v) {
            *a = Dual::seeded(a.v, t);
        }
    };
    match dir {
        Dir::X(v) => seed(&mut xd, v),
        Dir::Param(k, s, w) => {
            if let Some(p) = slot(&mut pd[k], s) {
                seed(p, w);
            }
        }
    }
    vjp(&forward(m, geos, &xd, &pd, eval), dy)
}

/// Central finite differences of Σ dy·forward(x) with respect to x, Richardson-extrapolated
/// (steps h and h/2: truncation O(h⁴)) — checks [`grads`].
pub fn fd_dx(
    m: &Model,
    geos: &[Geo],
    x: &[f64],
    dy: &[f64],
    params: &[RefParams<f64>],
    eval: bool,
    h: f64,
) -> Vec<f64> {
    let loss = |x: &[f64]| -> f64 {
        forward(m, geos, x, params, eval)
            .iter()
            .zip(dy)
            .map(|(y, d)| y * d)
            .sum()
    };
    let mut xs = x.to_vec();
    let mut central = |i: usize, h: f64| {
        let v = xs[i];
        xs[i] = v + h;
        let up = loss(&xs);
        xs[i] = v - h;
        let down = loss(&xs);
        xs[i] = v;
        (up - down) / (2.0 * h)
    };
    (0..x.len())
        .map(|i| {
            let (coarse, fine) = (central(i, h), central(i, h / 2.0));
            (4.0 * fine - coarse) / 3.0
        })
        .collect()
}
