//! `lmlab translate`: translate sentences with an encoder-decoder checkpoint and, given
//! references, print their corpus BLEU.

use anyhow::{Context, Result};
use clap::Args;
use lmlab::eval::translation::{read_references, score_translations};
use lmlab::infer::translate::{DecodeOptions, Translator};
use lmlab::util::{read_lines, thread_pool};
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Translate` in main.rs.
#[derive(Args)]
pub struct TranslateArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Source sentences, one per line (default: standard input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Reference translations, one per line, aligned with the input (repeatable).
    #[arg(long)]
    reference: Vec<PathBuf>,
    /// Write the translations here (default: standard output, unless --reference is given).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Beam width; 1 = greedy.
    #[arg(long, default_value_t = 4)]
    beam: usize,
    /// GNMT length penalty alpha (0 = none).
    #[arg(long, default_value_t = 0.6)]
    length_penalty: f32,
    /// Most target tokens (0 = 1.5 × source length + 10, capped by block_size).
    #[arg(long, default_value_t = 0)]
    max_len: usize,
    /// Rows decoded at once (sentences × beam).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: TranslateArgs) -> Result<()> {
    let opts =
        DecodeOptions { beam: a.beam, max_len: a.max_len, length_penalty: a.length_penalty, ..Default::default() };
    thread_pool(a.threads)?.install(|| translate(&a, &opts))
}

fn translate(a: &TranslateArgs, opts: &DecodeOptions) -> Result<()> {
    let mut translator = Translator::load(&a.checkpoint, a.batch)?;
    let lines = match &a.input {
        Some(p) => read_lines(p)?,
        None => std::io::stdin().lines().collect::<std::io::Result<Vec<String>>>().context("reading standard input")?,
    };
    let refs = read_references(&a.reference, lines.len())?;
    // Progress goes to standard error only when standard output is not the translations.
    let verbose = !refs.is_empty() || a.output.is_some();
    let started = std::time::Instant::now();
    let total = lines.len();
    let hyps = translator.translate(&lines, opts, |done| {
        if verbose {
            eprint!("\rtranslated {done}/{total}");
        }
    })?;
    if verbose {
        eprintln!(" in {:.1} s", started.elapsed().as_secs_f64());
    }
    match &a.output {
        Some(p) => {
            std::fs::write(p, hyps.join("\n") + "\n").with_context(|| format!("cannot write {}", p.display()))?
        }
        None if refs.is_empty() => hyps.iter().for_each(|h| println!("{h}")),
        None => {}
    }
    if !refs.is_empty() {
        println!("{}", score_translations(&hyps, &refs)?);
    }
    Ok(())
}
