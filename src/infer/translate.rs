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
//! output gives. Each step re-runs the decoder over the whole prefix (there is no decoder KV
//! cache yet), against the encoder output computed once per batch.

use crate::data::bpe::{BOS, EOS, PAD};
use crate::model::transformer::{Arch, Transformer};
use anyhow::{bail, ensure, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct DecodeOptions {
    /// Hypotheses kept per sentence; 1 = greedy.
    pub beam: usize,
    /// Most target tokens (EOS not counted); 0 = ⌊1.5·source length⌋ + 10 per sentence. Always
    /// capped at `block_size - 1`, so that BOS + the target (+ the final EOS prediction) fits.
    pub max_len: usize,
    /// GNMT length-penalty exponent α: hypotheses are ranked by log p / ((5 + len) / 6)^α, len
    /// counting EOS. 0 = plain log-probability.
    pub length_penalty: f32,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { beam: 1, max_len: 0, length_penalty: 0.0 }
    }
}

/// A finished translation.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Target tokens, without BOS/EOS.
    pub tokens: Vec<u32>,
    /// log p(tokens, EOS | source): the sum of the log-probabilities of every token and of the
    /// final EOS (forced when `max_len` is reached).
    pub log_prob: f64,
    /// `log_prob` with the length penalty, which is what beam search maximises.
    pub score: f64,
}

/// GNMT's length normaliser ((5 + len) / 6)^α (Wu et al., 2016), 1 for len = 1 or α = 0.
pub fn length_normaliser(len: usize, alpha: f32) -> f64 {
    if alpha == 0.0 {
        1.0
    } else {
        ((5.0 + len as f64) / 6.0).powf(alpha as f64)
    }
}

/// The score a hypothesis of `len` tokens (EOS included) with total log-probability `log_prob`
/// is ranked by: `log_prob / ((5 + len) / 6)^alpha`.
pub fn penalised_score(log_prob: f64, len: usize, alpha: f32) -> f64 {
    log_prob / length_normaliser(len, alpha)
}

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
    ensure!(opts.beam >= 1, "beam size must be at least 1");
    ensure!(
        opts.beam <= model.max_batch(),
        "beam size {} exceeds the model's batch capacity {}",
        opts.beam,
        model.max_batch()
    );
    ensure!(
        opts.length_penalty.is_finite() && opts.length_penalty >= 0.0,
        "length_penalty must be a finite number >= 0, got {}",
        opts.length_penalty
    );
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

/// A live hypothesis.
struct Live {
    tokens: Vec<u32>,
    log_prob: f64,
}

/// One sentence's search state.
struct Search {
    live: Vec<Live>,
    finished: Vec<Hypothesis>,
    max_len: usize,
    done: bool,
}

impl Search {
    fn best(&self) -> Option<&Hypothesis> {
        // The first of equal scores wins: only a strictly better one replaces it.
        self.finished.iter().fold(None, |best: Option<&Hypothesis>, h| match best {
            Some(b) if h.score <= b.score => Some(b),
            _ => Some(h),
        })
    }

    fn finish(&mut self, tokens: Vec<u32>, log_prob: f64, alpha: f32) {
        let score = penalised_score(log_prob, tokens.len() + 1, alpha);
        self.finished.push(Hypothesis { tokens, log_prob, score });
    }

    /// Extends the live hypotheses given their next-token log-probabilities `logp` (live, V);
    /// `step` = tokens each live hypothesis holds.
    fn advance(
        &mut self,
        logp: &[f64],
        v: usize,
        step: usize,
        beam: usize,
        alpha: f32,
        cands: &mut Vec<(f64, u32, u32)>,
    ) {
        let live = std::mem::take(&mut self.live);
        if step == self.max_len {
            for (h, lp) in live.into_iter().zip(logp.chunks_exact(v)) {
                self.finish(h.tokens, h.log_prob + lp[EOS as usize], alpha);
            }
            self.done = true;
            return;
        }
        cands.clear();
        for (hi, (h, lp)) in live.iter().zip(logp.chunks_exact(v)).enumerate() {
            for (tok, &l) in lp.iter().enumerate() {
                if tok as u32 != PAD && tok as u32 != BOS {
                    cands.push((h.log_prob + l, hi as u32, tok as u32));
                }
            }
        }
        // Best first; ties go to the earlier hypothesis, then the lower token id (like argmax).
        let order =
            |a: &(f64, u32, u32), b: &(f64, u32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2));
        let m = (2 * beam).min(cands.len());
        if m < cands.len() {
            cands.select_nth_unstable_by(m - 1, order);
        }
        cands[..m].sort_unstable_by(order);
        let mut next = Vec::with_capacity(beam);
        for (rank, &(lp, hi, tok)) in cands[..m].iter().enumerate() {
            let parent = &live[hi as usize];
            if tok == EOS {
                // Only an EOS that would have made the beam finishes a hypothesis.
                if rank < beam {
                    self.finish(parent.tokens.clone(), lp, alpha);
                }
            } else {
                let mut tokens = Vec::with_capacity(parent.tokens.len() + 1);
                tokens.extend_from_slice(&parent.tokens);
                tokens.push(tok);
                next.push(Live { tokens, log_prob: lp });
                if next.len() == beam {
                    break;
                }
            }
        }
        self.live = next;
        // Upper bound on any future score of a live hypothesis: log-probabilities only fall,
        // and a longer final length can only shrink a negative score's magnitude, so the bound
        // takes the longest possible length (max_len tokens + EOS).
        let bound = self
            .live
            .iter()
            .map(|h| h.log_prob / length_normaliser(self.max_len + 1, alpha))
            .fold(f64::NEG_INFINITY, f64::max);
        let beaten = self.best().is_some_and(|b| bound <= b.score);
        self.done = self.live.is_empty() || self.finished.len() >= beam || beaten;
    }
}

/// Log-softmax of `logits` (V) into `out` (V), in f64.
fn log_softmax(out: &mut [f64], logits: &[f32]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = x as f64 - lse;
    }
}

/// Translates one group of at most ⌊max_batch / beam⌋ sentences, appending to `out`.
fn translate_group(
    model: &mut Transformer,
    srcs: &[Vec<u32>],
    opts: &DecodeOptions,
    out: &mut Vec<Hypothesis>,
) -> Result<()> {
    let (v, block) = (model.config.vocab_size, model.config.block_size);
    let (n, beam, alpha) = (srcs.len(), opts.beam, opts.length_penalty);
    // The source batch exactly as Seq2SeqBatch::fill builds it.
    let s = srcs.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut src = vec![PAD; n * s];
    let mut mask = vec![false; n * s];
    for (r, x) in srcs.iter().enumerate() {
        src[r * s..r * s + x.len()].copy_from_slice(x);
        mask[r * s..r * s + x.len()].fill(true);
    }
    model.encode(&src, Some(&mask), n, s)?;
    let mut searches: Vec<Search> = srcs
        .iter()
        .map(|x| Search {
            live: vec![Live { tokens: Vec::new(), log_prob: 0.0 }],
            finished: Vec::new(),
            max_len: max_target_len(opts, x.len(), block),
            done: false,
        })
        .collect();
    // Sentence of each encoded row (rows are repeated per live hypothesis).
    let mut encoded: Vec<usize> = (0..n).collect();
    let mut wanted = Vec::with_capacity(n * beam);
    let mut gather = Vec::with_capacity(n * beam);
    let mut tgt_in = Vec::new();
    let mut logp = Vec::new();
    let mut cands = Vec::new();
    for step in 0.. {
        wanted.clear();
        for (i, se) in searches.iter().enumerate().filter(|(_, se)| !se.done) {
            wanted.extend(std::iter::repeat_n(i, se.live.len()));
        }
        if wanted.is_empty() {
            break;
        }
        if wanted != encoded {
            gather.clear();
            gather
                .extend(wanted.iter().map(|&i| encoded.iter().position(|&e| e == i).expect("sentence still encoded")));
            model.reorder_encoded(&gather)?;
            std::mem::swap(&mut encoded, &mut wanted);
        }
        let (rows, t) = (encoded.len(), step + 1);
        tgt_in.clear();
        for se in searches.iter().filter(|se| !se.done) {
            for h in &se.live {
                tgt_in.push(BOS);
                tgt_in.extend_from_slice(&h.tokens);
            }
        }
        let logits = model.decode(&tgt_in, rows, t)?;
        logp.resize(rows * v, 0.0);
        for r in 0..rows {
            let last = (r * t + t - 1) * v;
            log_softmax(&mut logp[r * v..(r + 1) * v], &logits[last..last + v]);
        }
        let mut row = 0;
        for se in searches.iter_mut().filter(|se| !se.done) {
            let k = se.live.len();
            se.advance(&logp[row * v..(row + k) * v], v, step, beam, alpha, &mut cands);
            row += k;
        }
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
