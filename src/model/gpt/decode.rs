//! Inference with a key/value cache. Prompt processing (prefill) and token-by-token decoding
//! share one code path, [`Gpt::forward_cached`]: each call runs the new tokens through every
//! layer, appends their keys and values to the cache, and attends over everything cached.

use super::{Gpt, GptConfig, Regions};
use crate::kernels::{
    attention::attention_forward_cached, gelu::gelu_forward, layernorm::layernorm_forward, matmul::matmul_forward,
    residual::residual_add_inplace,
};
use anyhow::{bail, ensure, Result};

/// Keys and values of every layer for the tokens processed so far (batch 1).
pub struct KvCache {
    k: Vec<f32>, // (L, block_size, C)
    v: Vec<f32>, // (L, block_size, C)
    len: usize,
    block: usize,
    c: usize,
}

impl KvCache {
    pub fn new(cfg: &GptConfig) -> Self {
        let size = cfg.n_layer * cfg.block_size * cfg.n_embd;
        KvCache { k: vec![0.0; size], v: vec![0.0; size], len: 0, block: cfg.block_size, c: cfg.n_embd }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether another token fits (the model has `block_size` positions).
    pub fn is_full(&self) -> bool {
        self.len == self.block
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    fn layer(&mut self, l: usize) -> (&mut [f32], &mut [f32]) {
        let n = self.block * self.c;
        (&mut self.k[l * n..(l + 1) * n], &mut self.v[l * n..(l + 1) * n])
    }
}

impl Gpt {
    /// Runs `tokens` at positions `cache.len() ..` and returns the logits (V) of the last one.
    pub fn forward_cached(&mut self, tokens: &[u32], cache: &mut KvCache) -> Result<&[f32]> {
        let cfg = &self.config;
        let (v, c, nh, block) = (cfg.vocab_size, cfg.n_embd, cfg.n_head, cfg.block_size);
        let (t, start) = (tokens.len(), cache.len);
        ensure!(t >= 1, "forward_cached needs at least one token");
        ensure!(cache.block == block && cache.c == c, "the KV cache was made for another model");
        ensure!(start + t <= block, "{} cached + {t} new tokens exceed block_size {block}", start);
        if let Some(bad) = tokens.iter().find(|&&x| x as usize >= v) {
            bail!("token id {bad} is out of range for vocab_size {v}");
        }
        let w = &self.params;
        let (p, a) = (&self.p, &self.a);
        // Layer 0's activation regions serve every layer: nothing is kept for a backward pass.
        let ba = &a.blocks[0];
        let r = Regions::new(&mut self.acts);
        let opt = |rg: &Option<std::ops::Range<usize>>| rg.as_ref().map(|rg| &w[rg.clone()]);

        let x = r.mut_(&a.emb, t * c); // (t, C) residual stream
        let (wte, wpe) = (&w[p.wte.clone()], &w[p.wpe.clone()]);
        for (i, &tok) in tokens.iter().enumerate() {
            let (e, pe) = (&wte[tok as usize * c..][..c], &wpe[(start + i) * c..][..c]);
            for (o, (a, b)) in x[i * c..(i + 1) * c].iter_mut().zip(e.iter().zip(pe)) {
                *o = a + b;
            }
        }
        for (l, bp) in p.blocks.iter().enumerate() {
            let ln = r.mut_(&ba.ln_1, t * c);
            layernorm_forward(
                ln,
                r.mut_(&ba.ln_1_mean, t),
                r.mut_(&ba.ln_1_rstd, t),
                x,
                &w[bp.ln_1_w.clone()],
                opt(&bp.ln_1_b),
                c,
            );
            let qkv = r.mut_(&ba.qkv, t * 3 * c);
            matmul_forward(qkv, ln, &w[bp.c_attn_w.clone()], opt(&bp.c_attn_b), t, c, 3 * c);
            let (kc, vc) = cache.layer(l);
            for i in 0..t {
                let row = &qkv[i * 3 * c..(i + 1) * 3 * c];
                kc[(start + i) * c..(start + i + 1) * c].copy_from_slice(&row[c..2 * c]);
                vc[(start + i) * c..(start + i + 1) * c].copy_from_slice(&row[2 * c..]);
            }
            let atty = r.mut_(&ba.atty, t * c);
            attention_forward_cached(atty, qkv, 3 * c, kc, vc, r.mut_(&ba.att, nh * (start + t)), start, t, c, nh);
            let branch = r.mut_(&ba.attn_proj, t * c);
            matmul_forward(branch, atty, &w[bp.attn_proj_w.clone()], opt(&bp.attn_proj_b), t, c, c);
            residual_add_inplace(x, branch);

            let ln = r.mut_(&ba.ln_2, t * c);
            layernorm_forward(
                ln,
                r.mut_(&ba.ln_2_mean, t),
                r.mut_(&ba.ln_2_rstd, t),
                x,
                &w[bp.ln_2_w.clone()],
                opt(&bp.ln_2_b),
                c,
            );
            let fc = r.mut_(&ba.fc, t * 4 * c);
            matmul_forward(fc, ln, &w[bp.c_fc_w.clone()], opt(&bp.c_fc_b), t, c, 4 * c);
            let fc_gelu = r.mut_(&ba.fc_gelu, t * 4 * c);
            gelu_forward(fc_gelu, fc);
            let branch = r.mut_(&ba.mlp_proj, t * c);
            matmul_forward(branch, fc_gelu, &w[bp.mlp_proj_w.clone()], opt(&bp.mlp_proj_b), t, 4 * c, c);
            residual_add_inplace(x, branch);
        }
        // Only the last position's logits are needed to pick the next token.
        let ln_f = r.mut_(&a.ln_f, c);
        layernorm_forward(
            ln_f,
            r.mut_(&a.ln_f_mean, 1),
            r.mut_(&a.ln_f_rstd, 1),
            &x[(t - 1) * c..],
            &w[p.ln_f_w.clone()],
            opt(&p.ln_f_b),
            c,
        );
        matmul_forward(r.mut_(&a.logits, v), ln_f, &w[p.lm_head.clone()], None, 1, c, v);
        cache.len += t;
        Ok(&self.acts[a.logits.start..a.logits.start + v])
    }
}
