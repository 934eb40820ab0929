#!/usr/bin/env python3
"""Language-model table of Transformer variants on Tiny Shakespeare (issue 4).

Trains nanoGPT's CPU character model (configs/shakespeare-char-cpu.toml) once per variant, each
row changing one architectural choice from the baseline (GPT-2's choices), with the same seed,
data, batch, optimizer and number of steps, and prints a Markdown table of the final train and
validation losses and the time per step. Every run is an ordinary `lmlab train` run; its
metrics.jsonl and checkpoint stay under out/variants/<name>/.

Usage: python3 scripts/variant_table.py [--iters 1000] [--threads N] [--only NAME ...] [--out FILE]
(build first: cargo build --release)
"""
import argparse
import json
import os
import subprocess
import sys
import time

# name -> --set overrides (model.* keys); the baseline is the config file as written.
VARIANTS = [
    ("baseline (learned, LayerNorm, pre, GELU-tanh, scaled, MHA)", []),
    ("position: none", ["model.position='none'"]),
    ("position: sinusoidal", ["model.position='sinusoidal'"]),
    ("position: sinusoidal, scaled embeddings", ["model.position='sinusoidal'", "model.scale_embeddings=true"]),
    ("position: Shaw relative (k=16, keys+values)", ["model.position='shaw'", "model.shaw_k=16"]),
    ("position: T5 bias (32 buckets, max 128)", ["model.position='t5'"]),
    ("position: RoPE", ["model.position='rope'"]),
    ("position: ALiBi", ["model.position='alibi'"]),
    ("norm: RMSNorm", ["model.norm='rmsnorm'"]),
    ("norm: BatchNorm", ["model.norm='batchnorm'"]),
    ("post-norm (no final norm)", ["model.norm_position='post'", "model.final_norm=false"]),
    ("activation: ReLU", ["model.activation='relu'"]),
    ("activation: LeakyReLU (0.01)", ["model.activation='leaky_relu'"]),
    ("activation: GELU (erf)", ["model.activation='gelu'"]),
    ("activation: SiLU", ["model.activation='silu'"]),
    ("activation: SwiGLU (F = 344, same parameters)", ["model.activation='swiglu'", "model.ffn_hidden=344"]),
    ("score: unscaled dot product", ["model.score='unscaled'"]),
    ("score: cosine, learned temperature", ["model.score='cosine'"]),
    ("score: additive (Bahdanau)", ["model.score='additive'"]),
    ("heads: multi-query (1 KV head)", ["model.n_kv_head=1"]),
    ("heads: grouped-query (2 KV heads)", ["model.n_kv_head=2"]),
]


def slug(name):
    return "".join(c if c.isalnum() else "_" for c in name.split("(")[0].strip().lower()).strip("_")


def run(name, sets, iters, binary, config, threads):
    out_dir = os.path.join("out", "variants", slug(name))
    args = [binary, "train", "--config", config, "--quiet",
            "--set", f"train.out_dir='{out_dir}'",
            "--set", f"train.max_iters={iters}",
            "--set", f"optim.lr_decay_iters={iters}",
            "--set", f"train.eval_interval={iters}",
            "--set", f"train.threads={threads}"]
    for s in sets:
        args += ["--set", s]
    start = time.time()
    subprocess.run(args, check=True)
    wall = time.time() - start
    evals, steps = [], []
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "event" in r:  # resume / early_stop lines
                continue
            (evals if "val_loss" in r else steps).append(r)
    last = evals[-1]
    ms = sorted(r["ms_per_iter"] for r in steps)
    return last["train_loss"], last["val_loss"], ms[len(ms) // 2], wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    ap.add_argument("--binary", default="target/release/lmlab")
    ap.add_argument("--config", default="configs/shakespeare-char-cpu.toml")
    ap.add_argument("--threads", type=int, default=0, help="worker threads per run (0 = one per core)")
    a = ap.parse_args()
    rows = []
    for name, sets in VARIANTS:
        if a.only and slug(name) not in a.only:
            continue
        tr, va, ms, wall = run(name, sets, a.iters, a.binary, a.config, a.threads)
        rows.append((name, sets, tr, va, ms))
        print(f"{name}: train {tr:.4f} val {va:.4f} ({ms:.1f} ms/step, {wall:.0f} s)", file=sys.stderr, flush=True)
    lines = [
        f"| variant | overrides | train loss | val loss | ms/step |",
        "|---|---|---|---|---|",
    ]
    for name, sets, tr, va, ms in rows:
        o = " ".join(f"`{s}`" for s in sets) or "—"
        lines.append(f"| {name} | {o} | {tr:.4f} | {va:.4f} | {ms:.1f} |")
    table = "\n".join(lines)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
