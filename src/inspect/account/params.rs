//! The parameter count of a model by component, read from its real parameter layout.
//!
//! Every tensor lmlab's model would allocate (`Transformer::buffer_sizes`) goes to exactly one
//! component by its name; the output layer tied to the token embedding is one tensor, so it is
//! counted once, under embeddings. BatchNorm running statistics are buffers, not parameters.

use super::Architecture;
use crate::model::{ParamKind, ParamLayout};
use anyhow::{bail, Result};
use serde::Serialize;

/// Parameters per component (elements); the fields sum to `total`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ParamBreakdown {
    /// Token, position and (BERT) token-type tables.
    pub embeddings: usize,
    /// Q/K/V and output projections of self- and cross-attention, and attention's own
    /// parameters (relative positions, T5 biases, cosine temperatures, additive score vectors).
    pub attention: usize,
    /// Both (SwiGLU: all three) feed-forward projections and their biases.
    pub feed_forward: usize,
    /// Gains and biases of every LayerNorm/RMSNorm/BatchNorm (embedding norm, per-block norms,
    /// final norms).
    pub norms: usize,
    /// The output layer when it has its own weights (untied LM head, classifier, BERT's
    /// pooler); 0 when tied to the token embedding.
    pub head: usize,
    pub total: usize,
    /// Kaplan et al.'s N: `total` without embedding tables and without an LM head's weight.
    pub non_embedding: usize,
    /// Whether the LM head is the token embedding (counted once, under `embeddings`).
    pub tied_head: bool,
    /// Saved but untrained elements (BatchNorm running statistics), not in `total`.
    pub buffers: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Component {
    Embeddings,
    Attention,
    FeedForward,
    Norms,
    Head,
}

/// The component a tensor of lmlab's layout belongs to, from its name
/// (`transformer.h.3.attn.c_attn.weight`, `decoder.ln_f.bias`, `lm_head.weight`, …).
fn component(name: &str) -> Option<Component> {
    let leaf = name.rsplit_once('.').map_or(name, |(path, _)| path);
    let last = leaf.rsplit('.').next().unwrap_or(leaf);
    if ["lm_head.", "classifier.", "qa_outputs.", "mlm."].iter().any(|h| name.starts_with(h)) {
        Some(Component::Head)
    } else if matches!(last, "wte" | "wpe") {
        Some(Component::Embeddings)
    } else if last.starts_with("ln_") {
        Some(Component::Norms)
    } else if leaf.contains(".attn") || leaf.contains(".cross_attn") || last == "rel_bias" {
        Some(Component::Attention)
    } else if leaf.contains(".mlp") {
        Some(Component::FeedForward)
    } else {
        None
    }
}

/// The breakdown of `layout` (lmlab's model of `arch.model`), with BERT's extra parts when
/// `arch.bert` is set: token-type embeddings and the pooler replace the classifier.
pub fn param_breakdown(arch: &Architecture, layout: &ParamLayout) -> Result<ParamBreakdown> {
    let mut p = ParamBreakdown {
        // An encoder's head has its own weights, except the masked-LM head's decoder (the token
        // embedding, always).
        tied_head: (arch.model.tie_embeddings && arch.model.arch != crate::model::transformer::Arch::Encoder)
            || arch.model.encoder_head == crate::model::transformer::EncoderHead::Mlm,
        ..ParamBreakdown::default()
    };
    let mut lm_head = 0;
    for t in &layout.tensors {
        let n = t.numel();
        if t.kind == ParamKind::Buffer {
            p.buffers += n;
            continue;
        }
        if arch.bert.is_some() && t.name.starts_with("classifier.") {
            continue;
        }
        match component(&t.name) {
            Some(Component::Embeddings) => p.embeddings += n,
            Some(Component::Attention) => p.attention += n,
            Some(Component::FeedForward) => p.feed_forward += n,
            Some(Component::Norms) => p.norms += n,
            Some(Component::Head) => p.head += n,
            None => bail!("tensor {} belongs to no component of the accounting", t.name),
        }
        if t.name == "lm_head.weight" {
            lm_head += n;
        }
    }
    if let Some(bert) = &arch.bert {
        let c = arch.model.n_embd;
        p.embeddings += bert.type_vocab * c;
        // Pooler: dense (C, C) + bias, tanh.
        p.head += c * c + c;
    }
    p.total = p.embeddings + p.attention + p.feed_forward + p.norms + p.head;
    p.non_embedding = p.total - p.embeddings - lm_head;
    Ok(p)
}
