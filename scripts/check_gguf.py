#!/usr/bin/env python3
"""Checks GGUF files written by `lmlab export --gguf` with gguf-py (llama.cpp's reader).

For lmlab-trained tiny models (character tokenizer) of both architectures GGUF holds, GPT-2
(LayerNorm, learned positions, GELU-tanh; tied and untied, with and without biases) and Llama
(RMSNorm, RoPE, SwiGLU, no bias, grouped-query attention), exported as f32 and f16, it reads the
file with `gguf.GGUFReader` and checks:
  - every metadata key and value against the checkpoint's model configuration (the exact key set:
    nothing missing, nothing unexpected), and the tokenizer keys against tokenizer.json;
  - every tensor: the exact name set, ggml dims ([cols, rows]), ggml type (matrices F32/F16 as
    asked, norms and biases F32), and the values against the checkpoint's model.safetensors
    (bit-identical for F32, numpy's float16 rounding for F16), Q/K/V and gate/up sliced from
    lmlab's fused c_attn and c_fc, unpermuted;
  - `lmlab import --gguf` of the file gives the same logits (`lmlab eval logits`) as the
    checkpoint (bit-identical for F32).
The same for a GPT-2 tokenizer (transformers' tiny GPT-2 fixture, `lmlab import --hf`): tokens,
merges, token types, special ids and the tokenizers document. It also reads llama.cpp's
vocab-only GPT-2 file with gguf-py and lmlab (same tokens).

Usage: /work/venv/bin/python scripts/check_gguf.py [--lmlab target/release/lmlab] [--keep DIR]
Needs: gguf==0.19.0, numpy, safetensors.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import gguf.quants
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {
    "gpt2_tied": [],
    "gpt2_untied_nobias": ["model.tie_embeddings=false", "model.bias=false", "model.ffn_hidden=24"],
    "llama_gqa": [
        'model.norm="rmsnorm"', 'model.position="rope"', 'model.activation="swiglu"', "model.bias=false",
        "model.n_kv_head=1", "model.tie_embeddings=false", "model.rope_theta=500.0", "model.norm_eps=1e-6",
        "model.ffn_hidden=40",
    ],
    "llama_tied": [
        'model.norm="rmsnorm"', 'model.position="rope"', 'model.activation="swiglu"', "model.bias=false",
    ],
    # 64 wide: every matrix width a multiple of 32, so it is also exported as Q8_0 and Q4_0.
    "llama_q": [
        'model.norm="rmsnorm"', 'model.position="rope"', 'model.activation="swiglu"', "model.bias=false",
        "model.n_embd=64", "model.n_head=4", "model.n_kv_head=2", "model.ffn_hidden=96",
        "model.tie_embeddings=false",
    ],
}
# --type: llama.cpp's general.file_type and the matrices' ggml type.
TYPES = {"f32": (0, GGMLQuantizationType.F32), "f16": (1, GGMLQuantizationType.F16),
         "q8_0": (7, GGMLQuantizationType.Q8_0), "q4_0": (2, GGMLQuantizationType.Q4_0)}


def run(lmlab, *args):
    r = subprocess.run([str(lmlab), *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"lmlab {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r.stdout


def field_value(f):
    """A ReaderField's value as Python: scalar, string, or list."""
    t = f.types[0]
    if t == GGUFValueType.ARRAY:
        et = f.types[-1]
        if et == GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if t == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


def tokenizer_keys(tok_text):
    """The tokenizer.* keys lmlab writes for a checkpoint's tokenizer.json."""
    tok = json.loads(tok_text)
    if "chars" in tok:
        return {
            "tokenizer.ggml.model": (GGUFValueType.STRING, "none"),
            "tokenizer.ggml.tokens": (GGUFValueType.ARRAY, tok["chars"]),
            "tokenizer.ggml.token_type": (GGUFValueType.ARRAY, [1] * len(tok["chars"])),
        }
    vocab = dict(tok["model"]["vocab"])
    special = {}
    for a in tok.get("added_tokens", []):
        vocab[a["content"]] = a["id"]
        if a.get("special"):
            special[a["content"]] = a["id"]
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    k = {
        "tokenizer.ggml.model": (GGUFValueType.STRING, "gpt2"),
        "tokenizer.ggml.pre": (GGUFValueType.STRING, "gpt-2"),
        "tokenizer.ggml.tokens": (GGUFValueType.ARRAY, tokens),
        "tokenizer.ggml.token_type": (GGUFValueType.ARRAY, [3 if t in special else 1 for t in tokens]),
        "tokenizer.ggml.merges": (GGUFValueType.ARRAY, merges),
        "tokenizer.huggingface.json": (GGUFValueType.STRING, tok_text),
    }
    if "<pad>" in special:  # lmlab's BPE
        for key, name in [("bos", "<s>"), ("eos", "</s>"), ("unknown", "<unk>"), ("padding", "<pad>")]:
            k[f"tokenizer.ggml.{key}_token_id"] = (GGUFValueType.UINT32, special[name])
    elif "<|endoftext|>" in vocab:
        for key in ("bos", "eos"):
            k[f"tokenizer.ggml.{key}_token_id"] = (GGUFValueType.UINT32, vocab["<|endoftext|>"])
    return k


def expected_keys(m, tok_text, ftype):
    arch = "llama" if m["norm"] == "rmsnorm" else "gpt2"
    ffn = m.get("ffn_hidden") or 4 * m["n_embd"]
    k = {
        "general.architecture": (GGUFValueType.STRING, arch),
        "general.name": (GGUFValueType.STRING, "lmlab"),
        "general.file_type": (GGUFValueType.UINT32, ftype),
        f"{arch}.vocab_size": (GGUFValueType.UINT32, m["vocab_size"]),
        f"{arch}.context_length": (GGUFValueType.UINT32, m["block_size"]),
        f"{arch}.embedding_length": (GGUFValueType.UINT32, m["n_embd"]),
        f"{arch}.block_count": (GGUFValueType.UINT32, m["n_layer"]),
        f"{arch}.feed_forward_length": (GGUFValueType.UINT32, ffn),
        f"{arch}.attention.head_count": (GGUFValueType.UINT32, m["n_head"]),
        **tokenizer_keys(tok_text),
    }
    if arch == "llama":
        k["llama.attention.head_count_kv"] = (GGUFValueType.UINT32, m.get("n_kv_head") or m["n_head"])
        k["llama.rope.dimension_count"] = (GGUFValueType.UINT32, m["n_embd"] // m["n_head"])
        k["llama.rope.freq_base"] = (GGUFValueType.FLOAT32, np.float32(m["rope_theta"]))
        k["llama.attention.layer_norm_rms_epsilon"] = (GGUFValueType.FLOAT32, np.float32(m["norm_eps"]))
    else:
        k["gpt2.attention.layer_norm_epsilon"] = (GGUFValueType.FLOAT32, np.float32(m["norm_eps"]))
    return arch, k


def expected_tensors(m, arch, w):
    """name -> (rows, cols) array from the checkpoint tensors w (None entries: zero biases)."""
    C, L = m["n_embd"], m["n_layer"]
    F = m.get("ffn_hidden") or 4 * C
    out = {"token_embd.weight": w["transformer.wte.weight"]}
    if arch == "llama":
        KV = (m.get("n_kv_head") or m["n_head"]) * (C // m["n_head"])
        for i in range(L):
            p, b = f"transformer.h.{i}.", f"blk.{i}."
            attn, fc = w[p + "attn.c_attn.weight"], w[p + "mlp.c_fc.weight"]
            out.update({
                b + "attn_norm.weight": w[p + "ln_1.weight"],
                b + "attn_q.weight": attn[:C], b + "attn_k.weight": attn[C:C + KV],
                b + "attn_v.weight": attn[C + KV:C + 2 * KV],
                b + "attn_output.weight": w[p + "attn.c_proj.weight"],
                b + "ffn_norm.weight": w[p + "ln_2.weight"],
                b + "ffn_gate.weight": fc[:F], b + "ffn_up.weight": fc[F:],
                b + "ffn_down.weight": w[p + "mlp.c_proj.weight"],
            })
        out["output_norm.weight"] = w["transformer.ln_f.weight"]
    else:
        out["position_embd.weight"] = w["transformer.wpe.weight"]
        names = [("attn_norm", "ln_1"), ("attn_qkv", "attn.c_attn"), ("attn_output", "attn.c_proj"),
                 ("ffn_norm", "ln_2"), ("ffn_up", "mlp.c_fc"), ("ffn_down", "mlp.c_proj")]
        for i in range(L):
            for g, l in names:
                wt = w[f"transformer.h.{i}.{l}.weight"]
                out[f"blk.{i}.{g}.weight"] = wt
                bias = w.get(f"transformer.h.{i}.{l}.bias")
                out[f"blk.{i}.{g}.bias"] = bias if bias is not None else np.zeros(wt.shape[0], np.float32)
        out["output_norm.weight"] = w["transformer.ln_f.weight"]
        ln_b = w.get("transformer.ln_f.bias")
        out["output_norm.bias"] = ln_b if ln_b is not None else np.zeros(C, np.float32)
    if "lm_head.weight" in w:
        out["output.weight"] = w["lm_head.weight"]
    return out


def check_file(path, ckpt, ftype, label):
    state = json.loads((ckpt / "state.json").read_text())
    m = state["model_config"]
    arch, want_keys = expected_keys(m, (ckpt / "tokenizer.json").read_text(), ftype)
    r = GGUFReader(str(path))
    got = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert set(got) == set(want_keys), f"{label}: keys differ: {sorted(set(got) ^ set(want_keys))}"
    for k, (t, v) in want_keys.items():
        f = got[k]
        assert f.types[0] == t, f"{label}: {k} has type {f.types[0]}, expected {t}"
        val = field_value(f)
        assert val == v, f"{label}: {k} = {val!r}, expected {v!r}"
    w = load_file(str(ckpt / "model.safetensors"))
    want = expected_tensors(m, arch, w)
    names = [t.name for t in r.tensors]
    assert sorted(names) == sorted(want), f"{label}: tensors differ: {sorted(set(names) ^ set(want))}"
    mat_type = next(t for f, t in TYPES.values() if f == ftype)
    for t in r.tensors:
        ref = np.asarray(want[t.name], dtype=np.float32)
        dims = [int(d) for d in t.shape]
        assert dims == list(reversed(ref.shape)), f"{label}: {t.name} dims {dims}, expected {list(reversed(ref.shape))}"
        wt = mat_type if ref.ndim == 2 else GGMLQuantizationType.F32
        assert t.tensor_type == wt, f"{label}: {t.name} is {t.tensor_type.name}, expected {wt.name}"
        if wt in (GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0):
            # The blocks gguf-py's own (ggml-exact) quantizer writes for the f32 weights.
            want_blocks = gguf.quants.quantize(ref, wt)
            assert np.asarray(t.data).tobytes() == want_blocks.tobytes(), f"{label}: {t.name} blocks differ from gguf-py's"
            continue
        data = np.asarray(t.data).reshape(ref.shape)
        if wt == GGMLQuantizationType.F16:
            assert data.dtype == np.float16
            assert np.array_equal(data, ref.astype(np.float16)), f"{label}: {t.name} differs from float16(ref)"
        else:
            assert data.dtype == np.float32
            assert data.tobytes() == ref.tobytes(), f"{label}: {t.name} is not bit-identical"
    print(f"  ok {label}: {len(want_keys)} keys, {len(names)} tensors ({arch}, file_type {ftype})")


def logits(lmlab, ckpt, text):
    out = json.loads(run(lmlab, "eval", "logits", "--checkpoint", ckpt, "--text", text))
    return np.array(out["logits"], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lmlab", type=Path, default=ROOT / "target" / "release" / "lmlab")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None)
    a = ap.parse_args()
    if not a.lmlab.exists():
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    data = a.data or Path(os.environ.get("LMLAB_DATA") or ROOT.parent / "shared" / "data")
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / "corpus.txt"
        corpus.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\nAll: Speak, speak.\n" * 40)
        text = "Before we proceed"
        print("lmlab models exported with lmlab export --gguf, read with gguf-py")
        for name, sets in VARIANTS.items():
            run_dir = work / f"run_{name}"
            cfg = work / f"{name}.toml"
            cfg.write_text(
                "[model]\nblock_size = 32\nn_layer = 2\nn_head = 2\nn_embd = 16\n"
                f"[data]\npath = {json.dumps(str(corpus))}\n"
                f"[train]\nout_dir = {json.dumps(str(run_dir))}\nbatch_size = 4\nmax_iters = 3\neval_interval = 3\n"
                "eval_iters = 1\nthreads = 1\ninit_std = 0.3\n"
            )
            args = ["train", "--config", cfg, "--quiet"]
            for s in sets:
                args += ["--set", s]
            run(a.lmlab, *args)
            ckpt = run_dir / "ckpt"
            types = ("f32", "f16", "q8_0", "q4_0") if name == "llama_q" else ("f32", "f16")
            for ty in types:
                ftype = TYPES[ty][0]
                out = work / f"{name}.{ty}.gguf"
                run(a.lmlab, "export", "--gguf", out, "--type", ty, "--checkpoint", ckpt)
                check_file(out, ckpt, ftype, f"{name}/{ty}")
            back = work / f"back_{name}"
            run(a.lmlab, "import", "--gguf", work / f"{name}.f32.gguf", "--out", back)
            ours, theirs = logits(a.lmlab, ckpt, text), logits(a.lmlab, back, text)
            assert ours.tobytes() == theirs.tobytes(), f"{name}: imported logits differ"
            print(f"  ok {name}: import --gguf gives bit-identical logits")
        print("a GPT-2 tokenizer: transformers' tiny GPT-2 fixture, imported with lmlab import --hf")
        ckpt = work / "hf_fixture"
        run(a.lmlab, "import", "--hf", ROOT / "tests" / "fixtures" / "hf_gpt2" / "tied", "--out", ckpt)
        for ty, ftype in (("f32", 0), ("f16", 1)):
            out = work / f"fixture.{ty}.gguf"
            run(a.lmlab, "export", "--gguf", out, "--type", ty, "--checkpoint", ckpt)
            check_file(out, ckpt, ftype, f"hf_fixture/{ty}")
        back = work / "back_fixture"
        run(a.lmlab, "import", "--gguf", work / "fixture.f32.gguf", "--out", back)
        ours, theirs = logits(a.lmlab, ckpt, text), logits(a.lmlab, back, text)
        assert ours.tobytes() == theirs.tobytes(), "hf_fixture: imported logits differ"
        print("  ok hf_fixture: import --gguf gives bit-identical logits and the same ids")
        vocab = data / "gpt2-tokenizer" / "ggml-vocab-gpt-2.gguf"
        if vocab.is_file():
            r = GGUFReader(str(vocab))
            toks = field_value(r.fields["tokenizer.ggml.tokens"])
            merges = field_value(r.fields["tokenizer.ggml.merges"])
            enc = json.loads((data / "gpt2-tokenizer" / "encoder.json").read_text())
            assert toks == sorted(enc, key=enc.get), "vocab-only file: tokens differ from encoder.json"
            print(f"  ok llama.cpp vocab-only file: {len(toks)} tokens (= encoder.json), {len(merges)} merges")
        else:
            print(f"  SKIPPED the vocab-only file: {vocab} not found")
    print("all GGUF checks passed")


if __name__ == "__main__":
    sys.exit(main())
