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
//! applications.rs question 14: each application trained with its own config, scored against a baseline
//! report.rs      `lmlab report`: all results present in one self-contained HTML page
//! ```

mod applications;
mod findings;
mod report;
mod sweep;
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
        experiment: None,
        pending: Some("needs a synthetic associative-recall / copy data source, which lmlab's data loaders do not have yet"),
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
        experiment: None,
        pending: Some("the efficiency measurements exist (`lmlab bench`, `eval efficiency`, docs/BENCHMARKS.md) but are not yet an explain experiment"),
    },
    Question {
        number: 12,
        id: "evaluation",
        title: "Evaluating it",
        experiment: None,
        pending: Some("not yet an explain experiment (the metrics are `lmlab eval`'s, see docs/EVALUATION.md)"),
    },
    Question {
        number: 13,
        id: "explaining",
        title: "Explaining it and checking fairness",
        experiment: None,
        pending: Some("not yet an explain experiment (the tools are `lmlab inspect` and `lmlab eval fairness`)"),
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
    /// of the other results) or `applications` (question 14: each application's own config).
    pub kind: String,
    /// The set-up in words (what is trained on what, what is held fixed).
    pub setup: String,
    /// Base run config: a file under `experiments/base/`.
    #[serde(default)]
    pub base: Option<String>,
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
    /// Extra figures: "health" (per-layer gradient norms, attention entropy, dead units of the
    /// last health line), "permutation" (the last token's loss with its context shuffled),
    /// "extrapolation" (val loss reading 1×, 2×, 4×, 8× the trained context), "diversity"
    /// (per-layer Jensen–Shannon divergence between heads).
    #[serde(default)]
    pub probes: Vec<String>,
    /// The applications of an `applications` experiment, each with its own base config.
    #[serde(default)]
    pub applications: Vec<applications::Application>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetSpec {
    /// Overrides for every arm (`--set` syntax).
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default)]
    pub seeds: Vec<u64>,
}

/// One configuration an experiment compares.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Arm {
    pub name: String,
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
        "applications" => applications::run(q, &spec, budget, &dir, progress, threads)?,
        other => bail!("experiments/{}.toml: unknown kind {other:?} (sweep, walkthrough, pareto, applications)", q.id),
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
        charts: Vec::new(),
        findings: Vec::new(),
        data: serde_json::Value::Null,
    }
}

/// Parses every experiment file and resolves every arm's run config for both budgets (without
/// training): a typo in an override is an error naming the file and the arm. Returns the number
/// of configs resolved.
pub fn check_experiments() -> Result<usize> {
    let mut n = 0;
    for q in QUESTIONS {
        let Some(text) = q.experiment else { continue };
        let spec: Spec = toml::from_str(text).with_context(|| format!("experiments/{}.toml", q.id))?;
        n += applications::check(q, &spec)?;
        let Some(base) = &spec.base else { continue };
        let base = base_config(base)?;
        for (budget, b) in [(Budget::Quick, &spec.quick), (Budget::Full, &spec.full)] {
            let arms: Vec<Arm> = if spec.arms.is_empty() {
                vec![Arm { name: "model".into(), set: vec![], x: None, quick_set: vec![] }]
            } else {
                spec.arms.clone()
            };
            for arm in arms {
                let mut set = b.set.clone();
                set.extend(arm.set.iter().cloned());
                if budget == Budget::Quick {
                    set.extend(arm.quick_set.iter().cloned());
                }
                let cfg = crate::config::RunConfig::from_toml_str(base, &set).with_context(|| {
                    format!("experiments/{}.toml, arm {:?}, budget {}", q.id, arm.name, budget.name())
                })?;
                cfg.validate().with_context(|| {
                    format!("experiments/{}.toml, arm {:?}, budget {}", q.id, arm.name, budget.name())
                })?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The default output directory of `explain run` and input of `report`.
pub fn default_dir() -> PathBuf {
    PathBuf::from("explain")
}
