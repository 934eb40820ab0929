//! Evaluations of checkpoints, as `lmlab eval` runs them: language modelling (sliding-window
//! perplexity), next-token logits, fluency of generated texts, efficiency. Each returns
//! [`Run`]s or metrics by name, which [`super::stability`] renders as a table or JSON.

use super::efficiency;
use super::files::read_items;
use super::perplexity::sliding_window_eval;
use super::stability::Run;
use crate::data::TokenDataset;
use crate::io::checkpoint::{self, Checkpoint};
use crate::kernels::precision::Precision;
use crate::model::transformer::Arch;
use crate::util::read_corpus;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

/// Metrics by name, in report order.
pub type Metrics = Vec<(String, f64)>;

/// How a run is named in reports: its file or checkpoint path.
pub fn run_name(p: &Path) -> String {
    p.display().to_string()
}

/// `lmlab eval COMMAND` scores with a language model: `ck` (loaded from `dir`) must be a decoder.
fn require_decoder(ck: &Checkpoint, dir: &Path, command: &str) -> Result<()> {
    ensure!(
        ck.model.config.arch == Arch::Decoder,
        "lmlab eval {command} needs a decoder checkpoint, but {} holds model.arch = {:?}",
        dir.display(),
        ck.model.config.arch
    );
    Ok(())
}

/// Loss, perplexity and bits per token of the decoder checkpoint `dir` on the text file `data`
/// (default: the validation split of the checkpoint's training data), with a sliding window of
/// `context` tokens (default block_size + 1) moving by `stride` (default context − 1), its
/// matrix products in `precision` (bf16/f16: autocast's numerics, as in training).
pub fn language_model(
    dir: &Path,
    data: Option<&Path>,
    context: Option<usize>,
    stride: Option<usize>,
    precision: Precision,
) -> Result<Metrics> {
    // A window longer than the trained context rebuilds the model for it (length
    // extrapolation; a learned position table cannot, and says so).
    let trained = checkpoint::read_model_config(dir)?.block_size;
    let mut ck = match context {
        Some(c) if c > trained + 1 => checkpoint::load_inference_at_context(dir, 8, c - 1)?,
        _ => checkpoint::load_inference(dir, 8)?,
    };
    require_decoder(&ck, dir, "lm")?;
    // Under mpirun: this rank's tensor-parallel shard.
    crate::infer::tensor_parallel::distribute(&mut ck.model)?;
    ck.model.set_precision(precision);
    let tokens = match data {
        Some(path) => {
            let text = read_corpus(path)?;
            ck.tokenizer
                .encode(&text)
                .with_context(|| format!("{} cannot be encoded by the checkpoint's tokenizer", path.display()))?
        }
        None => {
            let path = PathBuf::from(&ck.run_config.data.path);
            let text = read_corpus(&path).with_context(|| {
                "the checkpoint's training data is needed for its validation split (or pass --data FILE)"
            })?;
            let toks = ck.tokenizer.encode(&text)?;
            TokenDataset::split(toks, ck.run_config.data.val_fraction)?.val
        }
    };
    let context = context.unwrap_or(ck.model.config.block_size + 1);
    let stride = stride.unwrap_or(context.saturating_sub(1).max(1));
    let r = sliding_window_eval(&mut ck.model, &tokens, context, stride)?;
    Ok(vec![
        ("loss".to_string(), r.loss),
        ("perplexity".into(), r.perplexity),
        ("bits_per_token".into(), r.bits_per_token),
        ("tokens".into(), r.tokens as f64),
        ("context".into(), context as f64),
        ("stride".into(), stride as f64),
    ])
}

/// A decoder's next-token logits at every position of a text.
#[derive(Clone, Debug, PartialEq)]
pub struct NextTokenLogits {
    pub ids: Vec<u32>,
    pub vocab_size: usize,
    /// (T, vocab_size), row-major.
    pub logits: Vec<f32>,
}

impl NextTokenLogits {
    /// `{"ids": [...], "logits": [[...], ...]}`, every f32 printed exactly.
    pub fn to_json(&self) -> Result<String> {
        let rows: Vec<&[f32]> = self.logits.chunks_exact(self.vocab_size).collect();
        Ok(serde_json::to_string(&serde_json::json!({ "ids": self.ids, "logits": rows }))?)
    }
}

/// One forward pass of the decoder checkpoint `dir` over `text` (at most block_size tokens).
pub fn next_token_logits(dir: &Path, text: &str) -> Result<NextTokenLogits> {
    let mut ck = checkpoint::load_inference(dir, 1)?;
    require_decoder(&ck, dir, "logits")?;
    crate::infer::tensor_parallel::distribute(&mut ck.model)?;
    let ids = ck.tokenizer.encode(text).context("the text cannot be encoded")?;
    let (t, vocab_size) = (ids.len(), ck.model.config.vocab_size);
    ensure!(
        t >= 1 && t <= ck.model.config.block_size,
        "the text is {t} tokens; it must be 1..={} (block_size)",
        ck.model.config.block_size
    );
    ck.model.forward_lm(&ids, None, 1, t, false, 0)?;
    Ok(NextTokenLogits { ids, vocab_size, logits: ck.model.logits().to_vec() })
}

/// Perplexity, loss and token count of each hypothesis file (items in `field` for JSONL) under
/// the reference decoder checkpoint `dir` ([`super::fluency`]).
pub fn fluency(dir: &Path, hyp: &[PathBuf], field: &str) -> Result<Vec<Run>> {
    let mut ck = checkpoint::load(dir, 8, false)?;
    ensure!(ck.model.config.arch == Arch::Decoder, "--checkpoint must hold a decoder language model");
    let mut runs = Vec::new();
    for h in hyp {
        let items = read_items(h, field)?;
        let r =
            super::fluency(&mut ck.model, &ck.tokenizer, &items).with_context(|| format!("scoring {}", h.display()))?;
        runs.push((
            run_name(h),
            vec![("perplexity".to_string(), r.perplexity), ("loss".into(), r.loss), ("tokens".into(), r.tokens as f64)],
        ));
    }
    Ok(runs)
}

/// [`efficiency::measure`] of each checkpoint (forward passes of `batch` × `seq_len` tokens,
/// default block_size): the runs, and each full measurement as JSON.
pub fn efficiency(
    checkpoints: &[PathBuf],
    batch: usize,
    seq_len: Option<usize>,
    iters: usize,
    gen_tokens: usize,
    precision: Precision,
) -> Result<(Vec<Run>, Vec<serde_json::Value>)> {
    let mut runs = Vec::new();
    let mut details = Vec::new();
    for dir in checkpoints {
        let mut ck = checkpoint::load(dir, batch, false)?;
        ck.model.set_precision(precision);
        let t = seq_len.unwrap_or(ck.model.config.block_size);
        let e = efficiency::measure(&mut ck.model, dir, batch, t, 3, iters, gen_tokens)?;
        runs.push((run_name(dir), e.metrics()));
        details.push(serde_json::to_value(&e)?);
    }
    Ok((runs, details))
}
