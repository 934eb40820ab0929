//! Extractive QA end to end without downloads: WordPiece offsets back to characters
//! (non-ASCII included), question + context windows with their labels, the span decoding back
//! to characters, a tiny encoder fine-tuned with `data.task = "qa"` from an lmlab checkpoint
//! with a BERT-style tokenizer, `lmlab answer` on it, and the bad-input errors.

use lmlab::config::RunConfig;
use lmlab::data::hf_tokenizer::HfTokenizer;
use lmlab::data::Tokenizer;
use lmlab::eval::squad::read_squad;
use lmlab::infer::qa_span::{best_spans, features, QaModel, QaSettings};
use lmlab::io::checkpoint;
use lmlab::model::transformer::{Arch, ModelConfig, Transformer};
use serde_json::{json, Value};
use std::path::Path;

const WORDS: [&str; 20] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "where", "is", "the", "cat", "dog", "bird", "on", "under", "mat", "box", "bed",
    ".", "?", "##s", "zurich", "cafe",
];

/// A BERT-style tokenizer.json (lower case, accents stripped, WordPiece) over [`WORDS`].
fn tokenizer() -> Tokenizer {
    let vocab: Vec<String> = WORDS.iter().enumerate().map(|(i, t)| format!("\"{t}\": {i}")).collect();
    let special = |id: usize| {
        json!({"id": id, "content": WORDS[id], "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let st = |id: &str, ty: u32| json!({"SpecialToken": {"id": id, "type_id": ty}});
    let seq = |id: &str, ty: u32| json!({"Sequence": {"id": id, "type_id": ty}});
    let doc = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0), special(1), special(2), special(3)],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [st("[CLS]", 0), seq("A", 0), st("[SEP]", 0)],
            "pair": [st("[CLS]", 0), seq("A", 0), st("[SEP]", 0), seq("B", 1), st("[SEP]", 1)],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100,
                  "vocab": serde_json::from_str::<Value>(&format!("{{{}}}", vocab.join(", "))).unwrap()}
    });
    Tokenizer::Hf(Box::new(HfTokenizer::from_bytes(doc.to_string().as_bytes(), 64).unwrap()))
}

fn settings(max_len: usize, stride: usize) -> QaSettings {
    QaSettings { max_len, doc_stride: stride, max_query_len: 16, max_answer_len: 5, n_best: 20 }
}

fn chars(s: &str, (a, b): (usize, usize)) -> String {
    s.chars().skip(a).take(b - a).collect()
}

#[test]
fn windows_label_the_answer_and_map_back_to_characters() {
    let tok = tokenizer();
    // Non-ASCII: "Zürich" and "Café" are 6 and 4 characters (7 and 5 bytes); the answer's
    // character offsets must survive the byte offsets the tokenizer reports.
    let context = "The Zürich cat is on the mat. The Café dog is under the bed. The bird is on the box.";
    let answer = context.find("under the bed").map(|b| context[..b].chars().count()).unwrap();
    let span = (answer, answer + "under the bed".chars().count());
    assert_eq!(chars(context, span), "under the bed");
    let q = "  where is the dog?";
    // One window holds everything.
    let one = features(&tok, q, context, Some(span), &settings(64, 8), 3).unwrap();
    assert_eq!(one.len(), 1);
    let f = &one[0];
    assert_eq!(f.question, 3);
    // [CLS] where is the dog ? [SEP] ... [SEP]: the leading spaces of the question dropped.
    assert_eq!(&f.ids[..7], &[2, 4, 5, 6, 8, 16, 3]);
    assert_eq!(*f.ids.last().unwrap(), 3);
    let (s, e) = f.label.unwrap();
    let (cs, ce) = (f.offsets[s as usize].unwrap(), f.offsets[e as usize].unwrap());
    assert_eq!(chars(context, (cs.0, ce.1)), "under the bed");
    // Every context token's offsets cut the original text at its words.
    let pieces: Vec<String> = f.offsets.iter().flatten().map(|&o| chars(context, o)).collect();
    assert_eq!(&pieces[..5], &["The", "Zürich", "cat", "is", "on"]);
    assert!(pieces.contains(&"Café".to_string()));
    assert!(f.offsets[..7].iter().all(|o| o.is_none()) && f.offsets.last().unwrap().is_none());

    // Short windows: 5 question pieces + 3 special tokens leave 10 of the 23 context tokens,
    // overlapping by 3: windows 0..10, 7..17, 14..23.
    let many = features(&tok, q, context, Some(span), &settings(18, 3), 0).unwrap();
    assert_eq!(many.len(), 3);
    let mut holding = 0;
    for f in &many {
        assert!(f.ids.len() <= 18);
        match f.label.unwrap() {
            (0, 0) => {}
            (s, e) => {
                holding += 1;
                let (cs, ce) = (f.offsets[s as usize].unwrap(), f.offsets[e as usize].unwrap());
                assert_eq!(chars(context, (cs.0, ce.1)), "under the bed");
            }
        }
        // The span decoding picks the labelled span when its logits are the largest.
        let (s, e) = match f.label.unwrap() {
            (0, 0) => continue,
            l => l,
        };
        let mut start = vec![0.0f32; f.ids.len()];
        let mut end = vec![0.0f32; f.ids.len()];
        start[s as usize] = 5.0;
        end[e as usize] = 5.0;
        let best = &best_spans(&start, &end, &f.offsets, 20, 5)[0];
        assert_eq!(chars(context, best.chars), "under the bed");
    }
    assert!(holding >= 1, "some window holds the whole answer");
    // A window too small for the question and the stride is an error saying so.
    let e = features(&tok, q, context, None, &settings(10, 3), 0).unwrap_err().to_string();
    assert!(e.contains("doc stride"), "{e}");
}

/// A toy SQuAD file, 6 paragraphs per article: three animals, two "on" something and one
/// "under" something, in a hashed order; the question asks where the one under something is
/// (the answer, e.g. "under the bed", is found without matching the question's animal, which a
/// tiny model would need far more steps to learn).
fn toy_squad(n_articles: usize, seed: usize) -> Value {
    let animals = ["cat", "dog", "bird"];
    let things = ["mat", "bed", "box"];
    let mut data = Vec::new();
    for a in 0..n_articles {
        let mut paragraphs = Vec::new();
        for p in 0..6 {
            let k = (a * 6 + p + seed) as u64;
            // splitmix64's finaliser, a hash of (paragraph, slot).
            let h = |i: u64| {
                let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i.wrapping_mul(0xD1B5_4A32_D192_ED03));
                x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (x ^ (x >> 31)) as usize
            };
            let under = h(0) % 3;
            let mut context = String::new();
            let mut qa = Value::Null;
            for i in 0..3 {
                let animal = animals[(i + h(1)) % 3];
                let thing = things[h(i as u64 + 2) % 3];
                if i == under {
                    let place = format!("under the {thing}");
                    let at = context.chars().count() + format!("The {animal} is ").chars().count();
                    qa = json!({"id": format!("a{a}p{p}"), "question": format!("Where is the {animal}?"),
                        "answers": [{"text": place, "answer_start": at}]});
                    context += &format!("The {animal} is {place}. ");
                } else {
                    context += &format!("The {animal} is on the {thing}. ");
                }
            }
            paragraphs.push(json!({"context": context.trim_end(), "qas": [qa]}));
        }
        data.push(json!({"title": format!("article {a}"), "paragraphs": paragraphs}));
    }
    json!({"version": "1.1", "data": data})
}

/// An imported-style checkpoint (task "pretrained") of a tiny encoder with [`tokenizer`].
fn pretrained(dir: &Path) {
    let tok = tokenizer();
    let cfg = ModelConfig {
        arch: Arch::Encoder,
        vocab_size: tok.vocab_size(),
        block_size: 48,
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        ..ModelConfig::default()
    };
    let mut m = Transformer::new(cfg, 1).unwrap();
    m.init_with(lmlab::model::InitScheme::Gpt2, 0.02, 1);
    checkpoint::save_new(dir, &m, &tok).unwrap();
}

fn config(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[data]
task = "qa"
train = "{d}/train.json"
test = "{d}/test.json"
heldout_articles = 2
val_fraction = 0.2
max_len = 40
doc_stride = 8
max_answer_len = 4
[train]
init_from = "{d}/pre"
out_dir = "{d}/run"
batch_size = 8
max_iters = 600
eval_interval = 300
log_interval = 50
threads = 2
[optim]
learning_rate = 3e-3
warmup_iters = 10
lr_decay_iters = 600
{extra}
"#,
        d = dir.display()
    )
}

#[test]
fn a_tiny_encoder_learns_toy_questions_and_answers_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pretrained(&d.join("pre"));
    let train = toy_squad(10, 0);
    std::fs::write(d.join("train.json"), train.to_string()).unwrap();
    // The test file repeats two training paragraphs (as XQuAD repeats SQuAD's): they must
    // leave training.
    let mut test = toy_squad(1, 0);
    test["data"][0]["paragraphs"] = json!([train["data"][0]["paragraphs"][0], train["data"][1]["paragraphs"][2]]);
    std::fs::write(d.join("test.json"), test.to_string()).unwrap();

    let cfg = RunConfig::from_user_toml_str(&config(d, ""), &[]).unwrap();
    let opts = lmlab::train::TrainOptions { quiet: true, ..Default::default() };
    lmlab::train::train(cfg, None, &opts).unwrap();
    let results: Value = serde_json::from_str(&std::fs::read_to_string(d.join("run/results.json")).unwrap()).unwrap();
    let split = &results["split"];
    // 10 articles × 6 paragraphs × 1 question; the last 2 articles held out; the test
    // paragraphs (and any training paragraph with the same text) excluded; 20% of the remaining
    // paragraphs validate.
    let test_contexts: Vec<&Value> =
        test["data"][0]["paragraphs"].as_array().unwrap().iter().map(|p| &p["context"]).collect();
    let excluded: usize = train["data"].as_array().unwrap()[..8]
        .iter()
        .flat_map(|a| a["paragraphs"].as_array().unwrap())
        .filter(|p| test_contexts.contains(&&p["context"]))
        .map(|p| p["qas"].as_array().unwrap().len())
        .sum();
    assert!(excluded >= 2);
    assert_eq!(split["heldout_questions"], 12);
    assert_eq!(split["excluded_training_questions"].as_u64().unwrap() as usize, excluded);
    assert_eq!(
        split["validation_questions"].as_u64().unwrap() + split["train_questions"].as_u64().unwrap(),
        (48 - excluded) as u64
    );
    // The metrics log: the span loss fell from the untrained head's.
    let log = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    let losses: Vec<f64> =
        log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter_map(|v| v["loss"].as_f64()).collect();
    assert!(losses.len() >= 3 && losses[losses.len() - 1] < 0.5 * losses[0], "{losses:?}");
    // The held-out articles' predictions score as results.json says, and the toy task is learnt.
    for (name, file) in [("heldout", "train.json"), ("test", "test.json")] {
        let questions = read_squad(&std::fs::read_to_string(d.join(file)).unwrap(), file).unwrap();
        let preds: std::collections::HashMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(d.join(format!("run/{name}_predictions.json"))).unwrap())
                .unwrap();
        let questions: Vec<_> = questions.into_iter().filter(|q| preds.contains_key(&q.id)).collect();
        assert_eq!(questions.len(), results[name]["questions"].as_u64().unwrap() as usize);
        let s = lmlab::eval::squad::evaluate(&questions, &preds);
        assert!((s.f1 - results[name]["f1"].as_f64().unwrap()).abs() < 1e-9);
        if name == "heldout" {
            assert!(s.f1 > 80.0, "{name}: F1 {} on the toy questions", s.f1);
        }
    }

    // `lmlab answer` on the checkpoint: one question, JSON, and the batch predictions file.
    let ck = d.join("run/ckpt");
    let context = "The cat is on the box. The bird is under the mat. The dog is on the bed.";
    std::fs::write(d.join("context.txt"), context).unwrap();
    let exe = env!("CARGO_BIN_EXE_lmlab");
    let out = std::process::Command::new(exe)
        .args(["answer", "--checkpoint", ck.to_str().unwrap(), "--context"])
        .arg(d.join("context.txt"))
        .args(["--question", "Where is the bird?", "--top-k", "3", "--json", "--threads", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let answers = v["answers"].as_array().unwrap();
    assert!(!answers.is_empty() && answers.len() <= 3);
    for a in answers {
        let (s, e) = (a["start"].as_u64().unwrap() as usize, a["end"].as_u64().unwrap() as usize);
        assert_eq!(chars(context, (s, e)), a["text"].as_str().unwrap());
    }
    assert!(answers[0]["score"].as_f64() >= answers.last().unwrap()["score"].as_f64());
    let preds = d.join("preds.json");
    let out = std::process::Command::new(exe)
        .args(["answer", "--checkpoint", ck.to_str().unwrap(), "--data"])
        .arg(d.join("train.json"))
        .args(["--articles", "8..10", "--output", preds.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p: std::collections::HashMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&preds).unwrap()).unwrap();
    assert_eq!(p.len(), 12);
    assert!(p.keys().all(|k| k.starts_with("a8") || k.starts_with("a9")));
    // The same model in the library answers the same.
    let mut qa = QaModel::load(&ck, 4).unwrap();
    let lib = qa.answer_all(&[("Where is the bird?", context)], 3, |_| {}).unwrap();
    assert_eq!(lib[0][0].text, answers[0]["text"].as_str().unwrap());
    assert!(lib[0][0].text.starts_with("under"), "{:?}", lib[0]);

    // A checkpoint that is not a QA model is refused by name.
    let e = format!("{:#}", QaModel::load(&d.join("pre"), 1).err().unwrap());
    assert!(e.contains("not an extractive QA model") && e.contains("pre"), "{e}");
    let out = std::process::Command::new(exe)
        .args(["answer", "--checkpoint", d.join("pre").to_str().unwrap(), "--context"])
        .arg(d.join("context.txt"))
        .args(["--question", "Where?"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not an extractive QA model"));
}

#[test]
fn bad_training_data_is_an_error_naming_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pretrained(&d.join("pre"));
    // A test file whose paragraph no training paragraph repeats (its text is not a toy context).
    let mut test = toy_squad(1, 0);
    test["data"][0]["paragraphs"] = json!([{"context": "The cat is on the mat.", "qas": [
        {"id": "t0", "question": "Where is the cat?", "answers": [{"text": "on the mat", "answer_start": 11}]}]}]);
    std::fs::write(d.join("test.json"), test.to_string()).unwrap();
    let opts = lmlab::train::TrainOptions { quiet: true, ..Default::default() };
    let run = |train: &Value| {
        std::fs::write(d.join("train.json"), train.to_string()).unwrap();
        let cfg = RunConfig::from_user_toml_str(&config(d, ""), &[]).unwrap();
        format!("{:#}", lmlab::train::train(cfg, None, &opts).unwrap_err())
    };
    // An answer that is not at its answer_start.
    let mut bad = toy_squad(4, 0);
    bad["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] = json!(1);
    let id = bad["data"][0]["paragraphs"][1]["qas"][0]["id"].as_str().unwrap().to_string();
    let e = run(&bad);
    assert!(e.contains(&id) && e.contains("answer_start 1") && e.contains("train.json"), "{e}");
    // A record without its question.
    let mut bad = toy_squad(4, 0);
    bad["data"][1]["paragraphs"][0]["qas"][0].as_object_mut().unwrap().remove("question");
    let id = bad["data"][1]["paragraphs"][0]["qas"][0]["id"].as_str().unwrap().to_string();
    let e = run(&bad);
    assert!(e.contains(&id) && e.contains("no \"question\""), "{e}");
    // A pretrained checkpoint whose tokenizer is not BERT-style (a character vocabulary).
    let char_ck = d.join("char");
    let tok = Tokenizer::Char(lmlab::data::CharTokenizer::from_corpus("where is the cat").unwrap());
    let cfg = ModelConfig {
        arch: Arch::Encoder,
        vocab_size: tok.vocab_size(),
        block_size: 48,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        ..ModelConfig::default()
    };
    checkpoint::save_new(&char_ck, &Transformer::new(cfg, 1).unwrap(), &tok).unwrap();
    std::fs::write(d.join("train.json"), toy_squad(4, 0).to_string()).unwrap();
    let text = config(d, "").replace(&format!("{}/pre", d.display()), &char_ck.display().to_string());
    let cfg = RunConfig::from_user_toml_str(&text, &[]).unwrap();
    let e = format!("{:#}", lmlab::train::train(cfg, None, &opts).unwrap_err());
    assert!(e.contains("BERT-style") && e.contains("init_from"), "{e}");
    // data.task = "qa" without init_from.
    let text = config(d, "").replace(&format!("init_from = \"{}/pre\"", d.display()), "");
    let e = format!("{:#}", RunConfig::from_user_toml_str(&text, &[]).unwrap_err());
    assert!(e.contains("train.init_from"), "{e}");
}
