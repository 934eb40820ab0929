#!/usr/bin/env python3
"""Fixture for tests/mlm.rs: the token stream a masked LM is trained on from a WordPiece
tokenizer, as transformers' examples/pytorch/language-modeling/run_mlm.py builds it.

How:  .venv/bin/python scripts/make_mlm_fixtures.py
Needs: transformers (its fast tokenizer) and tests/fixtures/fairness/bert_crows/tokenizer.json
(scripts/make_fairness_fixtures.py crows_mlm writes it).

tests/fixtures/mlm/wordpiece_stream.json: a few lines of text (one longer than the tokenizer's
128-token truncation, unknown characters that WordPiece turns into [UNK], blank lines) and what
run_mlm.py without --line_by_line computes from them: each line
tokenized with return_special_tokens_mask=True (the [CLS] ... [SEP] template, no truncation),
then group_texts' concatenation (before it cuts blocks). run_mlm.py keeps blank lines as
[CLS] [SEP]; lmlab leaves them out, as its --line_by_line path does, so they are filtered here
with line_by_line's own test (`len(line) > 0 and not line.isspace()`). Also the
special_tokens_mask of that stream: DataCollatorForLanguageModeling never chooses those
positions.
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tests" / "fixtures" / "fairness" / "bert_crows" / "tokenizer.json"
OUT = ROOT / "tests" / "fixtures" / "mlm"


def main():
    import transformers
    from transformers import PreTrainedTokenizerFast

    # The file as it is (naming the special tokens here would add them as added tokens, which
    # the file does not have: a literal "[MASK]" would then be matched whole).
    tok = PreTrainedTokenizerFast(tokenizer_file=str(SRC))
    lines = [
        "The poor are really ignorant about how to handle the money they do have.",
        "",
        "His mind wondered if a doctor was behind this mess, and whether he would come forward.",
        "   ",
        "the man @ the door said ~ loudly",
        " ".join(["she was always the one who would take the blame for everything"] * 12),
        "Café owners were Asian.",
    ]
    kept = [line for line in lines if len(line) > 0 and not line.isspace()]
    enc = tok(kept, return_special_tokens_mask=True, truncation=False)
    ids = [i for row in enc["input_ids"] for i in row]
    special = [m for row in enc["special_tokens_mask"] for m in row]
    longest = max(len(row) for row in enc["input_ids"])
    assert longest > 128, f"the long line has {longest} tokens"
    unk_id, mask_id = tok.convert_tokens_to_ids("[UNK]"), tok.convert_tokens_to_ids("[MASK]")
    assert unk_id in ids, "no [UNK] in the stream"
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {
        "tokenizer": "fairness/bert_crows/tokenizer.json",
        "transformers": transformers.__version__,
        "text": "\n".join(lines) + "\n",
        "ids": ids,
        "special_tokens_mask": special,
        "unk_id": unk_id,
        "mask_id": mask_id,
    }
    (OUT / "wordpiece_stream.json").write_text(json.dumps(doc) + "\n")
    print(f"wrote {OUT / 'wordpiece_stream.json'}: {len(ids)} ids, {sum(special)} special, longest line {longest}")


if __name__ == "__main__":
    main()
