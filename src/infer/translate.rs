//! Translation with an encoder-decoder [`Transformer`]: greedy decoding and beam search over
//! batches of sentences, on the encode-once / decode-many API.
//!
//! Inputs look exactly like the training batches of [`crate::data::parallel`]: a source is its
//! BPE tokens with no BOS/EOS, padded with PAD under a mask (an empty source is one masked PAD
//! column), and the decoder input is BOS followed by the target so far. Outputs are target
//! tokens without BOS/EOS.
//!
//! Decoding never emits PAD or BOS (no training target is ever one of them); scores are still
//! log-probabilities under the model's full softmax, so they equal what teacher forcing the
//! output gives. The encoder runs once per batch; the decoder runs one token per hypothesis and
//! step on a KV cache (self-attention keys and values of the prefix, cross-attention keys and
//! values of the encoder output). Beam search itself is [`crate::infer::beam`].

use crate::data::bpe::{BOS, EOS, PAD};
use crate::infer::beam::{check_beam, log_softmax, BeamRules, Search};
use crate::io::checkpoint::{self, Checkpoint};
use crate::model::transformer::{Arch, LogitRows, Transformer};
use anyhow::{bail, ensure, Result};
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct DecodeOptions {
    /// Hypotheses kept per sentence; 1 = greedy.
    pub beam: usize,
    /// Most target tokens (EOS not counted); 0 = ⌊1.5·source length⌋ + 10 per sentence. Always
    /// capped at `block_size - 1`, so that BOS + the target (+ the final EOS prediction) fits.
    pub max_len: usize,
    /// Length-penalty exponent α: hypotheses are ranked by log p / normaliser(len), len counting
    /// EOS; with `length_norm` GNMT, ((5 + len) / 6)^α, with Hf, len^α. 0 = plain log-probability.
    pub length_penalty: f32,
    pub length_norm: LengthNorm,
    /// EOS is banned before this many target tokens (HF `min_new_tokens`); 0 = no minimum.
    pub min_len: usize,
    /// No n-gram of this many tokens occurs twice in an output (HF `no_repeat_ngram_size`);
    /// 0 = off.
    pub no_repeat_ngram_size: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            beam: 1,
            max_len: 0,
            length_penalty: 0.0,
            length_norm: LengthNorm::Gnmt,
            min_len: 0,
            no_repeat_ngram_size: 0,
        }
    }
}

pub use crate::infer::beam::{length_normaliser, penalised_score, Hypothesis, LengthNorm};

/// Most target tokens (EOS not counted) for a source of `src_len` tokens.
pub fn max_target_len(opts: &DecodeOptions, src_len: usize, block_size: usize) -> usize {
    let wanted = if opts.max_len == 0 { src_len * 3 / 2 + 10 } else { opts.max_len };
    wanted.min(block_size.saturating_sub(1))
}

/// Translates `srcs` (each a source's tokens, no BOS/EOS) and returns each target's tokens
/// (no BOS/EOS), in order. See [`translate_batch_hyps`].
pub fn translate_batch(model: &mut Transformer, srcs: &[Vec<u32>], opts: &DecodeOptions) -> Result<Vec<Vec<u32>>> {
    Ok(translate_batch_hyps(model, srcs, opts)?.into_iter().map(|h| h.tokens).collect())
}

/// Translates `srcs` and returns the best finished hypothesis of each, in order.
///
/// Sentences go through the model in groups of ⌊max_batch / beam⌋: each group's sources are
/// encoded once (one row per sentence) and the encoded rows are repeated per live hypothesis
/// with [`Transformer::reorder_encoded`], dropping the rows of finished sentences.
///
/// Beam search, per sentence, with scores summed log-probabilities: from the `2·beam` best
/// one-token extensions of the live hypotheses (PAD and BOS excluded), an EOS among the first
/// `beam` finishes its hypothesis and the best `beam` others stay live. A hypothesis of
/// `max_len` tokens can only be followed by EOS. A sentence is done when `beam` hypotheses have
/// finished, when no live hypothesis could still beat the best finished one (log-probabilities
/// only fall as tokens are added), or when none is live; the answer is the finished hypothesis
/// with the best length-penalised score (the first found among equals). With `beam = 1` this
/// is greedy decoding: the most likely token until EOS or `max_len`.
pub fn translate_batch_hyps(
    model: &mut Transformer,
    srcs: &[Vec<u32>],
    opts: &DecodeOptions,
) -> Result<Vec<Hypothesis>> {
    let cfg = &model.config;
    ensure!(cfg.arch == Arch::EncoderDecoder, "translation needs an encoder_decoder model");
    check_beam(opts.beam, opts.length_penalty, model.max_batch())?;
    ensure!(cfg.vocab_size > EOS as usize, "vocab_size {} has no room for the special tokens", cfg.vocab_size);
    ensure!(cfg.block_size >= 2, "block_size {} leaves no room for a target after BOS", cfg.block_size);
    for (i, s) in srcs.iter().enumerate() {
        ensure!(
            s.len() <= cfg.block_size,
            "source {i} has {} tokens, more than block_size {}",
            s.len(),
            cfg.block_size
        );
        if let Some(bad) = s.iter().find(|&&x| x as usize >= cfg.vocab_size) {
            bail!("source {i}: token id {bad} is out of range for vocab_size {}", cfg.vocab_size);
        }
    }
    let per_group = model.max_batch() / opts.beam;
    let mut out = Vec::with_capacity(srcs.len());
    for group in srcs.chunks(per_group) {
        translate_group(model, group, opts, &mut out)?;
    }
    Ok(out)
}

/// Translates one group of at most ⌊max_batch / beam⌋ sentences, appending to `out`.
///
/// The decoder runs on a KV cache: step 0 feeds BOS to one row per sentence, each later step
/// one token per live hypothesis. After each step the cache rows and the encoded rows are
/// reordered together to follow the surviving hypotheses' parents.
fn translate_group(
    model: &mut Transformer,
    srcs: &[Vec<u32>],
    opts: &DecodeOptions,
    out: &mut Vec<Hypothesis>,
) -> Result<()> {
    let (v, block) = (model.config.vocab_size, model.config.block_size);
    let n = srcs.len();
    let rules = BeamRules {
        beam: opts.beam,
        alpha: opts.length_penalty,
        norm: opts.length_norm,
        min_len: opts.min_len,
        no_repeat_ngram: opts.no_repeat_ngram_size,
        end: Some(EOS),
        banned: &[PAD, BOS],
    };
    // The source batch exactly as Seq2SeqBatch::fill builds it.
    let s = srcs.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut src = vec![PAD; n * s];
    let mut mask = vec![false; n * s];
    for (r, x) in srcs.iter().enumerate() {
        src[r * s..r * s + x.len()].copy_from_slice(x);
        mask[r * s..r * s + x.len()].fill(true);
    }
    model.encode(&src, Some(&mask), n, s)?;
    let mut cache = model.kv_cache(model.max_batch())?;
    cache.reset(n)?;
    let mut searches: Vec<Search> = srcs.iter().map(|x| Search::new(max_target_len(opts, x.len(), block))).collect();
    let mut next = vec![BOS; n];
    let mut counts = vec![1; n];
    let (mut rows, mut logp, mut cands) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0.. {
        let logits = model.decode_cached(&next, &counts, 1, &mut cache, LogitRows::Last)?;
        logp.resize(next.len() * v, 0.0);
        for (o, l) in logp.chunks_exact_mut(v).zip(logits.chunks_exact(v)) {
            log_softmax(o, l);
        }
        // Rows of the live searches are consecutive, in sentence order.
        let (mut row, mut first_row) = (0, 0);
        rows.clear();
        next.clear();
        for se in searches.iter_mut().filter(|se| !se.done) {
            let k = se.live.len();
            se.advance(&logp[row * v..(row + k) * v], v, step, &rules, &mut cands);
            row += k;
            if !se.done {
                rows.extend(se.live.iter().map(|h| first_row + h.parent));
                next.extend(se.live.iter().map(|h| *h.tokens.last().expect("a live hypothesis has a token")));
            }
            first_row += k;
        }
        if rows.is_empty() {
            break;
        }
        model.reorder_encoded(&rows)?;
        cache.reorder(&rows)?;
        counts.clear();
        counts.resize(rows.len(), 1);
    }
    for se in searches {
        out.push(se.best().cloned().expect("every search finishes at least one hypothesis"));
    }
    Ok(())
}

/// Translates `lines` (one sentence each) with the checkpoint's tokenizer, in order, sorting by
/// length internally so batches carry little padding. Sources longer than `max_src_len`
/// tokens are truncated. `on_progress(done)` is called after each batch.
pub fn translate_lines(
    model: &mut Transformer,
    tok: &crate::data::Tokenizer,
    lines: &[String],
    opts: &DecodeOptions,
    max_src_len: usize,
    mut on_progress: impl FnMut(usize),
) -> Result<Vec<String>> {
    let mut srcs = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let mut ids = tok.encode(l).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?;
        ids.truncate(max_src_len);
        srcs.push(ids);
    }
    let mut order: Vec<usize> = (0..srcs.len()).collect();
    order.sort_by_key(|&i| (srcs[i].len(), i));
    let per_batch = (model.max_batch() / opts.beam.max(1)).max(1);
    let mut out = vec![String::new(); lines.len()];
    let mut done = 0;
    for chunk in order.chunks(per_batch) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| srcs[i].clone()).collect();
        let hyps = translate_batch(model, &batch, opts)?;
        for (&i, h) in chunk.iter().zip(hyps) {
            out[i] = tok.decode(&h)?;
        }
        done += chunk.len();
        on_progress(done);
    }
    Ok(out)
}

/// An encoder-decoder checkpoint loaded for translating lines of text.
pub struct Translator {
    ck: Checkpoint,
}

impl Translator {
    /// Loads the encoder-decoder checkpoint `dir`, decoding `batch` rows (sentences × beam) at
    /// once.
    pub fn load(dir: &Path, batch: usize) -> Result<Self> {
        let ck = checkpoint::load_inference(dir, batch)?;
        ck.require_arch(Arch::EncoderDecoder, dir, "translate")?;
        Ok(Translator { ck })
    }

    /// [`translate_lines`] with the checkpoint's tokenizer; sources are cut to block_size tokens.
    pub fn translate(
        &mut self,
        lines: &[String],
        opts: &DecodeOptions,
        on_progress: impl FnMut(usize),
    ) -> Result<Vec<String>> {
        let max_src = self.ck.model.config.block_size;
        translate_lines(&mut self.ck.model, &self.ck.tokenizer, lines, opts, max_src, on_progress)
    }
}
