//! Autoregressive sampling with temperature and top-k: on a KV cache for plain GPTs, by
//! re-running the context window for the other decoder variants.
//!
//! The context is the last `block_size` tokens: a prompt longer than that is cropped from the
//! left (the model cannot attend further back), exactly as nanoGPT's `generate` does.

use crate::kernels::math::softmax_inplace;
use crate::model::transformer::Transformer;
use crate::model::{Gpt, KvCache};
use anyhow::{ensure, Result};
use rand::Rng;

#[derive(Clone, Debug)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax); otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (None = all).
    pub top_k: Option<usize>,
}

/// Generates `opts.max_new_tokens` tokens after `prompt` with any decoder-only model, calling
/// `on_token` with each new id as it is produced. Returns the new tokens.
///
/// A plain GPT runs on the KV cache ([`generate_cached`]). Other variants re-run the last
/// `block_size` tokens for every new token (O(T²) per token; a KV cache for every variant is
/// issue 7's work).
pub fn generate<R: Rng>(
    model: &mut Transformer,
    prompt: &[u32],
    opts: &SampleOptions,
    rng: &mut R,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if Gpt::supports(&model.config) {
        let mut gpt = Gpt::from_transformer(model)?;
        return generate_cached(&mut gpt, prompt, opts, rng, on_token);
    }
    check_options(prompt, opts)?;
    let (block, v) = (model.config.block_size, model.config.vocab_size);
    let mut ctx: Vec<u32> = prompt.to_vec();
    let mut out = Vec::with_capacity(opts.max_new_tokens);
    let (mut probs, mut sorted) = (vec![0.0f32; v], vec![0.0f32; v]);
    for _ in 0..opts.max_new_tokens {
        let window = &ctx[ctx.len().saturating_sub(block)..];
        model.forward_lm(window, None, 1, window.len(), false, 0)?;
        let logits = &model.logits()[(window.len() - 1) * v..window.len() * v];
        let next = pick(logits, opts, &mut probs, &mut sorted, rng);
        ctx.push(next);
        out.push(next);
        on_token(next);
    }
    Ok(out)
}

fn check_options(prompt: &[u32], opts: &SampleOptions) -> Result<()> {
    ensure!(!prompt.is_empty(), "the prompt must contain at least one token");
    ensure!(opts.temperature >= 0.0 && opts.temperature.is_finite(), "temperature must be a finite number >= 0");
    ensure!(opts.top_k != Some(0), "top_k must be at least 1");
    Ok(())
}

/// [`generate`] for a plain GPT, on a KV cache.
///
/// Uses a KV cache: the prompt is processed once, then each step runs one token. Once the
/// context reaches `block_size`, each step re-runs the last `block_size` tokens (positions
/// shift, so cached keys no longer apply) — the same context nanoGPT's `generate` crops to.
/// Apart from the returned vector, nothing is allocated per token.
pub fn generate_cached<R: Rng>(
    model: &mut Gpt,
    prompt: &[u32],
    opts: &SampleOptions,
    rng: &mut R,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    check_options(prompt, opts)?;
    let block = model.config.block_size;
    let v = model.config.vocab_size;
    let mut ctx: Vec<u32> = Vec::with_capacity(prompt.len() + opts.max_new_tokens);
    ctx.extend_from_slice(prompt);
    let mut out = Vec::with_capacity(opts.max_new_tokens);
    let mut logits = vec![0.0f32; v];
    let mut probs = vec![0.0f32; v];
    let mut sorted = vec![0.0f32; v];
    let mut cache = KvCache::new(&model.config);
    logits.copy_from_slice(model.forward_cached(&ctx[ctx.len().saturating_sub(block)..], &mut cache)?);
    for step in 0..opts.max_new_tokens {
        let next = pick(&logits, opts, &mut probs, &mut sorted, rng);
        ctx.push(next);
        out.push(next);
        on_token(next);
        if step + 1 == opts.max_new_tokens {
            break;
        }
        if cache.is_full() {
            cache.clear();
            logits.copy_from_slice(model.forward_cached(&ctx[ctx.len() - block..], &mut cache)?);
        } else {
            logits.copy_from_slice(model.forward_cached(&[next], &mut cache)?);
        }
    }
    Ok(out)
}

/// The next token from `logits`: argmax at temperature 0, else a draw from the softmax of
/// `logits / temperature`, restricted to the `top_k` largest when set.
fn pick<R: Rng>(logits: &[f32], opts: &SampleOptions, probs: &mut [f32], sorted: &mut [f32], rng: &mut R) -> u32 {
    if opts.temperature == 0.0 {
        return argmax(logits);
    }
    for (p, &l) in probs.iter_mut().zip(logits) {
        *p = l / opts.temperature;
    }
    if let Some(k) = opts.top_k.filter(|&k| k < probs.len()) {
        sorted.copy_from_slice(probs);
        sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let kth = sorted[k - 1];
        probs.iter_mut().filter(|p| **p < kth).for_each(|p| *p = f32::NEG_INFINITY);
    }
    softmax_inplace(probs);
    sample_index(probs, rng.gen::<f32>())
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Index drawn from the distribution `probs` with the uniform number `u` in [0, 1).
fn sample_index(probs: &[f32], u: f32) -> u32 {
    let mut acc = 0.0;
    for (i, &p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return i as u32;
        }
    }
    // Rounding left the total just under 1: take the last token with nonzero probability.
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_cdf_sampling() {
        let p = [0.1, 0.0, 0.6, 0.3];
        assert_eq!(sample_index(&p, 0.05), 0);
        assert_eq!(sample_index(&p, 0.1), 2);
        assert_eq!(sample_index(&p, 0.69), 2);
        assert_eq!(sample_index(&p, 0.71), 3);
        assert_eq!(sample_index(&p, 0.999_999_9), 3);
        assert_eq!(argmax(&[0.1, 3.0, -1.0, 3.0]), 1);
    }
}
