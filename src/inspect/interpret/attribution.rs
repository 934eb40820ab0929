//! Attribution of one output to the input tokens: gradient × input and integrated gradients
//! (Sundararajan et al., 2017), on the token embeddings (the rows `wte[idx]`; positions are
//! added after them and are not attributed), as Captum computes them.
//!
//! The attributed function f is the log-probability of a chosen output: token `target` at
//! position `pos` for a language model, class `target` for a classifier. Its gradient comes
//! from the model's own backward pass of the cross-entropy −f (one target, every other one
//! ignored), read at the embeddings (`Transformer::input_grad`).
//!
//! Integrated gradients from the all-zero baseline x′ = 0: attr = x ⊙ Σ_k w_k ∇f(α_k x), with
//! Captum's points α_k and weights w_k for each method (`Method`). Completeness: Σ attr ≈
//! f(x) − f(0); the difference (Captum's convergence delta) shrinks as `steps` grows.

use crate::model::transformer::{Arch, Transformer};
use anyhow::{bail, ensure, Result};
use serde::Serialize;

/// What is attributed.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// log p(token | tokens[..=pos]) of a language model: the prediction made at `pos`.
    Token { pos: usize, token: u32 },
    /// log p(class | text) of a classifier.
    Class(usize),
}

/// Integrated gradients' quadrature over α ∈ [0, 1] (Captum's `method` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    GaussLegendre,
    RiemannLeft,
    RiemannRight,
    RiemannMiddle,
    RiemannTrapezoid,
}

impl Method {
    pub fn parse(s: &str) -> Result<Method> {
        Ok(match s {
            "gausslegendre" => Method::GaussLegendre,
            "riemann_left" => Method::RiemannLeft,
            "riemann_right" => Method::RiemannRight,
            "riemann_middle" => Method::RiemannMiddle,
            "riemann_trapezoid" => Method::RiemannTrapezoid,
            _ => bail!(
                "unknown integration method {s:?}: gausslegendre, riemann_left, riemann_right, riemann_middle or \
                 riemann_trapezoid"
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::GaussLegendre => "gausslegendre",
            Method::RiemannLeft => "riemann_left",
            Method::RiemannRight => "riemann_right",
            Method::RiemannMiddle => "riemann_middle",
            Method::RiemannTrapezoid => "riemann_trapezoid",
        }
    }

    /// (α_k, w_k) for `n` steps, as Captum's `approximation_parameters`.
    pub fn points(self, n: usize) -> Result<Vec<(f64, f64)>> {
        // Captum asserts more than one step for every method.
        ensure!(n >= 2, "integrated gradients needs at least two steps");
        let lin = |a: f64, b: f64| -> Vec<f64> {
            if n == 1 {
                vec![a]
            } else {
                (0..n).map(|k| a + (b - a) * k as f64 / (n - 1) as f64).collect()
            }
        };
        let h = 1.0 / n as f64;
        Ok(match self {
            Method::RiemannLeft => lin(0.0, 1.0 - h).into_iter().map(|a| (a, h)).collect(),
            Method::RiemannRight => lin(h, 1.0).into_iter().map(|a| (a, h)).collect(),
            Method::RiemannMiddle => lin(h / 2.0, 1.0 - h / 2.0).into_iter().map(|a| (a, h)).collect(),
            // Captum's trapezoid: n points from 0 to 1, weights 1/n halved at both ends (so
            // they sum to (n − 1)/n, not 1; kept as Captum has it, to give its numbers).
            Method::RiemannTrapezoid => lin(0.0, 1.0)
                .into_iter()
                .enumerate()
                .map(|(k, a)| (a, if k == 0 || k == n - 1 { h / 2.0 } else { h }))
                .collect(),
            Method::GaussLegendre => gauss_legendre(n).into_iter().map(|(x, w)| (0.5 * (1.0 + x), 0.5 * w)).collect(),
        })
    }
}

/// Gauss–Legendre nodes and weights on [−1, 1], ascending: the roots of P_n by Newton's
/// method from the usual cosine guesses, w = 2 / ((1 − x²) P_n′(x)²).
pub fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut x = -(std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            // P_n(x) and P_n'(x) by the three-term recurrence.
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                (p0, p1) = (p1, p2);
            }
            // p1 = P_n(x), p0 = P_{n−1}(x); P_n′ = n (x P_n − P_{n−1}) / (x² − 1).
            dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
            let dx = p1 / dp;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        out.push((x, 2.0 / ((1.0 - x * x) * dp * dp)));
    }
    out
}

/// Attributions of one target to each token.
#[derive(Clone, Debug, Serialize)]
pub struct Attribution {
    /// f(x): the target's log-probability on the input.
    pub f_input: f64,
    /// f(0): on the all-zero embeddings.
    pub f_baseline: f64,
    /// Per token: Σ_c x_c ∂f/∂x_c.
    pub grad_x_input: Vec<f64>,
    /// Per token: the integrated-gradients attribution summed over the embedding dimensions.
    pub integrated_gradients: Vec<f64>,
    /// Σ integrated gradients − (f(x) − f(0)) (Captum's convergence delta).
    pub delta: f64,
    pub method: String,
    pub steps: usize,
}

/// f = log p(target) and ∂f/∂x (T, C) at the embeddings scaled by `alpha`.
fn value_and_grad(model: &mut Transformer, ids: &[u32], target: Target, alpha: f64) -> Result<(f64, Vec<f32>)> {
    let t = ids.len();
    model.set_input_scale((alpha != 1.0).then_some(alpha as f32))?;
    let loss = match target {
        Target::Token { pos, token } => {
            let mut targets = vec![-1i32; t];
            targets[pos] = token as i32;
            model.forward_lm(ids, Some(&targets), 1, t, false, 0)?
        }
        Target::Class(k) => model.forward_classify(ids, None, Some(&[k as i32]), 1, t, false, 0)?,
    };
    let loss = loss.unwrap_or(f32::NAN) as f64;
    model.zero_grad();
    model.backward()?;
    let g = model.input_grad().expect("capture is on").iter().map(|d| -d).collect();
    Ok((-loss, g))
}

/// Gradient × input and integrated gradients (`method`, `steps`) of `target` over the tokens
/// `ids` (one sequence). The model must be trainable (it runs backward passes); its gradient
/// buffers are overwritten.
pub fn attribute(
    model: &mut Transformer,
    ids: &[u32],
    target: Target,
    method: Method,
    steps: usize,
) -> Result<Attribution> {
    let (t, c) = (ids.len(), model.config.n_embd);
    match (target, model.config.arch) {
        (Target::Token { pos, token }, Arch::Decoder) => {
            ensure!(pos < t, "position {pos} is outside the text ({t} tokens)");
            ensure!((token as usize) < model.config.vocab_size, "token {token} is outside the vocabulary");
        }
        (Target::Class(k), Arch::Encoder) => {
            ensure!(
                k < model.config.num_classes,
                "class {k} does not exist: the model has {} classes",
                model.config.num_classes
            )
        }
        (Target::Token { .. }, _) => bail!("a token target needs a decoder-only language model"),
        (Target::Class(_), _) => bail!("a class target needs an encoder classifier"),
    }
    let points = method.points(steps)?;
    // The input x: each token's embedding row.
    let table = ["transformer.wte.weight", "encoder.wte.weight"].into_iter().find_map(|n| model.layout.get(n));
    let Some(wte) = table.map(|w| w.range()) else { bail!("the model has no token embedding table") };
    let x: Vec<f32> = ids.iter().flat_map(|&id| model.params[wte.start + id as usize * c..][..c].to_vec()).collect();
    model.set_capture_input_grad(true)?;
    let result = (|| -> Result<Attribution> {
        let (f_input, g) = value_and_grad(model, ids, target, 1.0)?;
        let per_token = |v: &[f64]| v.chunks_exact(c).map(|r| r.iter().sum()).collect::<Vec<f64>>();
        let gxi: Vec<f64> = x.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).collect();
        let (f_baseline, _) = value_and_grad(model, ids, target, 0.0)?;
        let mut avg = vec![0f64; t * c];
        for &(alpha, w) in &points {
            let (_, g) = value_and_grad(model, ids, target, alpha)?;
            avg.iter_mut().zip(&g).for_each(|(a, &gi)| *a += w * gi as f64);
        }
        let ig: Vec<f64> = x.iter().zip(&avg).map(|(&a, &b)| a as f64 * b).collect();
        let integrated_gradients = per_token(&ig);
        let delta = integrated_gradients.iter().sum::<f64>() - (f_input - f_baseline);
        Ok(Attribution {
            f_input,
            f_baseline,
            grad_x_input: per_token(&gxi),
            integrated_gradients,
            delta,
            method: method.name().into(),
            steps,
        })
    })();
    model.set_input_scale(None)?;
    model.set_capture_input_grad(false)?;
    result
}

/// A self-contained HTML page: the tokens as coloured text (red: the token raised f, blue:
/// lowered it; the stronger, the larger |attribution| relative to the largest), one line per
/// method, with the numbers in each token's tooltip.
pub fn to_html(labels: &[String], a: &Attribution, what: &str) -> String {
    fn escape(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                '&' => "&amp;".into(),
                '<' => "&lt;".into(),
                '>' => "&gt;".into(),
                '"' => "&quot;".into(),
                '\n' => "⏎".into(),
                c => c.to_string(),
            })
            .collect()
    }
    let line = |name: &str, v: &[f64]| {
        let max = v.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
        let spans: String = labels
            .iter()
            .zip(v)
            .map(|(l, &x)| {
                let t = (x / max).clamp(-1.0, 1.0);
                let (r, g, b) = if t >= 0.0 { (220, 40, 40) } else { (40, 90, 220) };
                format!(
                    "<span title=\"{:+.6}\" style=\"background:rgba({r},{g},{b},{:.3})\">{}</span>",
                    x,
                    t.abs(),
                    escape(l)
                )
            })
            .collect();
        format!("<h2>{name}</h2>\n<p class=\"text\">{spans}</p>\n")
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>lmlab attribution</title>\n<style>\
         body{{font-family:sans-serif;max-width:60em;margin:2em auto}} .text{{font-family:monospace;\
         white-space:pre-wrap;line-height:1.8;font-size:1.1em}} .text span{{padding:1px 0}}</style></head><body>\n\
         <h1>Attribution of {}</h1>\n<p>f(x) = {:.6}, f(baseline 0) = {:.6}; integrated gradients ({}, {} steps) \
         sum to {:.6}, convergence delta {:+.2e}. Red raised f, blue lowered it; hover for the numbers.</p>\n{}{}\
         </body></html>\n",
        escape(what),
        a.f_input,
        a.f_baseline,
        a.method,
        a.steps,
        a.integrated_gradients.iter().sum::<f64>(),
        a.delta,
        line("Integrated gradients", &a.integrated_gradients),
        line("Gradient × input", &a.grad_x_input),
    )
}
