//! BERT's masking for masked-language-model training, as Hugging Face's
//! `DataCollatorForLanguageModeling` does it: each position is chosen with probability p
//! (0.15); a chosen position's target is its token and its input becomes `[MASK]` with
//! probability 0.8, a uniformly random token of the vocabulary with 0.1, and stays as it was
//! with 0.1; every other position has target -1 (ignored by the loss).
//!
//! ```text
//! window  (B, T) ─ choose (p) ─┬─ targets (B, T): token at chosen positions, -1 elsewhere
//!                              └─ inputs  (B, T): `[MASK]` 80% / random 10% / kept 10%
//! ```
//!
//! Special tokens (`[CLS]`, `[SEP]`, `[PAD]`) are never chosen, as the collator's
//! `special_tokens_mask` keeps them. A WordPiece corpus is encoded as `run_mlm.py` does
//! without `--line_by_line` ([`Tokenizer::encode_corpus`]): each line is one encoding between
//! `[CLS]` and `[SEP]`, and the encodings are concatenated into one stream that windows are drawn
//! from.
//!
//! [`Tokenizer::encode_corpus`]: super::tokenizer::Tokenizer::encode_corpus

use super::Batch;
use crate::kernels::crossentropy::IGNORE_INDEX;
use anyhow::{ensure, Result};
use rand::Rng;

/// The masking of one MLM run.
#[derive(Clone, Debug)]
pub struct MlmMasking {
    /// The `[MASK]` token's id.
    pub mask_id: u32,
    /// Random replacements are drawn from 0..vocab_size.
    pub vocab_size: u32,
    /// The share of positions to predict.
    pub probability: f64,
    /// Ids never chosen: the tokenizer's special tokens (none for characters).
    pub special: Vec<u32>,
}

impl MlmMasking {
    pub fn new(mask_id: u32, vocab_size: usize, probability: f64, special: Vec<u32>) -> Result<Self> {
        ensure!(probability > 0.0 && probability < 1.0, "the masking probability must be in (0, 1), got {probability}");
        ensure!((mask_id as usize) < vocab_size, "the [MASK] id {mask_id} is outside the vocabulary of {vocab_size}");
        Ok(MlmMasking { mask_id, vocab_size: vocab_size as u32, probability, special })
    }

    /// Turns a batch of windows (its `inputs`; the causal LM's `targets` are overwritten) into
    /// the masked LM's inputs and targets. Returns how many positions were chosen.
    pub fn apply(&self, batch: &mut Batch, rng: &mut impl Rng) -> usize {
        let n = batch.b * batch.t;
        self.apply_slices(&mut batch.inputs[..n], &mut batch.targets[..n], rng)
    }

    /// [`MlmMasking::apply`] on an (inputs, targets) pair of equal length.
    pub fn apply_slices(&self, inputs: &mut [u32], targets: &mut [i32], rng: &mut impl Rng) -> usize {
        let mut chosen = 0;
        for (x, y) in inputs.iter_mut().zip(targets.iter_mut()) {
            // The draw happens for special tokens too (as the collator draws a whole matrix),
            // so a stream's masking does not depend on where its special tokens sit.
            if rng.gen::<f64>() >= self.probability || self.special.contains(x) {
                *y = IGNORE_INDEX;
                continue;
            }
            chosen += 1;
            *y = *x as i32;
            let r = rng.gen::<f64>();
            if r < 0.8 {
                *x = self.mask_id;
            } else if r < 0.9 {
                *x = rng.gen_range(0..self.vocab_size);
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// Over many positions the shares come out as BERT's: 15% chosen, of them 80% `[MASK]`,
    /// about 10% changed to another token, the rest kept; unchosen positions keep their
    /// token and have target -1.
    #[test]
    fn shares_match_bert() {
        let m = MlmMasking::new(99, 100, 0.15, vec![]).unwrap();
        let n = 200_000;
        let original: Vec<u32> = (0..n).map(|i| (i % 97) as u32).collect();
        let mut inputs = original.clone();
        let mut targets = vec![0i32; n];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let chosen = m.apply_slices(&mut inputs, &mut targets, &mut rng);
        let (mut masked, mut changed, mut kept) = (0usize, 0usize, 0usize);
        for i in 0..n {
            if targets[i] == IGNORE_INDEX {
                assert_eq!(inputs[i], original[i], "an unchosen position changed");
                continue;
            }
            assert_eq!(targets[i], original[i] as i32, "a chosen position's target is its token");
            match inputs[i] {
                99 => masked += 1,
                x if x == original[i] => kept += 1,
                _ => changed += 1,
            }
        }
        assert_eq!(masked + changed + kept, chosen);
        let share = |k: usize| k as f64 / chosen as f64;
        assert!((chosen as f64 / n as f64 - 0.15).abs() < 0.005, "chosen {chosen} of {n}");
        assert!((share(masked) - 0.8).abs() < 0.01, "masked {}", share(masked));
        // A random replacement equals the original token 1 time in 100.
        assert!((share(changed) - 0.099).abs() < 0.01, "changed {}", share(changed));
        assert!((share(kept) - 0.101).abs() < 0.01, "kept {}", share(kept));
    }

    #[test]
    fn refuses_bad_settings() {
        assert!(MlmMasking::new(100, 100, 0.15, vec![]).is_err());
        assert!(MlmMasking::new(1, 100, 0.0, vec![]).is_err());
        assert!(MlmMasking::new(1, 100, 1.0, vec![]).is_err());
    }

    /// Special tokens keep their id and are never predicted, even at a high probability; the
    /// other positions are chosen at the usual rate.
    #[test]
    fn special_tokens_are_never_chosen() {
        let m = MlmMasking::new(4, 50, 0.5, vec![2, 3]).unwrap();
        let original: Vec<u32> = (0..20_000).map(|i| (i % 10) as u32).collect();
        let mut inputs = original.clone();
        let mut targets = vec![0i32; original.len()];
        let chosen = m.apply_slices(&mut inputs, &mut targets, &mut Xoshiro256PlusPlus::seed_from_u64(1));
        for ((&x, &y), &o) in inputs.iter().zip(&targets).zip(&original) {
            if o == 2 || o == 3 {
                assert_eq!((x, y), (o, IGNORE_INDEX), "special token {o} was chosen");
            }
        }
        // 8 of 10 ids can be chosen, each half the time.
        let share = chosen as f64 / original.len() as f64;
        assert!((share - 0.4).abs() < 0.02, "chosen share {share}");
    }
}
