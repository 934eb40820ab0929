//! Every committed recipe under configs/ parses and validates, so a typo in one (an unknown
//! key, a value out of range) fails here rather than in a user's first run. A recipe that starts
//! from a pretrained checkpoint (`train.init_from`, made by `lmlab import --hf`) is resolved
//! against a stand-in with all-MiniLM-L6-v2's `[model]` as `lmlab import` writes it.

use lmlab::config::RunConfig;

const MINILM_MODEL: &str = r#"[model]
arch = "encoder"
vocab_size = 30522
block_size = 512
n_layer = 6
n_head = 12
n_embd = 384
ffn_hidden = 1536
activation = "gelu"
norm = "layernorm"
norm_eps = 1e-12
norm_position = "post"
final_norm = false
embedding_norm = true
position = "learned"
bias = true
tie_embeddings = true
pooling = "mean"
"#;

#[test]
fn every_committed_config_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let pretrained = tempfile::tempdir().unwrap();
    std::fs::write(pretrained.path().join("config.toml"), MINILM_MODEL).unwrap();
    let stand_in = format!("train.init_from=\"{}\"", pretrained.path().display());
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 16, "{} configs in {}", names.len(), dir.display());
    let mut from_pretrained = 0;
    let failures: Vec<String> = names
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let parsed = match RunConfig::from_toml_str(&text, &[]) {
                Ok(c) if c.train.init_from.is_empty() => Ok(c),
                _ if text.contains("init_from") => {
                    from_pretrained += 1;
                    RunConfig::from_user_toml_str(&text, std::slice::from_ref(&stand_in))
                }
                other => other,
            };
            parsed.err().map(|e| format!("{}: {e:#}", p.display()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(from_pretrained >= 6, "{from_pretrained} recipes start from MiniLM");
}
