//! Question 11: making it efficient. Five measurements, each on lmlab's own code path:
//!
//! 1. Attention against sequence length: one layer's causal attention core with the dense kernel
//!    (`kernels::attention`, which keeps the (NH, T, T) probabilities and their gradient) and with
//!    flash attention (`kernels::flash_attention`, which keeps the (NH, T) log-sum-exp and fixed
//!    tiles): forward and backward time, the exact bytes of the buffers each keeps, the peak
//!    resident memory of a `lmlab bench --case attn-KIND-T` process (when this is the lmlab
//!    binary), and both outputs compared. For the trained model as a whole, its training
//!    activations at each length with either kernel (`inspect::account::memory`).
//! 2. Number formats: the experiment's arms (fp32, bf16, f16 products), each trained through
//!    `train::train` from the same seed: time per step, the losses reached, and the training
//!    memory the accounting gives for each.
//! 3. The KV cache: greedy generation from the fp32 model with the ordinary cached decoder
//!    (`infer::sample::generate`) against re-running the whole prefix through `forward_lm` for
//!    every token (the same sampling loop, `generate_with`, over [`Recompute`]): time per token
//!    against the number generated, and whether both pick the same tokens.
//! 4. Compression without retraining: the fp32 model quantized (`compress::quantize`) and pruned
//!    (`compress::prune`): weight bytes, validation loss (`eval::perplexity`), decode speed.
//! 5. Data parallelism: `mpirun -np N lmlab train` (one thread per rank) when this binary was built
//!    with MPI support and `mpirun` is on the PATH; otherwise recorded as not measured, with why.

use super::sweep::{draw, drop_weights, slug};
use super::{base_config, new_result, Budget, ExplainResult, Question, Spec, Table};
use crate::compress::prune::{prune_model, Method, Pattern, PruneSpec};
use crate::compress::quantize::{calibration_windows, quantize_model, quantize_model_gptq, KeepFloat, Scheme};
use crate::config::RunConfig;
use crate::eval::perplexity::sliding_window_eval;
use crate::infer::sample::{generate, generate_with, NextToken, SampleOptions};
use crate::inspect::account::{memory, MemoryQuery};
use crate::inspect::plot::{read_metrics, XyChart, XySeries};
use crate::io::checkpoint;
use crate::kernels::precision::Precision;
use crate::model::transformer::Transformer;
use crate::train::{train, TrainOptions};
use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The attention sweep's shape: batch 1, 6 heads of 64 (the M model's, as `lmlab bench`'s
/// `attn-dense-T` / `attn-flash-T` cases, whose processes give the measured peak memory).
const ATTN_HEADS: usize = 6;
const ATTN_HEAD_SIZE: usize = 64;
/// Rows of the loaded model for the validation loss (windows evaluated together).
const EVAL_BATCH: usize = 16;
/// Generations per repeat when timing decoding speed (the fastest counts).
const DECODE_RUNS: usize = 3;
/// Tokens of the prompt generation starts from (the first validation token).
const PROMPT_TOKENS: usize = 1;

/// What the experiment measures at one budget (`[quick.efficiency]`, `[full.efficiency]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Plan {
    /// Sequence lengths of the attention sweep.
    pub attention_lengths: Vec<usize>,
    /// Timed forward + backward passes per kernel and length (after one untimed).
    pub attention_iters: usize,
    /// Numbers of tokens generated, with and without the KV cache (at most `block_size`).
    pub generate_lengths: Vec<usize>,
    /// Timed runs of each generation (the median is reported).
    pub repeats: usize,
    /// Validation tokens the compressed models are scored on (at most the validation split).
    pub eval_tokens: usize,
    /// Quantization schemes (`lmlab quantize --scheme`: int8, int4, q4_0, gptq4-g32, ...).
    pub quantize: Vec<String>,
    /// Pruning points.
    pub prune: Vec<PrunePoint>,
    /// Windows of `block_size` training tokens for GPTQ and Wanda.
    pub calibration_windows: usize,
    /// Rank counts of the MPI measurement (none: not measured).
    #[serde(default)]
    pub mpi_ranks: Vec<usize>,
    /// Training steps of each MPI run.
    #[serde(default)]
    pub mpi_steps: u64,
}

/// One pruning of the fp32 model: `method` (magnitude, magnitude-layer, wanda) with either an
/// unstructured `sparsity` or an `nm` pattern ("2:4").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrunePoint {
    pub method: String,
    #[serde(default)]
    pub sparsity: Option<f64>,
    #[serde(default)]
    pub nm: Option<String>,
}

impl PrunePoint {
    fn spec(&self) -> Result<PruneSpec> {
        let pattern = match (self.sparsity, &self.nm) {
            (Some(s), None) => Pattern::unstructured(s)?,
            (None, Some(nm)) => Pattern::parse_nm(nm)?,
            _ => bail!("a prune point has either `sparsity` or `nm`, got {self:?}"),
        };
        Ok(PruneSpec { method: Method::parse(&self.method)?, pattern, include_head: false })
    }

    fn name(&self) -> String {
        match (self.sparsity, &self.nm) {
            (Some(s), _) => format!("{} {:.0}%", self.method, 100.0 * s),
            (_, nm) => format!("{} {}", self.method, nm.as_deref().unwrap_or("")),
        }
    }
}

/// Checks a budget's plan against the run config it will train (without running anything).
pub(crate) fn check_plan(plan: Option<&Plan>, cfg: &RunConfig) -> Result<()> {
    let plan = plan.context("an efficiency experiment needs a [quick.efficiency] and a [full.efficiency] table")?;
    ensure!(
        !plan.attention_lengths.is_empty() && plan.attention_lengths.iter().all(|&t| t > 0),
        "attention_lengths must be positive lengths"
    );
    ensure!(plan.attention_iters > 0 && plan.repeats > 0, "attention_iters and repeats must be at least 1");
    let block = cfg.model.block_size;
    ensure!(
        !plan.generate_lengths.is_empty()
            && plan.generate_lengths.iter().all(|&n| n > 0 && n + PROMPT_TOKENS - 1 <= block),
        "generate_lengths must be in 1..={block} (model.block_size, so that no step crops the context)"
    );
    ensure!(plan.eval_tokens > block, "eval_tokens must exceed model.block_size ({block})");
    for s in &plan.quantize {
        Scheme::parse(s)?;
    }
    for p in &plan.prune {
        p.spec()?;
    }
    ensure!(plan.calibration_windows > 0, "calibration_windows must be at least 1");
    ensure!(plan.mpi_ranks.iter().all(|&n| n > 0), "mpi_ranks must be positive");
    ensure!(plan.mpi_ranks.is_empty() || plan.mpi_steps > 0, "mpi_steps must be at least 1");
    Ok(())
}

/// One kernel at one sequence length.
#[derive(Clone, Debug, Serialize)]
struct AttnPoint {
    kernel: &'static str,
    t: usize,
    /// Medians over the timed passes.
    forward_ms: f64,
    backward_ms: f64,
    /// Bytes of what the kernel keeps beyond its inputs and outputs: dense 2·NH·T² floats (the
    /// probabilities and their gradient); flash NH·T (log-sum-exp) + NH·scratch_per_head(T).
    buffer_bytes: u64,
    /// Peak resident memory of a `lmlab bench --case attn-KIND-T --iters 1` process.
    bench_peak_rss_bytes: Option<u64>,
}

/// Dense against flash at one length: the largest differences of their outputs.
#[derive(Clone, Debug, Serialize)]
struct AttnAgreement {
    t: usize,
    max_abs_diff_out: f64,
    max_abs_diff_dqkv: f64,
}

/// The whole trained model's training activations at one context (`inspect::account`).
#[derive(Clone, Debug, Serialize)]
struct ModelActivations {
    context: usize,
    batch: usize,
    dense_bytes: u64,
    flash_bytes: Option<u64>,
}

/// One arm of the number-format comparison.
#[derive(Clone, Debug, Serialize)]
struct FormatRun {
    arm: String,
    precision: &'static str,
    steps: u64,
    val_loss: f64,
    train_loss: f64,
    ms_per_iter: f64,
    seconds: f64,
    /// (iteration, val loss) of every evaluation.
    val_curve: Vec<(f64, f64)>,
    /// Accounted training memory (weights, low-precision copy, gradients, optimizer state,
    /// activations) and the low-precision copy alone.
    training_bytes: u64,
    low_precision_copy_bytes: u64,
}

/// Generating `tokens` tokens with and without the KV cache.
#[derive(Clone, Debug, Serialize)]
struct GenPoint {
    tokens: usize,
    /// Medians over the repeats, divided by `tokens`.
    cached_ms_per_token: f64,
    recompute_ms_per_token: f64,
    /// Token positions run through the model: the prompt and one per step with the cache; the
    /// whole context at every step without it.
    cached_positions: usize,
    recompute_positions: usize,
    /// Bytes of the keys and values cached for the final context (`kv_cache_per_token` × length).
    kv_cache_bytes: u64,
    same_tokens: bool,
    /// The first position where the two generations differ.
    first_difference: Option<usize>,
}

/// The fp32 model, quantized or pruned.
#[derive(Clone, Debug, Serialize)]
struct CompressPoint {
    /// "fp32", "quantize" or "prune".
    kind: &'static str,
    name: String,
    /// Bytes of the weights as a checkpoint stores them (`Transformer::weight_bytes`).
    weight_bytes: u64,
    /// Linear weights quantized or pruned.
    tensors: usize,
    /// Zeros among the pruned tensors' weights (pruning).
    sparsity: Option<f64>,
    val_loss: f64,
    perplexity: f64,
    /// Greedy decoding with the KV cache, the fastest of several runs (none for pruning: the zeros are stored and multiplied
    /// as dense weights, so it runs as fast as fp32).
    decode_tokens_per_s: Option<f64>,
    /// Time to quantize or prune.
    seconds: f64,
}

/// One MPI run.
#[derive(Clone, Debug, Serialize)]
struct MpiPoint {
    ranks: usize,
    threads_per_rank: usize,
    steps: u64,
    ms_per_iter: f64,
    /// batch_size × ranks × block_size: the global batch grows with the ranks.
    tokens_per_step: usize,
    tokens_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
struct Distributed {
    points: Vec<MpiPoint>,
    /// Why it was not measured (None when it was).
    not_measured: Option<String>,
}

pub(super) fn run(q: &Question, spec: &Spec, budget: Budget, dir: &Path, threads: usize) -> Result<ExplainResult> {
    let base = base_config(spec.base.as_deref().context("an efficiency experiment needs `base`")?)?;
    let b = spec.budget(budget);
    ensure!(!spec.arms.is_empty(), "experiments/{}.toml has no arms (the number formats)", q.id);
    let seed = b.seeds.first().copied().unwrap_or(1);
    let mut result = new_result(q, spec, budget, vec![seed]);
    let exe = lmlab_exe();
    let load_start = load_average();

    // Every arm's run config, and the plan checked against it, before anything runs.
    let plan = b.efficiency.as_ref();
    let mut arms = Vec::new();
    for arm in &spec.arms {
        let run_dir = dir.join("runs").join(slug(&arm.name));
        let mut set = b.set.clone();
        set.extend(arm.overrides(budget));
        set.extend(super::run_overrides(seed, &run_dir, threads));
        let cfg = RunConfig::from_toml_str(base, &set)
            .with_context(|| format!("experiments/{}.toml, arm {:?}", q.id, arm.name))?;
        check_plan(plan, &cfg).with_context(|| format!("experiments/{}.toml, budget {}", q.id, budget.name()))?;
        arms.push((arm, cfg, run_dir));
    }
    let plan = plan.expect("check_plan requires it");
    ensure!(
        arms.iter().any(|(_, cfg, _)| cfg.train.precision == Precision::Fp32),
        "experiments/{}.toml needs an fp32 arm: its model is the one generated from and compressed",
        q.id
    );

    // 1. Attention kernels against length.
    let (attn, agreement, rss_error) = attention_sweep(plan, threads, exe.as_deref())?;

    // 2. Number formats: every arm trained from the same seed.
    let mut formats = Vec::new();
    let mut fp32: Option<(PathBuf, RunConfig, PathBuf)> = None;
    for (arm, cfg, run_dir) in arms {
        result.configs.push((arm.name.clone(), cfg.to_toml()));
        let s = train(cfg.clone(), None, &TrainOptions { quiet: true, json: false })
            .with_context(|| format!("training arm {:?}", arm.name))?;
        let m = read_metrics(&run_dir.join("metrics.jsonl"))?;
        let model_cfg = checkpoint::load_inference(&s.checkpoint, 1)?.model.config;
        let mem = memory(
            &model_cfg,
            &MemoryQuery {
                batch: cfg.train.batch_size,
                context: model_cfg.block_size,
                precision: cfg.train.precision,
                optimizer: cfg.optim.optimizer(),
            },
        )?;
        formats.push(FormatRun {
            arm: arm.name.clone(),
            precision: cfg.train.precision.name(),
            steps: s.steps,
            val_loss: s.val_loss as f64,
            train_loss: s.train_loss as f64,
            ms_per_iter: s.ms_per_iter,
            seconds: s.seconds,
            val_curve: m.eval_val.points.clone(),
            training_bytes: mem.training_total,
            low_precision_copy_bytes: mem.low_precision_copy,
        });
        if cfg.train.precision == Precision::Fp32 && fp32.is_none() {
            fp32 = Some((s.checkpoint.clone(), cfg, run_dir));
        } else {
            drop_weights(&run_dir);
        }
    }
    let (ckpt, cfg, fp32_dir) = fp32.expect("checked: an fp32 arm");

    let mut ck = checkpoint::load_inference(&ckpt, EVAL_BATCH)?;
    let model_cfg = ck.model.config.clone();
    let block = model_cfg.block_size;
    let text = crate::util::read_corpus(Path::new(&cfg.data.path))?;
    let split = crate::data::TokenDataset::split(ck.tokenizer.encode(&text)?, cfg.data.val_fraction)?;
    ensure!(split.val.len() > block + 1, "the validation split is shorter than one window of {} tokens", block + 1);
    let val = &split.val[..plan.eval_tokens.min(split.val.len())];
    let prompt = &split.val[..PROMPT_TOKENS];
    let calib = calibration_windows(&split.train, block, plan.calibration_windows);
    let mem = memory(
        &model_cfg,
        &MemoryQuery { batch: 1, context: block, precision: Precision::Fp32, optimizer: cfg.optim.optimizer() },
    )?;
    let model_acts = plan
        .attention_lengths
        .iter()
        .map(|&t| {
            let q = MemoryQuery {
                batch: cfg.train.batch_size,
                context: t,
                precision: Precision::Fp32,
                optimizer: cfg.optim.optimizer(),
            };
            let m = memory(&model_cfg, &q)?;
            Ok(ModelActivations {
                context: t,
                batch: q.batch,
                dense_bytes: m.activations,
                flash_bytes: m.activations_flash,
            })
        })
        .collect::<Result<Vec<_>>>()?;

    // 3. The KV cache.
    let generation = kv_cache_sweep(&mut ck.model, prompt, plan, mem.kv_cache_per_token)?;

    // 4. Compression of the fp32 model.
    let decode_len = *plan.generate_lengths.iter().max().expect("checked: at least one length");
    let score = |m: &mut Transformer| sliding_window_eval(m, val, block + 1, block);
    let mut compressed = Vec::new();
    let e = score(&mut ck.model)?;
    compressed.push(CompressPoint {
        kind: "fp32",
        name: "fp32".into(),
        weight_bytes: ck.model.weight_bytes() as u64,
        tensors: 0,
        sparsity: None,
        val_loss: e.loss,
        perplexity: e.perplexity,
        decode_tokens_per_s: Some(decode_speed(&mut ck.model, prompt, decode_len, DECODE_RUNS * plan.repeats)?),
        seconds: 0.0,
    });
    drop(ck);
    for name in &plan.quantize {
        let scheme = Scheme::parse(name)?;
        let mut model = checkpoint::load_inference(&ckpt, EVAL_BATCH)?.model;
        let start = Instant::now();
        let names = match scheme {
            Scheme::Gptq { rtn: false, .. } => quantize_model_gptq(&mut model, scheme, KeepFloat::default(), &calib)?,
            _ => quantize_model(&mut model, scheme, KeepFloat::default())?,
        };
        let seconds = start.elapsed().as_secs_f64();
        let e = score(&mut model).with_context(|| format!("scoring the {name} model"))?;
        compressed.push(CompressPoint {
            kind: "quantize",
            name: name.clone(),
            weight_bytes: model.weight_bytes() as u64,
            tensors: names.len(),
            sparsity: None,
            val_loss: e.loss,
            perplexity: e.perplexity,
            decode_tokens_per_s: Some(decode_speed(&mut model, prompt, decode_len, DECODE_RUNS * plan.repeats)?),
            seconds,
        });
    }
    for point in &plan.prune {
        let mut model = checkpoint::load_inference(&ckpt, EVAL_BATCH)?.model;
        let start = Instant::now();
        let pruned = prune_model(&mut model, &point.spec()?, &calib, &mut |_, _| {})?;
        let seconds = start.elapsed().as_secs_f64();
        let (zeros, total) = pruned.iter().fold((0, 0), |(z, n), t| (z + t.pruned, n + t.numel));
        let e = score(&mut model).with_context(|| format!("scoring the {} model", point.name()))?;
        compressed.push(CompressPoint {
            kind: "prune",
            name: point.name(),
            weight_bytes: model.weight_bytes() as u64,
            tensors: pruned.len(),
            sparsity: Some(zeros as f64 / total.max(1) as f64),
            val_loss: e.loss,
            perplexity: e.perplexity,
            decode_tokens_per_s: None,
            seconds,
        });
    }

    // 5. Data parallelism over MPI.
    let distributed = distributed(plan, &cfg, dir, exe.as_deref());
    drop_weights(&fp32_dir);

    let isa = crate::kernels::isa::Isa::active().name();
    let bf16_path = if crate::kernels::gemm::bf16_gemm_in_use() {
        "the vdpbf16ps GEMM (bf16 pairs, f32 accumulation)".to_string()
    } else {
        "the f32 GEMM on bf16-rounded operands".to_string()
    };
    let probe = crate::kernels::gemm::bf16_probe_ratio();
    let load = load_start.zip(load_average());

    result.charts = charts(&attn, &formats, &generation, &compressed, &distributed, dir)?;
    result.table = table(&attn, &formats, &generation, &compressed, &distributed);
    result.findings = findings(&Numbers {
        attn: &attn,
        agreement: &agreement,
        rss_error: rss_error.as_deref(),
        model_acts: &model_acts,
        formats: &formats,
        bf16_path: &bf16_path,
        isa: &isa,
        generation: &generation,
        compressed: &compressed,
        distributed: &distributed,
        eval_tokens: val.len(),
        load,
    });
    result.data = serde_json::json!({
        "attention": {
            "batch": 1, "heads": ATTN_HEADS, "head_size": ATTN_HEAD_SIZE, "points": attn,
            "dense_vs_flash": agreement, "bench_rss_error": rss_error, "model_activations": model_acts,
        },
        "formats": { "arms": formats, "isa": isa, "bf16_products": bf16_path, "bf16_probe_ratio": probe },
        "kv_cache": { "prompt_tokens": PROMPT_TOKENS, "kv_cache_bytes_per_token": mem.kv_cache_per_token,
                      "points": generation },
        "compression": { "eval_tokens": val.len(), "calibration_windows": calib.len(),
                         "decode_tokens": decode_len, "points": compressed },
        "distributed": distributed,
        "load_average_1min": load.map(|(a, b)| serde_json::json!({ "start": a, "end": b })),
    });
    Ok(result)
}

/// This process's executable when it is the lmlab binary (the experiment then starts `lmlab
/// bench` and `mpirun lmlab train` processes); None inside another program (a test harness).
fn lmlab_exe() -> Option<PathBuf> {
    std::env::current_exe().ok().filter(|p| p.file_stem().is_some_and(|s| s == "lmlab"))
}

/// The 1-minute load average (/proc/loadavg; None elsewhere): how busy the CPU was.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
}

/// Part 1: both kernels at every length (forward, backward, their buffers), and how far their
/// outputs differ. Returns the points, the agreements and, where the peak memory of the bench
/// processes could not be measured, why.
#[allow(clippy::type_complexity)]
fn attention_sweep(
    plan: &Plan,
    threads: usize,
    exe: Option<&Path>,
) -> Result<(Vec<AttnPoint>, Vec<AttnAgreement>, Option<String>)> {
    use crate::kernels::{attention, flash_attention as fa};
    let (nh, c) = (ATTN_HEADS, ATTN_HEADS * ATTN_HEAD_SIZE);
    let rss = bench_peaks(plan, threads, exe);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let (mut points, mut agreement) = (Vec::new(), Vec::new());
    for &t in &plan.attention_lengths {
        // qkv (1, T, 3C), dout (1, T, C): the same inputs for both kernels.
        let qkv: Vec<f32> = (0..t * 3 * c).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let dout: Vec<f32> = (0..t * c).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut outputs: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
        for kernel in ["dense", "flash"] {
            let dense = kernel == "dense";
            let mut out = vec![0.0f32; t * c];
            let mut dqkv = vec![0.0f32; t * 3 * c];
            // dense: att and datt (1, NH, T, T); flash: lse (1, NH, T) and per-head scratch.
            let (big, small) = if dense { (nh * t * t, nh * t * t) } else { (nh * t, nh * fa::scratch_per_head(t)) };
            let (mut big_buf, mut small_buf) = (vec![0.0f32; big], vec![0.0f32; small]);
            let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
            for i in 0..=plan.attention_iters {
                let start = Instant::now();
                if dense {
                    attention::attention_forward(&mut out, &mut big_buf, None, &qkv, 1, t, c, nh);
                } else {
                    fa::flash_attention_forward(&mut out, &mut big_buf, &mut small_buf, &qkv, 1, t, c, nh);
                }
                let mid = Instant::now();
                if dense {
                    attention::attention_backward(&mut dqkv, &mut small_buf, &dout, &qkv, &big_buf, None, 1, t, c, nh);
                } else {
                    fa::flash_attention_backward(&mut dqkv, &mut small_buf, &dout, &qkv, &out, &big_buf, 1, t, c, nh);
                }
                // The first pass is a warm-up (page faults, caches).
                if i > 0 {
                    fwd.push((mid - start).as_secs_f64() * 1e3);
                    bwd.push(mid.elapsed().as_secs_f64() * 1e3);
                }
            }
            points.push(AttnPoint {
                kernel,
                t,
                forward_ms: median(&mut fwd),
                backward_ms: median(&mut bwd),
                buffer_bytes: 4 * (big + small) as u64,
                bench_peak_rss_bytes: rss.0.iter().find(|(k, n, _)| *k == kernel && *n == t).and_then(|r| r.2),
            });
            outputs.push((out, dqkv));
        }
        agreement.push(AttnAgreement {
            t,
            max_abs_diff_out: max_abs_diff(&outputs[0].0, &outputs[1].0),
            max_abs_diff_dqkv: max_abs_diff(&outputs[0].1, &outputs[1].1),
        });
    }
    Ok((points, agreement, rss.1))
}

/// The peak resident memory of a `lmlab bench` process for each kernel and length, run before
/// this process allocates anything large: a child's peak (getrusage) starts from its parent's
/// at the fork, so a peak no higher than ours is not a measurement and is left out. Returns
/// (kernel, T, bytes) and, if some are missing, why.
#[allow(clippy::type_complexity)]
fn bench_peaks(
    plan: &Plan,
    threads: usize,
    exe: Option<&Path>,
) -> (Vec<(&'static str, usize, Option<u64>)>, Option<String>) {
    let Some(exe) = exe else {
        return (Vec::new(), Some("the experiment runs inside another program, not the lmlab binary".into()));
    };
    let own_peak = crate::util::peak_rss_bytes();
    let mut out = Vec::new();
    let mut why = None;
    for &t in &plan.attention_lengths {
        for kernel in ["dense", "flash"] {
            let peak = match bench_peak_rss(exe, kernel, t, threads) {
                Ok(b) if b > own_peak => Some(b),
                Ok(_) => {
                    why.get_or_insert(format!(
                        "at T = {t} the {kernel} process peaked no higher than this one ({}), whose peak a child inherits",
                        mib(own_peak)
                    ));
                    None
                }
                Err(e) => {
                    why.get_or_insert(format!("{e:#}"));
                    None
                }
            };
            out.push((kernel, t, peak));
        }
    }
    (out, why)
}

/// Peak resident bytes of a `lmlab bench --case attn-KIND-T` process (one pass, no warm-up).
fn bench_peak_rss(exe: &Path, kernel: &str, t: usize, threads: usize) -> Result<u64> {
    let case = format!("attn-{kernel}-{t}");
    let out = Command::new(exe)
        .args(["bench", "--case", &case, "--iters", "1", "--warmup", "0", "--json", "--threads"])
        .arg(threads.to_string())
        .output()
        .with_context(|| format!("cannot start {} bench", exe.display()))?;
    ensure!(out.status.success(), "lmlab bench --case {case} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("lmlab bench --case {case} printed no JSON result"))?;
    Ok(v["peak_rss_kb"].as_u64().with_context(|| format!("lmlab bench --case {case}: no peak_rss_kb"))? * 1024)
}

/// Generation without a KV cache: every step runs the whole context (its last `block_size`
/// tokens) through the ordinary forward pass and reads the last position's logits.
struct Recompute<'a> {
    model: &'a mut Transformer,
}

impl NextToken for Recompute<'_> {
    fn vocab_size(&self) -> usize {
        self.model.config.vocab_size
    }
    fn start(&mut self, ctx: &[u32]) -> Result<&[f32]> {
        let window = &ctx[ctx.len().saturating_sub(self.model.config.block_size)..];
        let (t, v) = (window.len(), self.model.config.vocab_size);
        self.model.forward_lm(window, None, 1, t, false, 0)?;
        Ok(&self.model.logits()[(t - 1) * v..t * v])
    }
    fn extend(&mut self, ctx: &[u32]) -> Result<&[f32]> {
        self.start(ctx)
    }
}

fn greedy(tokens: usize) -> SampleOptions {
    SampleOptions { max_new_tokens: tokens, temperature: 0.0, top_k: None, ..SampleOptions::default() }
}

/// Part 3: greedy generation of each length with the cache and by recomputation.
fn kv_cache_sweep(model: &mut Transformer, prompt: &[u32], plan: &Plan, kv_per_token: u64) -> Result<Vec<GenPoint>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut points = Vec::new();
    for &n in &plan.generate_lengths {
        let opts = greedy(n);
        let (mut cached_ms, mut recompute_ms) = (Vec::new(), Vec::new());
        let (mut cached, mut recomputed) = (Vec::new(), Vec::new());
        for _ in 0..plan.repeats {
            let start = Instant::now();
            cached = generate(model, prompt, &opts, &mut rng, |_| {})?;
            cached_ms.push(start.elapsed().as_secs_f64() * 1e3);
            let start = Instant::now();
            recomputed = generate_with(&mut Recompute { model: &mut *model }, prompt, &opts, &mut rng, |_| {})?;
            recompute_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let (cached_positions, recompute_positions) = positions_run(prompt.len(), n);
        points.push(GenPoint {
            tokens: n,
            cached_ms_per_token: median(&mut cached_ms) / n as f64,
            recompute_ms_per_token: median(&mut recompute_ms) / n as f64,
            cached_positions,
            recompute_positions,
            kv_cache_bytes: kv_per_token * cached_positions as u64,
            same_tokens: cached == recomputed,
            first_difference: cached.iter().zip(&recomputed).position(|(a, b)| a != b),
        });
    }
    Ok(points)
}

/// Token positions the model runs to generate `n` tokens after a prompt of `p`: with the cache
/// the prompt and then one per step (the last token is never fed back), so p + n − 1; without
/// it the whole context at every step, p + (p + 1) + … + (p + n − 1).
fn positions_run(p: usize, n: usize) -> (usize, usize) {
    (p + n - 1, (0..n).map(|k| p + k).sum())
}

/// Greedy decoding speed with the KV cache, in tokens per second: the fastest of `runs` (the
/// run least disturbed by other processes; one generation takes milliseconds here).
fn decode_speed(model: &mut Transformer, prompt: &[u32], tokens: usize, runs: usize) -> Result<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut fastest = f64::INFINITY;
    for _ in 0..runs {
        let start = Instant::now();
        generate(model, prompt, &greedy(tokens), &mut rng, |_| {})?;
        fastest = fastest.min(start.elapsed().as_secs_f64());
    }
    Ok(tokens as f64 / fastest)
}

/// Part 5: `mpirun -np N lmlab train` for each rank count, or why it cannot be measured here.
fn distributed(plan: &Plan, cfg: &RunConfig, dir: &Path, exe: Option<&Path>) -> Distributed {
    let pending = |why: String| Distributed { points: Vec::new(), not_measured: Some(why) };
    if plan.mpi_ranks.is_empty() {
        return pending("the budget names no rank counts (mpi_ranks)".into());
    }
    if !cfg!(feature = "mpi") {
        return pending("this lmlab was built without MPI support (cargo build --release --features mpi)".into());
    }
    let Some(exe) = exe else {
        return pending("the experiment runs inside another program, not the lmlab binary mpirun would start".into());
    };
    let mut points = Vec::new();
    for &ranks in &plan.mpi_ranks {
        match mpi_train(plan, cfg, dir, exe, ranks) {
            Ok(p) => points.push(p),
            Err(e) => return pending(format!("mpirun -np {ranks} lmlab train failed: {e:#}")),
        }
    }
    Distributed { points, not_measured: None }
}

/// One `mpirun -np RANKS lmlab train` of the fp32 arm's config, one thread per rank.
fn mpi_train(plan: &Plan, cfg: &RunConfig, dir: &Path, exe: &Path, ranks: usize) -> Result<MpiPoint> {
    let run_dir = dir.join("runs").join(format!("mpi-{ranks}"));
    let mut c = cfg.clone();
    c.train.out_dir = run_dir.display().to_string();
    c.train.max_iters = plan.mpi_steps;
    c.train.eval_interval = plan.mpi_steps;
    c.train.threads = 1;
    c.optim.lr_decay_iters = plan.mpi_steps;
    std::fs::create_dir_all(dir.join("runs"))?;
    let config = dir.join("runs").join(format!("mpi-{ranks}.toml"));
    crate::io::atomic::write_file_atomic(&config, c.to_toml().as_bytes())?;
    let out = Command::new("mpirun")
        .args(["--oversubscribe", "-np", &ranks.to_string()])
        .arg(exe)
        .args(["train", "--quiet", "--json", "--config"])
        .arg(&config)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .context("cannot start mpirun (is Open MPI installed?)")?;
    drop_weights(&run_dir);
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr).trim());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .context("no summary line in lmlab train --json's output")?;
    let ms = summary["ms_per_iter"].as_f64().context("the summary has no ms_per_iter")?;
    let tokens_per_step = c.train.batch_size * ranks * c.model.block_size;
    Ok(MpiPoint {
        ranks,
        threads_per_rank: 1,
        steps: summary["steps"].as_u64().unwrap_or(plan.mpi_steps),
        ms_per_iter: ms,
        tokens_per_step,
        tokens_per_s: tokens_per_step as f64 / ms * 1e3,
    })
}

/// "1 rank", "2 ranks".
fn ranks(n: usize) -> String {
    format!("{n} rank{}", if n == 1 { "" } else { "s" })
}

const MIB: f64 = 1024.0 * 1024.0;

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB)
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn charts(
    attn: &[AttnPoint],
    formats: &[FormatRun],
    generation: &[GenPoint],
    compressed: &[CompressPoint],
    distributed: &Distributed,
    dir: &Path,
) -> Result<Vec<super::ChartFiles>> {
    let series = |name: &str, kernel: &str, y: &dyn Fn(&AttnPoint) -> Option<f64>| XySeries {
        name: name.into(),
        points: attn.iter().filter(|p| p.kernel == kernel).filter_map(|p| y(p).map(|y| (p.t as f64, y))).collect(),
    };
    let mut out = Vec::new();
    let time = XyChart {
        title: "attention forward + backward time against sequence length (batch 1, 6 heads of 64)".into(),
        x: "sequence length T (tokens)".into(),
        y: "ms (median)".into(),
        series: vec![
            series("dense, fwd+bwd", "dense", &|p| Some(p.forward_ms + p.backward_ms)),
            series("flash, fwd+bwd", "flash", &|p| Some(p.forward_ms + p.backward_ms)),
            series("dense, forward", "dense", &|p| Some(p.forward_ms)),
            series("flash, forward", "flash", &|p| Some(p.forward_ms)),
        ],
        scatter: false,
    };
    out.push(draw(&time, "attention_time", dir)?);
    let mut mem_series = vec![
        series("dense, exact", "dense", &|p| Some(p.buffer_bytes as f64 / MIB)),
        series("flash, exact", "flash", &|p| Some(p.buffer_bytes as f64 / MIB)),
    ];
    if attn.iter().any(|p| p.bench_peak_rss_bytes.is_some()) {
        mem_series.push(series("dense, bench RSS", "dense", &|p| p.bench_peak_rss_bytes.map(|b| b as f64 / MIB)));
        mem_series.push(series("flash, bench RSS", "flash", &|p| p.bench_peak_rss_bytes.map(|b| b as f64 / MIB)));
    }
    let mem = XyChart {
        title: "attention memory against sequence length (exact buffers; peak RSS of a bench process)".into(),
        x: "sequence length T (tokens)".into(),
        y: "MiB".into(),
        series: mem_series,
        scatter: false,
    };
    out.push(draw(&mem, "attention_memory", dir)?);
    let curves = XyChart {
        title: "validation loss during training, by number format of the products".into(),
        x: "step".into(),
        y: "val loss (nats per character)".into(),
        series: formats.iter().map(|f| XySeries { name: f.arm.clone(), points: f.val_curve.clone() }).collect(),
        scatter: false,
    };
    out.push(draw(&curves, "formats", dir)?);
    let gen = XyChart {
        title: "greedy generation: time per token with and without the KV cache".into(),
        x: "tokens generated".into(),
        y: "ms per token (median)".into(),
        series: vec![
            XySeries {
                name: "KV cache".into(),
                points: generation.iter().map(|g| (g.tokens as f64, g.cached_ms_per_token)).collect(),
            },
            XySeries {
                name: "no cache".into(),
                points: generation.iter().map(|g| (g.tokens as f64, g.recompute_ms_per_token)).collect(),
            },
        ],
        scatter: false,
    };
    out.push(draw(&gen, "kv_cache", dir)?);
    let dense_loss = compressed.iter().find(|c| c.kind == "fp32").map(|c| c.val_loss);
    let quant = XyChart {
        title: "quantization: validation loss increase against weight bytes".into(),
        x: "weights (KiB)".into(),
        y: "val loss − fp32's (millinats per character)".into(),
        series: compressed
            .iter()
            .filter(|c| c.kind != "prune")
            .map(|c| XySeries {
                name: c.name.clone(),
                points: vec![(c.weight_bytes as f64 / 1024.0, 1e3 * (c.val_loss - dense_loss.unwrap_or(f64::NAN)))],
            })
            .collect(),
        scatter: true,
    };
    out.push(draw(&quant, "quantization", dir)?);
    let mut groups: Vec<XySeries> = Vec::new();
    for c in compressed.iter().filter(|c| c.kind == "prune") {
        // One line per method and pattern: "magnitude" (unstructured, from the dense model) or "wanda 2:4".
        let unstructured = c.name.ends_with('%');
        let group = if unstructured { c.name.split(' ').next().unwrap_or("").to_string() } else { c.name.clone() };
        let point = (c.sparsity.unwrap_or(0.0) * 100.0, c.val_loss);
        match groups.iter_mut().find(|g| g.name == group) {
            Some(g) => g.points.push(point),
            None => {
                let mut points = Vec::new();
                if let (true, Some(l)) = (unstructured, dense_loss) {
                    points.push((0.0, l));
                }
                points.push(point);
                groups.push(XySeries { name: group, points });
            }
        }
    }
    if !groups.is_empty() {
        let prune = XyChart {
            title: "pruning without retraining: validation loss against sparsity".into(),
            x: "zeros among the pruned weights (%)".into(),
            y: "val loss (nats per character)".into(),
            series: groups,
            scatter: false,
        };
        out.push(draw(&prune, "pruning", dir)?);
    }
    if !distributed.points.is_empty() {
        let mpi = XyChart {
            title: "data-parallel training over MPI: throughput against ranks (1 thread each)".into(),
            x: "ranks".into(),
            y: "training tokens per second".into(),
            series: vec![XySeries {
                name: "tokens/s".into(),
                points: distributed.points.iter().map(|p| (p.ranks as f64, p.tokens_per_s)).collect(),
            }],
            scatter: false,
        };
        out.push(draw(&mpi, "mpi", dir)?);
    }
    Ok(out)
}

fn table(
    attn: &[AttnPoint],
    formats: &[FormatRun],
    generation: &[GenPoint],
    compressed: &[CompressPoint],
    distributed: &Distributed,
) -> Table {
    let columns = ["part", "setting", "time", "memory", "val loss", "note"].map(String::from).to_vec();
    let mut rows = Vec::new();
    let dash = || "–".to_string();
    for p in attn {
        rows.push(vec![
            "attention".into(),
            format!("{}, T = {}", p.kernel, p.t),
            format!("forward {:.2} ms + backward {:.2} ms", p.forward_ms, p.backward_ms),
            format!(
                "{} kept{}",
                mib(p.buffer_bytes),
                p.bench_peak_rss_bytes.map_or(String::new(), |b| format!("; process peak {}", mib(b)))
            ),
            dash(),
            dash(),
        ]);
    }
    for f in formats {
        rows.push(vec![
            "number format".into(),
            f.arm.clone(),
            format!("{:.2} ms per step", f.ms_per_iter),
            format!("{} accounted for training", mib(f.training_bytes)),
            format!("{:.4}", f.val_loss),
            format!("{} steps, train loss {:.4}", f.steps, f.train_loss),
        ]);
    }
    for g in generation {
        for (name, ms, positions) in [
            ("KV cache", g.cached_ms_per_token, g.cached_positions),
            ("no cache", g.recompute_ms_per_token, g.recompute_positions),
        ] {
            rows.push(vec![
                "generation".into(),
                format!("{name}, {} tokens", g.tokens),
                format!("{ms:.3} ms per token"),
                if name == "KV cache" { format!("{} of keys and values", kib(g.kv_cache_bytes)) } else { dash() },
                dash(),
                format!(
                    "{positions} positions run; {}",
                    if g.same_tokens {
                        "same tokens".to_string()
                    } else {
                        format!("differ at {:?}", g.first_difference)
                    }
                ),
            ]);
        }
    }
    for c in compressed {
        rows.push(vec![
            if c.kind == "prune" { "pruning" } else { "quantization" }.into(),
            c.name.clone(),
            c.decode_tokens_per_s.map_or(dash(), |t| format!("decode {t:.0} tokens/s")),
            format!("{} of weights", kib(c.weight_bytes)),
            format!("{:.4}", c.val_loss),
            match (c.kind, c.sparsity) {
                ("fp32", _) => "the trained fp32 model".into(),
                (_, Some(s)) => format!("{:.1}% zeros in {} tensors (stored dense)", 100.0 * s, c.tensors),
                _ => format!("{} tensors quantized in {:.0} ms", c.tensors, 1e3 * c.seconds),
            },
        ]);
    }
    match &distributed.not_measured {
        Some(why) => rows.push(vec![
            "distributed".into(),
            "MPI data parallel".into(),
            dash(),
            dash(),
            dash(),
            format!("not measured: {why}"),
        ]),
        None => {
            for p in &distributed.points {
                rows.push(vec![
                    "distributed".into(),
                    format!("{} × {} thread", ranks(p.ranks), p.threads_per_rank),
                    format!("{:.2} ms per step, {:.0} tokens/s", p.ms_per_iter, p.tokens_per_s),
                    dash(),
                    dash(),
                    format!("global batch {} tokens, {} steps", p.tokens_per_step, p.steps),
                ]);
            }
        }
    }
    Table { columns, rows }
}

/// Everything the findings are written from.
struct Numbers<'a> {
    attn: &'a [AttnPoint],
    agreement: &'a [AttnAgreement],
    rss_error: Option<&'a str>,
    model_acts: &'a [ModelActivations],
    formats: &'a [FormatRun],
    bf16_path: &'a str,
    isa: &'a str,
    generation: &'a [GenPoint],
    compressed: &'a [CompressPoint],
    distributed: &'a Distributed,
    eval_tokens: usize,
    /// The 1-minute load average at the start and the end.
    load: Option<(f64, f64)>,
}

fn findings(n: &Numbers) -> Vec<String> {
    let mut out = Vec::new();
    let at = |kernel: &str, t: usize| n.attn.iter().find(|p| p.kernel == kernel && p.t == t);
    let lengths: Vec<usize> = n.attn.iter().filter(|p| p.kernel == "dense").map(|p| p.t).collect();
    if let (Some(&first), Some(&last)) = (lengths.first(), lengths.last()) {
        if let (Some(d), Some(f), Some(d0), Some(f0)) =
            (at("dense", last), at("flash", last), at("dense", first), at("flash", first))
        {
            let (td, tf) = (d.forward_ms + d.backward_ms, f.forward_ms + f.backward_ms);
            // Flash keeps a + b·T bytes: the slope and intercept from the two ends.
            let slope = (f.buffer_bytes - f0.buffer_bytes) as f64 / (last - first).max(1) as f64;
            let fixed = f0.buffer_bytes as f64 - slope * first as f64;
            out.push(format!(
                "At T = {last} (batch 1, {ATTN_HEADS} heads of {ATTN_HEAD_SIZE}) dense attention keeps {} for the probabilities and their gradient, flash attention {} ({:.1}× less). From T = {first} to {last} ({:.0}× longer) the dense buffers grow {:.0}× (quadratic); flash's grow by {slope:.0} bytes per token (linear) on top of a fixed {} of tiles.",
                mib(d.buffer_bytes),
                mib(f.buffer_bytes),
                d.buffer_bytes as f64 / f.buffer_bytes as f64,
                last as f64 / first as f64,
                d.buffer_bytes as f64 / d0.buffer_bytes as f64,
                mib(fixed.max(0.0) as u64),
            ));
            if let Some(t) = lengths
                .iter()
                .copied()
                .find(|&t| at("flash", t).zip(at("dense", t)).is_some_and(|(f, d)| f.buffer_bytes < d.buffer_bytes))
            {
                if t != first {
                    out.push(format!("Flash attention keeps less than dense from T = {t} on; below that its fixed tiles outweigh the small T×T matrices."));
                }
            }
            out.push(format!(
                "Forward + backward at T = {last}: dense {td:.1} ms, flash {tf:.1} ms (flash takes {:.2}× dense's time; forward alone {:.2} against {:.2} ms). At T = {first}: dense {:.3} ms, flash {:.3} ms.",
                tf / td,
                f.forward_ms,
                d.forward_ms,
                d0.forward_ms + d0.backward_ms,
                f0.forward_ms + f0.backward_ms,
            ));
            if let (Some(rd), Some(rf)) = (d.bench_peak_rss_bytes, f.bench_peak_rss_bytes) {
                out.push(format!(
                    "Measured: a `lmlab bench` process running one pass at T = {last} peaks at {} resident with dense attention and {} with flash (the difference, {}, against {} of exact buffer difference).",
                    mib(rd),
                    mib(rf),
                    mib(rd.saturating_sub(rf)),
                    mib(d.buffer_bytes - f.buffer_bytes),
                ));
            }
        }
    }
    if let Some(e) = n.rss_error {
        out.push(format!("The peak memory of the bench processes was not measured: {e}."));
    }
    if let Some(worst) = n.agreement.iter().max_by(|a, b| a.max_abs_diff_out.total_cmp(&b.max_abs_diff_out)) {
        let dq = n.agreement.iter().map(|a| a.max_abs_diff_dqkv).fold(0.0, f64::max);
        out.push(format!(
            "Both kernels compute the same attention: outputs differ by at most {:.1e} (at T = {}) and input gradients by at most {dq:.1e} (summation order only).",
            worst.max_abs_diff_out, worst.t
        ));
    }
    if let Some(m) = n.model_acts.last() {
        if let Some(f) = m.flash_bytes {
            out.push(format!(
                "For the whole trained model at batch {} and context {} the accounting gives {} of training activations with dense attention and {} with flash ({:.1}×).",
                m.batch,
                m.context,
                mib(m.dense_bytes),
                mib(f),
                m.dense_bytes as f64 / f as f64
            ));
        }
    }
    if let Some(fp) = n.formats.iter().find(|f| f.precision == "fp32") {
        for f in n.formats.iter().filter(|f| f.precision != "fp32") {
            out.push(format!(
                "{}: val loss {:.4} after {} steps against {:.4} in fp32 ({:+.4}); {:.2} ms per step against {:.2} ({:.2}× fp32's time).",
                f.arm,
                f.val_loss,
                f.steps,
                fp.val_loss,
                f.val_loss - fp.val_loss,
                f.ms_per_iter,
                fp.ms_per_iter,
                f.ms_per_iter / fp.ms_per_iter
            ));
        }
        if let Some(lp) = n.formats.iter().find(|f| f.precision != "fp32") {
            let verdict = if lp.training_bytes > fp.training_bytes { "more" } else { "less" };
            out.push(format!(
                "On this CPU (kernel path {}) bf16 products run on {}, and f16 products on the f32 GEMM on f16-rounded operands. lmlab keeps f32 master weights, gradients and optimizer state and stores the rounded working copy as f32, so {} needs {verdict} training memory than fp32 here: {} against {} (a GPU framework would store that copy in 2 bytes per weight).",
                n.isa,
                n.bf16_path,
                lp.arm,
                mib(lp.training_bytes),
                mib(fp.training_bytes)
            ));
        }
    }
    if let (Some(g0), Some(g)) = (n.generation.first(), n.generation.last()) {
        out.push(format!(
            "Generating {} tokens greedily: {:.3} ms per token with the KV cache against {:.3} without ({:.1}×); without the cache the steps run {} token positions through the model instead of {}.",
            g.tokens,
            g.cached_ms_per_token,
            g.recompute_ms_per_token,
            g.recompute_ms_per_token / g.cached_ms_per_token,
            g.recompute_positions,
            g.cached_positions
        ));
        out.push(format!(
            "From {} to {} tokens the time per token grows {:.1}× without the cache and {:.1}× with it; the cache holds {} of keys and values at {} tokens.",
            g0.tokens,
            g.tokens,
            g.recompute_ms_per_token / g0.recompute_ms_per_token,
            g.cached_ms_per_token / g0.cached_ms_per_token,
            kib(g.kv_cache_bytes),
            g.cached_positions
        ));
        let same = n.generation.iter().filter(|g| g.same_tokens).count();
        out.push(if same == n.generation.len() {
            format!("With and without the cache the model picked exactly the same greedy tokens at every length ({} of {} generations).", same, n.generation.len())
        } else {
            let g = n.generation.iter().find(|g| !g.same_tokens).expect("one differs");
            format!(
                "With and without the cache the greedy tokens differ at {} of {} lengths (first at token {:?} of {}): near-ties broken differently by the summation order.",
                n.generation.len() - same,
                n.generation.len(),
                g.first_difference,
                g.tokens
            )
        });
    }
    if let Some(base) = n.compressed.iter().find(|c| c.kind == "fp32") {
        for c in n.compressed.iter().filter(|c| c.kind == "quantize") {
            out.push(format!(
                "{}: weights {} against {} in fp32 ({:.2}× smaller; the tied embedding/output matrix, norms and biases stay f32), val loss {:.4} against {:.4} ({:+.4}), decoding {:.0} tokens/s against {:.0}.",
                c.name,
                kib(c.weight_bytes),
                kib(base.weight_bytes),
                base.weight_bytes as f64 / c.weight_bytes as f64,
                c.val_loss,
                base.val_loss,
                c.val_loss - base.val_loss,
                c.decode_tokens_per_s.unwrap_or(f64::NAN),
                base.decode_tokens_per_s.unwrap_or(f64::NAN)
            ));
        }
        let pruned: Vec<String> = n
            .compressed
            .iter()
            .filter(|c| c.kind == "prune")
            .map(|c| format!("{} {:.4}", c.name, c.val_loss))
            .collect();
        if !pruned.is_empty() {
            out.push(format!(
                "Pruning the linear weights without retraining (val loss, dense {:.4}): {}. The zeros are stored and multiplied as dense weights, so bytes and speed do not change without sparse storage and kernels.",
                base.val_loss,
                pruned.join(", ")
            ));
        }
        out.push(format!("Validation losses of the compressed models are over {} held-out tokens.", n.eval_tokens));
    }
    match &n.distributed.not_measured {
        Some(why) => out.push(format!(
            "Distributed scaling was not measured in this run: {why}. docs/DISTRIBUTED.md and the MPI section of docs/BENCHMARKS.md give the figures measured with `mpirun` (scripts/distributed_bench.py)."
        )),
        None => {
            if let (Some(one), Some(most)) = (n.distributed.points.first(), n.distributed.points.last()) {
                let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
                out.push(format!(
                    "Data parallel over MPI, one thread per rank: {} train {:.0} tokens/s, {} {:.0} tokens/s ({:.2}×; each rank keeps its batch, so the global batch grows with the ranks) on {cores} cores.",
                    ranks(one.ranks),
                    one.tokens_per_s,
                    ranks(most.ranks),
                    most.tokens_per_s,
                    most.tokens_per_s / one.tokens_per_s
                ));
            }
        }
    }
    if let Some((start, end)) = n.load {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
        let verdict = if start.max(end) > cores + 0.5 {
            "other processes shared the CPU, so the times above are noisy"
        } else {
            "the CPU was not oversubscribed"
        };
        out.push(format!(
            "The 1-minute load average was {start:.2} at the start and {end:.2} at the end on {cores} cores: {verdict}."
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_points_parse_and_name_themselves() {
        let p = PrunePoint { method: "magnitude".into(), sparsity: Some(0.5), nm: None };
        assert_eq!(p.name(), "magnitude 50%");
        assert_eq!(p.spec().unwrap().pattern, Pattern::Unstructured { sparsity: 0.5 });
        let p = PrunePoint { method: "wanda".into(), sparsity: None, nm: Some("2:4".into()) };
        assert_eq!(p.name(), "wanda 2:4");
        assert_eq!(p.spec().unwrap().pattern, Pattern::NofM { n: 2, m: 4 });
        let both = PrunePoint { method: "wanda".into(), sparsity: Some(0.5), nm: Some("2:4".into()) };
        assert!(format!("{:#}", both.spec().unwrap_err()).contains("either"));
        let bad = PrunePoint { method: "random".into(), sparsity: Some(0.5), nm: None };
        assert!(bad.spec().is_err());
    }

    #[test]
    fn positions_run_with_and_without_the_cache() {
        // 1 prompt token, 4 new: the cache runs 1 + 3 positions; recomputation contexts of 1, 2, 3, 4.
        assert_eq!(positions_run(1, 4), (4, 10));
        assert_eq!(positions_run(3, 1), (3, 3));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 1.0]), 1.0);
    }

    #[test]
    fn a_plan_is_checked_against_the_model() {
        let cfg = RunConfig::from_toml_str("[model]\nblock_size = 32\n", &[]).unwrap();
        let plan = |generate: Vec<usize>, quantize: &str| Plan {
            attention_lengths: vec![64],
            attention_iters: 1,
            generate_lengths: generate,
            repeats: 1,
            eval_tokens: 100,
            quantize: vec![quantize.into()],
            prune: vec![],
            calibration_windows: 1,
            mpi_ranks: vec![],
            mpi_steps: 0,
        };
        check_plan(Some(&plan(vec![8, 32], "int8")), &cfg).unwrap();
        let e = format!("{:#}", check_plan(Some(&plan(vec![33], "int8")), &cfg).unwrap_err());
        assert!(e.contains("generate_lengths") && e.contains("1..=32"), "{e}");
        assert!(format!("{:#}", check_plan(Some(&plan(vec![8], "int5")), &cfg).unwrap_err()).contains("int5"));
        assert!(check_plan(None, &cfg).is_err());
    }
}
