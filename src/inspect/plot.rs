//! Charts of a run (`lmlab plot RUN_DIR`) and of a learning-rate schedule
//! (`lmlab schedule --plot FILE`), as PNG or SVG.
//!
//! Drawing is plotters' (pure Rust). Text needs a TrueType font, which is looked up at run
//! time and never shipped: `$LMLAB_FONT`, then the usual places of DejaVu Sans, Liberation
//! Sans, FreeSans or Noto Sans (Linux), Arial (macOS, Windows), then any `*.ttf` under
//! `/usr/share/fonts`. Without one (or with `LMLAB_FONT=none`) the charts are drawn without
//! text (axes and lines only), and a note says so.

use crate::optim::LrSchedule;
use anyhow::{bail, ensure, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

/// Points (x, y) of one line. Pushing an x at or before the last one drops the points from
/// that x on first: a resumed run repeats the steps after its checkpoint, and a new run in
/// the same directory starts again from 0, and the later points replace the earlier ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Line {
    pub points: Vec<(f64, f64)>,
}

impl Line {
    pub fn push(&mut self, x: f64, y: f64) {
        while self.points.last().is_some_and(|&(lx, _)| lx >= x) {
            self.points.pop();
        }
        self.points.push((x, y));
    }
}

/// A per-layer statistic: one line per (stack, layer), in the order first seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerLines {
    pub keys: Vec<(String, usize)>,
    pub lines: Vec<Line>,
}

impl LayerLines {
    fn push(&mut self, stack: &str, layer: usize, x: f64, y: f64) {
        let k = match self.keys.iter().position(|(s, l)| s == stack && *l == layer) {
            Some(k) => k,
            None => {
                self.keys.push((stack.to_string(), layer));
                self.lines.push(Line::default());
                self.keys.len() - 1
            }
        };
        self.lines[k].push(x, y);
    }
}

/// The per-layer statistics of the health lines, by their key in the log.
pub const HEALTH_KEYS: [(&str, &str); 7] = [
    ("grad_norm", "gradient norm per layer"),
    ("update_ratio", "update / weight ratio per layer"),
    ("act_mean", "activation mean (block output)"),
    ("act_std", "activation std (block output)"),
    ("dead_share", "share of dead FFN units"),
    ("attn_entropy", "self-attention entropy (nats)"),
    ("cross_attn_entropy", "cross-attention entropy (nats)"),
];

/// What a run's metrics.jsonl holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunMetrics {
    /// From the step lines: training loss, learning rate, global gradient norm.
    pub loss: Line,
    pub lr: Line,
    pub grad_norm: Line,
    /// From the eval lines.
    pub eval_train: Line,
    pub eval_val: Line,
    /// From the health lines, in the order of [`HEALTH_KEYS`].
    pub health: Vec<LayerLines>,
}

/// A number, or None for JSON null (how a NaN is written) and other non-numbers.
fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// Reads a metrics.jsonl: step lines `{"iter", "loss", "lr", "grad_norm", ...}`, eval lines
/// `{"iter", "train_loss", "val_loss"}`, health lines `{"iter", "health": {"layers": [...]}}`.
/// Unknown keys, and lines without an iteration (like `{"skipped": true}`), are passed over;
/// a missing or empty file, a blank line and a line that is not a JSON object are errors that
/// name the file and the line.
pub fn read_metrics(path: &Path) -> Result<RunMetrics> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(!text.trim().is_empty(), "{} is empty: the run has logged nothing yet", path.display());
    let mut m = RunMetrics { health: vec![LayerLines::default(); HEALTH_KEYS.len()], ..Default::default() };
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        ensure!(!line.trim().is_empty(), "{}: empty line", at());
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not valid JSON", at()))?;
        ensure!(v.is_object(), "{}: not a JSON object", at());
        // The LM, translation and classification loops write "iter"; "step" is accepted too.
        let Some(x) = num(&v, "iter").or_else(|| num(&v, "step")) else { continue };
        if let Some(y) = num(&v, "loss") {
            m.loss.push(x, y);
        }
        if let Some(y) = num(&v, "lr") {
            m.lr.push(x, y);
        }
        if let Some(y) = num(&v, "grad_norm") {
            m.grad_norm.push(x, y);
        }
        if let Some(y) = num(&v, "train_loss") {
            m.eval_train.push(x, y);
        }
        if let Some(y) = num(&v, "val_loss") {
            m.eval_val.push(x, y);
        }
        if let Some(h) = v.get("health") {
            let layers = h.get("layers").and_then(Value::as_array);
            let layers = layers.with_context(|| format!("{}: \"health\" has no \"layers\" list", at()))?;
            for l in layers {
                let stack = l.get("stack").and_then(Value::as_str).unwrap_or("");
                let layer = l.get("layer").and_then(Value::as_u64);
                let layer = layer.with_context(|| format!("{}: a health layer has no \"layer\" index", at()))?;
                for (k, (key, _)) in HEALTH_KEYS.iter().enumerate() {
                    if let Some(y) = num(l, key) {
                        m.health[k].push(stack, layer as usize, x, y);
                    }
                }
            }
        }
    }
    Ok(m)
}

/// One line of a chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    markers: bool,
}

struct Chart {
    /// File name without extension.
    file: String,
    title: String,
    y_desc: String,
    log_y: bool,
    /// Name the series in a column on the right.
    legend: bool,
    series: Vec<Series>,
}

const SIZE: (u32, u32) = (960, 540);
const FONT: &str = "sans-serif";
/// Pixels of the legend column.
const LEGEND_WIDTH: u32 = 150;

/// Colors of the per-layer lines: from blue (first layer) through green to red (last), so
/// that depth reads at a glance.
fn layer_color(k: usize, n: usize) -> RGBColor {
    let t = if n > 1 { k as f64 / (n - 1) as f64 } else { 0.0 };
    let hsl = HSLColor((1.0 - t) * 0.66, 0.85, 0.45);
    let (r, g, b) = hsl.rgb();
    RGBColor(r, g, b)
}

fn font_candidates() -> Vec<PathBuf> {
    let fixed = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/noto/NotoSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ];
    let mut out: Vec<PathBuf> = fixed.iter().map(PathBuf::from).collect();
    // Any other TrueType font, regular sans faces first.
    let mut found = Vec::new();
    let mut dirs = vec![(PathBuf::from("/usr/share/fonts"), 0), (PathBuf::from("/usr/local/share/fonts"), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 4 {
                dirs.push((p, depth + 1));
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
                found.push(p);
            }
        }
    }
    let rank = |p: &PathBuf| {
        let n = p.file_name().unwrap_or_default().to_string_lossy().to_lowercase();
        let styled = ["bold", "italic", "oblique", "mono", "light", "condensed"].iter().any(|s| n.contains(s));
        (styled, !n.contains("sans"), n)
    };
    found.sort_by_key(rank);
    out.extend(found);
    out
}

/// Registers a font for chart text, once per process. Returns whether text can be drawn.
fn text_available() -> Result<bool> {
    static FONT_STATE: OnceLock<std::result::Result<Option<PathBuf>, String>> = OnceLock::new();
    let state = FONT_STATE.get_or_init(|| {
        let load = |p: &Path| -> bool {
            let Ok(bytes) = std::fs::read(p) else { return false };
            // plotters keeps a &'static reference to the font: it lives as long as the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
        };
        match std::env::var("LMLAB_FONT") {
            Ok(v) if v.is_empty() || v.eq_ignore_ascii_case("none") => Ok(None),
            Ok(v) if load(Path::new(&v)) => Ok(Some(PathBuf::from(v))),
            Ok(v) => Err(format!("LMLAB_FONT={v}: not a readable TrueType/OpenType font")),
            Err(_) => Ok(font_candidates().into_iter().find(|p| load(p))),
        }
    });
    match state {
        Ok(font) => Ok(font.is_some()),
        Err(e) => bail!("{e}"),
    }
}

/// `lo..hi` with a margin, never empty.
fn padded(lo: f64, hi: f64) -> Range<f64> {
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    lo - 0.05 * span..hi + 0.05 * span
}

/// A y tick label: plain decimals for ordinary magnitudes, scientific notation otherwise.
fn tick_label(y: f64) -> String {
    let a = y.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-2..1e5).contains(&a) {
        format!("{y:.1e}")
    } else {
        // Enough decimals for three significant digits, trailing zeros dropped.
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{y:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart failed: {e:?}")
}

/// Draws `c` (whose y values are already log10 when `c.log_y`) with `y_label` formatting the
/// y ticks.
fn draw_on<DB, Y>(
    root: &DrawingArea<DB, Shift>,
    c: &Chart,
    x: Range<f64>,
    y: Y,
    y_label: &dyn Fn(&f64) -> String,
    text: bool,
) -> Result<()>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    root.fill(&WHITE).map_err(draw_err)?;
    // Title on top; the legend, when there is one, in a column of its own on the right, so
    // that it never hides a line.
    let legend = text && c.legend;
    let area =
        if text { root.margin(8, 0, 0, 0).titled(&c.title, (FONT, 24)).map_err(draw_err)? } else { root.clone() };
    let (plot, side) = if legend {
        let (w, _) = area.dim_in_pixel();
        let (l, r) = area.split_horizontally(w.saturating_sub(LEGEND_WIDTH));
        (l, Some(r))
    } else {
        (area, None)
    };
    let mut b = ChartBuilder::on(&plot);
    b.margin(16);
    if text {
        b.x_label_area_size(44).y_label_area_size(80);
    } else {
        b.x_label_area_size(2).y_label_area_size(2);
    }
    let mut chart = b.build_cartesian_2d(x, y).map_err(draw_err)?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc("iteration")
            .y_desc(c.y_desc.as_str())
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(y_label);
    } else {
        // No labels at all: without a font, plotters cannot measure or draw text.
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(draw_err)?;
    for s in &c.series {
        let style = s.color.stroke_width(2);
        let line = LineSeries::new(s.points.iter().copied(), style).point_size(if s.markers { 3 } else { 0 });
        chart.draw_series(line).map_err(draw_err)?;
    }
    if let Some(side) = side {
        for (i, s) in c.series.iter().enumerate() {
            let y = 30 + 24 * i as i32;
            side.draw(&PathElement::new(vec![(4, y), (28, y)], s.color.stroke_width(3))).map_err(draw_err)?;
            let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
            side.draw(&Text::new(s.name.clone(), (36, y), style)).map_err(draw_err)?;
        }
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// Draws `c` onto a backend, with a log or linear y axis.
///
/// A log axis is drawn as log10(y) on a linear axis with ticks at 1, 2 and 5 × 10^k:
/// plotters' own log axis puts no tick below the first power of ten in range.
fn draw_any<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart, text: bool) -> Result<()> {
    let logged;
    let c = if c.log_y {
        let series = c
            .series
            .iter()
            .map(|s| Series {
                name: s.name.clone(),
                points: s.points.iter().map(|&(x, y)| (x, y.log10())).collect(),
                color: s.color,
                markers: s.markers,
            })
            .collect();
        logged = Chart {
            file: c.file.clone(),
            title: c.title.clone(),
            y_desc: c.y_desc.clone(),
            log_y: true,
            legend: c.legend,
            series,
        };
        &logged
    } else {
        c
    };
    let pts = || c.series.iter().flat_map(|s| s.points.iter().copied());
    let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let (y0, y1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, y)| (a.min(y), b.max(y)));
    let x = if x1 > x0 { x0..x1 } else { x0 - 1.0..x1 + 1.0 };
    if c.log_y {
        let y = if y1 - y0 < 0.2 { y0 - 0.3..y1 + 0.3 } else { padded(y0, y1) };
        let axis = LogAxis { major: log_ticks(&y, false), minor: log_ticks(&y, true), range: y };
        draw_on(&root, c, x, axis, &|v| tick_label(10f64.powf(*v)), text)
    } else {
        draw_on(&root, c, x, padded(y0, y1), &|v| tick_label(*v), text)
    }
}

/// A linear axis over log10(y) with its ticks at given places: labelled `major` ticks and
/// light grid lines at `minor` ones.
struct LogAxis {
    range: Range<f64>,
    major: Vec<f64>,
    minor: Vec<f64>,
}

impl Ranged for LogAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (t * (limit.1 - limit.0) as f64).round() as i32
    }
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let points = if hint.weight().allow_light_points() { &self.minor } else { &self.major };
        let max = hint.max_num_points();
        if max == 0 {
            return Vec::new();
        }
        points.iter().step_by(points.len().div_ceil(max).max(1)).copied().collect()
    }
    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// log10 of 1, 2, 5 × 10^k (every digit when that gives fewer than four, or `all`) inside
/// the log10 range `r`.
fn log_ticks(r: &Range<f64>, all: bool) -> Vec<f64> {
    let pick = |digits: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        for k in r.start.floor() as i32..=r.end.ceil() as i32 {
            for d in digits {
                let v = d.log10() + k as f64;
                if r.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    };
    let coarse = pick(&[1.0, 2.0, 5.0]);
    if coarse.len() >= 4 && !all {
        coarse
    } else {
        pick(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// Writes `c` to `path` as PNG or SVG.
fn write_chart(c: &Chart, path: &Path, format: Format, text: bool) -> Result<()> {
    match format {
        Format::Svg => {
            let mut svg = String::new();
            draw_any(SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(), c, text)?;
            std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
        }
        Format::Png => {
            let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
            draw_any(BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(), c, text)?;
            let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
            let mut enc = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Best);
            let mut w = enc.write_header().with_context(|| format!("cannot write {}", path.display()))?;
            w.write_image_data(&rgb).with_context(|| format!("cannot write {}", path.display()))?;
            w.finish().with_context(|| format!("cannot write {}", path.display()))
        }
    }
}

/// Keeps the points a log axis can show (y > 0) and finite ones otherwise.
fn finite(points: &[(f64, f64)], log: bool) -> Vec<(f64, f64)> {
    points.iter().copied().filter(|&(x, y)| x.is_finite() && y.is_finite() && (!log || y > 0.0)).collect()
}

/// The charts a run's metrics make (those with data).
fn charts(m: &RunMetrics) -> Vec<Chart> {
    let one = |file: &str, title: &str, y: &str, log: bool, line: &Line, color: RGBColor| Chart {
        file: file.into(),
        title: title.into(),
        y_desc: y.into(),
        log_y: log,
        legend: false,
        series: vec![Series { name: y.into(), points: finite(&line.points, log), color, markers: false }],
    };
    let mut out = vec![
        Chart {
            file: "loss".into(),
            title: "Loss".into(),
            y_desc: "cross-entropy (nats)".into(),
            log_y: false,
            legend: true,
            series: vec![
                Series {
                    name: "train (step)".into(),
                    points: finite(&m.loss.points, false),
                    color: RGBColor(150, 170, 220),
                    markers: false,
                },
                Series {
                    name: "train (eval)".into(),
                    points: finite(&m.eval_train.points, false),
                    color: RGBColor(20, 60, 200),
                    markers: true,
                },
                Series {
                    name: "val (eval)".into(),
                    points: finite(&m.eval_val.points, false),
                    color: RGBColor(220, 60, 20),
                    markers: true,
                },
            ],
        },
        one("lr", "Learning rate", "learning rate", false, &m.lr, RGBColor(20, 120, 60)),
        one(
            "grad_norm",
            "Global gradient norm (before clipping)",
            "gradient norm",
            true,
            &m.grad_norm,
            RGBColor(120, 40, 160),
        ),
    ];
    let single_stack =
        m.health.iter().flat_map(|h| h.keys.iter()).all(|(s, _)| m.health[0].keys.first().is_none_or(|(f, _)| f == s));
    for (k, (key, title)) in HEALTH_KEYS.iter().enumerate() {
        let h = &m.health[k];
        let log = matches!(*key, "grad_norm" | "update_ratio");
        let n = h.keys.len();
        let series = h
            .keys
            .iter()
            .zip(&h.lines)
            .enumerate()
            .map(|(i, ((stack, layer), line))| Series {
                name: if single_stack { format!("layer {layer}") } else { format!("{stack} {layer}") },
                points: finite(&line.points, log),
                color: layer_color(i, n),
                markers: false,
            })
            .collect();
        out.push(Chart {
            file: format!("health_{key}"),
            title: title.to_string(),
            y_desc: key.replace('_', " "),
            log_y: log,
            legend: true,
            series,
        });
    }
    for c in &mut out {
        c.series.retain(|s| !s.points.is_empty());
    }
    out.retain(|c| !c.series.is_empty());
    out
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
        y_desc: "learning rate".into(),
        log_y: false,
        legend: false,
        series: vec![Series { name: "learning rate".into(), points, color: RGBColor(20, 120, 60), markers: false }],
    };
    let text = text_available()?;
    write_chart(&chart, path, format, text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_replace_repeated_steps() {
        let mut l = Line::default();
        for (x, y) in [(10.0, 1.0), (20.0, 2.0), (30.0, 3.0), (20.0, 9.0), (30.0, 8.0)] {
            l.push(x, y);
        }
        assert_eq!(l.points, vec![(10.0, 1.0), (20.0, 9.0), (30.0, 8.0)]);
        // A new run from 0 replaces everything.
        l.push(0.0, 5.0);
        assert_eq!(l.points, vec![(0.0, 5.0)]);
    }

    #[test]
    fn reads_every_line_kind_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let lines = [
            r#"{"iter":0,"train_loss":4.2,"val_loss":4.3}"#,
            r#"{"iter":10,"loss":3.0,"lr":0.001,"grad_norm":1.5,"ms_per_iter":3.0,"tokens_per_s":9.0}"#,
            r#"{"skipped":true}"#,
            r#"{"iter":10,"health":{"layers":[{"stack":"transformer","layer":0,"grad_norm":0.5,"update_ratio":null,"act_mean":0.0,"act_std":1.0,"dead_share":0.0,"attn_entropy":2.0,"new_key":1}],"tensors":[]}}"#,
            r#"{"iter":20,"loss":null,"lr":0.002,"extra":"x"}"#,
        ];
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let m = read_metrics(&p).unwrap();
        assert_eq!(m.loss.points, vec![(10.0, 3.0)], "a null loss (NaN) is left out");
        assert_eq!(m.lr.points, vec![(10.0, 0.001), (20.0, 0.002)]);
        assert_eq!(m.eval_val.points, vec![(0.0, 4.3)]);
        assert_eq!(m.health[0].keys, vec![("transformer".to_string(), 0)]);
        assert_eq!(m.health[0].lines[0].points, vec![(10.0, 0.5)]);
        assert!(m.health[1].lines.is_empty(), "update_ratio was null");
        assert_eq!(m.health[5].lines[0].points, vec![(10.0, 2.0)]);

        std::fs::write(&p, format!("{}\n{{\"iter\": 3, \"loss\"\n", lines[0])).unwrap();
        let e = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(e.contains("metrics.jsonl:2") && e.contains("not valid JSON"), "{e}");
        std::fs::write(&p, format!("{}\n\n{}\n", lines[0], lines[1])).unwrap();
        let e = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(e.contains("metrics.jsonl:2: empty line"), "{e}");
        std::fs::write(&p, "[1, 2]\n").unwrap();
        let e = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(e.contains("metrics.jsonl:1: not a JSON object"), "{e}");
        std::fs::write(&p, "").unwrap();
        let e = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(e.contains("is empty"), "{e}");
    }
}
