#!/usr/bin/env python3
"""Quantize one checkpoint with every scheme and measure each: size on disk, quality, speed.

  python3 scripts/compression_table.py --checkpoint CKPT [--calib TEXT] [--schemes int8,w8a8,q8_0,...]
      [--lmlab target/release/lmlab] [--threads 2] [--gen-tokens 128] [--work DIR] [--speed-only]
      [--rounds 1]

For each scheme: `lmlab quantize` (GPTQ schemes get --calib), then
- weights on disk: model.safetensors + quant.safetensors;
- `lmlab eval lm` (the checkpoint's validation split): loss and perplexity (not with --speed-only);
- greedy agreement with f32: `lmlab sample --temperature 0` from the same prompt, the number of
  tokens equal to f32's before the first difference (characters, for a character-level model);
- `lmlab eval efficiency`: forward latency (batch 1, block_size tokens, median of 10), greedy
  generation tokens/s, peak RSS; with --rounds R, R rounds over all schemes in turn (so load
  from elsewhere on a shared machine hits every scheme alike), each scheme's best round kept.
Prints a markdown table (the one in docs/COMPRESSION.md) and writes the raw numbers as JSON next
to it with --json-out.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SCHEMES = "f32,bf16,int8,w8a8,q8_0,q4_0,rtn4-g32,gptq4-g32,rtn3-g32,gptq3-g32"


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def weights_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in ("model.safetensors", "quant.safetensors")
               if os.path.exists(os.path.join(d, f)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--calib", help="calibration text for GPTQ (e.g. the training data)")
    ap.add_argument("--schemes", default=DEFAULT_SCHEMES)
    ap.add_argument("--lmlab", default=os.path.join(ROOT, "target", "release", "lmlab"))
    ap.add_argument("--threads", default="2")
    ap.add_argument("--gen-tokens", default="128")
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--agree-tokens", type=int, default=200)
    ap.add_argument("--speed-only", action="store_true", help="skip loss and agreement (random-weight models)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--rounds", type=int, default=1, help="speed rounds over all schemes; the best is kept")
    ap.add_argument("--eval-data", default=None,
                    help="text for `eval lm` (default: the checkpoint's validation split; an imported model has none)")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="lmlab-compression-")
    rows = []
    ref_text = None
    for scheme in a.schemes.split(","):
        if scheme == "f32":
            d = a.checkpoint
        else:
            d = os.path.join(work, scheme)
            shutil.rmtree(d, ignore_errors=True)
            cmd = [a.lmlab, "quantize", "--checkpoint", a.checkpoint, "--scheme", scheme, "--out", d]
            if scheme.startswith("gptq"):
                if not a.calib:
                    print(f"skipping {scheme}: no --calib", file=sys.stderr)
                    continue
                cmd += ["--calib", a.calib]
            run(cmd)
        r = {"scheme": scheme, "weights_bytes": weights_bytes(d)}
        if not a.speed_only:
            lm = json.loads(run([a.lmlab, "eval", "lm", "--checkpoint", d, "--json", "--threads", a.threads] +
                                 (["--data", a.eval_data] if a.eval_data else [])))
            m = lm["runs"][0]["metrics"] if "runs" in lm else lm
            r["val_loss"] = m.get("loss")
            r["perplexity"] = m.get("perplexity")
            text = run([a.lmlab, "sample", "--checkpoint", d, "--prompt", a.prompt, "--temperature", "0",
                        "--max-new-tokens", str(a.agree_tokens), "--threads", a.threads])
            if ref_text is None:
                ref_text = text
            same = 0
            for x, y in list(zip(text[len(a.prompt):], ref_text[len(a.prompt):]))[:a.agree_tokens]:
                if x != y:
                    break
                same += 1
            r["greedy_agree"] = same
        r["dir"] = d
        rows.append(r)
    for _ in range(a.rounds):
        for r in rows:
            eff = json.loads(run([a.lmlab, "eval", "efficiency", "--checkpoint", r["dir"], "--json", "--iters", "10",
                                  "--gen-tokens", a.gen_tokens, "--threads", a.threads]))["details"][0]
            r["forward_ms"] = min(r.get("forward_ms", float("inf")), eff["forward_ms_median"])
            r["gen_tokens_per_s"] = max(r.get("gen_tokens_per_s", 0.0), eff["generate_tokens_per_second"])
            r["peak_rss_mb"] = max(r.get("peak_rss_mb", 0.0), eff["peak_rss_bytes"] / 1e6)
            print(f"[compression] {r['scheme']}: {r}", file=sys.stderr, flush=True)
    base = rows[0]
    head = "| scheme | weights on disk | vs f32 |"
    sep = "|---|---:|---:|"
    if not a.speed_only:
        head += " val loss | Δ loss | greedy tokens equal to f32 |"
        sep += "---:|---:|---:|"
    head += " forward ms (B=1) | × f32 | generation tokens/s | × f32 | peak RSS MB |"
    sep += "---:|---:|---:|---:|---:|"
    print(head)
    print(sep)
    for r in rows:
        line = f"| {r['scheme']} | {r['weights_bytes'] / 1e6:.3f} MB | {base['weights_bytes'] / r['weights_bytes']:.2f}× smaller |"
        if not a.speed_only:
            line += (f" {r['val_loss']:.4f} | {r['val_loss'] - base['val_loss']:+.4f} |"
                     f" {r['greedy_agree']}/{a.agree_tokens} |")
        line += (f" {r['forward_ms']:.2f} | {base['forward_ms'] / r['forward_ms']:.2f}× |"
                 f" {r['gen_tokens_per_s']:.0f} | {r['gen_tokens_per_s'] / base['gen_tokens_per_s']:.2f}× |"
                 f" {r['peak_rss_mb']:.0f} |")
        print(line)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
