//! What the three training loops (language model, translation, classification) share around
//! their steps: the run directory, evaluations with best-checkpoint keeping and early stopping,
//! the refusal to let a diverged run overwrite a good checkpoint, resuming, and the summary.
//!
//! ```text
//! RUN_DIR/ (train.out_dir)
//!   config.toml     the full resolved config of the latest start or resume
//!   metrics.jsonl   steps, evaluations and events; a resumed run continues it
//!   ckpt/           the checkpoint of the latest evaluation
//!   ckpt_best/      the checkpoint of the evaluation with the lowest val loss so far
//! ```
//!
//! A loop asks [`RunTracker::eval_due`] before each step, evaluates, and hands the numbers and a
//! closure that encodes the checkpoint to [`RunTracker::evaluated`], which logs, updates the
//! record, writes the checkpoints and says whether early stopping ends the run.

use super::log::{MetricsLog, Progress};
use super::{TrainOptions, TrainSummary};
use crate::config::{RunConfig, Task};
use crate::data::Tokenizer;
use crate::io::atomic::write_file_atomic;
use crate::io::checkpoint::{self, CheckpointFiles, EvalRecord, TrainState};
use crate::model::transformer::{is_task_head, SparsityMask, Transformer};
use crate::model::LanguageModel;
use crate::optim::Optimizer;
use anyhow::{bail, ensure, Context, Result};
use serde::de::DeserializeOwned;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A checkpoint loaded to continue training: the model with its optimizer state restored, the
/// tokenizer it was trained with, and where training stood.
pub struct Resumed<M = Transformer> {
    pub from: ResumePoint,
    pub tokenizer: Tokenizer,
    pub model: M,
    pub opt: Optimizer,
}

/// Where a resumed run continues from: the checkpoint directory and its training state.
pub struct ResumePoint {
    pub dir: PathBuf,
    pub state: TrainState,
}

/// A freshly initialised model of `model_cfg` with the run's initialisation, label smoothing
/// and precision, and its optimizer.
pub fn fresh_model(
    cfg: &RunConfig,
    model_cfg: crate::model::transformer::ModelConfig,
) -> Result<(Transformer, Optimizer)> {
    fresh_lm(cfg, model_cfg)
}

/// [`fresh_model`] for any language model `M`.
pub fn fresh_lm<M: LanguageModel>(
    cfg: &RunConfig,
    model_cfg: crate::model::transformer::ModelConfig,
) -> Result<(M, Optimizer)> {
    let tc = &cfg.train;
    let mut model = M::build(model_cfg, tc.batch_size, false)?;
    model.init_with(tc.init, tc.init_std, tc.seed);
    model.set_label_smoothing(tc.label_smoothing);
    model.set_precision(tc.precision)?;
    if let Some(l) = &cfg.lora {
        let Some(t) = model.as_transformer_mut() else {
            bail!("[lora] adapts a Transformer's linear layers, not model.arch = \"{}\"", cfg.model.arch.name());
        };
        t.add_lora(l, tc.seed)?;
    }
    let mut opt = cfg.build_optimizer(model.layout())?;
    if let Some(window) = model.as_transformer().and_then(|t| t.lora_window()) {
        // LoRA: optimizer state for the trainable tail (head and adapters) only.
        opt.shard(window);
    }
    set_frozen(cfg, &mut model)?;
    Ok((model, opt))
}

/// Freezes the tensors `train.freeze` names (a Transformer's; the baselines train whole).
fn set_frozen<M: LanguageModel>(cfg: &RunConfig, model: &mut M) -> Result<()> {
    if cfg.train.freeze.is_empty() {
        return Ok(());
    }
    let Some(t) = model.as_transformer_mut() else {
        bail!("train.freeze applies to Transformer models, not model.arch = \"{}\"", cfg.model.arch.name());
    };
    let ranges = frozen_ranges(cfg, t)?;
    t.set_frozen(ranges);
    Ok(())
}

/// The ranges of the tensors `train.freeze` names; a pattern that matches no tensor is an error
/// naming it (a typo would otherwise train everything).
pub fn frozen_ranges(cfg: &RunConfig, model: &Transformer) -> Result<Vec<std::ops::Range<usize>>> {
    let mut ranges = Vec::new();
    for pattern in &cfg.train.freeze {
        let rule = crate::optim::GroupRule { params: vec![pattern.clone()], weight_decay: None, lr_scale: 0.0 };
        let hits: Vec<_> = model
            .layout
            .tensors
            .iter()
            .filter(|t| t.kind != crate::model::ParamKind::Buffer && rule.matches(&t.name, t.kind))
            .collect();
        ensure!(
            !hits.is_empty(),
            "train.freeze pattern {pattern:?} matches no parameter tensor (use names with `*`, e.g. \
             \"transformer.h.0.*\", or a kind: embedding, norm, bias, matrix; `lmlab info --checkpoint` lists them)"
        );
        ranges.extend(hits.iter().map(|t| t.range()));
    }
    ranges.extend(model.lora_frozen());
    ranges.sort_by_key(|r| r.start);
    ranges.dedup();
    Ok(ranges)
}

/// A model for a run that starts from the checkpoint `train.init_from` (fine-tuning): the
/// checkpoint's tokenizer, and a model of the run's `[model]` (the checkpoint's, see
/// `config/init_from.rs`) with `num_classes` classes when given, whose tensors are the
/// checkpoint's where it has them with the same shape. A learned position table keeps its first
/// `block_size` rows. A task head (a classifier) is new unless the checkpoint was trained on the
/// same task. Also returns a note for the log: what was loaded, what starts fresh, what is frozen.
pub fn pretrained_model<M: LanguageModel>(
    cfg: &RunConfig,
    num_classes: Option<usize>,
) -> Result<(Tokenizer, M, Optimizer, String)> {
    let dir = Path::new(&cfg.train.init_from);
    let ck = checkpoint::load_lm::<M>(dir, 1, false, false)
        .with_context(|| format!("train.init_from: cannot load {}", dir.display()))?;
    let mut model_cfg = cfg.model_config(ck.tokenizer.vocab_size());
    if let Some(k) = num_classes {
        model_cfg.num_classes = k;
    }
    let (mut model, opt) = fresh_lm::<M>(cfg, model_cfg)?;
    // A masked LM's head also carries over to more masked-LM training from an imported
    // `BertForMaskedLM` (whose checkpoint's task is "pretrained").
    let same_task = ck.run_config.data.task == cfg.data.task
        || (cfg.data.task == Task::Mlm && ck.model.as_transformer().is_some_and(|t| t.is_masked_lm()));
    let (mut loaded, mut fresh) = (0usize, Vec::new());
    for t in model.layout().tensors.clone() {
        let src = ck.model.layout().get(&t.name);
        let fits = |s: &crate::model::TensorView| s.shape == t.shape;
        // A shorter context: the first rows of a learned position table.
        let prefix = |s: &crate::model::TensorView| {
            t.name.ends_with("wpe.weight") && s.shape[1..] == t.shape[1..] && s.shape[0] >= t.shape[0]
        };
        match src {
            // A task head starts fresh for another task or another number of classes.
            Some(s) if is_task_head(&t.name) && !(same_task && fits(s)) => fresh.push(t.name.clone()),
            Some(s) if fits(s) || prefix(s) => {
                let n = t.numel();
                model.params_mut()[t.range()].copy_from_slice(&ck.model.params()[s.offset..s.offset + n]);
                loaded += 1;
            }
            Some(s) => bail!(
                "train.init_from: {}'s tensor {} has shape {:?}, the run's model needs {:?}",
                dir.display(),
                t.name,
                s.shape,
                t.shape
            ),
            // LoRA adapters start as `add_lora` drew them (B = 0: the pretrained model's output).
            None if crate::model::transformer::is_lora_tensor(&t.name) => {}
            None => fresh.push(t.name.clone()),
        }
    }
    if let Some((name, _)) = model.first_nonfinite_param() {
        bail!("train.init_from: {}'s tensor {name} holds NaN or infinity", dir.display());
    }
    let frozen: usize = model.as_transformer().map_or(0, |t| t.frozen().iter().map(|r| r.len()).sum());
    let note = format!(
        "init_from {}: {loaded} tensors loaded, new: {}; {} of {} parameters train{}",
        dir.display(),
        if fresh.is_empty() { "none".to_string() } else { fresh.join(", ") },
        model.num_params() - frozen,
        model.num_params(),
        if cfg.train.freeze.is_empty() { String::new() } else { format!(" (frozen: {:?})", cfg.train.freeze) }
    ) + &match &cfg.lora {
        Some(l) => format!(
            "; LoRA rank {} alpha {} on {:?} ({} adapter parameters)",
            l.rank,
            l.alpha,
            l.targets,
            model
                .layout()
                .tensors
                .iter()
                .filter(|t| crate::model::transformer::is_lora_tensor(&t.name))
                .map(|t| t.numel())
                .sum::<usize>()
        ),
        None => String::new(),
    };
    Ok((ck.tokenizer, model, opt, note))
}

/// The run's f16 loss scaler (disabled otherwise), continuing the checkpoint's when resuming.
pub fn loss_scaler(cfg: &RunConfig, from: Option<&ResumePoint>) -> crate::optim::LossScaler {
    let mut scaler = cfg.train.loss_scaler();
    if let Some(from) = from {
        scaler.restore(from.state.loss_scaler);
    }
    scaler
}

impl Resumed {
    /// Loads the Transformer checkpoint `dir` for a run of `cfg` ([`Resumed::load_lm`]).
    pub fn load(dir: &Path, cfg: &RunConfig) -> Result<Self> {
        Self::load_lm(dir, cfg)
    }
}

impl<M: LanguageModel> Resumed<M> {
    /// Loads the checkpoint `dir` for a run of `cfg`, which must have the checkpoint's task and
    /// `[model]` section; the optimizer is built from `cfg` and takes the saved state (an error
    /// when `optim.name` or the buffers it needs differ).
    pub fn load_lm(dir: &Path, cfg: &RunConfig) -> Result<Self> {
        let ck = checkpoint::load_lm::<M>(dir, cfg.train.batch_size, true, false)
            .with_context(|| format!("cannot resume from {}", dir.display()))?;
        let task = |t: Task| serde_json::to_string(&t).unwrap_or_default();
        ensure!(
            ck.run_config.data.task == cfg.data.task,
            "checkpoint {} was trained with data.task = {}, not {}",
            dir.display(),
            task(ck.run_config.data.task),
            task(cfg.data.task)
        );
        ensure!(
            ck.run_config.model == cfg.model,
            "the [model] section differs from the checkpoint's: a resumed run must keep the model's shape"
        );
        ensure!(
            ck.run_config.lora == cfg.lora,
            "the [lora] section differs from the checkpoint's: a resumed run keeps its adapters' rank and targets"
        );
        ensure!(
            ck.run_config.prune == cfg.prune,
            "the [prune] section differs from the checkpoint's: a resumed run keeps the checkpoint's pruning"
        );
        let mut opt = cfg.build_optimizer(ck.model.layout())?;
        if let Some(window) = ck.model.as_transformer().and_then(|t| t.lora_window()) {
            opt.shard(window);
        }
        opt.restore(ck.optimizer.as_ref().expect("loaded with the optimizer"))?;
        let mut model = ck.model;
        set_frozen(cfg, &mut model)?;
        if let Some(p) = &cfg.prune {
            // A pruned checkpoint: its zeros are the mask that every step keeps.
            let model = model.as_transformer_mut().context("a [prune] checkpoint holds a Transformer")?;
            let mask = SparsityMask::from_zeros(&model.layout, &model.params, &p.tensors)
                .with_context(|| format!("checkpoint {}: [prune]", dir.display()))?;
            opt.for_each_state_mut(|buf| mask.apply(buf));
            model.set_sparsity_mask(Some(mask));
        }
        model.set_label_smoothing(cfg.train.label_smoothing);
        model.set_precision(cfg.train.precision)?;
        let from = ResumePoint { dir: dir.to_path_buf(), state: ck.state };
        Ok(Resumed { from, tokenizer: ck.tokenizer, model, opt })
    }
}

impl ResumePoint {
    /// The task's data-order state saved with the checkpoint ([`TrainState::task`]).
    pub fn task_state<T: DeserializeOwned>(&self) -> Result<T> {
        let Some(value) = self.state.task.clone() else {
            bail!(
                "checkpoint {} holds no data-order state: it was written before translation and \
                 classification runs could be resumed",
                self.dir.display()
            );
        };
        serde_json::from_value(value)
            .with_context(|| format!("checkpoint {}: bad data-order state", self.dir.display()))
    }
}

/// One evaluation's numbers.
#[derive(Clone, Copy, Debug)]
pub struct Eval {
    pub step: u64,
    /// The training loss reported with it (an estimate, or the mean of the latest log window).
    pub train_loss: f32,
    pub val_loss: f32,
    /// Classification accuracy on the validation examples.
    pub val_accuracy: Option<f64>,
}

/// The run directory and the evaluation record of one training run; see the module docs.
pub struct RunTracker {
    /// The metrics log (also echoed to stdout as JSON lines with `--json`).
    pub log: MetricsLog,
    /// The progress bar (hidden with `--quiet` or `--json`).
    pub progress: Progress,
    out_dir: PathBuf,
    ckpt_dir: PathBuf,
    best_dir: PathBuf,
    record: EvalRecord,
    patience: u64,
    min_delta: f32,
    eval_interval: u64,
    /// The language model evaluates (and checkpoints) before its first step as well.
    eval_at_start: bool,
    max_iters: u64,
    /// The training loss of the translation and classification loops includes label smoothing.
    smoothed_train: bool,
    last_eval: Option<u64>,
    /// The newest complete checkpoint known: named if the run fails.
    last_good: Option<(PathBuf, u64)>,
    best_written: bool,
    early_stop: Option<String>,
    start_step: u64,
    started: Instant,
    human: bool,
    /// Rank 0 (or the only process): writes the run directory.
    writer: bool,
    finished: bool,
}

impl RunTracker {
    /// Prepares the run directory: writes `config.toml`, starts `metrics.jsonl` (or continues
    /// it, for a resumed run, from the checkpoint's step), and sets up the progress bar.
    ///
    /// In a data-parallel job only rank 0 does any of this: the other ranks keep the same
    /// record (their evaluations are the same all-reduced numbers, so early stopping stops
    /// every rank at the same step) and write, log and print nothing.
    pub fn start(cfg: &RunConfig, opts: &TrainOptions, resumed: Option<&ResumePoint>) -> Result<Self> {
        let tc = &cfg.train;
        let out_dir = PathBuf::from(&tc.out_dir);
        let writer = crate::dist::world().is_root();
        let start_step = resumed.map_or(0, |r| r.state.step);
        let (mut log, dropped) = if writer {
            std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
            write_file_atomic(&out_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
            let metrics = out_dir.join("metrics.jsonl");
            match resumed {
                Some(_) => MetricsLog::resume(&metrics, start_step)?,
                None => (MetricsLog::create(&metrics)?, 0),
            }
        } else {
            (MetricsLog::discard(), 0)
        };
        log.echo_stdout(opts.json && writer);
        let human = !opts.quiet && !opts.json && writer;
        let progress = Progress::new(tc.max_iters, start_step, !human);
        if let Some(r) = resumed {
            log.event("resume", serde_json::json!({"iter": start_step, "checkpoint": r.dir}))?;
        }
        let ckpt_dir = out_dir.join("ckpt");
        let best_dir = out_dir.join("ckpt_best");
        let tracker = RunTracker {
            log,
            progress,
            record: resumed.map(|r| r.state.record.clone()).unwrap_or_default(),
            patience: tc.early_stop_patience,
            min_delta: tc.early_stop_min_delta,
            eval_interval: tc.eval_interval,
            eval_at_start: matches!(cfg.data.task, Task::Lm | Task::Mlm),
            max_iters: tc.max_iters,
            smoothed_train: cfg.data.task != Task::Lm && tc.label_smoothing > 0.0,
            // The checkpoint was written right after its step's evaluation.
            last_eval: resumed.map(|r| r.state.step),
            last_good: resumed.map(|r| (r.dir.clone(), r.state.step)),
            best_written: resumed.is_some() && best_dir.join("state.json").is_file(),
            early_stop: None,
            start_step,
            started: Instant::now(),
            human,
            writer,
            finished: false,
            out_dir,
            ckpt_dir,
            best_dir,
        };
        if dropped > 0 {
            tracker.info(format!(
                "metrics.jsonl: dropped {dropped} lines the interrupted run wrote after step {start_step}"
            ));
        }
        Ok(tracker)
    }

    /// A line for the terminal (above the progress bar); nothing with `--quiet` or `--json`.
    pub fn info(&self, line: String) {
        if self.human {
            self.progress.println(line);
        }
    }

    /// The step the run started (or resumed) at.
    pub fn start_step(&self) -> u64 {
        self.start_step
    }

    /// Whether the loop should evaluate before step `step`: every `eval_interval` steps (the
    /// language model also before its first step), except where the checkpoint it resumed from
    /// was written.
    pub fn eval_due(&self, step: u64) -> bool {
        step.is_multiple_of(self.eval_interval) && (step > 0 || self.eval_at_start) && self.last_eval != Some(step)
    }

    /// Whether the run still needs an evaluation at `step` before it ends.
    pub fn needs_final_eval(&self, step: u64) -> bool {
        self.last_eval != Some(step)
    }

    /// Records an evaluation: logs it, updates the best val loss and the early-stopping count,
    /// and writes the checkpoint that `encode` makes from the updated record to `ckpt/` and, if
    /// the val loss is the lowest so far, first to `ckpt_best/`. A NaN or infinite val loss is
    /// an error and writes nothing, so the last good checkpoints stay. Returns true when early
    /// stopping ends the run here.
    pub fn evaluated(&mut self, e: Eval, encode: impl FnOnce(&EvalRecord) -> Result<CheckpointFiles>) -> Result<bool> {
        self.last_eval = Some(e.step);
        if !e.val_loss.is_finite() {
            let message = format!(
                "val loss is {} at step {}: training diverged (try a lower optim.learning_rate or optim.grad_clip); \
                 no checkpoint is written for this step",
                e.val_loss, e.step
            );
            return Err(super::Diverged { step: e.step, message }.into());
        }
        let r = &mut self.record;
        let improved = r.best_val_loss.is_none_or(|b| e.val_loss < b);
        if improved {
            (r.best_val_loss, r.best_step) = (Some(e.val_loss), Some(e.step));
        }
        if r.early_stop_ref.is_none_or(|x| e.val_loss < x - self.min_delta) {
            (r.early_stop_ref, r.evals_without_improvement) = (Some(e.val_loss), 0);
        } else {
            r.evals_without_improvement += 1;
        }
        r.val_loss = Some(e.val_loss);
        r.train_loss = Some(e.train_loss).filter(|x| x.is_finite());
        self.log.eval(e.step, e.train_loss, e.val_loss, e.val_accuracy)?;
        let mut line = format!(
            "step {:>6}: train loss {:.4}{}, val loss {:.4}",
            e.step,
            e.train_loss,
            if self.smoothed_train { " (smoothed)" } else { "" },
            e.val_loss
        );
        if let Some(acc) = e.val_accuracy {
            line += &format!(", val accuracy {:.2}%", 100.0 * acc);
        }
        if improved {
            line += " (best)";
        } else if self.patience > 0 {
            line += &format!(" (no improvement for {}/{} evaluations)", r.evals_without_improvement, self.patience);
        }
        self.info(line);

        if self.writer {
            let files = encode(&self.record)?;
            // The best first: if the process dies between the two writes, `ckpt` still holds
            // the previous step, and resuming from it evaluates this step again and rewrites
            // the best.
            if improved {
                files.write(&self.best_dir)?;
            }
            files.write(&self.ckpt_dir)?;
        }
        self.best_written |= improved;
        self.last_good = Some((self.ckpt_dir.clone(), e.step));

        let r = &self.record;
        if self.patience > 0 && r.evals_without_improvement >= self.patience && e.step < self.max_iters {
            let (best, best_step) = (r.best_val_loss.unwrap_or(f32::NAN), r.best_step.unwrap_or(0));
            let reason = format!(
                "val loss did not improve by more than {} in {} evaluations (best {best:.4} at step {best_step})",
                self.min_delta, self.patience
            );
            self.log.event(
                "early_stop",
                serde_json::json!({
                    "iter": e.step, "patience": self.patience, "min_delta": self.min_delta,
                    "best_val_loss": best, "best_step": best_step,
                }),
            )?;
            self.info(format!("early stop at step {}: {reason}", e.step));
            self.early_stop = Some(reason);
            return Ok(true);
        }
        Ok(false)
    }

    /// The record of the evaluations so far.
    pub fn record(&self) -> &EvalRecord {
        &self.record
    }

    /// `RUN_DIR/ckpt_best`.
    pub fn best_dir(&self) -> &Path {
        &self.best_dir
    }

    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Ends the run at `step` (clears the progress bar) and sums it up.
    pub fn finish(&mut self, step: u64) -> TrainSummary {
        self.finished = true;
        self.progress.finish();
        let seconds = self.started.elapsed().as_secs_f64();
        let taken = step.saturating_sub(self.start_step);
        let r = &self.record;
        TrainSummary {
            steps: step,
            train_loss: r.train_loss.unwrap_or(f32::NAN),
            val_loss: r.val_loss.unwrap_or(f32::NAN),
            checkpoint: self.ckpt_dir.clone(),
            seconds,
            ms_per_iter: if taken > 0 { seconds * 1e3 / taken as f64 } else { 0.0 },
            best_val_loss: r.best_val_loss,
            best_step: r.best_step,
            best_checkpoint: self.best_written.then(|| self.best_dir.clone()),
            early_stop: self.early_stop.clone(),
            run_dir: self.out_dir.clone(),
            test_accuracy: None,
            test_loss: None,
        }
    }
}

impl Drop for RunTracker {
    /// A run that ends in an error (divergence included) says which checkpoint is intact.
    fn drop(&mut self) {
        if self.finished || !self.writer {
            return;
        }
        self.progress.finish();
        if let Some((dir, step)) = &self.last_good {
            // Not eprintln!: a closed stderr must not turn an error into a panic inside drop.
            let _ = writeln!(
                std::io::stderr(),
                "note: the last checkpoint, {} (step {step}), is intact; `lmlab train --resume {}` continues from it",
                dir.display(),
                dir.display()
            );
        }
    }
}

/// The steps since the last log line of a task loop (classification, QA): their mean loss and
/// time per step go into the metrics log and the progress bar every `train.log_interval` steps.
pub struct LogWindow {
    start: Instant,
    steps: u64,
    loss_sum: f64,
}

impl LogWindow {
    pub fn new() -> Self {
        LogWindow { start: Instant::now(), steps: 0, loss_sum: 0.0 }
    }

    /// Adds the step that made `done` steps, of `tokens` tokens, with its stats `st`; on a log
    /// step writes the window's line and returns its mean training loss.
    pub fn step(
        &mut self,
        tracker: &mut RunTracker,
        done: u64,
        interval: u64,
        st: &super::StepStats,
        tokens: f64,
    ) -> Result<Option<f32>> {
        self.steps += 1;
        self.loss_sum += st.loss as f64;
        if !done.is_multiple_of(interval) {
            return Ok(None);
        }
        let ms = self.start.elapsed().as_secs_f64() * 1e3 / self.steps as f64;
        let loss = (self.loss_sum / self.steps as f64) as f32;
        tracker.log.step(done, loss, st.lr, st.grad_norm, ms, tokens / ms * 1e3)?;
        tracker.progress.update(done, loss, st.lr, ms, tokens / ms * 1e3);
        *self = LogWindow::new();
        Ok(Some(loss))
    }
}

impl Default for LogWindow {
    fn default() -> Self {
        Self::new()
    }
}
