#!/usr/bin/env python3
"""Sentence-embedding throughput: lmlab embed vs sentence-transformers (PyTorch), same model
(all-MiniLM-L6-v2 from scripts/fetch_minilm.sh), same sentences, same threads, one run.

The sentences are tests/fixtures/embed/sentences.txt repeated --copies times (23 sentences of
2..256 tokens: 1,150 sentences, 28,250 tokens with the default 50 copies). Both sides sort by
length and pad per batch. Timed: embedding only (lmlab's own --timing line, which excludes
loading the model; sentence-transformers' encode() after a warm-up call). The two are run
alternately --reps times and the best time of each is reported, because this machine is shared.
The lmlab output is checked against sentence-transformers' (max abs difference).

How:  cargo build --release && .venv/bin/python scripts/bench_embed.py [--batch 32 8] [--threads 2]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: scripts/fetch_minilm.sh's)")
    ap.add_argument("--copies", type=int, default=50)
    ap.add_argument("--batch", type=int, nargs="+", default=[32], help="batch sizes (both sides)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lmlab", default=os.path.join(ROOT, "target", "release", "lmlab"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer, __version__ as st_version

    mdir = args.model or subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch_minilm.sh")], check=True,
                                        stdout=subprocess.PIPE, text=True).stdout.strip()
    with open(os.path.join(ROOT, "tests", "fixtures", "embed", "sentences.txt"), encoding="utf-8") as f:
        base = f.read().split("\n")[:-1]
    sentences = base * args.copies
    model = SentenceTransformer(mdir, device="cpu")
    tokens = sum(len(model.tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"])
                 for s in base) * args.copies
    model.encode(sentences[:64], batch_size=32)  # warm-up
    print(f"{len(sentences)} sentences, {tokens} tokens; {args.threads} threads; torch {torch.__version__}, "
          f"sentence-transformers {st_version}; load average {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "sentences.txt")
        with open(inp, "w", encoding="utf-8") as f:
            f.write("\n".join(sentences) + "\n")
        out = os.path.join(tmp, "emb.jsonl")
        rows = []
        for batch in args.batch:
            times = {"lmlab": [], "st": []}
            ref = None
            for _ in range(args.reps):
                cmd = [args.lmlab, "embed", "--model", mdir, "--input", inp, "--out", out, "--batch", str(batch),
                       "--threads", str(args.threads), "--timing"]
                r = subprocess.run(cmd, check=True, stderr=subprocess.PIPE, text=True)
                m = re.search(r"embedded in ([0-9.]+) s", r.stderr)
                times["lmlab"].append(float(m.group(1)))
                t = time.perf_counter()
                ref = model.encode(sentences, batch_size=batch, convert_to_numpy=True)
                times["st"].append(time.perf_counter() - t)
            with open(out) as f:
                got = np.array([json.loads(l) for l in f], dtype=np.float32)
            diff = float(np.abs(got - ref).max())
            best = {k: min(v) for k, v in times.items()}
            rate = {k: len(sentences) / v for k, v in best.items()}
            rows.append((batch, rate, best, times, diff))
            print(f"batch {batch}: lmlab {rate['lmlab']:.1f} sentences/s (best {best['lmlab']:.2f} s, median "
                  f"{statistics.median(times['lmlab']):.2f} s), sentence-transformers {rate['st']:.1f} sentences/s "
                  f"(best {best['st']:.2f} s, median {statistics.median(times['st']):.2f} s): lmlab/torch "
                  f"{rate['lmlab'] / rate['st']:.2f}x; max |diff| {diff:.1e}")
    print("\n| batch | lmlab sentences/s | sentence-transformers sentences/s | ratio | max abs diff |")
    print("|---|---|---|---|---|")
    for batch, rate, _, _, diff in rows:
        print(f"| {batch} | {rate['lmlab']:.1f} | {rate['st']:.1f} | {rate['lmlab'] / rate['st']:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    sys.exit(main())
