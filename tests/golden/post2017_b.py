#!/usr/bin/env python3
"""Golden data for issue 18 part B: masked statistics and Switchable Normalization.

PyTorch has no module for either, so the papers' formulas are written with torch ops in
float64 and differentiated by autograd:

- masked statistics (Flax's `mask=`): mean and biased variance over the positions where the
  mask is true, normalization applied everywhere; a group without unmasked positions gives
  y = 0 (and so dx = 0); running statistics move toward the mean over the groups with at
  least two unmasked values of their mean and unbiased variance;
- Switchable Normalization (Luo et al. 2018): mu = sum_k softmax(mean_weight)_k mu_k,
  var = sum_k softmax(var_weight)_k var_k (biased), running statistics for the
  alternatives over N (PyTorch's momentum rule, unbiased variance), used in eval.

Usage (from the repository root): python3 tests/golden/post2017_b.py
Writes tests/golden/data/post2017_b/<case>.json: the spec, sizes, and per step the input,
mask, upstream gradient, mode and the references (y, dx, parameter gradients, running
statistics after the step). Values are float64; the f32 tests compare with a looser
tolerance. Byte-identical on rerun (fixed seed, one thread, sorted keys).
"""

import os

os.environ["ATEN_CPU_CAPABILITY"] = "default"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)
F64 = torch.float64
OUT = Path(__file__).resolve().parent / "data" / "post2017_b"


def enc(t):
    t = t.detach().to(F64).contiguous()
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1)]}


def enc_mask(m):
    return {"shape": list(m.shape), "data": [bool(v) for v in m.reshape(-1)]}


# --------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------


def masked_forward(x, mask_full, red, eps, gamma, beta, param_view, center=True):
    """y and (mean, var, count) per group; red: the reduced dims; mask_full broadcast to x."""
    m = mask_full.to(F64)
    count = m.sum(dim=red, keepdim=True)
    safe = count.clamp(min=1.0)
    if center:
        mean = (x * m).sum(dim=red, keepdim=True) / safe
    else:
        mean = torch.zeros_like(count)
    var = (((x - mean) ** 2) * m).sum(dim=red, keepdim=True) / safe
    xhat = (x - mean) / torch.sqrt(var + eps)
    y = xhat
    if gamma is not None:
        y = y * gamma.reshape(param_view)
        if beta is not None:
            y = y + beta.reshape(param_view)
    y = torch.where(count > 0, y, torch.zeros_like(y))
    return y, mean, var, count


def masked_case(name, spec, sizes, shape, mask_axes, red, param_view, affine, bias,
                running, steps, gen, pad_rows=None, momentum=0.1, eps=1e-5, center=True):
    """One case: `steps` train steps then one eval step (with running statistics)."""
    param_shape = [shape[i] for i in range(len(shape)) if param_view[i] != 1]
    gamma = (1.0 + 0.1 * torch.randn(param_shape, generator=gen, dtype=F64)) if affine else None
    beta = (0.1 * torch.randn(param_shape, generator=gen, dtype=F64)) if (affine and bias) else None
    kept = [i for i in range(len(shape)) if i not in red]
    run_shape = [shape[i] for i in kept if i != 0]
    rm = torch.zeros(run_shape, dtype=F64)
    rv = torch.ones(run_shape, dtype=F64)
    mshape = [shape[i] for i in mask_axes]
    out_steps = []
    for step in range(steps + (1 if running else 0)):
        train = step < steps
        x = (2.0 * torch.randn(shape, generator=gen, dtype=F64) + 0.5).requires_grad_(True)
        mask = torch.rand(mshape, generator=gen, dtype=F64) > 0.3
        if pad_rows is not None and step == 0:
            # An all-masked group (a fully padded sequence).
            mask[pad_rows] = False
        view = [shape[i] if i in mask_axes else 1 for i in range(len(shape))]
        mask_full = mask.reshape(view).expand(shape)
        g = gamma.clone().requires_grad_(True) if gamma is not None else None
        b = beta.clone().requires_grad_(True) if beta is not None else None
        dy = torch.randn(shape, generator=gen, dtype=F64)
        if train or not running:
            y, mean, var, count = masked_forward(x, mask_full, red, eps, g, b, param_view, center)
        else:
            run_view = [1 if (i in red or i == 0) else shape[i] for i in range(len(shape))]
            mean = rm.reshape(run_view)
            var = rv.reshape(run_view)
            y = (x - mean) / torch.sqrt(var + eps)
            if g is not None:
                y = y * g.reshape(param_view)
                if b is not None:
                    y = y + b.reshape(param_view)
        (y * dy).sum().backward()
        if train and running:
            with torch.no_grad():
                # Per group (mean, unbiased var) where count >= 2, averaged over N.
                c = count
                ok = (c >= 2).to(F64)
                uvar = var * c / (c - 1).clamp(min=1.0)
                dims0 = [0] + [i for i in red if i != 0]
                num = ok.sum(dim=dims0, keepdim=True)
                bm = (mean * ok).sum(dim=dims0, keepdim=True) / num.clamp(min=1.0)
                bv = (uvar * ok).sum(dim=dims0, keepdim=True) / num.clamp(min=1.0)
                has = (num > 0).reshape(run_shape)
                rm = torch.where(has, (1 - momentum) * rm + momentum * bm.reshape(run_shape), rm)
                rv = torch.where(has, (1 - momentum) * rv + momentum * bv.reshape(run_shape), rv)
        rec = {
            "train": train,
            "x": enc(x),
            "mask": enc_mask(mask),
            "dy": enc(dy),
            "y": enc(y),
            "dx": enc(x.grad),
        }
        if g is not None:
            rec["dgamma"] = enc(g.grad)
        if b is not None:
            rec["dbeta"] = enc(b.grad)
        if running:
            rec["running_mean"] = enc(rm)
            rec["running_var"] = enc(rv)
        out_steps.append(rec)
    case = {
        "name": name,
        "spec": spec,
        "sizes": sizes,
        "gamma": enc(gamma) if gamma is not None else None,
        "beta": enc(beta) if beta is not None else None,
        "steps": out_steps,
    }
    return case


# --------------------------------------------------------------------------------------


def write(case):
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{case['name']}.json"
    path.write_text(json.dumps(case, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


def main():
    gen = torch.Generator().manual_seed(18_2)
    # Padding-aware LayerNorm: input N,T,D; statistics per (N) over T,D; mask N,T.
    write(masked_case(
        "masked_layer_norm",
        'input = "N,T,D", axes = "T,D", mask = "N,T", affine = "D"',
        [["D", 6]], [3, 5, 6], [0, 1], [1, 2], [1, 1, 6], True, True, False, 2, gen,
        pad_rows=(2,)))
    # Per-token LayerNorm with a padding mask: statistics per (N,T) over D; an all-masked
    # token gives zeros.
    write(masked_case(
        "masked_token_norm",
        'input = "N,T,D", axes = "D", mask = "N,T", affine = "D"',
        [["D", 5]], [2, 4, 5], [0, 1], [2], [1, 1, 5], True, True, False, 1, gen))
    # Padding-aware BatchNorm over N,T (channels last, element-wise mask walk), running
    # statistics over several steps, then eval with them.
    write(masked_case(
        "masked_batch_norm",
        'input = "N,T,C", axes = "N,T", mask = "N,T", affine = "C", running_stats',
        [["C", 3]], [4, 5, 3], [0, 1], [0, 1], [1, 1, 3], True, True, True, 3, gen))
    # No affine, mask over the batch only (BatchNorm1d over N,L with dropped samples).
    write(masked_case(
        "masked_batch_norm_rows",
        'input = "N,C,L", axes = "N,L", mask = "N", running_stats, momentum = 0.2',
        [["C", 2]], [5, 2, 4], [0], [0, 2], [1, 2, 1], False, False, True, 2, gen,
        momentum=0.2))


if __name__ == "__main__":
    main()
