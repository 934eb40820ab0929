//! `lmlab plot`: a run's charts from its metrics.jsonl.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Plot` in main.rs.
#[derive(Args)]
pub struct PlotArgs {
    /// The run directory (train.out_dir).
    #[arg(required_unless_present = "xy")]
    run_dir: Option<PathBuf>,
    /// Instead of a run: draw the lines of a JSON file {"title", "x", "y", "series": [{"name",
    /// "points": [[x, y], ...]}]} into --out (a .png or .svg file).
    #[arg(long, value_name = "FILE.json", conflicts_with = "run_dir", requires = "out")]
    xy: Option<PathBuf>,
    /// png or svg.
    #[arg(long, default_value = "png")]
    format: lmlab::inspect::plot::Format,
    /// Where to write the charts (default RUN_DIR/plots); with --xy, the chart file.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: PlotArgs) -> Result<()> {
    if let (Some(xy), Some(out)) = (&a.xy, &a.out) {
        let text = std::fs::read_to_string(xy).with_context(|| format!("cannot read {}", xy.display()))?;
        let chart: lmlab::inspect::plot::XyChart =
            serde_json::from_str(&text).with_context(|| format!("{} is not a chart file", xy.display()))?;
        let text = lmlab::inspect::plot::plot_xy(&chart, out)?;
        super::note_textless(text);
        println!("wrote {}", out.display());
        return Ok(());
    }
    let run_dir = a.run_dir.as_deref().context("give RUN_DIR or --xy FILE.json")?;
    let (files, text) = lmlab::inspect::plot::plot_run(run_dir, a.format, a.out.as_deref())?;
    super::note_textless(text);
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
