#!/usr/bin/env python3
"""Reference values for the recurrent kernels (tests/rnn.rs): torch.nn.LSTM and torch.nn.GRU
(one layer, batch_first, zero initial state) in float64 — the output and, for the loss
Σ out ⊙ R with a fixed random R, the gradients of the input and of every weight and bias.

Writes tests/fixtures/rnn/lstm.json and gru.json.

  .venv/bin/python scripts/make_rnn_fixtures.py
"""
import json
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(name, cell):
    torch.manual_seed(0)
    B, T, I, H = 2, 5, 3, 4
    layer = cell(I, H, batch_first=True).double()
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    r = torch.randn(B, T, H, dtype=torch.float64)
    out, _ = layer(x)
    (out * r).sum().backward()
    flat = lambda t: t.detach().reshape(-1).tolist()  # noqa: E731
    fx = dict(B=B, T=T, I=I, H=H, x=flat(x), r=flat(r), out=flat(out), dx=flat(x.grad),
              w_ih=flat(layer.weight_ih_l0), w_hh=flat(layer.weight_hh_l0), b_ih=flat(layer.bias_ih_l0),
              b_hh=flat(layer.bias_hh_l0), dw_ih=flat(layer.weight_ih_l0.grad), dw_hh=flat(layer.weight_hh_l0.grad),
              db_ih=flat(layer.bias_ih_l0.grad), db_hh=flat(layer.bias_hh_l0.grad), torch=torch.__version__)
    path = os.path.join(ROOT, "tests", "fixtures", "rnn", f"{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(fx, f)
    print("wrote", path)


def main():
    write("lstm", torch.nn.LSTM)
    write("gru", torch.nn.GRU)


if __name__ == "__main__":
    main()
