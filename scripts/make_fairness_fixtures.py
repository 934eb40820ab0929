#!/usr/bin/env python3
"""Fixtures for tests/fairness.rs, each computed by the reference implementation.

How:  /work/venv/bin/python scripts/make_fairness_fixtures.py groups
Needs: numpy, scikit-learn, fairlearn (pip install fairlearn; written against fairlearn 0.15).

groups → tests/fixtures/fairness/groups.json: several cases of (gold, pred, group) with a
positive label, and what fairlearn computes on them: MetricFrame by group of selection_rate,
true_positive_rate, false_positive_rate (fairlearn.metrics), accuracy_score and
precision/recall/f1 of the positive class and macro-averaged over every label
(sklearn.metrics, zero_division=0); demographic_parity_difference / _ratio and
equalized_odds_difference (method="between_groups", agg="worst_case"). A multiclass case is
binarized (label == positive) for fairlearn's rates, which accept only two classes. Seeded.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "fairness"


def num(x):
    x = float(x)
    return None if math.isnan(x) else x


def groups_case(name, gold, pred, groups, positive):
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    gold, pred, groups = np.array(gold), np.array(pred), np.array(groups)
    labels = sorted(set(gold) | set(pred))
    yb, pb = (gold == positive).astype(int), (pred == positive).astype(int)

    def pos(fn):
        return lambda y, p: fn(y, p, labels=labels, pos_label=positive, average="binary", zero_division=0) \
            if len(labels) == 2 else fn(y, p, labels=[positive], average="macro", zero_division=0)

    def macro(fn):
        return lambda y, p: fn(y, p, labels=labels, average="macro", zero_division=0)

    frame = MetricFrame(
        metrics={
            "accuracy": accuracy_score,
            "precision": pos(precision_score),
            "recall": pos(recall_score),
            "f1": pos(f1_score),
            "macro_precision": macro(precision_score),
            "macro_recall": macro(recall_score),
            "macro_f1": macro(f1_score),
        },
        y_true=gold,
        y_pred=pred,
        sensitive_features=groups,
    )
    rates = MetricFrame(
        metrics={"selection_rate": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate},
        y_true=yb,
        y_pred=pb,
        sensitive_features=groups,
    )

    def row(values_a, values_b):
        d = {k: num(v) for k, v in values_a.items()}
        d.update({k: num(v) for k, v in values_b.items()})
        return d

    per_group = {str(g): row(frame.by_group.loc[g], rates.by_group.loc[g]) for g in frame.by_group.index}
    overall = row(frame.overall, rates.overall)
    kw = dict(y_true=yb, y_pred=pb, sensitive_features=groups)
    return {
        "name": name,
        "gold": gold.tolist(),
        "pred": pred.tolist(),
        "groups": groups.tolist(),
        "positive": positive,
        "expected": {
            "groups": per_group,
            "overall": overall,
            "demographic_parity_difference": num(demographic_parity_difference(**kw)),
            "demographic_parity_ratio": num(demographic_parity_ratio(**kw)),
            "equalized_odds_difference": num(equalized_odds_difference(**kw)),
        },
    }


def make_groups():
    rng = np.random.default_rng(18)
    cases = []
    # Binary 0/1, two groups, a classifier that favours group "a".
    n = 60
    g = rng.choice(["a", "b"], n)
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < np.where(g == "a", 0.8, 0.6), y, 1 - y)
    cases.append(groups_case("binary_two_groups", [str(v) for v in y], [str(v) for v in p], g.tolist(), "1"))
    # Multiclass (TREC's coarse labels), positive HUM, three groups of different sizes.
    labels = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    n = 90
    g = rng.choice(["short", "medium", "long"], n, p=[0.5, 0.3, 0.2])
    y = rng.choice(labels, n)
    p = np.where(rng.random(n) < 0.7, y, rng.choice(labels, n))
    cases.append(groups_case("multiclass_positive_hum", y.tolist(), p.tolist(), g.tolist(), "HUM"))
    # A group with no gold positives, one with no predicted positives, four groups.
    gold = ["yes", "no", "yes", "no", "no", "no", "no", "yes", "yes", "no", "yes", "no", "no", "yes"]
    pred = ["yes", "yes", "no", "no", "yes", "no", "no", "no", "no", "no", "yes", "yes", "yes", "yes"]
    grp = ["g1", "g1", "g1", "g1", "g2", "g2", "g2", "g3", "g3", "g3", "g4", "g4", "g4", "g4"]
    cases.append(groups_case("no_positives_in_a_group", gold, pred, grp, "yes"))
    # Five groups including one of size 1, numeric group names.
    n = 45
    g = rng.choice(["1", "2", "3", "10"], n)
    g[7] = "25"
    y = rng.integers(0, 2, n)
    p = rng.integers(0, 2, n)
    cases.append(groups_case("five_groups_numeric_names", [str(v) for v in y], [str(v) for v in p], g.tolist(), "1"))
    # No positive prediction at all: the demographic parity ratio is 0/0.
    cases.append(groups_case("nothing_selected", ["1", "0", "1", "0"], ["0", "0", "0", "0"], ["x", "x", "y", "y"], "1"))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "groups.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")
    print(f"wrote {OUT / 'groups.json'} ({len(cases)} cases)")


if __name__ == "__main__":
    what = sys.argv[1:] or ["groups"]
    for w in what:
        {"groups": make_groups}[w]()
