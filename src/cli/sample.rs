//! `lmlab sample`: text from an lmlab checkpoint (sampled, a batch of samples, or beam
//! search), or from a llama2.c model.bin with its tokenizer.bin.

use anyhow::{Context, Result};
use clap::Args;
use lmlab::infer::checkpoint_sampler::{CheckpointSampler, SampleHow};
use lmlab::infer::llama2c::{Llama2cRun, Llama2cRunner};
use lmlab::infer::sample::SampleOptions;
use lmlab::util::thread_pool;
use std::io::Write;
use std::path::{Path, PathBuf};

// The subcommand's description is the doc comment of `Cmd::Sample` in main.rs.
#[derive(Args)]
pub struct SampleArgs {
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
}

impl SampleArgs {
    /// Whether this run can be tensor parallel under mpirun: a checkpoint, not a llama2.c file.
    pub fn runs_tensor_parallel(&self) -> bool {
        self.llama2c.is_none() && self.checkpoint.is_some()
    }
}

pub fn run(a: SampleArgs) -> Result<()> {
    if let (Some(model), Some(tok)) = (a.llama2c, a.tokenizer) {
        // llama2.c's own sampler: temperature and top-k only.
        anyhow::ensure!(a.repetition_penalty == 1.0, "--repetition-penalty is not available with --llama2c");
        let prompt = a.prompt.unwrap_or_default();
        let run = Llama2cRun {
            max_new_tokens: a.max_new_tokens,
            steps: a.steps,
            temperature: a.temperature,
            top_k: a.top_k,
            seed: a.seed,
        };
        return thread_pool(a.threads)?.install(|| print_llama2c(&model, &tok, &prompt, &run));
    }
    let checkpoint = a.checkpoint.context("give --checkpoint DIR or --llama2c MODEL.bin --tokenizer TOK.bin")?;
    let opts = SampleOptions {
        max_new_tokens: a.max_new_tokens.unwrap_or(500),
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repetition_penalty,
        stop: a.stop,
    };
    opts.validate()?;
    let prompt = a.prompt.unwrap_or_else(|| "\n".into());
    let how = match a.beam {
        Some(beam) => SampleHow::Beam { beam, length_penalty: a.length_penalty },
        None => SampleHow::Sample { num_samples: a.num_samples },
    };
    thread_pool(a.threads)?.install(|| print_samples(&checkpoint, &prompt, &opts, a.seed, how))
}

/// Prints the prompt followed by the text `how` produces from the checkpoint `dir`: one sample
/// streamed as it is generated, several separated by `---` lines, or the best beam hypothesis
/// (its scores on standard error).
pub fn print_samples(dir: &Path, prompt: &str, opts: &SampleOptions, seed: u64, how: SampleHow) -> Result<()> {
    let mut sampler = CheckpointSampler::load(dir, prompt, how.batch_rows()?)?;
    // Tensor parallel: every rank generates the same tokens; rank 0 prints them.
    let root = lmlab::dist::world().is_root();
    if let Some(limit) = sampler.context_limit().filter(|&l| sampler.prompt_tokens() > l && root) {
        eprintln!(
            "note: the prompt has {} tokens; the model sees only the last {limit} (its context)",
            sampler.prompt_tokens()
        );
    }
    let mut stdout: Box<dyn Write> = if root { Box::new(std::io::stdout().lock()) } else { Box::new(std::io::sink()) };
    match how {
        SampleHow::Sample { num_samples: 1 } => {
            write!(stdout, "{prompt}")?;
            stdout.flush()?;
            // Each piece of text is written and flushed as soon as it is final.
            sampler.stream(opts, seed, |piece| {
                let _ = write!(stdout, "{piece}");
                let _ = stdout.flush();
            })?;
            writeln!(stdout)?;
        }
        SampleHow::Sample { num_samples } => {
            for (i, text) in sampler.samples(opts, seed, num_samples)?.iter().enumerate() {
                if i > 0 {
                    writeln!(stdout, "---")?;
                }
                writeln!(stdout, "{prompt}{text}")?;
            }
        }
        SampleHow::Beam { beam, length_penalty } => {
            let best = sampler.beam(opts.max_new_tokens, beam, length_penalty)?;
            writeln!(stdout, "{prompt}{}", best.text)?;
            if root {
                eprintln!(
                    "beam {beam}: log p = {:.4}, score = {:.4} ({} tokens)",
                    best.log_prob, best.score, best.tokens
                );
            }
        }
    }
    Ok(())
}

/// `sample --llama2c`, as llama2.c's `run` prints it: the prompt's tokens after BOS, then the
/// generated ones, then the speed on standard error.
fn print_llama2c(model_path: &Path, tok_path: &Path, prompt: &str, run: &Llama2cRun) -> Result<()> {
    let mut runner = Llama2cRunner::load(model_path, tok_path)?;
    let ids = runner.encode_prompt(prompt)?;
    let steps = Llama2cRunner::steps(&ids, run);
    let seq_len = runner.seq_len();
    if steps > seq_len {
        eprintln!("note: {steps} steps asked; the model's seq_len is {seq_len}, so {seq_len} are run");
    }
    let mut stdout = std::io::stdout().lock();
    let started = std::time::Instant::now();
    let out = runner.generate(&ids, steps, run, |piece| {
        let _ = stdout.write_all(piece);
        let _ = stdout.flush();
    })?;
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
