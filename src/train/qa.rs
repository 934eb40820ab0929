//! Extractive question answering (SQuAD v1.1): an encoder started from an imported BERT
//! (`train.init_from`) with the span head, trained on windows of question + context.
//!
//! ```text
//! [CLS] question [SEP] context window [SEP] (B,T) + mask ─ encoder ─ qa_outputs ─ (B,2,T)
//!     ─ (CE(start) + CE(end)) / 2, positions outside the context masked; a window without the
//!       whole answer is labelled ([CLS], [CLS]) as in Hugging Face's run_qa.py
//! ```
//!
//! The split of `data.train` is by article, in file order: the last `data.heldout_articles`
//! articles are held out (evaluated once at the end), the others train. Paragraphs that occur in
//! `data.test` (e.g. XQuAD-en, whose paragraphs come from the SQuAD dev set) are dropped from
//! the training articles, so that every test paragraph is unseen text. A seeded
//! `data.val_fraction` of the remaining training paragraphs (whole paragraphs, so windows of one
//! context never straddle the split) is the validation set: its loss picks `ckpt_best` and its
//! EM/F1 is logged. `results.json` reports EM/F1 of the best checkpoint on the held-out
//! articles and on `data.test`, and the predictions files score with `lmlab eval squad`.

use super::classify::RowSampler;
use super::run::{Eval, LogWindow, Resumed, RunTracker};
use super::{log_skipped, optimizer_step, GradAccum, TrainOptions, TrainSummary};
use crate::config::RunConfig;
use crate::data::Tokenizer;
use crate::eval::squad::{evaluate, read_squad_file, Question, SquadScore};
use crate::infer::qa_span::{features, predict, qa_tokenizer, Feature, FeatureBatch, QaSettings};
use crate::io::checkpoint::{self, TrainState};
use crate::kernels::dropout::mix64;
use crate::model::transformer::Transformer;
use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The character range of a training question's (first) answer, which must be found at its
/// `answer_start`; otherwise an error naming the question.
pub fn answer_chars(q: &Question, what: &str) -> Result<(usize, usize)> {
    let (text, start) = q
        .answers
        .first()
        .with_context(|| format!("{what}: question {} (article {:?}) has no answer to train on", q.id, q.title))?;
    let n = text.chars().count();
    let found: String = q.context.chars().skip(*start).take(n).collect();
    ensure!(
        found == *text && n > 0,
        "{what}: question {} (article {:?}): the answer {text:?} is not in its context at answer_start {start} \
         (found {found:?})",
        q.id,
        q.title
    );
    Ok((*start, start + n))
}

/// The windows of `questions`; with `labelled`, each window's answer position.
pub fn all_features(
    tok: &Tokenizer,
    questions: &[Question],
    s: &QaSettings,
    labelled: bool,
    what: &str,
) -> Result<Vec<Feature>> {
    let mut out = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let answer = if labelled { Some(answer_chars(q, what)?) } else { None };
        out.extend(
            features(tok, &q.question, &q.context, answer, s, i)
                .with_context(|| format!("{what}: question {}", q.id))?,
        );
    }
    Ok(out)
}

/// The predicted answer text of every question (question id → text: the official predictions
/// JSON), the mean span loss when the features are labelled, and the SQuAD score.
pub fn answer_all(
    model: &mut Transformer,
    tok: &Tokenizer,
    questions: &[Question],
    feats: &[Feature],
    s: &QaSettings,
    on_batch: impl FnMut(usize),
) -> Result<(HashMap<String, String>, Option<f32>, SquadScore)> {
    let (hf, _, _) = qa_tokenizer(tok)?;
    let contexts: Vec<&str> = questions.iter().map(|q| q.context.as_str()).collect();
    let (answers, loss) = predict(model, hf.pad_id(), feats, &contexts, s, 1, on_batch)?;
    let preds: HashMap<String, String> = questions
        .iter()
        .zip(answers)
        .map(|(q, a)| (q.id.clone(), a.into_iter().next().map(|a| a.text).unwrap_or_default()))
        .collect();
    let score = evaluate(questions, &preds);
    Ok((preds, loss, score))
}

/// The questions of `data.train` by role (see the module doc).
struct Split {
    train: Vec<Question>,
    val: Vec<Question>,
    heldout: Vec<Question>,
    /// Training-article questions dropped because their paragraph is in the test file.
    excluded: usize,
    /// The RNG after drawing the validation paragraphs; it goes on to shuffle the windows.
    rng: Xoshiro256PlusPlus,
}

fn split(
    all: Vec<Question>,
    heldout_articles: usize,
    excluded: &HashSet<&str>,
    val_fraction: f64,
    seed: u64,
) -> Result<Split> {
    let articles = all.iter().map(|q| q.article).max().unwrap_or(0) + 1;
    ensure!(
        heldout_articles < articles,
        "data.heldout_articles = {heldout_articles} leaves no training article of {articles}"
    );
    let first_heldout = articles - heldout_articles;
    let (heldout, train): (Vec<Question>, Vec<Question>) = all.into_iter().partition(|q| q.article >= first_heldout);
    let before = train.len();
    let train: Vec<Question> = train.into_iter().filter(|q| !excluded.contains(q.context.as_str())).collect();
    let n_excluded = before - train.len();
    // Validation paragraphs: a seeded shuffle of the distinct training contexts (first-seen order).
    let mut contexts: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for q in &train {
        if seen.insert(q.context.as_str()) {
            contexts.push(q.context.as_str());
        }
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    contexts.shuffle(&mut rng);
    let n_val = (contexts.len() as f64 * val_fraction).round() as usize;
    let val_ctx: HashSet<String> = contexts[..n_val].iter().map(|c| c.to_string()).collect();
    let (val, train): (Vec<Question>, Vec<Question>) = train.into_iter().partition(|q| val_ctx.contains(&q.context));
    ensure!(
        !train.is_empty() && !val.is_empty(),
        "data.val_fraction = {val_fraction} leaves no training or no validation paragraphs"
    );
    Ok(Split { train, val, heldout, excluded: n_excluded, rng })
}

/// Trains the span head (and the encoder) on `data.train`'s training articles, or resumes such
/// a run from `resume`; writes `results.json` and the predictions of the held-out articles
/// (`heldout_predictions.json`) and of `data.test` (`test_predictions.json`).
pub fn train_qa(cfg: &RunConfig, resume: Option<&Path>, opts: &TrainOptions) -> Result<TrainSummary> {
    let (d, tc) = (&cfg.data, &cfg.train);
    ensure!(
        !crate::dist::world().is_distributed(),
        "data.task = \"qa\" trains in one process (no data parallelism yet)"
    );
    let s = QaSettings::of(cfg);
    let all = read_squad_file(&d.train)?;
    let test = if d.test.is_empty() { None } else { Some(read_squad_file(&d.test)?) };
    let excluded: HashSet<&str> = test.iter().flatten().map(|q| q.context.as_str()).collect();
    let Split { train: train_q, val: val_q, heldout: heldout_q, excluded: n_excluded, rng } =
        split(all.clone(), d.heldout_articles, &excluded, d.val_fraction, tc.seed)?;
    let out_dir = PathBuf::from(&tc.out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;

    let mut init_note = None;
    let (tokenizer, mut model, mut opt, from) = match resume {
        Some(dir) => {
            let r = Resumed::load(dir, cfg)?;
            (r.tokenizer, r.model, r.opt, Some(r.from))
        }
        None => {
            let (tokenizer, model, opt, note) = super::run::pretrained_model(cfg, None)?;
            init_note = Some(note);
            (tokenizer, model, opt, None)
        }
    };
    let (hf, _, _) = qa_tokenizer(&tokenizer).context("train.init_from's tokenizer")?;
    let pad = hf.pad_id();
    let mut scaler = super::run::loss_scaler(cfg, from.as_ref());
    let train_feats = all_features(&tokenizer, &train_q, &s, true, &d.train)?;
    let val_feats = all_features(&tokenizer, &val_q, &s, true, &d.train)?;
    let mut sampler = RowSampler::new((0..train_feats.len()).collect(), rng);
    if let Some(from) = &from {
        sampler.restore(&from.task_state()?, &from.state.rng).context("cannot resume the window order")?;
    }

    let schedule = cfg.optim.schedule();
    let mut batch = FeatureBatch::default();
    let mut tracker = RunTracker::start(cfg, opts, from.as_ref())?;
    if let Some(note) = init_note {
        tracker.info(note);
    }
    let answerable = train_feats.iter().filter(|f| f.label != Some((0, 0))).count();
    tracker.info(format!(
        "model: {} parameters ({} layers, {} wide), span head; data: {} training questions ({} windows, {answerable} \
         holding their answer) from {} articles, {} excluded as paragraphs of {}; {} validation questions ({} \
         windows); {} held-out questions ({} articles); windows of {} tokens, stride {}; {} threads",
        model.num_params(),
        cfg.model.n_layer,
        cfg.model.n_embd,
        train_q.len(),
        train_feats.len(),
        all.iter().map(|q| q.article).max().unwrap_or(0) + 1 - d.heldout_articles,
        n_excluded,
        if d.test.is_empty() { "no test file" } else { &d.test },
        val_q.len(),
        val_feats.len(),
        heldout_q.len(),
        d.heldout_articles,
        s.max_len,
        s.doc_stride,
        rayon::current_num_threads()
    ));

    let mut last_train = f32::NAN;
    let validate = |model: &mut Transformer,
                    opt: &crate::optim::Optimizer,
                    sampler: &RowSampler,
                    step: u64,
                    train_loss: f32,
                    tracker: &mut RunTracker,
                    loss_scaler| {
        let (_, loss, score) = answer_all(model, &tokenizer, &val_q, &val_feats, &s, |_| {})?;
        let val_loss = loss.unwrap_or(f32::NAN);
        tracker.info(format!(
            "step {step}: validation EM {:.2} F1 {:.2} on {} questions, span loss {val_loss:.4}",
            score.exact_match,
            score.f1,
            val_q.len()
        ));
        let eval = Eval { step, train_loss, val_loss, val_accuracy: Some(score.f1 / 100.0) };
        tracker.evaluated(eval, |record| {
            let state = TrainState {
                step,
                rng: sampler.rng.clone(),
                record: record.clone(),
                task: Some(serde_json::to_value(sampler.state(&[]))?),
                loss_scaler,
            };
            checkpoint::encode(model, opt, cfg, &tokenizer, &state)
        })
    };

    let mut step = tracker.start_step();
    let mut window = LogWindow::new();
    while step < tc.max_iters {
        if tracker.eval_due(step)
            && validate(&mut model, &opt, &sampler, step, last_train, &mut tracker, scaler.state())?
        {
            break;
        }
        model.zero_grad();
        let mut acc = GradAccum::new(tc.grad_accum_steps, scaler.loss_scale());
        for micro in 0..tc.grad_accum_steps as u64 {
            let rows = sampler.next(tc.batch_size);
            batch.fill(&train_feats, rows, pad);
            let seed = mix64(tc.seed ^ mix64(step)) ^ micro;
            let loss = model
                .forward_span(
                    &batch.idx,
                    Some(&batch.mask),
                    Some(&batch.span_mask),
                    Some(&batch.labels),
                    batch.b,
                    batch.t,
                    true,
                    seed,
                )?
                .unwrap_or(0.0);
            acc.backward(&mut model, loss, step)?;
        }
        let loss = acc.finish(&mut model);
        let lr = schedule.lr(step);
        let st = optimizer_step(&mut model, &mut opt, cfg.optim.clipping(), step, loss, lr, &mut scaler)?;
        if st.skipped {
            log_skipped(&mut tracker.log, &tracker.progress, step + 1, &st)?;
        }
        let done = step + 1;
        if let Some(loss) = window.step(&mut tracker, done, tc.log_interval, &st, (batch.b * batch.t) as f64)? {
            last_train = loss;
        }
        step = done;
    }
    if tracker.needs_final_eval(step) {
        validate(&mut model, &opt, &sampler, step, last_train, &mut tracker, scaler.state())?;
    }

    // The held-out articles and the test file, answered by the best checkpoint (by validation
    // loss; the current model when that is the last one).
    let record = tracker.record().clone();
    let best_step = record.best_step.filter(|_| tracker.best_dir().join("state.json").is_file());
    let (reported, reported_step) = match best_step {
        Some(b) if b != step => {
            model = checkpoint::load(tracker.best_dir(), tc.batch_size, false)?.model;
            ("ckpt_best", b)
        }
        _ => ("ckpt", step),
    };
    let mut results = serde_json::json!({
        "checkpoint": reported, "step": reported_step, "steps": step, "val_loss": record.best_val_loss,
        "split": {
            "train_file": d.train, "heldout_articles": d.heldout_articles,
            "train_questions": train_q.len(), "validation_questions": val_q.len(),
            "excluded_training_questions": n_excluded, "heldout_questions": heldout_q.len(),
        },
        "max_len": s.max_len, "doc_stride": s.doc_stride, "max_answer_len": s.max_answer_len,
    });
    let mut eval_set = |name: &str, questions: &[Question], file: &str, tracker: &mut RunTracker| -> Result<()> {
        let t0 = Instant::now();
        let feats = all_features(&tokenizer, questions, &s, false, file)?;
        let (preds, _, score) = answer_all(&mut model, &tokenizer, questions, &feats, &s, |_| {})?;
        let path = out_dir.join(format!("{name}_predictions.json"));
        crate::io::atomic::write_file_atomic(&path, serde_json::to_string_pretty(&preds)?.as_bytes())?;
        tracker.info(format!(
            "{name}: EM {:.2} F1 {:.2} on {} questions ({} windows) with {reported} (step {reported_step}), {:.0} s; \
             predictions in {}",
            score.exact_match,
            score.f1,
            questions.len(),
            feats.len(),
            t0.elapsed().as_secs_f64(),
            path.display()
        ));
        results[name] = serde_json::json!({"file": file, "exact_match": score.exact_match, "f1": score.f1,
            "questions": score.total, "predictions": path});
        Ok(())
    };
    eval_set("heldout", &heldout_q, &d.train, &mut tracker)?;
    if let Some(test) = &test {
        eval_set("test", test, &d.test, &mut tracker)?;
    }
    crate::io::atomic::write_file_atomic(
        &out_dir.join("results.json"),
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )?;
    if results.get("heldout").is_none() {
        bail!("no held-out evaluation was written");
    }
    Ok(tracker.finish(step))
}
