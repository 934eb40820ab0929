#!/usr/bin/env python3
"""PyTorch (CPU, float32) side of lmlab's training-step timing comparison.

Times one full training step of the nanoGPT-style model from make_fixtures.py:
zero_grad(set_to_none=True) -> forward+loss on a random batch -> backward ->
clip_grad_norm_(1.0) -> AdamW step. GPT-2 init, tied embeddings, bias, no dropout.

  .venv/bin/python scripts/bench_pytorch_train.py --config S --threads 2 --iters 30 [--json]
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import GPT, decay_param_names  # noqa: E402

CONFIGS = {
    "S": dict(vocab_size=65, block_size=64, batch=12, n_layer=4, n_head=4, n_embd=128),
    "M": dict(vocab_size=65, block_size=256, batch=16, n_layer=6, n_head=6, n_embd=384),
}


def gpt2_init(model, n_layer):
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif ".ln_" in name or name.startswith("transformer.ln_f"):
            nn.init.ones_(p)
        elif name.endswith("c_proj.weight"):  # residual projections
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
        else:  # wte (tied lm_head), wpe, c_attn, c_fc
            nn.init.normal_(p, mean=0.0, std=0.02)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="S")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--attn", choices=["sdpa", "manual"], default="sdpa",
                    help="sdpa = F.scaled_dot_product_attention (nanoGPT's flash path); manual = explicit softmax")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    c = CONFIGS[args.config]
    cfg = dict(c, bias=True, tie_embeddings=True)
    B, T, V = c["batch"], c["block_size"], c["vocab_size"]
    model = GPT(cfg, flash=(args.attn == "sdpa"))
    gpt2_init(model, c["n_layer"])
    model.train()
    n_params = sum(p.numel() for p in model.parameters())

    params = dict(model.named_parameters())
    dnames = set(decay_param_names(model))
    groups = [
        {"params": [p for n, p in params.items() if n in dnames], "weight_decay": 0.1},
        {"params": [p for n, p in params.items() if n not in dnames], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99))

    total = args.warmup + args.iters
    gen = torch.Generator().manual_seed(args.seed)
    batches = [(torch.randint(0, V, (B, T), generator=gen), torch.randint(0, V, (B, T), generator=gen))
               for _ in range(total)]

    times, losses = [], []
    for it in range(total):
        x, y = batches[it]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = loss.item()  # also a sync point
        dt = time.perf_counter() - t0
        losses.append(lv)
        if it >= args.warmup:
            times.append(dt * 1e3)

    med = statistics.median(times)
    res = dict(
        impl="pytorch", torch=torch.__version__, config=args.config, **c, threads=args.threads,
        attn=args.attn, params=n_params, warmup=args.warmup, iters=args.iters,
        median_ms=med, min_ms=min(times), max_ms=max(times), tokens_per_s=B * T / (med / 1e3),
        initial_loss=losses[0], final_loss=losses[-1],
    )
    if args.json:
        print(json.dumps(res))
    else:
        print(f"pytorch {torch.__version__} config {args.config} ({n_params / 1e6:.3f}M params, B={B} T={T}, "
              f"{c['n_layer']}L {c['n_head']}H {c['n_embd']}C) threads {args.threads} attn {args.attn}")
        print(f"step ms: median {med:.2f}  min {min(times):.2f}  max {max(times):.2f}  "
              f"({args.iters} iters after {args.warmup} warmup)  tokens/s {res['tokens_per_s']:.0f}")
        print(f"initial loss {losses[0]:.4f} (ln {V} = {math.log(V):.4f})  final loss {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
