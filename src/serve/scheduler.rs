//! Continuous batching: one thread owns the model and two KV caches, and every request that
//! is generating shares one batched decode pass per step, joining and leaving the batch at
//! token granularity.
//!
//! ```text
//! main cache     (L, max_batch, block, KV)   one row per generating sequence, rows 0..n in use
//! prefill cache  (L, max_batch, block, KV)   prompts being processed, one row per prompt
//! ```
//!
//! Each step of the loop in [`Scheduler::run`]:
//! 1. takes new [`Job`]s from the channel and drops the cancelled ones (a client that hung up
//!    frees its rows here, before the next pass);
//! 2. when no prompt is being processed, forms a *prefill group* from the queue (sequences
//!    whose context filled the model's block first, then jobs in arrival order) while the
//!    group's padded size stays within `prefill_tokens` and its sequences fit in the free
//!    main rows;
//! 3. runs one *prefill pass*: every prompt of the group advances by at most `prefill_chunk`
//!    tokens (chunked prefill: a long prompt never holds the running streams for more than one
//!    chunk per step); a prompt that is complete picks its first token from the pass's logits
//!    and its cached positions are copied into a free main row, once per choice (`n`);
//! 4. runs one *decode pass* over main rows 0..n: each row's last token, one position each;
//!    rows whose generation ended leave, and the last row moves into the gap
//!    ([`KvCache::move_row`]), so a pass never computes a finished row.
//!
//! Every sequence runs exactly the computation [`crate::infer::sample::generate`] runs for it
//! alone: its prompt in one pass (in chunks when longer than `prefill_chunk`), then one token
//! per pass at its own positions, and once its context reaches `block_size` the last
//! `block_size` tokens again (through the prefill cache). So greedy output equals
//! `lmlab sample`'s up to float summation order in the batched products.

use crate::data::Tokenizer;
use crate::infer::sample::{SampleOptions, Sampler, TextStream};
use crate::model::transformer::{KvCache, LogitRows, Transformer};
use crate::serve::metrics::Metrics;
use anyhow::Result;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Sizes of the scheduler's batches.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// Sequences generating at once (rows of the main KV cache).
    pub max_batch: usize,
    /// Prompt tokens one prompt advances by per step.
    pub prefill_chunk: usize,
    /// Padded positions (prompts × longest chunk) of one prefill pass.
    pub prefill_tokens: usize,
}

/// One prompt to complete `n` times.
pub struct Job {
    /// At least one and at most `block_size` tokens.
    pub prompt: Vec<u32>,
    pub n: usize,
    /// The response's index of choice 0 (a request with several prompts numbers its choices
    /// prompt by prompt).
    pub first_choice: usize,
    /// Choice `i` samples with seed `seed + i`.
    pub seed: u64,
    pub opts: SampleOptions,
    /// Log-probabilities of each generated token and of its `k` most likely alternatives.
    pub logprobs: Option<usize>,
    /// End at the tokenizer's end-of-text token (finish reason "stop").
    pub stop_at_eos: bool,
    pub events: UnboundedSender<Event>,
    /// Set when the client is gone: the job's rows are freed at the next step.
    pub cancel: Arc<AtomicBool>,
    pub arrived: Instant,
}

/// Why a choice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A stop string or the end-of-text token.
    Stop,
    /// `max_tokens` generated.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// The log-probability of a generated token under the model (the softmax of its raw logits).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The token's own text (lossy for a partial character).
    pub token: String,
    pub logprob: f32,
    /// The most likely tokens at this position, most likely first.
    pub top: Vec<(String, f32)>,
}

/// What the scheduler tells a request, in order per choice.
#[derive(Clone, Debug)]
pub enum Event {
    /// A generated token: the text that became final with it (maybe empty: held back until a
    /// character or a possible stop string is complete).
    Token { choice: usize, text: String, logprob: Option<TokenLogprob> },
    /// The choice ended after `tokens` generated tokens.
    Done { choice: usize, finish: Finish, tokens: usize },
    /// The model failed; the request ends.
    Failed(String),
}

/// A job's part that its sequences share.
struct JobInfo {
    events: UnboundedSender<Event>,
    cancel: Arc<AtomicBool>,
    opts: SampleOptions,
    logprobs: Option<usize>,
    stop_at_eos: bool,
    arrived: Instant,
    first_token: AtomicBool,
}

impl JobInfo {
    fn gone(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

/// One choice being generated.
struct Seq {
    job: Arc<JobInfo>,
    choice: usize,
    sampler: Sampler,
    rng: Xoshiro256PlusPlus,
    /// The prompt and every generated token (the window of a refill).
    ctx: Vec<u32>,
    generated: usize,
    text: TextStream,
    /// The last generated token: the next decode pass's input.
    pending: u32,
}

/// A prompt (or a refilled window) being processed, and the sequences that continue it.
struct Prefill {
    tokens: Vec<u32>,
    done: usize,
    seqs: Vec<Seq>,
}

/// What a sequence does after a token.
enum Next {
    Continue,
    Ended,
}

/// The model's owner; see the module docs.
pub struct Scheduler {
    model: Transformer,
    tokenizer: Tokenizer,
    cfg: BatchConfig,
    jobs: Receiver<Job>,
    metrics: Arc<Metrics>,
    /// (max_batch, V) logits of the main rows.
    cache: KvCache,
    rows: Vec<Seq>,
    prefill_cache: KvCache,
    group: Vec<Prefill>,
    /// Sequences whose context reached block_size: their last block_size tokens go again.
    refill: VecDeque<Prefill>,
    waiting: VecDeque<Job>,
    /// (max_batch, V) logits copied out of the model.
    logits: Vec<f32>,
    tokens: Vec<u32>,
    counts: Vec<usize>,
}

impl Scheduler {
    /// A scheduler for `model` (a decoder loaded for at least `cfg.max_batch` rows).
    pub fn new(
        model: Transformer,
        tokenizer: Tokenizer,
        cfg: BatchConfig,
        jobs: Receiver<Job>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        anyhow::ensure!(cfg.max_batch >= 1 && cfg.prefill_chunk >= 1, "the batch and the prefill chunk must be >= 1");
        let cache = model.kv_cache(cfg.max_batch)?;
        let prefill_cache = model.kv_cache(cfg.max_batch)?;
        let v = model.config.vocab_size;
        Ok(Scheduler {
            cache,
            prefill_cache,
            logits: vec![0.0; cfg.max_batch * v],
            tokens: Vec::new(),
            counts: Vec::new(),
            rows: Vec::with_capacity(cfg.max_batch),
            group: Vec::new(),
            refill: VecDeque::new(),
            waiting: VecDeque::new(),
            model,
            tokenizer,
            cfg,
            jobs,
            metrics,
        })
    }

    /// Serves jobs until every sender of the channel is gone and no work is left. Waits for
    /// work outside `pool` and runs each step inside it, so the pool's threads stay free for
    /// other work (embeddings) while the batch is empty.
    pub fn run(mut self, pool: &rayon::ThreadPool) {
        loop {
            let idle = self.rows.is_empty() && self.group.is_empty() && self.refill.is_empty();
            if idle && self.waiting.is_empty() {
                match self.jobs.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            pool.install(|| self.step());
        }
    }

    /// Steps 1 to 4 of the module docs.
    fn step(&mut self) {
        while let Ok(job) = self.jobs.try_recv() {
            self.waiting.push_back(job);
        }
        self.drop_cancelled();
        if self.group.is_empty() {
            self.form_group();
        }
        if let Err(e) = self.prefill_step().and_then(|_| self.decode_step()) {
            self.fail_all(&format!("{e:#}"));
        }
        let prefilling: usize = self.group.iter().chain(&self.refill).map(|p| p.seqs.len()).sum();
        self.metrics.set_running(self.rows.len() + prefilling);
    }

    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|j| !(j.cancel.load(Ordering::Relaxed) || j.events.is_closed()));
        self.metrics.dequeued(before - self.waiting.len());
        for p in self.group.iter_mut().chain(self.refill.iter_mut()) {
            p.seqs.retain(|s| !s.job.gone());
        }
        self.refill.retain(|p| !p.seqs.is_empty());
        for r in (0..self.rows.len()).rev() {
            if self.rows[r].job.gone() {
                self.free_row(r);
            }
        }
    }

    /// Takes main row `r`'s sequence out; the last row moves into its place.
    fn free_row(&mut self, r: usize) -> Seq {
        let seq = self.rows.swap_remove(r);
        let last = self.rows.len();
        if r < last {
            self.cache.move_row(last, r).expect("rows within the cache");
        }
        seq
    }

    /// Main rows neither generating nor promised to the current group.
    fn free_rows(&self) -> usize {
        self.cfg.max_batch - self.rows.len() - self.group.iter().map(|p| p.seqs.len()).sum::<usize>()
    }

    fn form_group(&mut self) {
        let (chunk, budget) = (self.cfg.prefill_chunk, self.cfg.prefill_tokens.max(self.cfg.prefill_chunk));
        let mut longest = 0;
        let mut free = self.free_rows();
        let max_rows = self.cfg.max_batch;
        // Fits: (rows + 1) · longest chunk within the budget, and rows for every choice.
        let fits = |group: &[Prefill], len: usize, seqs: usize, longest: usize, free: usize| {
            let t = longest.max(len.min(chunk));
            group.len() < max_rows && (group.len() + 1) * t <= budget && seqs <= free
        };
        while let Some(p) = self.refill.front() {
            if !fits(&self.group, p.tokens.len(), p.seqs.len(), longest, free) {
                break;
            }
            let p = self.refill.pop_front().unwrap();
            longest = longest.max(p.tokens.len().min(chunk));
            free -= p.seqs.len();
            self.group.push(p);
        }
        while let Some(j) = self.waiting.front() {
            if !self.refill.is_empty() || !fits(&self.group, j.prompt.len(), j.n, longest, free) {
                break;
            }
            let job = self.waiting.pop_front().unwrap();
            self.metrics.dequeued(1);
            longest = longest.max(job.prompt.len().min(chunk));
            free -= job.n;
            let p = self.start(job);
            self.group.push(p);
        }
        if !self.group.is_empty() {
            self.prefill_cache.reset(self.group.len()).expect("group within the cache");
        }
    }

    /// A job's prompt with its `n` sequences.
    fn start(&mut self, job: Job) -> Prefill {
        let v = self.model.config.vocab_size;
        let info = Arc::new(JobInfo {
            events: job.events,
            cancel: job.cancel,
            opts: job.opts,
            logprobs: job.logprobs,
            stop_at_eos: job.stop_at_eos,
            arrived: job.arrived,
            first_token: AtomicBool::new(false),
        });
        self.metrics.add_prompt_tokens(job.prompt.len());
        let prev = job.prompt.last().copied();
        let mut seqs = Vec::with_capacity(job.n);
        for i in 0..job.n {
            // The options were validated when the request was read.
            let made = Sampler::new(&info.opts, v).and_then(|s| Ok((s, TextStream::new(&info.opts.stop, prev)?)));
            let (mut sampler, text) = match made {
                Ok(x) => x,
                Err(e) => {
                    let _ = info.events.send(Event::Failed(format!("{e:#}")));
                    break;
                }
            };
            sampler.reset(&job.prompt);
            seqs.push(Seq {
                job: info.clone(),
                choice: job.first_choice + i,
                sampler,
                rng: Xoshiro256PlusPlus::seed_from_u64(job.seed.wrapping_add(i as u64)),
                ctx: job.prompt.clone(),
                generated: 0,
                text,
                pending: 0,
            });
        }
        Prefill { tokens: job.prompt, done: 0, seqs }
    }

    /// One chunk of every prompt of the group; complete prompts start generating.
    fn prefill_step(&mut self) -> Result<()> {
        if self.group.is_empty() {
            return Ok(());
        }
        let chunk = self.cfg.prefill_chunk;
        self.counts.clear();
        for p in &self.group {
            self.counts.push(if p.seqs.is_empty() { 0 } else { (p.tokens.len() - p.done).min(chunk) });
        }
        let t = self.counts.iter().copied().max().unwrap_or(0);
        if t == 0 {
            self.group.clear();
            return Ok(());
        }
        let k = self.group.len();
        self.tokens.clear();
        self.tokens.resize(k * t, 0);
        for (i, p) in self.group.iter().enumerate() {
            let n = self.counts[i];
            self.tokens[i * t..i * t + n].copy_from_slice(&p.tokens[p.done..p.done + n]);
        }
        let v = self.model.config.vocab_size;
        let out = self.model.forward_cached(&self.tokens, &self.counts, t, &mut self.prefill_cache, LogitRows::Last)?;
        self.logits[..k * v].copy_from_slice(out);
        let block = self.model.config.block_size;
        for i in 0..k {
            let n = self.counts[i];
            let p = &mut self.group[i];
            p.done += n;
            if n == 0 || p.done < p.tokens.len() {
                continue;
            }
            for mut seq in std::mem::take(&mut p.seqs) {
                let logits = &self.logits[i * v..(i + 1) * v];
                if let Next::Ended = seq.advance(logits, &self.tokenizer, &self.metrics) {
                    continue;
                }
                if self.prefill_cache.len(i) == block {
                    self.refill.push_back(seq.window(block));
                    continue;
                }
                let r = self.rows.len();
                self.cache.copy_row_from(r, &self.prefill_cache, i)?;
                self.rows.push(seq);
            }
        }
        if self.group.iter().all(|p| p.seqs.is_empty()) {
            self.group.clear();
        }
        Ok(())
    }

    /// One token for every main row.
    fn decode_step(&mut self) -> Result<()> {
        let n = self.rows.len();
        if n == 0 {
            return Ok(());
        }
        self.cache.set_rows(n)?;
        self.tokens.clear();
        self.tokens.extend(self.rows.iter().map(|s| s.pending));
        self.counts.clear();
        self.counts.resize(n, 1);
        let v = self.model.config.vocab_size;
        let out = self.model.forward_cached(&self.tokens, &self.counts, 1, &mut self.cache, LogitRows::Last)?;
        self.logits[..n * v].copy_from_slice(out);
        let block = self.model.config.block_size;
        let mut leave = Vec::new();
        for (r, seq) in self.rows.iter_mut().enumerate() {
            match seq.advance(&self.logits[r * v..(r + 1) * v], &self.tokenizer, &self.metrics) {
                Next::Ended => leave.push((r, false)),
                Next::Continue if self.cache.len(r) == block => leave.push((r, true)),
                Next::Continue => {}
            }
        }
        // Highest first: the row moved into a gap is one already kept.
        for (r, refill) in leave.into_iter().rev() {
            let seq = self.free_row(r);
            if refill {
                self.refill.push_back(seq.window(block));
            }
        }
        Ok(())
    }

    fn fail_all(&mut self, message: &str) {
        let seqs = self.rows.drain(..).chain(self.group.drain(..).flat_map(|p| p.seqs));
        for s in seqs.chain(self.refill.drain(..).flat_map(|p| p.seqs)) {
            let _ = s.job.events.send(Event::Failed(message.to_owned()));
        }
    }
}

impl Seq {
    /// Picks the next token from `logits` (V) and tells the client.
    fn advance(&mut self, logits: &[f32], tok: &Tokenizer, metrics: &Metrics) -> Next {
        let job = &self.job;
        let id = self.sampler.pick(logits, &mut self.rng);
        self.sampler.observe(id);
        self.ctx.push(id);
        self.generated += 1;
        self.pending = id;
        metrics.add_generated_tokens(1);
        if !job.first_token.swap(true, Ordering::Relaxed) {
            metrics.observe_ttft(job.arrived.elapsed().as_secs_f64());
        }
        let logprob = job.logprobs.map(|k| token_logprob(logits, id, k, tok));
        let eos = job.stop_at_eos && tok.end_of_text() == Some(id);
        let pushed = if eos { Ok((String::new(), None)) } else { self.text.push(tok, id) };
        let (mut text, stop) = match pushed {
            Ok(x) => x,
            Err(e) => {
                let _ = job.events.send(Event::Failed(format!("{e:#}")));
                return Next::Ended;
            }
        };
        let finish = if stop.is_some() || eos {
            Some(Finish::Stop)
        } else if self.generated >= job.opts.max_new_tokens {
            Some(Finish::Length)
        } else {
            None
        };
        if finish.is_some() && stop.is_none() {
            // The held-back end of the text is final now.
            match self.text.finish(tok) {
                Ok((rest, _)) => text.push_str(&rest),
                Err(e) => {
                    let _ = job.events.send(Event::Failed(format!("{e:#}")));
                    return Next::Ended;
                }
            }
        }
        let mut sent = true;
        if !text.is_empty() || logprob.is_some() {
            sent = job.events.send(Event::Token { choice: self.choice, text, logprob }).is_ok();
        }
        match finish {
            Some(finish) => {
                let _ = job.events.send(Event::Done { choice: self.choice, finish, tokens: self.generated });
                Next::Ended
            }
            None if sent => Next::Continue,
            None => Next::Ended,
        }
    }

    /// The sequence's last `block` tokens, to run again.
    fn window(self, block: usize) -> Prefill {
        let tokens = self.ctx[self.ctx.len() - block..].to_vec();
        Prefill { tokens, done: 0, seqs: vec![self] }
    }
}

/// The log-softmax of `logits` at `id`, and the `k` largest entries.
fn token_logprob(logits: &[f32], id: u32, k: usize, tok: &Tokenizer) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>().ln() as f32;
    let text = |i: u32| tok.decode(&[i]).unwrap_or_default();
    let mut top: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(top.len());
    if k > 0 {
        top.select_nth_unstable_by(k - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    }
    top.truncate(k);
    top.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    TokenLogprob {
        token: text(id),
        logprob: logits[id as usize] - lse,
        top: top.into_iter().map(|i| (text(i), logits[i as usize] - lse)).collect(),
    }
}
