//! Extractive question answering scored as SQuAD v1.1's official `evaluate-v1.1.py` does:
//! answers normalised (lower case, ASCII punctuation removed, the articles a/an/the removed as
//! whole words, whitespace collapsed), exact match and token-level F1 against every reference
//! answer with the best kept, both averaged over all questions (a question without a
//! prediction scores 0) and reported in percent.
//!
//! One behaviour differs between scorers and is v1.1's here: when the prediction or the
//! reference normalises to no tokens (e.g. "the"), v1.1's F1 is 0 (it has no special case),
//! while SQuAD 2.0's script and torchmetrics give 1 if both are empty.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashMap;

/// A Python `\w` character for `str` patterns: Unicode letters and digits, and `_`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Python's `str.split()` separators: Unicode whitespace, including the ASCII information
/// separators U+001C..U+001F that Rust's `char::is_whitespace` does not count.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The official normalisation: `white_space_fix(remove_articles(remove_punc(lower(s))))`.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: Vec<char> = lower.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    // re.sub(r"\b(a|an|the)\b", " ", text): whole-word articles become a space.
    let mut out = String::with_capacity(no_punct.len());
    let mut i = 0;
    while i < no_punct.len() {
        let boundary_before = i == 0 || !is_word(no_punct[i - 1]);
        let mut matched = 0;
        if boundary_before {
            for art in ["a", "an", "the"] {
                let n = art.chars().count();
                let fits = no_punct.len() >= i + n && no_punct[i..i + n].iter().copied().eq(art.chars());
                if fits && (i + n == no_punct.len() || !is_word(no_punct[i + n])) {
                    matched = n;
                    break;
                }
            }
        }
        if matched > 0 {
            out.push(' ');
            i += matched;
        } else {
            out.push(no_punct[i]);
            i += 1;
        }
    }
    out.split(is_py_space).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// 1.0 if the normalised answers are equal.
pub fn exact_match(prediction: &str, reference: &str) -> f64 {
    f64::from(u8::from(normalize_answer(prediction) == normalize_answer(reference)))
}

/// Token F1 of the normalised answers (bag of tokens; 0 when nothing is shared).
pub fn f1_score(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (normalize_answer(prediction), normalize_answer(reference));
    let (p, r): (Vec<&str>, Vec<&str>) =
        (p.split(' ').filter(|w| !w.is_empty()).collect(), r.split(' ').filter(|w| !w.is_empty()).collect());
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for w in &p {
        counts.entry(w).or_default().0 += 1;
    }
    for w in &r {
        counts.entry(w).or_default().1 += 1;
    }
    let same: usize = counts.values().map(|(a, b)| (*a).min(*b)).sum();
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / r.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// The best score of `prediction` over the reference answers.
fn best(metric: fn(&str, &str) -> f64, prediction: &str, references: &[String]) -> f64 {
    references.iter().map(|r| metric(prediction, r)).fold(0.0, f64::max)
}

/// One question of a SQuAD file.
#[derive(Clone, Debug)]
pub struct Question {
    pub id: String,
    pub question: String,
    pub context: String,
    /// Reference answers (text and character offset in the context).
    pub answers: Vec<(String, usize)>,
    /// Index of its article in the file (for splitting by article).
    pub article: usize,
    pub title: String,
}

/// Every question of the SQuAD v1.1-format JSON file at `path` (see [`read_squad`]); a file that
/// cannot be read is an error naming it.
pub fn read_squad_file(path: impl AsRef<std::path::Path>) -> Result<Vec<Question>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read SQuAD file {}", path.display()))?;
    read_squad(&text, &path.display().to_string())
}

/// Every question of a SQuAD v1.1-format JSON file (`{"data": [{"title", "paragraphs":
/// [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}`);
/// a malformed record is an error naming it.
pub fn read_squad(text: &str, what: &str) -> Result<Vec<Question>> {
    let v: serde_json::Value = serde_json::from_str(text).with_context(|| format!("{what} is not JSON"))?;
    let data = v["data"].as_array().with_context(|| format!("{what}: no \"data\" array (not a SQuAD file?)"))?;
    let mut out = Vec::new();
    for (a, article) in data.iter().enumerate() {
        let title = article["title"].as_str().unwrap_or("").to_string();
        let paragraphs =
            article["paragraphs"].as_array().with_context(|| format!("{what}: article {a} has no \"paragraphs\""))?;
        for (p, para) in paragraphs.iter().enumerate() {
            let context = para["context"]
                .as_str()
                .with_context(|| format!("{what}: article {a} paragraph {p} has no \"context\""))?;
            let qas =
                para["qas"].as_array().with_context(|| format!("{what}: article {a} paragraph {p} has no \"qas\""))?;
            for (k, qa) in qas.iter().enumerate() {
                let at = || format!("{what}: article {a} paragraph {p} question {k}");
                let id = qa["id"].as_str().with_context(|| format!("{} has no \"id\"", at()))?;
                let question =
                    qa["question"].as_str().with_context(|| format!("{} ({id}) has no \"question\"", at()))?;
                let answers =
                    qa["answers"].as_array().with_context(|| format!("{} ({id}) has no \"answers\"", at()))?;
                let mut refs = Vec::with_capacity(answers.len());
                for ans in answers {
                    let t =
                        ans["text"].as_str().with_context(|| format!("{} ({id}): an answer has no \"text\"", at()))?;
                    let start = ans["answer_start"].as_u64().unwrap_or(0) as usize;
                    refs.push((t.to_string(), start));
                }
                out.push(Question {
                    id: id.to_string(),
                    question: question.to_string(),
                    context: context.to_string(),
                    answers: refs,
                    article: a,
                    title: title.clone(),
                });
            }
        }
    }
    if out.is_empty() {
        bail!("{what} has no questions");
    }
    Ok(out)
}

/// The official script's output, and what it did not find.
#[derive(Clone, Debug, Serialize)]
pub struct SquadScore {
    /// Percent.
    pub exact_match: f64,
    pub f1: f64,
    pub total: usize,
    /// Questions without a prediction (each scored 0).
    pub unanswered: usize,
    /// Predictions whose id is not a question of the file (ignored, as the script does).
    pub unknown_ids: usize,
}

/// Scores `predictions` (question id → answer text) on `questions`, as `evaluate-v1.1.py`.
pub fn evaluate(questions: &[Question], predictions: &HashMap<String, String>) -> SquadScore {
    let (mut em, mut f1, mut unanswered) = (0.0, 0.0, 0);
    for q in questions {
        let Some(pred) = predictions.get(&q.id) else {
            unanswered += 1;
            continue;
        };
        let refs: Vec<String> = q.answers.iter().map(|(t, _)| t.clone()).collect();
        em += best(exact_match, pred, &refs);
        f1 += best(f1_score, pred, &refs);
    }
    let ids: std::collections::HashSet<&str> = questions.iter().map(|q| q.id.as_str()).collect();
    let unknown_ids = predictions.keys().filter(|k| !ids.contains(k.as_str())).count();
    let total = questions.len();
    SquadScore { exact_match: 100.0 * em / total as f64, f1: 100.0 * f1 / total as f64, total, unanswered, unknown_ids }
}

/// The questions of the articles `spec` names, by index in file order: `A..B` (A up to but not
/// including B, as a Rust range; `40..` to the end) or a comma-separated list (`3,7,41`). An
/// index past the file's articles is an error.
pub fn select_articles(questions: Vec<Question>, spec: &str) -> Result<Vec<Question>> {
    let articles = questions.iter().map(|q| q.article).max().map_or(0, |a| a + 1);
    let parse = |s: &str| -> Result<usize> {
        s.trim().parse().with_context(|| format!("--articles {spec:?}: {s:?} is not an article index"))
    };
    let keep: Vec<usize> = match spec.split_once("..") {
        Some((a, b)) => {
            let a = if a.trim().is_empty() { 0 } else { parse(a)? };
            let b = if b.trim().is_empty() { articles } else { parse(b)? };
            (a..b).collect()
        }
        None => spec.split(',').map(parse).collect::<Result<_>>()?,
    };
    if let Some(bad) = keep.iter().find(|&&a| a >= articles) {
        bail!("--articles {spec:?}: article {bad} does not exist (the file has {articles}, numbered from 0)");
    }
    let out: Vec<Question> = questions.into_iter().filter(|q| keep.contains(&q.article)).collect();
    if out.is_empty() {
        bail!("--articles {spec:?} selects no question");
    }
    Ok(out)
}
