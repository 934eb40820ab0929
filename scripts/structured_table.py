#!/usr/bin/env python3
"""Structured pruning, measured: whole heads and feed-forward neurons removed from a checkpoint,
the smaller model's val loss (one-shot and after a fixed recovery budget), size and speed.

  python3 scripts/structured_table.py --checkpoint CKPT --calib TEXT [--plans 1:0.25,2:0.25,0:0.5]
      [--importance taylor] [--recover 100] [--threads 2] [--gen-tokens 128] [--work DIR]

A plan H:P removes H heads and the share P of the feed-forward neurons in every layer
(`lmlab prune --method structured`). For the dense model and each plan: `lmlab eval lm` (the
checkpoint's validation split), `lmlab eval efficiency` (forward latency at batch 1 over
block_size tokens, greedy generation tokens/s), then `lmlab train --resume` for --recover more
steps (the run's own data and optimizer settings) and `lmlab eval lm` again.
Prints a markdown table; --json-out writes the raw numbers.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr}")
    return p.stdout


def val_loss(a, ckpt):
    lm = json.loads(run([a.lmlab, "eval", "lm", "--checkpoint", ckpt, "--json", "--threads", a.threads]))
    return (lm["runs"][0]["metrics"] if "runs" in lm else lm)["loss"]


def speed(a, ckpt):
    eff = json.loads(run([a.lmlab, "eval", "efficiency", "--checkpoint", ckpt, "--json", "--iters", "10",
                          "--gen-tokens", a.gen_tokens, "--threads", a.threads]))["details"][0]
    return eff["forward_ms_median"], eff["generate_tokens_per_second"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--plans", default="1:0.25,2:0.25,0:0.5")
    ap.add_argument("--importance", default="taylor")
    ap.add_argument("--calib-samples", default="16")
    ap.add_argument("--recover", type=int, default=100)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--gen-tokens", default="128")
    ap.add_argument("--lmlab", default=os.path.join(ROOT, "target", "release", "lmlab"))
    ap.add_argument("--work", default=None)
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="lmlab-structured-")
    info = json.loads(run([a.lmlab, "info", a.checkpoint, "--json"]))
    heads, ffn = info["model"]["n_head"], info["model"].get("ffn_hidden") or 4 * info["model"]["n_embd"]
    step = info["step"]
    rows = []
    plans = [(0, 0.0)] + [(int(h), float(p)) for h, p in (x.split(":") for x in a.plans.split(","))]
    for h, p in plans:
        neurons = round(ffn * p)
        name = "dense" if (h, neurons) == (0, 0) else f"-{h}/{heads} heads, -{neurons}/{ffn} neurons"
        if (h, neurons) == (0, 0):
            ckpt = a.checkpoint
        else:
            ckpt = os.path.join(work, f"h{h}-n{neurons}")
            run([a.lmlab, "prune", "--checkpoint", a.checkpoint, "--method", "structured", "--heads", h,
                 "--neurons", neurons, "--importance", a.importance, "--calib", a.calib,
                 "--calib-samples", a.calib_samples, "--out", ckpt])
        params = json.loads(run([a.lmlab, "info", ckpt, "--json"]))["parameters"]
        loss = val_loss(a, ckpt)
        fwd, gen = speed(a, ckpt)
        r = {"plan": name, "heads_removed": h, "neurons_removed": neurons, "parameters": params,
             "val_loss": loss, "forward_ms": fwd, "gen_tokens_per_s": gen}
        if a.recover > 0:
            out = os.path.join(work, f"rec-h{h}-n{neurons}")
            run([a.lmlab, "train", "--resume", ckpt, "--quiet", "--set", f"train.max_iters={step + a.recover}",
                 "--set", f"train.out_dir={json.dumps(out)}", "--set", f"train.eval_interval={a.recover}",
                 "--set", f"train.threads={a.threads}"])
            r["val_loss_recovered"] = val_loss(a, os.path.join(out, "ckpt"))
        rows.append(r)
        print(f"[structured] {r}", file=sys.stderr, flush=True)
    base = rows[0]
    rec = f" val loss after {a.recover} recovery steps |" if a.recover > 0 else ""
    print(f"| model | parameters | val loss |{rec} forward ms (B=1) | × dense | generation tokens/s | × dense |")
    print("|---|---:|---:|" + ("---:|" if a.recover > 0 else "") + "---:|---:|---:|---:|")
    for r in rows:
        recv = f" {r['val_loss_recovered']:.4f} |" if a.recover > 0 else ""
        print(f"| {r['plan']} | {r['parameters']:,} | {r['val_loss']:.4f} |{recv} {r['forward_ms']:.1f} | "
              f"{base['forward_ms'] / r['forward_ms']:.2f}× | {r['gen_tokens_per_s']:.0f} | "
              f"{r['gen_tokens_per_s'] / base['gen_tokens_per_s']:.2f}× |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
