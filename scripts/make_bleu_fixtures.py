#!/usr/bin/env python3
"""Writes tests/fixtures/bleu/expected.json: sacrebleu's numbers for the committed BLEU test corpus.

Inputs (committed): tests/fixtures/bleu/{hyp,ref1,ref2}.txt, UTF-8, one segment per line, line-aligned.
Lines are split on "\\n" only, so characters that Python's splitlines() would also break on (U+2028,
U+0085, U+001C..U+001E) stay inside their line, as the Rust test reads them.

Output: the 13a tokenisation of every line (as sacrebleu applies it: rstrip, then Tokenizer13a),
corpus BLEU with 1 and 2 references (defaults, plus the other smoothing methods), and sentence BLEU
per line with 1 and 2 references (sacrebleu.sentence_bleu defaults). If the Multi30k test set is
found ($LMLAB_DATA or ../shared/data), also corpus BLEU of a deterministic perturbation of it (see
multi30k_hyps) against it.

Usage: .venv/bin/python scripts/make_bleu_fixtures.py   (from the repository root)
"""
import json
import logging
import os
import sys

import sacrebleu
from sacrebleu.metrics.bleu import BLEU

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "bleu")


def read_lines(name):
    with open(os.path.join(FIX, name), encoding="utf-8", newline="") as f:
        text = f.read()
    assert text.endswith("\n"), name
    return text[:-1].split("\n")


def stats(s):
    return {
        "score": s.score,
        "counts": [int(c) for c in s.counts],
        "totals": [int(t) for t in s.totals],
        "precisions": list(s.precisions),
        "bp": s.bp,
        "sys_len": int(s.sys_len),
        "ref_len": int(s.ref_len),
        "formatted": str(s),
    }


def multi30k_hyps(refs):
    """Even lines: the first two thirds of the reference's space-separated words (at least one);
    odd lines: the next line's reference (the last line wraps to the first)."""
    hyps = []
    for i, r in enumerate(refs):
        if i % 2 == 0:
            words = r.split(" ")
            hyps.append(" ".join(words[: max(1, len(words) * 2 // 3)]))
        else:
            hyps.append(refs[(i + 1) % len(refs)])
    return hyps


def find_multi30k():
    dirs = [os.environ.get("LMLAB_DATA", ""), os.path.join(ROOT, "..", "shared", "data"), "../shared/data"]
    for d in dirs:
        p = os.path.join(d, "multi30k", "test_2016_flickr.en")
        if d and os.path.isfile(p):
            return p
    return None


def main():
    # sacrebleu warns on sentence BLEU without effective order, which the variants compute on purpose.
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)
    hyp, ref1, ref2 = read_lines("hyp.txt"), read_lines("ref1.txt"), read_lines("ref2.txt")
    assert len(hyp) == len(ref1) == len(ref2), (len(hyp), len(ref1), len(ref2))
    tok = BLEU().tokenizer  # Tokenizer13a, sacrebleu's default
    out = {
        "sacrebleu_version": sacrebleu.__version__,
        "tokenized": {name: [tok(line.rstrip()) for line in lines]
                      for name, lines in [("hyp", hyp), ("ref1", ref1), ("ref2", ref2)]},
        "corpus_1ref": stats(sacrebleu.corpus_bleu(hyp, [ref1])),
        "corpus_2ref": stats(sacrebleu.corpus_bleu(hyp, [ref1, ref2])),
        "sentence_1ref": [stats(sacrebleu.sentence_bleu(h, [r])) for h, r in zip(hyp, ref1)],
        "sentence_2ref": [stats(sacrebleu.sentence_bleu(h, [r1, r2])) for h, r1, r2 in zip(hyp, ref1, ref2)],
    }
    variants = []
    for method, value in [("none", None), ("floor", None), ("floor", 0.5), ("add-k", None), ("add-k", 2), ("exp", None)]:
        for eff in [False, True]:
            for nrefs, refs in [(1, [ref1]), (2, [ref1, ref2])]:
                s = sacrebleu.corpus_bleu(hyp, refs, smooth_method=method, smooth_value=value,
                                          use_effective_order=eff)
                variants.append({"smooth_method": method, "smooth_value": value, "effective_order": eff,
                                 "refs": nrefs, "score": s.score, "precisions": list(s.precisions)})
            # Sentence level on every line: short lines and missing matches are where smoothing and
            # effective order matter.
            for i in range(len(hyp)):
                s = sacrebleu.sentence_bleu(hyp[i], [ref1[i]], smooth_method=method, smooth_value=value,
                                            use_effective_order=eff)
                variants.append({"smooth_method": method, "smooth_value": value, "effective_order": eff,
                                 "line": i, "score": s.score, "precisions": list(s.precisions)})
    out["smoothing_variants"] = variants

    m30k = find_multi30k()
    if m30k:
        with open(m30k, encoding="utf-8", newline="") as f:
            refs = f.read()[:-1].split("\n")
        out["multi30k_test_2016_flickr_en"] = stats(sacrebleu.corpus_bleu(multi30k_hyps(refs), [refs]))
    else:
        print("multi30k not found: expected.json will not hold the Multi30k check", file=sys.stderr)

    with open(os.path.join(FIX, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"corpus 1 ref: {out['corpus_1ref']['formatted']}")
    print(f"corpus 2 refs: {out['corpus_2ref']['formatted']}")
    if m30k:
        print(f"multi30k: {out['multi30k_test_2016_flickr_en']['formatted']}")


if __name__ == "__main__":
    main()
