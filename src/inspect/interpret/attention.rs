//! Attention maps: each attention layer's probabilities per head, for one sequence, and
//! attention rollout (Abnar & Zuidema, 2020) over the self-attention layers of a stack.

use super::forward;
use crate::model::transformer::{AttnProbs, Transformer};
use anyhow::{ensure, Result};
use serde::Serialize;

/// One attention layer's probabilities for sequence 0 of the last pass.
#[derive(Clone, Debug, Serialize)]
pub struct AttentionLayer {
    /// `transformer`, `encoder` or `decoder`.
    pub stack: String,
    pub layer: usize,
    /// `self` or `cross`.
    pub kind: String,
    pub n_head: usize,
    /// Queries (rows) and keys (columns).
    pub tq: usize,
    pub tk: usize,
    /// (n_head, tq, tk): row i of head h is query i's distribution over the keys.
    pub probs: Vec<f32>,
}

impl AttentionLayer {
    /// Head `h`'s (tq, tk) map.
    pub fn head(&self, h: usize) -> &[f32] {
        &self.probs[h * self.tq * self.tk..(h + 1) * self.tq * self.tk]
    }

    /// The heads' mean (tq, tk).
    pub fn mean(&self) -> Vec<f32> {
        let len = self.tq * self.tk;
        let mut m = vec![0f32; len];
        for h in 0..self.n_head {
            m.iter_mut().zip(self.head(h)).for_each(|(m, p)| *m += p / self.n_head as f32);
        }
        m
    }
}

/// Sequence 0's probabilities (NH, Tq, Tk) of one layer; flash attention's are recomputed
/// from its log-sum-exp and the stored queries and keys (exactly what its kernel used).
pub fn dense_probs(p: &AttnProbs) -> (usize, usize, usize, Vec<f32>) {
    match *p {
        AttnProbs::Stored { probs, nh, tq, tk, .. } => (nh, tq, tk, probs[..nh * tq * tk].to_vec()),
        AttnProbs::Flash { lse, qkv, t, c, nh, .. } => {
            let hs = c / nh;
            let scale = 1.0 / (hs as f64).sqrt();
            let mut out = vec![0f32; nh * t * t];
            for h in 0..nh {
                let row = |i: usize, off: usize| &qkv[i * 3 * c + off + h * hs..][..hs];
                for i in 0..t {
                    let l = lse[h * t + i] as f64;
                    for j in 0..=i {
                        let s =
                            scale * row(i, 0).iter().zip(row(j, c)).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
                        out[(h * t + i) * t + j] = (s - l).exp() as f32;
                    }
                }
            }
            (nh, t, t, out)
        }
    }
}

/// Every attention layer of the model on one sequence (`tokens`; `src` for an
/// encoder-decoder's encoder), in forward order: the encoder's self-attention, then the
/// decoder's self- and cross-attention per block.
pub fn attention_maps(model: &mut Transformer, tokens: &[u32], src: Option<&[u32]>) -> Result<Vec<AttentionLayer>> {
    forward(model, tokens, src)?;
    let blocks = model.blocks();
    ensure!(!blocks.is_empty(), "the model exposes no attention probabilities (an inference-only model?)");
    let mut out = Vec::new();
    for b in &blocks {
        let mut push = |kind: &str, p: &AttnProbs| {
            let (n_head, tq, tk, probs) = dense_probs(p);
            out.push(AttentionLayer {
                stack: b.stack.to_string(),
                layer: b.layer,
                kind: kind.into(),
                n_head,
                tq,
                tk,
                probs,
            });
        };
        push("self", &b.self_attn);
        if let Some(c) = &b.cross_attn {
            push("cross", c);
        }
    }
    Ok(out)
}

/// Attention rollout of a stack's self-attention layers (in order): per layer the heads' mean
/// A, then Â = ½A + ½I with rows renormalised (the residual connection), and the product
/// R = Â_L ⋯ Â_1. Row i of R (T, T) is how much token i's final representation draws on each
/// input token. Errors if the layers are not square maps of one length.
pub fn rollout(layers: &[&AttentionLayer]) -> Result<Vec<f64>> {
    ensure!(!layers.is_empty(), "rollout needs at least one self-attention layer");
    let t = layers[0].tq;
    ensure!(layers.iter().all(|l| l.tq == t && l.tk == t), "rollout needs square self-attention maps of one length");
    let mut r: Vec<f64> = (0..t * t).map(|k| if k / t == k % t { 1.0 } else { 0.0 }).collect();
    for l in layers {
        let mean = l.mean();
        let mut a: Vec<f64> = mean.iter().map(|&p| 0.5 * p as f64).collect();
        for i in 0..t {
            a[i * t + i] += 0.5;
            let s: f64 = a[i * t..(i + 1) * t].iter().sum();
            if s > 0.0 {
                a[i * t..(i + 1) * t].iter_mut().for_each(|v| *v /= s);
            }
        }
        // r ← a · r
        let mut next = vec![0f64; t * t];
        for i in 0..t {
            for k in 0..t {
                let aik = a[i * t + k];
                if aik != 0.0 {
                    for j in 0..t {
                        next[i * t + j] += aik * r[k * t + j];
                    }
                }
            }
        }
        r = next;
    }
    Ok(r)
}
