#!/usr/bin/env python3
"""llama.cpp (the PyPI package llama-cpp-python, which compiles it) against lmlab, on the GGUF
files `lmlab export --gguf` writes.

  /work/venv/bin/pip install llama-cpp-python      # once: builds llama.cpp (about 5 minutes)
  python3 scripts/check_llama_cpp.py [--lmlab BIN] [--iters 40] [--tokens 256] [--threads 2]

1. Trains a Llama-architecture lmlab model (RMSNorm, RoPE, SwiGLU, GQA, no biases; 6 layers,
   384 wide, 6 heads / 2 kv heads, feed-forward 1024, block 256, character tokenizer) for
   --iters steps on Tiny Shakespeare, so its next-token distributions are peaked.
2. Exports it as GGUF f32 and q8_0, and quantizes the checkpoint to q8_0 with lmlab.
3. Greedy generation of --tokens tokens from the same prompt ids with llama.cpp (token ids fed
   directly: the character tokenizer has no llama.cpp counterpart) and with lmlab: f32 against
   f32, q8_0 against q8_0. Reports token agreement, the first step's largest logit difference,
   and tokens/s of both (prompt and generation separately).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{p.stderr}")
    return p.stdout


def lmlab_greedy(lmlab, ckpt, prompt, n, threads):
    """lmlab's greedy continuation (text) and its wall time."""
    t = time.perf_counter()
    out = run(lmlab, "sample", "--checkpoint", ckpt, "--prompt", prompt, "--temperature", "0",
              "--max-new-tokens", n, "--threads", threads)
    return out, time.perf_counter() - t


def lmlab_gen_rate(lmlab, ckpt, n, threads):
    """lmlab's greedy generation rate (tokens/s, `lmlab eval efficiency`)."""
    eff = json.loads(run(lmlab, "eval", "efficiency", "--checkpoint", ckpt, "--json", "--iters", "1",
                         "--gen-tokens", n, "--threads", threads))
    return eff["details"][0]["generate_tokens_per_second"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmlab", default=ROOT / "target" / "release" / "lmlab")
    ap.add_argument("--data", default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    ap.add_argument("--iters", default="40")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    from llama_cpp import Llama

    work = Path(a.work or tempfile.mkdtemp(prefix="lmlab-llama-cpp-"))
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / "run"
    cfg = work / "llama.toml"
    cfg.write_text(
        "[model]\nblock_size = 256\nn_layer = 6\nn_head = 6\nn_kv_head = 2\nn_embd = 384\nffn_hidden = 1024\n"
        'norm = "rmsnorm"\nposition = "rope"\nactivation = "swiglu"\nbias = false\ntie_embeddings = false\n'
        "norm_eps = 1e-5\n"
        f"[data]\npath = {json.dumps(str(a.data))}\n"
        f"[train]\nout_dir = {json.dumps(str(run_dir))}\nbatch_size = 8\nmax_iters = {a.iters}\n"
        f"eval_interval = {a.iters}\neval_iters = 2\nthreads = {a.threads}\n"
        "[optim]\nlearning_rate = 3e-3\nwarmup_iters = 5\n"
    )
    ckpt = run_dir / "ckpt"
    if not (ckpt / "state.json").exists():
        run(a.lmlab, "train", "--config", cfg, "--quiet")
    chars = json.loads((ckpt / "tokenizer.json").read_text())["chars"]
    index = {c: i for i, c in enumerate(chars)}
    prompt = "ROMEO:\n"
    prompt_ids = [index[c] for c in prompt]
    q8_ckpt = work / "ckpt_q8_0"
    if not (q8_ckpt / "state.json").exists():
        run(a.lmlab, "quantize", "--checkpoint", ckpt, "--scheme", "q8_0", "--out", q8_ckpt)
    print(f"model: {ckpt} (trained {a.iters} steps); prompt {prompt!r}; {a.tokens} greedy tokens; "
          f"{a.threads} threads")
    for ty, ours in (("f32", ckpt), ("q8_0", q8_ckpt)):
        gguf = work / f"model.{ty}.gguf"
        run(a.lmlab, "export", "--gguf", gguf, "--type", ty, "--checkpoint", ckpt)
        llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=int(a.threads), n_batch=256,
                    logits_all=True, verbose=False)
        # The first step's logits: llama.cpp's against lmlab's at the last prompt position.
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt_ids)
        t_prompt = time.perf_counter() - t
        theirs0 = np.array(llm.scores[len(prompt_ids) - 1], dtype=np.float64)
        mine = json.loads(run(a.lmlab, "eval", "logits", "--checkpoint", ours, "--text", prompt))
        mine0 = np.array(mine["logits"][-1], dtype=np.float64)
        # Greedy continuation, one token at a time (the prompt is already in the cache).
        toks, t = [], time.perf_counter()
        nxt = int(np.argmax(llm.scores[len(prompt_ids) - 1]))
        for _ in range(a.tokens):
            toks.append(nxt)
            if len(prompt_ids) + len(toks) >= 256:
                break
            llm.eval([nxt])
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t_gen = time.perf_counter() - t
        theirs_text = "".join(chars[i] for i in toks)
        mine_text, t_mine = lmlab_greedy(a.lmlab, ours, prompt, len(toks), a.threads)
        mine_text = mine_text[len(prompt):]
        same = next((i for i, (x, y) in enumerate(zip(mine_text, theirs_text)) if x != y), min(len(mine_text), len(theirs_text)))
        print(f"{ty}: tokens equal before the first difference {same}/{len(toks)}; first step: largest logit "
              f"difference {np.max(np.abs(theirs0 - mine0)):.3e} (largest logit {np.max(np.abs(mine0)):.3f}); "
              f"llama.cpp prompt {len(prompt_ids) / t_prompt:.0f} tokens/s, generation {len(toks) / t_gen:.0f} "
              f"tokens/s; lmlab generation {lmlab_gen_rate(a.lmlab, ours, len(toks), a.threads):.0f} tokens/s")
        del llm


if __name__ == "__main__":
    main()
