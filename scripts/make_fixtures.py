#!/usr/bin/env python3
"""Reference GPT fixtures for lmlab's Rust engine.

Writes tests/fixtures/gpt_tiny_{bias_tied,nobias_untied}.safetensors with
fixed initial parameters, a batch (idx/targets), the logits, the loss, all
parameter gradients, and three AdamW training steps (nanoGPT's lr schedule and
grad clipping). All reference math is done in float64; tensors are stored as
float32 (ints as int64). Deterministic: rerunning gives the same bytes.

The model is a compact copy of nanoGPT's model.py, except the GELU is the tanh
approximation. Usage: .venv/bin/python scripts/make_fixtures.py [--out DIR]
"""
import argparse
import collections
import json
import math
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------
# Model (nanoGPT layout and parameter names)

class CausalSelfAttention(nn.Module):
    def __init__(self, cfg, flash=False):
        super().__init__()
        C = cfg["n_embd"]
        self.n_head = cfg["n_head"]
        self.c_attn = nn.Linear(C, 3 * C, bias=cfg["bias"])
        self.c_proj = nn.Linear(C, C, bias=cfg["bias"])
        self.flash = flash
        bs = cfg["block_size"]
        self.register_buffer("mask", torch.tril(torch.ones(bs, bs, dtype=torch.bool)), persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        self.c_fc = nn.Linear(C, 4 * C, bias=cfg["bias"])
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * C, C, bias=cfg["bias"])

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg, flash=False):
        super().__init__()
        C = cfg["n_embd"]
        self.ln_1 = nn.LayerNorm(C, eps=1e-5, bias=cfg["bias"])
        self.attn = CausalSelfAttention(cfg, flash)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5, bias=cfg["bias"])
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """cfg keys: vocab_size, block_size, n_layer, n_head, n_embd, bias, tie_embeddings."""

    def __init__(self, cfg, flash=False):
        super().__init__()
        self.cfg = cfg
        C = cfg["n_embd"]
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg["vocab_size"], C),
            wpe=nn.Embedding(cfg["block_size"], C),
            h=nn.ModuleList([Block(cfg, flash) for _ in range(cfg["n_layer"])]),
            ln_f=nn.LayerNorm(C, eps=1e-5, bias=cfg["bias"]),
        ))
        self.lm_head = nn.Linear(C, cfg["vocab_size"], bias=False)
        if cfg["tie_embeddings"]:
            # as nanoGPT: named_parameters() then yields only transformer.wte.weight
            self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets=None):
        B, T = idx.shape
        assert T <= self.cfg["block_size"]
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


def gpt2_init(model, n_layer, gen=None):
    """GPT-2 initialisation: N(0, 0.02), residual projections N(0, 0.02/sqrt(2 n_layer)),
    zero biases, unit LayerNorm gains (as lmlab's Transformer::init)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                p.fill_(1.0)
            elif name.endswith("c_proj.weight"):  # residual projections
                p.copy_(torch.randn(p.shape, generator=gen) * (0.02 / math.sqrt(2 * n_layer)))
            else:  # wte (tied lm_head), wpe, c_attn, c_fc
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def decay_param_names(model):
    """2-D weights of Linear layers (c_attn, c_proj, c_fc, untied lm_head)."""
    return [n for n, p in model.named_parameters()
            if n.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")) or n == "lm_head.weight"]


# ----------------------------------------------------------------------------
# Fixture generation

def init_fixture_weights(model, gen):
    """Large-ish init so logits are O(1) and gradients are non-trivial.

    Embeddings / lm_head: N(0, 0.3); Linear: N(0, 1/sqrt(fan_in));
    LayerNorm weight: 1 + 0.1 N(0,1); every bias: 0.1 N(0,1).
    Drawn in float32 so the stored f32 params are exactly the ones used."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("bias"):
                val = 0.1 * z
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                val = 1.0 + 0.1 * z
            elif name in ("transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"):
                val = 0.3 * z
            else:  # Linear weight (out, in)
                val = z / math.sqrt(p.shape[1])
            p.copy_(val)


def random_batch(gen, B, T, V, n_ignore):
    idx = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    targets = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    flat = torch.randperm(B * T, generator=gen)[:n_ignore]
    targets.view(-1)[flat] = -1
    return idx, targets


def get_lr(it, c):
    lr, min_lr, warm, decay = c["lr"], c["min_lr"], c["warmup_iters"], c["lr_decay_iters"]
    if it < warm:
        return lr * (it + 1) / (warm + 1)
    if it > decay:
        return min_lr
    r = (it - warm) / (decay - warm)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def save_deterministic(tensors, path, metadata):
    """safetensors.torch.save, with the __metadata__ keys put in sorted order.

    safetensors (Rust) keeps metadata in a HashMap, so its key order changes from
    run to run; re-serialise the header canonically (same length, same offsets)."""
    from safetensors.torch import save, load
    buf = save(tensors, metadata=metadata)
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n], object_pairs_hook=collections.OrderedDict)
    header["__metadata__"] = collections.OrderedDict(sorted(header["__metadata__"].items()))
    header.move_to_end("__metadata__", last=False)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(text) <= n, (len(text), n)
    text = text + b" " * (n - len(text))
    data = buf[:8] + text + buf[8 + n:]
    assert len(data) == len(buf)
    back = load(data)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    with open(path, "wb") as f:
        f.write(data)


def make_fixture(name, bias, tie, seed, out_dir):
    cfg = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=bias, tie_embeddings=tie,
               batch=3, seq_len=7, lr=1e-2, min_lr=1e-3, warmup_iters=1, lr_decay_iters=3,
               beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=3.5)
    B, T, V = cfg["batch"], cfg["seq_len"], cfg["vocab_size"]
    gen = torch.Generator().manual_seed(seed)
    model = GPT(cfg)  # float32 construction
    init_fixture_weights(model, gen)
    model = model.double()
    out = {}
    for n, p in model.named_parameters():
        out["param." + n] = f32(p)

    # --- forward / backward on the reference batch
    idx, targets = random_batch(gen, B, T, V, n_ignore=3)
    out["idx"], out["targets"] = idx, targets
    logits, loss = model(idx, targets)
    loss.backward()
    out["logits"] = f32(logits)
    out["loss"] = f32(loss.reshape(1))
    for n, p in model.named_parameters():
        out["grad." + n] = f32(p.grad)
    init_gnorm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item()
    model.zero_grad(set_to_none=True)

    # --- three AdamW steps
    params = dict(model.named_parameters())
    dnames = set(decay_param_names(model))
    groups = [
        {"params": [params[n] for n in params if n in dnames], "weight_decay": cfg["weight_decay"]},
        {"params": [params[n] for n in params if n not in dnames], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
                            foreach=False)
    steps = []
    for k in range(3):
        tidx, ttgt = random_batch(gen, B, T, V, n_ignore=2 + k)
        out[f"train.{k}.idx"], out[f"train.{k}.targets"] = tidx, ttgt
        opt.zero_grad(set_to_none=True)
        _, tloss = model(tidx, ttgt)
        tloss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        lr = get_lr(k, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        out[f"train.{k}.loss"] = f32(tloss.reshape(1))
        out[f"train.{k}.grad_norm"] = f32(gnorm.reshape(1))
        out[f"train.{k}.lr"] = torch.tensor([lr], dtype=torch.float32)
        for n, p in model.named_parameters():
            out[f"train.{k}.param.{n}"] = f32(p)
        steps.append((tloss.item(), gnorm.item(), lr))

    clipped = [k for k, (_, gn, _) in enumerate(steps) if gn > cfg["grad_clip"]]
    assert clipped, "grad_clip must clip in at least one step"
    # keep every norm clearly away from the threshold so f32 engines take the same branch
    assert all(abs(gn - cfg["grad_clip"]) > 0.02 * cfg["grad_clip"] for _, gn, _ in steps), steps
    meta = {
        "config": json.dumps(cfg, sort_keys=True),
        "generator": "scripts/make_fixtures.py",
        "torch_version": torch.__version__,
    }
    path = os.path.join(out_dir, name + ".safetensors")
    save_deterministic({k: v.contiguous() for k, v in sorted(out.items())}, path, meta)

    print(f"{path}: {os.path.getsize(path)} bytes, {len(out)} tensors, "
          f"{sum(p.numel() for p in model.parameters())} params, decay group: {len(dnames)} tensors")
    print(f"  logits std {logits.std().item():.3f}  max|logit| {logits.abs().max().item():.3f}  "
          f"loss {loss.item():.6f} (ln V = {math.log(V):.4f})  |grad| {init_gnorm:.4f}")
    for k, (l, gn, lr) in enumerate(steps):
        tag = "CLIPPED" if gn > cfg["grad_clip"] else "not clipped"
        print(f"  train.{k}: loss {l:.6f}  grad_norm {gn:.4f} ({tag} at grad_clip {cfg['grad_clip']})  lr {lr:.6g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    out_dir = os.path.normpath(args.out)
    print(f"torch {torch.__version__}")
    make_fixture("gpt_tiny_bias_tied", bias=True, tie=True, seed=1234, out_dir=out_dir)
    make_fixture("gpt_tiny_nobias_untied", bias=False, tie=False, seed=5678, out_dir=out_dir)


if __name__ == "__main__":
    main()
