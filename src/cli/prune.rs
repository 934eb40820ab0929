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
    /// weight matrix) or wanda (|W|·‖X‖ from --calib, per output row).
    #[arg(long)]
    method: String,
    /// Share of the prunable weights to set to zero, in [0, 1).
    #[arg(long, allow_negative_numbers = true, conflicts_with = "nm", required_unless_present = "nm")]
    sparsity: Option<f64>,
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
