#!/usr/bin/env python3
"""Data-parallel training on this machine: 1 process x T threads against N MPI ranks x T/N
threads, for bench/run.py's S and M training cases on Tiny Shakespeare (same global batch).

  cargo build --release --features mpi
  python3 scripts/distributed_bench.py [--ranks 2] [--threads 2] [--cases S,M] [--json-out F]

Layouts: one process; N ranks; N ranks with ZeRO-1 (train.zero = 1).

Reports per case and layout: the steady-state step time and tokens/s (the median of the logged
windows after the first), the time per step inside all-reduces and its share of the wall time
(from the run's `communication` event), and the peak RSS per process. Nothing else should run on
the machine meanwhile.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    # name: (model overrides, global batch, block, steps, log_interval)
    "S": (["model.n_layer=4", "model.n_head=4", "model.n_embd=128"], 12, 64, 60, 10),
    "M": (["model.n_layer=6", "model.n_head=6", "model.n_embd=384"], 16, 256, 12, 2),
}


def run(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return events, (rss if rss > before else None)


def measure(lmlab, data, case, ranks, threads, work, zero=0):
    sets, batch, block, steps, log = CASES[case]
    args = ["train", "--config", os.path.join(ROOT, "configs/shakespeare-char.toml"), "--json",
            "--set", f"data.path={data}", "--set", f"train.out_dir={work}/{case}-{ranks}-{zero}",
            "--set", f"train.batch_size={batch // ranks}", "--set", f"model.block_size={block}",
            "--set", f"train.max_iters={steps}", "--set", f"train.eval_interval={steps * 10}",
            "--set", "train.eval_iters=1", "--set", f"train.log_interval={log}",
            "--set", f"train.threads={threads}", "--set", "model.dropout=0.0", "--set", f"train.zero={zero}"]
    for s in sets:
        args += ["--set", s]
    cmd = [lmlab] + args
    if ranks > 1:
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + cmd
    events, rss_kb = run(cmd)
    windows = [e["ms_per_iter"] for e in events if e.get("event") == "step"][1:]
    ms = statistics.median(windows)
    comm = next((e for e in events if e.get("event") == "communication"), None)
    out = {"case": case, "ranks": ranks, "zero": zero, "threads_per_rank": threads, "global_batch": batch, "block": block,
           "ms_per_step": ms, "tokens_per_s": batch * block / ms * 1e3}
    if comm:
        out.update(comm_ms_per_step=comm["comm_ms_per_step"], comm_share=comm["share"],
                   mb_per_step=comm["bytes_per_step"] / 1e6, peak_rss_mb=comm["peak_rss_mb"],
                   optimizer_state_mb=[round(b / 1e6, 1) for b in comm["optimizer_state_bytes"]])
    else:
        out.update(comm_ms_per_step=0.0, comm_share=0.0, mb_per_step=0.0,
                   peak_rss_mb=[round(rss_kb / 1024, 1)] if rss_kb else None, optimizer_state_mb=None)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmlab", default=os.path.join(ROOT, "target/release/lmlab"))
    ap.add_argument("--data", default=os.path.join(ROOT, "../shared/data/tinyshakespeare.txt"))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of the one process (split over the ranks)")
    ap.add_argument("--cases", default="S,M")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for case in a.cases.split(","):
            for ranks, zero in ((1, 0), (a.ranks, 0), (a.ranks, 1)):
                r = measure(a.lmlab, a.data, case, ranks, max(1, a.threads // ranks), work, zero)
                print(json.dumps(r), file=sys.stderr)
                rows.append(r)
    print("| case | layout | ms / step | tokens/s | collectives ms / step | share of step | MB moved / step | peak RSS per process (MB) | optimizer state per process (MB) |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        layout = f"{r['ranks']} rank{'s' if r['ranks'] > 1 else ''} × {r['threads_per_rank']} thread{'s' if r['threads_per_rank'] > 1 else ''}"
        layout += ", ZeRO-1" if r["zero"] else ""
        print(f"| {r['case']} (B={r['global_batch']}, T={r['block']}) | {layout} | {r['ms_per_step']:.1f} | "
              f"{r['tokens_per_s']:.0f} | {r['comm_ms_per_step']:.2f} | {100 * r['comm_share']:.1f}% | "
              f"{r['mb_per_step']:.2f} | {r['peak_rss_mb']} | {r['optimizer_state_mb'] or ''} |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
