//! The Transformer family: decoder-only LM, encoder classifier and encoder-decoder, assembled
//! from one set of parts (see [`config::ModelConfig`] for every choice).
//!
//! ```text
//! decoder:          idx ─ Stack(causal) ─ lm_head ─ logits (B,T,V) ─ cross-entropy
//! encoder:          idx, mask ─ Stack(bidirectional) ─ pool ([CLS] or mean) ─ classifier ─ logits (B,K)
//! encoder_decoder:  src, src_mask ─ Stack(encoder) ─┐
//!                   tgt_in ─ Stack(causal + cross) ─┴─ lm_head ─ logits (B,T,V) ─ cross-entropy
//! ```
//!
//! Like [`crate::model::Gpt`], parameters, gradients and activations are flat buffers with
//! named ranges; parameter names follow nanoGPT for the decoder (`transformer.h.0.attn.c_attn.weight`)
//! and are listed in `docs/ARCHITECTURE.md` for the rest.

mod cache;
pub mod config;
mod layers;
mod probe;
mod stack;

pub use cache::{KvCache, LogitRows};
pub use config::{
    ActivationKind, Arch, AttentionKind, ModelConfig, NormKind, NormPosition, Pooling, Position, ScoreKind,
};
pub use probe::{ActKind, ActTensor, AttnProbs, BlockProbe};

use crate::kernels::{
    crossentropy::{crossentropy_smoothed_backward, crossentropy_smoothed_forward},
    precision::{matmul_lowp_scratch_len, round_into, Precision},
};
use crate::model::layout::{ActLayout, ParamKind, ParamLayout, Regions};
use anyhow::{bail, ensure, Result};
use layers::{Ctx, LowScratch, Lowp, Scratch};
use stack::{Stack, StackActs, StackKind};
use std::ops::Range;

/// The output layer.
#[derive(Clone, Debug)]
enum Head {
    /// logits = h·Wᵀ, W (V, C); possibly the token embedding.
    Lm { w: Range<usize> },
    /// logits = pool(h)·Wᵀ + b, W (K, C).
    Classifier { w: Range<usize>, b: Range<usize>, pooling: Pooling },
}

/// Model-level activations: logits, losses and the pooled encoder output.
#[derive(Clone, Debug)]
struct HeadActs {
    logits: Range<usize>,   // (N, V) or (B, K)
    losses: Range<usize>,   // (N) or (B)
    d_logits: Range<usize>, // like logits
    pooled: Range<usize>,   // (B, C)
    d_pooled: Range<usize>, // (B, C)
}

/// Inputs of the last forward pass, kept for backward.
#[derive(Clone, Debug, Default)]
struct Last {
    b: usize,
    t: usize,
    t_enc: usize,
    train: bool,
    dropout_seed: u64,
    /// Decoder (or encoder-only) tokens (B, T).
    idx: Vec<u32>,
    /// Encoder tokens (B, T_enc) of an encoder-decoder.
    src: Vec<u32>,
    /// Padding masks: encoder-only (B, T), encoder-decoder source (B, T_enc).
    mask: Vec<bool>,
    has_mask: bool,
    /// Targets (B, T) (LM, -1 = ignore) or labels (B) (classifier).
    targets: Vec<i32>,
    has_targets: bool,
    loss_count: usize,
    /// Whether the encoder activations hold the output of [`Transformer::encode`] for the
    /// current `b`, `t_enc`, `src` and `mask` (cleared by every full forward pass).
    encoded: bool,
    /// Gather buffers of [`Transformer::reorder_encoded`] (B, T_enc).
    gather_src: Vec<u32>,
    gather_mask: Vec<bool>,
}

/// Mixed-precision state: the rounded weights the linear layers read and their scratch.
struct LowState {
    p: Precision,
    /// `params` rounded to `p`, refreshed at the start of every forward pass.
    w: Vec<f32>,
    scratch: Vec<f32>,
    ranges: LowScratch,
}

impl LowState {
    /// Rounds the current parameters into the working copy.
    fn refresh(&mut self, params: &[f32]) {
        round_into(&mut self.w, params, self.p);
    }
}

pub struct Transformer {
    pub config: ModelConfig,
    pub layout: ParamLayout,
    /// All parameters (and BatchNorm running statistics), laid out by `layout`.
    pub params: Vec<f32>,
    /// Gradients, same layout as `params`.
    pub grads: Vec<f32>,
    /// Fixed tables: sinusoidal positions, ALiBi slopes.
    consts: Vec<f32>,
    /// The encoder (encoder and encoder_decoder archs).
    encoder: Option<Stack>,
    /// The decoder (decoder and encoder_decoder archs).
    decoder: Option<Stack>,
    head: Head,
    acts: Vec<f32>,
    enc_acts: Option<StackActs>,
    dec_acts: Option<StackActs>,
    head_acts: HeadActs,
    scratch: Scratch,
    max_batch: usize,
    last: Last,
    /// Label smoothing ε of the training loss (forward passes with `train = true`); evaluation
    /// always reports the plain cross-entropy.
    pub label_smoothing: f32,
    /// Reduced-precision numerics (None in fp32); see [`Transformer::set_precision`].
    low: Option<LowState>,
    /// Widest input and output of any linear layer below the head, for the low-precision scratch.
    widths: (usize, usize),
    /// Built by [`Transformer::new_inference`]: no gradients, activations shared by the blocks.
    inference: bool,
}

impl Transformer {
    /// A model with zeroed parameters and activation buffers for up to `max_batch` sequences of
    /// up to `block_size` tokens (encoder and decoder alike). Call [`Transformer::init`] or load
    /// weights next.
    pub fn new(config: ModelConfig, max_batch: usize) -> Result<Self> {
        Self::build(config, max_batch, false)
    }

    /// [`Transformer::new`] for inference only: no gradients, no backward buffers, and one set
    /// of activation buffers per sublayer kind shared by all blocks (a forward pass keeps
    /// nothing for a backward one). For a GPT-2-sized model this is the difference between
    /// the parameters plus one layer's activations and the parameters twice plus every layer's
    /// attention maps. Training passes, [`Transformer::backward`] and the per-layer probes
    /// ([`Transformer::activations`], [`Transformer::blocks`]) are not available.
    pub fn new_inference(config: ModelConfig, max_batch: usize) -> Result<Self> {
        Self::build(config, max_batch, true)
    }

    /// Whether the model was built by [`Transformer::new_inference`].
    pub fn is_inference(&self) -> bool {
        self.inference
    }

    fn build(config: ModelConfig, max_batch: usize, inference: bool) -> Result<Self> {
        config.validate()?;
        ensure!(max_batch > 0, "batch size must be positive");
        let cfg = &config;
        let (v, c, t) = (cfg.vocab_size, cfg.n_embd, cfg.block_size);
        let mut l = ParamLayout::default();
        let mut consts = Vec::new();
        let (encoder, decoder) = match cfg.arch {
            Arch::Decoder => {
                (None, Some(Stack::new(&mut l, &mut consts, cfg, "transformer", StackKind::Decoder, None, 0)))
            }
            Arch::Encoder => {
                (Some(Stack::new(&mut l, &mut consts, cfg, "transformer", StackKind::Encoder, None, 0)), None)
            }
            Arch::EncoderDecoder => {
                let enc = Stack::new(&mut l, &mut consts, cfg, "encoder", StackKind::Encoder, None, 0);
                let shared = cfg.share_embeddings.then(|| enc.wte.clone());
                let dec = Stack::new(&mut l, &mut consts, cfg, "decoder", StackKind::CrossDecoder, shared, 1);
                (Some(enc), Some(dec))
            }
        };
        let head = match (&decoder, cfg.arch) {
            (Some(d), _) => Head::Lm {
                w: if cfg.tie_embeddings {
                    d.wte.clone()
                } else {
                    l.push("lm_head.weight", &[v, c], ParamKind::Matrix)
                },
            },
            (None, _) => Head::Classifier {
                w: l.push("classifier.weight", &[cfg.num_classes, c], ParamKind::Matrix),
                b: l.push("classifier.bias", &[cfg.num_classes], ParamKind::Bias),
                pooling: cfg.pooling,
            },
        };

        let mut al = ActLayout::default();
        let n = max_batch * t;
        let enc_acts = encoder.as_ref().map(|s| s.acts(&mut al, max_batch, t, t, inference));
        let dec_acts = decoder.as_ref().map(|s| s.acts(&mut al, max_batch, t, t, inference));
        let out_width = if decoder.is_some() { n * v } else { max_batch * cfg.num_classes };
        // Gradient buffers only when training is possible.
        let grad = |len: usize| if inference { 0 } else { len };
        let head_acts = HeadActs {
            logits: al.alloc(out_width),
            losses: al.alloc(n),
            d_logits: al.alloc(grad(out_width)),
            pooled: al.alloc(max_batch * c),
            d_pooled: al.alloc(grad(max_batch * c)),
        };
        let stacks = || encoder.iter().chain(decoder.iter());
        let att = stacks().map(|s| s.attention_scratch(max_batch, t, t, inference)).max().unwrap_or(0);
        let wide = stacks().map(|s| s.widest(cfg)).max().unwrap_or(0).max(2 * cfg.kv_heads() * cfg.head_size());
        let scratch = Scratch {
            // The forward pass uses d_fin (gathers) and d_att (attention-kernel scratch).
            d_fin: al.alloc(n * c),
            d_sum: al.alloc(grad(n * c)),
            d_branch: al.alloc(grad(n * c)),
            d_wide: al.alloc(grad(n * wide)),
            d_wide2: al.alloc(grad(n * wide)),
            d_y: al.alloc(grad(n * c)),
            d_att: al.alloc(att),
            d_enc_part: al.alloc(grad(if cfg.arch == Arch::EncoderDecoder { n * c } else { 0 })),
        };
        let mut params = vec![0.0; l.total];
        for s in stacks() {
            s.init_fixed(&mut params);
        }
        Ok(Transformer {
            grads: vec![0.0; if inference { 0 } else { l.total }],
            inference,
            params,
            layout: l,
            consts,
            acts: vec![0.0; al.total],
            encoder,
            decoder,
            head,
            enc_acts,
            dec_acts,
            head_acts,
            scratch,
            max_batch,
            last: Last {
                idx: vec![0; n],
                src: vec![0; n],
                mask: vec![false; n],
                targets: vec![0; n],
                gather_src: vec![0; n],
                gather_mask: vec![false; n],
                ..Last::default()
            },
            label_smoothing: 0.0,
            low: None,
            widths: (c.max(wide).max(cfg.ffn()), c.max(wide)),
            config,
        })
    }

    /// Runs every linear layer (the head included) as autocast does in `p`: inputs and weights
    /// rounded to bf16/f16, f32 accumulation, the output and the gradients flowing back
    /// through the layer rounded too (see `kernels::precision`). Everything else — embeddings,
    /// norms, attention softmax, the loss, the gradients' f32 accumulation and the master
    /// weights in `params` — stays f32. Allocates the rounded weight copy and the scratch here,
    /// once; `Precision::Fp32` frees them.
    pub fn set_precision(&mut self, p: Precision) {
        if !p.is_reduced() {
            self.low = None;
            return;
        }
        let n = self.max_batch * self.config.block_size;
        let (win, wout) = self.widths;
        let head_out = self.config.vocab_size.max(self.config.num_classes);
        let biggest = self.layout.tensors.iter().map(|t| t.numel()).max().unwrap_or(0);
        let mut al = ActLayout::default();
        let ranges = LowScratch {
            x: al.alloc(n * win),
            dout: al.alloc(n * wout),
            bwd: al.alloc(matmul_lowp_scratch_len(n, win, 0) + biggest + wout.max(head_out)),
        };
        self.low = Some(LowState { p, w: vec![0.0; self.layout.total], scratch: vec![0.0; al.total], ranges });
    }

    /// The precision of the linear layers.
    pub fn precision(&self) -> Precision {
        self.low.as_ref().map_or(Precision::Fp32, |l| l.p)
    }

    pub fn num_params(&self) -> usize {
        self.layout.tensors.iter().filter(|t| t.kind != ParamKind::Buffer).map(|t| t.numel()).sum()
    }

    /// Bytes of the preallocated buffers: parameters, gradients, activations (+ fixed tables).
    pub fn buffer_bytes(&self) -> usize {
        4 * (self.params.len() + self.grads.len() + self.acts.len() + self.consts.len())
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// GPT-2 initialisation: N(0, 0.02) for matrices and embeddings, N(0, 0.02/√(2·layers))
    /// for the residual output projections (`c_proj`), zero biases, unit norm gains; BatchNorm
    /// running variance 1, cosine temperatures τ = 10.
    pub fn init(&mut self, seed: u64) {
        self.init_with(crate::model::InitScheme::Gpt2, 0.02, seed);
    }

    /// Initialisation with any scheme of [`crate::model::init`] (normal draws with `std`), then
    /// the fixed starting values every scheme shares: T5 biases 0, BatchNorm running variance
    /// 1, cosine temperatures τ = 10.
    pub fn init_with(&mut self, scheme: crate::model::InitScheme, std: f32, seed: u64) {
        let layers = self.encoder.iter().chain(self.decoder.iter()).map(|s| s.n_blocks()).sum::<usize>();
        crate::model::init::init_params(&self.layout, &mut self.params, scheme, std, seed, layers);
        // T5's relative biases start at zero (no preference for any distance).
        for t in self.layout.tensors.iter().filter(|t| t.name.ends_with("rel_bias.weight")) {
            self.params[t.range()].fill(0.0);
        }
        for s in self.encoder.iter().chain(self.decoder.iter()) {
            s.init_fixed(&mut self.params);
        }
    }

    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    fn check_tokens(&self, what: &str, ids: &[u32]) -> Result<()> {
        let v = self.config.vocab_size;
        if let Some(bad) = ids.iter().find(|&&x| x as usize >= v) {
            bail!("{what}: token id {bad} is out of range for vocab_size {v}");
        }
        Ok(())
    }

    fn check_shape(&self, b: usize, t: usize, what: &str) -> Result<()> {
        ensure!(b >= 1 && b <= self.max_batch, "batch {b} outside 1..={}", self.max_batch);
        ensure!(
            t >= 1 && t <= self.config.block_size,
            "{what} length {t} outside 1..={} (block_size)",
            self.config.block_size
        );
        Ok(())
    }

    /// Decoder-only LM: forward over `idx` (B, T); with `targets` (B, T) returns the mean
    /// cross-entropy over targets that are not -1.
    pub fn forward_lm(
        &mut self,
        idx: &[u32],
        targets: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        ensure!(self.config.arch == Arch::Decoder, "forward_lm needs arch = \"decoder\"");
        self.check_train(train)?;
        self.check_shape(b, t, "sequence")?;
        ensure!(idx.len() == b * t, "idx has {} tokens, expected B·T = {}", idx.len(), b * t);
        self.check_tokens("idx", idx)?;
        self.set_targets(targets, b * t, self.config.vocab_size)?;
        self.begin(b, t, t, train, dropout_seed);
        self.last.idx[..b * t].copy_from_slice(idx);
        self.last.has_mask = false;
        self.run_forward()
    }

    /// Encoder classifier: forward over `idx` (B, T) with `mask` (B, T) (true = real token;
    /// None = no padding); with `labels` (B) returns the mean cross-entropy.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_classify(
        &mut self,
        idx: &[u32],
        mask: Option<&[bool]>,
        labels: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        ensure!(self.config.arch == Arch::Encoder, "forward_classify needs arch = \"encoder\"");
        self.check_train(train)?;
        self.check_shape(b, t, "sequence")?;
        ensure!(idx.len() == b * t, "idx has {} tokens, expected B·T = {}", idx.len(), b * t);
        self.check_tokens("idx", idx)?;
        self.set_targets(labels, b, self.config.num_classes)?;
        self.begin(b, t, t, train, dropout_seed);
        self.last.idx[..b * t].copy_from_slice(idx);
        self.set_mask(mask, b, t)?;
        self.run_forward()
    }

    /// Encoder-decoder: forward over `src` (B, S) with `src_mask` (B, S) and the decoder input
    /// `tgt_in` (B, T); with `tgt_out` (B, T) returns the mean cross-entropy over targets that
    /// are not -1.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_seq2seq(
        &mut self,
        src: &[u32],
        src_mask: Option<&[bool]>,
        tgt_in: &[u32],
        tgt_out: Option<&[i32]>,
        b: usize,
        s: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        ensure!(self.config.arch == Arch::EncoderDecoder, "forward_seq2seq needs arch = \"encoder_decoder\"");
        self.check_train(train)?;
        self.check_shape(b, s, "source")?;
        self.check_shape(b, t, "target")?;
        ensure!(src.len() == b * s, "src has {} tokens, expected B·S = {}", src.len(), b * s);
        ensure!(tgt_in.len() == b * t, "tgt_in has {} tokens, expected B·T = {}", tgt_in.len(), b * t);
        self.check_tokens("src", src)?;
        self.check_tokens("tgt_in", tgt_in)?;
        self.set_targets(tgt_out, b * t, self.config.vocab_size)?;
        self.begin(b, t, s, train, dropout_seed);
        self.last.src[..b * s].copy_from_slice(src);
        self.last.idx[..b * t].copy_from_slice(tgt_in);
        self.set_mask(src_mask, b, s)?;
        self.run_forward()
    }

    fn check_train(&self, train: bool) -> Result<()> {
        ensure!(
            !(train && self.inference),
            "this model was built for inference (Transformer::new_inference): it cannot run a training pass"
        );
        Ok(())
    }

    fn begin(&mut self, b: usize, t: usize, t_enc: usize, train: bool, seed: u64) {
        let l = &mut self.last;
        (l.b, l.t, l.t_enc, l.train, l.dropout_seed) = (b, t, t_enc, train, seed);
        l.encoded = false;
    }

    /// Encoder-decoder inference, step 1 of encode-once / decode-many: runs only the encoder
    /// (evaluation mode, no dropout) over `src` (B, S) with `src_mask` (B, S) (true = real
    /// token; None = no padding) and keeps its output in the activation buffers for
    /// [`Transformer::decode`]. Any later `forward_*` call overwrites it.
    pub fn encode(&mut self, src: &[u32], src_mask: Option<&[bool]>, b: usize, s: usize) -> Result<()> {
        ensure!(self.config.arch == Arch::EncoderDecoder, "encode needs arch = \"encoder_decoder\"");
        self.check_shape(b, s, "source")?;
        ensure!(src.len() == b * s, "src has {} tokens, expected B·S = {}", src.len(), b * s);
        self.check_tokens("src", src)?;
        // A failed call below must not leave an earlier encoding usable with changed inputs.
        self.last.encoded = false;
        self.set_mask(src_mask, b, s)?;
        // t = 0 until the first decode: logits() and hidden() are empty, not stale.
        self.begin(b, 0, s, false, 0);
        self.last.has_targets = false;
        self.last.src[..b * s].copy_from_slice(src);
        if let Some(l) = &mut self.low {
            l.refresh(&self.params);
        }
        let last = &self.last;
        let (enc, ea) = (self.encoder.as_ref().unwrap(), self.enc_acts.as_ref().unwrap());
        let w = Regions::new(&mut self.params);
        let g = Regions::new(&mut self.grads);
        let r = Regions::new(&mut self.acts);
        let low_views = self.low.as_mut().map(low_regions);
        let low = lowp(&low_views);
        let mask = last.has_mask.then(|| &last.mask[..b * s]);
        let cxe = ctx(&w, &g, &r, &self.consts, &self.scratch, last, s, mask, None, low);
        enc.forward(&cxe, ea, &last.src[..b * s], None);
        self.last.encoded = true;
        Ok(())
    }

    /// Encoder-decoder inference, step 2 (repeatable): runs only the decoder over `tgt_in`
    /// (B, T), cross-attending to the output kept by the last [`Transformer::encode`] (row `i`
    /// of `tgt_in` reads encoded row `i`; `b` must be the encoded batch size), and returns the
    /// logits (B, T, V). Bit-identical to the logits of [`Transformer::forward_seq2seq`] on the
    /// same source and `tgt_in` in evaluation mode: the same kernels run on the same buffers.
    pub fn decode(&mut self, tgt_in: &[u32], b: usize, t: usize) -> Result<&[f32]> {
        ensure!(self.config.arch == Arch::EncoderDecoder, "decode needs arch = \"encoder_decoder\"");
        ensure!(self.last.encoded, "decode() needs encode() first (a forward pass discards the encoder output)");
        ensure!(b == self.last.b, "decode with batch {b}, but {} rows are encoded", self.last.b);
        self.check_shape(b, t, "target")?;
        ensure!(tgt_in.len() == b * t, "tgt_in has {} tokens, expected B·T = {}", tgt_in.len(), b * t);
        self.check_tokens("tgt_in", tgt_in)?;
        self.last.t = t;
        self.last.idx[..b * t].copy_from_slice(tgt_in);
        self.run_forward_from(false)?;
        Ok(self.logits())
    }

    /// Rearranges the rows kept by [`Transformer::encode`]: new row `i` is old row `rows[i]`,
    /// and the batch size becomes `rows.len()` (rows may repeat or be dropped). Beam search
    /// encodes each sentence once, then repeats its row once per beam and drops the rows of
    /// finished sentences, instead of running the encoder on `beam` copies. Copies are exact,
    /// so decoding a gathered row equals decoding the original. Allocates nothing.
    pub fn reorder_encoded(&mut self, rows: &[usize]) -> Result<()> {
        ensure!(self.last.encoded, "reorder_encoded() needs encode() first");
        let (old_b, s, c) = (self.last.b, self.last.t_enc, self.config.n_embd);
        ensure!(
            !rows.is_empty() && rows.len() <= self.max_batch,
            "reorder_encoded: {} rows outside 1..={}",
            rows.len(),
            self.max_batch
        );
        if let Some(bad) = rows.iter().find(|&&r| r >= old_b) {
            bail!("reorder_encoded: row {bad} out of range for {old_b} encoded rows");
        }
        let nb = rows.len();
        let out = self.encoder.as_ref().unwrap().output_range(self.enc_acts.as_ref().unwrap()).start;
        // Gather into the backward scratch (free between passes, (max_batch·block_size, C)
        // so large enough), then copy back; rows may repeat, so in place would overwrite.
        let tmp = self.scratch.d_fin.start;
        let row = s * c;
        for (i, &r) in rows.iter().enumerate() {
            self.acts.copy_within(out + r * row..out + (r + 1) * row, tmp + i * row);
        }
        self.acts.copy_within(tmp..tmp + nb * row, out);
        // Source tokens and mask follow their rows.
        let last = &mut self.last;
        for (i, &r) in rows.iter().enumerate() {
            last.gather_src[i * s..(i + 1) * s].copy_from_slice(&last.src[r * s..(r + 1) * s]);
            last.gather_mask[i * s..(i + 1) * s].copy_from_slice(&last.mask[r * s..(r + 1) * s]);
        }
        last.src[..nb * s].copy_from_slice(&last.gather_src[..nb * s]);
        last.mask[..nb * s].copy_from_slice(&last.gather_mask[..nb * s]);
        last.b = nb;
        last.t = 0;
        Ok(())
    }

    fn set_targets(&mut self, targets: Option<&[i32]>, len: usize, classes: usize) -> Result<()> {
        self.last.has_targets = targets.is_some();
        if let Some(tg) = targets {
            ensure!(tg.len() == len, "targets have {} entries, expected {len}", tg.len());
            if let Some(bad) = tg.iter().find(|&&x| x >= classes as i32 || x < -1) {
                bail!("target {bad} is out of range for {classes} classes (use -1 to ignore)");
            }
            self.last.targets[..len].copy_from_slice(tg);
        }
        Ok(())
    }

    fn set_mask(&mut self, mask: Option<&[bool]>, b: usize, t: usize) -> Result<()> {
        self.last.has_mask = mask.is_some();
        if let Some(m) = mask {
            ensure!(m.len() == b * t, "mask has {} entries, expected {}", m.len(), b * t);
            self.last.mask[..b * t].copy_from_slice(m);
        }
        Ok(())
    }

    /// Runs the forward pass on the inputs stored in `self.last`.
    fn run_forward(&mut self) -> Result<Option<f32>> {
        self.run_forward_from(true)
    }

    /// The forward pass; with `run_encoder` false, an encoder-decoder reuses the encoder
    /// output already in the activations ([`Transformer::decode`]).
    fn run_forward_from(&mut self, run_encoder: bool) -> Result<Option<f32>> {
        if let Some(l) = &mut self.low {
            l.refresh(&self.params);
        }
        let last = &self.last;
        let (b, t, te) = (last.b, last.t, last.t_enc);
        let w = Regions::new(&mut self.params);
        let g = Regions::new(&mut self.grads);
        let r = Regions::new(&mut self.acts);
        let low_views = self.low.as_mut().map(low_regions);
        let low = lowp(&low_views);
        let mask = last.has_mask.then(|| &last.mask[..b * te]);
        let cx =
            |t, self_mask, enc_mask| ctx(&w, &g, &r, &self.consts, &self.scratch, last, t, self_mask, enc_mask, low);
        let c = self.config.n_embd;
        let eps = if last.train { self.label_smoothing } else { 0.0 };
        // The stack whose output feeds the head.
        let (top_cx, top, top_acts) = match (&self.encoder, &self.decoder) {
            (Some(enc), None) => {
                let ea = self.enc_acts.as_ref().unwrap();
                let cxe = cx(t, mask, None);
                enc.forward(&cxe, ea, &last.idx[..b * t], None);
                (cxe, enc, ea)
            }
            (None, Some(dec)) => {
                let da = self.dec_acts.as_ref().unwrap();
                let cxd = cx(t, None, None);
                dec.forward(&cxd, da, &last.idx[..b * t], None);
                (cxd, dec, da)
            }
            (Some(enc), Some(dec)) => {
                let (ea, da) = (self.enc_acts.as_ref().unwrap(), self.dec_acts.as_ref().unwrap());
                let cxe = cx(te, mask, None);
                if run_encoder {
                    enc.forward(&cxe, ea, &last.src[..b * te], None);
                }
                let enc_out = enc.output(&cxe, ea);
                let cxd = cx(t, None, mask);
                dec.forward(&cxd, da, &last.idx[..b * t], Some(enc_out));
                (cxd, dec, da)
            }
            (None, None) => unreachable!("a model has at least one stack"),
        };
        let h = top.output(&top_cx, top_acts);
        let ha = &self.head_acts;
        let (sum, count) = match &self.head {
            Head::Lm { w: hw } => {
                let (n, v) = (b * t, self.config.vocab_size);
                let logits = r.mut_(&ha.logits, n * v);
                top_cx.linear_forward(logits, h, hw, &None, n, c, v);
                if !last.has_targets {
                    return Ok(None);
                }
                crossentropy_smoothed_forward(r.mut_(&ha.losses, n), logits, &last.targets[..n], v, eps)
            }
            Head::Classifier { w: hw, b: hb, pooling } => {
                let k = self.config.num_classes;
                let pooled = r.mut_(&ha.pooled, b * c);
                pool_forward(pooled, h, mask.filter(|_| *pooling == Pooling::Mean), *pooling, b, t, c);
                let logits = r.mut_(&ha.logits, b * k);
                top_cx.linear_forward(logits, pooled, hw, &Some(hb.clone()), b, c, k);
                if !last.has_targets {
                    return Ok(None);
                }
                crossentropy_smoothed_forward(r.mut_(&ha.losses, b), logits, &last.targets[..b], k, eps)
            }
        };
        self.last.loss_count = count;
        Ok(Some(if count == 0 { 0.0 } else { (sum / count as f64) as f32 }))
    }

    /// Output of the top stack of the last forward pass (B, T, C), before the head: the
    /// decoder's for LMs, the encoder's for the classifier (token embeddings for `embed`).
    pub fn hidden(&self) -> &[f32] {
        let (top, acts) = top_stack(&self.encoder, &self.decoder, &self.enc_acts, &self.dec_acts);
        let len = self.last.b * self.last.t * self.config.n_embd;
        let start = top.output_range(acts).start;
        &self.acts[start..start + len]
    }

    /// Logits of the last forward pass: (B, T, V) for LMs, (B, K) for the classifier.
    pub fn logits(&self) -> &[f32] {
        let len = match self.head {
            Head::Lm { .. } => self.last.b * self.last.t * self.config.vocab_size,
            Head::Classifier { .. } => self.last.b * self.config.num_classes,
        };
        &self.acts[self.head_acts.logits.start..self.head_acts.logits.start + len]
    }

    /// Backward pass of the last forward pass (which must have had targets): accumulates the
    /// gradient of the mean loss into `self.grads`. Call [`Transformer::zero_grad`] first.
    pub fn backward(&mut self) -> Result<()> {
        self.backward_impl(false, 1.0)
    }

    /// Number of targets the loss of the last forward pass averaged over (non-ignored tokens
    /// or examples).
    pub fn loss_count(&self) -> usize {
        self.last.loss_count
    }

    /// [`Transformer::backward`] for the loss multiplied by `loss_scale`: the gradient of the
    /// logits is scaled before anything is rounded, so that small gradients survive f16
    /// (dynamic loss scaling; the caller divides the parameter gradients by `loss_scale`).
    pub fn backward_scaled(&mut self, loss_scale: f32) -> Result<()> {
        self.backward_impl(false, loss_scale)
    }

    /// Backward of `loss_scale` times the last loss's *sum* over its targets (not its mean),
    /// for gradient accumulation: micro-batches backpropagated this way, then divided by their
    /// total target count, give the gradient of the mean over all of them.
    pub fn backward_sum(&mut self, loss_scale: f32) -> Result<()> {
        self.backward_impl(true, loss_scale)
    }

    fn backward_impl(&mut self, sum: bool, loss_scale: f32) -> Result<()> {
        ensure!(
            !self.inference,
            "this model was built for inference (Transformer::new_inference): it has no gradients"
        );
        ensure!(self.last.has_targets && self.last.b > 0, "backward() needs a forward pass with targets first");
        let last = &self.last;
        let (b, t, te) = (last.b, last.t, last.t_enc);
        let c = self.config.n_embd;
        let w = Regions::new(&mut self.params);
        let g = Regions::new(&mut self.grads);
        let r = Regions::new(&mut self.acts);
        let low_views = self.low.as_mut().map(low_regions);
        let low = lowp(&low_views);
        let mask = last.has_mask.then(|| &last.mask[..b * te]);
        let cx =
            |t, self_mask, enc_mask| ctx(&w, &g, &r, &self.consts, &self.scratch, last, t, self_mask, enc_mask, low);
        let ha = &self.head_acts;
        let eps = if last.train { self.label_smoothing } else { 0.0 };
        let scale = match last.loss_count {
            0 => 0.0,
            _ if sum => loss_scale,
            n => loss_scale / n as f32,
        };
        // Head: d_logits → ∂L/∂(top stack output), written into that stack's d_out.
        let (top, top_acts) = top_stack(&self.encoder, &self.decoder, &self.enc_acts, &self.dec_acts);
        // The source mask is the encoder's self-attention mask, or the decoder's cross mask.
        let top_cx = if self.decoder.is_some() { cx(t, None, mask) } else { cx(t, mask, None) };
        let h = top.output(&top_cx, top_acts);
        let d_h = r.mut_(&top_acts.d_out, b * t * c);
        match &self.head {
            Head::Lm { w: hw } => {
                let (n, v) = (b * t, self.config.vocab_size);
                let d_logits = r.mut_(&ha.d_logits, n * v);
                crossentropy_smoothed_backward(d_logits, r.get(&ha.logits, n * v), &last.targets[..n], v, scale, eps);
                top_cx.linear_backward_owned(d_h, hw, &None, d_logits, h, n, c, v);
            }
            Head::Classifier { w: hw, b: hb, pooling } => {
                let k = self.config.num_classes;
                let d_logits = r.mut_(&ha.d_logits, b * k);
                crossentropy_smoothed_backward(d_logits, r.get(&ha.logits, b * k), &last.targets[..b], k, scale, eps);
                let d_pooled = r.mut_(&ha.d_pooled, b * c);
                let pooled = r.get(&ha.pooled, b * c);
                top_cx.linear_backward_owned(d_pooled, hw, &Some(hb.clone()), d_logits, pooled, b, c, k);
                pool_backward(d_h, d_pooled, mask.filter(|_| *pooling == Pooling::Mean), *pooling, b, t, c);
            }
        }
        match (&self.encoder, &self.decoder) {
            (Some(enc), None) => enc.backward(&top_cx, top_acts, &last.idx[..b * t], None),
            (None, Some(dec)) => dec.backward(&top_cx, top_acts, &last.idx[..b * t], None),
            (Some(enc), Some(dec)) => {
                let ea = self.enc_acts.as_ref().unwrap();
                let cxe = cx(te, mask, None);
                let enc_out = enc.output(&cxe, ea);
                let d_enc = r.mut_(&ea.d_out, b * te * c);
                d_enc.fill(0.0);
                dec.backward(&top_cx, top_acts, &last.idx[..b * t], Some((enc_out, d_enc)));
                enc.backward(&cxe, ea, &last.src[..b * te], None);
            }
            (None, None) => unreachable!(),
        }
        Ok(())
    }

    /// Names and values of the parameters (and buffers), in layout order.
    pub fn named_params(&self) -> impl Iterator<Item = (&str, &[f32])> {
        self.layout.tensors.iter().map(|t| (t.name.as_str(), &self.params[t.range()]))
    }
}

/// The stack whose output feeds the head (the decoder when there is one) and its activations.
fn top_stack<'a>(
    encoder: &'a Option<Stack>,
    decoder: &'a Option<Stack>,
    enc_acts: &'a Option<StackActs>,
    dec_acts: &'a Option<StackActs>,
) -> (&'a Stack, &'a StackActs) {
    match (encoder, decoder, enc_acts, dec_acts) {
        (_, Some(d), _, Some(a)) => (d, a),
        (Some(e), None, Some(a), _) => (e, a),
        _ => unreachable!("a model has at least one stack, with its activations"),
    }
}

/// Views of the mixed-precision buffers for one pass: (precision, rounded weights, scratch).
type LowViews<'a> = (Precision, Regions<'a>, Regions<'a>, &'a LowScratch);

fn low_regions(l: &mut LowState) -> LowViews<'_> {
    (l.p, Regions::new(&mut l.w), Regions::new(&mut l.scratch), &l.ranges)
}

fn lowp<'a>(views: &'a Option<LowViews<'a>>) -> Option<Lowp<'a>> {
    views.as_ref().map(|(p, w, s, ranges)| Lowp { p: *p, w, s, ranges })
}

/// The context of one stack's pass over the last forward's batch.
#[allow(clippy::too_many_arguments)]
fn ctx<'a>(
    w: &'a Regions<'a>,
    g: &'a Regions<'a>,
    r: &'a Regions<'a>,
    consts: &'a [f32],
    scratch: &'a Scratch,
    last: &Last,
    t: usize,
    self_mask: Option<&'a [bool]>,
    enc_mask: Option<&'a [bool]>,
    low: Option<Lowp<'a>>,
) -> Ctx<'a> {
    Ctx {
        w,
        g,
        r,
        consts,
        scratch,
        b: last.b,
        t,
        t_enc: last.t_enc,
        train: last.train,
        dropout_seed: last.dropout_seed,
        self_mask,
        enc_mask,
        low,
        cache: None,
    }
}

/// pooled (B, C) from h (B, T, C): the first position, or the mean over positions where `mask`
/// (B, T) is true (all positions without a mask).
fn pool_forward(pooled: &mut [f32], h: &[f32], mask: Option<&[bool]>, pooling: Pooling, b: usize, t: usize, c: usize) {
    for bi in 0..b {
        let out = &mut pooled[bi * c..(bi + 1) * c];
        match pooling {
            Pooling::Cls => out.copy_from_slice(&h[bi * t * c..bi * t * c + c]),
            Pooling::Mean => {
                out.fill(0.0);
                let mut count = 0usize;
                for ti in 0..t {
                    if mask.is_none_or(|m| m[bi * t + ti]) {
                        count += 1;
                        let row = &h[(bi * t + ti) * c..(bi * t + ti + 1) * c];
                        out.iter_mut().zip(row).for_each(|(o, &x)| *o += x);
                    }
                }
                let inv = 1.0 / count.max(1) as f32;
                out.iter_mut().for_each(|o| *o *= inv);
            }
        }
    }
}

/// d_h (B, T, C) = ∂L/∂h given d_pooled (B, C) (overwritten).
fn pool_backward(
    d_h: &mut [f32],
    d_pooled: &[f32],
    mask: Option<&[bool]>,
    pooling: Pooling,
    b: usize,
    t: usize,
    c: usize,
) {
    d_h[..b * t * c].fill(0.0);
    for bi in 0..b {
        let dp = &d_pooled[bi * c..(bi + 1) * c];
        match pooling {
            Pooling::Cls => d_h[bi * t * c..bi * t * c + c].copy_from_slice(dp),
            Pooling::Mean => {
                let live = |ti: usize| mask.is_none_or(|m| m[bi * t + ti]);
                let count = (0..t).filter(|&ti| live(ti)).count().max(1);
                for ti in (0..t).filter(|&ti| live(ti)) {
                    let row = &mut d_h[(bi * t + ti) * c..(bi * t + ti + 1) * c];
                    row.iter_mut().zip(dp).for_each(|(o, &d)| *o = d / count as f32);
                }
            }
        }
    }
}
