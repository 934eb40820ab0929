#!/usr/bin/env python3
"""Writes tests/fixtures/quant/ggml.json: rows quantized to GGML Q8_0 and Q4_0 by gguf-py
(`gguf.quants`, which matches ggml-quants.c's reference quantizers bit for bit), for
tests/quant_kernels.rs to compare byte for byte.

Run: /work/venv/bin/pip install gguf==0.19.0 && /work/venv/bin/python scripts/make_quant_fixtures.py
"""
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/quant/ggml.json"


def rows():
    rng = np.random.default_rng(1234)
    yield "normal", rng.standard_normal(96).astype(np.float32)
    yield "uniform_small", (rng.uniform(-1, 1, 64) * 1e-2).astype(np.float32)
    yield "zeros", np.zeros(64, np.float32)
    r = (rng.standard_normal(64) * 0.1).astype(np.float32)
    r[5] = 1.0e4
    yield "one_huge", r
    r = rng.uniform(-1, 1, 64).astype(np.float32)
    r[17] = -3.0  # largest magnitude is negative: Q4_0's d > 0
    r[40] = -2.5
    yield "negative_max", r
    # Exact rounding ties: Q8_0 with amax 127 → d = 1, values k + 0.5; Q4_0 with max −8 → d = 1.
    t8 = np.array([127.0] + [k + 0.5 for k in range(-20, 11)], np.float32)
    t4 = np.array([-8.0] + [k + 0.5 for k in range(-8, 7)] + [-(k + 0.5) for k in range(-8, 8)], np.float32)
    yield "ties", np.concatenate([t8, t4])
    # Opposite signs of equal magnitude: the first one sets Q4_0's sign.
    r = rng.uniform(-1, 1, 64).astype(np.float32)
    r[3], r[9], r[40], r[33] = 2.0, -2.0, -2.0, 2.0
    yield "sign_tie", r
    yield "tiny", (rng.standard_normal(32) * 1e-6).astype(np.float32)  # f16-subnormal scales
    yield "near_ties", (np.round(rng.uniform(-60, 60, 64)) + 0.5 + rng.uniform(-1e-5, 1e-5, 64)).astype(np.float32)


def main():
    cases = []
    for name, x in rows():
        case = {"name": name, "x": [float(v) for v in x]}
        for key, t in (("q8_0", T.Q8_0), ("q4_0", T.Q4_0)):
            q = quants.quantize(x.reshape(1, -1), t)
            deq = quants.dequantize(q, t).reshape(-1).astype(np.float32)
            case[key] = {"bytes": q.tobytes().hex(), "dequant": [float(v) for v in deq]}
        cases.append(case)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"generator": "gguf-py 0.19.0 gguf.quants", "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
