//! llama2.c checkpoints (`model.bin`, the legacy version-0 format of `export.py`) in and out.
//!
//! ```text
//! header: 7 × i32  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//!                  (vocab_size < 0: the classifier is not shared with the token embedding)
//! then f32, in this order (L = n_layers, C = dim, H = hidden_dim, hs = C / n_heads,
//! KV = n_kv_heads · hs, V = |vocab_size|, T = seq_len); every matrix is (out, in), row-major:
//!   token_embedding (V, C)
//!   rms_att (L, C)   wq (L, C, C)   wk (L, KV, C)   wv (L, KV, C)   wo (L, C, C)
//!   rms_ffn (L, C)   w1 (L, H, C)   w2 (L, C, H)    w3 (L, H, C)
//!   rms_final (C)
//!   freq_cis_real (T, hs/2)   freq_cis_imag (T, hs/2)     (RoPE tables; unused by run.c)
//!   wcls (V, C)                                          (only when unshared)
//! ```
//!
//! The model is lmlab's Llama configuration: decoder, pre-norm RMSNorm (ε = 1e-5, llama2.c's
//! constant), RoPE on interleaved pairs (2i, 2i+1) with θ = 10000 (llama2.c's `forward` and
//! lmlab's `rope_forward` rotate the same pairs by the same angle pos·θ^(−2i/hs), per head, on
//! q and k), SwiGLU with `ffn_hidden = H`, grouped-query attention (query head h reads kv head
//! h / (NH/NKV) in both), no biases, a final RMSNorm, and a tied classifier when shared.
//! Weight mapping (names under `transformer.h.{l}`):
//!
//! | llama2.c | lmlab |
//! |---|---|
//! | token_embedding | `transformer.wte.weight` |
//! | rms_att, rms_ffn | `ln_1.weight`, `ln_2.weight` |
//! | wq, wk, wv | `attn.c_attn.weight` rows `[0, C)`, `[C, C+KV)`, `[C+KV, C+2KV)` |
//! | wo | `attn.c_proj.weight` |
//! | w1 (gate, gets SiLU), w3 (up) | `mlp.c_fc.weight` rows `[0, H)`, `[H, 2H)` |
//! | w2 | `mlp.c_proj.weight` |
//! | rms_final | `transformer.ln_f.weight` |
//! | wcls | `lm_head.weight` (absent when tied) |
//!
//! No permutation is needed: the layouts agree. The RoPE tables are not used (lmlab computes
//! the angles), but they are kept so that writing a read file back gives the same bytes.

use super::atomic::write_file_atomic;
use crate::data::llama2c_tokenizer::Llama2cTokenizer;
use crate::data::Tokenizer;
use crate::model::transformer::{
    ActivationKind, Arch, ModelConfig, NormKind, NormPosition, Position, ScoreKind, Transformer,
};
use anyhow::{bail, ensure, Context, Result};
use std::ops::Range;
use std::path::Path;

const HEADER_BYTES: usize = 7 * 4;
/// llama2.c's RMSNorm epsilon and RoPE base, both hard-coded in run.c.
pub const NORM_EPS: f32 = 1e-5;
pub const ROPE_THETA: f32 = 10000.0;
/// The magic number "ak42" that opens the newer (version ≥ 1) export formats.
const MAGIC_V1: i32 = 0x616b_3432;

/// The header of a llama2.c checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Llama2cConfig {
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub seq_len: usize,
    /// The classifier is the token embedding (vocab_size stored positive).
    pub shared_classifier: bool,
}

impl Llama2cConfig {
    /// Parses and checks the 7-integer header.
    pub fn from_header(bytes: &[u8]) -> Result<Self> {
        ensure!(
            bytes.len() >= HEADER_BYTES,
            "the file has {} bytes, too short for the {HEADER_BYTES}-byte llama2.c header",
            bytes.len()
        );
        let h: Vec<i32> =
            bytes[..HEADER_BYTES].chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap())).collect();
        ensure!(
            h[0] != MAGIC_V1,
            "this is a llama2.c version-1+ file (magic \"ak42\"); only the legacy version-0 format is supported"
        );
        let names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads"];
        for (name, &v) in names.iter().zip(&h) {
            ensure!(v > 0, "bad llama2.c header: {name} = {v}, it must be positive");
        }
        ensure!(h[5] != 0 && h[5] != i32::MIN, "bad llama2.c header: vocab_size = {}, it must be non-zero", h[5]);
        ensure!(h[6] > 0, "bad llama2.c header: seq_len = {}, it must be positive", h[6]);
        let cfg = Llama2cConfig {
            dim: h[0] as usize,
            hidden_dim: h[1] as usize,
            n_layers: h[2] as usize,
            n_heads: h[3] as usize,
            n_kv_heads: h[4] as usize,
            vocab_size: h[5].unsigned_abs() as usize,
            seq_len: h[6] as usize,
            shared_classifier: h[5] > 0,
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        ensure!(
            self.dim.is_multiple_of(self.n_heads),
            "bad llama2.c header: n_heads = {} does not divide dim = {}",
            self.n_heads,
            self.dim
        );
        ensure!(
            self.n_heads.is_multiple_of(self.n_kv_heads),
            "bad llama2.c header: n_kv_heads = {} does not divide n_heads = {}",
            self.n_kv_heads,
            self.n_heads
        );
        ensure!(
            self.head_size().is_multiple_of(2),
            "bad llama2.c header: head size dim/n_heads = {} must be even for RoPE",
            self.head_size()
        );
        for (name, v) in [
            ("dim", self.dim),
            ("hidden_dim", self.hidden_dim),
            ("n_layers", self.n_layers),
            ("vocab_size", self.vocab_size),
            ("seq_len", self.seq_len),
        ] {
            ensure!(v > 0 && v <= i32::MAX as usize, "{name} = {v} does not fit a llama2.c header");
        }
        self.file_bytes().context("bad llama2.c header: the implied file size overflows")?;
        Ok(())
    }

    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_size()
    }

    /// Number of f32 values after the header, or None on overflow.
    fn floats(&self) -> Option<usize> {
        let (c, h, l, v, kv) = (self.dim, self.hidden_dim, self.n_layers, self.vocab_size, self.kv_dim());
        let per_layer = c
            .checked_mul(2)? // rms_att, rms_ffn
            .checked_add(c.checked_mul(c)?.checked_mul(2)?)? // wq, wo
            .checked_add(kv.checked_mul(c)?.checked_mul(2)?)? // wk, wv
            .checked_add(h.checked_mul(c)?.checked_mul(3)?)?; // w1, w2, w3
        let emb = v.checked_mul(c)?;
        let rope = self.seq_len.checked_mul(self.head_size())?;
        let cls = if self.shared_classifier { 0 } else { emb };
        l.checked_mul(per_layer)?.checked_add(emb)?.checked_add(c)?.checked_add(rope)?.checked_add(cls)
    }

    /// The exact size in bytes of a file with this header.
    pub fn file_bytes(&self) -> Option<usize> {
        self.floats()?.checked_mul(4)?.checked_add(HEADER_BYTES)
    }

    /// lmlab's model configuration for this checkpoint.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            arch: Arch::Decoder,
            vocab_size: self.vocab_size,
            block_size: self.seq_len,
            n_layer: self.n_layers,
            n_head: self.n_heads,
            n_kv_head: Some(self.n_kv_heads),
            n_embd: self.dim,
            ffn_hidden: Some(self.hidden_dim),
            activation: ActivationKind::Swiglu,
            norm: NormKind::Rmsnorm,
            norm_eps: NORM_EPS,
            norm_position: NormPosition::Pre,
            final_norm: true,
            position: Position::Rope,
            rope_theta: ROPE_THETA,
            score: ScoreKind::Scaled,
            dropout: 0.0,
            attn_dropout: Some(0.0),
            bias: false,
            tie_embeddings: self.shared_classifier,
            ..ModelConfig::default()
        }
    }

    /// The header for an lmlab model, or an error naming the first choice llama2.c's format
    /// cannot express.
    pub fn from_model_config(m: &ModelConfig) -> Result<Self> {
        check_llama_arch(m, "llama2.c's format")?;
        let need = |ok: bool, what: String| -> Result<()> {
            ensure!(ok, "llama2.c's format holds only Llama-architecture models: {what}");
            Ok(())
        };
        need(
            m.rope_theta == ROPE_THETA,
            format!("model.rope_theta is {}, llama2.c hard-codes {ROPE_THETA}", m.rope_theta),
        )?;
        need(m.norm_eps == NORM_EPS, format!("model.norm_eps is {:e}, llama2.c hard-codes {NORM_EPS:e}", m.norm_eps))?;
        let cfg = Llama2cConfig {
            dim: m.n_embd,
            hidden_dim: m.ffn(),
            n_layers: m.n_layer,
            n_heads: m.n_head,
            n_kv_heads: m.kv_heads(),
            vocab_size: m.vocab_size,
            seq_len: m.block_size,
            shared_classifier: m.tie_embeddings,
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn header_bytes(&self) -> [u8; HEADER_BYTES] {
        let v = self.vocab_size as i32;
        let h = [
            self.dim as i32,
            self.hidden_dim as i32,
            self.n_layers as i32,
            self.n_heads as i32,
            self.n_kv_heads as i32,
            if self.shared_classifier { v } else { -v },
            self.seq_len as i32,
        ];
        let mut out = [0u8; HEADER_BYTES];
        for (o, x) in out.chunks_exact_mut(4).zip(h) {
            o.copy_from_slice(&x.to_le_bytes());
        }
        out
    }
}

/// Checks that `m` is a Llama-architecture model (decoder, pre-norm RMSNorm, RoPE, SwiGLU, no
/// biases, a final norm, scaled dot-product scores, no embedding scaling or norm): what llama2.c's
/// format and GGUF's "llama" architecture hold. θ and ε are not checked (GGUF stores them,
/// llama2.c hard-codes them). The error starts with "`format` holds only Llama-architecture
/// models" and names the first setting that differs.
pub fn check_llama_arch(m: &ModelConfig, format: &str) -> Result<()> {
    let need = |ok: bool, what: String| -> Result<()> {
        ensure!(ok, "{format} holds only Llama-architecture models: {what}");
        Ok(())
    };
    need(m.arch == Arch::Decoder, format!("model.arch is {}, expected decoder", name(&m.arch)))?;
    need(m.norm == NormKind::Rmsnorm, format!("model.norm is {}, expected rmsnorm", name(&m.norm)))?;
    need(m.position == Position::Rope, format!("model.position is {}, expected rope", name(&m.position)))?;
    need(
        m.activation == ActivationKind::Swiglu,
        format!("model.activation is {}, expected swiglu", name(&m.activation)),
    )?;
    need(!m.bias, format!("model.bias is true, expected false ({format} has no biases)"))?;
    need(m.norm_position == NormPosition::Pre, "model.norm_position is post, expected pre".into())?;
    need(m.final_norm, "model.final_norm is false, expected true".into())?;
    need(m.score == ScoreKind::Scaled, format!("model.score is {}, expected scaled", name(&m.score)))?;
    need(!m.scale_embeddings, "model.scale_embeddings is true, expected false".into())?;
    need(!m.embedding_norm, "model.embedding_norm is true, expected false".into())?;
    need(
        m.heads_tile_embedding(),
        format!("{} heads of {} do not tile n_embd = {} (pruned heads)", m.n_head, m.head_size(), m.n_embd),
    )?;
    Ok(())
}

/// A config enum's name as written in TOML.
fn name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// A loaded llama2.c checkpoint.
pub struct Llama2cModel {
    pub config: Llama2cConfig,
    pub model: Transformer,
    /// The stored RoPE tables, freq_cis_real then freq_cis_imag ((T, hs/2) each), kept for
    /// byte-identical writing.
    pub rope_tables: Vec<f32>,
}

/// Reads a llama2.c `model.bin`; `max_batch` sizes the model's activation buffers.
pub fn read(path: &Path, max_batch: usize) -> Result<Llama2cModel> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read llama2.c checkpoint {}", path.display()))?;
    from_bytes(&bytes, max_batch).with_context(|| format!("llama2.c checkpoint {}", path.display()))
}

/// Parses llama2.c checkpoint bytes (the whole file).
pub fn from_bytes(bytes: &[u8], max_batch: usize) -> Result<Llama2cModel> {
    let cfg = Llama2cConfig::from_header(bytes)?;
    let want = cfg.file_bytes().expect("checked by from_header");
    if bytes.len() != want {
        bail!(
            "file size {} bytes does not match its header: dim {}, hidden_dim {}, n_layers {}, n_heads {}, \
             n_kv_heads {}, vocab_size {} ({}), seq_len {} need exactly {want} bytes ({})",
            bytes.len(),
            cfg.dim,
            cfg.hidden_dim,
            cfg.n_layers,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.vocab_size,
            if cfg.shared_classifier { "shared classifier" } else { "unshared classifier" },
            cfg.seq_len,
            if bytes.len() < want { "truncated" } else { "trailing bytes" }
        );
    }
    let floats: Vec<f32> =
        bytes[HEADER_BYTES..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let mut model = Transformer::new_inference(cfg.model_config(), max_batch)?;
    let ranges = param_ranges(&model, &cfg)?;
    let mut pos = 0usize;
    let mut take = |n: usize| {
        let s = &floats[pos..pos + n];
        pos += n;
        s
    };
    let mut rope_tables = Vec::new();
    for section in sections(&cfg) {
        match section {
            Section::Param(k) => {
                for r in &ranges[k] {
                    model.params[r.clone()].copy_from_slice(take(r.len()));
                }
            }
            Section::Rope(n) => rope_tables = take(n).to_vec(),
        }
    }
    debug_assert_eq!(pos, floats.len());
    if let Some((t, _)) = model.first_nonfinite_param() {
        bail!("weight {t} holds NaN or infinity");
    }
    Ok(Llama2cModel { config: cfg, model, rope_tables })
}

/// A llama2.c model and its `tokenizer.bin`; the vocabulary must have the model's size.
pub fn read_with_tokenizer(
    model_path: &Path,
    tokenizer_path: &Path,
    max_batch: usize,
) -> Result<(Llama2cModel, Llama2cTokenizer)> {
    let m = read(model_path, max_batch)?;
    let tok = Llama2cTokenizer::read(tokenizer_path)?;
    ensure!(
        tok.vocab_size() == m.config.vocab_size,
        "tokenizer {} has {} tokens but the model {} has vocab_size {}",
        tokenizer_path.display(),
        tok.vocab_size(),
        model_path.display(),
        m.config.vocab_size
    );
    Ok((m, tok))
}

/// A llama2.c model and its tokenizer as an lmlab model and checkpoint tokenizer (what
/// `lmlab import --llama2c` saves).
pub fn import(model_path: &Path, tokenizer_path: &Path, max_batch: usize) -> Result<(Transformer, Tokenizer)> {
    let (m, tok) = read_with_tokenizer(model_path, tokenizer_path, max_batch)?;
    Ok((m.model, Tokenizer::Llama2c(Box::new(tok))))
}

/// llama2.c bytes of `model`. `rope_tables` are written as given (from [`from_bytes`]) or, when
/// None, computed as llama2.c's `export.py` does: cos and sin of pos·θ^(−2i/hs).
pub fn to_bytes(model: &Transformer, rope_tables: Option<&[f32]>) -> Result<Vec<u8>> {
    let cfg = Llama2cConfig::from_model_config(&model.config)?;
    let n_rope = cfg.seq_len * cfg.head_size();
    let computed;
    let rope = match rope_tables {
        Some(t) => {
            ensure!(t.len() == n_rope, "RoPE tables have {} values, expected {n_rope}", t.len());
            t
        }
        None => {
            computed = rope_table(cfg.seq_len, cfg.head_size(), ROPE_THETA);
            &computed
        }
    };
    let ranges = param_ranges(model, &cfg)?;
    let mut out = Vec::with_capacity(cfg.file_bytes().unwrap());
    out.extend_from_slice(&cfg.header_bytes());
    let mut put = |s: &[f32]| s.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    for section in sections(&cfg) {
        match section {
            Section::Param(k) => ranges[k].iter().for_each(|r| put(&model.params[r.clone()])),
            Section::Rope(_) => put(rope),
        }
    }
    debug_assert_eq!(out.len(), cfg.file_bytes().unwrap());
    Ok(out)
}

/// Writes `model` as a llama2.c checkpoint, atomically (temporary file, fsync, rename).
pub fn write(path: &Path, model: &Transformer, rope_tables: Option<&[f32]>) -> Result<()> {
    let bytes = to_bytes(model, rope_tables)?;
    write_file_atomic(path, &bytes)
}

/// llama2.c's RoPE tables: freq_cis_real (T, hs/2) then freq_cis_imag, cos / sin of
/// pos·θ^(−2i/hs) (computed in f64 and rounded; torch's f32 values can differ in the last bit).
pub fn rope_table(seq_len: usize, head_size: usize, theta: f32) -> Vec<f32> {
    let half = head_size / 2;
    let mut out = vec![0.0f32; 2 * seq_len * half];
    let (re, im) = out.split_at_mut(seq_len * half);
    for p in 0..seq_len {
        for i in 0..half {
            let freq = 1.0 / (theta as f64).powf((2 * i) as f64 / head_size as f64);
            let (s, c) = (p as f64 * freq).sin_cos();
            re[p * half + i] = c as f32;
            im[p * half + i] = s as f32;
        }
    }
    out
}

/// One block of the file after the header.
enum Section {
    /// Index into [`param_ranges`]: one parameter range per layer (or one for the globals).
    Param(usize),
    /// The two RoPE tables together (their length).
    Rope(usize),
}

// Indices of the parameter groups in file order.
const EMB: usize = 0;
const RMS_ATT: usize = 1;
const WQ: usize = 2;
const WK: usize = 3;
const WV: usize = 4;
const WO: usize = 5;
const RMS_FFN: usize = 6;
const W1: usize = 7;
const W2: usize = 8;
const W3: usize = 9;
const RMS_FINAL: usize = 10;
const WCLS: usize = 11;

fn sections(cfg: &Llama2cConfig) -> Vec<Section> {
    let mut s: Vec<Section> = (EMB..=RMS_FINAL).map(Section::Param).collect();
    s.push(Section::Rope(cfg.seq_len * cfg.head_size()));
    if !cfg.shared_classifier {
        s.push(Section::Param(WCLS));
    }
    s
}

/// For each llama2.c tensor (in file order), the ranges of `model.params` it fills, one per
/// layer for the per-layer tensors.
fn param_ranges(model: &Transformer, cfg: &Llama2cConfig) -> Result<Vec<Vec<Range<usize>>>> {
    let get = |name: &str| -> Result<Range<usize>> {
        Ok(model.layout.get(name).with_context(|| format!("the model has no parameter {name}"))?.range())
    };
    let (c, kv, h) = (cfg.dim, cfg.kv_dim(), cfg.hidden_dim);
    // Row block [from, from+rows) of a (rows_total, c) matrix.
    let rows =
        |r: &Range<usize>, from: usize, n: usize, width: usize| r.start + from * width..r.start + (from + n) * width;
    let mut out: Vec<Vec<Range<usize>>> = vec![Vec::new(); WCLS + 1];
    out[EMB].push(get("transformer.wte.weight")?);
    for l in 0..cfg.n_layers {
        let p = format!("transformer.h.{l}");
        let attn = get(&format!("{p}.attn.c_attn.weight"))?;
        let fc = get(&format!("{p}.mlp.c_fc.weight"))?;
        out[RMS_ATT].push(get(&format!("{p}.ln_1.weight"))?);
        out[WQ].push(rows(&attn, 0, c, c));
        out[WK].push(rows(&attn, c, kv, c));
        out[WV].push(rows(&attn, c + kv, kv, c));
        out[WO].push(get(&format!("{p}.attn.c_proj.weight"))?);
        out[RMS_FFN].push(get(&format!("{p}.ln_2.weight"))?);
        out[W1].push(rows(&fc, 0, h, c));
        out[W2].push(get(&format!("{p}.mlp.c_proj.weight"))?);
        out[W3].push(rows(&fc, h, h, c));
    }
    out[RMS_FINAL].push(get("transformer.ln_f.weight")?);
    if !cfg.shared_classifier {
        out[WCLS].push(get("lm_head.weight")?);
    }
    Ok(out)
}
