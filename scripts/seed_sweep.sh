#!/usr/bin/env bash
# Trains configs/shakespeare-char-cpu.toml with several seeds, in lmlab and (with --torch) in the
# PyTorch reference, and prints the val loss at iteration 2000 of each run (the 20-batch estimate
# both trainers log, and for lmlab also the loss over the whole val split).
#   bash scripts/seed_sweep.sh "1337 1 2 3 4" [--torch]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"1337 1 2"}
data=${LMLAB_DATA:-../shared/data/tinyshakespeare.txt}
cargo build --release -q
for s in $seeds; do
    out=/tmp/lmlab-sweep/seed-$s
    rm -rf "$out"
    line=$(./target/release/lmlab train --config configs/shakespeare-char-cpu.toml --quiet \
        --set train.seed="$s" --set train.out_dir="$out" --set data.path="$data")
    full=$(./target/release/lmlab eval lm --checkpoint "$out/ckpt" --json)
    echo "lmlab seed $s: $line | full val split: $full"
    if [ "${2:-}" = "--torch" ]; then
        echo "torch seed $s: $(.venv/bin/python scripts/train_reference.py --data "$data" --seed "$s" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print("val", round(r["final_val_loss"],4), "train", round(r["final_train_loss"],4), "median step ms", round(r["median_step_ms"],1))')"
    fi
done
