"""Reference trajectories of torch.optim optimizers for tests/optim_reference.rs.

Writes tests/fixtures/optim.safetensors with
  init.{i}            initial parameters of three small tensors (float32 values)
  grad.{s}.{i}        the gradient fed at step s (s = 0..9), float32 values
  {config}.{s}.{i}    parameters after step s under optimizer configuration {config}, float64
and metadata "configs" (JSON: name -> optimizer + hyperparameters) and "steps".

Inputs are drawn in float32 so the Rust side starts from exactly the same numbers; PyTorch then
runs in float64 so the reference carries no rounding error of its own.
"""
import collections
import json
import os
import struct

import torch

SHAPES = [(4, 3), (5,), (2, 2, 2)]
STEPS = 10

# name -> (torch class name, kwargs). lr is always given explicitly.
CONFIGS = collections.OrderedDict([
    ("sgd_plain", ("SGD", dict(lr=0.05))),
    ("sgd_momentum", ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01))),
    ("sgd_nesterov", ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True))),
    ("adam_default", ("Adam", dict(lr=0.01))),
    ("adam_wd", ("Adam", dict(lr=0.01, weight_decay=0.1))),
    ("adam_amsgrad", ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05, amsgrad=True))),
    ("rmsprop_default", ("RMSprop", dict(lr=0.01))),
    ("rmsprop_centered", ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True))),
    ("rmsprop_wd", ("RMSprop", dict(lr=0.01, alpha=0.9, weight_decay=0.1))),
    ("adagrad_default", ("Adagrad", dict(lr=0.01))),
    ("adagrad_decay", ("Adagrad", dict(lr=0.01, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1))),
    ("adamw", ("AdamW", dict(lr=0.01, weight_decay=0.1))),
])


def save_deterministic(tensors, path, metadata):
    """safetensors.torch.save with the __metadata__ keys in sorted order (stable bytes)."""
    from safetensors.torch import save, load
    buf = save(tensors, metadata=metadata)
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n], object_pairs_hook=collections.OrderedDict)
    header["__metadata__"] = collections.OrderedDict(sorted(header["__metadata__"].items()))
    header.move_to_end("__metadata__", last=False)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(text) <= n, (len(text), n)
    data = buf[:8] + text + b" " * (n - len(text)) + buf[8 + n:]
    back = load(data)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    with open(path, "wb") as f:
        f.write(data)


def main():
    gen = torch.Generator().manual_seed(1234)
    init = [torch.randn(s, generator=gen, dtype=torch.float32) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float32) for s in SHAPES] for _ in range(STEPS)]
    out = {}
    for i, t in enumerate(init):
        out[f"init.{i}"] = t.contiguous()
    for s in range(STEPS):
        for i, g in enumerate(grads[s]):
            out[f"grad.{s}.{i}"] = g.contiguous()
    meta_configs = {}
    for name, (cls, kw) in CONFIGS.items():
        params = [torch.nn.Parameter(t.double().clone()) for t in init]
        opt = getattr(torch.optim, cls)(params, **kw)
        for s in range(STEPS):
            for p, g in zip(params, grads[s]):
                p.grad = g.double().clone()
            opt.step()
            for i, p in enumerate(params):
                out[f"{name}.{s}.{i}"] = p.detach().clone().contiguous()
        meta_configs[name] = dict(optimizer=cls, **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()})
    meta = {"configs": json.dumps(meta_configs, sort_keys=True), "steps": str(STEPS),
            "torch_version": torch.__version__}
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
    save_deterministic(out, os.path.join(out_dir, "optim.safetensors"), meta)


if __name__ == "__main__":
    main()
