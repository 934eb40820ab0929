#!/usr/bin/env python3
"""PyTorch reference run of nanoGPT's CPU Tiny Shakespeare recipe, for comparison with
`lmlab train --config configs/shakespeare-char-cpu.toml`.

Same model (scripts/make_fixtures.py, nanoGPT layout, bias=False, tied embeddings), same data
pipeline (sorted character vocabulary, first 90% train / last 10% val, random windows), same
optimizer (AdamW betas (0.9, 0.99), weight decay 0.1 on Linear weights (--decay-embeddings: every
2-D tensor, as today's nanoGPT),
warm-up 100 then cosine 1e-3 -> 1e-4 over 2000, clip 1.0) and the same evaluation protocol
(mean of 20 random batches every 250 iterations). Prints the losses and the median ms/iter of
the training step (evaluation excluded).

  .venv/bin/python scripts/train_reference.py --data ../shared/data/tinyshakespeare.txt [--seed 1337] [--gelu tanh|erf]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import GPT, get_lr, gpt2_init  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/tinyshakespeare.txt")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-iters", type=int, default=2000)
    ap.add_argument("--gelu", choices=["tanh", "erf"], default="tanh", help="erf is nanoGPT's; tanh is lmlab's")
    ap.add_argument("--decay-embeddings", action="store_true",
                    help="weight decay on wte/wpe too (today's nanoGPT); default: Linear weights only, as lmlab's config")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    text = open(args.data, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    train, val = data[:n], data[n:]

    block, batch, max_iters = 64, 12, args.max_iters
    cfg = dict(vocab_size=len(chars), block_size=block, n_layer=4, n_head=4, n_embd=128, bias=False, tie_embeddings=True)
    model = GPT(cfg, flash=True)
    if args.gelu == "erf":
        for b in model.transformer.h:
            b.mlp.gelu = nn.GELU()
    gpt2_init(model, cfg["n_layer"])
    named = dict(model.named_parameters())
    is_emb = lambda name: name in ("transformer.wte.weight", "transformer.wpe.weight")
    decay = [p for n, p in named.items() if p.dim() >= 2 and (args.decay_embeddings or not is_emb(n))]
    no_decay = [p for n, p in named.items() if not (p.dim() >= 2 and (args.decay_embeddings or not is_emb(n)))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99), eps=1e-8)

    schedule = dict(lr=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000)

    def get_batch(split):
        d = train if split == "train" else val
        ix = torch.randint(len(d) - block, (batch,))
        x = torch.stack([d[i:i + block] for i in ix])
        y = torch.stack([d[i + 1:i + 1 + block] for i in ix])
        return x, y

    @torch.no_grad()
    def estimate_loss():
        model.eval()
        out = {}
        for split in ("train", "val"):
            out[split] = sum(model(*get_batch(split))[1].item() for _ in range(20)) / 20
        model.train()
        return out

    history, step_ms = [], []
    for it in range(max_iters + 1):
        if it % 250 == 0 or it == max_iters:
            l = estimate_loss()
            history.append({"iter": it, "train_loss": l["train"], "val_loss": l["val"]})
            if not args.json:
                print(f"step {it:5d}: train loss {l['train']:.4f}, val loss {l['val']:.4f}", flush=True)
        if it == max_iters:
            break
        for g in opt.param_groups:
            g["lr"] = get_lr(it, schedule)
        x, y = get_batch("train")
        t0 = time.perf_counter()
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step_ms.append((time.perf_counter() - t0) * 1e3)
    result = {"seed": args.seed, "gelu": args.gelu, "torch": torch.__version__, "threads": args.threads,
              "final_val_loss": history[-1]["val_loss"], "final_train_loss": history[-1]["train_loss"],
              "median_step_ms": statistics.median(step_ms), "history": history}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"median step {result['median_step_ms']:.1f} ms/iter (torch {torch.__version__}, {args.threads} threads)")


if __name__ == "__main__":
    main()
