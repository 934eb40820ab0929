//! Evaluation, with the reference implementations' numbers: language-model loss and
//! perplexity (sliding window), classification (scikit-learn), BLEU and chrF (sacrebleu), ROUGE
//! (rouge-score), diversity, fluency, efficiency, and summaries over several runs. See
//! docs/EVALUATION.md.

pub mod bleu;
pub mod checkpoints;
pub mod chrf;
pub mod classification;
pub mod diversity;
pub mod efficiency;
pub mod file_metrics;
pub mod files;
pub mod perplexity;
pub mod porter;
pub mod rouge;
pub mod stability;
pub mod translation;

use crate::model::transformer::Transformer;
use anyhow::{ensure, Result};

/// Loss over a token stream, per predicted token.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct LmEval {
    /// Mean cross-entropy in nats.
    pub loss: f64,
    pub perplexity: f64,
    /// Bits per token; for a character-level model, bits per character.
    pub bits_per_token: f64,
    /// Number of tokens predicted.
    pub tokens: usize,
}

/// Scores every token of `tokens` after the first, in consecutive non-overlapping windows of
/// `block_size` (each window starts with a fresh context), batched by the model's batch size.
pub fn evaluate_tokens(model: &mut Transformer, tokens: &[u32]) -> Result<LmEval> {
    ensure!(tokens.len() >= 2, "need at least 2 tokens to evaluate, got {}", tokens.len());
    let t = model.config.block_size;
    let b_max = model.max_batch();
    // Window starts: every t tokens; each window predicts tokens[s+1 ..= s+len].
    let starts: Vec<usize> = (0..tokens.len() - 1).step_by(t).collect();
    let (mut sum, mut count) = (0.0f64, 0usize);
    let mut inputs = Vec::with_capacity(b_max * t);
    let mut targets = Vec::with_capacity(b_max * t);
    for group in starts.chunks(b_max) {
        // Windows in one batch must share a length: the last, shorter window goes alone.
        let mut i = 0;
        while i < group.len() {
            let len = (tokens.len() - 1 - group[i]).min(t);
            let mut j = i;
            while j < group.len() && (tokens.len() - 1 - group[j]).min(t) == len {
                j += 1;
            }
            inputs.clear();
            targets.clear();
            for &s in &group[i..j] {
                inputs.extend_from_slice(&tokens[s..s + len]);
                targets.extend(tokens[s + 1..s + len + 1].iter().map(|&x| x as i32));
            }
            let loss = model.forward_lm(&inputs, Some(&targets), j - i, len, false, 0)?.unwrap_or(0.0);
            sum += loss as f64 * ((j - i) * len) as f64;
            count += (j - i) * len;
            i = j;
        }
    }
    let loss = sum / count as f64;
    Ok(LmEval { loss, perplexity: loss.exp(), bits_per_token: loss / std::f64::consts::LN_2, tokens: count })
}

/// Fluency of generated texts: the token-weighted perplexity of `texts` under a reference
/// language model, each text scored on its own (its first token is context only; texts longer
/// than the model's block use disjoint sliding windows). Texts under 2 tokens are skipped.
pub fn fluency(model: &mut Transformer, tokenizer: &crate::data::Tokenizer, texts: &[String]) -> Result<LmEval> {
    let block = model.config.block_size;
    let (mut sum, mut count) = (0.0f64, 0usize);
    for (i, text) in texts.iter().enumerate() {
        let tokens = tokenizer.encode(text).map_err(|e| anyhow::anyhow!("line {}: {e:#}", i + 1))?;
        if tokens.len() < 2 {
            continue;
        }
        let r = perplexity::sliding_window_eval(model, &tokens, (block + 1).min(tokens.len()), block)?;
        sum += r.loss * r.tokens as f64;
        count += r.tokens;
    }
    ensure!(count > 0, "no text has 2 or more tokens to score");
    let loss = sum / count as f64;
    Ok(LmEval { loss, perplexity: loss.exp(), bits_per_token: loss / std::f64::consts::LN_2, tokens: count })
}

/// Corpus metrics take references as streams (`refs[r][i]` = the r-th reference of hypothesis
/// i, sacrebleu's layout): at least one stream, each with one line per hypothesis. sacrebleu
/// silently stops at the shorter one; here a mismatch is an error.
pub(crate) fn check_reference_streams(metric: &str, n_hyps: usize, refs: &[Vec<&str>]) -> Result<()> {
    ensure!(!refs.is_empty(), "{metric} needs at least one reference stream");
    for (r, stream) in refs.iter().enumerate() {
        ensure!(
            stream.len() == n_hyps,
            "reference stream {r} has {} lines but there are {n_hyps} hypotheses",
            stream.len()
        );
    }
    Ok(())
}
