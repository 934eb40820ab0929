//! A tokenized corpus split into train and validation, sampled as random contiguous windows.

use anyhow::{ensure, Result};
use rand::Rng;

/// Token ids of a corpus, split nanoGPT-style: the first `1 - val_fraction` for training, the
/// rest for validation.
pub struct TokenDataset {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

/// One batch: inputs (B, T) and next-token targets (B, T), preallocated and refilled in place.
pub struct Batch {
    pub b: usize,
    pub t: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<i32>,
}

impl Batch {
    pub fn new(b: usize, t: usize) -> Self {
        Batch { b, t, inputs: vec![0; b * t], targets: vec![0; b * t] }
    }
}

impl TokenDataset {
    pub fn split(tokens: Vec<u32>, val_fraction: f64) -> Result<Self> {
        ensure!((0.0..1.0).contains(&val_fraction), "data.val_fraction must be in [0, 1), got {val_fraction}");
        let n_train = ((1.0 - val_fraction) * tokens.len() as f64) as usize;
        let val = tokens[n_train..].to_vec();
        let mut train = tokens;
        train.truncate(n_train);
        Ok(TokenDataset { train, val })
    }

    /// Checks that both splits hold at least one window of `t + 1` tokens.
    pub fn check_fits(&self, t: usize) -> Result<()> {
        for (name, split) in [("train", &self.train), ("val", &self.val)] {
            ensure!(
                split.len() > t,
                "the {name} split has {} tokens, fewer than block_size + 1 = {}: use a larger data file or a smaller block_size",
                split.len(),
                t + 1
            );
        }
        Ok(())
    }
}

/// Fills `batch` with B random windows of `split`: inputs `x[i..i+T]`, targets `x[i+1..i+T+1]`.
pub fn sample_batch<R: Rng>(split: &[u32], batch: &mut Batch, rng: &mut R) {
    sample_batch_shard(split, batch, rng, 1, 0)
}

/// Shard `shard` of `shards` of a global batch of `shards · B` windows (B = `batch.b`): the rng
/// draws every window's start, as [`sample_batch`] of the global batch would, and `batch`
/// receives windows `shard·B .. (shard+1)·B`. The ranks of a data-parallel job, sharing the
/// rng's state, together hold exactly the batch one process would draw.
pub fn sample_batch_shard<R: Rng>(split: &[u32], batch: &mut Batch, rng: &mut R, shards: usize, shard: usize) {
    let (t, b) = (batch.t, batch.b);
    for global in 0..b * shards {
        let start = rng.gen_range(0..split.len() - t);
        if global / b != shard {
            continue;
        }
        let row = global % b;
        batch.inputs[row * t..(row + 1) * t].copy_from_slice(&split[start..start + t]);
        for (dst, &src) in batch.targets[row * t..(row + 1) * t].iter_mut().zip(&split[start + 1..start + t + 1]) {
            *dst = src as i32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn split_and_windows() {
        let d = TokenDataset::split((0..100).collect(), 0.1).unwrap();
        assert_eq!(d.train.len(), 90);
        assert_eq!(d.val, (90..100).collect::<Vec<_>>());
        let mut b = Batch::new(4, 8);
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        sample_batch(&d.train, &mut b, &mut rng);
        for row in 0..4 {
            let x = &b.inputs[row * 8..row * 8 + 8];
            let y = &b.targets[row * 8..row * 8 + 8];
            for i in 0..8 {
                assert_eq!(y[i], x[i] as i32 + 1, "targets are the inputs shifted by one");
            }
        }
        assert!(d.check_fits(9).is_ok());
        assert!(d.check_fits(10).unwrap_err().to_string().contains("val split"));
    }
}
