"""FLOPs of every variant's PyTorch reference model, counted by torch.utils.flop_counter.

For each variant of scripts/make_variant_fixtures.py, runs one forward pass of its reference
model under FlopCounterMode at two batch shapes and writes the totals to
tests/fixtures/variants/flops.json, which tests/eval_efficiency.rs compares with lmlab's analytic
count (lmlab::eval::efficiency::forward_flops).

    .venv/bin/python scripts/make_flops_fixtures.py
"""
import json
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_variant_fixtures as mv  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "variants", "flops.json")


def batch_for(cfg, b, t, s):
    v = cfg["vocab_size"]
    if cfg["arch"] == "decoder":
        return dict(idx=torch.randint(0, v, (b, t)), targets=torch.randint(0, v, (b, t)))
    if cfg["arch"] == "encoder":
        return dict(idx=torch.randint(0, v, (b, t)), mask=torch.ones(b, t, dtype=torch.int64),
                    labels=torch.randint(0, cfg["num_classes"], (b,)))
    return dict(src=torch.randint(0, v, (b, s)), src_mask=torch.ones(b, s, dtype=torch.int64),
                tgt_in=torch.randint(0, v, (b, t)), tgt_out=torch.randint(0, v, (b, t)))


def main():
    mv.CHECK_NAIVE = False
    torch.manual_seed(0)
    out = {}
    for name in mv.VARIANTS:
        cfg = mv.variant_config(name)
        model = mv.Transformer(cfg).double().eval()
        rows = []
        for b, t, s in [(2, 7, 6), (3, cfg["block_size"], cfg["block_size"] - 1)]:
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                model(batch_for(cfg, b, t, s))
            rows.append({"b": b, "t": t, "s": s, "flops": counter.get_total_flops()})
        out[name] = {"config": cfg, "shapes": rows}
        print(f"{name:40s} {rows[0]['flops']:>12d} {rows[1]['flops']:>14d}")
    with open(OUT, "w") as f:
        json.dump({"torch": torch.__version__, "variants": out}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
