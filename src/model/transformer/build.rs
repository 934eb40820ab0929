//! Building a [`Transformer`]: the parameter layout of its stacks and head, the activation
//! buffers for a maximum batch, and initialisation.

use super::config::{Arch, ModelConfig};
use super::head::Head;
use super::layers::Scratch;
use super::stack::{Stack, StackKind};
use super::{Last, Transformer};
use crate::model::layout::{ActLayout, ParamKind, ParamLayout};
use anyhow::{ensure, Result};

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

    /// The sizes of every buffer [`Transformer::new`] (or, with `inference`,
    /// [`Transformer::new_inference`]) would allocate for `config` and `max_batch`, without
    /// allocating them: the parameter layout, the activation and gradient element counts, the
    /// low-precision working copy of `set_precision` and a KV cache. Accounting
    /// (`crate::inspect::account`) reads its memory figures from here, so they are the model's.
    pub fn buffer_sizes(config: &ModelConfig, max_batch: usize, inference: bool) -> Result<BufferSizes> {
        let plan = Plan::new(config, max_batch, inference)?;
        let (win, wout) = plan.widths;
        let n = max_batch * config.block_size;
        let head_out = config.vocab_size.max(config.num_classes);
        let biggest = plan.layout.tensors.iter().map(|t| t.numel()).max().unwrap_or(0);
        let kv_cache = match &plan.decoder {
            Some(dec) => {
                let scratch =
                    super::cache::cached_attention_scratch(dec, config.block_size, config.block_size, max_batch);
                Some(super::cache::KvCacheSizes::of(config, max_batch, scratch))
            }
            None => None,
        };
        Ok(BufferSizes {
            params: plan.layout.total,
            grads: if inference { 0 } else { plan.layout.total },
            acts: plan.acts_total,
            consts: plan.consts.len(),
            low_precision: plan.layout.total + super::precision::low_scratch(n, win, wout, head_out, biggest).1,
            kv_cache,
            layout: plan.layout,
        })
    }

    fn build(config: ModelConfig, max_batch: usize, inference: bool) -> Result<Self> {
        let Plan {
            layout: l,
            consts,
            encoder,
            decoder,
            head,
            acts_total,
            enc_acts,
            dec_acts,
            head_acts,
            scratch,
            widths,
        } = Plan::new(&config, max_batch, inference)?;
        let n = max_batch * config.block_size;
        let stacks = || encoder.iter().chain(decoder.iter());
        let mut params = vec![0.0; l.total];
        for s in stacks() {
            s.init_fixed(&mut params);
        }
        Ok(Transformer {
            grads: vec![0.0; if inference { 0 } else { l.total }],
            inference,
            quant: None,
            observer: None,
            teacher: None,
            sparsity: None,
            frozen: Vec::new(),
            params,
            layout: l,
            consts,
            acts: vec![0.0; acts_total],
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
                span_mask: vec![false; n],
                targets: vec![0; n],
                gather_src: vec![0; n],
                gather_mask: vec![false; n],
                ..Last::default()
            },
            label_smoothing: 0.0,
            low: None,
            widths,
            first_sequence: 0,
            tp_reduce: None,
            ablation: None,
            input_alpha: None,
            input_grad: None,
            lora: None,
            config,
        })
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

    /// Data-parallel training: the next batches are sequences `first..first + B` of a larger
    /// global batch, so dropout draws their masks there (one process with the global batch
    /// drops the same elements). 0, the default, in one process.
    pub fn set_first_sequence(&mut self, first: usize) {
        self.first_sequence = first;
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
}

/// Element counts of the buffers of a model (see [`Transformer::buffer_sizes`]); f32 each.
#[derive(Clone, Debug)]
pub struct BufferSizes {
    /// Parameter layout: every tensor's name, shape and kind; `layout.total` elements.
    pub layout: ParamLayout,
    /// `params`: every parameter and buffer (BatchNorm running statistics included).
    pub params: usize,
    /// Gradients (one per parameter element; 0 for an inference-only model).
    pub grads: usize,
    /// Activations, their gradients and the shared scratch, for `max_batch` × `block_size`.
    pub acts: usize,
    /// Fixed tables (sinusoidal positions, RoPE angles).
    pub consts: usize,
    /// `set_precision(bf16 | f16)`: the rounded weight copy (kept as f32) and its scratch.
    pub low_precision: usize,
    /// A KV cache of `max_batch` rows (decoders and encoder-decoders).
    pub kv_cache: Option<super::cache::KvCacheSizes>,
}

/// The layout of a model before anything is allocated: what [`Transformer::build`] fills in.
struct Plan {
    layout: ParamLayout,
    consts: Vec<f32>,
    encoder: Option<Stack>,
    decoder: Option<Stack>,
    head: Head,
    acts_total: usize,
    enc_acts: Option<super::stack::StackActs>,
    dec_acts: Option<super::stack::StackActs>,
    head_acts: super::head::HeadActs,
    scratch: Scratch,
    /// (widest linear input, widest linear output) of the low-precision scratch.
    widths: (usize, usize),
}

impl Plan {
    fn new(config: &ModelConfig, max_batch: usize, inference: bool) -> Result<Plan> {
        config.validate()?;
        ensure!(
            !config.arch.is_baseline(),
            "model.arch = \"{}\" is a language model without self-attention (crate::model::baseline), not a \
             Transformer; this needs a Transformer",
            config.arch.name()
        );
        ensure!(max_batch > 0, "batch size must be positive");
        let cfg = config;
        let (c, t) = (cfg.n_embd, cfg.block_size);
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
            Arch::Lstm | Arch::Gru | Arch::Cnn => unreachable!("refused above"),
        };
        let head = Head::new(&mut l, cfg, encoder.as_ref(), decoder.as_ref());

        let mut al = ActLayout::default();
        let n = max_batch * t;
        let enc_acts = encoder.as_ref().map(|s| s.acts(&mut al, max_batch, t, t, inference));
        let dec_acts = decoder.as_ref().map(|s| s.acts(&mut al, max_batch, t, t, inference));
        let head_acts = head.acts(&mut al, cfg, max_batch, inference);
        // Gradient buffers only when training is possible.
        let grad = |len: usize| if inference { 0 } else { len };
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
            d_y: al.alloc(grad(n * c.max(cfg.n_head * cfg.head_size()))),
            d_att: al.alloc(att),
            d_enc_part: al.alloc(grad(if cfg.arch == Arch::EncoderDecoder { n * c } else { 0 })),
        };
        Ok(Plan {
            layout: l,
            consts,
            encoder,
            decoder,
            head,
            acts_total: al.total,
            enc_acts,
            dec_acts,
            head_acts,
            scratch,
            widths: (c.max(wide).max(cfg.ffn()), c.max(wide)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AttentionKind, ModelConfig, Transformer};

    fn std_of(x: &[f32]) -> f64 {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
    }

    /// The default decoder is nanoGPT's GPT: its initialisation and parameter count.
    #[test]
    fn gpt2_initialisation() {
        let cfg = ModelConfig {
            vocab_size: 65,
            block_size: 64,
            n_layer: 8,
            n_head: 4,
            n_embd: 128,
            dropout: 0.0,
            bias: true,
            tie_embeddings: false,
            attention: AttentionKind::Dense,
            ..ModelConfig::default()
        };
        let mut m = Transformer::new(cfg, 1).unwrap();
        m.init(0);
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
        let cfg = ModelConfig {
            vocab_size: 10,
            block_size: 8,
            n_layer: 1,
            n_head: 3,
            n_embd: 16,
            dropout: 0.0,
            bias: true,
            tie_embeddings: true,
            attention: AttentionKind::Dense,
            ..ModelConfig::default()
        };
        let e = Transformer::new(cfg.clone(), 1).err().unwrap().to_string();
        assert!(e.contains("multiple of model.n_head"), "{e}");
        let mut m = Transformer::new(ModelConfig { n_head: 2, ..cfg }, 2).unwrap();
        assert!(m.forward_lm(&[1, 2, 3], None, 1, 3, false, 0).is_ok());
        assert!(m.forward_lm(&[1; 9], None, 1, 9, false, 0).unwrap_err().to_string().contains("block_size"));
        assert!(m.forward_lm(&[1; 6], None, 3, 2, false, 0).unwrap_err().to_string().contains("batch 3"));
        assert!(m.forward_lm(&[10, 1], None, 1, 2, false, 0).unwrap_err().to_string().contains("token id 10"));
        assert!(m.backward().unwrap_err().to_string().contains("targets"));
    }
}
