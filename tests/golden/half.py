#!/usr/bin/env python3
"""Golden data for normkit's half-precision layers (bf16, f16).

Usage (from the repository root, with the packages of tests/golden/requirements.txt):

    python3 tests/golden/half.py

Writes tests/golden/data/half/bf16.json and f16.json in the format of generate.py
(tests/golden/README.md), for a subset of its cases (BN, LN, GN, IN, RMS, WS, BCN, AdaIN),
with two differences:

* every input (x, dy, gamma, beta, the external scale/shift) is first rounded to the file's
  dtype, so the half-precision run and the float64 reference see the same values;
* `f32_torch_err` holds PyTorch's own error in the file's dtype (not float32): the same steps
  run through torch with the layer `.to(dtype)` and the inputs in dtype,
  max|half - f64| / max|f64| per output. The file's `meta.dtype` names the dtype.

The float64 references (`y`, `dx`, ...) are torch float64 on the rounded inputs. The same
reproducibility settings as generate.py apply (it is imported: scalar ATen kernels, one
thread, fixed seeds); a rerun is byte-identical.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate as g  # noqa: E402  (sets ATEN_CPU_CAPABILITY before importing torch)
import torch  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "data" / "half"

# A few cases per family: layouts (NCHW, NHWC, rows, columns), affine variants, running
# statistics over several steps, a chain (BCN) and external affine (AdaIN).
CASES = [
    "bn1d_NC_train_affine_m0.1",
    "bn2d_train_affine_m0.1",
    "bn2d_nhwc_train_affine_m0.1",
    "bn2d_large_affine_m0.1",
    "ln_NTD_affine",
    "ln_ND_affine_D64",
    "ln_NCHW_affine_CHW",
    "gn2d_C6_G2_affine",
    "gn2d_C8_G4_nhwc_affine",
    "in2d_affine_running_m0.1",
    "in1d_noaffine_running_m0.1",
    "rms_NTD_affine_D32",
    "rms_NTD_noaffine",
    "ws_official_2x16x5x5",
    "ws_var_unbiased_4x3x3x3",
    "bcn_2x4x3x3_G2_m0.1",
    "bcn_2x6x2x3_G3_m0.1",
    "adain_2x3x4x4",
    "adain_3x2x6x2",
]

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def rounded(a, dtype):
    """`a` (float32 array) rounded to `dtype` (nearest even), as float32 (exact)."""
    t = torch.from_numpy(np.asarray(a, dtype=np.float32)).to(dtype)
    return t.to(torch.float32).numpy()


def round_case(case, dtype):
    for st in case["steps"]:
        st["x"] = rounded(st["x"], dtype)
        st["dy"] = rounded(st["dy"], dtype)
        st["params"] = {k: rounded(v, dtype) for k, v in st["params"].items()}
        if "ext" in st:
            st["ext"] = {k: rounded(v, dtype) for k, v in st["ext"].items()}


def build(case, dtype):
    """generate.build_case_json with the low precision run in `dtype`: its `F32` names the
    dtype of that run, so it is pointed at `dtype` for the call."""
    saved = g.F32
    g.F32 = dtype
    try:
        return g.build_case_json(case)
    finally:
        g.F32 = saved


def dump(path, name, cases):
    lines = [json.dumps(c, sort_keys=True, separators=(",", ":"), allow_nan=False) for c in cases]
    head = json.dumps(
        {
            "dtype": name,
            "format_version": g.FORMAT_VERSION,
            "generator": "tests/golden/half.py",
            "group": name,
            "numpy": np.__version__,
            "torch": torch.__version__.split("+")[0],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    path.write_text('{"meta":' + head + ',\n"cases":[\n' + ",\n".join(lines) + "\n]}\n")


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, dtype in DTYPES.items():
        g.CASES.clear()
        for fn in (g.cases_batchnorm, g.cases_layernorm, g.cases_instancenorm, g.cases_groupnorm,
                   g.cases_weight_std, g.cases_bcn, g.cases_adain, g.cases_rms):
            fn()
        by_name = {c["name"]: c for cs in g.CASES.values() for c in cs}
        built = []
        for cname in CASES:
            case = by_name[cname]
            round_case(case, dtype)
            built.append(build(case, dtype))
        dump(OUT_DIR / f"{name}.json", name, built)
        print(f"{name}: {len(built)} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
