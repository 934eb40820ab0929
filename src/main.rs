//! `lmlab`: the command-line front end. Each subcommand (one file in `src/cli/`) parses its
//! arguments, calls the library and prints; no model logic lives here.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lmlab", version, about = "Build, train, sample and evaluate Transformer language models")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model from a TOML config (or resume any run from a checkpoint).
    Train(cli::train::TrainArgs),
    /// Generate text from an lmlab checkpoint, or from a llama2.c model.bin with its
    /// tokenizer.bin.
    Sample(cli::sample::SampleArgs),
    /// Write an lmlab checkpoint in another format: a Llama-architecture model (rmsnorm, rope,
    /// swiglu, no bias) as a llama2.c model.bin (legacy version-0 format), a GPT-2-architecture
    /// model as a Hugging Face GPT-2 directory (transformers' GPT2LMHeadModel and AutoTokenizer
    /// load it unchanged), or either as a GGUF file (llama.cpp's format; f32, f16, q8_0, q4_0).
    Export(cli::export::ExportArgs),
    /// Convert a Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer.json or
    /// vocab.json + merges.txt) or a GGUF file (llama or gpt2 architecture) into an lmlab
    /// checkpoint, which `sample`, `eval` and `train --resume` then use.
    Import(cli::import::ImportArgs),
    /// Quantize a checkpoint's linear layers (bf16 or int8 weight-only, W8A8, GGML's Q8_0 and Q4_0, 4-bit
    /// round to nearest with groups, GPTQ) into a new, smaller checkpoint that samples and evaluates like any
    /// other.
    Quantize(cli::quantize::QuantizeArgs),
    /// Prune a checkpoint's linear weights to exact zeros (magnitude, global or per layer, or
    /// Wanda with calibration text; unstructured or N:M) into a new checkpoint; `train --resume`
    /// fine-tunes it with the pruned weights held at zero. `--method structured` removes whole
    /// heads and feed-forward neurons instead: a smaller model.
    Prune(cli::prune::PruneArgs),
    /// What a checkpoint holds: the model, its tokenizer, each tensor's type (f32 or a
    /// quantization), the files and their size. Without a checkpoint: this CPU and the kernel
    /// path each family runs on (`LMLAB_ISA` overrides it).
    Info(cli::info::InfoArgs),
    /// Parameters (exact, by component, and the closed form), FLOPs per token (forward,
    /// training, against 6N, attention's share by context) and memory (weights, gradients,
    /// optimizer state, activations with and without flash attention, KV cache) of a named
    /// architecture (GPT-2, BERT-base, Llama-2-7B, GPT-3), a run config or a checkpoint.
    Account(cli::account::AccountArgs),
    /// Evaluate: language modelling, classification, BLEU, fluency, efficiency, fairness (see
    /// `lmlab eval --help`).
    Eval {
        #[command(subcommand)]
        what: cli::eval::EvalCmd,
    },
    /// Predict a label for every text of a file (SST-2 TSV, TREC, plain text) with a classifier
    /// checkpoint: one label name per line, for `lmlab eval classify --gold ... --pred ...`.
    Classify(cli::classify::ClassifyArgs),
    /// Fold a LoRA checkpoint's adapters into its weights (W + alpha/rank·B·A): a plain
    /// checkpoint whose outputs equal the adapted model's.
    MergeLora(cli::merge_lora::MergeLoraArgs),
    /// Translate sentences with an encoder-decoder checkpoint; with --reference, score them
    /// with BLEU (sacrebleu's defaults: 13a tokenisation, cased).
    Translate(cli::translate::TranslateArgs),
    /// Summarize the records of a JSON Lines file (DialogSum's format) with an encoder-decoder
    /// checkpoint (greedy or beam search, min/max length, length penalty, no-repeat n-grams) or
    /// an extractive baseline (LEAD-3, LONGEST-3); with reference summaries in the records,
    /// score them with ROUGE-1/2/L/Lsum (rouge-score's numbers).
    Summarize(cli::summarize::SummarizeArgs),
    /// Sentence embeddings with a sentence-transformers BERT model (all-MiniLM-L6-v2:
    /// scripts/fetch_minilm.sh): one JSON array per sentence, the cosine similarity of two
    /// texts (--similarity), or a ranking of a corpus' lines (--search).
    Embed(cli::embed::EmbedArgs),
    /// Serve a decoder checkpoint (and/or a sentence-embedding model) over HTTP with the OpenAI
    /// API (completions, chat, embeddings, streaming), batching concurrent requests together.
    Serve(cli::serve::ServeArgs),
    /// Extractive question answering with a QA checkpoint (data.task = "qa"): the answer to
    /// --question in --context with its character span and score, or every question of a
    /// SQuAD file (--data) into a predictions JSON (--output) for `lmlab eval squad`.
    Answer(cli::answer::AnswerArgs),
    /// Print a config's learning-rate schedule (a table and a chart) without training.
    Schedule(cli::schedule::ScheduleArgs),
    /// Draw a run's charts from RUN_DIR/metrics.jsonl: loss, learning rate, gradient norm and,
    /// with train.health_interval, the per-layer health statistics.
    Plot(cli::plot::PlotArgs),
    /// Look inside a model: attention maps and rollout, the logit lens, attributions
    /// (gradient × input, integrated gradients), head and feed-forward ablation.
    Inspect {
        #[command(subcommand)]
        what: cli::inspect::InspectCmd,
    },
    /// The classic questions about Transformers, each answered by a reproducible experiment
    /// (`explain list`, `explain run ID --budget quick|full`).
    Explain {
        #[command(subcommand)]
        what: cli::explain::ExplainCmd,
    },
    /// Every `lmlab explain` result present in one self-contained HTML page (charts inline,
    /// a table of contents by question, each section's set-up, numbers and command).
    Report(cli::explain::ReportArgs),
    /// Time training steps of a config's model and break the time down by operation.
    Profile(cli::profile::ProfileArgs),
    /// One benchmark case, as JSON (driven by bench/run.py against PyTorch).
    Bench(cli::bench::BenchArgs),
    /// Quick end-to-end demo: train a small model on Tiny Shakespeare for about a minute.
    Demo(cli::demo::DemoArgs),
}

fn main() {
    let cli = Cli::parse();
    // Under mpirun, MPI starts here (a single process otherwise; see lmlab::dist).
    let world = match lmlab::dist::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(cli, world.is_distributed()) {
        if world.is_distributed() {
            // The other ranks may be waiting in a collective this rank will never join:
            // MPI_Abort makes mpirun stop them all, and this line says who failed and why.
            eprintln!("error on {}: {e:#}", world.who());
            world.abort(1);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    lmlab::dist::finalize();
}

fn run(cli: Cli, distributed: bool) -> anyhow::Result<()> {
    // A typo in LMLAB_ISA (or a path this CPU lacks) is an error, not a silent fallback.
    lmlab::kernels::isa::check_env().map_err(anyhow::Error::msg)?;
    // Under mpirun: training is data parallel; sampling and these evaluations are tensor
    // parallel (rank 0 prints). The other commands run as one process.
    let parallel = match &cli.command {
        Cmd::Train(_) => true,
        Cmd::Sample(a) => a.runs_tensor_parallel(),
        Cmd::Eval { what } => matches!(what, cli::eval::EvalCmd::Lm { .. } | cli::eval::EvalCmd::Logits { .. }),
        _ => false,
    };
    if distributed && !parallel {
        anyhow::bail!(
            "under mpirun only `lmlab train` (data parallel), `lmlab sample --checkpoint` and `lmlab eval lm|logits` \
             (tensor parallel) run as several ranks; run this command as one process"
        );
    }
    match cli.command {
        Cmd::Train(a) => cli::train::run(a),
        Cmd::Sample(a) => cli::sample::run(a),
        Cmd::Export(a) => cli::export::run(a),
        Cmd::Import(a) => cli::import::run(a),
        Cmd::Quantize(a) => cli::quantize::run(a),
        Cmd::Prune(a) => cli::prune::run(a),
        Cmd::Info(a) => cli::info::run(a),
        Cmd::Account(a) => cli::account::run(a),
        Cmd::Eval { what } => cli::eval::run(what),
        Cmd::Translate(a) => cli::translate::run(a),
        Cmd::Summarize(a) => cli::summarize::run(a),
        Cmd::Classify(a) => cli::classify::run(a),
        Cmd::MergeLora(a) => cli::merge_lora::run(a),
        Cmd::Embed(a) => cli::embed::run(a),
        Cmd::Serve(a) => cli::serve::run(a),
        Cmd::Answer(a) => cli::answer::run(a),
        Cmd::Schedule(a) => cli::schedule::run(a),
        Cmd::Plot(a) => cli::plot::run(a),
        Cmd::Inspect { what } => cli::inspect::run(what),
        Cmd::Explain { what } => cli::explain::run(what),
        Cmd::Report(a) => cli::explain::report(a),
        Cmd::Profile(a) => cli::profile::run(a),
        Cmd::Bench(a) => cli::bench::run(a),
        Cmd::Demo(a) => cli::demo::run(a),
    }
}
