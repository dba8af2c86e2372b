#!/usr/bin/env python3
"""PyTorch's side of `norm-bench --sweep`: the suite's layers on the sweep's shapes.

    python3 benches/torch_sweep.py --threads 1 --points '[{"family": "ln rows", "case": "ln", "shape": [256, 1024]}]'

`norm-bench --sweep` calls this script with its own list of points (so both sides time the
same shapes) and joins the output. Each point names a case of the suite (`ln`, `rms`, `gn`,
`bn_train`, `bn1d_train`) and a shape; the layer and its backward are built exactly as in
`torch_suite.py` (whose timing function and case builders are imported from
`--suite-dir`, default `../shared/bench` beside the repository), only the shape changes.
One JSON line per (point, pass), as torch_suite.py prints them, plus `shape` and `family`.
"""

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F


def ln_case(shape, eps=1e-5):
    rows, d = shape
    x = torch.randn(rows, d)
    w = torch.rand(d) + 0.5
    b = torch.randn(d) * 0.1

    def fwd():
        return F.layer_norm(x, (d,), w, b, eps)

    with torch.no_grad():
        _, mean, rstd = torch.ops.aten.native_layer_norm(x, [d], w, b, eps)
    dy = torch.randn_like(x)

    def bwd():
        return torch.ops.aten.native_layer_norm_backward(dy, x, [d], mean, rstd, w, b, [True, True, True])

    return x.numel(), fwd, bwd


def rms_case(shape, eps=1e-6):
    rows, d = shape
    x = torch.randn(rows, d)
    w = torch.rand(d) + 0.5

    def fwd():
        return F.rms_norm(x, (d,), w, eps)

    xr = x.clone().requires_grad_(True)
    wr = w.clone().requires_grad_(True)
    y = F.rms_norm(xr, (d,), wr, eps)
    dy = torch.randn_like(x)

    def bwd():
        return torch.autograd.grad(y, (xr, wr), dy, retain_graph=True)

    return x.numel(), fwd, bwd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--points", required=True, help="JSON list of {family, case, shape}")
    ap.add_argument("--seed", type=int, default=0)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--suite-dir", default=os.environ.get("NORMKIT_SUITE_DIR", os.path.join(here, "..", "..", "shared", "bench")))
    args = ap.parse_args()

    sys.path.insert(0, args.suite_dir)
    import torch_suite  # noqa: E402  (the shared suite: time_fn, _bn_case, _gn_case)

    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    # --alloc steady, as the suite runs: freed memory is kept for reuse.
    libc.mallopt(-4, 0)
    libc.mallopt(-1, 2**31 - 1)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    builders = {
        "ln": ln_case,
        "rms": rms_case,
        "gn": lambda s: torch_suite._gn_case(tuple(s), 32)[:3],
        "bn_train": lambda s: torch_suite._bn_case(tuple(s), False, True)[:3],
        "bn1d_train": lambda s: torch_suite._bn_case(tuple(s), False, True)[:3],
    }
    for p in json.loads(args.points):
        numel, fwd, bwd = builders[p["case"]](p["shape"])
        for pname, fn, no_grad in (("fwd", fwd, True), ("bwd", bwd, False)):
            if fn is None:
                continue
            med, mn, reps, _ = torch_suite.time_fn(fn, 0, args.budget, no_grad)
            print(json.dumps({
                "family": p["family"], "case": p["case"], "shape": p["shape"], "pass": pname,
                "threads": args.threads, "median_ms": round(med * 1e3, 5), "min_ms": round(mn * 1e3, 5),
                "reps": reps, "impl": "torch " + torch.__version__,
            }), flush=True)


if __name__ == "__main__":
    main()
