//! `lmlab account`: parameters, FLOPs and memory of a preset, a config or a checkpoint.

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use lmlab::config::RunConfig;
use lmlab::inspect::account::{self, Account, Architecture, MemoryQuery, PRESETS};
use lmlab::inspect::plot::{plot_xy, XyChart, XySeries};
use lmlab::kernels::precision::Precision;
use lmlab::model::transformer::ModelConfig;
use lmlab::optim::{OptimizerConfig, SgdConfig};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PrecisionArg {
    Fp32,
    Bf16,
    F16,
}

/// The optimizers by the state they keep (torch.optim's defaults otherwise).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum OptimizerArg {
    Adamw,
    Adam,
    /// Plain SGD: no state.
    Sgd,
    /// SGD with momentum 0.9: one buffer.
    Momentum,
    Rmsprop,
    Adagrad,
}

// The subcommand's description is the doc comment of `Cmd::Account` in main.rs.
#[derive(Args)]
pub struct AccountArgs {
    /// A named architecture (see --list-presets).
    #[arg(long, conflicts_with_all = ["config", "checkpoint"])]
    preset: Option<String>,
    /// A run config (TOML): its [model], and its batch size, precision and optimizer unless given.
    #[arg(long, conflicts_with = "checkpoint")]
    config: Option<PathBuf>,
    /// A checkpoint directory (its state.json and config.toml; no weights are read).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Override a key of --config, e.g. --set model.n_layer=8 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
    overrides: Vec<String>,
    /// Vocabulary size for a config that leaves it to the tokenizer (a character-level corpus).
    #[arg(long)]
    vocab: Option<usize>,
    /// Sequences per batch (default: the config's train.batch_size, 1 for a preset).
    #[arg(long)]
    batch: Option<usize>,
    /// Context length T (default: the model's block_size); the memory figures are for a model
    /// built with block_size = T.
    #[arg(long)]
    context: Option<usize>,
    /// Training precision (default: the config's train.precision, fp32 for a preset).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
    /// Optimizer (default: the config's [optim], AdamW for a preset).
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// One JSON object on standard output.
    #[arg(long)]
    json: bool,
    /// Also draw attention's share of the forward FLOPs against the context (.png or .svg).
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
    /// List the presets and exit.
    #[arg(long)]
    list_presets: bool,
}

/// What a config or checkpoint contributes besides the model.
struct Defaults {
    batch: usize,
    precision: Precision,
    optimizer: OptimizerConfig,
}

fn optimizer_config(o: OptimizerArg) -> OptimizerConfig {
    use lmlab::config::OptimizerName;
    let section = |name| lmlab::config::OptimSection { name, ..Default::default() };
    match o {
        OptimizerArg::Adamw => section(OptimizerName::AdamW).optimizer(),
        OptimizerArg::Adam => section(OptimizerName::Adam).optimizer(),
        OptimizerArg::Sgd => section(OptimizerName::Sgd).optimizer(),
        OptimizerArg::Momentum => OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, ..Default::default() }),
        OptimizerArg::Rmsprop => section(OptimizerName::RmsProp).optimizer(),
        OptimizerArg::Adagrad => section(OptimizerName::Adagrad).optimizer(),
    }
}

fn from_run_config(name: String, run: &RunConfig, model: ModelConfig) -> (Architecture, Defaults) {
    let defaults =
        Defaults { batch: run.train.batch_size, precision: run.train.precision, optimizer: run.optim.optimizer() };
    (Architecture { name, model, bert: None }, defaults)
}

fn from_config(path: &Path, overrides: &[String], vocab: Option<usize>) -> Result<(Architecture, Defaults)> {
    let run = RunConfig::from_file(path, overrides)?;
    // An LM run's character tokenizer takes its vocabulary from the corpus; translation and
    // classification train a BPE tokenizer of data.vocab_size.
    let bpe = run.data.task != lmlab::config::Task::Lm;
    let vocab =
        vocab.or((run.model.vocab_size > 0).then_some(run.model.vocab_size)).or(bpe.then_some(run.data.vocab_size));
    let Some(vocab) = vocab else {
        bail!(
            "{} leaves the vocabulary size to the tokenizer (a character-level corpus): give --vocab N \
             (65 for Tiny Shakespeare)",
            path.display()
        )
    };
    let model = run.model_config(vocab);
    Ok(from_run_config(path.display().to_string(), &run, model))
}

fn from_checkpoint(dir: &Path) -> Result<(Architecture, Defaults)> {
    ensure!(dir.is_dir(), "checkpoint directory {} does not exist", dir.display());
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).with_context(|| format!("cannot read {}", state_path.display()))?;
    let state: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", state_path.display()))?;
    let model: ModelConfig = serde_json::from_value(state.get("model_config").cloned().unwrap_or_default())
        .with_context(|| format!("{} has no valid model_config", state_path.display()))?;
    let run = RunConfig::from_file(&dir.join("config.toml"), &[])?;
    Ok(from_run_config(dir.display().to_string(), &run, model))
}

pub fn run(a: AccountArgs) -> Result<()> {
    if a.list_presets {
        for p in PRESETS {
            println!("{:<12} {}", p.name, p.source);
        }
        return Ok(());
    }
    let (arch, defaults) = match (&a.preset, &a.config, &a.checkpoint) {
        (Some(name), _, _) => {
            let defaults =
                Defaults { batch: 1, precision: Precision::Fp32, optimizer: optimizer_config(OptimizerArg::Adamw) };
            (account::preset(name)?.architecture(), defaults)
        }
        (None, Some(path), _) => from_config(path, &a.overrides, a.vocab)?,
        (None, None, Some(dir)) => from_checkpoint(dir)?,
        (None, None, None) => bail!("give --preset NAME, --config FILE.toml or --checkpoint DIR (or --list-presets)"),
    };
    let query = MemoryQuery {
        batch: a.batch.unwrap_or(defaults.batch),
        context: a.context.unwrap_or(arch.model.block_size),
        precision: match a.precision {
            Some(PrecisionArg::Fp32) => Precision::Fp32,
            Some(PrecisionArg::Bf16) => Precision::Bf16,
            Some(PrecisionArg::F16) => Precision::F16,
            None => defaults.precision,
        },
        optimizer: a.optimizer.map_or(defaults.optimizer, optimizer_config),
    };
    ensure!(query.batch > 0 && query.context > 0, "--batch and --context must be positive");
    let acc = account::account(&arch, &query)?;
    if a.json {
        println!("{}", serde_json::to_string(&acc)?);
    } else {
        print_account(&acc);
    }
    if let Some(path) = &a.chart {
        let chart = XyChart {
            title: format!("{}: attention's share of the forward FLOPs", acc.name),
            x: "context, log2 tokens (7 = 128, 15 = 32768)".into(),
            y: "attention share (%)".into(),
            series: vec![XySeries {
                name: acc.name.clone(),
                points: acc
                    .flops
                    .by_context
                    .iter()
                    .map(|c| ((c.context as f64).log2(), 100.0 * c.attention_share))
                    .collect(),
            }],
            scatter: false,
        };
        super::note_textless(plot_xy(&chart, path)?);
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// 124439808 → "124,439,808".
fn grouped(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A count with a short form: "124,439,808 (124.4M)".
fn count(n: usize) -> String {
    let x = n as f64;
    let short = match x {
        x if x >= 1e9 => format!("{:.2}B", x / 1e9),
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}K", x / 1e3),
        x => format!("{x}"),
    };
    format!("{} ({short})", grouped(n as u128))
}

fn bytes(b: u64) -> String {
    let x = b as f64;
    match x {
        x if x >= 1024f64.powi(3) => format!("{:.2} GiB", x / 1024f64.powi(3)),
        x if x >= 1024f64.powi(2) => format!("{:.1} MiB", x / 1024f64.powi(2)),
        x => format!("{:.1} KiB", x / 1024.0),
    }
}

fn flops(f: f64) -> String {
    match f {
        f if f >= 1e12 => format!("{:.3} TFLOP", f / 1e12),
        f if f >= 1e9 => format!("{:.3} GFLOP", f / 1e9),
        f => format!("{:.3} MFLOP", f / 1e6),
    }
}

fn print_account(acc: &Account) {
    let p = &acc.params;
    let share = |n: usize| 100.0 * n as f64 / p.total.max(1) as f64;
    println!("{}", acc.name);
    println!("\nparameters");
    for (label, n) in [
        ("embeddings", p.embeddings),
        ("attention", p.attention),
        ("feed-forward", p.feed_forward),
        ("norms", p.norms),
        ("head", p.head),
    ] {
        println!("  {label:<14} {:>28} {:>6.2}%", count(n), share(n));
    }
    println!("  {:<14} {:>28}", "total", count(p.total));
    println!("  {:<14} {:>28}  (Kaplan's N: no embedding tables, no LM head)", "non-embedding", count(p.non_embedding));
    if p.tied_head {
        println!("  the LM head is the token embedding, counted once under embeddings");
    }
    if p.buffers > 0 {
        println!("  plus {} BatchNorm running statistics (buffers, not counted)", grouped(p.buffers as u128));
    }
    match (&acc.formula, &acc.formula_note) {
        (Some(f), _) => {
            println!("\nclosed form (L layers, d = n_embd, F = ffn_hidden, V vocabulary, T positions, Y token types, K classes)");
            println!("  {}", f.symbolic);
            println!("  = {}", f.substituted);
            println!("  = {}", grouped(f.value));
        }
        (None, Some(why)) => println!("\nclosed form: none ({why})"),
        (None, None) => {}
    }
    let f = &acc.flops;
    println!(
        "\nFLOPs per token (matrix products, 2 per multiply-add, attention counted dense) at context {}",
        f.context
    );
    println!("  forward              {}", flops(f.forward_per_token));
    println!("  training (3× fwd)    {}", flops(f.training_per_token));
    println!(
        "  6·N (non-embedding)  {}   ratio exact/6N {:.3}",
        flops(f.six_n_non_embedding),
        f.training_per_token / f.six_n_non_embedding
    );
    println!(
        "  6·N (all params)     {}   ratio exact/6N {:.3}",
        flops(f.six_n_total),
        f.training_per_token / f.six_n_total
    );
    println!("\n  context   forward/token   attention share");
    for c in &f.by_context {
        println!("  {:>7}   {:>13}   {:>14.1}%", c.context, flops(c.forward_per_token), 100.0 * c.attention_share);
    }
    let m = &acc.memory;
    println!(
        "\nmemory, training: batch {} × context {}, {}, {} ({} f32 state per parameter)",
        m.batch, m.context, m.precision, m.optimizer, m.optimizer_slots
    );
    println!("  weights (f32 master)      {:>12}", bytes(m.weights));
    if m.low_precision_copy > 0 {
        println!("  {} working copy + scratch {:>10}", m.precision, bytes(m.low_precision_copy));
    }
    println!("  gradients (f32)           {:>12}", bytes(m.gradients));
    println!("  optimizer state           {:>12}", bytes(m.optimizer_state));
    println!("  activations (dense attn)  {:>12}", bytes(m.activations));
    match m.activations_flash {
        Some(fl) => println!("  activations (flash attn)  {:>12}", bytes(fl)),
        None => println!("  activations (flash attn)           n/a (flash needs plain causal multi-head attention)"),
    }
    println!("  total                     {:>12}", bytes(m.training_total));
    println!("  + writing a checkpoint    {:>12}   (peak {})", bytes(m.checkpoint_write), bytes(m.training_peak));
    println!("\nmemory, generation: batch {} × context {}, fp32", m.batch, m.context);
    println!("  KV cache per token        {:>12}", bytes(m.kv_cache_per_token));
    println!("  KV cache (lmlab's)        {:>12}", bytes(m.kv_cache));
    println!("  activations (inference)   {:>12}", bytes(m.inference_activations));
    println!(
        "  peak                      {:>12}   (weights + max(checkpoint bytes on load, activations + cache))",
        bytes(m.generation_peak)
    );
}
