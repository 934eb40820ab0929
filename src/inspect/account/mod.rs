//! Accounting for a model: its exact parameter count by component and the closed form it
//! comes from, FLOPs per token (forward, training, against the 6N rule, attention's share as
//! the context grows), and the memory of training and generation. Pure computation from a
//! configuration, no I/O; `lmlab account` prints it.
//!
//! The parameter layout and every buffer size are lmlab's own (`Transformer::buffer_sizes`), so
//! a count is the model's real count; `tests/account.rs` checks the counts against Hugging Face
//! models built from the same configurations and the FLOPs against PyTorch's FlopCounterMode.

pub mod flops;
pub mod formula;
pub mod memory;
pub mod params;
pub mod preset;

pub use flops::{flops_per_token, forward_flop_split, forward_flops, FlopSplit};
pub use formula::{closed_form, Formula};
pub use memory::{memory, optimizer_slots, Memory, MemoryQuery};
pub use params::{param_breakdown, ParamBreakdown};
pub use preset::{bert_like, gpt2_like, llama_like, preset, Preset, Sizes, PRESETS};

use crate::model::transformer::{ModelConfig, Transformer};
use anyhow::Result;
use serde::Serialize;

/// What is accounted: an lmlab model configuration, plus the parts of BERT lmlab's encoder does
/// not have.
#[derive(Clone, Debug)]
pub struct Architecture {
    pub name: String,
    pub model: ModelConfig,
    /// BERT (`BertModel`): token-type embeddings and the pooler, which replaces lmlab's
    /// classifier head in the count and the FLOPs.
    pub bert: Option<BertParts>,
}

#[derive(Clone, Copy, Debug)]
pub struct BertParts {
    /// Rows of the token-type embedding (2: sentence A and B).
    pub type_vocab: usize,
}

/// Forward FLOPs per token at one context length.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ContextFlops {
    pub context: usize,
    pub forward_per_token: f64,
    /// Share of the forward FLOPs in attention's (query, key) products.
    pub attention_share: f64,
}

/// FLOPs per token (2 per multiply-add, matrix products only; see [`flops()`]).
#[derive(Clone, Debug, Serialize)]
pub struct Flops {
    pub context: usize,
    pub forward_per_token: f64,
    /// Training: forward + backward (2× forward: the input and the weight gradients).
    pub training_per_token: f64,
    /// Kaplan et al.'s approximation 6·N, N = non-embedding parameters.
    pub six_n_non_embedding: f64,
    /// 6·N with N = all parameters.
    pub six_n_total: f64,
    /// Forward FLOPs per token at contexts 128 … 32768.
    pub by_context: Vec<ContextFlops>,
}

/// Contexts of the attention-share table.
pub const CONTEXTS: [usize; 9] = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768];

/// Forward FLOPs of one sequence of `t` tokens (and a source of `t` for encoder-decoders) split
/// by where they go; BERT's pooler (a d×d layer on the `[CLS]` row) replaces the classifier.
pub fn sequence_flops(arch: &Architecture, t: usize) -> FlopSplit {
    let mut split = forward_flop_split(&arch.model, 1, t, t);
    if arch.bert.is_some() {
        let c = arch.model.n_embd as f64;
        split.head = 2.0 * c * c;
    }
    split
}

fn context_flops(arch: &Architecture, t: usize) -> ContextFlops {
    let s = sequence_flops(arch, t);
    ContextFlops { context: t, forward_per_token: s.total() / t as f64, attention_share: s.attention / s.total() }
}

/// The FLOPs of `arch` at `context`, with `params` for the 6N rule.
pub fn flops(arch: &Architecture, params: &ParamBreakdown, context: usize) -> Flops {
    let at = context_flops(arch, context);
    Flops {
        context,
        forward_per_token: at.forward_per_token,
        training_per_token: 3.0 * at.forward_per_token,
        six_n_non_embedding: 6.0 * params.non_embedding as f64,
        six_n_total: 6.0 * params.total as f64,
        by_context: CONTEXTS.iter().map(|&t| context_flops(arch, t)).collect(),
    }
}

/// Everything `lmlab account` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Account {
    pub name: String,
    pub model: ModelConfig,
    pub params: ParamBreakdown,
    /// The closed form whose value is `params.total`; None with the reason in `formula_note`.
    pub formula: Option<Formula>,
    pub formula_note: Option<String>,
    pub flops: Flops,
    pub memory: Memory,
}

/// Accounts for `arch` at the batch, context, precision and optimizer of `query`.
pub fn account(arch: &Architecture, query: &MemoryQuery) -> Result<Account> {
    // Batch 1 is enough for the layout; the buffers are sized in `memory`.
    let sizes = Transformer::buffer_sizes(&arch.model, 1, true)?;
    let params = param_breakdown(arch, &sizes.layout)?;
    let (formula, formula_note) = match closed_form(arch) {
        Ok(f) => {
            anyhow::ensure!(
                f.value == params.total as u128,
                "internal error: the closed form gives {} but the layout holds {} parameters",
                f.value,
                params.total
            );
            (Some(f), None)
        }
        Err(why) => (None, Some(why)),
    };
    Ok(Account {
        name: arch.name.clone(),
        model: arch.model.clone(),
        flops: flops(arch, &params, query.context),
        memory: memory(&arch.model, query)?,
        params,
        formula,
        formula_note,
    })
}
