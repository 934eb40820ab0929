//! Efficiency figures of a model: analytic FLOPs, parameters, buffer memory, and measured
//! latency, throughput and peak memory.
//!
//! The analytic FLOP count lives in `crate::inspect::account::flops` (re-exported here), where
//! `lmlab account` uses it too. `tests/eval_efficiency.rs` checks [`forward_flops`] against
//! PyTorch's FlopCounterMode on the reference model of every variant fixture.

use crate::infer::sample::{generate, SampleOptions};
pub use crate::inspect::account::flops::{flops_per_token, forward_flops};
use crate::model::transformer::{Arch, Transformer};
use crate::model::ParamKind;
use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// What `lmlab eval efficiency` reports for a checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct Efficiency {
    /// Trained parameters (BatchNorm running statistics excluded).
    pub parameters: usize,
    /// Parameters outside embedding tables and the output layer (Kaplan's N).
    pub non_embedding_parameters: usize,
    /// Bytes of the weights on disk (`model.safetensors`, plus `quant.safetensors` in a
    /// quantized checkpoint) and of the whole checkpoint directory.
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
    crate::util::peak_rss_bytes()
}

/// Parameters outside embedding tables and an untied output layer.
pub fn non_embedding_parameters(model: &Transformer) -> usize {
    model
        .layout
        .tensors
        .iter()
        .filter(|t| !matches!(t.kind, ParamKind::Embedding | ParamKind::Buffer) && t.name != "lm_head.weight")
        .map(|t| t.numel())
        .sum()
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}

/// Measures `model` (loaded from checkpoint `dir` with at least `batch` rows of buffers): forward
/// passes over random tokens of shape (batch, seq_len) — `warmup` untimed, then `iters` timed —
/// and, for decoders, greedy generation of `gen_tokens` tokens.
pub fn measure(
    model: &mut Transformer,
    dir: &Path,
    batch: usize,
    seq_len: usize,
    warmup: usize,
    iters: usize,
    gen_tokens: usize,
) -> Result<Efficiency> {
    let cfg = model.config.clone();
    ensure!(iters > 0, "need at least one timed iteration");
    ensure!(batch >= 1 && batch <= model.max_batch(), "batch must be in 1..={}", model.max_batch());
    ensure!(
        (1..=cfg.block_size).contains(&seq_len),
        "seq_len must be in 1..={} (the model's block_size)",
        cfg.block_size
    );
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    // Token ids from 4 up, so special ids (PAD/BOS/EOS of BPE vocabularies) are avoided.
    let lo = 4.min(cfg.vocab_size as u32 - 1);
    let idx: Vec<u32> = (0..batch * seq_len).map(|_| rng.gen_range(lo..cfg.vocab_size as u32)).collect();
    let mask = vec![true; batch * seq_len];
    let forward = |m: &mut Transformer| -> Result<()> {
        match cfg.arch {
            Arch::Decoder => m.forward_lm(&idx, None, batch, seq_len, false, 0)?,
            Arch::Encoder => m.forward_classify(&idx, Some(&mask), None, batch, seq_len, false, 0)?,
            Arch::EncoderDecoder => {
                m.forward_seq2seq(&idx, Some(&mask), &idx, None, batch, seq_len, seq_len, false, 0)?
            }
            // A Transformer is never built with a baseline's config.
            Arch::Lstm | Arch::Gru | Arch::Cnn => unreachable!("a Transformer has a Transformer arch"),
        };
        Ok(())
    };
    for _ in 0..warmup {
        forward(model)?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        forward(model)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let flops = forward_flops(&cfg, batch, seq_len, seq_len);
    let generate_tokens_per_second = if cfg.arch == Arch::Decoder && gen_tokens > 0 {
        let opts =
            SampleOptions { max_new_tokens: gen_tokens, temperature: 0.0, top_k: None, ..SampleOptions::default() };
        let t = Instant::now();
        generate(model, &idx[..1], &opts, &mut rng, |_| {})?;
        Some(gen_tokens as f64 / t.elapsed().as_secs_f64())
    } else {
        None
    };
    Ok(Efficiency {
        parameters: model.num_params(),
        non_embedding_parameters: non_embedding_parameters(model),
        weights_bytes_on_disk: ["model.safetensors", "quant.safetensors"]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
            .sum(),
        checkpoint_bytes_on_disk: dir_bytes(dir)?,
        forward_flops_per_token: flops / (batch * seq_len) as f64,
        seq_len,
        batch,
        forward_ms_median: median,
        forward_ms_min: times[0],
        forward_ms_max: times[times.len() - 1],
        tokens_per_second: (batch * seq_len) as f64 / median * 1e3,
        gflops_per_second: flops / median / 1e6,
        generate_tokens_per_second,
        buffer_bytes: model.buffer_bytes(),
        peak_rss_bytes: peak_rss_bytes(),
        threads: rayon::current_num_threads(),
    })
}

impl Efficiency {
    /// The figures as (name, value) pairs, for tables and for summaries over several runs.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut m = vec![
            ("params".to_string(), self.parameters as f64),
            ("non_emb_params".into(), self.non_embedding_parameters as f64),
            ("weights_MB".into(), self.weights_bytes_on_disk as f64 / 1e6),
            ("ckpt_MB".into(), self.checkpoint_bytes_on_disk as f64 / 1e6),
            ("MFLOP/token".into(), self.forward_flops_per_token / 1e6),
            ("fwd_ms".into(), self.forward_ms_median),
            ("tokens/s".into(), self.tokens_per_second),
            ("GFLOP/s".into(), self.gflops_per_second),
        ];
        if let Some(g) = self.generate_tokens_per_second {
            m.push(("gen_tokens/s".into(), g));
        }
        m.push(("buffers_MB".into(), self.buffer_bytes as f64 / 1e6));
        m.push(("peak_RSS_MB".into(), self.peak_rss_bytes as f64 / 1e6));
        m
    }
}
