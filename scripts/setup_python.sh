#!/usr/bin/env bash
# Create the Python venv used by the PyTorch reference scripts
# (scripts/make_fixtures.py, scripts/train_reference.py, bench/torch_cases.py).
#   LMLAB_VENV  venv location (default: <repo>/.venv)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LMLAB_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r "$ROOT/scripts/requirements.txt"
"$VENV/bin/python" -c 'import torch, numpy, safetensors; print("torch", torch.__version__, "numpy", numpy.__version__, "safetensors", safetensors.__version__)'
echo "venv ready: $VENV (activate with: source $VENV/bin/activate)"
