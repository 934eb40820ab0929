#!/usr/bin/env python3
"""Prune one checkpoint at many sparsities with every method, before and after recovery training.

  python3 scripts/prune_table.py --checkpoint CKPT --data TEXT [--calib TEXT] [--recovery-steps 200]
      [--sparsities 10,20,...,90] [--methods magnitude,magnitude-layer,wanda] [--nm 2:4,4:8]
      [--lmlab target/release/lmlab] [--threads 2] [--work DIR] [--json-out FILE]
      [--chart docs/img/prune_oneshot.png --chart-recovered docs/img/prune_recovered.png]

For each method and pattern (unstructured at each sparsity, then each N:M pattern):
- `lmlab prune` (wanda gets --calib, default --data: its first --calib-samples windows of block_size
  tokens, which lie in the training split);
- `lmlab eval lm` on the checkpoint's validation split: the one-shot val loss;
- recovery: `lmlab train --resume PRUNED` for --recovery-steps more steps with the checkpoint's own
  config (same optimizer and schedule, data --data), pruned weights held at zero; then `eval lm`
  again. The dense checkpoint gets the same recovery budget, as a yardstick.
Prints the markdown tables of docs/COMPRESSION.md, writes the raw numbers as JSON with --json-out, and
draws the charts through `lmlab plot --xy` (no matplotlib needed).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def val_loss(a, ckpt):
    j = json.loads(run([a.lmlab, "eval", "lm", "--checkpoint", ckpt, "--json", "--threads", a.threads]))
    m = j["runs"][0]["metrics"] if "runs" in j else j
    return m["loss"]


def recover(a, ckpt, step, out):
    """Continues `ckpt` (at `step`) for the recovery budget; returns the final checkpoint."""
    shutil.rmtree(out, ignore_errors=True)
    run([a.lmlab, "train", "--resume", ckpt, "--quiet",
         "--set", f"train.max_iters={step + a.recovery_steps}", "--set", f"train.out_dir={out}",
         "--set", f"train.eval_interval={a.recovery_steps}", "--set", f"data.path={os.path.abspath(a.data)}",
         "--set", f"train.threads={a.threads}"])
    return os.path.join(out, "ckpt")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="the training text (recovery training; default calibration)")
    ap.add_argument("--calib", help="calibration text for wanda (default: --data)")
    ap.add_argument("--calib-samples", default="128")
    ap.add_argument("--sparsities", default="10,20,30,40,50,60,70,80,90", help="percent")
    ap.add_argument("--methods", default="magnitude,magnitude-layer,wanda")
    ap.add_argument("--nm", default="2:4,4:8")
    ap.add_argument("--nm-methods", default="magnitude,wanda")
    ap.add_argument("--recovery-steps", type=int, default=200, help="0: no recovery")
    ap.add_argument("--lmlab", default=os.path.join(ROOT, "target", "release", "lmlab"))
    ap.add_argument("--threads", default="2")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--chart", default=None, help="one-shot val loss chart (.png or .svg)")
    ap.add_argument("--chart-recovered", default=None, help="val loss after recovery chart")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="lmlab-prune-")
    os.makedirs(work, exist_ok=True)
    step = json.loads(run([a.lmlab, "info", a.checkpoint, "--json"]))["step"]
    rec = a.recovery_steps > 0

    dense = {"method": "dense", "pattern": "dense", "sparsity": 0.0, "val_loss": val_loss(a, a.checkpoint)}
    if rec:
        dense["recovered"] = val_loss(a, recover(a, a.checkpoint, step, os.path.join(work, "rec-dense")))
    print(f"[prune] dense: {dense}", file=sys.stderr, flush=True)
    jobs = [(m, ["--sparsity", str(int(s) / 100)], f"{int(s)}%", int(s) / 100)
            for m in a.methods.split(",") for s in a.sparsities.split(",")]
    jobs += [(m, ["--nm", nm], nm, 0.5) for nm in a.nm.split(",") if nm for m in a.nm_methods.split(",")]
    rows = []
    for method, args, pattern, target in jobs:
        name = f"{method}-{pattern.replace('%', '').replace(':', 'of')}"
        d = os.path.join(work, name)
        shutil.rmtree(d, ignore_errors=True)
        cmd = [a.lmlab, "prune", "--checkpoint", a.checkpoint, "--method", method, "--out", d, "--json"] + args
        if method == "wanda":
            cmd += ["--calib", a.calib or a.data, "--calib-samples", a.calib_samples]
        t0 = time.time()
        j = json.loads(run(cmd))
        r = {"method": method, "pattern": pattern, "sparsity": j["pruned"] / j["prunable"],
             "prune_seconds": time.time() - t0, "val_loss": val_loss(a, d)}
        if rec:
            r["recovered"] = val_loss(a, recover(a, d, step, os.path.join(work, f"rec-{name}")))
        rows.append(r)
        print(f"[prune] {method} {pattern}: {r}", file=sys.stderr, flush=True)

    methods = a.methods.split(",")
    for key, title in [("val_loss", "one-shot"), ("recovered", f"after {a.recovery_steps} recovery steps")]:
        if key == "recovered" and not rec:
            continue
        print(f"\nval loss, {title} (dense: {dense[key]:.4f})\n")
        print("| sparsity | " + " | ".join(methods) + " |")
        print("|---|" + "---:|" * len(methods))
        for s in a.sparsities.split(","):
            cells = []
            for m in methods:
                r = next(r for r in rows if r["method"] == m and r["pattern"] == f"{int(s)}%")
                cells.append(f"{r[key]:.4f} ({r[key] - dense[key]:+.3f})")
            print(f"| {s}% | " + " | ".join(cells) + " |")
        for nm in [n for n in a.nm.split(",") if n]:
            cells = []
            for m in methods:
                r = next((r for r in rows if r["method"] == m and r["pattern"] == nm), None)
                if r is None and m == "magnitude-layer":  # N:M magnitude is the same per layer or global
                    r = next((r for r in rows if r["method"] == "magnitude" and r["pattern"] == nm), None)
                cells.append(f"{r[key]:.4f} ({r[key] - dense[key]:+.3f})" if r else "")
            print(f"| {nm} | " + " | ".join(cells) + " |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"checkpoint": a.checkpoint, "step": step, "recovery_steps": a.recovery_steps,
                       "dense": dense, "rows": rows}, f, indent=1)
    for key, path, title in [("val_loss", a.chart, "one-shot"),
                             ("recovered", a.chart_recovered, f"after {a.recovery_steps} recovery steps")]:
        if not path or (key == "recovered" and not rec):
            continue
        xs = [0] + [int(s) for s in a.sparsities.split(",")]
        series = [{"name": "dense", "points": [[x, dense[key]] for x in (xs[0], xs[-1])]}]
        for m in methods:
            pts = [[0, dense[key]]] + [[100 * r["sparsity"], r[key]] for r in rows
                                       if r["method"] == m and r["pattern"].endswith("%")]
            series.append({"name": m, "points": pts})
        for r in rows:
            if not r["pattern"].endswith("%"):
                series.append({"name": f"{r['method'].split('-')[0]} {r['pattern']}",
                               "points": [[100 * r["sparsity"], r[key]]]})
        spec = os.path.join(work, f"chart-{key}.json")
        with open(spec, "w") as f:
            json.dump({"title": f"Val loss vs sparsity, {title}", "x": "sparsity of the linear weights (%)",
                       "y": "val loss (nats)", "series": series}, f)
        run([a.lmlab, "plot", "--xy", spec, "--out", path])


if __name__ == "__main__":
    main()
