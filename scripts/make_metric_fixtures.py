#!/usr/bin/env python3
"""Writes tests/fixtures/metrics/expected.json (and porter_words.tsv): the reference packages' numbers
for chrF / chrF++ (sacrebleu), ROUGE (rouge-score, NLTK's Porter stemmer) and the diversity metrics
(plain Python below) on the committed test corpus.

Input (committed): tests/fixtures/metrics/corpus.jsonl, UTF-8, one JSON object per line with the keys
"hyp", "ref1", "ref2" (strings; newlines inside them separate ROUGE-Lsum sentences). Read by splitting
on "\\n" only, as the Rust test does.

Output:
- chrF: for several CHRF configurations (the defaults, chrF++, and non-default options), corpus scores
  with 1 (ref1) and 2 (ref1, ref2) references and sentence scores per line, each with sacrebleu's
  statistics ([hyp, ref, match] per order, summed over the corpus), score and score line; chrF++'s word
  split of every text.
- ROUGE: rouge-score's tokens of every text (with and without stemmer); per line, RougeScorer(rouge1,
  rouge2, rougeL, rougeLsum).score(ref1, hyp) and .score_multi([ref1, ref2], hyp), with and without the
  stemmer, and the plain mean over lines of each (not BootstrapAggregator); every code point whose
  Python lower() holds a-z or 0-9 (what ROUGE tokens can come from).
- Diversity, for the hypotheses and for ref1 as two corpora: distinct-n, seq-rep-n (also per text) and
  Ent-n for n = 1..4, and self-BLEU (sacrebleu sentence BLEU of each text against all the others).
- porter_words.tsv: "word<TAB>NLTK stem" for every distinct lowercase word of Tiny Shakespeare (if
  found in $LMLAB_DATA or ../shared/data; otherwise the words already in the file are re-stemmed) plus
  words that exercise each rule of NLTK's variant, some in upper case or other scripts.
- If DialogSum's test set is found, the same metrics on real data: summary1 as hypothesis, summary2 and
  summary3 as references (whole set), and diversity of summary1 (self-BLEU on the first 100).

Usage: .venv/bin/python scripts/make_metric_fixtures.py   (from the repository root; needs sacrebleu,
rouge-score and nltk, as in scripts/requirements.txt)
"""
import importlib.metadata
import json
import math
import os
import re
import sys

import sacrebleu
from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer, tokenize
from sacrebleu.metrics.chrf import CHRF
from sacrebleu.utils import sum_of_lists

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "metrics")
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

# CHRF keyword arguments; "name" is the key in expected.json. Sentence-level scores are written for
# all of them.
CHRF_CONFIGS = [
    dict(name="chrf"),
    dict(name="chrf++", word_order=2),
    dict(name="lowercase++", word_order=2, lowercase=True),
    dict(name="whitespace", whitespace=True),
    dict(name="eps++", word_order=2, eps_smoothing=True),
    dict(name="beta1_c4_w1", beta=1, char_order=4, word_order=1),
    dict(name="beta3_w3", beta=3, word_order=3),
]


def read_corpus():
    with open(os.path.join(FIX, "corpus.jsonl"), encoding="utf-8", newline="") as f:
        text = f.read()
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text[:-1].split("\n")]
    return [r["hyp"] for r in rows], [r["ref1"] for r in rows], [r["ref2"] for r in rows]


def find_shared(rel):
    for d in [os.environ.get("LMLAB_DATA", ""), os.path.join(ROOT, "..", "shared", "data"), "../shared/data"]:
        p = os.path.join(d, rel)
        if d and os.path.isfile(p):
            return p
    return None


# ---------------------------------------------------------------- chrF


def chrf_entry(metric, hyps, refs):
    """Corpus statistics and score; `refs` are reference streams."""
    stats = sum_of_lists(metric._extract_corpus_statistics(hyps, refs))
    score = metric.corpus_score(hyps, refs)
    assert score.score == metric._compute_score_from_stats(stats).score
    return {"score": score.score, "stats": [int(x) for x in stats], "formatted": str(score)}


def chrf_fixtures(hyp, ref1, ref2):
    out = {}
    for cfg in CHRF_CONFIGS:
        kwargs = {k: v for k, v in cfg.items() if k != "name"}
        metric = CHRF(**kwargs)
        entry = {"config": kwargs,
                 "corpus_1ref": chrf_entry(metric, hyp, [ref1]),
                 "corpus_2ref": chrf_entry(metric, hyp, [ref1, ref2]),
                 "sentence_1ref": [], "sentence_2ref": []}
        for h, r1, r2 in zip(hyp, ref1, ref2):
            for key, refs in [("sentence_1ref", [r1]), ("sentence_2ref", [r1, r2])]:
                s = metric.sentence_score(h, refs)
                stats = metric._extract_corpus_statistics([h], [[r] for r in refs])[0]
                entry[key].append({"score": s.score, "stats": [int(x) for x in stats], "formatted": str(s)})
        out[cfg["name"]] = entry
    # The convenience functions are the same metric.
    assert sacrebleu.corpus_chrf(hyp, [ref1, ref2], word_order=2).score == out["chrf++"]["corpus_2ref"]["score"]
    words = CHRF(word_order=2)._remove_punctuation
    out["words"] = {name: [words(t) for t in texts] for name, texts in [("hyp", hyp), ("ref1", ref1), ("ref2", ref2)]}
    return out


# ---------------------------------------------------------------- ROUGE


def score_dict(scores):
    return {k: {"precision": v.precision, "recall": v.recall, "fmeasure": v.fmeasure} for k, v in scores.items()}


def plain_mean(per_pair):
    """Arithmetic mean over pairs, summed left to right."""
    mean = {}
    for k in ROUGE_TYPES:
        mean[k] = {f: sum(p[k][f] for p in per_pair) / len(per_pair) for f in ("precision", "recall", "fmeasure")}
    return mean


def rouge_fixtures(hyp, ref1, ref2):
    out = {"tokens": {}, "variants": {}}
    for stem in (False, True):
        stemmer = PorterStemmer() if stem else None
        key = "stem" if stem else "nostem"
        out["tokens"][key] = {name: [tokenize.tokenize(t, stemmer) for t in texts]
                              for name, texts in [("hyp", hyp), ("ref1", ref1), ("ref2", ref2)]}
        scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=stem)
        single = [score_dict(scorer.score(r1, h)) for h, r1 in zip(hyp, ref1)]
        multi = [score_dict(scorer.score_multi([r1, r2], h)) for h, r1, r2 in zip(hyp, ref1, ref2)]
        out["variants"][key] = {"single": single, "multi": multi,
                                "mean_single": plain_mean(single), "mean_multi": plain_mean(multi)}
    # Code points whose lowercase (Python's, with its Unicode tables) can put a-z or 0-9 into a
    # ROUGE token, with that lowercase.
    alnum = re.compile(r"[a-z0-9]")
    out["ascii_lowercase_sources"] = [[cp, chr(cp).lower()] for cp in range(0x110000)
                                      if not (0xD800 <= cp <= 0xDFFF) and alnum.search(chr(cp).lower())]
    return out


# ---------------------------------------------------------------- diversity


def ngrams(tokens, n):
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct(texts, n):
    grams = [g for t in texts for g in ngrams(t.split(), n)]
    return {"unique": len(set(grams)), "total": len(grams), "ratio": len(set(grams)) / len(grams) if grams else 0.0}


def rep_rate(text, n):
    """seq-rep-n: share of the text's n-grams equal to an earlier n-gram of the same text."""
    grams = ngrams(text.split(), n)
    if not grams:
        return None
    seen, repeated = set(), 0
    for g in grams:
        if g in seen:
            repeated += 1
        seen.add(g)
    return repeated / len(grams)


def repetition(texts, n):
    rates = [r for r in (rep_rate(t, n) for t in texts) if r is not None]
    grams = [ngrams(t.split(), n) for t in texts]
    return {"rate": sum(rates) / len(rates) if rates else 0.0, "texts": len(rates),
            "repeated": sum(len(g) - len(set(g)) for g in grams), "total": sum(len(g) for g in grams),
            "per_text": [rep_rate(t, n) for t in texts]}


def entropy(texts, n):
    counts = {}
    for t in texts:
        for g in ngrams(t.split(), n):
            counts[g] = counts.get(g, 0) + 1
    total = sum(counts.values())
    bits = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
    return {"bits": bits, "unique": len(counts), "total": total}


def self_bleu(texts):
    scores = [sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score for i, t in enumerate(texts)]
    return {"score": sum(scores) / len(scores), "scores": scores}


def diversity(texts, self_bleu_limit=None):
    return {
        "distinct": [distinct(texts, n) for n in range(1, 5)],
        "repetition": [repetition(texts, n) for n in range(1, 5)],
        "entropy": [entropy(texts, n) for n in range(1, 5)],
        "self_bleu": self_bleu(texts[:self_bleu_limit] if self_bleu_limit else texts),
    }


# ---------------------------------------------------------------- Porter stemmer

EXTRA_WORDS = """
sky skies dying lying tying news innings inning outings outing cannings canning howe proceed exceed succeed
caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled sized hopping
tanned falling hissing fizzed failing filing happy relational conditional rational valenci hesitanci
digitizer conformabli radicalli differentli vileli analogousli vietnamization predication operator feudalism
decisiveness hopefulness callousness formaliti sensitiviti sensibiliti triplicate formative formalize
electriciti electrical hopeful goodness revival allowance inference airliner gyroscopic adjustable defensible
irritant replacement adjustment dependent adoption homologou communism activate angulariti homologous
effective bowdlerize probate rate cease controll roll dies flies died spied tied cried enjoy spy fly try
yyyy yyyyy syzygy y by ay ya a i is on at generously geology theology archaeology philology hopefulli fully
mostly radically logically generalizations operationally connections connective
Caresses RUNNING Skies DYING ÉCOLE café naïve straße İstanbul ΣΊΣΥΦΟΣ Привет 123 4th 1990s abc123ing
eed ied ies sses ing ed ated bled yed oed aies xies ssed iing
""".split()


def porter_fixture():
    path = os.path.join(FIX, "porter_words.tsv")
    sh = find_shared("tinyshakespeare.txt")
    if sh:
        with open(sh, encoding="utf-8") as f:
            words = sorted(set(re.findall(r"[a-z]+", f.read().lower())))
        words += [w for w in EXTRA_WORDS if w not in set(words)]
    else:
        print("tinyshakespeare.txt not found: re-stemming the words of porter_words.tsv", file=sys.stderr)
        with open(path, encoding="utf-8") as f:
            words = [line.split("\t")[0] for line in f.read().splitlines()]
    stemmer = PorterStemmer()
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for w in words:
            f.write(f"{w}\t{stemmer.stem(w)}\n")
    return len(words)


# ---------------------------------------------------------------- DialogSum


def dialogsum_fixture():
    path = find_shared("dialogsum/dialogsum.test.jsonl")
    if not path:
        print("dialogsum not found: expected.json will not hold the DialogSum check", file=sys.stderr)
        return None
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    hyp = [r["summary1"] for r in rows]
    r2, r3 = [r["summary2"] for r in rows], [r["summary3"] for r in rows]
    out = {"lines": len(rows)}
    for name, kwargs in [("chrf", {}), ("chrf++", {"word_order": 2})]:
        out[name] = chrf_entry(CHRF(**kwargs), hyp, [r2, r3])
    for stem in (False, True):
        scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=stem)
        out["rouge_" + ("stem" if stem else "nostem")] = plain_mean(
            [score_dict(scorer.score_multi([a, b], h)) for h, a, b in zip(hyp, r2, r3)])
    out["diversity"] = diversity(hyp, self_bleu_limit=100)
    return out


def main():
    hyp, ref1, ref2 = read_corpus()
    out = {
        "versions": {p: importlib.metadata.version(p) for p in ("sacrebleu", "rouge-score", "nltk")},
        "chrf": chrf_fixtures(hyp, ref1, ref2),
        "rouge": rouge_fixtures(hyp, ref1, ref2),
        "diversity": {"hyp": diversity(hyp), "ref1": diversity(ref1)},
    }
    d = dialogsum_fixture()
    if d:
        out["dialogsum_test"] = d
    n_words = porter_fixture()
    with open(os.path.join(FIX, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"{len(hyp)} lines; {n_words} stemmer words")
    for name in ("chrf", "chrf++"):
        print(f"{name}: 1 ref {out['chrf'][name]['corpus_1ref']['formatted']}, "
              f"2 refs {out['chrf'][name]['corpus_2ref']['formatted']}")
    for key in ("nostem", "stem"):
        m = out["rouge"]["variants"][key]["mean_multi"]
        print(f"ROUGE ({key}, multi, mean F): " + " ".join(f"{k} {m[k]['fmeasure']:.4f}" for k in ROUGE_TYPES))
    if d:
        print(f"dialogsum: {d['chrf']['formatted']}, {d['chrf++']['formatted']}, "
              f"ROUGE-L (stem) {d['rouge_stem']['rougeL']['fmeasure']:.4f}")


if __name__ == "__main__":
    main()
