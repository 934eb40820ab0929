//! The run configuration: one TOML file with `[model]`, `[data]`, `[train]` and `[optim]` (and
//! `[prune]`, which only `lmlab prune` writes, in a pruned checkpoint).
//!
//! Unknown keys and wrong types are errors that name the key. `--set section.key=value`
//! overrides any key before validation.

use crate::kernels::precision::Precision;
use crate::model::transformer::ModelConfig;
use crate::optim::LossScaler;

mod init_from;
mod optim;
use anyhow::{bail, ensure, Context, Result};
pub use init_from::OVERRIDABLE as INIT_FROM_OVERRIDABLE;
pub use optim::{OptimSection, OptimizerName};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a run trains the model to do; it decides which `[data]` keys apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Next-token prediction on one text file (`path`, `val_fraction`), character tokenizer.
    #[default]
    Lm,
    /// Sequence-to-sequence on line-aligned parallel files (`src_train`, `tgt_train`,
    /// `src_val`, `tgt_val`), subword BPE tokenizer of `vocab_size` trained on the train files.
    Translate,
    /// Sequence classification (`train`, `test`, `format`), BPE tokenizer.
    Classify,
    /// Extractive question answering on SQuAD v1.1-format files (`train`, `test`,
    /// `heldout_articles`, `max_len`, `doc_stride`, `max_query_len`, `max_answer_len`): the
    /// span head on an encoder started from an imported BERT (`train.init_from`), whose
    /// WordPiece tokenizer it keeps (see `train/qa.rs`).
    Qa,
    /// No training task: weights imported from another format (`lmlab import --hf` of a BERT).
    /// Such a checkpoint is a starting point (`train.init_from`), not a run to resume.
    Pretrained,
    /// Masked-language-model pretraining of an encoder (BERT's objective) on a text file
    /// (`path`), character-level like `lm`: `mlm_probability` of the positions of each window
    /// are chosen, 80% of them replaced by `[MASK]`, 10% by a random token, 10% kept, and the
    /// loss is the cross-entropy of the original token at the chosen positions (`data/mlm.rs`).
    Mlm,
    /// Summarization, sequence-to-sequence on JSON Lines records (`format = "jsonl"`, `train`,
    /// `val`, `source_field`, `target_field`): the translation model and training loop, with a
    /// BPE vocabulary trained on the sources and targets of the training records.
    Summarize,
}

impl Task {
    /// An encoder-decoder task (translate, summarize).
    pub fn is_seq2seq(self) -> bool {
        matches!(self, Task::Translate | Task::Summarize)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    pub task: Task,
    /// LM: a UTF-8 text file; a character-level tokenizer is built from it.
    pub path: String,
    /// LM: share of the tokens (at the end of the file) held out for validation. Classify: share
    /// of the training examples held out for validation.
    pub val_fraction: f64,
    /// Translate: source and target training files (one sentence per line, aligned).
    pub src_train: String,
    pub tgt_train: String,
    /// Translate: validation files (loss during training).
    pub src_val: String,
    pub tgt_val: String,
    /// Translate / classify / summarize: size of the BPE vocabulary trained on the training files.
    pub vocab_size: usize,
    /// Translate / classify / summarize: longest sequence in tokens; longer ones are truncated.
    pub max_len: usize,
    /// Translate / summarize: longest source and target in tokens (targets without BOS/EOS),
    /// when they differ; 0 = `max_len`.
    pub max_src_len: usize,
    pub max_tgt_len: usize,
    /// Classify / summarize: training and test files.
    pub train: String,
    pub test: String,
    /// Summarize: validation file (loss during training).
    pub val: String,
    /// Classify: "sst2" (TSV `sentence<TAB>label`), "trec" (coarse labels) or "trec_fine".
    /// Summarize: "jsonl" (one JSON object per line).
    pub format: String,
    /// QA: the last this many articles of `train` (file order) are held out from training and
    /// evaluated at the end.
    pub heldout_articles: usize,
    /// QA: context tokens shared by consecutive windows of a long context.
    pub doc_stride: usize,
    /// QA: the question is cut to this many pieces.
    pub max_query_len: usize,
    /// QA: longest predicted answer, in tokens.
    pub max_answer_len: usize,
    /// Summarize: the record fields holding the text to summarize and its summary.
    pub source_field: String,
    pub target_field: String,
    /// Summarize: the reference fields of test records. Empty: `target_field` when a record has
    /// it, else every `target_field` + number (DialogSum's test set: summary1, summary2, ...).
    pub reference_fields: Vec<String>,
    /// MLM: the share of positions whose token the model must predict (BERT: 0.15).
    pub mlm_probability: f64,
}

impl DataSection {
    /// Longest source in tokens (translate, summarize).
    pub fn src_len(&self) -> usize {
        if self.max_src_len > 0 {
            self.max_src_len
        } else {
            self.max_len
        }
    }

    /// Longest target in tokens, BOS/EOS not counted (translate, summarize).
    pub fn tgt_len(&self) -> usize {
        if self.max_tgt_len > 0 {
            self.max_tgt_len
        } else {
            self.max_len
        }
    }
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            task: Task::Lm,
            path: String::new(),
            val_fraction: 0.1,
            src_train: String::new(),
            tgt_train: String::new(),
            src_val: String::new(),
            tgt_val: String::new(),
            vocab_size: 8000,
            max_len: 64,
            max_src_len: 0,
            max_tgt_len: 0,
            train: String::new(),
            test: String::new(),
            val: String::new(),
            format: String::new(),
            heldout_articles: 8,
            doc_stride: 128,
            max_query_len: 64,
            max_answer_len: 30,
            source_field: String::new(),
            target_field: String::new(),
            reference_fields: Vec::new(),
            mlm_probability: 0.15,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Run directory: config.toml, metrics.jsonl, the latest checkpoint `ckpt/` and the best
    /// one `ckpt_best/` go here.
    pub out_dir: String,
    pub batch_size: usize,
    pub max_iters: u64,
    /// Estimate train/val loss (and save a checkpoint) every this many iterations.
    pub eval_interval: u64,
    /// Batches per loss estimate.
    pub eval_iters: usize,
    /// Log training loss every this many iterations.
    pub log_interval: u64,
    pub seed: u64,
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// Weight initialisation: "gpt2" (default), "normal", "xavier_uniform", "xavier_normal",
    /// "kaiming_uniform" or "kaiming_normal" (see `model::init`).
    pub init: crate::model::InitScheme,
    /// Standard deviation of the normal draws (embeddings; matrices under gpt2 and normal).
    pub init_std: f32,
    /// Micro-batches of `batch_size` whose gradients are summed into one optimizer step (the
    /// effective batch is `batch_size · grad_accum_steps`).
    pub grad_accum_steps: usize,
    /// Label smoothing ε of the training loss (PyTorch's `label_smoothing`); evaluation losses
    /// are always the plain cross-entropy.
    pub label_smoothing: f32,
    /// Number format of the matrix products: "fp32", "bf16" or "f16" (emulated mixed
    /// precision; master weights, optimizer and accumulation stay f32).
    pub precision: Precision,
    /// f16 only: initial loss scale (GradScaler's `init_scale`).
    pub loss_scale_init: f32,
    /// f16 only: clean steps in a row after which the loss scale doubles.
    pub loss_scale_growth_interval: u64,
    /// Log per-layer health statistics (gradient norms, update ratios, activations, dead
    /// units, attention entropy) every this many steps; 0 = off.
    pub health_interval: u64,
    /// Stop after this many evaluations in a row without an improvement of the val loss by more
    /// than `early_stop_min_delta`; 0 turns early stopping off.
    pub early_stop_patience: u64,
    pub early_stop_min_delta: f32,
    /// ZeRO stage under MPI data parallelism: 0 = every rank holds the whole optimizer state;
    /// 1 = each rank holds 1/N of it (ZeRO-1). Ignored in one process.
    pub zero: u8,
    /// A checkpoint to start from instead of random weights: an lmlab run's, or one `lmlab
    /// import` made (Hugging Face GPT-2 or BERT/MiniLM, llama2.c). The run takes its tokenizer
    /// and `[model]` (see `init_from.rs` for what `[model]` may still change); tensors of a task
    /// head the checkpoint lacks (a classifier's) start fresh. Empty: train from scratch.
    pub init_from: String,
    /// Parameter tensors that do not train: names with `*` wildcards
    /// ("transformer.h.0.*", "transformer.wte.weight") or kinds ("embedding", "norm", "bias",
    /// "matrix"). They get no update and no weight decay, and do not count in the gradient norm.
    pub freeze: Vec<String>,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            out_dir: "out".into(),
            batch_size: 12,
            max_iters: 2000,
            eval_interval: 250,
            eval_iters: 20,
            log_interval: 10,
            seed: 1337,
            threads: 0,
            label_smoothing: 0.0,
            grad_accum_steps: 1,
            init: crate::model::InitScheme::Gpt2,
            init_std: 0.02,
            precision: Precision::Fp32,
            loss_scale_init: 65536.0,
            loss_scale_growth_interval: 2000,
            health_interval: 0,
            early_stop_patience: 0,
            early_stop_min_delta: 0.0,
            zero: 0,
            init_from: String::new(),
            freeze: Vec::new(),
        }
    }
}

impl TrainSection {
    /// The f16 loss scaler `precision`, `loss_scale_init` and `loss_scale_growth_interval`
    /// describe (disabled unless the run is f16).
    pub fn loss_scaler(&self) -> LossScaler {
        LossScaler::new(self.precision, self.loss_scale_init, self.loss_scale_growth_interval)
    }
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The model; `vocab_size` is set from the tokenizer (leave it out).
    pub model: ModelConfig,
    pub data: DataSection,
    pub train: TrainSection,
    pub optim: OptimSection,
    /// Knowledge distillation from a teacher checkpoint (absent: plain training).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillSection>,
    /// Set by `lmlab prune` in a pruned checkpoint: training resumed from it keeps the pruned
    /// weights at zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<crate::compress::prune::PruneRecord>,
    /// LoRA adapters (`[lora]`: rank, alpha, targets, dropout): only they and a classifier's
    /// head train (absent: every weight trains).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::model::transformer::LoraConfig>,
}

/// `[distill]`: train on α·T²·KL(teacher ‖ student at temperature T) + (1−α)·cross-entropy
/// (`kernels::distill`), the teacher running forward only. Language-model and classification
/// tasks; the teacher must share the student's tokenizer (and, for classification, classes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    /// The teacher's checkpoint directory.
    pub teacher: String,
    #[serde(default = "default_distill_temperature")]
    pub temperature: f32,
    #[serde(default = "default_distill_alpha")]
    pub alpha: f32,
}

fn default_distill_temperature() -> f32 {
    2.0
}

fn default_distill_alpha() -> f32 {
    0.5
}

impl RunConfig {
    /// Parses TOML text, applies `overrides` (`section.key=value`), and validates.
    pub fn from_toml_str(text: &str, overrides: &[String]) -> Result<Self> {
        Self::parse(text, overrides, false)
    }

    /// [`RunConfig::from_toml_str`] of a user's run config: with `train.init_from`, `[model]`
    /// comes from that checkpoint (see `init_from.rs`). A saved config (a checkpoint's) is
    /// already resolved and is read with `from_toml_str`.
    pub fn from_user_toml_str(text: &str, overrides: &[String]) -> Result<Self> {
        Self::parse(text, overrides, true)
    }

    fn parse(text: &str, overrides: &[String], resolve_init_from: bool) -> Result<Self> {
        let mut value: toml::Table = toml::from_str(text).context("config is not valid TOML")?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        if resolve_init_from {
            init_from::resolve_model(&mut value)?;
        }
        // Round-trip through text so serde's messages name the offending key and its line.
        let text = toml::to_string(&value)?;
        let cfg: RunConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config: {}", e.message()).context(describe_span(&text, e.span())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml_str(&text, overrides).with_context(|| format!("in config file {}", path.display()))
    }

    /// [`RunConfig::from_file`] of a user's run config ([`RunConfig::from_user_toml_str`]).
    pub fn from_user_file(path: &Path, overrides: &[String]) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_user_toml_str(&text, overrides).with_context(|| format!("in config file {}", path.display()))
    }

    /// The run's optimizer over `layout`: `[optim]` with `train.freeze` as a first parameter
    /// group of learning-rate scale 0 and no weight decay.
    pub fn build_optimizer(&self, layout: &crate::model::ParamLayout) -> Result<crate::optim::Optimizer> {
        if self.train.freeze.is_empty() {
            return self.optim.build(layout);
        }
        let mut optim = self.optim.clone();
        let frozen =
            crate::optim::GroupRule { params: self.train.freeze.clone(), weight_decay: Some(0.0), lr_scale: 0.0 };
        optim.groups.insert(0, frozen);
        optim.build(layout)
    }

    /// The config of a run: the file `config` when given, else the one saved in the checkpoint
    /// `resume` continues from; `overrides` apply on top.
    pub fn for_run(config: Option<&Path>, resume: Option<&Path>, overrides: &[String]) -> Result<Self> {
        match (config, resume) {
            (Some(path), resume) => {
                let mut cfg = RunConfig::from_user_file(path, overrides)?;
                // A pruned checkpoint stays pruned whatever config continues it.
                if let (None, Some(dir)) = (&cfg.prune, resume) {
                    cfg.prune = prune_record_of(dir);
                }
                Ok(cfg)
            }
            (None, Some(dir)) => RunConfig::from_file(&dir.join("config.toml"), overrides)
                .with_context(|| format!("cannot read the config of checkpoint {}", dir.display())),
            (None, None) => bail!("give --config FILE (or --resume DIR)"),
        }
    }

    /// The model's full config once the tokenizer has fixed the vocabulary size.
    /// QA's task decides the head: the span head on the encoder.
    pub fn model_config(&self, vocab_size: usize) -> ModelConfig {
        let encoder_head = match self.data.task {
            Task::Qa => crate::model::transformer::EncoderHead::Span,
            Task::Mlm => crate::model::transformer::EncoderHead::Mlm,
            _ => self.model.encoder_head,
        };
        ModelConfig { vocab_size, encoder_head, ..self.model.clone() }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }

    pub fn validate(&self) -> Result<()> {
        use crate::model::transformer::Arch;
        if let Some(l) = &self.lora {
            l.validate()?;
            ensure!(
                self.train.zero == 0,
                "train.zero = 1 (ZeRO-1) and [lora] do not combine: LoRA's optimizer state is small already"
            );
            ensure!(self.prune.is_none(), "[lora] on a pruned checkpoint is not supported");
        }
        let d = &self.data;
        let arch = self.model.arch;
        match d.task {
            Task::Pretrained | Task::Qa => {}
            Task::Lm => ensure!(
                arch.is_causal_lm(),
                "data.task = \"lm\" needs model.arch = \"decoder\", \"lstm\", \"gru\" or \"cnn\", got \"{}\"",
                arch.name()
            ),
            Task::Mlm => {
                ensure!(arch == Arch::Encoder, "data.task = \"mlm\" needs model.arch = \"encoder\"");
                ensure!(
                    d.mlm_probability > 0.0 && d.mlm_probability < 1.0,
                    "data.mlm_probability must be in (0, 1), got {}",
                    d.mlm_probability
                );
                ensure!(!d.path.is_empty(), "data.task = \"mlm\" needs data.path (a UTF-8 text file)");
            }
            Task::Translate => {
                ensure!(
                    arch == Arch::EncoderDecoder,
                    "data.task = \"translate\" needs model.arch = \"encoder_decoder\""
                );
                for (k, v) in [
                    ("src_train", &d.src_train),
                    ("tgt_train", &d.tgt_train),
                    ("src_val", &d.src_val),
                    ("tgt_val", &d.tgt_val),
                ] {
                    ensure!(!v.is_empty(), "data.task = \"translate\" needs data.{k}");
                }
            }
            Task::Classify => {
                ensure!(arch == Arch::Encoder, "data.task = \"classify\" needs model.arch = \"encoder\"");
                ensure!(
                    !d.train.is_empty() && !d.test.is_empty(),
                    "data.task = \"classify\" needs data.train and data.test"
                );
                ensure!(
                    matches!(d.format.as_str(), "sst2" | "trec" | "trec_fine"),
                    "data.format must be \"sst2\", \"trec\" or \"trec_fine\", got {:?}",
                    d.format
                );
            }
            Task::Summarize => {
                ensure!(
                    arch == Arch::EncoderDecoder,
                    "data.task = \"summarize\" needs model.arch = \"encoder_decoder\""
                );
                ensure!(
                    d.format == "jsonl",
                    "data.task = \"summarize\" needs data.format = \"jsonl\", got {:?}",
                    d.format
                );
                for (k, v) in [
                    ("train", &d.train),
                    ("val", &d.val),
                    ("source_field", &d.source_field),
                    ("target_field", &d.target_field),
                ] {
                    ensure!(!v.is_empty(), "data.task = \"summarize\" needs data.{k}");
                }
            }
        }
        if d.task == Task::Qa {
            ensure!(
                !self.train.init_from.is_empty(),
                "data.task = \"qa\" needs train.init_from: a BERT-style encoder with its WordPiece tokenizer \
                 (lmlab import --hf DIR, or a QA run's checkpoint)"
            );
            ensure!(arch == Arch::Encoder, "data.task = \"qa\" needs model.arch = \"encoder\"");
            ensure!(!d.train.is_empty(), "data.task = \"qa\" needs data.train (a SQuAD v1.1-format JSON file)");
            ensure!(
                self.train.label_smoothing == 0.0,
                "train.label_smoothing is not supported for data.task = \"qa\" (its masked positions have no probability)"
            );
            ensure!(
                d.max_answer_len >= 1 && d.max_query_len >= 1,
                "data.max_answer_len and data.max_query_len must be positive"
            );
            ensure!(
                self.model.block_size >= d.max_len,
                "model.block_size ({}) must be at least data.max_len ({})",
                self.model.block_size,
                d.max_len
            );
        } else if !matches!(d.task, Task::Lm | Task::Mlm | Task::Pretrained) {
            ensure!(d.vocab_size >= 260, "data.vocab_size must be at least 260 (256 bytes and 4 special tokens)");
            ensure!(d.max_len >= 2, "data.max_len must be at least 2");
            if d.task.is_seq2seq() {
                ensure!(
                    self.model.block_size > d.tgt_len() && self.model.block_size >= d.src_len(),
                    "model.block_size ({}) must exceed the longest target ({} tokens: data.max_tgt_len, else max_len), \
                     which gets a BOS/EOS token, and hold the longest source ({}: data.max_src_len, else max_len)",
                    self.model.block_size,
                    d.tgt_len(),
                    d.src_len()
                );
            } else {
                ensure!(
                    self.model.block_size > d.max_len,
                    "model.block_size ({}) must exceed data.max_len ({}): targets get a BOS/EOS token",
                    self.model.block_size,
                    d.max_len
                );
            }
        }
        if let Some(dd) = &self.distill {
            ensure!(!dd.teacher.is_empty(), "distill.teacher must name the teacher's checkpoint directory");
            ensure!(
                dd.temperature > 0.0 && dd.temperature.is_finite(),
                "distill.temperature must be positive, got {}",
                dd.temperature
            );
            ensure!((0.0..=1.0).contains(&dd.alpha), "distill.alpha must be in [0, 1], got {}", dd.alpha);
            ensure!(
                matches!(d.task, Task::Lm | Task::Classify),
                "distill works for data.task = \"lm\" and \"classify\""
            );
        }
        if arch.is_baseline() {
            let name = arch.name();
            ensure!(
                self.train.precision == Precision::Fp32,
                "model.arch = \"{name}\" trains in fp32 only; remove train.precision"
            );
            ensure!(
                self.train.health_interval == 0,
                "train.health_interval reads Transformer layers; it is not available for model.arch = \"{name}\""
            );
            ensure!(self.distill.is_none(), "[distill] trains Transformers only, not model.arch = \"{name}\"");
            ensure!(self.prune.is_none(), "[prune] checkpoints are Transformers, not model.arch = \"{name}\"");
        }
        // The vocabulary is not known yet; any positive size validates the rest of the model.
        ModelConfig { vocab_size: self.model.vocab_size.max(1), ..self.model.clone() }.validate()?;
        let t = &self.train;
        if t.batch_size == 0 || t.grad_accum_steps == 0 {
            bail!("train.batch_size and train.grad_accum_steps must be positive");
        }
        if !(t.init_std > 0.0 && t.init_std.is_finite()) {
            bail!("train.init_std must be positive, got {}", t.init_std);
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            bail!("train.label_smoothing must be in [0, 1), got {}", t.label_smoothing);
        }
        if !(t.loss_scale_init.is_finite() && t.loss_scale_init > 0.0) || t.loss_scale_growth_interval == 0 {
            bail!("train.loss_scale_init and train.loss_scale_growth_interval must be positive");
        }
        if !(t.early_stop_min_delta >= 0.0 && t.early_stop_min_delta.is_finite()) {
            bail!("train.early_stop_min_delta must be a non-negative number, got {}", t.early_stop_min_delta);
        }
        for p in &t.freeze {
            ensure!(!p.is_empty(), "train.freeze holds an empty pattern");
        }
        if t.zero > 1 {
            bail!("train.zero must be 0 (off) or 1 (ZeRO stage 1: optimizer state sharded), got {}", t.zero);
        }
        if t.eval_interval == 0 || t.eval_iters == 0 || t.log_interval == 0 {
            bail!("train.eval_interval, train.eval_iters and train.log_interval must be positive");
        }
        let o = &self.optim;
        if !(o.learning_rate > 0.0 && o.min_lr >= 0.0) {
            bail!("optim.learning_rate must be positive and optim.min_lr non-negative");
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            bail!("optim.beta1 and optim.beta2 must be in [0, 1)");
        }
        if o.grad_clip < 0.0 || o.clip_value < 0.0 || o.weight_decay() < 0.0 {
            bail!("optim.grad_clip, optim.clip_value and optim.weight_decay must be non-negative");
        }
        o.check_applicable()?;
        Ok(())
    }
}

/// The `[prune]` section of the config saved in checkpoint `dir`, if it has one (an unreadable
/// config is left to the checkpoint loader to report).
fn prune_record_of(dir: &Path) -> Option<crate::compress::prune::PruneRecord> {
    let text = std::fs::read_to_string(dir.join("config.toml")).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table.get("prune")?.clone().try_into().ok()
}

fn describe_span(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].lines().count().max(1);
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("at `{snippet}`")
        }
        None => "in the config".into(),
    }
}

/// `section.key=value`: the value is parsed as TOML (number, bool, string, array), or taken as a
/// plain string when it does not parse.
pub(crate) fn apply_override(table: &mut toml::Table, o: &str) -> Result<()> {
    let Some((key, raw)) = o.split_once('=') else {
        bail!("--set {o:?}: expected section.key=value");
    };
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap(),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        bail!("--set {o:?}: the key must be section.key, e.g. train.max_iters=100");
    }
    let section = table.entry(parts[0]).or_insert_with(|| toml::Value::Table(Default::default()));
    match section {
        toml::Value::Table(t) => {
            t.insert(parts[1].to_string(), value);
            Ok(())
        }
        _ => bail!("--set {o:?}: `{}` is not a section", parts[0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_errors_name_the_key() {
        let c = RunConfig::from_toml_str(
            "[model]\nn_layer = 2\n",
            &["train.max_iters=7".into(), "data.path=a b.txt".into()],
        )
        .unwrap();
        assert_eq!(c.model.n_layer, 2);
        assert_eq!(c.train.max_iters, 7);
        assert_eq!(c.data.path, "a b.txt");
        let e = format!("{:#}", RunConfig::from_toml_str("[model]\nn_layers = 2\n", &[]).unwrap_err());
        assert!(e.contains("n_layers"), "{e}");
        let e = format!("{:#}", RunConfig::from_toml_str("[train]\nmax_iters = \"many\"\n", &[]).unwrap_err());
        assert!(e.contains("max_iters") && e.contains("invalid type"), "{e}");
        let e = format!("{:#}", RunConfig::from_toml_str("[model]\nn_embd = 100\nn_head = 3\n", &[]).unwrap_err());
        assert!(e.contains("multiple of model.n_head"), "{e}");
        let e = format!("{:#}", RunConfig::from_toml_str("[optim]\nmomentum = 0.9\n", &[]).unwrap_err());
        assert!(e.contains("optim.momentum applies to sgd and rmsprop only") && e.contains("adamw"), "{e}");
        let e = format!("{:#}", RunConfig::from_toml_str("[optim]\nname = \"lion\"\n", &[]).unwrap_err());
        assert!(e.contains("lion") && e.contains("adagrad"), "{e}");
        let e =
            format!("{:#}", RunConfig::from_toml_str("[optim]\nname = \"sgd\"\nnesterov = true\n", &[]).unwrap_err());
        assert!(e.contains("nesterov needs momentum"), "{e}");
        let e = format!("{:#}", RunConfig::from_toml_str("[[optim.groups]]\nparams = []\n", &[]).unwrap_err());
        assert!(e.contains("non-empty `params`"), "{e}");
        let c = RunConfig::from_toml_str("[optim]\nname = \"sgd\"\n", &[]).unwrap();
        assert_eq!(c.optim.weight_decay(), 0.0, "torch's SGD default");
        assert_eq!(RunConfig::default().optim.weight_decay(), 0.1, "nanoGPT's AdamW default");
        let c = RunConfig::from_toml_str("[optim]\nname = \"adagrad\"\n", &[]).unwrap();
        assert_eq!(c.optim.eps(), 1e-10);
        let text = "[[optim.groups]]\nparams = [\"embedding\", \"*.bias\"]\nweight_decay = 0.0\nlr_scale = 0.5\n";
        let c = RunConfig::from_toml_str(text, &[]).unwrap();
        assert_eq!(c.optim.groups.len(), 1);
        assert_eq!(RunConfig::from_toml_str(&c.to_toml(), &[]).unwrap(), c, "groups survive the checkpoint round trip");
        let e = format!("{:#}", RunConfig::from_toml_str("", &["nokey".into()]).unwrap_err());
        assert!(e.contains("section.key=value"), "{e}");
        let c = RunConfig::from_toml_str("[train]\nprecision = \"bf16\"\n", &[]).unwrap();
        assert_eq!(c.train.precision, Precision::Bf16);
        assert_eq!(RunConfig::from_toml_str("", &[]).unwrap().train.precision, Precision::Fp32);
        let e = format!("{:#}", RunConfig::from_toml_str("", &["train.precision=fp8".into()]).unwrap_err());
        assert!(e.contains("precision") && e.contains("unknown variant `fp8`") && e.contains("`bf16`"), "{e}");
        let e = format!("{:#}", RunConfig::from_toml_str("", &["train.loss_scale_init=0".into()]).unwrap_err());
        assert!(e.contains("loss_scale_init"), "{e}");
    }
}
