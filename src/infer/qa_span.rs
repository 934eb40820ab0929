//! Extractive question answering, the parts around the model: cutting a long context into
//! overlapping windows that each fit the model beside the question, and choosing the answer
//! span from a span head's start and end logits, mapped back to characters of the context.
//! The conventions are those of Hugging Face's `run_qa.py` (`prepare_validation_features`,
//! `postprocess_qa_predictions`): windows of context tokens advancing by `len − stride`,
//! candidates from the `n_best` largest start and end logits, spans that start and end inside
//! the context, end ≥ start and at most `max_answer_len` tokens, ranked by start + end logit.

use anyhow::{ensure, Result};

/// One window: the context tokens `start..end` (token indices into the context's tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub end: usize,
}

/// Windows of at most `len` context tokens over `n` tokens, each starting `len − stride`
/// tokens after the previous one (the stride is the overlap), the last ending at `n`.
pub fn windows(n: usize, len: usize, stride: usize) -> Result<Vec<Window>> {
    ensure!(len > 0, "the context window must hold at least one token");
    ensure!(stride < len, "the stride ({stride}) must be smaller than the window ({len} tokens)");
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + len).min(n);
        out.push(Window { start, end });
        if end == n {
            break;
        }
        start += len - stride;
    }
    Ok(out)
}

/// A candidate answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Character range of the answer in the context.
    pub chars: (usize, usize),
    /// start logit + end logit.
    pub score: f32,
}

/// The best spans (at most `n_best`, best first) of one window from its start and end logits
/// over the window's sequence positions; `offsets[i]` is the character range in the context of
/// position i, or None for positions outside the context (question, special tokens, padding).
pub fn best_spans(
    start_logits: &[f32],
    end_logits: &[f32],
    offsets: &[Option<(usize, usize)>],
    n_best: usize,
    max_answer_len: usize,
) -> Vec<Span> {
    let top = |l: &[f32]| {
        let mut idx: Vec<usize> = (0..l.len()).collect();
        // Largest first; ties by position, as a stable argsort of the negated logits.
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
        idx.truncate(n_best);
        idx
    };
    let mut out = Vec::new();
    for &s in &top(start_logits) {
        for &e in &top(end_logits) {
            let (Some(Some(os)), Some(Some(oe))) = (offsets.get(s), offsets.get(e)) else { continue };
            if e < s || e - s + 1 > max_answer_len {
                continue;
            }
            out.push(Span { chars: (os.0, oe.1), score: start_logits[s] + end_logits[e] });
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(n_best);
    out
}
