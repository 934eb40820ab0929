#!/usr/bin/env python3
"""Writes tests/fixtures/distill.json: the distillation loss (Hinton et al., 2015) and its
gradient with respect to the student's logits, computed by PyTorch autograd, for
tests/distill.rs:

  loss = α·T²·F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True, reduction="batchmean")
         + (1−α)·F.cross_entropy(s, targets, ignore_index=-1, label_smoothing=ε)

over the rows whose target is not -1 (batchmean: the KL summed per row, averaged over rows).

Run: /work/venv/bin/python scripts/make_distill_fixtures.py
"""
import json
from pathlib import Path

import torch
import torch.nn.functional as F

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/distill.json"


def case(name, n, v, temperature, alpha, eps, seed, ignore=()):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, v, generator=g, dtype=torch.float64) * 2.0).requires_grad_(True)
    t = torch.randn(n, v, generator=g, dtype=torch.float64) * 3.0
    targets = torch.randint(0, v, (n,), generator=g)
    for i in ignore:
        targets[i] = -1
    keep = targets >= 0
    kl = F.kl_div(F.log_softmax(s[keep] / temperature, -1), F.log_softmax(t[keep] / temperature, -1),
                  log_target=True, reduction="batchmean")
    ce = F.cross_entropy(s, targets, ignore_index=-1, label_smoothing=eps)
    loss = alpha * temperature ** 2 * kl + (1 - alpha) * ce
    loss.backward()
    return {"name": name, "n": n, "v": v, "temperature": temperature, "alpha": alpha, "eps": eps,
            "student": s.detach().flatten().tolist(), "teacher": t.flatten().tolist(),
            "targets": targets.tolist(), "loss": loss.item(), "grad": s.grad.flatten().tolist()}


def main():
    cases = [
        case("t2_a05", 6, 11, 2.0, 0.5, 0.0, 1, ignore=(3,)),
        case("t1_a1_soft_only", 5, 7, 1.0, 1.0, 0.0, 2),
        case("t4_a09_smoothing", 8, 13, 4.0, 0.9, 0.1, 3, ignore=(0, 5)),
        case("t05_a03", 4, 32, 0.5, 0.3, 0.0, 4),
    ]
    OUT.write_text(json.dumps({"torch": torch.__version__, "cases": cases}, indent=0))
    print(f"wrote {OUT} ({len(cases)} cases, torch {torch.__version__})")


if __name__ == "__main__":
    main()
