//! Heat maps: a grid of panels (e.g. layer × head attention maps), each a matrix of coloured
//! cells with its row and column labels (tokens), laid out by hand in pixels so that every
//! label sits at its cell's centre.

use super::draw::write_png;
use super::font::{text_available, FONT};
use super::Format;
use anyhow::{ensure, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// One panel: `values` (rows, cols), row-major.
#[derive(Clone, Debug)]
pub struct Heatmap {
    pub title: String,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    pub values: Vec<f64>,
}

/// The colour scale of a grid: values from `lo` (dark) to `hi` (bright); `diverging` maps
/// negative values to blue and positive ones to red around a white 0, with ±max(|lo|, |hi|).
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub lo: f64,
    pub hi: f64,
    pub diverging: bool,
}

impl Scale {
    /// The smallest and largest finite value of the panels.
    pub fn of(maps: &[Heatmap], diverging: bool) -> Scale {
        let vals = maps.iter().flat_map(|m| m.values.iter().copied()).filter(|v| v.is_finite());
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            return Scale { lo: 0.0, hi: 1.0, diverging };
        }
        Scale { lo, hi, diverging }
    }

    fn color(&self, v: f64) -> RGBColor {
        if !v.is_finite() {
            return RGBColor(200, 200, 200);
        }
        if self.diverging {
            let m = self.lo.abs().max(self.hi.abs()).max(1e-30);
            let t = (v / m).clamp(-1.0, 1.0);
            let mix = |a: u8, b: u8, t: f64| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
            return if t >= 0.0 {
                RGBColor(mix(255, 178, t), mix(255, 24, t), mix(255, 43, t))
            } else {
                RGBColor(mix(255, 33, -t), mix(255, 102, -t), mix(255, 172, -t))
            };
        }
        let span = self.hi - self.lo;
        let t = if span > 0.0 { ((v - self.lo) / span).clamp(0.0, 1.0) } else { 0.5 };
        viridis(t)
    }
}

/// An approximation of matplotlib's viridis through five of its colours.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] =
        [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let lerp = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the heat map failed: {e:?}")
}

/// Pixels per panel side (the cells share it) and of the label margins.
const PANEL: u32 = 260;
/// A single panel gets this many pixels per cell (within 120..=960 per side).
const SINGLE_CELL: u32 = 24;
const LABEL: u32 = 70;
const TITLE: u32 = 22;
/// Labels are drawn up to this many rows or columns; beyond, a panel has none.
const MAX_LABELS: usize = 48;

/// Draws `maps` as a grid of `cols` panels per row into `path` (.png or .svg) under `title`.
/// Returns whether it has text (see the module doc of `plot`).
pub fn plot_heatmaps(maps: &[Heatmap], cols: usize, title: &str, scale: Scale, path: &Path) -> Result<bool> {
    ensure!(!maps.is_empty() && cols > 0, "no heat map to draw");
    for m in maps {
        ensure!(
            m.values.len() == m.row_labels.len() * m.col_labels.len(),
            "heat map {:?}: {} values for {} × {} labels",
            m.title,
            m.values.len(),
            m.row_labels.len(),
            m.col_labels.len()
        );
    }
    let text = text_available()?;
    let rows = maps.len().div_ceil(cols);
    let labels = text && maps.iter().all(|m| m.row_labels.len().max(m.col_labels.len()) <= MAX_LABELS);
    let margin = if labels { LABEL } else { 4 };
    // A grid of panels: squares of PANEL pixels; one panel: sized by its cells.
    let panel = match maps {
        [m] => (
            (SINGLE_CELL * m.col_labels.len() as u32).clamp(400, 960),
            (SINGLE_CELL * m.row_labels.len() as u32).clamp(120, 960),
        ),
        _ => (PANEL, PANEL),
    };
    let cell = (panel.0 + margin, panel.1 + margin + if text { TITLE } else { 4 });
    let size = (cols as u32 * cell.0 + 8, rows as u32 * cell.1 + if text { 40 } else { 8 });
    let grid = Grid { maps, rows, cols, title, scale, text, margin, panel };
    match Format::of_path(path)? {
        Format::Png => {
            let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
            grid.draw(BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area())?;
            write_png(path, size, &rgb)?;
        }
        Format::Svg => {
            let mut svg = String::new();
            grid.draw(SVGBackend::with_string(&mut svg, size).into_drawing_area())?;
            std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(text)
}

/// The panels and their layout.
struct Grid<'a> {
    maps: &'a [Heatmap],
    rows: usize,
    cols: usize,
    title: &'a str,
    scale: Scale,
    text: bool,
    margin: u32,
    /// Pixels of each panel's cell area (width, height).
    panel: (u32, u32),
}

impl Grid<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(draw_err)?;
        let area = if self.text { root.titled(self.title, (FONT, 22)).map_err(draw_err)? } else { root.clone() };
        for (panel, m) in area.split_evenly((self.rows, self.cols)).iter().zip(self.maps) {
            draw_panel(panel, m, self.scale, self.text, self.margin, self.panel)?;
        }
        root.present().map_err(draw_err)
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    m: &Heatmap,
    scale: Scale,
    text: bool,
    margin: u32,
    (pw, ph): (u32, u32),
) -> Result<()> {
    let (nr, nc) = (m.row_labels.len().max(1), m.col_labels.len().max(1));
    let top = if text { TITLE as i32 } else { 4 };
    let (x0, y0) = (margin as i32, top);
    let (cw, ch) = (pw as f64 / nc as f64, ph as f64 / nr as f64);
    if text {
        let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(m.title.clone(), (x0 + pw as i32 / 2, 2), style)).map_err(draw_err)?;
    }
    for r in 0..m.row_labels.len() {
        for c in 0..m.col_labels.len() {
            let (px, py) = (x0 + (c as f64 * cw) as i32, y0 + (r as f64 * ch) as i32);
            let (qx, qy) = (x0 + ((c + 1) as f64 * cw) as i32, y0 + ((r + 1) as f64 * ch) as i32);
            let v = m.values[r * m.col_labels.len() + c];
            let color = scale.color(v);
            area.draw(&Rectangle::new([(px, py), (qx, qy)], color.filled())).map_err(draw_err)?;
            // Small grids with room: the value itself, dark or light against its cell.
            if text && nr * nc <= 144 && cw >= 40.0 && ch >= 16.0 && v.is_finite() {
                let light = 0.299 * color.0 as f64 + 0.587 * color.1 as f64 + 0.114 * color.2 as f64 > 140.0;
                let ink = if light { BLACK } else { WHITE };
                let label = if scale.diverging { format!("{v:+.3}") } else { format!("{v:.2}") };
                let style =
                    TextStyle::from((FONT, 11).into_font()).color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                area.draw(&Text::new(label, ((px + qx) / 2, (py + qy) / 2), style)).map_err(draw_err)?;
            }
        }
    }
    if margin > 4 {
        let size = ((ch.min(cw) * 0.8) as i32).clamp(6, 12);
        let left = TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (r, l) in m.row_labels.iter().enumerate() {
            let y = y0 + ((r as f64 + 0.5) * ch) as i32;
            area.draw(&Text::new(short(l), (x0 - 3, y), left.clone())).map_err(draw_err)?;
        }
        let below = TextStyle::from((FONT, size).into_font().transform(FontTransform::Rotate90))
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (c, l) in m.col_labels.iter().enumerate() {
            let x = x0 + ((c as f64 + 0.5) * cw) as i32;
            area.draw(&Text::new(short(l), (x, y0 + ph as i32 + 3), below.clone())).map_err(draw_err)?;
        }
    }
    Ok(())
}

/// A label as drawn: leading and trailing whitespace made visible (a token " t" shows as "·t",
/// a newline as "⏎"; "block 0" stays as it is), at most 10 characters.
fn short(l: &str) -> String {
    let (start, end) = (l.len() - l.trim_start().len(), l.trim_end().len().max(l.len() - l.trim_start().len()));
    let visible = |c: char| match c {
        '\n' => '⏎',
        c if c.is_whitespace() => '·',
        c => c,
    };
    let v: String = l.char_indices().map(|(i, c)| if i < start || i >= end { visible(c) } else { c }).collect();
    if v.chars().count() > 10 {
        v.chars().take(9).chain(['…']).collect()
    } else {
        v
    }
}
