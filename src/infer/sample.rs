//! Autoregressive sampling on the KV cache, for every decoder variant, one prompt at a time
//! ([`generate`]) or a batch of prompts of different lengths ([`generate_batch`]).
//!
//! The context is the last `block_size` tokens: a prompt longer than that is cropped from the
//! left (the model cannot attend further back), exactly as nanoGPT's `generate` does.
//!
//! [`Sampler`] turns a row of logits into the next token. It applies, in Hugging Face
//! `generate`'s order:
//! 1. **repetition penalty** (CTRL, Keskar et al. 2019, with HF's sign rule): the logit of every
//!    token already in the sequence (prompt included) is divided by the penalty when it is
//!    positive (or zero) and multiplied by it when it is negative;
//! 2. **temperature**: logits divided by it; temperature 0 is greedy decoding, the argmax of the
//!    penalised logits, and skips the steps below;
//! 3. **top-k**: logits below the k-th largest are removed (ties with the k-th are kept);
//! 4. **top-p** (nucleus): the softmax of what is left, sorted by decreasing probability (ties
//!    by id); the smallest prefix whose total reaches `p` is kept, so the token that crosses `p`
//!    stays (HF keeps it too);
//! 5. **min-p**: tokens whose probability is below `min_p` times the largest are removed;
//!
//! then the kept probabilities are renormalised and one token is drawn with one uniform number
//! from the seeded RNG (inverse CDF), so a seed fixes the output.
//!
//! **Stop strings** ([`generate_text`]): generation ends at the first token after which the
//! generated text (the prompt is not searched) contains one of the stop strings. The text is cut
//! where that stop string begins: the stop string, and anything the same token decoded after
//! it, are neither streamed nor returned; the token ids still include the last token. While a
//! suffix of the text could be the start of a stop string it is held back, so streamed text
//! never shows part of one.

use crate::data::Tokenizer;
use crate::kernels::math::softmax_inplace;
use crate::model::baseline::{BaselineLm, GenState};
use crate::model::transformer::{KvCache, LogitRows, Transformer};
use anyhow::{bail, ensure, Result};
use rand::Rng;
use std::ops::ControlFlow;

#[derive(Clone, Debug)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax); otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (None = all).
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens up to total probability `p`, in (0, 1]
    /// (None or 1 = all).
    pub top_p: Option<f32>,
    /// Keep tokens with probability at least `min_p` times the largest, in [0, 1] (None or 0 = all).
    pub min_p: Option<f32>,
    /// CTRL repetition penalty, > 0; 1 = none, > 1 discourages tokens already in the sequence.
    pub repetition_penalty: f32,
    /// Stop strings (used by [`generate_text`], which decodes; the id-level functions ignore them).
    pub stop: Vec<String>,
}

impl Default for SampleOptions {
    /// 100 new tokens from the unmodified distribution (temperature 1, no filter, no penalty).
    fn default() -> Self {
        SampleOptions {
            max_new_tokens: 100,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            stop: Vec::new(),
        }
    }
}

impl SampleOptions {
    /// Errors for values outside the ranges documented on each field.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        ensure!(t >= 0.0 && t.is_finite(), "temperature must be a finite number >= 0, got {t}");
        ensure!(self.top_k != Some(0), "top_k must be at least 1");
        if let Some(p) = self.top_p {
            ensure!(p > 0.0 && p <= 1.0, "top_p must be in (0, 1], got {p}");
        }
        if let Some(m) = self.min_p {
            ensure!((0.0..=1.0).contains(&m), "min_p must be in [0, 1], got {m}");
        }
        let r = self.repetition_penalty;
        ensure!(r > 0.0 && r.is_finite(), "repetition_penalty must be a finite number > 0, got {r}");
        ensure!(self.stop.iter().all(|s| !s.is_empty()), "a stop string must not be empty");
        Ok(())
    }
}

/// What the per-token callback of [`generate`] returns: `()` (always continue) or a
/// [`ControlFlow`] (`Break(())` ends generation after this token).
pub trait TokenFlow {
    fn should_stop(self) -> bool;
}

impl TokenFlow for () {
    fn should_stop(self) -> bool {
        false
    }
}

impl TokenFlow for ControlFlow<()> {
    fn should_stop(self) -> bool {
        self.is_break()
    }
}

/// The sampling pipeline of the module docs, with every buffer allocated once in [`Sampler::new`]:
/// picking a token allocates nothing.
pub struct Sampler {
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    penalty: f32,
    scores: Vec<f32>,  // (V) penalised logits
    probs: Vec<f32>,   // (V) the distribution being built
    scratch: Vec<f32>, // (V) top-k selection
    order: Vec<u32>,   // (V) ids sorted by probability, for top-p
    seen: Vec<bool>,   // (V) tokens in the sequence, for the repetition penalty
}

impl Sampler {
    /// A sampler for logits of `vocab_size` entries; `opts` must pass [`SampleOptions::validate`].
    pub fn new(opts: &SampleOptions, vocab_size: usize) -> Result<Self> {
        opts.validate()?;
        ensure!(vocab_size > 0, "the vocabulary is empty");
        let v = vocab_size;
        Ok(Sampler {
            temperature: opts.temperature,
            top_k: opts.top_k.filter(|&k| k < v),
            top_p: opts.top_p.filter(|&p| p < 1.0),
            min_p: opts.min_p.filter(|&m| m > 0.0),
            penalty: opts.repetition_penalty,
            scores: vec![0.0; v],
            probs: vec![0.0; v],
            scratch: vec![0.0; v],
            order: vec![0; v],
            seen: vec![false; v],
        })
    }

    /// Forgets the tokens seen so far and records `context` (the prompt) as seen.
    pub fn reset(&mut self, context: &[u32]) {
        self.seen.fill(false);
        context.iter().for_each(|&t| self.observe(t));
    }

    /// Records `token` as part of the sequence (for the repetition penalty); ids outside the
    /// vocabulary are ignored.
    pub fn observe(&mut self, token: u32) {
        if let Some(s) = self.seen.get_mut(token as usize) {
            *s = true;
        }
    }

    /// The logits after the repetition penalty (V).
    pub fn penalised(&mut self, logits: &[f32]) -> &[f32] {
        assert_eq!(logits.len(), self.scores.len(), "logits of the wrong vocabulary size");
        self.scores.copy_from_slice(logits);
        let p = self.penalty;
        if p != 1.0 {
            for (s, _) in self.scores.iter_mut().zip(&self.seen).filter(|(_, &seen)| seen) {
                *s = if *s < 0.0 { *s * p } else { *s / p };
            }
        }
        &self.scores
    }

    /// The distribution the next token is drawn from (V): every step of the module docs. At
    /// temperature 0 it is one-hot on the greedy choice.
    pub fn probabilities(&mut self, logits: &[f32]) -> &[f32] {
        self.penalised(logits);
        let probs = &mut self.probs;
        if self.temperature == 0.0 {
            probs.fill(0.0);
            probs[argmax(&self.scores) as usize] = 1.0;
            return probs;
        }
        for (p, &s) in probs.iter_mut().zip(&self.scores) {
            *p = s / self.temperature;
        }
        let mut kth = f32::NEG_INFINITY;
        if let Some(k) = self.top_k {
            let sorted = &mut self.scratch;
            sorted.copy_from_slice(probs);
            sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            kth = sorted[k - 1];
            probs.iter_mut().filter(|p| **p < kth).for_each(|p| *p = f32::NEG_INFINITY);
        }
        softmax_inplace(probs);
        if self.top_k.is_some() {
            // The kernels' fast exp maps -inf to a tiny positive number, not 0: removed tokens
            // must have probability exactly 0 (top-p's candidates, the draw's fallback).
            for (p, &s) in probs.iter_mut().zip(&self.scores) {
                if s / self.temperature < kth {
                    *p = 0.0;
                }
            }
        }
        if let Some(top_p) = self.top_p {
            let mut n = 0;
            for (i, &p) in probs.iter().enumerate() {
                if p > 0.0 {
                    self.order[n] = i as u32;
                    n += 1;
                }
            }
            let order = &mut self.order[..n];
            // In place and unstable, but the id tiebreak makes the order unique (no allocation).
            order.sort_unstable_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]).then(a.cmp(&b)));
            // Keep a token while the tokens before it total less than p: the first always stays,
            // and so does the one that crosses p.
            let mut total = 0.0f32;
            let mut keep = n;
            for (j, &i) in order.iter().enumerate() {
                if total >= top_p {
                    keep = j;
                    break;
                }
                total += probs[i as usize];
            }
            order[keep..].iter().for_each(|&i| probs[i as usize] = 0.0);
            normalize(probs);
        }
        if let Some(min_p) = self.min_p {
            let threshold = min_p * probs.iter().copied().fold(0.0f32, f32::max);
            probs.iter_mut().filter(|p| **p < threshold).for_each(|p| *p = 0.0);
            normalize(probs);
        }
        probs
    }

    /// The next token: the argmax at temperature 0 (no random number drawn), else a draw from
    /// [`Sampler::probabilities`] with one uniform number. Does not [`Sampler::observe`] it.
    pub fn pick<R: Rng>(&mut self, logits: &[f32], rng: &mut R) -> u32 {
        if self.temperature == 0.0 {
            return argmax(self.penalised(logits));
        }
        self.probabilities(logits);
        sample_index(&self.probs, rng.gen::<f32>())
    }
}

fn normalize(p: &mut [f32]) {
    let inv = 1.0 / p.iter().sum::<f32>();
    p.iter_mut().for_each(|x| *x *= inv);
}

/// A model that extends one sequence a token at a time, keeping what it needs from the tokens
/// before (a KV cache, a recurrent state): what [`generate_with`] drives.
pub trait NextToken {
    fn vocab_size(&self) -> usize;
    /// Starts the sequence `ctx` (at least one token) afresh; returns the next token's logits.
    fn start(&mut self, ctx: &[u32]) -> Result<&[f32]>;
    /// `ctx` grew by its last token since the previous call; returns the next token's logits.
    fn extend(&mut self, ctx: &[u32]) -> Result<&[f32]>;
}

/// A Transformer decoder on its KV cache ([`Transformer::forward_cached`]), for every decoder
/// variant: the prompt is processed in one pass, then each step runs one token. Once the
/// context reaches `block_size`, a step re-runs the last `block_size` tokens (learned positions
/// run out, and every variant then sees exactly the window nanoGPT's `generate` crops to).
pub struct CachedDecoder<'a> {
    model: &'a mut Transformer,
    cache: KvCache,
}

impl<'a> CachedDecoder<'a> {
    pub fn new(model: &'a mut Transformer) -> Result<Self> {
        let cache = model.kv_cache(1)?;
        Ok(CachedDecoder { model, cache })
    }
}

impl NextToken for CachedDecoder<'_> {
    fn vocab_size(&self) -> usize {
        self.model.config.vocab_size
    }
    fn start(&mut self, ctx: &[u32]) -> Result<&[f32]> {
        self.cache.clear_row(0);
        let window = &ctx[ctx.len().saturating_sub(self.model.config.block_size)..];
        self.model.forward_cached(window, &[window.len()], window.len(), &mut self.cache, LogitRows::Last)
    }
    fn extend(&mut self, ctx: &[u32]) -> Result<&[f32]> {
        if self.cache.len(0) == self.model.config.block_size {
            return self.start(ctx);
        }
        let next = ctx[ctx.len() - 1];
        self.model.forward_cached(&[next], &[1], 1, &mut self.cache, LogitRows::Last)
    }
}

/// An LSTM or GRU carrying its hidden state, O(1) per token and no context limit, or the causal
/// CNN over its receptive field ([`BaselineLm::step`]).
pub struct BaselineStepper<'a> {
    model: &'a mut BaselineLm,
    state: GenState,
}

impl<'a> BaselineStepper<'a> {
    pub fn new(model: &'a mut BaselineLm) -> Self {
        let state = model.gen_state();
        BaselineStepper { model, state }
    }
}

impl NextToken for BaselineStepper<'_> {
    fn vocab_size(&self) -> usize {
        self.model.config.vocab_size
    }
    fn start(&mut self, ctx: &[u32]) -> Result<&[f32]> {
        ensure!(!ctx.is_empty(), "the prompt must contain at least one token");
        self.state = self.model.gen_state();
        for &id in &ctx[..ctx.len() - 1] {
            self.model.step(&mut self.state, id)?;
        }
        self.model.step(&mut self.state, ctx[ctx.len() - 1])
    }
    fn extend(&mut self, ctx: &[u32]) -> Result<&[f32]> {
        self.model.step(&mut self.state, ctx[ctx.len() - 1])
    }
}

/// Generates up to `opts.max_new_tokens` tokens after `prompt` with any decoder-only model,
/// calling `on_token` with each new id as it is produced; generation ends early when it returns
/// `ControlFlow::Break(())`. Returns the new tokens. Runs on the KV cache ([`CachedDecoder`]).
pub fn generate<R: Rng, F: TokenFlow>(
    model: &mut Transformer,
    prompt: &[u32],
    opts: &SampleOptions,
    rng: &mut R,
    on_token: impl FnMut(u32) -> F,
) -> Result<Vec<u32>> {
    generate_with(&mut CachedDecoder::new(model)?, prompt, opts, rng, on_token)
}

/// [`generate`] for any [`NextToken`] model. Apart from the returned vector, nothing is
/// allocated per token.
pub fn generate_with<R: Rng, F: TokenFlow>(
    model: &mut impl NextToken,
    prompt: &[u32],
    opts: &SampleOptions,
    rng: &mut R,
    mut on_token: impl FnMut(u32) -> F,
) -> Result<Vec<u32>> {
    ensure!(!prompt.is_empty(), "the prompt must contain at least one token");
    let v = model.vocab_size();
    let mut sampler = Sampler::new(opts, v)?;
    sampler.reset(prompt);
    let mut ctx: Vec<u32> = Vec::with_capacity(prompt.len() + opts.max_new_tokens);
    ctx.extend_from_slice(prompt);
    let mut out = Vec::with_capacity(opts.max_new_tokens);
    let mut logits = vec![0.0f32; v];
    logits.copy_from_slice(model.start(&ctx)?);
    for step in 0..opts.max_new_tokens {
        let next = sampler.pick(&logits, rng);
        sampler.observe(next);
        ctx.push(next);
        out.push(next);
        if on_token(next).should_stop() || step + 1 == opts.max_new_tokens {
            break;
        }
        logits.copy_from_slice(model.extend(&ctx)?);
    }
    Ok(out)
}

/// [`generate`] for a batch of prompts of any lengths at once, one RNG per prompt: row `r`
/// produces exactly what `generate(model, &prompts[r], opts, &mut rngs[r], ..)` would (up to
/// float summation order in the batched products). Prompts run in groups of the model's batch
/// capacity; each group is one right-padded prefill pass, then one pass per step for all rows
/// still generating. `on_token(row, id)` sees each new token; `Break` ends that row only.
pub fn generate_batch<R: Rng, F: TokenFlow>(
    model: &mut Transformer,
    prompts: &[Vec<u32>],
    opts: &SampleOptions,
    rngs: &mut [R],
    mut on_token: impl FnMut(usize, u32) -> F,
) -> Result<Vec<Vec<u32>>> {
    ensure!(rngs.len() == prompts.len(), "{} RNGs for {} prompts", rngs.len(), prompts.len());
    if let Some(r) = prompts.iter().position(|p| p.is_empty()) {
        bail!("prompt {r} is empty: every prompt must contain at least one token");
    }
    let (block, v, cap) = (model.config.block_size, model.config.vocab_size, model.max_batch());
    let mut cache = model.kv_cache(cap)?;
    let mut out: Vec<Vec<u32>> = prompts.iter().map(|_| Vec::with_capacity(opts.max_new_tokens)).collect();
    let mut samplers = (0..cap.min(prompts.len())).map(|_| Sampler::new(opts, v)).collect::<Result<Vec<_>>>()?;
    let mut logits = vec![0.0f32; cap * v];
    let (mut batch, mut counts) = (Vec::new(), Vec::new());
    for (g, group) in prompts.chunks(cap).enumerate() {
        let first = g * cap;
        let n = group.len();
        cache.reset(n)?;
        let mut ctx: Vec<Vec<u32>> = group.to_vec();
        // Rows still generating, and whether a row's next pass re-runs its whole window.
        let mut live = vec![opts.max_new_tokens > 0; n];
        let mut refill = vec![true; n];
        for (s, p) in samplers.iter_mut().zip(group) {
            s.reset(p);
        }
        while live.iter().any(|&l| l) {
            // One pass: a full window for rows that (re)start, one token for the others.
            let window = |c: &Vec<u32>| c.len().min(block);
            let t = (0..n).filter(|&r| live[r]).map(|r| if refill[r] { window(&ctx[r]) } else { 1 }).max().unwrap_or(1);
            batch.clear();
            batch.resize(n * t, 0);
            counts.clear();
            for r in 0..n {
                let c = &ctx[r];
                let k = match (live[r], refill[r]) {
                    (false, _) => 0,
                    (true, true) => window(c),
                    (true, false) => 1,
                };
                batch[r * t..r * t + k].copy_from_slice(&c[c.len() - k..]);
                counts.push(k);
            }
            let step = model.forward_cached(&batch, &counts, t, &mut cache, LogitRows::Last)?;
            logits[..n * v].copy_from_slice(step);
            for r in 0..n {
                if !live[r] {
                    continue;
                }
                let next = samplers[r].pick(&logits[r * v..(r + 1) * v], &mut rngs[first + r]);
                samplers[r].observe(next);
                ctx[r].push(next);
                out[first + r].push(next);
                let stop = on_token(first + r, next).should_stop();
                live[r] = !stop && out[first + r].len() < opts.max_new_tokens;
                refill[r] = cache.len(r) == block;
                if refill[r] {
                    cache.clear_row(r);
                }
            }
        }
    }
    Ok(out)
}

/// Stop strings, searched in generated text (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
}

impl StopStrings {
    /// An empty stop string is an error (it would match before any text).
    pub fn new(stops: &[String]) -> Result<Self> {
        ensure!(stops.iter().all(|s| !s.is_empty()), "a stop string must not be empty");
        Ok(StopStrings { stops: stops.to_vec() })
    }

    /// The first occurrence of a stop string in `text` that starts at or after byte `from`:
    /// `(start byte, index of the stop string)`; the earliest start wins, then the first listed.
    pub fn find(&self, text: &str, from: usize) -> Option<(usize, usize)> {
        let hay = &text[from..];
        self.stops.iter().enumerate().filter_map(|(i, s)| hay.find(s.as_str()).map(|at| (from + at, i))).min()
    }

    /// How many leading bytes of `text` can be shown: all but the longest suffix that is the
    /// beginning of a stop string (more text could complete it). Assumes `text` holds no stop
    /// string.
    pub fn safe_len(&self, text: &str) -> usize {
        let mut safe = text.len();
        for s in &self.stops {
            for k in (1..s.len().min(text.len() + 1)).rev() {
                if s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                    safe = safe.min(text.len() - k);
                    break;
                }
            }
        }
        safe
    }
}

/// The result of [`generate_text`].
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// Every generated id, the one that completed a stop string included.
    pub tokens: Vec<u32>,
    /// The generated text (not the prompt), cut before the stop string.
    pub text: String,
    /// Index in `opts.stop` of the stop string that ended generation.
    pub stopped_by: Option<usize>,
}

/// The text of a generation as it grows, token by token: decodes the generated ids after each
/// one, holds back a token that ends inside a multi-byte character (until the rest comes) and a
/// suffix that could begin a stop string (until it is ruled out), and finds the stop string
/// that ends the generation. The pieces [`TextStream::push`] and [`TextStream::finish`] return
/// concatenate to the final text, cut where the stop string begins. [`generate_text`] and the
/// server (`src/serve/`) both stream through it. Decoding allocates per token.
#[derive(Clone, Debug)]
pub struct TextStream {
    stops: StopStrings,
    /// The prompt's last token ([`Tokenizer::decode_after`]).
    prev: Option<u32>,
    tokens: Vec<u32>,
    /// Bytes of the decoded text already returned.
    printed: usize,
}

impl TextStream {
    /// A stream of the text generated after a prompt ending with `prev`, ended by `stop`.
    pub fn new(stop: &[String], prev: Option<u32>) -> Result<Self> {
        Ok(TextStream { stops: StopStrings::new(stop)?, prev, tokens: Vec::new(), printed: 0 })
    }

    /// Adds the next generated id: returns the text that became final (maybe empty) and, when
    /// the text now holds a stop string, its index (the text is cut where it begins, and the
    /// generation must end).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<(String, Option<usize>)> {
        self.tokens.push(id);
        let text = tokenizer.decode_after(self.prev, &self.tokens)?;
        if text.ends_with('\u{FFFD}') {
            // An incomplete character: wait for its remaining bytes.
            return Ok((String::new(), None));
        }
        Ok(self.advance(&text, false))
    }

    /// No more tokens come: the rest of the text (a held-back suffix, an incomplete character
    /// as U+FFFD) and the stop string found in it, if any.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<(String, Option<usize>)> {
        let text = tokenizer.decode_after(self.prev, &self.tokens)?;
        Ok(self.advance(&text, true))
    }

    /// Every id pushed, the one that completed a stop string included.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn into_tokens(self) -> Vec<u32> {
        self.tokens
    }

    /// The final part of `text` not yet returned, and the stop string found in it.
    fn advance(&mut self, text: &str, last: bool) -> (String, Option<usize>) {
        let found = self.stops.find(text, self.printed);
        let end = match found {
            Some((at, _)) => at,
            None if last => text.len(),
            None => self.stops.safe_len(text),
        };
        let mut piece = String::new();
        if end > self.printed {
            piece.push_str(&text[self.printed..end]);
            self.printed = end;
        }
        (piece, found.map(|(_, which)| which))
    }
}

/// [`generate`] with text: decodes the generated ids after every token, applies
/// `opts.stop`, and streams the text through `on_text` as soon as it is final
/// ([`TextStream`]). The pieces passed to `on_text` concatenate to the returned text.
pub fn generate_text<R: Rng>(
    model: &mut Transformer,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &SampleOptions,
    rng: &mut R,
    on_text: impl FnMut(&str),
) -> Result<Generation> {
    generate_text_with(&mut CachedDecoder::new(model)?, tokenizer, prompt, opts, rng, on_text)
}

/// [`generate_text`] for any [`NextToken`] model.
pub fn generate_text_with<R: Rng>(
    model: &mut impl NextToken,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &SampleOptions,
    rng: &mut R,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    let mut stream = TextStream::new(&opts.stop, prompt.last().copied())?;
    let (mut text, mut stopped_by, mut failed) = (String::new(), None, None);
    let mut emit = |piece: String, text: &mut String| {
        if !piece.is_empty() {
            on_text(&piece);
            text.push_str(&piece);
        }
    };
    generate_with(model, prompt, opts, rng, |id| match stream.push(tokenizer, id) {
        Ok((piece, stop)) => {
            emit(piece, &mut text);
            stopped_by = stop;
            if stop.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        Err(e) => {
            failed = Some(e);
            ControlFlow::Break(())
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if stopped_by.is_none() {
        let (piece, stop) = stream.finish(tokenizer)?;
        emit(piece, &mut text);
        stopped_by = stop;
    }
    Ok(Generation { tokens: stream.into_tokens(), text, stopped_by })
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Index drawn from the distribution `probs` with the uniform number `u` in [0, 1).
fn sample_index(probs: &[f32], u: f32) -> u32 {
    let mut acc = 0.0;
    for (i, &p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return i as u32;
        }
    }
    // Rounding left the total just under 1: take the last token with nonzero probability.
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_cdf_sampling() {
        let p = [0.1, 0.0, 0.6, 0.3];
        assert_eq!(sample_index(&p, 0.05), 0);
        assert_eq!(sample_index(&p, 0.1), 2);
        assert_eq!(sample_index(&p, 0.69), 2);
        assert_eq!(sample_index(&p, 0.71), 3);
        assert_eq!(sample_index(&p, 0.999_999_9), 3);
        assert_eq!(argmax(&[0.1, 3.0, -1.0, 3.0]), 1);
    }
}
