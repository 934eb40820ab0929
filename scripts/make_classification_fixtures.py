"""Expected classification metrics from scikit-learn for tests/eval_classification.rs.

Writes tests/fixtures/metrics/classification.json: for each case the gold and predicted labels
(as strings; numeric cases are passed to sklearn as ints), the zero_division setting, optional
explicit labels, and sklearn's classification_report (dict and text, digits=2 and 4) and
confusion matrix.

    .venv/bin/python scripts/make_classification_fixtures.py
"""
import json
import random
import warnings
from pathlib import Path

import sklearn
from sklearn.metrics import classification_report, confusion_matrix

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/metrics/classification.json"


def case(name, y_true, y_pred, zero_division="warn", labels=None, numeric=False):
    conv = (lambda v: [int(x) for x in v]) if numeric else (lambda v: list(v))
    yt, yp = conv(y_true), conv(y_pred)
    lab = conv(labels) if labels is not None else None
    zd = {"warn": "warn", "0": 0, "1": 1, "nan": float("nan")}[zero_division]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = classification_report(yt, yp, labels=lab, zero_division=zd, output_dict=True)
        text2 = classification_report(yt, yp, labels=lab, zero_division=zd, digits=2)
        text4 = classification_report(yt, yp, labels=lab, zero_division=zd, digits=4)
        cm = confusion_matrix(yt, yp, labels=lab).tolist()

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, float) and v != v:
            return None
        return v

    return {
        "name": name,
        "y_true": [str(x) for x in y_true],
        "y_pred": [str(x) for x in y_pred],
        "zero_division": zero_division,
        "labels": [str(x) for x in labels] if labels is not None else None,
        "report": clean(d),
        "text2": text2,
        "text4": text4,
        "confusion": cm,
    }


def main():
    rng = random.Random(7)
    cases = []
    cases.append(case("three classes", list("aabbbcccca"), list("abbbcccaaa")))
    # "d" occurs in the gold labels but is never predicted; "e" is predicted but never gold.
    cases.append(case("never predicted / never gold", ["d", "a", "b", "d", "a"], ["a", "a", "b", "b", "e"]))
    for zd in ["0", "1", "nan"]:
        cases.append(
            case(f"zero_division {zd}", ["d", "a", "b", "d", "a"], ["a", "a", "b", "b", "e"], zero_division=zd)
        )
    cases.append(case("single class", ["x"] * 6, ["x"] * 6))
    cases.append(case("binary", [0, 1, 1, 0, 1, 1, 0], [0, 1, 0, 0, 1, 1, 1], numeric=True))
    cases.append(case("numeric labels sort numerically", [10, 2, 1, 10, 2], [2, 2, 1, 10, 10], numeric=True))
    cases.append(case("unicode labels", ["négatif", "positif", "中立", "😀", "positif"], ["positif", "positif", "中立", "négatif", "😀"]))
    # Explicit labels including one that never occurs: its precision, recall and F1 are 0/0.
    for zd in ["warn", "1", "nan"]:
        cases.append(case(f"explicit labels, absent class, zero_division {zd}", list("abab"), list("abba"),
                          zero_division=zd, labels=["b", "a", "z"]))
    # All predictions wrong.
    cases.append(case("all wrong", list("aaabbb"), list("bbbaaa")))
    labels = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    yt = [rng.choice(labels) for _ in range(500)]
    yp = [t if rng.random() < 0.7 else rng.choice(labels[:5]) for t in yt]
    cases.append(case("500 items, 6 classes, one never predicted", yt, yp))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"sklearn": sklearn.__version__, "cases": cases}, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
