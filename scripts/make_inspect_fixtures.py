#!/usr/bin/env python3
"""Reference values for `lmlab inspect` (tests/inspect.rs), computed in float64 on the tiny GPT
fixtures that scripts/make_fixtures.py wrote (tests/fixtures/gpt_tiny_*.safetensors):

- attribution: Captum 0.9's InputXGradient and IntegratedGradients (gausslegendre, 50 steps;
  riemann_trapezoid, 20 steps) of f = log_softmax(logits[0, pos])[target] with respect to the
  token embeddings wte[idx] (positions added after them), from the all-zero baseline; per-token
  sums over the embedding dimensions, f(x), f(0) and Captum's convergence delta;
- logit lens: log_softmax(ln_f(h_l) @ W_head^T) after the embeddings and after every block;
- ablation: the mean next-token cross-entropy (inputs: the sequence but its last token) with
  each head's output (before c_proj) zeroed or replaced by its mean over those positions, and with each MLP's activations zeroed or
  averaged (TransformerLens's hook_z / hook_post conventions).

Writes tests/fixtures/inspect/reference.json.

  .venv/bin/pip install captum
  .venv/bin/python scripts/make_inspect_fixtures.py
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from captum.attr import InputXGradient, IntegratedGradients
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import GPT  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")


def load(name):
    from safetensors import safe_open
    path = os.path.join(FIX, f"{name}.safetensors")
    with safe_open(path, framework="pt") as f:
        cfg = json.loads(f.metadata()["config"])
    t = load_file(path)
    model = GPT(cfg).double()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(t["param." + n].double())
    model.eval()
    idx = t["train.0.idx"][0].long()  # one sequence
    return model, cfg, idx


class Ablate:
    """Patches each block: head h of layer l (or the MLP of layer l) zeroed or averaged."""
    def __init__(self, model):
        self.model, self.spec = model, None
        for l, blk in enumerate(model.transformer.h):
            self.patch(l, blk)

    def patch(self, l, blk):
        attn, mlp, me = blk.attn, blk.mlp, self

        def attn_forward(x):
            B, T, C = x.shape
            nh = attn.n_head
            hs = C // nh
            q, k, v = attn.c_attn(x).split(C, dim=2)
            q, k, v = (z.view(B, T, nh, hs).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
            att = att.masked_fill(~attn.mask[:T, :T], float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)
            if me.spec and me.spec[0] == "attn" and me.spec[1] == l:
                y = me.replace(y, slice(me.spec[2] * hs, (me.spec[2] + 1) * hs))
            return attn.c_proj(y)

        def mlp_forward(x):
            a = mlp.gelu(mlp.c_fc(x))
            if me.spec and me.spec[0] == "mlp" and me.spec[1] == l:
                a = me.replace(a, slice(0, a.shape[-1]))
            return mlp.c_proj(a)

        attn.forward = attn_forward
        mlp.forward = mlp_forward

    def replace(self, y, cols):
        y = y.clone()
        if self.spec[3] == "zero":
            y[..., cols] = 0.0
        else:
            y[..., cols] = y[..., cols].reshape(-1, cols.stop - cols.start).mean(0)
        return y


def run_from_embeds(model, e):
    T = e.shape[1]
    x = e + model.transformer.wpe.weight[:T]
    for blk in model.transformer.h:
        x = blk(x)
    return model.lm_head(model.transformer.ln_f(x))


def case(name, pos, target):
    model, cfg, idx = load(name)
    T = len(idx)
    wte = model.transformer.wte.weight.detach()
    x = wte[idx].unsqueeze(0).clone()

    def f(e):
        return F.log_softmax(run_from_embeds(model, e)[:, pos], dim=-1)[:, target]

    out = dict(name=name, tokens=idx.tolist(), pos=pos, target=target)
    with torch.no_grad():
        out["f_input"] = f(x).item()
        out["f_baseline"] = f(torch.zeros_like(x)).item()
    out["grad_x_input"] = InputXGradient(f).attribute(x)[0].sum(-1).tolist()
    for method, steps in [("gausslegendre", 50), ("riemann_trapezoid", 20)]:
        a, delta = IntegratedGradients(f).attribute(x, baselines=torch.zeros_like(x), n_steps=steps,
                                                    method=method, return_convergence_delta=True)
        out[f"ig_{method}_{steps}"] = dict(per_token=a[0].sum(-1).tolist(), delta=delta.item())
    # Logit lens: log-probabilities (layers + 1, T, V).
    with torch.no_grad():
        hs = [x + model.transformer.wpe.weight[:T]]
        h = hs[0]
        for blk in model.transformer.h:
            h = blk(h)
            hs.append(h)
        out["lens_logprobs"] = [F.log_softmax(model.lm_head(model.transformer.ln_f(h)), -1)[0].tolist() for h in hs]
    # Ablation: mean next-token loss on the sequence.
    ab = Ablate(model)

    def loss():
        with torch.no_grad():
            # Inputs: every token but the last; targets: the next tokens.
            logits = run_from_embeds(model, x[:, :-1])[0]
            return F.cross_entropy(logits, idx[1:]).item()
    out["base_loss"] = loss()
    for mode in ["zero", "mean"]:
        heads, mlps = [], []
        for l in range(cfg["n_layer"]):
            row = []
            for hd in range(cfg["n_head"]):
                ab.spec = ("attn", l, hd, mode)
                row.append(loss())
            heads.append(row)
            ab.spec = ("mlp", l, None, mode)
            mlps.append(loss())
        ab.spec = None
        out[f"ablation_{mode}"] = dict(heads=heads, mlps=mlps)
    return out


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cases = [case("gpt_tiny_bias_tied", pos=5, target=3), case("gpt_tiny_nobias_untied", pos=6, target=9)]
    os.makedirs(os.path.join(FIX, "inspect"), exist_ok=True)
    path = os.path.join(FIX, "inspect", "reference.json")
    with open(path, "w") as f:
        json.dump(dict(captum="0.9.0", torch=torch.__version__, cases=cases), f)
    print("wrote", path)


if __name__ == "__main__":
    main()
