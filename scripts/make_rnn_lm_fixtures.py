#!/usr/bin/env python3
"""Reference values for the whole LSTM, GRU and causal-CNN language models (tests/rnn_lm.rs,
src/model/baseline/): the same small models built from torch.nn modules in float64 with random
weights, their logits and mean cross-entropy (ignore index -1) on fixed tokens, and the gradient
of that loss for every parameter, named as lmlab names them (the torch module names).

  lstm:  Embedding → nn.LSTM(2 layers) → LayerNorm → Linear tied to the embedding
  gru:   Embedding → nn.GRU(2 layers, H ≠ C) → Linear (untied, no final norm)
  cnn:   Embedding → [x + c_proj(gelu_tanh(Conv1d(LN(x)), left-padded by (K−1)·d))] × 3 → LayerNorm
         → Linear tied (K = 2, dilations 1, 2, 4)
  cnn_k3: the same block with K = 3, dilations 1, 3, relu, untied, no final norm

Writes tests/fixtures/rnn_lm/{name}.json.

  /work/venv/bin/python scripts/make_rnn_lm_fixtures.py
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, B, T = 11, 2, 9


class RnnLM(nn.Module):
    def __init__(self, cell, C, H, L, tie, final_norm):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.rnn = cell(C, H, num_layers=L, batch_first=True)
        self.ln_f = nn.LayerNorm(H) if final_norm else None
        self.lm_head = nn.Linear(H, V, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        y, _ = self.rnn(self.wte(idx))
        if self.ln_f is not None:
            y = self.ln_f(y)
        return self.lm_head(y)


class ConvBlock(nn.Module):
    def __init__(self, C, K, d, act):
        super().__init__()
        self.ln = nn.LayerNorm(C)
        self.conv = nn.Conv1d(C, C, K, dilation=d)
        self.c_proj = nn.Linear(C, C)
        self.pad, self.act = (K - 1) * d, act

    def forward(self, x):
        u = self.ln(x).transpose(1, 2)  # (B, C, T)
        v = self.conv(F.pad(u, (self.pad, 0))).transpose(1, 2)
        return x + self.c_proj(self.act(v))


class CnnLM(nn.Module):
    def __init__(self, C, K, dilations, act, tie, final_norm):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.blocks = nn.ModuleList(ConvBlock(C, K, d, act) for d in dilations)
        self.ln_f = nn.LayerNorm(C) if final_norm else None
        self.lm_head = nn.Linear(C, V, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx)
        for b in self.blocks:
            x = b(x)
        if self.ln_f is not None:
            x = self.ln_f(x)
        return self.lm_head(x)


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


def write(name, config, model):
    torch.manual_seed(1)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():  # away from the defaults (unit gains, zero biases)
            p.copy_(torch.randn_like(p) * 0.5)
    idx = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))
    targets[0, 2] = targets[1, 5] = -1
    logits = model(idx)
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)
    loss.backward()
    flat = lambda t: t.detach().reshape(-1).tolist()  # noqa: E731
    fx = dict(config=dict(config, vocab_size=V, block_size=T), B=B, T=T, idx=flat(idx), targets=flat(targets),
              logits=flat(logits), loss=loss.item(),
              params={n: flat(p) for n, p in model.named_parameters()},
              grads={n: flat(p.grad) for n, p in model.named_parameters()}, torch=torch.__version__)
    path = os.path.join(ROOT, "tests", "fixtures", "rnn_lm", f"{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(fx, f)
    print("wrote", path, "loss", loss.item())


torch.manual_seed(0)
write("lstm", dict(arch="lstm", n_layer=2, n_embd=8), RnnLM(nn.LSTM, 8, 8, 2, True, True))
write("gru", dict(arch="gru", n_layer=2, n_embd=6, rnn_hidden=10, tie_embeddings=False, final_norm=False),
      RnnLM(nn.GRU, 6, 10, 2, False, False))
write("cnn", dict(arch="cnn", n_layer=3, n_embd=8, kernel_size=2, dilations=[1, 2, 4]),
      CnnLM(8, 2, [1, 2, 4], gelu_tanh, True, True))
write("cnn_k3", dict(arch="cnn", n_layer=2, n_embd=6, kernel_size=3, dilations=[1, 3], activation="relu",
                     tie_embeddings=False, final_norm=False),
      CnnLM(6, 3, [1, 3], F.relu, False, False))
