#!/usr/bin/env python3
"""A trivial extractive-QA baseline for scale (docs/APPLICATIONS.md): for every question, the
sentence of its context that shares the most words with the question (lower-cased words, a
small stop-word list removed; ties: the earlier sentence) is the predicted answer. Writes the
official predictions JSON {id: answer}, to be scored with `lmlab eval squad`.

  python3 scripts/qa_baseline.py ../shared/data/squad/dev-v1.1.json --articles 40..48 --out preds.json
"""
import argparse
import json
import re

STOP = set("a an the of in on at to for by with from and or is was were are be been what which who whom whose "
           "when where why how did do does that this these those it its as into than then there their".split())


def words(s):
    return {w for w in re.findall(r"\w+", s.lower()) if w not in STOP}


def sentences(context):
    # Split after ., ! or ? followed by whitespace; keep the sentence text as in the context.
    return [s for s in re.split(r"(?<=[.!?])\s+", context) if s.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--articles", help="A..B (B excluded) article indices in file order")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    data = json.load(open(a.data))["data"]
    lo, hi = 0, len(data)
    if a.articles:
        s, e = a.articles.split("..")
        lo, hi = int(s or 0), int(e or len(data))
    preds = {}
    for article in data[lo:hi]:
        for p in article["paragraphs"]:
            sents = sentences(p["context"])
            for q in p["qas"]:
                qw = words(q["question"])
                preds[q["id"]] = max(sents, key=lambda s: (len(qw & words(s)), -sents.index(s)))
    json.dump(preds, open(a.out, "w"), indent=1)
    print("wrote", len(preds), "predictions to", a.out)


if __name__ == "__main__":
    main()
