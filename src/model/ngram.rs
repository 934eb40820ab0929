//! The traditional language model: an n-gram model with interpolated Kneser-Ney smoothing
//! (Kneser & Ney, 1995; Chen & Goodman, 1998), the baseline of `lmlab explain run scale`.
//! It follows NLTK's `KneserNeyInterpolated` (nltk.lm) exactly — one absolute discount `d` at
//! every order — and is checked against it (tests/ngram.rs, scripts/make_ngram_fixture.py).
//!
//! For a token w after the context u (the last n − 1 tokens or fewer):
//!
//! ```text
//! P(w | u)  = α(w, u) + γ(u) · P(w | u without its first token)
//! highest order:  α = max(c(u w) − d, 0) / c(u ·)             γ = d · N₁₊(u ·) / c(u ·)
//! lower orders:   α = max(N₁₊(· u w) − d, 0) / N₁₊(· u ·)     γ = d · N₁₊(u ·) / N₁₊(· u ·)
//! unigram:        P(w) = N₁₊(· w) / N₁₊(· ·)
//! ```
//!
//! c counts occurrences and N₁₊ distinct types (· is any token). NLTK's unigram gives a token
//! never seen in training probability 0; [`KneserNey::with_vocabulary`] instead interpolates the
//! unigram with the uniform distribution over a vocabulary of V tokens, as Chen & Goodman's
//! interpolated Kneser-Ney does (`P(w) = max(N₁₊(· w) − d, 0) / N₁₊(· ·) + d · N₁₊(·) / N₁₊(· ·) / V`,
//! N₁₊(·) the number of unigram types), so every token of the vocabulary scores. A context never seen
//! followed by a token (or, at a lower order, never seen after any token: only at the very
//! start of the text, where NLTK divides by zero) has α = 0, γ = 1.

use anyhow::{ensure, Result};
use std::collections::HashMap;

/// A fitted model: counts of every order.
#[derive(Clone, Debug)]
pub struct KneserNey {
    order: usize,
    discount: f64,
    /// Per context length m (0..order): context → (next token → occurrences).
    raw: Vec<HashMap<Vec<u32>, HashMap<u32, u64>>>,
    /// Per middle length m (0..order − 1): middle → (next token → N₁₊(· middle w)), and
    /// middle → N₁₊(· middle ·).
    continuation: Vec<HashMap<Vec<u32>, HashMap<u32, u64>>>,
    continuation_total: Vec<HashMap<Vec<u32>, u64>>,
    /// V of the uniform distribution under the unigram, or None (NLTK's unigram).
    uniform_vocab: Option<usize>,
}

impl KneserNey {
    /// Counts every n-gram of `tokens` up to `order` (≥ 2) tokens.
    pub fn fit(tokens: &[u32], order: usize, discount: f64) -> Result<KneserNey> {
        ensure!(order >= 2, "a Kneser-Ney model needs order ≥ 2 (its unigram is a bigram statistic), got {order}");
        ensure!((0.0..1.0).contains(&discount), "the discount must be in [0, 1), got {discount}");
        ensure!(tokens.len() >= order, "{} tokens are too few for {order}-grams", tokens.len());
        let mut raw = vec![HashMap::<Vec<u32>, HashMap<u32, u64>>::new(); order];
        for k in 1..=order {
            for g in tokens.windows(k) {
                *raw[k - 1].entry(g[..k - 1].to_vec()).or_default().entry(g[k - 1]).or_default() += 1;
            }
        }
        // Each distinct k-gram (x, middle, w), k ≥ 2, counts once for (middle, w) and once for middle.
        let mut continuation = vec![HashMap::<Vec<u32>, HashMap<u32, u64>>::new(); order - 1];
        let mut continuation_total = vec![HashMap::<Vec<u32>, u64>::new(); order - 1];
        for k in 2..=order {
            for (ctx, next) in &raw[k - 1] {
                let middle = ctx[1..].to_vec();
                for &w in next.keys() {
                    *continuation[k - 2].entry(middle.clone()).or_default().entry(w).or_default() += 1;
                }
                *continuation_total[k - 2].entry(middle).or_default() += next.len() as u64;
            }
        }
        Ok(KneserNey { order, discount, raw, continuation, continuation_total, uniform_vocab: None })
    }

    /// The model with its unigram interpolated with the uniform distribution over `vocab_size`
    /// tokens (ids below it; see the module notes): tokens never seen in training then get a
    /// probability above zero. The vocabulary must hold every training token.
    pub fn with_vocabulary(mut self, vocab_size: usize) -> Result<KneserNey> {
        let largest = self.raw[0].get(&Vec::new()).and_then(|c| c.keys().max().copied());
        ensure!(
            largest.is_none_or(|id| (id as usize) < vocab_size),
            "a vocabulary of {vocab_size} tokens does not hold every training token (largest id {largest:?})"
        );
        self.uniform_vocab = Some(vocab_size);
        Ok(self)
    }

    pub fn order(&self) -> usize {
        self.order
    }

    /// The numbers the model stores: one count per distinct n-gram of every order, and one per
    /// continuation type — its size, as a parameter count is a network's.
    pub fn stored_counts(&self) -> usize {
        let raw: usize = self.raw.iter().flat_map(|m| m.values()).map(|n| n.len()).sum();
        let cont: usize = self.continuation.iter().flat_map(|m| m.values()).map(|n| n.len()).sum();
        raw + cont
    }

    /// P(w | context); only the last `order − 1` tokens of the context count.
    pub fn prob(&self, w: u32, context: &[u32]) -> f64 {
        let u = &context[context.len().saturating_sub(self.order - 1)..];
        if u.is_empty() {
            let seen = self.continuation[0].get(&Vec::new()).and_then(|c| c.get(&w)).copied().unwrap_or(0);
            let total = self.continuation_total[0].get(&Vec::new()).copied().unwrap_or(0);
            if total == 0 {
                return self.uniform_vocab.map_or(0.0, |v| 1.0 / v as f64);
            }
            let (seen, total) = (seen as f64, total as f64);
            return match self.uniform_vocab {
                None => seen / total,
                Some(v) => {
                    let types = self.continuation[0].get(&Vec::new()).map_or(0, |c| c.len()) as f64;
                    (seen - self.discount).max(0.0) / total + self.discount * types / total / v as f64
                }
            };
        }
        let m = u.len();
        let lower = self.prob(w, &u[1..]);
        let Some(next) = self.raw[m].get(u) else { return lower };
        let types = next.len() as f64;
        let (count, total) = if m + 1 == self.order {
            (next.get(&w).copied().unwrap_or(0), next.values().sum::<u64>())
        } else {
            let cc = self.continuation[m].get(u).and_then(|c| c.get(&w)).copied().unwrap_or(0);
            (cc, self.continuation_total[m].get(u).copied().unwrap_or(0))
        };
        if total == 0 {
            return lower;
        }
        let alpha = (count as f64 - self.discount).max(0.0) / total as f64;
        let gamma = self.discount * types / total as f64;
        alpha + gamma * lower
    }

    /// Mean −ln P(token | the tokens before it) over `tokens[order − 1..]` (every scored token
    /// has a full context), in nats, comparable with a neural model's cross-entropy. A token
    /// the model gives probability 0 (never seen in training, without [`Self::with_vocabulary`])
    /// is an error naming it.
    pub fn cross_entropy(&self, tokens: &[u32]) -> Result<f64> {
        let start = self.order - 1;
        ensure!(tokens.len() > start, "{} tokens are too few to score with {}-grams", tokens.len(), self.order);
        let mut sum = 0.0;
        for i in start..tokens.len() {
            let p = self.prob(tokens[i], &tokens[i - start..i]);
            ensure!(p > 0.0, "token {} at position {i} has probability 0 (never seen in training)", tokens[i]);
            sum -= p.ln();
        }
        Ok(sum / (tokens.len() - start) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_sum_to_one_over_the_vocabulary() {
        let text: Vec<u32> = "abracadabra arbadacarba cadabra".bytes().map(u32::from).collect();
        let mut vocab = text.clone();
        vocab.sort_unstable();
        vocab.dedup();
        for order in 2..=4 {
            let m = KneserNey::fit(&text, order, 0.75).unwrap();
            for ctx in [&text[..0], &text[3..4], &text[5..8], &text[10..13], &[b'z' as u32, b'a' as u32][..]] {
                let total: f64 = vocab.iter().map(|&w| m.prob(w, ctx)).sum();
                assert!((total - 1.0).abs() < 1e-12, "order {order}, context {ctx:?}: {total}");
            }
        }
        assert!(KneserNey::fit(&text, 1, 0.1).is_err());
        assert!(KneserNey::fit(&text, 3, 1.5).is_err());
    }

    #[test]
    fn a_vocabulary_gives_unseen_tokens_mass_and_still_sums_to_one() {
        let text: Vec<u32> = "abracadabra arbadacarba cadabra".bytes().map(u32::from).collect();
        let v = 128; // every byte below 128: most never seen
        for order in 2..=4 {
            let m = KneserNey::fit(&text, order, 0.75).unwrap().with_vocabulary(v).unwrap();
            for ctx in [&text[..0], &text[3..4], &text[5..8], &[b'z' as u32, b'a' as u32][..]] {
                let total: f64 = (0..v as u32).map(|w| m.prob(w, ctx)).sum();
                assert!((total - 1.0).abs() < 1e-12, "order {order}, context {ctx:?}: {total}");
            }
            // An unseen token: d · N₁₊(·) / N₁₊(· ·) / V at the unigram, scaled by the γs above.
            assert!(m.prob(b'z' as u32, &[]) > 0.0);
            let unseen = m.cross_entropy(&"abracazabra".bytes().map(u32::from).collect::<Vec<_>>()).unwrap();
            assert!(unseen.is_finite());
            assert!(KneserNey::fit(&text, order, 0.75).unwrap().cross_entropy(&[97, 98, 114, 97, 122]).is_err());
        }
        // The unigram by hand: 13 distinct bigrams, 6 distinct second characters, "a" after 5
        // distinct characters, "z" after none: (5 − 0.75) / 13 + 0.75 · 6 / 13 / 128, and the
        // second term alone.
        let m = KneserNey::fit(&text, 2, 0.75).unwrap().with_vocabulary(v).unwrap();
        assert!((m.prob(b'a' as u32, &[]) - (4.25 / 13.0 + 4.5 / 13.0 / 128.0)).abs() < 1e-15);
        assert!((m.prob(b'z' as u32, &[]) - 4.5 / 13.0 / 128.0).abs() < 1e-15);
        assert!(KneserNey::fit(&text, 2, 0.75).unwrap().with_vocabulary(5).is_err());
    }
}
