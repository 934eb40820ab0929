//! `lmlab import`: a Hugging Face GPT-2 directory as an lmlab checkpoint.

use anyhow::{Context, Result};
use clap::Args;
use lmlab::io::checkpoint;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Import` in main.rs.
#[derive(Args)]
pub struct ImportArgs {
    /// Hugging Face GPT-2 directory (as GPT2LMHeadModel.save_pretrained writes it).
    #[arg(long, value_name = "DIR")]
    hf: PathBuf,
    /// Checkpoint directory to write (atomically; an existing directory must hold only
    /// checkpoint files).
    #[arg(long, value_name = "CKPT_DIR")]
    out: PathBuf,
}

pub fn run(a: ImportArgs) -> Result<()> {
    let (model, tok) = lmlab::io::hf_gpt2::import(&a.hf, 1)
        .with_context(|| format!("cannot import Hugging Face GPT-2 directory {}", a.hf.display()))?;
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
