//! llama2.c's generation loop (`run.c`'s `generate`) on an lmlab [`Transformer`].
//!
//! `steps` counts positions from the first prompt token (BOS) on, prompt included, and is
//! capped at the model's context (llama2.c's `seq_len`). At each position the model runs; while
//! the prompt lasts its next token is forced, after that the next token is picked from the
//! logits ([`crate::infer::sample::generate`]'s rules: argmax at temperature 0). A picked BOS (id 1) ends the text,
//! as in llama2.c.

use crate::data::llama2c_tokenizer::{printable, Llama2cTokenizer, BOS};
use crate::infer::sample::{SampleOptions, Sampler};
use crate::model::transformer::{LogitRows, Transformer};
use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::path::Path;

/// What [`generate_steps`] did.
#[derive(Clone, Debug)]
pub struct StepsOutput {
    /// The whole sequence: the prompt, then the generated tokens (without a final BOS).
    pub tokens: Vec<u32>,
    /// Tokens picked by the model (not forced by the prompt).
    pub generated: usize,
}

/// Runs llama2.c's loop for `steps` positions after `prompt` (which starts with BOS), calling
/// `on_token(prev, next)` for every token that follows another (prompt tokens after the first,
/// then generated ones), as llama2.c prints them.
///
/// Runs on the KV cache like llama2.c: the prompt in one pass (llama2.c feeds it token by
/// token; the logits are the same), then one position per step.
pub fn generate_steps<R: Rng>(
    model: &mut Transformer,
    prompt: &[u32],
    steps: usize,
    temperature: f32,
    top_k: Option<usize>,
    rng: &mut R,
    mut on_token: impl FnMut(u32, u32),
) -> Result<StepsOutput> {
    ensure!(!prompt.is_empty(), "the prompt must hold at least the BOS token");
    let steps = steps.min(model.config.block_size);
    ensure!(
        prompt.len() <= steps,
        "the prompt has {} tokens (with BOS) but only {steps} steps are run: raise the steps (at most the \
         model's seq_len {})",
        prompt.len(),
        model.config.block_size
    );
    let opts = SampleOptions { max_new_tokens: 1, temperature, top_k, ..SampleOptions::default() };
    let mut sampler = Sampler::new(&opts, model.config.vocab_size)?;
    let mut cache = model.kv_cache(1)?;
    let mut tokens = prompt.to_vec();
    for w in prompt.windows(2) {
        on_token(w[0], w[1]);
    }
    let mut generated = 0;
    let mut logits = model.forward_cached(prompt, &[prompt.len()], prompt.len(), &mut cache, LogitRows::Last)?;
    // Position pos predicts token pos + 1; the prompt fixes tokens up to prompt.len() - 1.
    for pos in prompt.len() - 1..steps {
        let next = sampler.pick(logits, rng);
        if next == BOS {
            break;
        }
        on_token(*tokens.last().unwrap(), next);
        tokens.push(next);
        generated += 1;
        if pos + 1 == steps {
            break;
        }
        logits = model.forward_cached(&[next], &[1], 1, &mut cache, LogitRows::Last)?;
    }
    Ok(StepsOutput { tokens, generated })
}

/// A llama2.c `model.bin` with its `tokenizer.bin`, sampled as llama2.c's `run` does.
pub struct Llama2cRunner {
    model: Transformer,
    tokenizer: Llama2cTokenizer,
    seq_len: usize,
}

/// What one run of [`Llama2cRunner::generate`] asks for.
#[derive(Clone, Copy, Debug)]
pub struct Llama2cRun {
    /// llama2.c's `-n`: positions to run, BOS and the prompt included (default 256).
    pub steps: Option<usize>,
    /// Instead of `steps`: new tokens after the prompt.
    pub max_new_tokens: Option<usize>,
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub seed: u64,
}

impl Llama2cRunner {
    /// Reads both files; the tokenizer must have the model's vocabulary size.
    pub fn load(model_path: &Path, tok_path: &Path) -> Result<Self> {
        let (m, tokenizer) = crate::io::llama2c::read_with_tokenizer(model_path, tok_path, 1)?;
        Ok(Llama2cRunner { seq_len: m.config.seq_len, model: m.model, tokenizer })
    }

    /// The model's context (llama2.c's `seq_len`).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// `prompt` encoded with BOS, as llama2.c encodes it.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(prompt, true, false).context("the prompt cannot be encoded")
    }

    /// The positions `run` asks for after the encoded prompt `ids` (before capping at seq_len).
    pub fn steps(ids: &[u32], run: &Llama2cRun) -> usize {
        match (run.steps, run.max_new_tokens) {
            (Some(s), _) => s,
            (None, Some(n)) => ids.len() - 1 + n,
            (None, None) => 256,
        }
    }

    /// Generates `steps` positions after the encoded prompt `ids`, passing the bytes of every
    /// printable piece (prompt tokens after BOS, then generated ones) to `on_piece` as llama2.c
    /// prints them. A piece that cannot be decoded is an error once generation has finished.
    pub fn generate(
        &mut self,
        ids: &[u32],
        steps: usize,
        run: &Llama2cRun,
        mut on_piece: impl FnMut(&[u8]),
    ) -> Result<StepsOutput> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(run.seed);
        let tok = &self.tokenizer;
        let mut failed = None;
        let out =
            generate_steps(&mut self.model, ids, steps, run.temperature, run.top_k, &mut rng, |prev, next| match tok
                .piece(prev, next)
            {
                Ok(p) if printable(&p) => on_piece(&p),
                Ok(_) => {}
                Err(e) => failed = Some(e),
            })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
