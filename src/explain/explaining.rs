//! Question 13: explaining a model and checking it for bias, with lmlab's interpretability tools
//! (`inspect::interpret`) and fairness measures (`eval::fairness`), on the repository's models.
//!
//! The models:
//! - **stories260K**, llama2.c's 260K-parameter model of TinyStories (`../shared/data/llama2c`),
//!   imported as `lmlab import --llama2c` does (`io::llama2c::import`, `checkpoint::save_new`)
//!   and loaded as an ordinary checkpoint;
//! - a **character model** trained here on Tiny Shakespeare (arm `char-lm`, `train::train`);
//! - a **TREC question classifier** trained here (arm `trec-classifier`).
//!
//! Explaining, for each language model on one sentence (`STORIES_SENTENCE`, `CHAR_SENTENCE`):
//! the model's own next-token prediction after it; every layer's and head's attention map
//! (`attention_maps`) and attention rollout; the logit lens at the last token (the rank and
//! probability of the final prediction after every layer, `logit_lens`); gradient × input and
//! integrated gradients of that prediction per input token (`attribute`); and the loss change
//! when each head or feed-forward layer is zero-ablated on held-out text (`ablate_all`).
//!
//! Fairness: CrowS-Pairs (`crows_pairs`) with both causal language models (log-likelihood of
//! each sentence) and a character-level masked LM trained here (pseudo-log-likelihood of the
//! tokens the two sentences share, Nangia et al.'s own scoring), pairs they cannot read left
//! out and counted; WEAT and SEAT (`weat`) on all-MiniLM-L6-v2's sentence embeddings (skipped,
//! with the reason, when the model is not on this machine); group metrics (`groups`) of the
//! TREC classifier's test predictions, with the questions grouped by length.

use super::sweep::{drop_weights, write_chart_pair, write_heatmaps};
use super::{arm, new_result, train_model, Budget, ChartFiles, ExplainResult, Question, Spec, Table};
use crate::data::classify::LabelledText;
use crate::data::parallel::shared_data_file;
use crate::eval::fairness::crows_pairs::{self, CrowsReport, PairScore};
use crate::eval::fairness::groups::{group_metrics, GroupReport};
use crate::eval::fairness::weat;
use crate::inspect::interpret::ablation::{ablate_all, AblationTable};
use crate::inspect::interpret::attention::{attention_maps, rollout, AttentionLayer};
use crate::inspect::interpret::attribution::{attribute, Attribution, Method, Target};
use crate::inspect::interpret::lens::logit_lens;
use crate::inspect::plot::{plot_heatmaps, plot_xy, Heatmap, Scale, XyChart, XySeries};
use crate::io::checkpoint::{self, Checkpoint};
use crate::model::transformer::AblationMode;
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The sizes this kind reads from a budget's `counts`.
pub(super) const COUNT_KEYS: &[&str] = &["ig_steps", "ablation_windows", "crows_pairs", "permutations"];

const STORIES_MODEL: &str = "llama2c/stories260K.bin";
const STORIES_TOKENIZER: &str = "llama2c/tok512.bin";
const CROWS: &str = "crows-pairs/crows_pairs_anonymized.csv";
/// Masked copies of a sentence per forward pass when the masked LM scores CrowS-Pairs.
const MLM_BATCH: usize = 16;
/// What a masked LM's CrowS-Pairs scores are (`Crows::score`).
const PSEUDO_LL: &str = "pseudo-log-likelihood of the shared tokens";
/// Held-out text for stories260K's ablation (TinyStories itself is not in the shared data).
const CAPTIONS: &str = "multi30k/test_2016_flickr.en";

/// The sentence each model reads; both end where the next token can be copied from earlier in
/// the sentence (the boy's name, the end of "king").
const STORIES_SENTENCE: &str = "Once upon a time, there was a little boy named Tom. One day,";
const CHAR_SENTENCE: &str = "The king is dead; long live the kin";

/// The logit lens at the last token, one layer.
#[derive(Clone, Debug, Serialize)]
struct LensRow {
    layer: String,
    /// Probability and rank (0 = top) of the model's final prediction.
    prob: f64,
    rank: usize,
    /// This layer's own top token and its probability.
    top: String,
    top_prob: f64,
}

/// Where the last token looks: the head that puts the most weight on earlier occurrences of the
/// predicted token.
#[derive(Clone, Debug, Serialize)]
struct CopyHead {
    layer: usize,
    head: usize,
    /// Its total weight on those positions.
    weight: f64,
}

/// Everything measured on one language model.
#[derive(Clone, Debug, Serialize)]
struct Explained {
    model: String,
    params: usize,
    sentence: String,
    tokens: Vec<String>,
    /// The model's own next-token prediction after the sentence.
    prediction: String,
    prediction_id: u32,
    probability: f64,
    /// Every layer's maps (n_head, T, T).
    attention: Vec<AttentionLayer>,
    /// max over layers, heads and queries of |Σ_keys p − 1|, and the largest weight on a key
    /// after its query.
    max_row_sum_error: f64,
    max_future_weight: f64,
    /// Earlier positions holding the predicted token, and the head that attends to them most.
    earlier_positions: Vec<usize>,
    copy_head: Option<CopyHead>,
    /// Row T − 1 of attention rollout.
    rollout_last: Vec<f64>,
    lens: Vec<LensRow>,
    /// max |p_lens − p_model| over the vocabulary at the last token, last layer against the
    /// model's output.
    lens_output_diff: f64,
    attribution: Attribution,
    ablation: AblationTable,
    ablation_text: String,
}

/// CrowS-Pairs with one model, without the per-pair list.
#[derive(Clone, Debug, Serialize)]
struct Crows {
    model: String,
    /// What a sentence is scored by.
    score: String,
    read: usize,
    scored: usize,
    skipped: usize,
    /// Why: a sentence of the pair longer than the model's context, or one with a character
    /// its tokenizer cannot encode.
    skipped_too_long: usize,
    skipped_unencodable: usize,
    context: usize,
    report: CrowsReport,
    /// Pairs whose sentences differ in token count, and how many the shorter one wins.
    unequal: usize,
    shorter_wins: usize,
    /// pct_stereotype on the pairs of equal token count.
    equal: usize,
    equal_pct_stereotype: f64,
}

pub(super) fn run(q: &Question, spec: &Spec, budget: Budget, dir: &Path, threads: usize) -> Result<ExplainResult> {
    let b = spec.budget(budget);
    let (ig_steps, n_windows, n_pairs, permutations) = (
        b.count("ig_steps", 50),
        b.count("ablation_windows", 16),
        b.count("crows_pairs", 1508),
        b.count("permutations", 20000),
    );
    ensure!(
        ig_steps >= 2 && n_windows > 0 && n_pairs > 0 && permutations > 0,
        "experiments/{}.toml: counts too small",
        q.id
    );
    let seed = b.seeds.first().copied().unwrap_or(1);
    let data = |rel: &str| -> Result<PathBuf> {
        shared_data_file(rel)
            .with_context(|| format!("{rel} not found under $LMLAB_DATA or ../shared/data (see its README)"))
    };
    let (stories_bin, stories_tok, crows_csv, captions) =
        (data(STORIES_MODEL)?, data(STORIES_TOKENIZER)?, data(CROWS)?, data(CAPTIONS)?);
    let mut result = new_result(q, spec, budget, vec![seed]);

    // The models: stories260K imported, a character model and a classifier trained.
    let stories_dir = dir.join("stories260K");
    let (model, tok) = crate::io::llama2c::import(&stories_bin, &stories_tok, 1)?;
    checkpoint::save_new(&stories_dir, &model, &tok)?;
    drop(model);
    let mut stories = checkpoint::load(&stories_dir, 1, false)?;
    let char_dir = dir.join("char-lm");
    let (char_cfg, char_run) = train_model(q, spec, Some(arm(q, spec, "char-lm")?), budget, &char_dir, threads)?;
    result.configs.push(("char-lm".into(), char_cfg.to_toml()));
    let mut char_lm = checkpoint::load(&char_run.checkpoint, 1, false)?;
    let mlm_dir = dir.join("char-mlm");
    let (mlm_cfg, mlm_run) = train_model(q, spec, Some(arm(q, spec, "char-mlm")?), budget, &mlm_dir, threads)?;
    result.configs.push(("char-mlm".into(), mlm_cfg.to_toml()));
    let mut char_mlm = checkpoint::load_inference(&mlm_run.checkpoint, MLM_BATCH)?;
    let trec_dir = dir.join("trec-classifier");
    let (trec_cfg, trec_run) =
        train_model(q, spec, Some(arm(q, spec, "trec-classifier")?), budget, &trec_dir, threads)?;
    result.configs.push(("trec-classifier".into(), trec_cfg.to_toml()));

    // Explaining.
    let caption_windows: Vec<Vec<u32>> = crate::util::read_lines(&captions)?
        .iter()
        .filter_map(|c| stories.tokenizer.encode(c).ok())
        .filter(|ids| ids.len() >= 2)
        .take(n_windows)
        .collect();
    let text = crate::util::read_corpus(Path::new(&char_cfg.data.path))?;
    let val = crate::data::TokenDataset::split(char_lm.tokenizer.encode(&text)?, char_cfg.data.val_fraction)?.val;
    let w = char_lm.model.config.block_size + 1;
    let val_windows: Vec<Vec<u32>> = val.chunks_exact(w).take(n_windows).map(|c| c.to_vec()).collect();
    let explained = [
        explain_lm(
            "stories260K",
            &mut stories,
            STORIES_SENTENCE,
            &caption_windows,
            &format!("{} Multi30k test captions", caption_windows.len()),
            ig_steps,
        )?,
        explain_lm(
            "char-lm",
            &mut char_lm,
            CHAR_SENTENCE,
            &val_windows,
            &format!("{} windows of {w} characters of the validation split", val_windows.len()),
            ig_steps,
        )?,
    ];

    // Fairness: CrowS-Pairs with the causal language models and the masked one.
    let mut pairs = crows_pairs::read_pairs(&crows_csv)?;
    pairs.truncate(n_pairs);
    let crows = [
        crows("stories260K", &mut stories, &pairs)?,
        crows("char-lm", &mut char_lm, &pairs)?,
        crows("char-mlm", &mut char_mlm, &pairs)?,
    ];
    // WEAT and SEAT on MiniLM.
    let minilm = crate::infer::embed::default_model_dir();
    let weat_results = if minilm.join("model.safetensors").is_file() {
        let mut embedder = crate::infer::embed::Embedder::load(&minilm, 8)?;
        let mut embed = |texts: &[String]| embedder.embed(texts);
        let mut out = Vec::new();
        for name in weat::test_names() {
            let (t, unit) = weat::find_test(&name)?;
            out.push((name, t.title.clone(), weat::run_test(&t, unit, &mut embed, permutations as u64, seed)?));
        }
        Ok(out)
    } else {
        Err(format!(
            "all-MiniLM-L6-v2 is not at {} (fetch it with scripts/fetch_minilm.sh, or set $LMLAB_MINILM_DIR to its directory)",
            minilm.display()
        ))
    };
    // Group metrics of the classifier, by question length.
    let test_path = PathBuf::from(&trec_cfg.data.test);
    // The checkpoint whose test accuracy the run reports (the best on validation).
    let trec_ckpt = trec_run.best_checkpoint.as_ref().unwrap_or(&trec_run.checkpoint);
    let predicted = crate::train::classify::predict_file(trec_ckpt, &test_path, Some("trec"), 32)?;
    let gold = predicted.gold.clone().context("the TREC test file has labels")?;
    let questions = LabelledText::load_trec(&test_path, true)?.texts;
    ensure!(
        questions.len() == gold.len(),
        "{}: {} questions for {} labels",
        test_path.display(),
        questions.len(),
        gold.len()
    );
    let length: Vec<&str> = questions.iter().map(|t| length_group(t)).collect();
    let groups = group_metrics(&refs(&gold), &refs(&predicted.predicted), &length, "HUM")?;

    // Charts.
    for e in &explained {
        result.charts.push(attention_chart(e, dir)?);
    }
    result.charts.push(rollout_chart(&explained, dir)?);
    result.charts.push(lens_chart(&explained, dir)?);
    for e in &explained {
        result.charts.push(attribution_chart(e, dir)?);
    }
    for e in &explained {
        result.charts.push(ablation_chart(e, dir)?);
    }
    result.charts.push(crows_chart(&crows, dir)?);
    if let Ok(w) = &weat_results {
        result.charts.push(weat_chart(w, dir)?);
    }
    result.charts.push(groups_chart(&groups, dir)?);

    result.table = table(&explained, &crows, &weat_results, &groups, trec_run.test_accuracy);
    result.findings = findings(&explained, &crows, &weat_results, &groups, &trec_run);
    result.data = serde_json::json!({
        "explained": explained,
        "crows_pairs": crows,
        "weat": match &weat_results {
            Ok(w) => serde_json::json!(w.iter().map(|(n, t, r)| serde_json::json!({"test": n, "title": t, "result": r})).collect::<Vec<_>>()),
            Err(why) => serde_json::json!({"skipped": why}),
        },
        "groups": {"positive": "HUM", "grouping": "question length in words: short ≤ 7, medium 8–10, long ≥ 11",
                   "test_accuracy": trec_run.test_accuracy, "steps": trec_run.steps, "report": groups.to_json()},
    });
    let _ = std::fs::remove_dir_all(&stories_dir);
    drop_weights(&char_dir);
    drop_weights(&trec_dir);
    Ok(result)
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The question-length group of a TREC question (words: short ≤ 7, medium 8–10, long ≥ 11).
fn length_group(text: &str) -> &'static str {
    match text.split_whitespace().count() {
        0..=7 => "short",
        8..=10 => "medium",
        _ => "long",
    }
}

/// A token as a label: its text, quoted.
fn label(tok: &crate::data::Tokenizer, id: u32) -> String {
    format!("{:?}", tok.decode(&[id]).unwrap_or_else(|_| format!("<{id}>")))
}

/// Attention, logit lens, attribution and ablation of one language model on `sentence`.
fn explain_lm(
    name: &str,
    ck: &mut Checkpoint,
    sentence: &str,
    windows: &[Vec<u32>],
    windows_text: &str,
    ig_steps: usize,
) -> Result<Explained> {
    let ids = ck.tokenizer.encode(sentence)?;
    let (t, v) = (ids.len(), ck.model.config.vocab_size);
    ensure!(t >= 2 && t < ck.model.config.block_size, "{name}: the sentence is {t} tokens; its context is shorter");
    let tokens: Vec<String> = ids.iter().map(|&i| label(&ck.tokenizer, i)).collect();

    // Attention maps (their forward pass also gives the model's prediction).
    let attention = attention_maps(&mut ck.model, &ids, None)?;
    let last = &ck.model.logits()[(t - 1) * v..t * v];
    let mut probs: Vec<f32> = last.to_vec();
    crate::kernels::math::softmax_inplace(&mut probs);
    let pred = (0..v).fold(0, |b, i| if probs[i] > probs[b] { i } else { b }) as u32;
    let (mut row_err, mut future) = (0f64, 0f64);
    for l in &attention {
        for h in 0..l.n_head {
            for (i, row) in l.head(h).chunks_exact(l.tk).enumerate() {
                row_err = row_err.max((row.iter().map(|&p| p as f64).sum::<f64>() - 1.0).abs());
                future = row[i + 1..].iter().fold(future, |m, &p| m.max(p as f64));
            }
        }
    }
    let earlier: Vec<usize> = (0..t).filter(|&j| ids[j] == pred).collect();
    let copy_head = attention
        .iter()
        .flat_map(|l| {
            let earlier = &earlier;
            (0..l.n_head).map(move |h| {
                let row = &l.head(h)[(t - 1) * l.tk..t * l.tk];
                CopyHead { layer: l.layer, head: h, weight: earlier.iter().map(|&j| row[j] as f64).sum() }
            })
        })
        .filter(|_| !earlier.is_empty())
        .max_by(|a, b| a.weight.total_cmp(&b.weight));
    let r = rollout(&attention.iter().collect::<Vec<_>>())?;
    let rollout_last = r[(t - 1) * t..].to_vec();

    // The logit lens of the sentence followed by the prediction: its target at the last
    // position is the prediction (the causal mask keeps the earlier positions as they were).
    let mut extended = ids.clone();
    extended.push(pred);
    let lens_layers = logit_lens(&mut ck.model, &extended, v)?;
    let lens: Vec<LensRow> = lens_layers
        .iter()
        .map(|l| LensRow {
            layer: l.name.clone(),
            prob: l.target_prob[t - 1].unwrap_or(f32::NAN) as f64,
            rank: l.target_rank[t - 1].unwrap_or(v),
            top: label(&ck.tokenizer, l.top[t - 1][0].0),
            top_prob: l.top[t - 1][0].1 as f64,
        })
        .collect();
    let out_layer = lens_layers.last().context("the logit lens has no layer")?;
    let lens_output_diff =
        out_layer.top[t - 1].iter().map(|&(id, p)| (p - probs[id as usize]).abs() as f64).fold(0.0, f64::max);

    let attribution =
        attribute(&mut ck.model, &ids, Target::Token { pos: t - 1, token: pred }, Method::GaussLegendre, ig_steps)?;
    let ablation = ablate_all(&mut ck.model, windows, AblationMode::Zero)?;
    Ok(Explained {
        model: name.into(),
        params: ck.model.num_params(),
        sentence: sentence.into(),
        tokens,
        prediction: label(&ck.tokenizer, pred),
        prediction_id: pred,
        probability: probs[pred as usize] as f64,
        attention,
        max_row_sum_error: row_err,
        max_future_weight: future,
        earlier_positions: earlier,
        copy_head,
        rollout_last,
        lens,
        lens_output_diff,
        attribution,
        ablation,
        ablation_text: windows_text.into(),
    })
}

/// CrowS-Pairs with one model (a causal LM scored by log-likelihood, a masked LM by the
/// pseudo-log-likelihood of the shared tokens): pairs it cannot read (too long, unknown
/// characters) are counted and left out; the length confound is measured on the rest.
fn crows(name: &str, ck: &mut Checkpoint, pairs: &[crows_pairs::Pair]) -> Result<Crows> {
    let masked = ck.model.is_masked_lm();
    let mut report = if masked {
        crows_pairs::score_pairs_mlm(&mut ck.model, &ck.tokenizer, pairs, true, MLM_BATCH)
    } else {
        crows_pairs::score_pairs(&mut ck.model, &ck.tokenizer, pairs, true)
    }
    .with_context(|| format!("CrowS-Pairs with {name}"))?;
    // A sentence's length in the tokens the model reads (a causal LM's with its prefix, which
    // may be one more than the context).
    let tokens = |s: &str| {
        if masked { ck.tokenizer.encode(s) } else { crows_pairs::scoring_ids(&ck.tokenizer, s) }.map(|ids| ids.len())
    };
    let context = ck.model.config.block_size;
    let limit = if masked { context } else { context + 1 };
    let (mut skipped_too_long, mut skipped_unencodable) = (0, 0);
    let mut lengths = HashMap::new();
    for p in pairs {
        match (tokens(&p.sent_more), tokens(&p.sent_less)) {
            (Ok(m), Ok(l)) => {
                if m > limit || l > limit {
                    skipped_too_long += 1;
                }
                lengths.insert(p.id.as_str(), (m, l));
            }
            _ => skipped_unencodable += 1,
        }
    }
    let (unequal, shorter_wins, equal, equal_pct_stereotype) = length_confound(&report.pairs, &lengths);
    let skipped = report.skipped.len();
    // The summaries stay; the per-pair lists would make result.json large.
    report.pairs.clear();
    report.skipped.clear();
    Ok(Crows {
        model: name.into(),
        score: if masked { PSEUDO_LL } else { "log-likelihood" }.into(),
        read: pairs.len(),
        scored: pairs.len() - skipped,
        skipped,
        skipped_too_long,
        skipped_unencodable,
        context,
        report,
        unequal,
        shorter_wins,
        equal,
        equal_pct_stereotype,
    })
}

/// CrowS-Pairs' length confound: the pairs whose sentences differ in token count (`lengths`:
/// each pair's (sent_more, sent_less) lengths by id), how many of them the shorter sentence
/// wins (the higher score), and the pairs of equal count with their pct_stereotype (NaN when
/// there are none).
fn length_confound(pairs: &[PairScore], lengths: &HashMap<&str, (usize, usize)>) -> (usize, usize, usize, f64) {
    let len = |p: &PairScore| lengths.get(p.id.as_str()).copied().unwrap_or((p.tokens_more, p.tokens_less));
    let unequal: Vec<&PairScore> = pairs.iter().filter(|p| len(p).0 != len(p).1).collect();
    let shorter_wins = unequal
        .iter()
        .filter(|p| if len(p).0 < len(p).1 { p.ll_more > p.ll_less } else { p.ll_less > p.ll_more })
        .count();
    let equal: Vec<&PairScore> = pairs.iter().filter(|p| len(p).0 == len(p).1).collect();
    (unequal.len(), shorter_wins, equal.len(), crows_pairs::summarize(&equal).pct_stereotype)
}

fn attention_chart(e: &Explained, dir: &Path) -> Result<ChartFiles> {
    let maps: Vec<Heatmap> = e
        .attention
        .iter()
        .flat_map(|l| {
            (0..l.n_head).map(move |h| Heatmap {
                title: format!("layer {} head {h}", l.layer),
                row_labels: e.tokens.clone(),
                col_labels: e.tokens.clone(),
                values: l.head(h).iter().map(|&p| p as f64).collect(),
            })
        })
        .collect();
    let cols = e.attention.first().map_or(1, |l| l.n_head);
    let title = format!("{}: attention of every layer and head (rows: queries, columns: keys)", e.model);
    // PNG only: thousands of cells make an SVG of megabytes, which the report would inline.
    let png = format!("attention-{}.png", e.model);
    plot_heatmaps(&maps, cols, &title, Scale { lo: 0.0, hi: 1.0, diverging: false }, &dir.join(&png))?;
    Ok(ChartFiles { title, png, svg: String::new() })
}

fn rollout_chart(es: &[Explained], dir: &Path) -> Result<ChartFiles> {
    let maps: Vec<Heatmap> = es
        .iter()
        .map(|e| {
            let t = e.tokens.len();
            let r = rollout(&e.attention.iter().collect::<Vec<_>>()).unwrap_or_else(|_| vec![f64::NAN; t * t]);
            Heatmap { title: e.model.clone(), row_labels: e.tokens.clone(), col_labels: e.tokens.clone(), values: r }
        })
        .collect();
    let scale = Scale::of(&maps, false);
    let title = "attention rollout (Abnar & Zuidema, 2020)";
    write_heatmaps(&maps, maps.len(), title, title, scale, "rollout", dir)
}

fn lens_chart(es: &[Explained], dir: &Path) -> Result<ChartFiles> {
    let series = es
        .iter()
        .map(|e| XySeries {
            name: format!("{} → {}", e.model, e.prediction),
            points: e.lens.iter().enumerate().map(|(l, r)| (l as f64, r.prob)).collect(),
        })
        .collect();
    let c = XyChart {
        title: "logit lens: probability of the final prediction after each layer".into(),
        x: "layer (0 = embeddings)".into(),
        y: "probability at the last token".into(),
        series,
        scatter: false,
    };
    write_chart_pair(&c.title, "lens", dir, |path| plot_xy(&c, path).map(|_| ()))
}

fn attribution_chart(e: &Explained, dir: &Path) -> Result<ChartFiles> {
    // Each row scaled by its largest |value|: the two methods differ in scale.
    let scaled = |v: &[f64]| {
        let m = v.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
        v.iter().map(|x| x / m).collect::<Vec<f64>>()
    };
    let a = &e.attribution;
    let map = Heatmap {
        title: format!("log p({}); each row ÷ its largest |value|", e.prediction),
        row_labels: vec!["IG".into(), "grad×input".into()],
        col_labels: e.tokens.clone(),
        values: scaled(&a.integrated_gradients).into_iter().chain(scaled(&a.grad_x_input)).collect(),
    };
    let caption = format!(
        "{}: attribution of the prediction {} to each input token, integrated gradients (IG, {} steps from the zero \
         embedding) and gradient × input; red raised log p, blue lowered it",
        e.model, e.prediction, a.steps
    );
    let scale = Scale { lo: -1.0, hi: 1.0, diverging: true };
    write_heatmaps(
        &[map],
        1,
        &caption,
        &format!("{}: attribution", e.model),
        scale,
        &format!("attribution-{}", e.model),
        dir,
    )
}

fn ablation_chart(e: &Explained, dir: &Path) -> Result<ChartFiles> {
    let a = &e.ablation;
    let nh = a.heads.first().map_or(0, |h| h.len());
    let mut cols: Vec<String> = (0..nh).map(|h| format!("head {h}")).collect();
    cols.push("MLP".into());
    let map = Heatmap {
        title: format!("{}: Δ loss ({} ablation; base {:.3})", e.model, a.mode, a.base_loss),
        row_labels: (0..a.heads.len()).map(|l| format!("layer {l}")).collect(),
        col_labels: cols,
        values: a.heads.iter().zip(&a.mlps).flat_map(|(h, m)| h.iter().copied().chain([*m])).collect(),
    };
    let scale = Scale::of(std::slice::from_ref(&map), true);
    let caption =
        format!("{}: loss change when each head or feed-forward layer is zeroed ({})", e.model, e.ablation_text);
    write_heatmaps(&[map], 1, &caption, &format!("{}: ablation", e.model), scale, &format!("ablation-{}", e.model), dir)
}

fn crows_chart(cs: &[Crows], dir: &Path) -> Result<ChartFiles> {
    let mut rows: Vec<String> = vec!["overall".into()];
    for c in cs {
        let r = &c.report;
        for (k, _) in r.by_bias_type.iter().chain(&r.by_direction) {
            if !rows.contains(k) {
                rows.push(k.clone());
            }
        }
    }
    let value = |c: &Crows, row: &str| {
        let r = &c.report;
        if row == "overall" {
            return r.overall.pct_stereotype;
        }
        r.by_bias_type.iter().chain(&r.by_direction).find(|(k, _)| k == row).map_or(f64::NAN, |(_, s)| s.pct_stereotype)
    };
    let map = Heatmap {
        title: "pct_stereotype (0.5: no preference)".into(),
        row_labels: rows.iter().map(|r| short_bias_type(r)).collect(),
        col_labels: cs.iter().map(|c| c.model.clone()).collect(),
        values: rows.iter().flat_map(|row| cs.iter().map(move |c| value(c, row))).collect(),
    };
    let caption = format!(
        "CrowS-Pairs: share of pairs where the more stereotypical sentence is more likely, overall, per bias type and \
         per direction ({})",
        cs.iter().map(|c| format!("{}: {} pairs scored", c.model, c.scored)).collect::<Vec<_>>().join(", ")
    );
    let scale = Scale { lo: 0.0, hi: 1.0, diverging: false };
    write_heatmaps(&[map], 1, &caption, "CrowS-Pairs", scale, "crows-pairs", dir)
}

/// A bias type short enough for a chart's row label.
fn short_bias_type(name: &str) -> String {
    match name {
        "socioeconomic" => "socio-econ".into(),
        "nationality" => "nation".into(),
        "sexual-orientation" => "sexual-or.".into(),
        "physical-appearance" => "appearance".into(),
        other => other.into(),
    }
}

type WeatRows = Vec<(String, String, weat::WeatResult)>;

fn weat_chart(w: &WeatRows, dir: &Path) -> Result<ChartFiles> {
    let numbers: Vec<String> =
        w.iter().filter(|(n, _, _)| n.starts_with("weat")).map(|(n, _, _)| n[4..].to_string()).collect();
    let d = |name: &str| w.iter().find(|(n, _, _)| n == name).map_or(f64::NAN, |(_, _, r)| r.effect_size);
    let titles: Vec<String> = numbers
        .iter()
        .map(|k| w.iter().find(|(n, _, _)| *n == format!("weat{k}")).map_or(k.clone(), |(_, t, _)| format!("{k}: {t}")))
        .collect();
    let map = Heatmap {
        title: "effect size d (|d| > 0.8: large)".into(),
        row_labels: numbers.iter().map(|k| format!("test {k}")).collect(),
        col_labels: vec!["WEAT".into(), "SEAT".into()],
        values: numbers.iter().flat_map(|k| [d(&format!("weat{k}")), d(&format!("seat{k}"))]).collect(),
    };
    let caption = format!(
        "WEAT (single words) and SEAT (words in sentence templates) on all-MiniLM-L6-v2: {}",
        titles.join("; ")
    );
    let scale = Scale::of(std::slice::from_ref(&map), true);
    write_heatmaps(&[map], 1, &caption, "WEAT and SEAT", scale, "weat", dir)
}

fn groups_chart(g: &GroupReport, dir: &Path) -> Result<ChartFiles> {
    let rows: Vec<&crate::eval::fairness::groups::GroupScores> = g.groups.iter().chain([&g.overall]).collect();
    let map = Heatmap {
        title: format!("positive class {}", g.positive),
        row_labels: rows.iter().map(|s| s.group.clone()).collect(),
        col_labels: ["selected", "accuracy", "precision", "TPR", "FPR"].map(String::from).to_vec(),
        values: rows.iter().flat_map(|s| [s.selection_rate, s.accuracy, s.precision, s.tpr, s.fpr]).collect(),
    };
    let caption = format!(
        "TREC classifier per question-length group ({}; groups of questions, not of people): selection rate, \
         accuracy, precision, true and false positive rate of the class {}",
        rows.iter().map(|s| format!("{} {}", s.group, s.count)).collect::<Vec<_>>().join(", "),
        g.positive
    );
    let scale = Scale { lo: 0.0, hi: 1.0, diverging: false };
    write_heatmaps(&[map], 1, &caption, "TREC by question length", scale, "groups", dir)
}

/// The position and value of the largest entry of `v` by `key`.
fn top_by(v: &[f64], key: impl Fn(f64) -> f64) -> (usize, f64) {
    v.iter().enumerate().fold((0, f64::NAN), |b, (i, &x)| if b.1.is_nan() || key(x) > key(b.1) { (i, x) } else { b })
}

/// The largest head ablation effect: (layer, head, Δ loss).
fn top_head(a: &AblationTable) -> (usize, usize, f64) {
    let mut best = (0, 0, f64::NEG_INFINITY);
    for (l, row) in a.heads.iter().enumerate() {
        for (h, &d) in row.iter().enumerate() {
            if d > best.2 {
                best = (l, h, d);
            }
        }
    }
    best
}

/// 1.96 standard errors of a proportion.
fn ci95(p: f64, n: usize) -> f64 {
    1.96 * (p * (1.0 - p) / n.max(1) as f64).sqrt()
}

fn table(
    es: &[Explained],
    cs: &[Crows],
    w: &std::result::Result<WeatRows, String>,
    g: &GroupReport,
    accuracy: Option<f64>,
) -> Table {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |part: &str, model: &str, what: String, value: String| {
        rows.push(vec![part.to_string(), model.to_string(), what, value])
    };
    for e in es {
        let m = e.model.as_str();
        row(
            "prediction",
            m,
            format!("next token after {:?}", e.sentence),
            format!("{} (p {:.3})", e.prediction, e.probability),
        );
        row("attention", m, "largest |row sum − 1|".into(), format!("{:.1e}", e.max_row_sum_error));
        row("attention", m, "largest weight on a future key".into(), format!("{}", e.max_future_weight));
        if let Some(c) = &e.copy_head {
            row(
                "attention",
                m,
                format!("head most on the earlier {} (from the last token)", e.prediction),
                format!("layer {} head {} ({:.3})", c.layer, c.head, c.weight),
            );
        }
        row(
            "logit lens",
            m,
            format!("rank of {} per layer (embeddings → output)", e.prediction),
            e.lens.iter().map(|r| r.rank.to_string()).collect::<Vec<_>>().join(" → "),
        );
        row(
            "logit lens",
            m,
            format!("p({}) per layer", e.prediction),
            e.lens.iter().map(|r| format!("{:.3}", r.prob)).collect::<Vec<_>>().join(" → "),
        );
        row("logit lens", m, "last layer against the output (max |Δp|)".into(), format!("{:.1e}", e.lens_output_diff));
        let a = &e.attribution;
        let (i, v) = top_by(&a.integrated_gradients, f64::abs);
        row("attribution", m, "largest |integrated gradient|".into(), format!("{} ({v:+.3})", e.tokens[i]));
        let (i, v) = top_by(&a.grad_x_input, f64::abs);
        row("attribution", m, "largest |gradient × input|".into(), format!("{} ({v:+.3})", e.tokens[i]));
        row(
            "attribution",
            m,
            "Σ IG against f(x) − f(0) (convergence δ)".into(),
            format!(
                "{:.3} vs {:.3} ({:+.2e}, {} steps)",
                a.integrated_gradients.iter().sum::<f64>(),
                a.f_input - a.f_baseline,
                a.delta,
                a.steps
            ),
        );
        let (l, h, d) = top_head(&e.ablation);
        row("ablation", m, format!("base loss on {}", e.ablation_text), format!("{:.3}", e.ablation.base_loss));
        row("ablation", m, "head whose removal costs most".into(), format!("layer {l} head {h} ({d:+.3})"));
        let (lo, hi) =
            e.ablation.mlps.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        row("ablation", m, "feed-forward layers' Δ loss".into(), format!("{lo:+.3} … {hi:+.3}"));
    }
    for c in cs {
        let m = c.model.as_str();
        row("CrowS-Pairs", m, "score".into(), c.score.clone());
        row("CrowS-Pairs", m, "pairs scored / read".into(), format!("{} / {}", c.scored, c.read));
        let r = &c.report;
        row(
            "CrowS-Pairs",
            m,
            "pct_stereotype (95% interval)".into(),
            format!("{:.3} ± {:.3}", r.overall.pct_stereotype, ci95(r.overall.pct_stereotype, r.overall.pairs)),
        );
        row(
            "CrowS-Pairs",
            m,
            "likelihood_diff (nats, mean |score difference|)".into(),
            format!("{:.2}", r.overall.likelihood_diff),
        );
        row(
            "CrowS-Pairs",
            m,
            "shorter sentence scores higher (pairs of unequal length)".into(),
            format!("{:.3} of {}", c.shorter_wins as f64 / c.unequal.max(1) as f64, c.unequal),
        );
        row(
            "CrowS-Pairs",
            m,
            "pct_stereotype on pairs of equal length".into(),
            format!("{:.3} of {}", c.equal_pct_stereotype, c.equal),
        );
    }
    match w {
        Ok(w) => {
            for (name, title, r) in w {
                row(
                    "WEAT/SEAT",
                    "all-MiniLM-L6-v2",
                    format!("{name}: {title}"),
                    format!(
                        "d {:.3}, p {:.4} ({})",
                        r.effect_size,
                        r.p_value,
                        if r.exact { "exact" } else { "estimated" }
                    ),
                );
            }
        }
        Err(why) => row("WEAT/SEAT", "all-MiniLM-L6-v2", "skipped".into(), why.clone()),
    }
    let cls = "TREC classifier";
    row("groups", cls, "test accuracy".into(), accuracy.map_or("–".into(), |a| format!("{a:.3}")));
    for s in &g.groups {
        row(
            "groups",
            cls,
            format!("{} questions ({}): selection rate, TPR, FPR of HUM", s.group, s.count),
            format!("{:.3}, {:.3}, {:.3}", s.selection_rate, s.tpr, s.fpr),
        );
    }
    row("groups", cls, "demographic parity difference".into(), format!("{:.3}", g.demographic_parity_difference));
    row("groups", cls, "equalized odds difference".into(), format!("{:.3}", g.equalized_odds_difference));
    Table { columns: ["part", "model", "measure", "value"].map(String::from).to_vec(), rows }
}

fn findings(
    es: &[Explained],
    cs: &[Crows],
    w: &std::result::Result<WeatRows, String>,
    g: &GroupReport,
    trec: &crate::train::TrainSummary,
) -> Vec<String> {
    let mut out = Vec::new();
    for e in es {
        let t = e.tokens.len();
        out.push(format!(
            "{} ({} parameters) predicts {} after {:?} ({t} tokens) with probability {:.3}.",
            e.model, e.params, e.prediction, e.sentence, e.probability
        ));
        let heads = e.attention.iter().map(|l| l.n_head).sum::<usize>();
        out.push(format!(
            "{}: its {heads} attention maps ({} layers) are distributions over the visible keys: every row sums to 1 within {:.1e}, and the largest weight on a later key is {}.",
            e.model,
            e.attention.len(),
            e.max_row_sum_error,
            e.max_future_weight
        ));
        match &e.copy_head {
            Some(c) => out.push(format!(
                "{}: the predicted {} occurs earlier at position{} {}; from the last token, layer {} head {} puts {:.3} of its attention there, the most of any head.",
                e.model,
                e.prediction,
                if e.earlier_positions.len() > 1 { "s" } else { "" },
                e.earlier_positions.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
                c.layer,
                c.head,
                c.weight
            )),
            None => out.push(format!("{}: the predicted {} does not occur earlier in the sentence.", e.model, e.prediction)),
        }
        let mut order: Vec<usize> = (0..t).collect();
        order.sort_by(|&a, &b| e.rollout_last[b].total_cmp(&e.rollout_last[a]));
        out.push(format!(
            "{}: attention rollout traces the last token's representation mostly to {}.",
            e.model,
            order
                .iter()
                .take(3)
                .map(|&j| format!("{} at {j} ({:.3})", e.tokens[j], e.rollout_last[j]))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let first_top = e.lens.iter().position(|r| r.rank == 0);
        out.push(format!(
            "{}: in the logit lens {} has rank {} (p {:.3}) after the embeddings and rank {} (p {:.3}) at the output; {}. The last layer's readout equals the model's output (max |Δp| {:.1e}).",
            e.model,
            e.prediction,
            e.lens[0].rank,
            e.lens[0].prob,
            e.lens.last().map_or(0, |r| r.rank),
            e.lens.last().map_or(f64::NAN, |r| r.prob),
            match first_top {
                Some(k) => format!("it is first the top token after {}", e.lens[k].layer),
                None => "it is never the top token".into(),
            },
            e.lens_output_diff
        ));
        let a = &e.attribution;
        let (i, v) = top_by(&a.integrated_gradients, f64::abs);
        let (j, u) = top_by(&a.grad_x_input, f64::abs);
        let gap = a.f_input - a.f_baseline;
        let converged = a.delta.abs() <= 0.05 * gap.abs().max(1e-9);
        out.push(format!(
            "{}: integrated gradients ({} steps from the zero embedding) attribute log p({}) most to {} at {i} ({v:+.3}); gradient × input to {} at {j} ({u:+.3}). Completeness: Σ IG = {:.3} against f(x) − f(0) = {gap:.3}, δ = {:+.2e}{}.",
            e.model,
            a.steps,
            e.prediction,
            e.tokens[i],
            e.tokens[j],
            a.integrated_gradients.iter().sum::<f64>(),
            a.delta,
            if converged { ", so the attributions add up" } else { ": more than 5% off, so these integrated gradients have not converged and their values should not be read" }
        ));
        let (l, h, d) = top_head(&e.ablation);
        let n = e.ablation.heads.iter().map(Vec::len).sum::<usize>();
        let helpful = e.ablation.heads.iter().flatten().filter(|&&x| x < 0.0).count();
        let (lo, hi) =
            e.ablation.mlps.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        out.push(format!(
            "{}: zeroing one head at a time on {} (base loss {:.3}), layer {l} head {h} costs most ({d:+.3}); {helpful} of {n} heads {} the loss when removed; zeroing a feed-forward layer changes it by {lo:+.3} to {hi:+.3}.",
            e.model,
            e.ablation_text,
            e.ablation.base_loss,
            if helpful == 1 { "lowers" } else { "lower" }
        ));
    }
    for c in cs {
        let r = &c.report;
        let o = &r.overall;
        let mut bt: Vec<&(String, crows_pairs::Summary)> = r.by_bias_type.iter().collect();
        bt.sort_by(|a, b| a.1.pct_stereotype.total_cmp(&b.1.pct_stereotype));
        let ci = ci95(o.pct_stereotype, o.pairs);
        let side = if (o.pct_stereotype - 0.5).abs() <= ci { "within" } else { "outside" };
        out.push(format!(
            "CrowS-Pairs, {} (by {}): {} of {} pairs scored{}; pct_stereotype {:.3} ± {ci:.3} (95% interval, 0.5 = no preference; 0.5 is {side} it); by bias type from {} {:.3} ({} pairs) to {} {:.3} ({} pairs).",
            c.model,
            c.score,
            c.scored,
            c.read,
            if c.skipped > 0 {
                format!(
                    " ({} skipped: {} longer than its context of {} tokens, {} with a character it cannot encode)",
                    c.skipped, c.skipped_too_long, c.context, c.skipped_unencodable
                )
            } else {
                String::new()
            },
            o.pct_stereotype,
            bt.first().map_or("–", |b| b.0.as_str()),
            bt.first().map_or(f64::NAN, |b| b.1.pct_stereotype),
            bt.first().map_or(0, |b| b.1.pairs),
            bt.last().map_or("–", |b| b.0.as_str()),
            bt.last().map_or(f64::NAN, |b| b.1.pct_stereotype),
            bt.last().map_or(0, |b| b.1.pairs),
        ));
        if c.unequal > 0 {
            let share = c.shorter_wins as f64 / c.unequal as f64;
            out.push(format!(
                "CrowS-Pairs, {}: of the {} pairs whose sentences differ in length, the shorter one scores higher in {:.1}%{}; on the {} pairs of equal length pct_stereotype is {:.3}.",
                c.model,
                c.unequal,
                100.0 * share,
                match (share > 0.6, c.score == PSEUDO_LL) {
                    (true, false) => " (a sum of log-probabilities favours fewer tokens, whatever they say)",
                    (false, true) => " (the pseudo-log-likelihood sums over the tokens both sentences share, the same number in each, so length does not decide it)",
                    _ => "",
                },
                c.equal,
                c.equal_pct_stereotype
            ));
        }
    }
    match w {
        Ok(w) => {
            let sig: Vec<&str> = w.iter().filter(|(_, _, r)| r.p_value < 0.05).map(|(n, _, _)| n.as_str()).collect();
            let mut flips = Vec::new();
            for (n, _, r) in w.iter().filter(|(n, _, _)| n.starts_with("weat")) {
                if let Some((_, _, s)) = w.iter().find(|(m, _, _)| *m == n.replace("weat", "seat")) {
                    if (r.p_value < 0.05) != (s.p_value < 0.05) {
                        flips.push(format!("{n} (words p {:.3}, sentences p {:.3})", r.p_value, s.p_value));
                    }
                }
            }
            let (k, d) = w.iter().map(|(n, _, r)| (n.as_str(), r.effect_size)).fold(("–", 0.0f64), |b, x| {
                if x.1.abs() > b.1.abs() {
                    x
                } else {
                    b
                }
            });
            out.push(format!(
                "WEAT/SEAT on all-MiniLM-L6-v2: {} of {} tests give p < 0.05 ({}); the largest effect is {k} (d = {d:.2}).{}",
                sig.len(),
                w.len(),
                sig.join(", "),
                if flips.is_empty() {
                    String::new()
                } else {
                    format!(" The same word lists as single words and in sentence templates disagree on significance for {}.", flips.join(", "))
                }
            ));
        }
        Err(why) => out.push(format!("WEAT/SEAT were not measured: {why}.")),
    }
    let rate = |name: &str| g.groups.iter().find(|s| s.group == name).map_or(f64::NAN, |s| s.selection_rate);
    out.push(format!(
        "The TREC classifier ({} steps, test accuracy {}) predicts HUM for {:.3} of short, {:.3} of medium and {:.3} of long questions: demographic parity difference {:.3}, equalized odds difference {:.3} (TPR gap {:.3}, FPR gap {:.3}); the groups are question lengths, not people.",
        trec.steps,
        trec.test_accuracy.map_or("–".into(), |a| format!("{a:.3}")),
        rate("short"),
        rate("medium"),
        rate("long"),
        g.demographic_parity_difference,
        g.equalized_odds_difference,
        g.tpr_difference,
        g.fpr_difference
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_helpers() {
        assert_eq!(length_group("What is it ?"), "short");
        assert_eq!(length_group("a b c d e f g h"), "medium");
        assert_eq!(length_group("a b c d e f g h i j k"), "long");
        assert_eq!(top_by(&[0.5, -2.0, 1.0], f64::abs), (1, -2.0));
        let a = AblationTable {
            mode: "zero".into(),
            base_loss: 1.0,
            heads: vec![vec![0.1, 0.3], vec![-0.2, 0.2]],
            mlps: vec![0.5, 0.4],
            tokens: 3,
        };
        assert_eq!(top_head(&a), (0, 1, 0.3));
        assert!((ci95(0.5, 100) - 0.098).abs() < 1e-12);
        let pair = |more: f64, less: f64, tm: usize, tl: usize| PairScore {
            id: format!("{tm}-{tl}-{more}"),
            bias_type: "age".into(),
            direction: "stereo".into(),
            ll_more: more,
            ll_less: less,
            tokens_more: tm,
            tokens_less: tl,
        };
        // Shorter wins in pairs 1 and 2, loses in 3; pair 4 has equal lengths and is stereotypical.
        let pairs = [pair(-1.0, -2.0, 3, 4), pair(-3.0, -2.0, 5, 4), pair(-5.0, -1.0, 2, 4), pair(-1.0, -3.0, 4, 4)];
        assert_eq!(length_confound(&pairs, &HashMap::new()), (3, 2, 1, 1.0));
        // A masked LM's scores sum over the shared tokens (equal counts): the sentences'
        // lengths decide which is shorter.
        let shared = [pair(-1.0, -2.0, 3, 3), pair(-3.0, -2.0, 3, 3)];
        let lengths = HashMap::from([(shared[0].id.as_str(), (5, 6)), (shared[1].id.as_str(), (7, 7))]);
        assert_eq!(length_confound(&shared, &lengths), (1, 1, 1, 0.0));
    }
}
