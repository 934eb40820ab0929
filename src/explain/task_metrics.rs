//! Question 12, parts 3 and 4: the metrics of `lmlab eval` that score a classifier and an
//! extractive QA system, on real outputs and on controlled changes of them, to show what each
//! one misses.
//!
//! Part 3, classification. The experiment's classifier application (TREC question types,
//! trained as question 14 trains it) predicts its test file, and sklearn's metrics
//! (`eval::classification`) score: the trained classifier; the training set's most frequent
//! class predicted for every item; and two controlled changes of the gold labels that cost the
//! same accuracy, every item of the rarest test class made wrong, and as many items of the
//! largest class made wrong. Accuracy, micro-F1 and the weighted averages see the two alike;
//! macro-F1 does not.
//!
//! Part 4, SQuAD v1.1 dev (every question): exact match and F1 as the official script computes
//! them (`eval::squad`, the best over the gold answers), and the share of answers that contain
//! a gold answer (its normalised words, contiguous), for a real system, the overlap baseline
//! (the context sentence sharing the most words with the question), and for answers built from
//! the first gold answer (`ANSWERS`): itself, re-cased with "the" and a full stop, three more
//! words of the context, its first word, its words reversed, its digits changed (only the
//! answers that have digits), the whole sentence holding it, another question's answer, and
//! nothing. Then a real reader's answers (`reader_answers`): all-MiniLM-L6-v2 fine-tuned as
//! question 14 fine-tunes it answers the held-out articles' questions, and each answer is sorted
//! by how it stands to the gold answers (exact, a gold answer and more words, part of one, other
//! shared words, none): the kinds exact match counts wrong and F1 partly right.

use super::applications::{Classified, Reader};
use super::sweep::write_heatmaps;
use super::{ChartFiles, Table};
use crate::eval::classification::ClassificationReport;
use crate::eval::squad::{evaluate, exact_match, f1_score, normalize_answer, Question as SquadQuestion, SquadScore};
use crate::infer::qa_span::{context_sentences, overlap_sentence};
use crate::inspect::plot::{Heatmap, Scale};
use anyhow::{ensure, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// The figures of one set of predicted labels.
#[derive(Clone, Debug, Serialize)]
struct ClassRow {
    name: String,
    accuracy: f64,
    micro_f1: f64,
    macro_precision: f64,
    macro_recall: f64,
    macro_f1: f64,
    weighted_f1: f64,
    /// F1 of the rarest and of the largest test class.
    rarest_f1: f64,
    largest_f1: f64,
}

impl ClassRow {
    fn new(name: String, r: &ClassificationReport, rarest: usize, largest: usize) -> ClassRow {
        ClassRow {
            name,
            accuracy: r.accuracy,
            micro_f1: r.micro.f1,
            macro_precision: r.macro_avg.precision,
            macro_recall: r.macro_avg.recall,
            macro_f1: r.macro_avg.f1,
            weighted_f1: r.weighted_avg.f1,
            rarest_f1: r.classes[rarest].f1,
            largest_f1: r.classes[largest].f1,
        }
    }

    fn values(&self) -> [f64; 8] {
        [
            self.accuracy,
            self.micro_f1,
            self.macro_precision,
            self.macro_recall,
            self.macro_f1,
            self.weighted_f1,
            self.rarest_f1,
            self.largest_f1,
        ]
    }
}

/// `gold` with the labels of the first `n` items of class `from` replaced by `to`.
fn relabel(gold: &[String], from: &str, to: &str, n: usize) -> Vec<String> {
    let mut left = n;
    gold.iter()
        .map(|g| {
            if g == from && left > 0 {
                left -= 1;
                to.to_string()
            } else {
                g.clone()
            }
        })
        .collect()
}

/// The rarest and the largest class of `gold` by count, and the largest of the others (where
/// the largest class's changed items go), as indices into `labels` (the lower index wins a
/// tie; classes absent from `gold` are not candidates); with the counts per label.
fn class_sizes(gold: &[String], labels: &[String]) -> Result<(usize, usize, usize, Vec<usize>)> {
    let counts: Vec<usize> = labels.iter().map(|l| gold.iter().filter(|g| *g == l).count()).collect();
    let mut present: Vec<usize> = (0..labels.len()).filter(|&k| counts[k] > 0).collect();
    ensure!(present.len() >= 3, "the test set has {} classes; the controls need at least 3", present.len());
    present.sort_by_key(|&k| (std::cmp::Reverse(counts[k]), k));
    let largest = present[0];
    let rarest = present.iter().copied().min_by_key(|&k| (counts[k], k)).expect("3 classes");
    let other = present.iter().copied().find(|&k| k != largest && k != rarest).expect("3 classes");
    Ok((rarest, largest, other, counts))
}

/// Part 3: the classifier's table, chart, findings and numbers.
pub(super) fn classification(c: &Classified, dir: &Path) -> Result<(Table, ChartFiles, Vec<String>, Value)> {
    let labels = &c.labels;
    let (rarest, largest, second, counts) = class_sizes(&c.gold, labels)?;
    let (rare, big) = (labels[rarest].as_str(), labels[largest].as_str());
    let n_rare = counts[rarest];
    let model = c.report(&c.predicted)?;
    let majority: Vec<String> = vec![c.majority.clone(); c.gold.len()];
    let systems: Vec<(String, Vec<String>)> = vec![
        ("trained classifier".into(), c.predicted.clone()),
        (format!("majority class ({}) for every item", c.majority), majority),
        (format!("gold, all {n_rare} {rare} items wrong (as {big})"), relabel(&c.gold, rare, big, n_rare)),
        (
            format!("gold, {n_rare} {big} items wrong (as {})", labels[second]),
            relabel(&c.gold, big, &labels[second], n_rare),
        ),
    ];
    let rows: Vec<ClassRow> = systems
        .iter()
        .map(|(name, pred)| Ok(ClassRow::new(name.clone(), &c.report(pred)?, rarest, largest)))
        .collect::<Result<_>>()?;
    let columns: Vec<String> = [
        "predictions".to_string(),
        "accuracy".into(),
        "micro-F1".into(),
        "macro precision".into(),
        "macro recall".into(),
        "macro-F1".into(),
        "weighted F1".into(),
        format!("F1 {rare} (rarest, {n_rare})"),
        format!("F1 {big} (largest, {})", counts[largest]),
    ]
    .to_vec();
    let table = Table {
        columns,
        rows: rows
            .iter()
            .map(|r| std::iter::once(r.name.clone()).chain(r.values().iter().map(|v| format!("{v:.4}"))).collect())
            .collect(),
    };

    // The confusion matrix, each row divided by its gold count (so the diagonal is recall).
    let k = labels.len();
    let confusion: Vec<f64> = model
        .confusion
        .iter()
        .flat_map(|row| {
            let n: u64 = row.iter().sum();
            row.iter().map(move |&x| if n == 0 { f64::NAN } else { x as f64 / n as f64 })
        })
        .collect();
    let metric_labels: Vec<String> =
        ["accuracy", "micro-F1", "macro P", "macro R", "macro-F1", "weighted", "F1 rarest", "F1 largest"]
            .map(String::from)
            .to_vec();
    let maps = [
        Heatmap {
            title: "trained classifier: gold (rows) → predicted, share of the row".into(),
            row_labels: labels.clone(),
            col_labels: labels.clone(),
            values: confusion,
        },
        Heatmap {
            title: "metrics of each set of predictions".into(),
            row_labels: ["model", "majority", &format!("{rare} wrong"), &format!("{big} wrong")]
                .map(String::from)
                .to_vec(),
            col_labels: metric_labels,
            values: rows.iter().flat_map(|r| r.values()).collect(),
        },
    ];
    let chart = write_heatmaps(
        &maps,
        2,
        &format!(
            "TREC question types ({} test questions, {k} classes): the trained classifier's confusion matrix (rows: \
             the gold class, each divided by its count) and the classification metrics of its predictions, the \
             majority class, and the gold labels with the rarest or as many of the largest class's items made wrong",
            c.gold.len()
        ),
        "classification metrics",
        Scale { lo: 0.0, hi: 1.0, diverging: false },
        "classification",
        dir,
    )?;
    let found = classification_findings(c, &model, &rows, (rarest, largest, second), &counts);
    let data = json!({
        "labels": labels, "test_counts": counts, "majority_class": c.majority,
        "model": {"steps": c.steps(), "val_loss": c.val_loss(), "params": c.params, "train_seconds": c.train_seconds(),
                  "trainer_test_accuracy": c.trainer_test_accuracy(),
                  "per_class": model.classes, "confusion": model.confusion},
        "systems": rows,
    });
    Ok((table, chart, found, data))
}

fn classification_findings(
    c: &Classified,
    model: &ClassificationReport,
    rows: &[ClassRow],
    (rarest, largest, second): (usize, usize, usize),
    counts: &[usize],
) -> Vec<String> {
    let labels = &c.labels;
    let n = c.gold.len();
    let m = &rows[0];
    let mut out = vec![format!(
        "The TREC classifier ({} steps, {} parameters) scores accuracy {:.1}%, macro-F1 {:.3} and weighted F1 {:.3} on the {n} test questions; micro-F1 ({:.3}) equals accuracy, as it must with one label per item.",
        c.steps(), c.params, 100.0 * m.accuracy, m.macro_f1, m.weighted_f1, m.micro_f1
    )];
    let per_class: Vec<String> =
        (0..labels.len()).map(|k| format!("{} {:.2} ({} items)", labels[k], model.classes[k].f1, counts[k])).collect();
    let mut confusions: Vec<(u64, usize, usize)> = (0..labels.len())
        .flat_map(|g| (0..labels.len()).filter(move |&p| p != g).map(move |p| (g, p)))
        .map(|(g, p)| (model.confusion[g][p], g, p))
        .collect();
    confusions.sort_by_key(|&(x, g, p)| (std::cmp::Reverse(x), g, p));
    let worst = confusions.first().filter(|c| c.0 > 0).map_or(String::new(), |&(x, g, p)| {
        format!("; its most frequent confusion is {} read as {} ({x} of {})", labels[g], labels[p], counts[g])
    });
    out.push(format!("F1 per class: {}{worst}.", per_class.join(", ")));
    let maj = &rows[1];
    let never = labels.len() - 1;
    out.push(format!(
        "Predicting {} (the training set's most frequent class) for every question scores accuracy {:.1}%, the share of {} in the test set, and macro-F1 {:.3}: accuracy does not show that {never} of the {} classes are never predicted.",
        c.majority, 100.0 * maj.accuracy, c.majority, maj.macro_f1, labels.len()
    ));
    let (rare, big) = (&rows[2], &rows[3]);
    let share = 100.0 * counts[rarest] as f64 / n as f64;
    out.push(format!(
        "Making all {} {} questions wrong ({share:.1}% of the items) and making as many {} questions wrong (as {}) both cost {:.1} points of accuracy and micro-F1 ({:.1}% and {:.1}%); weighted F1 falls to {:.3} and {:.3}; macro-F1 falls to {:.3} and {:.3}. Accuracy and the weighted averages weigh each class by its size, so a class of {} items can fail completely with accuracy barely moving; macro-F1 weighs every class alike and shows it.",
        counts[rarest], labels[rarest], labels[largest], labels[second],
        100.0 * (1.0 - rare.accuracy), 100.0 * rare.accuracy, 100.0 * big.accuracy,
        rare.weighted_f1, big.weighted_f1, rare.macro_f1, big.macro_f1, counts[rarest]
    ));
    out
}

/// The controlled answers of part 4, built from a question's first gold answer: (name, what it
/// shows, its label on the chart), in table order after the overlap baseline.
const ANSWERS: [(&str, &str, &str); 9] = [
    ("a gold answer", "the ceiling", "gold"),
    ("re-cased, with \"the\" and a full stop", "surface form", "re-cased"),
    ("three more words of the context", "a longer span", "+3 words"),
    ("its first word only", "a shorter span", "first word"),
    ("its words reversed", "word order", "reversed"),
    ("its digits changed", "a wrong number", "digits +1"),
    ("the sentence holding it", "the answer inside a sentence", "its sentence"),
    ("another question's answer", "a wrong answer", "other answer"),
    ("nothing", "no answer", "nothing"),
];

/// The byte offset in `context` of the character at `chars` (the files count characters).
fn byte_offset(context: &str, chars: usize) -> Option<usize> {
    context.char_indices().map(|(b, _)| b).chain(std::iter::once(context.len())).nth(chars)
}

/// Where the first gold answer stands in the context (bytes): at its recorded offset, or its
/// first occurrence when the offset does not hold it.
fn answer_span(q: &SquadQuestion) -> Option<(usize, usize)> {
    let (text, start) = q.answers.first()?;
    let at = byte_offset(&q.context, *start).filter(|&b| q.context[b..].starts_with(text.as_str()));
    let b = at.or_else(|| q.context.find(text.as_str()))?;
    Some((b, b + text.len()))
}

/// The answer, re-cased, with "the" before it and a full stop after it.
fn recased(a: &str) -> String {
    format!("The {}.", a.to_uppercase())
}

/// The span and the next `n` whitespace-separated words of the context.
fn extended(context: &str, (start, end): (usize, usize), n: usize) -> String {
    let rest = &context[end..];
    let mut stop = end;
    let mut words = 0;
    let mut in_word = false;
    for (i, ch) in rest.char_indices() {
        if ch.is_whitespace() {
            if in_word {
                words += 1;
                in_word = false;
                if words == n {
                    break;
                }
            }
        } else {
            in_word = true;
            stop = end + i + ch.len_utf8();
        }
    }
    context[start..stop].to_string()
}

fn first_word(a: &str) -> String {
    a.split_whitespace().next().unwrap_or("").to_string()
}

fn reversed_words(a: &str) -> String {
    a.split_whitespace().rev().collect::<Vec<_>>().join(" ")
}

/// Every ASCII digit d becomes (d + 1) mod 10; None when there is none.
fn digits_changed(a: &str) -> Option<String> {
    a.chars().any(|c| c.is_ascii_digit()).then(|| {
        a.chars()
            .map(|c| {
                c.to_digit(10).filter(|_| c.is_ascii_digit()).map_or(c, |d| char::from(b'0' + ((d + 1) % 10) as u8))
            })
            .collect()
    })
}

/// The context sentence (`context_sentences`) that holds byte `at`.
fn sentence_at(context: &str, at: usize) -> &str {
    let base = context.as_ptr() as usize;
    context_sentences(context)
        .into_iter()
        .find(|s| {
            let start = s.as_ptr() as usize - base;
            (start..start + s.len()).contains(&at)
        })
        .unwrap_or(context)
}

/// Whether the normalised words of a gold answer occur, contiguous, among those of `pred`.
fn contains_answer(pred: &str, refs: &[(String, usize)]) -> bool {
    let p: Vec<String> = normalize_answer(pred).split(' ').map(String::from).collect();
    refs.iter().any(|(r, _)| {
        let r: Vec<String> = normalize_answer(r).split(' ').map(String::from).collect();
        !r.is_empty() && !r[0].is_empty() && p.windows(r.len()).any(|w| w == r.as_slice())
    })
}

/// The figures of one set of answers.
#[derive(Clone, Debug, Serialize)]
struct AnswerRow {
    name: String,
    shows: String,
    questions: usize,
    exact_match: f64,
    f1: f64,
    /// Percent of answers that contain a gold answer.
    contains: f64,
    /// The first question's answer.
    example: String,
}

fn score_answers(name: &str, shows: &str, qs: &[SquadQuestion], answers: &[String]) -> AnswerRow {
    let preds: HashMap<String, String> = qs.iter().zip(answers).map(|(q, a)| (q.id.clone(), a.clone())).collect();
    let s: SquadScore = evaluate(qs, &preds);
    let hits = qs.iter().zip(answers).filter(|(q, a)| contains_answer(a, &q.answers)).count();
    AnswerRow {
        name: name.into(),
        shows: shows.into(),
        questions: s.total,
        exact_match: s.exact_match,
        f1: s.f1,
        contains: 100.0 * hits as f64 / qs.len().max(1) as f64,
        example: answers.first().cloned().unwrap_or_default(),
    }
}

/// Part 4: SQuAD's table, chart, findings and numbers, on every question of `questions` whose
/// first gold answer is found in its context.
pub(super) fn squad(
    questions: &[SquadQuestion],
    file: &str,
    dir: &Path,
) -> Result<(Table, ChartFiles, Vec<String>, Value)> {
    let spans: Vec<(&SquadQuestion, (usize, usize))> =
        questions.iter().filter_map(|q| answer_span(q).map(|s| (q, s))).collect();
    ensure!(spans.len() >= 2, "{file}: fewer than 2 questions whose answer is found in its context");
    // Owned once: `evaluate` scores a slice of questions, every row the same ones.
    let qs: Vec<SquadQuestion> = spans.iter().map(|(q, _)| (*q).clone()).collect();
    let gold: Vec<&str> = qs.iter().map(|q| q.answers[0].0.as_str()).collect();
    let n = qs.len();
    let mut rows = vec![score_answers(
        "overlap baseline (the sentence sharing most words with the question)",
        "a real system",
        &qs,
        &qs.iter().map(|q| overlap_sentence(&q.question, &q.context).to_string()).collect::<Vec<_>>(),
    )];
    for (i, (name, shows, _)) in ANSWERS.iter().enumerate() {
        let row = match i {
            0 => score_answers(name, shows, &qs, &gold.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
            1 => score_answers(name, shows, &qs, &gold.iter().map(|a| recased(a)).collect::<Vec<_>>()),
            2 => score_answers(
                name,
                shows,
                &qs,
                &spans.iter().map(|(q, s)| extended(&q.context, *s, 3)).collect::<Vec<_>>(),
            ),
            3 => score_answers(name, shows, &qs, &gold.iter().map(|a| first_word(a)).collect::<Vec<_>>()),
            4 => score_answers(name, shows, &qs, &gold.iter().map(|a| reversed_words(a)).collect::<Vec<_>>()),
            5 => {
                let (sub, answers): (Vec<SquadQuestion>, Vec<String>) =
                    qs.iter().zip(&gold).filter_map(|(q, a)| digits_changed(a).map(|d| (q.clone(), d))).unzip();
                score_answers(name, shows, &sub, &answers)
            }
            6 => score_answers(
                name,
                shows,
                &qs,
                &spans.iter().map(|(q, s)| sentence_at(&q.context, s.0).to_string()).collect::<Vec<_>>(),
            ),
            7 => {
                score_answers(name, shows, &qs, &(0..n).map(|k| gold[(k + n / 2) % n].to_string()).collect::<Vec<_>>())
            }
            _ => score_answers(name, shows, &qs, &vec![String::new(); n]),
        };
        rows.push(row);
    }
    let table = Table {
        columns: ["answers", "shows", "questions", "exact match", "F1", "contains a gold answer (%)", "first example"]
            .map(String::from)
            .to_vec(),
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.shows.clone(),
                    r.questions.to_string(),
                    format!("{:.1}", r.exact_match),
                    format!("{:.1}", r.f1),
                    format!("{:.1}", r.contains),
                    r.example.clone(),
                ]
            })
            .collect(),
    };
    let map = Heatmap {
        title: "0–1 scale (÷ 100)".into(),
        row_labels: std::iter::once("overlap baseline").chain(ANSWERS.iter().map(|a| a.2)).map(String::from).collect(),
        col_labels: ["EM", "F1", "contains"].map(String::from).to_vec(),
        values: rows.iter().flat_map(|r| [r.exact_match / 100.0, r.f1 / 100.0, r.contains / 100.0]).collect(),
    };
    let chart = write_heatmaps(
        &[map],
        1,
        &format!(
            "SQuAD v1.1 dev ({n} questions): exact match, F1 and the share of answers containing a gold answer, for \
             the overlap baseline and for answers built from the first gold answer (÷ 100)"
        ),
        "SQuAD metrics",
        Scale { lo: 0.0, hi: 1.0, diverging: false },
        "squad",
        dir,
    )?;
    let quirks = Quirks {
        single_word: gold.iter().filter(|a| a.split_whitespace().count() <= 1).count(),
        empty_gold: qs
            .iter()
            .filter_map(|q| q.answers.iter().find(|(a, _)| normalize_answer(a).is_empty()).map(|(a, _)| a.clone()))
            .collect(),
        recased_misses: gold
            .iter()
            .zip(&qs)
            .filter(|(a, q)| !q.answers.iter().any(|(r, _)| exact_match(&recased(a), r) == 1.0))
            .map(|(a, _)| a.to_string())
            .collect(),
    };
    let found = squad_findings(&rows, n, questions.len(), &quirks);
    let data = json!({"file": file, "questions": questions.len(), "scored": n, "answers": rows});
    Ok((table, chart, found, data))
}

/// What the findings say of the data's edge cases.
struct Quirks {
    /// Questions whose first gold answer is one word.
    single_word: usize,
    /// Per question with one, a gold answer that normalises to nothing (".").
    empty_gold: Vec<String>,
    /// First gold answers that no longer match once re-cased.
    recased_misses: Vec<String>,
}

fn squad_findings(rows: &[AnswerRow], n: usize, total: usize, quirks: &Quirks) -> Vec<String> {
    let row = |name: &str| rows.iter().find(|r| r.name == name).expect("an answer row");
    let f = |r: &AnswerRow| format!("EM {:.1}, F1 {:.1}", r.exact_match, r.f1);
    let mut out = vec![format!(
        "SQuAD v1.1 dev: {n} of its {total} questions, those whose first gold answer stands in the context; EM and F1 take the best over each question's gold answers."
    )];
    let recased = row(ANSWERS[1].0);
    let misses = match quirks.recased_misses.len() {
        0 => String::new(),
        k => {
            let mut names = quirks.recased_misses.clone();
            names.dedup();
            format!(
                " except for {k} answer{} whose upper case lower-cases to another word ({})",
                if k == 1 { "" } else { "s" },
                names.iter().take(3).map(|a| format!("{a} → {}", a.to_uppercase())).collect::<Vec<_>>().join(", ")
            )
        }
    };
    out.push(format!(
        "Upper case with \"The\" before it and a full stop after it: {} — the official normalisation (lower case, no punctuation, no a/an/the) forgives surface form{misses}.",
        f(recased)
    ));
    let (longer, shorter, reversed) = (row(ANSWERS[2].0), row(ANSWERS[3].0), row(ANSWERS[4].0));
    out.push(format!(
        "Three more words of the context: {}; the first word only: {}; the words reversed: {} ({:.1}% of the answers are one word, which reversing leaves unchanged) — F1 counts shared words whatever their order, and gives partial credit to a span that is too long or too short.",
        f(longer), f(shorter), f(reversed), 100.0 * quirks.single_word as f64 / n as f64
    ));
    let digits = row(ANSWERS[5].0);
    out.push(format!(
        "Changing the digits of the {} answers that have any (a wrong year, count or date): {} — F1 keeps credit for the words around a wrong number.",
        digits.questions,
        f(digits)
    ));
    let (sentence, baseline) = (row(ANSWERS[6].0), &rows[0]);
    out.push(format!(
        "The sentence holding the answer contains a gold answer in {:.1}% of questions but scores {}: both metrics charge for every extra word, so they score the span, not whether the answer was found. The overlap baseline's sentence contains one in {:.1}% and scores {}.",
        sentence.contains, f(sentence), baseline.contains, f(baseline)
    ));
    let (other, nothing) = (row(ANSWERS[7].0), row(ANSWERS[8].0));
    let empty = match quirks.empty_gold.first() {
        None => String::new(),
        Some(example) => format!(
            " ({} question{} list a gold answer that normalises to nothing, such as {example:?}, which the empty answer matches exactly)",
            quirks.empty_gold.len(),
            if quirks.empty_gold.len() == 1 { "" } else { "s" }
        ),
    };
    out.push(format!(
        "Another question's answer scores {} (shared words by chance); no answer EM {:.2}, F1 {:.1}{empty}.",
        f(other),
        nothing.exact_match,
        nothing.f1
    ));
    out
}

/// How a system's answer stands to a question's gold answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnswerKind {
    /// Equal to a gold answer once normalised: EM 1, F1 1.
    Exact,
    /// Holds a gold answer's words, contiguous, and more: EM 0, partial F1.
    TooLong,
    /// Its words are a contiguous part of a gold answer: EM 0, partial F1.
    TooShort,
    /// Shares some words with a gold answer otherwise.
    Overlapping,
    /// Shares no word with any gold answer (or is empty): EM 0, F1 0.
    Disjoint,
}

/// Each kind, its name in the table and what the metrics make of it.
const KINDS: [(AnswerKind, &str); 5] = [
    (AnswerKind::Exact, "exact"),
    (AnswerKind::TooLong, "a gold answer and more words"),
    (AnswerKind::TooShort, "part of a gold answer"),
    (AnswerKind::Overlapping, "other shared words"),
    (AnswerKind::Disjoint, "no shared word"),
];

/// Whether the normalised words of `pred` (at least one) occur, contiguous, in a gold answer.
fn inside_answer(pred: &str, refs: &[(String, usize)]) -> bool {
    let p = normalize_answer(pred);
    let p: Vec<&str> = p.split(' ').filter(|w| !w.is_empty()).collect();
    !p.is_empty()
        && refs.iter().any(|(r, _)| {
            let r = normalize_answer(r);
            let r: Vec<&str> = r.split(' ').filter(|w| !w.is_empty()).collect();
            r.windows(p.len()).any(|w| w == p.as_slice())
        })
}

fn answer_kind(pred: &str, refs: &[(String, usize)]) -> AnswerKind {
    if refs.iter().any(|(r, _)| exact_match(pred, r) == 1.0) {
        AnswerKind::Exact
    } else if contains_answer(pred, refs) {
        AnswerKind::TooLong
    } else if inside_answer(pred, refs) {
        AnswerKind::TooShort
    } else if refs.iter().any(|(r, _)| f1_score(pred, r) > 0.0) {
        AnswerKind::Overlapping
    } else {
        AnswerKind::Disjoint
    }
}

/// The figures of one kind of the reader's answers.
#[derive(Clone, Debug, Serialize)]
struct KindRow {
    kind: String,
    questions: usize,
    /// Percent of the scored questions.
    share: f64,
    /// Mean best F1 (percent) of these answers.
    f1: f64,
    /// The first such question, its answer and its first gold answer.
    example: Option<(String, String, String)>,
}

/// Part 4's fine-tuned reader: its exact match and F1 on the held-out questions, beside the
/// overlap baseline's, and its answers sorted by how they stand to the gold answers — what
/// exact match counts wrong and F1 partly right.
pub(super) fn reader_answers(r: &Reader) -> Result<(Table, Vec<String>, Value)> {
    let qs = &r.heldout;
    ensure!(!qs.is_empty(), "the reader has no held-out questions");
    let answer = |q: &SquadQuestion| r.predictions.get(&q.id).cloned().unwrap_or_default();
    let model = evaluate(qs, &r.predictions);
    let base: HashMap<String, String> =
        qs.iter().map(|q| (q.id.clone(), overlap_sentence(&q.question, &q.context).to_string())).collect();
    let base = evaluate(qs, &base);
    let best_f1 = |q: &SquadQuestion| q.answers.iter().map(|(g, _)| f1_score(&answer(q), g)).fold(0.0, f64::max);
    let kinds: Vec<AnswerKind> = qs.iter().map(|q| answer_kind(&answer(q), &q.answers)).collect();
    let n = qs.len();
    let rows: Vec<KindRow> = KINDS
        .iter()
        .map(|(kind, name)| {
            let of: Vec<&SquadQuestion> = qs.iter().zip(&kinds).filter(|(_, k)| *k == kind).map(|(q, _)| q).collect();
            KindRow {
                kind: name.to_string(),
                questions: of.len(),
                share: 100.0 * of.len() as f64 / n as f64,
                f1: if of.is_empty() {
                    0.0
                } else {
                    100.0 * of.iter().map(|q| best_f1(q)).sum::<f64>() / of.len() as f64
                },
                example: of.first().map(|q| (q.question.clone(), answer(q), q.answers[0].0.clone())),
            }
        })
        .collect();
    let half_right = qs.iter().zip(&kinds).filter(|(q, k)| **k != AnswerKind::Exact && best_f1(q) >= 0.5).count();
    let table = Table {
        columns: ["the reader's answer is", "questions", "share (%)", "exact match", "mean F1", "first example"]
            .map(String::from)
            .to_vec(),
        rows: rows
            .iter()
            .map(|k| {
                vec![
                    k.kind.clone(),
                    k.questions.to_string(),
                    format!("{:.1}", k.share),
                    if k.kind == KINDS[0].1 { "100.0" } else { "0.0" }.to_string(),
                    format!("{:.1}", k.f1),
                    k.example.as_ref().map(|(q, a, g)| format!("{q} → {a:?} (gold {g:?})")).unwrap_or_default(),
                ]
            })
            .chain(std::iter::once(vec![
                "all".into(),
                n.to_string(),
                "100.0".into(),
                format!("{:.1}", model.exact_match),
                format!("{:.1}", model.f1),
                String::new(),
            ]))
            .collect(),
    };
    let row = |k: usize| &rows[k];
    let mut found = vec![format!(
        "The fine-tuned reader (all-MiniLM-L6-v2 with a span head, {} steps, {:.0} s) answers {n} questions of held-out articles with EM {:.1}, F1 {:.1}; the overlap baseline on the same questions EM {:.1}, F1 {:.1}.",
        r.steps(), r.train_seconds(), model.exact_match, model.f1, base.exact_match, base.f1
    )];
    found.push(format!(
        "Of its answers {:.1}% are exact; {:.1}% hold a gold answer and more words (mean F1 {:.1}), {:.1}% are part of one (F1 {:.1}) and {:.1}% share other words (F1 {:.1}): exact match counts all these wrong, F1 gives them partial credit, which is the {:.1} points between the two. {half_right} answers that exact match counts wrong have F1 ≥ 0.5; {:.1}% share no word with any gold answer.",
        row(0).share, row(1).share, row(1).f1, row(2).share, row(2).f1, row(3).share, row(3).f1,
        model.f1 - model.exact_match, row(4).share
    ));
    let data = json!({
        "steps": r.steps(), "train_seconds": r.train_seconds(), "params": r.params, "questions": n,
        "model": {"exact_match": model.exact_match, "f1": model.f1, "unanswered": model.unanswered},
        "overlap_baseline": {"exact_match": base.exact_match, "f1": base.f1},
        "kinds": rows, "wrong_with_f1_at_least_half": half_right,
    });
    Ok((table, found, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(context: &str, answer: &str, start: usize) -> SquadQuestion {
        SquadQuestion {
            id: "1".into(),
            question: "When?".into(),
            context: context.into(),
            answers: vec![(answer.into(), start)],
            article: 0,
            title: String::new(),
        }
    }

    #[test]
    fn controlled_answers_do_what_they_say() {
        let c = "Zoë won in March 1876. Then she left for good.";
        let question = q(c, "March 1876", 11);
        let span = answer_span(&question).unwrap();
        assert_eq!(&c[span.0..span.1], "March 1876");
        assert_eq!(extended(c, span, 3), "March 1876. Then she");
        assert_eq!(extended(c, (c.len() - 5, c.len()), 3), "good.");
        assert_eq!(recased("March 1876"), "The MARCH 1876.");
        assert_eq!(first_word("March 1876"), "March");
        assert_eq!(reversed_words("March 1876"), "1876 March");
        assert_eq!(digits_changed("March 1876").unwrap(), "March 2987");
        assert_eq!(digits_changed("March"), None);
        assert_eq!(sentence_at(c, span.0), "Zoë won in March 1876.");
        assert_eq!(sentence_at(c, c.len() - 3), "Then she left for good.");
        // A wrong offset falls back to the first occurrence.
        assert_eq!(answer_span(&q(c, "she", 0)).unwrap().0, c.find("she").unwrap());
        let refs = vec![("the March 1876".to_string(), 0)];
        assert!(contains_answer("Zoë won in March 1876.", &refs));
        assert!(!contains_answer("1876 March", &refs));
        assert!(!contains_answer("", &refs));
    }

    #[test]
    fn answer_kinds_sort_answers_by_how_they_stand_to_the_gold() {
        let refs = vec![("the March 1876".to_string(), 0), ("1876".to_string(), 0)];
        assert_eq!(answer_kind("March 1876.", &refs), AnswerKind::Exact);
        assert_eq!(answer_kind("in 1876", &refs), AnswerKind::TooLong);
        assert_eq!(answer_kind("March", &refs), AnswerKind::TooShort);
        assert_eq!(answer_kind("March 12", &refs), AnswerKind::Overlapping);
        assert_eq!(answer_kind("April", &refs), AnswerKind::Disjoint);
        assert_eq!(answer_kind("", &refs), AnswerKind::Disjoint);
        assert_eq!(answer_kind("the", &refs), AnswerKind::Disjoint);
    }

    #[test]
    fn relabelling_changes_exactly_n_items_of_one_class() {
        let gold: Vec<String> = ["a", "b", "a", "c", "a"].map(String::from).to_vec();
        assert_eq!(relabel(&gold, "a", "c", 2), ["c", "b", "c", "c", "a"]);
        let labels: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let (rarest, largest, other, counts) = class_sizes(&gold, &labels).unwrap();
        assert_eq!((rarest, largest, other, counts), (1, 0, 2, vec![3, 1, 1, 0]));
        assert!(class_sizes(&gold[..2], &labels).is_err());
    }
}
