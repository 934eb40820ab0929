//! Files in and out: checkpoints (float and quantized), atomic writes, llama2.c, Hugging Face
//! GPT-2 and BERT, GGUF.
pub mod atomic;
pub mod checkpoint;
pub mod gguf;
pub mod hf_bert;
pub mod hf_gpt2;
pub mod llama2c;
pub mod quant_checkpoint;
pub mod tensors;

use crate::data::Tokenizer;
use crate::model::transformer::Transformer;
use anyhow::{bail, ensure, Result};

/// What every export checks first: the tokenizer fits the model's vocabulary, and no weight is
/// NaN or infinite (naming the first such tensor).
fn check_export(model: &Transformer, tokenizer: &Tokenizer) -> Result<()> {
    let v = model.config.vocab_size;
    ensure!(
        tokenizer.vocab_size() == v,
        "the tokenizer has {} tokens but the model's vocab_size is {v}",
        tokenizer.vocab_size()
    );
    if let Some((t, _)) = model.first_nonfinite_param() {
        bail!("weight {t} holds NaN or infinity");
    }
    Ok(())
}
