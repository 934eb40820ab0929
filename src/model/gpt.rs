//! GPT: a decoder-only Transformer as in GPT-2 / nanoGPT.
//!
//! ```text
//! idx (B,T) ─ wte + wpe ─ dropout ─┬─ for each block ──────────────────────────────────┐
//!                                   │  x = x + dropout(c_proj(attn(c_attn(ln_1(x)))))   │
//!                                   │  x = x + dropout(mlp.c_proj(gelu(c_fc(ln_2(x))))) │
//!                                   └───────────────────────────────────────────────────┘
//!                                   ─ ln_f ─ lm_head (tied to wte by default) ─ logits (B,T,V)
//! ```
//!
//! Parameters, gradients and activations are flat buffers (llm.c style). Parameter names and
//! layouts are nanoGPT's (`transformer.h.0.attn.c_attn.weight`, Linear weights stored (out, in)),
//! so checkpoints map one to one onto PyTorch state dicts.

use crate::kernels::{
    attention::{attention_backward, attention_forward},
    crossentropy::{crossentropy_backward, crossentropy_forward},
    dropout::{dropout_backward, dropout_forward, site_seed},
    embedding::{embedding_backward, embedding_forward},
    flash_attention::{flash_attention_backward, flash_attention_forward, scratch_per_head},
    gelu::{gelu_backward, gelu_forward},
    layernorm::{layernorm_backward, layernorm_forward},
    matmul::{matmul_backward, matmul_forward},
    residual::residual_forward,
};
use crate::model::layout::{ActLayout, ParamKind, ParamLayout, Regions};
pub use crate::model::transformer::config::AttentionKind;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Model hyperparameters, with nanoGPT's names and meaning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Maximum context length (rows of the position embedding).
    pub block_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Dropout rate on embeddings, attention probabilities and residual branches.
    pub dropout: f32,
    /// Biases in Linear layers and LayerNorms.
    pub bias: bool,
    /// Share the output layer with the token embedding.
    pub tie_embeddings: bool,
    /// Which attention kernel trains the model (inference always uses the KV-cache kernel).
    #[serde(default)]
    pub attention: AttentionKind,
}

impl GptConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.vocab_size > 0, "model.vocab_size must be positive");
        ensure!(self.block_size > 0, "model.block_size must be positive");
        ensure!(self.n_layer > 0, "model.n_layer must be positive");
        ensure!(self.n_head > 0, "model.n_head must be positive");
        ensure!(
            self.n_embd > 0 && self.n_embd.is_multiple_of(self.n_head),
            "model.n_embd ({}) must be a positive multiple of model.n_head ({})",
            self.n_embd,
            self.n_head
        );
        ensure!((0.0..1.0).contains(&self.dropout), "model.dropout must be in [0, 1), got {}", self.dropout);
        ensure!(
            self.attention == AttentionKind::Dense || self.dropout == 0.0,
            "model.attention = \"flash\" does not support dropout yet: set model.dropout = 0"
        );
        Ok(())
    }

    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// Ranges of one block's parameters in the flat buffer.
#[derive(Clone, Debug)]
struct BlockParams {
    ln_1_w: Range<usize>,
    ln_1_b: Option<Range<usize>>,
    c_attn_w: Range<usize>, // (3C, C)
    c_attn_b: Option<Range<usize>>,
    attn_proj_w: Range<usize>, // (C, C)
    attn_proj_b: Option<Range<usize>>,
    ln_2_w: Range<usize>,
    ln_2_b: Option<Range<usize>>,
    c_fc_w: Range<usize>, // (4C, C)
    c_fc_b: Option<Range<usize>>,
    mlp_proj_w: Range<usize>, // (C, 4C)
    mlp_proj_b: Option<Range<usize>>,
}

#[derive(Clone, Debug)]
struct GptParams {
    wte: Range<usize>, // (V, C)
    wpe: Range<usize>, // (block_size, C)
    blocks: Vec<BlockParams>,
    ln_f_w: Range<usize>,
    ln_f_b: Option<Range<usize>>,
    lm_head: Range<usize>, // (V, C); equals `wte` when tied
}

fn build_param_layout(cfg: &GptConfig) -> (ParamLayout, GptParams) {
    use ParamKind::*;
    let (v, c) = (cfg.vocab_size, cfg.n_embd);
    let mut l = ParamLayout::default();
    let wte = l.push("transformer.wte.weight", &[v, c], Embedding);
    let wpe = l.push("transformer.wpe.weight", &[cfg.block_size, c], Embedding);
    let mut blocks = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let p = format!("transformer.h.{i}");
        let bias = |l: &mut ParamLayout, name: &str, n: usize| {
            cfg.bias.then(|| l.push(format!("{p}.{name}.bias"), &[n], Bias))
        };
        let ln_1_w = l.push(format!("{p}.ln_1.weight"), &[c], Norm);
        let ln_1_b = bias(&mut l, "ln_1", c);
        let c_attn_w = l.push(format!("{p}.attn.c_attn.weight"), &[3 * c, c], Matrix);
        let c_attn_b = bias(&mut l, "attn.c_attn", 3 * c);
        let attn_proj_w = l.push(format!("{p}.attn.c_proj.weight"), &[c, c], Matrix);
        let attn_proj_b = bias(&mut l, "attn.c_proj", c);
        let ln_2_w = l.push(format!("{p}.ln_2.weight"), &[c], Norm);
        let ln_2_b = bias(&mut l, "ln_2", c);
        let c_fc_w = l.push(format!("{p}.mlp.c_fc.weight"), &[4 * c, c], Matrix);
        let c_fc_b = bias(&mut l, "mlp.c_fc", 4 * c);
        let mlp_proj_w = l.push(format!("{p}.mlp.c_proj.weight"), &[c, 4 * c], Matrix);
        let mlp_proj_b = bias(&mut l, "mlp.c_proj", c);
        blocks.push(BlockParams {
            ln_1_w,
            ln_1_b,
            c_attn_w,
            c_attn_b,
            attn_proj_w,
            attn_proj_b,
            ln_2_w,
            ln_2_b,
            c_fc_w,
            c_fc_b,
            mlp_proj_w,
            mlp_proj_b,
        });
    }
    let ln_f_w = l.push("transformer.ln_f.weight", &[c], Norm);
    let ln_f_b = cfg.bias.then(|| l.push("transformer.ln_f.bias", &[c], Bias));
    let lm_head = if cfg.tie_embeddings { wte.clone() } else { l.push("lm_head.weight", &[v, c], Matrix) };
    (l, GptParams { wte, wpe, blocks, ln_f_w, ln_f_b, lm_head })
}

/// Ranges of one block's activations, sized for (max_batch, block_size).
#[derive(Clone, Debug)]
struct BlockActs {
    ln_1: Range<usize>,                   // (N, C)
    ln_1_mean: Range<usize>,              // (N)
    ln_1_rstd: Range<usize>,              // (N)
    qkv: Range<usize>,                    // (N, 3C)
    att: Range<usize>,                    // (B, NH, T, T) probabilities; with flash attention (B, NH, T) log-sum-exp
    att_drop: Option<Range<usize>>,       // (B, NH, T, T) after dropout
    atty: Range<usize>,                   // (N, C) attention output before c_proj
    attn_proj: Range<usize>,              // (N, C)
    attn_proj_drop: Option<Range<usize>>, // (N, C)
    resid_2: Range<usize>,                // (N, C) residual after attention
    ln_2: Range<usize>,                   // (N, C)
    ln_2_mean: Range<usize>,
    ln_2_rstd: Range<usize>,
    fc: Range<usize>,                    // (N, 4C)
    fc_gelu: Range<usize>,               // (N, 4C)
    mlp_proj: Range<usize>,              // (N, C)
    mlp_proj_drop: Option<Range<usize>>, // (N, C)
    resid_3: Range<usize>,               // (N, C) residual after the MLP: the block's output
}

#[derive(Clone, Debug)]
struct GptActs {
    emb: Range<usize>,              // (N, C)
    emb_drop: Option<Range<usize>>, // (N, C)
    blocks: Vec<BlockActs>,
    ln_f: Range<usize>, // (N, C)
    ln_f_mean: Range<usize>,
    ln_f_rstd: Range<usize>,
    logits: Range<usize>, // (N, V)
    losses: Range<usize>, // (N)
    // Backward scratch, reused by every block (gradients flow through one block at a time).
    d_residual: Range<usize>, // (N, C) gradient of the residual stream
    d_ln: Range<usize>,       // (N, C)
    d_qkv: Range<usize>,      // (N, 3C)
    d_att: Range<usize>,      // (B, NH, T, T); with flash attention the tile scratch of every head
    d_atty: Range<usize>,     // (N, C)
    d_fc: Range<usize>,       // (N, 4C)
    d_fc_gelu: Range<usize>,  // (N, 4C)
    d_branch: Range<usize>,   // (N, C) branch gradient after dropout backward
    d_logits: Range<usize>,   // (N, V)
}

fn build_act_layout(cfg: &GptConfig, max_b: usize) -> (ActLayout, GptActs) {
    let (t, c, v, nh) = (cfg.block_size, cfg.n_embd, cfg.vocab_size, cfg.n_head);
    let n = max_b * t;
    let drop = cfg.dropout > 0.0;
    let flash = cfg.attention == AttentionKind::Flash;
    let mut l = ActLayout::default();
    let emb = l.alloc(n * c);
    let emb_drop = l.alloc_if(drop, n * c);
    let blocks = (0..cfg.n_layer)
        .map(|_| BlockActs {
            ln_1: l.alloc(n * c),
            ln_1_mean: l.alloc(n),
            ln_1_rstd: l.alloc(n),
            qkv: l.alloc(n * 3 * c),
            att: l.alloc(if flash { max_b * nh * t } else { max_b * nh * t * t }),
            att_drop: l.alloc_if(drop, max_b * nh * t * t),
            atty: l.alloc(n * c),
            attn_proj: l.alloc(n * c),
            attn_proj_drop: l.alloc_if(drop, n * c),
            resid_2: l.alloc(n * c),
            ln_2: l.alloc(n * c),
            ln_2_mean: l.alloc(n),
            ln_2_rstd: l.alloc(n),
            fc: l.alloc(n * 4 * c),
            fc_gelu: l.alloc(n * 4 * c),
            mlp_proj: l.alloc(n * c),
            mlp_proj_drop: l.alloc_if(drop, n * c),
            resid_3: l.alloc(n * c),
        })
        .collect();
    let acts = GptActs {
        emb,
        emb_drop,
        blocks,
        ln_f: l.alloc(n * c),
        ln_f_mean: l.alloc(n),
        ln_f_rstd: l.alloc(n),
        logits: l.alloc(n * v),
        losses: l.alloc(n),
        d_residual: l.alloc(n * c),
        d_ln: l.alloc(n * c),
        d_qkv: l.alloc(n * 3 * c),
        d_att: l.alloc(if flash { max_b * nh * scratch_per_head(t) } else { max_b * nh * t * t }),
        d_atty: l.alloc(n * c),
        d_fc: l.alloc(n * 4 * c),
        d_fc_gelu: l.alloc(n * 4 * c),
        d_branch: l.alloc(n * c),
        d_logits: l.alloc(n * v),
    };
    (l, acts)
}

/// Zeroes a gradient buffer (timed as its own operation by the profiler).
fn zero(buf: &mut [f32]) {
    let _p = crate::profile::scope(crate::profile::Op::ZeroFill);
    buf.fill(0.0);
}

/// Dropout site numbers: each site gets an independent mask per step.
fn site_attn(layer: usize) -> u64 {
    1 + 3 * layer as u64
}
fn site_attn_resid(layer: usize) -> u64 {
    2 + 3 * layer as u64
}
fn site_mlp_resid(layer: usize) -> u64 {
    3 + 3 * layer as u64
}
const SITE_EMB: u64 = 0;

/// A GPT with its parameter, gradient and activation buffers.
pub struct Gpt {
    pub config: GptConfig,
    pub layout: ParamLayout,
    /// All parameters, laid out by `layout`.
    pub params: Vec<f32>,
    /// Gradients, same layout as `params`.
    pub grads: Vec<f32>,
    p: GptParams,
    a: GptActs,
    acts: Vec<f32>,
    max_batch: usize,
    // The last forward pass: its shape, inputs and dropout seed, kept for the backward pass.
    batch: usize,
    seq: usize,
    inputs: Vec<u32>,
    targets: Vec<i32>,
    has_targets: bool,
    train: bool,
    dropout_seed: u64,
    loss_count: usize,
}

impl Gpt {
    /// A model with zeroed parameters and activation buffers for up to `max_batch` sequences of
    /// `block_size` tokens. Call [`Gpt::init_gpt2`] or load weights next.
    pub fn new(config: GptConfig, max_batch: usize) -> Result<Self> {
        config.validate()?;
        ensure!(max_batch > 0, "batch size must be positive");
        let (layout, p) = build_param_layout(&config);
        let (act_layout, a) = build_act_layout(&config, max_batch);
        let n = max_batch * config.block_size;
        Ok(Gpt {
            params: vec![0.0; layout.total],
            grads: vec![0.0; layout.total],
            acts: vec![0.0; act_layout.total],
            layout,
            p,
            a,
            max_batch,
            batch: 0,
            seq: 0,
            inputs: vec![0; n],
            targets: vec![0; n],
            has_targets: false,
            train: false,
            dropout_seed: 0,
            loss_count: 0,
            config,
        })
    }

    pub fn num_params(&self) -> usize {
        self.layout.total
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// GPT-2 initialisation: N(0, 0.02) for matrices and embeddings, N(0, 0.02/√(2·n_layer))
    /// for the two residual output projections, zero biases, unit norm gains.
    pub fn init_gpt2(&mut self, seed: u64) {
        crate::model::layout::init_gpt2(&self.layout, &mut self.params, seed, self.config.n_layer);
    }

    pub fn zero_grad(&mut self) {
        zero(&mut self.grads);
    }

    /// Forward pass over `idx` (B, T). With `targets` (B, T), returns the mean cross-entropy over
    /// the targets that are not the ignore index (-1). `train` enables dropout, whose masks
    /// are derived from `(dropout_seed, site)`.
    pub fn forward(
        &mut self,
        idx: &[u32],
        targets: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        let cfg = &self.config;
        let (v, c, nh) = (cfg.vocab_size, cfg.n_embd, cfg.n_head);
        ensure!(b >= 1 && b <= self.max_batch, "batch {b} outside 1..={}", self.max_batch);
        ensure!(t >= 1 && t <= cfg.block_size, "sequence length {t} outside 1..={} (block_size)", cfg.block_size);
        ensure!(idx.len() == b * t, "idx has {} tokens, expected B·T = {}", idx.len(), b * t);
        if let Some(bad) = idx.iter().find(|&&x| x as usize >= v) {
            bail!("token id {bad} is out of range for vocab_size {v}");
        }
        if let Some(tg) = targets {
            ensure!(tg.len() == b * t, "targets has {} entries, expected {}", tg.len(), b * t);
            if let Some(bad) = tg.iter().find(|&&x| x >= v as i32 || x < -1) {
                bail!("target {bad} is out of range for vocab_size {v} (use -1 to ignore)");
            }
        }
        let n = b * t;
        let p_drop = if train { cfg.dropout } else { 0.0 };
        self.batch = b;
        self.seq = t;
        self.train = train;
        self.dropout_seed = dropout_seed;
        self.inputs[..n].copy_from_slice(idx);
        self.has_targets = targets.is_some();
        if let Some(tg) = targets {
            self.targets[..n].copy_from_slice(tg);
        }

        let w = &self.params;
        let (p, a) = (&self.p, &self.a);
        let r = Regions::new(&mut self.acts);
        let dseed = |site| site_seed(dropout_seed, 0, site);

        embedding_forward(r.mut_(&a.emb, n * c), idx, &w[p.wte.clone()], &w[p.wpe.clone()], t, c);
        let mut x = r.get(&a.emb, n * c);
        if p_drop > 0.0 {
            let out = r.mut_(a.emb_drop.as_ref().unwrap(), n * c);
            dropout_forward(out, x, p_drop, dseed(SITE_EMB));
            x = out;
        }
        for (l, (bp, ba)) in p.blocks.iter().zip(&a.blocks).enumerate() {
            let opt = |rg: &Option<Range<usize>>| rg.as_ref().map(|rg| &w[rg.clone()]);
            // Attention branch.
            let ln_1 = r.mut_(&ba.ln_1, n * c);
            layernorm_forward(
                ln_1,
                r.mut_(&ba.ln_1_mean, n),
                r.mut_(&ba.ln_1_rstd, n),
                x,
                &w[bp.ln_1_w.clone()],
                opt(&bp.ln_1_b),
                c,
            );
            let qkv = r.mut_(&ba.qkv, n * 3 * c);
            matmul_forward(qkv, ln_1, &w[bp.c_attn_w.clone()], opt(&bp.c_attn_b), n, c, 3 * c);
            let atty = r.mut_(&ba.atty, n * c);
            let att_drop = ba
                .att_drop
                .as_ref()
                .filter(|_| p_drop > 0.0)
                .map(|rg| (r.mut_(rg, b * nh * t * t), p_drop, dseed(site_attn(l))));
            if cfg.attention == AttentionKind::Flash {
                let scratch = r.mut_(&a.d_att, b * nh * scratch_per_head(t));
                flash_attention_forward(atty, r.mut_(&ba.att, b * nh * t), scratch, qkv, b, t, c, nh);
            } else {
                attention_forward(atty, r.mut_(&ba.att, b * nh * t * t), att_drop, qkv, b, t, c, nh);
            }
            let mut branch = r.mut_(&ba.attn_proj, n * c);
            matmul_forward(branch, atty, &w[bp.attn_proj_w.clone()], opt(&bp.attn_proj_b), n, c, c);
            if p_drop > 0.0 {
                let out = r.mut_(ba.attn_proj_drop.as_ref().unwrap(), n * c);
                dropout_forward(out, branch, p_drop, dseed(site_attn_resid(l)));
                branch = out;
            }
            let resid_2 = r.mut_(&ba.resid_2, n * c);
            residual_forward(resid_2, x, branch);
            // MLP branch.
            let ln_2 = r.mut_(&ba.ln_2, n * c);
            layernorm_forward(
                ln_2,
                r.mut_(&ba.ln_2_mean, n),
                r.mut_(&ba.ln_2_rstd, n),
                resid_2,
                &w[bp.ln_2_w.clone()],
                opt(&bp.ln_2_b),
                c,
            );
            let fc = r.mut_(&ba.fc, n * 4 * c);
            matmul_forward(fc, ln_2, &w[bp.c_fc_w.clone()], opt(&bp.c_fc_b), n, c, 4 * c);
            let fc_gelu = r.mut_(&ba.fc_gelu, n * 4 * c);
            gelu_forward(fc_gelu, fc);
            let mut branch = r.mut_(&ba.mlp_proj, n * c);
            matmul_forward(branch, fc_gelu, &w[bp.mlp_proj_w.clone()], opt(&bp.mlp_proj_b), n, 4 * c, c);
            if p_drop > 0.0 {
                let out = r.mut_(ba.mlp_proj_drop.as_ref().unwrap(), n * c);
                dropout_forward(out, branch, p_drop, dseed(site_mlp_resid(l)));
                branch = out;
            }
            let resid_3 = r.mut_(&ba.resid_3, n * c);
            residual_forward(resid_3, resid_2, branch);
            x = resid_3;
        }
        let ln_f = r.mut_(&a.ln_f, n * c);
        let ln_f_b = p.ln_f_b.as_ref().map(|rg| &w[rg.clone()]);
        layernorm_forward(ln_f, r.mut_(&a.ln_f_mean, n), r.mut_(&a.ln_f_rstd, n), x, &w[p.ln_f_w.clone()], ln_f_b, c);
        let logits = r.mut_(&a.logits, n * v);
        matmul_forward(logits, ln_f, &w[p.lm_head.clone()], None, n, c, v);

        let Some(tg) = targets else { return Ok(None) };
        let (sum, count) = crossentropy_forward(r.mut_(&a.losses, n), logits, tg, v);
        self.loss_count = count;
        Ok(Some(if count == 0 { 0.0 } else { (sum / count as f64) as f32 }))
    }

    /// Logits (B, T, V) of the last forward pass.
    pub fn logits(&self) -> &[f32] {
        let n = self.batch * self.seq;
        &self.acts[self.a.logits.start..self.a.logits.start + n * self.config.vocab_size]
    }

    /// Backward pass of the last forward pass (which must have had targets): accumulates the
    /// gradient of the mean loss into `self.grads`. Call [`Gpt::zero_grad`] first.
    pub fn backward(&mut self) -> Result<()> {
        ensure!(self.has_targets && self.batch > 0, "backward() needs a forward pass with targets first");
        let cfg = &self.config;
        let (b, t) = (self.batch, self.seq);
        let (n, v, c, nh) = (b * t, cfg.vocab_size, cfg.n_embd, cfg.n_head);
        let p_drop = if self.train { cfg.dropout } else { 0.0 };
        let dseed = |site| site_seed(self.dropout_seed, 0, site);
        let (p, a) = (&self.p, &self.a);
        let w = &self.params;
        let g = Regions::new(&mut self.grads);
        let r = Regions::new(&mut self.acts);
        let idx = &self.inputs[..n];
        let targets = &self.targets[..n];
        let gopt = |rg: &Option<Range<usize>>| rg.as_ref().map(|rg| g.mut_(rg, rg.len()));
        let gw = |rg: &Range<usize>| g.mut_(rg, rg.len());

        // Loss → logits → lm_head → ln_f.
        let d_logits = r.mut_(&a.d_logits, n * v);
        if self.loss_count > 0 {
            crossentropy_backward(d_logits, r.get(&a.logits, n * v), targets, v, 1.0 / self.loss_count as f32);
        }
        let d_ln = r.mut_(&a.d_ln, n * c);
        matmul_backward(d_ln, gw(&p.lm_head), None, d_logits, r.get(&a.ln_f, n * c), &w[p.lm_head.clone()], n, c, v);
        let d_res = r.mut_(&a.d_residual, n * c);
        zero(d_res);
        let block_out = |l: usize| -> &[f32] {
            match l {
                0 => match &a.emb_drop {
                    Some(rg) if p_drop > 0.0 => r.get(rg, n * c),
                    _ => r.get(&a.emb, n * c),
                },
                l => r.get(&a.blocks[l - 1].resid_3, n * c),
            }
        };
        let x_final = block_out(cfg.n_layer);
        layernorm_backward(
            d_res,
            gw(&p.ln_f_w),
            gopt(&p.ln_f_b),
            d_ln,
            x_final,
            &w[p.ln_f_w.clone()],
            r.get(&a.ln_f_mean, n),
            r.get(&a.ln_f_rstd, n),
            c,
        );

        for l in (0..cfg.n_layer).rev() {
            let (bp, ba) = (&p.blocks[l], &a.blocks[l]);
            let x_in = block_out(l);
            // MLP branch: resid_3 = resid_2 + dropout(mlp_proj). d_res is ∂L/∂resid_3.
            let d_branch: &[f32] = if p_drop > 0.0 {
                let db = r.mut_(&a.d_branch, n * c);
                dropout_backward(db, d_res, p_drop, dseed(site_mlp_resid(l)));
                db
            } else {
                d_res
            };
            let d_fc_gelu = r.mut_(&a.d_fc_gelu, n * 4 * c);
            matmul_backward(
                d_fc_gelu,
                gw(&bp.mlp_proj_w),
                gopt(&bp.mlp_proj_b),
                d_branch,
                r.get(&ba.fc_gelu, n * 4 * c),
                &w[bp.mlp_proj_w.clone()],
                n,
                4 * c,
                c,
            );
            let d_fc = r.mut_(&a.d_fc, n * 4 * c);
            gelu_backward(d_fc, r.get(&ba.fc, n * 4 * c), d_fc_gelu);
            let d_ln = r.mut_(&a.d_ln, n * c);
            matmul_backward(
                d_ln,
                gw(&bp.c_fc_w),
                gopt(&bp.c_fc_b),
                d_fc,
                r.get(&ba.ln_2, n * c),
                &w[bp.c_fc_w.clone()],
                n,
                c,
                4 * c,
            );
            // ∂L/∂resid_2 = ∂L/∂resid_3 (identity path, already in d_res) + LayerNorm path.
            layernorm_backward(
                d_res,
                gw(&bp.ln_2_w),
                gopt(&bp.ln_2_b),
                d_ln,
                r.get(&ba.resid_2, n * c),
                &w[bp.ln_2_w.clone()],
                r.get(&ba.ln_2_mean, n),
                r.get(&ba.ln_2_rstd, n),
                c,
            );

            // Attention branch: resid_2 = x_in + dropout(attn_proj).
            let d_branch: &[f32] = if p_drop > 0.0 {
                let db = r.mut_(&a.d_branch, n * c);
                dropout_backward(db, d_res, p_drop, dseed(site_attn_resid(l)));
                db
            } else {
                d_res
            };
            let d_atty = r.mut_(&a.d_atty, n * c);
            matmul_backward(
                d_atty,
                gw(&bp.attn_proj_w),
                gopt(&bp.attn_proj_b),
                d_branch,
                r.get(&ba.atty, n * c),
                &w[bp.attn_proj_w.clone()],
                n,
                c,
                c,
            );
            let d_qkv = r.mut_(&a.d_qkv, n * 3 * c);
            let drop = ba
                .att_drop
                .as_ref()
                .filter(|_| p_drop > 0.0)
                .map(|rg| (r.get(rg, b * nh * t * t), p_drop, dseed(site_attn(l))));
            if cfg.attention == AttentionKind::Flash {
                let scratch = r.mut_(&a.d_att, b * nh * scratch_per_head(t));
                let (qkv, out, lse) = (r.get(&ba.qkv, n * 3 * c), r.get(&ba.atty, n * c), r.get(&ba.att, b * nh * t));
                flash_attention_backward(d_qkv, scratch, d_atty, qkv, out, lse, b, t, c, nh);
            } else {
                attention_backward(
                    d_qkv,
                    r.mut_(&a.d_att, b * nh * t * t),
                    d_atty,
                    r.get(&ba.qkv, n * 3 * c),
                    r.get(&ba.att, b * nh * t * t),
                    drop,
                    b,
                    t,
                    c,
                    nh,
                );
            }
            let d_ln = r.mut_(&a.d_ln, n * c);
            matmul_backward(
                d_ln,
                gw(&bp.c_attn_w),
                gopt(&bp.c_attn_b),
                d_qkv,
                r.get(&ba.ln_1, n * c),
                &w[bp.c_attn_w.clone()],
                n,
                c,
                3 * c,
            );
            layernorm_backward(
                d_res,
                gw(&bp.ln_1_w),
                gopt(&bp.ln_1_b),
                d_ln,
                x_in,
                &w[bp.ln_1_w.clone()],
                r.get(&ba.ln_1_mean, n),
                r.get(&ba.ln_1_rstd, n),
                c,
            );
        }
        // d_res is now ∂L/∂(embedding output after dropout).
        let d_emb: &[f32] = if p_drop > 0.0 {
            let db = r.mut_(&a.d_branch, n * c);
            dropout_backward(db, d_res, p_drop, dseed(SITE_EMB));
            db
        } else {
            d_res
        };
        let (wte, wpe) = (p.wte.clone(), p.wpe.clone());
        embedding_backward(g.mut_(&wte, wte.len()), g.mut_(&wpe, wpe.len()), d_emb, idx, t, c);
        Ok(())
    }

    /// Names and ranges of the parameters, in layout order.
    pub fn named_params(&self) -> impl Iterator<Item = (&str, &[f32])> {
        self.layout.tensors.iter().map(|t| (t.name.as_str(), &self.params[t.range()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_of(x: &[f32]) -> f64 {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
    }

    #[test]
    fn gpt2_initialisation() {
        let cfg = GptConfig {
            vocab_size: 65,
            block_size: 64,
            n_layer: 8,
            n_head: 4,
            n_embd: 128,
            dropout: 0.0,
            bias: true,
            tie_embeddings: false,
            attention: AttentionKind::Dense,
        };
        let mut m = Gpt::new(cfg, 1).unwrap();
        m.init_gpt2(0);
        let get = |name: &str| &m.params[m.layout.get(name).unwrap().range()];
        let proj_std = 0.02 / (16f64).sqrt();
        for (name, want) in [
            ("transformer.wte.weight", 0.02),
            ("lm_head.weight", 0.02),
            ("transformer.h.3.attn.c_attn.weight", 0.02),
            ("transformer.h.3.mlp.c_fc.weight", 0.02),
            ("transformer.h.3.attn.c_proj.weight", proj_std),
            ("transformer.h.3.mlp.c_proj.weight", proj_std),
        ] {
            let s = std_of(get(name));
            assert!((s / want - 1.0).abs() < 0.05, "{name}: std {s} vs {want}");
        }
        assert!(get("transformer.h.0.ln_1.weight").iter().all(|&x| x == 1.0));
        assert!(get("transformer.h.0.attn.c_attn.bias").iter().all(|&x| x == 0.0));
        // nanoGPT's parameter count for this shape (its count includes wpe and the untied head).
        let c = 128;
        let per_block = 2 * (2 * c) + (3 * c * c + 3 * c) + (c * c + c) + (4 * c * c + 4 * c) + (4 * c * c + c);
        assert_eq!(m.num_params(), 65 * c + 64 * c + 8 * per_block + 2 * c + 65 * c);
    }

    #[test]
    fn rejects_bad_shapes() {
        let cfg = GptConfig {
            vocab_size: 10,
            block_size: 8,
            n_layer: 1,
            n_head: 3,
            n_embd: 16,
            dropout: 0.0,
            bias: true,
            tie_embeddings: true,
            attention: AttentionKind::Dense,
        };
        let e = Gpt::new(cfg.clone(), 1).err().unwrap().to_string();
        assert!(e.contains("multiple of model.n_head"), "{e}");
        let mut m = Gpt::new(GptConfig { n_head: 2, ..cfg }, 2).unwrap();
        assert!(m.forward(&[1, 2, 3], None, 1, 3, false, 0).is_ok());
        assert!(m.forward(&[1; 9], None, 1, 9, false, 0).unwrap_err().to_string().contains("block_size"));
        assert!(m.forward(&[1; 6], None, 3, 2, false, 0).unwrap_err().to_string().contains("batch 3"));
        assert!(m.forward(&[10, 1], None, 1, 2, false, 0).unwrap_err().to_string().contains("token id 10"));
        assert!(m.backward().unwrap_err().to_string().contains("targets"));
    }
}
