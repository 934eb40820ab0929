//! `lmlab summarize`: summarize the records of a JSON Lines file with an encoder-decoder
//! checkpoint (or an extractive baseline) and, when the records hold reference summaries,
//! print their ROUGE.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use lmlab::data::summarize::{read_records, SummaryRecord};
use lmlab::eval::summarization::score_summaries;
use lmlab::infer::summarize::{Baseline, Summarizer};
use lmlab::infer::translate::{DecodeOptions, LengthNorm};
use lmlab::io::atomic::write_file_atomic;
use lmlab::util::thread_pool;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, ValueEnum)]
enum BaselineArg {
    /// The first three utterances of the dialogue.
    Lead3,
    /// The three longest utterances (in words), in dialogue order.
    Longest3,
}

// The subcommand's description is the doc comment of `Cmd::Summarize` in main.rs.
#[derive(Args)]
pub struct SummarizeArgs {
    /// An encoder-decoder checkpoint trained with data.task = "summarize".
    #[arg(long, required_unless_present = "baseline", conflicts_with = "baseline")]
    checkpoint: Option<PathBuf>,
    /// An extractive baseline instead of a model (no checkpoint needed).
    #[arg(long, value_enum)]
    baseline: Option<BaselineArg>,
    /// JSON Lines records to summarize (default: the checkpoint's data.test).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Write the summaries here: `.jsonl` gives one {"id", "summary"} object per record,
    /// anything else one summary per line.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Field holding the text to summarize (default: the checkpoint's data.source_field, else
    /// "dialogue").
    #[arg(long)]
    source_field: Option<String>,
    /// Reference field (repeatable). Default: the checkpoint's data.reference_fields, else
    /// data.target_field ("summary") when records have it, else summary1, summary2, ...
    #[arg(long)]
    reference_field: Vec<String>,
    /// Beam width; 1 = greedy.
    #[arg(long, default_value_t = 4)]
    beam: usize,
    /// Length penalty exponent, as Hugging Face's: hypotheses are ranked by
    /// sum log p / len^length_penalty (len counts EOS); 0 = plain log-probability.
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f32,
    /// EOS is banned before this many tokens (HF min_new_tokens).
    #[arg(long, default_value_t = 0)]
    min_length: usize,
    /// Most summary tokens, EOS not counted (default: the training's data.max_tgt_len).
    #[arg(long)]
    max_length: Option<usize>,
    /// No n-gram of this many tokens repeats in a summary (HF no_repeat_ngram_size); 0 = off.
    #[arg(long, default_value_t = 0)]
    no_repeat_ngram_size: usize,
    /// Rows decoded at once (texts × beam).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Score without the Porter stemmer (rouge-score's use_stemmer=False).
    #[arg(long)]
    no_stemmer: bool,
    /// Print the scores (and timing) as one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: SummarizeArgs) -> Result<()> {
    thread_pool(a.threads)?.install(|| summarize(&a))
}

fn summarize(a: &SummarizeArgs) -> Result<()> {
    let mut summarizer = a.checkpoint.as_deref().map(|dir| Summarizer::load(dir, a.batch)).transpose()?;
    let data = summarizer.as_ref().map(|s| s.ck.run_config.data.clone());
    let input = match (&a.input, &data) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) if !d.test.is_empty() => PathBuf::from(&d.test),
        _ => bail!("give --input FILE.jsonl (the checkpoint's config names no data.test)"),
    };
    let or_default = |field: &str, default: &str| if field.is_empty() { default.to_owned() } else { field.to_owned() };
    let source_field = match (&a.source_field, &data) {
        (Some(f), _) => f.clone(),
        (None, Some(d)) => or_default(&d.source_field, "dialogue"),
        (None, None) => "dialogue".into(),
    };
    let target_field = data.as_ref().map_or("summary".into(), |d| or_default(&d.target_field, "summary"));
    let reference_fields = match (&a.reference_field, &data) {
        (given, _) if !given.is_empty() => given.clone(),
        (_, Some(d)) => d.reference_fields.clone(),
        _ => Vec::new(),
    };
    let records = read_records(&input, &source_field, &target_field, &reference_fields, false)?;

    let started = Instant::now();
    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(records.len() as u64) };
    bar.set_style(
        ProgressStyle::with_template("summarizing {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}]")
            .expect("a valid template"),
    );
    let sources: Vec<String> = records.iter().map(|r| r.source.clone()).collect();
    let (method, summaries) = match (&mut summarizer, a.baseline) {
        (Some(s), _) => {
            let opts = DecodeOptions {
                beam: a.beam,
                max_len: a.max_length.unwrap_or_else(|| s.max_tgt_len()),
                length_penalty: a.length_penalty,
                length_norm: LengthNorm::Hf,
                min_len: a.min_length,
                no_repeat_ngram_size: a.no_repeat_ngram_size,
            };
            anyhow::ensure!(opts.max_len > 0, "--max-length must be positive");
            let out = s.summarize(&sources, &opts, |done| bar.set_position(done as u64))?;
            (if a.beam == 1 { "greedy".to_owned() } else { format!("beam {}", a.beam) }, out)
        }
        (None, Some(b)) => {
            let b = match b {
                BaselineArg::Lead3 => Baseline::Lead3,
                BaselineArg::Longest3 => Baseline::Longest3,
            };
            (b.name().to_owned(), sources.iter().map(|d| b.summarize(d)).collect())
        }
        (None, None) => unreachable!("clap requires --checkpoint or --baseline"),
    };
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();

    if let Some(path) = &a.output {
        write_summaries(path, &records, &summaries)?;
    }
    let with_refs = records.iter().all(|r| !r.references.is_empty());
    let scores = if with_refs {
        let refs: Vec<Vec<String>> = records.iter().map(|r| r.references.clone()).collect();
        Some(score_summaries(&summaries, &refs, !a.no_stemmer)?)
    } else {
        None
    };
    if a.json {
        let json = serde_json::json!({
            "method": method,
            "input": input,
            "summaries": records.len(),
            "seconds": seconds,
            "rouge": scores,
        });
        println!("{json}");
        return Ok(());
    }
    match &scores {
        Some(s) => {
            eprintln!("{method}: {} summaries in {seconds:.1} s", records.len());
            print!("{s}");
        }
        None if a.output.is_none() => summaries.iter().for_each(|s| println!("{}", one_line(s))),
        None => eprintln!("{method}: {} summaries in {seconds:.1} s (no references to score)", records.len()),
    }
    Ok(())
}

/// A summary on one line: newlines become spaces.
fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Writes the summaries atomically: JSON Lines with each record's id (`.jsonl`), else text.
fn write_summaries(path: &Path, records: &[SummaryRecord], summaries: &[String]) -> Result<()> {
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut out = String::new();
    for (r, s) in records.iter().zip(summaries) {
        if jsonl {
            let id = r.id.clone().unwrap_or_else(|| format!("line {}", r.line));
            out += &serde_json::json!({ "id": id, "summary": s }).to_string();
        } else {
            out += &one_line(s);
        }
        out.push('\n');
    }
    write_file_atomic(path, out.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}
