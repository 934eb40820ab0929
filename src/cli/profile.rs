//! `lmlab profile`: time a config's training steps, broken down by operation.

use anyhow::Result;
use clap::Args;
use lmlab::config::RunConfig;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Profile` in main.rs.
#[derive(Args)]
pub struct ProfileArgs {
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
}

pub fn run(a: ProfileArgs) -> Result<()> {
    let cfg = RunConfig::from_file(&a.config, &a.set)?;
    let (median, rows) = lmlab::train::profile_steps(&cfg, a.vocab, a.warmup, a.iters)?;
    let total: f64 = rows.iter().map(|r| r.1).sum();
    println!("median step: {median:.2} ms over {} steps; per step by operation:", a.iters);
    for (label, secs, calls) in rows {
        let ms = secs * 1e3 / a.iters as f64;
        let share = 100.0 * secs / total;
        println!("  {label:<28} {ms:>8.2} ms  {share:>5.1}%  ({} calls/step)", calls / a.iters as u64);
    }
    Ok(())
}
