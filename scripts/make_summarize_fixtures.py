"""Fixtures for the decoding constraints of `lmlab summarize` (tests/summarize.rs): which tokens
Hugging Face's logits processors ban, for random hypotheses.

- NoRepeatNGramLogitsProcessor(n): the tokens set to -inf after a hypothesis (n = 1..4).
- MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=1, min_new_tokens=m, eos) on
  [decoder start] + hypothesis, and MinLengthLogitsProcessor(min_length=m + 1, eos) on the same
  sequence: whether EOS is banned (lmlab's min_len is HF's min_new_tokens).

Writes tests/fixtures/summarize_logits_processors.json. Run with the project venv:
    /work/venv/bin/python scripts/make_summarize_fixtures.py
"""

import json
import os

import torch
import transformers
from transformers.generation.logits_process import (
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
)

V, BOS, EOS = 7, 1, 2


def banned(scores):
    return [int(i) for i in torch.nonzero(torch.isinf(scores[0])).flatten()]


def main():
    g = torch.Generator().manual_seed(0)
    ngram = []
    for case in range(60):
        n = 1 + case % 4
        length = int(torch.randint(0, 12, (1,), generator=g))
        # A small alphabet (3..5) so that n-grams repeat often.
        hyp = torch.randint(3, 6, (length,), generator=g).tolist()
        ids = torch.tensor([[BOS] + hyp])
        scores = NoRepeatNGramLogitsProcessor(n)(ids, torch.zeros(1, V))
        ngram.append({"n": n, "tokens": hyp, "banned": banned(scores)})
    min_len = []
    for m in range(0, 5):
        for length in range(0, 7):
            ids = torch.tensor([[BOS] + [3] * length])
            new = MinNewTokensLengthLogitsProcessor(1, m, EOS)(ids, torch.zeros(1, V))
            total = MinLengthLogitsProcessor(m + 1, EOS)(ids, torch.zeros(1, V))
            assert banned(new) == banned(total)
            min_len.append({"min_len": m, "tokens": length, "eos_banned": EOS in banned(new)})
    out = {
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "eos": EOS,
        "no_repeat_ngram": ngram,
        "min_length": min_len,
    }
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "summarize_logits_processors.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
