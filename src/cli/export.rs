//! `lmlab export`: an lmlab checkpoint as a llama2.c model.bin, a Hugging Face GPT-2
//! directory or a GGUF file.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use lmlab::io::{checkpoint, gguf};
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Export` in main.rs.
#[derive(Args)]
pub struct ExportArgs {
    /// llama2.c output file (written atomically).
    #[arg(long, value_name = "OUT.bin", conflicts_with_all = ["hf", "gguf"], required_unless_present_any = ["hf", "gguf"])]
    llama2c: Option<PathBuf>,
    /// Hugging Face output directory: config.json, model.safetensors, tokenizer files
    /// (written atomically; an existing directory must hold only such files).
    #[arg(long, value_name = "OUT_DIR", conflicts_with = "gguf")]
    hf: Option<PathBuf>,
    /// GGUF output file (llama.cpp's format; llama or gpt2 architecture; written atomically).
    #[arg(long, value_name = "OUT.gguf")]
    gguf: Option<PathBuf>,
    /// Tensor type of the GGUF matrices (norms and biases stay f32; a matrix whose rows do not
    /// split into blocks of 32 stays f32). Default: f32 for a float checkpoint; for a quantized
    /// one, each weight as stored (its Q8_0/Q4_0 blocks unchanged, the rest f32).
    #[arg(long = "type", value_enum, requires = "gguf")]
    ty: Option<GgufType>,
    /// lmlab checkpoint directory.
    #[arg(long)]
    checkpoint: PathBuf,
}

/// `--type`: the GGUF tensor types export can write.
#[derive(Clone, Copy, ValueEnum)]
enum GgufType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
}

impl From<GgufType> for gguf::ExportType {
    fn from(t: GgufType) -> Self {
        match t {
            GgufType::F32 => gguf::ExportType::F32,
            GgufType::F16 => gguf::ExportType::F16,
            GgufType::Q8_0 => gguf::ExportType::Q8_0,
            GgufType::Q4_0 => gguf::ExportType::Q4_0,
        }
    }
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
    if let Some(out) = a.gguf {
        let ty = match a.ty {
            Some(t) => t.into(),
            None if ck.model.quantized().is_some() => gguf::ExportType::Stored,
            None => gguf::ExportType::F32,
        };
        let g = gguf::to_gguf(&ck.model, &ck.tokenizer, ty)
            .with_context(|| format!("cannot export {} as GGUF", a.checkpoint.display()))?;
        let kept: Vec<&str> = g
            .tensors
            .iter()
            .filter(|t| t.dims.len() == 2 && !ty.fits(t.dims[0] as usize))
            .map(|t| t.name.as_str())
            .collect();
        if !kept.is_empty() {
            eprintln!(
                "note: {} matrices have rows that do not split into blocks of 32 and stay f32: {}",
                kept.len(),
                kept.join(", ")
            );
        }
        lmlab::io::atomic::write_file_atomic(&out, &gguf::to_bytes(&g)?)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!("wrote {} ({} parameters, {} tokenizer)", out.display(), ck.model.num_params(), ck.tokenizer.kind());
    }
    Ok(())
}
