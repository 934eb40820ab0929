//! Question 14: the applications. Each one is trained with its own committed config (`configs/`,
//! compiled in) and the budget's overrides through `train::train` — the same dispatch on
//! `data.task` as `lmlab train` — then scored on held-out test items with the ordinary evaluators
//! and set against a trivial baseline scored the same way:
//!
//! ```text
//! task        model output                       score                     baseline
//! translate   greedy decoding (infer::translate)  BLEU, chrF (sacrebleu)    the source copied
//! summarize   greedy, no repeated n-gram          ROUGE-1/2/L (best ref.)   LEAD-3
//! qa          span head (the trainer's answers)   SQuAD EM / F1             best-overlap sentence
//! classify    predict_file (lmlab classify)       accuracy, macro-F1        majority class
//! lm          sliding-window perplexity; samples  perplexity; words found   unigram / bigram model
//! ```
//!
//! The quick budget trains on the first training examples (`train_examples`, written to a file
//! the run's config points at) and scores the first test items (`test_examples`); every model
//! output, baseline output and reference is saved under `outputs/NAME/` so that `lmlab eval`
//! can rescore it. The QA application needs all-MiniLM-L6-v2 (scripts/fetch_minilm.sh); without
//! it that application is reported as skipped, with the reason.

use super::sweep::{drop_weights, write_chart_pair};
use super::{base_config, new_result, Budget, ChartFiles, ExplainResult, Question, Spec, Table};
use crate::config::{RunConfig, Task};
use crate::data::classify::LabelledText;
use crate::data::TokenDataset;
use crate::eval::classification::{classification_report, ClassificationReport, ZeroDivision};
use crate::eval::squad::{evaluate, read_squad_file, Question as SquadQuestion, SquadScore};
use crate::inspect::plot::{plot_xy, read_metrics, XyChart, XySeries};
use crate::io::atomic::write_file_atomic;
use crate::train::{train, TrainOptions, TrainSummary};
use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One application of the experiment file (`[[applications]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Application {
    pub name: String,
    /// Its run config: a committed file (`configs/...`, see [`super::base_config`]).
    pub base: String,
    /// Translation: the line-aligned test files (a translation config names no test set).
    #[serde(default)]
    pub test_source: Option<String>,
    #[serde(default)]
    pub test_reference: Option<String>,
    /// Summarization: no n-gram of this many tokens repeats in a summary (0 = off).
    #[serde(default)]
    pub no_repeat_ngram_size: usize,
    #[serde(default)]
    pub quick: AppBudget,
    #[serde(default)]
    pub full: AppBudget,
}

/// What one budget changes of an application.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppBudget {
    /// Config overrides (`--set` syntax).
    #[serde(default)]
    pub set: Vec<String>,
    /// Training examples, the first in file order (QA: questions, in whole rounds of one
    /// paragraph per article); 0 = all.
    #[serde(default)]
    pub train_examples: usize,
    /// Test items scored, the first in file order (QA: held-out questions, in rounds as above;
    /// generation: validation characters); 0 = all.
    #[serde(default)]
    pub test_examples: usize,
}

impl Application {
    fn budget(&self, budget: Budget) -> &AppBudget {
        match budget {
            Budget::Quick => &self.quick,
            Budget::Full => &self.full,
        }
    }
}

/// One figure of an application: the model's and the baseline's value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Score {
    pub metric: String,
    pub model: f64,
    pub baseline: f64,
    pub baseline_name: String,
    /// Some(true): higher is better; Some(false): lower; None: a description (closer to the
    /// baseline, e.g. the real text, is the aim).
    pub higher_is_better: Option<bool>,
}

impl Score {
    fn new(metric: &str, model: f64, baseline: f64, baseline_name: &str, higher_is_better: Option<bool>) -> Score {
        Score { metric: metric.into(), model, baseline, baseline_name: baseline_name.into(), higher_is_better }
    }

    /// Whether the model does better than the baseline (None for a description).
    fn model_wins(&self) -> Option<bool> {
        self.higher_is_better.map(|h| if h { self.model > self.baseline } else { self.model < self.baseline })
    }
}

/// Everything measured of one application.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AppResult {
    pub name: String,
    pub task: String,
    pub config: String,
    /// Why it did not run (the QA application without MiniLM); None when measured.
    pub skipped: Option<String>,
    /// What was scored, in words, and how many items.
    pub test_set: String,
    pub test_items: usize,
    pub train_examples: Option<usize>,
    pub steps: u64,
    pub train_seconds: f64,
    pub eval_seconds: f64,
    pub params: usize,
    /// The trainer's last validation loss and its curve (step, loss).
    pub val_loss: f64,
    pub val_curve: Vec<(f64, f64)>,
    pub scores: Vec<Score>,
    /// Index into `scores` of the figure the chart shows (0–100, higher is better), and its
    /// name on the chart's axis.
    pub headline: usize,
    pub headline_label: String,
    /// A few test items with the model's and the baseline's output.
    pub examples: Vec<Value>,
    /// The saved outputs, relative to the result's directory.
    pub outputs: Vec<String>,
    /// Task-specific numbers (BLEU's n-gram precisions, the confusion matrix, ...).
    pub details: Value,
}

impl AppResult {
    fn skipped(app: &Application, task: Task, why: String) -> AppResult {
        AppResult {
            name: app.name.clone(),
            task: task_name(task).into(),
            config: app.base.clone(),
            skipped: Some(why),
            test_set: String::new(),
            test_items: 0,
            train_examples: None,
            steps: 0,
            train_seconds: 0.0,
            eval_seconds: 0.0,
            params: 0,
            val_loss: f64::NAN,
            val_curve: Vec::new(),
            scores: Vec::new(),
            headline: 0,
            headline_label: String::new(),
            examples: Vec::new(),
            outputs: Vec::new(),
            details: Value::Null,
        }
    }
}

fn task_name(t: Task) -> &'static str {
    match t {
        Task::Lm => "lm",
        Task::Classify => "classify",
        Task::Translate => "translate",
        Task::Summarize => "summarize",
        Task::Qa => "qa",
        Task::Pretrained => "pretrained",
        Task::Mlm => "mlm",
    }
}

/// Resolves every application's config of both budgets without training (for
/// `check_experiments`); returns how many. A config with `train.init_from` takes its `[model]`
/// from that checkpoint, which need not exist yet: its keys and types are checked, the rest
/// when it runs.
pub(super) fn check(q: &Question, spec: &Spec) -> Result<usize> {
    let mut n = 0;
    for app in &spec.applications {
        for budget in [Budget::Quick, Budget::Full] {
            let at = || format!("experiments/{}.toml, application {:?}, budget {}", q.id, app.name, budget.name());
            let plain = unresolved(app, budget).with_context(at)?;
            if plain.train.init_from.is_empty() {
                RunConfig::from_toml_str(base_config(&app.base)?, &app.budget(budget).set).with_context(at)?;
            }
            check_limits(app, &plain, budget)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The application's config with the budget's overrides, read without resolving
/// `train.init_from` and without validation (the data paths are what is needed of it).
fn unresolved(app: &Application, budget: Budget) -> Result<RunConfig> {
    let mut table: toml::Table = toml::from_str(base_config(&app.base)?).context("the config is not valid TOML")?;
    for o in &app.budget(budget).set {
        crate::config::apply_override(&mut table, o)?;
    }
    toml::Value::Table(table).try_into().map_err(|e| anyhow::anyhow!("invalid config: {}", e.message()))
}

/// The limits an application's task supports, and the test files it needs.
fn check_limits(app: &Application, cfg: &RunConfig, budget: Budget) -> Result<()> {
    let b = app.budget(budget);
    let at = || format!("application {:?}, budget {}", app.name, budget.name());
    match cfg.data.task {
        Task::Classify => ensure!(
            b.train_examples == 0 && b.test_examples == 0,
            "{}: classification uses whole files (train_examples and test_examples must be 0)",
            at()
        ),
        Task::Lm => {
            ensure!(b.train_examples == 0, "{}: generation trains on the whole text (train_examples = 0)", at())
        }
        Task::Translate => ensure!(
            app.test_source.is_some() && app.test_reference.is_some(),
            "{}: translation needs test_source and test_reference",
            at()
        ),
        Task::Summarize | Task::Qa => {}
        Task::Pretrained | Task::Mlm => {
            bail!("{}: data.task = \"{}\" is not an application", at(), task_name(cfg.data.task))
        }
    }
    Ok(())
}

/// Where one application runs and writes.
pub(super) struct Place {
    /// The training run's `train.out_dir` (weights deleted at the end).
    run_dir: PathBuf,
    /// `outputs/NAME/`: outputs, references and training subsets.
    out: PathBuf,
    /// `out` relative to the result's directory.
    rel: String,
    seed: u64,
    threads: usize,
}

impl Place {
    /// The places of application `name` under the result's directory `dir`: `runs/SLUG/` and
    /// `outputs/SLUG/` (created), where SLUG is the name in lower case with `-` for the rest.
    pub(super) fn new(dir: &Path, name: &str, seed: u64, threads: usize) -> Result<Place> {
        let slug: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let place = Place {
            run_dir: dir.join("runs").join(&slug),
            out: dir.join("outputs").join(&slug),
            rel: format!("outputs/{slug}"),
            seed,
            threads,
        };
        std::fs::create_dir_all(&place.out).with_context(|| format!("cannot create {}", place.out.display()))?;
        Ok(place)
    }

    /// The training run's directory.
    pub(super) fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Writes `name` under `out` and returns its path relative to the result's directory.
    fn save(&self, name: &str, bytes: &[u8]) -> Result<String> {
        write_file_atomic(&self.out.join(name), bytes)?;
        Ok(format!("{}/{name}", self.rel))
    }
}

pub(super) fn run(
    q: &Question,
    spec: &Spec,
    budget: Budget,
    dir: &Path,
    progress: bool,
    threads: usize,
) -> Result<ExplainResult> {
    ensure!(!spec.applications.is_empty(), "experiments/{}.toml has no [[applications]]", q.id);
    let b = spec.budget(budget);
    let seed = b.seeds.first().copied().unwrap_or(1);
    let mut result = new_result(q, spec, budget, vec![seed]);
    let bar = super::progress_bar(progress, spec.applications.len(), "applications", q.id);
    let mut apps = Vec::new();
    for app in &spec.applications {
        if let Some(bar) = &bar {
            bar.set_message(app.name.clone());
        }
        let place = Place::new(dir, &app.name, seed, threads)?;
        let r = run_app(app, budget, &place, &mut result.configs)
            .with_context(|| format!("experiments/{}.toml, application {:?}", q.id, app.name))?;
        drop_weights(&place.run_dir);
        apps.push(r);
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result.table = table(&apps);
    result.charts = charts(&apps, dir)?;
    result.findings = findings(&apps, budget);
    result.data = json!({ "applications": apps });
    Ok(result)
}

/// The application's run config: its base, the budget's overrides, `extra` (subset files,
/// the imported checkpoint), the seed, the run directory and the threads. Read like
/// `lmlab train --config` reads a user's config (a `train.init_from` checkpoint gives `[model]`).
fn resolve(app: &Application, budget: Budget, place: &Place, extra: &[String]) -> Result<RunConfig> {
    let mut set = app.budget(budget).set.clone();
    set.extend(extra.iter().cloned());
    set.extend(super::run_overrides(place.seed, &place.run_dir, place.threads));
    RunConfig::from_user_toml_str(base_config(&app.base)?, &set)
}

fn run_app(app: &Application, budget: Budget, place: &Place, configs: &mut Vec<(String, String)>) -> Result<AppResult> {
    // The data paths before any subset; `train.init_from` is not read yet.
    let plain = unresolved(app, budget)?;
    check_limits(app, &plain, budget)?;
    let b = app.budget(budget);
    let mut r = match plain.data.task {
        Task::Translate => translation(app, budget, place, &plain, configs)?,
        Task::Summarize => summarization(app, budget, place, &plain, configs)?,
        Task::Qa => question_answering(app, budget, place, &plain, configs)?,
        Task::Classify => classification(app, budget, place, configs)?,
        Task::Lm => generation(app, budget, place, configs)?,
        Task::Pretrained | Task::Mlm => unreachable!("check_limits refuses it"),
    };
    r.train_examples = (b.train_examples > 0).then_some(b.train_examples);
    Ok(r)
}

/// A finished training run.
struct Trained {
    summary: TrainSummary,
    /// The checkpoint to score: `ckpt_best` when the run wrote one, else the last.
    ck: PathBuf,
    /// (step, validation loss) of every evaluation.
    curve: Vec<(f64, f64)>,
}

/// Trains `cfg` through `train::train`, recording its resolved config.
fn train_run(app: &Application, cfg: RunConfig, configs: &mut Vec<(String, String)>) -> Result<Trained> {
    configs.push((app.name.clone(), cfg.to_toml()));
    let summary = train(cfg, None, &TrainOptions { quiet: true, json: false })?;
    let best = summary.best_checkpoint.clone().filter(|p| p.join("state.json").is_file());
    let ck = best.unwrap_or_else(|| summary.checkpoint.clone());
    let curve = read_metrics(&summary.run_dir.join("metrics.jsonl")).map(|m| m.eval_val.points).unwrap_or_default();
    Ok(Trained { summary, ck, curve })
}

/// A fresh result for a trained application.
fn measured(app: &Application, task: Task, t: &Trained, params: usize) -> AppResult {
    AppResult {
        skipped: None,
        steps: t.summary.steps,
        train_seconds: t.summary.seconds,
        params,
        val_loss: t.summary.val_loss as f64,
        val_curve: t.curve.clone(),
        ..AppResult::skipped(app, task, String::new())
    }
}

/// The first `n` lines of `path` (all with n = 0), as one string with a final newline.
fn first_lines(path: &Path, n: usize) -> Result<String> {
    let lines = crate::util::read_lines(path)?;
    let keep = if n == 0 { lines.len() } else { n.min(lines.len()) };
    Ok(lines[..keep].iter().map(|l| format!("{l}\n")).collect())
}

/// With n > 0, the first `n` lines of each `(key, file, name)` written to `place.out/name`, and
/// the `data.KEY=path` overrides that train on them; none with n = 0 (the whole files).
fn first_lines_overrides(place: &Place, n: usize, files: &[(&str, &str, &str)]) -> Result<Vec<String>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    files
        .iter()
        .map(|&(key, file, name)| {
            let path = place.out.join(name);
            write_file_atomic(&path, first_lines(Path::new(file), n)?.as_bytes())?;
            Ok(format!("data.{key}={:?}", path.display().to_string()))
        })
        .collect()
}

/// Texts as JSON Lines `{"text": ...}` (what `lmlab eval bleu|chrf|rouge` read with `--field
/// text`; a text may hold a newline).
fn jsonl(texts: &[String]) -> Vec<u8> {
    texts.iter().map(|t| format!("{}\n", json!({ "text": t }))).collect::<String>().into_bytes()
}

/// The first `n` items (all with n = 0).
fn take<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    items[..if n == 0 { items.len() } else { n.min(items.len()) }].to_vec()
}

/// Multi30k-style translation: greedy translations of the first test sentences, BLEU and chrF
/// against the reference, and the same for the source copied.
fn translation(
    app: &Application,
    budget: Budget,
    place: &Place,
    plain: &RunConfig,
    configs: &mut Vec<(String, String)>,
) -> Result<AppResult> {
    use crate::eval::{bleu::corpus_bleu, chrf::corpus_chrf};
    use crate::infer::translate::{DecodeOptions, Translator};
    let b = app.budget(budget);
    let extra = first_lines_overrides(
        place,
        b.train_examples,
        &[("src_train", &plain.data.src_train, "train.src"), ("tgt_train", &plain.data.tgt_train, "train.tgt")],
    )?;
    let trained = train_run(app, resolve(app, budget, place, &extra)?, configs)?;
    let started = Instant::now();
    let (src_file, ref_file) = (app.test_source.as_deref().unwrap(), app.test_reference.as_deref().unwrap());
    let sources = take(&crate::util::read_lines(Path::new(src_file))?, b.test_examples);
    let references = take(&crate::util::read_lines(Path::new(ref_file))?, b.test_examples);
    ensure!(sources.len() == references.len(), "{src_file} and {ref_file} differ in length");
    let params = crate::io::checkpoint::load_inference(&trained.ck, 1)?.model.num_params();
    let mut translator = Translator::load(&trained.ck, 64)?;
    let hyps = translator.translate(&sources, &DecodeOptions::default(), |_| {})?;
    let score = |h: &[String]| -> Result<(crate::eval::bleu::Bleu, f64)> {
        let h: Vec<&str> = h.iter().map(String::as_str).collect();
        let refs = vec![references.iter().map(String::as_str).collect::<Vec<_>>()];
        Ok((corpus_bleu(&h, &refs)?, corpus_chrf(&h, &refs)?.score))
    };
    let ((bleu, chrf), (copy_bleu, copy_chrf)) = (score(&hyps)?, score(&sources)?);
    let mut r = measured(app, Task::Translate, &trained, params);
    r.eval_seconds = started.elapsed().as_secs_f64();
    r.test_set = format!("{src_file} → {ref_file}, the first {} sentences, greedy decoding", sources.len());
    r.test_items = sources.len();
    r.scores = vec![
        Score::new("BLEU", bleu.score, copy_bleu.score, "the copied source", Some(true)),
        Score::new("chrF", chrf, copy_chrf, "the copied source", Some(true)),
    ];
    r.headline_label = "BLEU".into();
    r.outputs = vec![
        place.save("model.jsonl", &jsonl(&hyps))?,
        place.save("baseline.jsonl", &jsonl(&sources))?,
        place.save("reference.jsonl", &jsonl(&references))?,
    ];
    r.examples = (0..3.min(sources.len()))
        .map(|i| json!({"source": sources[i], "reference": references[i], "model": hyps[i], "baseline": sources[i]}))
        .collect();
    let bleu_json = |b: &crate::eval::bleu::Bleu| json!({"score": b.score, "precisions": b.precisions, "bp": b.bp, "sys_len": b.sys_len, "ref_len": b.ref_len});
    r.details = json!({"bleu": bleu_json(&bleu), "baseline_bleu": bleu_json(&copy_bleu),
        "distinct_outputs": hyps.iter().collect::<HashSet<_>>().len()});
    Ok(r)
}

/// DialogSum-style summarization: greedy summaries of the first test dialogues, ROUGE against
/// their references, and LEAD-3's.
fn summarization(
    app: &Application,
    budget: Budget,
    place: &Place,
    plain: &RunConfig,
    configs: &mut Vec<(String, String)>,
) -> Result<AppResult> {
    use crate::data::summarize::read_records;
    use crate::eval::summarization::score_summaries;
    use crate::infer::summarize::{Baseline, Summarizer};
    use crate::infer::translate::{DecodeOptions, LengthNorm};
    let b = app.budget(budget);
    let extra = first_lines_overrides(place, b.train_examples, &[("train", &plain.data.train, "train.jsonl")])?;
    let trained = train_run(app, resolve(app, budget, place, &extra)?, configs)?;
    let started = Instant::now();
    let d = &plain.data;
    ensure!(!d.test.is_empty(), "the summarization config names no data.test");
    let records = read_records(Path::new(&d.test), &d.source_field, &d.target_field, &d.reference_fields, true)?;
    let records = take(&records, b.test_examples);
    let sources: Vec<String> = records.iter().map(|r| r.source.clone()).collect();
    let refs: Vec<Vec<String>> = records.iter().map(|r| r.references.clone()).collect();
    let mut summarizer = Summarizer::load(&trained.ck, 64)?;
    let params = summarizer.ck.model.num_params();
    let opts = DecodeOptions {
        beam: 1,
        max_len: summarizer.max_tgt_len(),
        length_penalty: 1.0,
        length_norm: LengthNorm::Hf,
        min_len: 0,
        no_repeat_ngram_size: app.no_repeat_ngram_size,
    };
    let hyps = summarizer.summarize(&sources, &opts, |_| {})?;
    let lead: Vec<String> = sources.iter().map(|s| Baseline::Lead3.summarize(s)).collect();
    let (model, base) = (score_summaries(&hyps, &refs, true)?, score_summaries(&lead, &refs, true)?);
    let mut r = measured(app, Task::Summarize, &trained, params);
    r.eval_seconds = started.elapsed().as_secs_f64();
    r.test_set = format!(
        "{}, the first {} dialogues ({} references each), greedy decoding{}",
        d.test,
        records.len(),
        model.references,
        if app.no_repeat_ngram_size > 0 {
            format!(", no repeated {}-gram", app.no_repeat_ngram_size)
        } else {
            String::new()
        }
    );
    r.test_items = records.len();
    let f = |s: &crate::eval::rouge::RougeScore| 100.0 * s.fmeasure;
    r.scores = vec![
        Score::new("ROUGE-1 F1", f(&model.max.rouge1), f(&base.max.rouge1), "LEAD-3", Some(true)),
        Score::new("ROUGE-2 F1", f(&model.max.rouge2), f(&base.max.rouge2), "LEAD-3", Some(true)),
        Score::new("ROUGE-L F1", f(&model.max.rouge_l), f(&base.max.rouge_l), "LEAD-3", Some(true)),
    ];
    (r.headline, r.headline_label) = (2, "ROUGE-L".into());
    let mut outputs = vec![place.save("model.jsonl", &jsonl(&hyps))?, place.save("baseline.jsonl", &jsonl(&lead))?];
    for k in 0..model.references {
        let kth: Vec<String> = refs.iter().map(|r| r[k].clone()).collect();
        outputs.push(place.save(&format!("reference{}.jsonl", k + 1), &jsonl(&kth))?);
    }
    r.outputs = outputs;
    r.examples = (0..3.min(records.len()))
        .map(|i| json!({"source": sources[i], "references": refs[i], "model": hyps[i], "baseline": lead[i]}))
        .collect();
    let words = hyps.iter().map(|h| h.split_whitespace().count()).sum::<usize>() as f64 / hyps.len().max(1) as f64;
    r.details = json!({"rouge": model, "baseline_rouge": base,
        "distinct_outputs": hyps.iter().collect::<HashSet<_>>().len(), "mean_words": words});
    Ok(r)
}

/// A smaller SQuAD file: paragraphs taken in rounds — the first paragraph of every training
/// article, then the second of each, ... — until the rounds hold at least `train_questions`
/// questions, and likewise from the last `heldout_articles` articles up to `heldout_questions`
/// (0 keeps a part whole). Whole rounds keep every held-out article non-empty, so the trainer's
/// split by article (the last `heldout_articles` are held out) is the same as on the full file.
pub(crate) fn squad_subset(
    squad: &Value,
    heldout_articles: usize,
    train_questions: usize,
    heldout_questions: usize,
) -> Result<Value> {
    let articles = squad["data"].as_array().context("not a SQuAD file (no \"data\" array)")?;
    ensure!(
        heldout_articles < articles.len(),
        "data.heldout_articles = {heldout_articles} leaves no training article of {}",
        articles.len()
    );
    let (train, heldout) = articles.split_at(articles.len() - heldout_articles);
    let mut data = rounds(train, train_questions)?;
    data.extend(rounds(heldout, heldout_questions)?);
    Ok(json!({ "version": squad["version"].clone(), "data": data }))
}

/// Articles cut to their first paragraphs, whole rounds of one paragraph per article until
/// `limit` questions (see [`squad_subset`]); articles left without a paragraph are dropped.
fn rounds(articles: &[Value], limit: usize) -> Result<Vec<Value>> {
    let paragraphs: Vec<&Vec<Value>> = articles
        .iter()
        .enumerate()
        .map(|(i, a)| a["paragraphs"].as_array().with_context(|| format!("article {i} has no \"paragraphs\"")))
        .collect::<Result<_>>()?;
    let longest = paragraphs.iter().map(|p| p.len()).max().unwrap_or(0);
    let mut keep = if limit == 0 { longest } else { 0 };
    let mut questions = 0;
    while questions < limit && keep < longest {
        questions += paragraphs
            .iter()
            .filter_map(|p| p.get(keep))
            .map(|p| p["qas"].as_array().map_or(0, Vec::len))
            .sum::<usize>();
        keep += 1;
    }
    Ok(articles
        .iter()
        .zip(&paragraphs)
        .filter(|(_, p)| keep > 0 && !p.is_empty())
        .map(|(a, p)| json!({"title": a["title"].clone(), "paragraphs": p[..keep.min(p.len())].to_vec()}))
        .collect())
}

/// A fine-tuned extractive reader and its answers to the held-out articles' questions.
pub(super) struct Reader {
    trained: Trained,
    /// The SQuAD file trained on: a cut under `outputs/` or the config's file.
    data_file: PathBuf,
    /// Articles in `data_file`; the held-out ones are the last, from `first_heldout`.
    articles: usize,
    first_heldout: usize,
    /// The held-out articles' questions and the reader's answer to each, by question id.
    pub heldout: Vec<SquadQuestion>,
    pub predictions: HashMap<String, String>,
    pub params: usize,
}

impl Reader {
    pub fn steps(&self) -> u64 {
        self.trained.summary.steps
    }

    pub fn train_seconds(&self) -> f64 {
        self.trained.summary.seconds
    }

    /// A JSON file the trainer wrote in its run directory (`results.json`,
    /// `heldout_predictions.json`, `test_predictions.json`).
    fn run_file<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        read_run_file(&self.trained, name)
    }
}

/// Imports all-MiniLM-L6-v2 (`lmlab import --hf`) and fine-tunes it with the QA trainer on the
/// application's SQuAD file (cut to the budget's examples), which answers the held-out articles'
/// questions itself (`heldout_predictions.json`). `Ok(Err(why))` when the weights are absent.
pub(super) fn train_reader(
    app: &Application,
    budget: Budget,
    place: &Place,
    configs: &mut Vec<(String, String)>,
) -> Result<std::result::Result<Reader, String>> {
    let plain = unresolved(app, budget)?;
    ensure!(plain.data.task == Task::Qa, "application {:?} is not a QA reader (data.task)", app.name);
    let minilm = crate::infer::embed::default_model_dir();
    if !minilm.join("model.safetensors").is_file() {
        return Ok(Err(format!(
            "all-MiniLM-L6-v2 is not at {} (run scripts/fetch_minilm.sh, or set LMLAB_MINILM_DIR)",
            minilm.display()
        )));
    }
    let b = app.budget(budget);
    let d = &plain.data;
    let mut extra = Vec::new();
    let data_file = if b.train_examples > 0 || b.test_examples > 0 {
        let text = std::fs::read_to_string(&d.train).with_context(|| format!("cannot read SQuAD file {}", d.train))?;
        let squad: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", d.train))?;
        let subset = squad_subset(&squad, d.heldout_articles, b.train_examples, b.test_examples)
            .with_context(|| format!("cutting {}", d.train))?;
        let path = place.out.join("squad.json");
        write_file_atomic(&path, serde_json::to_string(&subset)?.as_bytes())?;
        extra.push(format!("data.train={:?}", path.display().to_string()));
        path
    } else {
        PathBuf::from(&d.train)
    };
    // `lmlab import --hf`: the pretrained encoder as an lmlab checkpoint (deleted after training).
    let imported = place
        .run_dir
        .with_file_name(format!("{}-minilm", place.run_dir.file_name().and_then(|n| n.to_str()).unwrap_or("qa")));
    if let Some(parent) = imported.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let (model, tok) = crate::io::hf_bert::import(&minilm, 1)
        .with_context(|| format!("cannot import Hugging Face BERT directory {}", minilm.display()))?;
    crate::io::checkpoint::save_new(&imported, &model, &tok)?;
    drop(model);
    extra.push(format!("train.init_from={:?}", imported.display().to_string()));
    let trained = train_run(app, resolve(app, budget, place, &extra)?, configs);
    let _ = std::fs::remove_dir_all(&imported);
    let trained = trained?;
    let params = crate::io::checkpoint::load_inference(&trained.ck, 1)?.model.num_params();
    let all = read_squad_file(&data_file)?;
    let articles = all.iter().map(|q| q.article).max().unwrap_or(0) + 1;
    let first_heldout = articles - d.heldout_articles;
    let heldout: Vec<SquadQuestion> = all.into_iter().filter(|q| q.article >= first_heldout).collect();
    let predictions = read_run_file(&trained, "heldout_predictions.json")?;
    Ok(Ok(Reader { trained, data_file, articles, first_heldout, heldout, predictions, params }))
}

fn read_run_file<T: serde::de::DeserializeOwned>(trained: &Trained, name: &str) -> Result<T> {
    let path = trained.summary.run_dir.join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not the JSON expected", path.display()))
}

/// Extractive QA: the reader of [`train_reader`], its held-out answers (and the test file's, when
/// the config names one) rescored here and set against the best-overlap sentence.
fn question_answering(
    app: &Application,
    budget: Budget,
    place: &Place,
    plain: &RunConfig,
    configs: &mut Vec<(String, String)>,
) -> Result<AppResult> {
    let reader = match train_reader(app, budget, place, configs)? {
        Ok(reader) => reader,
        Err(why) => return Ok(AppResult::skipped(app, Task::Qa, why)),
    };
    let d = &plain.data;
    let started = Instant::now();
    let results: Value = reader.run_file("results.json")?;
    let data_file = &reader.data_file;
    let mut sets = vec![("held-out articles", reader.heldout.clone(), reader.predictions.clone())];
    if results.get("test").is_some() {
        sets.push(("test file", read_squad_file(&d.test)?, reader.run_file("test_predictions.json")?));
    }
    let mut r = measured(app, Task::Qa, &reader.trained, reader.params);
    let mut details = serde_json::Map::new();
    for (k, (what, questions, preds)) in sets.iter().enumerate() {
        let model = evaluate(questions, preds);
        let base_preds: HashMap<String, String> = questions
            .iter()
            .map(|q| (q.id.clone(), crate::infer::qa_span::overlap_sentence(&q.question, &q.context).to_string()))
            .collect();
        let base = evaluate(questions, &base_preds);
        let tag = if k == 0 { String::new() } else { format!(" ({what})") };
        r.scores.push(Score::new(
            &format!("exact match{tag}"),
            model.exact_match,
            base.exact_match,
            "the best-overlap sentence",
            Some(true),
        ));
        r.scores.push(Score::new(&format!("F1{tag}"), model.f1, base.f1, "the best-overlap sentence", Some(true)));
        let file = if k == 0 { "heldout" } else { "test" };
        r.outputs.push(place.save(&format!("{file}_model.json"), serde_json::to_string_pretty(preds)?.as_bytes())?);
        r.outputs
            .push(place.save(&format!("{file}_baseline.json"), serde_json::to_string_pretty(&base_preds)?.as_bytes())?);
        if k == 0 {
            r.test_items = questions.len();
            r.examples = questions
                .iter()
                .take(3)
                .map(|q| {
                    let gold: Vec<&str> = q.answers.iter().map(|a| a.0.as_str()).collect();
                    json!({"question": q.question, "title": q.title, "answers": gold,
                        "model": preds.get(&q.id), "baseline": base_preds[&q.id]})
                })
                .collect();
        }
        let trainer = &results[file];
        details.insert(
            file.into(),
            json!({"questions": questions.len(), "model": score_json(&model), "baseline": score_json(&base),
                "trainer_exact_match": trainer["exact_match"], "trainer_f1": trainer["f1"]}),
        );
    }
    (r.headline, r.headline_label) = (1, "F1".into());
    r.eval_seconds = started.elapsed().as_secs_f64();
    if data_file.starts_with(&place.out) {
        r.outputs.push(format!("{}/squad.json", place.rel));
    }
    r.test_set = format!(
        "the last {} articles of {} ({} questions{}), answered by the trainer with {}",
        d.heldout_articles,
        if data_file.starts_with(&place.out) { format!("a cut of {}", d.train) } else { d.train.clone() },
        r.test_items,
        if sets.len() > 1 { format!("; and {}", d.test) } else { String::new() },
        results["checkpoint"].as_str().unwrap_or("its checkpoint")
    );
    r.details = json!({ "sets": details, "articles_in_file": reader.articles,
        "first_heldout_article": reader.first_heldout });
    Ok(r)
}

fn score_json(s: &SquadScore) -> Value {
    json!({"exact_match": s.exact_match, "f1": s.f1, "total": s.total, "unanswered": s.unanswered})
}

/// A trained classifier's predictions on its test file, beside the majority-class baseline.
pub(super) struct Classified {
    trained: Trained,
    /// The test file's texts, gold labels and the model's predictions, in file order.
    pub texts: Vec<String>,
    pub gold: Vec<String>,
    pub predicted: Vec<String>,
    /// The classifier's labels in its output order.
    pub labels: Vec<String>,
    /// The training file's most frequent class (the lower index on a tie).
    pub majority: String,
    pub params: usize,
    pub test_file: String,
    /// Time to predict the test file.
    pub predict_seconds: f64,
}

impl Classified {
    pub fn steps(&self) -> u64 {
        self.trained.summary.steps
    }

    pub fn val_loss(&self) -> f64 {
        self.trained.summary.val_loss as f64
    }

    pub fn train_seconds(&self) -> f64 {
        self.trained.summary.seconds
    }

    /// The trainer's own test accuracy of the checkpoint predicted (`results.json`).
    pub fn trainer_test_accuracy(&self) -> Option<f64> {
        self.trained.summary.test_accuracy
    }

    /// sklearn's `classification_report` of `predicted` against the gold labels, over the
    /// classifier's labels.
    pub fn report(&self, predicted: &[String]) -> Result<ClassificationReport> {
        ensure!(predicted.len() == self.gold.len(), "{} predictions for {} items", predicted.len(), self.gold.len());
        let labels: Vec<&str> = self.labels.iter().map(String::as_str).collect();
        let (g, p): (Vec<&str>, Vec<&str>) =
            self.gold.iter().zip(predicted).map(|(a, b)| (a.as_str(), b.as_str())).unzip();
        classification_report(&g, &p, Some(&labels[..]), ZeroDivision::Zero)
    }
}

/// Trains the classifier application `app` (`configs/`, a `data.task = "classify"` config) and
/// predicts its test file with the checkpoint (`lmlab classify`'s path).
pub(super) fn train_classifier(
    app: &Application,
    budget: Budget,
    place: &Place,
    configs: &mut Vec<(String, String)>,
) -> Result<Classified> {
    let cfg = resolve(app, budget, place, &[])?;
    ensure!(cfg.data.task == Task::Classify, "application {:?} is not a classifier (data.task)", app.name);
    let d = cfg.data.clone();
    let trained = train_run(app, cfg, configs)?;
    let started = Instant::now();
    let preds = crate::train::classify::predict_file(&trained.ck, Path::new(&d.test), None, 64)?;
    let predict_seconds = started.elapsed().as_secs_f64();
    let gold = preds.gold.clone().context("the test file has no labels")?;
    let load = |path: &str| -> Result<LabelledText> {
        let path = Path::new(path);
        match d.format.as_str() {
            "sst2" => LabelledText::load_sst2(path),
            "trec" => LabelledText::load_trec(path, true),
            _ => LabelledText::load_trec(path, false),
        }
    };
    let train_set = load(&d.train)?;
    let mut counts = vec![0usize; train_set.label_names.len()];
    train_set.labels.iter().for_each(|&l| counts[l] += 1);
    let majority =
        (0..counts.len()).max_by_key(|&k| (counts[k], std::cmp::Reverse(k))).context("no training labels")?;
    let params = crate::io::checkpoint::load_inference(&trained.ck, 1)?.model.num_params();
    Ok(Classified {
        texts: load(&d.test)?.texts,
        gold,
        predicted: preds.predicted,
        labels: preds.label_names,
        majority: train_set.label_names[majority].clone(),
        params,
        test_file: d.test.clone(),
        predict_seconds,
        trained,
    })
}

/// Sequence classification: the checkpoint's predictions on the test file, accuracy and
/// macro-F1, and the training set's most frequent class predicted for all.
fn classification(
    app: &Application,
    budget: Budget,
    place: &Place,
    configs: &mut Vec<(String, String)>,
) -> Result<AppResult> {
    let c = train_classifier(app, budget, place, configs)?;
    let started = Instant::now();
    let baseline = vec![c.majority.clone(); c.gold.len()];
    let (model, base) = (c.report(&c.predicted)?, c.report(&baseline)?);
    let mut r = measured(app, Task::Classify, &c.trained, c.params);
    r.eval_seconds = c.predict_seconds + started.elapsed().as_secs_f64();
    r.test_set = format!("{} ({} items, {} classes)", c.test_file, c.gold.len(), c.labels.len());
    r.test_items = c.gold.len();
    r.scores = vec![
        Score::new("accuracy (%)", 100.0 * model.accuracy, 100.0 * base.accuracy, "the majority class", Some(true)),
        Score::new("macro-F1", 100.0 * model.macro_avg.f1, 100.0 * base.macro_avg.f1, "the majority class", Some(true)),
    ];
    r.headline_label = "accuracy %".into();
    let lines = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>().into_bytes();
    r.outputs = vec![
        place.save("model.txt", &lines(&c.predicted))?,
        place.save("baseline.txt", &lines(&baseline))?,
        place.save("gold.txt", &lines(&c.gold))?,
    ];
    r.examples = (0..3.min(c.texts.len()))
        .map(|i| json!({"text": c.texts[i], "gold": c.gold[i], "model": c.predicted[i], "baseline": baseline[i]}))
        .collect();
    r.details = json!({"labels": c.labels, "majority_class": c.majority, "confusion": model.confusion,
        "trainer_test_accuracy": c.trained.summary.test_accuracy});
    Ok(r)
}

/// Samples the generation application draws, and their length in tokens (characters).
const SAMPLES: usize = 4;
const SAMPLE_TOKENS: usize = 400;

/// Cross-entropy (nats per token) of `test[1..]` under an add-one smoothed n-gram model
/// (`order` 1: unigram, 2: bigram, each token given the one before) counted on `train`, over a
/// vocabulary of `vocab` tokens.
pub(crate) fn ngram_cross_entropy(train: &[u32], test: &[u32], order: usize, vocab: usize) -> Result<f64> {
    ensure!(order == 1 || order == 2, "only unigram and bigram models, not order {order}");
    ensure!(test.len() >= 2, "need at least 2 test tokens");
    ensure!(train.iter().chain(test).all(|&t| (t as usize) < vocab), "a token is outside the vocabulary of {vocab}");
    let v = vocab as f64;
    let mut unigram = vec![0u64; vocab];
    train.iter().for_each(|&t| unigram[t as usize] += 1);
    let mut bigram: HashMap<(u32, u32), u64> = HashMap::new();
    let mut context = vec![0u64; vocab];
    for w in train.windows(2) {
        *bigram.entry((w[0], w[1])).or_default() += 1;
        context[w[0] as usize] += 1;
    }
    let n = train.len() as f64;
    let mut nll = 0.0;
    for w in test.windows(2) {
        let p = if order == 1 {
            (unigram[w[1] as usize] as f64 + 1.0) / (n + v)
        } else {
            (bigram.get(&(w[0], w[1])).copied().unwrap_or(0) as f64 + 1.0) / (context[w[0] as usize] as f64 + v)
        };
        nll -= p.ln();
    }
    Ok(nll / (test.len() - 1) as f64)
}

/// The lower-cased words of `text` with punctuation stripped from their ends (empty ones dropped).
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
}

/// Share of the words of `texts` that occur in `known` (0 when there is no word).
pub(crate) fn known_word_share(texts: &[String], known: &HashSet<String>) -> f64 {
    let (mut hits, mut total) = (0usize, 0usize);
    for w in texts.iter().flat_map(|t| words(t)) {
        total += 1;
        hits += known.contains(&w) as usize;
    }
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

/// Character-level generation: perplexity of the validation text (disjoint windows of the
/// trained context, `lmlab eval lm`'s method) against unigram and bigram models, and samples
/// measured against the real text and the unigram model's samples.
fn generation(
    app: &Application,
    budget: Budget,
    place: &Place,
    configs: &mut Vec<(String, String)>,
) -> Result<AppResult> {
    use crate::eval::diversity::distinct_n;
    use crate::infer::sample::{generate_text, SampleOptions};
    let b = app.budget(budget);
    let cfg = resolve(app, budget, place, &[])?;
    let d = cfg.data.clone();
    let trained = train_run(app, cfg, configs)?;
    let started = Instant::now();
    let mut ck = crate::io::checkpoint::load_inference(&trained.ck, 16)?;
    let text = crate::util::read_corpus(Path::new(&d.path))?;
    let split = TokenDataset::split(ck.tokenizer.encode(&text)?, d.val_fraction)?;
    let val = take(&split.val, b.test_examples);
    let block = ck.model.config.block_size;
    let lm = crate::eval::perplexity::sliding_window_eval(&mut ck.model, &val, block + 1, block)?;
    let vocab = ck.tokenizer.vocab_size();
    let unigram = ngram_cross_entropy(&split.train, &val, 1, vocab)?;
    let bigram = ngram_cross_entropy(&split.train, &val, 2, vocab)?;

    let opts = SampleOptions { max_new_tokens: SAMPLE_TOKENS, ..SampleOptions::default() };
    let mut samples = Vec::new();
    for i in 0..SAMPLES {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(place.seed ^ ((i as u64 + 1) * 0x9E37_79B9));
        samples.push(generate_text(&mut ck.model, &ck.tokenizer, &val[..1], &opts, &mut rng, |_| {})?.text);
    }
    // The unigram model's samples: characters drawn by their training frequency.
    let mut counts = vec![0u64; vocab];
    split.train.iter().for_each(|&t| counts[t as usize] += 1);
    let mut total = 0;
    let cumulative: Vec<u64> = counts
        .iter()
        .map(|&c| {
            total += c;
            total
        })
        .collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(place.seed);
    let unigram_samples: Vec<String> = (0..SAMPLES)
        .map(|_| {
            let ids: Vec<u32> = (0..SAMPLE_TOKENS)
                .map(|_| {
                    let x = rng.gen_range(0..total);
                    cumulative.partition_point(|&c| c <= x) as u32
                })
                .collect();
            ck.tokenizer.decode(&ids)
        })
        .collect::<Result<_>>()?;
    // Excerpts of the real validation text, as long, spread over it.
    let stride = (split.val.len().saturating_sub(SAMPLE_TOKENS) / SAMPLES).max(1);
    let real: Vec<String> = (0..SAMPLES)
        .map(|i| {
            let start = (i * stride).min(split.val.len().saturating_sub(SAMPLE_TOKENS));
            ck.tokenizer.decode(&split.val[start..(start + SAMPLE_TOKENS).min(split.val.len())])
        })
        .collect::<Result<_>>()?;
    let known: HashSet<String> = words(&ck.tokenizer.decode(&split.train)?).collect();
    let share = |t: &[String]| 100.0 * known_word_share(t, &known);
    let distinct = |t: &[String], n: usize| -> Result<f64> {
        Ok(100.0 * distinct_n(&t.iter().map(String::as_str).collect::<Vec<_>>(), n)?.ratio)
    };
    let params = ck.model.num_params();
    let mut r = measured(app, Task::Lm, &trained, params);
    r.eval_seconds = started.elapsed().as_secs_f64();
    r.test_set = format!(
        "the first {} characters of the validation split of {} (windows of {block}); {SAMPLES} samples of {SAMPLE_TOKENS} characters at temperature 1",
        val.len(),
        d.path
    );
    r.test_items = val.len();
    r.scores = vec![
        Score::new("perplexity per character", lm.perplexity, unigram.exp(), "the unigram model", Some(false)),
        Score::new("perplexity per character", lm.perplexity, bigram.exp(), "the add-one bigram model", Some(false)),
        Score::new(
            "sample words found in the training text (%)",
            share(&samples),
            share(&unigram_samples),
            "the unigram samples",
            Some(true),
        ),
        Score::new(
            "distinct words of the samples (%)",
            distinct(&samples, 1)?,
            distinct(&real, 1)?,
            "the real text",
            None,
        ),
    ];
    (r.headline, r.headline_label) = (2, "known words %".into());
    let sample_lines: Vec<Value> = samples
        .iter()
        .zip(&unigram_samples)
        .zip(&real)
        .map(|((m, u), t)| json!({"model": m, "baseline": u, "real": t}))
        .collect();
    r.outputs = vec![
        place.save("model.jsonl", &jsonl(&samples))?,
        place.save("baseline.jsonl", &jsonl(&unigram_samples))?,
        place.save("real.jsonl", &jsonl(&real))?,
    ];
    r.examples = sample_lines;
    r.details = json!({"model_loss": lm.loss, "model_bits_per_char": lm.bits_per_token, "scored_tokens": lm.tokens,
        "unigram_loss": unigram, "bigram_loss": bigram, "real_text_known_share": share(&real),
        "distinct_words": {"model": distinct(&samples, 1)?, "real": distinct(&real, 1)?, "unigram": distinct(&unigram_samples, 1)?},
        "distinct_word_bigrams": {"model": distinct(&samples, 2)?, "real": distinct(&real, 2)?,
            "unigram": distinct(&unigram_samples, 2)?}});
    Ok(r)
}

/// "12.34", or "–" for a figure that is not a number.
fn fmt(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "–".into()
    }
}

fn table(apps: &[AppResult]) -> Table {
    let columns = [
        "application",
        "test items",
        "metric",
        "model",
        "baseline",
        "baseline is",
        "model − baseline",
        "training steps",
        "train s",
        "score s",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for a in apps {
        if let Some(why) = &a.skipped {
            let mut row = vec![a.name.clone(), "–".into(), "skipped".into(), why.clone()];
            row.resize(columns.len(), "–".into());
            rows.push(row);
            continue;
        }
        for s in &a.scores {
            rows.push(vec![
                a.name.clone(),
                a.test_items.to_string(),
                s.metric.clone(),
                fmt(s.model),
                fmt(s.baseline),
                s.baseline_name.clone(),
                format!("{:+.2}", s.model - s.baseline),
                a.steps.to_string(),
                format!("{:.1}", a.train_seconds),
                format!("{:.1}", a.eval_seconds),
            ]);
        }
    }
    Table { columns, rows }
}

/// An application's name on the chart's axis ("QA" for question answering).
fn short_name(a: &AppResult) -> &str {
    if a.task == "qa" {
        "QA"
    } else {
        &a.name
    }
}

fn charts(apps: &[AppResult], dir: &Path) -> Result<Vec<ChartFiles>> {
    let mut out = Vec::new();
    let measured: Vec<(usize, &AppResult)> =
        apps.iter().enumerate().filter(|(_, a)| a.skipped.is_none() && !a.scores.is_empty()).collect();
    if !measured.is_empty() {
        let names: Vec<String> = measured.iter().map(|(i, a)| format!("{} {}", i + 1, short_name(a))).collect();
        let metrics: Vec<&str> = measured.iter().map(|(_, a)| a.headline_label.as_str()).collect();
        let point = |f: fn(&Score) -> f64| -> Vec<(f64, f64)> {
            measured.iter().map(|(i, a)| (*i as f64 + 1.0, f(&a.scores[a.headline]))).collect()
        };
        let c = XyChart {
            title: "each application's headline score: model and baseline".into(),
            x: format!("application: {}", names.join(", ")),
            y: format!("{} (higher is better)", metrics.join(", ")),
            series: vec![
                XySeries { name: "model".into(), points: point(|s| s.model) },
                XySeries { name: "baseline".into(), points: point(|s| s.baseline) },
            ],
            scatter: true,
        };
        out.push(write_chart_pair(&c.title, "scores", dir, |p| plot_xy(&c, p).map(|_| ()))?);
    }
    // Training: each run's validation loss relative to its first evaluation.
    let curves: Vec<XySeries> = apps
        .iter()
        .filter(|a| a.val_curve.len() >= 2 && a.val_curve[0].1 > 0.0 && a.steps > 0)
        .map(|a| XySeries {
            name: a.name.clone(),
            points: a.val_curve.iter().map(|&(s, l)| (100.0 * s / a.steps as f64, l / a.val_curve[0].1)).collect(),
        })
        .collect();
    if !curves.is_empty() {
        let c = XyChart {
            title: "validation loss during training, relative to the first evaluation".into(),
            x: "training steps done (%)".into(),
            y: "val loss / first val loss".into(),
            series: curves,
            scatter: false,
        };
        out.push(write_chart_pair(&c.title, "training", dir, |p| plot_xy(&c, p).map(|_| ()))?);
    }
    Ok(out)
}

/// Sentences from the numbers: per application the model against its baseline, then the tally.
fn findings(apps: &[AppResult], budget: Budget) -> Vec<String> {
    let mut out = Vec::new();
    for a in apps {
        if let Some(why) = &a.skipped {
            out.push(format!("{} was skipped: {why}.", a.name));
            continue;
        }
        let parts: Vec<String> = a
            .scores
            .iter()
            .filter(|s| s.higher_is_better.is_some())
            .map(|s| {
                let verdict = match s.model_wins() {
                    Some(true) => "better than",
                    _ if s.model == s.baseline => "equal to",
                    _ => "worse than",
                };
                format!(
                    "{} {} against {} for {} ({verdict} it)",
                    s.metric,
                    fmt(s.model),
                    fmt(s.baseline),
                    s.baseline_name
                )
            })
            .collect();
        out.push(format!(
            "{} ({} parameters, {} steps in {:.0} s, {} test items): {}.",
            a.name,
            a.params,
            a.steps,
            a.train_seconds,
            a.test_items,
            parts.join("; ")
        ));
        let distinct = a.details.get("distinct_outputs").and_then(Value::as_u64);
        if let Some(d) = distinct.filter(|&d| (d as usize) < a.test_items) {
            out.push(format!(
                "{}: {d} distinct outputs for {} test items{}.",
                a.name,
                a.test_items,
                if (d as f64) < 0.5 * a.test_items as f64 {
                    ": the model repeats the same few outputs whatever the input"
                } else {
                    ""
                }
            ));
        }
        if a.task == "lm" {
            let share = |who: &str| fmt(a.details["distinct_words"][who].as_f64().unwrap_or(f64::NAN));
            let known = &a.scores[a.headline];
            out.push(format!(
                "{}: {}% of the real validation text's words occur in the training text, {}% of the samples' and {}% of the unigram samples'; distinct words (types per word): samples {}%, real text {}%, unigram samples {}%.",
                a.name,
                fmt(a.details["real_text_known_share"].as_f64().unwrap_or(f64::NAN)),
                fmt(known.model),
                fmt(known.baseline),
                share("model"),
                share("real"),
                share("unigram")
            ));
        }
    }
    let ran: Vec<&AppResult> = apps.iter().filter(|a| a.skipped.is_none() && !a.scores.is_empty()).collect();
    let wins: Vec<&str> =
        ran.iter().filter(|a| a.scores[a.headline].model_wins() == Some(true)).map(|a| a.name.as_str()).collect();
    let losses: Vec<&str> =
        ran.iter().filter(|a| a.scores[a.headline].model_wins() != Some(true)).map(|a| a.name.as_str()).collect();
    out.push(format!(
        "On its headline metric the model beats its baseline in {} of {} applications{}{}.",
        wins.len(),
        ran.len(),
        if wins.is_empty() { String::new() } else { format!(" ({})", wins.join(", ")) },
        if losses.is_empty() { String::new() } else { format!(" and not in {}", losses.join(", ")) }
    ));
    if budget == Budget::Quick {
        let steps: Vec<String> = ran.iter().map(|a| format!("{} {}", a.name, a.steps)).collect();
        out.push(format!(
            "This is the quick budget, a smoke-scale run: tiny models trained for few steps (steps: {}) on the first training examples and scored on the first test items. It shows each application trained and scored end to end against its baseline, not what the recipes reach (--budget full runs them).",
            steps.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_cross_entropy_by_hand() {
        // Vocabulary 2; train "0 0 1": unigram counts 2, 1 → p(1) = 2/5, p(0) = 3/5.
        let train = [0, 0, 1];
        let h = ngram_cross_entropy(&train, &[0, 1, 0], 1, 2).unwrap();
        let want = -((2.0f64 / 5.0).ln() + (3.0f64 / 5.0).ln()) / 2.0;
        assert!((h - want).abs() < 1e-12, "{h} {want}");
        // Bigrams (0,0), (0,1): p(1|0) = (1+1)/(2+2), p(0|1) = (0+1)/(0+2).
        let h = ngram_cross_entropy(&train, &[0, 1, 0], 2, 2).unwrap();
        let want = -((2.0f64 / 4.0).ln() + (1.0f64 / 2.0).ln()) / 2.0;
        assert!((h - want).abs() < 1e-12, "{h} {want}");
        assert!(ngram_cross_entropy(&train, &[0, 2], 1, 2).is_err());
        assert!(ngram_cross_entropy(&train, &[0], 1, 2).is_err());
        assert!(ngram_cross_entropy(&train, &[0, 1], 3, 2).is_err());
    }

    #[test]
    fn known_words_ignore_case_and_punctuation() {
        let known: HashSet<String> = ["to", "be", "or"].iter().map(|s| s.to_string()).collect();
        assert_eq!(known_word_share(&["To be, or NOT?".into(), " -- ".into()], &known), 0.75);
        assert_eq!(known_word_share(&[String::new()], &known), 0.0);
    }

    #[test]
    fn squad_subset_takes_whole_rounds() {
        let para = |n: usize| json!({"context": "c", "qas": vec![json!({"id": "x"}); n]});
        let article = |t: &str, ps: Vec<Value>| json!({"title": t, "paragraphs": ps});
        let squad = json!({"version": "1.1", "data": [
            article("a", vec![para(2), para(3)]),
            article("b", vec![para(1)]),
            article("c", vec![para(4), para(1), para(1)]),
            article("h1", vec![para(2), para(2)]),
            article("h2", vec![para(1), para(5)]),
        ]});
        let count = |v: &Value| -> Vec<(String, usize)> {
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["title"].as_str().unwrap().to_string(), a["paragraphs"].as_array().unwrap().len()))
                .collect()
        };
        // Training: round 1 holds 2 + 1 + 4 = 7 questions ≥ 5; held-out: round 1 holds 3 < 4, so 2 rounds.
        let s = squad_subset(&squad, 2, 5, 4).unwrap();
        assert_eq!(s["version"], "1.1");
        let want = [("a", 1), ("b", 1), ("c", 1), ("h1", 2), ("h2", 2)];
        assert_eq!(count(&s), want.map(|(t, n)| (t.to_string(), n)));
        // 0 keeps a part whole; the round count caps at the longest article.
        let s = squad_subset(&squad, 2, 0, 100).unwrap();
        let want = [("a", 2), ("b", 1), ("c", 3), ("h1", 2), ("h2", 2)];
        assert_eq!(count(&s), want.map(|(t, n)| (t.to_string(), n)));
        assert!(squad_subset(&squad, 5, 1, 1).is_err());
        assert!(squad_subset(&json!({}), 1, 1, 1).is_err());
    }
}
