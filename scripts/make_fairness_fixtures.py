#!/usr/bin/env python3
"""Fixtures for tests/fairness.rs, each computed by the reference implementation.

How:  .venv/bin/python scripts/make_fairness_fixtures.py [groups] [crows] [crows_mlm] [weat]
                                    [--lmlab target/release/lmlab] [--data DIR]
Needs: numpy; groups: scikit-learn, fairlearn (written against fairlearn 0.15); crows: torch,
transformers, the lmlab binary and the shared data's CrowS-Pairs CSV; weat: the lmlab binary
and all-MiniLM-L6-v2 (scripts/fetch_minilm.sh).

groups → tests/fixtures/fairness/groups.json: several cases of (gold, pred, group) with a
positive label, and what fairlearn computes on them: MetricFrame by group of selection_rate,
true_positive_rate, false_positive_rate (fairlearn.metrics), accuracy_score and
precision/recall/f1 of the positive class and macro-averaged over every label
(sklearn.metrics, zero_division=0); demographic_parity_difference / _ratio and
equalized_odds_difference (method="between_groups", agg="worst_case"). A multiclass case is
binarized (label == positive) for fairlearn's rates, which accept only two classes. Seeded.

crows → tests/fixtures/fairness/gpt2_crows/ (a small GPT2LMHeadModel with random weights,
N(0, 0.3) and norm gains 1 + N(0, 0.1), n_positions 256 so every CrowS-Pairs sentence fits,
with the byte-level BPE tokenizer of tests/fixtures/hf_gpt2/tied: vocabulary 280,
<|endoftext|> = 0 is BOS and EOS) and crows_pairs.json. The directory is imported with
`lmlab import --hf`, that checkpoint exported again with `lmlab export --hf`, and the export is
what transformers scores: the first 30 pairs of crows_pairs_anonymized.csv, each sentence
encoded without special tokens and scored given <|endoftext|> (lm-evaluation-harness's
empty-context convention: context [BOS], continuation the sentence's ids; if the ids already
start with BOS it is the context), summed log-softmax in float64.

crows_mlm → tests/fixtures/fairness/bert_crows/ (a small BertForMaskedLM with random weights,
N(0, 0.3) and norm gains 1 + N(0, 0.1), 2 layers of 16, max_position_embeddings 128, and a
lowercasing WordPiece vocabulary of every character and every word of the 60 sentences of the
first 30 pairs) and
crows_pairs_mlm.json: what Nangia et al.'s metric.py (nyu-mll/crows-pairs, `mask_unigram`,
re-implemented here line for line on transformers) scores on those pairs, in float64: each
sentence encoded with [CLS] and [SEP], the shared tokens from difflib.SequenceMatcher's equal
blocks over the id lists, each shared token but the first and last masked in turn and its
log-softmax summed. Also the masked-LM loss of two masked sequences (labels -100 elsewhere) and
the gradients of five tensors, for the head's forward and backward.

weat → tests/fixtures/fairness/weat.json: the embeddings `lmlab embed` gives for every word
and SEAT sentence of the standard tests (lmlab eval fairness's own lists, read from
src/eval/fairness/weat_tests.json; the templates are rebuilt here), and what NumPy computes
from them in float64: s(w, A, B), effect size (ddof = 1), test statistic and, where the
partitions number at most 100000, the exact one-sided p-value (a partition counts when its
statistic exceeds the observed by more than 1e-10).
"""

import argparse
import csv
import hashlib
import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "fairness"
CROWS_PAIRS = 30


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


TIE_TOLERANCE = 1e-10
EXACT_UP_TO = 100_000


def seat_sentences(word):
    """SEAT's bleached templates, as src/eval/fairness/weat.rs builds them."""
    if word[:1].isupper():
        return [t.format(word) for t in ["This is {}.", "That is {}.", "There is {}.", "Here is {}.",
                                         "{} is here.", "{} is there."]]
    art = "an" if word[:1] in "aeiou" else "a"
    return [f"This is {art} {word}.", f"That is {art} {word}.", f"There is {art} {word}.",
            f"Here is {art} {word}.", f"The {word} is here.", f"The {word} is there."]


def embed(lmlab, texts):
    """`lmlab embed` of `texts` (one call per set, batch 8, as `lmlab eval fairness weat` runs)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(texts) + "\n")
    out = subprocess.run([lmlab, "embed", "--input", f.name, "--batch", "8"], check=True,
                         capture_output=True, text=True).stdout
    Path(f.name).unlink()
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    rows = [r["embedding"] if isinstance(r, dict) else r for r in rows]
    assert len(rows) == len(texts), (len(rows), len(texts))
    return np.array(rows, dtype=np.float32).astype(np.float64)


def weat_numpy(X, Y, A, B):
    unit = lambda M: M / np.linalg.norm(M, axis=1, keepdims=True)
    X, Y, A, B = unit(X), unit(Y), unit(A), unit(B)
    s = np.concatenate([X, Y]) @ A.T
    s = s.mean(axis=1) - (np.concatenate([X, Y]) @ B.T).mean(axis=1)
    nx, n = len(X), len(X) + len(Y)
    sx, sy = s[:nx], s[nx:]
    statistic = sx.sum() - sy.sum()
    effect = (sx.mean() - sy.mean()) / s.std(ddof=1)
    partitions = math.comb(n, nx)
    p = None
    if partitions <= EXACT_UP_TO:
        import itertools

        total = s.sum()
        greater = 0
        for idx in itertools.combinations(range(n), nx):
            si = s[list(idx)].sum()
            greater += (2 * si - total) > statistic + TIE_TOLERANCE
        p = greater / partitions
    return {"effect_size": float(effect), "statistic": float(statistic), "p_value": p,
            "partitions": partitions, "s": s.tolist()}


def make_weat(lmlab):
    tests = json.loads((ROOT / "src" / "eval" / "fairness" / "weat_tests.json").read_text())["tests"]
    results = []
    for t in tests:
        for unit in ["word", "sentence"]:
            sets = []
            for k in "xyab":
                words = t[k]["words"]
                texts = words if unit == "word" else [x for w in words for x in seat_sentences(w)]
                sets.append(embed(lmlab, texts))
            r = weat_numpy(*sets)
            name = t["name"] if unit == "word" else t["name"].replace("weat", "seat")
            r.update({"test": name, "sizes": [len(m) for m in sets]})
            results.append(r)
            print(f"{name}: d = {r['effect_size']:.4f}, p = {r['p_value']}")
    (OUT / "weat.json").write_text(json.dumps({"model": "all-MiniLM-L6-v2 (lmlab embed)", "results": results},
                                              indent=1) + "\n")
    print(f"wrote {OUT / 'weat.json'}")


def lmlab_binary(path):
    p = Path(path)
    if not p.is_file():
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    return str(p)


def crows_model_dir():
    """The small random GPT-2 directory (written once; rerunning rewrites the same bytes)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out = OUT / "gpt2_crows"
    torch.manual_seed(18)
    cfg = GPT2Config(vocab_size=280, n_positions=256, n_embd=16, n_layer=2, n_head=2,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith(".weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(ROOT / "tests" / "fixtures" / "hf_gpt2" / "tied" / f, out / f)
    return out


def sentence_loglik(model, tok, text, bos):
    import torch

    ids = tok(text, add_special_tokens=False)["input_ids"]
    if ids[0] != bos:
        ids = [bos] + ids
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    target = torch.tensor(ids[1:])
    return float(logp[torch.arange(len(ids) - 1), target].sum()), len(ids) - 1


def make_crows(lmlab, data):
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    csv_path = Path(data) / "crows-pairs" / "crows_pairs_anonymized.csv"
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:CROWS_PAIRS]
    src = crows_model_dir()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, hf = Path(tmp) / "ckpt", Path(tmp) / "hf"
        subprocess.run([lmlab, "import", "--hf", str(src), "--out", str(ckpt)], check=True)
        subprocess.run([lmlab, "export", "--checkpoint", str(ckpt), "--hf", str(hf)], check=True)
        model = GPT2LMHeadModel.from_pretrained(hf).double().eval()
        tok = AutoTokenizer.from_pretrained(hf)
        original = AutoTokenizer.from_pretrained(src)
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        assert bos == 0, bos
        pairs = []
        for r in rows:
            for s in (r["sent_more"], r["sent_less"]):
                assert tok(s, add_special_tokens=False)["input_ids"] == original(s, add_special_tokens=False)["input_ids"]
            (lm, tm), (ll, tl) = (sentence_loglik(model, tok, r[k], bos) for k in ("sent_more", "sent_less"))
            pairs.append({"id": r[""], "bias_type": r["bias_type"], "ll_more": lm, "ll_less": ll,
                          "tokens_more": tm, "tokens_less": tl})
    more = np.array([p["ll_more"] for p in pairs])
    less = np.array([p["ll_less"] for p in pairs])
    doc = {
        "model": "gpt2_crows",
        "data": "crows-pairs/crows_pairs_anonymized.csv",
        "data_sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
        "limit": CROWS_PAIRS,
        "torch": torch.__version__,
        "pct_stereotype": float(np.mean(more > less)),
        "likelihood_diff": float(np.mean(np.abs(more - less))),
        "pairs": pairs,
    }
    (OUT / "crows_pairs.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT / 'crows_pairs.json'}: pct_stereotype {doc['pct_stereotype']:.4f}, "
          f"likelihood_diff {doc['likelihood_diff']:.4f}")


def bert_crows_dir(rows):
    """The small random BertForMaskedLM and its WordPiece tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForMaskedLM

    out = OUT / "bert_crows"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # A deterministic vocabulary (the WordPiece trainer breaks ties differently run to run):
    # the special tokens, then every character alone and as a continuation, then every word of
    # the sentences, each list sorted.
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words = {w for r in rows for k in ("sent_more", "sent_less")
             for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(r[k]))}
    chars = sorted({c for w in words for c in w})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = specials + chars + ["##" + c for c in chars] + sorted(w for w in words if len(w) > 1)
    tok = Tokenizer(models.WordPiece(vocab={p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.save(str(out / "tokenizer.json"))
    torch.manual_seed(21)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128, pad_token_id=0)
    model = BertForMaskedLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name and name.endswith(".weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    model.save_pretrained(out)
    return out


def get_span(seq1, seq2):
    """metric.py's get_span: the positions of the equal blocks, ids compared as strings."""
    import difflib

    seq1, seq2 = [str(x) for x in seq1], [str(x) for x in seq2]
    template1, template2 = [], []
    for op in difflib.SequenceMatcher(None, seq1, seq2).get_opcodes():
        if op[0] == "equal":
            template1 += list(range(op[1], op[2]))
            template2 += list(range(op[3], op[4]))
    return template1, template2


def make_crows_mlm(data):
    import torch
    from transformers import BertForMaskedLM, PreTrainedTokenizerFast

    csv_path = Path(data) / "crows-pairs" / "crows_pairs_anonymized.csv"
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:CROWS_PAIRS]
    src = bert_crows_dir(rows)
    model = BertForMaskedLM.from_pretrained(src).double().eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"), mask_token="[MASK]")
    mask_id = tok.convert_tokens_to_ids("[MASK]")

    def log_prob(masked, ids, i):
        with torch.no_grad():
            logits = model(torch.tensor([masked])).logits[0]
        return float(torch.log_softmax(logits[i], dim=-1)[ids[i]])

    pairs = []
    for r in rows:
        more, less = tok.encode(r["sent_more"]), tok.encode(r["sent_less"])
        t1, t2 = get_span(more, less)
        n = len(t1)
        s_more = s_less = 0.0
        # metric.py: skipping [CLS] and [SEP], they are never masked.
        for i in range(1, n - 1):
            m1, m2 = list(more), list(less)
            m1[t1[i]] = mask_id
            m2[t2[i]] = mask_id
            s_more += log_prob(m1, more, t1[i])
            s_less += log_prob(m2, less, t2[i])
        pairs.append({"id": r[""], "bias_type": r["bias_type"], "ll_more": s_more, "ll_less": s_less,
                      "tokens_more": n - 2, "tokens_less": n - 2})
    more_s = np.array([p["ll_more"] for p in pairs])
    less_s = np.array([p["ll_less"] for p in pairs])

    # The masked-LM loss and gradients of two sequences of equal length (no padding).
    a, b = tok.encode(rows[0]["sent_more"]), tok.encode(rows[1]["sent_more"])
    t = min(len(a), len(b))
    ids = [a[:t], b[:t]]
    labels = [[-100] * t for _ in ids]
    inputs = [list(x) for x in ids]
    for row, (pos, repl) in enumerate([((1, 3), (mask_id, mask_id)), ((2, t - 2), (mask_id, 7))]):
        for p, rp in zip(pos, repl):
            labels[row][p] = ids[row][p]
            inputs[row][p] = rp
    model.zero_grad()
    out = model(torch.tensor(inputs), labels=torch.tensor(labels))
    out.loss.backward()
    names = ["cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.weight",
             "cls.predictions.bias", "bert.embeddings.word_embeddings.weight",
             "bert.encoder.layer.0.attention.self.query.weight"]
    params = dict(model.named_parameters())
    grads = {n: params[n].grad.flatten().tolist() for n in names}
    doc = {
        "model": "bert_crows",
        "data": "crows-pairs/crows_pairs_anonymized.csv",
        "data_sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
        "limit": CROWS_PAIRS,
        "torch": torch.__version__,
        "pct_stereotype": float(np.mean(more_s > less_s)),
        "likelihood_diff": float(np.mean(np.abs(more_s - less_s))),
        "pairs": pairs,
        "mlm_loss": {"inputs": inputs, "labels": labels, "loss": float(out.loss.detach()), "grads": grads},
    }
    (OUT / "crows_pairs_mlm.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT / 'crows_pairs_mlm.json'}: pct_stereotype {doc['pct_stereotype']:.4f}, "
          f"likelihood_diff {doc['likelihood_diff']:.4f}, loss {doc['mlm_loss']['loss']:.6f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="*", default=["groups", "crows", "weat"])
    ap.add_argument("--lmlab", default=str(ROOT / "target" / "release" / "lmlab"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    for w in args.what:
        if w == "groups":
            make_groups()
        elif w == "crows":
            make_crows(lmlab_binary(args.lmlab), args.data)
        elif w == "crows_mlm":
            make_crows_mlm(args.data)
        elif w == "weat":
            make_weat(lmlab_binary(args.lmlab))
        else:
            raise SystemExit(f"unknown fixture {w!r}: groups, crows, crows_mlm or weat")
