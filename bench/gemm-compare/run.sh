#!/usr/bin/env bash
# Build and run the GEMM backend comparison.
#   bench/gemm-compare/run.sh [--quick]
# Installs Debian's OpenBLAS and BLIS if missing (needs root or sudo), builds in
# release with -C target-cpu=native and writes the report to
# target/results/run-<timestamp>.md (plus a loadavg log sampled every 5 s).
set -euo pipefail
cd "$(dirname "$0")"

need=()
for p in libopenblas-dev libblis-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    $SUDO apt-get install -y "${need[@]}"
fi

export CARGO_TARGET_DIR="$PWD/target"
RUSTFLAGS="-C target-cpu=native" cargo build --release

mkdir -p target/results
stamp=$(date +%Y%m%d-%H%M%S)
out="target/results/run-$stamp.md"
loadlog="target/results/run-$stamp.loadavg"

echo "loadavg before: $(cat /proc/loadavg)" | tee "$loadlog"
( while sleep 5; do echo "$(date +%T) $(cat /proc/loadavg)"; done ) >>"$loadlog" &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT

./target/release/gemm-compare "$@" | tee "$out"

kill "$sampler" 2>/dev/null || true
echo "loadavg after: $(cat /proc/loadavg)" | tee -a "$loadlog"
maxload=$(awk 'NF>=4 && $1 ~ /:/ {if ($2>m) m=$2} END {print m+0}' "$loadlog")
{
    echo
    echo "- run.sh: loadavg before/after and max 1-min loadavg sampled every 5 s (includes the benchmark's own 1-2 threads): see below"
    sed 's/^/  - /' <(head -1 "$loadlog"; tail -1 "$loadlog")
    echo "  - max sampled 1-min loadavg during the run: $maxload"
} | tee -a "$out"
echo "report: $out"
