//! Efficiency figures of a model: analytic FLOPs, parameters, buffer memory, and measured
//! latency, throughput and peak memory.
//!
//! FLOPs count matrix multiplications only (2 per multiply-add), the convention of Kaplan et
//! al. and of `torch.utils.flop_counter`: norms, softmax, activations and embedding lookups are
//! left out. Attention scores and weighted sums are counted densely, for every (query, key)
//! pair, as dense kernels (and PyTorch's reference models) compute them even under a causal
//! mask. `tests/eval_efficiency.rs` checks [`forward_flops`] against PyTorch's FlopCounterMode on
//! the reference model of every variant fixture.

use crate::model::transformer::{Arch, ModelConfig, Position};
use serde::Serialize;

/// FLOPs of one attention layer: `nq` query tokens in `b` sequences of `tq`, over `tk` keys per
/// sequence; `kv_from` tokens feed the key/value projection (`None` = fused QKV on the queries).
fn attention_flops(cfg: &ModelConfig, b: usize, tq: usize, tk: usize, cross: bool) -> f64 {
    let (c, nh, kv, hs) = (cfg.n_embd as f64, cfg.n_head as f64, cfg.kv_heads() as f64, cfg.head_size() as f64);
    let (nq, nk) = ((b * tq) as f64, (b * tk) as f64);
    let projections =
        if cross { 2.0 * nq * c * nh * hs + 2.0 * nk * c * 2.0 * kv * hs } else { 2.0 * nq * c * (nh + 2.0 * kv) * hs };
    let pairs = b as f64 * nh * tq as f64 * tk as f64;
    // Scores (any score function: q·k, or the additive score's v·tanh(q + k)), then weights · V.
    let mut matmuls = 2.0 * pairs * hs * 2.0;
    if !cross && cfg.position == Position::Shaw {
        matmuls += 2.0 * pairs * hs * if cfg.shaw_values { 2.0 } else { 1.0 };
    }
    projections + matmuls + 2.0 * nq * nh * hs * c
}

fn mlp_flops(cfg: &ModelConfig, n: usize) -> f64 {
    let (c, f) = (cfg.n_embd as f64, cfg.ffn() as f64);
    let f_in = if cfg.elementwise_activation().is_none() { 2.0 * f } else { f };
    2.0 * n as f64 * c * f_in + 2.0 * n as f64 * f * c
}

/// Matmul FLOPs of one forward pass over `b` sequences of `t` tokens (decoder input for
/// encoder-decoders, whose sources have `s` tokens; `s` is ignored otherwise), head included.
pub fn forward_flops(cfg: &ModelConfig, b: usize, t: usize, s: usize) -> f64 {
    let stack = |layers: usize, t: usize, cross_s: Option<usize>| {
        let per = attention_flops(cfg, b, t, t, false)
            + cross_s.map_or(0.0, |s| attention_flops(cfg, b, t, s, true))
            + mlp_flops(cfg, b * t);
        layers as f64 * per
    };
    let (c, v) = (cfg.n_embd as f64, cfg.vocab_size as f64);
    match cfg.arch {
        Arch::Decoder => stack(cfg.n_layer, t, None) + 2.0 * (b * t) as f64 * c * v,
        Arch::Encoder => stack(cfg.n_layer, t, None) + 2.0 * b as f64 * c * cfg.num_classes as f64,
        Arch::EncoderDecoder => {
            stack(cfg.n_layer, s, None) + stack(cfg.dec_layers(), t, Some(s)) + 2.0 * (b * t) as f64 * c * v
        }
    }
}

/// Forward FLOPs per token of a sequence of `t` tokens (for encoder-decoders, per target token
/// with a source of the same length). Training costs about three times this (backward = 2×).
pub fn flops_per_token(cfg: &ModelConfig, t: usize) -> f64 {
    forward_flops(cfg, 1, t, t) / t as f64
}

/// What `lmlab eval efficiency` reports for a checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct Efficiency {
    /// Trained parameters (BatchNorm running statistics excluded).
    pub parameters: usize,
    /// Parameters outside embedding tables and the output layer (Kaplan's N).
    pub non_embedding_parameters: usize,
    /// Bytes of `model.safetensors` (weights on disk) and of the whole checkpoint directory.
    pub weights_bytes_on_disk: u64,
    pub checkpoint_bytes_on_disk: u64,
    /// Forward FLOPs per token at the measured sequence length.
    pub forward_flops_per_token: f64,
    /// Sequence length and batch of the timing.
    pub seq_len: usize,
    pub batch: usize,
    /// Median wall time of one forward pass over (batch, seq_len) and min/max over the runs.
    pub forward_ms_median: f64,
    pub forward_ms_min: f64,
    pub forward_ms_max: f64,
    /// Tokens per second of the forward pass (batch · seq_len / median time).
    pub tokens_per_second: f64,
    /// Achieved matmul throughput.
    pub gflops_per_second: f64,
    /// Greedy generation speed with the KV cache where the model has one (decoders only).
    pub generate_tokens_per_second: Option<f64>,
    /// Bytes of the model's preallocated buffers (parameters, gradients, activations).
    pub buffer_bytes: usize,
    /// Peak resident set size of the process (getrusage), after the measurements.
    pub peak_rss_bytes: u64,
    pub threads: usize,
}

/// Peak resident set size of this process in bytes.
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss as u64 * 1024
    }
}
