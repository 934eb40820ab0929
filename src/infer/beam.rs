//! Beam search with a length penalty, shared by translation ([`crate::infer::translate`]) and
//! language models ([`beam_search`]), both on the KV cache.
//!
//! Scores are summed log-probabilities. From the `2·beam` best one-token extensions of the live
//! hypotheses (banned tokens excluded), an end token among the first `beam` finishes its
//! hypothesis and the best `beam` others stay live. A hypothesis of `max_len` tokens is
//! finished: with an end token, by forcing it (its log-probability is added); without one, as
//! it is. A search is done when `beam` hypotheses have finished, when no live hypothesis could
//! still beat the best finished one (log-probabilities only fall as tokens are added), or when
//! none is live; the answer is the finished hypothesis with the best length-penalised score
//! (the first found among equals). With `beam = 1` this is greedy decoding.
//!
//! The length penalty divides log p by a normaliser of len, the generated tokens and the end
//! token: GNMT's ((5 + len) / 6)^α (Wu et al., 2016; translation's default) or Hugging Face
//! `generate`'s len^α ([`LengthNorm`]).
//!
//! Two constraints, as Hugging Face's logits processors apply them to the log-probabilities
//! (banned tokens are skipped, the others are not renormalised):
//! - `min_len`: the end token is banned while a hypothesis holds fewer than `min_len` tokens
//!   (HF `min_new_tokens`; HF's `min_length` of an encoder-decoder also counts the decoder start
//!   token, so it is `min_len + 1`). A hypothesis that reaches `max_len` still ends there.
//! - `no_repeat_ngram`: a token that would complete an n-gram the hypothesis already holds is
//!   banned (HF `no_repeat_ngram_size`; [`repeated_ngram_bans`]).

use crate::model::transformer::{LogitRows, Transformer};
use anyhow::{ensure, Result};

/// A finished hypothesis.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens, without the end token.
    pub tokens: Vec<u32>,
    /// log p(tokens (, end) | context): the sum of the log-probabilities of every token and of
    /// the end token when there is one (forced when `max_len` is reached).
    pub log_prob: f64,
    /// `log_prob` with the length penalty, which is what beam search maximises.
    pub score: f64,
}

/// Which normaliser of the length divides a finished hypothesis' log-probability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LengthNorm {
    /// GNMT's ((5 + len) / 6)^α (Wu et al., 2016).
    #[default]
    Gnmt,
    /// Hugging Face `generate`'s len^α (`sum_logprobs / len**length_penalty`).
    Hf,
}

impl LengthNorm {
    /// The normaliser of a hypothesis of `len` tokens (end token included) at exponent `alpha`.
    pub fn normaliser(self, len: usize, alpha: f32) -> f64 {
        match self {
            LengthNorm::Gnmt => length_normaliser(len, alpha),
            LengthNorm::Hf if alpha == 0.0 => 1.0,
            LengthNorm::Hf => (len.max(1) as f64).powf(alpha as f64),
        }
    }
}

/// The tokens that would complete an n-gram (`n` tokens) `tokens` already holds: every token
/// that follows an earlier occurrence of the last `n - 1` tokens. Hugging Face's
/// `NoRepeatNGramLogitsProcessor` (its sequences also hold the decoder start token, which
/// changes nothing: no later n-gram can start with it). `out` is cleared first; `n = 0` bans
/// nothing.
pub fn repeated_ngram_bans(tokens: &[u32], n: usize, out: &mut Vec<u32>) {
    out.clear();
    if n == 0 || tokens.len() + 1 < n {
        return;
    }
    let prefix = &tokens[tokens.len() + 1 - n..];
    for g in tokens.windows(n) {
        if &g[..n - 1] == prefix && !out.contains(&g[n - 1]) {
            out.push(g[n - 1]);
        }
    }
}

/// Whether `min_len` bans the end token after a hypothesis of `len` tokens (HF
/// `MinNewTokensLengthLogitsProcessor`, whose new tokens exclude the decoder start token).
pub fn end_banned(len: usize, min_len: usize) -> bool {
    len < min_len
}

/// GNMT's length normaliser ((5 + len) / 6)^α (Wu et al., 2016), 1 for len = 1 or α = 0.
pub fn length_normaliser(len: usize, alpha: f32) -> f64 {
    if alpha == 0.0 {
        1.0
    } else {
        ((5.0 + len as f64) / 6.0).powf(alpha as f64)
    }
}

/// The score a hypothesis of `len` tokens (end token included) with total log-probability
/// `log_prob` is ranked by: `log_prob / ((5 + len) / 6)^alpha`.
pub fn penalised_score(log_prob: f64, len: usize, alpha: f32) -> f64 {
    log_prob / length_normaliser(len, alpha)
}

/// The rules every search of one decoding call shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BeamRules<'a> {
    pub beam: usize,
    /// Length-penalty exponent α and normaliser.
    pub alpha: f32,
    pub norm: LengthNorm,
    /// The end token is banned before this many tokens.
    pub min_len: usize,
    /// n of the n-grams never repeated (0: off).
    pub no_repeat_ngram: usize,
    /// The token that ends a hypothesis (None: hypotheses run to `max_len`).
    pub end: Option<u32>,
    /// Tokens never generated.
    pub banned: &'a [u32],
}

/// A live hypothesis and the index of its parent among the previous step's live hypotheses.
pub(crate) struct Live {
    pub tokens: Vec<u32>,
    pub log_prob: f64,
    pub parent: usize,
}

/// One sequence's search state.
pub(crate) struct Search {
    pub live: Vec<Live>,
    pub finished: Vec<Hypothesis>,
    pub max_len: usize,
    pub done: bool,
}

impl Search {
    /// A search from the empty hypothesis, for at most `max_len` generated tokens.
    pub fn new(max_len: usize) -> Self {
        Search {
            live: vec![Live { tokens: Vec::new(), log_prob: 0.0, parent: 0 }],
            finished: Vec::new(),
            max_len,
            done: false,
        }
    }

    pub fn best(&self) -> Option<&Hypothesis> {
        // The first of equal scores wins: only a strictly better one replaces it.
        self.finished.iter().fold(None, |best: Option<&Hypothesis>, h| match best {
            Some(b) if h.score <= b.score => Some(b),
            _ => Some(h),
        })
    }

    /// The finished hypotheses, best first (ties in the order found).
    pub fn ranked(mut self) -> Vec<Hypothesis> {
        self.finished.sort_by(|a, b| b.score.total_cmp(&a.score));
        self.finished
    }

    fn finish(&mut self, tokens: Vec<u32>, log_prob: f64, ended: bool, rules: &BeamRules) {
        let score = log_prob / rules.norm.normaliser(tokens.len() + usize::from(ended), rules.alpha);
        self.finished.push(Hypothesis { tokens, log_prob, score });
    }

    /// Extends the live hypotheses given their next-token log-probabilities `logp` (live, V);
    /// `step` = tokens each live hypothesis holds.
    pub fn advance(
        &mut self,
        logp: &[f64],
        v: usize,
        step: usize,
        rules: &BeamRules,
        cands: &mut Vec<(f64, u32, u32)>,
    ) {
        let beam = rules.beam;
        let live = std::mem::take(&mut self.live);
        if step == self.max_len {
            for (h, lp) in live.into_iter().zip(logp.chunks_exact(v)) {
                match rules.end {
                    Some(end) => self.finish(h.tokens, h.log_prob + lp[end as usize], true, rules),
                    None => self.finish(h.tokens, h.log_prob, false, rules),
                }
            }
            self.done = true;
            return;
        }
        cands.clear();
        let mut repeats = Vec::new();
        for (hi, (h, lp)) in live.iter().zip(logp.chunks_exact(v)).enumerate() {
            repeated_ngram_bans(&h.tokens, rules.no_repeat_ngram, &mut repeats);
            let no_end = end_banned(h.tokens.len(), rules.min_len);
            for (tok, &l) in lp.iter().enumerate() {
                let t = tok as u32;
                let banned = rules.banned.contains(&t) || repeats.contains(&t) || (no_end && Some(t) == rules.end);
                if !banned {
                    cands.push((h.log_prob + l, hi as u32, t));
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
            if Some(tok) == rules.end {
                // Only an end token that would have made the beam finishes a hypothesis.
                if rank < beam {
                    self.finish(parent.tokens.clone(), lp, true, rules);
                }
            } else {
                let mut tokens = Vec::with_capacity(parent.tokens.len() + 1);
                tokens.extend_from_slice(&parent.tokens);
                tokens.push(tok);
                next.push(Live { tokens, log_prob: lp, parent: hi as usize });
                if next.len() == beam {
                    break;
                }
            }
        }
        self.live = next;
        // Upper bound on any future score of a live hypothesis: log-probabilities only fall,
        // and a longer final length can only shrink a negative score's magnitude, so the bound
        // takes the longest possible length (max_len tokens + the end token).
        let bound = self
            .live
            .iter()
            .map(|h| h.log_prob / rules.norm.normaliser(self.max_len + 1, rules.alpha))
            .fold(f64::NEG_INFINITY, f64::max);
        let beaten = self.best().is_some_and(|b| bound <= b.score);
        self.done = self.live.is_empty() || self.finished.len() >= beam || beaten;
    }
}

/// Errors for a beam size outside 1..=`max_batch` (one model row per live hypothesis) or a
/// length penalty that is not a finite number >= 0.
pub(crate) fn check_beam(beam: usize, length_penalty: f32, max_batch: usize) -> Result<()> {
    ensure!(beam >= 1, "beam size must be at least 1");
    ensure!(beam <= max_batch, "beam size {beam} exceeds the model's batch capacity {max_batch}");
    ensure!(
        length_penalty.is_finite() && length_penalty >= 0.0,
        "length_penalty must be a finite number >= 0, got {length_penalty}"
    );
    Ok(())
}

/// Log-softmax of `logits` (V) into `out` (V), in f64.
pub(crate) fn log_softmax(out: &mut [f64], logits: &[f32]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = x as f64 - lse;
    }
}

/// Options of [`beam_search`].
#[derive(Clone, Debug, PartialEq)]
pub struct BeamOptions {
    /// Hypotheses kept; 1 = greedy.
    pub beam: usize,
    /// Most generated tokens (the end token not counted).
    pub max_new_tokens: usize,
    /// GNMT length-penalty exponent α (0 = plain log-probability).
    pub length_penalty: f32,
    /// The token that ends a hypothesis (an EOS id), if the model has one.
    pub end: Option<u32>,
}

/// Beam search for a decoder-only LM after `prompt`: the finished hypotheses, best first.
///
/// Needs a model batch capacity of at least `beam` (one KV-cache row per live hypothesis;
/// each step reorders the rows to follow the surviving hypotheses' parents). Beam search does
/// not slide the context window: the prompt is cropped from the left so that it and
/// `max_new_tokens` fit in `block_size`.
pub fn beam_search(model: &mut Transformer, prompt: &[u32], opts: &BeamOptions) -> Result<Vec<Hypothesis>> {
    let (block, v) = (model.config.block_size, model.config.vocab_size);
    ensure!(!prompt.is_empty(), "the prompt must contain at least one token");
    check_beam(opts.beam, opts.length_penalty, model.max_batch())?;
    ensure!(opts.max_new_tokens >= 1, "max_new_tokens must be at least 1");
    if let Some(e) = opts.end {
        ensure!((e as usize) < v, "end token {e} is out of range for vocab_size {v}");
    }
    ensure!(block >= 2, "block_size {block} leaves no room to generate after the prompt");
    let max_len = opts.max_new_tokens.min(block - 1);
    let window = &prompt[prompt.len().saturating_sub(block - max_len)..];
    let rules = BeamRules {
        beam: opts.beam,
        alpha: opts.length_penalty,
        norm: LengthNorm::Gnmt,
        min_len: 0,
        no_repeat_ngram: 0,
        end: opts.end,
        banned: &[],
    };
    let mut cache = model.kv_cache(opts.beam)?;
    cache.reset(1)?;
    let mut logits = model.forward_cached(window, &[window.len()], window.len(), &mut cache, LogitRows::Last)?;
    let mut search = Search::new(max_len);
    let (mut logp, mut cands, mut rows, mut next, mut counts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for step in 0.. {
        let live = search.live.len();
        logp.resize(live * v, 0.0);
        for (o, l) in logp.chunks_exact_mut(v).zip(logits.chunks_exact(v)) {
            log_softmax(o, l);
        }
        search.advance(&logp, v, step, &rules, &mut cands);
        if search.done {
            break;
        }
        rows.clear();
        rows.extend(search.live.iter().map(|h| h.parent));
        cache.reorder(&rows)?;
        next.clear();
        next.extend(search.live.iter().map(|h| *h.tokens.last().expect("a live hypothesis after a step has a token")));
        counts.clear();
        counts.resize(next.len(), 1);
        logits = model.forward_cached(&next, &counts, 1, &mut cache, LogitRows::Last)?;
    }
    Ok(search.ranked())
}
