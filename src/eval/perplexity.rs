//! Perplexity of a whole token stream with a sliding window, the method of the Hugging Face
//! perplexity guide (`transformers` docs, "Perplexity of fixed-length models"):
//!
//! ```text
//! prev_end = 0
//! for begin in 0, stride, 2·stride, ...:
//!     end = min(begin + context, n);  trg_len = end - prev_end
//!     score the tokens of ids[begin:end] among the last trg_len, given everything before them in
//!     the window; the window's first token is never scored (nothing predicts it)
//!     prev_end = end;  stop once end == n
//! ```
//!
//! Every token after the first window's first is scored exactly once, with at least
//! `context - stride` tokens of context (except near the start). `stride = context` gives
//! disjoint windows (fast, each window starting cold); a small stride gives every token long
//! context (slow). The result is the token-weighted mean negative log-likelihood, as the guide's
//! current code computes it.

use super::LmEval;
use crate::model::transformer::Transformer;
use anyhow::{ensure, Result};

/// One window: the model reads `tokens[begin..end-1]` and predicts `tokens[begin+1..end]`; the
/// targets before `first_scored` are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub begin: usize,
    pub end: usize,
    /// Index (in the token stream) of the first scored token.
    pub first_scored: usize,
}

/// The windows of the guide's loop over `n` tokens.
pub fn sliding_windows(n: usize, context: usize, stride: usize) -> Vec<Window> {
    let mut windows = Vec::new();
    let mut prev_end = 0;
    let mut begin = 0;
    while begin < n {
        let end = (begin + context).min(n);
        let trg_len = end - prev_end;
        windows.push(Window { begin, end, first_scored: (end - trg_len).max(begin + 1) });
        prev_end = end;
        if end == n {
            break;
        }
        begin += stride;
    }
    windows
}

/// Loss, perplexity and bits per token of `tokens` under `model` with windows of `context`
/// tokens moved by `stride` (see the module docs). `context` is at most the model's block size
/// plus one (a window of `context` tokens feeds `context - 1` of them to the model).
pub fn sliding_window_eval(model: &mut Transformer, tokens: &[u32], context: usize, stride: usize) -> Result<LmEval> {
    let block = model.config.block_size;
    ensure!(tokens.len() >= 2, "need at least 2 tokens to evaluate, got {}", tokens.len());
    ensure!(context >= 2, "the context must be at least 2 tokens, got {context}");
    ensure!(
        context <= block + 1,
        "a context of {context} tokens needs block_size ≥ {} (the model's is {block})",
        context - 1
    );
    ensure!((1..=context).contains(&stride), "the stride must be in 1..={context} (the context), got {stride}");
    let windows = sliding_windows(tokens.len(), context, stride);
    let b_max = model.max_batch();
    let (mut sum, mut count) = (0.0f64, 0usize);
    let mut inputs = Vec::with_capacity(b_max * block);
    let mut targets = Vec::with_capacity(b_max * block);
    // Windows of equal length share a batch (all but the last one or two are full length).
    let mut i = 0;
    while i < windows.len() {
        let len = windows[i].end - windows[i].begin - 1;
        let mut j = i;
        while j < windows.len() && j - i < b_max && windows[j].end - windows[j].begin - 1 == len {
            j += 1;
        }
        inputs.clear();
        targets.clear();
        let mut scored = 0;
        for w in &windows[i..j] {
            inputs.extend_from_slice(&tokens[w.begin..w.end - 1]);
            targets.extend((w.begin + 1..w.end).map(|k| if k >= w.first_scored { tokens[k] as i32 } else { -1 }));
            scored += w.end - w.first_scored;
        }
        if scored > 0 {
            let loss = model.forward_lm(&inputs, Some(&targets), j - i, len, false, 0)?.unwrap_or(0.0);
            sum += loss as f64 * scored as f64;
            count += scored;
        }
        i = j;
    }
    let loss = sum / count as f64;
    Ok(LmEval { loss, perplexity: loss.exp(), bits_per_token: loss / std::f64::consts::LN_2, tokens: count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_guide() {
        // n = 10, context 4, stride 2: begins 0, 2, 4, 6; the last ends at 10.
        let w = sliding_windows(10, 4, 2);
        let got: Vec<(usize, usize, usize)> = w.iter().map(|w| (w.begin, w.end, w.first_scored)).collect();
        assert_eq!(got, [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]);
        // Every token after the first is scored exactly once.
        for (n, c, s) in [(10, 4, 2), (37, 8, 3), (37, 8, 8), (5, 8, 4), (64, 16, 1)] {
            let mut hits = vec![0; n];
            for w in sliding_windows(n, c, s) {
                (w.first_scored..w.end).for_each(|k| hits[k] += 1);
            }
            if s == c {
                // Disjoint windows: the first token of each window is never scored (the guide's
                // labels shift drops it).
                let firsts: Vec<usize> = sliding_windows(n, c, s).iter().map(|w| w.begin).collect();
                for (k, h) in hits.iter().enumerate() {
                    assert_eq!(*h, usize::from(!firsts.contains(&k)), "n {n} c {c} s {s} token {k}");
                }
            } else {
                assert_eq!(hits[0], 0);
                assert!(hits[1..].iter().all(|&h| h == 1), "n {n} c {c} s {s}: {hits:?}");
            }
        }
    }
}
