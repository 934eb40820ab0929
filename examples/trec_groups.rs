//! Predictions of a TREC question classifier, written as the three aligned files
//! `lmlab eval fairness groups` reads, with two real groupings of the test questions:
//!
//! ```text
//! cargo run --release --example trec_groups -- CKPT TRAIN.label TEST.label OUT_DIR
//! lmlab eval fairness groups --gold OUT_DIR/gold.txt --pred OUT_DIR/pred.txt \
//!     --groups OUT_DIR/groups.csv --group-column length --positive HUM
//! ```
//!
//! `groups.csv` has the columns `length` (the question's words: short ≤ 7, medium 8–10,
//! long ≥ 11) and `wh` (its first word lower-cased when it is what, how, who, where, when,
//! which or why; otherwise "other"). These are properties of the questions, not of people.
//! The label names come from the training file, as training assigns them.

use anyhow::{bail, Context, Result};
use lmlab::data::classify::LabelledText;
use lmlab::io::checkpoint;
use std::path::Path;

fn length_bucket(text: &str) -> &'static str {
    match text.split_whitespace().count() {
        0..=7 => "short",
        8..=10 => "medium",
        _ => "long",
    }
}

fn wh_word(text: &str) -> String {
    let first = text.split_whitespace().next().unwrap_or("").to_lowercase();
    let wh = ["what", "how", "who", "where", "when", "which", "why"];
    if wh.contains(&first.as_str()) {
        first
    } else {
        "other".into()
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ckpt, train, test, out] = args.as_slice() else {
        bail!("usage: trec_groups CKPT TRAIN.label TEST.label OUT_DIR");
    };
    let mut ck = checkpoint::load_inference(Path::new(ckpt), 32)?;
    let names = LabelledText::load_trec(Path::new(train), true)?.label_names;
    let test = LabelledText::load_trec_with_labels(Path::new(test), true, &names)?;
    let max_len = ck.run_config.data.max_len;
    let pred = lmlab::train::classify::predict(&mut ck.model, &ck.tokenizer, &test.texts, max_len)?;
    let out = Path::new(out);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let lines = |v: Vec<String>| v.join("\n") + "\n";
    std::fs::write(out.join("gold.txt"), lines(test.labels.iter().map(|&l| names[l].clone()).collect()))?;
    std::fs::write(out.join("pred.txt"), lines(pred.iter().map(|&l| names[l].clone()).collect()))?;
    let rows = test.texts.iter().map(|t| format!("{},{}", length_bucket(t), wh_word(t)));
    std::fs::write(out.join("groups.csv"), lines(std::iter::once("length,wh".to_string()).chain(rows).collect()))?;
    let correct = pred.iter().zip(&test.labels).filter(|(p, g)| p == g).count();
    println!(
        "{} questions, accuracy {:.4}; wrote gold.txt, pred.txt, groups.csv to {}",
        pred.len(),
        correct as f64 / pred.len() as f64,
        out.display()
    );
    Ok(())
}
