//! Text from a decoder checkpoint and a text prompt, the three ways `lmlab sample` offers: one
//! sample streamed as it is generated, a batch of samples (each with its own seed) cut at the
//! stop strings, or the best beam-search hypothesis. LSTM, GRU and CNN checkpoints
//! (`crate::model::baseline`) sample too, one sequence at a time on their own state (no beam
//! search).

use crate::data::Tokenizer;
use crate::infer::beam::{beam_search, BeamOptions};
use crate::infer::sample::{generate_batch, generate_text, generate_text_with, BaselineStepper, Generation};
use crate::infer::sample::{SampleOptions, StopStrings};
use crate::io::checkpoint::{self, Checkpoint};
use crate::model::baseline::BaselineLm;
use crate::model::transformer::Arch;
use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::ops::ControlFlow;
use std::path::Path;

/// How text is produced from the prompt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SampleHow {
    /// `num_samples` independent samples; sample i uses seed + i.
    Sample { num_samples: usize },
    /// Beam search: the best hypothesis.
    Beam { beam: usize, length_penalty: f32 },
}

impl SampleHow {
    /// Sequences the model runs at once (samples go in batches of at most 16).
    pub fn batch_rows(&self) -> Result<usize> {
        Ok(match *self {
            SampleHow::Sample { num_samples } => {
                anyhow::ensure!(num_samples >= 1, "--num-samples must be at least 1");
                num_samples.min(16)
            }
            SampleHow::Beam { beam, .. } => beam.max(1),
        })
    }
}

/// The best beam-search hypothesis, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct BeamText {
    /// The generated text (without the prompt).
    pub text: String,
    pub log_prob: f64,
    /// `log_prob` with the length penalty.
    pub score: f64,
    /// Generated tokens.
    pub tokens: usize,
}

/// A decoder checkpoint loaded for inference, with its prompt encoded.
pub struct CheckpointSampler {
    ck: Loaded,
    prompt: Vec<u32>,
}

/// The two kinds of language-model checkpoint (one per sampler: the size difference is moot).
#[allow(clippy::large_enum_variant)]
enum Loaded {
    Transformer(Checkpoint),
    Baseline(Checkpoint<BaselineLm>),
}

impl CheckpointSampler {
    /// Loads the decoder (or LSTM, GRU, CNN) checkpoint `dir` for `rows` sequences at once
    /// ([`SampleHow::batch_rows`]) and encodes `prompt` (at least one token).
    pub fn load(dir: &Path, prompt: &str, rows: usize) -> Result<Self> {
        let ck = if checkpoint::stored_arch(dir)?.is_baseline() {
            if crate::dist::world().is_distributed() {
                bail!("LSTM, GRU and CNN checkpoints sample in one process; run lmlab sample without mpirun");
            }
            // One sequence at a time: the recurrent state is per sequence.
            Loaded::Baseline(checkpoint::load_lm(dir, 1, false, true)?)
        } else {
            let mut ck = checkpoint::load_inference(dir, rows)?;
            ck.require_arch(Arch::Decoder, dir, "sample")?;
            // Under mpirun: this rank's tensor-parallel shard.
            super::tensor_parallel::distribute(&mut ck.model)?;
            Loaded::Transformer(ck)
        };
        let prompt = match &ck {
            Loaded::Transformer(c) => c.tokenizer.encode(prompt),
            Loaded::Baseline(c) => c.tokenizer.encode(prompt),
        }
        .context("the prompt cannot be encoded")?;
        anyhow::ensure!(!prompt.is_empty(), "the prompt is empty: give --prompt with at least one character");
        Ok(CheckpointSampler { ck, prompt })
    }

    /// Tokens of the prompt; the model sees only the last [`CheckpointSampler::context_limit`].
    pub fn prompt_tokens(&self) -> usize {
        self.prompt.len()
    }

    /// How many of the latest tokens the next one depends on: `block_size` for a Transformer,
    /// the receptive field for the CNN, no limit (None) for the recurrent models.
    pub fn context_limit(&self) -> Option<usize> {
        match &self.ck {
            Loaded::Transformer(c) => Some(c.model.config.block_size),
            Loaded::Baseline(c) => match c.model.config.arch {
                Arch::Cnn => Some(c.model.config.receptive_field().min(c.model.config.block_size)),
                _ => None,
            },
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        match &self.ck {
            Loaded::Transformer(c) => &c.tokenizer,
            Loaded::Baseline(c) => &c.tokenizer,
        }
    }

    /// One sample, passed to `on_text` piece by piece as soon as each piece is final.
    pub fn stream(&mut self, opts: &SampleOptions, seed: u64, on_text: impl FnMut(&str)) -> Result<Generation> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        match &mut self.ck {
            Loaded::Transformer(Checkpoint { model, tokenizer, .. }) => {
                generate_text(model, tokenizer, &self.prompt, opts, &mut rng, on_text)
            }
            Loaded::Baseline(Checkpoint { model, tokenizer, .. }) => {
                let mut stepper = BaselineStepper::new(model);
                generate_text_with(&mut stepper, tokenizer, &self.prompt, opts, &mut rng, on_text)
            }
        }
    }

    /// `num_samples` samples generated together (sample i seeded with seed + i), each cut where
    /// its first stop string begins. The baselines generate them one after another.
    pub fn samples(&mut self, opts: &SampleOptions, seed: u64, num_samples: usize) -> Result<Vec<String>> {
        if let Loaded::Baseline(_) = self.ck {
            return (0..num_samples as u64).map(|i| Ok(self.stream(opts, seed + i, |_| {})?.text)).collect();
        }
        let Loaded::Transformer(ck) = &mut self.ck else { unreachable!() };
        let prompts = vec![self.prompt.clone(); num_samples];
        let mut rngs: Vec<_> = (0..num_samples as u64).map(|i| Xoshiro256PlusPlus::seed_from_u64(seed + i)).collect();
        let stops = StopStrings::new(&opts.stop)?;
        let Checkpoint { model, tokenizer: tok, .. } = ck;
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); num_samples];
        let mut failed = None;
        // A row ends once its text holds a stop string; it is cut there below.
        generate_batch(model, &prompts, opts, &mut rngs, |r, id| {
            out[r].push(id);
            if opts.stop.is_empty() {
                return ControlFlow::Continue(());
            }
            match tok.decode_after(prompts[r].last().copied(), &out[r]) {
                Ok(text) if stops.find(&text, 0).is_some() => ControlFlow::Break(()),
                Ok(_) => ControlFlow::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        out.iter()
            .map(|ids| {
                let mut text = tok.decode_after(self.prompt.last().copied(), ids)?;
                text.truncate(stops.find(&text, 0).map_or(text.len(), |(at, _)| at));
                Ok(text)
            })
            .collect()
    }

    /// Beam search of `beam` hypotheses, ending at the tokenizer's end-of-text token when it
    /// has one, else after `max_new_tokens`.
    pub fn beam(&mut self, max_new_tokens: usize, beam: usize, length_penalty: f32) -> Result<BeamText> {
        let Loaded::Transformer(Checkpoint { model, tokenizer: tok, .. }) = &mut self.ck else {
            bail!("beam search runs on a Transformer's KV cache; sample LSTM, GRU and CNN checkpoints instead");
        };
        let bo = BeamOptions { beam, max_new_tokens, length_penalty, end: tok.end_of_text() };
        let hyps = beam_search(model, &self.prompt, &bo)?;
        let best = hyps.first().context("beam search finished no hypothesis")?;
        Ok(BeamText {
            text: tok.decode_after(self.prompt.last().copied(), &best.tokens)?,
            log_prob: best.log_prob,
            score: best.score,
            tokens: best.tokens.len(),
        })
    }
}
