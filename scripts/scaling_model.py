#!/usr/bin/env python3
"""A scaling model of data- and tensor-parallel training for lmlab, checked against this
machine's measurements (docs/DISTRIBUTED.md).

  python3 scripts/scaling_model.py --bench /work/runs/dist-SM.json --allreduce /work/runs/allreduce-2.jsonl

Model (per optimizer step, each rank on its own machine):
- compute: t_c = 3 x forward FLOPs of the per-rank batch / R, with R the FLOP rate measured on
  the M case here (1 process, all threads), so t_c is "a machine like this one";
- data parallel, ring all-reduce of the gradients (4 bytes x P): t_ar = 2(N-1)/N x 4P / BW +
  2(N-1) x alpha; without overlap the step is t_c + t_ar; with the backward pass overlapping
  bucketed all-reduces (backward = 2/3 of t_c, one bucket per layer) the exposed part is
  max(t_ar - 2/3 t_c, t_ar / layers);
- ZeRO-1: the same traffic (a reduce-scatter and an all-gather move what one all-reduce moves),
  Adam's two moments (8P bytes) divided by N;
- tensor parallel (Megatron): compute t_c / N, plus 4 all-reduces per layer (2 forward, 2
  backward) of the activations B x T x C x 4 bytes.
BW is the line rate x 0.9, alpha 20 us (MPI over TCP); both are assumptions, not measurements.
"""
import argparse
import json
import math

MODELS = {
    # name: (layers, width, vocab, params, per-rank batch, block)
    "M (10.7M)": (6, 384, 65, 10.7e6, 16, 256),
    "GPT-2 small (124M)": (12, 768, 50257, 124e6, 8, 1024),
    "GPT-2 medium (355M)": (24, 1024, 50257, 355e6, 8, 1024),
}
NETS = {"10 Gb/s": 10e9, "25 Gb/s": 25e9, "100 Gb/s": 100e9}
ALPHA = 20e-6


def forward_flops(layers, c, vocab, b, t):
    n = b * t
    return layers * (24 * n * c * c + 4 * b * t * t * c) + 2 * n * c * vocab


def ring(nbytes, n, bw, alpha):
    return 0.0 if n == 1 else 2 * (n - 1) / n * nbytes / bw + 2 * (n - 1) * alpha


def interp_bw(curve, nbytes):
    """Bus bandwidth (bytes/s) at `nbytes`, log-log interpolated from the measured curve."""
    pts = sorted((r["bytes"], r["busbw_gb_s"] * 1e9) for r in curve if r["bytes"] >= 1024)
    if nbytes <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if nbytes <= x1:
            f = (math.log(nbytes) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + f * (math.log(y1) - math.log(y0)))
    return pts[-1][1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, help="scripts/distributed_bench.py --json-out")
    ap.add_argument("--allreduce", required=True, help="examples/allreduce output (JSON lines)")
    a = ap.parse_args()
    bench = json.load(open(a.bench))
    curve = [json.loads(l) for l in open(a.allreduce) if l.strip()]
    one = next(r for r in bench if r["case"] == "M" and r["ranks"] == 1)
    two = next(r for r in bench if r["case"] == "M" and r["ranks"] > 1)
    layers, c, vocab, params, b, t = MODELS["M (10.7M)"]
    rate = 3 * forward_flops(layers, c, vocab, b, t) / (one["ms_per_step"] / 1e3)
    print(f"FLOP rate measured on M (1 process, {one['threads_per_rank']} threads): {rate / 1e9:.1f} GFLOP/s\n")

    # The check: 2 ranks on this machine, shared memory, the measured all-reduce curve.
    nbytes = two["mb_per_step"] * 1e6
    bw = interp_bw(curve, nbytes)
    t_ar = ring(nbytes, two["ranks"], bw, 0.0)
    pred = one["ms_per_step"] + t_ar * 1e3
    print("Check against this machine (M, 2 ranks x 1 thread, shared memory):")
    print(f"- all-reduce of {nbytes / 1e6:.1f} MB at the measured {bw / 1e9:.2f} GB/s: predicted {t_ar * 1e3:.1f} ms, "
          f"measured {two['comm_ms_per_step']:.1f} ms in all-reduces")
    print(f"- step: predicted {pred:.0f} ms (1-process step + all-reduce), measured {two['ms_per_step']:.0f} ms "
          f"({(pred / two['ms_per_step'] - 1) * 100:+.1f}%)\n")

    for name, (layers, c, vocab, params, b, t) in MODELS.items():
        t_c = 3 * forward_flops(layers, c, vocab, b, t) / rate
        print(f"### {name}: per-rank batch {b} x {t}, compute {t_c:.2f} s per step on a machine like this one\n")
        print("| network | N | DP step (s) | DP eff. | DP+overlap eff. | ZeRO-1 Adam state per rank | TP step (s) | TP eff. |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for net, bits in NETS.items():
            bw = bits / 8 * 0.9
            dominated = None
            for n in (2, 4, 8, 16, 32, 64):
                ar = ring(4 * params, n, bw, ALPHA)
                exposed = max(ar - 2 / 3 * t_c, ar / layers)
                dp, dpo = t_c + ar, t_c + exposed
                tp_ar = 4 * layers * ring(b * t * c * 4, n, bw, ALPHA)
                tp = t_c / n + tp_ar
                if dominated is None and tp_ar > t_c / n:
                    dominated = n
                zero = 8 * params / n / 1e6
                print(f"| {net} | {n} | {dp:.2f} | {t_c / dp:.0%} | {t_c / dpo:.0%} | {zero:.0f} MB (of {8 * params / 1e6:.0f}) "
                      f"| {tp:.2f} | {t_c / (n * tp):.0%} |")
            ar_dominates = 4 * params / (bw) > t_c
            print(f"| {net} | | data parallel: the all-reduce ({ring(4 * params, 64, bw, ALPHA):.2f} s at N=64) "
                  f"{'exceeds' if ar_dominates else 'stays below'} compute; tensor parallel: communication exceeds compute "
                  f"from N = {dominated or '> 64'} | | | | | |")
        print()


if __name__ == "__main__":
    main()
