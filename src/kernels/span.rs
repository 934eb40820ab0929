//! The answer-span logits of extractive question answering (BERT's `qa_outputs`): a linear
//! layer C → 2 gives every position a start and an end score; this kernel lays them out as two
//! rows per window, start logits then end logits, so that the loss is a cross-entropy over the
//! window's positions (`kernels::crossentropy` on 2·B rows of width T), and masks the positions
//! that cannot hold an answer boundary (the question, special tokens, padding).

/// The logit of a masked position: far enough below any real logit that its softmax
/// probability is exactly 0 in f32 (so it takes no probability mass and gets no gradient),
/// finite so that `0 · logit` stays 0.
pub const MASKED_LOGIT: f32 = -1e9;

/// logits (B, 2, T) from raw (B·T, 2) (the linear layer's output: at each position its start
/// then its end score): row (b, 0) holds window b's start logits, row (b, 1) its end logits;
/// positions with `mask` false (B, T) get [`MASKED_LOGIT`]. No mask: every position counts.
pub fn span_logits_forward(logits: &mut [f32], raw: &[f32], mask: Option<&[bool]>, b: usize, t: usize) {
    for w in 0..b {
        for p in 0..t {
            let keep = mask.is_none_or(|m| m[w * t + p]);
            let n = w * t + p;
            logits[w * 2 * t + p] = if keep { raw[2 * n] } else { MASKED_LOGIT };
            logits[w * 2 * t + t + p] = if keep { raw[2 * n + 1] } else { MASKED_LOGIT };
        }
    }
}

/// d_raw (B·T, 2) (overwritten) from d_logits (B, 2, T): the transpose of
/// [`span_logits_forward`], 0 at masked positions (their logit is a constant).
pub fn span_logits_backward(d_raw: &mut [f32], d_logits: &[f32], mask: Option<&[bool]>, b: usize, t: usize) {
    for w in 0..b {
        for p in 0..t {
            let keep = mask.is_none_or(|m| m[w * t + p]);
            let n = w * t + p;
            d_raw[2 * n] = if keep { d_logits[w * 2 * t + p] } else { 0.0 };
            d_raw[2 * n + 1] = if keep { d_logits[w * 2 * t + t + p] } else { 0.0 };
        }
    }
}
