#!/usr/bin/env python3
"""PyTorch (CPU, float32) side of lmlab's benchmark harness (bench/run.py).

Runs one benchmark case on the weights and first batch that `lmlab bench
--dump-init FILE` wrote, and prints one JSON line in the same shape as lmlab's:

  .venv/bin/python bench/torch_cases.py --case S-train --iters 30 --warmup 5 \
      --threads 2 --init /tmp/lmlab-S-train.safetensors --json

Cases (fp32, dropout 0, bias=False, tied embeddings, GELU tanh; the model is
GPT from scripts/make_fixtures.py with flash=True, i.e. F.scaled_dot_product_attention):
  S-train     4L 4H 128C, block 64, batch 12: one full training step per iteration
              (zero_grad(set_to_none) -> forward+loss -> backward -> clip_grad_norm_(1.0)
              -> AdamW(lr 1e-3, betas (0.9, 0.99), eps 1e-8, wd 0.1 on c_attn/c_proj/c_fc weights))
  M-train     6L 6H 384C, block 256, batch 16: same step
  M-forward   M model, forward only (all-position logits), batch 1 x 256 tokens, inference_mode
  M-generate  M model, 256 greedy new tokens from a 1-token prompt with a KV cache; one
              iteration = the whole generation (prefill + 255 one-token decode steps)
  M-forward-bf16w, M-generate-bf16w
              the same with the model in bf16 (model.to(torch.bfloat16))

Other modes:
  --make-init FILE --case CASE [--seed S]   write an init file in lmlab's --dump-init format
                                            from a GPT-2-initialised model (for testing)
  --case sgemm --size 2048                  time torch.mm of two n x n fp32 matrices
  --check-kv --init FILE                    check KV-cache decoding logits against the full forward

Init file (safetensors): `param.<nanoGPT name>` for every parameter (Linear weights
(out, in); tied embeddings, so no lm_head), `batch.idx` / `batch.targets` (int64, (B, T)),
metadata `config` = JSON {vocab_size, block_size, n_layer, n_head, n_embd, batch, seq,
bias, tie_embeddings} (+ optional `prompt_len`, `new_tokens` for M-generate).
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from make_fixtures import GPT, decay_param_names, gpt2_init  # noqa: E402

_S = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
_M = dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)
_D = dict(vocab_size=65, block_size=128, n_layer=8, n_head=8, n_embd=256)
# batch/seq of the case's input; for M-generate the "batch" is the 1-token prompt.
CASES = {
    "S-train": dict(_S, batch=12, seq=64, mode="train"),
    "M-train": dict(_M, batch=16, seq=256, mode="train"),
    "D-train": dict(_D, batch=8, seq=128, mode="train"),
    # bf16: torch.autocast("cpu", dtype=torch.bfloat16) around forward and loss, fp32 master
    # weights and optimizer, as lmlab's train.precision = "bf16".
    "S-train-bf16": dict(_S, batch=12, seq=64, mode="train", autocast=True),
    "M-train-bf16": dict(_M, batch=16, seq=256, mode="train", autocast=True),
    "M-forward": dict(_M, batch=1, seq=256, mode="forward"),
    "M-generate": dict(_M, batch=1, seq=1, mode="generate", new_tokens=256),
    # bf16 weights: the model converted with model.to(torch.bfloat16) after the fp32 initial
    # loss, as PyTorch users run bf16 inference (activations and KV cache in bf16 too).
    "M-forward-bf16w": dict(_M, batch=1, seq=256, mode="forward", bf16_weights=True),
    "M-generate-bf16w": dict(_M, batch=1, seq=1, mode="generate", new_tokens=256, bf16_weights=True),
}
CFG_KEYS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")


def peak_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


# ----------------------------------------------------------------------------
# Init files

def make_init(path, case, seed):
    from safetensors.torch import save_file
    c = CASES[case]
    cfg = {k: c[k] for k in CFG_KEYS}
    cfg.update(batch=c["batch"], seq=c["seq"], bias=False, tie_embeddings=True)
    gen = torch.Generator().manual_seed(seed)
    model = GPT(cfg)
    gpt2_init(model, cfg["n_layer"], gen)
    tensors = {"param." + n: p.detach().contiguous() for n, p in model.named_parameters()}
    B, T, V = cfg["batch"], cfg["seq"], cfg["vocab_size"]
    tensors["batch.idx"] = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    tensors["batch.targets"] = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    save_file(tensors, path, metadata={"config": json.dumps(cfg)})


def load_init(path, flash=True):
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise SystemExit(f"{path}: no 'config' metadata")
    file_cfg = json.loads(meta["config"])
    cfg = {k: int(file_cfg[k]) for k in CFG_KEYS}
    cfg["bias"] = bool(file_cfg.get("bias", False))
    cfg["tie_embeddings"] = bool(file_cfg.get("tie_embeddings", True))
    tensors = load_file(path)
    model = GPT(cfg, flash=flash)
    params = dict(model.named_parameters())
    given = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
    missing = sorted(set(params) - set(given))
    extra = sorted(set(given) - set(params))
    if missing or extra:
        raise SystemExit(f"{path}: parameter names differ from GPT({cfg}): missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for n, p in params.items():
            t = given[n]
            if tuple(t.shape) != tuple(p.shape):
                raise SystemExit(f"{path}: {n} has shape {tuple(t.shape)}, model wants {tuple(p.shape)}")
            p.copy_(t.to(torch.float32))
    idx = tensors["batch.idx"].to(torch.int64)
    targets = tensors["batch.targets"].to(torch.int64)
    return model, cfg, file_cfg, idx, targets


# ----------------------------------------------------------------------------
# KV-cache greedy decoding

@torch.inference_mode()
def generate_kv(model, prompt, new_tokens, attn="sdpa"):
    """Greedy decoding with a per-layer KV cache (preallocated (1, nh, t_max, hs) buffers,
    of which [:, :, :t] is used). The prompt is prefilled in one causal pass; then each
    step feeds one token. Returns the new token ids (tensor of length new_tokens)."""
    tr = model.transformer
    cfg = model.cfg
    C, nh = cfg["n_embd"], cfg["n_head"]
    hs = C // nh
    P = prompt.shape[1]
    t_max = P + new_tokens - 1  # the last generated token is never fed back
    assert t_max <= cfg["block_size"], (t_max, cfg["block_size"])
    L = len(tr.h)
    dtype = tr.wte.weight.dtype
    kc = torch.empty(L, 1, nh, t_max, hs, dtype=dtype)
    vc = torch.empty(L, 1, nh, t_max, hs, dtype=dtype)
    scale = 1.0 / math.sqrt(hs)
    wte = tr.wte.weight
    wpe = tr.wpe.weight

    def run(x, t0):
        T = x.shape[1]
        t1 = t0 + T
        for l, blk in enumerate(tr.h):
            a = blk.attn
            q, k, v = a.c_attn(blk.ln_1(x)).split(C, dim=2)
            q = q.view(1, T, nh, hs).transpose(1, 2)
            kc[l, :, :, t0:t1] = k.view(1, T, nh, hs).transpose(1, 2)
            vc[l, :, :, t0:t1] = v.view(1, T, nh, hs).transpose(1, 2)
            K, V = kc[l, :, :, :t1], vc[l, :, :, :t1]
            if T > 1:  # prefill: causal over the prompt (t0 == 0)
                y = F.scaled_dot_product_attention(q, K, V, is_causal=True)
            elif attn == "sdpa":
                y = F.scaled_dot_product_attention(q, K, V)
            else:
                y = torch.softmax((q @ K.transpose(-2, -1)) * scale, dim=-1) @ V
            y = y.transpose(1, 2).reshape(1, T, C)
            x = x + a.c_proj(y)
            x = x + blk.mlp(blk.ln_2(x))
        x = tr.ln_f(x[:, -1:, :])
        return model.lm_head(x)[0, -1]  # (V,)

    out = torch.empty(new_tokens, dtype=torch.int64)
    x = wte[prompt] + wpe[:P]
    logits = run(x, 0)
    t = P
    for i in range(new_tokens):
        nxt = torch.argmax(logits)
        out[i] = nxt
        if i + 1 == new_tokens:
            break
        x = (wte[nxt] + wpe[t]).view(1, 1, C)
        logits = run(x, t)
        t += 1
    return out


@torch.inference_mode()
def generate_full(model, prompt, new_tokens):
    """Reference: greedy decoding recomputing the full forward every step."""
    idx = prompt.clone()
    for _ in range(new_tokens):
        logits, _ = model(idx)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx[0, prompt.shape[1]:]


# ----------------------------------------------------------------------------
# Cases

def make_optimizer(model):
    params = dict(model.named_parameters())
    dnames = set(decay_param_names(model))
    groups = [
        {"params": [p for n, p in params.items() if n in dnames], "weight_decay": 0.1},
        {"params": [p for n, p in params.items() if n not in dnames], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), eps=1e-8)


def run_case(args):
    torch.set_num_threads(args.threads)
    model, cfg, file_cfg, idx0, tg0 = load_init(args.init, flash=True)
    case = args.case
    mode = CASES[case]["mode"] if case in CASES else None
    if mode is None:
        raise SystemExit(f"unknown case {case}")
    with torch.no_grad():
        _, loss0 = model(idx0, tg0)
    initial_loss = loss0.item()
    if CASES[case].get("bf16_weights"):
        model.to(torch.bfloat16)
    total = args.warmup + args.iters
    times = []
    res = dict(case=case, impl="pytorch", torch=torch.__version__, threads=torch.get_num_threads(),
               iters=args.iters, warmup=args.warmup, initial_loss=initial_loss,
               params=sum(p.numel() for p in model.parameters()))

    if mode == "train":
        model.train()
        opt = make_optimizer(model)
        B, T = idx0.shape
        V = cfg["vocab_size"]
        gen = torch.Generator().manual_seed(args.seed)
        batches = [(idx0, tg0)] + [(torch.randint(0, V, (B, T), generator=gen),
                                    torch.randint(0, V, (B, T), generator=gen)) for _ in range(total - 1)]
        losses = []
        autocast = CASES[case].get("autocast", False)
        res.update(autocast="bf16" if autocast else None)
        for it in range(total):
            x, y = batches[it]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                _, loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            lv = loss.item()
            dt = time.perf_counter() - t0
            losses.append(lv)
            if it >= args.warmup:
                times.append(dt * 1e3)
        res.update(first_step_loss=losses[0], final_loss=losses[-1])
    elif mode == "forward":
        model.eval()
        with torch.inference_mode():
            for it in range(total):
                t0 = time.perf_counter()
                logits, _ = model(idx0)
                dt = time.perf_counter() - t0
                if it >= args.warmup:
                    times.append(dt * 1e3)
        res.update(logits_shape=list(logits.shape))
    elif mode == "generate":
        model.eval()
        P = int(file_cfg.get("prompt_len", 1))
        n_new = int(file_cfg.get("new_tokens", CASES[case]["new_tokens"]))
        if args.new_tokens:
            n_new = args.new_tokens
        prompt = idx0[:1, :P].contiguous()
        first_tokens = None
        for it in range(total):
            t0 = time.perf_counter()
            toks = generate_kv(model, prompt, n_new, attn=args.gen_attn)
            dt = time.perf_counter() - t0
            if first_tokens is None:
                first_tokens = toks.tolist()
            if it >= args.warmup:
                times.append(dt * 1e3)
        res.update(tokens=first_tokens, prompt=prompt[0].tolist(), new_tokens=n_new, gen_attn=args.gen_attn)
    res["times_ms"] = times
    if times:
        res.update(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times))
    res["peak_rss_kb"] = peak_rss_kb()
    return res


def run_sgemm(args):
    torch.set_num_threads(args.threads)
    n = args.size
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    c = torch.empty(n, n)
    times = []
    for it in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        dt = time.perf_counter() - t0
        if it >= args.warmup:
            times.append(dt * 1e3)
    flops = 2.0 * n ** 3
    med = statistics.median(times)
    return dict(case="sgemm", impl="pytorch", torch=torch.__version__, threads=torch.get_num_threads(), n=n,
                times_ms=times, median_ms=med, flops_per_iter=flops, gflops=flops / (med * 1e-3) / 1e9,
                gflops_best=flops / (min(times) * 1e-3) / 1e9, peak_rss_kb=peak_rss_kb(),
                mkldnn=torch.backends.mkldnn.is_available(),
                blas=[l.strip() for l in torch.__config__.show().splitlines() if "BLAS_INFO" in l or "LAPACK_INFO" in l])


def check_kv(args):
    torch.set_num_threads(args.threads)
    model, cfg, file_cfg, idx0, _ = load_init(args.init, flash=True)
    model.eval()
    P = int(file_cfg.get("prompt_len", 1))
    n_new = args.new_tokens or min(64, cfg["block_size"] - P + 1)
    prompt = idx0[:1, :P].contiguous()
    ref = generate_full(model, prompt, n_new).tolist()
    out = {}
    for attn in ("matmul", "sdpa"):
        toks = generate_kv(model, prompt, n_new, attn=attn).tolist()
        out[attn] = sum(a == b for a, b in zip(toks, ref))
    print(json.dumps(dict(new_tokens=n_new, matches_full_forward=out)))
    return all(v == n_new for v in out.values())


def run_attention(args, t):
    """attn-sdpa-T: forward + backward of F.scaled_dot_product_attention (causal), batch 1,
    6 heads of 64, T tokens: the PyTorch side of lmlab's attn-dense-T / attn-flash-T."""
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.rand(1, 6, t, 64, generator=g).mul_(2).sub_(1).requires_grad_() for _ in range(3))
    dy = torch.rand(1, 6, t, 64, generator=g)
    times = []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        y.backward(dy)
        q.grad = k.grad = v.grad = None
        if i >= args.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return dict(case=args.case, threads=args.threads, iters=args.iters, times_ms=times,
                median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
                flops_per_iter=12.0 * t * t * 384, peak_rss_kb=peak_rss_kb())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", required=False, help=f"one of {', '.join(CASES)}, or sgemm")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337, help="RNG seed for training batches after the first / --make-init")
    ap.add_argument("--init", help="init file written by `lmlab bench --dump-init` (or --make-init)")
    ap.add_argument("--json", action="store_true", help="print one JSON line (default: also a short summary)")
    ap.add_argument("--make-init", metavar="FILE", help="write a GPT-2-initialised init file for --case and exit")
    ap.add_argument("--gen-attn", choices=["sdpa", "matmul"], default="sdpa",
                    help="attention of the single-query decode step: F.scaled_dot_product_attention (default; "
                         "measured ~1.6x faster per call than matmul+softmax on CPU) or explicit matmul+softmax")
    ap.add_argument("--new-tokens", type=int, default=0, help="override the number of generated tokens")
    ap.add_argument("--size", type=int, default=2048, help="matrix size for --case sgemm")
    ap.add_argument("--check-kv", action="store_true", help="compare KV-cache decoding with full-forward decoding")
    args = ap.parse_args()

    if args.make_init:
        if args.case not in CASES:
            ap.error(f"--make-init needs --case in {list(CASES)}")
        make_init(args.make_init, args.case, args.seed)
        print(json.dumps(dict(init=args.make_init, case=args.case, seed=args.seed)))
        return
    if args.check_kv:
        sys.exit(0 if check_kv(args) else 1)
    if args.case == "sgemm":
        res = run_sgemm(args)
    elif args.case and args.case.startswith("attn-sdpa-"):
        res = run_attention(args, int(args.case.rsplit("-", 1)[1]))
    else:
        if not args.init:
            ap.error("--init FILE is required (write one with `lmlab bench --dump-init` or --make-init)")
        res = run_case(args)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['case']}: median {res['median_ms']:.3f} ms  min {res['min_ms']:.3f}  max {res['max_ms']:.3f}  "
              f"({args.iters} iters after {args.warmup} warmup, {res['threads']} threads)  "
              f"initial loss {res.get('initial_loss', float('nan')):.6f}  peak RSS {res['peak_rss_kb'] / 1024:.0f} MB")


if __name__ == "__main__":
    main()
