//! The charts a run's metrics make: loss, learning rate, gradient norm, and one chart per
//! health statistic with a line per layer; series without finite points are left out.

use super::draw::{Chart, Series};
use super::metrics::{Line, RunMetrics, HEALTH_KEYS};
use plotters::style::{Color, HSLColor, RGBColor};

/// Colors of the per-layer lines: from blue (first layer) through green to red (last), so
/// that depth reads at a glance.
fn layer_color(k: usize, n: usize) -> RGBColor {
    let t = if n > 1 { k as f64 / (n - 1) as f64 } else { 0.0 };
    let hsl = HSLColor((1.0 - t) * 0.66, 0.85, 0.45);
    let (r, g, b) = hsl.rgb();
    RGBColor(r, g, b)
}

/// Keeps the points a log axis can show (y > 0) and finite ones otherwise.
fn finite(points: &[(f64, f64)], log: bool) -> Vec<(f64, f64)> {
    points.iter().copied().filter(|&(x, y)| x.is_finite() && y.is_finite() && (!log || y > 0.0)).collect()
}

/// The charts a run's metrics make (those with data).
pub(super) fn charts(m: &RunMetrics) -> Vec<Chart> {
    let one = |file: &str, title: &str, y: &str, log: bool, line: &Line, color: RGBColor| Chart {
        file: file.into(),
        title: title.into(),
        x_desc: "iteration".into(),
        y_desc: y.into(),
        log_y: log,
        log_x: false,
        legend: false,
        scatter: false,
        series: vec![Series { name: y.into(), points: finite(&line.points, log), color, markers: false }],
    };
    let mut out = vec![
        Chart {
            file: "loss".into(),
            title: "Loss".into(),
            x_desc: "iteration".into(),
            y_desc: "cross-entropy (nats)".into(),
            log_y: false,
            log_x: false,
            legend: true,
            scatter: false,
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
            x_desc: "iteration".into(),
            y_desc: key.replace('_', " "),
            log_y: log,
            log_x: false,
            legend: true,
            scatter: false,
            series,
        });
    }
    for c in &mut out {
        c.series.retain(|s| !s.points.is_empty());
    }
    out.retain(|c| !c.series.is_empty());
    out
}
