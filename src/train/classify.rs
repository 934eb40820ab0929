//! Sequence classification with an encoder: a BPE vocabulary trained on the training texts, a
//! [CLS] token (the BOS id) in front of every text, padded batches with a key mask, and accuracy
//! on a held-out validation share and on the test file.
//!
//! ```text
//! [CLS] tokens (B,T) + mask ─ encoder ─ pool ([CLS] or mean) ─ classifier ─ (B,K) ─ CE(label)
//! ```

use super::config::RunConfig;
use super::log::{MetricsLog, Progress};
use super::precision::LossScaler;
use super::{log_skipped, optimizer_step, GradAccum, TrainOptions, TrainSummary};
use crate::data::bpe::{BpeTokenizer, BOS, PAD};
use crate::data::classify::LabelledText;
use crate::data::Tokenizer;
use crate::inspect::HealthMonitor;
use crate::io::checkpoint::{self, TrainState};
use crate::kernels::dropout::mix64;
use crate::model::transformer::Transformer;
use anyhow::{ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Token ids of each text: [CLS] (the BOS id) then at most `max_len - 1` subword tokens.
fn encode_all(tok: &BpeTokenizer, texts: &[String], max_len: usize) -> Result<Vec<Vec<u32>>> {
    texts
        .iter()
        .map(|t| {
            let mut ids = vec![BOS];
            ids.extend(tok.encode(t)?.into_iter().take(max_len - 1));
            Ok(ids)
        })
        .collect()
}

/// One padded batch: tokens (B, T), mask (B, T), labels (B).
struct ClassBatch {
    b: usize,
    t: usize,
    idx: Vec<u32>,
    mask: Vec<bool>,
    labels: Vec<i32>,
}

impl ClassBatch {
    fn new(max_b: usize, max_t: usize) -> Self {
        ClassBatch {
            b: 0,
            t: 0,
            idx: Vec::with_capacity(max_b * max_t),
            mask: Vec::with_capacity(max_b * max_t),
            labels: Vec::with_capacity(max_b),
        }
    }

    fn fill(&mut self, seqs: &[Vec<u32>], labels: &[usize], rows: &[usize]) {
        let t = rows.iter().map(|&r| seqs[r].len()).max().unwrap_or(1);
        (self.b, self.t) = (rows.len(), t);
        self.idx.clear();
        self.idx.resize(rows.len() * t, PAD);
        self.mask.clear();
        self.mask.resize(rows.len() * t, false);
        self.labels.clear();
        for (i, &r) in rows.iter().enumerate() {
            let s = &seqs[r];
            self.idx[i * t..i * t + s.len()].copy_from_slice(s);
            self.mask[i * t..i * t + s.len()].fill(true);
            self.labels.push(labels[r] as i32);
        }
    }
}

/// (mean loss, accuracy) of `model` on `rows` of the encoded set.
fn evaluate(
    model: &mut Transformer,
    seqs: &[Vec<u32>],
    labels: &[usize],
    rows: &[usize],
    batch: &mut ClassBatch,
) -> Result<(f32, f64)> {
    let k = model.config.num_classes;
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    for chunk in rows.chunks(model.max_batch()) {
        batch.fill(seqs, labels, chunk);
        let loss = model
            .forward_classify(&batch.idx, Some(&batch.mask), Some(&batch.labels), batch.b, batch.t, false, 0)?
            .unwrap_or(0.0);
        loss_sum += loss as f64 * chunk.len() as f64;
        for (row, &y) in model.logits().chunks(k).zip(&batch.labels) {
            let pred = (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            correct += (pred as i32 == y) as usize;
        }
    }
    Ok(((loss_sum / rows.len() as f64) as f32, correct as f64 / rows.len() as f64))
}

fn load(format: &str, path: &Path, names: Option<&[String]>) -> Result<LabelledText> {
    let set = match format {
        "sst2" => LabelledText::load_sst2(path)?,
        "trec" => LabelledText::load_trec(path, true)?,
        _ => LabelledText::load_trec(path, false)?,
    };
    match names {
        Some(n) => set.with_labels(n),
        None => Ok(set),
    }
}

pub fn train_classifier(cfg: &RunConfig, opts: &TrainOptions) -> Result<TrainSummary> {
    let (d, tc) = (&cfg.data, &cfg.train);
    let train_set = load(&d.format, Path::new(&d.train), None)?;
    let test_set = load(&d.format, Path::new(&d.test), Some(&train_set.label_names))
        .with_context(|| format!("test file {}", d.test))?;
    let out_dir = PathBuf::from(&tc.out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;

    // The BPE vocabulary is learned from the training texts only.
    let corpus = out_dir.join(".tokenizer-train.txt");
    std::fs::write(&corpus, train_set.texts.join("\n"))
        .with_context(|| format!("cannot write {}", corpus.display()))?;
    let bpe = BpeTokenizer::train(std::slice::from_ref(&corpus), d.vocab_size);
    let _ = std::fs::remove_file(&corpus);
    let bpe = bpe.context("training the BPE tokenizer")?;
    let train_seqs = encode_all(&bpe, &train_set.texts, d.max_len)?;
    let test_seqs = encode_all(&bpe, &test_set.texts, d.max_len)?;
    let test_rows: Vec<usize> = (0..test_seqs.len()).collect();

    // A seeded shuffle holds out the validation share of the training examples.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(tc.seed);
    let mut order: Vec<usize> = (0..train_seqs.len()).collect();
    order.shuffle(&mut rng);
    let n_val = (train_seqs.len() as f64 * d.val_fraction).round() as usize;
    let (val_rows, train_rows) = order.split_at(n_val);
    let (val_rows, mut train_rows) = (val_rows.to_vec(), train_rows.to_vec());
    ensure!(
        !train_rows.is_empty() && !val_rows.is_empty(),
        "data.val_fraction leaves no training or no validation examples"
    );

    let tokenizer = Tokenizer::Bpe(Box::new(bpe));
    let model_cfg = crate::model::transformer::ModelConfig {
        vocab_size: tokenizer.vocab_size(),
        num_classes: train_set.num_classes(),
        ..cfg.model.clone()
    };
    let mut model = Transformer::new(model_cfg, tc.batch_size)?;
    model.init_with(tc.init, tc.init_std, tc.seed);
    model.label_smoothing = tc.label_smoothing;
    model.set_precision(tc.precision);
    let mut scaler = LossScaler::from_config(tc);
    let mut opt = cfg.optim.build(&model.layout)?;
    let schedule = cfg.optim.schedule();
    let mut batch = ClassBatch::new(tc.batch_size, d.max_len);
    let mut eval_batch = ClassBatch::new(tc.batch_size, d.max_len);
    let ckpt_dir = out_dir.join("ckpt");
    let mut log = MetricsLog::open(&out_dir.join("metrics.jsonl"))?;
    let progress = Progress::new(tc.max_iters, 0, opts.quiet);
    if !opts.quiet {
        progress.println(format!(
            "model: {} parameters ({} layers, {} heads, {} wide, {:?} pooling), {} classes {:?}, BPE vocab {}; \
             data: {} train / {} val / {} test examples; {} threads",
            model.num_params(),
            cfg.model.n_layer,
            cfg.model.n_head,
            cfg.model.n_embd,
            cfg.model.pooling,
            train_set.num_classes(),
            train_set.label_names,
            tokenizer.vocab_size(),
            train_rows.len(),
            val_rows.len(),
            test_rows.len(),
            rayon::current_num_threads()
        ));
    }

    let mut health = HealthMonitor::new(tc.health_interval, &model);
    let started = Instant::now();
    let (mut cursor, mut last_train, mut last_val, mut best) = (train_rows.len(), f32::NAN, f32::NAN, None::<f32>);
    let mut window = (Instant::now(), 0u64, 0f64);
    for step in 0..=tc.max_iters {
        if step > 0 && (step % tc.eval_interval == 0 || step == tc.max_iters) {
            let (val_loss, val_acc) = evaluate(&mut model, &train_seqs, &train_set.labels, &val_rows, &mut eval_batch)?;
            log.eval(step, last_train, val_loss)?;
            progress.println(format!(
                "step {step:>6}: train loss {last_train:.4}, val loss {val_loss:.4}, val accuracy {:.2}%",
                100.0 * val_acc
            ));
            last_val = val_loss;
            best = Some(best.map_or(val_loss, |b: f32| b.min(val_loss)));
            let state = TrainState { step, rng: rng.clone(), best_val_loss: best, loss_scaler: scaler.state() };
            checkpoint::save(&ckpt_dir, &model, &opt, cfg, &tokenizer, &state)?;
        }
        if step == tc.max_iters {
            break;
        }
        let health_due = health.before_step(step + 1, &model);
        model.zero_grad();
        let mut acc = GradAccum::new(tc.grad_accum_steps, scaler.loss_scale());
        for micro in 0..tc.grad_accum_steps as u64 {
            if cursor + tc.batch_size > train_rows.len() {
                train_rows.shuffle(&mut rng);
                cursor = 0;
            }
            let rows = &train_rows[cursor..cursor + tc.batch_size.min(train_rows.len())];
            cursor += rows.len();
            batch.fill(&train_seqs, &train_set.labels, rows);
            let seed = mix64(tc.seed ^ mix64(step)) ^ micro;
            let loss = model
                .forward_classify(&batch.idx, Some(&batch.mask), Some(&batch.labels), batch.b, batch.t, true, seed)?
                .unwrap_or(0.0);
            acc.backward(&mut model, loss, step)?;
        }
        let loss = acc.finish(&mut model);
        let lr = schedule.lr(step);
        let s = optimizer_step(&mut model, &mut opt, cfg.optim.clipping(), step, loss, lr, &mut scaler)?;
        if s.skipped {
            log_skipped(&mut log, &progress, step + 1, &s)?;
        }
        if health_due {
            log.health(step + 1, &health.stats(&model))?;
        }
        window.1 += 1;
        window.2 += s.loss as f64;
        if (step + 1) % tc.log_interval == 0 {
            let ms = window.0.elapsed().as_secs_f64() * 1e3 / window.1 as f64;
            last_train = (window.2 / window.1 as f64) as f32;
            log.step(step + 1, last_train, s.lr, s.grad_norm, ms, (batch.b * batch.t) as f64 / ms * 1e3)?;
            progress.update(step + 1, last_train, s.lr, ms, (batch.b * batch.t) as f64 / ms * 1e3);
            window = (Instant::now(), 0, 0.0);
        }
    }
    progress.finish();
    let (test_loss, test_acc) = evaluate(&mut model, &test_seqs, &test_set.labels, &test_rows, &mut eval_batch)?;
    let results = serde_json::json!({
        "test_file": d.test, "test_examples": test_rows.len(), "test_accuracy": test_acc, "test_loss": test_loss,
        "val_loss": last_val, "labels": train_set.label_names, "steps": tc.max_iters,
    });
    std::fs::write(out_dir.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    if !opts.quiet {
        println!(
            "test accuracy {:.2}% on {} examples of {} (loss {test_loss:.4})",
            100.0 * test_acc,
            test_rows.len(),
            d.test
        );
    }
    Ok(TrainSummary::new(tc.max_iters, last_train, last_val, ckpt_dir, started.elapsed().as_secs_f64()))
}
