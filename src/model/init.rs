//! Weight initialisation schemes, applied tensor by tensor over a [`ParamLayout`].
//!
//! Every scheme sets biases and buffers to 0 and norm gains to 1, and draws embedding tables
//! (token, position, relative-position) from N(0, std). They differ on the weight matrices,
//! whose stored shape is (out, in) — `fan_in` = in, `fan_out` = out, per tensor as stored (a
//! packed QKV matrix counts its 3·C outputs):
//!
//! | scheme           | matrices                                                         |
//! |------------------|------------------------------------------------------------------|
//! | `gpt2`           | N(0, std); residual output projections `c_proj` N(0, std/√(2L))   |
//! | `normal`         | N(0, std)                                                        |
//! | `xavier_uniform` | U(-a, a), a = √(6 / (fan_in + fan_out))   (Glorot & Bengio 2010) |
//! | `xavier_normal`  | N(0, √(2 / (fan_in + fan_out)))                                  |
//! | `kaiming_uniform`| U(-a, a), a = √(6 / fan_in)               (He et al. 2015, ReLU) |
//! | `kaiming_normal` | N(0, √(2 / fan_in))                                              |
//!
//! These are the formulas of `torch.nn.init` (Kaiming with its default gain √2, fan-in mode);
//! L is the number of blocks whose residual branches add up.

use super::{ParamKind, ParamLayout};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    #[default]
    Gpt2,
    Normal,
    XavierUniform,
    XavierNormal,
    KaimingUniform,
    KaimingNormal,
}

enum Dist {
    Normal(Normal<f32>),
    Uniform(Uniform<f32>),
}

impl Dist {
    fn normal(std: f32) -> Self {
        Dist::Normal(Normal::new(0.0, std).expect("finite std"))
    }
    fn uniform(bound: f32) -> Self {
        Dist::Uniform(Uniform::new_inclusive(-bound, bound))
    }
    fn sample(&self, rng: &mut rand_xoshiro::Xoshiro256PlusPlus) -> f32 {
        match self {
            Dist::Normal(d) => d.sample(rng),
            Dist::Uniform(d) => d.sample(rng),
        }
    }
}

/// Initialises every tensor of `layout` in `params` with `scheme` (see the module table);
/// `std` is the standard deviation of the normal draws, `layers` the L of GPT-2's scaling.
pub fn init_params(layout: &ParamLayout, params: &mut [f32], scheme: InitScheme, std: f32, seed: u64, layers: usize) {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let base = Dist::normal(std);
    for t in &layout.tensors {
        let dst = &mut params[t.range()];
        let (fan_out, fan_in) = (t.shape[0] as f32, t.shape[1..].iter().product::<usize>().max(1) as f32);
        let dist = match t.kind {
            ParamKind::Bias | ParamKind::Buffer => {
                dst.fill(0.0);
                continue;
            }
            ParamKind::Norm => {
                dst.fill(1.0);
                continue;
            }
            ParamKind::Embedding => None,
            ParamKind::Matrix => match scheme {
                InitScheme::Gpt2 if t.name.ends_with("c_proj.weight") => {
                    Some(Dist::normal(std / (2.0 * layers.max(1) as f32).sqrt()))
                }
                InitScheme::Gpt2 | InitScheme::Normal => None,
                InitScheme::XavierUniform => Some(Dist::uniform((6.0 / (fan_in + fan_out)).sqrt())),
                InitScheme::XavierNormal => Some(Dist::normal((2.0 / (fan_in + fan_out)).sqrt())),
                InitScheme::KaimingUniform => Some(Dist::uniform((6.0 / fan_in).sqrt())),
                InitScheme::KaimingNormal => Some(Dist::normal((2.0 / fan_in).sqrt())),
            },
        };
        let d = dist.as_ref().unwrap_or(&base);
        dst.iter_mut().for_each(|x| *x = d.sample(&mut rng));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(x: &[f32]) -> (f64, f64, f32) {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt(), x.iter().fold(0.0f32, |m, v| m.max(v.abs())))
    }

    #[test]
    fn each_scheme_draws_its_distribution() {
        let mut l = ParamLayout::default();
        let w = l.push("h.0.mlp.c_fc.weight", &[256, 128], ParamKind::Matrix);
        let p = l.push("h.0.mlp.c_proj.weight", &[128, 256], ParamKind::Matrix);
        let e = l.push("wte.weight", &[300, 64], ParamKind::Embedding);
        let b = l.push("h.0.mlp.c_fc.bias", &[256], ParamKind::Bias);
        let n = l.push("h.0.ln_1.weight", &[64], ParamKind::Norm);
        let (fi, fo) = (128.0f64, 256.0f64);
        let layers = 4;
        for (scheme, w_std, w_bound, p_std) in [
            (InitScheme::Gpt2, 0.02, None, 0.02 / 8f64.sqrt()),
            (InitScheme::Normal, 0.02, None, 0.02),
            (
                InitScheme::XavierUniform,
                (2.0 / (fi + fo)).sqrt(),
                Some((6.0 / (fi + fo)).sqrt()),
                (2.0 / (fi + fo)).sqrt(),
            ),
            (InitScheme::XavierNormal, (2.0 / (fi + fo)).sqrt(), None, (2.0 / (fi + fo)).sqrt()),
            (InitScheme::KaimingUniform, (2.0 / fi).sqrt(), Some((6.0 / fi).sqrt()), (2.0 / fo).sqrt()),
            (InitScheme::KaimingNormal, (2.0 / fi).sqrt(), None, (2.0 / fo).sqrt()),
        ] {
            let mut params = vec![f32::NAN; l.total];
            init_params(&l, &mut params, scheme, 0.02, 1, layers);
            let (mean, std, max) = stats(&params[w.clone()]);
            assert!(mean.abs() < 0.05 * w_std, "{scheme:?}: mean {mean}");
            assert!((std / w_std - 1.0).abs() < 0.03, "{scheme:?}: std {std} vs {w_std}");
            if let Some(bound) = w_bound {
                // Uniform: every draw inside the bound, the extremes close to it.
                assert!(max as f64 <= bound && max as f64 > 0.99 * bound, "{scheme:?}: max {max} vs bound {bound}");
            } else {
                assert!(max as f64 > 3.0 * w_std, "{scheme:?}: normal draws have tails");
            }
            let (_, std, _) = stats(&params[p.clone()]);
            assert!((std / p_std - 1.0).abs() < 0.03, "{scheme:?}: c_proj std {std} vs {p_std}");
            let (_, std, _) = stats(&params[e.clone()]);
            assert!((std / 0.02 - 1.0).abs() < 0.05, "{scheme:?}: embedding std {std}");
            assert!(params[b.clone()].iter().all(|&x| x == 0.0) && params[n.clone()].iter().all(|&x| x == 1.0));
        }
    }
}
