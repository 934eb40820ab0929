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
   f32, q8_0 against q8_0 (the quantized checkpoint's own blocks, `export --gguf` without
   --type). llama.cpp's KV cache is f32 here (its default is f16). Reports token agreement, the
   first step's largest logit difference, and tokens/s of both: llama.cpp's from its own perf
   counters over the greedy decode (prompt and generation separately; one token per call, as
   lmlab generates), lmlab's from `eval efficiency`.
4. The same for llama2.c's stories260K (`--stories DIR`, default the shared data's llama2c/):
   `lmlab import --llama2c` makes it a checkpoint with its SentencePiece tokenizer, which the
   GGUF export carries as llama.cpp's "llama" vocabulary, so here llama.cpp tokenizes the
   prompt itself (its ids must equal lmlab's) and the texts are compared.
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
# llama.cpp keeps its KV cache in f16 by default; f32 (GGML_TYPE_F32 = 0) compares like with like
# (on stories260K the first step's largest logit difference is 6e-3 with f16, 9e-6 with f32).
KV_F32 = dict(type_k=0, type_v=0)


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


def greedy_llama_cpp(llm, prompt_ids, n, n_ctx):
    """llama.cpp's greedy continuation of prompt_ids: (tokens, first-step logits, prompt tokens/s,
    generation tokens/s). The generation rate is llama.cpp's own perf counters (its decode time,
    not the Python loop around it); the prompt's is the wall time of its one `eval`."""
    import llama_cpp
    llm.reset()
    llm.eval(prompt_ids[:1])  # warm-up: the first decode builds llama.cpp's compute graph
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt_ids)
    p_rate = len(prompt_ids) / (time.perf_counter() - t)
    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    first = np.array(llm.scores[len(prompt_ids) - 1], dtype=np.float64)
    toks = []
    nxt = int(np.argmax(llm.scores[len(prompt_ids) - 1]))
    for _ in range(n):
        toks.append(nxt)
        if len(prompt_ids) + len(toks) >= n_ctx:
            break
        llm.eval([nxt])
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    p = llama_cpp.llama_perf_context(llm._ctx.ctx)
    evals = p.n_eval + p.n_p_eval
    return toks, first, p_rate, evals / ((p.t_eval_ms + p.t_p_eval_ms) / 1e3)


def check_stories(a, work, Llama):
    """stories260K through `import --llama2c`, GGUF f32 and q8_0, against llama.cpp."""
    model, tok = Path(a.stories) / "stories260K.bin", Path(a.stories) / "tok512.bin"
    if not model.exists():
        print(f"stories260K: {model} not found, skipped")
        return
    ckpt = work / "stories260K"
    if not (ckpt / "state.json").exists():
        run(a.lmlab, "import", "--llama2c", model, "--tokenizer", tok, "--out", ckpt)
    q8 = work / "stories260K-q8_0"
    if not (q8 / "state.json").exists():
        run(a.lmlab, "quantize", "--checkpoint", ckpt, "--scheme", "q8_0", "--out", q8)
    prompt = "Once upon a time"
    n = a.tokens
    print(f"stories260K (lmlab import --llama2c); prompt {prompt!r}; {n} greedy tokens; {a.threads} threads")
    for ty, ours in (("f32", ckpt), ("q8_0", q8)):
        gguf = work / f"stories260K.{ty}.gguf"
        # The quantized checkpoint exports its own Q8_0 blocks (embeddings, norms and any
        # weight that is not a multiple of 32 wide stay f32), so both sides run the same weights.
        run(a.lmlab, "export", "--gguf", gguf, "--checkpoint", ours)
        llm = Llama(model_path=str(gguf), n_ctx=512, n_threads=int(a.threads), n_batch=512,
                    logits_all=True, verbose=False, **KV_F32)
        prompt_ids = llm.tokenize(prompt.encode(), add_bos=True)
        mine = json.loads(run(a.lmlab, "eval", "logits", "--checkpoint", ours, "--text", prompt))
        assert mine["ids"] == prompt_ids, f"prompt ids differ: lmlab {mine['ids']}, llama.cpp {prompt_ids}"
        toks, theirs0, p_rate, g_rate = greedy_llama_cpp(llm, prompt_ids, n, 512)
        mine0 = np.array(mine["logits"][-1], dtype=np.float64)
        mine_text, _ = lmlab_greedy(a.lmlab, ours, prompt, len(toks), a.threads)
        mine_text = mine_text[len(prompt):]
        # Tokens of llama.cpp's continuation whose text is a prefix of lmlab's.
        same = 0
        while same < len(toks) and mine_text.startswith(
                llm.detokenize(prompt_ids[-1:] + toks[:same + 1]).decode(errors="replace")[len(
                    llm.detokenize(prompt_ids[-1:]).decode(errors="replace")):]):
            same += 1
        del llm
        print(f"{ty}: prompt ids equal ({len(prompt_ids)}); tokens equal before the first difference "
              f"{same}/{len(toks)}; first step: largest logit difference {np.max(np.abs(theirs0 - mine0)):.3e} "
              f"(largest logit {np.max(np.abs(mine0)):.3f}); llama.cpp prompt {p_rate:.0f} tokens/s, generation "
              f"{g_rate:.0f} tokens/s; lmlab generation {lmlab_gen_rate(a.lmlab, ours, len(toks), a.threads):.0f} "
              "tokens/s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmlab", default=ROOT / "target" / "release" / "lmlab")
    ap.add_argument("--data", default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    ap.add_argument("--iters", default="40")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--work", default=None)
    ap.add_argument("--stories", default=ROOT.parent / "shared" / "data" / "llama2c")
    ap.add_argument("--only", choices=["m", "stories"], default=None)
    a = ap.parse_args()
    from llama_cpp import Llama

    work = Path(a.work or tempfile.mkdtemp(prefix="lmlab-llama-cpp-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.only != "m":
        check_stories(a, work, Llama)
    if a.only == "stories":
        return
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
        # The quantized checkpoint exports its own Q8_0 blocks (embeddings, norms and any
        # weight that is not a multiple of 32 wide stay f32), so both sides run the same weights.
        run(a.lmlab, "export", "--gguf", gguf, "--checkpoint", ours)
        llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=int(a.threads), n_batch=256,
                    logits_all=True, verbose=False, **KV_F32)
        mine = json.loads(run(a.lmlab, "eval", "logits", "--checkpoint", ours, "--text", prompt))
        mine0 = np.array(mine["logits"][-1], dtype=np.float64)
        toks, theirs0, p_rate, g_rate = greedy_llama_cpp(llm, prompt_ids, a.tokens, 256)
        del llm
        theirs_text = "".join(chars[i] for i in toks)
        mine_text, _ = lmlab_greedy(a.lmlab, ours, prompt, len(toks), a.threads)
        mine_text = mine_text[len(prompt):]
        same = next((i for i, (x, y) in enumerate(zip(mine_text, theirs_text)) if x != y), min(len(mine_text), len(theirs_text)))
        print(f"{ty}: tokens equal before the first difference {same}/{len(toks)}; first step: largest logit "
              f"difference {np.max(np.abs(theirs0 - mine0)):.3e} (largest logit {np.max(np.abs(mine0)):.3f}); "
              f"llama.cpp prompt {p_rate:.0f} tokens/s, generation {g_rate:.0f} tokens/s; lmlab generation "
              f"{lmlab_gen_rate(a.lmlab, ours, len(toks), a.threads):.0f} tokens/s")


if __name__ == "__main__":
    main()
