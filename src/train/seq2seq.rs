//! Sequence-to-sequence training (translation): a BPE vocabulary trained on both sides of the
//! training files, length-grouped batches of sentence pairs, teacher forcing with label
//! smoothing (`train.label_smoothing`), and the validation loss over the whole validation set.
//!
//! ```text
//! src (B,S) + src_mask ─ encoder ─┐
//! BOS tgt (B,T) ─ decoder ────────┴─ logits ─ CE(tgt EOS)
//! ```

use super::config::RunConfig;
use super::log::{MetricsLog, Progress};
use super::precision::{LossScaler, ScalerState};
use super::{log_skipped, optimizer_step, GradAccum, TrainOptions, TrainSummary};
use crate::data::bpe::BpeTokenizer;
use crate::data::parallel::{EvalBatcher, ParallelCorpus, Seq2SeqBatch, Seq2SeqBatcher};
use crate::data::Tokenizer;
use crate::inspect::HealthMonitor;
use crate::io::checkpoint::{self, TrainState};
use crate::kernels::dropout::mix64;
use crate::model::transformer::Transformer;
use crate::optim::Optimizer;
use anyhow::{Context, Result};
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Teacher-forced forward pass over one batch; returns the mean loss over its target tokens.
fn forward_batch(model: &mut Transformer, b: &Seq2SeqBatch, train: bool, seed: u64) -> Result<f32> {
    let (src, mask, tin, tout) = (&b.src, Some(&b.src_mask[..]), &b.tgt_in, Some(&b.tgt_out[..]));
    Ok(model.forward_seq2seq(src, mask, tin, tout, b.b, b.src_len, b.tgt_len, train, seed)?.unwrap_or(0.0))
}

/// Mean per-token cross-entropy of `model` over every pair of `corpus` (no dropout, no smoothing).
pub fn corpus_loss(
    model: &mut Transformer,
    corpus: &ParallelCorpus,
    batch: &mut Seq2SeqBatch,
    max_len: usize,
) -> Result<f64> {
    let mut batches = EvalBatcher::new(corpus, model.max_batch(), max_len, max_len, true)?;
    let (mut sum, mut count) = (0.0f64, 0usize);
    while batches.next_batch(corpus, batch) {
        let b = &*batch;
        let loss = forward_batch(model, b, false, 0)?;
        let n = b.tgt_out.iter().filter(|&&t| t >= 0).count();
        sum += loss as f64 * n as f64;
        count += n;
    }
    Ok(sum / count.max(1) as f64)
}

pub fn train_translation(cfg: &RunConfig, opts: &TrainOptions) -> Result<TrainSummary> {
    let d = &cfg.data;
    let tc = &cfg.train;
    let started = Instant::now();
    let files = [PathBuf::from(&d.src_train), PathBuf::from(&d.tgt_train)];
    let bpe = BpeTokenizer::train(&files, d.vocab_size).context("training the BPE tokenizer")?;
    let train = ParallelCorpus::load(Path::new(&d.src_train), Path::new(&d.tgt_train), &bpe, d.max_len)?;
    let val = ParallelCorpus::load(Path::new(&d.src_val), Path::new(&d.tgt_val), &bpe, d.max_len)?;
    let tokenizer = Tokenizer::Bpe(Box::new(bpe));

    let mut model = Transformer::new(cfg.model_config(tokenizer.vocab_size()), tc.batch_size)?;
    model.init_with(tc.init, tc.init_std, tc.seed);
    model.label_smoothing = tc.label_smoothing;
    model.set_precision(tc.precision);
    let mut scaler = LossScaler::from_config(tc);
    let mut opt = cfg.optim.build(&model.layout)?;
    let schedule = cfg.optim.schedule();
    let mut batcher = Seq2SeqBatcher::new(&train, tc.batch_size, d.max_len, d.max_len, tc.seed)?;
    let mut batch = Seq2SeqBatch::new(tc.batch_size, d.max_len, d.max_len);
    let mut eval_batch = Seq2SeqBatch::new(tc.batch_size, d.max_len, d.max_len);

    let out_dir = PathBuf::from(&tc.out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let ckpt_dir = out_dir.join("ckpt");
    let mut log = MetricsLog::open(&out_dir.join("metrics.jsonl"))?;
    let progress = Progress::new(tc.max_iters, 0, opts.quiet);
    if !opts.quiet {
        progress.println(format!(
            "model: {} parameters (encoder {} / decoder {} layers, {} heads, {} wide), BPE vocab {} ({} s to build); \
             data: {} train / {} val pairs ({} / {} truncated), {} batches per epoch; {} threads",
            model.num_params(),
            cfg.model.n_layer,
            cfg.model.dec_layers(),
            cfg.model.n_head,
            cfg.model.n_embd,
            tokenizer.vocab_size(),
            started.elapsed().as_secs(),
            train.len(),
            val.len(),
            train.truncated_src,
            train.truncated_tgt,
            batcher.batches_per_epoch(),
            rayon::current_num_threads()
        ));
    }
    let mut best: Option<f32> = None;
    let mut last_val = f32::NAN;
    let mut last_train = f32::NAN;
    let mut evaluate = |model: &mut Transformer,
                        opt: &Optimizer,
                        step: u64,
                        train_loss: f32,
                        log: &mut MetricsLog,
                        loss_scaler: Option<ScalerState>| {
        let val_loss = corpus_loss(model, &val, &mut eval_batch, d.max_len)? as f32;
        log.eval(step, train_loss, val_loss)?;
        progress.println(format!("step {step:>6}: train loss {train_loss:.4} (smoothed), val loss {val_loss:.4}"));
        best = Some(best.map_or(val_loss, |b: f32| b.min(val_loss)));
        let rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(tc.seed);
        let state = TrainState { step, rng, best_val_loss: best, loss_scaler };
        checkpoint::save(&ckpt_dir, model, opt, cfg, &tokenizer, &state)?;
        anyhow::Ok(val_loss)
    };

    let mut health = HealthMonitor::new(tc.health_interval, &model);
    let loop_start = Instant::now();
    let (mut window_start, mut window_steps, mut window_tokens, mut window_loss) = (Instant::now(), 0u64, 0usize, 0f64);
    for step in 0..tc.max_iters {
        if step > 0 && step % tc.eval_interval == 0 {
            last_val = evaluate(&mut model, &opt, step, last_train, &mut log, scaler.state())?;
        }
        let lr = schedule.lr(step);
        let health_due = health.before_step(step + 1, &model);
        model.zero_grad();
        let mut acc = GradAccum::new(tc.grad_accum_steps, scaler.loss_scale());
        for micro in 0..tc.grad_accum_steps as u64 {
            batcher.next_batch(&train, &mut batch);
            let seed = mix64(tc.seed ^ mix64(step)) ^ micro;
            let loss = forward_batch(&mut model, &batch, true, seed)?;
            acc.backward(&mut model, loss, step)?;
            window_tokens += batch.b * (batch.src_len + batch.tgt_len);
        }
        let loss = acc.finish(&mut model);
        let s = optimizer_step(&mut model, &mut opt, cfg.optim.clipping(), step, loss, lr, &mut scaler)?;
        if s.skipped {
            log_skipped(&mut log, &progress, step + 1, &s)?;
        }
        if health_due {
            log.health(step + 1, &health.stats(&model))?;
        }
        window_steps += 1;
        window_loss += s.loss as f64;
        let done = step + 1;
        if done % tc.log_interval == 0 || done == tc.max_iters {
            let secs = window_start.elapsed().as_secs_f64();
            let ms = secs * 1e3 / window_steps as f64;
            last_train = (window_loss / window_steps as f64) as f32;
            log.step(done, last_train, s.lr, s.grad_norm, ms, window_tokens as f64 / secs)?;
            progress.update(done, last_train, s.lr, ms, window_tokens as f64 / secs);
            (window_start, window_steps, window_tokens, window_loss) = (Instant::now(), 0, 0, 0.0);
        }
    }
    last_val = if tc.max_iters > 0 || last_val.is_nan() {
        evaluate(&mut model, &opt, tc.max_iters, last_train, &mut log, scaler.state())?
    } else {
        last_val
    };
    progress.finish();
    Ok(TrainSummary::new(tc.max_iters, last_train, last_val, ckpt_dir, loop_start.elapsed().as_secs_f64()))
}
