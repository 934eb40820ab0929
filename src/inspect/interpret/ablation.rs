//! Ablation: how much a language model's loss on some text rises when one attention head, or
//! one feed-forward layer, is removed — its output-projection input set to zero or to its mean
//! over the text (`Transformer::set_ablation`, TransformerLens's conventions).

use crate::model::transformer::{AblationMode, Arch, Transformer};
use anyhow::{ensure, Result};
use serde::Serialize;

/// The loss without ablation and its change under each ablation.
#[derive(Clone, Debug, Serialize)]
pub struct AblationTable {
    pub mode: String,
    /// Mean cross-entropy (nats per token) of the intact model.
    pub base_loss: f64,
    /// (n_layer, n_head): loss with that head ablated minus `base_loss`.
    pub heads: Vec<Vec<f64>>,
    /// (n_layer): loss with that feed-forward layer ablated minus `base_loss`.
    pub mlps: Vec<f64>,
    pub tokens: usize,
}

/// Mean next-token cross-entropy over `windows` (each `t + 1` tokens: inputs and shifted
/// targets), token-weighted.
pub fn mean_loss(model: &mut Transformer, windows: &[Vec<u32>]) -> Result<f64> {
    let (mut sum, mut count) = (0.0, 0usize);
    for w in windows {
        ensure!(w.len() >= 2, "an ablation window needs at least two tokens");
        let t = w.len() - 1;
        let targets: Vec<i32> = w[1..].iter().map(|&x| x as i32).collect();
        let loss = model.forward_lm(&w[..t], Some(&targets), 1, t, false, 0)?.unwrap_or(0.0);
        sum += loss as f64 * t as f64;
        count += t;
    }
    Ok(sum / count.max(1) as f64)
}

/// Every head and every feed-forward layer of a decoder-only model ablated in turn over
/// `windows`.
pub fn ablate_all(model: &mut Transformer, windows: &[Vec<u32>], mode: AblationMode) -> Result<AblationTable> {
    ensure!(model.config.arch == Arch::Decoder, "head ablation is implemented for decoder-only language models");
    ensure!(!windows.is_empty(), "no text to measure the loss on");
    let (nl, nh) = (model.config.n_layer, model.config.n_head);
    let base_loss = mean_loss(model, windows)?;
    let result = (|| -> Result<(Vec<Vec<f64>>, Vec<f64>)> {
        let mut heads = vec![vec![0.0; nh]; nl];
        let mut mlps = vec![0.0; nl];
        for (l, row) in heads.iter_mut().enumerate() {
            for (h, d) in row.iter_mut().enumerate() {
                model.set_ablation(&format!("transformer.h.{l}.attn"), Some(h), mode)?;
                *d = mean_loss(model, windows)? - base_loss;
            }
            model.set_ablation(&format!("transformer.h.{l}.mlp"), None, mode)?;
            mlps[l] = mean_loss(model, windows)? - base_loss;
        }
        Ok((heads, mlps))
    })();
    model.clear_ablation();
    let (heads, mlps) = result?;
    let mode = match mode {
        AblationMode::Zero => "zero",
        AblationMode::Mean => "mean",
    };
    let tokens = windows.iter().map(|w| w.len() - 1).sum();
    Ok(AblationTable { mode: mode.into(), base_loss, heads, mlps, tokens })
}
