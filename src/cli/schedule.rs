//! `lmlab schedule`: a config's learning-rate schedule as a table and, optionally, a chart.

use anyhow::Result;
use clap::Args;
use lmlab::config::RunConfig;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Schedule` in main.rs.
#[derive(Args)]
pub struct ScheduleArgs {
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
}

pub fn run(a: ScheduleArgs) -> Result<()> {
    let cfg = RunConfig::from_file(&a.config, &a.set)?;
    let text = lmlab::optim::schedule::describe(&cfg.optim.schedule(), cfg.train.max_iters, a.rows.max(2), 64);
    print!("{text}");
    if let Some(path) = a.plot {
        let text = lmlab::inspect::plot::plot_schedule(&cfg.optim.schedule(), cfg.train.max_iters, &path)?;
        super::note_textless(text);
        println!("wrote {}", path.display());
    }
    Ok(())
}
