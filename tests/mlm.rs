//! Masked-language-model training end to end (`data.task = "mlm"`): a small encoder learns a
//! repetitive text through BERT's masking, its checkpoint is a masked LM with the character
//! vocabulary's [MASK], a run started from it keeps its head, and bad settings are clear errors.
//! The head's numbers against transformers are in tests/fairness.rs, its gradients against
//! central differences in tests/gradcheck.rs, the masking's shares in `data::mlm`.

mod common;

use lmlab::config::RunConfig;
use lmlab::data::tokenizer::MASK_CHAR;
use lmlab::io::checkpoint;
use lmlab::model::transformer::Transformer;
use lmlab::train::{train, TrainOptions};
use std::path::Path;

fn config(dir: &Path, corpus: &Path, extra: &[&str]) -> RunConfig {
    let text = format!(
        r#"
[model]
arch = "encoder"
block_size = 16
n_layer = 1
n_head = 2
n_embd = 32
dropout = 0.0
position = "rope"

[data]
task = "mlm"
path = "{}"
val_fraction = 0.1

[train]
out_dir = "{}"
batch_size = 8
max_iters = 800
eval_interval = 400
eval_iters = 4
log_interval = 50
seed = 3
threads = 2

[optim]
learning_rate = 3e-3
warmup_iters = 10
lr_decay_iters = 800
"#,
        corpus.display(),
        dir.join("run").display()
    );
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    RunConfig::from_toml_str(&text, &extra).unwrap()
}

#[test]
fn a_masked_lm_learns_and_its_checkpoint_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("text.txt");
    std::fs::write(&corpus, "the cat sat on the mat. the dog ran to the log. ".repeat(300)).unwrap();
    let quiet = TrainOptions { quiet: true, json: false };
    let s = train(config(dir.path(), &corpus, &[]), None, &quiet).unwrap();
    // 15 characters and [MASK]: a model that knows nothing scores ln(16) = 2.77 nats, one that
    // knows the characters' frequencies 2.3; the text repeats, so the characters around a
    // masked one give it away (RoPE: with learned positions an encoder this small stays at the
    // frequencies for hundreds of steps, experiments/explaining.toml).
    assert!(s.val_loss < 1.2, "val loss {} after {} steps", s.val_loss, s.steps);
    let ck = checkpoint::load(&s.checkpoint, 4, false).unwrap();
    assert!(ck.model.is_masked_lm());
    let v = ck.model.config.vocab_size;
    assert_eq!(ck.tokenizer.vocab_size(), v);
    assert_eq!(ck.tokenizer.mask_token(), Some(v as u32 - 1));
    assert_eq!(ck.tokenizer.decode(&[v as u32 - 1]).unwrap(), MASK_CHAR.to_string());
    assert!(ck.model.layout.get("mlm.dense.weight").is_some() && ck.model.layout.get("classifier.weight").is_none());

    // Predicting a masked character from both sides: "the c[MASK]t sat" → 'a'.
    let mut m = ck.model;
    let tok = ck.tokenizer;
    let mut ids = tok.encode("the cat sat on t").unwrap();
    ids[5] = v as u32 - 1;
    m.forward_mlm(&ids, None, None, 1, ids.len(), false, 0).unwrap();
    let row = &m.logits()[5 * v..6 * v];
    let best = (0..v).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
    assert_eq!(tok.decode(&[best as u32]).unwrap(), "a");

    // A run started from it keeps the masked-LM head (and everything else).
    let init = config(
        &dir.path().join("second"),
        &corpus,
        &[&format!("train.init_from=\"{}\"", s.checkpoint.display()), "train.max_iters=1"],
    );
    let (_, again, _, note) = lmlab::train::run::pretrained_model::<Transformer>(&init, None).unwrap();
    let r = again.layout.get("mlm.bias").unwrap().range();
    assert_eq!(again.params[r.clone()], m.params[r], "{note}");

    // A causal LM's forward pass on a masked LM says what it is.
    let e = format!("{:#}", m.forward_lm(&ids, None, 1, ids.len(), false, 0).unwrap_err());
    assert!(e.contains("a masked LM"), "{e}");
}

#[test]
fn bad_masked_lm_settings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("text.txt");
    std::fs::write(&corpus, "abc ".repeat(100)).unwrap();
    let text = std::fs::read_to_string(&corpus).unwrap();
    assert!(!text.is_empty());
    let base = config(dir.path(), &corpus, &[]).to_toml();
    let err = |set: &[&str]| {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        format!("{:#}", RunConfig::from_toml_str(&base, &set).unwrap_err())
    };
    assert!(err(&["model.arch=\"decoder\""]).contains("data.task = \"mlm\" needs model.arch = \"encoder\""));
    assert!(err(&["data.mlm_probability=1.5"]).contains("data.mlm_probability must be in (0, 1)"));
    // A corpus that already holds the [MASK] character.
    std::fs::write(&corpus, format!("abc{MASK_CHAR}abc ").repeat(100)).unwrap();
    let quiet = TrainOptions { quiet: true, json: false };
    let e = format!("{:#}", train(config(dir.path(), &corpus, &[]), None, &quiet).unwrap_err());
    assert!(e.contains("U+E000"), "{e}");
}
