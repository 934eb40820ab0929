//! `lmlab demo`: train a small model on Tiny Shakespeare for about a minute, then sample it.

use anyhow::Result;
use clap::Args;
use lmlab::demo;
use lmlab::infer::checkpoint_sampler::SampleHow;
use lmlab::infer::sample::SampleOptions;
use lmlab::train::{self, TrainOptions};
use lmlab::util::thread_pool;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Demo` in main.rs.
#[derive(Args)]
pub struct DemoArgs {
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
}

pub fn run(a: DemoArgs) -> Result<()> {
    let source = demo::DataSearch::standard(a.data.as_deref(), !a.offline).find()?;
    println!("lmlab demo: training on {}", source.describe());
    let cfg = demo::run_config(source.path(), a.iters, &a.out);
    let s = train::train(cfg, None, &TrainOptions::default())?;
    println!(
        "\ntrained {} steps in {:.0} s ({:.1} ms/iter): train loss {:.4}, val loss {:.4}",
        s.steps, s.seconds, s.ms_per_iter, s.train_loss, s.val_loss
    );
    println!("\n--- samples (temperature 0.8, top-k 40) ---");
    let opts = SampleOptions { max_new_tokens: 300, temperature: 0.8, top_k: Some(40), ..SampleOptions::default() };
    let how = SampleHow::Sample { num_samples: 1 };
    thread_pool(0)?.install(|| super::sample::print_samples(&s.checkpoint, "\n", &opts, 7, how))?;
    println!("---\ncheckpoint: {}", s.checkpoint.display());
    println!("next: lmlab sample --checkpoint {} --prompt \"ROMEO:\"", s.checkpoint.display());
    Ok(())
}
