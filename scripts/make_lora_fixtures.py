#!/usr/bin/env python3
"""LoRA reference fixture for lmlab (tests/lora.rs).

A tiny nanoGPT decoder (scripts/make_fixtures.py's GPT) with LoRA adapters on the fused
attention projection of every block (target "c_attn") and on the feed-forward output
projection of block 1 only (target "transformer.h.1.mlp.c_proj"), in float64, written as the
explicit formula of Hu et al. (2021) / peft's lora.Linear without dropout:

    y = x·Wᵀ + b + (alpha/r)·(x·Aᵀ)·Bᵀ,   A (r, in), B (out, r)

B is random (not peft's zero start) so that the output and A's gradient are non-trivial. Only
A and B require gradients (the base model is frozen, as peft's); the fixture also holds the
gradient of the loss with respect to the token embeddings (the model's input). Stored:
param.<name> (base), lora.<layer>.lora_A.weight / lora_B.weight, idx, targets, logits, loss,
grad.<adapter name>, input_grad; metadata `config` (sizes, rank, alpha, targets).
Usage: /work/venv/bin/python scripts/make_lora_fixtures.py [--out DIR]
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import GPT, f32, init_fixture_weights, random_batch, save_deterministic  # noqa: E402


class LoraLinear(nn.Module):
    """A frozen nn.Linear plus the rank-r update (alpha/r)·(x·Aᵀ)·Bᵀ."""

    def __init__(self, base, r, alpha, gen):
        super().__init__()
        self.base = base
        self.scale = alpha / r
        out_f, in_f = base.weight.shape
        bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform(a=√5), peft's init of A
        self.lora_A = nn.Parameter((torch.rand(r, in_f, generator=gen) * 2 - 1) * bound)
        self.lora_B = nn.Parameter(torch.randn(out_f, r, generator=gen) * 0.3)

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.lora_A.t()) @ self.lora_B.t()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cfg = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True, tie_embeddings=True,
               batch=3, seq_len=7, rank=3, alpha=6.0, targets=["c_attn", "transformer.h.1.mlp.c_proj"])
    gen = torch.Generator().manual_seed(4321)
    model = GPT(cfg)
    init_fixture_weights(model, gen)
    out = {"param." + n: f32(p) for n, p in model.named_parameters()}
    adapted = {}
    for i, block in enumerate(model.transformer.h):
        block.attn.c_attn = LoraLinear(block.attn.c_attn, cfg["rank"], cfg["alpha"], gen)
        adapted[f"transformer.h.{i}.attn.c_attn"] = block.attn.c_attn
    model.transformer.h[1].mlp.c_proj = LoraLinear(model.transformer.h[1].mlp.c_proj, cfg["rank"], cfg["alpha"], gen)
    adapted["transformer.h.1.mlp.c_proj"] = model.transformer.h[1].mlp.c_proj
    model = model.double()
    for p in model.parameters():
        p.requires_grad_(False)
    for layer, m in adapted.items():
        for ab in ("lora_A", "lora_B"):
            p = getattr(m, ab)
            p.requires_grad_(True)
            out[f"lora.{layer}.{ab}.weight"] = f32(p)

    idx, targets = random_batch(gen, cfg["batch"], cfg["seq_len"], cfg["vocab_size"], n_ignore=3)
    out["idx"], out["targets"] = idx, targets
    # The forward pass of GPT.forward, with the token embeddings kept for their gradient.
    B, T = idx.shape
    tok = model.transformer.wte(idx).detach().requires_grad_(True)
    x = tok + model.transformer.wpe(torch.arange(T))
    for block in model.transformer.h:
        x = block(x)
    logits = model.lm_head(model.transformer.ln_f(x))
    loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
    loss.backward()
    out["logits"], out["loss"] = f32(logits), f32(loss.reshape(1))
    out["input_grad"] = f32(tok.grad)
    for layer, m in adapted.items():
        for ab in ("lora_A", "lora_B"):
            out[f"grad.{layer}.{ab}.weight"] = f32(getattr(m, ab).grad)
    meta = {"config": json.dumps(cfg, sort_keys=True), "generator": "scripts/make_lora_fixtures.py",
            "torch_version": torch.__version__}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(os.path.normpath(args.out), "lora_gpt_tiny.safetensors")
    save_deterministic({k: v.contiguous() for k, v in sorted(out.items())}, path, meta)
    print(f"{path}: {os.path.getsize(path)} bytes, {len(out)} tensors; loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
