//! Rendering a chart with plotters: the axes (a log axis with 1-2-5 ticks), the lines, the
//! title and legend, and the PNG or SVG file.

use super::font::FONT;
use super::Format;
use anyhow::{Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
use std::path::Path;

/// One line of a chart.
pub(super) struct Series {
    pub(super) name: String,
    pub(super) points: Vec<(f64, f64)>,
    pub(super) color: RGBColor,
    pub(super) markers: bool,
}

pub(super) struct Chart {
    /// File name without extension.
    pub(super) file: String,
    pub(super) title: String,
    pub(super) x_desc: String,
    pub(super) y_desc: String,
    pub(super) log_y: bool,
    /// Draw x on a log axis (e.g. parameters from 10^4 to 10^7).
    pub(super) log_x: bool,
    /// Name the series in a column on the right.
    pub(super) legend: bool,
    /// Points only (a scatter plot), no lines.
    pub(super) scatter: bool,
    pub(super) series: Vec<Series>,
}

const SIZE: (u32, u32) = (960, 540);
/// Pixels of the legend column: at least this, wider for long names (up to `LEGEND_MAX`).
const LEGEND_WIDTH: u32 = 150;
const LEGEND_MAX: u32 = 420;

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

/// A log axis's tick label: k, M, G for thousands and up (10k, 200k, 1M), else [`tick_label`].
fn si_label(v: f64) -> String {
    match v.abs() {
        a if a >= 1e9 => format!("{}G", tick_label(v / 1e9)),
        a if a >= 1e6 => format!("{}M", tick_label(v / 1e6)),
        a if a >= 1e4 => format!("{}k", tick_label(v / 1e3)),
        _ => tick_label(v),
    }
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart failed: {e:?}")
}

/// Draws `c` (whose values are already log10 on a log axis) with `x_label` and `y_label`
/// formatting the ticks.
fn draw_on<DB, X, Y>(
    root: &DrawingArea<DB, Shift>,
    c: &Chart,
    x: X,
    y: Y,
    x_label: &dyn Fn(&f64) -> String,
    y_label: &dyn Fn(&f64) -> String,
    text: bool,
) -> Result<()>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
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
        // About 8 pixels a character at the legend's 15-pixel font, after the 36-pixel swatch.
        let longest = c.series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0) as u32;
        let width = (44 + 8 * longest).clamp(LEGEND_WIDTH, LEGEND_MAX);
        let (l, r) = area.split_horizontally(w.saturating_sub(width));
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
        mesh.x_desc(c.x_desc.as_str())
            .y_desc(c.y_desc.as_str())
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .x_label_formatter(x_label)
            .y_label_formatter(y_label);
    } else {
        // No labels at all: without a font, plotters cannot measure or draw text.
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(draw_err)?;
    for s in &c.series {
        if c.scatter {
            let dots = s.points.iter().map(|&p| Circle::new(p, 3, s.color.filled()));
            chart.draw_series(dots).map_err(draw_err)?;
            continue;
        }
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

/// Draws `c` onto a backend, each axis log or linear.
///
/// A log axis is drawn as log10(v) on a linear axis with ticks at 1, 2 and 5 × 10^k:
/// plotters' own log axis puts no tick below the first power of ten in range.
fn draw_any<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart, text: bool) -> Result<()> {
    let logged;
    let c = if c.log_x || c.log_y {
        let f = |v: f64, log: bool| if log { v.log10() } else { v };
        let series = c
            .series
            .iter()
            .map(|s| Series {
                name: s.name.clone(),
                points: s.points.iter().map(|&(x, y)| (f(x, c.log_x), f(y, c.log_y))).collect(),
                color: s.color,
                markers: s.markers,
            })
            .collect();
        logged = Chart {
            file: c.file.clone(),
            title: c.title.clone(),
            x_desc: c.x_desc.clone(),
            y_desc: c.y_desc.clone(),
            log_y: c.log_y,
            log_x: c.log_x,
            legend: c.legend,
            scatter: c.scatter,
            series,
        };
        &logged
    } else {
        c
    };
    let pts = || c.series.iter().flat_map(|s| s.points.iter().copied());
    let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let (y0, y1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, y)| (a.min(y), b.max(y)));
    let log_axis = |lo: f64, hi: f64| {
        let r = if hi - lo < 0.02 { lo - 0.01..hi + 0.01 } else { padded(lo, hi) };
        LogAxis { major: log_ticks(&r, false), minor: log_ticks(&r, true), range: r }
    };
    let log_label = |v: &f64| si_label(10f64.powf(*v));
    let x_linear = if x1 > x0 { x0..x1 } else { x0 - 1.0..x1 + 1.0 };
    let x_label: &dyn Fn(&f64) -> String = if c.scatter { &|x| tick_label(*x) } else { &|x| format!("{x:.0}") };
    match (c.log_x, c.log_y) {
        (false, false) => draw_on(&root, c, x_linear, padded(y0, y1), x_label, &|v| tick_label(*v), text),
        (false, true) => draw_on(&root, c, x_linear, log_axis(y0, y1), x_label, &log_label, text),
        (true, false) => draw_on(&root, c, log_axis(x0, x1), padded(y0, y1), &log_label, &|v| tick_label(*v), text),
        (true, true) => draw_on(&root, c, log_axis(x0, x1), log_axis(y0, y1), &log_label, &log_label, text),
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

/// Tick places (log10) inside the log10 range `r`: m × 10^k for the first set of mantissas m
/// that gives enough ticks — powers of ten over three decades or more; then 1, 2, 5; then 1, 2, 3, 5; then every digit; then every tenth
/// (1.0, 1.1, … for a range narrower than a decade). `all`: the light grid lines, one level
/// finer than the labelled ticks.
fn log_ticks(r: &Range<f64>, all: bool) -> Vec<f64> {
    let pick = |mantissas: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        for k in r.start.floor() as i32..=r.end.ceil() as i32 {
            for m in mantissas {
                let v = m.log10() + k as f64;
                if r.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    };
    let tenths: Vec<f64> = (10..100).map(|i| i as f64 / 10.0).collect();
    let levels: [&[f64]; 5] =
        [&[1.0], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], &tenths];
    let need = [3, 4, 3, 3, 0];
    let level = (0..levels.len()).find(|&i| pick(levels[i]).len() >= need[i]).unwrap_or(levels.len() - 1);
    pick(levels[if all { (level + 1).min(levels.len() - 1) } else { level }])
}

/// Writes `c` to `path` as PNG or SVG.
pub(super) fn write_chart(c: &Chart, path: &Path, format: Format, text: bool) -> Result<()> {
    match format {
        Format::Svg => {
            let mut svg = String::new();
            draw_any(SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(), c, text)?;
            std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
        }
        Format::Png => {
            let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
            draw_any(BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(), c, text)?;
            write_png(path, SIZE, &rgb)
        }
    }
}

/// Writes an RGB image (`size` pixels, 3 bytes each, row-major) as a PNG file.
pub(super) fn write_png(path: &Path, size: (u32, u32), rgb: &[u8]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), size.0, size.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    let mut w = enc.write_header().with_context(|| format!("cannot write {}", path.display()))?;
    w.write_image_data(rgb).with_context(|| format!("cannot write {}", path.display()))?;
    w.finish().with_context(|| format!("cannot write {}", path.display()))
}
