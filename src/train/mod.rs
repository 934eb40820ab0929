//! The training loop: batches in, optimizer steps out, with evaluation, logging and checkpoints.
pub mod classify;
pub mod distill;
pub mod log;
pub mod qa;
pub mod run;
pub mod seq2seq;

use crate::config::{RunConfig, Task};
use crate::data::bpe::BpeTokenizer;
use crate::data::dataset::sample_batch_shard;
use crate::data::mlm::MlmMasking;
use crate::data::{Batch, CharTokenizer, TokenDataset, Tokenizer};
use crate::inspect::HealthMonitor;
use crate::io::checkpoint::{self, TrainState};
use crate::kernels::dropout::mix64;
use crate::model::baseline::BaselineLm;
use crate::model::transformer::Transformer;
use crate::model::LanguageModel;
use crate::optim::{clip_factor, clip_grad_value, grad_norm, Clipping, LrSchedule, Optimizer};
use crate::optim::{LossScaler, ScaleOutcome};
use crate::util::{read_corpus, thread_pool};
use anyhow::{bail, ensure, Context, Result};
use log::MetricsLog;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use run::{Eval, Resumed, RunTracker};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything one optimizer step needs, preallocated: after the first step, [`Trainer::step`]
/// allocates nothing. `M` is the language model: the Transformer, or a baseline without
/// self-attention ([`BaselineLm`]).
pub struct Trainer<M = Transformer> {
    pub model: M,
    pub opt: Optimizer,
    pub schedule: LrSchedule,
    pub clip: Clipping,
    pub batch: Batch,
    pub rng: Xoshiro256PlusPlus,
    pub step: u64,
    pub seed: u64,
    /// Micro-batches per optimizer step (`train.grad_accum_steps`).
    pub accum: usize,
    /// Dynamic loss scaling (f16); disabled otherwise.
    pub scaler: LossScaler,
    /// Knowledge distillation's teacher (`[distill]`), run on every micro-batch.
    pub teacher: Option<distill::Teacher>,
    /// A masked LM's masking (`data.task = "mlm"`), applied to every batch; None for a causal LM.
    pub masking: Option<MlmMasking>,
}

/// What one step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub loss: f32,
    pub lr: f32,
    /// Global gradient norm before clipping (NaN when the step was skipped).
    pub grad_norm: f32,
    /// f16: the gradients overflowed, so the optimizer step was skipped.
    pub skipped: bool,
    /// The loss scale for the next step (1 without loss scaling).
    pub loss_scale: f32,
}

impl<M: LanguageModel> Trainer<M> {
    /// One optimizer step on `accum` fresh micro-batches from `train_tokens`.
    pub fn step(&mut self, train_tokens: &[u32]) -> Result<StepStats> {
        let lr = self.schedule.lr(self.step);
        let (b, t) = (self.batch.b, self.batch.t);
        let world = crate::dist::world();
        self.model.zero_grad();
        // Data-parallel: this rank's B sequences are its shard of a global batch of B·ranks.
        self.model.set_first_sequence(world.rank() * b);
        let mut acc = GradAccum::new(self.accum, self.scaler.loss_scale());
        for micro in 0..self.accum as u64 {
            {
                let _p = crate::profile::scope(crate::profile::Op::Batch);
                sample_batch_shard(train_tokens, &mut self.batch, &mut self.rng, world.size(), world.rank());
                if let Some(m) = &self.masking {
                    m.apply(&mut self.batch, &mut self.rng);
                }
            }
            if let Some(teacher) = &mut self.teacher {
                let student = self.model.as_transformer_mut().context("distillation trains Transformers only")?;
                teacher.teach_lm(student, &self.batch.inputs, b, t)?;
            }
            let dropout_seed = mix64(self.seed ^ mix64(self.step)) ^ micro;
            let (inputs, targets) = (&self.batch.inputs, Some(&self.batch.targets[..]));
            let loss = match self.masking {
                Some(_) => self.model.forward_mlm(inputs, targets, b, t, true, dropout_seed)?,
                None => self.model.forward_lm(inputs, targets, b, t, true, dropout_seed)?,
            }
            .unwrap_or(0.0);
            acc.backward(&mut self.model, loss, self.step)?;
        }
        let loss = acc.finish(&mut self.model);
        let stats = optimizer_step(&mut self.model, &mut self.opt, self.clip, self.step, loss, lr, &mut self.scaler)?;
        self.step += 1;
        Ok(stats)
    }

    /// Mean loss over `iters` random batches of `split` (no dropout). The batches come from an
    /// RNG seeded by (seed, step, split), so evaluating never changes the training stream.
    pub fn estimate_loss(&mut self, split: &[u32], split_id: u64, iters: usize, batch: &mut Batch) -> Result<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix64(self.seed ^ mix64(self.step) ^ (split_id << 32)));
        let world = crate::dist::world();
        let mut total = [0.0f64];
        for _ in 0..iters {
            // Each rank evaluates its shard of the same global batches; every shard holds as
            // many targets, so the mean over ranks is the mean over the global batch.
            sample_batch_shard(split, batch, &mut rng, world.size(), world.rank());
            let (b, t) = (batch.b, batch.t);
            let loss = match &self.masking {
                Some(m) => {
                    m.apply(batch, &mut rng);
                    self.model.forward_mlm(&batch.inputs, Some(&batch.targets), b, t, false, 0)?
                }
                None => self.model.forward_lm(&batch.inputs, Some(&batch.targets), b, t, false, 0)?,
            }
            .unwrap_or(0.0);
            total[0] += loss as f64;
        }
        world.all_reduce_sum_f64(&mut total);
        Ok((total[0] / (iters * world.size()) as f64) as f32)
    }
}

/// Backward passes of one optimizer step's micro-batches (`train.grad_accum_steps`): with one
/// micro-batch, the plain backward of its mean loss; with several, every target of every
/// micro-batch gets the same weight 1/n₀ (n₀ = the first micro-batch's target count, so the
/// gradients keep the magnitude of a mean, which matters under f16), and [`GradAccum::finish`]
/// rescales by n₀ / (total target count). The update then equals the one of the large batch made
/// of them, even when micro-batches hold different numbers of real tokens (up to float summation
/// order; BatchNorm statistics stay per micro-batch). Under f16 loss scaling every backward
/// carries the loss scale, which [`optimizer_step`] removes again.
pub struct GradAccum {
    micro_batches: usize,
    loss_scale: f32,
    loss_sum: f64,
    count: usize,
    first_count: usize,
}

impl GradAccum {
    pub fn new(micro_batches: usize, loss_scale: f32) -> Self {
        GradAccum { micro_batches: micro_batches.max(1), loss_scale, loss_sum: 0.0, count: 0, first_count: 0 }
    }

    /// Backward of the forward pass just run, whose mean loss was `loss`.
    pub fn backward<M: LanguageModel>(&mut self, model: &mut M, loss: f32, step: u64) -> Result<()> {
        if !loss.is_finite() {
            return Err(Diverged {
                step,
                message: format!(
                    "loss is {loss} at step {step}: {}; training diverged (try a lower optim.learning_rate or \
                     optim.grad_clip)",
                    where_nonfinite(model)
                ),
            }
            .into());
        }
        let n = model.loss_count();
        if self.micro_batches == 1 {
            model.backward_scaled(self.loss_scale)?;
        } else {
            if self.count == 0 {
                self.first_count = n.max(1);
            }
            model.backward_sum(self.loss_scale / self.first_count as f32)?;
        }
        self.loss_sum += loss as f64 * n as f64;
        self.count += n;
        Ok(())
    }

    /// Turns the accumulated gradients into the gradient of the mean loss over all
    /// micro-batches (still times the loss scale); returns that mean loss. In a data-parallel
    /// job, over every rank's micro-batches: each rank weighs its mean gradient by its target
    /// count, the gradients and the (loss sum, count) pairs are summed over the ranks (one
    /// all-reduce each), and the sums divided by the total count. Every rank then holds the
    /// gradient one process would compute on the global batch (up to summation order), for
    /// every task, even when ranks hold different numbers of real tokens.
    pub fn finish<M: LanguageModel>(&mut self, model: &mut M) -> f32 {
        let count = self.count.max(1);
        // The gradients hold ∇(Σ losses) / divisor, the divisor the backward passes used.
        let divisor = if self.micro_batches > 1 { self.first_count.max(1) } else { count } as f64;
        let mut sums = [self.loss_sum, self.count as f64];
        (self.loss_sum, self.count) = (0.0, 0);
        let world = crate::dist::world();
        if !world.is_distributed() {
            if self.micro_batches > 1 {
                let factor = (divisor / count as f64) as f32;
                model.grads_mut().iter_mut().for_each(|g| *g *= factor);
            }
            return (sums[0] / count as f64) as f32;
        }
        model.grads_mut().iter_mut().for_each(|g| *g *= divisor as f32);
        world.all_reduce_sum(model.grads_mut());
        world.all_reduce_sum_f64(&mut sums);
        let total = sums[1].max(1.0);
        let inv = (1.0 / total) as f32;
        model.grads_mut().iter_mut().for_each(|g| *g *= inv);
        (sums[0] / total) as f32
    }
}

/// The second half of every training step, whatever the task, once the gradients are in
/// `model.grads`: loss unscaling (f16: a step whose gradients overflowed is skipped here,
/// leaving weights and optimizer state untouched), clipping by value, the global gradient norm
/// (reported after value clipping), and norm clipping folded into the optimizer update.
pub fn optimizer_step<M: LanguageModel>(
    model: &mut M,
    opt: &mut Optimizer,
    clip: Clipping,
    step: u64,
    loss: f32,
    lr: f32,
    scaler: &mut LossScaler,
) -> Result<StepStats> {
    // A pruned model: held weights get no gradient, so they neither count in the norm nor
    // move (see model::transformer::SparsityMask).
    if let Some(t) = model.as_transformer_mut() {
        t.mask_grads();
        t.zero_frozen_grads();
    }
    if scaler.unscale(model.grads_mut())? == ScaleOutcome::Overflow {
        return Ok(StepStats { loss, lr, grad_norm: f32::NAN, skipped: true, loss_scale: scaler.loss_scale() });
    }
    if clip.value > 0.0 {
        clip_grad_value(model.grads_mut(), clip.value);
    }
    let norm = grad_norm(model.grads());
    if !norm.is_finite() {
        let message = format!("gradient norm is {norm} at step {step}: {}; training diverged", where_nonfinite(model));
        return Err(Diverged { step, message }.into());
    }
    let scale = if clip.norm > 0.0 { clip_factor(norm, clip.norm) } else { 1.0 };
    let lora = model.as_transformer().is_some_and(|t| t.lora().is_some());
    let (params, grads) = model.params_and_grads();
    match opt.shard_range() {
        None => opt.step_scaled(params, grads, lr, scale),
        // LoRA: the optimizer holds the trainable tail (classifier head and adapters) only.
        Some(window) if lora => opt.step_scaled(&mut params[window.clone()], &grads[window], lr, scale),
        // ZeRO-1: this rank updates its part of the weights with its part of the state, then
        // every rank's updated part goes to every rank.
        Some(part) => {
            opt.step_scaled(&mut params[part.clone()], &grads[part], lr, scale);
            crate::dist::world().all_gather_parts(params);
        }
    }
    if let Some(t) = model.as_transformer_mut() {
        if let Some(mask) = t.sparsity_mask() {
            // With zero gradients a held weight's update is already zero in exact arithmetic;
            // zeroing its optimizer state and the weight itself keeps it so bit for bit (no
            // -0.0, and no momentum from before pruning).
            opt.for_each_state_mut(|buf| mask.apply(buf));
            t.mask_params();
        }
    }
    Ok(StepStats { loss, lr, grad_norm: norm, skipped: false, loss_scale: scaler.loss_scale() })
}

/// Writes a skipped f16 step (overflowed gradients) to the metrics log and the terminal.
pub(crate) fn log_skipped(log: &mut MetricsLog, progress: &log::Progress, iter: u64, s: &StepStats) -> Result<()> {
    log.skipped(iter, s.loss, s.loss_scale)?;
    progress
        .println(format!("step {iter:>6}: f16 gradients overflowed, step skipped; loss scale now {}", s.loss_scale));
    Ok(())
}

/// "precision fp32", or the f16 loss scaler's settings.
fn precision_note(scaler: &LossScaler, p: crate::kernels::precision::Precision) -> String {
    if scaler.enabled {
        format!(
            "precision f16 (emulated), loss scale {} (x2 every {} clean steps)",
            scaler.scale, scaler.growth_interval
        )
    } else if p.is_reduced() {
        format!("precision {} (emulated)", p.name())
    } else {
        "precision fp32".into()
    }
}

/// ZeRO stage 1 (`train.zero = 1` on several ranks): the optimizer keeps only this rank's part
/// of its state ([`Optimizer::shard`]); nothing otherwise.
pub(crate) fn shard_optimizer<M: LanguageModel>(cfg: &RunConfig, model: &M, opt: &mut Optimizer) -> Result<()> {
    let world = crate::dist::world();
    if cfg.train.zero == 0 || !world.is_distributed() {
        return Ok(());
    }
    if model.as_transformer().is_some_and(|t| t.sparsity_mask().is_some()) {
        bail!("train.zero = 1 does not fine-tune a pruned checkpoint (its masks apply to the whole optimizer state); set train.zero = 0");
    }
    opt.shard(world.part(model.params().len()));
    Ok(())
}

/// The whole optimizer state, for a checkpoint: under ZeRO-1 every rank sends its part and rank
/// 0 receives a complete optimizer (the other ranks None); None too when the optimizer is not
/// sharded, which then is complete itself. A collective: every rank must call it.
pub(crate) fn gather_optimizer<M: LanguageModel>(
    cfg: &RunConfig,
    model: &M,
    opt: &Optimizer,
) -> Result<Option<Optimizer>> {
    if opt.shard_range().is_none() || model.as_transformer().is_some_and(|t| t.lora().is_some()) {
        return Ok(None);
    }
    let world = crate::dist::world();
    let total = model.params().len();
    let parts: Vec<Option<Vec<f32>>> = opt.state_tensors().iter().map(|(_, v)| world.gather_parts(v, total)).collect();
    if !world.is_root() {
        return Ok(None);
    }
    let mut full = cfg.optim.build(model.layout())?;
    for ((name, dst), src) in full.state_tensors_mut().into_iter().zip(parts) {
        let src = src.with_context(|| format!("optimizer buffer {name} was not gathered"))?;
        dst.copy_from_slice(&src);
    }
    full.set_steps(opt.steps());
    Ok(Some(full))
}

/// A BPE tokenizer that every rank of a data-parallel job shares: `train` runs on rank 0 only
/// and the result is broadcast (Hugging Face's BPE trainer may break ties between equally
/// frequent pairs differently in two processes, and ranks with different vocabularies would
/// not even agree on the model's size). In one process, just `train`.
pub(crate) fn bpe_from_rank_0(train: impl FnOnce() -> Result<BpeTokenizer>) -> Result<BpeTokenizer> {
    let world = crate::dist::world();
    if !world.is_distributed() {
        return train();
    }
    let mut json = Vec::new();
    if world.is_root() {
        // An error here ends the job (MPI_Abort) before the others wait long.
        json = train()?.to_json()?.into_bytes();
    }
    world.broadcast_bytes(&mut json);
    let json = String::from_utf8(json).context("the BPE tokenizer rank 0 sent is not UTF-8")?;
    BpeTokenizer::from_json(&json, "the BPE tokenizer rank 0 sent")
}

/// "N ranks (data-parallel, global batch B·N) × " in a data-parallel job, else nothing.
pub(crate) fn ranks_note(world: &crate::dist::Comm) -> String {
    if world.is_distributed() {
        format!("{} MPI ranks (data-parallel) × ", world.size())
    } else {
        String::new()
    }
}

/// Where the first NaN or infinity of the last step is, for the error that stops training.
/// A training run whose loss or gradient stopped being finite: the error `train` returns then
/// (through any context), so that a caller comparing settings can record it as an outcome.
#[derive(Debug)]
pub struct Diverged {
    pub step: u64,
    pub message: String,
}

impl std::fmt::Display for Diverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diverged {}

fn where_nonfinite<M: LanguageModel>(model: &M) -> String {
    let found = match model.as_transformer() {
        Some(t) => crate::inspect::first_nonfinite(t),
        None => model.first_nonfinite_param().map(|(name, x)| format!("parameter `{name}` holds {x}")),
    };
    found.unwrap_or_else(|| "no activation or gradient holds a NaN or an infinity".into())
}

/// Options that do not change the result.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// No progress bar or log lines (metrics are still written).
    pub quiet: bool,
    /// JSON lines on standard output for scripts (each log step, each evaluation, events);
    /// no progress bar or log lines. The caller prints the summary ([`TrainSummary::to_json`]).
    pub json: bool,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// The step the run ended at (counted from the start of training, resumes included).
    pub steps: u64,
    /// Losses of the last evaluation (NaN if none happened).
    pub train_loss: f32,
    pub val_loss: f32,
    /// The latest checkpoint, `RUN_DIR/ckpt`.
    pub checkpoint: PathBuf,
    pub seconds: f64,
    /// Over the steps this process took.
    pub ms_per_iter: f64,
    pub best_val_loss: Option<f32>,
    pub best_step: Option<u64>,
    /// `RUN_DIR/ckpt_best`, once written.
    pub best_checkpoint: Option<PathBuf>,
    /// Why early stopping ended the run, if it did.
    pub early_stop: Option<String>,
    pub run_dir: PathBuf,
    /// Classification: accuracy and loss on the test file of the checkpoint `results.json`
    /// reports (the best one).
    pub test_accuracy: Option<f64>,
    pub test_loss: Option<f32>,
}

impl TrainSummary {
    /// The `{"event": "summary", ...}` object that ends `lmlab train --json`'s output.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "event": "summary",
            "steps": self.steps,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "checkpoint": self.checkpoint,
            "best_checkpoint": self.best_checkpoint,
            "run_dir": self.run_dir,
            "early_stop": self.early_stop.is_some(),
            "early_stop_reason": self.early_stop,
            "seconds": self.seconds,
            "ms_per_iter": self.ms_per_iter,
        });
        if let Some(acc) = self.test_accuracy {
            v["test_accuracy"] = acc.into();
            v["test_loss"] = self.test_loss.into();
        }
        v
    }
}

/// Trains from `cfg`, or resumes from the checkpoint `resume` (whose config then applies, with
/// `overrides` on top), for any task.
pub fn train(cfg: RunConfig, resume: Option<&Path>, opts: &TrainOptions) -> Result<TrainSummary> {
    if resume.is_none() && cfg.prune.is_some() {
        bail!(
            "the config has a [prune] section, which describes a checkpoint written by lmlab prune: \
             continue that checkpoint with --resume (a fresh run has no pruned weights to keep)"
        );
    }
    let world = crate::dist::world();
    if world.is_distributed() && cfg.model.norm == crate::model::transformer::NormKind::Batchnorm {
        bail!(
            "model.norm = \"batchnorm\" does not train data-parallel: its batch statistics would be each \
             rank's own; use layernorm or rmsnorm, or one process"
        );
    }
    let threads = if cfg.train.threads == 0 { world.default_threads() } else { cfg.train.threads };
    let pool = thread_pool(threads)?;
    // The whole run executes inside the pool, so parallel kernels never inject work from outside.
    pool.install(|| match cfg.data.task {
        Task::Lm if cfg.model.arch.is_baseline() => train_in_pool::<BaselineLm>(cfg, resume, opts),
        Task::Lm | Task::Mlm => train_in_pool::<Transformer>(cfg, resume, opts),
        Task::Translate | Task::Summarize => seq2seq::train_seq2seq(&cfg, resume, opts),
        Task::Classify => classify::train_classifier(&cfg, resume, opts),
        Task::Qa => qa::train_qa(&cfg, resume, opts),
        Task::Pretrained => bail!(
            "data.task = \"pretrained\" marks imported weights, which have no training data: set data.task to the \
             task to train and start from them with train.init_from"
        ),
    })
}

/// The language-model loop, for the Transformer decoder or a baseline (`M`).
fn train_in_pool<M: LanguageModel>(cfg: RunConfig, resume: Option<&Path>, opts: &TrainOptions) -> Result<TrainSummary> {
    let world = crate::dist::world();
    if world.is_distributed() && cfg.model.arch.is_baseline() {
        bail!("model.arch = \"{}\" trains in one process; run it without mpirun", cfg.model.arch.name());
    }
    let text = read_corpus(Path::new(&cfg.data.path))?;
    let resumed = resume.map(|dir| Resumed::<M>::load_lm(dir, &cfg)).transpose()?;
    let teacher = distill::Teacher::load(&cfg)?;
    let trainer_with = |model: M, opt: Optimizer, rng, step, scaler| Trainer {
        model,
        opt,
        schedule: cfg.optim.schedule(),
        clip: cfg.optim.clipping(),
        batch: Batch::new(cfg.train.batch_size, cfg.model.block_size),
        rng,
        step,
        seed: cfg.train.seed,
        accum: cfg.train.grad_accum_steps,
        scaler,
        teacher: None,
        masking: None,
    };
    let mut init_note = None;
    let (tokenizer, mut trainer, from) = match resumed {
        Some(Resumed { from, tokenizer, model, opt }) => {
            let scaler = run::loss_scaler(&cfg, Some(&from));
            let trainer = trainer_with(model, opt, from.state.rng.clone(), from.state.step, scaler);
            (tokenizer, trainer, Some(from))
        }
        // Fine-tuning: the pretrained model's weights and tokenizer.
        None if !cfg.train.init_from.is_empty() => {
            let (tokenizer, model, opt, note) = run::pretrained_model(&cfg, None)?;
            init_note = Some(note);
            let rng = Xoshiro256PlusPlus::seed_from_u64(cfg.train.seed);
            (tokenizer, trainer_with(model, opt, rng, 0, run::loss_scaler(&cfg, None)), None)
        }
        // A distilled student speaks its teacher's vocabulary.
        None if teacher.is_some() => {
            let tokenizer = teacher.as_ref().unwrap().tokenizer.clone();
            let (model, opt) = run::fresh_lm::<M>(&cfg, cfg.model_config(tokenizer.vocab_size()))?;
            let rng = Xoshiro256PlusPlus::seed_from_u64(cfg.train.seed);
            (tokenizer, trainer_with(model, opt, rng, 0, run::loss_scaler(&cfg, None)), None)
        }
        None => {
            let tokenizer = Tokenizer::Char(match cfg.data.task {
                Task::Mlm => CharTokenizer::from_corpus_with_mask(&text)?,
                _ => CharTokenizer::from_corpus(&text)?,
            });
            let (model, opt) = run::fresh_lm::<M>(&cfg, cfg.model_config(tokenizer.vocab_size()))?;
            let rng = Xoshiro256PlusPlus::seed_from_u64(cfg.train.seed);
            (tokenizer, trainer_with(model, opt, rng, 0, run::loss_scaler(&cfg, None)), None)
        }
    };
    if let Some(t) = &teacher {
        t.check_student(trainer.model.config(), &tokenizer)?;
    }
    trainer.teacher = teacher;
    trainer.masking = masking_of(&cfg, &tokenizer, trainer.model.as_transformer())?;
    shard_optimizer(&cfg, &trainer.model, &mut trainer.opt)?;
    let tokens = tokenizer.encode_corpus(&text).context("the data file does not fit the checkpoint's tokenizer")?;
    let data = TokenDataset::split(tokens, cfg.data.val_fraction)?;
    data.check_fits(cfg.model.block_size)?;

    let mut tracker = RunTracker::start(&cfg, opts, from.as_ref())?;
    let tc = &cfg.train;
    let tokens_per_step = (tc.batch_size * tc.grad_accum_steps * cfg.model.block_size * world.size()) as f64;
    if let Some(note) = init_note {
        tracker.info(note);
    }
    tracker.info(format!(
        "model: {} parameters ({}), vocab {}; data: {} train / {} val tokens; {}{} threads; {}",
        trainer.model.num_params(),
        model_shape(&cfg.model),
        tokenizer.vocab_size(),
        data.train.len(),
        data.val.len(),
        ranks_note(world),
        rayon::current_num_threads(),
        precision_note(&trainer.scaler, cfg.train.precision)
    ));
    if let Some(mask) = trainer.model.as_transformer().and_then(|t| t.sparsity_mask()) {
        let tensors = mask.tensors().count();
        tracker.info(format!("pruned checkpoint: {} weights of {tensors} tensors held at zero", mask.held()));
    }
    let mut eval_batch = Batch::new(tc.batch_size, cfg.model.block_size);
    // Estimates train and val loss, then checkpoints; true when early stopping ends the run.
    let mut evaluate = |trainer: &mut Trainer<M>, tracker: &mut RunTracker| -> Result<bool> {
        let train_loss = trainer.estimate_loss(&data.train, 0, tc.eval_iters, &mut eval_batch)?;
        let val_loss = trainer.estimate_loss(&data.val, 1, tc.eval_iters, &mut eval_batch)?;
        let step = trainer.step;
        let full = gather_optimizer(&cfg, &trainer.model, &trainer.opt)?;
        tracker.evaluated(Eval { step, train_loss, val_loss, val_accuracy: None }, |record| {
            let state = TrainState {
                step,
                rng: trainer.rng.clone(),
                record: record.clone(),
                task: None,
                loss_scaler: trainer.scaler.state(),
            };
            checkpoint::encode(&trainer.model, full.as_ref().unwrap_or(&trainer.opt), &cfg, &tokenizer, &state)
        })
    };

    // Health probes read Transformer layers (the config refuses them for the baselines).
    let mut health = trainer.model.as_transformer().map(|t| HealthMonitor::new(tc.health_interval, t));
    let mut window_start = Instant::now();
    let mut window_steps = 0u64;
    let comm = CommMeter::start(world, trainer.step);
    while trainer.step < tc.max_iters {
        if tracker.eval_due(trainer.step) && evaluate(&mut trainer, &mut tracker)? {
            break;
        }
        let health_due = match (&mut health, trainer.model.as_transformer()) {
            (Some(h), Some(t)) => h.before_step(trainer.step + 1, t),
            _ => false,
        };
        let s = trainer.step(&data.train)?;
        if s.skipped {
            log_skipped(&mut tracker.log, &tracker.progress, trainer.step, &s)?;
        }
        if let (true, Some(h), Some(t)) = (health_due, &health, trainer.model.as_transformer()) {
            tracker.log.health(trainer.step, &h.stats(t))?;
        }
        window_steps += 1;
        if trainer.step % tc.log_interval == 0 || trainer.step == tc.max_iters {
            let ms = window_start.elapsed().as_secs_f64() * 1e3 / window_steps as f64;
            tracker.log.step(trainer.step, s.loss, s.lr, s.grad_norm, ms, tokens_per_step / ms * 1e3)?;
            tracker.progress.update(trainer.step, s.loss, s.lr, ms, tokens_per_step / ms * 1e3);
            window_start = Instant::now();
            window_steps = 0;
        }
    }
    comm.report(world, trainer.step, trainer.opt.state_bytes(), &mut tracker)?;
    if tracker.needs_final_eval(trainer.step) {
        evaluate(&mut trainer, &mut tracker)?;
    }
    Ok(tracker.finish(trainer.step))
}

/// The masking of an MLM run (`data.task = "mlm"`): the tokenizer's [MASK] on a model with the
/// masked-LM head. None for a causal LM.
fn masking_of(cfg: &RunConfig, tokenizer: &Tokenizer, model: Option<&Transformer>) -> Result<Option<MlmMasking>> {
    if cfg.data.task != Task::Mlm {
        return Ok(None);
    }
    let model = model.context("data.task = \"mlm\" trains a Transformer encoder")?;
    ensure!(
        model.is_masked_lm(),
        "data.task = \"mlm\" needs an encoder with the masked-LM head (train.init_from a masked LM, or a fresh model)"
    );
    let mask_id = tokenizer.mask_token().with_context(|| {
        format!("the {} tokenizer has no [MASK] token, which masked-LM training needs", tokenizer.kind())
    })?;
    let special = tokenizer.mlm_special_ids()?;
    Ok(Some(MlmMasking::new(mask_id, model.config.vocab_size, cfg.data.mlm_probability, special)?))
}

/// "4 layers, 4 heads, 128 wide, block 64" (or the baseline's own sizes) for the log.
fn model_shape(m: &crate::model::transformer::ModelConfig) -> String {
    use crate::model::transformer::Arch;
    let (l, c, t) = (m.n_layer, m.n_embd, m.block_size);
    match m.arch {
        Arch::Lstm | Arch::Gru => {
            format!("{} {l} layers, hidden {}, embedding {c}, block {t}", m.arch.name(), m.hidden())
        }
        Arch::Cnn => {
            let d: Vec<usize> = (0..l).map(|i| m.dilation(i)).collect();
            format!(
                "cnn {l} layers, {c} wide, kernel {}, dilations {d:?}, receptive field {}, block {t}",
                m.taps(),
                m.receptive_field()
            )
        }
        _ => format!("{l} layers, {} heads, {c} wide, block {t}", m.n_head),
    }
}

/// What a data-parallel run spent communicating: time inside collectives (the all-reduces,
/// including any wait for a slower rank) against the wall time of the steps and evaluations.
struct CommMeter {
    started: Instant,
    step: u64,
}

impl CommMeter {
    fn start(world: &crate::dist::Comm, step: u64) -> Self {
        world.take_comm_stats();
        CommMeter { started: Instant::now(), step }
    }

    /// Logs a `communication` event and a line: per step, the collectives' time and bytes, and
    /// each rank's peak RSS. Nothing in one process.
    fn report(&self, world: &crate::dist::Comm, step: u64, opt_bytes: usize, tracker: &mut RunTracker) -> Result<()> {
        if !world.is_distributed() {
            return Ok(());
        }
        let (seconds, bytes) = world.take_comm_stats();
        let wall = self.started.elapsed().as_secs_f64();
        let steps = step.saturating_sub(self.step).max(1) as f64;
        // Every rank's peak RSS, gathered by summing a vector with one slot per rank.
        let mb = |b: f64| (b / 1e6 * 10.0).round() / 10.0;
        let n = world.size();
        let mut per_rank = vec![0.0f64; 2 * n];
        per_rank[world.rank()] = crate::util::peak_rss_bytes() as f64;
        per_rank[n + world.rank()] = opt_bytes as f64;
        world.all_reduce_sum_f64(&mut per_rank);
        let rss_mb: Vec<f64> = per_rank[..n].iter().map(|b| mb(*b)).collect();
        let opt_bytes: Vec<u64> = per_rank[n..].iter().map(|b| *b as u64).collect();
        let opt_mb: Vec<f64> = per_rank[n..].iter().map(|b| mb(*b)).collect();
        tracker.log.event(
            "communication",
            serde_json::json!({
                "iter": step, "ranks": world.size(), "comm_ms_per_step": seconds * 1e3 / steps,
                "wall_ms_per_step": wall * 1e3 / steps, "share": seconds / wall,
                "bytes_per_step": bytes as f64 / steps, "peak_rss_mb": rss_mb, "optimizer_state_bytes": opt_bytes,
            }),
        )?;
        tracker.info(format!(
            "communication (rank 0): {:.2} ms per step in all-reduces ({:.1}% of the wall time), {:.2} MB reduced \
             per step; peak RSS per rank {:?} MB, optimizer state per rank {:?} MB",
            seconds * 1e3 / steps,
            100.0 * seconds / wall,
            bytes as f64 / steps / 1e6,
            rss_mb,
            opt_mb
        ));
        Ok(())
    }
}

/// Times `iters` training steps of `cfg`'s model on random tokens (after `warmup` steps) with
/// the per-operation profiler on. Returns (median ms per step, per-op rows).
pub fn profile_steps(
    cfg: &RunConfig,
    vocab_size: usize,
    warmup: usize,
    iters: usize,
) -> Result<(f64, Vec<crate::profile::ProfileRow>)> {
    let pool = thread_pool(cfg.train.threads)?;
    pool.install(|| {
        let mut model = Transformer::new(cfg.model_config(vocab_size), cfg.train.batch_size)?;
        model.init_with(cfg.train.init, cfg.train.init_std, cfg.train.seed);
        let opt = cfg.optim.build(&model.layout)?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.train.seed);
        let tokens: Vec<u32> = (0..100_000).map(|_| rand::Rng::gen_range(&mut rng, 0..vocab_size as u32)).collect();
        let mut trainer = Trainer {
            model,
            opt,
            schedule: cfg.optim.schedule(),
            clip: cfg.optim.clipping(),
            batch: Batch::new(cfg.train.batch_size, cfg.model.block_size),
            rng,
            step: 0,
            seed: cfg.train.seed,
            accum: cfg.train.grad_accum_steps,
            scaler: cfg.train.loss_scaler(),
            teacher: None,
            masking: None,
        };
        trainer.model.set_precision(cfg.train.precision);
        for _ in 0..warmup {
            trainer.step(&tokens)?;
        }
        crate::profile::reset();
        crate::profile::enable(true);
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            trainer.step(&tokens)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        crate::profile::enable(false);
        times.sort_by(|a, b| a.total_cmp(b));
        Ok((times[times.len() / 2], crate::profile::report()))
    })
}
