#!/usr/bin/env python3
"""Knowledge distillation, measured: a student distilled from a teacher against the same
student trained from scratch for the same steps, and for the same wall time.

  python3 scripts/distill_table.py --teacher TEACHER_CKPT [--student-config configs/shakespeare-char-cpu.toml]
      [--student-set model.n_layer=2 ...] [--iters 1000] [--temperature 2] [--alpha 0.5] [--threads 2]
      [--work DIR] [--lmlab BIN]

Runs (`lmlab train`, the student config with --set overrides):
1. scratch: --iters steps of plain cross-entropy;
2. distilled: the same --iters steps with [distill] teacher/temperature/alpha;
3. scratch at equal time: as many steps as fit in the distilled run's wall time (its schedule
   stretched to them).
Then `lmlab eval lm` (the validation split of the training text, same for every model) for the
three students and the teacher, and `lmlab eval efficiency` for sizes and generation speed.
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


def train(a, out, iters, extra):
    """Trains the student config for `iters` steps into `out`; returns (seconds, summary)."""
    cmd = [a.lmlab, "train", "--config", a.student_config, "--json",
           "--set", f"train.out_dir={json.dumps(out)}", "--set", f"train.max_iters={iters}",
           "--set", f"optim.lr_decay_iters={iters}", "--set", f"train.eval_interval={iters}",
           "--set", f"train.threads={a.threads}", "--set", f"data.path={json.dumps(a.data)}"] + extra
    for o in a.student_set:
        cmd += ["--set", o]
    lines = [json.loads(l) for l in run(cmd).splitlines() if l.startswith("{")]
    summary = lines[-1]
    return summary["seconds"], summary


def measure(a, ckpt):
    lm = json.loads(run([a.lmlab, "eval", "lm", "--checkpoint", ckpt, "--json", "--threads", a.threads]))
    m = lm["runs"][0]["metrics"] if "runs" in lm else lm
    eff = json.loads(run([a.lmlab, "eval", "efficiency", "--checkpoint", ckpt, "--json", "--iters", "5",
                          "--gen-tokens", "128", "--threads", a.threads]))["details"][0]
    info = json.loads(run([a.lmlab, "info", ckpt, "--json"]))
    return {"val_loss": m["loss"], "params": info.get("parameters"), "gen_tokens_per_s": eff["generate_tokens_per_second"],
            "forward_ms": eff["forward_ms_median"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student-config", default=os.path.join(ROOT, "configs", "shakespeare-char-cpu.toml"))
    ap.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data", "tinyshakespeare.txt"))
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--temperature", default="2.0")
    ap.add_argument("--alpha", default="0.5")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--lmlab", default=os.path.join(ROOT, "target", "release", "lmlab"))
    ap.add_argument("--work", default=None)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--student-set", action="append", default=[],
                    help="section.key=value overrides of the student config (repeatable)")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="lmlab-distill-")
    distill = ["--set", f"distill.teacher={json.dumps(os.path.abspath(a.teacher))}",
               "--set", f"distill.temperature={a.temperature}", "--set", f"distill.alpha={a.alpha}"]
    rows = []
    t_scratch, _ = train(a, os.path.join(work, "scratch"), a.iters, [])
    print(f"[distill] scratch: {a.iters} steps in {t_scratch:.0f} s", file=sys.stderr, flush=True)
    t_distill, _ = train(a, os.path.join(work, "distilled"), a.iters, distill)
    print(f"[distill] distilled: {a.iters} steps in {t_distill:.0f} s", file=sys.stderr, flush=True)
    iters_eq = max(a.iters, round(a.iters * t_distill / t_scratch))
    t_eq, _ = train(a, os.path.join(work, "scratch-time"), iters_eq, [])
    print(f"[distill] scratch at equal time: {iters_eq} steps in {t_eq:.0f} s", file=sys.stderr, flush=True)
    for name, ckpt, steps, secs in [
        ("teacher", a.teacher, None, None),
        ("student, scratch (same steps)", os.path.join(work, "scratch", "ckpt"), a.iters, t_scratch),
        (f"student, distilled (T={a.temperature}, α={a.alpha})", os.path.join(work, "distilled", "ckpt"), a.iters, t_distill),
        ("student, scratch (same wall time)", os.path.join(work, "scratch-time", "ckpt"), iters_eq, t_eq),
    ]:
        r = {"model": name, "steps": steps, "train_seconds": secs, **measure(a, ckpt)}
        rows.append(r)
        print(f"[distill] {r}", file=sys.stderr, flush=True)
    print("| model | parameters | training steps | training s | val loss | generation tokens/s | forward ms (B=1) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        steps = "" if r["steps"] is None else str(r["steps"])
        secs = "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        print(f"| {r['model']} | {r['params']:,} | {steps} | {secs} | {r['val_loss']:.4f} | "
              f"{r['gen_tokens_per_s']:.0f} | {r['forward_ms']:.1f} |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
