#!/usr/bin/env python3
"""Reference fixtures for lmlab's general Transformer (every option of the model spec).

What: a generic PyTorch Transformer written from the spec (decoder, encoder classifier and
encoder-decoder; positions none / learned / sinusoidal / shaw / t5 / rope / alibi; scores
scaled / unscaled / cosine / additive; MHA / MQA / GQA; layernorm / rmsnorm / batchnorm; pre /
post norm; optional final norm; gelu_tanh / gelu / relu / leaky_relu / silu / swiglu; bias on/off;
tied / untied / shared embeddings; padding masks; cls / mean pooling; a norm on the embedding
sum), and one fixture per variant in tests/fixtures/variants/<variant>.safetensors.

How:  .venv/bin/python scripts/make_variant_fixtures.py [--out DIR] [--only NAME ...] [--no-checks]

All math is float64 on the float32-rounded parameters; tensors are stored as float32 (integer
tensors as int64). Rerunning gives identical bytes (save_deterministic from make_fixtures.py:
sorted safetensors metadata). The script self-checks before writing (see run_checks): parameter
names against a spec-derived list, dec_default against a nanoGPT-style functional computation and
against make_fixtures.GPT, encoder / encoder-decoder blocks against torch.nn.Transformer*Layer,
every attention call against a naive per-(b, h, i, j) loop written from the spec text, GQA/MQA
against MHA with duplicated k/v heads, RoPE against a complex-number formulation, T5 buckets
against a scalar float64 implementation, ALiBi slopes against known values, BatchNorm against
nn.BatchNorm1d, the BERT-shaped variant against Hugging Face transformers' BertModel, and one
central finite difference (float64) per trained tensor per variant.

Fixture contents (names):
  param.<name>         every parameter AND buffer (BatchNorm running_mean / running_var), initial
                       values, state_dict names exactly as in the spec (f32)
  inputs (int64)       decoder:          idx (B,T), targets (B,T) with some -1 (ignored)
                       encoder:          idx (B,T) (token 0 at position 0 = CLS), mask (B,T) 1/0
                                         (right padding in sequence 1), labels (B)
                       encoder_decoder:  src (B,S), src_mask (B,S) 1/0 (right padding in seq 1),
                                         tgt_in (B,T), tgt_out (B,T) (-1 where padded)
  logits               decoder / encoder_decoder (B,T,V); encoder (B,num_classes)
  loss                 shape [1]; mean CE (ignore_index -1), training mode, no dropout
  grad.<name>          d loss / d param for every trained parameter (not buffers)
  batchnorm variants:  buffer_after.<name>  running stats after that one training forward
                       logits_eval          eval-mode logits of the same input, after the update
Metadata: lmlab_config (full config JSON, every spec field present, sorted keys), variant,
generator, torch_version.
Sizes: vocab 11, n_embd 16, n_head 4 (hs 4), block_size 8, n_layer 2, ffn_hidden 24, B=2, T=7
(encoder-decoder S=6, T=5), shaw_k 2, t5_buckets 6, t5_max_distance 10.

Readings of the spec where it leaves room (the most standard PyTorch behaviour was taken):
- T5 buckets: HF arithmetic, including its float32 log and truncating cast; relative position =
  key - query = j - i. With these sizes (|j - i| <= 7, 6 buckets, max distance 10) f32 and f64 give
  the same buckets: bidirectional j-i = -7..7 -> 2 2 2 2 1 1 1 0 4 4 4 5 5 5 5, unidirectional
  -> 5 4 4 3 3 2 1 0 0 0 0 0 0 0 0.
- A query row with no visible key has p = 0, so its per-head output is 0 (c_proj's bias is still
  added). No fixture has such a row (every sequence keeps >= 1 real token).
- BatchNorm: batch statistics over all B*T rows (padding included) with the biased variance;
  running_var is updated with the unbiased one (N/(N-1)), as torch does; no num_batches_tracked.
  With batchnorm, a per-channel constant added to the residual stream is invisible when every
  reader is a BatchNorm, so some bias gradients are exactly 0 analytically (stored as ~1e-17):
  compare gradients with an absolute floor.
- Every stack owns its position machinery: learned -> P.wpe, t5 -> P.rel_bias (encoder stack
  bidirectional, decoder stack unidirectional), rope / alibi / shaw / sinusoidal in both stacks'
  self-attention, never in cross-attention. ALiBi in encoder stacks is -slope_h * |i - j|.
- scale_embeddings scales the token embedding in every stack (also the shared one in the decoder);
  the tied lm_head uses the unscaled matrix. Sinusoidal / learned positions are added after scaling.
- RoPE: interleaved pairs (2i, 2i+1) (not rotate_half), positions 0..T-1 in each stack.
- Encoder inputs: pad positions (mask 0) hold ordinary non-zero tokens (there is no pad id); padded
  query rows are computed like others (they see the real keys) and are left out only of mean
  pooling. Encoder-decoder: the decoder's self-attention is causal only (no target key mask);
  target padding is expressed by tgt_out = -1 alone.
- Fields irrelevant to an arch (e.g. tie/share_embeddings for "encoder") keep their defaults in
  lmlab_config. dropout = attn_dropout = 0 in all fixtures.
"""
import argparse
import json
import math
import os
import sys
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import f32, save_deterministic  # noqa: E402


# ----------------------------------------------------------------------------
# Config

SPEC_DEFAULTS = dict(
    arch="decoder",
    vocab_size=None, block_size=None, n_layer=None, n_head=None, n_embd=None,  # required
    n_dec_layer=None,     # = n_layer
    n_kv_head=None,       # = n_head
    ffn_hidden=None,      # = 4 * n_embd
    activation="gelu_tanh",
    leaky_slope=0.01,
    norm="layernorm",
    norm_eps=1e-5,
    norm_position="pre",
    final_norm=True,
    position="learned",
    scale_embeddings=False,
    shaw_k=8,
    shaw_values=True,
    t5_buckets=32,
    t5_max_distance=128,
    rope_theta=10000.0,
    score="scaled",
    dropout=0.0,
    attn_dropout=None,    # = dropout
    bias=True,
    tie_embeddings=True,
    share_embeddings=True,
    num_classes=2,
    pooling="cls",
    attention="dense",
)

# Options added after the first fixtures were written. full_config includes one only when a
# variant sets it, so every older fixture's lmlab_config (and flops.json) keeps its bytes; lmlab
# reads a missing key as this default.
OPTIONAL_DEFAULTS = dict(
    embedding_norm=False,  # P.ln_emb on the embedding sum, before embedding dropout (BERT)
)

CHOICES = dict(
    arch=("decoder", "encoder", "encoder_decoder"),
    activation=("gelu_tanh", "gelu", "relu", "leaky_relu", "silu", "swiglu"),
    norm=("layernorm", "rmsnorm", "batchnorm"),
    norm_position=("pre", "post"),
    position=("learned", "none", "sinusoidal", "shaw", "t5", "rope", "alibi"),
    score=("scaled", "unscaled", "cosine", "additive"),
    pooling=("cls", "mean"),
    attention=("dense", "flash"),
)


def full_config(**kw):
    """Every spec field explicitly present, derived defaults resolved, validated."""
    unknown = set(kw) - set(SPEC_DEFAULTS) - set(OPTIONAL_DEFAULTS)
    assert not unknown, unknown
    cfg = dict(SPEC_DEFAULTS)
    cfg.update(kw)
    for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
        assert cfg[k] is not None, k
    if cfg["n_dec_layer"] is None:
        cfg["n_dec_layer"] = cfg["n_layer"]
    if cfg["n_kv_head"] is None:
        cfg["n_kv_head"] = cfg["n_head"]
    if cfg["ffn_hidden"] is None:
        cfg["ffn_hidden"] = 4 * cfg["n_embd"]
    if cfg["attn_dropout"] is None:
        cfg["attn_dropout"] = cfg["dropout"]
    for k, allowed in CHOICES.items():
        assert cfg[k] in allowed, (k, cfg[k])
    assert cfg["n_embd"] % cfg["n_head"] == 0
    assert cfg["n_head"] % cfg["n_kv_head"] == 0
    hs = cfg["n_embd"] // cfg["n_head"]
    if cfg["position"] == "rope":
        assert hs % 2 == 0
    if cfg["position"] == "sinusoidal":
        assert cfg["n_embd"] % 2 == 0
    if cfg["position"] == "shaw":
        assert cfg["score"] in ("scaled", "unscaled"), "shaw requires scaled or unscaled scores"
    for k in ("leaky_slope", "norm_eps", "rope_theta", "dropout", "attn_dropout"):
        cfg[k] = float(cfg[k])
    return cfg


# ----------------------------------------------------------------------------
# Position helpers

def t5_relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """Hugging Face T5Attention._relative_position_bucket (same arithmetic: float32 log, truncating
    cast). relative_position = memory (key) position - query position = j - i.

    The only deviation: log() is taken of max(n, 1) so that n = 0 does not produce log(0) = -inf
    (HF then casts -inf to int64, which is discarded by the is_small branch anyway): same result."""
    relative_buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        relative_buckets = relative_buckets + (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    # now relative_position is in [0, inf)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    rp = relative_position.clamp(min=1)
    relative_position_if_large = max_exact + (
        torch.log(rp.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).to(torch.long)
    relative_position_if_large = torch.min(
        relative_position_if_large, torch.full_like(relative_position_if_large, num_buckets - 1))
    return relative_buckets + torch.where(is_small, relative_position, relative_position_if_large)


def alibi_slopes(n):
    """get_slopes from the ALiBi paper's reference code (Press et al., attention_with_linear_biases)."""
    def get_slopes_power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        ratio = start
        return [start * ratio ** i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return (get_slopes_power_of_2(closest_power_of_2)
            + alibi_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2])


def sinusoidal_table(T, C, dtype):
    """PE[pos, 2i] = sin(pos / 10000^(2i/C)), PE[pos, 2i+1] = cos(pos / 10000^(2i/C))."""
    pos = torch.arange(T, dtype=dtype)[:, None]
    i2 = torch.arange(0, C, 2, dtype=dtype)[None, :]
    ang = pos / torch.pow(torch.tensor(10000.0, dtype=dtype), i2 / C)
    pe = torch.zeros(T, C, dtype=dtype)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang)
    return pe


def apply_rope(x, theta):
    """x (B, H, T, hs); interleaved pairs (2i, 2i+1), freq_i = theta^(-2i/hs), angle = pos * freq_i."""
    T, hs = x.shape[-2], x.shape[-1]
    i = torch.arange(hs // 2, dtype=x.dtype)
    freq = torch.pow(torch.tensor(theta, dtype=x.dtype), -2.0 * i / hs)
    ang = torch.arange(T, dtype=x.dtype)[:, None] * freq[None, :]  # (T, hs/2)
    cos, sin = torch.cos(ang), torch.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


def shaw_index(Tq, Tk, k):
    """R[i, j] = clip(j - i, -k, k) + k."""
    rel = torch.arange(Tk)[None, :] - torch.arange(Tq)[:, None]
    return rel.clamp(-k, k) + k


# ----------------------------------------------------------------------------
# Modules

class BatchNormRows(nn.Module):
    """torch.nn.BatchNorm1d(C, eps, momentum=0.1) over the B*T rows, with the shift only if bias
    (nn.BatchNorm1d cannot drop just the bias, so this calls F.batch_norm, its functional form;
    checked against nn.BatchNorm1d in run_checks). No num_batches_tracked (momentum is fixed)."""

    def __init__(self, C, eps, bias):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(C))
        self.bias = nn.Parameter(torch.zeros(C)) if bias else None
        self.register_buffer("running_mean", torch.zeros(C))
        self.register_buffer("running_var", torch.ones(C))

    def forward(self, x):
        C = x.shape[-1]
        y = F.batch_norm(x.reshape(-1, C), self.running_mean, self.running_var, self.weight, self.bias,
                         training=self.training, momentum=0.1, eps=self.eps)
        return y.view_as(x)


def option(cfg, key):
    """An OPTIONAL_DEFAULTS field: its value, or the default when the variant does not set it."""
    return cfg.get(key, OPTIONAL_DEFAULTS[key])


def make_norm(cfg):
    C, eps = cfg["n_embd"], cfg["norm_eps"]
    if cfg["norm"] == "layernorm":
        return nn.LayerNorm(C, eps=eps, bias=cfg["bias"])
    if cfg["norm"] == "rmsnorm":
        return nn.RMSNorm(C, eps=eps)
    return BatchNormRows(C, eps, cfg["bias"])


def activation(cfg, a):
    act, F_ = cfg["activation"], cfg["ffn_hidden"]
    if act == "gelu_tanh":
        return F.gelu(a, approximate="tanh")
    if act == "gelu":
        return F.gelu(a, approximate="none")
    if act == "relu":
        return F.relu(a)
    if act == "leaky_relu":
        return F.leaky_relu(a, negative_slope=cfg["leaky_slope"])
    if act == "silu":
        return F.silu(a)
    return F.silu(a[..., :F_]) * a[..., F_:]  # swiglu: [gate | up]


def dropout(x, p, training):
    return F.dropout(x, p, training) if (p > 0 and training) else x


def attention_scores(score, q, k, log_tau=None, score_v=None):
    """q (B,H,Tq,hs), k (B,H,Tk,hs) -> (B,H,Tq,Tk)."""
    hs = q.shape[-1]
    if score == "scaled":
        return (q @ k.transpose(-2, -1)) / math.sqrt(hs)
    if score == "unscaled":
        return q @ k.transpose(-2, -1)
    if score == "cosine":
        qn = q / q.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        kn = k / k.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return torch.exp(log_tau)[None, :, None, None] * (qn @ kn.transpose(-2, -1))
    # additive: sum_d score_v[h, d] * tanh(q_d + k_d)
    t = torch.tanh(q[:, :, :, None, :] + k[:, :, None, :, :])  # (B,H,Tq,Tk,hs)
    return torch.einsum("bhijd,hd->bhij", t, score_v)


def masked_softmax(s, visible):
    """softmax over keys where visible; rows with no visible key give p = 0 (output 0)."""
    any_vis = visible.any(dim=-1, keepdim=True)
    s = s.masked_fill(~visible, float("-inf"))
    s = torch.where(any_vis, s, torch.zeros_like(s))
    p = torch.softmax(s, dim=-1)
    return torch.where(any_vis, p, torch.zeros_like(p))


CHECK_NAIVE = False  # set by run_checks: every attention call is compared with naive_attention


class SelfAttention(nn.Module):
    def __init__(self, cfg, causal):
        super().__init__()
        C, NH, NKV = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"]
        hs = C // NH
        self.cfg, self.causal, self.NH, self.NKV, self.hs = cfg, causal, NH, NKV, hs
        self.c_attn = nn.Linear(C, (NH + 2 * NKV) * hs, bias=cfg["bias"])
        self.c_proj = nn.Linear(NH * hs, C, bias=cfg["bias"])
        if cfg["position"] == "shaw":
            self.rel_k = nn.Parameter(torch.zeros(2 * cfg["shaw_k"] + 1, hs))
            if cfg["shaw_values"]:
                self.rel_v = nn.Parameter(torch.zeros(2 * cfg["shaw_k"] + 1, hs))
        if cfg["score"] == "cosine":
            self.log_tau = nn.Parameter(torch.zeros(NH))
        if cfg["score"] == "additive":
            self.score_v = nn.Parameter(torch.zeros(NH, hs))

    def forward(self, x, key_mask, pos_bias, ctx):
        cfg, NH, NKV, hs = self.cfg, self.NH, self.NKV, self.hs
        B, T, _ = x.shape
        qkv = self.c_attn(x)
        q = qkv[..., : NH * hs].view(B, T, NH, hs).transpose(1, 2)
        k = qkv[..., NH * hs: (NH + NKV) * hs].view(B, T, NKV, hs).transpose(1, 2)
        v = qkv[..., (NH + NKV) * hs:].view(B, T, NKV, hs).transpose(1, 2)
        if cfg["position"] == "rope":
            q, k = apply_rope(q, cfg["rope_theta"]), apply_rope(k, cfg["rope_theta"])
        rep = NH // NKV
        ke, ve = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # head h -> kv h // rep
        s = attention_scores(cfg["score"], q, ke, getattr(self, "log_tau", None), getattr(self, "score_v", None))
        if cfg["position"] == "shaw":
            R = shaw_index(T, T, cfg["shaw_k"])
            c = 1.0 / math.sqrt(hs) if cfg["score"] == "scaled" else 1.0
            s = s + c * torch.einsum("bhid,ijd->bhij", q, self.rel_k[R])
        if pos_bias is not None:
            s = s + pos_bias[None]
        visible = torch.ones(B, 1, T, T, dtype=torch.bool)
        if self.causal:
            visible = visible & torch.tril(torch.ones(T, T, dtype=torch.bool))
        if key_mask is not None:
            visible = visible & key_mask[:, None, None, :]
        p = masked_softmax(s, visible)
        p = dropout(p, cfg["attn_dropout"], self.training)
        y = p @ ve
        if cfg["position"] == "shaw" and cfg["shaw_values"]:
            y = y + torch.einsum("bhij,ijd->bhid", p, self.rel_v[R])
        if CHECK_NAIVE:
            ref = naive_attention(cfg, q, k, v, self.causal, key_mask, self, ctx)
            assert torch.allclose(y, ref, rtol=1e-10, atol=1e-12), (y - ref).abs().max()
        y = y.transpose(1, 2).reshape(B, T, NH * hs)
        return self.c_proj(y)


class CrossAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, NH, NKV = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"]
        hs = C // NH
        self.cfg, self.NH, self.NKV, self.hs = cfg, NH, NKV, hs
        self.c_q = nn.Linear(C, NH * hs, bias=cfg["bias"])
        self.c_kv = nn.Linear(C, 2 * NKV * hs, bias=cfg["bias"])
        self.c_proj = nn.Linear(NH * hs, C, bias=cfg["bias"])
        if cfg["score"] == "cosine":
            self.log_tau = nn.Parameter(torch.zeros(NH))
        if cfg["score"] == "additive":
            self.score_v = nn.Parameter(torch.zeros(NH, hs))

    def forward(self, x, enc, enc_mask):
        cfg, NH, NKV, hs = self.cfg, self.NH, self.NKV, self.hs
        B, T, _ = x.shape
        S = enc.shape[1]
        q = self.c_q(x).view(B, T, NH, hs).transpose(1, 2)
        kv = self.c_kv(enc)
        k = kv[..., : NKV * hs].view(B, S, NKV, hs).transpose(1, 2)
        v = kv[..., NKV * hs:].view(B, S, NKV, hs).transpose(1, 2)
        rep = NH // NKV
        ke, ve = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        s = attention_scores(cfg["score"], q, ke, getattr(self, "log_tau", None), getattr(self, "score_v", None))
        visible = enc_mask[:, None, None, :].expand(B, 1, T, S)
        p = masked_softmax(s, visible)
        p = dropout(p, cfg["attn_dropout"], self.training)
        y = p @ ve
        if CHECK_NAIVE:
            ref = naive_attention(cfg, q, k, v, False, enc_mask, self, None)
            assert torch.allclose(y, ref, rtol=1e-10, atol=1e-12), (y - ref).abs().max()
        y = y.transpose(1, 2).reshape(B, T, NH * hs)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, Fh = cfg["n_embd"], cfg["ffn_hidden"]
        self.cfg = cfg
        self.c_fc = nn.Linear(C, (2 * Fh if cfg["activation"] == "swiglu" else Fh), bias=cfg["bias"])
        self.c_proj = nn.Linear(Fh, C, bias=cfg["bias"])

    def forward(self, x):
        return self.c_proj(activation(self.cfg, self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg, causal, cross):
        super().__init__()
        self.cfg, self.cross = cfg, cross
        self.ln_1 = make_norm(cfg)
        self.attn = SelfAttention(cfg, causal)
        if cross:
            self.ln_cross = make_norm(cfg)
            self.cross_attn = CrossAttention(cfg)
        self.ln_2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, key_mask, pos_bias, ctx, enc=None, enc_mask=None):
        pd, tr = self.cfg["dropout"], self.training
        if self.cfg["norm_position"] == "pre":
            h = x + dropout(self.attn(self.ln_1(x), key_mask, pos_bias, ctx), pd, tr)
            if self.cross:
                h = h + dropout(self.cross_attn(self.ln_cross(h), enc, enc_mask), pd, tr)
            return h + dropout(self.mlp(self.ln_2(h)), pd, tr)
        h = self.ln_1(x + dropout(self.attn(x, key_mask, pos_bias, ctx), pd, tr))
        if self.cross:
            h = self.ln_cross(h + dropout(self.cross_attn(h, enc, enc_mask), pd, tr))
        return self.ln_2(h + dropout(self.mlp(h), pd, tr))


class Stack(nn.Module):
    """One transformer stack: embeddings, position machinery, blocks, optional final norm."""

    def __init__(self, cfg, n_layer, causal, cross, own_wte=True):
        super().__init__()
        C, NH = cfg["n_embd"], cfg["n_head"]
        self.cfg, self.causal = cfg, causal
        if own_wte:
            self.wte = nn.Embedding(cfg["vocab_size"], C)
        if cfg["position"] == "learned":
            self.wpe = nn.Embedding(cfg["block_size"], C)
        if cfg["position"] == "t5":
            self.rel_bias = nn.Embedding(cfg["t5_buckets"], NH)  # one table for all layers
        if option(cfg, "embedding_norm"):
            self.ln_emb = make_norm(cfg)
        self.h = nn.ModuleList([Block(cfg, causal, cross) for _ in range(n_layer)])
        if cfg["final_norm"]:
            self.ln_f = make_norm(cfg)

    def position_bias(self, T, dtype):
        """(NH, T, T) additive score bias, or None (alibi, t5)."""
        cfg = self.cfg
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        if cfg["position"] == "alibi":
            slopes = torch.tensor(alibi_slopes(cfg["n_head"]), dtype=dtype)
            return -slopes[:, None, None] * (i - j).abs().to(dtype)[None]
        if cfg["position"] == "t5":
            bucket = t5_relative_position_bucket(j - i, not self.causal, cfg["t5_buckets"], cfg["t5_max_distance"])
            return self.rel_bias.weight[bucket].permute(2, 0, 1)  # (T, T, NH) -> (NH, T, T)
        return None

    def forward(self, idx, key_mask=None, enc=None, enc_mask=None, wte_weight=None):
        cfg = self.cfg
        B, T = idx.shape
        assert T <= cfg["block_size"]
        W = self.wte.weight if wte_weight is None else wte_weight
        x = W[idx]
        if cfg["scale_embeddings"]:
            x = x * math.sqrt(cfg["n_embd"])
        if cfg["position"] == "learned":
            x = x + self.wpe.weight[:T][None]
        if cfg["position"] == "sinusoidal":
            x = x + sinusoidal_table(T, cfg["n_embd"], x.dtype)[None]
        if option(cfg, "embedding_norm"):
            x = self.ln_emb(x)
        x = dropout(x, cfg["dropout"], self.training)
        pos_bias = self.position_bias(T, x.dtype)
        ctx = dict(bidirectional=not self.causal,
                   t5_table=self.rel_bias.weight if cfg["position"] == "t5" else None)
        for block in self.h:
            x = block(x, key_mask, pos_bias, ctx, enc, enc_mask)
        return self.ln_f(x) if cfg["final_norm"] else x


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        C, V = cfg["n_embd"], cfg["vocab_size"]
        arch = cfg["arch"]
        if arch == "decoder":
            self.transformer = Stack(cfg, cfg["n_layer"], causal=True, cross=False)
        elif arch == "encoder":
            self.transformer = Stack(cfg, cfg["n_layer"], causal=False, cross=False)
            self.classifier = nn.Linear(C, cfg["num_classes"], bias=True)
        else:
            self.encoder = Stack(cfg, cfg["n_layer"], causal=False, cross=False)
            self.decoder = Stack(cfg, cfg["n_dec_layer"], causal=True, cross=True,
                                 own_wte=not cfg["share_embeddings"])
        if arch != "encoder" and not cfg["tie_embeddings"]:
            self.lm_head = nn.Linear(C, V, bias=False)

    def param_names(self):
        """state_dict names: trained parameters and buffers."""
        return list(self.state_dict().keys())

    def trained_names(self):
        return [n for n, _ in self.named_parameters()]

    def buffer_names(self):
        return [n for n, _ in self.named_buffers()]

    def decoder_wte(self):
        if self.cfg["arch"] == "decoder":
            return self.transformer.wte.weight
        return self.encoder.wte.weight if self.cfg["share_embeddings"] else self.decoder.wte.weight

    def lm_head_weight(self):
        return self.decoder_wte() if self.cfg["tie_embeddings"] else self.lm_head.weight

    def forward(self, batch):
        cfg = self.cfg
        if cfg["arch"] == "decoder":
            H = self.transformer(batch["idx"])
            logits = H @ self.lm_head_weight().t()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1), ignore_index=-1)
        elif cfg["arch"] == "encoder":
            mask = batch["mask"].bool()
            H = self.transformer(batch["idx"], key_mask=mask)
            if cfg["pooling"] == "cls":
                pooled = H[:, 0]
            else:
                m = mask.to(H.dtype)[..., None]
                pooled = (H * m).sum(1) / m.sum(1)
            logits = self.classifier(pooled)
            loss = F.cross_entropy(logits, batch["labels"])
        else:
            src_mask = batch["src_mask"].bool()
            enc = self.encoder(batch["src"], key_mask=src_mask)
            wte = self.encoder.wte.weight if cfg["share_embeddings"] else None
            H = self.decoder(batch["tgt_in"], enc=enc, enc_mask=src_mask, wte_weight=wte)
            logits = H @ self.lm_head_weight().t()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["tgt_out"].reshape(-1), ignore_index=-1)
        return logits, loss


# ----------------------------------------------------------------------------
# Independent re-statements used by the self-checks

def spec_names(cfg):
    """The spec's parameter/buffer list, written out independently of the modules."""
    names = []
    norm_fields = ["weight"] + (["bias"] if cfg["bias"] and cfg["norm"] != "rmsnorm" else [])
    norm_fields += ["running_mean", "running_var"] if cfg["norm"] == "batchnorm" else []
    lin = lambda p: [p + ".weight"] + ([p + ".bias"] if cfg["bias"] else [])

    def stack(P, n_layer, cross, own_wte):
        out = [f"{P}.wte.weight"] if own_wte else []
        if cfg["position"] == "learned":
            out.append(f"{P}.wpe.weight")
        if cfg["position"] == "t5":
            out.append(f"{P}.rel_bias.weight")
        if option(cfg, "embedding_norm"):
            out += [f"{P}.ln_emb." + f for f in norm_fields]
        for i in range(n_layer):
            L = f"{P}.h.{i}."
            out += [L + "ln_1." + f for f in norm_fields]
            out += lin(L + "attn.c_attn") + lin(L + "attn.c_proj")
            if cfg["position"] == "shaw":
                out.append(L + "attn.rel_k")
                if cfg["shaw_values"]:
                    out.append(L + "attn.rel_v")
            if cfg["score"] == "cosine":
                out.append(L + "attn.log_tau")
            if cfg["score"] == "additive":
                out.append(L + "attn.score_v")
            if cross:
                out += [L + "ln_cross." + f for f in norm_fields]
                out += lin(L + "cross_attn.c_q") + lin(L + "cross_attn.c_kv") + lin(L + "cross_attn.c_proj")
                if cfg["score"] == "cosine":
                    out.append(L + "cross_attn.log_tau")
                if cfg["score"] == "additive":
                    out.append(L + "cross_attn.score_v")
            out += [L + "ln_2." + f for f in norm_fields]
            out += lin(L + "mlp.c_fc") + lin(L + "mlp.c_proj")
        if cfg["final_norm"]:
            out += [f"{P}.ln_f." + f for f in norm_fields]
        return out

    if cfg["arch"] == "encoder_decoder":
        names += stack("encoder", cfg["n_layer"], False, True)
        names += stack("decoder", cfg["n_dec_layer"], True, not cfg["share_embeddings"])
    else:
        names += stack("transformer", cfg["n_layer"], False, True)
    if cfg["arch"] == "encoder":
        names += ["classifier.weight", "classifier.bias"]
    elif not cfg["tie_embeddings"]:
        names.append("lm_head.weight")
    return names


def t5_bucket_scalar(rel, bidirectional, num_buckets, max_distance):
    """Scalar float64 restatement of the T5 bucketing (for the check)."""
    ret = 0
    n = -rel
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            ret += num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    val = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(val, num_buckets - 1)


def naive_attention(cfg, q, k, v, causal, key_mask, mod, ctx):
    """Per-(b, h, i, j) loop straight from the spec text. q (B,NH,Tq,hs), k/v (B,NKV,Tk,hs) after
    RoPE, before the kv-head expansion. Returns (B,NH,Tq,hs) = per-head output before c_proj."""
    B, NH, Tq, hs = q.shape
    NKV, Tk = k.shape[1], k.shape[2]
    group = NH // NKV
    score, pos = cfg["score"], (cfg["position"] if ctx is not None else "none")
    slopes = alibi_slopes(NH)
    K = cfg["shaw_k"]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(NH):
            g = h // group
            for i in range(Tq):
                js = [j for j in range(Tk) if (not causal or j <= i) and (key_mask is None or bool(key_mask[b, j]))]
                if not js:
                    continue
                ss = []
                for j in js:
                    qi, kj = q[b, h, i], k[b, g, j]
                    if score == "scaled":
                        s = torch.dot(qi, kj) / math.sqrt(hs)
                    elif score == "unscaled":
                        s = torch.dot(qi, kj)
                    elif score == "cosine":
                        s = torch.exp(mod.log_tau[h]) * torch.dot(qi / max(qi.norm(), 1e-12), kj / max(kj.norm(), 1e-12))
                    else:
                        s = (mod.score_v[h] * torch.tanh(qi + kj)).sum()
                    if pos == "alibi":
                        s = s - slopes[h] * abs(i - j)
                    elif pos == "t5":
                        bk = t5_bucket_scalar(j - i, ctx["bidirectional"], cfg["t5_buckets"], cfg["t5_max_distance"])
                        s = s + ctx["t5_table"][bk, h]
                    elif pos == "shaw":
                        c = 1.0 / math.sqrt(hs) if score == "scaled" else 1.0
                        s = s + c * torch.dot(qi, mod.rel_k[min(max(j - i, -K), K) + K])
                    ss.append(s)
                ss = torch.stack(ss)
                e = torch.exp(ss - ss.max())
                p = e / e.sum()
                acc = torch.zeros(hs, dtype=q.dtype)
                for pj, j in zip(p, js):
                    acc = acc + pj * v[b, g, j]
                    if pos == "shaw" and cfg["shaw_values"]:
                        acc = acc + pj * mod.rel_v[min(max(j - i, -K), K) + K]
                out[b, h, i] = acc
    return out


# ----------------------------------------------------------------------------
# Variants, init, inputs

BASE = dict(vocab_size=11, n_embd=16, n_head=4, block_size=8, n_layer=2, ffn_hidden=24,
            shaw_k=2, t5_buckets=6, t5_max_distance=10)
ENC = dict(arch="encoder", num_classes=3)
ENCDEC = dict(arch="encoder_decoder")

VARIANTS = {
    "dec_default": {},
    "dec_pos_none": dict(position="none"),
    "dec_sinusoidal": dict(position="sinusoidal", scale_embeddings=True),
    "dec_shaw": dict(position="shaw", shaw_values=True),
    "dec_shaw_keys": dict(position="shaw", shaw_values=False),
    "dec_shaw_unscaled": dict(position="shaw", score="unscaled"),
    "dec_t5": dict(position="t5"),
    "dec_rope": dict(position="rope"),
    "dec_alibi": dict(position="alibi"),
    "dec_unscaled": dict(score="unscaled"),
    "dec_cosine": dict(score="cosine"),
    "dec_additive": dict(score="additive"),
    "dec_mqa": dict(n_kv_head=1),
    "dec_gqa": dict(n_kv_head=2),
    "dec_rmsnorm": dict(norm="rmsnorm"),
    "dec_batchnorm": dict(norm="batchnorm"),
    "dec_postnorm": dict(norm_position="post", final_norm=False),
    "dec_relu": dict(activation="relu"),
    "dec_leaky_relu": dict(activation="leaky_relu", leaky_slope=0.1),
    "dec_gelu_erf": dict(activation="gelu"),
    "dec_silu": dict(activation="silu"),
    "dec_swiglu": dict(activation="swiglu"),
    "dec_nobias_untied": dict(bias=False, tie_embeddings=False),
    "dec_llama": dict(norm="rmsnorm", position="rope", activation="swiglu", n_kv_head=2, bias=False,
                      tie_embeddings=False),
    "enc_cls": dict(ENC, pooling="cls"),
    "enc_mean": dict(ENC, pooling="mean"),
    "enc_alibi": dict(ENC, position="alibi"),
    "enc_t5": dict(ENC, position="t5"),
    "enc_shaw": dict(ENC, position="shaw"),
    "enc_rope_mean": dict(ENC, position="rope", pooling="mean"),
    "enc_postnorm_batchnorm": dict(ENC, norm_position="post", norm="batchnorm"),
    # BERT's layout (src/io/hf_bert.rs): post-norm, no final norm, a LayerNorm on the embedding
    # sum, exact GELU; mean pooling as sentence-transformers does. eps 1e-3 rather than the
    # default, so that a norm ignoring model.norm_eps shows in the numbers.
    "enc_bert": dict(ENC, norm_position="post", final_norm=False, embedding_norm=True, activation="gelu",
                     pooling="mean", norm_eps=1e-3),
    "encdec_default": dict(ENCDEC),
    "encdec_rope_rmsnorm_swiglu_gqa": dict(ENCDEC, position="rope", norm="rmsnorm", activation="swiglu",
                                           n_kv_head=2, bias=False, share_embeddings=False,
                                           tie_embeddings=False),
    "encdec_cosine_sinusoidal": dict(ENCDEC, score="cosine", position="sinusoidal", scale_embeddings=True),
    "encdec_t5": dict(ENCDEC, position="t5"),
    "encdec_postnorm_batchnorm_additive": dict(ENCDEC, norm_position="post", norm="batchnorm", score="additive",
                                               share_embeddings=False, tie_embeddings=True),
}


def variant_config(name):
    return full_config(**dict(BASE, **VARIANTS[name]))


def init_fixture_weights(model, gen):
    """Drawn in float32 (state_dict order) so the stored f32 values are exactly the ones used.
    Embeddings / lm_head: N(0, 0.3); Linear weights: N(0, 1/fan_in); norm gains 1 + N(0, 0.1);
    biases N(0, 0.1); rel_bias / rel_k / rel_v / score_v N(0, 0.5); log_tau log 3 + N(0, 0.1);
    running_mean N(0, 0.1); running_var 1 + U(0, 0.2)."""
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    with torch.no_grad():
        for name in model.param_names():
            p = tensors[name]
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                p.copy_(1.0 + 0.2 * torch.rand(p.shape, generator=gen, dtype=torch.float32))
                continue
            z = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if leaf == "running_mean":
                val = 0.1 * z
            elif leaf == "bias":
                val = 0.1 * z
            elif ".ln_" in name:
                val = 1.0 + 0.1 * z
            elif leaf == "log_tau":
                val = math.log(3.0) + 0.1 * z
            elif leaf in ("rel_k", "rel_v", "score_v") or ".rel_bias." in name:
                val = 0.5 * z
            elif ".wte." in name or ".wpe." in name or name == "lm_head.weight":
                val = 0.3 * z
            else:  # Linear weight (out, in)
                val = z / math.sqrt(p.shape[1])
            p.copy_(val)


def make_batch(cfg, gen):
    V, B = cfg["vocab_size"], 2
    if cfg["arch"] == "decoder":
        T = 7
        idx = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
        targets = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
        targets.view(-1)[torch.randperm(B * T, generator=gen)[:3]] = -1
        return dict(idx=idx, targets=targets)
    if cfg["arch"] == "encoder":
        T = 7
        idx = torch.randint(1, V, (B, T), generator=gen, dtype=torch.int64)
        idx[:, 0] = 0  # CLS
        mask = torch.ones(B, T, dtype=torch.int64)
        mask[1, 4:] = 0  # sequence 1: length 4, right padded (pad positions keep random tokens)
        labels = torch.randint(0, cfg["num_classes"], (B,), generator=gen, dtype=torch.int64)
        return dict(idx=idx, mask=mask, labels=labels)
    S, T = 6, 5
    src = torch.randint(1, V, (B, S), generator=gen, dtype=torch.int64)
    src_mask = torch.ones(B, S, dtype=torch.int64)
    src_mask[1, 4:] = 0  # source 1: length 4
    y = torch.randint(1, V, (B, T + 1), generator=gen, dtype=torch.int64)
    y[:, 0] = 0  # BOS
    tgt_in, tgt_out = y[:, :-1].clone(), y[:, 1:].clone()
    tgt_out[1, 3:] = -1  # target 1: 3 tokens, the rest padding (tgt_in keeps tokens there)
    return dict(src=src, src_mask=src_mask, tgt_in=tgt_in, tgt_out=tgt_out)


def build(name):
    cfg = variant_config(name)
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    model = Transformer(cfg)  # float32 construction
    init_fixture_weights(model, gen)
    model = model.double().train()
    batch = make_batch(cfg, gen)
    return cfg, model, batch


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def restore(model, state):
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(state[k])


# ----------------------------------------------------------------------------
# Self-checks

def close(a, b, tol=1e-10):
    err = (a - b).abs().max().item()
    assert err <= tol * (1 + b.abs().max().item()), err
    return err


def check_rope():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 4, generator=g, dtype=torch.float64)
    theta = 10000.0
    hs = x.shape[-1]
    freq = theta ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    ang = torch.outer(torch.arange(7, dtype=torch.float64), freq)
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], hs // 2, 2).contiguous())
    ref = torch.view_as_real(xc * torch.polar(torch.ones_like(ang), ang)).flatten(-2)
    close(apply_rope(x, theta), ref, 1e-13)


def check_t5_and_alibi():
    rel = torch.arange(-20, 21)
    for bidir in (True, False):
        for nb, md in ((6, 10), (32, 128), (8, 16)):
            got = t5_relative_position_bucket(rel, bidir, nb, md).tolist()
            want = [t5_bucket_scalar(r, bidir, nb, md) for r in rel.tolist()]
            assert got == want, (bidir, nb, md, got, want)
    # a few literal values (HF semantics): bidirectional, 32 buckets, 128: j - i = +1 -> 17, -1 -> 1
    assert t5_relative_position_bucket(torch.tensor([1, -1, 0, -20, 200]), True, 32, 128).tolist() == [17, 1, 0, 10, 31]
    assert t5_relative_position_bucket(torch.tensor([1, 0, -1, -20, -200]), False, 32, 128).tolist() == [0, 0, 1, 17, 31]
    assert alibi_slopes(4) == [0.25, 0.0625, 0.015625, 0.00390625]
    assert alibi_slopes(8) == [2.0 ** -k for k in range(1, 9)]
    s6 = alibi_slopes(6)
    assert s6 == alibi_slopes(4) + [0.5, 0.125], s6


def nanogpt_functional(sd, cfg, idx, targets):
    """Straight nanoGPT forward from a state dict (pre-LN, learned positions, tied head, tanh GELU)."""
    C, NH = cfg["n_embd"], cfg["n_head"]
    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        u = F.layer_norm(x, (C,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
        q, k, v = F.linear(u, sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"]).split(C, dim=2)
        q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, sd[p + "attn.c_proj.weight"], sd[p + "attn.c_proj.bias"])
        u = F.layer_norm(x, (C,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
        a = F.gelu(F.linear(u, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]), approximate="tanh")
        x = x + F.linear(a, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"], 1e-5)
    logits = x @ sd["transformer.wte.weight"].t()
    return logits, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)


def check_against_make_fixtures_gpt():
    """With ffn_hidden = 4C the default decoder is make_fixtures.GPT: same names, same logits."""
    from make_fixtures import GPT
    cfg = full_config(**dict(BASE, ffn_hidden=64))
    gen = torch.Generator().manual_seed(7)
    model = Transformer(cfg)
    init_fixture_weights(model, gen)
    model = model.double()
    batch = make_batch(cfg, gen)
    gpt = GPT(dict(cfg, tie_embeddings=True)).double()
    sd = dict(model.state_dict())
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    gpt.load_state_dict(sd, strict=True)
    a, la = model(batch)
    b, lb = gpt(batch["idx"], batch["targets"])
    close(a, b)
    close(la, lb)


def check_torch_transformer_layers():
    """Encoder / encoder-decoder (no position, MHA, layernorm, relu or gelu) against
    nn.TransformerEncoderLayer / nn.TransformerDecoderLayer (post- and pre-norm)."""
    for norm_position, act in (("post", "relu"), ("pre", "gelu")):
        for arch in ("encoder", "encoder_decoder"):
            cfg = full_config(**dict(BASE, arch=arch, num_classes=3, position="none", activation=act,
                                     norm_position=norm_position, final_norm=(norm_position == "pre")))
            gen = torch.Generator().manual_seed(11)
            model = Transformer(cfg)
            init_fixture_weights(model, gen)
            model = model.double().train()
            batch = make_batch(cfg, gen)
            C, NH, Fh = cfg["n_embd"], cfg["n_head"], cfg["ffn_hidden"]
            sd = model.state_dict()

            def common(layer, p):
                layer.linear1.weight.copy_(sd[p + "mlp.c_fc.weight"])
                layer.linear1.bias.copy_(sd[p + "mlp.c_fc.bias"])
                layer.linear2.weight.copy_(sd[p + "mlp.c_proj.weight"])
                layer.linear2.bias.copy_(sd[p + "mlp.c_proj.bias"])
                layer.self_attn.in_proj_weight.copy_(sd[p + "attn.c_attn.weight"])
                layer.self_attn.in_proj_bias.copy_(sd[p + "attn.c_attn.bias"])
                layer.self_attn.out_proj.weight.copy_(sd[p + "attn.c_proj.weight"])
                layer.self_attn.out_proj.bias.copy_(sd[p + "attn.c_proj.bias"])
                layer.norm1.weight.copy_(sd[p + "ln_1.weight"])
                layer.norm1.bias.copy_(sd[p + "ln_1.bias"])

            def enc_layer(p):
                layer = nn.TransformerEncoderLayer(C, NH, Fh, dropout=0.0, activation=act, layer_norm_eps=1e-5,
                                                   batch_first=True, norm_first=(norm_position == "pre")).double()
                with torch.no_grad():
                    common(layer, p)
                    layer.norm2.weight.copy_(sd[p + "ln_2.weight"])
                    layer.norm2.bias.copy_(sd[p + "ln_2.bias"])
                return layer

            def run_encoder(P, idx, mask):
                x = sd[P + ".wte.weight"][idx]
                for i in range(cfg["n_layer"]):
                    x = enc_layer(f"{P}.h.{i}.").train()(x, src_key_padding_mask=~mask)
                if cfg["final_norm"]:
                    x = F.layer_norm(x, (C,), sd[P + ".ln_f.weight"], sd[P + ".ln_f.bias"], 1e-5)
                return x

            with torch.no_grad():
                logits, _ = model(batch)
                if arch == "encoder":
                    H = run_encoder("transformer", batch["idx"], batch["mask"].bool())
                    ref = F.linear(H[:, 0], sd["classifier.weight"], sd["classifier.bias"])
                else:
                    src_mask = batch["src_mask"].bool()
                    enc = run_encoder("encoder", batch["src"], src_mask)
                    x = sd["encoder.wte.weight"][batch["tgt_in"]]
                    T = x.shape[1]
                    causal = ~torch.tril(torch.ones(T, T, dtype=torch.bool))
                    for i in range(cfg["n_dec_layer"]):
                        p = f"decoder.h.{i}."
                        layer = nn.TransformerDecoderLayer(C, NH, Fh, dropout=0.0, activation=act, layer_norm_eps=1e-5,
                                                           batch_first=True,
                                                           norm_first=(norm_position == "pre")).double().train()
                        common(layer, p)
                        mha = layer.multihead_attn
                        mha.in_proj_weight.copy_(torch.cat([sd[p + "cross_attn.c_q.weight"], sd[p + "cross_attn.c_kv.weight"]]))
                        mha.in_proj_bias.copy_(torch.cat([sd[p + "cross_attn.c_q.bias"], sd[p + "cross_attn.c_kv.bias"]]))
                        mha.out_proj.weight.copy_(sd[p + "cross_attn.c_proj.weight"])
                        mha.out_proj.bias.copy_(sd[p + "cross_attn.c_proj.bias"])
                        layer.norm2.weight.copy_(sd[p + "ln_cross.weight"])
                        layer.norm2.bias.copy_(sd[p + "ln_cross.bias"])
                        layer.norm3.weight.copy_(sd[p + "ln_2.weight"])
                        layer.norm3.bias.copy_(sd[p + "ln_2.bias"])
                        x = layer(x, enc, tgt_mask=causal, memory_key_padding_mask=~src_mask)
                    if cfg["final_norm"]:
                        x = F.layer_norm(x, (C,), sd["decoder.ln_f.weight"], sd["decoder.ln_f.bias"], 1e-5)
                    ref = x @ sd["encoder.wte.weight"].t()
                close(logits, ref)


def check_batchnorm_module():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 16, generator=g, dtype=torch.float64)
    ours = BatchNormRows(16, 1e-5, True).double()
    ref = nn.BatchNorm1d(16, eps=1e-5, momentum=0.1).double()
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(1 + 0.1 * torch.arange(16.0))
            m.bias.copy_(0.05 * torch.arange(16.0))
            m.running_mean.copy_(0.01 * torch.arange(16.0))
            m.running_var.copy_(1 + 0.02 * torch.arange(16.0))
    close(ours(x), ref(x.reshape(-1, 16)).view_as(x))
    close(ours.running_mean, ref.running_mean)
    close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    close(ours(x), ref(x.reshape(-1, 16)).view_as(x))


def check_gqa_equals_expanded_mha(name, model, batch, state):
    """A GQA/MQA model equals the MHA model whose k/v heads are duplicated per query group."""
    cfg = model.cfg
    NH, NKV, hs = cfg["n_head"], cfg["n_kv_head"], cfg["n_embd"] // cfg["n_head"]
    if NKV == NH:
        return
    mha = Transformer(dict(cfg, n_kv_head=NH)).double().train()
    rep = NH // NKV
    heads = torch.tensor([h // rep for h in range(NH)])

    def expand_kv(w, offset):  # rows [offset + g*hs, ...) for each kv head g -> NH heads
        return torch.cat([w[offset + g * hs: offset + (g + 1) * hs] for g in heads.tolist()])

    sd = {}
    for k, v in state.items():
        if k.endswith(("attn.c_attn.weight", "attn.c_attn.bias")) and ".cross_attn." not in k:
            q = v[: NH * hs]
            sd[k] = torch.cat([q, expand_kv(v, NH * hs), expand_kv(v, (NH + NKV) * hs)])
        elif k.endswith(("cross_attn.c_kv.weight", "cross_attn.c_kv.bias")):
            sd[k] = torch.cat([expand_kv(v, 0), expand_kv(v, NKV * hs)])
        else:
            sd[k] = v
    mha.load_state_dict(sd, strict=True)
    restore(model, state)
    with torch.no_grad():
        a, la = model(batch)
        b, lb = mha(batch)
    restore(model, state)
    close(a, b)
    close(la, lb)


def check_against_hf_bert(cfg, model, batch, state):
    """A BERT-shaped encoder (post-norm, embedding norm, no final norm) equals Hugging Face
    transformers' BertModel: its last hidden state, with the weights mapped as
    src/io/hf_bert.rs maps them (query/key/value = rows [0, C), [C, 2C), [2C, 3C) of c_attn;
    lmlab's wpe = position_embeddings + token_type_embeddings[0], all token types 0)."""
    from transformers import BertConfig, BertModel
    C, L = cfg["n_embd"], cfg["n_layer"]
    hc = BertConfig(vocab_size=cfg["vocab_size"], hidden_size=C, num_hidden_layers=L,
                    num_attention_heads=cfg["n_head"], intermediate_size=cfg["ffn_hidden"], hidden_act="gelu",
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    max_position_embeddings=cfg["block_size"], type_vocab_size=2, layer_norm_eps=cfg["norm_eps"],
                    position_embedding_type="absolute", attn_implementation="eager")
    bert = BertModel(hc, add_pooling_layer=False).double().eval()
    tte = torch.randn(2, C, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sd = {"embeddings.word_embeddings.weight": state["transformer.wte.weight"],
          "embeddings.position_embeddings.weight": state["transformer.wpe.weight"] - tte[0],
          "embeddings.token_type_embeddings.weight": tte,
          "embeddings.LayerNorm.weight": state["transformer.ln_emb.weight"],
          "embeddings.LayerNorm.bias": state["transformer.ln_emb.bias"]}
    for i in range(L):
        P, H = f"transformer.h.{i}.", f"encoder.layer.{i}."
        for part, w, b in zip(("query", "key", "value"), state[P + "attn.c_attn.weight"].split(C),
                              state[P + "attn.c_attn.bias"].split(C)):
            sd[H + f"attention.self.{part}.weight"], sd[H + f"attention.self.{part}.bias"] = w, b
        for hf, ours in (("attention.output.dense", "attn.c_proj"), ("attention.output.LayerNorm", "ln_1"),
                         ("intermediate.dense", "mlp.c_fc"), ("output.dense", "mlp.c_proj"),
                         ("output.LayerNorm", "ln_2")):
            sd[H + hf + ".weight"], sd[H + hf + ".bias"] = state[P + ours + ".weight"], state[P + ours + ".bias"]
    missing, unexpected = bert.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    restore(model, state)
    mask = batch["mask"].bool()
    with torch.no_grad():
        ours = model.transformer(batch["idx"], key_mask=mask)
        ref = bert(input_ids=batch["idx"], attention_mask=batch["mask"],
                   token_type_ids=torch.zeros_like(batch["idx"])).last_hidden_state
    close(ours, ref, 1e-12)


def finite_difference_check(model, batch, state, grads):
    """Central difference (float64, h = 1e-5) at the largest-|grad| entry of every trained tensor."""
    h = 1e-5
    params = dict(model.named_parameters())
    worst = 0.0
    with torch.no_grad():
        for n, p in params.items():
            g = grads[n]
            j = int(g.abs().flatten().argmax())
            flat = p.view(-1)
            old = flat[j].item()
            flat[j] = old + h
            restore_buffers(model, state)
            lp = model(batch)[1].item()
            flat[j] = old - h
            restore_buffers(model, state)
            lm = model(batch)[1].item()
            flat[j] = old
            fd = (lp - lm) / (2 * h)
            an = g.flatten()[j].item()
            err = abs(fd - an) / (abs(an) + 1e-3)
            assert err <= 1e-7, (n, j, fd, an)
            worst = max(worst, err)
    restore(model, state)
    return worst


def restore_buffers(model, state):
    for k, b in model.named_buffers():
        b.copy_(state[k])


def run_checks(name, cfg, model, batch, state, grads, logits):
    global CHECK_NAIVE
    got = model.param_names()
    want = spec_names(cfg)
    assert sorted(got) == sorted(want), (set(got) ^ set(want))
    assert sorted(model.buffer_names()) == sorted(n for n in want if n.endswith(("running_mean", "running_var")))
    # every attention call vs the naive loop
    restore(model, state)
    CHECK_NAIVE = True
    try:
        with torch.no_grad():
            l2, _ = model(batch)
    finally:
        CHECK_NAIVE = False
    close(l2, logits, 1e-13)
    if name == "dec_default":
        restore(model, state)
        a, la = nanogpt_functional(state, cfg, batch["idx"], batch["targets"])
        close(a, logits)
    check_gqa_equals_expanded_mha(name, model, batch, state)
    if name == "enc_bert":
        check_against_hf_bert(cfg, model, batch, state)
    worst = finite_difference_check(model, batch, state, grads)
    restore(model, state)
    return worst


# ----------------------------------------------------------------------------
# Fixture generation

def make_fixture(name, out_dir, checks):
    cfg, model, batch = build(name)
    state = snapshot(model)
    out = {"param." + n: f32(t) for n, t in state.items()}
    out.update(batch)

    model.train()
    logits, loss = model(batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    out["logits"], out["loss"] = f32(logits), f32(loss.reshape(1))
    for n, g in grads.items():
        out["grad." + n] = f32(g)
    model.zero_grad(set_to_none=True)
    assert torch.isfinite(logits).all() and all(torch.isfinite(g).all() for g in grads.values())
    if cfg["norm"] == "batchnorm":
        for n, b in model.named_buffers():
            out["buffer_after." + n] = f32(b)
            assert not torch.equal(b, state[n])
        model.eval()
        with torch.no_grad():
            logits_eval, _ = model(batch)
        out["logits_eval"] = f32(logits_eval)
        model.train()

    worst = None
    if checks:
        worst = run_checks(name, cfg, model, batch, state, grads, logits.detach())

    meta = {
        "lmlab_config": json.dumps(cfg, sort_keys=True),
        "variant": name,
        "generator": "scripts/make_variant_fixtures.py",
        "torch_version": torch.__version__,
    }
    path = os.path.join(out_dir, name + ".safetensors")
    save_deterministic({k: v.contiguous() for k, v in sorted(out.items())}, path, meta)
    V = logits.shape[-1]
    print(f"{name:36s} {os.path.getsize(path):6d} B  {len(out):3d} tensors  loss {loss.item():.5f} "
          f"(ln K {math.log(V):.3f})  logits std {logits.std().item():.3f}"
          + (f"  fd err {worst:.0e}" if worst is not None else ""))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures", "variants"))
    ap.add_argument("--only", nargs="*", help="variant names (default: all)")
    ap.add_argument("--no-checks", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out_dir = os.path.normpath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    print(f"torch {torch.__version__}")
    if not args.no_checks:
        check_rope()
        check_t5_and_alibi()
        check_batchnorm_module()
        check_against_make_fixtures_gpt()
        check_torch_transformer_layers()
        print("module-level checks passed (rope, t5 buckets, alibi slopes, batchnorm, make_fixtures.GPT, "
              "nn.Transformer{Encoder,Decoder}Layer)")
    names = args.only or list(VARIANTS)
    for n in names:
        assert n in VARIANTS, n
        make_fixture(n, out_dir, checks=not args.no_checks)
    total = sum(os.path.getsize(os.path.join(out_dir, n + ".safetensors")) for n in names)
    print(f"{len(names)} fixtures, {total} bytes")


if __name__ == "__main__":
    main()
