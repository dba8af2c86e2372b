#!/usr/bin/env python3
"""Golden data for issue 18 (part A): sum statistic (L2 norm), FRN + TLU, Ghost Batch Norm.

PyTorch has no modules for these, so each variant is the paper's formula written with torch
ops in float64, differentiated by autograd:

- ``statistic = "sum"``: y = (x - mu) / sqrt(sum((x - mu)^2) + eps) * gamma + beta
  (mu = 0 with ``center = false``: L2 normalization).
- FRN + TLU (Singh & Krishnan 2019): nu2 = mean(x^2) over H,W;
  y = max(gamma * x / sqrt(nu2 + eps) + beta, tau).
- Ghost BN (Hoffer et al. 2017): the batch split into consecutive chunks of ``ghost``
  samples; each chunk is batch-normalized with its own (biased) statistics and moves the
  running statistics once (unbiased variance of the chunk), in order.

Every case runs several training steps (new x and dy each step, same parameters) and
records y, dx, dgamma, dbeta, dtau and the running statistics after each step; ``eval``
records one eval step at the end where the layer has running statistics. "f32" cases
round the inputs and parameters to float32; the reference is still computed in float64.

    python3 tests/golden/post2017_a.py   # writes tests/golden/data/post2017_a/*.json
"""

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
F64 = torch.float64
OUT = Path(__file__).resolve().parent / "data" / "post2017_a"


def enc(t):
    if t is None:
        return None
    a = t.detach().cpu().to(F64).numpy()
    return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}


def rnd(gen, shape, prec, scale=1.0, shift=0.0):
    t = torch.randn(*shape, generator=gen, dtype=F64) * scale + shift
    if prec == "f32":
        t = t.to(torch.float32).to(F64)
    return t


def sum_norm(x, p, red, center, eps, pshape):
    mu = x.mean(dim=red, keepdim=True) if center else torch.zeros((), dtype=F64)
    d = x - mu
    z = d / torch.sqrt((d * d).sum(dim=red, keepdim=True) + eps)
    return z * p["gamma"].reshape(pshape) + p["beta"].reshape(pshape)


def frn(x, p, eps):
    nu2 = (x * x).mean(dim=(2, 3), keepdim=True)
    shape = (1, -1, 1, 1)
    z = p["gamma"].reshape(shape) * x / torch.sqrt(nu2 + eps) + p["beta"].reshape(shape)
    return torch.maximum(z, p["tau"].reshape(shape))


def ghost_bn(x, p, run, batch_dim, red, ghost, eps, momentum, pshape, train):
    if not train:
        rm, rv = run["mean"].reshape(pshape), run["var"].reshape(pshape)
        z = (x - rm) / torch.sqrt(rv + eps)
        return z * p["gamma"].reshape(pshape) + p["beta"].reshape(pshape)
    outs = []
    for chunk in torch.split(x, ghost, dim=batch_dim):
        mu = chunk.mean(dim=red, keepdim=True)
        var = ((chunk - mu) ** 2).mean(dim=red, keepdim=True)
        n = chunk.numel() // mu.numel()
        with torch.no_grad():
            unbiased = var * n / (n - 1)
            run["mean"] = (1 - momentum) * run["mean"] + momentum * mu.reshape(-1)
            run["var"] = (1 - momentum) * run["var"] + momentum * unbiased.reshape(-1)
        z = (chunk - mu) / torch.sqrt(var + eps)
        outs.append(z * p["gamma"].reshape(pshape) + p["beta"].reshape(pshape))
    return torch.cat(outs, dim=batch_dim)


def batch_renorm(x, p, run, red, rmax, dmax, eps, momentum, pshape, train):
    rm, rv = run["mean"].reshape(pshape), run["var"].reshape(pshape)
    if not train:
        z = (x - rm) / torch.sqrt(rv + eps)
        return z * p["gamma"].reshape(pshape) + p["beta"].reshape(pshape)
    mu = x.mean(dim=red, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=red, keepdim=True)
    sigma = torch.sqrt(var + eps)
    sigma_run = torch.sqrt(rv + eps)
    # r and d are constants for the gradient (detached), from the running statistics
    # before this step's update.
    r = torch.clamp(sigma.detach() / sigma_run, 1.0 / rmax, rmax)
    d = torch.clamp((mu.detach() - rm) / sigma_run, -dmax, dmax)
    z = (x - mu) / sigma * r + d
    n = x.numel() // mu.numel()
    with torch.no_grad():
        run["mean"] = (1 - momentum) * run["mean"] + momentum * mu.reshape(-1)
        run["var"] = (1 - momentum) * run["var"] + momentum * (var * n / (n - 1)).reshape(-1)
    return z * p["gamma"].reshape(pshape) + p["beta"].reshape(pshape)


def case(name, spec, sizes, shape, params, fwd, prec, steps=3, running=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    p = {k: rnd(gen, s, prec, sc, sh).requires_grad_(True) for k, (s, sc, sh) in params.items()}
    out = {
        "spec": spec,
        "sizes": sizes,
        "params": {k: enc(v) for k, v in p.items()},
        "steps": [],
    }
    c = sizes[0][1] if sizes else None
    run = {"mean": torch.zeros(c, dtype=F64), "var": torch.ones(c, dtype=F64)} if running else None
    modes = ["train"] * steps + (["eval"] if running else [])
    for mode in modes:
        x = rnd(gen, shape, prec, 2.0, 0.5).requires_grad_(True)
        dy = rnd(gen, shape, prec)
        y = fwd(x, p, run, mode == "train")
        y.backward(dy)
        step = {
            "mode": mode,
            "x": enc(x),
            "dy": enc(dy),
            "y": enc(y),
            "dx": enc(x.grad),
        }
        for k, v in p.items():
            step["d" + k] = enc(v.grad)
            v.grad = None
        if running:
            step["running_mean"] = enc(run["mean"])
            step["running_var"] = enc(run["var"])
        out["steps"].append(step)
    path = OUT / f"{name}_{prec}.json"
    path.write_text(json.dumps(out, sort_keys=True) + "\n")
    print("wrote", path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for prec in ["f64", "f32"]:
        # L2 normalization over D (center = false), per-D affine.
        eps = 1e-6
        case(
            "l2_norm",
            'input = "N,D", axes = "D", center = false, statistic = "sum", affine = "D", eps = 1e-6',
            [("D", 5)],
            (4, 5),
            {"gamma": ((5,), 0.5, 1.0), "beta": ((5,), 0.5, 0.0)},
            lambda x, p, r, t: sum_norm(x, p, (1,), False, eps, (1, -1)),
            prec,
            steps=2,
        )
        # Centered sum statistic over C,L (a LayerNorm dividing by the root of the sum).
        case(
            "sum_centered",
            'input = "N,C,L", axes = "C,L", statistic = "sum", affine, eps = 1e-5',
            [("C", 3)],
            (2, 3, 4),
            {"gamma": ((3,), 0.5, 1.0), "beta": ((3,), 0.5, 0.0)},
            lambda x, p, r, t: sum_norm(x, p, (1, 2), True, 1e-5, (1, -1, 1)),
            prec,
            steps=2,
        )
        # Sum statistic over the batch axis of N,C (the column path: statistics of many
        # groups finished together).
        case(
            "sum_columns",
            'input = "N,C", axes = "N", statistic = "sum", affine',
            [("C", 70)],
            (5, 70),
            {"gamma": ((70,), 0.5, 1.0), "beta": ((70,), 0.5, 0.0)},
            lambda x, p, r, t: sum_norm(x, p, (0,), True, 1e-5, (1, -1)),
            prec,
            steps=2,
        )
        # FRN + TLU; tau around 0 so the threshold bites on some elements.
        case(
            "frn_tlu",
            'input = "N,C,H,W", axes = "H,W", center = false, affine, tlu, eps = 1e-6',
            [("C", 3)],
            (2, 3, 4, 4),
            {
                "gamma": ((3,), 0.5, 1.0),
                "beta": ((3,), 0.5, 0.0),
                "tau": ((3,), 0.3, -0.2),
            },
            lambda x, p, r, t: frn(x, p, 1e-6),
            prec,
            steps=2,
        )
        # Ghost BN, NCHW, N = 10 in chunks of 4, 4, 2.
        case(
            "ghost_bn",
            'input = "N,C,H,W", axes = "N,H,W", ghost = 4, affine, running_stats, momentum = 0.1',
            [("C", 3)],
            (10, 3, 2, 3),
            {"gamma": ((3,), 0.5, 1.0), "beta": ((3,), 0.5, 0.0)},
            lambda x, p, r, t: ghost_bn(x, p, r, 0, (0, 2, 3), 4, 1e-5, 0.1, (1, -1, 1, 1), t),
            prec,
            running=True,
        )
        # Ghost BN with N not outermost (chunks are strided): T,N,C, N = 7 in 3, 3, 1.
        case(
            "ghost_tnc",
            'input = "T,N,C", axes = "T,N", ghost = 3, affine, running_stats, momentum = 0.2',
            [("C", 4)],
            (5, 7, 4),
            {"gamma": ((4,), 0.5, 1.0), "beta": ((4,), 0.5, 0.0)},
            lambda x, p, r, t: ghost_bn(x, p, r, 1, (0, 1), 3, 1e-5, 0.2, (1, 1, -1), t),
            prec,
            running=True,
        )
        # Batch Renorm with tight limits (r and d clamp in the first steps) and a fast
        # momentum (they stop clamping later): N,C,H,W over N,H,W.
        case(
            "batch_renorm",
            'input = "N,C,H,W", axes = "N,H,W", affine, running_stats, momentum = 0.5, '
            "renorm(rmax = 1.5, dmax = 0.5)",
            [("C", 3)],
            (4, 3, 2, 3),
            {"gamma": ((3,), 0.5, 1.0), "beta": ((3,), 0.5, 0.0)},
            lambda x, p, r, t: batch_renorm(x, p, r, (0, 2, 3), 1.5, 0.5, 1e-5, 0.5, (1, -1, 1, 1), t),
            prec,
            steps=4,
            running=True,
        )
        # Batch Renorm over N of an N,C input (BatchNorm1d), default-like limits.
        case(
            "batch_renorm_nc",
            'input = "N,C", axes = "N", affine, running_stats, renorm(rmax = 3.0, dmax = 5.0)',
            [("C", 5)],
            (8, 5),
            {"gamma": ((5,), 0.5, 1.0), "beta": ((5,), 0.5, 0.0)},
            lambda x, p, r, t: batch_renorm(x, p, r, (0,), 3.0, 5.0, 1e-5, 0.1, (1, -1), t),
            prec,
            running=True,
        )


if __name__ == "__main__":
    main()
