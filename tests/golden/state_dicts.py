#!/usr/bin/env python3
"""PyTorch state dicts (safetensors) for normkit's StateDict tests, and the check that
normkit-written files load back into PyTorch.

Usage (from the repository root; torch and safetensors as in requirements.txt):

    python3 tests/golden/state_dicts.py
        Trains a few small PyTorch models, saves their state dicts with
        safetensors.torch.save_file into tests/golden/state_dicts/*.safetensors, and writes
        tests/golden/state_dicts/cases.json: per normkit layer to load, the file, the key
        prefix, the normkit spec and sizes, PyTorch's keys under the prefix, an input x and
        PyTorch's eval output y (float64, from the saved parameters). Byte-identical on rerun.

    python3 tests/golden/state_dicts.py --check DIR
        DIR holds the files `cargo test -p normkit --test layers state_dict::` writes (by default
        target/tmp/state_dicts/<case>.safetensors): each is what a normkit layer saved
        (`layer.state_dict(prefix)`) after loading the case's PyTorch file. For every case:
        the keys equal PyTorch's keys under the prefix, every value equals PyTorch's
        (after the dtype conversion of the load), the file loads into the PyTorch module
        with `load_state_dict(strict=True)` and gives the saved eval output, and the bytes
        equal `safetensors.torch.save` of PyTorch's own tensors where the dtypes and shapes
        agree (normkit writes its layer's dtype and shapes).
"""

import os

# Same reproducibility settings as generate.py (before torch is imported).
os.environ["ATEN_CPU_CAPABILITY"] = "default"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import copy  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import safetensors.torch as st  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

torch.set_num_threads(1)

OUT_DIR = Path(__file__).resolve().parent / "state_dicts"


def rng(name):
    g = torch.Generator()
    g.manual_seed(zlib.crc32(name.encode()))
    return g


def randn(g, shape, mean=0.3, std=1.5):
    return (torch.randn(shape, generator=g, dtype=torch.float64) * std + mean).float()


def train(model, g, x_shape, steps, lr=0.1):
    """A few SGD steps on sum(model(x) * w), so parameters and running statistics move."""
    model.train()
    dtype = next(model.parameters()).dtype
    for _ in range(steps):
        x = randn(g, x_shape).to(dtype)
        y = model(x)
        w = torch.randn(y.shape, generator=g, dtype=dtype)
        (y * w).sum().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
                p.grad = None
    model.eval()


class GroupAffine(nn.Module):
    """Stage 2 of the official Batch-Channel Norm (BCNorm): batch statistics per (sample,
    group) via torch.batch_norm on the (1, N*G, -1) view, then per-group weight/bias of
    shape [1, G, 1] (normkit: `affine = "G"`, shape [G])."""

    def __init__(self, groups, eps=1e-5):
        super().__init__()
        self.groups = groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, groups, 1))
        self.bias = nn.Parameter(torch.zeros(1, groups, 1))

    def forward(self, x):
        n = x.size(0)
        out = x.reshape(1, n * self.groups, -1)
        out = torch.batch_norm(out, None, None, None, None, True, 0.0, self.eps, True)
        out = out.view(n, self.groups, -1)
        return (self.weight * out + self.bias).view_as(x)


class BCNorm(nn.Module):
    def __init__(self, channels, groups):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.gn = GroupAffine(groups)

    def forward(self, x):
        return self.gn(self.bn(x))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        self.gn = nn.GroupNorm(2, 6)

    def forward(self, x):
        return torch.relu(self.gn(self.conv(x)))


class Nested(nn.Module):
    """A model with a GroupNorm nested under `layer.gn.` among other layers' weights."""

    def __init__(self):
        super().__init__()
        self.layer = Block()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.layer(x).mean(dim=(2, 3)))


class Bf16Net(nn.Module):
    """A small conv net trained in float32, then saved in bfloat16 (`model.to(torch.bfloat16)`)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.norm = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)

    def forward(self, x):
        return self.gn(torch.relu(self.norm(self.stem(x))))


BN2D = 'input = "N,C,H,W", axes = "N,H,W", affine, running_stats, momentum = 0.1'
GN2D = 'input = "N,C,H,W", axes = "C,H,W", groups = 2, affine'

# file -> (model builder, train input shape, train steps, dtype to save in, layers to load).
# A layer: (case name, prefix, path of the submodule, normkit spec, sizes, eval input shape).
FILES = {
    "bn2d": (
        lambda: nn.BatchNorm2d(3), [4, 3, 4, 4], 3, torch.float32,
        [("bn2d", "", "", BN2D, {"C": 3}, [2, 3, 4, 4])],
    ),
    "nested_gn": (
        Nested, [2, 3, 3, 3], 2, torch.float32,
        [("nested_gn", "layer.gn.", "layer.gn", GN2D, {"C": 6}, [2, 6, 3, 3])],
    ),
    "ln_nobias": (
        lambda: nn.LayerNorm(8, bias=False), [2, 3, 8], 2, torch.float32,
        [("ln_nobias", "", "", 'input = "N,T,D", axes = "D", affine = "D", bias = false',
          {"D": 8}, [2, 3, 8])],
    ),
    "ln_chw": (
        lambda: nn.LayerNorm([3, 2, 4]), [2, 3, 2, 4], 2, torch.float32,
        [("ln_chw", "", "", 'input = "N,C,H,W", axes = "C,H,W", affine = "C,H,W"',
          {"C": 3, "H": 2, "W": 4}, [2, 3, 2, 4])],
    ),
    "in2d_running": (
        lambda: nn.InstanceNorm2d(3, affine=True, track_running_stats=True), [2, 3, 4, 4], 3,
        torch.float32,
        [("in2d_running", "", "",
          'input = "N,C,H,W", axes = "H,W", affine, running_stats, momentum = 0.1',
          {"C": 3}, [2, 3, 4, 4])],
    ),
    "rms": (
        lambda: nn.RMSNorm(8, eps=1e-6), [2, 3, 8], 2, torch.float32,
        [("rms", "", "",
          'input = "N,T,D", axes = "D", center = false, affine = "D", bias = false, eps = 1e-6',
          {"D": 8}, [2, 3, 8])],
    ),
    "bcn": (
        lambda: BCNorm(4, 2), [3, 4, 3, 3], 2, torch.float32,
        [("bcn", "", "",
          'input = "N,C,H,W", chain(bn(axes = "N,H,W", affine, running_stats), '
          'gn(axes = "C,H,W", groups = 2, affine = "G"))',
          {"C": 4}, [2, 4, 3, 3])],
    ),
    "bf16_net": (
        Bf16Net, [4, 3, 3, 3], 3, torch.bfloat16,
        [("bf16_bn", "norm.", "norm", BN2D, {"C": 4}, [2, 4, 3, 3]),
         ("bf16_gn", "gn.", "gn", GN2D, {"C": 4}, [2, 4, 3, 3])],
    ),
    "f16_ln": (
        lambda: nn.LayerNorm(6), [3, 6], 2, torch.float16,
        [("f16_ln", "", "", 'input = "N,D", axes = "D", affine = "D"', {"D": 6}, [3, 6])],
    ),
    "f64_bn1d": (
        lambda: nn.BatchNorm1d(5), [6, 5], 3, torch.float64,
        [("f64_bn1d", "", "", 'input = "N,C", axes = "N", affine, running_stats, momentum = 0.1',
          {"C": 5}, [4, 5])],
    ),
}

DTYPE_NAME = {torch.float32: "F32", torch.float64: "F64", torch.bfloat16: "BF16",
              torch.float16: "F16"}


def submodule(model, path):
    return model.get_submodule(path) if path else model


def build(file):
    """The trained model of `file`, in its save dtype."""
    make, train_shape, steps, dtype, _ = FILES[file]
    torch.manual_seed(zlib.crc32(file.encode()))
    model = make()
    if dtype == torch.float64:
        model = model.double()  # trained in float64: values not representable in f32
    train(model, rng(file), train_shape, steps)
    return model.to(dtype)


def fresh(file):
    """An untrained model of `file`'s architecture in its save dtype (to load files into)."""
    make, _, _, dtype, _ = FILES[file]
    torch.manual_seed(0)
    return make().to(dtype).eval()


def reference(sub, x):
    """PyTorch's eval output in float64 from the (exactly widened) saved parameters."""
    m = copy.deepcopy(sub).double().eval()
    with torch.no_grad():
        return m(x.double())


def enc(t):
    a = t.detach().cpu().to(torch.float64).numpy()
    return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}


def generate():
    OUT_DIR.mkdir(exist_ok=True)
    cases = []
    for file, (_, _, _, dtype, layers) in FILES.items():
        model = build(file)
        path = OUT_DIR / f"{file}.safetensors"
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        st.save_file(sd, str(path))
        # Self-check: the file loads back into a fresh model with the same outputs.
        back = fresh(file)
        back.load_state_dict(st.load_file(str(path)), strict=True)
        for name, prefix, sub_path, spec, sizes, x_shape in layers:
            x = randn(rng(name + "/x"), x_shape)
            y = reference(submodule(model, sub_path), x)
            y2 = reference(submodule(back, sub_path), x)
            assert torch.equal(y, y2), name
            keys = sorted(k for k in sd if k.startswith(prefix))
            cases.append({
                "name": name,
                "file": f"{file}.safetensors",
                "file_dtype": DTYPE_NAME[dtype],
                "prefix": prefix,
                "spec": spec,
                "sizes": sizes,
                "keys": keys,
                "x": enc(x),
                "y": enc(y),
            })
    meta = {
        "generator": "tests/golden/state_dicts.py",
        "torch": torch.__version__.split("+")[0],
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }
    lines = ",\n".join(json.dumps(c, sort_keys=True, separators=(",", ":")) for c in cases)
    text = ('{"meta": ' + json.dumps(meta, sort_keys=True) + ',\n "cases": [\n' + lines
            + '\n]}\n')
    (OUT_DIR / "cases.json").write_text(text)
    total = sum(p.stat().st_size for p in OUT_DIR.iterdir())
    print(f"wrote {len(FILES)} files, {len(cases)} cases to {OUT_DIR} ({total} bytes)")


def check(dir_):
    dir_ = Path(dir_)
    cases = json.loads((OUT_DIR / "cases.json").read_text())["cases"]
    failures = 0
    for case in cases:
        name, prefix = case["name"], case["prefix"]
        file = case["file"].removesuffix(".safetensors")
        path = dir_ / f"{name}.safetensors"
        if not path.exists():
            print(f"{name}: MISSING {path} (run `cargo test -p normkit --test layers state_dict::`)")
            failures += 1
            continue
        ours = st.load_file(str(path))
        model = fresh(file)
        model.load_state_dict(st.load_file(str(OUT_DIR / case["file"])), strict=True)
        theirs = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
        problems = []
        if sorted(ours) != sorted(theirs):
            problems.append(f"keys {sorted(ours)} != torch's {sorted(theirs)}")
        else:
            for k, t in theirs.items():
                o = ours[k]
                if o.numel() != t.numel():
                    problems.append(f"{k}: {list(o.shape)} vs torch {list(t.shape)}")
                elif not torch.equal(o.reshape(t.shape).to(t.dtype), t):
                    problems.append(f"{k}: values differ")
        loaded = "-"
        if not problems:
            # Load normkit's file into a fresh module (strict) and run it.
            target = fresh(file)
            sub_path = [l for l in FILES[file][4] if l[0] == name][0][2]
            sub = submodule(target, sub_path)
            sub_sd = sub.state_dict()
            sub.load_state_dict(
                {k[len(prefix):]: v.reshape(sub_sd[k[len(prefix):]].shape)
                 for k, v in ours.items()},
                strict=True,
            )
            x = torch.tensor(case["x"]["data"], dtype=torch.float64).reshape(case["x"]["shape"])
            y = reference(sub, x.float())
            want = torch.tensor(case["y"]["data"], dtype=torch.float64).reshape(y.shape)
            if torch.equal(y, want):
                loaded = "loads into torch (strict), same eval output"
            else:
                problems.append("eval output after loading differs")
        same_format = all(
            ours[k].dtype == t.dtype and ours[k].shape == t.shape for k, t in theirs.items()
        ) if not problems else False
        if problems:
            byte_note = "-"
        elif same_format:
            torch_bytes = st.save({k: v.contiguous() for k, v in theirs.items()})
            if path.read_bytes() == torch_bytes:
                byte_note = "bytes identical to safetensors.torch.save"
            else:
                byte_note = "BYTES DIFFER from safetensors.torch.save"
                problems.append(byte_note)
        else:
            diffs = sorted({f"{ours[k].dtype}/{list(ours[k].shape)} vs {t.dtype}/{list(t.shape)}"
                            for k, t in theirs.items()
                            if ours[k].dtype != t.dtype or ours[k].shape != t.shape})
            byte_note = "bytes not comparable (normkit " + "; ".join(diffs) + ")"
        status = "FAIL " + "; ".join(problems) if problems else "ok"
        print(f"{name}: {status}; {loaded}; {byte_note}")
        failures += bool(problems)
    print(f"{len(cases) - failures}/{len(cases)} cases ok")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2]))
    elif len(sys.argv) == 1:
        generate()
    else:
        print(__doc__)
        sys.exit(2)
