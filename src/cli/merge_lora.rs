//! `lmlab merge-lora`: fold a LoRA checkpoint's adapters into its weights.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::MergeLora` in main.rs.
#[derive(Args)]
pub struct MergeLoraArgs {
    /// A checkpoint of a run with a [lora] section.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Where to write the merged, plain checkpoint.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: MergeLoraArgs) -> Result<()> {
    let (rank, layers) = lmlab::io::checkpoint::save_merged_lora(&a.checkpoint, &a.out)?;
    println!("merged rank-{rank} adapters of {layers} linear layers into {}", a.out.display());
    Ok(())
}
