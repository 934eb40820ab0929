//! `lmlab quantize`: a checkpoint's linear layers quantized, written as a new checkpoint.

use anyhow::{Context, Result};
use clap::Args;
use lmlab::compress::quantize::{
    calibration_windows, quantizable, quantize_model, quantize_model_gptq, KeepFloat, Scheme,
};
use lmlab::io::checkpoint;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Quantize` in main.rs.
#[derive(Args)]
pub struct QuantizeArgs {
    /// Checkpoint to quantize.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// bf16 (bf16 weights, f32 activations: half the size, nearly lossless), int8 (int8
    /// weights per output channel, f32 activations), w8a8 (the same weights, activations
    /// quantized to int8 per token at run time), q8_0 or q4_0 (GGML's block formats), int4 or
    /// int4-gG (round to nearest, group G, default 32), gptq4-gG / gptq3-gG (GPTQ, needs --calib; add -act for act-order, e.g.
    /// gptq4-g32-act), rtn4-gG / rtn3-gG (round to nearest with GPTQ's quantizer, for
    /// comparison).
    #[arg(long)]
    scheme: String,
    /// Calibration text for GPTQ (e.g. a slice of the training data), read with the
    /// checkpoint's tokenizer.
    #[arg(long, value_name = "FILE")]
    calib: Option<PathBuf>,
    /// Calibration windows of block_size tokens (consecutive, from the start of --calib).
    #[arg(long, default_value_t = 32)]
    calib_samples: usize,
    /// Checkpoint directory to write (atomically; an existing directory must hold only
    /// checkpoint files).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Keep the output layer (an untied lm_head) in f32. A tied one is always kept.
    #[arg(long)]
    keep_output: bool,
    /// One JSON object on standard output.
    #[arg(long)]
    json: bool,
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    let scheme = Scheme::parse(&a.scheme)?;
    let mut ck = checkpoint::load_inference(&a.checkpoint, 1)?;
    let f32_bytes = 4 * ck.model.params.len();
    let keep = KeepFloat { output: a.keep_output };
    let names = match (&a.calib, scheme) {
        (Some(path), Scheme::Gptq { rtn: false, .. }) => {
            let text = lmlab::util::read_corpus(path)?;
            let tokens = ck.tokenizer.encode(&text).with_context(|| format!("cannot tokenize {}", path.display()))?;
            let windows = calibration_windows(&tokens, ck.model.config.block_size, a.calib_samples);
            anyhow::ensure!(
                !windows.is_empty(),
                "{} holds {} tokens: not one calibration window of block_size {}",
                path.display(),
                tokens.len(),
                ck.model.config.block_size
            );
            quantize_model_gptq(&mut ck.model, scheme, keep, &windows)
        }
        _ => quantize_model(&mut ck.model, scheme, keep),
    }
    .with_context(|| format!("cannot quantize {}", a.checkpoint.display()))?;
    let kept = quantizable(&ck.model, scheme, keep).1;
    if !kept.is_empty() && !a.json {
        eprintln!(
            "note: rows of these weights do not split into the scheme's blocks; they stay f32: {}",
            kept.join(", ")
        );
    }
    checkpoint::save_quantized(&a.out, &ck.model, &ck.run_config, &ck.tokenizer, &a.scheme)
        .with_context(|| format!("cannot write checkpoint {}", a.out.display()))?;
    let q = ck.model.quantized().map_or(0, |q| q.bytes());
    let quantized_f32: usize = names.iter().filter_map(|n| ck.model.layout.get(n)).map(|t| 4 * t.numel()).sum();
    let weights_after = f32_bytes - quantized_f32 + q;
    if a.json {
        let j = serde_json::json!({"out": a.out, "scheme": a.scheme, "tensors": names, "kept_f32": kept,
            "weight_bytes_before": f32_bytes, "weight_bytes_after": weights_after});
        println!("{j}");
    } else {
        println!(
            "wrote {}: {} linear weights as {}; weights {:.2} MB -> {:.2} MB ({:.2}x smaller)",
            a.out.display(),
            names.len(),
            a.scheme,
            f32_bytes as f64 / 1e6,
            weights_after as f64 / 1e6,
            f32_bytes as f64 / weights_after as f64
        );
    }
    Ok(())
}
