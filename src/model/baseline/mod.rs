//! Language models without self-attention, the baselines of issue 19: stacked LSTM or GRU
//! layers, or a causal CNN of dilated convolutions, with the Transformer's conventions (one
//! flat parameter buffer with named views, preallocated activations, a forward/backward pair
//! per layer) and its training interface ([`LanguageModel`]), so the same loop, optimizers and
//! checkpoints train them.
//!
//! ```text
//! lstm, gru: idx ─ wte ─ dropout ─ [RNN layer ─ dropout] × n_layer ─ (ln_f) ─ lm_head ─ logits (B,T,V)
//! cnn:       idx ─ wte ─ dropout ─ [x + dropout(c_proj(act(conv(LN(x)))))] × n_layer ─ (ln_f) ─ lm_head ─ logits
//!            logits ─ cross-entropy with targets (B,T) (-1 = ignore)
//! ```
//!
//! Parameter names are those of the PyTorch modules that compute the same thing
//! (`scripts/make_rnn_lm_fixtures.py`): `wte.weight`; `rnn.weight_ih_l{l}`, `rnn.weight_hh_l{l}`,
//! `rnn.bias_ih_l{l}`, `rnn.bias_hh_l{l}` (one `nn.LSTM`/`nn.GRU` of n_layer layers, H =
//! `rnn_hidden`); `blocks.{i}.ln`, `blocks.{i}.conv` (`nn.Conv1d(C, C, K, dilation=dᵢ)` with a
//! left padding of (K − 1)·dᵢ), `blocks.{i}.c_proj`; `ln_f`; `lm_head.weight` when untied.
//!
//! Every layer sees the whole sequence from a zero state in training. Generation
//! ([`BaselineLm::step`]) keeps the recurrent state, O(1) per token; the CNN re-runs its
//! receptive field (the last 1 + Σ(K − 1)·dᵢ tokens), which gives the same logits.

mod conv;
mod recurrent;

use crate::kernels::crossentropy::{crossentropy_backward, crossentropy_forward};
use crate::kernels::dropout::{dropout_backward, dropout_forward, mix64, site_seed};
use crate::kernels::embedding::{token_embedding_backward, token_embedding_forward};
use crate::kernels::layernorm::{layernorm_backward, layernorm_forward};
use crate::kernels::matmul::{matmul_backward, matmul_forward};
use crate::kernels::precision::Precision;
use crate::model::layout::{ActLayout, ParamKind, ParamLayout, Regions};
use crate::model::lm::LanguageModel;
use crate::model::transformer::{Arch, ModelConfig, Transformer};
use crate::model::InitScheme;
use anyhow::{bail, ensure, Result};
use conv::ConvBlock;
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};
use recurrent::{Cell, Recurrent};
use std::ops::Range;

/// The layers between the embedding and the head.
enum Body {
    Recurrent(Vec<Recurrent>),
    Conv(Vec<ConvBlock>),
}

/// The final norm: gain, bias, and its per-row statistics (B·T).
struct FinalNorm {
    w: Range<usize>,
    b: Range<usize>,
    out: Range<usize>, // (B, T, W)
    mean: Range<usize>,
    rstd: Range<usize>,
}

/// Inputs of the last forward pass, kept for backward.
#[derive(Default)]
struct Last {
    b: usize,
    t: usize,
    train: bool,
    seed: u64,
    idx: Vec<u32>,     // (B, T)
    targets: Vec<i32>, // (B, T)
    has_targets: bool,
    loss_count: usize,
}

/// An LSTM, GRU or causal-CNN language model with its buffers, sized for up to `max_batch`
/// sequences of `block_size` tokens.
pub struct BaselineLm {
    pub config: ModelConfig,
    pub layout: ParamLayout,
    pub params: Vec<f32>,
    /// Gradients, same layout as `params` (empty for an inference-only model).
    pub grads: Vec<f32>,
    body: Body,
    wte: Range<usize>,     // (V, C)
    lm_head: Range<usize>, // (V, W): `wte` when tied
    ln_f: Option<FinalNorm>,
    /// Width W of the top layer's output: H for the recurrent models, C for the CNN.
    width: usize,
    acts: Vec<f32>,
    emb: Range<usize>,      // token embeddings (B, T, C)
    x0: Range<usize>,       // dropout(emb) (B, T, C)
    logits: Range<usize>,   // (B, T, V)
    losses: Range<usize>,   // (B·T)
    d_logits: Range<usize>, // (B, T, V)
    /// Gradient work buffers (B, T, max(C, H)) × 3, rotated through the layers.
    d: [Range<usize>; 3],
    scratch: Vec<f32>,
    max_batch: usize,
    last: Last,
    label_smoothing: f32,
    inference: bool,
}

/// What generation carries from token to token (one sequence): the recurrent state, or the
/// CNN's window of recent tokens.
pub struct GenState {
    /// LSTM / GRU: h of every layer (L, H); LSTM: c as well (L, H).
    h: Vec<f32>,
    c: Vec<f32>,
    /// The current input and output of a layer (max(C, H)), the final norm's output (W).
    x: Vec<f32>,
    y: Vec<f32>,
    normed: Vec<f32>,
    scratch: Vec<f32>,
    /// CNN: the last receptive-field tokens.
    window: Vec<u32>,
    logits: Vec<f32>, // (V)
    /// Tokens fed so far.
    pub len: usize,
}

impl BaselineLm {
    /// A model of `config` (`arch` lstm, gru or cnn) with zeroed parameters; `inference`: no
    /// gradients or gradient buffers.
    pub fn new(config: ModelConfig, max_batch: usize, inference: bool) -> Result<Self> {
        config.validate()?;
        ensure!(
            config.arch.is_baseline(),
            "model.arch = \"{}\" is a Transformer, not an LSTM, GRU or CNN language model",
            config.arch.name()
        );
        ensure!(max_batch > 0, "batch size must be positive");
        let (v, c, n) = (config.vocab_size, config.n_embd, max_batch * config.block_size);
        let mut l = ParamLayout::default();
        let mut al = ActLayout::default();
        let wte = l.push("wte.weight", &[v, c], ParamKind::Embedding);
        let emb = al.alloc(n * c);
        let x0 = al.alloc(n * c);
        let (body, width) = match config.arch {
            Arch::Lstm | Arch::Gru => {
                let cell = if config.arch == Arch::Lstm { Cell::Lstm } else { Cell::Gru };
                let h = config.hidden();
                let layers = (0..config.n_layer)
                    .map(|i| Recurrent::new(&mut l, &mut al, cell, i, if i == 0 { c } else { h }, h, n))
                    .collect();
                (Body::Recurrent(layers), h)
            }
            Arch::Cnn => {
                let act = config.elementwise_activation().expect("validate refuses swiglu");
                let blocks = (0..config.n_layer)
                    .map(|i| {
                        let shape = (c, config.taps(), config.dilation(i));
                        ConvBlock::new(&mut l, &mut al, i, shape, act, config.norm_eps, n)
                    })
                    .collect();
                (Body::Conv(blocks), c)
            }
            _ => unreachable!("checked above"),
        };
        let ln_f = config.final_norm.then(|| FinalNorm {
            w: l.push("ln_f.weight", &[width], ParamKind::Norm),
            b: l.push("ln_f.bias", &[width], ParamKind::Bias),
            out: al.alloc(n * width),
            mean: al.alloc(n),
            rstd: al.alloc(n),
        });
        let lm_head =
            if config.tie_embeddings { wte.clone() } else { l.push("lm_head.weight", &[v, width], ParamKind::Matrix) };
        let grad = |len: usize| if inference { 0 } else { len };
        let logits = al.alloc(n * v);
        let losses = al.alloc(n);
        let d_logits = al.alloc(grad(n * v));
        let wide = grad(n * c.max(width));
        let d = [al.alloc(wide), al.alloc(wide), al.alloc(wide)];
        let scratch_len = match &body {
            Body::Recurrent(layers) => layers.iter().map(|r| r.scratch_len(max_batch, config.block_size)).max(),
            Body::Conv(blocks) => blocks.iter().map(|b| b.scratch_len()).max(),
        }
        .unwrap_or(0);
        Ok(BaselineLm {
            params: vec![0.0; l.total],
            grads: vec![0.0; grad(l.total)],
            layout: l,
            body,
            wte,
            lm_head,
            ln_f,
            width,
            acts: vec![0.0; al.total],
            emb,
            x0,
            logits,
            losses,
            d_logits,
            d,
            scratch: vec![0.0; scratch_len],
            max_batch,
            last: Last { idx: vec![0; n], targets: vec![0; n], ..Last::default() },
            label_smoothing: 0.0,
            inference,
            config,
        })
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Backward of the last forward pass (with targets): the gradient of `scale` times the
    /// loss's mean (or, with `sum`, its sum) accumulates into `grads`.
    fn backward_impl(&mut self, sum: bool, loss_scale: f32) -> Result<()> {
        ensure!(!self.inference, "this model was built for inference: it has no gradients");
        let last = &self.last;
        ensure!(last.has_targets && last.b > 0, "backward() needs a forward pass with targets first");
        let (b, t, c, v, width) = (last.b, last.t, self.config.n_embd, self.config.vocab_size, self.width);
        let n = b * t;
        let scale = match last.loss_count {
            0 => 0.0,
            _ if sum => loss_scale,
            k => loss_scale / k as f32,
        };
        let p = if last.train { self.config.dropout } else { 0.0 };
        let eps = if last.train { self.label_smoothing } else { 0.0 };
        let w = &self.params;
        let g = Regions::new(&mut self.grads);
        let r = Regions::new(&mut self.acts);
        let wide = c.max(width);
        let d = |i: usize| r.mut_(&self.d[i % 3], n * wide);

        // Head: ∂L/∂logits → ∂L/∂(top layer output), in d[0].
        let logits = r.get(&self.logits, n * v);
        let d_logits = r.mut_(&self.d_logits, n * v);
        crossentropy_backward(d_logits, logits, &last.targets[..n], v, scale, eps);
        let top = match &self.body {
            Body::Recurrent(layers) => r.get(&layers[layers.len() - 1].dropped, n * width),
            Body::Conv(blocks) => r.get(&blocks[blocks.len() - 1].out, n * width),
        };
        let d_lm_head = g.mut_(&self.lm_head, self.lm_head.len());
        let (d_top, d_head_in) = (&mut d(0)[..n * width], &mut d(1)[..n * width]);
        match &self.ln_f {
            Some(f) => {
                let normed = r.get(&f.out, n * width);
                matmul_backward(d_head_in, d_lm_head, None, d_logits, normed, &w[self.lm_head.clone()], n, width, v);
                d_top.fill(0.0);
                let (mean, rstd) = (r.get(&f.mean, n), r.get(&f.rstd, n));
                let (dw, db) = (g.mut_(&f.w, width), g.mut_(&f.b, width));
                layernorm_backward(d_top, dw, Some(db), d_head_in, top, &w[f.w.clone()], mean, rstd, width);
            }
            None => matmul_backward(d_top, d_lm_head, None, d_logits, top, &w[self.lm_head.clone()], n, width, v),
        }

        // Body: ∂L/∂x0 ends in d[cur].
        let x0 = r.get(&self.x0, n * c);
        let mut cur = 0;
        match &self.body {
            Body::Recurrent(layers) => {
                for (i, layer) in layers.iter().enumerate().rev() {
                    let (h, input) = (layer.hidden, layer.input);
                    let x = if i == 0 { x0 } else { r.get(&layers[i - 1].dropped, n * input) };
                    let (d_dropped, d_out, dx) =
                        (&d(cur)[..n * h], &mut d(cur + 1)[..n * h], &mut d(cur + 2)[..n * input]);
                    let seed = site_seed(last.seed, 0, 1 + i as u64);
                    layer.backward(w, &g, &r, &mut self.scratch, (dx, d_out, d_dropped), x, (b, t), p, seed);
                    cur = (cur + 2) % 3;
                }
            }
            Body::Conv(blocks) => {
                for (i, block) in blocks.iter().enumerate().rev() {
                    let x = if i == 0 { x0 } else { r.get(&blocks[i - 1].out, n * c) };
                    let bufs = (&mut d(0)[..n * c], &mut d(1)[..n * c], &mut d(2)[..n * c]);
                    let seed = site_seed(last.seed, 0, 1 + i as u64);
                    block.backward(w, &g, &r, &mut self.scratch, bufs, x, (b, t), p, seed);
                }
            }
        }
        // Embedding dropout, then the scatter into the token rows.
        let d_emb = &mut d(cur + 1)[..n * c];
        dropout_backward(d_emb, &d(cur)[..n * c], p, site_seed(last.seed, 0, 0));
        token_embedding_backward(g.mut_(&self.wte, self.wte.len()), None, d_emb, &last.idx[..n], 1.0, t, c);
        Ok(())
    }

    /// A fresh generation state (empty context).
    pub fn gen_state(&self) -> GenState {
        let (c, v, width) = (self.config.n_embd, self.config.vocab_size, self.width);
        let (layers, scratch) = match &self.body {
            Body::Recurrent(layers) => (layers.len(), layers.iter().map(|l| l.step_scratch_len(1)).max().unwrap_or(0)),
            Body::Conv(_) => (0, 0),
        };
        GenState {
            h: vec![0.0; layers * width],
            c: vec![0.0; layers * width],
            x: vec![0.0; c.max(width)],
            y: vec![0.0; c.max(width)],
            normed: vec![0.0; width],
            scratch: vec![0.0; scratch],
            window: Vec::with_capacity(self.window_len()),
            logits: vec![0.0; v],
            len: 0,
        }
    }

    /// CNN: the tokens one output depends on, capped at `block_size`.
    fn window_len(&self) -> usize {
        match self.body {
            Body::Conv(_) => self.config.receptive_field().min(self.config.block_size),
            Body::Recurrent(_) => 0,
        }
    }

    /// Appends `token` to the sequence `state` holds and returns the logits of the next token
    /// (V): equal to the last row of [`BaselineLm::forward_lm`] over the whole sequence (for the
    /// CNN, over any window at least as long as its receptive field). The recurrent models
    /// advance their state by one step; no length limit applies to them.
    pub fn step<'s>(&mut self, state: &'s mut GenState, token: u32) -> Result<&'s [f32]> {
        let (c, v, width) = (self.config.n_embd, self.config.vocab_size, self.width);
        ensure!((token as usize) < v, "token id {token} is out of range for vocab_size {v}");
        state.len += 1;
        let layers = match &self.body {
            Body::Conv(_) => {
                let keep = self.window_len();
                if state.window.len() == keep {
                    state.window.remove(0);
                }
                state.window.push(token);
                let window = std::mem::take(&mut state.window);
                let t = window.len();
                let res = self.forward_lm(&window, None, 1, t, false, 0);
                state.window = window;
                res?;
                state.logits.copy_from_slice(&self.logits()[(t - 1) * v..t * v]);
                return Ok(&state.logits);
            }
            Body::Recurrent(layers) => layers,
        };
        let w = &self.params;
        state.x[..c].copy_from_slice(&w[self.wte.start + token as usize * c..][..c]);
        for (i, layer) in layers.iter().enumerate() {
            let h = &mut state.h[i * width..(i + 1) * width];
            let cs = &mut state.c[i * width..(i + 1) * width];
            layer.step(w, h, cs, &mut state.scratch, &state.x[..layer.input], 1);
            state.y[..width].copy_from_slice(h);
            std::mem::swap(&mut state.x, &mut state.y);
        }
        let top: &[f32] = match &self.ln_f {
            Some(f) => {
                let (mut mean, mut rstd) = ([0.0f32], [0.0f32]);
                let (gain, bias) = (&w[f.w.clone()], Some(&w[f.b.clone()]));
                let eps = self.config.norm_eps;
                layernorm_forward(&mut state.normed, &mut mean, &mut rstd, &state.x[..width], gain, bias, width, eps);
                &state.normed
            }
            None => &state.x[..width],
        };
        matmul_forward(&mut state.logits, top, &w[self.lm_head.clone()], None, 1, width, v);
        Ok(&state.logits)
    }
}

impl LanguageModel for BaselineLm {
    fn build(config: ModelConfig, max_batch: usize, inference: bool) -> Result<Self> {
        BaselineLm::new(config, max_batch, inference)
    }
    /// Initialisation: `crate::model::init`'s scheme for the embedding, the convolutions, the
    /// projections and the untied head; the recurrent weights and biases get PyTorch's
    /// `nn.LSTM`/`nn.GRU` default U(−1/√H, 1/√H) under every scheme (a 0.02-wide normal
    /// leaves the gates nearly constant, and zero biases are not what the recurrent layers
    /// are tuned for).
    fn init_with(&mut self, scheme: InitScheme, std: f32, seed: u64) {
        crate::model::init::init_params(&self.layout, &mut self.params, scheme, std, seed, self.config.n_layer);
        if let Body::Recurrent(layers) = &self.body {
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(mix64(seed ^ 0x5EED_4E4E));
            for layer in layers {
                let bound = 1.0 / (layer.hidden as f32).sqrt();
                let u = Uniform::new_inclusive(-bound, bound);
                for r in layer.param_ranges() {
                    self.params[r].iter_mut().for_each(|x| *x = u.sample(&mut rng));
                }
            }
        }
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }
    fn grads(&self) -> &[f32] {
        &self.grads
    }
    fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }
    fn params_and_grads(&mut self) -> (&mut [f32], &[f32]) {
        (&mut self.params, &self.grads)
    }
    fn forward_lm(
        &mut self,
        idx: &[u32],
        targets: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        ensure!(!(train && self.inference), "this model was built for inference: it cannot run a training pass");
        ensure!(b >= 1 && b <= self.max_batch, "batch {b} outside 1..={}", self.max_batch);
        let bs = self.config.block_size;
        ensure!(t >= 1 && t <= bs, "sequence length {t} outside 1..={bs} (block_size)");
        ensure!(idx.len() == b * t, "idx has {} tokens, expected B·T = {}", idx.len(), b * t);
        let v = self.config.vocab_size;
        if let Some(bad) = idx.iter().find(|&&x| x as usize >= v) {
            bail!("idx: token id {bad} is out of range for vocab_size {v}");
        }
        let n = b * t;
        self.last.has_targets = targets.is_some();
        if let Some(tg) = targets {
            ensure!(tg.len() == n, "targets have {} entries, expected {n}", tg.len());
            if let Some(bad) = tg.iter().find(|&&x| x >= v as i32 || x < -1) {
                bail!("target {bad} is out of range for {v} classes (use -1 to ignore)");
            }
            self.last.targets[..n].copy_from_slice(tg);
        }
        self.last.idx[..n].copy_from_slice(idx);
        (self.last.b, self.last.t, self.last.train, self.last.seed) = (b, t, train, dropout_seed);
        let p = if train { self.config.dropout } else { 0.0 };
        let (c, w) = (self.config.n_embd, &self.params);
        let r = Regions::new(&mut self.acts);
        let emb = r.mut_(&self.emb, n * c);
        token_embedding_forward(emb, idx, &w[self.wte.clone()], 1.0, None, t, c);
        let x0 = r.mut_(&self.x0, n * c);
        dropout_forward(x0, emb, p, site_seed(dropout_seed, 0, 0));
        let mut x: &[f32] = x0;
        match &self.body {
            Body::Recurrent(layers) => {
                for (i, layer) in layers.iter().enumerate() {
                    layer.forward(w, &r, &mut self.scratch, x, (b, t), p, site_seed(dropout_seed, 0, 1 + i as u64));
                    x = r.get(&layer.dropped, n * layer.hidden);
                }
            }
            Body::Conv(blocks) => {
                for (i, block) in blocks.iter().enumerate() {
                    block.forward(w, &r, &mut self.scratch, x, (b, t), p, site_seed(dropout_seed, 0, 1 + i as u64));
                    x = r.get(&block.out, n * c);
                }
            }
        }
        let width = self.width;
        if let Some(f) = &self.ln_f {
            let (out, mean, rstd) = (r.mut_(&f.out, n * width), r.mut_(&f.mean, n), r.mut_(&f.rstd, n));
            layernorm_forward(out, mean, rstd, x, &w[f.w.clone()], Some(&w[f.b.clone()]), width, self.config.norm_eps);
            x = out;
        }
        let logits = r.mut_(&self.logits, n * v);
        matmul_forward(logits, x, &w[self.lm_head.clone()], None, n, width, v);
        let Some(tg) = targets else { return Ok(None) };
        let eps = if train { self.label_smoothing } else { 0.0 };
        let (sum, count) = crossentropy_forward(r.mut_(&self.losses, n), logits, tg, v, eps);
        self.last.loss_count = count;
        Ok(Some(if count == 0 { 0.0 } else { (sum / count as f64) as f32 }))
    }

    /// Logits of the last forward pass (B, T, V).
    fn logits(&self) -> &[f32] {
        &self.acts[self.logits.start..self.logits.start + self.last.b * self.last.t * self.config.vocab_size]
    }

    fn loss_count(&self) -> usize {
        self.last.loss_count
    }
    fn backward_scaled(&mut self, loss_scale: f32) -> Result<()> {
        self.backward_impl(false, loss_scale)
    }
    fn backward_sum(&mut self, loss_scale: f32) -> Result<()> {
        self.backward_impl(true, loss_scale)
    }
    fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }
    fn set_label_smoothing(&mut self, eps: f32) {
        self.label_smoothing = eps;
    }
    fn set_precision(&mut self, p: Precision) -> Result<()> {
        ensure!(p == Precision::Fp32, "model.arch = \"{}\" runs in fp32 only", self.config.arch.name());
        Ok(())
    }
    fn set_first_sequence(&mut self, _first: usize) {
        // One process only: the training loop refuses data parallelism for the baselines.
    }
    fn as_transformer(&self) -> Option<&Transformer> {
        None
    }
    fn as_transformer_mut(&mut self) -> Option<&mut Transformer> {
        None
    }
}
