#!/usr/bin/env python3
"""Writes tests/fixtures/ngram/kneser_ney.json: NLTK's interpolated Kneser-Ney character model
(nltk.lm.KneserNeyInterpolated, nltk 3.10.4) fitted on a short text, for tests/ngram.rs.

For orders 2-5 and discounts 0.1 and 0.75: P(w | context) for every (context, w) pair of a set
of queries (seen and unseen contexts, seen and unseen continuations), and the mean negative log
probability of a held-out string. The text is one sequence of characters without padding
(everygrams up to the order), as lmlab's model counts it. Queries whose context occurs only at
the very start of the text make NLTK divide by zero; they are left out (lmlab backs off there).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install nltk==3.10.4
    /tmp/v/bin/python scripts/make_ngram_fixture.py
"""
import json
import math
import os

from nltk.lm import KneserNeyInterpolated
from nltk.util import everygrams

TRAIN = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on a mat; "
    "then the cat ran, and the dog ran after the cat until the mat was far behind them."
)
HELD_OUT = "the dog and the cat sat on a log."


def main():
    chars = list(TRAIN)
    out = {"train": TRAIN, "held_out": HELD_OUT, "models": []}
    for order in (2, 3, 4, 5):
        for discount in (0.1, 0.75):
            lm = KneserNeyInterpolated(order, discount=discount)
            lm.fit([list(everygrams(chars, max_len=order))], vocabulary_text=chars)
            queries = []
            for i in range(len(HELD_OUT)):
                for ctx_len in range(0, order):
                    if i - ctx_len < 0:
                        continue
                    ctx = HELD_OUT[i - ctx_len:i]
                    try:
                        p = lm.score(HELD_OUT[i], list(ctx))
                    except ZeroDivisionError:
                        continue
                    queries.append({"context": ctx, "word": HELD_OUT[i], "prob": p})
            for ctx, w in (("zz", "t"), ("the", "q"), ("t", "h"), ("", "e"), ("mat", "."), (" ", "z")):
                try:
                    queries.append({"context": ctx, "word": w, "prob": lm.score(w, list(ctx[-(order - 1):] if ctx else []))})
                except ZeroDivisionError:
                    pass
            nll = [-math.log(lm.score(HELD_OUT[i], list(HELD_OUT[i - order + 1:i]))) for i in range(order - 1, len(HELD_OUT))]
            out["models"].append({
                "order": order,
                "discount": discount,
                "queries": queries,
                "cross_entropy": sum(nll) / len(nll),
            })
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "ngram", "kneser_ney.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path, sum(len(m["queries"]) for m in out["models"]), "queries")


if __name__ == "__main__":
    main()
