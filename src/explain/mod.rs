//! `lmlab explain`: the classic questions about Transformers, each answered by an experiment
//! that anyone can re-run, and `lmlab report`, which gathers the answers into one HTML page.
//!
//! An experiment is a committed file under `experiments/` (compiled into the binary, so
//! `explain run` works from any directory): the question, the set-up in words, a base run
//! config, the arms to compare (config overrides), the seeds and step counts of each budget,
//! and what to measure. It runs on the ordinary code paths — `train::train` for every arm and
//! seed, the run's metrics.jsonl, gradient health, the kernels themselves — and writes
//! `OUT/ID/result.json` (every number, the resolved configs, the seeds, the lmlab version and
//! the machine), charts (PNG and SVG) and findings generated from the numbers.
//!
//! ```text
//! mod.rs         the questions, the experiment files, result.json's types, `run`
//! sweep.rs       an experiment of arms × seeds: train each, collect curves and final figures
//! findings.rs    the sentences of a result, written from its numbers
//! walkthrough.rs question 2: one head of attention step by step, numbers from the kernels
//! efficiency.rs  question 11: attention kernels, number formats, the KV cache, compression, MPI
//! evaluation.rs  question 12: every metric of `lmlab eval` on a model's outputs and on
//!                controlled perturbations of real references
//! explaining.rs  question 13: attention maps, logit lens, attributions, ablation; fairness
//! applications.rs question 14: each application trained with its own config, scored against a baseline
//! report.rs      `lmlab report`: all results present in one self-contained HTML page
//! ```

mod applications;
mod efficiency;
mod evaluation;
mod explaining;
mod findings;
mod report;
mod sweep;
mod task_metrics;
mod walkthrough;

pub use report::write_report;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One classic question: its experiment file, or why it has none yet.
#[derive(Clone, Copy, Debug)]
pub struct Question {
    pub number: u32,
    pub id: &'static str,
    pub title: &'static str,
    /// The experiment (`experiments/ID.toml`), or None while the capability it needs is missing.
    pub experiment: Option<&'static str>,
    /// Why the question has no experiment yet.
    pub pending: Option<&'static str>,
}

macro_rules! experiment {
    ($file:literal) => {
        Some(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/", $file)))
    };
}

/// Every question, in the order of the report.
pub const QUESTIONS: &[Question] = &[
    Question {
        number: 1,
        id: "scale",
        title: "What is a large model, and how does it differ from a traditional one?",
        experiment: experiment!("scale.toml"),
        pending: None,
    },
    Question {
        number: 2,
        id: "attention",
        title: "How does attention compute its output?",
        experiment: experiment!("attention.toml"),
        pending: None,
    },
    Question {
        number: 3,
        id: "heads",
        title: "Why multi-head attention?",
        experiment: experiment!("heads.toml"),
        pending: None,
    },
    Question {
        number: 4,
        id: "positions",
        title: "Why positional encoding, and relative or absolute?",
        experiment: experiment!("positions.toml"),
        pending: None,
    },
    Question {
        number: 5,
        id: "recurrence",
        title: "What else carries position? Recurrent and convolutional models against the Transformer",
        experiment: experiment!("recurrence.toml"),
        pending: None,
    },
    Question {
        number: 6,
        id: "long-range",
        title: "How does attention handle long-range dependencies?",
        experiment: experiment!("long-range.toml"),
        pending: None,
    },
    Question {
        number: 7,
        id: "optimizers",
        title: "Which optimizer, and why?",
        experiment: experiment!("optimizers.toml"),
        pending: None,
    },
    Question {
        number: 8,
        id: "gradients",
        title: "Vanishing and exploding gradients: what keeps a deep stack trainable?",
        experiment: experiment!("gradients.toml"),
        pending: None,
    },
    Question {
        number: 9,
        id: "norms",
        title: "Normalisation and activation choices",
        experiment: experiment!("norms.toml"),
        pending: None,
    },
    Question {
        number: 10,
        id: "pareto",
        title: "Complexity against performance",
        experiment: experiment!("pareto.toml"),
        pending: None,
    },
    Question {
        number: 11,
        id: "efficiency",
        title: "Making it efficient",
        experiment: experiment!("efficiency.toml"),
        pending: None,
    },
    Question {
        number: 12,
        id: "evaluation",
        title: "Evaluating it",
        experiment: experiment!("evaluation.toml"),
        pending: None,
    },
    Question {
        number: 13,
        id: "explaining",
        title: "Explaining it and checking fairness",
        experiment: experiment!("explaining.toml"),
        pending: None,
    },
    Question {
        number: 14,
        id: "applications",
        title: "Applications: translation, summarization, question answering, classification and generation",
        experiment: experiment!("applications.toml"),
        pending: None,
    },
];

/// The question with this id (or number).
pub fn question(id: &str) -> Result<&'static Question> {
    QUESTIONS.iter().find(|q| q.id == id || q.number.to_string() == id).with_context(|| {
        let ids: Vec<&str> = QUESTIONS.iter().map(|q| q.id).collect();
        format!("no explain experiment {id:?}; the ids are: {}", ids.join(", "))
    })
}

/// How long an experiment runs: `quick` (all of them in about ten minutes on two cores) or
/// `full` (the publishable numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    Quick,
    Full,
}

impl Budget {
    pub fn name(self) -> &'static str {
        match self {
            Budget::Quick => "quick",
            Budget::Full => "full",
        }
    }
}

/// An experiment file (`experiments/ID.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Spec {
    /// `sweep` (arms × seeds, each trained), `walkthrough` (question 2), `pareto` (the runs
    /// of the other results), `efficiency` (question 11), `evaluation` (question 12),
    /// `explaining` (question 13) or `applications` (question 14: each application's own config).
    pub kind: String,
    /// The set-up in words (what is trained on what, what is held fixed).
    pub setup: String,
    /// Base run config: a file under `experiments/base/`.
    #[serde(default)]
    pub base: Option<String>,
    /// A sweep's corpora: every arm is trained on each (its base config replacing `base`), and
    /// the fit, the n-grams and the findings are made per corpus. Empty: `base` alone.
    #[serde(default)]
    pub corpora: Vec<Corpus>,
    /// The x axis of a sweep's validation curves: "step" (default) or "tokens" (training tokens,
    /// step × batch × context, on log axes).
    #[serde(default)]
    pub curve_x: Option<String>,
    #[serde(default)]
    pub quick: BudgetSpec,
    #[serde(default)]
    pub full: BudgetSpec,
    #[serde(default)]
    pub arms: Vec<Arm>,
    /// The x axis of the final-figures chart when the arms lie on one (e.g. "heads").
    #[serde(default)]
    pub x_label: Option<String>,
    /// "params": each arm's x is its measured parameter count (instead of `Arm::x`).
    #[serde(default)]
    pub x_from: Option<String>,
    /// "power_law": fit val loss = (x_c / x)^α to the arms' (x, val loss) (Kaplan et al., 2020).
    #[serde(default)]
    pub fit: Option<String>,
    /// Orders of Kneser-Ney n-gram baselines (`model::ngram`, discount 0.75) counted on the base
    /// config's training split and scored on its validation split, next to the arms.
    #[serde(default)]
    pub ngram: Vec<usize>,
    /// Extra figures: "health" (per-layer gradient norms, attention entropy, dead units of the
    /// last health line), "permutation" (the last token's loss with its context shuffled),
    /// "extrapolation" (val loss reading 1×, 2×, 4×, 8× the trained context), "diversity"
    /// (per-layer Jensen–Shannon divergence between heads).
    #[serde(default)]
    pub probes: Vec<String>,
    /// Train on synthetic associative recall instead of the base config's text (question 6):
    /// the corpus is generated into the result's folder and every arm's `data.path` points to it.
    #[serde(default)]
    pub recall: Option<RecallSpec>,
    /// The applications of an `applications` experiment, each with its own base config.
    #[serde(default)]
    pub applications: Vec<applications::Application>,
}

/// A bar over `len` `units` (runs, applications) with the experiment's id as its message, when
/// `show` (a terminal run); `None` in tests and `--json`.
pub(super) fn progress_bar(show: bool, len: usize, units: &str, id: &str) -> Option<indicatif::ProgressBar> {
    show.then(|| {
        let bar = indicatif::ProgressBar::new(len as u64);
        let template = format!("{{bar:30.cyan/blue}} {{pos}}/{{len}} {units} {{msg}} [{{elapsed_precise}}]");
        bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("a valid template"));
        bar.set_message(id.to_string());
        bar
    })
}

impl Spec {
    /// The settings of one budget.
    pub(crate) fn budget(&self, budget: Budget) -> &BudgetSpec {
        match budget {
            Budget::Quick => &self.quick,
            Budget::Full => &self.full,
        }
    }

    /// Whether the curves are against training tokens (`curve_x = "tokens"`) or steps.
    pub(crate) fn curve_tokens(&self) -> Result<bool> {
        match self.curve_x.as_deref() {
            None | Some("step") => Ok(false),
            Some("tokens") => Ok(true),
            Some(other) => bail!("curve_x = {other:?} (\"step\" or \"tokens\")"),
        }
    }
}

/// One corpus of a sweep (see [`Spec::corpora`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Corpus {
    /// Its name in the table, the charts and the findings (e.g. "WikiText-2").
    pub name: String,
    /// Its base run config, a file under `experiments/base/`.
    pub base: String,
}

/// The synthetic data of a recall experiment (`data::synthetic`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecallSpec {
    pub pairs: usize,
    pub queries: usize,
    pub max_gap: usize,
    /// Lines of the training corpus (the last `data.val_fraction` of it is validation).
    pub lines: usize,
    /// Held-out lines (another seed) for accuracy against distance.
    pub eval_lines: usize,
    /// The held-out lines' longest gap (default `max_gap`): longer than in training, it asks
    /// whether what was learned at short distances carries to long ones.
    #[serde(default)]
    pub eval_max_gap: Option<usize>,
    /// Width of a distance bin, characters.
    pub bin: usize,
}

impl RecallSpec {
    pub fn task(&self) -> crate::data::synthetic::RecallTask {
        crate::data::synthetic::RecallTask { pairs: self.pairs, queries: self.queries, max_gap: self.max_gap }
    }

    /// The held-out lines' task.
    pub fn eval_task(&self) -> crate::data::synthetic::RecallTask {
        crate::data::synthetic::RecallTask { max_gap: self.eval_max_gap.unwrap_or(self.max_gap), ..self.task() }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetSpec {
    /// Overrides for every arm (`--set` syntax).
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// What the `efficiency` kind measures at this budget (`[quick.efficiency]`).
    #[serde(default)]
    pub efficiency: Option<efficiency::Plan>,
    /// Sizes a measuring kind reads (e.g. `prompts = 32`); the keys each kind knows are
    /// [`count_keys`], and any other key is an error.
    #[serde(default)]
    pub counts: std::collections::BTreeMap<String, usize>,
}

impl BudgetSpec {
    /// `counts[key]`, or `default` when the experiment does not set it.
    pub fn count(&self, key: &str, default: usize) -> usize {
        self.counts.get(key).copied().unwrap_or(default)
    }
}

/// The `counts` keys of each kind of experiment.
pub(crate) fn count_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "evaluation" => evaluation::COUNT_KEYS,
        "explaining" => explaining::COUNT_KEYS,
        _ => &[],
    }
}

/// One configuration an experiment compares.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Arm {
    pub name: String,
    /// Its own base run config (a file under `experiments/base/`) instead of the experiment's.
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub set: Vec<String>,
    /// Its position on the chart's x axis (see [`Spec::x_label`]).
    #[serde(default)]
    pub x: Option<f64>,
    /// Overrides of the quick budget only (e.g. a learning rate a tiny run needs).
    #[serde(default)]
    pub quick_set: Vec<String>,
}

macro_rules! committed_config {
    ($file:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $file))
    };
}

/// The base run configs the experiments name: files under `experiments/base/`, and the
/// applications' own configs under `configs/`.
pub(crate) fn base_config(name: &str) -> Result<&'static str> {
    Ok(match name {
        "lm-char.toml" => include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/base/lm-char.toml")),
        "lm-wikitext2-char.toml" => {
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/base/lm-wikitext2-char.toml"))
        }
        "trec-classify.toml" => {
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/base/trec-classify.toml"))
        }
        "configs/multi30k-de-en.toml" => committed_config!("configs/multi30k-de-en.toml"),
        "configs/dialogsum.toml" => committed_config!("configs/dialogsum.toml"),
        "configs/squad-minilm-qa.toml" => committed_config!("configs/squad-minilm-qa.toml"),
        "configs/trec-classify.toml" => committed_config!("configs/trec-classify.toml"),
        "configs/shakespeare-char-cpu.toml" => committed_config!("configs/shakespeare-char-cpu.toml"),
        other => bail!("experiments: no base config {other:?} (see experiments/base/)"),
    })
}

/// Where a chart was written (file names relative to the result's directory).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChartFiles {
    pub title: String,
    pub png: String,
    pub svg: String,
}

/// A table of the result: column names, and rows of already formatted cells.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// The machine a result was measured on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// The CPU's model name (/proc/cpuinfo) and the kernel path lmlab chose.
    pub cpu: String,
    pub isa: String,
    pub cores: usize,
    pub threads: usize,
    pub os: String,
}

impl Machine {
    pub fn here() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Machine {
            cpu,
            isa: crate::kernels::isa::Isa::active().name().to_string(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads: rayon::current_num_threads(),
            os: std::env::consts::OS.to_string(),
        }
    }
}

/// `OUT/ID/result.json`: everything an experiment measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExplainResult {
    pub id: String,
    pub question: u32,
    pub title: String,
    pub setup: String,
    pub budget: Budget,
    /// The command that reproduces it.
    pub command: String,
    pub lmlab_version: String,
    pub machine: Machine,
    /// Wall time of the whole experiment.
    pub seconds: f64,
    pub seeds: Vec<u64>,
    /// The resolved run config of each arm (TOML text), by arm name.
    pub configs: Vec<(String, String)>,
    pub table: Table,
    /// Further tables, each under its caption, when one table cannot hold the columns of every
    /// part (question 12: text metrics, classification metrics, SQuAD's).
    #[serde(default)]
    pub more_tables: Vec<(String, Table)>,
    pub charts: Vec<ChartFiles>,
    /// Sentences written from the numbers.
    pub findings: Vec<String>,
    /// Every number: per arm and seed, the curves and the final figures.
    pub data: serde_json::Value,
}

impl ExplainResult {
    pub fn read(path: &Path) -> Result<ExplainResult> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not an explain result.json", path.display()))
    }
}

/// Runs question `id`'s experiment into `out/ID/` and returns its result (also written to
/// `out/ID/result.json`).
pub fn run(id: &str, budget: Budget, out: &Path, progress: bool, threads: usize) -> Result<ExplainResult> {
    let q = question(id)?;
    let Some(text) = q.experiment else {
        bail!("question {} ({}) has no experiment yet: {}", q.number, q.id, q.pending.unwrap_or("pending"));
    };
    let spec: Spec = toml::from_str(text).with_context(|| format!("experiments/{}.toml", q.id))?;
    let dir = out.join(q.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let start = std::time::Instant::now();
    let mut result = match spec.kind.as_str() {
        "sweep" => sweep::run(q, &spec, budget, &dir, progress, threads)?,
        "walkthrough" => walkthrough::run(q, &spec, budget, &dir)?,
        "pareto" => sweep::pareto(q, &spec, budget, out, &dir)?,
        "efficiency" => efficiency::run(q, &spec, budget, &dir, threads)?,
        "evaluation" => evaluation::run(q, &spec, budget, &dir, threads)?,
        "explaining" => explaining::run(q, &spec, budget, &dir, threads)?,
        "applications" => applications::run(q, &spec, budget, &dir, progress, threads)?,
        other => bail!(
            "experiments/{}.toml: unknown kind {other:?} (sweep, walkthrough, pareto, efficiency, evaluation, explaining, applications)",
            q.id
        ),
    };
    result.seconds = start.elapsed().as_secs_f64();
    result
        .findings
        .push(format!("The experiment took {:.0} s on {} thread(s).", result.seconds, result.machine.threads));
    let path = dir.join("result.json");
    crate::io::atomic::write_file_atomic(&path, serde_json::to_string_pretty(&result)?.as_bytes())?;
    Ok(result)
}

/// A result's common fields; the kind fills in the rest.
pub(crate) fn new_result(q: &Question, spec: &Spec, budget: Budget, seeds: Vec<u64>) -> ExplainResult {
    ExplainResult {
        id: q.id.to_string(),
        question: q.number,
        title: q.title.to_string(),
        setup: spec.setup.trim().to_string(),
        budget,
        command: format!("lmlab explain run {} --budget {}", q.id, budget.name()),
        lmlab_version: env!("CARGO_PKG_VERSION").to_string(),
        machine: Machine::here(),
        seconds: 0.0,
        seeds,
        configs: Vec::new(),
        table: Table::default(),
        more_tables: Vec::new(),
        charts: Vec::new(),
        findings: Vec::new(),
        data: serde_json::Value::Null,
    }
}

/// Parses every experiment file and resolves every arm's run config for both budgets (without
/// training): a typo in an override, or a `counts` key its kind does not read, is an error
/// naming the file and the arm. Returns the number of configs resolved.
pub fn check_experiments() -> Result<usize> {
    let mut n = 0;
    for q in QUESTIONS {
        let Some(text) = q.experiment else { continue };
        let spec: Spec = toml::from_str(text).with_context(|| format!("experiments/{}.toml", q.id))?;
        n += applications::check(q, &spec)?;
        spec.curve_tokens().with_context(|| format!("experiments/{}.toml", q.id))?;
        for (budget, b) in [(Budget::Quick, &spec.quick), (Budget::Full, &spec.full)] {
            let known = count_keys(&spec.kind);
            if let Some(k) = b.counts.keys().find(|k| !known.contains(&k.as_str())) {
                bail!(
                    "experiments/{}.toml, budget {}: unknown count {k:?} (kind {:?} reads: {})",
                    q.id,
                    budget.name(),
                    spec.kind,
                    known.join(", ")
                );
            }
            let arms: Vec<Arm> = if spec.arms.is_empty() {
                vec![Arm { name: "model".into(), base: None, set: vec![], x: None, quick_set: vec![] }]
            } else {
                spec.arms.clone()
            };
            let corpus_bases: Vec<Option<&String>> = if spec.corpora.is_empty() {
                vec![spec.base.as_ref()]
            } else {
                spec.corpora.iter().map(|c| Some(&c.base)).collect()
            };
            for (arm, corpus_base) in arms.iter().flat_map(|a| corpus_bases.iter().map(move |&c| (a, c))) {
                let Some(base) = arm.base.as_ref().or(corpus_base) else { continue };
                let base = base_config(base)?;
                let mut set = b.set.clone();
                set.extend(arm.overrides(budget));
                let cfg = crate::config::RunConfig::from_toml_str(base, &set).with_context(|| {
                    format!("experiments/{}.toml, arm {:?}, budget {}", q.id, arm.name, budget.name())
                })?;
                cfg.validate().with_context(|| {
                    format!("experiments/{}.toml, arm {:?}, budget {}", q.id, arm.name, budget.name())
                })?;
                if spec.kind == "efficiency" {
                    efficiency::check_plan(b.efficiency.as_ref(), &cfg).with_context(|| {
                        format!("experiments/{}.toml, arm {:?}, budget {}", q.id, arm.name, budget.name())
                    })?;
                }
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Trains one model of a measuring experiment through `train::train`: the arm's base config (or
/// the experiment's), the budget's overrides, the arm's, the budget's first seed, `run_dir` as
/// the output directory. Returns the resolved config and the run's summary.
pub(crate) fn train_model(
    q: &Question,
    spec: &Spec,
    arm: Option<&Arm>,
    budget: Budget,
    run_dir: &Path,
    threads: usize,
) -> Result<(crate::config::RunConfig, crate::train::TrainSummary)> {
    let name = arm.map_or("model", |a| a.name.as_str());
    let base = arm.and_then(|a| a.base.as_ref()).or(spec.base.as_ref());
    let base =
        base_config(base.with_context(|| format!("experiments/{}.toml: arm {name:?} has no base config", q.id))?)?;
    let b = spec.budget(budget);
    let mut set = b.set.clone();
    if let Some(a) = arm {
        set.extend(a.overrides(budget));
    }
    set.extend(run_overrides(b.seeds.first().copied().unwrap_or(1), run_dir, threads));
    let cfg = crate::config::RunConfig::from_toml_str(base, &set)
        .with_context(|| format!("experiments/{}.toml, arm {name:?}", q.id))?;
    let summary = crate::train::train(cfg.clone(), None, &crate::train::TrainOptions { quiet: true, json: false })
        .with_context(|| format!("training {name:?} of experiments/{}.toml", q.id))?;
    Ok((cfg, summary))
}

/// The arm named `name` of an experiment.
impl Arm {
    /// The arm's own overrides at `budget`: its `set`, then at the quick budget its `quick_set`
    /// (they follow the budget's `set`, so they win over it).
    pub(crate) fn overrides(&self, budget: Budget) -> impl Iterator<Item = String> + '_ {
        let quick: &[String] = if budget == Budget::Quick { &self.quick_set } else { &[] };
        self.set.iter().chain(quick).cloned()
    }
}

/// The overrides that place one training run: its seed, output folder and threads (last, so
/// nothing in an experiment file can change them).
pub(crate) fn run_overrides(seed: u64, run_dir: &Path, threads: usize) -> [String; 3] {
    [
        format!("train.seed={seed}"),
        format!("train.out_dir={:?}", run_dir.display().to_string()),
        format!("train.threads={threads}"),
    ]
}

pub(crate) fn arm<'a>(q: &Question, spec: &'a Spec, name: &str) -> Result<&'a Arm> {
    spec.arms.iter().find(|a| a.name == name).with_context(|| format!("experiments/{}.toml has no arm {name:?}", q.id))
}

/// The default output directory of `explain run` and input of `report`.
pub fn default_dir() -> PathBuf {
    PathBuf::from("explain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_x_is_step_or_tokens_and_a_typo_is_an_error() {
        let spec =
            |extra: &str| -> Spec { toml::from_str(&format!("kind = \"sweep\"\nsetup = \"s\"\n{extra}")).unwrap() };
        assert!(!spec("").curve_tokens().unwrap());
        assert!(!spec("curve_x = \"step\"").curve_tokens().unwrap());
        assert!(spec("curve_x = \"tokens\"").curve_tokens().unwrap());
        let e = spec("curve_x = \"token\"").curve_tokens().unwrap_err().to_string();
        assert!(e.contains("\"token\"") && e.contains("tokens"), "{e}");
        // An unknown key of a corpus is an error too.
        let bad = "kind = \"sweep\"\nsetup = \"s\"\n[[corpora]]\nname = \"a\"\nbase = \"lm-char.toml\"\npath = \"x\"";
        assert!(toml::from_str::<Spec>(bad).is_err());
    }
}
