//! The translation and classification tasks end to end on small synthetic data: config
//! validation, training through `train::train`, checkpoints, translation and BLEU, accuracy.

use lmlab::config::RunConfig;
use lmlab::infer::translate::{translate_lines, DecodeOptions};
use lmlab::io::checkpoint;
use lmlab::train::{self, TrainOptions};
use std::path::Path;

fn write(dir: &Path, name: &str, lines: &[String]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p.to_string_lossy().into_owned()
}

/// A toy "language pair": the target is the source's words in reverse order, upper-cased.
fn toy_pairs(n: usize, seed: usize) -> (Vec<String>, Vec<String>) {
    let words = ["der", "hund", "eine", "katze", "sieht", "den", "ball", "rot", "blau", "laeuft"];
    let (mut src, mut tgt) = (Vec::new(), Vec::new());
    for i in 0..n {
        let len = 2 + (i * 7 + seed) % 4;
        let s: Vec<&str> = (0..len).map(|j| words[(i * 3 + j * 5 + seed) % words.len()]).collect();
        src.push(s.join(" "));
        tgt.push(s.iter().rev().map(|w| w.to_uppercase()).collect::<Vec<_>>().join(" "));
    }
    (src, tgt)
}

fn config(text: &str) -> RunConfig {
    RunConfig::from_toml_str(text, &[]).unwrap()
}

#[test]
fn translation_trains_translates_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tgt) = toy_pairs(400, 0);
    let (vs, vt) = toy_pairs(40, 1);
    let f = |n: &str, l: &[String]| write(dir.path(), n, l);
    let cfg = format!(
        r#"
[model]
arch = "encoder_decoder"
block_size = 16
n_layer = 1
n_head = 2
n_embd = 32
[data]
task = "translate"
src_train = "{}"
tgt_train = "{}"
src_val = "{}"
tgt_val = "{}"
vocab_size = 300
max_len = 12
[train]
out_dir = "{}"
batch_size = 32
max_iters = 300
eval_interval = 150
log_interval = 50
[optim]
learning_rate = 3e-3
warmup_iters = 20
lr_decay_iters = 300
"#,
        f("train.src", &src),
        f("train.tgt", &tgt),
        f("val.src", &vs),
        f("val.tgt", &vt),
        dir.path().join("run").display()
    );
    let s = train::train(config(&cfg), None, &TrainOptions { quiet: true, ..Default::default() }).unwrap();
    assert!(s.val_loss < 1.0, "the toy pair is learnable: val loss {}", s.val_loss);
    let mut ck = checkpoint::load(&s.checkpoint, 16, false).unwrap();
    assert!(matches!(ck.tokenizer, lmlab::data::Tokenizer::Bpe(_)), "the checkpoint keeps the BPE tokenizer");
    let opts = DecodeOptions { beam: 3, max_len: 0, length_penalty: 0.6, ..Default::default() };
    let hyps = translate_lines(&mut ck.model, &ck.tokenizer, &vs, &opts, 12, |_| {}).unwrap();
    let h: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
    let r = vec![vt.iter().map(|s| s.as_str()).collect::<Vec<_>>()];
    let bleu = lmlab::eval::bleu::corpus_bleu(&h, &r).unwrap();
    assert!(bleu.score > 50.0, "BLEU {} on the toy pair; hypotheses {:?}", bleu.score, &hyps[..3]);
}

#[test]
fn classifier_learns_a_separable_task() {
    let dir = tempfile::tempdir().unwrap();
    let pos = ["good", "great", "fine", "lovely", "superb"];
    let neg = ["bad", "awful", "poor", "dull", "weak"];
    let filler = ["the", "movie", "was", "really", "a", "plot", "and", "acting"];
    let rows = |n: usize, seed: usize| -> Vec<String> {
        let mut v = vec!["sentence\tlabel".to_string()];
        for i in 0..n {
            let label = (i * 7 + seed) % 2;
            let key = if label == 1 { pos[(i + seed) % 5] } else { neg[(i * 3 + seed) % 5] };
            let mut words: Vec<&str> = (0..4).map(|j| filler[(i * 5 + j * 3 + seed) % filler.len()]).collect();
            words.insert((i + seed) % 5, key);
            v.push(format!("{} \t{label}", words.join(" ")));
        }
        v
    };
    let cfg = format!(
        r#"
[model]
arch = "encoder"
block_size = 12
n_layer = 1
n_head = 2
n_embd = 32
pooling = "mean"
[data]
task = "classify"
format = "sst2"
train = "{}"
test = "{}"
vocab_size = 300
max_len = 10
[train]
out_dir = "{}"
batch_size = 32
max_iters = 150
eval_interval = 150
log_interval = 50
[optim]
learning_rate = 3e-3
warmup_iters = 10
lr_decay_iters = 150
"#,
        write(dir.path(), "train.tsv", &rows(300, 0)),
        write(dir.path(), "test.tsv", &rows(100, 1)),
        dir.path().join("run").display()
    );
    train::train(config(&cfg), None, &TrainOptions { quiet: true, ..Default::default() }).unwrap();
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/results.json")).unwrap()).unwrap();
    let acc = results["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "test accuracy {acc} on a task decided by one keyword");
}

#[test]
fn task_configs_are_checked() {
    let base = "[data]\ntask = \"translate\"\nsrc_train = \"a\"\ntgt_train = \"b\"\nsrc_val = \"c\"\ntgt_val = \"d\"\n";
    let err = |t: &str| RunConfig::from_toml_str(t, &[]).unwrap_err().to_string();
    assert!(err(base).contains("encoder_decoder"), "{}", err(base));
    let t = format!("[model]\narch = \"encoder_decoder\"\nblock_size = 10\n{base}");
    assert!(err(&t).contains("block_size"), "{}", err(&t));
    let t = "[model]\narch = \"encoder_decoder\"\n[data]\ntask = \"translate\"\nsrc_train = \"a\"\n";
    assert!(err(t).contains("data.tgt_train"), "{}", err(t));
    let t = "[model]\narch = \"encoder\"\n[data]\ntask = \"classify\"\ntrain = \"a\"\ntest = \"b\"\nformat = \"csv\"\n";
    assert!(err(t).contains("data.format"), "{}", err(t));
    let t = "[model]\narch = \"encoder\"\n[data]\ntask = \"lm\"\n";
    assert!(err(t).contains("decoder"), "{}", err(t));
    // Summarization: an encoder-decoder on JSON Lines, with its files, fields and lengths.
    let ed = "[model]\narch = \"encoder_decoder\"\nblock_size = 65\n";
    let sum = "[data]\ntask = \"summarize\"\nformat = \"jsonl\"\ntrain = \"a\"\nval = \"b\"\nsource_field = \"dialogue\"\ntarget_field = \"summary\"\n";
    assert!(err(sum).contains("encoder_decoder"), "{}", err(sum));
    assert!(RunConfig::from_toml_str(&format!("{ed}{sum}"), &[]).is_ok());
    for (key, want) in
        [("format", "data.format = \"jsonl\""), ("val", "data.val"), ("target_field", "data.target_field")]
    {
        let t = format!("{ed}{sum}").lines().filter(|l| !l.starts_with(key)).collect::<Vec<_>>().join("\n");
        assert!(err(&t).contains(want), "without {key}: {}", err(&t));
    }
    // The longest source must fit block_size, the longest target with its BOS/EOS too.
    let t = format!("{ed}{sum}max_src_len = 66\n");
    assert!(err(&t).contains("block_size (65)") && err(&t).contains("max_src_len"), "{}", err(&t));
    let t = format!("{ed}{sum}max_src_len = 65\nmax_tgt_len = 65\n");
    assert!(err(&t).contains("longest target (65 tokens"), "{}", err(&t));
    assert!(RunConfig::from_toml_str(&format!("{ed}{sum}max_src_len = 65\nmax_tgt_len = 64\n"), &[]).is_ok());
}

#[test]
fn translation_input_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tgt) = toy_pairs(20, 0);
    let cfg = format!(
        "[model]\narch = \"encoder_decoder\"\nblock_size = 16\nn_layer = 1\nn_head = 2\nn_embd = 16\n\
         [data]\ntask = \"translate\"\nsrc_train = \"{}\"\ntgt_train = \"{}\"\nsrc_val = \"{}\"\ntgt_val = \"{}\"\n\
         vocab_size = 300\nmax_len = 12\n[train]\nout_dir = \"{}\"\nmax_iters = 2\n",
        write(dir.path(), "s", &src),
        write(dir.path(), "t", &tgt[..15]),
        write(dir.path(), "vs", &src),
        dir.path().join("missing.txt").display(),
        dir.path().join("run").display()
    );
    let e = format!(
        "{:#}",
        train::train(config(&cfg), None, &TrainOptions { quiet: true, ..Default::default() }).unwrap_err()
    );
    assert!(e.contains("20") && e.contains("15"), "line counts named: {e}");
}
