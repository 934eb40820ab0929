//! `lmlab export`: an lmlab checkpoint as a llama2.c model.bin or a Hugging Face GPT-2
//! directory.

use anyhow::{Context, Result};
use clap::Args;
use lmlab::io::checkpoint;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Export` in main.rs.
#[derive(Args)]
pub struct ExportArgs {
    /// llama2.c output file (written atomically).
    #[arg(long, value_name = "OUT.bin", conflicts_with = "hf", required_unless_present = "hf")]
    llama2c: Option<PathBuf>,
    /// Hugging Face output directory: config.json, model.safetensors, tokenizer files
    /// (written atomically; an existing directory must hold only such files).
    #[arg(long, value_name = "OUT_DIR")]
    hf: Option<PathBuf>,
    /// lmlab checkpoint directory.
    #[arg(long)]
    checkpoint: PathBuf,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let ck = checkpoint::load(&a.checkpoint, 1, false)?;
    if let Some(out) = a.llama2c {
        lmlab::io::llama2c::write(&out, &ck.model, None)
            .with_context(|| format!("cannot export {} as llama2.c", a.checkpoint.display()))?;
        println!("wrote {} ({} parameters)", out.display(), ck.model.num_params());
    }
    if let Some(out) = a.hf {
        lmlab::io::hf_gpt2::export(&ck.model, &ck.tokenizer, &out)
            .with_context(|| format!("cannot export {} as Hugging Face GPT-2", a.checkpoint.display()))?;
        println!("wrote {} ({} parameters, {} tokenizer)", out.display(), ck.model.num_params(), ck.tokenizer.kind());
    }
    Ok(())
}
