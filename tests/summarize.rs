//! Summarization: reading JSON Lines records (good and malformed), the extractive baselines on
//! hand-made dialogues, the decoding constraints against Hugging Face's logits processors
//! (fixture from scripts/make_summarize_fixtures.py), multi-reference ROUGE, and `lmlab
//! train` + `lmlab summarize` end to end on a tiny synthetic task. Decoding with the constraints
//! on small models is tested in tests/translate.rs (same decoder).

mod common;
use common::{fixture, lmlab, ok, text};
use lmlab::data::summarize::{read_pairs, read_records, utterances};
use lmlab::eval::rouge::rouge_multi;
use lmlab::eval::summarization::score_summaries;
use lmlab::infer::beam::{end_banned, repeated_ngram_bans, LengthNorm};
use lmlab::infer::summarize::{lead, longest, Baseline};
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn records_fields_and_reference_detection() {
    let dir = tempfile::tempdir().unwrap();
    let train = write(
        dir.path(),
        "train.jsonl",
        "{\"fname\": \"a\", \"dialogue\": \"#P1#: hi\\n#P2#: yo\", \"summary\": \"greeting\", \"topic\": \"t\"}\n\n\
         {\"dialogue\": \"x\", \"summary\": \"y\"}\n",
    );
    let pairs = read_pairs(&train, "dialogue", "summary").unwrap();
    assert_eq!(pairs, [("#P1#: hi\n#P2#: yo".to_owned(), "greeting".to_owned()), ("x".into(), "y".into())]);
    let recs = read_records(&train, "dialogue", "summary", &[], true).unwrap();
    assert_eq!((recs[0].line, recs[1].line), (1, 3), "the blank line is skipped but counted");
    assert_eq!(recs[0].id.as_deref(), Some("a"));
    assert_eq!(recs[1].id, None);
    assert_eq!(recs[0].references, ["greeting"]);

    // DialogSum's test records: summary1..summary3 found from target_field "summary".
    let test = write(
        dir.path(),
        "test.jsonl",
        "{\"dialogue\": \"d\", \"summary1\": \"s1\", \"summary2\": \"s2\", \"summary3\": \"s3\", \"summary5\": \"gap\"}\n",
    );
    let recs = read_records(&test, "dialogue", "summary", &[], true).unwrap();
    assert_eq!(recs[0].references, ["s1", "s2", "s3"]);
    let explicit = read_records(&test, "dialogue", "summary", &["summary3".into(), "summary5".into()], true).unwrap();
    assert_eq!(explicit[0].references, ["s3", "gap"]);
    // No references: fine unless required.
    let bare = write(dir.path(), "bare.jsonl", "{\"dialogue\": \"d\"}\n");
    assert!(read_records(&bare, "dialogue", "summary", &[], false).unwrap()[0].references.is_empty());
    let err = format!("{:#}", read_records(&bare, "dialogue", "summary", &[], true).unwrap_err());
    assert!(err.contains("bare.jsonl") && err.contains("line 1") && err.contains("\"summary\""), "{err}");
}

#[test]
fn malformed_records_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = "{\"dialogue\": \"d\", \"summary\": \"s\"}\n";
    let cases: [(&str, &[&str]); 6] = [
        ("{\"dialogue\": \"d\", \"summary\": \"s\"\n", &["line 2", "not valid JSON"]),
        ("[1, 2]\n", &["line 2", "expected a JSON object, got an array"]),
        ("{\"dialogue\": \"d\"}\n", &["line 2", "no field \"summary\""]),
        ("{\"dialogue\": 7, \"summary\": \"s\"}\n", &["line 2", "\"dialogue\" must be a string, got a number"]),
        ("{\"dialogue\": \"d\", \"summary\": null}\n", &["line 2", "\"summary\" must be a string, got null"]),
        ("", &["holds no records"]),
    ];
    for (k, (second, needles)) in cases.iter().enumerate() {
        let text = if second.is_empty() { String::new() } else { format!("{good}{second}") };
        let p = write(dir.path(), &format!("bad{k}.jsonl"), &text);
        for err in [
            format!("{:#}", read_pairs(&p, "dialogue", "summary").unwrap_err()),
            format!("{:#}", read_records(&p, "dialogue", "summary", &[], true).unwrap_err()),
        ] {
            assert!(err.contains(&format!("bad{k}.jsonl")), "{err}");
            for n in *needles {
                assert!(err.contains(n), "case {k}: {err:?} lacks {n:?}");
            }
        }
    }
    let err = format!("{:#}", read_pairs(&dir.path().join("missing.jsonl"), "dialogue", "summary").unwrap_err());
    assert!(err.contains("cannot read") && err.contains("missing.jsonl"), "{err}");
    std::fs::write(dir.path().join("latin1.jsonl"), b"{\"dialogue\": \"caf\xe9\"}\n").unwrap();
    let err = format!("{:#}", read_pairs(&dir.path().join("latin1.jsonl"), "dialogue", "summary").unwrap_err());
    assert!(err.contains("line 1 is not valid UTF-8"), "{err}");
}

#[test]
fn baselines_on_a_hand_made_dialogue() {
    let d = "#Person1#: Good morning.\n\
             #Person2#: Morning! Did you finish the report for the meeting?\n\
             #Person1#: Almost.\n\
             \n\
             #Person2#: The manager wants it before noon, so please hurry up.\n\
             #Person1#: I will send it in an hour, I promise.\n  \n";
    let u = utterances(d);
    assert_eq!(u.len(), 5, "blank and whitespace-only turns are not utterances");
    assert_eq!(
        lead(d, 3),
        "#Person1#: Good morning. #Person2#: Morning! Did you finish the report for the meeting? #Person1#: Almost."
    );
    // Words (speaker tag included): 3, 10, 2, 11, 10; kept in dialogue order.
    assert_eq!(
        longest(d, 3),
        "#Person2#: Morning! Did you finish the report for the meeting? \
         #Person2#: The manager wants it before noon, so please hurry up. \
         #Person1#: I will send it in an hour, I promise."
    );
    // A tie at the cut: the earlier utterance wins.
    let tie = "#A#: one two\n#B#: three four five\n#A#: six seven\n#B#: eight nine";
    assert_eq!(longest(tie, 3), "#A#: one two #B#: three four five #A#: six seven");
    assert_eq!(Baseline::Longest3.summarize(d), longest(d, 3));
    assert_eq!(Baseline::Lead3.summarize(d), lead(d, 3));
    // Fewer than three utterances: the whole dialogue, under both.
    let short = "#Person1#: Hi.\n#Person2#: Bye.";
    assert_eq!(lead(short, 3), "#Person1#: Hi. #Person2#: Bye.");
    assert_eq!(longest(short, 3), lead(short, 3));
    assert_eq!(lead("", 3), "");
}

#[derive(serde::Deserialize)]
struct NgramCase {
    n: usize,
    tokens: Vec<u32>,
    banned: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct MinLenCase {
    min_len: usize,
    tokens: usize,
    eos_banned: bool,
}

#[derive(serde::Deserialize)]
struct Processors {
    no_repeat_ngram: Vec<NgramCase>,
    min_length: Vec<MinLenCase>,
}

/// The bans equal transformers' NoRepeatNGramLogitsProcessor and MinNewTokensLengthLogitsProcessor
/// (= MinLengthLogitsProcessor at min_length + 1, the decoder start token counted).
#[test]
fn constraints_equal_hugging_face_logits_processors() {
    let f: Processors =
        serde_json::from_str(&std::fs::read_to_string(fixture("summarize_logits_processors.json")).unwrap()).unwrap();
    let bos = lmlab::data::bpe::BOS;
    let mut out = Vec::new();
    let mut some_banned = 0;
    for c in &f.no_repeat_ngram {
        // HF's sequences start with the decoder start token (BOS).
        let with_bos: Vec<u32> = std::iter::once(bos).chain(c.tokens.iter().copied()).collect();
        repeated_ngram_bans(&with_bos, c.n, &mut out);
        out.sort_unstable();
        assert_eq!(out, c.banned, "n = {} after {:?}", c.n, c.tokens);
        // Without it (as lmlab decodes) the bans differ at most by BOS, which is never generated.
        repeated_ngram_bans(&c.tokens, c.n, &mut out);
        out.sort_unstable();
        let want: Vec<u32> = c.banned.iter().copied().filter(|&t| t != bos).collect();
        assert_eq!(out, want, "n = {} after {:?} (no BOS)", c.n, c.tokens);
        some_banned += usize::from(!c.banned.is_empty());
    }
    assert!(some_banned > 10, "the fixture should ban something in many cases");
    for c in &f.min_length {
        assert_eq!(end_banned(c.tokens, c.min_len), c.eos_banned, "min_len {} after {} tokens", c.min_len, c.tokens);
    }
    repeated_ngram_bans(&[3, 4, 3, 4, 3], 0, &mut out);
    assert!(out.is_empty(), "n = 0 is off");
    // HF's length penalty divides by len^alpha, len counting EOS.
    assert_eq!(LengthNorm::Hf.normaliser(4, 1.0), 4.0);
    assert_eq!(LengthNorm::Hf.normaliser(9, 0.5), 3.0);
    assert_eq!(LengthNorm::Hf.normaliser(9, 0.0), 1.0);
}

#[test]
fn multi_reference_rouge_conventions() {
    let hyps = vec!["the cat sat".to_owned(), "a dog ran".to_owned()];
    let refs = vec![
        vec!["the cat sat".to_owned(), "nothing alike".to_owned()],
        vec!["a dog ran far".to_owned(), "a dog".to_owned()],
    ];
    let s = score_summaries(&hyps, &refs, false).unwrap();
    assert_eq!((s.summaries, s.references), (2, 2));
    // max: per summary the best reference (rouge-score score_multi), then the mean.
    let m0 = rouge_multi(&hyps[0], &["the cat sat", "nothing alike"], false).unwrap();
    let m1 = rouge_multi(&hyps[1], &["a dog ran far", "a dog"], false).unwrap();
    assert!((s.max.rouge1.fmeasure - (m0.rouge1.fmeasure + m1.rouge1.fmeasure) / 2.0).abs() < 1e-12);
    assert_eq!(m0.rouge1.fmeasure, 1.0);
    // mean: summary 0 scores 1 and 0; summary 1 scores 2·(1·0.75)/(1.75) = 6/7 and 2·(2/3·1)/(5/3) = 4/5.
    let want = (1.0 + 0.0 + 6.0 / 7.0 + 0.8) / 4.0;
    assert!((s.mean.rouge1.fmeasure - want).abs() < 1e-12, "{} vs {want}", s.mean.rouge1.fmeasure);
    assert!(s.max.rouge1.fmeasure > s.mean.rouge1.fmeasure);
    assert!(score_summaries(&hyps, &refs[..1], false).is_err());
    assert!(score_summaries(&hyps, &[vec![], vec![]], false).is_err());
}

/// A toy summarization task: the summary names what Person1 asks for, so it must be copied from
/// the dialogue, and the opening turns (LEAD-3) carry filler words that are not in it.
fn toy_records(n: usize, seed: usize, test: bool) -> String {
    let items = ["apple", "ticket", "coffee", "book", "jacket", "taxi", "room", "pizza"];
    let fillers = ["hello there", "good morning", "hi how are you", "nice day today"];
    let mut out = String::new();
    for i in 0..n {
        let item = items[(i * 5 + seed) % items.len()];
        let hello = fillers[(i + seed) % fillers.len()];
        let dialogue = format!(
            "#Person1#: {hello}\n#Person2#: {hello}\n#Person1#: i would like a {item} please\n#Person2#: here is your {item}"
        );
        let summary = format!("#Person1# asks for a {item} and #Person2# gives it .");
        let record = if test {
            serde_json::json!({"fname": format!("test_{i}"), "dialogue": dialogue, "summary1": summary, "summary2": summary})
        } else {
            serde_json::json!({"fname": format!("train_{i}"), "dialogue": dialogue, "summary": summary})
        };
        out += &(record.to_string() + "\n");
    }
    out
}

/// `lmlab summarize --json`'s report and its ROUGE-L F1 (best reference).
fn rouge_l(out: &str) -> (serde_json::Value, f64) {
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let l = r["rouge"]["max"]["rougeL"]["fmeasure"].as_f64().unwrap_or_else(|| panic!("no ROUGE-L in {out}"));
    (r, l)
}

#[test]
fn train_and_summarize_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(p("train.jsonl"), toy_records(400, 0, false)).unwrap();
    std::fs::write(p("dev.jsonl"), toy_records(40, 1, false)).unwrap();
    std::fs::write(p("test.jsonl"), toy_records(24, 2, true)).unwrap();
    let cfg = format!(
        "[model]\narch = \"encoder_decoder\"\nblock_size = 96\nn_layer = 2\nn_head = 2\nn_embd = 48\n\
         share_embeddings = true\n\
         [data]\ntask = \"summarize\"\nformat = \"jsonl\"\ntrain = {:?}\nval = {:?}\ntest = {:?}\n\
         source_field = \"dialogue\"\ntarget_field = \"summary\"\nvocab_size = 400\nmax_len = 32\nmax_src_len = 96\n\
         [train]\nout_dir = {:?}\nbatch_size = 32\nmax_iters = 400\neval_interval = 200\nthreads = 2\n\
         [optim]\nlearning_rate = 3e-3\nwarmup_iters = 20\nlr_decay_iters = 400\n",
        p("train.jsonl"),
        p("dev.jsonl"),
        p("test.jsonl"),
        p("run")
    );
    std::fs::write(p("run.toml"), cfg).unwrap();
    ok(lmlab(&["train", "--config", &p("run.toml"), "--quiet"]));
    let ck = p("run/ckpt");

    // Greedy, on the checkpoint's data.test (no --input), scored against summary1/summary2.
    let (greedy, greedy_l) = rouge_l(&ok(lmlab(&["summarize", "--checkpoint", &ck, "--beam", "1", "--json"])));
    assert_eq!((greedy["method"].as_str(), greedy["summaries"].as_u64()), (Some("greedy"), Some(24)));
    assert_eq!(greedy["rouge"]["references"], 2);
    // Beam search with every option, writing the summaries.
    let preds = p("preds.jsonl");
    let args = [
        "summarize",
        "--checkpoint",
        &ck,
        "--input",
        &p("test.jsonl"),
        "--beam",
        "3",
        "--length-penalty",
        "1.2",
        "--min-length",
        "4",
        "--max-length",
        "32",
        "--no-repeat-ngram-size",
        "3",
        "--output",
        &preds,
        "--json",
    ];
    let (beam, beam_l) = rouge_l(&ok(lmlab(&args)));
    assert_eq!(beam["method"], "beam 3");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&preds).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 24);
    assert_eq!(lines[5]["id"], "test_5");
    let (lead3, lead_l) =
        rouge_l(&ok(lmlab(&["summarize", "--baseline", "lead3", "--input", &p("test.jsonl"), "--json"])));
    assert_eq!(lead3["method"], "LEAD-3");
    // The model learned the task: it copies the item and beats the baseline by far.
    assert!(greedy_l > 0.8 && beam_l > 0.8, "greedy {greedy_l}, beam {beam_l}");
    assert!(lead_l < 0.5, "LEAD-3 {lead_l}");
    let items = ["apple", "ticket", "coffee", "book", "jacket", "taxi", "room", "pizza"];
    let named =
        lines.iter().enumerate().filter(|(k, l)| l["summary"].as_str().unwrap().contains(items[(k * 5 + 2) % 8]));
    let named = named.count();
    assert!(named >= 18, "only {named} of 24 summaries name the item asked for: {lines:?}");

    // Plain-text output, and the table on standard output.
    let txt = p("lead.txt");
    let o = ok(lmlab(&["summarize", "--baseline", "longest3", "--input", &p("test.jsonl"), "--output", &txt]));
    assert!(o.contains("R-L") && o.contains("best reference (max)") && o.contains("mean over references"), "{o}");
    assert_eq!(std::fs::read_to_string(&txt).unwrap().lines().count(), 24);

    // Errors: malformed input, no model, a language model.
    std::fs::write(p("bad.jsonl"), "{\"dialogue\": \"a\"}\n{\"dialogue\": 3}\n").unwrap();
    let o = lmlab(&["summarize", "--checkpoint", &ck, "--input", &p("bad.jsonl")]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.jsonl") && err.contains("line 2") && err.contains("must be a string"), "{err}");
    let o = lmlab(&["summarize", "--input", &p("test.jsonl")]);
    assert!(!o.status.success() && text(&o).1.contains("--checkpoint"), "{:?}", text(&o));
}
