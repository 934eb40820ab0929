//! Parallel corpus loading and seq2seq batching: file errors, truncation, batch layout, length
//! grouping, determinism, epoch coverage, and no allocation after construction.

mod common;
use lmlab::data::bpe::{BpeTokenizer, BOS, EOS, PAD};
use lmlab::data::parallel::{EvalBatcher, ParallelCorpus, Seq2SeqBatch, Seq2SeqBatcher};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    /// Counts only this thread's allocations: batching is single-threaded, and the other tests of
    /// this binary allocate on their own threads at the same time.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn record() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        record();
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        record();
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const DE: [&str; 6] = [
    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    "Mehrere Männer mit Schutzhelmen bedienen ein Antriebsradsystem.",
    "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
    "Ein Mann in einem blauen Hemd steht auf einer Leiter und putzt die Fenster.",
    "Zwei Männer stehen am Herd und bereiten Essen zu.",
    "Ein Hund.",
];
const EN: [&str; 6] = [
    "Two young, White males are outside near many bushes.",
    "Several men in hard hats are operating a giant pulley system.",
    "A little girl climbing into a wooden playhouse.",
    "A man in a blue shirt is standing on a ladder cleaning windows.",
    "Two men are at the stove preparing food.",
    "A dog.",
];

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A small tokenizer and `n` sentence pairs built from the lines above (varied lengths).
fn setup(dir: &Path, n: usize) -> (BpeTokenizer, PathBuf, PathBuf) {
    let (mut de, mut en) = (String::new(), String::new());
    for i in 0..n {
        // Repeat a line 1..=4 times so lengths vary widely.
        let reps = 1 + (i * 7) % 4;
        de.push_str(&vec![DE[i % 6]; reps].join(" "));
        de.push('\n');
        en.push_str(&vec![EN[(i + 1) % 6]; 1 + (i * 5) % 3].join(" "));
        en.push('\n');
    }
    let src = write(dir, "src.de", de.as_bytes());
    let tgt = write(dir, "tgt.en", en.as_bytes());
    let tok = BpeTokenizer::train(&[src.clone(), tgt.clone()], 500).unwrap();
    (tok, src, tgt)
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, src, tgt) = setup(dir.path(), 12);
    let missing = dir.path().join("missing.en");
    let err = format!("{:#}", ParallelCorpus::load(&src, &missing, &tok, 64).err().unwrap());
    assert!(err.contains("missing.en"), "{err}");

    let bad = write(dir.path(), "bad.en", b"fine\nalso fine\nbroken \xff here\n");
    let three = write(dir.path(), "three.de", b"a\nb\nc\n");
    let err = format!("{:#}", ParallelCorpus::load(&three, &bad, &tok, 64).err().unwrap());
    assert!(err.contains("bad.en") && err.contains("line 3") && err.contains("UTF-8"), "{err}");

    let err = format!("{:#}", ParallelCorpus::load(&three, &tgt, &tok, 64).err().unwrap());
    assert!(err.contains("three.de has 3 lines") && err.contains("tgt.en has 12 lines"), "{err}");

    // CRLF endings and a missing final newline are accepted.
    let crlf = write(dir.path(), "crlf.en", b"one\r\ntwo\r\nthree");
    let c = ParallelCorpus::load(&three, &crlf, &tok, 64).unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(tok.decode(&c.tgt[1]).unwrap(), "two");
}

#[test]
fn truncation_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, src, tgt) = setup(dir.path(), 24);
    let full = ParallelCorpus::load(&src, &tgt, &tok, 10_000).unwrap();
    assert_eq!((full.truncated_src, full.truncated_tgt), (0, 0));
    let src_text = std::fs::read_to_string(&src).unwrap();
    for (ids, line) in full.src.iter().zip(src_text.lines()) {
        assert_eq!(ids, &tok.encode(line).unwrap());
    }
    let max_len = 20;
    let cut = ParallelCorpus::load(&src, &tgt, &tok, max_len).unwrap();
    let want_src = full.src.iter().filter(|s| s.len() > max_len).count();
    let want_tgt = full.tgt.iter().filter(|s| s.len() > max_len).count();
    assert!(want_src > 0 && want_tgt > 0 && want_src < 24);
    assert_eq!((cut.truncated_src, cut.truncated_tgt), (want_src, want_tgt));
    for (c, f) in cut.src.iter().zip(&full.src) {
        assert_eq!(c[..], f[..f.len().min(max_len)]);
    }
    assert_eq!(cut.max_lens(), (max_len, max_len));
}

/// Checks one batch row by row against the corpus.
fn check_batch(corpus: &ParallelCorpus, b: &Seq2SeqBatch) {
    let (s, t) = (b.src_len, b.tgt_len);
    assert_eq!(
        (b.src.len(), b.src_mask.len(), b.tgt_in.len(), b.tgt_out.len(), b.index.len()),
        (b.b * s, b.b * s, b.b * t, b.b * t, b.b)
    );
    let rows: Vec<usize> = b.index.iter().map(|&i| i as usize).collect();
    assert_eq!(s, rows.iter().map(|&i| corpus.src[i].len()).max().unwrap().max(1), "S is the longest source");
    assert_eq!(t, rows.iter().map(|&i| corpus.tgt[i].len()).max().unwrap() + 1, "T is the longest target + 1");
    for (r, &i) in rows.iter().enumerate() {
        let (src, tgt) = (&corpus.src[i], &corpus.tgt[i]);
        let row = &b.src[r * s..(r + 1) * s];
        assert_eq!(&row[..src.len()], &src[..]);
        assert!(row[src.len()..].iter().all(|&x| x == PAD));
        let mask = &b.src_mask[r * s..(r + 1) * s];
        assert!(mask.iter().enumerate().all(|(j, &m)| m == (j < src.len())));
        let tin = &b.tgt_in[r * t..(r + 1) * t];
        let tout = &b.tgt_out[r * t..(r + 1) * t];
        assert_eq!(tin[0], BOS);
        assert_eq!(&tin[1..=tgt.len()], &tgt[..]);
        assert!(tin[tgt.len() + 1..].iter().all(|&x| x == PAD));
        for j in 0..tgt.len() {
            assert_eq!(tout[j], tgt[j] as i32);
            // Teacher forcing: the input at j+1 is the target at j.
            assert_eq!(tin[j + 1] as i32, tout[j]);
        }
        assert_eq!(tout[tgt.len()], EOS as i32);
        assert!(tout[tgt.len() + 1..].iter().all(|&x| x == -1));
    }
}

/// Padding positions / all positions of the source and target tensors.
fn padding_fraction(b: &Seq2SeqBatch) -> (usize, usize) {
    let pad = b.src_mask.iter().filter(|&&m| !m).count() + b.tgt_out.iter().filter(|&&x| x == -1).count();
    (pad, b.src.len() + b.tgt_out.len())
}

#[test]
fn training_batches_cover_each_epoch_and_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, src, tgt) = setup(dir.path(), 103);
    let corpus = ParallelCorpus::load(&src, &tgt, &tok, 256).unwrap();
    let (ms, mt) = corpus.max_lens();
    let bs = 8;
    let mut batch = Seq2SeqBatch::new(bs, ms, mt);
    let epoch_of = |seed: u64, epochs: usize| -> Vec<Vec<Vec<u32>>> {
        let mut batcher = Seq2SeqBatcher::new(&corpus, bs, ms, mt, seed).unwrap();
        assert_eq!(batcher.batches_per_epoch(), 13);
        let mut b = Seq2SeqBatch::new(bs, ms, mt);
        (0..epochs)
            .map(|_| {
                (0..batcher.batches_per_epoch())
                    .map(|_| {
                        batcher.next_batch(&corpus, &mut b);
                        b.index.clone()
                    })
                    .collect()
            })
            .collect()
    };
    let run = epoch_of(7, 3);
    for epoch in &run {
        let mut seen: Vec<u32> = epoch.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<u32>>(), "every example exactly once per epoch");
        assert_eq!(epoch.iter().filter(|b| b.len() < bs).count(), 1, "one short batch (103 = 12*8 + 7)");
    }
    assert_ne!(run[0], run[1], "epochs are reshuffled");
    assert_eq!(run, epoch_of(7, 3), "same seed, same batches");
    assert_ne!(run[0], epoch_of(8, 1)[0], "another seed, other batches");

    // Batch layout, and length grouping: far less padding than batches of random examples.
    let mut batcher = Seq2SeqBatcher::new(&corpus, bs, ms, mt, 1).unwrap();
    let (mut pad, mut all) = (0, 0);
    for _ in 0..batcher.batches_per_epoch() {
        batcher.next_batch(&corpus, &mut batch);
        check_batch(&corpus, &batch);
        // Sorted by source length: sources in a batch differ by little.
        let lens: Vec<usize> = batch.index.iter().map(|&i| corpus.src[i as usize].len()).collect();
        assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 20, "{lens:?}");
        let (p, a) = padding_fraction(&batch);
        (pad, all) = (pad + p, all + a);
    }
    let mut eval = EvalBatcher::new(&corpus, bs, ms, mt, false).unwrap();
    let (mut pad_seq, mut all_seq) = (0, 0);
    while eval.next_batch(&corpus, &mut batch) {
        let (p, a) = padding_fraction(&batch);
        (pad_seq, all_seq) = (pad_seq + p, all_seq + a);
    }
    let (grouped, sequential) = (pad as f64 / all as f64, pad_seq as f64 / all_seq as f64);
    println!("padding: {grouped:.3} length-grouped, {sequential:.3} in corpus order");
    assert!(grouped < 0.5 * sequential, "{grouped} vs {sequential}");

    // Caps smaller than the corpus are an error, not silent truncation.
    let err = Seq2SeqBatcher::new(&corpus, bs, ms - 1, mt, 1).err().unwrap().to_string();
    assert!(err.contains("max_src_len"), "{err}");
    assert!(EvalBatcher::new(&corpus, bs, ms, mt - 1, true).is_err());
}

#[test]
fn eval_batches_keep_a_fixed_order() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, src, tgt) = setup(dir.path(), 21);
    let corpus = ParallelCorpus::load(&src, &tgt, &tok, 256).unwrap();
    let (ms, mt) = corpus.max_lens();
    let mut batch = Seq2SeqBatch::new(4, ms, mt);
    for by_length in [false, true] {
        let mut eval = EvalBatcher::new(&corpus, 4, ms, mt, by_length).unwrap();
        assert_eq!(eval.num_batches(), 6);
        for pass in 0..2 {
            let mut seen = Vec::new();
            while eval.next_batch(&corpus, &mut batch) {
                check_batch(&corpus, &batch);
                seen.extend_from_slice(&batch.index);
            }
            assert!(!eval.next_batch(&corpus, &mut batch), "stays exhausted");
            if by_length {
                let lens: Vec<usize> = seen.iter().map(|&i| corpus.src[i as usize].len()).collect();
                assert!(lens.windows(2).all(|w| w[0] <= w[1]), "{lens:?}");
                let mut sorted = seen.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..21).collect::<Vec<u32>>());
                assert_ne!(seen, sorted, "length order differs from corpus order here");
            } else {
                assert_eq!(seen, (0..21).collect::<Vec<u32>>(), "pass {pass}");
            }
            eval.reset();
        }
    }
}

#[test]
fn empty_lines_stay_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, _, _) = setup(dir.path(), 12);
    let src = write(dir.path(), "e.de", "Ein Hund.\n\nZwei Männer.\n".as_bytes());
    let tgt = write(dir.path(), "e.en", "A dog.\nNothing on the left.\n\n".as_bytes());
    let corpus = ParallelCorpus::load(&src, &tgt, &tok, 64).unwrap();
    assert_eq!(corpus.len(), 3);
    assert!(corpus.src[1].is_empty() && corpus.tgt[2].is_empty());
    let (ms, mt) = corpus.max_lens();
    let mut batch = Seq2SeqBatch::new(3, ms, mt);
    let mut eval = EvalBatcher::new(&corpus, 3, ms, mt, false).unwrap();
    assert!(eval.next_batch(&corpus, &mut batch));
    check_batch(&corpus, &batch);
    let s = batch.src_len;
    assert!(batch.src_mask[s..2 * s].iter().all(|&m| !m), "the empty source has no real token");
    // An empty target still has its EOS to predict.
    assert_eq!(batch.tgt_out[2 * batch.tgt_len], EOS as i32);

    // A batch of only empty sources keeps one (padding) column.
    let only_empty = ParallelCorpus { src: vec![vec![]], tgt: vec![vec![5]], truncated_src: 0, truncated_tgt: 0 };
    let mut b = Seq2SeqBatch::new(1, 0, 1);
    EvalBatcher::new(&only_empty, 1, 0, 1, false).unwrap().next_batch(&only_empty, &mut b);
    assert_eq!((b.src_len, b.src.clone(), b.src_mask.clone()), (1, vec![PAD], vec![false]));
}

#[test]
fn batching_allocates_nothing_after_construction() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, src, tgt) = setup(dir.path(), 50);
    let corpus = ParallelCorpus::load(&src, &tgt, &tok, 256).unwrap();
    let (ms, mt) = corpus.max_lens();
    let mut batch = Seq2SeqBatch::new(6, ms, mt);
    let mut train = Seq2SeqBatcher::new(&corpus, 6, ms, mt, 3).unwrap();
    let mut eval = EvalBatcher::new(&corpus, 6, ms, mt, true).unwrap();
    ALLOCS.store(0, Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    // Three epochs, so reshuffling is included.
    for _ in 0..3 * train.batches_per_epoch() {
        train.next_batch(&corpus, &mut batch);
    }
    while eval.next_batch(&corpus, &mut batch) {}
    COUNTING.with(|c| c.set(false));
    assert_eq!(train.epoch(), 2);
    assert_eq!(ALLOCS.load(Ordering::Relaxed), 0, "allocations while batching");
}

/// Multi30k end to end: joint BPE, the training corpus, and how little padding length grouping leaves.
#[test]
fn multi30k_corpus_and_batches() {
    let files: Vec<Option<PathBuf>> = ["train.de", "train.en", "val.de", "val.en"]
        .iter()
        .map(|f| common::shared_data(&format!("multi30k/{f}")))
        .collect();
    let [Some(tde), Some(ten), Some(vde), Some(ven)] = &files[..] else { return };
    let tok = BpeTokenizer::train(&[tde.clone(), ten.clone()], 8000).unwrap();
    let train = ParallelCorpus::load(tde, ten, &tok, 64).unwrap();
    let val = ParallelCorpus::load(vde, ven, &tok, 64).unwrap();
    assert_eq!((train.len(), val.len()), (29000, 1014));
    let (ms, mt) = train.max_lens();
    println!(
        "train: longest source {ms}, target {mt} tokens; truncated at 64: {} sources, {} targets",
        train.truncated_src, train.truncated_tgt
    );
    let mut batch = Seq2SeqBatch::new(128, 64, 64);
    let mut batcher = Seq2SeqBatcher::new(&train, 128, 64, 64, 0).unwrap();
    let (mut pad, mut all) = (0, 0);
    for _ in 0..batcher.batches_per_epoch() {
        batcher.next_batch(&train, &mut batch);
        let (p, a) = padding_fraction(&batch);
        (pad, all) = (pad + p, all + a);
    }
    let grouped = pad as f64 / all as f64;
    println!(
        "{} batches of 128; padding {:.1}% of source+target positions",
        batcher.batches_per_epoch(),
        100.0 * grouped
    );
    assert!(grouped < 0.25, "{grouped}");
    let mut eval = EvalBatcher::new(&val, 100, 64, 64, true).unwrap();
    let mut n = 0;
    while eval.next_batch(&val, &mut batch) {
        check_batch(&val, &batch);
        n += batch.b;
    }
    assert_eq!(n, 1014);
}

/// A joint German+English vocabulary on Multi30k; the first 1000 lines of each training file
/// must decode back exactly.
#[test]
fn bpe_multi30k_round_trip() {
    let (Some(de), Some(en)) = (common::shared_data("multi30k/train.de"), common::shared_data("multi30k/train.en"))
    else {
        return;
    };
    let t0 = std::time::Instant::now();
    let tok = BpeTokenizer::train(&[de.clone(), en.clone()], 8000).unwrap();
    println!("trained vocab {} in {:.1?}", tok.vocab_size(), t0.elapsed());
    assert_eq!(tok.vocab_size(), 8000);
    for path in [de, en] {
        let text = std::fs::read_to_string(&path).unwrap();
        let (mut exact, mut tokens, mut chars) = (0, 0, 0);
        let mut failures = Vec::new();
        for line in text.lines().take(1000) {
            let ids = tok.encode(line).unwrap();
            assert!(ids.iter().all(|&i| i > lmlab::data::bpe::UNK));
            tokens += ids.len();
            chars += line.chars().count();
            if tok.decode(&ids).unwrap() == line {
                exact += 1;
            } else {
                failures.push(line.to_owned());
            }
        }
        println!(
            "{}: {exact}/1000 lines round-trip exactly; {:.2} chars/token",
            path.display(),
            chars as f64 / tokens as f64
        );
        assert_eq!(exact, 1000, "lines that do not round-trip: {failures:?}");
    }
}
