//! Extractive question answering, the parts around the model: cutting a long context into
//! overlapping windows that each fit the model beside the question, and choosing the answer
//! span from a span head's start and end logits, mapped back to characters of the context.
//! The conventions are those of Hugging Face's `run_qa.py` (`prepare_validation_features`,
//! `postprocess_qa_predictions`): windows of context tokens advancing by `len − stride`,
//! candidates from the `n_best` largest start and end logits, spans that start and end inside
//! the context, end ≥ start and at most `max_answer_len` tokens, ranked by start + end logit.

use crate::config::{RunConfig, Task};
use crate::data::hf_tokenizer::HfTokenizer;
use crate::data::Tokenizer;
use crate::model::transformer::{Arch, EncoderHead, Transformer};
use anyhow::{bail, ensure, Context, Result};

/// One window: the context tokens `start..end` (token indices into the context's tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub end: usize,
}

/// Windows of at most `len` context tokens over `n` tokens, each starting `len − stride`
/// tokens after the previous one (the stride is the overlap), the last ending at `n`.
pub fn windows(n: usize, len: usize, stride: usize) -> Result<Vec<Window>> {
    ensure!(len > 0, "the context window must hold at least one token");
    ensure!(stride < len, "the stride ({stride}) must be smaller than the window ({len} tokens)");
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + len).min(n);
        out.push(Window { start, end });
        if end == n {
            break;
        }
        start += len - stride;
    }
    Ok(out)
}

/// A candidate answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Character range of the answer in the context.
    pub chars: (usize, usize),
    /// start logit + end logit.
    pub score: f32,
}

/// The best spans (at most `n_best`, best first) of one window from its start and end logits
/// over the window's sequence positions; `offsets[i]` is the character range in the context of
/// position i, or None for positions outside the context (question, special tokens, padding).
pub fn best_spans(
    start_logits: &[f32],
    end_logits: &[f32],
    offsets: &[Option<(usize, usize)>],
    n_best: usize,
    max_answer_len: usize,
) -> Vec<Span> {
    let top = |l: &[f32]| {
        let mut idx: Vec<usize> = (0..l.len()).collect();
        // Largest first; ties by position, as a stable argsort of the negated logits.
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
        idx.truncate(n_best);
        idx
    };
    let mut out = Vec::new();
    for &s in &top(start_logits) {
        for &e in &top(end_logits) {
            let (Some(Some(os)), Some(Some(oe))) = (offsets.get(s), offsets.get(e)) else { continue };
            if e < s || e - s + 1 > max_answer_len {
                continue;
            }
            out.push(Span { chars: (os.0, oe.1), score: start_logits[s] + end_logits[e] });
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(n_best);
    out
}

/// The pre- and post-processing settings (Hugging Face `run_qa.py`'s names and defaults are
/// `max_seq_length` 384, `doc_stride` 128, `max_answer_length` 30, `n_best_size` 20; the
/// question is cut at `max_query_len` pieces as in BERT's `run_squad.py`, 64).
#[derive(Clone, Copy, Debug)]
pub struct QaSettings {
    /// Tokens of a window, `[CLS]` question `[SEP]` context `[SEP]`.
    pub max_len: usize,
    /// Context tokens two consecutive windows share.
    pub doc_stride: usize,
    pub max_query_len: usize,
    /// Longest answer in tokens.
    pub max_answer_len: usize,
    /// Start and end candidates considered per window.
    pub n_best: usize,
}

impl QaSettings {
    /// The settings of a QA run's `[data]` (`max_len`, `doc_stride`, `max_query_len`,
    /// `max_answer_len`).
    pub fn of(cfg: &RunConfig) -> Self {
        let d = &cfg.data;
        QaSettings {
            max_len: d.max_len,
            doc_stride: d.doc_stride,
            max_query_len: d.max_query_len,
            max_answer_len: d.max_answer_len,
            ..QaSettings::default()
        }
    }
}

impl Default for QaSettings {
    fn default() -> Self {
        QaSettings { max_len: 384, doc_stride: 128, max_query_len: 64, max_answer_len: 30, n_best: 20 }
    }
}

/// One model input: a window of one question's context, `[CLS] question [SEP] context [SEP]`.
#[derive(Clone, Debug)]
pub struct Feature {
    /// Index of its question in the list the features were made from.
    pub question: usize,
    pub ids: Vec<u32>,
    /// Character range in the context of each position's token; None outside the context.
    pub offsets: Vec<Option<(usize, usize)>>,
    /// The answer's start and end position in this window; (0, 0) (`[CLS]`) when the window
    /// does not hold the whole answer (Hugging Face's convention); None without an answer.
    pub label: Option<(i32, i32)>,
}

impl Feature {
    /// Positions an answer may start or end at: `[CLS]` and the context's tokens.
    pub fn span_mask(&self) -> impl Iterator<Item = bool> + '_ {
        self.offsets.iter().enumerate().map(|(i, o)| i == 0 || o.is_some())
    }
}

/// The Hugging Face tokenizer of a QA model, with the `[CLS]` and `[SEP]` ids; any other tokenizer
/// is an error.
pub fn qa_tokenizer(tok: &Tokenizer) -> Result<(&HfTokenizer, u32, u32)> {
    let Tokenizer::Hf(hf) = tok else {
        bail!(
            "extractive QA needs a BERT-style Hugging Face tokenizer (an imported BERT/MiniLM), not a {} tokenizer",
            tok.kind()
        )
    };
    let id =
        |t: &str| hf.token_to_id(t).with_context(|| format!("the tokenizer has no {t} token (not a BERT vocabulary)"));
    Ok((hf, id("[CLS]")?, id("[SEP]")?))
}

/// The windows of one question over its context; with `answer` (its character range in the
/// context) each window's label. `index` is stored in the features.
pub fn features(
    tok: &Tokenizer,
    question: &str,
    context: &str,
    answer: Option<(usize, usize)>,
    s: &QaSettings,
    index: usize,
) -> Result<Vec<Feature>> {
    let (hf, cls, sep) = qa_tokenizer(tok)?;
    // As run_qa.py: the question's leading whitespace goes (it only wastes pieces).
    let mut q_ids = hf.pieces_with_offsets(question.trim_start())?.ids;
    q_ids.truncate(s.max_query_len);
    let c = hf.pieces_with_offsets(context)?;
    let (c_ids, c_off) = (c.ids, c.offsets);
    let room = s.max_len.saturating_sub(q_ids.len() + 3);
    ensure!(
        room > s.doc_stride,
        "a window of {} tokens leaves {room} for the context next to the {}-piece question, not more than the \
         doc stride {}: raise max_len or lower doc_stride",
        s.max_len,
        q_ids.len(),
        s.doc_stride
    );
    let mut out = Vec::new();
    for w in windows(c_ids.len(), room, s.doc_stride)? {
        let mut ids = Vec::with_capacity(q_ids.len() + 3 + w.end - w.start);
        ids.push(cls);
        ids.extend_from_slice(&q_ids);
        ids.push(sep);
        let first = ids.len();
        ids.extend_from_slice(&c_ids[w.start..w.end]);
        ids.push(sep);
        let mut offsets = vec![None; ids.len()];
        for (i, o) in c_off[w.start..w.end].iter().enumerate() {
            offsets[first + i] = Some(*o);
        }
        let label = answer.map(|(a, b)| {
            let toks = &c_off[w.start..w.end];
            match (toks.first(), toks.last()) {
                // The whole answer inside the window: the last token starting at or before its
                // start, the first token ending at or after its end.
                (Some(f), Some(l)) if f.0 <= a && l.1 >= b => {
                    let st = toks.iter().rposition(|o| o.0 <= a).unwrap_or(0);
                    let en = toks.iter().position(|o| o.1 >= b).unwrap_or(toks.len() - 1).max(st);
                    ((first + st) as i32, (first + en) as i32)
                }
                _ => (0, 0),
            }
        });
        out.push(Feature { question: index, ids, offsets, label });
    }
    Ok(out)
}

/// A model's answer: the text, its character range in the context, start + end logit.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Answer {
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub score: f32,
}

/// A padded batch of features: ids, padding mask and span mask (B, T), labels (B, 2).
#[derive(Default)]
pub struct FeatureBatch {
    pub b: usize,
    pub t: usize,
    pub idx: Vec<u32>,
    pub mask: Vec<bool>,
    pub span_mask: Vec<bool>,
    pub labels: Vec<i32>,
}

impl FeatureBatch {
    /// `rows` of `features`, padded with `pad` to the longest.
    pub fn fill(&mut self, features: &[Feature], rows: &[usize], pad: u32) {
        let t = rows.iter().map(|&r| features[r].ids.len()).max().unwrap_or(1);
        (self.b, self.t) = (rows.len(), t);
        self.idx.clear();
        self.idx.resize(rows.len() * t, pad);
        self.mask.clear();
        self.mask.resize(rows.len() * t, false);
        self.span_mask.clear();
        self.span_mask.resize(rows.len() * t, false);
        self.labels.clear();
        for (i, &r) in rows.iter().enumerate() {
            let f = &features[r];
            let row = i * t..i * t + f.ids.len();
            self.idx[row.clone()].copy_from_slice(&f.ids);
            self.mask[row.clone()].fill(true);
            for (m, keep) in self.span_mask[row].iter_mut().zip(f.span_mask()) {
                *m = keep;
            }
            let (s, e) = f.label.unwrap_or((-1, -1));
            self.labels.extend([s, e]);
        }
    }
}

/// Checks that `model` is a QA model (an encoder with the span head).
pub fn check_qa_model(model: &Transformer) -> Result<()> {
    ensure!(
        model.config.arch == Arch::Encoder && model.config.encoder_head == EncoderHead::Span,
        "not an extractive QA model: it is a{} (answering needs a checkpoint trained with data.task = \"qa\", \
         whose encoder has the span head qa_outputs)",
        match (model.config.arch, model.config.encoder_head) {
            (Arch::Encoder, EncoderHead::Classifier) => "n encoder classifier",
            (Arch::Decoder, _) => " decoder language model",
            _ => "n encoder-decoder",
        }
    );
    Ok(())
}

/// The `top_k` best answers (best first) of each of `n_questions` questions from the features
/// of their windows, batched by the model's batch size; `contexts[q]` is question q's context
/// and `on_batch` is called with the number of features done (a progress bar). With labels, also
/// returns the mean span loss over the features.
pub fn predict(
    model: &mut Transformer,
    pad: u32,
    features: &[Feature],
    contexts: &[&str],
    s: &QaSettings,
    top_k: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<(Vec<Vec<Answer>>, Option<f32>)> {
    check_qa_model(model)?;
    let mut out: Vec<Vec<Answer>> = vec![Vec::new(); contexts.len()];
    let rows: Vec<usize> = (0..features.len()).collect();
    let mut batch = FeatureBatch::default();
    let with_labels = features.iter().all(|f| f.label.is_some()) && !features.is_empty();
    let mut loss_sum = 0.0f64;
    for chunk in rows.chunks(model.max_batch()) {
        batch.fill(features, chunk, pad);
        let labels = with_labels.then_some(&batch.labels[..]);
        let loss = model.forward_span(
            &batch.idx,
            Some(&batch.mask),
            Some(&batch.span_mask),
            labels,
            batch.b,
            batch.t,
            false,
            0,
        )?;
        loss_sum += loss.unwrap_or(0.0) as f64 * chunk.len() as f64;
        let t = batch.t;
        for (i, &r) in chunk.iter().enumerate() {
            let f = &features[r];
            let row = &model.logits()[i * 2 * t..(i + 1) * 2 * t];
            let (start, end) = row.split_at(t);
            for span in best_spans(start, end, &f.offsets, s.n_best, s.max_answer_len) {
                let text: String =
                    contexts[f.question].chars().skip(span.chars.0).take(span.chars.1 - span.chars.0).collect();
                out[f.question].push(Answer { text, start: span.chars.0, end: span.chars.1, score: span.score });
            }
        }
        on_batch(chunk.len());
    }
    for answers in &mut out {
        // Best first; the same span found in two overlapping windows is kept once, at its best.
        answers.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut seen = std::collections::HashSet::new();
        answers.retain(|a| seen.insert((a.start, a.end)));
        answers.truncate(top_k);
    }
    Ok((out, with_labels.then(|| (loss_sum / features.len() as f64) as f32)))
}

/// A trained QA checkpoint ready to answer: the model, its tokenizer and the pre-processing it
/// was trained with.
pub struct QaModel {
    pub model: Transformer,
    pub tokenizer: Tokenizer,
    pub settings: QaSettings,
}

impl QaModel {
    /// Loads the checkpoint `dir` for inference, `max_batch` windows per forward pass; a
    /// checkpoint of another task or without a BERT-style tokenizer is an error naming it.
    pub fn load(dir: &std::path::Path, max_batch: usize) -> Result<Self> {
        let ck = crate::io::checkpoint::load_inference(dir, max_batch)
            .with_context(|| format!("cannot load the QA checkpoint {}", dir.display()))?;
        check_qa_model(&ck.model).with_context(|| format!("checkpoint {}", dir.display()))?;
        ensure!(
            ck.run_config.data.task == Task::Qa,
            "checkpoint {} was trained with another data.task than \"qa\"",
            dir.display()
        );
        qa_tokenizer(&ck.tokenizer).with_context(|| format!("checkpoint {}", dir.display()))?;
        Ok(QaModel { settings: QaSettings::of(&ck.run_config), model: ck.model, tokenizer: ck.tokenizer })
    }

    /// The `top_k` best answers (best first) to each (question, context) pair; `on_batch`
    /// gets the number of windows each forward pass answered (their total is
    /// [`QaModel::windows`]' length, for a progress bar).
    pub fn answer_all(
        &mut self,
        pairs: &[(&str, &str)],
        top_k: usize,
        on_batch: impl FnMut(usize),
    ) -> Result<Vec<Vec<Answer>>> {
        let feats = self.windows(pairs)?;
        let pad = qa_tokenizer(&self.tokenizer)?.0.pad_id();
        let contexts: Vec<&str> = pairs.iter().map(|p| p.1).collect();
        Ok(predict(&mut self.model, pad, &feats, &contexts, &self.settings, top_k, on_batch)?.0)
    }

    /// The windows of every (question, context) pair.
    pub fn windows(&self, pairs: &[(&str, &str)]) -> Result<Vec<Feature>> {
        let mut out = Vec::new();
        for (i, (q, c)) in pairs.iter().enumerate() {
            out.extend(features(&self.tokenizer, q, c, None, &self.settings, i)?);
        }
        Ok(out)
    }
}

/// Words the overlap baseline ignores (scripts/qa_baseline.py's list).
const OVERLAP_STOP_WORDS: &[&str] = &[
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "with", "from", "and", "or", "is", "was", "were",
    "are", "be", "been", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "did", "do", "does",
    "that", "this", "these", "those", "it", "its", "as", "into", "than", "then", "there", "their",
];

/// The sentences of `context`: split after `.`, `!` or `?` followed by whitespace (the
/// whitespace dropped), empty ones left out; Python's `re.split(r"(?<=[.!?])\s+", context)`.
pub fn context_sentences(context: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut prev) = (0, None);
    let mut chars = context.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() && matches!(prev, Some('.' | '!' | '?')) {
            out.push(&context[start..i]);
            while let Some(&(_, w)) = chars.peek().filter(|(_, w)| w.is_whitespace()) {
                chars.next();
                prev = Some(w);
            }
            start = chars.peek().map_or(context.len(), |&(j, _)| j);
            continue;
        }
        prev = Some(c);
    }
    out.push(&context[start..]);
    out.retain(|s| !s.trim().is_empty());
    out
}

/// The lower-cased words of `s` (runs of letters, digits and `_`) that are not stop words.
fn overlap_words(s: &str) -> std::collections::HashSet<String> {
    s.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty() && !OVERLAP_STOP_WORDS.contains(w))
        .map(str::to_string)
        .collect()
}

/// The trivial extractive-QA baseline of scripts/qa_baseline.py: the sentence of `context` that
/// shares the most words with `question` (lower case, stop words removed; the earlier sentence
/// on a tie), as it stands in the context.
pub fn overlap_sentence<'a>(question: &str, context: &'a str) -> &'a str {
    let q = overlap_words(question);
    let mut best = ("", None::<usize>);
    for s in context_sentences(context) {
        let shared = overlap_words(s).intersection(&q).count();
        if best.1.is_none_or(|b| shared > b) {
            best = (s, Some(shared));
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_baseline_picks_the_sentence_sharing_most_words() {
        let ctx = "Paris is big.  The Seine flows through Paris!\nIt is a river? Yes";
        assert_eq!(
            context_sentences(ctx),
            ["Paris is big.", "The Seine flows through Paris!", "It is a river?", "Yes"]
        );
        assert_eq!(context_sentences("No split.here"), ["No split.here"]);
        assert_eq!(context_sentences("  "), Vec::<&str>::new());
        // "river" and "seine" against one word each: the earlier sentence wins the tie.
        assert_eq!(overlap_sentence("Which river is the Seine?", ctx), "The Seine flows through Paris!");
        assert_eq!(overlap_sentence("What is a river?", ctx), "It is a river?");
        // Only stop words: every sentence shares none, so the first.
        assert_eq!(overlap_sentence("What is it?", ctx), "Paris is big.");
        assert_eq!(overlap_sentence("Anything?", ""), "");
    }
}
