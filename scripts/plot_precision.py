#!/usr/bin/env python3
"""Loss curves of runs that differ only in train.precision, on one plot (issue 5).

Reads each run's metrics.jsonl (written by `lmlab train`): training loss lines
{"iter", "loss", ...}, evaluation lines {"iter", "train_loss", "val_loss"} and f16 skipped-step
lines {"iter", "skipped": true, "loss_scale"}. Draws the training loss (thin) and the validation
loss (markers) of every run, marks skipped steps, and prints a summary table.

Usage: python scripts/plot_precision.py RUN_DIR [RUN_DIR ...] [--labels fp32 bf16 f16]
                                        [--extra RUN_DIR LABEL ...] [--out docs/img/precision_curves.png]
The first run is the reference of the lower panel (validation loss difference to it).
Needs matplotlib (e.g. /work/main/.venv/bin/python after `pip install matplotlib`).
"""
import argparse
import json
import os
import sys


def read_metrics(run_dir):
    steps, evals, skipped = [], [], []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            j = json.loads(line)
            if j.get("skipped"):
                skipped.append((j["iter"], j["loss_scale"]))
            elif "val_loss" in j:
                evals.append((j["iter"], j["train_loss"], j["val_loss"]))
            elif "loss" in j:
                steps.append((j["iter"], j["loss"], j.get("ms_per_iter")))
    return steps, evals, skipped


def smooth(xs, k=5):
    """Trailing mean over k points (the per-batch loss is noisy)."""
    out, acc = [], []
    for x in xs:
        acc.append(x)
        acc = acc[-k:]
        out.append(sum(acc) / len(acc))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories (train.out_dir), each with metrics.jsonl")
    ap.add_argument("--labels", nargs="+", help="one label per run (default: the directory names)")
    ap.add_argument("--extra", nargs=2, action="append", default=[], metavar=("RUN_DIR", "LABEL"),
                    help="a run drawn only in the difference panel (dashed), e.g. fp32 with another seed")
    ap.add_argument("--out", default="docs/img/precision_curves.png")
    ap.add_argument("--title", default="Tiny Shakespeare, nanoGPT CPU model: fp32 vs emulated bf16 / f16")
    args = ap.parse_args()
    labels = args.labels or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs):
        sys.exit("--labels needs one label per run")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [read_metrics(r) for r in args.runs]
    fig, (ax, dax) = plt.subplots(2, 1, figsize=(8, 7), dpi=110, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    print("| run | final train loss | final val loss | skipped steps | median ms/step |")
    print("|---|---|---|---|---|")
    for i, ((steps, evals, skipped), label) in enumerate(zip(runs, labels)):
        col = colors[i % len(colors)]
        # Curves that coincide stay visible: solid, dashed, dotted.
        style = ["-", "--", ":"][i % 3]
        if steps:
            ax.plot([s[0] for s in steps], smooth([s[1] for s in steps]), color=col, lw=0.9, alpha=0.6, ls=style,
                    label=f"{label} train (batch loss, 5-point mean)")
        if evals:
            ax.plot([e[0] for e in evals], [e[2] for e in evals], color=col, lw=1.8, marker="os^"[i % 3], ms=4,
                    ls=style, label=f"{label} val")
        ms = sorted(s[2] for s in steps if s[2] is not None)
        med = ms[len(ms) // 2] if ms else float("nan")
        tr, va = (evals[-1][1], evals[-1][2]) if evals else (float("nan"), float("nan"))
        print(f"| {label} | {tr:.4f} | {va:.4f} | {len(skipped)} | {med:.1f} |")
    # The first steps (loss ~4.2) would flatten the interesting part.
    lo = min((min(e[2] for e in r[1]) for r in runs if r[1]), default=1.0)
    ax.set_ylim(lo - 0.1, 3.0)
    for i, ((_, _, skipped), label) in enumerate(zip(runs, labels)):
        if skipped:
            top = ax.get_ylim()[1]
            ax.scatter([s[0] for s in skipped], [top - 0.03 * (i + 1)] * len(skipped), marker="v", s=14,
                       color=colors[i % len(colors)], label=f"{label}: skipped step ({len(skipped)})")
    ax.set_ylabel("cross-entropy loss (nats)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    # Bottom panel: difference to the first run (the fp32 reference).
    ref = {e[0]: e[2] for e in runs[0][1]}
    for i, ((_, evals, _), label) in enumerate(zip(runs, labels)):
        if i == 0:
            continue
        pts = [(e[0], e[2] - ref[e[0]]) for e in evals if e[0] in ref]
        dax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[i % len(colors)], marker="o", ms=4,
                 label=f"{label} val − {labels[0]} val")
    for j, (run, label) in enumerate(args.extra):
        steps, evals, skipped = read_metrics(run)
        pts = [(e[0], e[2] - ref[e[0]]) for e in evals if e[0] in ref]
        dax.plot([p[0] for p in pts], [p[1] for p in pts], color=["gray", "tab:red", "tab:purple"][j % 3], ls="--",
                 marker=".", label=f"{label} val − {labels[0]} val")
        tr, va = (evals[-1][1], evals[-1][2]) if evals else (float("nan"), float("nan"))
        print(f"| {label} | {tr:.4f} | {va:.4f} | {len(skipped)} | (not drawn above) |")
    dax.axhline(0.0, color="black", lw=0.8)
    # Skipped f16 steps of the extra runs, as ticks along the bottom of the difference panel.
    bottom = dax.get_ylim()[0]
    for j, (run, label) in enumerate(args.extra):
        skipped = read_metrics(run)[2]
        if skipped:
            dax.scatter([s[0] for s in skipped], [bottom] * len(skipped), marker="^", s=30,
                        color=["gray", "tab:red", "tab:purple"][j % 3], label=f"{label}: skipped step", zorder=3)
    dax.set_ylim(bottom, dax.get_ylim()[1])
    dax.set_xlabel("iteration")
    dax.set_ylabel("val loss difference")
    dax.grid(alpha=0.3)
    dax.legend(fontsize=8)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
