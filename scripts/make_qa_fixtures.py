#!/usr/bin/env python3
"""Reference values for the extractive-QA span head (tests/qa_head.rs), from PyTorch in
float64: BertForQuestionAnswering's head over given hidden states h (B, T, C),

    logits = h @ W.T + b                      # qa_outputs, W (2, C), b (2)
    start, end = logits.split(1, dim=-1)      # (B, T) each
    start/end at positions outside the context (span_mask false) = -1e9
    loss = (CE(start, start_positions) + CE(end, end_positions)) / 2

with the gradients of the loss with respect to h, W and b. The mask is lmlab's addition
(Hugging Face's head leaves question and padding positions in the softmax); with it every
position a window allows is [CLS] (index 0, the label of a window without the answer) or a
context token. One window is labelled (0, 0) as run_qa.py labels windows without the answer.

  /work/venv/bin/python scripts/make_qa_fixtures.py
"""
import json
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASKED = -1e9


def main():
    torch.manual_seed(0)
    B, T, C = 3, 7, 5
    h = (torch.rand(B, T, C, dtype=torch.float64) * 2 - 1).requires_grad_()
    w = (torch.rand(2, C, dtype=torch.float64) * 2 - 1).requires_grad_()
    b = (torch.rand(2, dtype=torch.float64) * 0.4 - 0.2).requires_grad_()
    # [CLS] q q [SEP] ctx ctx [SEP] / [CLS] q [SEP] ctx ctx ctx [SEP] / [CLS] q [SEP] ctx [SEP] pad pad
    span_mask = torch.tensor([
        [1, 0, 0, 0, 1, 1, 0],
        [1, 0, 0, 1, 1, 1, 0],
        [1, 0, 0, 1, 0, 0, 0],
    ], dtype=torch.bool)
    start_positions = torch.tensor([4, 3, 0])
    end_positions = torch.tensor([5, 5, 0])
    logits = h @ w.T + b
    start, end = logits[..., 0], logits[..., 1]
    start = start.masked_fill(~span_mask, MASKED)
    end = end.masked_fill(~span_mask, MASKED)
    ce = torch.nn.functional.cross_entropy
    loss = (ce(start, start_positions) + ce(end, end_positions)) / 2
    loss.backward()
    flat = lambda x: x.detach().reshape(-1).tolist()
    out = {
        "b": B, "t": T, "c": C,
        "h": flat(h), "weight": flat(w), "bias": flat(b),
        "span_mask": [bool(x) for x in span_mask.reshape(-1).tolist()],
        "positions": [int(x) for pair in zip(start_positions, end_positions) for x in pair],
        # (B, 2, T): each window's start row, then its end row.
        "logits": flat(torch.stack([start, end], dim=1)),
        "loss": loss.item(),
        "d_h": flat(h.grad), "d_weight": flat(w.grad), "d_bias": flat(b.grad),
    }
    path = os.path.join(ROOT, "tests/fixtures/qa/span_head.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path, "loss", out["loss"])


if __name__ == "__main__":
    main()
