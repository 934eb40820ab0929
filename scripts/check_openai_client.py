#!/usr/bin/env python3
"""The official `openai` Python package (pip install openai) against `lmlab serve`.

Starts `lmlab serve` on 127.0.0.1 (an ephemeral port) with a decoder checkpoint, the MiniLM
embedder and an API key, then checks through the client: the model list; a greedy completion
equal to `lmlab sample`'s; a streamed completion equal to the whole one; chat, whole and
streamed; `n` and `usage`; embeddings (the client's default base64 encoding and floats) equal
to `lmlab embed`'s vectors; and that a wrong key and a bad parameter raise the client's
AuthenticationError and BadRequestError. Exits 1 on the first mismatch.

    python scripts/check_openai_client.py --checkpoint /work/runs/m-long/ckpt \\
        --embedder ~/.cache/lmlab/minilm/model [--lmlab target/release/lmlab]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import openai
from serve_check import check, start_server

KEY = "check-openai-client"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--embedder", default=os.path.expanduser("~/.cache/lmlab/minilm/model"))
    ap.add_argument("--lmlab", default="target/release/lmlab")
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--threads", default="2")
    a = ap.parse_args()

    proc, base = start_server(a.lmlab, ["--api-key", KEY, "--checkpoint", a.checkpoint, "--embedder", a.embedder,
                                        "--model-name", "lm", "--threads", a.threads])
    try:
        client = openai.OpenAI(base_url=base + "/v1", api_key=KEY)
        print(f"openai {openai.__version__} against {base}")
        ids = [m.id for m in client.models.list()]
        check("models.list: the LM and the embedder", len(ids) == 2 and ids[0] == "lm", str(ids))
        embed_model = ids[1]

        # Greedy completion = lmlab sample.
        n_tok = 40
        want = subprocess.run([a.lmlab, "sample", "--checkpoint", a.checkpoint, "--prompt", a.prompt,
                               "--max-new-tokens", str(n_tok), "--temperature", "0", "--threads", a.threads],
                              check=True, capture_output=True, text=True).stdout
        want = want[len(a.prompt):-1]
        c = client.completions.create(model="lm", prompt=a.prompt, max_tokens=n_tok, temperature=0)
        check("completions.create = lmlab sample (greedy)", c.choices[0].text == want,
              f"{c.choices[0].text!r} vs {want!r}")
        check("completion usage", c.usage.completion_tokens == n_tok and c.usage.prompt_tokens > 0, str(c.usage))

        stream = client.completions.create(model="lm", prompt=a.prompt, max_tokens=n_tok, temperature=0, stream=True,
                                           stream_options={"include_usage": True})
        pieces, usage, finish = [], None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for ch in chunk.choices:
                pieces.append(ch.text)
                finish = ch.finish_reason or finish
        check("streamed completion = whole", "".join(pieces) == want, "".join(pieces))
        check("stream finish_reason and usage", finish == "length" and usage.completion_tokens == n_tok)

        c = client.completions.create(model="lm", prompt=a.prompt, max_tokens=8, temperature=0.8, seed=3, n=3)
        check("n = 3 choices", [ch.index for ch in c.choices] == [0, 1, 2] and c.usage.completion_tokens == 24)

        msgs = [{"role": "system", "content": "You are a poet."}, {"role": "user", "content": "Speak of the moon."}]
        r = client.chat.completions.create(model="lm", messages=msgs, max_tokens=30, temperature=0)
        whole = r.choices[0].message.content
        check("chat.completions.create", r.choices[0].message.role == "assistant" and r.usage.completion_tokens > 0)
        stream = client.chat.completions.create(model="lm", messages=msgs, max_tokens=30, temperature=0, stream=True)
        streamed = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        check("streamed chat = whole", streamed == whole, f"{streamed!r} vs {whole!r}")

        texts = ["A man is eating food.", "The quick brown fox jumps over the lazy dog.", "Ceci n'est pas une pipe."]
        out = subprocess.run([a.lmlab, "embed", "--model", a.embedder, *texts], check=True, capture_output=True,
                             text=True).stdout
        want_vecs = np.array([json.loads(l) for l in out.splitlines()])
        emb = client.embeddings.create(model=embed_model, input=texts)  # base64 on the wire
        got = np.array([d.embedding for d in emb.data])
        diff = float(np.abs(got - want_vecs).max())
        check("embeddings.create (base64) = lmlab embed", got.shape == want_vecs.shape and diff < 1e-6, f"{diff}")
        emb = client.embeddings.create(model=embed_model, input=texts, encoding_format="float")
        diff = float(np.abs(np.array([d.embedding for d in emb.data]) - want_vecs).max())
        check("embeddings.create (float) = lmlab embed", diff < 1e-6, f"{diff}")

        try:
            openai.OpenAI(base_url=base + "/v1", api_key="wrong").models.list()
            check("wrong key raises AuthenticationError", False)
        except openai.AuthenticationError:
            check("wrong key raises AuthenticationError", True)
        try:
            client.completions.create(model="lm", prompt="x", temperature=5)
            check("temperature 5 raises BadRequestError", False)
        except openai.BadRequestError as e:
            check("temperature 5 raises BadRequestError", e.body.get("param") == "temperature", str(e.body))
        print("all checks passed")
    finally:
        proc.terminate()
        t0 = time.time()
        code = proc.wait(timeout=60)
        print(f"server stopped by SIGTERM with exit code {code} after {time.time() - t0:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
