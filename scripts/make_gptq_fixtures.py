"""Reference GPTQ and round-to-nearest results for tests/gptq.rs.

A transcription of IST-DASLab/gptq (gptq.py `GPTQ.add_batch` / `GPTQ.fasterquant`, quant.py
`Quantizer` with perchannel=True, sym=False, mse=False, and `quantize`), run in float64 on CPU so
the reference carries no rounding error of its own. Group parameters follow the reference's
default `static_groups=False`: with act-order, a group is a run of `group` columns in the
permuted order and its scale/zero are found, when its first column is reached, from the
columns of W as updated up to the start of the current block of 128.

Writes tests/fixtures/gptq/gptq.safetensors with, per data set d (W and X float32 values):
  {d}.w  {d}.x  {d}.h                (H after the data set's add_batch calls)
and per case c:
  {c}.codes {c}.scale {c}.zero {c}.dequant {c}.loss {c}.perm (act-order only)
  (codes, perm and dequantized weights stored as float32, the rest float64)
  {c}.rtn_codes {c}.rtn_scale {c}.rtn_zero {c}.rtn_dequant
and metadata "datasets" and "cases" (JSON).
"""
import json
import math
import os

import torch

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "gptq", "gptq.safetensors")


# ---- quant.py ---------------------------------------------------------------------------
def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero), q


def find_params(x, maxq):
    """Quantizer.find_params(x, weight=True), perchannel=True, sym=False, mse=False."""
    tmp = torch.zeros(x.shape[0])
    xmin = torch.minimum(x.min(1)[0], tmp)
    xmax = torch.maximum(x.max(1)[0], tmp)
    tmp = (xmin == 0) & (xmax == 0)
    xmin[tmp] = -1
    xmax[tmp] = +1
    scale = (xmax - xmin) / maxq
    zero = torch.round(-xmin / scale)
    return scale.reshape(-1, 1), zero.reshape(-1, 1)


# ---- gptq.py ----------------------------------------------------------------------------
class Hessian:
    def __init__(self, columns):
        self.H = torch.zeros((columns, columns))
        self.nsamples = 0

    def add_batch(self, inp):
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if len(inp.shape) == 3:
            inp = inp.reshape((-1, inp.shape[-1]))
        inp = inp.t()
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp
        self.H += inp.matmul(inp.t())


def fasterquant(W, H, bits, groupsize=-1, actorder=False, percdamp=0.01, blocksize=128):
    W = W.clone()
    H = H.clone()
    maxq = 2 ** bits - 1
    columns = W.shape[1]
    params = []  # (scale, zero) per group, in processing order
    scale, zero = find_params(W, maxq)
    if groupsize == -1:
        params.append((scale, zero))

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    perm = None
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        invperm = torch.argsort(perm)

    Losses = torch.zeros_like(W)
    Q = torch.zeros_like(W)
    C = torch.zeros_like(W)

    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1 and (i1 + i) % groupsize == 0:
                scale, zero = find_params(W[:, (i1 + i):(i1 + i + groupsize)], maxq)
                params.append((scale, zero))
            q, code = quantize(w.unsqueeze(1), scale, zero, maxq)
            q = q.flatten()
            Q1[:, i] = q
            C[:, i1 + i] = code.flatten()
            Losses1[:, i] = (w - q) ** 2 / d ** 2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        Losses[:, i1:i2] = Losses1 / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

    if actorder:
        Q = Q[:, invperm]
        C = C[:, invperm]
    scales = torch.cat([s for s, _ in params], 1)
    zeros = torch.cat([z for _, z in params], 1)
    return dict(codes=C, scale=scales, zero=zeros, dequant=Q, loss=torch.sum(Losses).reshape(1), perm=perm)


def rtn(W, bits, groupsize):
    maxq = 2 ** bits - 1
    Q = torch.zeros_like(W)
    C = torch.zeros_like(W)
    scales, zeros = [], []
    for g in range(0, W.shape[1], groupsize):
        scale, zero = find_params(W[:, g:g + groupsize], maxq)
        Q[:, g:g + groupsize], C[:, g:g + groupsize] = quantize(W[:, g:g + groupsize], scale, zero, maxq)
        scales.append(scale)
        zeros.append(zero)
    return dict(rtn_codes=C, rtn_scale=torch.cat(scales, 1), rtn_zero=torch.cat(zeros, 1), rtn_dequant=Q)


# ---- data -------------------------------------------------------------------------------
def correlated(gen, n, cols, rank):
    """Inputs with strongly correlated features and unequal feature scales."""
    z = torch.randn(n, rank, generator=gen, dtype=torch.float32)
    mix = torch.randn(rank, cols, generator=gen, dtype=torch.float32) / rank ** 0.5
    noise = 0.1 * torch.randn(n, cols, generator=gen, dtype=torch.float32)
    feat = torch.exp(0.5 * torch.randn(cols, generator=gen, dtype=torch.float32))
    return ((z @ mix + noise) * feat).contiguous()


def main():
    gen = torch.Generator().manual_seed(14)
    # name -> (rows, cols, n, batching): batching "3d:B,T" feeds (B, T, cols) batches (B samples
    # each), "2d:N" feeds N-row 2-D batches (one sample each, as the reference counts them).
    specs = {
        "a": (16, 64, 256, "3d:4,16"),
        "b": (8, 160, 256, "2d:64"),
        "dead": (16, 64, 256, "3d:16,16"),
    }
    tensors, datasets = {}, {}
    data = {}
    for name, (rows, cols, n, batching) in specs.items():
        w = (0.1 * torch.randn(rows, cols, generator=gen, dtype=torch.float32)).contiguous()
        x = correlated(gen, n, cols, cols // 4)
        if name == "dead":
            x[:, 5] = 0
            x[:, 40] = 0
        hess = Hessian(cols)
        kind, shape = batching.split(":")
        xd = x.double()
        if kind == "3d":
            b, t = (int(v) for v in shape.split(","))
            for s in range(0, n, b * t):
                hess.add_batch(xd[s:s + b * t].reshape(b, t, cols))
        else:
            step = int(shape)
            for s in range(0, n, step):
                hess.add_batch(xd[s:s + step])
        tensors[f"{name}.w"] = w
        tensors[f"{name}.x"] = x
        tensors[f"{name}.h"] = hess.H
        datasets[name] = dict(rows=rows, cols=cols, n=n, batching=batching, nsamples=hess.nsamples)
        data[name] = (w.double(), hess.H)

    # (data set, bits, group, act_order, percdamp)
    case_list = [
        ("a", 4, 64, False, 0.01), ("a", 4, 64, True, 0.01), ("a", 4, 16, False, 0.01),
        ("a", 4, 16, True, 0.01), ("a", 3, 64, False, 0.01), ("a", 3, 16, True, 0.01),
        ("a", 2, 16, True, 0.01), ("a", 8, 32, False, 0.01),
        ("b", 4, 32, True, 0.01), ("b", 3, 160, False, 0.01), ("b", 4, 40, True, 0.01),
        ("b", 4, 40, False, 0.1),
        ("dead", 4, 16, True, 0.01), ("dead", 4, 64, False, 0.01), ("dead", 3, 16, False, 0.01),
    ]
    cases = {}
    for d, bits, group, act, damp in case_list:
        name = f"{d}_b{bits}_g{group}_{'act' if act else 'seq'}_d{damp}"
        w, h = data[d]
        cols = w.shape[1]
        res = fasterquant(w, h, bits, -1 if group == cols else group, act, damp)
        res.update(rtn(w, bits, group))
        for k, v in res.items():
            if v is not None:
                # Integers and the dequantized weights are exact or compared loosely: float32.
                exact = k in ("scale", "zero", "loss", "rtn_scale", "rtn_zero")
                tensors[f"{name}.{k}"] = (v.double() if exact else v.float()).contiguous()
        cases[name] = dict(data=d, bits=bits, group=group, act_order=act, percdamp=damp)

    from safetensors.torch import save_file
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(tensors, OUT, metadata={"cases": json.dumps(cases, sort_keys=True),
                                      "datasets": json.dumps(datasets, sort_keys=True)})
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
