//! What the CPU is, and the kernel choices normkit makes for it.
//!
//! The SIMD level comes from the CPU's features ([`crate::simd`]); some choices depend on
//! the microarchitecture and the caches instead. They come from a small table of CPUs where
//! they were measured ([`TABLE`], keyed by vendor, family and model), and for any other CPU
//! from rules on its cache sizes that reproduce the measured choices on both. The
//! environment variables and `set_*` functions of [`crate::simd`] still override every
//! choice; [`report`] says what was chosen and why.

use std::fmt::Write as _;
use std::sync::OnceLock;

/// The CPU as the operating system names it (`/proc/cpuinfo` on Linux; empty elsewhere).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuId {
    /// `GenuineIntel`, `AuthenticAMD`, … (empty when unknown).
    pub vendor: String,
    /// The CPU family (x86), when known.
    pub family: Option<u32>,
    /// The model number (x86), when known.
    pub model: Option<u32>,
    /// The marketing name, e.g. `AMD EPYC 9R14` (a hypervisor may shorten it).
    pub model_name: String,
}

impl CpuId {
    /// Parses the first processor's entry of a `/proc/cpuinfo` text.
    pub fn parse(cpuinfo: &str) -> CpuId {
        let mut id = CpuId::default();
        for line in cpuinfo.lines() {
            if line.trim().is_empty() && !id.vendor.is_empty() {
                break;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "vendor_id" => id.vendor = value.to_string(),
                "cpu family" => id.family = value.parse().ok(),
                "model" => id.model = value.parse().ok(),
                "model name" => id.model_name = value.to_string(),
                _ => {}
            }
        }
        id
    }
}

/// Cache sizes of one core's view (`/sys/devices/system/cpu/cpu0/cache` on Linux).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caches {
    /// The L2 cache of one core, bytes.
    pub l2: Option<usize>,
    /// The last-level (L3) cache shared by the cores, bytes.
    pub l3: Option<usize>,
}

/// Parses a sysfs cache size such as `2048K` or `32M`.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let mult = match unit {
        "" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl Caches {
    /// Reads cpu0's data and unified caches from sysfs (none elsewhere).
    fn read() -> Caches {
        let mut c = Caches::default();
        for i in 0..8 {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
            let (Some(level), Some(size)) = (read("level"), read("size")) else {
                continue;
            };
            if read("type").is_some_and(|t| t.trim() == "Instruction") {
                continue;
            }
            match level.trim() {
                "2" => c.l2 = parse_size(&size),
                "3" => c.l3 = parse_size(&size),
                _ => {}
            }
        }
        c
    }
}

/// The kernel choices that depend on the microarchitecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// The largest working set (bytes read and written by one forward pass) for which the
    /// row forward runs software-pipelined (the normalize pass of one row in the same loop
    /// as the sums of the next). Above it, each row runs its two passes one after the other.
    pub pipeline_forward_max: usize,
    /// The working set above which forward passes (an input and an output) write with
    /// non-temporal stores, where this CPU has its own choice (else
    /// [`crate::simd::stream_threshold`] applies to them as to every pass). The pipelined
    /// row forward then runs its two passes one after the other, the affine pass streamed.
    pub stream_forward_above: Option<usize>,
    /// Whether, at a SIMD level without the pipelined multi-row kernels (AVX2), the fused
    /// backward of units of several lines (GroupNorm, NCHW BatchNorm) runs each line's dx
    /// in the same loop as the next unit's line sums (the one-row pipelined kernel) rather
    /// than as two loops. Levels that pipeline (AVX-512, NEON) always do. Same bits either
    /// way.
    pub pipeline_group_backward: bool,
    /// Where the table entry or rule came from.
    pub source: &'static str,
}

/// A measured CPU: vendor, family and (optionally) model, and its choices.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// `vendor_id`.
    pub vendor: &'static str,
    /// CPU family.
    pub family: u32,
    /// Model, or `None` for any model of the family.
    pub model: Option<u32>,
    /// What was measured there, and the choice.
    pub note: &'static str,
    /// The row forward's pipelining limit, as a rule on the caches.
    pub pipeline_forward: PipelineRule,
    /// Where forward passes start streaming their output, as a rule on the caches.
    pub stream_forward: StreamRule,
    /// [`Tuning::pipeline_group_backward`].
    pub pipeline_group_backward: bool,
}

/// Where forward passes start writing with non-temporal stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRule {
    /// At [`crate::simd::stream_threshold`], as every pass. (Not named `Default`: a public
    /// item of that name makes rustc print `std::default::Default` in every dependent
    /// crate's diagnostics, which the ui tests pin.)
    Threshold,
    /// Once the working set exceeds the last-level cache.
    AboveL3,
    /// Once the input alone fills the last-level cache (a working set of twice its size or
    /// more): no call can then find its input in the cache after the previous call.
    InputFillsL3,
}

/// How the row forward's pipelining limit is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineRule {
    /// Always pipelined.
    Always,
    /// Pipelined while the working set fits the last-level cache.
    WhileInL3,
}

/// The CPUs where the choices were measured (`norm-bench --alternate`, `benches/results/`).
pub const TABLE: &[Entry] = &[
    Entry {
        vendor: "AuthenticAMD",
        family: 25,
        model: Some(17),
        note: "AMD Zen 4 (EPYC, family 25 model 17, 32 MiB L3): with rows of 4 KiB over 64 MiB \
               (LayerNorm, RMSNorm, InstanceNorm forward) the pipelined row forward (one loop \
               of both passes, plain stores) ran 25-45 % slower than the two passes per row; \
               in cache (GroupNorm, 13 MB) it was ~10 % faster. Out of the L3 the row forward \
               now streams (its two passes in turn, the affine pass non-temporal): LayerNorm \
               [8192, 1024] forward, 1 thread, 7 alternating rounds (load 5.4): 3.07 ms median \
               (2.67-3.10) vs 7.48 for the plain two passes and 3.99 for PyTorch; RMSNorm \
               3.57 vs 3.57; GroupNorm (in cache, interleaved as before) unchanged",
        pipeline_forward: PipelineRule::Always,
        stream_forward: StreamRule::AboveL3,
        // Measured at the AVX2 cap only where the two loops were chosen (894e7c0, 95c171e):
        // kept as it was.
        pipeline_group_backward: false,
    },
    Entry {
        vendor: "AuthenticAMD",
        family: 25,
        model: Some(1),
        note: "AMD Zen 3 (EPYC, family 25 model 1, AVX2 only, 512 KiB L2, 32 MiB L3), \
               2026-12-07 at eebea1d: AVX2 has no interleaved row kernel, so only streaming \
               matters: where the input fills the L3 the row forward runs its two passes \
               in turn with non-temporal stores (AVX2 `_mm256_stream_ps`). Host under load \
               (6-9 on 2 cores, times 2-4x the idle ones), 5 alternating rounds, medians vs \
               a577072 (plain stores), 1 / 2 threads: LayerNorm [8192, 1024] forward 12.0 \
               vs 23.3 / 17.0 vs 20.7 ms (PyTorch 18.2 / 20.0), RMSNorm 11.7 vs 23.1 / 16.5 \
               vs 23.2, InstanceNorm [8,64,128,128] 12.9 vs 21.9 / 16.7 vs 22.4; BatchNorm \
               eval (49 MiB, input in the L3) streamed 11.1 vs 11.2 / 13.6 vs 11.7, and 0.58x, \
               0.83x at 2 threads in two more runs: not streamed (the Zen 4 rule, above \
               the L3, streamed it)",
        pipeline_forward: PipelineRule::Always,
        stream_forward: StreamRule::InputFillsL3,
        // Units of several lines: dx with the next unit's sums in one loop (GroupNorm
        // backward -24 % at 1 thread, -27 % at 2, alternating on this CPU).
        pipeline_group_backward: true,
    },
    Entry {
        vendor: "GenuineIntel",
        family: 6,
        model: None,
        note: "Intel Xeon (Sapphire Rapids): the pipelined row forward was 8-14 % faster on \
               every suite case (all of which fit its last-level cache)",
        pipeline_forward: PipelineRule::Always,
        stream_forward: StreamRule::Threshold,
        // AVX-512: pipelined at its own level; the AVX2 cap kept as it was.
        pipeline_group_backward: false,
    },
];

/// [`Tuning::pipeline_group_backward`] of CPUs without a [`TABLE`] entry, and of AMD Zen 3
/// (family 25 model 1, AVX2 only, 512 KiB L2) where it was measured: the two loops of a
/// line (dx of unit u, then the sums of unit u + 1) wait on the L2 and then on the L3 in
/// turn; in one loop the loads overlap. `norm-bench` fused backward, alternating in one
/// binary (env switch, 8-10 rounds, host loaded), ratio pipelined / two loops, medians:
/// 1 thread gn 0.76, gn_big 0.79, bcn 0.85, bn_train 0.95; 2 threads gn 0.79, gn_big 0.74,
/// bcn 0.89, bn_train 0.89. Single-line units (weight standardization in cache: 1.02 at one
/// thread, 1.11 at two) keep the two loops: they are not affected by this choice.
pub const DEFAULT_PIPELINE_GROUP_BACKWARD: bool = true;

/// Everything [`report`] prints: the CPU, its caches, the table entry and the choices.
#[derive(Clone, Debug)]
pub struct CpuInfo {
    /// The identity.
    pub id: CpuId,
    /// The caches.
    pub caches: Caches,
    /// The table entry that matched, if any.
    pub entry: Option<&'static Entry>,
    /// The choices.
    pub tuning: Tuning,
}

/// The choices for `id` with `caches`: the table's entry if one matches, else the rule that
/// reproduces the measured choices on both measured CPUs (pipelined while the working set
/// fits the last-level cache; always, when that size is unknown).
pub fn choose(id: &CpuId, caches: Caches) -> (Option<&'static Entry>, Tuning) {
    let entry = TABLE.iter().find(|e| {
        e.vendor == id.vendor
            && Some(e.family) == id.family
            && e.model.is_none_or(|m| Some(m) == id.model)
    });
    let rule = entry.map_or(PipelineRule::WhileInL3, |e| e.pipeline_forward);
    let pipeline_forward_max = match (rule, caches.l3) {
        (PipelineRule::WhileInL3, Some(l3)) => l3,
        _ => usize::MAX,
    };
    let stream = entry.map_or(StreamRule::Threshold, |e| e.stream_forward);
    let stream_forward_above = match (stream, caches.l3) {
        (StreamRule::AboveL3, Some(l3)) => Some(l3),
        (StreamRule::InputFillsL3, Some(l3)) => Some((2 * l3).saturating_sub(1)),
        _ => None,
    };
    // Unmeasured CPUs: the choice of the one AVX2-only CPU measured (AMD Zen 3, family 25
    // model 1: GroupNorm [8,256,28,28] backward -24 % at 1 thread, -27 % at 2; see
    // `DEFAULT_PIPELINE_GROUP_BACKWARD`). The measured AVX-512 CPUs keep their entries'.
    let pipeline_group_backward = entry.map_or(DEFAULT_PIPELINE_GROUP_BACKWARD, |e| {
        e.pipeline_group_backward
    });
    let source = match (entry, caches.l3) {
        (Some(_), _) => "measured on this CPU model (cpu::TABLE)",
        (None, Some(_)) => "default rule for unmeasured CPUs: pipelined while in the L3 cache",
        (None, None) => "default for unmeasured CPUs without a known L3 size: pipelined",
    };
    (
        entry,
        Tuning {
            pipeline_forward_max,
            stream_forward_above,
            pipeline_group_backward,
            source,
        },
    )
}

/// This machine's CPU, caches and choices (read once).
pub fn info() -> &'static CpuInfo {
    static INFO: OnceLock<CpuInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let id = CpuId::parse(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
        let caches = Caches::read();
        let (entry, tuning) = choose(&id, caches);
        CpuInfo {
            id,
            caches,
            entry,
            tuning,
        }
    })
}

/// Whether a pass over `arrays` arrays of `bytes` together (2: a forward pass's input and
/// output) writes its output with non-temporal stores: above `NORMKIT_STREAM_BYTES` /
/// [`crate::simd::set_stream_threshold`] where set, else above this CPU's forward choice
/// for a forward pass ([`Tuning::stream_forward_above`]), else as
/// [`crate::simd::stream_threshold`].
pub(crate) fn streams(bytes: usize, arrays: usize) -> bool {
    if crate::simd::stream_override().is_some() {
        return crate::simd::streams(bytes);
    }
    match tuning().stream_forward_above {
        Some(above) if arrays == 2 => bytes > above,
        _ => crate::simd::streams(bytes),
    }
}

/// This machine's kernel choices, with the overrides of [`crate::simd`] applied.
pub fn tuning() -> Tuning {
    let mut t = info().tuning;
    if let Some(bytes) = crate::simd::pipeline_threshold() {
        t.pipeline_forward_max = bytes;
        t.source = "NORMKIT_PIPELINE_BYTES / simd::set_pipeline_threshold";
    }
    t
}

fn bytes(b: Option<usize>) -> String {
    match b {
        Some(b) if b >= 1 << 20 => format!("{} MiB", b >> 20),
        Some(b) => format!("{} KiB", b >> 10),
        None => "unknown".to_string(),
    }
}

/// What normkit chose on this machine and why: the CPU, its caches, the SIMD level (and the
/// cap in force), the table entry or default rule, and each size threshold.
pub fn report() -> String {
    let i = info();
    let t = tuning();
    let mut s = String::new();
    let num = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
    let _ = writeln!(
        s,
        "cpu: {} ({} family {} model {})",
        if i.id.model_name.is_empty() {
            "unknown"
        } else {
            &i.id.model_name
        },
        if i.id.vendor.is_empty() {
            "unknown vendor"
        } else {
            &i.id.vendor
        },
        num(i.id.family),
        num(i.id.model)
    );
    let _ = writeln!(
        s,
        "caches: L2 {} per core, L3 {}",
        bytes(i.caches.l2),
        bytes(i.caches.l3)
    );
    let _ = writeln!(
        s,
        "simd: {:?} (detected {:?}; available {:?}; NORMKIT_SIMD or simd::set_cap caps it)",
        crate::simd::level(),
        crate::simd::detected(),
        crate::simd::available()
    );
    match i.entry {
        Some(e) => {
            let _ = writeln!(s, "table entry: {}", e.note);
        }
        None => {
            let _ = writeln!(s, "table entry: none for this CPU");
        }
    }
    let _ = writeln!(
        s,
        "row forward pipelined up to a working set of {} ({})",
        if t.pipeline_forward_max == usize::MAX {
            "any size".to_string()
        } else {
            bytes(Some(t.pipeline_forward_max))
        },
        t.source
    );
    let _ = writeln!(
        s,
        "streaming stores above {} (NORMKIT_STREAM_BYTES / simd::set_stream_threshold)",
        bytes(Some(crate::simd::stream_threshold()))
    );
    if let (Some(above), None) = (t.stream_forward_above, crate::simd::stream_override()) {
        let _ = writeln!(
            s,
            "forward passes: streaming stores above {} (cpu::TABLE; the row forward's two \
             passes then run in turn)",
            bytes(Some(above))
        );
    }
    let _ = writeln!(
        s,
        "backward of multi-line units at AVX2: {} (cpu::TABLE, else the unmeasured-CPU default)",
        if t.pipeline_group_backward {
            "one pipelined loop per line"
        } else {
            "two loops per line"
        }
    );
    let _ = writeln!(
        s,
        "fused-chain blocks of up to {} (NORMKIT_BLOCK_BYTES / simd::set_block_bytes)",
        bytes(Some(crate::simd::block_bytes()))
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_and_sizes() {
        let id = CpuId::parse(
            "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
             model name\t: AMD EPYC\n\nprocessor\t: 1\nvendor_id\t: other\n",
        );
        assert_eq!(id.vendor, "AuthenticAMD");
        assert_eq!((id.family, id.model), (Some(25), Some(17)));
        assert_eq!(parse_size("2048K\n"), Some(2 << 20));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn the_table_and_the_default_rule() {
        let caches = Caches {
            l2: Some(2 << 20),
            l3: Some(32 << 20),
        };
        let amd = CpuId {
            vendor: "AuthenticAMD".into(),
            family: Some(25),
            model: Some(17),
            model_name: "AMD EPYC".into(),
        };
        let (e, t) = choose(&amd, caches);
        assert!(e.is_some());
        assert_eq!(t.pipeline_forward_max, usize::MAX);
        assert_eq!(t.stream_forward_above, Some(32 << 20));
        assert!(!t.pipeline_group_backward);
        // Zen 3 (family 25 model 1): its own entry, streaming where the input fills the L3.
        let zen3 = CpuId {
            model: Some(1),
            ..amd.clone()
        };
        let (e, t) = choose(&zen3, caches);
        assert_eq!(e.map(|e| e.model), Some(Some(1)));
        assert_eq!(t.pipeline_forward_max, usize::MAX);
        assert_eq!(t.stream_forward_above, Some((64 << 20) - 1));
        assert!(t.pipeline_group_backward);
        // Another model of the family: no entry, the default rule (also the L3 size).
        let other = CpuId {
            model: Some(33),
            ..amd.clone()
        };
        let (e, t) = choose(&other, caches);
        assert!(e.is_none());
        assert_eq!(t.pipeline_forward_max, 32 << 20);
        assert_eq!(t.stream_forward_above, None);
        assert!(t.pipeline_group_backward);
        // Intel family 6: always pipelined, whatever the L3.
        let intel = CpuId {
            vendor: "GenuineIntel".into(),
            family: Some(6),
            model: Some(143),
            model_name: String::new(),
        };
        let t = choose(&intel, caches).1;
        assert_eq!(t.pipeline_forward_max, usize::MAX);
        assert_eq!(t.stream_forward_above, None);
        assert!(!t.pipeline_group_backward);
        // Nothing known: pipelined, as before the table existed.
        let none = choose(&CpuId::default(), Caches::default()).1;
        assert_eq!(none.pipeline_forward_max, usize::MAX);
    }

    #[test]
    fn report_names_the_choices() {
        let r = report();
        for needle in [
            "cpu:",
            "caches:",
            "simd:",
            "row forward pipelined",
            "streaming",
        ] {
            assert!(r.contains(needle), "{r}");
        }
    }
}
