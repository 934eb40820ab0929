//! Question 12: evaluating a language model. Every metric of `lmlab eval` that applies to
//! generated text, on a trained model's outputs, and then on controlled perturbations of real
//! references, to show what each metric misses.
//!
//! Part 1, generation. A character model is trained on Tiny Shakespeare (`train::train`, the
//! experiment's budget) and its validation perplexity measured with the sliding window
//! (`eval::perplexity`). `prompts` passages of the validation split, each starting at a line,
//! are cut into a prompt (block_size characters, the model's whole context) and its true
//! continuation (`continuation` characters). The model continues every prompt with lmlab's
//! sampler (`infer::sample::generate`): greedily, and at temperature 1 with `sample_seeds`
//! seeds. Every metric then scores the continuations against the true ones, next to two
//! controls: the true continuations themselves (the ceiling) and the true continuation of
//! another passage (real Shakespeare, the wrong passage).
//!
//! Part 2, what each metric misses. `references` English captions of Multi30k's test set (those
//! with the word "is" or "are", so that a negation can be inserted, and only characters the
//! model can read) are scored against themselves after controlled changes (`PERTURBATIONS`):
//! unchanged, lowercased without punctuation (same meaning), words shuffled, one content word
//! replaced, a negation inserted, repeated twice, cut to its first half, another caption, the
//! empty string.
//!
//! Parts 3 and 4 (`task_metrics`): the classification metrics on a trained classifier's
//! predictions and on controlled changes of the gold labels, and SQuAD's exact match and F1 on
//! the overlap baseline's answers and on controlled changes of the gold answers.
//!
//! The metrics (`METRICS`): BLEU, chrF, chrF++ (sacrebleu's), ROUGE-1/2/L F (rouge-score's,
//! no stemming), BERTScore F1 and the cosine of sentence embeddings (all-MiniLM-L6-v2, as
//! `lmlab eval relevance`; skipped, with the reason, when the model is not on this machine),
//! fluency (perplexity of each text under the trained model), distinct-2, seq-rep-4 and
//! self-BLEU. Texts are scored as one line each: line breaks and runs of spaces become one
//! space. Nothing is smoothed over: a metric that cannot be computed (fluency of empty texts)
//! is reported as missing.

use super::applications::{train_classifier, train_reader, Place};
use super::sweep::{drop_weights, write_heatmaps};
use super::{new_result, task_metrics, train_model, Budget, ExplainResult, Question, Spec, Table};
use crate::data::parallel::shared_data_file;
use crate::eval::bleu::corpus_bleu;
use crate::eval::chrf::{corpus_chrf, corpus_chrf_pp};
use crate::eval::diversity::{corpus_repetition, distinct_n, self_bleu};
use crate::eval::perplexity::sliding_window_eval;
use crate::eval::relevance::{summary_metrics, RelevanceOptions, RelevanceScorer};
use crate::eval::rouge::corpus_rouge;
use crate::eval::stability::{summarize, Summary};
use crate::infer::sample::{generate, SampleOptions};
use crate::inspect::plot::{Heatmap, Scale};
use crate::io::checkpoint::{self, Checkpoint};
use anyhow::{ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;
use std::path::Path;

/// The sizes this kind reads from a budget's `counts`.
pub(super) const COUNT_KEYS: &[&str] = &["prompts", "continuation", "sample_seeds", "references"];

/// The captions of part 2 and the questions of part 4, under the shared data directory.
const MULTI30K: &str = "multi30k/test_2016_flickr.en";
const SQUAD: &str = "squad/dev-v1.1.json";

/// Column labels of the metrics, in the order of [`Scores::values`].
const METRICS: [&str; 12] = [
    "BLEU",
    "chrF",
    "chrF++",
    "ROUGE-1",
    "ROUGE-2",
    "ROUGE-L",
    "BERTScore F1",
    "cosine",
    "fluency ppl",
    "distinct-2",
    "seq-rep-4",
    "self-BLEU",
];

/// The first this many of [`METRICS`] compare with a reference; the others read the texts alone.
const REFERENCE_METRICS: usize = 8;

/// Every metric of one set of texts against its references; None where it was not measured.
#[derive(Clone, Debug, Serialize)]
struct Scores {
    /// sacrebleu's corpus BLEU, 0–100.
    bleu: f64,
    /// chrF and chrF++, 0–100.
    chrf: f64,
    chrf_pp: f64,
    /// ROUGE F-measures, mean over the items, 0–1.
    rouge1: f64,
    rouge2: f64,
    rouge_l: f64,
    /// BERTScore F1 (MiniLM's last layer, no idf) and sentence-embedding cosine, means over the
    /// items; None without the model.
    bertscore_f1: Option<f64>,
    cosine: Option<f64>,
    /// Perplexity of the texts under the trained model; None when no text has 2 tokens.
    fluency_ppl: Option<f64>,
    distinct_2: f64,
    seq_rep_4: f64,
    /// None for fewer than two texts.
    self_bleu: Option<f64>,
}

impl Scores {
    fn values(&self) -> [Option<f64>; 12] {
        [
            Some(self.bleu),
            Some(self.chrf),
            Some(self.chrf_pp),
            Some(self.rouge1),
            Some(self.rouge2),
            Some(self.rouge_l),
            self.bertscore_f1,
            self.cosine,
            self.fluency_ppl,
            Some(self.distinct_2),
            Some(self.seq_rep_4),
            self.self_bleu,
        ]
    }
}

/// The reference metrics of a row of [`METRICS`] on one 0–1 scale (BLEU and chrF divided by
/// 100), for the heat maps; NaN where a metric is missing.
fn unit_scale(values: &[Option<f64>]) -> Vec<f64> {
    values[..REFERENCE_METRICS]
        .iter()
        .enumerate()
        .map(|(k, v)| v.map_or(f64::NAN, |v| if k < 3 { v / 100.0 } else { v }))
        .collect()
}

/// A text as one line: line breaks and runs of whitespace become one space.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Scores `hyps` against `refs` (one reference each) with every metric; `lm` gives fluency,
/// `relevance` (encoded with the same `refs`) BERTScore and cosine.
fn score(
    hyps: &[String],
    refs: &[String],
    lm: &mut Checkpoint,
    relevance: Option<&mut RelevanceScorer>,
) -> Result<Scores> {
    ensure!(hyps.len() == refs.len() && !hyps.is_empty(), "{} texts for {} references", hyps.len(), refs.len());
    let h: Vec<&str> = hyps.iter().map(String::as_str).collect();
    let r = vec![refs.iter().map(String::as_str).collect::<Vec<&str>>()];
    let rouge = corpus_rouge(&h, &r, false)?.mean;
    let (mut bertscore_f1, mut cosine) = (None, None);
    if let Some(scorer) = relevance {
        let m = summary_metrics(&scorer.score(hyps)?);
        let get = |name: &str| m.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        (bertscore_f1, cosine) = (get("bertscore_f1"), get("cos_ref"));
    }
    let mut scorable = false;
    for t in hyps {
        scorable |= lm.tokenizer.encode(t).with_context(|| format!("the model cannot read {t:?}"))?.len() >= 2;
    }
    let fluency_ppl =
        if scorable { Some(crate::eval::fluency(&mut lm.model, &lm.tokenizer, hyps)?.perplexity) } else { None };
    Ok(Scores {
        bleu: corpus_bleu(&h, &r)?.score,
        chrf: corpus_chrf(&h, &r)?.score,
        chrf_pp: corpus_chrf_pp(&h, &r)?.score,
        rouge1: rouge.rouge1.fmeasure,
        rouge2: rouge.rouge2.fmeasure,
        rouge_l: rouge.rouge_l.fmeasure,
        bertscore_f1,
        cosine,
        fluency_ppl,
        distinct_2: distinct_n(&h, 2)?.ratio,
        seq_rep_4: corpus_repetition(&h, 4)?.rate,
        self_bleu: if h.len() >= 2 { Some(self_bleu(&h)?.score) } else { None },
    })
}

/// all-MiniLM-L6-v2 encoding `refs` for BERTScore and cosine, or why it cannot be used here.
fn relevance_scorer(refs: &[String]) -> Result<std::result::Result<RelevanceScorer, String>> {
    let dir = crate::infer::embed::default_model_dir();
    if !dir.join("model.safetensors").is_file() {
        return Ok(Err(format!(
            "all-MiniLM-L6-v2 is not at {} (fetch it with scripts/fetch_minilm.sh, or set $LMLAB_MINILM_DIR to its directory)",
            dir.display()
        )));
    }
    let opts = RelevanceOptions {
        model: Some(dir),
        layer: None,
        idf: false,
        baseline: None,
        cos_reference: true,
        cos_source: false,
        batch: 32,
    };
    Ok(Ok(RelevanceScorer::new(&opts, &[refs.to_vec()], None)?))
}

/// The controlled changes of part 2: (name, what it does, what a metric that keeps its score
/// under it misses, a label for the chart).
const PERTURBATIONS: [(&str, &str, &str, &str); 9] = [
    ("reference", "the reference itself", "", "reference"),
    ("lowercased, no punctuation", "same words and meaning, different surface", "case and punctuation", "lowercase"),
    ("words shuffled", "same words, order destroyed", "word order", "shuffled"),
    ("one content word replaced", "one word changed, meaning changed", "a replaced content word", "word swap"),
    ("negation inserted", "one word added, meaning reversed", "a negation", "negated"),
    ("repeated twice", "everything said twice", "repetition", "repeated"),
    ("first half", "half of the content missing", "missing content", "first half"),
    ("another caption", "fluent, on another picture", "a caption of another picture", "other"),
    ("empty", "nothing", "an empty output", "empty"),
];

/// Lower case, ASCII punctuation removed, whitespace collapsed.
fn lowercase_no_punct(s: &str) -> String {
    one_line(&s.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect::<String>())
}

/// The words in a random order other than the original (when there is one).
fn shuffle_words(s: &str, rng: &mut Xoshiro256PlusPlus) -> String {
    let mut w: Vec<&str> = s.split_whitespace().collect();
    let original = w.clone();
    for _ in 0..10 {
        w.shuffle(rng);
        if w != original {
            break;
        }
    }
    if w == original && w.len() > 1 {
        w.rotate_left(1);
    }
    w.join(" ")
}

/// Function words that are never the "content word" replaced.
const FUNCTION_WORDS: [&str; 14] = [
    "with", "while", "their", "there", "from", "into", "about", "that", "this", "they", "them", "through", "some",
    "each",
];

/// The index (into the whitespace words) and letters of the longest all-letter word of `s`
/// (at least 4 letters, not a function word; the first of equals), punctuation around it aside.
fn longest_word(s: &str) -> Option<(usize, String)> {
    let mut best: Option<(usize, String)> = None;
    for (i, w) in s.split_whitespace().enumerate() {
        let core = w.trim_matches(|c: char| !c.is_alphanumeric());
        let ok = core.len() >= 4
            && core.chars().all(|c| c.is_alphabetic())
            && !FUNCTION_WORDS.contains(&core.to_lowercase().as_str());
        if ok && best.as_ref().is_none_or(|(_, b)| core.len() > b.len()) {
            best = Some((i, core.to_string()));
        }
    }
    best
}

/// `s` with its longest content word replaced by the longest content word of `other` (when
/// both have one and they differ), the punctuation around it kept.
fn replace_content_word(s: &str, other: &str) -> String {
    let (Some((i, word)), Some((_, new))) = (longest_word(s), longest_word(other)) else { return s.to_string() };
    if word.eq_ignore_ascii_case(&new) {
        return s.to_string();
    }
    let words: Vec<String> = s
        .split_whitespace()
        .enumerate()
        .map(|(k, w)| if k == i { w.replacen(&word, &new.to_lowercase(), 1) } else { w.to_string() })
        .collect();
    words.join(" ")
}

/// `s` with "not" after its first word "is" or "are"; None when it has neither.
fn negate(s: &str) -> Option<String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "is" || *w == "are")?;
    let mut out: Vec<&str> = words[..=at].to_vec();
    out.push("not");
    out.extend_from_slice(&words[at + 1..]);
    Some(out.join(" "))
}

/// The first half of the words (rounded up).
fn first_half(s: &str) -> String {
    let w: Vec<&str> = s.split_whitespace().collect();
    w[..w.len().div_ceil(2)].join(" ")
}

/// Every perturbation of `refs` (item i's "another caption" is item i + 1's), in the order of
/// [`PERTURBATIONS`].
fn perturb(refs: &[String], seed: u64) -> Vec<Vec<String>> {
    let n = refs.len();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let next = |i: usize| &refs[(i + 1) % n];
    vec![
        refs.to_vec(),
        refs.iter().map(|r| lowercase_no_punct(r)).collect(),
        refs.iter().map(|r| shuffle_words(r, &mut rng)).collect(),
        (0..n).map(|i| replace_content_word(&refs[i], next(i))).collect(),
        refs.iter().map(|r| negate(r).unwrap_or_else(|| r.clone())).collect(),
        refs.iter().map(|r| format!("{r} {r}")).collect(),
        refs.iter().map(|r| first_half(r)).collect(),
        (0..n).map(|i| next(i).clone()).collect(),
        vec![String::new(); n],
    ]
}

/// One generation prompt of part 1.
#[derive(Clone, Debug, Serialize)]
struct Item {
    prompt: String,
    reference: String,
    greedy: String,
    /// One continuation per sampling seed.
    sampled: Vec<String>,
}

pub(super) fn run(q: &Question, spec: &Spec, budget: Budget, dir: &Path, threads: usize) -> Result<ExplainResult> {
    let b = spec.budget(budget);
    let (n_prompts, cont, n_seeds, n_refs) =
        (b.count("prompts", 32), b.count("continuation", 120), b.count("sample_seeds", 3), b.count("references", 100));
    ensure!(n_prompts >= 2 && cont > 0 && n_seeds > 0 && n_refs >= 2, "experiments/{}.toml: counts too small", q.id);
    let seed = b.seeds.first().copied().unwrap_or(1);
    let captions_path = shared_data_file(MULTI30K)
        .with_context(|| format!("{MULTI30K} not found under $LMLAB_DATA or ../shared/data (see its README)"))?;
    let run_dir = dir.join("run");
    let (config, summary) = train_model(q, spec, None, budget, &run_dir, threads)?;
    let mut result = new_result(q, spec, budget, vec![seed]);
    result.configs.push(("model".into(), config.to_toml()));
    let mut ck = checkpoint::load(&summary.checkpoint, 1, false)?;
    let block = ck.model.config.block_size;

    // Part 1: perplexity on the validation split, then continuations of its passages.
    let text = crate::util::read_corpus(Path::new(&ck.run_config.data.path))?;
    let val = crate::data::TokenDataset::split(ck.tokenizer.encode(&text)?, ck.run_config.data.val_fraction)?.val;
    let ppl = sliding_window_eval(&mut ck.model, &val, block + 1, block)?;
    let need = block + cont;
    ensure!(val.len() > need * n_prompts, "the validation split is too short for {n_prompts} prompts of {need} tokens");
    let newline = ck.tokenizer.encode("\n").ok().filter(|v| v.len() == 1).map(|v| v[0]);
    let mut items = Vec::with_capacity(n_prompts);
    for i in 0..n_prompts {
        // Evenly spaced, moved to the start of the next line.
        let mut start = i * (val.len() - need) / n_prompts;
        if let Some(nl) = newline {
            if let Some(k) = val[start..val.len() - need].iter().position(|&t| t == nl) {
                start += k + 1;
            }
        }
        let prompt = &val[start..start + block];
        let reference = ck.tokenizer.decode(&val[start + block..start + need])?;
        items.push((prompt.to_vec(), reference));
    }
    let generate_all = |ck: &mut Checkpoint, temperature: f32, seed: u64| -> Result<Vec<String>> {
        let opts = SampleOptions { max_new_tokens: cont, temperature, ..SampleOptions::default() };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        items
            .iter()
            .map(|(prompt, _)| {
                let ids = generate(&mut ck.model, prompt, &opts, &mut rng, |_| ())?;
                ck.tokenizer.decode(&ids)
            })
            .collect()
    };
    let greedy = generate_all(&mut ck, 0.0, seed)?;
    let sample_seeds: Vec<u64> = (0..n_seeds as u64).map(|s| 1000 * seed + s + 1).collect();
    let sampled: Vec<Vec<String>> =
        sample_seeds.iter().map(|&s| generate_all(&mut ck, 1.0, s)).collect::<Result<_>>()?;
    let refs: Vec<String> = items.iter().map(|(_, r)| one_line(r)).collect();
    let lines = |v: &[String]| v.iter().map(|s| one_line(s)).collect::<Vec<String>>();
    let mut minilm = relevance_scorer(&refs)?;
    let skipped = minilm.as_ref().err().cloned();
    let other: Vec<String> = (0..refs.len()).map(|i| refs[(i + 1) % refs.len()].clone()).collect();
    let mut gen_rows: Vec<(String, Scores)> = Vec::new();
    for (name, hyps) in [("true continuation", refs.clone()), ("greedy", lines(&greedy)), ("another passage", other)] {
        gen_rows.push((name.to_string(), score(&hyps, &refs, &mut ck, minilm.as_mut().ok())?));
    }
    let mut sampled_scores = Vec::new();
    for s in &sampled {
        sampled_scores.push(score(&lines(s), &refs, &mut ck, minilm.as_mut().ok())?);
    }
    // Per metric: mean, sd and range over the sampling seeds.
    let sampled_summary: Vec<Option<Summary>> = (0..METRICS.len())
        .map(|k| {
            let v: Vec<f64> = sampled_scores.iter().filter_map(|s| s.values()[k]).collect();
            (v.len() == sampled_scores.len()).then(|| summarize(&v))
        })
        .collect();

    // Part 2: perturbations of real references.
    let captions = crate::util::read_lines(&captions_path)?;
    let eligible: Vec<String> = captions
        .iter()
        .map(|c| one_line(c))
        .filter(|c| negate(c).is_some() && ck.tokenizer.encode(c).is_ok())
        .collect();
    let n_eligible = eligible.len();
    let references: Vec<String> = eligible.into_iter().take(n_refs).collect();
    ensure!(references.len() >= 2, "{} has fewer than 2 usable captions", captions_path.display());
    let perturbed = perturb(&references, seed);
    let mut minilm_refs = if skipped.is_none() { Some(relevance_scorer(&references)?) } else { None };
    let mut pert_rows: Vec<(String, Scores)> = Vec::new();
    for ((name, _, _, _), hyps) in PERTURBATIONS.iter().zip(&perturbed) {
        let rel = minilm_refs.as_mut().and_then(|m| m.as_mut().ok());
        pert_rows.push((name.to_string(), score(hyps, &references, &mut ck, rel)?));
    }

    // Table: part 1 then part 2, every metric.
    let cell = |v: Option<f64>, k: usize| v.map_or("–".to_string(), |v| fmt_value(k, v));
    let mut rows = Vec::new();
    for (name, s) in &gen_rows[..2] {
        rows.push(
            std::iter::once(format!("generation: {name}"))
                .chain(s.values().iter().enumerate().map(|(k, v)| cell(*v, k)))
                .collect(),
        );
    }
    rows.push(
        std::iter::once(format!("generation: sampled T = 1 (mean ± sd, {n_seeds} seeds)"))
            .chain(sampled_summary.iter().enumerate().map(|(k, s)| match s {
                None => "–".to_string(),
                Some(s) if n_seeds > 1 => format!("{} ± {}", cell(Some(s.mean), k), cell(Some(s.std), k)),
                Some(s) => cell(Some(s.mean), k),
            }))
            .collect(),
    );
    rows.push(
        std::iter::once("generation: another passage".to_string())
            .chain(gen_rows[2].1.values().iter().enumerate().map(|(k, v)| cell(*v, k)))
            .collect(),
    );
    for (name, s) in &pert_rows {
        rows.push(
            std::iter::once(format!("caption: {name}"))
                .chain(s.values().iter().enumerate().map(|(k, v)| cell(*v, k)))
                .collect(),
        );
    }
    result.table = Table {
        columns: std::iter::once("texts".to_string()).chain(METRICS.iter().map(|m| m.to_string())).collect(),
        rows,
    };

    // Charts: the reference metrics on one 0–1 scale, per system and per perturbation.
    let mut metric_labels: Vec<String> = METRICS[..REFERENCE_METRICS].iter().map(|m| m.to_string()).collect();
    metric_labels[6] = "BERTScore".into();
    let mean_sampled: Vec<Option<f64>> = sampled_summary.iter().map(|s| s.as_ref().map(|s| s.mean)).collect();
    let gen_systems: Vec<(&str, Vec<Option<f64>>)> = vec![
        ("truth", gen_rows[0].1.values().to_vec()),
        ("greedy", gen_rows[1].1.values().to_vec()),
        ("sampled", mean_sampled),
        ("other text", gen_rows[2].1.values().to_vec()),
    ];
    let heat = |title: &str, rows: &[(&str, Vec<Option<f64>>)]| Heatmap {
        title: title.into(),
        row_labels: rows.iter().map(|(n, _)| n.to_string()).collect(),
        col_labels: metric_labels.clone(),
        values: rows.iter().flat_map(|(_, v)| unit_scale(v)).collect(),
    };
    let unit = Scale { lo: 0.0, hi: 1.0, diverging: false };
    let on_unit = "0–1 scale (BLEU, chrF ÷ 100)";
    let g = [heat(on_unit, &gen_systems)];
    result.charts.push(write_heatmaps(
        &g,
        1,
        "continuations of Tiny Shakespeare scored against the true ones: the true continuation itself, greedy decoding, \
         sampling at T = 1 (mean over seeds) and another passage's true continuation (reference metrics, BLEU and chrF ÷ 100)",
        "generated text",
        unit,
        "generation",
        dir,
    )?);
    let p_rows: Vec<(&str, Vec<Option<f64>>)> =
        PERTURBATIONS.iter().zip(&pert_rows).map(|((_, _, _, short), (_, s))| (*short, s.values().to_vec())).collect();
    let p = [heat(on_unit, &p_rows)];
    result.charts.push(write_heatmaps(
        &p,
        1,
        "what each metric sees: perturbed Multi30k captions scored against the originals (the reference itself, \
         lowercased without punctuation, words shuffled, one content word swapped, a negation inserted, repeated twice, \
         the first half, another caption, empty; BLEU and chrF ÷ 100)",
        "perturbed captions",
        unit,
        "perturbations",
        dir,
    )?);

    let part2 = format!(
        "Part 2 perturbs the first {} of the {n_eligible} Multi30k test captions with \"is\" or \"are\" that the model can read.",
        references.len()
    );
    result.findings = findings(&ppl, &summary, &gen_rows, &sampled_summary, &pert_rows, skipped.as_deref(), part2);

    // Part 3: a trained classifier's predictions; part 4: SQuAD answers.
    let app = spec
        .applications
        .first()
        .with_context(|| format!("experiments/{}.toml: part 3 needs a classifier in [[applications]]", q.id))?;
    let place = Place::new(dir, &app.name, seed, threads)?;
    let classified = train_classifier(app, budget, &place, &mut result.configs)
        .with_context(|| format!("experiments/{}.toml, application {:?}", q.id, app.name))?;
    drop_weights(place.run_dir());
    let (class_table, class_chart, class_found, class_data) = task_metrics::classification(&classified, dir)?;
    let squad_path = shared_data_file(SQUAD)
        .with_context(|| format!("{SQUAD} not found under $LMLAB_DATA or ../shared/data (see its README)"))?;
    let questions = crate::eval::squad::read_squad_file(&squad_path)?;
    let (squad_table, squad_chart, squad_found, squad_data) = task_metrics::squad(&questions, SQUAD, dir)?;
    result.more_tables = vec![
        ("Part 3: classification metrics (TREC question types)".into(), class_table),
        ("Part 4: SQuAD exact match and F1".into(), squad_table),
    ];
    result.charts.extend([class_chart, squad_chart]);
    result.findings.extend(class_found);
    result.findings.extend(squad_found);
    // Part 4's fine-tuned reader, when the MiniLM weights are present.
    let app = spec.applications.get(1).with_context(|| {
        format!("experiments/{}.toml: part 4 needs a QA reader as the second [[applications]]", q.id)
    })?;
    let place = Place::new(dir, &app.name, seed, threads)?;
    let reader = train_reader(app, budget, &place, &mut result.configs)
        .with_context(|| format!("experiments/{}.toml, application {:?}", q.id, app.name))?;
    drop_weights(place.run_dir());
    let reader_data = match reader {
        Ok(reader) => {
            let (table, found, data) = task_metrics::reader_answers(&reader)?;
            result.more_tables.push(("Part 4: the fine-tuned reader's answers on held-out articles".into(), table));
            result.findings.extend(found);
            data
        }
        Err(why) => {
            result.findings.push(format!("Part 4's fine-tuned reader was not trained: {why}."));
            serde_json::json!({"skipped": why})
        }
    };
    let examples: Vec<serde_json::Value> = PERTURBATIONS
        .iter()
        .zip(&perturbed)
        .map(|((name, meaning, _, _), texts)| serde_json::json!({"name": name, "meaning": meaning, "first": texts[0]}))
        .collect();
    result.data = serde_json::json!({
        "model": {"steps": summary.steps, "val_loss": summary.val_loss, "params": ck.model.num_params()},
        "perplexity": ppl,
        "metrics": METRICS,
        "generation": {
            "prompts": n_prompts, "continuation": cont, "sample_seeds": sample_seeds,
            "systems": gen_rows.iter().map(|(n, s)| serde_json::json!({"name": n, "scores": s})).collect::<Vec<_>>(),
            "sampled": sampled_scores, "sampled_summary": sampled_summary, "items": items_json(&items, &greedy, &sampled, &ck)?,
        },
        "perturbations": {
            "references": references.len(), "eligible": n_eligible, "examples": examples,
            "systems": pert_rows.iter().map(|(n, s)| serde_json::json!({"name": n, "scores": s})).collect::<Vec<_>>(),
        },
        "classification": class_data,
        "squad": squad_data,
        "reader": reader_data,
        "minilm": match &skipped { None => serde_json::json!({"used": true}), Some(why) => serde_json::json!({"used": false, "skipped": why}) },
    });
    drop_weights(&run_dir);
    Ok(result)
}

fn items_json(
    items: &[(Vec<u32>, String)],
    greedy: &[String],
    sampled: &[Vec<String>],
    ck: &Checkpoint,
) -> Result<Vec<Item>> {
    items
        .iter()
        .enumerate()
        .map(|(i, (prompt, reference))| {
            Ok(Item {
                prompt: ck.tokenizer.decode(prompt)?,
                reference: reference.clone(),
                greedy: greedy[i].clone(),
                sampled: sampled.iter().map(|s| s[i].clone()).collect(),
            })
        })
        .collect()
}

/// Metric `k`'s value with its usual precision.
fn fmt_value(k: usize, v: f64) -> String {
    match k {
        0..=2 | 11 => format!("{v:.1}"),
        8 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// "BLEU 12.3".
fn named(k: usize, v: f64) -> String {
    format!("{} {}", METRICS[k], fmt_value(k, v))
}

/// The sentences of the result, from its numbers.
fn findings(
    ppl: &crate::eval::LmEval,
    summary: &crate::train::TrainSummary,
    gen: &[(String, Scores)],
    sampled: &[Option<Summary>],
    pert: &[(String, Scores)],
    skipped: Option<&str>,
    part2: String,
) -> Vec<String> {
    let mut out = vec![format!(
        "The character model trained {} steps (val loss {:.3}); on the whole validation split ({} characters, disjoint windows) its perplexity is {:.2}, {:.3} bits per character.",
        summary.steps, summary.val_loss, ppl.tokens, ppl.perplexity, ppl.bits_per_token
    )];
    let v = |s: &Scores, k: usize| s.values()[k];
    let (truth, greedy, other) = (&gen[0].1, &gen[1].1, &gen[2].1);
    // Part 1: the model against the controls.
    let present: Vec<usize> = (0..REFERENCE_METRICS).filter(|&k| v(greedy, k).is_some()).collect();
    let list = |s: &Scores| present.iter().map(|&k| named(k, v(s, k).unwrap())).collect::<Vec<_>>().join(", ");
    out.push(format!("Against the true continuations, greedy decoding scores {}.", list(greedy)));
    out.push(format!(
        "The true continuation of another passage (real Shakespeare, the wrong passage) scores {}.",
        list(other)
    ));
    let beaten: Vec<&str> =
        present.iter().filter(|&&k| v(other, k).unwrap() >= v(greedy, k).unwrap()).map(|&k| METRICS[k]).collect();
    out.push(if beaten.is_empty() {
        format!(
            "Greedy decoding beats the unrelated real passage on all {} reference metrics, though far below the ceiling of the true text ({}).",
            present.len(),
            list(truth)
        )
    } else {
        format!(
            "On {} of {} reference metrics ({}) the unrelated real passage scores at least as high as the model's greedy continuation: with one reference, overlap and similarity measure closeness to that one continuation, not whether a continuation is plausible.",
            beaten.len(),
            present.len(),
            beaten.join(", ")
        )
    });
    if let (Some(b), Some(c)) = (&sampled[0], &sampled[1]) {
        let n_seeds = b.runs;
        let gap = v(greedy, 1).unwrap() - c.mean;
        let verdict = if gap.abs() > 2.0 * c.std { "larger than" } else { "within" };
        out.push(format!(
            "Sampling at T = 1 scores chrF {:.1} (sd {:.1} over {n_seeds} seeds, range {:.1}–{:.1}) and BLEU {:.2} (sd {:.2}); greedy's chrF differs by {gap:+.1}, {verdict} twice the seed-to-seed sd.",
            c.mean, c.std, c.min, c.max, b.mean, b.std
        ));
    }
    if let (Some(rep), Some(dist), Some(flu), Some(sb)) = (&sampled[10], &sampled[9], &sampled[8], &sampled[11]) {
        let (g_rep, t_rep) = (greedy.seq_rep_4, truth.seq_rep_4);
        let repeats =
            if g_rep > 2.0 * t_rep.max(0.005) { "repeats itself" } else { "repeats itself no more than the real text" };
        out.push(format!(
            "Without a reference: greedy decoding {repeats} (seq-rep-4 {g_rep:.3}, sampling {:.3}, the true text {t_rep:.3}); distinct-2 is {:.3}, {:.3} and {:.3}, self-BLEU {:.1}, {:.1} and {:.1}.",
            rep.mean, greedy.distinct_2, dist.mean, truth.distinct_2,
            greedy.self_bleu.unwrap_or(f64::NAN), sb.mean, truth.self_bleu.unwrap_or(f64::NAN)
        ));
        if let (Some(g), Some(t)) = (greedy.fluency_ppl, truth.fluency_ppl) {
            let order = if g < t {
                "so fluency rewards the model's own most likely text over real Shakespeare"
            } else {
                "so the real text reads as more fluent than greedy output here"
            };
            out.push(format!(
                "Fluency (perplexity under the trained model itself): greedy {g:.2}, sampled {:.2}, true continuation {t:.2}, {order}.",
                flu.mean
            ));
        }
    }
    // Part 2: what each perturbation leaves untouched.
    out.push(part2);
    let base = &pert[0].1;
    let present: Vec<usize> = (0..REFERENCE_METRICS).filter(|&k| v(base, k).is_some()).collect();
    out.push(format!(
        "On the reference itself: {}.",
        present.iter().map(|&k| named(k, v(base, k).unwrap())).collect::<Vec<_>>().join(", ")
    ));
    let ratio = |s: &Scores, k: usize| v(s, k).unwrap() / v(base, k).unwrap();
    let find = |n: &str| &pert.iter().find(|(p, _)| p == n).expect("a perturbation").1;
    let shuffled = find("words shuffled");
    let by_ratio = |a: &&usize, b: &&usize| ratio(shuffled, **a).total_cmp(&ratio(shuffled, **b));
    if let (Some(&hi), Some(&lo)) = (present.iter().max_by(by_ratio), present.iter().min_by(by_ratio)) {
        out.push(format!(
            "Shuffling the words keeps {} at {} while {} falls to {} ({:.0}% of its score on the reference).",
            METRICS[hi],
            fmt_value(hi, v(shuffled, hi).unwrap()),
            METRICS[lo],
            fmt_value(lo, v(shuffled, lo).unwrap()),
            100.0 * ratio(shuffled, lo)
        ));
    }
    // Per metric: the changes it does not see (at least 90% of its score on the reference kept).
    let surface = find("lowercased, no punctuation");
    for &k in &present {
        let misses: Vec<String> = PERTURBATIONS
            .iter()
            .zip(pert)
            .skip(2)
            .filter(|(_, (_, s))| ratio(s, k) >= 0.9)
            .map(|((_, _, missed, _), (_, s))| format!("{missed} ({})", fmt_value(k, v(s, k).unwrap())))
            .collect();
        let lc = v(surface, k).unwrap();
        let robust = if ratio(surface, k) >= 0.9 {
            format!("it is robust to lowercasing without punctuation ({})", fmt_value(k, lc))
        } else {
            format!(
                "it penalises lowercasing without punctuation, which keeps the meaning, to {} ({:.0}%)",
                fmt_value(k, lc),
                100.0 * ratio(surface, k)
            )
        };
        out.push(if misses.is_empty() {
            format!("{} loses more than 10% under every change tested; {robust}.", METRICS[k])
        } else {
            format!(
                "{} misses {}: it keeps at least 90% of its score on the reference; {robust}.",
                METRICS[k],
                misses.join(", ")
            )
        });
    }
    let (empty, another) = (find("empty"), find("another caption"));
    if let (Some(be), Some(ce), Some(ba), Some(ca)) =
        (empty.bertscore_f1, empty.cosine, another.bertscore_f1, another.cosine)
    {
        let floor = if ba.max(ca) >= 0.1 {
            ": an unrelated text does not score 0, so these values mean something only next to such a baseline"
        } else {
            ""
        };
        out.push(format!(
            "An empty output scores BERTScore F1 {be:.3} and cosine {ce:.3}; another picture's caption {ba:.3} and {ca:.3}{floor}."
        ));
    }
    let f = |n: &str| find(n).fluency_ppl.map_or("–".to_string(), |p| format!("{p:.2}"));
    // Perturbations whose perplexity is not above the captions' own: fluency cannot see them.
    let unseen: Vec<&str> = PERTURBATIONS[2..]
        .iter()
        .filter(|(n, _, _, _)| matches!((find(n).fluency_ppl, base.fluency_ppl), (Some(p), Some(b)) if p <= b))
        .map(|(_, _, missed, _)| *missed)
        .collect();
    out.push(format!(
        "Fluency (perplexity under the Shakespeare model) is {} on the captions, {} with a negation, {} with a word replaced, {} repeated and {} with the words shuffled{}; seq-rep-4 is {:.3} for the repeated captions against {:.3} for the originals.",
        f("reference"),
        f("negation inserted"),
        f("one content word replaced"),
        f("repeated twice"),
        f("words shuffled"),
        if unseen.is_empty() { String::new() } else { format!(": it rates {} as fluent as the captions or more", unseen.join(", ")) },
        find("repeated twice").seq_rep_4,
        base.seq_rep_4
    ));
    if let Some(why) = skipped {
        out.push(format!("BERTScore and cosine were not measured: {why}."));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perturbations_do_what_they_say() {
        let r = "A man in a vest is sitting in a chair.";
        assert_eq!(lowercase_no_punct(r), "a man in a vest is sitting in a chair");
        assert_eq!(negate(r).unwrap(), "A man in a vest is not sitting in a chair.");
        assert_eq!(negate("Two dogs run."), None);
        assert_eq!(first_half(r), "A man in a vest");
        assert_eq!(longest_word(r), Some((6, "sitting".into())));
        assert_eq!(replace_content_word(r, "The roof is leaking."), "A man in a vest is leaking in a chair.");
        // "through" is a function word; punctuation around the word stays.
        assert_eq!(
            replace_content_word("Dogs run through grass.", "A skateboarder."),
            "Dogs run through skateboarder."
        );
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let s = shuffle_words(r, &mut rng);
        assert_ne!(s, r);
        let (mut a, mut b): (Vec<&str>, Vec<&str>) = (s.split(' ').collect(), r.split(' ').collect());
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        assert_eq!(shuffle_words("same same", &mut rng), "same same");
        let p = perturb(&["a b is c".into(), "d is e f".into()], 1);
        assert_eq!(p.len(), PERTURBATIONS.len());
        assert_eq!(p[7], ["d is e f", "a b is c"]);
        assert_eq!(p[8], ["", ""]);
        assert_eq!(one_line("a\n b  c "), "a b c");
    }
}
