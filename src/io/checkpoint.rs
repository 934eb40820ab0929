//! Training checkpoints: one directory, written atomically.
//!
//! ```text
//! ckpt/
//!   model.safetensors      weights by nanoGPT name (f32); metadata `lmlab_config` (JSON)
//!   optimizer.safetensors  optimizer state per parameter, torch.optim's names: exp_avg.<name>,
//!                          exp_avg_sq.<name>, momentum_buffer.<name>, ...; metadata `optimizer`
//!                          (a LoRA run: its trainable tensors only, the classifier and adapters)
//!   lora.safetensors       a LoRA run's adapters `<layer>.lora_A.weight`, `.lora_B.weight`
//!                          (model.safetensors keeps the frozen base); metadata `lora`
//!   config.toml            the full run config
//!   tokenizer.json         the tokenizer (character vocabulary or BPE)
//!   state.json             step, optimizer name and update count, batch-sampler RNG state, f16
//!                          loss scale, the validation record (best loss, early-stopping count),
//!                          the task's data-order state, CRC32 of every file
//! ```
//! Loading checks every CRC32, so a truncated or corrupted file is reported by name. Writing
//! refuses weights that hold NaN or infinity, so a diverged run never replaces a good checkpoint.

use super::atomic::write_dir_atomic;
use super::tensors::{to_safetensors, TensorFile};
use crate::config::RunConfig;
use crate::data::Tokenizer;
use crate::model::transformer::{is_lora_tensor, Arch, LoraConfig, ModelConfig, Transformer};
use crate::model::LanguageModel;
use crate::optim::{Optimizer, OptimizerState};
use anyhow::{bail, ensure, Context, Result};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const FORMAT: &str = "lmlab-checkpoint-v1";

/// Where training stands, beyond the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// Number of optimizer steps taken.
    pub step: u64,
    /// State of the batch-sampling RNG, so a resumed run draws the same batches.
    pub rng: Xoshiro256PlusPlus,
    /// The evaluations so far (its keys sit beside `step` in state.json; checkpoints from before
    /// they existed load with defaults).
    #[serde(flatten)]
    pub record: EvalRecord,
    /// Task-specific data-order state (translate: the batcher's epoch and position; classify:
    /// the shuffles and position), so that a resumed run sees the same batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<serde_json::Value>,
    /// The f16 loss scaler's scale and count of clean steps (absent in fp32 and bf16 runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<crate::optim::ScalerState>,
}

impl TrainState {
    /// Step 0 of a run of `run`: no evaluation yet, the batch RNG seeded with `train.seed`.
    pub fn fresh(run: &RunConfig) -> Self {
        use rand::SeedableRng;
        TrainState {
            step: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(run.train.seed),
            record: EvalRecord::default(),
            task: None,
            loss_scaler: None,
        }
    }
}

/// What the evaluations of a run have found so far: the best validation loss and its step, the
/// early-stopping count, and the losses of the latest evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalRecord {
    pub best_val_loss: Option<f32>,
    pub best_step: Option<u64>,
    /// Losses of the evaluation at this checkpoint's step.
    pub val_loss: Option<f32>,
    pub train_loss: Option<f32>,
    /// Early stopping: the val loss of the last evaluation that counted as an improvement (lower
    /// than the previous such loss by more than `train.early_stop_min_delta`), and how many
    /// evaluations came since.
    pub early_stop_ref: Option<f32>,
    pub evals_without_improvement: u64,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    model_config: ModelConfig,
    /// Which optimizer wrote `optimizer.safetensors` (checkpoints from before the choice was
    /// configurable hold AdamW state).
    #[serde(default = "adamw")]
    optimizer: String,
    /// The optimizer's update count.
    #[serde(alias = "adam_t")]
    optimizer_steps: u64,
    state: TrainState,
    checksums: BTreeMap<String, u32>,
}

fn adamw() -> String {
    "adamw".into()
}

/// Everything a checkpoint holds, loaded: a Transformer ([`load`]) or any language model
/// ([`load_lm`]; the baselines of `crate::model::baseline`).
pub struct Checkpoint<M = Transformer> {
    pub run_config: RunConfig,
    pub tokenizer: Tokenizer,
    pub model: M,
    /// Optimizer state (absent when loaded for inference only).
    pub optimizer: Option<OptimizerState>,
    pub state: TrainState,
}

impl<M: LanguageModel> Checkpoint<M> {
    /// A clear error when `lmlab COMMAND` meets a checkpoint (loaded from `dir`) of the wrong
    /// kind of model.
    pub fn require_arch(&self, want: Arch, dir: &Path, command: &str) -> Result<()> {
        let got = self.model.config().arch;
        let name = |a: Arch| serde_json::to_string(&a).unwrap_or_default();
        ensure!(
            got == want,
            "lmlab {command} needs a checkpoint with model.arch = {}, but {} holds model.arch = {}",
            name(want),
            dir.display(),
            name(got)
        );
        Ok(())
    }
}

/// A checkpoint's files, encoded once and writable to several directories (`ckpt` and
/// `ckpt_best` get the same bytes).
pub struct CheckpointFiles {
    files: Vec<(&'static str, Vec<u8>)>,
}

impl CheckpointFiles {
    /// Writes the checkpoint as `dir`, atomically replacing any previous one.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let files: Vec<(&str, &[u8])> = self.files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        write_dir_atomic(dir, &files).with_context(|| format!("cannot write checkpoint {}", dir.display()))
    }
}

pub fn save<M: LanguageModel>(
    dir: &Path,
    model: &M,
    opt: &Optimizer,
    run: &RunConfig,
    tok: &Tokenizer,
    state: &TrainState,
) -> Result<()> {
    encode(model, opt, run, tok, state)?.write(dir)
}

/// The files of a checkpoint directory.
pub const FILES: [&str; 6] =
    ["model.safetensors", "optimizer.safetensors", "lora.safetensors", "config.toml", "tokenizer.json", "state.json"];

/// Writes a checkpoint at step 0 of a model that lmlab did not train (an imported one): the
/// default run config with the model's `[model]` section, fresh optimizer state (zeros) and the
/// batch RNG seeded with `train.seed`. It samples and evaluates like any checkpoint, and
/// `lmlab train --resume DIR --set data.path=TEXT` fine-tunes it. An existing `dir` is replaced
/// only if it holds nothing but checkpoint files.
pub fn save_new(dir: &Path, model: &Transformer, tok: &Tokenizer) -> Result<()> {
    let mut run = RunConfig { model: model.config.clone(), ..RunConfig::default() };
    if model.config.arch != crate::model::transformer::Arch::Decoder {
        // An imported encoder has no task yet: fine-tuning gives it one.
        run.data.task = crate::config::Task::Pretrained;
    }
    run.validate()?;
    let opt = run.optim.build(&model.layout)?;
    let state = TrainState::fresh(&run);
    let files = encode(model, &opt, &run, tok, &state)?;
    super::atomic::check_replaceable(dir, &FILES)?;
    files.write(dir)
}

/// `lmlab merge-lora`: loads the LoRA checkpoint `dir`, folds its adapters into the weights
/// (W + (alpha/rank)·B·A, [`Transformer::merge_lora`]) and writes `out`, a plain checkpoint of
/// the same run (config without `[lora]`, the training state and its label names kept, fresh
/// optimizer state) whose outputs equal the adapted model's. Returns the adapters' rank and
/// how many layers were merged.
pub fn save_merged_lora(dir: &Path, out: &Path) -> Result<(usize, usize)> {
    let mut ck = load(dir, 1, false)?;
    let Some(l) = ck.run_config.lora.take() else {
        bail!("{} is not a LoRA checkpoint (its config has no [lora] section)", dir.display())
    };
    let layers = ck.model.layout.tensors.iter().filter(|t| t.name.ends_with(".lora_A.weight")).count();
    ck.model.merge_lora()?;
    let opt = ck.run_config.optim.build(&ck.model.layout)?;
    super::atomic::check_replaceable(out, &FILES)?;
    encode(&ck.model, &opt, &ck.run_config, &ck.tokenizer, &ck.state)?.write(out)?;
    Ok((l.rank, layers))
}

/// What a directory may hold for [`save_quantized`] to replace it: a float checkpoint's files
/// or a quantized one's (`quant.safetensors` instead of the optimizer state).
const QUANT_REPLACEABLE: [&str; 6] =
    ["model.safetensors", "optimizer.safetensors", "quant.safetensors", "config.toml", "tokenizer.json", "state.json"];

/// Writes a model whose linear weights are quantized ([`Transformer::set_quantized`]):
/// `model.safetensors` with its other tensors (f32), `quant.safetensors` with the quantized
/// ones, the run config, the tokenizer and `state.json` (step 0, optimizer "none"). An
/// existing `dir` is replaced only if it holds nothing but checkpoint files.
pub fn save_quantized(dir: &Path, model: &Transformer, run: &RunConfig, tok: &Tokenizer, scheme: &str) -> Result<()> {
    let q = model.quantized().context("the model has no quantized weights")?;
    let is_quantized = |name: &str| q.iter().any(|(n, _)| n == name);
    let mut files: Vec<(&'static str, Vec<u8>)> = vec![
        ("model.safetensors", model_file(model, |name| !is_quantized(name))?),
        ("quant.safetensors", super::quant_checkpoint::encode(scheme, q.iter())?),
        ("config.toml", run.to_toml().into_bytes()),
        ("tokenizer.json", tok.to_json()?.into_bytes()),
    ];
    let checksums = files.iter().map(|(n, b)| (n.to_string(), crc32fast::hash(b))).collect();
    let state = TrainState::fresh(run);
    let state_file = StateFile {
        format: FORMAT.into(),
        model_config: model.config.clone(),
        optimizer: "none".into(),
        optimizer_steps: 0,
        state,
        checksums,
    };
    files.push(("state.json", serde_json::to_vec_pretty(&state_file)?));
    super::atomic::check_replaceable(dir, &QUANT_REPLACEABLE)?;
    CheckpointFiles { files }.write(dir)
}

/// `model.safetensors`: the parameters that `keep` accepts (by name), with the model config as
/// the one metadata key (safetensors writes its metadata map in hash order, and two identical
/// runs must write identical files).
fn model_file<M: LanguageModel>(model: &M, keep: impl Fn(&str) -> bool) -> Result<Vec<u8>> {
    params_file(model, keep, ("lmlab_config", serde_json::to_string(model.config())?))
}

/// The parameters that `keep` accepts, by name, with one metadata entry.
fn params_file<M: LanguageModel>(model: &M, keep: impl Fn(&str) -> bool, meta: (&str, String)) -> Result<Vec<u8>> {
    let params = model.params();
    let weights: Vec<(String, Vec<usize>, &[f32])> = model
        .layout()
        .tensors
        .iter()
        .filter(|t| keep(&t.name))
        .map(|t| (t.name.clone(), t.shape.clone(), &params[t.range()]))
        .collect();
    to_safetensors(&weights, HashMap::from([(meta.0.to_string(), meta.1)]))
}

/// `lora.safetensors`: a LoRA model's adapters, with its `[lora]` settings as metadata.
fn lora_file(model: &Transformer, l: &LoraConfig) -> Result<Vec<u8>> {
    params_file(model, is_lora_tensor, ("lora", serde_json::to_string(l)?))
}

/// Encodes a checkpoint's files. Fails, naming the tensor, when a weight is NaN or infinite:
/// such a checkpoint could not be loaded, and writing it would destroy the last good one.
pub fn encode<M: LanguageModel>(
    model: &M,
    opt: &Optimizer,
    run: &RunConfig,
    tok: &Tokenizer,
    state: &TrainState,
) -> Result<CheckpointFiles> {
    if let Some((name, x)) = model.first_nonfinite_param() {
        bail!("refusing to write a checkpoint at step {}: weight {name} holds {x} (training diverged)", state.step);
    }
    let model_bytes = model_file(model, |name| !is_lora_tensor(name))?;
    let state_bufs = opt.state_tensors();
    // A LoRA run's optimizer holds state for its trainable tail only (`Transformer::lora_window`).
    let window = opt.shard_range().unwrap_or(0..model.layout().total);
    let mut moments = Vec::new();
    for t in model.layout().tensors.iter().filter(|t| t.offset >= window.start) {
        let r = t.offset - window.start..t.offset - window.start + t.numel();
        for (state, buf) in &state_bufs {
            moments.push((format!("{state}.{}", t.name), t.shape.clone(), &buf[r.clone()]));
        }
    }
    let opt_bytes = to_safetensors(&moments, HashMap::from([("optimizer".to_string(), opt.name().to_string())]))?;
    let config_bytes = run.to_toml().into_bytes();
    let tok_bytes = tok.to_json()?.into_bytes();
    let mut files: Vec<(&'static str, Vec<u8>)> = vec![
        ("model.safetensors", model_bytes),
        ("optimizer.safetensors", opt_bytes),
        ("config.toml", config_bytes),
        ("tokenizer.json", tok_bytes),
    ];
    if let Some((t, l)) = model.as_transformer().and_then(|t| Some((t, t.lora()?))) {
        files.push(("lora.safetensors", lora_file(t, l)?));
    }
    let checksums = files.iter().map(|(n, b)| (n.to_string(), crc32fast::hash(b))).collect();
    let state_file = StateFile {
        format: FORMAT.into(),
        model_config: model.config().clone(),
        optimizer: opt.name().into(),
        optimizer_steps: opt.steps(),
        state: state.clone(),
        checksums,
    };
    files.push(("state.json", serde_json::to_vec_pretty(&state_file)?));
    Ok(CheckpointFiles { files })
}

fn read_checked(dir: &Path, name: &str, sums: &BTreeMap<String, u32>) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let bytes =
        std::fs::read(&path).with_context(|| format!("checkpoint file {} is missing or unreadable", path.display()))?;
    let want = sums.get(name).with_context(|| format!("state.json has no checksum for {name}"))?;
    let got = crc32fast::hash(&bytes);
    ensure!(
        got == *want,
        "checkpoint file {} is corrupted or truncated (CRC32 {got:08x}, expected {want:08x}, {} bytes)",
        path.display(),
        bytes.len()
    );
    Ok(bytes)
}

/// Loads a checkpoint. `max_batch` sizes the model's activation buffers; `with_optimizer`
/// also loads the optimizer state (for resuming).
pub fn load(dir: &Path, max_batch: usize, with_optimizer: bool) -> Result<Checkpoint> {
    load_impl(dir, max_batch, with_optimizer, false, None)
}

/// [`load`] or [`load_inference`] (`inference`) for a checkpoint of any language model `M`; the
/// model kind it holds is `model.arch` in `state.json` ([`stored_arch`]), and loading a
/// checkpoint as the wrong kind is an error that names both.
pub fn load_lm<M: LanguageModel>(
    dir: &Path,
    max_batch: usize,
    with_optimizer: bool,
    inference: bool,
) -> Result<Checkpoint<M>> {
    load_impl(dir, max_batch, with_optimizer, inference, None)
}

/// The model config a checkpoint holds (its `state.json`), without loading the weights.
pub fn read_model_config(dir: &Path) -> Result<ModelConfig> {
    Ok(read_state_file(dir)?.model_config)
}

/// The `model.arch` a checkpoint holds (read from its `state.json`), to choose the model type
/// to load it as.
pub fn stored_arch(dir: &Path) -> Result<Arch> {
    Ok(read_state_file(dir)?.model_config.arch)
}

fn read_state_file(dir: &Path) -> Result<StateFile> {
    ensure!(dir.is_dir(), "checkpoint directory {} does not exist", dir.display());
    let state_path = dir.join("state.json");
    let state_text =
        std::fs::read_to_string(&state_path).with_context(|| format!("cannot read {}", state_path.display()))?;
    let sf: StateFile =
        serde_json::from_str(&state_text).with_context(|| format!("{} is corrupted", state_path.display()))?;
    ensure!(sf.format == FORMAT, "{} has format {:?}, expected {FORMAT:?}", state_path.display(), sf.format);
    Ok(sf)
}

/// Loads a checkpoint's model for inference only ([`Transformer::new_inference`]: no
/// gradients, activation buffers shared by the blocks), without the optimizer state.
pub fn load_inference(dir: &Path, max_batch: usize) -> Result<Checkpoint> {
    load_impl(dir, max_batch, false, true, None)
}

/// [`load_inference`] with the model built for `block_size` tokens instead of the context it
/// was trained at, to measure how it extrapolates to longer (or shorter) inputs. Position
/// schemes without a table of trained rows (none, sinusoidal, Shaw, T5, RoPE, ALiBi) read any
/// length; a learned table has exactly the trained context's rows, and asking it for more is
/// an error saying so (a shorter context keeps the table and reads its first rows).
pub fn load_inference_at_context(dir: &Path, max_batch: usize, block_size: usize) -> Result<Checkpoint> {
    load_impl(dir, max_batch, false, true, Some(block_size))
}

fn load_impl<M: LanguageModel>(
    dir: &Path,
    max_batch: usize,
    with_optimizer: bool,
    inference: bool,
    block_size: Option<usize>,
) -> Result<Checkpoint<M>> {
    let mut sf = read_state_file(dir)?;
    if let Some(block) = block_size {
        use crate::model::transformer::Position;
        let trained = sf.model_config.block_size;
        ensure!(block > 0, "a context of 0 tokens");
        ensure!(
            block <= trained || sf.model_config.position != Position::Learned,
            "{} has learned positions: a ({trained}, C) table trained for {trained} tokens, with no row for \
             position {trained} or later, so it cannot read {block} tokens (train at that context, or use a \
             scheme without a table: sinusoidal, shaw, t5, rope, alibi)",
            dir.display()
        );
        // A learned table keeps its trained rows; a shorter input simply uses the first ones.
        if sf.model_config.position != Position::Learned {
            sf.model_config.block_size = block;
        }
    }

    let run_config =
        RunConfig::from_toml_str(&String::from_utf8(read_checked(dir, "config.toml", &sf.checksums)?)?, &[])
            .context("checkpoint config.toml")?;
    let tokenizer = Tokenizer::from_json(&String::from_utf8(read_checked(dir, "tokenizer.json", &sf.checksums)?)?)?;
    ensure!(
        tokenizer.vocab_size() == sf.model_config.vocab_size,
        "tokenizer has {} tokens but the model expects vocab_size {}",
        tokenizer.vocab_size(),
        sf.model_config.vocab_size
    );

    let model_bytes = read_checked(dir, "model.safetensors", &sf.checksums)?;
    let tf = TensorFile::parse(&model_bytes, "model.safetensors")?;
    let mut model = M::build(sf.model_config.clone(), max_batch, inference).with_context(|| {
        format!("checkpoint {} holds model.arch = \"{}\"", dir.display(), sf.model_config.arch.name())
    })?;
    if sf.checksums.contains_key("quant.safetensors") {
        let Some(t) = model.as_transformer_mut() else {
            bail!("{}: only Transformers are quantized", dir.display());
        };
        ensure!(
            !with_optimizer,
            "{} is a quantized checkpoint: it has no optimizer state and cannot be trained or resumed",
            dir.display()
        );
        let (_, mats) = super::quant_checkpoint::decode(&read_checked(dir, "quant.safetensors", &sf.checksums)?)?;
        let quantized: Vec<&str> = mats.iter().map(|(n, _)| n.as_str()).collect();
        load_params_except(t, &tf, &quantized)?;
        for (name, m) in mats {
            t.set_quantized(&name, m).with_context(|| format!("quant.safetensors: tensor {name}"))?;
        }
        ensure!(t.params.iter().all(|x| x.is_finite()), "quant.safetensors holds NaN or infinite weights");
        return Ok(Checkpoint { run_config, tokenizer, model, optimizer: None, state: sf.state });
    }
    load_params(&mut model, &tf)?;
    if let Some(l) = &run_config.lora {
        let Some(model) = model.as_transformer_mut() else {
            bail!("{}: [lora] adapts Transformers only", dir.display());
        };
        // The adapters: added to the base model as the run added them, then read back.
        model.add_lora(l, run_config.train.seed).with_context(|| format!("checkpoint {}: [lora]", dir.display()))?;
        let bytes = read_checked(dir, "lora.safetensors", &sf.checksums)?;
        let lf = TensorFile::parse(&bytes, "lora.safetensors")?;
        for t in model.layout.tensors.iter().filter(|t| is_lora_tensor(&t.name)) {
            lf.read_f32_into(&t.name, &t.shape, &mut model.params[t.range()])?;
        }
        ensure!(
            lf.st.names().len() == model.layout.tensors.iter().filter(|t| is_lora_tensor(&t.name)).count(),
            "{}: lora.safetensors holds adapters for layers that [lora] targets do not name",
            dir.display()
        );
        if let Some((name, _)) = model.first_nonfinite_param() {
            bail!("{}: lora.safetensors: {name} holds NaN or infinity", dir.display());
        }
    }

    let optimizer = if with_optimizer {
        let bytes = read_checked(dir, "optimizer.safetensors", &sf.checksums)?;
        let of = TensorFile::parse(&bytes, "optimizer.safetensors")?;
        // Buffer names are the prefixes before the first '.' (parameter names have dots).
        let mut names: Vec<&str> = of.st.names().iter().filter_map(|n| n.split_once('.').map(|(s, _)| s)).collect();
        names.sort_unstable();
        names.dedup();
        let mut buffers = Vec::new();
        // A LoRA run keeps state for its trainable tail only.
        let window = model.as_transformer().and_then(|t| t.lora_window()).unwrap_or(0..model.layout().total);
        for state in names {
            let mut buf = vec![0.0; window.len()];
            for t in model.layout().tensors.iter().filter(|t| t.offset >= window.start) {
                let r = t.offset - window.start..t.offset - window.start + t.numel();
                of.read_f32_into(&format!("{state}.{}", t.name), &t.shape, &mut buf[r])?;
            }
            buffers.push((state.to_string(), buf));
        }
        Some(OptimizerState { name: sf.optimizer.clone(), steps: sf.optimizer_steps, buffers })
    } else {
        None
    };
    Ok(Checkpoint { run_config, tokenizer, model, optimizer, state: sf.state })
}

/// Copies every parameter of `model` from `tf` by name, checking shapes.
pub fn load_params<M: LanguageModel>(model: &mut M, tf: &TensorFile) -> Result<()> {
    load_params_except(model, tf, &[])
}

/// [`load_params`] for every parameter but those named in `absent` (a quantized checkpoint's
/// quantized weights), which `tf` must not hold.
fn load_params_except<M: LanguageModel>(model: &mut M, tf: &TensorFile, absent: &[&str]) -> Result<()> {
    let mut names: Vec<&str> = tf.st.names().into_iter().map(|s| s.as_str()).collect();
    names.sort();
    let tensors = model.layout().tensors.clone();
    for t in &tensors {
        if absent.contains(&t.name.as_str()) {
            ensure!(tf.st.tensor(&t.name).is_err(), "{} is both in model.safetensors and quantized", t.name);
            continue;
        }
        tf.read_f32_into(&t.name, &t.shape, &mut model.params_mut()[t.range()])?;
    }
    if let Some(extra) = names.iter().find(|n| model.layout().get(n).is_none()) {
        bail!("model.safetensors has a tensor {extra} that this model does not have");
    }
    if model.params().iter().any(|x| !x.is_finite()) {
        bail!("model.safetensors contains NaN or infinite weights");
    }
    Ok(())
}
