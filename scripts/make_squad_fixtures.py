#!/usr/bin/env python3
"""Reference SQuAD scores for tests/squad.rs, from torchmetrics 1.9's SQuAD metric (a
transcription of the official evaluate-v1.1.py: the same normalisation, exact match, token F1
and max over references):

- `cases`: hand-made (prediction, references) pairs — case, punctuation, articles as words and
  inside words, whitespace of every kind, Unicode, repeated tokens, several references — with
  torchmetrics's normalised strings, exact match and F1 per pair. Where prediction and
  reference both normalise to nothing, torchmetrics (like SQuAD 2.0) gives F1 = 1 and v1.1
  gives 0; those pairs are flagged `both_empty` and the test expects v1.1's 0.
- `dev`: scores on ../shared/data/squad/dev-v1.1.json of predictions made from the file by a
  fixed recipe (below, and the same in the test), so that no data is copied into the repo: the
  totals and the per-question scores of the first 400 questions.

  .venv/bin/pip install torchmetrics
  .venv/bin/python scripts/make_squad_fixtures.py
"""
import json
import os

from torchmetrics.functional.text import squad
from torchmetrics.functional.text.squad import _compute_exact_match_score, _compute_f1_score, _normalize_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = [
    ("Denver Broncos", ["Denver Broncos"]),
    ("the Denver Broncos.", ["Denver Broncos"]),
    ("DENVER broncos!!", ["Denver Broncos", "Broncos"]),
    ("Broncos", ["Denver Broncos", "The Broncos"]),
    ("an apple a day", ["apple day"]),
    ("theater and anthem", ["theater anthem"]),
    ("a", ["the"]),
    ("", ["an answer"]),
    ("Santa Clara, California", ["Santa Clara, California", "Levi's Stadium"]),
    ("Levis Stadium", ["Levi's Stadium"]),
    ("10–15 years", ["10-15 years"]),
    ("Café  au\tlait\n", ["café au lait"]),
    ("ΣΟΦΟΣ", ["σοφος"]),
    ("the the the cat", ["the cat cat"]),
    ("cat cat dog", ["cat dog dog"]),
    ("New\u00a0York\u2003City", ["new york city"]),
    ("x\u001fy", ["x y"]),
    ("Über_the_top", ["über the top"]),
    ("(a) first; (b) second", ["first second"]),
    ("1,000,000", ["1000000"]),
    ("Saint-Éxupéry's book", ["saint éxupérys book"]),
    ("A.B.C.", ["abc"]),
    ("nothing in common", ["completely different words"]),
]


def recipe(i, qa):
    """The prediction for question i (file order)."""
    answers = [a["text"] for a in qa["answers"]]
    k = i % 6
    if k == 0:
        return answers[0]
    if k == 1:
        return answers[0].upper() + "."
    if k == 2:
        return "the " + answers[-1]
    if k == 3:
        return answers[0].split()[0] if answers[0].split() else ""
    if k == 4:
        return qa["question"]
    return answers[0] + " " + answers[0]


def main():
    cases = []
    for pred, refs in CASES:
        norm_p = _normalize_text(pred)
        cases.append(dict(
            prediction=pred, references=refs, normalized_prediction=norm_p,
            normalized_references=[_normalize_text(r) for r in refs],
            exact_match=max(float(_compute_exact_match_score(pred, r)) for r in refs),
            f1=max(float(_compute_f1_score(pred, r)) for r in refs),
            both_empty=any(not norm_p.split() and not _normalize_text(r).split() for r in refs),
        ))
    with open(os.path.join(ROOT, "..", "shared", "data", "squad", "dev-v1.1.json")) as f:
        dev = json.load(f)
    qas = [qa for art in dev["data"] for p in art["paragraphs"] for qa in p["qas"]]
    n = 400
    preds = {qa["id"]: recipe(i, qa) for i, qa in enumerate(qas[:n])}
    per = {}
    for qa in qas[:n]:
        refs = [a["text"] for a in qa["answers"]]
        per[qa["id"]] = dict(em=max(float(_compute_exact_match_score(preds[qa["id"]], r)) for r in refs),
                             f1=max(float(_compute_f1_score(preds[qa["id"]], r)) for r in refs))
    target = [dict(paragraphs=[dict(qas=[dict(id=qa["id"], answers=qa["answers"]) for qa in qas[:n]])])]
    total = squad([dict(prediction_text=v, id=k) for k, v in preds.items()],
                  [dict(answers=dict(text=[a["text"] for a in qa["answers"]],
                                     answer_start=[a["answer_start"] for a in qa["answers"]]), id=qa["id"])
                   for qa in qas[:n]])
    del target
    out = dict(torchmetrics="1.9.0", cases=cases,
               dev=dict(questions=n, exact_match=float(total["exact_match"]), f1=float(total["f1"]), per_question=per))
    path = os.path.join(ROOT, "tests", "fixtures", "squad", "reference.json")
    with open(path, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
    print("wrote", path, out["dev"]["exact_match"], out["dev"]["f1"])


if __name__ == "__main__":
    main()
