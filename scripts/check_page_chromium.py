#!/usr/bin/env python3
"""The page at `/` of `lmlab serve` in headless Chromium (Debian's `chromium`, driven by the
`playwright` package from PyPI; no browser download: it launches the system binary).

Starts `lmlab serve` on 127.0.0.1 (an ephemeral port), loads the page, checks that it lists the
model, types a prompt, sets the sampling fields (greedy: temperature 0), clicks Generate, waits
for the stream to finish, and checks that the streamed text equals a greedy /v1/completions
request for the same prompt made without the browser. Writes a screenshot. Exits 1 on the
first failure, 0 with "ok" lines otherwise.

    python scripts/check_page_chromium.py --checkpoint out/stories260K \\
        [--lmlab target/release/lmlab] [--chromium /usr/bin/chromium] \\
        [--screenshot docs/img/serve_page.png]
"""

import argparse
import json
import sys
import urllib.request

from playwright.sync_api import sync_playwright
from serve_check import check, start_server


def completion(base, prompt, max_tokens):
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    req = urllib.request.Request(base + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["choices"][0]["text"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--lmlab", default="target/release/lmlab")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--max-tokens", type=int, default=120)
    ap.add_argument("--screenshot", default="docs/img/serve_page.png")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the stream")
    a = ap.parse_args()

    proc, base = start_server(a.lmlab, ["--checkpoint", a.checkpoint, "--model-name", "stories",
                                        "--threads", "2"])
    try:
        expected = completion(base, a.prompt, a.max_tokens)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=a.chromium, headless=True,
                                        args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 900, "height": 720})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('stories')",
                                   timeout=a.timeout * 1000)
            check("the page lists the model", True)
            page.fill("#prompt", a.prompt)
            page.fill("#max_tokens", str(a.max_tokens))
            page.fill("#temperature", "0")
            page.click("#go")
            # The Generate button is disabled while the stream runs and enabled when it ends.
            page.wait_for_function("document.getElementById('status').textContent.includes('tokens in')",
                                   timeout=a.timeout * 1000)
            status = page.inner_text("#status")
            out = page.eval_on_selector("#out", "e => e.textContent")
            check("the stream finished", f"{a.max_tokens} tokens in" in status or "tokens in" in status, status)
            check("the page shows prompt + the streamed text", out == a.prompt + expected,
                  f"page {out!r} != {a.prompt + expected!r}")
            check("no JavaScript errors", not errors, "; ".join(errors))
            page.screenshot(path=a.screenshot, full_page=True)
            print(f"ok   screenshot {a.screenshot} ({status})")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
