//! `lmlab classify`: a classifier checkpoint's predicted label for every text of a file, one
//! per line, for `lmlab eval classify --gold ... --pred ...`.

use anyhow::Result;
use clap::Args;
use lmlab::io::atomic::write_file_atomic;
use lmlab::train::classify::predict_file;
use lmlab::util::thread_pool;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Classify` in main.rs.
#[derive(Args)]
pub struct ClassifyArgs {
    /// A classifier checkpoint (`lmlab train` with data.task = "classify").
    #[arg(long)]
    checkpoint: PathBuf,
    /// The texts: an SST-2 TSV, a TREC label file or plain text, one per line.
    #[arg(long)]
    input: PathBuf,
    /// sst2, trec or text (default: the checkpoint's data.format).
    #[arg(long)]
    format: Option<String>,
    /// Write the predicted labels here, one per line (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Also write the input's own labels, one per line (sst2 and trec): the --gold of `lmlab
    /// eval classify`.
    #[arg(long)]
    gold_output: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Print a JSON summary (examples, files, accuracy when the input has labels).
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: ClassifyArgs) -> Result<()> {
    thread_pool(a.threads)?.install(|| classify(&a))
}

fn classify(a: &ClassifyArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let p = predict_file(&a.checkpoint, &a.input, a.format.as_deref(), a.batch)?;
    let lines = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    match &a.output {
        Some(path) => write_file_atomic(path, lines(&p.predicted).as_bytes())?,
        None if !a.json => print!("{}", lines(&p.predicted)),
        None => {}
    }
    if let Some(path) = &a.gold_output {
        let Some(gold) = &p.gold else {
            anyhow::bail!("--gold-output: the input ({}) has no labels (format text)", a.input.display())
        };
        write_file_atomic(path, lines(gold).as_bytes())?;
    }
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let summary = serde_json::json!({
            "checkpoint": a.checkpoint, "input": a.input, "examples": p.predicted.len(),
            "labels": p.label_names, "output": a.output, "gold_output": a.gold_output,
            "accuracy": p.accuracy(), "seconds": secs,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if a.output.is_some() {
        let acc = p.accuracy().map_or(String::new(), |x| format!(", accuracy {:.2}%", 100.0 * x));
        eprintln!("classified {} texts in {secs:.1} s{acc}", p.predicted.len());
    }
    Ok(())
}
