//! The logit lens (nostalgebraist, 2020): the residual stream after every layer read out as a
//! next-token distribution by the model's own final norm and unembedding, as if the layers
//! above were not there. The last layer's readout is the model's output.

use super::forward;
use crate::kernels::{
    layernorm::layernorm_forward, math::softmax_inplace, matmul::matmul_forward, rmsnorm::rmsnorm_forward,
};
use crate::model::transformer::{ActKind, Arch, NormKind, Transformer};
use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

/// One layer's readout at every position.
#[derive(Clone, Debug, Serialize)]
pub struct LensLayer {
    /// `embeddings` (before block 0) or `block {i}` (after block i).
    pub name: String,
    /// Per position: the `k` most likely next tokens (id, probability), best first.
    pub top: Vec<Vec<(u32, f32)>>,
    /// Per position with a next token in the text: that token's probability and rank (0 =
    /// the top prediction); None at the last position.
    pub target_prob: Vec<Option<f32>>,
    pub target_rank: Vec<Option<usize>>,
}

/// The logit lens of a decoder-only model over `tokens`, the `k` best tokens per position and
/// layer. The target at position i is token i + 1 of the text.
pub fn logit_lens(model: &mut Transformer, tokens: &[u32], k: usize) -> Result<Vec<LensLayer>> {
    ensure!(model.config.arch == Arch::Decoder, "the logit lens needs a decoder-only language model");
    ensure!(k > 0, "--top must be at least 1");
    forward(model, tokens, None)?;
    let (t, c, v) = (tokens.len(), model.config.n_embd, model.config.vocab_size);
    let mut streams: Vec<(String, Vec<f32>)> = Vec::new();
    if let Some(e) = model.activations().iter().find(|a| a.kind == ActKind::Embedding) {
        streams.push(("embeddings".into(), e.data[..t * c].to_vec()));
    }
    for b in model.blocks() {
        streams.push((format!("block {}", b.layer), b.output[..t * c].to_vec()));
    }
    ensure!(streams.len() > 1, "the model exposes no per-layer activations (an inference-only model?)");
    let readout = Readout::of(model)?;
    let mut out = Vec::with_capacity(streams.len());
    let mut logits = vec![0f32; t * v];
    for (name, h) in streams {
        readout.apply(model, &h, t, &mut logits)?;
        let mut top = Vec::with_capacity(t);
        let (mut target_prob, mut target_rank) = (Vec::with_capacity(t), Vec::with_capacity(t));
        for (i, row) in logits.chunks_exact_mut(v).enumerate() {
            softmax_inplace(row);
            let mut order: Vec<u32> = (0..v as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            top.push(order.iter().take(k).map(|&id| (id, row[id as usize])).collect());
            let next = tokens.get(i + 1).copied();
            target_prob.push(next.map(|n| row[n as usize]));
            target_rank.push(next.map(|n| order.iter().position(|&o| o == n).unwrap_or(v)));
        }
        out.push(LensLayer { name, top, target_prob, target_rank });
    }
    Ok(out)
}

/// The final norm (if the model has one) and the unembedding, by parameter name.
struct Readout {
    norm: Option<(NormKind, String, Option<String>)>,
    head: String,
}

impl Readout {
    fn of(model: &Transformer) -> Result<Readout> {
        let has = |n: &str| model.layout.get(n).is_some();
        let norm = if model.config.final_norm && model.config.norm != NormKind::None {
            let kind = model.config.norm;
            if kind == NormKind::Batchnorm {
                bail!("the logit lens does not support a BatchNorm final norm");
            }
            let bias = has("transformer.ln_f.bias").then(|| "transformer.ln_f.bias".to_string());
            Some((kind, "transformer.ln_f.weight".to_string(), bias))
        } else {
            None
        };
        let head = if has("lm_head.weight") { "lm_head.weight" } else { "transformer.wte.weight" };
        Ok(Readout { norm, head: head.into() })
    }

    /// logits (T, V) of hidden states h (T, C).
    fn apply(&self, model: &Transformer, h: &[f32], t: usize, logits: &mut [f32]) -> Result<()> {
        let (c, v) = (model.config.n_embd, model.config.vocab_size);
        let p = |name: &str| -> Result<&[f32]> {
            let r = model.layout.get(name).with_context(|| format!("the model has no tensor {name}"))?.range();
            Ok(&model.params[r])
        };
        let mut normed = vec![0f32; t * c];
        let (mut mean, mut rstd) = (vec![0f32; t], vec![0f32; t]);
        let x = match &self.norm {
            None => h,
            Some((NormKind::Rmsnorm, w, _)) => {
                rmsnorm_forward(&mut normed, &mut rstd, h, p(w)?, c, model.config.norm_eps);
                &normed
            }
            Some((_, w, b)) => {
                let bias = b.as_deref().map(p).transpose()?;
                layernorm_forward(&mut normed, &mut mean, &mut rstd, h, p(w)?, bias, c, model.config.norm_eps);
                &normed
            }
        };
        matmul_forward(logits, x, p(&self.head)?, None, t, c, v);
        Ok(())
    }
}
