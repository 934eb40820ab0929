#!/usr/bin/env python3
"""A bounded load test of `lmlab serve`: concurrent streaming clients on loopback.

Starts `lmlab serve` on 127.0.0.1 (an ephemeral port), then for each concurrency level C runs
C client threads at once, each sending `--requests` streaming completions (greedy is not
needed: temperature 0.8, seeded) of `--max-tokens` tokens with prompts of different lengths.
Per level: total generation throughput (completion tokens / wall time of the level), time to
first token and inter-token latency (p50, p99, from the arrival of each streamed chunk), errors
(any non-200, error event or short stream), and the server's peak RSS (VmHWM). Standard
library only; every request has a timeout and the test stops by itself.

    python bench/serve_load.py --checkpoint /work/runs/m-long/ckpt [--levels 1,4,16,64]
        [--max-tokens 32] [--requests 1] [--max-batch 32] [--lmlab target/release/lmlab] [--json out.json]

`--llama-cpp MODEL.gguf` runs the same load against llama.cpp's server instead
(`python -m llama_cpp.server` of the PyPI package llama-cpp-python[server], started with
`--python`'s interpreter, `--threads` threads, an f32 KV cache and a context of `--n-ctx`):
e.g. the GGUF that `lmlab export --gguf` writes of the same checkpoint. Both servers are asked
for exactly `--max-tokens` tokens (lmlab: `ignore_eos`; llama.cpp: `min_tokens`) with the same
plain sampling (temperature 0.8, no top-k/top-p/min-p, no repetition penalty).
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import threading
import time

PROMPTS = [
    "ROMEO:",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "KING RICHARD II:\nNo matter where; of comfort no man speak:",
    "To be, or not to be,",
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name;",
    "MENENIUS:\nI tell you, friends, most charitable care have the patricians of you.",
    "Now is the winter of our discontent",
    "HAMLET:",
]


def percentile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[k]


# Per server: the request fields that ask for exactly max_tokens tokens with plain sampling.
EXACT_LENGTH = {
    "lmlab": lambda n: {"ignore_eos": True, "stream_options": {"include_usage": True}},
    "llama.cpp": lambda n: {"min_tokens": n, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0},
}


def one_request(host, port, prompt, max_tokens, seed, timeout, server="lmlab"):
    """(ttft, [inter-token gaps], completion tokens, error or None)."""
    fields = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8, "seed": seed, "stream": True}
    body = json.dumps({**fields, **EXACT_LENGTH[server](max_tokens)})
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.perf_counter()
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            return None, [], 0, f"HTTP {r.status}: {r.read()[:200]!r}"
        # Tokens: the usage chunk's count where the server sends one, else the chunks with text
        # (llama.cpp's server sends one per token).
        ttft, last, gaps, tokens, chunks, done = None, None, [], None, 0, False
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            ev = json.loads(data)
            if "error" in ev:
                return ttft, gaps, tokens, ev["error"]["message"]
            if ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
            now = time.perf_counter()
            if any(c.get("text") for c in ev.get("choices", [])):
                chunks += 1
                if ttft is None:
                    ttft = now - t0
                else:
                    gaps.append(now - last)
                last = now
        tokens = chunks if tokens is None else tokens
        if not done or tokens != max_tokens:
            return ttft, gaps, tokens, f"stream ended early ({tokens} tokens, done={done})"
        return ttft, gaps, tokens, None
    except Exception as e:  # noqa: BLE001 - every failure is counted as an error
        return None, [], 0, repr(e)
    finally:
        conn.close()


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_level(host, port, clients, requests, max_tokens, timeout, server):
    results, lock = [], threading.Lock()

    def client(i):
        for j in range(requests):
            k = i * requests + j
            r = one_request(host, port, PROMPTS[k % len(PROMPTS)], max_tokens, 1000 + k, timeout, server)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttfts = [r[0] for r in results if r[0] is not None]
    gaps = [g for r in results for g in r[1]]
    tokens = sum(r[2] for r in results)
    errors = [r[3] for r in results if r[3]]
    return {
        "clients": clients,
        "requests": len(results),
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_s": round(percentile(ttfts, 50), 4),
        "ttft_p99_s": round(percentile(ttfts, 99), 4),
        "itl_p50_ms": round(1000 * percentile(gaps, 50), 2),
        "itl_p99_ms": round(1000 * percentile(gaps, 99), 2),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def start_lmlab(a):
    cmd = [a.lmlab, "serve", "--checkpoint", a.checkpoint, "--port", "0", "--max-batch", str(a.max_batch),
           "--threads", str(a.threads)]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        if line.startswith("lmlab serve: listening on http://"):
            host, port = line.split("http://")[1].strip().rsplit(":", 1)
            return server, host, port, cmd
    raise SystemExit("lmlab serve did not start")


def start_llama_cpp(a):
    with socket.socket() as s:  # a free loopback port (llama_cpp.server cannot take port 0)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threads = str(a.threads or os.cpu_count())
    cmd = [a.python, "-m", "llama_cpp.server", "--model", a.llama_cpp, "--host", "127.0.0.1", "--port", str(port),
           "--n_threads", threads, "--n_threads_batch", threads, "--n_ctx", str(a.n_ctx),
           "--type_k", "0", "--type_v", "0", "--verbose", "False",
           "--interrupt_requests", "False"]  # queue concurrent requests instead of cutting the running one
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"llama.cpp's server exited with {server.returncode}: {' '.join(cmd)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/models")
            if conn.getresponse().status == 200:
                return server, "127.0.0.1", str(port), cmd
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("llama.cpp's server did not start within 120 s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--lmlab", default="target/release/lmlab")
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=1, help="requests per client per level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per request")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--llama-cpp", metavar="GGUF", help="load llama.cpp's server with this model instead of lmlab")
    ap.add_argument("--python", default="python3", help="interpreter with llama-cpp-python[server]")
    ap.add_argument("--n-ctx", type=int, default=256, help="llama.cpp's context (the model's block size)")
    a = ap.parse_args()

    if a.llama_cpp:
        server_name, (server, host, port, cmd) = "llama.cpp", start_llama_cpp(a)
    else:
        server_name, (server, host, port, cmd) = "lmlab", start_lmlab(a)
    rows = []
    try:
        one_request(host, int(port), "warm up", 4, 0, a.timeout, server_name)
        print(f"{'clients':>7} {'requests':>8} {'tokens':>6} {'wall s':>7} {'tok/s':>7} {'TTFT p50':>9} "
              f"{'TTFT p99':>9} {'ITL p50':>8} {'ITL p99':>8} {'errors':>6} {'peak RSS':>9}")
        for c in [int(x) for x in a.levels.split(",")]:
            r = run_level(host, int(port), c, a.requests, a.max_tokens, a.timeout, server_name)
            r["peak_rss_mib"] = round(peak_rss_mib(server.pid), 1)
            rows.append(r)
            print(f"{c:>7} {r['requests']:>8} {r['tokens']:>6} {r['wall_s']:>7.2f} {r['tokens_per_s']:>7.1f} "
                  f"{r['ttft_p50_s']:>8.3f}s {r['ttft_p99_s']:>8.3f}s {r['itl_p50_ms']:>6.1f}ms {r['itl_p99_ms']:>6.1f}ms "
                  f"{r['errors']:>6} {r['peak_rss_mib']:>6.0f}MiB", flush=True)
            if r["first_error"]:
                print("  first error:", r["first_error"])
    finally:
        server.terminate()
        code = server.wait(timeout=60)
    base = rows[0]["tokens_per_s"] if rows else None
    for r in rows:
        r["speedup_vs_first"] = round(r["tokens_per_s"] / base, 2) if base else None
    out = {"server": server_name, "command": " ".join(cmd), "max_tokens": a.max_tokens, "levels": rows,
           "server_exit_code": code}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    print(json.dumps({r["clients"]: r["speedup_vs_first"] for r in rows}), f"server exit code {code}")
    errors = sum(r["errors"] for r in rows)
    if errors:
        raise SystemExit(f"{errors} request(s) failed or came back short")


if __name__ == "__main__":
    main()
