"""Reference parameter counts and FLOPs for `lmlab account` (tests/account.rs).

1. hf_params.json: every named architecture of `lmlab account --list-presets`, built as a Hugging
   Face `transformers` model on the meta device (shapes only, no weights allocated or
   downloaded): GPT2LMHeadModel for GPT-2 and the GPT-3 sizes (GPT2Config with n_positions
   2048), BertModel for bert-base, LlamaForCausalLM for llama-2-7b. For each: the total of
   `model.parameters()` (a tied LM head is one tensor, counted once) and the same split into
   embeddings / attention / feed_forward / norms / head by parameter name.
2. flops.json: small models of the same three families, with random weights, one forward pass
   under torch.utils.flop_counter.FlopCounterMode (eager attention) at two batch shapes. Llama's
   rotary embedding computes its angles with a small matmul per pass (`model.rotary_emb`);
   lmlab reads them from a table, so that module's FLOPs are recorded apart.

    /work/venv/bin/python scripts/make_account_fixtures.py
"""
import json
import os

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "account")


def gpt2(n_layer, n_embd, n_head, n_positions=1024, vocab=50257):
    return GPT2LMHeadModel, GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=n_embd,
                                       n_layer=n_layer, n_head=n_head)


def bert(n_layer=12, hidden=768, heads=12, ffn=3072, vocab=30522, positions=512):
    return BertModel, BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=n_layer,
                                 num_attention_heads=heads, intermediate_size=ffn,
                                 max_position_embeddings=positions, type_vocab_size=2)


def llama(n_layer=32, hidden=4096, heads=32, kv_heads=32, ffn=11008, vocab=32000, positions=4096):
    return LlamaForCausalLM, LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
                                         num_hidden_layers=n_layer, num_attention_heads=heads,
                                         num_key_value_heads=kv_heads, max_position_embeddings=positions,
                                         tie_word_embeddings=False)


# Brown et al. (2020) Table 2.1 (n_layer, d_model, d_head); heads = d_model / d_head, which for
# GPT-3 XL (listed as 24 heads of 128 at d 2048) is 16 and for 13B (listed d_model 5140) uses 5120,
# as lmlab's presets do.
GPT3 = {"small": (12, 768, 64), "medium": (24, 1024, 64), "large": (24, 1536, 96), "xl": (24, 2048, 128),
        "2.7b": (32, 2560, 80), "6.7b": (32, 4096, 128), "13b": (40, 5120, 128), "175b": (96, 12288, 128)}

PRESETS = {
    "gpt2": gpt2(12, 768, 12),
    "gpt2-medium": gpt2(24, 1024, 16),
    "gpt2-large": gpt2(36, 1280, 20),
    "gpt2-xl": gpt2(48, 1600, 25),
    "bert-base": bert(),
    "llama-2-7b": llama(),
    **{f"gpt3-{k}": gpt2(n, d, d // hd, n_positions=2048) for k, (n, d, hd) in GPT3.items()},
}


def component(name):
    """lmlab's components for a Hugging Face parameter name (GPT-2, BERT, Llama)."""
    if "LayerNorm" in name or "layernorm" in name or ".ln_" in name or name.startswith("ln_") \
            or name.startswith("transformer.ln_f") or name == "model.norm.weight":
        return "norms"
    if "embeddings" in name or "embed_tokens" in name or ".wte." in name or ".wpe." in name:
        return "embeddings"
    if name.startswith("lm_head") or name.startswith("pooler"):
        return "head"
    if ".attn." in name or ".attention." in name or ".self_attn." in name:
        return "attention"
    if ".mlp." in name or ".intermediate." in name or ".output.dense." in name:
        return "feed_forward"
    raise ValueError(f"no component for {name}")


def param_counts(cls, cfg):
    with torch.device("meta"):
        model = cls(cfg)
    out = {"total": 0, "embeddings": 0, "attention": 0, "feed_forward": 0, "norms": 0, "head": 0}
    for name, p in model.named_parameters():  # tied tensors once
        out[component(name)] += p.numel()
        out["total"] += p.numel()
    return out


# Small models for FlopCounterMode: (family, builder, lmlab-side description).
SMALL = {
    "gpt2_tiny": (gpt2(2, 64, 4, n_positions=32, vocab=101),
                  dict(family="gpt2", n_layer=2, n_embd=64, n_head=4, block_size=32, vocab_size=101)),
    "bert_tiny": (bert(n_layer=2, hidden=64, heads=4, ffn=96, vocab=103, positions=40),
                  dict(family="bert", n_layer=2, n_embd=64, n_head=4, ffn_hidden=96, block_size=40, vocab_size=103)),
    "llama_tiny": (llama(n_layer=2, hidden=64, heads=4, kv_heads=4, ffn=176, vocab=97, positions=48),
                   dict(family="llama", n_layer=2, n_embd=64, n_head=4, n_kv_head=4, ffn_hidden=176,
                        block_size=48, vocab_size=97)),
    "llama_tiny_gqa": (llama(n_layer=3, hidden=96, heads=6, kv_heads=2, ffn=160, vocab=97, positions=48),
                       dict(family="llama", n_layer=3, n_embd=96, n_head=6, n_kv_head=2, ffn_hidden=160,
                            block_size=48, vocab_size=97)),
}


def flop_counts(cls, cfg, b, t):
    cfg._attn_implementation = "eager"
    model = cls(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (b, t))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(input_ids=idx)
    per_module = counter.get_flop_counts()
    # get_flop_counts() nests: a module's count includes its submodules'; rotary_emb has none.
    rotary = sum(sum(v.values()) for k, v in per_module.items() if k.endswith("rotary_emb"))
    return {"b": b, "t": t, "flops": counter.get_total_flops(), "rotary_flops": rotary}


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    params = {}
    for name, (cls, cfg) in PRESETS.items():
        params[name] = param_counts(cls, cfg)
        print(f"{name:12s} {params[name]['total']:>16,d}")
    with open(os.path.join(OUT, "hf_params.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "note": "bert-base is BertModel (embeddings with token types, encoder, pooler)",
                   "presets": params}, f, indent=1, sort_keys=True)
        f.write("\n")
    flops = {}
    for name, ((cls, cfg), desc) in SMALL.items():
        shapes = [flop_counts(cls, cfg, b, t) for b, t in [(1, 7), (3, desc["block_size"])]]
        flops[name] = {"config": desc, "shapes": shapes}
        print(f"{name:16s} {[s['flops'] for s in shapes]} rotary {[s['rotary_flops'] for s in shapes]}")
    with open(os.path.join(OUT, "flops.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "models": flops},
                  f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
