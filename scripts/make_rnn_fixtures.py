#!/usr/bin/env python3
"""Reference values for the recurrent and causal-convolution kernels (tests/rnn.rs): torch.nn.LSTM and torch.nn.GRU
(one layer, batch_first, zero initial state) in float64 — the output and, for the loss
Σ out ⊙ R with a fixed random R, the gradients of the input and of every weight and bias.

Also torch.nn.Conv1d made causal by left padding (the CNN baseline), at dilations 1 and 4.

Writes tests/fixtures/rnn/lstm.json, gru.json and conv1d_causal_d{1,4}.json.

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


def write_conv(name, C, OC, K, dilation):
    """nn.Conv1d on (B, C, T) with a left padding of (K − 1)·dilation (causal); the fixture keeps
    lmlab's (B, T, C) layout for x, out and R."""
    torch.manual_seed(1)
    B, T = 2, 9
    conv = torch.nn.Conv1d(C, OC, K, dilation=dilation).double()
    x = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    r = torch.randn(B, T, OC, dtype=torch.float64)
    pad = (K - 1) * dilation
    out = conv(torch.nn.functional.pad(x.transpose(1, 2), (pad, 0))).transpose(1, 2)
    (out * r).sum().backward()
    flat = lambda t: t.detach().reshape(-1).tolist()  # noqa: E731
    fx = dict(B=B, T=T, C=C, OC=OC, K=K, dilation=dilation, x=flat(x), r=flat(r), out=flat(out), dx=flat(x.grad),
              w=flat(conv.weight), b=flat(conv.bias), dw=flat(conv.weight.grad), db=flat(conv.bias.grad),
              torch=torch.__version__)
    path = os.path.join(ROOT, "tests", "fixtures", "rnn", f"{name}.json")
    with open(path, "w") as f:
        json.dump(fx, f)
    print("wrote", path)


def main():
    write("lstm", torch.nn.LSTM)
    write("gru", torch.nn.GRU)
    write_conv("conv1d_causal_d1", C=3, OC=4, K=2, dilation=1)
    write_conv("conv1d_causal_d4", C=3, OC=5, K=3, dilation=4)


if __name__ == "__main__":
    main()
