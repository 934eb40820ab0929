//! An experiment of arms × seeds: every arm trained from the same base config with its
//! overrides, once per seed, through `train::train`; the curves and final figures read back
//! from each run's metrics.jsonl and checkpoint; a table, charts and findings from them.
//! [`pareto`] re-reads the runs of the other results instead of training.

use super::{base_config, findings, new_result, Budget, ChartFiles, ExplainResult, Question, Spec, Table};
use crate::config::RunConfig;
use crate::eval::stability::summarize as stats;
use crate::inspect::plot::{plot_heatmaps, plot_xy, read_metrics, Heatmap, Scale, XyChart, XySeries, HEALTH_KEYS};
use crate::train::{train, TrainOptions};
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One arm trained with one seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ArmRun {
    pub arm: String,
    pub seed: u64,
    /// The last evaluation's losses.
    pub val_loss: f64,
    pub train_loss: f64,
    /// (iteration, val loss) of every evaluation.
    pub val_curve: Vec<(f64, f64)>,
    pub seconds: f64,
    pub ms_per_iter: f64,
    pub params: usize,
    /// Forward FLOPs per token at the run's context (Transformers; None for the baselines).
    pub flops_per_token: Option<f64>,
    /// The last health line's per-layer figures (with the `health` probe).
    pub grad_norm: Vec<f64>,
    pub attn_entropy: Vec<f64>,
    pub dead_share: Vec<f64>,
    /// The `permutation` probe: the last position's loss on validation windows as they are, and
    /// with the tokens before the last one shuffled (see [`permutation_losses`]).
    pub last_loss_ordered: Option<f64>,
    pub last_loss_shuffled: Option<f64>,
}

/// An arm's figures over its seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ArmSummary {
    pub arm: String,
    pub x: Option<f64>,
    pub val_mean: f64,
    /// Sample standard deviation over the seeds (0 for one seed).
    pub val_sd: f64,
    pub val_min: f64,
    pub val_max: f64,
    pub train_mean: f64,
    pub seconds_mean: f64,
    pub params: usize,
    pub flops_per_token: Option<f64>,
    /// Mean over layers of the health figures (NaN without the probe).
    pub grad_norm_first_last: Option<(f64, f64)>,
    pub attn_entropy: Option<f64>,
    pub dead_share: Option<f64>,
    /// Mean over seeds of the permutation probe's (ordered, shuffled) last-position losses.
    pub permutation: Option<(f64, f64)>,
}

pub(super) fn run(
    q: &Question,
    spec: &Spec,
    budget: Budget,
    dir: &Path,
    progress: bool,
    threads: usize,
) -> Result<ExplainResult> {
    let b = match budget {
        Budget::Quick => &spec.quick,
        Budget::Full => &spec.full,
    };
    ensure!(!spec.arms.is_empty(), "experiments/{}.toml has no arms", q.id);
    let seeds = if b.seeds.is_empty() { vec![1] } else { b.seeds.clone() };
    let mut result = new_result(q, spec, budget, seeds.clone());
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new((spec.arms.len() * seeds.len()) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} runs {msg} [{elapsed_precise}]")
                .expect("a valid template"),
        );
        bar.set_message(q.id);
        bar
    });
    let mut runs = Vec::new();
    for arm in &spec.arms {
        let base = arm.base.as_deref().or(spec.base.as_deref());
        let base = base_config(base.context("a sweep experiment needs `base` (or each arm its own)")?)?;
        for &seed in &seeds {
            let run_dir = dir.join("runs").join(format!("{}-seed{seed}", slug(&arm.name)));
            let mut set = b.set.clone();
            set.extend(arm.set.iter().cloned());
            if budget == Budget::Quick {
                set.extend(arm.quick_set.iter().cloned());
            }
            set.push(format!("train.seed={seed}"));
            set.push(format!("train.out_dir={:?}", run_dir.display().to_string()));
            set.push(format!("train.threads={threads}"));
            let cfg = RunConfig::from_toml_str(base, &set)
                .with_context(|| format!("experiments/{}.toml, arm {:?}", q.id, arm.name))?;
            if seed == seeds[0] {
                result.configs.push((arm.name.clone(), cfg.to_toml()));
            }
            let summary = train(cfg.clone(), None, &TrainOptions { quiet: true, json: false })
                .with_context(|| format!("training arm {:?} (seed {seed})", arm.name))?;
            let mut run = read_run(&arm.name, seed, &summary, &run_dir)?;
            if spec.probes.iter().any(|p| p == "permutation") {
                let (ordered, shuffled) = permutation_losses(&summary.checkpoint, &cfg, seed)?;
                (run.last_loss_ordered, run.last_loss_shuffled) = (Some(ordered), Some(shuffled));
            }
            runs.push(run);
            drop_weights(&run_dir);
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut arms: Vec<ArmSummary> = spec
        .arms
        .iter()
        .map(|a| summarize(&a.name, a.x, &runs.iter().filter(|r| r.arm == a.name).collect::<Vec<_>>()))
        .collect();
    match spec.x_from.as_deref() {
        None => {}
        Some("params") => arms.iter_mut().for_each(|a| a.x = Some(a.params as f64)),
        Some(other) => anyhow::bail!("experiments/{}.toml: x_from = {other:?} (only \"params\")", q.id),
    }
    result.table = table(&arms, spec);
    result.charts = charts(spec, &arms, &runs, dir)?;
    result.findings = findings::sweep(spec, &arms, &runs);
    result.data = serde_json::json!({ "arms": arms, "runs": runs });
    Ok(result)
}

/// Deletes a finished run's checkpoints: the numbers are kept, the weights are not needed again.
pub(super) fn drop_weights(run_dir: &Path) {
    for ck in ["ckpt", "ckpt_best"] {
        let _ = std::fs::remove_dir_all(run_dir.join(ck));
    }
}

/// A file-name-safe form of an arm's name.
fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// The figures of a finished run: its summary, metrics.jsonl and checkpoint.
fn read_run(arm: &str, seed: u64, s: &crate::train::TrainSummary, run_dir: &Path) -> Result<ArmRun> {
    let m = read_metrics(&run_dir.join("metrics.jsonl"))?;
    let last_layer_values = |key: &str| -> Vec<f64> {
        let k = HEALTH_KEYS.iter().position(|(name, _)| *name == key).expect("a health key");
        m.health
            .get(k)
            .map_or(Vec::new(), |l| l.lines.iter().filter_map(|line| line.points.last().map(|p| p.1)).collect())
    };
    use crate::io::checkpoint;
    use crate::model::{baseline::BaselineLm, transformer::Arch, LanguageModel};
    let (params, flops) = match checkpoint::stored_arch(&s.checkpoint)? {
        Arch::Lstm | Arch::Gru | Arch::Cnn => {
            (checkpoint::load_lm::<BaselineLm>(&s.checkpoint, 1, false, true)?.model.num_params(), None)
        }
        _ => {
            let m = checkpoint::load_inference(&s.checkpoint, 1)?.model;
            let cfg = &m.config;
            (m.num_params(), Some(crate::inspect::account::flops::flops_per_token(cfg, cfg.block_size)))
        }
    };
    Ok(ArmRun {
        arm: arm.to_string(),
        seed,
        val_loss: s.val_loss as f64,
        train_loss: s.train_loss as f64,
        val_curve: m.eval_val.points.clone(),
        seconds: s.seconds,
        ms_per_iter: s.ms_per_iter,
        params,
        flops_per_token: flops,
        grad_norm: last_layer_values("grad_norm"),
        attn_entropy: last_layer_values("attn_entropy"),
        dead_share: last_layer_values("dead_share"),
        last_loss_ordered: None,
        last_loss_shuffled: None,
    })
}

/// Windows of the permutation probe, and their length cap.
const PROBE_WINDOWS: usize = 64;

/// The permutation test of position: on validation windows of `block_size` tokens, the
/// cross-entropy of the next token after the last position, (a) as the text is and (b) with the
/// tokens before the last one shuffled (the last token and the target stay). A model without
/// positions sees only the multiset of earlier tokens, so (b) equals (a) up to summation order;
/// a model that uses order loses from the shuffle. Returns the mean losses (a), (b).
fn permutation_losses(ckpt: &Path, cfg: &RunConfig, seed: u64) -> Result<(f64, f64)> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut ck = crate::io::checkpoint::load(ckpt, PROBE_WINDOWS, false)?;
    let text = crate::util::read_corpus(Path::new(&cfg.data.path))?;
    let tokens = ck.tokenizer.encode(&text)?;
    let val = crate::data::TokenDataset::split(tokens, cfg.data.val_fraction)?.val;
    let t = ck.model.config.block_size;
    let windows = PROBE_WINDOWS.min(val.len().saturating_sub(1) / t);
    ensure!(windows > 0, "the validation split is shorter than one window of {} tokens", t + 1);
    let v = ck.model.config.vocab_size;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut input: Vec<u32> = (0..windows).flat_map(|w| val[w * t..(w + 1) * t].to_vec()).collect();
    let targets: Vec<usize> = (0..windows).map(|w| val[(w + 1) * t] as usize).collect();
    let mut last_loss = |input: &[u32]| -> Result<f64> {
        ck.model.forward_lm(input, None, windows, t, false, 0)?;
        let logits = ck.model.logits();
        let loss = (0..windows)
            .map(|w| {
                let row = &logits[(w * t + t - 1) * v..(w * t + t) * v];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                lse - row[targets[w]] as f64
            })
            .sum::<f64>();
        Ok(loss / windows as f64)
    };
    let ordered = last_loss(&input)?;
    for w in input.chunks_mut(t) {
        w[..t - 1].shuffle(&mut rng);
    }
    Ok((ordered, last_loss(&input)?))
}

/// The mean of `xs` (a non-empty list here).
fn mean(xs: &[f64]) -> f64 {
    stats(xs).mean
}

/// An arm's figures over its seeds (`runs`: at least one).
fn summarize(arm: &str, x: Option<f64>, runs: &[&ArmRun]) -> ArmSummary {
    let val = stats(&runs.iter().map(|r| r.val_loss).collect::<Vec<_>>());
    let per_layer_mean = |f: fn(&ArmRun) -> &Vec<f64>| {
        let v: Vec<f64> = runs.iter().filter(|r| !f(r).is_empty()).map(|r| mean(f(r))).collect();
        (!v.is_empty()).then(|| mean(&v))
    };
    ArmSummary {
        arm: arm.to_string(),
        x,
        val_mean: val.mean,
        val_sd: val.std,
        val_min: val.min,
        val_max: val.max,
        train_mean: mean(&runs.iter().map(|r| r.train_loss).collect::<Vec<_>>()),
        seconds_mean: mean(&runs.iter().map(|r| r.seconds).collect::<Vec<_>>()),
        params: runs.first().map_or(0, |r| r.params),
        flops_per_token: runs.first().and_then(|r| r.flops_per_token),
        grad_norm_first_last: runs
            .first()
            .filter(|r| !r.grad_norm.is_empty())
            .map(|r| (r.grad_norm[0], *r.grad_norm.last().unwrap())),
        attn_entropy: per_layer_mean(|r| &r.attn_entropy),
        dead_share: per_layer_mean(|r| &r.dead_share),
        permutation: {
            let p: Vec<(f64, f64)> =
                runs.iter().filter_map(|r| r.last_loss_ordered.zip(r.last_loss_shuffled)).collect();
            (!p.is_empty()).then(|| {
                (mean(&p.iter().map(|x| x.0).collect::<Vec<_>>()), mean(&p.iter().map(|x| x.1).collect::<Vec<_>>()))
            })
        },
    }
}

fn table(arms: &[ArmSummary], spec: &Spec) -> Table {
    let health = spec.probes.iter().any(|p| p == "health");
    let mut columns: Vec<String> =
        ["arm", "val loss", "± sd (seeds)", "train loss", "parameters", "forward FLOPs/token", "s per run"]
            .map(String::from)
            .to_vec();
    if health {
        columns.extend(["grad norm layer 0 → last", "attention entropy (nats)", "dead FFN units"].map(String::from));
    }
    let permutation = spec.probes.iter().any(|p| p == "permutation");
    if permutation {
        columns.extend(["last-token loss", "… context shuffled"].map(String::from));
    }
    let rows = arms
        .iter()
        .map(|a| {
            let mut row = vec![
                a.arm.clone(),
                format!("{:.4}", a.val_mean),
                format!("{:.4}", a.val_sd),
                format!("{:.4}", a.train_mean),
                a.params.to_string(),
                a.flops_per_token.map_or("–".into(), |f| format!("{:.3e}", f)),
                format!("{:.1}", a.seconds_mean),
            ];
            if health {
                row.push(a.grad_norm_first_last.map_or("–".into(), |(f, l)| format!("{f:.3e} → {l:.3e}")));
                row.push(a.attn_entropy.map_or("–".into(), |e| format!("{e:.3}")));
                row.push(a.dead_share.map_or("–".into(), |d| format!("{:.1}%", 100.0 * d)));
            }
            if permutation {
                row.push(a.permutation.map_or("–".into(), |p| format!("{:.4}", p.0)));
                row.push(a.permutation.map_or("–".into(), |p| format!("{:.4}", p.1)));
            }
            row
        })
        .collect();
    Table { columns, rows }
}

/// Writes a chart as NAME.png and NAME.svg in `dir` with `draw(path)`.
pub(super) fn write_chart_pair(
    title: &str,
    name: &str,
    dir: &Path,
    draw: impl Fn(&Path) -> Result<()>,
) -> Result<ChartFiles> {
    let (png, svg) = (format!("{name}.png"), format!("{name}.svg"));
    draw(&dir.join(&png))?;
    draw(&dir.join(&svg))?;
    Ok(ChartFiles { title: title.to_string(), png, svg })
}

/// Draws heat maps (`cols` panels a row) as NAME.png and NAME.svg in `dir`, titled `drawn` on the
/// image (short enough to fit above the panels) and `caption` in the report.
pub(super) fn write_heatmaps(
    maps: &[Heatmap],
    cols: usize,
    caption: &str,
    drawn: &str,
    scale: Scale,
    name: &str,
    dir: &Path,
) -> Result<ChartFiles> {
    write_chart_pair(caption, name, dir, |path| plot_heatmaps(maps, cols, drawn, scale, path).map(|_| ()))
}

/// Draws `chart` as NAME.png and NAME.svg in `dir`.
fn draw(chart: &XyChart, name: &str, dir: &Path) -> Result<ChartFiles> {
    write_chart_pair(&chart.title, name, dir, |path| plot_xy(chart, path).map(|_| ()))
}

fn charts(spec: &Spec, arms: &[ArmSummary], runs: &[ArmRun], dir: &Path) -> Result<Vec<ChartFiles>> {
    let mut out = Vec::new();
    // Validation loss during training: each arm's first seed.
    let curves = arms
        .iter()
        .filter_map(|a| runs.iter().find(|r| r.arm == a.arm))
        .map(|r| XySeries { name: r.arm.clone(), points: r.val_curve.clone() })
        .collect();
    let c = XyChart {
        title: "validation loss during training".into(),
        x: "step".into(),
        y: "val loss".into(),
        series: curves,
        scatter: false,
    };
    out.push(draw(&c, "val_loss_curves", dir)?);
    // Final validation loss: against the arms' x when they have one, else one point per arm.
    let c = match &spec.x_label {
        Some(x) => XyChart {
            title: format!("final validation loss against {x}"),
            x: x.clone(),
            y: "val loss (mean over seeds)".into(),
            series: vec![XySeries {
                name: "val loss".into(),
                points: arms.iter().filter_map(|a| a.x.map(|x| (x, a.val_mean))).collect(),
            }],
            scatter: false,
        },
        None => XyChart {
            title: "final validation loss per arm".into(),
            x: "arm".into(),
            y: "val loss (mean over seeds)".into(),
            series: arms
                .iter()
                .enumerate()
                .map(|(i, a)| XySeries { name: a.arm.clone(), points: vec![(i as f64 + 1.0, a.val_mean)] })
                .collect(),
            scatter: true,
        },
    };
    out.push(draw(&c, "val_loss_final", dir)?);
    if spec.probes.iter().any(|p| p == "health") {
        let per_layer = |f: fn(&ArmRun) -> &Vec<f64>| -> Vec<XySeries> {
            arms.iter()
                .filter_map(|a| runs.iter().find(|r| r.arm == a.arm))
                .filter(|r| !f(r).is_empty())
                .map(|r| XySeries {
                    name: r.arm.clone(),
                    points: f(r).iter().enumerate().map(|(l, &v)| (l as f64, v)).collect(),
                })
                .collect()
        };
        let g = per_layer(|r| &r.grad_norm);
        if !g.is_empty() {
            let c = XyChart {
                title: "gradient norm per layer (last health step)".into(),
                x: "layer".into(),
                y: "gradient L2 norm".into(),
                series: g,
                scatter: false,
            };
            out.push(draw(&c, "grad_norm_layers", dir)?);
        }
        let e = per_layer(|r| &r.attn_entropy);
        if e.iter().any(|s| s.points.iter().any(|p| p.1.is_finite())) {
            let c = XyChart {
                title: "attention entropy per layer (last health step)".into(),
                x: "layer".into(),
                y: "entropy (nats)".into(),
                series: e,
                scatter: false,
            };
            out.push(draw(&c, "attn_entropy_layers", dir)?);
        }
    }
    Ok(out)
}

/// A cost of an arm (parameters, FLOPs per token, seconds), if it has one.
type CostOf = fn(&ArmSummary) -> Option<f64>;

/// Question 10: every run of the other results present in `out`, as points of validation loss
/// against parameters, FLOPs per token and time; the Pareto front of each.
pub(super) fn pareto(q: &Question, spec: &Spec, budget: Budget, out: &Path, dir: &Path) -> Result<ExplainResult> {
    let mut points: Vec<(String, ArmSummary)> = Vec::new();
    for other in super::QUESTIONS.iter().filter(|o| o.id != q.id) {
        let path = out.join(other.id).join("result.json");
        let Ok(r) = super::ExplainResult::read(&path) else { continue };
        let Some(arms) = r.data.get("arms").and_then(|a| serde_json::from_value::<Vec<ArmSummary>>(a.clone()).ok())
        else {
            continue;
        };
        points.extend(arms.into_iter().map(|a| (other.id.to_string(), a)));
    }
    ensure!(
        !points.is_empty(),
        "question {} compares the runs of the other experiments: run some first (lmlab explain run all)",
        q.number
    );
    let mut result = new_result(q, spec, budget, Vec::new());
    let mut charts = Vec::new();
    let axes: [(&str, &str, CostOf); 3] = [
        ("params", "parameters", |a| Some(a.params as f64)),
        ("flops", "forward FLOPs per token", |a| a.flops_per_token),
        ("seconds", "training seconds per run", |a| Some(a.seconds_mean)),
    ];
    let mut fronts = serde_json::Map::new();
    for (name, label, f) in axes {
        let all: Vec<(f64, f64, String)> =
            points.iter().filter_map(|(id, a)| f(a).map(|x| (x, a.val_mean, format!("{id}: {}", a.arm)))).collect();
        let front = pareto_front(&all);
        let c = XyChart {
            title: format!("validation loss against {label}"),
            x: label.into(),
            y: "val loss".into(),
            series: vec![
                XySeries { name: "runs".into(), points: all.iter().map(|p| (p.0, p.1)).collect() },
                XySeries { name: "Pareto front".into(), points: front.iter().map(|p| (p.0, p.1)).collect() },
            ],
            scatter: false,
        };
        charts.push(draw(&c, &format!("pareto_{name}"), dir)?);
        result.findings.push(findings::pareto(label, &front));
        fronts.insert(name.into(), serde_json::json!(front));
    }
    result.charts = charts;
    result.table = Table {
        columns: ["experiment: arm", "val loss", "parameters", "forward FLOPs/token", "s per run"]
            .map(String::from)
            .to_vec(),
        rows: points
            .iter()
            .map(|(id, a)| {
                vec![
                    format!("{id}: {}", a.arm),
                    format!("{:.4}", a.val_mean),
                    a.params.to_string(),
                    a.flops_per_token.map_or("–".into(), |f| format!("{f:.3e}")),
                    format!("{:.1}", a.seconds_mean),
                ]
            })
            .collect(),
    };
    result.data = serde_json::json!({ "points": points.iter().map(|(id, a)| serde_json::json!({"experiment": id, "arm": a})).collect::<Vec<_>>(), "fronts": fronts });
    Ok(result)
}

/// The points no other point beats on both cost (x) and loss (y), by increasing cost.
fn pareto_front(points: &[(f64, f64, String)]) -> Vec<(f64, f64, String)> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut front: Vec<(f64, f64, String)> = Vec::new();
    for p in sorted {
        if front.last().is_none_or(|last| p.1 < last.1) {
            front.push(p);
        }
    }
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_keeps_only_unbeaten_points() {
        let p = |x: f64, y: f64| (x, y, format!("{x}"));
        let front = pareto_front(&[p(3.0, 1.0), p(1.0, 3.0), p(2.0, 2.5), p(2.0, 3.5), p(4.0, 1.5)]);
        let xy: Vec<(f64, f64)> = front.iter().map(|q| (q.0, q.1)).collect();
        assert_eq!(xy, vec![(1.0, 3.0), (2.0, 2.5), (3.0, 1.0)]);
    }
}
