//! `lmlab bench`: one benchmark case, as JSON or a one-line summary.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Bench` in main.rs.
#[derive(Args)]
pub struct BenchArgs {
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
}

pub fn run(a: BenchArgs) -> Result<()> {
    let r = lmlab::bench::run_case(&a.case, a.iters, a.warmup, a.threads, a.seed, a.dump_init.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let mut t = r.times_ms.clone();
        t.sort_by(|a, b| a.total_cmp(b));
        let med = t[t.len() / 2];
        println!(
            "{} [{}]: median {med:.2} ms (min {:.2}, max {:.2}) over {} iters, {:.1} GFLOP/s, initial loss {:.4}, peak RSS {} MB",
            r.case,
            r.isa,
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
