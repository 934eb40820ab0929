//! Evaluation, with the reference implementations' numbers: language-model loss and
//! perplexity (sliding window), classification (scikit-learn), BLEU and chrF (sacrebleu), ROUGE
//! (rouge-score), diversity, fluency, relevance (BERTScore as bert-score, embedding similarity as
//! sentence-transformers), efficiency, and summaries over several runs. See
//! docs/EVALUATION.md.

pub mod bertscore;
pub mod bleu;
pub mod checkpoints;
pub mod chrf;
pub mod classification;
pub mod diversity;
pub mod efficiency;
pub mod fairness;
pub mod file_metrics;
pub mod files;
pub mod perplexity;
pub mod porter;
pub mod recall;
pub mod relevance;
pub mod rouge;
pub mod squad;
pub mod stability;
pub mod summarization;
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
        // Disjoint windows (stride = context − 1); a text shorter than the block is one window.
        let context = (block + 1).min(tokens.len());
        let r = perplexity::sliding_window_eval(model, &tokens, context, context - 1)?;
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
