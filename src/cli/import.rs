//! `lmlab import`: a Hugging Face GPT-2 directory, a GGUF file or a llama2.c model with its
//! tokenizer as an lmlab checkpoint.

use anyhow::{Context, Result};
use clap::Args;
use lmlab::config::RunConfig;
use lmlab::io::checkpoint;
use lmlab::kernels::quant::QuantType;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Import` in main.rs.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true))]
pub struct ImportArgs {
    /// Hugging Face directory: a GPT-2 (as GPT2LMHeadModel.save_pretrained writes it) or a BERT
    /// encoder with its tokenizer.json (e.g. sentence-transformers' all-MiniLM-L6-v2), chosen by
    /// config.json's model_type.
    #[arg(long, value_name = "DIR", group = "source")]
    hf: Option<PathBuf>,
    /// GGUF file (llama or gpt2 architecture; F32, F16, Q8_0 or Q4_0 tensors, read as f32).
    #[arg(long, value_name = "FILE", group = "source")]
    gguf: Option<PathBuf>,
    /// llama2.c model.bin (the legacy version-0 format of export.py); needs --tokenizer.
    #[arg(long, value_name = "MODEL.bin", group = "source", requires = "tokenizer")]
    llama2c: Option<PathBuf>,
    /// llama2.c tokenizer.bin of the --llama2c model (its vocabulary must have the model's size).
    #[arg(long, value_name = "TOK.bin", requires = "llama2c")]
    tokenizer: Option<PathBuf>,
    /// With --gguf: store Q8_0/Q4_0 weights as f32 (a float checkpoint that can be trained)
    /// instead of keeping their blocks (a quantized checkpoint, as `lmlab quantize` writes).
    #[arg(long, requires = "gguf")]
    dequantize: bool,
    /// Checkpoint directory to write (atomically; an existing directory must hold only
    /// checkpoint files).
    #[arg(long, value_name = "CKPT_DIR")]
    out: PathBuf,
}

pub fn run(a: ImportArgs) -> Result<()> {
    let (mut model, tok) = if let Some(dir) = a.hf.as_ref().filter(|d| lmlab::io::hf_bert::is_bert_dir(d)) {
        lmlab::io::hf_bert::import(dir, 1)
            .with_context(|| format!("cannot import Hugging Face BERT directory {}", dir.display()))?
    } else if let Some(dir) = &a.hf {
        lmlab::io::hf_gpt2::import(dir, 1)
            .with_context(|| format!("cannot import Hugging Face GPT-2 directory {}", dir.display()))?
    } else if let Some(file) = &a.gguf {
        lmlab::io::gguf::import(file, 1).with_context(|| format!("cannot import GGUF file {}", file.display()))?
    } else {
        let (model, tok) = (a.llama2c.as_ref().expect("clap requires one source"), a.tokenizer.as_ref().unwrap());
        lmlab::io::llama2c::import(model, tok, 1)
            .with_context(|| format!("cannot import llama2.c model {}", model.display()))?
    };
    if a.dequantize {
        model.clear_quantized();
    }
    let saved = match model.quantized().map(|q| q.iter().map(|(_, m)| m.ty).collect::<Vec<_>>()) {
        Some(types) => {
            let scheme = if types.iter().all(|t| *t == QuantType::Q4_0) { "q4_0" } else { "q8_0" };
            let run = RunConfig { model: model.config.clone(), ..RunConfig::default() };
            checkpoint::save_quantized(&a.out, &model, &run, &tok, scheme)
        }
        None => checkpoint::save_new(&a.out, &model, &tok),
    };
    saved.with_context(|| format!("cannot write checkpoint {}", a.out.display()))?;
    println!(
        "wrote {} ({} parameters, {} layers, {} wide, block {}, {} tokenizer of {} tokens{})",
        a.out.display(),
        model.num_params(),
        model.config.n_layer,
        model.config.n_embd,
        model.config.block_size,
        tok.kind(),
        tok.vocab_size(),
        model.quantized().map_or(String::new(), |q| format!(", {} quantized weights", q.len()))
            + if model.is_masked_lm() { ", with its masked-LM head" } else { "" }
    );
    Ok(())
}
