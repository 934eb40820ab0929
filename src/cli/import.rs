//! `lmlab import`: a Hugging Face GPT-2 directory or a GGUF file as an lmlab checkpoint.

use anyhow::{Context, Result};
use clap::Args;
use lmlab::io::checkpoint;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Import` in main.rs.
#[derive(Args)]
pub struct ImportArgs {
    /// Hugging Face GPT-2 directory (as GPT2LMHeadModel.save_pretrained writes it).
    #[arg(long, value_name = "DIR", conflicts_with = "gguf", required_unless_present = "gguf")]
    hf: Option<PathBuf>,
    /// GGUF file (llama or gpt2 architecture; F32, F16, Q8_0 or Q4_0 tensors, read as f32).
    #[arg(long, value_name = "FILE")]
    gguf: Option<PathBuf>,
    /// Checkpoint directory to write (atomically; an existing directory must hold only
    /// checkpoint files).
    #[arg(long, value_name = "CKPT_DIR")]
    out: PathBuf,
}

pub fn run(a: ImportArgs) -> Result<()> {
    let (model, tok) = match (&a.hf, &a.gguf) {
        (Some(dir), _) => lmlab::io::hf_gpt2::import(dir, 1)
            .with_context(|| format!("cannot import Hugging Face GPT-2 directory {}", dir.display()))?,
        (None, Some(file)) => {
            lmlab::io::gguf::import(file, 1).with_context(|| format!("cannot import GGUF file {}", file.display()))?
        }
        (None, None) => unreachable!("clap requires --hf or --gguf"),
    };
    checkpoint::save_new(&a.out, &model, &tok)
        .with_context(|| format!("cannot write checkpoint {}", a.out.display()))?;
    println!(
        "wrote {} ({} parameters, {} layers, {} wide, block {}, {} tokenizer of {} tokens)",
        a.out.display(),
        model.num_params(),
        model.config.n_layer,
        model.config.n_embd,
        model.config.block_size,
        tok.kind(),
        tok.vocab_size()
    );
    Ok(())
}
