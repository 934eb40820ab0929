//! Charts of a run (`lmlab plot RUN_DIR`) and of a learning-rate schedule
//! (`lmlab schedule --plot FILE`), as PNG or SVG.
//!
//! Drawing is plotters' (pure Rust). Text needs a TrueType font, which is looked up at run
//! time and never shipped: `$LMLAB_FONT`, then the usual places of DejaVu Sans, Liberation
//! Sans, FreeSans or Noto Sans (Linux), Arial (macOS, Windows), then any `*.ttf` under
//! `/usr/share/fonts`. Without one (or with `LMLAB_FONT=none`) the charts are drawn without
//! text (axes and lines only), and a note says so.
//!
//! The code: this file has the entry points ([`plot_run`], [`plot_schedule`], [`plot_xy`]) and
//! [`Format`];
//! `metrics` reads a run's metrics.jsonl into lines, `charts` decides which charts those lines
//! make, `draw` renders a chart with plotters, and `font` finds the font for its text.

mod charts;
mod draw;
mod font;
mod heatmap;
mod metrics;

pub use heatmap::{plot_heatmaps, Heatmap, Scale};
pub use metrics::{read_metrics, LayerLines, Line, RunMetrics, HEALTH_KEYS};

use crate::optim::LrSchedule;
use anyhow::{bail, ensure, Context, Result};
use charts::charts;
use draw::{write_chart, Chart, Series};
use font::text_available;
use plotters::style::RGBColor;
use std::path::{Path, PathBuf};

/// Image format of the charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
        }
    }

    /// The format a file name asks for (`.png` or `.svg`).
    pub fn of_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => bail!("{}: the chart file must end in .png or .svg", path.display()),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Ok(Format::Png),
            "svg" => Ok(Format::Svg),
            _ => bail!("unknown chart format {s:?} (png or svg)"),
        }
    }
}

/// Draws the charts of the run in `run_dir` (its `metrics.jsonl`) into `out_dir`
/// (default `run_dir/plots`): loss, learning rate, gradient norm and, when the run logged
/// health statistics, one chart per statistic with a line per layer. Returns the files
/// written and whether they have text (see the module doc).
pub fn plot_run(run_dir: &Path, format: Format, out_dir: Option<&Path>) -> Result<(Vec<PathBuf>, bool)> {
    ensure!(run_dir.is_dir(), "run directory {} does not exist", run_dir.display());
    let path = run_dir.join("metrics.jsonl");
    ensure!(path.is_file(), "{} not found: is {} a run directory?", path.display(), run_dir.display());
    let m = read_metrics(&path)?;
    let charts = charts(&m);
    ensure!(!charts.is_empty(), "{} has no step, eval or health lines to plot", path.display());
    let out = out_dir.map_or_else(|| run_dir.join("plots"), Path::to_path_buf);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let text = text_available()?;
    let mut files = Vec::new();
    for c in &charts {
        let file = out.join(format!("{}.{}", c.file, format.extension()));
        write_chart(c, &file, format, text)?;
        files.push(file);
    }
    Ok((files, text))
}

/// Draws the learning rate of `schedule` over `iters` iterations into `path` (.png or .svg).
/// Returns whether the chart has text.
pub fn plot_schedule(schedule: &LrSchedule, iters: u64, path: &Path) -> Result<bool> {
    let format = Format::of_path(path)?;
    let stride = (iters / 2000).max(1);
    let mut its: Vec<u64> = (0..iters).step_by(stride as usize).collect();
    if its.last().is_some_and(|&l| l + 1 < iters) {
        its.push(iters - 1);
    }
    let points: Vec<(f64, f64)> = its.iter().map(|&it| (it as f64, schedule.lr(it) as f64)).collect();
    ensure!(!points.is_empty(), "the schedule has no iterations (train.max_iters = 0)");
    let chart = Chart {
        file: String::new(),
        title: format!("{:?} learning-rate schedule", schedule.kind),
        x_desc: "iteration".into(),
        y_desc: "learning rate".into(),
        log_y: false,
        log_x: false,
        legend: false,
        scatter: false,
        series: vec![Series { name: "learning rate".into(), points, color: RGBColor(20, 120, 60), markers: false }],
    };
    let text = text_available()?;
    write_chart(&chart, path, format, text)?;
    Ok(text)
}

/// A chart of any (x, y) lines, as `lmlab plot --xy FILE.json` reads it: scripts that measure
/// something (e.g. scripts/prune_table.py) draw their results through it.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XyChart {
    pub title: String,
    /// The axis descriptions.
    pub x: String,
    pub y: String,
    pub series: Vec<XySeries>,
    /// Points only, no lines (e.g. a 2-D projection coloured by label).
    #[serde(default)]
    pub scatter: bool,
}

/// One line of an [`XyChart`], drawn with markers at its points.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XySeries {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Colors of the lines of an [`XyChart`], in order (then repeated).
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(90, 90, 90),
];

/// Draws `c` into `path` (.png or .svg). Returns whether the chart has text.
pub fn plot_xy(c: &XyChart, path: &Path) -> Result<bool> {
    plot_xy_on(c, Axes::default(), path)
}

/// Linear or logarithmic axes of an [`XyChart`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Axes {
    pub log_x: bool,
    pub log_y: bool,
}

/// [`plot_xy`] with the given axes; on a log axis, points at or below zero are left out.
pub fn plot_xy_on(c: &XyChart, axes: Axes, path: &Path) -> Result<bool> {
    let format = Format::of_path(path)?;
    let series: Vec<Series> = c
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| Series {
            name: s.name.clone(),
            points: s
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| x.is_finite() && y.is_finite())
                .filter(|&(x, y)| (!axes.log_x || x > 0.0) && (!axes.log_y || y > 0.0))
                .collect(),
            color: PALETTE[i % PALETTE.len()],
            markers: true,
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    ensure!(!series.is_empty(), "the chart {:?} has no finite points", c.title);
    let chart = Chart {
        file: String::new(),
        title: c.title.clone(),
        x_desc: c.x.clone(),
        y_desc: c.y.clone(),
        log_y: axes.log_y,
        log_x: axes.log_x,
        legend: series.len() > 1,
        scatter: c.scatter,
        series,
    };
    let text = text_available()?;
    write_chart(&chart, path, format, text)?;
    Ok(text)
}
