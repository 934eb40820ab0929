#!/usr/bin/env python3
"""Causal attention core, forward + backward, at 256 / 1024 / 4096 tokens (batch 1, 6 heads of
64): lmlab's dense kernel, lmlab's memory-efficient (flash) kernel, and PyTorch's
scaled_dot_product_attention. Each measurement runs in a fresh process, so its peak RSS is the
memory that case needs (PyTorch's includes ~0.5 GB of library).

  python3 bench/attention.py [--lengths 256,1024,4096] [--threads 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="256,1024,4096")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    py = os.path.join(ROOT, ".venv", "bin", "python")
    lmlab = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "lmlab")
    print("| T | lmlab dense ms | lmlab flash ms | PyTorch SDPA ms | dense RSS MB | flash RSS MB | SDPA RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for t in [int(x) for x in args.lengths.split(",")]:
        iters, warm = (20, 3) if t <= 1024 else (5, 1)
        row = {}
        for name, cmd in [
            ("dense", [lmlab, "bench", "--case", f"attn-dense-{t}", "--iters", str(iters), "--warmup", str(warm), "--threads", str(args.threads), "--json"]),
            ("flash", [lmlab, "bench", "--case", f"attn-flash-{t}", "--iters", str(iters), "--warmup", str(warm), "--threads", str(args.threads), "--json"]),
            ("sdpa", [py, "bench/torch_cases.py", "--case", f"attn-sdpa-{t}", "--iters", str(iters), "--warmup", str(warm), "--threads", str(args.threads), "--json"]),
        ]:
            r = run(cmd)
            row[name] = (statistics.median(r["times_ms"]), r["peak_rss_kb"] / 1024)
        print(f"| {t} | {row['dense'][0]:.1f} | {row['flash'][0]:.1f} | {row['sdpa'][0]:.1f} | "
              f"{row['dense'][1]:.0f} | {row['flash'][1]:.0f} | {row['sdpa'][1]:.0f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
