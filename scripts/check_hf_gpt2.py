#!/usr/bin/env python3
"""lmlab's Hugging Face GPT-2 export and import, checked against transformers itself; and the
fixture tests/hf_gpt2.rs reads.

How:  .venv/bin/python scripts/check_hf_gpt2.py [--lmlab target/release/lmlab] [--data DIR]
                                                [--fixture-only | --skip-fixture] [--keep DIR]
Needs: torch, transformers, tokenizers, safetensors (scripts/requirements.txt) and, except with
--fixture-only, the lmlab binary (built with `cargo build --release` if missing).

1. Fixture (tests/fixtures/hf_gpt2/{tied,untied}/): transformers writes a tiny randomly
   initialised GPT2LMHeadModel with save_pretrained (model.safetensors, config.json,
   generation_config.json) and a tiny GPT-2 tokenizer (a byte-level BPE trained here on a few
   sentences, wrapped in transformers' GPT2Tokenizer, saved with save_pretrained). `tied` is
   GPT-2's shape (gelu_new, tied embeddings); `untied` has an untied lm_head, n_inner = 40,
   exact GELU and unscaled scores. Every weight is redrawn (N(0, 0.3), norm gains 1 + N(0, 0.1))
   so biases and norms matter. Next to them, expected.safetensors: input_ids (B, T) int64 and
   transformers' logits (B, T, V) float32 on them; expected.json: a sample text, its ids from
   AutoTokenizer and their decoding. Seeded: rerunning gives the same tensors.

2. Checks, each on an lmlab checkpoint and an HF directory (`check`): AutoTokenizer loads the
   directory and gives lmlab's ids for sample text (and decodes them back to it);
   GPT2LMHeadModel.from_pretrained loads it with no missing, unexpected or mismatched tensors;
   its logits equal lmlab's (`lmlab eval logits`) within 1e-5 relative (max |Δ| / max |logit|).
   a. lmlab-trained models with the character tokenizer (`lmlab train`, init_std 0.3, 3 steps):
      default (gelu_tanh, tied); untied + relu + ffn_hidden 24; bias = false; gelu + unscaled
      scores; silu; leaky_relu. Each is exported with `lmlab export --hf`.
   b. lmlab's BPE tokenizer (special tokens <pad> <s> </s> <unk>, byte-level BPE, as lmlab's
      translation and classification runs train it) with a random transformers model: written
      here, `lmlab import --hf`, checked, then `lmlab export --hf` and checked again.
   c. OpenAI's GPT-2 tokenizer (gpt2-tokenizer/ of the shared data, if found) with a random
      model of vocabulary 50257: the same import → export path.
   d. The fixtures: import → check → export → check, and the exported tensors equal the
      fixture's bit for bit.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIR = ROOT / "tests" / "fixtures" / "hf_gpt2"
TOL = 1e-5
SAMPLE = "Once upon a time, a tiny model said hello to the world."
FIXTURE_SENTENCES = [
    "Once upon a time there was a tiny model.",
    "It learned to say hello to the world, and the world said hello back.",
    "The end of the story is near; the model is happy.",
]


def load_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


# ------------------------------------------------------------------------------------------
# Fixture


def tiny_gpt2_tokenizer(sentences, vocab_size):
    """A GPT-2-style byte-level BPE trained on `sentences`, as transformers' GPT2Tokenizer."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import BPE

    transformers = load_transformers()
    t = Tokenizer(BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    t.train_from_iterator(sentences, trainer)
    model = json.loads(t.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return transformers.GPT2Tokenizer(vocab=model["vocab"], merges=merges)


def randomize(model, seed, std=0.3):
    """Redraws every weight so that biases, norms and positions all matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if ".ln_" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(std * noise)


def write_fixture(out_dir):
    transformers = load_transformers()
    from safetensors.torch import save_file

    tok = tiny_gpt2_tokenizer(FIXTURE_SENTENCES * 4, vocab_size=280)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    variants = {
        "tied": dict(activation_function="gelu_new", tie_word_embeddings=True),
        "untied": dict(activation_function="gelu", tie_word_embeddings=False, n_inner=40, scale_attn_weights=False),
    }
    for i, (name, extra) in enumerate(variants.items()):
        d = out_dir / name
        if d.exists():
            shutil.rmtree(d)
        cfg = transformers.GPT2Config(
            vocab_size=len(tok),
            n_positions=40,
            n_embd=8,
            n_layer=2,
            n_head=2,
            bos_token_id=eot,
            eos_token_id=eot,
            **extra,
        )
        torch.manual_seed(i)
        model = transformers.GPT2LMHeadModel(cfg).eval()
        randomize(model, seed=100 + i)
        model.save_pretrained(d)
        tok.save_pretrained(d)
        text_ids = tok.encode(SAMPLE)
        g = torch.Generator().manual_seed(7 + i)
        ids = torch.stack([
            torch.tensor(text_ids[:8]),
            torch.randint(0, len(tok), (8,), generator=g),
        ])
        with torch.no_grad():
            logits = model(ids).logits.float().contiguous()
        save_file({"input_ids": ids.to(torch.int64), "logits": logits}, str(d / "expected.safetensors"),
                  # One key: safetensors writes several in hash order, and reruns must give the same bytes.
                  metadata={"generator": f"scripts/check_hf_gpt2.py, transformers {transformers.__version__}"})
        with open(d / "expected.json", "w") as f:
            json.dump({"text": SAMPLE, "ids": text_ids, "decoded": tok.decode(text_ids)}, f, indent=1,
                      ensure_ascii=False)
            f.write("\n")
        size = sum(p.stat().st_size for p in d.iterdir())
        print(f"fixture {d.relative_to(ROOT)}: {len(os.listdir(d))} files, {size / 1024:.0f} KiB, "
              f"vocab {len(tok)}, logits {tuple(logits.shape)}")


# ------------------------------------------------------------------------------------------
# Checks


class Lmlab:
    def __init__(self, binary):
        self.binary = str(binary)

    def run(self, *args):
        r = subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"lmlab {' '.join(map(str, args))} failed:\n{r.stderr}")
        return r.stdout

    def logits(self, ckpt, text):
        out = json.loads(self.run("eval", "logits", "--checkpoint", ckpt, "--text", text))
        return out["ids"], np.array(out["logits"], dtype=np.float32)


def check(lmlab, hf_dir, ckpt, texts, label):
    """transformers on hf_dir against lmlab on ckpt: tokenizer ids, clean load, logits."""
    transformers = load_transformers()
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model, info = transformers.GPT2LMHeadModel.from_pretrained(hf_dir, output_loading_info=True)
    model.eval()
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(key), f"{label}: transformers reports {key}: {info[key]}"
    worst = 0.0
    for text in texts:
        ids, ours = lmlab.logits(ckpt, text)
        theirs_ids = tok.encode(text)
        assert theirs_ids == ids, f"{label}: ids of {text!r}: transformers {theirs_ids}, lmlab {ids}"
        assert tok.decode(ids) == text, f"{label}: {text!r} decodes to {tok.decode(ids)!r}"
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].float().numpy()
        assert ref.shape == ours.shape, f"{label}: logits shape {ref.shape} vs {ours.shape}"
        rel = float(np.abs(ref - ours).max() / max(np.abs(ref).max(), 1e-30))
        worst = max(worst, rel)
        assert rel <= TOL, f"{label}: logits of {text!r} differ by {rel:.3g} relative (> {TOL})"
    print(f"  ok {label}: {type(tok).__name__}, {len(texts)} texts, logits within {worst:.2g} relative")


def tensors(path):
    from safetensors.numpy import load_file

    return {k.removeprefix("transformer."): v for k, v in load_file(str(path)).items()}


def same_tensors(a_dir, b_dir, label):
    a, b = tensors(a_dir / "model.safetensors"), tensors(b_dir / "model.safetensors")
    assert a.keys() == b.keys(), f"{label}: tensor names differ: {sorted(a.keys() ^ b.keys())}"
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, f"{label}: {k}"
        assert a[k].tobytes() == b[k].tobytes(), f"{label}: tensor {k} differs"
    print(f"  ok {label}: {len(a)} tensors bit-identical")


CHAR_VARIANTS = {
    "default": [],
    "untied_relu": ["model.tie_embeddings=false", "model.activation=\"relu\"", "model.ffn_hidden=24"],
    "no_bias": ["model.bias=false"],
    "gelu_unscaled": ["model.activation=\"gelu\"", "model.score=\"unscaled\""],
    "silu": ["model.activation=\"silu\""],
    "leaky_relu": ["model.activation=\"leaky_relu\""],
}


def check_char_models(lmlab, work, corpus):
    print("a. lmlab-trained models, character tokenizer")
    text = corpus.read_text()
    texts = [text[:40], text[200:216]]
    for name, sets in CHAR_VARIANTS.items():
        run = work / f"run_{name}"
        cfg = work / f"{name}.toml"
        cfg.write_text(
            "[model]\nblock_size = 48\nn_layer = 2\nn_head = 2\nn_embd = 16\n"
            f"[data]\npath = {json.dumps(str(corpus))}\n"
            f"[train]\nout_dir = {json.dumps(str(run))}\nbatch_size = 4\nmax_iters = 3\neval_interval = 3\n"
            "eval_iters = 1\nthreads = 1\ninit_std = 0.3\n"
        )
        args = ["train", "--config", cfg, "--quiet"]
        for s in sets:
            args += ["--set", s]
        lmlab.run(*args)
        out = work / f"hf_{name}"
        lmlab.run("export", "--hf", out, "--checkpoint", run / "ckpt")
        check(lmlab, out, run / "ckpt", texts, f"char/{name}")


def random_hf_dir(out, tokenizer_files, vocab_size, eot=None, seed=0, **cfg):
    transformers = load_transformers()
    out.mkdir(parents=True, exist_ok=True)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=eot, eos_token_id=eot, **cfg)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    randomize(model, seed=seed + 1)
    model.save_pretrained(out)
    for name, content in tokenizer_files.items():
        (out / name).write_text(content)


def import_export(lmlab, src, work, label, texts):
    ckpt = work / f"ckpt_{label}"
    lmlab.run("import", "--hf", src, "--out", ckpt)
    check(lmlab, src, ckpt, texts, f"{label} (imported)")
    again = work / f"hf_{label}_again"
    lmlab.run("export", "--hf", again, "--checkpoint", ckpt)
    check(lmlab, again, ckpt, texts, f"{label} (exported again)")
    same_tensors(src, again, f"{label}: export(import(dir))")


def check_bpe(lmlab, work, corpus):
    print("b. lmlab's BPE tokenizer")
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    t = Tokenizer(BPE(unk_token="<unk>"))
    # lmlab's settings (src/data/bpe.rs): ByteLevel without prefix space or offset trimming.
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=2, show_progress=False,
                                  special_tokens=[AddedToken(s, special=True) for s in specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator(corpus.read_text().splitlines(), trainer)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "bos_token": "<s>",
              "eos_token": "</s>", "unk_token": "<unk>", "split_special_tokens": True,
              "clean_up_tokenization_spaces": False}
    src = work / "hf_bpe"
    random_hf_dir(src, {"tokenizer.json": t.to_str(), "tokenizer_config.json": json.dumps(config)},
                  t.get_vocab_size(), seed=3, activation_function="relu", tie_word_embeddings=False)
    import_export(lmlab, src, work, "bpe", [SAMPLE, "  two  spaces\tand a tab, <s> literal"])


def check_gpt2(lmlab, work, data_dir):
    gpt2 = data_dir / "gpt2-tokenizer" if data_dir else None
    if not gpt2 or not (gpt2 / "encoder.json").is_file():
        print("c. skipped: gpt2-tokenizer/ not found (pass --data DIR)")
        return
    print("c. OpenAI's GPT-2 tokenizer")
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    t = Tokenizer(BPE.from_file(str(gpt2 / "encoder.json"), str(gpt2 / "vocab.bpe")))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "add_prefix_space": False, "clean_up_tokenization_spaces": False}
    src = work / "hf_gpt2tok"
    random_hf_dir(src, {"tokenizer.json": t.to_str(), "tokenizer_config.json": json.dumps(config)},
                  t.get_vocab_size(), eot=50256, seed=5)
    import_export(lmlab, src, work, "gpt2", ["Hello world", SAMPLE, " 日本語 😀  ça\n\nva"])


def check_fixtures(lmlab, work):
    print("d. the fixtures (written by transformers)")
    for name in ("tied", "untied"):
        src = FIXTURE_DIR / name
        text = json.loads((src / "expected.json").read_text())["text"]
        import_export(lmlab, src, work, f"fixture_{name}", [text])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lmlab", type=Path, default=ROOT / "target" / "release" / "lmlab")
    ap.add_argument("--data", type=Path, default=None, help="shared data directory (default: $LMLAB_DATA or "
                    "../shared/data)")
    ap.add_argument("--fixture-only", action="store_true", help="write the fixture, run no lmlab checks")
    ap.add_argument("--skip-fixture", action="store_true", help="keep the committed fixture")
    ap.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it")
    a = ap.parse_args()
    transformers = load_transformers()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if not a.skip_fixture:
        write_fixture(FIXTURE_DIR)
    if a.fixture_only:
        return
    if not a.lmlab.exists():
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    lmlab = Lmlab(a.lmlab)
    data = a.data or Path(os.environ.get("LMLAB_DATA") or ROOT.parent / "shared" / "data")
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / "corpus.txt"
        shakespeare = data / "tinyshakespeare.txt"
        if shakespeare.is_file():
            corpus.write_text(shakespeare.read_text()[:20000])
        else:
            corpus.write_text(("\n".join(FIXTURE_SENTENCES) + "\n") * 50)
        check_char_models(lmlab, work, corpus)
        check_bpe(lmlab, work, corpus)
        check_gpt2(lmlab, work, data)
        check_fixtures(lmlab, work)
    print("all checks passed")


if __name__ == "__main__":
    sys.exit(main())
