#!/usr/bin/env python3
"""PyTorch CPU baseline for the normalization-layer suite in bfloat16 (or float16), contiguous.

A copy of /work/shared/bench/torch_suite.py (the float32 suite) with one change of substance:
`torch.set_default_dtype(--dtype)` before the cases are built, so every tensor (x, dy, the
parameters and running statistics) and every module is bfloat16, as after
`module.to(torch.bfloat16)` with `x.to(torch.bfloat16)`. Bytes per element are 2 in "gbps",
and "dtype" is added to each line. norm-bench's `--dtype bf16` times the same cases.

Prints one JSON object per line:
  {"case", "pass": "fwd"|"bwd", "threads", "median_ms", "gbps", ...extras}
Extras: "min_ms", "reps", "impl" (what was timed), "minflt_per_call" (minor page faults per
timed call: glibc serves allocations >= 32 MiB with fresh mmap, so e.g. every 32 MiB output
costs ~8192 page faults; use --alloc steady to see the kernel-only cost).

gbps = minimal bytes / median time, with
  fwd: read x + write y           = 2 * numel * 2
  bwd: read x + read dy + write dx = 3 * numel * 2   (parameter vectors ignored)

Timing method
  fwd: module / functional call under torch.no_grad() (what a user calls).
  bwd: the direct aten backward kernel where one exists (only the backward kernel
       is timed; forward outputs such as save_mean/rstd are precomputed once):
         bn_train, bn_train_nhwc -> aten.native_batch_norm_backward (train=True)
         ln                      -> aten.native_layer_norm_backward
         gn, gn_big              -> aten.native_group_norm_backward
         in                      -> aten.native_batch_norm_backward on x.view(1, N*C, H, W),
                                    weight=None (exactly what autograd calls for instance_norm)
       otherwise torch.autograd.grad on a precomputed graph (retain_graph=True):
         rms  (CPU rms_norm is composite; aten._fused_rms_norm_backward has no CPU kernel)
         ws   (weight standardization is composed of mean/std/sub/div ops)
         bcn  (BatchNorm2d(train) -> GroupNorm composition)
       Gradients for all affine parameters are requested too (output_mask all True),
       as in training.
  Warm-up, then `reps` timed calls; median reported. The same input/grad buffers are reused
  every call, so working sets up to ~100 MB stay largely LLC-resident on a big-LLC Xeon:
  gbps can then exceed DRAM STREAM bandwidth (compare against an LLC-sized STREAM too).
  --reps 0 (default) = auto: ~--budget seconds of timed calls per (case, pass),
  clamped to [10, 200]; the full suite at 1 and 2 threads finishes in well under 2 minutes
  on a 2-core machine.

Allocator (--alloc):
  default : glibc malloc as torch normally runs. Allocations >= 32 MiB (the 32 MiB outputs of
            ln/rms/in) are fresh mmaps unless the heap already has room, so results for those cases
            include ~8192 page faults per 32 MiB and depend on what ran earlier in the process.
  steady  : mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1) at start-up: freed memory is kept and
            reused, so timed calls take no page faults (what a caching allocator or a long training
            loop sees); this isolates the kernel cost.

Usage: python torch_suite_bf16.py --threads 1 [--reps R] [--cases bn_train,ln,...] [--alloc steady]
"""
import argparse
import gc
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ALL_CASES = ["bn_train", "bn_eval", "bn_train_nhwc", "bn1d_train", "bn1d_eval", "bn1d_big_train", "ln", "rms", "gn", "gn_big", "in", "ws", "bcn"]
EPS = 1e-5


def _bn_case(shape, channels_last, train):
    x = torch.randn(*shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    C = shape[1]
    module = nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d
    bn = module(C, eps=EPS, momentum=0.1, affine=True, track_running_stats=True)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    bn.train(train)

    def fwd():
        return bn(x)

    bwd = None
    if train:
        w, b = bn.weight.detach(), bn.bias.detach()
        rm, rv = bn.running_mean.clone(), bn.running_var.clone()
        with torch.no_grad():
            _, save_mean, save_invstd = torch.ops.aten.native_batch_norm(x, w, b, rm, rv, True, 0.1, EPS)
        dy = torch.randn_like(x)  # randn_like preserves channels_last

        def bwd():
            return torch.ops.aten.native_batch_norm_backward(
                dy, x, w, rm, rv, save_mean, save_invstd, True, EPS, [True, True, True])

    return x.numel(), fwd, bwd, "module:" + module.__name__, "aten.native_batch_norm_backward"


def case_bn_train():
    return _bn_case((32, 64, 56, 56), False, True)


def case_bn_eval():
    return _bn_case((32, 64, 56, 56), False, False)


def case_bn_train_nhwc():
    return _bn_case((32, 64, 56, 56), True, True)


# BatchNorm1d on [N, C] (MLPs, tabular data, input standardization over N): statistics over
# the rows for every column. A mid-size tensor that stays in L2, and a large one.
def case_bn1d_train():
    return _bn_case((256, 512), False, True)


def case_bn1d_eval():
    return _bn_case((256, 512), False, False)


def case_bn1d_big_train():
    return _bn_case((4096, 1024), False, True)


def case_ln():
    x = torch.randn(8192, 1024)
    w = torch.rand(1024) + 0.5
    b = torch.randn(1024) * 0.1

    def fwd():
        return F.layer_norm(x, (1024,), w, b, EPS)

    with torch.no_grad():
        _, mean, rstd = torch.ops.aten.native_layer_norm(x, [1024], w, b, EPS)
    dy = torch.randn_like(x)

    def bwd():
        return torch.ops.aten.native_layer_norm_backward(dy, x, [1024], mean, rstd, w, b, [True, True, True])

    return x.numel(), fwd, bwd, "F.layer_norm", "aten.native_layer_norm_backward"


def case_rms():
    x = torch.randn(8192, 1024)
    w = torch.rand(1024) + 0.5

    def fwd():
        return F.rms_norm(x, (1024,), w, 1e-6)

    xr = x.clone().requires_grad_(True)
    wr = w.clone().requires_grad_(True)
    y = F.rms_norm(xr, (1024,), wr, 1e-6)
    dy = torch.randn_like(x)

    def bwd():
        return torch.autograd.grad(y, (xr, wr), dy, retain_graph=True)

    return x.numel(), fwd, bwd, "F.rms_norm", "autograd.grad(composite rms_norm graph)"


def _gn_case(shape, G):
    x = torch.randn(*shape)
    N, C = shape[0], shape[1]
    HxW = x.numel() // (N * C)
    gn = nn.GroupNorm(G, C, eps=EPS, affine=True)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    w, b = gn.weight.detach(), gn.bias.detach()

    def fwd():
        return gn(x)

    with torch.no_grad():
        _, mean, rstd = torch.ops.aten.native_group_norm(x, w, b, N, C, HxW, G, EPS)
    dy = torch.randn_like(x)

    def bwd():
        return torch.ops.aten.native_group_norm_backward(dy, x, mean, rstd, w, N, C, HxW, G, [True, True, True])

    return x.numel(), fwd, bwd, "module:GroupNorm", "aten.native_group_norm_backward"


def case_gn():
    return _gn_case((8, 256, 28, 28), 32)


def case_gn_big():
    return _gn_case((2, 320, 64, 64), 32)


def case_in():
    shape = (8, 64, 128, 128)
    x = torch.randn(*shape)
    inorm = nn.InstanceNorm2d(64, eps=EPS, affine=False, track_running_stats=False)

    def fwd():
        return inorm(x)

    N, C, H, W = shape
    xv = x.view(1, N * C, H, W)
    with torch.no_grad():
        _, save_mean, save_invstd = torch.ops.aten.native_batch_norm(xv, None, None, None, None, True, 0.1, EPS)
    dyv = torch.randn_like(xv)

    def bwd():
        return torch.ops.aten.native_batch_norm_backward(
            dyv, xv, None, None, None, save_mean, save_invstd, True, EPS, [True, False, False])

    return x.numel(), fwd, bwd, "module:InstanceNorm2d", "aten.native_batch_norm_backward on view(1,N*C,H,W)"


def _ws(w):
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    std = w.std(dim=(1, 2, 3), keepdim=True, unbiased=True)
    return (w - mean) / (std + 1e-5)


def case_ws():
    w = torch.randn(512, 256, 3, 3)

    def fwd():
        return _ws(w)

    wr = w.clone().requires_grad_(True)
    y = _ws(wr)
    dy = torch.randn_like(w)

    def bwd():
        return torch.autograd.grad(y, (wr,), dy, retain_graph=True)

    return w.numel(), fwd, bwd, "torch ops (mean,std,sub,add,div)", "autograd.grad"


def case_bcn():
    x = torch.randn(8, 256, 28, 28)
    bn = nn.BatchNorm2d(256, eps=EPS, momentum=0.1).train()
    gn = nn.GroupNorm(32, 256, eps=EPS)
    with torch.no_grad():
        for p in (bn.weight, gn.weight):
            p.uniform_(0.5, 1.5)
        for p in (bn.bias, gn.bias):
            p.uniform_(-0.5, 0.5)

    def fwd():
        return gn(bn(x))

    xr = x.clone().requires_grad_(True)
    y = gn(bn(xr))
    dy = torch.randn_like(x)
    inputs = (xr, bn.weight, bn.bias, gn.weight, gn.bias)

    def bwd():
        return torch.autograd.grad(y, inputs, dy, retain_graph=True)

    return x.numel(), fwd, bwd, "module:BatchNorm2d(train)->GroupNorm", "autograd.grad"


CASES = {
    "bn_train": case_bn_train,
    "bn_eval": case_bn_eval,
    "bn_train_nhwc": case_bn_train_nhwc,
    "bn1d_train": case_bn1d_train,
    "bn1d_eval": case_bn1d_eval,
    "bn1d_big_train": case_bn1d_big_train,
    "ln": case_ln,
    "rms": case_rms,
    "gn": case_gn,
    "gn_big": case_gn_big,
    "in": case_in,
    "ws": case_ws,
    "bcn": case_bcn,
}


def time_fn(fn, reps, budget, no_grad):
    ctx = torch.no_grad if no_grad else torch.enable_grad
    with ctx():
        # warm-up: at least 3 calls and ~0.15 s
        t_end = time.perf_counter() + 0.15
        n = 0
        t_est = []
        while n < 3 or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            out = fn()
            t_est.append(time.perf_counter() - t0)
            del out
            n += 1
            if n >= 50:
                break
        if reps <= 0:
            est = statistics.median(t_est)
            reps = int(min(200, max(10, budget / max(est, 1e-6))))
        ts = []
        gc_was = gc.isenabled()
        gc.disable()
        flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        try:
            for _ in range(reps):
                t0 = time.perf_counter()
                out = fn()
                t1 = time.perf_counter()
                del out
                ts.append(t1 - t0)
        finally:
            if gc_was:
                gc.enable()
        flt = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0) / reps
    return statistics.median(ts), min(ts), reps, flt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=0, help="timed calls per (case,pass); 0 = auto (budget-based)")
    ap.add_argument("--budget", type=float, default=0.8, help="seconds of timed calls per (case,pass) when --reps 0")
    ap.add_argument("--cases", type=str, default=",".join(ALL_CASES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alloc", choices=["default", "steady"], default="default")
    ap.add_argument("--dtype", choices=["bf16", "f16"], default="bf16")
    args = ap.parse_args()
    torch.set_default_dtype({"bf16": torch.bfloat16, "f16": torch.float16}[args.dtype])

    if args.alloc == "steady":
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
            sys.exit("mallopt failed")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            sys.exit(f"unknown case {c!r}; known: {','.join(ALL_CASES)}")

    for c in cases:
        gc.collect()
        numel, fwd, bwd, fimpl, bimpl = CASES[c]()
        for pname, fn, nbytes, impl, no_grad in (
            ("fwd", fwd, 2 * numel * 2, fimpl, True),
            ("bwd", bwd, 3 * numel * 2, bimpl, False),
        ):
            if fn is None:
                continue
            med, mn, reps, flt = time_fn(fn, args.reps, args.budget, no_grad)
            print(json.dumps({
                "case": c, "pass": pname, "threads": args.threads,
                "median_ms": round(med * 1e3, 4), "gbps": round(nbytes / med / 1e9, 2),
                "min_ms": round(mn * 1e3, 4), "reps": reps, "impl": impl,
                "minflt_per_call": round(flt, 1), "alloc": args.alloc, "dtype": args.dtype,
            }), flush=True)
        del fwd, bwd


if __name__ == "__main__":
    main()
