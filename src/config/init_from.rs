//! `train.init_from`: a run that starts from a pretrained checkpoint takes that checkpoint's
//! `[model]` section. The run's own `[model]` may only change what leaves every pretrained
//! weight's shape and meaning alone (as `from_pretrained(..., hidden_dropout_prob=0.2)` does in
//! `transformers`); any other key must repeat the checkpoint's value.
//!
//! The merge happens on the TOML tables of the user's config file, before it is parsed, so the
//! resolved `[model]` is what the run saves: a checkpoint of a fine-tuning run reads and resumes
//! without its pretrained source.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// `[model]` keys a fine-tuning run may set away from the pretrained checkpoint's: dropout
/// rates, the classifier's pooling and classes (the head is new), and a shorter context (the
/// first rows of a learned position table).
pub const OVERRIDABLE: [&str; 5] = ["dropout", "attn_dropout", "pooling", "num_classes", "block_size"];

/// Replaces `table["model"]` by the checkpoint's `[model]` with the overridable keys of the
/// user's on top, when `train.init_from` names a checkpoint; nothing otherwise.
pub(super) fn resolve_model(table: &mut toml::Table) -> Result<()> {
    let Some(dir) = table
        .get("train")
        .and_then(|t| t.get("init_from"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
    else {
        return Ok(());
    };
    let path = Path::new(&dir).join("config.toml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("train.init_from = {dir:?}: cannot read the checkpoint's config {}", path.display())
    })?;
    let saved: toml::Table =
        toml::from_str(&text).with_context(|| format!("train.init_from: {} is not valid TOML", path.display()))?;
    let Some(toml::Value::Table(mut model)) = saved.get("model").cloned() else {
        bail!("train.init_from: {} has no [model] section", path.display());
    };
    let user = match table.remove("model") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("`model` must be a section"),
    };
    for (key, value) in user {
        if OVERRIDABLE.contains(&key.as_str()) {
            model.insert(key, value);
            continue;
        }
        match model.get(&key) {
            Some(saved) if same(saved, &value) => {}
            saved => bail!(
                "model.{key} = {value} differs from the train.init_from checkpoint's ({}): fine-tuning keeps the \
                 pretrained model's shape, so only model.{} may change (leave the rest out)",
                saved.map_or("unset".to_string(), |s| s.to_string()),
                OVERRIDABLE.join(", model.")
            ),
        }
    }
    table.insert("model".into(), toml::Value::Table(model));
    Ok(())
}

/// TOML equality that takes `1` and `1.0` as the same number.
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    let num = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y || ((x - y) / x.abs().max(y.abs())).abs() < 1e-6,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint_dir(model: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), format!("[model]\n{model}")).unwrap();
        dir
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn takes_the_checkpoint_model_with_allowed_overrides() {
        let ck = checkpoint_dir("arch = \"encoder\"\nn_layer = 6\nn_embd = 384\ndropout = 0.0\nblock_size = 512\n");
        let dir = ck.path().display();
        let mut t = table(&format!(
            "[model]\ndropout = 0.1\nblock_size = 128\nn_layer = 6\nn_embd = 384.0\n[train]\ninit_from = \"{dir}\"\n"
        ));
        resolve_model(&mut t).unwrap();
        let m = t["model"].as_table().unwrap();
        assert_eq!(m["arch"].as_str(), Some("encoder"));
        assert_eq!(m["dropout"].as_float(), Some(0.1));
        assert_eq!(m["block_size"].as_integer(), Some(128));
        // A key that changes the shape is refused, naming it.
        let mut t = table(&format!("[model]\nn_layer = 4\n[train]\ninit_from = \"{dir}\"\n"));
        let e = resolve_model(&mut t).unwrap_err().to_string();
        assert!(e.contains("model.n_layer = 4") && e.contains("(6)"), "{e}");
        let mut t = table(&format!("[model]\nffn_hidden = 10\n[train]\ninit_from = \"{dir}\"\n"));
        let e = resolve_model(&mut t).unwrap_err().to_string();
        assert!(e.contains("model.ffn_hidden") && e.contains("unset"), "{e}");
        // Without init_from nothing changes.
        let mut t = table("[model]\nn_layer = 4\n");
        resolve_model(&mut t).unwrap();
        assert_eq!(t["model"]["n_layer"].as_integer(), Some(4));
    }

    #[test]
    fn a_missing_checkpoint_is_named() {
        let mut t = table("[train]\ninit_from = \"/nonexistent/ckpt\"\n");
        let e = format!("{:#}", resolve_model(&mut t).unwrap_err());
        assert!(e.contains("/nonexistent/ckpt") && e.contains("train.init_from"), "{e}");
    }
}
