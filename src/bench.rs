//! Benchmark cases for the side-by-side comparison with PyTorch (`bench/run.py` drives them).
//!
//! Each case builds its model with GPT-2 initialisation, optionally writes the initial weights
//! and first batch (`--dump-init`) so the PyTorch side can start from the same state, reports
//! the loss of that batch, then times `iters` iterations after `warmup` untimed ones.

use crate::data::dataset::sample_batch;
use crate::data::Batch;
use crate::infer::sample::{generate, SampleOptions};
use crate::io::tensors::{to_safetensors_raw, RawTensor};
use crate::model::transformer::{ModelConfig, Transformer};
use crate::optim::{AdamW, AdamWConfig, LrSchedule, Optimizer};
use crate::train::Trainer;
use crate::util::thread_pool;
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use safetensors::Dtype;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

pub const CASES: &[&str] = &[
    "S-train",
    "M-train",
    "D-train",
    "S-train-bf16",
    "M-train-bf16",
    "M-forward",
    "M-generate",
    "M-forward-bf16w",
    "M-generate-bf16w",
    "sgemm-2048",
];

#[derive(Serialize)]
pub struct BenchResult {
    pub case: String,
    /// The instruction-set path the kernels ran on (`kernels::isa`), e.g. `avx512+vnni+bf16`.
    pub isa: String,
    /// The product behind bf16 matmuls: `vdpbf16ps` or `f32` (on bf16-rounded operands).
    pub bf16_gemm: String,
    pub threads: usize,
    pub iters: usize,
    pub times_ms: Vec<f64>,
    pub initial_loss: f32,
    pub flops_per_iter: f64,
    pub params: usize,
    pub peak_rss_kb: u64,
    /// Generated ids of the first timed iteration (M-generate).
    pub tokens: Vec<u32>,
}

fn config(case: &str) -> Result<(ModelConfig, usize)> {
    let small = ModelConfig {
        vocab_size: 65,
        block_size: 64,
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        bias: false,
        ..ModelConfig::default()
    };
    let medium = ModelConfig { block_size: 256, n_layer: 6, n_head: 6, n_embd: 384, ..small.clone() };
    // A third shape, so that kernel choices are not tuned to S and M alone.
    let deep = ModelConfig { block_size: 128, n_layer: 8, n_head: 8, n_embd: 256, ..small.clone() };
    Ok(match case {
        "S-train" | "S-train-bf16" => (small, 12),
        "M-train" | "M-train-bf16" => (medium, 16),
        "D-train" => (deep, 8),
        "M-forward" | "M-generate" | "M-forward-bf16w" | "M-generate-bf16w" => (medium, 1),
        _ => bail!("unknown case {case:?}; cases: {}", CASES.join(", ")),
    })
}

/// Matmul FLOPs (2 per multiply-add) of a forward pass over (b, t) tokens, counting attention
/// scores and weighted sums densely as PyTorch's kernels compute them.
pub fn forward_flops(cfg: &ModelConfig, b: usize, t: usize) -> f64 {
    let (n, c) = ((b * t) as f64, cfg.n_embd as f64);
    let per_layer = 24.0 * n * c * c + 4.0 * (b * t * t) as f64 * c;
    cfg.n_layer as f64 * per_layer + 2.0 * n * c * cfg.vocab_size as f64
}

fn isa_name() -> String {
    crate::kernels::isa::Isa::active().name()
}

fn bf16_gemm_name() -> String {
    if crate::kernels::gemm::bf16_gemm_in_use() { "vdpbf16ps" } else { "f32" }.to_string()
}

fn peak_rss_kb() -> u64 {
    crate::util::peak_rss_bytes() / 1024
}

fn dump_init(path: &Path, model: &Transformer, batch: &Batch) -> Result<()> {
    let mut tensors: Vec<RawTensor> = model
        .named_params()
        .map(|(name, data)| {
            let shape = model.layout.get(name).unwrap().shape.clone();
            (format!("param.{name}"), Dtype::F32, shape, data.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect();
    let shape = vec![batch.b, batch.t];
    tensors.push((
        "batch.idx".into(),
        Dtype::I64,
        shape.clone(),
        batch.inputs.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
    ));
    tensors.push((
        "batch.targets".into(),
        Dtype::I64,
        shape,
        batch.targets.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
    ));
    let c = &model.config;
    let meta = serde_json::json!({
        "vocab_size": c.vocab_size, "block_size": c.block_size, "n_layer": c.n_layer, "n_head": c.n_head,
        "n_embd": c.n_embd, "bias": c.bias, "tie_embeddings": c.tie_embeddings, "batch": batch.b, "seq": batch.t,
    });
    let bytes = to_safetensors_raw(&tensors, HashMap::from([("config".to_string(), meta.to_string())]))?;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Runs one case; see the module docs.
pub fn run_case(
    case: &str,
    iters: usize,
    warmup: usize,
    threads: usize,
    seed: u64,
    dump: Option<&Path>,
) -> Result<BenchResult> {
    if case == "sgemm-2048" {
        return sgemm_case(iters, warmup, threads);
    }
    if let Some(rest) = case.strip_prefix("attn-") {
        return attention_case(rest, iters, warmup, threads);
    }
    let (cfg, batch_size) = config(case)?;
    let pool = thread_pool(threads)?;
    pool.install(|| {
        let mut model = Transformer::new(cfg.clone(), batch_size)?;
        model.init(seed);

        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let data: Vec<u32> = (0..200_000).map(|_| rng.gen_range(0..cfg.vocab_size as u32)).collect();
        let t = cfg.block_size;
        let mut batch = Batch::new(batch_size, t);
        sample_batch(&data, &mut batch, &mut rng);
        if let Some(p) = dump {
            dump_init(p, &model, &batch)?;
        }
        let params = model.num_params();
        let initial_loss =
            model.forward_lm(&batch.inputs, Some(&batch.targets), batch_size, t, false, 0)?.unwrap_or(0.0);
        if case.ends_with("-bf16") {
            // Autocast's numerics (see kernels::precision) from here on; the initial loss above
            // is the fp32 one, as PyTorch's side reports it before entering autocast.
            model.set_precision(crate::kernels::precision::Precision::Bf16);
        }
        if case.ends_with("-bf16w") {
            // bf16 weights for inference (`lmlab quantize --scheme bf16`); the initial loss
            // above is the fp32 model's.
            let keep = crate::compress::quantize::KeepFloat::default();
            crate::compress::quantize::quantize_model(&mut model, crate::compress::quantize::Scheme::Bf16, keep)?;
        }
        let mut times = Vec::with_capacity(iters);
        let mut tokens = Vec::new();
        let mut time = |f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
            for i in 0..warmup + iters {
                let start = Instant::now();
                f()?;
                if i >= warmup {
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
            Ok(())
        };
        let flops = match case {
            c if c.contains("-train") => {
                let opt = AdamW::new(
                    AdamWConfig { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1, decay_embeddings: false },
                    &model.layout,
                );
                let schedule = LrSchedule { decay_lr: false, ..LrSchedule::cosine(1e-3, 1e-3, 0, 0) };
                let clip = crate::optim::Clipping::norm(1.0);
                let scaler = crate::optim::LossScaler::disabled();
                let opt = Optimizer::AdamW(opt);
                let mut tr = Trainer {
                    model,
                    opt,
                    schedule,
                    clip,
                    batch,
                    rng,
                    step: 0,
                    seed,
                    accum: 1,
                    scaler,
                    teacher: None,
                    masking: None,
                };
                time(&mut || tr.step(&data).map(|_| ()))?;
                3.0 * forward_flops(&cfg, batch_size, t)
            }
            "M-forward" | "M-forward-bf16w" => {
                time(&mut || model.forward_lm(&batch.inputs, None, 1, t, false, 0).map(|_| ()))?;
                forward_flops(&cfg, 1, t)
            }
            _ => {
                let opts =
                    SampleOptions { max_new_tokens: t, temperature: 0.0, top_k: None, ..SampleOptions::default() };
                let prompt = [batch.inputs[0]];
                let mut first = true;
                // The KV-cache path every decoder variant uses.
                time(&mut || {
                    let out = generate(&mut model, &prompt, &opts, &mut rng, |_| {})?;
                    if first {
                        tokens = out;
                        first = false;
                    }
                    Ok(())
                })?;
                // Token at position p (1-based) attends over p positions: linear layers for one
                // token plus 4·p·C for the scores and weighted sum, per layer.
                let c = cfg.n_embd as f64;
                (1..=t)
                    .map(|p| cfg.n_layer as f64 * (24.0 * c * c + 4.0 * p as f64 * c) + 2.0 * c * cfg.vocab_size as f64)
                    .sum()
            }
        };
        Ok(BenchResult {
            isa: isa_name(),
            bf16_gemm: bf16_gemm_name(),
            case: case.to_string(),
            threads: rayon::current_num_threads(),
            iters,
            times_ms: times,
            initial_loss,
            flops_per_iter: flops,
            params,
            peak_rss_kb: peak_rss_kb(),
            tokens,
        })
    })
}

/// The machine's fp32 GEMM rate as lmlab's own GEMM sees it: C = A·B, 2048³, all threads.
fn sgemm_case(iters: usize, warmup: usize, threads: usize) -> Result<BenchResult> {
    use crate::kernels::gemm::{sgemm, Threads};
    let n = 2048;
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 97) as f32 - 48.0) / 48.0).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i % 89) as f32 - 44.0) / 44.0).collect();
    let mut c = vec![0.0f32; n * n];
    let pool = thread_pool(threads)?;
    let times = pool.install(|| {
        let mut times = Vec::with_capacity(iters);
        for i in 0..warmup + iters {
            let start = Instant::now();
            sgemm(false, false, n, n, n, 1.0, &a, n, &b, n, 0.0, &mut c, n, Threads::Pool);
            if i >= warmup {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times
    });
    Ok(BenchResult {
        isa: isa_name(),
        bf16_gemm: bf16_gemm_name(),
        case: "sgemm-2048".into(),
        threads: pool.current_num_threads(),
        iters,
        times_ms: times,
        initial_loss: 0.0,
        flops_per_iter: 2.0 * (n * n * n) as f64,
        params: 0,
        peak_rss_kb: peak_rss_kb(),
        tokens: Vec::new(),
    })
}

/// `attn-dense-T` / `attn-flash-T`: forward + backward of one layer's causal attention core,
/// batch 1, 6 heads of 64 (the M model's shape), T tokens. Memory is what the process holds:
/// the dense kernel keeps two (NH, T, T) buffers, the flash kernel (NH, T) plus small tiles.
fn attention_case(spec: &str, iters: usize, warmup: usize, threads: usize) -> Result<BenchResult> {
    use crate::kernels::{attention, flash_attention as fa};
    let Some((kind, t)) = spec.split_once('-') else { bail!("attention case must be attn-dense-T or attn-flash-T") };
    let t: usize = t.parse().map_err(|_| anyhow::anyhow!("bad sequence length in attn-{spec}"))?;
    let (b, nh, c) = (1usize, 6usize, 384usize);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let qkv: Vec<f32> = (0..b * t * 3 * c).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let dout: Vec<f32> = (0..b * t * c).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut out = vec![0.0f32; b * t * c];
    let mut dqkv = vec![0.0f32; b * t * 3 * c];
    let (mut big, mut small) = match kind {
        "dense" => (vec![0.0f32; b * nh * t * t], vec![0.0f32; b * nh * t * t]),
        "flash" => (vec![0.0f32; b * nh * t], vec![0.0f32; b * nh * fa::scratch_per_head(t)]),
        _ => bail!("attention kind must be dense or flash, got {kind}"),
    };
    let pool = thread_pool(threads)?;
    let times = pool.install(|| {
        let mut times = Vec::with_capacity(iters);
        for i in 0..warmup + iters {
            let start = Instant::now();
            if kind == "dense" {
                attention::attention_forward(&mut out, &mut big, None, &qkv, b, t, c, nh);
                attention::attention_backward(&mut dqkv, &mut small, &dout, &qkv, &big, None, b, t, c, nh);
            } else {
                fa::flash_attention_forward(&mut out, &mut big, &mut small, &qkv, b, t, c, nh);
                fa::flash_attention_backward(&mut dqkv, &mut small, &dout, &qkv, &out, &big, b, t, c, nh);
            }
            if i >= warmup {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times
    });
    // Dense FLOPs: forward 4·T²·C, backward 8·T²·C (scores, weighted sum, and their gradients).
    let flops = 12.0 * (b * t * t) as f64 * c as f64;
    Ok(BenchResult {
        isa: isa_name(),
        bf16_gemm: bf16_gemm_name(),
        case: format!("attn-{spec}"),
        threads: pool.current_num_threads(),
        iters,
        times_ms: times,
        initial_loss: out.iter().take(16).sum(),
        flops_per_iter: flops,
        params: 0,
        peak_rss_kb: peak_rss_kb(),
        tokens: Vec::new(),
    })
}
