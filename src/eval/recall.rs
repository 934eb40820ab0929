//! Associative-recall accuracy against distance (`data::synthetic`): for held-out lines of the
//! task, whether a language model's most likely next character at each query is the value the
//! line paired with that key, and how far back that pair was.

use crate::data::synthetic::{RecallExample, RecallTask};
use crate::data::Tokenizer;
use crate::model::LanguageModel;
use anyhow::{ensure, Context, Result};

/// One query of one line: its distance in characters and whether the model got it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecallHit {
    pub distance: usize,
    pub correct: bool,
}

/// Runs `examples` through `model` (at most `model.max_batch` lines a pass). Each line is read
/// after a newline, as it follows the previous line in training: input "\n" + line, and the
/// logits at the query's key predict its value. The argmax over the whole vocabulary counts.
pub fn recall_hits<M: LanguageModel>(
    model: &mut M,
    tok: &Tokenizer,
    task: &RecallTask,
    examples: &[RecallExample],
    max_batch: usize,
) -> Result<Vec<RecallHit>> {
    let t = model.config().block_size;
    ensure!(
        task.max_len() <= t,
        "the recall lines are up to {} characters (with the newline before them) but the model reads {t}",
        task.max_len()
    );
    let v = model.config().vocab_size;
    let pad = tok.encode("\n")?[0];
    let mut hits = Vec::new();
    for batch in examples.chunks(max_batch.max(1)) {
        // (B, T): "\n" + line, padded with newlines (a causal model never sees the padding).
        let mut input = vec![pad; batch.len() * t];
        for (row, ex) in batch.iter().enumerate() {
            let ids = tok.encode(&format!("\n{}", ex.text)).context("a recall line")?;
            let n = ids.len().min(t);
            input[row * t..row * t + n].copy_from_slice(&ids[..n]);
        }
        model.forward_lm(&input, None, batch.len(), t, false, 0)?;
        let logits = model.logits();
        for (row, ex) in batch.iter().enumerate() {
            let bytes = ex.text.as_bytes();
            for &(at, distance) in &ex.answers {
                // Character `at` of the line is input position at + 1, predicted at position at.
                let r = &logits[(row * t + at) * v..(row * t + at + 1) * v];
                let best = (0..v).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap_or(0);
                let want = tok.encode(&(bytes[at] as char).to_string())?[0];
                hits.push(RecallHit { distance, correct: best == want as usize });
            }
        }
    }
    Ok(hits)
}

/// Accuracy per distance bin of `width` characters: (bin start, accuracy, queries), bins with
/// no query left out.
pub fn accuracy_by_distance(hits: &[RecallHit], width: usize) -> Vec<(usize, f64, usize)> {
    let width = width.max(1);
    let bins = hits.iter().map(|h| h.distance / width + 1).max().unwrap_or(0);
    let mut count = vec![(0usize, 0usize); bins];
    for h in hits {
        let c = &mut count[h.distance / width];
        c.0 += h.correct as usize;
        c.1 += 1;
    }
    count.iter().enumerate().filter(|(_, c)| c.1 > 0).map(|(i, c)| (i * width, c.0 as f64 / c.1 as f64, c.1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_count_each_hit_once() {
        let h = |distance, correct| RecallHit { distance, correct };
        let hits = [h(3, true), h(15, false), h(16, true), h(40, true), h(41, false), h(47, false)];
        assert_eq!(accuracy_by_distance(&hits, 16), vec![(0, 0.5, 2), (16, 1.0, 1), (32, 1.0 / 3.0, 3)]);
        assert!(accuracy_by_distance(&[], 16).is_empty());
    }
}
