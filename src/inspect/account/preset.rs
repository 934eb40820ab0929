//! Named architectures: GPT-2's four sizes, BERT-base, Llama-2-7B and the eight GPT-3 sizes of
//! Brown et al. (2020), Table 2.1, each written as the lmlab [`ModelConfig`] of the same
//! architecture.

use super::{Architecture, BertParts};
use crate::model::transformer::{ActivationKind, Arch, ModelConfig, NormKind, NormPosition, Position};
use anyhow::{bail, Result};

/// A named architecture and where its numbers come from.
pub struct Preset {
    pub name: &'static str,
    pub source: &'static str,
    build: fn() -> Architecture,
}

impl Preset {
    pub fn architecture(&self) -> Architecture {
        (self.build)()
    }
}

/// Sizes of a named architecture.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    /// Key/value heads (grouped-query attention; = `n_head` for multi-head).
    pub n_kv_head: usize,
    /// Feed-forward width F.
    pub ffn_hidden: usize,
    /// Context: rows of a learned position table.
    pub block_size: usize,
    pub vocab_size: usize,
}

/// GPT-2 (Radford et al. 2019; Hugging Face `GPT2LMHeadModel`): learned positions, pre-norm
/// LayerNorm (ε 1e-5), GELU (tanh), biases, multi-head attention, LM head tied to the token
/// embedding.
pub fn gpt2_like(name: &str, s: Sizes) -> Architecture {
    let model = ModelConfig {
        vocab_size: s.vocab_size,
        block_size: s.block_size,
        n_layer: s.n_layer,
        n_head: s.n_head,
        n_embd: s.n_embd,
        ffn_hidden: Some(s.ffn_hidden),
        ..ModelConfig::default()
    };
    Architecture { name: name.to_string(), model, bert: None }
}

/// BERT as Hugging Face's `BertModel`: word, position and 2 token-type embeddings with a
/// LayerNorm (ε 1e-12), post-norm layers with exact GELU, the pooler; no MLM or classifier head.
pub fn bert_like(name: &str, s: Sizes) -> Architecture {
    let model = ModelConfig {
        arch: Arch::Encoder,
        activation: ActivationKind::Gelu,
        norm_eps: 1e-12,
        norm_position: NormPosition::Post,
        final_norm: false,
        embedding_norm: true,
        tie_embeddings: false,
        ..gpt2_like(name, s).model
    };
    Architecture { name: name.to_string(), model, bert: Some(BertParts { type_vocab: 2 }) }
}

/// Llama (Hugging Face `LlamaForCausalLM`): RMSNorm, SwiGLU, RoPE, no biases, grouped-query
/// attention with `n_kv_head` heads, untied head.
pub fn llama_like(name: &str, s: Sizes) -> Architecture {
    let model = ModelConfig {
        n_kv_head: Some(s.n_kv_head),
        activation: ActivationKind::Swiglu,
        norm: NormKind::Rmsnorm,
        position: Position::Rope,
        bias: false,
        tie_embeddings: false,
        ..gpt2_like(name, s).model
    };
    Architecture { name: name.to_string(), model, bert: None }
}

fn gpt2_family(name: &str, n_layer: usize, n_embd: usize, n_head: usize, block_size: usize) -> Architecture {
    let s = Sizes { n_layer, n_embd, n_head, n_kv_head: n_head, ffn_hidden: 4 * n_embd, block_size, vocab_size: 50257 };
    gpt2_like(name, s)
}

/// A GPT-3 size: GPT-2's architecture with a 2048-token context. Brown et al. also alternate
/// dense and locally banded sparse attention layers, which changes no parameter and is not
/// modelled in the FLOPs (every layer is counted dense).
fn gpt3(name: &str, n_layer: usize, d_model: usize, d_head: usize) -> Architecture {
    gpt2_family(name, n_layer, d_model, d_model / d_head, 2048)
}

fn bert_base() -> Architecture {
    let s = Sizes {
        n_layer: 12,
        n_embd: 768,
        n_head: 12,
        n_kv_head: 12,
        ffn_hidden: 3072,
        block_size: 512,
        vocab_size: 30522,
    };
    bert_like("bert-base", s)
}

fn llama2_7b() -> Architecture {
    let s = Sizes {
        n_layer: 32,
        n_embd: 4096,
        n_head: 32,
        n_kv_head: 32,
        ffn_hidden: 11008,
        block_size: 4096,
        vocab_size: 32000,
    };
    llama_like("llama-2-7b", s)
}

/// Every preset, in the order `lmlab account --list-presets` prints them.
pub const PRESETS: &[Preset] = &[
    Preset { name: "gpt2", source: "GPT-2 small (HF gpt2): 12 layers, d 768, 12 heads", build: || gpt2_family("gpt2", 12, 768, 12, 1024) },
    Preset { name: "gpt2-medium", source: "HF gpt2-medium: 24 layers, d 1024, 16 heads", build: || gpt2_family("gpt2-medium", 24, 1024, 16, 1024) },
    Preset { name: "gpt2-large", source: "HF gpt2-large: 36 layers, d 1280, 20 heads", build: || gpt2_family("gpt2-large", 36, 1280, 20, 1024) },
    Preset { name: "gpt2-xl", source: "HF gpt2-xl: 48 layers, d 1600, 25 heads", build: || gpt2_family("gpt2-xl", 48, 1600, 25, 1024) },
    Preset {
        name: "bert-base",
        source: "BERT-base (HF bert-base-uncased) as BertModel: embeddings (word, position, 2 token types, LayerNorm), 12 post-norm layers, pooler; no MLM or classifier head",
        build: bert_base,
    },
    Preset {
        name: "llama-2-7b",
        source: "Llama-2-7B (HF meta-llama/Llama-2-7b-hf): 32 layers, d 4096, 32 heads, SwiGLU 11008, RMSNorm, RoPE, untied head, vocab 32000",
        build: llama2_7b,
    },
    Preset { name: "gpt3-small", source: "Brown et al. Table 2.1 GPT-3 Small: 12 layers, d 768, 12 heads of 64", build: || gpt3("gpt3-small", 12, 768, 64) },
    Preset { name: "gpt3-medium", source: "Table 2.1 GPT-3 Medium: 24 layers, d 1024, 16 heads of 64", build: || gpt3("gpt3-medium", 24, 1024, 64) },
    Preset { name: "gpt3-large", source: "Table 2.1 GPT-3 Large: 24 layers, d 1536, 16 heads of 96", build: || gpt3("gpt3-large", 24, 1536, 96) },
    Preset {
        name: "gpt3-xl",
        source: "Table 2.1 GPT-3 XL: 24 layers, d 2048, heads of 128; the table's 24 heads × 128 = 3072 ≠ 2048, so 16 heads of 128 (its 1.3B parameters)",
        build: || gpt3("gpt3-xl", 24, 2048, 128),
    },
    Preset { name: "gpt3-2.7b", source: "Table 2.1 GPT-3 2.7B: 32 layers, d 2560, 32 heads of 80", build: || gpt3("gpt3-2.7b", 32, 2560, 80) },
    Preset { name: "gpt3-6.7b", source: "Table 2.1 GPT-3 6.7B: 32 layers, d 4096, 32 heads of 128", build: || gpt3("gpt3-6.7b", 32, 4096, 128) },
    Preset {
        name: "gpt3-13b",
        source: "Table 2.1 GPT-3 13B: 40 layers, 40 heads of 128; the table's d_model 5140 is not 40 × 128, so d 5120",
        build: || gpt3("gpt3-13b", 40, 5120, 128),
    },
    Preset { name: "gpt3-175b", source: "Table 2.1 GPT-3 175B: 96 layers, d 12288, 96 heads of 128", build: || gpt3("gpt3-175b", 96, 12288, 128) },
];

/// Edit distance (insertions, deletions, substitutions) for the suggestions of [`preset`].
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + (ca != cb) as usize).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The preset called `name` (case-insensitive); an unknown name is an error that suggests the
/// closest names.
pub fn preset(name: &str) -> Result<&'static Preset> {
    let lower = name.to_lowercase();
    if let Some(p) = PRESETS.iter().find(|p| p.name == lower) {
        return Ok(p);
    }
    let mut by_distance: Vec<(usize, &str)> = PRESETS.iter().map(|p| (edit_distance(&lower, p.name), p.name)).collect();
    by_distance.sort();
    // Near misses (a few edits) and names that contain what was typed ("bert", "llama").
    let close: Vec<&str> =
        by_distance.iter().filter(|(d, n)| *d <= 3 || n.contains(lower.as_str())).take(3).map(|(_, n)| *n).collect();
    let all: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    if close.is_empty() {
        bail!("unknown preset {name:?}; the presets are: {}", all.join(", "))
    }
    bail!("unknown preset {name:?}; did you mean {}? (all presets: lmlab account --list-presets)", close.join(" or "))
}
