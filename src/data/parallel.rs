//! Line-aligned parallel corpus (source/target sentence pairs) and padded seq2seq batches.
//!
//! Two batchers fill one preallocated [`Seq2SeqBatch`] in place and allocate nothing after
//! construction:
//! - [`Seq2SeqBatcher`] for training: examples sorted by length and cut into batches of similar
//!   length (little padding), batch order reshuffled every epoch; deterministic for a seed.
//! - [`EvalBatcher`] for evaluation: every example exactly once, in a fixed order, each row
//!   tagged with its corpus line ([`Seq2SeqBatch::index`]) so outputs can be put back in order.

use super::bpe::{BpeTokenizer, BOS, EOS, PAD};
use crate::util::read_lines;
use anyhow::{ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `rel` under the shared data directory: `$LMLAB_DATA/rel` (a directory), else
/// `../shared/data/rel` or `shared/data/rel` (from the working directory), else
/// `<crate root>/../shared/data/rel`. `None` when no candidate is a file.
pub fn shared_data_file(rel: &str) -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = std::env::var_os("LMLAB_DATA").filter(|v| !v.is_empty()).map(PathBuf::from);
    env.into_iter()
        .chain([PathBuf::from("../shared/data"), PathBuf::from("shared/data"), manifest.join("../shared/data")])
        .map(|d| d.join(rel))
        .find(|p| p.is_file())
}

/// Tokenized sentence pairs; `src[i]` translates to `tgt[i]`, `i` = line number - 1.
/// Sequences hold no BOS/EOS (the batchers add them to the target).
pub struct ParallelCorpus {
    pub src: Vec<Vec<u32>>,
    pub tgt: Vec<Vec<u32>>,
    /// Source / target sequences cut to `max_len` tokens by [`ParallelCorpus::load`].
    pub truncated_src: usize,
    pub truncated_tgt: usize,
}

impl ParallelCorpus {
    /// Reads and tokenizes two line-aligned files. Sequences longer than `max_len` tokens are cut
    /// to their first `max_len` (counted in `truncated_src` / `truncated_tgt`). Empty lines are
    /// kept as empty sequences so that line numbers stay aligned with the raw reference files.
    pub fn load(src_path: &Path, tgt_path: &Path, tok: &BpeTokenizer, max_len: usize) -> Result<Self> {
        Self::load_capped(src_path, tgt_path, tok, max_len, max_len)
    }

    /// [`ParallelCorpus::load`] with separate caps for sources and targets.
    pub fn load_capped(
        src_path: &Path,
        tgt_path: &Path,
        tok: &BpeTokenizer,
        max_src_len: usize,
        max_tgt_len: usize,
    ) -> Result<Self> {
        let src_lines = read_lines(src_path)?;
        let tgt_lines = read_lines(tgt_path)?;
        ensure!(
            src_lines.len() == tgt_lines.len(),
            "parallel files differ in length: {} has {} lines, {} has {} lines",
            src_path.display(),
            src_lines.len(),
            tgt_path.display(),
            tgt_lines.len()
        );
        let where_src = |i: usize| format!("{}: line {}", src_path.display(), i + 1);
        let where_tgt = |i: usize| format!("{}: line {}", tgt_path.display(), i + 1);
        let (src, truncated_src) = encode_all(src_lines.iter().map(String::as_str), tok, max_src_len, where_src)?;
        let (tgt, truncated_tgt) = encode_all(tgt_lines.iter().map(String::as_str), tok, max_tgt_len, where_tgt)?;
        Ok(ParallelCorpus { src, tgt, truncated_src, truncated_tgt })
    }

    /// Tokenizes (source, target) text pairs read from `path` (named in errors with the pair's
    /// index), cutting sources to `max_src_len` and targets to `max_tgt_len` tokens.
    pub fn from_pairs(
        pairs: &[(String, String)],
        path: &Path,
        tok: &BpeTokenizer,
        max_src_len: usize,
        max_tgt_len: usize,
    ) -> Result<Self> {
        let at = |i: usize| format!("{}: record {}", path.display(), i + 1);
        let (src, truncated_src) = encode_all(pairs.iter().map(|p| p.0.as_str()), tok, max_src_len, at)?;
        let (tgt, truncated_tgt) = encode_all(pairs.iter().map(|p| p.1.as_str()), tok, max_tgt_len, at)?;
        Ok(ParallelCorpus { src, tgt, truncated_src, truncated_tgt })
    }

    pub fn len(&self) -> usize {
        self.src.len()
    }

    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
    }

    /// Longest source sequence and longest target sequence, in tokens (without BOS/EOS).
    pub fn max_lens(&self) -> (usize, usize) {
        let longest = |v: &[Vec<u32>]| v.iter().map(Vec::len).max().unwrap_or(0);
        (longest(&self.src), longest(&self.tgt))
    }
}

/// Token ids of every text, each cut to `max_len` tokens; also the number cut. `at(i)` names
/// text `i` in errors.
fn encode_all<'a>(
    texts: impl Iterator<Item = &'a str>,
    tok: &BpeTokenizer,
    max_len: usize,
    at: impl Fn(usize) -> String,
) -> Result<(Vec<Vec<u32>>, usize)> {
    ensure!(max_len > 0, "max_len must be positive");
    let mut truncated = 0;
    let seqs = texts
        .enumerate()
        .map(|(i, text)| {
            let mut ids = tok.encode(text).with_context(|| at(i))?;
            if ids.len() > max_len {
                ids.truncate(max_len);
                truncated += 1;
            }
            Ok(ids)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((seqs, truncated))
}

/// One padded batch of sentence pairs. Every vector is row-major with exactly the lengths below
/// (it shrinks and grows within the capacity reserved by [`Seq2SeqBatch::new`]).
pub struct Seq2SeqBatch {
    /// Rows in this batch (the last batch of an epoch may be smaller than the batch size).
    pub b: usize,
    /// S: longest source in the batch (at least 1, so a batch of empty sources still has a column).
    pub src_len: usize,
    /// T: longest target in the batch plus one (for BOS / EOS).
    pub tgt_len: usize,
    /// Source tokens (B, S), padded with PAD.
    pub src: Vec<u32>,
    /// (B, S): true where `src` holds a real token. A row whose source line is empty has none.
    pub src_mask: Vec<bool>,
    /// Decoder input (B, T): BOS followed by the target, padded with PAD.
    pub tgt_in: Vec<u32>,
    /// Decoder targets (B, T): the target followed by EOS, -1 where padded (ignored by the loss).
    pub tgt_out: Vec<i32>,
    /// (B): corpus index (line number - 1) of each row.
    pub index: Vec<u32>,
}

impl Seq2SeqBatch {
    /// Reserves room for `max_b` rows of `max_src_len` source and `max_tgt_len` target tokens
    /// (targets counted without BOS/EOS).
    pub fn new(max_b: usize, max_src_len: usize, max_tgt_len: usize) -> Self {
        let (s, t) = (max_src_len.max(1), max_tgt_len + 1);
        Seq2SeqBatch {
            b: 0,
            src_len: 0,
            tgt_len: 0,
            src: Vec::with_capacity(max_b * s),
            src_mask: Vec::with_capacity(max_b * s),
            tgt_in: Vec::with_capacity(max_b * t),
            tgt_out: Vec::with_capacity(max_b * t),
            index: Vec::with_capacity(max_b),
        }
    }

    /// Fills the batch with the examples `rows` of `corpus`, in that order. Allocation-free while
    /// `rows` and the sequences fit the sizes given to [`Seq2SeqBatch::new`].
    pub fn fill(&mut self, corpus: &ParallelCorpus, rows: &[u32]) {
        self.fill_within(corpus, rows, rows)
    }

    /// Fills the batch with `rows`, padded to the lengths of the larger batch `all` they are
    /// part of: a data-parallel rank's share of a global batch, shaped like that batch so that
    /// its dropout masks are the global batch's.
    pub fn fill_within(&mut self, corpus: &ParallelCorpus, all: &[u32], rows: &[u32]) {
        let s = all.iter().map(|&i| corpus.src[i as usize].len()).max().unwrap_or(0).max(1);
        let t = all.iter().map(|&i| corpus.tgt[i as usize].len()).max().unwrap_or(0) + 1;
        let b = rows.len();
        (self.b, self.src_len, self.tgt_len) = (b, s, t);
        // clear + resize stays within the reserved capacity: no allocation.
        self.src.clear();
        self.src.resize(b * s, PAD);
        self.src_mask.clear();
        self.src_mask.resize(b * s, false);
        self.tgt_in.clear();
        self.tgt_in.resize(b * t, PAD);
        self.tgt_out.clear();
        self.tgt_out.resize(b * t, -1);
        self.index.clear();
        self.index.extend_from_slice(rows);
        for (r, &i) in rows.iter().enumerate() {
            let (src, tgt) = (&corpus.src[i as usize], &corpus.tgt[i as usize]);
            self.src[r * s..r * s + src.len()].copy_from_slice(src);
            self.src_mask[r * s..r * s + src.len()].fill(true);
            let tin = &mut self.tgt_in[r * t..r * t + tgt.len() + 1];
            tin[0] = BOS;
            tin[1..].copy_from_slice(tgt);
            let tout = &mut self.tgt_out[r * t..r * t + tgt.len() + 1];
            for (o, &x) in tout.iter_mut().zip(tgt) {
                *o = x as i32;
            }
            tout[tgt.len()] = EOS as i32;
        }
    }
}

/// Checks that every example of `corpus` fits the batch caps.
fn check_caps(corpus: &ParallelCorpus, max_src_len: usize, max_tgt_len: usize) -> Result<()> {
    let (s, t) = corpus.max_lens();
    ensure!(
        s <= max_src_len && t <= max_tgt_len,
        "the corpus has sources of up to {s} tokens and targets of up to {t}, more than the batch caps \
         max_src_len = {max_src_len}, max_tgt_len = {max_tgt_len}: load it with a smaller max_len"
    );
    Ok(())
}

/// Training batches of `batch_size` sentence pairs of similar source length.
///
/// Each epoch: every example gets a fresh random tie-break key, examples are sorted by
/// (source length, target length, key) and cut into consecutive batches of `batch_size` (the last
/// one smaller), and the order of those batches is shuffled. So batches hold sentences of nearly
/// equal length, their composition varies between epochs among equal lengths, and every example
/// is seen once per epoch. The sequence of batches depends only on the corpus and the seed.
pub struct Seq2SeqBatcher {
    batch_size: usize,
    /// Example indices in length order; batch `k` is `order[k*batch_size..][..batch_size]`.
    order: Vec<u32>,
    /// Per-epoch random tie-break key of each example.
    key: Vec<u64>,
    /// Batch numbers in this epoch's visiting order.
    batches: Vec<u32>,
    cursor: usize,
    epoch: usize,
    rng: Xoshiro256PlusPlus,
    /// `rng` as it was before this epoch's shuffle: with the epoch and the cursor, all a
    /// checkpoint needs to recreate the batcher ([`BatcherState`]).
    epoch_rng: Xoshiro256PlusPlus,
}

/// Where a [`Seq2SeqBatcher`] stands, for checkpoints. The epoch's order is not stored: it is
/// shuffled again from `epoch_rng`, which gives the same order (the shuffle depends only on the
/// RNG state and the corpus).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatcherState {
    pub epoch_rng: Xoshiro256PlusPlus,
    pub epoch: usize,
    /// Batches of this epoch already given.
    pub cursor: usize,
    /// The corpus size and batch size it was made for (checked on restore).
    pub examples: usize,
    pub batch_size: usize,
}

impl Seq2SeqBatcher {
    /// `max_src_len` / `max_tgt_len`: the most tokens a source / target (without BOS/EOS) may have;
    /// size the batch with the same caps, `Seq2SeqBatch::new(batch_size, max_src_len, max_tgt_len)`.
    pub fn new(
        corpus: &ParallelCorpus,
        batch_size: usize,
        max_src_len: usize,
        max_tgt_len: usize,
        seed: u64,
    ) -> Result<Self> {
        ensure!(batch_size > 0, "batch_size must be positive");
        ensure!(!corpus.is_empty(), "the parallel corpus is empty");
        ensure!(corpus.len() <= u32::MAX as usize, "the parallel corpus has too many examples");
        check_caps(corpus, max_src_len, max_tgt_len)?;
        let n = corpus.len();
        let mut batcher = Seq2SeqBatcher {
            batch_size,
            order: (0..n as u32).collect(),
            key: vec![0; n],
            batches: (0..n.div_ceil(batch_size) as u32).collect(),
            cursor: 0,
            epoch: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            epoch_rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        };
        batcher.shuffle(corpus);
        Ok(batcher)
    }

    /// The state to save with a checkpoint.
    pub fn state(&self) -> BatcherState {
        BatcherState {
            epoch_rng: self.epoch_rng.clone(),
            epoch: self.epoch,
            cursor: self.cursor,
            examples: self.order.len(),
            batch_size: self.batch_size,
        }
    }

    /// Continues from a saved state: the next batch is the one that followed when it was
    /// saved. `corpus` must be the one the state was saved with.
    pub fn restore(&mut self, corpus: &ParallelCorpus, state: &BatcherState) -> Result<()> {
        ensure!(
            state.examples == self.order.len() && state.batch_size == self.batch_size,
            "the batch order was saved for {} sentence pairs in batches of {}, but now there are {} in batches of {}: \
             the training data or train.batch_size changed",
            state.examples,
            state.batch_size,
            self.order.len(),
            self.batch_size
        );
        ensure!(state.cursor <= self.batches.len(), "the saved batch position {} is past the epoch", state.cursor);
        self.rng = state.epoch_rng.clone();
        self.shuffle(corpus);
        (self.epoch, self.cursor) = (state.epoch, state.cursor);
        Ok(())
    }

    fn shuffle(&mut self, corpus: &ParallelCorpus) {
        self.epoch_rng = self.rng.clone();
        for k in self.key.iter_mut() {
            *k = self.rng.gen();
        }
        let key = &self.key;
        // Unstable sort does not allocate; (lengths, key, index) never ties, so it is deterministic.
        self.order.sort_unstable_by_key(|&i| {
            let i = i as usize;
            (corpus.src[i].len(), corpus.tgt[i].len(), key[i], i)
        });
        self.batches.sort_unstable();
        self.batches.shuffle(&mut self.rng);
        self.cursor = 0;
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.batches.len()
    }

    /// Epochs completed (0 during the first).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Fills `out` with the next batch, starting a new epoch (new shuffle) after the last.
    /// `corpus` must be the one the batcher was built for.
    pub fn next_batch(&mut self, corpus: &ParallelCorpus, out: &mut Seq2SeqBatch) {
        self.next_batch_shard(corpus, out, 1, 0);
    }

    /// [`Seq2SeqBatcher::next_batch`] for shard `shard` of `shards` (a rank of a data-parallel
    /// job): the next batch is drawn as one process would draw it, and `out` receives rows
    /// `shard·n/shards .. (shard+1)·n/shards` of its n (see [`Seq2SeqBatch::fill_within`];
    /// empty when n < shards). Returns that range.
    pub fn next_batch_shard(
        &mut self,
        corpus: &ParallelCorpus,
        out: &mut Seq2SeqBatch,
        shards: usize,
        shard: usize,
    ) -> std::ops::Range<usize> {
        assert_eq!(corpus.len(), self.order.len(), "next_batch: not the corpus this batcher was built for");
        if self.cursor == self.batches.len() {
            self.epoch += 1;
            self.shuffle(corpus);
        }
        let k = self.batches[self.cursor] as usize;
        self.cursor += 1;
        let start = k * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let all = &self.order[start..end];
        let part = shard * all.len() / shards..(shard + 1) * all.len() / shards;
        out.fill_within(corpus, all, &all[part.clone()]);
        part
    }
}

/// Evaluation batches: every example exactly once, in a fixed order, then `next_batch` returns
/// false. With `by_length`, examples go in (source length, index) order so batches need little
/// padding; otherwise in corpus order. Either way [`Seq2SeqBatch::index`] gives each row's line,
/// which is how translations are put back into corpus order.
pub struct EvalBatcher {
    batch_size: usize,
    order: Vec<u32>,
    cursor: usize,
}

impl EvalBatcher {
    pub fn new(
        corpus: &ParallelCorpus,
        batch_size: usize,
        max_src_len: usize,
        max_tgt_len: usize,
        by_length: bool,
    ) -> Result<Self> {
        ensure!(batch_size > 0, "batch_size must be positive");
        ensure!(corpus.len() <= u32::MAX as usize, "the parallel corpus has too many examples");
        check_caps(corpus, max_src_len, max_tgt_len)?;
        let mut order: Vec<u32> = (0..corpus.len() as u32).collect();
        if by_length {
            order.sort_by_key(|&i| (corpus.src[i as usize].len(), i));
        }
        Ok(EvalBatcher { batch_size, order, cursor: 0 })
    }

    /// Fills `out` with the next batch; false (and `out` untouched) once every example was given.
    pub fn next_batch(&mut self, corpus: &ParallelCorpus, out: &mut Seq2SeqBatch) -> bool {
        assert_eq!(corpus.len(), self.order.len(), "next_batch: not the corpus this batcher was built for");
        if self.cursor == self.order.len() {
            return false;
        }
        let end = (self.cursor + self.batch_size).min(self.order.len());
        out.fill(corpus, &self.order[self.cursor..end]);
        self.cursor = end;
        true
    }

    /// Starts over from the first batch.
    pub fn reset(&mut self) {
        self.cursor = 0;
    }

    pub fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }
}
