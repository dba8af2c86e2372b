#!/usr/bin/env python3
"""Golden data for Switchable Normalization (Luo et al. 2018), issue 18 item 5.

PyTorch has no SN module, so the paper's formulas are written with torch ops in float64 and
differentiated by autograd: for alternatives k of statistics axes (IN, LN, BN, ...),
mu = sum_k softmax(mean_weight)_k mu_k and var = sum_k softmax(var_weight)_k var_k (biased
variances per alternative), y = gamma * (x - mu) / sqrt(var + eps) + beta. With
running_stats, the alternative that reduces N keeps running statistics with PyTorch's
BatchNorm rule (momentum, unbiased variance) and uses them in eval (as constants); the other
alternatives stay per sample in eval too.

Usage (from the repository root): python3 tests/golden/switchable.py
Writes tests/golden/data/switchable/<case>.json: the spec, sizes, the logits, gamma/beta,
and per step the input, upstream gradient, mode and the references (y, dx, dgamma, dbeta,
dmean_weight, dvar_weight, running statistics after the step). Byte-identical on rerun.
"""

import os

os.environ["ATEN_CPU_CAPABILITY"] = "default"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)
F64 = torch.float64
OUT = Path(__file__).resolve().parent / "data" / "switchable"


def enc(t):
    t = t.detach().to(F64).contiguous()
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1)]}


def sn_forward(x, reds, batch_alt, mw, vw, gamma, beta, param_view, eps, running):
    """y, and the batch alternative's (mean, biased var, count) for the running update.

    running: None (batch statistics everywhere) or (rm, rv) used for the alternative
    `batch_alt` (eval with running statistics)."""
    p = torch.softmax(mw, 0)
    q = torch.softmax(vw, 0)
    mu = 0.0
    var = 0.0
    batch_stats = None
    for k, red in enumerate(reds):
        m_k = x.mean(dim=red, keepdim=True)
        v_k = ((x - m_k) ** 2).mean(dim=red, keepdim=True)
        if k == batch_alt:
            count = 1
            for d in red:
                count *= x.shape[d]
            batch_stats = (m_k.detach(), v_k.detach(), count)
            if running is not None:
                m_k = running[0].reshape(m_k.shape)
                v_k = running[1].reshape(v_k.shape)
        mu = mu + p[k] * m_k
        var = var + q[k] * v_k
    y = (x - mu) / torch.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma.reshape(param_view) + beta.reshape(param_view)
    return y, batch_stats


def case(name, spec, sizes, shape, reds, batch_alt, param_view, mw, vw, modes, gen,
         momentum=0.1, eps=1e-5, running_stats=True):
    param_shape = [shape[i] for i in range(len(shape)) if param_view[i] != 1]
    gamma = 1.0 + 0.2 * torch.randn(param_shape, generator=gen, dtype=F64)
    beta = 0.2 * torch.randn(param_shape, generator=gen, dtype=F64)
    mw = torch.tensor(mw, dtype=F64)
    vw = torch.tensor(vw, dtype=F64)
    rm = rv = None
    if running_stats:
        kept = [i for i in range(len(shape)) if i not in reds[batch_alt] and i != 0]
        run_shape = [shape[i] for i in kept]
        rm = torch.zeros(run_shape, dtype=F64)
        rv = torch.ones(run_shape, dtype=F64)
    steps = []
    for mode in modes:
        # Inputs with a per-sample and per-channel offset and scale, so the alternatives'
        # statistics differ.
        x = torch.randn(shape, generator=gen, dtype=F64) * 1.5 + 0.7
        x = x + torch.arange(shape[0], dtype=F64).reshape([-1] + [1] * (len(shape) - 1))
        dy = torch.randn(shape, generator=gen, dtype=F64)
        xr = x.clone().requires_grad_(True)
        g = gamma.clone().requires_grad_(True)
        b = beta.clone().requires_grad_(True)
        m = mw.clone().requires_grad_(True)
        v = vw.clone().requires_grad_(True)
        fixed = mode == "eval" and running_stats
        y, bs = sn_forward(xr, reds, batch_alt, m, v, g, b, param_view, eps,
                           (rm, rv) if fixed else None)
        (y * dy).sum().backward()
        if mode == "train" and running_stats:
            mean, var, count = bs
            unbiased = var * count / (count - 1)
            rm = (1 - momentum) * rm + momentum * mean.reshape(rm.shape)
            rv = (1 - momentum) * rv + momentum * unbiased.reshape(rv.shape)
        step = {
            "mode": mode,
            "x": enc(x),
            "dy": enc(dy),
            "y": enc(y),
            "dx": enc(xr.grad),
            "dgamma": enc(g.grad),
            "dbeta": enc(b.grad),
            "dmean_weight": enc(m.grad),
            "dvar_weight": enc(v.grad),
        }
        if running_stats:
            step["running_mean"] = enc(rm)
            step["running_var"] = enc(rv)
        steps.append(step)
    data = {
        "name": name,
        "spec": spec,
        "sizes": sizes,
        "gamma": enc(gamma),
        "beta": enc(beta),
        "mean_weight": enc(mw),
        "var_weight": enc(vw),
        "steps": steps,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f"{name}.json", "w") as f:
        json.dump(data, f, sort_keys=True)
        f.write("\n")


def main():
    gen = torch.Generator().manual_seed(18005)
    nchw = 'input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W", affine, running_stats'
    # IN, LN, BN over N,C,H,W; odd sizes, unequal logits, three train steps then eval.
    case("sn_nchw", nchw, [["C", 4]], [3, 4, 3, 5], [[2, 3], [1, 2, 3], [0, 2, 3]], 2,
         [1, 4, 1, 1], [0.3, -0.2, 0.5], [-0.4, 0.1, 0.2],
         ["train", "train", "train", "eval"], gen)
    # Batch 1 with equal logits (the initial state).
    case("sn_batch1", nchw, [["C", 3]], [1, 3, 4, 4], [[2, 3], [1, 2, 3], [0, 2, 3]], 2,
         [1, 3, 1, 1], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], ["train", "eval"], gen)
    # A sequence layout: LN over D, a token norm over T, BN over N,T; two alternatives
    # weighted apart, eval with running statistics.
    ntd = ('input = "N,T,D", axes = "D" | "T,D" | "N,T", affine = "D", running_stats, '
           'momentum = 0.2')
    case("sn_ntd", ntd, [["D", 3]], [2, 5, 3], [[2], [1, 2], [0, 1]], 2, [1, 1, 3],
         [1.0, -0.5, 0.25], [0.5, 0.75, -1.0], ["train", "train", "eval"], gen,
         momentum=0.2)
    # Two alternatives (IN | LN), no running statistics: eval uses batch statistics.
    two = 'input = "N,C,H,W", axes = "H,W" | "C,H,W", affine'
    case("sn_two", two, [["C", 2]], [2, 2, 3, 3], [[2, 3], [1, 2, 3]], 0, [1, 2, 1, 1],
         [2.0, -1.0], [-1.5, 0.5], ["train", "eval"], gen, running_stats=False)


if __name__ == "__main__":
    main()
