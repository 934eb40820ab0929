//! Masked-language-model training end to end (`data.task = "mlm"`): a small encoder learns a
//! repetitive text through BERT's masking, its checkpoint is a masked LM with the character
//! vocabulary's [MASK], a run started from it keeps its head, and bad settings are clear errors.
//! A WordPiece corpus is the stream `run_mlm.py` builds (tests/fixtures/mlm, from
//! scripts/make_mlm_fixtures.py), and an imported BERT trains on it: a `BertForMaskedLM` with
//! its head, all-MiniLM-L6-v2 (a `BertModel`) with a fresh one.
//! The head's numbers against transformers are in tests/fairness.rs, its gradients against
//! central differences in tests/gradcheck.rs, the masking's shares in `data::mlm`.

mod common;

use lmlab::config::RunConfig;
use lmlab::data::tokenizer::{Tokenizer, MASK_CHAR};
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

/// The ids of a WordPiece corpus are what transformers' run_mlm.py concatenates (each non-empty
/// line between [CLS] and [SEP], a line longer than the tokenizer's truncation kept whole), and
/// the positions masking never chooses are those its `special_tokens_mask` marks.
#[test]
fn a_wordpiece_corpus_is_the_stream_run_mlm_builds() {
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("mlm/wordpiece_stream.json")).unwrap()).unwrap();
    let json = std::fs::read_to_string(common::fixture(fx["tokenizer"].as_str().unwrap())).unwrap();
    let tok = Tokenizer::from_json(&json).unwrap();
    assert_eq!(tok.kind(), "hf");
    let ids = tok.encode_corpus(fx["text"].as_str().unwrap()).unwrap();
    let want: Vec<u32> = fx["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(ids, want);
    let special = tok.mlm_special_ids().unwrap();
    for (i, (id, m)) in ids.iter().zip(fx["special_tokens_mask"].as_array().unwrap()).enumerate() {
        assert_eq!(special.contains(id), m.as_u64() == Some(1), "position {i}, id {id}");
    }
    // The stream holds [UNK]s for unknown characters: ordinary positions.
    let unk = fx["unk_id"].as_u64().unwrap() as u32;
    assert!(ids.contains(&unk) && !special.contains(&unk));
    assert!(tok.encode_corpus("\n  \n").is_err());
}

/// The run config of a masked LM trained from `init_from` on `corpus`.
fn fine_tune_config(dir: &Path, init_from: &Path, corpus: &Path, extra: &[&str]) -> RunConfig {
    let text = format!(
        r#"
[model]
block_size = 32
dropout = 0.0

[data]
task = "mlm"
path = "{}"
val_fraction = 0.2

[train]
init_from = "{}"
out_dir = "{}"
batch_size = 8
max_iters = 60
eval_interval = 60
eval_iters = 8
log_interval = 20
seed = 5
threads = 2

[optim]
learning_rate = 3e-3
warmup_iters = 5
lr_decay_iters = 60
"#,
        corpus.display(),
        init_from.display(),
        dir.join("run").display()
    );
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    RunConfig::from_user_toml_str(&text, &extra).unwrap()
}

/// The validation losses `metrics.jsonl` recorded, in order.
fn val_losses(run_dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["val_loss"].as_f64())
        .collect()
}

/// An imported `BertForMaskedLM` (the small random one of the fairness fixtures) goes on
/// training as a masked LM on a WordPiece corpus: its head carries over, the loss falls, and
/// the checkpoint keeps the WordPiece tokenizer and the head.
#[test]
fn an_imported_bert_masked_lm_trains_on_wordpiece_text() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("bert");
    let src = common::fixture("fairness/bert_crows");
    common::ok(common::lmlab(&["import", "--hf", src.to_str().unwrap(), "--out", ckpt.to_str().unwrap()]));
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("mlm/wordpiece_stream.json")).unwrap()).unwrap();
    let corpus = dir.path().join("text.txt");
    std::fs::write(&corpus, fx["text"].as_str().unwrap().repeat(40)).unwrap();

    let cfg = fine_tune_config(dir.path(), &ckpt, &corpus, &["train.eval_interval=30"]);
    let (_, _, _, note) = lmlab::train::run::pretrained_model::<Transformer>(&cfg, None).unwrap();
    assert!(note.contains("new: none"), "{note}");
    let quiet = TrainOptions { quiet: true, json: false };
    let s = train(cfg, None, &quiet).unwrap();
    let losses = val_losses(&s.run_dir);
    // Steps 0, 30 and 60. The random BERT (weights N(0, 0.3)) starts above ln(vocab) = 5.8
    // nats (6.95); 60 steps on a repeated text take it to 4.7.
    assert_eq!(losses.len(), 3, "{losses:?}");
    assert!(losses[0] > 6.0 && losses[2] < 0.75 * losses[0] && losses[2] < losses[1], "val losses {losses:?}");
    let ck = checkpoint::load(&s.checkpoint, 2, false).unwrap();
    assert!(ck.model.is_masked_lm());
    assert_eq!(ck.tokenizer.kind(), "hf");
    assert_eq!(ck.tokenizer.mask_token(), Some(fx["mask_id"].as_u64().unwrap() as u32));
}

/// all-MiniLM-L6-v2 has no masked-LM head: an MLM run from it starts one fresh (dense, norm and
/// bias; the decoder is its tied word embedding) and trains.
#[test]
fn minilm_gets_a_fresh_masked_lm_head() {
    let Some(minilm) = common::minilm_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("minilm");
    common::ok(common::lmlab(&["import", "--hf", minilm.to_str().unwrap(), "--out", ckpt.to_str().unwrap()]));
    let corpus = dir.path().join("text.txt");
    std::fs::write(&corpus, "The cat sat on the mat.\nA dog ran to the log in the park.\n".repeat(20)).unwrap();
    let cfg = fine_tune_config(
        dir.path(),
        &ckpt,
        &corpus,
        &["train.max_iters=2", "train.batch_size=2", "train.eval_iters=1"],
    );
    let (_, model, _, note) = lmlab::train::run::pretrained_model::<Transformer>(&cfg, None).unwrap();
    assert!(note.contains("new: mlm.dense.weight, mlm.dense.bias, mlm.norm"), "{note}");
    assert!(model.is_masked_lm());
    let quiet = TrainOptions { quiet: true, json: false };
    let s = train(cfg, None, &quiet).unwrap();
    assert_eq!(s.steps, 2);
    assert!(s.val_loss.is_finite());
    let ck = checkpoint::load(&s.checkpoint, 2, false).unwrap();
    assert!(ck.model.is_masked_lm());
}
