#!/usr/bin/env python3
"""Generate PyTorch golden data for normkit's normalization layers.

Usage (from the repository root):

    python3 -m venv /tmp/normkit-venv
    /tmp/normkit-venv/bin/pip install -r tests/golden/requirements.txt
    /tmp/normkit-venv/bin/python tests/golden/generate.py

Writes tests/golden/data/<group>.json. The output is byte-identical on rerun (fixed seeds,
one thread, scalar ATen kernels, sorted keys). See tests/golden/README.md for the format.
"""

import os

# Reproducibility across machines and runs: scalar (non-vectorized) ATen kernels and a
# single thread, so reduction orders do not depend on the CPU or the core count.
# Must be set before torch is imported.
os.environ["ATEN_CPU_CAPABILITY"] = "default"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import json  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)

FORMAT_VERSION = 1
OUT_DIR = Path(__file__).resolve().parent / "data"
F32 = torch.float32
F64 = torch.float64


# --------------------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------------------


def enc_f32(a):
    """An f32 array as {"shape", "data"}; each value is the f64 repr of the exact f32 value."""
    a = np.asarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "data": [float(v) for v in a.astype(np.float64).ravel()]}


def enc_f64(t):
    """A float64 torch tensor / numpy array as {"shape", "data"} with full f64 precision."""
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().to(F64).numpy()
    a = np.asarray(t, dtype=np.float64)
    data = [float(v) for v in a.ravel()]
    for v in data:
        if not np.isfinite(v):
            raise ValueError("non-finite reference value")
    return {"shape": list(a.shape), "data": data}


def dump_group(path, group, cases):
    """One case per line; keys sorted; byte-stable."""
    lines = []
    for c in cases:
        lines.append(json.dumps(c, sort_keys=True, separators=(",", ":"), allow_nan=False))
    head = json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "generator": "tests/golden/generate.py",
            "group": group,
            "numpy": np.__version__,
            "torch": torch.__version__.split("+")[0],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    text = '{"meta":' + head + ',\n"cases":[\n' + ",\n".join(lines) + "\n]}\n"
    path.write_text(text)


# --------------------------------------------------------------------------------------
# Layers: thin wrappers giving every reference the same interface
#   params() -> {name: leaf tensor}      learnable parameters (gamma/beta, stages.i.gamma ...)
#   forward(x, mode, ext) -> y           ext: {"scale", "shift"} leaves for affine = external
#   state() -> {name: tensor | int}      running stats (running_mean, ..., stages.i.running_mean)
#   stage_inputs                         after forward: the input of every stage (for stats)
# --------------------------------------------------------------------------------------


class ModuleLayer:
    """A torch.nn module (BatchNorm*, InstanceNorm*, LayerNorm, GroupNorm).

    perm: permutation applied to the stored (spec-order) x before the module; the inverse
    permutation is applied to the module output. cumulative: emulate momentum = cumulative
    on modules that don't implement momentum=None as cumulative (InstanceNorm) by setting
    momentum = 1/num_batches_tracked before each train step.
    """

    def __init__(self, module, dtype, perm=None, zero_bias=False, cumulative=False, count_batches=False):
        self.m = module.to(dtype)
        self.perm = perm
        self.inv = None if perm is None else list(np.argsort(perm))
        self.cumulative = cumulative
        self.count_batches = count_batches  # count train steps ourselves (InstanceNorm)
        self.nbt = 0
        if zero_bias:
            with torch.no_grad():
                self.m.bias.zero_()
            self.m.bias.requires_grad_(False)
        self.zero_bias = zero_bias

    def params(self):
        p = {}
        if getattr(self.m, "weight", None) is not None:
            p["gamma"] = self.m.weight
        if getattr(self.m, "bias", None) is not None and not self.zero_bias:
            p["beta"] = self.m.bias
        return p

    def forward(self, x, mode, ext):
        self.m.train(mode == "train")
        tracking = getattr(self.m, "running_mean", None) is not None
        if mode == "train" and tracking:
            self.nbt += 1
            if self.cumulative:
                self.m.momentum = 1.0 / self.nbt
        self.stage_inputs = [x]
        xin = x if self.perm is None else x.permute(*self.perm)
        y = self.m(xin)
        return y if self.inv is None else y.permute(*self.inv)

    def state(self):
        if getattr(self.m, "running_mean", None) is None:
            return {}
        nbt = self.nbt if self.count_batches else int(self.m.num_batches_tracked.item())
        return {
            "running_mean": self.m.running_mean.detach().clone(),
            "running_var": self.m.running_var.detach().clone(),
            "num_batches_tracked": nbt,
        }


class FnLayer:
    """A stateless functional reference with optional gamma/beta leaves."""

    def __init__(self, fn, dtype, gamma_shape=None, beta_shape=None):
        self.fn = fn
        self.p = {}
        if gamma_shape is not None:
            self.p["gamma"] = torch.ones(gamma_shape, dtype=dtype, requires_grad=True)
        if beta_shape is not None:
            self.p["beta"] = torch.zeros(beta_shape, dtype=dtype, requires_grad=True)

    def params(self):
        return self.p

    def forward(self, x, mode, ext):
        self.stage_inputs = [x]
        return self.fn(x, self.p.get("gamma"), self.p.get("beta"), ext)

    def state(self):
        return {}


class BCNLayer:
    """Batch-Channel Normalization, as the official code (joe-siyuan-qiao/Batch-Channel-Normalization):

        out = self.bn(inp)                                   # nn.BatchNorm2d(C)
        out = out.view(1, N * G, -1)
        out = torch.batch_norm(out, None, None, None, None, True, 0, eps, True)
        out = out.view(N, G, -1)
        out = self.weight * out + self.bias                  # weight, bias: [1, G, 1]
        out = out.view_as(inp)

    Stage 2 always uses batch statistics (training=True), also in eval mode.
    """

    def __init__(self, C, G, dtype, momentum=0.1, eps_bn=1e-5, eps_gn=1e-5):
        self.bn = nn.BatchNorm2d(C, eps=eps_bn, momentum=momentum).to(dtype)
        self.G = G
        self.eps_gn = eps_gn
        self.w = torch.ones(1, G, 1, dtype=dtype, requires_grad=True)
        self.b = torch.zeros(1, G, 1, dtype=dtype, requires_grad=True)

    def params(self):
        return {
            "stages.0.gamma": self.bn.weight,
            "stages.0.beta": self.bn.bias,
            "stages.1.gamma": self.w,
            "stages.1.beta": self.b,
        }

    def forward(self, x, mode, ext):
        self.bn.train(mode == "train")
        out1 = self.bn(x)
        self.stage_inputs = [x, out1]
        N = x.shape[0]
        out = out1.reshape(1, N * self.G, -1)
        out = torch.batch_norm(out, None, None, None, None, True, 0.0, self.eps_gn, True)
        out = out.view(N, self.G, -1)
        out = self.w * out + self.b
        return out.view_as(x)

    def state(self):
        return {
            "stages.0.running_mean": self.bn.running_mean.detach().clone(),
            "stages.0.running_var": self.bn.running_var.detach().clone(),
            "stages.0.num_batches_tracked": int(self.bn.num_batches_tracked.item()),
        }


# --------------------------------------------------------------------------------------
# Functional references (float64/float32 torch ops)
# --------------------------------------------------------------------------------------


def ws_official(x, g, b, ext, eps=1e-5):
    """Weight Standardization, official code (joe-siyuan-qiao/WeightStandardization):
    mean over I,kh,kw; std with unbiased=True; (w - mean) / (std + eps)."""
    w = x
    mean = w.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True)
    w = w - mean
    std = w.view(w.size(0), -1).std(dim=1).view(-1, 1, 1, 1) + eps
    return w / std.expand_as(w)


def ws_var_unbiased(x, g, b, ext, eps=1e-5):
    """(w - mean) / sqrt(var_unbiased + eps) per output channel."""
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    var = flat.var(dim=1, keepdim=True)  # unbiased
    return ((flat - mean) / torch.sqrt(var + eps)).view_as(x)


def adain_ref(x, g, b, ext, eps=1e-5):
    """naoto0804/pytorch-AdaIN: content stats via view(N, C, -1).var(dim=2) (unbiased) + eps
    inside the sqrt; scale = std_s, shift = mean_s, both [N, C] (passed as ext)."""
    N, C = x.shape[:2]
    feat_var = x.view(N, C, -1).var(dim=2) + eps
    feat_std = feat_var.sqrt().view(N, C, 1, 1)
    feat_mean = x.view(N, C, -1).mean(dim=2).view(N, C, 1, 1)
    normalized = (x - feat_mean.expand(x.size())) / feat_std.expand(x.size())
    scale = ext["scale"].view(N, C, 1, 1)
    shift = ext["shift"].view(N, C, 1, 1)
    return normalized * scale.expand(x.size()) + shift.expand(x.size())


def make_rms(eps):
    def rms(x, g, b, ext):
        y = x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)
        return y * g if g is not None else y

    return rms


def make_posnorm(eps=1e-5):
    """Positional normalization over C at every (n, h, w): F.layer_norm on the NHWC view."""

    def pn(x, g, b, ext):
        xl = x.permute(0, 2, 3, 1)
        y = F.layer_norm(xl, (x.shape[1],), g, b, eps)
        return y.permute(0, 3, 1, 2)

    return pn


# --------------------------------------------------------------------------------------
# Statistics (CONTRACT.md `stats()`): moments per statistics group, shaped by the kept axes
# with the group axis G at the position of C.
# --------------------------------------------------------------------------------------


def moments(x, input_axes, axes, groups=None, unbiased=False):
    names = list(input_axes)
    shape = list(x.shape)
    red = [names.index(a) for a in axes]
    if groups:
        c = names.index("C")
        shape = shape[:c] + [groups, shape[c] // groups] + shape[c + 1 :]
        x = x.reshape(shape)
        red = [i + (1 if i > c else 0) for i in red]
        red = [c + 1 if i == c else i for i in red]
    # corrected two-pass algorithm (more accurate than torch.var_mean's Welford on offset data)
    n = 1
    for i in red:
        n *= x.shape[i]
    mean = x.mean(dim=red, keepdim=True)
    d = x - mean
    ss = (d * d).sum(dim=red) - d.sum(dim=red) ** 2 / n
    var = ss / (n - 1 if unbiased else n)
    return mean.squeeze(red), var


# --------------------------------------------------------------------------------------
# Case construction
# --------------------------------------------------------------------------------------

CASES = {}  # group -> list of case definitions


def seed_of(name):
    return zlib.crc32(name.encode())


def f32(a):
    return np.asarray(a, dtype=np.float32)


def add(group, name, spec, sizes, make, shape, modes, *, xgen=None, param_shapes=None,
        stages=None, ext_shape=None, ext_gen=None, stats=None, exact_zero=()):
    """Register a case.

    make(dtype) -> layer; shape: x shape (spec order); modes: e.g. ["train", "train", "eval"];
    xgen(rng, shape) -> f32 array; param_shapes: {"gamma": shape, "beta": shape};
    stages: [(stage name, {"gamma": shape, "beta": shape}, stats)] for chains;
    stats: (input_axes, axes, groups, unbiased) or None (no moments recorded);
    exact_zero: outputs that are mathematically zero (torch's f64 value is rounding noise):
    stored as exact zeros.
    """
    assert all(name != c["name"] for cs in CASES.values() for c in cs), name
    rng = np.random.default_rng(seed_of(name))
    if xgen is None:
        xgen = lambda r, s: r.standard_normal(s) * 1.5 + 0.3  # noqa: E731
    steps = []
    for mode in modes:
        st = {"mode": mode, "x": f32(xgen(rng, shape)), "dy": f32(rng.standard_normal(shape)), "params": {}}
        for key, shp in (param_shapes or {}).items():
            st["params"][key] = gen_param(rng, key, shp)
        for i, (_, shps, _) in enumerate(stages or []):
            for key, shp in shps.items():
                st["params"][f"stages.{i}.{key}"] = gen_param(rng, key, shp)
        if ext_shape is not None:
            scale, shift = ext_gen(rng, ext_shape)
            st["ext"] = {"scale": f32(scale), "shift": f32(shift)}
        steps.append(st)
    CASES.setdefault(group, []).append(
        {"name": name, "spec": spec, "sizes": sizes, "make": make, "steps": steps,
         "stats": stats, "stages": stages, "exact_zero": list(exact_zero)}
    )


def gen_param(rng, key, shape):
    if key == "gamma":
        return f32(rng.uniform(0.5, 1.5, shape))
    return f32(rng.standard_normal(shape) * 0.3)


# --------------------------------------------------------------------------------------
# Running a case in one dtype
# --------------------------------------------------------------------------------------


def param_target_shape(t, arr):
    """BCN keeps its per-group affine as [1, G, 1]; stored as [G]."""
    return torch.tensor(arr.astype(np.float64), dtype=t.dtype).reshape(t.shape)


def run_case(case, dtype):
    layer = case["make"](dtype)
    out = []
    for st in case["steps"]:
        params = layer.params()
        with torch.no_grad():
            for key, t in params.items():
                t.copy_(param_target_shape(t, st["params"][key]))
                t.grad = None
        before = layer.state()
        x = torch.tensor(st["x"].astype(np.float64), dtype=dtype, requires_grad=True)
        ext = {}
        for k, v in st.get("ext", {}).items():
            ext[k] = torch.tensor(v.astype(np.float64), dtype=dtype, requires_grad=True)
        y = layer.forward(x, st["mode"], ext)
        dy = torch.tensor(st["dy"].astype(np.float64), dtype=dtype)
        (y * dy).sum().backward()
        after = layer.state()
        r = {"y": y.detach().clone(), "dx": x.grad.detach().clone()}
        for key, t in params.items():
            prefix, _, pname = key.rpartition(".")
            gkey = (prefix + "." if prefix else "") + "d" + pname
            r[gkey] = t.grad.detach().clone().reshape(st["params"][key].shape)
        for k, v in ext.items():
            r["d" + k] = v.grad.detach().clone()
        for k, v in before.items():
            r[k + "_before"] = v
        for k, v in after.items():
            r[k + "_after"] = v
        # moments of the input of each stage
        with torch.no_grad():
            if case["stages"]:
                for i, (_, _, sinfo) in enumerate(case["stages"]):
                    if sinfo is not None:
                        m, v = moments(layer.stage_inputs[i].detach(), *sinfo)
                        r[f"stages.{i}.mean"], r[f"stages.{i}.var"] = m, v
            elif case["stats"] is not None:
                r["mean"], r["var"] = moments(x.detach(), *case["stats"])
        out.append(r)
    return out


TENSOR_KEYS = ["y", "dx", "dgamma", "dbeta", "dscale", "dshift",
               "running_mean_before", "running_var_before",
               "running_mean_after", "running_var_after", "mean", "var"]
ERR_KEYS = ["y", "dx", "dgamma", "dbeta", "dscale", "dshift",
            "running_mean_after", "running_var_after", "mean", "var"]
STAGE_TENSOR_KEYS = ["dgamma", "dbeta", "running_mean_before", "running_var_before",
                     "running_mean_after", "running_var_after", "mean", "var"]
STAGE_ERR_KEYS = ["dgamma", "dbeta", "running_mean_after", "running_var_after", "mean", "var"]


def rel_err(a32, a64):
    a32 = a32.detach().to(F64).numpy()
    a64 = a64.detach().numpy()
    num = float(np.max(np.abs(a32 - a64))) if a64.size else 0.0
    den = float(np.max(np.abs(a64))) if a64.size else 0.0
    e = num / den if den > 0 else num
    return float(f"{e:.3g}")


def build_case_json(case):
    r64 = run_case(case, F64)
    r32 = run_case(case, F32)
    for a in r64:
        for k in case["exact_zero"]:
            noise = float(a[k].abs().max())
            assert noise < 1e-9, (case["name"], k, noise)
            a[k] = torch.zeros_like(a[k])
    nstages = len(case["stages"] or [])
    steps = []
    for st, a in zip(case["steps"], r64):
        p = st["params"]
        s = {
            "mode": st["mode"],
            "x": enc_f32(st["x"]),
            "dy": enc_f32(st["dy"]),
            "gamma": enc_f32(p["gamma"]) if "gamma" in p else None,
            "beta": enc_f32(p["beta"]) if "beta" in p else None,
            "scale": enc_f32(st["ext"]["scale"]) if "ext" in st else None,
            "shift": enc_f32(st["ext"]["shift"]) if "ext" in st else None,
            "num_batches_tracked_before": a.get("num_batches_tracked_before"),
            "num_batches_tracked_after": a.get("num_batches_tracked_after"),
            "stages": None,
        }
        for k in TENSOR_KEYS:
            s[k] = enc_f64(a.get(k))
        if nstages:
            s["stages"] = []
            for i, (sname, _, _) in enumerate(case["stages"]):
                so = {
                    "name": sname,
                    "gamma": enc_f32(p[f"stages.{i}.gamma"]) if f"stages.{i}.gamma" in p else None,
                    "beta": enc_f32(p[f"stages.{i}.beta"]) if f"stages.{i}.beta" in p else None,
                    "num_batches_tracked_before": a.get(f"stages.{i}.num_batches_tracked_before"),
                    "num_batches_tracked_after": a.get(f"stages.{i}.num_batches_tracked_after"),
                }
                for k in STAGE_TENSOR_KEYS:
                    so[k] = enc_f64(a.get(f"stages.{i}.{k}"))
                s["stages"].append(so)
        steps.append(s)

    err = {}
    for k in ERR_KEYS:
        vals = [rel_err(b[k], a[k]) for a, b in zip(r64, r32) if k in a]
        if vals:
            err[k] = max(vals)
    if nstages:
        err["stages"] = []
        for i in range(nstages):
            e = {}
            for k in STAGE_ERR_KEYS:
                kk = f"stages.{i}.{k}"
                vals = [rel_err(b[kk], a[kk]) for a, b in zip(r64, r32) if kk in a]
                if vals:
                    e[k] = max(vals)
            err["stages"].append(e)
    return {
        "name": case["name"],
        "spec": case["spec"],
        "sizes": case["sizes"],
        "steps": steps,
        "f32_torch_err": err,
        "exact_zero": case["exact_zero"],
    }


# --------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------

TTE = ["train", "train", "eval"]
TE = ["train", "eval"]


def offset_gen(offset, std):
    return lambda r, s: offset + std * r.standard_normal(s)


def nearconst_gen(value=0.5, noise=1e-6):
    return lambda r, s: value + noise * r.standard_normal(s)


# torch (>= 2.x) rejects eps = 0 in training ("batch_norm eps must be positive"). eps = 1e-300
# is numerically identical to 0 here: var + 1e-300 == var in f64 for every var in these cases,
# and the f32 kernels see 0 after the cast.
EPS_ZERO = 1e-300


def bn_module(dim, C, affine=True, running=True, momentum=0.1, eps=1e-5):
    eps = EPS_ZERO if eps == 0.0 else eps
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dim]
    return cls(C, eps=eps, momentum=momentum, affine=affine, track_running_stats=running)


def bn_spec(inp, axes, affine=True, running=True, momentum=0.1, eps=None, bias=True):
    parts = [f'input = "{inp}"', f'axes = "{axes}"']
    if affine:
        parts.append("affine")
        if not bias:
            parts.append("bias = false")
    if eps is not None:
        parts.append(f"eps = {eps!r}")
    if running:
        parts.append("running_stats")
        parts.append('momentum = "cumulative"' if momentum is None else f"momentum = {float(momentum)!r}")
    return ", ".join(parts)


def mom_tag(m):
    return "cum" if m is None else f"m{m}"


def cases_batchnorm():
    G = "batchnorm"
    layouts = [
        # (tag, torch dim, spec input, spec axes, shape, perm to torch layout)
        ("bn1d_NC", 1, "N,C", "N", (8, 5), None),
        ("bn1d_NCL", 1, "N,C,L", "N,L", (4, 3, 7), None),
        ("bn2d", 2, "N,C,H,W", "N,H,W", (4, 3, 5, 4), None),
        ("bn3d", 3, "N,C,D,H,W", "N,D,H,W", (2, 3, 3, 4, 5), None),
        ("bn2d_nhwc", 2, "N,H,W,C", "N,H,W", (3, 4, 5, 3), (0, 3, 1, 2)),
        ("bn1d_nlc", 1, "N,L,C", "N,L", (4, 6, 5), (0, 2, 1)),
    ]
    for tag, dim, inp, axes, shape, perm in layouts:
        C = shape[inp.split(",").index("C")]
        variants = [
            ("train_affine_m0.1", dict(affine=True, running=True, momentum=0.1)),
            ("train_noaffine_m0.1", dict(affine=False, running=True, momentum=0.1)),
            ("norunning_affine", dict(affine=True, running=False)),
        ]
        if tag in ("bn1d_NC", "bn2d"):
            variants += [
                ("train_affine_m0.5", dict(affine=True, running=True, momentum=0.5)),
                ("train_affine_m1.0", dict(affine=True, running=True, momentum=1.0)),
                ("train_affine_cum", dict(affine=True, running=True, momentum=None)),
                ("train_nobias_m0.1", dict(affine=True, running=True, momentum=0.1, bias=False)),
                ("norunning_noaffine", dict(affine=False, running=False)),
            ]
        for vtag, kw in variants:
            bias = kw.pop("bias", True)
            affine, running, mom = kw["affine"], kw["running"], kw.get("momentum", 0.1)
            spec = bn_spec(inp, axes, affine, running, mom, bias=bias)
            sizes = {"C": C} if (affine or running) else {}

            def make(dt, dim=dim, C=C, affine=affine, running=running, mom=mom, perm=perm, bias=bias):
                return ModuleLayer(bn_module(dim, C, affine, running, mom), dt, perm=perm, zero_bias=not bias)

            pshapes = {}
            if affine:
                pshapes["gamma"] = (C,)
                if bias:
                    pshapes["beta"] = (C,)
            modes = TTE if running else TE
            if tag == "bn2d" and vtag == "train_affine_cum":
                modes = ["train", "train", "train", "eval"]
            add(G, f"{tag}_{vtag}", spec, sizes, make, shape, modes, param_shapes=pshapes,
                stats=(inp.split(","), axes.split(","), None, False))

    # interleaved train/eval
    spec = bn_spec("N,C,H,W", "N,H,W", True, True, 0.1)
    add(G, "bn2d_interleaved_train_eval", spec, {"C": 3},
        lambda dt: ModuleLayer(bn_module(2, 3), dt), (3, 3, 4, 2), ["train", "eval", "train", "eval"],
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(["N", "C", "H", "W"], ["N", "H", "W"], None, False))
    # eval first: running stats at their initial values (0 / 1)
    add(G, "bn2d_eval_first", spec, {"C": 3},
        lambda dt: ModuleLayer(bn_module(2, 3), dt), (2, 3, 3, 5), ["eval", "train", "eval"],
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(["N", "C", "H", "W"], ["N", "H", "W"], None, False))
    # batch size 1 (legal: H*W > 1)
    add(G, "bn2d_batch1_affine_m0.1", spec, {"C": 4},
        lambda dt: ModuleLayer(bn_module(2, 4), dt), (1, 4, 3, 5), TTE,
        param_shapes={"gamma": (4,), "beta": (4,)}, stats=(["N", "C", "H", "W"], ["N", "H", "W"], None, False))
    add(G, "bn1d_NCL_batch1_cum", bn_spec("N,C,L", "N,L", True, True, None), {"C": 3},
        lambda dt: ModuleLayer(bn_module(1, 3, momentum=None), dt), (1, 3, 6), TTE,
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(["N", "C", "L"], ["N", "L"], None, False))
    # smallest legal group: 2 values per channel
    add(G, "bn1d_NC_batch2_affine_m0.1", bn_spec("N,C", "N", True, True, 0.1), {"C": 6},
        lambda dt: ModuleLayer(bn_module(1, 6), dt), (2, 6), TTE,
        param_shapes={"gamma": (6,), "beta": (6,)}, stats=(["N", "C"], ["N"], None, False))
    # tiny eps / eps = 0
    add(G, "bn2d_eps1e-12", bn_spec("N,C,H,W", "N,H,W", True, True, 0.1, eps=1e-12), {"C": 3},
        lambda dt: ModuleLayer(bn_module(2, 3, eps=1e-12), dt), (3, 3, 4, 3), TTE,
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(["N", "C", "H", "W"], ["N", "H", "W"], None, False))
    add(G, "bn2d_eps0", bn_spec("N,C,H,W", "N,H,W", True, True, 0.1, eps=0.0), {"C": 3},
        lambda dt: ModuleLayer(bn_module(2, 3, eps=0.0), dt), (3, 3, 2, 5), TTE,
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(["N", "C", "H", "W"], ["N", "H", "W"], None, False))
    # fixed channel count in the spec: no constructor sizes
    add(G, "bn2d_fixedC_affine_m0.1", bn_spec("N,C=3,H,W", "N,H,W", True, True, 0.1), {},
        lambda dt: ModuleLayer(bn_module(2, 3), dt), (2, 3, 4, 6), TTE,
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(["N", "C", "H", "W"], ["N", "H", "W"], None, False))
    # a larger tensor (exercises vector loops and threading)
    add(G, "bn2d_large_affine_m0.1", spec, {"C": 2},
        lambda dt: ModuleLayer(bn_module(2, 2), dt), (16, 2, 8, 8), TE,
        param_shapes={"gamma": (2,), "beta": (2,)}, stats=(["N", "C", "H", "W"], ["N", "H", "W"], None, False))
    # per-channel offsets of very different magnitude
    def chan_offsets(r, s):
        return r.standard_normal(s) * np.array([1.0, 50.0, 0.01]).reshape(1, 3, 1, 1) + \
            np.array([-3.0, 200.0, 0.5]).reshape(1, 3, 1, 1)
    add(G, "bn2d_channel_scales", spec, {"C": 3},
        lambda dt: ModuleLayer(bn_module(2, 3), dt), (4, 3, 3, 3), TTE, xgen=chan_offsets,
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(["N", "C", "H", "W"], ["N", "H", "W"], None, False))


def cases_layernorm():
    G = "layernorm"

    def ln(shape_norm, affine=True, bias=True, eps=1e-5):
        return lambda dt: ModuleLayer(
            nn.LayerNorm(shape_norm, eps=eps, elementwise_affine=affine, bias=bias), dt)

    ntd = ["N", "T", "D"]
    add(G, "ln_NTD_affine", 'input = "N,T,D", axes = "D", affine = "D"', {"D": 8},
        ln(8), (2, 3, 8), TE, param_shapes={"gamma": (8,), "beta": (8,)}, stats=(ntd, ["D"], None, False))
    add(G, "ln_NTD_noaffine", 'input = "N,T,D", axes = "D"', {},
        ln(8, affine=False), (2, 3, 8), TE, stats=(ntd, ["D"], None, False))
    add(G, "ln_NTD_affine_nobias", 'input = "N,T,D", axes = "D", affine = "D", bias = false', {"D": 12},
        ln(12, bias=False), (3, 2, 12), TE, param_shapes={"gamma": (12,)}, stats=(ntd, ["D"], None, False))
    add(G, "ln_NTD_D1", 'input = "N,T,D", axes = "D", affine = "D"', {"D": 1},
        ln(1), (2, 3, 1), TE, param_shapes={"gamma": (1,), "beta": (1,)}, stats=(ntd, ["D"], None, False),
        exact_zero=("dx",))
    add(G, "ln_NTD_eps1e-12", 'input = "N,T,D", axes = "D", affine = "D", eps = 1e-12', {"D": 7},
        ln(7, eps=1e-12), (2, 3, 7), TE, param_shapes={"gamma": (7,), "beta": (7,)}, stats=(ntd, ["D"], None, False))
    add(G, "ln_ND_affine_D64", 'input = "N,D", axes = "D", affine = "D"', {"D": 64},
        ln(64), (3, 64), TE, param_shapes={"gamma": (64,), "beta": (64,)}, stats=(["N", "D"], ["D"], None, False))
    nchw = ["N", "C", "H", "W"]
    add(G, "ln_NCHW_affine_CHW", 'input = "N,C,H,W", axes = "C,H,W", affine = "C,H,W"', {"C": 3, "H": 4, "W": 5},
        ln([3, 4, 5]), (2, 3, 4, 5), TE, param_shapes={"gamma": (3, 4, 5), "beta": (3, 4, 5)},
        stats=(nchw, ["C", "H", "W"], None, False))
    add(G, "ln_NCHW_noaffine", 'input = "N,C,H,W", axes = "C,H,W"', {},
        ln([3, 4, 5], affine=False), (2, 3, 4, 5), TE, stats=(nchw, ["C", "H", "W"], None, False))
    add(G, "ln_NCHW_affine_CHW_nobias", 'input = "N,C,H,W", axes = "C,H,W", affine = "C,H,W", bias = false',
        {"C": 2, "H": 3, "W": 4}, ln([2, 3, 4], bias=False), (3, 2, 3, 4), TE,
        param_shapes={"gamma": (2, 3, 4)}, stats=(nchw, ["C", "H", "W"], None, False))
    add(G, "ln_NCHW_batch1", 'input = "N,C,H,W", axes = "C,H,W", affine = "C,H,W"', {"C": 3, "H": 2, "W": 5},
        ln([3, 2, 5]), (1, 3, 2, 5), TE, param_shapes={"gamma": (3, 2, 5), "beta": (3, 2, 5)},
        stats=(nchw, ["C", "H", "W"], None, False))


def in_module(dim, C, affine, running, momentum=0.1, eps=1e-5):
    cls = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d}[dim]
    return cls(C, eps=eps, momentum=momentum, affine=affine, track_running_stats=running)


def cases_instancenorm():
    G = "instancenorm"
    for dim, inp, axes, shape in [(1, "N,C,L", "L", (3, 4, 6)), (2, "N,C,H,W", "H,W", (2, 3, 4, 5))]:
        C = shape[1]
        tag = f"in{dim}d"
        for affine in (False, True):
            for running in (False, True):
                vtag = ("affine" if affine else "noaffine") + ("_running_m0.1" if running else "")
                spec = bn_spec(inp, axes, affine, running, 0.1)
                sizes = {"C": C} if (affine or running) else {}
                pshapes = {"gamma": (C,), "beta": (C,)} if affine else {}
                add(G, f"{tag}_{vtag}", spec, sizes,
                    lambda dt, dim=dim, C=C, affine=affine, running=running:
                        ModuleLayer(in_module(dim, C, affine, running), dt, count_batches=True),
                    shape, TTE if running else TE, param_shapes=pshapes,
                    stats=(inp.split(","), axes.split(","), None, False))
    add(G, "in2d_affine_running_m0.5", bn_spec("N,C,H,W", "H,W", True, True, 0.5), {"C": 3},
        lambda dt: ModuleLayer(in_module(2, 3, True, True, 0.5), dt, count_batches=True),
        (3, 3, 3, 4), TTE, param_shapes={"gamma": (3,), "beta": (3,)},
        stats=(["N", "C", "H", "W"], ["H", "W"], None, False))
    add(G, "in1d_noaffine_running_cum", bn_spec("N,C,L", "L", False, True, None), {"C": 4},
        lambda dt: ModuleLayer(in_module(1, 4, False, True, 0.1), dt, cumulative=True, count_batches=True),
        (2, 4, 5), ["train", "train", "train", "eval"],
        stats=(["N", "C", "L"], ["L"], None, False))
    add(G, "in2d_batch1_affine_running_m0.1", bn_spec("N,C,H,W", "H,W", True, True, 0.1), {"C": 4},
        lambda dt: ModuleLayer(in_module(2, 4, True, True), dt, count_batches=True),
        (1, 4, 3, 5), TTE, param_shapes={"gamma": (4,), "beta": (4,)},
        stats=(["N", "C", "H", "W"], ["H", "W"], None, False))
    add(G, "in2d_nhwc_affine_running_m0.1", bn_spec("N,H,W,C", "H,W", True, True, 0.1), {"C": 3},
        lambda dt: ModuleLayer(in_module(2, 3, True, True), dt, perm=(0, 3, 1, 2), count_batches=True),
        (2, 4, 3, 3), TTE, param_shapes={"gamma": (3,), "beta": (3,)},
        stats=(["N", "H", "W", "C"], ["H", "W"], None, False))


def cases_groupnorm():
    G = "groupnorm"

    def gn(groups, C, affine=True, perm=None, eps=1e-5):
        return lambda dt: ModuleLayer(nn.GroupNorm(groups, C, eps=eps, affine=affine), dt, perm=perm)

    nchw = ["N", "C", "H", "W"]
    for g in (1, 2, 3, 6):
        add(G, f"gn2d_C6_G{g}_affine", f'input = "N,C,H,W", axes = "C,H,W", groups = {g}, affine', {"C": 6},
            gn(g, 6), (2, 6, 3, 4), TE, param_shapes={"gamma": (6,), "beta": (6,)},
            stats=(nchw, ["C", "H", "W"], g, False))
    for g in (1, 2, 3, 6):
        add(G, f"gn1d_C6_G{g}_affine", f'input = "N,C,L", axes = "C,L", groups = {g}, affine', {"C": 6},
            gn(g, 6), (3, 6, 5), TE, param_shapes={"gamma": (6,), "beta": (6,)},
            stats=(["N", "C", "L"], ["C", "L"], g, False))
    add(G, "gn2d_C6_G3_noaffine", 'input = "N,C,H,W", axes = "C,H,W", groups = 3', {},
        gn(3, 6, affine=False), (2, 6, 2, 5), TE, stats=(nchw, ["C", "H", "W"], 3, False))
    add(G, "gn1d_C6_G2_noaffine", 'input = "N,C,L", axes = "C,L", groups = 2', {},
        gn(2, 6, affine=False), (2, 6, 7), TE, stats=(["N", "C", "L"], ["C", "L"], 2, False))
    add(G, "gn2d_C6_G2_batch1_affine", 'input = "N,C,H,W", axes = "C,H,W", groups = 2, affine', {"C": 6},
        gn(2, 6), (1, 6, 4, 3), TE, param_shapes={"gamma": (6,), "beta": (6,)},
        stats=(nchw, ["C", "H", "W"], 2, False))
    add(G, "gn2d_C8_G4_nhwc_affine", 'input = "N,H,W,C", axes = "H,W,C", groups = 4, affine', {"C": 8},
        gn(4, 8, perm=(0, 3, 1, 2)), (2, 3, 4, 8), TE, param_shapes={"gamma": (8,), "beta": (8,)},
        stats=(["N", "H", "W", "C"], ["H", "W", "C"], 4, False))
    add(G, "gn1d_C6_G6_L1_affine", 'input = "N,C,L", axes = "C,L", groups = 6, affine', {"C": 6},
        gn(6, 6), (2, 6, 1), TE, param_shapes={"gamma": (6,), "beta": (6,)},
        stats=(["N", "C", "L"], ["C", "L"], 6, False), exact_zero=("dx",))


def cases_weight_std():
    G = "weight_std"
    oikk = ["O", "I", "kh", "kw"]
    spec = 'input = "O,I,kh,kw", axes = "I,kh,kw", unbiased, eps_mode = "std", eps = 1e-5'
    for shape in [(4, 3, 3, 3), (6, 2, 3, 2), (5, 8, 1, 1), (2, 16, 5, 5)]:
        tag = "x".join(map(str, shape))
        add(G, f"ws_official_{tag}", spec, {}, lambda dt: FnLayer(ws_official, dt), shape, TE,
            xgen=lambda r, s: r.standard_normal(s) * 0.05 + 0.01, stats=(oikk, ["I", "kh", "kw"], None, True))
    spec_v = 'input = "O,I,kh,kw", axes = "I,kh,kw", unbiased'
    for shape in [(4, 3, 3, 3), (3, 5, 2, 3)]:
        tag = "x".join(map(str, shape))
        add(G, f"ws_var_unbiased_{tag}", spec_v, {}, lambda dt: FnLayer(ws_var_unbiased, dt), shape, TE,
            xgen=lambda r, s: r.standard_normal(s) * 0.05 + 0.01, stats=(oikk, ["I", "kh", "kw"], None, True))


def cases_bcn():
    G = "bcn"
    for shape, groups, mom in [((2, 4, 3, 3), 2, 0.1), ((1, 4, 3, 4), 2, 0.1), ((2, 6, 2, 3), 3, 0.1),
                               ((3, 4, 2, 4), 2, 0.5)]:
        N, C = shape[:2]
        bn = "affine, running_stats" + ("" if mom == 0.1 else f", momentum = {mom!r}")
        spec = (f'input = "N,C,H,W", chain(bn(axes = "N,H,W", {bn}), '
                f'gn(axes = "C,H,W", groups = {groups}, affine = "G"))')
        tag = "x".join(map(str, shape))
        stages = [
            ("bn", {"gamma": (C,), "beta": (C,)}, (["N", "C", "H", "W"], ["N", "H", "W"], None, False)),
            ("gn", {"gamma": (groups,), "beta": (groups,)}, (["N", "C", "H", "W"], ["C", "H", "W"], groups, False)),
        ]
        add(G, f"bcn_{tag}_G{groups}_m{mom}", spec, {"C": C},
            lambda dt, C=C, groups=groups, mom=mom: BCNLayer(C, groups, dt, momentum=mom),
            shape, TTE, stages=stages)


def adain_ext(style_shape):
    """scale/shift = std/mean of a random style feature map (naoto0804 calc_mean_std, eps 1e-5)."""

    def gen(rng, shape):
        N, C = shape
        style = f32(rng.standard_normal((N, C) + style_shape) * rng.uniform(0.5, 2.0, (N, C, 1, 1))
                    + rng.standard_normal((N, C, 1, 1)))
        s = style.astype(np.float64).reshape(N, C, -1)
        return np.sqrt(s.var(axis=2, ddof=1) + 1e-5), s.mean(axis=2)

    return gen


def cases_adain():
    G = "adain"
    spec = 'input = "N,C,H,W", axes = "H,W", unbiased, affine = external'
    nchw = ["N", "C", "H", "W"]
    for shape, sshape in [((2, 3, 4, 4), (5, 5)), ((1, 4, 3, 5), (3, 5)), ((3, 2, 6, 2), (4, 4))]:
        tag = "x".join(map(str, shape))
        add(G, f"adain_{tag}", spec, {}, lambda dt: FnLayer(adain_ref, dt), shape, TE,
            ext_shape=shape[:2], ext_gen=adain_ext(sshape), stats=(nchw, ["H", "W"], None, True))


def cases_rms():
    G = "rmsnorm"
    spec = 'input = "N,T,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6'
    add(G, "rms_NTD_affine", spec, {"D": 8}, lambda dt: FnLayer(make_rms(1e-6), dt, gamma_shape=(8,)),
        (2, 3, 8), TE, param_shapes={"gamma": (8,)})
    add(G, "rms_NTD_affine_D32", spec, {"D": 32}, lambda dt: FnLayer(make_rms(1e-6), dt, gamma_shape=(32,)),
        (2, 2, 32), TE, param_shapes={"gamma": (32,)})
    add(G, "rms_ND_affine", 'input = "N,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6',
        {"D": 16}, lambda dt: FnLayer(make_rms(1e-6), dt, gamma_shape=(16,)), (4, 16), TE,
        param_shapes={"gamma": (16,)})
    add(G, "rms_NTD_noaffine", 'input = "N,T,D", axes = "D", center = false, eps = 1e-6', {},
        lambda dt: FnLayer(make_rms(1e-6), dt), (3, 2, 10), TE)
    add(G, "rms_NTD_offset", spec, {"D": 8}, lambda dt: FnLayer(make_rms(1e-6), dt, gamma_shape=(8,)),
        (2, 3, 8), TE, xgen=offset_gen(3.0, 1.0), param_shapes={"gamma": (8,)})


def cases_posnorm():
    G = "posnorm"
    nchw = ["N", "C", "H", "W"]
    add(G, "pn_noaffine", 'input = "N,C,H,W", axes = "C"', {}, lambda dt: FnLayer(make_posnorm(), dt),
        (2, 4, 3, 5), TE, stats=(nchw, ["C"], None, False))
    add(G, "pn_affine", 'input = "N,C,H,W", axes = "C", affine', {"C": 4},
        lambda dt: FnLayer(make_posnorm(), dt, gamma_shape=(4,), beta_shape=(4,)),
        (2, 4, 3, 5), TE, param_shapes={"gamma": (4,), "beta": (4,)}, stats=(nchw, ["C"], None, False))
    add(G, "pn_affine_C16", 'input = "N,C,H,W", axes = "C", affine', {"C": 16},
        lambda dt: FnLayer(make_posnorm(), dt, gamma_shape=(16,), beta_shape=(16,)),
        (1, 16, 2, 3), TE, param_shapes={"gamma": (16,), "beta": (16,)}, stats=(nchw, ["C"], None, False))


def features_gen(cols):
    def gen(r, s):
        n, f = s
        assert f == len(cols)
        out = np.empty(s)
        for j, c in enumerate(cols):
            out[:, j] = c(r, n)
        return out

    return gen


AGE = lambda r, n: np.round(r.uniform(0, 65, n))  # noqa: E731
SALARY = lambda r, n: np.round(r.uniform(0, 10000, n), 2)  # noqa: E731
HEIGHT = lambda r, n: r.uniform(1.5, 2.0, n)  # noqa: E731
FLAG = lambda r, n: (r.uniform(0, 1, n) < 0.4).astype(np.float64)  # noqa: E731


def standardize_module(Fn, running=False, momentum=0.1, eps=1e-5):
    eps = EPS_ZERO if eps == 0.0 else eps
    return lambda dt: ModuleLayer(nn.BatchNorm1d(Fn, eps=eps, momentum=momentum, affine=False,
                                                 track_running_stats=running), dt)


def cases_standardize():
    G = "standardize"
    nf = ["N", "F"]
    add(G, "std_age_salary", 'input = "N,F", axes = "N"', {}, standardize_module(2), (20, 2), TE,
        xgen=features_gen([AGE, SALARY]), stats=(nf, ["N"], None, False))
    add(G, "std_age_salary_eps0", 'input = "N,F", axes = "N", eps = 0.0', {},
        standardize_module(2, eps=0.0), (20, 2), TE,
        xgen=features_gen([AGE, SALARY]), stats=(nf, ["N"], None, False))
    add(G, "std_age_salary_running_m0.1", 'input = "N,F", axes = "N", running_stats, momentum = 0.1', {"F": 2},
        standardize_module(2, running=True), (16, 2), TTE,
        xgen=features_gen([AGE, SALARY]), stats=(nf, ["N"], None, False))
    add(G, "std_four_features", 'input = "N,F", axes = "N"', {}, standardize_module(4), (24, 4), TE,
        xgen=features_gen([AGE, SALARY, HEIGHT, FLAG]), stats=(nf, ["N"], None, False))
    add(G, "std_four_features_running_cum", 'input = "N,F", axes = "N", running_stats, momentum = "cumulative"',
        {"F": 4}, standardize_module(4, running=True, momentum=None), (12, 4), TTE,
        xgen=features_gen([AGE, SALARY, HEIGHT, FLAG]), stats=(nf, ["N"], None, False))


def cases_stress():
    G = "stress"
    nchw = ["N", "C", "H", "W"]
    off = offset_gen(1e4, 0.1)
    # mean 1e4, std 0.1
    add(G, "stress_bn2d_offset1e4", bn_spec("N,C,H,W", "N,H,W", True, True, 0.1), {"C": 3},
        lambda dt: ModuleLayer(bn_module(2, 3), dt), (4, 3, 4, 5), TTE, xgen=off,
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(nchw, ["N", "H", "W"], None, False))
    add(G, "stress_bn1d_offset1e4_large", bn_spec("N,C", "N", True, True, 0.1), {"C": 2},
        lambda dt: ModuleLayer(bn_module(1, 2), dt), (512, 2), TE, xgen=off,
        param_shapes={"gamma": (2,), "beta": (2,)}, stats=(["N", "C"], ["N"], None, False))
    add(G, "stress_ln_offset1e4", 'input = "N,T,D", axes = "D", affine = "D"', {"D": 16},
        lambda dt: ModuleLayer(nn.LayerNorm(16), dt), (2, 3, 16), TE, xgen=off,
        param_shapes={"gamma": (16,), "beta": (16,)}, stats=(["N", "T", "D"], ["D"], None, False))
    add(G, "stress_gn_offset1e4", 'input = "N,C,H,W", axes = "C,H,W", groups = 2, affine', {"C": 4},
        lambda dt: ModuleLayer(nn.GroupNorm(2, 4), dt), (2, 4, 3, 4), TE, xgen=off,
        param_shapes={"gamma": (4,), "beta": (4,)}, stats=(nchw, ["C", "H", "W"], 2, False))
    add(G, "stress_in2d_offset1e4_running", bn_spec("N,C,H,W", "H,W", True, True, 0.1), {"C": 3},
        lambda dt: ModuleLayer(in_module(2, 3, True, True), dt, count_batches=True), (2, 3, 4, 4), TTE, xgen=off,
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(nchw, ["H", "W"], None, False))
    add(G, "stress_std_offset1e4", 'input = "N,F", axes = "N"', {}, standardize_module(3), (64, 3), TE,
        xgen=off, stats=(["N", "F"], ["N"], None, False))
    add(G, "stress_std_offset1e4_running", 'input = "N,F", axes = "N", running_stats', {"F": 3},
        standardize_module(3, running=True), (32, 3), TTE,
        xgen=off, stats=(["N", "F"], ["N"], None, False))
    # negative offset, larger spread
    add(G, "stress_bn2d_offset-5e3_std2", bn_spec("N,C,H,W", "N,H,W", True, True, 0.1), {"C": 2},
        lambda dt: ModuleLayer(bn_module(2, 2), dt), (3, 2, 5, 5), TTE, xgen=offset_gen(-5e3, 2.0),
        param_shapes={"gamma": (2,), "beta": (2,)}, stats=(nchw, ["N", "H", "W"], None, False))
    # large scale, no offset
    add(G, "stress_ln_scale1e4", 'input = "N,T,D", axes = "D", affine = "D"', {"D": 10},
        lambda dt: ModuleLayer(nn.LayerNorm(10), dt), (2, 2, 10), TE, xgen=offset_gen(0.0, 1e4),
        param_shapes={"gamma": (10,), "beta": (10,)}, stats=(["N", "T", "D"], ["D"], None, False))
    # near-constant groups: eps (1e-5) dominates the variance (~1e-12)
    nc = nearconst_gen(0.5, 1e-6)
    add(G, "stress_bn2d_nearconst", bn_spec("N,C,H,W", "N,H,W", True, True, 0.1), {"C": 3},
        lambda dt: ModuleLayer(bn_module(2, 3), dt), (3, 3, 3, 4), TTE, xgen=nc,
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(nchw, ["N", "H", "W"], None, False))
    add(G, "stress_ln_nearconst", 'input = "N,T,D", axes = "D", affine = "D"', {"D": 8},
        lambda dt: ModuleLayer(nn.LayerNorm(8), dt), (2, 3, 8), TE, xgen=nc,
        param_shapes={"gamma": (8,), "beta": (8,)}, stats=(["N", "T", "D"], ["D"], None, False))
    add(G, "stress_gn_nearconst", 'input = "N,C,L", axes = "C,L", groups = 3, affine', {"C": 6},
        lambda dt: ModuleLayer(nn.GroupNorm(3, 6), dt), (2, 6, 4), TE, xgen=nc,
        param_shapes={"gamma": (6,), "beta": (6,)}, stats=(["N", "C", "L"], ["C", "L"], 3, False))
    add(G, "stress_in1d_nearconst", bn_spec("N,C,L", "L", True, False), {"C": 3},
        lambda dt: ModuleLayer(in_module(1, 3, True, False), dt), (2, 3, 8), TE, xgen=nc,
        param_shapes={"gamma": (3,), "beta": (3,)}, stats=(["N", "C", "L"], ["L"], None, False))
    add(G, "stress_bn2d_const_exact", bn_spec("N,C,H,W", "N,H,W", True, True, 0.1), {"C": 2},
        lambda dt: ModuleLayer(bn_module(2, 2), dt), (2, 2, 3, 3), TTE, xgen=lambda r, s: np.full(s, 0.75),
        param_shapes={"gamma": (2,), "beta": (2,)}, stats=(nchw, ["N", "H", "W"], None, False))
    add(G, "stress_ws_official_nearconst", 'input = "O,I,kh,kw", axes = "I,kh,kw", unbiased, eps_mode = "std", eps = 1e-5',
        {}, lambda dt: FnLayer(ws_official, dt), (3, 4, 3, 3), TE, xgen=nearconst_gen(0.02, 1e-6),
        stats=(["O", "I", "kh", "kw"], ["I", "kh", "kw"], None, True))
    add(G, "stress_adain_nearconst", 'input = "N,C,H,W", axes = "H,W", unbiased, affine = external', {},
        lambda dt: FnLayer(adain_ref, dt), (2, 3, 4, 4), TE, xgen=nc,
        ext_shape=(2, 3), ext_gen=adain_ext((4, 4)), stats=(nchw, ["H", "W"], None, True))
    # RMSNorm with values around 1e-4 (eps = 1e-6 dominates mean(x^2) ~ 1e-8)
    add(G, "stress_rms_small1e-4", 'input = "N,T,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6',
        {"D": 16}, lambda dt: FnLayer(make_rms(1e-6), dt, gamma_shape=(16,)), (2, 3, 16), TE,
        xgen=offset_gen(0.0, 1e-4), param_shapes={"gamma": (16,)})
    add(G, "stress_rms_offset1e4", 'input = "N,T,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6',
        {"D": 16}, lambda dt: FnLayer(make_rms(1e-6), dt, gamma_shape=(16,)), (2, 3, 16), TE,
        xgen=off, param_shapes={"gamma": (16,)})


# --------------------------------------------------------------------------------------
# Self-checks against alternative torch formulations
# --------------------------------------------------------------------------------------


def self_check():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, generator=g, dtype=F64)
    w = torch.rand(8, generator=g, dtype=F64) + 0.5
    ref = nn.RMSNorm(8, eps=1e-6).to(F64)
    with torch.no_grad():
        ref.weight.copy_(w)
    assert torch.allclose(make_rms(1e-6)(x, w, None, {}), ref(x), rtol=1e-13, atol=1e-14)
    # AdaIN with unit scale/zero shift == instance norm with unbiased var
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=F64)
    ext = {"scale": torch.ones(2, 3, dtype=F64), "shift": torch.zeros(2, 3, dtype=F64)}
    m = x.mean(dim=(2, 3), keepdim=True)
    v = x.var(dim=(2, 3), keepdim=True)
    assert torch.allclose(adain_ref(x, None, None, ext), (x - m) / torch.sqrt(v + 1e-5), rtol=1e-13, atol=1e-14)
    # WS official == (w - mean) / (std + eps)
    w4 = torch.randn(4, 3, 3, 3, generator=g, dtype=F64)
    m = w4.mean(dim=(1, 2, 3), keepdim=True)
    s = w4.std(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(ws_official(w4, None, None, {}), (w4 - m) / (s + 1e-5), rtol=1e-13, atol=1e-14)
    # posnorm == explicit per-position normalization
    x = torch.randn(2, 4, 3, 5, generator=g, dtype=F64)
    v, m = torch.var_mean(x, dim=1, keepdim=True, correction=0)
    assert torch.allclose(make_posnorm()(x, None, None, {}), (x - m) / torch.sqrt(v + 1e-5), rtol=1e-13, atol=1e-14)


def main():
    self_check()
    for fn in (cases_batchnorm, cases_layernorm, cases_instancenorm, cases_groupnorm, cases_weight_std,
               cases_bcn, cases_adain, cases_rms, cases_posnorm, cases_standardize, cases_stress):
        fn()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    total = 0
    for group, cases in CASES.items():
        built = [build_case_json(c) for c in cases]
        dump_group(OUT_DIR / f"{group}.json", group, built)
        total += len(built)
        print(f"{group}: {len(built)} cases", file=sys.stderr)
    print(f"total: {total} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
