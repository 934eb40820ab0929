//! An experiment of arms × seeds: every arm trained from the same base config with its
//! overrides, once per seed, through `train::train`; the curves and final figures read back
//! from each run's metrics.jsonl and checkpoint; a table, charts and findings from them.
//! [`pareto`] re-reads the runs of the other results instead of training.

use super::{base_config, findings, new_result, Budget, ChartFiles, ExplainResult, Question, Spec, Table};
use crate::config::RunConfig;
use crate::eval::stability::summarize as stats;
use crate::inspect::plot::{
    plot_heatmaps, plot_xy_on, read_metrics, Axes, Heatmap, Scale, XyChart, XySeries, HEALTH_KEYS,
};
use crate::train::{train, TrainOptions};
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One arm trained with one seed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ArmRun {
    pub arm: String,
    pub seed: u64,
    /// The last evaluation's losses.
    #[serde(deserialize_with = "nan_if_null")]
    pub val_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// (iteration, val loss) of every evaluation.
    pub val_curve: Vec<(f64, f64)>,
    pub seconds: f64,
    pub ms_per_iter: f64,
    pub params: usize,
    /// Forward FLOPs per token at the run's context (Transformers; None for the baselines).
    pub flops_per_token: Option<f64>,
    /// The last health line's per-layer figures (with the `health` probe).
    pub grad_norm: Vec<f64>,
    pub attn_entropy: Vec<f64>,
    pub dead_share: Vec<f64>,
    /// The `permutation` probe: the last position's loss on validation windows as they are, and
    /// with the tokens before the last one shuffled (see [`permutation_losses`]).
    pub last_loss_ordered: Option<f64>,
    pub last_loss_shuffled: Option<f64>,
    /// The `extrapolation` probe: (tokens read, validation loss) at the trained context and at
    /// 2×, 4×, 8× it; None where the model cannot read that length (a learned table).
    #[serde(default)]
    pub extrapolation: Vec<(usize, Option<f64>)>,
    /// The `diversity` probe: per layer, the mean Jensen–Shannon divergence (nats) between the
    /// attention distributions of every pair of heads (empty with one head).
    #[serde(default)]
    pub head_diversity: Vec<f64>,
    /// A recall experiment's held-out accuracy: (bin start, accuracy, queries) per distance bin.
    #[serde(default)]
    pub recall_bins: Vec<(usize, f64, usize)>,
    /// The `context` probe: (k, validation loss of a token given only the k tokens before it).
    #[serde(default)]
    pub context_losses: Vec<(usize, f64)>,
    /// The corpus it trained on (`data.path`).
    #[serde(default)]
    pub data: String,
    /// Training tokens per step: batch × accumulation × context.
    #[serde(default)]
    pub tokens_per_step: usize,
    /// The peak learning rate (`optim.learning_rate`).
    #[serde(default)]
    pub learning_rate: f64,
    /// Why training stopped when its loss or gradient stopped being finite (its losses are
    /// then NaN, stored as null); None for a run that finished.
    #[serde(default)]
    pub diverged: Option<String>,
}

/// An arm's figures over its seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ArmSummary {
    pub arm: String,
    pub x: Option<f64>,
    /// NaN (null in result.json) when a seed diverged.
    #[serde(deserialize_with = "nan_if_null")]
    pub val_mean: f64,
    /// Sample standard deviation over the seeds (0 for one seed).
    #[serde(deserialize_with = "nan_if_null")]
    pub val_sd: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub val_min: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub val_max: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_mean: f64,
    pub seconds_mean: f64,
    pub params: usize,
    pub flops_per_token: Option<f64>,
    /// Mean over layers of the health figures (NaN without the probe).
    pub grad_norm_first_last: Option<(f64, f64)>,
    pub attn_entropy: Option<f64>,
    pub dead_share: Option<f64>,
    /// Mean over seeds of the permutation probe's (ordered, shuffled) last-position losses.
    pub permutation: Option<(f64, f64)>,
    /// Mean over seeds of the extrapolation probe's loss per length read.
    #[serde(default)]
    pub extrapolation: Vec<(usize, Option<f64>)>,
    /// Mean over layers and seeds of the head-diversity probe.
    #[serde(default)]
    pub head_diversity: Option<f64>,
    /// Recall accuracy over all held-out queries, and per distance bin (bin start, accuracy),
    /// means over seeds.
    #[serde(default)]
    pub recall_accuracy: Option<f64>,
    #[serde(default)]
    pub recall_bins: Vec<(usize, f64)>,
    /// Mean over seeds of the context probe's loss per context length.
    #[serde(default)]
    pub context_losses: Vec<(usize, f64)>,
    /// The corpus it trained on (`data.path`): losses are comparable only on the same one.
    #[serde(default)]
    pub data: String,
    /// The peak learning rate of its runs.
    #[serde(default)]
    pub learning_rate: f64,
    /// "seed S: why" for each seed whose training diverged.
    #[serde(default)]
    pub diverged: Vec<String>,
}

/// A number that JSON wrote as null (serde_json writes NaN and infinities so) reads back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

pub(super) fn run(
    q: &Question,
    spec: &Spec,
    budget: Budget,
    dir: &Path,
    progress: bool,
    threads: usize,
) -> Result<ExplainResult> {
    let b = spec.budget(budget);
    ensure!(!spec.arms.is_empty(), "experiments/{}.toml has no arms", q.id);
    let seeds = if b.seeds.is_empty() { vec![1] } else { b.seeds.clone() };
    let mut result = new_result(q, spec, budget, seeds.clone());
    // A recall experiment trains on its own generated corpus.
    let recall_data = match &spec.recall {
        Some(r) => {
            r.task().validate()?;
            let path = dir.join("recall.txt");
            crate::io::atomic::write_file_atomic(&path, r.task().corpus(r.lines, RECALL_TRAIN_SEED).as_bytes())?;
            Some(format!("data.path={:?}", path.display().to_string()))
        }
        None => None,
    };
    // The corpora: each named one prefixes its arms' names ("WikiText-2 · 2 × 64").
    let corpora: Vec<(Option<&str>, Option<&str>)> = if spec.corpora.is_empty() {
        vec![(None, spec.base.as_deref())]
    } else {
        spec.corpora.iter().map(|c| (Some(c.name.as_str()), Some(c.base.as_str()))).collect()
    };
    let arm_name = |corpus: Option<&str>, arm: &super::Arm| match corpus {
        Some(c) => format!("{}{}", corpus_prefix(c), arm.name),
        None => arm.name.clone(),
    };
    let bar = super::progress_bar(progress, corpora.len() * spec.arms.len() * seeds.len(), "runs", q.id);
    let mut runs = Vec::new();
    for &(corpus, corpus_base) in &corpora {
        for arm in &spec.arms {
            let name = arm_name(corpus, arm);
            let base = arm.base.as_deref().or(corpus_base);
            let base = base_config(base.context("a sweep experiment needs `base` (or each arm its own)")?)?;
            for &seed in &seeds {
                let run_dir = dir.join("runs").join(format!("{}-seed{seed}", slug(&name)));
                let mut set = b.set.clone();
                set.extend(recall_data.clone());
                set.extend(arm.overrides(budget));
                set.extend(super::run_overrides(seed, &run_dir, threads));
                let cfg = RunConfig::from_toml_str(base, &set)
                    .with_context(|| format!("experiments/{}.toml, arm {name:?}", q.id))?;
                if seed == seeds[0] {
                    result.configs.push((name.clone(), cfg.to_toml()));
                }
                let started = std::time::Instant::now();
                let summary = match train(cfg.clone(), None, &TrainOptions { quiet: true, json: false }) {
                    Ok(s) => s,
                    // A setting that diverges (a high learning rate) is a result, not a failure.
                    Err(e) if e.downcast_ref::<crate::train::Diverged>().is_some() => {
                        let mut run = diverged_run(&name, seed, &cfg, &run_dir, format!("{e:#}"));
                        run.seconds = started.elapsed().as_secs_f64();
                        runs.push(run);
                        drop_weights(&run_dir);
                        if let Some(bar) = &bar {
                            bar.inc(1);
                        }
                        continue;
                    }
                    Err(e) => return Err(e.context(format!("training arm {name:?} (seed {seed})"))),
                };
                let mut run = read_run(&name, seed, &summary, &run_dir)?;
                run.data = cfg.data.path.clone();
                run.tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum_steps * cfg.model.block_size;
                // Through its shortest decimal: 3e-3 as f32 is not 3e-3 as f64.
                run.learning_rate = cfg.optim.learning_rate.to_string().parse().unwrap_or(f64::NAN);
                run_probes(spec, &mut run, &summary.checkpoint, &cfg, seed)?;
                runs.push(run);
                drop_weights(&run_dir);
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // Per corpus: the arms' summaries, the fit, the n-gram baselines and the findings.
    let (mut arms, mut groups) = (Vec::new(), Vec::new());
    for &(corpus, corpus_base) in &corpora {
        let mut group: Vec<ArmSummary> = spec
            .arms
            .iter()
            .map(|a| {
                let name = arm_name(corpus, a);
                summarize(&name, a.x, &runs.iter().filter(|r| r.arm == name).collect::<Vec<_>>())
            })
            .collect();
        match spec.x_from.as_deref() {
            None => {}
            Some("params") => group.iter_mut().for_each(|a| a.x = Some(a.params as f64)),
            Some(other) => anyhow::bail!("experiments/{}.toml: x_from = {other:?} (only \"params\")", q.id),
        }
        let power_law = match spec.fit.as_deref() {
            None => None,
            Some("power_law") => {
                let xy: Vec<(f64, f64)> = group.iter().filter_map(|a| a.x.map(|x| (x, a.val_mean))).collect();
                Some(PowerLaw::fit(&xy).with_context(|| format!("experiments/{}.toml: fit = \"power_law\"", q.id))?)
            }
            Some(other) => anyhow::bail!("experiments/{}.toml: fit = {other:?} (only \"power_law\")", q.id),
        };
        let ngram = if spec.ngram.is_empty() {
            Vec::new()
        } else {
            let base = base_config(corpus_base.context("n-gram baselines need the experiment's `base`")?)?;
            ngram_baselines(base, &b.set, &spec.ngram)?
        };
        // The findings name the arms without their corpus, which prefixes each sentence.
        let mut short = group.clone();
        short.iter_mut().zip(&spec.arms).for_each(|(s, a)| s.arm = a.name.clone());
        let short_runs: Vec<ArmRun> = spec
            .arms
            .iter()
            .flat_map(|a| {
                let name = arm_name(corpus, a);
                runs.iter().filter(move |r| r.arm == name).map(|r| ArmRun { arm: a.name.clone(), ..r.clone() })
            })
            .collect();
        let mut found = findings::sweep(spec, &short, &short_runs);
        if let Some(f) = &power_law {
            found.push(findings::power_law(f, spec.x_label.as_deref().unwrap_or("x")));
        }
        if !ngram.is_empty() {
            found.push(findings::ngram(&ngram, &short));
        }
        result.findings.extend(found.into_iter().map(|f| match corpus {
            Some(c) => format!("On {c}: {f}"),
            None => f,
        }));
        arms.extend(group);
        groups.push(CorpusFit { corpus: corpus.map(String::from), power_law, ngram });
    }
    result.table = table(&arms, spec);
    for g in &groups {
        for n in &g.ngram {
            let mut row = vec!["–".to_string(); result.table.columns.len()];
            let model = format!("Kneser-Ney {}-gram (d = {NGRAM_DISCOUNT})", n.order);
            row[0] = g.corpus.as_ref().map_or(model.clone(), |c| format!("{}{model}", corpus_prefix(c)));
            row[1] = format!("{:.4}", n.val_loss);
            row[4] = format!("{} counts", n.counts);
            row[6] = format!("{:.1}", n.seconds);
            result.table.rows.push(row);
        }
    }
    result.charts = charts(spec, &arms, &runs, dir, &groups)?;
    result.data = serde_json::json!({ "arms": arms, "runs": runs, "corpora": groups });
    Ok(result)
}

/// The experiment's probes of one trained run, read from its checkpoint into `run`.
fn run_probes(spec: &Spec, run: &mut ArmRun, ckpt: &Path, cfg: &RunConfig, seed: u64) -> Result<()> {
    let probe = |name: &str| spec.probes.iter().any(|p| p == name);
    if probe("permutation") {
        let (ordered, shuffled) = permutation_losses(ckpt, cfg, seed)?;
        (run.last_loss_ordered, run.last_loss_shuffled) = (Some(ordered), Some(shuffled));
    }
    if probe("extrapolation") {
        run.extrapolation = extrapolation_losses(ckpt, cfg)?;
    }
    if probe("diversity") {
        run.head_diversity = head_diversity(ckpt, cfg)?;
    }
    if let Some(r) = &spec.recall {
        run.recall_bins = recall_probe(ckpt, r)?;
    }
    if probe("context") {
        run.context_losses = context_losses(ckpt, cfg)?;
    }
    Ok(())
}

/// A corpus's fit and baselines (one unnamed corpus unless the experiment lists `corpora`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CorpusFit {
    pub corpus: Option<String>,
    pub power_law: Option<PowerLaw>,
    pub ngram: Vec<NgramBaseline>,
}

/// The n-gram baselines' discount (Kneser & Ney's usual absolute discount).
pub(crate) const NGRAM_DISCOUNT: f64 = 0.75;

/// A Kneser-Ney n-gram baseline: its validation loss and size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NgramBaseline {
    pub order: usize,
    pub val_loss: f64,
    /// Stored counts (`KneserNey::stored_counts`).
    pub counts: usize,
    pub seconds: f64,
}

/// Counts n-grams of the experiment's data (its characters, split as training splits them)
/// and scores the validation split; the unigram is interpolated with the uniform distribution
/// over the file's characters (`KneserNey::with_vocabulary`).
fn ngram_baselines(base: &str, set: &[String], orders: &[usize]) -> Result<Vec<NgramBaseline>> {
    let cfg = RunConfig::from_toml_str(base, set)?;
    let text = crate::util::read_corpus(Path::new(&cfg.data.path))?;
    // Ids over the characters of the whole file, as the networks' character tokenizer has them:
    // a character only the validation split holds still has a (uniform) probability.
    let mut chars: Vec<char> = text.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    let id = |c: char| chars.binary_search(&c).expect("a character of the text") as u32;
    let tokens: Vec<u32> = text.chars().map(id).collect();
    let split = crate::data::TokenDataset::split(tokens, cfg.data.val_fraction)?;
    orders
        .iter()
        .map(|&order| {
            let start = std::time::Instant::now();
            let m = crate::model::ngram::KneserNey::fit(&split.train, order, NGRAM_DISCOUNT)?
                .with_vocabulary(chars.len())?;
            let val_loss = m.cross_entropy(&split.val)?;
            Ok(NgramBaseline { order, val_loss, counts: m.stored_counts(), seconds: start.elapsed().as_secs_f64() })
        })
        .collect()
}

/// val loss = (x_c / x)^α, Kaplan et al.'s (2020) form of the loss against parameters, fitted by
/// least squares on the logarithms: ln L = α·ln x_c − α·ln x.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PowerLaw {
    pub alpha: f64,
    pub x_c: f64,
    /// Coefficient of determination of the log-log fit.
    pub r2: f64,
}

impl PowerLaw {
    pub fn fit(points: &[(f64, f64)]) -> Result<PowerLaw> {
        let logs: Vec<(f64, f64)> =
            points.iter().filter(|p| p.0 > 0.0 && p.1 > 0.0).map(|p| (p.0.ln(), p.1.ln())).collect();
        ensure!(logs.len() >= 2, "a power law needs two points with positive x and loss, got {}", logs.len());
        let n = logs.len() as f64;
        let (mx, my) = (logs.iter().map(|p| p.0).sum::<f64>() / n, logs.iter().map(|p| p.1).sum::<f64>() / n);
        let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let syy: f64 = logs.iter().map(|p| (p.1 - my).powi(2)).sum();
        ensure!(sxx > 0.0, "a power law needs two different x values");
        let slope = sxy / sxx;
        let intercept = my - slope * mx;
        let alpha = -slope;
        let r2 = if syy > 0.0 { (sxy * sxy) / (sxx * syy) } else { 1.0 };
        Ok(PowerLaw { alpha, x_c: (intercept / alpha).exp(), r2 })
    }

    pub fn at(&self, x: f64) -> f64 {
        (self.x_c / x).powf(self.alpha)
    }
}

/// Deletes a finished run's checkpoints: the numbers are kept, the weights are not needed again.
pub(super) fn drop_weights(run_dir: &Path) {
    for ck in ["ckpt", "ckpt_best"] {
        let _ = std::fs::remove_dir_all(run_dir.join(ck));
    }
}

/// What a named corpus puts before its arms' names ("WikiText-2 · 2 × 64").
fn corpus_prefix(corpus: &str) -> String {
    format!("{corpus} · ")
}

/// Whether the arm named `arm` belongs to corpus `g` (every arm when the corpus is unnamed).
fn in_group(arm: &str, g: &CorpusFit) -> bool {
    g.corpus.as_ref().is_none_or(|c| arm.starts_with(&corpus_prefix(c)))
}

/// An arm's name without its corpus prefix.
fn short_name(arm: &str, g: &CorpusFit) -> String {
    g.corpus.as_ref().and_then(|c| arm.strip_prefix(&corpus_prefix(c))).unwrap_or(arm).to_string()
}

/// A file-name-safe form of an arm's name.
pub(super) fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// The figures of a finished run: its summary, metrics.jsonl and checkpoint.
fn read_run(arm: &str, seed: u64, s: &crate::train::TrainSummary, run_dir: &Path) -> Result<ArmRun> {
    let m = read_metrics(&run_dir.join("metrics.jsonl"))?;
    let last_layer_values = |key: &str| -> Vec<f64> {
        let k = HEALTH_KEYS.iter().position(|(name, _)| *name == key).expect("a health key");
        m.health
            .get(k)
            .map_or(Vec::new(), |l| l.lines.iter().filter_map(|line| line.points.last().map(|p| p.1)).collect())
    };
    use crate::io::checkpoint;
    use crate::model::{baseline::BaselineLm, transformer::Arch, LanguageModel};
    let (params, flops) = match checkpoint::stored_arch(&s.checkpoint)? {
        Arch::Lstm | Arch::Gru | Arch::Cnn => {
            (checkpoint::load_lm::<BaselineLm>(&s.checkpoint, 1, false, true)?.model.num_params(), None)
        }
        _ => {
            let m = checkpoint::load_inference(&s.checkpoint, 1)?.model;
            let cfg = &m.config;
            (m.num_params(), Some(crate::inspect::account::flops::flops_per_token(cfg, cfg.block_size)))
        }
    };
    Ok(ArmRun {
        arm: arm.to_string(),
        seed,
        val_loss: s.val_loss as f64,
        train_loss: s.train_loss as f64,
        val_curve: m.eval_val.points.clone(),
        seconds: s.seconds,
        ms_per_iter: s.ms_per_iter,
        params,
        flops_per_token: flops,
        grad_norm: last_layer_values("grad_norm"),
        attn_entropy: last_layer_values("attn_entropy"),
        dead_share: last_layer_values("dead_share"),
        // The probes, the corpus, the tokens per step and the rate are filled in by the caller.
        ..ArmRun::default()
    })
}

/// A run whose training diverged: its evaluations up to then, NaN losses, and why.
fn diverged_run(arm: &str, seed: u64, cfg: &RunConfig, run_dir: &Path, why: String) -> ArmRun {
    let curve = read_metrics(&run_dir.join("metrics.jsonl")).map(|m| m.eval_val.points).unwrap_or_default();
    ArmRun {
        arm: arm.to_string(),
        seed,
        val_loss: f64::NAN,
        train_loss: f64::NAN,
        val_curve: curve,
        data: cfg.data.path.clone(),
        tokens_per_step: cfg.train.batch_size * cfg.train.grad_accum_steps * cfg.model.block_size,
        learning_rate: cfg.optim.learning_rate.to_string().parse().unwrap_or(f64::NAN),
        diverged: Some(why),
        // No checkpoint to count or probe; the caller sets the seconds it ran.
        ..ArmRun::default()
    }
}

/// Validation tokens the context probe scores.
const CONTEXT_TOKENS: usize = 2048;

/// How much of its context a model uses (Khandelwal et al., 2018): the validation loss of a
/// token when the model sees only the k tokens before it, for k = 1, 2, 4, … up to the trained
/// context. Each scored token gets a window of exactly k tokens (recurrent models start from a
/// zero state), so a flat stretch of the curve means the tokens further back are not used.
fn context_losses(ckpt: &Path, cfg: &RunConfig) -> Result<Vec<(usize, f64)>> {
    use crate::io::checkpoint;
    use crate::model::baseline::BaselineLm;
    const BATCH: usize = 64;
    fn run<M: crate::model::LanguageModel>(m: &mut M, val: &[u32]) -> Result<Vec<(usize, f64)>> {
        let (t, v) = (m.config().block_size, m.config().vocab_size);
        let n = CONTEXT_TOKENS.min(val.len().saturating_sub(t + 1));
        ensure!(n > 0, "the validation split is shorter than the context probe needs ({} tokens)", t + 2);
        let mut out = Vec::new();
        let mut k = 1;
        while k <= t {
            let (mut sum, mut input) = (0.0f64, Vec::with_capacity(BATCH * k));
            // Scored tokens are val[t..t + n]: each has t tokens before it, whatever k.
            for chunk in (t..t + n).collect::<Vec<_>>().chunks(BATCH) {
                input.clear();
                chunk.iter().for_each(|&i| input.extend_from_slice(&val[i - k..i]));
                m.forward_lm(&input, None, chunk.len(), k, false, 0)?;
                let logits = m.logits();
                for (row, &i) in chunk.iter().enumerate() {
                    let r = &logits[(row * k + k - 1) * v..(row * k + k) * v];
                    let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                    let lse = max + r.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                    sum += lse - r[val[i] as usize] as f64;
                }
            }
            out.push((k, sum / n as f64));
            k *= 2;
        }
        Ok(out)
    }
    if checkpoint::stored_arch(ckpt)?.is_baseline() {
        let mut ck = checkpoint::load_lm::<BaselineLm>(ckpt, BATCH, false, true)?;
        let val = val_tokens(&ck.tokenizer, cfg)?;
        run(&mut ck.model, &val)
    } else {
        let mut ck = checkpoint::load_inference(ckpt, BATCH)?;
        let val = val_tokens(&ck.tokenizer, cfg)?;
        run(&mut ck.model, &val)
    }
}

/// Seeds of the recall experiment's training corpus and of its held-out lines.
const RECALL_TRAIN_SEED: u64 = 1;
const RECALL_EVAL_SEED: u64 = 2;

/// Accuracy against distance on held-out recall lines (`eval::recall`), for any language model
/// the checkpoint holds.
fn recall_probe(ckpt: &Path, r: &super::RecallSpec) -> Result<Vec<(usize, f64, usize)>> {
    use crate::eval::recall::{accuracy_by_distance, recall_hits};
    use crate::io::checkpoint;
    use crate::model::baseline::BaselineLm;
    use rand::SeedableRng;
    const BATCH: usize = 16;
    let task = r.eval_task();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(RECALL_EVAL_SEED);
    let examples: Vec<_> = (0..r.eval_lines).map(|_| task.example(&mut rng)).collect();
    let hits = if checkpoint::stored_arch(ckpt)?.is_baseline() {
        let mut ck = checkpoint::load_lm::<BaselineLm>(ckpt, BATCH, false, true)?;
        recall_hits(&mut ck.model, &ck.tokenizer, &task, &examples, BATCH)?
    } else {
        let mut ck = checkpoint::load_inference(ckpt, BATCH)?;
        recall_hits(&mut ck.model, &ck.tokenizer, &task, &examples, BATCH)?
    };
    Ok(accuracy_by_distance(&hits, r.bin))
}

/// The validation split of a run's data, encoded by the checkpoint's tokenizer.
fn val_tokens(tok: &crate::data::Tokenizer, cfg: &RunConfig) -> Result<Vec<u32>> {
    let text = crate::util::read_corpus(Path::new(&cfg.data.path))?;
    Ok(crate::data::TokenDataset::split(tok.encode(&text)?, cfg.data.val_fraction)?.val)
}

/// How many times the trained context the extrapolation probe reads.
pub(crate) const EXTRAPOLATION_FACTORS: [usize; 4] = [1, 2, 4, 8];

/// Length extrapolation: the model trained at `block_size` tokens, rebuilt to read 2×, 4× and
/// 8× as many (`io::checkpoint::load_inference_at_context`), and its validation loss with
/// disjoint windows of each length (`eval::perplexity::sliding_window_eval`, every token scored
/// once, as `lmlab eval lm --context`). A learned position table has no rows past the trained
/// context: None there.
fn extrapolation_losses(ckpt: &Path, cfg: &RunConfig) -> Result<Vec<(usize, Option<f64>)>> {
    use crate::io::checkpoint;
    use crate::model::transformer::Position;
    let trained = checkpoint::read_model_config(ckpt)?;
    let mut out = Vec::new();
    let mut tokens = None;
    for f in EXTRAPOLATION_FACTORS {
        let t = f * trained.block_size;
        if f > 1 && trained.position == Position::Learned {
            out.push((t, None));
            continue;
        }
        let mut ck = checkpoint::load_inference_at_context(ckpt, 8, t)?;
        let val = match &tokens {
            Some(v) => v,
            None => tokens.insert(val_tokens(&ck.tokenizer, cfg)?),
        };
        let r = crate::eval::perplexity::sliding_window_eval(&mut ck.model, val, t + 1, t)?;
        out.push((t, Some(r.loss)));
    }
    Ok(out)
}

/// Validation windows the head-diversity probe reads.
const DIVERSITY_WINDOWS: usize = 8;

/// Head diversity: on validation windows, per layer, the Jensen–Shannon divergence between the
/// attention distributions of two heads for the same query, averaged over the queries (all but
/// the first, which can only attend to itself), the windows and every pair of heads. 0 means
/// the heads attend alike; ln 2 ≈ 0.693 is the most two distributions can differ.
fn head_diversity(ckpt: &Path, cfg: &RunConfig) -> Result<Vec<f64>> {
    let mut ck = crate::io::checkpoint::load(ckpt, 1, false)?;
    if ck.model.config.n_head < 2 {
        return Ok(Vec::new());
    }
    let val = val_tokens(&ck.tokenizer, cfg)?;
    let t = ck.model.config.block_size;
    let windows = DIVERSITY_WINDOWS.min(val.len() / t);
    ensure!(windows > 0, "the validation split is shorter than one window of {t} tokens");
    let mut per_layer: Vec<f64> = Vec::new();
    for w in 0..windows {
        let maps = crate::inspect::interpret::attention::attention_maps(&mut ck.model, &val[w * t..(w + 1) * t], None)?;
        per_layer.resize(maps.len(), 0.0);
        for (l, m) in maps.iter().enumerate() {
            per_layer[l] += mean_pairwise_js(m) / windows as f64;
        }
    }
    Ok(per_layer)
}

/// The mean over heads pairs and queries 1.. of the Jensen–Shannon divergence (nats) between
/// two heads' rows of one attention layer.
fn mean_pairwise_js(m: &crate::inspect::interpret::attention::AttentionLayer) -> f64 {
    let (nh, tq, tk) = (m.n_head, m.tq, m.tk);
    let (mut sum, mut n) = (0.0, 0usize);
    for a in 0..nh {
        for b in a + 1..nh {
            for i in 1..tq {
                let (p, q) = (&m.head(a)[i * tk..(i + 1) * tk], &m.head(b)[i * tk..(i + 1) * tk]);
                sum += js_divergence(p, q);
                n += 1;
            }
        }
    }
    sum / n.max(1) as f64
}

/// JS(p, q) = ½ KL(p‖m) + ½ KL(q‖m), m = ½(p + q), in nats.
pub(crate) fn js_divergence(p: &[f32], q: &[f32]) -> f64 {
    let kl_to_mid = |x: f64, y: f64| if x > 0.0 { x * (2.0 * x / (x + y)).ln() } else { 0.0 };
    0.5 * p.iter().zip(q).map(|(&x, &y)| kl_to_mid(x as f64, y as f64) + kl_to_mid(y as f64, x as f64)).sum::<f64>()
}

/// Windows of the permutation probe, and their length cap.
const PROBE_WINDOWS: usize = 64;

/// The permutation test of position: on validation windows of `block_size` tokens, the
/// cross-entropy of the next token after the last position, (a) as the text is and (b) with the
/// tokens before the last one shuffled (the last token and the target stay). A model without
/// positions sees only the multiset of earlier tokens, so (b) equals (a) up to summation order;
/// a model that uses order loses from the shuffle. Returns the mean losses (a), (b).
fn permutation_losses(ckpt: &Path, cfg: &RunConfig, seed: u64) -> Result<(f64, f64)> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut ck = crate::io::checkpoint::load(ckpt, PROBE_WINDOWS, false)?;
    let text = crate::util::read_corpus(Path::new(&cfg.data.path))?;
    let tokens = ck.tokenizer.encode(&text)?;
    let val = crate::data::TokenDataset::split(tokens, cfg.data.val_fraction)?.val;
    let t = ck.model.config.block_size;
    let windows = PROBE_WINDOWS.min(val.len().saturating_sub(1) / t);
    ensure!(windows > 0, "the validation split is shorter than one window of {} tokens", t + 1);
    let v = ck.model.config.vocab_size;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut input: Vec<u32> = (0..windows).flat_map(|w| val[w * t..(w + 1) * t].to_vec()).collect();
    let targets: Vec<usize> = (0..windows).map(|w| val[(w + 1) * t] as usize).collect();
    let mut last_loss = |input: &[u32]| -> Result<f64> {
        ck.model.forward_lm(input, None, windows, t, false, 0)?;
        let logits = ck.model.logits();
        let loss = (0..windows)
            .map(|w| {
                let row = &logits[(w * t + t - 1) * v..(w * t + t) * v];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                lse - row[targets[w]] as f64
            })
            .sum::<f64>();
        Ok(loss / windows as f64)
    };
    let ordered = last_loss(&input)?;
    for w in input.chunks_mut(t) {
        w[..t - 1].shuffle(&mut rng);
    }
    Ok((ordered, last_loss(&input)?))
}

/// The mean of `xs` (a non-empty list here).
fn mean(xs: &[f64]) -> f64 {
    stats(xs).mean
}

/// An arm's figures over its seeds (`runs`: at least one).
fn summarize(arm: &str, x: Option<f64>, runs: &[&ArmRun]) -> ArmSummary {
    let val = stats(&runs.iter().map(|r| r.val_loss).collect::<Vec<_>>());
    let per_layer_mean = |f: fn(&ArmRun) -> &Vec<f64>| {
        let v: Vec<f64> = runs.iter().filter(|r| !f(r).is_empty()).map(|r| mean(f(r))).collect();
        (!v.is_empty()).then(|| mean(&v))
    };
    ArmSummary {
        arm: arm.to_string(),
        x,
        val_mean: val.mean,
        val_sd: val.std,
        val_min: val.min,
        val_max: val.max,
        train_mean: mean(&runs.iter().map(|r| r.train_loss).collect::<Vec<_>>()),
        seconds_mean: mean(&runs.iter().map(|r| r.seconds).collect::<Vec<_>>()),
        // From a run that finished (a diverged one has no checkpoint to count).
        params: runs.iter().map(|r| r.params).max().unwrap_or(0),
        flops_per_token: runs.iter().find_map(|r| r.flops_per_token),
        grad_norm_first_last: runs
            .first()
            .filter(|r| !r.grad_norm.is_empty())
            .map(|r| (r.grad_norm[0], *r.grad_norm.last().unwrap())),
        attn_entropy: per_layer_mean(|r| &r.attn_entropy),
        dead_share: per_layer_mean(|r| &r.dead_share),
        permutation: {
            let p: Vec<(f64, f64)> =
                runs.iter().filter_map(|r| r.last_loss_ordered.zip(r.last_loss_shuffled)).collect();
            (!p.is_empty()).then(|| {
                (mean(&p.iter().map(|x| x.0).collect::<Vec<_>>()), mean(&p.iter().map(|x| x.1).collect::<Vec<_>>()))
            })
        },
        extrapolation: runs.first().map_or(Vec::new(), |first| {
            (0..first.extrapolation.len())
                .map(|k| {
                    let losses: Option<Vec<f64>> =
                        runs.iter().map(|r| r.extrapolation.get(k).and_then(|e| e.1)).collect();
                    (first.extrapolation[k].0, losses.map(|l| mean(&l)))
                })
                .collect()
        }),
        head_diversity: per_layer_mean(|r| &r.head_diversity),
        recall_accuracy: runs
            .first()
            .filter(|r| !r.recall_bins.is_empty())
            .map(|_| mean(&runs.iter().map(|r| overall_accuracy(&r.recall_bins)).collect::<Vec<_>>())),
        context_losses: runs.first().map_or(Vec::new(), |first| {
            (0..first.context_losses.len())
                .map(|j| {
                    let l: Vec<f64> = runs.iter().filter_map(|r| r.context_losses.get(j).map(|c| c.1)).collect();
                    (first.context_losses[j].0, mean(&l))
                })
                .collect()
        }),
        recall_bins: runs.first().map_or(Vec::new(), |first| {
            // The held-out lines are the same for every seed, so are the bins.
            first
                .recall_bins
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    (b.0, mean(&runs.iter().filter_map(|r| r.recall_bins.get(k).map(|x| x.1)).collect::<Vec<_>>()))
                })
                .collect()
        }),
        data: runs.first().map_or(String::new(), |r| r.data.clone()),
        learning_rate: runs.first().map_or(0.0, |r| r.learning_rate),
        diverged: runs.iter().filter_map(|r| r.diverged.as_ref().map(|w| format!("seed {}: {w}", r.seed))).collect(),
    }
}

/// Accuracy over every query of (bin start, accuracy, queries) bins.
fn overall_accuracy(bins: &[(usize, f64, usize)]) -> f64 {
    let n: usize = bins.iter().map(|b| b.2).sum();
    bins.iter().map(|b| b.1 * b.2 as f64).sum::<f64>() / n.max(1) as f64
}

fn table(arms: &[ArmSummary], spec: &Spec) -> Table {
    let health = spec.probes.iter().any(|p| p == "health");
    let mut columns: Vec<String> =
        ["arm", "val loss", "± sd (seeds)", "train loss", "parameters", "forward FLOPs/token", "s per run"]
            .map(String::from)
            .to_vec();
    if health {
        columns.extend(["grad norm layer 0 → last", "attention entropy (nats)", "dead FFN units"].map(String::from));
    }
    let permutation = spec.probes.iter().any(|p| p == "permutation");
    if permutation {
        columns.extend(["last-token loss", "… context shuffled"].map(String::from));
    }
    let lengths: Vec<usize> = arms
        .iter()
        .find(|a| !a.extrapolation.is_empty())
        .map_or(Vec::new(), |a| a.extrapolation.iter().map(|e| e.0).collect());
    columns.extend(lengths.iter().map(|t| format!("loss reading {t} tokens")));
    let diversity = spec.probes.iter().any(|p| p == "diversity");
    if diversity {
        columns.push("head diversity (JS, nats)".into());
    }
    let recall = spec.recall.map(|r| r.bin);
    let far = arms.iter().filter_map(|a| a.recall_bins.last().map(|b| b.0)).max().unwrap_or(0);
    if let Some(bin) = recall {
        columns.extend([
            "recall accuracy".to_string(),
            format!("… distance < {bin}"),
            format!("… distance {far}–{}", far + bin - 1),
        ]);
    }
    let rows = arms
        .iter()
        .map(|a| {
            let mut row = vec![
                a.arm.clone(),
                if a.val_mean.is_finite() { format!("{:.4}", a.val_mean) } else { "diverged".into() },
                if a.val_sd.is_finite() { format!("{:.4}", a.val_sd) } else { "–".into() },
                if a.train_mean.is_finite() { format!("{:.4}", a.train_mean) } else { "–".into() },
                // 0: every seed diverged, no checkpoint to count.
                if a.params > 0 { a.params.to_string() } else { "–".into() },
                a.flops_per_token.map_or("–".into(), |f| format!("{:.3e}", f)),
                format!("{:.1}", a.seconds_mean),
            ];
            if health {
                row.push(a.grad_norm_first_last.map_or("–".into(), |(f, l)| format!("{f:.3e} → {l:.3e}")));
                row.push(a.attn_entropy.map_or("–".into(), |e| format!("{e:.3}")));
                row.push(a.dead_share.map_or("–".into(), |d| format!("{:.1}%", 100.0 * d)));
            }
            if permutation {
                row.push(a.permutation.map_or("–".into(), |p| format!("{:.4}", p.0)));
                row.push(a.permutation.map_or("–".into(), |p| format!("{:.4}", p.1)));
            }
            for k in 0..lengths.len() {
                row.push(a.extrapolation.get(k).and_then(|e| e.1).map_or("–".into(), |l| format!("{l:.4}")));
            }
            if diversity {
                row.push(a.head_diversity.map_or("–".into(), |d| format!("{d:.4}")));
            }
            if recall.is_some() {
                let pct = |x: Option<f64>| x.map_or("–".into(), |x| format!("{:.1}%", 100.0 * x));
                row.push(pct(a.recall_accuracy));
                row.push(pct(a.recall_bins.first().filter(|b| b.0 == 0).map(|b| b.1)));
                row.push(pct(a.recall_bins.iter().find(|b| b.0 == far).map(|b| b.1)));
            }
            row
        })
        .collect();
    Table { columns, rows }
}

/// Writes a chart as NAME.png and NAME.svg in `dir` with `draw(path)`.
pub(super) fn write_chart_pair(
    title: &str,
    name: &str,
    dir: &Path,
    draw: impl Fn(&Path) -> Result<()>,
) -> Result<ChartFiles> {
    let (png, svg) = (format!("{name}.png"), format!("{name}.svg"));
    draw(&dir.join(&png))?;
    draw(&dir.join(&svg))?;
    Ok(ChartFiles { title: title.to_string(), png, svg })
}

/// Draws heat maps (`cols` panels a row) as NAME.png and NAME.svg in `dir`, titled `drawn` on the
/// image (short enough to fit above the panels) and `caption` in the report.
pub(super) fn write_heatmaps(
    maps: &[Heatmap],
    cols: usize,
    caption: &str,
    drawn: &str,
    scale: Scale,
    name: &str,
    dir: &Path,
) -> Result<ChartFiles> {
    write_chart_pair(caption, name, dir, |path| plot_heatmaps(maps, cols, drawn, scale, path).map(|_| ()))
}

/// Draws `chart` as NAME.png and NAME.svg in `dir`.
pub(super) fn draw(chart: &XyChart, name: &str, dir: &Path) -> Result<ChartFiles> {
    draw_on(chart, Axes::default(), name, dir)
}

/// [`draw`] with log or linear axes.
fn draw_on(chart: &XyChart, axes: Axes, name: &str, dir: &Path) -> Result<ChartFiles> {
    write_chart_pair(&chart.title, name, dir, |path| plot_xy_on(chart, axes, path).map(|_| ()))
}

fn charts(
    spec: &Spec,
    arms: &[ArmSummary],
    runs: &[ArmRun],
    dir: &Path,
    groups: &[CorpusFit],
) -> Result<Vec<ChartFiles>> {
    let mut out = Vec::new();
    // Validation loss during training: each arm's first seed, one chart per corpus.
    let tokens = spec.curve_tokens()?;
    for g in groups {
        let curves = arms
            .iter()
            .filter(|a| in_group(&a.arm, g))
            .filter_map(|a| runs.iter().find(|r| r.arm == a.arm))
            .map(|r| XySeries {
                name: short_name(&r.arm, g),
                points: r
                    .val_curve
                    .iter()
                    .map(|&(step, l)| (if tokens { step * r.tokens_per_step as f64 } else { step }, l))
                    .collect(),
            })
            .collect();
        // A run that blows up (a high learning rate) would flatten every other curve: losses
        // above 1.5× the highest first evaluation are drawn at that line, and the title says so.
        let mut curves: Vec<XySeries> = curves;
        let first_max = curves.iter().filter_map(|c| c.points.first().map(|p| p.1)).fold(f64::MIN, f64::max);
        let cap = 1.5 * first_max;
        let mut clipped = false;
        if cap.is_finite() && cap > 0.0 {
            for p in curves.iter_mut().flat_map(|c| c.points.iter_mut()) {
                if p.1.is_nan() || p.1 > cap {
                    p.1 = cap;
                    clipped = true;
                }
            }
        }
        let note = if clipped { format!(" (losses above {cap:.2} drawn at {cap:.2})") } else { String::new() };
        let c = XyChart {
            title: match &g.corpus {
                Some(name) => format!("{name}: validation loss during training{note}"),
                None => format!("validation loss during training{note}"),
            },
            x: if tokens { "training tokens (step × batch × context)".into() } else { "step".into() },
            y: "val loss".into(),
            series: curves,
            scatter: false,
        };
        let file = g.corpus.as_ref().map_or("val_loss_curves".into(), |name| format!("val_loss_curves_{}", slug(name)));
        let axes = Axes { log_x: tokens, log_y: tokens };
        out.push(draw_on(&c, axes, &file, dir)?);
    }
    // Final validation loss: against the arms' x when they have one, else one point per arm.
    let prefix = |g: &CorpusFit, what: String| g.corpus.as_ref().map_or(what.clone(), |c| format!("{c}: {what}"));
    let c = match &spec.x_label {
        Some(x) => XyChart {
            title: format!("final validation loss against {x}"),
            x: x.clone(),
            y: "val loss (mean over seeds)".into(),
            series: groups
                .iter()
                .flat_map(|g| {
                    let group: Vec<&ArmSummary> = arms.iter().filter(|a| in_group(&a.arm, g)).collect();
                    std::iter::once(XySeries {
                        name: prefix(g, "val loss".into()),
                        points: group
                            .iter()
                            .filter(|a| a.val_mean.is_finite())
                            .filter_map(|a| a.x.map(|x| (x, a.val_mean)))
                            .collect(),
                    })
                    .chain(g.power_law.map(|f| XySeries {
                        name: prefix(g, format!("fit, α = {:.4}", f.alpha)),
                        points: group.iter().filter_map(|a| a.x.map(|x| (x, f.at(x)))).collect(),
                    }))
                    .chain((!g.ngram.is_empty()).then(|| XySeries {
                        name: prefix(g, "n-grams (x = counts)".into()),
                        points: g.ngram.iter().map(|n| (n.counts as f64, n.val_loss)).collect(),
                    }))
                })
                .collect(),
            scatter: false,
        },
        None => XyChart {
            title: "final validation loss per arm".into(),
            x: "arm".into(),
            y: "val loss (mean over seeds)".into(),
            series: arms
                .iter()
                .enumerate()
                .filter(|(_, a)| a.val_mean.is_finite())
                .map(|(i, a)| XySeries { name: a.arm.clone(), points: vec![(i as f64 + 1.0, a.val_mean)] })
                .collect(),
            scatter: true,
        },
    };
    // A power law is a straight line on log-log axes.
    let axes = if spec.fit.is_some() { Axes { log_x: true, log_y: true } } else { Axes::default() };
    out.push(draw_on(&c, axes, "val_loss_final", dir)?);

    // Learning-rate sensitivity: each set-up trained at two or more rates, one line.
    let mut by_setup: Vec<XySeries> = Vec::new();
    for a in arms.iter().filter(|a| a.learning_rate > 0.0 && a.val_mean.is_finite()) {
        let key = findings::without_rate(&a.arm);
        match by_setup.iter_mut().find(|s| s.name == key) {
            Some(s) => s.points.push((a.learning_rate, a.val_mean)),
            None => by_setup.push(XySeries { name: key.to_string(), points: vec![(a.learning_rate, a.val_mean)] }),
        }
    }
    by_setup.retain(|s| s.points.len() >= 2);
    if !by_setup.is_empty() {
        by_setup.iter_mut().for_each(|s| s.points.sort_by(|a, b| a.0.total_cmp(&b.0)));
        let c = XyChart {
            title: "learning-rate sensitivity: final validation loss against the peak learning rate".into(),
            x: "peak learning rate (log)".into(),
            y: "val loss (mean over seeds)".into(),
            series: by_setup,
            scatter: false,
        };
        out.push(draw_on(&c, Axes { log_x: true, log_y: false }, "lr_sensitivity", dir)?);
    }

    if arms.iter().any(|a| !a.extrapolation.is_empty()) {
        let c = XyChart {
            title: "length extrapolation: validation loss against tokens read".into(),
            x: "tokens read (trained at the first)".into(),
            y: "val loss".into(),
            series: arms
                .iter()
                .map(|a| XySeries {
                    name: a.arm.clone(),
                    points: a.extrapolation.iter().filter_map(|&(t, l)| l.map(|l| (t as f64, l))).collect(),
                })
                .filter(|s| !s.points.is_empty())
                .collect(),
            scatter: false,
        };
        out.push(draw(&c, "extrapolation", dir)?);
    }
    if arms.iter().any(|a| !a.context_losses.is_empty()) {
        let c = XyChart {
            title: "how much context is used: loss given only the last k tokens".into(),
            x: "k, tokens of context (log₂)".into(),
            y: "val loss".into(),
            series: arms
                .iter()
                .filter(|a| !a.context_losses.is_empty())
                .map(|a| XySeries {
                    name: a.arm.clone(),
                    points: a.context_losses.iter().map(|&(k, l)| ((k as f64).log2(), l)).collect(),
                })
                .collect(),
            scatter: false,
        };
        out.push(draw(&c, "context_usage", dir)?);
    }
    if let Some(r) = &spec.recall {
        let mut series: Vec<XySeries> = arms
            .iter()
            .map(|a| XySeries {
                name: a.arm.clone(),
                points: a.recall_bins.iter().map(|&(d, acc)| ((d + r.bin / 2) as f64, 100.0 * acc)).collect(),
            })
            .collect();
        let span = arms.iter().flat_map(|a| a.recall_bins.iter().map(|b| b.0 + r.bin)).max().unwrap_or(r.bin);
        series.push(XySeries { name: "chance (1 in 10)".into(), points: vec![(0.0, 10.0), (span as f64, 10.0)] });
        let c = XyChart {
            title: "associative recall: held-out accuracy against distance".into(),
            x: "distance to the pair (characters, bin centres)".into(),
            y: "accuracy (%)".into(),
            series,
            scatter: false,
        };
        out.push(draw(&c, "recall_accuracy", dir)?);
    }
    if spec.probes.iter().any(|p| p == "diversity") {
        let series: Vec<XySeries> = arms
            .iter()
            .filter_map(|a| runs.iter().find(|r| r.arm == a.arm))
            .filter(|r| !r.head_diversity.is_empty())
            .map(|r| XySeries {
                name: r.arm.clone(),
                points: r.head_diversity.iter().enumerate().map(|(l, &v)| (l as f64, v)).collect(),
            })
            .collect();
        if !series.is_empty() {
            let c = XyChart {
                title: "head diversity per layer: mean Jensen–Shannon divergence between heads".into(),
                x: "layer".into(),
                y: "JS divergence (nats)".into(),
                series,
                scatter: false,
            };
            out.push(draw(&c, "head_diversity_layers", dir)?);
        }
    }
    if spec.probes.iter().any(|p| p == "health") {
        let per_layer = |f: fn(&ArmRun) -> &Vec<f64>| -> Vec<XySeries> {
            arms.iter()
                .filter_map(|a| runs.iter().find(|r| r.arm == a.arm))
                .filter(|r| !f(r).is_empty())
                .map(|r| XySeries {
                    name: r.arm.clone(),
                    points: f(r).iter().enumerate().map(|(l, &v)| (l as f64, v)).collect(),
                })
                .collect()
        };
        let g = per_layer(|r| &r.grad_norm);
        if !g.is_empty() {
            let c = XyChart {
                title: "gradient norm per layer (last health step)".into(),
                x: "layer".into(),
                y: "gradient L2 norm".into(),
                series: g,
                scatter: false,
            };
            out.push(draw(&c, "grad_norm_layers", dir)?);
        }
        let e = per_layer(|r| &r.attn_entropy);
        if e.iter().any(|s| s.points.iter().any(|p| p.1.is_finite())) {
            let c = XyChart {
                title: "attention entropy per layer (last health step)".into(),
                x: "layer".into(),
                y: "entropy (nats)".into(),
                series: e,
                scatter: false,
            };
            out.push(draw(&c, "attn_entropy_layers", dir)?);
        }
    }
    Ok(out)
}

/// A cost of an arm (parameters, FLOPs per token, seconds), if it has one.
type CostOf = fn(&ArmSummary) -> Option<f64>;

/// Question 10: every run of the other results present in `out`, as points of validation loss
/// against parameters, FLOPs per token and time; the Pareto front of each.
pub(super) fn pareto(q: &Question, spec: &Spec, budget: Budget, out: &Path, dir: &Path) -> Result<ExplainResult> {
    // Losses compare only on one corpus: the base config's.
    let base = base_config(spec.base.as_deref().context("a pareto experiment needs `base` (its corpus)")?)?;
    let corpus = RunConfig::from_toml_str(base, &[])?.data.path;
    let (mut points, mut other_corpus): (Vec<(String, ArmSummary)>, Vec<String>) = (Vec::new(), Vec::new());
    for other in super::QUESTIONS.iter().filter(|o| o.id != q.id) {
        let path = out.join(other.id).join("result.json");
        let Ok(r) = super::ExplainResult::read(&path) else { continue };
        let Some(arms) = r.data.get("arms").and_then(|a| serde_json::from_value::<Vec<ArmSummary>>(a.clone()).ok())
        else {
            continue;
        };
        // A diverged arm has no loss to place.
        for a in arms.into_iter().filter(|a| a.val_mean.is_finite()) {
            if a.data == corpus {
                points.push((other.id.to_string(), a));
            } else {
                other_corpus.push(format!("{}: {}", other.id, a.arm));
            }
        }
    }
    ensure!(
        !points.is_empty(),
        "question {} compares the runs of the other experiments on {corpus}: run some first (lmlab explain run all)",
        q.number
    );
    let mut result = new_result(q, spec, budget, Vec::new());
    let mut charts = Vec::new();
    let axes: [(&str, &str, CostOf); 3] = [
        ("params", "parameters", |a| Some(a.params as f64)),
        ("flops", "forward FLOPs per token", |a| a.flops_per_token),
        ("seconds", "training seconds per run", |a| Some(a.seconds_mean)),
    ];
    let mut fronts = serde_json::Map::new();
    for (name, label, f) in axes {
        let all: Vec<(f64, f64, String)> =
            points.iter().filter_map(|(id, a)| f(a).map(|x| (x, a.val_mean, format!("{id}: {}", a.arm)))).collect();
        if all.is_empty() {
            continue; // e.g. FLOPs when only recurrent baselines are present
        }
        let front = pareto_front(&all);
        // Dots: the runs have no order to join them in. The costs span orders of magnitude
        // (5K to 5M parameters at the full budget), so the cost axis is logarithmic.
        let c = XyChart {
            title: format!("validation loss against {label} (log scale; the front in red)"),
            x: label.into(),
            y: "val loss".into(),
            series: vec![
                XySeries { name: "runs".into(), points: all.iter().map(|p| (p.0, p.1)).collect() },
                XySeries { name: "Pareto front".into(), points: front.iter().map(|p| (p.0, p.1)).collect() },
            ],
            scatter: true,
        };
        charts.push(draw_on(&c, Axes { log_x: true, log_y: false }, &format!("pareto_{name}"), dir)?);
        result.findings.push(findings::pareto(label, &front));
        fronts.insert(name.into(), serde_json::json!(front));
    }
    result.charts = charts;
    if !other_corpus.is_empty() {
        result.findings.push(format!(
            "Left out, trained on another corpus than {corpus} (their losses are not comparable): {}.",
            other_corpus.join(", ")
        ));
    }
    result.table = Table {
        columns: ["experiment: arm", "val loss", "parameters", "forward FLOPs/token", "s per run"]
            .map(String::from)
            .to_vec(),
        rows: points
            .iter()
            .map(|(id, a)| {
                vec![
                    format!("{id}: {}", a.arm),
                    format!("{:.4}", a.val_mean),
                    a.params.to_string(),
                    a.flops_per_token.map_or("–".into(), |f| format!("{f:.3e}")),
                    format!("{:.1}", a.seconds_mean),
                ]
            })
            .collect(),
    };
    result.data = serde_json::json!({ "points": points.iter().map(|(id, a)| serde_json::json!({"experiment": id, "arm": a})).collect::<Vec<_>>(), "fronts": fronts });
    Ok(result)
}

/// The points no other point beats on both cost (x) and loss (y), by increasing cost.
fn pareto_front(points: &[(f64, f64, String)]) -> Vec<(f64, f64, String)> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut front: Vec<(f64, f64, String)> = Vec::new();
    for p in sorted {
        if front.last().is_none_or(|last| p.1 < last.1) {
            front.push(p);
        }
    }
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_law_fit_recovers_an_exact_law_and_reports_its_quality() {
        let law = |x: f64| (8.8e13 / x).powf(0.076);
        let pts: Vec<(f64, f64)> = [1e4, 1e5, 1e6, 1e7].iter().map(|&x| (x, law(x))).collect();
        let f = PowerLaw::fit(&pts).unwrap();
        assert!((f.alpha - 0.076).abs() < 1e-12 && (f.x_c / 8.8e13 - 1.0).abs() < 1e-9 && (f.r2 - 1.0).abs() < 1e-12);
        assert!((f.at(3e5) - law(3e5)).abs() < 1e-12);
        // Noisy points: R² below one; too few or degenerate points are errors.
        let noisy = [(1e4, 3.0), (1e5, 2.9), (1e6, 2.5), (1e7, 2.45)];
        assert!(PowerLaw::fit(&noisy).unwrap().r2 < 1.0);
        assert!(PowerLaw::fit(&[(1e4, 3.0)]).is_err());
        assert!(PowerLaw::fit(&[(1e4, 3.0), (1e4, 2.0)]).is_err());
    }

    #[test]
    fn js_divergence_is_zero_for_equal_rows_and_ln2_for_disjoint_ones() {
        assert_eq!(js_divergence(&[0.25, 0.75], &[0.25, 0.75]), 0.0);
        assert!((js_divergence(&[1.0, 0.0], &[0.0, 1.0]) - std::f64::consts::LN_2).abs() < 1e-12);
        // Against a direct evaluation of ½KL(p‖m) + ½KL(q‖m).
        let (p, q) = ([0.5f32, 0.3, 0.2], [0.1f32, 0.6, 0.3]);
        let kl = |a: &[f32], b: &[f64]| a.iter().zip(b).map(|(&x, &y)| x as f64 * (x as f64 / y).ln()).sum::<f64>();
        let m: Vec<f64> = p.iter().zip(&q).map(|(&x, &y)| 0.5 * (x as f64 + y as f64)).collect();
        assert!((js_divergence(&p, &q) - 0.5 * (kl(&p, &m) + kl(&q, &m))).abs() < 1e-12);
    }

    #[test]
    fn pareto_front_keeps_only_unbeaten_points() {
        let p = |x: f64, y: f64| (x, y, format!("{x}"));
        let front = pareto_front(&[p(3.0, 1.0), p(1.0, 3.0), p(2.0, 2.5), p(2.0, 3.5), p(4.0, 1.5)]);
        let xy: Vec<(f64, f64)> = front.iter().map(|q| (q.0, q.1)).collect();
        assert_eq!(xy, vec![(1.0, 3.0), (2.0, 2.5), (3.0, 1.0)]);
    }

    fn fake_run(arm: &str, val_loss: f64, params: usize, data: &str) -> ArmRun {
        ArmRun {
            arm: arm.into(),
            seed: 1,
            val_loss,
            train_loss: val_loss,
            val_curve: vec![(100.0, val_loss)],
            seconds: 1.0,
            ms_per_iter: 10.0,
            params,
            flops_per_token: None,
            grad_norm: vec![],
            attn_entropy: vec![],
            dead_share: vec![],
            last_loss_ordered: None,
            last_loss_shuffled: None,
            extrapolation: vec![],
            head_diversity: vec![],
            recall_bins: vec![],
            context_losses: vec![],
            data: data.into(),
            tokens_per_step: 512,
            learning_rate: 1e-3,
            diverged: None,
        }
    }

    #[test]
    fn a_diverged_seed_makes_its_arm_diverged_and_survives_result_json() {
        let cfg = RunConfig::from_toml_str(base_config("lm-char.toml").unwrap(), &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bad = diverged_run("no norm", 2, &cfg, dir.path(), "gradient norm is NaN at step 280".into());
        let good = fake_run("no norm", 2.5, 1000, &cfg.data.path);
        let a = summarize("no norm", None, &[&good, &bad]);
        let spec: Spec = toml::from_str("kind = \"sweep\"\nsetup = \"\"").unwrap();
        assert!(a.val_mean.is_nan() && a.params == 1000);
        assert_eq!(a.diverged, ["seed 2: gradient norm is NaN at step 280"]);
        assert_eq!(table(std::slice::from_ref(&a), &spec).rows[0][1], "diverged");
        // serde_json writes NaN as null; it reads back as NaN.
        let back: ArmSummary = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert!(back.val_mean.is_nan() && back.diverged == a.diverged);
        let run: ArmRun = serde_json::from_str(&serde_json::to_string(&bad).unwrap()).unwrap();
        assert!(run.val_loss.is_nan() && run.learning_rate == 1e-3);
        let f = findings::sweep(&spec, &[a], &[good, bad]);
        assert!(f[0].starts_with("Did not train to a finite loss: no norm (seed 2: gradient norm is NaN"), "{f:?}");
    }

    #[test]
    fn pareto_compares_only_runs_on_its_corpus() {
        let dir = tempfile::tempdir().unwrap();
        let base = RunConfig::from_toml_str(base_config("lm-char.toml").unwrap(), &[]).unwrap();
        let write = |id: &str, runs: &[ArmRun]| {
            let q = super::super::question(id).unwrap();
            let spec: Spec = toml::from_str(q.experiment.unwrap()).unwrap();
            let mut r = new_result(q, &spec, Budget::Quick, vec![1]);
            let arms: Vec<ArmSummary> = runs.iter().map(|x| summarize(&x.arm, None, &[x])).collect();
            r.data = serde_json::json!({ "arms": arms });
            std::fs::create_dir_all(dir.path().join(id)).unwrap();
            std::fs::write(dir.path().join(id).join("result.json"), serde_json::to_string(&r).unwrap()).unwrap();
        };
        let shakespeare = base.data.path.as_str();
        write("scale", &[fake_run("small", 2.6, 1000, shakespeare), fake_run("big", 2.4, 9000, shakespeare)]);
        // Lower losses on easier data: they would take the whole front if they were compared.
        write("long-range", &[fake_run("LSTM", 1.3, 500, "out/recall.txt")]);
        let q = super::super::question("pareto").unwrap();
        let spec: Spec = toml::from_str(q.experiment.unwrap()).unwrap();
        let out = dir.path().join("pareto");
        std::fs::create_dir_all(&out).unwrap();
        let r = pareto(q, &spec, Budget::Quick, dir.path(), &out).unwrap();
        let points = r.data["points"].as_array().unwrap();
        assert_eq!(points.len(), 2, "{points:?}");
        assert!(points.iter().all(|p| p["experiment"] == "scale"));
        assert_eq!(r.data["fronts"]["params"].as_array().unwrap().len(), 2);
        assert!(
            r.findings.iter().any(|f| f.starts_with("Left out") && f.contains("long-range: LSTM")),
            "{:?}",
            r.findings
        );
        // Nothing on the corpus: an error that says so.
        std::fs::remove_dir_all(dir.path().join("scale")).unwrap();
        let e = pareto(q, &spec, Budget::Quick, dir.path(), &out).unwrap_err().to_string();
        assert!(e.contains("tinyshakespeare.txt"), "{e}");
    }

    #[test]
    fn the_lead_is_weighed_against_the_two_leaders_spread_only() {
        let q = super::super::question("heads").unwrap();
        let spec: Spec = toml::from_str(q.experiment.unwrap()).unwrap();
        let seeded = |arm: &str, losses: [f64; 2]| -> Vec<ArmRun> {
            losses
                .iter()
                .enumerate()
                .map(|(i, &l)| ArmRun { seed: i as u64 + 1, ..fake_run(arm, l, 1000, "d") })
                .collect()
        };
        let runs: Vec<ArmRun> =
            [seeded("a", [1.00, 1.02]), seeded("b", [1.10, 1.12]), seeded("erratic", [2.0, 3.0])].concat();
        let arms: Vec<ArmSummary> = ["a", "b", "erratic"]
            .iter()
            .map(|name| summarize(name, None, &runs.iter().filter(|r| r.arm == *name).collect::<Vec<_>>()))
            .collect();
        let found = super::super::findings::sweep(&spec, &arms, &runs);
        let lead = found.iter().find(|f| f.starts_with("The lead of a over b")).expect("a lead finding");
        // 0.100 against twice 0.014 (a's and b's sd), not twice the erratic arm's 0.707.
        assert!(lead.contains("(0.100) is larger than") && lead.contains("(0.014)"), "{lead}");
    }
}
