//! Runs golden cases through `DynNorm` and compares every output with the PyTorch
//! references, collecting failures and the worst errors instead of stopping at the first.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use normkit::ndarray::{ArrayD, ArrayViewD};
use normkit::{DynNorm, Float, Mode, NormSpec, StageParams};

use super::data::{Case, StageRef, Step, Tensor};

// ---------------------------------------------------------------------------------------
// Tolerances
// ---------------------------------------------------------------------------------------
//
// Every tensor is compared as `max_i |normkit_i − ref_i| ≤ tol · max_i |ref_i|` (the README's
// "relative to the largest reference value"; all-zero references and `exact_zero` outputs are
// compared absolutely, i.e. with `max|ref|` replaced by 1).
//
// f64: `F64_TOL` = 1e-10, the contract's "~1e-10". The references are torch float64
//      (scalar kernels), good to ≤ 1e-13 on ordinary cases. On the stress cases they are
//      themselves only good to ~1e-10: a 60-digit decimal recomputation from the same inputs
//      puts torch's `dgamma` of `stress_ln_nearconst` 1.0e-10 (relative to max|ref|) off the
//      exact value, where normkit is within 2e-17 of it, and torch's `y` of
//      `stress_gn_offset1e4` 1.0e-11 off (conditioning |x|/|x − μ| ≈ 1e5 … 5e5 times the f64
//      rounding of the mean). The stress group is therefore held to `F64_STRESS_TOL` = 1e-9.
//
// f32: `F32_K` × `f32_torch_err[output]` (PyTorch's own float32 error on the same case and
//      output), but never tighter than `F32_FLOOR` = 1e-6 (about 8 ulp of f32 relative to the
//      largest value: torch's error is sometimes exactly 0 or ~3e-8, below what a different
//      but equally good summation order gives). On the stress cases never looser than
//      `F32_STRESS_CAP` = 1e-5, the contract's "~1e-5 relative in f32, including data with a
//      large offset (mean 1e4, std 0.1)": torch rounds the mean to f32 before subtracting it,
//      so its own f32 error there is 1e-5 … 8e-2, and a multiple of it would hide exactly the
//      cancellation the stress cases exist to catch (normkit accumulates in f64).
//
// `running_*_before` use the tolerance of `running_*_after`, `y(forward_eval)` that of `y`.

/// f64: relative to the largest reference value.
pub const F64_TOL: f64 = 1e-10;
/// f64, stress cases (ill-conditioned references, see above).
pub const F64_STRESS_TOL: f64 = 1e-9;
/// f32: multiple of PyTorch's own float32 error.
pub const F32_K: f64 = 4.0;
/// f32: the smallest tolerance (relative to the largest reference value).
pub const F32_FLOOR: f64 = 1e-6;
/// bf16/f16: multiple of PyTorch's own error in the same dtype (issue 16: "at most 2x").
///
/// HALF_STAGE_FLOOR: one exception, the moments of a chain's later stage (`gn.mean` of BCN),
/// which the runner computes on an intermediate rounded to the dtype: on
/// `bcn_2x4x3x3_G2_m0.1` the correctly rounded f64 intermediate's mean, correctly rounded,
/// is 1.6e-3 from the f64 reference while torch's (not correctly rounded) intermediate
/// happens to land 3.6e-4 away. Those are held to one ulp (2⁻⁷ bf16, 2⁻¹⁰ f16) relative to
/// the largest value, or 2x torch if larger.
pub const HALF_K: f64 = 2.0;
/// f32, stress cases: the largest tolerance, whatever torch's own error.
pub const F32_STRESS_CAP: f64 = 1e-5;

/// The precision a case runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prec {
    F64,
    F32,
    /// bf16 or f16 (`tests/half/dtypes.rs`): the case's recorded torch error is in that dtype.
    Half,
}

impl Prec {
    pub fn name(self) -> &'static str {
        match self {
            Prec::F64 => "f64",
            Prec::F32 => "f32",
            Prec::Half => "half",
        }
    }
}

/// The family a case's errors are summarized under: its group, and for the stress group
/// the kind of ill-conditioning.
pub fn family(group: &str, case: &str) -> String {
    if group != "stress" {
        return group.to_string();
    }
    let kind = if case.starts_with("stress_rms") {
        "rms"
    } else if case.contains("nearconst") || case.contains("const_exact") {
        "nearconst"
    } else if case.contains("offset") {
        "offset"
    } else {
        "scale"
    };
    format!("stress/{kind}")
}

/// The relative tolerance of output `key` (of chain stage `stage`) of `case`.
pub fn tolerance(case: &Case, group: &str, prec: Prec, stage: Option<usize>, key: &str) -> f64 {
    match prec {
        Prec::F64 if group == "stress" => F64_STRESS_TOL,
        Prec::F64 => F64_TOL,
        Prec::Half => {
            let tol = HALF_K * case.torch_err(stage, key).unwrap_or(0.0);
            // The moments of a later chain stage's input are computed by the runner on the
            // output of a separate first-stage layer, rounded to the dtype (as torch's
            // reference rounds its intermediate): never tighter than one unit in the last
            // place (relative to the largest value), the error of a correctly rounded
            // intermediate (see HALF_STAGE_FLOOR).
            let later = matches!(stage, Some(k) if k > 0) && (key == "mean" || key == "var");
            if later {
                tol.max(if group == "f16" {
                    2f64.powi(-10)
                } else {
                    2f64.powi(-7)
                })
            } else {
                tol
            }
        }
        Prec::F32 => {
            let torch = case.torch_err(stage, key).unwrap_or(0.0);
            let tol = (F32_K * torch).max(F32_FLOOR);
            if group == "stress" {
                tol.min(F32_STRESS_CAP)
            } else {
                tol
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

/// The worst error seen for one output.
#[derive(Clone, Copy, Debug, Default)]
pub struct Worst {
    /// `max|normkit − ref| / max|ref|` (absolute for all-zero / exact-zero references).
    pub err: f64,
    /// The largest `err / tolerance`: how much of its tolerance the output used.
    pub ratio: f64,
}

/// Whether `new` replaces `old` as the worst value: larger, or NaN. A NaN sticks, so it is
/// never hidden by a later finite value.
fn worse(new: f64, old: f64) -> bool {
    !old.is_nan() && (new.is_nan() || new > old)
}

impl Worst {
    fn merge(&mut self, err: f64, tol: f64) {
        let ratio = err / tol;
        if worse(err, self.err) {
            self.err = err;
        }
        if worse(ratio, self.ratio) {
            self.ratio = ratio;
        }
    }
}

/// Results of one group in one precision.
pub struct Report {
    pub group: String,
    pub prec: Prec,
    pub failures: Vec<String>,
    pub cases: usize,
    pub steps: usize,
    pub tensors: usize,
    /// Per case, in data order: (family, case, output → worst).
    pub per_case: Vec<(String, String, BTreeMap<String, Worst>)>,
}

impl Report {
    pub fn new(group: &str, prec: Prec) -> Self {
        Report {
            group: group.to_string(),
            prec,
            failures: Vec::new(),
            cases: 0,
            steps: 0,
            tensors: 0,
            per_case: Vec::new(),
        }
    }

    /// Per family and output: the worst error over the family's cases, the case it occurred
    /// in, and the largest fraction of its tolerance any case used.
    pub fn by_family(&self) -> BTreeMap<String, BTreeMap<String, (f64, String, f64)>> {
        let mut out: BTreeMap<String, BTreeMap<String, (f64, String, f64)>> = BTreeMap::new();
        for (fam, case, outputs) in &self.per_case {
            let f = out.entry(fam.clone()).or_default();
            for (q, w) in outputs {
                let e = f.entry(q.clone()).or_insert((0.0, String::new(), 0.0));
                if w.err > e.0 || w.err.is_nan() || e.1.is_empty() {
                    e.0 = w.err;
                    e.1 = case.clone();
                }
                if w.ratio > e.2 || w.ratio.is_nan() {
                    e.2 = w.ratio;
                }
            }
        }
        out
    }

    /// The compact per-case and per-family text printed with `--nocapture`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let p = self.prec.name();
        let _ = writeln!(
            s,
            "== golden {} [{p}]: {} cases, {} steps, {} tensors compared, {} failures",
            self.group,
            self.cases,
            self.steps,
            self.tensors,
            self.failures.len()
        );
        for (_, case, outputs) in &self.per_case {
            let _ = write!(s, "  [{p}] {case:<34}");
            for (q, w) in outputs {
                let _ = write!(s, " {q}={:.1e}", w.err);
            }
            let _ = writeln!(s);
        }
        for (fam, outputs) in self.by_family() {
            let _ = writeln!(
                s,
                "  [{p}] family {fam}: worst error (case, largest err/tol)"
            );
            for (q, (err, case, ratio)) in outputs {
                let _ = writeln!(s, "      {q:<24} {err:.2e}  ({case}, {ratio:.3})");
            }
        }
        s
    }

    /// Panics with every failure, if any.
    pub fn finish(self) {
        println!("{}", self.summary());
        if !self.failures.is_empty() {
            let mut msg = format!(
                "golden {} [{}]: {} failure(s):\n",
                self.group,
                self.prec.name(),
                self.failures.len()
            );
            for f in &self.failures {
                msg.push_str("  - ");
                msg.push_str(f);
                msg.push('\n');
            }
            panic!("{msg}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------

fn multi_index(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            idx[i] = flat % n;
            flat /= n;
        }
    }
    idx
}

/// Where in a case a comparison happens, for messages.
struct Ctx<'a> {
    case: &'a Case,
    group: &'a str,
    prec: Prec,
    step: usize,
    mode: &'a str,
}

struct CaseRun<'r> {
    report: &'r mut Report,
    worst: BTreeMap<String, Worst>,
}

impl CaseRun<'_> {
    fn fail(&mut self, ctx: &Ctx<'_>, what: &str) {
        self.report.failures.push(format!(
            "case `{}` [{}] step {} ({}): {what}",
            ctx.case.name,
            ctx.prec.name(),
            ctx.step,
            ctx.mode
        ));
    }

    /// Compares one output. `label` names it in messages and the summary (`bn.dgamma`);
    /// `stage`/`key` select its tolerance and `exact_zero` entry.
    fn compare<T: Float>(
        &mut self,
        ctx: &Ctx<'_>,
        label: &str,
        stage: Option<usize>,
        key: &str,
        actual: ArrayViewD<'_, T>,
        expected: &Tensor,
    ) {
        self.report.tensors += 1;
        if actual.shape() != expected.shape.as_slice() {
            self.fail(
                ctx,
                &format!(
                    "`{label}`: shape {:?}, expected {:?}",
                    actual.shape(),
                    expected.shape
                ),
            );
            return;
        }
        let tol = tolerance(ctx.case, ctx.group, ctx.prec, stage, key);
        let max_ref = expected.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let exact_zero = stage.is_none() && ctx.case.is_exact_zero(key);
        let (scale, how) = if exact_zero {
            (1.0, "absolute (exact_zero)")
        } else if max_ref == 0.0 {
            (1.0, "absolute (all-zero reference)")
        } else {
            (max_ref, "relative to max|ref|")
        };
        let bound = tol * scale;
        let mut worst_diff = 0.0f64;
        let mut worst_at = 0usize;
        for (i, (a, &e)) in actual.iter().zip(&expected.data).enumerate() {
            let d = (a.to_acc() - e).abs();
            if worse(d, worst_diff) {
                worst_diff = d;
                worst_at = i;
            }
        }
        let err = worst_diff / scale;
        self.worst
            .entry(label.to_string())
            .or_default()
            .merge(err, tol);
        // NaN fails.
        if worst_diff.is_nan() || worst_diff > bound {
            let a = actual
                .iter()
                .nth(worst_at)
                .map(|v| v.to_acc())
                .unwrap_or(0.0);
            let e = expected.data[worst_at];
            self.fail(
                ctx,
                &format!(
                    "`{label}` at {:?}: expected {e:e}, actual {a:e}, |diff| {worst_diff:.3e} > \
                     tolerance {bound:.3e} (= {tol:.1e} {how}, max|ref| {max_ref:.3e})",
                    multi_index(worst_at, &expected.shape)
                ),
            );
        }
    }

    /// Compares an optional normkit output with an optional reference; a disagreement on
    /// presence is a failure.
    fn compare_opt<T: Float>(
        &mut self,
        ctx: &Ctx<'_>,
        label: &str,
        stage: Option<usize>,
        key: &str,
        actual: Option<&ArrayD<T>>,
        expected: Option<&Tensor>,
    ) {
        match (actual, expected) {
            (Some(a), Some(e)) => self.compare(ctx, label, stage, key, a.view(), e),
            (None, None) => {}
            (Some(_), None) => self.fail(ctx, &format!("`{label}`: normkit has it, torch has not")),
            (None, Some(_)) => self.fail(ctx, &format!("`{label}`: missing in normkit")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------

/// The per-stage view of a step (a single-stage layer's step is its own stage).
struct StageView<'a> {
    gamma: Option<&'a Tensor>,
    beta: Option<&'a Tensor>,
    running_mean_before: Option<&'a Tensor>,
    running_mean_after: Option<&'a Tensor>,
    running_var_before: Option<&'a Tensor>,
    running_var_after: Option<&'a Tensor>,
    nbt_before: Option<u64>,
    nbt_after: Option<u64>,
}

impl<'a> StageView<'a> {
    fn of_step(s: &'a Step) -> Self {
        StageView {
            gamma: s.gamma.as_ref(),
            beta: s.beta.as_ref(),
            running_mean_before: s.running_mean_before.as_ref(),
            running_mean_after: s.running_mean_after.as_ref(),
            running_var_before: s.running_var_before.as_ref(),
            running_var_after: s.running_var_after.as_ref(),
            nbt_before: s.num_batches_tracked_before,
            nbt_after: s.num_batches_tracked_after,
        }
    }

    fn of_stage(s: &'a StageRef) -> Self {
        StageView {
            gamma: s.gamma.as_ref(),
            beta: s.beta.as_ref(),
            running_mean_before: s.running_mean_before.as_ref(),
            running_mean_after: s.running_mean_after.as_ref(),
            running_var_before: s.running_var_before.as_ref(),
            running_var_after: s.running_var_after.as_ref(),
            nbt_before: s.num_batches_tracked_before,
            nbt_after: s.num_batches_tracked_after,
        }
    }
}

/// For a chain spec `input = "…", chain(a(keys…), b(keys…))`: one single-stage spec per
/// stage, `input = "…", keys…`.
pub fn chain_stage_specs(spec: &str) -> Option<Vec<String>> {
    let start = spec.find("chain(")?;
    let body_start = start + "chain(".len();
    // Find the closing parenthesis of `chain(`, and split its body at top-level commas.
    let (mut depth, mut quoted) = (0i32, false);
    let mut parts = Vec::new();
    let mut part_start = body_start;
    let mut body_end = None;
    for (i, ch) in spec[body_start..].char_indices() {
        let i = body_start + i;
        match ch {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth == 0 => {
                parts.push(&spec[part_start..i]);
                body_end = Some(i);
                break;
            }
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(&spec[part_start..i]);
                part_start = i + 1;
            }
            _ => {}
        }
    }
    body_end?;
    let input = spec[..start]
        .trim()
        .trim_end_matches(',')
        .trim()
        .to_string();
    parts
        .into_iter()
        .map(|p| {
            let p = p.trim();
            let open = p.find('(')?;
            let keys = p[open + 1..].strip_suffix(')')?.trim();
            Some(if input.is_empty() {
                keys.to_string()
            } else {
                format!("{input}, {keys}")
            })
        })
        .collect()
}

/// Runs every step of `case` on one `DynNorm<T>` and records the comparisons in `report`.
pub fn run_case<T: Float>(case: &Case, group: &str, report: &mut Report) {
    let prec = match T::NAME {
        "f64" => Prec::F64,
        "bf16" | "f16" => Prec::Half,
        _ => Prec::F32,
    };
    report.cases += 1;
    let mut run = CaseRun {
        report,
        worst: BTreeMap::new(),
    };
    run_steps::<T>(case, group, prec, &mut run);
    let worst = std::mem::take(&mut run.worst);
    run.report
        .per_case
        .push((family(group, &case.name), case.name.clone(), worst));
}

fn run_steps<T: Float>(case: &Case, group: &str, prec: Prec, run: &mut CaseRun<'_>) {
    let setup = Ctx {
        case,
        group,
        prec,
        step: 0,
        mode: "setup",
    };
    let spec = match NormSpec::parse(&case.spec) {
        Ok(s) => s,
        Err(e) => return run.fail(&setup, &format!("NormSpec::parse failed: {e}")),
    };
    let sizes = case.size_args();
    let mut layer = match DynNorm::<T>::new(&spec, &sizes) {
        Ok(l) => l,
        Err(e) => return run.fail(&setup, &format!("DynNorm::new({sizes:?}) failed: {e}")),
    };
    let is_chain = case.steps.iter().any(|s| s.stages.is_some());
    // Chains: stand-alone layers per stage, to compute the moments of a later stage's input.
    let mut aux: Vec<DynNorm<T>> = Vec::new();
    if is_chain {
        let Some(specs) = chain_stage_specs(&case.spec) else {
            return run.fail(&setup, "cannot split the chain spec into stages");
        };
        for s in &specs {
            let parsed = match NormSpec::parse(s) {
                Ok(p) => p,
                Err(e) => return run.fail(&setup, &format!("stage spec `{s}`: {e}")),
            };
            match DynNorm::<T>::new(&parsed, &sizes) {
                Ok(l) => aux.push(l),
                Err(e) => return run.fail(&setup, &format!("stage spec `{s}`: {e}")),
            }
        }
        if aux.len() != layer.stages().len() {
            return run.fail(
                &setup,
                &format!(
                    "chain has {} stages in normkit, {} in the spec text",
                    layer.stages().len(),
                    aux.len()
                ),
            );
        }
    }

    for (k, step) in case.steps.iter().enumerate() {
        run.report.steps += 1;
        let ctx = Ctx {
            case,
            group,
            prec,
            step: k,
            mode: &step.mode,
        };
        if !run_step(&ctx, run, &mut layer, &mut aux, step) {
            return; // state is no longer comparable
        }
    }
}

/// Writes a stage's γ/β and checks its running statistics before the step.
fn prepare_stage<T: Float>(
    ctx: &Ctx<'_>,
    run: &mut CaseRun<'_>,
    params: &mut StageParams<T>,
    view: &StageView<'_>,
    prefix: &str,
    stage: Option<usize>,
) {
    for (name, slot, value) in [
        ("gamma", &mut params.gamma, view.gamma),
        ("beta", &mut params.beta, view.beta),
    ] {
        match (slot.as_ref(), value) {
            (Some(cur), Some(v)) if cur.shape() == v.shape.as_slice() => {
                *slot = Some(v.to_array());
            }
            (Some(cur), Some(v)) => run.fail(
                ctx,
                &format!(
                    "`{prefix}{name}` has shape {:?} in normkit, {:?} in torch",
                    cur.shape(),
                    v.shape
                ),
            ),
            (None, None) => {}
            (Some(_), None) => run.fail(
                ctx,
                &format!("`{prefix}{name}`: normkit has it, torch has not"),
            ),
            (None, Some(_)) => run.fail(ctx, &format!("`{prefix}{name}`: missing in normkit")),
        }
    }
    let (rm, rv) = (params.running_mean.clone(), params.running_var.clone());
    run.compare_opt(
        ctx,
        &format!("{prefix}running_mean_before"),
        stage,
        "running_mean_after",
        rm.as_ref(),
        view.running_mean_before,
    );
    run.compare_opt(
        ctx,
        &format!("{prefix}running_var_before"),
        stage,
        "running_var_after",
        rv.as_ref(),
        view.running_var_before,
    );
    if let Some(n) = view.nbt_before {
        if params.num_batches_tracked != n {
            run.fail(
                ctx,
                &format!(
                    "`{prefix}num_batches_tracked` before: expected {n}, actual {}",
                    params.num_batches_tracked
                ),
            );
        }
    }
}

fn check_stage_after<T: Float>(
    ctx: &Ctx<'_>,
    run: &mut CaseRun<'_>,
    params: &StageParams<T>,
    view: &StageView<'_>,
    prefix: &str,
    stage: Option<usize>,
) {
    run.compare_opt(
        ctx,
        &format!("{prefix}running_mean_after"),
        stage,
        "running_mean_after",
        params.running_mean.as_ref(),
        view.running_mean_after,
    );
    run.compare_opt(
        ctx,
        &format!("{prefix}running_var_after"),
        stage,
        "running_var_after",
        params.running_var.as_ref(),
        view.running_var_after,
    );
    if let Some(n) = view.nbt_after {
        if params.num_batches_tracked != n {
            run.fail(
                ctx,
                &format!(
                    "`{prefix}num_batches_tracked` after: expected {n}, actual {}",
                    params.num_batches_tracked
                ),
            );
        }
    }
}

/// One step; returns false when the case cannot continue.
fn run_step<T: Float>(
    ctx: &Ctx<'_>,
    run: &mut CaseRun<'_>,
    layer: &mut DynNorm<T>,
    aux: &mut [DynNorm<T>],
    step: &Step,
) -> bool {
    let mode = match step.mode.as_str() {
        "train" => Mode::Train,
        "eval" => Mode::Eval,
        other => {
            run.fail(ctx, &format!("unknown mode `{other}`"));
            return false;
        }
    };
    for (name, t) in [("x", Some(&step.x)), ("dy", Some(&step.dy))]
        .into_iter()
        .chain([
            ("scale", step.scale.as_ref()),
            ("shift", step.shift.as_ref()),
        ])
    {
        if let Some(t) = t {
            if !t.is_f32_exact() {
                run.fail(ctx, &format!("input `{name}` is not float32-exact"));
            }
        }
    }
    let stage_refs: Vec<(String, StageView<'_>)> = match &step.stages {
        Some(stages) => stages
            .iter()
            .map(|s| (format!("{}.", s.name), StageView::of_stage(s)))
            .collect(),
        None => vec![(String::new(), StageView::of_step(step))],
    };
    let chain = step.stages.is_some();
    if stage_refs.len() != layer.stages().len() {
        run.fail(
            ctx,
            &format!(
                "{} stages in torch, {} in normkit",
                stage_refs.len(),
                layer.stages().len()
            ),
        );
        return false;
    }
    for (k, (prefix, view)) in stage_refs.iter().enumerate() {
        let stage = chain.then_some(k);
        prepare_stage(ctx, run, &mut layer.stages_mut()[k], view, prefix, stage);
    }

    let x = step.x.to_array::<T>();
    let dy = step.dy.to_array::<T>();
    let external = match (&step.scale, &step.shift) {
        (Some(s), Some(t)) => Some((s.to_array::<T>(), t.to_array::<T>())),
        _ => None,
    };

    // Chains: the stand-alone first stage, in the chain's state before this step, gives the
    // input of the second stage (for its moments).
    let mut stage_inputs: Vec<ArrayD<T>> = vec![x.clone()];
    if chain {
        for k in 1..layer.stages().len() {
            aux[k - 1].stages_mut()[0] = layer.stages()[k - 1].clone();
            match aux[k - 1].forward(stage_inputs[k - 1].view(), mode) {
                Ok((h, _)) => stage_inputs.push(h),
                Err(e) => {
                    run.fail(ctx, &format!("stand-alone stage {} forward: {e}", k - 1));
                    return false;
                }
            }
        }
    }

    // Forward.
    let fwd = match &external {
        Some((s, t)) => layer.forward_external(x.view(), s.view(), t.view(), mode),
        None => layer.forward(x.view(), mode),
    };
    let (y, saved) = match fwd {
        Ok(r) => r,
        Err(e) => {
            run.fail(ctx, &format!("forward failed: {e}"));
            return false;
        }
    };
    run.compare(ctx, "y", None, "y", y.view(), &step.y);
    if mode == Mode::Eval && external.is_none() {
        match layer.forward_eval(x.view()) {
            Ok(ye) => run.compare(ctx, "y(forward_eval)", None, "y", ye.view(), &step.y),
            Err(e) => run.fail(ctx, &format!("forward_eval failed: {e}")),
        }
    }

    // Moments (independent of the mode; computed on this step's x).
    if step.mean.is_some() || step.var.is_some() {
        match layer.stats(x.view()) {
            Ok(m) => {
                run.compare_opt(ctx, "mean", None, "mean", Some(&m.mean), step.mean.as_ref());
                run.compare_opt(ctx, "var", None, "var", Some(&m.var), step.var.as_ref());
            }
            Err(e) => run.fail(ctx, &format!("stats failed: {e}")),
        }
    }
    if let Some(stages) = &step.stages {
        for (k, s) in stages.iter().enumerate() {
            if s.mean.is_none() && s.var.is_none() {
                continue;
            }
            let m = if k == 0 {
                layer.stats(x.view())
            } else {
                aux[k].stats(stage_inputs[k].view())
            };
            match m {
                Ok(m) => {
                    let p = &s.name;
                    run.compare_opt(
                        ctx,
                        &format!("{p}.mean"),
                        Some(k),
                        "mean",
                        Some(&m.mean),
                        s.mean.as_ref(),
                    );
                    run.compare_opt(
                        ctx,
                        &format!("{p}.var"),
                        Some(k),
                        "var",
                        Some(&m.var),
                        s.var.as_ref(),
                    );
                }
                Err(e) => run.fail(ctx, &format!("stats of stage {k} failed: {e}")),
            }
        }
    }

    // Backward.
    if let Some(stages) = &step.stages {
        match layer.backward_chain(x.view(), dy.view(), &saved) {
            Ok(g) => {
                run.compare(ctx, "dx", None, "dx", g.dx.view(), &step.dx);
                if g.stages.len() != stages.len() {
                    run.fail(
                        ctx,
                        &format!("backward_chain gave {} stages", g.stages.len()),
                    );
                }
                for (k, (gs, s)) in g.stages.iter().zip(stages).enumerate() {
                    let p = &s.name;
                    run.compare_opt(
                        ctx,
                        &format!("{p}.dgamma"),
                        Some(k),
                        "dgamma",
                        gs.dgamma.as_ref(),
                        s.dgamma.as_ref(),
                    );
                    run.compare_opt(
                        ctx,
                        &format!("{p}.dbeta"),
                        Some(k),
                        "dbeta",
                        gs.dbeta.as_ref(),
                        s.dbeta.as_ref(),
                    );
                }
            }
            Err(e) => run.fail(ctx, &format!("backward_chain failed: {e}")),
        }
    } else {
        match layer.backward(x.view(), dy.view(), &saved) {
            Ok(g) => {
                run.compare(ctx, "dx", None, "dx", g.dx.view(), &step.dx);
                if external.is_some() {
                    run.compare_opt(
                        ctx,
                        "dscale",
                        None,
                        "dscale",
                        g.dgamma.as_ref(),
                        step.dscale.as_ref(),
                    );
                    run.compare_opt(
                        ctx,
                        "dshift",
                        None,
                        "dshift",
                        g.dbeta.as_ref(),
                        step.dshift.as_ref(),
                    );
                } else {
                    run.compare_opt(
                        ctx,
                        "dgamma",
                        None,
                        "dgamma",
                        g.dgamma.as_ref(),
                        step.dgamma.as_ref(),
                    );
                    run.compare_opt(
                        ctx,
                        "dbeta",
                        None,
                        "dbeta",
                        g.dbeta.as_ref(),
                        step.dbeta.as_ref(),
                    );
                }
            }
            Err(e) => run.fail(ctx, &format!("backward failed: {e}")),
        }
    }

    // Running statistics after the step.
    for (k, (prefix, view)) in stage_refs.iter().enumerate() {
        let stage = chain.then_some(k);
        let params = layer.stages()[k].clone();
        check_stage_after(ctx, run, &params, view, prefix, stage);
    }
    true
}
