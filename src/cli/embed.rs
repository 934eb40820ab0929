//! `lmlab embed`: sentence embeddings as JSON lines, the similarity of two texts, or a ranking
//! of a corpus' lines against a query.

use anyhow::{Context, Result};
use clap::Args;
use lmlab::infer::embed_driver::{embeddings_jsonl, open_embedder, search_lines, similarity};
use lmlab::util::{read_lines, thread_pool};
use std::io::Write;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Embed` in main.rs.
#[derive(Args)]
pub struct EmbedArgs {
    /// Model directory: config.json, model.safetensors, tokenizer.json and, from
    /// sentence-transformers, modules.json, 1_Pooling/config.json, sentence_bert_config.json.
    /// Default: $LMLAB_MINILM_DIR, else ${LMLAB_CACHE:-~/.cache/lmlab}/minilm/model.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Sentences to embed (default: the lines of --input, else of standard input).
    #[arg(value_name = "TEXT", conflicts_with_all = ["input", "similarity", "search"])]
    text: Vec<String>,
    /// Embed every line of FILE (empty lines included, so output line i is input line i).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["similarity", "search"])]
    input: Option<PathBuf>,
    /// Write the JSON lines to FILE.jsonl (atomically) instead of standard output.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["similarity", "search"])]
    out: Option<PathBuf>,
    /// Print the cosine similarity of the embeddings of A and B.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with = "search")]
    similarity: Option<Vec<String>>,
    /// Rank the non-empty lines of --corpus by cosine similarity to QUERY; prints
    /// rank, score, line number and line, tab-separated.
    #[arg(long, value_name = "QUERY", requires = "corpus")]
    search: Option<String>,
    /// The lines to search (with --search).
    #[arg(long, value_name = "FILE", requires = "search")]
    corpus: Option<PathBuf>,
    /// Hits to print (with --search).
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Sentences per forward pass (memory grows with it: about 13 MB per sentence of
    /// all-MiniLM-L6-v2's 256-token context; larger batches were not faster, see
    /// docs/BENCHMARKS.md).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print the model load time and the embedding throughput to standard error.
    #[arg(long)]
    timing: bool,
    /// Run the encoder with quantized linear layers: int8 (weight-only), w8a8, q8_0, q4_0,
    /// int4-gG, rtnB-gG or gptqB-gG[-act] (needs --calib; see lmlab quantize).
    #[arg(long, value_name = "SCHEME")]
    quantize: Option<String>,
    /// Calibration sentences for GPTQ, one per line (the first --calib-samples non-empty ones).
    #[arg(long, value_name = "FILE", requires = "quantize")]
    calib: Option<PathBuf>,
    /// Calibration sentences to use from --calib.
    #[arg(long, default_value_t = 128)]
    calib_samples: usize,
}

pub fn run(a: EmbedArgs) -> Result<()> {
    thread_pool(a.threads)?.install(|| embed(a))
}

fn embed(a: EmbedArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let mut e = open_embedder(a.model, a.batch)?;
    if let Some(s) = &a.quantize {
        use lmlab::compress::quantize::Scheme;
        let scheme = Scheme::parse(s)?;
        match (&a.calib, scheme) {
            (Some(path), Scheme::Gptq { rtn: false, .. }) => {
                let lines = read_lines(path)?;
                let calib: Vec<&String> = lines.iter().filter(|l| !l.trim().is_empty()).take(a.calib_samples).collect();
                anyhow::ensure!(!calib.is_empty(), "{} has no non-empty line to calibrate on", path.display());
                e.quantize_calibrated(scheme, &calib)?
            }
            (None, Scheme::Gptq { rtn: false, .. }) => anyhow::bail!("{s} needs calibration sentences (--calib FILE)"),
            _ => e.quantize(scheme)?,
        };
    }
    let loaded = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let count = match (a.similarity, a.search, a.corpus) {
        (Some(pair), _, _) => {
            println!("{:.6}", similarity(&mut e, &pair[0], &pair[1])?);
            2
        }
        (None, Some(query), Some(corpus)) => {
            let (hits, embedded) = search_lines(&mut e, &query, &corpus, a.top_k)?;
            let mut stdout = std::io::stdout().lock();
            for h in hits {
                writeln!(stdout, "{}\t{:.4}\t{}\t{}", h.rank, h.score, h.line, h.text)?;
            }
            embedded
        }
        _ => {
            let lines = match (a.input, a.text.is_empty()) {
                (Some(p), _) => read_lines(&p)?,
                (None, false) => a.text,
                (None, true) => std::io::stdin()
                    .lines()
                    .collect::<std::io::Result<Vec<String>>>()
                    .context("reading standard input")?,
            };
            let body = embeddings_jsonl(&mut e, &lines)?;
            match a.out {
                Some(p) => lmlab::io::atomic::write_file_atomic(&p, body.as_bytes())?,
                None => std::io::stdout().lock().write_all(body.as_bytes())?,
            }
            lines.len()
        }
    };
    if a.timing {
        let m = e.model();
        let (n_q, q_bytes, q_f32) = m
            .quantized()
            .map_or((0, 0, 0), |q| (q.len(), q.bytes(), q.iter().map(|(_, w)| 4 * w.rows * w.cols).sum::<usize>()));
        eprintln!(
            "weights: {} bytes; {n_q} linear weights quantized: {q_bytes} bytes (f32: {q_f32} bytes)",
            m.weight_bytes()
        );
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "model loaded in {loaded:.2} s; {count} sentences embedded in {secs:.3} s: {:.1} sentences/s",
            count as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}
