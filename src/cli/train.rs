//! `lmlab train`: train from a TOML config, or resume a run from its checkpoint.

use anyhow::Result;
use clap::Args;
use lmlab::config::RunConfig;
use lmlab::train::{self, TrainOptions};
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Train` in main.rs.
#[derive(Args)]
pub struct TrainArgs {
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
}

pub fn run(a: TrainArgs) -> Result<()> {
    let opts = TrainOptions { quiet: a.quiet, json: a.json };
    let cfg = RunConfig::for_run(a.config.as_deref(), a.resume.as_deref(), &a.set)?;
    let s = train::train(cfg, a.resume.as_deref(), &opts)?;
    // Data-parallel: rank 0 speaks for the job.
    if !lmlab::dist::world().is_root() {
        return Ok(());
    }
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
