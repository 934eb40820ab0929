//! Sequence-to-sequence training (translation, summarization): a BPE vocabulary trained on both
//! sides of the training data, length-grouped batches of (source, target) pairs, teacher forcing
//! with label smoothing (`train.label_smoothing`), and the validation loss over the whole
//! validation set. The two tasks differ only in where the pairs come from: line-aligned text
//! files (translate) or the fields of JSON Lines records (summarize, [`crate::data::summarize`]).
//!
//! ```text
//! src (B,S) + src_mask ─ encoder ─┐
//! BOS tgt (B,T) ─ decoder ────────┴─ logits ─ CE(tgt EOS)
//! ```

use super::run::{fresh_model, loss_scaler, Eval, Resumed, RunTracker};
use super::{log_skipped, optimizer_step, GradAccum, TrainOptions, TrainSummary};
use crate::config::{RunConfig, Task};
use crate::data::bpe::BpeTokenizer;
use crate::data::parallel::{EvalBatcher, ParallelCorpus, Seq2SeqBatch, Seq2SeqBatcher};
use crate::data::summarize::read_pairs;
use crate::data::Tokenizer;
use crate::inspect::HealthMonitor;
use crate::io::checkpoint::{self, TrainState};
use crate::kernels::dropout::mix64;
use crate::model::transformer::Transformer;
use crate::optim::Optimizer;
use crate::optim::ScalerState;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Teacher-forced forward pass over one batch; returns the mean loss over its target tokens.
fn forward_batch(model: &mut Transformer, b: &Seq2SeqBatch, train: bool, seed: u64) -> Result<f32> {
    let (src, mask, tin, tout) = (&b.src, Some(&b.src_mask[..]), &b.tgt_in, Some(&b.tgt_out[..]));
    Ok(model.forward_seq2seq(src, mask, tin, tout, b.b, b.src_len, b.tgt_len, train, seed)?.unwrap_or(0.0))
}

/// Mean per-token cross-entropy of `model` over every pair of `corpus` (no dropout, no
/// smoothing); `batch` holds sources of up to `max_src_len` and targets of up to `max_tgt_len`.
pub fn corpus_loss(
    model: &mut Transformer,
    corpus: &ParallelCorpus,
    batch: &mut Seq2SeqBatch,
    max_src_len: usize,
    max_tgt_len: usize,
) -> Result<f64> {
    let mut batches = EvalBatcher::new(corpus, model.max_batch(), max_src_len, max_tgt_len, true)?;
    // Data-parallel: rank r evaluates batches r, r + N, ...; the sums are all-reduced.
    let world = crate::dist::world();
    let mut sums = [0.0f64, 0.0];
    let mut k = 0;
    while batches.next_batch(corpus, batch) {
        k += 1;
        if (k - 1) % world.size() != world.rank() {
            continue;
        }
        let b = &*batch;
        let loss = forward_batch(model, b, false, 0)?;
        let n = b.tgt_out.iter().filter(|&&t| t >= 0).count();
        sums[0] += loss as f64 * n as f64;
        sums[1] += n as f64;
    }
    world.all_reduce_sum_f64(&mut sums);
    Ok(sums[0] / sums[1].max(1.0))
}

/// The BPE vocabulary of a new run, trained on the sources and targets of the training data.
fn train_bpe(cfg: &RunConfig) -> Result<BpeTokenizer> {
    let d = &cfg.data;
    match d.task {
        Task::Summarize => {
            let pairs = read_pairs(Path::new(&d.train), &d.source_field, &d.target_field)?;
            let texts: Vec<&str> = pairs.iter().flat_map(|(s, t)| [s.as_str(), t.as_str()]).collect();
            BpeTokenizer::train_on_texts(&texts, d.vocab_size)
        }
        _ => BpeTokenizer::train(&[PathBuf::from(&d.src_train), PathBuf::from(&d.tgt_train)], d.vocab_size),
    }
}

/// The training and validation pairs, tokenized and cut to `data.max_src_len` / `max_tgt_len`.
fn load_corpora(cfg: &RunConfig, bpe: &BpeTokenizer) -> Result<(ParallelCorpus, ParallelCorpus)> {
    let d = &cfg.data;
    let (s, t) = (d.src_len(), d.tgt_len());
    match d.task {
        Task::Summarize => {
            let load = |path: &str| {
                let path = Path::new(path);
                ParallelCorpus::from_pairs(&read_pairs(path, &d.source_field, &d.target_field)?, path, bpe, s, t)
            };
            Ok((load(&d.train)?, load(&d.val)?))
        }
        _ => Ok((
            ParallelCorpus::load_capped(Path::new(&d.src_train), Path::new(&d.tgt_train), bpe, s, t)?,
            ParallelCorpus::load_capped(Path::new(&d.src_val), Path::new(&d.tgt_val), bpe, s, t)?,
        )),
    }
}

/// Trains a translation or summarization model, or resumes one from the checkpoint `resume`
/// (its BPE tokenizer, optimizer state and batch order included).
pub fn train_seq2seq(cfg: &RunConfig, resume: Option<&Path>, opts: &TrainOptions) -> Result<TrainSummary> {
    let d = &cfg.data;
    let tc = &cfg.train;
    let started = Instant::now();
    let (tokenizer, mut model, mut opt, from) = match resume {
        Some(dir) => {
            let r = Resumed::load(dir, cfg)?;
            (r.tokenizer, r.model, r.opt, Some(r.from))
        }
        // Fine-tuning an lmlab sequence-to-sequence checkpoint (its BPE vocabulary, checked below),
        // e.g. a translation model continued on another corpus.
        None if !tc.init_from.is_empty() => {
            let (tokenizer, model, opt, note) = super::run::pretrained_model(cfg, None)?;
            if !opts.quiet && !opts.json {
                println!("{note}");
            }
            (tokenizer, model, opt, None)
        }
        None => {
            let bpe = super::bpe_from_rank_0(|| train_bpe(cfg).context("training the BPE tokenizer"))?;
            let tokenizer = Tokenizer::Bpe(Box::new(bpe));
            let (model, opt) = fresh_model(cfg, cfg.model_config(tokenizer.vocab_size()))?;
            (tokenizer, model, opt, None)
        }
    };
    let mut scaler = loss_scaler(cfg, from.as_ref());
    super::shard_optimizer(cfg, &model, &mut opt)?;
    let Tokenizer::Bpe(bpe) = &tokenizer else {
        bail!("a sequence-to-sequence model needs lmlab's BPE tokenizer, not a {} tokenizer", tokenizer.kind());
    };
    let (train, val) = load_corpora(cfg, bpe)?;
    let (max_src, max_tgt) = (d.src_len(), d.tgt_len());
    let schedule = cfg.optim.schedule();
    // Data-parallel: the batcher draws global batches of batch_size × ranks pairs, and each rank
    // trains on its part of every one.
    let world = crate::dist::world();
    let global_batch = tc.batch_size * world.size();
    let mut batcher = Seq2SeqBatcher::new(&train, global_batch, max_src, max_tgt, tc.seed)?;
    if let Some(from) = &from {
        batcher.restore(&train, &from.task_state()?).context("cannot resume the batch order")?;
    }
    let mut batch = Seq2SeqBatch::new(tc.batch_size, max_src, max_tgt);
    let mut eval_batch = Seq2SeqBatch::new(tc.batch_size, max_src, max_tgt);

    let mut tracker = RunTracker::start(cfg, opts, from.as_ref())?;
    tracker.info(format!(
        "model: {} parameters (encoder {} / decoder {} layers, {} heads, {} wide), BPE vocab {} ({} s to {}); \
         data: {} train / {} val pairs ({} / {} truncated), {} batches per epoch; {}{} threads",
        model.num_params(),
        cfg.model.n_layer,
        cfg.model.dec_layers(),
        cfg.model.n_head,
        cfg.model.n_embd,
        tokenizer.vocab_size(),
        started.elapsed().as_secs(),
        if from.is_some() { "load" } else { "build" },
        train.len(),
        val.len(),
        train.truncated_src,
        train.truncated_tgt,
        batcher.batches_per_epoch(),
        super::ranks_note(world),
        rayon::current_num_threads()
    ));
    let mut last_train = f32::NAN;
    // Val loss over the whole validation set, then the checkpoint; true when early stopping
    // ends the run.
    let mut evaluate = |model: &mut Transformer,
                        opt: &Optimizer,
                        batcher: &Seq2SeqBatcher,
                        step: u64,
                        train_loss: f32,
                        tracker: &mut RunTracker,
                        loss_scaler: Option<ScalerState>| {
        let val_loss = corpus_loss(model, &val, &mut eval_batch, max_src, max_tgt)? as f32;
        let full = super::gather_optimizer(cfg, model, opt)?;
        tracker.evaluated(Eval { step, train_loss, val_loss, val_accuracy: None }, |record| {
            let order = batcher.state();
            let state = TrainState {
                step,
                rng: order.epoch_rng.clone(),
                record: record.clone(),
                task: Some(serde_json::to_value(order)?),
                loss_scaler,
            };
            checkpoint::encode(model, full.as_ref().unwrap_or(opt), cfg, &tokenizer, &state)
        })
    };

    let mut health = HealthMonitor::new(tc.health_interval, &model);
    let mut step = tracker.start_step();
    let (mut window_start, mut window_steps, mut window_tokens, mut window_loss) = (Instant::now(), 0u64, 0usize, 0f64);
    while step < tc.max_iters {
        if tracker.eval_due(step)
            && evaluate(&mut model, &opt, &batcher, step, last_train, &mut tracker, scaler.state())?
        {
            break;
        }
        let lr = schedule.lr(step);
        let health_due = health.before_step(step + 1, &model);
        model.zero_grad();
        let mut acc = GradAccum::new(tc.grad_accum_steps, scaler.loss_scale());
        for micro in 0..tc.grad_accum_steps as u64 {
            let part = batcher.next_batch_shard(&train, &mut batch, world.size(), world.rank());
            // A short last batch of the epoch can leave this rank nothing: it then adds no
            // gradient, and its count of 0 weighs nothing in the all-reduce.
            if part.is_empty() {
                continue;
            }
            model.set_first_sequence(part.start);
            let seed = mix64(tc.seed ^ mix64(step)) ^ micro;
            let loss = forward_batch(&mut model, &batch, true, seed)?;
            acc.backward(&mut model, loss, step)?;
            window_tokens += batch.b * (batch.src_len + batch.tgt_len) * world.size();
        }
        let loss = acc.finish(&mut model);
        let s = optimizer_step(&mut model, &mut opt, cfg.optim.clipping(), step, loss, lr, &mut scaler)?;
        if s.skipped {
            log_skipped(&mut tracker.log, &tracker.progress, step + 1, &s)?;
        }
        if health_due {
            tracker.log.health(step + 1, &health.stats(&model))?;
        }
        window_steps += 1;
        window_loss += s.loss as f64;
        let done = step + 1;
        if done % tc.log_interval == 0 || done == tc.max_iters {
            let secs = window_start.elapsed().as_secs_f64();
            let ms = secs * 1e3 / window_steps as f64;
            last_train = (window_loss / window_steps as f64) as f32;
            tracker.log.step(done, last_train, s.lr, s.grad_norm, ms, window_tokens as f64 / secs)?;
            tracker.progress.update(done, last_train, s.lr, ms, window_tokens as f64 / secs);
            (window_start, window_steps, window_tokens, window_loss) = (Instant::now(), 0, 0, 0.0);
        }
        step = done;
    }
    if tracker.needs_final_eval(step) {
        evaluate(&mut model, &opt, &batcher, step, last_train, &mut tracker, scaler.state())?;
    }
    Ok(tracker.finish(step))
}
