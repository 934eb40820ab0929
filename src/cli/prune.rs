//! `lmlab prune`: a checkpoint's linear weights pruned to exact zeros, written as a new
//! checkpoint that `train --resume` fine-tunes with the zeros held.

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lmlab::compress::prune::{prune_model, Method, Pattern, PruneRecord, PruneSpec};
use lmlab::compress::quantize::calibration_windows;
use lmlab::io::checkpoint::{self, EvalRecord};
use lmlab::model::transformer::SparsityMask;
use std::path::{Path, PathBuf};

// The subcommand's description is the doc comment of `Cmd::Prune` in main.rs.
#[derive(Args)]
pub struct PruneArgs {
    /// Checkpoint to prune (a float one; prune first, then quantize).
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// magnitude (|W|, one threshold over all prunable weights), magnitude-layer (|W|, per
    /// weight matrix), wanda (|W|·‖X‖ from --calib, per output row), or structured (whole heads
    /// and feed-forward neurons removed: --heads, --neurons, --importance).
    #[arg(long)]
    method: String,
    /// Share of the prunable weights to set to zero, in [0, 1).
    #[arg(long, allow_negative_numbers = true, conflicts_with = "nm")]
    sparsity: Option<f64>,
    /// structured: attention heads to remove in every layer.
    #[arg(long, default_value_t = 0)]
    heads: usize,
    /// structured: feed-forward neurons to remove in every layer.
    #[arg(long, default_value_t = 0)]
    neurons: usize,
    /// structured: how heads and neurons are ranked: l2 (the norm of their weights) or taylor
    /// ((Σ w·∂L/∂w)² over --calib, the first-order estimate of the loss change when removed).
    #[arg(long, default_value = "taylor")]
    importance: String,
    /// Semi-structured N:M instead: keep N weights of every M consecutive inputs of a row
    /// (2:4, 4:8).
    #[arg(long, value_name = "N:M")]
    nm: Option<String>,
    /// Calibration text for wanda (e.g. a slice of the training data), read with the
    /// checkpoint's tokenizer.
    #[arg(long, value_name = "FILE")]
    calib: Option<PathBuf>,
    /// Calibration windows of block_size tokens (consecutive, from the start of --calib).
    #[arg(long, default_value_t = 128)]
    calib_samples: usize,
    /// Prune an untied output layer (lm_head) too; by default it stays dense.
    #[arg(long)]
    include_head: bool,
    /// Checkpoint directory to write (atomically; an existing directory must hold only
    /// checkpoint files).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// One JSON object on standard output (and no progress bar).
    #[arg(long)]
    json: bool,
}

/// Windows of the calibration batch: at most this many go through the model at once.
const CALIB_BATCH: usize = 8;

pub fn run(a: PruneArgs) -> Result<()> {
    if a.method == "structured" {
        return run_structured(a);
    }
    ensure!(a.heads == 0 && a.neurons == 0, "--heads and --neurons go with --method structured");
    let method = Method::parse(&a.method)?;
    let pattern = match (a.sparsity, &a.nm) {
        (Some(s), None) => Pattern::unstructured(s)?,
        (None, Some(nm)) => Pattern::parse_nm(nm)?,
        _ => bail!("give either --sparsity S or --nm N:M"),
    };
    let spec = PruneSpec { method, pattern, include_head: a.include_head };
    if method.needs_calibration() {
        ensure!(a.calib.is_some(), "--method {} needs calibration text: --calib FILE", method.name());
        ensure!(a.calib_samples > 0, "--calib-samples must be positive");
    } else if a.calib.is_some() {
        eprintln!("note: --calib is not used by --method {}", method.name());
    }
    let mut ck = load(&a.checkpoint, a.calib_samples.clamp(1, CALIB_BATCH))?;
    let windows = match (&a.calib, method.needs_calibration()) {
        (Some(path), true) => {
            let text = lmlab::util::read_corpus(path)?;
            let tokens = ck.tokenizer.encode(&text).with_context(|| format!("cannot tokenize {}", path.display()))?;
            let block = ck.model.config.block_size;
            let windows = calibration_windows(&tokens, block, a.calib_samples);
            ensure!(
                !windows.is_empty(),
                "{} holds {} tokens: not one calibration window of block_size {block}",
                path.display(),
                tokens.len()
            );
            windows
        }
        _ => Vec::new(),
    };
    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} forward passes {elapsed}")
            .expect("a valid template"),
    );
    let report = prune_model(&mut ck.model, &spec, &windows, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("cannot prune {}", a.checkpoint.display()))?;
    bar.finish_and_clear();

    // The pruned checkpoint continues the run: same step, batch stream and optimizer state,
    // except that the pruned weights' state is zero and the evaluation record, which belongs to
    // the dense model, starts over.
    let names: Vec<String> = report.iter().map(|t| t.name.clone()).collect();
    let mask = SparsityMask::from_zeros(&ck.model.layout, &ck.model.params, &names)?;
    let mut opt = ck.run_config.optim.build(&ck.model.layout)?;
    if let Some(saved) = &ck.optimizer {
        opt.restore(saved).with_context(|| format!("checkpoint {}: optimizer state", a.checkpoint.display()))?;
    }
    opt.for_each_state_mut(|buf| mask.apply(buf));
    ck.run_config.prune = Some(PruneRecord::new(&spec, names));
    ck.state.record = EvalRecord::default();
    lmlab::io::atomic::check_replaceable(&a.out, &checkpoint::FILES)?;
    checkpoint::save(&a.out, &ck.model, &opt, &ck.run_config, &ck.tokenizer, &ck.state)
        .with_context(|| format!("cannot write checkpoint {}", a.out.display()))?;

    let pruned: usize = report.iter().map(|t| t.pruned).sum();
    let prunable: usize = report.iter().map(|t| t.numel).sum();
    let params = ck.model.num_params();
    let calib_tokens: usize = windows.iter().map(Vec::len).sum();
    if a.json {
        let tensors: Vec<_> = report
            .iter()
            .map(|t| {
                serde_json::json!({"name": t.name, "numel": t.numel, "pruned": t.pruned,
                "sparsity": t.pruned as f64 / t.numel as f64})
            })
            .collect();
        let j = serde_json::json!({"out": a.out, "method": method.name(), "sparsity": pattern.sparsity(),
            "nm": pattern.nm_name(), "include_head": a.include_head, "calib_tokens": calib_tokens,
            "tensors": tensors, "pruned": pruned, "prunable": prunable, "parameters": params});
        println!("{j}");
    } else {
        let how = match pattern {
            Pattern::Unstructured { sparsity } => format!("{:.1}% unstructured", 100.0 * sparsity),
            Pattern::NofM { .. } => pattern.nm_name(),
        };
        println!(
            "wrote {}: {} linear weights pruned ({}, {how}): {pruned} of {prunable} weights are zero \
             ({:.1}%; {:.1}% of all {params} parameters)",
            a.out.display(),
            report.len(),
            method.name(),
            100.0 * pruned as f64 / prunable.max(1) as f64,
            100.0 * pruned as f64 / params.max(1) as f64
        );
    }
    Ok(())
}

/// Loads a float checkpoint with its optimizer state; a quantized one is refused with a
/// message that says what to do instead.
fn load(dir: &Path, max_batch: usize) -> Result<checkpoint::Checkpoint> {
    checkpoint::load(dir, max_batch, true).or_else(|e| {
        if checkpoint::load_inference(dir, 1).is_ok_and(|c| c.model.quantized().is_some()) {
            bail!(
                "{} is a quantized checkpoint: prune the float checkpoint it came from, then quantize the \
                 pruned one",
                dir.display()
            );
        }
        Err(e)
    })
}

/// `--method structured`: the model rebuilt without its least important heads and neurons.
fn run_structured(a: PruneArgs) -> Result<()> {
    use lmlab::compress::structured::{calibration_gradient, choose, importance, shrink, Importance, StructuredPlan};
    ensure!(
        a.sparsity.is_none() && a.nm.is_none(),
        "--method structured takes --heads and --neurons, not --sparsity or --nm"
    );
    ensure!(a.heads > 0 || a.neurons > 0, "--method structured needs --heads K and/or --neurons M (per layer)");
    let how = match a.importance.as_str() {
        "l2" => Importance::L2,
        "taylor" => Importance::Taylor,
        other => bail!("--importance {other:?}: expected l2 or taylor"),
    };
    let plan = StructuredPlan { heads: a.heads, neurons: a.neurons };
    let mut ck = load(&a.checkpoint, 1)?;
    lmlab::compress::structured::pruned_config(&ck.model.config, plan)
        .with_context(|| format!("cannot prune {}", a.checkpoint.display()))?;
    let cfg = &ck.model.config;
    anyhow::ensure!(
        plan.heads == 0 || cfg.kv_heads() == cfg.n_head,
        "cannot prune {}: head pruning ranks single heads, which needs multi-head attention (model.n_kv_head = {} \
         shares keys and values between heads); prune neurons only (--heads 0)",
        a.checkpoint.display(),
        cfg.kv_heads()
    );
    let mut calib_tokens = 0;
    if how == Importance::Taylor {
        let path = a
            .calib
            .as_ref()
            .context("--importance taylor needs calibration text: --calib FILE (or --importance l2)")?;
        let text = lmlab::util::read_corpus(path)?;
        let tokens = ck.tokenizer.encode(&text).with_context(|| format!("cannot tokenize {}", path.display()))?;
        let block = ck.model.config.block_size;
        let windows = calibration_windows(&tokens, block + 1, a.calib_samples);
        ensure!(!windows.is_empty(), "{} holds {} tokens: not one calibration window", path.display(), tokens.len());
        calib_tokens = windows.iter().map(Vec::len).sum();
        calibration_gradient(&mut ck.model, &windows)?;
    }
    let scores = importance(&ck.model, how)?;
    let keep = choose(&scores, plan);
    let small = shrink(&ck.model, &keep, 1)?;
    // The smaller model continues the run (same step and data), with fresh optimizer state for
    // its new shapes and an evaluation record that starts over.
    let mut run = ck.run_config.clone();
    run.model = lmlab::model::transformer::ModelConfig { vocab_size: run.model.vocab_size, ..small.config.clone() };
    let opt = run.optim.build(&small.layout)?;
    ck.state.record = EvalRecord::default();
    lmlab::io::atomic::check_replaceable(&a.out, &checkpoint::FILES)?;
    checkpoint::save(&a.out, &small, &opt, &run, &ck.tokenizer, &ck.state)
        .with_context(|| format!("cannot write checkpoint {}", a.out.display()))?;
    let (before, after) = (ck.model.num_params(), small.num_params());
    let c = &small.config;
    if a.json {
        let j = serde_json::json!({"out": a.out, "method": "structured", "importance": a.importance,
            "heads_removed_per_layer": a.heads, "neurons_removed_per_layer": a.neurons,
            "n_head": c.n_head, "head_size": c.head_size(), "ffn_hidden": c.ffn(),
            "kept_heads": keep.iter().map(|k| k.heads.clone()).collect::<Vec<_>>(),
            "parameters_before": before, "parameters_after": after, "calib_tokens": calib_tokens});
        println!("{j}");
    } else {
        println!(
            "wrote {}: {} heads of {} and {} feed-forward neurons per layer ({} importance); {before} -> {after} \
             parameters ({:.1}% fewer)",
            a.out.display(),
            c.n_head,
            c.head_size(),
            c.ffn(),
            a.importance,
            100.0 * (before - after) as f64 / before as f64
        );
    }
    Ok(())
}
