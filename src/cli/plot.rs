//! `lmlab plot`: a run's charts from its metrics.jsonl.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Plot` in main.rs.
#[derive(Args)]
pub struct PlotArgs {
    /// The run directory (train.out_dir).
    run_dir: PathBuf,
    /// png or svg.
    #[arg(long, default_value = "png")]
    format: lmlab::inspect::plot::Format,
    /// Where to write the charts (default RUN_DIR/plots).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: PlotArgs) -> Result<()> {
    let (files, text) = lmlab::inspect::plot::plot_run(&a.run_dir, a.format, a.out.as_deref())?;
    super::note_textless(text);
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
