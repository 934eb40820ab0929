//! The tensors of a GPT-2 `model.safetensors`: their names and shapes for a [`ModelConfig`]
//! (Conv1D weights transposed), and the checks an import makes on a file's tensors before the
//! model is allocated.

use crate::io::tensors::TensorFile;
use crate::model::transformer::ModelConfig;
use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::Dtype;
use std::collections::BTreeSet;

/// One tensor of a GPT-2 file.
#[derive(Clone, Debug, PartialEq)]
pub struct HfTensor {
    /// Name in GPT2LMHeadModel's state dict (with the `transformer.` prefix); also the lmlab
    /// parameter it holds.
    pub name: String,
    /// Shape in the file: Conv1D weights are (in, out).
    pub shape: Vec<usize>,
    /// A Conv1D weight: the file holds the transpose of lmlab's (out, in) matrix.
    pub transposed: bool,
    /// A bias (zero in the file when the lmlab model has none).
    pub bias: bool,
}

/// The tensors a GPT-2 model of `cfg` has, in a fixed order (None when a size overflows).
pub fn hf_tensors(cfg: &ModelConfig) -> Option<Vec<HfTensor>> {
    let (v, c, f, t) = (cfg.vocab_size, cfg.n_embd, cfg.ffn(), cfg.block_size);
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, transposed: bool| {
        let bias = name.ends_with(".bias");
        out.push(HfTensor { name, shape, transposed, bias });
    };
    push("transformer.wte.weight".into(), vec![v, c], false);
    push("transformer.wpe.weight".into(), vec![t, c], false);
    let c3 = c.checked_mul(3)?;
    for i in 0..cfg.n_layer {
        let p = format!("transformer.h.{i}");
        push(format!("{p}.ln_1.weight"), vec![c], false);
        push(format!("{p}.ln_1.bias"), vec![c], false);
        push(format!("{p}.attn.c_attn.weight"), vec![c, c3], true);
        push(format!("{p}.attn.c_attn.bias"), vec![c3], false);
        push(format!("{p}.attn.c_proj.weight"), vec![c, c], true);
        push(format!("{p}.attn.c_proj.bias"), vec![c], false);
        push(format!("{p}.ln_2.weight"), vec![c], false);
        push(format!("{p}.ln_2.bias"), vec![c], false);
        push(format!("{p}.mlp.c_fc.weight"), vec![c, f], true);
        push(format!("{p}.mlp.c_fc.bias"), vec![f], false);
        push(format!("{p}.mlp.c_proj.weight"), vec![f, c], true);
        push(format!("{p}.mlp.c_proj.bias"), vec![c], false);
    }
    push("transformer.ln_f.weight".into(), vec![c], false);
    push("transformer.ln_f.bias".into(), vec![c], false);
    if !cfg.tie_embeddings {
        push("lm_head.weight".into(), vec![v, c], false);
    }
    // Sizes must be representable (the file's sizes bound them on import).
    for t in &out {
        t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    }
    Some(out)
}

/// m (rows, cols) row-major → (cols, rows).
pub(super) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}

/// Finds every tensor of `cfg` in the file (with or without the `transformer.` prefix), checking
/// dtype and shape, and refuses tensors GPT2LMHeadModel does not have. Returns each expected
/// tensor with its name in the file.
pub(super) fn match_tensors(cfg: &ModelConfig, tf: &TensorFile) -> Result<Vec<(HfTensor, String)>> {
    let names: BTreeSet<&str> = tf.st.names().into_iter().map(String::as_str).collect();
    // Each layer has 12 tensors; a far larger n_layer would only build a huge list of missing ones.
    ensure!(
        cfg.n_layer <= names.len(),
        "config.json has n_layer {} but the file holds only {} tensors",
        cfg.n_layer,
        names.len()
    );
    let tensors = hf_tensors(cfg).context("config.json: the model's sizes overflow")?;
    let mut out = Vec::with_capacity(tensors.len());
    let mut claimed = BTreeSet::new();
    for t in tensors {
        let short = t.name.strip_prefix("transformer.").unwrap_or(&t.name);
        let candidates: Vec<&str> = [t.name.as_str(), short].into_iter().filter(|n| names.contains(n)).collect();
        let file_name = match candidates.as_slice() {
            [] => bail!("tensor {} is missing", t.name),
            [one] => one.to_string(),
            [a, b, ..] if a == b => a.to_string(),
            [a, b, ..] => bail!("the file has both {a} and {b}"),
        };
        let view = tf.st.tensor(&file_name).map_err(|e| anyhow!("tensor {file_name}: {e}"))?;
        ensure!(view.dtype() == Dtype::F32, "tensor {file_name} has dtype {:?}; only F32 is supported", view.dtype());
        ensure!(
            view.shape() == t.shape.as_slice(),
            "tensor {file_name} has shape {:?}, expected {:?} (from config.json)",
            view.shape(),
            t.shape
        );
        claimed.insert(file_name.clone());
        out.push((t, file_name));
    }
    for n in &names {
        if claimed.contains(*n) {
            continue;
        }
        let short = n.strip_prefix("transformer.").unwrap_or(n);
        // The causal-mask buffers older transformers saved; transformers itself ignores them.
        if short.starts_with("h.") && (short.ends_with(".attn.bias") || short.ends_with(".attn.masked_bias")) {
            continue;
        }
        if *n == "lm_head.weight" && cfg.tie_embeddings {
            // A tied head saved anyway must be the embedding, or the file means another model.
            let wte = out.iter().find(|(t, _)| t.name == "transformer.wte.weight").map(|(_, f)| f.as_str());
            let same = wte.is_some_and(|w| {
                let (a, b) = (tf.st.tensor(n), tf.st.tensor(w));
                matches!((a, b), (Ok(a), Ok(b)) if a.shape() == b.shape() && a.data() == b.data())
            });
            ensure!(same, "lm_head.weight differs from wte.weight, but config.json ties them (tie_word_embeddings)");
            continue;
        }
        bail!("the file has a tensor {n} that GPT2LMHeadModel does not have");
    }
    Ok(out)
}
