//! `lmlab eval ...`: the evaluation subcommands. Each reads plain files (one item per line) or
//! JSON Lines, calls the metric in `lmlab::eval`, and prints a table (or JSON with `--json`).
//! Giving several checkpoints (`--checkpoint` repeated) or several hypothesis files (`--hyp` /
//! `--pred` repeated, e.g. outputs of different seeds) evaluates each and adds mean, standard
//! deviation and range over them.

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use lmlab::eval::checkpoints::{self, run_name};
use lmlab::eval::chrf;
use lmlab::eval::classification::ZeroDivision;
use lmlab::eval::file_metrics::{self as metrics, score_with_references};
use lmlab::eval::files::{read_aligned, read_items};
use lmlab::eval::relevance::{self, RelevanceOptions, RelevanceScorer};
use lmlab::eval::stability::{render, to_json, Run};
use lmlab::kernels::precision::Precision;
use lmlab::util::thread_pool;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum EvalCmd {
    /// Language modelling: loss, perplexity and bits per token of a text, with a sliding
    /// window (the Hugging Face perplexity guide's method).
    Lm {
        /// Checkpoint directory of a decoder (repeat to compare several).
        #[arg(long, required = true)]
        checkpoint: Vec<PathBuf>,
        /// UTF-8 text to score (default: the validation split of the checkpoint's training data).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Window length in tokens (default: block_size + 1, the trained context). Longer
        /// windows measure length extrapolation: the model is rebuilt for them (any position
        /// scheme but a learned table, which has rows for the trained context only).
        #[arg(long)]
        context: Option<usize>,
        /// Number format of the matrix products: fp32, or bf16 / f16 (autocast's numerics, as
        /// training's `train.precision`).
        #[arg(long, default_value = "fp32", value_parser = parse_precision)]
        precision: Precision,
        /// Tokens the window moves each time (default: context − 1: disjoint model inputs, every
        /// token scored once; smaller = more context per token, slower).
        #[arg(long)]
        stride: Option<usize>,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Logits: a decoder's next-token logits at every position of a text, as JSON
    /// {"ids": [...], "logits": [[...], ...]} (T × vocab_size, f32 printed exactly), for
    /// comparing with another implementation (scripts/check_hf_gpt2.py against transformers).
    Logits {
        /// Checkpoint directory of a decoder.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The text, encoded with the checkpoint's tokenizer (at most block_size tokens).
        #[arg(long)]
        text: String,
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Classification: per-class precision, recall, F1, support; micro/macro/weighted averages;
    /// confusion matrix (scikit-learn's classification_report).
    Classify {
        /// Gold labels, one per line (or JSONL with --field).
        #[arg(long)]
        gold: PathBuf,
        /// Predicted labels, aligned with --gold (repeat for several runs).
        #[arg(long, required = true)]
        pred: Vec<PathBuf>,
        /// The label set, one per line, in report order (default: every label that occurs,
        /// sorted); labels outside it are an error.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// What 0/0 becomes: warn (0, with a warning), 0, 1 or nan.
        #[arg(long, default_value = "warn")]
        zero_division: String,
        #[arg(long, default_value_t = 2)]
        digits: usize,
        /// JSONL field holding the label.
        #[arg(long, default_value = "label")]
        field: String,
        #[arg(long)]
        json: bool,
    },
    /// Corpus BLEU identical to sacrebleu's defaults (13a, exp smoothing), or per-sentence BLEU.
    Bleu {
        /// Hypotheses, one per line (repeat for several runs).
        #[arg(long, required = true)]
        hyp: Vec<PathBuf>,
        /// References, aligned with the hypotheses (repeat for multiple references).
        #[arg(long = "ref", required = true)]
        refs: Vec<PathBuf>,
        /// Also print sentence BLEU of every line (sacrebleu.sentence_bleu).
        #[arg(long)]
        sentence: bool,
        #[arg(long, default_value = "text")]
        field: String,
        #[arg(long)]
        json: bool,
    },
    /// chrF (default) or chrF++ identical to sacrebleu's CHRF.
    Chrf {
        /// Hypotheses, one per line (repeat for several runs).
        #[arg(long, required = true)]
        hyp: Vec<PathBuf>,
        /// References, aligned with the hypotheses (repeat for multiple references).
        #[arg(long = "ref", required = true)]
        refs: Vec<PathBuf>,
        /// chrF++: add word unigrams and bigrams.
        #[arg(long)]
        plusplus: bool,
        #[arg(long, default_value = "text")]
        field: String,
        #[arg(long)]
        json: bool,
    },
    /// ROUGE-1/2/L/Lsum identical to Google's rouge-score (mean over pairs; with several
    /// references, the best per pair). For ROUGE-Lsum put one sentence per line inside each
    /// item, i.e. use JSONL with "\n" in the strings.
    Rouge {
        #[arg(long, required = true)]
        hyp: Vec<PathBuf>,
        #[arg(long = "ref", required = true)]
        refs: Vec<PathBuf>,
        /// Porter-stem tokens longer than 3 characters (rouge-score's use_stemmer).
        #[arg(long)]
        stem: bool,
        #[arg(long, default_value = "text")]
        field: String,
        #[arg(long)]
        json: bool,
    },
    /// Diversity of generated texts: distinct-n, seq-rep-n, n-gram entropy, self-BLEU.
    Diversity {
        #[arg(long, required = true)]
        hyp: Vec<PathBuf>,
        #[command(flatten)]
        div: DiversityArgs,
        #[arg(long, default_value = "text")]
        field: String,
        #[arg(long)]
        json: bool,
    },
    /// Relevance: BERTScore (bert-score's numbers) against the references and the cosine
    /// similarity of sentence embeddings (sentence-transformers') to the references and/or the
    /// sources, per item (--items) and overall.
    Relevance {
        #[arg(long, required = true)]
        hyp: Vec<PathBuf>,
        #[command(flatten)]
        rel: RelevanceArgs,
        #[arg(long, default_value = "text")]
        field: String,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Generated text in one pass: fluency (perplexity under --checkpoint), diversity
    /// (distinct-n, seq-rep-n, n-gram entropy, self-BLEU) and relevance (as `eval relevance`).
    Generation {
        #[arg(long, required = true)]
        hyp: Vec<PathBuf>,
        /// The reference language model for fluency (a decoder checkpoint).
        #[arg(long)]
        checkpoint: PathBuf,
        #[command(flatten)]
        rel: RelevanceArgs,
        #[command(flatten)]
        div: DiversityArgs,
        #[arg(long, default_value = "text")]
        field: String,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Fluency: perplexity of each hypothesis file under a reference language model.
    Fluency {
        #[arg(long, required = true)]
        hyp: Vec<PathBuf>,
        /// The reference model (a decoder checkpoint).
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value = "text")]
        field: String,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Fairness and bias: group metrics of a classifier, CrowS-Pairs for a causal or masked LM, WEAT/SEAT
    /// on sentence embeddings (docs/FAIRNESS.md).
    Fairness {
        #[command(subcommand)]
        what: super::fairness::FairnessCmd,
    },
    /// Efficiency: parameters, FLOPs per token, latency, throughput, memory, size on disk.
    Efficiency {
        #[arg(long, required = true)]
        checkpoint: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Sequence length of the timed forward passes (default: block_size).
        #[arg(long)]
        seq_len: Option<usize>,
        #[arg(long, default_value_t = 20)]
        iters: usize,
        /// Tokens of greedy generation to time (decoders; 0 = skip).
        #[arg(long, default_value_t = 64)]
        gen_tokens: usize,
        /// Number format of the matrix products: fp32, bf16 or f16 (see `eval lm`).
        #[arg(long, default_value = "fp32", value_parser = parse_precision)]
        precision: Precision,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Extractive question answering: exact match and F1 as SQuAD v1.1's official script
    /// computes them (normalised answers, best over the references, percent over all
    /// questions).
    Squad {
        /// The questions with their reference answers (SQuAD v1.1 JSON, e.g. dev-v1.1.json).
        #[arg(long)]
        data: PathBuf,
        /// Predictions: a JSON object {question id: answer text} (the official format).
        #[arg(long)]
        predictions: PathBuf,
        /// Score only these articles of --data, by index in file order: A..B (B excluded,
        /// e.g. 40..48 for the last 8 of SQuAD's dev set) or a list 3,7,41.
        #[arg(long, value_name = "SPEC")]
        articles: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// The diversity metrics' options (`eval diversity`, `eval generation`).
#[derive(Args)]
pub struct DiversityArgs {
    /// Largest n-gram order.
    #[arg(long, default_value_t = 4)]
    max_n: usize,
    /// Skip self-BLEU (quadratic in the number of texts).
    #[arg(long)]
    no_self_bleu: bool,
}

/// The diversity metrics of each hypothesis file (one run each).
fn diversity_runs(hyp: &[PathBuf], a: &DiversityArgs, field: &str) -> Result<Vec<Run>> {
    hyp.iter().map(|h| Ok((run_name(h), metrics::diversity_file(h, field, a.max_n, !a.no_self_bleu)?))).collect()
}

/// What `eval relevance` and `eval generation` compare the hypotheses with, and how.
#[derive(Args)]
pub struct RelevanceArgs {
    /// References, aligned with the hypotheses (repeat for several references per item: each
    /// measure takes the best). BERTScore is computed when references are given.
    #[arg(long = "ref")]
    refs: Vec<PathBuf>,
    /// Sources or prompts, aligned with the hypotheses.
    #[arg(long)]
    src: Option<PathBuf>,
    /// What embedding similarity compares each hypothesis with (repeat for both; default:
    /// each of --ref and --src that is given).
    #[arg(long, value_enum)]
    against: Vec<Against>,
    /// Encoder directory (a BERT / sentence-transformers directory: config.json,
    /// model.safetensors, tokenizer.json; tokenizer_config.json's model_max_length is BERTScore's
    /// length limit). Default: $LMLAB_MINILM_DIR, else ${LMLAB_CACHE:-~/.cache/lmlab}/minilm/model.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// BERTScore's layer (bert-score's num_layers), 1..=the model's layers; default: the last.
    #[arg(long)]
    layer: Option<usize>,
    /// Weigh BERTScore's tokens by idf computed from the references (bert-score's idf=True).
    #[arg(long)]
    idf: bool,
    /// Rescale BERTScore with a bert-score baseline file (CSV with the columns LAYER,P,R,F; row
    /// --layer is used): (s − b) / (1 − b). bert-score ships none for all-MiniLM-L6-v2.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Write every item's scores as JSON lines to FILE.jsonl.
    #[arg(long, value_name = "FILE.jsonl")]
    items: Option<PathBuf>,
    /// Texts per forward pass of the encoder.
    #[arg(long, default_value_t = 8)]
    batch: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Against {
    Reference,
    Source,
}

/// The relevance of each hypothesis file (one run each), and the settings as JSON.
fn relevance_runs(hyp: &[PathBuf], a: &RelevanceArgs, field: &str) -> Result<(Vec<Run>, serde_json::Value)> {
    // References and sources are read together, so that mismatched counts name the files.
    let paths: Vec<&std::path::Path> = a.refs.iter().chain(&a.src).map(|p| p.as_path()).collect();
    let mut texts = read_aligned(&paths, field)?;
    let src = a.src.as_ref().map(|_| texts.pop().expect("the source file was read"));
    let against = |x: Against, given: bool| if a.against.is_empty() { given } else { a.against.contains(&x) };
    let opts = RelevanceOptions {
        model: a.model.clone(),
        layer: a.layer,
        idf: a.idf,
        baseline: a.baseline.clone(),
        cos_reference: against(Against::Reference, !a.refs.is_empty()),
        cos_source: against(Against::Source, a.src.is_some()),
        batch: a.batch,
    };
    let mut scorer = RelevanceScorer::new(&opts, &texts, src.as_deref())?;
    let (mut runs, mut jsonl) = (Vec::new(), String::new());
    for h in hyp {
        let hyps = metrics::read_hypotheses(h, field, scorer.items())?;
        let items = scorer.score(&hyps).with_context(|| format!("scoring {}", h.display()))?;
        let nan = relevance::undefined_precisions(&items);
        if nan > 0 {
            eprintln!(
                "note: {}: {nan} items have an undefined BERTScore precision (every token weighs 0 under --idf: it \
                 occurs in every reference); they are NaN (null) per item and left out of the mean",
                h.display()
            );
        }
        if a.items.is_some() {
            jsonl += &relevance::items_jsonl(&run_name(h), &items)?;
        }
        runs.push((run_name(h), relevance::summary_metrics(&items)));
    }
    if let Some(p) = &a.items {
        lmlab::io::atomic::write_file_atomic(p, jsonl.as_bytes())?;
    }
    let settings = serde_json::json!({
        "model": lmlab::infer::embed_driver::model_dir(a.model.clone())?.display().to_string(),
        "bertscore_layer": scorer.bertscore_layer(),
        "idf": a.idf,
        "baseline": a.baseline.as_ref().map(|p| p.display().to_string()),
        "references": a.refs.len(),
    });
    Ok((runs, settings))
}

/// Prints the runs as a table, or as JSON: {"runs": [{name, metrics}], "summary": {...}}.
fn report(runs: &[Run], json: bool, extra: Option<serde_json::Value>) -> Result<()> {
    // Tensor parallel under mpirun: every rank has the same numbers; rank 0 prints them.
    if !lmlab::dist::world().is_root() {
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(runs, extra))?);
    } else {
        print!("{}", render(runs));
    }
    Ok(())
}

pub fn run(cmd: EvalCmd) -> Result<()> {
    match cmd {
        EvalCmd::Lm { checkpoint, data, context, precision, stride, threads, json } => {
            thread_pool(threads)?.install(|| {
                let mut runs = Vec::new();
                for dir in &checkpoint {
                    let r = checkpoints::language_model(dir, data.as_deref(), context, stride, precision)
                        .with_context(|| format!("evaluating {}", dir.display()))?;
                    runs.push((run_name(dir), r));
                }
                report(&runs, json, None)
            })
        }
        EvalCmd::Logits { checkpoint, text, threads } => thread_pool(threads)?.install(|| {
            let out = checkpoints::next_token_logits(&checkpoint, &text)
                .and_then(|l| l.to_json())
                .with_context(|| format!("evaluating {}", checkpoint.display()))?;
            if lmlab::dist::world().is_root() {
                println!("{out}");
            }
            Ok(())
        }),
        EvalCmd::Classify { gold, pred, labels, zero_division, digits, field, json } => {
            let zd: ZeroDivision = zero_division.parse()?;
            let gold_items = read_items(&gold, &field)?;
            let label_set = labels.as_deref().map(|p| read_items(p, &field)).transpose()?;
            let mut runs = Vec::new();
            let mut details = Vec::new();
            for p in &pred {
                let r = metrics::classify_file(&gold, &gold_items, p, label_set.as_deref(), zd, &field)?;
                if !json {
                    println!("{}:\n{}", p.display(), r.to_text(digits));
                    println!("confusion matrix (rows gold, columns predicted; {}):", r.labels.join(", "));
                    for row in &r.confusion {
                        println!("  {}", row.iter().map(|c| format!("{c:>6}")).collect::<String>());
                    }
                    for w in &r.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!();
                }
                runs.push((run_name(p), metrics::classification_metrics(&r)));
                details.push(metrics::classification_details(p, &r));
            }
            if json || runs.len() > 1 {
                report(&runs, json, Some(serde_json::Value::Array(details)))?;
            }
            Ok(())
        }
        EvalCmd::Bleu { hyp, refs, sentence, field, json } => {
            let ref_sets = metrics::read_references(&refs, &field)?;
            let mut runs = Vec::new();
            for h in &hyp {
                let b = metrics::bleu_file(h, &ref_sets, &field, sentence)?;
                if !json {
                    println!("{}: {}", h.display(), b.bleu);
                }
                for (i, score) in b.sentences.iter().enumerate() {
                    println!("{}\t{score:.2}", i + 1);
                }
                runs.push((run_name(h), metrics::bleu_metrics(&b.bleu)));
            }
            if json || runs.len() > 1 {
                report(&runs, json, None)?;
            }
            Ok(())
        }
        EvalCmd::Chrf { hyp, refs, plusplus, field, json } => {
            let runs = score_with_references(&hyp, &refs, &field, |h, r| {
                let c = if plusplus { chrf::corpus_chrf_pp(h, r)? } else { chrf::corpus_chrf(h, r)? };
                if !json {
                    println!("{c}");
                }
                Ok(vec![(c.name.clone(), c.score)])
            })?;
            if json || runs.len() > 1 {
                report(&runs, json, None)?;
            }
            Ok(())
        }
        EvalCmd::Rouge { hyp, refs, stem, field, json } => {
            let runs = score_with_references(&hyp, &refs, &field, |h, r| metrics::rouge_metrics(h, r, stem))?;
            report(&runs, json, None)
        }
        EvalCmd::Diversity { hyp, div, field, json } => report(&diversity_runs(&hyp, &div, &field)?, json, None),
        EvalCmd::Relevance { hyp, rel, field, threads, json } => thread_pool(threads)?.install(|| {
            let (runs, settings) = relevance_runs(&hyp, &rel, &field)?;
            if !json {
                println!("{}", describe_relevance(&settings));
            }
            report(&runs, json, Some(serde_json::json!({ "relevance": settings })))
        }),
        EvalCmd::Generation { hyp, checkpoint, rel, div, field, threads, json } => {
            thread_pool(threads)?.install(|| {
                let fluency = checkpoints::fluency(&checkpoint, &hyp, &field)?;
                let diversity = diversity_runs(&hyp, &div, &field)?;
                let (relevance, settings) = relevance_runs(&hyp, &rel, &field)?;
                if json {
                    let merged: Vec<Run> = fluency
                        .iter()
                        .zip(&diversity)
                        .zip(&relevance)
                        .map(|(((name, f), (_, d)), (_, r))| (name.clone(), [f.clone(), d.clone(), r.clone()].concat()))
                        .collect();
                    let extra = serde_json::json!({"fluency_checkpoint": run_name(&checkpoint), "relevance": settings});
                    return report(&merged, true, Some(extra));
                }
                if lmlab::dist::world().is_root() {
                    println!("fluency: perplexity under {}\n{}", checkpoint.display(), render(&fluency));
                    println!("diversity:\n{}", render(&diversity));
                    println!("relevance: {}\n{}", describe_relevance(&settings), render(&relevance));
                }
                Ok(())
            })
        }
        EvalCmd::Fluency { hyp, checkpoint: dir, field, threads, json } => thread_pool(threads)?.install(|| {
            let runs = checkpoints::fluency(&dir, &hyp, &field)?;
            report(&runs, json, None)
        }),
        EvalCmd::Fairness { what } => super::fairness::run(what),
        EvalCmd::Efficiency { checkpoint, batch, seq_len, iters, gen_tokens, precision, threads, json } => {
            thread_pool(threads)?.install(|| {
                let (runs, details) =
                    checkpoints::efficiency(&checkpoint, batch, seq_len, iters, gen_tokens, precision)?;
                report(&runs, json, Some(serde_json::Value::Array(details)))
            })
        }
        EvalCmd::Squad { data, predictions, articles, json } => {
            run_squad(&data, &predictions, articles.as_deref(), json)
        }
    }
}

fn run_squad(data: &std::path::Path, predictions: &std::path::Path, articles: Option<&str>, json: bool) -> Result<()> {
    use lmlab::eval::squad::{evaluate, read_squad_file, select_articles};
    let read = |p: &std::path::Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
    let mut questions = read_squad_file(data)?;
    if let Some(spec) = articles {
        questions = select_articles(questions, spec)?;
    }
    let preds: std::collections::HashMap<String, String> = serde_json::from_str(&read(predictions)?)
        .with_context(|| format!("{} is not a JSON object of question id → answer text", predictions.display()))?;
    let s = evaluate(&questions, &preds);
    if s.unanswered > 0 {
        eprintln!("note: {} of {} questions have no prediction; each scores 0", s.unanswered, s.total);
    }
    if s.unknown_ids > 0 {
        eprintln!("note: {} predictions name no question of {}; ignored", s.unknown_ids, data.display());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("exact_match {:.4}  f1 {:.4}  ({} questions)", s.exact_match, s.f1, s.total);
    }
    Ok(())
}

/// One line saying how relevance was measured.
fn describe_relevance(settings: &serde_json::Value) -> String {
    let mut s = format!("encoder {}", settings["model"].as_str().unwrap_or("?"));
    if let Some(l) = settings["bertscore_layer"].as_u64() {
        s += &format!("; BERTScore at layer {l}, idf {}", if settings["idf"] == true { "on" } else { "off" });
        if let Some(b) = settings["baseline"].as_str() {
            s += &format!(", rescaled with {b}");
        }
    }
    s
}

/// `--precision`: fp32, bf16 or f16.
fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "fp32" => Ok(Precision::Fp32),
        "bf16" => Ok(Precision::Bf16),
        "f16" => Ok(Precision::F16),
        _ => Err(format!("{s:?}: expected fp32, bf16 or f16")),
    }
}
