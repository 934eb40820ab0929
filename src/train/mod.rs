//! The training loop: batches in, optimizer steps out, with evaluation, logging and checkpoints.
pub mod classify;
pub mod config;
pub mod log;
pub mod precision;
pub mod seq2seq;

use crate::data::dataset::sample_batch;
use crate::data::{Batch, CharTokenizer, TokenDataset, Tokenizer};
use crate::inspect::HealthMonitor;
use crate::io::checkpoint::{self, TrainState};
use crate::kernels::dropout::mix64;
use crate::model::transformer::Transformer;
use crate::optim::{clip_factor, clip_grad_value, grad_norm, Clipping, LrSchedule, Optimizer};
use anyhow::{bail, ensure, Context, Result};
use config::{RunConfig, Task};
use log::MetricsLog;
use precision::{LossScaler, ScaleOutcome};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Reads a UTF-8 text corpus, with errors that say what is wrong with the file.
pub fn read_corpus(path: &Path) -> Result<String> {
    ensure!(!path.as_os_str().is_empty(), "no data file given (set data.path in the config or pass --data)");
    let bytes = std::fs::read(path).with_context(|| format!("cannot read data file {}", path.display()))?;
    ensure!(!bytes.is_empty(), "data file {} is empty", path.display());
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!("data file {} is not valid UTF-8 (byte {})", path.display(), e.utf8_error().valid_up_to())
    })
}

/// Everything one optimizer step needs, preallocated: after the first step, [`Trainer::step`]
/// allocates nothing.
pub struct Trainer {
    pub model: Transformer,
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

impl Trainer {
    /// One optimizer step on `accum` fresh micro-batches from `train_tokens`.
    pub fn step(&mut self, train_tokens: &[u32]) -> Result<StepStats> {
        let lr = self.schedule.lr(self.step);
        let (b, t) = (self.batch.b, self.batch.t);
        self.model.zero_grad();
        let mut acc = GradAccum::new(self.accum, self.scaler.loss_scale());
        for micro in 0..self.accum as u64 {
            {
                let _p = crate::profile::scope(crate::profile::Op::Batch);
                sample_batch(train_tokens, &mut self.batch, &mut self.rng);
            }
            let dropout_seed = mix64(self.seed ^ mix64(self.step)) ^ micro;
            let loss = self
                .model
                .forward_lm(&self.batch.inputs, Some(&self.batch.targets), b, t, true, dropout_seed)?
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
        let mut total = 0.0f64;
        for _ in 0..iters {
            sample_batch(split, batch, &mut rng);
            let loss =
                self.model.forward_lm(&batch.inputs, Some(&batch.targets), batch.b, batch.t, false, 0)?.unwrap_or(0.0);
            total += loss as f64;
        }
        Ok((total / iters as f64) as f32)
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
    pub fn backward(&mut self, model: &mut Transformer, loss: f32, step: u64) -> Result<()> {
        if !loss.is_finite() {
            bail!(
                "loss is {loss} at step {step}: {}; training diverged (try a lower optim.learning_rate or \
                 optim.grad_clip)",
                where_nonfinite(model)
            );
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
    /// micro-batches (still times the loss scale); returns that mean loss.
    pub fn finish(&mut self, model: &mut Transformer) -> f32 {
        let count = self.count.max(1);
        if self.micro_batches > 1 {
            let factor = (self.first_count as f64 / count as f64) as f32;
            model.grads.iter_mut().for_each(|g| *g *= factor);
        }
        let loss = (self.loss_sum / count as f64) as f32;
        (self.loss_sum, self.count) = (0.0, 0);
        loss
    }
}

/// The second half of every training step, whatever the task, once the gradients are in
/// `model.grads`: loss unscaling (f16: a step whose gradients overflowed is skipped here,
/// leaving weights and optimizer state untouched), clipping by value, the global gradient norm
/// (reported after value clipping), and norm clipping folded into the optimizer update.
pub fn optimizer_step(
    model: &mut Transformer,
    opt: &mut Optimizer,
    clip: Clipping,
    step: u64,
    loss: f32,
    lr: f32,
    scaler: &mut LossScaler,
) -> Result<StepStats> {
    if scaler.unscale(&mut model.grads)? == ScaleOutcome::Overflow {
        return Ok(StepStats { loss, lr, grad_norm: f32::NAN, skipped: true, loss_scale: scaler.loss_scale() });
    }
    if clip.value > 0.0 {
        clip_grad_value(&mut model.grads, clip.value);
    }
    let norm = grad_norm(&model.grads);
    if !norm.is_finite() {
        bail!("gradient norm is {norm} at step {step}: {}; training diverged", where_nonfinite(model));
    }
    let scale = if clip.norm > 0.0 { clip_factor(norm, clip.norm) } else { 1.0 };
    opt.step_scaled(&mut model.params, &model.grads, lr, scale);
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

/// Where the first NaN or infinity of the last step is, for the error that stops training.
fn where_nonfinite(model: &Transformer) -> String {
    crate::inspect::first_nonfinite(model)
        .unwrap_or_else(|| "no activation or gradient holds a NaN or an infinity".into())
}

/// Options that do not change the result.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// No progress bar or log lines (metrics are still written).
    pub quiet: bool,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: u64,
    pub train_loss: f32,
    pub val_loss: f32,
    pub checkpoint: PathBuf,
    pub seconds: f64,
    pub ms_per_iter: f64,
}

impl TrainSummary {
    /// A run of `steps` optimizer steps that took `seconds`.
    pub fn new(steps: u64, train_loss: f32, val_loss: f32, checkpoint: PathBuf, seconds: f64) -> Self {
        let ms_per_iter = if steps > 0 { seconds * 1e3 / steps as f64 } else { 0.0 };
        TrainSummary { steps, train_loss, val_loss, checkpoint, seconds, ms_per_iter }
    }
}

/// Builds a thread pool of `threads` workers (0 = one per core), each with its GEMM packing
/// buffers allocated up front.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new().start_handler(|_| crate::kernels::gemm::prepare_thread());
    if threads > 0 {
        b = b.num_threads(threads);
    }
    let pool = b.build()?;
    // Wait until every worker is running (and has run its start handler), so no thread starts
    // up later, in the middle of a step.
    pool.broadcast(|_| ());
    Ok(pool)
}

/// Trains from `cfg`, or resumes from the checkpoint `resume` (whose config then applies, with
/// `overrides` on top).
pub fn train(cfg: RunConfig, resume: Option<&Path>, opts: &TrainOptions) -> Result<TrainSummary> {
    let pool = thread_pool(cfg.train.threads)?;
    // The whole run executes inside the pool, so parallel kernels never inject work from outside.
    pool.install(|| match cfg.data.task {
        Task::Lm => train_in_pool(cfg, resume, opts),
        Task::Translate => {
            ensure!(resume.is_none(), "--resume is supported for language models only (data.task = \"lm\")");
            seq2seq::train_translation(&cfg, opts)
        }
        Task::Classify => {
            ensure!(resume.is_none(), "--resume is supported for language models only (data.task = \"lm\")");
            classify::train_classifier(&cfg, opts)
        }
    })
}

fn train_in_pool(cfg: RunConfig, resume: Option<&Path>, opts: &TrainOptions) -> Result<TrainSummary> {
    let text = read_corpus(Path::new(&cfg.data.path))?;
    let (tokenizer, mut trainer, mut best) = match resume {
        Some(dir) => {
            let ck = checkpoint::load(dir, cfg.train.batch_size, true)
                .with_context(|| format!("cannot resume from {}", dir.display()))?;
            ensure!(
                ck.run_config.model == cfg.model,
                "the [model] section differs from the checkpoint's: a resumed run must keep the model's shape"
            );
            let mut opt = cfg.optim.build(&ck.model.layout)?;
            opt.restore(ck.optimizer.as_ref().expect("loaded with the optimizer"))?;
            let mut model = ck.model;
            model.label_smoothing = cfg.train.label_smoothing;
            model.set_precision(cfg.train.precision);
            let mut scaler = LossScaler::from_config(&cfg.train);
            scaler.restore(ck.state.loss_scaler);
            let trainer = Trainer {
                model,
                opt,
                schedule: cfg.optim.schedule(),
                clip: cfg.optim.clipping(),
                batch: Batch::new(cfg.train.batch_size, cfg.model.block_size),
                rng: ck.state.rng,
                step: ck.state.step,
                seed: cfg.train.seed,
                accum: cfg.train.grad_accum_steps,
                scaler,
            };
            (ck.tokenizer, trainer, ck.state.best_val_loss)
        }
        None => {
            let tokenizer = Tokenizer::Char(CharTokenizer::from_corpus(&text)?);
            let mut model = Transformer::new(cfg.model_config(tokenizer.vocab_size()), cfg.train.batch_size)?;
            model.init_with(cfg.train.init, cfg.train.init_std, cfg.train.seed);
            model.label_smoothing = cfg.train.label_smoothing;
            let opt = cfg.optim.build(&model.layout)?;
            model.set_precision(cfg.train.precision);
            let trainer = Trainer {
                model,
                opt,
                schedule: cfg.optim.schedule(),
                clip: cfg.optim.clipping(),
                batch: Batch::new(cfg.train.batch_size, cfg.model.block_size),
                rng: Xoshiro256PlusPlus::seed_from_u64(cfg.train.seed),
                step: 0,
                seed: cfg.train.seed,
                accum: cfg.train.grad_accum_steps,
                scaler: LossScaler::from_config(&cfg.train),
            };
            (tokenizer, trainer, None)
        }
    };
    let tokens = tokenizer.encode(&text).context("the data file does not fit the checkpoint's tokenizer")?;
    let data = TokenDataset::split(tokens, cfg.data.val_fraction)?;
    data.check_fits(cfg.model.block_size)?;

    let out_dir = PathBuf::from(&cfg.train.out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let ckpt_dir = out_dir.join("ckpt");
    let mut log = MetricsLog::open(&out_dir.join("metrics.jsonl"))?;
    let tc = &cfg.train;
    let start_step = trainer.step;
    let tokens_per_step = (tc.batch_size * tc.grad_accum_steps * cfg.model.block_size) as f64;
    let progress = log::Progress::new(tc.max_iters, start_step, opts.quiet);
    if !opts.quiet {
        progress.println(format!(
            "model: {} parameters ({} layers, {} heads, {} wide, block {}), vocab {}; data: {} train / {} val tokens; {} threads; {}",
            trainer.model.num_params(),
            cfg.model.n_layer,
            cfg.model.n_head,
            cfg.model.n_embd,
            cfg.model.block_size,
            tokenizer.vocab_size(),
            data.train.len(),
            data.val.len(),
            rayon::current_num_threads(),
            precision_note(&trainer.scaler, cfg.train.precision)
        ));
    }
    let mut eval_batch = Batch::new(tc.batch_size, cfg.model.block_size);
    let mut last = (f32::NAN, f32::NAN);
    let mut evaluate = |trainer: &mut Trainer, best: &mut Option<f32>, log: &mut MetricsLog| -> Result<(f32, f32)> {
        let train_loss = trainer.estimate_loss(&data.train, 0, tc.eval_iters, &mut eval_batch)?;
        let val_loss = trainer.estimate_loss(&data.val, 1, tc.eval_iters, &mut eval_batch)?;
        log.eval(trainer.step, train_loss, val_loss)?;
        progress.println(format!("step {:>6}: train loss {train_loss:.4}, val loss {val_loss:.4}", trainer.step));
        *best = Some(best.map_or(val_loss, |b: f32| b.min(val_loss)));
        let state = TrainState {
            step: trainer.step,
            rng: trainer.rng.clone(),
            best_val_loss: *best,
            loss_scaler: trainer.scaler.state(),
        };
        checkpoint::save(&ckpt_dir, &trainer.model, &trainer.opt, &cfg, &tokenizer, &state)?;
        Ok((train_loss, val_loss))
    };

    let mut health = HealthMonitor::new(tc.health_interval, &trainer.model);
    let started = Instant::now();
    let mut window_start = Instant::now();
    let mut window_steps = 0u64;
    while trainer.step < tc.max_iters {
        // Evaluate at every multiple of eval_interval, except the step a resumed run starts at
        // (that evaluation already happened before the checkpoint was written).
        if trainer.step % tc.eval_interval == 0 && (trainer.step != start_step || resume.is_none()) {
            last = evaluate(&mut trainer, &mut best, &mut log)?;
        }
        let health_due = health.before_step(trainer.step + 1, &trainer.model);
        let s = trainer.step(&data.train)?;
        if health_due {
            log.health(trainer.step, &health.stats(&trainer.model))?;
        }
        window_steps += 1;
        if s.skipped {
            log_skipped(&mut log, &progress, trainer.step, &s)?;
        }
        if trainer.step % tc.log_interval == 0 || trainer.step == tc.max_iters {
            let ms = window_start.elapsed().as_secs_f64() * 1e3 / window_steps as f64;
            log.step(trainer.step, s.loss, s.lr, s.grad_norm, ms, tokens_per_step / ms * 1e3)?;
            progress.update(trainer.step, s.loss, s.lr, ms, tokens_per_step / ms * 1e3);
            window_start = Instant::now();
            window_steps = 0;
        }
    }
    if trainer.step != start_step || resume.is_none() || last.1.is_nan() {
        last = evaluate(&mut trainer, &mut best, &mut log)?;
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let steps = trainer.step - start_step;
    Ok(TrainSummary {
        steps: trainer.step,
        train_loss: last.0,
        val_loss: last.1,
        checkpoint: ckpt_dir,
        seconds,
        ms_per_iter: if steps > 0 { seconds * 1e3 / steps as f64 } else { 0.0 },
    })
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
            scaler: LossScaler::from_config(&cfg.train),
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
