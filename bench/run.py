#!/usr/bin/env python3
"""lmlab vs PyTorch benchmark harness: same work, same weights, same machine, alternating runs.

  python3 bench/run.py [--cases S-train,M-train,D-train,S-train-bf16,M-train-bf16,M-forward,M-generate] [--rounds 3] [--quick]

For each case: `lmlab bench --dump-init` writes the initial weights and first batch,
bench/torch_cases.py loads them, both report the initial loss (must agree to 1e-4
relative), then lmlab and PyTorch run alternately, each round a fresh subprocess
of each. Per-iteration times of all rounds are pooled per side. Also measures the
2048^3 fp32 sgemm rate of torch.mm (the "measured peak") and the theoretical peak.
Writes the report to stdout and bench/results/latest.{md,json} (--quick runs write
bench/results/quick.{md,json} unless --out is given). See bench/README.md.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
VENV = os.environ.get("LMLAB_VENV", os.path.join(ROOT, ".venv"))
TORCH_CASES = os.path.join(BENCH, "torch_cases.py")

# (warmup, timed iterations) per subprocess
CASE_ITERS = {
    "S-train": (5, 30),
    "M-train": (2, 5),
    "D-train": (3, 15),
    "S-train-bf16": (5, 30),
    "M-train-bf16": (2, 5),
    "M-forward": (3, 20),
    "M-generate": (1, 3),
    "M-forward-bf16w": (3, 20),
    "M-generate-bf16w": (1, 3),
}
CASE_DESC = {
    "S-train": "train step, 4L 4H 128C, B=12 T=64",
    "M-train": "train step, 6L 6H 384C, B=16 T=256",
    "D-train": "train step, 8L 8H 256C, B=8 T=128",
    "S-train-bf16": "S train step in bf16 mixed precision (PyTorch: autocast bf16)",
    "M-train-bf16": "M train step in bf16 mixed precision (PyTorch: autocast bf16)",
    "M-forward": "forward (logits), M model, B=1 T=256",
    "M-generate": "greedy KV-cache generation of 256 tokens, M model, 1-token prompt",
    "M-forward-bf16w": "M-forward with bf16 weights (lmlab: quantize --scheme bf16, f32 activations; "
                       "PyTorch: model.to(torch.bfloat16))",
    "M-generate-bf16w": "M-generate with bf16 weights (as M-forward-bf16w)",
}
LOSS_RTOL = 1e-4
LOADED_LOADAVG = 0.5  # 1-min load average above which the report warns that the machine was busy
SGEMM_N = 2048
# Hook for lmlab's own 2048^3 GEMM rate: the lmlab bench case it runs (see lmlab_sgemm()).
LMLAB_SGEMM_CASE = "sgemm-2048"


# ----------------------------------------------------------------------------
# Environment

def ensure_venv():
    """Re-exec under the project venv's python (creating it first if missing)."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        print(f"[bench] venv {VENV} missing: running scripts/setup_python.sh", file=sys.stderr)
        subprocess.check_call(["bash", os.path.join(ROOT, "scripts", "setup_python.sh")])
    os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def sh(cmd, timeout=30):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT).stdout.strip()
    except Exception:
        return ""


def machine_info(threads):
    info = {"platform": platform.platform(), "python": platform.python_version()}
    cpuinfo = ""
    try:
        cpuinfo = open("/proc/cpuinfo").read()
    except OSError:
        pass
    first = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if first:
                break
            continue
        k, _, v = line.partition(":")
        first[k.strip()] = v.strip()
    flags = first.get("flags", "").split()
    info["cpu_model"] = first.get("model name", platform.processor() or "unknown")
    info["simd_flags"] = sorted(f for f in flags if f in ("avx", "avx2", "fma") or f.startswith("avx512"))
    lscpu = {}
    for line in sh(["lscpu"]).splitlines():
        k, _, v = line.partition(":")
        lscpu[k.strip()] = v.strip()
    info["hypervisor"] = lscpu.get("Hypervisor vendor", "")
    try:
        cores = int(lscpu["Core(s) per socket"]) * int(lscpu.get("Socket(s)", "1"))
    except (KeyError, ValueError):
        cores = os.cpu_count() or 1
    info["cores"] = cores
    info["logical_cpus"] = os.cpu_count()
    if lscpu.get("CPU max MHz"):
        mhz, src = float(lscpu["CPU max MHz"]), "lscpu 'CPU max MHz'"
    elif first.get("cpu MHz"):
        mhz, src = float(first["cpu MHz"]), "/proc/cpuinfo 'cpu MHz' (no max MHz reported, e.g. under a hypervisor)"
    else:
        mhz, src = 0.0, "unknown"
    if any(f.startswith("avx512f") for f in flags):
        fpc, fsrc = 64, "AVX-512: 2 FMA units x 16 fp32 lanes x 2 FLOP (assumed 2 units)"
    elif "avx2" in flags and "fma" in flags:
        fpc, fsrc = 32, "AVX2+FMA: 2 FMA units x 8 fp32 lanes x 2 FLOP"
    elif "avx" in flags:
        fpc, fsrc = 16, "AVX: 8 fp32 lanes x (1 add + 1 mul)"
    else:
        fpc, fsrc = 8, "SSE: 4 fp32 lanes x (1 add + 1 mul)"
    used = min(threads, cores)
    info["theoretical_peak_gflops"] = used * mhz / 1e3 * fpc
    info["theoretical_peak_derivation"] = (f"{used} cores x {mhz / 1e3:.3f} GHz ({src}) x {fpc} FLOP/cycle ({fsrc}) "
                                           f"= {info['theoretical_peak_gflops']:.1f} GFLOP/s")
    info["rustc"] = sh(["rustc", "-V"])
    info["git"] = sh(["git", "describe", "--always", "--dirty"])
    return info


# ----------------------------------------------------------------------------
# Subprocesses

def tail(text, n=400):
    text = " ".join((text or "").split())  # one line, for the markdown report
    return text if len(text) <= n else "..." + text[-n:]


def run_json(cmd, timeout, env=None):
    """Run cmd; return (result dict or None, error string or None, wall seconds)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except FileNotFoundError as e:
        return None, str(e), 0.0
    except subprocess.TimeoutExpired as e:
        return None, f"timed out after {timeout} s; stderr: {tail(e.stderr if isinstance(e.stderr, str) else '')}", \
            time.perf_counter() - t0
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {tail(p.stderr) or tail(p.stdout)}", wall
    for line in reversed(p.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line), None, wall
            except json.JSONDecodeError:
                break
    return None, f"no JSON line in output: {tail(p.stdout)} {tail(p.stderr)}", wall


def build_lmlab(args):
    if args.no_build:
        return None
    print("[bench] cargo build --release ...", file=sys.stderr, flush=True)
    try:
        p = subprocess.run(["cargo", "build", "--release"], capture_output=True, text=True, cwd=ROOT, timeout=3600)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        return f"cargo build failed: {e}"
    if p.returncode != 0:
        return f"cargo build --release failed: {tail(p.stderr, 600)}"
    return None


def lmlab_binary(args):
    if args.lmlab:
        return args.lmlab
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    if not os.path.isabs(target):
        target = os.path.join(ROOT, target)
    return os.path.join(target, "release", "lmlab")


def torch_env(threads):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault("MKL_NUM_THREADS", str(threads))
    return env


def torch_sgemm(args):
    cmd = [sys.executable, TORCH_CASES, "--case", "sgemm", "--size", str(SGEMM_N), "--threads", str(args.threads),
           "--warmup", "2", "--iters", "3" if args.quick else "10", "--json"]
    res, err, _ = run_json(cmd, args.timeout, torch_env(args.threads))
    return res, err


def lmlab_sgemm(args, lmlab_bin):
    """HOOK: lmlab's own 2048^3 fp32 GEMM rate. Runs `lmlab bench --case sgemm-2048` (LMLAB_SGEMM_CASE)
    and expects the usual JSON line (times_ms, optional flops_per_iter). Returns (gflops or None, note)."""
    cmd = [lmlab_bin, "bench", "--case", LMLAB_SGEMM_CASE, "--iters", "3" if args.quick else "10",
           "--warmup", "2", "--threads", str(args.threads), "--seed", str(args.seed), "--json"]
    res, err, _ = run_json(cmd, args.timeout)
    if res is None or not res.get("times_ms"):
        return None, f"not available (`lmlab bench --case {LMLAB_SGEMM_CASE}`: {err or 'no times'})"
    flops = res.get("flops_per_iter") or 2.0 * SGEMM_N ** 3
    med = statistics.median(res["times_ms"])
    return flops / (med * 1e-3) / 1e9, f"median of {len(res['times_ms'])}"


# ----------------------------------------------------------------------------
# FLOP estimate (fallback when lmlab does not report flops_per_iter)

def read_init_config(path):
    """The `config` metadata of a safetensors init file, read without torch."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return json.loads(header.get("__metadata__", {}).get("config", "{}"))


def estimate_flops(case, cfg):
    """Matmul FLOPs (2 per multiply-add) of one iteration; attention counted over the full
    T x T score matrix (PaLM convention); training = 3 x forward. Layer norms, GELU,
    softmax, embeddings and the optimizer are not counted."""
    L, C, V = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
    B, T = cfg.get("batch", 1), cfg.get("seq", cfg["block_size"])
    if "-generate" in case:
        n_new = int(cfg.get("new_tokens", 256))
        P = int(cfg.get("prompt_len", 1))
        total, ctx = 0.0, 0
        for step in range(n_new):  # prefill of P tokens, then n_new-1 single tokens
            n = P if step == 0 else 1
            for _ in range(n):
                ctx += 1
                total += L * (24 * C * C + 4 * ctx * C)
            total += 2 * C * V  # logits of the last position only
        return total
    N = B * T
    fwd = L * (24 * N * C * C + 4 * B * T * T * C) + 2 * N * C * V
    return 3 * fwd if "-train" in case else fwd


# ----------------------------------------------------------------------------
# Cases

def summarize(runs):
    times = [t for r in runs for t in r.get("times_ms", [])]
    if not times:
        return None
    return dict(n=len(times), median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
                peak_rss_kb=max((r.get("peak_rss_kb") or 0) for r in runs))


def run_case(case, args, lmlab_bin, lmlab_build_err, tmpdir):
    warmup, iters = CASE_ITERS[case]
    if args.quick:
        warmup, iters = min(warmup, 1), max(1, iters // 5)
    if args.warmup is not None:
        warmup = args.warmup
    if args.iters is not None:
        iters = args.iters
    init = os.path.join(tmpdir, f"init-{case}.safetensors")
    out = dict(case=case, description=CASE_DESC[case], warmup=warmup, iters=iters, rounds=args.rounds,
               lmlab=dict(runs=[], errors=[]), torch=dict(runs=[], errors=[]), notes=[])
    lm_cmd = [lmlab_bin, "bench", "--case", case, "--iters", str(iters), "--warmup", str(warmup),
              "--threads", str(args.threads), "--seed", str(args.seed), "--json"]
    th_cmd = [sys.executable, TORCH_CASES, "--case", case, "--iters", str(iters), "--warmup", str(warmup),
              "--threads", str(args.threads), "--seed", str(args.seed), "--init", init, "--json"]
    if args.gen_attn:
        th_cmd += ["--gen-attn", args.gen_attn]
    out["lmlab_cmd"] = " ".join(shlex.quote(c) for c in lm_cmd)
    out["torch_cmd"] = " ".join(shlex.quote(c) for c in th_cmd)
    lmlab_ok = lmlab_build_err is None
    if not lmlab_ok:
        out["lmlab"]["errors"].append(lmlab_build_err)
    init_from = None

    def log(msg):
        print(f"[bench] {case}: {msg}", file=sys.stderr, flush=True)

    for rnd in range(args.rounds):
        if lmlab_ok:
            cmd = lm_cmd + (["--dump-init", init] if init_from is None else [])
            res, err, wall = run_json(cmd, args.timeout)
            if res is None:
                out["lmlab"]["errors"].append(f"round {rnd}: {err}")
                log(f"lmlab round {rnd} failed: {err}")
                if init_from is None:
                    lmlab_ok = False  # first run failed: treat lmlab as unavailable for this case
            else:
                if init_from is None:
                    if os.path.exists(init):
                        init_from = "lmlab --dump-init"
                    else:
                        out["lmlab"]["errors"].append(f"round {rnd}: lmlab did not write the --dump-init file")
                        lmlab_ok = False
                res["round"] = rnd
                out["lmlab"]["runs"].append(res)
                log(f"lmlab round {rnd}: median {statistics.median(res['times_ms']) if res.get('times_ms') else float('nan'):.2f} ms "
                    f"({wall:.1f} s wall)")
        if init_from is None:
            # lmlab unavailable: time PyTorch alone on a self-made init file so the case still reports something
            res, err, _ = run_json([sys.executable, TORCH_CASES, "--make-init", init, "--case", case,
                                    "--seed", str(args.seed)], args.timeout)
            if err is not None:
                out["torch"]["errors"].append(f"--make-init: {err}")
                log(f"torch --make-init failed: {err}")
                break
            init_from = "torch_cases.py --make-init (lmlab not available)"
        res, err, wall = run_json(th_cmd, args.timeout, torch_env(args.threads))
        if res is None:
            out["torch"]["errors"].append(f"round {rnd}: {err}")
            log(f"torch round {rnd} failed: {err}")
        else:
            res["round"] = rnd
            out["torch"]["runs"].append(res)
            log(f"torch round {rnd}: median {res.get('median_ms', float('nan')):.2f} ms ({wall:.1f} s wall)")
        if rnd == 0 and out["lmlab"]["runs"] and out["torch"]["runs"]:
            l0, t0 = out["lmlab"]["runs"][0].get("initial_loss"), out["torch"]["runs"][0].get("initial_loss")
            ok = l0 is not None and t0 is not None and abs(l0 - t0) / max(abs(t0), 1e-30) < LOSS_RTOL
            log(f"initial loss lmlab {l0} / torch {t0}: {'agree' if ok else 'DIFFER -> case FAILED, no more rounds'}")
            if not ok:
                break
    out["init_from"] = init_from

    # checks and summary
    lm, th = out["lmlab"]["runs"], out["torch"]["runs"]
    out["lmlab"]["summary"], out["torch"]["summary"] = summarize(lm), summarize(th)
    status = "OK"
    if lm and th:
        l0, t0 = lm[0].get("initial_loss"), th[0].get("initial_loss")
        out["initial_loss"] = dict(lmlab=l0, torch=t0)
        if l0 is None or t0 is None:
            status = "FAILED"
            out["notes"].append("initial loss missing")
        else:
            rel = abs(l0 - t0) / max(abs(t0), 1e-30)
            out["initial_loss"]["rel_diff"] = rel
            if not rel < LOSS_RTOL:
                status = "FAILED"
                out["notes"].append(f"initial loss differs: lmlab {l0:.7f} vs torch {t0:.7f} (rel {rel:.2e} >= {LOSS_RTOL})")
        others = {r.get("initial_loss") for r in lm[1:]} - {l0}
        if others:
            out["notes"].append(f"lmlab rounds reported different initial losses: {sorted(x for x in others if x is not None)}")
    elif not lm:
        status = "lmlab n/a"
        reason = out["lmlab"]["errors"][0] if out["lmlab"]["errors"] else "no result"
        out["notes"].append(f"lmlab: not available ({reason})")
        if th:
            out["initial_loss"] = dict(lmlab=None, torch=th[0].get("initial_loss"))
    if not th:
        status = "FAILED" if lm else "n/a"
        out["notes"].append(f"PyTorch: not available ({out['torch']['errors'][0] if out['torch']['errors'] else 'no result'})")

    # FLOPs: lmlab's own count when present (same work on both sides), else the estimate here
    est = None
    if os.path.exists(init):
        try:
            cfg = read_init_config(init)
            est = estimate_flops(case, cfg)
        except Exception as e:  # noqa: BLE001
            out["notes"].append(f"flop estimate failed: {e}")
    out["flops_estimate"] = est
    lm_flops = lm[0].get("flops_per_iter") if lm else None
    out["flops_per_iter"] = lm_flops or est
    out["flops_source"] = "lmlab flops_per_iter" if lm_flops else ("bench/run.py estimate" if est else None)

    if "-generate" in case:
        lt = lm[0].get("tokens") if lm else None
        tt = th[0].get("tokens") if th else None
        if lt is not None and tt is not None:
            prompt = th[0].get("prompt") or []
            if len(lt) == len(tt) + len(prompt) and lt[:len(prompt)] == prompt:
                lt = lt[len(prompt):]  # lmlab listed the prompt too
                out["notes"].append("lmlab tokens included the prompt; stripped for the comparison")
            n = min(len(lt), len(tt))
            match = sum(a == b for a, b in zip(lt, tt))
            first_div = next((i for i, (a, b) in enumerate(zip(lt, tt)) if a != b), None)
            out["token_agreement"] = dict(matching=match, compared=n, lmlab_len=len(lt), torch_len=len(tt),
                                          first_divergence=first_div)
        n_new = (th[0].get("new_tokens") if th else None) or 256
        out["new_tokens"] = n_new
    out["status"] = status
    return out


# ----------------------------------------------------------------------------
# Report

def fmt_ms(s):
    if not s:
        return "n/a"
    def f(x):
        return f"{x:.0f}" if x >= 1000 else (f"{x:.1f}" if x >= 10 else f"{x:.2f}")
    return f"{f(s['median_ms'])} ({f(s['min_ms'])}–{f(s['max_ms'])})"


def report(results, meta):
    peak = meta["peak"]
    meas = peak.get("torch_sgemm_gflops")
    theo = meta["machine"]["theoretical_peak_gflops"]
    lines = []
    add = lines.append
    add(f"# lmlab vs PyTorch benchmark ({meta['date']})")
    add("")
    add(f"Command: `{meta['command']}`")
    add("")
    m = meta["machine"]
    add(f"Machine: {m['cpu_model']}; {m['cores']} cores ({m['logical_cpus']} logical CPUs)"
        f"{'; hypervisor ' + m['hypervisor'] if m['hypervisor'] else ''}; SIMD flags: {' '.join(m['simd_flags']) or 'none'}; "
        f"threads used: {meta['threads']}")
    add(f"Software: torch {meta.get('torch_version', '?')}; {m['rustc'] or 'rustc ?'}; lmlab {m['git'] or '?'}; "
        f"{m['platform']}")
    add(f"Load average before: {meta['loadavg_before']}; after: {meta['loadavg_after']}")
    paths = sorted({(r.get("isa"), r.get("bf16_gemm")) for res in results for r in res["lmlab"]["runs"] if r.get("isa")})
    if paths:
        add("lmlab kernel path (`lmlab info`): " + "; ".join(f"{i} (bf16 matmuls: {b})" for i, b in paths))
    try:
        busy = float(meta["loadavg_before"].split()[0]) >= LOADED_LOADAVG
    except (ValueError, IndexError):
        busy = False
    if busy:
        add("")
        add(f"**WARNING: the machine was busy (1-min load average >= {LOADED_LOADAVG}) when the run started. "
            "Timings are not representative; PyTorch's OpenMP threads in particular slow down badly "
            "(often several-fold) when they share cores with other work.**")
    add("")
    add(f"Measured peak: torch.mm {SGEMM_N}³ fp32 sgemm at {meta['threads']} threads: "
        + (f"{meas:.1f} GFLOP/s (best of start {peak.get('torch_sgemm_start_gflops') or float('nan'):.1f} / "
           f"end {peak.get('torch_sgemm_end_gflops') or float('nan'):.1f}; median of "
           f"{peak.get('sgemm_iters')} each)" if meas else f"not available ({peak.get('torch_sgemm_error')})"))
    add(f"Theoretical peak: {m['theoretical_peak_derivation']}")
    lg = peak.get("lmlab_sgemm_gflops")
    add(f"lmlab {SGEMM_N}³ sgemm: " + (f"{lg:.1f} GFLOP/s ({peak.get('lmlab_sgemm_note')})" if lg
                                       else peak.get("lmlab_sgemm_note", "not measured")))
    add("")
    add("| case | status | lmlab median (min–max) ms | PyTorch median (min–max) ms | ratio PyTorch/lmlab | "
        "lmlab GFLOP/s | PyTorch GFLOP/s | lmlab % of measured sgemm peak | lmlab % of theor. peak | "
        "PyTorch % of measured sgemm peak | lmlab peak RSS MB | PyTorch peak RSS MB | initial loss lmlab / torch |")
    add("|" + "---|" * 13)
    for r in results:
        ls, ts = r["lmlab"]["summary"], r["torch"]["summary"]
        fl = r.get("flops_per_iter")
        lgf = fl / (ls["median_ms"] * 1e-3) / 1e9 if (fl and ls) else None
        tgf = fl / (ts["median_ms"] * 1e-3) / 1e9 if (fl and ts) else None
        r["lmlab_gflops"], r["torch_gflops"] = lgf, tgf
        ratio = ts["median_ms"] / ls["median_ms"] if (ls and ts) else None
        r["ratio_torch_over_lmlab"] = ratio
        pct = lambda g, p: f"{100 * g / p:.1f}%" if (g and p) else "n/a"  # noqa: E731
        il = r.get("initial_loss") or {}
        mb = lambda s: f"{s['peak_rss_kb'] / 1024:.0f}" if s else "n/a"  # noqa: E731
        fl_loss = lambda x: f"{x:.5f}" if x is not None else "n/a"  # noqa: E731
        add(f"| {r['case']} | {r['status']} | {fmt_ms(ls)} | {fmt_ms(ts)} | "
            f"{f'{ratio:.2f}×' if ratio else 'n/a'} | {f'{lgf:.1f}' if lgf else 'n/a'} | {f'{tgf:.1f}' if tgf else 'n/a'} | "
            f"{pct(lgf, meas)} | {pct(lgf, theo)} | {pct(tgf, meas)} | "
            f"{mb(ls)} | {mb(ts)} | "
            f"{fl_loss(il.get('lmlab'))} / {fl_loss(il.get('torch'))} |")
    add("")
    add("Times are per iteration, pooled over all rounds (n = samples per side); ratio > 1 means lmlab is faster. "
        "GFLOP/s use one FLOP count per case for both sides (matmul FLOPs; source per case below). "
        "Peak RSS is the maximum ru_maxrss over that side's subprocesses (PyTorch's includes the torch library).")
    add("")
    for r in results:
        ls, ts = r["lmlab"]["summary"], r["torch"]["summary"]
        parts = [f"**{r['case']}** ({r['description']}): warmup {r['warmup']}, iters {r['iters']} per subprocess, "
                 f"{r['rounds']} rounds; n = {ls['n'] if ls else 0} lmlab / {ts['n'] if ts else 0} PyTorch"]
        if r.get("flops_per_iter"):
            parts.append(f"{r['flops_per_iter'] / 1e9:.3f} GFLOP/iter ({r['flops_source']}"
                         + (f"; run.py estimate {r['flops_estimate'] / 1e9:.3f}" if r.get("flops_estimate")
                            and r["flops_source"] != "bench/run.py estimate" else "") + ")")
        if "-generate" in r["case"]:
            n_new = r.get("new_tokens", 256)
            tps = lambda s: f"{n_new / (s['median_ms'] * 1e-3):.1f}" if s else "n/a"  # noqa: E731
            parts.append(f"tokens/s lmlab {tps(ls)}, PyTorch {tps(ts)}")
            ag = r.get("token_agreement")
            if ag:
                parts.append(f"greedy tokens agree at {ag['matching']}/{ag['compared']} positions"
                             + (f" (first divergence at {ag['first_divergence']})" if ag["first_divergence"] is not None else ""))
            elif ts:
                parts.append(f"token agreement: n/a; PyTorch decode attention: {ts and r['torch']['runs'][0].get('gen_attn')}")
        if r.get("init_from"):
            parts.append(f"init: {r['init_from']}")
        for n in r["notes"]:
            parts.append(n)
        add("- " + "; ".join(parts))
    add("")
    return "\n".join(lines)


def main():
    ensure_venv()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASE_ITERS), help="comma-separated subset of " + ",".join(CASE_ITERS))
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds per case (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: iters/5 (at least 1), warmup <= 1, 1 round, 3 sgemm reps; "
                         "writes bench/results/quick.* instead of latest.*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--iters", type=int, default=None, help="override timed iterations per subprocess (all cases)")
    ap.add_argument("--warmup", type=int, default=None, help="override warmup iterations per subprocess (all cases)")
    ap.add_argument("--gen-attn", choices=["sdpa", "matmul"], default=None,
                    help="PyTorch decode-step attention for M-generate (torch_cases.py default: sdpa)")
    ap.add_argument("--no-build", action="store_true", help="skip `cargo build --release`")
    ap.add_argument("--lmlab", default=None, help="lmlab binary (default: $CARGO_TARGET_DIR or target/ + release/lmlab)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per subprocess")
    ap.add_argument("--out", default=None, help="output path prefix (default bench/results/latest, or quick with --quick)")
    ap.add_argument("--keep-init", action="store_true", help="keep the init files (printed path)")
    args = ap.parse_args()
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASE_ITERS]
    if bad:
        ap.error(f"unknown case(s) {bad}; known: {list(CASE_ITERS)}")
    out_prefix = args.out or os.path.join(BENCH, "results", "quick" if args.quick else "latest")

    command = "python3 bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    meta = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), command=command.strip(),
                threads=args.threads, seed=args.seed, loadavg_before=loadavg())
    meta["machine"] = machine_info(args.threads)

    build_err = build_lmlab(args)
    lmlab_bin = lmlab_binary(args)
    if build_err is None and not os.path.exists(lmlab_bin):
        build_err = f"binary {lmlab_bin} not found"
    if build_err:
        print(f"[bench] lmlab not available: {build_err}", file=sys.stderr)

    print("[bench] torch sgemm peak ...", file=sys.stderr, flush=True)
    peak = dict(sgemm_n=SGEMM_N, sgemm_iters=3 if args.quick else 10)
    res, err = torch_sgemm(args)
    if res:
        peak["torch_sgemm_start_gflops"] = res["gflops"]
        peak["torch_sgemm_start"] = res
        meta["torch_version"] = res.get("torch")
    else:
        peak["torch_sgemm_error"] = err
    if build_err is None:
        peak["lmlab_sgemm_gflops"], peak["lmlab_sgemm_note"] = lmlab_sgemm(args, lmlab_bin)
    else:
        peak["lmlab_sgemm_gflops"], peak["lmlab_sgemm_note"] = None, "not available (lmlab not built)"
    meta["peak"] = peak

    tmpdir = tempfile.mkdtemp(prefix="lmlab-bench-")
    results = []
    try:
        for case in cases:
            results.append(run_case(case, args, lmlab_bin, build_err, tmpdir))
    finally:
        if args.keep_init:
            print(f"[bench] init files kept in {tmpdir}", file=sys.stderr)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)

    res, err = torch_sgemm(args)
    if res:
        peak["torch_sgemm_end_gflops"] = res["gflops"]
        peak["torch_sgemm_end"] = res
        meta.setdefault("torch_version", res.get("torch"))
    vals = [v for v in (peak.get("torch_sgemm_start_gflops"), peak.get("torch_sgemm_end_gflops")) if v]
    peak["torch_sgemm_gflops"] = max(vals) if vals else None
    meta["loadavg_after"] = loadavg()

    md = report(results, meta)
    print(md)
    os.makedirs(os.path.dirname(out_prefix), exist_ok=True)
    with open(out_prefix + ".md", "w") as f:
        f.write(md)
    with open(out_prefix + ".json", "w") as f:
        json.dump(dict(meta=meta, cases=results), f, indent=1)
        f.write("\n")
    print(f"[bench] wrote {out_prefix}.md and {out_prefix}.json", file=sys.stderr)
    return 1 if any(r["status"] == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
