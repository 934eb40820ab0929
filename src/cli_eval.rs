//! `lmlab eval ...`: the evaluation subcommands. Each reads plain files (one item per line) or
//! JSON Lines, calls the metric in `lmlab::eval`, and prints a table (or JSON with `--json`).
//! Giving several checkpoints (`--checkpoint` repeated) or several hypothesis files (`--hyp` /
//! `--pred` repeated, e.g. outputs of different seeds) evaluates each and adds mean, standard
//! deviation and range over them.

use anyhow::{ensure, Context, Result};
use clap::Subcommand;
use lmlab::eval::classification::{classification_report, ZeroDivision};
use lmlab::eval::files::{read_aligned, read_items};
use lmlab::eval::perplexity::sliding_window_eval;
use lmlab::eval::stability::{aggregate, render, Run};
use lmlab::eval::{bleu, chrf, diversity, efficiency, rouge};
use lmlab::io::checkpoint;
use lmlab::model::transformer::Arch;
use lmlab::util::{read_corpus, thread_pool};
use std::path::{Path, PathBuf};

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
        /// Window length in tokens (default: block_size + 1, the longest the model can use).
        #[arg(long)]
        context: Option<usize>,
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
        /// Largest n-gram order.
        #[arg(long, default_value_t = 4)]
        max_n: usize,
        /// Skip self-BLEU (quadratic in the number of texts).
        #[arg(long)]
        no_self_bleu: bool,
        #[arg(long, default_value = "text")]
        field: String,
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
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
}

/// Prints the runs as a table, or as JSON: {"runs": [{name, metrics}], "summary": {...}}.
fn report(runs: &[Run], json: bool, extra: Option<serde_json::Value>) -> Result<()> {
    if json {
        let runs_json: Vec<serde_json::Value> = runs
            .iter()
            .map(|(name, m)| {
                let obj: serde_json::Map<String, serde_json::Value> =
                    m.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
                serde_json::json!({"name": name, "metrics": obj})
            })
            .collect();
        let mut out = serde_json::json!({"runs": runs_json});
        if runs.len() > 1 {
            let summary: serde_json::Map<String, serde_json::Value> =
                aggregate(runs).into_iter().map(|(k, s)| (k, serde_json::to_value(s).unwrap())).collect();
            out["summary"] = serde_json::Value::Object(summary);
        }
        if let Some(e) = extra {
            out["details"] = e;
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(runs));
    }
    Ok(())
}

fn name(p: &Path) -> String {
    p.display().to_string()
}

pub fn run(cmd: EvalCmd) -> Result<()> {
    match cmd {
        EvalCmd::Lm { checkpoint, data, context, stride, threads, json } => thread_pool(threads)?.install(|| {
            let mut runs = Vec::new();
            for dir in &checkpoint {
                let r = eval_lm(dir, data.as_deref(), context, stride)
                    .with_context(|| format!("evaluating {}", dir.display()))?;
                runs.push((name(dir), r));
            }
            report(&runs, json, None)
        }),
        EvalCmd::Logits { checkpoint, text, threads } => thread_pool(threads)?.install(|| {
            let out =
                logits_json(&checkpoint, &text).with_context(|| format!("evaluating {}", checkpoint.display()))?;
            println!("{out}");
            Ok(())
        }),
        EvalCmd::Classify { gold, pred, labels, zero_division, digits, field, json } => {
            let zd: ZeroDivision = zero_division.parse()?;
            let gold_items = read_items(&gold, &field)?;
            let label_set = labels.as_deref().map(|p| read_items(p, &field)).transpose()?;
            let g: Vec<&str> = gold_items.iter().map(|s| s.as_str()).collect();
            let mut runs = Vec::new();
            let mut details = Vec::new();
            for p in &pred {
                let items = read_items(p, &field)?;
                let pr: Vec<&str> = items.iter().map(|s| s.as_str()).collect();
                let ls: Option<Vec<&str>> = label_set.as_ref().map(|l| l.iter().map(|s| s.as_str()).collect());
                let r = classification_report(&g, &pr, ls.as_deref(), zd)
                    .with_context(|| format!("{} against {}", p.display(), gold.display()))?;
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
                runs.push((
                    name(p),
                    vec![
                        ("accuracy".to_string(), r.accuracy),
                        ("macro_f1".into(), r.macro_avg.f1),
                        ("weighted_f1".into(), r.weighted_avg.f1),
                        ("macro_precision".into(), r.macro_avg.precision),
                        ("macro_recall".into(), r.macro_avg.recall),
                    ],
                ));
                details.push(serde_json::json!({"file": name(p), "report": r.to_sklearn_json(),
                    "labels": r.labels, "confusion": r.confusion, "warnings": r.warnings}));
            }
            if json || runs.len() > 1 {
                report(&runs, json, Some(serde_json::Value::Array(details)))?;
            }
            Ok(())
        }
        EvalCmd::Bleu { hyp, refs, sentence, field, json } => {
            let ref_paths: Vec<&Path> = refs.iter().map(|p| p.as_path()).collect();
            let ref_sets = read_aligned(&ref_paths, &field)?;
            let mut runs = Vec::new();
            for h in &hyp {
                let hyps = read_items(h, &field)?;
                ensure!(
                    hyps.len() == ref_sets[0].len(),
                    "{} has {} lines but the references have {}",
                    h.display(),
                    hyps.len(),
                    ref_sets[0].len()
                );
                let hs: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
                let rs: Vec<Vec<&str>> = ref_sets.iter().map(|r| r.iter().map(|s| s.as_str()).collect()).collect();
                let b = bleu::corpus_bleu(&hs, &rs)?;
                if !json {
                    println!("{}: {b}", h.display());
                }
                if sentence {
                    for (i, hyp) in hs.iter().enumerate() {
                        let r: Vec<&str> = rs.iter().map(|r| r[i]).collect();
                        println!("{}\t{:.2}", i + 1, bleu::sentence_bleu(hyp, &r)?.score);
                    }
                }
                runs.push((
                    name(h),
                    vec![("bleu".to_string(), b.score), ("bp".into(), b.bp), ("ratio".into(), b.ratio())],
                ));
            }
            if json || runs.len() > 1 {
                report(&runs, json, None)?;
            }
            Ok(())
        }
        EvalCmd::Chrf { hyp, refs, plusplus, field, json } => {
            let runs = with_references(&hyp, &refs, &field, |h, r| {
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
            let runs = with_references(&hyp, &refs, &field, |h, r| {
                let m = rouge::corpus_rouge(h, r, stem)?.mean;
                let mut out = Vec::new();
                for (name, v) in rouge::Rouge::NAMES.iter().zip(m.variants()) {
                    out.push((format!("{name}_f"), v.fmeasure));
                    out.push((format!("{name}_p"), v.precision));
                    out.push((format!("{name}_r"), v.recall));
                }
                Ok(out)
            })?;
            report(&runs, json, None)
        }
        EvalCmd::Diversity { hyp, max_n, no_self_bleu, field, json } => {
            let mut runs = Vec::new();
            for h in &hyp {
                let items = read_items(h, &field)?;
                let texts: Vec<&str> = items.iter().map(|s| s.as_str()).collect();
                let mut m = Vec::new();
                for n in 1..=max_n {
                    m.push((format!("distinct-{n}"), diversity::distinct_n(&texts, n)?.ratio));
                }
                for n in 1..=max_n {
                    m.push((format!("rep-{n}"), diversity::corpus_repetition(&texts, n)?.rate));
                }
                for n in 1..=max_n {
                    m.push((format!("ent-{n}"), diversity::ngram_entropy(&texts, n)?.bits));
                }
                if !no_self_bleu && texts.len() > 1 {
                    m.push(("self-bleu".into(), diversity::self_bleu(&texts)?.score));
                }
                runs.push((name(h), m));
            }
            report(&runs, json, None)
        }
        EvalCmd::Fluency { hyp, checkpoint: dir, field, threads, json } => thread_pool(threads)?.install(|| {
            let mut ck = checkpoint::load(&dir, 8, false)?;
            ensure!(ck.model.config.arch == Arch::Decoder, "--checkpoint must hold a decoder language model");
            let mut runs = Vec::new();
            for h in &hyp {
                let items = read_items(h, &field)?;
                let r = lmlab::eval::fluency(&mut ck.model, &ck.tokenizer, &items)
                    .with_context(|| format!("scoring {}", h.display()))?;
                runs.push((
                    name(h),
                    vec![
                        ("perplexity".to_string(), r.perplexity),
                        ("loss".into(), r.loss),
                        ("tokens".into(), r.tokens as f64),
                    ],
                ));
            }
            report(&runs, json, None)
        }),
        EvalCmd::Efficiency { checkpoint, batch, seq_len, iters, gen_tokens, threads, json } => thread_pool(threads)?
            .install(|| {
                let mut runs = Vec::new();
                let mut details = Vec::new();
                for dir in &checkpoint {
                    let mut ck = checkpoint::load(dir, batch, false)?;
                    let t = seq_len.unwrap_or(ck.model.config.block_size);
                    let e = efficiency::measure(&mut ck.model, dir, batch, t, 3, iters, gen_tokens)?;
                    runs.push((name(dir), e.metrics()));
                    details.push(serde_json::to_value(&e)?);
                }
                report(&runs, json, Some(serde_json::Value::Array(details)))
            }),
    }
}

/// Runs `score` on each hypothesis file against the aligned reference files.
fn with_references(
    hyp: &[PathBuf],
    refs: &[PathBuf],
    field: &str,
    mut score: impl FnMut(&[&str], &[Vec<&str>]) -> Result<Vec<(String, f64)>>,
) -> Result<Vec<Run>> {
    let ref_paths: Vec<&Path> = refs.iter().map(|p| p.as_path()).collect();
    let ref_sets = read_aligned(&ref_paths, field)?;
    let rs: Vec<Vec<&str>> = ref_sets.iter().map(|r| r.iter().map(|s| s.as_str()).collect()).collect();
    let mut runs = Vec::new();
    for h in hyp {
        let hyps = read_items(h, field)?;
        ensure!(
            hyps.len() == rs[0].len(),
            "{} has {} lines but the references have {}",
            h.display(),
            hyps.len(),
            rs[0].len()
        );
        let hs: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
        runs.push((name(h), score(&hs, &rs).with_context(|| format!("scoring {}", h.display()))?));
    }
    Ok(runs)
}

/// `lmlab eval logits`: {"ids", "logits"} of one forward pass over the encoded text.
fn logits_json(dir: &Path, text: &str) -> Result<String> {
    let mut ck = checkpoint::load(dir, 1, false)?;
    ensure!(
        ck.model.config.arch == Arch::Decoder,
        "lmlab eval logits needs a decoder checkpoint, but {} holds model.arch = {:?}",
        dir.display(),
        ck.model.config.arch
    );
    let ids = ck.tokenizer.encode(text).context("the text cannot be encoded")?;
    let (t, v) = (ids.len(), ck.model.config.vocab_size);
    ensure!(
        t >= 1 && t <= ck.model.config.block_size,
        "the text is {t} tokens; it must be 1..={} (block_size)",
        ck.model.config.block_size
    );
    ck.model.forward_lm(&ids, None, 1, t, false, 0)?;
    let rows: Vec<&[f32]> = ck.model.logits().chunks_exact(v).collect();
    Ok(serde_json::to_string(&serde_json::json!({ "ids": ids, "logits": rows }))?)
}

fn eval_lm(
    dir: &Path,
    data: Option<&Path>,
    context: Option<usize>,
    stride: Option<usize>,
) -> Result<Vec<(String, f64)>> {
    let mut ck = checkpoint::load(dir, 8, false)?;
    ensure!(
        ck.model.config.arch == Arch::Decoder,
        "lmlab eval lm needs a decoder checkpoint, but {} holds model.arch = {:?}",
        dir.display(),
        ck.model.config.arch
    );
    let tokens = match data {
        Some(path) => {
            let text = read_corpus(path)?;
            ck.tokenizer
                .encode(&text)
                .with_context(|| format!("{} cannot be encoded by the checkpoint's tokenizer", path.display()))?
        }
        None => {
            let path = PathBuf::from(&ck.run_config.data.path);
            let text = read_corpus(&path).with_context(|| {
                "the checkpoint's training data is needed for its validation split (or pass --data FILE)"
            })?;
            let toks = ck.tokenizer.encode(&text)?;
            lmlab::data::TokenDataset::split(toks, ck.run_config.data.val_fraction)?.val
        }
    };
    let context = context.unwrap_or(ck.model.config.block_size + 1);
    let stride = stride.unwrap_or(context.saturating_sub(1).max(1));
    let r = sliding_window_eval(&mut ck.model, &tokens, context, stride)?;
    Ok(vec![
        ("loss".to_string(), r.loss),
        ("perplexity".into(), r.perplexity),
        ("bits_per_token".into(), r.bits_per_token),
        ("tokens".into(), r.tokens as f64),
        ("context".into(), context as f64),
        ("stride".into(), stride as f64),
    ])
}
