//! Sequence classification with an encoder: a BPE vocabulary trained on the training texts, a
//! `[CLS]` token (the BOS id) in front of every text, padded batches with a key mask, and accuracy
//! on a held-out validation share and on the test file.
//!
//! ```text
//! `[CLS]` tokens (B,T) + mask ─ encoder ─ pool (`[CLS]` or mean) ─ classifier ─ (B,K) ─ CE(label)
//! ```

use super::run::{fresh_model, loss_scaler, Eval, LogWindow, Resumed, RunTracker};
use super::{log_skipped, optimizer_step, GradAccum, TrainOptions, TrainSummary};
use crate::config::RunConfig;
use crate::data::bpe::{BpeTokenizer, BOS, PAD};
use crate::data::classify::LabelledText;
use crate::data::Tokenizer;
use crate::inspect::HealthMonitor;
use crate::io::checkpoint::{self, TrainState};
use crate::kernels::dropout::mix64;
use crate::model::transformer::Transformer;
use crate::optim::Optimizer;
use crate::optim::ScalerState;
use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Token ids of each text, at most `max_len`: with lmlab's BPE, `[CLS]` (the BOS id) then the
/// subword tokens; with a Hugging Face tokenizer (BERT's WordPiece, `train.init_from` an
/// imported model), its own `[CLS] … [SEP]`, cut to `max_len` with `[SEP]` kept.
fn encode_all(tok: &Tokenizer, texts: &[String], max_len: usize) -> Result<Vec<Vec<u32>>> {
    texts
        .iter()
        .map(|t| match tok {
            Tokenizer::Bpe(bpe) => {
                let mut ids = vec![BOS];
                ids.extend(bpe.encode(t)?.into_iter().take(max_len - 1));
                Ok(ids)
            }
            Tokenizer::Hf(hf) => {
                let mut ids = hf.encode(t)?;
                if ids.len() > max_len {
                    let sep = ids[ids.len() - 1];
                    ids.truncate(max_len - 1);
                    ids.push(sep);
                }
                Ok(ids)
            }
            other => bail!(
                "a classifier needs lmlab's BPE tokenizer or a Hugging Face one (BERT/MiniLM), not a {} tokenizer",
                other.kind()
            ),
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
        self.fill_within(seqs, labels, rows, rows)
    }

    /// `rows`, padded to the longest of `all` (the global batch `rows` is a data-parallel
    /// rank's part of), so that dropout masks line up with one process's.
    fn fill_within(&mut self, seqs: &[Vec<u32>], labels: &[usize], all: &[usize], rows: &[usize]) {
        let t = all.iter().map(|&r| seqs[r].len()).max().unwrap_or(1);
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

/// (mean loss, accuracy) of `model` on `rows` of the encoded set. Data-parallel: each rank
/// takes its part of the rows and the sums are all-reduced.
fn evaluate(
    model: &mut Transformer,
    seqs: &[Vec<u32>],
    labels: &[usize],
    rows: &[usize],
    batch: &mut ClassBatch,
) -> Result<(f32, f64)> {
    let k = model.config.num_classes;
    let world = crate::dist::world();
    let n = rows.len();
    let mine = &rows[world.part(n)];
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    for chunk in mine.chunks(model.max_batch()) {
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
    let mut sums = [loss_sum, correct as f64];
    world.all_reduce_sum_f64(&mut sums);
    Ok(((sums[0] / n as f64) as f32, sums[1] / n as f64))
}

/// The predicted class (an index into the training label names) of each text under the
/// classifier `model` with its tokenizer: encoded and padded as training and evaluation do (at
/// most `max_len` tokens, see `encode_all`), argmax of the logits (the first on a tie).
pub fn predict(model: &mut Transformer, tok: &Tokenizer, texts: &[String], max_len: usize) -> Result<Vec<usize>> {
    ensure!(max_len >= 2, "max_len must be at least 2");
    let seqs = encode_all(tok, texts, max_len)?;
    let no_labels = vec![0; seqs.len()];
    let rows: Vec<usize> = (0..seqs.len()).collect();
    let mut batch = ClassBatch::new(model.max_batch(), max_len);
    let k = model.config.num_classes;
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in rows.chunks(model.max_batch()) {
        batch.fill(&seqs, &no_labels, chunk);
        model.forward_classify(&batch.idx, Some(&batch.mask), None, batch.b, batch.t, false, 0)?;
        for row in model.logits().chunks(k).take(chunk.len()) {
            out.push((0..k).rev().max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0));
        }
    }
    Ok(out)
}

/// A classifier checkpoint's predictions on a file of texts ([`predict_file`]).
pub struct FilePredictions {
    /// The checkpoint's class names, in class-index order.
    pub label_names: Vec<String>,
    /// The predicted class name of each text.
    pub predicted: Vec<String>,
    /// The file's own labels (formats `sst2` and `trec`; None for plain text).
    pub gold: Option<Vec<String>>,
}

impl FilePredictions {
    /// Share of texts whose prediction is the file's label, when it has labels.
    pub fn accuracy(&self) -> Option<f64> {
        let g = self.gold.as_ref()?;
        let hits = g.iter().zip(&self.predicted).filter(|(a, b)| a == b).count();
        Some(hits as f64 / g.len().max(1) as f64)
    }
}

/// The class names a classifier checkpoint was trained with: saved in its training state
/// (`state.json`), or, for a checkpoint from before they were saved there, those of the
/// training file its config names.
pub fn checkpoint_labels(ck: &checkpoint::Checkpoint) -> Result<Vec<String>> {
    let saved = ck.state.task.as_ref().and_then(|t| serde_json::from_value::<SamplerState>(t.clone()).ok());
    if let Some(s) = saved.filter(|s| !s.labels.is_empty()) {
        return Ok(s.labels);
    }
    let d = &ck.run_config.data;
    let set = load(&d.format, Path::new(&d.train), None).with_context(|| {
        format!("the checkpoint saves no label names, and its training file {} (to read them from) failed", d.train)
    })?;
    Ok(set.label_names)
}

/// Predicts the class of every text of `input` with the classifier checkpoint `dir`:
/// `format` `sst2` (TSV with a header), `trec` (coarse labels) or `text` (one text per line);
/// None: the checkpoint's `data.format`. A labelled file's labels must be classes the
/// checkpoint knows (an error names the first that is not).
pub fn predict_file(dir: &Path, input: &Path, format: Option<&str>, batch: usize) -> Result<FilePredictions> {
    let ck = checkpoint::load(dir, batch, false)?;
    ensure!(
        ck.model.config.arch == crate::model::transformer::Arch::Encoder
            && ck.run_config.data.task == crate::config::Task::Classify,
        "{} is not a classifier checkpoint (data.task = \"classify\")",
        dir.display()
    );
    let label_names = checkpoint_labels(&ck)?;
    ensure!(
        label_names.len() == ck.model.config.num_classes,
        "{}: {} label names for a {}-class classifier",
        dir.display(),
        label_names.len(),
        ck.model.config.num_classes
    );
    let format = format.unwrap_or(&ck.run_config.data.format);
    let (texts, gold) = match format {
        "text" => (crate::util::read_lines(input)?, None),
        "sst2" | "trec" => {
            let set = load(format, input, Some(&label_names))
                .with_context(|| format!("{}: its labels must be the checkpoint's {label_names:?}", input.display()))?;
            let gold = set.labels.iter().map(|&l| label_names[l].clone()).collect();
            (set.texts, Some(gold))
        }
        other => bail!("unknown input format {other:?}: use sst2, trec or text"),
    };
    let mut model = ck.model;
    let pred = predict(&mut model, &ck.tokenizer, &texts, ck.run_config.data.max_len)?;
    let predicted = pred.into_iter().map(|k| label_names[k].clone()).collect();
    Ok(FilePredictions { label_names, predicted, gold })
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

/// The training examples in batches: the rows in a random order, reshuffled (in place, from the
/// current order) whenever a batch would run past the end.
pub(super) struct RowSampler {
    rows: Vec<usize>,
    cursor: usize,
    /// Reshuffles so far: replaying them from the seed recreates `rows` and `rng`.
    shuffles: u64,
    pub(super) rng: Xoshiro256PlusPlus,
}

/// What a checkpoint keeps of a [`RowSampler`]; `TrainState::rng` holds its RNG.
#[derive(Serialize, Deserialize)]
pub(super) struct SamplerState {
    shuffles: u64,
    cursor: usize,
    /// The training file's label names, class index order: `lmlab classify` prints them.
    #[serde(default)]
    labels: Vec<String>,
}

impl RowSampler {
    /// Starts with `rows` (the first batch shuffles them) and the RNG that drew the split.
    pub(super) fn new(rows: Vec<usize>, rng: Xoshiro256PlusPlus) -> Self {
        RowSampler { cursor: rows.len(), rows, shuffles: 0, rng }
    }

    pub(super) fn next(&mut self, batch_size: usize) -> &[usize] {
        if self.cursor + batch_size > self.rows.len() {
            self.rows.shuffle(&mut self.rng);
            self.shuffles += 1;
            self.cursor = 0;
        }
        let start = self.cursor;
        self.cursor += batch_size.min(self.rows.len());
        &self.rows[start..self.cursor]
    }

    pub(super) fn state(&self, labels: &[String]) -> SamplerState {
        SamplerState { shuffles: self.shuffles, cursor: self.cursor, labels: labels.to_vec() }
    }

    /// Replays the saved number of shuffles; the RNG must come out as saved, else the data
    /// (or the seed) is not the one the checkpoint was trained on.
    pub(super) fn restore(&mut self, state: &SamplerState, rng: &Xoshiro256PlusPlus) -> Result<()> {
        ensure!(self.shuffles == 0, "restore: the sampler has already been used");
        for _ in 0..state.shuffles {
            self.rows.shuffle(&mut self.rng);
        }
        ensure!(
            &self.rng == rng && state.cursor <= self.rows.len(),
            "the training examples or train.seed differ from the checkpoint's, so its batch order cannot be resumed"
        );
        (self.shuffles, self.cursor) = (state.shuffles, state.cursor);
        Ok(())
    }
}

/// Trains a classifier, or resumes one from the checkpoint `resume` (its BPE tokenizer,
/// optimizer state and example order included). Writes `results.json` with the test accuracy
/// of the best checkpoint (`ckpt_best`) and of the last one.
pub fn train_classifier(cfg: &RunConfig, resume: Option<&Path>, opts: &TrainOptions) -> Result<TrainSummary> {
    let (d, tc) = (&cfg.data, &cfg.train);
    let train_set = load(&d.format, Path::new(&d.train), None)?;
    let test_set = load(&d.format, Path::new(&d.test), Some(&train_set.label_names))
        .with_context(|| format!("test file {}", d.test))?;
    let out_dir = PathBuf::from(&tc.out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;

    let mut teacher = super::distill::Teacher::load(cfg)?;
    let mut init_note = None;
    let (tokenizer, mut model, mut opt, from) = match resume {
        Some(dir) => {
            let r = Resumed::load(dir, cfg)?;
            ensure!(
                r.model.config.num_classes == train_set.num_classes(),
                "the checkpoint's classifier has {} classes, the training file {}",
                r.model.config.num_classes,
                train_set.num_classes()
            );
            (r.tokenizer, r.model, r.opt, Some(r.from))
        }
        None if !tc.init_from.is_empty() => {
            let (tokenizer, model, opt, note) = super::run::pretrained_model(cfg, Some(train_set.num_classes()))?;
            init_note = Some(note);
            (tokenizer, model, opt, None)
        }
        None => {
            // A distilled student speaks its teacher's vocabulary; otherwise the BPE vocabulary
            // is learned from the training texts only.
            let tokenizer = match &teacher {
                Some(t) => t.tokenizer.clone(),
                None => {
                    let bpe = super::bpe_from_rank_0(|| {
                        let corpus = out_dir.join(".tokenizer-train.txt");
                        std::fs::write(&corpus, train_set.texts.join("\n"))
                            .with_context(|| format!("cannot write {}", corpus.display()))?;
                        let bpe = BpeTokenizer::train(std::slice::from_ref(&corpus), d.vocab_size);
                        let _ = std::fs::remove_file(&corpus);
                        bpe.context("training the BPE tokenizer")
                    })?;
                    Tokenizer::Bpe(Box::new(bpe))
                }
            };
            let model_cfg = crate::model::transformer::ModelConfig {
                vocab_size: tokenizer.vocab_size(),
                num_classes: train_set.num_classes(),
                ..cfg.model.clone()
            };
            let (model, opt) = fresh_model(cfg, model_cfg)?;
            (tokenizer, model, opt, None)
        }
    };
    if let Some(t) = &teacher {
        t.check_student(&model.config, &tokenizer)?;
    }
    let mut scaler = loss_scaler(cfg, from.as_ref());
    super::shard_optimizer(cfg, &model, &mut opt)?;
    let train_seqs = encode_all(&tokenizer, &train_set.texts, d.max_len)?;
    let test_seqs = encode_all(&tokenizer, &test_set.texts, d.max_len)?;
    let test_rows: Vec<usize> = (0..test_seqs.len()).collect();

    // A seeded shuffle holds out the validation share of the training examples.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(tc.seed);
    let mut order: Vec<usize> = (0..train_seqs.len()).collect();
    order.shuffle(&mut rng);
    let n_val = (train_seqs.len() as f64 * d.val_fraction).round() as usize;
    let (val_rows, train_rows) = order.split_at(n_val);
    let (val_rows, train_rows) = (val_rows.to_vec(), train_rows.to_vec());
    ensure!(
        !train_rows.is_empty() && !val_rows.is_empty(),
        "data.val_fraction leaves no training or no validation examples"
    );
    let n_train = train_rows.len();
    let mut sampler = RowSampler::new(train_rows, rng);
    if let Some(from) = &from {
        sampler.restore(&from.task_state()?, &from.state.rng).context("cannot resume the example order")?;
    }

    let schedule = cfg.optim.schedule();
    let mut batch = ClassBatch::new(tc.batch_size, d.max_len);
    let mut eval_batch = ClassBatch::new(tc.batch_size, d.max_len);
    let mut tracker = RunTracker::start(cfg, opts, from.as_ref())?;
    if let Some(note) = init_note {
        tracker.info(note);
    }
    tracker.info(format!(
        "model: {} parameters ({} layers, {} heads, {} wide, {:?} pooling), {} classes {:?}, {} vocab {}; \
         data: {} train / {} val / {} test examples; {}{} threads",
        model.num_params(),
        cfg.model.n_layer,
        cfg.model.n_head,
        cfg.model.n_embd,
        cfg.model.pooling,
        train_set.num_classes(),
        train_set.label_names,
        tokenizer.kind(),
        tokenizer.vocab_size(),
        n_train,
        val_rows.len(),
        test_rows.len(),
        super::ranks_note(crate::dist::world()),
        rayon::current_num_threads()
    ));

    let mut last_train = f32::NAN;
    // Val loss and accuracy, then the checkpoint; true when early stopping ends the run.
    let mut validate = |model: &mut Transformer,
                        opt: &Optimizer,
                        sampler: &RowSampler,
                        step: u64,
                        train_loss: f32,
                        tracker: &mut RunTracker,
                        loss_scaler: Option<ScalerState>| {
        let (val_loss, val_acc) = evaluate(model, &train_seqs, &train_set.labels, &val_rows, &mut eval_batch)?;
        let eval = Eval { step, train_loss, val_loss, val_accuracy: Some(val_acc) };
        let full = super::gather_optimizer(cfg, model, opt)?;
        tracker.evaluated(eval, |record| {
            let state = TrainState {
                step,
                rng: sampler.rng.clone(),
                record: record.clone(),
                task: Some(serde_json::to_value(sampler.state(&train_set.label_names))?),
                loss_scaler,
            };
            checkpoint::encode(model, full.as_ref().unwrap_or(opt), cfg, &tokenizer, &state)
        })
    };

    let mut health = HealthMonitor::new(tc.health_interval, &model);
    let mut step = tracker.start_step();
    let mut window = LogWindow::new();
    while step < tc.max_iters {
        if tracker.eval_due(step)
            && validate(&mut model, &opt, &sampler, step, last_train, &mut tracker, scaler.state())?
        {
            break;
        }
        let health_due = health.before_step(step + 1, &model);
        model.zero_grad();
        let mut acc = GradAccum::new(tc.grad_accum_steps, scaler.loss_scale());
        let world = crate::dist::world();
        for micro in 0..tc.grad_accum_steps as u64 {
            // Data-parallel: one global batch of batch_size × ranks examples, this rank's part.
            let all = sampler.next(tc.batch_size * world.size());
            let part = world.part(all.len());
            if part.is_empty() {
                continue;
            }
            model.set_first_sequence(part.start);
            batch.fill_within(&train_seqs, &train_set.labels, all, &all[part]);
            let seed = mix64(tc.seed ^ mix64(step)) ^ micro;
            if let Some(t) = &mut teacher {
                t.teach_classify(&mut model, &batch.idx, &batch.mask, batch.b, batch.t)?;
            }
            let loss = model
                .forward_classify(&batch.idx, Some(&batch.mask), Some(&batch.labels), batch.b, batch.t, true, seed)?
                .unwrap_or(0.0);
            acc.backward(&mut model, loss, step)?;
        }
        let loss = acc.finish(&mut model);
        let lr = schedule.lr(step);
        let s = optimizer_step(&mut model, &mut opt, cfg.optim.clipping(), step, loss, lr, &mut scaler)?;
        if s.skipped {
            log_skipped(&mut tracker.log, &tracker.progress, step + 1, &s)?;
        }
        if health_due {
            tracker.log.health(step + 1, &health.stats(&model))?;
        }
        let done = step + 1;
        let tokens = (batch.b * batch.t * world.size()) as f64;
        if let Some(loss) = window.step(&mut tracker, done, tc.log_interval, &s, tokens)? {
            last_train = loss;
        }
        step = done;
    }
    if tracker.needs_final_eval(step) {
        validate(&mut model, &opt, &sampler, step, last_train, &mut tracker, scaler.state())?;
    }

    // Test accuracy of the best checkpoint (loaded back unless it is the current model), and of
    // the last one. Data-parallel: rank 0 has written the best checkpoint before any rank reads
    // it.
    crate::dist::world().barrier();
    let record = tracker.record().clone();
    let (last_loss, last_acc) = evaluate(&mut model, &test_seqs, &test_set.labels, &test_rows, &mut eval_batch)?;
    let best_step = record.best_step.filter(|_| tracker.best_dir().join("state.json").is_file());
    let (test_loss, test_acc, reported) = match best_step {
        Some(b) if b != step => {
            let mut best = checkpoint::load(tracker.best_dir(), tc.batch_size, false)?.model;
            let (loss, acc) = evaluate(&mut best, &test_seqs, &test_set.labels, &test_rows, &mut eval_batch)?;
            (loss, acc, ("ckpt_best", b, record.best_val_loss))
        }
        _ => (last_loss, last_acc, ("ckpt", step, record.val_loss)),
    };
    let results = serde_json::json!({
        "test_file": d.test, "test_examples": test_rows.len(), "labels": train_set.label_names,
        "checkpoint": reported.0, "step": reported.1, "val_loss": reported.2,
        "test_accuracy": test_acc, "test_loss": test_loss,
        "last": {"step": step, "val_loss": record.val_loss, "test_accuracy": last_acc, "test_loss": last_loss},
        "steps": step,
    });
    let root = crate::dist::world().is_root();
    if root {
        crate::io::atomic::write_file_atomic(
            &out_dir.join("results.json"),
            serde_json::to_string_pretty(&results)?.as_bytes(),
        )?;
    }
    let mut summary = tracker.finish(step);
    (summary.test_accuracy, summary.test_loss) = (Some(test_acc), Some(test_loss));
    if !opts.quiet && !opts.json && root {
        println!(
            "test accuracy {:.2}% on {} examples of {} (loss {test_loss:.4}) with {} (step {}); last step: {:.2}%",
            100.0 * test_acc,
            test_rows.len(),
            d.test,
            reported.0,
            reported.1,
            100.0 * last_acc
        );
    }
    Ok(summary)
}
