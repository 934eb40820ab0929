"""Reference pruning masks for tests/prune.rs.

A transcription of locuslab/wanda @ 069ac970 (lib/prune.py `prune_wanda` and `prune_magnitude`, lib/layerwrapper.py
`WrappedGPT.add_batch`), run on small random weights W (rows = outputs, cols = inputs) and inputs X
(calibration tokens, cols), in float32 as the reference runs:

- Wanda: scaler_row accumulated over calibration samples (batches of tokens), W_metric = |W| *
  sqrt(scaler_row); unstructured: per row, stable sort, the first int(cols * sparsity) pruned; N:M
  ("prune_n:prune_m"): in every group of prune_m consecutive columns, the prune_n lowest (topk,
  largest=False) pruned.
- Magnitude (per layer): the reference's unstructured rule, thresh = sort(|W|.flatten())[int(numel *
  s)] and W_mask = |W| <= thresh, prunes int(numel * s) + 1 weights; lmlab prunes exactly
  int(numel * s) (the stable-sort order, as Wanda's per-row rule). Both masks are written; the test
  checks lmlab's and that it is the reference's minus exactly its highest-scored weight. Its N:M rule
  is Wanda's on |W|.
- Global magnitude (not in the reference, which prunes per layer): all matrices' |W| in layout order,
  stable sort, the first int(total * s) pruned.

lmlab's N:M is "keep N of every M"; the reference's prune_n is the number pruned. For 2:4 and 4:8 the
two coincide. The script also checks that float64 scores give the same masks (no near-ties, so the
Rust test, which scores in f64, compares masks exactly).

Writes tests/fixtures/prune_wanda.json and tests/fixtures/prune_magnitude.json: the inputs as float32
values and each mask as the sorted flat indices of the pruned weights.
"""
import json
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
SPARSITIES = [0.0, 0.1, 0.29, 0.5, 0.7, 0.9]
PATTERNS = [(2, 4), (4, 8)]


class WrappedGPT:
    """lib/layerwrapper.py, the part prune_wanda uses."""

    def __init__(self, columns):
        self.scaler_row = torch.zeros(columns)
        self.nsamples = 0

    def add_batch(self, inp):
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if len(inp.shape) == 3:
            inp = inp.reshape((-1, inp.shape[-1]))
        inp = inp.t()
        self.scaler_row *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = inp.type(torch.float32)
        self.scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / self.nsamples


def nm_mask(W_metric, prune_n, prune_m):
    W_mask = torch.zeros_like(W_metric) == 1
    for ii in range(W_metric.shape[1]):
        if ii % prune_m == 0:
            tmp = W_metric[:, ii:(ii + prune_m)].float()
            W_mask.scatter_(1, ii + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
    return W_mask


def wanda_mask(W, scaler_row, sparsity_ratio=None, prune_n=0, prune_m=0):
    W_metric = torch.abs(W) * torch.sqrt(scaler_row.reshape((1, -1)))
    if prune_n != 0:
        return nm_mask(W_metric, prune_n, prune_m)
    W_mask = torch.zeros_like(W_metric) == 1
    sort_res = torch.sort(W_metric, dim=-1, stable=True)
    indices = sort_res[1][:, :int(W_metric.shape[1] * sparsity_ratio)]
    W_mask.scatter_(1, indices, True)
    return W_mask


def magnitude_ref_mask(W, sparsity_ratio=None, prune_n=0, prune_m=0):
    W_metric = torch.abs(W)
    if prune_n != 0:
        return nm_mask(W_metric, prune_n, prune_m)
    thresh = torch.sort(W_metric.flatten())[0][int(W.numel() * sparsity_ratio)]
    return W_metric <= thresh


def lowest_k(scores, k):
    """The k lowest of a flat score tensor, ties by index (a stable sort)."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[torch.sort(scores.flatten(), stable=True)[1][:k]] = True
    return mask.reshape(scores.shape)


def idx(mask):
    return torch.nonzero(mask.flatten()).flatten().tolist()


def vals(t):
    return [float(x) for x in t.flatten().tolist()]


def main():
    g = torch.Generator().manual_seed(15)
    # (rows, cols, calibration samples, tokens per sample); cols a multiple of 8 for N:M.
    shapes = [(6, 16, 3, 5), (12, 32, 4, 7), (9, 24, 2, 11)]
    wanda_cases, layers = [], []
    for si, (rows, cols, nsamples, tokens) in enumerate(shapes):
        W = torch.randn(rows, cols, generator=g)
        # Input features of very different scales, as LLM activations have (the reason for Wanda).
        X = torch.randn(nsamples, tokens, cols, generator=g) * torch.exp(torch.randn(cols, generator=g))
        wrapped = WrappedGPT(cols)
        for j in range(nsamples):
            wrapped.add_batch(X[j].unsqueeze(0))
        sum_sq64 = (X.double().reshape(-1, cols) ** 2).sum(0)
        case = {"name": f"w{si}", "rows": rows, "cols": cols, "w": vals(W), "x": vals(X.reshape(-1, cols)),
                "unstructured": [], "nm": []}
        for s in SPARSITIES:
            m = wanda_mask(W, wrapped.scaler_row, sparsity_ratio=s)
            m64 = wanda_mask(W.double(), sum_sq64, sparsity_ratio=s)
            assert torch.equal(m, m64), "a near-tie: f32 and f64 scores disagree"
            case["unstructured"].append({"sparsity": s, "pruned": idx(m)})
        for n, mm in PATTERNS:
            m = wanda_mask(W, wrapped.scaler_row, prune_n=mm - n, prune_m=mm)
            assert torch.equal(m, wanda_mask(W.double(), sum_sq64, prune_n=mm - n, prune_m=mm))
            case["nm"].append({"n": n, "m": mm, "pruned": idx(m)})
        wanda_cases.append(case)
        layers.append(W)

    mag_cases = []
    for li, W in enumerate(layers):
        case = {"name": f"w{li}", "rows": W.shape[0], "cols": W.shape[1], "w": vals(W), "unstructured": [],
                "nm": []}
        for s in SPARSITIES:
            ours = lowest_k(torch.abs(W), int(W.numel() * s))
            ref = magnitude_ref_mask(W, sparsity_ratio=s)
            assert ref.sum() == ours.sum() + 1 and torch.equal(ours & ref, ours)
            case["unstructured"].append({"sparsity": s, "pruned": idx(ours), "reference_pruned": idx(ref)})
        for n, mm in PATTERNS:
            case["nm"].append({"n": n, "m": mm, "pruned": idx(magnitude_ref_mask(W, prune_n=mm - n, prune_m=mm))})
        mag_cases.append(case)
    allw = torch.cat([torch.abs(W).flatten() for W in layers])
    global_masks = [{"sparsity": s, "pruned": idx(lowest_k(allw, int(allw.numel() * s)))} for s in SPARSITIES]

    with open(os.path.join(OUT, "prune_wanda.json"), "w") as f:
        json.dump({"source": "scripts/make_prune_fixtures.py (locuslab/wanda prune_wanda)", "cases": wanda_cases},
                  f, separators=(",", ":"))
    with open(os.path.join(OUT, "prune_magnitude.json"), "w") as f:
        json.dump({"source": "scripts/make_prune_fixtures.py (locuslab/wanda prune_magnitude; global)",
                   "layers": mag_cases, "global": global_masks}, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
