#!/usr/bin/env python3
"""all-MiniLM-L6-v2 under every quantization scheme: weights, peak RSS, speed, embedding quality.

  python3 scripts/compression_table_minilm.py [--model DIR] [--schemes f32,int8,...] [--threads 2]
      [--calib FILE] [--calib-samples 128] [--copies 10] [--rounds 3] [--lmlab target/release/lmlab]
      [--json-out FILE]

The sibling of scripts/compression_table.py for the sentence encoder, which `lmlab embed
--quantize SCHEME` quantizes at load time (there is no quantized MiniLM checkpoint file). For each
scheme, all through `lmlab embed`:
- weights: the bytes the weights take in the form a quantized checkpoint stores them (f32 tensors,
  and the quantized linear layers' codes, scales and zero points), and those of the 24 linear
  layers alone, from the `--timing` line;
- quality: the 23 committed sentences (tests/fixtures/embed/sentences.txt) and the 4 queries of
  tests/fixtures/embed/expected.json embedded in one run; the mean and lowest cosine of the
  sentences' embeddings to sentence-transformers' f32 ones (the fixture), and for each query
  whether the top hit and the top 3 (by cosine over the 23 sentences) equal the fixture's;
- speed: the sentences repeated --copies times, batch 8, embedding time from `--timing` (model
  loading and quantization excluded); --rounds rounds over all schemes in turn (so load from
  elsewhere on a shared machine hits every scheme alike), each scheme's best round kept;
- peak RSS: the largest resident set of those runs (the embedding process, rusage maxrss).
GPTQ schemes calibrate on the first --calib-samples non-empty lines of --calib (default: the
shared data's multi30k/val.en, English captions; not the evaluated sentences).
Prints a markdown table (the one in docs/COMPRESSION.md).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "embed")
DEFAULT_SCHEMES = "f32,int8,w8a8,q8_0,q4_0,rtn4-g32,gptq4-g32"


def timed(cmd):
    """Runs cmd (its output goes to --out files); returns (stderr, its peak RSS in bytes), the
    RSS from wait4 on this one child (RUSAGE_CHILDREN would be the largest child so far)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err}")
    return err, usage.ru_maxrss * 1024


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = max(sum(x * x for x in a) ** 0.5, 1e-12)
    nb = max(sum(x * x for x in b) ** 0.5, 1e-12)
    return dot / (na * nb)


def shared_data(rel):
    base = os.environ.get("LMLAB_DATA") or os.path.join(ROOT, "..", "shared", "data")
    return os.path.normpath(os.path.join(base, rel))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: scripts/fetch_minilm.sh's)")
    ap.add_argument("--schemes", default=DEFAULT_SCHEMES)
    ap.add_argument("--lmlab", default=os.path.join(ROOT, "target", "release", "lmlab"))
    ap.add_argument("--threads", default="2")
    ap.add_argument("--calib", default=shared_data("multi30k/val.en"))
    ap.add_argument("--calib-samples", default="128")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json-out")
    a = ap.parse_args()
    model = a.model or subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch_minilm.sh")], check=True,
                                      stdout=subprocess.PIPE, text=True).stdout.strip()
    with open(os.path.join(FIXTURES, "sentences.txt"), encoding="utf-8") as f:
        sentences = f.read().split("\n")[:-1]
    with open(os.path.join(FIXTURES, "expected.json"), encoding="utf-8") as f:
        x = json.load(f)
    want = x["embeddings"]
    assert len(want) == len(sentences)
    queries = [q["query"] for q in x["search"]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        qual_in = os.path.join(tmp, "quality.txt")
        with open(qual_in, "w", encoding="utf-8") as f:
            f.write("\n".join(sentences + queries) + "\n")
        speed_in = os.path.join(tmp, "speed.txt")
        with open(speed_in, "w", encoding="utf-8") as f:
            f.write("\n".join(sentences * a.copies) + "\n")
        out = os.path.join(tmp, "emb.jsonl")
        for scheme in a.schemes.split(","):
            base = [a.lmlab, "embed", "--model", model, "--threads", a.threads, "--timing", "--batch", "8"]
            if scheme != "f32":
                base += ["--quantize", scheme]
                if scheme.startswith("gptq"):
                    base += ["--calib", a.calib, "--calib-samples", a.calib_samples]
            err, rss = timed(base + ["--input", qual_in, "--out", out])
            r = {"scheme": scheme, "peak_rss_bytes": rss}
            m = re.search(r"weights: (\d+) bytes; (\d+) linear weights quantized: (\d+) bytes \(f32: (\d+)", err)
            r["weights_bytes"] = int(m.group(1))
            r["linear_bytes"] = int(m.group(3)) if int(m.group(2)) else None
            r["load_s"] = float(re.search(r"model loaded in ([\d.]+) s", err).group(1))
            with open(out, encoding="utf-8") as f:
                emb = [json.loads(line) for line in f]
            cos = [cosine(g, w) for g, w in zip(emb[:len(sentences)], want)]
            r["mean_cosine"] = sum(cos) / len(cos)
            r["min_cosine"] = min(cos)
            top1 = top3 = 0
            for q, e in zip(x["search"], emb[len(sentences):]):
                scores = [cosine(e, s) for s in emb[:len(sentences)]]
                order = sorted(range(len(scores)), key=lambda i: -scores[i])
                ref = [h[0] for h in q["hits"]]
                top1 += order[0] == ref[0]
                top3 += order[:3] == ref[:3]
            r["top1_kept"], r["top3_kept"] = top1, top3
            r["cmd"] = base
            rows.append(r)
        for _ in range(a.rounds):
            for r in rows:
                err, rss = timed(r["cmd"] + ["--input", speed_in, "--out", out])
                r["peak_rss_bytes"] = max(r["peak_rss_bytes"], rss)
                secs = float(re.search(r"sentences embedded in ([\d.]+) s", err).group(1))
                r["embed_s"] = min(r.get("embed_s", float("inf")), secs)
                r["sentences"] = len(sentences) * a.copies
                print(f"[minilm] {r['scheme']}: {r}", file=sys.stderr, flush=True)
    f32 = rows[0]
    print(f"all-MiniLM-L6-v2, {a.threads} threads, load average {os.getloadavg()[0]:.2f} at the end")
    print("| scheme | weights | linear layers | peak RSS | ms / sentence | × f32 | mean cosine to f32 | lowest "
          "| top hit kept | top 3 kept |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lin = f"{r['linear_bytes'] / 1e6:.2f} MB" if r["linear_bytes"] else "(f32)"
        ms = 1e3 * r["embed_s"] / r["sentences"]
        print(f"| {r['scheme']} | {r['weights_bytes'] / 1e6:.2f} MB | {lin} | {r['peak_rss_bytes'] / 1e6:.0f} MB |"
              f" {ms:.2f} | {f32['embed_s'] / r['embed_s']:.2f}× | {r['mean_cosine']:.5f} | {r['min_cosine']:.5f} |"
              f" {r['top1_kept']}/4 | {r['top3_kept']}/4 |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
