//! lmlab models as GGUF, with llama.cpp's architecture keys and tensor names, and back.
//!
//! Two architectures, as llama.cpp names them:
//! - `llama`: what [`crate::io::llama2c::check_llama_arch`] accepts (decoder, pre-norm RMSNorm,
//!   RoPE, SwiGLU, no biases, GQA), with θ and ε from the keys. Tensors `token_embd`,
//!   `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
//!   ffn_down}`, `output_norm`, `output` (absent when the embeddings are tied; llama.cpp then
//!   uses `token_embd`). No permutation of Q and K: lmlab's RoPE rotates the interleaved pairs
//!   (2i, 2i+1) of each head, as Meta's and llama2.c's weights expect, and llama.cpp's "llama"
//!   architecture uses rope mode 0 (normal), which rotates the same adjacent pairs. llama.cpp's
//!   converters store exactly that layout: `convert_hf_to_gguf.py` un-permutes HF's rotate-half
//!   Q/K back to Meta's order, and `convert-llama2c-to-ggml` copies llama2.c's wq/wk unchanged.
//! - `gpt2`: what [`crate::io::hf_gpt2::check_exportable`] accepts, restricted to what
//!   llama.cpp's gpt2 graph computes (GELU with the tanh approximation, scaled scores).
//!   Tensors `token_embd`, `position_embd`, `blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm,
//!   ffn_up, ffn_down}.{weight, bias}`, `output_norm.{weight, bias}`, `output` (untied only).
//!   Weights are (out, in) row-major, lmlab's own layout (llama.cpp's converter transposes HF's
//!   Conv1D weights to that); `bias = false` is written as zero biases.
//!
//! A row-major (rows, cols) matrix has ggml dims [cols, rows]. Matrices are F32, F16, Q8_0 or
//! Q4_0 (`--type`; the quantized blocks are `kernels::quant`'s, byte-exact to ggml's reference
//! quantizers), vectors (norms, biases) always F32, as llama.cpp's converter does. Import reads
//! Q8_0 and Q4_0 matrices as their dequantized values.
//!
//! Tokenizers (`tokenizer.ggml.*`) are mapped in the sibling `tokenizer` module.

use super::tokenizer::{tokenizer_from_gguf, tokenizer_metadata};
use super::value::Value;
use super::{to_bytes, GgmlType, Gguf, Tensor, TensorData};
use crate::data::Tokenizer;
use crate::io::atomic::write_file_atomic;
use crate::io::hf_gpt2::check_exportable;
use crate::io::llama2c::check_llama_arch;
use crate::kernels::quant::ggml::{dequantize_row_q4_0, dequantize_row_q8_0};
use crate::kernels::quant::{QuantMatrix, QuantType};
use crate::model::transformer::{
    ActivationKind, Arch, ModelConfig, NormKind, NormPosition, Position, ScoreKind, Transformer,
};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// Most values one activation buffer of an imported model may hold (16 GiB of f32).
const MAX_ACTIVATION_ROWS: usize = 1 << 32;

/// The type of the exported matrices (`lmlab export --gguf --type`): f32, f16, or GGML's
/// Q8_0 / Q4_0 blocks (`kernels::quant`, byte-exact to ggml's reference quantizers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportType {
    F32,
    F16,
    Q8_0,
    Q4_0,
    /// Each weight as the model holds it: the blocks of weights quantized to Q8_0 or Q4_0
    /// unchanged, everything else f32 (what a quantized checkpoint runs, bit for bit).
    Stored,
}

impl ExportType {
    fn ggml(self) -> GgmlType {
        match self {
            ExportType::F32 => GgmlType::F32,
            ExportType::F16 => GgmlType::F16,
            ExportType::Q8_0 => GgmlType::Q8_0,
            ExportType::Q4_0 => GgmlType::Q4_0,
            ExportType::Stored => GgmlType::F32,
        }
    }
    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_ALL_F32, _MOSTLY_F16, _MOSTLY_Q8_0,
    /// _MOSTLY_Q4_0).
    fn file_type(self) -> u32 {
        match self {
            ExportType::F32 => 0,
            ExportType::F16 => 1,
            ExportType::Q8_0 => 7,
            ExportType::Q4_0 => 2,
            ExportType::Stored => unreachable!("the file type of a stored export comes from its weights"),
        }
    }
    /// Whether a matrix of `cols` columns can be stored in this type (blocks of 32 for Q8_0/Q4_0).
    pub fn fits(self, cols: usize) -> bool {
        match self {
            ExportType::F32 | ExportType::F16 | ExportType::Stored => true,
            ExportType::Q8_0 | ExportType::Q4_0 => cols.is_multiple_of(32),
        }
    }
    /// The matrix data of `values` (rows, cols) for a tensor of this type.
    fn matrix_data(self, name: &str, values: Vec<f32>, rows: usize, cols: usize) -> Result<TensorData> {
        let q = match self {
            ExportType::F32 | ExportType::F16 | ExportType::Stored => return Ok(TensorData::F32(values)),
            ExportType::Q8_0 => QuantType::Q8_0,
            ExportType::Q4_0 => QuantType::Q4_0,
        };
        let m = QuantMatrix::quantize(&values, rows, cols, q).with_context(|| format!("tensor {name}"))?;
        Ok(TensorData::Raw(m.data))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GgufArch {
    Llama,
    Gpt2,
}

impl GgufArch {
    fn name(self) -> &'static str {
        match self {
            GgufArch::Llama => "llama",
            GgufArch::Gpt2 => "gpt2",
        }
    }
}

fn arch_of(cfg: &ModelConfig) -> Result<GgufArch> {
    let llama = check_llama_arch(cfg, "GGUF's \"llama\" architecture");
    if llama.is_ok() {
        ensure!(cfg.head_size().is_multiple_of(2), "RoPE needs an even head size, got {}", cfg.head_size());
        return Ok(GgufArch::Llama);
    }
    let gpt2 = check_exportable(cfg).and_then(|_| {
        ensure!(
            cfg.activation == ActivationKind::GeluTanh,
            "llama.cpp's gpt2 computes GELU with the tanh approximation; model.activation is not gelu_tanh"
        );
        ensure!(cfg.score == ScoreKind::Scaled, "llama.cpp's gpt2 scales the scores; model.score is unscaled");
        Ok(())
    });
    match (cfg.norm, gpt2) {
        (_, Ok(())) => Ok(GgufArch::Gpt2),
        (NormKind::Layernorm, Err(e)) => Err(e.context("GGUF export: not a GPT-2-architecture model")),
        (_, Err(_)) => Err(llama.unwrap_err().context("GGUF export: not a Llama-architecture model")),
    }
}

/// One GGUF tensor and the lmlab parameter rows it holds.
struct Slot {
    gguf: String,
    param: String,
    /// Rows [row0, row0 + rows) of the parameter seen as (·, cols); a vector is one row.
    row0: usize,
    rows: usize,
    cols: usize,
    vector: bool,
}

impl Slot {
    fn dims(&self) -> Vec<u64> {
        if self.vector {
            vec![self.cols as u64]
        } else {
            vec![self.cols as u64, self.rows as u64]
        }
    }
    fn range(&self, start: usize) -> std::ops::Range<usize> {
        start + self.row0 * self.cols..start + (self.row0 + self.rows) * self.cols
    }
}

fn slots(cfg: &ModelConfig, arch: GgufArch) -> Vec<Slot> {
    let (c, v, f) = (cfg.n_embd, cfg.vocab_size, cfg.ffn());
    let mut s = Vec::new();
    let mut add = |gguf: String, param: String, row0: usize, rows: usize, cols: usize, vector: bool| {
        s.push(Slot { gguf, param, row0, rows, cols, vector });
    };
    add("token_embd.weight".into(), "transformer.wte.weight".into(), 0, v, c, false);
    match arch {
        GgufArch::Llama => {
            let kv = cfg.kv_heads() * cfg.head_size();
            for l in 0..cfg.n_layer {
                let (b, p) = (format!("blk.{l}"), format!("transformer.h.{l}"));
                add(format!("{b}.attn_norm.weight"), format!("{p}.ln_1.weight"), 0, 1, c, true);
                add(format!("{b}.attn_q.weight"), format!("{p}.attn.c_attn.weight"), 0, c, c, false);
                add(format!("{b}.attn_k.weight"), format!("{p}.attn.c_attn.weight"), c, kv, c, false);
                add(format!("{b}.attn_v.weight"), format!("{p}.attn.c_attn.weight"), c + kv, kv, c, false);
                add(format!("{b}.attn_output.weight"), format!("{p}.attn.c_proj.weight"), 0, c, c, false);
                add(format!("{b}.ffn_norm.weight"), format!("{p}.ln_2.weight"), 0, 1, c, true);
                // lmlab's c_fc rows [0, H) go through SiLU (the gate), [H, 2H) are the up projection.
                add(format!("{b}.ffn_gate.weight"), format!("{p}.mlp.c_fc.weight"), 0, f, c, false);
                add(format!("{b}.ffn_up.weight"), format!("{p}.mlp.c_fc.weight"), f, f, c, false);
                add(format!("{b}.ffn_down.weight"), format!("{p}.mlp.c_proj.weight"), 0, c, f, false);
            }
            add("output_norm.weight".into(), "transformer.ln_f.weight".into(), 0, 1, c, true);
        }
        GgufArch::Gpt2 => {
            add("position_embd.weight".into(), "transformer.wpe.weight".into(), 0, cfg.block_size, c, false);
            for l in 0..cfg.n_layer {
                let (b, p) = (format!("blk.{l}"), format!("transformer.h.{l}"));
                for (g, m, rows, cols) in [
                    ("attn_norm", "ln_1", 0, c),
                    ("attn_qkv", "attn.c_attn", 3 * c, c),
                    ("attn_output", "attn.c_proj", c, c),
                    ("ffn_norm", "ln_2", 0, c),
                    ("ffn_up", "mlp.c_fc", f, c),
                    ("ffn_down", "mlp.c_proj", c, f),
                ] {
                    let vector = rows == 0;
                    add(format!("{b}.{g}.weight"), format!("{p}.{m}.weight"), 0, rows.max(1), cols, vector);
                    let out = if vector { cols } else { rows };
                    add(format!("{b}.{g}.bias"), format!("{p}.{m}.bias"), 0, 1, out, true);
                }
            }
            add("output_norm.weight".into(), "transformer.ln_f.weight".into(), 0, 1, c, true);
            add("output_norm.bias".into(), "transformer.ln_f.bias".into(), 0, 1, c, true);
        }
    }
    if !cfg.tie_embeddings {
        add("output.weight".into(), "lm_head.weight".into(), 0, v, c, false);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Export

/// The GGUF file of `model` with its tokenizer; matrices of type `ty`.
pub fn to_gguf(model: &Transformer, tokenizer: &Tokenizer, ty: ExportType) -> Result<Gguf> {
    let cfg = &model.config;
    let arch = arch_of(cfg)?;
    crate::io::check_export(model, tokenizer)?;
    let mut g = Gguf::new();
    let a = arch.name();
    let u = |x: usize| -> Result<Value> { Ok(Value::U32(u32::try_from(x).context("a size does not fit GGUF's u32")?)) };
    g.set("general.architecture", Value::String(a.into()));
    g.set("general.name", Value::String("lmlab".into()));
    g.set("general.file_type", Value::U32(file_type(model, ty)?));
    g.set(&format!("{a}.vocab_size"), u(cfg.vocab_size)?);
    g.set(&format!("{a}.context_length"), u(cfg.block_size)?);
    g.set(&format!("{a}.embedding_length"), u(cfg.n_embd)?);
    g.set(&format!("{a}.block_count"), u(cfg.n_layer)?);
    g.set(&format!("{a}.feed_forward_length"), u(cfg.ffn())?);
    g.set(&format!("{a}.attention.head_count"), u(cfg.n_head)?);
    match arch {
        GgufArch::Llama => {
            g.set("llama.attention.head_count_kv", u(cfg.kv_heads())?);
            g.set("llama.rope.dimension_count", u(cfg.head_size())?);
            g.set("llama.rope.freq_base", Value::F32(cfg.rope_theta));
            g.set("llama.attention.layer_norm_rms_epsilon", Value::F32(cfg.norm_eps));
        }
        GgufArch::Gpt2 => g.set("gpt2.attention.layer_norm_epsilon", Value::F32(cfg.norm_eps)),
    }
    for (k, v) in tokenizer_metadata(tokenizer)? {
        g.set(k, v);
    }

    let mut used = BTreeSet::new();
    for s in slots(cfg, arch) {
        let values = match model.layout.get(&s.param) {
            Some(p) => {
                used.insert(p.name.clone());
                model.params[s.range(p.range().start)].to_vec()
            }
            // bias = false in a GPT-2: llama.cpp's gpt2 has biases; zeros compute the same.
            None if arch == GgufArch::Gpt2 && s.param.ends_with(".bias") && !cfg.bias => vec![0.0; s.rows * s.cols],
            None => bail!("the model has no parameter {} (unexpected layout)", s.param),
        };
        let stored = match ty {
            ExportType::Stored if !s.vector => stored_blocks(model, &s)?,
            _ => None,
        };
        let (tty, data) = if let Some(stored) = stored {
            stored
        } else if s.vector || !ty.fits(s.cols) {
            // A matrix whose rows do not split into blocks of 32 stays f32, as lmlab's own
            // quantized checkpoints keep it (llama.cpp's converter falls back to F16 instead).
            (GgmlType::F32, TensorData::F32(values))
        } else {
            (ty.ggml(), ty.matrix_data(&s.gguf, values, s.rows, s.cols)?)
        };
        g.tensors.push(Tensor { name: s.gguf.clone(), dims: s.dims(), ty: tty, data });
    }
    if let Some(extra) = model.layout.tensors.iter().find(|p| !used.contains(&p.name)) {
        bail!("GGUF cannot express the model: its parameter {} has no GGUF counterpart", extra.name);
    }
    Ok(g)
}

/// llama.cpp's `general.file_type`: the requested type's, or for a stored export the type of
/// its quantized weights (all f32: 0).
fn file_type(model: &Transformer, ty: ExportType) -> Result<u32> {
    if ty != ExportType::Stored {
        return Ok(ty.file_type());
    }
    let mut types = model.quantized().into_iter().flat_map(|q| q.iter()).map(|(name, m)| match m.ty {
        QuantType::Q8_0 => Ok(ExportType::Q8_0),
        QuantType::Q4_0 => Ok(ExportType::Q4_0),
        other => bail!(
            "{name} is quantized as {other:?}, which GGUF has no type for; export with --type f32|f16|q8_0|q4_0 \
             (re-quantizing its dequantized values)"
        ),
    });
    let first = types.next().transpose()?;
    for t in types {
        ensure!(Some(t?) == first, "the checkpoint mixes Q8_0 and Q4_0 weights; export with one --type");
    }
    Ok(first.map_or(0, ExportType::file_type))
}

/// The GGML blocks of slot `s`'s rows when its parameter is quantized as Q8_0 or Q4_0.
fn stored_blocks(model: &Transformer, s: &Slot) -> Result<Option<(GgmlType, TensorData)>> {
    let Some((_, m)) = model.quantized().and_then(|q| q.iter().find(|(name, _)| *name == s.param)) else {
        return Ok(None);
    };
    let ty = match m.ty {
        QuantType::Q8_0 => GgmlType::Q8_0,
        QuantType::Q4_0 => GgmlType::Q4_0,
        other => bail!("{} is quantized as {other:?}, which GGUF has no type for", s.param),
    };
    ensure!(m.cols == s.cols && s.row0 + s.rows <= m.rows, "{}: quantized shape does not match the slot", s.param);
    let rb = m.row_bytes();
    Ok(Some((ty, TensorData::Raw(m.data[s.row0 * rb..(s.row0 + s.rows) * rb].to_vec()))))
}

pub fn export_bytes(model: &Transformer, tokenizer: &Tokenizer, ty: ExportType) -> Result<Vec<u8>> {
    to_bytes(&to_gguf(model, tokenizer, ty)?)
}

/// Writes `model` as a GGUF file, atomically (temporary file, fsync, rename).
pub fn export(model: &Transformer, tokenizer: &Tokenizer, ty: ExportType, path: &Path) -> Result<()> {
    write_file_atomic(path, &export_bytes(model, tokenizer, ty)?)
}

// ---------------------------------------------------------------------------------------------
// Import

pub(super) fn key<'a>(g: &'a Gguf, k: &str) -> Result<&'a Value> {
    g.get(k).with_context(|| format!("metadata key {k} is missing"))
}

fn key_usize(g: &Gguf, k: &str) -> Result<usize> {
    let v = key(g, k)?;
    let n = v.as_u64().with_context(|| format!("metadata key {k} is {v:?}, expected a non-negative integer"))?;
    usize::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .with_context(|| format!("metadata key {k} is {n}, expected a positive size"))
}

fn key_f32(g: &Gguf, k: &str, default: Option<f32>) -> Result<f32> {
    match (g.get(k), default) {
        (None, Some(d)) => Ok(d),
        (None, None) => bail!("metadata key {k} is missing"),
        (Some(v), _) => {
            let x = v.as_f64().with_context(|| format!("metadata key {k} is {v:?}, expected a number"))?;
            ensure!(x.is_finite() && x > 0.0, "metadata key {k} is {x}, expected a positive number");
            Ok(x as f32)
        }
    }
}

/// lmlab's model configuration of a GGUF file's metadata and tensors.
fn model_config(g: &Gguf) -> Result<(ModelConfig, GgufArch)> {
    let a = key(g, "general.architecture")?;
    let arch = match a.as_str() {
        Some("llama") => GgufArch::Llama,
        Some("gpt2") => GgufArch::Gpt2,
        _ => bail!("general.architecture is {a:?}; lmlab imports \"llama\" and \"gpt2\""),
    };
    let p = arch.name();
    let emb = g.tensor("token_embd.weight").context("tensor token_embd.weight is missing")?;
    ensure!(emb.dims.len() == 2, "tensor token_embd.weight has dims {:?}, expected [n_embd, n_vocab]", emb.dims);
    let vocab_size = usize::try_from(emb.dims[1]).context("the vocabulary size overflows")?;
    let n_embd = key_usize(g, &format!("{p}.embedding_length"))?;
    let n_head = key_usize(g, &format!("{p}.attention.head_count"))?;
    let base = ModelConfig {
        arch: Arch::Decoder,
        vocab_size,
        block_size: key_usize(g, &format!("{p}.context_length"))?,
        n_layer: key_usize(g, &format!("{p}.block_count"))?,
        n_head,
        n_embd,
        ffn_hidden: Some(key_usize(g, &format!("{p}.feed_forward_length"))?),
        norm_position: NormPosition::Pre,
        final_norm: true,
        score: ScoreKind::Scaled,
        dropout: 0.0,
        attn_dropout: Some(0.0),
        tie_embeddings: g.tensor("output.weight").is_none(),
        ..ModelConfig::default()
    };
    // Bound the layer count by the file before anything is sized by it.
    ensure!(
        base.n_layer <= g.tensors.len(),
        "{p}.block_count is {} but the file has only {} tensors",
        base.n_layer,
        g.tensors.len()
    );
    ensure!(
        n_embd.is_multiple_of(n_head),
        "{p}.attention.head_count {n_head} does not divide {p}.embedding_length {n_embd}"
    );
    let hs = n_embd / n_head;
    let cfg = match arch {
        GgufArch::Llama => {
            let n_kv = match g.get("llama.attention.head_count_kv") {
                None => n_head,
                Some(_) => key_usize(g, "llama.attention.head_count_kv")?,
            };
            for k in ["llama.attention.key_length", "llama.attention.value_length", "llama.rope.dimension_count"] {
                if g.get(k).is_some() {
                    let v = key_usize(g, k)?;
                    ensure!(
                        v == hs,
                        "{k} is {v}; lmlab rotates and attends over whole heads of n_embd / head_count = {hs}"
                    );
                }
            }
            if let Some(v) = g.get("llama.rope.scaling.type") {
                ensure!(v.as_str() == Some("none"), "llama.rope.scaling.type is {v:?}; lmlab has no RoPE scaling");
            }
            if let Some(v) = g.get("llama.expert_count") {
                ensure!(v.as_u64() == Some(0), "llama.expert_count is {v:?}; lmlab has no mixture of experts");
            }
            ModelConfig {
                n_kv_head: Some(n_kv),
                activation: ActivationKind::Swiglu,
                norm: NormKind::Rmsnorm,
                norm_eps: key_f32(g, "llama.attention.layer_norm_rms_epsilon", None)?,
                position: Position::Rope,
                rope_theta: key_f32(g, "llama.rope.freq_base", Some(10000.0))?,
                bias: false,
                ..base
            }
        }
        GgufArch::Gpt2 => ModelConfig {
            activation: ActivationKind::GeluTanh,
            norm: NormKind::Layernorm,
            norm_eps: key_f32(g, "gpt2.attention.layer_norm_epsilon", None)?,
            position: Position::Learned,
            bias: true,
            ..base
        },
    };
    if arch == GgufArch::Llama {
        ensure!(
            n_head.is_multiple_of(cfg.kv_heads()),
            "llama.attention.head_count_kv {} does not divide head_count {n_head}",
            cfg.kv_heads()
        );
        ensure!(hs.is_multiple_of(2), "the head size {hs} must be even for RoPE");
    }
    cfg.validate().context("the GGUF file's model")?;
    Ok((cfg, arch))
}

/// Reads a GGUF file as an lmlab model and tokenizer; `max_batch` sizes the activation buffers.
pub fn import(path: &Path, max_batch: usize) -> Result<(Transformer, Tokenizer)> {
    let g = Gguf::read(path)?;
    from_gguf(&g, max_batch).with_context(|| format!("GGUF file {}", path.display()))
}

pub fn import_bytes(bytes: &[u8], max_batch: usize) -> Result<(Transformer, Tokenizer)> {
    from_gguf(&super::parse(bytes)?, max_batch)
}

/// An lmlab model and tokenizer from a parsed GGUF file.
pub fn from_gguf(g: &Gguf, max_batch: usize) -> Result<(Transformer, Tokenizer)> {
    let (cfg, arch) = model_config(g)?;
    let slots = slots(&cfg, arch);
    // Every tensor present with its dims and a float type before anything is allocated: the
    // file's size then bounds the parameters.
    for s in &slots {
        let t = g.tensor(&s.gguf).with_context(|| format!("tensor {} is missing", s.gguf))?;
        ensure!(t.dims == s.dims(), "tensor {} has dims {:?}, expected {:?}", s.gguf, t.dims, s.dims());
        ensure!(
            t.f32s().is_some() || matches!(t.ty, GgmlType::Q8_0 | GgmlType::Q4_0),
            "tensor {} is {}; lmlab imports F32, F16, Q8_0 and Q4_0 tensors",
            s.gguf,
            t.ty.name()
        );
        if let TensorData::Raw(b) = &t.data {
            let (block, bytes) = t.ty.block();
            ensure!(
                s.cols % block == 0 && b.len() == s.rows * s.cols / block * bytes,
                "tensor {} ({}) holds {} bytes, expected {} rows of {} columns in blocks of {block}",
                s.gguf,
                t.ty.name(),
                b.len(),
                s.rows,
                s.cols
            );
        }
    }
    let known: BTreeSet<&str> = slots.iter().map(|s| s.gguf.as_str()).collect();
    if let Some(extra) = g.tensors.iter().find(|t| !known.contains(t.name.as_str())) {
        bail!("tensor {} has no place in lmlab's {} model", extra.name, arch.name());
    }
    let tokenizer = tokenizer_from_gguf(g)?;
    ensure!(
        tokenizer.vocab_size() == cfg.vocab_size,
        "the tokenizer has {} tokens but token_embd.weight has {} rows",
        tokenizer.vocab_size(),
        cfg.vocab_size
    );
    let widest = cfg.vocab_size.max(2 * cfg.ffn()).max(cfg.n_embd.saturating_mul(3));
    let acts = max_batch.checked_mul(cfg.block_size).and_then(|n| n.checked_mul(widest));
    ensure!(
        acts.is_some_and(|n| n <= MAX_ACTIVATION_ROWS),
        "{}.context_length {} × {widest} (the widest activation row) × batch {max_batch} is too large for lmlab's \
         preallocated activations",
        arch.name(),
        cfg.block_size
    );
    let mut model = Transformer::new(cfg, max_batch)?;
    for s in &slots {
        let p = model.layout.get(&s.param).with_context(|| format!("the model has no parameter {}", s.param))?;
        let r = s.range(p.range().start);
        let t = g.tensor(&s.gguf).expect("checked above");
        match (&t.data, t.ty) {
            (TensorData::F32(src), _) => model.params[r.clone()].copy_from_slice(src),
            // Q8_0 / Q4_0 come in as their f32 values (the reader checked the data's size).
            (TensorData::Raw(b), GgmlType::Q8_0) => dequantize_row_q8_0(b, &mut model.params[r.clone()]),
            (TensorData::Raw(b), GgmlType::Q4_0) => dequantize_row_q4_0(b, &mut model.params[r.clone()]),
            _ => unreachable!("checked above"),
        }
        if let Some(x) = model.params[r].iter().find(|x| !x.is_finite()) {
            bail!("tensor {} holds {x}", s.gguf);
        }
    }
    keep_quantized(g, &slots, &mut model)?;
    Ok((model, tokenizer))
}

/// Every linear weight whose GGUF tensors are all Q8_0 (or all Q4_0) runs on those blocks, as
/// a model quantized by `lmlab quantize` does (its `params` already hold their values); the
/// embedding tables stay f32, as lmlab's quantized models keep them. A weight split over
/// several tensors (q/k/v, gate/up) is their blocks stacked in row order.
fn keep_quantized(g: &Gguf, slots: &[Slot], model: &mut Transformer) -> Result<()> {
    let mut params: Vec<&str> = slots.iter().filter(|s| !s.vector).map(|s| s.param.as_str()).collect();
    params.dedup();
    for param in params {
        if matches!(param, "transformer.wte.weight" | "transformer.wpe.weight") {
            continue;
        }
        let parts: Vec<&Slot> = slots.iter().filter(|s| s.param == param).collect();
        let mut types: Vec<GgmlType> = parts.iter().map(|s| g.tensor(&s.gguf).expect("checked").ty).collect();
        types.dedup();
        let ty = match types[..] {
            [GgmlType::Q8_0] => QuantType::Q8_0,
            [GgmlType::Q4_0] => QuantType::Q4_0,
            _ => continue,
        };
        let mut data = Vec::new();
        for s in &parts {
            if let TensorData::Raw(b) = &g.tensor(&s.gguf).expect("checked").data {
                data.extend_from_slice(b);
            }
        }
        let (rows, cols) = (parts.iter().map(|s| s.rows).sum(), parts[0].cols);
        let m = QuantMatrix::from_parts(ty, rows, cols, data, Vec::new(), Vec::new())
            .with_context(|| format!("the blocks of {param}"))?;
        model.set_quantized(param, m)?;
    }
    Ok(())
}
